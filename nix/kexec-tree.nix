# The derivations that call mkkexec, written without nixpkgs so that they can
# be built (and tested) with any Nix: every input is an argument. The NixOS
# module (module.nix) calls them with packages from nixpkgs; the tests call
# them with Debian's Nix over a fixture made from plain builtins.derivation.
#
# The closure reaches mkkexec through __structuredAttrs +
# exportReferencesGraph: Nix writes the path infos (hash, size, references)
# of storeContents' closure into .attrs.json, which mkkexec reads directly.
{
  # mkkexec's executable (a path, or a string with store context).
  mkkexec,
  # A bash for the builder: it sources Nix's .attrs.sh for the output path.
  bash,
  system,
}:
let
  # A derivation whose builder runs `mkkexec <mkkexecArgs…> --output <out><outputSuffix>`.
  # Nix 2.8 sets no $out with structured attrs, and inside the sandbox its
  # NIX_ATTRS_*_FILE variables point at host paths (Nix issue 6736), so the
  # builder reads .attrs.sh from the build directory, where every Nix writes it.
  runMkkexec =
    {
      name,
      mkkexecArgs,
      outputSuffix ? "",
      extraAttrs ? { },
    }:
    derivation (
      {
        inherit name system mkkexecArgs;
        builder = bash;
        __structuredAttrs = true;
        args = [
          "-euc"
          ''
            cd "''${NIX_BUILD_TOP:-.}"
            source .attrs.sh
            exec ${mkkexec} "''${mkkexecArgs[@]}" --output "''${outputs[out]}${outputSuffix}"
          ''
        ];
      }
      // extraAttrs
    );
  optionalArgs = flag: value: if value == null then [ ] else [ flag (toString value) ];
in
{
  # A kexec tree: bzImage, initrd.gz, kexec-boot, netboot.ipxe, bin/nixos-kexec.
  tree =
    {
      toplevel,
      kernel,
      # NixOS' stage-1 initrd (config.system.build.initialRamdisk + "/initrd").
      initrd,
      storeContents ? [ toplevel ],
      kernelParams ? [ ],
      squashfsCompression ? "zstd",
      squashfsLevel ? null,
      initrdCompression ? "zstd",
      initrdLevel ? null,
      name ? "kexec-tree",
    }:
    runMkkexec {
      inherit name;
      extraAttrs.exportReferencesGraph.closure = storeContents;
      mkkexecArgs =
        [
          "tree"
          "--closure"
          ".attrs.json"
          "--toplevel"
          "${toplevel}"
          "--kernel"
          "${kernel}"
          "--prepend-initrd"
          "${initrd}"
          "--squashfs-compression"
          squashfsCompression
          "--initrd-compression"
          initrdCompression
        ]
        ++ optionalArgs "--squashfs-level" squashfsLevel
        ++ optionalArgs "--initrd-level" initrdLevel
        ++ map (p: "--kernel-param=${p}") kernelParams;
    };

  # <out>/tarball/nixos-system-<system>.tar.gz: unpacked at /, it gives
  # /nixos-kexec/bin/nixos-kexec.
  tarball =
    {
      tree,
      # A static kexec to bundle, or null to rely on the host's.
      kexec ? null,
      name ? "nixos-kexec-tarball",
    }:
    runMkkexec {
      inherit name;
      mkkexecArgs = [
        "tarball"
        "--tree"
        "${tree}"
      ] ++ optionalArgs "--kexec" kexec;
      outputSuffix = "/tarball/nixos-system-${system}.tar.gz";
    };
}
