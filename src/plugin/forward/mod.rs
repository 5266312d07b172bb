//! `forward`: sends queries to upstream resolvers through the worker's upstream path
//! (README.md beside this file). The plugin does no I/O on the query path: it picks an
//! upstream and writes the message; the worker sends it, waits without blocking, and
//! resumes the plugin with the reply, the timeout or the error.

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::chain::{ChainError, Handler, Query, Step, UpstreamProto, UpstreamReply, UpstreamRequest};
use crate::config::{ConfigError, Directive};
use crate::dns::{Header, Rcode, Section, Transport, Zone, flag, wire};
use crate::kubernetes::snapshot::FxHasher;
use crate::metrics::{Families, Histogram};
use crate::plugin::once;
use crate::process::ProcessState;
use crate::setup::{Lifecycle, Plugin, SetupCtx};

mod health;
pub mod setup;

pub use setup::{Options, Policy, Target};

/// Upstream request durations, CoreDNS's `coredns_proxy_request_duration_seconds` buckets.
static DURATION_BUCKETS: [f64; 16] = [
    0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192,
];
/// The rcodes duration metrics are kept apart for; others count as `other`.
const RCODE_SLOTS: [Rcode; 4] = [Rcode::NOERROR, Rcode::NXDOMAIN, Rcode::SERVFAIL, Rcode::REFUSED];
/// The whole time a query may spend being forwarded (CoreDNS's overall deadline).
const QUERY_DEADLINE: Duration = Duration::from_secs(5);

/// One upstream and its health.
pub struct Upstream {
    pub addr: SocketAddr,
    /// `tls://`: every exchange goes over TLS with this configuration.
    pub tls: Option<Arc<crate::tls::Upstream>>,
    /// Consecutive failures; at `max_fails` the upstream is down until a health check
    /// gets an answer.
    fails: AtomicU32,
    /// What is counted for its address, kept across reloads.
    stats: Arc<UpstreamStats>,
}

/// The metrics of one upstream address, the same for every configuration and every
/// *forward* that sends to it (CoreDNS's vectors are process-wide, labelled by `to`).
pub struct UpstreamStats {
    /// Per worker, per rcode slot (+ other): request durations (each worker writes its
    /// own, whichever instance it forwards for).
    durations: Box<[Box<[Histogram]>]>,
    /// Written by the health checkers, of which several instances may have one.
    health_failures: AtomicU64,
}

impl UpstreamStats {
    /// The stats of `addr` for `workers` workers.
    fn kept(process: &ProcessState, addr: SocketAddr, workers: usize) -> Arc<UpstreamStats> {
        process.kept(
            &format!("forward|{addr}"),
            |s: &Arc<UpstreamStats>| s.durations.len() == workers,
            || {
                Arc::new(UpstreamStats {
                    durations: (0..workers)
                        .map(|_| {
                            (0..=RCODE_SLOTS.len())
                                .map(|_| Histogram::new(&DURATION_BUCKETS))
                                .collect()
                        })
                        .collect(),
                    health_failures: AtomicU64::new(0),
                })
            },
        )
    }
}

/// The counters CoreDNS keeps process-wide, without labels: one set for every *forward*
/// of every configuration (kept in the process state under [`Totals::KEY`]).
#[derive(Default)]
struct Totals {
    /// `coredns_forward_healthcheck_broken_total`.
    healthcheck_broken: AtomicU64,
    /// `coredns_forward_max_concurrent_rejects_total`.
    max_concurrent_rejects: AtomicU64,
}

impl Totals {
    const KEY: &'static str = "forward";

    fn kept(process: &ProcessState) -> Arc<Totals> {
        process.kept(Totals::KEY, |_: &Arc<Totals>| true, Arc::default)
    }
}

impl Upstream {
    fn down(&self, max_fails: u32) -> bool {
        max_fails > 0 && self.fails.load(Ordering::Relaxed) >= max_fails
    }
}

