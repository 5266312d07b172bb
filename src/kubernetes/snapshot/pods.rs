//! Which pods have an address: the client's pod, for autopath and the kubernetes
//! plugin's client metadata; and whether a live pod of a namespace has an address
//! (`pods verified` A answers).
//!
//! CoreDNS takes the first pod its index lists for the client's address. When two pods
//! have it (an address reused while the old pod terminates, coredns#2842; host-network
//! pods, which all have their node's address) that first pod is arbitrary, and two
//! queries from one client can be told two namespaces. Here every pod with a
//! `status.podIP` is kept under it, terminating ones included (they may still hold the
//! address), and [`ClientPod`] names a pod only when exactly one has the address and
//! it has a network of its own.
//!
//! Layout (a cluster may have hundreds of thousands of pods, and DNS needs a few bytes
//! of each): every pod is one fixed-size record ([`Rec`], 32 bytes) in a shard chosen
//! by its namespace and name, its name in the shard's byte arena by offset, its
//! namespace an interned id. The address index is a sorted array of `(address, record
//! handle)` per address shard (8 bytes an IPv4 pod). Nothing is allocated per pod. A
//! change copies the one key shard and the address shards it touches, if a published
//! snapshot still holds them; the tables' shard pointers are copied once per publish
//! that follows a pod change, so a publish costs in proportion to what changed.
//!
//! ```text
//!   PodIndex ─Arc─▶ Tables ── keys[512]: Arc<KeyShard { recs: [Rec], names: arena }>
//!                          ── v4[512], v6[512]: Arc<sorted [(address, handle)]>
//!                          ── namespaces by id, in chunks of 256
//! ```

use std::fmt::Write as _;
use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Arc;

use super::shard::{FxHasher, FxMap};
use crate::kubernetes::model::{ObjectKey, Pod};

/// Key shards and address shards (each): 150,000 pods make ~300 records a shard.
const SHARDS: usize = 512;
/// A record handle: its key shard in the high bits, its slot in the low ones.
const SLOT_BITS: u32 = 23;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
/// Namespace ids are kept in chunks of this many names.
const NS_CHUNK: usize = 256;

/// The pod a query came from, as answers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// `spec.hostNetwork`: its address is its node's.
    pub host_network: bool,
}

/// What an address says about the pod a query came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientPod<'a> {
    /// Exactly one pod has the address, with a network of its own.
    One(PodRef<'a>),
    /// No pod has it (not a pod, or pods are not watched).
    Unknown,
    /// More than one pod has it (a reused address, several host-network pods).
    Ambiguous,
    /// The one pod that has it shares its node's network: the address is also every
    /// other process's on that node.
    HostNetwork,
}

impl<'a> ClientPod<'a> {
    /// The pod, when there is exactly one.
    pub fn pod(self) -> Option<PodRef<'a>> {
        match self {
            ClientPod::One(p) => Some(p),
            _ => None,
        }
    }
}

/// The slot is in use.
const LIVE: u8 = 1;
/// The pod's own record (the other is the rare extra record of a counted address that
/// is not the one it is indexed under).
const PRIMARY: u8 = 2;
/// Indexed under `addr` for [`ClientPod`] (terminating pods included).
const INDEXED: u8 = 4;
/// `spec.hostNetwork`.
const HOST: u8 = 8;
/// Holds the pod's counted `status.podIP` text (the pod was seen live).
const SEEN: u8 = 16;
/// ... and that text is an address, `addr`: a `pods verified` A answer counts it.
const COUNTED: u8 = 32;
/// ... and the text is not `addr`'s canonical form: it is stored after the name.
const ODD: u8 = 64;

/// One pod (or its extra record): 32 bytes, its name in its shard's arena.
#[derive(Clone, Copy, Debug, Default)]
struct Rec {
    /// The address, canonical (IPv4-mapped IPv6 taken as IPv4), as [`pack`] makes it.
    addr: [u32; 4],
    /// The low half of the key's hash, to skip most records when searching by key.
    hash: u32,
    /// Namespace id.
    ns: u32,
    /// The name's offset in the arena; the odd text, if any, follows it.
    at: u32,
    name_len: u8,
    text_len: u8,
    flags: u8,
}

impl Rec {
    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    fn indexed(&self) -> bool {
        self.flags & (INDEXED | COUNTED) != 0
    }
}

/// The records of one key shard and the bytes of their names.
#[derive(Debug, Default)]
struct KeyShard {
    recs: Vec<Rec>,
    names: Vec<u8>,
}

impl Clone for KeyShard {
    /// A copy made to change the shard: room for a few more records and names, so
    /// that the change does not double the copy's size.
    fn clone(&self) -> Self {
        let mut recs = Vec::with_capacity(self.recs.len() + self.recs.len() / 16 + 2);
        recs.extend_from_slice(&self.recs);
        let mut names = Vec::with_capacity(self.names.len() + self.names.len() / 16 + 128);
        names.extend_from_slice(&self.names);
        KeyShard { recs, names }
    }
}

