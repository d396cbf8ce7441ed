//! The old host's network, carried over the kexec, turned into
//! systemd-networkd units (systemd.network(5), systemd.netdev(5)).
//!
//! kexec-boot copies facts, and this module interprets them: what
//! `ip -json addr`, `ip -json -details link`, `ip -json -4/-6 route`
//! printed there, each link's IPv6 sysctls, its `resolv.conf` and its DHCP
//! client's lease files. The units rebuild the same topology: a physical
//! link is matched by its MAC address (interface names may differ under the
//! new kernel; a bond's port by its permanent MAC, since the bond gives it
//! its own), and bonds, bridges and VLANs are made again by `.netdev` units
//! under their old names and MAC addresses. Static addresses (with their
//! peers) and routes are written out; where the old host used DHCP or router
//! advertisements the unit asks for them again rather than freezing a lease,
//! with the same client identity, so a dynamic pool gives the same address.
//! What cannot be rebuilt is said, and its physical link asks DHCP.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use super::lease::{self, ClientId, Lease};

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
    #[serde(default)]
    mtu: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Address {
    family: String,
    local: String,
    prefixlen: u8,
    /// The peer of a point-to-point address (`ip addr add A peer P`).
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    /// Set by the kernel for an address with a finite lifetime: a lease
    /// (DHCP) or SLAAC.
    #[serde(default)]
    dynamic: bool,
}

/// One link of `ip -json -details link`: what `ip -json addr` has, and what
/// kind of link it is.
#[derive(Debug, Deserialize)]
struct Details {
    ifname: String,
    #[serde(default)]
    link: Option<String>,
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    address: Option<String>,
    /// The permanent MAC address, where it differs from `address`.
    #[serde(default)]
    permaddr: Option<String>,
    #[serde(default)]
    link_type: Option<String>,
    #[serde(default)]
    linkinfo: Option<LinkInfo>,
}

#[derive(Debug, Deserialize, Default)]
struct LinkInfo {
    #[serde(default)]
    info_kind: Option<String>,
    #[serde(default)]
    info_data: Option<serde_json::Value>,
    #[serde(default)]
    info_slave_data: Option<serde_json::Value>,
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

/// A link's IPv6 sysctls on the old host (`/proc/sys/net/ipv6/conf/<link>/`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ipv6Conf {
    pub accept_ra: Option<u8>,
    pub autoconf: Option<u8>,
}

/// What the old host printed, as kexec-boot collected it.
#[derive(Default)]
pub struct State<'a> {
    pub addrs: &'a str,
    pub routes_v4: &'a str,
    pub routes_v6: &'a str,
    pub resolv_conf: &'a str,
    /// `ip -json -details link`; empty where it was not collected (the
    /// /proc fallback, an older kexec-boot): every link counts as physical.
    pub links: &'a str,
    pub ipv6: BTreeMap<String, Ipv6Conf>,
    /// The DHCP clients' lease files (any format of [`lease`]).
    pub leases: Vec<String>,
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

/// What a link is, as far as the units go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A NIC (or, in the tests, a veth): matched by MAC address.
    Physical,
    Bond,
    Bridge,
    Vlan,
    /// A tunnel, team, macvlan, …: not rebuilt.
    Other(String),
}

/// The kinds the units rebuild by name; a physical link's unit must not
/// match them although they share its MAC address.
const BUILT: &str = "bond bridge vlan";

