//! `mkkexec squashfs` checked with squashfs-tools.

use std::process::Command;

use crate::common::*;

fn build(f: &Fixture, out: &camino::Utf8Path, extra: &[&str]) {
    ok(mkkexec()
        .args(["squashfs", "-q", "--closure"])
        .arg(&f.registration)
        .arg("--root")
        .arg(&f.root)
        .arg("--output")
        .arg(out)
        .args(extra));
}

/// The source tree as the image should hold it: the store paths plus the
/// canonical registration.
fn expected(f: &Fixture, dir: &camino::Utf8Path) -> Vec<String> {
    let e = dir.join("expected");
    std::fs::create_dir(&e).expect("mkdir");
    sh(&format!("cp -a {}/nix/store/. {e}/", f.root));
    let text = std::fs::read_to_string(&f.registration).expect("read");
    let mut closure = mkkexec::nix::closure::Closure::new(
        mkkexec::nix::registration::parse(&text).expect("parse"),
    )
    .expect("closed");
    closure.paths.sort_by(|a, b| a.path.cmp(&b.path));
    std::fs::write(e.join("nix-path-registration"), closure.registration()).expect("write");
    std::fs::set_permissions(
        e.join("nix-path-registration"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    describe(e.as_std_path())
}

fn extract(img: &camino::Utf8Path, dir: &camino::Utf8Path) -> Vec<String> {
    require("unsquashfs", "squashfs-tools");
    // A new directory each time: an extracted store is read-only, which only
    // root could remove.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let x = dir.join(format!("x{n}-{}", img.file_name().expect("name")));
    ok(Command::new("unsquashfs")
        .args(["-no-progress", "-d"])
        .arg(&x)
        .arg(img));
    describe(x.as_std_path())
}

#[test]
fn squashfs_extracts_to_the_source_and_matches_mksquashfs() {
    require("mksquashfs", "squashfs-tools");
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let ours = dir.join("ours.img");
    build(&f, &ours, &[]);
    assert_eq!(extract(&ours, &dir), expected(&f, &dir));

    // The reference: nixpkgs' make-squashfs.nix flags over the same input.
    let reg = dir.join("nix-path-registration");
    std::fs::copy(dir.join("expected/nix-path-registration"), &reg).expect("copy");
    let theirs = dir.join("theirs.img");
    let mut cmd = Command::new("mksquashfs");
    cmd.arg(&reg);
    for p in &f.paths {
        cmd.arg(f.root.join("nix/store").join(p));
    }
    cmd.arg(&theirs).args([
        "-no-hardlinks",
        "-keep-as-directory",
        "-all-root",
        "-b",
        "1048576",
        "-comp",
        "zstd",
        "-Xcompression-level",
        "19",
        "-root-mode",
        "0755",
        "-quiet",
        "-no-progress",
    ]);
    ok(&mut cmd);
    assert_eq!(listing(&ours), listing(&theirs));
    // `inspect` reads mksquashfs' image, long symlink targets and all, and
    // sees what it sees in ours (the size may differ).
    let inspect = |img: &camino::Utf8Path| {
        let text = ok(mkkexec().arg("inspect").arg(img));
        let (head, rest) = text.split_once('\n').expect("a header line");
        let entries = head.split(", ").nth(2).expect("entries").to_owned();
        (entries, rest.to_owned())
    };
    assert_eq!(inspect(&ours), inspect(&theirs));
    assert_eq!(extract(&ours, &dir), extract(&theirs, &dir));
    let (a, b) = (
        ours.metadata().expect("stat").len(),
        theirs.metadata().expect("stat").len(),
    );
    eprintln!(
        "fixture: mkkexec {a} bytes, mksquashfs {b} bytes, ratio {:.3}",
        a as f64 / b as f64
    );
    // Duplicates, big and small, are stored once, as mksquashfs does: the
    // copies cost no more than their inodes and directory entries (the
    // image is padded to 4 KiB, so that is no change at all).
    let data = data_path(&f);
    sh(&format!(
        "chmod -R u+w {0} && rm {0}/share/big-copy {0}/share/dup2",
        data
    ));
    f.register();
    let without = dir.join("without-copies.img");
    build(&f, &without, &[]);
    let copies = a - without.metadata().expect("stat").len();
    assert!(copies < 512, "the two copies take {copies} bytes");
    assert!(
        a as f64 <= 1.01 * b as f64,
        "{a} bytes against mksquashfs's {b}"
    );
}

#[test]
fn squashfs_every_compression_extracts() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let want = expected(&f, &dir);
    for (c, extra) in [
        ("zstd", "3"),
        ("xz", "6"),
        ("gzip", "9"),
        ("lz4", ""),
        ("none", ""),
    ] {
        let img = dir.join(format!("{c}.img"));
        let mut args = vec!["--squashfs-compression", c];
        if !extra.is_empty() {
            args.extend(["--squashfs-level", extra]);
        }
        build(&f, &img, &args);
        assert_eq!(extract(&img, &dir), want, "{c}");
        let stats = ok(Command::new("unsquashfs").arg("-s").arg(&img));
        let named = if c == "none" { "gzip" } else { c };
        assert!(
            stats.contains(&format!("Compression {named}")),
            "{c}: {stats}"
        );
    }
}

#[test]
fn squashfs_is_reproducible_and_input_form_does_not_matter() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    // The bytes do not depend on the threads: one (backhand's own loop),
    // this machine's cores, and more threads than blocks in flight.
    let a = dir.join("a.img");
    build(&f, &a, &[]);
    for jobs in ["1", "7"] {
        let b = dir.join(format!("b{jobs}.img"));
        build(&f, &b, &["--jobs", jobs]);
        assert!(
            std::fs::read(&a).expect("a") == std::fs::read(&b).expect("b"),
            "two builds differ (--jobs {jobs})"
        );
    }

    // The same closure as structured-attrs JSON, in another order, SRI hashes.
    let text = std::fs::read_to_string(&f.registration).expect("read");
    let infos = mkkexec::nix::registration::parse(&text).expect("parse");
    let entries: Vec<_> = infos
        .iter()
        .rev()
        .map(|i| {
            serde_json::json!({
                "path": i.path.to_string(), "narHash": i.nar_hash.to_sri(), "narSize": i.nar_size,
                "references": i.references.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let json = dir.join(".attrs.json");
    std::fs::write(&json, serde_json::json!({ "system": entries }).to_string()).expect("write");
    let c = dir.join("c.img");
    ok(mkkexec()
        .args(["squashfs", "-q", "--closure-attr", "system", "--closure"])
        .arg(&json)
        .arg("--root")
        .arg(&f.root)
        .arg("-o")
        .arg(&c));
    assert!(
        std::fs::read(&a).expect("a") == std::fs::read(&c).expect("c"),
        "JSON input gives other bytes"
    );
}

fn no_leftovers(dir: &camino::Utf8Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-") || n.ends_with(".img"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn squashfs_refuses_a_fifo_and_leaves_nothing() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let fifo = f
        .root
        .join("nix/store")
        .join(&f.paths[1])
        .join("share/fifo");
    sh(&format!(
        "chmod u+w {0} && mkfifo {1}",
        fifo.parent().expect("parent"),
        fifo
    ));
    let err = fails(
        mkkexec()
            .args(["squashfs", "--closure"])
            .arg(&f.registration)
            .arg("--root")
            .arg(&f.root)
            .arg("-o")
            .arg(dir.join("out.img")),
    );
    assert!(err.contains("share/fifo is a fifo"), "{err}");
    no_leftovers(&dir);
}

#[test]
fn squashfs_errors_name_the_problem() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let run = |extra: &[&str], closure: &camino::Utf8Path| {
        fails(
            mkkexec()
                .args(["squashfs", "--closure"])
                .arg(closure)
                .arg("--root")
                .arg(&f.root)
                .arg("-o")
                .arg(dir.join("out.img"))
                .args(extra),
        )
    };
    let e = run(&["--block-size", "1000"], &f.registration);
    assert!(e.contains("block size 1000 is invalid"), "{e}");
    let e = run(&["--squashfs-level", "30"], &f.registration);
    assert!(e.contains("level 30 is out of range"), "{e}");

    // A registration that is cut short names the file and the line.
    let text = std::fs::read_to_string(&f.registration).expect("read");
    let cut = dir.join("cut");
    let seven: String = text.lines().take(7).map(|l| format!("{l}\n")).collect();
    std::fs::write(&cut, &seven).expect("write");
    let e = run(&[], &cut);
    assert!(
        e.contains(&format!("in registration {cut}")) && e.contains("line 8:"),
        "{e}"
    );

    // A reference outside the closure.
    let open = dir.join("open");
    std::fs::write(
        &open,
        text.replace(
            &format!("\n1\n/nix/store/{}", f.paths[2]),
            &format!("\n1\n/nix/store/{}", base("gone")),
        ),
    )
    .expect("write");
    let e = run(&[], &open);
    assert!(e.contains("not closed") && e.contains("gone"), "{e}");

    // A path missing on disk.
    sh(&format!(
        "chmod -R u+w {0} && rm -rf {0}/nix/store/{1}",
        f.root, f.paths[0]
    ));
    let e = run(&[], &f.registration);
    assert!(
        e.contains(&f.paths[0]) && e.contains("cannot be read"),
        "{e}"
    );
    no_leftovers(&dir);
}

#[test]
#[ignore = "needs root: the Nix sandbox refuses setuid modes, unsquashfs drops them for others"]
fn squashfs_keeps_setuid_and_setgid_modes() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let share = f.root.join("nix/store").join(&f.paths[1]).join("share");
    for (name, mode) in [("setuid", 0o4555), ("setgid", 0o2555)] {
        std::fs::write(share.join(name), b"x").expect("write");
        std::fs::set_permissions(
            share.join(name),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .expect("chmod");
    }
    f.register();
    let img = dir.join("modes.img");
    build(&f, &img, &[]);
    let got = extract(&img, &dir);
    assert_eq!(got, expected(&f, &dir));
    for name in ["share/setuid 4555 ", "share/setgid 2555 "] {
        assert!(got.iter().any(|l| l.contains(name)), "{name}: {got:#?}");
    }
}

#[test]
fn squashfs_packs_a_deep_tree() {
    // 1000 nested directories: backhand found children by testing every
    // descendant, cubic in the depth (57 s at 1900 levels before the patch
    // in vendor/backhand/PATCHES.md).
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let lib = f.root.join("nix/store").join(&f.paths[0]);
    let chmod = |mode| {
        std::fs::set_permissions(&lib, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod")
    };
    // The store path is read-only, as in a store; only root writes anyway.
    chmod(0o755);
    let leaf = lib.join("deep").join("d/".repeat(1000));
    std::fs::create_dir_all(&leaf).expect("mkdir");
    std::fs::write(leaf.join("f"), b"bottom").expect("write");
    chmod(0o555);
    f.register();
    let img = dir.join("deep.img");
    build(&f, &img, &[]);
    assert_eq!(extract(&img, &dir), expected(&f, &dir));
}

#[test]
fn closure_hostile_inputs_get_one_clear_error() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let text = std::fs::read_to_string(&f.registration).expect("read");
    let try_closure = |name: &str, contents: &str| {
        let p = dir.join(name);
        std::fs::write(&p, contents).expect("write");
        let mut c = mkkexec();
        c.args(["squashfs", "-q", "--closure"])
            .arg(&p)
            .arg("--root")
            .arg(&f.root)
            .arg("--output")
            .arg(dir.join(format!("{name}.img")));
        c
    };
    // Nix's --load-db refuses any NAR hash but sha256.
    let hash = text.lines().nth(1).expect("a hash");
    let md5 = text.replacen(hash, "md5:d41d8cd98f00b204e9800998ecf8427e", 1);
    let e = fails(&mut try_closure("md5", &md5));
    assert!(
        e.contains("line 2: bad NAR hash: md5:d41d8cd98f00b204e9800998ecf8427e is not a NAR hash"),
        "{e}"
    );
    // The cause is said once.
    // (e is not a nixbase32 digit.)
    let bad = text.replacen(hash, &format!("{}e", &hash[..hash.len() - 1]), 1);
    let e = fails(&mut try_closure("bad-hash", &bad));
    assert_eq!(e.matches("is not valid nixbase32").count(), 1, "{e}");
    // A JSON entry of the wrong shape is named by its index.
    let e = fails(&mut try_closure(
        "entry.json",
        r#"{"closure": [{"path": 1}]}"#,
    ));
    assert!(
        e.contains("line 1: path is the number 1; it must be a string"),
        "{e}"
    );
    // /dev/zero is no closure.
    let e = fails(
        mkkexec()
            .args(["squashfs", "--closure", "/dev/zero", "--output"])
            .arg(dir.join("zero.img")),
    );
    assert!(e.contains("closure /dev/zero is not a regular file"), "{e}");
    // Cut in the middle of a line: the rest of the line may read as a valid
    // store path, so this must not be reported as a reference outside the
    // closure.
    let e = fails(&mut try_closure("cut", &text[..text.len() - 10]));
    assert!(
        e.contains("the file ends in the middle of this line"),
        "{e}"
    );
    assert!(!e.contains("not closed"), "{e}");
    // Two values for one key: which one Nix meant is unknown.
    let e = fails(&mut try_closure(
        "twice.json",
        r#"{"closure": [], "closure": []}"#,
    ));
    assert!(e.contains(r#"key "closure" appears twice"#), "{e}");
    // A thread count no machine has.
    for j in ["257", "100000", "4294967295"] {
        let e = fails(try_closure("j", &text).args(["-j", j]));
        assert!(e.contains(&format!("{j} is not in 0..=256")), "{e}");
    }
    // A byte order mark is not part of the registration.
    ok(&mut try_closure("bom", &format!("\u{feff}{text}")));
    for leftover in std::fs::read_dir(&dir).expect("ls") {
        let name = leftover.expect("entry").file_name();
        assert!(
            !name.to_string_lossy().contains(".tmp-"),
            "{name:?} left behind"
        );
    }
}

/// Each damaged closure gets one message that says what is wrong, where
/// (the file and the line) and what to do.
#[test]
fn closure_errors_say_what_where_and_what_to_do() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let text = std::fs::read_to_string(&f.registration).expect("read");
    let first = text.lines().next().expect("a path");
    let size = text.lines().nth(2).expect("a size");
    let entry = |size: &str, refs: &str| {
        format!(
            "{{\n  \"closure\": [\n    {{\n      \"path\": \"{first}\",\n      \
             \"narHash\": \"{NAR_HASH}\",\n      \"narSize\": {size},\n      \
             \"references\": {refs}\n    }}\n  ]\n}}\n"
        )
    };
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("narSize-string.json", entry("\"1000\"", "[]").into_bytes()),
        ("references-null.json", entry("1000", "null").into_bytes()),
        (
            "narSize-2^64.json",
            entry("18446744073709551616", "[]").into_bytes(),
        ),
        (
            "size-2^64",
            text.replacen(&format!("\n{size}\n"), "\n18446744073709551616\n", 1)
                .into_bytes(),
        ),
        ("blank-line", text.replacen("\n", "\n\n", 1).into_bytes()),
        ("blank-line-at-end", format!("{text}\n").into_bytes()),
    ];
    let mut latin1 = text.clone().into_bytes();
    let second_line = text.find('\n').expect("a line") + 1;
    latin1.splice(second_line..second_line, b"caf\xe9\n".iter().copied());
    cases.push(("latin-1", latin1));
    let mut report = String::new();
    for (name, bytes) in &cases {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        let e = fails(
            mkkexec()
                .args(["squashfs", "-q", "--closure"])
                .arg(&p)
                .arg("--root")
                .arg(&f.root)
                .arg("--output")
                .arg(dir.join("out.img")),
        );
        report += &format!("{name}:\n{e}");
    }
    // A closureInfo directory whose registration is a directory.
    let info = dir.join("closure-info");
    std::fs::create_dir_all(info.join("registration")).expect("mkdir");
    let e = fails(
        mkkexec()
            .args(["squashfs", "-q", "--closure"])
            .arg(&info)
            .arg("--output")
            .arg(dir.join("out.img")),
    );
    report += &format!("registration-directory:\n{e}");
    insta::with_settings!({filters => vec![
        (r"/nix/store/[0-9a-z]{32}-", "/nix/store/HASH-"),
    ]}, {
        insta::assert_snapshot!("closure-errors", report.replace(dir.as_str(), "[DIR]"));
    });
    no_leftovers(&dir);
}

#[test]
fn squashfs_interrupted_leaves_nothing() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let lib = f.root.join("nix/store").join(&f.paths[0]);
    std::fs::set_permissions(&lib, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    // Enough incompressible data for zstd -19 to take seconds.
    std::fs::write(lib.join("noise"), noise(64 << 20, 7)).expect("write");
    let out = dir.join("out");
    std::fs::create_dir(&out).expect("mkdir");
    // The exit status a shell reports for each: 128 + the signal's number.
    for (signal, code) in [("TERM", 143), ("INT", 130), ("HUP", 129)] {
        let child = mkkexec()
            .args(["squashfs", "-q", "-j", "1", "--closure"])
            .arg(&f.registration)
            .arg("--root")
            .arg(&f.root)
            .arg("--output")
            .arg(out.join("store.img"))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        // Wait until the temporary exists, then interrupt.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::read_dir(&out).expect("ls").next().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "no temporary appeared"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        ok(Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string()));
        let done = child.wait_with_output().expect("wait");
        assert_eq!(done.status.code(), Some(code), "{signal}");
        assert_eq!(
            String::from_utf8_lossy(&done.stderr),
            format!("mkkexec: SIG{signal}: stopped; removed what was being written\n"),
        );
        let left: Vec<_> = std::fs::read_dir(&out).expect("ls").collect();
        assert!(left.is_empty(), "{signal}: left {left:?}");
    }
}

#[test]
#[ignore = "needs root: mounts a 64 KiB tmpfs to fill"]
fn full_disk_leaves_nothing() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let small = dir.join("small");
    std::fs::create_dir(&small).expect("mkdir");
    ok(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&small));
    let _unmount = Unmount(small.clone());
    let e = fails(
        mkkexec()
            .args(["squashfs", "-q", "--closure"])
            .arg(&f.registration)
            .arg("--root")
            .arg(&f.root)
            .arg("--output")
            .arg(small.join("store.img")),
    );
    // The output is named, not its temporary, and the cause said once.
    assert_eq!(
        e.replace(dir.as_str(), "[DIR]"),
        "mkkexec: error: cannot write squashfs [DIR]/small/store.img: \
         No space left on device (os error 28)\n"
    );
    no_leftovers(&small);
    let e = fails(
        mkkexec()
            .args(["initrd", "-q", "--initrd-compression", "none", "--file"])
            .arg(format!("{}:/big", data_path(&f).join("big")))
            .arg("--output")
            .arg(small.join("initrd")),
    );
    assert_eq!(
        e.replace(dir.as_str(), "[DIR]"),
        "mkkexec: error: cannot write [DIR]/small/initrd: No space left on device (os error 28)\n"
    );
    no_leftovers(&small);
    let kernel = dir.join("vmlinuz");
    std::fs::write(&kernel, "not really a kernel").expect("write");
    let e = fails(
        mkkexec()
            .args(["tree", "-q", "--closure"])
            .arg(&f.registration)
            .arg("--root")
            .arg(&f.root)
            .args(["--toplevel", &f.toplevel, "--kernel"])
            .arg(&kernel)
            .arg("--prepend-initrd")
            .arg(stage1_gz(&dir))
            .arg("--output")
            .arg(small.join("tree")),
    );
    assert_eq!(
        e.replace(dir.as_str(), "[DIR]"),
        "mkkexec: error: cannot write squashfs /nix-store.squashfs in \
         [DIR]/small/tree/initrd.gz: No space left on device (os error 28)\n"
    );
    no_leftovers(&small);
}

pub fn data_path(f: &Fixture) -> camino::Utf8PathBuf {
    let data = f.paths.iter().find(|p| p.ends_with("-data")).expect("data");
    f.root.join("nix/store").join(data)
}

/// Unmounts `0` however the test ends.
struct Unmount(camino::Utf8PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs root: bind-mounts /proc and /sys files into the store"]
fn squashfs_blames_a_source_file_that_changes_or_cannot_be_read() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let share = data_path(&f).join("share");
    let mut report = String::new();
    // /proc/version says 0 bytes and holds more, a sysfs file says 4096 and
    // holds less, and a write-only sysfs file cannot be read, even by root.
    for (name, source) in [
        ("grows", "/proc/version"),
        ("shrinks", "/sys/kernel/uevent_seqnum"),
        ("unreadable", "/sys/bus/cpu/uevent"),
    ] {
        let target = share.join(name);
        sh(&format!("chmod u+w {share} && touch {target}"));
        ok(Command::new("mount").args(["--bind", source]).arg(&target));
        let unmount = Unmount(target.clone());
        let e = fails(
            mkkexec()
                .args(["squashfs", "-q", "--closure"])
                .arg(&f.registration)
                .arg("--root")
                .arg(&f.root)
                .arg("--output")
                .arg(dir.join("out.img")),
        );
        drop(unmount);
        std::fs::remove_file(&target).expect("rm");
        report += &format!("{name}: {}", e.replace(dir.as_str(), "[DIR]"));
        no_leftovers(&dir);
    }
    insta::with_settings!({filters => vec![
        (r"/nix/store/[0-9a-z]{32}-", "/nix/store/HASH-"),
        (r"from 0 to \d+ bytes", "from 0 to N bytes"),
        (r"from 4096 to \d+ bytes", "from 4096 to N bytes"),
    ]}, {
        insta::assert_snapshot!("squashfs-source-faults", report);
    });
}

/// Build with stderr kept (the summary line).
fn build_loud(f: &Fixture, out: &camino::Utf8Path, extra: &[&str]) -> String {
    let o = mkkexec()
        .args(["squashfs", "--closure"])
        .arg(&f.registration)
        .arg("--root")
        .arg(&f.root)
        .arg("--output")
        .arg(out)
        .args(extra)
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    err
}

/// The cache's entries: path → length.
fn entries(cache: &camino::Utf8Path) -> std::collections::BTreeMap<std::path::PathBuf, u64> {
    let mut m = std::collections::BTreeMap::new();
    for sub in std::fs::read_dir(cache).expect("cache") {
        for e in std::fs::read_dir(sub.expect("sub").path()).expect("sub") {
            let e = e.expect("entry");
            m.insert(e.path(), e.metadata().expect("meta").len());
        }
    }
    m
}

/// The summary's "cache: H of T blocks reused" as (H, T).
fn reused(stderr: &str) -> (u64, u64) {
    let s = stderr
        .split("cache: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no cache summary in {stderr}"));
    let mut w = s.split_whitespace();
    let h = w.next().and_then(|x| x.parse().ok()).expect("hits");
    assert_eq!(w.next(), Some("of"), "{s}");
    let t = w.next().and_then(|x| x.parse().ok()).expect("total");
    (h, t)
}

