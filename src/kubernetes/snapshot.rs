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
use std::sync::Arc;

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

/// Wire-format labels (length-prefixed, no root) for `labels` joined in order.
pub fn wire_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Box<[u8]> {
    let mut out = Vec::new();
    for l in labels {
        let l = &l.as_bytes()[..l.len().min(63)];
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.into_boxed_slice()
}

/// A Service as answers need it.
#[derive(Debug)]
pub struct ServiceData {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub resource_version: Box<str>,
    pub kind: ServiceKind,
    pub cluster_ips: Box<[IpAddr]>,
    /// The ExternalName target as wire bytes (fully qualified, case kept); `None` when
    /// the service is not ExternalName or its target is an IP address (ignored, as
    /// CoreDNS does) or not a valid name.
    pub external: Option<Box<[u8]>>,
    pub ports: Box<[Port]>,
    /// `<svc>.<ns>.svc` as wire labels (no root): SRV and PTR targets append a zone.
    pub rel: Box<[u8]>,
    /// Fields that bump the SOA serial when they change (ports, externalName).
    serial_fields: (Box<[Port]>, Box<str>),
}

/// One ready address of an EndpointSlice.
#[derive(Debug, Clone)]
pub struct Ep {
    pub addr: IpAddr,
    /// The endpoint's name (hostname, pod name or dashed address) as one wire label,
    /// length byte first.
    pub name: Box<[u8]>,
}

/// An EndpointSlice as answers need it: one [`Ep`] per ready address.
#[derive(Debug)]
pub struct SliceData {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub resource_version: Box<str>,
    /// The service it belongs to (its `kubernetes.io/service-name` label).
    pub service: Box<str>,
    /// `<service>.<ns>.svc` wire labels.
    pub rel: Box<[u8]>,
    pub ports: Box<[Port]>,
    pub eps: Box<[Ep]>,
    pub last_change_trigger: Option<f64>,
}

/// What a name `<svc>.<ns>.svc.<zone>` resolves from: the service and its slices, with
/// the plain A/AAAA answers prepared.
#[derive(Debug)]
pub struct ServiceEntry {
    pub svc: Arc<ServiceData>,
    pub slices: Box<[Arc<SliceData>]>,
    /// Addresses of a plain A query: the cluster IPs, or (headless) every ready endpoint
    /// address, each once, in order.
    pub v4: Box<[Ipv4Addr]>,
    pub v6: Box<[Ipv6Addr]>,
    /// Ready addresses over all slices (for `ignore empty_service`).
    pub ready_addresses: usize,
}

/// Who owns an IP address: services by cluster IP, and endpoints.
#[derive(Debug, Default, Clone)]
pub struct IpOwners {
    /// Services with this cluster IP, in arrival order.
    pub cluster: Vec<Arc<ServiceData>>,
    /// (slice, index of the endpoint in `slice.eps`).
    pub endpoints: Vec<(Arc<SliceData>, u32)>,
}

/// An immutable view of the cluster, published for the workers.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// Every watched resource has completed its first list.
    pub synced: bool,
    /// Unix time of the last change the SOA serial counts (0 before any).
    pub serial: u32,
    namespaces: Sharded<Box<[u8]>, ()>,
    /// Keyed by the wire labels `<svc>.<ns>` (what a query holds contiguously).
    services: Sharded<Box<[u8]>, Arc<ServiceEntry>>,
    reverse: Sharded<IpAddr, Arc<IpOwners>>,
    /// `<ns label><pod IP text>` → number of live pods with that IP there.
    pods: Sharded<Box<[u8]>, u32>,
}

impl Snapshot {
    /// Whether a Namespace of this name (one wire label, lower-case) exists.
    pub fn namespace_exists(&self, label: &[u8]) -> bool {
        self.namespaces.get(label).is_some()
    }

