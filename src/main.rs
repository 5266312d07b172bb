//! `clusterdns`: flags, logging, start-up, and the signal loop.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use clusterdns::cli::{Flags, USAGE};
use clusterdns::control::{self, Controller};
use clusterdns::process::ProcessState;
use clusterdns::runtime::{self, Options};
use clusterdns::server::Server;
use clusterdns::server::worker::TcpLimits;
use clusterdns::{VERSION, plugin};
use clusterdns::{handover, notify};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let flags = match Flags::parse(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if flags.help {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if flags.version {
        println!("clusterdns-{VERSION}");
        println!(
            "{}/{}, {}, {}",
            std::env::consts::OS,
            go_arch(),
            env!("CLUSTERDNS_RUSTC"),
            env!("CLUSTERDNS_COMMIT")
        );
        return ExitCode::SUCCESS;
    }
    if flags.plugins {
        print!("{}", clusterdns::cli::plugins_listing(&plugin::implemented()));
        return ExitCode::SUCCESS;
    }
    let log_base = init_logging();
    limit_malloc_arenas();
    raise_open_files_limit();
    // The sockets systemd passed (socket activation), read while this is the only
    // thread (the variables are removed from the environment).
    let mut pool = match handover::from_systemd() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = clusterdns::dns::cookie::secret_from_env() {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    clusterdns::dns::cookie::init();
    // A panic is logged on one line, without a backtrace: the worker that caught it
    // carries on, and symbolising a backtrace per query would let a query of death
    // stall it. RUST_BACKTRACE=1 brings the backtrace back for debugging; a block's
    // `errors { stacktrace }` has its caught panics' backtraces kept for it to log.
    // What outlives every configuration of this process (counters across reloads, the
    // shared Kubernetes watch): the controller owns it from here on.
    let process = Arc::new(ProcessState::new());
    process.set_log_base(log_base);
    if matches!(std::env::var("RUST_BACKTRACE").as_deref(), Err(_) | Ok("" | "0")) {
        // With `debug` a panic is not recovered: its backtrace is what is wanted then.
        let state = process.clone();
        std::panic::set_hook(Box::new(move |info| {
            clusterdns::chain::backtrace::capture();
            if state.debug.load(std::sync::atomic::Ordering::Acquire) {
                log::error!("{info}\n{}", std::backtrace::Backtrace::force_capture());
            } else {
                log::error!("{info}")
            }
        }));
    } else {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            clusterdns::chain::backtrace::capture();
            default(info)
        }));
    }

    let opts = Options {
        workers: flags.workers.unwrap_or_else(runtime::default_workers),
        port: flags.port,
        tcp: TcpLimits {
            max_connections: flags.tcp_max_connections,
            ..TcpLimits::default()
        },
    };
    let source = match runtime::load_corefile(flags.conf.as_deref(), flags.port) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::build(&source.corefile, &opts.build_options(&source.dir, &process)) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    if flags.check {
        server.process.log_warnings();
        println!("Corefile OK");
        return ExitCode::SUCCESS;
    }
    let signals = match Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Sockets that outlive a process: systemd's (socket activation), then a running
    // predecessor's (`-handover`).
    let handover_path = flags.handover.as_deref().map(std::path::Path::new);
    // A SIGTERM or SIGINT while this process starts (they are queued for the control
    // loop too): a predecessor whose sockets were taken must then not be told to drain,
    // or nobody would serve.
    let stop_asked = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, stop_asked.clone()) {
            eprintln!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    }
    let taken = match handover_path.map(handover::take) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(t))) => Some(t),
        Some(Err(e)) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let taken = taken.map(|mut t| {
        log::info!(
            "hand-over: took {} sockets from PID {}",
            t.pool.sockets.len(),
            t.peer_pid
        );
        pool.sockets.append(&mut t.pool.sockets);
        t
    });
    let banner = server.banner.clone();
    let controller = match Controller::start(server, &source, opts, process, pool) {
        Ok(c) => c,
        Err(e) => {
            // A predecessor that handed over keeps serving: it is told nothing.
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &flags.pidfile {
        if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
            eprintln!("could not write pidfile {path}: {e}");
            let _ = controller.shutdown();
            return ExitCode::FAILURE;
        }
    }
    if !flags.quiet {
        let mut out = std::io::stdout().lock();
        for line in &banner {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "clusterdns-{VERSION}");
        let _ = writeln!(
            out,
            "{}/{}, {}, {}",
            std::env::consts::OS,
            go_arch(),
            env!("CLUSTERDNS_RUSTC"),
            env!("CLUSTERDNS_COMMIT")
        );
        let _ = out.flush();
    }
    // Serving, and the kubernetes plugin has synced (or its startup_timeout passed).
    notify::notify("READY=1");
    // Only now may a predecessor stop reading: then this process takes the hand-over
    // socket for its own successor.
    let (drain_tx, drain_rx) = crossbeam_channel::bounded(1);
    let taken = match taken {
        Some(t) => {
            // The predecessor serves until then: wait for every plugin here to be
            // ready (the kubernetes index synced), not only for startup_timeout.
            wait_ready(&controller, &stop_asked);
            if stop_asked.load(Ordering::Acquire) {
                log::info!(
                    "hand-over: asked to stop while starting: PID {} keeps serving",
                    t.peer_pid
                );
                drop(t);
                None
            } else {
                Some(t)
            }
        }
        None => None,
    };
    if let Some(path) = handover_path.filter(|_| !stop_asked.load(Ordering::Acquire)) {
        let listener = match taken {
            Some(t) => t.release(path),
            None => handover::listen_at(path),
        };
        match listener {
            Ok(l) => handover::serve(l, controller.process(), drain_tx),
            Err(e) => log::error!("{e}: a successor cannot take this process's sockets"),
        }
    }
    let code = control_loop(controller, signals, drain_rx, flags.handover_wait);
    if let Some(path) = &flags.pidfile {
        let _ = std::fs::remove_file(path);
    }
    code
}

