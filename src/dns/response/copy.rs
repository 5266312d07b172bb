//! Records that arrive encoded: from an upstream reply (copied name by name, so that
//! its compression pointers are re-made against this reply) or from the cache (written
//! as stored, their names uncompressed or pointing only into the question).

use super::{Name, PushError, RecordPos, Response, Section};
use crate::dns::header::Header;
use crate::dns::wire::{self, HEADER_LEN, MAX_NAME_LEN, rtype};

impl Response {
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
                self.answers_cut = section == Section::Answer;
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

    /// Appends one record given in parts: `owner` uncompressed (root label included),
    /// `head` its type, class and TTL as on the wire, `rdata` with no name to compress.
    /// Writes what [`Self::push_encoded`] writes for the record they make, without
    /// reading it back (a plugin that encoded the parts itself: template).
    pub fn push_parts(
        &mut self,
        section: Section,
        owner: &[u8],
        head: &[u8; 8],
        rdata: &[u8],
    ) -> Result<(), PushError> {
        if rdata.len() > usize::from(u16::MAX) {
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
        if start + owner.len() + 10 + rdata.len() > self.limit {
            self.truncated = true;
            self.answers_cut = section == Section::Answer;
            return Err(PushError::Truncated);
        }
        self.buf.extend_from_slice(owner);
        self.buf.extend_from_slice(head);
        self.buf.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(rdata);
        self.counts[section as usize] += 1;
        self.records.push(RecordPos {
            start: start as u16,
            ttl_at: (start + owner.len() + 4) as u16,
            end: self.buf.len() as u16,
            rtype: u16::from_be_bytes([head[0], head[1]]),
            section,
        });
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
        self.push_with(section, rtype, |r| {
            r.copy_record(&owner[..olen], rtype, class, ttl, msg, rd_start, rd_end)
        })?;
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
        // Where the names lie (RFC 3597 section 4), and whether they may be compressed
        // again: only in the RFC 1035 types (NS MD MF CNAME SOA MB MG MR PTR MINFO MX);
        // the later ones (RP AFSDB RT KX DNAME PX SRV) are decompressed and written in
        // full.
        let layout =
            wire::rdata_names(rtype).map(|(fixed, names)| (fixed, names, matches!(rtype, 2..=9 | 12 | 14 | 15)));
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
}
