# What the evaluation tests (tests/integration/module.rs) read: nixos-kexec's
# module evaluated against the model, alone and with netboot-minimal.nix,
# for both stage 1 kinds and both platforms.
{
  # nixpkgs' lib (../shared/nixpkgs-lib/lib).
  libPath,
  # The module under test.
  module ? ../../nix/module.nix,
  # Extra modules for one case (a Nix expression's value).
  extraModules ? [ ],
}:
let
  lib = import ./lib.nix { inherit libPath; };
  eval =
    {
      system ? "x86_64-linux",
      systemdStage1 ? true,
      withNetbootMinimal ? false,
      # Cross: the system for this platform, built on x86_64-linux.
      hostPlatform ? null,
      # This case's own settings.
      settings ? { },
      scriptedStage1 ? true,
    }:
    import ./eval.nix {
      inherit lib system scriptedStage1;
      modules = [
        module
        (
          { modulesPath, ... }:
          {
            imports = lib.optional withNetbootMinimal (modulesPath + "/installer/netboot/netboot-minimal.nix");
            boot.initrd.systemd.enable = systemdStage1;
            nixpkgs = lib.optionalAttrs (hostPlatform != null) {
              inherit hostPlatform;
              buildPlatform = "x86_64-linux";
            };
            # A stand-in mkkexec: the real package needs the Rust toolchain.
            nixosKexec.package = (import ./pkgs.nix { inherit lib system; }).bash;
            system.stateVersion = "26.05";
          }
        )
        settings
      ]
      ++ extraModules;
    };
  outputs = [
    "toplevel"
    "squashfsStore"
    "netbootRamdisk"
    "kexecScript"
    "netbootIpxeScript"
    "kexecTree"
    "kexecTarball"
    "kexecInstallerTarball"
    "image"
  ];
  # The units systemd starts at boot: from systemd.defaultUnit, along
  # wants/requires and the wantedBy/requiredBy of every unit (a service
  # `x` is `x.service`, a target `t` is `t.target`).
  bootUnits =
    c:
    let
      inherit (c.config) systemd;
      named = suffix: lib.mapAttrs' (n: u: lib.nameValuePair "${n}.${suffix}" u);
      units = named "service" systemd.services // named "target" systemd.targets;
      pulls = u: (u.wants or [ ]) ++ (u.requires or [ ]);
      pulledBy = u: (u.wantedBy or [ ]) ++ (u.requiredBy or [ ]);
      pulledIn =
        name:
        pulls (units.${name} or { })
        ++ lib.attrNames (lib.filterAttrs (_: u: lib.elem name (pulledBy u)) units);
    in
    map (u: u.key) (
      builtins.genericClosure {
        startSet = [ { key = systemd.defaultUnit; } ];
        operator = u: map (key: { inherit key; }) (pulledIn u.key);
      }
    );
  # What a case yields: each output's .drv and mkkexec arguments, the
  # initrd's fstab, and the image path.
  facts =
    c:
    let
      inherit (c.config.system) build;
    in
    {
      drvPaths = lib.genAttrs outputs (o: build.${o}.drvPath);
      args = lib.genAttrs outputs (o: build.${o}.mkkexecArgs or null);
      fstab = lib.splitString "\n" build.initrdFstab;
      # The mounts stage 1 makes, in order (./stage-1-mounts.nix).
      mounts = build.stage1Mounts;
      storeDepends = c.config.fileSystems."/nix/store".depends;
      imageFilePath = c.config.image.filePath;
      # The store paths whose closure the image holds.
      closure = map (p: p.name) build.squashfsStore.exportReferencesGraph.closure;
      initrdServices = lib.attrNames c.config.boot.initrd.systemd.services;
      # Carrying the machine over: where stage 1 puts the carried files,
      # and the unit that writes the network.
      carry = {
        initrdUnit = c.config.boot.initrd.systemd.services.nixos-kexec-carry or null;
        postMountCommands = c.config.boot.initrd.postMountCommands or null;
        network = c.config.systemd.services.nixos-kexec-network or null;
        bootUnits = bootUnits c;
        networkd = c.config.systemd.network.enable;
        sshd = c.config.services.openssh.enable or false;
      };
      # Forces the assertions (the toplevel is built through them).
      toplevelName = build.toplevel.name;
      # The builder's script, which names where the tarball goes.
      installerTarballScript = builtins.elemAt build.kexecInstallerTarball.args 1;
    };
  # The flake's default system (configuration.nix): what nixos-anywhere and
  # a person installing by hand find on it.
  installer =
    c:
    facts c
    // {
      osRelease = c.config.environment.etc."os-release".text;
      packages = map (p: p.name) c.config.environment.systemPackages;
      nixFeatures = c.config.nix.settings.experimental-features;
      inherit (c.config.services.openssh) settings;
      rootKeys = c.config.users.users.root.openssh.authorizedKeys.keys;
    };
  cases = {
    systemd = { };
    scripted.systemdStage1 = false;
    netbootMinimal.withNetbootMinimal = true;
    aarch64.system = "aarch64-linux";
    crossAarch64.hostPlatform = "aarch64-linux";
    initramfsOnTmpfs.settings.nixosKexec.initramfsOnRamfs = false;
    # nixpkgs 26.11: systemd's stage 1 only.
    noScriptedStage1.scriptedStage1 = false;
    # A store in three parts.
    partsSystemd.settings.nixosKexec.storeParts = 3;
    partsScripted = {
      systemdStage1 = false;
      settings.nixosKexec.storeParts = 3;
    };
  };
  # The mounts of a four-part store for the boot test (tests/integration/
  # boot.rs), for Debian's 6.1 kernel, which netboot.nix gives no
  # threads=multi (its squashfs does not know it).
  bootParts =
    systemdStage1:
    (eval {
      inherit systemdStage1;
      settings = {
        nixosKexec.storeParts = 4;
        boot.kernelPackages.kernel.kernelAtLeast = v: lib.versionAtLeast "6.1" v;
      };
    }).config.system.build.stage1Mounts;
in
lib.mapAttrs (_: args: facts (eval args)) cases
// {
  bootMounts = {
    scripted = bootParts false;
    systemd = bootParts true;
  };
  configuration = installer (eval {
    settings = ../../configuration.nix;
  });
}