/// Waits until every plugin reports ready (as `/ready` would, over every block), at
/// most [`handover::READY_WAIT`], or until SIGTERM or SIGINT; logs while it waits.
fn wait_ready(controller: &Controller, stop_asked: &AtomicBool) {
    let shared = controller.shared();
    let start = std::time::Instant::now();
    let mut logged: Option<std::time::Instant> = None;
    loop {
        let pending: Vec<&'static str> = shared.load().not_ready_anywhere();
        if pending.is_empty() || stop_asked.load(Ordering::Acquire) {
            return;
        }
        let waited = start.elapsed();
        if waited >= handover::READY_WAIT {
            log::warn!(
                "hand-over: not ready after {waited:?} ({}): taking over anyway",
                pending.join(",")
            );
            return;
        }
        if logged.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(5)) {
            log::info!(
                "hand-over: waiting for {} to be ready; the predecessor serves meanwhile",
                pending.join(",")
            );
            logged = Some(std::time::Instant::now());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Runs the process until it stops: signals as CoreDNS handles them (SIGTERM and SIGINT
/// stop gracefully, a second SIGINT exits at once, SIGQUIT exits at once, SIGUSR1
/// reloads, SIGHUP is ignored), the `reload` schedule, and the background control
/// threads. The handlers were installed before the server started, so no signal in
/// between takes the default action.
///
/// With `wait` (`-handover.wait`), a process that has handed its sockets over and
/// drained stays, serving nothing, until SIGTERM or SIGINT: a container runtime would
/// restart a container that exits, and the restarted process would take the sockets
/// back from its successor.
fn control_loop(
    controller: Controller,
    mut signals: Signals,
    mut drain: crossbeam_channel::Receiver<()>,
    wait: bool,
) -> ExitCode {
    let (sig_tx, sig_rx) = crossbeam_channel::unbounded();
    let handle = signals.handle();
    let forward = std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig_tx.send(sig).is_err() {
                return;
            }
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    control::spawn_watchdog(controller.worker_stats(), stop.clone());
    control::spawn_health_probe(controller.shared(), controller.process(), stop.clone());
    let schedule = Arc::new(Mutex::new(controller.reload_schedule()));
    let (tick_tx, tick_rx) = crossbeam_channel::unbounded();
    control::spawn_reload_timer(schedule.clone(), tick_tx);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<ExitCode>(1);
    let mut controller = Some(controller);
    // Handed over, drained, and waiting for a signal to exit (`wait`).
    let mut idle = false;
    let mut handed_over = false;
    // A SIGTERM or SIGINT that came during that drain: exit when it ends.
    let mut asked_to_stop = false;
    loop {
        crossbeam_channel::select! {
            recv(sig_rx) -> sig => match sig.unwrap_or(SIGTERM) {
                SIGTERM | SIGINT => match controller.take() {
                    Some(c) => {
                        log::info!("{} received: shutting down", if sig == Ok(SIGTERM) { "SIGTERM" } else { "SIGINT" });
                        stop.store(true, Ordering::Release);
                        let done = done_tx.clone();
                        std::thread::spawn(move || {
                            // A worker stuck in a query is left behind (logged): the
                            // process still ends, with status 1, so that systemd shows
                            // the stop as failed and Restart=on-failure restarts it if
                            // the stop was not asked for.
                            let code = if c.shutdown().is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
                            let _ = done.send(code);
                        });
                    }
                    None if idle => {
                        log::info!("signal received after the hand-over: exiting");
                        handle.close();
                        let _ = forward.join();
                        return ExitCode::SUCCESS;
                    }
                    None if handed_over && !asked_to_stop => asked_to_stop = true,
                    None if sig == Ok(SIGINT) => {
                        log::info!("SIGINT: force quit");
                        std::process::exit(2);
                    }
                    None => {}
                },
                SIGQUIT => {
                    log::info!("SIGQUIT received: exiting now");
                    std::process::exit(0);
                }
                SIGUSR1 => {
                    if let Some(c) = controller.as_mut() {
                        log::info!(target: "plugin/reload", "SIGUSR1 received: reloading");
                        c.reload();
                        *schedule.lock() = c.reload_schedule();
                    }
                }
                _ => {}
            },
            recv(drain) -> got => {
                if got.is_err() {
                    // No hand-over socket, or its thread has ended.
                    drain = crossbeam_channel::never();
                } else {
                    if let Some(c) = controller.take() {
                        log::info!("hand-over done: draining and exiting");
                        handed_over = true;
                        stop.store(true, Ordering::Release);
                        let done = done_tx.clone();
                        std::thread::spawn(move || {
                            let code = if c.handed_over().is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
                            let _ = done.send(code);
                        });
                    }
                }
            },
            recv(tick_rx) -> _ => {
                if let Some(c) = controller.as_mut() {
                    c.reload();
                    *schedule.lock() = c.reload_schedule();
                }
            },
            recv(done_rx) -> code => {
                if wait && handed_over && !asked_to_stop {
                    // Whatever the drain's outcome: exiting would have the container
                    // restarted, and the restarted process take the sockets back.
                    if code != Ok(ExitCode::SUCCESS) {
                        log::warn!("hand-over: some workers did not stop in time (left behind)");
                    }
                    log::info!("handed over and drained: waiting for SIGTERM (-handover.wait)");
                    idle = true;
                    continue;
                }
                handle.close();
                let _ = forward.join();
                return code.unwrap_or(ExitCode::FAILURE);
            }
        }
    }
}

/// One malloc arena for the whole process. The API watcher threads decode objects and
/// the builder thread keeps them; with glibc's default arena per thread, memory freed
/// by a relist stays fragmented across arenas and RSS grows by half. Nothing on the
/// query path allocates, so the shared arena costs no contention there.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The soft limit on open files raised to the hard one, as Go's runtime does for
/// CoreDNS at start: each upstream exchange beyond the pooled sockets and each TCP
/// connection holds a descriptor, and a 1024 soft limit (systemd's default outside
/// this package's unit) would fail them long before the server's own bounds.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Go's name for the architecture, as CoreDNS's `-version` prints it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Logs go to standard output, in CoreDNS's form: `[INFO] plugin/reload: message`.
/// `RUST_LOG` filters as usual; the default is `info`.
/// Starts the logger; returns the level it logs at without `debug`. When RUST_LOG is
/// unset or a bare level (`info`, `warn`), clusterdns's own DEBUG lines pass the filter
/// and that level holds them back until a Corefile has `debug`
/// (`ProcessState::set_debug`); a RUST_LOG with module directives decides alone.
fn init_logging() -> log::LevelFilter {
    let plain = match std::env::var("RUST_LOG") {
        Err(_) => Some(log::LevelFilter::Info),
        Ok(v) => v.trim().parse::<log::LevelFilter>().ok(),
    };
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if let Some(level) = plain {
        let ours = level.max(log::LevelFilter::Debug);
        builder.parse_filters(&format!("{level},plugin={ours},clusterdns={ours}"));
    }
    builder
        .target(env_logger::Target::Stdout)
        .format(|buf, record| {
            let target = record.target();
            // CoreDNS's level words: `[WARNING]`, where the log crate says WARN.
            let level = match record.level() {
                log::Level::Warn => "WARNING",
                other => other.as_str(),
            };
            if target.starts_with("plugin/") {
                writeln!(buf, "[{level}] {target}: {}", record.args())
            } else {
                writeln!(buf, "[{level}] {}", record.args())
            }
        })
        .init();
    if let Some(level) = plain {
        log::set_max_level(level);
    }
    log::max_level()
}
