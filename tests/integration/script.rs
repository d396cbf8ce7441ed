//! kexec-boot and netboot.ipxe: snapshots, shellcheck, and runs under dash
//! with a stand-in `kexec` that records what it was asked to do.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use camino::Utf8Path;
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

fn spec(params: &[String], unpacked: u64) -> BootSpec<'_> {
    BootSpec {
        toplevel: TOPLEVEL,
        kernel_params: params,
        initrd_bytes: 300 << 20,
        unpacked_bytes: unpacked,
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

/// A tree with the script, stand-in kernel and initrd, and a recording kexec.
fn fake_tree(dir: &Utf8Path, script: &str) {
    std::fs::write(dir.join("kexec-boot"), script).expect("write");
    std::fs::write(dir.join("bzImage"), "kernel").expect("write");
    std::fs::write(dir.join("initrd.gz"), "initrd").expect("write");
    recording_kexec(&dir.join("kexec"));
    std::fs::set_permissions(
        dir.join("kexec-boot"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod");
}

fn dash(dir: &Utf8Path) -> Command {
    require("dash", "dash");
    let mut c = Command::new("dash");
    c.arg(dir.join("kexec-boot")).env("PATH", "/usr/bin:/bin");
    c
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_loads_and_executes_under_dash() {
    let (_t, dir) = tempdir();
    fake_tree(&dir, &script(&spec(&params(), 1 << 20)));
    ok(&mut dash(&dir));
    let log = std::fs::read_to_string(dir.join("kexec.log")).expect("kexec was not run");
    let want = format!(
        "--load\n{dir}/bzImage\n--initrd={dir}/initrd.gz\n\
         --command-line=init={TOPLEVEL}/init console=ttyS0,115200 panic=30 quoted='it''s $(x)'\n-e\n"
    );
    assert_eq!(log, want);
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_refuses_without_kexec() {
    let (_t, dir) = tempdir();
    fake_tree(&dir, &script(&spec(&params(), 1)));
    std::fs::remove_file(dir.join("kexec")).expect("rm");
    let e = fails(&mut dash(&dir));
    assert!(e.contains("kexec not found: install kexec-tools"), "{e}");
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_refuses_without_enough_memory() {
    let (_t, dir) = tempdir();
    fake_tree(&dir, &script(&spec(&params(), 1 << 40)));
    let e = fails(&mut dash(&dir));
    assert!(
        e.contains("not enough memory: this image needs about 2097708 MiB"),
        "{e}"
    );
    assert!(!dir.join("kexec.log").exists(), "kexec ran anyway");
}

#[test]
#[ignore = "needs root to drop to another user (scripts/test.sh runs it)"]
fn kexec_boot_refuses_when_not_root() {
    require("setpriv", "util-linux");
    let (_t, dir) = tempdir();
    fake_tree(&dir, &script(&spec(&params(), 1)));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "dash"])
        .arg(dir.join("kexec-boot"));
    let e = fails(&mut c);
    assert!(e.contains("must run as root"), "{e}");
}

#[test]
#[ignore = "needs root: kexec-boot refuses to run otherwise (scripts/test.sh runs it)"]
fn kexec_boot_runs_no_command_a_parameter_carries() {
    let (_t, dir) = tempdir();
    let pwned = dir.join("pwned");
    let params = vec![
        format!("'; touch {pwned}; '"),
        format!("$(touch {pwned})"),
        "x=@INITRD_BYTES@".to_owned(),
    ];
    fake_tree(&dir, &script(&spec(&params, 1 << 20)));
    ok(&mut dash(&dir));
    assert!(!pwned.exists(), "a kernel parameter ran a command");
    let log = std::fs::read_to_string(dir.join("kexec.log")).expect("kexec was not run");
    assert!(
        log.contains(&format!(
            "init={TOPLEVEL}/init '; touch {pwned}; ' $(touch {pwned}) x=@INITRD_BYTES@\n"
        )),
        "{log}"
    );
}
