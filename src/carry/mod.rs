//! The machine carried over the kexec. `kexec-boot` collects, on the old
//! host, what makes the machine reachable (addresses, routes, nameservers,
//! SSH host keys, authorized keys, machine-id) into a cpio beside the
//! initrd; the new system's stage 1 puts the files in place, and this
//! module turns the network state into systemd-networkd units.
//!
//! The carried directory, `/nixos-kexec-carry` in the initrd:
//!
//! ```text
//! network/addrs.json      ip -json addr
//! network/links.json      ip -json -details link (what each link is)
//! network/routes-v4.json  ip -json -4 route
//! network/routes-v6.json  ip -json -6 route
//! network/resolv.conf     /etc/resolv.conf
//! network/ipv6/<link>/    accept_ra, autoconf of /proc/sys/net/ipv6/conf/<link>
//! network/leases/         the DHCP clients' lease files, as they were
//! network/proc/           instead of the JSON where no ip speaks it:
//!                         /proc/net/{fib_trie,route,if_inet6,ipv6_route},
//!                         sys/<link>/{address,mtu} of /sys/class/net
//! ssh/ssh_host_*_key(.pub), authorized_keys, machine-id, hostname, notes
//! ```

pub mod lease;
pub mod network;
mod procnet;

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use crate::output::write_file;

/// Write the networkd units for the state in `state` (a carried
/// `network/` directory) into `output`.
pub fn write_network_units(state: &Utf8Path, output: &Utf8Path) -> Result<()> {
    let units = units_of(state)?;
    for w in &units.warnings {
        eprintln!("mkkexec: warning: {w}");
    }
    if output.exists() && !output.is_dir() {
        bail!("{output} is not a directory; --output names the directory of the units");
    }
    std::fs::create_dir_all(output).with_context(|| format!("cannot create {output}"))?;
    for (name, text) in &units.files {
        write_file(&output.join(name), text.as_bytes(), 0o644)?;
        eprintln!("mkkexec: wrote {}", output.join(name));
    }
    Ok(())
}

/// The units for a carried `network/` directory.
fn units_of(state: &Utf8Path) -> Result<network::Units> {
    let read = |name: &str, required: bool| -> Result<String> {
        let p = state.join(name);
        match std::fs::read_to_string(&p) {
            Ok(text) => Ok(text),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e).with_context(|| format!("cannot read {p}")),
        }
    };
    let proc = state.join("proc");
    let mut warnings = vec![];
    let (addrs, routes_v4, routes_v6) = if !state.join("addrs.json").exists() && proc.is_dir() {
        let p = procnet_of(&proc)?.as_ip();
        warnings = p
            .warnings
            .into_iter()
            .map(|w| format!("not carried: {w}"))
            .collect();
        (p.addrs, p.routes_v4, p.routes_v6)
    } else {
        (
            read("addrs.json", true)?,
            read("routes-v4.json", false)?,
            read("routes-v6.json", false)?,
        )
    };
    let (resolv_conf, links) = (read("resolv.conf", false)?, read("links.json", false)?);
    let mut ipv6 = BTreeMap::new();
    for (link, dir) in entries(&state.join("ipv6"))? {
        let value = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .ok()
                .and_then(|v| v.trim().parse().ok())
        };
        ipv6.insert(
            link,
            network::Ipv6Conf {
                accept_ra: value("accept_ra"),
                autoconf: value("autoconf"),
            },
        );
    }
    let mut leases = vec![];
    for (_, file) in entries(&state.join("leases"))? {
        // A lease file is text; one that is not is passed over by the parser.
        let bytes = std::fs::read(&file).with_context(|| format!("cannot read {file}"))?;
        leases.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    let mut units = network::Units::from_state(&network::State {
        addrs: &addrs,
        routes_v4: &routes_v4,
        routes_v6: &routes_v6,
        resolv_conf: &resolv_conf,
        links: &links,
        ipv6,
        leases,
    })
    .with_context(|| format!("in the network state {state}"))?;
    warnings.append(&mut units.warnings);
    units.warnings = warnings;
    Ok(units)
}

/// The /proc/net and /sys/class/net files kexec-boot copied into `dir`.
fn procnet_of(dir: &Utf8Path) -> Result<procnet::ProcNet> {
    let read = |p: Utf8PathBuf| -> Result<String> {
        match std::fs::read(&p) {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e).with_context(|| format!("cannot read {p}")),
        }
    };
    let mut links = BTreeMap::new();
    for (name, link) in entries(&dir.join("sys"))? {
        let mac = read(link.join("address"))?.trim().to_owned();
        let mtu = read(link.join("mtu"))?.trim().parse().ok();
        links.insert(name, (mac, mtu));
    }
    Ok(procnet::ProcNet {
        fib_trie: read(dir.join("fib_trie"))?,
        route: read(dir.join("route"))?,
        if_inet6: read(dir.join("if_inet6"))?,
        ipv6_route: read(dir.join("ipv6_route"))?,
        links,
    })
}

/// The entries of `dir` (name, path), sorted; none if it does not exist.
fn entries(dir: &Utf8Path) -> Result<Vec<(String, Utf8PathBuf)>> {
    let list = match dir.read_dir_utf8() {
        Ok(list) => list,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("cannot read {dir}")),
    };
    let mut out = vec![];
    for e in list {
        let e = e.with_context(|| format!("cannot read {dir}"))?;
        out.push((e.file_name().to_owned(), e.path().to_owned()));
    }
    out.sort();
    Ok(out)
}
