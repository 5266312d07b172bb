//! The `header` plugin end to end: query rules reach the upstream that `forward` asks,
//! response rules reach the client, over UDP and TCP (CoreDNS's header README,
//! "Examples", and header_test.go).

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};

use testkit::prelude::*;

/// (AA, RA, RD) of a reply.
fn flags(m: &Message<Vec<u8>>) -> (bool, bool, bool) {
    let h = m.header();
    (h.aa(), h.ra(), h.rd())
}

#[test]
fn query_rules_go_upstream_and_response_rules_to_the_client() {
    let up = FakeUpstream::start();
    let s = Server::start(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    header {{\n        query clear rd\n        response set aa ra\n    }}\n    forward . {}\n}}\n",
        up.spec()
    ));
    for tcp in [false, true] {
        up.reset();
        // The client asks with RD set (query_bytes does).
        let q = query_bytes("www.example.com", Rtype::A, Some(1232), 0x0101);
        let r = if tcp {
            tcp_exchange(s.addr(), &q)
        } else {
            udp_exchange(s.addr(), &q)
        };
        assert_eq!(rcode(&r), Rcode::NOERROR);
        assert_eq!(section(&r, "answer"), ["www.example.com. 60 IN A 192.0.2.1"]);
        // README "Examples" (query set rd, reversed): the upstream got RD clear.
        let seen: Vec<bool> = up
            .seen()
            .iter()
            .filter(|q| q.name == "www.example.com.")
            .map(|q| q.rd)
            .collect();
        assert_eq!(seen, [false], "tcp={tcp}");
        // README "Examples" (response set ra aa): both set; RD follows the changed query.
        assert_eq!(flags(&r), (true, true, false), "tcp={tcp}");
    }
}

#[test]
fn without_header_the_same_server_leaves_the_flags_alone() {
    // The control for the test above: the flags come from the upstream and the client.
    let up = FakeUpstream::start();
    let s = Server::start(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    forward . {}\n}}\n",
        up.spec()
    ));
    let r = s.query("www.example.com", Rtype::A);
    let (_, _, rd) = flags(&r);
    assert!(rd);
    assert_eq!(
        up.seen()
            .iter()
            .filter(|q| q.name == "www.example.com.")
            .map(|q| q.rd)
            .collect::<Vec<_>>(),
        [true]
    );
    // And header's own example: `response set ra` on a reply of a plugin that clears it.
    let s = Server::start(
        ".:{port} {\n    bind 127.0.0.1\n    header {\n        response set ra\n        response clear aa\n    }\n    whoami\n}\n",
    );
    for r in [s.query("a.example", Rtype::A), s.query_tcp("a.example", Rtype::A)] {
        // whoami sets AA (whoami.go); the rule clears it; RA set, RD as asked.
        assert_eq!(flags(&r), (false, true, true));
        let extra = section(&r, "additional");
        assert_eq!(extra.len(), 2);
        assert_eq!(extra[0], "a.example. 0 IN A 127.0.0.1");
    }
}
