//! Cluster bench (issue 3, item 8): the kubernetes plugin under load, in memory, and
//! from a change in the API to the answer, on the release binary over loopback.
//!
//! ```text
//!   cargo bench --bench cluster                         # all three modes, default sizes
//!   cargo bench --bench cluster -- --only load          # (a) queries/s and CPU per query vs Knot DNS
//!   cargo bench --bench cluster -- --only memory        # (b) start-up, RSS, relist and reload peaks
//!   cargo bench --bench cluster -- --only latency       # (c) change-to-answer latency
//!   cargo bench --bench cluster -- --quick              # smaller sizes and shorter runs
//!
//!   options: --only load,memory,latency   --services N[,N...]   --rounds R   --seconds S
//!            --servers echo,clusterdns,knot   --changes K   --seed S
//!            --workers W   --churn R[,R...]   (latency: workers, background changes/s)
//! ```
//!
//! Every server runs pinned to CPU 1 (`taskset`); the bench itself (load generator, fake
//! Kubernetes API, DNS probes) runs on CPU 0. The host is shared and noisy: `load` and
//! `memory` repeat `--rounds` times (default 3) and print medians; `load` compares with
//! references measured in the same run.
//!
//! **(a) load.** A generated cluster in the shape of `../shared/bench/gen_zone.py`
//! (default 10,000 services, ~10% headless with 2-6 ready endpoints, 1-3 named ports,
//! N/100 namespaces) served three ways: clusterdns (one worker) from a
//! `kubectl get -o json` dump through `endpoint file://`; Knot DNS from zone files with
//! the same records (`cluster.local.` and `10.in-addr.arpa.`, if `knotd` is installed);
//! and a bare UDP echo, the loopback floor (no DNS work at all). Before the load, a set
//! of A, SRV, PTR, endpoint-name and NXDOMAIN queries must get the same rcode and the same
//! answer RRset (TTLs included) from clusterdns and Knot. The load is closed-loop (8
//! sockets x 16 queries in flight, sendmmsg/recvmmsg, as `benches/load.rs`) over 100,000
//! pre-encoded queries: 70% A of existing services, 10% SRV of existing ports, 10%
//! NXDOMAIN names built as an `ndots:5` search path builds them
//! (`google.com.NS.svc.cluster.local`), 10% PTR of existing addresses.
//!   * queries/s: answers received per second of load.
//!   * us CPU/query: the server's CPU time (all threads, /proc/PID/task/*/schedstat) over
//!     the load, divided by the answers. The figure to compare: it does not depend on how
//!     fast the client is.
//!   * answered: answers / queries sent. NX: the share of NXDOMAIN answers (10% expected).
//!   * server busy: the server's CPU time over the wall time of the load. Well below 100%,
//!     the client (or a neighbour on the host) was the bottleneck that round: queries/s
//!     drops, and CPU/query rises a little (fewer queries per wake-up).
//!   * RSS: VmRSS of the server after the load.
//!   * ratios clusterdns/knot and clusterdns/echo, of the medians.
//!
//! **(b) memory.** The issue's shape: N services, half headless with 5 ready endpoints
//! each (100,000 services carry 250,000 endpoints), N/100 namespaces; default N = 10,000
//! and 100,000. Through the API: the test kit's fake API (`testkit/src/api`) serves the objects by
//! LIST in pages of 500 (`limit`/`continue`; items as the API sends them, managedFields
//! included), then WATCH.
//!   * start→answer: from spawning the server to the first correct answer for the last
//!     service listed and the service of the last EndpointSlice listed.
//!   * list→answer: from the moment the fake API finished sending the last page of the last
//!     resource to that answer.
//!   * steady RSS: VmRSS once synced and the process is idle.
//!   * sync peak: VmHWM after the first sync (the start-up peak).
//!   * relist: every watch gets an ERROR 410, twice: first with every object at its old
//!     resourceVersion (nothing changed, the common case after a compaction), then with
//!     every object at a new one (same content: the store replaces every entry, the worst
//!     case for a relist's memory). For each: peak, VmHWM over the relist (reset just
//!     before through /proc/PID/clear_refs) and `x` its ratio to the steady RSS; after,
//!     VmRSS once applied and idle; time, from the 410 to the last page of the new lists.
//!   * lists: new lists per resource (namespaces, services, endpointslices) for each 410;
//!     served: correct answers / queries asked while relisting.
//!   * Corefile reload: the Corefile is rewritten with another kubernetes `ttl` (an answer
//!     option; the watch settings stay) and the server gets SIGUSR1: peak, after, time from
//!     the signal to the new configuration's log line, new lists, answers meanwhile.
//!
//!   Through `endpoint file://` (the same objects as a kubectl dump): start→answer, steady
//!   RSS, sync peak; then a `touch` of the file (nothing changed) and a new dump with every
//!   object at a new resourceVersion (renamed into place): peak, after, and time (from the
//!   change to idle, the server's 1 s poll included).
//!
//! **(c) latency.** The same shape at 10,000 and 100,000 services through the API,
//! served by `--workers` workers (default 2). Probes from many source ports: SO_REUSEPORT
//! sends each source port to one worker, always the same, and the bench keeps four per
//! worker, telling which worker each reaches by `clusterdns_udp_queries_total{worker}`
//! (and checks after the run that every worker answered). Once synced, `--changes` times
//! (default 300), for each rate of `--churn` (default 0 and 1,000 background changes per
//! second on other services, paced by a thread of their own): one watch event on the
//! Services stream, in turn ADDED (a new service with a new ClusterIP), MODIFIED (a new
//! ClusterIP for an existing service) and DELETED (the service added before), then A
//! queries from every probe still waiting, in rounds, until each has had the new answer
//! (NXDOMAIN for DELETED). Latency: from the write of the event on the watch socket to
//! the last probe's first correct answer. p50, p99, max per kind; timeouts (2 s);
//! round: the median time for every probe to get an unchanged answer once, the
//! resolution of the polling.
//!
//! The floors of issue 3 are printed next to the figures they judge.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use std::sync::Arc;

use testkit::api::{Config, FakeApi, RawObject, Resource};
use testkit::load::{CLIENT_CPU, SERVER_CPU, closed_loop, median};
use testkit::process::{Daemon as Server, Scratch, free_port};
use testkit::procfs::{self, cpu_ns, hwm_kb, reset_hwm, rss_kb, wait_quiet};
use testkit::wire::{self, Probe, Reply};
use testkit::world::{Service, Shape, World};

const BIN: &str = env!("CARGO_BIN_EXE_clusterdns");
/// Page size of the server's lists (fixed in the plugin).
const PAGE: usize = 500;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Load,
    Memory,
    Latency,
}

struct Args {
    modes: Vec<Mode>,
    quick: bool,
    services: Option<Vec<usize>>,
    rounds: Option<usize>,
    seconds: f64,
    servers: Vec<String>,
    changes: usize,
    seed: u64,
    /// Latency: the server's workers, and the background change rates to time under.
    workers: usize,
    churn: Vec<u32>,
}

