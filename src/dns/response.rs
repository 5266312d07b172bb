//! The response writer: builds a reply in a buffer the worker reuses, so answering
//! allocates nothing.
//!
//! Records are appended section by section. Each push checks the client's size limit
//! (RFC 1035 4.2.1, RFC 6891 6.2.5) with room kept for the OPT record; the first record
//! that does not fit, and everything after it, is left out and TC is set. This is what
//! CoreDNS does (miekg/dns `Msg.Truncate`): clients that never retry over TCP (musl
//! before 1.2.4) still get every record that fits.
//!
//! Names are compressed (RFC 1035 4.1.4) against the question and the names already
//! written, case-sensitively so that the query's spelling survives; SRV targets are
//! never compressed (RFC 2782).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::Rcode;
use super::cookie;
use super::header::{Flags, Header, HeaderMut};
use super::request::Request;
use super::wire::{
    self, ADVERTISED_UDP_PAYLOAD, HEADER_LEN, MAX_NAME_LEN, OPT_RR_LEN, QNAME_OFFSET, class, flag, rtype,
};

/// Where a name ends: at the root, in the question as the client spelled it, or in
/// explicit wire bytes.
#[derive(Clone, Copy, Debug)]
pub enum Tail<'a> {
    /// Nothing more: the head is a complete name (it must end with the root label).
    Root,
    /// The question name from this raw-message offset on (a label boundary).
    Question(usize),
    /// Uncompressed wire bytes, root label included.
    Wire(&'a [u8]),
}

/// A name to write: leading labels in two parts (wire form, no root), then a tail.
/// Two parts let a name be assembled from pieces stored apart (an endpoint's label and
/// its service's labels) without copying them together first.
#[derive(Clone, Copy, Debug)]
pub struct Name<'a> {
    pub head: &'a [u8],
    pub mid: &'a [u8],
    pub tail: Tail<'a>,
}

impl<'a> Name<'a> {
    /// The question name, as spelled in the query.
    pub const QUESTION: Name<'static> = Name {
        head: &[],
        mid: &[],
        tail: Tail::Question(QNAME_OFFSET),
    };

    /// A complete uncompressed wire name (root included).
    pub fn wire(bytes: &'a [u8]) -> Name<'a> {
        Name {
            head: &[],
            mid: &[],
            tail: Tail::Wire(bytes),
        }
    }

    /// `head` labels in front of the question's suffix starting at `offset`.
    pub fn under_question(head: &'a [u8], offset: usize) -> Name<'a> {
        Name {
            head,
            mid: &[],
            tail: Tail::Question(offset),
        }
    }
}

/// Record data, in the forms the plugins need.
#[derive(Clone, Copy, Debug)]
pub enum Rdata<'a> {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// CNAME, NS, PTR: a single (compressible) name.
    Name(Name<'a>),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: Name<'a>,
    },
    Soa {
        mname: Name<'a>,
        rname: Name<'a>,
        serial: u32,
        refresh: u32,
        retry: u32,
        expire: u32,
        minimum: u32,
    },
    /// TXT from one string (split into 255-byte character strings).
    Txt(&'a [u8]),
    /// Already encoded rdata, written as is (no names to compress inside).
    Raw(&'a [u8]),
}

impl Rdata<'static> {
    /// An address record's type and data: A for IPv4, AAAA for IPv6.
    pub fn address(ip: std::net::IpAddr) -> (u16, Rdata<'static>) {
        match ip {
            std::net::IpAddr::V4(a) => (rtype::A, Rdata::A(a)),
            std::net::IpAddr::V6(a) => (rtype::AAAA, Rdata::Aaaa(a)),
        }
    }
}

/// One record to push.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    pub owner: Name<'a>,
    pub rtype: u16,
    pub ttl: u32,
    pub data: Rdata<'a>,
}

impl<'a> Record<'a> {
    /// A record of class IN owned by the question name.
    pub fn at_question(rtype: u16, ttl: u32, data: Rdata<'a>) -> Record<'a> {
        Record {
            owner: Name::QUESTION,
            rtype,
            ttl,
            data,
        }
    }
}

/// Response sections, in wire order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Answer = 0,
    Authority = 1,
    Additional = 2,
}

/// Where a written record lies in the buffer (for plugins that post-process a reply:
/// TTL rewriting, shuffling, logging).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPos {
    pub start: u16,
    pub ttl_at: u16,
    pub end: u16,
    pub rtype: u16,
    pub section: Section,
}

/// Why a push did not write its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// The record did not fit: it and every later one are left out, TC will be set.
    Truncated,
    /// A section was pushed to after a later one.
    OutOfOrder,
    /// The name or record is malformed (over-long name, rdata over 65535 bytes).
    Malformed,
}

const MAX_COMPRESS: usize = 48;

/// A reply under construction, in a buffer reused from query to query.
pub struct Response {
    buf: Vec<u8>,
    /// Records may use up to this many bytes (the OPT record has room after it).
    limit: usize,
    counts: [u16; 3],
    section: Section,
    truncated: bool,
    /// OPT to append at `finish`: (DO bit, extended rcode high bits written later).
    edns: Option<bool>,
    /// The COOKIE option the OPT carries (client and server cookie), if the query had one.
    cookie: Option<[u8; cookie::REPLY_LEN]>,
    rcode: Rcode,
    records: Vec<RecordPos>,
    /// Offsets of label starts that later names may point to.
    compress: [u16; MAX_COMPRESS],
    /// The length of the (uncompressed) name at each of those offsets.
    compress_len: [u8; MAX_COMPRESS],
    /// The [`fingerprint`] of the name at each of those offsets, for the first
    /// `fingerprinted` ones: a name is compared byte by byte only with the targets
    /// whose fingerprint is its own. Computed when a name is first searched for (most
    /// small replies write only names in front of the question, and never search).
    compress_hash: [u32; MAX_COMPRESS],
    fingerprinted: usize,
    /// One bit per fingerprint (its low 8 bits): most names of a large answer have a
    /// first label nothing written has, and this says so without the scan.
    compress_bloom: [u64; 4],
    ncompress: usize,
    /// The length of the question name (wire form, root included; 0 without one).
    qname_len: usize,
    finished: bool,
    /// A plugin decided that nothing is sent (rate limiting).
    withheld: bool,
}

