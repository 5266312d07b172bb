//! Answers bench (issue 16, item 2): the server CPU that the largest answers of the
//! kubernetes plugin cost, on the release binary over loopback.
//!
//! ```text
//!   cargo bench --bench answers                         # every case, 5 rounds
//!   cargo bench --bench answers -- --rounds 3 --queries 200
//!   cargo bench --bench answers -- --only 4k,1000x4     # cases whose name contains a word
//!   cargo bench --bench answers -- --binary PATH        # another build (before a change)
//! ```
//!
//! One cluster, served by one clusterdns (`-workers 1`, pinned to CPU 1) from the bench's
//! fake Kubernetes API (`support/fake_api.rs`, LIST then WATCH, as the API serves it):
//!
//! * `big`: a headless service of 100,000 ready endpoints in 100 EndpointSlices of 1,000
//!   (`http/TCP/80`; every other endpoint named by a StatefulSet-like hostname, the
//!   others by their address with dashes);
//! * `four`: a headless service of 4,000 endpoints in 4 slices of 1,000;
//! * `quad`: a headless service of one slice of 1,000 endpoints with 4 ports (valid in
//!   Kubernetes: 4,000 SRV candidates);
//! * `shared`: a headless service of 10 slices of 1,000 endpoints that all have the one
//!   address 10.9.0.1, each with its own hostname (hostNetwork pods): 10,000 owners of an
//!   address, 10,000 distinct PTR targets.
//!
//! Each case sends one query at a time (UDP: EDNS 1232 unless noted, `no EDNS` is a bare
//! 512-byte query, the issue's 46-byte one for `quad`; TCP: one connection, 64 KiB
//! answers) `--queries` times (default 300, fewer if the case takes more than 10 s),
//! and reports the server's CPU time (all threads, /proc/PID/task/*/schedstat) over them
//! divided by the count: what one such query costs, syscalls included. Every reply is
//! checked (NOERROR, records, TC where the answer cannot fit). The figures are medians
//! of `--rounds` rounds (default 5), with the lowest and highest round; the issue's floor
//! is 1 ms of CPU for the worst query.
//!
//! With `--binary` pointing at a build whose answers are quadratic, a query that takes
//! longer than 20 s is reported as such, and the server is restarted for the next case.

#[path = "support/fake_api.rs"]
mod fake_api;
#[path = "support/procs.rs"]
mod procs;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fake_api::FakeApi;
use procs::{CLIENT_CPU, SERVER_CPU, Server, cpu_ns, median};

const BIN: &str = env!("CARGO_BIN_EXE_clusterdns");
const NS: &str = "bench";
/// The longest a single reply may take before the case is reported as stuck.
const STUCK: Duration = Duration::from_secs(20);
/// The time a case may take in one round; it stops early (with at least 3 queries).
const CASE_TIME: Duration = Duration::from_secs(10);

const A: u16 = 1;
const PTR: u16 = 12;
const SRV: u16 = 33;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Udp,
    UdpNoEdns,
    Tcp,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Udp => "UDP",
            Via::UdpNoEdns => "UDP no EDNS",
            Via::Tcp => "TCP",
        }
    }
}

/// One query to measure, and what its reply must show.
struct Case {
    name: &'static str,
    qname: String,
    qtype: u16,
    via: Via,
    /// The reply is truncated (TC) because the answer cannot fit.
    truncated: bool,
}

fn cases() -> Vec<Case> {
    let svc = |s: &str| format!("{s}.{NS}.svc.cluster.local");
    let c = |name, qname: String, qtype, via, truncated| Case {
        name,
        qname,
        qtype,
        via,
        truncated,
    };
    vec![
        c("100k SRV", format!("_http._tcp.{}", svc("big")), SRV, Via::Udp, true),
        c("100k SRV", format!("_http._tcp.{}", svc("big")), SRV, Via::Tcp, true),
        c("100k SRV (any port)", svc("big"), SRV, Via::UdpNoEdns, true),
        c("100k A", svc("big"), A, Via::Udp, true),
        c("100k A", svc("big"), A, Via::Tcp, true),
        c(
            "100k A (by port)",
            format!("_http._tcp.{}", svc("big")),
            A,
            Via::Tcp,
            true,
        ),
        c(
            "100k endpoint A",
            format!("big-4242.{}", svc("big")),
            A,
            Via::Udp,
            false,
        ),
        c(
            "100k endpoint A (dashes)",
            format!("10-0-16-147.{}", svc("big")),
            A,
            Via::Udp,
            false,
        ),
        c("4k SRV", format!("_http._tcp.{}", svc("four")), SRV, Via::Udp, true),
        c("4k SRV", format!("_http._tcp.{}", svc("four")), SRV, Via::Tcp, true),
        c("4k A", svc("four"), A, Via::Udp, true),
        c("4k A", svc("four"), A, Via::Tcp, false),
        c("1000x4 SRV", svc("quad"), SRV, Via::UdpNoEdns, true),
        c("1000x4 SRV", svc("quad"), SRV, Via::Tcp, true),
        c(
            "PTR shared address (10,000 owners)",
            "1.0.9.10.in-addr.arpa".into(),
            PTR,
            Via::Udp,
            true,
        ),
        c(
            "PTR shared address (10,000 owners)",
            "1.0.9.10.in-addr.arpa".into(),
            PTR,
            Via::Tcp,
            true,
        ),
    ]
}

