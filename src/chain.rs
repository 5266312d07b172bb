//! The plugin chain: the per-query half of the contract between the worker and the
//! plugins ([`Handler`]; the other half, what the server calls around the queries, is
//! `setup::Lifecycle`).
//!
//! ```text
//!   worker ──▶ plugin[0].serve ──Next──▶ plugin[1].serve ──Next──▶ … plugin[i].serve
//!                                                                     │
//!         ┌───────────────────────────────────────────────────────────┤
//!         │ Answered: plugin i wrote the reply                        │ Upstream: the worker sends
//!         │ Fail(rcode): the server writes a bare reply               │ the query, and calls
//!         ▼                                                           │ plugin[i].resume with the
//!   plugin[i-1].on_response … plugin[0].on_response ◀── Answered ◀────┘ reply (or the timeout)
//!         │  (cache insert, loadbalance, log, metrics; a plugin's follow_up may ask for
//!         │   one exchange there instead, and is resumed like plugin i: dns64)
//!         ▼
//!   worker sends the reply
//! ```
//!
//! A plugin does no I/O: it reads the [`Request`], writes into the [`Response`], or
//! asks the worker to send a message upstream. This is what lets forward and cache
//! live in a thread-per-core server without an async runtime (ARCHITECTURE.md rule 2).
//! Plugins run in CoreDNS's fixed order, not the Corefile's (rule 6): the order of the
//! plugin table's rows (`plugin::PLUGINS`), which the server build sorts the chain by.
//! What a query counts that outlives the configuration (panics, queries over budget)
//! goes to the process state the worker carries ([`WorkerCtx::process`]).

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::dns::wire::QNAME_OFFSET;
use crate::dns::{Edns, NameKey, Rcode, Request, Response, Zone};
use crate::process::ProcessState;

/// What a plugin decided about a query.
#[derive(Debug)]
pub enum Step {
    /// The plugin wrote the reply.
    Answered,
    /// Pass the query to the next plugin.
    Next,
    /// The plugin does not write; the server answers with this rcode and no records
    /// (CoreDNS's `return dns.RcodeServerFailure, err`). The error, if any, is what
    /// the `errors` plugin logs.
    Fail(Rcode, Option<ChainError>),
    /// The worker must send `worker.upstream_msg` to this upstream and call the
    /// plugin's [`Handler::resume`] with what comes back.
    Upstream(UpstreamRequest),
    /// The plugin wrote a new query into [`WorkerCtx::rewritten`]: the plugins after it
    /// see that query instead of the client's (`rewrite`). Their reply goes through
    /// their response hooks with the new query, then through this plugin's and the
    /// earlier ones' with the client's, so this plugin can put the question back.
    /// Only a plugin whose [`Handler::rewrites`] is true may return it.
    Rewritten,
}

/// An error a plugin reports alongside a failure rcode, for the `errors` plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// The plugin passed the query on, but it was the last one.
    NoNextPlugin(&'static str),
    /// A plugin-specific error.
    Plugin(&'static str, Cow<'static, str>),
    /// A panic was caught while handling the query.
    Panic(Cow<'static, str>),
    /// The plugin stopped because answering would visit more than [`Budget::RECORDS`]
    /// records (see [`Budget`]).
    OverBudget(&'static str),
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainError::NoNextPlugin(name) => write!(f, "plugin/{name}: no next plugin found"),
            ChainError::Plugin(name, msg) => write!(f, "plugin/{name}: {msg}"),
            ChainError::Panic(msg) => write!(f, "panic: {msg}"),
            ChainError::OverBudget(name) => write!(
                f,
                "plugin/{name}: query work budget exceeded (more than {} records visited)",
                Budget::RECORDS
            ),
        }
    }
}

/// How to reach an upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamProto {
    Udp,
    Tcp,
    /// DNS over TLS (RFC 7858): TCP with this client configuration and server name.
    /// Connections are pooled and reused as TCP ones are.
    Tls(Arc<crate::tls::Upstream>),
}

/// A message the worker sends on a plugin's behalf. The message itself is in
/// [`WorkerCtx::upstream_msg`]; the worker sets its ID.
#[derive(Clone, Debug)]
pub struct UpstreamRequest {
    pub to: SocketAddr,
    pub proto: UpstreamProto,
    /// How long to wait for the reply before resuming with [`UpstreamReply::Timeout`].
    pub timeout: Duration,
    /// Opaque to the worker, handed back in `resume` (which upstream, which attempt).
    pub cookie: u64,
    /// Requests with the same key to the same upstream while one is in flight share
    /// its reply: the message is sent once (identical client queries coalesce).
    pub coalesce: Option<u64>,
    /// How long an idle TCP connection to this upstream may be reused.
    pub expire: Duration,
}

/// What came back from upstream.
#[derive(Debug)]
pub enum UpstreamReply<'a> {
    /// A reply from the queried address with the ID that was sent.
    Message(&'a [u8]),
    /// No reply in time.
    Timeout,
    /// The send or the connection failed. `WouldBlock`: nothing was sent, because the
    /// worker already waits on as many exchanges as it keeps (a local overload, not the
    /// upstream's fault).
    Failed(std::io::ErrorKind),
}

/// The work one run of the chain may do, counted in records visited: endpoints, ports,
/// owners of an address, index probes, whatever a plugin looks at to build its answer.
/// A plugin charges it as it goes; when a charge fails, the plugin stops and returns
/// [`ChainError::OverBudget`], and the query gets SERVFAIL, counted
/// (`clusterdns_query_budget_exceeded_total`) and logged at most once a second (by the
/// chain: the `errors` plugin, which logs every failure, does not see it).
///
/// Answers stop at the message size (64 KiB over TCP), so a legitimate one holds at
/// most ~4,700 records (14 bytes is the smallest record written); visiting four times as
/// many covers the duplicates a real cluster has (dual-stack endpoints named twice,
/// ports repeated by protocol) and the slices looked at on the way. What goes beyond is
/// a pathological object set (thousands of endpoints with one name, thousands of slices
/// that do not match), and answering it would only delay the queries behind it on the
/// same worker. 16,384 visits cost well under a millisecond of CPU in a release build.
///
/// The chain resets it at every run and resume: it bounds the work between two waits of
/// the worker, which is what other queries on that worker feel. A `Cell`, so that code
/// holding the request and the response at once can charge it through a shared borrow.
#[derive(Debug)]
pub struct Budget {
    left: Cell<u32>,
}

/// The budget ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverBudget;

impl Default for Budget {
    fn default() -> Self {
        Budget::new()
    }
}

