# The system `nix build` and `nix run` boot: a small NixOS installer reachable
# over SSH, which nixos-anywhere accepts (`nix build .#kexec-installer`, then
# `nixos-anywhere --kexec result/tarball/nixos-kexec-installer-*.tar.gz …`)
# and a person can install from by hand. Edit it, then `nix build` (or
# `nix build .#tarball`).
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
  # (Booted by kexec-boot, root also gets the keys that logged in as root,
  # or as the sudo/doas user that ran it, on the old host.)
  users.users.root.openssh.authorizedKeys.keys = [
    # "ssh-ed25519 AAAA... you@example"
  ];

  # Root logs in by key only.
  services.openssh = {
    enable = true;
    settings = {
      PermitRootLogin = "prohibit-password";
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
    };
  };

  networking.hostName = "nixos-kexec";
  networking.useDHCP = lib.mkDefault true;

  # A serial console as well, for rented servers with a web console.
  nixosKexec.kernelParams = [
    "console=tty0"
    "console=ttyS0,115200"
  ];

  # /etc/os-release says VARIANT_ID=installer: nixos-anywhere goes on only
  # when the kexec'd system says ID=nixos and this.
  system.nixos.variant_id = "installer";

  environment.systemPackages = with pkgs; [
    # nixos-install, nixos-generate-config, nixos-enter.
    nixos-install-tools
    # Partitions from a disko config (nixos-anywhere brings its own script).
    disko
    # The hardware report nixos-anywhere's --generate-hardware-config reads.
    nixos-facter
    # nixos-anywhere's --extra-files and disko's zapping.
    rsync
    jq
    parted
    gptfdisk
    e2fsprogs
    dosfstools
  ];

  # The NixOS release whose defaults this configuration was written against.
  system.stateVersion = "26.05";

  # `nix copy`, `nix build` and `nixos-install --flake` on the installer.
  nix.settings.experimental-features = [
    "nix-command"
    "flakes"
  ];
}
