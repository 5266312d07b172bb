//! A parsed hosts file: the lookup tables one query needs, built once per read of the
//! file (or once for the Corefile's inline lines), never touched on the query path
//! except to read.
//!
//! Parsing follows CoreDNS's `hostsfile.go`: a `#` starts a comment, fields are split
//! on ASCII white space, the first field is an address (an IPv6 zone such as `%lo0`
//! is dropped), every further field a name, lower-cased and made fully qualified.
//! Lines without an address and names outside the plugin's zones are skipped
//! silently. An IPv4-mapped IPv6 address counts as IPv4, as Go's `To4` makes it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::dns::NameKey;
use crate::dns::wire::{self, MAX_NAME_LEN};

/// `in-addr.arpa.` in wire form.
const IN_ADDR_ARPA: &[u8] = b"\x07in-addr\x04arpa\x00";
/// `ip6.arpa.` in wire form.
const IP6_ARPA: &[u8] = b"\x03ip6\x04arpa\x00";

/// What shapes a parse besides the text: the zones names must lie in and whether
/// addresses get reverse (PTR) entries.
#[derive(Clone, Debug)]
pub struct ParseOptions {
    /// Lower-cased wire zones; a name outside all of them is dropped.
    pub zones: Vec<Box<[u8]>>,
    /// Whether to build the address → names table (`no_reverse` clears it).
    pub auto_reverse: bool,
}

/// The addresses of one owner name, in file order.
#[derive(Debug, Default)]
struct Addrs {
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
}

/// Lookup tables for one source of entries (the file, or the inline lines).
#[derive(Debug, Default)]
pub struct Table {
    /// Exact owner names (lower-cased wire) → addresses.
    names: HashMap<Box<[u8]>, Addrs>,
    /// `*.parent` entries, keyed by `parent` (lower-cased wire): they match exactly one
    /// label below it, as in current CoreDNS; the parent itself does not match.
    wildcards: HashMap<Box<[u8]>, Addrs>,
    /// Address → the names that carry it, for PTR answers.
    reverse: HashMap<IpAddr, Vec<Box<[u8]>>>,
    /// CoreDNS's entry count: every name/address pair, counted once per table it is in.
    entries: usize,
}

impl Table {
    /// Parses hosts-file text (bytes, since a hosts file need not be UTF-8).
    pub fn parse(text: &[u8], opts: &ParseOptions) -> Table {
        let mut table = Table::default();
        for line in text.split(|&b| b == b'\n') {
            let line = line.split(|&b| b == b'#').next().unwrap_or_default();
            let mut fields = line.split(|&b| is_space(b)).filter(|f| !f.is_empty());
            let Some(addr) = fields
                .next()
                .and_then(|f| std::str::from_utf8(f).ok())
                .and_then(parse_addr)
            else {
                continue;
            };
            for field in fields {
                // A field that is not UTF-8 or not a valid name can never match a
                // query; CoreDNS keeps it under a key nothing looks up, we drop it.
                if let Some(name) = std::str::from_utf8(field).ok().and_then(wire::name_from_str) {
                    table.add(addr, name, opts);
                }
            }
        }
        table
    }

    fn add(&mut self, addr: IpAddr, name: Vec<u8>, opts: &ParseOptions) {
        if !opts.zones.iter().any(|z| wire::zone_suffix_at(&name, z).is_some()) {
            return;
        }
        // A leading `*` label makes a wildcard entry, which never gets a PTR record.
        if let Some(parent) = name.strip_prefix(b"\x01*") {
            push_addr(self.wildcards.entry(parent.into()).or_default(), addr);
            self.entries += 1;
            return;
        }
        let name = name.into_boxed_slice();
        if opts.auto_reverse {
            self.reverse.entry(addr).or_default().push(name.clone());
            self.entries += 1;
        }
        push_addr(self.names.entry(name).or_default(), addr);
        self.entries += 1;
    }

    /// The IPv4 addresses of `name`: its own, or else those of a wildcard one label up.
    pub fn v4(&self, name: &NameKey) -> &[Ipv4Addr] {
        self.lookup(name, |a| &a.v4)
    }

    /// The IPv6 addresses of `name`, like [`Table::v4`].
    pub fn v6(&self, name: &NameKey) -> &[Ipv6Addr] {
        self.lookup(name, |a| &a.v6)
    }

