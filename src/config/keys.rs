//! Server-block keys: `[dns://|tls://]ZONE[:PORT]`, where ZONE is a domain name or a CIDR
//! that stands for the reverse zones covering it (CoreDNS's `normalize.go` and
//! `address.go`).

use std::fmt::Write;
use std::net::IpAddr;

use super::{ConfigError, Loc, Token};
use crate::dns::Zone;

/// One server-block key, parsed: `[dns://|tls://]ZONE[:PORT]`, ZONE may be a CIDR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerKey {
    /// How the key's listeners are reached.
    pub scheme: Scheme,
    /// The zones this key covers ("cluster.local.", "."); a CIDR key gives one or
    /// more reverse zones.
    pub zones: Vec<Zone>,
    /// The port to listen on.
    pub port: u16,
    /// Where the key was written.
    pub loc: Loc,
}

/// How a server block's listeners are reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// `dns://` (or no scheme): UDP and TCP.
    Dns,
    /// `tls://`: DNS over TLS (RFC 7858), TCP only, default port 853.
    Tls,
}

impl Scheme {
    /// `dns`, `tls`: as written before `://`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Dns => "dns",
            Scheme::Tls => "tls",
        }
    }
}

/// The port of `tls://` keys without one (RFC 7858 section 3.1).
pub const TLS_PORT: u16 = 853;

/// Schemes CoreDNS serves that clusterdns does not.
const UNSUPPORTED_SCHEMES: [&str; 4] = ["https", "https3", "quic", "grpc"];

/// Longest name in presentation form, without the final dot (RFC 1035 §2.3.4 less
/// the length octets and the root label).
const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

impl ServerKey {
    /// Parses a key, `default_port` applying when it has none (53, or `-dns.port`).
    pub fn parse(tok: &Token, default_port: u16) -> Result<ServerKey, ConfigError> {
        let key = tok.as_str();
        let err = |msg: String| ConfigError::at(&tok.loc, format!("Error during parsing: {msg}"));

        let (scheme, rest) = match key.split_once("://") {
            None => (Scheme::Dns, key),
            Some(("dns", rest)) => (Scheme::Dns, rest),
            Some(("tls", rest)) => (Scheme::Tls, rest),
            Some((scheme, _)) if UNSUPPORTED_SCHEMES.contains(&scheme) => {
                return Err(err(format!(
                    "{scheme}:// is not supported by clusterdns (only dns:// and tls://)"
                )));
            }
            Some((scheme, _)) => {
                return Err(err(format!("unknown scheme '{scheme}://' in key '{key}'")));
            }
        };

        // The port follows the last colon, except in a CIDR, where it can only follow
        // the mask: `fd00::/64:1053`.
        let (zone, port) = match rest.split_once('/') {
            Some((addr, tail)) => {
                let (mask, port) = match tail.split_once(':') {
                    Some((mask, port)) => (mask, Some(port)),
                    None => (tail, None),
                };
                (&rest[..addr.len() + 1 + mask.len()], port)
            }
            None => match rest.rsplit_once(':') {
                Some((zone, port)) => (zone, Some(port)),
                None => (rest, None),
            },
        };
        let port = match port {
            // `-dns.port` sets the port of plain DNS only (CoreDNS: transport.TLSPort).
            None if scheme == Scheme::Tls => TLS_PORT,
            None => default_port,
            Some(p) => parse_port(p).ok_or_else(|| err(format!("invalid port '{p}' in key '{key}'")))?,
        };

        let names = if zone.contains('/') {
            reverse_zones_for_cidr(zone).ok_or_else(|| err(format!("invalid CIDR '{zone}' in key '{key}'")))?
        } else {
            vec![normalize_zone(zone).map_err(|why| err(format!("invalid zone '{zone}' in key '{key}': {why}")))?]
        };
        // Both forms are valid names by construction (letters, digits, `-_*`, lengths
        // checked); a failure here would be a bug, reported as a bad key all the same.
        let zones = names
            .iter()
            .map(|z| Zone::new(z).ok_or_else(|| err(format!("invalid zone '{z}' in key '{key}'"))))
            .collect::<Result<Vec<Zone>, ConfigError>>()?;
        Ok(ServerKey {
            scheme,
            zones,
            port,
            loc: tok.loc.clone(),
        })
    }
}