impl KeyShard {
    fn name(&self, r: &Rec) -> &[u8] {
        let at = r.at as usize;
        &self.names[at..at + usize::from(r.name_len)]
    }

    fn text(&self, r: &Rec) -> &[u8] {
        let at = r.at as usize + usize::from(r.name_len);
        &self.names[at..at + usize::from(r.text_len)]
    }
}

/// An address key: how it is spread over the shards.
trait AddrKey: Copy + Ord {
    fn spread(self) -> u64;
}

impl AddrKey for u32 {
    fn spread(self) -> u64 {
        u64::from(self).wrapping_mul(super::shard::FX_SEED)
    }
}

impl AddrKey for [u32; 4] {
    fn spread(self) -> u64 {
        let mut h = FxHasher::default();
        for w in self {
            h.write(&w.to_le_bytes());
        }
        h.finish()
    }
}

fn shard_of(h: u64) -> usize {
    (h >> 54) as usize % SHARDS
}

/// Address → record handles, one sorted array a shard.
#[derive(Clone, Debug, Default)]
struct AddrIndex<K> {
    shards: Vec<Arc<Vec<(K, u32)>>>,
}

impl<K: AddrKey> AddrIndex<K> {
    /// The handles of the records under `k`.
    fn find(&self, k: K) -> impl Iterator<Item = u32> + '_ {
        let s: &[(K, u32)] = self.shards.get(shard_of(k.spread())).map_or(&[], |s| s);
        let from = s.partition_point(|e| e.0 < k);
        s[from..].iter().take_while(move |e| e.0 == k).map(|e| e.1)
    }

    fn add(&mut self, k: K, h: u32) {
        if self.shards.is_empty() {
            self.shards = (0..SHARDS).map(|_| Arc::default()).collect();
        }
        let s = Arc::make_mut(&mut self.shards[shard_of(k.spread())]);
        let at = s.partition_point(|e| *e < (k, h));
        s.insert(at, (k, h));
    }

    fn remove(&mut self, k: K, h: u32) {
        let Some(s) = self.shards.get_mut(shard_of(k.spread())) else {
            return;
        };
        if let Ok(at) = s.binary_search(&(k, h)) {
            Arc::make_mut(s).remove(at);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }
}

/// The published tables.
#[derive(Clone, Debug, Default)]
struct Tables {
    keys: Vec<Arc<KeyShard>>,
    v4: AddrIndex<u32>,
    v6: AddrIndex<[u32; 4]>,
    /// Namespace names by id ("" for an unused id).
    /// (`Arc`s: copying a chunk to change one name copies pointers, not names.)
    namespaces: Vec<Arc<Vec<Arc<str>>>>,
}

/// The pods as a snapshot publishes them (see the module's header).
#[derive(Clone, Debug, Default)]
pub(super) struct PodIndex(Arc<Tables>);

/// An address as a record and the index keep it: IPv4 in the IPv4-mapped form.
fn pack(a: IpAddr) -> [u32; 4] {
    let v = match a.to_canonical() {
        IpAddr::V4(a) => 0xffff_0000_0000u128 | u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    [(v >> 96) as u32, (v >> 64) as u32, (v >> 32) as u32, v as u32]
}

fn unpack(a: [u32; 4]) -> IpAddr {
    let v = (u128::from(a[0]) << 96) | (u128::from(a[1]) << 64) | (u128::from(a[2]) << 32) | u128::from(a[3]);
    IpAddr::from(std::net::Ipv6Addr::from(v)).to_canonical()
}

/// A short text on the stack (an address's canonical form).
struct Text {
    b: [u8; 48],
    n: usize,
}

impl std::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.n + s.len();
        let to = self.b.get_mut(self.n..end).ok_or(std::fmt::Error)?;
        to.copy_from_slice(s.as_bytes());
        self.n = end;
        Ok(())
    }
}

/// Whether `text` is the canonical form of the address `a` it parsed to (canonical:
/// IPv4 as IPv4). Every text `Ipv4Addr` parses is its canonical form (it takes no
/// leading zeros), so only IPv6 is formatted.
fn is_canonical(text: &[u8], a: IpAddr, parsed_v4: bool) -> bool {
    if parsed_v4 {
        return true;
    }
    let IpAddr::V6(v6) = a else {
        return false; // an IPv4-mapped IPv6 text: stored as it is
    };
    let mut t = Text { b: [0; 48], n: 0 };
    write!(t, "{v6}").is_ok() && t.b[..t.n] == *text
}

