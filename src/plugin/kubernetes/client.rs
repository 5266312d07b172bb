//! What the kubernetes plugin tells other plugins about a query: its metadata
//! (CoreDNS `metadata.go`) and the client's search path for autopath (CoreDNS
//! `autopath.go`).
//!
//! Both need the pod a query came from. CoreDNS takes the first pod its index lists
//! for the source address; here a pod is named only when exactly one pod has the
//! address and it is not a host-network pod
//! ([`ClientPod`](crate::kubernetes::snapshot::ClientPod)): an address two pods share
//! (one terminating while its address is handed on, coredns#2842) or a node's address
//! names nobody, so no query is completed with another namespace's search path.

use crate::chain::{AutoPather, Budget, OverBudget, Query, SearchPath};
use crate::dns::{Request, Zone};

use super::answer::metadata::query_label;
use super::answer::{Ctx, Zoned};
use super::{Kubernetes, PodMode};

/// The longest resolv.conf read for its search list.
const MAX_RESOLV_CONF: u64 = 64 * 1024;

impl Kubernetes {
    /// The pod that sent `req`, if exactly one pod (not on the host network) has its
    /// address; only with `pods verified`, as CoreDNS's `podWithIP`.
    fn client_pod<R>(
        &self,
        req: &Request<'_>,
        f: impl FnOnce(Option<crate::kubernetes::snapshot::PodRef<'_>>) -> R,
    ) -> R {
        if self.opts.pods != PodMode::Verified {
            return f(None);
        }
        let snap = self.snapshot.load();
        f(snap.client_pod(req.client.ip()).pod())
    }

    /// The provider half of metadata: `kubernetes/client-namespace` and
    /// `client-pod-name` for the client's pod, the query-name labels for names in the
    /// plugin's zones.
    pub(super) fn metadata_value(&self, q: &Query<'_, '_>, label: &str, out: &mut String) -> bool {
        let Some(label) = label.strip_prefix("kubernetes/") else {
            return false;
        };
        match label {
            "client-namespace" | "client-pod-name" => self.client_pod(q.req, |pod| {
                let Some(pod) = pod else { return false };
                out.push_str(if label == "client-namespace" {
                    pod.namespace
                } else {
                    pod.name
                });
                true
            }),
            _ => query_label(&self.opts, &q.req.qname, label, out),
        }
    }
}

impl AutoPather for Kubernetes {
    /// CoreDNS's `AutoPath`: for a name in the plugin's zones from a known pod,
    /// `<namespace>.svc.<zone>`, `svc.<zone>`, `<zone>`, the host's search domains,
    /// then the name as asked.
    fn search_path(&self, req: &Request<'_>, out: &mut SearchPath) -> bool {
        out.clear();
        let Some(zone) = self.opts.zones.iter().find(|z| z.contains(&req.qname)) else {
            return false;
        };
        self.client_pod(req, |pod| {
            let Some(pod) = pod else { return false };
            let zw = zone.wire();
            if !out.push(&[pod.namespace.as_bytes(), b"svc"], zw) || !out.push(&[b"svc"], zw) || !out.push(&[], zw) {
                return false;
            }
            for s in &self.host_search {
                out.push(&[], s.wire());
            }
            out.push(&[], &[0])
        })
    }

    fn unavailable(&self) -> Option<&'static str> {
        // CoreDNS's AutoPath returns nil without the pod cache ("pods must be set to
        // verified for this to function properly").
        (self.opts.pods != PodMode::Verified)
            .then_some("the kubernetes plugin needs 'pods verified' to know a client's namespace")
    }

    fn name_exists(&self, req: &Request<'_>, budget: &Budget) -> Result<Option<bool>, OverBudget> {
        let Some(z) = Zoned::find(&self.opts, req) else {
            return Ok(None);
        };
        // A name error that falls through is the next plugin's to answer; before the
        // first sync a name error is not known to be one.
        if self.falls_through(&req.qname) {
            return Ok(None);
        }
        let snap = self.snapshot.load();
        if !snap.synced {
            return Ok(None);
        }
        Ctx::new(&self.opts, &snap, req, z, budget)
            .address_name_exists()
            .map(Some)
    }
}

