//! The old host's network as the kernel's own files say it, for a host
//! without an `ip` that speaks JSON (none, or busybox's): kexec-boot copies
//! `/proc/net/{fib_trie,route,if_inet6,ipv6_route}` and each link's
//! `/sys/class/net/<link>/{address,mtu}` as they are, and this module reads
//! them into what `ip -json addr` and `ip -json -4/-6 route` would have
//! printed, so that the units come from one writer.
//!
//! Formats (the kernel's, see `net/ipv4/fib_trie.c`, `net/ipv4/route.c`,
//! `net/ipv6/addrconf.c`, `net/ipv6/route.c`): IPv4 addresses and masks in
//! `route` are little-endian hex; IPv6 addresses are 32 hex digits; flags,
//! prefix lengths and IPv6 metrics are hex, the IPv4 metric decimal.
//!
//! What cannot be told there: which IPv4 address came from DHCP (all count
//! as static), which link holds an address no route names (a /32), an IPv4
//! route through an IPv6 next hop, and what kind each link is (all count as
//! physical). Each is said in the returned warnings.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Value, json};

/// The copied files: `name → contents` for the four /proc/net files, and
/// per link its `address` and `mtu`.
#[derive(Default)]
pub struct ProcNet {
    pub fib_trie: String,
    pub route: String,
    pub if_inet6: String,
    pub ipv6_route: String,
    /// link → (MAC address, MTU)
    pub links: BTreeMap<String, (String, Option<u32>)>,
}

/// `ip -json addr`, `-4 route`, `-6 route`, as JSON text, and what could
/// not be carried.
pub struct AsIp {
    pub addrs: String,
    pub routes_v4: String,
    pub routes_v6: String,
    pub warnings: Vec<String>,
}

const RTF_GATEWAY: u32 = 0x2;
const RTF_REJECT: u32 = 0x200;
const RTF_UP: u32 = 0x1;
const RTF_DEFAULT: u32 = 0x1_0000;
const RTF_ADDRCONF: u32 = 0x4_0000;
const RTF_CACHE: u32 = 0x100_0000;
const IFA_F_PERMANENT: u32 = 0x80;

fn hex(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 16).ok()
}

/// An IPv4 address of /proc/net/route: 8 hex digits, little-endian.
fn v4(s: &str) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(hex(s)?.swap_bytes()))
}

fn v6(s: &str) -> Option<Ipv6Addr> {
    (s.len() == 32)
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
        .map(Ipv6Addr::from)
}

fn prefix_len(mask: Ipv4Addr) -> u32 {
    u32::from(mask).count_ones()
}

fn within4(a: Ipv4Addr, net: Ipv4Addr, len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len.min(32)).unwrap_or(0);
    u32::from(a) & mask == u32::from(net) & mask
}

fn within6(a: Ipv6Addr, net: Ipv6Addr, len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0);
    u128::from(a) & mask == u128::from(net) & mask
}

struct Route4 {
    dev: String,
    dst: Ipv4Addr,
    gateway: Ipv4Addr,
    flags: u32,
    metric: u32,
    mask: Ipv4Addr,
}