    /// The service for wire labels `<svc><ns>`.
    pub fn service(&self, key: &[u8]) -> Option<&Arc<ServiceEntry>> {
        self.services.get(key)
    }

    pub fn owners(&self, ip: &IpAddr) -> Option<&Arc<IpOwners>> {
        self.reverse.get(ip)
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

    /// Counts, for logs and metrics.
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.namespaces.len(), self.services.len(), self.reverse.len())
    }
}

/// How endpoint names are chosen (CoreDNS `endpoint_pod_names`).
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreOptions {
    pub endpoint_pod_names: bool,
}

/// The builder's mutable state: the objects by key, plus indexes to find what a change
/// touches. The published maps are updated in place (copy-on-write shards).
#[derive(Default)]
pub struct Store {
    opts: StoreOptions,
    snap: Snapshot,
    // Each object carries the list generation of its resource in which it was last
    // seen, so a relist finds what is gone without a second set of keys in memory.
    services: FxMap<ObjectKey, (Arc<ServiceData>, u32)>,
    slices: FxMap<ObjectKey, (Arc<SliceData>, u32)>,
    /// (namespace, service name) → the keys of its slices.
    slices_by_service: FxMap<(Box<str>, Box<str>), Vec<ObjectKey>>,
    pods: FxMap<ObjectKey, (Box<str>, u32)>,
    namespaces: FxMap<Box<str>, u32>,
    /// The current list generation of each resource, and whether a list is running.
    generation: FxMap<Resource, (u32, bool)>,
    /// Resources whose first list completed.
    listed: std::collections::HashSet<Resource>,
    /// Resources that must complete a list before the snapshot counts as synced.
    pub required: Vec<Resource>,
}

fn dashed(addr: &str) -> String {
    if addr.contains('.') {
        return addr.replace('.', "-");
    }
    let mut s = addr.replace(':', "-");
    if s.ends_with('-') {
        s.push('0');
    }
    s
}

/// The endpoint name CoreDNS uses: hostname, else (with `endpoint_pod_names`) the pod
/// name, else the address with dashes.
fn endpoint_name(ep: &Endpoint, text: &str, pod_names: bool) -> String {
    if let Some(h) = &ep.hostname {
        return h.to_string();
    }
    if pod_names {
        if let Some(p) = &ep.pod_name {
            return p.to_string();
        }
    }
    dashed(text)
}