/// The `search` list of a resolv.conf (CoreDNS reads the host's `/etc/resolv.conf`
/// for it, `searchFromResolvConf`): the last `search` or `domain` line wins, as in
/// the resolver; names that are not valid are left out; nothing when the file cannot
/// be read.
pub fn resolv_search(path: &std::path::Path) -> Vec<Zone> {
    use std::io::Read;
    let mut text = String::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(MAX_RESOLV_CONF).read_to_string(&mut text));
    if read.is_err() {
        return Vec::new();
    }
    let mut search = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("search" | "domain") => {
                search = words
                    .take(SearchPath::MAX - 4)
                    .filter(|w| *w != ".")
                    .filter_map(Zone::new)
                    .collect();
            }
            _ => continue,
        }
    }
    search
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Metadata;
    use crate::dns::{NameKey, QueryBuilder, Transport, rtype};
    use crate::kubernetes::model::{Object, Pod, Resource};
    use crate::kubernetes::snapshot::{ClusterStore, StoreOptions};

    /// A plugin for `cluster.local` with `pods` in `mode`, serving a synced snapshot with
    /// these pods (namespace, name, address, host network).
    fn plugin(mode: &str, pods: &[(&str, &str, &str, bool)]) -> Kubernetes {
        let corefile = format!("cluster.local {{\n kubernetes {{\n  pods {mode}\n }}\n}}\n");
        let parsed = crate::config::parse_str(&corefile, "Corefile", std::path::Path::new("/")).unwrap();
        let zones = [Zone::new("cluster.local.").unwrap()];
        let ctx = crate::setup::SetupCtx {
            zones: &zones,
            config_dir: "/".into(),
            workers: 1,
            binds: None,
            process: &crate::process::ProcessState::new(),
        };
        let k = Kubernetes::new(super::super::setup::parse(&parsed.blocks[0].directives[0], &ctx).unwrap());
        let all = [
            Resource::Namespaces,
            Resource::Services,
            Resource::EndpointSlices,
            Resource::Pods,
        ];
        let mut store = ClusterStore::new(StoreOptions::default(), all.to_vec());
        for r in all {
            store.list_start(r);
            if r == Resource::Pods {
                for (ns, name, ip, host_network) in pods {
                    store.upsert(Object::Pod(Pod {
                        namespace: (*ns).into(),
                        name: (*name).into(),
                        resource_version: "1".into(),
                        pod_ip: (*ip).into(),
                        terminating: false,
                        host_network: *host_network,
                    }));
                }
            }
            store.list_done(r);
        }
        k.publish(store.snapshot());
        k
    }

    /// The labels `k` sets for `qname` asked from `client`, as `label=value`, in the
    /// order of `LABELS`.
    fn labels(k: &Kubernetes, qname: &str, client: &str) -> Vec<String> {
        const LABELS: [&str; 9] = [
            "client-namespace",
            "client-pod-name",
            "endpoint",
            "kind",
            "namespace",
            "port-name",
            "protocol",
            "service",
            "parse-error",
        ];
        let name = NameKey::from_text(qname).unwrap();
        let raw = QueryBuilder::new(name.wire(), rtype::A).to_vec();
        let client = format!("{client}:5353").parse().unwrap();
        crate::chain::testing::with_query(&raw, client, Metadata::NONE, |q| {
            let mut out = String::new();
            let mut set = Vec::new();
            for l in LABELS {
                out.clear();
                if k.metadata_value(q, &format!("kubernetes/{l}"), &mut out) {
                    set.push(format!("{l}={out}"));
                }
            }
            assert!(!k.metadata_value(q, "other/kind", &mut out), "only kubernetes/ labels");
            set
        })
    }

    #[test]
    fn metadata_labels_of_coredns_metadata_test() {
        let k = plugin("verified", &[("podns", "foo", "10.10.10.10", false)]);
        let none = "192.0.2.1";
        // metadata_test.go metadataCases, in order (multicluster's case left out).
        assert_eq!(
            labels(&k, "foo.bar.notapod.cluster.local.", none),
            ["parse-error=invalid query name"]
        );
        assert_eq!(
            labels(&k, "10-240-0-1.podns.pod.cluster.local.", none),
            [
                "endpoint=",
                "kind=pod",
                "namespace=podns",
                "port-name=",
                "protocol=",
                "service=10-240-0-1"
            ]
        );
        let s_ns = [
            "endpoint=",
            "kind=svc",
            "namespace=ns",
            "port-name=",
            "protocol=",
            "service=s",
        ];
        assert_eq!(labels(&k, "s.ns.svc.cluster.local.", none), s_ns);
        assert_eq!(
            labels(&k, "_http._tcp.s.ns.svc.cluster.local.", none),
            [
                "endpoint=",
                "kind=svc",
                "namespace=ns",
                "port-name=http",
                "protocol=tcp",
                "service=s"
            ]
        );
        assert_eq!(
            labels(&k, "ep.s.ns.svc.cluster.local.", none),
            [
                "endpoint=ep",
                "kind=svc",
                "namespace=ns",
                "port-name=",
                "protocol=",
                "service=s"
            ]
        );
        assert!(labels(&k, "example.com.", none).is_empty());
        // parse.go: the zone itself and `svc.<zone>` set every label, empty.
        assert_eq!(
            labels(&k, "svc.cluster.local.", none),
            [
                "endpoint=",
                "kind=",
                "namespace=",
                "port-name=",
                "protocol=",
                "service="
            ]
        );
        // TestMetadataPodsVerified: the client's pod (its labels are not kept here).
        assert_eq!(
            labels(&k, "example.com.", "10.10.10.10"),
            ["client-namespace=podns", "client-pod-name=foo"]
        );
    }

    #[test]
    fn the_client_pod_needs_pods_verified_and_one_owner() {
        // podWithIP: nothing unless `pods verified`.
        let k = plugin("insecure", &[("podns", "foo", "10.10.10.10", false)]);
        assert!(labels(&k, "example.com.", "10.10.10.10").is_empty());
        // Two pods with the address (coredns#2842), or a host-network pod: nobody.
        let k = plugin(
            "verified",
            &[
                ("a", "old", "10.0.0.1", false),
                ("b", "new", "10.0.0.1", false),
                ("kube-system", "agent", "10.0.0.2", true),
            ],
        );
        assert!(labels(&k, "example.com.", "10.0.0.1").is_empty());
        assert!(labels(&k, "example.com.", "10.0.0.2").is_empty());
    }

    #[test]
    fn the_search_path_of_a_client_pod() {
        let k = plugin(
            "verified",
            &[
                ("team-a", "web-0", "10.0.0.5", false),
                ("kube-system", "agent", "10.0.0.2", true),
            ],
        );
        let search = |client: &str, qname: &str| -> Option<Vec<String>> {
            let name = NameKey::from_text(qname).unwrap();
            let raw = QueryBuilder::new(name.wire(), rtype::A).to_vec();
            let client = format!("{client}:5353").parse().unwrap();
            let req = Request::parse(&raw, Transport::Udp, client, client).ok().unwrap();
            let mut p = SearchPath::default();
            k.search_path(&req, &mut p).then(|| {
                (0..p.len())
                    .map(|i| crate::dns::wire::name_to_string(p.get(i)))
                    .collect()
            })
        };
        // autopath.go: ns.svc.zone, svc.zone, zone, (the host's), then the name as asked.
        assert_eq!(
            search("10.0.0.5", "x.team-a.svc.cluster.local.").unwrap(),
            ["team-a.svc.cluster.local.", "svc.cluster.local.", "cluster.local.", "."]
        );
        // Outside the zones, from an unknown or a host-network address: none.
        assert_eq!(search("10.0.0.5", "example.com."), None);
        assert_eq!(search("10.0.0.9", "x.team-a.svc.cluster.local."), None);
        assert_eq!(search("10.0.0.2", "x.kube-system.svc.cluster.local."), None);
        assert_eq!(k.unavailable(), None);
        assert!(plugin("insecure", &[]).unavailable().is_some());
    }

    #[test]
    fn the_search_list_of_a_resolv_conf() {
        let dir = std::env::temp_dir().join(format!("clusterdns-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("resolv.conf");
        // CoreDNS's autopath setup_test.go resolv.conf: `search bar.com baz.com`.
        std::fs::write(
            &f,
            "nameserver 1.2.3.4\ndomain foo.com\nsearch bar.com baz.com\noptions ndots:5\n",
        )
        .unwrap();
        let got: Vec<String> = resolv_search(&f).iter().map(|z| z.to_string()).collect();
        assert_eq!(got, ["bar.com.", "baz.com."]);
        std::fs::write(&f, "nameserver 1.2.3.4\n").unwrap();
        assert!(resolv_search(&f).is_empty());
        assert!(resolv_search(&dir.join("missing")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
