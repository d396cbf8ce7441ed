# Model of nixpkgs' nixos/modules/installer/netboot/netboot-base.nix.
{
  imports = [
    ./netboot.nix
    ../../profiles/base.nix
    ../../profiles/installation-device.nix
  ];
  hardware.enableAllHardware = true;
}
