//! In-process bench: parse → route → chain → response, with no sockets, reporting
//! nanoseconds and heap allocations per query for a few kinds of answer.
//!
//! `cargo bench --bench inprocess` (add `-- --quick` for a short run).
//!
//! A second table answers the largest queries of issue 16 from a snapshot built in
//! memory (a headless service of 100,000 endpoints in 100 slices, one of 1,000
//! endpoints x 4 ports, 10,000 endpoints sharing one address): the kubernetes plugin's
//! chain alone, over UDP (EDNS 1232) and TCP (64 KiB), so the figures are the answer's
//! own cost, without the syscalls `benches/answers.rs` includes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use std::sync::Arc;

use clusterdns::chain::{Chain, Handler, Outcome, Query, RouteTag, WorkerCtx};
use clusterdns::config;
use clusterdns::dns::{Request, Response, Section, Transport};
use clusterdns::kubernetes::model::{Endpoint, EndpointSlice, Namespace, Object, Port, Resource, Service, ServiceKind};
use clusterdns::kubernetes::snapshot::{ClusterStore, StoreOptions};
use clusterdns::plugin::kubernetes::{Kubernetes, setup};
use clusterdns::server::handler::{self, Handled};
use clusterdns::server::{BuildOptions, Server};
use clusterdns::setup::SetupCtx;

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

/// template's block: AKS's two templates (NXDOMAIN for search-path junk), an A
/// synthesized from the name's captures, and one with a variable and a condition.
const TEMPLATES: &str = r#"internal.cloudapp.net:53 reddog.microsoft.com:53 synth.test:53 expr.test:53 {
    template ANY ANY internal.cloudapp.net {
        match "^([^.]+[.]){4,}internal[.]cloudapp[.]net[.]$"
        rcode NXDOMAIN
        fallthrough
    }
    template ANY ANY reddog.microsoft.com {
        rcode NXDOMAIN
    }
    template IN A synth.test {
        match "^ip-(?P<a>[0-9]+)-(?P<b>[0-9]+)-(?P<c>[0-9]+)-(?P<d>[0-9]+)[.]synth[.]test[.]$"
        answer "{{ .Name }} 60 IN A {{ .Group.a }}.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
    }
    template IN A expr.test {
        match "^ip-(?P<ip>[0-9]+(-[0-9]+){3})[.]expr[.]test[.]$"
        var ip replace(group('ip'), '-', '.')
        expr incidr(ip, '10.0.0.0/8')
        answer "{{ .Name }} 60 IN A {{ .Var.ip }}"
    }
    whoami
}
"#;

/// The small plugins around a cache (issue 13): what each adds to a cache hit.
const SMALL: &str = "small.test:53 localhost:53 {
    bufsize 1100
    nsid bench-node
    any
    local
    minimal
    cache 3600
    hosts {
        10.8.8.8 www.small.test
    }
}
";

/// [`query`] with EDNS asking for 4096 bytes (which bufsize lowers) and an NSID option.
fn query_nsid(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = query(name, qtype, true);
    let opt = q.len() - 11;
    q[opt + 3..opt + 5].copy_from_slice(&4096u16.to_be_bytes());
    q[opt + 9..opt + 11].copy_from_slice(&4u16.to_be_bytes());
    q.extend_from_slice(&[0, 3, 0, 0]);
    q
}

/// `text` as a Corefile, built as the server builds it (port 53, one worker), not started.
fn build_server(text: &str) -> Server {
    let corefile = config::parse_str(text, "bench", Path::new(".")).expect("parses");
    Server::build(
        &corefile,
        &BuildOptions {
            default_port: 53,
            workers: 1,
            config_dir: Path::new("."),
            plugins: clusterdns::plugin::PLUGINS,
            process: &clusterdns::process::ProcessState::new(),
        },
    )
    .unwrap_or_else(|e| panic!("{e:?}"))
}

