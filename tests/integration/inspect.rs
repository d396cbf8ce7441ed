//! `inspect` under damaged input: a bounded fuzz run over images a real
//! writer made, each damaged at random places (a fixed seed, so a failure
//! reproduces). Every case must end in a report or a clear error: no panic,
//! no hang.

use std::process::Command;

use crate::common::{mkkexec, noise, ok, require, tempdir};

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
