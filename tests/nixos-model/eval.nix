# Evaluates NixOS modules against the model, as nixpkgs'
# nixos/lib/eval-config.nix does: lib.evalModules with `modulesPath`,
# `pkgs` and `utils` as module arguments.
{
  lib,
  system ? "x86_64-linux",
  modules,
  # false: nixpkgs 26.11, which has no scripted stage 1 and so no
  # boot.initrd.postMountCommands.
  scriptedStage1 ? true,
}:
lib.evalModules {
  specialArgs.modulesPath = ./modules;
  modules = [
    ./nixos.nix
    (
      { config, ... }:
      {
        # nixos/modules/misc/nixpkgs.nix: pkgs for nixpkgs.hostPlatform (a
        # system string here), built on nixpkgs.buildPlatform (this model's
        # pkgs always build on x86_64-linux).
        nixpkgs.hostPlatform = lib.mkDefault system;
        _module.args = {
          pkgs = import ./pkgs.nix {
            inherit lib;
            system = config.nixpkgs.hostPlatform;
          };
          utils = import ./utils.nix { inherit lib; };
        };
      }
    )
  ]
  ++ lib.optional scriptedStage1 ./stage-1.nix
  ++ modules;
}