/// The canonical address `text` is, and whether the text is its canonical form.
fn parse(text: &[u8]) -> Option<(IpAddr, bool)> {
    let parsed: IpAddr = std::str::from_utf8(text).ok()?.parse().ok()?;
    let a = parsed.to_canonical();
    Some((a, is_canonical(text, a, parsed.is_ipv4())))
}

impl PodIndex {
    fn rec(&self, h: u32) -> (&KeyShard, &Rec) {
        let s = &self.0.keys[(h >> SLOT_BITS) as usize];
        (s, &s.recs[(h & SLOT_MASK) as usize])
    }

    /// The records under address `a` (canonical).
    fn at(&self, a: IpAddr) -> impl Iterator<Item = (&KeyShard, &Rec)> + '_ {
        let (v4, v6) = match a {
            IpAddr::V4(a) => (Some(u32::from(a)), None),
            IpAddr::V6(_) => (None, Some(pack(a))),
        };
        let t = &*self.0;
        v4.into_iter()
            .flat_map(|k| t.v4.find(k))
            .chain(v6.into_iter().flat_map(|k| t.v6.find(k)))
            .map(|h| self.rec(h))
    }

    fn namespace(&self, id: u32) -> &str {
        &self.0.namespaces[id as usize / NS_CHUNK][id as usize % NS_CHUNK]
    }

    /// What the address `ip` says about the pod a query from it came from.
    pub(super) fn client_pod(&self, ip: IpAddr) -> ClientPod<'_> {
        let mut found = None;
        for (s, r) in self.at(ip.to_canonical()) {
            if !r.has(INDEXED) {
                continue;
            }
            if found.is_some() {
                return ClientPod::Ambiguous;
            }
            found = Some((s, r));
        }
        match found {
            None => ClientPod::Unknown,
            Some((_, r)) if r.has(HOST) => ClientPod::HostNetwork,
            Some((s, r)) => ClientPod::One(PodRef {
                namespace: self.namespace(r.ns),
                // Names come from `&str`s: always UTF-8.
                name: std::str::from_utf8(s.name(r)).unwrap_or(""),
                host_network: false,
            }),
        }
    }

    /// Whether a live pod of namespace `ns` has `status.podIP` == `text` (compared
    /// as text, as CoreDNS does).
    pub(super) fn exists(&self, ns: &[u8], text: &[u8]) -> bool {
        let Some((a, canonical)) = parse(text) else {
            return false;
        };
        self.at(a).any(|(s, r)| {
            r.has(COUNTED)
                && self.namespace(r.ns).as_bytes() == ns
                && if r.has(ODD) { s.text(r) == text } else { canonical }
        })
    }

    /// (pods, addresses indexed).
    #[cfg(test)]
    pub(super) fn counts(&self) -> (usize, usize) {
        let pods = self
            .0
            .keys
            .iter()
            .map(|s| s.recs.iter().filter(|r| r.has(PRIMARY)).count())
            .sum();
        (pods, self.0.v4.len() + self.0.v6.len())
    }
}

/// What a change did: whether the published pods changed, and whether the pods counted
/// by address (`pods verified` A answers) did (the SOA serial moves with those).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Change {
    pub changed: bool,
    pub counted: bool,
}

/// A pod's state: where it is indexed, and the `status.podIP` text it is counted under
/// (the last one it had while live: a terminating pod keeps it until its delete, as
/// CoreDNS's pod informer keeps the pod).
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    at: Option<(IpAddr, bool)>,
    ip: Option<Vec<u8>>,
}

/// The builder's side: the list generation each record was last seen in, the arena
/// bytes no record uses, and the namespace ids with the number of records that name
/// each (a namespace goes with its last pod: namespaces may come and go without bound).
#[derive(Default)]
pub(super) struct Pods {
    seen: Vec<Vec<u32>>,
    garbage: Vec<u32>,
    namespaces: FxMap<Box<str>, (u32, u32)>,
    free_ns: Vec<u32>,
    next_ns: u32,
}

/// The key's hash: which shard, and the low half kept in the record. Seeded once per
/// process from the kernel's CSPRNG: a shard is searched and copied whole, so pod names
/// chosen offline to land in one shard (anyone who may create pods could try names)
/// would make every change to it cost the shard's size; with a secret seed they cannot
/// be chosen. Nothing keeps the hash beyond the process.
fn key_hash(ns: &str, name: &str) -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let mut h = FxHasher::default();
    h.write_u64(*SEED.get_or_init(crate::chain::Rng::secure_u64));
    h.write(ns.as_bytes());
    h.write_u8(0xff);
    h.write(name.as_bytes());
    h.finish()
}

/// The address a pod is indexed under: its `status.podIP`, parsed (IPv4-mapped IPv6
/// taken as IPv4, as a query from such a client arrives).
fn address(p: &Pod) -> Option<IpAddr> {
    p.pod_ip.parse::<IpAddr>().ok().map(|a| a.to_canonical())
}

