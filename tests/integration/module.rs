//! The Nix layer users type first, evaluated with nixpkgs' real lib
//! (`../shared/nixpkgs-lib/lib`) against a model of the NixOS options it
//! touches (`tests/nixos-model/`, each part naming the nixpkgs file it
//! follows): the module alone and beside netboot-minimal.nix, both stage 1
//! kinds, both platforms; then the flake itself, with nixpkgs overridden by
//! a stand-in built on that lib. What only real nixpkgs can show (a built
//! system, the NixOS VM test) is not proven here.

use std::process::Command;

use camino::Utf8PathBuf;
use serde_json::Value;

use crate::common::*;
use crate::nix::nix;

fn root() -> Utf8PathBuf {
    Utf8PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// nixpkgs' lib, beside the checkout (see shared/nixpkgs-lib/SOURCE.md).
fn nixpkgs_lib() -> Utf8PathBuf {
    let lib = root().join("../shared/nixpkgs-lib/lib");
    assert!(
        lib.join("default.nix").is_file(),
        "{lib} is missing: the evaluation tests need nixpkgs' lib from the steering repo's shared/"
    );
    lib
}

/// `tests/nixos-model/checks.nix` with `extra` modules (a Nix list).
fn eval_checks(extra: &str) -> Command {
    let mut c = nix("nix-instantiate");
    c.args(["--eval", "--strict", "--json", "--read-write-mode"])
        .arg(root().join("tests/nixos-model/checks.nix"))
        .arg("--arg")
        .arg("libPath")
        .arg(nixpkgs_lib())
        .args(["--arg", "extraModules", extra]);
    c
}

fn checks(extra: &str) -> Value {
    serde_json::from_str(&ok(&mut eval_checks(extra))).expect("checks.nix gives JSON")
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string"))
        .collect()
}

const CASES: [&str; 5] = [
    "systemd",
    "scripted",
    "netbootMinimal",
    "aarch64",
    "crossAarch64",
];

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn module_every_output_instantiates_with_the_arguments_the_options_say() {
    let c = checks("[ ]");
    for case in CASES {
        // The toplevel goes through the assertions, as in nixpkgs: an
        // assertion that needs the toplevel would recurse forever here.
        for (output, drv) in c[case]["drvPaths"].as_object().expect("drvPaths") {
            let drv = drv.as_str().expect("drvPath");
            assert!(drv.ends_with(".drv"), "{case}: {output} = {drv}");
        }
        // The toplevel is in the image.
        assert!(
            strs(&c[case]["closure"]).contains(&"nixos-system-26.05"),
            "{case}: {}",
            c[case]["closure"]
        );
        assert_eq!(
            c[case]["args"]["image"], c[case]["args"]["kexecTarball"],
            "{case}: system.build.image is the tarball"
        );
    }
    // Every mkkexec command line, store hashes hidden (what carries the
    // machine over has its own test).
    let mut c = c;
    for case in c.as_object_mut().expect("cases").values_mut() {
        if let Some(o) = case.as_object_mut() {
            o.remove("carry");
            o.remove("toplevelName");
        }
    }
    insta::with_settings!({filters => vec![(r"/nix/store/[0-9a-z]{32}-", "/nix/store/HASH-")]}, {
        insta::assert_snapshot!("module-checks", serde_json::to_string_pretty(&c).expect("json"));
    });
}

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn module_mounts_the_store_under_both_stage_1_kinds() {
    let c = checks("[ ]");
    let overlay = |case: &str| -> String {
        let fstab = strs(&c[case]["fstab"]);
        fstab
            .iter()
            .find(|l| l.contains(" overlay "))
            .unwrap_or_else(|| panic!("{case}: no overlay in {fstab:?}"))
            .to_string()
    };
    // systemd stage 1 mounts below /sysroot, and netboot.nix's overlay
    // submodule prefixes the directories (raw lowerdir= options do not).
    assert_eq!(
        overlay("systemd"),
        "overlay /sysroot/nix/store overlay x-initrd.mount,\
         x-systemd.requires-mounts-for=/sysroot/nix/.ro-store,\
         x-systemd.requires-mounts-for=/sysroot/nix/.rw-store/store,\
         x-systemd.requires-mounts-for=/sysroot/nix/.rw-store/work,\
         lowerdir=/sysroot/nix/.ro-store,\
         upperdir=/sysroot/nix/.rw-store/store,workdir=/sysroot/nix/.rw-store/work"
    );
    assert!(
        strs(&c["systemd"]["initrdServices"]).contains(&"rw-sysroot-nix-store"),
        "the service that creates upperdir and workdir: {}",
        c["systemd"]["initrdServices"]
    );
    // The scripted stage 1 adds /mnt-root itself at run time.
    assert_eq!(
        overlay("scripted"),
        "overlay /mnt-root/nix/store overlay x-initrd.mount,lowerdir=/nix/.ro-store,\
         upperdir=/nix/.rw-store/store,workdir=/nix/.rw-store/work"
    );
}

/// The mounts stage 1 makes in `case`, in order, as `where type what
/// options` (tests/nixos-model/stage-1-mounts.nix).
fn mounts(c: &Value, case: &str) -> Vec<String> {
    c[case]["mounts"]
        .as_array()
        .unwrap_or_else(|| panic!("{case}: no mounts"))
        .iter()
        .map(|m| {
            format!(
                "{} {} {} {}",
                m["where"].as_str().expect("where"),
                m["type"].as_str().expect("type"),
                m["what"].as_str().expect("what"),
                strs(&m["options"]).join(",")
            )
        })
        .collect()
}

// Modelled: nixpkgs' filesystems.nix, stage-1.nix/stage-1-init.sh and
// systemd/initrd.nix as tests/nixos-model/stage-1-mounts.nix follows them;
// a real NixOS stage 1 cannot be built or booted here.
#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn module_store_in_three_parts_mounts_every_part_before_the_overlay_in_both_stage_1_kinds() {
    let c = checks("[ ]");
    for (case, root, lower) in [
        (
            "partsSystemd",
            "/sysroot",
            "lowerdir=/sysroot/nix/.ro-store:/sysroot/nix/.ro-store-1:/sysroot/nix/.ro-store-2",
        ),
        (
            "partsScripted",
            "/mnt-root",
            "lowerdir=/mnt-root/nix/.ro-store:/mnt-root/nix/.ro-store-1:/mnt-root/nix/.ro-store-2",
        ),
    ] {
        assert!(c[case]["toplevelName"].is_string(), "{case}: assertions");
        let m = mounts(&c, case);
        let at = |prefix: &str| -> usize {
            m.iter()
                .position(|l| l.starts_with(&format!("{root}{prefix} ")))
                .unwrap_or_else(|| panic!("{case}: no {prefix} in {m:#?}"))
        };
        let overlay = at("/nix/store");
        for (i, part) in ["/nix/.ro-store", "/nix/.ro-store-1", "/nix/.ro-store-2"]
            .iter()
            .enumerate()
        {
            assert!(
                at(part) < overlay,
                "{case}: {part} after the overlay: {m:#?}"
            );
            // Each part as netboot.nix mounts the first (threads=multi: the
            // model's kernel is 6.12).
            let image = if i == 0 {
                "nix-store.squashfs".to_owned()
            } else {
                format!("nix-store-{i}.squashfs")
            };
            let x = if case == "partsSystemd" {
                "x-initrd.mount,"
            } else {
                ""
            };
            assert_eq!(
                m[at(part)],
                format!("{root}{part} squashfs ../{image} {x}loop,threads=multi"),
                "{case}"
            );
        }
        assert!(at("/nix/.rw-store") < overlay, "{case}: {m:#?}");
        assert_eq!(m.len(), 6, "{case}: {m:#?}");
        let options: Vec<&str> = m[overlay]
            .rsplit(' ')
            .next()
            .expect("options")
            .split(',')
            .collect();
        assert!(options.contains(&lower), "{case}: {}", m[overlay]);
        // The tree writes three images.
        let tree = strs(&c[case]["args"]["kexecTree"]);
        assert!(
            tree.windows(2).any(|w| w == ["--store-parts", "3"]),
            "{case}: {tree:?}"
        );
        // The ramdisk is the tree's initrd.gz (it holds every part).
        assert!(c[case]["args"]["netbootRamdisk"].is_null(), "{case}");
    }
    // The scripted stage 1 orders its mounts by depends (utils.fsBefore):
    // its /mnt-root lowerdirs do not name the parts' mount points.
    let deps = strs(&c["partsScripted"]["storeDepends"]);
    assert!(
        deps.contains(&"/nix/.ro-store-1") && deps.contains(&"/nix/.ro-store-2"),
        "{deps:?}"
    );
}

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn module_store_in_one_part_is_netboot_nix_layout_as_it_is() {
    let c = checks("[ ]");
    // Set to 1 explicitly (below the cases' own settings, which would
    // conflict with it).
    let one = checks("[ ({ lib, ... }: { nixosKexec.storeParts = lib.mkDefault 1; }) ]");
    assert_eq!(
        mounts(&c, "systemd"),
        [
            "/sysroot tmpfs tmpfs x-initrd.mount,mode=0755",
            "/sysroot/nix/.ro-store squashfs ../nix-store.squashfs x-initrd.mount,loop,threads=multi",
            "/sysroot/nix/.rw-store tmpfs tmpfs x-initrd.mount,mode=0755",
            "/sysroot/nix/store overlay overlay x-initrd.mount,\
             x-systemd.requires-mounts-for=/sysroot/nix/.ro-store,\
             x-systemd.requires-mounts-for=/sysroot/nix/.rw-store/store,\
             x-systemd.requires-mounts-for=/sysroot/nix/.rw-store/work,\
             lowerdir=/sysroot/nix/.ro-store,upperdir=/sysroot/nix/.rw-store/store,\
             workdir=/sysroot/nix/.rw-store/work",
        ]
    );
    assert_eq!(
        mounts(&c, "scripted"),
        [
            "/mnt-root/ tmpfs tmpfs mode=0755",
            "/mnt-root/nix/.ro-store squashfs ../nix-store.squashfs loop,threads=multi",
            "/mnt-root/nix/.rw-store tmpfs tmpfs mode=0755",
            "/mnt-root/nix/store overlay overlay lowerdir=/mnt-root/nix/.ro-store,\
             upperdir=/mnt-root/nix/.rw-store/store,workdir=/mnt-root/nix/.rw-store/work",
        ]
    );
    for case in ["systemd", "scripted"] {
        assert_eq!(c[case], one[case], "{case}: storeParts = 1 is the default");
        assert!(
            !strs(&c[case]["args"]["kexecTree"]).contains(&"--store-parts"),
            "{case}"
        );
        // The ramdisk is mkkexec's stage 1 + /nix-store.squashfs.
        assert_eq!(
            strs(&c[case]["args"]["netbootRamdisk"])[0],
            "initrd",
            "{case}"
        );
    }
}

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn module_carries_the_machine_under_both_stage_1_kinds() {
    let c = checks("[ ]");
    // systemd stage 1: a unit with /sysroot mounted, before the switch.
    let unit = &c["systemd"]["carry"]["initrdUnit"];
    assert!(
        unit["script"].as_str().expect("script").ends_with(
            "\ncarry_in /sysroot /nixos-kexec-carry rsa:/etc/ssh/ssh_host_rsa_key \
                 ed25519:/etc/ssh/ssh_host_ed25519_key\n"
        ),
        "{unit}"
    );
    assert_eq!(strs(&unit["after"]), ["initrd-fs.target"]);
    assert!(
        strs(&unit["before"]).contains(&"initrd-switch-root.target"),
        "{unit}"
    );
    assert_eq!(
        unit["unitConfig"]["ConditionPathIsDirectory"],
        "/nixos-kexec-carry"
    );
    assert_eq!(c["systemd"]["carry"]["postMountCommands"], "");
    // The scripted one: after its mounts, at $targetRoot.
    assert!(c["scripted"]["carry"]["initrdUnit"].is_null());
    let hook = c["scripted"]["carry"]["postMountCommands"]
        .as_str()
        .expect("hook");
    assert!(
        hook.ends_with(
            "\ncarry_in \"$targetRoot\" /nixos-kexec-carry rsa:/etc/ssh/ssh_host_rsa_key \
             ed25519:/etc/ssh/ssh_host_ed25519_key\n"
        ),
        "{hook}"
    );
    // What could not be placed reaches the console.
    assert_eq!(unit["serviceConfig"]["StandardError"], "journal+console");
    for case in CASES {
        // The assertions hold (systemd stage 1 refuses postMountCommands).
        assert!(c[case]["toplevelName"].is_string(), "{case}");
        let net = &c[case]["carry"]["network"];
        assert!(
            net["serviceConfig"]["ExecStart"].as_str().expect("ExecStart").ends_with(
                " network --state /var/lib/nixos-kexec/carried/network --output /run/systemd/network"
            ),
            "{case}: {net}"
        );
        // Before networkd and network-pre.target (the rest: the next test).
        let before = strs(&net["before"]);
        assert!(
            before.contains(&"network-pre.target") && before.contains(&"systemd-networkd.service"),
            "{case}: {net}"
        );
        assert_eq!(c[case]["carry"]["networkd"], true, "{case}");
        assert_eq!(c[case]["carry"]["sshd"], true, "{case}");
        // The static tools come with the tree, and so with the tarball.
        let tree = strs(&c[case]["args"]["kexecTree"]);
        assert!(
            tree.contains(&"--kexec") && tree.contains(&"--ip"),
            "{case}: {tree:?}"
        );
    }
    // Turned off, nothing of it is left.
    let off = checks("[ { nixosKexec.carry.enable = false; } ]");
    for case in CASES {
        assert!(off[case]["carry"]["initrdUnit"].is_null(), "{case}");
        assert!(off[case]["carry"]["network"].is_null(), "{case}");
        assert_eq!(off[case]["carry"]["postMountCommands"], "", "{case}");
        assert_eq!(off[case]["carry"]["networkd"], false, "{case}");
    }
}

