# nixos/lib/utils.nix (nixpkgs master, 2026): the functions the filesystem
# modules use (fsNeededForBoot, fsBefore, escapeSystemdPath).
{ lib }:
{
  # The mount points stage 1 mounts whether or not they say neededForBoot.
  fsNeededForBoot =
    fs:
    fs.neededForBoot
    || lib.elem fs.mountPoint [
      "/"
      "/nix"
      "/nix/store"
      "/var"
      "/var/log"
      "/var/lib"
      "/var/lib/nixos"
      "/etc"
      "/usr"
    ];

  # Whether file system `b` must be mounted after `a`: a's mount point is
  # a parent (or the same) of b's device, mount point or one of its depends,
  # compared with a trailing slash so that /aaa is no parent of /aaaa.
  fsBefore =
    a: b:
    let
      slash = p: if lib.hasSuffix "/" p then p else p + "/";
      under = p: lib.hasPrefix (slash a.mountPoint) (slash p);
    in
    under (toString b.device) || under b.mountPoint || lib.any under b.depends;

  # systemd-escape --path, for the paths that occur here.
  escapeSystemdPath =
    s:
    let
      trimmed = lib.removePrefix "/" s;
      # systemd-escape turns / into - and escapes - itself.
      special = [
        "/"
        "-"
      ];
      escaped = [
        "-"
        "\\x2d"
      ];
    in
    if trimmed == "" then
      "-"
    else
      (if lib.hasPrefix "." trimmed then "\\x2e" else "")
      + lib.replaceStrings special escaped (lib.removePrefix "." trimmed);
}