impl Default for Response {
    fn default() -> Self {
        Self::new()
    }
}

impl Response {
    /// A writer whose buffer already has room for the largest message.
    pub fn new() -> Response {
        Response {
            buf: Vec::with_capacity(u16::MAX as usize),
            limit: 0,
            counts: [0; 3],
            section: Section::Answer,
            truncated: false,
            edns: None,
            cookie: None,
            rcode: Rcode::NOERROR,
            records: Vec::with_capacity(64),
            compress: [0; MAX_COMPRESS],
            compress_len: [0; MAX_COMPRESS],
            compress_hash: [0; MAX_COMPRESS],
            fingerprinted: 0,
            compress_bloom: [0; 4],
            ncompress: 0,
            qname_len: 0,
            finished: false,
            withheld: false,
        }
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.counts = [0; 3];
        self.section = Section::Answer;
        self.truncated = false;
        self.edns = None;
        self.cookie = None;
        self.rcode = Rcode::NOERROR;
        self.records.clear();
        self.ncompress = 0;
        self.compress_bloom = [0; 4];
        self.fingerprinted = 0;
        self.qname_len = 0;
        self.finished = false;
        self.withheld = false;
    }

    /// Marks the reply as not to be sent: the client gets nothing (response rate
    /// limiting). The reply stays readable for the response hooks (log, metrics).
    pub fn withhold(&mut self) {
        self.withheld = true;
    }

    /// Whether [`Response::withhold`] was called since the reply was started.
    pub fn is_withheld(&self) -> bool {
        self.withheld
    }

    /// Starts a reply to `req`: same ID and opcode, QR set, RD and CD copied, the
    /// question copied as received, size limit from the client.
    pub fn start(&mut self, req: &Request<'_>, rcode: Rcode) {
        self.reset();
        self.buf.extend_from_slice(&req.id.to_be_bytes());
        self.buf.extend_from_slice(&req.flags.reply().0.to_be_bytes());
        self.buf.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        self.buf.extend_from_slice(req.question());
        self.edns = req.edns.map(|e| e.dnssec_ok);
        self.cookie = req.cookie.map(|c| c.reply);
        self.limit = req.max_size() - self.opt_len();
        self.set_rcode(rcode);
        self.qname_len = req.qname_end - QNAME_OFFSET;
        // The question's labels are the first compression targets.
        let mut at = QNAME_OFFSET;
        while self.buf[at] != 0 && self.ncompress < MAX_COMPRESS {
            self.remember(at, self.qname_len - (at - QNAME_OFFSET));
            at += 1 + self.buf[at] as usize;
        }
    }

    /// Starts a header-only error reply to a message that failed validation, echoing
    /// the question when it parsed (`question_end`).
    pub fn start_reject(&mut self, raw: &[u8], rcode: Rcode, question_end: Option<usize>) {
        self.reset();
        // (A message shorter than a header is dropped before it gets here.)
        let (id, flags) = Header::of(raw).map_or((0, Flags::default()), |h| (h.id(), h.flags()));
        self.buf.extend_from_slice(&id.to_be_bytes());
        self.buf.extend_from_slice(&flags.reply().0.to_be_bytes());
        let qd = u16::from(question_end.is_some());
        self.buf.extend_from_slice(&qd.to_be_bytes());
        self.buf.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        if let Some(end) = question_end {
            self.buf.extend_from_slice(&raw[HEADER_LEN..end]);
            self.qname_len = self.question_wire().len();
        }
        self.limit = wire::MIN_UDP_PAYLOAD as usize;
        self.set_rcode(rcode);
    }

    /// Sets the response code (extended codes go into the OPT record at `finish`).
    pub fn set_rcode(&mut self, rcode: Rcode) {
        self.rcode = rcode;
        self.header_mut().set_rcode(rcode);
    }

    pub fn rcode(&self) -> Rcode {
        self.rcode
    }

    /// Sets or clears the AA bit.
    pub fn set_aa(&mut self, on: bool) {
        self.set_flag(flag::AA, on);
    }

    /// Sets or clears a header flag bit.
    pub fn set_flag(&mut self, bit: u16, on: bool) {
        self.header_mut().set_flag(bit, on);
    }

    /// The header flag word as it stands.
    pub fn flags(&self) -> Flags {
        Header::of(&self.buf).expect("a started reply has a header").flags()
    }

