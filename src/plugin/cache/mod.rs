//! `cache`: keeps the replies of the plugins after it and answers repeated questions
//! from them, as CoreDNS's cache plugin does (README.md beside this file;
//! reference: `coredns-kubernetes.md` 7.6, CoreDNS `plugin/cache`).
//!
//! ```text
//!   serve ──key──▶ denial shard, then success shard
//!     │ fresh hit:  replay the records, TTLs = what is left ─▶ Answered (+ refresh if
//!     │             popular and nearly expired: prefetch)
//!     │ stale hit:  immediate: replay, TTL = RESPONSE_TTL ─▶ Answered + refresh
//!     │             verify:    ─▶ Next (on_response falls back to the entry on failure)
//!     │ miss ─▶ Next
//!     ▼
//!   kubernetes / forward write the reply
//!     │
//!   on_response: classify (success / denial / SERVFAIL / not cacheable), TTL =
//!     clamp(lowest TTL), rewrite every record's TTL to it, store a copy
//!   on_refresh:  the background refresh's reply replaces the entry if it succeeded
//! ```
//!
//! The storage is [`store::Store`]: N independent sharded caches, where N is 1 (all
//! workers share one; each shard has its own lock) or one per worker (each lock then
//! only ever taken by its worker), chosen by the `CLUSTERDNS_CACHE_PER_WORKER`
//! environment variable (a bench knob; shared by default). A hit allocates nothing:
//! the stored records are copied into the response buffer under the shard's lock.

pub mod setup;
pub mod store;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::chain::{Handler, Query, Rng, Step};
use crate::config::{ConfigError, Directive};
use crate::dns::{Rcode, Request, Response, ResponseType, Section, Zone, flag, rtype, wire};
use crate::metrics::{Families, bump};
use crate::plugin::once;
use crate::setup::{AttachCtx, Lifecycle, Plugin, SetupCtx};

use setup::{NAME, Options, Stale, StaleMode};
use store::{Entry, Key, Kind, Store};

/// Set to `1` to give every worker a cache of its own instead of one shared cache.
pub const PER_WORKER_ENV: &str = "CLUSTERDNS_CACHE_PER_WORKER";

/// CNAME links followed when checking that an answer reaches the asked type.
const MAX_CHAIN: usize = 16;

/// Parses `cache [TTL] [ZONES...] { ... }`, once per server block.
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let d = once(NAME, dirs)?;
    let opts = setup::parse(d, ctx)?;
    let per_worker = per_worker_knob(std::env::var(PER_WORKER_ENV).ok().as_deref());
    Ok(Plugin::both(Arc::new(Cache::new(opts, ctx.workers, per_worker))))
}

/// Whether the value of [`PER_WORKER_ENV`] asks for one store per worker.
fn per_worker_knob(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim() == "1")
}

/// Counters of one worker for one `server` label; each written by its worker only.
#[derive(Default)]
#[repr(align(64))]
struct Counters {
    requests: AtomicU64,
    hits: [AtomicU64; 2],
    misses: AtomicU64,
    prefetch: AtomicU64,
    drops: AtomicU64,
    served_stale: AtomicU64,
    evictions: [AtomicU64; 2],
}

/// The block's `server` labels and the counters behind them.
struct Attached {
    /// Distinct `server` labels of the block's routes.
    servers: Vec<Arc<str>>,
    /// [`RouteTag::slot`] → index in `servers`; `usize::MAX` for other blocks' slots.
    by_slot: Vec<usize>,
    /// `[server][worker]`, kept for the life of the process by their labels, so that a
    /// reload does not reset them (the entries themselves go with the configuration, as
    /// in CoreDNS).
    counters: Vec<Arc<[Counters]>>,
}

/// The plugin of one server block.
pub struct Cache {
    opts: Options,
    /// One shared store, or one per worker.
    stores: Box<[Store]>,
    /// Seeds the key hash.
    seed: u64,
    workers: usize,
    attached: OnceLock<Attached>,
}

/// What a reply is, for the cache.
struct Class {
    /// The cache it goes to; `None` if it is never stored.
    kind: Option<Kind>,
    /// Seconds: every record's TTL in the reply, and how long it is kept.
    ttl: u32,
}

impl Cache {
    /// A cache for `workers` worker threads: one store shared by all, or one each.
    pub fn new(opts: Options, workers: usize, per_worker: bool) -> Cache {
        let workers = workers.max(1);
        let n = if per_worker { workers } else { 1 };
        let stores = (0..n)
            .map(|_| Store::new(opts.success.capacity, opts.denial.capacity))
            .collect();
        Cache {
            opts,
            stores,
            seed: Rng::secure_u64(),
            workers,
            attached: OnceLock::new(),
        }
    }

