//! Resolver bench (issue 5): what clusterdns's cache and forwarding cost, on the release
//! binary over loopback, next to references measured in the same run.
//!
//! ```text
//!   cargo bench --bench resolver                          # all three parts, default sizes
//!   cargo bench --bench resolver -- --only cache          # (a) cache hit vs kubernetes answer vs echo
//!   cargo bench --bench resolver -- --only forward        # (b) forwarding vs Unbound
//!   cargo bench --bench resolver -- --only shared         # (c) shared vs per-worker cache, 2 workers
//!   cargo bench --bench resolver -- --only callgrind      # (d) instructions per query (valgrind)
//!   cargo bench --bench resolver -- --quick               # smaller sets, shorter and fewer rounds
//!
//!   options: --only cache,forward,shared,callgrind   --rounds R   --seconds S   --quick
//!   CLUSTERDNS_BENCH_BIN=PATH runs another clusterdns build (before/after a change)
//!            --services N   --names N   --seed S
//! ```
//!
//! In (a) and (b) every server runs with one worker (`-workers 1`, Unbound `num-threads:
//! 1`), pinned to CPU 1 (`taskset`); the bench itself (the closed-loop load generator of
//! test kit (`testkit/src/load.rs`): 8 sockets x 16 queries in flight, sendmmsg/recvmmsg;
//! and the kit's fake upstream in its batched mode: one thread, recvmmsg/sendmmsg, every
//! A question answered with one A record of TTL 3600, every query counted) runs on CPU 0. The host is
//! shared and noisy: every part repeats `--rounds` times (default 3), the servers of a part
//! in a rotating order, and prints medians; ratios are of medians of the same run. Each
//! measurement is 0.5 s of warm-up load then `--seconds` (default 5) of measured load.
//!   * queries/s: answers received per second of measured load.
//!   * us CPU/query: the server's CPU time (all threads, /proc/PID/task/*/schedstat) over
//!     the measured load, divided by the answers: the figure that does not depend on how
//!     fast the client is.
//!   * answered: answers / queries sent (up to 128 still in flight when the load stops
//!     count as unanswered; a loss shows as more than that).
//!   * server busy: server CPU time over wall time. Well below 100% of a core, the client
//!     side (or a neighbour on the host) was the bottleneck that round.
//!   * upstream: queries the fake upstream received during the measured load.
//!
//! **(a) cache.** A generated cluster (`testkit/src/world.rs`, default 10,000 services, ~10%
//! headless) and the A names of its ClusterIP services, shuffled; the same query bytes go
//! to: clusterdns answering from the kubernetes plugin (`endpoint file://` on a
//! `kubectl get -o json` dump); clusterdns answering every one from `cache` (`cache 3600
//! { success 65536 }` in front of `forward` to the fake upstream, warmed with every name
//! before the load, and the upstream must see no query during it: all hits); and the
//! bare UDP echo of the kit (the loopback floor). Floor of the issue: a cache
//! hit costs no more than 1.2x the CPU of a kubernetes answer.
//!
//! **(b) forward.** clusterdns `forward . 127.0.0.1:UP` with no cache next to Unbound
//! (if installed: `apt-get install unbound`) as a pure forwarder to the same fake upstream
//! (`forward-zone "."`, `module-config: "iterator"`, `num-threads: 1`,
//! `qname-minimisation: no`, message and RRset caches of 64 KiB). Every query is a miss
//! for both: unique names (`qN.fwd.bench.`, a pre-encoded set, default 400,000, with its
//! own warm-up names), and if a fast round wraps around the set, Unbound's tiny cache has
//! long forgotten the first names. The upstream count per answer (about 1.00) shows that
//! each answer was forwarded. Floor of the issue: forwarded throughput per core at least
//! Unbound's in the same run.
//!
//! **(c) shared.** clusterdns with `-workers 2` on CPUs 0 and 1 (`taskset -c 0,1`; the
//! load generator and the fake upstream share CPU 0 with one worker, so compare the two
//! modes with each other, not with (a)), `cache 3600 { success 65536 }` + `forward`,
//! once with the default shared cache and once with `CLUSTERDNS_CACHE_PER_WORKER=1`.
//!   * cold pass: on a fresh server, `--names` distinct names (default 20,000), each
//!     asked from 16 sockets in turn (one socket asks them all, 32 in flight, then the
//!     next), so SO_REUSEPORT spreads the sockets over both workers. Upstream queries
//!     (the misses: the names once shared, once per worker reached per-worker), and RSS
//!     before and after.
//!   * hits: then the closed-loop load over the same names (all cached): queries/s, CPU
//!     per query (both workers), upstream queries during the load (0 expected).
//!
//! **(d) callgrind.** Not in the default run. The figure that does not depend on the
//! host's load: clusterdns (one worker) under `valgrind --tool=callgrind`, once answering
//! the (a) cluster's names from the kubernetes plugin and once forwarding (b)'s unique
//! names to the fake upstream; after a warm-up, the counters are zeroed
//! (`callgrind_control -z`), the closed-loop load runs `--seconds` (default 5; the
//! server runs some 50x slower, so a few thousand queries), and the dump
//! (`callgrind_control -d`) gives the instructions (Ir, all threads, user space only)
//! per answer. Floor of issue 14: a forwarded query costs at most 2.5x a kubernetes
//! answer; the ratio of instructions is printed next to it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::load::{CLIENT_CPU, LoadStats, SERVER_CPU, closed_loop, median};
use testkit::process::{Daemon as Server, Output, Scratch, Spawn, free_port};
use testkit::procfs::{self, rss_kb, wait_quiet};
use testkit::upstream::{FakeUpstream, Mode};
use testkit::wire::{self, Probe, Reply};
use testkit::world::{self, Rng, Shape, World};

