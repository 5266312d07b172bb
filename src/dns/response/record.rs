//! The records a plugin writes: names assembled from pieces (labels in front of the
//! question, a service's labels, a zone), record data in the forms the plugins need, and
//! the push that writes one record or leaves it out when it does not fit.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::Response;
use crate::dns::wire::{QNAME_OFFSET, class, rtype};

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

impl Response {
    /// Appends one record to `section`.
    pub fn push(&mut self, section: Section, rr: &Record<'_>) -> Result<(), PushError> {
        self.push_with(section, rr.rtype, |r| r.write_record(rr, class::IN))
    }

    /// Appends one record of class `class` (CHAOS records: `chaos`) to `section`.
    pub fn push_in_class(&mut self, section: Section, rr: &Record<'_>, class: u16) -> Result<(), PushError> {
        self.push_with(section, rr.rtype, |r| r.write_record(rr, class))
    }

    /// Appends one record to a message that is one of several (a zone transfer, RFC
    /// 5936 2.2): a record that does not fit is taken back and the message is left
    /// whole, without TC, so that the record can open the next message.
    /// `Err(Truncated)`: it did not fit.
    pub fn push_or_full(&mut self, section: Section, rr: &Record<'_>) -> Result<(), PushError> {
        let r = self.push(section, rr);
        if r == Err(PushError::Truncated) {
            self.truncated = false;
        }
        r
    }

    /// [`Self::push_copied`] for a message that is one of several, as
    /// [`Self::push_or_full`]: a record that does not fit is taken back without TC.
    pub fn copy_or_full(&mut self, section: Section, msg: &[u8], at: usize) -> Result<usize, PushError> {
        let r = self.push_copied(section, msg, at);
        if r == Err(PushError::Truncated) {
            self.truncated = false;
        }
        r
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

    /// Writes a record; returns the offset of its TTL field.
    fn write_record(&mut self, rr: &Record<'_>, class: u16) -> Result<usize, PushError> {
        self.write_name(rr.owner, true)?;
        // Type, class, TTL and a zero RDLENGTH (patched below) in one copy.
        let mut fixed = [0u8; 10];
        fixed[0..2].copy_from_slice(&rr.rtype.to_be_bytes());
        fixed[2..4].copy_from_slice(&class.to_be_bytes());
        fixed[4..8].copy_from_slice(&rr.ttl.to_be_bytes());
        let ttl_at = self.buf.len() + 4;
        let rdlen_at = ttl_at + 4;
        self.buf.extend_from_slice(&fixed);
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
}
