//! What a policy matches: a set of query types and a set of source prefixes, both
//! built once at setup and looked up without allocating.

use std::net::IpAddr;

use crate::dns::rtype;

/// Query types a policy applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Types {
    /// `type *`, or no `type` section.
    All,
    /// Sorted, without duplicates: a binary search per query.
    Some(Box<[u16]>),
}

impl Types {
    pub fn contains(&self, t: u16) -> bool {
        match self {
            Types::All => true,
            Types::Some(list) => list.binary_search(&t).is_ok(),
        }
    }
}

/// The mnemonics CoreDNS's `type` section takes (miekg/dns `StringToType`), as written
/// there: upper case only. Those `rtype` knows come first, the rest of the IANA registry
/// that miekg/dns names follows.
pub fn type_from_name(s: &str) -> Option<u16> {
    if s.bytes().any(|b| b.is_ascii_lowercase()) || s.starts_with("TYPE") {
        // `a` and `TYPE1` are not keys of StringToType.
        return None;
    }
    if let Some(t) = rtype::from_name(s) {
        return Some(t);
    }
    const MORE: &[(&str, u16)] = &[
        ("MD", 3),
        ("MF", 4),
        ("MB", 7),
        ("MG", 8),
        ("MR", 9),
        ("NULL", 10),
        ("MINFO", 14),
        ("RP", 17),
        ("AFSDB", 18),
        ("X25", 19),
        ("ISDN", 20),
        ("RT", 21),
        ("NSAP-PTR", 23),
        ("SIG", 24),
        ("KEY", 25),
        ("PX", 26),
        ("GPOS", 27),
        ("LOC", 29),
        ("NXT", 30),
        ("EID", 31),
        ("NIMLOC", 32),
        ("ATMA", 34),
        ("NAPTR", 35),
        ("KX", 36),
        ("CERT", 37),
        ("A6", 38),
        ("DNAME", 39),
        ("APL", 42),
        ("SSHFP", 44),
        ("IPSECKEY", 45),
        ("DHCID", 49),
        ("NSEC3PARAM", 51),
        ("TLSA", 52),
        ("SMIMEA", 53),
        ("HIP", 55),
        ("NINFO", 56),
        ("RKEY", 57),
        ("TALINK", 58),
        ("CDS", 59),
        ("CDNSKEY", 60),
        ("OPENPGPKEY", 61),
        ("CSYNC", 62),
        ("ZONEMD", 63),
        ("SPF", 99),
        ("UINFO", 100),
        ("UID", 101),
        ("GID", 102),
        ("UNSPEC", 103),
        ("NID", 104),
        ("L32", 105),
        ("L64", 106),
        ("LP", 107),
        ("EUI48", 108),
        ("EUI64", 109),
        ("TKEY", 249),
        ("TSIG", 250),
        ("MAILB", 253),
        ("MAILA", 254),
        ("URI", 256),
        ("CAA", 257),
        ("AVC", 258),
        ("AMTRELAY", 260),
        ("TA", 32768),
        ("DLV", 32769),
    ];
    MORE.iter().find(|(n, _)| *n == s).map(|&(_, t)| t)
}

/// A set of source prefixes as disjoint, sorted address ranges per family: a lookup
/// is a binary search, `O(log n)` in the prefixes of the policy, whatever their count
/// or overlap; memory is 8 bytes (IPv4) or 32 bytes (IPv6) per prefix at most.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nets {
    v4: Box<[(u32, u32)]>,
    v6: Box<[(u128, u128)]>,
}

/// A prefix, host bits cleared (Go's `net.ParseCIDR` returns the network).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    V4(u32, u8),
    V6(u128, u8),
}

impl Prefix {
    /// Every address of both families (`net *`, or no `net` section).
    pub const ALL: [Prefix; 2] = [Prefix::V4(0, 0), Prefix::V6(0, 0)];