    /// Whether the stores are one per worker.
    pub fn per_worker(&self) -> bool {
        self.stores.len() > 1
    }

    fn store(&self, worker: usize) -> &Store {
        &self.stores[worker % self.stores.len()]
    }

    /// Whether the query's name is under one of the cache's zones.
    fn covers(&self, req: &Request<'_>) -> bool {
        Zone::any_contains(&self.opts.zones, &req.qname)
    }

    fn counters(&self, q: &Query<'_, '_>) -> Option<&Counters> {
        let a = self.attached.get()?;
        let i = *a.by_slot.get(q.route.slot)?;
        a.counters.get(i)?.get(q.worker.id)
    }

    fn count(&self, q: &Query<'_, '_>, f: impl FnOnce(&Counters) -> &AtomicU64) {
        if let Some(c) = self.counters(q) {
            bump(f(c), 1);
        }
    }

    /// Whether a fresh hit should refresh the entry in the background (CoreDNS's
    /// `shouldPrefetch`): popular enough, and little enough of its TTL left.
    fn should_prefetch(&self, e: &mut Entry, ttl: i64, now: Instant) -> bool {
        let Some(p) = &self.opts.prefetch else {
            return false;
        };
        // The hit count restarts after a gap of the window or more.
        match e.last_hit {
            Some(last) if now.saturating_duration_since(last) <= p.window => e.hits = e.hits.saturating_add(1),
            _ => e.hits = 1,
        }
        e.last_hit = Some(now);
        let threshold = (u64::from(p.percentage) * u64::from(e.orig_ttl)).div_ceil(100) as i64;
        e.hits >= p.amount && ttl <= threshold && !e.refreshing(now)
    }

    /// Classifies the finished reply in `q.resp` the way CoreDNS's `WriteMsg` does.
    fn classify(&self, q: &Query<'_, '_>) -> Class {
        let resp = &*q.resp;
        let qtype = q.req.qtype;
        let mt = resp.response_type(qtype);
        let (kind, ttl) = match mt {
            ResponseType::NameError | ResponseType::NoData => {
                (Some(Kind::Denial), self.opts.denial.clamp(minimal_ttl(resp, mt)))
            }
            ResponseType::OtherError if resp.rcode() == Rcode::SERVFAIL => (Some(Kind::Denial), self.opts.servfail_ttl),
            ResponseType::NoError | ResponseType::Delegation => {
                (Some(Kind::Success), self.opts.success.clamp(minimal_ttl(resp, mt)))
            }
            // REFUSED, NOTIMP, FORMERR, ...; transfers: rewritten, never stored.
            ResponseType::OtherError | ResponseType::Meta => (None, self.opts.success.clamp(minimal_ttl(resp, mt))),
        };
        let truncated = resp.flags().tc();
        let storable = !truncated
            && ttl > 0
            && match mt {
                // A denial must carry the zone's SOA to be kept (RFC 2308 section 5).
                ResponseType::NameError => has_soa(resp),
                // An answer must reach the asked type through its CNAMEs, or say why not.
                ResponseType::NoError if resp.count(Section::Answer) > 0 => has_soa(resp) || reaches_type(resp, q.req),
                _ => true,
            };
        Class {
            kind: kind.filter(|_| storable),
            ttl,
        }
    }

    /// Stores the finished reply in `q.resp` in the `kind` cache for `ttl` seconds,
    /// unless `disable` excludes its name. `carry` keeps the popularity of the entry
    /// it replaces (a refresh).
    fn insert(&self, q: &mut Query<'_, '_>, key: &Key, kind: Kind, ttl: u32, carry: bool) {
        let disabled = match kind {
            Kind::Success => &self.opts.disable_success,
            Kind::Denial => &self.opts.disable_denial,
        };
        if Zone::any_contains(disabled, &q.req.qname) {
            return;
        }
        let now = q.worker.now;
        let Some(mut entry) = Entry::capture(q.resp, q.req, *key, now, ttl) else {
            self.count(q, |c| &c.drops);
            return;
        };
        let store = self.store(q.worker.id);
        let cap = store.per_shard(kind);
        let mut pair = store.shard(key).lock();
        if carry {
            if let Some(old) = pair.get(kind).get_mut(key, q.req) {
                entry.hits = old.hits;
                entry.last_hit = old.last_hit;
            }
        }
        // The same question in the other cache is out of date now.
        let twin = pair.get(kind.other()).remove(key.hash);
        let (displaced, evicted) = pair.get(kind).insert(entry, cap, &mut q.worker.rng);
        drop(pair);
        drop((twin, displaced));
        if evicted {
            self.count(q, |c| &c.evictions[kind as usize]);
        }
    }

