//! The HTTP/1.1 server of `/health`, `/ready` and `/metrics`: one thread with its own
//! mio `Poll` serves every endpoint address, with non-blocking connections. It never
//! touches a worker: handlers read atomics and snapshots.
//!
//! ```text
//!  control thread ──listen(addr) / close(addr)──▶ commands ──▶ ┐
//!                                                              ▼
//!  listeners ──accept──▶ connection ──read head──▶ handler ──▶ write response ──▶ FIN, linger ──▶ close
//!                         │ at most MAX_CONNECTIONS:  │ whole head within          │ whole response within
//!                         │ the oldest is evicted     │ REQUEST_DEADLINE of accept │ WRITE_DEADLINE
//! ```
//!
//! What keeps a probe answered whatever other clients do: the deadline is for the whole
//! request head, not for each read, so a client trickling bytes cannot hold a connection
//! longer than [`REQUEST_DEADLINE`]; when [`MAX_CONNECTIONS`] are open, a new connection
//! closes the oldest one (finished ones first, then by age alone, whether it is still
//! sending its head or not taking its response), so idle and slow connections cost
//! descriptors but never turn a newer probe away; a listener takes at most
//! `ACCEPTS_PER_TURN` connections in a row; nothing blocks, so one slow client delays
//! no other.
//! Every connection closed without a normal answer is counted by reason ([`Stats`],
//! `clusterdns_http_failures_total`) and logged, at most once per reason every 10 s.

mod request;

pub use request::{HeadError, MAX_HEAD, Parsed, Request, head_end, parse, parse_head};

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream as MioStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::metrics::Families;

/// Connections open at once over all endpoints; a new one beyond it closes the oldest.
pub const MAX_CONNECTIONS: usize = 256;
/// From accepting a connection to having its whole request head.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// From having the response ready to the client having taken all of it.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// After the response, how long the client may take to close its side; what it sends
/// meanwhile is read and dropped, so that closing never resets a response it has not
/// read yet.
const LINGER: Duration = Duration::from_secs(1);
/// At most one log line per failure reason in this time.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// The listen backlog: connections the kernel completes before the loop accepts them.
const BACKLOG: i32 = 1024;
/// Connections one listener takes in a row before the thread serves the rest: a flood
/// of connections on one endpoint address cannot keep the others', or the requests of
/// connections already open, waiting.
const ACCEPTS_PER_TURN: usize = 64;

/// A response.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// The whole response as sent: status line, headers, and the body unless `head_only`.
    fn bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// What answers requests: given the endpoint address (as passed to [`Endpoints::listen`])
/// the request came in on.
pub type Handler = Arc<dyn Fn(SocketAddr, &Request<'_>) -> Response + Send + Sync>;

/// Why a connection was closed without a normal answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No whole request head within [`REQUEST_DEADLINE`] (answered 408 if it sent any).
    Timeout,
    /// The response not taken within [`WRITE_DEADLINE`].
    WriteTimeout,
    /// Closed to make room: [`MAX_CONNECTIONS`] were open.
    Evicted,
    /// Not an HTTP/1.x request (400, 505).
    Malformed,
    /// A request head over [`MAX_HEAD`] bytes (431).
    TooLarge,
    /// The handler panicked (500).
    Handler,
    /// `accept` failed (out of descriptors, ...).
    Accept,
    /// A read or write failed (a reset by the client, ...).
    Io,
}

impl Failure {
    const ALL: [Failure; 8] = [
        Failure::Timeout,
        Failure::WriteTimeout,
        Failure::Evicted,
        Failure::Malformed,
        Failure::TooLarge,
        Failure::Handler,
        Failure::Accept,
        Failure::Io,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::WriteTimeout => "write_timeout",
            Failure::Evicted => "evicted",
            Failure::Malformed => "malformed",
            Failure::TooLarge => "too_large",
            Failure::Handler => "handler",
            Failure::Accept => "accept",
            Failure::Io => "io",
        }
    }
}

