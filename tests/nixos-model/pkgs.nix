# A stand-in for nixpkgs' package set: just the attributes the flake, the
# module and the model read. Each package is a real derivation (it
# instantiates, so a `.drv` proves the inputs are wired), built by /bin/sh;
# none is meant to be built.
{ lib, system }:
let
  platforms = {
    x86_64-linux = {
      linux-kernel.target = "bzImage";
      isx86 = true;
      isAarch64 = false;
    };
    aarch64-linux = {
      linux-kernel.target = "Image";
      isx86 = false;
      isAarch64 = true;
    };
  };
  platform = platforms.${system} // {
    inherit system;
  };

  # The attributes of a stand-in that may name its inputs.
  inputAttrs = [
    "src"
    "text"
    "testScript"
    "buildCommand"
  ];

  # A package: a derivation with meta, overrideAttrs and a bin/<name>.
  mkPackage =
    attrs:
    let
      name = attrs.name or "${attrs.pname}-${attrs.version or "0"}";
      drv = derivation {
        inherit name system;
        builder = "/bin/sh";
        args = [
          "-c"
          "echo stand-in > $out"
        ];
        # What the stand-in's inputs were, so that they are instantiated.
        inputs = toString (
          lib.filter (v: lib.isDerivation v || builtins.isPath v || builtins.isString v) (
            map (k: attrs.${k}) (lib.filter (k: attrs ? ${k}) inputAttrs)
          )
        );
      };
    in
    drv
    // {
      pname = attrs.pname or name;
      meta = attrs.meta or { } // {
        mainProgram = attrs.meta.mainProgram or (attrs.pname or name);
      };
      overrideAttrs = f: mkPackage (attrs // f attrs);
      # callPackage's override: new arguments, the same stand-in.
      override = _: mkPackage attrs;
      nativeBuildInputs = attrs.nativeBuildInputs or [ ];
      src = attrs.src or null;
    };
  pkg = name: mkPackage { inherit name; };

  pkgs = {
    inherit lib;
    stdenv = {
      hostPlatform = platform;
      buildPlatform = platforms.x86_64-linux // {
        system = "x86_64-linux";
      };
    };
    callPackage = lib.callPackageWith pkgs;
    buildPackages = pkgs;
    pkgsStatic = pkgs;

    # buildRustPackage adds cargo's hooks to the native build inputs, which
    # the flake's clippy check extends.
    rustPlatform.buildRustPackage =
      attrs:
      assert builtins.pathExists attrs.cargoLock.lockFile;
      mkPackage (attrs // { nativeBuildInputs = attrs.nativeBuildInputs or [ ] ++ [ pkgs.cargo ]; });
    runCommand = name: env: buildCommand: mkPackage { inherit name buildCommand; };
    writeScript = name: text: mkPackage { inherit name text; };
    writeTextDir = name: text: mkPackage { inherit name text; };
    linkFarm = name: entries: mkPackage { inherit name; };
    makeInitrdNG = args: pkg "initrd";
    testers.runNixOSTest = t: mkPackage {
      name = "vm-test-run-${t.name}";
      inherit (t) testScript;
    };
    # pkgs.nixos: evaluate a configuration, as nixpkgs' top-level does.
    nixos =
      configuration:
      let
        c = import ./eval.nix {
          inherit lib system;
          modules = [ configuration ];
        };
      in
      c.config.system.build // c;
  }
  // lib.genAttrs [
    "bash"
    "cargo"
    "clippy"
    "rustfmt"
    "nixfmt"
    "nixfmt-tree"
    "nix"
    "coreutils"
    "kexec-tools"
    "iproute2"
    "squashfsTools"
    "cpio"
    "zstd"
    "xz"
    "shellcheck"
    "dash"
    "util-linux"
    "gnutar"
    "parted"
    "gptfdisk"
    "e2fsprogs"
    "dosfstools"
    "rsync"
    "jq"
    "disko"
    "nixos-facter"
    "nixos-install-tools"
    "linux"
  ] pkg;
in
pkgs
