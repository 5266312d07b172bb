//! The snapshot: an immutable, query-ready view of the cluster, and the store the
//! builder keeps to make the next one.
//!
//! Every map is split into shards, each behind an `Arc`. Publishing a snapshot clones
//! the shard pointers, not the entries; changing an entry copies only its shard (a few
//! hundred entries at most), so a change costs in proportion to what changed, not to the
//! size of the cluster (ARCHITECTURE.md rule 3). Entries themselves are shared `Arc`s
//! between the store and every snapshot that holds them, so the cluster exists once in
//! memory, however many snapshots the workers still hold.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::model::{Endpoint, EndpointSlice, Namespace, Object, ObjectKey, Pod, Port, Resource, Service, ServiceKind};

/// A fast hasher for keys that come from the API (names, addresses): FxHash's
/// multiply-rotate. Lookups with attacker-chosen query names cannot flood it: queries
/// only look up, never insert.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

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

type FxBuild = BuildHasherDefault<FxHasher>;
type FxMap<K, V> = HashMap<K, V, FxBuild>;

const SHARDS: usize = 256;

/// A map split into `SHARDS` copy-on-write shards.
pub struct Sharded<K, V> {
    shards: Vec<Arc<FxMap<K, V>>>,
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

fn shard_of<Q: Hash + ?Sized>(key: &Q) -> usize {
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

/// Wire-format labels (length-prefixed, no root) for `labels` joined in order. Every
/// label is a DNS label the decoder has checked (at most 63 bytes): the cut below only
/// keeps the wire form valid, it must never make two names one.
pub fn wire_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Box<[u8]> {
    let mut out = Vec::new();
    for l in labels {
        debug_assert!(l.len() <= 63, "label over 63 bytes reached the snapshot: {l:?}");
        let l = &l.as_bytes()[..l.len().min(63)];
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.into_boxed_slice()
}

/// Label `i` (without its length byte) of wire labels.
pub fn label_at(wire: &[u8], i: usize) -> &[u8] {
    let mut at = 0;
    for _ in 0..i {
        at += 1 + wire[at] as usize;
    }
    let l = wire[at] as usize;
    &wire[at + 1..at + 1 + l]
}

/// resourceVersions are only compared for equality: a hash holds them in 8 bytes.
fn version_hash(rv: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(rv.as_bytes());
    h.finish() | 1
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

type FxSet<T> = std::collections::HashSet<T, FxBuild>;

/// A set of keyed entries split into copy-on-write shards, like [`Sharded`].
pub struct ShardedSet<T: Keyed> {
    shards: Vec<Arc<FxSet<ByKey<T>>>>,
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

/// A Service as answers need it.
#[derive(Debug)]
pub struct ServiceData {
    /// `<svc>.<ns>.svc` as wire labels (no root): SRV and PTR targets append a zone; the
    /// first two labels are its key.
    pub rel: Box<[u8]>,
    /// A hash of the resourceVersion stored (builder only; updated in place when a new
    /// version changes nothing DNS serves).
    version: AtomicU64,
    /// The list generation the service was last seen in (builder only).
    seen: AtomicU32,
    pub kind: ServiceKind,
    pub cluster_ips: Box<[IpAddr]>,
    /// The ExternalName target as wire bytes (fully qualified, case kept); `None` when
    /// the service is not ExternalName or its target is an IP address (ignored, as
    /// CoreDNS does) or not a valid name.
    pub external: Option<Box<[u8]>>,
    /// Shared between every service and slice with the same list.
    pub ports: Arc<[Port]>,
}

impl ServiceData {
    pub fn name(&self) -> &[u8] {
        label_at(&self.rel, 0)
    }

    pub fn namespace(&self) -> &[u8] {
        label_at(&self.rel, 1)
    }
}

impl Keyed for ServiceData {
    /// `<svc><ns>` wire labels.
    fn key(&self) -> &[u8] {
        &self.rel[..self.rel.len() - 4]
    }
}

/// One ready address of an EndpointSlice: 20 bytes (there can be hundreds of
/// thousands); its name, when it has one of its own, is in the slice's `names`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ep {
    ip: [u8; 16],
    v6: bool,
    /// Offset of its name label in the slice's `names`, or [`NO_NAME`] when the name is
    /// simply the address with dashes.
    name: u16,
}

/// [`Ep::name`] for an endpoint named after its address.
const NO_NAME: u16 = u16::MAX;

/// A stack buffer for one label.
pub type LabelBuf = [u8; 64];

impl Ep {
    fn new(addr: IpAddr, name: u16) -> Ep {
        let (ip, v6) = match addr {
            IpAddr::V4(a) => {
                let mut ip = [0u8; 16];
                ip[..4].copy_from_slice(&a.octets());
                (ip, false)
            }
            IpAddr::V6(a) => (a.octets(), true),
        };
        Ep { ip, v6, name }
    }

    /// The endpoint's address.
    pub fn addr(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.ip))
        } else {
            IpAddr::V4(Ipv4Addr::new(self.ip[0], self.ip[1], self.ip[2], self.ip[3]))
        }
    }
}

/// Writes an address with `.` or `:` turned into `-` (and a `0` after a trailing `-`);
/// returns the length.
fn write_dashed(addr: IpAddr, out: &mut [u8]) -> usize {
    if let (IpAddr::V4(a), true) = (addr, out.len() >= 15) {
        // The common case without the formatter: answers write this label for every
        // endpoint named after its address.
        let mut n = 0;
        for (i, o) in a.octets().into_iter().enumerate() {
            if i > 0 {
                out[n] = b'-';
                n += 1;
            }
            if o >= 100 {
                out[n] = b'0' + o / 100;
                n += 1;
            }
            if o >= 10 {
                out[n] = b'0' + (o / 10) % 10;
                n += 1;
            }
            out[n] = b'0' + o % 10;
            n += 1;
        }
        return n;
    }
    struct W<'a>(&'a mut [u8], usize);
    impl std::fmt::Write for W<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            for b in s.bytes() {
                if self.1 < self.0.len() {
                    self.0[self.1] = if b == b'.' || b == b':' { b'-' } else { b };
                    self.1 += 1;
                }
            }
            Ok(())
        }
    }
    let mut w = W(out, 0);
    let _ = std::fmt::Write::write_fmt(&mut w, format_args!("{addr}"));
    let n = w.1;
    if n > 0 && out[n - 1] == b'-' && n < out.len() {
        out[n] = b'0';
        return n + 1;
    }
    n
}

