#!/usr/bin/env bash
# What history costs (issue 11), in one invocation, on this machine:
#   1. fan-out with history on (the default, 200 messages per room) and off
#      (history.max_messages = 0), alternating, each on fresh nodes and an
#      emptied Redis: deliveries/s, p99, CPU per delivery;
#   2. Redis memory for 1,000 rooms with full histories: every room filled to
#      history.max_messages through the node's own publish script
#      (src/backplane/redis/lua/publish_message.lua), INFO memory before and
#      after.
# Knobs (environment): DELIVERIES=60000 (per second), SECS=5, REPEAT=2 (pairs
# of on/off runs), ROOMS_FOR_MEMORY=1000, CONTENT_CHARS=100, NO_BUILD=1,
# OUT=bench/results/history.md, QUIET_WAIT=8, PRIORITY=-10, SEARCH=1 (highest
# passing rate instead of DELIVERIES), SEARCH_START=2000, SEARCH_STEPS=8.
set -euo pipefail
cd "$(dirname "$0")/.."

DELIVERIES=${DELIVERIES:-60000}
SECS=${SECS:-5}
REPEAT=${REPEAT:-2}
ROOMS_FOR_MEMORY=${ROOMS_FOR_MEMORY:-1000}
CONTENT_CHARS=${CONTENT_CHARS:-100}
OUT=${OUT:-bench/results/history.md}
QUIET_WAIT=${QUIET_WAIT:-8}

ulimit -n "$(ulimit -Hn)"
export SWIFTCHAT_LIMITS__MESSAGES_PER_SECOND=1000000
export SWIFTCHAT_LIMITS__MESSAGE_BURST=1000000

if [[ -z "${NO_BUILD:-}" ]]; then
    # Two commands: `--bin swiftchat` would also filter out the bench's binary.
    cargo build --release -p swiftchat --bin swiftchat
    cargo build --release -p swiftchat-bench
fi
source bench/cluster.sh

SUMMARY="$WORK/summary.jsonl"
DETAILS="$WORK/details.md"
: >"$SUMMARY"
: >"$DETAILS"

fanout() {
    local label=$1
    printf '\n`%s` (%s)\n\n' "fanout $label" "SWIFTCHAT_HISTORY__MAX_MESSAGES=$SWIFTCHAT_HISTORY__MAX_MESSAGES" >>"$DETAILS"
    "${PRIO[@]}" "$BENCH" fanout --urls "$URL1,$URL2" --connections 1000 --rooms 10 --senders 50 \
        "${LOAD[@]}" --duration "$SECS" --quiet-wait "$QUIET_WAIT" \
        --pids "$(pids)" --redis-pid "$REDIS_PID" --label "$label" \
        --report "$DETAILS" --summary "$SUMMARY" ||
        printf '\n**This run failed; see the output above.**\n' >>"$DETAILS"
}

# SEARCH=1: the highest rate with p99 <= 50 ms and no loss, on and off,
# instead of a fixed rate (from SEARCH_START msg/s, at most SEARCH_STEPS runs).
if [[ -n "${SEARCH:-}" ]]; then
    LOAD=(--search --p99-ms 50 --rate "${SEARCH_START:-2000}" --max-steps "${SEARCH_STEPS:-8}")
else
    LOAD=(--deliveries "$DELIVERIES")
fi

for i in $(seq 1 "$REPEAT"); do
    export SWIFTCHAT_HISTORY__MAX_MESSAGES=200
    start_nodes
    fanout "history-on-$i"
    stop_nodes
    export SWIFTCHAT_HISTORY__MAX_MESSAGES=0
    start_nodes
    fanout "history-off-$i"
    stop_nodes
done

