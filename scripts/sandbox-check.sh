#!/usr/bin/env bash
# Proves that nix/package.nix's check phase passes in the Nix sandbox: the
# test binaries, run with the flags buildRustPackage uses, inside a real
# sandbox of Debian's Nix (tests/sandbox/check-phase.nix). Needs nix-bin
# (scripts/setup.sh) and root for the local store.
set -euo pipefail
cd "$(dirname "$0")/.."
checkout=$PWD

binaries=$(cargo test --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["profile"]["test"] and m.get("executable"):
        print(m["executable"])
' | tr '\n' ' ')
[ -n "$binaries" ] || { echo "sandbox-check: cargo built no test binaries" >&2; exit 1; }
# shellcheck disable=SC2086
stamp=$(cat $binaries | sha256sum | cut -d' ' -f1)

conf=$(mktemp -d)
trap 'rm -rf "$conf"' EXIT
echo '{"flakes":[],"version":2}' >"$conf/registry.json"
cat >"$conf/nix.conf" <<CONF
build-users-group =
substituters =
flake-registry = $conf/registry.json
sandbox = true
sandbox-fallback = false
extra-sandbox-paths = /bin /usr /lib /lib64 $checkout
CONF

echo "sandbox-check: running $(wc -w <<<"$binaries") test binaries in the Nix sandbox" >&2
NIX_CONF_DIR=$conf nix-build --no-out-link tests/sandbox/check-phase.nix \
  --argstr checkout "$checkout" --argstr binaries "$binaries" --argstr stamp "$stamp"
echo "sandbox-check: the package's check phase passes in the Nix sandbox" >&2
