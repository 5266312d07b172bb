//! The process around the workers: loading the Corefile, binding every listener once
//! per worker, starting the worker threads and plugins, and stopping them.
//!
//! ```text
//!  Corefile ──parse──▶ Corefile ──Server::build──▶ Server ──store──▶ ArcSwap<Server>
//!                                                                        │ load per batch
//!  bind(addr) × workers ──Command::Add──▶ worker 0 … worker N-1 ◀─────────┘
//!                                          (own Poll, own sockets)
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::Sender;
use mio::Waker;

use crate::config::{self, ConfigError, Corefile};
use crate::handover::{Held, Pool, Role};
use crate::process::ProcessState;
use crate::server::socket::{self, Kind, SocketPair};
use crate::server::worker::{self, Command, TcpLimits, Worker, WorkerSockets, WorkerStats};
use crate::server::{BuildOptions, Server};

/// Where the configuration came from.
pub struct Source {
    pub corefile: Corefile,
    /// Directory relative paths in the Corefile are resolved against.
    pub dir: PathBuf,
    /// The file to re-read on reload (`None` for stdin and the built-in default).
    pub path: Option<PathBuf>,
}

/// Reads the Corefile the flags name: a path, `stdin`, or by default `Corefile` in
/// the working directory, falling back (as CoreDNS does) to `.:PORT { whoami log }`
/// when that file does not exist.
pub fn load_corefile(conf: Option<&str>, port: u16) -> Result<Source, ConfigError> {
    match conf {
        Some("stdin") => {
            // Bounded like a Corefile file: an endless pipe fails at the cap.
            let bytes = config::read::read_capped(std::io::stdin().lock(), config::read::MAX_FILE_BYTES, 0)
                .map_err(|e| ConfigError::global(format!("stdin: {e}")))?;
            let text = String::from_utf8(bytes).map_err(|_| ConfigError::global("stdin: not valid UTF-8 text"))?;
            let dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
            Ok(Source {
                corefile: config::parse_str(&text, "stdin", &dir)?,
                dir,
                path: None,
            })
        }
        Some(path) => from_file(Path::new(path)),
        None => {
            let default = Path::new("Corefile");
            if default.exists() {
                return from_file(default);
            }
            let text = format!(".:{port} {{\n    whoami\n    log\n}}\n");
            Ok(Source {
                corefile: config::parse_str(&text, "default", Path::new("."))?,
                dir: PathBuf::from("."),
                path: None,
            })
        }
    }
}

fn from_file(path: &Path) -> Result<Source, ConfigError> {
    let corefile = config::parse_file(path)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    Ok(Source {
        corefile,
        dir,
        path: Some(path.to_path_buf()),
    })
}

/// How the server runs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub workers: usize,
    pub port: u16,
    pub tcp: TcpLimits,
}

impl Options {
    /// The build options for a Corefile in `dir`, with the plugin table and the
    /// process's state.
    pub fn build_options<'a>(&self, dir: &'a Path, process: &'a ProcessState) -> BuildOptions<'a> {
        BuildOptions {
            default_port: self.port,
            workers: self.workers,
            config_dir: dir,
            plugins: crate::plugin::PLUGINS,
            process,
        }
    }
}

/// Worker threads to run by default: the CPUs this process may run on (its affinity
/// mask, so `taskset -c 1` gives one worker).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

struct WorkerHandle {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<WorkerStats>,
}

