//! The network shapes real providers give, proven end to end: each shape is
//! built in network namespaces (a provider, and the old host configured as
//! Debian 12's ifupdown and dhclient do it), collected by the real
//! `kexec-boot --collect`, turned into units by `mkkexec network`, and
//! applied by Debian's real systemd-networkd to the same NICs under other
//! names (same MACs, MTU and sysctls back at their defaults, every address
//! gone). The links, addresses and routes after must be those before, modulo
//! interface names, lifetimes and route protocols; then the new system pings
//! its gateway and an address behind it. networkd in a namespace: see
//! shared/TESTBENCH.md (private mounts, its own /run, /sys read-only).
//!
//! This machine's kernel has no 802.1Q or bonding: the VLAN and bond shapes
//! run the same proof inside a QEMU VM with Debian's kernel and Debian's root
//! (the test binary runs itself there).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use mkkexec::boot::script::{BootSpec, kexec_boot};
use serde_json::Value;

use crate::common::*;

/// One shape: the old host's NICs (name, MAC), a shell script that builds
/// the provider (`$P`) and the host (`$H`) around them (`$W` is the work
/// directory, the host's files are under `$W/root`), and what the new system
/// must reach (arguments to ping).
struct Shape {
    name: &'static str,
    nics: &'static [(&'static str, &'static str)],
    setup: &'static str,
    ping: &'static [&'static str],
}

/// Helpers for the setup scripts: `p`/`h` run ip in the provider's or the
/// host's namespace; the provider holds the upstream addresses every shape
/// pings (192.0.2.254, 2001:db8:ffff::1) on its loopback.
const PRELUDE: &str = r#"set -eu
p() { ip -n "$P" "$@"; }
h() { ip -n "$H" "$@"; }
px() { ip netns exec "$P" "$@"; }
hx() { ip netns exec "$H" "$@"; }
p addr add 192.0.2.254/32 dev lo
p addr add 2001:db8:ffff::1/128 dev lo
px sysctl -qw net.ipv6.conf.all.forwarding=1
"#;

