# Makes a NixOS system bootable with kexec (and iPXE), like nixpkgs'
# nixos/modules/installer/netboot/netboot.nix, but built by mkkexec:
#
#   system.build.squashfsStore      the store as a squashfs image
#   system.build.netbootRamdisk     <out>/initrd: stage 1 + /nix-store.squashfs
#   system.build.kexecScript        kexec-boot
#   system.build.kexecTree          bzImage, initrd.gz, kexec-boot, netboot.ipxe, bin/nixos-kexec
#   system.build.netbootIpxeScript  <out>/netboot.ipxe
#   system.build.kexecTarball       <out>/tarball/nixos-system-<system>.tar.gz
{
  config,
  lib,
  pkgs,
  options,
  ...
}:
let
  cfg = config.nixosKexec;
  inherit (lib)
    literalExpression
    mkDefault
    mkIf
    mkImageMediaOverride
    mkOption
    types
    ;

  # mkkexec runs where the image is built: an aarch64 image can be assembled
  # on an x86_64 builder.
  kexecLib = import ./kexec-tree.nix {
    mkkexec = lib.getExe cfg.package;
    bash = "${pkgs.buildPackages.bash}/bin/bash";
    system = pkgs.stdenv.buildPlatform.system;
  };

  # nixpkgs' netboot.nix declares netboot.storeContents.
  netbootImported = options ? netboot && options.netboot ? storeContents;

  kernel = "${config.system.build.kernel}/${config.system.boot.loader.kernelFile}";
  stage1 = "${config.system.build.initialRamdisk}/${config.system.boot.loader.initrdFile}";
  kernelParams = config.boot.kernelParams ++ cfg.kernelParams;
  squashfsSettings = {
    squashfsCompression = cfg.squashfs.compression;
    squashfsLevel = cfg.squashfs.level;
  };
  initrdSettings = {
    initrdCompression = cfg.initrd.compression;
    initrdLevel = cfg.initrd.level;
  };

  # boot.initrd.compressor may be a name or a function of pkgs; mkkexec
  # writes zstd, gzip (pigz's format too) and xz itself.
  compressorDefault =
    let
      c = config.boot.initrd.compressor;
      byName = {
        zstd = "zstd";
        gzip = "gzip";
        pigz = "gzip";
        xz = "xz";
        cat = "none";
      };
    in
    if builtins.isString c && byName ? ${c} then byName.${c} else "zstd";
