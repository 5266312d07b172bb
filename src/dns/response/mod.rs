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
//!
//! ```text
//!   mod.rs       a reply's life: start (header, question, size limit), the header's
//!                setters, finish (counts, TC, the OPT record)
//!   record.rs    what plugins write: names in pieces, record data, push
//!   copy.rs      records that come encoded: an upstream's reply, the cache's store
//!   finished.rs  a finished reply cut down or given an EDNS option (minimal, nsid)
//!   prepared.rs  records encoded ahead, written by a copy and patched pointers (file)
//!   compress.rs  name compression: the targets, their fingerprints, the suffix search
//!   reorder.rs   permuting the records of a finished reply (loadbalance)
//!   classify.rs  CoreDNS's kinds of reply (the log's classes, the cache's stores)
//! ```

mod classify;
mod compress;
mod copy;
mod finished;
mod prepared;
mod question;
mod record;
mod reorder;
#[cfg(test)]
mod tests;

pub use classify::ResponseType;
pub use prepared::{Piece, Prepared};
pub use record::{Name, PushError, Rdata, Record, RecordPos, Section, Tail};

use super::Rcode;
use super::cookie;
use super::header::{Flags, Header, HeaderMut};
use super::request::Request;
use super::wire::{self, ADVERTISED_UDP_PAYLOAD, HEADER_LEN, OPT_RR_LEN, QNAME_OFFSET, flag, rtype};
use compress::Targets;

