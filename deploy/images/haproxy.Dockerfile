# HAProxy for the compose cluster, from Debian's haproxy package (2.6 LTS),
# on the locally built base (deploy/images.sh). Reads the same path as the
# official haproxy image, /usr/local/etc/haproxy/haproxy.cfg, which
# docker-compose.yml mounts from deploy/haproxy.cfg. busybox is there for
# `docker exec ... busybox wget -qO- http://127.0.0.1:8404/metrics` (stats).
ARG BASE=swiftchat/debian:bookworm-slim
FROM ${BASE}
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends haproxy busybox; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /usr/local/etc/haproxy /var/lib/haproxy; \
    chown haproxy:haproxy /var/lib/haproxy
USER haproxy
WORKDIR /var/lib/haproxy
EXPOSE 8765
# SIGUSR1: soft stop (finish established tunnels); docker stop then kills
# after its grace period.
STOPSIGNAL SIGUSR1
# -W master-worker (reload with SIGUSR2), -db stay in the foreground
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
