#!/usr/bin/env bash
# A Python base image built without a container registry, for machines that reach Debian's packages but no
# registry (the test suite's): debootstrap a minimal Debian bookworm with its python3 (3.11), venv and CA
# certificates, and `podman import` it. The Dockerfile builds on it as on the official slim image:
#   deploy/image/local-base.sh && podman build --build-arg PYTHON_IMAGE=localhost/capctl-base:bookworm .
# The root file system is cached as a tarball (CAPCTL_IMAGE_CACHE, default .cache/image, gitignored), so only
# the first run pays for debootstrap (about 70 s); an image already in podman's storage costs nothing.
# Needs root, debootstrap and podman (./dev test installs both).
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${1:-localhost/capctl-base:bookworm}
CACHE=${CAPCTL_IMAGE_CACHE:-.cache/image}
# python-is-python3: the Dockerfile calls `python`, as the official image provides it.
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
TARBALL="$CACHE/bookworm-$(echo "$PACKAGES" | sha256sum | cut -c1-12).tar"

if podman image exists "$IMAGE"; then
  exit 0
fi
if [ ! -f "$TARBALL" ]; then
  mkdir -p "$CACHE"
  rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  echo "local-base: debootstrap bookworm with $PACKAGES (once; cached in $TARBALL)..." >&2
  if ! debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" >"$rootfs.log" 2>&1; then
    tail -20 "$rootfs.log" >&2
    echo "local-base: debootstrap failed (full log: $rootfs.log)" >&2
    exit 1
  fi
  rm -f "$rootfs.log"
  # No package cache nor package lists in the image: they are only needed to install more.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -cf "$TARBALL.part" .
  mv "$TARBALL.part" "$TARBALL"
fi
podman import --quiet --change 'CMD ["python3"]' "$TARBALL" "$IMAGE" >/dev/null
