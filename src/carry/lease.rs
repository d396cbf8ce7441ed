//! The DHCPv4 leases of the old host's DHCP client, read for the identity it
//! used, so that the new system asks the same server as the same client and a
//! dynamic pool hands it the same address.
//!
//! Two formats are read:
//! - ISC dhclient's lease file (`dhclient.leases(5)`; Debian's ifupdown keeps
//!   it in `/var/lib/dhcp/dhclient.<link>.leases`): `lease { … }` blocks with
//!   `fixed-address` and `option routers`, and, when dhclient identified
//!   itself by a DUID (`-i`, as ifupdown runs it), a `default-duid "…"`
//!   line. dhclient then sends the client identifier of RFC 4361: 0xff, an
//!   IAID made of the last four bytes of the link's MAC address, the DUID.
//!   Without that line it sent no client identifier: the server knows it by
//!   its MAC address.
//! - systemd-networkd's `/run/systemd/netif/leases/<ifindex>` and
//!   NetworkManager's internal client's `*.lease`: `KEY=value` lines with
//!   `ADDRESS`, `ROUTER` and `CLIENTID` (hex).

use std::net::Ipv4Addr;

/// How the old host's client named itself to the DHCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientId {
    /// By its MAC address (no identifier, or type 1 + the MAC).
    Mac,
    /// RFC 4361: an IAID and a DUID (its first two bytes are the DUID type).
    Duid { iaid: Option<u32>, duid: Vec<u8> },
}

/// One lease the old host held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub routers: Vec<Ipv4Addr>,
    pub client_id: Option<ClientId>,
}

/// The leases in `text`, a lease file of either format (unknown lines are
/// passed over: a lease file we cannot read costs the identity, not the
/// boot).
pub fn parse(text: &str) -> Vec<Lease> {
    if text.contains("lease {") {
        dhclient(text)
    } else {
        key_value(text).into_iter().collect()
    }
}

fn key_value(text: &str) -> Option<Lease> {
    let mut address = None;
    let mut routers = vec![];
    let mut client_id = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key.trim() {
            "ADDRESS" => address = value.trim().parse().ok(),
            "ROUTER" => {
                routers = value
                    .split_whitespace()
                    .filter_map(|r| r.parse().ok())
                    .collect()
            }
            "CLIENTID" => client_id = from_hex(value.trim()).and_then(|b| client_id_of(&b)),
            _ => {}
        }
    }
    Some(Lease {
        address: address?,
        routers,
        client_id,
    })
}

/// A DHCP client identifier (option 61) as networkd can send it again.
fn client_id_of(bytes: &[u8]) -> Option<ClientId> {
    match bytes {
        [1, mac @ ..] if mac.len() == 6 => Some(ClientId::Mac),
        [0xff, a, b, c, d, duid @ ..] if duid.len() > 2 => Some(ClientId::Duid {
            iaid: Some(u32::from_be_bytes([*a, *b, *c, *d])),
            duid: duid.to_vec(),
        }),
        _ => None,
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s: String = s.chars().filter(|c| *c != ':').collect();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// dhclient's lease file: the last `default-duid` and every `lease` block.
fn dhclient(text: &str) -> Vec<Lease> {
    let mut duid = None;
    let mut leases = vec![];
    let mut current: Option<(Option<Ipv4Addr>, Vec<Ipv4Addr>)> = None;
    for line in text.lines() {
        let line = line.trim().trim_end_matches(';');
        if let Some(rest) = line.strip_prefix("default-duid ") {
            duid = unquote(rest);
        } else if line == "lease {" {
            current = Some((None, vec![]));
        } else if line == "}" {
            if let Some((Some(address), routers)) = current.take() {
                leases.push(Lease {
                    address,
                    routers,
                    client_id: None,
                });
            }
        } else if let Some((address, routers)) = current.as_mut() {
            if let Some(a) = line.strip_prefix("fixed-address ") {
                *address = a.trim().parse().ok();
            } else if let Some(r) = line.strip_prefix("option routers ") {
                *routers = r.split(',').filter_map(|r| r.trim().parse().ok()).collect();
            }
        }
    }
    let id = match duid {
        // The IAID is the link's: the caller knows its MAC address.
        Some(duid) if duid.len() > 2 => ClientId::Duid { iaid: None, duid },
        _ => ClientId::Mac,
    };
    for l in &mut leases {
        l.client_id = Some(id.clone());
    }
    leases
}

/// A dhclient string: `"…"` with `\ooo` octal and `\x` escapes.
fn unquote(s: &str) -> Option<Vec<u8>> {
    let inner = s.trim().strip_prefix('"')?.strip_suffix('"')?;
    let bytes = inner.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let octal = bytes
                .get(i + 1..i + 4)
                .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
            if let Some(d) = octal {
                out.push(
                    d.iter()
                        .fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            } else {
                out.push(*bytes.get(i + 1)?);
                i += 2;
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The IAID dhclient uses with `-i`: the last four bytes of the MAC address.
pub fn dhclient_iaid(mac: &str) -> Option<u32> {
    let bytes = from_hex(mac)?;
    let tail: [u8; 4] = bytes.get(bytes.len().checked_sub(4)?..)?.try_into().ok()?;
    Some(u32::from_be_bytes(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by Debian 12's dhclient run as ifupdown runs it (`-i`).
    const DHCLIENT: &str = r#"default-duid "\000\001\000\0012\240\331:RT\000\000\000\020";
lease {
  interface "d0";
  fixed-address 198.51.100.133;
  option subnet-mask 255.255.255.0;
  option routers 198.51.100.1;
  option host-name "vm";
  renew 2 2026/12/01 01:29:03;
}
"#;

    #[test]
    fn dhclient_with_a_duid() {
        let l = parse(DHCLIENT);
        assert_eq!(
            l,
            [Lease {
                address: "198.51.100.133".parse().expect("ip"),
                routers: vec!["198.51.100.1".parse().expect("ip")],
                client_id: Some(ClientId::Duid {
                    iaid: None,
                    // What dnsmasq logged as the client identifier, after
                    // ff and the IAID 00:00:00:10.
                    duid: from_hex("00:01:00:01:32:a0:d9:3a:52:54:00:00:00:10").expect("hex"),
                }),
            }]
        );
        assert_eq!(dhclient_iaid("52:54:00:00:00:10"), Some(0x10));
    }

    #[test]
    fn dhclient_without_a_duid_is_known_by_its_mac() {
        let text = DHCLIENT.lines().skip(1).collect::<Vec<_>>().join("\n");
        assert_eq!(parse(&text)[0].client_id, Some(ClientId::Mac));
    }

    #[test]
    fn networkd_lease() {
        let l = parse(
            "# This is private data. Do not parse.\nADDRESS=192.0.2.50\nNETMASK=255.255.255.0\n\
             ROUTER=192.0.2.1\nCLIENTID=ff0000001000010001aabbccdd525400000010\n",
        );
        assert_eq!(
            l[0].client_id,
            Some(ClientId::Duid {
                iaid: Some(0x10),
                duid: from_hex("00010001aabbccdd525400000010").expect("hex")
            })
        );
        assert_eq!(l[0].routers, ["192.0.2.1".parse::<Ipv4Addr>().expect("ip")]);
    }

    #[test]
    fn garbage_is_no_lease() {
        assert!(parse("lease {\n  fixed-address nonsense;\n}\n").is_empty());
        assert!(parse("\u{0}\u{1}binary").is_empty());
    }
}