/// An EndpointSlice as answers need it: one [`Ep`] per ready address.
#[derive(Debug)]
pub struct SliceData {
    /// `<slice>.<ns>` wire labels: its key.
    key: Box<[u8]>,
    /// `<service>.<ns>.svc` wire labels (the service named by its label).
    pub rel: Box<[u8]>,
    /// As [`ServiceData`]'s.
    version: AtomicU64,
    seen: AtomicU32,
    pub ports: Arc<[Port]>,
    pub eps: Box<[Ep]>,
    /// The endpoints' own name labels, one after the other (see [`Ep`]).
    names: Box<[u8]>,
    /// Endpoints by name label, so that `<endpoint>.<service>...` finds its endpoints
    /// without looking at the others (see [`SliceData::named`]); empty for small slices.
    index: Box<[u16]>,
    pub last_change_trigger: Option<f64>,
}

/// Slices with more endpoints than this get a name index; smaller ones are scanned.
const INDEX_MIN: usize = 16;

/// The hash of an endpoint label (without its length byte) that [`SliceData::named`]
/// takes: computed once per query, used for every slice.
pub fn label_hash(label: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(label);
    h.finish()
}

/// Endpoint `i`'s label (length byte first), from a slice's parts.
fn label_of<'b>(eps: &[Ep], names: &'b [u8], i: usize, buf: &'b mut LabelBuf) -> &'b [u8] {
    let ep = &eps[i];
    if ep.name != NO_NAME {
        let at = ep.name as usize;
        let len = names[at] as usize;
        return &names[at..at + 1 + len];
    }
    let n = write_dashed(ep.addr(), &mut buf[1..]);
    buf[0] = n as u8;
    &buf[..1 + n]
}

/// The slot a hash starts probing from in a table of `len` (a power of two) slots: the
/// hash's top bits, the best mixed by FxHash's multiply.
fn home(hash: u64, len: usize) -> usize {
    (hash >> (64 - len.trailing_zeros())) as usize
}

/// An open-addressing table of `endpoint + 1` (0: empty) at twice the endpoint count,
/// probed linearly from the label's [`home`]. Endpoints are inserted in order, so those
/// with equal labels lie along one probe run in endpoint order. Empty when the slice
/// is small (or too large for `u16`, which the API's 1,000 endpoints per slice never is).
fn name_index(eps: &[Ep], names: &[u8]) -> Box<[u16]> {
    if eps.len() <= INDEX_MIN || eps.len() >= u16::MAX as usize {
        return Box::default();
    }
    let len = (eps.len() * 2).next_power_of_two();
    let mut table = vec![0u16; len];
    for i in 0..eps.len() {
        let mut buf = [0u8; 64];
        let mut at = home(label_hash(&label_of(eps, names, i, &mut buf)[1..]), len);
        while table[at] != 0 {
            at = (at + 1) & (len - 1);
        }
        table[at] = i as u16 + 1;
    }
    table.into_boxed_slice()
}

impl SliceData {
    /// Endpoint `i`'s name as one wire label (length byte first): hostname, pod name,
    /// or the address with dashes (CoreDNS `endpointHostname`).
    pub fn label<'b>(&'b self, i: usize, buf: &'b mut LabelBuf) -> &'b [u8] {
        label_of(&self.eps, &self.names, i, buf)
    }

    /// The endpoints that may be labelled with a label of hash `hash` (see
    /// [`label_hash`]), in endpoint order: those along its probe run in the name index,
    /// or every endpoint of a small slice. The caller compares the labels; each item
    /// is one step of work.
    pub fn named(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let indexed = !self.index.is_empty();
        let len = self.index.len();
        let mut at = if indexed { home(hash, len) } else { 0 };
        let mut scanned = 0;
        std::iter::from_fn(move || {
            if !indexed {
                scanned += 1;
                return (scanned <= self.eps.len()).then_some(scanned - 1);
            }
            let v = self.index[at];
            at = (at + 1) & (len - 1);
            (v != 0).then(|| v as usize - 1)
        })
    }

    /// Whether some endpoint has a name of its own (not its address with dashes).
    pub fn has_names(&self) -> bool {
        !self.names.is_empty()
    }

    pub fn namespace(&self) -> &[u8] {
        label_at(&self.rel, 1)
    }

    /// The key of the service it belongs to (`<service><ns>`).
    pub fn service_key(&self) -> &[u8] {
        &self.rel[..self.rel.len() - 4]
    }
}

impl Keyed for SliceData {
    fn key(&self) -> &[u8] {
        &self.key
    }
}

/// What a name `<svc>.<ns>.svc.<zone>` resolves from: the service and its slices, with
/// what a headless service's answers need prepared, so that answering one costs in
/// proportion to the records it writes.
#[derive(Debug)]
pub struct ServiceEntry {
    pub svc: Arc<ServiceData>,
    pub slices: Box<[Arc<SliceData>]>,
    /// Headless only: every ready address once, in order (a ClusterIP service answers
    /// from its cluster IPs).
    v4: Box<[Ipv4Addr]>,
    v6: Box<[Ipv6Addr]>,
    /// Ready addresses over all slices (for `ignore empty_service`).
    pub ready_addresses: u32,
    /// Headless only: no two endpoints share a name or an address, and no port list
    /// repeats a port number; then no (target, port) or (target, address) pair can
    /// repeat, and answers need no duplicate check.
    pub distinct: bool,
}

impl Keyed for ServiceEntry {
    fn key(&self) -> &[u8] {
        self.svc.key()
    }
}

/// Whether no two ports of a list have the same number (small lists: compared
/// pairwise; the API allows 100 ports per slice, and this runs when a snapshot is
/// built, not per query).
fn port_numbers_distinct(ports: &[Port]) -> bool {
    if ports.len() <= 16 {
        return ports
            .iter()
            .enumerate()
            .all(|(i, p)| ports[..i].iter().all(|q| q.port != p.port));
    }
    let mut seen = std::collections::HashSet::with_capacity(ports.len());
    ports.iter().all(|p| seen.insert(p.port))
}

