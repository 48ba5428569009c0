#!/usr/bin/env bash
# Rolling restart of the SwiftChat nodes of a compose project, one at a time:
#   docker stop (SIGTERM: the node sends SHUTDOWN reconnect:true to its
#   clients, closes them with 1001 and exits 0; they reconnect through the
#   load balancer to the other nodes) -> docker start -> wait until the node
#   is ready (/readyz) and HAProxy has had time to mark it UP -> next node.
#
# Usage: deploy/rolling-restart.sh [-p PROJECT] [SERVICE]
#   PROJECT  compose project (default $COMPOSE_PROJECT_NAME, else the name
#            Compose derives from this repository's directory)
#   SERVICE  default swiftchat
# Env: GRACE (seconds before SIGKILL, default 15, keep > server.drain_secs),
#      SETTLE (seconds after ready before the next node, default 6:
#      HAProxy's rise 2 x inter 2 s plus margin).
#
# This restarts the same containers (same image). To roll out a new image see
# docs/deployment.md ("Upgrading").
set -euo pipefail
project=${COMPOSE_PROJECT_NAME:-}
if [ "${1:-}" = -p ]; then project=$2; shift 2; fi
if [ -z "$project" ]; then
    project=$(basename "$(cd "$(dirname "$0")/.." && pwd)" | tr '[:upper:]' '[:lower:]' | tr -cd 'a-z0-9_-')
fi
service=${1:-swiftchat}
grace=${GRACE:-15}
settle=${SETTLE:-6}

mapfile -t cids < <(docker ps \
    --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$service" \
    --format '{{.Label "com.docker.compose.container-number"}} {{.ID}}' | sort -n | awk '{print $2}')
[ "${#cids[@]}" -gt 0 ] || { echo "no running $service containers in project $project" >&2; exit 1; }
[ "${#cids[@]}" -gt 1 ] || echo "warning: only one $service node: its clients have nowhere to go during its restart" >&2

start=$(date +%s)
for cid in "${cids[@]}"; do
    name=$(docker inspect -f '{{.Name}}' "$cid"); name=${name#/}
    t=$(date +%s)
    docker stop -t "$grace" "$cid" >/dev/null
    code=$(docker inspect -f '{{.State.ExitCode}}' "$cid")
    [ "$code" = 0 ] || echo "warning: $name exited $code on SIGTERM (expected 0 after draining)" >&2
    docker start "$cid" >/dev/null
    for _ in $(seq 1 60); do
        if timeout 10 docker exec "$cid" busybox wget -q -O /dev/null http://127.0.0.1:8765/readyz 2>/dev/null; then
            break
        fi
        sleep 1
    done
    timeout 10 docker exec "$cid" busybox wget -q -O /dev/null http://127.0.0.1:8765/readyz \
        || { echo "$name did not become ready after restart" >&2; exit 1; }
    sleep "$settle"
    echo "restarted $name (drain exit $code) in $(( $(date +%s) - t ))s"
done
echo "rolling restart of ${#cids[@]} $service nodes done in $(( $(date +%s) - start ))s"
