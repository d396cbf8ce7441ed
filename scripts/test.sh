#!/usr/bin/env bash
# The whole test run on a fresh Debian 12 machine (as root): installs what is
# missing from Debian's packages, fetches Debian's kernel for the boot tests,
# then runs rustfmt, clippy and every test (unit, integration, Nix, QEMU boot).
#
#   scripts/test.sh            everything
#   scripts/test.sh boot_      only tests whose name contains boot_ (cargo test filter)
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(squashfs-tools cpio zstd xz-utils gzip tar shellcheck dash nix-bin
  qemu-system-x86 busybox-static kexec-tools util-linux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "test.sh: installing ${missing[*]}" >&2
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  apt-get update -q
fi
scripts/fetch-kernel.sh .cache/kernel

export INSTA_UPDATE=no CARGO_TERM_COLOR=never
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test "$@"
