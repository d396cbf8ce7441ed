//! Real Nix (Debian's nix-bin, no nixpkgs): a real closure fed to mkkexec,
//! its registration loaded and verified by Nix itself, and the tree built
//! through the project's nixpkgs-free derivations (nix/kexec-tree.nix).

use std::process::Command;
use std::sync::OnceLock;

use camino::{Utf8Path, Utf8PathBuf};

use crate::common::*;

/// A Nix configuration for tests: no daemon, no substituters, sandboxed,
/// offline flake registry (see shared/TESTBENCH.md).
pub fn nix_conf_dir() -> &'static Utf8Path {
    static DIR: OnceLock<Utf8PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        require("nix-build", "nix-bin");
        let dir = Utf8PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nix-conf");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("registry.json"), r#"{"flakes":[],"version":2}"#).expect("write");
        std::fs::write(
            dir.join("nix.conf"),
            format!(
                "build-users-group =\nsubstituters =\nexperimental-features = nix-command flakes\n\
                 flake-registry = {dir}/registry.json\nsandbox = true\n\
                 extra-sandbox-paths = /bin /usr /lib /lib64\nsandbox-fallback = false\n"
            ),
        )
        .expect("write");
        dir
    })
}

pub fn nix(cmd: &str) -> Command {
    let mut c = Command::new(cmd);
    c.env("NIX_CONF_DIR", nix_conf_dir());
    c
}

pub fn fixture_nix() -> Utf8PathBuf {
    Utf8PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixture/default.nix")
}

/// `nix-build tests/fixture/default.nix -A attr` with `args` (`--arg` pairs
/// as Nix expressions); returns the output path.
pub fn build_fixture(attr: &str, args: &[(&str, String)]) -> Utf8PathBuf {
    let mut c = nix("nix-build");
    c.arg(fixture_nix()).args(["--no-out-link", "-A", attr]);
    c.args(["--arg", "mkkexec", env!("CARGO_BIN_EXE_mkkexec")]);
    for (k, v) in args {
        c.args(["--arg", k, v]);
    }
    let out = ok(&mut c);
    Utf8PathBuf::from(
        out.lines()
            .last()
            .expect("nix-build printed no path")
            .trim(),
    )
}

/// A stand-in kernel and stage 1 for builds that are not booted.
fn dummy_args() -> Vec<(&'static str, String)> {
    static DIR: OnceLock<Utf8PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = Utf8PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dummy-boot");
        std::fs::create_dir_all(&dir).expect("mkdir");
        stage1_gz(&dir);
        dir
    });
    vec![
        ("kernel", dir.join("stage1/init").to_string()),
        ("initrd", dir.join("stage1.gz").to_string()),
    ]
}

#[test]
#[ignore = "needs Nix with a writable store (scripts/test.sh runs it)"]
fn nix_closure_registration_loads_and_verifies_in_nix() {
    let (_t, dir) = tempdir();
    let json = build_fixture("closureJson", &dummy_args());
    let img = dir.join("store.img");
    ok(mkkexec()
        .args(["squashfs", "-q", "--squashfs-level", "3", "--closure"])
        .arg(&json)
        .arg("-o")
        .arg(&img));

    // Unpack the image as a chroot store and let Nix check every NAR hash.
    let store = dir.join("chroot/nix/store");
    std::fs::create_dir_all(store.parent().expect("parent")).expect("mkdir");
    ok(Command::new("unsquashfs")
        .args(["-no-progress", "-d"])
        .arg(&store)
        .arg(&img));
    let reg = std::fs::File::open(store.join("nix-path-registration"))
        .expect("registration in the image");
    ok(nix("nix-store")
        .arg("--store")
        .arg(dir.join("chroot"))
        .arg("--load-db")
        .stdin(reg));
    // Every NAR on disk hashes to what the registration says (exit status;
    // the tampering below shows the same command fails).
    ok(nix("nix-store")
        .arg("--store")
        .arg(dir.join("chroot"))
        .args(["--verify", "--check-contents"]));
    // Nix's database now holds the closure's hashes, path by path.
    let text = std::fs::read_to_string(store.join("nix-path-registration")).expect("read");
    let infos = mkkexec::nix::registration::parse(&text).expect("parse");
    for info in &infos {
        let hash = ok(nix("nix-store")
            .arg("--store")
            .arg(dir.join("chroot"))
            .args(["-q", "--hash"])
            .arg(info.path.to_absolute_path()));
        assert_eq!(hash.trim(), info.nar_hash.to_string(), "{}", info.path);
    }
    let toplevel = build_fixture("toplevel", &dummy_args());
    let listed = ok(nix("nix-store")
        .arg("--store")
        .arg(dir.join("chroot"))
        .args(["-qR"])
        .arg(&toplevel));
    assert_eq!(listed.lines().count(), 4, "{listed}");

    // A tampered file is caught by the same check, so the check can fail.
    let data = std::fs::read_dir(&store)
        .expect("ls")
        .map(|e| e.expect("e").path())
        .find(|p| p.to_string_lossy().ends_with("-data"))
        .expect("data path");
    sh(&format!(
        "chmod -R u+w {0} && echo tampered >> {0}/share/dup1",
        data.display()
    ));
    let out = nix("nix-store")
        .arg("--store")
        .arg(dir.join("chroot"))
        .args(["--verify", "--check-contents"])
        .output()
        .expect("spawn");
    assert!(
        !out.status.success(),
        "nix-store --verify missed a tampered file"
    );
}

