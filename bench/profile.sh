#!/usr/bin/env bash
# Profile SwiftChat node 1 with perf while swiftchat-bench drives a private
# 2-node + Redis cluster (loopback only; everything started is stopped on exit).
#
#   bench/profile.sh fanout [MSG_PER_S]   default 1140 (= 114k deliveries/s)
#   bench/profile.sh connect [LOGINS]     default 10000, on node 1
#   bench/profile.sh callgrind [MSG_PER_S] instructions per delivery (see below)
#   bench/profile.sh massif [CONNS]       heap per idle connection (see below)
#
# callgrind: one standalone node under valgrind --tool=callgrind, 100
# connections in one room, 5 senders at MSG_PER_S (default 20, i.e. 2,000
# deliveries/s) for SECS (default 10) twice; counters are zeroed after the
# logins and dumped 0.5 s after the first run's sending window, and
# swiftchat_frames_out_total is read from /metrics at both points, so the
# result is user-space instructions per frame delivered (logins and closes
# excluded). Instruction counts do not depend on what else the machine runs.
# Writes bench/results/callgrind-<TAG>.txt (TAG defaults to the commit).
#
# massif: one standalone node under valgrind --tool=massif, CONNS (default
# 2,000) connections in rooms of 100 (idle --rooms CONNS/100 --messages 3),
# a detailed heap snapshot (vgdb) before the first connection and ~15 s after
# the last login; writes bench/results/massif-<TAG>.txt: heap per logged-in
# connection and the allocation sites, by bytes per connection.
#
# Writes bench/results/profile-<what>.txt: the benchmark's own result, the
# node's CPU split (kernel / swiftchat / libc), the top functions by self time,
# and SwiftChat and library functions by inclusive time (DWARF call graphs).
# Needs perf (Debian: linux-perf). Samples cpu-clock, which works in
# containers where hardware counters do not.
set -euo pipefail
cd "$(dirname "$0")/.."

WHAT=${1:-fanout}
ARG=${2:-}
SECS=${SECS:-4}
OUT=${OUT:-bench/results/profile-$WHAT.txt}
ulimit -n "$(ulimit -Hn)"
export SWIFTCHAT_LIMITS__MESSAGES_PER_SECOND=1000000
export SWIFTCHAT_LIMITS__MESSAGE_BURST=1000000
if [[ -z "${NO_BUILD:-}" ]]; then
    # Two commands: --bin would also filter the bench package (no binary named swiftchat).
    cargo build --release -p swiftchat --bin swiftchat
    cargo build --release -p swiftchat-bench
fi
SERVER=${SERVER:-target/release/swiftchat}
BENCH=${BENCH:-target/release/swiftchat-bench}
TAG=${TAG:-$(git rev-parse --short HEAD)}

free_local_port() { echo $((30000 + RANDOM % 20000)); }
wait_ready() {
    for _ in $(seq 1 300); do
        curl -sf "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "node on port $1 not ready" >&2
    return 1
}
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }

if [[ "$WHAT" == callgrind ]]; then
    command -v valgrind >/dev/null || { echo "valgrind not found" >&2; exit 1; }
    RATE=${ARG:-20}
    SECS=${SECS_CG:-10}
    WORK=$(mktemp -d /tmp/swiftchat-callgrind.XXXXXX)
    PORT=$(free_local_port)
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p.out" --dump-instr=no \
        "$SERVER" serve --bind "127.0.0.1:$PORT" >"$WORK/node.log" 2>&1 &
    VG=$!
    trap 'kill -TERM $VG 2>/dev/null || true' EXIT
    wait_ready "$PORT"
    "$BENCH" fanout --urls "ws://127.0.0.1:$PORT/ws" --connections 100 --rooms 1 --senders 5 \
        --rate "$RATE" --duration "$SECS" --drain 10 --repeat 2 --pids "node=$VG" >"$WORK/bench.log" 2>&1 &
    GEN=$!
    for _ in $(seq 1 600); do grep -q "logged in" "$WORK/bench.log" && break; sleep 0.2; done
    # The generator waits 0.5 s after its logins, sends for SECS, drains,
    # waits 0.5 s, sends again: the window below covers the first run only.
    sleep 0.3
    F0=$(metric "$PORT" swiftchat_frames_out_total)
    callgrind_control -z "$VG" >/dev/null
    sleep "$(python3 -c "print($SECS + 0.5)")"
    callgrind_control -d "$VG" >/dev/null
    F1=$(metric "$PORT" swiftchat_frames_out_total)
    wait "$GEN" || true
    kill -TERM "$VG"
    wait "$VG" || true
    trap - EXIT
    DUMP=$(ls "$WORK"/cg.$VG.out.* | head -1)
    IR=$(callgrind_annotate "$DUMP" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    mkdir -p "$(dirname "$OUT")"
    OUT=${OUT_CG:-bench/results/callgrind-$TAG.txt}
    {
        echo "# callgrind: instructions per delivery of a standalone node ($(date -u '+%Y-%m-%d %H:%M UTC'), $SERVER, tag $TAG)"
        echo "# command: bench/profile.sh callgrind $RATE (SECS_CG=$SECS)"
        echo
        echo "frames delivered in the window (swiftchat_frames_out_total): $F0 -> $F1 = $((F1 - F0))"
        echo "instructions (Ir) in the window: $IR"
        echo "instructions per delivery: $(python3 -c "print(round($IR / ($F1 - $F0)))")"
        echo
        echo "## generator"
        grep -E "^rate" "$WORK/bench.log" || true
        echo
        echo "## inclusive, SwiftChat and the libraries on the fan-out path (top 40)"
        callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$DUMP" 2>/dev/null |
            grep -E "^ *[0-9,]+ " | grep -vE "PROGRAM TOTALS|clone|start_thread|thread_start|call_once|__rust_begin|enter_runtime|Scoped|worker::run|Core<T,S>::poll|Harness|raw::poll|blocking::pool" |
            sed 's#/root/.cargo/registry/src/index.crates.io-[0-9a-f]*/##; s#/rustc/[0-9a-f]*/##' | cut -c1-220 | head -40
    } >"$OUT"
    cat "$OUT"
    echo "written to $OUT (raw: $DUMP)" >&2
    exit 0
fi

if [[ "$WHAT" == massif ]]; then
    command -v valgrind >/dev/null || { echo "valgrind not found" >&2; exit 1; }
    CONNS=${ARG:-2000}
    WORK=$(mktemp -d /tmp/swiftchat-massif.XXXXXX)
    PORT=$(free_local_port)
    valgrind --tool=massif --massif-out-file="$WORK/massif.out" --depth=40 --threshold=0.1 \
        "$SERVER" serve --bind "127.0.0.1:$PORT" >"$WORK/node.log" 2>&1 &
    VG=$!
    trap 'kill -TERM $VG 2>/dev/null || true' EXIT
    wait_ready "$PORT"
    sleep 1
    vgdb --pid="$VG" detailed_snapshot "$WORK/base.snap" >/dev/null
    "$BENCH" idle --urls "ws://127.0.0.1:$PORT/ws" --connections "$CONNS" --rooms $((CONNS / 100)) \
        --messages 3 --settle 40 --timeout 300 --pids "standalone=$VG" >"$WORK/bench.log" 2>&1 &
    GEN=$!
    # Logged in once the gauge holds still for 4 s; then the messages, then quiet.
    LAST=-1
    SAME=0
    for _ in $(seq 1 600); do
        N=$(metric "$PORT" swiftchat_logged_in)
        if [[ "${N:-0}" == "$LAST" && "${N:-0}" != 0 ]]; then SAME=$((SAME + 1)); else SAME=0; fi
        LAST=${N:-0}
        [[ $SAME -ge 4 ]] && break
        sleep 1
    done
    sleep 12
    vgdb --pid="$VG" detailed_snapshot "$WORK/idle.snap" >/dev/null
    wait "$GEN" || true
    kill -TERM "$VG"
    wait "$VG" || true
    trap - EXIT
    OUT=${OUT_MASSIF:-bench/results/massif-$TAG.txt}
    mkdir -p "$(dirname "$OUT")"
    {
        echo "# massif: heap of a standalone node per idle logged-in connection after traffic ($(date -u '+%Y-%m-%d %H:%M UTC'), $SERVER, tag $TAG)"
        echo "# command: bench/profile.sh massif $CONNS"
        echo
        grep -E "^\| standalone|^Frames|^Logged" "$WORK/bench.log" || true
        echo "(RSS under valgrind says nothing; the heap below is what counts)"
        echo
        python3 - "$WORK/base.snap" "$WORK/idle.snap" "$LAST" <<'PY'
import re, sys
def tree(path):
    lines = open(path).read().split("\n")
    total = int([l for l in lines if l.startswith("mem_heap_B=")][-1].split("=")[1])
    start = [i for i, l in enumerate(lines) if l.startswith("heap_tree=detailed")][-1]
    pat = re.compile(r"^( *)n(\d+): (\d+) (.*)$")
    stack, leaves = [], []
    for l in lines[start + 1:]:
        m = pat.match(l)
        if not m:
            break
        ind = len(m.group(1))
        while stack and stack[-1][0] >= ind:
            stack.pop()
        stack.append((ind, m.group(4)))
        if int(m.group(2)) == 0:
            leaves.append((int(m.group(3)), [d for _, d in stack[1:]]))
    return total, leaves
plumbing = re.compile(r"^(alloc|alloc_impl|alloc_impl_runtime|allocate|grow|grow_impl|grow_impl_runtime|realloc|"
                      r"aligned_malloc|__rustc|__rdl|box_new_uninit|finish_grow|grow_amortized|grow_one|"
                      r"with_capacity|with_capacity_in|try_allocate_in|reserve|do_alloc|new_uninitialized|"
                      r"fallible_with_capacity|UnknownInlinedFun|to_vec|to_owned|push|push_str|extend|"
                      r"RawVecInner|<alloc::|alloc::)")
base, _ = tree(sys.argv[1])
idle, leaves = tree(sys.argv[2])
n = int(float(sys.argv[3]))
print(f"heap: {base:,} B before the first connection, {idle:,} B with {n:,} logged in: "
      f"{(idle - base) / n:,.0f} B per logged-in connection (useful heap, malloc's own overhead not included)")
print()
agg = {}
for b, frames in leaves:
    names = [re.sub(r"^0x[0-9A-F]+: ", "", d) for d in frames]
    keep = [d for d in names if not plumbing.match(d)][:3]
    key = " <- ".join(k[:120] for k in keep) or (names[0][:120] if names else "?")
    agg[key] = agg.get(key, 0) + b
print("| bytes per connection | allocation site (first frames above the allocator) |")
print("|---|---|")
for k, v in sorted(agg.items(), key=lambda x: -x[1])[:25]:
    print(f"| {v / n:,.0f} | `{k}` |")
PY
    } >"$OUT"
    cat "$OUT"
    echo "written to $OUT (raw: $WORK)" >&2
    exit 0
fi

command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 1; }
source bench/cluster.sh
start_nodes
DATA="$WORK/node1.perf"
LOG="$WORK/bench.log"