    /// CoreDNS looks a name up per address family: the exact name first, then the
    /// wildcard made by replacing its first label with `*`.
    fn lookup<'t, T>(&'t self, name: &NameKey, family: impl Fn(&'t Addrs) -> &'t [T]) -> &'t [T] {
        if let Some(found) = self.names.get(name.wire()).map(&family).filter(|a| !a.is_empty()) {
            return found;
        }
        if name.label_count() == 0 {
            return &[];
        }
        self.wildcards.get(name.suffix(1)).map_or(&[], family)
    }

    /// The names (lower-cased wire) that carry `addr`, for PTR answers.
    pub fn names_of(&self, addr: IpAddr) -> &[Box<[u8]>] {
        self.reverse.get(&addr).map_or(&[], Vec::as_slice)
    }

    /// The number of entries, as CoreDNS's `coredns_hosts_entries` counts them: one per
    /// name/address pair in the forward tables plus one per pair in the reverse table.
    pub fn entries(&self) -> usize {
        self.entries
    }
}

fn push_addr(addrs: &mut Addrs, addr: IpAddr) {
    match addr {
        IpAddr::V4(ip) => addrs.v4.push(ip),
        IpAddr::V6(ip) => addrs.v6.push(ip),
    }
}

/// The field separators of CoreDNS's hosts parser: ASCII white space, vertical tab
/// included (which `u8::is_ascii_whitespace` leaves out).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Parses the address field of a hosts line: an IPv6 zone (`fe80::1%lo0`) is
/// dropped, as CoreDNS does, and an IPv4-mapped IPv6 address becomes IPv4.
pub fn parse_addr(field: &str) -> Option<IpAddr> {
    let bare = field.split('%').next().unwrap_or_default();
    bare.parse().ok().map(canonical)
}