/// What the endpoint thread counts; read at scrape time.
#[derive(Default)]
pub struct Stats {
    accepted: AtomicU64,
    open: AtomicU64,
    failures: [AtomicU64; Failure::ALL.len()],
}

impl Stats {
    /// Connections closed for `why` so far.
    pub fn failures(&self, why: Failure) -> u64 {
        self.failures[why as usize].load(Ordering::Relaxed)
    }

    /// Adds the `clusterdns_http_*` metrics to a scrape.
    pub fn metrics(&self, out: &mut Families) {
        out.counter(
            "clusterdns_http_connections_total",
            "Connections accepted on the health, ready and metrics endpoints.",
            &[],
            self.accepted.load(Ordering::Relaxed) as f64,
        );
        out.gauge(
            "clusterdns_http_connections_open",
            "Connections open on the health, ready and metrics endpoints.",
            &[],
            self.open.load(Ordering::Relaxed) as f64,
        );
        for f in Failure::ALL {
            out.counter(
                "clusterdns_http_failures_total",
                "Connections to the health, ready and metrics endpoints closed without a normal answer, by reason.",
                &[("reason", f.label())],
                self.failures(f) as f64,
            );
        }
    }
}

enum Command {
    Listen(SocketAddr, TcpListener),
    /// Stop listening there; says so on the channel once the listener is closed.
    Close(SocketAddr, Sender<()>),
    Stop,
}

/// The HTTP endpoints of the process (`/health`, `/ready`, `/metrics`): the thread that
/// serves them and the addresses it listens on; stopped (listeners closed, thread
/// joined) on drop. (The DNS side is `server::Server`.)
pub struct Endpoints {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    stats: Arc<Stats>,
    thread: Option<JoinHandle<()>>,
}

impl Endpoints {
    /// Starts the thread, listening nowhere yet, counting in `stats`.
    pub fn start(handler: Handler, stats: Arc<Stats>) -> io::Result<Endpoints> {
        Endpoints::with_budget(handler, stats, MAX_CONNECTIONS)
    }

    /// Like [`Endpoints::start`] with at most `budget` connections open (tests use a small
    /// one).
    fn with_budget(handler: Handler, stats: Arc<Stats>, budget: usize) -> io::Result<Endpoints> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let endpoints = EndpointLoop {
            poll,
            commands: rx,
            handler,
            stats: stats.clone(),
            listeners: Vec::new(),
            conns: Vec::new(),
            free: Vec::new(),
            live: 0,
            budget,
            next_seq: 0,
            retry_accept: false,
            accept_pending: false,
            log: Limiter::default(),
        };
        let thread = std::thread::Builder::new()
            .name("http-endpoints".into())
            .spawn(move || endpoints.run())?;
        Ok(Endpoints {
            commands: tx,
            waker,
            stats,
            thread: Some(thread),
        })
    }

    /// Listens on `addr` (bound here, so that an error is the caller's) and serves it;
    /// returns the address bound (the real port when 0 was asked).
    pub fn listen(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        self.listen_on(addr, bind_listener(addr)?)
    }

    /// Serves `addr` on a listener bound elsewhere (passed by a predecessor).
    pub fn listen_on(&self, addr: SocketAddr, std: std::net::TcpListener) -> io::Result<SocketAddr> {
        // A longer queue than std's 128, for connections completed while the loop is busy.
        // SAFETY: listen(2) on a socket we own, already listening: it only resizes the queue.
        unsafe {
            libc::listen(std.as_raw_fd(), BACKLOG);
        }
        std.set_nonblocking(true)?;
        let bound = std.local_addr()?;
        self.send(Command::Listen(addr, TcpListener::from_std(std)));
        Ok(bound)
    }

    /// Stops listening on `addr` (connections already accepted there are finished).
    /// Returns once the listener is closed (or after 1 s), so that the address can be
    /// bound again at once.
    pub fn close(&self, addr: SocketAddr) {
        let (done, closed) = crossbeam_channel::bounded(1);
        self.send(Command::Close(addr, done));
        let _ = closed.recv_timeout(Duration::from_secs(1));
    }

    /// The thread's counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    fn send(&self, cmd: Command) {
        if self.commands.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        self.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const WAKER: Token = Token(0);
