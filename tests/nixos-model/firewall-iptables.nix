# nixos/modules/services/networking/firewall-iptables.nix (the default
# backend), enabled by networking.firewall.enable (firewall.nix, on by
# default; declared in ./nixos.nix): the firewall unit's dependencies only.
# In a default NixOS it is the unit that pulls network-pre.target in
# (`wants`); that target is passive, so with the firewall off nothing wanted
# by it starts.
{ config, lib, ... }:
{
  config.systemd.services.firewall = lib.mkIf config.networking.firewall.enable {
    wantedBy = [ "sysinit.target" ];
    wants = [ "network-pre.target" ];
    before = [
      "network-pre.target"
      "shutdown.target"
    ];
    unitConfig.DefaultDependencies = false;
  };
}