impl Pods {
    fn tables(index: &mut PodIndex) -> &mut Tables {
        let t = Arc::make_mut(&mut index.0);
        if t.keys.is_empty() {
            t.keys = (0..SHARDS).map(|_| Arc::default()).collect();
        }
        t
    }

    /// The slots of the key's records in its shard: (primary, extra).
    fn find(index: &PodIndex, ns: Option<u32>, name: &str, h: u64) -> (Option<usize>, Option<usize>) {
        let (Some(ns), Some(s)) = (ns, index.0.keys.get(shard_of(h))) else {
            return (None, None);
        };
        let (mut primary, mut extra) = (None, None);
        for (i, r) in s.recs.iter().enumerate() {
            if r.hash == h as u32 && r.ns == ns && r.has(LIVE) && s.name(r) == name.as_bytes() {
                if r.has(PRIMARY) {
                    primary = Some(i);
                } else {
                    extra = Some(i);
                }
            }
        }
        (primary, extra)
    }

    /// The state the key's records hold.
    fn state(index: &PodIndex, shard: usize, slots: [Option<usize>; 2]) -> Option<State> {
        let primary = slots[0]?;
        let s = &index.0.keys[shard];
        let primary = &s.recs[primary];
        let at = primary.has(INDEXED).then(|| (unpack(primary.addr), primary.has(HOST)));
        let ip = slots
            .iter()
            .flatten()
            .map(|&i| &s.recs[i])
            .find(|r| r.has(SEEN))
            .map(|r| {
                if r.has(ODD) || !r.has(COUNTED) {
                    s.text(r).to_vec()
                } else {
                    unpack(r.addr).to_string().into_bytes()
                }
            });
        Some(State { at, ip })
    }

    fn ns_id(&mut self, ns: &str) -> u32 {
        if let Some((id, n)) = self.namespaces.get_mut(ns) {
            *n += 1;
            return *id;
        }
        let id = self.free_ns.pop().unwrap_or_else(|| {
            self.next_ns += 1;
            self.next_ns - 1
        });
        self.namespaces.insert(ns.into(), (id, 1));
        id
    }

