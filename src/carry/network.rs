//! The old host's network, carried over the kexec: what `ip -json addr`,
//! `ip -json -4 route` and `ip -json -6 route` printed there, and its
//! `resolv.conf`, turned into systemd-networkd `.network` units, one per
//! link, matched by MAC address (interface names may differ under the new
//! kernel). Static addresses and routes are written out; where the old host
//! used DHCP or router advertisements, the unit asks for them again rather
//! than freezing a lease. Format: systemd.network(5).

use std::collections::BTreeMap;
use std::fmt::Write;

use std::net::IpAddr;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// One link of `ip -json addr`.
#[derive(Debug, Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    link_type: Option<String>,
    /// The MAC address (absent on some tunnels).
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    addr_info: Vec<Address>,
}

#[derive(Debug, Deserialize)]
struct Address {
    family: String,
    local: String,
    prefixlen: u8,
    #[serde(default)]
    scope: Option<String>,
    /// Set by the kernel for an address with a finite lifetime: a lease
    /// (DHCP) or SLAAC.
    #[serde(default)]
    dynamic: bool,
}

/// One route of `ip -json route`.
#[derive(Debug, Deserialize)]
struct Route {
    dst: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    /// A next hop of the other family (`via inet6 fe80::1` for IPv4).
    #[serde(default)]
    via: Option<Via>,
    #[serde(default)]
    dev: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    metric: Option<u32>,
    #[serde(default)]
    prefsrc: Option<String>,
    #[serde(default)]
    flags: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Via {
    host: String,
}

/// What the old host printed, as kexec-boot collected it.
pub struct State<'a> {
    pub addrs: &'a str,
    pub routes_v4: &'a str,
    pub routes_v6: &'a str,
    pub resolv_conf: &'a str,
}

