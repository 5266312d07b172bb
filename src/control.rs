//! The control side of the process: the HTTP endpoints (`/health`, `/ready`,
//! `/metrics`), reloads, the lameduck shutdown, and systemd's notifications and
//! watchdog. The main thread drives it from signals and timers; workers never wait on it.
//!
//! ```text
//!  signals ──▶ main loop ──reload()──▶ parse, build, Workers::reload (swap) ─▶ RELOADING=1 … READY=1
//!  reload timer ─┘   │
//!                    └──shutdown()──▶ STOPPING=1, /ready 503, lameduck pause, stop workers
//!                                     (at most 2 s more: a stuck worker is left behind)
//!  http thread: /health (the workers' heartbeats), /ready, /metrics read the current
//!               Server (ArcSwap) and atomics
//! ```

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::config::digest::sha512_hex;
use crate::handover::{Held, Pool, Role};
use crate::http;
use crate::metrics::Families;
use crate::notify;
use crate::process::ProcessState;
use crate::runtime::{self, Options, Source, Workers};
use crate::server::Server;
use crate::server::worker::{self, STALL_BOUND, WorkerStats};
use crate::settings::{Monitor, Reload};

/// What the HTTP endpoints share with the controller.
struct State {
    shared: Arc<ArcSwap<Server>>,
    /// What outlives a configuration (process-wide metrics among it).
    process: Arc<ProcessState>,
    /// The workers' own counters (they live as long as the process).
    workers: Vec<Arc<WorkerStats>>,
    /// Shutdown has begun: `/ready` answers 503.
    stopping: AtomicBool,
    /// `monitor until-ready`: readiness reported once stays reported (reset on reload).
    latched: AtomicBool,
    /// `/health` last answered 503 (a worker was stuck): logged when it changes.
    unhealthy: AtomicBool,
    /// The endpoint thread's counters.
    http: Arc<http::Stats>,
}

impl State {
    fn handle(&self, local: SocketAddr, req: &http::Request<'_>) -> http::Response {
        let server = self.shared.load();
        let p = &server.process;
        let on_this = |a: SocketAddr| a == local;
        match req.path {
            "/health" if p.health.is_some_and(|h| on_this(h.addr)) => self.health(),
            "/ready" if p.ready.is_some_and(|r| on_this(r.addr)) => {
                if self.stopping.load(Ordering::Acquire) {
                    return http::Response::text(503, "Shutting down");
                }
                let until_ready = p.ready.is_some_and(|r| r.monitor == Monitor::UntilReady);
                if until_ready && self.latched.load(Ordering::Acquire) {
                    return http::Response::text(200, "OK");
                }
                let not_ready = server.not_ready();
                if not_ready.is_empty() {
                    self.latched.store(true, Ordering::Release);
                    http::Response::text(200, "OK")
                } else {
                    http::Response::text(503, not_ready.join(","))
                }
            }
            "/metrics" if p.metrics.iter().any(|a| on_this(*a)) => {
                let mut f = Families::default();
                server.metrics(&mut f);
                self.process.metrics(&mut f);
                crate::server::worker::metrics(&self.workers, &mut f);
                self.http.metrics(&mut f);
                http::Response {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: f.render().into_bytes(),
                }
            }
            _ => http::Response::text(404, "404 page not found\n"),
        }
    }

    /// `/health`: 200 while every worker comes round its loop; 503 naming the ones that
    /// have not for [`STALL_BOUND`] (what the systemd watchdog goes by too).
    fn health(&self) -> http::Response {
        let stalled = worker::stalled(&self.workers, STALL_BOUND);
        if stalled.is_empty() {
            if self.unhealthy.swap(false, Ordering::AcqRel) {
                log::info!(target: "plugin/health", "every worker comes round its loop again: /health answers 200");
            }
            return http::Response::text(200, "OK");
        }
        let why = stalled_text(&stalled);
        if !self.unhealthy.swap(true, Ordering::AcqRel) {
            log::error!(target: "plugin/health", "{why}: /health answers 503");
        }
        http::Response::text(503, format!("{why}\n"))
    }
}