/// The plugin.
pub struct Forward {
    opts: Options,
    upstreams: Vec<Arc<Upstream>>,
    /// Next upstream for `policy round_robin`.
    next: AtomicUsize,
    /// Queries in flight (for `max_concurrent`).
    inflight: AtomicUsize,
    checker: Mutex<Option<health::Checker>>,
    stopped: Arc<AtomicBool>,
    /// The process-wide counters.
    totals: Arc<Totals>,
}

/// Parses `forward FROM TO... { ... }`.
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let d = once("forward", dirs)?;
    let opts = setup::parse(d, ctx)?;
    let upstreams = opts
        .to
        .iter()
        .map(|t| {
            let addr = t.addr;
            Arc::new(Upstream {
                addr,
                tls: t.tls.clone(),
                fails: AtomicU32::new(0),
                stats: UpstreamStats::kept(ctx.process, addr, ctx.workers.max(1)),
            })
        })
        .collect();
    Ok(Plugin::both(Arc::new(Forward {
        opts,
        upstreams,
        next: AtomicUsize::new(0),
        inflight: AtomicUsize::new(0),
        checker: Mutex::new(None),
        stopped: Arc::new(AtomicBool::new(false)),
        totals: Totals::kept(ctx.process),
    })))
}

/// What a forwarded query carries from try to try (in the upstream request's cookie).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Attempt {
    /// Index of the upstream tried, in `upstreams`.
    upstream: u8,
    /// Tries made so far (the first is 0).
    tries: u8,
    /// Upstreams tried so far, as a bit set (at most 15 upstreams).
    tried: u16,
    tcp: bool,
}

impl Attempt {
    fn pack(self) -> u64 {
        u64::from(self.upstream)
            | (u64::from(self.tries) << 8)
            | (u64::from(self.tried) << 16)
            | (u64::from(self.tcp) << 32)
    }

    fn unpack(c: u64) -> Attempt {
        Attempt {
            upstream: c as u8,
            tries: (c >> 8) as u8,
            tried: (c >> 16) as u16,
            tcp: (c >> 32) & 1 == 1,
        }
    }
}

impl Forward {
    /// Whether this plugin forwards `q`'s name: at or below FROM and not excepted.
    fn matches(&self, q: &Query<'_, '_>) -> bool {
        let name = &q.req.qname;
        self.opts.from.contains(name) && !Zone::any_contains(&self.opts.except, name)
    }

    /// The next upstream to try, by policy, among those not tried yet; healthy ones
    /// first. With every upstream down, one is tried anyway (CoreDNS counts that in
    /// `coredns_forward_healthcheck_broken_total`).
    fn pick(&self, q: &mut Query<'_, '_>, tried: u16) -> Option<usize> {
        let n = self.upstreams.len();
        let untried = |i: usize| tried & (1 << i) == 0;
        let start = match self.opts.policy {
            Policy::Random => q.worker.rng.below(n),
            Policy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % n,
            Policy::Sequential => 0,
        };
        let order = (0..n).map(|k| (start + k) % n);
        if let Some(i) = order
            .clone()
            .find(|&i| untried(i) && !self.upstreams[i].down(self.opts.max_fails))
        {
            return Some(i);
        }
        if tried == 0 {
            // Everything is down: try one anyway (unless told to fail fast).
            self.totals.healthcheck_broken.fetch_add(1, Ordering::Relaxed);
            if self.opts.failfast_all_unhealthy {
                return None;
            }
            return Some(start);
        }
        order.clone().find(|&i| untried(i))
    }