struct Args {
    rounds: usize,
    queries: usize,
    only: Vec<String>,
    binary: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        rounds: 5,
        queries: 300,
        only: Vec::new(),
        binary: PathBuf::from(BIN),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => a.rounds = value().parse().expect("--rounds R"),
            "--queries" => a.queries = value().parse().expect("--queries N"),
            "--only" => a.only = value().split(',').map(String::from).collect(),
            "--binary" => a.binary = PathBuf::from(value()),
            "--bench" => {}
            other => panic!("unknown argument {other} (see the top of benches/answers.rs)"),
        }
    }
    a
}

// -------------------------------------------------------------------------------------
// The cluster, as API list items

fn namespace_json(name: &str) -> String {
    format!(r#"{{"metadata":{{"name":"{name}","resourceVersion":"1"}},"spec":{{}},"status":{{"phase":"Active"}}}}"#)
}

fn headless_json(name: &str, ports: &[(&str, u16)]) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|(n, p)| format!(r#"{{"name":"{n}","protocol":"TCP","port":{p},"targetPort":{p}}}"#))
        .collect();
    format!(
        r#"{{"metadata":{{"name":"{name}","namespace":"{NS}","resourceVersion":"1"}},"spec":{{"clusterIP":"None","clusterIPs":["None"],"type":"ClusterIP","ports":[{}]}},"status":{{}}}}"#,
        ports.join(",")
    )
}

/// An EndpointSlice of `service`: endpoints as (address, hostname).
fn slice_json(service: &str, n: usize, endpoints: &[(String, Option<String>)], ports: &[(&str, u16)]) -> String {
    let mut j = String::with_capacity(endpoints.len() * 96 + 512);
    let _ = write!(
        j,
        r#"{{"metadata":{{"name":"{service}-{n:04}","namespace":"{NS}","resourceVersion":"1","labels":{{"kubernetes.io/service-name":"{service}"}}}},"addressType":"IPv4","endpoints":["#
    );
    for (k, (ip, host)) in endpoints.iter().enumerate() {
        if k > 0 {
            j.push(',');
        }
        let _ = write!(j, r#"{{"addresses":["{ip}"],"conditions":{{"ready":true}}"#);
        if let Some(h) = host {
            let _ = write!(j, r#","hostname":"{h}""#);
        }
        j.push('}');
    }
    j.push_str(r#"],"ports":["#);
    let ports: Vec<String> = ports
        .iter()
        .map(|(n, p)| format!(r#"{{"name":"{n}","protocol":"TCP","port":{p}}}"#))
        .collect();
    j.push_str(&ports.join(","));
    j.push_str("]}");
    j
}

fn ip(base: u32, i: usize) -> String {
    std::net::Ipv4Addr::from(base + i as u32).to_string()
}

/// Namespaces, Services, EndpointSlices.
fn cluster() -> [Vec<String>; 3] {
    let http = [("http", 80)];
    let quad = [("a", 80), ("b", 443), ("c", 8080), ("d", 9090)];
    let mut services = Vec::new();
    let mut slices = Vec::new();
    // 10.0.0.0/15: `big`, 100,000 endpoints, every other one with a hostname.
    services.push(headless_json("big", &http));
    for s in 0..100 {
        let eps: Vec<(String, Option<String>)> = (s * 1000..(s + 1) * 1000)
            .map(|i| (ip(0x0A00_0000, i), (i % 2 == 0).then(|| format!("big-{i}"))))
            .collect();
        slices.push(slice_json("big", s, &eps, &http));
    }
    // 10.2.0.0/20: `four`.
    services.push(headless_json("four", &http));
    for s in 0..4 {
        let eps: Vec<(String, Option<String>)> =
            (s * 1000..(s + 1) * 1000).map(|i| (ip(0x0A02_0000, i), None)).collect();
        slices.push(slice_json("four", s, &eps, &http));
    }
    // 10.3.0.0/22: `quad`, 1,000 endpoints x 4 ports in one slice.
    services.push(headless_json("quad", &quad));
    let eps: Vec<(String, Option<String>)> = (0..1000).map(|i| (ip(0x0A03_0000, i), None)).collect();
    slices.push(slice_json("quad", 0, &eps, &quad));
    // `shared`: 10,000 endpoints on 10.9.0.1.
    services.push(headless_json("shared", &http));
    for s in 0..10 {
        let eps: Vec<(String, Option<String>)> = (s * 1000..(s + 1) * 1000)
            .map(|i| ("10.9.0.1".to_string(), Some(format!("h-{i}"))))
            .collect();
        slices.push(slice_json("shared", s, &eps, &http));
    }
    [vec![namespace_json(NS)], services, slices]
}

// -------------------------------------------------------------------------------------
// DNS

fn encode(name: &str, qtype: u16, id: u16, edns: bool) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)]);
    for label in name.trim_end_matches('.').split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    if edns {
        m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    }
    m
}

/// What the bench checks in a reply.
#[derive(Clone, Copy, Debug)]
struct Seen {
    id: u16,
    rcode: u8,
    tc: bool,
    answers: u16,
    bytes: usize,
}

fn look(msg: &[u8]) -> Option<Seen> {
    (msg.len() >= 12 && msg[2] & 0x80 != 0).then(|| Seen {
        id: u16::from_be_bytes([msg[0], msg[1]]),
        rcode: msg[3] & 0x0f,
        tc: msg[2] & 0x02 != 0,
        answers: u16::from_be_bytes([msg[6], msg[7]]),
        bytes: msg.len(),
    })
}

/// A client of one server for one case: sends a query, waits for its reply.
enum Client {
    Udp(UdpSocket, Vec<u8>),
    Tcp(TcpStream, Vec<u8>),
}

impl Client {
    fn new(port: u16, via: Via) -> Client {
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        match via {
            Via::Tcp => {
                let s = TcpStream::connect(to).expect("connect over TCP");
                s.set_nodelay(true).unwrap();
                s.set_read_timeout(Some(STUCK)).unwrap();
                Client::Tcp(s, vec![0; 65535])
            }
            _ => {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.connect(to).unwrap();
                s.set_read_timeout(Some(STUCK)).unwrap();
                Client::Udp(s, vec![0; 65535])
            }
        }
    }

    fn ask(&mut self, q: &[u8]) -> Option<Seen> {
        let id = u16::from_be_bytes([q[0], q[1]]);
        match self {
            Client::Udp(s, buf) => {
                s.send(q).ok()?;
                loop {
                    let n = s.recv(buf).ok()?;
                    if let Some(r) = look(&buf[..n]).filter(|r| r.id == id) {
                        return Some(r);
                    }
                }
            }
            Client::Tcp(s, buf) => {
                let mut frame = (q.len() as u16).to_be_bytes().to_vec();
                frame.extend_from_slice(q);
                s.write_all(&frame).ok()?;
                let mut len = [0u8; 2];
                s.read_exact(&mut len).ok()?;
                let n = u16::from_be_bytes(len) as usize;
                s.read_exact(&mut buf[..n]).ok()?;
                look(&buf[..n])
            }
        }
    }
}

// -------------------------------------------------------------------------------------
// Running

fn start_server(dir: &Path, binary: &Path, api: &str) -> Server {
    let port = procs::free_port();
    let conf = dir.join(format!("Corefile-{port}"));
    std::fs::write(
        &conf,
        format!(
            ".:{port} {{\n    bind 127.0.0.1\n    kubernetes cluster.local in-addr.arpa {{\n        endpoint {api}\n        startup_timeout 120s\n    }}\n}}\n"
        ),
    )
    .unwrap();
    let args = [
        "-workers".to_string(),
        "1".into(),
        "-conf".into(),
        conf.display().to_string(),
    ];
    let mut server = Server::spawn("clusterdns", binary, &args, SERVER_CPU, port, false);
    // Synced once the last objects answer: each service's first endpoint.
    let end = Instant::now() + Duration::from_secs(300);
    let probes = [
        ("big-98000.big", "10.1.126.208"),
        ("10-2-15-159.four", "10.2.15.159"),
        ("10-3-3-231.quad", "10.3.3.231"),
        ("h-9999.shared", "10.9.0.1"),
    ];
    for (name, _) in probes {
        let q = encode(&format!("{name}.{NS}.svc.cluster.local"), A, 7, true);
        loop {
            assert!(server.alive(), "the server exited while loading the cluster");
            assert!(Instant::now() < end, "the server did not load the cluster in 300 s");
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let _ = sock.send_to(&q, ("127.0.0.1", port));
            let mut buf = [0u8; 4096];
            if let Ok(n) = sock.recv(&mut buf) {
                if look(&buf[..n]).is_some_and(|r| r.rcode == 0 && r.answers == 1) {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    procs::wait_quiet(server.pid(), Duration::from_millis(300), Duration::from_secs(30));
    server
}

/// One round of one case: CPU per query in microseconds, or why it failed.
fn measure(server: &Server, case: &Case, queries: usize) -> Result<(f64, Seen), String> {
    let mut client = Client::new(server.port, case.via);
    let edns = case.via != Via::UdpNoEdns;
    let packets: Vec<Vec<u8>> = (0..queries.max(3))
        .map(|i| encode(&case.qname, case.qtype, i as u16 + 1, edns))
        .collect();
    // Warm: the first answers grow the worker's buffers.
    for p in packets.iter().take(3) {
        client
            .ask(p)
            .ok_or_else(|| format!("no reply within {} s", STUCK.as_secs()))?;
    }
    let before = cpu_ns(server.pid());
    let t0 = Instant::now();
    let mut sent = 0;
    let mut last = None;
    for p in &packets {
        let asked = Instant::now();
        let r = client
            .ask(p)
            .ok_or_else(|| format!("no reply within {} s", STUCK.as_secs()))?;
        let took = asked.elapsed();
        sent += 1;
        if r.rcode != 0 || r.answers == 0 {
            return Err(format!("rcode {} with {} answers", r.rcode, r.answers));
        }
        if r.tc != case.truncated {
            return Err(format!("TC {} (expected {})", r.tc, case.truncated));
        }
        last = Some(r);
        if t0.elapsed() > CASE_TIME && sent >= 3 || took > STUCK {
            break;
        }
    }
    let cpu = cpu_ns(server.pid()) - before;
    Ok((cpu as f64 / sent as f64 / 1000.0, last.expect("at least one")))
}

fn main() {
    let args = parse_args();
    procs::pin_to(CLIENT_CPU);
    let all = cases();
    let chosen: Vec<&Case> = all
        .iter()
        .filter(|c| args.only.is_empty() || args.only.iter().any(|w| c.name.contains(w.as_str())))
        .collect();
    let dir = procs::scratch("answers");
    let t = Instant::now();
    let items = cluster();
    let api = FakeApi::start(items, 10);
    let mut server = start_server(&dir.0, &args.binary, &api.url());
    println!(
        "clusterdns {} (-workers 1, pinned to CPU {SERVER_CPU}); cluster loaded through the fake API in {:.1} s",
        args.binary.display(),
        t.elapsed().as_secs_f64()
    );
    println!(
        "{} rounds, up to {} queries per case and round",
        args.rounds, args.queries
    );
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); chosen.len()];
    let mut notes: Vec<String> = vec![String::new(); chosen.len()];
    for round in 0..args.rounds {
        for (i, case) in chosen.iter().enumerate() {
            match measure(&server, case, args.queries) {
                Ok((us, seen)) => {
                    results[i].push(us);
                    notes[i] = format!(
                        "{} answers, {} bytes{}",
                        seen.answers,
                        seen.bytes,
                        if seen.tc { ", TC" } else { "" }
                    );
                }
                Err(why) => {
                    notes[i] = format!("round {}: {why}", round + 1);
                    // A stuck worker: start again for the next case.
                    drop(server);
                    server = start_server(&dir.0, &args.binary, &api.url());
                }
            }
        }
    }
    println!();
    println!(
        "{:<38} {:<12} {:>12} {:>10} {:>10}  reply",
        "case", "transport", "us CPU/query", "min", "max"
    );
    let mut worst: f64 = 0.0;
    for (i, case) in chosen.iter().enumerate() {
        let v = &mut results[i];
        if v.is_empty() {
            println!("{:<38} {:<12} {:>12}  {}", case.name, case.via.name(), "-", notes[i]);
            continue;
        }
        let lo = v.iter().cloned().fold(f64::MAX, f64::min);
        let hi = v.iter().cloned().fold(0.0, f64::max);
        let m = median(v);
        worst = worst.max(m);
        println!(
            "{:<38} {:<12} {:>12.1} {:>10.1} {:>10.1}  {}",
            case.name,
            case.via.name(),
            m,
            lo,
            hi,
            notes[i]
        );
    }
    println!();
    println!(
        "worst query: {worst:.1} us of server CPU (median) - issue 16 floor: under 1,000 us: {}",
        if worst < 1000.0 && results.iter().all(|r| !r.is_empty()) {
            "met"
        } else {
            "NOT met"
        }
    );
}