impl WorkerHandle {
    fn send(&self, cmd: Command) {
        if self.commands.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

/// The running worker threads, the configuration they serve and the sockets they
/// were given. (Not the kubernetes backend's running watch: that is its own.)
pub struct Workers {
    shared: Arc<ArcSwap<Server>>,
    workers: Vec<WorkerHandle>,
    /// Listen addresses as configured (with whether they have UDP: not for DNS over
    /// TLS), and as bound (the real port when 0 was asked).
    requested: Vec<(SocketAddr, bool)>,
    bound: Vec<SocketAddr>,
    /// Sockets passed in and kept for later reloads (systemd's: it holds them anyway,
    /// and a new socket on their address could not be bound next to them).
    pool: Pool,
    process: Arc<ProcessState>,
}

/// Why the server could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Workers {
    /// Binds every listener of `server` once per worker, starts the plugins and the
    /// worker threads. Nothing is left running if binding fails. Sockets in `pool`
    /// (passed by systemd or by a predecessor) serve their addresses instead of new ones.
    pub fn start(
        server: Server,
        opts: &Options,
        process: &Arc<ProcessState>,
        mut pool: Pool,
    ) -> Result<Workers, StartError> {
        let requested = wanted(&server);
        let sockets = bind(&requested, opts.workers, &mut pool, process)?;
        let used: Vec<(Role, (SocketAddr, bool))> = requested
            .iter()
            .flat_map(|r| [(Role::Dns(Kind::Udp), *r), (Role::Dns(Kind::Tcp), *r)])
            .collect();
        pool.close_unused(&used);
        let bound = sockets.iter().map(|(_, b, _)| *b).collect();
        server.start();
        let shared = Arc::new(ArcSwap::from_pointee(server));
        let mut workers = Vec::with_capacity(opts.workers);
        for id in 0..opts.workers {
            let (tx, rx) = crossbeam_channel::unbounded();
            let stats = Arc::new(WorkerStats::default());
            // Alive from the start: /health must not fail before its first loop turn.
            stats.heartbeat.store(worker::millis_since_epoch(), Ordering::Relaxed);
            let (w, waker) = Worker::new(id, shared.clone(), rx, opts.tcp, stats.clone(), process.clone())
                .map_err(|e| StartError(format!("worker {id}: {e}")))?;
            let thread = std::thread::Builder::new()
                .name(format!("worker-{id}"))
                .spawn(move || w.run())
                .map_err(|e| StartError(format!("worker {id}: {e}")))?;
            workers.push(WorkerHandle {
                commands: tx,
                waker,
                thread: Some(thread),
                stats,
            });
        }
        let running = Workers {
            shared,
            workers,
            requested,
            bound,
            pool,
            process: process.clone(),
        };
        // Workers know a socket by its configured address: the one listeners carry.
        running.hand_out(sockets.into_iter().map(|((r, _), _, s)| (r, s)).collect());
        Ok(running)
    }

    /// Swaps in a new configuration. Addresses both serve keep their sockets (no
    /// query is lost); new ones are bound first (a failure leaves everything as it
    /// was), removed ones are closed after answering what is queued on them. The new
    /// plugins start (and sync) before the swap; the old ones stop after it.
    pub fn reload(&mut self, server: Server) -> Result<(), StartError> {
        let want = wanted(&server);
        let new: Vec<(SocketAddr, bool)> = want.iter().filter(|a| !self.requested.contains(a)).copied().collect();
        let gone: Vec<(SocketAddr, bool)> = self.requested.iter().filter(|r| !want.contains(r)).copied().collect();
        // An address that changes between plain DNS and TLS is closed before its new
        // sockets are handed out (workers remove sockets by address).
        let changed: Vec<SocketAddr> = gone
            .iter()
            .map(|(a, _)| *a)
            .filter(|a| new.iter().any(|(n, _)| n == a))
            .collect();
        let gone: Vec<SocketAddr> = gone.iter().map(|(a, _)| *a).filter(|a| !changed.contains(a)).collect();
        let sockets = bind(&new, self.workers.len(), &mut self.pool, &self.process)?;
        server.start();
        let old = self.shared.swap(Arc::new(server));
        // What a successor would take: no longer the closed addresses (the workers
        // close their own copies after answering what is queued).
        self.process.listening.lock().dns.retain(|h| {
            !changed.contains(&h.requested.0) && !gone.contains(&h.requested.0) || new.contains(&h.requested)
        });
        if !changed.is_empty() {
            for w in &self.workers {
                w.send(Command::Remove(changed.clone()));
            }
        }
        for (r, b, _) in &sockets {
            self.requested.push(*r);
            self.bound.push(*b);
        }
        let keep: Vec<bool> = self.requested.iter().map(|r| want.contains(r)).collect();
        let mut i = 0;
        self.bound.retain(|_| {
            i += 1;
            keep[i - 1]
        });
        self.requested.retain(|r| want.contains(r));
        self.hand_out(sockets.into_iter().map(|((r, _), _, s)| (r, s)).collect());
        if !gone.is_empty() {
            for w in &self.workers {
                w.send(Command::Remove(gone.clone()));
            }
        }
        old.stop();
        Ok(())
    }

    /// Gives each worker its share of freshly bound sockets.
    fn hand_out(&self, sockets: Vec<(SocketAddr, Vec<SocketPair>)>) {
        let mut per_worker: Vec<WorkerSockets> = (0..self.workers.len()).map(|_| WorkerSockets::default()).collect();
        for (addr, socks) in sockets {
            for (i, (udp, tcp)) in socks.into_iter().enumerate() {
                per_worker[i].udp.extend(udp.into_iter().map(|u| (addr, u)));
                per_worker[i].tcp.extend(tcp.into_iter().map(|t| (addr, t)));
            }
        }
        for (w, s) in self.workers.iter().zip(per_worker) {
            w.send(Command::Add(s));
        }
    }

    /// The configuration being served.
    pub fn server(&self) -> Arc<Server> {
        self.shared.load_full()
    }

    /// The shared handle the workers read the configuration from.
    pub fn shared(&self) -> Arc<ArcSwap<Server>> {
        self.shared.clone()
    }

    /// The addresses being listened on (with the real port when 0 was asked).
    pub fn bound(&self) -> &[SocketAddr] {
        &self.bound
    }

    /// Per-worker counters.
    pub fn stats(&self) -> Vec<Arc<WorkerStats>> {
        self.workers.iter().map(|w| w.stats.clone()).collect()
    }

    /// Stops accepting queries, lets in-flight ones finish for up to `drain`, joins
    /// the workers and stops the plugins. A worker that has not stopped [`STOP_GRACE`]
    /// after the drain is stuck in one query and may never return: it is logged and left
    /// behind (the process exits without it). Returns the indices of such workers.
    pub fn stop(mut self, drain: Duration) -> Vec<usize> {
        for w in &self.workers {
            w.send(Command::Stop { drain });
        }
        let limit = drain + STOP_GRACE;
        let deadline = Instant::now() + limit;
        let mut stuck = Vec::new();
        for (i, w) in self.workers.iter_mut().enumerate() {
            let Some(t) = w.thread.take() else { continue };
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                let last = worker::millis_since_epoch().saturating_sub(w.stats.heartbeat.load(Ordering::Relaxed));
                // Stuck in one query (its last sign of life is old), or kept busy: a
                // flood that never lets its socket run dry keeps it from reading the
                // stop command (its last sign of life is recent).
                log::error!(
                    "worker {i} did not stop within {limit:?} (last sign of life {:.1}s ago): exiting without it",
                    last as f64 / 1000.0
                );
                stuck.push(i);
                // Dropping the handle detaches the thread; the process exit ends it.
            }
        }
        self.shared.load().stop();
        stuck
    }
}