/// Listener `i` is `Token(LISTENER + i)`, connection `i` is `Token(CONN + i)`.
const LISTENER: usize = 1;
const CONN: usize = 1 << 20;

struct Listener {
    /// The endpoint address as configured (what the handler is told).
    addr: SocketAddr,
    sock: TcpListener,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Answered; waiting for the client to close (evicted first).
    Lingering,
    /// Reading the request head.
    Reading,
    /// Writing the response.
    Writing,
}

struct Conn {
    stream: MioStream,
    peer: SocketAddr,
    /// The endpoint address it came in on.
    endpoint: SocketAddr,
    /// Accept order: lower is older.
    seq: u64,
    phase: Phase,
    deadline: Instant,
    opened: Instant,
    /// The head read so far (at most [`MAX_HEAD`] bytes), then the response to write.
    buf: Vec<u8>,
    /// How much of `buf` was searched for the end of the head, or has been written.
    pos: usize,
}

/// One log line per reason per [`LOG_EVERY`], saying how many were not logged.
#[derive(Default)]
struct Limiter {
    last: [Option<Instant>; Failure::ALL.len()],
    unlogged: [u64; Failure::ALL.len()],
}

impl Limiter {
    fn log(&mut self, why: Failure, now: Instant, line: impl FnOnce() -> String) {
        let i = why as usize;
        if self.last[i].is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.unlogged[i] += 1;
            return;
        }
        let more = std::mem::take(&mut self.unlogged[i]);
        self.last[i] = Some(now);
        let line = line();
        if more > 0 {
            log::warn!("{line} (and {more} more for this reason since the last report)");
        } else {
            log::warn!("{line}");
        }
    }
}

/// The endpoint thread's own state: its poll loop, listeners and connections.
struct EndpointLoop {
    poll: Poll,
    commands: Receiver<Command>,
    handler: Handler,
    stats: Arc<Stats>,
    listeners: Vec<Option<Listener>>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    /// Connections open at most ([`MAX_CONNECTIONS`]).
    budget: usize,
    next_seq: u64,
    /// An accept failed for want of resources: try again on the next turn.
    retry_accept: bool,
    /// A listener had more connections waiting after its turn: accept again at once.
    accept_pending: bool,
    log: Limiter,
}

