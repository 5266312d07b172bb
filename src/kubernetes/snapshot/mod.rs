//! The snapshot: an immutable, query-ready view of the cluster, and the store the
//! builder keeps to make the next one.
//!
//! Every map is split into shards, each behind an `Arc`. Publishing a snapshot clones
//! the shard pointers, not the entries; changing an entry copies only its shard (a few
//! hundred entries at most), so a change costs in proportion to what changed, not to the
//! size of the cluster (ARCHITECTURE.md rule 3). Entries themselves are shared `Arc`s
//! between the store and every snapshot that holds them, so the cluster exists once in
//! memory, however many snapshots the workers still hold.
//!
//! ```text
//!   Event ──▶ store::ClusterStore (builder thread: applies, keeps what the snapshot does not hold)
//!               │ snapshot(): clones shard pointers
//!               ▼
//!             Snapshot ── namespaces, services (entry::ServiceEntry: service + slices),
//!                         reverse index (owners::Owners), pods ──▶ the workers' answers
//! ```
//!
//! - `shard`: the copy-on-write sharded maps and sets, and the hasher they use;
//! - `entry`: a service as answers need it ([`ServiceData`], [`ServiceEntry`]);
//! - `slice`: an EndpointSlice's ready addresses and their names ([`SliceData`]);
//! - `owners`: who owns an address, for PTR and NS answers;
//! - `store`: the builder's side, which applies events and publishes.

use std::net::IpAddr;
use std::sync::Arc;

mod entry;
mod owners;
mod pods;
mod shard;
mod slice;
mod store;

pub use entry::{Outside, ServiceData, ServiceEntry, label_at, wire_labels};
pub use owners::{Owner, Owners};
pub use pods::{ClientPod, PodRef};
pub use shard::{ByKey, FxHasher, Keyed, Sharded, ShardedSet, SortedShard, SortedShards};
pub use slice::{Ep, Ep4, Eps, LabelBuf, SliceData, label_hash};
pub use store::{ClusterStore, MAX_EXTERNAL_OWNERS, StoreOptions, service_key};

/// An immutable view of the cluster, published for the workers.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// Every watched resource has completed its first list.
    pub synced: bool,
    /// Unix time of the last change the SOA serial counts (0 before any).
    pub serial: u32,
    /// Unix time of the last change to what `k8s_external` serves (CoreDNS's
    /// `ModifiedExternal`): a service with external addresses added, changed or gone.
    pub external_serial: u32,
    namespaces: Sharded<Box<[u8]>, ()>,
    /// Keyed by the wire labels `<svc><ns>` (what a query holds contiguously).
    services: ShardedSet<ServiceEntry>,
    /// Sorted arrays, not hash tables: one entry per cluster IP and endpoint address
    /// makes this the largest table of the snapshot.
    reverse4: SortedShards<u32, Owners>,
    reverse6: SortedShards<u128, Owners>,
    /// Pods by address, for the client's pod and `pods verified` answers.
    pods: pods::PodIndex,
    /// External address → the services that have it (`k8s_external`'s PTR).
    external: Sharded<IpAddr, Arc<[Arc<ServiceData>]>>,
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

    /// How many shards the services are kept in: a zone transfer walks them shard by
    /// shard ([`Snapshot::shard_services`]), holding 64 services' pointers at a time.
    pub fn service_shards(&self) -> usize {
        self.services.shards.len()
    }

    /// The services of shard `i`, in no particular order (none when `i` is past the
    /// last shard).
    pub fn shard_services(&self, i: usize) -> impl Iterator<Item = &Arc<ServiceEntry>> {
        self.services
            .shards
            .get(i)
            .into_iter()
            .flat_map(|s| s.iter().map(|b| &b.0))
    }

    /// Who owns an address (cluster IPs and endpoints).
    pub fn owners(&self, ip: &IpAddr) -> &[Owner] {
        let o = match ip {
            IpAddr::V4(a) => self.reverse4.get(&u32::from(*a)),
            IpAddr::V6(a) => self.reverse6.get(&u128::from(*a)),
        };
        o.map_or(&[], |o| o.as_slice())
    }

    /// The services with `ip` among their external addresses, in the order they came.
    pub fn external_owners(&self, ip: &IpAddr) -> &[Arc<ServiceData>] {
        self.external.get(ip).map_or(&[], |o| o)
    }

    /// Whether a live pod in namespace `ns` (wire label) has `status.podIP` == `ip` (text).
    pub fn pod_exists(&self, ns_label: &[u8], ip: &[u8]) -> bool {
        ns_label.split_first().is_some_and(|(_, ns)| self.pods.exists(ns, ip))
    }

    /// What the address `ip` says about the pod a query from it came from (see
    /// [`ClientPod`]). Pods are known only with `pods verified`.
    pub fn client_pod(&self, ip: IpAddr) -> ClientPod<'_> {
        self.pods.client_pod(ip)
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

