# Redis for the compose cluster, from Debian's redis-server package, on the
# locally built base (deploy/images.sh). Compatible with how
# docker-compose.yml runs the official redis image: `redis-server ARGS`, data
# in /data, `redis-cli ping` for the health check.
ARG BASE=swiftchat/debian:bookworm-slim
FROM ${BASE}
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends redis-server; \
    rm -rf /var/lib/apt/lists/*; \
    mkdir -p /data; chown redis:redis /data
USER redis
WORKDIR /data
VOLUME /data
EXPOSE 6379
STOPSIGNAL SIGTERM
CMD ["redis-server", "--appendonly", "yes", "--dir", "/data", "--protected-mode", "no"]
