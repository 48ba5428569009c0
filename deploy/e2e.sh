#!/usr/bin/env bash
# End-to-end test of the deployment on the local Docker engine, offline:
#   1. base images from Debian packages (deploy/images.sh), the SwiftChat
#      binary built on the host and put into the Dockerfile's runtime stage
#      (--target runtime-base, then deploy/prebuilt.Dockerfile), the same
#      steps as deploy/offline.sh (shared in deploy/lib.sh);
#   2. part "compose": the real docker-compose.yml under a unique project
#      name, exercised by deploy/e2e_client.py (3 replicas, spread, chat,
#      scale to 5, kill one, rolling restart, cluster-wide shutdown);
#   3. part "cluster": the same project, emptied, then docker-compose.yml +
#      docker-compose.cluster.yml (a 6-node Redis Cluster), exercised by
#      deploy/e2e_cluster.py (up, chat across replicas, docker kill of the
#      Redis primary that owns the room, chat goes on, the killed node
#      rejoins as a replica, cluster-wide shutdown), with the same image:
#      no second build;
#   4. everything this run created (containers, network, volumes, the
#      SwiftChat image of this run) is removed, pass or fail.
# Prints one line starting with "e2e:" and exits non-zero on any failure.
#
# Env: E2E_PARTS="compose cluster" (the default: both) selects the parts,
#      e.g. E2E_PARTS=cluster runs only the Redis Cluster one;
#      E2E_SKIP_CARGO=1 uses target/release/swiftchat as it is;
#      E2E_VERBOSE=1 logs every docker call and client event;
#      E2E_KEEP=1 leaves the cluster running for inspection (then clean up
#      with the `down` command it prints).
# The base images and the debootstrap cache are kept for the next run
# (deploy/images.sh rebuilds only what is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
# shellcheck source=deploy/lib.sh
. deploy/lib.sh
t0=$(date +%s)
say() { printf '[e2e %4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }
pre_passed=0   # images, cargo, image
fail() {
    say "FAILED: $*"
    echo "e2e: FAIL at $stage after $(( $(date +%s) - t0 ))s: $*"
    echo "e2e: $pre_passed passed, 1 failed"
    exit 1
}

PARTS=" ${E2E_PARTS:-compose cluster} "
for p in $PARTS; do
    case $p in compose|cluster) ;; *) echo "e2e: FAIL: unknown part '$p' in E2E_PARTS (compose, cluster)"; exit 2 ;; esac
done
part() { [[ "$PARTS" == *" $1 "* ]]; }

docker info >/dev/null 2>&1 || { echo "e2e: FAIL: no Docker engine answers"; exit 1; }
find_compose || { echo "e2e: FAIL: neither 'docker compose' nor 'docker-compose' found"; exit 1; }

# Leftovers of an earlier run that was killed before its cleanup ran.
for p in $(docker ps -a --filter label=com.docker.compose.project --format '{{.Label "com.docker.compose.project"}}' | grep -E '^swiftchat-e2e-[0-9]+$' | sort -u); do
    if ! kill -0 "${p##*-}" 2>/dev/null; then
        echo "[e2e] removing leftovers of $p"
        docker ps -aq --filter "label=com.docker.compose.project=$p" | xargs -r docker rm -f >/dev/null
        docker network ls -q --filter "label=com.docker.compose.project=$p" | xargs -r docker network rm >/dev/null
        docker volume ls -q --filter "label=com.docker.compose.project=$p" | xargs -r docker volume rm >/dev/null
        docker rmi "swiftchat/swiftchat:e2e-${p##*-}" "swiftchat/swiftchat:e2e-${p##*-}-base" >/dev/null 2>&1 || true
    fi
done

PROJECT=swiftchat-e2e-$$
APP_IMAGE=swiftchat/swiftchat:e2e-$$
WORK=$(mktemp -d)
LB_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ADMIN_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
KEY=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
# Everything Compose reads comes from this file, not from a developer's .env
# (the images too: the compose defaults are the official ones, which need a
# registry).
cat >"$WORK/e2e.env" <<ENV
APP_IMAGE=$APP_IMAGE
REDIS_IMAGE=swiftchat/redis:local
LB_IMAGE=swiftchat/haproxy:local
LB_BIND=127.0.0.1
LB_PORT=$LB_PORT
ADMIN_PORT=$ADMIN_PORT
PUBLIC_HOST=127.0.0.1
PUBLIC_PORT=$LB_PORT
SWIFTCHAT_ADMIN__SHUTDOWN_KEY=sk_$KEY
REDIS_PASSWORD=rp_$KEY
SWIFTCHAT_REDIS__URL=redis://:rp_$KEY@redis:6379
REDIS_CLUSTER_URL=$(for h in redis redis-2 redis-3 redis-4 redis-5 redis-6; do printf 'redis://:rp_%s@%s:6379,' "$KEY" "$h"; done | sed 's/,$//')
RUST_LOG=info
ENV
ARGS_COMPOSE="--env-file $WORK/e2e.env -f $REPO/docker-compose.yml"
ARGS_CLUSTER="$ARGS_COMPOSE -f $REPO/docker-compose.cluster.yml"
# Cleanup takes down whatever of the two this run may have started.
if part cluster; then DC="$COMPOSE -p $PROJECT $ARGS_CLUSTER"; else DC="$COMPOSE -p $PROJECT $ARGS_COMPOSE"; fi
stage=setup
built_image=0

