# mkkexec, the Rust builder every derivation of this flake calls.
{
  lib,
  rustPlatform,
  squashfsTools,
  cpio,
  zstd,
  xz,
  shellcheck,
  dash,
  util-linux,
  gnutar,
}:
let
  root = ../.;
in
rustPlatform.buildRustPackage {
  pname = "mkkexec";
  version = (lib.importTOML ../Cargo.toml).package.version;

  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../src
      ../tests
      # backhand with the patches in vendor/backhand/PATCHES.md
      ../vendor
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  # The independent readers the integration tests check artifacts with.
  nativeCheckInputs = [
    squashfsTools
    cpio
    zstd
    xz
    shellcheck
    dash
    util-linux
    gnutar
  ];

  # Tests that cannot run in the sandbox (QEMU, Nix, root, setuid modes) are
  # #[ignore]d in the code; scripts/sandbox-check.sh runs this check phase
  # in a real Nix sandbox, scripts/test.sh runs everything.
  env.INSTA_UPDATE = "no";

  meta = {
    description = "Turn a NixOS closure into a kexec-bootable kernel, initrd and script";
    license = lib.licenses.mit;
    mainProgram = "mkkexec";
    platforms = lib.platforms.linux;
  };
}
