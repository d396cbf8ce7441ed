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
//! network/routes-v4.json  ip -json -4 route
//! network/routes-v6.json  ip -json -6 route
//! network/resolv.conf     /etc/resolv.conf
//! ssh/ssh_host_*_key(.pub), authorized_keys, machine-id, hostname, notes
//! ```

pub mod network;

use anyhow::{Context, Result, bail};
use camino::Utf8Path;

use crate::output::write_file;

/// Write the networkd units for the state in `state` (a carried
/// `network/` directory) into `output`.
pub fn write_network_units(state: &Utf8Path, output: &Utf8Path) -> Result<()> {
    let read = |name: &str, required: bool| -> Result<String> {
        let p = state.join(name);
        match std::fs::read_to_string(&p) {
            Ok(text) => Ok(text),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e).with_context(|| format!("cannot read {p}")),
        }
    };
    let (addrs, routes_v4, routes_v6, resolv_conf) = (
        read("addrs.json", true)?,
        read("routes-v4.json", false)?,
        read("routes-v6.json", false)?,
        read("resolv.conf", false)?,
    );
    let units = network::Units::from_state(&network::State {
        addrs: &addrs,
        routes_v4: &routes_v4,
        routes_v6: &routes_v6,
        resolv_conf: &resolv_conf,
    })
    .with_context(|| format!("in the network state {state}"))?;
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
