//! `rewrite` through the real binary: the Corefiles of tests/data/corefiles/ that use
//! it, started against the test kit's fake API and queried over UDP and TCP, and a
//! rewritten query relayed by `forward` to the fake upstream. Each expectation names
//! the CoreDNS README section that documents it.

use std::path::{Path, PathBuf};

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};

use testkit::prelude::*;

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/corefiles")
        .join(name)
}

/// A corpus Corefile made to run here: the DNS port the kit picks, the health, ready
/// and metrics listeners on free loopback ports, the fake API as the kubernetes
/// endpoint and the fake upstream in place of /etc/resolv.conf (only loopback is used).
fn localized(name: &str, api: &FakeApi, up: &FakeUpstream) -> String {
    let text = std::fs::read_to_string(corpus(name)).unwrap();
    let [health, ready, metrics] = testkit::process::free_ports::<3>();
    let out = text
        .replace(".:53 {", ".:{port} {\n    bind 127.0.0.1")
        .replace("    health {", &format!("    health 127.0.0.1:{health} {{"))
        .replace("    health\n", &format!("    health 127.0.0.1:{health}\n"))
        .replace("    ready\n", &format!("    ready 127.0.0.1:{ready}\n"))
        .replace("prometheus :9153", &format!("prometheus 127.0.0.1:{metrics}"))
        .replace(
            "kubernetes cluster.local in-addr.arpa ip6.arpa {",
            &format!(
                "kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        endpoint {}",
                api.url()
            ),
        )
        .replace("forward . /etc/resolv.conf", &format!("forward . {}", up.spec()));
    assert!(!out.contains("/etc/resolv.conf") && out.contains(&api.url()), "{out}");
    out
}

/// `-check` accepts the corpus file as it is (issue 12: "-check accepts each one").
fn checked(name: &str) {
    let dir = Scratch::new("rewrite-check");
    let (code, out, err) = run(&["-check", "-conf", corpus(name).to_str().unwrap()], &dir.0, None);
    assert_eq!(code, 0, "{name}: {out}{err}");
}

fn ask(s: &Server, name: &str, qtype: Rtype, tcp: bool) -> Message<Vec<u8>> {
    if tcp {
        s.query_tcp(name, qtype)
    } else {
        s.query(name, qtype)
    }
}

fn question(m: &Message<Vec<u8>>) -> String {
    m.sole_question().unwrap().qname().to_string()
}

/// Waits until the server has synced with the fake API.
fn synced(s: &Server) {
    wait_until("the first sync", std::time::Duration::from_secs(15), || {
        section(&s.query("kubernetes.default.svc.cluster.local", Rtype::A), "answer").len() == 1
    });
}

#[test]
fn a_public_name_is_answered_by_a_service_under_its_own_name() {
    let name = "rewrite-service-answer-auto.Corefile";
    checked(name);
    let api = FakeApi::with_objects(base_cluster());
    let up = FakeUpstream::start();
    let s = Server::start(&localized(name, &api, &up));
    synced(&s);
    for tcp in [false, true] {
        // README, "Response Rewrites": the exact rule's answer is always mapped back;
        // the client sees the name it asked in the question and the answer, with the
        // Service's address (kubernetes, ttl 30).
        let r = ask(&s, "api.example.com", Rtype::A, tcp);
        assert_eq!(rcode(&r), Rcode::NOERROR, "tcp {tcp}");
        assert_eq!(question(&r), "api.example.com");
        assert_eq!(
            section(&r, "answer"),
            ["api.example.com. 30 IN A 10.96.1.1"],
            "tcp {tcp}"
        );
        // README, "Auto Response Name Rewrite": a suffix rule with `answer auto` swaps
        // the suffix back.
        let r = ask(&s, "web.shop.example.com", Rtype::A, tcp);
        assert_eq!(question(&r), "web.shop.example.com");
        assert_eq!(
            section(&r, "answer"),
            ["web.shop.example.com. 30 IN A 10.96.1.1"],
            "tcp {tcp}"
        );
        // A name below the rewritten one that the kubernetes plugin does not know:
        // NXDOMAIN, its SOA under cluster.local. as CoreDNS's is, the question restored.
        let r = ask(&s, "nobody.shop.example.com", Rtype::A, tcp);
        assert_eq!(rcode(&r), Rcode::NXDOMAIN);
        assert_eq!(question(&r), "nobody.shop.example.com");
        // The cluster name itself is answered as before.
        let r = ask(&s, "web.team-a.svc.cluster.local", Rtype::A, tcp);
        assert_eq!(
            section(&r, "answer"),
            ["web.team-a.svc.cluster.local. 30 IN A 10.96.1.1"]
        );
    }
    // None of these went upstream.
    assert_eq!(
        up.count_name("api.example.com") + up.count_name("web.team-a.svc.cluster.local"),
        0
    );
}

#[test]
fn the_virtual_cluster_shape_answers_with_the_outer_names() {
    let name = "rewrite-virtual-cluster.Corefile";
    checked(name);
    let api = FakeApi::with_objects(base_cluster());
    let up = FakeUpstream::start();
    let s = Server::start(&localized(name, &api, &up));
    synced(&s);
    for tcp in [false, true] {
        // A regex rule without an answer option: the question is restored, the answer
        // keeps the name the kubernetes plugin answered for (README, "Response Rewrites",
        // the first dig output).
        let r = ask(&s, "node-1.nodes.vcluster.internal", Rtype::A, tcp);
        assert_eq!(rcode(&r), Rcode::NOERROR);
        assert_eq!(question(&r), "node-1.nodes.vcluster.internal");
        assert_eq!(
            section(&r, "answer"),
            ["kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"]
        );
        // The block form with `answer name` (README, "Explicit Response Name Rewrite"),
        // after a `continue` TTL rule that raises the TTL of 5 to 10 (README, "TTL
        // Field Rewrites", ranges).
        let r = ask(&s, "web.team-a.svc.team.example", Rtype::A, tcp);
        assert_eq!(question(&r), "web.team-a.svc.team.example");
        assert_eq!(
            section(&r, "answer"),
            ["web.team-a.svc.team.example. 10 IN A 10.96.1.1"],
            "tcp {tcp}"
        );
    }
}

#[test]
fn a_rewritten_query_goes_upstream_rewritten_and_comes_back_under_the_asked_name() {
    let up = FakeUpstream::start();
    let s = Server::start(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    rewrite name suffix .corp.example. .example.org. answer auto\n    forward . {}\n}}\n",
        up.spec()
    ));
    for (tcp, proto) in [(false, Proto::Udp), (true, Proto::Tcp)] {
        let r = ask(&s, "www.corp.example", Rtype::A, tcp);
        assert_eq!(rcode(&r), Rcode::NOERROR);
        assert_eq!(question(&r), "www.corp.example");
        assert_eq!(section(&r, "answer"), ["www.corp.example. 60 IN A 192.0.2.1"]);
        // The upstream was asked the rewritten name (forward resumed with it).
        assert_eq!(up.count("www.example.org", Rtype::A, proto), 1, "{proto:?}");
    }
    assert_eq!(up.count_name("www.corp.example"), 0);
}
