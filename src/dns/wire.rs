//! Wire-format constants and the few primitive readers the request parser and the
//! response writer share (RFC 1035 section 4).

/// Size of the fixed message header (RFC 1035 4.1.1).
pub const HEADER_LEN: usize = 12;
/// Longest name on the wire, root label included (RFC 1035 3.1).
pub const MAX_NAME_LEN: usize = 255;
/// Largest UDP payload a client gets without EDNS (RFC 1035 4.2.1).
pub const MIN_UDP_PAYLOAD: u16 = 512;
/// The UDP payload size we advertise in our own OPT record (DNS flag day 2020).
pub const ADVERTISED_UDP_PAYLOAD: u16 = 1232;
/// Length of an OPT record without options: root owner, type, class, TTL, rdlength.
pub const OPT_RR_LEN: usize = 11;
/// Offset of the question name in every message.
pub const QNAME_OFFSET: usize = HEADER_LEN;

/// Resource record types the server knows by name.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const HINFO: u16 = 13;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const DS: u16 = 43;
    pub const RRSIG: u16 = 46;
    pub const NSEC: u16 = 47;
    pub const DNSKEY: u16 = 48;
    pub const NSEC3: u16 = 50;
    pub const SVCB: u16 = 64;
    pub const HTTPS: u16 = 65;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;

    /// The mnemonic of a type, as dig and CoreDNS's log print it (`TYPE123` otherwise).
    pub fn name(t: u16) -> std::borrow::Cow<'static, str> {
        let s = match t {
            A => "A",
            NS => "NS",
            CNAME => "CNAME",
            SOA => "SOA",
            PTR => "PTR",
            HINFO => "HINFO",
            MX => "MX",
            TXT => "TXT",
            AAAA => "AAAA",
            SRV => "SRV",
            OPT => "OPT",
            DS => "DS",
            RRSIG => "RRSIG",
            NSEC => "NSEC",
            DNSKEY => "DNSKEY",
            NSEC3 => "NSEC3",
            SVCB => "SVCB",
            HTTPS => "HTTPS",
            IXFR => "IXFR",
            AXFR => "AXFR",
            ANY => "ANY",
            _ => return format!("TYPE{t}").into(),
        };
        s.into()
    }

    /// Parses a mnemonic (`A`, `aaaa`) or the generic `TYPE123` form.
    pub fn from_name(s: &str) -> Option<u16> {
        let up = s.to_ascii_uppercase();
        for t in [
            A, NS, CNAME, SOA, PTR, HINFO, MX, TXT, AAAA, SRV, OPT, DS, RRSIG, NSEC, DNSKEY, NSEC3, SVCB, HTTPS, IXFR,
            AXFR, ANY,
        ] {
            if name(t) == up.as_str() {
                return Some(t);
            }
        }
        up.strip_prefix("TYPE").and_then(|n| n.parse().ok())
    }
}

/// Classes (RFC 1035 3.2.4, RFC 2136).
pub mod class {
    pub const IN: u16 = 1;
    pub const CH: u16 = 3;
    pub const HS: u16 = 4;
    pub const NONE: u16 = 254;
    pub const ANY: u16 = 255;

    /// The mnemonic of a class, as CoreDNS's log prints it.
    pub fn name(c: u16) -> std::borrow::Cow<'static, str> {
        match c {
            IN => "IN".into(),
            CH => "CH".into(),
            HS => "HS".into(),
            NONE => "NONE".into(),
            ANY => "ANY".into(),
            _ => format!("CLASS{c}").into(),
        }
    }
}

/// Opcodes (RFC 1035 4.1.1, RFC 1996, RFC 2136).
pub mod opcode {
    pub const QUERY: u8 = 0;
    pub const IQUERY: u8 = 1;
    pub const STATUS: u8 = 2;
    pub const NOTIFY: u8 = 4;
    pub const UPDATE: u8 = 5;

    /// The mnemonic, as CoreDNS's `{>opcode}` log field prints it.
    pub fn name(o: u8) -> std::borrow::Cow<'static, str> {
        match o {
            QUERY => "QUERY".into(),
            IQUERY => "IQUERY".into(),
            STATUS => "STATUS".into(),
            NOTIFY => "NOTIFY".into(),
            UPDATE => "UPDATE".into(),
            _ => format!("{o}").into(),
        }
    }
}