const BIN: &str = env!("CARGO_BIN_EXE_clusterdns");

/// The clusterdns binary the bench runs: this build's, or `CLUSTERDNS_BENCH_BIN` (another
/// build, to compare two commits with the same bench).
fn bin() -> String {
    std::env::var("CLUSTERDNS_BENCH_BIN").unwrap_or_else(|_| BIN.to_string())
}
/// Queries in flight in a sweep (warm-up and cold passes).
const WINDOW: usize = 32;
/// Sockets of a cold pass in (c), one after the other. SO_REUSEPORT hashes each to a
/// worker: with 8, all landed on the same worker once in a few dozen runs (then the
/// per-worker hits missed in the other); with 16, once in 2^15.
const COLD_SOCKETS: usize = 16;
/// Success-cache capacity in (a) and (c): every name fits with room to spare in each of
/// the 256 shards (a full shard would evict, and hits would turn into misses).
const CACHE_CAPACITY: usize = 65536;
/// Queries the load generator keeps in flight (procs.rs: 8 sockets x 16).
const IN_FLIGHT: u64 = 128;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    Cache,
    Forward,
    Shared,
    Callgrind,
}

struct Args {
    parts: Vec<Part>,
    quick: bool,
    rounds: usize,
    seconds: f64,
    services: usize,
    names: usize,
    seed: u64,
}

fn parse_args() -> Args {
    let mut parts = vec![Part::Cache, Part::Forward, Part::Shared];
    let (mut quick, mut rounds, mut seconds, mut services, mut names, mut seed) = (false, None, None, None, None, 1);
    let mut it = std::env::args().skip(1);
    let value = |it: &mut dyn Iterator<Item = String>, flag: &str| -> String {
        it.next().unwrap_or_else(|| panic!("{flag} needs a value"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--only" => {
                parts = value(&mut it, "--only")
                    .split(',')
                    .map(|p| match p {
                        "cache" => Part::Cache,
                        "forward" => Part::Forward,
                        "shared" => Part::Shared,
                        "callgrind" => Part::Callgrind,
                        other => panic!("--only cache|forward|shared|callgrind, not {other}"),
                    })
                    .collect()
            }
            "--quick" => quick = true,
            "--rounds" => rounds = Some(value(&mut it, "--rounds").parse().expect("--rounds R")),
            "--seconds" => seconds = Some(value(&mut it, "--seconds").parse().expect("--seconds S")),
            "--services" => {
                services = Some(
                    value(&mut it, "--services")
                        .replace('_', "")
                        .parse()
                        .expect("--services N"),
                )
            }
            "--names" => names = Some(value(&mut it, "--names").replace('_', "").parse().expect("--names N")),
            "--seed" => seed = value(&mut it, "--seed").parse().expect("--seed S"),
            "--bench" => {}
            "--help" | "-h" => {
                println!("see the doc comment at the top of benches/resolver.rs");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other} (see the top of benches/resolver.rs)"),
        }
    }
    Args {
        parts,
        quick,
        rounds: rounds.unwrap_or(if quick { 1 } else { 3 }).max(1),
        seconds: seconds.unwrap_or(if quick { 2.0 } else { 5.0 }),
        services: services.unwrap_or(if quick { 2_000 } else { 10_000 }),
        names: names.unwrap_or(if quick { 5_000 } else { 20_000 }),
        seed,
    }
}

