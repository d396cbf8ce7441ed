#!/usr/bin/env bash
# Fetch Debian's kernel for the boot tests into DIR (default .cache/kernel):
# DIR/vmlinuz, DIR/modules/{loop,squashfs,overlay}.ko for the stage-1
# stand-in and DIR/modules/e1000.ko, the network card of the Debian host
# test. Idempotent.
set -euo pipefail
dir=${1:-.cache/kernel}
if [[ -f $dir/vmlinuz && -f $dir/modules/overlay.ko && -f $dir/modules/e1000.ko ]]; then
  exit 0
fi
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
if [[ -z $pkg ]]; then
  echo "fetch-kernel: cannot find the kernel package behind linux-image-amd64; run apt-get update" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1 && dpkg -x ./*.deb x)
mkdir -p "$dir/modules"
cp "$tmp"/x/boot/vmlinuz-* "$dir/vmlinuz"
for m in drivers/block/loop fs/squashfs/squashfs fs/overlayfs/overlay \
  drivers/net/ethernet/intel/e1000/e1000; do
  cp "$tmp"/x/lib/modules/*/kernel/$m.ko "$dir/modules/"
done
echo "$pkg" > "$dir/version"
echo "fetch-kernel: $pkg in $dir" >&2
