#!/usr/bin/env bash
# For a newcomer without NixOS: builds the fixture system with Debian's Nix,
# packs it with mkkexec (through nix/kexec-tree.nix), boots a "foreign host"
# VM with the tarball unpacked at /, and shows on this terminal how the host
# runs /nixos-kexec/bin/nixos-kexec and the second kernel boots our image.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
MKKEXEC_DEMO=1 cargo test --quiet --test integration kexec_hop_from_a_foreign_host -- --nocapture