fn now_unix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
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
        let Some(&(generation_now, true)) = self.generation.get(&r) else { return };
        self.generation.insert(r, (generation_now, false));
        let old = |g: &u32| *g != generation_now;
        let gone: Vec<ObjectKey> = match r {
            Resource::Namespaces => self
                .namespaces
                .iter()
                .filter(|(_, g)| old(g))
                .map(|(n, _)| ObjectKey {
                    namespace: "".into(),
                    name: n.clone(),
                })
                .collect(),
            Resource::Services => self.services.iter().filter(|(_, v)| old(&v.1)).map(|(k, _)| k.clone()).collect(),
            Resource::EndpointSlices => self.slices.iter().filter(|(_, v)| old(&v.1)).map(|(k, _)| k.clone()).collect(),
            Resource::Pods => self.pods.iter().filter(|(_, v)| old(&v.1)).map(|(k, _)| k.clone()).collect(),
        };
        for k in gone {
            self.delete(r, &k);
        }
        self.listed.insert(r);
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
            Resource::Namespaces => {
                if self.namespaces.remove(&key.name).is_some() {
                    self.snap.namespaces.remove(key.name.as_bytes() as &[u8]);
                    return true;
                }
                false
            }
            Resource::Services => {
                let Some((old, _)) = self.services.remove(key) else { return false };
                self.unindex_cluster_ips(&old);
                let k = service_key(&old.namespace, &old.name);
                self.snap.services.remove(&k[..]);
                self.bump_serial();
                true
            }
            Resource::EndpointSlices => {
                let Some((old, _)) = self.slices.remove(key) else { return false };
                self.unindex_endpoints(&old);
                let sk = (old.namespace.clone(), old.service.clone());
                if let Some(list) = self.slices_by_service.get_mut(&sk) {
                    list.retain(|k| k != key);
                    if list.is_empty() {
                        self.slices_by_service.remove(&sk);
                    }
                }
                self.rebuild_service(&old.namespace, &old.service);
                self.bump_serial();
                true
            }
            Resource::Pods => {
                let Some((ip, _)) = self.pods.remove(key) else { return false };
                self.unindex_pod(&key.namespace, &ip);
                self.bump_serial();
                true
            }
        }
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

    fn upsert_service(&mut self, s: Service) -> bool {
        let key = ObjectKey {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
        };
        let generation_now = self.current_gen(Resource::Services);
        if let Some((old, g)) = self.services.get_mut(&key) {
            *g = generation_now;
            if old.resource_version == s.resource_version && !s.resource_version.is_empty() {
                return false;
            }
        }
        let external = (s.kind == ServiceKind::ExternalName)
            .then(|| external_target(&s.external_name))
            .flatten();
        let data = Arc::new(ServiceData {
            rel: wire_labels([&*s.name, &*s.namespace, "svc"]),
            serial_fields: (s.ports.clone().into_boxed_slice(), s.external_name.clone()),
            namespace: s.namespace,
            name: s.name,
            resource_version: s.resource_version,
            kind: s.kind,
            cluster_ips: s.cluster_ips.into_boxed_slice(),
            external,
            ports: s.ports.into_boxed_slice(),
        });
        let bump = match self.services.get(&key) {
            Some((old, _)) => old.serial_fields != data.serial_fields,
            None => true,
        };
        if let Some((old, _)) = self.services.insert(key, (data.clone(), generation_now)) {
            self.unindex_cluster_ips(&old);
        }
        self.index_cluster_ips(&data);
        self.rebuild_service(&data.namespace, &data.name);
        if bump {
            self.bump_serial();
        }
        true
    }

    fn upsert_slice(&mut self, e: EndpointSlice) -> bool {
        let key = ObjectKey {
            namespace: e.namespace.clone(),
            name: e.name.clone(),
        };
        let generation_now = self.current_gen(Resource::EndpointSlices);
        if let Some((old, g)) = self.slices.get_mut(&key) {
            *g = generation_now;
            if old.resource_version == e.resource_version && !e.resource_version.is_empty() {
                return false;
            }
        }
        let mut eps = Vec::new();
        for ep in &e.endpoints {
            for (addr, text) in &ep.addresses {
                let name = endpoint_name(ep, text, self.opts.endpoint_pod_names).to_ascii_lowercase();
                eps.push(Ep {
                    addr: *addr,
                    name: wire_labels([name.as_str()]),
                });
            }
        }
        let data = Arc::new(SliceData {
            rel: wire_labels([&*e.service, &*e.namespace, "svc"]),
            namespace: e.namespace.clone(),
            name: e.name.clone(),
            resource_version: e.resource_version.clone(),
            service: e.service.clone(),
            ports: e.ports.clone().into_boxed_slice(),
            eps: eps.into_boxed_slice(),
            last_change_trigger: e.last_change_trigger,
        });
        let old = self.slices.insert(key.clone(), (data.clone(), generation_now)).map(|(o, _)| o);
        let bump = match &old {
            Some(o) => o.ports != data.ports || !same_eps(&o.eps, &data.eps) || o.service != data.service,
            None => true,
        };
        if let Some(o) = &old {
            self.unindex_endpoints(o);
            if o.service != data.service {
                let sk = (o.namespace.clone(), o.service.clone());
                if let Some(list) = self.slices_by_service.get_mut(&sk) {
                    list.retain(|k| *k != key);
                    if list.is_empty() {
                        self.slices_by_service.remove(&sk);
                    }
                }
                self.rebuild_service(&o.namespace, &o.service);
            }
        }
        self.index_endpoints(&data);
        let list = self
            .slices_by_service
            .entry((data.namespace.clone(), data.service.clone()))
            .or_default();
        if !list.contains(&key) {
            list.push(key);
            list.sort();
        }
        self.rebuild_service(&data.namespace, &data.service);
        if bump {
            self.bump_serial();
        }
        true
    }

    fn upsert_pod(&mut self, p: Pod) -> bool {
        let key = ObjectKey {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
        };
        // A terminating pod is not added or updated; an entry already there stays until
        // the delete event, as CoreDNS's pod informer does.
        let generation_now = self.current_gen(Resource::Pods);
        if let Some((_, g)) = self.pods.get_mut(&key) {
            *g = generation_now;
        }
        if p.terminating {
            return false;
        }
        let old = self.pods.insert(key, (p.pod_ip.clone(), generation_now)).map(|(ip, _)| ip);
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

    /// Recomputes the published entry of service `name` in `ns` from its object and slices.
    fn rebuild_service(&mut self, ns: &str, name: &str) {
        let key = service_key(ns, name);
        let okey = ObjectKey {
            namespace: ns.into(),
            name: name.into(),
        };
        let Some(svc) = self.services.get(&okey).map(|(s, _)| s.clone()) else {
            self.snap.services.remove(&key[..]);
            return;
        };
        let slices: Box<[Arc<SliceData>]> = self
            .slices_by_service
            .get(&(ns.into(), name.into()))
            .map(|keys| keys.iter().filter_map(|k| self.slices.get(k).map(|(s, _)| s.clone())).collect())
            .unwrap_or_default();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut push = |ip: IpAddr| match ip {
            IpAddr::V4(a) if !v4.contains(&a) => v4.push(a),
            IpAddr::V6(a) if !v6.contains(&a) => v6.push(a),
            _ => {}
        };
        let ready_addresses = slices.iter().map(|s| s.eps.len()).sum();
        match svc.kind {
            ServiceKind::ClusterIp => svc.cluster_ips.iter().copied().for_each(&mut push),
            ServiceKind::Headless => {
                if slices.len() == 1 || ready_addresses < 64 {
                    slices.iter().flat_map(|s| s.eps.iter()).for_each(|e| push(e.addr));
                } else {
                    // Many addresses: dedup with a set, keeping first-seen order.
                    let mut seen = std::collections::HashSet::with_capacity(ready_addresses);
                    for e in slices.iter().flat_map(|s| s.eps.iter()) {
                        if seen.insert(e.addr) {
                            match e.addr {
                                IpAddr::V4(a) => v4.push(a),
                                IpAddr::V6(a) => v6.push(a),
                            }
                        }
                    }
                }
            }
            ServiceKind::ExternalName => {}
        }
        let entry = ServiceEntry {
            svc,
            slices,
            v4: v4.into_boxed_slice(),
            v6: v6.into_boxed_slice(),
            ready_addresses,
        };
        self.snap.services.insert(key, Arc::new(entry));
    }

    fn index_cluster_ips(&mut self, svc: &Arc<ServiceData>) {
        for ip in svc.cluster_ips.iter() {
            let mut owners = self.snap.reverse.get(ip).map(|o| (**o).clone()).unwrap_or_default();
            owners.cluster.push(svc.clone());
            self.snap.reverse.insert(*ip, Arc::new(owners));
        }
    }

    fn unindex_cluster_ips(&mut self, svc: &Arc<ServiceData>) {
        for ip in svc.cluster_ips.iter() {
            self.update_owners(ip, |o| o.cluster.retain(|s| !Arc::ptr_eq(s, svc)));
        }
    }

    fn index_endpoints(&mut self, slice: &Arc<SliceData>) {
        for (i, ep) in slice.eps.iter().enumerate() {
            let mut owners = self.snap.reverse.get(&ep.addr).map(|o| (**o).clone()).unwrap_or_default();
            owners.endpoints.push((slice.clone(), i as u32));
            self.snap.reverse.insert(ep.addr, Arc::new(owners));
        }
    }

    fn unindex_endpoints(&mut self, slice: &Arc<SliceData>) {
        for ep in slice.eps.iter() {
            self.update_owners(&ep.addr, |o| o.endpoints.retain(|(s, _)| !Arc::ptr_eq(s, slice)));
        }
    }

    fn update_owners(&mut self, ip: &IpAddr, f: impl FnOnce(&mut IpOwners)) {
        let Some(cur) = self.snap.reverse.get(ip) else { return };
        let mut owners = (**cur).clone();
        f(&mut owners);
        if owners.cluster.is_empty() && owners.endpoints.is_empty() {
            self.snap.reverse.remove(ip);
        } else {
            self.snap.reverse.insert(*ip, Arc::new(owners));
        }
    }
}

