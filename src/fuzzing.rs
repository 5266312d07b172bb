//! What the fuzz targets run (`fuzz/`, cargo-fuzz), one function per target, shared with
//! `tests/fuzz_regressions.rs`, which replays the seeds and every input that once failed.
//! Each function takes one arbitrary input and panics only on a bug: a panic anywhere
//! (including one the server would contain as SERVFAIL), a reply that is not a
//! well-formed DNS message with the query's ID, a reply too big for UDP, or a query
//! that never completes. Hidden: not an API.
//!
//! | target | input | runs |
//! |---|---|---|
//! | [`packet`] | a client's message | the handler over UDP and TCP, twice (cache miss, hit), through chains with kubernetes (the demo cluster), cache, hosts, loadbalance, log, errors, prometheus and whoami |
//! | [`corefile`] | Corefile text | the parser and every plugin's setup: what `-check` does |
//! | [`kubernetes_json`] | API JSON: a list, watch lines | the decoders, the watch line reader, the store, then answers from the snapshot built |
//! | [`forward_reply`] | selector, query, upstream reply | forward's (or the kubernetes ExternalName chase's) resume with that reply, then the cache |
//! | [`http_request`] | bytes sent to `/health`, `/ready` or `/metrics` | the request head parser, on the whole input and as read in pieces |

use std::io::{self, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use domain::base::iana::Rtype;
use domain::base::{Message, ParsedName};
use domain::rdata::AllRecordData;

use crate::chain::{Chain, Handler, Outcome, Query, RouteTag, UpstreamProto, UpstreamReply, WorkerCtx};
use crate::config;
use crate::dns::{Header, Request, Response, Transport, Zone};
use crate::kubernetes::decode;
use crate::kubernetes::model::{Object, Resource};
use crate::kubernetes::snapshot::{ClusterStore, StoreOptions};
use crate::kubernetes::watch::{self, NextLine};
use crate::plugin::kubernetes::{self as k8s_plugin, Kubernetes};
use crate::process::ProcessState;
use crate::server::handler::{self, Handled};
use crate::server::{BuildOptions, Server};
use crate::setup::SetupCtx;

/// Upstream rounds one query may take before it counts as stuck (forward tries at most
/// a few upstreams; an ExternalName chase stops at depth 8).
const MAX_ROUNDS: usize = 16;
const RESOURCES: [Resource; 4] = [
    Resource::Namespaces,
    Resource::Services,
    Resource::EndpointSlices,
    Resource::Pods,
];

/// The demo cluster (`packaging/demo/cluster.json`), read by the kubernetes plugin.
fn demo_dump() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/demo/cluster.json")
}

/// What a worker thread keeps from query to query.
struct Worker {
    ctx: WorkerCtx,
    resp: Response,
}

/// Serializes the entry points (the servers are shared, and the test runner calls them
/// from several threads), and lends the worker state they all use.
fn serialized() -> MutexGuard<'static, Worker> {
    static LOCK: OnceLock<Mutex<Worker>> = OnceLock::new();
    static LOGGER: OnceLock<()> = OnceLock::new();
    LOGGER.get_or_init(|| {
        // Every log line is formatted (Display impls run) and dropped.
        if log::set_logger(&Sink).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
    });
    LOCK.get_or_init(|| {
        Mutex::new(Worker {
            ctx: WorkerCtx::new(0),
            resp: Response::new(),
        })
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

struct Sink;

impl log::Log for Sink {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        use std::io::Write;
        let _ = write!(io::sink(), "{} {}", record.target(), record.args());
    }
    fn flush(&self) {}
}

/// A directory with the files the Corefiles may name: `hosts`, `resolv.conf` and
/// `import.conf`. Fixed contents, written atomically, so that concurrent processes
/// agree on them.
fn sandbox() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("clusterdns-fuzz");
        let files: [(&str, &str); 3] = [
            (
                "hosts",
                "192.0.2.1 files.example.internal\n2001:db8::1 files.example.internal alias.example.internal\n",
            ),
            ("resolv.conf", "nameserver 192.0.2.53\nnameserver 2001:db8::53\n"),
            ("import.conf", "errors\nlog\n"),
        ];
        std::fs::create_dir_all(&dir).expect("create the fuzz sandbox");
        for (name, text) in files {
            let tmp = dir.join(format!(".{name}.{}", std::process::id()));
            std::fs::write(&tmp, text).expect("write a sandbox file");
            std::fs::rename(&tmp, dir.join(name)).expect("rename a sandbox file");
        }
        dir
    })
}

