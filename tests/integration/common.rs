//! Fixtures and helpers shared by the integration tests.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Output};

use camino::{Utf8Path, Utf8PathBuf};
use tempfile::TempDir;

/// Fail with a message that says how to get a missing tool.
pub fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run the README's test command (scripts/test.sh), \
         or apt-get install {package}"
    );
}

pub fn mkkexec() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mkkexec"))
}

/// Run and require success; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run and require failure; returns stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out: Output = cmd.output().expect("spawn");
    assert!(!out.status.success(), "{cmd:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn sh(script: &str) -> String {
    ok(Command::new("sh").arg("-c").arg(script))
}

pub fn tempdir() -> (TempDir, Utf8PathBuf) {
    let t = tempfile::Builder::new()
        .prefix("mkkexec-test")
        .tempdir()
        .expect("tempdir");
    let p = Utf8PathBuf::from_path_buf(t.path().to_owned()).expect("utf8 tempdir");
    (t, p)
}

/// A valid store path base name for `name`, with a hash derived from it.
pub fn base(name: &str) -> String {
    let mut digest = [0u8; 20];
    for (i, b) in name.bytes().enumerate() {
        digest[i % 20] = digest[i % 20].wrapping_mul(31).wrapping_add(b);
    }
    format!("{}-{name}", mkkexec::nix::nixbase32::encode(&digest))
}

/// The NAR hash (as a registration writes it) and size of a store path on
/// disk, as mkkexec computes them; `nix.rs` checks that computation against
/// real Nix.
pub fn nar_hash(path: &Utf8Path) -> (String, u64) {
    let (h, size) = mkkexec::nix::nar::hash_path(path.as_std_path()).expect("NAR hash");
    (h.to_string(), size)
}

/// A well-formed hash no store path has (for tests of the closure's syntax).
pub const NAR_HASH: &str = "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";

/// A store below `root` with awkward contents, and its registration.
pub struct Fixture {
    pub root: Utf8PathBuf,
    pub registration: Utf8PathBuf,
    pub paths: Vec<String>,
    pub toplevel: String,
    /// Each path's references, for [`Fixture::register`].
    refs: Vec<(String, Vec<String>)>,
}

impl Fixture {
    /// Add a store path that is one file holding `contents`, referring to
    /// nothing, and register the store again.
    pub fn add_file_path(&mut self, name: &str, contents: &[u8]) -> String {
        let p = base(name);
        write(
            self.root.join("nix/store").join(&p).as_std_path(),
            contents,
            0o444,
        );
        self.paths.push(p.clone());
        self.refs.push((p.clone(), Vec::new()));
        self.register();
        p
    }

    /// Pack the fixture's store into the squashfs `out` at zstd `level`.
    pub fn squashfs(&self, out: &Utf8Path, level: u8) {
        ok(mkkexec()
            .args([
                "squashfs",
                "-q",
                "--squashfs-level",
                &level.to_string(),
                "--closure",
            ])
            .arg(&self.registration)
            .arg("--root")
            .arg(&self.root)
            .arg("-o")
            .arg(out));
    }

    /// Write the registration again, with the NAR hashes of the store as it
    /// is now: for a test that changes the store on purpose.
    pub fn register(&self) {
        let mut reg = String::new();
        for (p, r) in &self.refs {
            let (hash, size) = nar_hash(&self.root.join("nix/store").join(p));
            reg += &format!("/nix/store/{p}\n{hash}\n{size}\n\n{}\n", r.len());
            for r in r {
                reg += &format!("/nix/store/{r}\n");
            }
        }
        std::fs::write(&self.registration, reg).expect("write");
    }
}