    /// Writes the reply of entry `e` for `q` with every TTL set to `ttl`: the header
    /// from the query, AA set (as CoreDNS, so that clients which drop non-authoritative
    /// replies accept it), RA and AD from the stored reply (AD only for a client that
    /// asked for DNSSEC or set AD itself, RFC 6840 5.7-5.8).
    fn write(&self, q: &mut Query<'_, '_>, e: &Entry, ttl: u32) {
        let resp = &mut *q.resp;
        resp.start(q.req, e.rcode);
        resp.set_flag(flag::AA, true);
        resp.set_flag(flag::RA, e.flags.ra());
        let ad_wanted = q.req.dnssec_ok() || q.req.flags.ad();
        resp.set_flag(flag::AD, ad_wanted && e.flags.ad());
        for (section, records) in e.sections() {
            if !records.is_empty() && resp.push_encoded(section, records).is_err() {
                // Truncated to the client's size (TC is set at finish).
                break;
            }
        }
        set_ttls(resp, ttl);
    }

    /// serve_stale verify: the refresh in `q.resp` failed; answers from the entry for
    /// `key` if it may still be served. Returns whether it did.
    fn answer_stale(&self, q: &mut Query<'_, '_>, key: &Key, stale: &Stale) -> bool {
        let now = q.worker.now;
        let mut pair = self.store(q.worker.id).shard(key).lock();
        for kind in [Kind::Denial, Kind::Success] {
            let Some(e) = pair.get(kind).get_mut(key, q.req) else {
                continue;
            };
            let left = e.ttl(now);
            if left <= 0 && -left >= stale.max_age.as_secs() as i64 {
                continue;
            }
            if !stale.recheck.is_zero() {
                e.retry_after = Some(now + stale.recheck);
            }
            let ttl = if left > 0 { left as u32 } else { stale.response_ttl };
            self.write(q, e, ttl);
            drop(pair);
            q.resp.finish();
            q.answered_by = NAME;
            q.error = None;
            self.count(q, |c| &c.served_stale);
            return true;
        }
        false
    }

    /// A background refresh did not produce a reply worth keeping: the entry stays as
    /// it was, and with RECHECK no new refresh is tried for a while.
    fn refresh_failed(&self, q: &Query<'_, '_>, key: &Key) {
        let now = q.worker.now;
        let recheck = self.opts.stale.map_or(Duration::ZERO, |s| s.recheck);
        let mut pair = self.store(q.worker.id).shard(key).lock();
        for kind in [Kind::Denial, Kind::Success] {
            if let Some(e) = pair.get(kind).get_mut(key, q.req) {
                e.refresh_at = None;
                if !recheck.is_zero() {
                    e.retry_after = Some(now + recheck);
                }
            }
        }
    }
}

/// Whether the reply is a real answer to a refresh: written by a plugin (not a failure
/// the server writes), NOERROR or NXDOMAIN (RFC 8767 section 4), complete.
fn refreshed(q: &Query<'_, '_>) -> bool {
    !q.answered_by.is_empty() && matches!(q.resp.rcode(), Rcode::NOERROR | Rcode::NXDOMAIN) && !q.resp.flags().tc()
}

/// CoreDNS's `dnsutil.MinimalTTL`: the lowest TTL of the records (OPT excluded),
/// at most [`setup::MAX_TTL`]; [`setup::MIN_TTL`] for a reply without records and for
/// anything but an answer or a denial (referrals included).
fn minimal_ttl(resp: &Response, mt: ResponseType) -> u32 {
    if !matches!(
        mt,
        ResponseType::NoError | ResponseType::NameError | ResponseType::NoData
    ) {
        return setup::MIN_TTL;
    }
    let bytes = resp.bytes();
    let lowest = resp
        .records()
        .iter()
        .filter_map(|r| wire::get_u32(bytes, r.ttl_at as usize))
        .min();
    lowest.map_or(setup::MIN_TTL, |t| t.min(setup::MAX_TTL))
}

/// Sets the TTL of every record written so far.
fn set_ttls(resp: &mut Response, ttl: u32) {
    let ttl = ttl.to_be_bytes();
    for i in 0..resp.records().len() {
        let at = resp.records()[i].ttl_at as usize;
        if let Some(field) = resp.bytes_mut().get_mut(at..at + 4) {
            field.copy_from_slice(&ttl);
        }
    }
}

