# Evaluates NixOS modules against the model, as nixpkgs'
# nixos/lib/eval-config.nix does: lib.evalModules with `modulesPath`,
# `pkgs` and `utils` as module arguments.
{
  lib,
  system ? "x86_64-linux",
  modules,
}:
let
  pkgs = import ./pkgs.nix { inherit lib system; };
in
lib.evalModules {
  specialArgs.modulesPath = ./modules;
  modules = [
    ./nixos.nix
    {
      _module.args = {
        inherit pkgs;
        utils = import ./utils.nix { inherit lib; };
      };
    }
  ]
  ++ modules;
}