impl ProcNet {
    /// What `ip -json` would have printed.
    pub fn as_ip(&self) -> AsIp {
        let mut warnings = vec![];
        let routes4: Vec<Route4> = self
            .route
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some(Route4 {
                    dev: (*f.first()?).to_owned(),
                    dst: v4(f.get(1)?)?,
                    gateway: v4(f.get(2)?)?,
                    flags: hex(f.get(3)?)?,
                    metric: f.get(6)?.parse().ok()?,
                    mask: v4(f.get(7)?)?,
                })
            })
            .collect();

        // The local IPv4 addresses: in fib_trie, a "|-- A" line followed by
        // "/32 host LOCAL".
        let mut local4 = vec![];
        let mut candidate = None;
        for line in self.fib_trie.lines() {
            let t = line.trim_start();
            if let Some(a) = t.strip_prefix("|-- ") {
                candidate = a.trim().parse::<Ipv4Addr>().ok();
            } else if t.contains("/32 host LOCAL")
                && let Some(a) = candidate
                && !a.is_loopback()
                && !local4.contains(&a)
            {
                local4.push(a);
            }
        }
        // Each belongs to the link of the direct route that holds it, with
        // that route's prefix.
        let mut addrs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for a in &local4 {
            let best = routes4
                .iter()
                .filter(|r| r.gateway.is_unspecified() && within4(*a, r.dst, prefix_len(r.mask)))
                .max_by_key(|r| prefix_len(r.mask));
            match best {
                Some(r) => addrs.entry(r.dev.clone()).or_default().push(json!({
                    "family": "inet", "local": a.to_string(),
                    "prefixlen": prefix_len(r.mask), "scope": "global"
                })),
                None => warnings.push(format!(
                    "the address {a} (no route to its network names its link, as for a /32)"
                )),
            }
        }

        let mut local6: Vec<(String, Ipv6Addr, u32)> = vec![];
        for line in self.if_inet6.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(len), Some(scope), Some(flags), Some(dev)) = (
                f.first().and_then(|a| v6(a)),
                f.get(2).and_then(|h| hex(h)),
                f.get(3).and_then(|h| hex(h)),
                f.get(4).and_then(|h| hex(h)),
                f.get(5),
            ) else {
                continue;
            };
            let scope = match scope {
                0 => "global",
                0x20 => "link",
                0x40 => "site",
                _ => "host",
            };
            let mut a = json!({
                "family": "inet6", "local": addr.to_string(), "prefixlen": len, "scope": scope
            });
            if flags & IFA_F_PERMANENT == 0 {
                a["dynamic"] = json!(true);
            }
            addrs.entry((*dev).to_owned()).or_default().push(a);
            local6.push(((*dev).to_owned(), addr, len));
        }

        let links: Vec<Value> = self
            .links
            .iter()
            .map(|(name, (mac, mtu))| {
                let mut l = json!({
                    "ifname": name,
                    "link_type": if name == "lo" { "loopback" } else { "ether" },
                    "address": mac,
                    "addr_info": addrs.get(name).cloned().unwrap_or_default(),
                });
                if let Some(mtu) = mtu {
                    l["mtu"] = json!(mtu);
                }
                l
            })
            .collect();

        let mut r4 = vec![];
        for r in &routes4 {
            if r.flags & RTF_REJECT != 0 {
                continue;
            }
            let len = prefix_len(r.mask);
            let dst = if r.dst.is_unspecified() && len == 0 {
                "default".to_owned()
            } else {
                format!("{}/{len}", r.dst)
            };
            let mut route = json!({ "dst": dst, "dev": r.dev, "flags": [] });
            if r.flags & RTF_GATEWAY != 0 && r.gateway.is_unspecified() {
                // Through an IPv6 next hop, which this file does not show.
                warnings.push(format!("the route to {dst} through an IPv6 next hop"));
                continue;
            } else if !r.gateway.is_unspecified() {
                route["gateway"] = json!(r.gateway.to_string());
            } else if len < 32 && local4.iter().any(|a| within4(*a, r.dst, len)) {
                // The kernel makes one for the network of each address.
                route["protocol"] = json!("kernel");
            } else {
                route["scope"] = json!("link");
            }
            if r.metric > 0 {
                route["metric"] = json!(r.metric);
            }
            r4.push(route);
        }

        let mut r6 = vec![];
        for line in self.ipv6_route.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(dst), Some(len), Some(gw), Some(metric), Some(flags), Some(dev)) = (
                f.first().and_then(|a| v6(a)),
                f.get(1).and_then(|h| hex(h)),
                f.get(4).and_then(|a| v6(a)),
                f.get(5).and_then(|h| hex(h)),
                f.get(8).and_then(|h| hex(h)),
                f.get(9),
            ) else {
                continue;
            };
            // Not the local table's, multicast, rejects, cached or down.
            if *dev == "lo"
                || dst.segments()[0] & 0xff00 == 0xff00
                || flags & RTF_UP == 0
                || flags & (RTF_REJECT | RTF_CACHE) != 0
                || flags >= 0x8000_0000
            {
                continue;
            }
            let mut route = json!({
                "dst": if len == 0 { "default".to_owned() } else { format!("{dst}/{len}") },
                "dev": dev, "metric": metric, "flags": []
            });
            if !gw.is_unspecified() {
                route["gateway"] = json!(gw.to_string());
            }
            if flags & (RTF_ADDRCONF | RTF_DEFAULT) != 0 {
                route["protocol"] = json!("ra");
            } else if gw.is_unspecified()
                && local6
                    .iter()
                    .any(|(d, a, l)| d == dev && *l == len && within6(*a, dst, len))
            {
                route["protocol"] = json!("kernel");
            }
            r6.push(route);
        }

        AsIp {
            addrs: Value::Array(links).to_string(),
            routes_v4: Value::Array(r4).to_string(),
            routes_v6: Value::Array(r6).to_string(),
            warnings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from a network namespace: e0 with 203.0.113.10/24 and
    /// 2001:db8:1::10/64, default routes via 203.0.113.1 and fe80::1, a
    /// route with a metric; e1 with a /32 and an on-link gateway.
    fn capture() -> ProcNet {
        ProcNet {
            fib_trie: "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     \
                       +-- 203.0.113.0/24 2 0 2\n        |-- 203.0.113.0\n           /24 link UNICAST\n        \
                       |-- 203.0.113.10\n           /32 host LOCAL\n     |-- 192.0.2.77\n        /32 host LOCAL\n"
                .into(),
            route: "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    e0\t00000000\t017100CB\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    e0\t007100CB\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    e0\t006433C6\tFE7100CB\t0003\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
                    e1\t0000090A\t01011FAC\t0003\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
                .into(),
            if_inet6: "20010db8000100000000000000000010 02 40 00 80       e0\n\
                       fe80000000000000505400fffe123456 02 40 20 80       e0\n\
                       00000000000000000000000000000001 01 80 10 80       lo\n"
                .into(),
            ipv6_route: "20010db8000100000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001       e0\n\
                         00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003       e0\n\
                         ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001       e0\n\
                         00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo\n"
                .into(),
            links: [
                ("e0".to_owned(), ("52:54:00:12:34:56".to_owned(), Some(1500))),
                ("e1".to_owned(), ("96:00:00:aa:bb:cc".to_owned(), Some(9000))),
                ("lo".to_owned(), ("00:00:00:00:00:00".to_owned(), Some(65536))),
            ]
            .into(),
        }
    }

    #[test]
    fn proc_net_reads_as_ip_json() {
        let ip = capture().as_ip();
        assert_eq!(
            ip.addrs,
            r#"[{"addr_info":[{"family":"inet","local":"203.0.113.10","prefixlen":24,"scope":"global"},{"family":"inet6","local":"2001:db8:1::10","prefixlen":64,"scope":"global"},{"family":"inet6","local":"fe80::5054:ff:fe12:3456","prefixlen":64,"scope":"link"}],"address":"52:54:00:12:34:56","ifname":"e0","link_type":"ether","mtu":1500},{"addr_info":[],"address":"96:00:00:aa:bb:cc","ifname":"e1","link_type":"ether","mtu":9000},{"addr_info":[{"family":"inet6","local":"::1","prefixlen":128,"scope":"host"}],"address":"00:00:00:00:00:00","ifname":"lo","link_type":"loopback","mtu":65536}]"#
        );
        assert_eq!(
            ip.routes_v4,
            r#"[{"dev":"e0","dst":"default","flags":[],"gateway":"203.0.113.1"},{"dev":"e0","dst":"203.0.113.0/24","flags":[],"protocol":"kernel"},{"dev":"e0","dst":"198.51.100.0/24","flags":[],"gateway":"203.0.113.254","metric":100},{"dev":"e1","dst":"10.9.0.0/16","flags":[],"gateway":"172.31.1.1"}]"#
        );
        assert_eq!(
            ip.routes_v6,
            r#"[{"dev":"e0","dst":"2001:db8:1::/64","flags":[],"metric":256,"protocol":"kernel"},{"dev":"e0","dst":"default","flags":[],"gateway":"fe80::1","metric":1024}]"#
        );
        assert_eq!(
            ip.warnings,
            ["the address 192.0.2.77 (no route to its network names its link, as for a /32)"]
        );
    }

    #[test]
    fn an_ipv4_route_through_an_ipv6_next_hop_is_named() {
        let p = ProcNet {
            route: "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    e0\t00000000\t00000000\t0003\t0\t0\t0\t00000000\n"
                .into(),
            ..ProcNet::default()
        };
        assert_eq!(
            p.as_ip().warnings,
            ["the route to default through an IPv6 next hop"]
        );
    }

    #[test]
    fn garbage_lines_are_passed_over() {
        let p = ProcNet {
            route: "header\nnot a route\n".into(),
            if_inet6: "zz 1 2\n".into(),
            ipv6_route: "\u{0}\n".into(),
            fib_trie: "|-- nonsense\n/32 host LOCAL\n".into(),
            ..ProcNet::default()
        };
        let ip = p.as_ip();
        assert_eq!((ip.addrs.as_str(), ip.routes_v4.as_str()), ("[]", "[]"));
    }
}
