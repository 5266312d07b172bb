//! Maps and sets split into shards, each behind an `Arc`: publishing clones the shard
//! pointers, a change copies one shard. Keys come from the API and are hashed with
//! [`FxHasher`].

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

/// A fast hasher for keys that come from the API (names, addresses): FxHash's
/// multiply-rotate. Lookups with attacker-chosen query names cannot flood it: queries
/// only look up, never insert.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

pub(super) const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(FX_SEED);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(FX_SEED);
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(FX_SEED);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(FX_SEED);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(super) type FxBuild = BuildHasherDefault<FxHasher>;
pub(super) type FxMap<K, V> = HashMap<K, V, FxBuild>;

pub(super) const SHARDS: usize = 256;

/// A map split into `SHARDS` copy-on-write shards.
pub struct Sharded<K, V> {
    pub(super) shards: Vec<Arc<FxMap<K, V>>>,
}

impl<K, V> Clone for Sharded<K, V> {
    fn clone(&self) -> Self {
        Sharded {
            shards: self.shards.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Default for Sharded<K, V> {
    fn default() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| Arc::new(FxMap::default())).collect(),
        }
    }
}

pub(super) fn shard_of<Q: Hash + ?Sized>(key: &Q) -> usize {
    let mut h = FxHasher::default();
    key.hash(&mut h);
    // High bits: the low ones pick the bucket inside the shard's own table.
    (h.finish() >> 56) as usize % SHARDS
}

impl<K: Hash + Eq + Clone, V: Clone> Sharded<K, V> {
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[shard_of(key)].get(key)
    }

    /// Inserts or replaces; copies the shard if a published snapshot still holds it.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        Arc::make_mut(&mut self.shards[shard_of(&key)]).insert(key, value)
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let s = shard_of(key);
        // Only copy the shard when the key is really there.
        if !self.shards[s].contains_key(key) {
            return None;
        }
        Arc::make_mut(&mut self.shards[s]).remove(key)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }
}

/// Something stored in a set under a key it holds itself (so the key is not stored
/// twice).
pub trait Keyed {
    fn key(&self) -> &[u8];
}

/// An `Arc<T>` hashed and compared by its key, so a set of them can be searched with
/// the key bytes alone.
pub struct ByKey<T: Keyed>(pub Arc<T>);

impl<T: Keyed> Clone for ByKey<T> {
    fn clone(&self) -> Self {
        ByKey(self.0.clone())
    }
}
impl<T: Keyed> Hash for ByKey<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key().hash(state)
    }
}
impl<T: Keyed> PartialEq for ByKey<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}
impl<T: Keyed> Eq for ByKey<T> {}
impl<T: Keyed> std::borrow::Borrow<[u8]> for ByKey<T> {
    fn borrow(&self) -> &[u8] {
        self.0.key()
    }
}

pub(super) type FxSet<T> = std::collections::HashSet<T, FxBuild>;

/// A set of keyed entries split into copy-on-write shards, like [`Sharded`].
pub struct ShardedSet<T: Keyed> {
    pub(super) shards: Vec<Arc<FxSet<ByKey<T>>>>,
}

impl<T: Keyed> Clone for ShardedSet<T> {
    fn clone(&self) -> Self {
        ShardedSet {
            shards: self.shards.clone(),
        }
    }
}

impl<T: Keyed> Default for ShardedSet<T> {
    fn default() -> Self {
        ShardedSet {
            shards: (0..SHARDS).map(|_| Arc::new(FxSet::default())).collect(),
        }
    }
}

impl<T: Keyed> ShardedSet<T> {
    pub fn get(&self, key: &[u8]) -> Option<&Arc<T>> {
        self.shards[shard_of(key)].get(key).map(|b| &b.0)
    }