/// Go's `net.IP` treats an IPv4-mapped IPv6 address as the IPv4 address itself (its
/// `To4` and `String`); the tables are keyed the same way.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The address a reverse name stands for, read as CoreDNS's
/// `dnsutil.ExtractAddressFromReverse` reads it: under `in-addr.arpa.` the labels,
/// last first, joined with dots; under `ip6.arpa.` the labels, last first, in groups of
/// four joined with colons (leftover leftmost labels are ignored, as Go's integer
/// division ignores them); then parsed as an address. Allocation-free: the text is
/// assembled in a stack buffer.
pub fn reverse_address(name: &NameKey) -> Option<IpAddr> {
    let mut buf = [0u8; MAX_NAME_LEN];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        buf[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    let v4_only = if let Some(n) = name.labels_before(IN_ADDR_ARPA) {
        for r in 0..n {
            if r > 0 {
                put(b".");
            }
            put(name.label(n - 1 - r));
        }
        true
    } else if let Some(n) = name.labels_before(IP6_ARPA) {
        for g in 0..n / 4 {
            if g > 0 {
                put(b":");
            }
            for k in 0..4 {
                put(name.label(n - 1 - (4 * g + k)));
            }
        }
        false
    } else {
        return None;
    };
    // The joined text never outgrows the name: each separator replaces a length byte.
    let text = &buf[..len];
    // Go sees a dot inside a label escaped (`\.`), which no address contains.
    if (0..name.label_count()).any(|i| name.label(i).contains(&b'.')) {
        return None;
    }
    let ip = canonical(std::str::from_utf8(text).ok()?.parse().ok()?);
    // Under in-addr.arpa CoreDNS keeps only what `To4` accepts.
    (!v4_only || ip.is_ipv4()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(zones: &[&str], auto_reverse: bool) -> ParseOptions {
        ParseOptions {
            zones: zones
                .iter()
                .map(|z| wire::name_from_str(z).unwrap().into_boxed_slice())
                .collect(),
            auto_reverse,
        }
    }

    fn key(name: &str) -> NameKey {
        NameKey::from_wire(&wire::name_from_str(name).unwrap()).unwrap()
    }

    fn names(t: &Table, addr: &str) -> Vec<String> {
        t.names_of(addr.parse().unwrap())
            .iter()
            .map(|n| wire::name_to_string(n))
            .collect()
    }

    const HOSTS: &str = "\
# a comment line
127.0.0.1 localhost localhost.domain   # trailing comment
::1\tlocalhost\x0blocalhost.domain
10.0.0.1 Example.ORG
::FFFF:10.0.0.2 example.com.
fe80::1%lo0 link.local
bogus line here
10.0.0.3
01.0.0.4 leading.zero
10.0.0.5 a..b ok.example.net
";

    #[test]
    fn parses_addresses_names_and_comments() {
        let t = Table::parse(HOSTS.as_bytes(), &opts(&["."], true));
        assert_eq!(t.v4(&key("localhost")), [Ipv4Addr::LOCALHOST]);
        assert_eq!(t.v6(&key("localhost.domain")), [Ipv6Addr::LOCALHOST]);
        // Names are lower-cased and fully qualified.
        assert_eq!(t.v4(&key("example.org")), [Ipv4Addr::new(10, 0, 0, 1)]);
        // An IPv4-mapped IPv6 address is IPv4 (an A record, an in-addr.arpa PTR).
        assert_eq!(t.v4(&key("example.com")), [Ipv4Addr::new(10, 0, 0, 2)]);
        assert!(t.v6(&key("example.com")).is_empty());
        assert_eq!(names(&t, "10.0.0.2"), ["example.com."]);
        // The IPv6 zone is dropped.
        assert_eq!(t.v6(&key("link.local")), ["fe80::1".parse::<Ipv6Addr>().unwrap()]);
        // Lines without a valid address are skipped; Go and Rust both refuse leading zeros.
        assert!(t.v4(&key("leading.zero")).is_empty());
        // An invalid name is skipped, the rest of its line is kept.
        assert_eq!(t.v4(&key("ok.example.net")), [Ipv4Addr::new(10, 0, 0, 5)]);
        assert_eq!(names(&t, "127.0.0.1"), ["localhost.", "localhost.domain."]);
        assert_eq!(names(&t, "::1"), ["localhost.", "localhost.domain."]);
        // 8 names with one address each, forward and reverse.
        assert_eq!(t.entries(), 16);
    }

    #[test]
    fn names_outside_the_zones_are_dropped() {
        let t = Table::parse(
            b"10.0.0.1 a.example.org b.example.net example.org\n",
            &opts(&["example.org."], true),
        );
        assert_eq!(t.v4(&key("a.example.org")).len(), 1);
        assert_eq!(t.v4(&key("example.org")).len(), 1);
        assert!(t.v4(&key("b.example.net")).is_empty());
        assert_eq!(names(&t, "10.0.0.1"), ["a.example.org.", "example.org."]);
    }

    #[test]
    fn no_reverse_builds_no_ptr_table() {
        let t = Table::parse(b"10.0.0.1 example.org\n", &opts(&["."], false));
        assert_eq!(t.v4(&key("example.org")).len(), 1);
        assert!(names(&t, "10.0.0.1").is_empty());
        assert_eq!(t.entries(), 1);
    }

    #[test]
    fn repeated_names_keep_every_address_in_order() {
        let t = Table::parse(b"10.0.0.1 a.org\n10.0.0.2 a.org\n10.0.0.1 a.org\n", &opts(&["."], true));
        let want: Vec<Ipv4Addr> = ["10.0.0.1", "10.0.0.2", "10.0.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(t.v4(&key("a.org")), want);
        assert_eq!(names(&t, "10.0.0.1"), ["a.org.", "a.org."]);
    }

    #[test]
    fn wildcards_match_one_label_per_family_and_get_no_ptr() {
        let text = b"192.168.1.10 *.example.com\n192.168.1.11 a.example.com\n::1 b.example.com\n";
        let t = Table::parse(text, &opts(&["example.com."], true));
        assert_eq!(t.v4(&key("a.example.com")), [Ipv4Addr::new(192, 168, 1, 11)]);
        assert_eq!(t.v4(&key("apps.example.com")), [Ipv4Addr::new(192, 168, 1, 10)]);
        // The exact name has only AAAA, so its A lookup still reaches the wildcard.
        assert_eq!(t.v4(&key("b.example.com")), [Ipv4Addr::new(192, 168, 1, 10)]);
        assert!(t.v4(&key("example.com")).is_empty());
        assert!(t.v4(&key("deep.apps.example.com")).is_empty());
        assert!(names(&t, "192.168.1.10").is_empty());
        assert_eq!(t.entries(), 1 + 2 + 2);
    }

    #[test]
    fn reverse_names_read_like_coredns() {
        let addr = |s: &str| reverse_address(&key(s));
        assert_eq!(addr("1.0.0.10.in-addr.arpa."), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(addr("1.0.0.10.IN-ADDR.ARPA."), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(addr("0.0.10.in-addr.arpa."), None);
        assert_eq!(addr("01.0.0.10.in-addr.arpa."), None);
        assert_eq!(addr("in-addr.arpa."), None);
        assert_eq!(addr("example.org."), None);
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa.";
        assert_eq!(addr(v6), Some("fe80::1".parse().unwrap()));
        // Leftover leftmost labels beyond a multiple of four are ignored, as in Go.
        assert_eq!(addr(&format!("x.{v6}")), Some("fe80::1".parse().unwrap()));
        assert_eq!(addr(&v6[2..]), None);
        // The ip6.arpa name of an IPv4-mapped address stands for the IPv4 address.
        let mapped = "1.0.0.0.0.0.a.0.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.";
        assert_eq!(addr(mapped), Some("10.0.0.1".parse().unwrap()));
        // A dot inside a label is no address.
        let escaped = NameKey::from_wire(b"\x031.0\x010\x0210\x07in-addr\x04arpa\x00").unwrap();
        assert_eq!(reverse_address(&escaped), None);
    }
}
