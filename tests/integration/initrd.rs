//! `mkkexec initrd` checked with cpio and the stand-alone decompressors.

use crate::common::*;

#[test]
fn initrd_every_compression_unpacks_after_the_prepended_one() {
    let (_t, dir) = tempdir();
    let s1 = stage1_gz(&dir);
    let prefix = std::fs::read(&s1).expect("read");
    let big = dir.join("big");
    std::fs::write(&big, noise(3_000_000, 7)).expect("write");
    let small = dir.join("small");
    std::fs::write(&small, "hello\n").expect("write");
    for (c, tool) in [
        ("zstd", "zstd -dc"),
        ("gzip", "gzip -dc"),
        ("xz", "xz -dc"),
        ("none", "cat"),
    ] {
        let out = dir.join(format!("initrd.{c}"));
        ok(mkkexec()
            .args([
                "initrd",
                "-q",
                "--initrd-compression",
                c,
                "--prepend-initrd",
            ])
            .arg(&s1)
            .arg("--file")
            .arg(format!("{big}:/nix-store.squashfs"))
            .arg("--file")
            .arg(format!("{small}:/a/b/small"))
            .arg("-o")
            .arg(&out));
        let bytes = std::fs::read(&out).expect("read");
        assert_eq!(
            &bytes[..prefix.len()],
            &prefix[..],
            "{c}: prepended initrd changed"
        );
        let pad = (4 - prefix.len() % 4) % 4;
        assert!(
            bytes[prefix.len()..prefix.len() + pad]
                .iter()
                .all(|&b| b == 0)
        );
        let tail = dir.join(format!("tail.{c}"));
        std::fs::write(&tail, &bytes[prefix.len() + pad..]).expect("write");
        let x = dir.join(format!("x.{c}"));
        std::fs::create_dir(&x).expect("mkdir");
        let list = sh(&format!("cd {x} && {tool} {tail} | cpio -idv --quiet 2>&1"));
        assert_eq!(
            list.lines().collect::<Vec<_>>(),
            ["a", "a/b", "a/b/small", "nix-store.squashfs"],
            "{c}"
        );
        assert_eq!(
            std::fs::read(x.join("nix-store.squashfs")).expect("read"),
            std::fs::read(&big).expect("read")
        );
        let verbose = sh(&format!("{tool} {tail} | cpio -tv --quiet -n"));
        for l in verbose.lines() {
            assert!(
                l.contains(" 0        0 ") || l.contains(" 0 0 "),
                "{c}: not 0:0: {l}"
            );
        }
        if c == "xz" {
            let info = sh(&format!("xz --robot --list {tail}"));
            assert!(
                info.contains("CRC32") && !info.contains("CRC64"),
                "the kernel needs CRC32: {info}"
            );
        }
        let inspect = ok(mkkexec().arg("inspect").arg(&out));
        assert!(
            inspect.starts_with("member at byte 0: gzip cpio, 4 entries"),
            "{inspect}"
        );
        assert!(
            inspect.contains(&format!("member at byte {}: ", prefix.len() + pad)),
            "{inspect}"
        );
    }
}

#[test]
fn initrd_is_reproducible() {
    let (_t, dir) = tempdir();
    let f = dir.join("f");
    std::fs::write(&f, noise(2_000_000, 1)).expect("write");
    let build = |out: &str, jobs: &str| {
        ok(mkkexec()
            .args(["initrd", "-q", "--jobs", jobs, "--file"])
            .arg(format!("{f}:/x"))
            .arg("-o")
            .arg(dir.join(out)));
        std::fs::read(dir.join(out)).expect("read")
    };
    assert!(
        build("a", "1") == build("b", "2"),
        "zstd output depends on the thread count"
    );
}

#[test]
fn initrd_errors_name_the_problem() {
    let (_t, dir) = tempdir();
    let e = fails(
        mkkexec()
            .args(["initrd", "--file", "nocolon", "-o"])
            .arg(dir.join("o")),
    );
    assert!(e.contains("is not SRC:DEST"), "{e}");
    let e = fails(
        mkkexec()
            .args(["initrd", "--file", "/nonexistent:/x", "-o"])
            .arg(dir.join("o")),
    );
    assert!(e.contains("cannot read /nonexistent"), "{e}");
    let e = fails(
        mkkexec()
            .args(["initrd", "--file", "/etc/hostname:/../x", "-o"])
            .arg(dir.join("o")),
    );
    assert!(e.contains("without . or .."), "{e}");
    let e = fails(
        mkkexec()
            .args([
                "initrd",
                "--initrd-compression",
                "xz",
                "--initrd-level",
                "12",
                "-o",
            ])
            .arg(dir.join("o")),
    );
    assert!(e.contains("level 12 is out of range"), "{e}");
    let e = fails(
        mkkexec()
            .args(["initrd", "--prepend-initrd", "/nonexistent", "-o"])
            .arg(dir.join("o")),
    );
    assert!(e.contains("cannot open initrd /nonexistent"), "{e}");
    // Not an initrd: refused before anything is written.
    std::fs::write(dir.join("garbage"), b"\0\0\0\0hello, not a cpio").expect("write");
    let e = fails(
        mkkexec()
            .args(["initrd", "--prepend-initrd"])
            .arg(dir.join("garbage"))
            .arg("-o")
            .arg(dir.join("o")),
    );
    assert!(e.contains("garbage is not an initrd"), "{e}");
    std::fs::remove_file(dir.join("garbage")).expect("rm");
    // A file whose size is not its content (procfs says 0 bytes).
    let e = fails(
        mkkexec()
            .args(["initrd", "-q", "--file", "/proc/version:/v", "-o"])
            .arg(dir.join("o")),
    );
    assert!(
        e.contains("v has more than the 0 bytes its size says"),
        "{e}"
    );
    assert!(!dir.join("o").exists());
    assert_eq!(
        std::fs::read_dir(&dir).expect("ls").count(),
        0,
        "temporary files left behind"
    );
}
