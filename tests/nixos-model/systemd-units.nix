# The unit graph systemd starts at boot: nixos/modules/system/boot/systemd.nix
# installs systemd's own targets (upstreamSystemUnits) and boots
# systemd.defaultUnit, multi-user.target; the dependencies of those targets
# are in systemd's units/*.target, which this file copies (Requires= and
# Wants= only). nixos/modules/system/boot/networkd.nix adds
# systemd-networkd.service to multi-user.target; the service's own
# dependencies are systemd's units/systemd-networkd.service.in (it does not
# want network-pre.target, it only orders itself after it).
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
in
{
  options.systemd = {
    defaultUnit = mkOption {
      type = types.str;
      default = "multi-user.target";
    };
    targets = mkOption {
      type = types.attrsOf types.anything;
      default = { };
    };
  };

  config.systemd = {
    targets = {
      multi-user.requires = [ "basic.target" ];
      basic = {
        requires = [ "sysinit.target" ];
        wants = [
          "sockets.target"
          "timers.target"
          "paths.target"
          "slices.target"
        ];
      };
      sysinit.wants = [
        "local-fs.target"
        "swap.target"
      ];
      # Passive: active only when a unit wants it.
      network-pre = { };
      network = { };
    };
    services.systemd-networkd = lib.mkIf config.systemd.network.enable {
      wantedBy = [ "multi-user.target" ];
      wants = [
        "systemd-networkd.socket"
        "network.target"
      ];
      after = [ "network-pre.target" ];
      before = [
        "network.target"
        "multi-user.target"
      ];
      unitConfig.DefaultDependencies = false;
    };
  };
}
