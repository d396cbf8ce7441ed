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

  # Not runnable inside the Nix sandbox, and run by scripts/test.sh instead:
  # the QEMU boot tests and the Nix tests need a kernel, QEMU and a Nix store;
  # the tests that run kexec-boot need root (the script refuses otherwise).
  checkFlags = [
    "--skip=boot::"
    "--skip=nix::"
    "--skip=script::kexec_boot_loads_and_executes_under_dash"
    "--skip=script::kexec_boot_refuses_without_kexec"
    "--skip=script::kexec_boot_refuses_without_enough_memory"
    "--skip=script::kexec_boot_refuses_when_not_root"
    "--skip=tree::tarball_unpacks_to_a_working_nixos_kexec"
  ];
  env.INSTA_UPDATE = "no";

  meta = {
    description = "Turn a NixOS closure into a kexec-bootable kernel, initrd and script";
    license = lib.licenses.mit;
    mainProgram = "mkkexec";
    platforms = lib.platforms.linux;
  };
}