#[test]
fn squashfs_cache_gives_the_cold_bytes_for_every_compression_and_jobs() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    for (c, level) in [
        ("zstd", "3"),
        ("xz", "6"),
        ("gzip", "9"),
        ("lz4", ""),
        ("none", ""),
    ] {
        let mut args = vec!["--squashfs-compression", c];
        if !level.is_empty() {
            args.extend(["--squashfs-level", level]);
        }
        let cold = dir.join(format!("{c}-cold.img"));
        build(&f, &cold, &args);
        let want = std::fs::read(&cold).expect("cold");
        let cache = dir.join(format!("cache-{c}"));
        let cache_arg = ["--cache", cache.as_str()];
        for (i, jobs) in ["0", "0", "1", "3"].into_iter().enumerate() {
            let img = dir.join(format!("{c}-{i}.img"));
            let mut a = args.clone();
            a.extend(cache_arg);
            if jobs != "0" {
                a.extend(["--jobs", jobs]);
            }
            let err = build_loud(&f, &img, &a);
            assert!(
                std::fs::read(&img).expect("img") == want,
                "{c}: build {i} (--jobs {jobs}) with the cache differs from the cold build"
            );
            let (hits, total) = reused(&err);
            assert!(total > 0, "{c}: {err}");
            if i == 0 {
                assert_eq!(hits, 0, "{c}: an empty cache gave blocks: {err}");
            } else {
                assert_eq!(hits, total, "{c}: a warm cache missed blocks: {err}");
            }
        }
    }
}