/// A response code: 4 bits in the header, extended to 12 by EDNS (RFC 6891 6.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rcode(pub u16);

impl Rcode {
    pub const NOERROR: Rcode = Rcode(0);
    pub const FORMERR: Rcode = Rcode(1);
    pub const SERVFAIL: Rcode = Rcode(2);
    pub const NXDOMAIN: Rcode = Rcode(3);
    pub const NOTIMP: Rcode = Rcode(4);
    pub const REFUSED: Rcode = Rcode(5);
    pub const YXDOMAIN: Rcode = Rcode(6);
    pub const YXRRSET: Rcode = Rcode(7);
    pub const NXRRSET: Rcode = Rcode(8);
    pub const NOTAUTH: Rcode = Rcode(9);
    pub const NOTZONE: Rcode = Rcode(10);
    pub const BADVERS: Rcode = Rcode(16);
    pub const BADCOOKIE: Rcode = Rcode(23);

    /// The name CoreDNS uses in logs and metric labels.
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        let s = match self.0 {
            0 => "NOERROR",
            1 => "FORMERR",
            2 => "SERVFAIL",
            3 => "NXDOMAIN",
            4 => "NOTIMP",
            5 => "REFUSED",
            6 => "YXDOMAIN",
            7 => "YXRRSET",
            8 => "NXRRSET",
            9 => "NOTAUTH",
            10 => "NOTZONE",
            16 => "BADVERS",
            23 => "BADCOOKIE",
            n => return format!("RCODE{n}").into(),
        };
        s.into()
    }

    /// Parses a name as [`Rcode::name`] prints it (case-insensitive).
    pub fn from_name(s: &str) -> Option<Rcode> {
        let up = s.to_ascii_uppercase();
        (0..24).map(Rcode).find(|r| r.name() == up.as_str())
    }
}

/// Header flag bits in the second 16-bit word (RFC 1035 4.1.1, RFC 4035 3.1.6).
pub mod flag {
    pub const QR: u16 = 0x8000;
    pub const AA: u16 = 0x0400;
    pub const TC: u16 = 0x0200;
    pub const RD: u16 = 0x0100;
    pub const RA: u16 = 0x0080;
    pub const Z: u16 = 0x0040;
    pub const AD: u16 = 0x0020;
    pub const CD: u16 = 0x0010;
}

#[inline]
pub fn get_u16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at + 2)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

#[inline]
pub fn get_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// A message's full response code: the header's four bits, extended by its OPT record
/// when it has one (RFC 6891 6.1.3).
pub fn message_rcode(msg: &[u8]) -> Rcode {
    let low = super::Header::of(msg).map_or(Rcode::NOERROR, |h| h.rcode());
    domain::base::Message::from_octets(msg)
        .ok()
        .and_then(|m| m.opt().map(|o| o.rcode(m.header()).to_int()))
        .map_or(low, Rcode)
}

/// Skips a possibly compressed name starting at `at`, returning the offset after it.
/// Does not follow pointers: a pointer ends the name (RFC 1035 4.1.4).
pub fn skip_name(buf: &[u8], mut at: usize) -> Option<usize> {
    let mut total = 0usize;
    loop {
        let len = *buf.get(at)? as usize;
        match len & 0xC0 {
            0x00 => {
                at += 1;
                if len == 0 {
                    return Some(at);
                }
                total += len + 1;
                if total >= MAX_NAME_LEN {
                    return None;
                }
                at += len;
            }
            0xC0 => {
                buf.get(at + 1)?;
                return Some(at + 2);
            }
            _ => return None,
        }
    }
}

/// Skips one resource record at `at` (name, fixed part, rdata); returns the offset after it.
pub fn skip_record(buf: &[u8], at: usize) -> Option<usize> {
    let after_name = skip_name(buf, at)?;
    let rdlen = get_u16(buf, after_name + 8)? as usize;
    let end = after_name + 10 + rdlen;
    if end > buf.len() {
        return None;
    }
    Some(end)
}

/// Most compression pointers one name may take: no name needs more pointers than it
/// has labels (127 at most), and the bound keeps a chain of pointers to pointers from
/// costing more than the name it spells (miekg/dns, which CoreDNS uses, stops at 126).
pub const MAX_POINTERS: usize = 127;

