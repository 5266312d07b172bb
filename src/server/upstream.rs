//! A worker's upstream exchanges: the messages plugins hand it (forward's queries, the
//! kubernetes plugin's CNAME chases), sent over UDP or TCP, with their deadlines.
//!
//! * UDP: a pool of sockets per upstream address ([`UdpPool`]): up to
//!   [`POOL_PER_UPSTREAM`] sockets, each bound to a port the kernel picks at random and
//!   connected to the upstream (so the kernel drops datagrams from anyone else, and an
//!   ICMP error reaches us as ECONNREFUSED), each taking [`POOL_USES`] exchanges or
//!   living [`POOL_AGE`] before a new one (a new random port) replaces it. An exchange
//!   takes one of them at random and a random message ID not in flight on that socket;
//!   a reply counts only on that socket with that ID (RFC 5452 section 9.1; the question
//!   is compared by the plugin), anything else is read and dropped. Creating a socket per
//!   query cost about 40% of a forwarded query's CPU; the pool keeps the ports changing
//!   at a fraction of that. Beyond [`POOL_UPSTREAMS`] addresses in one worker, an
//!   exchange gets a fresh socket of its own, as before the pool; so does one that
//!   picks a worn socket while [`POOL_PER_UPSTREAM`] others of its upstream are still
//!   being replaced, so that no socket outlives its uses or age.
//! * TCP: connections are pooled per upstream and reused until idle for `expire`; a
//!   reused connection that turns out closed is retried once on a fresh one.
//! * TLS (RFC 7858): TCP with a rustls session on the connection (`server::stream`),
//!   driven by the same readiness events: the handshake, the query and the reply move
//!   along as the socket allows. Pooled and reused like TCP, per upstream address and
//!   TLS configuration, so a reused connection costs no handshake.
//! * Coalescing: an exchange started with a key is shared by later requests with the
//!   same key while it is in flight: the message goes out once, and every waiter
//!   resumes with the same reply.
//!
//! Nothing here blocks: sockets are non-blocking and registered in the worker's Poll.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};

use crate::chain::{Rng, UpstreamProto, UpstreamRequest};
use crate::dns::{Header, HeaderMut};
use crate::kubernetes::snapshot::FxHasher;
use crate::server::stream::Stream;
use crate::tls;

/// Exchanges in flight per worker; beyond it new ones fail at once.
pub const MAX_EXCHANGES: usize = 4096;
/// Idle pooled TCP connections kept per upstream.
const MAX_IDLE_PER_UPSTREAM: usize = 8;
/// UDP sockets taking new exchanges per upstream address, per worker. Sockets being
/// replaced (retired, waiting for their last exchange) are at most as many again, so a
/// worker holds at most `2 x POOL_PER_UPSTREAM x POOL_UPSTREAMS` pooled sockets.
pub const POOL_PER_UPSTREAM: usize = 4;
/// Exchanges a pooled socket takes before a new one (a new random port) replaces it.
pub const POOL_USES: u32 = 100;
/// Age at which a pooled socket is replaced, however few exchanges it took.
pub const POOL_AGE: Duration = Duration::from_secs(2);
/// Upstream addresses a worker keeps a pool for; exchanges with others get a socket of
/// their own.
pub const POOL_UPSTREAMS: usize = 64;
/// Datagrams read from one pooled socket per readiness event (replies and junk
/// alike); the rest wait for the next turn of the worker.
const POOL_READS: u32 = 64;
/// A pool whose upstream was not asked for this long is closed.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// The maps of the per-query path (keys chosen by the worker, not by a sender): Fx, not
/// SipHash, which cost more than the rest of the pool's bookkeeping.
type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;
/// The token bit of a pooled socket (the rest is its index); slot tokens are below.
const POOL_BIT: usize = 1 << 31;

enum Conn {
    /// A socket of the exchange's own (an upstream beyond [`POOL_UPSTREAMS`]).
    Udp(UdpSocket),
    /// Pooled socket number `.0`.
    Pooled(usize),
    Tcp(TcpState),
}

/// One pooled UDP socket, connected to its upstream.
struct PoolSock {
    sock: UdpSocket,
    to: SocketAddr,
    uses: u32,
    born: Instant,
    /// The exchanges in flight on it: (message ID, slot). At most [`POOL_USES`], so
    /// finding one to remove is a short scan, and failing the socket costs its own
    /// exchanges only.
    inflight: Vec<(u16, usize)>,
    /// Takes no new exchange; closed when its last one ends.
    retired: bool,
    /// Its exchanges were failed (an error on the socket): not failed twice.
    failed: bool,
    /// Datagrams read since its last readiness event was fully handled.
    reads: u32,
}

/// The sockets of one upstream address.
struct Dest {
    /// Taking new exchanges (at most [`POOL_PER_UPSTREAM`]).
    live: Vec<usize>,
    /// Retired but still waiting on exchanges.
    retired: usize,
    last_used: Instant,
}

/// A worker's pooled UDP sockets (see the module doc).
struct UdpPool {
    socks: Vec<Option<PoolSock>>,
    free: Vec<usize>,
    dests: FxMap<SocketAddr, Dest>,
    /// (socket, message ID) of every exchange in flight on a pooled socket: its slot.
    ids: FxMap<(usize, u16), usize>,
    /// Random bytes for IDs and socket picks, refilled from getrandom 256 at a time.
    random: [u8; 256],
    used: usize,
}

impl UdpPool {
    fn new() -> UdpPool {
        UdpPool {
            socks: Vec::new(),
            free: Vec::new(),
            dests: FxMap::default(),
            ids: FxMap::with_capacity_and_hasher(MAX_EXCHANGES, Default::default()),
            random: [0; 256],
            used: 256,
        }
    }