#[test]
#[ignore = "needs Nix with a writable store (scripts/test.sh runs it)"]
fn nix_builds_tree_and_tarball_without_nixpkgs() {
    let args = dummy_args();
    let tree = build_fixture("tree", &args);
    for (f, _) in mkkexec::boot::tree::FILES {
        assert!(tree.join(f).is_file(), "{tree}/{f} missing");
    }
    let toplevel = build_fixture("toplevel", &args);
    let script = std::fs::read_to_string(tree.join("kexec-boot")).expect("read");
    assert!(
        script.contains(&format!("init='{toplevel}/init'")),
        "{script}"
    );
    // The module's separate steps give the same bytes as the one-step tree.
    let ramdisk = build_fixture("netbootRamdisk", &args);
    assert!(
        std::fs::read(ramdisk.join("initrd")).expect("read")
            == std::fs::read(tree.join("initrd.gz")).expect("read")
    );
    let kexec_script = build_fixture("kexecScript", &args);
    assert_eq!(
        std::fs::read_to_string(&kexec_script).expect("read"),
        script
    );
    let ipxe = build_fixture("ipxeScript", &args);
    assert_eq!(
        std::fs::read(ipxe.join("netboot.ipxe")).expect("read"),
        std::fs::read(tree.join("netboot.ipxe")).expect("read")
    );
    let tarball = build_fixture("tarball", &args);
    let system = ok(nix("nix-instantiate").args(["--eval", "-E", "builtins.currentSystem"]));
    let name = format!(
        "tarball/nixos-system-{}.tar.gz",
        system.trim().trim_matches('"')
    );
    assert!(tarball.join(&name).is_file(), "{tarball}/{name} missing");
}

#[test]
#[ignore = "needs Nix with a writable store (scripts/test.sh runs it)"]
fn nix_output_does_not_depend_on_the_block_cache() {
    let (_t, dir) = tempdir();
    let cache = dir.join("cache");
    std::fs::create_dir(&cache).expect("mkdir");
    let mut args = dummy_args();
    args.push(("squashfsCache", format!("\"{cache}\"")));
    // `nix-build --check` builds again and fails if the output differs.
    let build = |check: bool| {
        let mut c = nix("nix-build");
        c.arg(fixture_nix())
            .args(["--no-out-link", "-A", "squashfs"]);
        c.args(["--arg", "mkkexec", env!("CARGO_BIN_EXE_mkkexec")]);
        c.args(["--option", "extra-sandbox-paths", cache.as_str()]);
        if check {
            c.arg("--check");
        }
        for (k, v) in &args {
            c.args(["--arg", k, v]);
        }
        ok(&mut c)
    };
    let count = || {
        std::fs::read_dir(&cache)
            .expect("cache")
            .map(|s| {
                std::fs::read_dir(s.expect("sub").path())
                    .expect("sub")
                    .count()
            })
            .sum::<usize>()
    };
    // Empty cache, then a warm one.
    build(false);
    let n = count();
    assert!(n > 0, "the sandboxed build wrote no cache entry");
    build(true);
    // Damaged: every entry cut short.
    sh(&format!("find {cache} -type f -exec truncate -s 10 {{}} +"));
    build(true);
    assert_eq!(count(), n);
    // The check can fail: entries that lie (well-formed, "stored as is")
    // change the image, and `--check` says so.
    let mut lie = b"mkkexec-block-1\0\x01".to_vec();
    lie.extend(0u64.to_le_bytes());
    lie.extend(<sha2::Sha256 as sha2::Digest>::digest(b""));
    for sub in std::fs::read_dir(&cache).expect("cache") {
        for e in std::fs::read_dir(sub.expect("sub").path()).expect("sub") {
            std::fs::write(e.expect("entry").path(), &lie).expect("write");
        }
    }
    let mut c = nix("nix-build");
    c.arg(fixture_nix())
        .args(["--no-out-link", "--check", "-A", "squashfs"]);
    c.args(["--arg", "mkkexec", env!("CARGO_BIN_EXE_mkkexec")]);
    c.args(["--option", "extra-sandbox-paths", cache.as_str()]);
    for (k, v) in &args {
        c.args(["--arg", k, v]);
    }
    let e = fails(&mut c);
    assert!(e.contains("may not be deterministic"), "{e}");
}

