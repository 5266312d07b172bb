//! A worker's upstream exchanges: the messages plugins hand it (forward's queries, the
//! kubernetes plugin's CNAME chases), sent over UDP or TCP, with their deadlines.
//!
//! * UDP: a fresh socket per exchange, connected to the upstream, so the kernel picks
//!   a random source port and drops datagrams from anyone else; the message ID is
//!   random too, and a reply must carry it (RFC 5452 section 9).
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
use crate::server::stream::Stream;
use crate::tls;

/// Exchanges in flight per worker; beyond it new ones fail at once.
pub const MAX_EXCHANGES: usize = 4096;
/// Idle pooled TCP connections kept per upstream.
const MAX_IDLE_PER_UPSTREAM: usize = 8;

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpState),
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
    waiters: Vec<W>,
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
    by_key: HashMap<u64, usize>,
    /// Idle connections per (address, TLS configuration: 0 for plain TCP, else the
    /// address of the `tls::Upstream`, which each pooled connection keeps alive).
    pool: HashMap<(SocketAddr, usize), Vec<Idle>>,
    /// Token kind bits the worker reserved for these sockets.
    token_base: usize,
}

impl<W> Upstreams<W> {
    pub fn new(token_base: usize) -> Upstreams<W> {
        Upstreams {
            slots: Vec::new(),
            free: Vec::new(),
            deadlines: BinaryHeap::new(),
            by_key: HashMap::new(),
            pool: HashMap::new(),
            token_base,
        }
    }

    /// Exchanges in flight.
    pub fn live(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The earliest deadline, for the poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse((d, _))| *d)
    }

    /// Calls `f` on every waiting query (to forget a client that went away).
    pub fn for_each_waiter(&mut self, mut f: impl FnMut(&mut W)) {
        for x in self.slots.iter_mut().flatten() {
            x.waiters.iter_mut().for_each(&mut f);
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
                    x.waiters.push(waiter);
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
        let id = (Rng::secure_u64() & 0xFFFF) as u16;
        header.set_id(id);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let token = Token(self.token_base | slot);
        let conn = match &req.proto {
            UpstreamProto::Udp => udp_send(reg, token, req.to, msg),
            UpstreamProto::Tcp => self.tcp_open(reg, token, req.to, msg, req.expire, None),
            UpstreamProto::Tls(t) => self.tcp_open(reg, token, req.to, msg, req.expire, Some(t)),
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                self.free.push(slot);
                return Err((waiter, e.kind()));
            }
        };
        let deadline = Instant::now() + req.timeout;
        self.deadlines.push(Reverse((deadline, slot)));
        if let Some(key) = req.coalesce {
            self.by_key.insert(key, slot);
        }
        self.slots[slot] = Some(Exchange {
            waiters: vec![waiter],
            conn,
            to: req.to,
            id,
            deadline,
            key: req.coalesce,
        });
        Ok(())
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

    /// Handles readiness of exchange `slot`. When it ends, returns its waiters and the
    /// outcome (a reply is copied to the start of `buf`).
    pub fn ready(&mut self, reg: &Registry, slot: usize, buf: &mut [u8]) -> Option<(Vec<W>, ExchangeOutcome)> {
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

    /// Ends exchange `slot`: releases its socket (a TCP connection that delivered a
    /// whole reply goes back to the pool) and returns its waiters.
    fn finish(&mut self, reg: &Registry, slot: usize, outcome: ExchangeOutcome) -> (Vec<W>, ExchangeOutcome) {
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

    /// Ends the exchanges whose deadline passed; returns their waiters.
    pub fn expire(&mut self, reg: &Registry, now: Instant) -> Vec<Vec<W>> {
        let mut out = Vec::new();
        while let Some(Reverse((deadline, slot))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            // The heap entry may be stale: the slot finished, or was reused since.
            if matches!(&self.slots[slot], Some(x) if x.deadline == deadline) {
                out.push(self.finish(reg, slot, ExchangeOutcome::Timeout).0);
            }
        }
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
    let any: SocketAddr = if to.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let mut sock = UdpSocket::bind(any)?;
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
