# nixos/lib/utils.nix: the two functions the filesystem modules use.
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
