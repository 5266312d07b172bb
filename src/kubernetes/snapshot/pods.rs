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
    pub namespace: Box<str>,
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

/// The address index as published: address → the pods that have it.
pub(super) type PodOwners = Sharded<IpAddr, Arc<[PodRef]>>;

/// The builder's side: where each pod is indexed, and the list generation it was last
/// seen in (a list that no longer has it removes it).
#[derive(Default)]
pub(super) struct PodIndex {
    at: FxMap<ObjectKey, (IpAddr, bool, u32)>,
}

/// The address a pod is indexed under: its `status.podIP`, parsed (IPv4-mapped IPv6
/// taken as IPv4, as a query from such a client arrives).
fn address(p: &Pod) -> Option<IpAddr> {
    p.pod_ip.parse::<IpAddr>().ok().map(|a| a.to_canonical())
}

impl PodIndex {
    /// Indexes (or re-indexes) a pod seen in list generation `generation`. Returns
    /// whether the published index changed.
    pub(super) fn upsert(&mut self, owners: &mut PodOwners, p: &Pod, generation: u32) -> bool {
        let key = ObjectKey {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
        };
        let now = address(p).map(|a| (a, p.host_network));
        match self.at.get_mut(&key) {
            Some(e) if now == Some((e.0, e.1)) => {
                e.2 = generation;
                return false;
            }
            Some(_) => {
                self.remove(owners, &key);
            }
            None => {}
        }
        let Some((addr, host_network)) = now else {
            return false;
        };
        let mut list: Vec<PodRef> = owners.get(&addr).map_or_else(Vec::new, |l| l.to_vec());
        list.push(PodRef {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            host_network,
        });
        owners.insert(addr, list.into());
        self.at.insert(key, (addr, host_network, generation));
        true
    }

    /// Removes a pod. Returns whether it was indexed.
    pub(super) fn remove(&mut self, owners: &mut PodOwners, key: &ObjectKey) -> bool {
        let Some((addr, _, _)) = self.at.remove(key) else {
            return false;
        };
        let rest: Vec<PodRef> = owners
            .get(&addr)
            .map(|l| {
                l.iter()
                    .filter(|r| r.namespace != key.namespace || r.name != key.name)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if rest.is_empty() {
            owners.remove(&addr);
        } else {
            owners.insert(addr, rest.into());
        }
        true
    }

    /// Removes the pods not seen in list generation `generation`.
    pub(super) fn sweep(&mut self, owners: &mut PodOwners, generation: u32) {
        let gone: Vec<ObjectKey> = self
            .at
            .iter()
            .filter(|(_, v)| v.2 != generation)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.remove(owners, &k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, ip: &str, host_network: bool) -> Pod {
        Pod {
            namespace: ns.into(),
            name: name.into(),
            resource_version: "1".into(),
            pod_ip: ip.into(),
            terminating: false,
            host_network,
        }
    }

    fn verdict(owners: &PodOwners, ip: &str) -> String {
        let ip: IpAddr = ip.parse().unwrap();
        match ClientPod::of(owners.get(&ip).map_or(&[][..], |l| &l[..])) {
            ClientPod::One(p) => format!("{}/{}", p.namespace, p.name),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_pod_is_named_only_when_it_alone_has_the_address() {
        let mut owners = PodOwners::default();
        let mut index = PodIndex::default();
        assert!(index.upsert(&mut owners, &pod("a", "web", "10.0.0.1", false), 1));
        assert_eq!(verdict(&owners, "10.0.0.1"), "a/web");
        assert_eq!(verdict(&owners, "10.0.0.2"), "Unknown");
        // The address reused by a pod in another namespace while the first is still
        // there (terminating): nobody (coredns#2842).
        assert!(index.upsert(&mut owners, &pod("b", "api", "10.0.0.1", false), 1));
        assert_eq!(verdict(&owners, "10.0.0.1"), "Ambiguous");
        // The old pod is deleted: the new one alone.
        assert!(index.remove(
            &mut owners,
            &ObjectKey {
                namespace: "a".into(),
                name: "web".into()
            }
        ));
        assert_eq!(verdict(&owners, "10.0.0.1"), "b/api");
        // The same pod again: nothing changes; a new address moves it.
        assert!(!index.upsert(&mut owners, &pod("b", "api", "10.0.0.1", false), 1));
        assert!(index.upsert(&mut owners, &pod("b", "api", "10.0.0.9", false), 1));
        assert_eq!(verdict(&owners, "10.0.0.1"), "Unknown");
        assert_eq!(verdict(&owners, "10.0.0.9"), "b/api");
        // A host-network pod is never the client's pod, alone or not.
        index.upsert(&mut owners, &pod("kube-system", "proxy", "192.168.0.5", true), 1);
        assert_eq!(verdict(&owners, "192.168.0.5"), "HostNetwork");
        index.upsert(&mut owners, &pod("kube-system", "agent", "192.168.0.5", true), 1);
        assert_eq!(verdict(&owners, "192.168.0.5"), "Ambiguous");
        // No address (pending), or text that is not one: not indexed.
        assert!(!index.upsert(&mut owners, &pod("c", "pending", "", false), 1));
        assert!(!index.upsert(&mut owners, &pod("c", "odd", "not-an-ip", false), 1));
        // IPv6, by value.
        index.upsert(&mut owners, &pod("c", "v6", "fd00::0:5", false), 1);
        assert_eq!(verdict(&owners, "fd00::5"), "c/v6");
        // A list that no longer has them removes them.
        index.upsert(&mut owners, &pod("b", "api", "10.0.0.9", false), 2);
        index.sweep(&mut owners, 2);
        assert_eq!(verdict(&owners, "10.0.0.9"), "b/api");
        assert_eq!(verdict(&owners, "fd00::5"), "Unknown");
        assert_eq!(verdict(&owners, "192.168.0.5"), "Unknown");
    }
}