impl EndpointLoop {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("http endpoints: poll failed: {e}");
                return;
            }
            // Listeners whose turn ended with connections still queued go first (edge-
            // triggered polling will not report them again).
            let pending = std::mem::take(&mut self.accept_pending);
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {
                        if !self.commands() {
                            return;
                        }
                    }
                    Token(t) if t >= CONN => self.ready(t - CONN),
                    Token(t) => self.accept(t - LISTENER),
                }
            }
            if std::mem::take(&mut self.retry_accept) || pending {
                for i in 0..self.listeners.len() {
                    self.accept(i);
                }
            }
            self.expire();
            self.stats.open.store(self.live as u64, Ordering::Relaxed);
        }
    }

    /// Until the nearest deadline; 100 ms while an accept waits to be retried.
    fn next_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut t = self
            .conns
            .iter()
            .flatten()
            .map(|c| c.deadline.saturating_duration_since(now))
            .min();
        if self.accept_pending {
            return Some(Duration::ZERO);
        }
        if self.retry_accept {
            t = Some(t.map_or(Duration::from_millis(100), |t| t.min(Duration::from_millis(100))));
        }
        t
    }

    /// Applies the control thread's commands; false once told to stop.
    fn commands(&mut self) -> bool {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Listen(addr, mut sock) => {
                    let i = self.listeners.iter().position(Option::is_none).unwrap_or_else(|| {
                        self.listeners.push(None);
                        self.listeners.len() - 1
                    });
                    match self
                        .poll
                        .registry()
                        .register(&mut sock, Token(LISTENER + i), Interest::READABLE)
                    {
                        Ok(()) => {
                            self.listeners[i] = Some(Listener { addr, sock });
                            // Connections may have queued before registration.
                            self.accept(i);
                        }
                        Err(e) => log::error!("http {addr}: cannot watch the listener: {e}"),
                    }
                }
                Command::Close(addr, done) => {
                    for slot in self.listeners.iter_mut() {
                        if slot.as_ref().is_some_and(|l| l.addr == addr) {
                            if let Some(mut l) = slot.take() {
                                let _ = self.poll.registry().deregister(&mut l.sock);
                            }
                        }
                    }
                    let _ = done.send(());
                }
                Command::Stop => return false,
            }
        }
        true
    }

    fn accept(&mut self, i: usize) {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(Some(l)) = self.listeners.get(i) else {
                return;
            };
            let endpoint = l.addr;
            match l.sock.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, endpoint),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted || e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) => {
                    // Out of descriptors or memory: a connection of ours going makes room
                    // for the one waiting (edge-triggered polling would not report it
                    // again), and the next turn tries again.
                    self.failed(Failure::Accept, Instant::now(), || {
                        format!("http {endpoint}: accept failed: {e}")
                    });
                    if let Some(victim) = self.oldest() {
                        self.evict(victim);
                    }
                    self.retry_accept = true;
                    return;
                }
            }
        }
        self.accept_pending = true;
    }

    /// Takes a new connection, closing the oldest one first if the budget is spent.
    fn admit(&mut self, mut stream: MioStream, peer: SocketAddr, endpoint: SocketAddr) {
        if self.live >= self.budget {
            if let Some(victim) = self.oldest() {
                self.evict(victim);
            }
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, Token(CONN + slot), Interest::READABLE | Interest::WRITABLE)
        {
            self.free.push(slot);
            self.failed(Failure::Accept, Instant::now(), || {
                format!("http {endpoint}: cannot watch a connection: {e}")
            });
            return;
        }
        let now = Instant::now();
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.next_seq += 1;
        self.conns[slot] = Some(Conn {
            stream,
            peer,
            endpoint,
            seq: self.next_seq,
            phase: Phase::Reading,
            deadline: now + REQUEST_DEADLINE,
            opened: now,
            buf: Vec::new(),
            pos: 0,
        });
        self.live += 1;
        // A probe's request is usually there already: answer it now.
        self.ready(slot);
    }

    /// The connection to close to make room: one already answered (lingering) if there
    /// is one, else the oldest, whatever it is doing. Age alone decides among the
    /// others: ranking writers after readers would let old connections that never take
    /// their response (a stalled `/metrics` reader) outlive a probe accepted a moment ago.
    fn oldest(&self) -> Option<usize> {
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().map(|c| ((c.phase != Phase::Lingering, c.seq), i)))
            .min()
            .map(|(_, i)| i)
    }

    fn evict(&mut self, slot: usize) {
        let Some(c) = self.conns.get(slot).and_then(Option::as_ref) else {
            return;
        };
        if c.phase != Phase::Lingering {
            let (endpoint, peer, age, budget) = (c.endpoint, c.peer, c.opened.elapsed(), self.budget);
            self.failed(Failure::Evicted, Instant::now(), || {
                format!(
                    "http {endpoint}: {budget} connections open: evicted the oldest, from {peer} ({:.1}s old)",
                    age.as_secs_f64()
                )
            });
        }
        self.close(slot);
    }

    fn failed(&mut self, why: Failure, now: Instant, line: impl FnOnce() -> String) {
        self.stats.failures[why as usize].fetch_add(1, Ordering::Relaxed);
        self.log.log(why, now, line);
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut c) = self.conns.get_mut(slot).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.free.push(slot);
            self.live -= 1;
        }
    }

    /// Moves a connection on as far as its socket allows.
    fn ready(&mut self, slot: usize) {
        let Some(c) = self.conns.get(slot).and_then(Option::as_ref) else {
            return;
        };
        match c.phase {
            Phase::Reading => self.read_head(slot),
            Phase::Writing => self.write(slot),
            Phase::Lingering => self.drain(slot),
        }
    }

    fn read_head(&mut self, slot: usize) {
        let (handler, stats) = (self.handler.clone(), self.stats.clone());
        let mut chunk = [0u8; 4096];
        loop {
            let Some(Some(c)) = self.conns.get_mut(slot) else {
                return;
            };
            let room = (MAX_HEAD - c.buf.len()).min(chunk.len());
            match c.stream.read(&mut chunk[..room]) {
                Ok(0) => {
                    // The client gave up (or half-closed without a whole head).
                    self.close(slot);
                    return;
                }
                Ok(n) => {
                    c.buf.extend_from_slice(&chunk[..n]);
                    let searched = std::mem::replace(&mut c.pos, c.buf.len());
                    let (endpoint, peer) = (c.endpoint, c.peer);
                    let response = match parse(&c.buf, searched) {
                        Ok(Parsed::Partial) => continue,
                        Ok(Parsed::Complete(req, _)) => answer(&handler, &stats, endpoint, &req),
                        Err(e) => {
                            let why = if e == HeadError::TooLarge {
                                Failure::TooLarge
                            } else {
                                Failure::Malformed
                            };
                            self.failed(why, Instant::now(), || {
                                format!("http {endpoint}: bad request from {peer}: {e}")
                            });
                            Response::text(e.status(), format!("{e}\n")).bytes(false)
                        }
                    };
                    self.respond(slot, response);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let (endpoint, peer) = (c.endpoint, c.peer);
                    self.failed(Failure::Io, Instant::now(), || {
                        format!("http {endpoint}: reading from {peer}: {e}")
                    });
                    self.close(slot);
                    return;
                }
            }
        }
    }

    /// Starts writing `response` on a connection.
    fn respond(&mut self, slot: usize, response: Vec<u8>) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        c.buf = response;
        c.pos = 0;
        c.phase = Phase::Writing;
        c.deadline = Instant::now() + WRITE_DEADLINE;
        self.write(slot);
    }

    fn write(&mut self, slot: usize) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        while c.pos < c.buf.len() {
            // A stream that takes nothing and reports no error cannot take the rest:
            // a failure like any other.
            let written = match c.stream.write(&c.buf[c.pos..]) {
                Ok(0) => Err(io::Error::from(io::ErrorKind::WriteZero)),
                other => other,
            };
            match written {
                Ok(n) => c.pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let (endpoint, peer) = (c.endpoint, c.peer);
                    self.failed(Failure::Io, Instant::now(), || {
                        format!("http {endpoint}: writing to {peer}: {e}")
                    });
                    self.close(slot);
                    return;
                }
            }
        }
        // All written: say so (FIN), and wait for the client to close its side.
        let _ = c.stream.shutdown(Shutdown::Write);
        c.buf = Vec::new();
        c.phase = Phase::Lingering;
        c.deadline = Instant::now() + LINGER;
        self.drain(slot);
    }

    /// Reads and drops what a client sends after its answer, until it closes.
    fn drain(&mut self, slot: usize) {
        let mut chunk = [0u8; 4096];
        loop {
            let Some(Some(c)) = self.conns.get_mut(slot) else {
                return;
            };
            match c.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.close(slot);
    }

    /// Ends the connections past their deadline.
    fn expire(&mut self) {
        let now = Instant::now();
        for slot in 0..self.conns.len() {
            let Some(c) = self.conns[slot].as_mut() else {
                continue;
            };
            if c.deadline > now {
                continue;
            }
            let (endpoint, peer) = (c.endpoint, c.peer);
            match c.phase {
                Phase::Reading => {
                    let sent = c.buf.len();
                    self.failed(Failure::Timeout, now, || {
                        format!(
                            "http {endpoint}: closed the connection from {peer}: no whole request head within the {}s deadline ({sent} bytes)",
                            REQUEST_DEADLINE.as_secs()
                        )
                    });
                    if sent > 0 {
                        // It sent something: tell it why (what fits in its socket at
                        // once), then close as after any answer.
                        let r = Response::text(408, "no whole request head within the deadline\n");
                        self.respond(slot, r.bytes(false));
                        match self.conns[slot].as_mut() {
                            Some(c) if c.phase == Phase::Writing => {}
                            _ => continue,
                        }
                    }
                }
                Phase::Writing => {
                    let left = c.buf.len() - c.pos;
                    self.failed(Failure::WriteTimeout, now, || {
                        format!(
                            "http {endpoint}: closed the connection from {peer}: {left} bytes of the response not taken within the {}s deadline",
                            WRITE_DEADLINE.as_secs()
                        )
                    });
                }
                Phase::Lingering => {}
            }
            self.close(slot);
        }
    }
}

