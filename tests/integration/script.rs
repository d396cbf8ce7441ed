//! kexec-boot and netboot.ipxe: snapshots, shellcheck, and runs under dash
//! with a stand-in `kexec` that records what it was asked to do.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use camino::{Utf8Path, Utf8PathBuf};
use mkkexec::boot::script::{BootSpec, kexec_boot, netboot_ipxe};

use crate::common::*;

const TOPLEVEL: &str = "/nix/store/4fqb3vhbdwzi43hf9ax6ji0nvkjzq1ay-nixos-system-kexec-26.05";

fn params() -> Vec<String> {
    vec![
        "console=ttyS0,115200".into(),
        "panic=30".into(),
        "quoted='it''s $(x)'".into(),
    ]
}

/// A 300 MiB initrd that unpacks to `unpacked` bytes, a kernel: a
/// [`FakeHost`] puts the sizes and sums of its own files in place.
fn spec(params: &[String], unpacked: u64) -> BootSpec<'_> {
    BootSpec {
        initrd_bytes: 300 << 20,
        unpacked_bytes: unpacked,
        initrd_sha256: "1".repeat(64),
        kernel_bytes: 20 << 20,
        kernel_sha256: "2".repeat(64),
        ..BootSpec::new(TOPLEVEL, params)
    }
}

fn script(spec: &BootSpec) -> String {
    kexec_boot(spec).expect("render kexec-boot")
}

#[test]
fn kexec_boot_snapshot() {
    let p = params();
    insta::assert_snapshot!("kexec-boot", script(&spec(&p, 320 << 20)));
    // iPXE cannot carry the third parameter (`$`).
    let ipxe = netboot_ipxe(&spec(&p[..2], 320 << 20), "bzImage", "initrd.gz");
    insta::assert_snapshot!("netboot.ipxe", ipxe.expect("render netboot.ipxe"));
}

#[test]
fn kexec_boot_is_shellcheck_clean() {
    require("shellcheck", "shellcheck");
    let (_t, dir) = tempdir();
    let s = dir.join("kexec-boot");
    std::fs::write(&s, script(&spec(&params(), 1))).expect("write");
    ok(Command::new("shellcheck")
        .args(["--shell=sh", "--severity=style"])
        .arg(&s));
}

/// A foreign host in a directory: the tree (`tree/`, with the script, a
/// stand-in kernel, a real stage-1 initrd, a recording kexec and an `ip`
/// that prints a capture of tests/fixture/network), the files kexec-boot
/// carries (`host/`, passed as NIXOS_KEXEC_CARRY_FROM) and a TMPDIR.
struct FakeHost {
    _t: tempfile::TempDir,
    dir: Utf8PathBuf,
}

const ROOT_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHfGcWZ4P2n4Wm8A0yWkX4qj9kA2b8sL3bP7uYc0Qq3 operator@laptop";

