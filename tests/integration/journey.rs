//! The operator's journey, for real: a Debian 12 "rented server" (built by
//! mmdebstrap from Debian's packages) with static IPv4 and IPv6 addresses
//! and routes on QEMU's user network, reached only over SSH through a
//! hostfwd port. The test copies the tarball over, runs nixos-kexec (first
//! with --dry-run), and must reach the kexec'd system on the same port with
//! the same host key (StrictHostKeyChecking=yes) and the same keys, and find
//! there the old host's addresses, routes, nameservers and machine-id.
//!
//! NixOS cannot be built here: the kexec'd system is a Debian userland in a
//! store path (tests/fixture/journey), brought up by the same file
//! placement (nix/carry-in.sh, in the stage-1 stand-in) and the same
//! `mkkexec network` unit the NixOS module uses. It knows none of the old
//! host's addresses, keys or machine-id: they reach it only through what
//! kexec-boot carries.

use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};

use crate::boot::{kernel_dir, stage1, tail, work_dir};
use crate::common::*;
use crate::nix::nix;

const MACHINE_ID: &str = "5e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b";

/// The Debian root of scripts/fetch-debian.sh.
fn debian() -> Utf8PathBuf {
    require("mmdebstrap", "mmdebstrap");
    let dir = Utf8PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/debian-bookworm");
    ok(Command::new(format!(
        "{}/scripts/fetch-debian.sh",
        env!("CARGO_MANIFEST_DIR")
    ))
    .arg(&dir));
    dir
}

/// A copy of the Debian root at `dest`, without device nodes, with the
/// e1000 driver of the test kernel (QEMU's default network card).
pub fn debian_copy(dest: &Utf8Path) {
    let k = kernel_dir();
    let version = std::fs::read_to_string(k.join("version")).expect("version");
    let version = version.trim().trim_start_matches("linux-image-");
    sh(&format!(
        "cp -a {src} {dest} && rm -rf {dest}/dev/* && \
         m={dest}/usr/lib/modules/{version}/kernel/drivers/net && mkdir -p $m && \
         cp {k}/modules/e1000.ko $m/ && chroot {dest} depmod {version}",
        src = debian()
    ));
}

/// The old host: static addresses and routes through systemd-networkd, sshd
/// with fresh host keys, root's keys (one behind a cloud image's
/// `command=` restriction), its own machine-id. Packed as its initramfs.
fn host_initrd(dir: &Utf8Path, key: &str, restricted_key: &str) -> Utf8PathBuf {
    let root = host_root(
        dir,
        &format!(
            "{key}\nno-port-forwarding,no-agent-forwarding,no-X11-forwarding,command=\"echo 'Please login as the user \\\"debian\\\" rather than the user \\\"root\\\".';echo;sleep 10;exit 142\" {restricted_key}\n"
        ),
    );
    pack_host(dir, &root)
}

/// The old host's root (as [`host_initrd`] describes it) in `dir/host-root`,
/// with `root_keys` as root's authorized_keys (none when empty), to adjust
/// before [`pack_host`].
pub(crate) fn host_root(dir: &Utf8Path, root_keys: &str) -> Utf8PathBuf {
    let root = dir.join("host-root");
    debian_copy(&root);
    sh(&format!(
        "rm -f {root}/etc/ssh/ssh_host_* && ssh-keygen -q -A -f {root}"
    ));
    let files = [
        ("etc/machine-id", format!("{MACHINE_ID}\n")),
        ("etc/hostname", "old-server\n".to_owned()),
        (
            "etc/resolv.conf",
            "nameserver 10.0.2.3\nnameserver fec0::3\nsearch example.org\n".to_owned(),
        ),
        (
            "etc/systemd/network/10-static.network",
            "[Match]\nMACAddress=52:54:00:12:34:56\n\n[Network]\nDHCP=no\nIPv6AcceptRA=no\n\
             Address=10.0.2.15/24\nGateway=10.0.2.2\nAddress=fec0::15/64\nGateway=fec0::2\n\n\
             [Route]\nDestination=198.51.100.0/24\nGateway=10.0.2.2\nMetric=50\n"
                .to_owned(),
        ),
        // A second NIC (where the test gives one) on a provider's DHCP pool,
        // known to it by its MAC address as many clients are.
        (
            "etc/systemd/network/20-pool.network",
            format!(
                "[Match]\nMACAddress={POOL_MAC}\n\n[Network]\nDHCP=ipv4\nIPv6AcceptRA=no\n\n\
                 [DHCPv4]\nClientIdentifier=mac\nUseRoutes=no\nUseDNS=no\n"
            ),
        ),
    ];
    let keys = [("root/.ssh/authorized_keys", root_keys.to_owned())];
    let keys = if root_keys.is_empty() {
        &[][..]
    } else {
        &keys[..]
    };
    for (f, text) in files.iter().chain(keys) {
        std::fs::create_dir_all(root.join(f).parent().expect("parent")).expect("mkdir");
        std::fs::write(root.join(f), text).expect("write");
    }
    sh(&format!(
        "mkdir -p {root}/root/.ssh && chmod 700 {root}/root/.ssh && \
         {{ [ ! -e {root}/root/.ssh/authorized_keys ] || chmod 600 {root}/root/.ssh/authorized_keys; }} && \
         mkdir -p {root}/etc/systemd/system/multi-user.target.wants {root}/etc/systemd/system/sockets.target.wants && \
         ln -sf /lib/systemd/system/systemd-networkd.service {root}/etc/systemd/system/multi-user.target.wants/ && \
         ln -sf /lib/systemd/system/systemd-networkd.socket {root}/etc/systemd/system/sockets.target.wants/"
    ));
    root
}

