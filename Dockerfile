# SwiftChat container image.
#
# Normal build (needs the rust and debian images from a registry; what
# `docker compose up` does when the image is missing):
#     docker build -t swiftchat/swiftchat:local .
# Offline build (no registry, e.g. CI here): `bash deploy/offline.sh build`
# builds the binary on the host and puts it into the very same runtime stage
# (deploy/lib.sh, build_app_image; see docs/deployment.md):
#     deploy/images.sh                    # swiftchat/debian:bookworm-slim from Debian packages
#     cargo build --release --locked --bin swiftchat
#     strip --strip-debug -o target/docker/swiftchat target/release/swiftchat
#     docker build --target runtime-base \
#         --build-arg RUNTIME_BASE=swiftchat/debian:bookworm-slim -t swiftchat/runtime-base:local .
#     docker build -f deploy/prebuilt.Dockerfile \
#         --build-arg PREBUILT=target/docker/swiftchat -t swiftchat/swiftchat:local .
#
# runtime-base comes first because the classic builder (Docker without
# BuildKit) builds every stage up to --target: `--target runtime-base` never
# touches the Rust image. The prebuilt variant lives in its own file for the
# same reason: as a stage here, every normal build would need a host binary.

ARG RUST_IMAGE=rust:1.88-slim-bookworm
ARG RUNTIME_BASE=debian:bookworm-slim

# ---------------------------------------------------------------------------
# runtime-base: everything the running node needs except the binary.
FROM ${RUNTIME_BASE} AS runtime-base
# busybox: its `wget` is the HEALTHCHECK's HTTP client (about 1 MiB; curl
# would pull in libcurl, TLS and more). The binary needs only libc (TLS to
# Redis is rustls with ring, compiled in); ca-certificates gives rediss://
# URLs the system's roots (redis.tls_ca_file names a private CA instead).
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends busybox ca-certificates; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 swiftchat; \
    useradd --system --uid 10001 --gid swiftchat --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin swiftchat; \
    mkdir -p /app; chown swiftchat:swiftchat /app
# A swiftchat.toml mounted here is read (it is the working directory);
# SWIFTCHAT_<SECTION>__<KEY> environment variables override it.
WORKDIR /app
ENV RUST_LOG=info
EXPOSE 8765
USER 10001:10001
# On SIGTERM a node drains: SHUTDOWN {reconnect: true} to its clients, close
# 1001, presence released, exit 0 within server.drain_secs (10 s). Give the
# orchestrator a longer grace period (compose: stop_grace_period: 15s).
STOPSIGNAL SIGTERM
# /healthz: 200 while the process runs. Readiness (/readyz: Redis reachable,
# not draining) is the load balancer's check, not Docker's: a node that lost
# Redis should not be restarted for it. The port is server.bind's default;
# override the health check if you change it. No `wget -T`: Debian 12's
# busybox wget crashes with it on larger answers; --timeout bounds the check.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8765/healthz"]
# Exec form: swiftchat is PID 1 and receives SIGTERM itself.
ENTRYPOINT ["/usr/local/bin/swiftchat"]
CMD ["serve"]

# ---------------------------------------------------------------------------
# builder: compiles in a Rust >= 1.88 image. Dependencies are built first
# from the manifests alone, so that layer stays cached until Cargo.toml or
# Cargo.lock change.
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY bench/Cargo.toml bench/Cargo.toml
RUN set -eux; \
    mkdir -p src bench/src; \
    echo 'fn main() {}' > src/main.rs; \
    : > src/lib.rs; \
    echo 'fn main() {}' > bench/src/main.rs; \
    cargo build --release --locked --bin swiftchat; \
    rm -rf src bench/src target/release/swiftchat target/release/deps/swiftchat-* \
        target/release/deps/libswiftchat-* target/release/.fingerprint/swiftchat-*
COPY . .
# strip: the release profile keeps debug info (debug = 1), 70 MB -> 10 MB.
RUN set -eux; \
    touch src/main.rs src/lib.rs; \
    cargo build --release --locked --bin swiftchat; \
    install -m 0755 target/release/swiftchat /usr/local/bin/swiftchat; \
    strip --strip-debug /usr/local/bin/swiftchat

# ---------------------------------------------------------------------------
# runtime (default target): the runtime with the binary from the builder.
FROM runtime-base AS runtime
COPY --from=builder /usr/local/bin/swiftchat /usr/local/bin/swiftchat