#[test]
#[ignore = "needs Nix (scripts/test.sh runs it)"]
fn nix_files_parse() {
    let root = Utf8PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let files = sh(&format!(
        "cd {root} && git ls-files -co --exclude-standard '*.nix'"
    ));
    let files: Vec<&str> = files.lines().collect();
    for f in [
        "flake.nix",
        "nix/module.nix",
        "nix/package.nix",
        "nix/kexec-tree.nix",
    ] {
        assert!(files.contains(&f), "{f} not found in {files:?}");
    }
    for f in files {
        ok(nix("nix-instantiate").arg("--parse").arg(root.join(f)));
    }
}

/// The NAR hashes Nix registered are checked while packing: the closure Nix
/// built packs from a copy of its store paths; the same copy changed after
/// registration (a file's bytes, a symlink's target, an executable bit) is
/// refused by `squashfs` and `tree`, naming the path and both hashes, and
/// leaves no output.
#[test]
#[ignore = "needs Nix with a writable store (scripts/test.sh runs it)"]
fn nix_store_changed_after_registration_is_refused() {
    let (_t, dir) = tempdir();
    let args = dummy_args();
    let json = build_fixture("closureJson", &args);
    let toplevel = build_fixture("toplevel", &args);
    let text = std::fs::read_to_string(&json).expect("read");
    let attrs: serde_json::Value = serde_json::from_str(&text).expect("json");
    let infos = attrs["closure"].as_array().expect("closure list");
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("nix/store")).expect("mkdir");
    for i in infos {
        let p = i["path"].as_str().expect("path");
        ok(Command::new("cp")
            .args(["-a", p])
            .arg(root.join("nix/store")));
    }
    let (kernel, initrd) = (&args[0].1, &args[1].1);
    let squashfs = |out: &Utf8Path| {
        let mut c = mkkexec();
        c.args(["squashfs", "-q", "--squashfs-level", "3", "--closure"])
            .arg(&json)
            .arg("--root")
            .arg(&root)
            .arg("-o")
            .arg(out);
        c
    };
    let tree = |out: &Utf8Path| {
        let mut c = mkkexec();
        c.args(["tree", "-q", "--squashfs-level", "3", "--closure"])
            .arg(&json)
            .arg("--root")
            .arg(&root)
            .args(["--toplevel", toplevel.as_str(), "--kernel", kernel])
            .args(["--prepend-initrd", initrd])
            .arg("--output")
            .arg(out);
        c
    };
    // Unchanged: Nix's hashes are the ones mkkexec computes.
    ok(&mut squashfs(&dir.join("ok.img")));
    ok(&mut tree(&dir.join("ok-tree")));

    let data = infos
        .iter()
        .map(|i| i["path"].as_str().expect("path"))
        .find(|p| p.ends_with("-data"))
        .expect("data path");
    let on_disk = root.join(data.trim_start_matches('/'));
    let registered = infos
        .iter()
        .find(|i| i["path"] == data)
        .and_then(|i| i["narHash"].as_str())
        .expect("narHash")
        .to_owned();
    sh(&format!("chmod -R u+w {on_disk}"));
    let dup1 = on_disk.join("share/dup1");
    let original = std::fs::read(&dup1).expect("read");
    for (what, change, undo) in [
        (
            "a file's bytes",
            format!("printf X >> {dup1}"),
            format!("chmod u+w {dup1}"),
        ),
        (
            "an executable bit",
            format!("chmod +x {dup1}"),
            String::new(),
        ),
        (
            "a symlink's target",
            format!("ln -sfn /nonexistent/dangline {on_disk}/share/dangling"),
            format!("ln -sfn /nonexistent/dangling {on_disk}/share/dangling"),
        ),
    ] {
        sh(&change);
        for (cmd, out) in [
            (squashfs(&dir.join("bad.img")), dir.join("bad.img")),
            (tree(&dir.join("bad-tree")), dir.join("bad-tree")),
        ] {
            let mut cmd = cmd;
            let e = fails(&mut cmd);
            assert!(
                e.contains(&format!("{data}: its contents hash to sha256:")),
                "{what}: {e}"
            );
            // Both hashes, each in the closure's notation (the JSON's).
            assert!(e.contains(&format!("says {registered}")), "{what}: {e}");
            assert!(e.contains("repair the store"), "{what}: {e}");
            assert!(!out.exists(), "{what}: {out} left behind");
        }
        sh(&undo);
        std::fs::write(&dup1, &original).expect("restore");
        sh(&format!("chmod 444 {dup1}"));
    }
    // Put back, it packs again.
    ok(&mut squashfs(&dir.join("again.img")));
}