impl Budget {
    /// Records one run of the chain may visit.
    pub const RECORDS: u32 = 16_384;

    pub fn new() -> Budget {
        Budget {
            left: Cell::new(Budget::RECORDS),
        }
    }

    /// Gives the whole budget back (a new query).
    pub fn reset(&self) {
        self.left.set(Budget::RECORDS);
    }

    /// Takes `n` visits from the budget, or fails once it is spent.
    #[inline]
    pub fn charge(&self, n: u32) -> Result<(), OverBudget> {
        let left = self.left.get();
        if left < n {
            self.left.set(0);
            return Err(OverBudget);
        }
        self.left.set(left - n);
        Ok(())
    }

    /// Visits charged since the last reset.
    pub fn spent(&self) -> u32 {
        Budget::RECORDS - self.left.get()
    }
}

/// Counts an over-budget query and logs it, unless one was logged less than a second ago.
fn over_budget(process: &ProcessState, req: &Request<'_>, plugin: &str) {
    process.budget_exceeded.fetch_add(1, Ordering::Relaxed);
    let Some(unlogged) = process.budget_log.allow() else {
        return;
    };
    log::warn!(
        "plugin/{plugin}: SERVFAIL for {} {}: answering would visit more than {} records \
         (the per-query work budget); {unlogged} more such queries since the last line",
        req.qname,
        crate::dns::rtype::name(req.qtype),
        Budget::RECORDS
    );
}

/// A rewriter's word that [`WorkerCtx::rewritten`] is the client's message with only
/// the question name replaced, by a lower-cased one ending at `qname_end`: the same
/// header, the same bytes after the name, no record but an OPT. The chain then builds
/// the new request without comparing or parsing anything but the name's labels (checked
/// in debug builds), and the rewriter's response hook gets it back with its `note`
/// (`rewrite`: the rule that applied), so it need not find out again what it did.
///
/// With `echo`, the rewriter's hook accepts a reply that already carries the client's
/// question ([`Request::echo`]; it settles it with `Response::settle_echo`): the chain
/// then gives the new request the client's question to echo, when no plugin after the
/// rewriter has a response hook (one would see a reply whose question is not its
/// request's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renamed {
    pub qname_end: usize,
    pub note: u32,
    pub echo: bool,
}

/// Per-worker state a plugin may use while handling a query: identity, time, a fast
/// random source, the buffer for upstream messages and the query's work budget.
pub struct WorkerCtx {
    /// The worker's index, `0..workers`; plugins use it to pick their per-worker state.
    pub id: usize,
    /// When the current batch of packets was received.
    pub now: Instant,
    pub rng: Rng,
    /// Where a plugin writes a message it wants sent upstream.
    pub upstream_msg: Vec<u8>,
    /// What the current run of the chain may still visit (reset by [`Chain::run`] and
    /// [`Chain::resume`]).
    pub budget: Budget,
    /// Where a plugin writes the query the plugins after it must see instead of the
    /// client's ([`Step::Rewritten`]); reused from query to query.
    pub rewritten: Vec<u8>,
    /// Set by a rewriter that returns [`Step::Rewritten`] having only renamed the
    /// question (see [`Renamed`]); the chain takes it at once, and hands it back to the
    /// rewriter's response hook for the reply to that query only.
    pub renamed: Option<Renamed>,
    /// A buffer a response hook may use to rebuild a reply (`rewrite`'s answer
    /// rewriting); it grows once to the largest reply and is reused.
    pub scratch: Vec<u8>,
    /// The process's state, for what queries count that outlives a configuration
    /// (panics, queries over budget); touched only when such a thing happens.
    pub process: Arc<ProcessState>,
    /// Set by a plugin whose reply is more than one message (a zone transfer): the
    /// reply in the response is the first, and the worker asks this for the others
    /// as the connection takes them (TCP only; see [`ReplyStream`]). Taken by the
    /// worker after every query.
    pub stream: Option<Box<dyn ReplyStream>>,
    /// Message buffers of finished exchanges, reused for the next ones (the query a
    /// suspended query keeps, the message it sends): at most [`SPARE_BUFFERS`], each
    /// of at most [`SPARE_BUFFER_BYTES`] capacity.
    spare: Vec<Vec<u8>>,
}

/// Buffers a worker keeps for reuse ([`WorkerCtx::copy_buf`]).
pub const SPARE_BUFFERS: usize = 512;
/// Capacity beyond which a buffer is freed rather than kept.
pub const SPARE_BUFFER_BYTES: usize = 4096;

/// The rest of a reply of several messages (RFC 5936 2.2: a zone transfer), produced
/// one message at a time. The worker owns it with the connection and asks for the next
/// message only when what it sent before has left (the client reads), at most one per
/// turn of its loop, so a transfer of any size holds one message in memory and other
/// clients are answered between two messages. No I/O, no lock held between calls.
pub trait ReplyStream: Send {
    /// The next message, whole (at most 65,535 bytes, no length prefix), or `None`
    /// when the reply is complete. After `None` it is not called again.
    fn next_message(&mut self) -> Option<&[u8]>;
}

impl WorkerCtx {
    /// A worker's context counting into `process`.
    pub fn for_process(id: usize, process: Arc<ProcessState>) -> WorkerCtx {
        WorkerCtx {
            id,
            now: Instant::now(),
            rng: Rng::seeded(),
            upstream_msg: Vec::with_capacity(512),
            budget: Budget::new(),
            rewritten: Vec::with_capacity(512),
            renamed: None,
            scratch: Vec::new(),
            process,
            stream: None,
            spare: Vec::new(),
        }
    }

    /// A copy of `data` in a reused buffer (allocated only when none is spare).
    pub fn copy_buf(&mut self, data: &[u8]) -> Vec<u8> {
        match self.spare.pop() {
            Some(mut v) => {
                v.extend_from_slice(data);
                v
            }
            None => {
                let mut v = Vec::with_capacity(data.len().max(512));
                v.extend_from_slice(data);
                v
            }
        }
    }

    /// A copy of [`WorkerCtx::upstream_msg`], as [`WorkerCtx::copy_buf`].
    pub fn upstream_copy(&mut self) -> Vec<u8> {
        let mut v = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.upstream_msg.len().max(512)));
        v.extend_from_slice(&self.upstream_msg);
        v
    }

    /// Gives back a buffer from [`WorkerCtx::copy_buf`] for reuse.
    pub fn recycle(&mut self, mut v: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS && v.capacity() <= SPARE_BUFFER_BYTES && v.capacity() > 0 {
            v.clear();
            self.spare.push(v);
        }
    }

    /// A context with a process state of its own (tests, benches, fuzz targets).
    pub fn new(id: usize) -> WorkerCtx {
        WorkerCtx::for_process(id, Arc::default())
    }
}

