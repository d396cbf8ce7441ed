//! `mkkexec tree` and `mkkexec tarball`: the layout of nixpkgs' kexecTree,
//! reproducible, and the tarball's entry point running the tree's script.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use camino::Utf8Path;

use crate::common::*;

fn build_tree(f: &Fixture, dir: &Utf8Path, out: &Utf8Path) {
    build_tree_with(f, dir, out, &[]);
}

fn build_tree_with(f: &Fixture, dir: &Utf8Path, out: &Utf8Path, extra: &[&str]) {
    let kernel = dir.join("vmlinuz");
    let s1 = dir.join("stage1.gz");
    if !s1.exists() {
        std::fs::write(&kernel, "not really a kernel").expect("write");
        stage1_gz(dir);
    }
    ok(mkkexec()
        .args(["tree", "-q", "--closure"])
        .arg(&f.registration)
        .arg("--root")
        .arg(&f.root)
        .args(["--toplevel", &f.toplevel, "--kernel"])
        .arg(&kernel)
        .arg("--prepend-initrd")
        .arg(&s1)
        .args([
            "--kernel-param",
            "console=ttyS0",
            "--kernel-param",
            "loglevel=4",
            "--squashfs-level",
            "3",
        ])
        .args(extra)
        .arg("--output")
        .arg(out));
}

#[test]
fn tree_with_a_cache_is_the_tree_without() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    build_tree(&f, &dir, &dir.join("cold"));
    let want = std::fs::read(dir.join("cold/initrd.gz")).expect("cold");
    let cache = dir.join("cache");
    for (i, jobs) in ["0", "1", "3"].into_iter().enumerate() {
        let out = dir.join(format!("t{i}"));
        build_tree_with(&f, &dir, &out, &["--cache", cache.as_str(), "-j", jobs]);
        assert!(
            std::fs::read(out.join("initrd.gz")).expect("initrd") == want,
            "tree {i} (-j {jobs}) with the cache differs"
        );
    }
    assert!(std::fs::read_dir(&cache).expect("cache").count() > 0);
}

/// The names in `dir`, sorted.
fn sorted_names(dir: &Utf8Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("e").file_name().into_string().expect("utf8"))
        .collect();
    names.sort();
    names
}

fn mode(p: &Utf8Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

#[test]
fn tree_layout_contents_and_reproducibility() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let out = dir.join("tree");
    build_tree(&f, &dir, &out);
    let names = sorted_names(&out);
    assert_eq!(
        names,
        ["bin", "bzImage", "initrd.gz", "kexec-boot", "netboot.ipxe"]
    );
    assert_eq!(mode(&out.join("kexec-boot")), 0o755);
    assert_eq!(mode(&out.join("bzImage")), 0o644);
    assert_eq!(
        std::fs::read(out.join("bzImage")).expect("read"),
        b"not really a kernel"
    );

    let script = std::fs::read_to_string(out.join("kexec-boot")).expect("read");
    insta::with_settings!({filters => vec![
        (r"/nix/store/[0-9a-z]{32}-", "/nix/store/HASH-"),
        (r"(initrd|unpacked)_bytes=\d+", "${1}_bytes=N"),
        (r"initrd_sha256='[0-9a-f]{64}'", "initrd_sha256='SUM'"),
    ]}, {
        insta::assert_snapshot!("tree-kexec-boot", script);
        insta::assert_snapshot!("tree-netboot.ipxe", std::fs::read_to_string(out.join("netboot.ipxe")).expect("read"));
    });

    // kexec-boot checks the files beside it: their sizes and sums as written.
    for (file, var) in [("bzImage", "kernel"), ("initrd.gz", "initrd")] {
        let (bytes, sum) = mkkexec::boot::script::file_sum(&out.join(file)).expect("sum");
        assert!(
            script.contains(&format!("\n{var}_bytes={bytes}\n"))
                && script.contains(&format!("\n{var}_sha256='{sum}'\n")),
            "{file}"
        );
    }

    // initrd.gz: the stage 1 as is, then an uncompressed cpio holding the
    // squashfs (the default: the squashfs is compressed already).
    let inspect = ok(mkkexec().arg("inspect").arg(out.join("initrd.gz")));
    let members: Vec<&str> = inspect
        .lines()
        .filter(|l| l.starts_with("member"))
        .collect();
    assert_eq!(members.len(), 2, "{inspect}");
    assert!(
        members[0].contains("gzip cpio") && members[1].contains("none (cpio) cpio, 1 entries"),
        "{inspect}"
    );
    assert!(inspect.contains(" nix-store.squashfs"), "{inspect}");
    let s1 = std::fs::read(dir.join("stage1.gz")).expect("read");
    let initrd = std::fs::read(out.join("initrd.gz")).expect("read");
    assert_eq!(&initrd[..s1.len()], &s1[..]);

    // The squashfs inside is the one `mkkexec squashfs` makes.
    let x = dir.join("x");
    extract_store(&dir, &out, &x);
    let alone = dir.join("alone.img");
    f.squashfs(&alone, 3);
    assert!(
        std::fs::read(x.join("nix-store.squashfs")).expect("read")
            == std::fs::read(&alone).expect("read")
    );

    // Built again over the old tree: the same bytes.
    let names: Vec<&str> = mkkexec::boot::tree::FILES.iter().map(|f| f.0).collect();
    let before: Vec<_> = names
        .iter()
        .map(|n| std::fs::read(out.join(n)).expect("read"))
        .collect();
    build_tree(&f, &dir, &out);
    let after: Vec<_> = names
        .iter()
        .map(|n| std::fs::read(out.join(n)).expect("read"))
        .collect();
    assert!(before == after, "a rebuild changed the tree");
}

