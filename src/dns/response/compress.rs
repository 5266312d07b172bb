//! Name compression (RFC 1035 4.1.4): a name ends in a pointer to a suffix already
//! written, if there is one. The targets are the question's labels and the labels of
//! every name written since, up to [`MAX_TARGETS`]; they are compared case-sensitively,
//! so that the query's spelling survives in the names that point to it.
//!
//! Finding a suffix must not cost a scan of every target for every label of every name
//! in a large answer: each target carries a fingerprint (a hash of its first label and
//! its length), a small Bloom filter over the fingerprints says at once when nothing
//! written can match, and only targets with the suffix's own fingerprint are compared
//! byte by byte.

use super::{Name, PushError, Response, Tail};
use crate::dns::wire::{self, MAX_NAME_LEN, QNAME_OFFSET};

/// Most compression targets a reply remembers; later labels are written but not
/// pointed to.
pub(super) const MAX_TARGETS: usize = 48;

/// The compression targets of the reply being written.
pub(super) struct Targets {
    /// Offsets of label starts that later names may point to.
    pos: [u16; MAX_TARGETS],
    /// The length of the (uncompressed) name at each of those offsets.
    name_len: [u8; MAX_TARGETS],
    /// The [`fingerprint`] of the name at each of those offsets, for the first
    /// `fingerprinted` ones: a name is compared byte by byte only with the targets
    /// whose fingerprint is its own. Computed when a name is first searched for (most
    /// small replies write only names in front of the question, and never search).
    hash: [u32; MAX_TARGETS],
    fingerprinted: usize,
    /// One bit per fingerprint (its low 8 bits): most names of a large answer have a
    /// first label nothing written has, and this says so without the scan.
    bloom: [u64; 4],
    len: usize,
}

impl Targets {
    pub(super) const fn new() -> Targets {
        Targets {
            pos: [0; MAX_TARGETS],
            name_len: [0; MAX_TARGETS],
            hash: [0; MAX_TARGETS],
            fingerprinted: 0,
            bloom: [0; 4],
            len: 0,
        }
    }

    /// Forgets every target (a new reply).
    pub(super) fn clear(&mut self) {
        self.len = 0;
        self.bloom = [0; 4];
        self.fingerprinted = 0;
    }

    /// How many targets there are: a mark to [`Targets::truncate`] back to.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(super) fn is_full(&self) -> bool {
        self.len == MAX_TARGETS
    }

    /// Forgets the targets added after `mark` (a record that did not fit takes its own
    /// back). Their Bloom bits stay: a false "maybe" costs only a scan.
    #[inline]
    pub(super) fn truncate(&mut self, mark: usize) {
        self.len = self.len.min(mark);
        self.fingerprinted = self.fingerprinted.min(mark);
    }

    /// Adds a target, if there is room: the offset of a label and the length of the
    /// name from there.
    #[inline]
    pub(super) fn remember(&mut self, pos: usize, name_len: usize) {
        if self.is_full() {
            return;
        }
        self.pos[self.len] = pos as u16;
        self.name_len[self.len] = name_len.min(MAX_NAME_LEN) as u8;
        self.len += 1;
    }

    /// A written position in `buf` whose name equals `suffix` (uncompressed, root
    /// included) exactly (case-sensitive). Only the targets with the suffix's
    /// fingerprint are read.
    pub(super) fn find(&mut self, buf: &[u8], suffix: &[u8]) -> Option<u16> {
        // Targets added since the last search: their first labels are in the buffer.
        while self.fingerprinted < self.len {
            let i = self.fingerprinted;
            let pos = self.pos[i] as usize;
            let first = &buf[pos..pos + 1 + buf[pos] as usize];
            let fp = fingerprint(first, self.name_len[i] as usize);
            self.hash[i] = fp;
            self.bloom[(fp as usize >> 6) & 3] |= 1 << (fp & 63);
            self.fingerprinted += 1;
        }
        let first = &suffix[..1 + suffix[0] as usize];
        let fp = fingerprint(first, suffix.len());
        if self.bloom[(fp as usize >> 6) & 3] & (1 << (fp & 63)) == 0 {
            return None;
        }
        (0..self.len)
            .filter(|&i| self.hash[i] == fp)
            .map(|i| self.pos[i])
            .find(|&pos| name_at_equals(buf, pos as usize, suffix))
    }
}

