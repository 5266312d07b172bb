//! `kubernetes`: the Kubernetes DNS-Based Service Discovery records of a cluster,
//! learned by watching its API (README.md beside this file).
//!
//! The plugin reads an `ArcSwap<Snapshot>` that its [`backend`] (the watchers or the
//! file source, and the builder) publishes into; the backend starts with the server
//! and is shared by every instance with the same watch settings, across reloads too.
//! Queries read the current snapshot without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::chain::{ChainError, Handler, Query, Step, UpstreamProto, UpstreamReply, UpstreamRequest};
use crate::config::{ConfigError, Directive};
use crate::dns::{Header, QueryBuilder, Rcode, Section, Zone, flag};
use crate::kubernetes::builder::BuilderStats;
use crate::kubernetes::snapshot::Snapshot;
use crate::kubernetes::watch::DurationHistogram;
use crate::metrics::Families;
use crate::plugin::once;
use crate::setup::{Lifecycle, Plugin, SetupCtx};

mod answer;
pub mod backend;
mod client;
mod seen;
pub mod setup;
mod xfr;

pub use answer::reverse_address;
use answer::{Answer, Ctx, Zoned};
use backend::{Backend, WatchKey};
pub use setup::{Options, PodMode};

/// An EDNS option (local-use range) carried by the queries this plugin sends through
/// the server to follow an ExternalName out of its zone: one byte, the chain depth.
/// It bounds chains that leave and re-enter the zone.
pub const CHASE_OPTION: u16 = 65301;
const MAX_CHASE_DEPTH: u8 = 8;

/// The plugin.
pub struct Kubernetes {
    pub opts: Options,
    /// The backend's snapshot cell, held here so that a query reaches it in one step.
    snapshot: Arc<ArcSwap<Snapshot>>,
    backend: Arc<Backend>,
    /// Whether this instance holds its backend (between `start` and `stop`).
    holding: AtomicBool,
    pub builder_stats: Arc<BuilderStats>,
    /// The host's search domains (its `/etc/resolv.conf`), for autopath.
    host_search: Vec<Zone>,
    /// The snapshot cell and options, as `k8s_external` reads them.
    exported: Arc<Exported>,
}

/// Parses `kubernetes [ZONES...] { ... }`.
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let d = once("kubernetes", dirs)?;
    let opts = setup::parse(d, ctx)?;
    let backend = Backend::shared(WatchKey::of(&opts), ctx.process);
    let mut k = Kubernetes::with_backend(opts, backend);
    k.host_search = client::resolv_search(&host_resolv_conf());
    Ok(Plugin::both(Arc::new(k)))
}

/// The resolver file whose search domains end autopath's search path: the host's, as
/// CoreDNS reads it. Debug builds (the ones the end-to-end tests run) take another from
/// `CLUSTERDNS_TEST_RESOLV_CONF`, so that a test does not depend on the host's file.
fn host_resolv_conf() -> std::path::PathBuf {
    #[cfg(debug_assertions)]
    if let Some(path) = std::env::var_os("CLUSTERDNS_TEST_RESOLV_CONF") {
        return path.into();
    }
    std::path::PathBuf::from("/etc/resolv.conf")
}

impl Kubernetes {
    /// A plugin with a backend of its own.
    pub fn new(opts: Options) -> Kubernetes {
        let backend = Backend::private(WatchKey::of(&opts));
        Kubernetes::with_backend(opts, backend)
    }

    fn with_backend(opts: Options, backend: Arc<Backend>) -> Kubernetes {
        let exported = Arc::new(Exported {
            snapshot: backend.snapshot.clone(),
            opts: opts.clone(),
        });
        Kubernetes {
            opts,
            snapshot: backend.snapshot.clone(),
            builder_stats: backend.builder_stats.clone(),
            exported,
            backend,
            holding: AtomicBool::new(false),
            host_search: Vec::new(),
        }
    }

