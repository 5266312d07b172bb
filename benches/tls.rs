//! DNS over TLS against plain DNS over TCP, both on one reused connection (issue 13:
//! a DoT query costs at most 3x a TCP one), on the release binary over loopback.
//!
//! ```text
//!   cargo bench --bench tls                      # 5 rounds of 2,000 queries a case
//!   cargo bench --bench tls -- --rounds 3 --queries 500
//!   cargo bench --bench tls -- --quick
//! ```
//!
//! One clusterdns (`-workers 1`, pinned to CPU 1) serves the same `hosts` answer on a
//! plain port and on a `tls://` port whose certificate (ECDSA P-256) a CA made by the
//! bench signed. The client (pinned to CPU 0) keeps one connection per case, sends one
//! query at a time and waits for its reply:
//!
//! * `tcp`: DNS over TCP on one connection (what `answers` measures for TCP);
//! * `dot`: DNS over TLS 1.3 on one connection, its handshake done before the clock
//!   starts (connection reuse, as resolvers and `forward` do);
//! * `dot-handshake`: a new TLS connection per query (handshake and teardown included),
//!   for scale only: no floor.
//!
//! Each round reports the server's CPU per query (all threads,
//! /proc/PID/task/*/schedstat, over the queries sent) and the client's round trip per
//! query; the figures are medians of the rounds (this machine is shared and noisy),
//! with the ratio of `dot` to `tcp`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use testkit::load::{CLIENT_CPU, SERVER_CPU, median};
use testkit::process::{Daemon as Server, Scratch, free_port};
use testkit::procfs::{cpu_ns, pin_to, wait_quiet};
use testkit::tls::{DotClient, Pki};
use testkit::wire::{Client, Header, query};

const BIN: &str = env!("CARGO_BIN_EXE_clusterdns");
/// The server name of the bench's certificate.
const NAME: &str = "dns.bench.test";

struct Args {
    rounds: usize,
    queries: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        rounds: 5,
        queries: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--queries" => a.queries = it.next().and_then(|v| v.parse().ok()).expect("--queries N"),
            "--quick" => {
                a.rounds = 1;
                a.queries = 300;
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Tcp,
    Dot,
    DotHandshake,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Tcp => "tcp",
            Case::Dot => "dot",
            Case::DotHandshake => "dot-handshake",
        }
    }
}

/// One round: (server CPU us per query, client round trip us per query).
fn round(server: &Server, dot: u16, pki: &Pki, case: Case, queries: usize) -> (f64, f64) {
    let tcp_to = SocketAddr::from(([127, 0, 0, 1], server.port));
    let dot_to = SocketAddr::from(([127, 0, 0, 1], dot));
    let config = pki.client_config(None);
    let packets: Vec<Vec<u8>> = (0..queries)
        .map(|i| query("a.bench.test", 1, i as u16, Some(1232)))
        .collect();
    let check = |r: &[u8]| {
        let h = Header::of_reply(r).expect("a reply");
        assert!(h.rcode == 0 && h.ancount == 1, "unexpected reply");
    };
    let mut tcp = Client::new(tcp_to, true, Duration::from_secs(5));
    let mut dotc = DotClient::connect(dot_to, NAME, config.clone()).expect("dot connect");
    // Warm both connections (buffers, session tickets).
    for p in packets.iter().take(5) {
        check(tcp.ask(p).expect("tcp reply"));
        check(&dotc.ask(p).expect("dot reply"));
    }
    wait_quiet(server.pid(), Duration::from_millis(100), Duration::from_secs(5));
    let before = cpu_ns(server.pid());
    let t0 = Instant::now();
    for p in &packets {
        match case {
            Case::Tcp => check(tcp.ask(p).expect("tcp reply")),
            Case::Dot => check(&dotc.ask(p).expect("dot reply")),
            Case::DotHandshake => {
                let mut c = DotClient::connect(dot_to, NAME, config.clone()).expect("dot connect");
                check(&c.ask(p).expect("dot reply"));
            }
        }
    }
    let wall = t0.elapsed();
    let cpu = cpu_ns(server.pid()) - before;
    (
        cpu as f64 / queries as f64 / 1000.0,
        wall.as_secs_f64() * 1e6 / queries as f64,
    )
}

fn main() {
    let args = parse_args();
    pin_to(CLIENT_CPU);
    let dir = Scratch::new("tls-bench");
    let pki = Pki::new(&dir.0, "bench");
    let leaf = pki.leaf("server", &[NAME]);
    let (port, dot) = (free_port(), free_port());
    let conf = dir.0.join("Corefile");
    let hosts = "    hosts {\n        192.0.2.53 a.bench.test\n    }\n";
    std::fs::write(
        &conf,
        format!(
            ".:{port} {{\n    bind 127.0.0.1\n{hosts}}}\ntls://.:{dot} {{\n    bind 127.0.0.1\n    tls {} {}\n{hosts}}}\n",
            leaf.cert.display(),
            leaf.key.display()
        ),
    )
    .unwrap();
    let server_args = [
        "-workers".to_string(),
        "1".into(),
        "-conf".into(),
        conf.display().to_string(),
    ];
    let mut server = Server::spawn("clusterdns", BIN.as_ref(), &server_args, SERVER_CPU, port, false);
    let end = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", dot)).is_err() {
        assert!(server.running() && Instant::now() < end, "the server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "DoT vs TCP, one query at a time, {} queries a round, {} rounds (medians; min..max)",
        args.queries, args.rounds
    );
    println!(
        "{:<14} {:>22} {:>22}",
        "case", "server CPU us/query", "round trip us/query"
    );
    let mut medians = Vec::new();
    for case in [Case::Tcp, Case::Dot, Case::DotHandshake] {
        let n = if case == Case::DotHandshake {
            (args.queries / 10).max(20)
        } else {
            args.queries
        };
        let (mut cpu, mut rtt): (Vec<f64>, Vec<f64>) =
            (0..args.rounds).map(|_| round(&server, dot, &pki, case, n)).unzip();
        let range = |v: &[f64]| {
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            format!("{lo:.1}..{hi:.1}")
        };
        let (rc, rr) = (range(&cpu), range(&rtt));
        let (mc, mr) = (median(&mut cpu), median(&mut rtt));
        println!("{:<14} {:>8.2} ({:>12}) {:>8.2} ({:>12})", case.name(), mc, rc, mr, rr);
        medians.push((mc, mr));
    }
    let (tcp, dotm) = (medians[0], medians[1]);
    let (cpu_ratio, rtt_ratio) = (dotm.0 / tcp.0, dotm.1 / tcp.1);
    println!("dot / tcp: server CPU {cpu_ratio:.2}x, round trip {rtt_ratio:.2}x (floor: 3x)");
    server.signal(libc::SIGTERM);
    let _ = server.wait_exit(Duration::from_secs(5));
    assert!(
        cpu_ratio <= 3.0,
        "a DoT query costs {cpu_ratio:.2}x a TCP one in server CPU"
    );
}
