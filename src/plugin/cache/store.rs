//! Where cached replies live: two caches (success, denial), each split into 256
//! shards of equal capacity, as CoreDNS's `plugin/pkg/cache`. Shard `i` of both caches
//! sits behind one lock, so that a lookup (denial first, then success) locks once.
//!
//! ```text
//!   Key::of(request) ──hash──▶ top 8 bits pick the slot ──▶ Mutex<Pair>
//!                                                           │ success shard │ denial shard
//!                                                           │ index: hash → position
//!                                                           ▼
//!                  Entry { name, rcode, flags, records (wire), TTL, stored at, ... }
//! ```
//!
//! An entry keeps the reply's records exactly as they were written: owner names may
//! point into the question (a later query for the same key has a question of the same
//! length at the same offset, so the pointers stay valid) or into earlier records of
//! the same reply (replayed in the same order from the same offset). A hit copies them
//! into the response buffer with [`Response::push_encoded`]: no allocation, one memcpy
//! per record while the shard's lock is held.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::chain::Rng;
use crate::dns::{Flags, Rcode, Request, Response, Section};
use crate::kubernetes::snapshot::FxHasher;

/// Shards per cache (CoreDNS's `shardSize`).
pub const SHARDS: usize = 256;
/// The smallest shard CoreDNS makes, whatever the configured capacity.
const MIN_PER_SHARD: usize = 4;

/// What identifies a reply: the lower-cased name, type, class and the DO and CD bits
/// (an answer to a CD=1 or DO=1 query is never served to a query without them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub hash: u64,
    qtype: u16,
    qclass: u16,
    /// Bit 0: DO, bit 1: CD.
    bits: u8,
}

impl Key {
    /// The key of `req`'s question. `seed` is random per plugin, so that names cannot
    /// be chosen from outside to crowd one shard.
    pub fn of(req: &Request<'_>, seed: u64) -> Key {
        let bits = u8::from(req.dnssec_ok()) | (u8::from(req.cd()) << 1);
        let mut h = FxHasher::default();
        h.write_usize(seed as usize);
        h.write(req.qname.wire());
        h.write(&[
            (req.qtype >> 8) as u8,
            req.qtype as u8,
            (req.qclass >> 8) as u8,
            req.qclass as u8,
            bits,
        ]);
        Key {
            hash: mix(h.finish()),
            qtype: req.qtype,
            qclass: req.qclass,
            bits,
        }
    }

    /// The shard this key lives in: the hash's top bits (FxHash mixes those best).
    fn shard(&self) -> usize {
        (self.hash >> 56) as usize % SHARDS
    }
}

/// A finalizer (splitmix64's): every output bit depends on every input bit, so both
/// the shard (top bits) and the shard's own map (all bits) get well-spread values.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// One cached reply.
pub struct Entry {
    key: Key,
    /// When it was stored (the query's arrival time, so never later than the truth).
    pub stored: Instant,
    /// The cache duration in seconds: what every record's TTL was set to.
    pub orig_ttl: u32,
    pub rcode: Rcode,
    /// The reply's header flags word (RA and AD are replayed from it).
    pub flags: Flags,
    /// Length of the lower-cased question name at the start of `data`.
    name_len: u8,
    /// Where, in the records, the authority and the additional sections start.
    sections: [u16; 2],
    /// The question name (lower-cased wire), then the records as written.
    data: Box<[u8]>,
    /// Hits in a row, each less than the prefetch window after the previous one.
    pub hits: u32,
    pub last_hit: Option<Instant>,
    /// When a background refresh was asked for, while one may be in flight.
    pub refresh_at: Option<Instant>,
    /// After a failed refresh: no new attempt before this.
    pub retry_after: Option<Instant>,
}

/// How long a background refresh counts as in flight (longer than forward's overall
/// deadline): one that never reports back does not block the next one forever.
const REFRESH_GRACE: Duration = Duration::from_secs(10);

impl Entry {
    /// Captures the finished reply in `resp` to `req` (records only: the OPT record the
    /// response finishes with is not among them). `None` if the records do not form
    /// one contiguous run, which a reply written through [`Response`] always does.
    pub fn capture(resp: &Response, req: &Request<'_>, key: Key, now: Instant, ttl: u32) -> Option<Entry> {
        let recs = resp.records();
        let name = req.qname.wire();
        let (start, end) = match (recs.first(), recs.last()) {
            (Some(f), Some(l)) => (f.start as usize, l.end as usize),
            _ => (0, 0),
        };
        let bytes = resp.bytes().get(start..end)?;
        let mut sections = [bytes.len() as u16; 2];
        for r in recs {
            let off = (r.start as usize - start) as u16;
            match r.section {
                Section::Answer => {}
                Section::Authority => sections[0] = sections[0].min(off),
                Section::Additional => sections[1] = sections[1].min(off),
            }
        }
        sections[0] = sections[0].min(sections[1]);
        let mut data = Vec::with_capacity(name.len() + bytes.len());
        data.extend_from_slice(name);
        data.extend_from_slice(bytes);
        Some(Entry {
            key,
            stored: now,
            orig_ttl: ttl,
            rcode: resp.rcode(),
            flags: resp.flags(),
            name_len: name.len() as u8,
            sections,
            data: data.into_boxed_slice(),
            hits: 0,
            last_hit: None,
            refresh_at: None,
            retry_after: None,
        })
    }

    /// Whether this entry answers `req` (the hash alone could collide).
    pub fn matches(&self, key: &Key, req: &Request<'_>) -> bool {
        self.key == *key && &self.data[..self.name_len as usize] == req.qname.wire()
    }