#[test]
fn tree_errors_name_the_problem() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    // Starts like a newc cpio: enough for the checks before the build.
    let file = dir.join("some-file");
    std::fs::write(&file, "070701").expect("write");
    let base = |toplevel: &str, out: &Utf8Path| {
        let mut c = mkkexec();
        c.args(["tree", "--closure"])
            .arg(&f.registration)
            .arg("--root")
            .arg(&f.root)
            .args(["--toplevel", toplevel, "--kernel"])
            .arg(&file)
            .arg("--output")
            .arg(out);
        c
    };
    let other = format!("/nix/store/{}", base_name_not_in_closure());
    let e = fails(
        base(&other, &dir.join("t"))
            .arg("--prepend-initrd")
            .arg(&file),
    );
    assert!(e.contains("is not in the closure"), "{e}");
    let e = fails(&mut base(&f.toplevel, &dir.join("t")));
    assert!(e.contains("--prepend-initrd is missing"), "{e}");
    let garbage = dir.join("garbage");
    std::fs::write(&garbage, "x").expect("write");
    let e = fails(
        base(&f.toplevel, &dir.join("t"))
            .arg("--prepend-initrd")
            .arg(&garbage),
    );
    assert!(
        e.contains(&format!("--prepend-initrd: {garbage} is not an initrd")),
        "{e}"
    );
    std::fs::remove_file(&garbage).expect("rm");
    let e = fails(base(&f.toplevel, &dir).arg("--prepend-initrd").arg(&file));
    assert!(e.contains("exists and is not a kexec tree"), "{e}");

    // A directory that merely holds a file named kexec-boot is not a tree:
    // it is refused, and nothing in it is touched.
    let mine = dir.join("mine");
    std::fs::create_dir_all(mine.join("bin")).expect("mkdir");
    for f in ["kexec-boot", "bzImage", "notes.txt", "bin/nixos-kexec"] {
        std::fs::write(mine.join(f), "precious").expect("write");
    }
    let e = fails(base(&f.toplevel, &mine).arg("--prepend-initrd").arg(&file));
    assert!(
        e.contains(&format!(
            "{mine} exists and is not a kexec tree ({mine}/notes.txt"
        )),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).expect("kept"),
        "precious"
    );
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        ["mine", "registration", "root", "some-file"],
        "a temporary was left"
    );
}

