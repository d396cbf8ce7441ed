# The NixOS options nixos-kexec's module, nixpkgs' netboot.nix and the
# flake's configuration.nix read or set, modelled from nixpkgs' own files
# (26.05); each part names the file it follows. This model is the weak
# point of the evaluation tests: it is what they trust nixpkgs to do.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  inherit (lib) mkOption types;
  anything = mkOption {
    type = types.anything;
    default = { };
  };
  # An attribute set of anything with some options declared.
  freeform =
    options:
    mkOption {
      type = types.submodule {
        freeformType = types.attrsOf types.anything;
        inherit options;
      };
      default = { };
    };
  fsNeeded = lib.filterAttrs (_: utils.fsNeededForBoot) config.fileSystems;
  systemd1 = config.boot.initrd.systemd.enable;
in
{
  imports = [
    ./overlayfs.nix
    ./stage-1-mounts.nix
    ./firewall-iptables.nix
    ./systemd-units.nix
  ];

  options = {
    # nixos/modules/misc/assertions.nix
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };

    # nixos/modules/system/activation/top-level.nix: a freeform attrset of
    # lazily merged values, each defined once (types.uniq).
    system.build = mkOption {
      type = types.submoduleWith {
        modules = [ { freeformType = types.lazyAttrsOf (types.uniq types.unspecified); } ];
      };
      default = { };
    };
    # nixos/modules/misc/nixpkgs.nix (systems as strings only).
    nixpkgs.hostPlatform = mkOption { type = types.str; };
    nixpkgs.buildPlatform = mkOption {
      type = types.str;
      default = "x86_64-linux";
    };
    # nixos/modules/misc/version.nix
    system.stateVersion = mkOption {
      type = types.str;
      default = lib.trivial.release;
    };
    system.nixos.label = mkOption {
      type = types.str;
      default = "26.05";
    };
    system.nixos.tags = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    system.nixos.distroId = mkOption {
      type = types.str;
      default = "nixos";
    };
    system.nixos.variant_id = mkOption {
      type = types.nullOr (types.strMatching "^[a-z0-9._-]+$");
      default = null;
    };
    # nixos/modules/system/boot/kernel.nix, loader/loader.nix
    system.boot.loader.kernelFile = mkOption {
      type = types.str;
      default = pkgs.stdenv.hostPlatform.linux-kernel.target;
    };
    system.boot.loader.initrdFile = mkOption {
      type = types.str;
      default = "initrd";
    };
    boot.kernelParams = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    boot.kernelPackages = mkOption {
      type = types.raw;
      default = {
        kernel = pkgs.linux // {
          kernelAtLeast = v: lib.versionAtLeast "6.12" v;
        };
      };
    };
    boot.initrd.availableKernelModules = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    boot.initrd.kernelModules = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    # nixos/modules/system/boot/stage-1.nix
    boot.initrd.compressor = mkOption {
      type = types.either types.str (types.functionTo types.str);
      default = "zstd";
    };
    boot.initrd.compressorArgs = mkOption {
      type = types.nullOr (types.listOf types.str);
      default = null;
    };
    # nixos/modules/system/boot/systemd/initrd.nix; on by default since
    # nixpkgs PR 435781 (26.05).
    boot.initrd.systemd.enable = mkOption {
      type = types.bool;
      default = true;
    };
    boot.initrd.systemd.services = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };
    systemd.services = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };
    # nixos/modules/system/boot/networkd.nix
    systemd.network.enable = mkOption {
      type = types.bool;
      default = false;
    };
    # nixos/modules/system/boot/stage-2.nix
    boot.postBootCommands = mkOption {
      type = types.lines;
      default = "";
    };
    # nixos/modules/system/boot/loader/grub/grub.nix, loader/loader.nix
    boot.loader.grub.enable = mkOption {
      type = types.bool;
      default = true;
    };
    boot.loader.timeout = mkOption {
      type = types.nullOr types.int;
      default = 5;
    };
    # nixos/modules/services/system/nix-daemon.nix
    nix.package = mkOption {
      type = types.package;
      default = pkgs.nix;
    };
    # Read by nobody here: set by profiles and configuration.nix.
    nix.settings = anything;
    users = anything;
    # Freeform, but for what nixos-kexec's module reads: networking.firewall
    # (./firewall-iptables.nix), networking.useNetworkd
    # (nixos/modules/tasks/network-interfaces.nix) and services.openssh
    # (nixos/modules/services/networking/ssh/sshd.nix: enable, and hostKeys
    # with its default).
    networking = freeform {
      firewall.enable = mkOption {
        type = types.bool;
        default = true;
      };
      useNetworkd = mkOption {
        type = types.bool;
        default = false;
      };
    };
    services = freeform {
      openssh.enable = mkOption {
        type = types.bool;
        default = false;
      };
      openssh.hostKeys = mkOption {
        type = types.listOf types.attrs;
        default = [
          {
            type = "rsa";
            bits = 4096;
            path = "/etc/ssh/ssh_host_rsa_key";
          }
          {
            type = "ed25519";
            path = "/etc/ssh/ssh_host_ed25519_key";
          }
        ];
      };
    };
    # nixos/modules/system/etc/etc.nix: /etc as an overlay, read-only
    # unless mutable (nixos/modules/system/etc/etc-activation.nix mounts it;
    # under systemd stage 1 before initrd-fs.target, at /sysroot/etc).
    system.etc.overlay.enable = mkOption {
      type = types.bool;
      default = false;
    };
    system.etc.overlay.mutable = mkOption {
      type = types.bool;
      default = true;
    };
    environment = anything;
    hardware = anything;
    documentation = anything;
    virtualisation = anything;
  };

  config = {
    # nixos/modules/misc/version.nix: /etc/os-release, one KEY=value a line
    # (the fields nixos-anywhere reads; VARIANT_ID empty without a variant).
    environment.etc."os-release".text = lib.concatStrings (
      lib.mapAttrsToList (k: v: "${k}=${v}\n") {
        ID = config.system.nixos.distroId;
        VERSION_ID = config.system.nixos.label;
        VARIANT_ID = if config.system.nixos.variant_id == null then "" else config.system.nixos.variant_id;
      }
    );

    # nixos/modules/system/boot/systemd/initrd.nix: root=${boot.initrd.systemd.root}
    # ("fstab") on the kernel command line; the kernel's initramfs is then a
    # ramfs (init_rootfs()).
    boot.kernelParams = lib.mkIf systemd1 [ "root=fstab" ];

    system.build = {
      kernel = pkgs.linux;
      # The initrd embeds the fstab it mounts from (systemd: /etc/fstab of the
      # initrd; scripted: stage-1.nix's fsInfo).
      initialRamdisk = pkgs.writeTextDir "initrd" config.system.build.initrdFstab;
      initrdFstab = lib.concatMapStrings (
        fs:
        let
          # systemd stage 1 mounts the root at /sysroot; the scripted one at
          # /mnt-root, adding the prefix to overlay options at run time.
          at = if systemd1 then "/sysroot" else "/mnt-root";
        in
        "${if fs.device == null then "none" else fs.device} ${at}${fs.mountPoint} ${fs.fsType} ${lib.concatStringsSep "," fs.options}\n"
      ) (lib.attrValues fsNeeded);
      # top-level.nix builds the toplevel through the assertions and warnings.
      toplevel = lib.asserts.checkAssertWarn config.assertions config.warnings (
        pkgs.runCommand "nixos-system-${config.system.nixos.label}" { } ''
          ${config.system.build.kernel} ${config.system.build.initialRamdisk}
          ${config.boot.postBootCommands}
          ${toString config.boot.kernelParams}
        ''
      );
    };
    # nixos/modules/tasks/filesystems.nix: a tmpfs or overlay needs no
    # device; others without one fail in nixpkgs.
    assertions = lib.mapAttrsToList (_: fs: {
      assertion =
        fs.device != null
        || lib.elem fs.fsType [
          "tmpfs"
          "overlay"
        ];
      message = "fileSystems.${fs.mountPoint} has no device";
    }) config.fileSystems;
  };
}
