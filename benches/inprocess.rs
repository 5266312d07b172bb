//! In-process bench: parse → route → chain → response, with no sockets, reporting
//! nanoseconds and heap allocations per query for a few kinds of answer.
//!
//! `cargo bench --bench inprocess` (add `-- --quick` for a short run).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use clusterdns::chain::WorkerCtx;
use clusterdns::config;
use clusterdns::dns::{Response, Transport};
use clusterdns::server::handler::{self, Handled};
use clusterdns::server::{BuildOptions, Server};

/// Counts allocations so the bench can show the query path makes none.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn query(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
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

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let iters: u64 = if quick { 200_000 } else { 2_000_000 };
    let mut hosts = String::new();
    for i in 0..1000 {
        hosts.push_str(&format!(
            "        10.{}.{}.{} svc{i}.example.org\n",
            i / 65536,
            (i / 256) % 256,
            i % 256
        ));
    }
    // The demo cluster dump from the repository, served by the kubernetes plugin.
    let dump = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/demo/cluster.json");
    let text = format!(
        "example.org:53 {{\n    hosts {{\n{hosts}        fallthrough\n    }}\n    whoami\n}}\n\
         cluster.local:53 in-addr.arpa:53 {{\n    kubernetes {{\n        endpoint file://{dump}\n    }}\n}}\n\
         cached.test:53 {{\n    cache 3600\n    hosts {{\n        10.9.9.9 www.cached.test\n    }}\n}}\n"
    );
    let corefile = config::parse_str(&text, "bench", Path::new(".")).expect("parses");
    let server = Server::build(
        &corefile,
        &BuildOptions {
            default_port: 53,
            workers: 1,
            config_dir: Path::new("."),
        },
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    // Loads the dump and waits for the first sync.
    server.start();
    let listener = server
        .listeners
        .iter()
        .find(|l| l.addr.is_ipv4())
        .expect("an IPv4 listener");
    let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let mut ctx = WorkerCtx::new(0);
    let mut resp = Response::new();

    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "hosts A hit (EDNS)",
            (0..1000)
                .map(|i| query(&format!("svc{i}.example.org"), 1, true))
                .collect(),
        ),
        (
            "hosts A hit (no EDNS)",
            (0..1000)
                .map(|i| query(&format!("svc{i}.example.org"), 1, false))
                .collect(),
        ),
        (
            "hosts NODATA (AAAA)",
            (0..1000)
                .map(|i| query(&format!("svc{i}.example.org"), 28, true))
                .collect(),
        ),
        ("whoami (fallthrough)", vec![query("nothere.example.org", 1, true)]),
        ("k8s A ClusterIP", vec![query("web.team-a.svc.cluster.local", 1, true)]),
        (
            "k8s A headless (3)",
            vec![query("db.team-a.svc.cluster.local", 1, true)],
        ),
        (
            "k8s SRV headless (3+3)",
            vec![query("_postgres._tcp.db.team-a.svc.cluster.local", 33, true)],
        ),
        ("k8s PTR ClusterIP", vec![query("10.0.96.10.in-addr.arpa", 12, true)]),
        (
            "k8s NXDOMAIN (search path)",
            vec![query("google.com.team-a.svc.cluster.local", 1, true)],
        ),
        (
            "k8s NODATA (AAAA)",
            vec![query("kube-dns.kube-system.svc.cluster.local", 28, true)],
        ),
        // The first query fills the cache from hosts; the rest are hits.
        ("cache hit (A)", vec![query("www.cached.test", 1, true)]),
        ("REFUSED (no zone)", vec![query("www.example.com", 1, true)]),
        (
            "FORMERR (2 questions)",
            vec![{
                let mut q = query("svc1.example.org", 1, false);
                q[5] = 2;
                q
            }],
        ),
    ];
    println!("{:<28} {:>10} {:>14}  reply", "case", "ns/query", "allocs/query");
    for (name, packets) in &cases {
        // Warm up (first-use allocations: thread-locals, buffers reaching size).
        for p in packets.iter().take(100) {
            let _ = handler::handle(listener, p, Transport::Udp, client, local, &mut ctx, &mut resp);
        }
        // Show what the case answers (rcode, answer count), so a wrong route cannot pass
        // for a fast answer.
        let _ = handler::handle(
            listener,
            &packets[0],
            Transport::Udp,
            client,
            local,
            &mut ctx,
            &mut resp,
        );
        let (rcode, answers) = (resp.rcode().name(), resp.count(clusterdns::dns::Section::Answer));
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let t0 = Instant::now();
        for i in 0..iters {
            let p = &packets[(i as usize) % packets.len()];
            match handler::handle(listener, p, Transport::Udp, client, local, &mut ctx, &mut resp) {
                Handled::Reply(_) => {
                    std::hint::black_box(resp.bytes());
                }
                _ => panic!("{name}: expected a reply"),
            }
        }
        let ns = t0.elapsed().as_nanos() as f64 / iters as f64;
        let allocs = (ALLOCS.load(Ordering::Relaxed) - a0) as f64 / iters as f64;
        println!("{name:<28} {ns:>10.1} {allocs:>14.3}  {rcode} {answers} answers");
    }
}