impl FakeHost {
    /// The host, with kexec-boot rendered from `spec` for its bzImage and
    /// initrd.gz ([`FakeHost::render`]).
    fn new(spec: &BootSpec) -> Self {
        let (t, dir) = tempdir();
        let tree = dir.join("tree");
        std::fs::create_dir(&tree).expect("mkdir");
        std::fs::write(tree.join("bzImage"), "kernel").expect("write");
        std::fs::copy(stage1_gz(&dir), tree.join("initrd.gz")).expect("copy");
        recording_kexec(&tree.join("kexec"));
        let capture =
            Utf8PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixture/network/static");
        std::fs::write(
            tree.join("ip"),
            format!(
                "#!/bin/sh\ncase \"$*\" in\n\
                 '-json addr') cat {capture}/addrs.json ;;\n\
                 '-json -4 route show table main') cat {capture}/routes-v4.json ;;\n\
                 '-json -6 route show table main') cat {capture}/routes-v6.json ;;\n\
                 '-json -details link') echo '[]' ;;\n\
                 *) echo \"ip: unexpected $*\" >&2; exit 1 ;;\nesac\n"
            ),
        )
        .expect("write");
        std::fs::set_permissions(tree.join("ip"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");

        let host = dir.join("host");
        for d in [
            "etc/ssh",
            "root/.ssh",
            "home/debian/.ssh",
            "etc/ssh/authorized_keys.d",
            "tmp",
        ] {
            std::fs::create_dir_all(host.join(d)).expect("mkdir");
        }
        let files = [
            ("etc/ssh/ssh_host_ed25519_key", "PRIVATE ed25519\n"),
            (
                "etc/ssh/ssh_host_ed25519_key.pub",
                "ssh-ed25519 AAAAhost root@old\n",
            ),
            ("etc/ssh/ssh_host_rsa_key", "PRIVATE rsa\n"),
            ("etc/machine-id", "0123456789abcdef0123456789abcdef\n"),
            ("etc/hostname", "old-server\n"),
            (
                "etc/resolv.conf",
                "# from DHCP\nnameserver 203.0.113.53\nsearch example.net\n",
            ),
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\ndebian:x:1000:1000::/home/debian:/bin/sh\n",
            ),
            (
                "home/debian/.ssh/authorized_keys",
                "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 debian@ci\n",
            ),
            (
                "etc/ssh/authorized_keys.d/root",
                "sk-ssh-ed25519@openssh.com AAAAGnNr key@yubi\n",
            ),
        ];
        for (f, text) in files {
            std::fs::write(host.join(f), text).expect("write");
        }
        // The restriction cloud images put in front of root's keys.
        std::fs::write(
            host.join("root/.ssh/authorized_keys"),
            format!(
                "# managed\nno-port-forwarding,no-agent-forwarding,no-X11-forwarding,command=\"echo 'Please login as the user \\\"debian\\\" rather than the user \\\"root\\\".';echo;sleep 10;exit 142\" {ROOT_KEY}\n{ROOT_KEY}\n"
            ),
        )
        .expect("write");
        let h = FakeHost { _t: t, dir };
        h.render(spec);
        h
    }

    /// Write kexec-boot from `spec`, with the sizes and SHA-256 of the
    /// tree's bzImage and initrd.gz as they are now (the memory model's
    /// unpacked size stays `spec`'s).
    fn render(&self, spec: &BootSpec) {
        let tree = self.tree();
        let spec = BootSpec {
            unpacked_bytes: spec.unpacked_bytes,
            ..spec
                .clone()
                .with_kernel(&tree.join("bzImage"))
                .expect("kernel")
        };
        let (initrd_bytes, initrd_sha256) =
            mkkexec::boot::script::file_sum(&tree.join("initrd.gz")).expect("initrd");
        let spec = BootSpec {
            initrd_bytes,
            initrd_sha256,
            ..spec
        };
        std::fs::write(tree.join("kexec-boot"), script(&spec)).expect("write");
        std::fs::set_permissions(
            tree.join("kexec-boot"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
    }

    fn tree(&self) -> Utf8PathBuf {
        self.dir.join("tree")
    }

    /// kexec-boot under dash, as root on the fake host.
    fn run(&self, args: &[&str]) -> Command {
        self.run_via(&[], args)
    }

    /// [`FakeHost::run`] under `wrapper` (e.g. `ip netns exec NS`).
    fn run_via(&self, wrapper: &[&str], args: &[&str]) -> Command {
        require("dash", "dash");
        let mut c = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg("dash");
                c
            }
            None => Command::new("dash"),
        };
        c.arg(self.tree().join("kexec-boot"))
            .args(args)
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .env("NIXOS_KEXEC_CARRY_FROM", self.dir.join("host"))
            .env("TMPDIR", self.dir.join("host/tmp"))
            .env_remove("SUDO_USER")
            .env_remove("DOAS_USER");
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.tree().join("kexec.log")).expect("kexec was not run")
    }

    /// The carried files of the initrd kexec was given, unpacked.
    fn carried(&self) -> Utf8PathBuf {
        let loaded = std::fs::read(self.tree().join("loaded-initrd")).expect("no initrd loaded");
        let initrd = std::fs::read(self.tree().join("initrd.gz")).expect("read");
        assert_eq!(
            &loaded[..initrd.len()],
            &initrd[..],
            "initrd.gz is not first"
        );
        let start = initrd.len().div_ceil(4) * 4;
        assert!(
            loaded[initrd.len()..start].iter().all(|&b| b == 0),
            "padding"
        );
        let out = self.dir.join("carried");
        std::fs::create_dir_all(&out).expect("mkdir");
        std::fs::write(self.dir.join("carried.cpio"), &loaded[start..]).expect("write");
        require("cpio", "cpio");
        sh(&format!(
            "cd {out} && cpio -idm --quiet < {}",
            self.dir.join("carried.cpio")
        ));
        out.join("nixos-kexec-carry")
    }
}

