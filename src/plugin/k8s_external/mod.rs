//! `k8s_external`: a zone outside the cluster's own in which Services answer with the
//! addresses they are reached at from outside: `spec.externalIPs` and their load
//! balancers' ingress points, and headless services' endpoints with `headless`
//! (README.md beside this file; reference: CoreDNS `plugin/k8s_external` and
//! `plugin/kubernetes/external.go`).
//!
//! ```text
//!   kubernetes (same block) ──export: snapshot cell, options──▶ k8s_external (link)
//!   query <svc>.<ns>.<zone> ──▶ answer::answer ──▶ records from the snapshot
//!   query <zone>, <apex>.<zone>, ns1.<apex>.<zone> ──▶ SOA, NS, the NS addresses
//! ```
//!
//! The plugin keeps no data of its own: it reads the kubernetes plugin's snapshot, as
//! CoreDNS's reads the kubernetes plugin's informers through its `Externaler` interface,
//! so it needs a `kubernetes` directive in the same server block (checked at start-up
//! with CoreDNS's error).
//!
//! Zone transfers (with the `transfer` plugin, CoreDNS's `transfer.go`): [`xfr`]
//! sends, for every Service the zone has, what the answers above give for each of its
//! names, between two copies of the zone's SOA.

use std::sync::{Arc, OnceLock};

use std::time::Duration;

use crate::chain::{ChainError, Handler, Query, Step, UpstreamProto, UpstreamReply, UpstreamRequest};
use crate::config::{ConfigError, Directive, Loc};
use crate::dns::{Header, QueryBuilder, Rcode, Section, Zone, flag};
use crate::plugin::kubernetes::{CHASE_OPTION, Exported};

/// Host names followed through the server before giving up (the kubernetes plugin's
/// bound for ExternalName chains).
const MAX_CHASE_DEPTH: u8 = 8;
use crate::setup::{Plugin, SetupCtx};

mod answer;
pub mod setup;
#[cfg(test)]
mod tests;
mod xfr;

use answer::{Answer, Ctx};
pub use setup::Options;

/// The plugin.
pub struct External {
    pub opts: Options,
    /// The kubernetes plugin of the block, found when the block is linked.
    kubernetes: Arc<OnceLock<Arc<Exported>>>,
    /// Where the directive is, for the start-up error.
    loc: Option<Loc>,
}

/// Parses `k8s_external [ZONES...] { ... }`.
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let opts = setup::parse(dirs, ctx)?;
    let mut e = External::new(opts);
    e.loc = Some(dirs[0].loc().clone());
    Ok(Plugin::handler(e))
}

impl External {
    pub fn new(opts: Options) -> External {
        External {
            opts,
            kubernetes: Arc::new(OnceLock::new()),
            loc: None,
        }
    }

    /// Answers from `kubernetes`' snapshot and options (what linking gives; tests call
    /// it directly).
    pub fn with_kubernetes(self, k: Arc<Exported>) -> External {
        let _ = self.kubernetes.set(k);
        self
    }

    /// Whether a name error for this name goes to the next plugin.
    fn falls_through(&self, name: &crate::dns::NameKey) -> bool {
        self.opts
            .fallthrough
            .as_ref()
            .is_some_and(|zones| Zone::any_contains(zones, name))
    }
}

