//! `chaos` end to end: CH TXT queries for the server's version, authors and host name,
//! over UDP and TCP, and what happens to the CH queries it does not answer.

use domain::base::iana::{Class, Rcode, Rtype};
use domain::base::{Message, MessageBuilder, Name};

use testkit::prelude::*;

/// A CH (or other class) query with RD and EDNS 1232.
pub fn class_query(name: &str, qtype: Rtype, class: Class) -> Vec<u8> {
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_id(0x0c0c);
    b.header_mut().set_rd(true);
    let mut q = b.question();
    let n: Name<Vec<u8>> = name.parse().unwrap();
    q.push((&n, qtype, class)).unwrap();
    let mut a = q.additional();
    a.opt(|o| {
        o.set_udp_payload_size(1232);
        Ok(())
    })
    .unwrap();
    a.finish()
}

/// The same question over UDP and over TCP.
pub fn both(s: &Server, name: &str, qtype: Rtype, class: Class) -> [Message<Vec<u8>>; 2] {
    let q = class_query(name, qtype, class);
    [udp_exchange(s.addr(), &q), tcp_exchange(s.addr(), &q)]
}

/// The host's name as the kernel has it (what Go's os.Hostname reads).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// README "Examples": `chaos CoreDNS-001 info@coredns.io` and dig's answer; the other
/// names as chaos.go answers them (TTL 0, class CH, not authoritative).
#[test]
fn version_authors_and_host_name_are_answered_over_udp_and_tcp() {
    let up = FakeUpstream::start();
    let s = Launch::new(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    chaos CoreDNS-001 info@coredns.io\n    forward . {}\n}}\n",
        up.spec()
    ))
    .start();
    let host = host_name();
    for (name, want) in [
        ("version.bind", "\"CoreDNS-001\"".to_string()),
        ("version.server", "\"CoreDNS-001\"".to_string()),
        ("authors.bind", "\"info@coredns.io\"".to_string()),
        ("hostname.bind", format!("\"{host}\"")),
        ("id.server", format!("\"{host}\"")),
        ("Version.BIND", "\"CoreDNS-001\"".to_string()),
    ] {
        for m in both(&s, name, Rtype::TXT, Class::CH) {
            assert_eq!(rcode(&m), Rcode::NOERROR, "{name}");
            assert!(!m.header().aa() && m.header().qr() && m.header().rd(), "{name}");
            assert_eq!(section(&m, "answer"), [format!("{name}. 0 CH TXT {want}")]);
            assert_eq!(counts(&m).2, 0);
        }
    }
    // chaos.go passes anything else on: in this block to forward, which sends the CH
    // query upstream as it is. (The fake upstream answers in class IN, which forward
    // then refuses as not the question asked: what matters here is that it went.)
    both(&s, "other.example", Rtype::TXT, Class::CH);
    assert_eq!(up.count_name("other.example"), 2);
    assert_eq!(up.count_name("version.bind"), 0);
}

/// `chaos` alone: the version names this program (README "Differences"); a CH query
/// of another type, or another name, with no plugin after chaos is SERVFAIL
/// (CoreDNS's plugin.NextOrFailure); a block without chaos refuses the CH class.
#[test]
fn the_default_version_and_what_chaos_does_not_answer() {
    let s = Launch::new(
        "version.bind:{port} version.server:{port} authors.bind:{port} hostname.bind:{port} id.server:{port} {\n    bind 127.0.0.1\n    chaos\n}\n\
         example.org:{port} {\n    bind 127.0.0.1\n    whoami\n}\n",
    )
    .no_wait()
    .start();
    s.wait_answering("version.bind");
    let version = format!("\"clusterdns-{}\"", env!("CARGO_PKG_VERSION"));
    for m in both(&s, "version.bind", Rtype::TXT, Class::CH) {
        assert_eq!(section(&m, "answer"), [format!("version.bind. 0 CH TXT {version}")]);
    }
    for m in both(&s, "authors.bind", Rtype::TXT, Class::CH) {
        assert_eq!(
            section(&m, "answer"),
            ["authors.bind. 0 CH TXT \"clusterdns maintainers\""]
        );
    }
    for m in both(&s, "version.bind", Rtype::A, Class::CH) {
        assert_eq!(rcode(&m), Rcode::SERVFAIL);
        assert_eq!(counts(&m).1, 0);
    }
    for m in both(&s, "x.id.server", Rtype::TXT, Class::CH) {
        assert_eq!(rcode(&m), Rcode::SERVFAIL);
    }
    for m in both(&s, "example.org", Rtype::TXT, Class::CH) {
        assert_eq!(rcode(&m), Rcode::REFUSED);
    }
}

/// The OpenShift-shaped corpus Corefile: the cluster and its reverse zone answered,
/// reverse names the cluster does not have passed to forward (kubernetes README
/// `fallthrough`), everything else forwarded with the query's EDNS size capped at 1232
/// (bufsize README), and the CHAOS block answering the placeholder version and the
/// host name (chaos README "Examples").
#[test]
fn the_openshift_shape_caps_edns_and_withholds_the_version() {
    let api = FakeApi::with_objects(base_cluster());
    let up = FakeUpstream::start();
    let s = testkit::corpus::Corpus::load("openshift-default.Corefile")
        .api(&api)
        .upstream(&up)
        .start();
    s.synced();
    for m in s.both("kubernetes.default.svc.cluster.local", Rtype::A) {
        assert_eq!(
            section(&m, "answer"),
            ["kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"]
        );
    }
    for m in s.both("1.0.96.10.in-addr.arpa", Rtype::PTR) {
        assert_eq!(
            section(&m, "answer"),
            ["1.0.96.10.in-addr.arpa. 5 IN PTR kubernetes.default.svc.cluster.local."]
        );
    }
    // Not the cluster's: the upstream's PTR (one name per transport, so that neither
    // is a cache hit whose TTL may have ticked down).
    for (m, name) in [
        (s.query("4.3.2.1.in-addr.arpa", Rtype::PTR), "4.3.2.1.in-addr.arpa"),
        (s.query_tcp("5.3.2.1.in-addr.arpa", Rtype::PTR), "5.3.2.1.in-addr.arpa"),
    ] {
        assert_eq!(
            section(&m, "answer"),
            [format!("{name}. 60 IN PTR host-1.upstream.test.")]
        );
    }
    // A client's 4096 bytes reach the upstream as 1232.
    let q = query_bytes("www.example.org", Rtype::A, Some(4096), 0x0b0b);
    let m = udp_exchange(s.addr(), &q);
    assert_eq!(section(&m, "answer"), ["www.example.org. 60 IN A 192.0.2.1"]);
    let seen: Vec<_> = up.seen().into_iter().filter(|q| q.name == "www.example.org.").collect();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].edns, Some(1232));
    // The CHAOS block.
    let host = host_name();
    for (name, want) in [
        ("version.bind", "\"withheld\"".to_string()),
        ("version.server", "\"withheld\"".to_string()),
        ("hostname.bind", format!("\"{host}\"")),
    ] {
        for m in both(&s, name, Rtype::TXT, Class::CH) {
            assert_eq!(section(&m, "answer"), [format!("{name}. 0 CH TXT {want}")]);
        }
    }
    // The cluster block does not take the CH class.
    for m in both(&s, "kubernetes.default.svc.cluster.local", Rtype::TXT, Class::CH) {
        assert_eq!(rcode(&m), Rcode::REFUSED);
    }
    assert_eq!(up.count_name("version.bind"), 0);
}
