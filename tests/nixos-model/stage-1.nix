# nixos/modules/system/boot/stage-1.nix (26.05): the scripted stage 1's hook
# after the file systems are mounted at $targetRoot, and
# nixos/modules/system/boot/systemd/initrd.nix's refusal of it under
# systemd's stage 1. nixpkgs 26.11 drops the scripted stage 1 (26.05's
# release notes): eval.nix leaves this file out for that case, and the
# option is gone.
{ config, lib, ... }:
{
  options.boot.initrd.postMountCommands = lib.mkOption {
    type = lib.types.lines;
    default = "";
  };

  config.assertions = [
    {
      assertion = config.boot.initrd.systemd.enable -> config.boot.initrd.postMountCommands == "";
      message = "systemd stage 1 does not support 'boot.initrd.postMountCommands'";
    }
  ];
}
