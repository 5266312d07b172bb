//! The request view: one pass over a received message that validates it the way
//! RFC 1035, RFC 6891 and CoreDNS (through miekg/dns's accept function) do, and keeps
//! what the chain needs: the question, its lower-cased lookup key and the EDNS values.
//! Nothing here allocates.

use std::net::SocketAddr;

use super::cookie::{self, Cookie};

use super::header::{Flags, Header};
use super::wire::{self, MAX_NAME_LEN, MIN_UDP_PAYLOAD, QNAME_OFFSET, opcode, rtype};

/// The EDNS options (local-use range, RFC 6891 9) the server puts on its own lookups
/// through itself: the kubernetes plugin's CNAME chase (65301,
/// `plugin::kubernetes::CHASE_OPTION`) and rewrite's cname pass (65302,
/// `PASS_OPTION` of rewrite's `cname.rs`). Never sent on to an upstream.
pub const SELF_LOOKUP_OPTIONS: [u16; 2] = [65301, 65302];

/// How a query arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// `udp` / `tcp`, as CoreDNS's log and metric labels spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// The EDNS(0) values of a query's OPT record (RFC 6891 6.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    /// The requestor's UDP payload size, as sent (may be below 512).
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    /// Offset and length of the OPT rdata (the options) in the raw query.
    pub options: (u16, u16),
}

/// Why a message gets no normal processing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Send nothing: too short to carry an ID, or a response (QR set).
    Drop,
    /// Answer with this rcode, echoing the header (and the question if `question_end`).
    Error {
        rcode: super::Rcode,
        question_end: Option<usize>,
    },
}

/// A lower-cased, uncompressed wire-format name with its label offsets: the lookup key.
#[derive(Clone)]
pub struct NameKey {
    bytes: [u8; MAX_NAME_LEN],
    len: u8,
    labels: [u8; 128],
    nlabels: u8,
}

impl NameKey {
    fn empty() -> Self {
        NameKey {
            bytes: [0; MAX_NAME_LEN],
            len: 0,
            labels: [0; 128],
            nlabels: 0,
        }
    }

    /// Builds a key from uncompressed wire bytes (root label included).
    pub fn from_wire(wire: &[u8]) -> Option<NameKey> {
        let mut k = NameKey::empty();
        let end = k.fill(wire, 0)?;
        (end == wire.len()).then_some(k)
    }

    /// An empty key, to be filled in place by [`Self::set_lower_wire`] (a key is
    /// ~400 bytes: built where it stays, not moved).
    #[inline(always)]
    pub fn blank() -> NameKey {
        NameKey::empty()
    }

    /// Makes this key the name `wire`, uncompressed and already lower-cased (root
    /// label included): a copy and a walk over the labels, for a name made of
    /// lower-cased pieces (`rewrite`'s new names; [`Self::from_wire`] lower-cases byte
    /// by byte). `false`, the key unusable, if `wire` is not such a name.
    #[inline(always)]
    pub fn set_lower_wire(&mut self, wire: &[u8]) -> bool {
        let Some(bytes) = self.bytes.get_mut(..wire.len()) else {
            return false;
        };
        bytes.copy_from_slice(wire);
        let (mut at, mut n) = (0usize, 0usize);
        loop {
            let Some(&l) = wire.get(at) else {
                return false;
            };
            if l == 0 {
                break;
            }
            // At most 127 labels fit 255 bytes: `n` stays in bounds.
            if l > 63 {
                return false;
            }
            self.labels[n] = at as u8;
            n += 1;
            at += 1 + l as usize;
        }
        if at + 1 != wire.len() {
            return false;
        }
        self.len = wire.len() as u8;
        self.nlabels = n as u8;
        debug_assert!(NameKey::from_wire(wire).is_some_and(|w| w.wire() == self.wire()));
        true
    }