/// The host root made by [`host_root`], packed as the VM's initramfs (and
/// removed).
pub(crate) fn pack_host(dir: &Utf8Path, root: &Utf8Path) -> Utf8PathBuf {
    let out = dir.join("host.cpio");
    sh(&format!(
        "cd {root} && find . | cpio -o -H newc --quiet > {out}"
    ));
    sh(&format!("rm -rf {root}"));
    out
}

/// The kexec'd system's Debian root: no host keys, machine-id, network
/// configuration or authorized keys of its own.
fn system_root(dir: &Utf8Path) -> Utf8PathBuf {
    let root = dir.join("system-root");
    debian_copy(&root);
    sh(&format!(
        "rm -f {root}/etc/ssh/ssh_host_* && : > {root}/etc/machine-id && rm -rf {root}/root/.ssh && \
         echo nixos-fixture > {root}/etc/hostname && rm -f {root}/etc/resolv.conf"
    ));
    root
}

/// The tarball of the kexec'd system, built by Nix, with this machine's
/// (Debian 12) ip bundled; the host's own kexec-tools load it (this
/// machine's kexec needs Xen's libraries).
fn tarball(dir: &Utf8Path) -> Utf8PathBuf {
    fixture_tarball(dir, "tarball", "nixos-system")
}

/// The fixture's (tests/fixture/journey) tarball `attr`, named
/// `<prefix>-<system>.tar.gz`, as [`tarball`] describes it.
pub(crate) fn fixture_tarball(dir: &Utf8Path, attr: &str, prefix: &str) -> Utf8PathBuf {
    let k = kernel_dir();
    let system_root = system_root(dir);
    let mut c = nix("nix-build");
    c.arg(format!(
        "{}/tests/fixture/journey/default.nix",
        env!("CARGO_MANIFEST_DIR")
    ))
    .args(["--no-out-link", "-A", attr])
    // Paths, which Nix copies into the store for the sandboxed builds.
    .args(["--arg", "mkkexec", env!("CARGO_BIN_EXE_mkkexec")])
    .args(["--arg", "kernel"])
    .arg(k.join("vmlinuz"))
    .args(["--arg", "initrd"])
    .arg(stage1())
    .args(["--arg", "ip"])
    .arg(sh("command -v ip").trim())
    .args(["--argstr", "debianRoot"])
    .arg(&system_root);
    let out = ok(&mut c);
    sh(&format!("rm -rf {system_root}"));
    let system = sh("uname -m");
    Utf8PathBuf::from(out.lines().last().expect("a path").trim())
        .join(format!("tarball/{prefix}-{}-linux.tar.gz", system.trim()))
}

/// The VM, killed when dropped.
pub(crate) struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The old host booted from `initrd` under QEMU (TCG), its SSH port
/// forwarded to a free port of this machine's 127.0.0.1; its serial console
/// in `dir/serial.log`.
pub(crate) fn boot_host(
    dir: &Utf8Path,
    initrd: &Utf8Path,
    pool: Option<&Pool>,
) -> (Vm, u16, Utf8PathBuf) {
    let port = free_port();
    let log = dir.join("serial.log");
    let vm = Vm(Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            "3072",
            "-nodefaults",
            "-display",
            "none",
            "-monitor",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{log}"))
        .arg("-nic")
        .arg(format!(
            "user,model=e1000,mac=52:54:00:12:34:56,hostfwd=tcp:127.0.0.1:{port}-:22"
        ))
        .args(pool.iter().flat_map(|p| {
            [
                "-nic".to_owned(),
                format!(
                    "tap,ifname={},script=no,downscript=no,model=e1000,mac={POOL_MAC}",
                    p.tap
                ),
            ]
        }))
        .arg("-kernel")
        .arg(kernel_dir().join("vmlinuz"))
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 rdinit=/sbin/init panic=-1"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn qemu"));
    (vm, port, log)
}