    /// Hands the query to the worker for upstream `a.upstream`.
    fn send(&self, q: &mut Query<'_, '_>, a: Attempt) -> Step {
        let msg = &mut q.worker.upstream_msg;
        msg.clear();
        q.req.copy_for_upstream(msg);
        // The query goes out with our own (random, set by the worker) ID; the flags
        // the client set (RD, CD) and its EDNS go with it, its cookie does not.
        let mut key = FxHasher::default();
        key.write_usize(self as *const Forward as usize);
        key.write(q.req.qname.wire());
        key.write_u8(a.tcp as u8);
        key.write(&[
            q.req.qtype as u8,
            (q.req.qtype >> 8) as u8,
            q.req.dnssec_ok() as u8,
            q.req.cd() as u8,
        ]);
        let up = &self.upstreams[a.upstream as usize];
        // A tls:// upstream is asked over TLS whatever the client used (CoreDNS: tcp-tls).
        let proto = match &up.tls {
            Some(t) => UpstreamProto::Tls(t.clone()),
            None if a.tcp => UpstreamProto::Tcp,
            None => UpstreamProto::Udp,
        };
        Step::Upstream(UpstreamRequest {
            to: up.addr,
            proto,
            // No try outlives the query's overall deadline.
            timeout: self
                .opts
                .read_timeout
                .min(QUERY_DEADLINE.saturating_sub(q.worker.now.elapsed())),
            cookie: a.pack(),
            // Retries are not coalesced: they must really go out again.
            coalesce: (a.tries == 0 && q.coalesce).then(|| key.finish()),
            expire: self.opts.expire,
        })
    }

    /// Whether to send over TCP first: `force_tcp`, or the client's transport unless
    /// `prefer_udp`.
    fn first_tcp(&self, q: &Query<'_, '_>) -> bool {
        self.opts.force_tcp || (q.req.transport == Transport::Tcp && !self.opts.prefer_udp)
    }