#[test]
#[ignore = "needs a setgid mode, which the Nix sandbox refuses (scripts/test.sh runs it)"]
fn squashfs_cache_replaces_damaged_entries() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let cold = dir.join("cold.img");
    build(&f, &cold, &["--squashfs-level", "3"]);
    let want = std::fs::read(&cold).expect("cold");
    let cache = dir.join("cache");
    let args = ["--squashfs-level", "3", "--cache", cache.as_str()];
    build(&f, &dir.join("a.img"), &args);
    let before = entries(&cache);
    // A cache shared by the Nix build users: what is made in it keeps its
    // group-writable, setgid mode, whatever the umask.
    let shared = dir.join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(
        &shared,
        std::os::unix::fs::PermissionsExt::from_mode(0o2770),
    )
    .expect("chmod");
    build(
        &f,
        &dir.join("s.img"),
        &["--squashfs-level", "3", "--cache", shared.as_str()],
    );
    for sub in std::fs::read_dir(&shared).expect("shared") {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &sub.expect("sub").metadata().expect("meta").permissions(),
        );
        assert_eq!(mode & 0o7777, 0o2770);
    }
    let mut it = before.keys();
    let (Some(truncated), Some(flipped), Some(emptied)) = (it.next(), it.next(), it.next()) else {
        panic!("fewer than 3 cache entries: {before:?}");
    };
    let bytes = std::fs::read(truncated).expect("read");
    std::fs::write(truncated, &bytes[..bytes.len() - 1]).expect("truncate");
    let mut bytes = std::fs::read(flipped).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(flipped, &bytes).expect("flip");
    std::fs::write(emptied, b"").expect("empty");

    let img = dir.join("b.img");
    let err = build_loud(&f, &img, &args);
    assert!(
        std::fs::read(&img).expect("b") == want,
        "damaged cache changed the image"
    );
    let (hits, total) = reused(&err);
    assert_eq!(total - hits, 3, "{err}");
    assert!(err.contains("3 damaged entries replaced"), "{err}");
    // Replaced: the same entries as before, whole again, and all reused.
    assert_eq!(entries(&cache), before);
    let err = build_loud(&f, &dir.join("c.img"), &args);
    let (hits, total) = reused(&err);
    assert_eq!(hits, total, "{err}");
}

