# Shell functions shared by deploy/offline.sh and deploy/e2e.sh (sourced, not
# run). Call them from the repository root. They print what the commands they
# run print; callers redirect as they like.

# The base image deploy/images.sh imports, on which the offline SwiftChat
# image is built.
SWIFTCHAT_DEBIAN_BASE=swiftchat/debian:bookworm-slim

# Sets COMPOSE to "docker compose" (v2) or "docker-compose" (v1), whichever
# exists; returns 1 when neither does.
find_compose() {
    if docker compose version >/dev/null 2>&1; then
        COMPOSE="docker compose"
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE="docker-compose"
    else
        return 1
    fi
}

# The release binary on the host: target/release/swiftchat.
build_binary() {
    cargo build --release --locked --bin swiftchat
}

# build_app_image TAG BASE_TAG
# The SwiftChat image the offline way, from target/release/swiftchat: a copy
# stripped of debug info (71 MB -> 10 MB; the builder stage strips the same
# way) in target/docker/, the Dockerfile's runtime stage built as BASE_TAG
# (--target runtime-base, on the locally built Debian base), then
# deploy/prebuilt.Dockerfile copying the binary on top of it as TAG.
build_app_image() {
    local tag=$1 base_tag=$2
    [ -x target/release/swiftchat ] || { echo "target/release/swiftchat missing: run cargo build --release --bin swiftchat" >&2; return 1; }
    mkdir -p target/docker || return 1
    strip --strip-debug -o target/docker/swiftchat target/release/swiftchat 2>/dev/null \
        || cp target/release/swiftchat target/docker/swiftchat || return 1
    docker build --target runtime-base --build-arg "RUNTIME_BASE=$SWIFTCHAT_DEBIAN_BASE" \
        -t "$base_tag" . || return 1
    docker build -f deploy/prebuilt.Dockerfile --build-arg "BASE=$base_tag" \
        --build-arg PREBUILT=target/docker/swiftchat -t "$tag" .
}