    fn done(&self) {
        self.inflight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Tries the next upstream, or fails the query when none is left or time is up.
    fn retry(&self, q: &mut Query<'_, '_>, a: Attempt, why: &'static str) -> Step {
        let out_of_time = q.worker.now.elapsed() >= QUERY_DEADLINE;
        let next = if out_of_time { None } else { self.pick(q, a.tried) };
        match next {
            Some(i) if usize::from(a.tries) + 1 < self.opts.max_tries => {
                let next = Attempt {
                    upstream: i as u8,
                    tries: a.tries + 1,
                    tried: a.tried | (1 << i),
                    tcp: self.first_tcp(q),
                };
                self.send(q, next)
            }
            _ => {
                self.done();
                Step::Fail(Rcode::SERVFAIL, Some(ChainError::Plugin("forward", why.into())))
            }
        }
    }

    fn record(&self, worker: usize, upstream: usize, rcode: Option<Rcode>, elapsed: Duration) {
        let slot = rcode
            .and_then(|r| RCODE_SLOTS.iter().position(|x| *x == r))
            .unwrap_or(RCODE_SLOTS.len());
        if let Some(h) = self.upstreams[upstream]
            .stats
            .durations
            .get(worker)
            .and_then(|w| w.get(slot))
        {
            h.observe(elapsed.as_secs_f64());
        }
    }
}

/// Whether `reply` answers exactly the question of the request `raw` (name compared
/// case-insensitively, as CoreDNS's `Match`).
fn same_question(raw: &[u8], reply: &[u8]) -> bool {
    let mut a = [0u8; wire::MAX_NAME_LEN];
    let mut b = [0u8; wire::MAX_NAME_LEN];
    let (Some((ea, la)), Some((eb, lb))) = (
        wire::read_name(raw, wire::QNAME_OFFSET, &mut a),
        wire::read_name(reply, wire::QNAME_OFFSET, &mut b),
    ) else {
        return false;
    };
    reply.len() >= eb + 4
        && Header::of(reply).is_some_and(|h| h.qdcount() == 1)
        && a[..la].eq_ignore_ascii_case(&b[..lb])
        && raw.get(ea..ea + 4) == reply.get(eb..eb + 4)
}

/// Copies an upstream reply into the response: its rcode (extended bits included),
/// AA/RA/AD flags and every record but the OPT; the response's own size limit applies.
/// The reply has passed [`wire::check_message`], so only the size limit can stop the
/// copy (and then TC is set). `header` is the reply's.
fn relay(q: &mut Query<'_, '_>, reply: &[u8], header: Header<'_>) {
    q.resp.start(q.req, wire::message_rcode(reply));
    for bit in [flag::AA, flag::RA, flag::AD] {
        q.resp.set_flag(bit, header.flags().has(bit));
    }
    if header.tc() {
        q.resp.set_flag(flag::TC, true);
    }
    let _ = q
        .resp
        .copy_sections(reply, &[Section::Answer, Section::Authority, Section::Additional]);
}

impl Handler for Forward {
    fn name(&self) -> &'static str {
        "forward"
    }

    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        if !self.matches(q) {
            return Step::Next;
        }
        // Taken before picking, so that workers racing for the last slot cannot both win.
        let before = self.inflight.fetch_add(1, Ordering::Relaxed);
        if let Some(max) = self.opts.max_concurrent {
            if before >= max {
                self.done();
                self.totals.max_concurrent_rejects.fetch_add(1, Ordering::Relaxed);
                return Step::Fail(
                    Rcode::REFUSED,
                    Some(ChainError::Plugin("forward", "max_concurrent reached".into())),
                );
            }
        }
        let Some(i) = self.pick(q, 0) else {
            self.done();
            return Step::Fail(
                Rcode::SERVFAIL,
                Some(ChainError::Plugin("forward", "no healthy upstreams".into())),
            );
        };
        let a = Attempt {
            upstream: i as u8,
            tries: 0,
            tried: 1 << i,
            tcp: self.first_tcp(q),
        };
        self.send(q, a)
    }

    fn resume(&self, q: &mut Query<'_, '_>, reply: UpstreamReply<'_>, cookie: u64) -> Step {
        let a = Attempt::unpack(cookie);
        let up = a.upstream as usize;
        let elapsed = q.worker.now.elapsed();
        let msg = match reply {
            UpstreamReply::Message(m) => m,
            UpstreamReply::Failed(std::io::ErrorKind::WouldBlock) => {
                // The worker's table of exchanges is full: refuse at once (as for
                // max_concurrent) rather than queue, and blame no upstream.
                self.done();
                self.totals.max_concurrent_rejects.fetch_add(1, Ordering::Relaxed);
                return Step::Fail(
                    Rcode::REFUSED,
                    Some(ChainError::Plugin(
                        "forward",
                        "too many upstream queries in flight".into(),
                    )),
                );
            }
            UpstreamReply::Timeout | UpstreamReply::Failed(_) => {
                self.record(q.worker.id, up, None, elapsed);
                self.upstreams[up].fails.fetch_add(1, Ordering::Relaxed);
                let why = if matches!(reply, UpstreamReply::Timeout) {
                    "upstream timed out"
                } else {
                    "upstream failed"
                };
                return self.retry(q, a, why);
            }
        };
        // A reply that does not read in full (a compression pointer that loops, points
        // forward, into its own name or past the end, in any section, the OPT record's
        // included) is no answer: CoreDNS's client fails to unpack it, and forward tries
        // the next upstream, then answers SERVFAIL. Relaying it would drop the records
        // from the broken one on and answer NOERROR with what is left.
        let Some(header) = Header::of(msg).filter(|_| wire::check_message(msg)) else {
            return self.retry(q, a, "malformed reply from upstream");
        };
        let rcode = header.rcode();
        self.record(q.worker.id, up, Some(rcode), elapsed);
        // An answer of any kind proves the upstream alive.
        self.upstreams[up].fails.store(0, Ordering::Relaxed);
        if !same_question(q.req.raw, msg) {
            // Not an answer to what was asked (CoreDNS: FORMERR to the client).
            self.done();
            return Step::Fail(
                Rcode::FORMERR,
                Some(ChainError::Plugin(
                    "forward",
                    "reply does not match the question".into(),
                )),
            );
        }
        if header.tc() && !a.tcp && self.opts.prefer_udp && q.worker.now.elapsed() < QUERY_DEADLINE {
            // prefer_udp: a truncated UDP answer is asked again over TCP.
            return self.send(
                q,
                Attempt {
                    tcp: true,
                    tries: a.tries + 1,
                    ..a
                },
            );
        }
        if self.opts.failover.contains(&rcode) {
            return self.retry(q, a, "failover rcode from every upstream");
        }
        let nodata = rcode == Rcode::NOERROR && header.ancount() == 0;
        if self.opts.next.contains(&rcode) || (self.opts.next_on_nodata && nodata) {
            self.done();
            return Step::Next;
        }
        relay(q, msg, header);
        self.done();
        Step::Answered
    }
}

