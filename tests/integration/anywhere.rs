//! nixos-anywhere's kexec phase, step by step with the command lines its
//! src/nixos-anywhere.sh runs (2026-07), against the Debian server VM of the
//! operator's journey (journey.rs): logged in as a user with sudo, not
//! root. nixos-anywhere itself is not run (it needs a flake to install);
//! its steps are:
//!
//! 1. a temporary key into the user's `~/.ssh/authorized_keys` (it uses
//!    ssh-copy-id; here the same append over SSH), then every SSH command
//!    with nixos-anywhere's options (`-T -o IdentitiesOnly=yes -i KEY -o
//!    UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no`);
//! 2. its facts: `tar`, a `setsid` that knows `--wait`, `sudo`, not root;
//! 3. its script written to `$HOME/kexec/nixos-anywhere-kexec.sh`, the
//!    tarball streamed to `$HOME/kexec/kexec-tarball.tar.gz`, and the script
//!    run with bash: unpack with `tar -xv --gzip -C`, then
//!    `TMPDIR="$HOME/kexec" sudo setsid --wait "$HOME/kexec/kexec/run"
//!    --kexec-extra-flags '--no-sync'`, output teed to a log that must hold
//!    `machine will boot into nixos`;
//! 4. the SSH session returns; SSH as the user stops answering;
//! 5. `root@` on the same port with the temporary key, and /etc/os-release
//!    must say `ID=nixos` and `VARIANT_ID=installer`.
//!
//! nixos-anywhere puts its extract path (`$HOME/kexec`) into the script as
//! the operator's own `$HOME`, expanded on the operator's machine; the
//! script here uses the target's `$HOME`, which is what that expands to
//! when both homes have the same path (the issue's
//! `setsid: failed to execute /root/kexec/kexec/run` is what a different
//! one gives).
//!
//! The kexec'd system is the journey's fixture (a Debian userland in a
//! store path, tests/fixture/journey), not NixOS: NixOS cannot be built
//! here. Its /etc/os-release carries the two fields NixOS' installer has;
//! that configuration.nix yields them is shown by the module's evaluation
//! (module.rs, `configuration_is_an_installer_nixos_anywhere_accepts`).

use std::process::Command;
use std::time::{Duration, Instant};

use camino::Utf8Path;

use crate::boot::{tail, work_dir};
use crate::common::*;
use crate::journey::{boot_host, fixture_tarball, host_root, pack_host};

/// The flags handed to `--kexec-extra-flags` (nixos-anywhere's own example).
const EXTRA_FLAGS: &str = "--no-sync";

/// `ssh` with nixos-anywhere's options, as `user` with `key`; under
/// `timeout 10` (as nixos-anywhere waits for the host to go) with `limited`.
fn anywhere_ssh(port: u16, key: &Utf8Path, user: &str, cmd: &str, limited: bool) -> Command {
    let mut c = if limited {
        let mut c = Command::new("timeout");
        c.args(["10", "ssh"]);
        c
    } else {
        Command::new("ssh")
    };
    c.arg("-T")
        .args(["-o", "IdentitiesOnly=yes", "-i"])
        .arg(key)
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-p",
            &port.to_string(),
            &format!("{user}@127.0.0.1"),
            cmd,
        ])
        .stdin(std::process::Stdio::null());
    c
}

/// What the serial console said, for a failure's message.
fn serial(log: &Utf8Path) -> String {
    tail(
        &std::fs::read_to_string(log)
            .unwrap_or_default()
            .replace('\r', ""),
    )
}