    /// The header of the reply being written (started: it has one).
    fn header_mut(&mut self) -> HeaderMut<'_> {
        HeaderMut::of(&mut self.buf).expect("a started reply has a header")
    }

    /// Whether records were left out for size.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Records written so far, per section.
    pub fn count(&self, section: Section) -> u16 {
        self.counts[section as usize]
    }

    /// Where each written record lies.
    pub fn records(&self) -> &[RecordPos] {
        &self.records
    }

    /// The bytes written so far (the whole message once finished).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Mutable access to the finished message, for plugins that patch it in place
    /// (TTL rewriting). Lengths must not change.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Whether [`Self::finish`] has run.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Appends one record to `section`.
    pub fn push(&mut self, section: Section, rr: &Record<'_>) -> Result<(), PushError> {
        if section < self.section {
            return Err(PushError::OutOfOrder);
        }
        self.section = section;
        if self.truncated {
            return Err(PushError::Truncated);
        }
        let start = self.buf.len();
        let saved_compress = self.ncompress;
        let written = self.write_record(rr);
        if written.is_err() || self.buf.len() > self.limit {
            self.buf.truncate(start);
            self.ncompress = saved_compress;
            self.fingerprinted = self.fingerprinted.min(saved_compress);
            if written == Err(PushError::Malformed) {
                return Err(PushError::Malformed);
            }
            self.truncated = true;
            return Err(PushError::Truncated);
        }
        let ttl_at = written.unwrap_or(0);
        self.counts[section as usize] += 1;
        self.records.push(RecordPos {
            start: start as u16,
            ttl_at: ttl_at as u16,
            end: self.buf.len() as u16,
            rtype: rr.rtype,
            section,
        });
        Ok(())
    }

    /// Shorthand for [`Self::push`] to the answer section, ignoring truncation (it is
    /// recorded in the message).
    pub fn answer(&mut self, rr: Record<'_>) {
        let _ = self.push(Section::Answer, &rr);
    }

    /// Shorthand for the authority section.
    pub fn authority(&mut self, rr: Record<'_>) {
        let _ = self.push(Section::Authority, &rr);
    }

    /// Shorthand for the additional section.
    pub fn additional(&mut self, rr: Record<'_>) {
        let _ = self.push(Section::Additional, &rr);
    }

    /// Appends already-encoded records (from an upstream reply or the cache) to a
    /// section: `data` holds `n` records whose names are uncompressed or point only
    /// into the question. Truncates like [`Self::push`].
    pub fn push_encoded(&mut self, section: Section, data: &[u8]) -> Result<(), PushError> {
        let mut at = 0;
        while at < data.len() {
            let end = wire::skip_record(data, at).ok_or(PushError::Malformed)?;
            if section < self.section {
                return Err(PushError::OutOfOrder);
            }
            self.section = section;
            if self.truncated {
                return Err(PushError::Truncated);
            }
            if self.buf.len() + (end - at) > self.limit {
                self.truncated = true;
                return Err(PushError::Truncated);
            }
            let start = self.buf.len();
            self.buf.extend_from_slice(&data[at..end]);
            let name_end = wire::skip_name(data, at).ok_or(PushError::Malformed)?;
            let rtype = wire::get_u16(data, name_end).unwrap_or(0);
            self.counts[section as usize] += 1;
            self.records.push(RecordPos {
                start: start as u16,
                ttl_at: (start + name_end - at + 4) as u16,
                end: self.buf.len() as u16,
                rtype,
                section,
            });
            at = end;
        }
        Ok(())
    }

    /// Copies the record at `at` in message `msg` (an upstream reply) into `section`,
    /// decompressing its owner and the names inside rdata of the types RFC 3597 section 4
    /// lists, and re-compressing where RFC 3597 allows. Returns the offset after the
    /// record in `msg`.
    pub fn push_copied(&mut self, section: Section, msg: &[u8], at: usize) -> Result<usize, PushError> {
        let mut owner = [0u8; MAX_NAME_LEN];
        let (after, olen) = wire::read_name(msg, at, &mut owner).ok_or(PushError::Malformed)?;
        let rtype = wire::get_u16(msg, after).ok_or(PushError::Malformed)?;
        let class = wire::get_u16(msg, after + 2).ok_or(PushError::Malformed)?;
        let ttl = wire::get_u32(msg, after + 4).ok_or(PushError::Malformed)?;
        let rdlen = wire::get_u16(msg, after + 8).ok_or(PushError::Malformed)? as usize;
        let rd_start = after + 10;
        let rd_end = rd_start + rdlen;
        if rd_end > msg.len() {
            return Err(PushError::Malformed);
        }
        if section < self.section {
            return Err(PushError::OutOfOrder);
        }
        self.section = section;
        if self.truncated {
            return Err(PushError::Truncated);
        }
        let start = self.buf.len();
        let saved = self.ncompress;
        let result = self.copy_record(&owner[..olen], rtype, class, ttl, msg, rd_start, rd_end);
        if result.is_err() || self.buf.len() > self.limit {
            self.buf.truncate(start);
            self.ncompress = saved;
            self.fingerprinted = self.fingerprinted.min(saved);
            if let Err(PushError::Malformed) = result {
                return Err(PushError::Malformed);
            }
            self.truncated = true;
            return Err(PushError::Truncated);
        }
        self.counts[section as usize] += 1;
        self.records.push(RecordPos {
            start: start as u16,
            ttl_at: result.unwrap_or(0) as u16,
            end: self.buf.len() as u16,
            rtype,
            section,
        });
        Ok(rd_end)
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_record(
        &mut self,
        owner: &[u8],
        rtype: u16,
        class: u16,
        ttl: u32,
        msg: &[u8],
        rd_start: usize,
        rd_end: usize,
    ) -> Result<usize, PushError> {
        // An owner that is the question in another case is written as the client
        // spelled it: replies shared by coalesced queries (or read from a cache) come
        // back in each client's own spelling, as an upstream asked by each would send.
        if self.question_wire().eq_ignore_ascii_case(owner) {
            self.write_name(Name::QUESTION, true)?;
        } else {
            self.write_name(Name::wire(owner), true)?;
        }
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&class.to_be_bytes());
        let ttl_at = self.buf.len();
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        let rdlen_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        // (fixed bytes before the first name, names, compressible per RFC 3597)
        let layout: Option<(usize, usize, bool)> = match rtype {
            // NS MD MF CNAME MB MG MR PTR
            2 | 3 | 4 | 5 | 7 | 8 | 9 | 12 => Some((0, 1, true)),
            // SOA, MINFO
            6 | 14 => Some((0, 2, true)),
            // MX
            15 => Some((2, 1, true)),
            // RP, AFSDB, RT, KX, DNAME: decompress, never compress again
            17 => Some((0, 2, false)),
            18 | 21 | 36 => Some((2, 1, false)),
            39 => Some((0, 1, false)),
            // PX
            26 => Some((2, 2, false)),
            // SRV
            33 => Some((6, 1, false)),
            _ => None,
        };
        match layout {
            None => self.buf.extend_from_slice(&msg[rd_start..rd_end]),
            Some((fixed, names, compress)) => {
                let mut at = rd_start + fixed;
                if at > rd_end {
                    return Err(PushError::Malformed);
                }
                self.buf.extend_from_slice(&msg[rd_start..at]);
                for _ in 0..names {
                    let mut n = [0u8; MAX_NAME_LEN];
                    let (next, len) = wire::read_name(msg, at, &mut n).ok_or(PushError::Malformed)?;
                    if next > rd_end {
                        return Err(PushError::Malformed);
                    }
                    self.write_name(Name::wire(&n[..len]), compress)?;
                    at = next;
                }
                if at > rd_end {
                    return Err(PushError::Malformed);
                }
                self.buf.extend_from_slice(&msg[at..rd_end]);
            }
        }
        let rdlen = self.buf.len() - rdlen_at - 2;
        if rdlen > u16::MAX as usize || self.buf.len() > u16::MAX as usize {
            return Err(PushError::Truncated);
        }
        self.buf[rdlen_at..rdlen_at + 2].copy_from_slice(&(rdlen as u16).to_be_bytes());
        Ok(ttl_at)
    }

    /// Copies the records of an upstream reply's `sections` (answer, authority,
    /// additional), the OPT record excepted, after what is already written; stops at the
    /// first that does not fit (TC) or does not parse.
    pub fn copy_sections(&mut self, reply: &[u8], sections: &[Section]) -> Result<(), PushError> {
        let counts = Header::of(reply).ok_or(PushError::Malformed)?.counts();
        let mut at = HEADER_LEN;
        for _ in 0..counts[0] {
            at = wire::skip_name(reply, at).ok_or(PushError::Malformed)? + 4;
        }
        for (i, section) in [Section::Answer, Section::Authority, Section::Additional]
            .into_iter()
            .enumerate()
        {
            for _ in 0..counts[i + 1] {
                let name_end = wire::skip_name(reply, at).ok_or(PushError::Malformed)?;
                let skip = wire::get_u16(reply, name_end) == Some(rtype::OPT) || !sections.contains(&section);
                at = if skip {
                    wire::skip_record(reply, at).ok_or(PushError::Malformed)?
                } else {
                    self.push_copied(section, reply, at)?
                };
            }
        }
        Ok(())
    }

    /// The size of the OPT record `finish` appends (none without EDNS).
    fn opt_len(&self) -> usize {
        match (self.edns, &self.cookie) {
            (None, _) => 0,
            (Some(_), None) => OPT_RR_LEN,
            (Some(_), Some(c)) => OPT_RR_LEN + 4 + c.len(),
        }
    }

    /// Completes the message: patches the counts, sets TC if records were left out,
    /// and appends an OPT record when the query had one (RFC 6891 6.1.1: advertising our
    /// payload size, echoing DO, carrying the extended rcode bits).
    pub fn finish(&mut self) -> &[u8] {
        if !self.finished {
            let counts = self.counts;
            let mut header = self.header_mut();
            for (section, count) in counts.into_iter().enumerate() {
                header.set_count(1 + section, count);
            }
            if self.truncated {
                self.set_flag(flag::TC, true);
            }
            if let Some(dnssec_ok) = self.edns {
                let ext = (self.rcode.0 >> 4) as u8;
                let ttl: u32 = (u32::from(ext) << 24) | if dnssec_ok { 0x8000 } else { 0 };
                self.buf.push(0);
                self.buf.extend_from_slice(&rtype::OPT.to_be_bytes());
                self.buf.extend_from_slice(&ADVERTISED_UDP_PAYLOAD.to_be_bytes());
                self.buf.extend_from_slice(&ttl.to_be_bytes());
                match &self.cookie {
                    Some(c) => {
                        self.buf.extend_from_slice(&((4 + c.len()) as u16).to_be_bytes());
                        self.buf.extend_from_slice(&cookie::OPTION.to_be_bytes());
                        self.buf.extend_from_slice(&(c.len() as u16).to_be_bytes());
                        self.buf.extend_from_slice(c);
                    }
                    None => self.buf.extend_from_slice(&0u16.to_be_bytes()),
                }
                let ar = self.counts[2] + 1;
                self.header_mut().set_count(3, ar);
            }
            self.finished = true;
        }
        &self.buf
    }

    /// Writes a record; returns the offset of its TTL field.
    fn write_record(&mut self, rr: &Record<'_>) -> Result<usize, PushError> {
        self.write_name(rr.owner, true)?;
        self.buf.extend_from_slice(&rr.rtype.to_be_bytes());
        self.buf.extend_from_slice(&class::IN.to_be_bytes());
        let ttl_at = self.buf.len();
        self.buf.extend_from_slice(&rr.ttl.to_be_bytes());
        let rdlen_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        match rr.data {
            Rdata::A(ip) => self.buf.extend_from_slice(&ip.octets()),
            Rdata::Aaaa(ip) => self.buf.extend_from_slice(&ip.octets()),
            Rdata::Name(n) => self.write_name(n, true)?,
            Rdata::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                self.buf.extend_from_slice(&priority.to_be_bytes());
                self.buf.extend_from_slice(&weight.to_be_bytes());
                self.buf.extend_from_slice(&port.to_be_bytes());
                self.write_name(target, false)?;
            }
            Rdata::Soa {
                mname,
                rname,
                serial,
                refresh,
                retry,
                expire,
                minimum,
            } => {
                self.write_name(mname, true)?;
                self.write_name(rname, true)?;
                for v in [serial, refresh, retry, expire, minimum] {
                    self.buf.extend_from_slice(&v.to_be_bytes());
                }
            }
            Rdata::Txt(s) => {
                if s.is_empty() {
                    self.buf.push(0);
                }
                for chunk in s.chunks(255) {
                    self.buf.push(chunk.len() as u8);
                    self.buf.extend_from_slice(chunk);
                }
            }
            Rdata::Raw(b) => self.buf.extend_from_slice(b),
        }
        let rdlen = self.buf.len() - rdlen_at - 2;
        if rdlen > u16::MAX as usize || self.buf.len() > u16::MAX as usize {
            return Err(PushError::Truncated);
        }
        self.buf[rdlen_at..rdlen_at + 2].copy_from_slice(&(rdlen as u16).to_be_bytes());
        Ok(ttl_at)
    }

    /// Writes `name`, compressed if `compress` and a suffix was written before.
    /// The question name as written in the response (empty if there is none).
    fn question_wire(&self) -> &[u8] {
        let mut end = QNAME_OFFSET;
        while let Some(&len) = self.buf.get(end) {
            if len == 0 {
                return &self.buf[QNAME_OFFSET..=end];
            }
            end += 1 + len as usize;
        }
        &[]
    }

    fn write_name(&mut self, name: Name<'_>, compress: bool) -> Result<(), PushError> {
        // Fast path: labels in front of a suffix of the question (the owner of most
        // records, SOA names) end in a pointer to it, nothing to search. Names in two
        // parts (SRV glue) take the search below, which finds their SRV target.
        if let (true, Tail::Question(off), true) = (compress, name.tail, name.mid.is_empty()) {
            // The whole name may not exceed 255 bytes (whoami's `_udp.` in front of a
            // 255-byte question name did).
            if !name.head.is_empty()
                && name.head.len() + (QNAME_OFFSET + self.question_wire().len()).saturating_sub(off) > MAX_NAME_LEN
            {
                return Err(PushError::Malformed);
            }
            self.write_labels(name.head, Tail::Question(off))?;
            self.buf.extend_from_slice(&(0xC000 | off as u16).to_be_bytes());
            return Ok(());
        }
        // Otherwise materialise the full name and look for a suffix already written.
        let mut full = [0u8; MAX_NAME_LEN];
        let mut len = 0usize;
        let mut put = |bytes: &[u8]| -> Result<(), PushError> {
            if len + bytes.len() > MAX_NAME_LEN {
                return Err(PushError::Malformed);
            }
            full[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
            Ok(())
        };
        put(name.head)?;
        put(name.mid)?;
        match name.tail {
            Tail::Root => {}
            Tail::Wire(w) => put(w)?,
            Tail::Question(off) => {
                let mut end = off;
                while self.buf[end] != 0 {
                    end += 1 + self.buf[end] as usize;
                }
                put(&self.buf[off..=end])?;
            }
        }
        let full = &full[..len];
        if full.last() != Some(&0) || !labels_valid(full) {
            return Err(PushError::Malformed);
        }
        if !compress {
            // Written in full (RFC 2782 for SRV targets), but later names may point into it.
            let end = full.len() - 1;
            self.write_labels(&full[..end], Tail::Root)?;
            self.buf.push(0);
            return Ok(());
        }
        // The longest suffix already written.
        let mut at = 0;
        while full[at] != 0 {
            if let Some(ptr) = self.find_suffix(&full[at..]) {
                self.write_labels(&full[..at], Tail::Wire(&full[at..]))?;
                self.buf.extend_from_slice(&(0xC000 | ptr).to_be_bytes());
                return Ok(());
            }
            at += 1 + full[at] as usize;
        }
        self.write_labels(&full[..at], Tail::Root)?;
        self.buf.push(0);
        Ok(())
    }

    /// Writes labels (no root) and remembers each as a compression target (while the
    /// table has room), with the [`fingerprint`] of the name it starts: its labels, then
    /// `tail` (the rest of the name, as written after them).
    fn write_labels(&mut self, labels: &[u8], tail: Tail<'_>) -> Result<(), PushError> {
        let tail_len = match tail {
            Tail::Root => 1,
            Tail::Wire(w) => w.len(),
            Tail::Question(off) => self.qname_len.saturating_sub(off.saturating_sub(QNAME_OFFSET)),
        };
        let mut at = 0;
        while at < labels.len() {
            let l = labels[at] as usize;
            if l == 0 || l > 63 || at + 1 + l > labels.len() {
                return Err(PushError::Malformed);
            }
            let pos = self.buf.len();
            if pos < 0x3FFF && self.ncompress < MAX_COMPRESS {
                self.remember(pos, labels.len() - at + tail_len);
            }
            self.buf.extend_from_slice(&labels[at..at + 1 + l]);
            at += 1 + l;
        }
        Ok(())
    }

    /// Adds a compression target (the caller checked there is room): the offset of a
    /// label and the length of the name from there.
    fn remember(&mut self, pos: usize, name_len: usize) {
        self.compress[self.ncompress] = pos as u16;
        self.compress_len[self.ncompress] = name_len.min(MAX_NAME_LEN) as u8;
        self.ncompress += 1;
    }

    /// A written position whose name equals `suffix` (uncompressed, root included)
    /// exactly (case-sensitive). Only the targets with the suffix's fingerprint are read.
    fn find_suffix(&mut self, suffix: &[u8]) -> Option<u16> {
        // Targets added since the last search (a record that did not fit takes its
        // own back, and `fingerprinted` with them): their first labels are in the buffer.
        while self.fingerprinted < self.ncompress {
            let i = self.fingerprinted;
            let pos = self.compress[i] as usize;
            let first = &self.buf[pos..pos + 1 + self.buf[pos] as usize];
            let fp = fingerprint(first, self.compress_len[i] as usize);
            self.compress_hash[i] = fp;
            self.compress_bloom[(fp as usize >> 6) & 3] |= 1 << (fp & 63);
            self.fingerprinted += 1;
        }
        let first = &suffix[..1 + suffix[0] as usize];
        let fp = fingerprint(first, suffix.len());
        if self.compress_bloom[(fp as usize >> 6) & 3] & (1 << (fp & 63)) == 0 {
            return None;
        }
        (0..self.ncompress)
            .filter(|&i| self.compress_hash[i] == fp)
            .map(|i| self.compress[i])
            .find(|&pos| name_at_equals(&self.buf, pos as usize, suffix))
    }
}