    /// Inserts or replaces the entry with the same key.
    pub fn insert(&mut self, v: Arc<T>) {
        let s = shard_of(v.key());
        Arc::make_mut(&mut self.shards[s]).replace(ByKey(v));
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Arc<T>> {
        let s = shard_of(key);
        if !self.shards[s].contains(key) {
            return None;
        }
        Arc::make_mut(&mut self.shards[s]).take(key).map(|b| b.0)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<T>> {
        self.shards.iter().flat_map(|s| s.iter().map(|b| &b.0))
    }
}

/// One shard of a [`SortedShards`]: keys in ascending order in one array, their values
/// at the same positions in another. No empty slots and no control bytes: an entry
/// costs its key and its value (a hash table's shard, at the load a doubling table
/// averages, cost about twice that), and a lookup binary-searches a dense array of
/// keys.
pub struct SortedShard<K, V> {
    keys: Vec<K>,
    vals: Vec<V>,
}

impl<K: Clone, V: Clone> Clone for SortedShard<K, V> {
    /// A copy with an eighth of spare room, as `insert` grows: a copy-on-write copy is
    /// made for a change, most often an insert, which would otherwise copy it again.
    fn clone(&self) -> Self {
        let room = self.keys.len() + self.keys.len() / 8 + 1;
        let mut keys = Vec::with_capacity(room);
        keys.extend_from_slice(&self.keys);
        let mut vals = Vec::with_capacity(room);
        vals.extend_from_slice(&self.vals);
        SortedShard { keys, vals }
    }
}

impl<K: Ord + Copy, V: Clone> SortedShard<K, V> {
    fn find(&self, key: &K) -> Result<usize, usize> {
        self.keys.binary_search(key)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Bytes of its two arrays, spare room included.
    pub(super) fn heap_bytes(&self) -> usize {
        self.keys.capacity() * std::mem::size_of::<K>() + self.vals.capacity() * std::mem::size_of::<V>()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.vals.iter()
    }

    fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.vals[i], value)),
            Err(i) => {
                // Grow by an eighth, not double: a shard that grew in a list keeps
                // its spare room until copied, and doubling would leave up to half of
                // it unused. Inserting in the middle moves the tail anyway, so a
                // shard of n entries costs O(n) a change either way.
                if self.keys.len() == self.keys.capacity() {
                    let more = self.keys.len() / 8 + 1;
                    self.keys.reserve_exact(more);
                    self.vals.reserve_exact(more);
                }
                self.keys.insert(i, key);
                self.vals.insert(i, value);
                None
            }
        }
    }

    fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.find(key).ok()?;
        self.keys.remove(i);
        let v = self.vals.remove(i);
        // A shard emptied by a relist gives its room back.
        if self.keys.capacity() > 2 * self.keys.len() + 16 {
            self.keys.shrink_to_fit();
            self.vals.shrink_to_fit();
        }
        Some(v)
    }
}

/// A map split into `SHARDS` copy-on-write shards like [`Sharded`], each a sorted array
/// ([`SortedShard`]): for fixed-size keys (addresses) in large numbers, where a hash
/// table's empty slots would be most of the memory.
pub struct SortedShards<K, V> {
    pub(super) shards: Vec<Arc<SortedShard<K, V>>>,
}

impl<K, V> Clone for SortedShards<K, V> {
    fn clone(&self) -> Self {
        SortedShards {
            shards: self.shards.clone(),
        }
    }
}

impl<K, V> Default for SortedShards<K, V> {
    fn default() -> Self {
        SortedShards {
            shards: (0..SHARDS)
                .map(|_| {
                    Arc::new(SortedShard {
                        keys: Vec::new(),
                        vals: Vec::new(),
                    })
                })
                .collect(),
        }
    }
}

impl<K: Hash + Ord + Copy, V: Clone> SortedShards<K, V> {
    pub fn get(&self, key: &K) -> Option<&V> {
        let s = &self.shards[shard_of(key)];
        s.find(key).ok().map(|i| &s.vals[i])
    }

    /// Inserts or replaces; copies the shard if a published snapshot still holds it.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        Arc::make_mut(&mut self.shards[shard_of(&key)]).insert(key, value)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let s = shard_of(key);
        // Only copy the shard when the key is really there.
        self.shards[s].find(key).ok()?;
        Arc::make_mut(&mut self.shards[s]).remove(key)
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