fn build(text: &str) -> Server {
    let dir = sandbox();
    let corefile = config::parse_str(text, "fuzz", dir).unwrap_or_else(|e| panic!("fuzz Corefile: {e}"));
    Server::build(
        &corefile,
        &BuildOptions {
            default_port: 53,
            workers: 1,
            config_dir: dir,
            plugins: crate::plugin::PLUGINS,
            process: &ProcessState::new(),
        },
    )
    .unwrap_or_else(|e| panic!("fuzz Corefile: {e:?}"))
}

/// The server of [`packet`]: port 53 with the full chain, port 54 with another
/// kubernetes configuration and no cache (so that [`forward_reply`] can chase through it
/// without state from earlier inputs).
fn packet_server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dump = demo_dump();
        let dir = sandbox().display().to_string();
        let text = format!(
            "cluster.local:53 in-addr.arpa:53 ip6.arpa:53 example.internal:53 {{
    errors
    log
    prometheus 127.0.0.1:9153
    loadbalance
    cache 30 {{
        prefetch 1 1m 90%
        serve_stale 1h immediate
    }}
    hosts {dir}/hosts example.internal in-addr.arpa ip6.arpa {{
        192.0.2.53 example.internal
        reload 0
        fallthrough
    }}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        endpoint file://{dump}
        pods verified
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    whoami
}}
cluster.local:54 in-addr.arpa:54 {{
    log . {{
        class all
    }}
    kubernetes {{
        endpoint file://{dump}
        pods insecure
        endpoint_pod_names
        ttl 0
    }}
}}
.:54 {{
    whoami
}}
"
        );
        let server = build(&text);
        // Loads the dump and waits for the first sync.
        server.start();
        // Make sure the cluster is really there: a ClusterIP service answers.
        let probe = [
            &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0][..],
            b"\x03web\x06team-a\x03svc\x07cluster\x05local\x00\x00\x01\x00\x01",
        ]
        .concat();
        let (client, local) = addrs(Transport::Udp, 53);
        let mut ctx = WorkerCtx::new(0);
        let mut resp = Response::new();
        let listener = listener(&server, 53);
        assert!(matches!(
            handler::handle(listener, &probe, Transport::Udp, client, local, &mut ctx, &mut resp),
            Handled::Reply(_)
        ));
        assert_eq!(
            resp.count(crate::dns::Section::Answer),
            1,
            "the demo cluster did not load"
        );
        server
    })
}

fn listener(server: &Server, port: u16) -> &crate::server::build::Listener {
    server
        .listeners
        .iter()
        .find(|l| l.addr.is_ipv4() && l.addr.port() == port)
        .expect("a listener on the port")
}

/// Client and local addresses: IPv4 over UDP, IPv6 over TCP.
fn addrs(transport: Transport, port: u16) -> (SocketAddr, SocketAddr) {
    match transport {
        Transport::Udp => (
            "10.244.1.20:40000".parse().unwrap(),
            SocketAddr::new([127, 0, 0, 1].into(), port),
        ),
        Transport::Tcp => (
            "[2001:db8::7]:40001".parse().unwrap(),
            SocketAddr::new("::1".parse::<std::net::IpAddr>().unwrap(), port),
        ),
    }
}

/// Panics if a plugin panicked since `before` (the handler contains panics: the reply is
/// a SERVFAIL and the server goes on, but it is a bug all the same).
fn no_panic(ctx: &WorkerCtx, before: u64) {
    assert_eq!(
        ctx.process.panics.load(Ordering::Relaxed),
        before,
        "a plugin panicked while handling the query (the panic message is above)"
    );
}

/// What the upstream answers in an exchange.
type Upstream<'a> = &'a dyn Fn(&handler::Suspended) -> UpstreamReply<'a>;