const SHAPES: &[Shape] = &[
    Shape {
        name: "static-v6-link-local-gateway",
        nics: &[("e0", "52:54:00:10:00:01")],
        setup: r#"
p addr add 203.0.113.1/24 dev pe0; p addr add fe80::1/64 dev pe0; p addr add 2001:db8:10::1/64 dev pe0 nodad
h addr add 203.0.113.10/24 dev e0; h addr add 2001:db8:10::10/64 dev e0 nodad
h route add default via 203.0.113.1 dev e0
h route add 198.51.100.0/24 via 203.0.113.1 dev e0 metric 50
h -6 route add default via fe80::1 dev e0
"#,
        ping: &["203.0.113.1", "192.0.2.254", "2001:db8:ffff::1"],
    },
    Shape {
        // Hetzner: a /32, the gateway on-link outside it, IPv6 via fe80::1.
        name: "slash32-on-link-gateway",
        nics: &[("e0", "96:00:00:20:00:01")],
        setup: r#"
p addr add 198.51.100.1/24 dev pe0; p route add 192.0.2.77/32 dev pe0
p addr add fe80::1/64 dev pe0; p -6 route add 2001:db8:77::/64 dev pe0
h addr add 192.0.2.77/32 dev e0
h route add default via 198.51.100.1 dev e0 onlink
h addr add 2001:db8:77::2/64 dev e0 nodad
h -6 route add default via fe80::1 dev e0
"#,
        ping: &["198.51.100.1", "192.0.2.254", "2001:db8:ffff::1"],
    },
    Shape {
        // OVH: the IPv6 gateway outside the /64, reached by a host route.
        name: "v6-gateway-outside-the-prefix",
        nics: &[("e0", "52:54:00:30:00:01")],
        setup: r#"
p addr add 203.0.113.1/24 dev pe0
p addr add 2001:db8:88:ff:ff:ff:ff:ff/64 dev pe0 nodad; p -6 route add 2001:db8:88::/64 dev pe0
h addr add 203.0.113.8/24 dev e0; h route add default via 203.0.113.1 dev e0
h addr add 2001:db8:88::5/64 dev e0 nodad
h -6 route add 2001:db8:88:ff:ff:ff:ff:ff dev e0
h -6 route add default via 2001:db8:88:ff:ff:ff:ff:ff dev e0
"#,
        ping: &[
            "203.0.113.1",
            "2001:db8:88:ff:ff:ff:ff:ff",
            "2001:db8:ffff::1",
        ],
    },
    Shape {
        // DigitalOcean: two IPv4 networks and IPv6 on one NIC.
        name: "two-addresses-on-one-nic",
        nics: &[("e0", "52:54:00:40:00:01")],
        setup: r#"
p addr add 203.0.113.1/24 dev pe0; p addr add 198.51.100.1/24 dev pe0; p addr add 2001:db8:40::1/64 dev pe0 nodad
h addr add 203.0.113.40/24 dev e0; h addr add 198.51.100.40/24 dev e0; h addr add 2001:db8:40::40/64 dev e0 nodad
h route add default via 203.0.113.1 dev e0
h -6 route add default via 2001:db8:40::1 dev e0
"#,
        ping: &["198.51.100.1", "192.0.2.254", "2001:db8:ffff::1"],
    },
    Shape {
        name: "ipv6-only",
        nics: &[("e0", "52:54:00:50:00:01")],
        setup: r#"
p addr add 2001:db8:66::1/64 dev pe0 nodad
h addr add 2001:db8:66::6/64 dev e0 nodad
h -6 route add default via 2001:db8:66::1 dev e0
"#,
        ping: &["2001:db8:66::1", "2001:db8:ffff::1"],
    },
    Shape {
        name: "two-nics",
        nics: &[("e0", "52:54:00:60:00:01"), ("e1", "52:54:00:60:00:02")],
        setup: r#"
p addr add 203.0.113.1/24 dev pe0; p addr add 198.51.100.1/24 dev pe1
h addr add 203.0.113.60/24 dev e0; h route add default via 203.0.113.1 dev e0
h addr add 198.51.100.60/24 dev e1; h route add 192.0.2.128/25 via 198.51.100.1 dev e1
"#,
        ping: &["203.0.113.1", "198.51.100.1", "192.0.2.254"],
    },
    Shape {
        name: "ipv4-via-ipv6-next-hop",
        nics: &[("e0", "52:54:00:70:00:01")],
        setup: r#"
p addr add fe80::1/64 dev pe0; p route add 203.0.113.44/32 dev pe0; p -6 route add 2001:db8:44::/64 dev pe0
h addr add 203.0.113.44/32 dev e0; h addr add 2001:db8:44::4/64 dev e0 nodad
h -6 route add default via fe80::1 dev e0
h -4 route add default via inet6 fe80::1 dev e0
"#,
        ping: &["192.0.2.254", "2001:db8:ffff::1"],
    },
    Shape {
        name: "point-to-point",
        nics: &[("e0", "52:54:00:80:00:01")],
        setup: r#"
p addr add 192.0.2.1 peer 192.0.2.10/32 dev pe0
h addr add 192.0.2.10 peer 192.0.2.1/32 dev e0
h route add default via 192.0.2.1 dev e0
"#,
        ping: &["192.0.2.1", "192.0.2.254"],
    },
    Shape {
        // Debian's ifupdown with `iface e0 inet dhcp`: dhclient with a DUID
        // (-i -I) from a dnsmasq pool.
        name: "dhcp-pool",
        nics: &[("e0", "52:54:00:90:00:01")],
        setup: r#"
p addr add 198.51.100.1/24 dev pe0
px dnsmasq --no-resolv --no-hosts --port=0 --interface=pe0 --bind-interfaces \
  --dhcp-range=198.51.100.130,198.51.100.150,255.255.255.0,1h \
  --dhcp-leasefile="$W/dnsmasq.leases" --pid-file="$W/dnsmasq.pid"
mkdir -p "$W/root/var/lib/dhcp"
hx dhclient -4 -i -pf "$W/host-dhclient.pid" -lf "$W/root/var/lib/dhcp/dhclient.e0.leases" -I e0 2>/dev/null
"#,
        ping: &["198.51.100.1", "192.0.2.254"],
    },
    Shape {
        // A host whose own systemd-networkd took its lease from the pool (its
        // DUID comes from its machine-id, which the new system does not share
        // here: only the carried lease's identity gets the same address).
        name: "networkd-dhcp-host",
        nics: &[("e0", "52:54:00:91:00:01")],
        setup: r#"
p addr add 198.51.100.1/24 dev pe0
px dnsmasq --no-resolv --no-hosts --port=0 --interface=pe0 --bind-interfaces \
  --dhcp-range=198.51.100.130,198.51.100.150,255.255.255.0,1h \
  --dhcp-leasefile="$W/dnsmasq.leases" --pid-file="$W/dnsmasq.pid"
mkdir -p "$W/root/run/systemd/network"
printf '[Match]\nMACAddress=52:54:00:91:00:01\n\n[Network]\nDHCP=ipv4\n' >"$W/root/run/systemd/network/10-e0.network"
echo 0123456789abcdef0123456789abcdef >"$W/old-machine-id"
ip netns exec "$H" unshare -m sh -c '
  mount --make-rslave /; mount --bind "$1/root/run" /run; mount --bind "$1/old-machine-id" /etc/machine-id
  for d in /etc/systemd/network /usr/lib/systemd/network /lib/systemd/network \
    /usr/local/lib/systemd/network /var/lib/systemd/network; do
    [ -d "$d" ] && mount -t tmpfs -o ro tmpfs "$d" || :
  done
  mount -o remount,bind,ro /sys
  exec /lib/systemd/systemd-networkd' sh "$W" >"$W/old-networkd.log" 2>&1 </dev/null &
echo $! >"$W/host-networkd.pid"
for i in $(seq 300); do h -4 addr show e0 | grep -q dynamic && break; sleep 0.1; done
h -4 addr show e0 | grep -q dynamic
"#,
        ping: &["198.51.100.1", "192.0.2.254"],
    },
    Shape {
        // A static IPv6 address with routes from router advertisements, and
        // autoconf off: no address of the RA's prefix but its own.
        name: "router-advertisements-without-autoconf",
        nics: &[("e0", "52:54:00:a0:00:01")],
        setup: r#"
p addr add 2001:db8:5::1/64 dev pe0 nodad; p addr add 203.0.113.1/24 dev pe0
px dnsmasq --no-resolv --no-hosts --port=0 --interface=pe0 --bind-interfaces --enable-ra \
  --dhcp-range=2001:db8:5::,ra-only,64 --pid-file="$W/dnsmasq.pid" --dhcp-leasefile="$W/dnsmasq.leases"
h link set e0 down
hx sysctl -qw net.ipv6.conf.e0.autoconf=0 net.ipv6.conf.e0.accept_ra=1
h link set e0 up
h addr add 2001:db8:5::10/64 dev e0 nodad
h addr add 203.0.113.50/24 dev e0; h route add default via 203.0.113.1 dev e0
for i in $(seq 100); do h -6 route show default | grep -q . && break; sleep 0.1; done
"#,
        ping: &["2001:db8:5::1", "2001:db8:ffff::1"],
    },
    Shape {
        name: "jumbo-frames",
        nics: &[("e0", "52:54:00:b0:00:01")],
        setup: r#"
p link set pe0 mtu 9000; p addr add 203.0.113.1/24 dev pe0
h link set e0 mtu 9000
h addr add 203.0.113.90/24 dev e0; h route add default via 203.0.113.1 dev e0
"#,
        ping: &["-M do -s 8900 203.0.113.1", "192.0.2.254"],
    },
    Shape {
        // A hypervisor: the NIC in a bridge, the addresses on the bridge.
        name: "bridge",
        nics: &[("e0", "52:54:00:c0:00:01")],
        setup: r#"
p addr add 203.0.113.1/24 dev pe0; p addr add 2001:db8:c0::1/64 dev pe0 nodad
h link add br0 address 52:54:00:c0:00:01 type bridge stp_state 0 forward_delay 0
h link set e0 master br0; h link set br0 up
h addr add 203.0.113.70/24 dev br0; h addr add 2001:db8:c0::70/64 dev br0 nodad
h route add default via 203.0.113.1 dev br0
h -6 route add default via 2001:db8:c0::1 dev br0
"#,
        ping: &["203.0.113.1", "192.0.2.254", "2001:db8:ffff::1"],
    },
];

