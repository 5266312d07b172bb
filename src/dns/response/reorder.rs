//! Reordering the records of a finished reply, for `loadbalance`. Apart from the
//! writer, which it does not change: it only permutes what was written, keeping the
//! bytes and the record positions in step.

use super::{RecordPos, Response};
use crate::dns::wire;

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
    // The names in the rdata of the types that may carry pointers (RFC 3597 section 4).
    let Some((fixed, names)) = wire::rdata_names(p.rtype) else {
        return Some(true);
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