#[test]
#[ignore = "needs QEMU, Debian's kernel, mmdebstrap, ssh and Nix (scripts/test.sh runs it)"]
fn nixos_anywhere_kexec_phase_as_a_sudo_user_reaches_the_fixture_installer() {
    require("ssh", "openssh-client");
    require("qemu-system-x86_64", "qemu-system-x86");
    let dir = work_dir("anywhere");
    let user_key = dir.join("user-key");
    let temp_key = dir.join("nixos-anywhere");
    for k in [&user_key, &temp_key] {
        ok(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(k));
    }
    let public = |k: &Utf8Path| {
        std::fs::read_to_string(format!("{k}.pub"))
            .expect("pub")
            .trim()
            .to_owned()
    };
    let tarball = fixture_tarball(&dir, "installerTarball", "nixos-kexec-installer");

    // The old host: root has no keys; the user `debian` has the operator's
    // and may sudo without a password. kexec is Debian's, behind a wrapper
    // that writes its arguments to the kernel log (the serial console)
    // before it runs it: the tarball bundles no kexec here, so kexec-boot
    // takes the first on sudo's PATH.
    let root = host_root(&dir, "");
    sh(&format!(
        "chroot {root} useradd -m -s /bin/bash -G sudo debian && \
         mkdir -p {root}/home/debian/.ssh && \
         echo '{key}' > {root}/home/debian/.ssh/authorized_keys && \
         chroot {root} chown -R debian:debian /home/debian/.ssh && \
         chmod 700 {root}/home/debian/.ssh && chmod 600 {root}/home/debian/.ssh/authorized_keys && \
         echo 'debian ALL=(ALL:ALL) NOPASSWD: ALL' > {root}/etc/sudoers.d/debian && \
         chmod 440 {root}/etc/sudoers.d/debian && \
         printf '#!/bin/sh\\necho \"<3>kexec-args: $*\" > /dev/kmsg\\nexec /usr/sbin/kexec \"$@\"\\n' \
           > {root}/usr/local/sbin/kexec && chmod 755 {root}/usr/local/sbin/kexec",
        key = public(&user_key)
    ));
    let initrd = pack_host(&dir, &root);
    let (_vm, port, log) = boot_host(&dir, &initrd, None);

    // Step 1: the temporary key, added with the user's own.
    let start = Instant::now();
    loop {
        let out = anywhere_ssh(
            port,
            &user_key,
            "debian",
            "mkdir -p ~/.ssh && cat >> ~/.ssh/authorized_keys",
            false,
        )
        .stdin(std::fs::File::open(format!("{temp_key}.pub")).expect("pub"))
        .output()
        .expect("ssh");
        if out.status.success() {
            break;
        }
        // Only against a hang.
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no SSH: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            serial(&log)
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    let ssh = |user: &str, cmd: &str| anywhere_ssh(port, &temp_key, user, cmd, false);
    // Root cannot log in with it yet.
    assert!(
        !ssh("root", "exit 0").status().expect("ssh").success(),
        "root logged in on the old host"
    );

    // Step 2: what nixos-anywhere requires of the host before the kexec.
    let facts = ok(&mut ssh(
        "debian",
        "command -v tar >/dev/null && echo tar; \
         setsid --wait true 2>/dev/null && echo setsid-wait; \
         command -v sudo >/dev/null && echo sudo; \
         [ \"$(id -u)\" -ne 0 ] && echo not-root; \
         command -v cpio >/dev/null || echo no-cpio",
    ));
    // nixos-anywhere also insists on a cpio (nixos-images' run script packs
    // the carried files with it); kexec-boot writes its cpio itself, and
    // this host has none.
    assert_eq!(facts, "tar\nsetsid-wait\nsudo\nnot-root\nno-cpio\n");

    // Step 3: the script, the tarball, the run.
    let script = format!(
        "{{\n  set -eu\n  cd \"$HOME/kexec\"\n  \
         cat \"$HOME/kexec/kexec-tarball.tar.gz\" | tar -xv --gzip -C \"$HOME/kexec\"\n  \
         TMPDIR=\"$HOME/kexec\" sudo setsid --wait \"$HOME/kexec/kexec/run\" --kexec-extra-flags '{EXTRA_FLAGS}'\n\
         }} 2>&1 | tee \"$HOME/kexec/nixos-anywhere.log\" || true\n\
         if ! grep -q 'machine will boot into nixos' \"$HOME/kexec/nixos-anywhere.log\"; then\n  \
         echo 'Kexec may have failed - check output above'\n  exit 1\nfi\n"
    );
    std::fs::write(dir.join("nixos-anywhere-kexec.sh"), &script).expect("write");
    ok(ssh(
        "debian",
        "mkdir -p \"$HOME/kexec\" && cat > \"$HOME/kexec/nixos-anywhere-kexec.sh\"",
    )
    .stdin(std::fs::File::open(dir.join("nixos-anywhere-kexec.sh")).expect("script")));
    ok(ssh("debian", "cat > \"$HOME/kexec/kexec-tarball.tar.gz\"")
        .stdin(std::fs::File::open(&tarball).expect("tarball")));
    // Step 4: the session returns (ssh's exit status is the old host's
    // sshd's: it was still up), having said the phrase.
    let out = ssh("debian", "bash \"$HOME/kexec/nixos-anywhere-kexec.sh\"")
        .output()
        .expect("ssh");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the kexec phase failed: {said}{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        serial(&log)
    );
    assert!(said.contains("kexec/run"), "not unpacked: {said}");
    assert!(said.contains("machine will boot into nixos"), "{said}");
    // The keys it carried include the sudo user's (the temporary key).
    assert!(!said.contains("no authorized SSH keys"), "{said}");

    // ... then SSH as the user stops answering.
    let start = Instant::now();
    while anywhere_ssh(port, &temp_key, "debian", "exit 0", true)
        .status()
        .expect("ssh")
        .success()
    {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the old host never went: {}",
            serial(&log)
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // Step 5: root, same port, the temporary key (carried from the sudo
    // user's authorized_keys).
    let start = Instant::now();
    while !ssh("root", "exit 0").status().expect("ssh").success() {
        assert!(
            start.elapsed() < Duration::from_secs(400),
            "root never logged in after the kexec: {}",
            serial(&log)
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    let marker = ok(&mut ssh("root", "cat /etc/nixos-kexec-fixture"));
    assert!(
        marker.starts_with("fixture system of /nix/store/"),
        "{marker}"
    );
    let os_release = ok(&mut ssh("root", "cat /etc/os-release"));
    let lines: Vec<&str> = os_release.lines().collect();
    assert!(
        lines.contains(&"ID=nixos") && lines.contains(&"VARIANT_ID=installer"),
        "{os_release}"
    );

    // The flags reached kexec's load (the wrapper's line in the kernel log).
    let console = std::fs::read_to_string(&log)
        .expect("serial log")
        .replace('\r', "");
    let load = console
        .lines()
        .find(|l| l.contains("kexec-args: --kexec-file-syscall --load "))
        .unwrap_or_else(|| panic!("kexec never loaded: {}", tail(&console)));
    assert!(
        load.ends_with(&format!(" {EXTRA_FLAGS}")),
        "the extra flags did not reach kexec: {load}"
    );
}