/// Reads a possibly compressed name at `at` into `out` as uncompressed wire bytes
/// (root label included), following pointers strictly backwards: the first before the
/// name's own start, each next one before the previous target (RFC 1035 4.1.4: a
/// pointer refers to a prior occurrence). So a pointer loop, a pointer to itself, into
/// its own name or forward, one past the message, a reserved label type (`01`, `10`),
/// a name over 255 bytes or over [`MAX_POINTERS`] jumps are all `None`, found in
/// time linear in the name. Returns the offset after the name as it appears at `at`,
/// and the length written to `out`.
pub fn read_name(buf: &[u8], at: usize, out: &mut [u8; MAX_NAME_LEN]) -> Option<(usize, usize)> {
    let mut pos = at;
    let mut end = None;
    let mut written = 0usize;
    let mut limit = at; // pointers must point strictly before the last jump
    let mut jumps = 0usize;
    loop {
        let len = *buf.get(pos)? as usize;
        match len & 0xC0 {
            0x00 => {
                if written + len + 1 > MAX_NAME_LEN {
                    return None;
                }
                let label = buf.get(pos..pos + 1 + len)?;
                out[written..written + 1 + len].copy_from_slice(label);
                written += 1 + len;
                pos += 1 + len;
                if len == 0 {
                    return Some((end.unwrap_or(pos), written));
                }
            }
            0xC0 => {
                let target = (get_u16(buf, pos)? & 0x3FFF) as usize;
                if end.is_none() {
                    end = Some(pos + 2);
                }
                jumps += 1;
                if target >= limit || jumps > MAX_POINTERS {
                    return None;
                }
                limit = target;
                pos = target;
            }
            _ => return None,
        }
    }
}

/// Checks the possibly compressed name at `at` as [`read_name`] reads it (every
/// pointer followed, with the same rules), without keeping it; returns the offset after
/// the name as it appears at `at`.
pub fn check_name(buf: &[u8], at: usize) -> Option<usize> {
    let mut scratch = [0u8; MAX_NAME_LEN];
    read_name(buf, at, &mut scratch).map(|(end, _)| end)
}

/// Where the names lie in the rdata of a type whose rdata holds compressible names (RFC
/// 3597 section 4, and the later types other implementations compress anyway): bytes
/// before the first name, and how many names follow. `None` for other types, whose
/// rdata is opaque here.
pub fn rdata_names(rtype: u16) -> Option<(usize, usize)> {
    match rtype {
        // NS MD MF CNAME MB MG MR PTR DNAME
        2 | 3 | 4 | 5 | 7 | 8 | 9 | 12 | 39 => Some((0, 1)),
        // SOA MINFO RP
        6 | 14 | 17 => Some((0, 2)),
        // MX AFSDB RT KX
        15 | 18 | 21 | 36 => Some((2, 1)),
        // PX
        26 => Some((2, 2)),
        // SRV
        33 => Some((6, 1)),
        _ => None,
    }
}

/// Checks the resource record at `at`: its owner and the names in its rdata (see
/// [`rdata_names`]) followed through every pointer, each rdata name inside the rdata,
/// the rdata inside the message. Returns the offset after the record.
pub fn check_record(buf: &[u8], at: usize) -> Option<usize> {
    let after_name = check_name(buf, at)?;
    let rtype = get_u16(buf, after_name)?;
    let rdlen = get_u16(buf, after_name + 8)? as usize;
    let start = after_name + 10;
    let end = start + rdlen;
    if end > buf.len() {
        return None;
    }
    if let Some((fixed, names)) = rdata_names(rtype) {
        let mut name_at = start + fixed;
        for _ in 0..names {
            if name_at >= end {
                return None;
            }
            name_at = check_name(buf, name_at)?;
            if name_at > end {
                return None;
            }
        }
    }
    Some(end)
}

/// Checks a whole message as far as anything here will read it: the header, every
/// question, every record of the answer, authority and additional sections (the OPT
/// record too) with every name followed through its pointers. Bytes after the last
/// record are tolerated, as miekg/dns does. What passes can be walked with
/// [`skip_name`] and [`skip_record`] and copied name by name without surprise.
pub fn check_message(msg: &[u8]) -> bool {
    let Some(header) = super::Header::of(msg) else {
        return false;
    };
    let [qd, an, ns, ar] = header.counts().map(usize::from);
    let mut at = HEADER_LEN;
    for _ in 0..qd {
        match check_name(msg, at) {
            Some(end) if end + 4 <= msg.len() => at = end + 4,
            _ => return false,
        }
    }
    for _ in 0..an + ns + ar {
        match check_record(msg, at) {
            Some(end) => at = end,
            None => return false,
        }
    }
    true
}

