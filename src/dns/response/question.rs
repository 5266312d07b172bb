//! Putting another question into a finished reply, in place: what `rewrite` does to
//! give the client its own question back without writing the reply again.
//!
//! A reply's names are compressed against the question (RFC 1035 4.1.4), so a record
//! owned by the question name is a pointer to offset 12, and a name below it is its own
//! labels and that pointer. Replacing the question name therefore renames all of them
//! at once, which is exactly what `rewrite`'s `answer auto` asks for; pointers past the
//! question only move by the difference in length.

use super::Response;
use super::record::RecordPos;
use crate::dns::wire::{self, MAX_NAME_LEN, QNAME_OFFSET};

/// Pointers followed in one name before it is given up on (a writer's names have a
/// handful; the bound keeps the walk linear).
const MAX_HOPS: usize = 64;

/// What a name of the reply is, as far as the question goes.
enum Refers {
    /// Its last pointer is to the question name's start: it is renamed with it.
    Question,
    /// It does not touch the question name.
    Elsewhere,
}

impl Response {
    /// Puts `question` (a name, uncompressed, then type and class) in place of the
    /// question of this finished reply. Every name compressed to the whole question name
    /// takes the new name; `unrelated` is called with every other name of the records
    /// (uncompressed wire form) and returning `false` from it refuses the change.
    ///
    /// Returns `false` and leaves the reply as it was when: the reply is not finished,
    /// has no single question, a name points into the question name past its first
    /// label (a suffix of the old name, which the new one need not have), the reply
    /// would outgrow the client's size, or `unrelated` refuses. Allocates nothing.
    pub fn replace_question(&mut self, question: &[u8], mut unrelated: impl FnMut(&[u8]) -> bool) -> bool {
        if !self.finished || self.buf.get(4..6) != Some(&[0, 1]) || question.len() < 5 {
            return false;
        }
        let old_name_end = QNAME_OFFSET + self.qname_len;
        let old_end = old_name_end + 4;
        let new_name_len = question.len() - 4;
        if old_end > self.buf.len() || new_name_len > MAX_NAME_LEN {
            return false;
        }
        let delta = question.len() as isize - (old_end - QNAME_OFFSET) as isize;
        let new_len = self.buf.len() as isize + delta;
        if new_len as usize > self.limit + self.opt_len() {
            return false;
        }
        let old_name_len = self.qname_len;
        // The common reply (address records owned by the question): every name is the
        // bare pointer to the question and no record holds a name in its data, so no
        // name needs a look and no pointer moves; the two passes are skipped (issue 12:
        // they were ~100 of the ~360 instructions of `rewrite`'s response hook).
        let bare = self.bare();
        if !bare {
            // First pass: every name is one we can move (nothing changes yet).
            let ok = self.each_name(|buf, at| {
                match refers(buf, at, old_name_end) {
                    // A name that ends in the question grows with it: it must stay within
                    // 255 bytes (RFC 1035 3.1) once the question is longer.
                    Some(Refers::Question) if new_name_len > old_name_len => {
                        let mut scratch = [0u8; MAX_NAME_LEN];
                        match wire::read_name(buf, at, &mut scratch) {
                            Some((_, len)) if len - old_name_len + new_name_len <= MAX_NAME_LEN => {}
                            _ => return false,
                        }
                    }
                    Some(Refers::Question) => {}
                    Some(Refers::Elsewhere) => {
                        let mut scratch = [0u8; MAX_NAME_LEN];
                        match wire::read_name(buf, at, &mut scratch) {
                            Some((_, len)) if unrelated(&scratch[..len]) => {}
                            _ => return false,
                        }
                    }
                    None => return false,
                }
                // A pointer past the question must still fit 14 bits once moved.
                pointer(buf, at).is_none_or(|(_, t)| t < old_end || (t as isize + delta) < 0x4000)
            });
            if !ok {
                return false;
            }
        }
        self.put_question(question, !bare);
        true
    }

    /// Whether every record is owned by the bare pointer to the question and holds no
    /// name in its data (address records at the question: the common reply).
    fn bare(&self) -> bool {
        self.records.iter().all(|r| {
            self.buf.get(r.start as usize..r.start as usize + 2) == Some(&[0xC0, QNAME_OFFSET as u8][..])
                && wire::rdata_names(r.rtype).is_none()
        })
    }

