#!/usr/bin/env bash
# Installs what the tests and the demo need on Debian 12 (as root), fetches
# Debian's kernels for the boot tests (.cache/kernel, .cache/arm64) and
# builds the Debian host of the operator's-journey test (.cache/debian-bookworm).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(squashfs-tools cpio zstd xz-utils gzip tar shellcheck dash nix-bin
  qemu-system-x86 busybox-static kexec-tools util-linux git
  mmdebstrap openssh-client qemu-system-arm
  dnsmasq-base isc-dhcp-client iputils-ping systemd ipxe-qemu python3 iproute2)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})) || ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  echo "setup.sh: installing ${missing[*]:-nothing, updating the package lists}" >&2
  apt-get update -q
fi
if ((${#missing[@]})); then
  # Without recommends: nix-bin would pull in nix-setup-systemd (a daemon
  # and build users), which the tests do not use.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
scripts/fetch-kernel.sh .cache/kernel
scripts/fetch-debian.sh .cache/debian-bookworm
# Adds the arm64 architecture to dpkg for Debian's arm64 kernel, busybox and
# kexec (the aarch64 boot tests).
scripts/fetch-arm64.sh .cache/arm64