/// Formats uncompressed wire-format name bytes in presentation form (`www.example.`),
/// escaping what RFC 1035 5.1 says must be escaped.
pub fn name_to_string(wire: &[u8]) -> String {
    let mut s = String::with_capacity(wire.len() + 1);
    let mut at = 0;
    while at < wire.len() {
        let len = wire[at] as usize;
        if len == 0 {
            break;
        }
        for &b in wire.get(at + 1..at + 1 + len).unwrap_or(&[]) {
            match b {
                b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                    s.push('\\');
                    s.push(b as char);
                }
                0x21..=0x7E => s.push(b as char),
                _ => s.push_str(&format!("\\{b:03}")),
            }
        }
        s.push('.');
        at += 1 + len;
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// Parses a presentation-form name (`www.example.org`, relative names taken as
/// fully qualified) into lower-cased wire bytes with the root label. Supports the
/// `\.` and `\DDD` escapes. Returns `None` for empty labels, over-long labels or names.
pub fn name_from_str(s: &str) -> Option<Vec<u8>> {
    let mut out = [0u8; MAX_NAME_LEN];
    let len = parse_name(s, &mut out)?;
    Some(out[..len].to_vec())
}

/// [`name_from_str`] into a buffer on the caller's stack: the length written, root
/// label included. Allocates nothing.
pub fn parse_name(s: &str, out: &mut [u8; MAX_NAME_LEN]) -> Option<usize> {
    if s == "." {
        out[0] = 0;
        return Some(1);
    }
    let bytes = s.as_bytes();
    // `len_at` holds the current label's length byte, its bytes follow; a write past
    // the buffer means a name over 255 bytes once the root label is added.
    let (mut len_at, mut at) = (0usize, 1usize);
    fn put(out: &mut [u8; MAX_NAME_LEN], at: &mut usize, b: u8) -> Option<()> {
        *out.get_mut(*at)? = b.to_ascii_lowercase();
        *at += 1;
        Some(())
    }
    let mut i = 0;
    let mut ended_with_dot = false;
    while i < bytes.len() {
        let c = bytes[i];
        ended_with_dot = false;
        match c {
            b'.' => {
                let label = at - len_at - 1;
                if label == 0 || label > 63 {
                    return None;
                }
                out[len_at] = label as u8;
                len_at = at;
                at += 1;
                ended_with_dot = true;
                i += 1;
            }
            b'\\' => {
                let d = bytes.get(i + 1..i + 4);
                if let Some(d) = d.filter(|d| d.iter().all(u8::is_ascii_digit)) {
                    let v = (d[0] - b'0') as u16 * 100 + (d[1] - b'0') as u16 * 10 + (d[2] - b'0') as u16;
                    if v > 255 {
                        return None;
                    }
                    put(out, &mut at, v as u8)?;
                    i += 4;
                } else {
                    put(out, &mut at, *bytes.get(i + 1)?)?;
                    i += 2;
                }
            }
            _ => {
                put(out, &mut at, c)?;
                i += 1;
            }
        }
    }
    if ended_with_dot {
        // The length byte reserved for a next label is the root label.
        at -= 1;
    } else {
        let label = at - len_at - 1;
        if label == 0 || label > 63 {
            return None;
        }
        out[len_at] = label as u8;
    }
    *out.get_mut(at)? = 0;
    Some(at + 1)
}

/// Number of labels (root excluded) in uncompressed wire-format name bytes.
pub fn label_count(wire: &[u8]) -> usize {
    let mut n = 0;
    let mut at = 0;
    while at < wire.len() && wire[at] != 0 {
        n += 1;
        at += 1 + wire[at] as usize;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_round_trip() {
        let w = name_from_str("WWW.Example.org").unwrap();
        assert_eq!(w, b"\x03www\x07example\x03org\x00");
        assert_eq!(name_to_string(&w), "www.example.org.");
        assert_eq!(name_from_str(".").unwrap(), vec![0]);
        assert_eq!(name_to_string(&[0]), ".");
        assert!(name_from_str("a..b").is_none());
        assert!(name_from_str(&"a".repeat(64)).is_none());
        assert_eq!(name_from_str("a\\.b.c").unwrap(), b"\x03a.b\x01c\x00");
        assert_eq!(name_to_string(b"\x03a.b\x01c\x00"), "a\\.b.c.");
        assert_eq!(name_from_str("\\065.").unwrap(), b"\x01a\x00");
    }

    /// What the parser accepts, and the bytes it gives, at every edge: escapes, empty
    /// labels, labels of 63 and 64 bytes, names of 255 and 256 bytes in wire form.
    #[test]
    fn parse_name_edges() {
        let ok = |s: &str, wire: &[u8]| {
            let mut buf = [0u8; MAX_NAME_LEN];
            let got = parse_name(s, &mut buf).map(|n| buf[..n].to_vec());
            assert_eq!(got.as_deref(), Some(wire), "{s:?}");
            assert_eq!(name_from_str(s).as_deref(), Some(wire), "{s:?}");
        };
        let bad = |s: &str| {
            let mut buf = [0u8; MAX_NAME_LEN];
            assert_eq!(parse_name(s, &mut buf), None, "{s:?}");
        };
        ok(".", b"\x00");
        ok("a", b"\x01a\x00");
        ok("a.", b"\x01a\x00");
        ok("A.B.C", b"\x01a\x01b\x01c\x00");
        ok("\\.", b"\x01.\x00");
        ok("a\\.b", b"\x03a.b\x00");
        ok("\\065", b"\x01a\x00");
        ok("\\25", b"\x0225\x00");
        ok("\\0651", b"\x02a1\x00");
        ok("x.\\046.y", b"\x01x\x01.\x01y\x00");
        ok("é.example", b"\x02\xc3\xa9\x07example\x00");
        ok("a b.c", b"\x03a b\x01c\x00");
        ok("*.Wild", b"\x01*\x04wild\x00");
        for s in ["", "..", ".a", "a..b", "\\", "a\\", "\\256", "a.\\"] {
            bad(s);
        }
        // Labels: 63 bytes is the most.
        let l63 = "x".repeat(63);
        let mut w = vec![63];
        w.extend_from_slice(l63.as_bytes());
        w.push(0);
        ok(&l63, &w);
        ok(&format!("{l63}."), &w);
        bad(&"x".repeat(64));
        bad(&format!("a.{}.b", "x".repeat(64)));
        // Names: 255 bytes in wire form is the most, with or without the final dot.
        for (total, fits) in [(254, true), (255, true), (256, false), (257, false)] {
            // Labels of 9 (10 bytes each), then one that makes up `total` with the root.
            let mut labels = vec!["y".repeat(9); (total - 2) / 10];
            let rest = total - 2 - 10 * labels.len();
            if rest > 0 {
                labels.push("z".repeat(rest));
            }
            for name in [labels.join("."), labels.join(".") + "."] {
                let mut buf = [0u8; MAX_NAME_LEN];
                let got = parse_name(&name, &mut buf);
                assert_eq!(got, fits.then_some(total), "{total}: {name}");
            }
        }
    }

    /// Names that both parse agree with `domain`'s parser (which keeps the case).
    #[test]
    fn names_read_as_domain_reads_them() {
        for text in [
            "www.example.org",
            "www.example.org.",
            ".",
            "A.b\\.c",
            "\\065bc.d",
            "x-y_z.*.q",
        ] {
            let ours = name_from_str(text).unwrap();
            let theirs: domain::base::Name<Vec<u8>> = text.parse().unwrap();
            assert_eq!(ours, theirs.as_slice().to_ascii_lowercase(), "{text}");
        }
    }

    /// A message of one question (`a.` at 12) and `records` appended, with the counts.
    fn message(an: u16, ns: u16, ar: u16, records: &[u8]) -> Vec<u8> {
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1];
        for c in [an, ns, ar] {
            m.extend_from_slice(&c.to_be_bytes());
        }
        m.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        m.extend_from_slice(records);
        m
    }

    /// A record with `owner` (raw bytes), type A or the given type, and `rdata`.
    fn rr(owner: &[u8], rtype: u16, rdata: &[u8]) -> Vec<u8> {
        let mut r = owner.to_vec();
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(rdata);
        r
    }

    #[test]
    fn messages_with_sound_pointers_pass() {
        // Owner: a pointer to the question; CNAME target `b` + pointer to the question.
        let mut recs = rr(&[0xC0, 12], rtype::CNAME, &[1, b'b', 0xC0, 12]);
        recs.extend(rr(&[0], rtype::OPT, &[]));
        let m = message(1, 0, 1, &recs);
        assert!(check_message(&m));
        assert_eq!(check_record(&m, 19), Some(19 + 2 + 10 + 4));
        // Trailing bytes after the counted records are tolerated.
        let mut m = m;
        m.push(0xff);
        assert!(check_message(&m));
    }

    #[test]
    fn pointer_loops_in_any_section_are_found() {
        // Bad owners for a record that starts at `at`.
        let bad = |at: u8| {
            [
                rr(&[0xC0, at], rtype::A, &[10, 0, 0, 1]),          // a pointer to itself
                rr(&[0xC0, at + 30], rtype::A, &[10, 0, 0, 1]),     // a pointer ahead
                rr(&[1, b'x', 0xC0, at], rtype::A, &[10, 0, 0, 1]), // into its own name
            ]
        };
        // The first record starts at 19.
        for bad in bad(19) {
            for (an, ns, ar) in [(1, 0, 0), (0, 1, 0), (0, 0, 1)] {
                assert!(!check_message(&message(an, ns, ar, &bad)), "{an} {ns} {ar}: {bad:?}");
            }
        }
        // After a sound record (16 bytes), in the additional section.
        for bad in bad(35) {
            let mut two = rr(&[0xC0, 12], rtype::A, &[10, 0, 0, 1]);
            two.extend_from_slice(&bad);
            assert!(check_message(&message(1, 0, 0, &two)));
            assert!(!check_message(&message(1, 0, 1, &two)));
        }
        // A loop inside rdata: the CNAME target points to itself.
        let m = message(1, 0, 0, &rr(&[0xC0, 12], rtype::CNAME, &[0xC0, 31]));
        assert!(!check_message(&m));
        // A rdata name running past its rdata.
        let m = message(1, 0, 0, &rr(&[0xC0, 12], rtype::CNAME, &[1]));
        assert!(!check_message(&m));
        // Two pointers pointing at each other, behind the records' back.
        let mut m = message(0, 0, 1, &[]);
        let at = m.len();
        m.extend_from_slice(&rr(&[0xC0, (at + 2) as u8, 0xC0, at as u8], rtype::A, &[1, 2, 3, 4]));
        assert!(!check_message(&m));
        // A reserved label type (0x40).
        assert!(!check_message(&message(
            1,
            0,
            0,
            &rr(&[0x40, 0], rtype::A, &[1, 2, 3, 4])
        )));
        // Cut short.
        let m = message(1, 0, 0, &rr(&[0xC0, 12], rtype::A, &[10, 0, 0, 1]));
        assert!(!check_message(&m[..m.len() - 1]));
        assert!(!check_message(&m[..11]));
    }

    #[test]
    fn pointer_chains_are_bounded() {
        // 200 pointers, each to the one before it, ending at the question's name: every
        // pointer points backwards, but no name needs that many.
        let mut m = message(0, 0, 0, &[]);
        let first = m.len();
        m.extend_from_slice(&[0xC0, 12]);
        for i in 1..200 {
            let prev = first + 2 * (i - 1);
            m.extend_from_slice(&[0xC0 | (prev >> 8) as u8, prev as u8]);
        }
        let last = m.len() - 2;
        let mut out = [0u8; MAX_NAME_LEN];
        assert_eq!(read_name(&m, first + 2 * 100, &mut out), Some((first + 202, 3)));
        assert_eq!(read_name(&m, last, &mut out), None);
        assert_eq!(check_name(&m, last), None);
    }

    #[test]
    fn read_name_follows_backward_pointers_only() {
        // "a." at 0, then a pointer to 0 at 3.
        let buf = [1, b'a', 0, 0xC0, 0];
        let mut out = [0u8; MAX_NAME_LEN];
        assert_eq!(read_name(&buf, 3, &mut out), Some((5, 3)));
        // A pointer to itself is a loop.
        let buf = [0xC0, 0];
        assert_eq!(read_name(&buf, 0, &mut out), None);
    }
}
