//! The cache's rules, one test per rule: setup, key, TTLs, what is stored, stale
//! serving, prefetch, metrics. A "backend" closure stands for the plugins after the
//! cache (kubernetes, forward) and writes their reply.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use super::setup::{Options, Policy, Prefetch, Stale, StaleMode};
use super::store::{Key, per_shard};
use super::*;
use crate::chain::{RouteTag, WorkerCtx};
use crate::dns::{Name, QueryBuilder, Rdata, Record, Transport};
use crate::metrics::Families;

// --- setup ---------------------------------------------------------------------------

/// The `cache` directives of `corefile`'s first block, set up for a block whose zones
/// are `example.org.`.
fn parse_block(corefile: &str) -> Result<Options, ConfigError> {
    let parsed = crate::config::parse_str(corefile, "Corefile", Path::new("/nonexistent"))?;
    let dirs: Vec<&Directive> = parsed.blocks[0]
        .directives
        .iter()
        .filter(|d| d.name.text == NAME)
        .collect();
    let zones = [Zone::new("example.org.").unwrap()];
    let ctx = SetupCtx {
        zones: &zones,
        config_dir: "/nonexistent".into(),
        workers: 1,
        binds: None,
        process: &crate::process::ProcessState::new(),
    };
    setup(&dirs, &ctx)?;
    setup::parse(dirs[0], &ctx)
}

fn options(cache_lines: &str) -> Options {
    parse_block(&format!("example.org {{\n{cache_lines}\n}}\n")).unwrap_or_else(|e| panic!("{e}"))
}

fn error(cache_lines: &str) -> String {
    match parse_block(&format!("example.org {{\n{cache_lines}\n}}\n")) {
        Ok(o) => panic!("no error for {cache_lines}: {o:?}"),
        Err(e) => e.to_string(),
    }
}

fn wire_zone(name: &str) -> Zone {
    Zone::new(name).unwrap()
}

#[test]
fn defaults_are_coredns_defaults() {
    let o = options("cache");
    assert_eq!(o.zones, vec![wire_zone("example.org.")]);
    assert_eq!(o.zones_label, "example.org.");
    let policy = |capacity, max_ttl, min_ttl| Policy {
        capacity,
        max_ttl,
        min_ttl,
    };
    assert_eq!(o.success, policy(10_000, 3600, 5));
    assert_eq!(o.denial, policy(10_000, 1800, 5));
    assert_eq!(o.servfail_ttl, 5);
    assert_eq!((o.prefetch, o.stale, o.keepttl), (None, None, false));
    assert!(o.disable_success.is_empty() && o.disable_denial.is_empty());
}

#[test]
fn ttl_and_zones_arguments() {
    let o = options("cache 30");
    assert_eq!((o.success.max_ttl, o.denial.max_ttl), (30, 30));
    assert_eq!(o.zones, vec![wire_zone("example.org.")]);

    let o = options("cache 30 Sub.Example.org 10.0.0.0/31");
    assert_eq!(
        o.zones,
        vec![
            wire_zone("sub.example.org."),
            wire_zone("0.0.0.10.in-addr.arpa."),
            wire_zone("1.0.0.10.in-addr.arpa.")
        ]
    );
    assert_eq!(
        o.zones_label,
        "sub.example.org.,0.0.0.10.in-addr.arpa.,1.0.0.10.in-addr.arpa."
    );

    // Without a number first, every argument is a zone.
    let o = options("cache other.net");
    assert_eq!(o.success.max_ttl, 3600);
    assert_eq!(o.zones, vec![wire_zone("other.net.")]);
}

#[test]
fn every_option() {
    let o = options(
        "cache 30 {
            success 5000 60 10
            denial 2500 20
            prefetch 10 2m 20%
            serve_stale 2h verify 1s 30 1m
            servfail 10s
            disable success sub.example.org
            disable denial
            keepttl
        }",
    );
    assert_eq!(
        o.success,
        Policy {
            capacity: 5000,
            max_ttl: 60,
            min_ttl: 10
        }
    );
    assert_eq!(
        o.denial,
        Policy {
            capacity: 2500,
            max_ttl: 20,
            min_ttl: 5
        }
    );
    assert_eq!(
        o.prefetch,
        Some(Prefetch {
            amount: 10,
            window: Duration::from_secs(120),
            percentage: 20
        })
    );
    assert_eq!(
        o.stale,
        Some(Stale {
            max_age: Duration::from_secs(7200),
            mode: StaleMode::Verify,
            timeout: Some(Duration::from_secs(1)),
            response_ttl: 30,
            recheck: Duration::from_secs(60),
        })
    );
    assert_eq!(o.servfail_ttl, 10);
    assert_eq!(o.disable_success, vec![wire_zone("sub.example.org.")]);
    // Without zones: the cache's own.
    assert_eq!(o.disable_denial, vec![wire_zone("example.org.")]);
    assert!(o.keepttl);

    let o = options("cache {\n prefetch 3\n serve_stale\n}");
    let p = o.prefetch.unwrap();
    assert_eq!((p.amount, p.window, p.percentage), (3, Duration::from_secs(60), 10));
    let s = o.stale.unwrap();
    assert_eq!(
        (s.max_age, s.mode, s.response_ttl),
        (Duration::from_secs(3600), StaleMode::Immediate, 0)
    );

    let s = options("cache {\n serve_stale 10m immediate 30s 2m\n}").stale.unwrap();
    assert_eq!(
        (s.max_age, s.mode, s.timeout, s.response_ttl, s.recheck),
        (
            Duration::from_secs(600),
            StaleMode::Immediate,
            None,
            30,
            Duration::from_secs(120)
        )
    );
    // Zero turns things off.
    let o = options("cache {\n prefetch 0\n serve_stale 0\n servfail 0\n}");
    assert_eq!((o.prefetch, o.stale, o.servfail_ttl), (None, None, 0));
}