fn write(p: &Path, data: &[u8], mode: u32) {
    std::fs::write(p, data).expect("write");
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Deterministic pseudo-random bytes (incompressible).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn fixture(dir: &Utf8Path) -> Fixture {
    let root = dir.join("root");
    let store = root.join("nix/store");
    std::fs::create_dir_all(&store).expect("mkdir");
    let lib = base("lib-1.0");
    let data = base("data");
    let single = base("single-file.sh");
    let link = base("just-a-link");
    let sys = base("nixos-system-test");

    let l = store.join(&lib);
    std::fs::create_dir_all(l.join("lib")).expect("mkdir");
    write(
        l.join("lib/libfoo.so.1").as_std_path(),
        &noise(300_000, 1),
        0o555,
    );
    symlink("libfoo.so.1", l.join("lib/libfoo.so")).expect("symlink");

    let d = store.join(&data);
    std::fs::create_dir_all(d.join("share/deep/er/dir")).expect("mkdir");
    std::fs::create_dir_all(d.join("empty-dir")).expect("mkdir");
    write(d.join("empty").as_std_path(), b"", 0o444);
    // Bigger than a 1 MiB block, compressible, and a copy of it.
    let big: Vec<u8> = (0..2_500_000u32)
        .flat_map(|i| (i / 7).to_le_bytes())
        .collect();
    write(d.join("big").as_std_path(), &big, 0o444);
    write(d.join("share/big-copy").as_std_path(), &big, 0o444);
    // Two identical small files.
    write(
        d.join("share/dup1").as_std_path(),
        b"same contents\n",
        0o444,
    );
    write(
        d.join("share/dup2").as_std_path(),
        b"same contents\n",
        0o444,
    );
    write(
        d.join("share/deep/er/dir/file").as_std_path(),
        b"deep",
        0o444,
    );
    write(
        d.join("share/odd name\nwith newline, 'quotes' & $dollar")
            .as_std_path(),
        b"odd",
        0o444,
    );
    write(d.join("share/ünïcödé").as_std_path(), b"utf8", 0o444);
    // Sticky: a special bit the Nix sandbox allows (setuid is tested apart).
    write(d.join("share/sticky-like").as_std_path(), b"x", 0o1555);
    // A block of zeros (stored as a sparse hole) in the middle of a file.
    let mut sparse = noise(100, 2);
    sparse.extend(std::iter::repeat_n(0u8, 1 << 20));
    sparse.extend(noise(100, 3));
    write(d.join("share/sparse").as_std_path(), &sparse, 0o444);
    symlink("../empty", d.join("share/rel-link")).expect("symlink");
    symlink(
        format!("/nix/store/{lib}/lib/libfoo.so"),
        d.join("share/abs-link"),
    )
    .expect("symlink");
    symlink("/nonexistent/dangling", d.join("share/dangling")).expect("symlink");
    // Long targets, as buildEnv, Python and Node trees make (Linux allows
    // 4095 bytes).
    for (name, len) in [("long-link", 300), ("longest-link", 4095)] {
        let target = format!("/nix/store/{lib}/{}", "d/".repeat(len));
        symlink(&target[..len], d.join("share").join(name)).expect("symlink");
    }

    write(
        store.join(&single).as_std_path(),
        b"#!/bin/sh\necho single\n",
        0o555,
    );
    symlink(format!("/nix/store/{single}"), store.join(&link)).expect("symlink");

    let s = store.join(&sys);
    std::fs::create_dir_all(&s).expect("mkdir");
    write(
        s.join("init").as_std_path(),
        b"#!/bin/sh\necho init\n",
        0o555,
    );
    symlink(format!("/nix/store/{data}"), s.join("data")).expect("symlink");
    for p in [&lib, &data, &single, &link, &sys] {
        std::fs::set_permissions(store.join(p), std::fs::Permissions::from_mode(0o555)).ok();
    }
    std::fs::set_permissions(store.join(&single), std::fs::Permissions::from_mode(0o555)).ok();

    let refs: Vec<(&String, Vec<&String>)> = vec![
        (&lib, vec![]),
        (&data, vec![&lib, &data]),
        (&single, vec![]),
        (&link, vec![&single]),
        (&sys, vec![&data, &link, &sys]),
    ];
    let f = Fixture {
        root,
        registration: dir.join("registration"),
        paths: refs.iter().map(|(p, _)| (*p).clone()).collect(),
        toplevel: format!("/nix/store/{sys}"),
        refs: refs
            .iter()
            .map(|(p, r)| ((*p).clone(), r.iter().map(|r| (*r).clone()).collect()))
            .collect(),
    };
    f.register();
    f
}

/// `unsquashfs -lln` as `mode owner size name`, without times or the root.
pub fn listing(img: &Utf8Path) -> String {
    require("unsquashfs", "squashfs-tools");
    let out = ok(Command::new("unsquashfs")
        .args(["-lln", "-d", "R"])
        .arg(img));
    out.lines()
        .filter_map(|l| {
            let name = &l[l.find(" R/")? + 1..];
            let f: Vec<&str> = l.split_whitespace().take(3).collect();
            Some(format!("{} {} {} {name}", f[0], f[1], f[2]))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Everything about a tree a kernel would show: per entry its path, type,
/// permission bits, and contents or link target.
pub fn describe(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, rel: &Path, out: &mut Vec<String>) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        for n in names {
            let p = dir.join(&n);
            let r = rel.join(&n);
            let m = std::fs::symlink_metadata(&p).expect("stat");
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                out.push(format!(
                    "{} -> {}",
                    r.display(),
                    std::fs::read_link(&p).expect("link").display()
                ));
            } else if m.is_dir() {
                out.push(format!("{}/ {mode:o}", r.display()));
                walk(&p, &r, out);
            } else {
                let data = std::fs::read(&p).expect("read");
                let sum = data.iter().fold(0u64, |h, &b| {
                    h.wrapping_mul(1099511628211).wrapping_add(b as u64)
                });
                out.push(format!("{} {mode:o} {} {sum:x}", r.display(), data.len()));
            }
        }
    }
    let mut out = vec![];
    walk(dir, Path::new(""), &mut out);
    out
}

/// A stage-1 stand-in: `stage1/` (an `init` and a small file) as a gzip'd
/// newc cpio made by GNU cpio, `stage1.gz` in `dir`, the same bytes every
/// time. Its length is not a multiple of 4, so what follows it needs
/// padding.
pub fn stage1_gz(dir: &Utf8Path) -> Utf8PathBuf {
    require("cpio", "cpio");
    let s = dir.join("stage1");
    std::fs::create_dir_all(s.join("etc")).expect("mkdir");
    std::fs::write(s.join("init"), "#!/bin/sh\n").expect("write");
    std::fs::write(s.join("etc/x"), "stage one").expect("write");
    let out = dir.join("stage1.gz");
    sh(&format!(
        "cd {s} && chmod 755 . etc init && chmod 644 etc/x && touch -h -d @1 . init etc etc/x && \
         find . | sort | cpio -o -H newc --quiet --reproducible --owner=0:0 | gzip -9n > {out}"
    ));
    let len = out.metadata().expect("stat").len();
    assert_ne!(len % 4, 0, "the stand-in stage 1 needs no padding after it");
    out
}

/// Write at `path` a `kexec` that records its arguments, one a line, in
/// `kexec.log` beside itself, and keeps a copy of the initrd it was given
/// as `loaded-initrd`. With `FAKE_KEXEC_FILE_FAILS=1` it refuses
/// `--kexec-file-syscall`, as a kernel without kexec_file_load does.
pub fn recording_kexec(path: &Utf8Path) {
    std::fs::write(
        path,
        r#"#!/bin/sh
here=$(dirname "$0")
printf '%s\n' "$@" >>"$here/kexec.log"
for a; do
  case $a in
    --kexec-file-syscall)
      if [ "${FAKE_KEXEC_FILE_FAILS:-}" = 1 ]; then
        echo "kexec_file_load failed: Function not implemented" >&2
        exit 1
      fi ;;
    --initrd=*) cp "${a#--initrd=}" "$here/loaded-initrd" ;;
  esac
done
"#,
    )
    .expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Kernel command lines (after `init=`) and the rootfs the kernel unpacks
/// the initramfs into with each, by its init_rootfs(): a tmpfs with a
/// rootfstype naming tmpfs, or with neither `root=` nor `rootfstype=`; else
/// a ramfs. The boot test proves each on Debian's kernel; the script test
/// that kexec-boot's memory check counts the same rootfs.
pub const ROOTFS_BY_COMMAND_LINE: [(&str, &str); 7] = [
    ("", "tmpfs"),
    ("rootfstype=tmpfs", "tmpfs"),
    ("rootfstype=ramfs", "ramfs"),
    // What nixpkgs' systemd stage 1 adds (systemd/initrd.nix).
    ("root=fstab", "ramfs"),
    ("root=fstab rootfstype=ramfs", "ramfs"),
    // A rootfstype naming tmpfs wins over root= (measured: the boot test).
    ("root=fstab rootfstype=tmpfs", "tmpfs"),
    ("rootfstype=ext4", "ramfs"),
];
