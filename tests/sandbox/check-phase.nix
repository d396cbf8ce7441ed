# The check phase of nix/package.nix, run in a real Nix sandbox with Debian's
# Nix (scripts/sandbox-check.sh builds it): buildRustPackage's cargoCheckHook
# runs every test binary with `--test-threads=$NIX_BUILD_CORES` and the
# package's checkFlags (none), so the #[ignore]d tests are skipped.
#
# Like the package's sandbox, the builder runs as an unprivileged user under
# Nix's seccomp filter (no setuid or setgid modes), without network, with
# HOME=/homeless-shelter. The test binaries are built outside, by cargo, and
# run from the checkout (bind-mounted by extra-sandbox-paths), where
# CARGO_MANIFEST_DIR points.
{
  # The checkout: the test binaries' working directory.
  checkout,
  # Space-separated absolute paths of the test binaries.
  binaries,
  # The binaries' hash, so that new binaries are run again.
  stamp,
}:
derivation {
  name = "mkkexec-check-phase";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  inherit checkout binaries stamp;
  args = [
    "-euc"
    ''
      export PATH=/usr/sbin:/usr/bin:/sbin:/bin INSTA_UPDATE=no
      cd "$checkout"
      echo "check phase as uid $(id -u), HOME=$HOME, TMPDIR=$TMPDIR"
      for b in $binaries; do
        "$b" --test-threads="''${NIX_BUILD_CORES:-1}"
      done
      echo passed > "$out"
    ''
  ];
}
