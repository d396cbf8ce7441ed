# Stand-in for nixpkgs' nixos/modules/profiles/minimal.nix: it sets options
# nixos-kexec's module does not read.
{ lib, ... }:
{
  documentation.enable = lib.mkDefault false;
}