fn parse_args() -> Args {
    let mut a = Args {
        modes: vec![Mode::Load, Mode::Memory, Mode::Latency],
        quick: false,
        services: None,
        rounds: None,
        seconds: 5.0,
        servers: vec!["echo".into(), "clusterdns".into(), "knot".into()],
        changes: 200,
        seed: 1,
        workers: 2,
        churn: vec![0, 1000],
    };
    let mut seconds = None;
    let mut changes = None;
    let mut it = std::env::args().skip(1);
    let value = |it: &mut dyn Iterator<Item = String>, flag: &str| -> String {
        it.next().unwrap_or_else(|| panic!("{flag} needs a value"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--only" => {
                a.modes = value(&mut it, "--only")
                    .split(',')
                    .map(|m| match m {
                        "load" => Mode::Load,
                        "memory" => Mode::Memory,
                        "latency" => Mode::Latency,
                        other => panic!("--only load|memory|latency, not {other}"),
                    })
                    .collect()
            }
            "--quick" => a.quick = true,
            "--services" => {
                a.services = Some(
                    value(&mut it, "--services")
                        .split(',')
                        .map(|n| n.replace('_', "").parse().expect("--services N[,N]"))
                        .collect(),
                )
            }
            "--rounds" => a.rounds = Some(value(&mut it, "--rounds").parse().expect("--rounds R")),
            "--seconds" => seconds = Some(value(&mut it, "--seconds").parse().expect("--seconds S")),
            "--servers" => a.servers = value(&mut it, "--servers").split(',').map(String::from).collect(),
            "--changes" => changes = Some(value(&mut it, "--changes").parse().expect("--changes K")),
            "--seed" => a.seed = value(&mut it, "--seed").parse().expect("--seed S"),
            "--workers" => a.workers = value(&mut it, "--workers").parse().expect("--workers W"),
            "--churn" => {
                a.churn = value(&mut it, "--churn")
                    .split(',')
                    .map(|r| r.parse().expect("--churn R[,R]"))
                    .collect()
            }
            "--bench" => {}
            "--help" | "-h" => {
                println!("see the doc comment at the top of benches/cluster.rs");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other} (see the top of benches/cluster.rs)"),
        }
    }
    a.seconds = seconds.unwrap_or(if a.quick { 2.0 } else { 5.0 });
    a.changes = changes.unwrap_or(if a.quick { 60 } else { 300 });
    a
}