fn main() {
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some("--echo-server") {
        testkit::load::echo_server(argv.next().and_then(|p| p.parse().ok()).expect("port"));
    }
    let args = parse_args();
    println!("{}", machine());
    // Everything the bench runs (load, fake upstream, probes) stays off the server's CPU;
    // children inherit this, so every server is started under an explicit taskset.
    procfs::pin_to(CLIENT_CPU);
    let dir = Scratch::new("resolver");
    for &part in &args.parts {
        match part {
            Part::Cache => run_cache(&args, &dir.0),
            Part::Forward => run_forward(&args, &dir.0),
            Part::Shared => run_shared(&args, &dir.0),
            Part::Callgrind => run_callgrind(&args, &dir.0),
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
    let version = Command::new(bin())
        .arg("-version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).replace('\n', " ").trim().to_string())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    format!(
        "machine: {model}, {cpus} CPUs, Linux {}, load average {} at start; servers pinned to CPU {SERVER_CPU} (except in (c)), bench on CPU {CLIENT_CPU}\nbinary: {} ({version})\nrun: cargo bench --bench resolver -- {}",
        kernel.trim(),
        load.split_whitespace().next().unwrap_or("?"),
        bin(),
        args.join(" ")
    )
}

// -------------------------------------------------------------------------------------
// Servers

/// Starts `program args` on `cpus` (`0,1`) with `env` set (and the per-worker cache
/// knob removed unless `env` sets it, whatever the caller's environment says); standard
/// error goes to `stderr` if given (a chatty server), else to ours.
fn spawn(
    name: &str,
    program: &Path,
    args: &[String],
    cpus: &str,
    port: u16,
    env: &[(&str, &str)],
    stderr: Option<&Path>,
) -> Server {
    let cpus: Vec<usize> = cpus.split(',').map(|c| c.parse().expect("a CPU number")).collect();
    let mut spawn = Spawn::new(program)
        .name(name)
        .args(args)
        .pin(&cpus)
        .env_remove("CLUSTERDNS_CACHE_PER_WORKER")
        .stdin(Stdio::null())
        .stdout(Output::Null)
        .stderr(stderr.map_or(Output::Inherit, |p| Output::File(p.to_path_buf())));
    for (k, v) in env {
        spawn = spawn.env(k, v);
    }
    Server {
        process: spawn.start(),
        port,
    }
}

fn clusterdns(
    dir: &Path,
    port: u16,
    body: &str,
    workers: usize,
    cpus: &str,
    env: &[(&str, &str)],
    name: &str,
) -> Server {
    let conf = dir.join(format!("Corefile-{port}"));
    std::fs::write(&conf, format!(".:{port} {{\n    bind 127.0.0.1\n{body}}}\n")).unwrap();
    let args = [
        "-workers".to_string(),
        workers.to_string(),
        "-conf".into(),
        conf.display().to_string(),
    ];
    spawn(name, Path::new(&bin()), &args, cpus, port, env, None)
}

fn kubernetes_body(dump: &Path) -> String {
    format!(
        "    kubernetes cluster.local in-addr.arpa {{\n        endpoint file://{}\n        startup_timeout 120s\n    }}\n",
        dump.display()
    )
}

fn forward_body(upstream: u16, cache: bool) -> String {
    let cache = if cache {
        format!("    cache 3600 {{\n        success {CACHE_CAPACITY}\n    }}\n")
    } else {
        String::new()
    };
    format!("{cache}    forward . 127.0.0.1:{upstream}\n")
}

fn echo(port: u16) -> Server {
    let args = ["--echo-server".to_string(), port.to_string()];
    let exe = std::env::current_exe().unwrap();
    spawn("echo", &exe, &args, &SERVER_CPU.to_string(), port, &[], None)
}

/// Spawns a server on a free port and waits until `ready`; on failure, again on another
/// port (3 tries): a port free a moment ago may be taken when the server binds it, since
/// every forwarded query (and every test running next to the bench) opens an ephemeral
/// UDP port.
fn start(spawn: impl Fn(u16) -> Server, ready: impl Fn(&mut Server) -> bool) -> Option<Server> {
    for _ in 0..3 {
        let mut server = spawn(free_port());
        if ready(&mut server) {
            return Some(server);
        }
        eprintln!(
            "{} on port {} did not start: trying another port",
            server.name, server.port
        );
    }
    None
}

/// Asks `name` until the answer satisfies `ok` (60 s at most).
fn wait_ready(server: &mut Server, name: &str, ok: impl Fn(&Reply) -> bool) -> bool {
    let mut probe = Probe::new(server.port);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if !server.running() {
            eprintln!("{} exited before it answered", server.name);
            return false;
        }
        match probe.ask(name, wire::A, Duration::from_millis(100)) {
            Some(r) if ok(&r) => return true,
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
            None => {}
        }
    }
    eprintln!("{} did not answer {name} correctly within 60 s", server.name);
    false
}

/// Any NOERROR answer with an A record: a forwarder (or echo: any reply) is up.
fn answers(r: &Reply) -> bool {
    r.rcode == 0 && !r.addresses().is_empty()
}

fn unbound_binary() -> Option<PathBuf> {
    ["unbound", "/usr/sbin/unbound"].iter().map(PathBuf::from).find(|p| {
        Command::new(p)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

fn unbound_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("-V")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Unbound as a pure forwarder: one thread, no validator, caches small enough to forget
/// a name long before the bench asks it again.
fn unbound(bin: &Path, dir: &Path, port: u16, upstream: u16) -> Server {
    let d = dir.join(format!("unbound-{port}"));
    std::fs::create_dir_all(&d).unwrap();
    let conf = format!(
        "server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    chroot: \"\"
    username: \"\"
    directory: \"{d}\"
    pidfile: \"\"
    logfile: \"\"
    use-syslog: no
    verbosity: 0
    qname-minimisation: no
    module-config: \"iterator\"
    msg-cache-size: 64k
    msg-cache-slabs: 1
    rrset-cache-size: 64k
    rrset-cache-slabs: 1
    key-cache-slabs: 1
    infra-cache-slabs: 1
    statistics-interval: 0
remote-control:
    control-enable: no
forward-zone:
    name: \".\"
    forward-addr: 127.0.0.1@{upstream}
",
        d = d.display()
    );
    let path = d.join("unbound.conf");
    std::fs::write(&path, conf).unwrap();
    let args = ["-d".to_string(), "-c".into(), path.display().to_string()];
    // Its notices (start and end of service) would break up the bench's output.
    let log = d.join("stderr");
    spawn("unbound", bin, &args, &SERVER_CPU.to_string(), port, &[], Some(&log))
}

// -------------------------------------------------------------------------------------
// Load

/// What a sweep saw.
#[derive(Clone, Copy, Default, Debug)]
struct Swept {
    sent: u64,
    answered: u64,
    /// NOERROR replies with at least one answer record.
    with_answer: u64,
}

/// Sends every query once from each of `sockets` new sockets in turn, WINDOW in flight,
/// waiting at most 200 ms for a window's replies: a warm-up or a cold pass, not a
/// measurement (one syscall per datagram).
fn sweep(port: u16, queries: &[Vec<u8>], sockets: usize) -> Swept {
    let mut s = Swept::default();
    let mut buf = [0u8; 1500];
    for _ in 0..sockets {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        for chunk in queries.chunks(WINDOW) {
            for q in chunk {
                if sock.send(q).is_ok() {
                    s.sent += 1;
                }
            }
            for _ in 0..chunk.len() {
                let Ok(n) = sock.recv(&mut buf) else { break };
                s.answered += 1;
                if n >= 12 && buf[3] & 0x0f == 0 && u16::from_be_bytes([buf[6], buf[7]]) > 0 {
                    s.with_answer += 1;
                }
            }
        }
    }
    s
}

/// One measured load on a running server.
struct Measured {
    r: LoadStats,
    wall: f64,
    cpu_ns: f64,
    /// Queries the fake upstream received during the measured load.
    upstream: u64,
    rss_kb: u64,
}

impl Measured {
    fn qps(&self) -> f64 {
        self.r.replies as f64 / self.wall
    }

    fn us(&self) -> f64 {
        self.cpu_ns / 1000.0 / self.r.replies.max(1) as f64
    }

    fn answered(&self) -> f64 {
        self.r.replies as f64 / self.r.sent.max(1) as f64
    }

    fn busy(&self) -> f64 {
        self.cpu_ns / 1e9 / self.wall
    }
}

/// 0.5 s of load over `warm`, then `seconds` measured over `queries`.
fn measure(
    server: &Server,
    warm: &Arc<Vec<Vec<u8>>>,
    queries: &Arc<Vec<Vec<u8>>>,
    seconds: f64,
    upstream: Option<&FakeUpstream>,
) -> Measured {
    let pid = server.pid();
    closed_loop(server.port, warm, 0.5);
    let u0 = upstream.map_or(0, FakeUpstream::received);
    let c0 = procfs::cpu_ns(pid);
    let t0 = Instant::now();
    let r = closed_loop(server.port, queries, seconds);
    let wall = t0.elapsed().as_secs_f64();
    let cpu_ns = (procfs::cpu_ns(pid) - c0) as f64;
    let upstream = upstream.map_or(0, FakeUpstream::received) - u0;
    Measured {
        r,
        wall,
        cpu_ns,
        upstream,
        rss_kb: rss_kb(pid),
    }
}

/// The fake upstream of every part: on CPU 0, batched, every A question answered with
/// one A record of TTL 3600 (nothing cached expires during a bench), counted, not kept.
fn bench_upstream() -> FakeUpstream {
    FakeUpstream::builder()
        .mode(Mode::Hashed)
        .ttl(3600)
        .recording(false)
        .pin(CLIENT_CPU)
        .start()
}

/// Per-round figures of one server; medians at the end.
#[derive(Default)]
struct Samples {
    qps: Vec<f64>,
    us: Vec<f64>,
    answered: Vec<f64>,
    unanswered: Vec<f64>,
    other: Vec<f64>,
    busy: Vec<f64>,
    upstream: Vec<f64>,
    /// Upstream queries per answer.
    per_answer: Vec<f64>,
    rss_kb: Vec<f64>,
}

impl Samples {
    fn push(&mut self, m: &Measured) {
        self.qps.push(m.qps());
        self.us.push(m.us());
        self.answered.push(m.answered());
        self.unanswered.push(m.r.sent.saturating_sub(m.r.replies) as f64);
        self.other.push(m.r.other_rcode() as f64);
        self.busy.push(m.busy());
        self.upstream.push(m.upstream as f64);
        self.per_answer.push(m.upstream as f64 / m.r.replies.max(1) as f64);
        self.rss_kb.push(m.rss_kb as f64);
    }
}

fn round_line(round: usize, kind: &str, m: &Measured) {
    eprintln!(
        "  round {round}: {kind:<11} {:>9.0} q/s {:>6.2} us CPU/query (server CPU {:.0}%, answered {}/{} = {:.4}, other rcodes {}, upstream queries {})",
        m.qps(),
        m.us(),
        m.busy() * 100.0,
        m.r.replies,
        m.r.sent,
        m.answered(),
        m.r.other_rcode(),
        m.upstream
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT MET" }
}

fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

// -------------------------------------------------------------------------------------
// (a) cache hit vs kubernetes answer

fn run_cache(a: &Args, dir: &Path) {
    let shape = Shape::mixed(a.services, a.seed);
    let world = World::generate(&shape);
    let dump_path = dir.join("cluster.json");
    let dump = world.kubectl_dump(1000);
    std::fs::write(&dump_path, &dump).unwrap();
    let mut services: Vec<&world::Service> = world.services.iter().filter(|s| s.cluster_ip.is_some()).collect();
    shuffle(&mut services, &mut Rng::new(a.seed ^ 0xA));
    let names: Vec<String> = services.iter().map(|s| world.fqdn(s)).collect();
    let queries: Arc<Vec<Vec<u8>>> = Arc::new(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| wire::query(n, wire::A, i as u16, Some(1232)))
            .collect(),
    );
    let upstream = bench_upstream();

    println!("\n== (a) cache hit vs kubernetes answer: server CPU per A query, one worker on CPU {SERVER_CPU}");
    println!(
        "data: {}; A queries for its {} ClusterIP services, shuffled and cycled; the same query bytes to every server",
        shape.describe(),
        names.len()
    );
    println!(
        "servers: kubernetes (endpoint file://, kubectl dump {:.1} MB); cache (cache 3600 {{ success {CACHE_CAPACITY} }} + forward . fake upstream, warmed with every name, all hits); echo (the loopback floor)",
        dump.len() as f64 / 1e6
    );
    println!(
        "load: {} rounds x {} s per server after 0.5 s warm-up; 8 sockets x 16 in flight",
        a.rounds, a.seconds
    );

    let kinds = ["kubernetes", "cache", "echo"];
    let mut samples: HashMap<&str, Samples> = HashMap::new();
    let mut notes = Vec::new();
    for round in 0..a.rounds {
        for k in 0..kinds.len() {
            let kind = kinds[(k + round) % kinds.len()];
            let spawn = |port| match kind {
                "kubernetes" => clusterdns(
                    dir,
                    port,
                    &kubernetes_body(&dump_path),
                    1,
                    &SERVER_CPU.to_string(),
                    &[],
                    "clusterdns",
                ),
                "cache" => clusterdns(
                    dir,
                    port,
                    &forward_body(upstream.port(), true),
                    1,
                    &SERVER_CPU.to_string(),
                    &[],
                    "clusterdns",
                ),
                _ => echo(port),
            };
            let ready = |server: &mut Server| match kind {
                "kubernetes" => {
                    let last = world.services.last().unwrap();
                    let (name, want) = (world.fqdn(last), world.addresses(last));
                    wait_ready(server, &name, |r| r.rcode == 0 && r.addresses() == want)
                }
                "cache" => wait_ready(server, "ready.probe.bench.", answers),
                _ => wait_ready(server, "ready.probe.bench.", |_| true),
            };
            let Some(server) = start(spawn, ready) else {
                continue;
            };
            let port = server.port;
            if kind == "cache" {
                let u0 = upstream.received();
                let warm = sweep(port, &queries, 1);
                let misses = upstream.received() - u0;
                let again = sweep(port, &queries, 1);
                if round == 0 {
                    notes.push(format!(
                        "cache warm-up: {} names asked, {} NOERROR answers, {misses} upstream queries; asked again: {} answers, {} upstream queries",
                        names.len(),
                        warm.with_answer,
                        again.with_answer,
                        upstream.received() - u0 - misses
                    ));
                }
            }
            if round == 0 && kind != "echo" {
                // What one answer looks like, TTL included.
                let mut probe = Probe::new(port);
                let got = probe.ask(&names[0], wire::A, Duration::from_millis(500));
                notes.push(format!(
                    "{kind} answers {}: {}",
                    names[0],
                    got.map_or("no answer".to_string(), |r| format!(
                        "{} [{}]",
                        r.rcode_name(),
                        r.answers.join("; ")
                    ))
                ));
            }
            let m = measure(&server, &queries, &queries, a.seconds, Some(&upstream));
            round_line(round, kind, &m);
            samples.entry(kind).or_default().push(&m);
            drop(server);
        }
    }
    for n in &notes {
        println!("{n}");
    }

    let mut out = String::new();
    let _ = writeln!(out, "medians of {} round(s):", a.rounds);
    let _ = writeln!(
        out,
        "{:<11} {:>11} {:>13} {:>9} {:>11} {:>12} {:>9}",
        "server", "queries/s", "us CPU/query", "answered", "server busy", "upstream q.", "RSS MiB"
    );
    let mut med: HashMap<&str, (f64, f64)> = HashMap::new();
    for kind in kinds {
        let Some(s) = samples.get_mut(kind) else { continue };
        let (q, u) = (median(&mut s.qps), median(&mut s.us));
        med.insert(kind, (q, u));
        let _ = writeln!(
            out,
            "{kind:<11} {q:>11.0} {u:>13.2} {:>9.4} {:>10.0}% {:>12.0} {:>9.1}",
            median(&mut s.answered),
            median(&mut s.busy) * 100.0,
            median(&mut s.upstream),
            median(&mut s.rss_kb) / 1024.0
        );
    }
    for (x, y) in [("cache", "kubernetes"), ("kubernetes", "echo"), ("cache", "echo")] {
        if let (Some(&(xq, xu)), Some(&(yq, yu))) = (med.get(x), med.get(y)) {
            let _ = writeln!(
                out,
                "{x} / {y}: CPU per query {:.2}x, queries/s {:.2}x",
                xu / yu,
                xq / yq
            );
        }
    }
    if let (Some(&(_, cu)), Some(&(_, ku))) = (med.get("cache"), med.get("kubernetes")) {
        let _ = writeln!(
            out,
            "floor (issue 5): A cache hit costs no more than 1.2x the CPU of a kubernetes answer: {cu:.2} vs {ku:.2} us = {:.2}x -> {}",
            cu / ku,
            verdict(cu <= 1.2 * ku)
        );
    }
    if let Some(s) = samples.get("cache") {
        if s.upstream.iter().any(|&u| u > 0.0) {
            let _ = writeln!(
                out,
                "WARNING: the upstream saw queries during a cache load ({:?}): not all were hits",
                s.upstream
            );
        }
    }
    print!("{out}");
}

// -------------------------------------------------------------------------------------
// (b) forwarding vs Unbound

fn run_forward(a: &Args, dir: &Path) {
    let unique = if a.quick { 100_000 } else { 400_000 };
    let warm_count = unique / 8;
    // Unique names: no cache anywhere can answer them; the IDs vary as a client's would.
    let queries: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..unique)
            .map(|i| wire::query(&format!("q{i}.fwd.bench."), wire::A, i as u16, Some(1232)))
            .collect(),
    );
    let warm: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..warm_count)
            .map(|i| wire::query(&format!("w{i}.fwd.bench."), wire::A, i as u16, Some(1232)))
            .collect(),
    );
    let upstream = bench_upstream();
    let unbound_bin = unbound_binary();

    println!(
        "\n== (b) forwarding vs Unbound: every query a miss, forwarded to the fake upstream on CPU {CLIENT_CPU}; one worker/thread on CPU {SERVER_CPU}"
    );
    println!(
        "servers: clusterdns (forward . 127.0.0.1:UP, no cache); {}",
        match &unbound_bin {
            Some(b) => format!(
                "unbound {} (forward-zone \".\", module-config iterator, num-threads 1, 64 KiB caches)",
                unbound_version(b).trim_start_matches("Version ")
            ),
            None => "unbound: not installed (apt-get install unbound), SKIPPED".to_string(),
        }
    );
    println!(
        "load: {} rounds x {} s per server after 0.5 s warm-up on {warm_count} other names; {unique} unique names (qN.fwd.bench. A) cycled; 8 sockets x 16 in flight",
        a.rounds, a.seconds
    );

    let mut kinds = vec!["clusterdns"];
    if unbound_bin.is_some() {
        kinds.push("unbound");
    }
    // Both must give the same answer to the same question.
    let mut check: HashMap<&str, Vec<Option<Reply>>> = HashMap::new();
    let mut samples: HashMap<&str, Samples> = HashMap::new();
    let mut wrapped = Vec::new();
    for round in 0..a.rounds {
        for k in 0..kinds.len() {
            let kind = kinds[(k + round) % kinds.len()];
            let spawn = |port| match (kind, &unbound_bin) {
                ("unbound", Some(bin)) => unbound(bin, dir, port, upstream.port()),
                _ => clusterdns(
                    dir,
                    port,
                    &forward_body(upstream.port(), false),
                    1,
                    &SERVER_CPU.to_string(),
                    &[],
                    "clusterdns",
                ),
            };
            let ready = |server: &mut Server| {
                let ok = wait_ready(server, "ready.probe.bench.", answers);
                if !ok && kind == "unbound" {
                    let log = dir.join(format!("unbound-{}", server.port)).join("stderr");
                    eprintln!("unbound said: {}", std::fs::read_to_string(log).unwrap_or_default());
                }
                ok
            };
            let Some(server) = start(spawn, ready) else {
                continue;
            };
            let port = server.port;
            if round == 0 {
                let mut probe = Probe::new(port);
                let got = (0..3)
                    .map(|i| probe.ask(&format!("check-{i}.fwd.bench."), wire::A, Duration::from_millis(500)))
                    .collect();
                check.insert(kind, got);
            }
            let m = measure(&server, &warm, &queries, a.seconds, Some(&upstream));
            round_line(round, kind, &m);
            if m.r.sent > unique as u64 {
                wrapped.push(format!("{kind} round {round}: {} queries sent", m.r.sent));
            }
            samples.entry(kind).or_default().push(&m);
            drop(server);
        }
    }
    match (check.get("clusterdns"), check.get("unbound")) {
        (Some(x), Some(y)) => {
            let same = x
                .iter()
                .zip(y)
                .filter(|(x, y)| matches!((x, y), (Some(x), Some(y)) if x.rcode == y.rcode && x.answers == y.answers));
            println!(
                "answer check: {}/{} names got the same rcode and answer RRset (TTLs included) from clusterdns and unbound; e.g. {}",
                same.count(),
                x.len(),
                x[0].as_ref().map_or("no answer".into(), |r| r.answers.join("; "))
            );
        }
        _ => println!("answer check: needs both clusterdns and unbound (not compared)"),
    }
    if !wrapped.is_empty() {
        println!(
            "note: the set of {unique} names wrapped around ({}): harmless (no cache in clusterdns, Unbound's holds a few hundred entries); see upstream/answer",
            wrapped.join(", ")
        );
    }

    let mut out = String::new();
    let _ = writeln!(out, "medians of {} round(s):", a.rounds);
    let _ = writeln!(
        out,
        "{:<11} {:>11} {:>13} {:>12} {:>9} {:>11} {:>7} {:>12} {:>11} {:>9}",
        "server",
        "queries/s",
        "us CPU/query",
        "q/CPU-second",
        "answered",
        "unanswered",
        "errors",
        "upstream/ans",
        "server busy",
        "RSS MiB"
    );
    let mut med: HashMap<&str, (f64, f64)> = HashMap::new();
    for kind in &kinds {
        let Some(s) = samples.get_mut(kind) else { continue };
        let (q, u) = (median(&mut s.qps), median(&mut s.us));
        med.insert(kind, (q, u));
        let _ = writeln!(
            out,
            "{kind:<11} {q:>11.0} {u:>13.2} {:>12.0} {:>9.4} {:>11.0} {:>7.0} {:>12.3} {:>10.0}% {:>9.1}",
            1e6 / u,
            median(&mut s.answered),
            median(&mut s.unanswered),
            median(&mut s.other),
            median(&mut s.per_answer),
            median(&mut s.busy) * 100.0,
            median(&mut s.rss_kb) / 1024.0
        );
    }
    let _ = writeln!(
        out,
        "(unanswered: sent - answered, up to {IN_FLIGHT} of them still in flight when the load stopped; errors: replies with an rcode other than NOERROR/NXDOMAIN, e.g. SERVFAIL)"
    );
    for kind in &kinds {
        let Some(s) = samples.get_mut(kind) else { continue };
        let busy = median(&mut s.busy);
        if busy < 0.9 {
            let _ = writeln!(
                out,
                "note: {kind} was {:.0}% busy: CPU {CLIENT_CPU} (load generator and fake upstream, and neighbours) was the limit, so its queries/s understates what one core of it forwards; q/CPU-second (1 / CPU per query) does not",
                busy * 100.0
            );
        }
    }
    if let (Some(&(cq, cu)), Some(&(uq, uu))) = (med.get("clusterdns"), med.get("unbound")) {
        let _ = writeln!(
            out,
            "clusterdns / unbound: queries/s {:.2}x, CPU per query {:.2}x",
            cq / uq,
            cu / uu
        );
        let _ = writeln!(
            out,
            "floor (issue 5): Forwarded throughput per core at least Unbound's in the same run: {cq:.0} vs {uq:.0} q/s = {:.2}x -> {} (per CPU-second: {:.0} vs {:.0})",
            cq / uq,
            verdict(cq >= uq),
            1e6 / cu,
            1e6 / uu
        );
    }
    print!("{out}");
}