# Redis memory: ROOMS_FOR_MEMORY rooms, each filled to 200 messages through
# the publish script itself (same keys, same stream layout as a node).
redis-cli -p "$REDIS_PORT" flushall >/dev/null
MEMORY=$(python3 - "$REDIS_PORT" "$ROOMS_FOR_MEMORY" "$CONTENT_CHARS" <<'PY'
import json, socket, sys
port, rooms, chars = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
per_room = 200
sock = socket.create_connection(("127.0.0.1", port))
f = sock.makefile("rb")

def enc(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)

def read():
    line = f.readline()
    t, rest = line[:1], line[1:-2]
    if t in (b"+", b"-", b":"):
        if t == b"-":
            raise SystemExit("redis error: " + rest.decode())
        return rest
    if t == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if t == b"*":
        return [read() for _ in range(int(rest))]
    raise SystemExit("bad reply %r" % line)

def call(*args):
    sock.sendall(enc(*args))
    return read()

def used():
    info = call("INFO", "memory").decode()
    return int(next(l.split(":")[1] for l in info.splitlines() if l.startswith("used_memory:")))

lua = open("src/backplane/redis/lua/publish_message.lua").read()
sha = call("SCRIPT", "LOAD", lua).decode()
before = used()
content = "x" * chars
frame_bytes = 0
for r in range(rooms):
    room = "room-%d" % r
    k = lambda kind: "swiftchat:%s:{%s}" % (kind, room)
    # The room's gate (room_data.lua create): what publishing checks.
    call("HSET", k("gate"), "closed", "0", "epoch", "01M90S0AEC4VJ3WPM8PCDEJ32S")
    batch = []
    for n in range(per_room):
        d = json.dumps({"author": "user%d" % n, "content": content, "room": room,
                        "id": "01M90S0AEC4VJ3WPM8PCDEJ32S", "ts": 1796396296652},
                       separators=(",", ":"))
        prefix, suffix = '{"op":0,"d":' + d[:-1] + ',"seq":', "}}"
        frame_bytes = len(prefix) + 3 + len(suffix)
        batch.append(enc("EVALSHA", sha, 4, k("gate"), k("seq"), "swiftchat:ch:{%s}" % room,
                         k("history"), prefix, suffix, 0, per_room, 86400000, "PUBLISH"))
    sock.sendall(b"".join(batch))
    for _ in batch:
        read()
after = used()
stream = int(call("MEMORY", "USAGE", "swiftchat:history:{room-0}", "SAMPLES", "0"))
length = int(call("XLEN", "swiftchat:history:{room-0}"))
print("| rooms | messages per room | frame bytes (seq 100-199) | used_memory before | after | per room | per message | MEMORY USAGE of one stream |")
print("|---|---|---|---|---|---|---|---|")
total = after - before
print("| %d | %d | %d | %.1f MiB | %.1f MiB | %.1f KiB | %d B | %.1f KiB |" % (
    rooms, length, frame_bytes, before / 2**20, after / 2**20, total / rooms / 1024,
    total / rooms / per_room, stream / 1024))
PY
)

mkdir -p "$(dirname "$OUT")"
{
    echo "# What history costs"
    echo
    echo "- when: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "- machine: $(nproc) cores, $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- command: \`SEARCH=${SEARCH:-} DELIVERIES=$DELIVERIES SECS=$SECS REPEAT=$REPEAT ROOMS_FOR_MEMORY=$ROOMS_FOR_MEMORY CONTENT_CHARS=$CONTENT_CHARS bench/history.sh\`"
    echo "- cluster: 2 release nodes + redis-server $(redis-server --version | grep -o 'v=[0-9.]*'), generator on the same cores; history on = default [history] (200 messages, 24 h), off = SWIFTCHAT_HISTORY__MAX_MESSAGES=0"
    echo
    echo "## Fan-out, history on and off"
    echo
    "$BENCH" summary --input "$SUMMARY"
    echo
    echo "## Redis memory for full histories"
    echo
    echo "$MEMORY"
    echo
    echo "## Details"
    cat "$DETAILS"
} >"$OUT"
cat "$OUT"
echo "written to $OUT" >&2
