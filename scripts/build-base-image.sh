#!/usr/bin/env bash
# build-base-image.sh - build an air-gapped Python 3.11 base image, equivalent to
# python:3.11-slim, from Debian bookworm packages (no registry needed).
#
#   scripts/build-base-image.sh [--force] [IMAGE_REF]
#
# IMAGE_REF defaults to local/python:3.11-slim-bookworm. If it already exists
# locally the script says so and exits 0 (--force rebuilds it).
#
# Steps: ensure a Docker engine (scripts/ensure-docker.sh), debootstrap a
# minbase bookworm rootfs with python3, python3-venv and ca-certificates,
# apply bookworm-updates/-security, trim docs/man/locales/caches, add the
# `python` symlink, `docker import` it with PATH/LANG/CMD, then smoke-test it
# (ssl, sqlite3, `python3 -m venv` + pip) offline. Needs root (debootstrap).
#
# Environment:
#   DEBIAN_MIRROR            (default http://deb.debian.org/debian)
#   DEBIAN_SECURITY_MIRROR   (default http://deb.debian.org/debian-security)
#   BASE_IMAGE_UPDATES=0     skip applying bookworm-updates/-security
#   TMPDIR                   where the temporary rootfs goes (default /var/tmp)
set -euo pipefail

SUITE=bookworm
INCLUDE=python3,python3-venv,ca-certificates
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
APPLY_UPDATES=${BASE_IMAGE_UPDATES:-1}
LOCK_FILE=/run/lock/build-base-image.lock
IMAGE_PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

log() { printf 'build-base-image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2; }

FORCE=0
IMAGE=""
while (($#)); do
    case "$1" in
        --force) FORCE=1 ;;
        -h | --help) usage; exit 0 ;;
        -*) usage; die "unknown option $1" ;;
        *) [[ -z $IMAGE ]] || die "only one IMAGE_REF expected"; IMAGE=$1 ;;
    esac
    shift
done
IMAGE=${IMAGE:-local/python:3.11-slim-bookworm}

image_size() {
    local bytes
    bytes=$(docker image inspect --format '{{.Size}}' "$1")
    printf '%d MB (%s bytes)' $(((bytes + 500000) / 1000000)) "$bytes"
}

# --- engine and fast path ---------------------------------------------------
"$SCRIPT_DIR/ensure-docker.sh" >&2 || die "no Docker engine (see above)"

if ((!FORCE)) && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already exists locally ($(image_size "$IMAGE")); nothing to do"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap needs chroot and mknod)"

# Serialise concurrent builds; re-check once we hold the lock.
mkdir -p "$(dirname "$LOCK_FILE")"
exec 9>"$LOCK_FILE"
flock -w 900 9 || die "timed out waiting for $LOCK_FILE"
if ((!FORCE)) && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE was built by a concurrent run ($(image_size "$IMAGE")); nothing to do"
    exit 0
fi

T_START=$SECONDS

# --- debootstrap --------------------------------------------------------------
export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap (apt)"
    if ! apt-cache policy debootstrap 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt-get -qq update >/dev/null
    fi
    apt-get -qq -o=Dpkg::Use-Pty=0 install -y --no-install-recommends debootstrap >/dev/null 2>&1 ||
        { apt-get -qq update >/dev/null &&
            apt-get -qq -o=Dpkg::Use-Pty=0 install -y --no-install-recommends debootstrap >/dev/null; } ||
        die "could not install debootstrap"
fi

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/base-image.XXXXXX")
ROOTFS=$WORK/rootfs

