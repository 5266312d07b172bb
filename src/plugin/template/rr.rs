//! A resource record in RFC 1035 presentation form (section 5.1, what CoreDNS's
//! template hands to miekg/dns's `NewRR`), encoded straight into wire form: owner
//! uncompressed, then type, class, TTL, rdata. The record is then copied into the reply
//! as it is (`Response::push_encoded`), which is what lets a template answer with a
//! class other than IN (`{{ .Class }}` for CH queries, README ".invalid" example).
//!
//! Types: A AAAA CNAME NS PTR DNAME MX SRV SOA TXT SPF. Owner and names without a
//! final dot are taken as fully qualified (NewRR's origin is the root); `@` is the
//! root. TTL and class may come in either order and both may be left out (TTL 3600,
//! NewRR's default; class IN). Parentheses group lines, `;` starts a comment.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::dns::wire::{self, MAX_NAME_LEN, class, rtype};

/// NewRR's TTL when the text has none.
const DEFAULT_TTL: u32 = 3600;

/// Encodes `text` as one record into `out` (cleared first); returns its type.
pub fn encode(text: &str, out: &mut Vec<u8>) -> Result<u16, String> {
    out.clear();
    let mut toks = Tokens { s: text, at: 0 };
    let owner = toks.next()?.ok_or("empty record")?;
    name(owner.text, out)?;
    let mut ttl = None;
    let mut rclass = None;
    let rt = loop {
        let t = toks.next()?.ok_or("record ends before its type")?;
        if ttl.is_none() && t.text.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            ttl = Some(parse_ttl(t.text)?);
            continue;
        }
        if rclass.is_none()
            && let Some(c) = parse_class(t.text)
        {
            rclass = Some(c);
            continue;
        }
        break parse_type(t.text).ok_or_else(|| format!("unknown RR type '{}'", t.text))?;
    };
    out.extend_from_slice(&rt.to_be_bytes());
    out.extend_from_slice(&rclass.unwrap_or(class::IN).to_be_bytes());
    out.extend_from_slice(&ttl.unwrap_or(DEFAULT_TTL).to_be_bytes());
    let rdlen_at = out.len();
    out.extend_from_slice(&[0, 0]);
    let mut field = |what: &str| -> Result<&str, String> {
        toks.next()?
            .map(|t| t.text)
            .ok_or_else(|| format!("{} record without its {what}", rtype::name(rt)))
    };
    match rt {
        rtype::A => {
            let ip: Ipv4Addr = field("address")?.parse().map_err(|_| "bad A address")?;
            out.extend_from_slice(&ip.octets());
        }
        rtype::AAAA => {
            let ip: Ipv6Addr = field("address")?.parse().map_err(|_| "bad AAAA address")?;
            out.extend_from_slice(&ip.octets());
        }
        rtype::CNAME | rtype::NS | rtype::PTR | 39 => name(field("target")?, out)?,
        rtype::MX => {
            let pref = number(field("preference")?, "MX preference")?;
            out.extend_from_slice(&(pref as u16).to_be_bytes());
            name(field("exchange")?, out)?;
        }
        rtype::SRV => {
            for what in ["priority", "weight", "port"] {
                let v = number(field(what)?, what)?;
                out.extend_from_slice(&(v as u16).to_be_bytes());
            }
            name(field("target")?, out)?;
        }
        rtype::SOA => {
            name(field("mname")?, out)?;
            name(field("rname")?, out)?;
            for what in ["serial", "refresh", "retry", "expire", "minimum"] {
                let t = field(what)?;
                let v = if what == "serial" {
                    t.parse::<u32>().map_err(|_| format!("bad SOA serial '{t}'"))?
                } else {
                    parse_ttl(t).map_err(|_| format!("bad SOA {what} '{t}'"))?
                };
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        rtype::TXT | 99 => {
            let mut any = false;
            while let Some(t) = toks.next()? {
                any = true;
                let s = t.value();
                let s = s.as_bytes();
                if s.is_empty() {
                    out.push(0);
                }
                for chunk in s.chunks(255) {
                    out.push(chunk.len() as u8);
                    out.extend_from_slice(chunk);
                }
            }
            if !any {
                return Err("TXT record without a string".into());
            }
        }
        other => {
            return Err(format!(
                "RR type {} is not one template writes in clusterdns",
                rtype::name(other)
            ));
        }
    }
    if let Some(extra) = toks.next()? {
        return Err(format!("unexpected '{}' after the record's data", extra.text));
    }
    let rdlen = out.len() - rdlen_at - 2;
    if rdlen > u16::MAX as usize {
        return Err("rdata longer than 65535 bytes".into());
    }
    out[rdlen_at..rdlen_at + 2].copy_from_slice(&(rdlen as u16).to_be_bytes());
    Ok(rt)
}

/// Checks what can be known of a record whose text has holes (`hole`, where a template
/// writes per query): the type, when every token before it is known, must be one this
/// module writes; and when the only hole is in the owner, the whole record must
/// encode. `Ok` when nothing can be known.
pub fn check_skeleton(text: &str, hole: char) -> Result<(), String> {
    let mut toks = Tokens { s: text, at: 0 };
    let Some(owner) = toks.next()? else {
        return Ok(());
    };
    let mut ttl = false;
    let mut rclass = false;
    loop {
        let Some(t) = toks.next()? else {
            return Ok(());
        };
        if t.text.contains(hole) {
            return Ok(());
        }
        if !ttl && t.text.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            ttl = true;
            continue;
        }
        if !rclass && parse_class(t.text).is_some() {
            rclass = true;
            continue;
        }
        let rt = parse_type(t.text).ok_or_else(|| format!("unknown RR type '{}'", t.text))?;
        if !matches!(
            rt,
            rtype::A
                | rtype::AAAA
                | rtype::CNAME
                | rtype::NS
                | rtype::PTR
                | 39
                | rtype::MX
                | rtype::SRV
                | rtype::SOA
                | rtype::TXT
                | 99
        ) {
            return Err(format!(
                "RR type {} is not one template writes in clusterdns",
                rtype::name(rt)
            ));
        }
        break;
    }
    let rest = &text[owner.text.len() + (owner.text.as_ptr() as usize - text.as_ptr() as usize)..];
    if owner.text.chars().filter(|&c| c == hole).count() == text.chars().filter(|&c| c == hole).count() {
        let mut probe = Vec::new();
        encode(&format!("example.{rest}"), &mut probe)?;
    }
    Ok(())
}