fn log_without_initrd(log: &str) -> String {
    log.lines()
        .map(|l| {
            if l.starts_with("--initrd=") {
                "--initrd=…"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_loads_and_executes_under_dash() {
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    ok(&mut h.run(&["--no-detach"]));
    let tree = h.tree();
    assert_eq!(
        log_without_initrd(&h.log()),
        format!(
            "--kexec-file-syscall\n--load\n{tree}/bzImage\n--initrd=…\n\
             --command-line=init={TOPLEVEL}/init systemd.machine_id=0123456789abcdef0123456789abcdef \
             console=ttyS0,115200 panic=30 quoted='it''s $(x)'\n-e"
        )
    );
    // initrd.gz may be written: the carried files were appended to it in
    // place, loaded, and cut off again; TMPDIR held only them, and is empty.
    let built = std::fs::read(h.dir.join("stage1.gz")).expect("read");
    assert!(
        h.log().contains(&format!("--initrd={tree}/initrd.gz\n")),
        "{}",
        h.log()
    );
    assert!(std::fs::read(tree.join("initrd.gz")).expect("read") == built);
    let loaded = std::fs::read(tree.join("loaded-initrd")).expect("loaded");
    assert!(loaded.len() > built.len() && loaded[..built.len()] == built[..]);
    assert_eq!(
        std::fs::read_dir(h.dir.join("host/tmp"))
            .expect("ls")
            .count(),
        0
    );
    // An initrd.gz its owner may not write (a tree unpacked read-only), or
    // a symlink (to who knows what), is copied with the carried files into
    // TMPDIR, as in a Nix store.
    sh(&format!(
        "chmod 444 {tree}/initrd.gz && rm {tree}/kexec.log"
    ));
    ok(&mut h.run(&["--no-detach"]));
    assert!(
        h.log()
            .contains(&format!("--initrd={}/host/tmp/nixos-kexec.", h.dir)),
        "{}",
        h.log()
    );
    assert!(std::fs::read(tree.join("loaded-initrd")).expect("loaded") == loaded);
    sh(&format!(
        "cd {tree} && chmod 644 initrd.gz && mv initrd.gz built.gz && ln -s built.gz initrd.gz && rm kexec.log"
    ));
    ok(&mut h.run(&["--no-detach"]));
    assert!(
        h.log()
            .contains(&format!("--initrd={}/host/tmp/nixos-kexec.", h.dir)),
        "{}",
        h.log()
    );
    assert!(std::fs::read(tree.join("built.gz")).expect("read") == built);
    assert_eq!(
        std::fs::read_dir(h.dir.join("host/tmp"))
            .expect("ls")
            .count(),
        0
    );
}

/// A run that stopped between appending the carried files to initrd.gz
/// and cutting them off (a crash, a kill -9) leaves them there: the next
/// run cuts them off and boots. A failed load cuts them off too.
#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_cuts_back_what_an_interrupted_run_appended() {
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    let tree = h.tree();
    let built = std::fs::read(tree.join("initrd.gz")).expect("read");
    ok(&mut h.run(&["--dry-run"]));
    let loaded = std::fs::read(tree.join("loaded-initrd")).expect("loaded");
    // As the interrupted run left it.
    std::fs::write(tree.join("initrd.gz"), &loaded).expect("write");
    let out = h.run(&["--no-detach"]).output().expect("spawn");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{e}");
    assert!(
        e.contains(&format!(
            "{tree}/initrd.gz still holds the carried files of a run that did not finish: cutting them off"
        )),
        "{e}"
    );
    assert!(std::fs::read(tree.join("loaded-initrd")).expect("loaded") == loaded);
    assert!(std::fs::read(tree.join("initrd.gz")).expect("read") == built);

    // A kexec that cannot load: refused, and initrd.gz is as built.
    std::fs::write(
        tree.join("kexec"),
        "#!/bin/sh\necho 'kexec_load failed: Invalid argument' >&2\nexit 1\n",
    )
    .expect("write");
    let e = fails(&mut h.run(&["--no-detach"]));
    assert!(e.contains("the new kernel could not be loaded."), "{e}");
    assert!(std::fs::read(tree.join("initrd.gz")).expect("read") == built);
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_carries_the_machine_in_a_cpio_after_the_initrd() {
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    ok(&mut h.run(&["--no-detach"]));
    // The kernel's own reader agrees on the layout: stage 1, then the cpio.
    let inspect = ok(mkkexec().arg("inspect").arg(h.tree().join("loaded-initrd")));
    assert!(inspect.contains("none (cpio)"), "{inspect}");
    let c = h.carried();
    let read =
        |f: &str| std::fs::read_to_string(c.join(f)).unwrap_or_else(|_| panic!("{f} not carried"));
    let capture = format!(
        "{}/tests/fixture/network/static",
        env!("CARGO_MANIFEST_DIR")
    );
    assert_eq!(
        read("network/addrs.json"),
        std::fs::read_to_string(format!("{capture}/addrs.json")).expect("capture")
    );
    assert_eq!(
        read("network/routes-v6.json"),
        std::fs::read_to_string(format!("{capture}/routes-v6.json")).expect("capture")
    );
    assert_eq!(
        read("network/resolv.conf"),
        "nameserver 203.0.113.53\nsearch example.net\n"
    );
    assert_eq!(read("ssh/ssh_host_ed25519_key"), "PRIVATE ed25519\n");
    assert_eq!(
        read("ssh/ssh_host_ed25519_key.pub"),
        "ssh-ed25519 AAAAhost root@old\n"
    );
    assert_eq!(read("ssh/ssh_host_rsa_key"), "PRIVATE rsa\n");
    assert_eq!(read("machine-id"), "0123456789abcdef0123456789abcdef\n");
    assert_eq!(read("hostname"), "old-server\n");
    // Root's key once, without the restriction; the drop-in's key; not the
    // key of a user who did not run it.
    assert_eq!(
        read("authorized_keys"),
        format!("{ROOT_KEY}\nsk-ssh-ed25519@openssh.com AAAAGnNr key@yubi\n")
    );
    assert!(!c.join("notes").exists(), "{}", read("notes"));
    // Private, as on the old host.
    let mode = std::fs::metadata(
        h.dir
            .join("carried/nixos-kexec-carry/ssh/ssh_host_ed25519_key"),
    )
    .expect("stat")
    .permissions()
    .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_carries_the_keys_of_the_sudo_user() {
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    ok(h.run(&["--no-detach"]).env("SUDO_USER", "debian"));
    let keys = std::fs::read_to_string(h.carried().join("authorized_keys")).expect("keys");
    assert!(
        keys.contains("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 debian@ci"),
        "{keys}"
    );
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_carries_the_keys_of_the_doas_user() {
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    ok(h.run(&["--no-detach"]).env("DOAS_USER", "debian"));
    let keys = std::fs::read_to_string(h.carried().join("authorized_keys")).expect("keys");
    assert!(
        keys.contains("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 debian@ci"),
        "{keys}"
    );
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_hands_the_extra_flags_to_both_loads() {
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    // As nixos-anywhere passes them: one argument, split at spaces; a glob
    // character stays as it is.
    let out = h
        .run(&["--kexec-extra-flags", "--no-sync  --debug=*", "--no-detach"])
        .env("FAKE_KEXEC_FILE_FAILS", "1")
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let log = log_without_initrd(&h.log());
    let tree = h.tree();
    let load = |syscall: &str| {
        format!(
            "{syscall}\n--load\n{tree}/bzImage\n--initrd=…\n\
             --command-line=init={TOPLEVEL}/init systemd.machine_id=0123456789abcdef0123456789abcdef \
             console=ttyS0,115200 panic=30 quoted='it''s $(x)'\n--no-sync\n--debug=*\n"
        )
    };
    assert_eq!(
        log,
        format!(
            "{}{}-e",
            load("--kexec-file-syscall"),
            load("--kexec-syscall")
        )
    );
    // What nixos-anywhere looks for before it waits for the machine to go.
    assert!(
        err.contains("the machine will boot into nixos now"),
        "{err}"
    );
    // An empty value (nixos-anywhere's default) adds nothing.
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    ok(&mut h.run(&["--kexec-extra-flags", "", "--no-detach"]));
    assert!(
        h.log().contains("panic=30 quoted='it''s $(x)'\n-e\n"),
        "{}",
        h.log()
    );
    // A missing value is refused before anything runs.
    let e = fails(&mut h.run(&["--kexec-extra-flags"]));
    assert!(
        e.contains("--kexec-extra-flags needs the flags, as one argument"),
        "{e}"
    );
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_says_what_it_could_not_carry() {
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    let host = h.dir.join("host");
    std::fs::remove_file(h.tree().join("ip")).expect("rm");
    sh(&format!(
        "rm {host}/etc/ssh/ssh_host_* {host}/etc/ssh/authorized_keys.d/root {host}/root/.ssh/authorized_keys"
    ));
    // A file no list of keys is.
    std::fs::write(host.join("root/.ssh/authorized_keys"), vec![b'x'; 2 << 20]).expect("write");
    // A TMPDIR that cannot be written is passed over for /var/tmp, where
    // the initrd is copied (initrd.gz read-only: not appended in place).
    sh(&format!("chmod 444 {}/initrd.gz", h.tree()));
    let out = h
        .run(&["--no-detach"])
        .env("TMPDIR", "/proc")
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        h.log().contains("--initrd=/var/tmp/nixos-kexec."),
        "{}",
        h.log()
    );
    // Without the bundled ip, the host's own reads the network.
    assert!(h.carried().join("network/addrs.json").is_file());
    let notes = std::fs::read_to_string(h.carried().join("notes")).expect("notes");
    for said in [
        "no SSH host keys in /etc/ssh",
        "has 2097152 bytes, more than any list of keys",
        "no authorized SSH keys for root found",
    ] {
        assert!(
            notes.contains(said) && err.contains(said),
            "{said}: {notes}\n{err}"
        );
    }
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_falls_back_to_kexec_load_on_its_error() {
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    let out = h
        .run(&["--no-detach"])
        .env("FAKE_KEXEC_FILE_FAILS", "1")
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("kexec_file_load failed (kexec_file_load failed: Function not implemented); loaded with kexec_load"),
        "{err}"
    );
    let log = h.log();
    assert!(
        log.contains("--kexec-file-syscall\n") && log.contains("--kexec-syscall\n"),
        "{log}"
    );
    assert!(log.ends_with("\n-e\n"), "{log}");
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_dry_run_loads_unloads_and_can_run_again() {
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    // The tree is read-only, as nix build's result is.
    sh(&format!("chmod -R a-w {}", h.tree()));
    sh(&format!("chmod u+w {}", h.tree()));
    let dry = h.run(&["--dry-run"]).output().expect("spawn");
    assert!(dry.status.success(), "{dry:?}");
    let dry = String::from_utf8_lossy(&dry.stderr);
    // Nothing is handed over: nixos-anywhere must not take it for a kexec.
    assert!(!dry.contains("machine will boot into nixos"), "{dry}");
    assert!(h.log().ends_with("\n--unload\n"), "{}", h.log());
    let first = std::fs::read(h.tree().join("loaded-initrd")).expect("loaded");
    ok(&mut h.run(&["--no-detach"]));
    let second = std::fs::read(h.tree().join("loaded-initrd")).expect("loaded");
    // A second run carries the same files once: nothing stacks.
    assert!(first == second, "the second run loaded another initrd");
    assert!(h.log().ends_with("\n-e\n"), "{}", h.log());
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_detaches_and_returns_first() {
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    let start = std::time::Instant::now();
    let out = h.run(&[]).output().expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("the new system starts in 2 s"), "{err}");
    assert!(err.contains("machine will boot into nixos"), "{err}");
    assert!(
        !h.log().contains("\n-e\n"),
        "started before the script returned"
    );
    // The detached process starts it a little later.
    while !h.log().ends_with("\n-e\n") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "never started: {}",
            h.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_refuses_without_kexec() {
    let h = FakeHost::new(&spec(&params(), 1));
    std::fs::remove_file(h.tree().join("kexec")).expect("rm");
    let e = fails(h.run(&[]).env("PATH", "/usr/bin:/bin"));
    assert!(e.contains("kexec not found: install kexec-tools"), "{e}");
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_refuses_without_enough_memory() {
    // A tmpfs rootfs: the initrd (under 1 MiB), twice the 1 TiB it unpacks, 48.
    let h = FakeHost::new(&spec(&params(), 1 << 40));
    let e = fails(&mut h.run(&[]));
    assert!(
        e.contains("not enough memory: this image needs 2097200 MiB of RAM and this machine has ")
            && e.contains("rootfstype=ramfs on the kernel command line (nixosKexec.initramfsOnRamfs) would lower it to 1048624 MiB")
            && e.contains("Nothing was loaded."),
        "{e}"
    );
    assert!(!h.tree().join("kexec.log").exists(), "kexec ran anyway");
    // A ramfs holds it once.
    let mut ramfs = params();
    ramfs.push("rootfstype=ramfs".into());
    let h = FakeHost::new(&spec(&ramfs, 1 << 40));
    let e = fails(&mut h.run(&[]));
    assert!(
        e.contains("this image needs 1048624 MiB of RAM")
            && e.contains("into a ramfs; a smaller system would lower it"),
        "{e}"
    );
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_counts_the_rootfs_the_kernel_unpacks_into() {
    // An initrd under 1 MiB, 1 TiB unpacked: a tmpfs needs it twice, a ramfs once.
    let need = |rootfs: &str| match rootfs {
        "tmpfs" => "this image needs 2097200 MiB of RAM",
        _ => "this image needs 1048624 MiB of RAM",
    };
    for (line, rootfs) in ROOTFS_BY_COMMAND_LINE {
        let mut p = params();
        p.extend(line.split_whitespace().map(String::from));
        let h = FakeHost::new(&spec(&p, 1 << 40));
        let e = fails(&mut h.run(&[]));
        assert!(
            e.contains(need(rootfs)) && e.contains(&format!("into a {rootfs};")),
            "{line:?} gives a {rootfs}: {e}"
        );
    }
    // Parameters after "--" are init's: the kernel ignores them.
    let mut p = params();
    p.extend(["--".into(), "root=fstab".into()]);
    let h = FakeHost::new(&spec(&p, 1 << 40));
    let e = fails(&mut h.run(&[]));
    assert!(e.contains(need("tmpfs")), "{e}");
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise, and a mount namespace (scripts/test.sh runs it)"]
fn kexec_boot_refuses_without_enough_free_memory_before_loading() {
    // Enough RAM, but little of it free now: what kexec copies must fit.
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    let meminfo = h.dir.join("meminfo");
    std::fs::write(
        &meminfo,
        "MemTotal:       16000000 kB\nMemFree:          100000 kB\nMemAvailable:       8192 kB\n",
    )
    .expect("write");
    let mount = format!("mount --bind {meminfo} /proc/meminfo && exec \"$@\"");
    let e = fails(&mut h.run_via(&["unshare", "-m", "sh", "-c", &mount, "sh"], &[]));
    assert!(
        e.contains("not enough free memory to load the new kernel: kexec needs 16 MiB free")
            && e.contains("this machine has 8 MiB available (MemAvailable)")
            && e.contains("Nothing was loaded."),
        "{e}"
    );
    assert!(!h.tree().join("kexec.log").exists(), "kexec ran anyway");
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_refuses_a_kernel_of_another_architecture() {
    let machine = sh("uname -m");
    let machine = machine.trim();
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    // A header as each architecture's kernel has it.
    let kernel = |offset: usize, magic: &[u8]| {
        let mut k = vec![0u8; 1024];
        k[offset..offset + 4].copy_from_slice(magic);
        std::fs::write(h.tree().join("bzImage"), k).expect("write");
        // As mkkexec would have written it: the check of what was built
        // passes, the architecture is what is refused.
        h.render(&spec(&params(), 1 << 20));
    };
    let (mine, other, other_arch) = match machine {
        "x86_64" => ((514, b"HdrS"), (56, b"ARMd"), "aarch64"),
        _ => ((56, b"ARMd"), (514, b"HdrS"), "x86_64"),
    };
    kernel(other.0, other.1);
    let e = fails(&mut h.run(&["--no-detach"]));
    assert!(
        e.contains(&format!(
            "this tree boots an {other_arch} kernel, and this machine is {machine} (uname -m)"
        )),
        "{e}"
    );
    assert!(!h.tree().join("kexec.log").exists(), "kexec ran anyway");
    kernel(mine.0, mine.1);
    ok(&mut h.run(&["--no-detach"]));
}

/// A bzImage or initrd.gz cut short or with one bit flipped (an interrupted
/// copy, a bad disk) is refused before anything is loaded, with what to do.
#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_refuses_a_damaged_kernel_or_initrd() {
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    for file in ["bzImage", "initrd.gz"] {
        let path = h.tree().join(file);
        let good = std::fs::read(&path).expect("read");
        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x10;
        let cut = &good[..good.len() - 1];
        for (damage, bytes, why) in [
            (
                "cut",
                cut,
                format!("it has {} bytes, mkkexec wrote {}", cut.len(), good.len()),
            ),
            ("flipped", &flipped[..], "its SHA-256 is ".to_owned()),
        ] {
            std::fs::write(&path, bytes).expect("write");
            let e = fails(&mut h.run(&["--no-detach"]));
            assert!(
                e.contains(&format!("kexec-boot: {path} is damaged ({why}"))
                    && e.contains("copy the tarball (or the tree) again. Nothing was loaded."),
                "{file} {damage}: {e}"
            );
            if damage == "flipped" {
                let sum = sh(&format!("sha256sum {path}"));
                let sum = sum.split(' ').next().expect("sum");
                assert!(
                    e.contains(&format!("its SHA-256 is {sum}, mkkexec wrote ")),
                    "{e}"
                );
            }
            assert_eq!(e.lines().count(), 1, "said once: {e}");
            assert!(
                !h.tree().join("kexec.log").exists(),
                "{file} {damage}: kexec ran"
            );
        }
        std::fs::write(&path, &good).expect("write");
    }
    // Whole again, it loads.
    ok(&mut h.run(&["--no-detach"]));
    assert!(h.log().contains("--load"), "{}", h.log());
}

/// Without coreutils' sha256sum, busybox's checks; without either, sizes
/// are checked and the script says the rest is not.
#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_without_sha256sum_checks_sizes_and_warns() {
    require("busybox", "busybox-static");
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    let path_without = |name: &str, drop: &str| {
        let bin = h.dir.join(name);
        std::fs::create_dir_all(&bin).expect("mkdir");
        sh(&format!(
            "for d in /usr/bin /bin /usr/sbin /sbin; do for f in $d/*; do \
               case ${{f##*/}} in {drop}) ;; *) [ -e {bin}/${{f##*/}} ] || ln -s $f {bin}/ ;; esac; \
             done; done"
        ));
        bin
    };
    let path = h.tree().join("initrd.gz");
    let good = std::fs::read(&path).expect("read");
    let mut flipped = good.clone();
    flipped[0] ^= 1;
    // Same size: only a hash sees it.
    std::fs::write(&path, &flipped).expect("write");
    let e = fails(
        h.run(&["--dry-run"])
            .env("PATH", path_without("busybox-only", "sha256sum")),
    );
    assert!(
        e.contains(&format!("{path} is damaged (its SHA-256 is ")),
        "{e}"
    );
    assert!(!h.tree().join("kexec.log").exists(), "kexec ran");

    let bin = path_without("no-sha256sum", "sha256sum | busybox");
    let out = h
        .run(&["--dry-run"])
        .env("PATH", &bin)
        .output()
        .expect("spawn");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("warning: no sha256sum (coreutils or busybox): bzImage and initrd.gz are checked by their sizes only"),
        "{e}"
    );
    std::fs::write(&path, &good[..good.len() - 4]).expect("write");
    let e = fails(h.run(&[]).env("PATH", &bin));
    assert!(
        e.contains(&format!(
            "{path} is damaged (it has {} bytes",
            good.len() - 4
        )),
        "{e}"
    );
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_refuses_an_unknown_option() {
    let h = FakeHost::new(&spec(&params(), 1));
    let e = fails(&mut h.run(&["--yes"]));
    assert!(e.contains("unknown option --yes"), "{e}");
    assert!(!h.tree().join("kexec.log").exists(), "kexec ran anyway");
}

#[test]
#[ignore = "needs root to drop to another user (scripts/test.sh runs it)"]
fn kexec_boot_refuses_when_not_root() {
    require("setpriv", "util-linux");
    let h = FakeHost::new(&spec(&params(), 1));
    std::fs::set_permissions(&h.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "dash"])
        .arg(h.tree().join("kexec-boot"));
    let e = fails(&mut c);
    assert!(e.contains("must run as root"), "{e}");
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_runs_no_command_a_parameter_carries() {
    let pwned_dir = tempdir();
    let pwned = pwned_dir.1.join("pwned");
    let params = vec![
        format!("'; touch {pwned}; '"),
        format!("$(touch {pwned})"),
        "x=@INITRD_BYTES@".to_owned(),
    ];
    let h = FakeHost::new(&spec(&params, 1 << 20));
    ok(&mut h.run(&["--no-detach"]));
    assert!(!pwned.exists(), "a kernel parameter ran a command");
    assert!(
        h.log().contains(&format!(
            "init={TOPLEVEL}/init systemd.machine_id=0123456789abcdef0123456789abcdef \
             '; touch {pwned}; ' $(touch {pwned}) x=@INITRD_BYTES@\n"
        )),
        "{}",
        h.log()
    );
}

/// A PATH with a shell and coreutils only, as in systemd's stage 1
/// (nixpkgs' boot.initrd.systemd.initrdBin: bash, coreutils, kmod, systemd).
fn coreutils_only(dir: &Utf8Path) -> Utf8PathBuf {
    let bin = dir.join("coreutils-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    sh(&format!(
        "for f in $(dpkg -L coreutils | grep '/bin/'); do [ -f $f ] && ln -sf $f {bin}/; done; ln -sf /bin/dash {bin}/sh"
    ));
    assert!(!bin.join("awk").exists() && !bin.join("sed").exists() && !bin.join("grep").exists());
    bin
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn carried_files_land_in_the_new_system_with_coreutils_only() {
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    ok(&mut h.run(&["--no-detach"]));
    let carried = h.carried();
    let root = h.dir.join("sysroot");
    std::fs::create_dir(&root).expect("mkdir");
    let carry_in = format!("{}/nix/carry-in.sh", env!("CARGO_MANIFEST_DIR"));
    let bin = coreutils_only(&h.dir);
    for _ in 0..2 {
        // Twice: a second run changes nothing.
        ok(Command::new("/bin/dash")
            .arg("-euc")
            .arg(format!(". {carry_in}; carry_in {root} {carried}"))
            .env("PATH", &bin));
    }
    let read =
        |f: &str| std::fs::read_to_string(root.join(f)).unwrap_or_else(|_| panic!("{f} missing"));
    let mode = |f: &str| {
        std::fs::metadata(root.join(f))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(read("etc/ssh/ssh_host_ed25519_key"), "PRIVATE ed25519\n");
    assert_eq!(mode("etc/ssh/ssh_host_ed25519_key"), 0o600);
    assert_eq!(mode("etc/ssh/ssh_host_ed25519_key.pub"), 0o644);
    assert_eq!(read("etc/machine-id"), "0123456789abcdef0123456789abcdef\n");
    let keys = read("root/.ssh/authorized_keys");
    assert_eq!(keys.lines().count(), 2, "{keys}");
    assert!(keys.contains(ROOT_KEY), "{keys}");
    assert_eq!(mode("root/.ssh/authorized_keys"), 0o600);
    assert_eq!(mode("root/.ssh"), 0o700);
    // The network unit of the new system reads the carried state.
    let units = root.join("run/systemd/network");
    ok(mkkexec()
        .args(["network", "--state"])
        .arg(root.join("var/lib/nixos-kexec/carried/network"))
        .arg("--output")
        .arg(&units));
    let d0 = std::fs::read_to_string(units.join("00-nixos-kexec-d0.network")).expect("unit");
    assert!(
        d0.contains("MACAddress=52:54:00:12:34:56\n") && d0.contains("Address=203.0.113.10/24\n"),
        "{d0}"
    );
    assert!(
        d0.contains("DNS=203.0.113.53\n") && d0.contains("Domains=example.net\n"),
        "{d0}"
    );
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise, and a mount namespace (scripts/test.sh runs it)"]
fn carried_keys_land_when_etc_is_read_only() {
    // An immutable /etc overlay (system.etc.overlay.mutable = false) is
    // mounted read-only before the carrying unit runs, under its `set -e`.
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    ok(&mut h.run(&["--no-detach"]));
    let carried = h.carried();
    let root = h.dir.join("sysroot");
    std::fs::create_dir_all(root.join("etc/ssh")).expect("mkdir");
    let carry_in = format!("{}/nix/carry-in.sh", env!("CARGO_MANIFEST_DIR"));
    let bin = coreutils_only(&h.dir);
    require("unshare", "util-linux");
    // The host keys where services.openssh.hostKeys says: ed25519 in
    // /var/lib/ssh, rsa in the read-only /etc.
    let out = Command::new("unshare")
        .args(["-m", "/bin/sh", "-c"])
        .arg(format!(
            "mount --bind {root}/etc {root}/etc && mount -o remount,bind,ro {root}/etc && \
             touch {root}/etc/probe 2>/dev/null && exit 99; \
             PATH={bin} exec /bin/dash -euc '. {carry_in}; carry_in {root} {carried} \
             rsa:/etc/ssh/ssh_host_rsa_key ed25519:/var/lib/ssh/ssh_host_ed25519_key; echo DONE'"
        ))
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("DONE"),
        "{}: {err}",
        out.status
    );
    let read =
        |f: &str| std::fs::read_to_string(root.join(f)).unwrap_or_else(|_| panic!("{f} missing"));
    // The keys that log in first, then the host key sshd reads from /var.
    assert!(read("root/.ssh/authorized_keys").contains(ROOT_KEY));
    assert_eq!(
        read("var/lib/ssh/ssh_host_ed25519_key"),
        "PRIVATE ed25519\n"
    );
    assert_eq!(
        read("var/lib/ssh/ssh_host_ed25519_key.pub"),
        "ssh-ed25519 AAAAhost root@old\n"
    );
    assert!(
        root.join("var/lib/nixos-kexec/carried/network/addrs.json")
            .is_file()
    );
    // What /etc could not take is said, each on its own.
    assert!(!root.join("etc/machine-id").exists());
    assert!(!root.join("etc/ssh/ssh_host_rsa_key").exists());
    for said in [
        "nixos-kexec: could not place /etc/machine-id: systemd takes the machine-id from systemd.machine_id=",
        "nixos-kexec: could not place the rsa host key at /etc/ssh/ssh_host_rsa_key",
    ] {
        assert!(err.contains(said), "{said}: {err}");
    }
}

/// A network namespace, deleted when dropped.
struct Netns(&'static str);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", self.0]).status();
    }
}

#[test]
#[ignore = "needs root: network namespaces and kexec-boot (scripts/test.sh runs it)"]
fn kexec_boot_without_ip_carries_what_proc_net_says_as_ip_would() {
    let h = FakeHost::new(&spec(&params(), 1 << 20));
    std::fs::remove_file(h.tree().join("ip")).expect("rm");
    let ns = Netns("mkkexec-proc");
    let _ = Command::new("ip").args(["netns", "del", ns.0]).status();
    // A static server: two links, an on-link gateway outside the /32.
    sh(&format!(
        "ip netns add {n} && ip -n {n} link set lo up && \
         ip link add mkpp0 type veth peer name e0 address 52:54:00:12:34:56 netns {n} && \
         ip link add mkpp1 type veth peer name e1 address 96:00:00:aa:bb:cc netns {n} && \
         ip link set mkpp0 up && ip link set mkpp1 up && ip -n {n} link set e0 up && ip -n {n} link set e1 up && \
         ip -n {n} addr add 203.0.113.10/24 dev e0 && ip -n {n} addr add 2001:db8:1::10/64 dev e0 nodad && \
         ip -n {n} route add default via 203.0.113.1 dev e0 && \
         ip -n {n} route add 198.51.100.0/24 via 203.0.113.254 dev e0 metric 100 && \
         ip -n {n} -6 route add default via fe80::1 dev e0 && \
         ip -n {n} addr add 192.0.2.77/32 dev e1 && \
         ip -n {n} route add 10.9.0.0/16 via 172.31.1.1 dev e1 onlink",
        n = ns.0
    ));
    // What iproute2 says, through the same unit writer.
    let json = h.dir.join("json-state");
    std::fs::create_dir(&json).expect("mkdir");
    for (f, args) in [
        ("addrs.json", "-json addr"),
        ("routes-v4.json", "-json -4 route show table main"),
        ("routes-v6.json", "-json -6 route show table main"),
    ] {
        sh(&format!("ip -n {} {args} > {json}/{f}", ns.0));
    }
    // kexec-boot with no ip anywhere on PATH.
    let bin = h.dir.join("bin-without-ip");
    std::fs::create_dir(&bin).expect("mkdir");
    sh(&format!(
        "for f in /usr/bin/* /usr/sbin/*; do [ \"${{f##*/}}\" = ip ] || ln -sf $f {bin}/; done"
    ));
    // (Found before PATH loses it.)
    let ip = sh("command -v ip");
    let out = h
        .run_via(&[ip.trim(), "netns", "exec", ns.0], &["--no-detach"])
        .env("PATH", &bin)
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(
            "no ip command: the network is carried as /proc/net and /sys/class/net say it"
        ),
        "{err}"
    );
    let carried = h.carried();
    std::fs::copy(
        carried.join("network/resolv.conf"),
        json.join("resolv.conf"),
    )
    .expect("copy");
    let units = |state: &Utf8Path, out: &str| -> (Vec<(String, String)>, String) {
        let dir = h.dir.join(out);
        let made = mkkexec()
            .args(["network", "--state"])
            .arg(state)
            .arg("-o")
            .arg(&dir)
            .output()
            .expect("spawn");
        let said = String::from_utf8_lossy(&made.stderr).into_owned();
        assert!(made.status.success(), "{said}");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("ls")
            .map(|e| {
                let p = e.expect("entry").path();
                let name = p.file_name().expect("name").to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).expect("read"))
            })
            .collect();
        files.sort();
        (files, said)
    };
    let (from_proc, said) = units(&carried.join("network"), "units-proc");
    let (mut from_ip, _) = units(&json, "units-ip");
    // /proc does not say which link a /32 holds: said on the new system
    // (kexec-boot only copies the files), and left out.
    assert!(
        said.contains(
            "not carried: the address 192.0.2.77 (no route to its network names its link"
        ),
        "{said}"
    );
    from_ip[1].1 = from_ip[1].1.replace("Address=192.0.2.77/32\n", "");
    assert_eq!(from_proc, from_ip);
}
