# NixOS VM test (needs nixpkgs; run by `nix flake check`): a running NixOS
# machine unpacks the tarball at / and runs /nixos-kexec/bin/nixos-kexec
# (first with --dry-run); the test passes when the kexec'd system prints its
# marker and the machine-id it carried over on the console.
{
  pkgs,
  # This flake's NixOS module.
  module,
}:
let
  marker = "NIXOS-KEXEC-TEST-BOOTED";
  # QEMU's first serial port: the PL011 on aarch64's virt machine.
  console = if pkgs.stdenv.hostPlatform.isAarch64 then "ttyAMA0" else "ttyS0";
  target = pkgs.nixos {
    imports = [ module ];
    nixosKexec.kernelParams = [ "console=${console}" ];
    # Keep the test image small and quick to build.
    nixosKexec.squashfs.level = 3;
    nixosKexec.initrd.compression = "none";
    documentation.enable = false;
    # netboot.nix no longer defaults it; the release this flake pins.
    system.stateVersion = "26.05";
    systemd.services.kexec-test-marker = {
      wantedBy = [ "multi-user.target" ];
      serviceConfig.Type = "oneshot";
      # The store was registered from nix-path-registration at boot.
      script = ''
        ${pkgs.nix}/bin/nix-store --verify-path /run/current-system
        echo "${marker} $(cat /etc/machine-id)" > /dev/${console}
      '';
    };
  };
  tarball = "${target.config.system.build.kexecTarball}/tarball/nixos-system-${pkgs.stdenv.hostPlatform.system}.tar.gz";
in
pkgs.testers.runNixOSTest {
  name = "nixos-kexec";
  nodes.machine = {
    # Room for what kexec-boot asks (README, "Memory"), with the tarball in RAM.
    virtualisation.memorySize = 3072;
    system.extraDependencies = [ target.config.system.build.kexecTarball ];
  };
  testScript = ''
    machine.wait_for_unit("multi-user.target")
    machine.succeed("tar -xzf ${tarball} -C /")
    machine.succeed("/nixos-kexec/kexec --version")
    machine_id = machine.succeed("cat /etc/machine-id").strip()
    # Checks, loads and unloads: the machine stays.
    machine.succeed("/nixos-kexec/bin/nixos-kexec --dry-run")
    machine.succeed("true")
    # Returns first, then the new kernel starts.
    machine.succeed("/nixos-kexec/bin/nixos-kexec")
    machine.wait_for_console_text(f"${marker} {machine_id}")
    machine.crash()
  '';
}