/// Runs one query through `listener` as the worker does: the handler, the upstream
/// rounds (answered by `upstream`), the background refresh a cache hit asks for. Every
/// reply is checked.
#[allow(clippy::too_many_arguments)]
fn exchange(
    listener: &crate::server::build::Listener,
    raw: &[u8],
    transport: Transport,
    upstream: Upstream<'_>,
    strict: bool,
    ctx: &mut WorkerCtx,
    resp: &mut Response,
) {
    let (client, local) = addrs(transport, listener.addr.port());
    let before = ctx.process.panics.load(Ordering::Relaxed);
    ctx.now = std::time::Instant::now();
    let mut handled = handler::handle(listener, raw, transport, client, local, ctx, resp);
    let mut rounds = 0;
    loop {
        match handled {
            Handled::Drop => break,
            Handled::Reply(refresh) => {
                check_reply(raw, resp.bytes(), transport, strict);
                if let Some(job) = refresh {
                    // The worker runs it after sending the reply, over TCP.
                    let mut next = handler::refresh(job, raw, Transport::Tcp, client, local, ctx, resp);
                    let mut rounds = 0;
                    while let Handled::Upstream(s) = next {
                        rounds += 1;
                        assert!(rounds <= MAX_ROUNDS, "a refresh never completes");
                        next = handler::resume(&s, raw, Transport::Tcp, client, local, upstream(&s), ctx, resp);
                    }
                }
                break;
            }
            Handled::Upstream(s) => {
                rounds += 1;
                assert!(rounds <= MAX_ROUNDS, "a query never completes");
                assert!(s.message.len() >= 12, "a message for upstream without a header");
                handled = handler::resume(&s, raw, transport, client, local, upstream(&s), ctx, resp);
            }
        }
    }
    no_panic(ctx, before);
}

/// Checks a reply to `query`: a DNS response with its ID, whose sections all parse;
/// with `strict`, the data of every record parses too. Over UDP it must fit the size
/// the client allows.
fn check_reply(query: &[u8], reply: &[u8], transport: Transport, strict: bool) {
    let header = Header::of(reply).unwrap_or_else(|| panic!("a reply shorter than a header: {reply:02x?}"));
    assert_eq!(
        Header::of(query).map(|q| q.id()),
        Some(header.id()),
        "the reply's ID is not the query's"
    );
    if let Err(e) = parse_message(reply, strict) {
        panic!("malformed reply ({e}): {reply:02x?}");
    }
    let msg = Message::from_octets(reply).expect("checked");
    assert!(msg.header().qr(), "a reply without QR");
    assert!(msg.header_counts().qdcount() <= 1, "a reply with several questions");
    if transport == Transport::Udp {
        // RFC 6891 6.2.3 and RFC 1035 4.2.1: the EDNS payload size, at least 512.
        let limit = Message::from_octets(query)
            .ok()
            .and_then(|q| q.opt().map(|o| o.udp_payload_size()))
            .map_or(512, |size| usize::from(size.max(512)));
        assert!(
            reply.len() <= limit,
            "a UDP reply of {} bytes, over {limit}",
            reply.len()
        );
    }
}

/// Parses a whole message with the `domain` crate: the question, every record, at most
/// one OPT (in the additional section); with `strict`, the data of every record.
fn parse_message(bytes: &[u8], strict: bool) -> Result<(), String> {
    let msg = Message::from_octets(bytes).map_err(|e| e.to_string())?;
    let (question, answer, authority, additional) = msg.sections().map_err(|e| e.to_string())?;
    for q in question {
        q.map_err(|e| format!("question: {e}"))?;
    }
    let mut opts = 0;
    for (i, section) in [answer, authority, additional].into_iter().enumerate() {
        for rr in section {
            let rr = rr.map_err(|e| format!("section {i}: {e}"))?;
            if rr.rtype() == Rtype::OPT {
                opts += 1;
                if i != 2 || opts > 1 {
                    return Err("a misplaced or second OPT record".into());
                }
            }
            if strict {
                rr.to_any_record::<AllRecordData<_, ParsedName<_>>>()
                    .map_err(|e| format!("section {i}, {} record: {e}", rr.rtype()))?;
            }
        }
    }
    Ok(())
}

/// Target `packet`: `data` is a message from a client, handled over UDP and TCP, twice
/// each (the cache's miss and hit), on both listeners of the packet server.
pub fn packet(data: &[u8]) {
    let mut worker = serialized();
    let Worker { ctx, resp } = &mut *worker;
    let server = packet_server();
    // Nothing is forwarded; an ExternalName chase through the server finds no answer.
    let upstream: Upstream<'_> = &|_| UpstreamReply::Timeout;
    for port in [53, 54] {
        let l = listener(server, port);
        for transport in [Transport::Udp, Transport::Tcp] {
            for _ in 0..2 {
                exchange(l, data, transport, upstream, true, ctx, resp);
            }
        }
    }
}

