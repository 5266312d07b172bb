//! Loopback load bench: queries per second and server CPU time per query, for
//! clusterdns next to references measured in the same run (a bare UDP echo responder,
//! the floor; Knot DNS serving the same names from a zone file, if `knotd` is installed).
//!
//! The server under test is pinned to one CPU with one worker, the load generator to
//! the other. The load generator is closed-loop (a fixed number of queries in flight
//! over several sockets), batches with sendmmsg/recvmmsg, and pre-encodes its
//! queries, so it is not the bottleneck. Server CPU comes from the kernel's per-thread
//! accounting (/proc/PID/task/*/schedstat, nanoseconds).
//!
//!   cargo bench --bench load                  # 3 rounds of 5 s per server
//!   cargo bench --bench load -- --rounds 5 --seconds 10 --servers clusterdns,knot,echo

use std::io::Write;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::load::{LoadStats, SERVER_CPU, closed_loop, echo_server, median};
use testkit::process::{Output, Process, Scratch, Spawn, free_port};
use testkit::procfs::{cpu_ns, rss_kb};
use testkit::wire::query;

struct Args {
    rounds: usize,
    seconds: f64,
    servers: Vec<String>,
    names: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        rounds: 3,
        seconds: 5.0,
        servers: vec!["echo".into(), "clusterdns".into(), "knot".into()],
        names: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds S"),
            "--servers" => {
                a.servers = it
                    .next()
                    .expect("--servers LIST")
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            "--names" => a.names = it.next().and_then(|v| v.parse().ok()).expect("--names N"),
            "--quick" => {
                a.rounds = 1;
                a.seconds = 2.0;
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// A server process under test (stopped on drop) and its scratch directory.
struct Running {
    process: Process,
    port: u16,
    _dir: Scratch,
}

fn names(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("svc{i}.ns{}.example.org", i % 10),
                format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
            )
        })
        .collect()
}

fn start(kind: &str, data: &[(String, String)]) -> Option<Running> {
    let port = free_port();
    let dir = Scratch::new(kind);
    let (program, args): (PathBuf, Vec<String>) = match kind {
        "clusterdns" => {
            let mut hosts = String::new();
            for (name, ip) in data {
                hosts.push_str(&format!("{ip} {name}\n"));
            }
            std::fs::write(dir.0.join("hosts"), hosts).unwrap();
            let corefile = format!(
                "example.org:{port} {{\n    bind 127.0.0.1\n    hosts {} {{\n        reload 0\n    }}\n}}\n",
                dir.0.join("hosts").display()
            );
            std::fs::write(dir.0.join("Corefile"), corefile).unwrap();
            let conf = dir.0.join("Corefile").display().to_string();
            let args = ["-quiet", "-workers", "1", "-conf", &conf];
            (env!("CARGO_BIN_EXE_clusterdns").into(), args.map(String::from).to_vec())
        }
        "knot" => {
            if Command::new("knotd").arg("--version").output().is_err() {
                eprintln!("knotd not installed (apt-get install knot): skipping knot");
                return None;
            }
            let mut zone = String::from(
                "$ORIGIN example.org.\n$TTL 3600\n@ IN SOA ns.example.org. hostmaster.example.org. 1 7200 1800 86400 5\n@ IN NS ns\nns IN A 127.0.0.1\n",
            );
            for (name, ip) in data {
                zone.push_str(&format!("{name}. IN A {ip}\n"));
            }
            std::fs::write(dir.0.join("example.org.zone"), zone).unwrap();
            let conf = format!(
                "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\ncontrol:\n    listen: \"{d}/knot.sock\"\nlog:\n  - target: stderr\n    any: warning\ndatabase:\n    storage: \"{d}\"\ntemplate:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\n    semantic-checks: off\nzone:\n  - domain: example.org\n    file: example.org.zone\n",
                d = dir.0.display()
            );
            std::fs::write(dir.0.join("knot.conf"), conf).unwrap();
            let conf = dir.0.join("knot.conf").display().to_string();
            ("knotd".into(), vec!["-c".into(), conf])
        }
        "echo" => {
            // The floor: this very program, as a one-thread recvmmsg/sendmmsg echo.
            let args = vec!["--echo-server".into(), port.to_string()];
            (std::env::current_exe().unwrap(), args)
        }
        other => panic!("unknown server {other}"),
    };
    // The server runs on SERVER_CPU only, whatever it spawns.
    let process = Spawn::new(program)
        .name(kind)
        .args(args)
        .pin(&[SERVER_CPU])
        .stdin(Stdio::null())
        .stdout(Output::Null)
        .stderr(Output::Inherit)
        .start();
    let running = Running {
        process,
        port,
        _dir: dir,
    };
    // Wait until it answers.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let q = query(&data[0].0, 1, 7, Some(1232));
    let end = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 512];
    while Instant::now() < end {
        let _ = sock.send_to(&q, ("127.0.0.1", port));
        if sock.recv(&mut buf).is_ok() {
            // knotd spawns its threads later than it answers: pin them all again.
            let _ = Command::new("taskset")
                .args([
                    "-a",
                    "-p",
                    "-c",
                    &SERVER_CPU.to_string(),
                    &running.process.pid().to_string(),
                ])
                .stdout(Stdio::null())
                .status();
            return Some(running);
        }
    }
    eprintln!("{kind} did not answer within 20s");
    None
}