    fn ns_release(&mut self, index: &mut PodIndex, id: u32) {
        let t = Self::tables(index);
        let name = &t.namespaces[id as usize / NS_CHUNK][id as usize % NS_CHUNK];
        let Some((_, n)) = self.namespaces.get_mut(&**name) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            let name: Arc<str> = name.clone();
            self.namespaces.remove(&*name);
            self.free_ns.push(id);
            Arc::make_mut(&mut t.namespaces[id as usize / NS_CHUNK])[id as usize % NS_CHUNK] = "".into();
        }
    }

    /// Frees a record: out of the address index, its arena bytes counted as garbage.
    fn free(&mut self, index: &mut PodIndex, shard: usize, slot: usize) {
        let t = Self::tables(index);
        let r = t.keys[shard].recs[slot];
        let h = ((shard as u32) << SLOT_BITS) | slot as u32;
        if r.indexed() {
            match unpack(r.addr) {
                IpAddr::V4(a) => t.v4.remove(u32::from(a), h),
                IpAddr::V6(_) => t.v6.remove(r.addr, h),
            }
        }
        let ks = Arc::make_mut(&mut t.keys[shard]);
        ks.recs[slot].flags = 0;
        self.garbage[shard] += u32::from(r.name_len) + u32::from(r.text_len);
        if self.garbage[shard] as usize * 2 > ks.names.len() {
            Self::compact(ks);
            self.garbage[shard] = 0;
        }
        self.ns_release(index, r.ns);
    }

    /// Rewrites a shard's arena without the bytes of freed records.
    fn compact(ks: &mut KeyShard) {
        let mut names = Vec::with_capacity(ks.names.len() / 2 + 128);
        for r in ks.recs.iter_mut().filter(|r| r.has(LIVE)) {
            let at = r.at as usize;
            let end = at + usize::from(r.name_len) + usize::from(r.text_len);
            r.at = names.len() as u32;
            names.extend_from_slice(&ks.names[at..end]);
        }
        ks.names = names;
    }

    /// Adds a record, in the first free slot of its shard.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        index: &mut PodIndex,
        p: &Pod,
        h: u64,
        flags: u8,
        addr: Option<IpAddr>,
        text: &[u8],
        generation: u32,
    ) {
        let ns = self.ns_id(&p.namespace);
        let shard = shard_of(h);
        let t = Self::tables(index);
        if t.namespaces.len() * NS_CHUNK <= ns as usize {
            t.namespaces.push(Arc::new(vec![Arc::from(""); NS_CHUNK]));
        }
        let chunk = &mut t.namespaces[ns as usize / NS_CHUNK];
        if *chunk[ns as usize % NS_CHUNK] != *p.namespace {
            Arc::make_mut(chunk)[ns as usize % NS_CHUNK] = Arc::from(&*p.namespace);
        }
        let ks = Arc::make_mut(&mut t.keys[shard]);
        let rec = Rec {
            addr: addr.map_or([0; 4], pack),
            hash: h as u32,
            ns,
            at: ks.names.len() as u32,
            name_len: p.name.len() as u8,
            text_len: text.len() as u8,
            flags: flags | LIVE,
        };
        ks.names.extend_from_slice(p.name.as_bytes());
        ks.names.extend_from_slice(text);
        let slot = match ks.recs.iter().position(|r| !r.has(LIVE)) {
            Some(i) => {
                ks.recs[i] = rec;
                i
            }
            None => {
                ks.recs.push(rec);
                ks.recs.len() - 1
            }
        };
        if self.seen.len() < SHARDS {
            self.seen.resize_with(SHARDS, Vec::new);
            self.garbage.resize(SHARDS, 0);
        }
        let seen = &mut self.seen[shard];
        if seen.len() <= slot {
            seen.resize(slot + 1, 0);
        }
        seen[slot] = generation;
        if rec.indexed() {
            let hd = ((shard as u32) << SLOT_BITS) | slot as u32;
            match addr {
                Some(IpAddr::V4(a)) => t.v4.add(u32::from(a), hd),
                Some(IpAddr::V6(_)) => t.v6.add(rec.addr, hd),
                None => {}
            }
        }
    }

    /// Writes a pod's state as records (one, or two when it is counted under an
    /// address other than the one it is indexed under).
    fn write(&mut self, index: &mut PodIndex, p: &Pod, h: u64, st: &State, generation: u32) {
        let mut flags = PRIMARY;
        let mut addr = None;
        if let Some((a, host)) = st.at {
            flags |= INDEXED | if host { HOST } else { 0 };
            addr = Some(a);
        }
        let Some(text) = &st.ip else {
            self.put(index, p, h, flags, addr, &[], generation);
            return;
        };
        match parse(text) {
            Some((c, canonical)) if addr.is_none_or(|a| a == c) => {
                let odd = if canonical { &[][..] } else { &text[..] };
                flags |= SEEN | COUNTED | if canonical { 0 } else { ODD };
                self.put(index, p, h, flags, Some(c), odd, generation);
            }
            Some((c, canonical)) => {
                self.put(index, p, h, flags, addr, &[], generation);
                let odd = if canonical { &[][..] } else { &text[..] };
                let f = SEEN | COUNTED | if canonical { 0 } else { ODD };
                self.put(index, p, h, f, Some(c), odd, generation);
            }
            // Not an address: kept (a change to it is one), never matched.
            None => self.put(index, p, h, flags | SEEN | ODD, addr, text, generation),
        }
    }

    fn ns_of(&self, ns: &str) -> Option<u32> {
        self.namespaces.get(ns).map(|(id, _)| *id)
    }

    /// Applies a pod seen in list generation `generation`. A terminating pod is
    /// indexed but not counted anew; one already counted stays until the delete event,
    /// as CoreDNS's pod informer keeps it.
    pub(super) fn upsert(&mut self, index: &mut PodIndex, p: &Pod, generation: u32) -> Change {
        let h = key_hash(&p.namespace, &p.name);
        let shard = shard_of(h);
        let (primary, extra) = Self::find(index, self.ns_of(&p.namespace), &p.name, h);
        let old = Self::state(index, shard, [primary, extra]);
        let at = address(p).map(|a| (a, p.host_network));
        let ip = if p.terminating {
            old.as_ref().and_then(|o| o.ip.clone())
        } else {
            Some(p.pod_ip.as_bytes().to_vec())
        };
        let new = (at.is_some() || ip.is_some()).then_some(State { at, ip });
        if old == new {
            if let Some(i) = primary {
                self.seen[shard][i] = generation;
            }
            return Change::default();
        }
        // Names and texts fit their records' length bytes (the decoder's limits).
        if p.name.len() > usize::from(u8::MAX) || p.pod_ip.len() > usize::from(u8::MAX) {
            return Change::default();
        }
        for i in [primary, extra].into_iter().flatten() {
            self.free(index, shard, i);
        }
        if let Some(st) = &new {
            self.write(index, p, h, st, generation);
        }
        Change {
            changed: true,
            counted: old.and_then(|o| o.ip) != new.and_then(|n| n.ip),
        }
    }

    /// Removes a pod: `None` when it was not known.
    pub(super) fn remove(&mut self, index: &mut PodIndex, key: &ObjectKey) -> Option<Change> {
        let h = key_hash(&key.namespace, &key.name);
        let shard = shard_of(h);
        let (primary, extra) = Self::find(index, self.ns_of(&key.namespace), &key.name, h);
        let old = Self::state(index, shard, [primary, extra])?;
        for i in [primary, extra].into_iter().flatten() {
            self.free(index, shard, i);
        }
        Some(Change {
            changed: true,
            counted: old.ip.is_some(),
        })
    }

    /// Removes the pods not seen in list generation `generation`, and returns what
    /// that changed. Then trims the shards no snapshot holds to their size.
    pub(super) fn remove_stale(&mut self, index: &mut PodIndex, generation: u32) -> Change {
        let mut gone = Vec::new();
        for (shard, s) in index.0.keys.iter().enumerate() {
            for (slot, r) in s.recs.iter().enumerate() {
                if r.has(PRIMARY) && self.seen[shard][slot] != generation {
                    let name = String::from_utf8_lossy(s.name(r)).into_owned();
                    gone.push(ObjectKey {
                        namespace: index.namespace(r.ns).into(),
                        name: name.into(),
                    });
                }
            }
        }
        let mut change = Change::default();
        for k in gone {
            if let Some(c) = self.remove(index, &k) {
                change.changed = true;
                change.counted |= c.counted;
            }
        }
        let t = Arc::make_mut(&mut index.0);
        for s in t.keys.iter_mut().filter_map(Arc::get_mut) {
            s.recs.shrink_to(s.recs.len() + s.recs.len() / 16 + 2);
            s.names.shrink_to(s.names.len() + s.names.len() / 16 + 128);
        }
        for s in t.v4.shards.iter_mut().filter_map(Arc::get_mut) {
            s.shrink_to(s.len() + s.len() / 16 + 2);
        }
        for s in t.v6.shards.iter_mut().filter_map(Arc::get_mut) {
            s.shrink_to(s.len() + s.len() / 16 + 2);
        }
        change
    }

    /// Namespaces with a pod.
    #[cfg(test)]
    fn namespaces(&self) -> usize {
        self.namespaces.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::model::{Object, Resource};
    use crate::kubernetes::snapshot::{ClusterStore, StoreOptions};

    fn pod(ns: &str, name: &str, ip: &str, host_network: bool) -> Object {
        Object::Pod(Pod {
            namespace: ns.into(),
            name: name.into(),
            resource_version: "1".into(),
            pod_ip: ip.into(),
            terminating: false,
            host_network,
        })
    }

    fn terminating(ns: &str, name: &str, ip: &str) -> Object {
        let Object::Pod(mut t) = pod(ns, name, ip, false) else {
            unreachable!()
        };
        t.terminating = true;
        Object::Pod(t)
    }

    fn verdict(st: &ClusterStore, ip: &str) -> String {
        match st.snapshot().client_pod(ip.parse().unwrap()) {
            ClientPod::One(p) => format!("{}/{}", p.namespace, p.name),
            other => format!("{other:?}"),
        }
    }

    fn key(ns: &str, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_pod_is_named_only_when_it_alone_has_the_address() {
        let mut st = ClusterStore::new(StoreOptions::default(), vec![Resource::Pods]);
        assert!(st.upsert(pod("a", "web", "10.0.0.1", false)));
        assert_eq!(verdict(&st, "10.0.0.1"), "a/web");
        assert_eq!(verdict(&st, "10.0.0.2"), "Unknown");
        // The address reused by a pod in another namespace while the first is still
        // there (terminating): nobody (coredns#2842).
        assert!(st.upsert(pod("b", "api", "10.0.0.1", false)));
        assert_eq!(verdict(&st, "10.0.0.1"), "Ambiguous");
        // The old pod is deleted: the new one alone.
        assert!(st.delete(Resource::Pods, &key("a", "web")));
        assert_eq!(verdict(&st, "10.0.0.1"), "b/api");
        // The same pod again: nothing changes; a new address moves it.
        assert!(!st.upsert(pod("b", "api", "10.0.0.1", false)));
        assert!(st.upsert(pod("b", "api", "10.0.0.9", false)));
        assert_eq!(verdict(&st, "10.0.0.1"), "Unknown");
        assert_eq!(verdict(&st, "10.0.0.9"), "b/api");
        // A host-network pod is never the client's pod, alone or not.
        st.upsert(pod("kube-system", "proxy", "192.168.0.5", true));
        assert_eq!(verdict(&st, "192.168.0.5"), "HostNetwork");
        st.upsert(pod("kube-system", "agent", "192.168.0.5", true));
        assert_eq!(verdict(&st, "192.168.0.5"), "Ambiguous");
        // No address (pending), or text that is not one: not indexed.
        st.upsert(pod("c", "pending", "", false));
        st.upsert(pod("c", "odd", "not-an-ip", false));
        assert_eq!(verdict(&st, "0.0.0.0"), "Unknown");
        // IPv6, by value.
        st.upsert(pod("c", "v6", "fd00::0:5", false));
        assert_eq!(verdict(&st, "fd00::5"), "c/v6");
        // A list that no longer has them removes them.
        st.list_start(Resource::Pods);
        st.upsert(pod("b", "api", "10.0.0.9", false));
        st.list_done(Resource::Pods);
        assert_eq!(verdict(&st, "10.0.0.9"), "b/api");
        assert_eq!(verdict(&st, "fd00::5"), "Unknown");
        assert_eq!(verdict(&st, "192.168.0.5"), "Unknown");
        assert!(!st.snapshot().pod_exists(b"\x01c", b"fd00::0:5"));
        assert!(st.snapshot().pod_exists(b"\x01b", b"10.0.0.9"));
        assert_eq!(st.snapshot().pods.counts(), (1, 1));
    }

    /// A pod first seen terminating is indexed by address (it may hold it still) but not
    /// counted for `pods verified` answers; one counted before stays counted until its
    /// delete event. Both tables forget it on the delete.
    #[test]
    fn terminating_pods_are_indexed_and_counted_as_coredns_keeps_them() {
        let mut st = ClusterStore::new(StoreOptions::default(), vec![Resource::Pods]);
        assert!(st.upsert(terminating("a", "old", "10.0.0.3")), "indexed");
        assert_eq!(verdict(&st, "10.0.0.3"), "a/old");
        assert!(!st.snapshot().pod_exists(b"\x01a", b"10.0.0.3"));
        assert!(st.delete(Resource::Pods, &key("a", "old")));
        assert_eq!(verdict(&st, "10.0.0.3"), "Unknown");
        assert!(!st.delete(Resource::Pods, &key("a", "old")));
        // First seen terminating without an address: not known at all.
        assert!(!st.upsert(terminating("a", "gone", "")));
        assert!(!st.delete(Resource::Pods, &key("a", "gone")));

        assert!(st.upsert(pod("a", "live", "10.0.0.4", false)));
        assert!(st.snapshot().pod_exists(b"\x01a", b"10.0.0.4"));
        assert!(!st.snapshot().pod_exists(b"\x01b", b"10.0.0.4"), "another namespace");
        assert!(!st.upsert(terminating("a", "live", "10.0.0.4")));
        assert!(st.snapshot().pod_exists(b"\x01a", b"10.0.0.4"), "kept until deleted");
        // Terminating, it moves (or loses its address): indexed where it is now,
        // still counted under the address it had while live.
        assert!(st.upsert(terminating("a", "live", "10.0.0.5")));
        assert_eq!(verdict(&st, "10.0.0.5"), "a/live");
        assert_eq!(verdict(&st, "10.0.0.4"), "Unknown");
        assert!(st.snapshot().pod_exists(b"\x01a", b"10.0.0.4"));
        assert!(!st.snapshot().pod_exists(b"\x01a", b"10.0.0.5"));
        assert!(st.upsert(terminating("a", "live", "")));
        assert_eq!(verdict(&st, "10.0.0.5"), "Unknown");
        assert!(st.snapshot().pod_exists(b"\x01a", b"10.0.0.4"));
        assert!(st.delete(Resource::Pods, &key("a", "live")));
        assert!(!st.snapshot().pod_exists(b"\x01a", b"10.0.0.4"));
        assert_eq!(st.snapshot().pods.counts(), (0, 0));
        // A pending pod (no address) is counted nowhere, but known: its delete is a change.
        assert!(st.upsert(pod("a", "pending", "", false)));
        assert!(st.delete(Resource::Pods, &key("a", "pending")));
    }

    /// `status.podIP` is compared as text, as CoreDNS does: a text that is not the
    /// address's canonical form matches only itself.
    #[test]
    fn addresses_are_counted_by_their_text() {
        let mut st = ClusterStore::new(StoreOptions::default(), vec![Resource::Pods]);
        st.upsert(pod("a", "v6", "fd00:0::7", false));
        st.upsert(pod("a", "mapped", "::ffff:10.9.0.1", false));
        st.upsert(pod("a", "plain", "fd00::8", false));
        let snap = st.snapshot();
        assert!(snap.pod_exists(b"\x01a", b"fd00:0::7"));
        assert!(!snap.pod_exists(b"\x01a", b"fd00::7"));
        assert!(snap.pod_exists(b"\x01a", b"fd00::8"));
        assert!(!snap.pod_exists(b"\x01a", b"fd00:0::8"));
        assert!(snap.pod_exists(b"\x01a", b"::ffff:10.9.0.1"));
        assert!(!snap.pod_exists(b"\x01a", b"10.9.0.1"));
        // Indexed by value, IPv4-mapped as IPv4 (as such a client's queries arrive).
        assert_eq!(verdict(&st, "10.9.0.1"), "a/mapped");
        assert_eq!(verdict(&st, "fd00::7"), "a/v6");
        // The query side relies on every text Ipv4Addr parses being canonical.
        assert!("010.0.0.1".parse::<std::net::Ipv4Addr>().is_err());
        assert!(!snap.pod_exists(b"\x01a", b"not-an-ip"));
    }

    /// Namespaces that come and go (a namespace per CI run, say) without a relist:
    /// each is forgotten with its last pod.
    #[test]
    fn a_namespace_goes_with_its_last_pod_without_a_relist() {
        let mut pods = Pods::default();
        let mut index = PodIndex::default();
        let p = |ns: &str, name: &str, ip: &str| {
            let Object::Pod(p) = pod(ns, name, ip, false) else {
                unreachable!()
            };
            p
        };
        for i in 0..100u32 {
            let ns = format!("ci-{i}");
            pods.upsert(&mut index, &p(&ns, "a", &format!("10.1.{}.1", i % 250)), 1);
            pods.upsert(&mut index, &p(&ns, "b", &format!("10.2.{}.1", i % 250)), 1);
            assert_eq!(pods.namespaces(), 1, "namespace {i}");
            pods.upsert(&mut index, &p(&ns, "b", &format!("10.3.{}.1", i % 250)), 1);
            assert!(pods.remove(&mut index, &key(&ns, "a")).is_some());
            assert_eq!(pods.namespaces(), 1, "namespace {i}: b is still there");
            pods.upsert(&mut index, &p(&ns, "b", ""), 1);
            assert_eq!(pods.namespaces(), 1, "namespace {i}: b is known, pending");
            assert!(pods.remove(&mut index, &key(&ns, "b")).is_some());
            assert_eq!(pods.namespaces(), 0, "namespace {i} kept without a pod");
        }
        assert_eq!(pods.namespaces(), 0);
        assert!(pods.free_ns.len() <= 1, "ids are reused");
    }

    /// Churn on a published index: answers stay right, freed slots and arena bytes are
    /// reused (the index does not grow with the number of changes), and a change copies
    /// only the shards it touches.
    #[test]
    fn churn_reuses_slots_and_copies_only_what_it_touches() {
        let mut pods = Pods::default();
        let mut index = PodIndex::default();
        let p = |i: u32, ip: u32| Pod {
            namespace: format!("ns{}", i % 7).into(),
            name: format!("app-{i}").into(),
            resource_version: "1".into(),
            pod_ip: std::net::Ipv4Addr::from(ip).to_string().into(),
            terminating: false,
            host_network: false,
        };
        for i in 0..2000 {
            pods.upsert(&mut index, &p(i, 0x0a00_0000 + i), 1);
        }
        let size = |index: &PodIndex| -> (usize, usize) {
            let t = &index.0;
            (
                t.keys.iter().map(|s| s.recs.len()).sum(),
                t.keys.iter().map(|s| s.names.len()).sum(),
            )
        };
        let (recs, names) = size(&index);
        for round in 0..20u32 {
            for i in 0..2000 {
                pods.upsert(&mut index, &p(i, 0x0b00_0000 + (i + round) % 2000), 1);
            }
        }
        let (recs2, names2) = size(&index);
        assert_eq!(recs2, recs);
        assert!(names2 <= names * 2, "{names2} bytes of names for {names}");
        let held = index.clone();
        let c = pods.upsert(&mut index, &p(5, 0x0c00_0001), 1);
        assert_eq!(
            c,
            Change {
                changed: true,
                counted: true
            }
        );
        let shared =
            |a: &[Arc<KeyShard>], b: &[Arc<KeyShard>]| a.iter().zip(b).filter(|(x, y)| Arc::ptr_eq(x, y)).count();
        assert_eq!(shared(&held.0.keys, &index.0.keys), SHARDS - 1);
        let v4 = |x: &PodIndex, y: &PodIndex| {
            x.0.v4
                .shards
                .iter()
                .zip(&y.0.v4.shards)
                .filter(|(a, b)| !Arc::ptr_eq(a, b))
                .count()
        };
        assert!(v4(&held, &index) <= 2);
        assert!(index.exists(b"ns5", b"12.0.0.1"));
        assert!(!held.exists(b"ns5", b"12.0.0.1"), "the published copy is unchanged");
        for i in 0..2000 {
            assert!(
                pods.remove(&mut index, &key(&format!("ns{}", i % 7), &format!("app-{i}")))
                    .is_some()
            );
        }
        assert_eq!(index.counts(), (0, 0));
        assert_eq!(pods.namespaces(), 0);
    }

    #[test]
    fn a_pod_record_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Rec>(), 32);
    }
}
