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
      lib = (import ./model/lib.nix { libPath = ./lib; }).extend (
        final: prev: {
          nixosSystem =
            {
              system,
              modules,
              ...
            }:
            import ./model/eval.nix {
              lib = final;
              inherit system modules;
            };
        }
      );
    in
    {
      inherit lib;
      legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (
        system: import ./model/pkgs.nix { inherit lib system; }
      );
    };
}
