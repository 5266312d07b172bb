//! A worker: one thread, one mio `Poll`, its own SO_REUSEPORT sockets, its own TCP
//! connections and its own table of queries waiting on an upstream. It never waits on
//! another thread: configuration comes from an `ArcSwap` load per batch, commands come
//! through a channel it drains when its `Waker` fires.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::Receiver;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};

use super::build::Server;
use super::handler::{self, Handled, Refresh, Suspended};
use super::socket::{self, BATCH, UdpBatch};
use super::upstream::{ExchangeOutcome, Upstreams};
use crate::chain::{UpstreamReply, WorkerCtx};
use crate::dns::{Header, Rcode, Response, Transport};
use crate::plugin::timeouts::Timeouts;

/// Resource limits of a worker's TCP service (RFC 7766 section 6.2 asks for bounded
/// resources; the timeouts come per listener from the `timeouts` directive).
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    /// Connections per worker; one more is accepted and closed at once.
    pub max_connections: usize,
    /// Unsent reply bytes at which the worker stops reading more queries from a client.
    pub max_pending_output: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 1024,
            max_pending_output: 256 * 1024,
        }
    }
}

/// Sockets one worker serves: a UDP socket and a TCP listener per address.
#[derive(Default)]
pub struct WorkerSockets {
    pub udp: Vec<(SocketAddr, std::net::UdpSocket)>,
    pub tcp: Vec<(SocketAddr, std::net::TcpListener)>,
}

/// What the control thread tells a worker.
pub enum Command {
    /// Start serving these sockets.
    Add(WorkerSockets),
    /// Stop serving these addresses (answer what is queued on them first).
    Remove(Vec<SocketAddr>),
    /// Stop accepting queries, finish what is in flight (up to the deadline), exit.
    Stop { drain: Duration },
}

/// Counters a worker alone writes and anyone may read.
#[derive(Default)]
pub struct WorkerStats {
    pub udp_queries: AtomicU64,
    pub tcp_queries: AtomicU64,
    pub dropped_replies: AtomicU64,
    pub tcp_connections: AtomicU64,
    pub tcp_rejected: AtomicU64,
    pub upstream_pending: AtomicU64,
    /// Milliseconds since [`epoch`] when the worker last went round its loop or
    /// finished a batch of datagrams (for `/health` and the systemd watchdog: a worker
    /// stuck in one query stops it; one busy with a flood does not).
    pub heartbeat: AtomicU64,
}

/// What the workers count of their sockets, by worker, as `clusterdns_*` metrics (CoreDNS
/// has no equivalent: Go's runtime hides them).
pub fn metrics(workers: &[Arc<WorkerStats>], out: &mut crate::metrics::Families) {
    for (i, w) in workers.iter().enumerate() {
        let id = i.to_string();
        let labels = [("worker", id.as_str())];
        let counters: [(&str, &'static str, &AtomicU64); 4] = [
            (
                "clusterdns_tcp_connections_total",
                "TCP connections accepted, by worker.",
                &w.tcp_connections,
            ),
            (
                "clusterdns_tcp_rejected_total",
                "TCP connections closed at once because the worker had its maximum open, by worker.",
                &w.tcp_rejected,
            ),
            (
                "clusterdns_udp_replies_dropped_total",
                "UDP replies the kernel would not send (socket buffer full), by worker.",
                &w.dropped_replies,
            ),
            (
                "clusterdns_udp_queries_total",
                "UDP datagrams received, by worker (how evenly SO_REUSEPORT spreads the load).",
                &w.udp_queries,
            ),
        ];
        for (name, help, c) in counters {
            out.counter(name, help, &labels, c.load(Ordering::Relaxed) as f64);
        }
        out.gauge(
            "clusterdns_upstream_pending",
            "Upstream exchanges in flight (forward, cache refreshes, ExternalName chases), by worker.",
            &labels,
            w.upstream_pending.load(Ordering::Relaxed) as f64,
        );
    }
}

/// How long a worker may go without coming round its loop (or finishing a batch of
/// datagrams) before it counts as stuck: `/health` answers 503 and the systemd watchdog
/// is not pinged. An idle worker comes round twice a second; a busy one after each
/// batch, which no query should make last more than milliseconds. 3 s is six idle turns: no scheduling hiccup reaches
/// it, and a client (5 s timeout by default) has not yet given up on the queries queued
/// behind the stuck one.
pub const STALL_BOUND: Duration = Duration::from_secs(3);

/// The workers that have not come round their loop within `bound`: (index, time since
/// their last turn).
pub fn stalled(workers: &[Arc<WorkerStats>], bound: Duration) -> Vec<(usize, Duration)> {
    let now = millis_since_epoch();
    workers
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let age = Duration::from_millis(now.saturating_sub(w.heartbeat.load(Ordering::Relaxed)));
            (age >= bound).then_some((i, age))
        })
        .collect()
}