/// The EDNS option code of an Extended DNS Error (RFC 8914 2).
const EDE_OPTION: u16 = 15;

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
    /// The name compression targets: the question's labels and those written since.
    targets: Targets,
    /// The length of the question name (wire form, root included; 0 without one).
    qname_len: usize,
    finished: bool,
    /// A plugin decided that nothing is sent (rate limiting).
    withheld: bool,
    /// The Extended DNS Error (RFC 8914) the OPT record carries: its info code, and its
    /// extra text in `ede_text` (a buffer kept from reply to reply).
    ede: Option<u16>,
    ede_text: Vec<u8>,
    /// Bytes of options added to the OPT record after `finish` ([`Response::add_option`]).
    opt_extra: usize,
    /// Whether the record that did not fit was an answer (some answers are missing),
    /// rather than a record of a later section.
    answers_cut: bool,
    /// Whether TC was set through [`Response::set_flag`] (an upstream's TC relayed),
    /// rather than by `finish` for records left out here.
    tc_set_by_hand: bool,
    /// The reply was started for a rewritten query with the client's question in place
    /// of the query's own ([`Request::echo`]); `echo_name` holds the query's name, which
    /// the records are about. See question.rs.
    echo: bool,
    /// A name was written that only the query's own question can carry (longer than
    /// 255 bytes in front of the client's): the reply cannot stand as it is.
    echo_spoiled: bool,
    echo_len: u8,
    echo_name: [u8; wire::MAX_NAME_LEN],
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
            targets: Targets::new(),
            qname_len: 0,
            finished: false,
            withheld: false,
            ede: None,
            ede_text: Vec::new(),
            opt_extra: 0,
            answers_cut: false,
            tc_set_by_hand: false,
            echo: false,
            echo_spoiled: false,
            echo_len: 0,
            echo_name: [0; wire::MAX_NAME_LEN],
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
        self.targets.clear();
        self.qname_len = 0;
        self.finished = false;
        self.withheld = false;
        self.ede = None;
        self.ede_text.clear();
        self.opt_extra = 0;
        self.answers_cut = false;
        self.tc_set_by_hand = false;
        self.echo = false;
        self.echo_spoiled = false;
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
        let question = req.echo.unwrap_or_else(|| req.question());
        self.buf.extend_from_slice(question);
        self.edns = req.edns.map(|e| e.dnssec_ok);
        self.cookie = req.cookie.map(|c| c.reply);
        self.limit = req.max_size() - self.opt_len();
        self.set_rcode(rcode);
        self.qname_len = question.len() - 4;
        if req.echo.is_some() {
            // The client's question, the query's name aside (question.rs): no
            // compression target in the question, so that only a name written as the
            // question points to it.
            let name = req.qname_raw();
            self.echo_name[..name.len()].copy_from_slice(name);
            self.echo_len = name.len() as u8;
            self.echo = true;
            return;
        }
        // The question's labels are the first compression targets.
        let mut at = QNAME_OFFSET;
        while self.buf[at] != 0 && !self.targets.is_full() {
            self.targets.remember(at, self.qname_len - (at - QNAME_OFFSET));
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

    /// Lowers the size the reply may reach to `max` bytes, its OPT record included (a
    /// record past it is left out as one past the client's size is): a zone transfer
    /// writes messages smaller than TCP allows, so that the worker writing them comes
    /// back to its other clients sooner.
    pub fn limit_size(&mut self, max: usize) {
        self.limit = self.limit.min(max.saturating_sub(self.opt_len()));
    }

    /// Sets the response code (extended codes go into the OPT record at `finish`).
    pub fn set_rcode(&mut self, rcode: Rcode) {
        self.rcode = rcode;
        self.header_mut().set_rcode(rcode);
    }

    pub fn rcode(&self) -> Rcode {
        self.rcode
    }

    /// Adds an Extended DNS Error option (RFC 8914: code 15, info code, extra text) to
    /// the reply's OPT record. Only a reply to a query with EDNS has an OPT record
    /// (RFC 6891 7), so without one nothing is added; returns whether it was. Call it
    /// before pushing records: the room it takes comes off the records' limit. The
    /// text is cut at [`Self::MAX_EDE_TEXT`] bytes.
    pub fn set_ede(&mut self, code: u16, text: &str) -> bool {
        if self.edns.is_none() || self.finished {
            return false;
        }
        let before = self.opt_len();
        let text = &text.as_bytes()[..text.len().min(Self::MAX_EDE_TEXT)];
        self.ede = Some(code);
        self.ede_text.clear();
        self.ede_text.extend_from_slice(text);
        let grown = self.opt_len() - before;
        self.limit = self.limit.saturating_sub(grown);
        true
    }

    /// The longest EDE extra text a reply carries.
    pub const MAX_EDE_TEXT: usize = 512;

    /// Sets or clears the AA bit.
    pub fn set_aa(&mut self, on: bool) {
        self.set_flag(flag::AA, on);
    }

    /// Sets or clears a header flag bit.
    pub fn set_flag(&mut self, bit: u16, on: bool) {
        if bit == flag::TC {
            self.tc_set_by_hand = on;
        }
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

    /// Writes one record into `section` with `write` (which returns the offset of the
    /// record's TTL field), or leaves it out: a section before the current one is
    /// refused; a record that is malformed, or that does not fit the client's size, is
    /// taken back whole (its bytes and its compression targets), and one that does not
    /// fit sets TC and ends the reply's records.
    #[inline]
    fn push_with(
        &mut self,
        section: Section,
        rtype: u16,
        write: impl FnOnce(&mut Response) -> Result<usize, PushError>,
    ) -> Result<(), PushError> {
        if section < self.section {
            return Err(PushError::OutOfOrder);
        }
        self.section = section;
        if self.truncated {
            return Err(PushError::Truncated);
        }
        let start = self.buf.len();
        let mark = self.targets.len();
        let written = write(self);
        if written.is_err() || self.buf.len() > self.limit {
            self.buf.truncate(start);
            self.targets.truncate(mark);
            if written == Err(PushError::Malformed) {
                return Err(PushError::Malformed);
            }
            self.truncated = true;
            self.answers_cut = section == Section::Answer;
            return Err(PushError::Truncated);
        }
        self.counts[section as usize] += 1;
        self.records.push(RecordPos {
            start: start as u16,
            ttl_at: written.unwrap_or(0) as u16,
            end: self.buf.len() as u16,
            rtype,
            section,
        });
        Ok(())
    }

    /// The size of the OPT record `finish` appends (none without EDNS).
    fn opt_len(&self) -> usize {
        let ede = self.ede.map_or(0, |_| 4 + 2 + self.ede_text.len());
        match (self.edns, &self.cookie) {
            (None, _) => 0,
            (Some(_), None) => OPT_RR_LEN + ede + self.opt_extra,
            (Some(_), Some(c)) => OPT_RR_LEN + 4 + c.len() + ede + self.opt_extra,
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
                self.header_mut().set_flag(flag::TC, true);
            }
            if let Some(dnssec_ok) = self.edns {
                let ext = (self.rcode.0 >> 4) as u8;
                let ttl: u32 = (u32::from(ext) << 24) | if dnssec_ok { 0x8000 } else { 0 };
                self.buf.push(0);
                self.buf.extend_from_slice(&rtype::OPT.to_be_bytes());
                self.buf.extend_from_slice(&ADVERTISED_UDP_PAYLOAD.to_be_bytes());
                self.buf.extend_from_slice(&ttl.to_be_bytes());
                let rdlen = self.opt_len() - OPT_RR_LEN;
                self.buf.extend_from_slice(&(rdlen as u16).to_be_bytes());
                if let Some(c) = &self.cookie {
                    self.buf.extend_from_slice(&cookie::OPTION.to_be_bytes());
                    self.buf.extend_from_slice(&(c.len() as u16).to_be_bytes());
                    self.buf.extend_from_slice(c);
                }
                if let Some(code) = self.ede {
                    // RFC 8914 2: option code 15, the info code, then the extra text.
                    self.buf.extend_from_slice(&EDE_OPTION.to_be_bytes());
                    self.buf
                        .extend_from_slice(&((2 + self.ede_text.len()) as u16).to_be_bytes());
                    self.buf.extend_from_slice(&code.to_be_bytes());
                    self.buf.extend_from_slice(&self.ede_text);
                }
                let ar = self.counts[2] + 1;
                self.header_mut().set_count(3, ar);
            }
            self.finished = true;
        }
        &self.buf
    }
}
