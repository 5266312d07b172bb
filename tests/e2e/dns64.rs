//! `dns64` through the real binary: AAAA answers made from A records (CoreDNS's dns64
//! README; dns64_test.go's TestDNS64 cases), for names the server forwards to the test
//! kit's fake upstream and for a cluster Service, over UDP and TCP, from IPv6 clients
//! (and from IPv4 ones with `allow_ipv4`); whole records compared.

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use domain::base::iana::{Class, Rcode, Rtype};
use domain::base::{Message, MessageBuilder, Name, Serial, ToName, Ttl};
use domain::rdata::{A, Cname, Soa};

use testkit::corpus::Corpus;
use testkit::prelude::*;

/// The fake upstream's zone `example.net.`, which has A records and no AAAA:
/// `v4only` has two A records (TTL 300 and 60), `alias` is a CNAME (TTL 100) to it,
/// `missing` does not exist; every denial carries the zone's SOA with TTL 120.
fn v4_only(q: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_octets(q.to_vec()).ok()?;
    let question = req.sole_question().ok()?;
    let qname: Name<Vec<u8>> = question.qname().to_name();
    let text = qname.to_string().to_ascii_lowercase();
    let qtype = question.qtype();
    let mut b = MessageBuilder::new_vec();
    let h = b.header_mut();
    h.set_id(req.header().id());
    h.set_qr(true);
    h.set_rd(req.header().rd());
    h.set_ra(true);
    h.set_rcode(if text.starts_with("missing.") {
        Rcode::NXDOMAIN
    } else {
        Rcode::NOERROR
    });
    let mut qb = b.question();
    qb.push((&qname, qtype, Class::IN)).ok()?;
    let mut ab = qb.answer();
    let target = Name::<Vec<u8>>::from_str("v4only.example.net.").ok()?;
    let mut answered = false;
    if text == "alias.example.net" {
        ab.push((&qname, 100, Cname::new(target.clone()))).ok()?;
    }
    if qtype == Rtype::A && (text == "alias.example.net" || text == "v4only.example.net") {
        ab.push((&target, 300, A::new(Ipv4Addr::new(192, 0, 2, 10)))).ok()?;
        ab.push((&target, 60, A::new(Ipv4Addr::new(192, 0, 2, 11)))).ok()?;
        answered = true;
    }
    let mut auth = ab.authority();
    if !answered {
        let zone = Name::<Vec<u8>>::from_str("example.net.").ok()?;
        let soa = Soa::new(
            Name::<Vec<u8>>::from_str("ns.example.net.").ok()?,
            Name::<Vec<u8>>::from_str("hostmaster.example.net.").ok()?,
            Serial(1),
            Ttl::from_secs(3600),
            Ttl::from_secs(600),
            Ttl::from_secs(86400),
            Ttl::from_secs(120),
        );
        auth.push((&zone, 120, soa)).ok()?;
    }
    let mut add = auth.additional();
    if req.opt().is_some() {
        add.opt(|o| {
            o.set_udp_payload_size(1232);
            Ok(())
        })
        .ok()?;
    }
    Some(add.finish())
}

/// The zone's SOA as the client sees it in a denial.
const SOA: &str = "example.net. 120 IN SOA ns.example.net. hostmaster.example.net. 1 3600 600 86400 120";

/// A query (EDNS 1232, RD) to `to`, over TCP or UDP.
fn ask(to: SocketAddr, tcp: bool, name: &str, qtype: Rtype) -> Message<Vec<u8>> {
    let q = query_bytes(name, qtype, Some(1232), 0x6464);
    if tcp {
        tcp_exchange(to, &q)
    } else {
        udp_exchange(to, &q)
    }
}

/// The header bits set, dig's way (`qr rd`).
fn flags(m: &Message<Vec<u8>>) -> String {
    let h = m.header();
    let bits = [
        (h.qr(), "qr"),
        (h.aa(), "aa"),
        (h.tc(), "tc"),
        (h.rd(), "rd"),
        (h.ra(), "ra"),
    ];
    bits.iter().filter(|b| b.0).map(|b| b.1).collect::<Vec<_>>().join(" ")
}