    /// Puts `question` in place of the reply's question, as it is: the bytes after it
    /// move, and with `move_pointers` so do the pointers past it (the caller saw that
    /// each still fits 14 bits); nothing is checked.
    fn put_question(&mut self, question: &[u8], move_pointers: bool) {
        let old_end = QNAME_OFFSET + self.qname_len + 4;
        let delta = question.len() as isize - (old_end - QNAME_OFFSET) as isize;
        let new_len = self.buf.len() as isize + delta;
        if move_pointers && delta != 0 {
            // The pointers past the question move with what follows it; no length
            // changes, so the walk stays valid.
            for i in 0..self.records.len() {
                let r = self.records[i];
                let mut at = [0usize; 3];
                let n = names_of(&self.buf, &r, &mut at);
                for &p in &at[..n] {
                    if let Some((ptr, t)) = pointer(&self.buf, p) {
                        if t >= old_end {
                            let moved = (t as isize + delta) as u16;
                            self.buf[ptr..ptr + 2].copy_from_slice(&(0xC000 | moved).to_be_bytes());
                        }
                    }
                }
            }
        }
        // The bytes after the question move, and the new question goes in.
        let len = self.buf.len();
        if delta > 0 {
            self.buf.resize(new_len as usize, 0);
            self.buf.copy_within(old_end..len, old_end + delta as usize);
        } else if delta < 0 {
            self.buf.copy_within(old_end..len, (old_end as isize + delta) as usize);
            self.buf.truncate(new_len as usize);
        }
        self.buf[QNAME_OFFSET..QNAME_OFFSET + question.len()].copy_from_slice(question);
        self.qname_len = question.len() - 4;
        let shift = |v: u16| (v as isize + delta) as u16;
        for r in &mut self.records {
            *r = RecordPos {
                start: shift(r.start),
                ttl_at: shift(r.ttl_at),
                end: shift(r.end),
                ..*r
            };
        }
        // Nothing is pushed into a finished reply; the old targets are gone anyway.
        self.targets.clear();
    }
    /// Whether the reply carries the client's question in place of its query's
    /// ([`Request::echo`](crate::dns::Request::echo)) and was not settled yet.
    pub fn is_echoed(&self) -> bool {
        self.echo
    }

    /// Settles a reply started with the client's question in place of the rewritten
    /// query's ([`Request::echo`](crate::dns::Request::echo)): `true` when it stands as
    /// the client's reply as it is, which is what [`Self::replace_question`] would make
    /// of the reply written with the query's question. That holds when every name is
    /// either labels then a pointer straight to the question, which a plugin wrote as
    /// "the question" (nothing else points there: the question is no compression
    /// target) and which `answer auto` gives the client's name anyway, or a name that
    /// `unrelated` accepts (called as by `replace_question`). Otherwise the query's
    /// question is put back, so that the reply is the one written without the echo
    /// (the same records; names compressed less), and `false`; also for a reply that
    /// is not echoed.
    ///
    /// Writing the client's question at once spares a rewritten answer the move of the
    /// whole reply: `replace_question` was ~190 of the ~3,960 instructions of a
    /// `rewrite name suffix` answer from the kubernetes plugin; this check ~30
    /// (benches/inprocess.rs, issue 12).
    pub fn settle_echo(&mut self, mut unrelated: impl FnMut(&[u8]) -> bool) -> bool {
        if !self.echo {
            return false;
        }
        let (qname_len, qname_end) = (self.qname_len, QNAME_OFFSET + self.qname_len);
        let ok = self.finished
            && !self.echo_spoiled
            && (self.bare()
                || self.each_name(|buf, at| {
                    if let Some((ptr, QNAME_OFFSET)) = pointer(buf, at) {
                        return ptr - at + qname_len <= MAX_NAME_LEN;
                    }
                    if refers(buf, at, qname_end).is_none() {
                        return false;
                    }
                    let mut scratch = [0u8; MAX_NAME_LEN];
                    matches!(wire::read_name(buf, at, &mut scratch), Some((_, len)) if unrelated(&scratch[..len]))
                }));
        if ok {
            self.echo = false;
            return true;
        }
        self.unecho();
        false
    }

