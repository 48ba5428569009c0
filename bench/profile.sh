#!/usr/bin/env bash
# Profile SwiftChat node 1 with perf while swiftchat-bench drives a private
# 2-node + Redis cluster (loopback only; everything started is stopped on exit).
#
#   bench/profile.sh fanout [MSG_PER_S]   default 1140 (= 114k deliveries/s)
#   bench/profile.sh connect [LOGINS]     default 10000, on node 1
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
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 1; }
if [[ -z "${NO_BUILD:-}" ]]; then
    # Two commands: --bin would also filter the bench package (no binary named swiftchat).
    cargo build --release -p swiftchat --bin swiftchat
    cargo build --release -p swiftchat-bench
fi
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
