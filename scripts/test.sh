#!/usr/bin/env bash
# The whole test run on a fresh Debian 12 machine (as root): installs what is
# missing (scripts/setup.sh), then runs rustfmt, clippy and every test: unit,
# integration, real Nix, and the QEMU boot tests.
#
#   scripts/test.sh          everything
#   scripts/test.sh boot     only tests whose name contains "boot" (any cargo test filter)
#
# The #[ignore]d tests (QEMU, Nix, root) run too: they are ignored only in
# the Nix sandbox of nix/package.nix, where they cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

export INSTA_UPDATE=no CARGO_TERM_COLOR=never
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
# The package's check phase in a real Nix sandbox (nix/package.nix).
if (($# == 0)); then scripts/sandbox-check.sh; fi
cargo test "$@" -- --include-ignored