#[test]
fn squashfs_cache_max_bytes_removes_the_oldest() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let cache = dir.join("cache");
    let zstd = ["--squashfs-level", "3", "--cache", cache.as_str()];
    let gzip = ["--squashfs-compression", "gzip", "--cache", cache.as_str()];
    build(&f, &dir.join("z.img"), &zstd);
    let old = entries(&cache);
    sh(&format!(
        "find {cache} -type f -exec touch -d 2000-01-01 {{}} +"
    ));
    build(&f, &dir.join("g.img"), &gzip);
    let all = entries(&cache);
    let recent: std::collections::BTreeMap<_, _> = all
        .iter()
        .filter(|(p, _)| !old.contains_key(*p))
        .map(|(p, l)| (p.clone(), *l))
        .collect();
    assert!(!old.is_empty() && !recent.is_empty());
    let size: u64 = recent.values().sum();
    let mut g = gzip.to_vec();
    let max = size.to_string();
    g.extend(["--cache-max-bytes", max.as_str()]);
    let err = build_loud(&f, &dir.join("g2.img"), &g);
    assert_eq!(entries(&cache), recent, "{err}");
    assert!(
        err.contains(&format!("{} oldest entries removed", old.len())),
        "{err}"
    );
    // Within 0: nothing stays.
    g.truncate(g.len() - 1);
    g.push("0");
    build(&f, &dir.join("g3.img"), &g);
    assert!(entries(&cache).is_empty());
}