// -------------------------------------------------------------------------------------
// (c) shared vs per-worker cache

#[derive(Default)]
struct ColdSamples {
    misses: Vec<f64>,
    answered: Vec<f64>,
    rss_before_kb: Vec<f64>,
    rss_after_kb: Vec<f64>,
    secs: Vec<f64>,
}

fn run_shared(a: &Args, dir: &Path) {
    let names = a.names;
    let queries: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..names)
            .map(|i| wire::query(&format!("n{i}.shared.bench."), wire::A, i as u16, Some(1232)))
            .collect(),
    );
    let upstream = bench_upstream();
    let cpus = format!("{CLIENT_CPU},{SERVER_CPU}");

    println!(
        "\n== (c) shared vs per-worker cache: clusterdns -workers 2 on CPUs {cpus} (taskset), cache 3600 {{ success {CACHE_CAPACITY} }} + forward . fake upstream"
    );
    println!(
        "note: the load generator and the fake upstream share CPU {CLIENT_CPU} with one worker: compare the two modes with each other, not with (a)"
    );
    println!(
        "cold pass: {names} distinct names, each asked from {COLD_SOCKETS} sockets in turn ({WINDOW} in flight), on a fresh server; then hits: {} s of closed-loop load over the same names after 0.5 s warm-up; {} rounds",
        a.seconds, a.rounds
    );

    let modes = [("shared", "0"), ("per-worker", "1")];
    let mut hits: HashMap<&str, Samples> = HashMap::new();
    let mut cold: HashMap<&str, ColdSamples> = HashMap::new();
    for round in 0..a.rounds {
        for k in 0..modes.len() {
            let (mode, knob) = modes[(k + round) % modes.len()];
            let env = [("CLUSTERDNS_CACHE_PER_WORKER", knob)];
            let spawn = |port| {
                clusterdns(
                    dir,
                    port,
                    &forward_body(upstream.port(), true),
                    2,
                    &cpus,
                    &env,
                    "clusterdns",
                )
            };
            let ready = |server: &mut Server| wait_ready(server, "ready.probe.bench.", answers);
            let Some(server) = start(spawn, ready) else {
                continue;
            };
            let port = server.port;
            // Idle before the first name: what the empty cache costs.
            wait_quiet(server.pid(), Duration::from_millis(100), Duration::from_secs(2));
            let rss_before = rss_kb(server.pid());
            let u0 = upstream.received();
            let t0 = Instant::now();
            let swept = sweep(port, &queries, COLD_SOCKETS);
            let secs = t0.elapsed().as_secs_f64();
            let misses = upstream.received() - u0;
            let rss_after = rss_kb(server.pid());
            eprintln!(
                "  round {round}: {mode:<11} cold pass: {misses} upstream queries for {names} names x {COLD_SOCKETS} sockets ({:.2} per name), answered {}/{}, RSS {:.1} -> {:.1} MiB, {secs:.1} s",
                misses as f64 / names as f64,
                swept.with_answer,
                swept.sent,
                rss_before as f64 / 1024.0,
                rss_after as f64 / 1024.0
            );
            let c = cold.entry(mode).or_default();
            c.misses.push(misses as f64);
            c.answered.push(swept.with_answer as f64 / swept.sent.max(1) as f64);
            c.rss_before_kb.push(rss_before as f64);
            c.rss_after_kb.push(rss_after as f64);
            c.secs.push(secs);
            let m = measure(&server, &queries, &queries, a.seconds, Some(&upstream));
            round_line(round, mode, &m);
            hits.entry(mode).or_default().push(&m);
            drop(server);
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "medians of {} round(s); hits (server CPU: both workers, in % of one core):",
        a.rounds
    );
    let _ = writeln!(
        out,
        "{:<11} {:>11} {:>13} {:>9} {:>16} {:>12}",
        "mode", "queries/s", "us CPU/query", "answered", "server CPU", "upstream q."
    );
    let mut med: HashMap<&str, (f64, f64)> = HashMap::new();
    for (mode, _) in modes {
        let Some(s) = hits.get_mut(mode) else { continue };
        let (q, u) = (median(&mut s.qps), median(&mut s.us));
        med.insert(mode, (q, u));
        let _ = writeln!(
            out,
            "{mode:<11} {q:>11.0} {u:>13.2} {:>9.4} {:>15.0}% {:>12.0}",
            median(&mut s.answered),
            median(&mut s.busy) * 100.0,
            median(&mut s.upstream)
        );
    }
    let _ = writeln!(out, "cold pass ({names} names x {COLD_SOCKETS} sockets):");
    let _ = writeln!(
        out,
        "{:<11} {:>14} {:>15} {:>9} {:>13} {:>13} {:>11} {:>9}",
        "mode", "upstream q.", "misses/name", "answered", "RSS idle MiB", "RSS after", "growth MiB", "seconds"
    );
    for (mode, _) in modes {
        let Some(c) = cold.get_mut(mode) else { continue };
        let (before, after) = (median(&mut c.rss_before_kb), median(&mut c.rss_after_kb));
        let misses = median(&mut c.misses);
        let _ = writeln!(
            out,
            "{mode:<11} {misses:>14.0} {:>15.2} {:>9.4} {:>13.1} {:>13.1} {:>11.1} {:>9.1}",
            misses / names as f64,
            median(&mut c.answered),
            before / 1024.0,
            after / 1024.0,
            (after - before) / 1024.0,
            median(&mut c.secs)
        );
    }
    for (mode, _) in modes {
        if let Some(s) = hits.get(mode) {
            if s.upstream.iter().any(|&u| u > 0.0) {
                let _ = writeln!(
                    out,
                    "WARNING: {mode}: the upstream saw queries during a hit load ({:?}): not all were hits (per-worker: the cold pass reached one worker only)",
                    s.upstream
                );
            }
        }
    }
    if let (Some(&(pq, pu)), Some(&(sq, su))) = (med.get("per-worker"), med.get("shared")) {
        let _ = writeln!(
            out,
            "per-worker / shared (hits): CPU per query {:.2}x, queries/s {:.2}x",
            pu / su,
            pq / sq
        );
    }
    print!("{out}");
}

