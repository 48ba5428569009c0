#!/usr/bin/env bash
# Fan-out on one Redis against fan-out on a Redis Cluster, in one run, on
# loopback (issue 12). Two release-build SwiftChat nodes each time, the same
# swiftchat-bench fanout load (bench/src/fanout.rs) each time:
#
#   single   1 redis-server; nodes with --redis redis://127.0.0.1:P
#   cluster  3 redis-server --cluster-enabled yes, joined with
#            `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`
#            (3 primaries, no replicas); nodes with SWIFTCHAT_REDIS__CLUSTER=true
#            and the three as seeds
#
# For each setup: fresh Redis, fresh nodes, then RUNS invocations of
#   swiftchat-bench fanout --urls N1,N2 --connections C --rooms K --senders S
#       --deliveries D --duration T --quiet-wait Q
#       --pids node1=..,node2=..,redis-PORT=..[,...]
# and a table of deliveries/s, p50/p99, loss and the CPU seconds of every
# node and every Redis process (the bench reads utime+stime from
# /proc/PID/stat at the start and end of its measured window; the Redis
# processes are passed in --pids so that each gets its own column). The
# script also reads /proc/PID/stat of each Redis before and after the whole
# invocation (logins included). Which shard owns which room's channel
# (sharded pub/sub: a room's frames go through the primary of its slot) is
# printed too, so the spread of the pub/sub load is visible.
#
# Writes bench/results/cluster-fanout-<UTC time>.md (OUT=... to change) and
# prints it. Everything started is stopped on exit.
#
# Knobs: CONNECTIONS=1000 ROOMS=12 SENDERS=48 DELIVERIES=114000 SECS=10
#        RUNS=2 QUIET_WAIT=8 PRIORITY=-10 NO_BUILD=1 ONLY="single cluster"
#        SEARCH=1 (highest passing rate instead) SEARCH_START=2000 SEARCH_STEPS=8
#        SERVER=target/release/swiftchat BENCH=target/release/swiftchat-bench
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-1000}
ROOMS=${ROOMS:-12}
SENDERS=${SENDERS:-48}
DELIVERIES=${DELIVERIES:-114000}
SECS=${SECS:-10}
RUNS=${RUNS:-2}
QUIET_WAIT=${QUIET_WAIT:-8}
ONLY=${ONLY:-"single cluster"}
PRIORITY=${PRIORITY:--10}
SERVER=${SERVER:-target/release/swiftchat}
BENCH=${BENCH:-target/release/swiftchat-bench}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-bench/results/cluster-fanout-$STAMP.md}

for p in redis-server redis-cli curl python3 ss; do
    command -v "$p" >/dev/null || { echo "$p not found (apt-get install -y redis-server redis-tools curl python3 iproute2)" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)"
# As bench/run.sh: the per-connection rate limit is for people.
export SWIFTCHAT_LIMITS__MESSAGES_PER_SECOND=1000000
export SWIFTCHAT_LIMITS__MESSAGE_BURST=1000000
PRIO=()
if [[ "$PRIORITY" != 0 ]] && nice -n "$PRIORITY" true 2>/dev/null; then PRIO=(nice -n "$PRIORITY"); fi

if [[ -z "${NO_BUILD:-}" ]]; then
    cargo build --release --locked -p swiftchat --bin swiftchat
    cargo build --release --locked -p swiftchat-bench
fi
[[ -x "$SERVER" && -x "$BENCH" ]] || { echo "missing $SERVER or $BENCH" >&2; exit 1; }

WORK=$(mktemp -d /tmp/swiftchat-cluster-fanout.XXXXXX)
REDIS_PIDS=()
REDIS_PORTS=()
NODE_PIDS=()

stop_nodes() {
    local p
    for p in "${NODE_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${NODE_PIDS[@]}"; do
        for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    NODE_PIDS=()
}
stop_redis() {
    local p
    for p in "${REDIS_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${REDIS_PIDS[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    REDIS_PIDS=(); REDIS_PORTS=()
}
cleanup() { stop_nodes; stop_redis; echo "logs: $WORK" >&2; }
trap cleanup EXIT

