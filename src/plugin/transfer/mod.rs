//! `transfer`: outgoing zone transfers (AXFR, and IXFR answered as AXFR unless the
//! client is current) of the zones other plugins of the block serve, as CoreDNS's
//! plugin of that name does (README.md beside this file; reference: CoreDNS
//! `plugin/transfer`).
//!
//! ```text
//!   AXFR/IXFR over TCP ──▶ serve: zone (longest match), `to` list, IXFR serial
//!        │  the first source that has exactly this zone (kubernetes, k8s_external, ...)
//!        ▼
//!   Transferer::transfer ──▶ ZoneStream: records from an Arc of the plugin's data
//!        │ fill(message 1) ──▶ the reply           (response hooks: log, metrics)
//!        ▼ not done
//!   WorkerCtx::stream = TransferStream ──▶ the TCP connection asks it for message
//!        2, 3, ... one at a time as the client reads (server/worker/stream.rs)
//! ```
//!
//! A source is found through [`Handler::transferer`] when the chain is linked, so the
//! chain and the server name no plugin. A transfer holds the source's snapshot (an
//! `Arc`: the data stays as it was when the transfer started) and one message; at
//! most [`MAX_TRANSFERS`] run at once per block.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::chain::{ChainError, Handler, Query, ReplyStream, Step};
use crate::config::{ConfigError, Directive};
use crate::dns::{NameKey, QueryBuilder, Rcode, Request, Response, Section, Transport, Zone, rtype};
use crate::plugin::origins;
use crate::setup::{Lifecycle, Plugin, SetupCtx};

/// The directive name, and the prefix of its errors.
const NAME: &str = "transfer";
/// Transfers one block runs at once; one more is answered SERVFAIL. Each holds a
/// message buffer (64 KiB) and what its source keeps between messages (64 services'
/// pointers for kubernetes), so this bounds their memory.
pub const MAX_TRANSFERS: usize = 64;
/// The largest message size the pacing chooses (a message is usually smaller: see
/// [`MESSAGE_TIME`]); only a record larger than the chosen size starts a larger message
/// (at most twice the size that fits it, up to [`MAX_MESSAGE_BYTES`]).
pub const MESSAGE_BYTES: usize = 16 * 1024;
/// How long writing one message of a transfer should take. The worker that streams a
/// transfer writes one message a turn and answers nothing else while it writes, so this
/// is what a transfer adds to the wait of a UDP query that arrives meanwhile (a message
/// of 16 KiB from the kubernetes zone takes ~90 us on the bench host: a UDP answer's p99
/// went from 0.07 to 0.24 ms). Each transfer sizes its messages from how long the last
/// one took, between [`MIN_MESSAGE_BYTES`] and [`MESSAGE_BYTES`].
pub const MESSAGE_TIME: Duration = Duration::from_micros(20);
/// The smallest message size the pacing chooses. Not smaller: a client with a small
/// receive window gets a transfer in many small messages much more slowly (each waits
/// for the window to reopen; 2 KiB messages took a 16 KiB-window client 20 s for what
/// 16 KiB ones sent in 6 s, 8 KiB ones in 9 s).
pub const MIN_MESSAGE_BYTES: usize = 8 * 1024;
/// The size limit for a record that does not fit in the chosen one: what TCP allows.
const MAX_MESSAGE_BYTES: usize = 65535;

/// Writes the next records of `zone` into `resp` (already started) within `limit`
/// bytes, or, when not even one record fits, within twice that, again and again up to
/// what a message can hold: a message after a large record is at most about twice that
/// record's size, so it takes about as long to write as the record itself. Returns
/// whether the zone is complete and whether a record was written.
fn fill_message(resp: &mut Response, req: &Request<'_>, zone: &mut dyn ZoneStream, limit: usize) -> (bool, bool) {
    let mut limit = limit.min(MAX_MESSAGE_BYTES);
    resp.limit_size(limit);
    let mut done = zone.fill(resp);
    while resp.count(Section::Answer) == 0 && limit < MAX_MESSAGE_BYTES {
        // The record that did not fit goes first on the next call (`ZoneStream::fill`).
        limit = limit.saturating_mul(2).min(MAX_MESSAGE_BYTES);
        resp.start(req, Rcode::NOERROR);
        resp.set_aa(true);
        resp.limit_size(limit);
        done = zone.fill(resp);
    }
    (done, resp.count(Section::Answer) > 0)
}