in
{
  options.nixosKexec = {
    package = mkOption {
      type = types.package;
      default = pkgs.buildPackages.callPackage ./package.nix { };
      defaultText = literalExpression "pkgs.buildPackages.callPackage ./package.nix { }";
      description = "The mkkexec package that builds the images (run on the build platform).";
    };

    storeContents = mkOption {
      type = types.listOf types.package;
      default = [ config.system.build.toplevel ];
      defaultText = literalExpression "[ config.system.build.toplevel ]";
      example = literalExpression "[ config.system.build.toplevel pkgs.stdenv ]";
      description = ''
        Store paths whose closure goes into the squashfs image. The system's
        toplevel must be among them.
      '';
    };

    squashfs = {
      compression = mkOption {
        type = types.enum [
          "zstd"
          "xz"
          "gzip"
          "lz4"
          "none"
        ];
        default = "zstd";
        example = "xz";
        description = ''
          Block compression of the store image. zstd decompresses fastest; xz
          is smallest; the kernel needs the matching CONFIG_SQUASHFS_* option.
        '';
      };
      level = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        example = 22;
        description = ''
          Compression level (zstd 1-22, xz 0-9, gzip 1-9); null takes mkkexec's
          default (zstd 19, as NixOS' netboot image, xz 6, gzip 9). lz4 and none
          take no level.
        '';
      };
    };

    initrd = {
      compression = mkOption {
        type = types.enum [
          "zstd"
          "gzip"
          "xz"
          "none"
        ];
        default = compressorDefault;
        defaultText = literalExpression ''
          config.boot.initrd.compressor when mkkexec writes it (zstd, gzip, pigz, xz), else "zstd"
        '';
        example = "none";
        description = ''
          Compression of the cpio that carries the squashfs after stage 1. The
          squashfs is compressed already, so "none" saves build time for a
          slightly larger download.
        '';
      };
      level = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        example = 3;
        description = "Compression level; null takes mkkexec's default (zstd 19, gzip 9, xz 6).";
      };
    };

    kernelParams = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "console=ttyS0,115200" ];
      description = ''
        Kernel parameters for the kexec'd (or netbooted) kernel, after `init=`
        and boot.kernelParams.
      '';
    };

    kexecPackage = mkOption {
      type = types.nullOr types.package;
      default = pkgs.pkgsStatic.kexec-tools;
      defaultText = literalExpression "pkgs.pkgsStatic.kexec-tools";
      description = ''
        A static kexec-tools bundled into the tarball, so that the host needs
        only a shell; null bundles none and uses the host's kexec.
      '';
    };
  };

  config = {
    assertions = [
      {
        assertion = !netbootImported;
        message = ''
          nixos-kexec's module replaces nixpkgs' installer/netboot/netboot.nix
          (both build system.build.kexecTree and mount the store the same way).
          Remove netboot.nix, netboot-base.nix or netboot-minimal.nix from your
          imports and use this module's options (nixosKexec.*) instead.
        '';
      }
      {
        assertion = builtins.elem config.system.build.toplevel cfg.storeContents;
        message = ''
          nixosKexec.storeContents must contain config.system.build.toplevel,
          or the kexec'd kernel finds no init: add it to the list.
        '';
      }
    ];

    # No boot loader: the kernel is started by kexec or iPXE.
    boot.loader.grub.enable = false;

    # The same mounts as netboot.nix: / on tmpfs, the store a squashfs from
    # the initrd under a tmpfs overlay.
    fileSystems = mkIf (!netbootImported) {
      "/" = mkImageMediaOverride {
        fsType = "tmpfs";
        options = [ "mode=0755" ];
      };
      "/nix/.ro-store" = mkImageMediaOverride {
        fsType = "squashfs";
        device = "../nix-store.squashfs";
        options = [ "loop" ];
        neededForBoot = true;
      };
      "/nix/.rw-store" = mkImageMediaOverride {
        fsType = "tmpfs";
        options = [ "mode=0755" ];
        neededForBoot = true;
      };
      "/nix/store" = mkImageMediaOverride {
        fsType = "overlay";
        device = "overlay";
        options = [
          "lowerdir=/nix/.ro-store"
          "upperdir=/nix/.rw-store/store"
          "workdir=/nix/.rw-store/work"
        ];
        depends = [
          "/nix/.ro-store"
          "/nix/.rw-store/store"
          "/nix/.rw-store/work"
        ];
      };
    };

    boot.initrd.availableKernelModules = [
      "squashfs"
      "overlay"
    ];
    boot.initrd.kernelModules = [
      "loop"
      "overlay"
    ];

    # Register the store the image carries, so that nix works on the booted
    # system, and give nixos-rebuild the profile and tag it expects.
    boot.postBootCommands = mkIf (!netbootImported) ''
      ${config.nix.package}/bin/nix-store --load-db < /nix/store/nix-path-registration
      touch /etc/NIXOS
      ${config.nix.package}/bin/nix-env -p /nix/var/nix/profiles/system --set /run/current-system
    '';

    system.build = mkIf (!netbootImported) rec {
      squashfsStore = kexecLib.squashfs ({ storeContents = cfg.storeContents; } // squashfsSettings);

      netbootRamdisk = kexecLib.initrd (
        {
          initrd = stage1;
          squashfs = squashfsStore;
        }
        // initrdSettings
      );

      kexecScript = kexecLib.script {
        toplevel = config.system.build.toplevel;
        initrd = "${netbootRamdisk}/initrd";
        inherit kernelParams;
      };

      netbootIpxeScript = kexecLib.script {
        toplevel = config.system.build.toplevel;
        initrd = "${netbootRamdisk}/initrd";
        inherit kernelParams;
        ipxe = true;
      };

      # One mkkexec run: the squashfs goes straight into the initrd.
      kexecTree = kexecLib.tree (
        {
          toplevel = config.system.build.toplevel;
          inherit kernel kernelParams;
          initrd = stage1;
          inherit (cfg) storeContents;
        }
        // squashfsSettings
        // initrdSettings
      );

      kexecTarball = kexecLib.tarball {
        tree = kexecTree;
        kexec = if cfg.kexecPackage == null then null else "${cfg.kexecPackage}/bin/kexec";
        targetSystem = pkgs.stdenv.hostPlatform.system;
      };
    };

    system.stateVersion = mkDefault lib.trivial.release;
  };
}
