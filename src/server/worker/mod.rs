//! A worker: one thread, one mio `Poll`, its own SO_REUSEPORT sockets, its own TCP
//! connections and its own table of queries waiting on an upstream. It never waits on
//! another thread: configuration comes from an `ArcSwap` load per batch, commands come
//! through a channel it drains when its `Waker` fires.
//!
//! ```text
//!   control thread ──Command (Add, Remove, Stop) + Waker──▶ mod.rs: the poll loop,
//!                                                            sockets in and out, stopping
//!   UDP socket ──▶ udp.rs: batches ──┐
//!   TCP listener ──▶ tcp.rs: conns ──┼──▶ handler (chain) ──▶ reply to the client
//!                                    │        │ Step::Upstream
//!                                    │        ▼
//!                                    └── exchange.rs: send upstream, wait, resume the chain
//!   stream.rs: replies of several messages (zone transfers), one message per turn
//!   stats.rs: counters and the heartbeat (read by /metrics, /health, the watchdog)
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::Receiver;
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};

use super::build::Server;
use super::handler::{Refresh, Suspended};
use super::socket::{BATCH, UdpBatch};
use super::upstream::Upstreams;
use crate::chain::WorkerCtx;
use crate::dns::Response;
use crate::process::ProcessState;

mod exchange;
mod stats;
mod stream;
mod tcp;
mod udp;

use exchange::{Client, Relays, Waiting};
pub use stats::{STALL_BOUND, WorkerStats, epoch, metrics, millis_since_epoch, stalled};
use tcp::Conn;
pub use tcp::TcpLimits;

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
    /// UDP sockets left with datagrams queued after their turn (`udp::UDP_BATCHES_PER_TURN`):
    /// edge-triggered polling will not report them again, so the next turn serves them
    /// without waiting.
    udp_backlog: Vec<usize>,
    /// TCP connections whose reply stream may send its next message (see `stream.rs`).
    stream_backlog: Vec<usize>,
    /// Relayed upstream replies waiting in `batch` (see `exchange.rs`).
    relays: Relays,
}

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
        process: Arc<ProcessState>,
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
            ctx: WorkerCtx::for_process(id, process),
            limits,
            stats,
            stopping: None,
            last_sweep: Instant::now(),
            to_suspend: Vec::new(),
            reply_buf: vec![0u8; 65535],
            refreshes: Vec::new(),
            udp_backlog: Vec::new(),
            stream_backlog: Vec::new(),
            relays: Relays::default(),
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
            // Reply streams (zone transfers) after the sockets: a query that arrived
            // while the last message was written is answered before the next one.
            self.pump_streams();
            self.expire();
            if let Some(deadline) = self.stopping {
                let busy = self.upstreams.live() > 0
                    || self.conns.iter().flatten().any(|c| {
                        c.wpos < c.wbuf.len() || c.inflight > 0 || c.stream.wants_write() || c.reply_stream.is_some()
                    });
                if !busy || Instant::now() >= deadline {
                    return;
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        if !self.udp_backlog.is_empty() || !self.stream_backlog.is_empty() {
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

    /// The current server generation, with the sockets' listener indices recomputed if
    /// it changed since the last call. (Not to be confused with a plugin's background
    /// refresh of a cached answer, [`Worker::run_refresh`].)
    fn current_server(&mut self) -> arc_swap::Guard<Arc<Server>> {
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
        drop(self.current_server());
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
        // so point removed ones at nothing (a query that comes on one then closes it:
        // see `answer_frames`).
        let alive: Vec<SocketAddr> = self.tcp_listeners.iter().map(|t| t.addr).collect();
        for c in self.conns.iter_mut().flatten() {
            c.from = alive.iter().position(|a| *a == c.local).unwrap_or(usize::MAX);
        }
        self.generation = std::ptr::null();
        drop(self.current_server());
    }

    /// Times out upstream exchanges, and (every 100 ms) closes idle or stuck connections.
    fn expire(&mut self) {
        let now = Instant::now();
        self.expire_upstreams(now);
        self.sweep_conns(now);
    }
}