/// A small, fast, non-cryptographic generator (xorshift64*) seeded from the kernel;
/// for load balancing and jitter. Query IDs and ports use [`Rng::secure_u64`].
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        Rng(Rng::secure_u64() | 1)
    }

    /// A generator from a fixed seed: the same sequence every time (tests).
    pub fn with_seed(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Kernel randomness (getrandom), for values an attacker must not predict.
    pub fn secure_u64() -> u64 {
        let mut v = [0u8; 8];
        // SAFETY: the buffer is valid for 8 bytes; getrandom writes at most that.
        let n = unsafe { libc::getrandom(v.as_mut_ptr().cast(), v.len(), 0) };
        if n != 8 {
            // getrandom cannot fail on a modern kernel with a valid buffer; fall back
            // to the clock rather than abort.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            return t ^ (std::process::id() as u64).rotate_left(32);
        }
        u64::from_ne_bytes(v)
    }
}

/// Identifies a (listen address, server-block zone) pair: what CoreDNS's metrics label
/// `server` and `zone`. Slots are dense over one configuration generation, so
/// plugins can keep per-route state in plain arrays.
#[derive(Debug)]
pub struct RouteTag {
    pub slot: usize,
    /// `dns://[bind]:port`.
    pub server: Arc<str>,
    /// The zone, presentation form (`cluster.local.`).
    pub zone: Arc<str>,
}

/// Everything a plugin sees while handling one query.
pub struct Query<'r, 'a> {
    pub req: &'r Request<'a>,
    pub resp: &'r mut Response,
    pub worker: &'r mut WorkerCtx,
    /// The listener and server-block zone that matched, for metric labels.
    pub route: &'r RouteTag,
    /// The plugin that wrote the reply (empty when the server wrote it).
    pub answered_by: &'static str,
    /// The error behind a failure reply, for `errors`.
    pub error: Option<ChainError>,
    /// Set by a plugin that answered from stored data and wants it refreshed: after the
    /// reply is sent, the worker runs the rest of the chain for the same question in
    /// the background and hands the result to that plugin's [`Handler::on_refresh`]
    /// (cache prefetch and serve-stale).
    pub refresh: bool,
    /// Whether an upstream exchange for this query may be shared with an identical one
    /// already in flight. `loop` clears it for its probe, which must really go out
    /// each time it comes back for the loop to be seen.
    pub coalesce: bool,
    /// The block's metadata providers, reached through [`Query::metadata`]
    /// ([`Metadata::NONE`] unless the block has `metadata`).
    pub meta: Metadata<'r>,
}

impl Query<'_, '_> {
    /// The value of metadata `label` (`kubernetes/client-namespace`) for this query,
    /// written into `out` (cleared first): CoreDNS's `metadata.ValueFunc(ctx, label)()`.
    /// `false` when the label is not set: the block has no `metadata`, the query is
    /// outside its zones, or no provider knows the label for this query. A label can be
    /// set and empty (CoreDNS: "the empty string signals no metadata"; `log` prints
    /// it as is, where an unset label prints `-`).
    ///
    /// Values are computed when asked, not for every query (CoreDNS collects a closure
    /// per label per query when `metadata` is on); the request they see is `self.req`.
    /// Allocates nothing once `out` has grown to the value's size.
    pub fn metadata(&self, label: &str, out: &mut String) -> bool {
        out.clear();
        let Some(zones) = self.meta.zones else {
            return false;
        };
        if !Zone::any_contains(zones, &self.req.qname) {
            return false;
        }
        // In CoreDNS a provider later in the chain overwrites a label an earlier one
        // set, so the last provider that knows it wins.
        for p in self.meta.providers.iter().rev() {
            if p.metadata(self, label, out) {
                return true;
            }
            out.clear();
        }
        false
    }
}

/// What a query's [`Query::metadata`] reads: the zones of the block's `metadata`
/// directive and the block's providers (handlers whose [`Handler::provides_metadata`]
/// is true), borrowed from the [`Chain`]. A block without `metadata` has
/// [`Metadata::NONE`], so asking costs one branch and nothing is ever computed.
#[derive(Clone, Copy)]
pub struct Metadata<'r> {
    /// `Some` when the block has `metadata`: the zones it collects for.
    zones: Option<&'r [Zone]>,
    providers: &'r [Arc<dyn Handler>],
}

impl Metadata<'static> {
    /// No metadata: the block has no `metadata` directive (and tests, benches).
    pub const NONE: Metadata<'static> = Metadata {
        zones: None,
        providers: &[],
    };
}

impl Metadata<'_> {
    /// Whether the block collects metadata at all.
    pub fn is_on(&self) -> bool {
        self.zones.is_some()
    }
}

/// The per-query half of the plugin contract: what the chain calls while a query is
/// handled. A plugin implements only what it uses; the defaults do nothing. (The other
/// half, `setup::Lifecycle`, is what the server calls around the queries:
/// start, stop, readiness, metrics.) Implementations are shared by every worker
/// (`Sync`); state that changes per query lives per worker (indexed by
/// [`WorkerCtx::id`]) or in atomics.
pub trait Handler: Send + Sync {
    /// The directive name (`hosts`, `kubernetes`).
    fn name(&self) -> &'static str;

    /// Handles a query: answer it, pass it on, fail it, or ask for an upstream exchange.
    fn serve(&self, q: &mut Query<'_, '_>) -> Step;

    /// Continues after an upstream exchange this plugin asked for. The default fails
    /// the query, for plugins that never return [`Step::Upstream`].
    fn resume(&self, q: &mut Query<'_, '_>, reply: UpstreamReply<'_>, cookie: u64) -> Step {
        let _ = (q, reply, cookie);
        Step::Fail(Rcode::SERVFAIL, None)
    }

    /// Whether [`Handler::on_response`] must be called; checked once when the chain is
    /// built.
    fn wants_response(&self) -> bool {
        false
    }

    /// Sees (and may modify) the finished reply of a query that a later plugin answered
    /// or failed. Called from the answering plugin back to the first.
    fn on_response(&self, q: &mut Query<'_, '_>) {
        let _ = q;
    }

    /// Whether [`Handler::follow_up`] must be called; checked once when the chain is
    /// built.
    fn follows_up(&self) -> bool {
        false
    }

