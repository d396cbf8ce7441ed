# The system `nix build` and `nix run` boot: a small installer-like NixOS
# reachable over SSH. Edit it, then `nix build` (or `nix build .#tarball`).
{
  lib,
  modulesPath,
  pkgs,
  ...
}:
{
  imports = [
    (modulesPath + "/profiles/minimal.nix")
    (modulesPath + "/profiles/all-hardware.nix")
  ];

  # Replace the placeholder with your key; without one you cannot log in.
  users.users.root.openssh.authorizedKeys.keys = [
    # "ssh-ed25519 AAAA... you@example"
  ];

  services.openssh = {
    enable = true;
    settings.PermitRootLogin = "prohibit-password";
  };

  networking.hostName = "nixos-kexec";
  networking.useDHCP = lib.mkDefault true;

  # A serial console as well, for rented servers with a web console.
  nixosKexec.kernelParams = [
    "console=tty0"
    "console=ttyS0,115200"
  ];

  environment.systemPackages = with pkgs; [
    parted
    gptfdisk
    e2fsprogs
    dosfstools
    rsync
  ];

  # The NixOS release whose defaults this configuration was written against.
  system.stateVersion = "26.05";

  nix.settings.experimental-features = [
    "nix-command"
    "flakes"
  ];
}