/// The shapes that need 802.1Q and bonding: proven in a Debian VM.
const VM_SHAPES: &[Shape] = &[
    Shape {
        name: "vlan",
        nics: &[("e0", "52:54:00:d0:00:01")],
        setup: r#"
p link add link pe0 name pe0.7 type vlan id 7; p link set pe0.7 up
p addr add 203.0.113.1/24 dev pe0.7; p addr add 2001:db8:7::1/64 dev pe0.7 nodad
h link add link e0 name e0.7 type vlan id 7; h link set e0.7 up
h addr add 203.0.113.7/24 dev e0.7; h addr add 2001:db8:7::7/64 dev e0.7 nodad
h route add default via 203.0.113.1 dev e0.7
h -6 route add default via 2001:db8:7::1 dev e0.7
"#,
        ping: &["203.0.113.1", "192.0.2.254", "2001:db8:ffff::1"],
    },
    Shape {
        // Two NICs in an active-backup bond, both to the same switch.
        name: "bond",
        nics: &[("e0", "52:54:00:e0:00:01"), ("e1", "52:54:00:e0:00:02")],
        setup: r#"
p link add sw type bridge; p link set pe0 master sw; p link set pe1 master sw; p link set sw up
p addr add 198.51.100.1/24 dev sw
h link set e0 down; h link set e1 down
h link add bond0 address 52:54:00:e0:00:01 type bond mode active-backup miimon 100 primary e0
h link set e0 master bond0; h link set e1 master bond0; h link set bond0 up
h addr add 198.51.100.9/24 dev bond0; h route add default via 198.51.100.1 dev bond0
"#,
        ping: &["198.51.100.1", "192.0.2.254"],
    },
    Shape {
        name: "vlan-on-bond",
        nics: &[("e0", "52:54:00:f0:00:01"), ("e1", "52:54:00:f0:00:02")],
        setup: r#"
p link add sw type bridge; p link set pe0 master sw; p link set pe1 master sw; p link set sw up
p link add link sw name sw.42 type vlan id 42; p link set sw.42 up; p addr add 203.0.113.1/24 dev sw.42
h link set e0 down; h link set e1 down
h link add bond0 address 52:54:00:f0:00:01 type bond mode active-backup miimon 100
h link set e0 master bond0; h link set e1 master bond0; h link set bond0 up
h link add link bond0 name bond0.42 type vlan id 42; h link set bond0.42 up
h addr add 203.0.113.42/24 dev bond0.42; h route add default via 203.0.113.1 dev bond0.42
"#,
        ping: &["203.0.113.1", "192.0.2.254"],
    },
    Shape {
        // A hypervisor's bridge on a VLAN of its NIC.
        name: "bridge-on-a-vlan",
        nics: &[("e0", "52:54:00:f1:00:01")],
        setup: r#"
p link add link pe0 name pe0.5 type vlan id 5; p link set pe0.5 up; p addr add 198.51.100.1/24 dev pe0.5
h link add link e0 name e0.5 type vlan id 5; h link set e0.5 up
h link add br5 address 52:54:00:f1:00:01 type bridge stp_state 0 forward_delay 0
h link set e0.5 master br5; h link set br5 up
h addr add 198.51.100.5/24 dev br5; h route add default via 198.51.100.1 dev br5
"#,
        ping: &["198.51.100.1", "192.0.2.254"],
    },
];