#[test]
fn errors_name_file_line_and_cause() {
    let cases: &[(&str, &str)] = &[
        (
            "cache 0",
            "Corefile:2 - cache: cache TTL can not be zero or negative: 0",
        ),
        (
            "cache -1",
            "Corefile:2 - cache: cache TTL can not be zero or negative: -1",
        ),
        ("cache 30 bad..zone", "Corefile:2 - cache: invalid zone 'bad..zone'"),
        (
            "cache {\nsuccess\n}",
            "Corefile:3 - cache: Wrong argument count or unexpected line ending after 'success'",
        ),
        ("cache {\nsuccess aaa\n}", "Corefile:3 - cache: invalid capacity 'aaa'"),
        (
            "cache {\nsuccess -5\n}",
            "Corefile:3 - cache: capacity can not be negative: -5",
        ),
        (
            "cache {\nsuccess 10 0\n}",
            "Corefile:3 - cache: cache TTL can not be zero or negative: 0",
        ),
        (
            "cache {\ndenial 10 15 -1\n}",
            "Corefile:3 - cache: cache min TTL can not be negative: -1",
        ),
        (
            "cache {\ndenial 10 15 5 1\n}",
            "Corefile:3 - cache: Wrong argument count or unexpected line ending after '1'",
        ),
        (
            "cache {\nprefetch -1\n}",
            "Corefile:3 - cache: prefetch amount should be positive: -1",
        ),
        (
            "cache {\nprefetch 1 blurp\n}",
            "Corefile:3 - cache: invalid duration 'blurp'",
        ),
        (
            "cache {\nprefetch 1 1m 20\n}",
            "Corefile:3 - cache: last character of percentage should be `%`, but is: '0'",
        ),
        (
            "cache {\nprefetch 1 1m 5%\n}",
            "Corefile:3 - cache: percentage should fall in range [10, 90]: 5",
        ),
        (
            "cache {\nserve_stale -1h\n}",
            "Corefile:3 - cache: invalid duration '-1h'",
        ),
        (
            "cache {\nserve_stale 1h sometimes\n}",
            "Corefile:3 - cache: invalid value for serve_stale refresh mode: sometimes",
        ),
        (
            "cache {\nserve_stale 1h immediate 30 1m 1\n}",
            "Corefile:3 - cache: Wrong argument count or unexpected line ending after '1'",
        ),
        (
            "cache {\nserve_stale 1h immediate 30 6m\n}",
            "Corefile:3 - cache: serve_stale recheck over 5 minutes is not permitted",
        ),
        (
            "cache {\nserve_stale 1h verify 0s\n}",
            "Corefile:3 - cache: serve_stale verify timeout must be greater than zero",
        ),
        (
            "cache {\nservfail 6m\n}",
            "Corefile:3 - cache: caching SERVFAIL responses over 5 minutes is not permitted",
        ),
        (
            "cache {\nservfail\n}",
            "Corefile:3 - cache: Wrong argument count or unexpected line ending after 'servfail'",
        ),
        (
            "cache {\ndisable\n}",
            "Corefile:3 - cache: Wrong argument count or unexpected line ending after 'disable'",
        ),
        (
            "cache {\ndisable both\n}",
            "Corefile:3 - cache: cache type for disable must be \"success\" or \"denial\"",
        ),
        (
            "cache {\nkeepttl 1\n}",
            "Corefile:3 - cache: Wrong argument count or unexpected line ending after '1'",
        ),
        (
            "cache {\npositive 10\n}",
            "Corefile:3 - cache: unknown property 'positive'",
        ),
        (
            "cache {\nserve_stale_policy prefer_positive\n}",
            "Corefile:3 - cache: serve_stale_policy is not supported",
        ),
        (
            "cache\ncache",
            "Corefile:3 - cache: this plugin can only be used once per Server Block",
        ),
    ];
    for (lines, want) in cases {
        assert_eq!(&error(lines), want, "for {lines:?}");
    }
}

#[test]
fn capacity_is_rounded_down_to_whole_shards() {
    assert_eq!(per_shard(10_000) * 256, 9984);
    assert_eq!(per_shard(5000) * 256, 4864);
    // At least 4 per shard, as CoreDNS.
    assert_eq!(per_shard(10) * 256, 1024);
    assert_eq!(per_shard(0) * 256, 1024);
}

// --- queries ---------------------------------------------------------------------------

/// A query as a client would send it.
#[derive(Clone)]
struct Ask {
    name: &'static str,
    qtype: u16,
    /// EDNS payload size; `None` for no OPT record.
    edns: Option<u16>,
    dnssec_ok: bool,
    cd: bool,
    ad: bool,
}

fn ask(name: &'static str) -> Ask {
    Ask {
        name,
        qtype: rtype::A,
        edns: Some(1232),
        dnssec_ok: false,
        cd: false,
        ad: false,
    }
}

impl Ask {
    fn qtype(self, qtype: u16) -> Ask {
        Ask { qtype, ..self }
    }

    fn raw(&self) -> Vec<u8> {
        // The name as spelled: the cache must keep the client's case.
        let mut name = Vec::new();
        for label in self.name.trim_end_matches('.').split('.') {
            name.push(label.len() as u8);
            name.extend_from_slice(label.as_bytes());
        }
        name.push(0);
        let q = QueryBuilder::new(&name, self.qtype).id(0xABCD).cd(self.cd).ad(self.ad);
        match self.edns {
            Some(size) => q.edns(size).dnssec_ok(self.dnssec_ok).to_vec(),
            None => q.to_vec(),
        }
    }
}

/// What the plugins after the cache do with a query.
type Backend<'b> = &'b dyn Fn(&mut Query<'_, '_>);

/// A worker at a controllable time.
struct Clock {
    worker: WorkerCtx,
    base: Instant,
}

impl Clock {
    fn new(id: usize) -> Clock {
        let worker = WorkerCtx::new(id);
        let base = worker.now;
        Clock { worker, base }
    }

    fn at(&mut self, secs: u64) -> &mut Clock {
        self.worker.now = self.base + Duration::from_secs(secs);
        self
    }
}

fn route() -> Arc<RouteTag> {
    Arc::new(RouteTag {
        slot: 0,
        server: "dns://:53".into(),
        zone: "example.org.".into(),
    })
}

/// One query through the cache and, on a miss, the backend.
struct Reply {
    hit: bool,
    refresh: bool,
    bytes: Vec<u8>,
    answered_by: &'static str,
}

fn query(c: &Cache, clock: &mut Clock, a: &Ask, backend: Backend<'_>) -> Reply {
    let raw = a.raw();
    let addr: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let req = Request::parse(&raw, Transport::Udp, addr, addr).ok().unwrap();
    let mut resp = Response::new();
    let tag = route();
    let mut q = Query {
        req: &req,
        resp: &mut resp,
        worker: &mut clock.worker,
        route: &tag,
        answered_by: "",
        error: None,
        refresh: false,
        coalesce: true,
        meta: crate::chain::Metadata::NONE,
    };
    let hit = match c.serve(&mut q) {
        Step::Answered => {
            q.answered_by = NAME;
            q.resp.finish();
            true
        }
        Step::Next => {
            backend(&mut q);
            q.resp.finish();
            c.on_response(&mut q);
            q.resp.finish();
            false
        }
        other => panic!("unexpected {other:?}"),
    };
    Reply {
        hit,
        refresh: q.refresh,
        bytes: q.resp.bytes().to_vec(),
        answered_by: q.answered_by,
    }
}