    /// A response hook that may ask for one upstream exchange before the reply goes
    /// on: called on the finished reply of a later plugin (after this plugin's
    /// [`Handler::on_response`], if it wants that too). Returning a request, its
    /// message written into [`WorkerCtx::upstream_msg`], drops that reply and suspends
    /// the query; this plugin's [`Handler::resume`] then writes the reply anew, and only
    /// the hooks of the plugins before it see that one. A plugin is asked once per
    /// reply and never about its own, so a query waits on at most one such exchange per
    /// plugin. `dns64` is the one user: CoreDNS's plugin lets the next plugin answer an
    /// AAAA query, then asks the server for the A records when there is no AAAA.
    fn follow_up(&self, q: &mut Query<'_, '_>) -> Option<UpstreamRequest> {
        let _ = q;
        None
    }

    /// Receives the reply of a background refresh this plugin asked for (see
    /// [`Query::refresh`]); no client sees it.
    fn on_refresh(&self, q: &mut Query<'_, '_>) {
        let _ = q;
    }

    /// Whether this plugin answers queries of class `class` other than IN (CHAOS).
    fn handles_class(&self, class: u16) -> bool {
        let _ = class;
        false
    }

    /// The largest EDNS UDP payload size this plugin lets a requester ask for
    /// (`bufsize`): checked once when the chain is built. The server lowers a larger
    /// size of every query of the block to the smallest such limit before the chain
    /// runs, so that every plugin, the reply's size limit and the message sent upstream
    /// see the lowered size, as CoreDNS's in-place change of the query's OPT record
    /// gives (no plugin before `bufsize` in CoreDNS's order reads the size).
    fn udp_size_limit(&self) -> Option<u16> {
        None
    }

    /// What `k8s_external` answers from (CoreDNS's `external.Externaler`): the
    /// kubernetes plugin returns its snapshot cell and options. `Any`, so that the
    /// chain names no plugin.
    fn externaler(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        None
    }

    /// What the `transfer` plugin sends zones from (CoreDNS's `transfer.Transferer`): a
    /// plugin that can hand over whole zones returns its source here. `Any`, so that
    /// the chain names no plugin: `transfer` knows the type it downcasts to.
    fn transferer(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        None
    }

    /// Whether this plugin may return [`Step::Rewritten`]; checked once when the chain
    /// is built. Its `serve` must then depend on the request alone (no state that
    /// changes between calls): after an upstream exchange of a later plugin the chain
    /// calls it again to see the same rewritten query.
    fn rewrites(&self) -> bool {
        false
    }

    /// Whether this plugin is a metadata provider (CoreDNS's `metadata.Provider`):
    /// checked once when the chain is built, so that only providers are asked.
    fn provides_metadata(&self) -> bool {
        false
    }

    /// The provider half of metadata: writes the value of `label` for this query into
    /// `out` (empty on entry) and returns `true` when this plugin sets that label for
    /// it, `false` when it does not (not its label, or nothing to say about this
    /// query: CoreDNS's provider not calling `SetValueFunc`). Called lazily, only when
    /// a consumer asks ([`Query::metadata`]), so it may look things up, but must stay
    /// as cheap as answering: no I/O, no lock, no allocation beyond `out`.
    fn metadata(&self, q: &Query<'_, '_>, label: &str, out: &mut String) -> bool {
        let _ = (q, label, out);
        false
    }

    /// The `metadata` plugin only: the zones metadata is collected for. A block with a
    /// handler returning `Some` here turns metadata on for its queries in those zones.
    fn metadata_zones(&self) -> Option<&[Zone]> {
        None
    }

    /// The search-path half of autopath (CoreDNS's `autopath.AutoPather`): a plugin
    /// that knows a client's search path returns itself here.
    fn autopather(&self) -> Option<&dyn AutoPather> {
        None
    }

    /// Called once when the block's chain is built, with the whole chain in execution
    /// order: a plugin that works with another plugin of its block (autopath with
    /// kubernetes) finds it here. An error fails the build (`-check`, start, reload).
    fn link(&self, chain: &[Arc<dyn Handler>]) -> Result<(), crate::config::ConfigError> {
        let _ = chain;
        Ok(())
    }
}