/// The reference point of [`WorkerStats::heartbeat`].
pub fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`epoch`].
pub fn millis_since_epoch() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// How much already-sent output a connection's buffer keeps before dropping it.
const SENT_PREFIX_KEPT: usize = 64 * 1024;

/// Whether `buf` starts with a whole length-prefixed message.
fn has_frame(buf: &[u8]) -> bool {
    buf.len() >= 2 && buf.len() >= 2 + usize::from(u16::from_be_bytes([buf[0], buf[1]]))
}

const KIND_SHIFT: u32 = 32;
const WAKER: Token = Token(0);
const UDP: usize = 1;
const TCP_LISTEN: usize = 2;
const CONN: usize = 3;
const UPSTREAM: usize = 4;

fn token(kind: usize, idx: usize) -> Token {
    Token((kind << KIND_SHIFT) | idx)
}

fn split(t: Token) -> (usize, usize) {
    (t.0 >> KIND_SHIFT, t.0 & ((1 << KIND_SHIFT) - 1))
}

struct UdpSock {
    addr: SocketAddr,
    sock: UdpSocket,
    /// Index of the listener for `addr` in the current server generation.
    listener: Option<usize>,
}

struct TcpListen {
    addr: SocketAddr,
    sock: TcpListener,
    listener: Option<usize>,
}

struct Conn {
    stream: TcpStream,
    timeouts: Timeouts,
    peer: SocketAddr,
    local: SocketAddr,
    /// Index into `tcp_listeners` of the listener that accepted it.
    from: usize,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    last_active: Instant,
    /// When the first byte of a still incomplete message arrived.
    partial_since: Option<Instant>,
    /// When output started waiting on the client.
    blocked_since: Option<Instant>,
    inflight: u32,
    peer_closed: bool,
    writable_registered: bool,
    /// Reading stopped because too many replies wait on the client.
    read_paused: bool,
}

/// Where a suspended query's reply goes.
#[derive(Clone, Copy)]
enum Client {
    Udp {
        sock: usize,
        from: SocketAddr,
        to: Option<IpAddr>,
    },
    Tcp {
        conn: usize,
    },
    /// A background refresh: nobody to answer.
    Nobody,
}

/// A query waiting on an upstream: what resumes it and where its reply goes.
struct Waiting {
    suspended: Suspended,
    query: Vec<u8>,
    client: Client,
    transport: Transport,
    peer: SocketAddr,
    local: SocketAddr,
    /// When the client's query arrived (durations count from there).
    received: Instant,
}

/// One worker thread's state.
pub struct Worker {
    id: usize,
    poll: Poll,
    shared: Arc<ArcSwap<Server>>,
    generation: *const Server,
    commands: Receiver<Command>,
    udp: Vec<UdpSock>,
    tcp_listeners: Vec<TcpListen>,
    conns: Vec<Option<Conn>>,
    free_conns: Vec<usize>,
    upstreams: Upstreams<Waiting>,
    batch: Box<UdpBatch>,
    replies: Vec<Response>,
    resp: Response,
    ctx: WorkerCtx,
    limits: TcpLimits,
    stats: Arc<WorkerStats>,
    stopping: Option<Instant>,
    last_sweep: Instant,
    /// Where upstream replies are read (65535 bytes, kept).
    reply_buf: Vec<u8>,
    /// Refreshes the current UDP batch asked for (kept for its capacity).
    refreshes: Vec<(Refresh, Vec<u8>, SocketAddr, SocketAddr)>,
    /// Queries of the current UDP batch that wait on an upstream (kept for its capacity).
    to_suspend: Vec<(Suspended, Vec<u8>, Client, SocketAddr, SocketAddr)>,
    /// UDP sockets left with datagrams queued after their turn ([`UDP_BATCHES_PER_TURN`]):
    /// edge-triggered polling will not report them again, so the next turn serves them
    /// without waiting.
    udp_backlog: Vec<usize>,
}

