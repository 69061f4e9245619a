#!/usr/bin/env bash
# Builds the container tests' image locally, with no image registry: a
# rootfs holding a static busybox (Debian's busybox-static) and its applet
# links, imported by `ENGINE import`.
#
#   scripts/test-image.sh ENGINE [TAG]     ENGINE: docker or podman
#
# Used by .ci/run (docker, once) and by tests/docker.rs (podman into each
# test's own storage; docker when the image is missing). BUSYBOX overrides
# the binary (default /bin/busybox).
set -euo pipefail

engine=${1:?usage: test-image.sh docker|podman [TAG]}
tag=${2:-wopfs-test-busybox}
busybox=${BUSYBOX:-/bin/busybox}

if [ ! -x "$busybox" ]; then
    echo "test-image.sh: $busybox is missing (apt-get install busybox-static)" >&2
    exit 1
fi
# A dynamic busybox (Debian's `busybox` package) would need a libc in the
# image; ldd fails on a static binary.
if ldd "$busybox" >/dev/null 2>&1; then
    echo "test-image.sh: $busybox is dynamically linked (install busybox-static)" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/tmp" "$root/workspace"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$work/rootfs.tar" .
"$engine" import --change 'ENV PATH=/bin' "$work/rootfs.tar" "$tag" >/dev/null
echo "test-image.sh: $engine image $tag built from $busybox"