/// What is fixed of a record written from the query's wire name (the owner is
/// `{{ .Name }}`): type, and type + class + TTL as they go on the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Head {
    pub rtype: u16,
    wire: [u8; 8],
}

impl Head {
    /// Type, class and TTL as they go on the wire.
    pub fn wire(&self) -> &[u8; 8] {
        &self.wire
    }
}

/// Reads the TTL, class and type from the text after a `{{ .Name }}` owner, as
/// [`encode`] would; returns them and where the rdata's text starts. `None` (the text
/// path then writes the record) unless the text is plain (letters, digits, blanks), the
/// type is one whose rdata [`encode_fast`] writes (A AAAA CNAME NS PTR DNAME), and a
/// blank follows the type (an action glued to it would change the token).
pub fn head(text: &str) -> Option<(Head, usize)> {
    let b = text.as_bytes();
    let blank = |c: u8| c == b' ' || c == b'\t';
    if !b.first().copied().is_some_and(blank) {
        return None;
    }
    let (mut ttl, mut rclass) = (None, None);
    let mut at = 0;
    loop {
        while at < b.len() && blank(b[at]) {
            at += 1;
        }
        let start = at;
        while at < b.len() && !blank(b[at]) {
            if !b[at].is_ascii_alphanumeric() {
                return None;
            }
            at += 1;
        }
        // The type must end before the text does.
        if at == start || at == b.len() {
            return None;
        }
        let t = &text[start..at];
        if ttl.is_none() && b[start].is_ascii_digit() {
            ttl = Some(parse_ttl(t).ok()?);
            continue;
        }
        if rclass.is_none()
            && let Some(c) = parse_class(t)
        {
            rclass = Some(c);
            continue;
        }
        let rt = parse_type(t)?;
        if !matches!(rt, rtype::A | rtype::AAAA | rtype::CNAME | rtype::NS | rtype::PTR | 39) {
            return None;
        }
        let mut wire = [0u8; 8];
        wire[..2].copy_from_slice(&rt.to_be_bytes());
        wire[2..4].copy_from_slice(&rclass.unwrap_or(class::IN).to_be_bytes());
        wire[4..].copy_from_slice(&ttl.unwrap_or(DEFAULT_TTL).to_be_bytes());
        return Some((Head { rtype: rt, wire }, at));
    }
}

