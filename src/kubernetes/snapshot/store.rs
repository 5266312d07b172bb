//! The builder's side of the snapshot: the store that applies list and watch events in
//! place (copy-on-write per shard) and keeps what the snapshot does not hold.

use std::hash::Hasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::Snapshot;
use super::entry::{Outside, ServiceData, ServiceEntry, wire_labels};
use super::owners::{Owner, Owners};
use super::shard::{ByKey, FxHasher, FxMap, FxSet, Keyed};
use super::slice::{Ep, Eps, NO_NAME, SliceData, write_dashed};
use crate::kubernetes::model::{
    Endpoint, EndpointSlice, ExternalIp, Namespace, Object, ObjectKey, Pod, Port, Resource, Service, ServiceKind,
};

/// resourceVersions are only compared for equality: a hash holds them in 8 bytes.
pub(super) fn version_hash(rv: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(rv.as_bytes());
    h.finish() | 1
}

/// How endpoint names are chosen (CoreDNS `endpoint_pod_names`).
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreOptions {
    pub endpoint_pod_names: bool,
}

/// The builder's mutable state. The published maps are the store (updated in place,
/// copy-on-write per shard); beside them only what the snapshot does not hold: slices
/// by key, slices whose service does not exist (yet), the pod table's bookkeeping
/// (namespace ids, arena garbage), and the list generations.
#[derive(Default)]
pub struct ClusterStore {
    opts: StoreOptions,
    snap: Snapshot,
    slices: FxSet<ByKey<SliceData>>,
    /// Service key → slices naming a service that does not exist.
    orphans: FxMap<Box<[u8]>, Vec<Arc<SliceData>>>,
    /// The builder's side of the pod table (`pods verified`): list generations,
    /// namespace ids and arena garbage counts; the pods themselves are in the snapshot.
    pods: super::pods::Pods,
    namespaces: FxMap<Box<str>, u32>,
    /// Port lists, shared by every service and slice that has the same one.
    ports: FxSet<Arc<[Port]>>,
    /// The current list generation of each resource, and whether a list is running.
    generation: FxMap<Resource, (u32, bool)>,
    /// Resources whose first list completed.
    listed: std::collections::HashSet<Resource>,
    /// Resources that must complete a list before the snapshot counts as synced.
    pub required: Vec<Resource>,
    /// A list completed since [`ClusterStore::take_list_completed`] was last asked.
    list_completed: bool,
}

/// The Services a PTR answer for one external address names at most (k8s_external):
/// kept so that indexing a Service costs a bounded copy however many share the address.
pub const MAX_EXTERNAL_OWNERS: usize = 64;