/// The units to write (file name, contents), and what could not be carried.
#[derive(Debug, Default)]
pub struct Units {
    pub files: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn default_dst(self) -> &'static str {
        match self {
            Family::V4 => "0.0.0.0/0",
            Family::V6 => "::/0",
        }
    }

    fn host_len(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

#[derive(Default)]
struct Unit {
    mac: String,
    dhcp4: bool,
    ra6: bool,
    /// The static addresses, written out.
    addresses: Vec<String>,
    /// Every address's network (static or not): what is on-link.
    prefixes: Vec<(IpAddr, u8)>,
    routes: Vec<String>,
}

/// `addr` or `addr/len` in its canonical form (IPv6 shortened, as `ip`
/// prints it; /proc/net does not), or as given if it is no address.
fn canonical(s: &str) -> String {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    match (addr.parse::<IpAddr>(), len) {
        (Ok(ip), Some(l)) => format!("{ip}/{l}"),
        (Ok(ip), None) => ip.to_string(),
        (Err(_), _) => s.to_owned(),
    }
}

/// Whether `gw` is reachable without a route: link-local, or in the network
/// of an address of the link. networkd refuses any other gateway unless
/// told it is on-link.
fn on_a_prefix(gw: &str, prefixes: &[(IpAddr, u8)]) -> bool {
    let Ok(gw) = gw.parse::<IpAddr>() else {
        return true;
    };
    let within = |net: &IpAddr, len: u8| match (net, gw) {
        (IpAddr::V4(n), IpAddr::V4(g)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(*n) & mask == u32::from(g) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(g)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(*n) & mask == u128::from(g) & mask
        }
        _ => false,
    };
    matches!(gw, IpAddr::V6(g) if g.segments()[0] & 0xffc0 == 0xfe80)
        || prefixes.iter().any(|(n, l)| within(n, *l))
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<Vec<T>> {
    // `ip` prints nothing at all for an empty table on some versions.
    if text.trim().is_empty() {
        return Ok(vec![]);
    }
    serde_json::from_str(text).with_context(|| format!("{what} is not what `ip -json` prints"))
}

/// A name safe in a file name.
fn file_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Units {
    /// The units for `state`.
    pub fn from_state(state: &State) -> Result<Self> {
        let links: Vec<Link> = parse(state.addrs, "addrs.json (ip -json addr)")?;
        let v4: Vec<Route> = parse(state.routes_v4, "routes-v4.json (ip -json -4 route)")?;
        let v6: Vec<Route> = parse(state.routes_v6, "routes-v6.json (ip -json -6 route)")?;
        let mut out = Units::default();
        let mut units: BTreeMap<String, Unit> = BTreeMap::new();
        let mut macs: BTreeMap<String, String> = BTreeMap::new();

        for link in &links {
            if link.link_type.as_deref() == Some("loopback") {
                continue;
            }
            let carried: Vec<&Address> = link
                .addr_info
                .iter()
                // Not the kernel's own (link-local, loopback): those come
                // back by themselves. Site scope (fec0::/10) is carried.
                .filter(|a| !matches!(a.scope.as_deref(), Some("link" | "host" | "nowhere")))
                .collect();
            let routed = v4.iter().chain(&v6).any(|r| {
                r.dev.as_deref() == Some(&link.ifname) && r.protocol.as_deref() != Some("kernel")
            });
            if carried.is_empty() && !routed {
                continue;
            }
            let mac = match link.address.as_deref() {
                Some(m) if m.len() == 17 && m != "00:00:00:00:00:00" => m.to_lowercase(),
                _ => {
                    out.warnings.push(format!(
                        "{} has no MAC address to find it by after the kexec: its addresses and \
                         routes are not carried",
                        link.ifname
                    ));
                    continue;
                }
            };
            if let Some(other) = macs.insert(mac.clone(), link.ifname.clone()) {
                out.warnings.push(format!(
                    "{} and {other} share the MAC address {mac} (a bond or VLAN?): only {other} \
                     is carried; configure the others in the NixOS system",
                    link.ifname
                ));
                macs.insert(mac, other);
                continue;
            }
            let mut unit = Unit {
                mac,
                ..Unit::default()
            };
            for a in carried {
                if let Ok(ip) = a.local.parse::<IpAddr>() {
                    unit.prefixes.push((ip, a.prefixlen));
                }
                match (a.family.as_str(), a.dynamic) {
                    ("inet", true) => unit.dhcp4 = true,
                    ("inet6", true) => unit.ra6 = true,
                    (_, false) => unit
                        .addresses
                        .push(canonical(&format!("{}/{}", a.local, a.prefixlen))),
                    _ => {}
                }
            }
            units.insert(link.ifname.clone(), unit);
        }

        for (family, routes) in [(Family::V4, &v4), (Family::V6, &v6)] {
            for r in routes.iter() {
                let Some(unit) = r.dev.as_deref().and_then(|d| units.get_mut(d)) else {
                    continue;
                };
                let protocol = r.protocol.as_deref();
                // Made by the kernel from an address, or by the DHCP client
                // or RA handling the unit asks for again.
                if protocol == Some("ra") {
                    // Router advertisements made it: accept them again.
                    unit.ra6 = true;
                    continue;
                }
                if protocol == Some("kernel")
                    || (protocol == Some("dhcp") && family == Family::V4 && unit.dhcp4)
                    || r.dst.starts_with("fe80:")
                {
                    continue;
                }
                // Blackhole, unreachable, prohibit …: not unicast, not carried.
                if let Some(kind) = r.kind.as_deref().filter(|k| *k != "unicast") {
                    out.warnings
                        .push(format!("the {kind} route to {} is not carried", r.dst));
                    continue;
                }
                let dst = if r.dst == "default" {
                    family.default_dst().to_owned()
                } else if r.dst.contains('/') {
                    canonical(&r.dst)
                } else {
                    format!("{}/{}", canonical(&r.dst), family.host_len())
                };
                let mut s = format!("\n[Route]\nDestination={dst}\n");
                let gateway = r
                    .gateway
                    .as_deref()
                    .or(r.via.as_ref().map(|v| v.host.as_str()));
                match gateway {
                    Some(gw) => writeln!(s, "Gateway={}", canonical(gw))?,
                    None => {
                        if let Some(scope) = r.scope.as_deref() {
                            writeln!(s, "Scope={scope}")?;
                        }
                    }
                }
                let onlink = r.flags.iter().any(|f| f == "onlink")
                    || gateway.is_some_and(|gw| !on_a_prefix(gw, &unit.prefixes));
                if onlink {
                    writeln!(s, "GatewayOnLink=yes")?;
                }
                if let Some(m) = r.metric {
                    // The kernel's default metric for IPv6 routes is 1024 and
                    // networkd's is too: say only what differs.
                    if !(family == Family::V6 && m == 1024) {
                        writeln!(s, "Metric={m}")?;
                    }
                }
                if let Some(src) = &r.prefsrc {
                    writeln!(s, "PreferredSource={}", canonical(src))?;
                }
                unit.routes.push(s);
            }
        }

        let (dns, domains) = resolv(state.resolv_conf, &mut out.warnings);
        if units.is_empty() {
            bail!(
                "no link of the old host has a global address or a route to carry: \
                 the new system would be unreachable"
            );
        }
        for (ifname, unit) in &units {
            let mut s = format!(
                "# {ifname} of the host before the kexec, carried by mkkexec network.\n\
                 [Match]\nMACAddress={}\n\n[Network]\n",
                unit.mac
            );
            writeln!(s, "DHCP={}", if unit.dhcp4 { "ipv4" } else { "no" })?;
            writeln!(s, "IPv6AcceptRA={}", if unit.ra6 { "yes" } else { "no" })?;
            for a in &unit.addresses {
                writeln!(s, "Address={a}")?;
            }
            for d in &dns {
                writeln!(s, "DNS={d}")?;
            }
            if !domains.is_empty() {
                writeln!(s, "Domains={}", domains.join(" "))?;
            }
            for r in &unit.routes {
                s.push_str(r);
            }
            out.files
                .push((format!("00-nixos-kexec-{}.network", file_part(ifname)), s));
        }
        Ok(out)
    }
}

/// The nameservers and search domains of `resolv.conf`; a local stub
/// (127.0.0.53, ::1) is no server for another system.
fn resolv(text: &str, warnings: &mut Vec<String>) -> (Vec<String>, Vec<String>) {
    let (mut dns, mut domains, mut local) = (vec![], vec![], vec![]);
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ns) = words.next() {
                    let ip: Option<std::net::IpAddr> = ns.parse().ok();
                    match ip {
                        Some(ip) if ip.is_loopback() => local.push(ns.to_owned()),
                        Some(_) => dns.push(ns.to_owned()),
                        None => warnings.push(format!("nameserver {ns:?} is not an address")),
                    }
                }
            }
            Some("search" | "domain") => domains.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    if dns.is_empty() {
        warnings.push(if local.is_empty() {
            "the old host named no nameserver: none is carried".to_owned()
        } else {
            format!(
                "the old host asked only a local resolver ({}): no nameserver is carried",
                local.join(", ")
            )
        });
    }
    (dns, domains)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The units for a capture in tests/fixture/network (see capture.sh
    /// there: real `ip -json` output of links set up in a namespace).
    fn units(case: &str) -> String {
        let dir = format!(
            "{}/tests/fixture/network/{case}",
            env!("CARGO_MANIFEST_DIR")
        );
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).expect("capture");
        let (a, r4, r6, rc) = (
            read("addrs.json"),
            read("routes-v4.json"),
            read("routes-v6.json"),
            read("resolv.conf"),
        );
        let u = Units::from_state(&State {
            addrs: &a,
            routes_v4: &r4,
            routes_v6: &r6,
            resolv_conf: &rc,
        })
        .expect("units");
        let mut out = String::new();
        for w in &u.warnings {
            out += &format!("warning: {w}\n");
        }
        for (name, text) in &u.files {
            out += &format!("--- {name}\n{text}");
        }
        out
    }

    #[test]
    fn static_two_links_link_local_gateway() {
        insta::assert_snapshot!(units("static"));
    }

    #[test]
    fn onlink_gateway_and_ipv4_via_ipv6() {
        insta::assert_snapshot!(units("onlink"));
    }

    #[test]
    fn dhcp_and_router_advertisements_asked_again() {
        insta::assert_snapshot!(units("dhcp"));
    }

    #[test]
    fn this_machine() {
        insta::assert_snapshot!(units("this-machine"));
    }

    fn one(addrs: &str, v4: &str) -> Result<Units> {
        Units::from_state(&State {
            addrs,
            routes_v4: v4,
            routes_v6: "",
            resolv_conf: "nameserver 192.0.2.53\n",
        })
    }

    #[test]
    fn a_link_without_mac_is_named() {
        let u = one(
            r#"[{"ifname":"wg0","link_type":"none","addr_info":[{"family":"inet","local":"10.9.0.2","prefixlen":24,"scope":"global"}]},
                {"ifname":"e0","link_type":"ether","address":"52:54:00:00:00:01","addr_info":[{"family":"inet","local":"192.0.2.9","prefixlen":24,"scope":"global"}]}]"#,
            "[]",
        )
        .expect("units");
        assert_eq!(u.files.len(), 1);
        assert!(
            u.warnings[0].starts_with("wg0 has no MAC address"),
            "{:?}",
            u.warnings
        );
    }

    #[test]
    fn shared_mac_is_carried_once() {
        let u = one(
            r#"[{"ifname":"e0","address":"52:54:00:00:00:01","addr_info":[{"family":"inet","local":"192.0.2.9","prefixlen":24}]},
                {"ifname":"e0.7","address":"52:54:00:00:00:01","addr_info":[{"family":"inet","local":"198.51.100.9","prefixlen":24}]}]"#,
            "[]",
        )
        .expect("units");
        assert_eq!(u.files.len(), 1);
        assert!(
            u.warnings[0].contains("share the MAC address"),
            "{:?}",
            u.warnings
        );
    }

    #[test]
    fn nothing_to_carry_is_an_error() {
        let e = one(
            r#"[{"ifname":"lo","link_type":"loopback","addr_info":[]}]"#,
            "",
        )
        .expect_err("unreachable");
        assert!(e.to_string().contains("would be unreachable"), "{e}");
    }

    #[test]
    fn not_ip_json_is_an_error() {
        let e = one("1: lo: <LOOPBACK,UP>", "").expect_err("text output");
        assert!(format!("{e:#}").contains("ip -json addr"), "{e:#}");
    }

    #[test]
    fn site_scope_addresses_are_carried() {
        let u = one(
            r#"[{"ifname":"e0","address":"52:54:00:00:00:01","addr_info":[
                {"family":"inet6","local":"fec0::15","prefixlen":64,"scope":"site"},
                {"family":"inet6","local":"fe80::5054:ff:fe00:1","prefixlen":64,"scope":"link"}]}]"#,
            "[]",
        )
        .expect("units");
        let text = &u.files[0].1;
        assert!(text.contains("Address=fec0::15/64\n"), "{text}");
        assert!(!text.contains("fe80"), "{text}");
    }

    #[test]
    fn proc_net_addresses_are_shortened_and_outside_gateways_on_link() {
        let u = one(
            r#"[{"ifname":"e0","address":"96:00:00:aa:bb:cc","addr_info":[
                {"family":"inet","local":"192.0.2.77","prefixlen":32,"scope":"global"},
                {"family":"inet6","local":"2a01:04f8:0c17:0001:0000:0000:0000:0001","prefixlen":64,"scope":"global"}]}]"#,
            r#"[{"dst":"default","gateway":"172.31.1.1","dev":"e0","flags":[]},
                {"dst":"10.0.0.0/8","gateway":"192.0.2.77","dev":"e0","flags":[]}]"#,
        )
        .expect("units");
        let text = &u.files[0].1;
        assert!(text.contains("Address=2a01:4f8:c17:1::1/64\n"), "{text}");
        // 172.31.1.1 is in no address's network: on-link, as the kernel
        // route had it; 192.0.2.77 is the link's own /32.
        assert!(
            text.contains("Gateway=172.31.1.1\nGatewayOnLink=yes\n"),
            "{text}"
        );
        assert!(
            text.contains("Gateway=192.0.2.77\n\n") || text.ends_with("Gateway=192.0.2.77\n"),
            "{text}"
        );
    }

    #[test]
    fn blackhole_routes_are_named() {
        let u = one(
            r#"[{"ifname":"e0","address":"52:54:00:00:00:01","addr_info":[{"family":"inet","local":"192.0.2.9","prefixlen":24}]}]"#,
            r#"[{"type":"blackhole","dst":"10.0.0.0/8","dev":"e0","flags":[]}]"#,
        )
        .expect("units");
        assert_eq!(
            u.warnings,
            ["the blackhole route to 10.0.0.0/8 is not carried"]
        );
    }
}