/// A plugin that gives autopath a client's search path (`autopath @NAME`), and says
/// for names of its own zones whether they exist, so that autopath decides without
/// running the chain once per search-path element.
pub trait AutoPather: Send + Sync {
    /// The search path of the client that sent `req`, most specific first, written
    /// into `out` (cleared first); the last element must be the root (the name as
    /// asked, CoreDNS's `""` sentinel). `false`: no search-path completion for this
    /// query (CoreDNS's `nil`).
    fn search_path(&self, req: &Request<'_>, out: &mut SearchPath) -> bool;

    /// Whether `req`'s name exists as an A or AAAA query would find it (NXDOMAIN or
    /// not: the same for both types, so that they can never be completed differently),
    /// `None` when the name is not in this plugin's zones. `Err` when finding out
    /// would take more than the query's work budget.
    fn name_exists(&self, req: &Request<'_>, budget: &Budget) -> Result<Option<bool>, OverBudget>;

    /// Why this plugin can give no search path at all as configured (kubernetes
    /// without `pods verified`), for a warning at start-up; `None` when it can.
    fn unavailable(&self) -> Option<&'static str> {
        None
    }
}

/// A search path: up to [`SearchPath::MAX`] domain names in wire form (lower case,
/// root label included). Kept per worker and reused, so filling it allocates nothing
/// once it has grown.
#[derive(Default)]
pub struct SearchPath {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl SearchPath {
    /// Elements kept: glibc reads 6 search domains, musl and newer glibc 32; with
    /// the three a cluster adds and the sentinel, 40 is more than any resolver tries.
    pub const MAX: usize = 40;

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Appends a name given as its labels then a suffix in wire form (`[ns, b"svc"]`
    /// and `cluster.local.`). `false` (nothing added) when the name would be over 255
    /// bytes or the path is full.
    pub fn push(&mut self, labels: &[&[u8]], suffix: &[u8]) -> bool {
        let len: usize = labels.iter().map(|l| l.len() + 1).sum::<usize>() + suffix.len();
        if self.ends.len() >= SearchPath::MAX
            || len > crate::dns::wire::MAX_NAME_LEN
            || labels.iter().any(|l| l.is_empty() || l.len() > 63)
        {
            return false;
        }
        for l in labels {
            self.bytes.push(l.len() as u8);
            self.bytes.extend(l.iter().map(u8::to_ascii_lowercase));
        }
        self.bytes.extend(suffix.iter().map(u8::to_ascii_lowercase));
        self.ends.push(self.bytes.len());
        true
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Element `i`, wire form.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// The handlers of one server block, in execution order.
pub struct Chain {
    plugins: Vec<Arc<dyn Handler>>,
    /// Whether each plugin wants `on_response`, cached from `wants_response`.
    hooks: Vec<bool>,
    /// Whether each plugin may ask for an exchange after a reply, cached from
    /// `follows_up`.
    follows: Vec<bool>,
    /// The `metadata` plugin's zones, if the block has it.
    meta_zones: Option<Vec<Zone>>,
    /// The metadata providers, in execution order (empty without `metadata`).
    providers: Vec<Arc<dyn Handler>>,
    /// Whether each plugin may rewrite the query, cached from `rewrites`.
    rewriters: Vec<bool>,
    /// The smallest of the plugins' [`Handler::udp_size_limit`]s.
    udp_limit: Option<u16>,
    /// Whether no plugin after each one has a response hook (see [`Renamed`]).
    quiet_after: Vec<bool>,
}

/// Where a run of the chain ended.
#[derive(Debug)]
pub enum Outcome {
    /// The reply is in the response; `at` is the plugin that wrote it or failed.
    Reply { at: usize },
    /// Plugin `at` asked for an upstream exchange.
    Upstream { at: usize, request: UpstreamRequest },
}

impl Chain {
    /// A chain of `plugins`, already in execution order.
    pub fn new(plugins: Vec<Arc<dyn Handler>>) -> Chain {
        let hooks = plugins.iter().map(|p| p.wants_response()).collect();
        let follows = plugins.iter().map(|p| p.follows_up()).collect();
        let rewriters = plugins.iter().map(|p| p.rewrites()).collect();
        let quiet_after = (0..plugins.len())
            .map(|i| !plugins[i + 1..].iter().any(|p| p.wants_response()))
            .collect();
        let meta_zones = plugins.iter().find_map(|p| p.metadata_zones()).map(<[Zone]>::to_vec);
        let providers = match meta_zones {
            Some(_) => plugins.iter().filter(|p| p.provides_metadata()).cloned().collect(),
            None => Vec::new(),
        };
        let udp_limit = plugins.iter().filter_map(|p| p.udp_size_limit()).min();
        Chain {
            plugins,
            hooks,
            follows,
            rewriters,
            quiet_after,
            meta_zones,
            providers,
            udp_limit,
        }
    }

    /// The EDNS UDP payload size the block's queries are lowered to when they ask for
    /// more (see [`Handler::udp_size_limit`]); `None` without `bufsize`.
    pub fn udp_size_limit(&self) -> Option<u16> {
        self.udp_limit
    }

    /// What [`Query::meta`] holds for this block's queries.
    pub fn metadata(&self) -> Metadata<'_> {
        Metadata {
            zones: self.meta_zones.as_deref(),
            providers: &self.providers,
        }
    }

    pub fn handlers(&self) -> &[Arc<dyn Handler>] {
        &self.plugins
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Whether some plugin answers class `class`.
    pub fn handles_class(&self, class: u16) -> bool {
        self.plugins.iter().any(|p| p.handles_class(class))
    }

    /// Runs the chain from plugin `from`. A reply left in `q.resp` is not yet
    /// finished; call [`Chain::complete`] on it.
    pub fn run(&self, q: &mut Query<'_, '_>, from: usize) -> Outcome {
        q.worker.budget.reset();
        let mut i = from;
        loop {
            let Some(p) = self.plugins.get(i) else {
                // Ran off the end: the previous plugin passed it on to nobody. Every
                // plugin so far wrapped this failure, so all their hooks see it.
                let name = i
                    .checked_sub(1)
                    .and_then(|j| self.plugins.get(j))
                    .map_or("chain", |p| p.name());
                return self.fail(q, i, Rcode::SERVFAIL, Some(ChainError::NoNextPlugin(name)));
            };
            match p.serve(q) {
                Step::Answered => {
                    q.answered_by = p.name();
                    return Outcome::Reply { at: i };
                }
                Step::Next => i += 1,
                Step::Fail(rcode, err) => return self.fail(q, i, rcode, err),
                Step::Upstream(request) => return Outcome::Upstream { at: i, request },
                Step::Rewritten => return self.with_rewritten(q, i, |q| self.run(q, i + 1)),
            }
        }
    }

    /// Runs `rest` (the chain after plugin `at`) with the query plugin `at` wrote into
    /// [`WorkerCtx::rewritten`] as the request. The reply then goes through the response
    /// hooks of the plugins from the one that wrote it back to `at + 1` with that query,
    /// and through plugin `at`'s own hook with the client's query (which puts the
    /// question back): whoever takes the reply next, the client's response hooks
    /// (`complete`, from `at - 1` down) or a refresh's owner, gets it as for the client's
    /// query.
    ///
    /// The buffer is taken out of the worker for the run and put back after: no
    /// allocation once it has reached the size of the largest query.
    fn with_rewritten(
        &self,
        q: &mut Query<'_, '_>,
        at: usize,
        rest: impl FnOnce(&mut Query<'_, '_>) -> Outcome,
    ) -> Outcome {
        // Taken first: a mark never outlives the step that set it.
        let mark = q.worker.renamed.take();
        if !self.rewriters[at] {
            let name = self.plugins[at].name();
            let err = ChainError::Plugin(name, "rewrote the query without saying it would".into());
            return self.fail(q, at, Rcode::SERVFAIL, Some(err));
        }
        if q.worker.rewritten.len() > usize::from(u16::MAX) {
            // A longer name or added options can push a client's 64 KiB query past what
            // DNS can carry (RFC 1035 4.2.2's two-byte length): no later plugin sees it.
            let name = self.plugins[at].name();
            let err = ChainError::Plugin(name, "the rewritten query is over 65,535 bytes".into());
            return self.fail(q, at, Rcode::SERVFAIL, Some(err));
        }
        let buf = std::mem::take(&mut q.worker.rewritten);
        // Borrowed where it was built: a Request is ~500 bytes, and each move of one
        // showed in the profile of a rewritten answer. With a Renamed mark the key is
        // filled in place in the request that keeps it.
        let mut trusted;
        let renamed;
        let parsed;
        let req = match mark.and_then(|m| renamed_parts(q.req, &buf, m.qname_end).map(|p| (p, m.echo))) {
            Some(((edns, name), echo)) => {
                trusted = renamed_request(q.req, &buf, name.len() + QNAME_OFFSET, edns);
                if echo && self.quiet_after[at] {
                    trusted.echo = Some(q.req.question());
                }
                if trusted.qname.set_lower_wire(name) {
                    Some(&trusted)
                } else {
                    None
                }
            }
            None => None,
        };
        let req = match req {
            Some(req) => req,
            None => {
                renamed = self::renamed(q.req, &buf);
                match &renamed {
                    Some(req) => req,
                    None => match Request::parse(&buf, q.req.transport, q.req.client, q.req.local) {
                        Ok(mut req) => {
                            // The rewritten message may carry the client's size again.
                            if let Some(max) = self.udp_limit {
                                req.limit_udp_size(max);
                            }
                            parsed = req;
                            &parsed
                        }
                        Err(_) => {
                            let name = self.plugins[at].name();
                            let err = ChainError::Plugin(name, "the rewritten query is not a valid message".into());
                            q.worker.rewritten = buf;
                            return self.fail(q, at, Rcode::SERVFAIL, Some(err));
                        }
                    },
                }
            }
        };
        let mut inner = Query {
            req,
            resp: &mut *q.resp,
            worker: &mut *q.worker,
            route: q.route,
            answered_by: "",
            error: None,
            // A refresh re-runs the chain with the client's query from its
            // owner on: one owned by a plugin after a rewrite would skip it.
            refresh: false,
            coalesce: q.coalesce,
            meta: q.meta,
        };
        let mut outcome = rest(&mut inner);
        if let Outcome::Reply { at: by } = outcome {
            inner.resp.finish();
            for i in (at + 1..by.min(self.plugins.len())).rev() {
                if let Some(request) = self.hook(i, &mut inner) {
                    outcome = Outcome::Upstream { at: i, request };
                    break;
                }
            }
        }
        q.answered_by = inner.answered_by;
        q.error = inner.error.take();
        q.coalesce = inner.coalesce;
        q.worker.rewritten = buf;
        match outcome {
            Outcome::Reply { .. } => {
                if self.hooks[at] {
                    q.worker.renamed = mark;
                    self.plugins[at].on_response(q);
                    q.worker.renamed = None;
                }
                if self.follows[at] {
                    if let Some(request) = self.plugins[at].follow_up(q) {
                        return Outcome::Upstream { at, request };
                    }
                }
                // The hooks before `at` are `complete`'s.
                Outcome::Reply { at }
            }
            upstream => upstream,
        }
    }

    /// Continues at plugin `at` with an upstream reply; then like [`Chain::run`].
    /// A plugin before `at` that rewrites the query is asked again, so plugin `at` and
    /// the ones after it see the query they saw before the exchange.
    pub fn resume(&self, q: &mut Query<'_, '_>, at: usize, reply: UpstreamReply<'_>, cookie: u64) -> Outcome {
        self.resume_from(q, 0, at, reply, cookie)
    }

    fn resume_from(
        &self,
        q: &mut Query<'_, '_>,
        from: usize,
        at: usize,
        reply: UpstreamReply<'_>,
        cookie: u64,
    ) -> Outcome {
        if let Some(r) = (from..at).find(|&r| self.rewriters[r]) {
            if let Step::Rewritten = self.plugins[r].serve(q) {
                return self.with_rewritten(q, r, |q| self.resume_from(q, r + 1, at, reply, cookie));
            }
            return self.resume_from(q, r + 1, at, reply, cookie);
        }
        q.worker.budget.reset();
        let p = &self.plugins[at];
        match p.resume(q, reply, cookie) {
            Step::Answered => {
                q.answered_by = p.name();
                Outcome::Reply { at }
            }
            Step::Next => self.run(q, at + 1),
            Step::Fail(rcode, err) => self.fail(q, at, rcode, err),
            Step::Upstream(request) => Outcome::Upstream { at, request },
            Step::Rewritten => self.with_rewritten(q, at, |q| self.run(q, at + 1)),
        }
    }

    fn fail(&self, q: &mut Query<'_, '_>, at: usize, rcode: Rcode, err: Option<ChainError>) -> Outcome {
        q.resp.start(q.req, rcode);
        q.answered_by = "";
        q.error = match err {
            // Counted and logged here, at a bounded rate; not handed on to `errors`,
            // which logs every failure (pathological queries come in floods).
            Some(ChainError::OverBudget(plugin)) => {
                over_budget(&q.worker.process, q.req, plugin);
                None
            }
            other => other,
        };
        Outcome::Reply { at }
    }

    /// Finishes the reply written by plugin `at` and runs the response hooks of the
    /// plugins before it, last first. `Outcome::Upstream` when one of them asked for an
    /// exchange instead ([`Handler::follow_up`]): the worker sends it and resumes that
    /// plugin, whose reply is then completed in turn; otherwise `Outcome::Reply { at }`.
    pub fn complete(&self, q: &mut Query<'_, '_>, at: usize) -> Outcome {
        q.resp.finish();
        let end = at.min(self.plugins.len());
        for i in (0..end).rev() {
            if let Some(request) = self.hook(i, q) {
                return Outcome::Upstream { at: i, request };
            }
        }
        Outcome::Reply { at }
    }

    /// Plugin `i`'s response hooks on a finished reply: `on_response`, then
    /// `follow_up`, each if the plugin has it.
    #[inline]
    fn hook(&self, i: usize, q: &mut Query<'_, '_>) -> Option<UpstreamRequest> {
        if self.hooks[i] {
            self.plugins[i].on_response(q);
        }
        if self.follows[i] {
            return self.plugins[i].follow_up(q);
        }
        None
    }
}

/// The rewritten query in `buf` without parsing it again, when it is the client's
/// message with another question name (what `rewrite`'s name rules write): the same
/// header, no record but an OPT, and the same bytes after the name. What parsing found
/// in those bytes (type, class, EDNS, cookie) is the client's, the option offsets moved
/// by the difference in name length; only the name is read. Parsing the message again
/// cost as much as a kubernetes answer's lookup (benches/inprocess.rs, issue 12).
fn renamed<'b>(client: &Request<'_>, buf: &'b [u8]) -> Option<Request<'b>> {
    let end = renamed_end(client, buf)?;
    let (edns, name) = renamed_parts(client, buf, end)?;
    let mut req = renamed_request(client, buf, end, edns);
    req.qname = NameKey::from_wire(name)?;
    Some(req)
}

/// For a query whose name is known to end at `end` (a [`Renamed`] mark: the header and
/// the bytes after the name are the client's, and are not compared; debug builds
/// check): its EDNS (the client's, the options moved) and its new name. Comparing and
/// lower-casing the name again were a tenth of a rewritten answer.
#[inline(always)]
fn renamed_parts<'b>(client: &Request<'_>, buf: &'b [u8], end: usize) -> Option<(Option<Edns>, &'b [u8])> {
    debug_assert_eq!(renamed_end(client, buf), Some(end));
    let moved = |at: u16| u16::try_from(at as usize + end - client.qname_end).ok();
    let edns = match client.edns {
        Some(e) => Some(Edns {
            options: (moved(e.options.0)?, e.options.1),
            ..e
        }),
        None => None,
    };
    Some((edns, buf.get(QNAME_OFFSET..end)?))
}

/// [`renamed`]'s request with a blank key, to be filled in place (returned as a plain
/// value, so that it is built where it is assigned).
#[inline(always)]
fn renamed_request<'b>(client: &Request<'_>, buf: &'b [u8], end: usize, edns: Option<Edns>) -> Request<'b> {
    Request {
        raw: buf,
        id: client.id,
        flags: client.flags,
        qname_end: end,
        qtype: client.qtype,
        qclass: client.qclass,
        qname: NameKey::blank(),
        edns,
        cookie: client.cookie,
        transport: client.transport,
        client: client.client,
        local: client.local,
        echo: None,
    }
}

/// Where the question name of `buf` ends, if `buf` is `client`'s message with another
/// question name (see [`renamed`]).
fn renamed_end(client: &Request<'_>, buf: &[u8]) -> Option<usize> {
    let raw = client.raw;
    let header = buf.get(..QNAME_OFFSET)?;
    if header != raw.get(..QNAME_OFFSET)? || header[6..10] != [0, 0, 0, 0] || header[10] != 0 || header[11] > 1 {
        return None;
    }
    let mut end = QNAME_OFFSET;
    loop {
        let len = *buf.get(end)? as usize;
        if len & 0xC0 != 0 {
            return None;
        }
        end += 1 + len;
        if len == 0 {
            break;
        }
    }
    (buf.get(end..)? == raw.get(client.qname_end..)?).then_some(end)
}

pub mod backtrace;
#[cfg(test)]
pub mod testing;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::rtype;

    struct Answer;
    impl Handler for Answer {
        fn name(&self) -> &'static str {
            "answer"
        }
        fn serve(&self, q: &mut Query<'_, '_>) -> Step {
            q.resp.start(q.req, Rcode::NOERROR);
            Step::Answered
        }
    }