    /// Two bytes from the kernel's CSPRNG (buffered: one getrandom per 128 draws).
    fn random_u16(&mut self) -> u16 {
        if self.used + 2 > self.random.len() {
            fill_random(&mut self.random);
            self.used = 0;
        }
        let v = u16::from_be_bytes([self.random[self.used], self.random[self.used + 1]]);
        self.used += 2;
        v
    }

    /// A socket for an exchange with `to` and a message ID free on it, or `None` when
    /// `to` gets no pool (too many addresses already).
    fn take(
        &mut self,
        reg: &Registry,
        token_base: usize,
        to: SocketAddr,
        now: Instant,
    ) -> io::Result<Option<(usize, u16)>> {
        if !self.dests.contains_key(&to) {
            if self.dests.len() >= POOL_UPSTREAMS {
                return Ok(None);
            }
            self.dests.insert(
                to,
                Dest {
                    live: Vec::with_capacity(POOL_PER_UPSTREAM),
                    retired: 0,
                    last_used: now,
                },
            );
        }
        let pick = usize::from(self.random_u16()) % POOL_PER_UPSTREAM;
        let dest = self.dests.get_mut(&to).expect("inserted above");
        dest.last_used = now;
        let idx = if dest.live.len() < POOL_PER_UPSTREAM {
            let idx = open_pooled(&mut self.socks, &mut self.free, reg, token_base, to, now)?;
            dest.live.push(idx);
            idx
        } else {
            let idx = dest.live[pick];
            let p = self.socks[idx].as_mut().expect("live pooled socket");
            let worn = p.uses >= POOL_USES || now.saturating_duration_since(p.born) >= POOL_AGE;
            if !worn {
                idx
            } else if p.inflight.is_empty() || dest.retired < POOL_PER_UPSTREAM {
                let new = open_pooled(&mut self.socks, &mut self.free, reg, token_base, to, now)?;
                dest.live[pick] = new;
                retire(&mut self.socks, &mut self.free, dest, reg, idx);
                new
            } else {
                // Worn, and the retired ones are at their bound: no exchange beyond
                // POOL_USES or POOL_AGE on it; this one gets a socket of its own.
                return Ok(None);
            }
        };
        // An ID not in flight on this socket (a few draws at most: at most
        // MAX_EXCHANGES of 65,536 are taken).
        let mut id = self.random_u16();
        while self.ids.contains_key(&(idx, id)) {
            id = self.random_u16();
        }
        Ok(Some((idx, id)))
    }

    /// An exchange on pooled socket `idx` ended.
    fn release(&mut self, reg: &Registry, idx: usize, id: u16) {
        self.ids.remove(&(idx, id));
        let Some(p) = self.socks.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if let Some(k) = p.inflight.iter().position(|&(i, _)| i == id) {
            p.inflight.swap_remove(k);
        }
        if p.retired && p.inflight.is_empty() {
            let to = p.to;
            close_pooled(&mut self.socks, &mut self.free, reg, idx);
            if let Some(d) = self.dests.get_mut(&to) {
                d.retired = d.retired.saturating_sub(1);
            }
        }
    }

    /// Takes pooled socket `idx` out of service (an error on it): it gets no new
    /// exchange and closes when its last one ends.
    fn retire(&mut self, reg: &Registry, idx: usize) {
        let Some(to) = self.socks.get(idx).and_then(Option::as_ref).map(|p| p.to) else {
            return;
        };
        if let Some(d) = self.dests.get_mut(&to) {
            if let Some(k) = d.live.iter().position(|&i| i == idx) {
                d.live.swap_remove(k);
                retire(&mut self.socks, &mut self.free, d, reg, idx);
            }
        }
    }

    /// Closes the pools of upstreams not asked for [`POOL_IDLE`] (their sockets with
    /// nothing in flight; the others on their last exchange).
    fn sweep(&mut self, reg: &Registry, now: Instant) {
        let (socks, free) = (&mut self.socks, &mut self.free);
        self.dests.retain(|_, d| {
            if now.saturating_duration_since(d.last_used) < POOL_IDLE {
                return true;
            }
            for idx in std::mem::take(&mut d.live) {
                retire(socks, free, d, reg, idx);
            }
            d.retired > 0
        });
    }
}

/// A new pooled socket for `to`: bound to a port the kernel picks (at random, from the
/// ephemeral range), connected, registered.
fn open_pooled(
    socks: &mut Vec<Option<PoolSock>>,
    free: &mut Vec<usize>,
    reg: &Registry,
    token_base: usize,
    to: SocketAddr,
    now: Instant,
) -> io::Result<usize> {
    let mut sock = UdpSocket::bind(unspecified(to))?;
    sock.connect(to)?;
    let idx = free.pop().unwrap_or_else(|| {
        socks.push(None);
        socks.len() - 1
    });
    if let Err(e) = reg.register(&mut sock, Token(token_base | POOL_BIT | idx), Interest::READABLE) {
        free.push(idx);
        return Err(e);
    }
    socks[idx] = Some(PoolSock {
        sock,
        to,
        uses: 0,
        born: now,
        inflight: Vec::new(),
        retired: false,
        failed: false,
        reads: 0,
    });
    Ok(idx)
}

/// Retires pooled socket `idx` of `dest` (already out of `dest.live`): closed now if
/// idle, else when its last exchange ends.
fn retire(socks: &mut [Option<PoolSock>], free: &mut Vec<usize>, dest: &mut Dest, reg: &Registry, idx: usize) {
    let Some(p) = socks[idx].as_mut() else { return };
    if p.inflight.is_empty() {
        close_pooled(socks, free, reg, idx);
    } else {
        p.retired = true;
        dest.retired += 1;
    }
}

fn close_pooled(socks: &mut [Option<PoolSock>], free: &mut Vec<usize>, reg: &Registry, idx: usize) {
    if let Some(mut p) = socks[idx].take() {
        let _ = reg.deregister(&mut p.sock);
        free.push(idx);
    }
}

/// Whether a send error is the socket's (an ICMP error the kernel holds for it: the
/// upstream is unreachable), not just the message's.
fn socket_error(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionRefused | io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable
    )
}