/// Batches of datagrams ([`BATCH`] each) one UDP socket is served in a row before the
/// worker goes back to its loop: under a flood, TCP connections, upstream replies,
/// timers, commands (stop, reload) and the worker's other sockets still get their turn
/// every 512 datagrams, a fraction of a millisecond of work.
const UDP_BATCHES_PER_TURN: usize = 16;

/// How long closing a UDP socket (a reload that drops an address, or a stop) keeps
/// answering what is queued on it: its receive queue empties well within this at any
/// rate the worker can answer, and a flood that never lets it empty does not hold the
/// worker.
const UDP_CLOSE_DRAIN: Duration = Duration::from_millis(250);

// SAFETY: `generation` is only compared, never dereferenced; it identifies which
// server generation the listener indices were computed for.
unsafe impl Send for Worker {}

impl Worker {
    /// Creates a worker and the waker the control thread uses to reach it.
    pub fn new(
        id: usize,
        shared: Arc<ArcSwap<Server>>,
        commands: Receiver<Command>,
        limits: TcpLimits,
        stats: Arc<WorkerStats>,
    ) -> io::Result<(Worker, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let w = Worker {
            id,
            poll,
            shared,
            generation: std::ptr::null(),
            commands,
            udp: Vec::new(),
            tcp_listeners: Vec::new(),
            conns: Vec::new(),
            free_conns: Vec::new(),
            upstreams: Upstreams::new(UPSTREAM << KIND_SHIFT),
            batch: UdpBatch::new(),
            replies: (0..BATCH).map(|_| Response::new()).collect(),
            resp: Response::new(),
            ctx: WorkerCtx::new(id),
            limits,
            stats,
            stopping: None,
            last_sweep: Instant::now(),
            to_suspend: Vec::new(),
            reply_buf: vec![0u8; 65535],
            refreshes: Vec::new(),
            udp_backlog: Vec::new(),
        };
        Ok((w, waker))
    }