    /// The snapshot being served.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Serves `snapshot` from now on, as the builder would publish it. Public (hidden)
    /// for the fuzz targets, which answer from clusters they decode themselves
    /// (`clusterdns::fuzzing`).
    #[doc(hidden)]
    pub fn publish(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// Whether a name error for this name goes to the next plugin.
    fn falls_through(&self, name: &crate::dns::NameKey) -> bool {
        self.opts
            .fallthrough
            .as_ref()
            .is_some_and(|zones| Zone::any_contains(zones, name))
    }

    /// Answers into `q.resp`; returns the step.
    fn handle(&self, q: &mut Query<'_, '_>, chased: Option<UpstreamReply<'_>>) -> Step {
        let Some(z) = Zoned::find(&self.opts, q.req) else {
            return Step::Next;
        };
        let snap = self.snapshot.load();
        let ctx = Ctx::new(&self.opts, &snap, q.req, z, &q.worker.budget);
        q.resp.start(q.req, Rcode::NOERROR);
        q.resp.set_aa(true);
        match ctx.answer(q.resp) {
            Answer::Records => Step::Answered,
            Answer::NoData => {
                q.resp.authority(ctx.soa());
                Step::Answered
            }
            Answer::NameError => {
                if self.falls_through(&q.req.qname) {
                    return Step::Next;
                }
                // Until the first sync, "does not exist" may be wrong: SERVFAIL, which
                // resolvers do not cache as they cache NXDOMAIN.
                let rcode = if snap.synced { Rcode::NXDOMAIN } else { Rcode::SERVFAIL };
                q.resp.start(q.req, rcode);
                q.resp.set_aa(true);
                q.resp.authority(ctx.soa());
                Step::Answered
            }
            Answer::Refused => Step::Fail(Rcode::REFUSED, None),
            // The chain counts and logs it, and answers SERVFAIL.
            Answer::OverBudget => Step::Fail(Rcode::SERVFAIL, Some(ChainError::OverBudget("kubernetes"))),
            Answer::Chase(target) => match chased {
                Some(UpstreamReply::Message(reply)) => {
                    append_answers(q, reply);
                    Step::Answered
                }
                // No answer from the server's chain: the CNAME alone, as CoreDNS gives
                // when its lookup fails.
                Some(_) => Step::Answered,
                None => {
                    let depth = chase_depth(q);
                    if depth >= MAX_CHASE_DEPTH {
                        return Step::Answered;
                    }
                    write_chase_query(&mut q.worker.upstream_msg, target, q.req.qtype, depth + 1);
                    Step::Upstream(UpstreamRequest {
                        to: q.req.local,
                        proto: UpstreamProto::Udp,
                        timeout: Duration::from_secs(2),
                        cookie: 0,
                        coalesce: None,
                        expire: Duration::from_secs(10),
                    })
                }
            },
        }
    }
}

/// The counts of each bucket and of +Inf, from the watcher's cumulative counts (what
/// [`Families::histogram`] takes).
fn per_bucket(h: &DurationHistogram) -> Vec<u64> {
    let mut below = 0;
    let mut out: Vec<u64> = h
        .buckets
        .iter()
        .map(|&c| {
            let n = c.saturating_sub(below);
            below = c;
            n
        })
        .collect();
    out.push(h.count.saturating_sub(below));
    out
}

/// The chase depth a query carries (0 for client queries).
fn chase_depth(q: &Query<'_, '_>) -> u8 {
    q.req
        .edns_options()
        .find(|(code, _)| *code == CHASE_OPTION)
        .and_then(|(_, d)| d.first().copied())
        .unwrap_or(0)
}

/// A query for `name`/`qtype` through the server itself, with RD, a large EDNS size
/// and the chase depth.
fn write_chase_query(out: &mut Vec<u8>, name: &[u8], qtype: u16, depth: u8) {
    QueryBuilder::new(name, qtype)
        .edns(4096)
        .options(&[(CHASE_OPTION, &[depth])])
        .write(out);
}

/// Appends the answer records of the server's reply after the CNAMEs; its TC carries over.
fn append_answers(q: &mut Query<'_, '_>, reply: &[u8]) {
    if Header::of(reply).is_some_and(|h| h.tc()) {
        q.resp.set_flag(flag::TC, true);
    }
    let _ = q.resp.copy_sections(reply, &[Section::Answer]);
}

impl Handler for Kubernetes {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        self.handle(q, None)
    }

