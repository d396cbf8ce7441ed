#!/usr/bin/env bash
# Build a Debian 12 root for the operator's-journey test into DIR (default
# .cache/debian-bookworm) with mmdebstrap, from this machine's Debian
# sources: systemd, udev, systemd-networkd, sshd, iproute2, kexec-tools. Under a minute
# (12 s with the packages in apt's cache); idempotent.
set -euo pipefail
out=${1:-.cache/debian-bookworm}
[[ -d $out/usr ]] && exit 0
rm -rf "$out.tmp"
mkdir -p "$(dirname "$out")"
mmdebstrap --quiet --variant=minbase \
  --include=systemd-sysv,udev,kmod,openssh-server,iproute2,kexec-tools \
  bookworm "$out.tmp"
mv "$out.tmp" "$out"
echo "fetch-debian: $out" >&2
