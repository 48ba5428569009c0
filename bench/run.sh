#!/usr/bin/env bash
# SwiftChat benchmarks on this machine, loopback only (see bench/README.md).
#
# Starts its own redis-server and two release-build nodes on free ports, and
# runs, each on freshly started nodes and an emptied Redis:
#   1. fanout at 114k deliveries/s (1000 connections, 10 rooms, 50 senders): p99
#   1b. floor: references for 1 in the same sitting: CPU of one bare socket
#      write per delivery (no server), and the 114k load on a minimal
#      tokio-tungstenite stand-in and on one SwiftChat node without Redis
#   2. fanout --search: the highest rate with p99 <= 50 ms and zero loss
#   3. idle: 19,000 logged-in connections on node 1, RSS per connection
#   4. idle-rooms: 10,000 connections logged into 100 rooms of 100 members
#      (joined notices and a few messages reach everyone), then held quiet
#      20 s: RSS per connection, on a standalone node and on node 1 with Redis
#   5. connect: 10,000 logins on node 1, logins/s and handshake latency
#   6. connect-rooms: 10,000 members in 100 rooms over both nodes first, then
#      2,000 logins (IDENTIFY straight into those rooms, 64 in flight):
#      logins/s and Redis round trips per login (from the nodes' /metrics)
# then prints the tables and writes them to bench/results/latest.md.
# Everything it starts is stopped on exit. Defaults finish in about 10 minutes
# (plus the release build).
#
# Knobs (environment): ONLY="fanout floor search idle idle-rooms connect connect-rooms", FANOUT_SECS=10,
# FANOUT_REPEAT=3 (runs at 114k; the summary takes the least disturbed one),
# SEARCH_SECS=5, SEARCH_STEPS=8, SEARCH_START=2000 (msg/s; x100 members =
# deliveries/s), IDLE_CONNS=19000, IDLE_ROOMS_CONNS=10000, IDLE_ROOMS=100,
# IDLE_ROOM_MESSAGES=3, IDLE_HOLD=20, CONNECT_COUNT=10000, CONNECT_CONCURRENCY=64,
# CONNECT_ROOMS=100, CONNECT_ROOMS_PREFILL=10000, CONNECT_ROOMS_COUNT=2000,
# OUT=bench/results/latest.md, NO_BUILD=1, QUIET_WAIT=8 (seconds each fanout
# run and the connect run wait, at most, for other processes on the machine to
# go below 0.1 core; the tables show what else ran as "other CPU"),
# PRIORITY=-10 (nice value for redis, the nodes and the generator; 0: none).
set -euo pipefail
cd "$(dirname "$0")/.."

ONLY=${ONLY:-"fanout floor search idle idle-rooms connect connect-rooms"}
FANOUT_SECS=${FANOUT_SECS:-10}
FANOUT_REPEAT=${FANOUT_REPEAT:-3}
SEARCH_SECS=${SEARCH_SECS:-5}
SEARCH_STEPS=${SEARCH_STEPS:-8}
SEARCH_START=${SEARCH_START:-2000}
IDLE_CONNS=${IDLE_CONNS:-19000}
IDLE_ROOMS_CONNS=${IDLE_ROOMS_CONNS:-10000}
IDLE_ROOMS=${IDLE_ROOMS:-100}
IDLE_ROOM_MESSAGES=${IDLE_ROOM_MESSAGES:-3}
IDLE_HOLD=${IDLE_HOLD:-20}
CONNECT_COUNT=${CONNECT_COUNT:-10000}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-64}
CONNECT_ROOMS=${CONNECT_ROOMS:-100}
CONNECT_ROOMS_PREFILL=${CONNECT_ROOMS_PREFILL:-10000}
CONNECT_ROOMS_COUNT=${CONNECT_ROOMS_COUNT:-2000}
OUT=${OUT:-bench/results/latest.md}
QUIET_WAIT=${QUIET_WAIT:-8}

# One node holds up to ~19k sockets and the generator splits itself into
# processes below the limit; both need the hard open-file limit (20,000 here).
ulimit -n "$(ulimit -Hn)"