/// Closed-loop load for `seconds`; returns (answered, lost).
fn main() {
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some("--echo-server") {
        echo_server(argv.next().and_then(|p| p.parse().ok()).expect("port"));
    }
    let args = parse_args();
    let data = names(args.names);
    let queries: Arc<Vec<Vec<u8>>> = Arc::new(
        data.iter()
            .enumerate()
            .map(|(i, (n, _))| query(n, 1, i as u16, Some(1232)))
            .collect(),
    );
    let mut results: Vec<(String, Vec<f64>, Vec<f64>, u64)> = args
        .servers
        .iter()
        .map(|s| (s.clone(), Vec::new(), Vec::new(), 0))
        .collect();
    for round in 0..args.rounds {
        for r in results.iter_mut() {
            let Some(server) = start(&r.0, &data) else { continue };
            let pid = server.process.pid();
            // Warm-up, then the measured pass.
            closed_loop(server.port, &queries, 0.5);
            let c0 = cpu_ns(pid);
            let t0 = Instant::now();
            let LoadStats {
                replies: answered,
                lost,
                ..
            } = closed_loop(server.port, &queries, args.seconds);
            let wall = t0.elapsed().as_secs_f64();
            let cpu = (cpu_ns(pid) - c0) as f64;
            let qps = answered as f64 / wall;
            let us_per_q = cpu / 1000.0 / answered.max(1) as f64;
            r.1.push(qps);
            r.2.push(us_per_q);
            r.3 = r.3.max(rss_kb(pid));
            eprintln!(
                "round {round}: {:<11} {qps:>10.0} q/s  {us_per_q:>6.2} us CPU/query  (lost {lost}, cpu {:.0}%)",
                r.0,
                cpu / 1e9 / wall * 100.0
            );
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nmedians over {} rounds of {} s (server pinned to CPU {SERVER_CPU}, one worker):",
        args.rounds, args.seconds
    );
    let _ = writeln!(
        out,
        "{:<12} {:>12} {:>14} {:>10}",
        "server", "queries/s", "us CPU/query", "RSS MiB"
    );
    let mut medians = Vec::new();
    for r in results.iter_mut().filter(|r| !r.1.is_empty()) {
        let (q, c) = (median(&mut r.1), median(&mut r.2));
        medians.push((r.0.clone(), c));
        let _ = writeln!(out, "{:<12} {q:>12.0} {c:>14.2} {:>10.1}", r.0, r.3 as f64 / 1024.0);
    }
    let find = |n: &str| medians.iter().find(|(m, _)| m == n).map(|(_, c)| *c);
    if let Some(ours) = find("clusterdns") {
        for reference in ["echo", "knot"] {
            if let Some(c) = find(reference) {
                let _ = writeln!(out, "clusterdns CPU/query = {:.2} x {reference}", ours / c);
            }
        }
    }
}