fn has_soa(resp: &Response) -> bool {
    resp.records()
        .iter()
        .any(|r| r.section == Section::Authority && r.rtype == rtype::SOA)
}

/// Whether the answer section, following CNAMEs from the question name, ends at a
/// record of the asked type (a lone CNAME whose target did not resolve does not).
fn reaches_type(resp: &Response, req: &Request<'_>) -> bool {
    let qtype = req.qtype;
    if qtype == rtype::CNAME || qtype == rtype::ANY {
        return true;
    }
    let bytes = resp.bytes();
    let answers = || resp.records().iter().filter(|r| r.section == Section::Answer);
    let mut target = [0u8; wire::MAX_NAME_LEN];
    let name = req.qname.wire();
    target[..name.len()].copy_from_slice(name);
    let mut target_len = name.len();
    let mut owner = [0u8; wire::MAX_NAME_LEN];
    for _ in 0..MAX_CHAIN {
        let mut next = None;
        for r in answers() {
            let Some((_, len)) = wire::read_name(bytes, r.start as usize, &mut owner) else {
                continue;
            };
            if !owner[..len].eq_ignore_ascii_case(&target[..target_len]) {
                continue;
            }
            if r.rtype == qtype {
                return true;
            }
            if r.rtype == rtype::CNAME && next.is_none() {
                // The rdata (a name) follows type, class, TTL and rdlength.
                next = Some(r.ttl_at as usize + 6);
            }
        }
        let Some(at) = next else {
            return false;
        };
        match wire::read_name(bytes, at, &mut target) {
            Some((_, len)) => target_len = len,
            None => return false,
        }
    }
    false
}

impl Handler for Cache {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        if !self.covers(q.req) {
            return Step::Next;
        }
        self.count(q, |c| &c.requests);
        let key = Key::of(q.req, self.seed);
        let now = q.worker.now;
        let mut dead: [Option<Entry>; 2] = [None, None];
        let mut pair = self.store(q.worker.id).shard(&key).lock();
        // The denial cache first, as CoreDNS.
        for kind in [Kind::Denial, Kind::Success] {
            let shard = pair.get(kind);
            let Some(e) = shard.get_mut(&key, q.req) else {
                continue;
            };
            let left = e.ttl(now);
            if left > 0 {
                let prefetch = self.should_prefetch(e, left, now);
                if prefetch {
                    e.refresh_at = Some(now);
                    q.refresh = true;
                }
                let ttl = if self.opts.keepttl { e.orig_ttl } else { left as u32 };
                self.write(q, e, ttl);
                drop(pair);
                self.count(q, |c| &c.hits[kind as usize]);
                if prefetch {
                    self.count(q, |c| &c.prefetch);
                }
                return Step::Answered;
            }
            match &self.opts.stale {
                Some(stale) if -left < stale.max_age.as_secs() as i64 => {
                    let rechecking = e.rechecking(now);
                    if stale.mode == StaleMode::Verify && !rechecking {
                        // RFC 8767: try to refresh first; on_response falls back to
                        // this entry if that fails.
                        drop(pair);
                        self.count(q, |c| &c.hits[kind as usize]);
                        return Step::Next;
                    }
                    if stale.mode == StaleMode::Immediate && !rechecking && !e.refreshing(now) {
                        e.refresh_at = Some(now);
                        q.refresh = true;
                    }
                    self.write(q, e, stale.response_ttl);
                    drop(pair);
                    self.count(q, |c| &c.hits[kind as usize]);
                    self.count(q, |c| &c.served_stale);
                    return Step::Answered;
                }
                _ => {
                    // Past serving: dropped now that it was found.
                    dead[kind as usize] = shard.remove(key.hash);
                }
            }
        }
        drop(pair);
        drop(dead);
        self.count(q, |c| &c.misses);
        Step::Next
    }

    fn wants_response(&self) -> bool {
        true
    }

    /// Stores what the plugins after the cache answered, with every TTL rewritten to
    /// the cache duration (so the first reply already shows what hits will show).
    fn on_response(&self, q: &mut Query<'_, '_>) {
        // A zone transfer is never stored, and its records keep the zone's TTLs: the
        // secondary serves them as the zone says (CoreDNS rewrites them to 5 s, the
        // minimal TTL of a meta reply), and a transfer of several messages would
        // otherwise have its first rewritten and not the others.
        if !self.covers(q.req) || matches!(q.req.qtype, rtype::AXFR | rtype::IXFR) {
            return;
        }
        let key = Key::of(q.req, self.seed);
        if let Some(stale) = &self.opts.stale {
            if stale.mode == StaleMode::Verify && !refreshed(q) && self.answer_stale(q, &key, stale) {
                return;
            }
        }
        // A failure the server writes (a plugin returned an error rcode) never reaches
        // CoreDNS's cache, which only sees written replies.
        if q.answered_by.is_empty() {
            return;
        }
        let class = self.classify(q);
        if let Some(kind) = class.kind {
            self.insert(q, &key, kind, class.ttl, false);
        }
        set_ttls(q.resp, class.ttl);
        // RFC 6840 5.7-5.8: AD only for a client that asked for DNSSEC or set AD.
        if !q.req.dnssec_ok() && !q.req.flags.ad() {
            q.resp.set_flag(flag::AD, false);
        }
    }

    /// The reply of a prefetch or a stale entry's refresh: replaces the entry if it is
    /// a real answer; otherwise the entry stays as it was.
    fn on_refresh(&self, q: &mut Query<'_, '_>) {
        let key = Key::of(q.req, self.seed);
        if refreshed(q) {
            let class = self.classify(q);
            if let Some(kind) = class.kind {
                self.insert(q, &key, kind, class.ttl, true);
                return;
            }
        }
        self.refresh_failed(q, &key);
    }
}

