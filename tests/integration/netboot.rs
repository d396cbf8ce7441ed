//! Netboot, for real: a QEMU machine with no disk boots from its NIC
//! through the chain a site runs, to the fixture's marker.
//!
//! ```text
//! iPXE ROM (Debian's ipxe-qemu, QEMU's own; -boot n)
//!   → DHCP from dnsmasq: an address and the boot file boot.ipxe
//!   → TFTP from dnsmasq: boot.ipxe, the site's script (the test's)
//!   → chain http://192.0.2.1/netboot.ipxe, the tree's script (ours)
//!   → HTTP: bzImage and initrd.gz beside it → Linux → the fixture's init
//! ```
//!
//! The site is a network namespace: a tap device at 192.0.2.1/24, Debian's
//! dnsmasq for DHCP and TFTP, `python3 -m http.server` serving the tree as
//! Nix built it; QEMU runs inside it and joins it through the tap device.
//! Second case: the site's boot file is a menu (as netboot.xyz is) that sets
//! `${cmdline}` before it chains; the parameters must reach the kernel.
//!
//! SeaBIOS's serial console (`etc/sercon-port`) puts iPXE's own output in
//! the serial log beside the kernel's, to read when a boot fails.

use std::process::{Child, Command, Stdio};

use camino::{Utf8Path, Utf8PathBuf};

use crate::boot::{Arch, MARKER, assert_booted, nix_args, qemu_run, tail, work_dir};
use crate::common::*;
use crate::nix::build_fixture;

/// The site's server, on its side of the tap device.
const SERVER: &str = "192.0.2.1";

/// The kernel parameters the tree is built with (so, netboot.ipxe's).
const PARAMS: [&str; 3] = ["console=ttyS0", "panic=-1", "quiet"];

/// What dnsmasq hands out as the boot file.
enum BootFile<'a> {
    /// `boot.ipxe` over TFTP, holding this script (a site's own).
    Tftp(&'a str),
    /// README's recipe: to a client whose user class is `iPXE`, the URL of
    /// the tree's `netboot.ipxe` itself (no TFTP).
    UserClassUrl,
}

/// A site in a network namespace; its servers are stopped and the
/// namespace deleted when it is dropped.
struct Site {
    ns: String,
    dir: Utf8PathBuf,
    servers: Vec<Child>,
}

impl Drop for Site {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.ns])
            .stderr(Stdio::null())
            .status();
    }
}

impl Site {
    /// A namespace with `tap0` at [`SERVER`], dnsmasq handing out
    /// `boot_file`, and an HTTP server for `tree`.
    fn new(case: &str, boot_file: &BootFile, tree: &Utf8Path) -> Site {
        require("ip", "iproute2");
        require("dnsmasq", "dnsmasq-base");
        require("python3", "python3");
        assert!(
            Utf8Path::new("/usr/lib/ipxe/qemu/efi-virtio.rom").is_file(),
            "QEMU's iPXE ROMs are not installed: apt-get install ipxe-qemu"
        );
        let dir = work_dir(&format!("netboot-{case}"));
        // Unique on this machine: other checkouts may run the same test.
        let ns = format!("mks-pxe-{case}-{}", std::process::id());
        let mut site = Site {
            ns: ns.clone(),
            dir: dir.clone(),
            servers: vec![],
        };
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        sh(&format!(
            "ip netns add {ns} && ip -n {ns} link set lo up && \
             ip -n {ns} tuntap add dev tap0 mode tap && \
             ip -n {ns} addr add {SERVER}/24 dev tap0 && ip -n {ns} link set tap0 up"
        ));
        let tftp = dir.join("tftp");
        std::fs::create_dir_all(&tftp).expect("mkdir");
        let boot: Vec<String> = match boot_file {
            BootFile::Tftp(script) => {
                std::fs::write(tftp.join("boot.ipxe"), script).expect("write");
                vec!["--dhcp-boot=boot.ipxe".to_owned()]
            }
            // As README's "Netbooting a fleet" says it (the lines for
            // firmware that is not iPXE yet cannot run here: QEMU's ROM
            // is iPXE).
            BootFile::UserClassUrl => vec![
                "--dhcp-userclass=set:ipxe,iPXE".to_owned(),
                format!("--dhcp-boot=tag:ipxe,http://{SERVER}/netboot.ipxe"),
            ],
        };
        let boot: Vec<&str> = boot.iter().map(String::as_str).collect();
        site.spawn(
            "dnsmasq.log",
            &[
                &[
                    "dnsmasq",
                    "--no-daemon",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--port=0",
                    "--interface=tap0",
                    "--bind-interfaces",
                    "--dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,1h",
                    "--enable-tftp",
                    &format!("--tftp-root={tftp}"),
                    &format!("--dhcp-leasefile={dir}/leases"),
                    // The work directory is root's: read it as root.
                    "--user=root",
                    "--log-facility=-",
                ],
                &boot[..],
            ]
            .concat(),
        );
        site.wait_for("dnsmasq.log", "TFTP root is");
        site.spawn(
            "http.log",
            &[
                "python3",
                "-u",
                "-m",
                "http.server",
                "80",
                "--bind",
                SERVER,
                "--directory",
                tree.as_str(),
            ],
        );
        site.wait_for("http.log", "Serving HTTP on");
        site
    }