/// Whether every label of a wire name is written in presentation form as its bytes
/// (no escapes): the text path then reads the name back to these same bytes.
pub fn plain_name(wire: &[u8]) -> bool {
    let mut at = 0;
    while let Some(&len) = wire.get(at) {
        let Some(label) = wire.get(at + 1..at + 1 + usize::from(len)) else {
            return false;
        };
        if !label.iter().all(|&c| NAME_BYTE[usize::from(c)]) {
            return false;
        }
        at += 1 + usize::from(len);
        if len == 0 {
            return at == wire.len();
        }
    }
    false
}

/// The bytes [`plain_name`] takes: ASCII letters, digits, `-` and `_` (a table: one
/// load per byte).
const NAME_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    t
};

/// Encodes the record `owner` (a lower-cased wire name) `head` `rdata` into `out`
/// (cleared first), the rdata read from its text by type with nothing allocated.
/// `false` when the rdata is not one plain token of the type (the caller then writes
/// the record through [`encode`], which gives the same bytes or the error).
pub fn encode_fast(owner: &[u8], head: &Head, rdata: &str, out: &mut Vec<u8>) -> bool {
    let rdata = rdata.trim_matches(|c| c == ' ' || c == '\t');
    out.clear();
    out.extend_from_slice(owner);
    out.extend_from_slice(&head.wire);
    let rdlen_at = out.len();
    out.extend_from_slice(&[0, 0]);
    match head.rtype {
        rtype::A | rtype::AAAA => {
            let mut ip = [0u8; 16];
            match address(head.rtype, rdata, &mut ip) {
                Some(n) => out.extend_from_slice(&ip[..n]),
                None => return false,
            }
        }
        _ => {
            let plain = !rdata.is_empty()
                && rdata
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'*'));
            let mut buf = [0u8; MAX_NAME_LEN];
            match wire::parse_name(rdata, &mut buf) {
                Some(n) if plain => out.extend_from_slice(&buf[..n]),
                _ => return false,
            }
        }
    }
    let rdlen = (out.len() - rdlen_at - 2) as u16;
    out[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    true
}

/// The rdata of an A (`rtype` A) or AAAA record from its text, blanks around it
/// trimmed, as [`encode`] reads it: its length in `out`, `None` when the text is not
/// one address of the type.
pub fn address(rtype: u16, text: &str, out: &mut [u8; 16]) -> Option<usize> {
    let text = text.trim_matches(|c| c == ' ' || c == '\t');
    if rtype == rtype::A {
        let ip = crate::expr::parse_ipv4(text).map_or_else(|| text.parse::<Ipv4Addr>().ok(), Some)?;
        out[..4].copy_from_slice(&ip.octets());
        Some(4)
    } else if rtype == rtype::AAAA {
        out.copy_from_slice(&text.parse::<Ipv6Addr>().ok()?.octets());
        Some(16)
    } else {
        None
    }
}

/// Writes the presentation form of a lower-cased wire name into `out` when every label
/// byte is one [`plain_name`] takes (it is then `wire[1..]` with each length byte a
/// dot, what `expr::write_name` writes); its length. `None` for any other name.
pub fn plain_text(wire: &[u8], out: &mut [u8; MAX_NAME_LEN]) -> Option<usize> {
    if wire == [0] {
        out[0] = b'.';
        return Some(1);
    }
    let mut at = 0;
    loop {
        let len = usize::from(*wire.get(at)?);
        if len == 0 {
            return (at + 1 == wire.len()).then_some(at);
        }
        let label = wire.get(at + 1..at + 1 + len)?;
        let dst = out.get_mut(at..at + len + 1)?;
        for (d, &c) in dst.iter_mut().zip(label) {
            if !NAME_BYTE[usize::from(c)] {
                return None;
            }
            *d = c;
        }
        dst[len] = b'.';
        at += 1 + len;
    }
}