/// The next message's size limit after one of `bytes` took `took` to write: sized to
/// take [`MESSAGE_TIME`] at that pace, changing at most twofold a message (one message
/// slowed by something else does not shrink the next ones to the minimum).
fn next_limit(limit: usize, bytes: usize, took: Duration) -> usize {
    let nanos = took.as_nanos().max(1);
    let fit = (bytes as u128 * MESSAGE_TIME.as_nanos() / nanos).min(MESSAGE_BYTES as u128) as usize;
    fit.clamp(limit / 2, limit.saturating_mul(2))
        .clamp(MIN_MESSAGE_BYTES, MESSAGE_BYTES)
}

/// NOTIFY: attempts per address and how long each waits (CoreDNS: three tries with
/// miekg/dns's default two seconds).
const NOTIFY_ATTEMPTS: usize = 3;
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);
/// Zone changes waiting for their NOTIFY; more are dropped (the next change of the
/// zone notifies again).
const NOTIFY_QUEUE: usize = 1024;
/// How long a NOTIFY waits for its zone to be served (see [`Transferer::serves`]).
const NOTIFY_SERVED_WAIT: Duration = Duration::from_secs(2);

/// A plugin's zones as a transfer reads them (CoreDNS's `transfer.Transferer`).
pub trait Transferer: Send + Sync {
    /// The zone named by `req`'s question (lower-cased in `req.qname`) as a stream of
    /// records, or `None` when this plugin does not serve exactly that zone (CoreDNS's
    /// `ErrNotAuthoritative`). `serial` is an IXFR's: when the zone's serial equals it,
    /// the stream is the SOA alone (RFC 1995 2: the client is current).
    fn transfer(&self, req: &Request<'_>, serial: Option<u32>) -> Option<Box<dyn ZoneStream>>;

    /// Whether this source announces changes with NOTIFY (RFC 1996): if so, it calls
    /// `changed` with a zone after each new version of it is served, and returns the
    /// zones to notify at start-up. CoreDNS's `file` and `auto` notify at start-up and
    /// after every reload; its `kubernetes` and `k8s_external` never (the default,
    /// `None`).
    fn notifies(&self, changed: Arc<dyn Fn(&Zone) + Send + Sync>) -> Option<Vec<Zone>> {
        let _ = changed;
        None
    }

    /// Whether a transfer of `zone` would be answered now: a zone announced before the
    /// plugin lists it (`auto` loads a new file, then swaps in its list) is notified
    /// once it is (the secondary asks at once).
    fn serves(&self, zone: &Zone) -> bool {
        let _ = zone;
        false
    }
}

/// A zone's records, SOA first and last (RFC 5936 2.2), written into one message after
/// another. It owns what it reads (an `Arc` of the data as it was when the transfer
/// started), so it outlives the query that made it.
pub trait ZoneStream: Send {
    /// Writes the next records into `msg`'s answer section with
    /// [`Response::push_or_full`] until one does not fit (it goes first next time) or
    /// the zone is complete; returns whether it is. Names may end in the question
    /// (`Tail::Question(QNAME_OFFSET)`, the zone as the client spelled it).
    fn fill(&mut self, msg: &mut Response) -> bool;
}

/// What a plugin's [`Handler::transferer`] returns: its source, in a type `transfer`
/// can downcast to.
pub struct Source(pub Arc<dyn Transferer>);

/// A `to` address: anyone (`*`), or an IP with the port NOTIFY goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum To {
    Any,
    Host(SocketAddr),
}