/// The MAC address of the host's NIC on the provider's DHCP pool.
const POOL_MAC: &str = "52:54:00:12:34:57";

/// A provider's DHCP pool: dnsmasq (203.0.113.130-150) in a network
/// namespace, reached by the VM through a tap device bridged to a veth into
/// that namespace. Gone when dropped.
pub(crate) struct Pool {
    tap: String,
    ns: String,
    leases: Utf8PathBuf,
}

impl Pool {
    pub(crate) fn new(dir: &Utf8Path) -> Pool {
        require("dnsmasq", "dnsmasq-base");
        let pool = Pool {
            tap: "mkjtap0".into(),
            ns: "mkj-pool".into(),
            leases: dir.join("pool.leases"),
        };
        pool.clean();
        sh(&format!(
            "ip netns add {ns} && ip link add mkjbr0 type bridge && \
             ip link add mkjv0 type veth peer name v0 netns {ns} && \
             ip tuntap add {tap} mode tap && ip link set {tap} master mkjbr0 && \
             ip link set mkjv0 master mkjbr0 && \
             ip link set mkjbr0 up && ip link set mkjv0 up && ip link set {tap} up && \
             ip -n {ns} link set v0 up && ip -n {ns} addr add 203.0.113.1/24 dev v0 && \
             ip netns exec {ns} dnsmasq --no-resolv --no-hosts --port=0 --interface=v0 \
               --bind-interfaces --dhcp-range=203.0.113.130,203.0.113.150,255.255.255.0,1h \
               --dhcp-leasefile={leases} --pid-file={dir}/pool.pid",
            ns = pool.ns,
            tap = pool.tap,
            leases = pool.leases,
        ));
        pool
    }

    /// The leases dnsmasq handed out: `address` per line.
    pub(crate) fn leases(&self) -> Vec<String> {
        std::fs::read_to_string(&self.leases)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
            .collect()
    }

    fn clean(&self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ip netns pids {ns} 2>/dev/null | xargs -r kill; ip netns del {ns}; \
                 ip link del {tap}; ip link del mkjv0; ip link del mkjbr0",
                ns = self.ns,
                tap = self.tap
            ))
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.clean();
    }
}

pub(crate) struct Ssh {
    pub port: u16,
    pub known_hosts: Utf8PathBuf,
}

impl Ssh {
    /// `cmd` on the machine behind the port, as root with `key`; the host
    /// key must be the one already known unless `first`.
    pub(crate) fn run(&self, key: &Utf8Path, first: bool, cmd: &str) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-i")
            .arg(key)
            .args(["-p", &self.port.to_string()])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts))
            .args([
                "-o",
                if first {
                    "StrictHostKeyChecking=accept-new"
                } else {
                    "StrictHostKeyChecking=yes"
                },
                "-o",
                "ConnectTimeout=10",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "LogLevel=ERROR",
                "root@127.0.0.1",
                cmd,
            ])
            .stdin(std::process::Stdio::null());
        c
    }

    /// Wait until `cmd` succeeds, at most `limit`.
    pub(crate) fn wait(
        &self,
        key: &Utf8Path,
        first: bool,
        cmd: &str,
        limit: Duration,
        log: &Utf8Path,
    ) -> String {
        let start = Instant::now();
        loop {
            let out = self.run(key, first, cmd).output().expect("spawn ssh");
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            let serial = std::fs::read_to_string(log)
                .unwrap_or_default()
                .replace('\r', "");
            assert!(
                start.elapsed() < limit,
                "no SSH after {limit:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                tail(&serial)
            );
            std::thread::sleep(Duration::from_secs(3));
        }
    }
}