/// The namespaces of one shape, and what runs in them; all gone when dropped.
struct Lab {
    p: String,
    h: String,
    n: String,
    w: Utf8PathBuf,
    networkd: Option<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.networkd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_pids(&self.w, "");
        for ns in [&self.h, &self.n, &self.p] {
            quietly_delete(ns);
        }
    }
}

/// Kill what the `*.pid` files in `w` whose names start with `prefix` name
/// (`host-…`: the old host's DHCP client or networkd, which a kexec stops
/// without a word).
fn kill_pids(w: &Utf8Path, prefix: &str) {
    for e in w.read_dir_utf8().into_iter().flatten().flatten() {
        let name = e.file_name();
        if name.starts_with(prefix)
            && name.ends_with(".pid")
            && let Ok(pid) = std::fs::read_to_string(e.path())
        {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
    }
}

/// Delete a namespace left by an earlier run, if there is one.
fn quietly_delete(ns: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

fn ip_json(ns: &str, args: &str) -> Value {
    let out = sh(&format!("ip -n {ns} -json {args}"));
    serde_json::from_str(&out).unwrap_or(Value::Array(vec![]))
}

/// A namespace's links, addresses and routes, with physical links named by
/// MAC (their names differ after) and the rest by name; lifetimes, route
/// protocols and what the kernel makes by itself left out.
fn state(ns: &str) -> BTreeSet<String> {
    let links = ip_json(ns, "-details link");
    let mut key = BTreeMap::new();
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    for l in list(&links) {
        let kind = l
            .pointer("/linkinfo/info_kind")
            .and_then(Value::as_str)
            .unwrap_or("");
        let name = s(&l, "ifname");
        let k = if kind.is_empty() || kind == "veth" {
            format!("nic {}", s(&l, "address"))
        } else {
            name.clone()
        };
        key.insert(name, k);
    }
    let name = |n: &str| key.get(n).cloned().unwrap_or_else(|| n.to_owned());
    let mut out = BTreeSet::new();
    for l in list(&links) {
        if s(&l, "ifname") == "lo" {
            continue;
        }
        let info = l.get("linkinfo").cloned().unwrap_or_default();
        out.insert(format!(
            "link {} kind={} mtu={} master={} vlan={} mode={} mac={}",
            name(&s(&l, "ifname")),
            s(&info, "info_kind"),
            l.get("mtu").unwrap_or(&Value::Null),
            name(&s(&l, "master")),
            info.pointer("/info_data/id").unwrap_or(&Value::Null),
            info.pointer("/info_data/mode")
                .and_then(Value::as_str)
                .unwrap_or(""),
            s(&l, "address"),
        ));
    }
    for l in list(&ip_json(ns, "addr")) {
        for a in list(&l["addr_info"]) {
            if matches!(s(&a, "scope").as_str(), "link" | "host") {
                continue;
            }
            out.insert(format!(
                "addr {} {}/{} peer={}",
                name(&s(&l, "ifname")),
                s(&a, "local"),
                a["prefixlen"],
                s(&a, "address")
            ));
        }
    }
    for family in ["-4", "-6"] {
        for r in list(&ip_json(ns, &format!("{family} route show table main"))) {
            let dst = s(&r, "dst");
            let kind = s(&r, "type");
            // The kernel's own link-local and multicast routes, and the host
            // route networkd adds to a DHCP server's gateway.
            if dst.starts_with("fe80:")
                || matches!(kind.as_str(), "multicast" | "local" | "broadcast")
                || (s(&r, "protocol") == "dhcp" && s(&r, "scope") == "link")
            {
                continue;
            }
            let via = r
                .get("gateway")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| {
                    r.pointer("/via/host")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            // An on-link prefix is on-link whatever its metric: the kernel
            // makes one for an address (256), networkd one from an RA (1024).
            let metric = match r.get("gateway").or(r.get("via")) {
                Some(_) => r.get("metric").and_then(Value::as_u64).unwrap_or(0),
                None => 0,
            };
            out.insert(format!(
                "route {dst} via={} dev={} metric={metric}",
                // A router's link-local address is learnt from RA: the same
                // router either way, whatever address it chose.
                if via.starts_with("fe80:") && via != "fe80::1" {
                    "fe80::(router)".to_owned()
                } else {
                    via
                },
                name(&s(&r, "dev"))
            ));
        }
    }
    out
}

/// Runs Debian's systemd-networkd in `ns` with the units of `units`, its
/// /run in `run` (shared/TESTBENCH.md), and a machine-id of its own: the
/// DHCP identity networkd derives from it is not the old host's.
fn networkd(ns: &str, units: &Utf8Path, run: &Utf8Path, log: &Utf8Path) -> Child {
    std::fs::create_dir_all(run.join("systemd/network")).expect("mkdir");
    sh(&format!("cp {units}/* {run}/systemd/network/"));
    let machine_id = run.with_file_name("new-machine-id");
    std::fs::write(&machine_id, "fedcba9876543210fedcba9876543210\n").expect("write");
    Command::new("ip")
        .args(["netns", "exec", ns, "unshare", "-m", "sh", "-c"])
        .arg(
            r#"set -e
mount --make-rslave /
mount --bind "$1" /run
mount --bind "$2" /etc/machine-id
for d in /etc/systemd/network /usr/lib/systemd/network /lib/systemd/network \
  /usr/local/lib/systemd/network /var/lib/systemd/network; do
  [ -d "$d" ] && mount -t tmpfs -o ro tmpfs "$d" || :
done
mount -o remount,bind,ro /sys
exec /lib/systemd/systemd-networkd"#,
        )
        .arg("sh")
        .arg(run)
        .arg(&machine_id)
        .env("SYSTEMD_LOG_LEVEL", "debug")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).expect("log"))
        .stderr(std::fs::File::create(log.with_extension("err")).expect("log"))
        .spawn()
        .expect("spawn networkd")
}

fn prove(shape: &Shape) {
    for (tool, package) in [("dnsmasq", "dnsmasq-base"), ("dhclient", "isc-dhcp-client")] {
        if shape.setup.contains(tool) {
            require(tool, package);
        }
    }
    require("ping", "iputils-ping");
    require("dash", "dash");
    assert!(
        Utf8Path::new("/lib/systemd/systemd-networkd").exists(),
        "systemd-networkd is not installed: apt-get install systemd"
    );
    let (_t, w) = tempdir();
    let tag: String = shape
        .name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    let mut lab = Lab {
        p: format!("mks-{tag}-p"),
        h: format!("mks-{tag}-h"),
        n: format!("mks-{tag}-n"),
        w: w.clone(),
        networkd: None,
    };
    for ns in [&lab.p, &lab.h, &lab.n] {
        quietly_delete(ns);
        sh(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
    }
    // The old host's NICs: veth pairs, the provider's end in $P.
    for (nic, mac) in shape.nics {
        sh(&format!(
            "ip -n {h} link add {nic} address {mac} type veth peer name p{nic} netns {p} && \
             ip -n {h} link set {nic} up && ip -n {p} link set p{nic} up",
            h = lab.h,
            p = lab.p
        ));
    }
    std::fs::create_dir_all(w.join("root/etc")).expect("mkdir");
    std::fs::write(
        w.join("root/etc/resolv.conf"),
        "domain example.org\nsearch example.org\nnameserver 192.0.2.53\n",
    )
    .expect("write");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{PRELUDE}{}", shape.setup))
        .env("P", &lab.p)
        .env("H", &lab.h)
        .env("W", &w)
        .output()
        .expect("spawn setup");
    assert!(
        out.status.success(),
        "{}: setup failed: {}",
        shape.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let before = state(&lab.h);

    // kexec-boot collects, as on the old host.
    let script = w.join("kexec-boot");
    std::fs::write(
        &script,
        kexec_boot(&BootSpec {
            initrd_bytes: 1 << 20,
            unpacked_bytes: 1 << 20,
            ..BootSpec::new(
                "/nix/store/4fqb3vhbdwzi43hf9ax6ji0nvkjzq1ay-nixos-system-kexec-26.05",
                &[],
            )
        })
        .expect("render"),
    )
    .expect("write");
    let carry = w.join("carry");
    ok(Command::new("ip")
        .args(["netns", "exec", &lab.h, "dash"])
        .arg(&script)
        .arg("--collect")
        .arg(&carry)
        .env("NIXOS_KEXEC_CARRY_FROM", w.join("root")));

    // The kexec: the DHCP client dies without a word, the links lose their
    // configuration, the NICs come back under other names.
    kill_pids(&w, "host-");
    for (i, (nic, _)) in shape.nics.iter().enumerate() {
        sh(&format!(
            "ip -n {h} link set {nic} nomaster 2>/dev/null || :; \
             ip -n {h} link set {nic} down && ip -n {h} link set {nic} mtu 1500 && \
             ip -n {h} link set {nic} netns {n} && ip -n {n} link set {nic} name new{i}",
            h = lab.h,
            n = lab.n
        ));
    }
    sh(&format!("ip netns del {}", lab.h));

    let units = w.join("units");
    let made = mkkexec()
        .args(["network", "--state"])
        .arg(carry.join("network"))
        .arg("-o")
        .arg(&units)
        .output()
        .expect("spawn mkkexec");
    let said = String::from_utf8_lossy(&made.stderr).into_owned();
    assert!(
        made.status.success(),
        "{}: mkkexec network: {said}",
        shape.name
    );
    let unit_text = sh(&format!("cd {units} && tail -n +1 *"));
    let log = w.join("networkd.log");
    lab.networkd = Some(networkd(&lab.n, &units, &w.join("run"), &log));

    // Until networkd has made the state the old host had, or gives up.
    let start = Instant::now();
    let mut after = state(&lab.n);
    while after != before && start.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_millis(500));
        after = state(&lab.n);
    }
    let networkd_log = || std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
    assert_eq!(
        before.iter().collect::<Vec<_>>(),
        after.iter().collect::<Vec<_>>(),
        "{}: the new system's network differs from the old host's\n\
         --- mkkexec network said\n{said}\n--- units\n{unit_text}\n--- networkd\n{}",
        shape.name,
        networkd_log()
    );
    for target in shape.ping {
        let mut reached = false;
        for _ in 0..10 {
            let status = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "ip netns exec {} ping -c 1 -W 2 {target} >/dev/null 2>&1",
                    lab.n
                ))
                .status()
                .expect("ping");
            if status.success() {
                reached = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        assert!(
            reached,
            "{}: the new system cannot reach {target}\n--- units\n{unit_text}",
            shape.name
        );
    }
}

/// On this machine: boots Debian's kernel and root under QEMU with this test
/// binary, which runs the test again there ([`GUEST`] set) and proves
/// [`VM_SHAPES`] with the kernel's 802.1Q and bonding modules.
#[test]
#[ignore = "needs QEMU, Debian's kernel and root, systemd-networkd (scripts/test.sh runs it)"]
fn network_comes_back_vlan_and_bond_shapes_in_a_debian_vm() {
    if std::env::var_os(GUEST).is_some() {
        for shape in VM_SHAPES {
            prove(shape);
            println!("network shape {}: came back", shape.name);
        }
        return;
    }
    require("qemu-system-x86_64", "qemu-system-x86");
    let dir = crate::boot::work_dir("network-vm");
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    crate::journey::debian_copy(&root);
    let k = crate::boot::kernel_dir();
    let me = std::env::current_exe().expect("this test binary");
    let mk = Utf8Path::new(env!("CARGO_BIN_EXE_mkkexec"));
    std::fs::create_dir_all(root.join(mk.parent().expect("dir").as_str().trim_start_matches('/')))
        .expect("mkdir");
    sh(&format!(
        "strip -o {root}/integration {me} && strip -o {root}{mk} {mk} && \
         mkdir -p {root}/netmods && cp {k}/modules/*.ko {k}/modules/net.order {root}/netmods/ && \
         cp /bin/busybox {root}/usr/local/bin/busybox && ln -sf busybox {root}/usr/local/bin/ping",
        me = me.display()
    ));
    std::fs::write(
        root.join("guest-init"),
        format!(
            r#"#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
# /tmp stays the root's: this test binary and mkkexec may live below it.
mount -t tmpfs run /run
for m in $(cat /netmods/net.order); do insmod /netmods/$m.ko; done
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin {GUEST}=1
/integration --exact network::network_comes_back_vlan_and_bond_shapes_in_a_debian_vm \
  --include-ignored --test-threads=1 --nocapture
echo "guest: exit $?"
echo o > /proc/sysrq-trigger
"#
        ),
    )
    .expect("write");
    sh(&format!("chmod 755 {root}/guest-init"));
    let initrd = dir.join("guest.cpio");
    sh(&format!(
        "cd {root} && find . | cpio -o -H newc --quiet > {initrd} && rm -rf {root}"
    ));
    let log = dir.join("serial.log");
    let status = Command::new("timeout")
        .args([
            "--kill-after=10",
            "1500",
            "qemu-system-x86_64",
            "-accel",
            "tcg",
            "-m",
            "2048",
        ])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{log}"))
        .arg("-kernel")
        .arg(k.join("vmlinuz"))
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 rdinit=/guest-init panic=-1 quiet"])
        .stdin(Stdio::null())
        .status()
        .expect("spawn qemu");
    let serial = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .replace('\r', "");
    assert!(status.success(), "qemu: {status}\n{serial}");
    for shape in VM_SHAPES {
        assert!(
            serial.contains(&format!("network shape {}: came back", shape.name)),
            "{}: did not come back in the VM\n{serial}",
            shape.name
        );
    }
    assert!(serial.contains("guest: exit 0"), "{serial}");
}

/// Set in the VM: the test runs the shapes instead of booting a VM.
const GUEST: &str = "MKKEXEC_NETWORK_GUEST";

fn shape(name: &str) -> &'static Shape {
    SHAPES
        .iter()
        .find(|s| s.name == name)
        .expect("a shape of SHAPES")
}