/// How long a worker may take to stop beyond the drain it was given.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// ((requested address, with UDP), bound address, one socket pair per worker).
type BoundSockets = Vec<((SocketAddr, bool), SocketAddr, Vec<SocketPair>)>;

/// The addresses a configuration listens on, each with whether it has UDP (every
/// listener but DNS over TLS).
fn wanted(server: &Server) -> Vec<(SocketAddr, bool)> {
    server.listeners.iter().map(|l| (l.addr, l.tls.is_none())).collect()
}

/// Binds `addrs`, `workers` sockets each, or takes the sockets `pool` has for them
/// (spread over the workers; a kind the pool lacks is bound). A wildcard IPv6 address is
/// skipped with a warning on a host without IPv6; any other failure is fatal. Every
/// socket is also recorded in `process.listening`, for a successor.
fn bind(
    addrs: &[(SocketAddr, bool)],
    workers: usize,
    pool: &mut Pool,
    process: &ProcessState,
) -> Result<BoundSockets, StartError> {
    let mut out = Vec::new();
    let mut held = Vec::new();
    // A predecessor's sockets, by the address they were asked for, in one pass (taking
    // them address by address from the whole pool would be quadratic); systemd's stay
    // in `pool`.
    let mut named: HashMap<(SocketAddr, bool), Pool> = HashMap::new();
    let (handed, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut pool.sockets)
        .into_iter()
        .partition(|p| p.requested.is_some());
    pool.sockets = rest;
    for p in handed {
        if let Some(want) = p.requested {
            named.entry(want).or_default().sockets.push(p);
        }
    }
    for &(addr, udp) in addrs {
        let from = match named.get_mut(&(addr, udp)) {
            Some(p) if !p.is_empty() => p,
            _ => &mut *pool,
        };
        let passed = from_pool(from, (addr, udp), workers)
            .map_err(|e| StartError(format!("listen {addr} (sockets passed in): {e}")))?;
        let bound = match passed {
            Some(socks) => Ok(socks),
            None => socket::bind_all(addr, workers, udp),
        };
        match bound {
            Ok(socks) => {
                let real = socks
                    .iter()
                    .flat_map(|(_, t)| t.first())
                    .next()
                    .and_then(|t| t.local_addr().ok())
                    .unwrap_or(addr);
                record(&socks, (addr, udp), &mut held).map_err(|e| StartError(format!("listen {addr}: {e}")))?;
                out.push(((addr, udp), real, socks));
            }
            Err(e)
                if addr.is_ipv6()
                    && addr.ip().is_unspecified()
                    && matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)) =>
            {
                log::warn!("no IPv6 on this host: not listening on {addr}");
            }
            Err(e) => return Err(StartError(format!("listen {addr}: {e}"))),
        }
    }
    // What no address took: `close_unused` closes it.
    for (_, p) in named {
        pool.sockets.extend(p.sockets);
    }
    process.listening.lock().dns.extend(held);
    Ok(out)
}

