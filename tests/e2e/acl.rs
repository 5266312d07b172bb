//! The `acl` plugin end to end: block, filter, drop and allow by type and source, over
//! UDP and TCP, with the EDE codes and counters CoreDNS's acl sends and exports (its
//! README "Description" and "Metrics", acl.go).

use std::net::TcpStream;
use std::time::Duration;

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};
use domain::base::opt::ExtendedError;

use testkit::prelude::*;

/// The EDE info codes of a reply's OPT record.
fn ede(m: &Message<Vec<u8>>) -> Vec<u16> {
    m.opt()
        .map(|o| {
            o.opt()
                .iter::<ExtendedError<_>>()
                .flatten()
                .map(|e| u16::from(e.code()))
                .collect()
        })
        .unwrap_or_default()
}

fn start() -> (Server, u16) {
    let metrics = free_port();
    let s = Server::start(&format!(
        "example.org:{{port}} {{\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{metrics}\n    acl {{\n        allow type A net 127.0.0.2\n        block type A net 127.0.0.0/8\n        filter type AAAA net 127.0.0.1\n        drop type TXT\n    }}\n    acl other.example.org {{\n        block net *\n    }}\n    hosts {{\n        192.0.2.1 www.example.org\n        2001:db8::1 www.example.org\n        192.0.2.9 www.other.example.org\n    }}\n}}\n"
    ));
    (s, metrics)
}

/// The same question over UDP and TCP; both replies, which must agree.
fn ask(s: &Server, name: &str, qtype: Rtype) -> Message<Vec<u8>> {
    let q = query_bytes(name, qtype, Some(1232), 0x5151);
    let udp = udp_exchange(s.addr(), &q);
    let tcp = tcp_exchange(s.addr(), &q);
    assert_eq!(rcode(&udp), rcode(&tcp), "{name} {qtype}");
    assert_eq!(ede(&udp), ede(&tcp), "{name} {qtype}");
    for which in ["answer", "authority"] {
        assert_eq!(section(&udp, which), section(&tcp, which), "{name} {qtype}");
    }
    udp
}

#[test]
fn block_filter_drop_and_allow_as_coredns_answers_them() {
    let (s, metrics) = start();
    // README "Description": block is REFUSED; acl.go adds EDE 15 (Blocked).
    let r = ask(&s, "www.example.org", Rtype::A);
    assert_eq!((rcode(&r), ede(&r)), (Rcode::REFUSED, vec![15]));
    assert_eq!(counts(&r).1 + counts(&r).2, 0);
    // filter is an empty NOERROR; acl.go adds EDE 17 (Filtered).
    let r = ask(&s, "www.example.org", Rtype::AAAA);
    assert_eq!((rcode(&r), ede(&r)), (Rcode::NOERROR, vec![17]));
    assert_eq!(counts(&r).1 + counts(&r).2, 0);
    // drop: no reply at all, over UDP or TCP.
    let q = query_bytes("www.example.org", Rtype::TXT, Some(1232), 0x5252);
    assert!(raw_udp(s.addr(), &q, Duration::from_millis(500)).is_none());
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    write_frame(&mut c, &q);
    assert!(read_frame(&mut c).is_none());
    // No policy matches MX: the next plugin answers (hosts has no MX: NODATA).
    let r = ask(&s, "www.example.org", Rtype::MX);
    assert_eq!((rcode(&r), ede(&r)), (Rcode::NOERROR, vec![]));
    // The second acl, for its zone only: every source blocked (README "Block all DNS
    // queries from 192.168.1.0/24 towards a.example.org", with `net *`).
    let r = ask(&s, "www.other.example.org", Rtype::MX);
    assert_eq!((rcode(&r), ede(&r)), (Rcode::REFUSED, vec![15]));
    // Without EDNS in the query, the reply has no OPT record to carry the EDE.
    let r = udp_exchange(s.addr(), &query_bytes("www.example.org", Rtype::A, None, 0x5353));
    assert_eq!((rcode(&r), ede(&r)), (Rcode::REFUSED, vec![]));
    assert!(r.opt().is_none());

    // README "Metrics": per server and matched zone; allowed per server only.
    let (_, body) = http_get(metrics, "/metrics").expect("scrape");
    let server = format!("dns://127.0.0.1:{}", s.port);
    for (series, want) in [
        (
            format!("coredns_acl_blocked_requests_total{{server=\"{server}\",zone=\"example.org.\",view=\"\"}}"),
            3,
        ),
        (
            format!("coredns_acl_filtered_requests_total{{server=\"{server}\",zone=\"example.org.\",view=\"\"}}"),
            2,
        ),
        (
            format!("coredns_acl_dropped_requests_total{{server=\"{server}\",zone=\"example.org.\",view=\"\"}}"),
            2,
        ),
        (
            format!("coredns_acl_blocked_requests_total{{server=\"{server}\",zone=\"other.example.org.\",view=\"\"}}"),
            2,
        ),
    ] {
        let line = format!("{series} {want}");
        assert!(body.lines().any(|l| l == line), "{line} not in\n{body}");
    }
    // The start-up probes and MX queries went on: allowed, counted per server.
    let allowed = format!("coredns_acl_allowed_requests_total{{server=\"{server}\",view=\"\"}} ");
    let n: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix(allowed.as_str()))
        .unwrap_or_else(|| panic!("{allowed} not in\n{body}"))
        .parse()
        .unwrap();
    assert!(n >= 2, "{n}");
}