#[cfg(test)]
mod tests {
    use std::ops::ControlFlow;

    use super::slice::write_dashed;
    use super::store::{endpoint_name, external_target, slice_key};
    use super::*;
    use crate::kubernetes::model::{Endpoint, EndpointSlice, Object, ObjectKey, Port, Resource, Service, ServiceKind};

    fn svc(ns: &str, name: &str, rv: &str, ips: &[&str]) -> Object {
        Object::Service(Service {
            namespace: ns.into(),
            name: name.into(),
            resource_version: rv.into(),
            kind: ServiceKind::ClusterIp,
            cluster_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            external_name: "".into(),
            external_ips: Vec::new(),
            ports: vec![Port {
                name: "http".into(),
                protocol: "tcp".into(),
                port: 80,
            }],
        })
    }

    /// How many addresses an A (`v4`) or AAAA query for the service gets.
    fn count(e: &ServiceEntry, v4: bool) -> usize {
        let mut n = 0;
        e.addresses(v4, |_| {
            n += 1;
            ControlFlow::Continue(())
        });
        n
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
        let mut st = ClusterStore::new(StoreOptions::default(), vec![Resource::Services]);
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
        let mut st = ClusterStore::new(StoreOptions::default(), vec![Resource::Services]);
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
        let mut st = ClusterStore::new(StoreOptions::default(), vec![]);
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
        let mut st = ClusterStore::new(StoreOptions::default(), vec![]);
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
        assert_eq!(count(e, true), 2, "deduplicated across slices");
        assert_eq!(count(e, false), 1);
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
        assert_eq!(count(&e, true), 1);
        assert!(st.snapshot().owners(&"10.1.0.1".parse().unwrap()).is_empty());
    }

    /// Slice names are DNS subdomains of up to 253 characters: two that share their
    /// first 63 are two slices (their key was cut to a label's length, so the second
    /// replaced the first, and deleting either took both away).
    #[test]
    fn long_slice_names_that_share_a_prefix_are_two_slices() {
        let mut st = ClusterStore::new(StoreOptions::default(), vec![]);
        let mut h = svc("ns", "h", "1", &[]);
        if let Object::Service(s) = &mut h {
            s.kind = ServiceKind::Headless;
        }
        st.upsert(h);
        let prefix = "h-".repeat(40);
        let (one, two) = (format!("{prefix}one"), format!("{prefix}two"));
        st.upsert(slice("ns", &one, "h", "2", &["10.1.0.1"]));
        st.upsert(slice("ns", &two, "h", "3", &["10.1.0.2"]));
        assert_eq!(count(st.snapshot().service(&service_key("ns", "h")).unwrap(), true), 2);
        st.delete(
            Resource::EndpointSlices,
            &ObjectKey {
                namespace: "ns".into(),
                name: one.into(),
            },
        );
        let snap = st.snapshot();
        let e = snap.service(&service_key("ns", "h")).unwrap();
        assert_eq!(count(e, true), 1);
        assert!(snap.owners(&"10.1.0.1".parse().unwrap()).is_empty());
        assert!(!snap.owners(&"10.1.0.2".parse().unwrap()).is_empty());
    }