    /// Parses `ADDR/LEN` as Go's `net.ParseCIDR` does (decimal length, no sign, at most
    /// the family's bits).
    pub fn parse(s: &str) -> Option<Prefix> {
        let (addr, len) = s.split_once('/')?;
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let len: u8 = len.parse().ok()?;
        match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) if len <= 32 => Some(Prefix::V4(u32::from(a) & mask32(len), len)),
            IpAddr::V6(a) if len <= 128 => Some(Prefix::V6(u128::from(a) & mask128(len), len)),
            _ => None,
        }
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// Sorts ranges and merges those that overlap or touch.
fn merge<T: Copy + Ord + num_like::Succ>(mut v: Vec<(T, T)>) -> Box<[(T, T)]> {
    v.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for (start, end) in v {
        match out.last_mut() {
            Some(last) if last.1 >= start || last.1.succ() == Some(start) => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out.into_boxed_slice()
}

mod num_like {
    /// The next value, if there is one.
    pub trait Succ: Sized {
        fn succ(self) -> Option<Self>;
    }
    impl Succ for u32 {
        fn succ(self) -> Option<u32> {
            self.checked_add(1)
        }
    }
    impl Succ for u128 {
        fn succ(self) -> Option<u128> {
            self.checked_add(1)
        }
    }
}

fn find<T: Copy + Ord>(ranges: &[(T, T)], ip: T) -> bool {
    // The last range starting at or before `ip`.
    let i = ranges.partition_point(|r| r.0 <= ip);
    i > 0 && ranges[i - 1].1 >= ip
}

impl Nets {
    pub fn new(prefixes: &[Prefix]) -> Nets {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for p in prefixes {
            match *p {
                Prefix::V4(net, len) => v4.push((net, net | !mask32(len))),
                Prefix::V6(net, len) => v6.push((net, net | !mask128(len))),
            }
        }
        Nets {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    /// Whether `ip` is in the set. An IPv4-mapped IPv6 address is its IPv4 address (Go
    /// parses the source address so, and its IP tree looks IPv4 addresses up as such).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => find(&self.v4, u32::from(v4)),
                None => find(&self.v6, u128::from(a)),
            },
        }
    }

    /// Ranges kept (after merging), IPv4 and IPv6.
    #[cfg(test)]
    pub fn len(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Nets {
        Nets::new(&list.iter().map(|s| Prefix::parse(s).unwrap()).collect::<Vec<_>>())
    }

    #[test]
    fn prefixes_parse_as_go_does() {
        // net.ParseCIDR: host bits cleared, decimal length within the family.
        assert_eq!(Prefix::parse("192.168.1.7/24"), Some(Prefix::V4(0xC0A8_0100, 24)));
        assert_eq!(Prefix::parse("10.0.0.1/32"), Some(Prefix::V4(0x0A00_0001, 32)));
        assert_eq!(Prefix::parse("::1/128"), Some(Prefix::V6(1, 128)));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "x/8",
            "::/129",
            "10.0.0/8",
            // Go 1.17+ refuses leading zeros in IPv4, as Rust's parser does.
            "010.0.0.1/32",
        ] {
            assert_eq!(Prefix::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn overlapping_and_adjacent_prefixes_merge_and_lookups_find_them() {
        let n = nets(&[
            "10.0.0.0/24",
            "10.0.1.0/24",
            "10.0.0.128/25",
            "192.168.0.0/16",
            "2001:db8::/32",
        ]);
        assert_eq!(n.len(), (2, 1));
        for (ip, inside) in [
            ("10.0.0.0", true),
            ("10.0.1.255", true),
            ("10.0.2.0", false),
            ("9.255.255.255", false),
            ("192.168.200.1", true),
            ("::ffff:10.0.0.5", true),
            ("2001:db8::1", true),
            ("2001:db9::1", false),
        ] {
            assert_eq!(n.contains(ip.parse().unwrap()), inside, "{ip}");
        }
        let all = Nets::new(&Prefix::ALL);
        assert!(all.contains("255.255.255.255".parse().unwrap()));
        assert!(all.contains("ffff::1".parse().unwrap()));
        assert!(!Nets::default().contains("1.1.1.1".parse().unwrap()));
    }

    #[test]
    fn types_are_upper_case_mnemonics() {
        assert_eq!(type_from_name("A"), Some(rtype::A));
        assert_eq!(type_from_name("CAA"), Some(257));
        // miekg/dns spells type 23 with its hyphen.
        assert_eq!(type_from_name("NSAP-PTR"), Some(23));
        assert_eq!(type_from_name("a"), None);
        assert_eq!(type_from_name("TYPE1"), None);
        assert_eq!(type_from_name("FOO"), None);
        let t = Types::Some(vec![1, 28].into_boxed_slice());
        assert!(t.contains(28) && !t.contains(16) && Types::All.contains(16));
    }
}
