//! `inspect` under damaged input: a bounded fuzz run over images a real
//! writer made, each damaged at random places (a fixed seed, so a failure
//! reproduces). Every case must end in a report or a clear error: no panic,
//! no hang.

use std::process::Command;

use crate::common::*;
use crate::squashfs::data_path;

/// Damage copies of `image` in `cases` ways and inspect each.
fn fuzz(image: &[u8], dir: &camino::Utf8Path, cases: u64) {
    let damaged = dir.join("damaged");
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        // xorshift64: deterministic, and enough to spread the damage.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for case in 0..cases {
        let mut bytes = image.to_vec();
        for _ in 0..1 + next() % 8 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        if case % 4 == 0 {
            bytes.truncate((next() % bytes.len() as u64) as usize);
        }
        std::fs::write(&damaged, &bytes).expect("write");
        let out = Command::new("timeout")
            .arg("20")
            .arg(mkkexec().get_program())
            .arg("inspect")
            .arg(&damaged)
            .output()
            .expect("spawn");
        let err = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        assert!(code != Some(124), "case {case}: inspect hangs");
        assert!(
            matches!(code, Some(0 | 1)) && !err.contains("panicked"),
            "case {case}: {:?}\n{err}",
            out.status
        );
        if code == Some(1) {
            assert!(
                err.contains(damaged.as_str()),
                "case {case}: unnamed file: {err}"
            );
        }
    }
}

#[test]
fn inspect_survives_damaged_squashfs_images() {
    require("mksquashfs", "squashfs-tools");
    let (_t, dir) = tempdir();
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("d/e")).expect("mkdir");
    std::fs::write(src.join("d/noise"), noise(20_000, 9)).expect("write");
    std::fs::write(src.join("d/e/text"), "hello\n".repeat(3000)).expect("write");
    std::os::unix::fs::symlink("x".repeat(3000), src.join("long-link")).expect("symlink");
    let img = dir.join("img");
    ok(Command::new("mksquashfs").arg(&src).arg(&img).args([
        "-comp",
        "gzip",
        "-b",
        "4096",
        "-quiet",
        "-no-progress",
    ]));
    fuzz(&std::fs::read(&img).expect("read"), &dir, 300);
}

#[test]
fn inspect_survives_damaged_initrds() {
    let (_t, dir) = tempdir();
    std::fs::write(dir.join("a"), noise(5_000, 4)).expect("write");
    std::fs::write(dir.join("b"), "text\n".repeat(2000)).expect("write");
    let initrd = dir.join("initrd");
    ok(mkkexec()
        .args(["initrd", "-q", "--file"])
        .arg(format!("{}:/a", dir.join("a")))
        .arg("--file")
        .arg(format!("{}:/x/b", dir.join("b")))
        .arg("-o")
        .arg(&initrd));
    fuzz(&std::fs::read(&initrd).expect("read"), &dir, 300);
}

/// `inspect`'s stderr for `file`, the temporary directory hidden.
fn inspect_stderr(file: &camino::Utf8Path, dir: &camino::Utf8Path) -> String {
    let out = mkkexec().arg("inspect").arg(file).output().expect("spawn");
    String::from_utf8_lossy(&out.stderr).replace(dir.as_str(), "[DIR]")
}