/// README "Description": an AAAA query from an IPv6 client for a name with only A
/// records gets AAAA records under the well-known prefix, made from the A records that
/// the server's own lookup finds (here: forwarded). TTLs are the lesser of the A's and
/// the AAAA denial's SOA (TestDNS64 "standard flow"); the reply is a fresh one (no AA,
/// no RA: CoreDNS's `SetReply`). CNAMEs stay (RFC 6147 5.3.3). A name error passes
/// (TestDNS64 "nxdomain"), and IPv4 clients get the upstream's denial as it is
/// (README: "only performed if the query came in via IPv6").
#[test]
fn forwarded_names_with_only_a_records_get_aaaa_over_ipv6() {
    let up = FakeUpstream::with_mode(Mode::Raw(v4_only));
    let mport = free_port();
    let s = Server::start(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1 ::1\n    dns64\n    prometheus 127.0.0.1:{mport}\n    forward . {}\n}}\n",
        up.spec()
    ));
    let v6: SocketAddr = format!("[::1]:{}", s.port).parse().unwrap();
    for tcp in [false, true] {
        let via = if tcp { "tcp" } else { "udp" };
        let m = ask(v6, tcp, "v4only.example.net", Rtype::AAAA);
        assert_eq!(rcode(&m), Rcode::NOERROR, "{via}");
        assert_eq!(flags(&m), "qr rd", "{via}");
        assert_eq!(
            section(&m, "answer"),
            [
                "v4only.example.net. 120 IN AAAA 64:ff9b::c000:20a",
                "v4only.example.net. 60 IN AAAA 64:ff9b::c000:20b",
            ],
            "{via}"
        );
        assert_eq!(section(&m, "authority"), Vec::<String>::new(), "{via}");
        let m = ask(v6, tcp, "alias.example.net", Rtype::AAAA);
        assert_eq!(
            section(&m, "answer"),
            [
                "alias.example.net. 100 IN CNAME v4only.example.net.",
                "v4only.example.net. 120 IN AAAA 64:ff9b::c000:20a",
                "v4only.example.net. 60 IN AAAA 64:ff9b::c000:20b",
            ],
            "{via}"
        );
        let m = ask(v6, tcp, "missing.example.net", Rtype::AAAA);
        assert_eq!(rcode(&m), Rcode::NXDOMAIN, "{via}");
        assert_eq!(section(&m, "authority"), [SOA], "{via}");
        // A queries are not looked at.
        let m = ask(v6, tcp, "v4only.example.net", Rtype::A);
        assert_eq!(
            section(&m, "answer"),
            [
                "v4only.example.net. 300 IN A 192.0.2.10",
                "v4only.example.net. 60 IN A 192.0.2.11",
            ],
            "{via}"
        );
        // From IPv4: the denial as the upstream gave it.
        let m = ask(s.addr(), tcp, "v4only.example.net", Rtype::AAAA);
        assert_eq!(rcode(&m), Rcode::NOERROR, "{via}");
        assert_eq!(section(&m, "answer"), Vec::<String>::new(), "{via}");
        assert_eq!(section(&m, "authority"), [SOA], "{via}");
    }
    // The A records were asked of the upstream (through the server's own lookup); the
    // NXDOMAIN brought no A lookup.
    assert!(up.count_type("v4only.example.net", Rtype::A) >= 1);
    assert_eq!(up.count_type("missing.example.net", Rtype::A), 0);
    // README "Metrics": the four translated requests (two names, two transports).
    let (_, body) = http_get(mport, "/metrics").expect("scrape");
    let translated: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("coredns_dns64_requests_translated_total{"))
        .collect();
    assert_eq!(
        translated,
        [format!(
            "coredns_dns64_requests_translated_total{{server=\"dns://[::1]:{}\"}} 4",
            s.port
        )],
        "{body}"
    );
}