/// The handler's response, as bytes; a panic in it is a 500, not the end of the thread.
fn answer(handler: &Handler, stats: &Stats, endpoint: SocketAddr, req: &Request<'_>) -> Vec<u8> {
    match catch_unwind(AssertUnwindSafe(|| handler(endpoint, req))) {
        Ok(r) => r.bytes(req.head_only()),
        Err(_) => {
            stats.failures[Failure::Handler as usize].fetch_add(1, Ordering::Relaxed);
            log::error!("http {endpoint}: the handler of {} panicked", req.path);
            Response::text(500, "internal error\n").bytes(false)
        }
    }
}

/// `GET path` on `addr`: whether it answered 200 within `timeout`.
pub fn get_ok(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let Ok(mut c) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(timeout));
    let _ = c.set_write_timeout(Some(timeout));
    if write!(c, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match c.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    head[..n].starts_with(b"HTTP/1.1 200") || head[..n].starts_with(b"HTTP/1.0 200")
}

/// `[::]:port`: what an address-less `:port` stands for. Go, and so CoreDNS, listens on
/// every address of both families there; [`Endpoints::listen`] does too (IPv4 through
/// IPv4-mapped addresses), and on a host without IPv6 on every IPv4 address.
pub fn every_address(port: u16) -> SocketAddr {
    SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))
}