/// A cut or damaged image gets one sentence: what is wrong, where, what to
/// do; never a cause twice or a library's debug text.
#[test]
fn inspect_says_how_an_image_is_damaged() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let img = dir.join("store.squashfs");
    f.squashfs(&img, 1);
    let image = std::fs::read(&img).expect("read");
    let u64_at = |at: usize| u64::from_le_bytes(image[at..at + 8].try_into().expect("8 bytes"));
    let inode_table = u64_at(64) as usize;
    let initrd = |compression: &str| {
        let out = dir.join(format!("initrd.{compression}"));
        ok(mkkexec()
            .args([
                "initrd",
                "-q",
                "--initrd-compression",
                compression,
                "--file",
            ])
            .arg(format!("{}:/a", data_path(&f).join("big")))
            .arg("--file")
            .arg(format!("{}:/b/c", data_path(&f).join("share/dup1")))
            .arg("-o")
            .arg(&out));
        std::fs::read(&out).expect("read")
    };
    let (none, zstd) = (initrd("none"), initrd("zstd"));
    let mut damaged_zstd = zstd.clone();
    let middle = damaged_zstd.len() / 2;
    damaged_zstd[middle] ^= 0xff;
    let mut magic = image.clone();
    // The first metadata block's zstd frame, its magic number broken.
    magic[inode_table + 2] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("squashfs cut in half", image[..image.len() / 2].to_vec()),
        ("squashfs cut in the superblock", image[..50].to_vec()),
        ("squashfs with a broken metadata block", magic),
        (
            "uncompressed initrd cut in a file",
            none[..none.len() / 2].to_vec(),
        ),
        (
            "uncompressed initrd cut in a header",
            none[..none.len() - 150].to_vec(),
        ),
        ("zstd initrd cut", zstd[..zstd.len() / 2].to_vec()),
        ("zstd initrd damaged", damaged_zstd),
    ];
    let mut report = String::new();
    for (name, bytes) in cases {
        let p = dir.join("damaged");
        std::fs::write(&p, bytes).expect("write");
        report += &format!("{name}:\n{}", inspect_stderr(&p, &dir));
    }
    insta::assert_snapshot!("inspect-damaged", report);
}

/// A member the kernel would not unpack is reported, whatever else the
/// initrd holds, with what to do about it.
#[test]
fn inspect_warns_of_members_the_kernel_refuses() {
    require("xz", "xz-utils");
    require("zstd", "zstd");
    let (_t, dir) = tempdir();
    let s1 = stage1_gz(&dir);
    let cpio = sh(&format!(
        "cd {dir}/stage1 && find . | sort | cpio -o -H newc --quiet --reproducible --owner=0:0 \
         > {dir}/plain.cpio && echo {dir}/plain.cpio"
    ));
    let cpio = cpio.trim();
    let mut initrd = std::fs::read(&s1).expect("read");
    for (name, cmd) in [
        ("crc64", "xz --check=crc64 -c"),
        ("sha256", "xz --check=sha256 -c"),
        ("crc32", "xz --check=crc32 -c"),
        ("wlog28", "zstd -q --zstd=wlog=28 -c"),
    ] {
        sh(&format!("{cmd} < {cpio} > {dir}/{name}"));
        while !initrd.len().is_multiple_of(4) {
            initrd.push(0);
        }
        initrd.extend(std::fs::read(dir.join(name)).expect("read"));
    }
    let all = dir.join("initrd");
    std::fs::write(&all, &initrd).expect("write");
    let out = mkkexec().arg("inspect").arg(&all).output().expect("spawn");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let members: Vec<&str> = stdout.lines().filter(|l| l.starts_with("member")).collect();
    assert_eq!(members.len(), 5, "{stdout}");
    let mut report = String::from_utf8_lossy(&out.stderr).replace(dir.as_str(), "[DIR]");
    // lz4's frame format (what `lz4` writes without -l): refused outright,
    // and as an initrd to prepend.
    let mut lz4 = vec![0x04, 0x22, 0x4d, 0x18];
    lz4.extend_from_slice(&[0x64, 0x40, 0xa7, 0, 0, 0, 0]);
    let lz4_file = dir.join("frame.lz4");
    std::fs::write(&lz4_file, &lz4).expect("write");
    report += &inspect_stderr(&lz4_file, &dir);
    let e = fails(
        mkkexec()
            .args(["initrd", "--prepend-initrd"])
            .arg(&lz4_file)
            .arg("-o")
            .arg(dir.join("o")),
    );
    report += &e.replace(dir.as_str(), "[DIR]");
    insta::assert_snapshot!("inspect-kernel-refuses", report);
}
