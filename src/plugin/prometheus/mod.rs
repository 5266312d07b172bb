//! `prometheus`: counts the queries of its server block with CoreDNS's metric names,
//! labels and buckets, and asks for a `/metrics` endpoint; README.md beside this file
//! lists the metrics.
//!
//! ```text
//!   setup ──▶ Prometheus ──attach(routes)──▶ counters[route][worker] (the process state's,
//!                                            per server/zone labels: a reload keeps them)
//!
//!   query path (worker k):  chain ─▶ … ─▶ answering plugin
//!                                    ◀── on_response: counters[route][k].record   (no lock,
//!                                                        one writer, no allocation)
//!   scrape (http thread):   Server::metrics ─▶ every plugin's metrics()  (prometheus: sum
//!                           ProcessState::metrics ─▶ process-wide ones    over workers)
//! ```
//!
//! The HTTP endpoint itself belongs to the controller: it opens one listener per
//! distinct [`address`] and answers `/metrics` from the server and the process state.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::Mutex;

use crate::chain::{Handler, Query, RouteTag, Step};
use crate::config::{ConfigError, Directive};
use crate::dns::Transport;
use crate::metrics::Families;
use crate::metrics::route::{RouteCounters, Sample, Totals};
use crate::plugin::once;
use crate::settings::ProcessSettings;
use crate::setup::{AttachCtx, Lifecycle, Plugin, SetupCtx};

/// The directive name, and the prefix of its errors.
const NAME: &str = "prometheus";
/// CoreDNS's default: `localhost:9153`.
const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9153);

/// `prometheus [ADDRESS] { runtime_metrics }`, once per server block.
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let d = once(NAME, dirs)?;
    address(d)?;
    Ok(Plugin::both(Arc::new(Prometheus::new(ctx.workers))))
}

/// The table's process half: the block's `/metrics` endpoint (the chain half, [`setup`],
/// checks that there is one directive).
pub fn configure(dirs: &[&Directive], process: &mut ProcessSettings) -> Result<(), ConfigError> {
    process.metrics.push(address(dirs[0])?);
    Ok(())
}

/// The listen address of one `prometheus` directive, its options validated: what the
/// runtime opens an HTTP listener on.
pub fn address(d: &Directive) -> Result<SocketAddr, ConfigError> {
    d.expect_args(NAME, 0, 1)?;
    for opt in d.options() {
        match opt.name.as_str() {
            // CoreDNS adds Go's runtime collectors with it; there is no Go runtime here,
            // and the process metrics are always on.
            "runtime_metrics" => {
                opt.expect_args(NAME, 0, 0)?;
                opt.expect_no_block(NAME)?;
            }
            "tls" => return Err(opt.err(NAME, "tls is not supported")),
            other => return Err(opt.err(NAME, format!("unknown property '{other}'"))),
        }
    }
    match d.args.first() {
        None => Ok(DEFAULT_ADDR),
        Some(a) => crate::http::parse_listen(a.as_str())
            .ok_or_else(|| ConfigError::at(&a.loc, format!("{NAME}: invalid address '{}'", a.as_str()))),
    }
}

/// The plugin of one server block: per-worker, per-route query counters.
pub struct Prometheus {
    workers: usize,
    /// Set once by [`Lifecycle::attach`]; until then queries are not counted.
    attached: OnceLock<Attached>,
    /// The names of the block's chain, for `coredns_plugin_enabled`.
    plugin_names: Mutex<Vec<&'static str>>,
}

/// The routes of the block and their counters.
struct Attached {
    /// One route per distinct (`server`, `zone`) label pair: the IPv4 and IPv6
    /// listeners of an unbound address (`dns://:53`) share their labels, and so their
    /// counters, as CoreDNS's single dual-stack listener would.
    routes: Vec<Arc<RouteTag>>,
    /// [`RouteTag::slot`] → index in `routes`; `usize::MAX` for other blocks' slots.
    by_slot: Vec<usize>,
    /// `[route][worker]`, kept for the life of the process by route labels
    /// ([`ProcessState::route_counters`]), so that a reload does not reset them.
    counters: Vec<Arc<[RouteCounters]>>,
}