/// Whether a Corefile may name a file outside the sandbox that is unsafe to read (a
/// device, `/proc`, a FIFO), or import a whole system directory through a glob. The
/// rest of the file system is fair game: a path there is only read (or stat'ed) at setup.
fn may_escape(text: &str) -> bool {
    ["/dev", "/proc", "/sys", "/run", "/tmp", "/var", ".."]
        .iter()
        .any(|p| text.contains(p))
        || text
            .split_whitespace()
            .any(|word| word.contains('/') && word.contains(['*', '?']))
}

/// Target `corefile`: `data` is a Corefile, parsed (relative imports from the sandbox)
/// and built as `-check` does, binding and contacting nothing. Environment
/// substitution reads the process's environment (`fuzz/run.sh` runs with a small one).
pub fn corefile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        // Corefiles are read as UTF-8; other bytes never reach the parser.
        return;
    };
    if may_escape(text) {
        return;
    }
    let _worker = serialized();
    let dir = sandbox();
    let parsed = match config::parse_str(text, "Corefile", dir) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    // What reload compares.
    let _ = config::digest::sha512_hex(parsed.canonical().as_bytes());
    let opts = BuildOptions {
        default_port: 53,
        workers: 2,
        config_dir: dir,
        plugins: crate::plugin::PLUGINS,
        process: &ProcessState::new(),
    };
    match Server::build(&parsed, &opts) {
        Ok(server) => {
            let _ = (server.banner.len(), server.not_ready());
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "a failed build without an error");
            for e in errors {
                let _ = e.to_string();
            }
        }
    }
}

/// A reader that hands out at most three bytes a call, as a slow network would.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(3).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// The two kubernetes plugins [`kubernetes_json`] answers with (their snapshot is all
/// their state, replaced for each input), and the store options that go with each.
fn k8s_plugins() -> &'static [(Arc<Kubernetes>, StoreOptions); 2] {
    static PLUGINS: OnceLock<[(Arc<Kubernetes>, StoreOptions); 2]> = OnceLock::new();
    PLUGINS.get_or_init(|| {
        let parse = |block: &str| {
            let text = format!("cluster.local in-addr.arpa ip6.arpa {{\n kubernetes {{\n{block}\n }}\n}}\n");
            let corefile = config::parse_str(&text, "fuzz", Path::new("/nonexistent")).expect("parses");
            let zones = ["cluster.local.", "in-addr.arpa.", "ip6.arpa."].map(|z| Zone::new(z).expect("a zone"));
            let ctx = SetupCtx {
                zones: &zones,
                config_dir: PathBuf::from("/nonexistent"),
                workers: 1,
                binds: None,
                process: &ProcessState::new(),
            };
            let opts = k8s_plugin::setup::parse(&corefile.blocks[0].directives[0], &ctx).expect("valid options");
            let store = StoreOptions {
                endpoint_pod_names: opts.endpoint_pod_names,
            };
            (Arc::new(Kubernetes::new(opts)), store)
        };
        [
            parse("pods verified\n ttl 30"),
            parse("pods insecure\n endpoint_pod_names\n ttl 0\n fallthrough"),
        ]
    })
}