impl ServiceEntry {
    fn new(svc: Arc<ServiceData>, slices: Box<[Arc<SliceData>]>) -> ServiceEntry {
        let ready = slices.iter().map(|s| s.eps.len()).sum::<usize>();
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        let mut distinct = false;
        if svc.kind == ServiceKind::Headless {
            // Dedup with a set, keeping first-seen order (a small service compares
            // with what it kept, cheaper than hashing).
            let mut seen = std::collections::HashSet::with_capacity(if ready < 64 { 0 } else { ready });
            for e in slices.iter().flat_map(|s| s.eps.iter()) {
                let new = if ready < 64 {
                    match e.addr() {
                        IpAddr::V4(a) => !v4.contains(&a),
                        IpAddr::V6(a) => !v6.contains(&a),
                    }
                } else {
                    seen.insert(e.addr())
                };
                if new {
                    match e.addr() {
                        IpAddr::V4(a) => v4.push(a),
                        IpAddr::V6(a) => v6.push(a),
                    }
                }
            }
            // Slices of one service nearly always share one port list (lists are
            // interned): each distinct list is checked once.
            let mut lists: FxSet<*const Port> = FxSet::default();
            distinct = v4.len() + v6.len() == ready
                && slices.iter().all(|s| !s.has_names())
                && slices
                    .iter()
                    .filter(|s| lists.insert(s.ports.as_ptr()))
                    .all(|s| port_numbers_distinct(&s.ports));
        }
        ServiceEntry {
            svc,
            slices,
            v4: v4.into_boxed_slice(),
            v6: v6.into_boxed_slice(),
            ready_addresses: ready as u32,
            distinct,
        }
    }

    /// Calls `f` with the addresses of a plain A (`v4`) or AAAA query, each once, in
    /// order, until it breaks; returns whether there was any.
    pub fn addresses(&self, v4: bool, mut f: impl FnMut(IpAddr) -> ControlFlow<()>) -> bool {
        let mut any = false;
        let _ = match self.svc.kind {
            ServiceKind::Headless if v4 => self.v4.iter().try_for_each(|a| {
                any = true;
                f(IpAddr::V4(*a))
            }),
            ServiceKind::Headless => self.v6.iter().try_for_each(|a| {
                any = true;
                f(IpAddr::V6(*a))
            }),
            // Cluster IPs are deduplicated when the service is stored.
            ServiceKind::ClusterIp => self
                .svc
                .cluster_ips
                .iter()
                .filter(|ip| ip.is_ipv4() == v4)
                .try_for_each(|ip| {
                    any = true;
                    f(*ip)
                }),
            ServiceKind::ExternalName => ControlFlow::Continue(()),
        };
        any
    }
}

/// An owner of an IP address.
#[derive(Debug, Clone)]
pub enum Owner {
    /// A service with this cluster IP.
    Cluster(Arc<ServiceData>),
    /// Endpoint `.1` of a slice.
    Endpoint(Arc<SliceData>, u32),
}

impl Owner {
    fn is(&self, other: &Owner) -> bool {
        match (self, other) {
            (Owner::Cluster(a), Owner::Cluster(b)) => Arc::ptr_eq(a, b),
            (Owner::Endpoint(a, i), Owner::Endpoint(b, j)) => Arc::ptr_eq(a, b) && i == j,
            _ => false,
        }
    }
}

/// The owners of one address, kept inline when there is one (the usual case). Cluster
/// IPs come first, then endpoints, each in the order they were added: a PTR answer
/// takes the first cluster IP owner or else every endpoint, and finds the former
/// without walking past the latter.
#[derive(Debug, Clone)]
pub enum Owners {
    One(Owner),
    Many(Arc<[Owner]>),
}

impl Owners {
    pub fn as_slice(&self) -> &[Owner] {
        match self {
            Owners::One(o) => std::slice::from_ref(o),
            Owners::Many(v) => v,
        }
    }

    /// `cur` with `added` (a batch: one copy of the list, however many are added).
    fn with(cur: Option<&Owners>, added: Vec<Owner>) -> Owners {
        let old = cur.map_or(&[][..], Owners::as_slice);
        if old.is_empty() && added.len() == 1 {
            return Owners::One(added.into_iter().next().expect("one"));
        }
        let is_cluster = |o: &&Owner| matches!(o, Owner::Cluster(_));
        let all: Arc<[Owner]> = old
            .iter()
            .filter(is_cluster)
            .chain(added.iter().filter(is_cluster))
            .chain(old.iter().filter(|o| !is_cluster(o)))
            .chain(added.iter().filter(|o| !is_cluster(o)))
            .cloned()
            .collect();
        Owners::Many(all)
    }

    fn without(&self, gone: impl Fn(&Owner) -> bool) -> Option<Owners> {
        let left: Vec<Owner> = self.as_slice().iter().filter(|o| !gone(o)).cloned().collect();
        match left.len() {
            0 => None,
            1 => left.into_iter().next().map(Owners::One),
            _ => Some(Owners::Many(left.into())),
        }
    }
}

/// An immutable view of the cluster, published for the workers.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// Every watched resource has completed its first list.
    pub synced: bool,
    /// Unix time of the last change the SOA serial counts (0 before any).
    pub serial: u32,
    namespaces: Sharded<Box<[u8]>, ()>,
    /// Keyed by the wire labels `<svc><ns>` (what a query holds contiguously).
    services: ShardedSet<ServiceEntry>,
    reverse4: Sharded<u32, Owners>,
    reverse6: Sharded<u128, Owners>,
    /// `<ns label><pod IP text>` → number of live pods with that IP there.
    pods: Sharded<Box<[u8]>, u32>,
}

impl Snapshot {
    /// Whether a Namespace of this name (one label, lower-case) exists.
    pub fn namespace_exists(&self, label: &[u8]) -> bool {
        self.namespaces.get(label).is_some()
    }

    /// The service for wire labels `<svc><ns>`.
    pub fn service(&self, key: &[u8]) -> Option<&Arc<ServiceEntry>> {
        self.services.get(key)
    }

    /// Who owns an address (cluster IPs and endpoints).
    pub fn owners(&self, ip: &IpAddr) -> &[Owner] {
        let o = match ip {
            IpAddr::V4(a) => self.reverse4.get(&u32::from(*a)),
            IpAddr::V6(a) => self.reverse6.get(&u128::from(*a)),
        };
        o.map_or(&[], |o| o.as_slice())
    }

    /// Whether a live pod in namespace `ns` (wire label) has `status.podIP` == `ip` (text).
    pub fn pod_exists(&self, ns_label: &[u8], ip: &[u8]) -> bool {
        let mut key = [0u8; 128];
        if ns_label.len() + ip.len() > key.len() {
            return false;
        }
        key[..ns_label.len()].copy_from_slice(ns_label);
        key[ns_label.len()..ns_label.len() + ip.len()].copy_from_slice(ip);
        self.pods.get(&key[..ns_label.len() + ip.len()]).is_some()
    }

    /// (namespaces, services, addresses), for logs and metrics.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.namespaces.len(),
            self.services.len(),
            self.reverse4.len() + self.reverse6.len(),
        )
    }
}

/// How endpoint names are chosen (CoreDNS `endpoint_pod_names`).
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreOptions {
    pub endpoint_pod_names: bool,
}

