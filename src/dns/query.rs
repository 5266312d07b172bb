//! The queries the server writes itself: forward's health probe, loop's probe, the
//! kubernetes plugin's ExternalName chase through the server, the test relay. One
//! question, the header flags, and optionally an OPT record with its options
//! (RFC 1035 4.1, RFC 6891 6.1).
//!
//! The builder writes into the caller's buffer: a worker keeps its upstream buffer from
//! query to query, so building a query there allocates nothing once it has grown.
//! Names come in wire form, parsed once at setup (a [`super::Zone`], a
//! [`super::NameKey`] — [`super::NameKey::from_text`] parses presentation form without
//! allocating); a query a client sent is relayed with [`super::Request::copy_for_upstream`],
//! not rebuilt.

use super::header::Flags;
use super::wire::{ADVERTISED_UDP_PAYLOAD, HEADER_LEN, OPT_RR_LEN, class, flag, rtype};

/// A query to write. Starts as miekg/dns's `SetQuestion` makes one (and so CoreDNS's
/// probes): ID 0, RD set, class IN, no EDNS.
#[derive(Clone, Copy, Debug)]
pub struct QueryBuilder<'a> {
    qname: &'a [u8],
    qtype: u16,
    qclass: u16,
    id: u16,
    flags: Flags,
    edns: Option<Opt<'a>>,
}

/// The OPT record to add.
#[derive(Clone, Copy, Debug)]
struct Opt<'a> {
    udp_size: u16,
    dnssec_ok: bool,
    options: &'a [(u16, &'a [u8])],
}

impl<'a> QueryBuilder<'a> {
    /// A query for `qname` (uncompressed wire form, root label included, as spelled:
    /// the case is kept) of type `qtype`.
    pub fn new(qname: &'a [u8], qtype: u16) -> QueryBuilder<'a> {
        debug_assert!(
            super::wire::check_name(qname, 0) == Some(qname.len()),
            "not a wire name: {qname:?}"
        );
        QueryBuilder {
            qname,
            qtype,
            qclass: class::IN,
            id: 0,
            flags: Flags(flag::RD),
            edns: None,
        }
    }

    /// The message ID (the worker sets a random one on what it sends upstream).
    #[must_use]
    pub fn id(self, id: u16) -> Self {
        QueryBuilder { id, ..self }
    }

    #[must_use]
    pub fn class(self, qclass: u16) -> Self {
        QueryBuilder { qclass, ..self }
    }

    /// Recursion desired (set unless cleared).
    #[must_use]
    pub fn rd(self, on: bool) -> Self {
        QueryBuilder {
            flags: self.flags.with(flag::RD, on),
            ..self
        }
    }

    /// Checking disabled (RFC 4035 3.2.2).
    #[must_use]
    pub fn cd(self, on: bool) -> Self {
        QueryBuilder {
            flags: self.flags.with(flag::CD, on),
            ..self
        }
    }

    /// Authentic data: in a query, that the client understands the AD bit of the
    /// reply (RFC 6840 5.7).
    #[must_use]
    pub fn ad(self, on: bool) -> Self {
        QueryBuilder {
            flags: self.flags.with(flag::AD, on),
            ..self
        }
    }

    /// A NOTIFY instead of a query (RFC 1996 3.7: opcode NOTIFY, AA set, the zone's
    /// SOA as the question), as miekg/dns's `SetNotify` writes it: RD clear.
    #[must_use]
    pub fn notify(self) -> Self {
        QueryBuilder {
            flags: Flags(flag::AA).with_opcode(super::wire::opcode::NOTIFY),
            ..self
        }
    }

    /// Adds an OPT record advertising `udp_size` (RFC 6891 6.2.3).
    #[must_use]
    pub fn edns(self, udp_size: u16) -> Self {
        let opt = self.opt();
        QueryBuilder {
            edns: Some(Opt { udp_size, ..opt }),
            ..self
        }
    }

    /// Sets or clears DO (RFC 3225); adds an OPT record (our advertised size) if there
    /// is none yet.
    #[must_use]
    pub fn dnssec_ok(self, on: bool) -> Self {
        let opt = self.opt();
        QueryBuilder {
            edns: Some(Opt { dnssec_ok: on, ..opt }),
            ..self
        }
    }

    /// The EDNS options the OPT record carries, as (code, data), in this order (a
    /// COOKIE, RFC 7873; a local-use option). Adds an OPT record if there is none yet.
    /// Together they must fit an OPT record's 65535 bytes of data.
    #[must_use]
    pub fn options(self, options: &'a [(u16, &'a [u8])]) -> Self {
        let opt = self.opt();
        QueryBuilder {
            edns: Some(Opt { options, ..opt }),
            ..self
        }
    }

    fn opt(&self) -> Opt<'a> {
        self.edns.unwrap_or(Opt {
            udp_size: ADVERTISED_UDP_PAYLOAD,
            dnssec_ok: false,
            options: &[],
        })
    }

    /// The length of the message.
    pub fn len(&self) -> usize {
        let opt = self.edns.map_or(0, |o| OPT_RR_LEN + options_len(o.options));
        HEADER_LEN + self.qname.len() + 4 + opt
    }

    /// Never: a query has at least a header and a question.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the message into `out`, replacing what it held.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.len());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.flags.0.to_be_bytes());
        let arcount = u16::from(self.edns.is_some());
        for count in [1, 0, 0, arcount] {
            out.extend_from_slice(&count.to_be_bytes());
        }
        out.extend_from_slice(self.qname);
        out.extend_from_slice(&self.qtype.to_be_bytes());
        out.extend_from_slice(&self.qclass.to_be_bytes());
        if let Some(o) = self.edns {
            // Root owner, type OPT, the payload size in the class, extended rcode 0,
            // version 0 and the DO bit in the TTL (RFC 6891 6.1.2-6.1.3).
            out.push(0);
            out.extend_from_slice(&rtype::OPT.to_be_bytes());
            out.extend_from_slice(&o.udp_size.to_be_bytes());
            let ttl: u32 = if o.dnssec_ok { 0x8000 } else { 0 };
            out.extend_from_slice(&ttl.to_be_bytes());
            let rdlen = options_len(o.options);
            debug_assert!(rdlen <= usize::from(u16::MAX), "EDNS options over 65535 bytes");
            out.extend_from_slice(&(rdlen as u16).to_be_bytes());
            for (code, data) in o.options {
                out.extend_from_slice(&code.to_be_bytes());
                out.extend_from_slice(&(data.len() as u16).to_be_bytes());
                out.extend_from_slice(data);
            }
        }
    }

    /// The message in a new buffer (for probes, which send one now and then).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        self.write(&mut out);
        out
    }
}

