//! Which pods have an address: the client's pod, for autopath and the kubernetes
//! plugin's client metadata.
//!
//! CoreDNS takes the first pod its index lists for the client's address. When two pods
//! have it (an address reused while the old pod terminates, coredns#2842; host-network
//! pods, which all have their node's address) that first pod is arbitrary, and two
//! queries from one client can be told two namespaces. Here every pod with a
//! `status.podIP` is kept under it, terminating ones included (they may still hold the
//! address), and [`ClientPod::of`] names a pod only when exactly one has the address
//! and it has a network of its own.

use std::net::IpAddr;
use std::sync::Arc;

use super::shard::{FxMap, Sharded};
use crate::kubernetes::model::{ObjectKey, Pod};

/// A pod with an address, as the owner index keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    /// Shared by every pod of the namespace (one allocation a namespace, not a pod).
    pub namespace: Arc<str>,
    pub name: Box<str>,
    /// `spec.hostNetwork`: its address is its node's.
    pub host_network: bool,
}

/// What an address says about the pod a query came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientPod<'a> {
    /// Exactly one pod has the address, with a network of its own.
    One(&'a PodRef),
    /// No pod has it (not a pod, or pods are not watched).
    Unknown,
    /// More than one pod has it (a reused address, several host-network pods).
    Ambiguous,
    /// The one pod that has it shares its node's network: the address is also every
    /// other process's on that node.
    HostNetwork,
}

impl<'a> ClientPod<'a> {
    /// The verdict for the pods listed under an address.
    pub fn of(pods: &'a [PodRef]) -> ClientPod<'a> {
        match pods {
            [] => ClientPod::Unknown,
            [p] if p.host_network => ClientPod::HostNetwork,
            [p] => ClientPod::One(p),
            _ => ClientPod::Ambiguous,
        }
    }

    /// The pod, when there is exactly one.
    pub fn pod(self) -> Option<&'a PodRef> {
        match self {
            ClientPod::One(p) => Some(p),
            _ => None,
        }
    }
}

/// The pods of one address: inline when there is one (nearly always), so that an
/// address costs its table entry and the pod's name, no list allocation of its own.
#[derive(Clone, Debug)]
pub(super) enum PodList {
    One(PodRef),
    Many(Arc<[PodRef]>),
}

impl PodList {
    pub(super) fn as_slice(&self) -> &[PodRef] {
        match self {
            PodList::One(p) => std::slice::from_ref(p),
            PodList::Many(l) => l,
        }
    }

    fn from_vec(mut v: Vec<PodRef>) -> Option<PodList> {
        match v.len() {
            0 => None,
            1 => v.pop().map(PodList::One),
            _ => Some(PodList::Many(v.into())),
        }
    }
}

/// The address index as published: address → the pods that have it.
pub(super) type PodOwners = Sharded<IpAddr, PodList>;

/// What the builder keeps of a pod (one entry a pod, for both of the snapshot's pod
/// tables).
struct PodState {
    /// `status.podIP` as counted in the snapshot's pods by namespace and address text
    /// (`pods verified`'s A answers); `None` when the pod was first seen terminating
    /// (it is not added there, as CoreDNS's informer does not add it).
    ip: Option<Box<str>>,
    /// The address (and `hostNetwork`) it is listed under in [`PodOwners`]
    /// (terminating pods included: they may hold the address still).
    at: Option<(IpAddr, bool)>,
    /// The list generation it was last seen in (a list that no longer has it removes it).
    generation: u32,
}

/// What an upsert changed in the pods counted by address text: their old text (if
/// they were counted) and the new one.
pub(super) struct Recount {
    pub old: Option<Box<str>>,
    pub new: Box<str>,
}

/// The builder's side: every pod once, by key, and the namespaces the index's
/// entries share, each with the number of indexed pods that name it (a namespace goes
/// with its last pod, relist or not: namespaces may come and go without bound).
#[derive(Default)]
pub(super) struct Pods {
    by_key: FxMap<ObjectKey, PodState>,
    namespaces: FxMap<Arc<str>, u32>,
}

