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
    fn client_pod<R>(&self, req: &Request<'_>, f: impl FnOnce(Option<&crate::kubernetes::snapshot::PodRef>) -> R) -> R {
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
                    &pod.namespace
                } else {
                    &pod.name
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