    /// Serves until told to stop.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("worker {}: poll failed: {e}", self.id);
                return;
            }
            self.ctx.now = Instant::now();
            self.stats.heartbeat.store(millis_since_epoch(), Ordering::Relaxed);
            // Sockets whose turn ended with datagrams still queued go first (before a
            // command can renumber the sockets).
            let mut carried = std::mem::take(&mut self.udp_backlog);
            for idx in carried.drain(..) {
                self.serve_udp(idx);
            }
            if self.udp_backlog.is_empty() {
                // Keep the allocation for the next turn.
                self.udp_backlog = carried;
            }
            for ev in events.iter() {
                let (kind, idx) = split(ev.token());
                match kind {
                    0 => self.commands(),
                    UDP => self.serve_udp(idx),
                    TCP_LISTEN => self.accept(idx),
                    CONN => self.conn_ready(idx, ev.is_readable() || ev.is_read_closed(), ev.is_writable()),
                    UPSTREAM => self.upstream_ready(idx),
                    _ => {}
                }
            }
            self.expire();
            if let Some(deadline) = self.stopping {
                let busy = self.upstreams.live() > 0
                    || self
                        .conns
                        .iter()
                        .flatten()
                        .any(|c| c.wpos < c.wbuf.len() || c.inflight > 0);
                if !busy || Instant::now() >= deadline {
                    return;
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        if !self.udp_backlog.is_empty() {
            return Some(Duration::ZERO);
        }
        // Even an idle worker comes round twice a second, so its heartbeat shows it alive.
        let mut t: Option<Duration> = Some(Duration::from_millis(500));
        if let Some(d) = self.upstreams.next_deadline() {
            t = t.map(|t| t.min(d.saturating_duration_since(now)));
        }
        if self.conns.iter().any(Option::is_some) || self.stopping.is_some() {
            let sweep = Duration::from_millis(100);
            t = Some(t.map_or(sweep, |t| t.min(sweep)));
        }
        t
    }

    /// Recomputes socket → listener indices when the server generation changed.
    fn refresh(&mut self) -> arc_swap::Guard<Arc<Server>> {
        let server = self.shared.load();
        let ptr = Arc::as_ptr(&*server);
        if ptr != self.generation {
            self.generation = ptr;
            let find = |addr: SocketAddr| server.listeners.iter().position(|l| l.addr == addr);
            for u in &mut self.udp {
                u.listener = find(u.addr);
            }
            for t in &mut self.tcp_listeners {
                t.listener = find(t.addr);
            }
        }
        server
    }

    fn commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Add(sockets) => self.add(sockets),
                Command::Remove(addrs) => self.remove(&addrs),
                Command::Stop { drain } => {
                    let addrs: Vec<SocketAddr> = self
                        .udp
                        .iter()
                        .map(|u| u.addr)
                        .chain(self.tcp_listeners.iter().map(|t| t.addr))
                        .collect();
                    self.remove(&addrs);
                    self.stopping = Some(Instant::now() + drain);
                }
            }
        }
    }

    fn add(&mut self, sockets: WorkerSockets) {
        let (first_udp, first_tcp) = (self.udp.len(), self.tcp_listeners.len());
        for (addr, s) in sockets.udp {
            let mut sock = UdpSocket::from_std(s);
            let idx = self.udp.len();
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut sock, token(UDP, idx), Interest::READABLE)
            {
                log::error!("worker {}: cannot watch udp {addr}: {e}", self.id);
                continue;
            }
            self.udp.push(UdpSock {
                addr,
                sock,
                listener: None,
            });
        }
        for (addr, s) in sockets.tcp {
            let mut sock = TcpListener::from_std(s);
            let idx = self.tcp_listeners.len();
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut sock, token(TCP_LISTEN, idx), Interest::READABLE)
            {
                log::error!("worker {}: cannot watch tcp {addr}: {e}", self.id);
                continue;
            }
            self.tcp_listeners.push(TcpListen {
                addr,
                sock,
                listener: None,
            });
        }
        // Map every new socket to its listener before serving anything on it.
        self.generation = std::ptr::null();
        drop(self.refresh());
        // Queries and connections may have queued before registration: edge-triggered
        // polling would not report them.
        for idx in first_udp..self.udp.len() {
            self.serve_udp(idx);
        }
        for idx in first_tcp..self.tcp_listeners.len() {
            self.accept(idx);
        }
    }

    fn remove(&mut self, addrs: &[SocketAddr]) {
        // Answer what already waits in the sockets' queues, then close them.
        let until = Instant::now() + UDP_CLOSE_DRAIN;
        for i in 0..self.udp.len() {
            if addrs.contains(&self.udp[i].addr) {
                while !self.udp_readable(i) && Instant::now() < until {}
            }
        }
        // Indices are about to shift: every survivor gets a turn next time round
        // (one empty read at worst).
        self.udp_backlog.clear();
        let registry = self.poll.registry();
        self.udp.retain_mut(|u| {
            let keep = !addrs.contains(&u.addr);
            if !keep {
                let _ = registry.deregister(&mut u.sock);
            }
            keep
        });
        self.tcp_listeners.retain_mut(|t| {
            let keep = !addrs.contains(&t.addr);
            if !keep {
                let _ = registry.deregister(&mut t.sock);
            }
            keep
        });
        // Indices shifted: re-register the survivors under their new tokens.
        for (i, u) in self.udp.iter_mut().enumerate() {
            let _ = registry.reregister(&mut u.sock, token(UDP, i), Interest::READABLE);
            self.udp_backlog.push(i);
        }
        for (i, t) in self.tcp_listeners.iter_mut().enumerate() {
            let _ = registry.reregister(&mut t.sock, token(TCP_LISTEN, i), Interest::READABLE);
        }
        // Connections keep running; their listener index is only used for routing,
        // so point removed ones at nothing (their queries are refused).
        let alive: Vec<SocketAddr> = self.tcp_listeners.iter().map(|t| t.addr).collect();
        for c in self.conns.iter_mut().flatten() {
            c.from = alive.iter().position(|a| *a == c.local).unwrap_or(usize::MAX);
        }
        self.generation = std::ptr::null();
        drop(self.refresh());
    }

    /// Serves UDP socket `idx` for one turn; if datagrams are left queued, it goes on
    /// the backlog for the next turn.
    fn serve_udp(&mut self, idx: usize) {
        if !self.udp_readable(idx) && !self.udp_backlog.contains(&idx) {
            self.udp_backlog.push(idx);
        }
    }

    /// Answers up to [`UDP_BATCHES_PER_TURN`] batches from UDP socket `idx`; whether
    /// its queue ran dry (false: more may wait).
    fn udp_readable(&mut self, idx: usize) -> bool {
        let Some(u) = self.udp.get(idx) else { return true };
        let fd = u.sock.as_raw_fd();
        let bound = u.addr;
        for _ in 0..UDP_BATCHES_PER_TURN {
            let n = match self.batch.recv(fd) {
                Ok(0) => return true,
                Ok(n) => n,
                Err(e) => {
                    log::warn!("worker {}: udp receive on {bound}: {e}", self.id);
                    return true;
                }
            };
            self.stats.udp_queries.fetch_add(n as u64, Ordering::Relaxed);
            let server = self.refresh();
            let listener = self.udp[idx].listener.map(|l| &server.listeners[l]);
            let mut dest: [Option<(SocketAddr, Option<IpAddr>)>; BATCH] = [None; BATCH];
            for (i, slot) in dest.iter_mut().enumerate().take(n) {
                let Some(dg) = self.batch.datagram(i) else {
                    continue;
                };
                let local = SocketAddr::new(dg.to.unwrap_or(bound.ip()), bound.port());
                let resp = &mut self.replies[i];
                let Some(listener) = listener else { continue };
                if dg.truncated {
                    if Header::of(dg.data).is_some_and(|h| !h.qr()) {
                        resp.start_reject(dg.data, Rcode::FORMERR, None);
                        resp.finish();
                        *slot = Some((dg.from, dg.to));
                    }
                    continue;
                }
                match handler::handle(listener, dg.data, Transport::Udp, dg.from, local, &mut self.ctx, resp) {
                    Handled::Reply(refresh) => {
                        *slot = Some((dg.from, dg.to));
                        if let Some(job) = refresh {
                            self.refreshes.push((job, dg.data.to_vec(), dg.from, local));
                        }
                    }
                    Handled::Drop => {}
                    Handled::Upstream(s) => {
                        let query = dg.data.to_vec();
                        let client = Client::Udp {
                            sock: idx,
                            from: dg.from,
                            to: dg.to,
                        };
                        self.to_suspend.push((s, query, client, dg.from, local));
                    }
                }
            }
            drop(server);
            for (i, d) in dest.iter().enumerate().take(n) {
                if let Some((to, from)) = d {
                    let bytes = self.replies[i].bytes();
                    let _ = self.batch.queue(fd, bytes, *to, *from);
                }
            }
            if let Ok(dropped) = self.batch.flush(fd) {
                if dropped > 0 {
                    self.stats.dropped_replies.fetch_add(dropped as u64, Ordering::Relaxed);
                }
            }
            let mut list = std::mem::take(&mut self.to_suspend);
            for (s, query, client, peer, local) in list.drain(..) {
                self.suspend(Waiting {
                    suspended: s,
                    query,
                    client,
                    transport: Transport::Udp,
                    peer,
                    local,
                    received: self.ctx.now,
                });
            }
            self.to_suspend = list;
            let mut jobs = std::mem::take(&mut self.refreshes);
            for (job, query, peer, local) in jobs.drain(..) {
                self.run_refresh(job, &query, peer, local);
            }
            self.refreshes = jobs;
            // Each batch done shows the worker alive, also within a long turn.
            self.stats.heartbeat.store(millis_since_epoch(), Ordering::Relaxed);
            if n < BATCH {
                return true;
            }
        }
        false
    }

    /// Sends a suspended query's message upstream and remembers where the reply goes.
    fn suspend(&mut self, mut w: Waiting) {
        if let Client::Tcp { conn } = w.client {
            if let Some(Some(c)) = self.conns.get_mut(conn) {
                c.inflight += 1;
            }
        }
        let request = w.suspended.request;
        let mut msg = std::mem::take(&mut w.suspended.message);
        let started = self.upstreams.start(self.poll.registry(), &request, &mut msg, w);
        self.stats
            .upstream_pending
            .store(self.upstreams.live() as u64, Ordering::Relaxed);
        if let Err((w, kind)) = started {
            // Resume at once with the failure; the plugin decides (another upstream,
            // SERVFAIL).
            self.resumed(w, UpstreamReply::Failed(kind));
        }
    }

    fn upstream_ready(&mut self, slot: usize) {
        let mut buf = std::mem::take(&mut self.reply_buf);
        if let Some((waiters, outcome)) = self.upstreams.ready(self.poll.registry(), slot, &mut buf) {
            self.stats
                .upstream_pending
                .store(self.upstreams.live() as u64, Ordering::Relaxed);
            for w in waiters {
                let reply = match outcome {
                    ExchangeOutcome::Reply(n) => UpstreamReply::Message(&buf[..n]),
                    ExchangeOutcome::Timeout => UpstreamReply::Timeout,
                    ExchangeOutcome::Failed(k) => UpstreamReply::Failed(k),
                };
                self.resumed(w, reply);
            }
        }
        self.reply_buf = buf;
    }

    /// A waiting query's exchange ended: forget it in its TCP connection's count, then
    /// resume it.
    fn resumed(&mut self, w: Waiting, reply: UpstreamReply<'_>) {
        if let Client::Tcp { conn } = w.client {
            if let Some(Some(c)) = self.conns.get_mut(conn) {
                c.inflight = c.inflight.saturating_sub(1);
            }
        }
        self.resume(w, reply);
    }

    /// Continues a suspended query and sends its reply (or suspends it again). Time is
    /// the query's arrival, so durations include the wait.
    fn resume(&mut self, w: Waiting, reply: UpstreamReply<'_>) {
        self.ctx.now = w.received;
        let handled = handler::resume(
            &w.suspended,
            &w.query,
            w.transport,
            w.peer,
            w.local,
            reply,
            &mut self.ctx,
            &mut self.resp,
        );
        match handled {
            Handled::Reply(refresh) => {
                self.send_to_client(w.client);
                if let Some(job) = refresh {
                    self.run_refresh(job, &w.query, w.peer, w.local);
                }
            }
            Handled::Drop => {}
            Handled::Upstream(next) => self.suspend(Waiting { suspended: next, ..w }),
        }
    }

    /// Sends the reply in `self.resp` to a client whose query was suspended.
    fn send_to_client(&mut self, client: Client) {
        match client {
            Client::Udp { sock, from, to } => {
                let Some(u) = self.udp.get(sock) else { return };
                let fd = u.sock.as_raw_fd();
                let _ = self.batch.queue(fd, self.resp.bytes(), from, to);
                if let Ok(d) = self.batch.flush(fd) {
                    self.stats.dropped_replies.fetch_add(d as u64, Ordering::Relaxed);
                }
            }
            Client::Nobody => {}
            Client::Tcp { conn } => {
                if let Some(Some(c)) = self.conns.get_mut(conn) {
                    frame_into(&mut c.wbuf, self.resp.bytes());
                }
                // A connection closed meanwhile has slot usize::MAX: nothing to do.
                self.flush_conn(conn);
            }
        }
    }

    /// Times out upstream exchanges, and (every 100 ms) closes idle or stuck connections.
    fn expire(&mut self) {
        let now = Instant::now();
        for waiters in self.upstreams.expire(self.poll.registry(), now) {
            for w in waiters {
                self.resumed(w, UpstreamReply::Timeout);
            }
        }
        self.stats
            .upstream_pending
            .store(self.upstreams.live() as u64, Ordering::Relaxed);
        if now.duration_since(self.last_sweep) < Duration::from_millis(100) {
            return;
        }
        self.last_sweep = now;
        for i in 0..self.conns.len() {
            let Some(c) = &self.conns[i] else { continue };
            let t = c.timeouts;
            let idle = c.inflight == 0 && c.wpos >= c.wbuf.len() && now.duration_since(c.last_active) >= t.idle;
            // Not while reading is paused: then the server, not the client, is waiting.
            let slow_read = !c.read_paused && c.partial_since.is_some_and(|s| now.duration_since(s) >= t.read);
            let slow_write = c.blocked_since.is_some_and(|s| now.duration_since(s) >= t.write);
            if idle || slow_read || slow_write {
                self.close_conn(i);
            }
        }
    }

    fn accept(&mut self, idx: usize) {
        loop {
            let Some(l) = self.tcp_listeners.get(idx) else {
                return;
            };
            let (stream, peer) = match l.sock.accept() {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and friends: log and stop for now; the next event retries.
                    log::warn!("worker {}: accept on {}: {e}", self.id, l.addr);
                    return;
                }
            };
            let live = self.conns.len() - self.free_conns.len();
            if live >= self.limits.max_connections || self.stopping.is_some() {
                self.stats.tcp_rejected.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            }
            let local = stream.local_addr().unwrap_or(l.addr);
            let timeouts = {
                let server = self.refresh();
                let l = &self.tcp_listeners[idx];
                l.listener
                    .map_or_else(Timeouts::default, |i| server.listeners[i].timeouts)
            };
            let slot = self.free_conns.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            let mut stream = stream;
            if self
                .poll
                .registry()
                .register(&mut stream, token(CONN, slot), Interest::READABLE)
                .is_err()
            {
                self.free_conns.push(slot);
                continue;
            }
            self.stats.tcp_connections.fetch_add(1, Ordering::Relaxed);
            self.conns[slot] = Some(Conn {
                stream,
                timeouts,
                peer,
                local,
                from: idx,
                rbuf: Vec::with_capacity(512),
                wbuf: Vec::new(),
                wpos: 0,
                last_active: Instant::now(),
                partial_since: None,
                blocked_since: None,
                inflight: 0,
                peer_closed: false,
                writable_registered: false,
                read_paused: false,
            });
        }
    }

    fn conn_ready(&mut self, slot: usize, readable: bool, writable: bool) {
        let paused = self
            .conns
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.read_paused);
        if writable && !self.flush_conn(slot) {
            return;
        }
        if readable || paused {
            self.read_conn(slot);
        }
    }

    /// Reads what the client sent and answers every complete message (pipelining:
    /// replies go out as each completes, RFC 7766 section 6.2.1.1). A client that does
    /// not read its answers is not read from either, until its output drains.
    fn read_conn(&mut self, slot: usize) {
        let mut chunk = [0u8; 4096];
        loop {
            let Some(Some(c)) = self.conns.get_mut(slot) else {
                return;
            };
            if c.wbuf.len() - c.wpos >= self.limits.max_pending_output {
                c.read_paused = true;
                if !self.flush_conn(slot) {
                    return;
                }
                match self.conns.get(slot) {
                    // Drained at once: keep reading.
                    Some(Some(c)) if c.wpos >= c.wbuf.len() => continue,
                    // Wait for the writable event; it resumes reading.
                    _ => return,
                }
            }
            if c.read_paused {
                c.read_paused = false;
                // The time the server did not read does not count against the client.
                if c.partial_since.is_some() {
                    c.partial_since = Some(Instant::now());
                }
            }
            // Messages left unanswered when output backed up come before new input.
            if has_frame(&c.rbuf) {
                self.answer_frames(slot);
                continue;
            }
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    c.peer_closed = true;
                    break;
                }
                Ok(n) => {
                    c.rbuf.extend_from_slice(&chunk[..n]);
                    c.last_active = Instant::now();
                    self.answer_frames(slot);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close_conn(slot);
                    return;
                }
            }
        }
        self.flush_conn(slot);
    }

    /// Handles every complete length-prefixed message in a connection's read buffer.
    fn answer_frames(&mut self, slot: usize) {
        let server = self.refresh();
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        let listener = self
            .tcp_listeners
            .get(c.from)
            .and_then(|t| t.listener)
            .map(|l| &server.listeners[l]);
        let mut at = 0;
        let mut suspended = Vec::new();
        let mut refreshes = Vec::new();
        // Stop once the answers waiting to be sent reach the limit: what is left stays
        // in the read buffer until the client reads (bounding both memory and the work
        // one event does for one client).
        let max_output = self.limits.max_pending_output;
        while c.rbuf.len() >= at + 2 && c.wbuf.len() - c.wpos < max_output {
            let len = u16::from_be_bytes([c.rbuf[at], c.rbuf[at + 1]]) as usize;
            if c.rbuf.len() < at + 2 + len {
                break;
            }
            let msg = &c.rbuf[at + 2..at + 2 + len];
            at += 2 + len;
            self.stats.tcp_queries.fetch_add(1, Ordering::Relaxed);
            let Some(listener) = listener else { continue };
            match handler::handle(
                listener,
                msg,
                Transport::Tcp,
                c.peer,
                c.local,
                &mut self.ctx,
                &mut self.resp,
            ) {
                Handled::Reply(refresh) => {
                    frame_into(&mut c.wbuf, self.resp.bytes());
                    if let Some(job) = refresh {
                        refreshes.push((job, msg.to_vec()));
                    }
                }
                Handled::Drop => {}
                Handled::Upstream(s) => suspended.push((s, msg.to_vec())),
            }
        }
        c.rbuf.drain(..at);
        c.partial_since = if c.rbuf.is_empty() {
            None
        } else {
            c.partial_since.or(Some(Instant::now()))
        };
        let (peer, local) = (c.peer, c.local);
        drop(server);
        for (s, query) in suspended {
            self.suspend(Waiting {
                suspended: s,
                query,
                client: Client::Tcp { conn: slot },
                transport: Transport::Tcp,
                peer,
                local,
                received: self.ctx.now,
            });
        }
        for (job, query) in refreshes {
            self.run_refresh(job, &query, peer, local);
        }
    }

    /// Runs a plugin's background refresh of an answer it gave from stored data. It
    /// runs as if asked over TCP, whatever the client used, so that the reply is never
    /// truncated to a small UDP size (CoreDNS refreshes over TCP too).
    fn run_refresh(&mut self, job: Refresh, query: &[u8], peer: SocketAddr, local: SocketAddr) {
        let transport = Transport::Tcp;
        match handler::refresh(job, query, transport, peer, local, &mut self.ctx, &mut self.resp) {
            Handled::Upstream(s) => self.suspend(Waiting {
                suspended: s,
                query: query.to_vec(),
                client: Client::Nobody,
                transport,
                peer,
                local,
                received: self.ctx.now,
            }),
            Handled::Reply(_) | Handled::Drop => {}
        }
    }

    /// Writes what a connection has buffered; closes it when the client is gone and
    /// nothing is left to do. Returns whether the connection is still open.
    fn flush_conn(&mut self, slot: usize) -> bool {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return false;
        };
        while c.wpos < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => break,
                Ok(n) => {
                    c.wpos += n;
                    c.last_active = Instant::now();
                    c.blocked_since = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close_conn(slot);
                    return false;
                }
            }
        }
        let pending_output = c.wpos < c.wbuf.len();
        if pending_output {
            c.blocked_since.get_or_insert_with(Instant::now);
            // Forget what was sent, so that a client reading steadily behind a steady
            // stream of answers does not grow the buffer without end.
            if c.wpos >= SENT_PREFIX_KEPT {
                c.wbuf.drain(..c.wpos);
                c.wpos = 0;
            }
        } else {
            c.wbuf.clear();
            c.wpos = 0;
        }
        if pending_output != c.writable_registered {
            let interest = if pending_output {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let _ = self
                .poll
                .registry()
                .reregister(&mut c.stream, token(CONN, slot), interest);
            c.writable_registered = pending_output;
        }
        if c.peer_closed && !pending_output && c.inflight == 0 {
            self.close_conn(slot);
            return false;
        }
        true
    }

    fn close_conn(&mut self, slot: usize) {
        if let Some(Some(mut c)) = self.conns.get_mut(slot).map(Option::take) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.free_conns.push(slot);
            // Replies still owed to this connection are dropped when they arrive.
            self.upstreams.for_each_waiter(|w| {
                if matches!(w.client, Client::Tcp { conn } if conn == slot) {
                    w.client = Client::Tcp { conn: usize::MAX };
                }
            });
        }
    }
}

/// Appends a message with its 2-byte length prefix (RFC 1035 4.2.2).
fn frame_into(buf: &mut Vec<u8>, msg: &[u8]) {
    buf.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    buf.extend_from_slice(msg);
}

/// Binds one UDP socket and one TCP listener per worker for `addr`.
pub fn bind_all(addr: SocketAddr, workers: usize) -> io::Result<Vec<(std::net::UdpSocket, std::net::TcpListener)>> {
    let mut out = Vec::with_capacity(workers);
    let mut addr = addr;
    for _ in 0..workers {
        let udp = socket::udp_listener(addr)?;
        // With port 0 the first socket picks the port; the rest join it.
        if addr.port() == 0 {
            addr = socket::local_addr(udp.as_raw_fd())?;
        }
        let tcp = socket::tcp_listener(addr)?;
        out.push((udp, tcp));
    }
    Ok(out)
}
