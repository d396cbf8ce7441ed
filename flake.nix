{
  description = "Boot any NixOS configuration from a running Linux with kexec";

  # A shallow git fetch of the release branch.
  inputs.nixpkgs.url = "git+https://github.com/NixOS/nixpkgs?ref=nixos-26.05&shallow=1";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The repo's configuration.nix as a kexec system for `system`.
      mkSystem =
        system:
        lib.nixosSystem {
          inherit system;
          modules = [
            self.nixosModules.default
            ./configuration.nix
          ];
        };
      systemFor = lib.genAttrs systems mkSystem;
      # The same system for `hostSystem`, cross-compiled on `buildSystem`
      # (mkkexec runs on the build platform).
      mkCross =
        buildSystem: hostSystem:
        lib.nixosSystem {
          modules = [
            self.nixosModules.default
            ./configuration.nix
            {
              nixpkgs.buildPlatform = buildSystem;
              nixpkgs.hostPlatform = hostSystem;
            }
          ];
        };
    in
    {
      # One module under two names: its key lets the module system import it
      # once when a configuration names both.
      nixosModules.default = {
        _file = "${self}/flake.nix#nixosModules.default";
        key = "nixos-kexec#nixosModules.default";
        imports = [
          ./nix/module.nix
          (
            { pkgs, ... }:
            {
              # mkkexec runs on the build platform.
              nixosKexec.package = lib.mkDefault (
                self.packages.${pkgs.stdenv.buildPlatform.system}.mkkexec
                  or (pkgs.buildPackages.callPackage ./nix/package.nix { })
              );
            }
          )
        ];
      };
      nixosModules.nixos-kexec = self.nixosModules.default;

      nixosConfigurations.default = systemFor.x86_64-linux;

      packages = forAllSystems (
        pkgs:
        let
          build = systemFor.${pkgs.stdenv.hostPlatform.system}.config.system.build;
        in
        {
          mkkexec = pkgs.callPackage ./nix/package.nix { };
          # result/bin/nixos-kexec, with bzImage, initrd.gz, kexec-boot beside it.
          default = build.kexecTree;
          # result/tarball/nixos-system-<system>.tar.gz
          tarball = build.kexecTarball;
          # result/tarball/nixos-kexec-installer-<system>.tar.gz, for
          # `nixos-anywhere --kexec`.
          kexec-installer = build.kexecInstallerTarball;
        }
        # The other architectures, cross-compiled here:
        # `nix build .#tarball-aarch64-linux` on x86_64-linux.
        // lib.listToAttrs (
          map (
            other:
            lib.nameValuePair "tarball-${other}"
              (mkCross pkgs.stdenv.hostPlatform.system other).config.system.build.kexecTarball
          ) (lib.remove pkgs.stdenv.hostPlatform.system systems)
        )
      );

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.default}/bin/nixos-kexec";
        };
      });

      # nixfmt through treefmt: `nix fmt` (Nix >= 2.24) passes no paths, and
      # plain nixfmt then waits on stdin forever (NixOS/nixfmt#301).
      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);

      checks = forAllSystems (
        pkgs:
        let
          mkkexec = self.packages.${pkgs.stdenv.hostPlatform.system}.mkkexec;
        in
        {
          inherit mkkexec;

          clippy = mkkexec.overrideAttrs (old: {
            pname = "mkkexec-clippy";
            nativeBuildInputs = old.nativeBuildInputs ++ [ pkgs.clippy ];
            buildPhase = "cargo clippy --offline --all-targets -- -D warnings";
            installPhase = "touch $out";
            doCheck = false;
          });

          # rustfmt itself: `cargo fmt` would ask cargo metadata for the
          # dependencies, which the sandbox does not have.
          rustfmt =
            pkgs.runCommand "mkkexec-rustfmt"
              {
                nativeBuildInputs = [ pkgs.rustfmt ];
              }
              ''
                cd ${mkkexec.src}
                rustfmt --edition 2024 --check $(find src tests -name '*.rs')
                touch $out
              '';

          nixfmt =
            pkgs.runCommand "nixfmt-check"
              {
                nativeBuildInputs = [ pkgs.nixfmt ];
              }
              ''
                cd ${self}
                nixfmt --check $(find . -name '*.nix')
                touch $out
              '';

          vm-kexec = import ./nix/tests/kexec.nix {
            inherit pkgs;
            module = self.nixosModules.default;
          };
        }
      );
    };
}