/// The address a pod is indexed under: its `status.podIP`, parsed (IPv4-mapped IPv6
/// taken as IPv4, as a query from such a client arrives).
fn address(p: &Pod) -> Option<IpAddr> {
    p.pod_ip.parse::<IpAddr>().ok().map(|a| a.to_canonical())
}

fn link(owners: &mut PodOwners, addr: IpAddr, pod: PodRef) {
    let mut list: Vec<PodRef> = owners.get(&addr).map_or_else(Vec::new, |l| l.as_slice().to_vec());
    list.push(pod);
    if let Some(l) = PodList::from_vec(list) {
        owners.insert(addr, l);
    }
}

fn unlink(owners: &mut PodOwners, addr: IpAddr, key: &ObjectKey) {
    let rest: Vec<PodRef> = owners
        .get(&addr)
        .map(|l| {
            l.as_slice()
                .iter()
                .filter(|r| *r.namespace != *key.namespace || r.name != key.name)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    match PodList::from_vec(rest) {
        Some(l) => owners.insert(addr, l),
        None => owners.remove(&addr),
    };
}

impl Pods {
    /// The shared string of namespace `ns`, for a pod being indexed.
    fn namespace(&mut self, ns: &str) -> Arc<str> {
        if let Some((n, count)) = self.namespaces.get_key_value(ns) {
            let n = n.clone();
            *self.namespaces.get_mut(ns).expect("found above") = count + 1;
            return n;
        }
        let n: Arc<str> = ns.into();
        self.namespaces.insert(n.clone(), 1);
        n
    }

    /// A pod of namespace `ns` is no longer indexed: the namespace goes with its last.
    fn unlink(&mut self, owners: &mut PodOwners, addr: IpAddr, key: &ObjectKey) {
        unlink(owners, addr, key);
        if let Some(count) = self.namespaces.get_mut(&*key.namespace) {
            *count -= 1;
            if *count == 0 {
                self.namespaces.remove(&*key.namespace);
            }
        }
    }

    /// Applies a pod seen in list generation `generation`: returns whether the address
    /// index changed by it being indexed (anew or elsewhere), and the recount when its
    /// counted address text changed. A terminating pod is indexed but not counted
    /// anew; one already counted stays until the delete event, as CoreDNS's pod
    /// informer keeps it.
    pub(super) fn upsert(&mut self, owners: &mut PodOwners, p: &Pod, generation: u32) -> (bool, Option<Recount>) {
        let key = ObjectKey {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
        };
        let now = address(p).map(|a| (a, p.host_network));
        let was = self.by_key.get(&key).and_then(|s| s.at);
        let indexed = now.is_some() && was != now;
        if was != now {
            if let Some((addr, _)) = was {
                self.unlink(owners, addr, &key);
            }
            if let Some((addr, host_network)) = now {
                let pod = PodRef {
                    namespace: self.namespace(&p.namespace),
                    name: p.name.clone(),
                    host_network,
                };
                link(owners, addr, pod);
            }
        }
        if p.terminating {
            match self.by_key.get_mut(&key) {
                Some(s) => {
                    s.generation = generation;
                    s.at = now;
                    if s.ip.is_none() && s.at.is_none() {
                        self.by_key.remove(&key);
                    }
                }
                None if now.is_some() => {
                    self.by_key.insert(
                        key,
                        PodState {
                            ip: None,
                            at: now,
                            generation,
                        },
                    );
                }
                None => {}
            }
            return (indexed, None);
        }
        let s = self.by_key.entry(key).or_insert(PodState {
            ip: None,
            at: None,
            generation,
        });
        s.generation = generation;
        s.at = now;
        if s.ip.as_deref() == Some(&*p.pod_ip) {
            return (indexed, None);
        }
        let old = s.ip.replace(p.pod_ip.clone());
        (
            indexed,
            Some(Recount {
                old,
                new: p.pod_ip.clone(),
            }),
        )
    }

    /// Removes a pod: `None` when it was not known, else whether it was indexed and
    /// the address text it was counted under.
    pub(super) fn remove(&mut self, owners: &mut PodOwners, key: &ObjectKey) -> Option<(bool, Option<Box<str>>)> {
        let s = self.by_key.remove(key)?;
        if let Some((addr, _)) = s.at {
            self.unlink(owners, addr, key);
        }
        Some((s.at.is_some(), s.ip))
    }

    /// The pods not seen in list generation `generation`.
    pub(super) fn stale(&self, generation: u32) -> Vec<ObjectKey> {
        self.by_key
            .iter()
            .filter(|(_, s)| s.generation != generation)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Namespaces with an indexed pod.
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
    }

    /// A pod first seen terminating is indexed by address (it may hold it still) but not
    /// counted for `pods verified` answers; one counted before stays counted until its
    /// delete event. Both tables forget it on the delete.
    #[test]
    fn terminating_pods_are_indexed_and_counted_as_coredns_keeps_them() {
        let mut st = ClusterStore::new(StoreOptions::default(), vec![Resource::Pods]);
        let Object::Pod(mut t) = pod("a", "old", "10.0.0.3", false) else {
            unreachable!()
        };
        t.terminating = true;
        assert!(st.upsert(Object::Pod(t.clone())), "indexed");
        assert_eq!(verdict(&st, "10.0.0.3"), "a/old");
        assert!(!st.snapshot().pod_exists(b"\x01a", b"10.0.0.3"));
        assert!(st.delete(Resource::Pods, &key("a", "old")));
        assert_eq!(verdict(&st, "10.0.0.3"), "Unknown");
        assert!(!st.delete(Resource::Pods, &key("a", "old")));

        assert!(st.upsert(pod("a", "live", "10.0.0.4", false)));
        assert!(st.snapshot().pod_exists(b"\x01a", b"10.0.0.4"));
        let Object::Pod(mut t) = pod("a", "live", "10.0.0.4", false) else {
            unreachable!()
        };
        t.terminating = true;
        assert!(!st.upsert(Object::Pod(t)));
        assert!(st.snapshot().pod_exists(b"\x01a", b"10.0.0.4"), "kept until deleted");
        assert!(st.delete(Resource::Pods, &key("a", "live")));
        assert!(!st.snapshot().pod_exists(b"\x01a", b"10.0.0.4"));
        // A pending pod (no address) is counted nowhere, but known: its delete is a change.
        assert!(st.upsert(pod("a", "pending", "", false)));
        assert!(st.delete(Resource::Pods, &key("a", "pending")));
    }

    /// Namespaces that come and go (a namespace per CI run, say) without a relist:
    /// each is forgotten with its last pod, deleted or moved to no address.
    #[test]
    fn a_namespace_goes_with_its_last_pod_without_a_relist() {
        let mut pods = Pods::default();
        let mut owners = PodOwners::default();
        let p = |ns: &str, name: &str, ip: &str| {
            let Object::Pod(p) = pod(ns, name, ip, false) else {
                unreachable!()
            };
            p
        };
        for i in 0..100u32 {
            let ns = format!("ci-{i}");
            pods.upsert(&mut owners, &p(&ns, "a", &format!("10.1.{}.1", i % 250)), 1);
            pods.upsert(&mut owners, &p(&ns, "b", &format!("10.2.{}.1", i % 250)), 1);
            assert_eq!(pods.namespaces(), 1, "namespace {i}");
            // One leaves by delete, the other by losing its address (moving keeps it).
            pods.upsert(&mut owners, &p(&ns, "b", &format!("10.3.{}.1", i % 250)), 1);
            assert!(pods.remove(&mut owners, &key(&ns, "a")).is_some());
            assert_eq!(pods.namespaces(), 1, "namespace {i}: b is still indexed");
            pods.upsert(&mut owners, &p(&ns, "b", ""), 1);
            assert_eq!(pods.namespaces(), 0, "namespace {i} kept without a pod");
            assert!(pods.remove(&mut owners, &key(&ns, "b")).is_some());
        }
        assert_eq!(pods.namespaces(), 0);
    }

    #[test]
    fn an_address_with_one_pod_keeps_it_inline() {
        assert!(std::mem::size_of::<PodList>() <= 40);
    }
}
