#!/usr/bin/env bash
# Soak test: one SwiftChat node on a fresh redis-server, clients chatting
# with churn (logins, joins, messages, clean closes and dropped sockets; see
# bench/src/soak.rs) for SOAK_SECS, while the node's RSS and open file
# descriptors and Redis's used_memory are sampled. After the warm-up each
# must be flat: the mean of the last third of the samples within 10% of the
# mean of the first third (a leak grows; churn only wobbles).
#
#   bash bench/soak.sh                      # 120 s, 200 clients
#   SOAK_SECS=1800 bash bench/soak.sh       # the 30-minute run
#
# Settings (environment): SOAK_SECS (120), SOAK_CLIENTS (200), SOAK_ROOMS
# (10), SOAK_INTERVAL_MS (1000, per client), SOAK_MAX_LIFE_SECS (20),
# SOAK_SAMPLE_SECS (5), SOAK_WARMUP_SECS (a quarter of SOAK_SECS),
# SOAK_PROFILE (release; debug builds faster), NO_BUILD=1, SOAK_OUT (the
# result file; default bench/results/soak-<UTC time>.md).
# Exit status: 0 when all three are flat, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SOAK_SECS:-120}
CLIENTS=${SOAK_CLIENTS:-200}
ROOMS=${SOAK_ROOMS:-10}
INTERVAL_MS=${SOAK_INTERVAL_MS:-1000}
MAX_LIFE=${SOAK_MAX_LIFE_SECS:-20}
SAMPLE=${SOAK_SAMPLE_SECS:-5}
WARMUP=${SOAK_WARMUP_SECS:-$((SECS / 4))}
PROFILE=${SOAK_PROFILE:-release}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${SOAK_OUT:-bench/results/soak-$STAMP.md}

say() { echo "[soak] $*" >&2; }

if [ "${NO_BUILD:-0}" != 1 ]; then
    flag=$([ "$PROFILE" = release ] && echo --release || true)
    say "cargo build $flag --locked --bin swiftchat --bin swiftchat-bench"
    cargo build $flag --locked --bin swiftchat -p swiftchat >&2
    cargo build $flag --locked -p swiftchat-bench >&2
fi
NODE_BIN=target/$PROFILE/swiftchat
BENCH_BIN=target/$PROFILE/swiftchat-bench

WORK=$(mktemp -d)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port)
NODE_PORT=$(free_port)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!; pids+=("$REDIS_PID")
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

RUST_LOG=warn "$NODE_BIN" serve --bind "127.0.0.1:$NODE_PORT" \
    --redis "redis://127.0.0.1:$REDIS_PORT" >"$WORK/node.log" 2>&1 &
NODE_PID=$!; pids+=("$NODE_PID")
for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NODE_PORT/readyz")" = 200 ] && break
    sleep 0.1
done
say "node pid $NODE_PID on :$NODE_PORT, redis pid $REDIS_PID on :$REDIS_PORT; ${SECS}s, $CLIENTS clients"

"$BENCH_BIN" soak --url "ws://127.0.0.1:$NODE_PORT/ws" --secs "$SECS" --clients "$CLIENTS" \
    --rooms "$ROOMS" --interval-ms "$INTERVAL_MS" --max-life-secs "$MAX_LIFE" \
    >"$WORK/bench.out" 2>"$WORK/bench.err" &
BENCH_PID=$!; pids+=("$BENCH_PID")

echo "t_secs,rss_kb,fds,redis_used_memory,connections" >"$WORK/samples.csv"
start=$(date +%s)
while kill -0 "$BENCH_PID" 2>/dev/null; do
    t=$(( $(date +%s) - start ))
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$NODE_PID/status")
    fds=$(ls "/proc/$NODE_PID/fd" | wc -l)
    mem=$(redis-cli -p "$REDIS_PORT" info memory | tr -d '\r' | awk -F: '$1 == "used_memory" {print $2}')
    conns=$(curl -s "http://127.0.0.1:$NODE_PORT/metrics" | awk '$1 == "swiftchat_connections" {print $2}')
    echo "$t,$rss,$fds,$mem,${conns:-}" >>"$WORK/samples.csv"
    sleep "$SAMPLE"
done
wait "$BENCH_PID" || say "the generator exited with an error"
kill -0 "$NODE_PID" 2>/dev/null || { cat "$WORK/node.log" >&2; say "the node died"; exit 1; }

mkdir -p "$(dirname "$OUT")"
set +e
python3 - "$WORK/samples.csv" "$WARMUP" >"$WORK/verdict.md" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
warmup = int(sys.argv[2])
after = [r for r in rows if int(r["t_secs"]) >= warmup]
ok = True
print("| metric | after warm-up: min | max | first third mean | last third mean | change | flat (within 10%) |")
print("|---|---|---|---|---|---|---|")
for key, unit in [("rss_kb", "KiB"), ("fds", ""), ("redis_used_memory", "B")]:
    vals = [float(r[key]) for r in after if r[key]]
    if len(vals) < 3:
        print(f"| {key} | too few samples ({len(vals)}) | | | | | no |"); ok = False; continue
    third = max(1, len(vals) // 3)
    first, last = sum(vals[:third]) / third, sum(vals[-third:]) / third
    change = (last - first) / first if first else 0.0
    flat = abs(change) <= 0.10
    ok &= flat
    print(f"| {key} ({unit or 'count'}) | {min(vals):.0f} | {max(vals):.0f} | {first:.0f} | {last:.0f} | {change*100:+.1f}% | {'yes' if flat else 'NO'} |")
print()
print("ALL FLAT" if ok else "NOT FLAT")
sys.exit(0 if ok else 1)
PY
verdict=$?
set -e
{
    echo "# Soak run $STAMP"
    echo
    echo "Command: \`SOAK_SECS=$SECS SOAK_CLIENTS=$CLIENTS SOAK_ROOMS=$ROOMS SOAK_INTERVAL_MS=$INTERVAL_MS SOAK_MAX_LIFE_SECS=$MAX_LIFE SOAK_SAMPLE_SECS=$SAMPLE SOAK_WARMUP_SECS=$WARMUP SOAK_PROFILE=$PROFILE bash bench/soak.sh\`"
    echo "on $(nproc) cores ($(uname -sr)), redis-server $(redis-server --version | awk '{print $3}'), $PROFILE build of $(git rev-parse --short HEAD)."
    echo
    echo "Generator: \`$(tail -1 "$WORK/bench.out")\`"
    echo
    cat "$WORK/verdict.md"
    echo
    echo "Warm-up: the first ${WARMUP}s are left out. Samples every ${SAMPLE}s:"
    echo
    echo '```'
    cat "$WORK/samples.csv"
    echo '```'
    echo
    echo "Node warnings and errors (RUST_LOG=warn): $(grep -c . "$WORK/node.log" || true) lines"
    head -5 "$WORK/node.log" | sed 's/^/    /'
} >"$OUT"
cat "$WORK/verdict.md"
say "result: $OUT"
exit $verdict
