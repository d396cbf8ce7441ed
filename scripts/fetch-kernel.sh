#!/usr/bin/env bash
# Fetch Debian's kernel for the boot tests into DIR (default .cache/kernel):
# DIR/vmlinuz, DIR/modules/{loop,squashfs,overlay}.ko for the stage-1
# stand-in, DIR/modules/e1000.ko, the network card of the Debian host
# test, the virtio disk + ext4 stack of the disk-backed foreign host
# (DIR/modules/disk.order lists them in insmod order), and veth, 802.1Q,
# bonding and bridge for the network shapes this machine's kernel lacks
# (DIR/modules/net.order). Idempotent.
set -euo pipefail
dir=${1:-.cache/kernel}
if [[ -f $dir/vmlinuz && -f $dir/modules/overlay.ko && -f $dir/modules/e1000.ko && -f $dir/modules/disk.order && -f $dir/modules/net.order ]]; then
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
disk="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev
  drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/block/virtio_blk
  lib/crc16 crypto/crc32c_generic fs/mbcache fs/jbd2/jbd2 fs/ext4/ext4"
for m in $disk; do
  cp "$tmp"/x/lib/modules/*/kernel/$m.ko "$dir/modules/"
done
# In dependency order (each module's depends= lists only earlier ones).
for m in $disk; do basename "$m"; done > "$dir/modules/disk.order"
net="drivers/net/veth net/llc/llc net/802/stp net/802/garp net/802/mrp net/8021q/8021q
  net/tls/tls drivers/net/bonding/bonding net/bridge/bridge"
for m in $net; do
  cp "$tmp"/x/lib/modules/*/kernel/$m.ko "$dir/modules/"
done
for m in $net; do basename "$m"; done > "$dir/modules/net.order"
echo "$pkg" > "$dir/version"
echo "fetch-kernel: $pkg in $dir" >&2