/// `worker 1 has not come round its loop for 3.2s; ...`
fn stalled_text(stalled: &[(usize, Duration)]) -> String {
    stalled
        .iter()
        .map(|(i, age)| format!("worker {i} has not come round its loop for {:.1}s", age.as_secs_f64()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The running process.
pub struct Controller {
    running: Workers,
    opts: Options,
    /// The Corefile to re-read on reload (`None`: stdin or the built-in default).
    path: Option<PathBuf>,
    /// SHA-512 of the running configuration's parsed blocks.
    digest: String,
    /// SHA-512 of the last Corefile text that failed to load, reported once.
    failed: Option<String>,
    state: Arc<State>,
    /// The endpoint thread, and the addresses it listens on.
    http: http::Endpoints,
    listening: Vec<SocketAddr>,
    /// HTTP listeners a predecessor passed, until the configuration takes them.
    http_pool: Pool,
}

/// The SHA-512 of a parsed Corefile (comments and whitespace do not count).
pub fn digest(source: &Source) -> String {
    sha512_hex(source.corefile.canonical().as_bytes())
}

impl Controller {
    /// Starts the workers on `server` (built with `process`) and the HTTP endpoints it
    /// asks for.
    /// Sockets in `pool` (systemd's, a predecessor's) serve their addresses instead of
    /// new ones.
    pub fn start(
        server: Server,
        source: &Source,
        opts: Options,
        process: Arc<ProcessState>,
        mut pool: Pool,
    ) -> Result<Controller, runtime::StartError> {
        let digest = digest(source);
        process.set_debug(server.process.debug);
        server.process.log_warnings();
        let http_pool = pool.split(Role::Http);
        let running = Workers::start(server, &opts, &process, pool)?;
        let state = Arc::new(State {
            shared: running.shared(),
            process,
            workers: running.stats(),
            stopping: AtomicBool::new(false),
            latched: AtomicBool::new(false),
            unhealthy: AtomicBool::new(false),
            http: Arc::default(),
        });
        let handler: http::Handler = {
            let state = state.clone();
            Arc::new(move |endpoint, req| state.handle(endpoint, req))
        };
        let http = match http::Endpoints::start(handler, state.http.clone()) {
            Ok(h) => h,
            Err(e) => {
                running.stop(Duration::ZERO);
                return Err(runtime::StartError(format!("http endpoints: {e}")));
            }
        };
        let mut c = Controller {
            running,
            opts,
            path: source.path.clone(),
            digest,
            failed: None,
            state,
            http,
            listening: Vec::new(),
            http_pool,
        };
        let reconciled = c.reconcile_http();
        let used: Vec<_> = c.listening.iter().map(|a| (Role::Http, (*a, false))).collect();
        c.http_pool.close_unused(&used);
        if let Err(e) = reconciled {
            c.running_stop(Duration::ZERO);
            return Err(e);
        }
        c.state.process.set_reload_hash(&c.digest);
        log::info!(target: "plugin/reload", "Running configuration SHA512 = {}", c.digest);
        Ok(c)
    }

    fn running_stop(self, drain: Duration) {
        let _ = self.running.stop(drain);
    }

    /// Opens the HTTP endpoints the configuration names that are not open yet, and
    /// closes those it no longer names. Endpoints that stay keep their listener.
    fn reconcile_http(&mut self) -> Result<(), runtime::StartError> {
        let server = self.running.server();
        let p = &server.process;
        let mut want: Vec<SocketAddr> = p.metrics.clone();
        want.extend(p.health.map(|h| h.addr));
        want.extend(p.ready.map(|r| r.addr));
        want.sort();
        want.dedup();
        for addr in self.listening.iter().filter(|a| !want.contains(a)) {
            self.http.close(*addr);
        }
        self.listening.retain(|a| want.contains(a));
        let process = self.state.process.clone();
        process.listening.lock().http.retain(|h| want.contains(&h.requested.0));
        for addr in want {
            if self.listening.contains(&addr) {
                continue;
            }
            let fail = |e: std::io::Error| runtime::StartError(format!("listen tcp {addr}: {e}"));
            let passed = self.http_pool.take(Role::Http, (addr, false)).map_err(fail)?;
            let listener = match passed.into_iter().next() {
                Some(fd) => std::net::TcpListener::from(fd),
                None => http::bind(addr).map_err(fail)?,
            };
            let held = crate::server::socket::dup(listener.as_raw_fd()).map_err(fail)?;
            self.http.listen_on(addr, listener).map_err(fail)?;
            process.listening.lock().http.push(Held {
                role: Role::Http,
                requested: (addr, false),
                fd: held,
            });
            self.listening.push(addr);
        }
        Ok(())
    }

    /// The current reload schedule, if the Corefile has `reload`.
    pub fn reload_schedule(&self) -> Option<Reload> {
        self.running.server().process.reload
    }

    /// The configuration the workers serve.
    pub fn shared(&self) -> Arc<ArcSwap<Server>> {
        self.running.shared()
    }

    /// What outlives a configuration.
    pub fn process(&self) -> Arc<ProcessState> {
        self.state.process.clone()
    }

    /// Per-worker counters (the watchdog reads the heartbeats).
    pub fn worker_stats(&self) -> Vec<Arc<WorkerStats>> {
        self.running.stats()
    }

    /// Re-reads the Corefile and, if its parsed form changed, builds and swaps in the
    /// new server. A Corefile that fails keeps the old one serving: the error is logged
    /// (once per distinct broken content) and counted.
    pub fn reload(&mut self) {
        let Some(path) = self.path.clone() else {
            log::warn!(target: "plugin/reload", "the Corefile came from stdin or is the built-in default: nothing to reload");
            return;
        };
        // Read like the Corefile itself (a regular file, bounded): a FIFO or a device
        // put in its place must not block or grow the control thread.
        let text_digest = crate::config::read::read_regular(&path, crate::config::read::MAX_FILE_BYTES)
            .map(|t| sha512_hex(&t))
            .unwrap_or_default();
        let source = match runtime::load_corefile(Some(&path.to_string_lossy()), self.opts.port) {
            Ok(s) => s,
            Err(e) => return self.failed(&text_digest, &e.to_string()),
        };
        let digest = digest(&source);
        if digest == self.digest {
            return;
        }
        notify::reloading();
        let server = match Server::build(
            &source.corefile,
            &self.opts.build_options(&source.dir, &self.state.process),
        ) {
            Ok(s) => s,
            Err(errors) => {
                let msg = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ");
                self.failed(&text_digest, &msg);
                notify::notify("READY=1");
                return;
            }
        };
        if let Err(e) = self.running.reload(server) {
            self.failed(&text_digest, &e.to_string());
            notify::notify("READY=1");
            return;
        }
        self.state.process.set_debug(self.running.server().process.debug);
        self.running.server().process.log_warnings();
        self.state.latched.store(false, Ordering::Release);
        if let Err(e) = self.reconcile_http() {
            log::error!(target: "plugin/reload", "{e}");
        }
        self.digest = digest;
        self.failed = None;
        self.state.process.set_reload_hash(&self.digest);
        log::info!(target: "plugin/reload", "Running configuration SHA512 = {}", self.digest);
        notify::notify("READY=1");
    }

    fn failed(&mut self, text_digest: &str, msg: &str) {
        if self.failed.as_deref() == Some(text_digest) {
            return;
        }
        self.failed = Some(text_digest.to_string());
        self.state.process.reload_failed.fetch_add(1, Ordering::Relaxed);
        log::error!(target: "plugin/reload", "Corefile changed but reload failed: {msg}");
    }

    /// Stops as CoreDNS does: `/ready` goes down first, DNS and `/health` keep serving
    /// for the lameduck duration, then the listeners close (after answering what is in
    /// flight, for up to 1 s) and the endpoints with them. A worker that has not stopped
    /// [`STOP_BOUND`] after the lameduck (stuck in one query) is left behind: the
    /// returned list names such workers, and the process exits without them.
    pub fn shutdown(self) -> Vec<usize> {
        self.stop(false)
    }

    /// Stops after a hand-over: the successor serves the same sockets already, so
    /// there is no lameduck; the HTTP endpoints close first (the successor answers
    /// them), then the workers answer what they have read, finish their TCP
    /// connections and stop.
    pub fn handed_over(self) -> Vec<usize> {
        self.stop(true)
    }

    fn stop(self, handed_over: bool) -> Vec<usize> {
        notify::stopping();
        self.state.stopping.store(true, Ordering::Release);
        // The copies kept for a successor go now (a successor has its own): a socket
        // must close when its worker closes it, so that clients see it refused at once
        // rather than have their queries wait unread until the process exits.
        {
            let mut l = self.state.process.listening.lock();
            self.state.process.stopping.store(true, Ordering::Release);
            *l = Default::default();
        }
        if handed_over {
            let Controller { running, http, .. } = self;
            drop(http);
            return running.stop(STOP_DRAIN);
        }
        let lameduck = self
            .running
            .server()
            .process
            .health
            .map_or(Duration::ZERO, |h| h.lameduck);
        if !lameduck.is_zero() {
            log::info!(target: "plugin/health", "Going into lameduck mode for {lameduck:?}");
            std::thread::sleep(lameduck);
        }
        let Controller { running, http, .. } = self;
        let stuck = running.stop(STOP_DRAIN);
        drop(http);
        stuck
    }
}

/// How long stopping workers may take to answer what is in flight.
const STOP_DRAIN: Duration = Duration::from_secs(1);

/// How long after the lameduck pause the process takes to end at most: the drain, and
/// the grace a worker gets beyond it ([`runtime::STOP_GRACE`]).
pub const STOP_BOUND: Duration = STOP_DRAIN.saturating_add(runtime::STOP_GRACE);

/// Pings systemd's watchdog at the interval it asked for, as long as every worker has
/// come round its loop within [`STALL_BOUND`] (the bound `/health` goes by: a wedged
/// worker stops the pings, and systemd restarts the service once `WatchdogSec` passes
/// without one).
pub fn spawn_watchdog(stats: Vec<Arc<WorkerStats>>, stop: Arc<AtomicBool>) {
    let Some(every) = notify::watchdog_interval() else {
        return;
    };
    let _ = std::thread::Builder::new().name("watchdog".into()).spawn(move || {
        let mut next = Instant::now();
        while !stop.load(Ordering::Acquire) {
            if Instant::now() >= next {
                let stalled = worker::stalled(&stats, STALL_BOUND);
                if stalled.is_empty() {
                    notify::watchdog();
                } else {
                    log::error!("{}: withholding the watchdog ping", stalled_text(&stalled));
                }
                next += every;
            }
            std::thread::sleep(Duration::from_millis(50).min(every));
        }
    });
}

/// Shared flag for background control threads.
pub type StopFlag = Arc<AtomicBool>;

/// Probes the health endpoint every second, as CoreDNS's health plugin does, recording
/// `coredns_health_request_duration_seconds` and failures.
pub fn spawn_health_probe(shared: Arc<ArcSwap<Server>>, process: Arc<ProcessState>, stop: StopFlag) {
    let _ = std::thread::Builder::new().name("health-probe".into()).spawn(move || {
        while !stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_secs(1));
            let Some(h) = shared.load().process.health else {
                continue;
            };
            let addr = http::local_target(h.addr);
            let t = Instant::now();
            let ok = http::get_ok(addr, "/health", Duration::from_secs(3));
            let took = t.elapsed();
            process.health_duration.observe(took.as_secs_f64());
            if !ok {
                process.health_failures.fetch_add(1, Ordering::Relaxed);
            }
            if took > Duration::from_secs(1) {
                log::warn!(target: "plugin/health", "Local health request to {addr} took more than 1s: {took:?}");
            }
        }
    });
}

/// Re-reads the Corefile on the `reload` schedule: sends a tick when a check is due.
pub fn spawn_reload_timer(schedule: Arc<Mutex<Option<Reload>>>, tick: crossbeam_channel::Sender<()>) {
    let _ = std::thread::Builder::new().name("reload-timer".into()).spawn(move || {
        let mut rng = crate::chain::Rng::seeded();
        loop {
            let wait = match *schedule.lock() {
                Some(r) => {
                    let j = r.jitter.as_millis() as u64;
                    let offset = if j == 0 {
                        0
                    } else {
                        (rng.next_u64() % j) as i64 - (j / 2) as i64
                    };
                    Duration::from_millis((r.interval.as_millis() as i64 + offset).max(1000) as u64)
                }
                None => Duration::from_secs(1),
            };
            std::thread::sleep(wait);
            if schedule.lock().is_some() && tick.send(()).is_err() {
                return;
            }
        }
    });
}