fn main() {
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some("--echo-server") {
        testkit::load::echo_server(argv.next().and_then(|p| p.parse().ok()).expect("port"));
    }
    let args = parse_args();
    println!("{}", machine());
    // Everything the bench runs (load, fake API, probes) stays off the server's CPU.
    procfs::pin_to(CLIENT_CPU);
    for &mode in &args.modes {
        match mode {
            Mode::Load => run_load(&args),
            Mode::Memory => run_memory(&args),
            Mode::Latency => run_latency(&args),
        }
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let version = Command::new(BIN)
        .arg("-version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).replace('\n', " ").trim().to_string())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    format!(
        "machine: {model}, {cpus} CPUs, Linux {}, load average {} at start; server pinned to CPU {SERVER_CPU}, bench on CPU {CLIENT_CPU}\nbinary: {BIN} ({version})\nrun: cargo bench --bench cluster -- {}",
        kernel.trim(),
        load.split_whitespace().next().unwrap_or("?"),
        args.join(" ")
    )
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Asks every probe until each answers NOERROR with exactly its addresses; the time of
/// the last correct answer, or None at `deadline`.
fn wait_answers(probe: &mut Probe, probes: &[(String, Vec<Ipv4Addr>)], deadline: Instant) -> Option<Instant> {
    let mut k = 0;
    while Instant::now() < deadline {
        let (name, want) = &probes[k];
        match probe.ask(name, wire::A, Duration::from_millis(20)) {
            Some(r) if r.rcode == 0 && r.addresses() == *want => {
                k += 1;
                if k == probes.len() {
                    return Some(Instant::now());
                }
            }
            Some(_) => {
                k = 0;
                std::thread::sleep(Duration::from_millis(1));
            }
            None => k = 0,
        }
    }
    None
}

fn corefile(port: u16, endpoint: &str) -> String {
    corefile_with_ttl(port, endpoint, 5)
}

/// The bench's Corefile with the kubernetes plugin's `ttl` set: a change of an answer
/// option, which a Corefile reload applies without watching anew.
fn corefile_with_ttl(port: u16, endpoint: &str, ttl: u32) -> String {
    format!(
        ".:{port} {{\n    bind 127.0.0.1\n    kubernetes cluster.local in-addr.arpa {{\n        endpoint {endpoint}\n        ttl {ttl}\n        startup_timeout 120s\n    }}\n}}\n"
    )
}

/// Starts clusterdns (one worker, pinned) with this Corefile.
fn start_clusterdns(dir: &Path, port: u16, endpoint: &str, capture: bool) -> Server {
    let conf = dir.join(format!("Corefile-{port}"));
    std::fs::write(&conf, corefile(port, endpoint)).unwrap();
    let args = [
        "-workers".to_string(),
        "1".into(),
        "-conf".into(),
        conf.display().to_string(),
    ];
    Server::spawn("clusterdns", Path::new(BIN), &args, SERVER_CPU, port, capture)
}

// -------------------------------------------------------------------------------------
// (a) load

struct LoadFiles {
    dump: PathBuf,
    forward: PathBuf,
    reverse: PathBuf,
}

fn knot_installed() -> bool {
    Command::new("knotd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Starts one server of the load comparison and waits until it answers correctly.
fn start_load_server(kind: &str, world: &World, dir: &Path, files: &LoadFiles, tag: usize) -> Option<Server> {
    let port = free_port();
    let server = match kind {
        "clusterdns" => start_clusterdns(dir, port, &format!("file://{}", files.dump.display()), false),
        "knot" => {
            let d = dir.join(format!("knot-{tag}"));
            std::fs::create_dir_all(&d).unwrap();
            let conf = format!(
                "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\ncontrol:\n    listen: \"{d}/knot.sock\"\nlog:\n  - target: stderr\n    any: warning\ndatabase:\n    storage: \"{d}\"\ntemplate:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\n    semantic-checks: off\nzone:\n  - domain: cluster.local\n    file: \"{}\"\n  - domain: 10.in-addr.arpa\n    file: \"{}\"\n",
                files.forward.display(),
                files.reverse.display(),
                d = d.display()
            );
            std::fs::write(d.join("knot.conf"), conf).unwrap();
            let args = ["-c".to_string(), d.join("knot.conf").display().to_string()];
            Server::spawn("knot", Path::new("knotd"), &args, SERVER_CPU, port, false)
        }
        "echo" => {
            let args = ["--echo-server".to_string(), port.to_string()];
            Server::spawn(
                "echo",
                &std::env::current_exe().unwrap(),
                &args,
                SERVER_CPU,
                port,
                false,
            )
        }
        other => panic!("unknown server {other} (echo, clusterdns, knot)"),
    };
    let mut probe = Probe::new(port);
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = if kind == "echo" {
        let mut got = false;
        while !got && Instant::now() < deadline {
            got = probe
                .ask("ready.example.", wire::A, Duration::from_millis(50))
                .is_some();
        }
        got
    } else {
        wait_answers(&mut probe, &world.sync_probes(), deadline).is_some()
    };
    if !ready {
        eprintln!("{kind} did not answer correctly within 60 s: skipped this round");
        return None;
    }
    // knotd starts some threads after it answers: pin them all again.
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", &SERVER_CPU.to_string(), &server.pid().to_string()])
        .stdout(std::process::Stdio::null())
        .status();
    Some(server)
}

#[derive(Default)]
struct LoadSamples {
    qps: Vec<f64>,
    us: Vec<f64>,
    answered: Vec<f64>,
    nx: Vec<f64>,
    busy: Vec<f64>,
    rss_kb: Vec<f64>,
}

fn run_load(a: &Args) {
    let n = a
        .services
        .as_ref()
        .map_or(if a.quick { 2_000 } else { 10_000 }, |s| s[0]);
    let rounds = a.rounds.unwrap_or(if a.quick { 1 } else { 3 });
    let shape = Shape::mixed(n, a.seed);
    let world = World::generate(&shape);
    let dir = Scratch::new("load");
    let files = LoadFiles {
        dump: dir.0.join("cluster.json"),
        forward: dir.0.join("cluster.local.zone"),
        reverse: dir.0.join("10.in-addr.arpa.zone"),
    };
    let dump = world.kubectl_dump(1000);
    std::fs::write(&files.dump, &dump).unwrap();
    let (forward, reverse, records) = world.zone_files();
    std::fs::write(&files.forward, forward).unwrap();
    std::fs::write(&files.reverse, reverse).unwrap();
    let mix = world.query_mix(100_000, a.seed);
    let queries: Arc<Vec<Vec<u8>>> = Arc::new(
        mix.iter()
            .enumerate()
            .map(|(i, (name, t))| wire::query(name, *t, i as u16, Some(1232)))
            .collect(),
    );
    let checks = world.check_set(a.seed);
    let mut servers = a.servers.clone();
    let mut notes = Vec::new();
    if servers.iter().any(|s| s == "knot") && !knot_installed() {
        notes.push("knotd is not installed (apt-get install knot): Knot DNS skipped".to_string());
        servers.retain(|s| s != "knot");
    }

    println!("\n== (a) load: queries/s and server CPU per query, clusterdns next to Knot DNS and a UDP echo");
    println!(
        "data: {}; {} headless, {} endpoints, {} records in the zone files, dump {:.1} MB",
        shape.describe(),
        world.headless_count(),
        world.endpoint_count(),
        records,
        dump.len() as f64 / 1e6
    );
    println!(
        "load: 100,000 distinct queries (70% A, 10% SRV, 10% NXDOMAIN search-path names, 10% PTR) cycled; {rounds} rounds x {} s per server after 0.5 s warm-up; 8 sockets x 16 in flight",
        a.seconds
    );
    println!(
        "servers: {} (clusterdns: -workers 1, endpoint file://; Knot {}: udp-workers 1)",
        servers.join(", "),
        knot_version()
    );
    for note in &notes {
        println!("note: {note}");
    }

    // Same answers from both servers, or the comparison is not fair.
    let mut replies: HashMap<&str, Vec<Option<Reply>>> = HashMap::new();
    for kind in ["clusterdns", "knot"] {
        if servers.iter().any(|s| s == kind) {
            if let Some(server) = start_load_server(kind, &world, &dir.0, &files, 99) {
                let mut probe = Probe::new(server.port);
                let got = checks
                    .iter()
                    .map(|(name, t)| probe.ask(name, *t, Duration::from_millis(500)))
                    .collect();
                replies.insert(kind, got);
            }
        }
    }
    match (replies.get("clusterdns"), replies.get("knot")) {
        (Some(ours), Some(knot)) => {
            let mut differ = Vec::new();
            for (i, (q, t)) in checks.iter().enumerate() {
                let (x, y) = (&ours[i], &knot[i]);
                let same = matches!((x, y), (Some(x), Some(y)) if x.rcode == y.rcode && x.answers == y.answers);
                if !same {
                    differ.push(format!(
                        "    {q} {}: clusterdns {} / knot {}",
                        wire::type_name(*t),
                        describe(x),
                        describe(y)
                    ));
                }
            }
            println!(
                "answer check: {}/{} queries (A, SRV, PTR, endpoint names, NXDOMAIN) got the same rcode and answer RRset (TTLs included) from clusterdns and knot{}",
                checks.len() - differ.len(),
                checks.len(),
                if differ.is_empty() {
                    ""
                } else {
                    "; DIFFERENT, the comparison is not fair:"
                }
            );
            for d in differ.iter().take(10) {
                println!("{d}");
            }
        }
        _ => println!("answer check: needs both clusterdns and knot (not compared)"),
    }

    let mut samples: HashMap<String, LoadSamples> = HashMap::new();
    for round in 0..rounds {
        for k in 0..servers.len() {
            let kind = &servers[(k + round) % servers.len()];
            let Some(server) = start_load_server(kind, &world, &dir.0, &files, round) else {
                continue;
            };
            let pid = server.pid();
            closed_loop(server.port, &queries, 0.5);
            let c0 = cpu_ns(pid);
            let t0 = Instant::now();
            let r = closed_loop(server.port, &queries, a.seconds);
            let wall = t0.elapsed().as_secs_f64();
            let cpu = (cpu_ns(pid) - c0) as f64;
            let s = samples.entry(kind.clone()).or_default();
            let qps = r.replies as f64 / wall;
            let us = cpu / 1000.0 / r.replies.max(1) as f64;
            s.qps.push(qps);
            s.us.push(us);
            s.answered.push(r.replies as f64 / r.sent.max(1) as f64);
            s.nx.push(r.nxdomain() as f64 / r.replies.max(1) as f64);
            s.busy.push(cpu / 1e9 / wall);
            s.rss_kb.push(rss_kb(pid) as f64);
            eprintln!(
                "  round {round}: {kind:<10} {qps:>9.0} q/s {us:>6.2} us CPU/query (server CPU {:.0}%, answered {:.4}, NXDOMAIN {:.1}%, other rcodes {})",
                cpu / 1e9 / wall * 100.0,
                r.replies as f64 / r.sent.max(1) as f64,
                r.nxdomain() as f64 * 100.0 / r.replies.max(1) as f64,
                r.other_rcode()
            );
            drop(server);
        }
    }

    let mut out = String::new();
    let _ = writeln!(out, "medians of {rounds} round(s):");
    let _ = writeln!(
        out,
        "{:<11} {:>11} {:>13} {:>9} {:>6} {:>11} {:>9}",
        "server", "queries/s", "us CPU/query", "answered", "NX", "server busy", "RSS MiB"
    );
    let mut med: HashMap<&str, (f64, f64)> = HashMap::new();
    for kind in ["clusterdns", "knot", "echo"] {
        let Some(s) = samples.get_mut(kind) else { continue };
        let (q, u) = (median(&mut s.qps), median(&mut s.us));
        med.insert(kind, (q, u));
        let _ = writeln!(
            out,
            "{kind:<11} {q:>11.0} {u:>13.2} {:>9.4} {:>5.1}% {:>10.0}% {:>9.1}",
            median(&mut s.answered),
            median(&mut s.nx) * 100.0,
            median(&mut s.busy) * 100.0,
            median(&mut s.rss_kb) / 1024.0
        );
    }
    if let Some(&(q, u)) = med.get("clusterdns") {
        for reference in ["knot", "echo"] {
            if let Some(&(rq, ru)) = med.get(reference) {
                let _ = writeln!(
                    out,
                    "clusterdns / {reference:<4}: CPU per query {:.2}x, queries/s {:.2}x",
                    u / ru,
                    q / rq
                );
            }
        }
        if let Some(&(_, ru)) = med.get("knot") {
            let _ = writeln!(
                out,
                "floor (issue 3): server CPU per query no more than Knot's: {:.2} vs {:.2} us -> {}",
                u,
                ru,
                verdict(u <= ru)
            );
        }
    }
    print!("{out}");
}

fn describe(r: &Option<Reply>) -> String {
    match r {
        None => "no answer".into(),
        Some(r) => format!("{} [{}]", r.rcode_name(), r.answers.join("; ")),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT MET" }
}

fn knot_version() -> String {
    Command::new("knotd")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .last()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

// -------------------------------------------------------------------------------------
// (b) memory

/// One relist (API) or reload (file) as the server went through it.
#[derive(Clone, Default)]
struct Churn {
    /// VmHWM over it (reset just before), or the highest VmRSS sampled if higher.
    peak_kb: f64,
    /// VmRSS once it is applied and the process idle.
    after_kb: f64,
    /// API: from the 410 to the last page of the new lists; file: from the change to idle.
    secs: f64,
    served_ok: usize,
    served: usize,
    /// New lists per resource (namespaces, services, endpointslices).
    lists: [usize; 3],
}

/// One run of one source at one size.
#[derive(Clone, Default)]
struct MemRun {
    start_to_answer: f64,
    list_to_answer: f64,
    steady_kb: f64,
    sync_peak_kb: f64,
    /// Nothing changed: a 410 with every object at its old resourceVersion (API), a
    /// `touch` (file).
    same: Churn,
    /// Every object comes back with a new resourceVersion (same content): the store
    /// replaces every entry, the worst case for a relist's memory.
    renewed: Churn,
    /// API only: a SIGUSR1 reload of a Corefile whose kubernetes `ttl` changed.
    corefile: Option<Churn>,
}

/// The resources the bench's clusters have, as the tables number them.
const RESOURCES: [Resource; 3] = [Resource::Namespaces, Resource::Services, Resource::EndpointSlices];

/// Lists of each resource that sent their last page so far.
fn lists_done(api: &FakeApi) -> Vec<Vec<Instant>> {
    RESOURCES.iter().map(|r| api.lists_completed(*r)).collect()
}

/// The time the fake API finished sending the last page of every resource's first list.
fn first_lists_done(api: &FakeApi) -> Option<Instant> {
    lists_done(api)
        .iter()
        .map(|l| l.first().copied())
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()
}

/// Samples RSS and asks the probes until `done` (or 120 s); returns (max RSS seen,
/// correct answers, queries asked).
fn watch_churn(
    server: &Server,
    probes: &[(String, Vec<Ipv4Addr>)],
    mut done: impl FnMut() -> bool,
) -> (u64, usize, usize) {
    let mut probe = Probe::new(server.port);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut max_rss, mut ok, mut asked) = (0, 0, 0);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "the relist or reload did not finish within 120 s"
        );
        max_rss = max_rss.max(rss_kb(server.pid()));
        let (name, want) = &probes[asked % probes.len()];
        asked += 1;
        if let Some(r) = probe.ask(name, wire::A, Duration::from_millis(100)) {
            if r.rcode == 0 && r.addresses() == *want {
                ok += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (max_rss, ok, asked)
}

const QUIET: Duration = Duration::from_millis(250);

/// Sends ERROR 410 on every watch and follows the relist to its end.
fn relist(api: &FakeApi, server: &Server, probes: &[(String, Vec<Ipv4Addr>)]) -> Churn {
    let pid = server.pid();
    let lists_before: Vec<usize> = lists_done(api).iter().map(Vec::len).collect();
    let watches = || RESOURCES.map(|r| api.watches_started(r).len());
    let watches_before = watches();
    reset_hwm(pid);
    let expired = api.expire_watches();
    let (max_rss, served_ok, served) = watch_churn(server, probes, || {
        let (lists, watches) = (lists_done(api), watches());
        (0..3).all(|r| lists[r].len() > lists_before[r] && watches[r] > watches_before[r])
    });
    let relisted = lists_done(api).iter().filter_map(|l| l.last().copied()).max().unwrap();
    let mut churn = settled(api, server, &lists_before, max_rss);
    churn.secs = (relisted - expired).as_secs_f64();
    (churn.served_ok, churn.served) = (served_ok, served);
    churn
}

/// Once a relist or Corefile reload is over: waits for the server to go idle (and a
/// little more, for a relist loop to show if there were one), then takes its memory
/// and the lists made since `lists_before`.
fn settled(api: &FakeApi, server: &Server, lists_before: &[usize], max_rss: u64) -> Churn {
    let pid = server.pid();
    wait_quiet(pid, QUIET, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let mut lists = [0; 3];
    for (r, done) in lists_done(api).iter().enumerate() {
        lists[r] = done.len() - lists_before[r];
    }
    Churn {
        peak_kb: hwm_kb(pid).max(max_rss) as f64,
        after_kb: rss_kb(pid) as f64,
        lists,
        ..Churn::default()
    }
}

/// Changes the dump (`change`) and follows the reload to its end (the log line of the
/// re-read, then idle).
fn reload(server: &Server, probes: &[(String, Vec<Ipv4Addr>)], change: impl FnOnce()) -> Churn {
    let pid = server.pid();
    let loads_before = server.log_lines("loaded ").len();
    reset_hwm(pid);
    let changed = Instant::now();
    change();
    let (max_rss, served_ok, served) = watch_churn(server, probes, || server.log_lines("loaded ").len() > loads_before);
    let waited = wait_quiet(pid, QUIET, Duration::from_secs(30));
    Churn {
        peak_kb: hwm_kb(pid).max(max_rss) as f64,
        after_kb: rss_kb(pid) as f64,
        secs: changed.elapsed().saturating_sub(QUIET.min(waited)).as_secs_f64(),
        served_ok,
        served,
        lists: [0; 3],
    }
}

/// Starts clusterdns on `endpoint` and waits for the sync: (server, time of the first
/// correct answer).
fn start_synced(world: &World, dir: &Path, endpoint: &str) -> (Server, Instant) {
    let port = free_port();
    let server = start_clusterdns(dir, port, endpoint, true);
    let mut probe = Probe::new(port);
    let answered = wait_answers(
        &mut probe,
        &world.sync_probes(),
        Instant::now() + Duration::from_secs(180),
    )
    .expect("clusterdns did not answer correctly within 180 s of its start");
    (server, answered)
}

fn check_still_right(server: &Server, probes: &[(String, Vec<Ipv4Addr>)]) {
    let mut probe = Probe::new(server.port);
    assert!(
        wait_answers(&mut probe, probes, Instant::now() + Duration::from_secs(10)).is_some(),
        "wrong answers after the relist or reload"
    );
}

fn memory_api(world: &World, dir: &Path) -> MemRun {
    let api = FakeApi::bulk(Config::long_watches(), world.api_objects(1000));
    let (server, answered) = start_synced(world, dir, &api.url());
    let pid = server.pid();
    let probes = world.sync_probes();
    let listed = first_lists_done(&api).expect("the fake API saw every list complete");
    let mut run = MemRun {
        start_to_answer: (answered - server.started).as_secs_f64(),
        list_to_answer: answered.saturating_duration_since(listed).as_secs_f64(),
        ..MemRun::default()
    };
    wait_quiet(pid, QUIET, Duration::from_secs(30));
    run.steady_kb = rss_kb(pid) as f64;
    run.sync_peak_kb = hwm_kb(pid) as f64;

    run.same = relist(&api, &server, &probes);
    check_still_right(&server, &probes);
    api.replace_all(world.api_objects(api.rv() + 1));
    run.renewed = relist(&api, &server, &probes);
    check_still_right(&server, &probes);
    run.corefile = Some(corefile_reload(&api, &server, &probes, dir));
    check_still_right(&server, &probes);
    report_log_problems(&server);
    drop(server);
    drop(api);
    run
}

/// Rewrites the Corefile with another kubernetes `ttl`, sends SIGUSR1 and follows the
/// reload to its end (the new configuration's log line, then idle): what it costs in
/// memory, time and API lists, and whether answers kept coming meanwhile.
fn corefile_reload(api: &FakeApi, server: &Server, probes: &[(String, Vec<Ipv4Addr>)], dir: &Path) -> Churn {
    let pid = server.pid();
    let conf = dir.join(format!("Corefile-{}", server.port));
    let lists_before: Vec<usize> = lists_done(api).iter().map(Vec::len).collect();
    let reloads_before = server.log_lines("Running configuration").len();
    std::fs::write(&conf, corefile_with_ttl(server.port, &api.url(), 7)).unwrap();
    reset_hwm(pid);
    let sent = Instant::now();
    server.signal(libc::SIGUSR1);
    let (max_rss, served_ok, served) = watch_churn(server, probes, || {
        server.log_lines("Running configuration").len() > reloads_before
    });
    let secs = sent.elapsed().as_secs_f64();
    let mut churn = settled(api, server, &lists_before, max_rss);
    churn.secs = secs;
    (churn.served_ok, churn.served) = (served_ok, served);
    churn
}

fn memory_file(world: &World, dir: &Path) -> MemRun {
    let dump = dir.join("cluster.json");
    std::fs::write(&dump, world.kubectl_dump(1000)).unwrap();
    let (server, answered) = start_synced(world, dir, &format!("file://{}", dump.display()));
    let pid = server.pid();
    let probes = world.sync_probes();
    let mut run = MemRun {
        start_to_answer: (answered - server.started).as_secs_f64(),
        list_to_answer: f64::NAN,
        ..MemRun::default()
    };
    wait_quiet(pid, QUIET, Duration::from_secs(30));
    run.steady_kb = rss_kb(pid) as f64;
    run.sync_peak_kb = hwm_kb(pid) as f64;

    // touch: same contents, a new modification time.
    run.same = reload(&server, &probes, || {
        std::fs::File::options()
            .write(true)
            .open(&dump)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .expect("touch the dump");
    });
    check_still_right(&server, &probes);
    // A new dump, every object at a new resourceVersion, put in place by a rename.
    let renewed = world.kubectl_dump(10_000_000);
    run.renewed = reload(&server, &probes, || {
        let tmp = dir.join("cluster.json.new");
        std::fs::write(&tmp, renewed).unwrap();
        std::fs::rename(&tmp, &dump).unwrap();
    });
    check_still_right(&server, &probes);
    report_log_problems(&server);
    drop(server);
    run
}

/// Warnings and errors the server logged, shown once.
fn report_log_problems(server: &Server) {
    let log = server.output();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[WARNING]") || l.contains("[ERROR]") || l.contains("[WARN]"))
        .collect();
    if !bad.is_empty() {
        eprintln!(
            "  server logged {} warning(s)/error(s), the first: {}",
            bad.len(),
            bad[0]
        );
    }
}

fn run_memory(a: &Args) {
    let sizes = a
        .services
        .clone()
        .unwrap_or(if a.quick { vec![10_000] } else { vec![10_000, 100_000] });
    let rounds = a.rounds.unwrap_or(if a.quick { 1 } else { 3 });
    println!("\n== (b) memory: start-up, RSS, relist and reload peaks");
    println!(
        "data: N services, half headless x 5 ready endpoints, half ClusterIP, 1-3 named ports, N/100 namespaces (seed {}); N = {}",
        a.seed,
        sizes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
    );
    println!(
        "api: fake API on loopback, LIST in pages of {PAGE} (limit/continue), then WATCH; relists forced by an ERROR 410 on every watch. file: endpoint file://, a kubectl dump re-read. {rounds} round(s), medians"
    );
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:>64} {:<34} {:<34}",
        "", "| relist/reload, nothing changed", "| relist/reload, every object new"
    );
    let _ = writeln!(
        table,
        "{:<5} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} | {:>9} {:>5} {:>9} {:>6} | {:>9} {:>5} {:>9} {:>6} | {:>11} {:>9}",
        "path",
        "services",
        "endpoints",
        "start→ans",
        "list→ans",
        "steady",
        "sync pk",
        "peak",
        "x",
        "after",
        "time",
        "peak",
        "x",
        "after",
        "time",
        "lists",
        "served"
    );
    let mut floors = String::new();
    let mut reloads = String::new();
    for &n in &sizes {
        let world = World::generate(&Shape::half_headless(n, a.seed));
        let items = world.api_objects(1000);
        let per = |r: Resource| -> (usize, usize) {
            let of: Vec<&RawObject> = items.iter().filter(|o| o.resource == r).collect();
            (of.iter().map(|o| o.json.len()).sum(), of.len())
        };
        let (bytes, counts): (Vec<usize>, Vec<usize>) = RESOURCES.iter().map(|r| per(*r)).unzip();
        println!(
            "N = {n}: {} namespaces, {} services ({} headless), {} endpoints; LIST bytes: {:.1} MB services ({:.0} B each), {:.1} MB endpointslices ({:.0} B each)",
            world.namespaces.len(),
            world.services.len(),
            world.headless_count(),
            world.endpoint_count(),
            bytes[1] as f64 / 1e6,
            bytes[1] as f64 / counts[1].max(1) as f64,
            bytes[2] as f64 / 1e6,
            bytes[2] as f64 / counts[2].max(1) as f64,
        );
        drop(items);
        for source in ["api", "file"] {
            let mut runs = Vec::new();
            for round in 0..rounds {
                let dir = Scratch::new(&format!("memory-{source}-{n}-{round}"));
                let run = if source == "api" {
                    memory_api(&world, &dir.0)
                } else {
                    memory_file(&world, &dir.0)
                };
                let churn = |c: &Churn| {
                    format!(
                        "peak {:.1} MiB ({:.2}x) after {:.1} MiB, {:.2} s, lists {:?}, served {}/{}",
                        mib(c.peak_kb as u64),
                        c.peak_kb / run.steady_kb,
                        mib(c.after_kb as u64),
                        c.secs,
                        c.lists,
                        c.served_ok,
                        c.served
                    )
                };
                eprintln!(
                    "  {source} N={n} round {round}: start→answer {:.3} s, list→answer {:.3} s, steady {:.1} MiB, sync peak {:.1} MiB; same: {}; all new: {}{}",
                    run.start_to_answer,
                    run.list_to_answer,
                    mib(run.steady_kb as u64),
                    mib(run.sync_peak_kb as u64),
                    churn(&run.same),
                    churn(&run.renewed),
                    run.corefile
                        .as_ref()
                        .map_or(String::new(), |c| format!("; Corefile reload: {}", churn(c)))
                );
                runs.push(run);
            }
            let m = |f: &dyn Fn(&MemRun) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
            let steady = m(&|r| r.steady_kb);
            let sync_peak = m(&|r| r.sync_peak_kb);
            let list_to_answer = m(&|r| r.list_to_answer);
            let churn_cols = |pick: &dyn Fn(&MemRun) -> &Churn| {
                format!(
                    "{:>5.1} MiB {:>4.2}x {:>5.1} MiB {:>4.2} s",
                    mib(m(&|r| pick(r).peak_kb) as u64),
                    m(&|r| pick(r).peak_kb / r.steady_kb),
                    mib(m(&|r| pick(r).after_kb) as u64),
                    m(&|r| pick(r).secs)
                )
            };
            let (ok, asked) = runs.iter().fold((0, 0), |(o, s), r| {
                (
                    o + r.same.served_ok + r.renewed.served_ok,
                    s + r.same.served + r.renewed.served,
                )
            });
            let reloaded: Vec<(&Churn, f64)> = runs
                .iter()
                .filter_map(|r| r.corefile.as_ref().map(|c| (c, r.steady_kb)))
                .collect();
            if !reloaded.is_empty() {
                let rm = |f: &dyn Fn(&Churn, f64) -> f64| {
                    median(&mut reloaded.iter().map(|(c, steady)| f(c, *steady)).collect::<Vec<_>>())
                };
                let mid = reloaded[reloaded.len() / 2].0;
                let _ = writeln!(
                    reloads,
                    "  {source} N={n}: peak {:.1} MiB ({:.2}x steady), after {:.1} MiB, {:.3} s from SIGUSR1 to the new configuration, lists {}/{}/{}, served {}/{}",
                    mib(rm(&|c, _| c.peak_kb) as u64),
                    rm(&|c, steady| c.peak_kb / steady),
                    mib(rm(&|c, _| c.after_kb) as u64),
                    rm(&|c, _| c.secs),
                    mid.lists[0],
                    mid.lists[1],
                    mid.lists[2],
                    reloaded.iter().map(|(c, _)| c.served_ok).sum::<usize>(),
                    reloaded.iter().map(|(c, _)| c.served).sum::<usize>(),
                );
            }
            let lists = if source == "api" {
                let mid = &runs[runs.len() / 2];
                let (x, y) = (mid.same.lists, mid.renewed.lists);
                format!("{}/{}/{} {}/{}/{}", x[0], x[1], x[2], y[0], y[1], y[2])
            } else {
                "-".into()
            };
            let _ = writeln!(
                table,
                "{source:<5} {n:>8} {:>9} {:>7.3} s {:>9} {:>5.1} MiB {:>5.1} MiB | {} | {} | {lists:>11} {:>9}",
                world.endpoint_count(),
                m(&|r| r.start_to_answer),
                if source == "api" {
                    format!("{list_to_answer:.3} s")
                } else {
                    "-".into()
                },
                mib(steady as u64),
                mib(sync_peak as u64),
                churn_cols(&|r| &r.same),
                churn_cols(&|r| &r.renewed),
                format!("{ok}/{asked}")
            );
            if n == 100_000 && world.endpoint_count() == 250_000 {
                let mb = |kb: f64| kb * 1024.0 / 1e6;
                let worst_peak = runs
                    .iter()
                    .map(|r| {
                        let reload = r.corefile.as_ref().map_or(0.0, |c| c.peak_kb);
                        r.sync_peak_kb.max(r.same.peak_kb).max(r.renewed.peak_kb).max(reload)
                    })
                    .fold(0.0, f64::max);
                let _ = writeln!(
                    floors,
                    "  {source}: RSS under 100 MB at 100,000 services / 250,000 endpoints: steady {:.1} MB (median), highest peak seen {:.1} MB -> {}",
                    mb(steady),
                    mb(worst_peak),
                    verdict(mb(steady) < 100.0 && mb(worst_peak) < 100.0)
                );
                let worst_ratio = runs
                    .iter()
                    .map(|r| (r.same.peak_kb.max(r.renewed.peak_kb)) / r.steady_kb)
                    .fold(0.0, f64::max);
                let _ = writeln!(
                    floors,
                    "  {source}: a {} never above 1.3x the steady RSS: medians {:.2}x (nothing changed), {:.2}x (every object new), worst {worst_ratio:.2}x -> {}",
                    if source == "api" { "relist" } else { "reload" },
                    m(&|r| r.same.peak_kb / r.steady_kb),
                    m(&|r| r.renewed.peak_kb / r.steady_kb),
                    verdict(worst_ratio <= 1.3)
                );
                if source == "api" {
                    let worst = runs.iter().map(|r| r.list_to_answer).fold(0.0, f64::max);
                    let _ = writeln!(
                        floors,
                        "  api: first answer within 2 s of the list completing: median {list_to_answer:.3} s, worst {worst:.3} s -> {}",
                        verdict(worst <= 2.0)
                    );
                    let once = runs
                        .iter()
                        .all(|r| r.same.lists == [1, 1, 1] && r.renewed.lists == [1, 1, 1]);
                    let _ = writeln!(
                        floors,
                        "  api: one list per resource per 410: {} -> {}",
                        runs.iter()
                            .map(|r| format!("{:?} {:?}", r.same.lists, r.renewed.lists))
                            .collect::<Vec<_>>()
                            .join(", "),
                        verdict(once)
                    );
                }
            }
        }
    }
    print!("{table}");
    println!(
        "(RSS in MiB. start→ans: spawn to the first correct answer; list→ans: the fake API's last page sent to that answer; steady: idle after sync; sync pk: VmHWM of the start-up; peak: VmHWM reset before the relist or reload; x: peak / steady; after: idle again; time: API 410 to the last new page, file: change to idle incl. the 1 s poll; lists: new lists per resource (ns, svc, slices) per 410, both relists; served: correct answers / queries while relisting or reloading)"
    );
    if !reloads.is_empty() {
        println!(
            "Corefile reload (SIGUSR1; the kubernetes ttl changed, the watch settings did not), medians:\n{reloads}"
        );
    }
    if !floors.is_empty() {
        println!("floors (issue 3), MB = 10^6 bytes:\n{floors}");
    }
}

// -------------------------------------------------------------------------------------
// (c) latency

/// UDP probe sockets, each from its own source port. SO_REUSEPORT hands a datagram to
/// one worker's socket by a hash of its addresses and ports, so a source port always
/// reaches the same worker: the fleet keeps sockets until every worker has
/// `per_worker` of them, telling which worker a socket reaches by the per-worker query
/// counter (`clusterdns_udp_queries_total{worker}`) before and after one query.
struct Fleet {
    socks: Vec<std::net::UdpSocket>,
    worker: Vec<usize>,
    next_id: u16,
    buf: Vec<u8>,
}

/// The UDP queries each worker has received so far.
fn worker_queries(metrics_port: u16, workers: usize) -> Vec<f64> {
    let (status, page) = testkit::http::http_get(metrics_port, "/metrics").expect("scrape /metrics");
    assert_eq!(status, 200, "/metrics: {page}");
    let scrape = testkit::metrics::parse(&page).expect("the metrics page parses");
    (0..workers)
        .map(|w| scrape.sum("clusterdns_udp_queries_total", &[("worker", w.to_string().as_str())]))
        .collect()
}

/// The pause between two rounds of a fleet's polling: the server shares its core with
/// the builder, whose latency is what is measured; back-to-back rounds would take
/// that core from it.
const POLL_GAP: Duration = Duration::from_micros(250);

impl Fleet {
    fn new(port: u16, metrics_port: u16, workers: usize, per_worker: usize, name: &str) -> Fleet {
        let server = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut fleet = Fleet {
            socks: Vec::new(),
            worker: Vec::new(),
            next_id: 0,
            buf: vec![0; 4096],
        };
        let mut have = vec![0usize; workers];
        for attempt in 0..64 * workers * per_worker {
            if have.iter().all(|h| *h >= per_worker) {
                return fleet;
            }
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a probe socket");
            sock.connect(server).expect("connect a probe socket");
            sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let before = worker_queries(metrics_port, workers);
            let q = wire::query(name, wire::A, attempt as u16, Some(1232));
            if sock.send(&q).is_err() || sock.recv(&mut fleet.buf).is_err() {
                continue;
            }
            let after = worker_queries(metrics_port, workers);
            let rose: Vec<usize> = (0..workers).filter(|&w| after[w] > before[w]).collect();
            if let [w] = rose[..] {
                if have[w] < per_worker {
                    have[w] += 1;
                    fleet.socks.push(sock);
                    fleet.worker.push(w);
                }
            }
        }
        panic!(
            "SO_REUSEPORT did not spread the probes' source ports over all {workers} workers: {have:?} of {per_worker} each"
        );
    }

    /// Asks `name` (A) from every socket, again and again, until each has had a reply
    /// `ok` accepts; the time of the last such reply, or None at `limit`.
    fn until_all(&mut self, name: &str, ok: &dyn Fn(&Reply) -> bool, limit: Instant) -> Option<Instant> {
        let mut pending: Vec<usize> = (0..self.socks.len()).collect();
        let mut last = None;
        let Fleet {
            socks, next_id, buf, ..
        } = self;
        loop {
            if Instant::now() > limit {
                return None;
            }
            *next_id = next_id.wrapping_add(1);
            let id = *next_id;
            let q = wire::query(name, wire::A, id, Some(1232));
            for &i in &pending {
                let _ = socks[i].send(&q);
            }
            let round_end = Instant::now() + Duration::from_millis(5);
            pending.retain(|&i| {
                loop {
                    let left = round_end.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return true;
                    }
                    let _ = socks[i].set_read_timeout(Some(left.max(Duration::from_micros(50))));
                    let Ok(n) = socks[i].recv(buf) else { return true };
                    match wire::parse_reply(&buf[..n]) {
                        Some(r) if r.id == id && ok(&r) => {
                            last = Some(Instant::now());
                            return false;
                        }
                        Some(r) if r.id == id => return true,
                        _ => {}
                    }
                }
            });
            if pending.is_empty() {
                return last;
            }
            std::thread::sleep(POLL_GAP);
        }
    }

    /// The median time for every socket to get one reply (the polling's resolution).
    fn round_trip(&mut self, name: &str) -> f64 {
        let mut rtt: Vec<f64> = (0..100)
            .filter_map(|_| {
                let t = Instant::now();
                self.until_all(name, &|_| true, t + Duration::from_secs(1))?;
                Some(t.elapsed().as_secs_f64() * 1e6)
            })
            .collect();
        median(&mut rtt)
    }
}

/// Time the server's threads named in `names` spent runnable but waiting for a CPU
/// (the second field of /proc/PID/task/TID/schedstat), in nanoseconds: what the host's
/// other load adds to the change-to-answer time, which the figures include.
fn runq_wait_ns(pid: u32, names: &[&str]) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| names.iter().any(|n| c.trim() == *n)))
        .filter_map(|t| {
            let text = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            text.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// The threads a change passes through before the workers can answer it.
const CHANGE_PATH: [&str; 2] = ["watch-services", "k8s-builder"];

/// The kinds of change the latency run times, in the order they take turns.
const CHANGE_KINDS: [&str; 3] = ["ADDED", "MODIFIED", "DELETED"];

/// Background changes at `rate` per second on services the measured changes never
/// touch (MODIFIED, ADDED, MODIFIED, DELETED in turn), until `stop`; how many it made.
fn churn(
    api: &FakeApi,
    world: &World,
    services: &[&Service],
    rate: u32,
    stop: &std::sync::atomic::AtomicBool,
) -> usize {
    use std::sync::atomic::Ordering;
    let start = Instant::now();
    // Bounded in time as well as by the caller's stop.
    let most = rate as usize * 600;
    let mut added: Option<Service> = None;
    for i in 0..most {
        if stop.load(Ordering::Relaxed) {
            return i;
        }
        let at = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let third = (i / 4 / 256 % 256) as u8;
        match i % 4 {
            1 => {
                let svc = Service {
                    namespace: i % world.namespaces.len(),
                    name: format!("bench-churn-{i}"),
                    cluster_ip: Some(Ipv4Addr::new(10, 114, third, (i / 4 % 256) as u8)),
                    ports: world.services[0].ports.clone(),
                    endpoints: vec![],
                };
                api.put_rendered(
                    true,
                    Resource::Services,
                    &world.namespaces[svc.namespace],
                    &svc.name,
                    |rv| world.service_json(&svc, 3_000_000 + i, rv, true, true),
                );
                added = Some(svc);
            }
            3 => {
                if let Some(svc) = added.take() {
                    api.delete("Service", &world.namespaces[svc.namespace], &svc.name);
                }
            }
            _ => {
                let mut svc = services[(i * 7919) % services.len()].clone();
                svc.cluster_ip = Some(Ipv4Addr::new(10, 115, third, (i / 2 % 256) as u8));
                api.put_rendered(
                    false,
                    Resource::Services,
                    &world.namespaces[svc.namespace],
                    &svc.name,
                    |rv| world.service_json(&svc, 4_000_000 + i, rv, true, true),
                );
            }
        }
    }
    most
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        f64::NAN
    } else {
        sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
    }
}

fn run_latency(a: &Args) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let sizes = a
        .services
        .clone()
        .unwrap_or(if a.quick { vec![10_000] } else { vec![10_000, 100_000] });
    let per_worker = 4;
    println!(
        "\n== (c) latency: change-to-answer on every worker, from a watch event written to the last worker's first correct answer"
    );
    println!(
        "data: N services, half headless x 5 ready endpoints (as in memory), through the fake API; clusterdns -workers {w} (pinned to CPU {SERVER_CPU}); probes from {p} source ports, {per_worker} reaching each worker (told by its clusterdns_udp_queries_total); {c} changes per N and churn rate, in turn ADDED (new service), MODIFIED (new ClusterIP), DELETED (the service added before), 10 ms apart; a change counts once every probe has had the new answer (NXDOMAIN for DELETED); each round asks from every probe still waiting and waits at most 5 ms, then {gap} us; at most 2 s per change. churn/s: background changes (MODIFIED, ADDED, DELETED of other services) while timing",
        w = a.workers,
        p = a.workers * per_worker,
        c = a.changes,
        gap = POLL_GAP.as_micros(),
    );
    let mut table = format!(
        "{:>8} {:>8} {:>9} {:>7} {:>8} {:>8} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8}\n",
        "services",
        "churn/s",
        "kind",
        "changes",
        "p50 ms",
        "p99 ms",
        "max ms",
        "timeouts",
        "round us",
        "runq p99",
        "own p99",
        "relists"
    );
    let mut floors = String::new();
    for &n in &sizes {
        let world = World::generate(&Shape::half_headless(n, a.seed));
        let api = FakeApi::bulk(Config::long_watches(), world.api_objects(1000));
        let dir = Scratch::new(&format!("latency-{n}"));
        let port = free_port();
        let metrics_port = free_port();
        let conf = dir.0.join("Corefile");
        std::fs::write(
            &conf,
            format!(
                ".:{port} {{\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{metrics_port}\n    kubernetes cluster.local in-addr.arpa {{\n        endpoint {}\n        ttl 5\n        startup_timeout 120s\n    }}\n}}\n",
                api.url()
            ),
        )
        .unwrap();
        let args = [
            "-workers".to_string(),
            a.workers.to_string(),
            "-conf".into(),
            conf.display().to_string(),
        ];
        let server = Server::spawn("clusterdns", Path::new(BIN), &args, SERVER_CPU, port, true);
        let probes = world.sync_probes();
        let mut probe = Probe::new(port);
        wait_answers(&mut probe, &probes, Instant::now() + Duration::from_secs(180))
            .expect("clusterdns did not answer correctly within 180 s of its start");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !RESOURCES.iter().all(|r| api.live_watches(*r) > 0) {
            assert!(
                Instant::now() < deadline,
                "the watches did not start within 30 s of the sync"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        wait_quiet(server.pid(), Duration::from_millis(250), Duration::from_secs(30));
        let mut fleet = Fleet::new(port, metrics_port, a.workers, per_worker, &probes[0].0);
        let round = fleet.round_trip(&probes[0].0);

        let clusterip: Vec<&Service> = world.services.iter().filter(|s| s.cluster_ip.is_some()).collect();
        let (measured, churned) = clusterip.split_at(clusterip.len() / 2);
        let mut serial = 0usize;
        for &rate in &a.churn {
            let lists_before: usize = lists_done(&api).iter().map(Vec::len).sum();
            let queries_before = worker_queries(metrics_port, a.workers);
            let stop = AtomicBool::new(false);
            let pid = server.pid();
            let (by_kind, own, timeouts, made, secs, mut runq) = std::thread::scope(|s| {
                let background = (rate > 0).then(|| s.spawn(|| churn(&api, &world, churned, rate, &stop)));
                if rate > 0 {
                    // Let the churn reach its pace before timing.
                    std::thread::sleep(Duration::from_secs(1));
                }
                let began = Instant::now();
                let mut by_kind: [Vec<f64>; 3] = Default::default();
                let mut own: [Vec<f64>; 3] = Default::default();
                let mut timeouts = [0usize; 3];
                let mut added: Option<Service> = None;
                let mut runq = Vec::with_capacity(a.changes);
                for k in 0..a.changes {
                    let waited = runq_wait_ns(pid, &CHANGE_PATH);
                    let kind = k % 3;
                    let third = (serial / 256 % 256) as u8;
                    let low = (serial % 256) as u8;
                    serial += 1;
                    let (svc, written_rv) = match CHANGE_KINDS[kind] {
                        "ADDED" => {
                            let svc = Service {
                                namespace: serial % world.namespaces.len(),
                                name: format!("bench-added-{serial}"),
                                cluster_ip: Some(Ipv4Addr::new(10, 112, third, low)),
                                ports: world.services[0].ports.clone(),
                                endpoints: vec![],
                            };
                            let ns = &world.namespaces[svc.namespace];
                            let rv = api.put_rendered(true, Resource::Services, ns, &svc.name, |rv| {
                                world.service_json(&svc, 2_000_000 + serial, rv, true, true)
                            });
                            added = Some(svc.clone());
                            (svc, rv)
                        }
                        "MODIFIED" => {
                            let mut svc = measured[(serial * 7919) % measured.len()].clone();
                            svc.cluster_ip = Some(Ipv4Addr::new(10, 113, third, low));
                            let ns = &world.namespaces[svc.namespace];
                            let rv = api.put_rendered(false, Resource::Services, ns, &svc.name, |rv| {
                                world.service_json(&svc, 2_000_000 + serial, rv, true, true)
                            });
                            (svc, rv)
                        }
                        _ => {
                            let svc = added.take().expect("a DELETED follows an ADDED");
                            let rv = api.delete("Service", &world.namespaces[svc.namespace], &svc.name);
                            (svc, rv)
                        }
                    };
                    let name = world.fqdn(&svc);
                    let want = world.addresses(&svc);
                    let deleted = kind == 2;
                    let written = api
                        .written(Resource::Services, written_rv, Duration::from_secs(2))
                        .expect("the services watch is live");
                    let ok = |r: &Reply| {
                        if deleted {
                            r.rcode == 3
                        } else {
                            r.rcode == 0 && r.addresses() == want
                        }
                    };
                    let answered = fleet.until_all(&name, &ok, written + Duration::from_secs(2));
                    let waited_ms = (runq_wait_ns(pid, &CHANGE_PATH) - waited) as f64 / 1e6;
                    runq.push(waited_ms * 1e3);
                    match answered {
                        Some(at) => {
                            let ms = at.saturating_duration_since(written).as_secs_f64() * 1e3;
                            by_kind[kind].push(ms);
                            own[kind].push((ms - waited_ms).max(0.0));
                        }
                        None => timeouts[kind] += 1,
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let secs = began.elapsed().as_secs_f64();
                stop.store(true, Ordering::Relaxed);
                let made = background.map_or(0, |h| h.join().expect("the churn thread"));
                (by_kind, own, timeouts, made, secs, runq)
            });
            runq.sort_by(f64::total_cmp);
            let runq = pct(&runq, 0.99);
            let queries_after = worker_queries(metrics_port, a.workers);
            let per_worker_queries: Vec<f64> = queries_after.iter().zip(&queries_before).map(|(x, y)| x - y).collect();
            assert!(
                per_worker_queries.iter().all(|q| *q >= a.changes as f64),
                "a worker answered fewer probes than there were changes: {per_worker_queries:?}"
            );
            let relists = lists_done(&api).iter().map(Vec::len).sum::<usize>() - lists_before;
            // The churn's achieved pace over the timed part and the second before it.
            let achieved = if rate > 0 { made as f64 / (secs + 1.0) } else { 0.0 };
            let mut all = Vec::new();
            for (kind, (mut l, mut o)) in by_kind.into_iter().zip(own).enumerate() {
                l.sort_by(f64::total_cmp);
                o.sort_by(f64::total_cmp);
                all.extend_from_slice(&l);
                let (p50, p99, max) = (pct(&l, 0.5), pct(&l, 0.99), pct(&l, 1.0));
                let own99 = pct(&o, 0.99);
                let _ = writeln!(
                    table,
                    "{n:>8} {achieved:>8.0} {:>9} {:>7} {p50:>8.2} {p99:>8.2} {max:>8.2} {:>9} {round:>9.0} {runq:>8.0} {own99:>8.2} {relists:>8}",
                    CHANGE_KINDS[kind],
                    l.len() + timeouts[kind],
                    timeouts[kind]
                );
                eprintln!(
                    "  N={n} churn {achieved:.0}/s {}: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms, {} timeouts",
                    CHANGE_KINDS[kind], timeouts[kind]
                );
                let floor = if n <= 10_000 { 5.0 } else { 20.0 };
                if kind != 1 {
                    let _ = writeln!(
                        floors,
                        "  {n} services, churn {achieved:.0}/s, {}: p99 {p99:.2} ms <= {floor} ms -> {} (without the CPU waits: {own99:.2} ms -> {})",
                        CHANGE_KINDS[kind],
                        verdict(p99 <= floor && timeouts[kind] == 0),
                        verdict(own99 <= floor && timeouts[kind] == 0)
                    );
                }
            }
            all.sort_by(f64::total_cmp);
            let _ = writeln!(
                table,
                "{n:>8} {achieved:>8.0} {:>9} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>9} {round:>9.0} {runq:>8.0} {:>8} {relists:>8}",
                "all",
                a.changes,
                pct(&all, 0.5),
                pct(&all, 0.99),
                pct(&all, 1.0),
                timeouts.iter().sum::<usize>(),
                "-"
            );
        }
        report_log_problems(&server);
        drop(server);
        drop(api);
    }
    print!("{table}");
    println!(
        "round us: the median time for all {} probes to get an unchanged answer once (the polling's resolution); runq us: p99 over the changes of the time the services watch thread and the builder waited runnable for a CPU between the change's write and its last answer (the host's load, which the figures include); own p99: p99 of each change's latency less that wait (an estimate of the figure on a host that does not take the CPU away)",
        a.workers * per_worker
    );
    if !floors.is_empty() {
        println!("floors (issue 14, item 5: additions and deletions, p99, every worker):\n{floors}");
    }
}
