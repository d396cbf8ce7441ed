# A stand-in for the nixpkgs flake, for `nix flake show` and `nix flake check
# --no-build` of this project's flake with `--override-input nixpkgs
# path:<dir>`: the test (tests/integration/module.rs) copies nixpkgs' real lib
# to <dir>/lib and this model to <dir>/model. `lib.nixosSystem` evaluates
# the model as nixpkgs' does eval-config.nix; `legacyPackages` are the
# stand-in packages of pkgs.nix.
{
  outputs =
    { self }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      lib = (import ./model/lib.nix { libPath = ./lib; }).extend (
        final: prev: {
          # As nixpkgs' lib.nixosSystem: `system` may be left out when the
          # modules set nixpkgs.hostPlatform.
          nixosSystem =
            {
              system ? null,
              modules,
              ...
            }:
            import ./model/eval.nix {
              lib = final;
              inherit modules;
              system = if system == null then "x86_64-linux" else system;
            };
        }
      );
    in
    {
      inherit lib;
      legacyPackages = lib.genAttrs systems (
        system: import ./model/pkgs.nix { inherit lib system; }
      );
    };
}