pub(super) fn now_unix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// The endpoint name CoreDNS uses, when it is not the canonical address with dashes:
/// hostname, else (with `endpoint_pod_names`) the pod name, else the address text the
/// API gave, if it is not canonical.
pub(super) fn endpoint_name(ep: &Endpoint, addr: IpAddr, text: &str, pod_names: bool) -> Option<Box<[u8]>> {
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

impl ClusterStore {
    pub fn new(opts: StoreOptions, required: Vec<Resource>) -> ClusterStore {
        ClusterStore {
            opts,
            required,
            ..ClusterStore::default()
        }
    }

    /// Heap bytes the services, slices and the reverse index ask for, by structure
    /// (malloc's per-allocation overhead apart): `cargo bench --bench snapshot` prints
    /// it, so that a change of layout shows where it moved bytes.
    pub fn heap_breakdown(&self) -> Vec<(&'static str, usize)> {
        fn set_bytes(buckets: usize, slot: usize) -> usize {
            // hashbrown: a power of two of buckets holds 7/8 of it, a control byte each.
            let b = if buckets == 0 {
                0
            } else {
                (buckets * 8 / 7).next_power_of_two()
            };
            b * (slot + 1)
        }
        let owners = |o: &Owners| match o {
            Owners::One(_) => 0,
            Owners::Many(v) => 16 + 16 + 16 * v.len(),
        };
        let reverse: usize = self
            .snap
            .reverse4
            .shards
            .iter()
            .map(|s| 16 + s.heap_bytes() + s.values().map(owners).sum::<usize>())
            .chain(
                self.snap
                    .reverse6
                    .shards
                    .iter()
                    .map(|s| 16 + s.heap_bytes() + s.values().map(owners).sum::<usize>()),
            )
            .sum();
        let (mut entries, mut records, mut ips) = (0, 0, 0);
        for e in self.snap.services.iter() {
            let (a, b, c) = e.heap_bytes();
            entries += a;
            records += b;
            ips += c;
        }
        let (mut slices, mut eps) = (0, 0);
        for s in self.slices.iter() {
            let (a, b) = s.0.heap_bytes();
            slices += a;
            eps += b;
        }
        let sets = self
            .snap
            .services
            .shards
            .iter()
            .map(|s| 16 + set_bytes(s.capacity(), 8))
            .sum::<usize>()
            + set_bytes(self.slices.capacity(), 8);
        vec![
            ("reverse index", reverse),
            ("service records", records),
            ("service entries", entries),
            ("slice records", slices),
            ("endpoints", eps),
            ("service/slice lookup sets", sets),
            ("cluster IPs", ips),
        ]
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
                if self.pods.remove_stale(&mut self.snap.pods, generation_now).counted {
                    self.bump_serial();
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
                let Some(c) = self.pods.remove(&mut self.snap.pods, key) else {
                    return false;
                };
                if c.counted {
                    self.bump_serial();
                }
                c.changed
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
        let outside = outside(&s);
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
            if o.kind == s.kind && *o.cluster_ips == *cluster_ips && o.outside == outside && o.ports == ports {
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
            outside,
            ports,
        });
        // CoreDNS bumps the serial for a new service or a change of ports or
        // externalName, not for a cluster IP change alone.
        let bump = old
            .as_ref()
            .is_none_or(|o| o.svc.ports != data.ports || o.svc.external() != data.external());
        // And the external zone's for one with external addresses, added or with
        // those or its ports changed (`serviceModified`).
        let ext_changed = match &old {
            None => data.has_external(),
            Some(o) => {
                o.svc.external_ips() != data.external_ips()
                    || o.svc.external_hosts() != data.external_hosts()
                    || (data.has_external() && o.svc.ports != data.ports)
            }
        };
        if ext_changed {
            self.snap.external_serial = now_unix();
        }
        if let Some(o) = &old {
            self.unindex_cluster_ips(&o.svc);
            self.unindex_external(&o.svc);
        }
        self.index_cluster_ips(&data);
        self.index_external(&data);
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
        self.unindex_external(&old.svc);
        if old.svc.has_external() {
            self.snap.external_serial = now_unix();
        }
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
        let eps = Eps::from_vec(eps);
        if let Some(o) = &old {
            // As for services: a new version serving the same endpoints keeps the entry.
            if o.rel() == &rel[..] && o.ports == ports && o.eps == eps && o.names() == &names[..] {
                o.version.store(version, Ordering::Relaxed);
                return false;
            }
        }
        let Some(data) = SliceData::new(
            &key,
            &rel,
            &names,
            version,
            generation_now,
            ports,
            eps,
            e.last_change_trigger,
        ) else {
            return false;
        };
        let data = Arc::new(data);
        let bump = old.as_ref().is_none_or(|o| {
            o.ports != data.ports || o.rel() != data.rel() || o.eps != data.eps || o.names() != data.names()
        });
        if let Some(o) = &old {
            self.unindex_endpoints(o);
            if o.rel() != data.rel() {
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
        let generation_now = self.current_gen(Resource::Pods);
        let c = self.pods.upsert(&mut self.snap.pods, &p, generation_now);
        if c.counted {
            self.bump_serial();
        }
        c.changed
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

    /// Adds `svc` to the owners of each of its external addresses, up to
    /// [`MAX_EXTERNAL_OWNERS`] an address: each change copies the address's list, and
    /// an address every LoadBalancer Service shares (k3s's ServiceLB puts the node's
    /// addresses on each) would otherwise make a list of n Services cost n².
    fn index_external(&mut self, svc: &Arc<ServiceData>) {
        for ip in svc.external_ips() {
            let list: Arc<[Arc<ServiceData>]> = match self.snap.external.get(ip) {
                Some(cur) if cur.len() >= MAX_EXTERNAL_OWNERS => continue,
                Some(cur) => cur.iter().cloned().chain([svc.clone()]).collect(),
                None => Arc::new([svc.clone()]),
            };
            self.snap.external.insert(*ip, list);
        }
    }

    fn unindex_external(&mut self, svc: &Arc<ServiceData>) {
        for ip in svc.external_ips() {
            let Some(cur) = self.snap.external.get(ip) else {
                continue;
            };
            let left: Arc<[Arc<ServiceData>]> = cur.iter().filter(|s| !Arc::ptr_eq(s, svc)).cloned().collect();
            if left.is_empty() {
                self.snap.external.remove(ip);
            } else {
                self.snap.external.insert(*ip, left);
            }
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
pub(super) fn slice_key(ns: &str, name: &str) -> Box<[u8]> {
    let mut k = wire_labels([ns]).into_vec();
    k.extend_from_slice(name.as_bytes());
    k.into_boxed_slice()
}

/// What a service has beyond its cluster IPs and ports, or `None` when it has nothing
/// of it (most services: they pay one pointer).
fn outside(s: &Service) -> Option<Box<Outside>> {
    let external_name = (s.kind == ServiceKind::ExternalName)
        .then(|| external_target(&s.external_name))
        .flatten();
    let mut ips = Vec::new();
    let mut hosts = Vec::new();
    for e in &s.external_ips {
        match e {
            ExternalIp::Addr(ip) => ips.push(*ip),
            ExternalIp::Host(h) => hosts.extend(external_target(h)),
        }
    }
    if external_name.is_none() && ips.is_empty() && hosts.is_empty() {
        return None;
    }
    Some(Box::new(Outside {
        external_name,
        ips: ips.into_boxed_slice(),
        hosts: hosts.into_boxed_slice(),
    }))
}

/// An ExternalName target as wire bytes, fully qualified, case kept; `None` when it is
/// an IP address or not a valid name.
pub(super) fn external_target(name: &str) -> Option<Box<[u8]>> {
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
