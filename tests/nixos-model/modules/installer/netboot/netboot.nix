# Model of nixpkgs' nixos/modules/installer/netboot/netboot.nix (26.05): its
# options, its mounts (the overlay through fileSystems.<p>.overlay), the
# store registration at boot, and its builders (nixpkgs' make-squashfs,
# makeInitrdNG, writeTextDir, writeScript, linkFarm, make-system-tarball),
# which nixos-kexec's module replaces. The builders are stand-ins here.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkImageMediaOverride mkOption types;
in
{
  imports = [ ../../image/file-options.nix ];

  options.netboot = {
    squashfsCompression = mkOption {
      type = types.str;
      default = "zstd -Xcompression-level 19";
    };
    storeContents = mkOption {
      # Untyped upstream: a list of packages, merged by concatenation.
      type = types.listOf types.package;
    };
  };

  config = {
    boot.loader.grub.enable = false;

    fileSystems."/" = mkImageMediaOverride {
      fsType = "tmpfs";
      options = [ "mode=0755" ];
    };
    fileSystems."/nix/.ro-store" = mkImageMediaOverride {
      fsType = "squashfs";
      device = "../nix-store.squashfs";
      options = [ "loop" ] ++ lib.optional (config.boot.kernelPackages.kernel.kernelAtLeast "6.2") "threads=multi";
      neededForBoot = true;
    };
    fileSystems."/nix/.rw-store" = mkImageMediaOverride {
      fsType = "tmpfs";
      options = [ "mode=0755" ];
      neededForBoot = true;
    };
    fileSystems."/nix/store" = mkImageMediaOverride {
      overlay = {
        lowerdir = [ "/nix/.ro-store" ];
        upperdir = "/nix/.rw-store/store";
        workdir = "/nix/.rw-store/work";
      };
      neededForBoot = true;
    };

    boot.initrd.availableKernelModules = [
      "squashfs"
      "overlay"
    ];
    boot.initrd.kernelModules = [
      "loop"
      "overlay"
    ];

    netboot.storeContents = [ config.system.build.toplevel ];

    system.build.squashfsStore = pkgs.writeScript "upstream-squashfs" (
      toString config.netboot.storeContents + config.netboot.squashfsCompression
    );
    system.build.netbootRamdisk = pkgs.makeInitrdNG {
      inherit (config.boot.initrd) compressor compressorArgs;
    };
    system.build.netbootIpxeScript = pkgs.writeTextDir "netboot.ipxe" "upstream";
    system.build.kexecScript = pkgs.writeScript "kexec-boot" "upstream";
    system.build.kexecTree = pkgs.linkFarm "kexec-tree" [ ];

    image.extension = "tar.xz";
    image.filePath = "tarball/${config.image.fileName}";
    system.nixos.tags = [ "kexec" ];
    system.build.image = config.system.build.kexecTarball;
    system.build.kexecTarball = pkgs.writeScript "upstream-tarball" config.image.baseName;

    boot.loader.timeout = 10;

    boot.postBootCommands = ''
      ${config.nix.package}/bin/nix-store --load-db < /nix/store/nix-path-registration
      touch /etc/NIXOS
      ${config.nix.package}/bin/nix-env -p /nix/var/nix/profiles/system --set /run/current-system
    '';
  };
}