/// One `transfer` directive.
#[derive(Clone, Debug)]
pub struct Xfr {
    pub zones: Vec<Zone>,
    pub to: Vec<To>,
    /// The local address NOTIFY is sent from.
    pub source: Option<IpAddr>,
}

impl Xfr {
    /// CoreDNS `allowed`: `*`, or the client's address among the hosts (the port is
    /// not compared).
    fn allowed(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        self.to.iter().any(|t| match t {
            To::Any => true,
            To::Host(a) => a.ip().to_canonical() == client,
        })
    }
}

/// The plugin.
pub struct Transfer {
    pub xfrs: Vec<Xfr>,
    /// The block's sources, in chain order, found when the chain is linked.
    sources: OnceLock<Vec<Arc<dyn Transferer>>>,
    /// Transfers in progress.
    live: Arc<AtomicUsize>,
    /// Zones whose sources announce changes (see [`Transferer::notifies`]): sent a
    /// NOTIFY at start-up, and again from `changes` after each change. `None`: no
    /// source announces anything.
    notify_zones: Mutex<Option<Vec<Zone>>>,
    changes: (Sender<Zone>, Receiver<Zone>),
    notifier: Mutex<Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>>,
}

/// Parses every `transfer [ZONES...] { to ADDRESS...; source ADDRESS }` of a block
/// (CoreDNS `parseTransfer`: each directive is one zone list with its addresses).
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let mut xfrs = Vec::new();
    for d in dirs {
        xfrs.push(parse_one(d, ctx)?);
    }
    Ok(Plugin::both(Arc::new(Transfer::new(xfrs))))
}

fn parse_one(d: &Directive, ctx: &SetupCtx<'_>) -> Result<Xfr, ConfigError> {
    let zones = origins(NAME, d, ctx)?;
    let mut to = Vec::new();
    let mut source = None;
    for opt in d.options() {
        opt.expect_no_block(NAME)?;
        match opt.name.as_str() {
            "to" => {
                if opt.args.is_empty() {
                    return Err(opt.arg_err(NAME));
                }
                for a in &opt.args {
                    if a.as_str() == "*" {
                        to.push(To::Any);
                        continue;
                    }
                    let addr = host_port(a.as_str(), 53).ok_or_else(|| {
                        ConfigError::at(&a.loc, format!("{NAME}: must specify an IP address: `{}'", a.as_str()))
                    })?;
                    to.push(To::Host(addr));
                }
            }
            "source" => {
                let [a] = opt.args.as_slice() else {
                    return Err(opt.arg_err(NAME));
                };
                if source.is_some() {
                    return Err(opt.err(NAME, "source already specified"));
                }
                let ip = a.as_str().parse::<IpAddr>().map_err(|_| {
                    ConfigError::at(&a.loc, format!("{NAME}: invalid source address \"{}\"", a.as_str()))
                })?;
                source = Some(ip);
            }
            other => return Err(opt.err(NAME, format!("unknown property \"{other}\""))),
        }
    }
    if to.is_empty() {
        return Err(d.err(NAME, "'to' is required"));
    }
    Ok(Xfr { zones, to, source })
}

/// CoreDNS `parse.HostPort`: an IP address, with a port or not (`1.2.3.4`,
/// `1.2.3.4:5300`, `[::1]:53`, `::1`); an IPv6 zone (`%eth0`) is accepted and dropped.
fn host_port(s: &str, default_port: u16) -> Option<SocketAddr> {
    fn ip(h: &str) -> Option<IpAddr> {
        h.split('%').next()?.parse().ok()
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        return Some(SocketAddr::new(ip(h)?, p.parse().ok()?));
    }
    if let Some(a) = ip(s) {
        return Some(SocketAddr::new(a, default_port));
    }
    let (h, p) = s.rsplit_once(':')?;
    Some(SocketAddr::new(
        h.parse::<std::net::Ipv4Addr>().ok()?.into(),
        p.parse().ok()?,
    ))
}