impl Handler for External {
    fn name(&self) -> &'static str {
        "k8s_external"
    }

    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        self.handle(q, None)
    }

    fn resume(&self, q: &mut Query<'_, '_>, reply: UpstreamReply<'_>, _cookie: u64) -> Step {
        // Answer again (the snapshot may have moved on), then add what the server
        // answered for the load balancer's host name.
        self.handle(q, Some(reply))
    }

    /// The zones for `transfer` (xfr.rs); they read the kubernetes plugin's data once
    /// the block is linked.
    fn transferer(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let source = xfr::ExternalTransferer {
            opts: self.opts.clone(),
            kubernetes: self.kubernetes.clone(),
        };
        Some(Arc::new(crate::plugin::transfer::Source(Arc::new(source))))
    }

    /// CoreDNS's `OnStartup`: the block's kubernetes plugin, or the start fails, with
    /// CoreDNS's errors.
    fn link(&self, chain: &[Arc<dyn Handler>]) -> Result<(), ConfigError> {
        let err = |msg: &str| {
            let msg = format!("plugin/k8s_external: {msg}");
            match &self.loc {
                Some(loc) => ConfigError::at(loc, msg),
                None => ConfigError::global(msg),
            }
        };
        let Some(k) = chain.iter().find(|h| h.name() == "kubernetes") else {
            return Err(err("kubernetes plugin not loaded"));
        };
        let exported = k.externaler().and_then(|e| e.downcast::<Exported>().ok());
        let Some(exported) = exported else {
            return Err(err("kubernetes plugin does not implement the Externaler interface"));
        };
        let _ = self.kubernetes.set(exported);
        Ok(())
    }
}

impl External {
    /// Answers into `q.resp`; `chased` is the server's reply for a host name this
    /// query asked it about.
    fn handle(&self, q: &mut Query<'_, '_>, chased: Option<UpstreamReply<'_>>) -> Step {
        let Some(zone) = self.opts.zones.iter().find(|z| z.contains(&q.req.qname)) else {
            return Step::Next;
        };
        let Some(k) = self.kubernetes.get() else {
            // Not linked: the build refuses a block without kubernetes, so only a
            // plugin made by hand gets here.
            return Step::Next;
        };
        let snap = k.snapshot.load();
        let ctx = Ctx::new(&self.opts, &k.opts, &snap, q.req, zone, &q.worker.budget);
        q.resp.start(q.req, Rcode::NOERROR);
        q.resp.set_aa(true);
        match ctx.answer(q.resp) {
            Answer::Records => Step::Answered,
            Answer::Chase(host) => match chased {
                Some(UpstreamReply::Message(reply)) => {
                    if Header::of(reply).is_some_and(|h| h.tc()) {
                        q.resp.set_flag(flag::TC, true);
                    }
                    let _ = q.resp.copy_sections(reply, &[Section::Answer]);
                    Step::Answered
                }
                // No answer from the server: the CNAME alone, as CoreDNS gives when its
                // lookup fails.
                Some(_) => Step::Answered,
                None => {
                    // The kubernetes plugin's chase depth, shared: a chain that leaves
                    // and re-enters the cluster's zones ends.
                    let depth = q
                        .req
                        .edns_options()
                        .find(|(code, _)| *code == CHASE_OPTION)
                        .and_then(|(_, d)| d.first().copied())
                        .unwrap_or(0);
                    if depth >= MAX_CHASE_DEPTH {
                        return Step::Answered;
                    }
                    QueryBuilder::new(host, q.req.qtype)
                        .edns(4096)
                        .options(&[(CHASE_OPTION, &[depth + 1])])
                        .write(&mut q.worker.upstream_msg);
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
            Answer::NoData => {
                ctx.soa(q.resp);
                Step::Answered
            }
            Answer::NameError { apex } => {
                // CoreDNS falls through only for names of services (`External`'s
                // NXDOMAIN), never for names under the apex.
                if !apex && self.falls_through(&q.req.qname) {
                    return Step::Next;
                }
                // Until the first sync, "does not exist" may be wrong: SERVFAIL, as the
                // kubernetes plugin answers (resolvers do not cache it).
                let rcode = if snap.synced || apex {
                    Rcode::NXDOMAIN
                } else {
                    Rcode::SERVFAIL
                };
                q.resp.start(q.req, rcode);
                q.resp.set_aa(true);
                ctx.soa(q.resp);
                Step::Answered
            }
            Answer::OverBudget => Step::Fail(Rcode::SERVFAIL, Some(ChainError::OverBudget("k8s_external"))),
        }
    }
}