impl Lifecycle for Forward {
    fn start(&self) {
        if self.opts.max_fails == 0 {
            return;
        }
        *self.checker.lock() = Some(health::Checker::start(
            self.upstreams.clone(),
            self.opts.health.clone(),
            self.opts.max_fails,
            self.opts.force_tcp,
            self.stopped.clone(),
        ));
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Some(c) = self.checker.lock().take() {
            c.stop();
        }
    }

    fn metrics(&self, out: &mut Families) {
        // Process-wide: written once per scrape, whatever the number of instances.
        if out.first_from(Arc::as_ptr(&self.totals)) {
            out.counter(
                "coredns_forward_healthcheck_broken_total",
                "Counter of the number of complete failures of the healthchecks.",
                &[],
                self.totals.healthcheck_broken.load(Ordering::Relaxed) as f64,
            );
            out.counter(
                "coredns_forward_max_concurrent_rejects_total",
                "Counter of the number of queries rejected because the concurrent queries were at maximum.",
                &[],
                self.totals.max_concurrent_rejects.load(Ordering::Relaxed) as f64,
            );
        }
        for u in &self.upstreams {
            // Instances that send to the same address share its stats.
            if !out.first_from(Arc::as_ptr(&u.stats)) {
                continue;
            }
            let to = u.addr.to_string();
            out.counter(
                "coredns_proxy_healthcheck_failures_total",
                "Counter of the number of failed healthchecks.",
                &[("proxy_name", "forward"), ("to", &to)],
                u.stats.health_failures.load(Ordering::Relaxed) as f64,
            );
            for slot in 0..=RCODE_SLOTS.len() {
                let mut counts = vec![0u64; DURATION_BUCKETS.len() + 1];
                let mut sum = 0.0;
                for w in &u.stats.durations {
                    w[slot].add_to(&mut counts, &mut sum);
                }
                if counts.iter().all(|c| *c == 0) {
                    continue;
                }
                let rcode = RCODE_SLOTS
                    .get(slot)
                    .map_or_else(|| "other".to_string(), |r| r.name().into_owned());
                out.histogram(
                    "coredns_proxy_request_duration_seconds",
                    "Histogram of the time each request took.",
                    &[("proxy_name", "forward"), ("to", &to), ("rcode", &rcode)],
                    &DURATION_BUCKETS,
                    &counts,
                    sum,
                );
            }
        }
    }
}

/// Counts a health check failure.
fn health_failed(u: &Upstream) {
    u.stats.health_failures.fetch_add(1, Ordering::Relaxed);
}

/// `max_fails`, `health_check` and friends, for the checker.
#[derive(Clone, Debug)]
pub struct HealthOptions {
    pub interval: Duration,
    /// Send the probe with RD clear.
    pub no_rec: bool,
    /// The probe's name (wire), default the root.
    pub domain: Vec<u8>,
}

/// Resolv.conf-style `nameserver` addresses in `text`, port 53.
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|ip| ip.split('%').next().and_then(|i| i.parse::<IpAddr>().ok()))
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}