impl Transfer {
    pub fn new(xfrs: Vec<Xfr>) -> Transfer {
        Transfer {
            xfrs,
            sources: OnceLock::new(),
            live: Arc::new(AtomicUsize::new(0)),
            notify_zones: Mutex::new(None),
            changes: crossbeam_channel::bounded(NOTIFY_QUEUE),
            notifier: Mutex::new(None),
        }
    }

    /// Transfers from these sources (what linking gives; tests call it directly).
    pub fn with_sources(self, sources: Vec<Arc<dyn Transferer>>) -> Transfer {
        let _ = self.sources.set(sources);
        self
    }

    /// CoreDNS `longestMatch`: the directive with the longest zone containing `name`;
    /// the first of equal ones.
    fn longest_match(&self, name: &NameKey) -> Option<&Xfr> {
        let mut best: Option<(&Xfr, usize)> = None;
        for x in &self.xfrs {
            for z in &x.zones {
                if z.contains(name) && best.is_none_or(|(_, len)| z.wire().len() > len) {
                    best = Some((x, z.wire().len()));
                }
            }
        }
        best.map(|(x, _)| x)
    }

    /// CoreDNS `Notify`: a NOTIFY for `zone` (RFC 1996) to every host of the directive
    /// that has it, each tried up to three times until it answers NOERROR. Blocking:
    /// called from a background thread, never a worker. Returns the failures, one line
    /// each.
    pub fn notify(&self, zone: &Zone) -> Vec<String> {
        let Some(key) = NameKey::from_wire(zone.wire()) else {
            return Vec::new();
        };
        let Some(x) = self.longest_match(&key) else {
            return Vec::new();
        };
        let mut failures = Vec::new();
        for to in &x.to {
            let To::Host(addr) = to else { continue };
            if let Err(why) = send_notify(zone, *addr, x.source) {
                failures.push(format!(
                    "notify for zone \"{}\" was not accepted by \"{addr}\": {why}",
                    zone.as_str()
                ));
            }
        }
        failures
    }
}

/// Sends one NOTIFY and waits for its reply, up to [`NOTIFY_ATTEMPTS`] times.
fn send_notify(zone: &Zone, to: SocketAddr, source: Option<IpAddr>) -> Result<(), String> {
    let local = match (source, to) {
        (Some(ip), _) => SocketAddr::new(ip, 0),
        (None, SocketAddr::V4(_)) => SocketAddr::from(([0, 0, 0, 0], 0)),
        (None, SocketAddr::V6(_)) => SocketAddr::from(([0u16; 8], 0)),
    };
    let sock = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(NOTIFY_TIMEOUT)).map_err(|e| e.to_string())?;
    let mut last = String::from("no reply");
    for _ in 0..NOTIFY_ATTEMPTS {
        let id = crate::chain::Rng::secure_u64() as u16;
        let mut msg = Vec::with_capacity(64);
        QueryBuilder::new(zone.wire(), rtype::SOA)
            .id(id)
            .notify()
            .write(&mut msg);
        if let Err(e) = sock.send_to(&msg, to) {
            last = e.to_string();
            continue;
        }
        let mut buf = [0u8; 512];
        // Replies from elsewhere or with another ID are not the answer; the timeout
        // bounds the wait.
        loop {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == to => {
                    let Some(h) = crate::dns::Header::of(&buf[..n]) else {
                        continue;
                    };
                    if h.id() != id || !h.flags().qr() {
                        continue;
                    }
                    let rcode = crate::dns::wire::message_rcode(&buf[..n]);
                    if rcode == Rcode::NOERROR {
                        return Ok(());
                    }
                    last = format!("rcode was \"{}\"", rcode.name());
                    break;
                }
                Ok(_) => continue,
                Err(e) => {
                    last = e.to_string();
                    break;
                }
            }
        }
    }
    Err(last)
}