    struct Pass(&'static str, std::sync::atomic::AtomicUsize);
    impl Handler for Pass {
        fn name(&self) -> &'static str {
            self.0
        }
        fn serve(&self, _: &mut Query<'_, '_>) -> Step {
            Step::Next
        }
        fn wants_response(&self) -> bool {
            true
        }
        fn on_response(&self, q: &mut Query<'_, '_>) {
            assert!(q.resp.is_finished());
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn with_query(f: impl FnOnce(&mut Query<'_, '_>)) {
        let raw = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, rtype::A as u8, 0, 1];
        super::testing::with_query(&raw, "127.0.0.1:1".parse().unwrap(), Metadata::NONE, f);
    }

    #[test]
    fn hooks_run_for_plugins_before_the_answer() {
        let log = Arc::new(Pass("log", 0.into()));
        let after = Arc::new(Pass("after", 0.into()));
        let chain = Chain::new(vec![log.clone(), Arc::new(Answer), after.clone()]);
        with_query(|q| {
            let Outcome::Reply { at } = chain.run(q, 0) else {
                panic!()
            };
            assert_eq!(at, 1);
            chain.complete(q, at);
            assert_eq!(q.answered_by, "answer");
        });
        assert_eq!(log.1.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(after.1.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    /// Charges `n` visits, failing as a plugin does when the budget runs out.
    struct Greedy(u32);
    impl Handler for Greedy {
        fn name(&self) -> &'static str {
            "greedy"
        }
        fn serve(&self, q: &mut Query<'_, '_>) -> Step {
            for _ in 0..self.0 {
                if q.worker.budget.charge(1).is_err() {
                    return Step::Fail(Rcode::SERVFAIL, Some(ChainError::OverBudget("greedy")));
                }
            }
            q.resp.start(q.req, Rcode::NOERROR);
            Step::Answered
        }
    }

    #[test]
    fn the_budget_is_per_run_and_running_out_is_servfail_counted() {
        let b = Budget::new();
        assert!(b.charge(Budget::RECORDS - 1).is_ok());
        assert!(b.charge(1).is_ok());
        assert_eq!(b.charge(1), Err(OverBudget));
        assert_eq!(b.spent(), Budget::RECORDS);
        b.reset();
        assert_eq!(b.spent(), 0);

        // Each run starts with the whole budget: two runs of almost all of it pass.
        let chain = Chain::new(vec![Arc::new(Greedy(Budget::RECORDS))]);
        for _ in 0..2 {
            with_query(|q| {
                let Outcome::Reply { at } = chain.run(q, 0) else {
                    panic!()
                };
                chain.complete(q, at);
                assert_eq!(q.resp.rcode(), Rcode::NOERROR);
            });
        }
        let chain = Chain::new(vec![Arc::new(Greedy(Budget::RECORDS + 1))]);
        with_query(|q| {
            let Outcome::Reply { at } = chain.run(q, 0) else {
                panic!()
            };
            chain.complete(q, at);
            assert_eq!(q.resp.rcode(), Rcode::SERVFAIL);
            // Logged by the chain at a bounded rate, not once per query by `errors`.
            assert_eq!(q.error, None);
            // Counted in the worker's process state (this test's own).
            assert_eq!(q.worker.process.budget_exceeded.load(Ordering::Relaxed), 1);
        });
        assert_eq!(
            ChainError::OverBudget("greedy").to_string(),
            "plugin/greedy: query work budget exceeded (more than 16384 records visited)"
        );
    }

    /// Rewrites every query to `b.` (type A) when `honest` says it will.
    struct Renamer {
        honest: bool,
        seen: std::sync::Mutex<Vec<Vec<u8>>>,
    }
    impl Handler for Renamer {
        fn name(&self) -> &'static str {
            "renamer"
        }
        fn serve(&self, q: &mut Query<'_, '_>) -> Step {
            crate::dns::QueryBuilder::new(b"\x01b\x00", rtype::A)
                .id(q.req.id)
                .write(&mut q.worker.rewritten);
            Step::Rewritten
        }
        fn rewrites(&self) -> bool {
            self.honest
        }
        fn wants_response(&self) -> bool {
            true
        }
        fn on_response(&self, q: &mut Query<'_, '_>) {
            self.seen.lock().unwrap().push(q.req.qname.wire().to_vec());
        }
    }

    /// Notes the name of the request its hook sees.
    struct Witness(std::sync::Mutex<Vec<Vec<u8>>>);
    impl Handler for Witness {
        fn name(&self) -> &'static str {
            "witness"
        }
        fn serve(&self, _: &mut Query<'_, '_>) -> Step {
            Step::Next
        }
        fn wants_response(&self) -> bool {
            true
        }
        fn on_response(&self, q: &mut Query<'_, '_>) {
            self.0.lock().unwrap().push(q.req.qname.wire().to_vec());
        }
    }

    #[test]
    fn a_rewritten_query_is_seen_after_the_rewriter_and_the_clients_before() {
        let before = Arc::new(Witness(Default::default()));
        let after = Arc::new(Witness(Default::default()));
        let renamer = Arc::new(Renamer {
            honest: true,
            seen: Default::default(),
        });
        let chain = Chain::new(vec![before.clone(), renamer.clone(), after.clone(), Arc::new(Answer)]);
        with_query(|q| {
            let Outcome::Reply { at } = chain.run(q, 0) else {
                panic!()
            };
            // The rewriter's hook has run; complete() runs the ones before it.
            assert_eq!(at, 1);
            chain.complete(q, at);
            assert_eq!(q.answered_by, "answer");
            assert_eq!(q.resp.rcode(), Rcode::NOERROR);
        });
        assert_eq!(*after.0.lock().unwrap(), [b"\x01b\x00".to_vec()]);
        assert_eq!(*renamer.seen.lock().unwrap(), [b"\x00".to_vec()]);
        assert_eq!(*before.0.lock().unwrap(), [b"\x00".to_vec()]);
        // A plugin that did not declare it rewrites gets SERVFAIL for trying.
        let chain = Chain::new(vec![
            Arc::new(Renamer {
                honest: false,
                seen: Default::default(),
            }),
            Arc::new(Answer),
        ]);
        with_query(|q| {
            let Outcome::Reply { at } = chain.run(q, 0) else {
                panic!()
            };
            chain.complete(q, at);
            assert_eq!(q.resp.rcode(), Rcode::SERVFAIL);
        });
    }

    /// Asks for one exchange after every reply a later plugin writes, then answers
    /// NXDOMAIN itself, noting the name of the query it resumes with.
    struct Follower {
        asked: std::sync::atomic::AtomicUsize,
        resumed: std::sync::Mutex<Vec<Vec<u8>>>,
    }
    impl Handler for Follower {
        fn name(&self) -> &'static str {
            "follower"
        }
        fn serve(&self, _: &mut Query<'_, '_>) -> Step {
            Step::Next
        }
        fn follows_up(&self) -> bool {
            true
        }
        fn follow_up(&self, q: &mut Query<'_, '_>) -> Option<UpstreamRequest> {
            assert!(q.resp.is_finished());
            self.asked.fetch_add(1, Ordering::Relaxed);
            Some(UpstreamRequest {
                to: q.req.local,
                proto: UpstreamProto::Udp,
                timeout: Duration::from_secs(1),
                cookie: 7,
                coalesce: None,
                expire: Duration::from_secs(1),
            })
        }
        fn resume(&self, q: &mut Query<'_, '_>, _: UpstreamReply<'_>, cookie: u64) -> Step {
            assert_eq!(cookie, 7);
            self.resumed.lock().unwrap().push(q.req.qname.wire().to_vec());
            q.resp.start(q.req, Rcode::NXDOMAIN);
            Step::Answered
        }
    }