/// Zones written as a plugin's arguments (`cache 30 ZONES...`, `hosts FILE ZONES...`,
/// `fallthrough ZONES...`), normalized like server-block keys: lower-cased, fully
/// qualified, a CIDR standing for its reverse zones. An argument that is no zone is an
/// error prefixed with `prefix` (the plugin's name), where CoreDNS would drop it.
pub fn zone_args(prefix: &str, args: &[Token]) -> Result<Vec<Zone>, ConfigError> {
    let mut zones = Vec::new();
    for tok in args {
        let key = ServerKey::parse(tok, 53)
            .map_err(|_| ConfigError::at(&tok.loc, format!("{prefix}: invalid zone '{}'", tok.text)))?;
        zones.extend(key.zones);
    }
    Ok(zones)
}

/// A port number, 1 to 65535, in decimal digits only (no sign).
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&p| p != 0)
}

/// Lower-cases and fully qualifies a domain name, checking label and name lengths.
/// Characters are limited to those a zone name can sensibly hold: letters, digits,
/// `-`, `_` and `*` (internationalized names go in their punycode form).
fn normalize_zone(zone: &str) -> Result<String, &'static str> {
    if zone == "." {
        return Ok(".".to_owned());
    }
    let name = zone.strip_suffix('.').unwrap_or(zone);
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("name longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > MAX_LABEL_LEN {
            return Err("label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'*'))
        {
            return Err("only letters, digits, '-', '_' and '*' may appear in a zone name");
        }
    }
    let mut out = name.to_ascii_lowercase();
    out.push('.');
    Ok(out)
}

/// Reverse zones covering a CIDR: "10.96.0.0/12" -> ["96.10.in-addr.arpa.", ...,
/// "111.10.in-addr.arpa."] (16 zones); "10.0.0.0/8" -> ["10.in-addr.arpa."];
/// "fd00::/64" -> one ip6.arpa zone of 16 nibbles; non-nibble v6 prefixes expand to up
/// to 8 zones. None if `s` is not a CIDR.
///
/// As in CoreDNS, host bits are ignored (`10.0.0.1/24` is `10.0.0.0/24`) and a mask
/// off an octet (IPv4) or nibble (IPv6) boundary is split into the zones at the next
/// boundary down, since a reverse zone can only be cut at a label.
pub fn reverse_zones_for_cidr(s: &str) -> Option<Vec<String>> {
    let (addr, len) = s.split_once('/')?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let len: u32 = len.parse().ok()?;
    // Both families as 128-bit numbers, address bits at the top, so that one loop serves.
    let (bits, width, digit, suffix) = match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => (u128::from(u32::from(a)) << 96, 32, 8, "in-addr.arpa."),
        IpAddr::V6(a) => (u128::from(a), 128, 4, "ip6.arpa."),
    };
    if len > width {
        return None;
    }
    let network = bits & prefix_mask(len);
    let rounded = len.div_ceil(digit) * digit;
    let count = 1u128 << (rounded - len);
    // The increment between consecutive subnets at the rounded length.
    let step = 1u128.checked_shl(128 - rounded).unwrap_or(0);

    let zones = (0..count)
        .map(|i| {
            let subnet = network + i * step;
            let mut zone = String::new();
            for d in (0..rounded / digit).rev() {
                let value = (subnet >> (128 - (d + 1) * digit)) & ((1 << digit) - 1);
                if digit == 8 {
                    let _ = write!(zone, "{value}.");
                } else {
                    let _ = write!(zone, "{value:x}.");
                }
            }
            zone.push_str(suffix);
            zone
        })
        .collect();
    Some(zones)
}

