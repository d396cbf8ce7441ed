# nixpkgs' installer/netboot/netboot.nix, with its images built by mkkexec.
#
# netboot.nix keeps everything that is not an image: the tmpfs root, the
# squashfs + overlay mounts of the store (for the scripted and the systemd
# stage 1 alike), netboot.storeContents and the registration of the store at
# boot. This module replaces only its builders (with lib.mkForce) and adds
# what is ours:
#
#   system.build.squashfsStore      the store as a squashfs image
#   system.build.netbootRamdisk     <out>/initrd: stage 1 + /nix-store.squashfs (with
#                                   nixosKexec.storeParts > 1: the tree's initrd.gz)
#   system.build.kexecScript        kexec-boot
#   system.build.kexecTree          bzImage, initrd.gz, kexec-boot, netboot.ipxe, bin/nixos-kexec,
#                                   static kexec and ip
#   system.build.netbootIpxeScript  <out>/netboot.ipxe (for <kernel target> and initrd beside it)
#   system.build.kexecTarball       <out>/tarball/nixos-system-<system>.tar.gz (also system.build.image)
#   system.build.kexecInstallerTarball
#                                   <out>/tarball/nixos-kexec-installer-<system>.tar.gz: kexec/run,
#                                   bzImage, initrd.gz, kexec, ip, for `nixos-anywhere --kexec`
#
# It may be imported beside netboot-minimal.nix or netboot-base.nix, as
# nixpkgs' manual describes: the module system imports netboot.nix once.
#
# It also carries the machine over the kexec (nixosKexec.carry.enable):
# kexec-boot appends the old host's network state, SSH host keys, root's
# authorized keys and machine-id to the initrd (/nixos-kexec-carry); stage 1
# puts them in place (./carry-in.sh) and a unit turns the network state into
# systemd-networkd units (`mkkexec network`) before network-pre.target.
{
  config,
  options,
  lib,
  pkgs,
  modulesPath,
  ...
}:
let
  cfg = config.nixosKexec;
  inherit (lib)
    literalExpression
    mkDefault
    mkForce
    mkOption
    optional
    types
    ;

  # mkkexec runs where the image is built: an aarch64 image can be assembled
  # on an x86_64 builder.
  kexecLib = import ./kexec-tree.nix {
    mkkexec = lib.getExe cfg.package;
    bash = "${pkgs.buildPackages.bash}/bin/bash";
    system = pkgs.stdenv.buildPlatform.system;
  };

  hostSystem = pkgs.stdenv.hostPlatform.system;
  toplevel = config.system.build.toplevel;
  kernel = "${config.system.build.kernel}/${config.system.boot.loader.kernelFile}";
  stage1 = "${config.system.build.initialRamdisk}/${config.system.boot.loader.initrdFile}";
  kernelParams =
    config.boot.kernelParams
    ++ optional cfg.initramfsOnRamfs "rootfstype=ramfs"
    ++ cfg.kernelParams;
  # The toplevel is always in the image, whatever netboot.storeContents says:
  # without it the kexec'd kernel finds no init. (An assertion could not say
  # so: nixpkgs builds the toplevel through the assertions.)
  storeContents = [ toplevel ] ++ config.netboot.storeContents;

  upstreamSquashfs = parseSquashfsCompression config.netboot.squashfsCompression;
  squashfs = {
    compression =
      if cfg.squashfs.compression != null then cfg.squashfs.compression else upstreamSquashfs.compression;
    level =
      if cfg.squashfs.compression != null || cfg.squashfs.level != null then
        cfg.squashfs.level
      else
        upstreamSquashfs.level;
  };
  # Set only when netboot.squashfsCompression decides and asks for something
  # mkkexec does not write.
  squashfsError =
    if cfg.squashfs.compression == null && upstreamSquashfs.error != null then
      upstreamSquashfs.error
    else
      null;
  checkedSquashfs = if squashfsError == null then squashfs else throw squashfsError;

  # netboot.squashfsCompression holds mksquashfs arguments, e.g.
  # "zstd -Xcompression-level 19" (nixpkgs' default) or
  # "xz -Xdict-size 100% -Xbcj x86" (older nixpkgs). mkkexec writes the
  # compressor and level; its xz dictionary is always the block size (100%).
  parseSquashfsCompression =
    s:
    let
      words = lib.filter (w: w != "") (lib.splitString " " s);
      compression = lib.head (words ++ [ "zstd" ]);
      go =
        acc: rest:
        if rest == [ ] then
          acc
        else
          let
            flag = lib.head rest;
            value = lib.elemAt rest 1;
            next = lib.drop 2 rest;
            hasValue = lib.length rest >= 2;
          in
          if flag == "-Xcompression-level" && hasValue && builtins.match "[0-9]+" value != null then
            go (acc // { level = lib.toInt value; }) next
          else if compression == "xz" && flag == "-Xdict-size" && hasValue && value == "100%" then
            go acc next
          else
            acc // { unsupported = acc.unsupported ++ [ flag ]; };
      parsed = go {
        level = null;
        unsupported = [ ];
      } (lib.drop 1 words);
      known = lib.elem compression [
        "zstd"
        "xz"
        "gzip"
        "lz4"
      ];
    in
    {
      inherit compression;
      inherit (parsed) level;
      error =
        if !known || parsed.unsupported != [ ] then
          ''
            nixos-kexec: netboot.squashfsCompression = "${s}" asks for ${
              if known then "`${lib.head parsed.unsupported}`" else "the compressor `${compression}`"
            }, which mkkexec does not write.
            Set nixosKexec.squashfs.compression (zstd, xz, gzip, lz4 or none) and
            nixosKexec.squashfs.level instead, or netboot.squashfsCompression to
            "<compressor> [-Xcompression-level N]".''
        else
          null;
    };

  squashfsSettings = {
    squashfsCompression = checkedSquashfs.compression;
    squashfsLevel = checkedSquashfs.level;
    squashfsCache = cfg.cacheDir;
    squashfsCacheMaxBytes = if cfg.cacheDir == null then null else cfg.cacheMaxBytes;
  };
  initrdSettings = {
    initrdCompression = cfg.initrd.compression;
    initrdLevel = cfg.initrd.level;
  };
  bootSettings = {
    inherit toplevel kernelParams;
  };
  toolSettings = {
    kexec = if cfg.kexecPackage == null then null else "${cfg.kexecPackage}/bin/kexec";
    ip = if cfg.ipPackage == null then null else "${cfg.ipPackage}/bin/ip";
  };

  # mkkexec for the new system itself (the host platform), which runs
  # `mkkexec network` at boot.
  mkkexecOnHost = pkgs.callPackage ./package.nix { };
  carried = "/var/lib/nixos-kexec/carried";
  # Where sshd reads each host key (sshd.nix's hostKeys): stage 1 puts the
  # carried keys there (under an immutable /etc, only paths elsewhere work).
  hostKeys = map (k: "${k.type}:${k.path}") config.services.openssh.hostKeys;
  carryIn =
    root:
    builtins.readFile ./carry-in.sh
    + "\ncarry_in ${root} /nixos-kexec-carry ${lib.escapeShellArgs hostKeys}\n";
  systemdStage1 = config.boot.initrd.systemd.enable;

  # The parts of a store past 4 GiB after the first (nixosKexec.storeParts):
  # part i is the tree's /nix-store-<i>.squashfs, mounted at
  # /nix/.ro-store-<i>.
  partNumbers = lib.range 1 (cfg.storeParts - 1);
  partMount = i: "/nix/.ro-store-${toString i}";
  # Each part's lower layer, as the /nix/store overlay names it.
  # overlayfs.nix prefixes every lowerdir with /sysroot under systemd's stage
  # 1; the scripted stage 1 (stage-1-init.sh's mountFS) prefixes only what
  # follows `lowerdir=`, i.e. the first directory of the list: the others
  # must name /mnt-root, where it mounts the parts, themselves.
  partLowerdir = i: if systemdStage1 then partMount i else "/mnt-root${partMount i}";
in
{
  imports = [ (modulesPath + "/installer/netboot/netboot.nix") ];

  options.nixosKexec = {
    package = mkOption {
      type = types.package;
      default = pkgs.buildPackages.callPackage ./package.nix { };
      defaultText = literalExpression "pkgs.buildPackages.callPackage ./nix/package.nix { }";
      description = "The mkkexec package that builds the images (run on the build platform).";
    };

    squashfs = {
      compression = mkOption {
        type = types.nullOr (
          types.enum [
            "zstd"
            "xz"
            "gzip"
            "lz4"
            "none"
          ]
        );
        default = null;
        example = "xz";
        description = ''
          Block compression of the store image; null follows
          `netboot.squashfsCompression` (nixpkgs' default: zstd level 19). zstd
          decompresses fastest, xz is smallest; the kernel needs the matching
          CONFIG_SQUASHFS_* option.
        '';
      };
      level = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        example = 22;
        description = ''
          Compression level (zstd 1-22, xz 0-9, gzip 1-9; lz4 and none take
          none). null takes the level of `netboot.squashfsCompression` when
          `compression` is null too, else mkkexec's default (zstd 19, xz 6,
          gzip 9).
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
        default = "none";
        example = "zstd";
        description = ''
          Compression of the cpio that carries the squashfs after stage 1
          (stage 1 itself stays as `boot.initrd.compressor` made it). The
          squashfs is compressed already: compressing it again saves 1.6% of
          the download at zstd level 19 for 55% more build time, 0.8% at level
          3 for about a second per GiB, and the new kernel needs the same RAM
          either way (README, "Memory" and "Benchmarks").
        '';
      };
      level = mkOption {
        type = types.nullOr types.ints.unsigned;
        default = null;
        example = 3;
        description = "Compression level; null takes mkkexec's default (zstd 19, gzip 9, xz 6).";
      };
    };

    cacheDir = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/cache/nixos-kexec";
      description = ''
        A directory where mkkexec keeps the compressed squashfs blocks
        (`mkkexec --cache`) and takes them from on a rebuild, instead of
        compressing the whole store again. The image is byte for byte the
        one built without it. null (the default): no cache, nothing read
        from outside the sandbox. The build is sandboxed, so expose the
        directory as nixpkgs' ccacheStdenv does, on the machine that builds:
        `nix.settings.extra-sandbox-paths = [ "/var/cache/nixos-kexec" ];`
        and a directory the build users' group may write,
        `systemd.tmpfiles.rules = [ "d /var/cache/nixos-kexec 2770 root nixbld -" ];`.
        It grows with each new block unless `cacheMaxBytes` bounds it; a
        build recompresses what is missing.
      '';
    };

    cacheMaxBytes = mkOption {
      type = types.nullOr types.ints.positive;
      default = null;
      example = 8 * 1024 * 1024 * 1024;
      description = ''
        With `cacheDir`: after each build, mkkexec removes the least recently
        used blocks of the cache (`mkkexec --cache-max-bytes`) until it holds
        at most this many bytes. null (the default): the cache is never
        trimmed. A bound below one build's blocks makes every rebuild cold.
      '';
    };

    storeParts = mkOption {
      type = types.ints.positive;
      default = 1;
      example = 2;
      description = ''
        How many squashfs images hold the store, each mounted in stage 1 and
        a lower layer of the /nix/store overlay. An initrd's cpio holds files
        up to 4 GiB, so a store past about 4 GiB needs several: the tree's
        build then stops before compressing anything and says how many
        ("set nixosKexec.storeParts = N"). Set it to that number (or more,
        for room to grow). 1 (the default) is netboot.nix's layout as it
        is. With N, stage 1 mounts `/nix-store.squashfs` at
        `/nix/.ro-store` and `/nix-store-<i>.squashfs` at
        `/nix/.ro-store-<i>` for i = 1 … N-1, through `fileSystems`, under
        the scripted and the systemd stage 1 alike. Parts the store does
        not fill are empty images: each costs a few KiB in the initrd and a
        loop device at boot. `system.build.netbootRamdisk` is then the
        tree's `initrd.gz` (built with the tree), and
        `system.build.squashfsStore` stays one image of the whole store.
      '';
    };

    kernelParams = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "console=ttyS0,115200" ];
      description = ''
        Kernel parameters for the kexec'd (or netbooted) kernel, after `init=`
        and `boot.kernelParams`.
      '';
    };

    initramfsOnRamfs = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether the kexec'd (or netbooted) kernel unpacks its initrd into a
        ramfs (`rootfstype=ramfs` on its command line) instead of a tmpfs.
        The kernel caps a tmpfs initramfs at half the memory beside the
        initrd, so the store would need twice its size in RAM; a ramfs holds
        it once. Measured (README, "Memory"): a 384 MiB store boots with
        about a quarter less RAM. Stage 1 writes nothing large there, and the
        running system's `/` is a tmpfs of its own.

        What it changes depends on the stage 1. The kernel unpacks into a
        tmpfs only when its command line has a `rootfstype=` naming tmpfs,
        or neither `root=` nor `rootfstype=`. The scripted stage 1 adds no
        `root=`: there this option chooses ramfs (true) or tmpfs (false).
        systemd's stage 1 (`boot.initrd.systemd.enable`, nixpkgs' default
        since 26.05) adds `root=fstab`: the initramfs is a ramfs either way,
        and this option changes nothing (only `rootfstype=tmpfs` in
        `nixosKexec.kernelParams` would give a tmpfs). kexec-boot's memory
        check follows the same rule, reading the command line it loads.
      '';
    };

    kexecPackage = mkOption {
      type = types.nullOr types.package;
      default = pkgs.pkgsStatic.kexec-tools;
      defaultText = literalExpression "pkgs.pkgsStatic.kexec-tools";
      description = ''
        A static kexec-tools bundled into the tree and the tarball, so that
        the host needs only a shell; null bundles none and uses the host's
        kexec.
      '';
    };

    ipPackage = mkOption {
      type = types.nullOr types.package;
      # Static iproute2 does not link with iptables.
      default = pkgs.pkgsStatic.iproute2.override { iptables = null; };
      defaultText = literalExpression "pkgs.pkgsStatic.iproute2.override { iptables = null; }";
      description = ''
        A static iproute2 bundled into the tree and the tarball: kexec-boot
        reads the host's addresses and routes with its `ip`. null bundles
        none and uses the host's `ip`.
      '';
    };

    carry.enable = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Whether the kexec'd system takes over the old host's addresses and
        routes (as systemd-networkd units matched by MAC address), its
        nameservers, SSH host keys, the keys that logged in as root, and its
        machine-id, so that it comes back where it was over SSH. Enables
        systemd-networkd and sshd (with mkDefault).
      '';
    };
  };

  config = lib.mkMerge [
    {
      # Read by the toplevel's assertions only: the builders below throw the
      # same message, since building them does not go through the toplevel.
      assertions = [
        {
          assertion = squashfsError == null;
          message = toString squashfsError;
        }
      ];
      warnings = lib.optional (cfg.cacheMaxBytes != null && cfg.cacheDir == null) ''
        nixosKexec.cacheMaxBytes is set but nixosKexec.cacheDir is null: there is no cache to bound.'';

      # The tarball: <out>/tarball/nixos-system-<system>.tar.gz, which
      # netboot.nix also offers as system.build.image.
      image.baseName = mkDefault "nixos-system-${hostSystem}";
      image.extension = mkForce "tar.gz";
      image.filePath = mkForce "tarball/${config.image.fileName}";

      system.build = {
        squashfsStore = mkForce (kexecLib.squashfs ({ inherit storeContents; } // squashfsSettings));

        # With several store parts, the tree's initrd.gz is the ramdisk: the
        # parts are made and packed inside the tree's one mkkexec run
        # (squashfsStore stays the whole store in one image).
        netbootRamdisk = mkForce (
          if cfg.storeParts > 1 then
            pkgs.linkFarm "netboot-ramdisk" [
              {
                name = "initrd";
                path = "${config.system.build.kexecTree}/initrd.gz";
              }
            ]
          else
            kexecLib.initrd (
              {
                initrd = stage1;
                squashfs = config.system.build.squashfsStore;
              }
              // initrdSettings
            )
        );

        kexecScript = mkForce (
          kexecLib.script (
            bootSettings
            // {
              inherit kernel;
              initrd = "${config.system.build.netbootRamdisk}/initrd";
            }
          )
        );

        # Served from one directory with the kernel and the ramdisk under the
        # names nixpkgs' netboot.nix uses: <kernel target> and initrd.
        netbootIpxeScript = mkForce (
          kexecLib.script (
            bootSettings
            // {
              initrd = "${config.system.build.netbootRamdisk}/initrd";
              ipxe = true;
              kernelName = pkgs.stdenv.hostPlatform.linux-kernel.target;
              initrdName = "initrd";
            }
          )
        );

        # One mkkexec run: the squashfs goes straight into the initrd.
        kexecTree = mkForce (
          kexecLib.tree (
            bootSettings
            // {
              inherit kernel storeContents;
              inherit (cfg) storeParts;
              initrd = stage1;
            }
            // squashfsSettings
            // initrdSettings
            // toolSettings
          )
        );

        # The tools come with the tree.
        kexecTarball = mkForce (
          kexecLib.tarball {
            tree = config.system.build.kexecTree;
            inherit (config.image) filePath;
          }
        );

        # The same tree for nixos-anywhere (`--kexec`), which unpacks it in
        # $HOME/kexec and runs kexec/run; it accepts the system only if its
        # os-release says ID=nixos and VARIANT_ID=installer
        # (system.nixos.variant_id, set by the flake's configuration.nix).
        kexecInstallerTarball = kexecLib.tarball {
          tree = config.system.build.kexecTree;
          layout = "kexec-installer";
          filePath = "tarball/nixos-kexec-installer-${hostSystem}.tar.gz";
        };
      };

      # A store in several parts (nixosKexec.storeParts): each part is
      # mounted as netboot.nix mounts /nix/.ro-store (the same type, device
      # form and options, including its threads=multi on kernels from 6.2),
      # and is one more lower layer of its /nix/store overlay, below the
      # first. Defined with mkImageMediaOverride, netboot.nix's own priority,
      # so that the definitions merge with netboot.nix's (a plain definition
      # would be dropped beside them) and a user's own mkImageMediaOverride
      # definitions still merge too; overlay.lowerdir is a list
      # (overlayfs.nix), concatenated across definitions: mkAfter puts the
      # parts after netboot.nix's /nix/.ro-store and anything else defined
      # at the default order. A user's mkForce on /nix/store replaces all.
      fileSystems = lib.mkIf (cfg.storeParts > 1) (
        lib.listToAttrs (
          map (
            i:
            lib.nameValuePair (partMount i) (
              lib.mkImageMediaOverride {
                fsType = "squashfs";
                device = "../nix-store-${toString i}.squashfs";
                options = [
                  "loop"
                ]
                ++ optional (config.boot.kernelPackages.kernel.kernelAtLeast "6.2") "threads=multi";
                neededForBoot = true;
              }
            )
          ) partNumbers
        )
        // {
          "/nix/store" = lib.mkImageMediaOverride {
            overlay.lowerdir = lib.mkAfter (map partLowerdir partNumbers);
            # The scripted stage 1 mounts in the order of
            # filesystems.nix's toposort (utils.fsBefore), which reads
            # depends: the /mnt-root lowerdirs above do not name the parts'
            # mount points. (Under systemd's stage 1 overlayfs.nix derives
            # these from overlay.lowerdir already.)
            depends = lib.mkIf (!systemdStage1) (map partMount partNumbers);
          };
        }
      );

      # What kexec-boot carried, put in place before the switch to the
      # system: by a unit with /sysroot mounted (systemd stage 1) or after
      # the mounts (scripted stage 1).
      boot.initrd.systemd.services.nixos-kexec-carry = lib.mkIf (cfg.carry.enable && systemdStage1) {
        description = "Put in place what kexec-boot carried from the old host";
        wantedBy = [ "initrd.target" ];
        after = [ "initrd-fs.target" ];
        before = [
          "initrd.target"
          "initrd-nixos-activation.service"
          "initrd-switch-root.target"
        ];
        unitConfig = {
          DefaultDependencies = false;
          ConditionPathIsDirectory = "/nixos-kexec-carry";
        };
        serviceConfig = {
          Type = "oneshot";
          # What could not be placed is said on the console too.
          StandardOutput = "journal+console";
          StandardError = "journal+console";
        };
        script = carryIn "/sysroot";
      };

      # The old host's network as networkd units, before networkd starts.
      # network-pre.target is passive: only a unit that wants it starts it
      # (the firewall does; networkd does not), so the unit is wanted by what
      # always runs, and by networkd, which must not start without it. Like
      # nixpkgs' firewall unit, it runs early, without the default
      # dependencies on basic.target, so that networkd is not held back.
      systemd.services.nixos-kexec-network = lib.mkIf cfg.carry.enable {
        description = "Network of the host before the kexec, as systemd-networkd units";
        wantedBy = [
          "multi-user.target"
          "systemd-networkd.service"
        ];
        wants = [ "network-pre.target" ];
        after = [ "local-fs.target" ];
        before = [
          "network-pre.target"
          "systemd-networkd.service"
          "shutdown.target"
        ];
        conflicts = [ "shutdown.target" ];
        unitConfig = {
          DefaultDependencies = false;
          ConditionPathExists = "${carried}/network/addrs.json";
        };
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = lib.escapeShellArgs [
            (lib.getExe mkkexecOnHost)
            "network"
            "--state"
            "${carried}/network"
            "--output"
            "/run/systemd/network"
          ];
        };
      };
      networking.useNetworkd = lib.mkIf cfg.carry.enable (mkDefault true);
      systemd.network.enable = lib.mkIf cfg.carry.enable (mkDefault true);
      services.openssh.enable = lib.mkIf cfg.carry.enable (mkDefault true);
    }

    # The scripted stage 1's hook, defined only where the option exists:
    # nixpkgs 26.11 drops the scripted stage 1, and a definition of an
    # option that does not exist is an error, even under mkIf false.
    # `options` holds the declarations alone, which do not depend on any
    # config, so asking it decides this without recursion.
    (lib.optionalAttrs (options.boot.initrd ? postMountCommands) {
      boot.initrd.postMountCommands = lib.mkIf (cfg.carry.enable && !systemdStage1) (
        carryIn "\"$targetRoot\""
      );
    })
  ];
}