fn name(text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let mut buf = [0u8; MAX_NAME_LEN];
    let text = if text == "@" { "." } else { text };
    let n = wire::parse_name(text, &mut buf).ok_or_else(|| format!("bad name '{text}'"))?;
    out.extend_from_slice(&buf[..n]);
    Ok(())
}

fn number(t: &str, what: &str) -> Result<u32, String> {
    t.parse::<u16>().map(u32::from).map_err(|_| format!("bad {what} '{t}'"))
}

/// A TTL: seconds, or BIND's units (`1h30m`, `2d`, `1w`).
fn parse_ttl(t: &str) -> Result<u32, String> {
    if let Ok(v) = t.parse::<u32>() {
        return Ok(v);
    }
    let mut total: u64 = 0;
    let mut n: u64 = 0;
    let mut digits = false;
    for c in t.chars() {
        match c.to_ascii_lowercase() {
            d @ '0'..='9' => {
                n = n * 10 + u64::from(d as u8 - b'0');
                digits = true;
                if n > u64::from(u32::MAX) {
                    return Err(format!("bad TTL '{t}'"));
                }
            }
            u @ ('s' | 'm' | 'h' | 'd' | 'w') if digits => {
                let mult = match u {
                    's' => 1,
                    'm' => 60,
                    'h' => 3600,
                    'd' => 86_400,
                    _ => 604_800,
                };
                total += n * mult;
                n = 0;
                digits = false;
            }
            _ => return Err(format!("bad TTL '{t}'")),
        }
    }
    total += n;
    u32::try_from(total).map_err(|_| format!("bad TTL '{t}'"))
}

/// A class mnemonic or `CLASSnnn`, any case, without allocating (per query).
fn parse_class(t: &str) -> Option<u16> {
    const NAMES: [(&str, u16); 6] = [
        ("IN", class::IN),
        ("CH", class::CH),
        ("CHAOS", class::CH),
        ("HS", class::HS),
        ("NONE", class::NONE),
        ("ANY", class::ANY),
    ];
    if let Some(&(_, c)) = NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(t)) {
        return Some(c);
    }
    let n = t.get(..5).filter(|p| p.eq_ignore_ascii_case("CLASS"))?;
    t[n.len()..].parse().ok()
}

/// A type mnemonic this module knows or `TYPEnnn`, any case, without allocating.
fn parse_type(t: &str) -> Option<u16> {
    const NAMES: [(&str, u16); 14] = [
        ("A", rtype::A),
        ("AAAA", rtype::AAAA),
        ("CNAME", rtype::CNAME),
        ("NS", rtype::NS),
        ("PTR", rtype::PTR),
        ("DNAME", 39),
        ("MX", rtype::MX),
        ("SRV", rtype::SRV),
        ("SOA", rtype::SOA),
        ("TXT", rtype::TXT),
        ("SPF", 99),
        ("HINFO", rtype::HINFO),
        ("CAA", 257),
        ("HTTPS", rtype::HTTPS),
    ];
    if let Some(&(_, v)) = NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(t)) {
        return Some(v);
    }
    if let Some(p) = t.get(..4).filter(|p| p.eq_ignore_ascii_case("TYPE")) {
        return t[p.len()..].parse().ok();
    }
    // The rest of what the server knows by name (an error follows: not written here).
    rtype::from_name(t)
}

struct Token<'a> {
    text: &'a str,
    quoted: bool,
}

impl Token<'_> {
    /// The value of a character-string: quotes removed, `\"`, `\\` and `\DDD` read.
    fn value(&self) -> String {
        if !self.quoted && !self.text.contains('\\') {
            return self.text.to_string();
        }
        let b = self.text.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' && i + 1 < b.len() {
                let d = &b[i + 1..(i + 4).min(b.len())];
                if d.len() == 3 && d.iter().all(u8::is_ascii_digit) {
                    let v = u32::from(d[0] - b'0') * 100 + u32::from(d[1] - b'0') * 10 + u32::from(d[2] - b'0');
                    out.push(v.min(255) as u8);
                    i += 4;
                } else {
                    out.push(b[i + 1]);
                    i += 2;
                }
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

struct Tokens<'a> {
    s: &'a str,
    at: usize,
}