/// A kernel parameter iPXE would expand: the tree has no netboot.ipxe and
/// says why, and the tarball packs that tree as it is.
#[test]
fn a_tree_without_netboot_ipxe_is_packed() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let kernel = dir.join("vmlinuz");
    std::fs::write(&kernel, "not really a kernel").expect("write");
    let s1 = stage1_gz(&dir);
    let tree = dir.join("tree");
    let out = mkkexec()
        .args(["tree", "-q", "--squashfs-level", "1", "--closure"])
        .arg(&f.registration)
        .arg("--root")
        .arg(&f.root)
        .args(["--toplevel", &f.toplevel, "--kernel"])
        .arg(&kernel)
        .arg("--prepend-initrd")
        .arg(&s1)
        .args(["--kernel-param", "console=ttyS0", "--kernel-param", "x=$y"])
        .arg("--output")
        .arg(&tree)
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).replace(dir.as_str(), "[DIR]");
    insta::assert_snapshot!("tree-without-netboot-ipxe", stderr);
    assert!(!tree.join("netboot.ipxe").exists());
    let tarball = dir.join("t.tar.gz");
    ok(mkkexec()
        .args(["tarball", "--tree"])
        .arg(&tree)
        .arg("-o")
        .arg(&tarball));
    let listing = sh(&format!("tar -tzf {tarball}"));
    assert_eq!(
        listing.lines().collect::<Vec<_>>(),
        [
            "nixos-kexec/",
            "nixos-kexec/bin/",
            "nixos-kexec/bin/nixos-kexec",
            "nixos-kexec/bzImage",
            "nixos-kexec/initrd.gz",
            "nixos-kexec/kexec-boot",
        ]
    );
    // Any other file missing is still a broken tree.
    std::fs::remove_file(tree.join("initrd.gz")).expect("rm");
    let e = fails(
        mkkexec()
            .args(["tarball", "--tree"])
            .arg(&tree)
            .arg("-o")
            .arg(&tarball),
    );
    assert_eq!(
        e.replace(dir.as_str(), "[DIR]"),
        "mkkexec: error: [DIR]/tree is not a kexec tree: initrd.gz is missing \
         (make one with `mkkexec tree`)\n"
    );
}

/// Every output is readable by others (an HTTP server serving a tree runs
/// as another user): 0644 files, 0755 scripts and directories, whatever the
/// temporary file's 0600 was.
#[test]
fn outputs_have_the_modes_a_user_expects() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let tree = dir.join("tree");
    build_tree(&f, &dir, &tree);
    let squashfs = dir.join("store.squashfs");
    f.squashfs(&squashfs, 1);
    let initrd = dir.join("initrd.zst");
    ok(mkkexec()
        .args(["initrd", "-q", "--file"])
        .arg(format!("{squashfs}:/nix-store.squashfs"))
        .arg("-o")
        .arg(&initrd));
    let (script, ipxe) = (dir.join("kexec-boot"), dir.join("netboot.ipxe"));
    let kernel = tree.join("bzImage");
    for (out, extra) in [
        (&script, vec!["--kernel", kernel.as_str()]),
        (&ipxe, vec!["--ipxe"]),
    ] {
        ok(mkkexec()
            .args(["script", "--toplevel", &f.toplevel, "--initrd"])
            .arg(&initrd)
            .args(extra)
            .arg("-o")
            .arg(out));
    }
    let tarball = dir.join("tree.tar.gz");
    ok(mkkexec()
        .args(["tarball", "--tree"])
        .arg(&tree)
        .arg("-o")
        .arg(&tarball));
    let got: Vec<(String, u32)> = [
        &squashfs,
        &initrd,
        &script,
        &ipxe,
        &tarball,
        &tree,
        &tree.join("bin"),
        &tree.join("bin/nixos-kexec"),
        &tree.join("bzImage"),
        &tree.join("initrd.gz"),
        &tree.join("kexec-boot"),
        &tree.join("netboot.ipxe"),
    ]
    .iter()
    .map(|p| (p.strip_prefix(&dir).expect("in dir").to_string(), mode(p)))
    .collect();
    let want: Vec<(String, u32)> = [
        ("store.squashfs", 0o644),
        ("initrd.zst", 0o644),
        ("kexec-boot", 0o755),
        ("netboot.ipxe", 0o644),
        ("tree.tar.gz", 0o644),
        ("tree", 0o755),
        ("tree/bin", 0o755),
        ("tree/bin/nixos-kexec", 0o755),
        ("tree/bzImage", 0o644),
        ("tree/initrd.gz", 0o644),
        ("tree/kexec-boot", 0o755),
        ("tree/netboot.ipxe", 0o644),
    ]
    .iter()
    .map(|(p, m)| (p.to_string(), *m))
    .collect();
    assert_eq!(got, want);
}