impl Lifecycle for Cache {
    fn attach(&self, block: &AttachCtx<'_>) {
        let (by_slot, servers) = block.servers_by_slot();
        let zones = &self.opts.zones_label;
        let counters = servers
            .iter()
            .map(|server| {
                block
                    .process
                    .kept_per_worker(&format!("cache|{server}|{zones}"), self.workers)
            })
            .collect();
        let attached = Attached {
            servers,
            by_slot,
            counters,
        };
        if self.attached.set(attached).is_err() {
            log::warn!(target: "plugin/cache", "attached twice; keeping the first routes");
        }
    }

    fn metrics(&self, out: &mut Families) {
        let Some(a) = self.attached.get() else {
            return;
        };
        let zones = self.opts.zones_label.as_str();
        let mut entries = [0usize; 2];
        for s in self.stores.iter() {
            for kind in [Kind::Success, Kind::Denial] {
                entries[kind as usize] += s.len(kind);
            }
        }
        for (i, server) in a.servers.iter().enumerate() {
            // Two caches with the same labels (blocks on one port, same zones) count
            // into the same kept counters: written once.
            if !out.first_from(Arc::as_ptr(&a.counters[i])) {
                continue;
            }
            let sum = |f: &dyn Fn(&Counters) -> &AtomicU64| -> f64 {
                a.counters[i].iter().map(|c| f(c).load(Ordering::Relaxed)).sum::<u64>() as f64
            };
            let labels = [("server", &**server), ("zones", zones), ("view", "")];
            for kind in [Kind::Success, Kind::Denial] {
                let typed = [
                    ("server", &**server),
                    ("type", kind.label()),
                    ("zones", zones),
                    ("view", ""),
                ];
                out.gauge(
                    "coredns_cache_entries",
                    "Entries in the cache, by cache type.",
                    &typed,
                    entries[kind as usize] as f64,
                );
                out.counter(
                    "coredns_cache_hits_total",
                    "Queries answered from the cache, stale answers included, by cache type.",
                    &typed,
                    sum(&|c| &c.hits[kind as usize]),
                );
                out.counter(
                    "coredns_cache_evictions_total",
                    "Entries removed to make room in a full shard, by cache type.",
                    &typed,
                    sum(&|c| &c.evictions[kind as usize]),
                );
            }
            out.counter(
                "coredns_cache_requests_total",
                "Queries the cache looked up.",
                &labels,
                sum(&|c| &c.requests),
            );
            out.counter(
                "coredns_cache_misses_total",
                "Queries the cache had no answer for (deprecated: requests minus hits).",
                &labels,
                sum(&|c| &c.misses),
            );
            out.counter(
                "coredns_cache_prefetch_total",
                "Background refreshes of popular entries about to expire.",
                &labels,
                sum(&|c| &c.prefetch),
            );
            out.counter(
                "coredns_cache_drops_total",
                "Replies not stored because they could not be captured.",
                &labels,
                sum(&|c| &c.drops),
            );
            out.counter(
                "coredns_cache_served_stale_total",
                "Queries answered from expired entries (serve_stale).",
                &labels,
                sum(&|c| &c.served_stale),
            );
        }
    }
}