/// Target `kubernetes_json`: `data` is fed to every decoder (a list, from memory and
/// streamed; one object; a Status; watch lines), the objects and events go into a
/// store, and queries for the names they hold are answered from its snapshots. The
/// configuration (`pods verified`, or `pods insecure` with `endpoint_pod_names`) goes by
/// the input's length, odd or even: a fresh store costs more than the rest of a short
/// input, so each input gets one.
pub fn kubernetes_json(data: &[u8]) {
    let mut worker = serialized();
    // A list, untyped: from memory and through a reader, which must agree.
    let mut items = Vec::new();
    let meta = decode::decode_list_slice(data, None, |item| items.push(item));
    let mut streamed = Vec::new();
    let streamed_meta = decode::decode_list(Trickle(data), None, |item| streamed.push(item));
    assert_eq!(items.len(), streamed.len(), "a list decodes differently streamed");
    for (a, b) in items.iter().zip(&streamed) {
        match (a, b) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "a list item decodes differently streamed"),
            (Err(_), Err(_)) => {}
            _ => panic!("a list item decodes differently streamed: {a:?} / {b:?}"),
        }
    }
    match (&meta, &streamed_meta) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "a list's metadata decodes differently streamed"),
        (Err(_), Err(_)) => {}
        _ => panic!("a list decodes differently streamed: {meta:?} / {streamed_meta:?}"),
    }
    let objects: Vec<Object> = items.into_iter().filter_map(Result::ok).collect();
    // Typed lists (items without a kind are of the resource), one object, a Status.
    let mut typed: Vec<Vec<Object>> = Vec::new();
    for r in RESOURCES {
        let mut of_r = Vec::new();
        let _ = decode::decode_list_slice(data, Some(r), |item| {
            if let Ok(o) = item {
                if o.resource() == r {
                    of_r.push(o);
                }
            }
        });
        typed.push(of_r);
        if let Ok(o) = decode::decode(r, data) {
            assert_eq!(o.resource(), r, "an object decoded as another resource");
        }
    }
    if let Some(status) = decode::decode_status(data) {
        let _ = status.to_string();
    }
    // A watch stream of each resource, in small reads, with short lines to reach the
    // over-long case.
    let mut events = Vec::new();
    for r in RESOURCES {
        let mut stream = BufReader::with_capacity(16, data);
        let mut line = Vec::new();
        loop {
            match watch::next_line(&mut stream, &mut line, 2048, r).expect("reading a slice fails not") {
                NextLine::End | NextLine::TooLong => break,
                NextLine::Blank => {}
                NextLine::Event(Ok(e)) => events.push((r, e)),
                NextLine::Event(Err(e)) => {
                    let _ = e.to_string();
                }
            }
        }
    }
    let questions = questions(&objects, &events);
    let (plugin, store_opts) = &k8s_plugins()[data.len() % 2];
    let mut store = ClusterStore::new(*store_opts, RESOURCES.to_vec());
    // The list, then the watch events, then a relist of each resource.
    for r in RESOURCES {
        store.list_start(r);
    }
    for o in &objects {
        store.upsert(o.clone());
    }
    for r in RESOURCES {
        store.list_done(r);
    }
    for (r, e) in &events {
        match e {
            decode::WatchEvent::Upsert { object, .. } => {
                store.upsert(object.clone());
            }
            decode::WatchEvent::Delete { key, .. } | decode::WatchEvent::Rejected { key, .. } => {
                store.delete(*r, key);
            }
            decode::WatchEvent::Bookmark { .. } | decode::WatchEvent::Error(_) => {}
        }
    }
    plugin.publish(store.snapshot());
    answer_all(plugin, &questions, &mut worker);
    for (r, of_r) in RESOURCES.iter().zip(&typed) {
        store.list_start(*r);
        for o in of_r {
            store.upsert(o.clone());
        }
        store.list_done(*r);
    }
    plugin.publish(store.snapshot());
    answer_all(plugin, &questions, &mut worker);
}

/// Wire form of a name from dotted parts (each may hold dots); `None` when it is no
/// valid name.
fn wire_name(parts: &[&str]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for part in parts {
        for label in part.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    (out.len() <= 255).then_some(out)
}

fn dashed(ip: &std::net::IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn reverse(ip: &std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        std::net::IpAddr::V6(a) => {
            let mut s = String::new();
            for b in a.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xF, b >> 4));
            }
            s + "ip6.arpa"
        }
    }
}

