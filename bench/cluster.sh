# Shared by bench/run.sh and bench/profile.sh (sourced, not run): a private
# redis-server and two SwiftChat nodes on free loopback ports, stopped on exit.
# Expects the release binaries to be built and the SWIFTCHAT_* environment set.

# SERVER=path / BENCH=path run other builds (e.g. a before/after comparison).
SERVER=${SERVER:-target/release/swiftchat}
# Scheduling priority of everything benchmarked (redis, nodes, generator).
# On a machine shared with other work (builds, tests), a negative nice value
# keeps that work from stealing the cores mid-run; "other CPU" in the tables
# still shows how much it got. PRIORITY=0 leaves priorities alone.
PRIORITY=${PRIORITY:--10}
PRIO=()
if [[ "$PRIORITY" != 0 ]] && nice -n "$PRIORITY" true 2>/dev/null; then
    PRIO=(nice -n "$PRIORITY")
fi
BENCH=${BENCH:-target/release/swiftchat-bench}

WORK=$(mktemp -d /tmp/swiftchat-bench.XXXXXX)
REDIS_PID=""
NODE_PIDS=()

stop_nodes() {
    local p
    for p in "${NODE_PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${NODE_PIDS[@]}"; do
        # nodes drain within server.drain_secs (10 s); bounded wait, then kill
        for _ in $(seq 1 150); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    NODE_PIDS=()
}

cleanup() {
    stop_nodes
    if [[ -n "$REDIS_PID" ]]; then
        kill -TERM "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    echo "logs: $WORK" >&2
}
trap cleanup EXIT

USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 30000))
        if [[ "$USED_PORTS" != *" $p "* ]] && [[ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]]; then
            USED_PORTS="$USED_PORTS$p "
            echo "$p"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

REDIS_PORT=$(free_port)
NODE_PORTS=("$(free_port)" "$(free_port)")

"${PRIO[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --logfile "$WORK/redis.log" &
REDIS_PID=$!
for _ in $(seq 1 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.05
done
redis-cli -p "$REDIS_PORT" ping >/dev/null

start_nodes() {
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    local n
    for n in 0 1; do
        "${PRIO[@]}" "$SERVER" serve --bind "127.0.0.1:${NODE_PORTS[$n]}" \
            --redis "redis://127.0.0.1:$REDIS_PORT" >>"$WORK/node$((n + 1)).log" 2>&1 &
        NODE_PIDS+=($!)
    done
    for n in 0 1; do
        for _ in $(seq 1 100); do
            curl -sf "http://127.0.0.1:${NODE_PORTS[$n]}/readyz" >/dev/null 2>&1 && break
            sleep 0.1
        done
        curl -sf "http://127.0.0.1:${NODE_PORTS[$n]}/readyz" >/dev/null ||
            { echo "node $((n + 1)) not ready; see $WORK/node$((n + 1)).log" >&2; exit 1; }
    done
}

# One node without Redis (in-memory state), on node 1's port.
start_standalone_node() {
    "${PRIO[@]}" "$SERVER" serve --bind "127.0.0.1:${NODE_PORTS[0]}" \
        >>"$WORK/standalone.log" 2>&1 &
    NODE_PIDS+=($!)
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:${NODE_PORTS[0]}/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -sf "http://127.0.0.1:${NODE_PORTS[0]}/readyz" >/dev/null ||
        { echo "standalone node not ready; see $WORK/standalone.log" >&2; exit 1; }
}

URL1="ws://127.0.0.1:${NODE_PORTS[0]}/ws"
URL2="ws://127.0.0.1:${NODE_PORTS[1]}/ws"
pids() { echo "node1=${NODE_PIDS[0]},node2=${NODE_PIDS[1]}"; }