fn same_eps(a: &[Ep], b: &[Ep]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.addr == y.addr && x.name == y.name)
}

/// The services map key: wire labels `<svc><ns>`.
pub fn service_key(ns: &str, name: &str) -> Box<[u8]> {
    wire_labels([name, ns])
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
        assert_eq!(&*before.service(&key).unwrap().v4, &["10.0.0.1".parse::<Ipv4Addr>().unwrap()]);
        assert!(before.service(&service_key("ns", "b")).is_none());
        let after = st.snapshot();
        assert_eq!(&*after.service(&key).unwrap().v4, &["10.0.0.2".parse::<Ipv4Addr>().unwrap()]);
        // The reverse index moved with the cluster IP.
        assert!(after.owners(&"10.0.0.1".parse().unwrap()).is_none());
        assert_eq!(after.owners(&"10.0.0.2".parse().unwrap()).unwrap().cluster.len(), 1);
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
        assert!(!st.upsert(svc("ns", "a", "1", &["10.0.0.1"])), "same resourceVersion: no change");
        st.list_done(Resource::Services);
        let snap = st.snapshot();
        assert!(Arc::ptr_eq(&a_before, snap.service(&service_key("ns", "a")).unwrap()));
        assert!(snap.service(&service_key("ns", "b")).is_none());
        assert!(snap.owners(&"10.0.0.2".parse().unwrap()).is_none());
    }

    #[test]
    fn slices_attach_to_their_service_and_to_the_reverse_index() {
        let mut st = Store::new(StoreOptions::default(), vec![]);
        st.upsert(slice("ns", "h-1", "h", "1", &["10.1.0.1", "10.1.0.2"]));
        // A slice without its service still indexes its addresses (PTR works).
        assert!(st.snapshot().service(&service_key("ns", "h")).is_none());
        assert_eq!(st.snapshot().owners(&"10.1.0.1".parse().unwrap()).unwrap().endpoints.len(), 1);
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
        assert_eq!(&*e.slices[1].eps[1].name, b"\x07fd00--1");
        st.delete(
            Resource::EndpointSlices,
            &ObjectKey {
                namespace: "ns".into(),
                name: "h-1".into(),
            },
        );
        let e = st.snapshot().service(&service_key("ns", "h")).unwrap().clone();
        assert_eq!(e.v4.len(), 1);
        assert!(st.snapshot().owners(&"10.1.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn dashed_names() {
        assert_eq!(dashed("10.0.0.1"), "10-0-0-1");
        assert_eq!(dashed("2001:db8::"), "2001-db8--0");
        assert_eq!(dashed("5678:abcd::1"), "5678-abcd--1");
    }

    #[test]
    fn external_targets() {
        assert_eq!(external_target("ext.Example.test").as_deref(), Some(&b"\x03ext\x07Example\x04test\x00"[..]));
        assert!(external_target("10.0.0.1").is_none());
        assert!(external_target("").is_none());
    }
}