#[test]
#[ignore = "needs QEMU, Debian's kernel, mmdebstrap, ssh and Nix (scripts/test.sh runs it)"]
fn operator_kexecs_a_debian_server_over_ssh_and_gets_it_back() {
    require("ssh", "openssh-client");
    require("qemu-system-x86_64", "qemu-system-x86");
    let dir = work_dir("journey");
    let key = dir.join("key");
    let restricted = dir.join("restricted-key");
    for k in [&key, &restricted] {
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
    let tarball = tarball(&dir);
    let initrd = host_initrd(&dir, &public(&key), &public(&restricted));

    let pool = Pool::new(&dir);
    let (_vm, port, log) = boot_host(&dir, &initrd, Some(&pool));
    let ssh = Ssh {
        port,
        known_hosts: dir.join("known_hosts"),
    };

    // The old host, as the operator finds it.
    let before = ssh.wait(
        &key,
        true,
        "cat /etc/machine-id; hostname",
        Duration::from_secs(300),
        &log,
    );
    assert_eq!(before, format!("{MACHINE_ID}\nold-server\n"));
    // The second NIC's address from the provider's pool, as the old host
    // holds it.
    let pooled = "ip -4 -o addr | grep -o '203\\.0\\.113\\.[0-9]*/24'";
    let leased = ssh.wait(&key, false, pooled, Duration::from_secs(120), &log);
    // The restricted key is turned away here, as on a cloud image.
    let out = ssh.run(&restricted, false, "true").output().expect("ssh");
    assert!(
        !out.status.success(),
        "the restricted key logged in as root on the old host"
    );

    ok(ssh
        .run(&key, false, "cat > /root/nixos-system.tar.gz")
        .stdin(std::fs::File::open(&tarball).expect("tarball")));
    let run = "tar -xzf /root/nixos-system.tar.gz -C / && /nixos-kexec/bin/nixos-kexec";
    // Step 4: a dry run first; the machine stays.
    let dry = ssh
        .run(&key, false, &format!("{run} --dry-run"))
        .output()
        .expect("ssh");
    assert!(
        dry.status.success(),
        "dry run failed: {}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert_eq!(ok(&mut ssh.run(&key, false, "hostname")), "old-server\n");

    // Step 1: returns 0 before the machine goes. ssh's exit status comes from
    // the old host's sshd, so a 0 proves the old system was still up when the
    // command ended, and the kexec came after it. No wall-clock bound: TCG
    // speed differs by machine.
    let out = ssh.run(&key, false, run).output().expect("ssh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nixos-kexec failed: {err}");
    assert!(err.contains("the new system starts in 2 s"), "{err}");

    // Step 2: the same port, the same host key (StrictHostKeyChecking=yes),
    // the same key, and it is the kexec'd system.
    let marker = ssh.wait(
        &key,
        false,
        "cat /etc/nixos-kexec-fixture",
        Duration::from_secs(400),
        &log,
    );
    assert!(
        marker.starts_with("fixture system of /nix/store/"),
        "{marker}"
    );
    // The restricted key now logs in: the restriction was dropped.
    ok(&mut ssh.run(&restricted, false, "true"));

    // The pool knows the new system as the old host (the carried lease's
    // client identifier) and hands it the same address, no second lease.
    let again = ssh.wait(&key, false, pooled, Duration::from_secs(120), &log);
    assert_eq!(
        again, leased,
        "the pool gave the new system another address"
    );
    assert_eq!(pool.leases().len(), 1, "{:?}", pool.leases());

    // Step 3: the old host's machine-id, addresses, routes and nameservers.
    assert_eq!(
        ok(&mut ssh.run(&key, false, "cat /etc/machine-id")),
        format!("{MACHINE_ID}\n")
    );
    let units = ok(&mut ssh.run(&key, false, "cat /run/systemd/network/*"));
    let addrs = ok(&mut ssh.run(&key, false, "ip -o addr"));
    let addrs = format!("{addrs}\n--- the units written ---\n{units}");
    assert!(addrs.contains(" inet 10.0.2.15/24 "), "{addrs}");
    assert!(addrs.contains(" inet6 fec0::15/64 "), "{addrs}");
    let v4 = ok(&mut ssh.run(&key, false, "ip -4 route"));
    assert!(v4.contains("default via 10.0.2.2 "), "{v4}");
    assert!(
        v4.contains("198.51.100.0/24 via 10.0.2.2 ") && v4.contains("metric 50"),
        "{v4}"
    );
    let v6 = ok(&mut ssh.run(&key, false, "ip -6 route"));
    assert!(v6.contains("default via fec0::2 "), "{v6}");
    let dns = ok(&mut ssh.run(&key, false, "cat /run/systemd/netif/links/*"));
    assert!(dns.contains("DNS=10.0.2.3 fec0::3"), "{dns}");
    assert!(dns.contains("DOMAINS=example.org"), "{dns}");
}