/// The top `len` bits of 128 set.
fn prefix_mask(len: u32) -> u128 {
    u128::MAX.checked_shl(128 - len).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn tok(text: &str) -> Token {
        Token {
            text: text.to_owned(),
            loc: Loc {
                file: Arc::from("Corefile"),
                line: 1,
            },
        }
    }

    fn key(text: &str) -> (Vec<String>, u16) {
        let k = ServerKey::parse(&tok(text), 53).unwrap_or_else(|e| panic!("{e}"));
        (k.zones.iter().map(|z| z.as_str().to_owned()).collect(), k.port)
    }

    fn key_err(text: &str) -> String {
        ServerKey::parse(&tok(text), 53).expect_err("should fail").to_string()
    }

    fn zones(list: &[&str]) -> Vec<String> {
        list.iter().map(|z| z.to_string()).collect()
    }

    #[test]
    fn root_and_names() {
        assert_eq!(key("."), (zones(&["."]), 53));
        assert_eq!(key(".:53"), (zones(&["."]), 53));
        assert_eq!(key("dns://.:1053"), (zones(&["."]), 1053));
        assert_eq!(key("cluster.local:53"), (zones(&["cluster.local."]), 53));
        assert_eq!(key("Cluster.Local"), (zones(&["cluster.local."]), 53));
        assert_eq!(key("example.org."), (zones(&["example.org."]), 53));
        assert_eq!(key("_tcp.example.org:5353"), (zones(&["_tcp.example.org."]), 5353));
        let k = ServerKey::parse(&tok("a.org"), 1053).unwrap();
        assert_eq!((k.port, k.loc.line), (1053, 1));
    }

    #[test]
    fn cidr_keys() {
        assert_eq!(key("10.0.0.0/24:53"), (zones(&["0.0.10.in-addr.arpa."]), 53));
        assert_eq!(key("10.0.0.0/8"), (zones(&["10.in-addr.arpa."]), 53));
        let (z, port) = key("10.96.0.0/12");
        assert_eq!(port, 53);
        assert_eq!(z.len(), 16);
        assert_eq!(
            (z[0].as_str(), z[15].as_str()),
            ("96.10.in-addr.arpa.", "111.10.in-addr.arpa.")
        );
        assert_eq!(
            key("fd00::/64"),
            (zones(&["0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."]), 53)
        );
        assert_eq!(
            key("dns://fd00::/64:1053"),
            (zones(&["0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."]), 1053)
        );
        // Host bits are ignored, as net.ParseCIDR does.
        assert_eq!(key("10.0.0.1/24"), (zones(&["0.0.10.in-addr.arpa."]), 53));
    }

    #[test]
    fn reverse_zones() {
        assert_eq!(reverse_zones_for_cidr("10.0.0.0/8"), Some(zones(&["10.in-addr.arpa."])));
        assert_eq!(reverse_zones_for_cidr("0.0.0.0/0"), Some(zones(&["in-addr.arpa."])));
        assert_eq!(reverse_zones_for_cidr("::/0"), Some(zones(&["ip6.arpa."])));
        assert_eq!(
            reverse_zones_for_cidr("192.168.1.7/32"),
            Some(zones(&["7.1.168.192.in-addr.arpa."]))
        );
        assert_eq!(
            reverse_zones_for_cidr("172.20.0.0/14"),
            Some(zones(&[
                "20.172.in-addr.arpa.",
                "21.172.in-addr.arpa.",
                "22.172.in-addr.arpa.",
                "23.172.in-addr.arpa."
            ]))
        );
        assert_eq!(reverse_zones_for_cidr("10.0.0.128/25").map(|z| z.len()), Some(128));
        assert_eq!(
            reverse_zones_for_cidr("10.0.0.128/25").unwrap()[127],
            "255.0.0.10.in-addr.arpa."
        );
        assert_eq!(
            reverse_zones_for_cidr("fd00::/63"),
            Some(zones(&[
                "0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
                "1.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."
            ]))
        );
        let z = reverse_zones_for_cidr("2001:db8::/29").unwrap();
        assert_eq!(z.len(), 8);
        assert_eq!(
            (z[0].as_str(), z[7].as_str()),
            ("8.b.d.0.1.0.0.2.ip6.arpa.", "f.b.d.0.1.0.0.2.ip6.arpa.")
        );
        assert_eq!(
            reverse_zones_for_cidr("fd00::/1"),
            Some(zones(&[
                "8.ip6.arpa.",
                "9.ip6.arpa.",
                "a.ip6.arpa.",
                "b.ip6.arpa.",
                "c.ip6.arpa.",
                "d.ip6.arpa.",
                "e.ip6.arpa.",
                "f.ip6.arpa."
            ]))
        );
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "[fd00::]/64",
            "a.org/8",
        ] {
            assert_eq!(reverse_zones_for_cidr(bad), None, "{bad}");
        }
    }

    #[test]
    fn tls_keys_default_to_port_853() {
        // CoreDNS core/dnsserver/address.go: tls:// defaults to 853 whatever -dns.port says.
        let k = ServerKey::parse(&tok("tls://."), 1053).unwrap();
        assert_eq!((k.scheme, k.port), (Scheme::Tls, 853));
        let k = ServerKey::parse(&tok("tls://example.org:8853"), 53).unwrap();
        assert_eq!(
            (k.scheme, k.port, k.zones[0].as_str()),
            (Scheme::Tls, 8853, "example.org.")
        );
        assert_eq!(ServerKey::parse(&tok("dns://."), 1053).unwrap().scheme, Scheme::Dns);
        assert_eq!(ServerKey::parse(&tok("."), 53).unwrap().scheme, Scheme::Dns);
    }

    #[test]
    fn unsupported_schemes() {
        for scheme in ["https", "https3", "quic", "grpc"] {
            assert!(key_err(&format!("{scheme}://.")).contains(&format!("{scheme}:// is not supported")));
        }
        assert_eq!(
            key_err("udp://.:53"),
            "Corefile:1 - Error during parsing: unknown scheme 'udp://' in key 'udp://.:53'"
        );
    }

    #[test]
    fn bad_ports() {
        assert_eq!(
            key_err("a.org:x"),
            "Corefile:1 - Error during parsing: invalid port 'x' in key 'a.org:x'"
        );
        for bad in ["a.org:", "a.org:0", "a.org:65536", "a.org:+53", "10.0.0.0/8:x"] {
            assert!(key_err(bad).contains("invalid port"), "{bad}");
        }
        assert_eq!(key("a.org:65535").1, 65535);
    }

    #[test]
    fn bad_zones() {
        assert_eq!(
            key_err("a..org"),
            "Corefile:1 - Error during parsing: invalid zone 'a..org' in key 'a..org': empty label"
        );
        assert!(key_err(":53").contains("invalid zone '' in key ':53': empty name"));
        assert!(key_err("..").contains("empty label"));
        assert!(key_err(&format!("{}.org", "a".repeat(64))).contains("label longer than 63"));
        let long = vec!["a".repeat(60); 5].join(".");
        assert!(key_err(&long).contains("longer than 253"));
        assert!(key_err("a b.org").contains("only letters"));
        // A bare IPv6 address is not a zone (its last group reads as a port).
        assert!(key_err("fd00::1").contains("invalid zone 'fd00:'"));
        assert_eq!(
            key_err("10.0.0.0/33"),
            "Corefile:1 - Error during parsing: invalid CIDR '10.0.0.0/33' in key '10.0.0.0/33'"
        );
    }
}