USED=" "
free_port() {   # a free loopback port whose +10000 (cluster bus) is free too
    local p
    for _ in $(seq 1 500); do
        p=$((20000 + RANDOM % 35000))
        [[ "$USED" == *" $p "* || "$USED" == *" $((p + 10000)) "* ]] && continue
        if [[ -z "$(ss -Htan "( sport = :$p or sport = :$((p + 10000)) )" 2>/dev/null)" ]]; then
            USED="$USED$p $((p + 10000)) "
            echo "$p"; return 0
        fi
    done
    echo "no free port" >&2; return 1
}

cpu_s() {   # utime+stime of PID in seconds, from /proc/PID/stat
    awk -v t="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / t }' "/proc/$1/stat"
}

start_redis() {   # PORT [extra redis-server args...]
    local port=$1; shift
    mkdir -p "$WORK/redis-$port"
    "${PRIO[@]}" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$WORK/redis-$port" --logfile "$WORK/redis-$port/redis.log" "$@" &
    REDIS_PIDS+=($!); REDIS_PORTS+=("$port")
    for _ in $(seq 1 100); do
        [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == PONG ]] && return 0
        sleep 0.05
    done
    echo "redis on $port did not answer PING; log: $WORK/redis-$port/redis.log" >&2; exit 1
}

start_nodes() {   # REDIS_URL [env...]
    local url=$1 n port; shift
    NODE_PORTS=("$(free_port)" "$(free_port)")
    for n in 0 1; do
        env "$@" "${PRIO[@]}" "$SERVER" serve --bind "127.0.0.1:${NODE_PORTS[$n]}" --redis "$url" \
            >>"$WORK/node$((n + 1))-$SETUP.log" 2>&1 &
        NODE_PIDS+=($!)
    done
    for n in 0 1; do
        port=${NODE_PORTS[$n]}
        for _ in $(seq 1 150); do
            curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
            sleep 0.1
        done
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null ||
            { echo "node $((n + 1)) ($SETUP) not ready; log:" >&2; tail -20 "$WORK/node$((n + 1))-$SETUP.log" >&2; exit 1; }
    done
}

# run_setup NAME: RUNS bench invocations against the running nodes and Redis.
run_setup() {
    local name=$1 i pids before after
    pids="node1=${NODE_PIDS[0]},node2=${NODE_PIDS[1]}"
    for i in "${!REDIS_PIDS[@]}"; do pids="$pids,redis-${REDIS_PORTS[$i]}=${REDIS_PIDS[$i]}"; done
    for i in $(seq 1 "$RUNS"); do
        before=""; for p in "${REDIS_PIDS[@]}"; do before="$before $(cpu_s "$p")"; done
        local cmd=("$BENCH" fanout --urls "ws://127.0.0.1:${NODE_PORTS[0]}/ws,ws://127.0.0.1:${NODE_PORTS[1]}/ws"
            --connections "$CONNECTIONS" --rooms "$ROOMS" --senders "$SENDERS"
            "${LOAD[@]}" --duration "$SECS" --quiet-wait "$QUIET_WAIT"
            --pids "$pids" --label "$name-$i"
            --report "$WORK/$name-$i.md" --summary "$WORK/$name-$i.json")
        echo "+ ${cmd[*]}" >&2
        echo "${cmd[*]}" | sed "s#$WORK/##g; s#$PWD/##g" >"$WORK/$name-$i.cmd"
        "${PRIO[@]}" "${cmd[@]}" >"$WORK/$name-$i.out" 2>"$WORK/$name-$i.err" || {
            echo "bench failed ($name run $i):" >&2; tail -20 "$WORK/$name-$i.err" >&2
            echo "FAILED" >"$WORK/$name-$i.failed"; }
        grep -E '^rate ' "$WORK/$name-$i.err" >&2 || true
        after=""; for p in "${REDIS_PIDS[@]}"; do after="$after $(cpu_s "$p")"; done
        echo "$before|$after" >"$WORK/$name-$i.whole"
    done
}