    /// [`Self::settle_echo`] for the common reply, which needs no name looked at: an
    /// echoed, finished reply whose records are all owned by the bare pointer to the
    /// question with no name in their data stands. `false` (nothing changed) for any
    /// other reply. Lets `rewrite` settle such a reply before it looks up its rule.
    pub fn settle_bare_echo(&mut self) -> bool {
        if self.echo && self.finished && !self.echo_spoiled && self.bare() {
            self.echo = false;
            return true;
        }
        false
    }

    /// Puts the rewritten query's question back into an echoed reply (nothing if it is
    /// not echoed): the names that point to the question read as the query's name
    /// again, as they were written. The pointers past the question fit 14 bits once
    /// moved: an echoed reply remembers no target from 0x3FFF - 255 on.
    pub fn unecho(&mut self) {
        if !self.echo {
            return;
        }
        self.echo = false;
        let mut question = [0u8; MAX_NAME_LEN + 4];
        let n = self.echo_len as usize;
        let type_at = QNAME_OFFSET + self.qname_len;
        question[..n].copy_from_slice(&self.echo_name[..n]);
        question[n..n + 4].copy_from_slice(&self.buf[type_at..type_at + 4]);
        self.put_question(&question[..n + 4], true);
    }

    /// Calls `f` with the offset of every name of every record (owners and the names in
    /// the rdata of the types that hold some); stops at the first `false`, and fails on
    /// a record it cannot walk.
    fn each_name(&self, mut f: impl FnMut(&[u8], usize) -> bool) -> bool {
        for r in &self.records {
            let mut at = [0usize; 3];
            let n = names_of(&self.buf, r, &mut at);
            if n == 0 || !at[..n].iter().all(|&p| f(&self.buf, p)) {
                return false;
            }
        }
        true
    }
}

/// The offsets of the names of record `r` (its owner, then the names of its rdata: at
/// most two); 0 when the record cannot be walked.
fn names_of(buf: &[u8], r: &RecordPos, at: &mut [usize; 3]) -> usize {
    let start = r.start as usize;
    at[0] = start;
    let Some((fixed, names)) = wire::rdata_names(r.rtype) else {
        return 1;
    };
    let Some(after_owner) = wire::skip_name(buf, start) else {
        return 0;
    };
    let mut p = after_owner + 10 + fixed;
    for i in 0..names.min(2) {
        if p >= r.end as usize {
            return 0;
        }
        at[1 + i] = p;
        match wire::skip_name(buf, p) {
            Some(next) => p = next,
            None => return 0,
        }
    }
    1 + names.min(2)
}

/// Follows the name at `at` to where it ends: to the question name's start, or not
/// through the question name at all; `None` for a pointer inside the question name
/// (or the question), a bad label or too many hops.
fn refers(buf: &[u8], at: usize, qname_end: usize) -> Option<Refers> {
    let mut pos = at;
    for _ in 0..MAX_HOPS {
        loop {
            let len = *buf.get(pos)? as usize;
            match len & 0xC0 {
                0x00 if len == 0 => return Some(Refers::Elsewhere),
                0x00 => pos += 1 + len,
                0xC0 => break,
                _ => return None,
            }
        }
        let target = (wire::get_u16(buf, pos)? & 0x3FFF) as usize;
        if target == QNAME_OFFSET {
            return Some(Refers::Question);
        }
        if target < qname_end + 4 || target >= pos {
            return None;
        }
        pos = target;
    }
    None
}

/// The pointer that ends the name written at `at` (its own labels only, not followed),
/// if it has one: its offset and target.
fn pointer(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut pos = at;
    let mut out = None;
    while let Some(&len) = buf.get(pos) {
        match len & 0xC0 {
            0x00 if len == 0 => break,
            0x00 => pos += 1 + len as usize,
            0xC0 => {
                out = wire::get_u16(buf, pos).map(|v| (pos, (v & 0x3FFF) as usize));
                break;
            }
            _ => break,
        }
    }
    out
}