fn base_name_not_in_closure() -> String {
    crate::common::base("elsewhere")
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn tarball_unpacks_to_a_working_nixos_kexec() {
    require("tar", "tar");
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let tree = dir.join("tree");
    build_tree(&f, &dir, &tree);
    let kexec = dir.join("kexec-static");
    recording_kexec(&kexec);
    let tarball = |name: &str| {
        let t = dir.join(name);
        ok(mkkexec()
            .args(["tarball", "--tree"])
            .arg(&tree)
            .arg("--kexec")
            .arg(&kexec)
            .arg("-o")
            .arg(&t));
        t
    };
    let (a, b) = (tarball("a.tar.gz"), tarball("b.tar.gz"));
    assert!(
        std::fs::read(&a).expect("a") == std::fs::read(&b).expect("b"),
        "tarball not reproducible"
    );

    let listing = sh(&format!(
        "tar -tvzf {a} --numeric-owner | awk '{{print $1, $2, $6}}'"
    ));
    insta::assert_snapshot!("tarball-listing", listing);

    let slash = dir.join("slash");
    std::fs::create_dir(&slash).expect("mkdir");
    sh(&format!("tar -xzf {a} -C {slash}"));
    require("dash", "dash");
    // An empty host: nothing to carry but warnings.
    let host = dir.join("host");
    std::fs::create_dir(&host).expect("mkdir");
    ok(Command::new("dash")
        .arg(slash.join("nixos-kexec/bin/nixos-kexec"))
        .arg("--no-detach")
        .env("NIXOS_KEXEC_CARRY_FROM", &host)
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin"));
    let log = std::fs::read_to_string(slash.join("nixos-kexec/kexec.log"))
        .expect("bundled kexec not used");
    let d = slash
        .join("nixos-kexec/bin/..")
        .canonicalize_utf8()
        .expect("canon");
    // The unpacked tarball's initrd.gz may be written: the carried files
    // are appended in place and cut off after loading.
    assert!(
        log.starts_with(&format!(
            "--kexec-file-syscall\n--load\n{d}/bzImage\n--initrd={d}/initrd.gz\n"
        )),
        "{log}"
    );
    assert!(
        std::fs::read(d.join("initrd.gz")).expect("read")
            == std::fs::read(tree.join("initrd.gz")).expect("read"),
        "initrd.gz not cut back"
    );
    assert!(log.ends_with("loglevel=4\n-e\n"), "{log}");
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn installer_tarball_runs_as_nixos_anywhere_runs_it() {
    require("tar", "tar");
    require("setsid", "util-linux");
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let tree = dir.join("tree");
    build_tree(&f, &dir, &tree);
    let kexec = dir.join("kexec-static");
    recording_kexec(&kexec);
    let tarball = |name: &str| {
        let t = dir.join(name);
        ok(mkkexec()
            .args(["tarball", "--layout", "kexec-installer", "--tree"])
            .arg(&tree)
            .arg("--kexec")
            .arg(&kexec)
            .arg("-o")
            .arg(&t));
        t
    };
    let (a, b) = (tarball("a.tar.gz"), tarball("b.tar.gz"));
    assert!(
        std::fs::read(&a).expect("a") == std::fs::read(&b).expect("b"),
        "tarball not reproducible"
    );
    let listing = sh(&format!(
        "tar -tvzf {a} --numeric-owner | awk '{{print $1, $2, $6}}'"
    ));
    insta::assert_snapshot!("installer-tarball-listing", listing);

    // nixos-anywhere's steps on the target, with HOME a user's home: the
    // tarball in $HOME/kexec/kexec-tarball.tar.gz, unpacked there, run in a
    // new session with TMPDIR=$HOME/kexec, the output searched for its phrase.
    let home = dir.join("home/debian");
    std::fs::create_dir_all(home.join("kexec")).expect("mkdir");
    std::fs::copy(&a, home.join("kexec/kexec-tarball.tar.gz")).expect("copy");
    let host = dir.join("host");
    std::fs::create_dir(&host).expect("mkdir");
    let out = Command::new("sh")
        .arg("-c")
        .arg(
            "set -eu; cd \"$HOME/kexec\"; \
             cat \"$HOME/kexec/kexec-tarball.tar.gz\" | tar -xv --gzip -C \"$HOME/kexec\"; \
             TMPDIR=\"$HOME/kexec\" setsid --wait dash \"$HOME/kexec/kexec/run\" --kexec-extra-flags '--no-sync'",
        )
        .env("HOME", &home)
        .env("NIXOS_KEXEC_CARRY_FROM", &host)
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .output()
        .expect("spawn");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("machine will boot into nixos"), "{said}");
    // The bundled kexec beside run loaded the kernel beside it, with the
    // extra flag, and is started after the script returned.
    let run_dir = home.join("kexec/kexec").canonicalize_utf8().expect("canon");
    let log = || std::fs::read_to_string(run_dir.join("kexec.log")).unwrap_or_default();
    assert!(
        log().starts_with(&format!(
            "--kexec-file-syscall\n--load\n{run_dir}/bzImage\n--initrd="
        )) && log().contains("\n--no-sync\n"),
        "{}",
        log()
    );
    let start = std::time::Instant::now();
    while !log().ends_with("\n-e\n") {
        // Only against a hang.
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "never started: {}",
            log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The fixture's tree with its store split by the test-only limit.
fn build_split_tree(f: &Fixture, dir: &Utf8Path, out: &Utf8Path, limit: u64) -> String {
    build_parted_tree(f, dir, out, limit, &["--split-store"])
}

/// `mkkexec tree` of the fixture with the test-only limit and `parts`
/// (--split-store, --store-parts N, or nothing), writing `out`.
fn parted_tree_cmd(
    f: &Fixture,
    dir: &Utf8Path,
    out: &Utf8Path,
    limit: u64,
    parts: &[&str],
) -> Command {
    let kernel = dir.join("vmlinuz");
    let s1 = dir.join("stage1.gz");
    if !s1.exists() {
        std::fs::write(&kernel, "not really a kernel").expect("write");
        stage1_gz(dir);
    }
    let mut c = mkkexec();
    c.args(["tree", "--closure"])
        .arg(&f.registration)
        .arg("--root")
        .arg(&f.root)
        .args(["--toplevel", &f.toplevel, "--kernel"])
        .arg(&kernel)
        .arg("--prepend-initrd")
        .arg(&s1)
        .args(["--squashfs-level", "3"])
        .args(parts)
        .arg("--test-part-limit")
        .arg(limit.to_string())
        .arg("--output")
        .arg(out);
    c
}

/// [`parted_tree_cmd`], which must succeed; its stderr.
fn build_parted_tree(
    f: &Fixture,
    dir: &Utf8Path,
    out: &Utf8Path,
    limit: u64,
    parts: &[&str],
) -> String {
    let o = parted_tree_cmd(f, dir, out, limit, parts)
        .output()
        .expect("run mkkexec");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    err
}

/// The files of the cpio after the stage 1 in `tree`'s initrd, extracted
/// into `x`.
fn extract_store(dir: &Utf8Path, tree: &Utf8Path, x: &Utf8Path) {
    let s1 = std::fs::read(dir.join("stage1.gz")).expect("read");
    let initrd = std::fs::read(tree.join("initrd.gz")).expect("read");
    let start = s1.len().div_ceil(4) * 4;
    std::fs::create_dir(x).expect("mkdir");
    std::fs::write(dir.join("tail"), &initrd[start..]).expect("write");
    sh(&format!("cd {x} && cpio -id --quiet < {dir}/tail"));
}

/// The fixture with two more large store paths, so that a limit just above
/// its largest path (`data`, 21 MB as a NAR) keeps the three apart.
fn three_part_fixture(dir: &Utf8Path) -> Fixture {
    let mut f = fixture(dir);
    f.add_file_path("big-a", &noise(15_000_000, 7));
    f.add_file_path("big-b", &noise(15_000_000, 8));
    f
}

/// Three parts: no two of the three large paths fit one 22 MB image.
const THREE_PART_LIMIT: u64 = 22_000_000;

#[test]
fn tree_splits_a_store_past_the_limit_into_parts_deterministically() {
    let (_t, dir) = tempdir();
    let f = three_part_fixture(&dir);
    let out = dir.join("tree");
    let err = build_split_tree(&f, &dir, &out, THREE_PART_LIMIT);
    assert!(
        err.contains("the store is split into 3 squashfs images"),
        "{err}"
    );
    let x = dir.join("x");
    extract_store(&dir, &out, &x);
    let names = sorted_names(&x);
    assert_eq!(
        names,
        [
            "nix-store-1.squashfs",
            "nix-store-2.squashfs",
            "nix-store.squashfs"
        ]
    );
    // Each image is within the limit its bound promised.
    for n in &names {
        let size = std::fs::metadata(x.join(n)).expect("stat").len();
        assert!(size <= THREE_PART_LIMIT, "{n}: {size} bytes");
    }

    // Every store path in exactly one part, the registration in the first,
    // and together the listing of the store as one image.
    let parts: Vec<String> = [
        "nix-store.squashfs",
        "nix-store-1.squashfs",
        "nix-store-2.squashfs",
    ]
    .iter()
    .map(|n| listing(&x.join(n)))
    .collect();
    let top = |l: &str| -> Vec<String> {
        l.lines()
            .filter_map(|l| l.split_once(" R/").map(|(_, n)| n.to_owned()))
            // A symlink's line names its target after " -> ".
            .map(|n| n.split(" -> ").next().unwrap_or_default().to_owned())
            .filter(|n| !n.contains('/'))
            .collect()
    };
    assert!(top(&parts[0]).contains(&"nix-path-registration".to_owned()));
    assert!(!top(&parts[1]).contains(&"nix-path-registration".to_owned()));
    assert!(!top(&parts[2]).contains(&"nix-path-registration".to_owned()));
    let mut tops: Vec<String> = parts.iter().flat_map(|l| top(l)).collect();
    tops.sort();
    let mut want: Vec<String> = f.paths.clone();
    want.push("nix-path-registration".into());
    want.sort();
    assert_eq!(tops, want);
    for p in &parts {
        assert!(!top(p).is_empty(), "an empty part");
    }
    let alone = dir.join("alone.img");
    f.squashfs(&alone, 3);
    let mut union: Vec<&str> = parts.iter().flat_map(|l| l.lines()).collect();
    union.sort();
    let one = listing(&alone);
    let mut one: Vec<&str> = one.lines().collect();
    one.sort();
    assert_eq!(union, one);
    // The registration covers every path: it is the one image's.
    let cat = |img: &Utf8Path| {
        let o = Command::new("unsquashfs")
            .args(["-cat"])
            .arg(img)
            .arg("nix-path-registration")
            .output()
            .expect("run unsquashfs");
        assert!(o.status.success());
        o.stdout
    };
    let reg = cat(&x.join("nix-store.squashfs"));
    assert_eq!(reg, cat(&alone));
    assert_eq!(
        String::from_utf8_lossy(&reg).matches("\nsha256:").count(),
        f.paths.len()
    );

    // `verify` reads every part: each path once, with its NAR hash.
    let v = ok(mkkexec()
        .args(["verify", "--closure"])
        .arg(&f.registration)
        .arg(&out));
    assert!(!v.contains("not in the image"), "{v}");

    // Built again: the same split, the same bytes.
    let again = dir.join("again");
    build_split_tree(&f, &dir, &again, THREE_PART_LIMIT);
    for n in ["initrd.gz", "kexec-boot"] {
        assert!(
            std::fs::read(out.join(n)).expect("read")
                == std::fs::read(again.join(n)).expect("read"),
            "{n} differs between two builds"
        );
    }
}

#[test]
fn tree_refuses_a_store_path_past_the_limit_before_compressing() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let out = dir.join("tree");
    let err = fails(&mut parted_tree_cmd(&f, &dir, &out, 1_000_000, &[]));
    assert!(
        err.contains(
            "-data (21057152 bytes as a NAR) cannot fit one squashfs image of at most \
             1000000 bytes"
        ),
        "{err}"
    );
    // Nothing was compressed: no progress line, no tree.
    assert!(!err.contains("squashfs:"), "{err}");
    assert!(!out.exists());
}

#[test]
fn tree_splits_the_store_only_when_asked() {
    let (_t, dir) = tempdir();
    let f = three_part_fixture(&dir);
    let out = dir.join("tree");
    let err = fails(&mut parted_tree_cmd(&f, &dir, &out, THREE_PART_LIMIT, &[]));
    assert!(
        err.contains(
            "the store needs 3 squashfs images: a newc cpio holds files up to 4 GiB. With the \
             NixOS module, set nixosKexec.storeParts = 3 (mkkexec: --store-parts 3)"
        ) && err.contains("--split-store"),
        "{err}"
    );
    assert!(!err.contains("squashfs:"), "{err}");
    assert!(!out.exists());
}

/// The top-level names in a listing of `unsquashfs -lln`.
fn top_names(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.split_once(" R/").map(|(_, n)| n.to_owned()))
        .map(|n| n.split(" -> ").next().unwrap_or_default().to_owned())
        .filter(|n| !n.contains('/'))
        .collect()
}

#[test]
fn tree_store_parts_writes_exactly_n_images_the_last_ones_empty() {
    let (_t, dir) = tempdir();
    let f = three_part_fixture(&dir);
    let out = dir.join("tree");
    let err = build_parted_tree(&f, &dir, &out, THREE_PART_LIMIT, &["--store-parts", "5"]);
    assert!(
        err.contains(
            "mkkexec: the store fills 3 of the 5 squashfs images --store-parts asks for; the \
             other 2 are empty"
        ),
        "{err}"
    );
    let x = dir.join("x");
    extract_store(&dir, &out, &x);
    let names = sorted_names(&x);
    assert_eq!(
        names,
        [
            "nix-store-1.squashfs",
            "nix-store-2.squashfs",
            "nix-store-3.squashfs",
            "nix-store-4.squashfs",
            "nix-store.squashfs"
        ]
    );
    // The first three hold the store as --split-store splits it; the last
    // two hold the root directory alone, as unsquashfs reads them.
    let split = dir.join("split");
    build_split_tree(&f, &dir, &split, THREE_PART_LIMIT);
    let xs = dir.join("xs");
    extract_store(&dir, &split, &xs);
    for n in [
        "nix-store.squashfs",
        "nix-store-1.squashfs",
        "nix-store-2.squashfs",
    ] {
        assert!(
            std::fs::read(x.join(n)).expect("read") == std::fs::read(xs.join(n)).expect("read"),
            "{n} differs from --split-store's"
        );
        assert!(!top_names(&listing(&x.join(n))).is_empty(), "{n}");
    }
    for n in ["nix-store-3.squashfs", "nix-store-4.squashfs"] {
        let raw = ok(Command::new("unsquashfs")
            .args(["-lln", "-d", "R"])
            .arg(x.join(n)));
        let entries: Vec<&str> = raw
            .lines()
            .filter(|l| l.ends_with(" R") || l.contains(" R/"))
            .collect();
        assert_eq!(entries.len(), 1, "{n}: {raw}");
        assert!(entries[0].starts_with("drwxr-xr-x 0/0 "), "{n}: {raw}");
        // A few KiB each.
        let size = std::fs::metadata(x.join(n)).expect("stat").len();
        assert!(size <= 8192, "{n}: {size} bytes");
    }
    // verify reads the empty parts as parts holding nothing.
    let v = ok(mkkexec()
        .args(["verify", "--closure"])
        .arg(&f.registration)
        .arg(&out));
    assert!(!v.contains("not in the image"), "{v}");
    // Built again: the same bytes.
    let again = dir.join("again");
    build_parted_tree(&f, &dir, &again, THREE_PART_LIMIT, &["--store-parts", "5"]);
    for n in ["initrd.gz", "kexec-boot"] {
        assert!(
            std::fs::read(out.join(n)).expect("read")
                == std::fs::read(again.join(n)).expect("read"),
            "{n} differs between two builds"
        );
    }
}

#[test]
fn tree_store_parts_one_is_the_unsplit_tree() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let plain = dir.join("plain");
    build_parted_tree(&f, &dir, &plain, squashfs_limit(), &[]);
    let one = dir.join("one");
    build_parted_tree(&f, &dir, &one, squashfs_limit(), &["--store-parts", "1"]);
    assert!(
        std::fs::read(plain.join("initrd.gz")).expect("read")
            == std::fs::read(one.join("initrd.gz")).expect("read")
    );
}

/// The real bound (4 GiB - 1), spelled out for the test-only flag.
fn squashfs_limit() -> u64 {
    u64::from(u32::MAX)
}

#[test]
fn tree_store_parts_refuses_a_store_that_needs_more_before_compressing() {
    let (_t, dir) = tempdir();
    let f = three_part_fixture(&dir);
    let out = dir.join("tree");
    let run = |parts: &[&str]| {
        fails(&mut parted_tree_cmd(
            &f,
            &dir,
            &out,
            THREE_PART_LIMIT,
            parts,
        ))
    };
    let err = run(&["--store-parts", "2"]);
    assert_eq!(
        err.trim_end(),
        "mkkexec: error: the store needs 3 squashfs images (a newc cpio holds files up to 4 GiB), but \
         --store-parts is 2: set nixosKexec.storeParts = 3 in the NixOS module (mkkexec: \
         --store-parts 3). Nothing was compressed"
    );
    assert!(!out.exists());
    // Zero parts is no layout; both flags at once ask two things.
    let err = run(&["--store-parts", "0"]);
    assert!(err.contains("--store-parts <N>"), "{err}");
    let err = run(&["--store-parts", "3", "--split-store"]);
    assert!(err.contains("cannot be used with"), "{err}");
    assert!(!out.exists());
}

#[test]
fn tree_writes_its_images_into_the_initrd_as_a_compressed_cpio_holds_them() {
    // Uncompressed (the default), each store image is written straight into
    // the initrd; compressed, it is written to a file and copied through the
    // compressor. The cpio must be the same byte for byte, for every part.
    let (_t, dir) = tempdir();
    let f = three_part_fixture(&dir);
    let (in_place, copied) = (dir.join("in-place"), dir.join("copied"));
    build_split_tree(&f, &dir, &in_place, THREE_PART_LIMIT);
    build_parted_tree(
        &f,
        &dir,
        &copied,
        THREE_PART_LIMIT,
        &[
            "--split-store",
            "--initrd-compression",
            "zstd",
            "--initrd-level",
            "1",
        ],
    );
    let s1 = std::fs::read(dir.join("stage1.gz")).expect("read");
    let start = s1.len().div_ceil(4) * 4;
    let zstd = std::fs::read(copied.join("initrd.gz")).expect("read");
    std::fs::write(dir.join("member.zst"), &zstd[start..]).expect("write");
    sh(&format!("zstd -dc {dir}/member.zst > {dir}/member.cpio"));
    let mut want = zstd[..start].to_vec();
    want.extend(std::fs::read(dir.join("member.cpio")).expect("read"));
    let got = std::fs::read(in_place.join("initrd.gz")).expect("read");
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the images written in place differ");
    // Nothing but the tree's files is left beside them.
    let names = sorted_names(&in_place);
    assert_eq!(
        names,
        ["bin", "bzImage", "initrd.gz", "kexec-boot", "netboot.ipxe"]
    );
}