// ------------------------------------------------------------------------------------
// (d) instructions per query under callgrind

fn run_callgrind(a: &Args, dir: &Path) {
    let has = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    println!("\n== (d) instructions per query: clusterdns (one worker) under callgrind");
    if !has("valgrind") {
        println!("valgrind: not installed, SKIPPED");
        return;
    }
    let shape = Shape::mixed(a.services, a.seed);
    let world = World::generate(&shape);
    let dump_path = dir.join("cluster-cg.json");
    std::fs::write(&dump_path, world.kubectl_dump(1000)).unwrap();
    let k8s: Arc<Vec<Vec<u8>>> = Arc::new(
        world
            .services
            .iter()
            .filter(|s| s.cluster_ip.is_some())
            .enumerate()
            .map(|(i, s)| wire::query(&world.fqdn(s), wire::A, i as u16, Some(1232)))
            .collect(),
    );
    let fwd = |prefix: &str, n: usize| -> Arc<Vec<Vec<u8>>> {
        Arc::new(
            (0..n)
                .map(|i| wire::query(&format!("{prefix}{i}.fwd.bench."), wire::A, i as u16, Some(1232)))
                .collect(),
        )
    };
    let (fwd_warm, fwd_queries) = (fwd("cw", 20_000), fwd("cq", 200_000));
    let upstream = bench_upstream();
    println!(
        "data: {}; load: 1 s warm-up, then {} s measured, closed loop (8 sockets x 16 in flight); Ir = instructions executed in user space, all threads",
        shape.describe(),
        a.seconds
    );
    let mut per_query: HashMap<&str, f64> = HashMap::new();
    for (kind, body, warm, queries) in [
        ("kubernetes", kubernetes_body(&dump_path), &k8s, &k8s),
        ("forward", forward_body(upstream.port(), false), &fwd_warm, &fwd_queries),
    ] {
        let port = free_port();
        let conf = dir.join(format!("Corefile-cg-{port}"));
        std::fs::write(&conf, format!(".:{port} {{\n    bind 127.0.0.1\n{body}}}\n")).unwrap();
        let out = dir.join(format!("callgrind-{kind}.out"));
        let args = [
            "--tool=callgrind".to_string(),
            // Every dump names its functions in full (callgrind_annotate reads it alone).
            "--compress-strings=no".into(),
            format!("--callgrind-out-file={}", out.display()),
            bin(),
            "-workers".into(),
            "1".into(),
            "-conf".into(),
            conf.display().to_string(),
        ];
        let log = dir.join(format!("valgrind-{kind}.log"));
        let mut server = spawn(
            kind,
            Path::new("valgrind"),
            &args,
            &SERVER_CPU.to_string(),
            port,
            &[],
            Some(&log),
        );
        let ok = if kind == "kubernetes" {
            let last = world.services.last().unwrap();
            let (name, want) = (world.fqdn(last), world.addresses(last));
            wait_ready(&mut server, &name, |r| r.rcode == 0 && r.addresses() == want)
        } else {
            wait_ready(&mut server, "ready.probe.bench.", answers)
        };
        if !ok {
            println!("{kind}: did not start under valgrind, SKIPPED");
            continue;
        }
        closed_loop(port, warm, 1.0);
        let pid = server.pid().to_string();
        let control = |flag: &str| {
            let ok = Command::new("callgrind_control")
                .args([flag, &pid])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "callgrind_control {flag} {pid} failed");
        };
        control("-z");
        let r = closed_loop(port, queries, a.seconds);
        control("-d");
        // The dump is written next to the out file, numbered: the newest one. A copy
        // stays in the temporary directory for callgrind_annotate.
        let newest = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("callgrind-{kind}.out"))
            })
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
        if let Some(e) = &newest {
            let keep = std::env::temp_dir().join(format!("clusterdns-callgrind-{kind}.out"));
            if std::fs::copy(e.path(), &keep).is_ok() {
                println!("{kind}: dump kept as {}", keep.display());
            }
        }
        let totals = newest
            .and_then(|e| std::fs::read_to_string(e.path()).ok())
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("summary: ")
                        .or_else(|| l.strip_prefix("totals: "))
                        .map(str::to_string)
                })
            })
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()));
        let Some(ir) = totals else {
            println!("{kind}: no callgrind dump found, SKIPPED");
            continue;
        };
        let q = ir as f64 / r.replies.max(1) as f64;
        println!(
            "{kind:<12} {:>8} answers  {:>14} Ir  {:>10.0} Ir/query  (answered {}/{})",
            r.replies, ir, q, r.replies, r.sent
        );
        per_query.insert(kind, q);
        drop(server);
    }
    if let (Some(f), Some(k)) = (per_query.get("forward"), per_query.get("kubernetes")) {
        println!(
            "forward / kubernetes: instructions per query {:.2}x (floor of issue 14, for CPU: <= 2.5x)",
            f / k
        );
    }
}