/// The corpus shape of an IPv6-only cluster: a Service has only an IPv4 ClusterIP, and
/// its AAAA answer is made from the A record that the kubernetes plugin gives the
/// server's own lookup (TTL: the lesser of the record's 30 and the denial's SOA). The
/// test kit listens on 127.0.0.1 only, so `allow_ipv4` stands in for IPv6 clients
/// (README, `allow_ipv4`); a name the upstream has AAAA for passes as it is.
#[test]
fn an_ipv6_only_cluster_gets_aaaa_for_an_ipv4_only_service() {
    let api = FakeApi::with_objects(base_cluster());
    let up = FakeUpstream::start();
    up.set_mode_for("v4only.example.net", Mode::Raw(v4_only));
    // Without `cache 30`: a cached denial's TTL counts down between the two passes.
    let s = Corpus::load("dns64-ipv6-only.Corefile")
        .api(&api)
        .upstream(&up)
        .edit("    cache 30\n", "")
        .edit(
            "    dns64 64:ff9b::/96\n",
            "    dns64 64:ff9b::/96 {\n        allow_ipv4\n    }\n",
        )
        .start();
    s.synced();
    for (i, m) in s.both("web.team-a.svc.cluster.local", Rtype::AAAA).iter().enumerate() {
        assert_eq!(rcode(m), Rcode::NOERROR, "pass {i}");
        assert_eq!(
            section(m, "answer"),
            ["web.team-a.svc.cluster.local. 30 IN AAAA 64:ff9b::a60:101"],
            "pass {i}"
        );
    }
    // (`loadbalance` shuffles the two records.)
    for (i, m) in s.both("v4only.example.net", Rtype::AAAA).iter().enumerate() {
        let mut answer = section(m, "answer");
        answer.sort();
        assert_eq!(
            answer,
            [
                "v4only.example.net. 120 IN AAAA 64:ff9b::c000:20a",
                "v4only.example.net. 60 IN AAAA 64:ff9b::c000:20b",
            ],
            "pass {i}"
        );
    }
    // The upstream's own AAAA records are the answer (RFC 6147 5.1.1).
    for (i, m) in s.both("dual.example.org", Rtype::AAAA).iter().enumerate() {
        assert_eq!(
            section(m, "answer"),
            ["dual.example.org. 60 IN AAAA 2001:db8::1"],
            "pass {i}"
        );
    }
    // A name the cluster does not have passes as NXDOMAIN.
    for m in s.both("nope.team-a.svc.cluster.local", Rtype::AAAA) {
        assert_eq!(rcode(&m), Rcode::NXDOMAIN);
        assert_eq!(section(&m, "answer"), Vec::<String>::new());
    }
}

/// A stale cache hit that dns64 translates still refreshes: cache (after dns64 in
/// CoreDNS's order) serves the expired NODATA for AAAA at once and asks for a refresh
/// (`serve_stale ... immediate`); dns64 then suspends the query for its A lookup. The
/// refresh must survive that, or the translated NODATA is served until `serve_stale`'s
/// hour is up although the name has gained an AAAA record (review finding; CoreDNS's
/// cache refreshes behind its own ResponseWriter whatever dns64 does).
#[test]
fn a_stale_hit_suspended_by_dns64_is_still_refreshed() {
    let s = Launch::new(
        ".:{port} {\n    bind 127.0.0.1\n    dns64 {\n        allow_ipv4\n    }\n    cache 1 {\n        serve_stale 1h immediate\n    }\n    hosts {dir}/hosts {\n        ttl 1\n        reload 200ms\n    }\n}\n",
    )
    .no_wait()
    .start();
    let at = s.addr();
    std::fs::write(s.scratch.path("hosts"), "192.0.2.10 v4only.example\n").unwrap();
    s.wait_answering("v4only.example");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let answer = |m: &Message<Vec<u8>>| section(m, "answer").join(" ");
    // The name is translated from its A record (and the NODATA is cached).
    loop {
        let m = ask(at, false, "v4only.example", Rtype::AAAA);
        if answer(&m).contains("64:ff9b::c000:20a") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never translated: {:?}",
            section(&m, "answer")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The name gains an AAAA record; the cached NODATA expires within a second and the
    // next asks get it stale while its refresh fetches the new answer.
    std::fs::write(
        s.scratch.path("hosts"),
        "192.0.2.10 v4only.example\n2001:db8::10 v4only.example\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let m = ask(at, false, "v4only.example", Rtype::AAAA);
        if answer(&m).contains("2001:db8::10") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stale translated NODATA was never refreshed: {:?}",
            section(&m, "answer")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