#[test]
fn an_allow_before_a_block_lets_its_source_through() {
    // README "Block all DNS queries from 192.168.0.0/16 except for 192.168.1.0/24", on
    // loopback: 127.0.0.2 is allowed A queries, the rest of 127/8 blocked.
    let (s, _) = start();
    let q = query_bytes("www.example.org", Rtype::A, Some(1232), 0x5454);
    let sock = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock.send_to(&q, s.addr()).unwrap();
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf).unwrap();
    let r = Message::from_octets(buf[..n].to_vec()).unwrap();
    assert_eq!(rcode(&r), Rcode::NOERROR);
    assert_eq!(section(&r, "answer"), ["www.example.org. 3600 IN A 192.0.2.1"]);
}

#[test]
fn a_hardened_cluster_refuses_any_drops_transfers_and_sets_ra() {
    // The corpus shape: acl, header and errors on a kubeadm-style default.
    let api = FakeApi::with_objects(base_cluster());
    let up = FakeUpstream::start();
    let s = testkit::corpus::Corpus::load("hardened-acl-errors.Corefile")
        .api(&api)
        .upstream(&up)
        .start();
    s.synced();
    // Cluster names answer, with RA set by `header { response set ra }` (the kubernetes
    // plugin leaves it clear) and AA as the kubernetes plugin sets it.
    for r in s.both("kubernetes.default.svc.cluster.local", Rtype::A) {
        assert_eq!(
            section(&r, "answer"),
            ["kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"]
        );
        assert!(r.header().ra() && r.header().aa());
        assert!(ede(&r).is_empty());
    }
    // Forwarded names too (the fake upstream's TTL 60, capped by `cache 30`).
    for r in s.both("www.example.com", Rtype::A) {
        assert_eq!(section(&r, "answer"), ["www.example.com. 30 IN A 192.0.2.1"]);
        assert!(r.header().ra());
    }
    // ANY is refused, EDE 15, from any source (acl README "Description").
    for r in s.both("kubernetes.default.svc.cluster.local", Rtype::ANY) {
        assert_eq!((rcode(&r), ede(&r)), (Rcode::REFUSED, vec![15]));
    }
    // A transfer request from 127.0.0.1 (not 10/8) gets nothing at all.
    let q = query_bytes("cluster.local", Rtype::AXFR, None, 0x5555);
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    write_frame(&mut c, &q);
    assert!(read_frame(&mut c).is_none());
    let q = query_bytes("cluster.local", Rtype::IXFR, None, 0x5656);
    assert!(raw_udp(s.addr(), &q, Duration::from_millis(300)).is_none());
}
