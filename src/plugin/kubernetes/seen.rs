//! The records an answer has written so far, so that it writes each (target, port) or
//! (target, address) pair once, as CoreDNS does, in time linear in the candidates.
//!
//! Items are small handles (indices into the snapshot) that the caller hashes and
//! compares: the set keeps the handle of the first item of each kind and asks the
//! caller whether a new one is the same, so equality is exact, not a hash match.
//! While small (the usual answer of a few records) it is a linear list, hashed never;
//! past [`INLINE`] items it becomes an open-addressing table. One per thread, reused:
//! clearing it is a generation bump, and once its table has grown to the largest
//! answer the thread wrote, it allocates nothing.

/// What an item is: three indices whose meaning is the caller's (slice, endpoint,
/// port; owner; name and address...).
pub type Item = [u32; 3];

/// Items compared linearly before the table is used.
const INLINE: usize = 8;
/// The table's first size (slots).
const FIRST_TABLE: usize = 64;

#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u64,
    item: Item,
    /// The clearing this slot was written in; any other value means empty.
    generation: u32,
}

/// A set of items with caller-given hash and equality.
pub struct Seen {
    inline: [Item; INLINE],
    len: usize,
    table: Vec<Slot>,
    /// Whether the items live in `table` (more than `INLINE` since the last clear).
    spilled: bool,
    generation: u32,
}

impl Default for Seen {
    fn default() -> Self {
        Seen::new()
    }
}

impl Seen {
    pub const fn new() -> Seen {
        Seen {
            inline: [[0; 3]; INLINE],
            len: 0,
            table: Vec::new(),
            spilled: false,
            generation: 1,
        }
    }

    /// Forgets every item (constant time: table slots of an earlier spill carry an
    /// older generation).
    pub fn clear(&mut self) {
        self.len = 0;
        self.spilled = false;
    }

    /// Items held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `item` unless an item `same` says is equal is held; returns whether it was
    /// new. `hash` must give equal items equal hashes.
    pub fn insert(&mut self, item: Item, hash: impl Fn(Item) -> u64, same: impl Fn(Item, Item) -> bool) -> bool {
        self.find_or_insert(item, hash, same).is_none()
    }

    /// Like [`Seen::insert`], but returns the item already held that equals `item`
    /// (`None` when `item` was new and is now held).
    pub fn find_or_insert(
        &mut self,
        item: Item,
        hash: impl Fn(Item) -> u64,
        same: impl Fn(Item, Item) -> bool,
    ) -> Option<Item> {
        if !self.spilled {
            if let Some(&held) = self.inline[..self.len].iter().find(|&&held| same(held, item)) {
                return Some(held);
            }
            if self.len < INLINE {
                self.inline[self.len] = item;
                self.len += 1;
                return None;
            }
            // The ninth distinct item: move to the table.
            self.spilled = true;
            self.generation = self.generation.wrapping_add(1);
            if self.generation == 0 {
                // Once in four billion spills: wipe, so that no old slot looks live.
                self.table.iter_mut().for_each(|s| s.generation = 0);
                self.generation = 1;
            }
            if self.table.len() < FIRST_TABLE {
                self.table = vec![Slot::default(); FIRST_TABLE];
            }
            for i in 0..INLINE {
                let held = self.inline[i];
                self.place(hash(held), held);
            }
            self.place(hash(item), item);
            self.len += 1;
            return None;
        }
        let h = hash(item);
        let mask = self.table.len() - 1;
        let mut at = h as usize & mask;
        loop {
            let slot = &self.table[at];
            if slot.generation != self.generation {
                break;
            }
            if slot.hash == h && same(slot.item, item) {
                return Some(slot.item);
            }
            at = (at + 1) & mask;
        }
        if (self.len + 1) * 4 > self.table.len() * 3 {
            self.grow();
        }
        self.place(h, item);
        self.len += 1;
        None
    }

    /// Writes an item known to be absent into the table.
    fn place(&mut self, hash: u64, item: Item) {
        let mask = self.table.len() - 1;
        let mut at = hash as usize & mask;
        while self.table[at].generation == self.generation {
            at = (at + 1) & mask;
        }
        self.table[at] = Slot {
            hash,
            item,
            generation: self.generation,
        };
    }

    /// Doubles the table, keeping the live items.
    fn grow(&mut self) {
        let live: Vec<Slot> = self
            .table
            .iter()
            .filter(|s| s.generation == self.generation)
            .copied()
            .collect();
        self.table = vec![Slot::default(); self.table.len() * 2];
        for s in live {
            self.place(s.hash, s.item);
        }
    }
}

/// A hash for items made of a few words (FxHash's step, then a multiply so that the
/// low bits the table uses depend on every input bit).
pub fn hash_words(words: &[u64]) -> u64 {
    let mut h: u64 = 0;
    for &w in words {
        h = (h.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ins(s: &mut Seen, v: u32, modulo: u32) -> bool {
        // Equal modulo `modulo`; a deliberately poor hash (many collisions) for small
        // values, to exercise probing.
        s.insert(
            [v, 0, 0],
            |i| u64::from(i[0] % modulo) / 4,
            |a, b| a[0] % modulo == b[0] % modulo,
        )
    }

    #[test]
    fn keeps_each_item_once_inline_and_in_the_table() {
        let mut s = Seen::new();
        for v in 0..1000 {
            assert!(ins(&mut s, v, 500) == (v < 500), "{v}");
        }
        assert_eq!(s.len(), 500);
        // Clearing forgets everything, in either mode.
        s.clear();
        assert!(s.is_empty());
        assert!(ins(&mut s, 7, 500));
        assert!(!ins(&mut s, 507, 500));
        for v in 0..20 {
            ins(&mut s, v, 500);
        }
        s.clear();
        for v in 0..20 {
            assert!(ins(&mut s, v, 500), "{v} after clearing a spilled set");
        }
    }

    #[test]
    fn equality_is_the_callers_not_the_hash() {
        let mut s = Seen::new();
        // Every item hashes alike; only equality tells them apart.
        for v in 0..100 {
            assert!(s.insert([v, 1, 2], |_| 42, |a, b| a == b));
        }
        for v in 0..100 {
            assert!(!s.insert([v, 1, 2], |_| 42, |a, b| a == b));
        }
    }

    #[test]
    fn a_warm_set_allocates_no_more() {
        let mut s = Seen::new();
        for v in 0..5000 {
            s.insert([v, 0, 0], |i| hash_words(&[u64::from(i[0])]), |a, b| a == b);
        }
        let cap = s.table.len();
        for _ in 0..3 {
            s.clear();
            for v in 0..5000 {
                assert!(s.insert([v, 0, 0], |i| hash_words(&[u64::from(i[0])]), |a, b| a == b));
            }
        }
        assert_eq!(s.table.len(), cap, "the table kept its size");
    }

    #[test]
    fn generation_wrap_leaves_no_ghosts() {
        let mut s = Seen::new();
        for v in 0..20 {
            ins(&mut s, v, 1000);
        }
        s.generation = u32::MAX;
        // Pretend every slot was written in the last generation before the wrap.
        s.table.iter_mut().for_each(|sl| sl.generation = u32::MAX);
        s.clear();
        for v in 0..20 {
            assert!(ins(&mut s, v, 1000));
        }
    }
}