    #[test]
    fn owners_keep_cluster_ips_first_and_endpoints_in_order() {
        let mut st = ClusterStore::new(StoreOptions::default(), vec![]);
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
        let mut st = ClusterStore::new(StoreOptions::default(), vec![]);
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
        let mut st = ClusterStore::new(StoreOptions::default(), vec![]);
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

    /// What few services have (an ExternalName target, external addresses) costs the
    /// others one pointer: 72 bytes, 8 fewer than the ExternalName target alone took.
    #[test]
    fn a_service_without_external_addresses_pays_one_pointer_for_them() {
        assert_eq!(std::mem::size_of::<ServiceData>(), 72);
        let mut st = ClusterStore::new(StoreOptions::default(), vec![]);
        st.upsert(svc("ns", "a", "1", &["10.0.0.1"]));
        assert!(
            st.snapshot()
                .service(&service_key("ns", "a"))
                .unwrap()
                .svc
                .outside
                .is_none()
        );
    }

    /// The reverse index has an entry per cluster IP and endpoint address (its largest
    /// table): an IPv4 address and its owners in 20 bytes (key and value in two dense
    /// arrays, no padding between them).
    #[test]
    fn a_reverse_index_entry_is_20_bytes() {
        assert_eq!(std::mem::size_of::<Owner>(), 16);
        assert_eq!(std::mem::size_of::<Owners>(), 16);
    }

    /// An IPv4 slice keeps 6 bytes an endpoint; one IPv6 address makes it keep 20.
    #[test]
    fn ipv4_slices_keep_small_endpoints() {
        assert_eq!(std::mem::size_of::<slice::Ep4>(), 6);
        let mut st = ClusterStore::new(StoreOptions::default(), vec![]);
        st.upsert(slice("ns", "a-1", "a", "1", &["10.1.0.1", "10.1.0.2"]));
        st.upsert(slice("ns", "b-1", "b", "1", &["10.1.0.3", "fd00::3"]));
        let snap = st.snapshot();
        let Owner::Endpoint(a, 1) = &snap.owners(&"10.1.0.2".parse().unwrap())[0] else {
            panic!("not endpoint 1")
        };
        assert!(matches!(a.eps, slice::Eps::V4(_)));
        assert_eq!(a.eps.addr(1), "10.1.0.2".parse::<IpAddr>().unwrap());
        let Owner::Endpoint(b, 1) = &snap.owners(&"fd00::3".parse().unwrap())[0] else {
            panic!("not endpoint 1")
        };
        assert!(matches!(b.eps, slice::Eps::Any(_)));
        assert_eq!(b.eps.addr(0), "10.1.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(b.rel(), b"\x01b\x02ns\x03svc");
        assert_eq!(b.key(), &*slice_key("ns", "b-1"));
    }

    /// The reverse index's shards stay sorted through inserts and removals in any
    /// order, and a removal copies nothing when the address is not there.
    #[test]
    fn the_reverse_index_finds_what_it_holds_in_any_insert_order() {
        let mut m: SortedShards<u32, u32> = SortedShards::default();
        let mut x = 12345u32;
        let mut keys = Vec::new();
        for i in 0..5000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            keys.push(x);
            assert_eq!(m.insert(x, i), None);
        }
        assert_eq!(m.len(), 5000);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(m.get(k), Some(&(i as u32)));
        }
        assert_eq!(m.insert(keys[7], 99), Some(7));
        let before = m.clone();
        assert_eq!(m.remove(&1), None);
        for (b, a) in before.shards.iter().zip(&m.shards) {
            assert!(Arc::ptr_eq(b, a), "nothing removed, nothing copied");
        }
        for k in &keys[..4000] {
            assert!(m.remove(k).is_some());
        }
        assert_eq!(m.len(), 1000);
        assert!(keys[..4000].iter().all(|k| m.get(k).is_none()));
        assert!(keys[4000..].iter().all(|k| m.get(k).is_some()));
        assert_eq!(before.len(), 5000, "the copy kept its entries");
        assert_eq!(before.get(&keys[7]), Some(&99));
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