/// What rules a compression target in or out before its bytes are compared: the hash
/// of a name's first label (length byte included, case-sensitive like the comparison)
/// and its total length. Equal names have equal fingerprints; the first label is what
/// tells the names of one answer apart (`h-1.svc...`, `h-2.svc...`).
fn fingerprint(first_label: &[u8], name_len: usize) -> u32 {
    const K: u32 = 0x2722_0A95;
    let mut h = (name_len as u32).wrapping_mul(0x9E37_79B9);
    let mut chunks = first_label.chunks_exact(4);
    for c in &mut chunks {
        h = (h.rotate_left(5) ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]])).wrapping_mul(K);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(5) ^ u32::from(b)).wrapping_mul(K);
    }
    h
}

/// What kind of reply a message is, as CoreDNS classifies it (`plugin/pkg/response`
/// `Typify`): the `log` plugin's classes and the cache's choice of store follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseType {
    NoError,
    NameError,
    NoData,
    Delegation,
    /// Transfers, NOTIFY and UPDATE.
    Meta,
    OtherError,
}

impl ResponseType {
    /// The log class: `success`, `denial` or `error`.
    pub fn class(self) -> &'static str {
        match self {
            ResponseType::NoError | ResponseType::Delegation => "success",
            ResponseType::NameError | ResponseType::NoData => "denial",
            ResponseType::Meta | ResponseType::OtherError => "error",
        }
    }
}

