//! `clusterdns`: flags, logging, start-up, and the signal loop.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clusterdns::cli::{Flags, USAGE};
use clusterdns::runtime::{self, Options, Running};
use clusterdns::server::Server;
use clusterdns::server::worker::TcpLimits;
use clusterdns::{VERSION, plugin};
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
        println!("Server types:\n  dns\n\nCaddyfile loaders:\n  flag\n  default\n\nOther plugins:");
        for p in plugin::implemented() {
            println!("  dns.{p}");
        }
        return ExitCode::SUCCESS;
    }
    init_logging();
    // A panic is logged on one line, without a backtrace: the worker that caught it
    // carries on, and symbolising a backtrace per query would let a query of death
    // stall it. RUST_BACKTRACE=1 brings the backtrace back for debugging.
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        std::panic::set_hook(Box::new(|info| log::error!("{info}")));
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
    let server = match Server::build(&source.corefile, &opts.build_options(&source.dir)) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    if flags.check {
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
    let banner = server.banner.clone();
    let running = match Running::start(server, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &flags.pidfile {
        if let Err(e) = std::fs::write(path, format!("{}\n", std::process::id())) {
            eprintln!("could not write pidfile {path}: {e}");
            running.stop(Duration::ZERO);
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
    let code = signal_loop(running, signals);
    if let Some(path) = &flags.pidfile {
        let _ = std::fs::remove_file(path);
    }
    code
}

/// Waits for signals, as CoreDNS handles them: SIGTERM and SIGINT stop gracefully (a
/// second SIGINT exits at once), SIGQUIT exits at once, SIGUSR1 reloads, SIGHUP is
/// ignored. The handlers were installed before the server started, so no signal in
/// between takes the default action.
fn signal_loop(running: Running, mut signals: Signals) -> ExitCode {
    let handle = signals.handle();
    let mut running = Some(running);
    let mut stopper = None;
    for sig in signals.forever() {
        match sig {
            SIGTERM | SIGINT => match running.take() {
                Some(r) => {
                    log::info!("{} received: shutting down", if sig == SIGTERM { "SIGTERM" } else { "SIGINT" });
                    let h = handle.clone();
                    stopper = Some(std::thread::spawn(move || {
                        r.stop(Duration::from_secs(1));
                        h.close();
                    }));
                }
                None if sig == SIGINT => {
                    log::info!("SIGINT: force quit");
                    std::process::exit(2);
                }
                None => {}
            },
            SIGQUIT => {
                log::info!("SIGQUIT received: exiting now");
                std::process::exit(0);
            }
            SIGUSR1 => log::warn!("SIGUSR1 received: reload is not implemented yet"),
            _ => {}
        }
    }
    if let Some(t) = stopper {
        let _ = t.join();
    }
    ExitCode::SUCCESS
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
fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    env_logger::Builder::from_env(env)
        .target(env_logger::Target::Stdout)
        .format(|buf, record| {
            let target = record.target();
            if target.starts_with("plugin/") {
                writeln!(buf, "[{}] {}: {}", record.level(), target, record.args())
            } else {
                writeln!(buf, "[{}] {}", record.level(), record.args())
            }
        })
        .init();
}
