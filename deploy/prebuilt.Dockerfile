# The SwiftChat image from a binary built on the host, for engines that cannot
# pull the Rust builder image. It is the Dockerfile's runtime stage unchanged
# (user, HEALTHCHECK, STOPSIGNAL, ENTRYPOINT all come from the runtime-base
# image) plus the binary. `bash deploy/offline.sh build` (deploy/lib.sh,
# build_app_image) runs these steps:
#
#   docker build --target runtime-base \
#       --build-arg RUNTIME_BASE=swiftchat/debian:bookworm-slim \
#       -t swiftchat/runtime-base:local .
#   cargo build --release --locked --bin swiftchat
#   docker build -f deploy/prebuilt.Dockerfile -t swiftchat/swiftchat:local .
#
# Context: the repository root. .dockerignore lets only
# target/release/swiftchat and target/docker/ of target/ through; PREBUILT
# picks another path, e.g. a copy stripped with `strip --strip-debug`
# (deploy/e2e.sh uses target/docker/swiftchat). Build the binary against a
# glibc no newer than the runtime's (Debian 12: 2.36).
ARG BASE=swiftchat/runtime-base:local
FROM ${BASE}
ARG PREBUILT=target/release/swiftchat
COPY ${PREBUILT} /usr/local/bin/swiftchat