/// The units systemd starts at boot in `case` (the model's graph from
/// multi-user.target: tests/nixos-model/systemd-units.nix).
fn boot_units<'a>(c: &'a Value, case: &str) -> Vec<&'a str> {
    strs(&c[case]["carry"]["bootUnits"])
}

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn module_network_unit_starts_at_boot_without_the_firewall() {
    // The model holds what breaks: network-pre.target is passive, the
    // firewall (firewall-iptables.nix) is what pulls it in.
    let on = checks("[ ]");
    assert!(boot_units(&on, "systemd").contains(&"firewall.service"));
    assert!(boot_units(&on, "systemd").contains(&"network-pre.target"));
    // What rescue and installer images set: no firewall to pull
    // network-pre.target in, and the carried network must still be written
    // before networkd starts.
    let off = checks("[ { networking.firewall.enable = false; } ]");
    for case in CASES {
        let units = boot_units(&off, case);
        assert!(!units.contains(&"firewall.service"), "{case}: {units:?}");
        assert!(
            units.contains(&"systemd-networkd.service")
                && units.contains(&"nixos-kexec-network.service"),
            "{case}: the carried network is never applied: {units:?}"
        );
        let net = &off[case]["carry"]["network"];
        let before = strs(&net["before"]);
        assert!(
            before.contains(&"network-pre.target") && before.contains(&"systemd-networkd.service"),
            "{case}: {net}"
        );
        // Started with networkd whenever networkd starts (a restart too).
        assert!(
            strs(&net["wantedBy"]).contains(&"systemd-networkd.service"),
            "{case}: {net}"
        );
    }
}

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn module_places_host_keys_where_sshd_reads_them_with_an_immutable_etc() {
    // The perlless profile's /etc: an overlay mounted read-only; sshd's
    // host keys then live elsewhere, and stage 1 must put them there.
    let c = checks(
        r#"[ {
          system.etc.overlay = { enable = true; mutable = false; };
          services.openssh.hostKeys = [ { type = "ed25519"; path = "/var/lib/ssh/ssh_host_ed25519_key"; } ];
        } ]"#,
    );
    let script = c["systemd"]["carry"]["initrdUnit"]["script"]
        .as_str()
        .expect("script");
    assert!(
        script.ends_with(
            "\ncarry_in /sysroot /nixos-kexec-carry ed25519:/var/lib/ssh/ssh_host_ed25519_key\n"
        ),
        "{script}"
    );
}

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn module_evaluates_where_the_scripted_stage_1_is_gone() {
    // nixpkgs 26.11 has no boot.initrd.postMountCommands: the module must
    // not define it (an undeclared option is an error even under mkIf false).
    let c = checks("[ ]");
    let case = &c["noScriptedStage1"];
    assert!(case["toplevelName"].is_string(), "{case}");
    assert!(case["carry"]["postMountCommands"].is_null(), "{case}");
    assert!(
        case["carry"]["initrdUnit"]["script"]
            .as_str()
            .is_some_and(|s| s.contains("\ncarry_in /sysroot ")),
        "{case}"
    );
    for (output, drv) in case["drvPaths"].as_object().expect("drvPaths") {
        assert!(
            drv.as_str().is_some_and(|d| d.ends_with(".drv")),
            "{output}"
        );
    }
}

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn module_ipxe_script_names_what_netboot_serves() {
    let c = checks("[ ]");
    for (case, kernel) in [
        ("systemd", "bzImage"),
        ("aarch64", "Image"),
        ("crossAarch64", "Image"),
    ] {
        let args = strs(&c[case]["args"]["netbootIpxeScript"]);
        let tail = &args[args.len() - 5..];
        assert_eq!(
            tail,
            ["--ipxe", "--kernel-name", kernel, "--initrd-name", "initrd"],
            "{case}"
        );
        // ... and the initrd it names is the ramdisk's <out>/initrd.
        let initrd = args[args
            .iter()
            .position(|a| *a == "--initrd")
            .expect("--initrd")
            + 1];
        assert!(initrd.ends_with("-netboot-ramdisk/initrd"), "{initrd}");
    }
    // Natively and cross-compiled on x86_64, the tarball is named for the
    // system it boots.
    for case in ["aarch64", "crossAarch64"] {
        assert_eq!(
            c[case]["imageFilePath"], "tarball/nixos-system-aarch64-linux.tar.gz",
            "{case}"
        );
    }
}

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn module_honours_netboot_options() {
    // netboot.squashfsCompression decides when nixosKexec.squashfs does not.
    let c = checks(r#"[ { netboot.squashfsCompression = "xz -Xdict-size 100%"; } ]"#);
    assert_eq!(
        strs(&c["systemd"]["args"]["squashfsStore"])[3..],
        ["--squashfs-compression", "xz"]
    );
    let c = checks(
        r#"[ { netboot.squashfsCompression = "xz -Xbcj x86"; nixosKexec.squashfs.compression = "gzip"; } ]"#,
    );
    assert_eq!(
        strs(&c["systemd"]["args"]["squashfsStore"])[3..],
        ["--squashfs-compression", "gzip"]
    );
    // netboot.storeContents adds to the image; the toplevel stays in it even
    // when the list is forced empty.
    let c = checks(
        r#"[ ({ lib, pkgs, ... }: { netboot.storeContents = lib.mkForce [ pkgs.rsync ]; }) ]"#,
    );
    assert_eq!(
        strs(&c["systemd"]["closure"]),
        ["nixos-system-26.05", "rsync"]
    );
}

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn module_passes_the_cache_only_when_set() {
    let has_cache = |c: &Value, output: &str| {
        let a = strs(&c["systemd"]["args"][output]);
        a.windows(2)
            .any(|w| w == ["--cache", "/var/cache/nixos-kexec"])
    };
    let cold = checks("[ ]");
    for output in ["squashfsStore", "kexecTree"] {
        assert!(
            !strs(&cold["systemd"]["args"][output]).contains(&"--cache"),
            "{output}: {}",
            cold["systemd"]["args"][output]
        );
    }
    let c = checks(r#"[ { nixosKexec.cacheDir = "/var/cache/nixos-kexec"; } ]"#);
    for output in ["squashfsStore", "kexecTree"] {
        let a = strs(&c["systemd"]["args"][output]);
        assert!(
            has_cache(&c, output) && !a.contains(&"--cache-max-bytes"),
            "{output}: {a:?}"
        );
    }
    let c = checks(
        r#"[ { nixosKexec.cacheDir = "/var/cache/nixos-kexec"; nixosKexec.cacheMaxBytes = 1073741824; } ]"#,
    );
    for output in ["squashfsStore", "kexecTree"] {
        let a = strs(&c["systemd"]["args"][output]);
        assert!(
            has_cache(&c, output)
                && a.windows(2)
                    .any(|w| w == ["--cache-max-bytes", "1073741824"]),
            "{output}: {a:?}"
        );
    }
    // Without a cache the bound is not passed (mkkexec would refuse it).
    let c = checks("[ { nixosKexec.cacheMaxBytes = 1073741824; } ]");
    for output in ["squashfsStore", "kexecTree"] {
        let a = strs(&c["systemd"]["args"][output]);
        assert!(!a.contains(&"--cache-max-bytes"), "{output}: {a:?}");
    }
}

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn module_refuses_a_squashfs_compression_mkkexec_does_not_write() {
    let e = fails(&mut eval_checks(
        r#"[ { netboot.squashfsCompression = "xz -Xdict-size 100% -Xbcj x86"; } ]"#,
    ));
    assert!(
        e.contains(
            "netboot.squashfsCompression = \"xz -Xdict-size 100% -Xbcj x86\" asks for `-Xbcj`, \
             which mkkexec does not write."
        ) && e.contains("Set nixosKexec.squashfs.compression"),
        "{e}"
    );
    assert_eq!(e.matches("asks for").count(), 1, "said once: {e}");
}

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn module_installer_tarball_is_the_tree_in_nixos_anywhere_layout() {
    let c = checks("[ ]");
    for (case, system) in [
        ("systemd", "x86_64-linux"),
        ("aarch64", "aarch64-linux"),
        ("crossAarch64", "aarch64-linux"),
    ] {
        // The same tree as the tarball, laid out as kexec/run, bzImage, …
        let args = strs(&c[case]["args"]["kexecInstallerTarball"]);
        let tree = strs(&c[case]["args"]["kexecTarball"])[2];
        assert_eq!(
            args,
            ["tarball", "--tree", tree, "--layout", "kexec-installer"],
            "{case}"
        );
        assert!(tree.ends_with("-kexec-tree"), "{case}: {tree}");
        // ... named as nixos-anywhere's --kexec tarballs are.
        let script = c[case]["installerTarballScript"].as_str().expect("script");
        assert!(
            script.contains(&format!(
                "--output \"${{outputs[out]}}/tarball/nixos-kexec-installer-{system}.tar.gz\""
            )),
            "{case}: {script}"
        );
    }
    // The seed's tarball stays as it was.
    assert_eq!(
        strs(&c["systemd"]["args"]["kexecTarball"]).len(),
        3,
        "{}",
        c["systemd"]["args"]["kexecTarball"]
    );
}

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn configuration_is_an_installer_nixos_anywhere_accepts() {
    // The flake's configuration.nix through the model of nixpkgs'
    // version.nix: what nixos-anywhere's facts read from /etc/os-release.
    let c = &checks("[ ]")["configuration"];
    let os_release = c["osRelease"].as_str().expect("os-release");
    let lines: Vec<&str> = os_release.lines().collect();
    assert!(
        lines.contains(&"ID=nixos") && lines.contains(&"VARIANT_ID=installer"),
        "{os_release}"
    );
    // What its later phases run on the installer.
    let packages = strs(&c["packages"]);
    for want in [
        "nixos-install-tools",
        "disko",
        "nixos-facter",
        "rsync",
        "jq",
    ] {
        assert!(packages.contains(&want), "{want}: {packages:?}");
    }
    assert_eq!(strs(&c["nixFeatures"]), ["nix-command", "flakes"]);
    // Root by key only.
    assert_eq!(c["settings"]["PermitRootLogin"], "prohibit-password");
    assert_eq!(c["settings"]["PasswordAuthentication"], false);
    assert_eq!(c["settings"]["KbdInteractiveAuthentication"], false);
    assert_eq!(c["carry"]["sshd"], true);
    // Its installer tarball instantiates.
    assert!(
        c["drvPaths"]["kexecInstallerTarball"]
            .as_str()
            .is_some_and(|d| d.ends_with("-nixos-kexec-installer.drv")),
        "{}",
        c["drvPaths"]
    );
}

/// A nixpkgs stand-in flake: nixpkgs' lib plus the model (see
/// tests/nixos-model/flake.nix).
fn standin(test: &str) -> Utf8PathBuf {
    let dir =
        Utf8PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("nixpkgs-standin-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    sh(&format!(
        "cp -r {lib} {dir}/lib && cp -r {model} {dir}/model && cp {model}/flake.nix {dir}/",
        lib = nixpkgs_lib(),
        model = root().join("tests/nixos-model"),
    ));
    dir
}

fn flake(standin: &Utf8PathBuf, args: &[&str]) -> Command {
    let mut c = nix("nix");
    c.args(args)
        .args(["--override-input", "nixpkgs"])
        .arg(format!("path:{standin}"))
        .arg("--no-write-lock-file");
    c
}

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn flake_shows_and_checks_with_a_modelled_nixpkgs() {
    let s = standin("check");
    let root = root();
    let show = ok(flake(&s, &["flake", "show"]).arg(&root));
    for want in [
        "nixosModules",
        "nixosConfigurations",
        "mkkexec",
        "tarball",
        "kexec-installer",
        "vm-kexec",
    ] {
        assert!(show.contains(want), "{want} missing from:\n{show}");
    }
    // Every output evaluates and every derivation instantiates, for both
    // systems: the NixOS configuration, packages, apps, checks, formatter.
    ok(flake(&s, &["flake", "check", "--no-build"]).arg(&root));
    let tarball = ok(flake(&s, &["eval", "--raw"])
        .arg(format!("{root}#packages.x86_64-linux.tarball.mkkexecArgs"))
        .args(["--apply", "toString"]));
    assert!(
        tarball.starts_with("tarball --tree /nix/store/"),
        "{tarball}"
    );
    let installer = ok(flake(&s, &["eval", "--raw"])
        .arg(format!("{root}#packages.x86_64-linux.kexec-installer.args"))
        .args(["--apply", "a: builtins.elemAt a 1"]));
    assert!(
        installer.contains(
            r#"--output "${outputs[out]}/tarball/nixos-kexec-installer-x86_64-linux.tar.gz""#
        ),
        "{installer}"
    );
    // The aarch64 tarball, cross-compiled on x86_64: named for aarch64.
    let cross = ok(flake(&s, &["eval", "--raw"])
        .arg(format!(
            "{root}#packages.x86_64-linux.tarball-aarch64-linux.args"
        ))
        .args(["--apply", "a: builtins.elemAt a 1"]));
    assert!(
        cross.contains(r#"--output "${outputs[out]}/tarball/nixos-system-aarch64-linux.tar.gz""#),
        "{cross}"
    );
}

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn flake_module_imports_once_under_both_names() {
    let s = standin("twice");
    let apply = format!(
        "ms: let lib = import {s}/model/lib.nix {{ libPath = {s}/lib; }}; \
         c = import {s}/model/eval.nix {{ inherit lib; modules = [ ms.default ms.nixos-kexec \
         {{ system.stateVersion = \"26.05\"; }} ]; }}; in c.config.system.build.kexecTree.drvPath"
    );
    let drv = ok(flake(&s, &["eval", "--impure", "--raw"])
        .arg(format!("{}#nixosModules", root()))
        .args(["--apply", &apply]));
    assert!(drv.ends_with("-kexec-tree.drv"), "{drv}");
}