cleanup() {
    local rc=$?
    set +e
    if [ "${E2E_KEEP:-0}" = 1 ]; then
        say "E2E_KEEP=1: cluster left running; remove it with: $DC down -v --remove-orphans; docker rmi $APP_IMAGE $APP_IMAGE-base"
        return $rc
    fi
    $DC down -v --remove-orphans -t 5 >"$WORK/down.log" 2>&1 || cat "$WORK/down.log"
    [ "$built_image" = 1 ] && docker rmi "$APP_IMAGE" "$APP_IMAGE-base" >/dev/null 2>&1
    left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"; \
           docker network ls -q --filter "label=com.docker.compose.project=$PROJECT"; \
           docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
    [ -z "$left" ] || say "warning: left behind: $left"
    rm -rf "$WORK"
    return $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. images
stage=images
t=$(date +%s)
bash deploy/images.sh >"$WORK/images.log" 2>&1 || { tail -30 "$WORK/images.log"; fail "deploy/images.sh"; }
images_s=$(( $(date +%s) - t )); pre_passed=1
say "base images ready in ${images_s}s ($(tail -1 "$WORK/images.log"))"

stage=cargo
t=$(date +%s)
if [ "${E2E_SKIP_CARGO:-0}" != 1 ]; then
    build_binary >"$WORK/cargo.log" 2>&1 || { tail -30 "$WORK/cargo.log"; fail "cargo build --release"; }
fi
[ -x target/release/swiftchat ] || fail "target/release/swiftchat missing"
cargo_s=$(( $(date +%s) - t )); pre_passed=2
say "cargo build --release --locked --bin swiftchat: ${cargo_s}s"

stage=image
t=$(date +%s)
built_image=1
# the Dockerfile's runtime stage, then the stripped host binary on top of it
build_app_image "$APP_IMAGE" "$APP_IMAGE-base" >"$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log"; fail "docker build (--target runtime-base, then deploy/prebuilt.Dockerfile)"; }
image_s=$(( $(date +%s) - t ))
say "SwiftChat image $APP_IMAGE built in ${image_s}s, $(docker image inspect -f '{{.Size}}' "$APP_IMAGE" | awk '{printf "%.1f MB", $1/1e6}')"
# The image really holds what the Dockerfile promises.
[ "$(docker image inspect -f '{{.Config.User}}' "$APP_IMAGE")" = "10001:10001" ] || fail "image user is not 10001"
docker image inspect -f '{{json .Config.Healthcheck.Test}}' "$APP_IMAGE" | grep -q busybox || fail "no HEALTHCHECK"
docker run --rm --entrypoint busybox "$APP_IMAGE" wget --help >/dev/null 2>&1 || fail "busybox wget missing in image"
pre_passed=3

# ---- test client
stage=client
VENV=target/e2e-venv
if ! "$VENV/bin/python" -c 'import websockets.asyncio.client' >/dev/null 2>&1; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check 'websockets>=13,<18' >"$WORK/pip.log" 2>&1 \
        || { tail -20 "$WORK/pip.log"; fail "pip install websockets"; }
fi

# ---- 2./3. the parts, each through its Python driver
export E2E_PROJECT=$PROJECT E2E_COMPOSE="$COMPOSE" LB_PORT
export COMPOSE_PROJECT_NAME=$PROJECT    # for deploy/rolling-restart.sh
export PYTHONDONTWRITEBYTECODE=1        # e2e_cluster.py imports e2e_client.py: no __pycache__ in deploy/
ok=0; bad=0; summaries=()
# run_part NAME DRIVER COMPOSE_ARGS: adds to ok/bad, keeps the PASS line
run_part() {
    local name=$1 driver=$2 args=$3 rc p_ok p_bad line
    stage=$name
    say "part $name: $driver"
    set +e
    E2E_COMPOSE_ARGS="$args" "$VENV/bin/python" "$driver" | tee "$WORK/$name.log" | grep -v '^E2E_STEPS '
    rc=${PIPESTATUS[0]}
    set -e
    read -r _ p_ok p_bad < <(grep '^E2E_STEPS ' "$WORK/$name.log" | tail -1 || echo "E2E_STEPS 0 1")
    p_ok=${p_ok:-0}; p_bad=${p_bad:-1}
    [ "$rc" = 0 ] || [ "$p_bad" != 0 ] || p_bad=1
    ok=$(( ok + p_ok )); bad=$(( bad + p_bad ))
    line=$(grep -E '^e2e(-cluster)?: PASS' "$WORK/$name.log" | tail -1 || true)
    [ "$p_bad" = 0 ] && summaries+=("$name: ${line#*PASS }")
    return 0
}

if part compose; then
    run_part compose deploy/e2e_client.py "$ARGS_COMPOSE"
fi
if part cluster; then
    # a fresh start in the same project: the compose part's containers and
    # Redis volume go first
    if part compose; then
        $COMPOSE -p "$PROJECT" $ARGS_COMPOSE down -v --remove-orphans -t 5 >"$WORK/down-compose.log" 2>&1 \
            || cat "$WORK/down-compose.log"
    fi
    run_part cluster deploy/e2e_cluster.py "$ARGS_CLUSTER"
fi
total=$(( $(date +%s) - t0 ))
if [ "$bad" = 0 ]; then
    line="e2e: PASS images(${images_s}s) cargo(${cargo_s}s) image(${image_s}s)"
    for x in "${summaries[@]}"; do line="$line + $x"; done
    echo "$line; total ${total}s"
fi
# the plain closing line CI reads
echo "e2e: $(( pre_passed + ok )) passed, $bad failed"
[ "$bad" = 0 ] || exit 1