    fn resume(&self, q: &mut Query<'_, '_>, reply: UpstreamReply<'_>, _cookie: u64) -> Step {
        // Answer again (the snapshot may have moved on), then complete the chain with
        // what the server answered for its out-of-zone target.
        self.handle(q, Some(reply))
    }

    fn provides_metadata(&self) -> bool {
        true
    }

    fn metadata(&self, q: &Query<'_, '_>, label: &str, out: &mut String) -> bool {
        self.metadata_value(q, label, out)
    }

    fn autopather(&self) -> Option<&dyn crate::chain::AutoPather> {
        Some(self)
    }

    fn externaler(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        Some(self.exported.clone())
    }

    /// The cluster zones for `transfer` (see `xfr.rs`).
    fn transferer(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let source = xfr::KubeTransferer {
            snapshot: self.snapshot.clone(),
            opts: self.opts.clone(),
        };
        Some(Arc::new(crate::plugin::transfer::Source(Arc::new(source))))
    }
}

/// What the plugin lends the other plugins of its block ([`Handler::externaler`]):
/// `k8s_external` answers from the same snapshot, with the same options (namespaces,
/// the server's local addresses).
pub struct Exported {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub opts: Options,
}

impl Lifecycle for Kubernetes {
    fn ready(&self) -> Option<bool> {
        Some(self.snapshot.load().synced)
    }