impl Handler for Transfer {
    fn name(&self) -> &'static str {
        NAME
    }

    /// CoreDNS `ServeDNS`, in its order: not a transfer, next; not TCP, REFUSED; no
    /// zone of ours, next; a client not in `to`, REFUSED; an IXFR without exactly one
    /// SOA in its authority section, SERVFAIL; no source for the zone, next.
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        let qtype = q.req.qtype;
        if qtype != rtype::AXFR && qtype != rtype::IXFR {
            return Step::Next;
        }
        if q.req.transport != Transport::Tcp {
            return Step::Fail(Rcode::REFUSED, None);
        }
        let Some(x) = self.longest_match(&q.req.qname) else {
            return Step::Next;
        };
        if !x.allowed(q.req.client.ip()) {
            return Step::Fail(Rcode::REFUSED, None);
        }
        let serial = match qtype {
            rtype::IXFR => match q.req.ixfr_serial() {
                Some(s) => Some(s),
                None => return Step::Fail(Rcode::SERVFAIL, None),
            },
            _ => None,
        };
        let sources = self.sources.get().map_or(&[][..], |s| &s[..]);
        let Some(mut zone) = sources.iter().find_map(|s| s.transfer(q.req, serial)) else {
            return Step::Next;
        };
        let guard = match LiveGuard::take(&self.live) {
            Some(g) => g,
            None => {
                let err = ChainError::Plugin(NAME, "too many zone transfers in progress".into());
                return Step::Fail(Rcode::SERVFAIL, Some(err));
            }
        };
        q.resp.start(q.req, Rcode::NOERROR);
        q.resp.set_aa(true);
        let started = Instant::now();
        let (done, any) = fill_message(q.resp, q.req, &mut *zone, MIN_MESSAGE_BYTES);
        if !any {
            let err = ChainError::Plugin(NAME, "a record does not fit in a message".into());
            return Step::Fail(Rcode::SERVFAIL, Some(err));
        }
        if !done {
            q.worker.stream = Some(Box::new(TransferStream {
                query: q.req.raw.to_vec(),
                client: q.req.client,
                local: q.req.local,
                resp: Response::new(),
                zone,
                done: false,
                limit: next_limit(MIN_MESSAGE_BYTES, q.resp.bytes().len(), started.elapsed()),
                _live: guard,
            }));
        }
        Step::Answered
    }

    /// CoreDNS's `OnStartup`: every plugin of the block that can hand over zones.
    fn link(&self, chain: &[Arc<dyn Handler>]) -> Result<(), ConfigError> {
        let sources: Vec<Arc<dyn Transferer>> = chain
            .iter()
            .filter_map(|h| h.transferer())
            .filter_map(|any| any.downcast::<Source>().ok())
            .map(|s| s.0.clone())
            .collect();
        let tx = self.changes.0.clone();
        let warned = AtomicBool::new(false);
        let changed: Arc<dyn Fn(&Zone) + Send + Sync> = Arc::new(move |z: &Zone| {
            // A full queue (more zone changes at once than it holds, e.g. auto's first
            // walk of a large directory) loses that zone's NOTIFY: said once, not per zone.
            if tx.try_send(z.clone()).is_err() && !warned.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "plugin/transfer: more than {NOTIFY_QUEUE} zone changes waiting; NOTIFY for {} and later ones is not sent (secondaries still refresh on the SOA timers)",
                    z.as_str()
                );
            }
        });
        let mut zones = self.notify_zones.lock();
        for s in &sources {
            if let Some(first) = s.notifies(changed.clone()) {
                zones.get_or_insert_with(Vec::new).extend(first);
            }
        }
        let _ = self.sources.set(sources);
        Ok(())
    }
}