impl<'a> Tokens<'a> {
    fn next(&mut self) -> Result<Option<Token<'a>>, String> {
        let b = self.s.as_bytes();
        loop {
            while self.at < b.len() && (b[self.at].is_ascii_whitespace() || b[self.at] == b'(' || b[self.at] == b')') {
                self.at += 1;
            }
            if self.at < b.len() && b[self.at] == b';' {
                while self.at < b.len() && b[self.at] != b'\n' {
                    self.at += 1;
                }
                continue;
            }
            break;
        }
        if self.at >= b.len() {
            return Ok(None);
        }
        let start = self.at;
        if b[start] == b'"' {
            self.at += 1;
            while self.at < b.len() && b[self.at] != b'"' {
                self.at += if b[self.at] == b'\\' { 2 } else { 1 };
            }
            if self.at >= b.len() {
                return Err("unterminated quoted string".into());
            }
            self.at += 1;
            return Ok(Some(Token {
                text: &self.s[start + 1..self.at - 1],
                quoted: true,
            }));
        }
        while self.at < b.len() && !b[self.at].is_ascii_whitespace() && !matches!(b[self.at], b'(' | b')' | b';') {
            self.at += if b[self.at] == b'\\' { 2 } else { 1 };
        }
        self.at = self.at.min(b.len());
        Ok(Some(Token {
            text: &self.s[start..self.at],
            quoted: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(text: &str) -> Result<String, String> {
        let mut out = Vec::new();
        encode(text, &mut out)?;
        // Read back with `domain` (the independent parser) as a one-record answer.
        let mut msg = vec![0, 0, 0x84, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        msg.extend_from_slice(&out);
        let m = domain::base::Message::from_octets(msg).map_err(|e| e.to_string())?;
        let rr = m.answer().unwrap().next().unwrap().unwrap();
        let rr = rr
            .into_any_record::<domain::rdata::AllRecordData<_, domain::base::ParsedName<_>>>()
            .unwrap();
        Ok(rr.to_string().split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// The records of CoreDNS's template README examples.
    #[test]
    fn readme_records_encode() {
        let ok = |text: &str, want: &str| assert_eq!(show(text).as_deref(), Ok(want), "{text}");
        ok("a.example. 60 IN A 10.0.0.1", "a.example. 60 IN A 10.0.0.1");
        ok(
            "invalid. 60 CH SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)",
            "invalid. 60 CH SOA ns.invalid. hostmaster.invalid. 1 60 60 60 60",
        );
        ok(
            "example.com.dc1.example.com. 60 IN SOA ns.example.com hostmaster.example.com (1 60 60 60 60)",
            "example.com.dc1.example.com. 60 IN SOA ns.example.com. hostmaster.example.com. 1 60 60 60 60",
        );
        ok("x.example. 60 IN MX 10 x.example.", "x.example. 60 IN MX 10 x.example.");
        ok(
            "foogle.com 60 IN CNAME google.com",
            "foogle.com. 60 IN CNAME google.com.",
        );
        ok(
            "a.example. 60 IN TXT \"empty=true\"",
            "a.example. 60 IN TXT \"empty=true\"",
        );
        ok(
            "a.example. IN 1h AAAA 2001:db8::1",
            "a.example. 3600 IN AAAA 2001:db8::1",
        );
        ok("a.example. A 192.0.2.1", "a.example. 3600 IN A 192.0.2.1");
        // (`domain` prints an SRV target without its final dot.)
        ok("_x._tcp.a. 5 IN SRV 1 2 53 t.a.", "_x._tcp.a. 5 IN SRV 1 2 53 t.a");
        for (bad, why) in [
            ("a.example. 60 IN A 10.0.0.256", "bad A address"),
            ("a.example. 60 IN A", "without its address"),
            ("a.example. 60 IN FOO x", "unknown RR type 'FOO'"),
            ("a.example. 60 IN HINFO a b", "not one template writes"),
            ("a..example. 60 IN A 1.2.3.4", "bad name"),
            ("a. 60 IN A 1.2.3.4 extra", "unexpected 'extra'"),
            ("", "empty record"),
        ] {
            let got = show(bad).unwrap_err();
            assert!(got.contains(why), "{bad}: {got}");
        }
    }
}