    fn follower() -> Arc<Follower> {
        Arc::new(Follower {
            asked: 0.into(),
            resumed: Default::default(),
        })
    }

    #[test]
    fn a_response_hook_may_ask_for_one_exchange_then_answers_itself() {
        let log = Arc::new(Pass("log", 0.into()));
        let f = follower();
        let chain = Chain::new(vec![log.clone(), f.clone(), Arc::new(Answer)]);
        with_query(|q| {
            let Outcome::Reply { at } = chain.run(q, 0) else {
                panic!()
            };
            assert_eq!(at, 2);
            let Outcome::Upstream { at, request } = chain.complete(q, at) else {
                panic!("the follower asks")
            };
            assert_eq!((at, request.cookie), (1, 7));
            // The hooks before the follower wait for its reply.
            assert_eq!(log.1.load(Ordering::Relaxed), 0);
            let Outcome::Reply { at } = chain.resume(q, at, UpstreamReply::Timeout, 7) else {
                panic!()
            };
            assert_eq!(at, 1);
            // Its own reply is not shown to it again: the hooks before it run, and done.
            assert!(matches!(chain.complete(q, at), Outcome::Reply { at: 1 }));
            assert_eq!(q.resp.rcode(), Rcode::NXDOMAIN);
            assert_eq!(q.answered_by, "follower");
        });
        assert_eq!(log.1.load(Ordering::Relaxed), 1);
        assert_eq!(f.asked.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_follow_up_after_a_rewriter_resumes_with_the_rewritten_query() {
        let before = Arc::new(Witness(Default::default()));
        let renamer = Arc::new(Renamer {
            honest: true,
            seen: Default::default(),
        });
        let f = follower();
        let chain = Chain::new(vec![before.clone(), renamer.clone(), f.clone(), Arc::new(Answer)]);
        with_query(|q| {
            let Outcome::Upstream { at, .. } = chain.run(q, 0) else {
                panic!("the follower asks from inside the rewritten run")
            };
            assert_eq!(at, 2);
            // The rewriter's hook waits too; the client's query is back in the worker.
            assert!(renamer.seen.lock().unwrap().is_empty());
            let Outcome::Reply { at } = chain.resume(q, at, UpstreamReply::Timeout, 7) else {
                panic!()
            };
            assert_eq!(at, 1);
            assert!(matches!(chain.complete(q, at), Outcome::Reply { .. }));
            assert_eq!(q.resp.rcode(), Rcode::NXDOMAIN);
        });
        assert_eq!(*f.resumed.lock().unwrap(), [b"\x01b\x00".to_vec()]);
        assert_eq!(*renamer.seen.lock().unwrap(), [b"\x00".to_vec()]);
        assert_eq!(*before.0.lock().unwrap(), [b"\x00".to_vec()]);
        assert_eq!(f.asked.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn running_off_the_end_is_servfail_with_an_error() {
        let log = Arc::new(Pass("log", 0.into()));
        let chain = Chain::new(vec![log.clone()]);
        with_query(|q| {
            let Outcome::Reply { at } = chain.run(q, 0) else {
                panic!()
            };
            chain.complete(q, at);
            assert_eq!(q.resp.rcode(), Rcode::SERVFAIL);
            assert_eq!(q.error, Some(ChainError::NoNextPlugin("log")));
            assert_eq!(
                q.error.as_ref().unwrap().to_string(),
                "plugin/log: no next plugin found"
            );
        });
        // The plugin that passed the query on to nobody still sees the failure.
        assert_eq!(log.1.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
