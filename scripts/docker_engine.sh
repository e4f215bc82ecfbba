#!/usr/bin/env bash
# A Docker engine for the container tests, on a machine that has none and cannot reach Docker Hub:
#   1. Debian's docker.io, with dockerd started as root on overlay2 and host networking only;
#   2. a base image made from Debian packages (debootstrap, then `docker import`), tagged
#      kfops-base:bookworm, which `kfops build --base-image kfops-base:bookworm` builds on.
# Idempotent: each part is skipped when it is already there. Usage: scripts/docker_engine.sh [--no-base]
set -euo pipefail

BASE_TAG=${KFOPS_BASE_IMAGE:-kfops-base:bookworm}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends docker.io debootstrap
fi

if ! docker info >/dev/null 2>&1; then
    # No bridge and no iptables: this sandbox allows neither; containers use the host's network.
    $SUDO sh -c 'nohup dockerd --storage-driver=overlay2 --iptables=false --bridge=none --ip-forward=false \
        >/var/log/dockerd.log 2>&1 &'
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/dockerd.log" >&2; exit 1; }
fi
echo "docker engine: $(docker info --format '{{.ServerVersion}} ({{.Driver}})')"

if [ "${1:-}" = "--no-base" ] || docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    exit 0
fi

# The Debian mirror this machine's apt already uses (no host is named here).
MIRROR=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
if [ -z "$MIRROR" ]; then
    MIRROR=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
[ -n "$MIRROR" ] || { echo "no Debian mirror found in the apt sources" >&2; exit 1; }

ROOTFS=$(mktemp -d /var/tmp/kfops-rootfs.XXXXXX)
trap '$SUDO rm -rf "$ROOTFS"' EXIT
# python3 of bookworm is 3.11, the version the images are built for; libgomp1 for xgboost/torch.
$SUDO debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates,libgomp1 \
    bookworm "$ROOTFS" "$MIRROR"
$SUDO rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
$SUDO tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "$BASE_TAG"
echo "base image: $BASE_TAG ($(docker image inspect "$BASE_TAG" --format '{{.Size}}') bytes)"