/// One link of the old host with everything the units need.
#[derive(Default)]
struct Unit {
    kind: Option<Kind>,
    mac: Option<String>,
    /// A bond port's own MAC (the bond lends it the bond's).
    permanent_mac: Option<String>,
    mtu: Option<u32>,
    parent: Option<String>,
    master: Option<String>,
    data: serde_json::Value,
    dhcp4: bool,
    /// The DHCPv4 lease it held, found by its address.
    lease: Option<Lease>,
    ra6: bool,
    /// A dynamic (SLAAC) global IPv6 address: RA prefixes were used.
    slaac: bool,
    /// Asks DHCP because what it carried cannot be rebuilt.
    fallback: bool,
    /// The static addresses.
    addresses: Vec<String>,
    /// `[Address]` sections of point-to-point addresses.
    peers: Vec<String>,
    /// Every address's network (static or not): what is on-link.
    prefixes: Vec<(IpAddr, u8)>,
    routes: Vec<String>,
    /// The metric of the default route a DHCP client installed.
    dhcp_metric: Option<u32>,
    carried: bool,
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

/// A MAC address we can match on.
fn usable_mac(m: Option<&str>) -> Option<String> {
    m.filter(|m| m.len() == 17 && *m != "00:00:00:00:00:00")
        .map(str::to_lowercase)
}

fn number(v: &serde_json::Value, key: &str) -> Option<u64> {
    v.get(key).and_then(serde_json::Value::as_u64)
}

fn text<'v>(v: &'v serde_json::Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(serde_json::Value::as_str)
}