fn options_len(options: &[(u16, &[u8])]) -> usize {
    options.iter().map(|(_, d)| 4 + d.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{NameKey, Request, Transport, cookie};
    use domain::base::Message;
    use domain::base::iana::{Class, Rtype};
    use domain::base::opt::AllOptData;

    fn parse(m: &[u8]) -> Message<&[u8]> {
        Message::from_octets(m).unwrap()
    }

    #[test]
    fn a_plain_query_is_what_set_question_makes() {
        let name = NameKey::from_text("Probe.Example.org").unwrap();
        let out = QueryBuilder::new(name.wire(), rtype::HINFO).id(0xBEEF).to_vec();
        let m = parse(&out);
        let h = m.header();
        assert_eq!(h.id(), 0xBEEF);
        assert!(h.rd() && !h.qr() && !h.cd() && !h.ad() && !h.aa() && !h.tc());
        assert_eq!(h.opcode().to_int(), 0);
        let c = m.header_counts();
        assert_eq!([c.qdcount(), c.ancount(), c.nscount(), c.arcount()], [1, 0, 0, 0]);
        let q = m.sole_question().unwrap();
        assert_eq!(q.qname().to_string(), "probe.example.org");
        assert_eq!(q.qtype(), Rtype::HINFO);
        assert_eq!(q.qclass(), Class::IN);
        assert!(m.opt().is_none());
        assert_eq!(out.len(), QueryBuilder::new(name.wire(), rtype::HINFO).len());
    }

    #[test]
    fn flags_class_and_spelling_are_kept() {
        let out = QueryBuilder::new(b"\x03WwW\x00", rtype::NS)
            .rd(false)
            .cd(true)
            .ad(true)
            .class(class::CH)
            .to_vec();
        let m = parse(&out);
        assert!(!m.header().rd() && m.header().cd() && m.header().ad());
        let q = m.sole_question().unwrap();
        assert_eq!(q.qclass(), Class::CH);
        assert_eq!(&out[HEADER_LEN..HEADER_LEN + 5], b"\x03WwW\x00");
    }

    #[test]
    fn edns_with_do_and_options_reads_back_through_domain() {
        let client_cookie = [1, 2, 3, 4, 5, 6, 7, 8];
        let options: &[(u16, &[u8])] = &[(cookie::OPTION, &client_cookie), (65301, &[3])];
        let b = QueryBuilder::new(b"\x01a\x00", rtype::AAAA)
            .edns(4096)
            .dnssec_ok(true)
            .options(options);
        let out = b.to_vec();
        assert_eq!(out.len(), b.len());
        let m = parse(&out);
        assert_eq!(m.header_counts().arcount(), 1);
        let opt = m.opt().unwrap();
        assert_eq!(opt.udp_payload_size(), 4096);
        assert!(opt.dnssec_ok());
        assert_eq!(opt.version(), 0);
        let got: Vec<String> = opt
            .opt()
            .iter::<AllOptData<_, _>>()
            .map(|o| format!("{:?}", o.unwrap()))
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("Cookie"), "{got:?}");
        // And our own request view reads the same values.
        let a = "127.0.0.1:53".parse().unwrap();
        let r = Request::parse(&out, Transport::Udp, a, a).ok().unwrap();
        assert_eq!(r.cookie.map(|c| c.valid), Some(false));
        let kept: Vec<(u16, Vec<u8>)> = r.edns_options().map(|(c, d)| (c, d.to_vec())).collect();
        assert_eq!(kept, [(cookie::OPTION, client_cookie.to_vec()), (65301, vec![3])]);
        assert!(r.dnssec_ok());
        assert_eq!(r.edns.unwrap().udp_size, 4096);
    }

    #[test]
    fn options_alone_bring_our_payload_size() {
        let out = QueryBuilder::new(b"\x00", rtype::SOA).options(&[(65001, &[])]).to_vec();
        let opt = parse(&out).opt().unwrap();
        assert_eq!(opt.udp_payload_size(), ADVERTISED_UDP_PAYLOAD);
        assert!(!opt.dnssec_ok());
    }

    #[test]
    fn write_reuses_the_buffer() {
        let mut buf = Vec::with_capacity(512);
        buf.extend_from_slice(b"old bytes");
        let ptr = buf.as_ptr();
        QueryBuilder::new(b"\x01b\x00", rtype::A).edns(1232).write(&mut buf);
        assert_eq!(buf.as_ptr(), ptr);
        assert_eq!(parse(&buf).sole_question().unwrap().qname().to_string(), "b");
    }
}