impl Response {
    /// Classifies the reply to a query of type `qtype`.
    pub fn response_type(&self, qtype: u16) -> ResponseType {
        if qtype == rtype::AXFR || qtype == rtype::IXFR {
            return ResponseType::Meta;
        }
        let rcode = self.rcode;
        if self.counts[0] > 0 && rcode == Rcode::NOERROR {
            return ResponseType::NoError;
        }
        let auth = self.records.iter().filter(|r| r.section == Section::Authority);
        let (mut soa, mut ns) = (false, 0);
        for r in auth {
            match r.rtype {
                rtype::SOA => soa = true,
                rtype::NS => ns += 1,
                _ => {}
            }
        }
        match rcode {
            Rcode::NOERROR if soa => ResponseType::NoData,
            Rcode::NXDOMAIN => ResponseType::NameError,
            Rcode::NOERROR if ns > 0 => ResponseType::Delegation,
            Rcode::NOERROR => ResponseType::NoError,
            _ => ResponseType::OtherError,
        }
    }
}

/// Whether the (possibly compressed) name at `pos` in `buf` equals uncompressed `name`.
fn name_at_equals(buf: &[u8], mut pos: usize, name: &[u8]) -> bool {
    let mut i = 0;
    let mut hops = 0;
    loop {
        let Some(&l) = buf.get(pos) else { return false };
        if l & 0xC0 == 0xC0 {
            hops += 1;
            if hops > 64 {
                return false;
            }
            let Some(p) = wire::get_u16(buf, pos) else {
                return false;
            };
            pos = (p & 0x3FFF) as usize;
            continue;
        }
        let l = l as usize;
        if name.get(i) != Some(&(l as u8)) {
            return false;
        }
        if l == 0 {
            return true;
        }
        if buf.get(pos + 1..pos + 1 + l) != name.get(i + 1..i + 1 + l) {
            return false;
        }
        i += 1 + l;
        pos += 1 + l;
    }
}