# SEARCH=1: instead of a fixed rate, search the highest rate with p99 <= 50 ms
# and no loss (from SEARCH_START msg/s, at most SEARCH_STEPS runs of SECS).
if [[ -n "${SEARCH:-}" ]]; then
    LOAD=(--search --p99-ms 50 --rate "${SEARCH_START:-2000}" --max-steps "${SEARCH_STEPS:-8}")
else
    LOAD=(--deliveries "$DELIVERIES")
fi

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
LAYOUT=""

if [[ " $ONLY " == *" single "* ]]; then
    SETUP=single
    start_redis "$(free_port)"
    start_nodes "redis://127.0.0.1:${REDIS_PORTS[0]}"
    run_setup single
    stop_nodes; stop_redis
fi

if [[ " $ONLY " == *" cluster "* ]]; then
    SETUP=cluster
    for _ in 1 2 3; do
        start_redis "$(free_port)" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000
    done
    seeds=()
    for p in "${REDIS_PORTS[@]}"; do seeds+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${seeds[@]}" --cluster-replicas 0 --cluster-yes >"$WORK/cluster-create.log" 2>&1 ||
        { cat "$WORK/cluster-create.log" >&2; exit 1; }
    for _ in $(seq 1 100); do
        ok=1
        for p in "${REDIS_PORTS[@]}"; do
            redis-cli -p "$p" cluster info | grep -q '^cluster_state:ok' || ok=0
        done
        [[ $ok == 1 ]] && break
        sleep 0.1
    done
    [[ $ok == 1 ]] || { echo "Redis Cluster not ok" >&2; exit 1; }
    url=$(for p in "${REDIS_PORTS[@]}"; do printf 'redis://127.0.0.1:%s,' "$p"; done)
    url=${url%,}
    # Which primary owns which room's slot (channel swiftchat:ch:{room-k}) and
    # the control slot {global}.
    LAYOUT=$(python3 - "${REDIS_PORTS[0]}" "$ROOMS" <<'PY'
import subprocess, sys
port, rooms = sys.argv[1], int(sys.argv[2])
def cli(*a):
    return subprocess.run(["redis-cli", "-p", port, *a], capture_output=True, text=True, check=True).stdout
owners = []
for line in cli("cluster", "nodes").splitlines():
    f = line.split()
    for s in f[8:]:
        lo, _, hi = s.partition("-")
        owners.append((int(lo), int(hi or lo), f[1].split("@")[0].split(":")[1]))
def owner(tag):
    slot = int(cli("cluster", "keyslot", tag).strip())
    return next(p for lo, hi, p in owners if lo <= slot <= hi), slot
per = {}
for k in range(rooms):
    p, slot = owner(f"room-{k}")
    per.setdefault(p, []).append(f"room-{k}")
g, gslot = owner("global")
for p in sorted(set(o for _, _, o in owners)):
    rs = per.get(p, [])
    print(f"- redis-{p}: {len(rs)} room channel(s) ({', '.join(rs) or 'none'})"
          + (f"; also the control slot {{global}} ({gslot})" if p == g else ""))
PY
)
    echo "$LAYOUT" >&2
    start_nodes "$url" SWIFTCHAT_REDIS__CLUSTER=true
    run_setup cluster
    stop_nodes; stop_redis
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the tables
mkdir -p "$(dirname "$OUT")"
TABLE=$(python3 - "$WORK" "$ONLY" "$RUNS" <<'PY'
import json, os, sys
work, only, runs = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
def ms(us):
    return "-" if us is None else f"{us / 1000:.1f} ms"
rows = []
for setup in ["single", "cluster"]:
    if setup not in only:
        continue
    for i in range(1, runs + 1):
        base = os.path.join(work, f"{setup}-{i}")
        if os.path.exists(base + ".failed") or not os.path.exists(base + ".json"):
            rows.append(f"| {setup} #{i} | failed: see {os.path.basename(base)}.err | | | | | | | |")
            continue
        j = json.loads(open(base + ".json").read().splitlines()[-1])
        # the report's table: header with one "LABEL CPU s" column per watched process
        lines = [l for l in open(base + ".md").read().splitlines() if l.startswith("|")]
        head = [c.strip() for c in lines[0].strip("|").split("|")]
        vals = [c.strip() for c in lines[2].strip("|").split("|")]
        cpu = {h[:-len(" CPU s")]: float(v) for h, v in zip(head, vals)
               if h.endswith(" CPU s") and h not in ("gen CPU s", "other CPU s")}
        node = sum(v for k, v in cpu.items() if k.startswith("node"))
        redis = {k: v for k, v in cpu.items() if k.startswith("redis")}
        whole = open(base + ".whole").read().strip().split("|")
        b, a = [list(map(float, x.split())) for x in whole]
        d = j["delivered"] or 1
        rows.append("| {} #{} | {:,.0f} | {} | {} | {} | {:.2f} | {} | {:.2f} | {:.2f} | {} | {:.2f} |".format(
            setup, i, j["deliveries_per_s"], ms(j["p50_us"]), ms(j["p99_us"]), j["lost"],
            node, " / ".join(f"{v:.2f}" for v in redis.values()), sum(redis.values()),
            node * 1e6 / d, " / ".join(f"{y - x:.2f}" for x, y in zip(b, a)), j["other_cpu_s"]))
print("| setup | deliveries/s | p50 | p99 | lost | node CPU s (2 nodes) | Redis CPU s per process | Redis CPU s total | node µs/delivery | Redis CPU s per process, whole invocation incl. logins | other CPU s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
PY
)
{
    echo "# Fan-out: one Redis vs a 3-primary Redis Cluster"
    echo
    echo "- when: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (src modified)')"
    echo "- machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); load average before ${LOAD_BEFORE}, after ${LOAD_AFTER}; $(redis-server --version | grep -o 'v=[0-9.]*')"
    echo "- command: \`$(env | grep -E '^(CONNECTIONS|ROOMS|SENDERS|DELIVERIES|SECS|RUNS|QUIET_WAIT|PRIORITY|ONLY|NO_BUILD|SEARCH|SEARCH_START|SEARCH_STEPS)=' | tr '\n' ' ')bash bench/cluster-fanout.sh\`"
    echo "- load: $CONNECTIONS connections over 2 release-build nodes, $ROOMS rooms, $SENDERS senders, $DELIVERIES deliveries/s offered, ${SECS} s per run, $RUNS run(s) per setup; redis, nodes and generator at nice $PRIORITY; Redis without persistence"
    echo "- caveat: on a shared machine latency percentiles swing between runs (compare the repeats); CPU seconds per process are the steadier figure."
    echo "- \"other CPU\" is what the rest of the machine used during the measured window: large means the run shared the 2 cores."
    echo
    echo "## Summary"
    echo
    echo "$TABLE"
    echo
    echo "Redis CPU per process: in the bench's measured window (\`--pids\`); the bench's own \"node µs/delivery\" column in the details below counts every process given in \`--pids\`, i.e. nodes and Redis."
    if [[ -n "$LAYOUT" ]]; then
        echo
        echo "Rooms per shard (sharded pub/sub: a room's channel \`swiftchat:ch:{room-k}\` lives on the primary of its slot):"
        echo
        echo "$LAYOUT"
    fi
    echo
    echo "## Details"
    for f in "$WORK"/single-*.md "$WORK"/cluster-*.md; do
        [[ -e "$f" ]] || continue
        echo
        echo "\`$(cat "${f%.md}.cmd")\`"
        echo
        cat "$f"
    done
} >"$OUT"
cat "$OUT"
echo "written to $OUT" >&2