impl Units {
    /// The units for `state`.
    pub fn from_state(state: &State) -> Result<Self> {
        let links: Vec<Link> = parse(state.addrs, "addrs.json (ip -json addr)")?;
        let details: Vec<Details> = parse(state.links, "links.json (ip -json -details link)")?;
        let v4: Vec<Route> = parse(state.routes_v4, "routes-v4.json (ip -json -4 route)")?;
        let v6: Vec<Route> = parse(state.routes_v6, "routes-v6.json (ip -json -6 route)")?;
        let leases: Vec<Lease> = state.leases.iter().flat_map(|t| lease::parse(t)).collect();
        let mut out = Units::default();
        let mut units: BTreeMap<String, Unit> = BTreeMap::new();

        for d in details
            .iter()
            .filter(|d| d.link_type.as_deref() != Some("loopback"))
        {
            let info = d.linkinfo.as_ref();
            let kind = match info.and_then(|i| i.info_kind.as_deref()) {
                None | Some("veth") => Kind::Physical,
                Some("bond") => Kind::Bond,
                Some("bridge") => Kind::Bridge,
                Some("vlan") => Kind::Vlan,
                Some(other) => Kind::Other(other.to_owned()),
            };
            let permanent_mac = info
                .and_then(|i| i.info_slave_data.as_ref())
                .and_then(|s| text(s, "perm_hwaddr"))
                .or(d.permaddr.as_deref())
                .map(str::to_lowercase);
            units.insert(
                d.ifname.clone(),
                Unit {
                    kind: Some(kind),
                    mac: usable_mac(d.address.as_deref()),
                    permanent_mac,
                    mtu: d.mtu,
                    parent: d.link.clone(),
                    master: d.master.clone(),
                    data: info.and_then(|i| i.info_data.clone()).unwrap_or_default(),
                    ..Unit::default()
                },
            );
        }
        let have_details = !units.is_empty();

        for link in links
            .iter()
            .filter(|l| l.link_type.as_deref() != Some("loopback"))
        {
            let unit = units.entry(link.ifname.clone()).or_insert_with(|| Unit {
                // Without `ip -details`, every link counts as physical.
                kind: Some(Kind::Physical),
                mac: usable_mac(link.address.as_deref()),
                mtu: link.mtu,
                ..Unit::default()
            });
            for a in &link.addr_info {
                // Not the kernel's own (link-local, loopback): those come
                // back by themselves. Site scope (fec0::/10) is carried.
                if matches!(a.scope.as_deref(), Some("link" | "host" | "nowhere")) {
                    continue;
                }
                unit.carried = true;
                if let Ok(ip) = a.local.parse::<IpAddr>() {
                    unit.prefixes.push((ip, a.prefixlen));
                }
                match (a.family.as_str(), a.dynamic) {
                    ("inet", true) => {
                        unit.dhcp4 = true;
                        let ip = a.local.parse::<Ipv4Addr>().ok();
                        unit.lease = leases.iter().rev().find(|l| Some(l.address) == ip).cloned();
                        if unit.lease.is_none() {
                            out.warnings.push(format!(
                                "no DHCP lease of {} found for {} (dhclient, networkd or \
                                 NetworkManager): it asks DHCP again with the new system's \
                                 identity, and a dynamic pool may give it another address",
                                a.local, link.ifname
                            ));
                        }
                    }
                    ("inet6", true) => {
                        unit.ra6 = true;
                        unit.slaac = true;
                    }
                    (_, false) => {
                        let address = canonical(&format!("{}/{}", a.local, a.prefixlen));
                        match a.address.as_deref().filter(|p| *p != a.local) {
                            // A point-to-point address: its own section.
                            Some(peer) => unit.peers.push(format!(
                                "\n[Address]\nAddress={address}\nPeer={}\n",
                                canonical(&format!("{peer}/{}", a.prefixlen))
                            )),
                            None => unit.addresses.push(address),
                        }
                    }
                    _ => {}
                }
            }
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
                let gateway = r
                    .gateway
                    .as_deref()
                    .or(r.via.as_ref().map(|v| v.host.as_str()));
                // dhclient installs its routes as static ones: those through
                // the lease's router (any default route, without a lease)
                // come again from DHCP, with the same metric.
                if family == Family::V4 && unit.dhcp4 {
                    let from_lease = match &unit.lease {
                        Some(l) => gateway
                            .and_then(|g| g.parse::<Ipv4Addr>().ok())
                            .is_some_and(|g| l.routers.contains(&g)),
                        None => r.dst == "default",
                    };
                    if from_lease {
                        if r.dst == "default" {
                            unit.dhcp_metric = Some(r.metric.unwrap_or(0));
                        }
                        continue;
                    }
                }
                // Blackhole, unreachable, prohibit …: not unicast, not carried.
                if let Some(kind) = r.kind.as_deref().filter(|k| *k != "unicast") {
                    out.warnings
                        .push(format!("the {kind} route to {} is not carried", r.dst));
                    continue;
                }
                unit.carried = true;
                let dst = if r.dst == "default" {
                    family.default_dst().to_owned()
                } else if r.dst.contains('/') {
                    canonical(&r.dst)
                } else {
                    format!("{}/{}", canonical(&r.dst), family.host_len())
                };
                let mut s = format!("\n[Route]\nDestination={dst}\n");
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
        for (name, conf) in &state.ipv6 {
            if let Some(u) = units.get_mut(name)
                && conf.autoconf == Some(1)
                && u.ra6
            {
                u.slaac = true;
            }
        }

        let keep = topology(&mut units, have_details, &mut out.warnings);
        if keep.is_empty() {
            bail!(
                "no link of the old host has a global address or a route to carry: \
                 the new system would be unreachable"
            );
        }
        let (dns, domains) = resolv(state.resolv_conf, &mut out.warnings);
        for name in &keep {
            let unit = &units[name];
            let master = unit
                .master
                .as_ref()
                .and_then(|m| units.get(m).map(|u| (m, u)));
            let kind = unit.kind.clone().unwrap_or(Kind::Physical);
            let file = format!("00-nixos-kexec-{}", file_part(name));
            let header =
                format!("# {name} of the host before the kexec, carried by mkkexec network.\n");
            // The [Match] sections of the unit: a bond's port by its own
            // (permanent) MAC, the bond lends it the bond's; and, for NICs
            // without one (veth, some virtual NICs), by that MAC as the
            // current one, in a later file networkd tries second.
            let kind_line = if have_details {
                format!("Kind=!{BUILT}\n")
            } else {
                String::new()
            };
            let matches: Vec<(String, String)> = match (&kind, master) {
                (Kind::Physical, Some((_, m))) if m.kind == Some(Kind::Bond) => {
                    let own = unit.permanent_mac.as_ref().or(unit.mac.as_ref());
                    let own = own.map_or("", |m| m);
                    vec![
                        (
                            format!("{file}.network"),
                            format!("[Match]\nPermanentMACAddress={own}\n{kind_line}"),
                        ),
                        (
                            format!("01-nixos-kexec-{}-by-mac.network", file_part(name)),
                            format!("[Match]\nMACAddress={own}\n{kind_line}"),
                        ),
                    ]
                }
                (Kind::Physical, _) => vec![(
                    format!("{file}.network"),
                    format!(
                        "[Match]\nMACAddress={}\n{kind_line}",
                        unit.mac.as_deref().unwrap_or("")
                    ),
                )],
                _ => {
                    out.files.push((
                        format!("{file}.netdev"),
                        netdev(name, &kind, unit, &mut out.warnings)?,
                    ));
                    vec![(format!("{file}.network"), format!("[Match]\nName={name}\n"))]
                }
            };
            let push = |out: &mut Units, body: &str| {
                for (file, m) in &matches {
                    out.files.push((file.clone(), format!("{header}{m}{body}")));
                }
            };
            let mut s = String::new();
            if let Some(mtu) = unit.mtu.filter(|m| *m != 1500) {
                write!(s, "\n[Link]\nMTUBytes={mtu}\n")?;
            }
            s.push_str("\n[Network]\n");
            let vlans = keep.iter().filter(|v| {
                units[*v].kind == Some(Kind::Vlan) && units[*v].parent.as_ref() == Some(name)
            });
            let port = match master {
                Some((m, mu)) if mu.kind == Some(Kind::Bond) => {
                    writeln!(s, "Bond={m}")?;
                    if text(&mu.data, "primary") == Some(name) {
                        writeln!(s, "PrimarySlave=yes")?;
                    }
                    true
                }
                Some((m, mu)) if mu.kind == Some(Kind::Bridge) => {
                    writeln!(s, "Bridge={m}")?;
                    true
                }
                _ => false,
            };
            for v in vlans {
                writeln!(s, "VLAN={v}")?;
            }
            if port {
                writeln!(s, "IPv6AcceptRA=no")?;
                push(&mut out, &s);
                continue;
            }
            let dhcp = match (unit.dhcp4, unit.fallback) {
                (_, true) => "yes",
                (true, false) => "ipv4",
                (false, false) => "no",
            };
            writeln!(s, "DHCP={dhcp}")?;
            let ra = unit.ra6 || unit.fallback;
            writeln!(s, "IPv6AcceptRA={}", if ra { "yes" } else { "no" })?;
            for a in &unit.addresses {
                writeln!(s, "Address={a}")?;
            }
            for d in &dns {
                writeln!(s, "DNS={d}")?;
            }
            if !domains.is_empty() {
                writeln!(s, "Domains={}", domains.join(" "))?;
            }
            for a in &unit.peers {
                s.push_str(a);
            }
            for r in &unit.routes {
                s.push_str(r);
            }
            if unit.dhcp4 {
                s.push_str(&dhcp4(unit)?);
            }
            if unit.ra6 && !unit.slaac {
                // The old host took routes from router advertisements but no
                // address (autoconf off): neither does the new one.
                s.push_str("\n[IPv6AcceptRA]\nUseAutonomousPrefix=no\n");
            }
            push(&mut out, &s);
        }
        Ok(out)
    }
}

/// The links the units carry: those with an address or a route, and what
/// they stand on (a VLAN's lower link, a port's bond or bridge and its other
/// ports). Links that cannot be rebuilt are said and left out; the physical
/// links under them ask DHCP.
fn topology(
    units: &mut BTreeMap<String, Unit>,
    have_details: bool,
    warnings: &mut Vec<String>,
) -> BTreeSet<String> {
    let mut keep: BTreeSet<String> = units
        .iter()
        .filter(|(_, u)| u.carried)
        .map(|(n, _)| n.clone())
        .collect();
    loop {
        let mut more = vec![];
        for (name, u) in units.iter() {
            if keep.contains(name) {
                more.extend(u.parent.iter().chain(&u.master).cloned());
            } else if u.master.as_ref().is_some_and(|m| keep.contains(m)) {
                more.push(name.clone());
            }
        }
        let before = keep.len();
        keep.extend(more.into_iter().filter(|n| units.contains_key(n)));
        if keep.len() == before {
            break;
        }
    }
    let others: Vec<(String, String)> = keep
        .iter()
        .filter_map(|n| match &units[n].kind {
            Some(Kind::Other(k)) => Some((n.clone(), k.clone())),
            _ => None,
        })
        .collect();
    for (name, kind) in others {
        keep.remove(&name);
        let under: Vec<String> = units
            .iter()
            .filter(|(n, u)| {
                u.kind == Some(Kind::Physical)
                    && (units[&name].parent.as_ref() == Some(*n)
                        || u.master.as_ref() == Some(&name))
            })
            .map(|(n, _)| n.clone())
            .collect();
        warnings.push(format!(
            "{name} is a {kind} link, which mkkexec network does not rebuild: its addresses \
             and routes are not carried{}",
            if under.is_empty() {
                String::new()
            } else {
                format!("; {} asks DHCP instead", under.join(", "))
            }
        ));
        for n in under {
            if let Some(u) = units.get_mut(&n) {
                u.fallback = true;
                u.master = None;
                keep.insert(n);
            }
        }
    }
    let mut macs: BTreeMap<String, String> = BTreeMap::new();
    let names: Vec<String> = keep.iter().cloned().collect();
    for name in names {
        let u = &units[&name];
        if u.kind != Some(Kind::Physical) {
            continue;
        }
        let Some(mac) = u.permanent_mac.clone().or(u.mac.clone()) else {
            warnings.push(format!(
                "{name} has no MAC address to find it by after the kexec: its addresses and \
                 routes are not carried"
            ));
            keep.remove(&name);
            continue;
        };
        if let Some(other) = macs.get(&mac) {
            warnings.push(format!(
                "{name} and {other} share the MAC address {mac}{}: only {other} is carried; \
                 configure the others in the NixOS system",
                if have_details {
                    ""
                } else {
                    " (a bond or VLAN? ip -details was not collected)"
                }
            ));
            keep.remove(&name);
            continue;
        }
        macs.insert(mac, name);
    }
    keep
}

/// The `.netdev` unit that makes a bond, bridge or VLAN again, with its old
/// name and MAC address (networkd would make up a MAC address otherwise,
/// and the DHCP server and the switch know the old one).
fn netdev(name: &str, kind: &Kind, unit: &Unit, warnings: &mut Vec<String>) -> Result<String> {
    let d = &unit.data;
    let (kind_name, section) = match kind {
        Kind::Bond => {
            let mut s = String::from("\n[Bond]\n");
            let mode = text(d, "mode").unwrap_or("balance-rr");
            writeln!(s, "Mode={mode}")?;
            for (key, setting) in [
                ("miimon", "MIIMonitorSec"),
                ("updelay", "UpDelaySec"),
                ("downdelay", "DownDelaySec"),
                ("arp_interval", "ARPIntervalSec"),
            ] {
                if let Some(ms) = number(d, key).filter(|n| *n > 0) {
                    writeln!(s, "{setting}={ms}ms")?;
                }
            }
            if let Some(n) = number(d, "min_links").filter(|n| *n > 0) {
                writeln!(s, "MinLinks={n}")?;
            }
            if let Some(targets) = d.get("arp_ip_target").and_then(|t| t.as_array()) {
                let t: Vec<&str> = targets.iter().filter_map(|t| t.as_str()).collect();
                if !t.is_empty() {
                    writeln!(s, "ARPIPTargets={}", t.join(" "))?;
                }
            }
            if mode == "802.3ad"
                && let Some(rate) = text(d, "ad_lacp_rate")
            {
                writeln!(s, "LACPTransmitRate={rate}")?;
            }
            if matches!(mode, "802.3ad" | "balance-xor" | "balance-tlb")
                && let Some(p) = text(d, "xmit_hash_policy")
            {
                writeln!(s, "TransmitHashPolicy={p}")?;
            }
            if let Some(p) = text(d, "primary_reselect").filter(|p| *p != "always") {
                writeln!(s, "PrimaryReselectPolicy={p}")?;
            }
            if let Some(p) = text(d, "fail_over_mac").filter(|p| *p != "none") {
                writeln!(s, "FailOverMACPolicy={p}")?;
            }
            ("bond", s)
        }
        Kind::Bridge => {
            let mut s = String::from("\n[Bridge]\n");
            let stp = number(d, "stp_state").is_some_and(|n| n > 0);
            writeln!(s, "STP={}", if stp { "yes" } else { "no" })?;
            // In hundredths of a second.
            if let Some(cs) = number(d, "forward_delay") {
                writeln!(s, "ForwardDelaySec={}ms", cs * 10)?;
            }
            if number(d, "vlan_filtering") == Some(1) {
                writeln!(s, "VLANFiltering=yes")?;
                warnings.push(format!(
                    "{name} filters VLANs: the bridge is made again, its VLAN table is not"
                ));
            }
            ("bridge", s)
        }
        Kind::Vlan => {
            let mut s = String::from("\n[VLAN]\n");
            let id = number(d, "id").with_context(|| format!("the VLAN {name} has no id"))?;
            writeln!(s, "Id={id}")?;
            if let Some(p) = text(d, "protocol").filter(|p| *p != "802.1Q") {
                writeln!(s, "Protocol={}", p.to_lowercase())?;
            }
            ("vlan", s)
        }
        Kind::Physical | Kind::Other(_) => bail!("{name} is not made by a .netdev"),
    };
    let mut s = format!(
        "# {name} of the host before the kexec, carried by mkkexec network.\n\
         [NetDev]\nName={name}\nKind={kind_name}\n"
    );
    if let Some(mac) = &unit.mac {
        writeln!(s, "MACAddress={mac}")?;
    }
    s.push_str(&section);
    Ok(s)
}

/// The `[DHCPv4]` section: the same client identity as the old host's
/// client, and the address it held, so that a dynamic pool hands out the
/// same lease.
fn dhcp4(unit: &Unit) -> Result<String> {
    let mut s = String::new();
    if let Some(lease) = &unit.lease {
        match &lease.client_id {
            Some(ClientId::Mac) => writeln!(s, "ClientIdentifier=mac")?,
            Some(ClientId::Duid { iaid, duid }) => {
                writeln!(s, "ClientIdentifier=duid")?;
                let iaid = iaid.or_else(|| unit.mac.as_deref().and_then(lease::dhclient_iaid));
                if let Some(iaid) = iaid {
                    writeln!(s, "IAID={iaid}")?;
                }
                // RFC 8415's types, by the names networkd takes (252 takes
                // no number).
                let kind = match duid.as_slice() {
                    [0, 1, ..] => Some("link-layer-time"),
                    [0, 2, ..] => Some("vendor"),
                    [0, 3, ..] => Some("link-layer"),
                    [0, 4, ..] => Some("uuid"),
                    _ => None,
                };
                if let (Some(kind), Some(raw)) = (kind, duid.get(2..)) {
                    writeln!(s, "DUIDType={kind}")?;
                    let hex: Vec<String> = raw.iter().map(|b| format!("{b:02x}")).collect();
                    writeln!(s, "DUIDRawData={}", hex.join(":"))?;
                }
            }
            None => {}
        }
        // networkd ≥ 253; older ones say they ignore it.
        writeln!(s, "RequestAddress={}", lease.address)?;
    }
    if let Some(m) = unit.dhcp_metric {
        writeln!(s, "RouteMetric={m}")?;
    }
    Ok(if s.is_empty() {
        s
    } else {
        format!("\n[DHCPv4]\n{s}")
    })
}

/// The nameservers and search domains of `resolv.conf`, each once; a local
/// stub (127.0.0.53, ::1) is no server for another system.
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
                        Some(_) if dns.iter().any(|d| d == ns) => {}
                        Some(_) => dns.push(ns.to_owned()),
                        None => warnings.push(format!("nameserver {ns:?} is not an address")),
                    }
                }
            }
            Some("search" | "domain") => {
                for w in words {
                    if !domains.iter().any(|d| d == w) {
                        domains.push(w.to_owned());
                    }
                }
            }
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
        let u = super::super::units_of(dir.as_str().into()).expect("units");
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
            ..State::default()
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
    fn a_link_not_rebuilt_is_named_and_its_nic_asks_dhcp() {
        let u = Units::from_state(&State {
            addrs: r#"[{"ifname":"e0","address":"52:54:00:00:00:01","addr_info":[]},
                {"ifname":"mv0","address":"52:54:00:00:00:09","addr_info":[{"family":"inet","local":"192.0.2.9","prefixlen":24}]}]"#,
            links: r#"[{"ifname":"e0","address":"52:54:00:00:00:01","linkinfo":null},
                {"ifname":"mv0","link":"e0","address":"52:54:00:00:00:09","linkinfo":{"info_kind":"macvlan"}}]"#,
            resolv_conf: "nameserver 192.0.2.53\n",
            ..State::default()
        })
        .expect("units");
        assert_eq!(
            u.warnings,
            [
                "mv0 is a macvlan link, which mkkexec network does not rebuild: its addresses and \
              routes are not carried; e0 asks DHCP instead"
            ]
        );
        assert_eq!(u.files.len(), 1);
        assert!(
            u.files[0]
                .1
                .contains("MACAddress=52:54:00:00:00:01\nKind=!bond bridge vlan\n")
        );
        assert!(
            u.files[0].1.contains("DHCP=yes\nIPv6AcceptRA=yes\n"),
            "{}",
            u.files[0].1
        );
    }

    #[test]
    fn a_bond_its_ports_and_a_vlan_on_it() {
        let u = Units::from_state(&State {
            addrs: r#"[{"ifname":"bond0.42","address":"52:54:00:00:00:01","mtu":1500,"addr_info":[{"family":"inet","local":"203.0.113.42","prefixlen":24}]}]"#,
            links: r#"[{"ifname":"e0","master":"bond0","address":"52:54:00:00:00:01","linkinfo":{"info_slave_kind":"bond","info_slave_data":{"perm_hwaddr":"52:54:00:00:00:01"}}},
                {"ifname":"e1","master":"bond0","address":"52:54:00:00:00:01","linkinfo":{"info_slave_kind":"bond","info_slave_data":{"perm_hwaddr":"52:54:00:00:00:02"}}},
                {"ifname":"bond0","address":"52:54:00:00:00:01","mtu":9000,"linkinfo":{"info_kind":"bond","info_data":{"mode":"active-backup","miimon":100,"primary":"e0"}}},
                {"ifname":"bond0.42","link":"bond0","address":"52:54:00:00:00:01","linkinfo":{"info_kind":"vlan","info_data":{"protocol":"802.1Q","id":42}}}]"#,
            resolv_conf: "nameserver 192.0.2.53\n",
            ..State::default()
        })
        .expect("units");
        let files: BTreeMap<&str, &str> = u
            .files
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let f = |n: &str| {
            files
                .get(n)
                .copied()
                .unwrap_or_else(|| panic!("no {n}: {files:?}"))
        };
        assert!(f("00-nixos-kexec-bond0.netdev").contains(
            "Name=bond0\nKind=bond\nMACAddress=52:54:00:00:00:01\n\n[Bond]\nMode=active-backup\nMIIMonitorSec=100ms\n"
        ));
        assert!(f("00-nixos-kexec-bond0.network").contains("MTUBytes=9000\n"));
        assert!(f("00-nixos-kexec-bond0.network").contains("VLAN=bond0.42\n"));
        assert!(f("00-nixos-kexec-bond0.42.netdev").contains("[VLAN]\nId=42\n"));
        assert!(f("00-nixos-kexec-bond0.42.network").contains("Address=203.0.113.42/24\n"));
        assert!(f("00-nixos-kexec-e1.network").contains("PermanentMACAddress=52:54:00:00:00:02\n"));
        assert!(f("01-nixos-kexec-e1-by-mac.network").contains("MACAddress=52:54:00:00:00:02\n"));
        assert!(f("00-nixos-kexec-e0.network").contains("Bond=bond0\nPrimarySlave=yes\n"));
        assert!(!f("00-nixos-kexec-e1.network").contains("PrimarySlave"));
        assert!(u.warnings.is_empty(), "{:?}", u.warnings);
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