fn labels_valid(name: &[u8]) -> bool {
    let mut at = 0;
    while at < name.len() {
        let l = name[at] as usize;
        if l == 0 {
            return at + 1 == name.len();
        }
        if l > 63 {
            return false;
        }
        at += 1 + l;
    }
    false
}

// --- Reordering the records of a finished reply --------------------------------------
//
// Added for `loadbalance`; kept apart from the writer above, which it does not change:
// it only permutes what was written, keeping the bytes and the record positions in step.

impl Response {
    /// Puts records `first..first + order.len()` of [`Self::records`] (all of one
    /// section, in the order written) in the order `order`: `order[k]` is the index,
    /// relative to `first`, of the record that goes to place `k`. Their bytes move in
    /// the message and their [`RecordPos`] entries with them; counts and the message
    /// length do not change.
    ///
    /// Compression pointers are absolute offsets (RFC 1035 4.1.4): a record may move
    /// only if no pointer in the message leads into it. This checks every pointer on
    /// the way of every owner name and of the names inside the rdata of the types that
    /// carry them (RFC 3597 section 4); if one would lead into a record that changes
    /// place, or `order` is not a permutation, nothing changes and this returns
    /// `false`. `scratch` holds a copy of the records while they are rewritten; it is
    /// the caller's, so that once its capacity has grown this allocates nothing.
    pub fn reorder_records(&mut self, first: usize, order: &[u16], scratch: &mut Vec<u8>) -> bool {
        let n = order.len();
        let Some(range) = self.records.get(first..first + n) else {
            return false;
        };
        let Some(head) = range.first() else {
            return true;
        };
        let contiguous = range
            .windows(2)
            .all(|w| w[0].end == w[1].start && w[0].section == w[1].section);
        if !contiguous {
            return false;
        }
        let (region_start, region_end) = (head.start as usize, range[n - 1].end as usize);
        // The new position of record `first + j` goes to `records[base + j]`
        // (the vector's spare capacity, so no allocation once warm).
        let base = self.records.len();
        self.records.extend_from_within(first..first + n);
        const UNPLACED: u16 = u16::MAX;
        for p in &mut self.records[base..] {
            p.start = UNPLACED;
        }
        let mut at = region_start as u16;
        for &j in order {
            let j = j as usize;
            if j >= n || self.records[base + j].start != UNPLACED {
                self.records.truncate(base);
                return false;
            }
            let old = self.records[first + j];
            self.records[base + j] = RecordPos {
                start: at,
                ttl_at: old.ttl_at - old.start + at,
                end: at + (old.end - old.start),
                ..old
            };
            at += old.end - old.start;
        }
        // A pointer target is safe unless it lies in a record that changes place.
        let (old, new) = self.records.split_at(base);
        let moved = |target: usize| {
            if !(region_start..region_end).contains(&target) {
                return false;
            }
            let range = &old[first..first + n];
            let j = range.partition_point(|p| p.start as usize <= target) - 1;
            new[j].start != range[j].start
        };
        let safe = old.iter().all(|p| names_avoid(&self.buf, p, &moved).unwrap_or(false));
        if !safe {
            self.records.truncate(base);
            return false;
        }
        scratch.clear();
        scratch.extend_from_slice(&self.buf[region_start..region_end]);
        for j in 0..n {
            let (from, to) = (self.records[first + j], self.records[base + j]);
            let src = &scratch[from.start as usize - region_start..from.end as usize - region_start];
            self.buf[to.start as usize..to.end as usize].copy_from_slice(src);
        }
        for (k, &j) in order.iter().enumerate() {
            self.records[first + k] = self.records[base + j as usize];
        }
        self.records.truncate(base);
        true
    }
}