impl Response {
    /// The question name the records are about: as written in the response (empty if
    /// there is none), or the rewritten query's when the reply carries the client's
    /// ([`Request::echo`](crate::dns::Request::echo)).
    pub(super) fn question_wire(&self) -> &[u8] {
        if self.echo {
            return &self.echo_name[..self.echo_len as usize];
        }
        let mut end = QNAME_OFFSET;
        while let Some(&len) = self.buf.get(end) {
            if len == 0 {
                return &self.buf[QNAME_OFFSET..=end];
            }
            end += 1 + len as usize;
        }
        &[]
    }

    /// Writes `name`, compressed if `compress` and a suffix was written before.
    pub(super) fn write_name(&mut self, name: Name<'_>, compress: bool) -> Result<(), PushError> {
        // Fast path: labels in front of a suffix of the question (the owner of most
        // records, SOA names) end in a pointer to it, nothing to search. Names in two
        // parts (SRV glue) take the search below, which finds their SRV target.
        // With the client's question in place of the query's (`echo`), only the whole
        // question is pointed to: a suffix of the query's name is written out below.
        let fast = !self.echo || matches!(name.tail, Tail::Question(QNAME_OFFSET));
        if let (true, Tail::Question(off), true, true) = (compress, name.tail, name.mid.is_empty(), fast) {
            // The whole name may not exceed 255 bytes (whoami's `_udp.` in front of a
            // 255-byte question name did).
            // The question's length as stored (no walk), or the query's name when the
            // reply carries the client's question (`echo`): the records are about that one.
            let about = if self.echo {
                self.echo_len as usize
            } else {
                self.qname_len
            };
            if !name.head.is_empty() && name.head.len() + (QNAME_OFFSET + about).saturating_sub(off) > MAX_NAME_LEN {
                return Err(PushError::Malformed);
            }
            if self.echo && name.head.len() + self.qname_len > MAX_NAME_LEN {
                // Fits in front of the query's name, not of the client's: only the
                // query's question can stand here (question.rs puts it back).
                self.echo_spoiled = true;
            }
            if !name.head.is_empty() {
                self.write_labels(name.head, Tail::Question(off))?;
            }
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
            Tail::Question(off) if self.echo => {
                let name = off
                    .checked_sub(QNAME_OFFSET)
                    .and_then(|at| self.echo_name[..self.echo_len as usize].get(at..));
                put(name.ok_or(PushError::Malformed)?)?;
            }
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
            if let Some(ptr) = self.targets.find(&self.buf, &full[at..]) {
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
    /// table has room), with the length of the name it starts: its labels, then `tail`
    /// (the rest of the name, as written after them).
    #[inline]
    fn write_labels(&mut self, labels: &[u8], tail: Tail<'_>) -> Result<(), PushError> {
        let tail_len = match tail {
            Tail::Root => 1,
            Tail::Wire(w) => w.len(),
            Tail::Question(off) => self.qname_len.saturating_sub(off.saturating_sub(QNAME_OFFSET)),
        };
        // With the client's question in place (`echo`), the query's may come back,
        // at most 254 bytes longer: a pointer must still fit 14 bits then.
        // Labels in front of the echoed question are not offered either: they would
        // read as the query's name once the question is put back (`unecho`), and a
        // name equal to them as written for the client would then be another name.
        let in_front_of_echo = self.echo && matches!(tail, Tail::Question(_));
        let limit = if self.echo { 0x3FFF - MAX_NAME_LEN } else { 0x3FFF };
        // Each label checked and remembered where it will be, then all copied at once
        // (a malformed name is taken back whole by the caller, `push_with`).
        let base = self.buf.len();
        let mut at = 0;
        while at < labels.len() {
            let l = labels[at] as usize;
            if l == 0 || l > 63 || at + 1 + l > labels.len() {
                return Err(PushError::Malformed);
            }
            let pos = base + at;
            if !in_front_of_echo && pos < limit {
                self.targets.remember(pos, labels.len() - at + tail_len);
            }
            at += 1 + l;
        }
        self.buf.extend_from_slice(labels);
        Ok(())
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

/// Whether `name` is a sequence of labels of at most 63 bytes ending at its root label.
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
