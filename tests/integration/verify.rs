//! `mkkexec verify`: images read back and checked against the registration
//! inside them: mkkexec's own squashfs, initrd and tree, mksquashfs'
//! image, and images damaged byte by byte where mksquashfs stored them
//! uncompressed.

use std::process::Command;

use camino::Utf8Path;

use crate::common::*;

fn verify(path: &Utf8Path) -> Command {
    let mut c = mkkexec();
    c.arg("verify").arg(path);
    c
}

/// The image nixpkgs' make-squashfs.nix makes of the fixture, with every
/// table and block stored uncompressed so that a test can damage it in
/// place.
fn mksquashfs(f: &Fixture, dir: &Utf8Path, registration: &Utf8Path, out: &Utf8Path) {
    require("mksquashfs", "squashfs-tools");
    let reg = dir.join("reg-input/nix-path-registration");
    std::fs::create_dir_all(reg.parent().expect("parent")).expect("mkdir");
    std::fs::copy(registration, &reg).expect("copy");
    let mut cmd = Command::new("mksquashfs");
    cmd.arg(&reg);
    for p in &f.paths {
        cmd.arg(f.root.join("nix/store").join(p));
    }
    cmd.arg(out).args([
        "-no-hardlinks",
        "-keep-as-directory",
        "-all-root",
        "-b",
        "1048576",
        "-root-mode",
        "0755",
        "-noI",
        "-noD",
        "-noF",
        "-noX",
        "-quiet",
        "-no-progress",
        "-noappend",
    ]);
    ok(&mut cmd);
}

/// Replace the one occurrence of `from` in the file at `path` by `to`
/// (same length).
fn patch(path: &Utf8Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).expect("read");
    let hits: Vec<usize> = bytes
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "{:?} in {path}",
        String::from_utf8_lossy(from)
    );
    bytes[hits[0]..hits[0] + from.len()].copy_from_slice(to);
    std::fs::write(path, bytes).expect("write");
}

/// Run verify, require exit 1; the lines it printed.
fn problems(cmd: &mut Command) -> Vec<String> {
    let out = cmd.output().expect("spawn");
    assert_eq!(out.status.code(), Some(1), "{cmd:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(listed above)"), "{stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// What mkkexec builds passes, as a squashfs, an initrd and a tree, with
/// and without --closure; so does mksquashfs' image of the same store.
#[test]
fn verify_passes_what_mkkexec_and_mksquashfs_build() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let img = dir.join("store.img");
    f.squashfs(&img, 3);
    let initrd = dir.join("initrd.zst");
    ok(mkkexec()
        .args(["initrd", "-q", "--prepend-initrd"])
        .arg(stage1_gz(&dir))
        .arg("--file")
        .arg(format!("{img}:/nix-store.squashfs"))
        .arg("-o")
        .arg(&initrd));
    let tree = dir.join("tree");
    std::fs::create_dir(&tree).expect("mkdir");
    std::fs::copy(&initrd, tree.join("initrd.gz")).expect("copy");
    for p in [&img, &initrd, &tree] {
        assert_eq!(ok(&mut verify(p)), "", "{p}");
        assert_eq!(
            ok(verify(p).arg("--closure").arg(&f.registration)),
            "",
            "{p}"
        );
    }
    let theirs = dir.join("theirs.img");
    mksquashfs(&f, &dir, &f.registration, &theirs);
    assert_eq!(ok(&mut verify(&theirs)), "");
}

/// Damage in place, one kind at a time: each is one line naming the store
/// path (or the registration), and exit 1.
#[test]
fn verify_names_each_damage_once() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let reg = std::fs::read_to_string(&f.registration).expect("read");
    let path_of = |name: &str| {
        let base = f.paths.iter().find(|p| p.ends_with(name)).expect("path");
        format!("/nix/store/{base}")
    };
    let (lib, data) = (path_of("-lib-1.0"), path_of("-data"));
    let damaged = |name: &str| {
        let img = dir.join(format!("{name}.img"));
        mksquashfs(&f, &dir, &f.registration, &img);
        img
    };
    let one = |lines: Vec<String>, starts: &str, says: &str| {
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0].starts_with(starts) && lines[0].contains(says),
            "{lines:#?}"
        );
    };

    // A file's data: one byte of libfoo.so.1.
    let img = damaged("data");
    let noise = noise(300_000, 1);
    patch(&img, &noise[1000..1064], &{
        let mut b = noise[1000..1064].to_vec();
        b[10] ^= 0x40;
        b
    });
    one(
        problems(&mut verify(&img)),
        &format!("{lib}: its contents hash to sha256:"),
        ", the registration says sha256:",
    );

    // A symlink's target.
    let img = damaged("symlink");
    patch(&img, b"/nonexistent/dangling", b"/nonexistent/danglinG");
    one(
        problems(&mut verify(&img)),
        &format!("{data}: its contents hash to"),
        "",
    );

    // A directory entry's name.
    let img = damaged("dirent");
    patch(&img, "ünïcödé".as_bytes(), "ünïcödè".as_bytes());
    one(
        problems(&mut verify(&img)),
        &format!("{data}: its contents hash to"),
        "",
    );

    // The registration: one digit of lib's hash.
    let img = damaged("registration");
    let hash = reg.lines().nth(1).expect("lib's hash");
    assert!(reg.starts_with(&lib), "{reg}");
    let mut other = hash.as_bytes().to_vec();
    let last = other.len() - 1;
    other[last] = if other[last] == b'0' { b'1' } else { b'0' };
    patch(&img, hash.as_bytes(), &other);
    one(
        problems(&mut verify(&img)),
        &format!("{lib}: its contents hash to {hash} "),
        &format!("the registration says {}", String::from_utf8_lossy(&other)),
    );
}

/// What the registration and the image disagree on, and the closure given.
#[test]
fn verify_checks_the_closure_is_complete_and_the_one_given() {
    let (_t, dir) = tempdir();
    let f = fixture(&dir);
    let reg = std::fs::read_to_string(&f.registration).expect("read");
    // The registration without lib (which data refers to): lib is in the
    // image but not registered, and data's reference leads nowhere.
    let lib = format!("/nix/store/{}", f.paths[0]);
    // lib comes first, without references: five lines.
    assert!(reg.starts_with(&format!("{lib}\n")), "{reg}");
    let without_lib: String = reg.split_inclusive('\n').skip(5).collect();
    let partial = dir.join("partial-registration");
    std::fs::write(&partial, &without_lib).expect("write");
    let img = dir.join("partial.img");
    mksquashfs(&f, &dir, &partial, &img);
    let lines = problems(&mut verify(&img));
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "/nix/store/{}: refers to {lib}, which the registration does not hold",
            f.paths[1]
        ))),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("/{}: in the image, not in its registration", f.paths[0])),
        "{lines:#?}"
    );

    // A whole image, checked against a closure that differs in one hash
    // (a closure must be closed: one with a path less would be refused).
    let whole = dir.join("whole.img");
    f.squashfs(&whole, 1);
    let hash = reg.lines().nth(1).expect("lib's hash");
    let other_hash = format!(
        "{}{}",
        &hash[..hash.len() - 1],
        if hash.ends_with('0') { '1' } else { '0' }
    );
    let other = dir.join("other-registration");
    std::fs::write(&other, reg.replacen(hash, &other_hash, 1)).expect("write");
    let lines = problems(verify(&whole).arg("--closure").arg(&other));
    assert_eq!(
        lines,
        [format!(
            "{lib}: the image registers {hash} ({size} bytes), the closure {other} says {other_hash} ({size} bytes)",
            size = reg.lines().nth(2).expect("size")
        )]
    );
}
