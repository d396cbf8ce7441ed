# The derivations that call mkkexec, written without nixpkgs so that they can
# be built (and tested) with any Nix: every input is an argument. The NixOS
# module (module.nix) calls them with packages from nixpkgs; the tests call
# them with Debian's Nix over a fixture made from plain builtins.derivation.
#
# The closure reaches mkkexec through __structuredAttrs +
# exportReferencesGraph: Nix writes the path infos (hash, size, references)
# of the store contents' closure into .attrs.json, which mkkexec reads.
{
  # mkkexec's executable (a path, or a string with store context).
  mkkexec,
  # A bash for the builder: it sources Nix's .attrs.sh for the output path.
  bash,
  # The platform the builds run on (where mkkexec runs).
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
      storeContents ? null,
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
      // (if storeContents == null then { } else { exportReferencesGraph.closure = storeContents; })
    );

  # A Nix path (a file outside the store) is copied into the store, so that
  # the sandboxed build can read it.
  optionalArgs =
    flag: value:
    if value == null then
      [ ]
    else
      [
        flag
        (if builtins.isPath value then "${value}" else toString value)
      ];

  # --squashfs-compression/--squashfs-level and --initrd-compression/
  # --initrd-level, spelled the same in every subcommand; unset, mkkexec's
  # defaults (zstd for the squashfs, none for the cpio around it).
  compressionArgs =
    kind: args:
    optionalArgs "--${kind}-compression" (args."${kind}Compression" or null)
    ++ optionalArgs "--${kind}-level" (args."${kind}Level" or null);

  # --cache: the block cache a sandboxed build may write (nixosKexec.cacheDir),
  # and the size mkkexec trims it to afterwards (nixosKexec.cacheMaxBytes).
  cacheArgs =
    args:
    optionalArgs "--cache" (args.squashfsCache or null)
    ++ optionalArgs "--cache-max-bytes" (args.squashfsCacheMaxBytes or null);

  kernelParamArgs = map (p: "--kernel-param=${p}");

  # Static tools for the old host: --kexec and --ip, or nothing.
  toolArgs =
    args: optionalArgs "--kexec" (args.kexec or null) ++ optionalArgs "--ip" (args.ip or null);
in
{
  # The Nix store as a squashfs image, as nixpkgs' make-squashfs.nix lays it out.
  squashfs =
    {
      storeContents,
      name ? "nix-store.squashfs",
      ...
    }@args:
    runMkkexec {
      inherit name storeContents;
      mkkexecArgs = [
        "squashfs"
        "--closure"
        ".attrs.json"
      ]
      ++ compressionArgs "squashfs" args
      ++ cacheArgs args;
    };

  # <out>/initrd: the stage-1 initrd followed by a cpio with /nix-store.squashfs.
  initrd =
    {
      initrd,
      squashfs,
      name ? "netboot-ramdisk",
      ...
    }@args:
    runMkkexec {
      inherit name;
      mkkexecArgs = [
        "initrd"
        "--prepend-initrd"
        "${initrd}"
        "--file"
        "${squashfs}:/nix-store.squashfs"
      ]
      ++ compressionArgs "initrd" args;
      outputSuffix = "/initrd";
    };

  # kexec-boot (or <out>/netboot.ipxe with ipxe = true) for `kernel` and
  # `initrd` (kexec-boot checks their sizes and SHA-256; iPXE needs no kernel).
  script =
    {
      toplevel,
      initrd,
      kernel ? null,
      kernelParams ? [ ],
      ipxe ? false,
      # The file names netboot.ipxe asks its server for.
      kernelName ? null,
      initrdName ? null,
      name ? if ipxe then "netboot.ipxe" else "kexec-boot",
    }:
    runMkkexec {
      inherit name;
      mkkexecArgs = [
        "script"
        "--toplevel"
        "${toplevel}"
        "--initrd"
        "${initrd}"
      ]
      ++ optionalArgs "--kernel" kernel
      ++ kernelParamArgs kernelParams
      ++ (if ipxe then [ "--ipxe" ] else [ ])
      ++ optionalArgs "--kernel-name" kernelName
      ++ optionalArgs "--initrd-name" initrdName;
      outputSuffix = if ipxe then "/netboot.ipxe" else "";
    };

  # A kexec tree in one step: bzImage, initrd.gz, kexec-boot, netboot.ipxe,
  # bin/nixos-kexec, and static kexec and ip when given (kexec = "…/bin/kexec",
  # ip = "…/bin/ip").
  tree =
    {
      toplevel,
      kernel,
      # NixOS' stage-1 initrd (config.system.build.initialRamdisk + "/initrd").
      initrd,
      storeContents ? [ toplevel ],
      kernelParams ? [ ],
      # How many store images the stage 1 mounts (nixosKexec.storeParts):
      # more than one passes --store-parts, which writes exactly that many.
      storeParts ? 1,
      name ? "kexec-tree",
      ...
    }@args:
    runMkkexec {
      inherit name storeContents;
      mkkexecArgs = [
        "tree"
        "--closure"
        ".attrs.json"
        "--toplevel"
        "${toplevel}"
        "--kernel"
        "${kernel}"
        "--prepend-initrd"
        "${initrd}"
      ]
      ++ compressionArgs "squashfs" args
      ++ cacheArgs args
      ++ compressionArgs "initrd" args
      ++ toolArgs args
      ++ (
        if storeParts > 1 then
          [
            "--store-parts"
            (toString storeParts)
          ]
        else
          [ ]
      )
      ++ kernelParamArgs kernelParams;
    };

  # <out>/<filePath>: with layout "root", unpacked at /, it gives
  # /nixos-kexec/bin/nixos-kexec; with "kexec-installer", nixos-anywhere's
  # --kexec tarball: kexec/run (kexec-boot), bzImage, initrd.gz, kexec, ip.
  tarball =
    {
      tree,
      # Static kexec and ip to bundle instead of the tree's, or null to
      # take the tree's (if it has them) or rely on the host's.
      kexec ? null,
      ip ? null,
      layout ? "root",
      # Where the tarball goes below the output; the module passes
      # config.image.filePath (nixos-system-<host system>.tar.gz).
      filePath ?
        if layout == "kexec-installer" then
          "tarball/nixos-kexec-installer-${system}.tar.gz"
        else
          "tarball/nixos-system-${system}.tar.gz",
      name ?
        if layout == "kexec-installer" then "nixos-kexec-installer" else "nixos-kexec-tarball",
    }@args:
    runMkkexec {
      inherit name;
      mkkexecArgs = [
        "tarball"
        "--tree"
        "${tree}"
      ]
      ++ (
        if layout == "root" then
          [ ]
        else
          [
            "--layout"
            layout
          ]
      )
      ++ toolArgs args;
      outputSuffix = "/${filePath}";
    };
}