/// The unspecified address of `to`'s family, port 0.
fn unspecified(to: SocketAddr) -> SocketAddr {
    if to.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    }
}

/// Fills `buf` from the kernel's CSPRNG (getrandom(2)); the clock-seeded fallback of
/// [`Rng::secure_u64`] if it ever fails.
fn fill_random(buf: &mut [u8]) {
    // SAFETY: the buffer is valid for its length; getrandom writes at most that.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if usize::try_from(n).ok() != Some(buf.len()) {
        for chunk in buf.chunks_mut(8) {
            let v = Rng::secure_u64().to_be_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The queries waiting on one exchange: the first, and any that joined it.
pub struct Waiters<W> {
    first: W,
    more: Vec<W>,
}

impl<W> IntoIterator for Waiters<W> {
    type Item = W;
    type IntoIter = std::iter::Chain<std::iter::Once<W>, std::vec::IntoIter<W>>;
    fn into_iter(self) -> Self::IntoIter {
        std::iter::once(self.first).chain(self.more)
    }
}

struct TcpState {
    stream: Stream,
    /// The TLS upstream's configuration (a retry opens a new session with it).
    tls: Option<Arc<tls::Upstream>>,
    /// The framed message, and how much of it is written.
    out: Vec<u8>,
    written: usize,
    /// The reply as it arrives (length prefix included).
    input: Vec<u8>,
    /// Taken from the pool (if it fails before any reply byte, retry on a new one).
    reused: bool,
}

struct Exchange<W> {
    waiters: Waiters<W>,
    conn: Conn,
    to: SocketAddr,
    id: u16,
    deadline: Instant,
    key: Option<u64>,
}

/// A pooled connection: its stream, since when it idles, and the TLS configuration it
/// was made with (held so that the pool key's address stays its own).
type Idle = (Stream, Instant, Option<Arc<tls::Upstream>>);

/// The pool key of a connection to `to` with `tls`.
fn pool_key(to: SocketAddr, tls: Option<&Arc<tls::Upstream>>) -> (SocketAddr, usize) {
    (to, tls.map_or(0, |t| Arc::as_ptr(t) as usize))
}

/// How an exchange ended (a chain run's end is [`crate::chain::Outcome`]).
pub enum ExchangeOutcome {
    /// A reply with the right ID from the queried address: `len` bytes at the start of
    /// the caller's buffer.
    Reply(usize),
    Timeout,
    Failed(io::ErrorKind),
}

/// A worker's exchanges. `W` is what the worker needs to resume a waiting query.
pub struct Upstreams<W> {
    slots: Vec<Option<Exchange<W>>>,
    free: Vec<usize>,
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
    by_key: FxMap<u64, usize>,
    /// Idle connections per (address, TLS configuration: 0 for plain TCP, else the
    /// address of the `tls::Upstream`, which each pooled connection keeps alive).
    pool: HashMap<(SocketAddr, usize), Vec<Idle>>,
    /// Token kind bits the worker reserved for these sockets.
    token_base: usize,
    udp: UdpPool,
    /// Exchanges on a pooled socket that failed (an error on the socket): ended one by
    /// one by [`Upstreams::ready`].
    failing: Vec<(usize, io::ErrorKind)>,
}

impl<W> Upstreams<W> {
    pub fn new(token_base: usize) -> Upstreams<W> {
        Upstreams {
            slots: Vec::new(),
            free: Vec::new(),
            deadlines: BinaryHeap::new(),
            by_key: FxMap::default(),
            pool: HashMap::new(),
            token_base,
            udp: UdpPool::new(),
            failing: Vec::new(),
        }
    }

    /// Exchanges in flight.
    pub fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The earliest deadline, for the poll timeout (now, when failed exchanges wait to
    /// be ended by [`Upstreams::expire`]).
    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.failing.is_empty() {
            return Some(Instant::now());
        }
        self.deadlines.peek().map(|Reverse((d, _))| *d)
    }

    /// Calls `f` on every waiting query (to forget a client that went away).
    pub fn for_each_waiter(&mut self, mut f: impl FnMut(&mut W)) {
        for x in self.slots.iter_mut().flatten() {
            f(&mut x.waiters.first);
            x.waiters.more.iter_mut().for_each(&mut f);
        }
    }

    /// Starts an exchange for `waiter` (or joins one in flight with the same key).
    /// On failure the waiter comes back with the reason.
    pub fn start(
        &mut self,
        reg: &Registry,
        req: &UpstreamRequest,
        msg: &mut [u8],
        waiter: W,
    ) -> Result<(), (W, io::ErrorKind)> {
        if let Some(key) = req.coalesce {
            if let Some(&slot) = self.by_key.get(&key) {
                if let Some(Some(x)) = self.slots.get_mut(slot) {
                    x.waiters.more.push(waiter);
                    return Ok(());
                }
            }
        }
        if self.live() >= MAX_EXCHANGES {
            return Err((waiter, io::ErrorKind::WouldBlock));
        }
        let Some(mut header) = HeaderMut::of(msg) else {
            return Err((waiter, io::ErrorKind::InvalidInput));
        };
        let now = Instant::now();
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let token = Token(self.token_base | slot);
        let pooled = match &req.proto {
            UpstreamProto::Udp => match self.udp.take(reg, self.token_base, req.to, now) {
                Ok(p) => p,
                Err(e) => {
                    self.free.push(slot);
                    return Err((waiter, e.kind()));
                }
            },
            _ => None,
        };
        let id = match pooled {
            Some((_, id)) => id,
            None => self.udp.random_u16(),
        };
        header.set_id(id);
        let conn = match (&req.proto, pooled) {
            (UpstreamProto::Udp, Some((idx, _))) => self.pooled_send(reg, idx, id, slot, msg),
            (UpstreamProto::Udp, None) => udp_send(reg, token, req.to, msg),
            (UpstreamProto::Tcp, _) => self.tcp_open(reg, token, req.to, msg, req.expire, None),
            (UpstreamProto::Tls(t), _) => self.tcp_open(reg, token, req.to, msg, req.expire, Some(t)),
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                self.free.push(slot);
                return Err((waiter, e.kind()));
            }
        };
        let deadline = now + req.timeout;
        self.deadlines.push(Reverse((deadline, slot)));
        if self.deadlines.len() > 2 * MAX_EXCHANGES {
            // Entries of exchanges that ended stay until their deadline: with long
            // timeouts and quick replies they pile up. Keep the live ones only (at most
            // MAX_EXCHANGES, so this runs at most once per MAX_EXCHANGES starts).
            let slots = &self.slots;
            self.deadlines.retain(|Reverse((d, s))| {
                (*d, *s) == (deadline, slot) || matches!(&slots[*s], Some(x) if x.deadline == *d)
            });
        }
        if let Some(key) = req.coalesce {
            self.by_key.insert(key, slot);
        }
        self.slots[slot] = Some(Exchange {
            waiters: Waiters {
                first: waiter,
                more: Vec::new(),
            },
            conn,
            to: req.to,
            id,
            deadline,
            key: req.coalesce,
        });
        Ok(())
    }

    /// Sends `msg` (ID `id` set) on pooled socket `idx` for exchange `slot`.
    fn pooled_send(&mut self, reg: &Registry, idx: usize, id: u16, slot: usize, msg: &[u8]) -> io::Result<Conn> {
        let p = self.udp.socks[idx].as_mut().expect("a live pooled socket");
        if let Err(e) = p.sock.send(msg) {
            // An error pending on the socket (an ICMP error from an earlier datagram)
            // says the upstream is unreachable: the other exchanges on the socket fail
            // with this one. Any other error (a full buffer, a message too long, a
            // firewall's EPERM, a signal) concerns this message only: this exchange
            // fails, as with a socket of its own, and the socket serves on.
            if socket_error(e.kind()) {
                self.fail_socket(reg, idx, e.kind());
            }
            return Err(e);
        }
        p.uses += 1;
        p.inflight.push((id, slot));
        self.udp.ids.insert((idx, id), slot);
        Ok(Conn::Pooled(idx))
    }

    /// Every exchange on pooled socket `idx` fails with `kind` (they all went to the
    /// same upstream, which an ICMP error says is unreachable); the socket is replaced.
    /// They end through [`Upstreams::ready`] or [`Upstreams::expire`], whichever runs
    /// first.
    fn fail_socket(&mut self, reg: &Registry, idx: usize, kind: io::ErrorKind) {
        let Some(p) = self.udp.socks.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if !p.failed {
            p.failed = true;
            self.failing.extend(p.inflight.iter().map(|&(_, s)| (s, kind)));
        }
        self.udp.retire(reg, idx);
    }

    /// Whether `idx` (of a token of this kind) is a pooled socket's: its readiness may
    /// end several exchanges, so [`Upstreams::ready`] is called until it returns `None`.
    pub fn is_pooled(idx: usize) -> bool {
        idx & POOL_BIT != 0
    }

    /// A pooled connection to `to` that has not idled past `expire`, or a new one.
    fn tcp_open(
        &mut self,
        reg: &Registry,
        token: Token,
        to: SocketAddr,
        msg: &[u8],
        expire: Duration,
        tls: Option<&Arc<tls::Upstream>>,
    ) -> io::Result<Conn> {
        let idle = self.pool.get_mut(&pool_key(to, tls));
        let reused = idle.and_then(|idle| {
            std::iter::from_fn(|| idle.pop())
                .find(|(_, since, _)| since.elapsed() < expire)
                .map(|(s, _, _)| s)
        });
        tcp_conn(reg, token, to, msg, reused, tls.cloned())
    }

    /// Handles readiness of exchange `slot` (or of pooled socket `slot`, see
    /// [`Upstreams::is_pooled`]). When an exchange ends, returns its waiters and the
    /// outcome (a reply is copied to the start of `buf`).
    pub fn ready(&mut self, reg: &Registry, slot: usize, buf: &mut [u8]) -> Option<(Waiters<W>, ExchangeOutcome)> {
        if Self::is_pooled(slot) {
            return self.pooled_ready(reg, slot & !POOL_BIT, buf);
        }
        let x = self.slots.get_mut(slot)?.as_mut()?;
        let id = x.id;
        let result = match &mut x.conn {
            Conn::Udp(sock) => loop {
                match sock.recv(buf) {
                    // Only a reply with the ID sent counts; anything else is ignored
                    // and the wait goes on (RFC 5452 section 9.1).
                    Ok(n) if Header::of(&buf[..n]).is_some_and(|h| h.answers(id)) => {
                        break Some(ExchangeOutcome::Reply(n));
                    }
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                    Err(e) => break Some(ExchangeOutcome::Failed(e.kind())),
                }
            },
            Conn::Tcp(t) => tcp_progress(t, id, buf),
            Conn::Pooled(_) => None,
        };
        let outcome = match result {
            None => return None,
            // A pooled connection the upstream had closed: once more, on a new one.
            Some(ExchangeOutcome::Failed(_)) if matches!(&x.conn, Conn::Tcp(t) if t.reused && t.input.is_empty()) => {
                let Conn::Tcp(old) = &mut x.conn else { unreachable!() };
                let _ = reg.deregister(&mut old.stream);
                let msg = old.out[2..].to_vec();
                let tls = old.tls.clone();
                let to = x.to;
                let token = Token(self.token_base | slot);
                match tcp_conn(reg, token, to, &msg, None, tls) {
                    Ok(c) => {
                        self.slots[slot].as_mut().expect("live slot").conn = c;
                        return None;
                    }
                    Err(e) => ExchangeOutcome::Failed(e.kind()),
                }
            }
            Some(o) => o,
        };
        Some(self.finish(reg, slot, outcome))
    }

    /// Reads pooled socket `idx` until a reply ends an exchange (returned) or nothing is
    /// left to read (`None`). A datagram that is no reply in flight on this socket (an
    /// unknown ID, a late reply to an exchange that timed out, no QR) is dropped.
    fn pooled_ready(&mut self, reg: &Registry, idx: usize, buf: &mut [u8]) -> Option<(Waiters<W>, ExchangeOutcome)> {
        if let Some((slot, kind)) = self.failing.pop() {
            return Some(self.finish(reg, slot, ExchangeOutcome::Failed(kind)));
        }
        loop {
            let p = self.udp.socks.get_mut(idx)?.as_mut()?;
            if p.reads >= POOL_READS {
                // Enough for this turn (junk may keep coming): the rest waits for the
                // next. Registering again makes the poll report it once more if it
                // still holds datagrams (readiness is edge-triggered).
                p.reads = 0;
                let token = Token(self.token_base | POOL_BIT | idx);
                if let Err(e) = reg.reregister(&mut p.sock, token, Interest::READABLE) {
                    self.fail_socket(reg, idx, e.kind());
                    let (slot, kind) = self.failing.pop()?;
                    return Some(self.finish(reg, slot, ExchangeOutcome::Failed(kind)));
                }
                return None;
            }
            p.reads += 1;
            match p.sock.recv(buf) {
                Ok(n) => {
                    let Some(h) = Header::of(&buf[..n]).filter(|h| h.qr()) else {
                        continue;
                    };
                    if let Some(&slot) = self.udp.ids.get(&(idx, h.id())) {
                        return Some(self.finish(reg, slot, ExchangeOutcome::Reply(n)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    p.reads = 0;
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail_socket(reg, idx, e.kind());
                    let (slot, kind) = self.failing.pop()?;
                    return Some(self.finish(reg, slot, ExchangeOutcome::Failed(kind)));
                }
            }
        }
    }

    /// Ends exchange `slot`: releases its socket (a TCP connection that delivered a
    /// whole reply goes back to the pool) and returns its waiters.
    fn finish(&mut self, reg: &Registry, slot: usize, outcome: ExchangeOutcome) -> (Waiters<W>, ExchangeOutcome) {
        let x = self.slots[slot].take().expect("live slot");
        self.free.push(slot);
        if let Some(k) = x.key {
            if self.by_key.get(&k) == Some(&slot) {
                self.by_key.remove(&k);
            }
        }
        match x.conn {
            Conn::Udp(mut s) => {
                let _ = reg.deregister(&mut s);
            }
            Conn::Pooled(idx) => self.udp.release(reg, idx, x.id),
            Conn::Tcp(mut t) => {
                let _ = reg.deregister(&mut t.stream);
                if matches!(outcome, ExchangeOutcome::Reply(_)) {
                    let idle = self.pool.entry(pool_key(x.to, t.tls.as_ref())).or_default();
                    if idle.len() < MAX_IDLE_PER_UPSTREAM {
                        idle.push((t.stream, Instant::now(), t.tls));
                    }
                }
            }
        }
        (x.waiters, outcome)
    }

    /// Ends the exchanges whose deadline passed, and those whose socket failed; returns
    /// their waiters and outcomes.
    pub fn expire(&mut self, reg: &Registry, now: Instant) -> Vec<(Waiters<W>, ExchangeOutcome)> {
        let mut out = Vec::new();
        while let Some((slot, kind)) = self.failing.pop() {
            out.push(self.finish(reg, slot, ExchangeOutcome::Failed(kind)));
        }
        while let Some(Reverse((deadline, slot))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            // The heap entry may be stale: the slot finished, or was reused since.
            if matches!(&self.slots[slot], Some(x) if x.deadline == deadline) {
                out.push(self.finish(reg, slot, ExchangeOutcome::Timeout));
            }
        }
        self.udp.sweep(reg, now);
        // Idle pooled connections past any reasonable reuse age are closed.
        self.pool.retain(|_, idle| {
            idle.retain(|(_, since, _)| since.elapsed() < Duration::from_secs(60));
            !idle.is_empty()
        });
        out
    }
}

/// A TCP exchange on `reused`, or on a new connection to `to` (with a new TLS session
/// when `tls`), with `msg` framed.
fn tcp_conn(
    reg: &Registry,
    token: Token,
    to: SocketAddr,
    msg: &[u8],
    reused: Option<Stream>,
    tls: Option<Arc<tls::Upstream>>,
) -> io::Result<Conn> {
    // The two-byte length frames at most 65,535 bytes (RFC 1035 4.2.2): a longer message
    // would be read by the upstream as a short one followed by more "messages".
    let len = u16::try_from(msg.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a DNS message over 65,535 bytes"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    let is_reused = reused.is_some();
    let mut stream = match (reused, &tls) {
        (Some(s), _) => s,
        (None, None) => Stream::Plain(TcpStream::connect(to)?),
        (None, Some(t)) => {
            let session = t
                .session()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            Stream::tls(TcpStream::connect(to)?, session)
        }
    };
    reg.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
    Ok(Conn::Tcp(TcpState {
        stream,
        tls,
        out,
        written: 0,
        input: Vec::new(),
        reused: is_reused,
    }))
}

fn udp_send(reg: &Registry, token: Token, to: SocketAddr, msg: &[u8]) -> io::Result<Conn> {
    let mut sock = UdpSocket::bind(unspecified(to))?;
    sock.connect(to)?;
    sock.send(msg)?;
    reg.register(&mut sock, token, Interest::READABLE)?;
    Ok(Conn::Udp(sock))
}

/// Moves a TCP exchange along: write what is left, read what arrived; a whole reply
/// (with the ID sent) ends it.
fn tcp_progress(t: &mut TcpState, id: u16, buf: &mut [u8]) -> Option<ExchangeOutcome> {
    while t.written < t.out.len() {
        match t.stream.write(&t.out[t.written..]) {
            Ok(0) => return Some(ExchangeOutcome::Failed(io::ErrorKind::WriteZero)),
            Ok(n) => t.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
            Err(e) => return Some(ExchangeOutcome::Failed(e.kind())),
        }
    }
    let mut chunk = [0u8; 4096];
    loop {
        match t.stream.read(&mut chunk) {
            Ok(0) => return Some(ExchangeOutcome::Failed(io::ErrorKind::UnexpectedEof)),
            Ok(n) => t.input.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
            Err(e) => return Some(ExchangeOutcome::Failed(e.kind())),
        }
        if t.input.len() > 2 + u16::MAX as usize {
            return Some(ExchangeOutcome::Failed(io::ErrorKind::InvalidData));
        }
    }
    // TLS: what reading produced (the handshake's next flight, then the query the
    // session held until the handshake was done) goes out now; the socket's next
    // writable event takes the rest.
    if let Err(e) = t.stream.flush_pending() {
        return Some(ExchangeOutcome::Failed(e.kind()));
    }
    if t.input.len() < 2 {
        return None;
    }
    let len = u16::from_be_bytes([t.input[0], t.input[1]]) as usize;
    if t.input.len() < 2 + len {
        return None;
    }
    let reply = &t.input[2..2 + len];
    // As over UDP: the ID sent, and QR set (a query echoed back is no answer).
    if !Header::of(reply).is_some_and(|h| h.answers(id)) || len > buf.len() {
        return Some(ExchangeOutcome::Failed(io::ErrorKind::InvalidData));
    }
    buf[..len].copy_from_slice(reply);
    Some(ExchangeOutcome::Reply(len))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::UdpSocket as StdUdp;

    use mio::{Events, Poll};

    use super::*;
    use crate::dns::{HeaderMut, QueryBuilder, flag, rtype};

    const BASE: usize = 4 << 32;

    fn request(to: SocketAddr, timeout: Duration) -> UpstreamRequest {
        UpstreamRequest {
            to,
            proto: UpstreamProto::Udp,
            timeout,
            cookie: 0,
            coalesce: None,
            expire: Duration::from_secs(10),
        }
    }

    /// A fake upstream socket and what it received: (source port, ID, message).
    fn sink() -> StdUdp {
        let s = StdUdp::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    fn receive(s: &StdUdp) -> (SocketAddr, u16, Vec<u8>) {
        let mut buf = [0u8; 512];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        (from, u16::from_be_bytes([buf[0], buf[1]]), buf[..n].to_vec())
    }

    /// `msg` made a reply (QR) with ID `id`.
    fn reply(msg: &[u8], id: u16) -> Vec<u8> {
        let mut r = msg.to_vec();
        let mut h = HeaderMut::of(&mut r).unwrap();
        h.set_id(id);
        h.set_flag(flag::QR, true);
        r
    }

    /// Waits for readiness and collects the exchanges that ended: (waiter, outcome).
    fn drive(poll: &mut Poll, ups: &mut Upstreams<u32>, want: usize) -> Vec<(u32, Option<usize>)> {
        let mut events = Events::with_capacity(64);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65535];
        let until = Instant::now() + Duration::from_secs(2);
        while out.len() < want && Instant::now() < until {
            poll.poll(&mut events, Some(Duration::from_millis(50))).unwrap();
            for ev in events.iter() {
                let idx = ev.token().0 & ((1 << 32) - 1);
                while let Some((ws, o)) = ups.ready(poll.registry(), idx, &mut buf) {
                    let n = match o {
                        ExchangeOutcome::Reply(n) => Some(n),
                        _ => None,
                    };
                    out.extend(ws.into_iter().map(|w| (w, n)));
                    if !Upstreams::<u32>::is_pooled(idx) {
                        break;
                    }
                }
            }
        }
        out
    }

    /// Starts an exchange with `to` for `waiter` with query `msg`, which must go out.
    fn start(poll: &Poll, ups: &mut Upstreams<u32>, to: SocketAddr, msg: &[u8], waiter: u32) {
        let mut m = msg.to_vec();
        ups.start(poll.registry(), &request(to, Duration::from_secs(5)), &mut m, waiter)
            .unwrap_or_else(|(_, e)| panic!("start {waiter}: {e:?}"));
    }

    fn open_sockets(ups: &Upstreams<u32>) -> usize {
        ups.udp.socks.iter().flatten().count()
    }

    #[test]
    fn sockets_are_reused_then_replaced_and_ports_spread() {
        let mut poll = Poll::new().unwrap();
        let up = sink();
        let mut ups: Upstreams<u32> = Upstreams::new(BASE);
        let q = QueryBuilder::new(b"\x01a\x00", rtype::A).to_vec();
        let total = 10 * POOL_USES as usize * POOL_PER_UPSTREAM;
        let mut ports = Vec::new();
        let mut ids = Vec::new();
        for i in 0..total {
            start(&poll, &mut ups, up.local_addr().unwrap(), &q, i as u32);
            let (from, id, m) = receive(&up);
            ports.push(from.port());
            ids.push(id);
            up.send_to(&reply(&m, id), from).unwrap();
            let done = drive(&mut poll, &mut ups, 1);
            assert_eq!(done.len(), 1, "exchange {i}: {done:?}");
            assert_eq!(done[0].0, i as u32);
            assert!(done[0].1.is_some(), "exchange {i}: no reply");
            assert!(open_sockets(&ups) <= 2 * POOL_PER_UPSTREAM);
        }
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        // Every socket takes at most POOL_USES exchanges, so there were at least
        // total / POOL_USES of them (sockets replaced), each on a random port (the
        // kernel may hand a port out again: a tenth of them leaves room for that).
        assert!(
            distinct.len() >= total / POOL_USES as usize * 9 / 10,
            "{} ports",
            distinct.len()
        );
        // Between two replacements, a socket keeps its port: the port changes at most
        // once per POOL_USES exchanges of a socket, so in runs.
        let changes = ports.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(changes < total * 9 / 10, "{changes} changes: no reuse");
        // Spread over the ephemeral range, not handed out in sequence.
        let (lo, hi) = (distinct.iter().min().unwrap(), distinct.iter().max().unwrap());
        assert!(hi - lo > 1000, "ports {lo}..{hi}");
        let mut sorted: Vec<u16> = distinct.into_iter().collect();
        sorted.sort_unstable();
        let consecutive = sorted.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(
            consecutive < sorted.len() / 4,
            "{consecutive} of {} ports consecutive",
            sorted.len()
        );
        // IDs: random, not a counter (4,000 draws of 16 bits: a few repeats at most).
        let distinct_ids: HashSet<u16> = ids.iter().copied().collect();
        assert!(
            distinct_ids.len() > total * 9 / 10,
            "{} distinct of {total}",
            distinct_ids.len()
        );
        let steps = ids.windows(2).filter(|w| w[1] == w[0].wrapping_add(1)).count();
        assert!(steps < 5, "{steps} IDs follow their predecessor");
    }

    #[test]
    fn an_aged_socket_is_replaced_and_closed_when_idle() {
        let mut poll = Poll::new().unwrap();
        let up = sink();
        let mut ups: Upstreams<u32> = Upstreams::new(BASE);
        let q = QueryBuilder::new(b"\x01a\x00", rtype::A).to_vec();
        let mut round = |ups: &mut Upstreams<u32>, n: usize| {
            let mut ports = HashSet::new();
            for i in 0..n {
                start(&poll, ups, up.local_addr().unwrap(), &q, i as u32);
                let (from, id, m) = receive(&up);
                ports.insert(from.port());
                up.send_to(&reply(&m, id), from).unwrap();
                assert_eq!(drive(&mut poll, ups, 1).len(), 1);
            }
            ports
        };
        let first = round(&mut ups, 40);
        assert!(first.len() <= POOL_PER_UPSTREAM, "{first:?}");
        // Age every socket past POOL_AGE.
        for p in ups.udp.socks.iter_mut().flatten() {
            p.born -= POOL_AGE;
        }
        let second = round(&mut ups, 40);
        // New ports (the kernel may hand out a closed one's port again: one in common
        // is allowed for that).
        assert!(first.intersection(&second).count() <= 1, "{first:?} {second:?}");
        // The old ones had nothing in flight: closed, not kept.
        assert!(open_sockets(&ups) <= POOL_PER_UPSTREAM, "{}", open_sockets(&ups));
    }

    #[test]
    fn wrong_ids_and_stale_replies_are_dropped() {
        let mut poll = Poll::new().unwrap();
        let up = sink();
        let mut ups: Upstreams<u32> = Upstreams::new(BASE);
        let q = QueryBuilder::new(b"\x01a\x00", rtype::A).to_vec();
        // Exchange 1 times out; its late reply must not end exchange 2 on the same socket.
        let mut msg = q.clone();
        ups.start(
            poll.registry(),
            &request(up.local_addr().unwrap(), Duration::from_millis(10)),
            &mut msg,
            1,
        )
        .unwrap_or_else(|(_, e)| panic!("{e:?}"));
        let (from1, id1, m1) = receive(&up);
        std::thread::sleep(Duration::from_millis(20));
        let expired = ups.expire(poll.registry(), Instant::now());
        assert_eq!(expired.len(), 1);
        assert_eq!(ups.live(), 0);
        // Fill the pool so that exchange 2 shares exchange 1's socket eventually: keep
        // starting until one goes out from from1's port.
        let mut waiter = 2;
        let (from, id, m) = loop {
            start(&poll, &mut ups, up.local_addr().unwrap(), &q, waiter);
            let got = receive(&up);
            if got.0 == from1 {
                break got;
            }
            waiter += 1;
            assert!(waiter < 200, "no exchange reused the first socket");
        };
        // The late reply, a reply with another ID, and the query echoed (no QR): dropped.
        up.send_to(&reply(&m1, id1), from).unwrap();
        up.send_to(&reply(&m, id ^ 0x5555), from).unwrap();
        up.send_to(&m, from).unwrap();
        // From another address (a second socket): the kernel drops it (connected).
        let other = StdUdp::bind("127.0.0.1:0").unwrap();
        other.send_to(&reply(&m, id), from).unwrap();
        let done = drive(&mut poll, &mut ups, 1);
        assert!(done.is_empty(), "{done:?}");
        assert_eq!(ups.live() as u32, waiter - 1);
        // The genuine one ends exactly its exchange.
        up.send_to(&reply(&m, id), from).unwrap();
        let done = drive(&mut poll, &mut ups, 1);
        assert_eq!(done, [(waiter, Some(m.len()))]);
    }

    /// A send error of the message's own (here EMSGSIZE) fails that exchange only: the
    /// socket, and the exchanges on it, carry on.
    #[test]
    fn a_message_send_error_fails_only_its_exchange() {
        let mut poll = Poll::new().unwrap();
        let up = sink();
        let to = up.local_addr().unwrap();
        let mut ups: Upstreams<u32> = Upstreams::new(BASE);
        let q = QueryBuilder::new(b"\x01a\x00", rtype::A).to_vec();
        // Every socket of the pool gets an exchange.
        let mut sent = Vec::new();
        for i in 0..POOL_PER_UPSTREAM as u32 {
            start(&poll, &mut ups, to, &q, i);
            sent.push(receive(&up));
        }
        assert_eq!(open_sockets(&ups), POOL_PER_UPSTREAM);
        // Too long for a datagram: it goes on one of those sockets and fails.
        let mut long = q.clone();
        long.resize(70_000, 0);
        assert!(
            ups.start(poll.registry(), &request(to, Duration::from_secs(5)), &mut long, 99)
                .is_err()
        );
        assert_eq!(ups.live(), POOL_PER_UPSTREAM);
        assert!(
            ups.expire(poll.registry(), Instant::now()).is_empty(),
            "others failed with it"
        );
        assert_eq!(open_sockets(&ups), POOL_PER_UPSTREAM, "a socket was replaced");
        for (from, id, m) in &sent {
            up.send_to(&reply(m, *id), from).unwrap();
        }
        let mut done = drive(&mut poll, &mut ups, POOL_PER_UPSTREAM);
        done.sort_unstable();
        let want: Vec<_> = (0..POOL_PER_UPSTREAM as u32).map(|i| (i, Some(q.len()))).collect();
        assert_eq!(done, want);
    }

    /// A worn socket (past POOL_USES or POOL_AGE) that cannot be replaced (as many
    /// retired ones already wait for their last exchange) takes no more: the exchange
    /// gets a socket of its own.
    #[test]
    fn a_worn_socket_takes_no_more_when_none_can_retire() {
        let poll = Poll::new().unwrap();
        let up = sink();
        let to = up.local_addr().unwrap();
        let mut ups: Upstreams<u32> = Upstreams::new(BASE);
        let q = QueryBuilder::new(b"\x01a\x00", rtype::A).to_vec();
        let wear = |ups: &mut Upstreams<u32>| {
            for p in ups.udp.socks.iter_mut().flatten().filter(|p| !p.retired) {
                p.uses = POOL_USES;
            }
        };
        let mut waiter = 0;
        for _ in 0..2 * POOL_PER_UPSTREAM {
            start(&poll, &mut ups, to, &q, waiter);
            waiter += 1;
        }
        // Wear the live ones until as many are retired as the bound allows (every socket
        // has an exchange in flight, so none closes).
        while ups.udp.dests[&to].retired < POOL_PER_UPSTREAM {
            wear(&mut ups);
            start(&poll, &mut ups, to, &q, waiter);
            waiter += 1;
            assert!(waiter < 200);
        }
        wear(&mut ups);
        let live = ups.live();
        for _ in 0..20 {
            start(&poll, &mut ups, to, &q, waiter);
            waiter += 1;
        }
        assert_eq!(ups.live(), live + 20);
        for p in ups.udp.socks.iter().flatten() {
            assert!(p.uses <= POOL_USES, "a socket took {} exchanges", p.uses);
        }
        assert_eq!(open_sockets(&ups), 2 * POOL_PER_UPSTREAM);
    }

    /// Junk on a pooled socket is read at most POOL_READS datagrams a turn; the rest,
    /// and the reply behind it, come with the next readiness event.
    #[test]
    fn junk_is_read_a_bounded_amount_per_turn() {
        let mut poll = Poll::new().unwrap();
        let up = sink();
        let to = up.local_addr().unwrap();
        let mut ups: Upstreams<u32> = Upstreams::new(BASE);
        let q = QueryBuilder::new(b"\x01a\x00", rtype::A).to_vec();
        start(&poll, &mut ups, to, &q, 7);
        let (from, id, m) = receive(&up);
        let junk = 3 * POOL_READS as usize;
        for _ in 0..junk {
            up.send_to(&m, from).unwrap();
        }
        up.send_to(&reply(&m, id), from).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut events = Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::from_secs(1))).unwrap();
        let idx = events.iter().next().expect("readable").token().0 & ((1 << 32) - 1);
        let mut buf = vec![0u8; 65535];
        assert!(ups.ready(poll.registry(), idx, &mut buf).is_none(), "read past the cap");
        // Registered again: the poll reports the socket once more, turn after turn.
        let done = drive(&mut poll, &mut ups, 1);
        assert_eq!(done, [(7, Some(m.len()))]);
    }

    /// The deadline heap keeps entries of ended exchanges until their deadline; with
    /// quick replies and long timeouts it is rebuilt, not left to grow.
    #[test]
    fn the_deadline_heap_stays_bounded() {
        let mut poll = Poll::new().unwrap();
        let up = sink();
        let to = up.local_addr().unwrap();
        let mut ups: Upstreams<u32> = Upstreams::new(BASE);
        let q = QueryBuilder::new(b"\x01a\x00", rtype::A).to_vec();
        for i in 0..(2 * MAX_EXCHANGES + 100) as u32 {
            start(&poll, &mut ups, to, &q, i);
            let (from, id, m) = receive(&up);
            up.send_to(&reply(&m, id), from).unwrap();
            assert_eq!(drive(&mut poll, &mut ups, 1).len(), 1);
            assert!(
                ups.deadlines.len() <= 2 * MAX_EXCHANGES,
                "{} entries",
                ups.deadlines.len()
            );
        }
    }

    #[test]
    fn an_unreachable_upstream_fails_every_exchange_on_the_socket_at_once() {
        let mut poll = Poll::new().unwrap();
        let dead = StdUdp::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut ups: Upstreams<u32> = Upstreams::new(BASE);
        let q = QueryBuilder::new(b"\x01a\x00", rtype::A).to_vec();
        let mut failed_at_start = 0;
        for i in 0..8 {
            let mut msg = q.clone();
            if ups
                .start(poll.registry(), &request(dead, Duration::from_secs(5)), &mut msg, i)
                .is_err()
            {
                failed_at_start += 1;
            }
        }
        let t0 = Instant::now();
        let mut done = drive(&mut poll, &mut ups, 8 - failed_at_start);
        // Those failed with the socket when a later send found its error: at the next
        // turn of the worker.
        for (ws, o) in ups.expire(poll.registry(), Instant::now()) {
            assert!(matches!(o, ExchangeOutcome::Failed(_)));
            done.extend(ws.into_iter().map(|w| (w, None)));
        }
        assert_eq!(done.len() + failed_at_start, 8, "{done:?}");
        assert!(done.iter().all(|(_, n)| n.is_none()));
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert_eq!(ups.live(), 0);
    }
}