    /// Seconds of life left (negative once expired), CoreDNS's `item.ttl`.
    pub fn ttl(&self, now: Instant) -> i64 {
        i64::from(self.orig_ttl) - now.saturating_duration_since(self.stored).as_secs() as i64
    }

    /// Whether a background refresh of this entry may still be in flight.
    pub fn refreshing(&self, now: Instant) -> bool {
        self.refresh_at.is_some_and(|t| now < t + REFRESH_GRACE)
    }

    /// Whether a failed refresh asked for a pause that is not over.
    pub fn rechecking(&self, now: Instant) -> bool {
        self.retry_after.is_some_and(|t| now < t)
    }

    /// The records of each section, in wire order.
    pub fn sections(&self) -> [(Section, &[u8]); 3] {
        let recs = &self.data[self.name_len as usize..];
        let (a, n) = (self.sections[0] as usize, self.sections[1] as usize);
        [
            (Section::Answer, &recs[..a]),
            (Section::Authority, &recs[a..n]),
            (Section::Additional, &recs[n..]),
        ]
    }
}

/// A hasher for keys that are already hashes. All keys of one shard share their top
/// bits (the shard index), which the map would use to tell entries apart: one multiply
/// spreads the other bits over them.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One shard: its entries, and their positions by hash.
#[derive(Default)]
pub struct Shard {
    entries: Vec<Entry>,
    index: HashMap<u64, u32, BuildHasherDefault<KeyHasher>>,
}

impl Shard {
    /// The entry stored under `key`'s hash, if it answers `req`.
    pub fn get_mut(&mut self, key: &Key, req: &Request<'_>) -> Option<&mut Entry> {
        let i = *self.index.get(&key.hash)? as usize;
        let e = &mut self.entries[i];
        e.matches(key, req).then_some(e)
    }

    /// Takes out the entry stored under `hash` (to be dropped after the lock).
    pub fn remove(&mut self, hash: u64) -> Option<Entry> {
        let i = self.index.remove(&hash)? as usize;
        let e = self.entries.swap_remove(i);
        if let Some(moved) = self.entries.get(i) {
            self.index.insert(moved.key.hash, i as u32);
        }
        Some(e)
    }

    /// Stores `e`, replacing the entry of the same hash; in a full shard a random
    /// other entry makes room (CoreDNS's eviction). Returns what was displaced (to be
    /// dropped after the lock) and whether that was an eviction.
    pub fn insert(&mut self, e: Entry, cap: usize, rng: &mut Rng) -> (Option<Entry>, bool) {
        if let Some(&i) = self.index.get(&e.key.hash) {
            return (Some(std::mem::replace(&mut self.entries[i as usize], e)), false);
        }
        let mut evicted = None;
        if self.entries.len() >= cap && !self.entries.is_empty() {
            let victim = self.entries[rng.below(self.entries.len())].key.hash;
            evicted = self.remove(victim);
        }
        self.index.insert(e.key.hash, self.entries.len() as u32);
        self.entries.push(e);
        let was_eviction = evicted.is_some();
        (evicted, was_eviction)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Which of the two caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Answers and referrals.
    Success = 0,
    /// NXDOMAIN, NODATA and SERVFAIL.
    Denial = 1,
}

impl Kind {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Success => "success",
            Kind::Denial => "denial",
        }
    }

    pub fn other(self) -> Kind {
        match self {
            Kind::Success => Kind::Denial,
            Kind::Denial => Kind::Success,
        }
    }
}

/// Shard `i` of the success cache and shard `i` of the denial cache, under one lock:
/// a lookup, which tries both (denial first, as CoreDNS), takes one lock.
#[derive(Default)]
pub struct Pair {
    shards: [Shard; 2],
}

impl Pair {
    pub fn get(&mut self, kind: Kind) -> &mut Shard {
        &mut self.shards[kind as usize]
    }
}

/// A pair's lock on a cache line of its own, so that workers locking neighbouring
/// shards do not slow each other down.
#[repr(align(128))]
struct Slot(Mutex<Pair>);

/// A success and a denial cache, each of [`SHARDS`] shards of equal capacity.
pub struct Store {
    slots: Box<[Slot]>,
    /// Entries one shard of each cache holds at most.
    per_shard: [usize; 2],
}

/// Entries one shard holds for a cache of `capacity`: rounded down to whole shards of
/// at least [`MIN_PER_SHARD`] (so 10000 gives 9984, and anything below 1024 gives 1024).
pub fn per_shard(capacity: usize) -> usize {
    (capacity / SHARDS).max(MIN_PER_SHARD)
}

impl Store {
    pub fn new(success_capacity: usize, denial_capacity: usize) -> Store {
        Store {
            slots: (0..SHARDS).map(|_| Slot(Mutex::new(Pair::default()))).collect(),
            per_shard: [per_shard(success_capacity), per_shard(denial_capacity)],
        }
    }

    /// The shards of `key`.
    pub fn shard(&self, key: &Key) -> &Mutex<Pair> {
        &self.slots[key.shard()].0
    }

    /// Entries one shard of the `kind` cache holds at most.
    pub fn per_shard(&self, kind: Kind) -> usize {
        self.per_shard[kind as usize]
    }

    /// Entries stored in the `kind` cache (locks every shard in turn: for scrapes, not
    /// queries).
    pub fn len(&self, kind: Kind) -> usize {
        self.slots.iter().map(|s| s.0.lock().shards[kind as usize].len()).sum()
    }
}