    /// Builds a key from a name in presentation form (`www.Example.org`, relative
    /// names taken as fully qualified, `\.` and `\DDD` escapes), without allocating.
    pub fn from_text(text: &str) -> Option<NameKey> {
        let mut wire = [0u8; MAX_NAME_LEN];
        let len = wire::parse_name(text, &mut wire)?;
        NameKey::from_wire(&wire[..len])
    }

    /// Reads an uncompressed name at `at`, lower-casing it; returns the offset after it.
    fn fill(&mut self, buf: &[u8], mut at: usize) -> Option<usize> {
        let mut len = 0usize;
        let mut n = 0usize;
        loop {
            let l = *buf.get(at)? as usize;
            if l & 0xC0 != 0 {
                return None; // no pointers in a question: nothing precedes it to point to
            }
            if len + l + 1 > MAX_NAME_LEN {
                return None;
            }
            let label = buf.get(at..at + 1 + l)?;
            if l > 0 {
                if n == 128 {
                    return None;
                }
                self.labels[n] = len as u8;
                n += 1;
            }
            self.bytes[len] = l as u8;
            for (dst, src) in self.bytes[len + 1..len + 1 + l].iter_mut().zip(&label[1..]) {
                *dst = src.to_ascii_lowercase();
            }
            len += l + 1;
            at += l + 1;
            if l == 0 {
                self.len = len as u8;
                self.nlabels = n as u8;
                return Some(at);
            }
        }
    }

    /// The lower-cased wire bytes, root label included.
    #[inline]
    pub fn wire(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Number of labels, root excluded.
    #[inline]
    pub fn label_count(&self) -> usize {
        self.nlabels as usize
    }

    /// Offset (within [`Self::wire`]) of label `i`, counting from the left.
    #[inline]
    pub fn label_offset(&self, i: usize) -> usize {
        if i >= self.nlabels as usize {
            self.len as usize - 1
        } else {
            self.labels[i] as usize
        }
    }

    /// Label `i` from the left, without its length byte.
    pub fn label(&self, i: usize) -> &[u8] {
        let at = self.label_offset(i);
        let l = self.bytes[at] as usize;
        &self.bytes[at + 1..at + 1 + l]
    }

    /// The name without its leftmost `skip` labels (a suffix, root included).
    #[inline]
    pub fn suffix(&self, skip: usize) -> &[u8] {
        &self.wire()[self.label_offset(skip)..]
    }

    /// If this name equals `zone` (lower-cased wire) or is below it, the number of
    /// labels in front of the zone.
    #[inline]
    pub fn labels_before(&self, zone: &[u8]) -> Option<usize> {
        if zone.len() > self.len as usize {
            return None;
        }
        let start = self.len as usize - zone.len();
        // Most zones a router or a plugin asks about are not this name's: their first
        // length byte already differs (one comparison instead of the label search).
        if self.bytes[start] != zone[0] {
            return None;
        }
        let i = self.labels[..self.nlabels as usize]
            .iter()
            .position(|&o| o as usize == start)
            .unwrap_or(self.nlabels as usize);
        if self.label_offset(i) != start {
            return None;
        }
        (&self.bytes[start..self.len as usize] == zone).then_some(i)
    }
}

impl std::fmt::Display for NameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&wire::name_to_string(self.wire()))
    }
}

impl std::fmt::Debug for NameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NameKey({self})")
    }
}