    /// Starts the watchers (or the file source) and the builder, unless a previous
    /// configuration's plugin with the same watch settings runs them already, then
    /// waits for the first sync for up to `startup_timeout`, as CoreDNS does before
    /// serving (an adopted backend is synced already).
    fn start(&self) {
        if self.holding.swap(true, Ordering::AcqRel) {
            return;
        }
        self.backend.acquire();
        let start = Instant::now();
        let mut next_log = start + Duration::from_millis(500);
        while !self.snapshot.load().synced {
            let now = Instant::now();
            if now.duration_since(start) >= self.opts.startup_timeout {
                log::warn!(target: "plugin/kubernetes", "starting server with unsynced Kubernetes API");
                break;
            }
            if now >= next_log {
                log::info!(target: "plugin/kubernetes", "waiting for Kubernetes API before starting server");
                next_log = now + Duration::from_millis(500);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// CoreDNS's programming latency and API client metrics, and two gauges of
    /// clusterdns's own: whether the first sync is done, and how much is served. They
    /// belong to the backend, so instances that share one show them once.
    fn metrics(&self, out: &mut Families) {
        // Instances sharing a backend show its series once.
        if !out.first_from(Arc::as_ptr(&self.backend)) {
            return;
        }
        let programming = &self.builder_stats.programming;
        let mut counts = vec![0; programming.bounds().len() + 1];
        let mut sum = 0.0;
        programming.add_to(&mut counts, &mut sum);
        // A labelled family in CoreDNS: the series exists from its first observation.
        if counts.iter().any(|c| *c > 0) {
            out.histogram(
                "coredns_kubernetes_dns_programming_duration_seconds",
                "Histogram of the time (in seconds) it took to program a dns instance.",
                &[("service_kind", "headless_with_selector")],
                programming.bounds(),
                &counts,
                sum,
            );
        }
        let api = self.backend.api_stats().map(|s| s.snapshot());
        for r in api.iter().flat_map(|a| &a.requests) {
            out.counter(
                "coredns_kubernetes_rest_client_requests_total",
                "Number of HTTP requests to the Kubernetes API, by status code, method and host.",
                &[("code", &r.code), ("method", r.method), ("host", &r.host)],
                r.count as f64,
            );
        }
        for (resource, reason, n) in api.iter().flat_map(|a| &a.rejected) {
            out.counter(
                "clusterdns_kubernetes_rejected_objects_total",
                "Objects from the Kubernetes API not taken (malformed, over a cap of the API, or breaking one of its name rules), by resource and reason.",
                &[("resource", resource.name()), ("reason", reason)],
                *n as f64,
            );
        }
        for (verb, host, h) in api.iter().flat_map(|a| &a.durations) {
            out.histogram(
                "coredns_kubernetes_rest_client_request_duration_seconds",
                "Kubernetes API request latency in seconds, by verb and host.",
                &[("verb", verb.name()), ("host", host)],
                &crate::kubernetes::watch::DURATION_BUCKETS,
                &per_bucket(h),
                h.sum_seconds,
            );
        }
        let snap = self.snapshot.load();
        out.gauge(
            "clusterdns_kubernetes_synced",
            "1 once every watched resource has been listed completely, else 0.",
            &[],
            if snap.synced { 1.0 } else { 0.0 },
        );
        let (namespaces, services, addresses) = snap.counts();
        for (kind, n) in [
            ("namespaces", namespaces),
            ("services", services),
            ("addresses", addresses),
        ] {
            out.gauge(
                "clusterdns_kubernetes_objects",
                "What the served snapshot holds: namespaces, services, and distinct IP addresses with a PTR record (cluster IPs and endpoint addresses).",
                &[("kind", kind)],
                n as f64,
            );
        }
    }

    fn stop(&self) {
        if self.holding.swap(false, Ordering::AcqRel) {
            self.backend.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin() -> Kubernetes {
        let parsed = crate::config::parse_str(
            "cluster.local {\n kubernetes\n}\n",
            "Corefile",
            std::path::Path::new("/"),
        )
        .unwrap();
        let zones = [Zone::new("cluster.local.").unwrap()];
        let ctx = SetupCtx {
            zones: &zones,
            config_dir: "/".into(),
            workers: 1,
            binds: None,
            process: &crate::process::ProcessState::new(),
        };
        Kubernetes::new(setup::parse(&parsed.blocks[0].directives[0], &ctx).unwrap())
    }

    fn render(k: &Kubernetes) -> String {
        let mut f = Families::default();
        k.metrics(&mut f);
        f.render()
    }

    #[test]
    fn metrics_show_sync_state_and_programming_latency_once_observed() {
        let k = plugin();
        let text = render(&k);
        for want in [
            "clusterdns_kubernetes_synced 0",
            "clusterdns_kubernetes_objects{kind=\"namespaces\"} 0",
            "clusterdns_kubernetes_objects{kind=\"services\"} 0",
            "clusterdns_kubernetes_objects{kind=\"addresses\"} 0",
        ] {
            assert!(text.lines().any(|l| l == want), "missing {want}\nin\n{text}");
        }
        // Not started: no API requests; nothing observed: no programming series.
        assert!(!text.contains("rest_client"), "{text}");
        assert!(!text.contains("programming"), "{text}");

        k.builder_stats.programming.observe(0.003);
        let text = render(&k);
        let h = "coredns_kubernetes_dns_programming_duration_seconds";
        for want in [
            format!("{h}_bucket{{service_kind=\"headless_with_selector\",le=\"0.002\"}} 0"),
            format!("{h}_bucket{{service_kind=\"headless_with_selector\",le=\"0.004\"}} 1"),
            format!("{h}_bucket{{service_kind=\"headless_with_selector\",le=\"524.288\"}} 1"),
            format!("{h}_count{{service_kind=\"headless_with_selector\"}} 1"),
        ] {
            assert!(text.lines().any(|l| l == want), "missing {want}\nin\n{text}");
        }
    }

    #[test]
    fn instances_sharing_a_backend_show_its_metrics_once() {
        let a = plugin();
        let b = Kubernetes::with_backend(a.opts.clone(), a.backend.clone());
        a.builder_stats.programming.observe(0.003);
        let mut f = Families::default();
        a.metrics(&mut f);
        b.metrics(&mut f);
        let text = f.render();
        // Written twice, the histogram would add up to 2 (see `Families::add`).
        let count =
            "coredns_kubernetes_dns_programming_duration_seconds_count{service_kind=\"headless_with_selector\"} 1";
        assert!(text.lines().any(|l| l == count), "{text}");
    }

    #[test]
    fn cumulative_api_buckets_become_per_bucket_counts() {
        let h = DurationHistogram {
            buckets: [1, 1, 3, 3, 3, 3, 3, 3, 3, 4, 4],
            sum_seconds: 30.0,
            count: 6,
        };
        assert_eq!(per_bucket(&h), [1, 0, 2, 0, 0, 0, 0, 0, 0, 1, 0, 2]);
    }
}
