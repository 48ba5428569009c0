#!/usr/bin/env bash
# Builds, from Debian packages only, the base images of the offline path
# (deploy/offline.sh, deploy/e2e.sh; tags in deploy/offline.env), for a
# Docker engine that cannot pull from any image registry:
#
#   swiftchat/debian:bookworm-slim  minimal Debian 12 rootfs (debootstrap
#                                   --variant=minbase), slimmed like the
#                                   official debian:bookworm-slim, docker import
#   swiftchat/redis:local           + redis-server (deploy/images/redis.Dockerfile)
#   swiftchat/haproxy:local         + haproxy      (deploy/images/haproxy.Dockerfile)
#
# Idempotent: an image that exists with the current recipe version (label
# org.swiftchat.recipe) is kept; FORCE=1 rebuilds all. The debootstrap
# tarball is cached in $DEBOOTSTRAP_CACHE (default
# /var/cache/swiftchat-debootstrap) so a rebuild needs no second bootstrap.
#
# Needs: root, debootstrap, a Debian mirror (taken from this machine's apt
# sources, or DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR), docker. The derived
# images run apt-get inside `docker build`, with --network host so they
# reach the mirror exactly as the host does.
set -euo pipefail

RECIPE=1                      # bump when the recipes below change
SUITE=bookworm
BASE_TAG=swiftchat/debian:bookworm-slim
REDIS_TAG=swiftchat/redis:local
HAPROXY_TAG=swiftchat/haproxy:local
CACHE=${DEBOOTSTRAP_CACHE:-/var/cache/swiftchat-debootstrap}
HERE=$(cd "$(dirname "$0")" && pwd)

log() { printf '[images] %s\n' "$*" >&2; }

# --- mirrors: the ones apt on this machine already uses ----------------------
apt_uris() {
    # deb822 "URIs:" lines and one-line "deb URI suite" lines
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '/^[[:space:]]*URIs:/ {for (i = 2; i <= NF; i++) print $i}
             /^[[:space:]]*deb[[:space:]]/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}'
}
if [ -z "${DEBIAN_MIRROR:-}" ]; then
    DEBIAN_MIRROR=$(apt_uris | grep -E '/debian/?$' | head -n1 || true)
    DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
fi
if [ -z "${DEBIAN_SECURITY_MIRROR:-}" ]; then
    DEBIAN_SECURITY_MIRROR=$(apt_uris | grep -E '/debian-security/?$' | head -n1 || true)
    DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
fi
DEBIAN_MIRROR=${DEBIAN_MIRROR%/}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR%/}

have_image() {   # TAG -> 0 when it exists with the current recipe
    [ "${FORCE:-0}" = 1 ] && return 1
    local v
    v=$(docker image inspect -f '{{ index .Config.Labels "org.swiftchat.recipe" }}' "$1" 2>/dev/null) || return 1
    [ "$v" = "$RECIPE" ]
}

# --- 1. the base rootfs -------------------------------------------------------
build_base() {
    local tarball="$CACHE/$SUITE-minbase-r$RECIPE.tar"
    if [ ! -s "$tarball" ] || [ "${FORCE:-0}" = 1 ]; then
        command -v debootstrap >/dev/null || { log "debootstrap missing: apt-get install -y debootstrap"; exit 1; }
        [ "$(id -u)" = 0 ] || { log "debootstrap needs root"; exit 1; }
        mkdir -p "$CACHE"
        local root
        root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
        # shellcheck disable=SC2064
        trap "rm -rf '$root'" EXIT
        log "debootstrap --variant=minbase $SUITE from $DEBIAN_MIRROR"
        debootstrap --variant=minbase "$SUITE" "$root" "$DEBIAN_MIRROR" >&2
        # apt sources like the official image: main + updates + security
        rm -f "$root/etc/apt/sources.list"
        cat >"$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $DEBIAN_MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $DEBIAN_SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        # slim like debian:*-slim: no docs/man/locales from later installs,
        # no apt caches, no recommends, no daemons started by maintainer scripts
        cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
CFG
        cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
        printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >"$root/etc/apt/apt.conf.d/docker-no-recommends"
        printf 'Acquire::Languages "none";\n' >"$root/etc/apt/apt.conf.d/docker-no-languages"
        printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 755 "$root/usr/sbin/policy-rc.d"
        find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
        find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
        rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
               "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
               "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/var/log/apt/* \
               "$root"/tmp/* "$root"/root/.bash_history
        : >"$root/etc/machine-id"
        # the engine provides these at run time
        rm -f "$root/etc/hostname" "$root/etc/resolv.conf"
        tar --numeric-owner --xattrs -C "$root" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$root"
    else
        log "cached rootfs $tarball"
    fi
    log "docker import -> $BASE_TAG"
    docker import \
        --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL org.swiftchat.recipe=$RECIPE" \
        --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase (debootstrap) for SwiftChat\"" \
        --message "debootstrap --variant=minbase $SUITE $DEBIAN_MIRROR" \
        "$tarball" "$BASE_TAG" >/dev/null
}

# --- 2. images derived from it --------------------------------------------------
build_derived() {   # TAG DOCKERFILE
    log "docker build $1 ($(basename "$2"))"
    docker build --network host --pull=false \
        --build-arg "BASE=$BASE_TAG" --label "org.swiftchat.recipe=$RECIPE" \
        -t "$1" -f "$2" "$HERE/images" >&2
}

# A rebuilt tag leaves its previous image dangling: remove it.
drop_old() {   # OLD_ID TAG
    local new
    new=$(docker image inspect -f '{{.Id}}' "$2" 2>/dev/null || true)
    if [ -n "$1" ] && [ "$1" != "$new" ]; then docker rmi "$1" >/dev/null 2>&1 || true; fi
}
old_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

start=$(date +%s)
old_base=$(old_id "$BASE_TAG"); old_redis=$(old_id "$REDIS_TAG"); old_haproxy=$(old_id "$HAPROXY_TAG")
if have_image "$BASE_TAG"; then log "$BASE_TAG present"; else build_base; fi
if have_image "$REDIS_TAG"; then log "$REDIS_TAG present"; else build_derived "$REDIS_TAG" "$HERE/images/redis.Dockerfile"; fi
if have_image "$HAPROXY_TAG"; then log "$HAPROXY_TAG present"; else build_derived "$HAPROXY_TAG" "$HERE/images/haproxy.Dockerfile"; fi
drop_old "$old_redis" "$REDIS_TAG"; drop_old "$old_haproxy" "$HAPROXY_TAG"; drop_old "$old_base" "$BASE_TAG"
log "done in $(( $(date +%s) - start ))s: $BASE_TAG $REDIS_TAG $HAPROXY_TAG"
