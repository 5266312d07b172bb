//! Records encoded once, before the queries that send them (a zone's apex NS set, its
//! SOA), written into a reply by one copy and a few patched pointers instead of a push
//! each; and [`Response::push_raw`], one record whose owner is a pointer and whose data
//! has no name, written without the general writer's name handling.
//!
//! ```text
//!   prepared:  [owner ··][type class ttl rdlen][labels··][suffix ··] [owner ··][...]
//!   written:    C0 <owner>                      ns1       C0 <suffix>  ...
//! ```
//!
//! Each record's owner is a compression pointer, and each name in its data is its own
//! labels then a pointer: both point into the question, at offsets known only per
//! query. [`Response::push_prepared`] writes exactly the bytes, compression targets and
//! record positions that pushing the same records one by one (owners as
//! `Name::under_question(&[], owner)`, data names as `Name::under_question(labels,
//! suffix)`) writes; where that could differ (a reply carrying a client's question in
//! place of the query's, a set that does not fit, a name that would be too long) it
//! writes nothing and says so, and the caller pushes them one by one.

use super::{RecordPos, Response, Section};
use crate::dns::wire::{MAX_NAME_LEN, QNAME_OFFSET, class};

/// Records with their owners and names' suffixes left as holes (module doc).
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    bytes: Vec<u8>,
    /// Per record: where it starts and ends in `bytes`, and its type.
    records: Vec<(u16, u16, u16)>,
    /// Where a data name's suffix pointer goes.
    holes: Vec<u16>,
    /// The labels of data names, each a compression target once written: where it
    /// starts, and the length of the name from there to the suffix.
    labels: Vec<(u16, u8)>,
    /// The longest data name's labels.
    longest: usize,
}

/// A piece of a prepared record's data.
#[derive(Clone, Copy, Debug)]
pub enum Piece<'a> {
    /// Bytes written as they are.
    Bytes(&'a [u8]),
    /// A name: these labels (wire form, no root label), then a pointer to the suffix.
    Name(&'a [u8]),
}

impl Prepared {
    pub fn new() -> Prepared {
        Prepared::default()
    }

    /// Adds a record of class IN with `data` in pieces. A record with a malformed name
    /// or more than 16 KiB in all is not added: `false`.
    pub fn add(&mut self, rtype: u16, ttl: u32, data: &[Piece<'_>]) -> bool {
        let start = self.bytes.len();
        let (holes, labels) = (self.holes.len(), self.labels.len());
        let undo = |p: &mut Prepared| {
            p.bytes.truncate(start);
            p.holes.truncate(holes);
            p.labels.truncate(labels);
            false
        };
        self.bytes.extend_from_slice(&[0xC0, 0]);
        self.bytes.extend_from_slice(&rtype.to_be_bytes());
        self.bytes.extend_from_slice(&class::IN.to_be_bytes());
        self.bytes.extend_from_slice(&ttl.to_be_bytes());
        self.bytes.extend_from_slice(&[0, 0]);
        for piece in data {
            match *piece {
                Piece::Bytes(b) => self.bytes.extend_from_slice(b),
                Piece::Name(l) => {
                    let mut at = 0;
                    while at < l.len() {
                        let n = l[at] as usize;
                        if n == 0 || n > 63 || at + 1 + n > l.len() {
                            return undo(self);
                        }
                        self.labels.push(((self.bytes.len() + at) as u16, (l.len() - at) as u8));
                        at += 1 + n;
                    }
                    if l.len() >= MAX_NAME_LEN {
                        return undo(self);
                    }
                    self.longest = self.longest.max(l.len());
                    self.bytes.extend_from_slice(l);
                    self.holes.push(self.bytes.len() as u16);
                    self.bytes.extend_from_slice(&[0xC0, 0]);
                }
            }
        }
        let rdlen = self.bytes.len() - start - 12;
        if self.bytes.len() > 0x3FFF {
            return undo(self);
        }
        self.bytes[start + 10..start + 12].copy_from_slice(&(rdlen as u16).to_be_bytes());
        self.records.push((start as u16, self.bytes.len() as u16, rtype));
        true
    }

    /// Records prepared.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The heap it holds, in bytes.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.records.capacity() * 6 + self.holes.capacity() * 2 + self.labels.capacity() * 4
    }
}

impl Response {
    /// Writes the records of `p` into `section`, each owner a pointer to the question
    /// from offset `owner` on and each data name's labels followed by a pointer to the
    /// question from `suffix` on (both raw-message offsets of labels of the question).
    /// `false`: nothing was written, because pushing them one by one may write
    /// something else (module doc); the caller does that.
    #[inline]
    pub fn push_prepared(&mut self, section: Section, p: &Prepared, owner: usize, suffix: usize) -> bool {
        let end = QNAME_OFFSET + self.qname_len;
        let start = self.buf.len();
        // The name a data name ends in: the question from `suffix` on.
        let tail_len = end.wrapping_sub(suffix);
        if self.echo
            || self.truncated
            || section < self.section
            || owner >= end
            || suffix >= end
            || (p.longest > 0 && p.longest + tail_len > MAX_NAME_LEN)
            || start + p.bytes.len() > self.limit
            || start + p.bytes.len() >= 0x3FFF
        {
            return false;
        }
        self.section = section;
        self.buf.extend_from_slice(&p.bytes);
        let out = &mut self.buf[start..];
        let owner = (0xC000 | owner as u16).to_be_bytes();
        for &(at, _, _) in &p.records {
            out[at as usize..at as usize + 2].copy_from_slice(&owner);
        }
        let suffix = (0xC000 | suffix as u16).to_be_bytes();
        for &at in &p.holes {
            out[at as usize..at as usize + 2].copy_from_slice(&suffix);
        }
        for &(at, len) in &p.labels {
            self.targets.remember(start + at as usize, len as usize + tail_len);
        }
        self.records.extend(p.records.iter().map(|&(at, to, rtype)| RecordPos {
            start: (start + at as usize) as u16,
            ttl_at: (start + at as usize + 6) as u16,
            end: (start + to as usize) as u16,
            rtype,
            section,
        }));
        self.counts[section as usize] += p.records.len() as u16;
        true
    }

    /// Writes one record of class IN owned by the question from offset `owner` on (a
    /// pointer there), its data `rdata` as it is, as pushing it with
    /// `Name::under_question(&[], owner)` and `Rdata::Raw(rdata)` does. `false`:
    /// nothing was written (as [`Self::push_prepared`]); the caller pushes it.
    #[inline]
    pub fn push_raw(&mut self, section: Section, owner: usize, rtype: u16, ttl: u32, rdata: &[u8]) -> bool {
        let start = self.buf.len();
        let end = start + 12 + rdata.len();
        if self.echo
            || self.truncated
            || section < self.section
            || owner >= QNAME_OFFSET + self.qname_len
            || end > self.limit
            || end > u16::MAX as usize
        {
            return false;
        }
        self.section = section;
        let mut fixed = [0u8; 12];
        fixed[0..2].copy_from_slice(&(0xC000 | owner as u16).to_be_bytes());
        fixed[2..4].copy_from_slice(&rtype.to_be_bytes());
        fixed[4..6].copy_from_slice(&class::IN.to_be_bytes());
        fixed[6..10].copy_from_slice(&ttl.to_be_bytes());
        fixed[10..12].copy_from_slice(&(rdata.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(&fixed);
        self.buf.extend_from_slice(rdata);
        self.records.push(RecordPos {
            start: start as u16,
            ttl_at: (start + 6) as u16,
            end: end as u16,
            rtype,
            section,
        });
        self.counts[section as usize] += 1;
        true
    }
}