macro_rules! shapes {
    ($($test:ident => $name:literal),* $(,)?) => {$(
        #[test]
        #[ignore = "needs root, network namespaces, dnsmasq, dhclient and systemd-networkd (scripts/test.sh runs it)"]
        fn $test() {
            prove(shape($name));
        }
    )*};
}

shapes! {
    network_comes_back_static_v6_link_local_gateway => "static-v6-link-local-gateway",
    network_comes_back_slash32_on_link_gateway => "slash32-on-link-gateway",
    network_comes_back_v6_gateway_outside_the_prefix => "v6-gateway-outside-the-prefix",
    network_comes_back_two_addresses_on_one_nic => "two-addresses-on-one-nic",
    network_comes_back_ipv6_only => "ipv6-only",
    network_comes_back_two_nics => "two-nics",
    network_comes_back_ipv4_via_ipv6_next_hop => "ipv4-via-ipv6-next-hop",
    network_comes_back_point_to_point => "point-to-point",
    network_comes_back_dhcp_pool_same_lease => "dhcp-pool",
    network_comes_back_networkd_dhcp_host_same_lease => "networkd-dhcp-host",
    network_comes_back_router_advertisements_without_autoconf => "router-advertisements-without-autoconf",
    network_comes_back_jumbo_frames => "jumbo-frames",
    network_comes_back_bridge => "bridge",
}