/// A background refresh: the backend's reply goes to `on_refresh`.
fn refresh(c: &Cache, clock: &mut Clock, a: &Ask, backend: Backend<'_>) {
    let raw = a.raw();
    let addr: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let req = Request::parse(&raw, Transport::Udp, addr, addr).ok().unwrap();
    let mut resp = Response::new();
    let tag = route();
    let mut q = Query {
        req: &req,
        resp: &mut resp,
        worker: &mut clock.worker,
        route: &tag,
        answered_by: "",
        error: None,
        refresh: false,
        coalesce: true,
        meta: crate::chain::Metadata::NONE,
    };
    backend(&mut q);
    q.resp.finish();
    c.on_refresh(&mut q);
}

fn cache_with(lines: &str, workers: usize, per_worker: bool) -> Cache {
    cache_in(&crate::process::ProcessState::new(), lines, workers, per_worker)
}

/// A cache of a configuration of `process` (two of them with the same labels share
/// their counters, as across a reload).
fn cache_in(process: &crate::process::ProcessState, lines: &str, workers: usize, per_worker: bool) -> Cache {
    let c = Cache::new(options(lines), workers, per_worker);
    c.attach(&AttachCtx::routes(&[route()], process));
    c
}

fn cache(lines: &str) -> Cache {
    cache_with(lines, 1, false)
}

// --- backends --------------------------------------------------------------------------

fn answered(q: &mut Query<'_, '_>, rcode: Rcode) {
    q.resp.start(q.req, rcode);
    q.resp.set_flag(flag::RA, true);
    q.answered_by = "backend";
}

fn soa(q: &mut Query<'_, '_>, ttl: u32) {
    q.resp.authority(Record {
        owner: Name::wire(b"\x07example\x03org\x00"),
        rtype: rtype::SOA,
        ttl,
        data: Rdata::Soa {
            mname: Name::wire(b"\x02ns\x07example\x03org\x00"),
            rname: Name::wire(b"\x0ahostmaster\x07example\x03org\x00"),
            serial: 1,
            refresh: 7200,
            retry: 1800,
            expire: 86400,
            minimum: ttl,
        },
    });
}

/// An A record for the question name.
fn a_record(ttl: u32, last: u8) -> impl Fn(&mut Query<'_, '_>) {
    move |q| {
        answered(q, Rcode::NOERROR);
        q.resp.answer(Record::at_question(
            rtype::A,
            ttl,
            Rdata::A(Ipv4Addr::new(10, 0, 0, last)),
        ));
    }
}

fn nxdomain(soa_ttl: Option<u32>) -> impl Fn(&mut Query<'_, '_>) {
    move |q| {
        answered(q, Rcode::NXDOMAIN);
        if let Some(ttl) = soa_ttl {
            soa(q, ttl);
        }
    }
}

fn written(rcode: Rcode) -> impl Fn(&mut Query<'_, '_>) {
    move |q| answered(q, rcode)
}

/// A failure the server writes (a plugin returned an error rcode).
fn failed(q: &mut Query<'_, '_>) {
    q.resp.start(q.req, Rcode::SERVFAIL);
    q.answered_by = "";
    q.error = Some(crate::chain::ChainError::Plugin("backend", "upstream timed out".into()));
}

fn never(_: &mut Query<'_, '_>) {
    panic!("the backend must not be asked");
}

// --- reading replies ---------------------------------------------------------------------

/// (owner, TTL, type) of every record but the OPT, in order.
fn records(reply: &[u8]) -> Vec<(String, u32, u16)> {
    let msg = domain::base::Message::from_octets(reply).unwrap();
    let mut out = Vec::new();
    for section in [
        msg.answer().unwrap(),
        msg.authority().unwrap(),
        msg.additional().unwrap(),
    ] {
        for rr in section {
            let rr = rr.unwrap();
            if rr.rtype() == domain::base::iana::Rtype::OPT {
                continue;
            }
            out.push((rr.owner().to_string(), rr.ttl().as_secs(), rr.rtype().to_int()));
        }
    }
    out
}

fn ttls(reply: &[u8]) -> Vec<u32> {
    records(reply).into_iter().map(|r| r.1).collect()
}

fn header(reply: &[u8]) -> domain::base::Header {
    domain::base::Message::from_octets(reply).unwrap().header()
}

fn rcode(reply: &[u8]) -> u16 {
    crate::dns::Header::of(reply).unwrap().rcode().0
}

fn render(c: &Cache) -> String {
    let mut f = Families::default();
    c.metrics(&mut f);
    f.render()
}

