use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::chain::WorkerCtx;
use crate::dns::{Rcode, Request, Response, rtype};
use crate::process::ProcessState;

/// Runs `prometheus` setup on the first block of `corefile`.
fn setup_from(corefile: &str) -> Result<(SocketAddr, Plugin), ConfigError> {
    let parsed = crate::config::parse_str(corefile, "Corefile", Path::new("/nonexistent"))?;
    let dirs: Vec<&Directive> = parsed.blocks[0]
        .directives
        .iter()
        .filter(|d| d.name.as_str() == NAME)
        .collect();
    let zones = [crate::dns::Zone::new("example.org.").unwrap()];
    let ctx = SetupCtx {
        zones: &zones,
        config_dir: "/nonexistent".into(),
        workers: 2,
        binds: None,
        process: &crate::process::ProcessState::new(),
    };
    let plugin = setup(&dirs, &ctx)?;
    Ok((address(dirs[0])?, plugin))
}

fn addr_of(corefile: &str) -> SocketAddr {
    setup_from(corefile).unwrap_or_else(|e| panic!("{e}")).0
}

fn error(corefile: &str) -> String {
    match setup_from(corefile) {
        Ok(_) => panic!("no error for {corefile}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn setup_takes_an_address_and_coredns_options() {
    assert_eq!(
        addr_of("example.org {\n prometheus\n}"),
        "127.0.0.1:9153".parse().unwrap()
    );
    assert_eq!(
        addr_of("example.org {\n prometheus localhost:9253\n}"),
        "127.0.0.1:9253".parse().unwrap()
    );
    assert_eq!(
        addr_of("example.org {\n prometheus :9153\n}"),
        "[::]:9153".parse().unwrap() // every address of both families, as CoreDNS's Go listener
    );
    assert_eq!(
        addr_of("example.org {\n prometheus [::1]:9154\n}"),
        "[::1]:9154".parse().unwrap()
    );
    assert_eq!(
        addr_of("example.org {\n prometheus 10.0.0.1:9153 {\n  runtime_metrics\n }\n}"),
        "10.0.0.1:9153".parse().unwrap()
    );
}

#[test]
fn setup_reports_what_it_cannot_do() {
    let cases = [
        (
            "example.org {\n prometheus {\n  tls cert.pem key.pem\n }\n}",
            "Corefile:3 - prometheus: tls is not supported",
        ),
        (
            "example.org {\n prometheus {\n  podz\n }\n}",
            "Corefile:3 - prometheus: unknown property 'podz'",
        ),
        (
            "example.org {\n prometheus {\n  runtime_metrics yes\n }\n}",
            "Corefile:3 - prometheus: Wrong argument count",
        ),
        (
            "example.org {\n prometheus :9153 :9154\n}",
            "Corefile:2 - prometheus: Wrong argument count",
        ),
        (
            "example.org {\n prometheus nonsense\n}",
            "Corefile:2 - prometheus: invalid address 'nonsense'",
        ),
        (
            "example.org {\n prometheus\n prometheus :9154\n}",
            "Corefile:3 - prometheus: this plugin can only be used once per Server Block",
        ),
    ];
    for (corefile, want) in cases {
        let got = error(corefile);
        assert!(got.starts_with(want), "{corefile:?}: got {got:?}, want {want:?}...");
    }
}

/// One query as the chain would hand it to `on_response`.
struct Q {
    worker: usize,
    tcp: bool,
    client: &'static str,
    qtype: u16,
    dnssec_ok: bool,
    rcode: Rcode,
    by: &'static str,
}

impl Q {
    fn a(worker: usize, client: &'static str) -> Q {
        Q {
            worker,
            tcp: false,
            client,
            qtype: rtype::A,
            dnssec_ok: false,
            rcode: Rcode::NOERROR,
            by: "whoami",
        }
    }
}

/// `a.example.org.` (31 bytes without EDNS, 42 with).
fn raw_query(qtype: u16, dnssec_ok: bool) -> Vec<u8> {
    let mut raw = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(dnssec_ok)];
    raw.extend_from_slice(b"\x01a\x07example\x03org\x00");
    raw.extend_from_slice(&qtype.to_be_bytes());
    raw.extend_from_slice(&1u16.to_be_bytes());
    if dnssec_ok {
        raw.extend_from_slice(&[0, 0, 41, 0x10, 0x00, 0, 0, 0x80, 0, 0, 0]);
    }
    raw
}

/// Calls `on_response` for `q` on `route`; the query arrived 5ms ago.
fn respond(p: &dyn Handler, route: &RouteTag, q: &Q, worker: &mut WorkerCtx, resp: &mut Response) {
    let raw = raw_query(q.qtype, q.dnssec_ok);
    let client: SocketAddr = q.client.parse().unwrap();
    let transport = if q.tcp { Transport::Tcp } else { Transport::Udp };
    let req = Request::parse(&raw, transport, client, client).ok().unwrap();
    resp.start(&req, q.rcode);
    resp.finish();
    worker.id = q.worker;
    worker.now = Instant::now() - Duration::from_millis(5);
    let mut query = Query {
        req: &req,
        resp,
        worker,
        route,
        answered_by: q.by,
        error: None,
        refresh: false,
        coalesce: true,
        meta: crate::chain::Metadata::NONE,
    };
    p.on_response(&mut query);
}

fn tag(slot: usize, zone: &str) -> Arc<RouteTag> {
    Arc::new(RouteTag {
        slot,
        server: "dns://:53".into(),
        zone: zone.into(),
    })
}

fn render(p: &dyn Lifecycle) -> String {
    let mut f = Families::default();
    p.metrics(&mut f);
    f.render()
}

#[test]
fn queries_are_counted_per_route_and_summed_over_workers() {
    let p = Prometheus::new(2);
    let (a, b) = (tag(3, "example.org."), tag(5, "."));
    // The IPv6 twin of `a`'s listener: same labels, another slot.
    let a6 = tag(6, "example.org.");
    p.attach(&AttachCtx {
        routes: &[a.clone(), b.clone(), a6.clone()],
        chain: &["prometheus", "whoami"],
        process: &ProcessState::new(),
    });
    assert!(p.wants_response());
    let mut worker = WorkerCtx::new(0);
    let mut resp = Response::new();
    let queries = [
        (&a, Q::a(0, "127.0.0.1:5353")),
        (&a6, Q::a(1, "10.0.0.1:5353")),
        (
            &a,
            Q {
                tcp: true,
                client: "[2001:db8::1]:5353",
                qtype: rtype::MX,
                dnssec_ok: true,
                rcode: Rcode::SERVFAIL,
                by: "",
                ..Q::a(1, "")
            },
        ),
        (
            &b,
            Q {
                client: "[::ffff:10.0.0.2]:5353",
                qtype: 99,
                rcode: Rcode::NXDOMAIN,
                by: "hosts",
                ..Q::a(0, "")
            },
        ),
    ];
    for (route, q) in &queries {
        respond(&p, route, q, &mut worker, &mut resp);
    }
    // Not ours: another block's slot, a slot past every route, a worker past the count.
    respond(&p, &tag(4, "other."), &Q::a(0, "127.0.0.1:1"), &mut worker, &mut resp);
    respond(&p, &tag(100, "other."), &Q::a(0, "127.0.0.1:1"), &mut worker, &mut resp);
    respond(&p, &a, &Q::a(7, "127.0.0.1:1"), &mut worker, &mut resp);

    let text = render(&p);
    let a_ = r#"server="dns://:53",zone="example.org.",view="""#;
    let b_ = r#"server="dns://:53",zone=".",view="""#;
    let want = [
        format!(r#"coredns_dns_requests_total{{{a_},proto="udp",family="1",type="A"}} 2"#),
        format!(r#"coredns_dns_requests_total{{{a_},proto="tcp",family="2",type="MX"}} 1"#),
        format!(r#"coredns_dns_requests_total{{{b_},proto="udp",family="1",type="other"}} 1"#),
        format!(r#"coredns_dns_do_requests_total{{{a_}}} 1"#),
        format!(r#"coredns_dns_responses_total{{{a_},rcode="NOERROR",plugin="whoami"}} 2"#),
        format!(r#"coredns_dns_responses_total{{{a_},rcode="SERVFAIL",plugin=""}} 1"#),
        format!(r#"coredns_dns_responses_total{{{b_},rcode="NXDOMAIN",plugin="hosts"}} 1"#),
        format!(r#"coredns_dns_request_size_bytes_bucket{{{a_},proto="udp",le="0"}} 0"#),
        format!(r#"coredns_dns_request_size_bytes_bucket{{{a_},proto="udp",le="100"}} 2"#),
        format!(r#"coredns_dns_request_size_bytes_bucket{{{a_},proto="udp",le="+Inf"}} 2"#),
        format!(r#"coredns_dns_request_size_bytes_sum{{{a_},proto="udp"}} 62"#),
        format!(r#"coredns_dns_request_size_bytes_count{{{a_},proto="udp"}} 2"#),
        format!(r#"coredns_dns_request_size_bytes_sum{{{a_},proto="tcp"}} 42"#),
        format!(r#"coredns_dns_response_size_bytes_sum{{{a_},proto="udp"}} 62"#),
        format!(r#"coredns_dns_response_size_bytes_sum{{{a_},proto="tcp"}} 42"#),
        format!(r#"coredns_dns_request_duration_seconds_bucket{{{a_},le="0.00025"}} 0"#),
        format!(r#"coredns_dns_request_duration_seconds_bucket{{{a_},le="0.004"}} 0"#),
        format!(r#"coredns_dns_request_duration_seconds_bucket{{{a_},le="+Inf"}} 3"#),
        format!(r#"coredns_dns_request_duration_seconds_count{{{a_}}} 3"#),
        format!(r#"coredns_dns_request_duration_seconds_count{{{b_}}} 1"#),
        format!(r#"coredns_plugin_enabled{{{a_},name="prometheus"}} 1"#),
        format!(r#"coredns_plugin_enabled{{{b_},name="whoami"}} 1"#),
        "# TYPE coredns_dns_request_duration_seconds histogram".to_string(),
        "# TYPE coredns_dns_requests_total counter".to_string(),
    ];
    let lines: Vec<&str> = text.lines().collect();
    for w in &want {
        assert!(lines.contains(&w.as_str()), "missing {w}\nin\n{text}");
    }
    // Only what was counted appears: three request series, one DO series.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("coredns_dns_requests_total"))
            .count(),
        3
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("coredns_dns_do_requests_total"))
            .count(),
        1
    );
    // Every bucket bound CoreDNS has, in order.
    let bounds: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with(&format!("coredns_dns_request_duration_seconds_bucket{{{a_}")))
        .map(|l| l.split("le=\"").nth(1).unwrap().split('"').next().unwrap())
        .collect();
    assert_eq!(
        bounds,
        [
            "0.00025", "0.0005", "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256",
            "0.512", "1.024", "2.048", "4.096", "8.192", "+Inf"
        ]
    );
    let sizes: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with(&format!("coredns_dns_response_size_bytes_bucket{{{a_},proto=\"tcp\"")))
        .map(|l| l.split("le=\"").nth(1).unwrap().split('"').next().unwrap())
        .collect();
    assert_eq!(
        sizes,
        [
            "0", "100", "200", "300", "400", "511", "1023", "2047", "4095", "8291", "16000", "32000", "48000", "64000",
            "+Inf"
        ]
    );

    // Counting goes on; a scrape only reads.
    respond(&p, &a, &Q::a(1, "127.0.0.1:1"), &mut worker, &mut resp);
    let text = render(&p);
    assert!(text.contains(&format!(
        r#"coredns_dns_requests_total{{{a_},proto="udp",family="1",type="A"}} 3"#
    )));
    assert!(text.contains(&format!(
        r#"coredns_dns_responses_total{{{a_},rcode="NOERROR",plugin="whoami"}} 3"#
    )));
}

#[test]
fn nothing_is_counted_or_shown_before_attach() {
    let p = Prometheus::new(1);
    let mut worker = WorkerCtx::new(0);
    let mut resp = Response::new();
    respond(&p, &tag(0, "."), &Q::a(0, "127.0.0.1:1"), &mut worker, &mut resp);
    assert_eq!(render(&p), "");
}

#[test]
fn extended_rcodes_past_the_table_are_other() {
    let p = Prometheus::new(1);
    let a = tag(0, ".");
    p.attach(&AttachCtx::routes(std::slice::from_ref(&a), &ProcessState::new()));
    let mut worker = WorkerCtx::new(0);
    let mut resp = Response::new();
    for rcode in [Rcode::BADVERS, Rcode::BADCOOKIE, Rcode(24), Rcode(4000), Rcode(12)] {
        respond(
            &p,
            &a,
            &Q {
                rcode,
                ..Q::a(0, "127.0.0.1:1")
            },
            &mut worker,
            &mut resp,
        );
    }
    let text = render(&p);
    for (rcode, n) in [("BADVERS", 1), ("BADCOOKIE", 1), ("other", 2), ("RCODE12", 1)] {
        let line = format!(
            r#"coredns_dns_responses_total{{server="dns://:53",zone=".",view="",rcode="{rcode}",plugin="whoami"}} {n}"#
        );
        assert!(text.lines().any(|l| l == line), "missing {line}\nin\n{text}");
    }
}

// --- allocations on the query path -------------------------------------------------

/// Counts allocations of the current thread while enabled (other tests run in
/// parallel and are not counted).
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<Option<u64>> = const { Cell::new(None) };
}

/// The allocations `f` makes on this thread: the test binary has one global allocator
/// (this one), which other plugins' no-allocation tests use through here.
pub(crate) fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|c| c.set(Some(0)));
    f();
    ALLOCATIONS.with(|c| c.replace(None)).unwrap_or(0)
}

fn note_allocation() {
    let _ = ALLOCATIONS.try_with(|a| {
        if let Some(n) = a.get() {
            a.set(Some(n + 1));
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting touches
// only a const-initialised thread local, which never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: as for `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: CountingAlloc = CountingAlloc;

#[test]
fn recording_a_query_does_not_allocate() {
    let p = Prometheus::new(1);
    let a = tag(0, "example.org.");
    p.attach(&AttachCtx::routes(std::slice::from_ref(&a), &ProcessState::new()));
    let raw = raw_query(rtype::A, true);
    let client: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let req = Request::parse(&raw, Transport::Udp, client, client).ok().unwrap();
    let mut resp = Response::new();
    resp.start(&req, Rcode::NOERROR);
    resp.finish();
    let mut worker = WorkerCtx::new(0);
    let mut q = Query {
        req: &req,
        resp: &mut resp,
        worker: &mut worker,
        route: &a,
        answered_by: "whoami",
        error: None,
        refresh: false,
        coalesce: true,
        meta: crate::chain::Metadata::NONE,
    };
    ALLOCATIONS.with(|c| c.set(Some(0)));
    for i in 0..1000 {
        // A new answering plugin takes a name slot: still no allocation.
        q.answered_by = if i % 2 == 0 { "whoami" } else { "" };
        p.on_response(&mut q);
    }
    let n = ALLOCATIONS.with(|c| c.replace(None)).unwrap();
    assert_eq!(n, 0, "allocations while recording 1000 queries");
    assert!(render(&p).contains(r#"rcode="NOERROR",plugin=""} 500"#));
}

// --- a whole scrape ----------------------------------------------------------------

/// Parses a scrape with the test kit's strict Prometheus text parser (the format's
/// rules, a series at most once, histograms whole), failing on any error; returns the
/// number of samples.
fn strict_parse(text: &str) -> usize {
    let page = testkit::metrics::parse(text)
        .unwrap_or_else(|e| panic!("the scrape is not valid exposition text: {e}\n{text}"));
    page.samples().count()
}

#[test]
fn a_scrape_of_a_built_server_is_valid_exposition_text() {
    let corefile = "\
example.org:1053 example.net:1053 {
    prometheus localhost:0
    hosts {
        10.0.0.1 a.example.org
    }
    whoami
}
cluster.local:1053 {
    kubernetes {
        endpoint file:///nonexistent/cluster.json
    }
}
";
    let parsed = crate::config::parse_str(corefile, "Corefile", Path::new("/nonexistent")).unwrap();
    let process = ProcessState::new();
    let opts = crate::server::BuildOptions {
        default_port: 53,
        workers: 2,
        config_dir: Path::new("/nonexistent"),
        plugins: crate::plugin::PLUGINS,
        process: &process,
    };
    let server = crate::server::Server::build(&parsed, &opts).unwrap_or_else(|e| panic!("{e:?}"));
    let prom = server.blocks[0]
        .chain
        .handlers()
        .iter()
        .find(|h| h.name() == NAME)
        .expect("prometheus is in the chain");
    let qname = crate::dns::wire::name_from_str("a.example.org.").unwrap();
    let qname = crate::dns::NameKey::from_wire(&qname).unwrap();
    let route = server
        .listeners
        .iter()
        .find_map(|l| l.router.route(&qname, false))
        .expect("a route for example.org.")
        .tag
        .clone();
    let mut worker = WorkerCtx::new(0);
    let mut resp = Response::new();
    for w in [0, 1, 1] {
        respond(&**prom, &route, &Q::a(w, "127.0.0.1:1"), &mut worker, &mut resp);
    }
    process.health_duration.observe(0.001);

    let mut f = Families::default();
    server.metrics(&mut f);
    process.metrics(&mut f);
    let text = f.render();
    let z = format!(r#"server="dns://:1053",zone="{}",view="""#, route.zone);
    for want in [
        format!(r#"coredns_dns_requests_total{{{z},proto="udp",family="1",type="A"}} 3"#),
        format!(r#"coredns_plugin_enabled{{{z},name="prometheus"}} 1"#),
        format!(r#"coredns_plugin_enabled{{{z},name="hosts"}} 1"#),
        format!(r#"coredns_plugin_enabled{{{z},name="whoami"}} 1"#),
        // One line: its name and its reverse entry, counted as CoreDNS counts them.
        "coredns_hosts_entries 2".to_string(),
        "clusterdns_kubernetes_synced 0".to_string(),
        "# TYPE coredns_health_request_duration_seconds histogram".to_string(),
        "# TYPE coredns_panics_total counter".to_string(),
        "# TYPE clusterdns_query_budget_exceeded_total counter".to_string(),
        "# TYPE coredns_reload_failed_total counter".to_string(),
    ] {
        assert!(text.lines().any(|l| l == want), "missing {want}\nin\n{text}");
    }
    assert!(text.contains("coredns_build_info{version=\""), "{text}");
    // The block without prometheus is not counted, and has no plugin_enabled series.
    assert!(!text.contains(r#"zone="cluster.local.""#), "{text}");
    // Both zones of the block are routes of it.
    assert_eq!(text.matches(r#"name="prometheus"} 1"#).count(), 2, "{text}");
    if Path::new("/proc/self/stat").exists() {
        assert!(text.contains("\nprocess_open_fds "), "{text}");
    }
    let samples = strict_parse(&text);
    assert!(samples > 20, "{samples} samples");
}

#[test]
fn a_new_configuration_with_the_same_labels_counts_on() {
    let mut worker = WorkerCtx::new(0);
    let mut resp = Response::new();
    // One process, two configurations.
    let process = ProcessState::new();
    let old = Prometheus::new(1);
    let a = tag(0, "example.org.");
    old.attach(&AttachCtx::routes(std::slice::from_ref(&a), &process));
    respond(&old, &a, &Q::a(0, "127.0.0.1:1"), &mut worker, &mut resp);
    // The reloaded configuration: new instances, the same labels, another zone beside.
    let new = Prometheus::new(1);
    let (a2, b) = (tag(0, "example.org."), tag(1, "other.net."));
    new.attach(&AttachCtx::routes(&[a2.clone(), b.clone()], &process));
    respond(&new, &a2, &Q::a(0, "127.0.0.1:1"), &mut worker, &mut resp);
    respond(&new, &b, &Q::a(0, "127.0.0.1:1"), &mut worker, &mut resp);
    let text = render(&new);
    let requests = |zone: &str| {
        format!(
            r#"coredns_dns_requests_total{{server="dns://:53",zone="{zone}",view="",proto="udp",family="1",type="A"}}"#
        )
    };
    assert!(text.contains(&format!("{} 2\n", requests("example.org."))), "{text}");
    assert!(text.contains(&format!("{} 1\n", requests("other.net."))), "{text}");
}