/// The sockets `pool` holds for `want`, spread over `workers`, with a socket of each
/// worker bound here for a kind the pool has none of; `None` when it holds none.
fn from_pool(pool: &mut Pool, want: (SocketAddr, bool), workers: usize) -> std::io::Result<Option<Vec<SocketPair>>> {
    let udp = if want.1 {
        pool.take(Role::Dns(Kind::Udp), want)?
    } else {
        Vec::new()
    };
    let tcp = pool.take(Role::Dns(Kind::Tcp), want)?;
    if udp.is_empty() && tcp.is_empty() {
        return Ok(None);
    }
    // The address as bound (the port, when 0 was asked), for what must be bound here.
    let at = udp
        .iter()
        .chain(tcp.iter())
        .next()
        .and_then(|fd| socket::local_addr(fd.as_raw_fd()).ok())
        .unwrap_or(want.0);
    let spread_out = |fds: Vec<std::os::fd::OwnedFd>| -> std::io::Result<Vec<Vec<std::os::fd::OwnedFd>>> {
        let plan = socket::spread(fds.len(), workers);
        plan.iter()
            .map(|mine| mine.iter().map(|&i| socket::dup(fds[i].as_raw_fd())).collect())
            .collect()
    };
    let mut out: Vec<SocketPair> = (0..workers).map(|_| (Vec::new(), Vec::new())).collect();
    if want.1 {
        if udp.is_empty() {
            for w in &mut out {
                w.0.push(socket::udp_listener(at)?);
            }
        } else {
            for (w, fds) in out.iter_mut().zip(spread_out(udp)?) {
                for fd in fds {
                    w.0.push(socket::adopt_udp(fd)?);
                }
            }
        }
    }
    if tcp.is_empty() {
        for w in &mut out {
            w.1.push(socket::tcp_listener(at)?);
        }
    } else {
        for (w, fds) in out.iter_mut().zip(spread_out(tcp)?) {
            for fd in fds {
                w.1.push(socket::adopt_tcp(fd)?);
            }
        }
    }
    Ok(Some(out))
}

/// One duplicate of each distinct socket in `socks` (workers sharing a socket hold
/// duplicates of one descriptor: compared by inode).
fn record(socks: &[SocketPair], requested: (SocketAddr, bool), held: &mut Vec<Held>) -> std::io::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut add = |role: Role, fd: std::os::fd::RawFd| -> std::io::Result<()> {
        // SAFETY: all-zero is a valid stat; fstat fills it for an open descriptor.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } == 0 && !seen.insert((st.st_dev, st.st_ino)) {
            return Ok(());
        }
        held.push(Held {
            role,
            requested,
            fd: socket::dup(fd)?,
        });
        Ok(())
    };
    for (udp, tcp) in socks {
        for u in udp {
            add(Role::Dns(Kind::Udp), u.as_raw_fd())?;
        }
        for t in tcp {
            add(Role::Dns(Kind::Tcp), t.as_raw_fd())?;
        }
    }
    Ok(())
}