/// Where this host reaches an endpoint listening on `addr`: loopback for a wildcard
/// (IPv4's, which a dual-stack or IPv4-only wildcard both accept).
pub fn local_target(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}

/// A listening socket on `addr`, as [`Endpoints::listen`] binds it.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    bind_listener(addr)
}

/// A listening socket on `addr`; `[::]` takes both families (IPV6_V6ONLY off, whatever
/// the host's default), or IPv4 alone on a host without IPv6.
fn bind_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    if !(addr.is_ipv6() && addr.ip().is_unspecified()) {
        return std::net::TcpListener::bind(addr);
    }
    match dual_stack_listener(addr) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)) => {
            std::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], addr.port())))
        }
        other => other,
    }
}

fn dual_stack_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let check = |r: libc::c_int| if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) };
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe {
        OwnedFd::from_raw_fd(check(libc::socket(
            libc::AF_INET6,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ))?)
    };
    let raw = fd.as_raw_fd();
    for (level, opt, value) in [
        (libc::SOL_SOCKET, libc::SO_REUSEADDR, 1),
        (libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0),
    ] {
        let v: libc::c_int = value;
        // SAFETY: `v` lives across the call and its size is passed.
        check(unsafe {
            libc::setsockopt(
                raw,
                level,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
    }
    // SAFETY: a zeroed sockaddr_in6 is valid; family and port are set, the address is ::.
    let mut sin6: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sin6.sin6_port = addr.port().to_be();
    // SAFETY: `sin6` is a valid sockaddr_in6 of the length passed.
    check(unsafe {
        libc::bind(
            raw,
            (&sin6 as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    })?;
    // SAFETY: listen(2) on the socket just bound.
    check(unsafe { libc::listen(raw, BACKLOG) })?;
    Ok(std::net::TcpListener::from(fd))
}

/// Parses a CoreDNS-style listen address: `:8080`, `127.0.0.1:8181`, `[::1]:9153`,
/// `localhost:9153` (localhost means 127.0.0.1). A port alone means every address of
/// both families ([`every_address`]).
pub fn parse_listen(s: &str) -> Option<SocketAddr> {
    if let Some(port) = s.strip_prefix(':') {
        return Some(every_address(port.parse().ok()?));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        return Some(SocketAddr::from(([127, 0, 0, 1], port.parse().ok()?)));
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(raw).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        exchange(addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
    }

    fn server() -> (Endpoints, SocketAddr) {
        let handler: Handler = Arc::new(|_, r: &Request<'_>| match r.path {
            "/health" => Response::text(200, "OK"),
            "/big" => Response::text(200, vec![b'x'; 4 << 20]),
            "/panic" => panic!("handler panics"),
            _ => Response::text(404, "404 page not found\n"),
        });
        let s = Endpoints::start(handler, Arc::default()).unwrap();
        let addr = s.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        (s, addr)
    }

    #[test]
    fn serves_and_stops() {
        let (s, addr) = server();
        let r = get(addr, "/health?x=1");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nOK"), "{r}");
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
        let head = exchange(addr, b"HEAD /health HTTP/1.1\r\n\r\n");
        assert!(
            head.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n"),
            "{head}"
        );
        drop(s);
        assert!(TcpStream::connect(addr).is_err(), "listener closed on drop");
    }

    #[test]
    fn bare_lf_garbage_and_oversize_heads() {
        let (_s, addr) = server();
        assert!(exchange(addr, b"GET /health HTTP/1.1\nHost: x\n\n").starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(exchange(addr, b"\x16\x03\x01 not http\n\n").starts_with("HTTP/1.1 400 Bad Request\r\n"));
        assert!(exchange(addr, b"GET / HTTP/2.0\r\n\r\n").starts_with("HTTP/1.1 505 "));
        let mut big = b"GET /health HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 100, b'a');
        assert!(exchange(addr, &big).starts_with("HTTP/1.1 431 "));
        assert!(exchange(addr, b"GET /panic HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 500 "));
        // Still serving after all that.
        assert!(get(addr, "/health").starts_with("HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn a_large_response_is_written_whole_to_a_slow_reader() {
        let (_s, addr) = server();
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /big HTTP/1.1\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let mut out = Vec::new();
        c.read_to_end(&mut out).unwrap();
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(out.ends_with(&[b'x'; 1000]));
        let body = out.len() - out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() - 4;
        assert_eq!(body, 4 << 20);
    }

    #[test]
    fn a_full_budget_evicts_the_oldest_and_answers_the_newest() {
        let (s, addr) = server();
        let held: Vec<TcpStream> = (0..MAX_CONNECTIONS + 20)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        let t = Instant::now();
        assert!(get(addr, "/health").starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(t.elapsed() < Duration::from_secs(1));
        // The oldest were closed; the newest are still open.
        let open = |c: &TcpStream| {
            c.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            matches!(c.peek(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        };
        assert!(!open(&held[0]));
        assert!(open(&held[held.len() - 1]));
        assert!(s.stats().failures(Failure::Evicted) >= 21);
    }

    /// Old connections that never take their response (stalled `/metrics` readers)
    /// are closed before a probe accepted after them: age decides, not what a
    /// connection is doing.
    #[test]
    fn stalled_writers_are_evicted_before_a_newer_probe() {
        let handler: Handler = Arc::new(|_, r: &Request<'_>| match r.path {
            "/health" => Response::text(200, "OK"),
            _ => Response::text(200, vec![b'x'; 16 << 20]),
        });
        let s = Endpoints::with_budget(handler, Arc::default(), 4).unwrap();
        let addr = s.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        // Four connections whose 16 MiB responses stay unread: the budget is full of
        // writers.
        let writers: Vec<TcpStream> = (0..4)
            .map(|_| {
                let mut c = TcpStream::connect(addr).unwrap();
                c.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
                c
            })
            .collect();
        // Each step waits for the endpoint thread to have taken the connection (not for
        // a fixed time: on a loaded host the thread may be late, and the order matters).
        let stats = s.stats();
        let taken = |n: u64| {
            let end = std::time::Instant::now() + Duration::from_secs(10);
            while stats.accepted.load(Ordering::Relaxed) < n && std::time::Instant::now() < end {
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(stats.accepted.load(Ordering::Relaxed), n, "connections accepted");
        };
        taken(4);
        // The four have sent their requests and are writing.
        std::thread::sleep(Duration::from_millis(200));
        // A probe connects (a writer makes room), then one more connection comes before
        // the probe has sent its request.
        let mut probe = TcpStream::connect(addr).unwrap();
        taken(5);
        let _next = TcpStream::connect(addr).unwrap();
        taken(6);
        probe.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let answered = probe.write_all(b"GET /health HTTP/1.1\r\n\r\n").ok().and_then(|_| {
            let mut out = String::new();
            probe.read_to_string(&mut out).ok().map(|_| out)
        });
        assert!(
            answered
                .as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 200 OK\r\n")),
            "the probe was closed: {answered:?}"
        );
        assert_eq!(s.stats().failures(Failure::Evicted), 2, "two writers made room");
        drop(writers);
    }

    #[test]
    fn closing_an_address_stops_listening_there_only_and_frees_it_at_once() {
        let (s, a) = server();
        let other: SocketAddr = "127.0.0.2:0".parse().unwrap();
        let b = s.listen(other).unwrap();
        assert!(get(b, "/health").starts_with("HTTP/1.1 200 OK\r\n"));
        s.close(other);
        assert!(TcpStream::connect(b).is_err());
        assert!(get(a, "/health").starts_with("HTTP/1.1 200 OK\r\n"));
        // Closed when close returns: a reload may bind it again straight away.
        assert_eq!(s.listen(b).unwrap(), b);
        assert!(get(b, "/health").starts_with("HTTP/1.1 200 OK\r\n"));
    }

    /// An address-less `:PORT` listens on both families, as CoreDNS's Go listener
    /// does: an IPv6-only cluster's probes reach it (and so do IPv4 ones).
    #[test]
    fn an_address_less_port_listens_on_both_families() {
        let (s, _) = server();
        let bound = s.listen(every_address(0)).unwrap();
        assert!(bound.ip().is_unspecified(), "{bound}");
        // On a host without IPv6 the listener falls back to IPv4 alone.
        let families: &[&str] = if bound.is_ipv6() {
            &["127.0.0.1", "::1"]
        } else {
            &["127.0.0.1"]
        };
        for ip in families {
            let to = SocketAddr::new(ip.parse().unwrap(), bound.port());
            assert!(get(to, "/health").starts_with("HTTP/1.1 200 OK\r\n"), "{to}");
        }
        assert_eq!(local_target(bound).to_string(), format!("127.0.0.1:{}", bound.port()));
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen(":8080"), Some("[::]:8080".parse().unwrap()));
        assert_eq!(parse_listen("0.0.0.0:8080"), Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(parse_listen("localhost:9153"), Some("127.0.0.1:9153".parse().unwrap()));
        assert_eq!(parse_listen("[::1]:8181"), Some("[::1]:8181".parse().unwrap()));
        assert_eq!(parse_listen("nonsense"), None);
    }
}