fn query(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    testkit::wire::query(name, qtype, 0x1234, edns.then_some(1232))
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // Words that are not flags pick the cases whose names contain one of them
    // (`cargo bench --bench inprocess -- --quick rewrite`); the large answers run only
    // when nothing is picked.
    let picked: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
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
         cached.test:53 {{\n    cache 3600\n    hosts {{\n        10.9.9.9 www.cached.test\n    }}\n}}\n\
         team-a.example:53 {{\n    rewrite name suffix .team-a.example. .team-a.svc.cluster.local. answer auto\n    \
         kubernetes cluster.local {{\n        endpoint file://{dump}\n    }}\n}}\n\
         exact.example:53 {{\n    rewrite name exact web.exact.example. web.team-a.svc.cluster.local.\n    \
         kubernetes cluster.local {{\n        endpoint file://{dump}\n    }}\n}}\n\
         ext.test:53 {{\n    kubernetes cluster.local {{\n        endpoint file://{dump}\n    }}\n    k8s_external ext.test {{\n        headless\n    }}\n}}\n\
         {TEMPLATES}{SMALL}"
    );
    // A zone file like a team's internal zone, served by `file` (issue 13: its answer
    // costs no more than the kubernetes answer above).
    let zone_dir = std::env::temp_dir().join(format!("clusterdns-bench-zone-{}", std::process::id()));
    std::fs::create_dir_all(&zone_dir).unwrap();
    let mut zone = String::from(
        "$ORIGIN file.test.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 3600 1209600 60\n  IN NS ns1\n  IN NS ns2\n\
         ns1 IN A 192.0.2.53\nns2 IN A 192.0.2.54\nwww IN A 192.0.2.80\n    IN AAAA 2001:db8::80\n",
    );
    for i in 0..1000 {
        zone.push_str(&format!(
            "host{i} IN A 10.{}.{}.{}\n",
            i / 65536,
            (i / 256) % 256,
            i % 256
        ));
    }
    let zone_file = zone_dir.join("db.file.test");
    std::fs::write(&zone_file, zone).unwrap();
    let text = format!("{text}file.test:53 {{\n    file {}\n}}\n", zone_file.display());
    let server = build_server(&text);
    // Loads the dump and waits for the first sync.
    server.start();
    // The zone was read at setup.
    let _ = std::fs::remove_dir_all(&zone_dir);
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
        // The same question of a zone file (`file`): one A, the apex NS in authority.
        ("file A", vec![query("www.file.test", 1, true)]),
        (
            "file A (1000 names)",
            (0..1000)
                .map(|i| query(&format!("host{i}.file.test"), 1, true))
                .collect(),
        ),
        ("file NXDOMAIN", vec![query("nothere.file.test", 1, true)]),
        // The same Service through a rewrite rule (issue 12: at most 1.15x the line above).
        ("rewrite suffix -> k8s A", vec![query("web.team-a.example", 1, true)]),
        ("rewrite exact -> k8s A", vec![query("web.exact.example", 1, true)]),
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
        // k8s_external over the same snapshot (the demo's services have no external
        // addresses: `headless` answers the headless one from its endpoints).
        (
            "k8s_external A headless (3)",
            vec![query("db.team-a.ext.test", 1, true)],
        ),
        (
            "k8s_external SRV headless",
            vec![query("_postgres._tcp.db.team-a.ext.test", 33, true)],
        ),
        ("k8s_external NXDOMAIN", vec![query("web.team-a.ext.test", 1, true)]),
        (
            "template NXDOMAIN (AKS junk)",
            vec![query("web.team-a.svc.cluster.local.internal.cloudapp.net", 1, true)],
        ),
        (
            "template NXDOMAIN (no regex)",
            vec![query("x.reddog.microsoft.com", 1, true)],
        ),
        ("template A (captures)", vec![query("ip-10-1-2-3.synth.test", 1, true)]),
        ("template A (var + expr)", vec![query("ip-10-1-2-3.expr.test", 1, true)]),
        // The first query fills the cache from hosts; the rest are hits.
        ("cache hit (A)", vec![query("www.cached.test", 1, true)]),
        // The same hit through bufsize, nsid (asked: the option is added), minimal.
        ("small: cache hit + NSID", vec![query_nsid("www.small.test", 1)]),
        ("small: any HINFO", vec![query("www.small.test", 255, true)]),
        ("small: local localhost A", vec![query("app.localhost", 1, true)]),
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
        if !picked.is_empty() && !picked.iter().any(|p| name.contains(p.as_str())) {
            continue;
        }
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
    if picked.is_empty() || picked.iter().any(|p| "dns64".contains(p.as_str())) {
        dns64_synthesis(quick);
    }
    if picked.is_empty() || picked.iter().any(|p| "forward".contains(p.as_str())) {
        forward_exchange(quick);
    }
    if picked.is_empty() {
        large_answers(quick);
        autopath_and_metadata(quick);
    }
}

/// dns64's synthesised answer as the worker makes it, sockets aside: the AAAA query
/// answered NODATA by hosts, dns64's response hook asks for the A records (the query
/// suspends), the A query handled as the server handles its own lookup, and the
/// suspended query resumed with that reply. Beside it, in the same run: the block's
/// AAAA NODATA without dns64 (the existing "hosts NODATA (AAAA)" case) and an AAAA
/// that dns64 only looks at (an AAAA record exists); the ratios are to the first.
fn dns64_synthesis(quick: bool) {
    let iters: u64 = if quick { 200_000 } else { 2_000_000 };
    let text = "plain.test:53 {\n    hosts {\n        10.1.2.3 v4.plain.test\n    }\n}\n\
                dns64.test:53 {\n    dns64 {\n        allow_ipv4\n    }\n    hosts {\n        \
                10.1.2.3 v4.dns64.test\n        2001:db8::3 v6.dns64.test\n    }\n}\n";
    let server = build_server(text);
    server.start();
    let listener = &server.listeners[0];
    let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let mut ctx = WorkerCtx::new(0);
    let mut resp = Response::new();
    let mut lookup = Response::new();
    // One query, to the end: (rcode, answers) of the client's reply.
    let once = |p: &[u8], ctx: &mut WorkerCtx, resp: &mut Response, lookup: &mut Response| {
        match handler::handle(listener, p, Transport::Udp, client, local, ctx, resp) {
            Handled::Reply(_) => {}
            Handled::Upstream(s) => {
                // The server's own A lookup, as it arrives on its port.
                let Handled::Reply(_) =
                    handler::handle(listener, &s.message, Transport::Udp, local, local, ctx, lookup)
                else {
                    panic!("dns64 bench: the A lookup is answered at once")
                };
                let reply = clusterdns::chain::UpstreamReply::Message(lookup.bytes());
                let Handled::Reply(_) = handler::resume(&s, p, Transport::Udp, client, local, reply, ctx, resp) else {
                    panic!("dns64 bench: the resumed query is answered")
                };
            }
            Handled::Drop => panic!("dns64 bench: dropped"),
        }
        std::hint::black_box(resp.bytes());
    };
    println!("\ndns64 (in-process: the A lookup handled as the worker would, no sockets)");
    println!(
        "{:<36} {:>10} {:>14} {:>7}  reply",
        "case", "ns/query", "allocs/query", "ratio"
    );
    let mut base = 0.0;
    for (name, qname) in [
        ("hosts NODATA (AAAA), no dns64", "v4.plain.test"),
        ("dns64 AAAA exists (passes)", "v6.dns64.test"),
        ("dns64 AAAA synthesised (+A lookup)", "v4.dns64.test"),
    ] {
        let p = query(qname, 28, true);
        for _ in 0..100 {
            once(&p, &mut ctx, &mut resp, &mut lookup);
        }
        let (rcode, answers) = (resp.rcode().name(), resp.count(Section::Answer));
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let t0 = Instant::now();
        for _ in 0..iters {
            once(&p, &mut ctx, &mut resp, &mut lookup);
        }
        let ns = t0.elapsed().as_nanos() as f64 / iters as f64;
        let allocs = (ALLOCS.load(Ordering::Relaxed) - a0) as f64 / iters as f64;
        if base == 0.0 {
            base = ns;
        }
        println!(
            "{name:<36} {ns:>10.1} {allocs:>14.3} {:>6.2}x  {rcode} {answers} answers",
            ns / base
        );
    }
    server.stop();
}

/// A forwarded answer as the worker makes it, sockets aside: the query suspends with
/// its upstream message, the worker keeps a copy of the query (from its reused
/// buffers) and sends the message (whose buffer it then reuses), the upstream's reply
/// (made once, outside the timing) resumes the query, and the client's reply is
/// written. Then the same through `cache`: after the first exchange, hits.
fn forward_exchange(quick: bool) {
    let iters: u64 = if quick { 200_000 } else { 2_000_000 };
    let text = "fwd.test:53 {\n    forward . 127.0.0.1:5399\n}\n\
                cfwd.test:53 {\n    cache 3600\n    forward . 127.0.0.1:5399\n}\n";
    let server = build_server(text);
    server.start();
    let listener = &server.listeners[0];
    let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let mut ctx = WorkerCtx::new(0);
    let mut resp = Response::new();
    // The upstream's reply to `msg`: its question, one A record, no OPT.
    let reply_to = |msg: &[u8]| -> Vec<u8> {
        let mut end = 12;
        while msg[end] != 0 {
            end += 1 + msg[end] as usize;
        }
        end += 5;
        let mut r = msg[..end].to_vec();
        r[2] |= 0x80;
        r[3] = 0x80;
        r[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
        r.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0x0E, 0x10, 0, 4, 192, 0, 2, 1]);
        r
    };
    let mut replies: Vec<Vec<u8>> = Vec::new();
    println!("\nforward (in-process: the exchange as the worker makes it, no sockets)");
    println!("{:<36} {:>10} {:>14}  reply", "case", "ns/query", "allocs/query");
    for (name, qname) in [
        ("forward A (exchange)", "www.fwd.test"),
        ("cache hit of a forwarded A", "www.cfwd.test"),
    ] {
        let p = query(qname, 1, true);
        let mut once = |ctx: &mut WorkerCtx, resp: &mut Response| {
            match handler::handle(listener, &p, Transport::Udp, client, local, ctx, resp) {
                Handled::Reply(_) => {}
                Handled::Upstream(mut s) => {
                    let kept = ctx.copy_buf(&p);
                    let msg = std::mem::take(&mut s.message);
                    if replies.is_empty() {
                        replies.push(reply_to(&msg));
                    }
                    ctx.recycle(msg);
                    let reply = clusterdns::chain::UpstreamReply::Message(&replies[0]);
                    let Handled::Reply(_) = handler::resume(&s, &kept, Transport::Udp, client, local, reply, ctx, resp)
                    else {
                        panic!("forward bench: the resumed query is answered")
                    };
                    ctx.recycle(kept);
                }
                Handled::Drop => panic!("forward bench: dropped"),
            }
            std::hint::black_box(resp.bytes());
        };
        for _ in 0..100 {
            once(&mut ctx, &mut resp);
        }
        let (rcode, answers) = (resp.rcode().name(), resp.count(Section::Answer));
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let t0 = Instant::now();
        for _ in 0..iters {
            once(&mut ctx, &mut resp);
        }
        let ns = t0.elapsed().as_nanos() as f64 / iters as f64;
        let allocs = (ALLOCS.load(Ordering::Relaxed) - a0) as f64 / iters as f64;
        println!("{name:<36} {ns:>10.1} {allocs:>14.3}  {rcode} {answers} answers");
        replies.clear();
    }
    server.stop();
}

/// Autopath's completion and a log line reading kubernetes metadata, next to the
/// plain answer, from a dump with the client's pod (127.0.0.1 in team-a).
fn autopath_and_metadata(quick: bool) {
    use testkit::objects::{base_cluster, kubectl_dump, pod};
    let iters: u64 = if quick { 200_000 } else { 2_000_000 };
    let mut items = base_cluster();
    items.push(pod("team-a", "client", "127.0.0.1", "Running"));
    let dump = std::env::temp_dir().join(format!("clusterdns-bench-autopath-{}.json", std::process::id()));
    std::fs::write(&dump, kubectl_dump(&items)).unwrap();
    let k8s = format!(
        "    kubernetes {{\n        endpoint file://{}\n        pods verified\n    }}\n",
        dump.display()
    );
    let blocks = [
        ("plain", String::new()),
        ("autopath", "    autopath @kubernetes\n".to_string()),
        (
            "metadata+log",
            "    metadata\n    log . \"{/kubernetes/client-namespace} {/kubernetes/service}\"\n".to_string(),
        ),
    ];
    let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let local: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let mut ctx = WorkerCtx::new(0);
    let mut resp = Response::new();
    println!("\nautopath and metadata (a pod at the client's address)");
    println!("{:<44} {:>10} {:>14}  reply", "case", "ns/query", "allocs/query");
    for (block, extra) in blocks {
        let text = format!("cluster.local:53 {{\n{extra}{k8s}}}\n");
        let server = build_server(&text);
        server.start();
        let listener = &server.listeners[0];
        for (what, qname) in [
            ("own service", "web.team-a.svc.cluster.local"),
            ("other namespace's", "kubernetes.default.team-a.svc.cluster.local"),
        ] {
            let p = query(qname, 1, true);
            for _ in 0..100 {
                let _ = handler::handle(listener, &p, Transport::Udp, client, local, &mut ctx, &mut resp);
            }
            let (rcode, answers) = (resp.rcode().name(), resp.count(Section::Answer));
            let a0 = ALLOCS.load(Ordering::Relaxed);
            let t0 = Instant::now();
            for _ in 0..iters {
                match handler::handle(listener, &p, Transport::Udp, client, local, &mut ctx, &mut resp) {
                    Handled::Reply(_) => {
                        std::hint::black_box(resp.bytes());
                    }
                    _ => panic!("{block} {what}: expected a reply"),
                }
            }
            let ns = t0.elapsed().as_nanos() as f64 / iters as f64;
            let allocs = (ALLOCS.load(Ordering::Relaxed) - a0) as f64 / iters as f64;
            let name = format!("{block}: {what} A");
            println!("{name:<44} {ns:>10.1} {allocs:>14.3}  {rcode} {answers} answers");
        }
        server.stop();
    }
    let _ = std::fs::remove_file(&dump);
}

fn port(name: &str, number: i32) -> Port {
    Port {
        name: name.into(),
        protocol: "tcp".into(),
        port: number,
    }
}

fn headless(name: &str, ports: Vec<Port>) -> Object {
    Object::Service(Service {
        namespace: "bench".into(),
        name: name.into(),
        resource_version: "1".into(),
        kind: ServiceKind::Headless,
        cluster_ips: Vec::new(),
        external_name: "".into(),
        external_ips: Vec::new(),
        ports,
    })
}

/// A slice of `service`: endpoints as (address, hostname).
fn slice(service: &str, n: usize, eps: Vec<(std::net::IpAddr, Option<String>)>, ports: Vec<Port>) -> Object {
    Object::EndpointSlice(EndpointSlice {
        namespace: "bench".into(),
        name: format!("{service}-{n:04}").into(),
        resource_version: "1".into(),
        service: service.into(),
        endpoints: eps
            .into_iter()
            .map(|(ip, host)| Endpoint {
                addresses: vec![(ip, ip.to_string().into())],
                hostname: host.map(Into::into),
                pod_name: None,
                node_name: None,
            })
            .collect(),
        ports,
        last_change_trigger: None,
    })
}

/// The cluster of `benches/answers.rs`, built in memory.
fn large_cluster() -> ClusterStore {
    let ip = |base: u32, i: usize| std::net::IpAddr::V4((base + i as u32).into());
    let mut st = ClusterStore::new(StoreOptions::default(), vec![]);
    // A completed list: the snapshot counts as synced (a missing name is NXDOMAIN).
    st.list_start(Resource::Namespaces);
    st.upsert(Object::Namespace(Namespace { name: "bench".into() }));
    st.list_done(Resource::Namespaces);
    st.upsert(headless("big", vec![port("http", 80)]));
    for s in 0..100 {
        let eps = (s * 1000..(s + 1) * 1000)
            .map(|i| (ip(0x0A00_0000, i), (i % 2 == 0).then(|| format!("big-{i}"))))
            .collect();
        st.upsert(slice("big", s, eps, vec![port("http", 80)]));
    }
    let quad = vec![port("a", 80), port("b", 443), port("c", 8080), port("d", 9090)];
    st.upsert(headless("quad", quad.clone()));
    st.upsert(slice(
        "quad",
        0,
        (0..1000).map(|i| (ip(0x0A03_0000, i), None)).collect(),
        quad,
    ));
    st.upsert(headless("shared", vec![port("http", 80)]));
    for s in 0..10 {
        let eps = (s * 1000..(s + 1) * 1000)
            .map(|i| (ip(0x0A09_0001, 0), Some(format!("h-{i}"))))
            .collect();
        st.upsert(slice("shared", s, eps, vec![port("http", 80)]));
    }
    st
}

fn large_answers(quick: bool) {
    let iters: u64 = if quick { 200 } else { 2000 };
    let corefile = config::parse_str(
        "cluster.local {\n kubernetes cluster.local in-addr.arpa\n}\n",
        "bench",
        Path::new("."),
    )
    .expect("parses");
    let zones = [clusterdns::dns::Zone::new("cluster.local.").unwrap()];
    let ctx = SetupCtx {
        zones: &zones,
        config_dir: ".".into(),
        workers: 1,
        binds: None,
        process: &clusterdns::process::ProcessState::new(),
    };
    let opts = setup::parse(&corefile.blocks[0].directives[0], &ctx).expect("kubernetes options");
    let plugin = Arc::new(Kubernetes::new(opts));
    let t = Instant::now();
    plugin.publish(large_cluster().snapshot());
    println!(
        "\nlarge answers (the kubernetes chain alone; snapshot of 111,000 endpoints built in {:.2} s)",
        t.elapsed().as_secs_f64()
    );
    let chain = Chain::new(vec![plugin.clone() as Arc<dyn Handler>]);
    let tag = RouteTag {
        slot: 0,
        server: "dns://:53".into(),
        zone: "cluster.local.".into(),
    };
    let mut worker = WorkerCtx::new(0);
    let mut resp = Response::new();
    let a: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let cases: [(&str, &str, u16); 8] = [
        ("100k SRV", "_http._tcp.big.bench.svc.cluster.local", 33),
        ("100k SRV (any port)", "big.bench.svc.cluster.local", 33),
        ("100k A", "big.bench.svc.cluster.local", 1),
        ("100k A (by port)", "_http._tcp.big.bench.svc.cluster.local", 1),
        ("100k endpoint A", "big-4242.big.bench.svc.cluster.local", 1),
        ("100k missing endpoint A", "nobody.big.bench.svc.cluster.local", 1),
        ("1000x4 SRV", "quad.bench.svc.cluster.local", 33),
        ("PTR shared (10,000 owners)", "1.0.9.10.in-addr.arpa", 12),
    ];
    println!(
        "{:<28} {:<4} {:>10} {:>14}  reply",
        "case", "", "ns/query", "allocs/query"
    );
    for (name, qname, qtype) in cases {
        for transport in [Transport::Udp, Transport::Tcp] {
            let raw = query(qname, qtype, true);
            let Ok(req) = Request::parse(&raw, transport, a, a) else {
                panic!("{name}: not a valid query")
            };
            let ask = |resp: &mut Response, worker: &mut WorkerCtx| {
                let mut q = Query {
                    req: &req,
                    resp,
                    worker,
                    route: &tag,
                    answered_by: "",
                    error: None,
                    refresh: false,
                    coalesce: true,
                    meta: clusterdns::chain::Metadata::NONE,
                };
                let Outcome::Reply { at } = chain.run(&mut q, 0) else {
                    panic!("{name}: no reply")
                };
                chain.complete(&mut q, at);
            };
            for _ in 0..10 {
                ask(&mut resp, &mut worker);
            }
            let a0 = ALLOCS.load(Ordering::Relaxed);
            let t0 = Instant::now();
            for _ in 0..iters {
                ask(&mut resp, &mut worker);
                std::hint::black_box(resp.bytes());
            }
            let ns = t0.elapsed().as_nanos() as f64 / iters as f64;
            let allocs = (ALLOCS.load(Ordering::Relaxed) - a0) as f64 / iters as f64;
            let tc = if resp.truncated() { ", TC" } else { "" };
            println!(
                "{name:<28} {:<4} {ns:>10.0} {allocs:>14.3}  {} {} answers, {} bytes{tc}",
                if transport == Transport::Udp { "UDP" } else { "TCP" },
                resp.rcode().name(),
                resp.count(Section::Answer),
                resp.bytes().len(),
            );
        }
    }
}