impl Prometheus {
    /// A plugin counting for `workers` worker threads.
    pub fn new(workers: usize) -> Prometheus {
        Prometheus {
            workers,
            attached: OnceLock::new(),
            plugin_names: Mutex::new(Vec::new()),
        }
    }

    /// Sets the names of the plugins of the block's chain, reported as
    /// `coredns_plugin_enabled` ([`Lifecycle::attach`] sets them from the chain).
    pub fn set_plugin_names(&self, names: Vec<&'static str>) {
        *self.plugin_names.lock() = names;
    }

    /// The counters of the worker and route of a query, if it is one of ours.
    fn counters_for(&self, worker: usize, route: &RouteTag) -> Option<&RouteCounters> {
        let a = self.attached.get()?;
        let r = *a.by_slot.get(route.slot)?;
        a.counters.get(r)?.get(worker)
    }
}

impl Handler for Prometheus {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(&self, _: &mut Query<'_, '_>) -> Step {
        Step::Next
    }

    fn wants_response(&self) -> bool {
        true
    }

    /// Counts the finished reply, as CoreDNS's `vars.Report` does.
    fn on_response(&self, q: &mut Query<'_, '_>) {
        let Some(c) = self.counters_for(q.worker.id, q.route) else {
            return;
        };
        // CoreDNS's `request.Family`: IPv4 unless the client address needs IPv6 (an
        // IPv4-mapped address counts as IPv4, as Go's `To4` has it).
        let family = match q.req.client.ip() {
            IpAddr::V4(_) => 0,
            IpAddr::V6(a) => usize::from(a.to_ipv4_mapped().is_none()),
        };
        c.record(&Sample {
            proto: usize::from(q.req.transport == Transport::Tcp),
            family,
            qtype: q.req.qtype,
            dnssec_ok: q.req.dnssec_ok(),
            seconds: Instant::now().saturating_duration_since(q.worker.now).as_secs_f64(),
            request_bytes: q.req.raw.len(),
            response_bytes: q.resp.bytes().len(),
            rcode: q.resp.rcode(),
            plugin: q.answered_by,
        });
    }
}

impl Lifecycle for Prometheus {
    /// Allocates every counter a query of this block can touch, and takes the names of
    /// the block's chain for `coredns_plugin_enabled`.
    fn attach(&self, block: &AttachCtx<'_>) {
        self.set_plugin_names(block.chain.to_vec());
        let routes = block.routes;
        let slots = routes.iter().map(|r| r.slot + 1).max().unwrap_or(0);
        let mut by_slot = vec![usize::MAX; slots];
        let mut labelled: Vec<Arc<RouteTag>> = Vec::new();
        for r in routes {
            let same = |t: &Arc<RouteTag>| t.server == r.server && t.zone == r.zone;
            by_slot[r.slot] = match labelled.iter().position(same) {
                Some(i) => i,
                None => {
                    labelled.push(r.clone());
                    labelled.len() - 1
                }
            };
        }
        let counters = labelled
            .iter()
            .map(|r| block.process.route_counters(&r.server, &r.zone, self.workers))
            .collect();
        let attached = Attached {
            routes: labelled,
            by_slot,
            counters,
        };
        if self.attached.set(attached).is_err() {
            log::warn!(target: "plugin/prometheus", "attached twice; keeping the first routes");
        }
    }

    /// Every route's counters summed over the workers, and `coredns_plugin_enabled`.
    fn metrics(&self, out: &mut Families) {
        let Some(a) = self.attached.get() else {
            return;
        };
        let names = self.plugin_names.lock().clone();
        for (i, route) in a.routes.iter().enumerate() {
            let mut totals = Totals::default();
            a.counters[i].iter().for_each(|c| totals.add(c));
            totals.write(out, &route.server, &route.zone);
            for name in &names {
                out.gauge(
                    "coredns_plugin_enabled",
                    "A metric that indicates whether a plugin is enabled per server and zone.",
                    &[
                        ("server", &route.server),
                        ("zone", &route.zone),
                        ("view", ""),
                        ("name", name),
                    ],
                    1.0,
                );
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