case "$WHAT" in
fanout)
    RATE=${ARG:-1140}
    "${PRIO[@]}" "$BENCH" fanout --urls "$URL1,$URL2" --connections 1000 --rooms 10 --senders 50 \
        --rate "$RATE" --duration $((SECS + 6)) --pids "$(pids)" --redis-pid "$REDIS_PID" \
        >"$LOG" 2>&1 &
    GEN=$!
    # logins take 1-3 s; start sampling well inside the sending window
    for _ in $(seq 1 300); do
        grep -q "logged in" "$LOG" && break
        sleep 0.1
    done
    sleep 2
    ;;
connect)
    COUNT=${ARG:-10000}
    "${PRIO[@]}" "$BENCH" connect --urls "$URL1" --count "$COUNT" --pids "node1=${NODE_PIDS[0]}" \
        --redis-pid "$REDIS_PID" >"$LOG" 2>&1 &
    GEN=$!
    sleep 0.3
    SECS=1
    ;;
*)
    echo "usage: $0 fanout [MSG_PER_S] | connect [LOGINS]" >&2
    exit 2
    ;;
esac

perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "${NODE_PIDS[0]}" -o "$DATA" \
    -- sleep "$SECS" 2>>"$WORK/perf.log"
wait "$GEN" || true

mkdir -p "$(dirname "$OUT")"
set +o pipefail # head closes the pipes early
{
    echo "# perf profile of node 1: $WHAT ${ARG:-} ($(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD))"
    echo "# command: bench/profile.sh $*"
    echo
    echo "## benchmark output"
    grep -vE "^(fanout|connect):" "$LOG" || true
    echo
    echo "## node 1 CPU by binary"
    perf report -i "$DATA" --no-children --sort dso --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -6
    echo
    echo "## top functions by self time"
    perf report -i "$DATA" --no-children --sort sym --stdio -g none 2>/dev/null |
        grep -E "^ +[0-9]" | head -30
    echo
    echo "## SwiftChat / library functions by inclusive time (children)"
    perf report -i "$DATA" --children --sort sym --stdio -g none 2>/dev/null |
        grep -E "^ +[0-9]" | grep -v "(inlined)" |
        grep -E "swiftchat::|tungstenite|redis::|deadpool|hyper::|serde_json|sendto|recvfrom|writev|epoll_wait|futex" |
        head -40
} >"$OUT"
cat "$OUT"
echo "written to $OUT (raw data: $DATA)" >&2
