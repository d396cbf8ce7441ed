#!/usr/bin/env bash
# Fetch what the aarch64 boot tests need from Debian's arm64 packages into
# DIR (default .cache/arm64): DIR/Image (Debian's arm64 kernel, a raw
# Image), DIR/modules/{loop,squashfs,overlay}.ko, and DIR/sysroot with
# arm64 busybox (static) and kexec with the libraries it loads. Adds the
# arm64 architecture to dpkg if needed. Idempotent.
set -euo pipefail
dir=${1:-.cache/arm64}
if [[ -f $dir/Image && -f $dir/modules/overlay.ko && -x $dir/sysroot/sbin/kexec ]]; then
  exit 0
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  apt-get update -q
fi
kernel=$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
if [[ -z $kernel ]]; then
  echo "fetch-arm64: cannot find the kernel behind linux-image-arm64; run apt-get update" >&2
  exit 1
fi
# kexec-tools and what its libxenctrl pulls in.
packages=("$kernel" busybox-static:arm64 kexec-tools:arm64 libc6:arm64 zlib1g:arm64
  libxenmisc4.17:arm64 libxencall1:arm64 libxendevicemodel1:arm64 libxenevtchn1:arm64
  libxenforeignmemory1:arm64 libxengnttab1:arm64 libxenhypfs1:arm64 libxenstore4:arm64
  libxentoollog1:arm64 libxentoolcore1:arm64 libyajl2:arm64 libext2fs2:arm64 libfdt1:arm64
  libuuid1:arm64 libcom-err2:arm64)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -q "${packages[@]}" >/dev/null 2>&1)
rm -rf "$dir"
mkdir -p "$dir/modules" "$dir/sysroot"
for deb in "$tmp"/*.deb; do
  case $deb in
    */linux-image-*) dpkg -x "$deb" "$tmp/kernel" ;;
    *) dpkg -x "$deb" "$dir/sysroot" ;;
  esac
done
cp "$tmp"/kernel/boot/vmlinuz-* "$dir/Image"
for m in drivers/block/loop fs/squashfs/squashfs fs/overlayfs/overlay; do
  cp "$tmp"/kernel/lib/modules/*/kernel/$m.ko "$dir/modules/"
done
echo "$kernel" >"$dir/version"
echo "fetch-arm64: $kernel, busybox and kexec in $dir" >&2
