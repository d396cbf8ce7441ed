//! aarch64: an image assembled on this x86_64 machine boots under
//! qemu-system-aarch64 (`-M virt -cpu cortex-a57`, TCG): the fixture system
//! made with Debian's arm64 busybox by Nix on x86_64, packed by the same
//! x86_64 mkkexec with Debian's arm64 kernel, booted directly to its
//! marker, and through the kexec hop from an arm64 foreign host running the
//! aarch64-linux tarball (Debian's arm64 kernel has no kexec_file_load: the
//! hop takes kexec-boot's fallback to kexec_load).

use std::process::Command;
use std::sync::OnceLock;

use camino::{Utf8Path, Utf8PathBuf};

use crate::boot::{Arch, assert_booted, assert_hopped, assert_refused, qemu_on, work_dir};
use crate::common::*;
use crate::nix::build_fixture;

/// Debian's arm64 kernel, modules, busybox and kexec, from
/// scripts/fetch-arm64.sh.
fn arm64() -> &'static Utf8Path {
    static DIR: OnceLock<Utf8PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Utf8PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/arm64");
        ok(Command::new(format!(
            "{}/scripts/fetch-arm64.sh",
            env!("CARGO_MANIFEST_DIR")
        ))
        .arg(&dir));
        dir
    })
}

/// The stage-1 stand-in with arm64 busybox and modules.
fn stage1() -> &'static Utf8Path {
    static S: OnceLock<Utf8PathBuf> = OnceLock::new();
    S.get_or_init(|| {
        let a = arm64();
        let out = work_dir("stage1-arm64").join("stage1.gz");
        let root = env!("CARGO_MANIFEST_DIR");
        let mut c = mkkexec();
        c.args(["initrd", "-q", "--initrd-compression", "gzip", "--file"])
            .arg(format!("{a}/sysroot/bin/busybox:/bin/busybox"))
            .arg("--file")
            .arg(format!("{root}/tests/fixture/stage1-init:/init"))
            .arg("--file")
            .arg(format!("{root}/nix/carry-in.sh:/carry-in.sh"));
        for m in ["loop", "squashfs", "overlay"] {
            c.arg("--file")
                .arg(format!("{a}/modules/{m}.ko:/lib/modules/{m}.ko"));
        }
        ok(c.arg("-o").arg(&out));
        out
    })
}

fn nix_args() -> Vec<(&'static str, String)> {
    let a = arm64();
    vec![
        ("kernel", a.join("Image").to_string()),
        ("initrd", stage1().to_string()),
        ("targetBusybox", a.join("sysroot/bin/busybox").to_string()),
        ("hostSystem", "\"aarch64-linux\"".to_owned()),
        (
            "kernelParams",
            "[ \"console=ttyAMA0\" \"panic=-1\" ]".to_owned(),
        ),
        // The arm64 host's own kexec (dynamic; its libraries are in the host).
        ("kexec", a.join("sysroot/sbin/kexec").to_string()),
    ]
}

#[test]
#[ignore = "needs qemu-system-aarch64, Debian's arm64 kernel and Nix (scripts/test.sh runs it)"]
fn aarch64_tree_built_on_x86_64_boots() {
    let tree = build_fixture("tree", &nix_args());
    let toplevel = build_fixture("toplevel", &nix_args());
    // The kernel is the arm64 Image, under the tree's one name.
    let kernel = std::fs::read(tree.join("bzImage")).expect("kernel");
    assert_eq!(&kernel[0x38..0x3c], b"ARMd", "not an arm64 Image");
    let log = qemu_on(
        Arch::Aarch64,
        "direct-aarch64",
        &tree.join("bzImage"),
        &tree.join("initrd.gz"),
        &format!("console=ttyAMA0 panic=-1 init={toplevel}/init"),
        1024,
        &[],
    );
    assert_booted("direct-aarch64", &log);
}

/// The arm64 host's initrd: busybox, Debian's arm64 kexec and the
/// libraries it loads, tests/fixture/host-init, the tarball unpacked at /.
fn host_initrd(name: &str, tarball: &Utf8Path) -> Utf8PathBuf {
    let a = arm64();
    let dir = work_dir(&format!("host-{name}"));
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    sh(&format!(
        "cp -a {a}/sysroot/bin {a}/sysroot/sbin {a}/sysroot/lib {root}/ && \
         mkdir -p {root}/usr && cp -a {a}/sysroot/usr/lib {root}/usr/ && \
         cp {}/tests/fixture/host-init {root}/init && tar -xzf {tarball} -C {root}",
        env!("CARGO_MANIFEST_DIR")
    ));
    let out = dir.join("host.cpio");
    sh(&format!(
        "cd {root} && find . | sort | cpio -o -H newc --quiet > {out}"
    ));
    out
}

/// The kexec hop on an arm64 host with `mem_mib` of RAM, of an image with
/// `payload_mib` more in its store; `host_params` for the host's kernel.
fn hop(name: &str, mem_mib: u32, payload_mib: u32, host_params: &str) -> String {
    let mut args = nix_args();
    args.push(("payloadMiB", payload_mib.to_string()));
    let out = build_fixture("tarball", &args);
    let tarball = out.join("tarball/nixos-system-aarch64-linux.tar.gz");
    assert!(tarball.is_file(), "{tarball} missing");
    qemu_on(
        Arch::Aarch64,
        name,
        &arm64().join("Image"),
        &host_initrd(name, &tarball),
        &format!("console=ttyAMA0 panic=-1 quiet {host_params}"),
        mem_mib,
        &[],
    )
}

#[test]
#[ignore = "needs qemu-system-aarch64, Debian's arm64 kernel and Nix (scripts/test.sh runs it)"]
fn aarch64_kexec_hop_from_a_foreign_host_boots_the_tarball() {
    let log = hop("hop-aarch64", 1024, 0, "");
    assert_hopped("hop-aarch64", &log);
    assert!(
        log.contains("kexec_file_load failed") && log.contains("loaded with kexec_load"),
        "{log}"
    );
}

#[test]
#[ignore = "needs qemu-system-aarch64, Debian's arm64 kernel and Nix (scripts/test.sh runs it)"]
fn aarch64_kexec_hop_refused_without_enough_memory() {
    // The same check as on x86_64, reading the arm64 host's /proc/meminfo
    // and the arm64 Image's header. A 256 MiB payload asks about 830 MiB;
    // the host holds its tree in a ramfs (rootfstype=ramfs: no half-RAM
    // cap), so that it boots at 800 MiB and kexec-boot is what refuses.
    let log = hop("hop-aarch64-small", 800, 256, "rootfstype=ramfs");
    assert_refused(&log, "not enough memory: this image needs ");
}