/// The builder's mutable state. The published maps are the store (updated in place,
/// copy-on-write per shard); beside them only what the snapshot does not hold: slices
/// by key, slices whose service does not exist (yet), pods by name, and the list
/// generations.
#[derive(Default)]
pub struct Store {
    opts: StoreOptions,
    snap: Snapshot,
    slices: FxSet<ByKey<SliceData>>,
    /// Service key → slices naming a service that does not exist.
    orphans: FxMap<Box<[u8]>, Vec<Arc<SliceData>>>,
    pods: FxMap<ObjectKey, (Box<str>, u32)>,
    namespaces: FxMap<Box<str>, u32>,
    /// Port lists, shared by every service and slice that has the same one.
    ports: FxSet<Arc<[Port]>>,
    /// The current list generation of each resource, and whether a list is running.
    generation: FxMap<Resource, (u32, bool)>,
    /// Resources whose first list completed.
    listed: std::collections::HashSet<Resource>,
    /// Resources that must complete a list before the snapshot counts as synced.
    pub required: Vec<Resource>,
    /// A list completed since [`Store::take_list_completed`] was last asked.
    list_completed: bool,
}

fn now_unix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// The endpoint name CoreDNS uses, when it is not the canonical address with dashes:
/// hostname, else (with `endpoint_pod_names`) the pod name, else the address text the
/// API gave, if it is not canonical.
fn endpoint_name(ep: &Endpoint, addr: IpAddr, text: &str, pod_names: bool) -> Option<Box<[u8]>> {
    if let Some(h) = &ep.hostname {
        return Some(wire_labels([h.to_ascii_lowercase().as_str()]));
    }
    if pod_names {
        if let Some(p) = &ep.pod_name {
            return Some(wire_labels([p.to_ascii_lowercase().as_str()]));
        }
    }
    let mut from_text = [0u8; 64];
    let mut n = 0;
    for b in text.bytes().take(62) {
        from_text[n] = if b == b'.' || b == b':' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        };
        n += 1;
    }
    if n > 0 && from_text[n - 1] == b'-' {
        from_text[n] = b'0';
        n += 1;
    }
    let mut canonical = [0u8; 64];
    let m = write_dashed(addr, &mut canonical);
    if from_text[..n] == canonical[..m] {
        return None;
    }
    Some(wire_labels([std::str::from_utf8(&from_text[..n]).unwrap_or("")]))
}

impl Store {
    pub fn new(opts: StoreOptions, required: Vec<Resource>) -> Store {
        Store {
            opts,
            required,
            ..Store::default()
        }
    }

    /// The snapshot as it stands (cheap: shard pointers are cloned).
    pub fn snapshot(&self) -> Snapshot {
        self.snap.clone()
    }

    /// The service for wire labels `<svc><ns>` as applied so far (for the builder's
    /// DNS programming latency, which depends on the slice's service's kind).
    pub fn service(&self, key: &[u8]) -> Option<&Arc<ServiceEntry>> {
        self.snap.service(key)
    }

    /// Whether a list completed since the last call.
    pub fn take_list_completed(&mut self) -> bool {
        std::mem::take(&mut self.list_completed)
    }

    /// Whether every required resource has been listed once.
    pub fn synced(&self) -> bool {
        self.required.iter().all(|r| self.listed.contains(r))
    }

    fn bump_serial(&mut self) {
        self.snap.serial = now_unix();
    }

    /// Applies a list start: what follows replaces the resource's objects. A new list
    /// discards an unfinished one: only the objects of the latest list count.
    pub fn list_start(&mut self, r: Resource) {
        let g = self.generation.entry(r).or_insert((0, false));
        *g = (g.0.wrapping_add(1), true);
    }

    fn current_gen(&self, r: Resource) -> u32 {
        self.generation.get(&r).map_or(0, |g| g.0)
    }