# Unmount everything below $WORK (deepest first). Never delete through a mount.
unmount_all() {
    local m
    awk -v w="$WORK/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
cleanup() {
    local rc=$?
    unmount_all
    if awk -v w="$WORK/" 'index($5, w) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
        log "WARNING: mounts remain under $WORK; not deleting it"
    else
        rm -rf --one-file-system "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

KEYRING_OPT=()
[[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
    KEYRING_OPT=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)

log "debootstrap --variant=minbase --include=$INCLUDE $SUITE from $MIRROR (about a minute)"
t0=$SECONDS
if ! debootstrap --variant=minbase --include="$INCLUDE" "${KEYRING_OPT[@]}" \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    log "debootstrap failed. Last lines of its log:"
    tail -n 25 "$WORK/debootstrap.log" | sed 's/^/    /' >&2
    [[ -f $ROOTFS/debootstrap/debootstrap.log ]] &&
        tail -n 25 "$ROOTFS/debootstrap/debootstrap.log" | sed 's/^/    /' >&2
    exit 1
fi
unmount_all
log "debootstrap done in $((SECONDS - t0)) s"

in_root() { chroot "$ROOTFS" /usr/bin/env -i PATH="$IMAGE_PATH_ENV" DEBIAN_FRONTEND=noninteractive "$@"; }

# --- apt sources as in the official image; apply point and security updates --
rm -f "$ROOTFS/etc/apt/sources.list"
cat >"$ROOTFS/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

# Same apt/dpkg settings as Debian's official (slim) images: no caches, no
# translations, no docs/man/locales for packages installed later.
cat >"$ROOTFS/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
echo 'Acquire::Languages "none";' >"$ROOTFS/etc/apt/apt.conf.d/docker-no-languages"
echo 'Acquire::GzipIndexes "true";' >"$ROOTFS/etc/apt/apt.conf.d/docker-gzip-indexes"
echo 'APT::AutoRemove::SuggestsImportant "false";' >"$ROOTFS/etc/apt/apt.conf.d/docker-autoremove-suggests"
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF

if [[ $APPLY_UPDATES == 1 ]]; then
    log "applying $SUITE-updates and $SUITE-security"
    t0=$SECONDS
    # No service may start inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$ROOTFS/usr/sbin/policy-rc.d"
    chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
    if ! { in_root apt-get -qq update && in_root apt-get -qq -o=Dpkg::Use-Pty=0 -y upgrade; } \
        >"$WORK/upgrade.log" 2>&1; then
        log "apt-get upgrade in the rootfs failed:"
        tail -n 25 "$WORK/upgrade.log" | sed 's/^/    /' >&2
        exit 1
    fi
    rm -f "$ROOTFS/usr/sbin/policy-rc.d"
    unmount_all
    log "updates applied in $((SECONDS - t0)) s ($(grep -c '^Unpacking' "$WORK/upgrade.log" || true) packages upgraded)"
fi

# --- python entry points --------------------------------------------------------
mkdir -p "$ROOTFS/usr/local/bin"
ln -sfn /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
[[ -x $ROOTFS/usr/bin/python3.11 ]] || die "python3.11 missing from the rootfs"

# --- trim -------------------------------------------------------------------------
log "trimming apt lists, caches, docs, man pages, locales, logs"
size_before=$(du -sm "$ROOTFS" | cut -f1)
in_root apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin \
    "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/lib/dpkg/*-old \
    "$ROOTFS"/var/cache/ldconfig/aux-cache "$ROOTFS"/debootstrap
mkdir -p "$ROOTFS/var/lib/apt/lists/partial"
find "$ROOTFS/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
find "$ROOTFS/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/groff/* \
    "$ROOTFS"/usr/share/lintian/* "$ROOTFS"/usr/share/linda/*
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
find "$ROOTFS/var/log" -type f -delete
rm -rf "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/* "$ROOTFS"/root/.cache
# The container runtime provides /dev, /proc, /sys, hostname and DNS.
find "$ROOTFS/dev" -mindepth 1 -delete
: >"$ROOTFS/etc/resolv.conf"
: >"$ROOTFS/etc/hostname"
[[ -f $ROOTFS/etc/machine-id ]] && : >"$ROOTFS/etc/machine-id"
size_after=$(du -sm "$ROOTFS" | cut -f1)
log "rootfs ${size_before} MB -> ${size_after} MB"

# --- import ---------------------------------------------------------------------------
py_version=$(in_root python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
debian_version=$(cat "$ROOTFS/etc/debian_version")
log "docker import $IMAGE (Python $py_version, Debian $debian_version)"
unmount_all
tar --numeric-owner --sort=name -C "$ROOTFS" -c . |
    docker import \
        --change "ENV PATH=$IMAGE_PATH_ENV" \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL org.opencontainers.image.description=\"Python $py_version on Debian $debian_version (debootstrap minbase), built by scripts/build-base-image.sh\"" \
        --change 'CMD ["python3"]' \
        --message "debootstrap $SUITE minbase + $INCLUDE" \
        - "$IMAGE" >/dev/null

# --- smoke test, offline ----------------------------------------------------------------
log "smoke test: python, ssl, sqlite3, venv + pip (network none)"
if ! out=$(docker run --rm --network none "$IMAGE" sh -ec '
        python --version
        python3.11 -c "import ssl, sqlite3, ctypes, zlib, bz2, lzma, hashlib, json, venv, ensurepip; print(ssl.OPENSSL_VERSION)"
        python3 -m venv /tmp/venv
        /tmp/venv/bin/pip --version' 2>&1); then
    log "smoke test failed; removing $IMAGE:"
    printf '%s\n' "$out" | sed 's/^/    /' >&2
    docker image rm "$IMAGE" >/dev/null 2>&1 || true
    exit 1
fi
printf '%s\n' "$out" | sed 's/^/    /' >&2

log "built $IMAGE in $((SECONDS - T_START)) s, image size $(image_size "$IMAGE")"
