# Model of nixpkgs' nixos/modules/installer/netboot/netboot-minimal.nix.
{
  imports = [
    ./netboot-base.nix
    ../../profiles/minimal.nix
  ];
}