/// Whether no compression pointer met while reading the names of the record at `p`
/// (its owner, and the names in its rdata) leads to an offset `moved` says is taken.
/// `None` when the record is malformed.
fn names_avoid(buf: &[u8], p: &RecordPos, moved: &impl Fn(usize) -> bool) -> Option<bool> {
    if !name_avoids(buf, p.start as usize, moved)? {
        return Some(false);
    }
    // RFC 3597 section 4: the types whose rdata holds names that may be compressed
    // (and those whose names other implementations compress anyway): bytes before the
    // first name, and how many names follow.
    let (fixed, names) = match p.rtype {
        rtype::NS | 3 | 4 | rtype::CNAME | 7 | 8 | 9 | rtype::PTR | 39 => (0, 1),
        rtype::SOA | 14 | 17 => (0, 2),
        rtype::MX | 18 | 21 | 36 => (2, 1),
        26 => (2, 2),
        rtype::SRV => (6, 1),
        _ => return Some(true),
    };
    let mut at = p.ttl_at as usize + 6 + fixed;
    for _ in 0..names {
        if at >= p.end as usize {
            return None;
        }
        if !name_avoids(buf, at, moved)? {
            return Some(false);
        }
        at = wire::skip_name(buf, at)?;
    }
    Some(true)
}

