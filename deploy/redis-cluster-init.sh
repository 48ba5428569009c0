#!/bin/sh
# Forms the Redis Cluster of docker-compose.cluster.yml, once; run by its
# one-shot service `redis-cluster-init` (in the Redis image: sh, redis-cli,
# getent) before the SwiftChat nodes start. Idempotent:
#
#   - waits (at most REDIS_CLUSTER_WAIT s) until every node in
#     REDIS_CLUSTER_NODES resolves and answers PING (with REDISCLI_AUTH);
#   - all nodes empty and alone (a first `up`): `redis-cli --cluster create
#     IP:PORT ... --cluster-replicas REDIS_CLUSTER_REPLICAS --cluster-yes`
#     (by IP address: CLUSTER MEET takes addresses, not names);
#   - all nodes already in a cluster (a later `up`, a restart): CLUSTER MEET
#     from every node to every other one at its current address, which
#     corrects addresses that changed when containers were recreated (a
#     node's id stays in its nodes.conf; Redis updates the known node's
#     address and drops the handshake);
#   - a mix (a node's volume lost): stops with a message, changes nothing;
#   - then waits until every node says cluster_state:ok with all 16384
#     slots assigned and ok, and every replica's link to its primary is up
#     (a replica that has never synced cannot take over: Redis refuses the
#     failover, its data being too old), and exits 0; non-zero on any
#     failure.
set -eu

NODES=${REDIS_CLUSTER_NODES:-"redis redis-2 redis-3 redis-4 redis-5 redis-6"}
PORT=${REDIS_CLUSTER_PORT:-6379}
REPLICAS=${REDIS_CLUSTER_REPLICAS:-1}
WAIT=${REDIS_CLUSTER_WAIT:-120}

log() { echo "[redis-cluster-init] $*"; }
now() { date +%s; }
deadline=$(( $(now) + WAIT ))
# cli HOST ARGS...
cli() { h=$1; shift; redis-cli --no-auth-warning -h "$h" -p "$PORT" "$@" 2>&1; }
info_field() { cli "$1" cluster info | tr -d '\r' | sed -n "s/^$2://p"; }

# 1. every node resolves and answers PING
ips=
for h in $NODES; do
    last=
    while :; do
        ip=$(getent hosts "$h" | awk '{ print $1; exit }')
        if [ -n "$ip" ]; then
            last=$(cli "$ip" ping)
            [ "$last" = PONG ] && break
        else
            last="$h does not resolve"
        fi
        if [ "$(now)" -ge "$deadline" ]; then
            log "$h: no PONG within ${WAIT}s (last answer: $last)"
            exit 1
        fi
        sleep 1
    done
    ips="$ips $ip"
done
log "all nodes answer PING:$ips"

# 2. fresh, formed or mixed?
alone=0
joined=0
for ip in $ips; do
    known=$(info_field "$ip" cluster_known_nodes)
    assigned=$(info_field "$ip" cluster_slots_assigned)
    case $known in
        ''|*[!0-9]*) log "$ip: CLUSTER INFO failed (is cluster-enabled on?): $(cli "$ip" cluster info | head -n 2)"; exit 1 ;;
    esac
    if [ "$known" = 1 ] && [ "$assigned" = 0 ]; then
        alone=$((alone + 1))
    else
        joined=$((joined + 1))
    fi
done

if [ "$joined" = 0 ]; then
    set --
    for ip in $ips; do set -- "$@" "$ip:$PORT"; done
    log "creating the cluster: redis-cli --cluster create $* --cluster-replicas $REPLICAS --cluster-yes"
    redis-cli --no-auth-warning --cluster create "$@" --cluster-replicas "$REPLICAS" --cluster-yes
elif [ "$alone" = 0 ]; then
    log "already formed: refreshing every node's view of the others' addresses (CLUSTER MEET)"
    for a in $ips; do
        for b in $ips; do
            [ "$a" = "$b" ] && continue
            r=$(cli "$a" cluster meet "$b" "$PORT")
            [ "$r" = OK ] || log "warning: CLUSTER MEET $b from $a: $r"
        done
    done
else
    log "$joined node(s) are in a cluster and $alone are empty and alone (a lost volume?)."
    log "Not touching it. Either add the empty ones by hand (redis-cli --cluster add-node NEW EXISTING --cluster-slave)"
    log "or start over with new volumes: docker compose -f docker-compose.yml -f docker-compose.cluster.yml down -v"
    exit 1
fi

# 3. healthy everywhere, replicas in sync
while :; do
    bad=
    for ip in $ips; do
        st=$(info_field "$ip" cluster_state)
        ok=$(info_field "$ip" cluster_slots_ok)
        [ "$st" = ok ] && [ "$ok" = 16384 ] || bad="$bad $ip(state=$st slots_ok=$ok)"
        repl=$(cli "$ip" info replication | tr -d '\r')
        case $repl in
            *role:slave*)
                case $repl in
                    *master_link_status:up*) ;;
                    *) bad="$bad $ip(replica, link to its primary not up yet)" ;;
                esac ;;
        esac
    done
    [ -z "$bad" ] && break
    if [ "$(now)" -ge "$deadline" ]; then
        log "cluster not ok within ${WAIT}s:$bad"
        exit 1
    fi
    sleep 1
done
log "cluster ok, replicas in sync: $(cli "$(echo $ips | cut -d' ' -f1)" cluster nodes | awk '{ split($2, a, "@"); r = ($3 ~ /master/) ? "primary" : "replica"; printf "%s %s; ", a[1], r }')"
