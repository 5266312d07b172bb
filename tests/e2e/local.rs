//! `local` end to end: the localhost names and loopback reverse zones are answered on
//! the server (over UDP and TCP) and never reach the upstream; the count of non-apex
//! localhost names is in /metrics.

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};

use testkit::prelude::*;

fn both(s: &Server, name: &str, qtype: Rtype) -> [Message<Vec<u8>>; 2] {
    [s.query(name, qtype), s.query_tcp(name, qtype)]
}

/// A question, the rcode, the answer and the authority section expected.
type Case = (&'static str, Rtype, Rcode, Vec<String>, Vec<String>);

const SOA: &str = "604800 IN SOA localhost. root.localhost. 1 0 0 0 604800";

/// README "Description" and local_test.go's table: loopback for localhost. and the
/// names below it (and localhost.<domain> by default), the one PTR, NODATA and
/// NXDOMAIN with the zone's SOA; everything else goes on to forward.
#[test]
fn local_names_are_answered_here_and_counted() {
    let up = FakeUpstream::start();
    let metrics = free_port();
    let s = Launch::new(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    local\n    prometheus 127.0.0.1:{metrics}\n    forward . {}\n}}\n",
        up.spec()
    ))
    .start();
    let cases: [Case; 7] = [
        (
            "localhost",
            Rtype::A,
            Rcode::NOERROR,
            vec!["localhost. 604800 IN A 127.0.0.1".into()],
            vec![],
        ),
        (
            "app.localhost",
            Rtype::AAAA,
            Rcode::NOERROR,
            vec!["app.localhost. 604800 IN AAAA ::1".into()],
            vec![],
        ),
        (
            "app.localhost",
            Rtype::MX,
            Rcode::NOERROR,
            vec![],
            vec![format!("app.localhost. {SOA}")],
        ),
        (
            "localhost.corp.example",
            Rtype::A,
            Rcode::NOERROR,
            vec!["localhost.corp.example. 604800 IN A 127.0.0.1".into()],
            vec![],
        ),
        (
            "1.0.0.127.in-addr.arpa",
            Rtype::PTR,
            Rcode::NOERROR,
            vec!["1.0.0.127.in-addr.arpa. 604800 IN PTR localhost.".into()],
            vec![],
        ),
        (
            "2.0.0.127.in-addr.arpa",
            Rtype::PTR,
            Rcode::NXDOMAIN,
            vec![],
            vec![format!("127.in-addr.arpa. {SOA}")],
        ),
        (
            "0.in-addr.arpa",
            Rtype::NS,
            Rcode::NOERROR,
            vec!["0.in-addr.arpa. 604800 IN NS localhost.".into()],
            vec![],
        ),
    ];
    for (name, qtype, code, answer, authority) in &cases {
        for m in both(&s, name, *qtype) {
            assert_eq!(rcode(&m), *code, "{name}");
            assert!(!m.header().aa(), "{name}");
            assert_eq!(section(&m, "answer"), *answer, "{name}");
            assert_eq!(section(&m, "authority"), *authority, "{name}");
        }
        assert_eq!(up.count_name(name), 0, "{name}");
    }
    // Not local: forwarded.
    for m in both(&s, "www.example.org", Rtype::A) {
        assert_eq!(section(&m, "answer"), ["www.example.org. 60 IN A 192.0.2.1"]);
    }
    // README "Metrics": the non-apex localhost names (app.localhost twice and the
    // prefix form, each over UDP and TCP), not localhost. itself.
    let (_, body) = http_get(metrics, "/metrics").expect("scrape");
    assert!(body.contains("\ncoredns_local_localhost_requests_total 6\n"), "{body}");
}

/// `localhost_prefix off`: localhost.<domain> is an ordinary name again (forwarded);
/// names below localhost. are still loopback (RFC 6761 6.3).
#[test]
fn without_the_prefix_form_localhost_domains_are_forwarded() {
    let up = FakeUpstream::start();
    let s = Launch::new(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    local {{\n        localhost_prefix off\n    }}\n    forward . {}\n}}\n",
        up.spec()
    ))
    .start();
    for m in both(&s, "localhost.corp.example", Rtype::A) {
        assert_eq!(section(&m, "answer"), ["localhost.corp.example. 60 IN A 192.0.2.1"]);
    }
    assert!(up.count_name("localhost.corp.example") >= 1);
    for m in both(&s, "db.localhost", Rtype::A) {
        assert_eq!(section(&m, "answer"), ["db.localhost. 604800 IN A 127.0.0.1"]);
    }
}
