# fileSystems with the overlay submodule: nixos/modules/tasks/filesystems.nix
# (nixpkgs master, 2026: mountPoint, device, with the fsType as the device of
# a special file system, fsType, options, neededForBoot, depends, and the
# options it adds: x-initrd.mount on what stage 1 mounts and, under systemd's
# stage 1, x-systemd.requires-mounts-for=/sysroot<p> for each depends) and
# nixos/modules/tasks/filesystems/overlayfs.nix (overlay.*, and under systemd
# stage 1 the /sysroot prefix of needed-for-boot overlays plus the service
# that creates upperdir and workdir).
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  inherit (lib) mkOption types;
  systemd1 = config.boot.initrd.systemd.enable;
  prefixOf =
    fs: if systemd1 && fs.overlay.useStage1BaseDirectories && utils.fsNeededForBoot fs then "/sysroot" else "";

  specialFSTypes = [
    "proc"
    "sysfs"
    "tmpfs"
    "ramfs"
    "devtmpfs"
    "devpts"
  ];

  fsModule =
    { name, config, ... }:
    {
      options = {
        mountPoint = mkOption {
          type = types.str;
          default = name;
        };
        device = mkOption {
          type = types.nullOr types.str;
          default = null;
        };
        fsType = mkOption {
          type = types.str;
          default = "auto";
        };
        options = mkOption {
          type = types.nonEmptyListOf types.str;
          default = [ "defaults" ];
        };
        neededForBoot = mkOption {
          type = types.bool;
          default = false;
        };
        depends = mkOption {
          type = types.listOf types.str;
          default = [ ];
        };
        overlay = {
          lowerdir = mkOption {
            type = types.nullOr (types.nonEmptyListOf types.str);
            default = null;
          };
          upperdir = mkOption {
            type = types.nullOr types.str;
            default = null;
          };
          workdir = mkOption {
            type = types.nullOr types.str;
            default = null;
          };
          useStage1BaseDirectories = mkOption {
            type = types.bool;
            default = true;
          };
        };
      };
      config = lib.mkMerge [
        {
          device = lib.mkIf (lib.elem config.fsType specialFSTypes) (lib.mkDefault config.fsType);
          options =
            let
              inInitrd = utils.fsNeededForBoot config;
            in
            lib.mkMerge [
              (lib.mkIf inInitrd [ "x-initrd.mount" ])
              (lib.mkIf (config.depends != [ ] && (inInitrd -> systemd1)) (
                map (
                  d: "x-systemd.requires-mounts-for=${lib.optionalString inInitrd "/sysroot"}${d}"
                ) config.depends
              ))
            ];
        }
        (overlayConfig config)
      ];
    };
  # overlayfs.nix's own part of the submodule.
  overlayConfig =
    config:
    lib.mkIf (config.overlay.lowerdir != null) {
      fsType = "overlay";
      device = lib.mkDefault "overlay";
      depends = config.overlay.lowerdir ++ lib.optionals (config.overlay.upperdir != null) [
        config.overlay.upperdir
        config.overlay.workdir
      ];
      options =
        let
          p = prefixOf config;
        in
        [ "lowerdir=${lib.concatMapStringsSep ":" (d: p + d) config.overlay.lowerdir}" ]
        ++ lib.optionals (config.overlay.upperdir != null) [
          "upperdir=${p + config.overlay.upperdir}"
          "workdir=${p + config.overlay.workdir}"
        ];
    };
  initrdOverlays = lib.filterAttrs (
    _: fs: fs.overlay.lowerdir != null && utils.fsNeededForBoot fs
  ) config.fileSystems;
in
{
  options.fileSystems = mkOption {
    type = types.attrsOf (types.submodule fsModule);
    default = { };
  };

  config.boot.initrd.systemd.services = lib.mkMerge (
    lib.mapAttrsToList (
      _: fs:
      let
        p = prefixOf fs;
        unit = "${utils.escapeSystemdPath (p + fs.mountPoint)}.mount";
      in
      lib.mkIf (fs.overlay.upperdir != null) {
        "rw-${utils.escapeSystemdPath (p + fs.mountPoint)}" = {
          requiredBy = [ unit ];
          before = [ unit ];
          script = "mkdir -p -m 0755 ${p + fs.overlay.upperdir} ${p + fs.overlay.workdir}";
        };
      }
    ) initrdOverlays
  );
}