/// A validated query. Borrowed from the receive buffer; nothing is copied but the key.
pub struct Request<'a> {
    /// The whole message as received.
    pub raw: &'a [u8],
    pub id: u16,
    /// The second header word (QR, opcode, AA, TC, RD, RA, Z, AD, CD, rcode).
    pub flags: Flags,
    /// Offset just past the question's name; the question is `raw[12..qname_end + 4]`.
    pub qname_end: usize,
    pub qtype: u16,
    pub qclass: u16,
    /// The question name, lower-cased: the key every lookup uses.
    pub qname: NameKey,
    pub edns: Option<Edns>,
    /// The query's DNS cookie, read (RFC 7873): what the reply carries back.
    pub cookie: Option<Cookie>,
    pub transport: Transport,
    pub client: SocketAddr,
    /// The address the query was received on (the listener's, or the packet's
    /// destination when known).
    pub local: SocketAddr,
    /// The question a reply to this request carries instead of its own: the client's,
    /// for a query a rewriter renamed (set by the chain, see `chain::Renamed::echo`;
    /// `None` for every query as received). The records are still about this
    /// request's name; [`crate::dns::Response`] keeps it aside.
    pub echo: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    /// Validates `raw` as a query. The checks follow miekg/dns's default accept
    /// function, which CoreDNS uses: responses are dropped, opcodes other than QUERY
    /// get NOTIMP, and a question count other than one, or more than one record in
    /// the answer or authority section, or more than two in the additional section,
    /// gets FORMERR; so does anything that fails to parse (RFC 1035 4.1), and more
    /// than one OPT record or an OPT not owned by the root (RFC 6891 6.1.1).
    pub fn parse(
        raw: &'a [u8],
        transport: Transport,
        client: SocketAddr,
        local: SocketAddr,
    ) -> Result<Request<'a>, Reject> {
        let header = Header::of(raw).ok_or(Reject::Drop)?;
        let (id, flags) = (header.id(), header.flags());
        if flags.qr() {
            return Err(Reject::Drop);
        }
        let formerr = Reject::Error {
            rcode: super::Rcode::FORMERR,
            question_end: None,
        };
        if flags.opcode() != opcode::QUERY {
            return Err(Reject::Error {
                rcode: super::Rcode::NOTIMP,
                question_end: None,
            });
        }
        let [qd, an, ns, ar] = header.counts();
        if qd != 1 || an > 1 || ns > 1 || ar > 2 {
            return Err(formerr);
        }
        let mut qname = NameKey::empty();
        let qname_end = qname.fill(raw, QNAME_OFFSET).ok_or(formerr)?;
        let qtype = wire::get_u16(raw, qname_end).ok_or(formerr)?;
        let qclass = wire::get_u16(raw, qname_end + 2).ok_or(formerr)?;
        let with_question = Reject::Error {
            rcode: super::Rcode::FORMERR,
            question_end: Some(qname_end + 4),
        };
        // Every name of every record is followed through its pointers: a pointer loop,
        // a pointer forward or into its own name is FORMERR (miekg/dns fails to unpack
        // such a message, and its server answers FORMERR), wherever the record is.
        let mut at = qname_end + 4;
        for _ in 0..(an + ns) {
            at = wire::check_record(raw, at).ok_or(with_question)?;
        }
        let mut edns = None;
        let mut cookie_at = None;
        for _ in 0..ar {
            let start = at;
            at = wire::check_record(raw, at).ok_or(with_question)?;
            let name_end = wire::check_name(raw, start).ok_or(with_question)?;
            if wire::get_u16(raw, name_end) != Some(rtype::OPT) {
                continue;
            }
            if edns.is_some() || name_end != start + 1 || raw[start] != 0 {
                return Err(with_question);
            }
            let udp_size = wire::get_u16(raw, name_end + 2).ok_or(with_question)?;
            let ttl = wire::get_u32(raw, name_end + 4).ok_or(with_question)?;
            let rdlen = wire::get_u16(raw, name_end + 8).ok_or(with_question)?;
            let opts = name_end + 10;
            // Options are type-length-value triples filling the rdata exactly. The first
            // COOKIE option counts (RFC 7873 5.2); it is read below.
            let mut o = opts;
            while o < opts + rdlen as usize {
                let olen = wire::get_u16(raw, o + 2).ok_or(with_question)? as usize;
                if cookie_at.is_none() && wire::get_u16(raw, o) == Some(cookie::OPTION) {
                    cookie_at = Some((o + 4, olen));
                }
                o += 4 + olen;
            }
            if o != opts + rdlen as usize {
                return Err(with_question);
            }
            edns = Some(Edns {
                udp_size,
                version: (ttl >> 16) as u8,
                dnssec_ok: ttl & 0x8000 != 0,
                options: (opts as u16, rdlen),
            });
        }
        // A malformed COOKIE is FORMERR (RFC 7873 5.2.2).
        let cookie = match cookie_at {
            Some((at, len)) if at + len <= raw.len() => {
                Some(cookie::read(&raw[at..at + len], client.ip(), cookie::now()).map_err(|_| with_question)?)
            }
            _ => None,
        };
        Ok(Request {
            raw,
            id,
            flags,
            qname_end,
            qtype,
            qclass,
            qname,
            edns,
            cookie,
            transport,
            client,
            local,
            echo: None,
        })
    }

    /// Appends the query as received to `out`, minus any COOKIE option: a cookie is
    /// between the client and this server (it holds a hash of the client's address
    /// under our secret), and an upstream would only find a server cookie that is not
    /// its own in it (RFC 7873 6: a forwarder is a client with cookies of its own).
    /// The server's own self-lookup markers ([`SELF_LOOKUP_OPTIONS`]) are left out too:
    /// they mean something only to this server.
    /// The UDP payload size in the copy is this request's, which `bufsize` may have
    /// lowered ([`Self::limit_udp_size`]): the upstream sees what the chain saw.
    pub fn copy_for_upstream(&self, out: &mut Vec<u8>) {
        let base = out.len();
        self.copy_without_local_options(out);
        if let Some(e) = self.edns {
            // The OPT record's CLASS field, 8 bytes before its options (RFC 6891 6.1.2:
            // a root owner, TYPE, CLASS, TTL, RDLEN); the options did not move.
            let at = base + e.options.0 as usize - 8;
            out[at..at + 2].copy_from_slice(&e.udp_size.to_be_bytes());
        }
    }

    fn copy_without_local_options(&self, out: &mut Vec<u8>) {
        let local = |code: u16| code == cookie::OPTION || SELF_LOOKUP_OPTIONS.contains(&code);
        let Some(e) = self
            .edns
            .filter(|_| self.cookie.is_some() || self.edns_options().any(|(c, _)| local(c)))
        else {
            out.extend_from_slice(self.raw);
            return;
        };
        let (start, len) = (e.options.0 as usize, e.options.1 as usize);
        out.extend_from_slice(&self.raw[..start]);
        let rdlen_at = out.len() - 2;
        let mut kept = 0usize;
        for (code, data) in self.edns_options().filter(|(code, _)| !local(*code)) {
            out.extend_from_slice(&code.to_be_bytes());
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(data);
            kept += 4 + data.len();
        }
        out[rdlen_at..rdlen_at + 2].copy_from_slice(&(kept as u16).to_be_bytes());
        out.extend_from_slice(&self.raw[start + len..]);
    }

    /// Whether the query carried a server cookie of ours, made for its client and
    /// current: its source address is not spoofed.
    #[inline]
    pub fn cookie_valid(&self) -> bool {
        self.cookie.is_some_and(|c| c.valid)
    }

    /// The same request with another name as its lookup key (the raw message is
    /// unchanged): for following a CNAME inside the server.
    pub fn with_qname(&self, qname: NameKey) -> Request<'a> {
        Request {
            raw: self.raw,
            id: self.id,
            flags: self.flags,
            qname_end: self.qname_end,
            qtype: self.qtype,
            qclass: self.qclass,
            qname,
            edns: self.edns,
            cookie: self.cookie,
            transport: self.transport,
            client: self.client,
            local: self.local,
            echo: self.echo,
        }
    }

    /// The question's name exactly as the client spelled it (wire bytes, root included).
    #[inline]
    pub fn qname_raw(&self) -> &'a [u8] {
        &self.raw[QNAME_OFFSET..self.qname_end]
    }

    /// The question section as received (name, type, class).
    #[inline]
    pub fn question(&self) -> &'a [u8] {
        &self.raw[QNAME_OFFSET..self.qname_end + 4]
    }

    #[inline]
    pub fn rd(&self) -> bool {
        self.flags.rd()
    }

    #[inline]
    pub fn cd(&self) -> bool {
        self.flags.cd()
    }

    #[inline]
    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }

    /// The largest response the client accepts: 65535 over TCP; over UDP the EDNS
    /// payload size raised to at least 512, or 512 without EDNS (RFC 6891 6.2.3,
    /// RFC 1035 4.2.1), as CoreDNS's `request.Size`.
    #[inline]
    pub fn max_size(&self) -> usize {
        match self.transport {
            Transport::Tcp => u16::MAX as usize,
            Transport::Udp => match self.edns {
                Some(e) => e.udp_size.max(MIN_UDP_PAYLOAD) as usize,
                None => MIN_UDP_PAYLOAD as usize,
            },
        }
    }

    /// Lowers the EDNS UDP payload size this request stands for to `max` when it asks
    /// for more (`bufsize`; CoreDNS changes the query's OPT record in place). The
    /// reply's size limit ([`Self::max_size`]) follows; the raw message keeps the
    /// client's value, and [`Self::copy_for_upstream`] writes this one. A query without
    /// EDNS is left as it is.
    #[inline]
    pub fn limit_udp_size(&mut self, max: u16) {
        if let Some(e) = &mut self.edns {
            e.udp_size = e.udp_size.min(max);
        }
    }

    /// The serial of the SOA an IXFR query carries in its authority section (RFC 1995
    /// 3: the version the client has), or `None` when the authority section is not
    /// exactly one SOA record (parsing checked every record's bounds and names).
    pub fn ixfr_serial(&self) -> Option<u32> {
        let [_, an, ns, _] = Header::of(self.raw)?.counts();
        if ns != 1 {
            return None;
        }
        let mut at = self.qname_end + 4;
        for _ in 0..an {
            at = wire::skip_record(self.raw, at)?;
        }
        let name_end = wire::skip_name(self.raw, at)?;
        if wire::get_u16(self.raw, name_end)? != rtype::SOA {
            return None;
        }
        // Type, class, TTL, rdlength; then the two names and the serial.
        let rdata = name_end + 10;
        let after_mname = wire::skip_name(self.raw, rdata)?;
        let after_rname = wire::skip_name(self.raw, after_mname)?;
        wire::get_u32(self.raw, after_rname)
    }

    /// Iterates the EDNS options as (code, data).
    pub fn edns_options(&self) -> impl Iterator<Item = (u16, &'a [u8])> {
        let (start, len) = self
            .edns
            .map_or((0, 0), |e| (e.options.0 as usize, e.options.1 as usize));
        let raw = self.raw;
        let end = start + len;
        let mut at = start;
        std::iter::from_fn(move || {
            if at + 4 > end {
                return None;
            }
            let code = u16::from_be_bytes([raw[at], raw[at + 1]]);
            let len = u16::from_be_bytes([raw[at + 2], raw[at + 3]]) as usize;
            let data = &raw[at + 4..at + 4 + len];
            at += 4 + len;
            Some((code, data))
        })
    }

    /// Offset, within the raw message, of the question name's label `i` (from the left);
    /// the question's spelling of a suffix starts there.
    #[inline]
    pub fn qname_label_offset(&self, i: usize) -> usize {
        QNAME_OFFSET + self.qname.label_offset(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Rcode;

    fn addr() -> SocketAddr {
        "127.0.0.1:53".parse().unwrap()
    }

    fn query(name: &[u8], qtype: u16, extra: &[u8], arcount: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&arcount.to_be_bytes());
        m.extend_from_slice(name);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(extra);
        m
    }

    const OPT: &[u8] = &[0, 0, 41, 0x10, 0, 0, 0, 0x80, 0, 0, 0];

    #[test]
    fn parses_question_and_edns() {
        let q = query(b"\x03WWW\x07example\x00", rtype::A, OPT, 1);
        let r = Request::parse(&q, Transport::Udp, addr(), addr()).ok().unwrap();
        assert_eq!(r.id, 0x1234);
        assert_eq!(r.qname.wire(), b"\x03www\x07example\x00");
        assert_eq!(r.qname_raw(), b"\x03WWW\x07example\x00");
        assert_eq!(r.qname.label_count(), 2);
        assert_eq!(r.qname.label(1), b"example");
        assert_eq!(r.qname.labels_before(b"\x07example\x00"), Some(1));
        assert_eq!(r.qname.labels_before(b"\x00"), Some(2));
        assert_eq!(r.qname.labels_before(b"\x03org\x00"), None);
        let e = r.edns.unwrap();
        assert_eq!((e.udp_size, e.version, e.dnssec_ok), (4096, 0, true));
        assert_eq!(r.max_size(), 4096);
    }

    #[test]
    fn the_cookie_stays_here_and_other_options_go_upstream() {
        // OPT with: option 65001 (2 bytes), a COOKIE (8 bytes), option 65002 (0 bytes).
        let mut opt = vec![0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 22];
        opt.extend_from_slice(&[0xFD, 0xE9, 0, 2, 0xAA, 0xBB]);
        opt.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        opt.extend_from_slice(&[0xFD, 0xEA, 0, 0]);
        let q = query(b"\x03www\x07example\x00", rtype::A, &opt, 1);
        let r = Request::parse(&q, Transport::Udp, addr(), addr()).ok().unwrap();
        assert!(r.cookie.is_some());
        let mut up = Vec::new();
        r.copy_for_upstream(&mut up);
        assert_eq!(up.len(), q.len() - 12);
        let u = Request::parse(&up, Transport::Udp, addr(), addr()).ok().unwrap();
        assert!(u.cookie.is_none());
        assert_eq!((u.qname.wire(), u.edns.unwrap().udp_size), (r.qname.wire(), 1232));
        let kept: Vec<(u16, Vec<u8>)> = u.edns_options().map(|(c, d)| (c, d.to_vec())).collect();
        assert_eq!(kept, [(0xFDE9, vec![0xAA, 0xBB]), (0xFDEA, vec![])]);
        // Without a cookie, the query goes as it came.
        let plain = query(b"\x03www\x07example\x00", rtype::A, OPT, 1);
        let p = Request::parse(&plain, Transport::Udp, addr(), addr()).ok().unwrap();
        let mut up = Vec::new();
        p.copy_for_upstream(&mut up);
        assert_eq!(up, plain);
    }

    #[test]
    fn self_lookup_markers_stay_here() {
        // OPT with: the chase marker (1 byte), option 65001 (2 bytes), the rewrite pass
        // marker (0 bytes); no cookie.
        let mut opt = vec![0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 15];
        opt.extend_from_slice(&[0xFF, 0x15, 0, 1, 3]);
        opt.extend_from_slice(&[0xFD, 0xE9, 0, 2, 0xAA, 0xBB]);
        opt.extend_from_slice(&[0xFF, 0x16, 0, 0]);
        let q = query(b"\x03www\x07example\x00", rtype::A, &opt, 1);
        let r = Request::parse(&q, Transport::Udp, addr(), addr()).ok().unwrap();
        let mut up = Vec::new();
        r.copy_for_upstream(&mut up);
        assert_eq!(up.len(), q.len() - 9);
        let u = Request::parse(&up, Transport::Udp, addr(), addr()).ok().unwrap();
        let kept: Vec<(u16, Vec<u8>)> = u.edns_options().map(|(c, d)| (c, d.to_vec())).collect();
        assert_eq!(kept, [(0xFDE9, vec![0xAA, 0xBB])]);
        // The chase marker is the kubernetes plugin's own (rewrite's is private to it).
        assert_eq!(SELF_LOOKUP_OPTIONS[0], crate::plugin::kubernetes::CHASE_OPTION);
    }

    #[test]
    fn rejects() {
        let q = query(b"\x00", rtype::A, &[], 0);
        assert!(Request::parse(&q[..11], Transport::Udp, addr(), addr()).is_err());
        let mut resp = q.clone();
        resp[2] |= 0x80;
        assert_eq!(
            Request::parse(&resp, Transport::Udp, addr(), addr()).err(),
            Some(Reject::Drop)
        );
        let mut notify = q.clone();
        notify[2] = 4 << 3;
        assert!(matches!(
            Request::parse(&notify, Transport::Udp, addr(), addr()).err(),
            Some(Reject::Error {
                rcode: Rcode::NOTIMP,
                ..
            })
        ));
        let mut two = q.clone();
        two[5] = 2;
        assert!(matches!(
            Request::parse(&two, Transport::Udp, addr(), addr()).err(),
            Some(Reject::Error {
                rcode: Rcode::FORMERR,
                ..
            })
        ));
        // Two OPT records.
        let mut extra = OPT.to_vec();
        extra.extend_from_slice(OPT);
        let q2 = query(b"\x00", rtype::A, &extra, 2);
        assert!(matches!(
            Request::parse(&q2, Transport::Udp, addr(), addr()).err(),
            Some(Reject::Error {
                rcode: Rcode::FORMERR,
                question_end: Some(_)
            })
        ));
        // A compression pointer in the question.
        let q3 = query(b"\xC0\x0C", rtype::A, &[], 0);
        assert!(Request::parse(&q3, Transport::Udp, addr(), addr()).is_err());
        // An OPT whose option overruns its rdata.
        let bad_opt = [0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 4, 0, 10, 0, 8];
        let q4 = query(b"\x00", rtype::A, &bad_opt, 1);
        assert!(Request::parse(&q4, Transport::Udp, addr(), addr()).is_err());
    }

    /// A query for `a.` (at 12) whose answer, authority or additional section holds
    /// `record` (the first record starts at 19).
    fn with_record(section: usize, record: &[u8]) -> Vec<u8> {
        let mut q = query(b"\x01a\x00", rtype::A, record, 0);
        q[6 + 2 * section..8 + 2 * section].copy_from_slice(&[0, 1]);
        q
    }

    fn record(owner: &[u8], rtype: u16, rdata: &[u8]) -> Vec<u8> {
        let mut r = owner.to_vec();
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(rdata);
        r
    }

    #[test]
    fn pointer_loops_in_any_section_are_formerr() {
        let formerr = |q: &[u8]| {
            matches!(
                Request::parse(q, Transport::Udp, addr(), addr()).err(),
                Some(Reject::Error {
                    rcode: Rcode::FORMERR,
                    question_end: Some(19),
                })
            )
        };
        for section in 0..3 {
            // A pointer to the question is fine.
            let sound = with_record(section, &record(&[0xC0, 12], rtype::A, &[10, 0, 0, 1]));
            assert!(Request::parse(&sound, Transport::Udp, addr(), addr()).is_ok());
            for owner in [
                &[0xC0, 19][..],          // to itself
                &[0xC0, 40][..],          // forward
                &[1, b'x', 0xC0, 19][..], // into its own name
                &[0xC0, 0xFF][..],        // past the end
            ] {
                let q = with_record(section, &record(owner, rtype::A, &[10, 0, 0, 1]));
                assert!(formerr(&q), "section {section}, owner {owner:?}");
            }
            // A loop in a CNAME's target.
            let q = with_record(section, &record(&[0xC0, 12], rtype::CNAME, &[0xC0, 31]));
            assert!(formerr(&q), "section {section}, rdata");
        }
        // The OPT record's owner must be the root itself, never a pointer to one.
        let q = query(b"\x01a\x00", rtype::A, &record(&[0xC0, 14], rtype::OPT, &[]), 1);
        assert!(formerr(&q));
    }
}
