//! `rewrite ... cname` through the real binary: a CNAME target from the upstream is
//! replaced and the new target looked up through the server (CoreDNS's README, "CNAME
//! Field Rewrites"; cname_target.go), with the test kit's fake upstream.

use domain::base::iana::{Rcode, Rtype};

use testkit::prelude::*;

fn start(up: &FakeUpstream) -> Server {
    Server::start(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    rewrite cname suffix .cdn.example.net. .cdn.example.org.\n    forward . {}\n}}\n",
        up.spec()
    ))
}

/// README "CNAME Field Rewrites": the CNAME target is rewritten and the answer is the
/// new target's records, looked up again (here through `forward`: the upstream is asked
/// for the new target, with the client's type).
#[test]
fn a_cname_target_is_rewritten_and_the_new_target_looked_up() {
    let up = FakeUpstream::start();
    up.set_mode_for(
        "app.example.com",
        Mode::Cname {
            target: "edge.cdn.example.net.",
            resolved: true,
        },
    );
    up.set_mode_for("edge.cdn.example.org", Mode::BigAnswer(2));
    let s = start(&up);
    for tcp in [false, true] {
        let r = if tcp {
            s.query_tcp("app.example.com", Rtype::A)
        } else {
            s.query("app.example.com", Rtype::A)
        };
        assert_eq!(r.header().rcode(), Rcode::NOERROR, "tcp={tcp}");
        assert_eq!(r.sole_question().unwrap().qname().to_string(), "app.example.com");
        assert_eq!(
            section(&r, "answer"),
            [
                "app.example.com. 60 IN CNAME edge.cdn.example.org.",
                "edge.cdn.example.org. 60 IN A 198.18.0.1",
                "edge.cdn.example.org. 60 IN A 198.18.0.2",
            ],
            "tcp={tcp}"
        );
    }
    assert!(
        up.count_name("edge.cdn.example.org") >= 1,
        "the new target was looked up"
    );
    // A reply without a matching target is passed on as it is.
    let r = s.query("plain.example.com", Rtype::A);
    assert_eq!(section(&r, "answer"), ["plain.example.com. 60 IN A 192.0.2.1"]);
}
