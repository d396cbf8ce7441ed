#!/usr/bin/env bash
# Build a Debian 12 root for the operator's-journey tests into DIR (default
# .cache/debian-bookworm) with mmdebstrap, from this machine's Debian
# sources: systemd, udev, systemd-networkd, sshd, iproute2, kexec-tools, and
# sudo (nixos-anywhere's journey logs in as a user with sudo). Under a
# minute (12 s with the packages in apt's cache); idempotent: DIR.include
# records the package list, and a root built from another list is rebuilt.
set -euo pipefail
out=${1:-.cache/debian-bookworm}
include=systemd-sysv,udev,kmod,openssh-server,iproute2,kexec-tools,sudo
[[ -d $out/usr && $(cat "$out.include" 2>/dev/null) == "$include" ]] && exit 0
rm -rf "$out.tmp"
mkdir -p "$(dirname "$out")"
mmdebstrap --quiet --variant=minbase --include="$include" bookworm "$out.tmp"
rm -rf "$out"
mv "$out.tmp" "$out"
printf '%s\n' "$include" >"$out.include"
echo "fetch-debian: $out" >&2