/// The NOTIFY sender: a thread of its own (a NOTIFY waits on its reply), started with
/// the server when some directive has a host to notify and some source announces
/// changes.
impl Lifecycle for Transfer {
    fn start(&self) {
        let hosts = self.xfrs.iter().any(|x| x.to.iter().any(|t| matches!(t, To::Host(_))));
        let Some(first) = self.notify_zones.lock().clone() else {
            return;
        };
        let mut notifier = self.notifier.lock();
        if !hosts || notifier.is_some() {
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let me = Transfer::new(self.xfrs.clone()).with_sources(self.sources.get().cloned().unwrap_or_default());
        let rx = self.changes.1.clone();
        let flag = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("transfer-notify".into())
            .spawn(move || {
                // CoreDNS's file notifies every zone once it serves (auto's come
                // through `changes` as they load).
                for z in &first {
                    if flag.load(Ordering::Acquire) {
                        return;
                    }
                    me.log_notify(z);
                }
                while !flag.load(Ordering::Acquire) {
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(z) => me.log_notify(&z),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
            });
        match spawned {
            Ok(handle) => *notifier = Some((stop, handle)),
            Err(e) => log::error!("plugin/transfer: cannot start the NOTIFY sender: {e}"),
        }
    }

    fn stop(&self) {
        // Not joined: a NOTIFY waits up to 3 x 2 s for each silent host, and a reload or
        // a shutdown must not wait on that (review: 11 s to exit with two silent
        // secondaries). The thread holds only its own clones and ends at its next check.
        if let Some((stop, _handle)) = self.notifier.lock().take() {
            stop.store(true, Ordering::Release);
        }
    }
}

impl Transfer {
    /// Notifies `zone`'s hosts once a source serves it (or after
    /// [`NOTIFY_SERVED_WAIT`]); logs what failed (CoreDNS: `Failed sending notifies`).
    fn log_notify(&self, zone: &Zone) {
        let sources = self.sources.get().map_or(&[][..], |s| &s[..]);
        let until = std::time::Instant::now() + NOTIFY_SERVED_WAIT;
        while !sources.iter().any(|s| s.serves(zone)) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let failures = self.notify(zone);
        if failures.is_empty() {
            log::debug!("plugin/transfer: sent notifies for zone {}", zone.as_str());
        } else {
            log::warn!("plugin/transfer: Failed sending notifies: {}", failures.join("; "));
        }
    }
}

/// One transfer counted in [`Transfer::live`] while it exists.
struct LiveGuard(Arc<AtomicUsize>);

impl LiveGuard {
    fn take(live: &Arc<AtomicUsize>) -> Option<LiveGuard> {
        let prev = live.fetch_add(1, Ordering::AcqRel);
        if prev >= MAX_TRANSFERS {
            live.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(LiveGuard(live.clone()))
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Messages 2, 3, ... of a transfer, each a reply to the same query (ID, question, AA)
/// with the next records (RFC 5936 2.2).
struct TransferStream {
    /// The query as received (at most 64 KiB), parsed again for each message.
    query: Vec<u8>,
    client: SocketAddr,
    local: SocketAddr,
    resp: Response,
    zone: Box<dyn ZoneStream>,
    done: bool,
    /// The next message's size limit (see [`MESSAGE_TIME`]).
    limit: usize,
    _live: LiveGuard,
}

impl ReplyStream for TransferStream {
    fn next_message(&mut self) -> Option<&[u8]> {
        if self.done {
            return None;
        }
        let started = Instant::now();
        let req = Request::parse(&self.query, Transport::Tcp, self.client, self.local).ok()?;
        self.resp.start(&req, Rcode::NOERROR);
        self.resp.set_aa(true);
        let (done, any) = fill_message(&mut self.resp, &req, &mut *self.zone, self.limit);
        self.done = done;
        if !any {
            // A record larger than a message: the client gets a transfer without its
            // closing SOA and knows it failed (RFC 5936 2.2).
            log::error!(
                "plugin/transfer: a record of zone {} does not fit in a message",
                req.qname
            );
            self.done = true;
            return None;
        }
        let msg = self.resp.finish();
        self.limit = next_limit(self.limit, msg.len(), started.elapsed());
        Some(msg)
    }
}

#[cfg(test)]
mod tests;