    /// Completes a list: objects of `r` not seen since its start are deleted.
    pub fn list_done(&mut self, r: Resource) {
        let Some(&(generation_now, true)) = self.generation.get(&r) else {
            return;
        };
        self.generation.insert(r, (generation_now, false));
        let stale = |seen: &AtomicU32| seen.load(Ordering::Relaxed) != generation_now;
        match r {
            Resource::Namespaces => {
                let gone: Vec<Box<str>> = self
                    .namespaces
                    .iter()
                    .filter(|(_, g)| **g != generation_now)
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in gone {
                    self.delete_namespace(&n);
                }
            }
            Resource::Services => {
                let gone: Vec<Box<[u8]>> = self
                    .snap
                    .services
                    .iter()
                    .filter(|e| stale(&e.svc.seen))
                    .map(|e| e.key().into())
                    .collect();
                for k in gone {
                    self.delete_service(&k);
                }
            }
            Resource::EndpointSlices => {
                let gone: Vec<Box<[u8]>> = self
                    .slices
                    .iter()
                    .filter(|s| stale(&s.0.seen))
                    .map(|s| s.0.key().into())
                    .collect();
                for k in gone {
                    self.delete_slice(&k);
                }
            }
            Resource::Pods => {
                let gone: Vec<ObjectKey> = self
                    .pods
                    .iter()
                    .filter(|(_, v)| v.1 != generation_now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in gone {
                    self.delete(Resource::Pods, &k);
                }
            }
        }
        // Port lists nobody uses any more.
        self.ports.retain(|p| Arc::strong_count(p) > 1);
        self.listed.insert(r);
        self.list_completed = true;
        self.snap.synced = self.synced();
    }

    /// Adds or replaces an object. Returns whether anything changed.
    pub fn upsert(&mut self, obj: Object) -> bool {
        match obj {
            Object::Namespace(n) => self.upsert_namespace(n),
            Object::Service(s) => self.upsert_service(s),
            Object::EndpointSlice(e) => self.upsert_slice(e),
            Object::Pod(p) => self.upsert_pod(p),
        }
    }

    /// Removes an object. Returns whether anything changed.
    pub fn delete(&mut self, r: Resource, key: &ObjectKey) -> bool {
        match r {
            Resource::Namespaces => self.delete_namespace(&key.name),
            Resource::Services => self.delete_service(&wire_labels([&*key.name, &*key.namespace])),
            Resource::EndpointSlices => self.delete_slice(&slice_key(&key.namespace, &key.name)),
            Resource::Pods => {
                let Some((ip, _)) = self.pods.remove(key) else {
                    return false;
                };
                self.unindex_pod(&key.namespace, &ip);
                self.bump_serial();
                true
            }
        }
    }

    fn intern_ports(&mut self, ports: Vec<Port>) -> Arc<[Port]> {
        if let Some(p) = self.ports.get(ports.as_slice()) {
            return p.clone();
        }
        let p: Arc<[Port]> = ports.into();
        self.ports.insert(p.clone());
        p
    }

    fn upsert_namespace(&mut self, n: Namespace) -> bool {
        let generation_now = self.current_gen(Resource::Namespaces);
        if self.namespaces.insert(n.name.clone(), generation_now).is_some() {
            return false;
        }
        let label: Box<[u8]> = n.name.as_bytes().into();
        self.snap.namespaces.insert(label, ());
        true
    }

    fn delete_namespace(&mut self, name: &str) -> bool {
        if self.namespaces.remove(name).is_none() {
            return false;
        }
        self.snap.namespaces.remove(name.as_bytes());
        true
    }

    fn upsert_service(&mut self, s: Service) -> bool {
        let generation_now = self.current_gen(Resource::Services);
        let rel = wire_labels([&*s.name, &*s.namespace, "svc"]);
        let version = version_hash(&s.resource_version);
        let key = &rel[..rel.len() - 4];
        let old = self.snap.services.get(key).cloned();
        if let Some(o) = &old {
            o.svc.seen.store(generation_now, Ordering::Relaxed);
            if o.svc.version.load(Ordering::Relaxed) == version && !s.resource_version.is_empty() {
                return false;
            }
        }
        let external = (s.kind == ServiceKind::ExternalName)
            .then(|| external_target(&s.external_name))
            .flatten();
        let ports = self.intern_ports(s.ports);
        // Each cluster IP once (the API allows one per family; a repeated one would
        // only repeat the answers).
        let mut cluster_ips = s.cluster_ips;
        if cluster_ips.len() > 1 {
            let mut seen = std::collections::HashSet::with_capacity(cluster_ips.len());
            cluster_ips.retain(|ip| seen.insert(*ip));
        }
        if let Some(o) = &old {
            // A new version that changes nothing served (labels, annotations, status, a
            // relist after which every object has a new resourceVersion): keep the
            // entry. Replacing it would copy the shards that index it, for nothing.
            let o = &o.svc;
            if o.kind == s.kind && *o.cluster_ips == *cluster_ips && o.external == external && o.ports == ports {
                o.version.store(version, Ordering::Relaxed);
                return false;
            }
        }
        let data = Arc::new(ServiceData {
            rel,
            version: AtomicU64::new(version),
            seen: AtomicU32::new(generation_now),
            kind: s.kind,
            cluster_ips: cluster_ips.into_boxed_slice(),
            external,
            ports,
        });
        // CoreDNS bumps the serial for a new service or a change of ports or
        // externalName, not for a cluster IP change alone.
        let bump = old
            .as_ref()
            .is_none_or(|o| o.svc.ports != data.ports || o.svc.external != data.external);
        if let Some(o) = &old {
            self.unindex_cluster_ips(&o.svc);
        }
        self.index_cluster_ips(&data);
        let slices = match old {
            Some(o) => o.slices.clone(),
            None => self
                .orphans
                .remove(data.key())
                .map(Vec::into_boxed_slice)
                .unwrap_or_default(),
        };
        self.snap.services.insert(Arc::new(ServiceEntry::new(data, slices)));
        if bump {
            self.bump_serial();
        }
        true
    }

    fn delete_service(&mut self, key: &[u8]) -> bool {
        let Some(old) = self.snap.services.remove(key) else {
            return false;
        };
        self.unindex_cluster_ips(&old.svc);
        if !old.slices.is_empty() {
            self.orphans.insert(key.into(), old.slices.to_vec());
        }
        self.bump_serial();
        true
    }

    fn upsert_slice(&mut self, e: EndpointSlice) -> bool {
        let generation_now = self.current_gen(Resource::EndpointSlices);
        let key = slice_key(&e.namespace, &e.name);
        let version = version_hash(&e.resource_version);
        let old = self.slices.get(&key[..]).map(|b| b.0.clone());
        if let Some(o) = &old {
            o.seen.store(generation_now, Ordering::Relaxed);
            if o.version.load(Ordering::Relaxed) == version && !e.resource_version.is_empty() {
                return false;
            }
        }
        let mut eps = Vec::new();
        let mut names = Vec::new();
        for ep in &e.endpoints {
            for (addr, text) in &ep.addresses {
                let name = match endpoint_name(ep, *addr, text, self.opts.endpoint_pod_names) {
                    // Offsets are u16: a slice holds at most 1,000 endpoints (an API
                    // limit), so this only guards against a malformed one.
                    Some(label) if names.len() + label.len() < NO_NAME as usize => {
                        names.extend_from_slice(&label);
                        (names.len() - label.len()) as u16
                    }
                    _ => NO_NAME,
                };
                eps.push(Ep::new(*addr, name));
            }
        }
        let ports = self.intern_ports(e.ports);
        let rel = wire_labels([&*e.service, &*e.namespace, "svc"]);
        if let Some(o) = &old {
            // As for services: a new version serving the same endpoints keeps the entry.
            if o.rel == rel && o.ports == ports && *o.eps == *eps && *o.names == *names {
                o.version.store(version, Ordering::Relaxed);
                return false;
            }
        }
        let index = name_index(&eps, &names);
        let data = Arc::new(SliceData {
            key,
            rel,
            version: AtomicU64::new(version),
            seen: AtomicU32::new(generation_now),
            ports,
            eps: eps.into_boxed_slice(),
            names: names.into_boxed_slice(),
            index,
            last_change_trigger: e.last_change_trigger,
        });
        let bump = old
            .as_ref()
            .is_none_or(|o| o.ports != data.ports || o.rel != data.rel || o.eps != data.eps || o.names != data.names);
        if let Some(o) = &old {
            self.unindex_endpoints(o);
            if o.rel != data.rel {
                self.detach(o);
            }
        }
        self.index_endpoints(&data);
        self.slices.replace(ByKey(data.clone()));
        self.attach(data);
        if bump {
            self.bump_serial();
        }
        true
    }

    fn delete_slice(&mut self, key: &[u8]) -> bool {
        let Some(old) = self.slices.take(key).map(|b| b.0) else {
            return false;
        };
        self.unindex_endpoints(&old);
        self.detach(&old);
        self.bump_serial();
        true
    }

    /// Puts a slice into its service's list (replacing one with the same key).
    fn attach(&mut self, slice: Arc<SliceData>) {
        let skey = slice.service_key();
        match self.snap.services.get(skey).cloned() {
            Some(entry) => {
                let mut slices: Vec<Arc<SliceData>> = entry
                    .slices
                    .iter()
                    .filter(|s| s.key() != slice.key())
                    .cloned()
                    .collect();
                slices.push(slice);
                slices.sort_by(|a, b| a.key().cmp(b.key()));
                self.snap
                    .services
                    .insert(Arc::new(ServiceEntry::new(entry.svc.clone(), slices.into())));
            }
            None => {
                let list = self.orphans.entry(skey.into()).or_default();
                list.retain(|s| s.key() != slice.key());
                list.push(slice);
            }
        }
    }

    /// Takes a slice out of its service's list.
    fn detach(&mut self, slice: &Arc<SliceData>) {
        let skey = slice.service_key();
        match self.snap.services.get(skey).cloned() {
            Some(entry) => {
                let slices: Vec<Arc<SliceData>> = entry
                    .slices
                    .iter()
                    .filter(|s| !Arc::ptr_eq(s, slice))
                    .cloned()
                    .collect();
                self.snap
                    .services
                    .insert(Arc::new(ServiceEntry::new(entry.svc.clone(), slices.into())));
            }
            None => {
                if let Some(list) = self.orphans.get_mut(skey) {
                    list.retain(|s| !Arc::ptr_eq(s, slice));
                    if list.is_empty() {
                        self.orphans.remove(skey);
                    }
                }
            }
        }
    }

    fn upsert_pod(&mut self, p: Pod) -> bool {
        let key = ObjectKey {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
        };
        let generation_now = self.current_gen(Resource::Pods);
        if let Some((_, g)) = self.pods.get_mut(&key) {
            *g = generation_now;
        }
        // A terminating pod is not added or updated; an entry already there stays until
        // the delete event, as CoreDNS's pod informer does.
        if p.terminating {
            return false;
        }
        let old = self
            .pods
            .insert(key, (p.pod_ip.clone(), generation_now))
            .map(|(ip, _)| ip);
        if old.as_deref() == Some(&*p.pod_ip) {
            return false;
        }
        if let Some(ip) = old {
            self.unindex_pod(&p.namespace, &ip);
        }
        if !p.pod_ip.is_empty() {
            let k = pod_key(&p.namespace, &p.pod_ip);
            let n = self.snap.pods.get(&k[..]).copied().unwrap_or(0);
            self.snap.pods.insert(k, n + 1);
        }
        self.bump_serial();
        true
    }

    fn unindex_pod(&mut self, ns: &str, ip: &str) {
        if ip.is_empty() {
            return;
        }
        let k = pod_key(ns, ip);
        match self.snap.pods.get(&k[..]).copied() {
            Some(n) if n > 1 => {
                self.snap.pods.insert(k, n - 1);
            }
            Some(_) => {
                self.snap.pods.remove(&k[..]);
            }
            None => {}
        }
    }

    /// Adds owners of `ip` (a batch costs one copy of its list).
    fn add_owners(&mut self, ip: IpAddr, added: Vec<Owner>) {
        match ip {
            IpAddr::V4(a) => {
                let k = u32::from(a);
                let v = Owners::with(self.snap.reverse4.get(&k), added);
                self.snap.reverse4.insert(k, v);
            }
            IpAddr::V6(a) => {
                let k = u128::from(a);
                let v = Owners::with(self.snap.reverse6.get(&k), added);
                self.snap.reverse6.insert(k, v);
            }
        }
    }

    /// Removes the owners of `ip` that `gone` picks (one copy of its list).
    fn remove_owners(&mut self, ip: IpAddr, gone: impl Fn(&Owner) -> bool) {
        match ip {
            IpAddr::V4(a) => {
                let k = u32::from(a);
                let Some(cur) = self.snap.reverse4.get(&k) else { return };
                match cur.without(gone) {
                    Some(v) => self.snap.reverse4.insert(k, v),
                    None => self.snap.reverse4.remove(&k),
                };
            }
            IpAddr::V6(a) => {
                let k = u128::from(a);
                let Some(cur) = self.snap.reverse6.get(&k) else { return };
                match cur.without(gone) {
                    Some(v) => self.snap.reverse6.insert(k, v),
                    None => self.snap.reverse6.remove(&k),
                };
            }
        }
    }

    fn index_cluster_ips(&mut self, svc: &Arc<ServiceData>) {
        for ip in svc.cluster_ips.iter() {
            self.add_owners(*ip, vec![Owner::Cluster(svc.clone())]);
        }
    }

    fn unindex_cluster_ips(&mut self, svc: &Arc<ServiceData>) {
        let me = Owner::Cluster(svc.clone());
        for ip in svc.cluster_ips.iter() {
            self.remove_owners(*ip, |o| o.is(&me));
        }
    }

    /// A slice's endpoints by address, in endpoint order within each address: a slice
    /// whose endpoints share an address updates that address's owners once, not once
    /// per endpoint (which copied a growing list each time: quadratic).
    fn by_address(slice: &SliceData) -> Vec<(IpAddr, u32)> {
        let mut all: Vec<(IpAddr, u32)> = slice
            .eps
            .iter()
            .enumerate()
            .map(|(i, e)| (e.addr(), i as u32))
            .collect();
        all.sort_by_key(|&(ip, i)| (ip, i));
        all
    }

    fn index_endpoints(&mut self, slice: &Arc<SliceData>) {
        let all = Self::by_address(slice);
        for run in all.chunk_by(|a, b| a.0 == b.0) {
            let added = run.iter().map(|&(_, i)| Owner::Endpoint(slice.clone(), i)).collect();
            self.add_owners(run[0].0, added);
        }
    }

    fn unindex_endpoints(&mut self, slice: &Arc<SliceData>) {
        let all = Self::by_address(slice);
        for run in all.chunk_by(|a, b| a.0 == b.0) {
            self.remove_owners(
                run[0].0,
                |o| matches!(o, Owner::Endpoint(s, _) if Arc::ptr_eq(s, slice)),
            );
        }
    }
}

/// The services map key: wire labels `<svc><ns>`.
pub fn service_key(ns: &str, name: &str) -> Box<[u8]> {
    wire_labels([name, ns])
}

/// The slices map key: the namespace as one wire label, then the slice's whole name.
/// Not wire labels throughout: a slice's name is a DNS subdomain of up to 253
/// characters, and cutting it to a label's 63 would give two slices one key.
fn slice_key(ns: &str, name: &str) -> Box<[u8]> {
    let mut k = wire_labels([ns]).into_vec();
    k.extend_from_slice(name.as_bytes());
    k.into_boxed_slice()
}

fn pod_key(ns: &str, ip: &str) -> Box<[u8]> {
    let mut k = wire_labels([ns]).into_vec();
    k.extend_from_slice(ip.as_bytes());
    k.into_boxed_slice()
}

/// An ExternalName target as wire bytes, fully qualified, case kept; `None` when it is
/// an IP address or not a valid name.
fn external_target(name: &str) -> Option<Box<[u8]>> {
    if name.is_empty() || name.trim_end_matches('.').parse::<IpAddr>().is_ok() {
        return None;
    }
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    (out.len() <= 255).then(|| out.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, rv: &str, ips: &[&str]) -> Object {
        Object::Service(Service {
            namespace: ns.into(),
            name: name.into(),
            resource_version: rv.into(),
            kind: ServiceKind::ClusterIp,
            cluster_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            external_name: "".into(),
            ports: vec![Port {
                name: "http".into(),
                protocol: "tcp".into(),
                port: 80,
            }],
        })
    }

    fn slice(ns: &str, name: &str, service: &str, rv: &str, addrs: &[&str]) -> Object {
        Object::EndpointSlice(EndpointSlice {
            namespace: ns.into(),
            name: name.into(),
            resource_version: rv.into(),
            service: service.into(),
            endpoints: addrs
                .iter()
                .map(|a| Endpoint {
                    addresses: vec![(a.parse().unwrap(), (*a).into())],
                    hostname: None,
                    pod_name: None,
                    node_name: None,
                })
                .collect(),
            ports: vec![],
            last_change_trigger: None,
        })
    }

    #[test]
    fn a_published_snapshot_is_unaffected_by_later_changes() {
        let mut st = Store::new(StoreOptions::default(), vec![Resource::Services]);
        st.upsert(svc("ns", "a", "1", &["10.0.0.1"]));
        let before = st.snapshot();
        st.upsert(svc("ns", "a", "2", &["10.0.0.2"]));
        st.upsert(svc("ns", "b", "3", &["10.0.0.3"]));
        let key = service_key("ns", "a");
        let addrs = |e: &ServiceEntry| {
            let mut v = Vec::new();
            e.addresses(true, |ip| {
                v.push(ip);
                ControlFlow::Continue(())
            });
            v
        };
        assert_eq!(
            addrs(before.service(&key).unwrap()),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(before.service(&service_key("ns", "b")).is_none());
        let after = st.snapshot();
        assert_eq!(
            addrs(after.service(&key).unwrap()),
            vec!["10.0.0.2".parse::<IpAddr>().unwrap()]
        );
        // The reverse index moved with the cluster IP.
        assert!(after.owners(&"10.0.0.1".parse().unwrap()).is_empty());
        assert!(matches!(
            after.owners(&"10.0.0.2".parse().unwrap()),
            [Owner::Cluster(_)]
        ));
    }

    #[test]
    fn a_relist_deletes_what_it_did_not_see_and_keeps_unchanged_entries() {
        let mut st = Store::new(StoreOptions::default(), vec![Resource::Services]);
        st.list_start(Resource::Services);
        st.upsert(svc("ns", "a", "1", &["10.0.0.1"]));
        st.upsert(svc("ns", "b", "2", &["10.0.0.2"]));
        st.list_done(Resource::Services);
        assert!(st.synced());
        let a_before = st.snapshot().service(&service_key("ns", "a")).unwrap().clone();
        st.list_start(Resource::Services);
        assert!(
            !st.upsert(svc("ns", "a", "1", &["10.0.0.1"])),
            "same resourceVersion: no change"
        );
        st.list_done(Resource::Services);
        let snap = st.snapshot();
        assert!(Arc::ptr_eq(&a_before, snap.service(&service_key("ns", "a")).unwrap()));
        assert!(snap.service(&service_key("ns", "b")).is_none());
        assert!(snap.owners(&"10.0.0.2".parse().unwrap()).is_empty());
    }

    #[test]
    fn a_new_version_that_serves_the_same_keeps_the_entries_and_their_shards() {
        let mut st = Store::new(StoreOptions::default(), vec![]);
        st.upsert(svc("ns", "a", "1", &["10.0.0.1"]));
        st.upsert(slice("ns", "a-1", "a", "1", &["10.1.0.1"]));
        let before = st.snapshot();
        // Every object at a new resourceVersion, same content (a relist after an
        // etcd restore, a label change): nothing changes, nothing is copied.
        assert!(!st.upsert(svc("ns", "a", "2", &["10.0.0.1"])));
        assert!(!st.upsert(slice("ns", "a-1", "a", "2", &["10.1.0.1"])));
        let after = st.snapshot();
        let key = service_key("ns", "a");
        assert!(Arc::ptr_eq(before.service(&key).unwrap(), after.service(&key).unwrap()));
        for (b, a) in before.services.shards.iter().zip(&after.services.shards) {
            assert!(Arc::ptr_eq(b, a));
        }
        for (b, a) in before.reverse4.shards.iter().zip(&after.reverse4.shards) {
            assert!(Arc::ptr_eq(b, a));
        }
        // The new version is remembered: seeing it again is no change either, and a
        // real change after it is one.
        assert!(!st.upsert(svc("ns", "a", "2", &["10.0.0.1"])));
        assert!(st.upsert(svc("ns", "a", "3", &["10.0.0.9"])));
        assert!(st.upsert(slice("ns", "a-1", "a", "3", &["10.1.0.9"])));
    }

    #[test]
    fn slices_attach_to_their_service_and_to_the_reverse_index() {
        let mut st = Store::new(StoreOptions::default(), vec![]);
        st.upsert(slice("ns", "h-1", "h", "1", &["10.1.0.1", "10.1.0.2"]));
        // A slice without its service still indexes its addresses (PTR works).
        assert!(st.snapshot().service(&service_key("ns", "h")).is_none());
        assert!(matches!(
            st.snapshot().owners(&"10.1.0.1".parse().unwrap()),
            [Owner::Endpoint(_, 0)]
        ));
        let mut h = svc("ns", "h", "2", &[]);
        if let Object::Service(s) = &mut h {
            s.kind = ServiceKind::Headless;
        }
        st.upsert(h);
        st.upsert(slice("ns", "h-2", "h", "3", &["10.1.0.2", "fd00::1"]));
        let snap = st.snapshot();
        let e = snap.service(&service_key("ns", "h")).unwrap();
        assert_eq!(e.v4.len(), 2, "deduplicated across slices");
        assert_eq!(e.v6.len(), 1);
        let mut buf = [0u8; 64];
        assert_eq!(e.slices[1].label(1, &mut buf), b"\x07fd00--1");
        st.delete(
            Resource::EndpointSlices,
            &ObjectKey {
                namespace: "ns".into(),
                name: "h-1".into(),
            },
        );
        let e = st.snapshot().service(&service_key("ns", "h")).unwrap().clone();
        assert_eq!(e.v4.len(), 1);
        assert!(st.snapshot().owners(&"10.1.0.1".parse().unwrap()).is_empty());
    }

    /// Slice names are DNS subdomains of up to 253 characters: two that share their
    /// first 63 are two slices (their key was cut to a label's length, so the second
    /// replaced the first, and deleting either took both away).
    #[test]
    fn long_slice_names_that_share_a_prefix_are_two_slices() {
        let mut st = Store::new(StoreOptions::default(), vec![]);
        let mut h = svc("ns", "h", "1", &[]);
        if let Object::Service(s) = &mut h {
            s.kind = ServiceKind::Headless;
        }
        st.upsert(h);
        let prefix = "h-".repeat(40);
        let (one, two) = (format!("{prefix}one"), format!("{prefix}two"));
        st.upsert(slice("ns", &one, "h", "2", &["10.1.0.1"]));
        st.upsert(slice("ns", &two, "h", "3", &["10.1.0.2"]));
        assert_eq!(st.snapshot().service(&service_key("ns", "h")).unwrap().v4.len(), 2);
        st.delete(
            Resource::EndpointSlices,
            &ObjectKey {
                namespace: "ns".into(),
                name: one.into(),
            },
        );
        let snap = st.snapshot();
        let e = snap.service(&service_key("ns", "h")).unwrap();
        assert_eq!(e.v4.len(), 1);
        assert!(snap.owners(&"10.1.0.1".parse().unwrap()).is_empty());
        assert!(!snap.owners(&"10.1.0.2".parse().unwrap()).is_empty());
    }

    #[test]
    fn owners_keep_cluster_ips_first_and_endpoints_in_order() {
        let mut st = Store::new(StoreOptions::default(), vec![]);
        // 3,000 endpoints of one address in one slice: one update of its owner list
        // (a copy per endpoint was quadratic).
        let many: Vec<String> = (0..3000).map(|_| "10.5.0.1".to_string()).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        st.upsert(slice("ns", "a-1", "a", "1", &refs));
        st.upsert(slice("ns", "b-1", "b", "1", &["10.5.0.1"]));
        st.upsert(svc("ns", "vip", "1", &["10.5.0.1", "10.5.0.1"]));
        let snap = st.snapshot();
        let owners = snap.owners(&"10.5.0.1".parse().unwrap());
        assert_eq!(owners.len(), 3002, "the repeated cluster IP is kept once");
        assert!(matches!(&owners[0], Owner::Cluster(s) if s.name() == b"vip"));
        for (i, o) in owners[1..3001].iter().enumerate() {
            assert!(matches!(o, Owner::Endpoint(s, e) if s.key() == &*slice_key("ns", "a-1") && *e as usize == i));
        }
        assert!(matches!(&owners[3001], Owner::Endpoint(s, 0) if s.key() == &*slice_key("ns", "b-1")));
        // Replacing the big slice takes all its endpoints out in one update.
        st.upsert(slice("ns", "a-1", "a", "2", &["10.5.0.2"]));
        assert_eq!(st.snapshot().owners(&"10.5.0.1".parse().unwrap()).len(), 2);
    }

    #[test]
    fn a_large_slice_finds_endpoints_by_name_through_its_index() {
        let mut st = Store::new(StoreOptions::default(), vec![]);
        let addrs: Vec<String> = (0..200).map(|i| format!("10.6.0.{i}")).collect();
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        st.upsert(slice("ns", "h-1", "h", "1", &refs));
        let snap = st.snapshot();
        let Owner::Endpoint(sl, _) = &snap.owners(&"10.6.0.1".parse().unwrap())[0] else {
            panic!()
        };
        assert!(!sl.index.is_empty());
        for i in [0usize, 77, 199] {
            let want = format!("10-6-0-{i}");
            let hits: Vec<usize> = sl
                .named(label_hash(want.as_bytes()))
                .filter(|&e| {
                    let mut b = [0u8; 64];
                    sl.label(e, &mut b)[1..] == *want.as_bytes()
                })
                .collect();
            assert_eq!(hits, [i]);
            // A probe run, not the slice.
            assert!(sl.named(label_hash(want.as_bytes())).count() < 20);
        }
    }

    #[test]
    fn headless_entries_know_whether_answers_can_repeat() {
        let mut st = Store::new(StoreOptions::default(), vec![]);
        let mut h = svc("ns", "h", "1", &[]);
        if let Object::Service(s) = &mut h {
            s.kind = ServiceKind::Headless;
        }
        st.upsert(h);
        st.upsert(slice("ns", "h-1", "h", "1", &["10.7.0.1", "10.7.0.2"]));
        st.upsert(slice("ns", "h-2", "h", "1", &["10.7.0.3"]));
        let snap = st.snapshot();
        let e = snap.service(&service_key("ns", "h")).unwrap();
        assert!(e.distinct);
        assert!(
            Arc::ptr_eq(&e.slices[0].ports, &e.slices[1].ports),
            "one shared port list"
        );
        // The same address twice: answers must check for repeats.
        st.upsert(slice("ns", "h-3", "h", "1", &["10.7.0.1"]));
        assert!(!st.snapshot().service(&service_key("ns", "h")).unwrap().distinct);
    }

    #[test]
    fn dashed_names() {
        let dashed = |s: &str| {
            let mut out = [0u8; 64];
            let n = write_dashed(s.parse().unwrap(), &mut out);
            String::from_utf8(out[..n].to_vec()).unwrap()
        };
        assert_eq!(dashed("10.0.0.1"), "10-0-0-1");
        assert_eq!(dashed("255.100.9.0"), "255-100-9-0");
        assert_eq!(dashed("2001:db8::"), "2001-db8--0");
        assert_eq!(dashed("5678:abcd::1"), "5678-abcd--1");
        // A name is stored only when it differs from the canonical dashed address.
        let ep = |text: &str, host: Option<&str>| Endpoint {
            addresses: vec![(text.parse().unwrap(), text.into())],
            hostname: host.map(Into::into),
            pod_name: None,
            node_name: None,
        };
        assert!(endpoint_name(&ep("10.0.0.1", None), "10.0.0.1".parse().unwrap(), "10.0.0.1", false).is_none());
        assert_eq!(
            endpoint_name(
                &ep("10.0.0.1", Some("web-0")),
                "10.0.0.1".parse().unwrap(),
                "10.0.0.1",
                false
            )
            .as_deref(),
            Some(&b"\x05web-0"[..])
        );
        assert_eq!(
            endpoint_name(&ep("fd00::1", None), "fd00::1".parse().unwrap(), "fd00:0:0::1", false).as_deref(),
            Some(&b"\x0bfd00-0-0--1"[..])
        );
    }

    #[test]
    fn external_targets() {
        assert_eq!(
            external_target("ext.Example.test").as_deref(),
            Some(&b"\x03ext\x07Example\x04test\x00"[..])
        );
        assert!(external_target("10.0.0.1").is_none());
        assert!(external_target("").is_none());
    }
}