    /// Start `argv` in the namespace, its output in `log`.
    fn spawn(&mut self, log: &str, argv: &[&str]) {
        let out = std::fs::File::create(self.dir.join(log)).expect("create log");
        let err = out.try_clone().expect("dup log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", argv[0]));
        self.servers.push(child);
    }

    fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.join(log)).unwrap_or_default()
    }

    /// Wait until `log` says `text` (a guard against a hang, not a bound on
    /// how long starting takes).
    fn wait_for(&mut self, log: &str, text: &str) {
        for _ in 0..600 {
            if self.log(log).contains(text) {
                return;
            }
            if let Some(c) = self.servers.iter_mut().find_map(|c| c.try_wait().ok()?) {
                panic!("a server of the site exited ({c}):\n{}", self.log(log));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("{log} never said {text:?}:\n{}", self.log(log));
    }

    /// Boot a machine with no disk from its NIC in the site; its serial log.
    fn boot_machine(&self, name: &str) -> String {
        // SeaBIOS reads the port of its serial console as a little-endian
        // integer: 0x3f8, ttyS0.
        let sercon = self.dir.join("sercon-port");
        std::fs::write(&sercon, 0x3f8u16.to_le_bytes()).expect("write");
        qemu_run(
            Arch::X86_64,
            name,
            512,
            &["ip", "netns", "exec", &self.ns],
            &[
                "-boot".to_owned(),
                "n".to_owned(),
                "-fw_cfg".to_owned(),
                format!("name=etc/sercon-port,file={sercon}"),
                "-netdev".to_owned(),
                "tap,id=n0,ifname=tap0,script=no,downscript=no".to_owned(),
                "-device".to_owned(),
                "virtio-net-pci,netdev=n0".to_owned(),
            ],
        )
    }
}

/// The kernel command line the fixture's init printed with its marker.
fn booted_cmdline(log: &str) -> Vec<String> {
    let line = log
        .lines()
        .find_map(|l| l.split_once(&format!("{MARKER} cmdline: ")))
        .map(|(_, c)| c)
        .unwrap_or_else(|| panic!("no marker line with the command line\n{}", tail(log)));
    line.split_whitespace().map(str::to_owned).collect()
}

/// Netboot the fixture through `boot_file`; returns the booted kernel's
/// command line and the toplevel, after checking the chain's events.
fn netboot(case: &str, boot_file: &BootFile) -> (Vec<String>, String) {
    let args = nix_args(
        &format!("[ {} ]", PARAMS.map(|p| format!("\"{p}\"")).join(" ")),
        "zstd",
        "zstd",
    );
    let tree = build_fixture("tree", &args);
    let toplevel = build_fixture("toplevel", &args);
    let site = Site::new(case, boot_file, &tree);
    let name = format!("netboot-{case}");
    let log = site.boot_machine(&name);
    let dnsmasq = site.log("dnsmasq.log");
    let http = site.log("http.log");
    let context = format!(
        "--- dnsmasq ---\n{dnsmasq}\n--- HTTP ---\n{http}\n{}",
        tail(&log)
    );
    assert!(
        dnsmasq.contains("DHCPACK(tap0) 192.0.2."),
        "no DHCP lease\n{context}"
    );
    let by_tftp = dnsmasq.contains("/boot.ipxe to 192.0.2.");
    assert_eq!(
        by_tftp,
        matches!(boot_file, BootFile::Tftp(_)),
        "boot.ipxe should be sent by TFTP only when it is the boot file\n{context}"
    );
    // The tree's own script, then what it names, each served whole.
    let got: Vec<&str> = http
        .lines()
        .filter_map(|l| l.split_once("\"GET ")?.1.split_once(' '))
        .filter(|(_, rest)| rest.contains("\" 200 "))
        .map(|(path, _)| path)
        .collect();
    assert_eq!(
        got,
        ["/netboot.ipxe", "/bzImage", "/initrd.gz"],
        "{context}"
    );
    assert_booted(&name, &log);
    (booted_cmdline(&log), toplevel.to_string())
}

/// What netboot.ipxe puts on the command line itself.
fn own_params(toplevel: &str) -> Vec<String> {
    let mut p = vec![
        format!("init={toplevel}/init"),
        "initrd=initrd.gz".to_owned(),
    ];
    p.extend(PARAMS.map(str::to_owned));
    p
}

#[test]
#[ignore = "needs root, QEMU, dnsmasq, Debian's kernel and Nix (scripts/test.sh runs it)"]
fn netboot_from_dhcp_tftp_and_http_reaches_the_marker() {
    let (cmdline, toplevel) = netboot(
        "plain",
        &BootFile::Tftp(&format!(
            "#!ipxe\n# The site's boot file: hands over to the tree's own script.\n\
             chain http://{SERVER}/netboot.ipxe\n"
        )),
    );
    // Nothing set ${cmdline}: the kernel got netboot.ipxe's line alone.
    assert_eq!(cmdline, own_params(&toplevel));
}

#[test]
#[ignore = "needs root, QEMU, dnsmasq, Debian's kernel and Nix (scripts/test.sh runs it)"]
fn netboot_chainloaded_from_a_menu_passes_its_cmdline_to_the_kernel() {
    // A menu as netboot.xyz's: the entry chosen (here by its timeout) sets
    // ${cmdline}, then chains to the tree's script.
    let extra = ["nixos.site=menu", "mkkexec.netboot-extra", "a.b=c=d"];
    let (cmdline, toplevel) = netboot(
        "menu",
        &BootFile::Tftp(&format!(
            "#!ipxe\n\
             menu Site boot menu\n\
             item nixos NixOS (nixos-kexec)\n\
             item shell iPXE shell\n\
             choose --default nixos --timeout 1000 target && goto ${{target}}\n\
             echo MENU-FAILED\n\
             exit\n\
             :shell\n\
             shell\n\
             :nixos\n\
             set cmdline {}\n\
             chain http://{SERVER}/netboot.ipxe\n",
            extra.join(" ")
        )),
    );
    let mut want = own_params(&toplevel);
    want.extend(extra.map(str::to_owned));
    assert_eq!(cmdline, want);
}

#[test]
#[ignore = "needs root, QEMU, dnsmasq, Debian's kernel and Nix (scripts/test.sh runs it)"]
fn netboot_readme_dnsmasq_recipe_hands_ipxe_the_script_url() {
    // No TFTP: dnsmasq knows iPXE by its user class and gives it the URL
    // of the tree's script as the boot file.
    let (cmdline, toplevel) = netboot("recipe", &BootFile::UserClassUrl);
    assert_eq!(cmdline, own_params(&toplevel));
}