fn metric(c: &Cache, line_start: &str) -> f64 {
    let text = render(c);
    let line = text
        .lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

// --- key -----------------------------------------------------------------------------

#[test]
fn key_ignores_case_and_separates_type_do_and_cd() {
    let c = cache("cache");
    let mut clock = Clock::new(0);
    let first = query(&c, &mut clock, &ask("www.example.org"), &a_record(300, 1));
    assert!(!first.hit);
    // Any spelling of the name hits the same entry.
    let hit = query(&c, &mut clock, &ask("WWW.Example.ORG"), &never);
    assert!(hit.hit);
    // The type, the DO bit and the CD bit each make another entry.
    let other_type = ask("www.example.org").qtype(rtype::TXT);
    let nodata = |q: &mut Query<'_, '_>| {
        answered(q, Rcode::NOERROR);
        soa(q, 60);
    };
    assert!(!query(&c, &mut clock, &other_type, &nodata).hit);
    let dnssec = Ask {
        dnssec_ok: true,
        ..ask("www.example.org")
    };
    assert!(!query(&c, &mut clock, &dnssec, &a_record(300, 3)).hit);
    let cd = Ask {
        cd: true,
        ..ask("www.example.org")
    };
    assert!(!query(&c, &mut clock, &cd, &a_record(300, 4)).hit);
    for a in [&other_type, &dnssec, &cd] {
        assert!(query(&c, &mut clock, a, &never).hit);
    }
    // Same name through the key function: equal keys, whatever the case.
    let raw = |a: &Ask| a.raw();
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let (x, y) = (raw(&ask("a.example.org")), raw(&ask("A.EXAMPLE.org")));
    let rx = Request::parse(&x, Transport::Udp, addr, addr).ok().unwrap();
    let ry = Request::parse(&y, Transport::Udp, addr, addr).ok().unwrap();
    assert_eq!(Key::of(&rx, 7), Key::of(&ry, 7));
    let z = raw(&cd);
    let rz = Request::parse(&z, Transport::Udp, addr, addr).ok().unwrap();
    assert_ne!(Key::of(&rx, 7), Key::of(&rz, 7));
}

// --- hits ------------------------------------------------------------------------------

#[test]
fn hits_replay_the_records_with_decreasing_ttl_in_the_query_case() {
    let c = cache("cache");
    let mut clock = Clock::new(0);
    let miss = query(&c, &mut clock, &ask("Web.example.org"), &a_record(60, 7));
    assert_eq!(records(&miss.bytes), vec![("Web.example.org".into(), 60, rtype::A)]);
    let h = header(&miss.bytes);
    assert!(h.ra() && !h.aa());

    clock.at(10);
    let hit = query(&c, &mut clock, &ask("wEB.EXAMPLE.ORG"), &never);
    assert!(hit.hit && !hit.refresh);
    assert_eq!(hit.answered_by, NAME);
    assert_eq!(records(&hit.bytes), vec![("wEB.EXAMPLE.ORG".into(), 50, rtype::A)]);
    let h = header(&hit.bytes);
    // AA is always set on hits; RA comes from the stored reply; RD from the query.
    assert!(h.aa() && h.ra() && h.rd() && h.qr());
    assert_eq!(h.id(), 0xABCD);
    // The client's OPT record ends the reply.
    let msg = domain::base::Message::from_octets(hit.bytes.as_slice()).unwrap();
    assert!(msg.opt().is_some());
    assert!(hit.bytes.windows(4).any(|w| w == [10, 0, 0, 7]));

    clock.at(59);
    assert_eq!(
        ttls(&query(&c, &mut clock, &ask("web.example.org"), &never).bytes),
        vec![1]
    );
    // Expired: asked again.
    clock.at(60);
    assert!(!query(&c, &mut clock, &ask("web.example.org"), &a_record(60, 8)).hit);
}

#[test]
fn a_hit_is_truncated_to_the_client_size() {
    let c = cache("cache");
    let mut clock = Clock::new(0);
    let many = |q: &mut Query<'_, '_>| {
        answered(q, Rcode::NOERROR);
        for i in 0..60 {
            q.resp
                .answer(Record::at_question(rtype::A, 300, Rdata::A(Ipv4Addr::new(10, 0, 1, i))));
        }
    };
    let big = Ask {
        edns: Some(4096),
        ..ask("many.example.org")
    };
    let miss = query(&c, &mut clock, &big, &many);
    assert_eq!(records(&miss.bytes).len(), 60);
    let small = Ask {
        edns: None,
        ..ask("many.example.org")
    };
    let hit = query(&c, &mut clock, &small, &never);
    assert!(hit.hit && hit.bytes.len() <= 512);
    assert!(header(&hit.bytes).tc());
    assert_eq!(records(&hit.bytes).len(), (512 - 12 - 22) / 16);
    // The truncated hit was not stored in place of the full one.
    assert_eq!(records(&query(&c, &mut clock, &big, &never).bytes).len(), 60);
}

#[test]
fn every_section_and_compression_pointers_survive() {
    let c = cache("cache");
    let mut clock = Clock::new(0);
    let referral_like = |q: &mut Query<'_, '_>| {
        answered(q, Rcode::NOERROR);
        let zone = q.req.qname_label_offset(1);
        q.resp
            .answer(Record::at_question(rtype::A, 100, Rdata::A(Ipv4Addr::new(10, 0, 0, 1))));
        q.resp.authority(Record {
            owner: Name::under_question(&[], zone),
            rtype: rtype::NS,
            ttl: 50,
            data: Rdata::Name(Name::under_question(b"\x02ns", zone)),
        });
        q.resp.additional(Record {
            owner: Name::under_question(b"\x02ns", zone),
            rtype: rtype::A,
            ttl: 20,
            data: Rdata::A(Ipv4Addr::new(10, 0, 0, 53)),
        });
    };
    let miss = query(&c, &mut clock, &ask("x.Example.org"), &referral_like);
    // Every record of the first reply already carries the cache duration (the lowest TTL).
    assert_eq!(
        records(&miss.bytes),
        vec![
            ("x.Example.org".into(), 20, rtype::A),
            ("Example.org".into(), 20, rtype::NS),
            ("ns.Example.org".into(), 20, rtype::A),
        ]
    );
    clock.at(5);
    let hit = query(&c, &mut clock, &ask("X.EXAMPLE.ORG"), &never);
    assert_eq!(
        records(&hit.bytes),
        vec![
            ("X.EXAMPLE.ORG".into(), 15, rtype::A),
            ("EXAMPLE.ORG".into(), 15, rtype::NS),
            ("ns.EXAMPLE.ORG".into(), 15, rtype::A),
        ]
    );
    let msg = domain::base::Message::from_octets(hit.bytes.as_slice()).unwrap();
    assert_eq!(
        (
            msg.header_counts().ancount(),
            msg.header_counts().nscount(),
            msg.header_counts().arcount()
        ),
        (1, 1, 2)
    );
}

// --- TTLs ------------------------------------------------------------------------------

#[test]
fn ttls_are_clamped_per_cache() {
    let mut clock = Clock::new(0);
    let c = cache("cache");
    // Raised to the minimum, 5; lowered to the maximum (3600 success, 1800 denial).
    assert_eq!(
        ttls(&query(&c, &mut clock, &ask("low.example.org"), &a_record(1, 1)).bytes),
        vec![5]
    );
    assert_eq!(
        ttls(&query(&c, &mut clock, &ask("zero.example.org"), &a_record(0, 1)).bytes),
        vec![5]
    );
    assert_eq!(
        ttls(&query(&c, &mut clock, &ask("high.example.org"), &a_record(86400, 1)).bytes),
        vec![3600]
    );
    assert_eq!(
        ttls(&query(&c, &mut clock, &ask("nx.example.org"), &nxdomain(Some(3600))).bytes),
        vec![1800]
    );
    // A reply without records counts as 5 seconds.
    let empty = query(&c, &mut clock, &ask("empty.example.org"), &written(Rcode::NOERROR));
    clock.at(4);
    assert!(query(&c, &mut clock, &ask("empty.example.org"), &never).hit);
    clock.at(5);
    assert!(!query(&c, &mut clock, &ask("empty.example.org"), &written(Rcode::NOERROR)).hit);
    assert!(records(&empty.bytes).is_empty());

    // `cache 30` caps both; `success`/`denial` set their own.
    let c = cache("cache 30 {\n denial 100 20 10\n success 100 600 60\n}");
    let mut clock = Clock::new(0);
    assert_eq!(
        ttls(&query(&c, &mut clock, &ask("a.example.org"), &a_record(7200, 1)).bytes),
        vec![600]
    );
    assert_eq!(
        ttls(&query(&c, &mut clock, &ask("b.example.org"), &a_record(10, 1)).bytes),
        vec![60]
    );
    assert_eq!(
        ttls(&query(&c, &mut clock, &ask("c.example.org"), &nxdomain(Some(300))).bytes),
        vec![20]
    );
    assert_eq!(
        ttls(&query(&c, &mut clock, &ask("d.example.org"), &nxdomain(Some(1))).bytes),
        vec![10]
    );
    let c = cache("cache 30");
    assert_eq!(
        ttls(&query(&c, &mut clock, &ask("e.example.org"), &a_record(7200, 1)).bytes),
        vec![30]
    );
    assert_eq!(
        ttls(&query(&c, &mut clock, &ask("f.example.org"), &nxdomain(Some(3600))).bytes),
        vec![30]
    );
    // A minimum of 0 lets a TTL of 0 through, and such a reply is not kept.
    let c = cache("cache {\n success 100 60 0\n}");
    assert_eq!(
        ttls(&query(&c, &mut clock, &ask("g.example.org"), &a_record(0, 1)).bytes),
        vec![0]
    );
    assert!(!query(&c, &mut clock, &ask("g.example.org"), &a_record(0, 1)).hit);
}

#[test]
fn keepttl_answers_with_the_stored_ttl() {
    let c = cache("cache {\n keepttl\n}");
    let mut clock = Clock::new(0);
    query(&c, &mut clock, &ask("k.example.org"), &a_record(100, 1));
    clock.at(40);
    let hit = query(&c, &mut clock, &ask("k.example.org"), &never);
    assert!(hit.hit);
    assert_eq!(ttls(&hit.bytes), vec![100]);
    clock.at(100);
    assert!(!query(&c, &mut clock, &ask("k.example.org"), &a_record(100, 1)).hit);
}

// --- what is stored ------------------------------------------------------------------------

fn is_cached(c: &Cache, name: &'static str, backend: Backend<'_>) -> bool {
    let mut clock = Clock::new(0);
    query(c, &mut clock, &ask(name), backend);
    let seen = std::cell::Cell::new(false);
    let again = |q: &mut Query<'_, '_>| {
        seen.set(true);
        backend(q)
    };
    let second = query(c, &mut clock, &ask(name), &again);
    assert_eq!(second.hit, !seen.get());
    second.hit
}

#[test]
fn what_is_not_cached() {
    let c = cache("cache");
    let truncated = |q: &mut Query<'_, '_>| {
        a_record(300, 1)(q);
        q.resp.set_flag(flag::TC, true);
    };
    assert!(!is_cached(&c, "tc.example.org", &truncated));
    for (name, rc) in [
        ("refused.example.org", Rcode::REFUSED),
        ("notimp.example.org", Rcode::NOTIMP),
        ("formerr.example.org", Rcode::FORMERR),
    ] {
        assert!(!is_cached(&c, name, &written(rc)), "{rc:?}");
    }
    assert!(!is_cached(&c, "nosoa.example.org", &nxdomain(None)));
    // A CNAME whose target did not resolve, without a SOA to say so.
    let dangling = |q: &mut Query<'_, '_>| {
        answered(q, Rcode::NOERROR);
        q.resp.answer(Record::at_question(
            rtype::CNAME,
            300,
            Rdata::Name(Name::wire(b"\x06target\x07example\x03net\x00")),
        ));
    };
    assert!(!is_cached(&c, "dangling.example.org", &dangling));
    // A failure the server writes itself (a plugin returned an error) is never kept.
    assert!(!is_cached(&c, "fail.example.org", &failed));
    // Names outside the cache's zones pass through untouched.
    let mut clock = Clock::new(0);
    let outside = query(&c, &mut clock, &ask("www.other.net"), &a_record(7, 1));
    assert_eq!(ttls(&outside.bytes), vec![7]);
    assert!(!query(&c, &mut clock, &ask("www.other.net"), &a_record(7, 1)).hit);
    assert_eq!(
        metric(&c, "coredns_cache_entries{server=\"dns://:53\",type=\"success\""),
        0.0
    );
}

#[test]
fn what_is_cached() {
    let c = cache("cache");
    assert!(is_cached(&c, "a.example.org", &a_record(300, 1)));
    // A CNAME chain that ends in the asked type.
    let chain = |q: &mut Query<'_, '_>| {
        answered(q, Rcode::NOERROR);
        let target = b"\x06target\x07example\x03net\x00";
        q.resp
            .answer(Record::at_question(rtype::CNAME, 300, Rdata::Name(Name::wire(target))));
        q.resp.answer(Record {
            owner: Name::wire(b"\x06TARGET\x07example\x03net\x00"),
            rtype: rtype::A,
            ttl: 300,
            data: Rdata::A(Ipv4Addr::new(10, 9, 9, 9)),
        });
    };
    assert!(is_cached(&c, "chain.example.org", &chain));
    // A dangling CNAME with the target zone's SOA (the target has no such record).
    let with_soa = |q: &mut Query<'_, '_>| {
        answered(q, Rcode::NOERROR);
        q.resp.answer(Record::at_question(
            rtype::CNAME,
            300,
            Rdata::Name(Name::wire(b"\x06target\x07example\x03org\x00")),
        ));
        soa(q, 60);
    };
    assert!(is_cached(&c, "cname-nodata.example.org", &with_soa));
    // Asking for the CNAME itself.
    let cname = |q: &mut Query<'_, '_>| {
        answered(q, Rcode::NOERROR);
        q.resp.answer(Record::at_question(
            rtype::CNAME,
            300,
            Rdata::Name(Name::wire(b"\x01t\x07example\x03net\x00")),
        ));
    };
    let mut clock = Clock::new(0);
    let cq = ask("c.example.org").qtype(rtype::CNAME);
    query(&c, &mut clock, &cq, &cname);
    assert!(query(&c, &mut clock, &cq, &never).hit);
    // NODATA (NOERROR with a SOA) and NXDOMAIN with a SOA go to the denial cache.
    let nodata = |q: &mut Query<'_, '_>| {
        answered(q, Rcode::NOERROR);
        soa(q, 60);
    };
    assert!(is_cached(&c, "nodata.example.org", &nodata));
    assert!(is_cached(&c, "nx.example.org", &nxdomain(Some(60))));
    let hit = query(&c, &mut clock, &ask("NX.example.org"), &never);
    assert_eq!(rcode(&hit.bytes), 3);
    assert!(header(&hit.bytes).aa());
    assert_eq!(records(&hit.bytes)[0].2, rtype::SOA);
    assert_eq!(
        metric(&c, "coredns_cache_entries{server=\"dns://:53\",type=\"denial\""),
        2.0
    );
    assert_eq!(
        metric(&c, "coredns_cache_entries{server=\"dns://:53\",type=\"success\""),
        4.0
    );
    assert_eq!(
        metric(&c, "coredns_cache_hits_total{server=\"dns://:53\",type=\"denial\""),
        3.0
    );
}

#[test]
fn servfail_is_kept_for_the_servfail_duration() {
    let c = cache("cache");
    let mut clock = Clock::new(0);
    let first = query(&c, &mut clock, &ask("sf.example.org"), &written(Rcode::SERVFAIL));
    assert_eq!(rcode(&first.bytes), 2);
    clock.at(4);
    let hit = query(&c, &mut clock, &ask("sf.example.org"), &never);
    assert!(hit.hit);
    assert_eq!(rcode(&hit.bytes), 2);
    clock.at(5);
    assert!(!query(&c, &mut clock, &ask("sf.example.org"), &written(Rcode::SERVFAIL)).hit);

    let c = cache("cache {\n servfail 30s\n}");
    let mut clock = Clock::new(0);
    query(&c, &mut clock, &ask("sf.example.org"), &written(Rcode::SERVFAIL));
    clock.at(29);
    assert!(query(&c, &mut clock, &ask("sf.example.org"), &never).hit);

    let c = cache("cache {\n servfail 0\n}");
    assert!(!is_cached(&c, "sf.example.org", &written(Rcode::SERVFAIL)));
}

#[test]
fn disable_turns_one_cache_off_for_zones() {
    let c = cache("cache {\n disable success\n}");
    assert!(!is_cached(&c, "a.example.org", &a_record(300, 1)));
    assert!(is_cached(&c, "nx.example.org", &nxdomain(Some(60))));

    let c = cache("cache . {\n disable denial private.example.org\n}");
    assert!(!is_cached(&c, "x.private.example.org", &nxdomain(Some(60))));
    assert!(is_cached(&c, "x.public.example.org", &nxdomain(Some(60))));
    assert!(is_cached(&c, "y.private.example.org", &a_record(60, 1)));
}

#[test]
fn zones_limit_what_is_cached() {
    let c = cache("cache 30 sub.example.org");
    assert!(is_cached(&c, "a.sub.example.org", &a_record(300, 1)));
    assert!(!is_cached(&c, "a.example.org", &a_record(300, 1)));
    // Not even counted.
    assert_eq!(metric(&c, "coredns_cache_requests_total"), 2.0);
}

#[test]
fn the_ad_bit_is_kept_only_for_clients_that_want_it() {
    let c = cache("cache");
    let mut clock = Clock::new(0);
    let signed = |q: &mut Query<'_, '_>| {
        a_record(300, 1)(q);
        q.resp.set_flag(flag::AD, true);
    };
    let plain = ask("ad.example.org");
    assert!(!header(&query(&c, &mut clock, &plain, &signed).bytes).ad());
    assert!(!header(&query(&c, &mut clock, &plain, &never).bytes).ad());
    let with_ad = Ask {
        ad: true,
        ..plain.clone()
    };
    assert!(header(&query(&c, &mut clock, &with_ad, &never).bytes).ad());
}

#[test]
fn a_new_reply_replaces_the_other_cache_entry() {
    // An entry in the denial cache is found first, so the success reply that follows it
    // must take it out.
    let c = cache("cache {\n serve_stale 1h verify\n}");
    let mut clock = Clock::new(0);
    query(&c, &mut clock, &ask("flip.example.org"), &nxdomain(Some(10)));
    clock.at(20);
    let fresh = query(&c, &mut clock, &ask("flip.example.org"), &a_record(100, 1));
    assert!(!fresh.hit && rcode(&fresh.bytes) == 0);
    let hit = query(&c, &mut clock, &ask("flip.example.org"), &never);
    assert!(hit.hit);
    assert_eq!(rcode(&hit.bytes), 0);
    assert_eq!(
        metric(&c, "coredns_cache_entries{server=\"dns://:53\",type=\"denial\""),
        0.0
    );
}

// --- capacity ------------------------------------------------------------------------------

#[test]
fn a_full_shard_evicts_a_random_entry() {
    // 1024 entries: 4 per shard.
    let c = cache("cache {\n success 1024\n}");
    let mut clock = Clock::new(0);
    let names: Vec<&'static str> = (0..3000)
        .map(|i| &*Box::leak(format!("n{i}.example.org").into_boxed_str()))
        .collect();
    for n in &names {
        query(&c, &mut clock, &ask(n), &a_record(300, 1));
    }
    let entries = metric(&c, "coredns_cache_entries{server=\"dns://:53\",type=\"success\"");
    assert!(entries <= 1024.0 && entries > 900.0, "{entries}");
    let evictions = metric(
        &c,
        "coredns_cache_evictions_total{server=\"dns://:53\",type=\"success\"",
    );
    assert_eq!(evictions, 3000.0 - entries);
    // Whatever is left still answers (misses now get a reply that is not kept).
    let hits = names
        .iter()
        .filter(|n| query(&c, &mut clock, &ask(n), &written(Rcode::REFUSED)).hit)
        .count();
    assert_eq!(hits as f64, entries);
}

// --- prefetch --------------------------------------------------------------------------------

#[test]
fn prefetch_refreshes_popular_entries_near_expiry() {
    // Popular: 2 hits without a gap of 1 minute; refresh once at most 50% of the TTL is left.
    let c = cache("cache {\n prefetch 2 1m 50%\n}");
    let mut clock = Clock::new(0);
    let q = ask("pf.example.org");
    query(&c, &mut clock, &q, &a_record(10, 1));
    clock.at(1);
    let first = query(&c, &mut clock, &q, &never);
    assert!(first.hit && !first.refresh, "one hit is not popular");
    clock.at(4);
    assert!(!query(&c, &mut clock, &q, &never).refresh, "6 of 10 seconds left");
    clock.at(5);
    let due = query(&c, &mut clock, &q, &never);
    assert!(due.hit && due.refresh);
    assert_eq!(ttls(&due.bytes), vec![5]);
    clock.at(6);
    assert!(!query(&c, &mut clock, &q, &never).refresh, "one refresh in flight");
    assert_eq!(metric(&c, "coredns_cache_prefetch_total"), 1.0);

    // The refresh's reply replaces the entry, keeping its popularity.
    refresh(&c, &mut clock, &q, &a_record(10, 2));
    clock.at(7);
    let renewed = query(&c, &mut clock, &q, &never);
    assert_eq!(ttls(&renewed.bytes), vec![9]);
    assert!(renewed.bytes.windows(4).any(|w| w == [10, 0, 0, 2]));
    clock.at(11);
    assert!(query(&c, &mut clock, &q, &never).refresh);

    // A gap of the window or more starts the count again.
    let c = cache("cache {\n prefetch 2 1s 90%\n}");
    let mut clock = Clock::new(0);
    query(&c, &mut clock, &q, &a_record(100, 1));
    for t in [10, 20, 30] {
        clock.at(t);
        assert!(!query(&c, &mut clock, &q, &never).refresh);
    }
    clock.at(31);
    assert!(query(&c, &mut clock, &q, &never).refresh);
}

#[test]
fn a_failed_prefetch_keeps_the_entry() {
    let c = cache("cache {\n prefetch 1 1m 90%\n}");
    let mut clock = Clock::new(0);
    let q = ask("pf.example.org");
    query(&c, &mut clock, &q, &a_record(100, 1));
    clock.at(50);
    assert!(query(&c, &mut clock, &q, &never).refresh);
    refresh(&c, &mut clock, &q, &written(Rcode::SERVFAIL));
    clock.at(51);
    let after = query(&c, &mut clock, &q, &never);
    assert!(after.hit && after.refresh, "the failure cleared the in-flight mark");
    assert_eq!(rcode(&after.bytes), 0);
    assert_eq!(ttls(&after.bytes), vec![49]);
}

// --- serve_stale -----------------------------------------------------------------------------

#[test]
fn serve_stale_immediate_answers_expired_entries_and_refreshes() {
    let c = cache("cache {\n serve_stale 1m\n}");
    let mut clock = Clock::new(0);
    let q = ask("st.example.org");
    query(&c, &mut clock, &q, &a_record(10, 1));
    clock.at(12);
    let stale = query(&c, &mut clock, &q, &never);
    assert!(stale.hit && stale.refresh);
    assert_eq!(ttls(&stale.bytes), vec![0]);
    clock.at(13);
    assert!(!query(&c, &mut clock, &q, &never).refresh, "one refresh in flight");
    // The refresh failed: the entry stays, and the next stale answer tries again.
    refresh(&c, &mut clock, &q, &failed);
    clock.at(14);
    let again = query(&c, &mut clock, &q, &never);
    assert!(again.hit && again.refresh);
    assert_eq!(metric(&c, "coredns_cache_served_stale_total"), 3.0);
    // It succeeded: fresh again.
    refresh(&c, &mut clock, &q, &a_record(10, 2));
    clock.at(15);
    let fresh = query(&c, &mut clock, &q, &never);
    assert!(fresh.hit && !fresh.refresh);
    assert_eq!(ttls(&fresh.bytes), vec![9]);
    // Expired for longer than the stale window: asked again.
    clock.at(14 + 10 + 60);
    assert!(!query(&c, &mut clock, &q, &a_record(10, 3)).hit);
}

#[test]
fn serve_stale_response_ttl_and_recheck() {
    let c = cache("cache {\n serve_stale 1h immediate 30 1m\n}");
    let mut clock = Clock::new(0);
    let q = ask("st.example.org");
    query(&c, &mut clock, &q, &nxdomain(Some(10)));
    clock.at(20);
    let stale = query(&c, &mut clock, &q, &never);
    assert!(stale.refresh);
    assert_eq!(rcode(&stale.bytes), 3);
    assert_eq!(ttls(&stale.bytes), vec![30]);
    refresh(&c, &mut clock, &q, &written(Rcode::SERVFAIL));
    // No new refresh for a minute after a failed one.
    clock.at(79);
    assert!(!query(&c, &mut clock, &q, &never).refresh);
    clock.at(80);
    assert!(query(&c, &mut clock, &q, &never).refresh);
}

#[test]
fn serve_stale_verify_refreshes_first() {
    let c = cache("cache {\n serve_stale 1h verify\n}");
    let mut clock = Clock::new(0);
    let q = ask("v.example.org");
    query(&c, &mut clock, &q, &a_record(10, 1));
    clock.at(5);
    assert!(query(&c, &mut clock, &q, &never).hit, "fresh entries are answered");
    // Stale: the backend is asked; its failure gets the stale answer.
    clock.at(20);
    let fallback = query(&c, &mut clock, &q, &failed);
    assert!(!fallback.hit);
    assert_eq!(fallback.answered_by, NAME);
    assert_eq!(rcode(&fallback.bytes), 0);
    assert_eq!(ttls(&fallback.bytes), vec![0]);
    assert!(header(&fallback.bytes).aa());
    let fallback = query(&c, &mut clock, &q, &written(Rcode::SERVFAIL));
    assert_eq!(rcode(&fallback.bytes), 0);
    // The SERVFAIL was not kept either.
    assert_eq!(
        metric(&c, "coredns_cache_entries{server=\"dns://:53\",type=\"denial\""),
        0.0
    );
    assert_eq!(metric(&c, "coredns_cache_served_stale_total"), 2.0);
    // Its success replaces the entry.
    clock.at(21);
    let fresh = query(&c, &mut clock, &q, &a_record(10, 2));
    assert!(fresh.bytes.windows(4).any(|w| w == [10, 0, 0, 2]));
    assert_eq!(ttls(&fresh.bytes), vec![10]);
    clock.at(22);
    assert_eq!(ttls(&query(&c, &mut clock, &q, &never).bytes), vec![9]);
}

#[test]
fn serve_stale_verify_recheck_answers_stale_without_asking() {
    let c = cache("cache {\n serve_stale 1h verify 1s 0 30s\n}");
    let mut clock = Clock::new(0);
    let q = ask("v.example.org");
    query(&c, &mut clock, &q, &a_record(10, 1));
    clock.at(20);
    assert_eq!(rcode(&query(&c, &mut clock, &q, &failed).bytes), 0);
    // Within 30 s of the failure: straight from the stale entry.
    clock.at(49);
    let stale = query(&c, &mut clock, &q, &never);
    assert!(stale.hit && !stale.refresh);
    clock.at(50);
    let seen = std::cell::Cell::new(false);
    let asked = |q: &mut Query<'_, '_>| {
        seen.set(true);
        failed(q)
    };
    query(&c, &mut clock, &q, &asked);
    assert!(seen.get());
}

// --- per worker or shared ----------------------------------------------------------------------

#[test]
fn shared_and_per_worker_stores() {
    let q = ask("w.example.org");
    let process = crate::process::ProcessState::new();
    let shared = cache_in(&process, "cache", 2, false);
    assert!(!shared.per_worker());
    let (mut w0, mut w1) = (Clock::new(0), Clock::new(1));
    query(&shared, &mut w0, &q, &a_record(60, 1));
    assert!(query(&shared, &mut w1, &q, &never).hit);

    let own = cache_in(&process, "cache", 2, true);
    assert!(own.per_worker());
    let (mut w0, mut w1) = (Clock::new(0), Clock::new(1));
    query(&own, &mut w0, &q, &a_record(60, 1));
    assert!(query(&own, &mut w0, &q, &never).hit);
    assert!(!query(&own, &mut w1, &q, &a_record(60, 2)).hit);
    assert!(query(&own, &mut w1, &q, &never).hit);
    // Counters are per worker and summed; entries over every store. The counters
    // belong to the labels, as CoreDNS's do, so the first cache's hit and miss (same
    // server and zones) are in them too.
    assert_eq!(
        metric(&own, "coredns_cache_hits_total{server=\"dns://:53\",type=\"success\""),
        3.0
    );
    assert_eq!(metric(&own, "coredns_cache_misses_total"), 3.0);
    assert_eq!(
        metric(&own, "coredns_cache_entries{server=\"dns://:53\",type=\"success\""),
        2.0
    );
}

#[test]
fn the_environment_knob_selects_per_worker_stores() {
    assert!(!per_worker_knob(None));
    assert!(!per_worker_knob(Some("0")));
    assert!(!per_worker_knob(Some("")));
    assert!(per_worker_knob(Some("1")));
    let zones = [Zone::new("example.org.").unwrap()];
    let ctx = SetupCtx {
        zones: &zones,
        config_dir: "/".into(),
        workers: 3,
        binds: None,
        process: &crate::process::ProcessState::new(),
    };
    let parsed = crate::config::parse_str("example.org {\ncache\n}\n", "Corefile", Path::new("/")).unwrap();
    let dirs: Vec<&Directive> = parsed.blocks[0].directives.iter().collect();
    assert!(setup(&dirs, &ctx).is_ok());
    assert_eq!(
        Cache::new(setup::parse(dirs[0], &ctx).unwrap(), 3, true).stores.len(),
        3
    );
}

// --- metrics ---------------------------------------------------------------------------------

#[test]
fn metrics_carry_coredns_names_and_labels() {
    let c = cache("cache 30 example.org other.net");
    let mut clock = Clock::new(0);
    query(&c, &mut clock, &ask("m.example.org"), &a_record(300, 1));
    query(&c, &mut clock, &ask("m.example.org"), &never);
    query(&c, &mut clock, &ask("x.example.org"), &nxdomain(Some(60)));
    let text = render(&c);
    for line in [
        r#"coredns_cache_entries{server="dns://:53",type="success",zones="example.org.,other.net.",view=""} 1"#,
        r#"coredns_cache_entries{server="dns://:53",type="denial",zones="example.org.,other.net.",view=""} 1"#,
        r#"coredns_cache_requests_total{server="dns://:53",zones="example.org.,other.net.",view=""} 3"#,
        r#"coredns_cache_hits_total{server="dns://:53",type="success",zones="example.org.,other.net.",view=""} 1"#,
        r#"coredns_cache_hits_total{server="dns://:53",type="denial",zones="example.org.,other.net.",view=""} 0"#,
        r#"coredns_cache_misses_total{server="dns://:53",zones="example.org.,other.net.",view=""} 2"#,
        r#"coredns_cache_prefetch_total{server="dns://:53",zones="example.org.,other.net.",view=""} 0"#,
        r#"coredns_cache_drops_total{server="dns://:53",zones="example.org.,other.net.",view=""} 0"#,
        r#"coredns_cache_served_stale_total{server="dns://:53",zones="example.org.,other.net.",view=""} 0"#,
        r#"coredns_cache_evictions_total{server="dns://:53",type="success",zones="example.org.,other.net.",view=""} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\nin\n{text}");
    }
    assert!(text.contains("# TYPE coredns_cache_entries gauge"));
    assert!(text.contains("# TYPE coredns_cache_hits_total counter"));
}

// --- allocations -------------------------------------------------------------------------------

/// A hit writes into the worker's response buffers without growing them and changes
/// nothing in the store but the entry's own fields. (The test binary's global allocator
/// belongs to the prometheus tests; this checks the buffers the hit path writes to.)
#[test]
fn a_hit_does_not_grow_any_buffer() {
    let c = cache("cache {\n prefetch 1000\n}");
    let mut clock = Clock::new(0);
    let q = ask("alloc.example.org");
    query(&c, &mut clock, &q, &a_record(300, 1));
    let raw = q.raw();
    let addr: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    let req = Request::parse(&raw, Transport::Udp, addr, addr).ok().unwrap();
    let mut resp = Response::new();
    let tag = route();
    let before = resp.bytes().as_ptr();
    for _ in 0..1000 {
        let mut q = Query {
            req: &req,
            resp: &mut resp,
            worker: &mut clock.worker,
            route: &tag,
            answered_by: "",
            error: None,
            refresh: false,
            coalesce: true,
            meta: crate::chain::Metadata::NONE,
        };
        assert!(matches!(c.serve(&mut q), Step::Answered));
        q.resp.finish();
    }
    assert_eq!(resp.bytes().as_ptr(), before);
    assert_eq!(
        metric(&c, "coredns_cache_entries{server=\"dns://:53\",type=\"success\""),
        1.0
    );
}
