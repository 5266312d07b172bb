//! `any` end to end: an ANY query gets the RFC 8482 HINFO record over UDP and TCP and
//! goes no further; other types are served as before.

use domain::base::iana::{Rcode, Rtype};

use testkit::prelude::*;

/// README "Examples": `dig ANY example.org` returns
/// `example.org. 8482 IN HINFO "ANY obsoleted" "See RFC 8482"`; any_test.go's
/// TestAnyNonANYQuery: other types reach the next plugin (here forward).
#[test]
fn any_queries_get_the_hinfo_record() {
    let up = FakeUpstream::start();
    let s = Launch::new(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    any\n    forward . {}\n}}\n",
        up.spec()
    ))
    .start();
    for name in ["example.org", "Mixed.Example.ORG"] {
        let q = query_bytes(name, Rtype::ANY, Some(1232), 0x3131);
        for m in [udp_exchange(s.addr(), &q), tcp_exchange(s.addr(), &q)] {
            assert_eq!(rcode(&m), Rcode::NOERROR);
            assert!(!m.header().aa());
            assert_eq!(
                section(&m, "answer"),
                [format!("{name}. 8482 IN HINFO \"ANY obsoleted\" \"See RFC 8482\"")]
            );
            assert_eq!(counts(&m).2 + counts(&m).3, 1, "only the OPT record besides");
        }
        assert_eq!(up.count_name(name), 0);
    }
    for m in s_both(&s, "www.example.org", Rtype::A) {
        assert_eq!(section(&m, "answer"), ["www.example.org. 60 IN A 192.0.2.1"]);
    }
}

fn s_both(s: &Server, name: &str, qtype: Rtype) -> [domain::base::Message<Vec<u8>>; 2] {
    [s.query(name, qtype), s.query_tcp(name, qtype)]
}
