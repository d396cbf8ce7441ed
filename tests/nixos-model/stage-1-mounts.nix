# What each stage 1 kind mounts, in its order, from the fileSystems the
# modules define (system.build.stage1Mounts: a list of { what, where, type,
# options }, in the order the mounts happen), following nixpkgs master (2026):
#
# - nixos/modules/tasks/filesystems.nix: system.build.fileSystems is
#   config.fileSystems topologically sorted by utils.fsBefore.
# - Scripted stage 1, nixos/modules/system/boot/stage-1.nix and
#   stage-1-init.sh: fsInfo lists the needed-for-boot file systems of
#   system.build.fileSystems in that order; mountFS mounts each at
#   /mnt-root<mountPoint>, drops x- options, and prefixes /mnt-root to
#   what follows `lowerdir=`, `upperdir=` and `workdir=` (its sed: the first
#   directory of a lowerdir list only); an absolute device outside /dev
#   gets /mnt-root too, a relative one (../nix-store.squashfs) is passed as
#   it is and mount resolves it from stage 1's working directory, /.
# - systemd's stage 1, nixos/modules/system/boot/systemd/initrd.nix with
#   filesystems.nix's initrd fstab (SYSTEMD_SYSROOT_FSTAB): the
#   x-initrd.mount entries below /sysroot; systemd orders a mount after the
#   mounts of the parents of its mount point, of each
#   x-systemd.requires-mounts-for path and of an absolute What=; mount(8)
#   ignores x- options and, run by PID 1 from /, resolves a relative device
#   from / as above.
{
  config,
  lib,
  utils,
  ...
}:
let
  sorted = lib.toposort utils.fsBefore (lib.attrValues config.fileSystems);
  fileSystems = sorted.result or (throw "fileSystems cannot be sorted: ${builtins.toJSON sorted}");
  needed = lib.filter utils.fsNeededForBoot fileSystems;
  isX = o: lib.hasPrefix "x-" o;

  scripted = map (fs: {
    what =
      if lib.hasPrefix "/" fs.device && !lib.hasPrefix "/dev/" fs.device then
        "/mnt-root${fs.device}"
      else
        fs.device;
    where = "/mnt-root${fs.mountPoint}";
    type = fs.fsType;
    options = map (
      o:
      let
        m = builtins.match "(lowerdir|upperdir|workdir)=(.*)" o;
      in
      if m == null then o else "${lib.elemAt m 0}=/mnt-root${lib.elemAt m 1}"
    ) (lib.filter (o: !isX o) fs.options);
  }) needed;

  # A path and the mount points it needs: itself and every parent.
  slash = p: if lib.hasSuffix "/" p then p else p + "/";
  under = parent: p: lib.hasPrefix (slash parent) (slash p);
  systemdEntries = map (fs: {
    what = fs.device;
    where = if fs.mountPoint == "/" then "/sysroot" else "/sysroot${fs.mountPoint}";
    type = fs.fsType;
    inherit (fs) options;
    needs =
      lib.optional (lib.hasPrefix "/" fs.device) fs.device
      ++ map (o: lib.removePrefix "x-systemd.requires-mounts-for=" o) (
        lib.filter (lib.hasPrefix "x-systemd.requires-mounts-for=") fs.options
      );
  }) (lib.filter (fs: lib.elem "x-initrd.mount" fs.options) fileSystems);
  systemdSorted = lib.toposort (
    a: b: a.where != b.where && (under a.where b.where || lib.any (under a.where) b.needs)
  ) systemdEntries;
  systemd = map (e: removeAttrs e [ "needs" ]) (
    systemdSorted.result or (throw "a mount cycle: ${builtins.toJSON systemdSorted}")
  );
in
{
  config.system.build.stage1Mounts = if config.boot.initrd.systemd.enable then systemd else scripted;
}