/// The questions worth asking about a cluster: every name its objects make, in the
/// types that have answers, and a few fixed ones; at most 64.
fn questions(objects: &[Object], events: &[(Resource, decode::WatchEvent)]) -> Vec<(Vec<u8>, u16)> {
    const A: u16 = 1;
    const AAAA: u16 = 28;
    const SRV: u16 = 33;
    const PTR: u16 = 12;
    const TXT: u16 = 16;
    let mut q: Vec<(Option<Vec<u8>>, u16)> = vec![
        (wire_name(&["dns-version.cluster.local"]), TXT),
        (wire_name(&["ns.dns.cluster.local"]), A),
        (wire_name(&["cluster.local"]), 6),
        (wire_name(&["cluster.local"]), 2),
        (wire_name(&["*.*.svc.cluster.local"]), SRV),
        (wire_name(&["10.in-addr.arpa"]), PTR),
    ];
    let from_events = events.iter().filter_map(|(_, e)| match e {
        decode::WatchEvent::Upsert { object, .. } => Some(object),
        _ => None,
    });
    for o in objects.iter().chain(from_events) {
        match o {
            Object::Namespace(n) => q.push((wire_name(&["*", &n.name, "svc.cluster.local"]), A)),
            Object::Service(s) => {
                for t in [A, AAAA, SRV, TXT, 5] {
                    q.push((wire_name(&[&s.name, &s.namespace, "svc.cluster.local"]), t));
                }
                for p in &s.ports {
                    let port = format!("_{}", p.name);
                    let proto = format!("_{}", p.protocol);
                    q.push((
                        wire_name(&[&port, &proto, &s.name, &s.namespace, "svc.cluster.local"]),
                        SRV,
                    ));
                }
                for ip in &s.cluster_ips {
                    q.push((wire_name(&[&reverse(ip)]), PTR));
                }
            }
            Object::EndpointSlice(e) => {
                for ep in &e.endpoints {
                    for (ip, _) in &ep.addresses {
                        let name = ep.hostname.as_deref().map_or_else(|| dashed(ip), str::to_string);
                        q.push((wire_name(&[&name, &e.service, &e.namespace, "svc.cluster.local"]), A));
                        q.push((wire_name(&[&reverse(ip)]), PTR));
                    }
                    if let Some(pod) = &ep.pod_name {
                        q.push((wire_name(&[pod, &e.service, &e.namespace, "svc.cluster.local"]), AAAA));
                    }
                }
            }
            Object::Pod(p) => {
                let name = p.pod_ip.replace(['.', ':'], "-");
                q.push((wire_name(&[&name, &p.namespace, "pod.cluster.local"]), A));
            }
        }
    }
    q.into_iter().filter_map(|(n, t)| n.map(|n| (n, t))).take(64).collect()
}

/// Asks each question of a chain holding only `plugin`, with and without EDNS, and
/// checks each reply.
fn answer_all(plugin: &Arc<Kubernetes>, questions: &[(Vec<u8>, u16)], worker: &mut Worker) {
    let chain = Chain::new(vec![plugin.clone() as Arc<dyn Handler>]);
    let tag = RouteTag {
        slot: 0,
        server: "dns://:53".into(),
        zone: "cluster.local.".into(),
    };
    let Worker { ctx, resp } = worker;
    let (client, local) = addrs(Transport::Udp, 53);
    for (i, (name, qtype)) in questions.iter().enumerate() {
        let edns = i % 2 == 0;
        let mut raw = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
        raw.extend_from_slice(name);
        raw.extend_from_slice(&qtype.to_be_bytes());
        raw.extend_from_slice(&[0, 1]);
        if edns {
            raw.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
        }
        let req = Request::parse(&raw, Transport::Udp, client, local)
            .unwrap_or_else(|_| panic!("the harness built an invalid query: {raw:02x?}"));
        let mut q = Query {
            req: &req,
            resp,
            worker: ctx,
            route: &tag,
            answered_by: "",
            error: None,
            refresh: false,
            coalesce: true,
            meta: crate::chain::Metadata::NONE,
        };
        let mut outcome = chain.run(&mut q, 0);
        let mut rounds = 0;
        while let Outcome::Upstream { at, request } = outcome {
            // An ExternalName leaving the zone: no answer from the rest of the server.
            rounds += 1;
            assert!(rounds <= MAX_ROUNDS, "a query never completes");
            outcome = chain.resume(&mut q, at, UpstreamReply::Timeout, request.cookie);
        }
        let Outcome::Reply { at } = outcome else { unreachable!() };
        chain.complete(&mut q, at);
        q.resp.finish();
        check_reply(&raw, resp.bytes(), Transport::Udp, true);
    }
}

/// The `forward` configurations of [`forward_reply`], by the selector's bits 1-2 (3 is
/// the kubernetes chase, on the packet server).
fn forward_corefile(variant: u8) -> &'static str {
    match variant {
        0 => ". {\n errors\n log\n loadbalance\n cache 30\n forward . 192.0.2.1 192.0.2.2\n}\n",
        1 => {
            ". {\n log\n cache 30 {\n  serve_stale 1h verify\n }\n forward . 192.0.2.1 192.0.2.2 {\n  prefer_udp\n  \
              failover SERVFAIL REFUSED\n  policy sequential\n }\n}\n"
        }
        _ => {
            ". {\n errors\n cache {\n  keepttl\n  prefetch 1\n }\n loadbalance\n forward . \
              192.0.2.1 {\n  next NXDOMAIN SERVFAIL\n  next_on_nodata\n  force_tcp\n }\n whoami\n}\n"
        }
    }
}

