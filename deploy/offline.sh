#!/usr/bin/env bash
# The compose cluster on a Docker engine that cannot pull any image:
#
#   bash deploy/offline.sh up -d                   # build what is missing, start
#   bash deploy/offline.sh up -d --scale swiftchat=5 --no-recreate
#   bash deploy/offline.sh exec swiftchat swiftchat shutdown --reason "..."
#   bash deploy/offline.sh down -v                 # stop, remove, drop the Redis volume
#   bash deploy/offline.sh build                   # only build the images
#   bash deploy/offline.sh -f docker-compose.yml -f docker-compose.cluster.yml up -d
#                                                  # on a 6-node Redis Cluster (same -f for
#                                                  # every later command, e.g. down -v)
#
# Every argument goes to `docker compose` (or `docker-compose`, whichever
# exists), run in the repository root (so .env there is read and the project
# is the one plain `docker compose` in the repository would use), with
# REDIS_IMAGE, LB_IMAGE and APP_IMAGE set from deploy/offline.env to locally
# built images. Before `up`, `create` and `run` it builds them, each step
# skipping what is already up to date:
#   1. deploy/images.sh: swiftchat/debian:bookworm-slim (debootstrap),
#      swiftchat/redis:local, swiftchat/haproxy:local (needs root and
#      debootstrap the first time; ~80 s);
#   2. cargo build --release --locked --bin swiftchat on the host (a fresh
#      build takes several minutes; needs Rust >= 1.88 and a glibc no newer
#      than Debian 12's 2.36);
#   3. the SwiftChat image: the Dockerfile's runtime stage plus the stripped
#      binary (deploy/prebuilt.Dockerfile), tagged $APP_IMAGE.
# `build` does 1-3 and stops (Compose's own build would need the Rust image).
# Build output goes to target/offline-build.log.
#
# Env: OFFLINE_SKIP_CARGO=1 uses target/release/swiftchat as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=deploy/lib.sh
. deploy/lib.sh

say() { printf '[offline] %s\n' "$*" >&2; }

if [ $# = 0 ] || [ "$1" = -h ] || [ "$1" = --help ]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
find_compose || { say "neither 'docker compose' nor 'docker-compose' found"; exit 1; }

set -a
# shellcheck source=deploy/offline.env
. deploy/offline.env
set +a

# The compose subcommand: the first argument that is not a global option
# (or the value of one).
cmd=
skip=0
for a in "$@"; do
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case $a in
        -p|--project-name|-f|--file|--env-file|--profile|--project-directory|-H|--host|--context|-c|--ansi|--log-level|--parallel|--progress) skip=1 ;;
        -*) ;;
        *) cmd=$a; break ;;
    esac
done

build_images() {
    local log=target/offline-build.log t
    mkdir -p target
    : >"$log"
    t=$(date +%s)
    bash deploy/images.sh >>"$log" 2>&1 || { tail -n 30 "$log" >&2; say "deploy/images.sh failed (log: $log)"; return 1; }
    say "base images ready ($(( $(date +%s) - t ))s): $REDIS_IMAGE $LB_IMAGE $SWIFTCHAT_DEBIAN_BASE"
    if [ "${OFFLINE_SKIP_CARGO:-0}" != 1 ]; then
        t=$(date +%s)
        say "cargo build --release --locked --bin swiftchat (a fresh build takes several minutes)"
        build_binary >>"$log" 2>&1 || { tail -n 30 "$log" >&2; say "cargo build failed (log: $log)"; return 1; }
        say "binary ready ($(( $(date +%s) - t ))s)"
    fi
    t=$(date +%s)
    build_app_image "$APP_IMAGE" swiftchat/runtime-base:local >>"$log" 2>&1 \
        || { tail -n 30 "$log" >&2; say "building $APP_IMAGE failed (log: $log)"; return 1; }
    say "$APP_IMAGE ready ($(( $(date +%s) - t ))s)"
}

case $cmd in
    build) build_images; exit ;;
    up|create|run) build_images ;;
esac
say "$COMPOSE $*"
# shellcheck disable=SC2086  # COMPOSE is one or two words
exec $COMPOSE "$@"