# The per-connection rate limit (default 5 messages/s, burst 10) is meant for
# people. The fan-out senders each send rate/50 messages per second (40/s at
# 2,000 msg/s, hundreds per second while searching), so the benchmark raises
# it out of the way; everything else is the shipped default configuration.
export SWIFTCHAT_LIMITS__MESSAGES_PER_SECOND=1000000
export SWIFTCHAT_LIMITS__MESSAGE_BURST=1000000

if [[ -z "${NO_BUILD:-}" ]]; then
    # Two commands: --bin would also filter the bench package (no binary named swiftchat).
    cargo build --release -p swiftchat --bin swiftchat
    cargo build --release -p swiftchat-bench
fi
source bench/cluster.sh

SUMMARY="$WORK/summary.jsonl"
DETAILS="$WORK/details.md"
: >"$SUMMARY"
: >"$DETAILS"

# Run one benchmark command: print it, record it, run it.
bench() {
    printf '\n`%s`\n\n' "$*" | sed "s#$PWD/##g" >>"$DETAILS"
    echo "+ $*" >&2
    local rc=0
    "${PRIO[@]}" "$@" --report "$DETAILS" --summary "$SUMMARY" || rc=$?
    if [[ $rc -ne 0 ]]; then
        printf '\n**This run failed (exit %s); see the output above.**\n' "$rc" >>"$DETAILS"
    fi
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# The fanout-114k load; the floor step runs the same on other servers.
FANOUT_114K=(--connections 1000 --rooms 10 --senders 50 --deliveries 114000
    --duration "$FANOUT_SECS" --repeat "$FANOUT_REPEAT" --quiet-wait "$QUIET_WAIT")

if [[ " $ONLY " == *" fanout "* ]]; then
    start_nodes
    bench "$BENCH" fanout --urls "$URL1,$URL2" "${FANOUT_114K[@]}" \
        --pids "$(pids)" --redis-pid "$REDIS_PID" --label "fanout-114k"
    stop_nodes
fi

if [[ " $ONLY " == *" floor "* ]]; then
    # References for the fanout-114k row, same load, same sitting: what one
    # bare socket write per delivery costs on this machine (a node writes
    # ~57,000/s to 500 sockets there), and the whole 114k load on a minimal
    # tokio-tungstenite stand-in (`mock`, no rules, no Redis) and on one
    # SwiftChat node without Redis.
    bench "$BENCH" write-floor --connections 500 --rate 57000 --secs "$FANOUT_SECS"
    "${PRIO[@]}" "$BENCH" mock --bind "127.0.0.1:${NODE_PORTS[1]}" >>"$WORK/mock.log" 2>&1 &
    MOCK_PID=$!
    sleep 0.5
    bench "$BENCH" fanout --urls "ws://127.0.0.1:${NODE_PORTS[1]}/ws" "${FANOUT_114K[@]}" \
        --pids "mock=$MOCK_PID" --label "fanout-114k-mock-reference"
    kill "$MOCK_PID"
    wait "$MOCK_PID" 2>/dev/null || true
    start_standalone_node
    bench "$BENCH" fanout --urls "$URL1" "${FANOUT_114K[@]}" \
        --pids "standalone=${NODE_PIDS[0]}" --label "fanout-114k-standalone-reference"
    stop_nodes
fi

if [[ " $ONLY " == *" search "* ]]; then
    start_nodes
    bench "$BENCH" fanout --urls "$URL1,$URL2" --connections 1000 --rooms 10 --senders 50 \
        --search --p99-ms 50 --rate "$SEARCH_START" --duration "$SEARCH_SECS" \
        --max-steps "$SEARCH_STEPS" --quiet-wait "$QUIET_WAIT" \
        --pids "$(pids)" --redis-pid "$REDIS_PID" \
        --label "fanout-search"
    stop_nodes
fi

if [[ " $ONLY " == *" idle "* ]]; then
    start_nodes
    bench "$BENCH" idle --urls "$URL1" --connections "$IDLE_CONNS" --per-process 10000 \
        --pids "node1=${NODE_PIDS[0]}" --label "idle-node1"
    stop_nodes
fi

if [[ " $ONLY " == *" idle-rooms "* ]]; then
    # Connections that received traffic (joined notices, a few messages),
    # then went quiet: standalone (no Redis), then node 1 of the Redis pair.
    start_standalone_node
    bench "$BENCH" idle --urls "$URL1" --connections "$IDLE_ROOMS_CONNS" --per-process 10000 \
        --rooms "$IDLE_ROOMS" --messages "$IDLE_ROOM_MESSAGES" --settle "$IDLE_HOLD" \
        --pids "standalone=${NODE_PIDS[0]}" --label "idle-rooms-standalone"
    stop_nodes
    start_nodes
    bench "$BENCH" idle --urls "$URL1" --connections "$IDLE_ROOMS_CONNS" --per-process 10000 \
        --rooms "$IDLE_ROOMS" --messages "$IDLE_ROOM_MESSAGES" --settle "$IDLE_HOLD" \
        --pids "node1=${NODE_PIDS[0]}" --label "idle-rooms-redis"
    stop_nodes
fi

if [[ " $ONLY " == *" connect "* ]]; then
    start_nodes
    bench "$BENCH" connect --urls "$URL1" --count "$CONNECT_COUNT" \
        --concurrency "$CONNECT_CONCURRENCY" --quiet-wait "$QUIET_WAIT" --pids "node1=${NODE_PIDS[0]}" \
        --redis-pid "$REDIS_PID" --label "connect-node1"
    stop_nodes
fi

if [[ " $ONLY " == *" connect-rooms "* ]]; then
    # Logins into rooms that already have members (issue 13): every login
    # joins a room of ~100 and its members get the joined notice. Redis
    # round trips per login: swiftchat_redis_commands_total (one per call
    # through the command pool) summed over both nodes, background traffic
    # subtracted.
    start_nodes
    bench "$BENCH" connect --urls "$URL1,$URL2" --count "$CONNECT_ROOMS_COUNT" \
        --concurrency "$CONNECT_CONCURRENCY" --rooms "$CONNECT_ROOMS" --prefill "$CONNECT_ROOMS_PREFILL" \
        --redis-metric swiftchat_redis_commands_total --quiet-wait "$QUIET_WAIT" --pids "$(pids)" \
        --redis-pid "$REDIS_PID" --label "connect-rooms"
    stop_nodes
fi

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p "$(dirname "$OUT")"
{
    echo "# SwiftChat benchmark results"
    echo
    echo "- when: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (src modified)')"
    if [[ "$SERVER" != target/release/swiftchat ]]; then
        echo "- server: \`SERVER=$SERVER\` (not this checkout's build)"
    fi
    echo "- machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); load average before ${LOAD_BEFORE}, after ${LOAD_AFTER}"
    echo "- command: \`$(env | grep -E '^(ONLY|FANOUT_SECS|FANOUT_REPEAT|SEARCH_SECS|SEARCH_STEPS|SEARCH_START|IDLE_CONNS|IDLE_ROOMS_CONNS|IDLE_ROOMS|IDLE_ROOM_MESSAGES|IDLE_HOLD|CONNECT_COUNT|CONNECT_CONCURRENCY|CONNECT_ROOMS|CONNECT_ROOMS_PREFILL|CONNECT_ROOMS_COUNT|QUIET_WAIT|PRIORITY)=' | tr '\n' ' ')bench/run.sh\`"
    echo "- cluster: 2 nodes (\`swiftchat serve\`, release build, default config except SWIFTCHAT_LIMITS__MESSAGES_PER_SECOND/MESSAGE_BURST=1000000) + 1 redis-server $(redis-server --version | grep -o 'v=[0-9.]*'), generator on the same 2 cores"
    echo "- priority: redis, nodes and generator ran at nice ${PRIORITY} (0 = unchanged)"
    echo "- \"other CPU\" is CPU used on the machine by anything but the nodes, redis and the generator during the run; if it is large, the run shared the cores."
    echo
    echo "## Summary"
    echo
    "$BENCH" summary --input "$SUMMARY"
    echo
    echo "## Details"
    cat "$DETAILS"
} >"$OUT"
echo
cat "$OUT"
echo "written to $OUT" >&2