/// Target `forward_reply`: `data` is `[selector][query length][query][reply]`. The
/// query (over TCP when selector bit 0 is set) goes through a chain that sends it
/// upstream, and every exchange gets `reply` (if the worker would let it through); then
/// the query is asked again (a cache hit). Replies must be well-formed, and their
/// record data must parse whenever the upstream's did.
pub fn forward_reply(data: &[u8]) {
    let [sel, qlen, rest @ ..] = data else { return };
    let Some((query, reply)) = rest.split_at_checked(usize::from(*qlen)) else {
        return;
    };
    let mut worker = serialized();
    let Worker { ctx, resp } = &mut *worker;
    let transport = if sel & 1 == 1 { Transport::Tcp } else { Transport::Udp };
    let strict = parse_message(reply, true).is_ok();
    // The worker passes a reply on only with a header (and over UDP, with QR); a
    // shorter one, or another datagram, leaves the query to time out.
    let upstream: Upstream<'_> = &|s| match Header::of(reply) {
        Some(h) if h.qr() || s.request.proto != UpstreamProto::Udp => UpstreamReply::Message(reply),
        _ => UpstreamReply::Timeout,
    };
    let variant = (sel >> 1) & 3;
    if variant == 3 {
        let l = listener(packet_server(), 54);
        exchange(l, query, transport, upstream, strict, ctx, resp);
        return;
    }
    // A new server for each input: nothing cached or counted by an earlier one.
    let server = build(forward_corefile(variant));
    let l = listener(&server, 53);
    for _ in 0..2 {
        exchange(l, query, transport, upstream, strict, ctx, resp);
    }
}

/// Target `http_request`: `data` is what a client sends to an HTTP endpoint. It is
/// parsed whole and as the endpoint loop reads it, in pieces (of 1 to 8 bytes, sizes
/// taken from the input itself); both must agree, and what they find must hold:
/// a complete head ends in an empty line at the first place one occurs, fits in
/// [`http::MAX_HEAD`], and its path is a piece of it that starts with `/` (or is `*`,
/// or `/` for an absolute-form target without a path).
pub fn http_request(data: &[u8]) {
    use crate::http::{self, HeadError, Parsed};
    let whole = http::parse(data, 0);
    // In pieces, as `read` hands them over: stop at the first answer.
    let step = usize::from(data.first().copied().unwrap_or(0) % 8) + 1;
    let (mut n, mut searched) = (0, 0);
    // (Compared with a search from 0 only at the end: at every piece it would make the
    // target itself quadratic in the input.)
    let pieces = loop {
        n = (n + step).min(data.len());
        let got = http::parse(&data[..n], searched);
        searched = n;
        if got != Ok(Parsed::Partial) || n == data.len() {
            assert_eq!(got, http::parse(&data[..n], 0), "{n} bytes, in pieces of {step}");
            break got;
        }
    };
    match whole {
        Ok(Parsed::Complete(req, end)) => {
            assert_eq!(pieces, Ok(Parsed::Complete(req, end)));
            assert!(end <= http::MAX_HEAD.min(data.len()));
            assert!(data[..end].ends_with(b"\n\n") || data[..end].ends_with(b"\n\r\n"));
            assert_eq!(http::head_end(&data[..end - 1], 0), None, "an earlier end of head");
            assert_eq!(http::parse_head(&data[..end]), Ok(req));
            let inside = |s: &str| {
                let (p, h) = (s.as_ptr() as usize, data.as_ptr() as usize);
                p >= h && p + s.len() <= h + end
            };
            // An absolute-form target with no path (`http://host`) has the path `/`.
            assert!(inside(req.method) && (inside(req.path) || req.path == "/"));
            assert!(req.path.starts_with('/') || req.path == "*", "{:?}", req.path);
            assert!(!req.method.is_empty() && !req.path.contains(['?', '#', ' ']));
        }
        Ok(Parsed::Partial) => {
            assert_eq!(pieces, whole);
            assert!(data.len() < http::MAX_HEAD && http::head_end(data, 0).is_none());
        }
        Err(HeadError::TooLarge) => {
            // Only a prefix is ever read: the pieces stop at MAX_HEAD bytes too.
            assert_eq!(pieces, whole);
            assert!(data.len() >= http::MAX_HEAD && http::head_end(&data[..http::MAX_HEAD], 0).is_none());
        }
        Err(e) => {
            assert_eq!(pieces, Err(e));
            assert!(matches!(e.status(), 400 | 505));
        }
    }
}