/// Follows the name at `at` through its pointers; false as soon as one leads to an
/// offset `moved` says is taken. `None` for a malformed name or a pointer loop.
fn name_avoids(buf: &[u8], mut at: usize, moved: &impl Fn(usize) -> bool) -> Option<bool> {
    let mut steps = 0;
    loop {
        steps += 1;
        if steps > 255 {
            return None;
        }
        let l = *buf.get(at)? as usize;
        match l & 0xC0 {
            0x00 if l == 0 => return Some(true),
            0x00 => at += 1 + l,
            0xC0 => {
                let target = (wire::get_u16(buf, at)? & 0x3FFF) as usize;
                if moved(target) {
                    return Some(false);
                }
                at = target;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::request::Transport;

    fn q(name: &[u8], udp: Option<u16>) -> Vec<u8> {
        let mut m = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(udp.is_some())];
        m.extend_from_slice(name);
        m.extend_from_slice(&[0, 1, 0, 1]);
        if let Some(size) = udp {
            m.extend_from_slice(&[0, 0, 41]);
            m.extend_from_slice(&size.to_be_bytes());
            m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        m
    }

    fn req(raw: &[u8]) -> Request<'_> {
        let a = "127.0.0.1:1".parse().unwrap();
        Request::parse(raw, Transport::Udp, a, a).ok().unwrap()
    }

    #[test]
    fn answer_points_at_question_and_adds_opt() {
        let raw = q(b"\x03Web\x05local\x00", Some(1232));
        let r = req(&raw);
        let mut resp = Response::new();
        resp.start(&r, Rcode::NOERROR);
        resp.set_aa(true);
        resp.answer(Record::at_question(rtype::A, 5, Rdata::A(Ipv4Addr::new(10, 0, 0, 1))));
        let out = resp.finish().to_vec();
        let msg = domain::base::Message::from_octets(out.as_slice()).unwrap();
        assert!(msg.header().qr() && msg.header().aa() && msg.header().rd());
        assert_eq!(msg.header_counts().ancount(), 1);
        assert_eq!(msg.header_counts().arcount(), 1);
        assert_eq!(&out[27..29], &[0xC0, 0x0C]);
        let opt = msg.opt().unwrap();
        assert_eq!(opt.udp_payload_size(), ADVERTISED_UDP_PAYLOAD);
    }

    #[test]
    fn truncation_keeps_whole_records_and_sets_tc() {
        let raw = q(b"\x01a\x00", None);
        let r = req(&raw);
        let mut resp = Response::new();
        resp.start(&r, Rcode::NOERROR);
        for i in 0..100u8 {
            resp.answer(Record::at_question(rtype::A, 5, Rdata::A(Ipv4Addr::new(10, 0, 0, i))));
        }
        let out = resp.finish();
        assert!(out.len() <= 512);
        let msg = domain::base::Message::from_octets(out).unwrap();
        assert!(msg.header().tc());
        // 12 header + 7 question, 16 bytes per record: (512 - 19) / 16 = 30.
        assert_eq!(msg.header_counts().ancount(), 30);
        assert_eq!(msg.answer().unwrap().count(), 30);
    }

    #[test]
    fn compresses_rdata_names_and_keeps_case() {
        let raw = q(b"\x03Web\x07Cluster\x05local\x00", Some(4096));
        let r = req(&raw);
        let zone_off = r.qname_label_offset(1);
        let mut resp = Response::new();
        resp.start(&r, Rcode::NXDOMAIN);
        resp.authority(Record {
            owner: Name::under_question(&[], zone_off),
            rtype: rtype::SOA,
            ttl: 5,
            data: Rdata::Soa {
                mname: Name::under_question(b"\x02ns\x03dns", zone_off),
                rname: Name::under_question(b"\x0ahostmaster", zone_off),
                serial: 1,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: 5,
            },
        });
        resp.additional(Record {
            owner: Name::wire(b"\x02ns\x03dns\x07Cluster\x05local\x00"),
            rtype: rtype::A,
            ttl: 5,
            data: Rdata::A(Ipv4Addr::LOCALHOST),
        });
        let out = resp.finish().to_vec();
        let msg = domain::base::Message::from_octets(out.as_slice()).unwrap();
        let text = msg.display_dig_style().to_string();
        assert!(
            text.contains("Cluster.local. 5 IN SOA ns.dns.Cluster.local. hostmaster.Cluster.local."),
            "{text}"
        );
        assert!(text.contains("ns.dns.Cluster.local. 5 IN A 127.0.0.1"), "{text}");
        // The additional owner is a single pointer to the SOA's mname.
        let rec = resp.records()[1];
        assert_eq!(rec.ttl_at - rec.start, 2 + 4);
    }

    #[test]
    fn compression_finds_written_suffixes_by_hash_and_case() {
        let raw = q(b"\x01x\x05Local\x00", Some(4096));
        let r = req(&raw);
        let mut resp = Response::new();
        resp.start(&r, Rcode::NOERROR);
        let mut want = Vec::new();
        for i in 0..40 {
            // Alternate the spelling of a shared suffix: only an exact match may be
            // pointed to.
            let zone: &[u8] = if i % 2 == 0 {
                b"\x03svc\x05local\x00"
            } else {
                b"\x03SVC\x05local\x00"
            };
            let head = format!("h{i}");
            let mut name = vec![head.len() as u8];
            name.extend_from_slice(head.as_bytes());
            let target = Name {
                head: &name,
                mid: b"\x02ns",
                tail: Tail::Wire(zone),
            };
            resp.answer(Record::at_question(rtype::PTR, 5, Rdata::Name(target)));
            want.push(format!("h{i}.ns.{}.local.", if i % 2 == 0 { "svc" } else { "SVC" }));
        }
        let out = resp.finish().to_vec();
        let msg = domain::base::Message::from_octets(out.as_slice()).unwrap();
        let got: Vec<String> = msg
            .answer()
            .unwrap()
            .limit_to::<domain::rdata::Ptr<_>>()
            .map(|r| r.unwrap().data().ptrdname().to_string() + ".")
            .collect();
        assert_eq!(got, want);
        // Each name after the first two of its spelling is its own label and a pointer:
        // 12 (owner pointer, type, class, TTL, length) + 4 + 2.
        let last = resp.records()[39];
        assert_eq!(last.end - last.start, 12 + 4 + 2);
    }

    #[test]
    fn srv_target_is_not_compressed() {
        let raw = q(b"\x01x\x05local\x00", None);
        let r = req(&raw);
        let mut resp = Response::new();
        resp.start(&r, Rcode::NOERROR);
        resp.answer(Record::at_question(
            rtype::SRV,
            5,
            Rdata::Srv {
                priority: 0,
                weight: 100,
                port: 80,
                target: Name::under_question(b"\x01y", r.qname_label_offset(1)),
            },
        ));
        let out = resp.finish();
        assert!(out.ends_with(b"\x01y\x05local\x00"));
    }
}
