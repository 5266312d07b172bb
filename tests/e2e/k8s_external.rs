//! `k8s_external` end to end: the corpus Corefile `tests/data/corefiles/k8s-external.Corefile`
//! (a cluster's usual server block with an outside zone) started against the test
//! kit's fake API, queried over UDP and TCP, answers compared with CoreDNS's
//! documented behaviour (README of CoreDNS's `k8s_external`, and the tests it cites:
//! `external_test.go`, `apex_test.go`); and its start-up error.

use std::path::PathBuf;
use std::time::Duration;

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};
use serde_json::Value;

use testkit::objects::{set_external_ips, set_load_balancer, slice};
use testkit::prelude::*;

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/corefiles")
        .join(name)
}

/// The corpus Corefile made runnable here: listening on the test's port on
/// 127.0.0.1, the kubernetes plugin reading the fake API, forwarding to a fake
/// upstream (never the machine's resolver), and the process-wide listeners (health,
/// ready, metrics) left out so that tests running at once do not share their ports.
fn runnable(text: &str, api: &FakeApi, upstream: &FakeUpstream) -> String {
    let mut out = String::new();
    let mut skip_block = false;
    for line in text.lines() {
        let t = line.trim();
        if skip_block {
            skip_block = t != "}";
            continue;
        }
        if t.starts_with("health") || t.starts_with("ready") || t.starts_with("prometheus") {
            skip_block = t.ends_with('{');
            continue;
        }
        if t == ".:53 {" {
            out.push_str(".:{port} {\n    bind 127.0.0.1\n");
            continue;
        }
        if t.starts_with("forward . /etc/resolv.conf") {
            out.push_str(&line.replace("/etc/resolv.conf", &upstream.spec()));
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if t.starts_with("kubernetes ") && t.ends_with('{') {
            out.push_str(&format!("        endpoint {}\n", api.url()));
        }
    }
    out
}

/// The cluster: the kit's base cluster, and in namespace `shop` a LoadBalancer
/// Service with an IPv4 and an IPv6 ingress address, one with `spec.externalIPs`, one
/// whose load balancer is known by name, and a headless one with two endpoints.
fn cluster() -> Vec<Value> {
    let mut objects = base_cluster();
    objects.push(namespace("shop"));
    let mut storefront = service(
        "shop",
        "storefront",
        "10.96.5.1",
        &[("http", 80, "TCP"), ("https", 443, "TCP")],
    );
    set_load_balancer(&mut storefront, &["203.0.113.10", "2001:db8::10"]);
    objects.push(storefront);
    let mut legacy = service("shop", "legacy", "10.96.5.2", &[("web", 8080, "TCP")]);
    set_external_ips(&mut legacy, &["198.51.100.20"]);
    objects.push(legacy);
    let mut edge = service("shop", "edge", "10.96.5.3", &[("http", 80, "TCP")]);
    set_load_balancer(&mut edge, &["lb-1.elb.example.net"]);
    objects.push(edge);
    objects.push(headless("shop", "db"));
    objects.push(slice("shop", "db-abcde", "db", &["10.244.3.1", "10.244.3.2"]));
    objects
}

fn answer(m: &Message<Vec<u8>>) -> Vec<String> {
    let mut v = section(m, "answer");
    v.sort();
    v
}

fn additional(m: &Message<Vec<u8>>) -> Vec<String> {
    let mut v = section(m, "additional");
    v.sort();
    v
}

/// The zone's SOA as the server has it (its serial moves with the cluster).
fn soa_ok(line: &str) -> bool {
    let f: Vec<&str> = line.split_whitespace().collect();
    f.len() == 11
        && f[..6]
            == [
                "apps.example.test.",
                "10",
                "IN",
                "SOA",
                "ns1.dns.apps.example.test.",
                "hostmaster.dns.apps.example.test.",
            ]
        && f[7..] == ["7200", "1800", "86400", "10"]
}

#[test]
fn the_corpus_corefile_passes_check() {
    let path = corpus("k8s-external.Corefile");
    let dir = Scratch::new("k8sext-check");
    let (code, out, err) = run(&["-check", "-conf", path.to_str().unwrap()], &dir.0, None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("OK\n"), "{out}");
}

/// CoreDNS's `setup.go`: k8s_external finds the kubernetes plugin at start-up, or the
/// server does not start.
#[test]
fn without_kubernetes_in_its_block_it_does_not_start() {
    let dir = Scratch::new("k8sext-nokube");
    dir.write(
        "Corefile",
        ".:1053 {\n    k8s_external example.org\n    forward . 127.0.0.1:9\n}\n",
    );
    let (code, _, err) = run(&["-check", "-conf", "Corefile"], &dir.0, None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Corefile:2 - plugin/k8s_external: kubernetes plugin not loaded"),
        "{err}"
    );
}

#[test]
fn the_corpus_corefile_serves_load_balancers_external_ips_and_headless_services() {
    let api = FakeApi::with_objects(cluster());
    let upstream = FakeUpstream::start();
    let text = std::fs::read_to_string(corpus("k8s-external.Corefile")).unwrap();
    let s = Server::start(&runnable(&text, &api, &upstream));
    wait_until("the first sync", Duration::from_secs(10), || {
        rcode(&s.query("storefront.shop.apps.example.test", Rtype::A)) == Rcode::NOERROR
    });
    for tcp in [false, true] {
        let q = |name: &str, t: Rtype| if tcp { s.query_tcp(name, t) } else { s.query(name, t) };
        let via = if tcp { "tcp" } else { "udp" };
        // A LoadBalancer Service: its ingress addresses (README: "the external IP
        // address(es) of a Kubernetes service"), the TTL set by `ttl`.
        let m = q("storefront.shop.apps.example.test", Rtype::A);
        assert_eq!(rcode(&m), Rcode::NOERROR, "{via}");
        assert!(m.header().aa(), "{via}: authoritative");
        assert_eq!(
            answer(&m),
            ["storefront.shop.apps.example.test. 10 IN A 203.0.113.10"],
            "{via}"
        );
        let m = q("storefront.shop.apps.example.test", Rtype::AAAA);
        assert_eq!(
            answer(&m),
            ["storefront.shop.apps.example.test. 10 IN AAAA 2001:db8::10"],
            "{via}"
        );
        // SRV for a named port: the service as target, its addresses beside
        // (external_test.go "SRV Service"); the weight is 100 / candidates (2 here).
        let m = q("_https._tcp.storefront.shop.apps.example.test", Rtype::SRV);
        assert_eq!(
            answer(&m),
            ["_https._tcp.storefront.shop.apps.example.test. 10 IN SRV 0 50 443 storefront.shop.apps.example.test"],
            "{via}"
        );
        assert_eq!(
            additional(&m),
            [
                "storefront.shop.apps.example.test. 10 IN A 203.0.113.10",
                "storefront.shop.apps.example.test. 10 IN AAAA 2001:db8::10",
            ],
            "{via}"
        );
        // spec.externalIPs (README: the example Service with `externalIPs`).
        let m = q("legacy.shop.apps.example.test", Rtype::A);
        assert_eq!(
            answer(&m),
            ["legacy.shop.apps.example.test. 10 IN A 198.51.100.20"],
            "{via}"
        );
        // A load balancer known by name: a CNAME (external_test.go "svc12"), then
        // the name's addresses, looked up through the server (here: forwarded to the
        // fake upstream, which answers 192.0.2.1).
        let m = q("edge.shop.apps.example.test", Rtype::A);
        let ans = section(&m, "answer");
        assert_eq!(
            ans[0], "edge.shop.apps.example.test. 10 IN CNAME lb-1.elb.example.net.",
            "{via}"
        );
        assert!(
            ans.len() == 2 && ans[1].starts_with("lb-1.elb.example.net. ") && ans[1].ends_with(" IN A 192.0.2.1"),
            "{via}: {ans:?}"
        );
        // `headless`: a headless Service's endpoints, and one endpoint by name
        // (external_test.go "headless service").
        let m = q("db.shop.apps.example.test", Rtype::A);
        assert_eq!(
            answer(&m),
            [
                "db.shop.apps.example.test. 10 IN A 10.244.3.1",
                "db.shop.apps.example.test. 10 IN A 10.244.3.2",
            ],
            "{via}"
        );
        let m = q("10-244-3-2.db.shop.apps.example.test", Rtype::A);
        assert_eq!(
            answer(&m),
            ["10-244-3-2.db.shop.apps.example.test. 10 IN A 10.244.3.2"],
            "{via}"
        );
        // A Service with only a cluster IP, and a name that does not exist: NXDOMAIN
        // with the zone's SOA; the namespace alone: NODATA (external_test.go).
        for name in ["web.team-a.apps.example.test", "nope.shop.apps.example.test"] {
            let m = q(name, Rtype::A);
            assert_eq!(rcode(&m), Rcode::NXDOMAIN, "{via} {name}");
            let auth = section(&m, "authority");
            assert!(auth.len() == 1 && soa_ok(&auth[0]), "{via} {name}: {auth:?}");
        }
        let m = q("shop.apps.example.test", Rtype::A);
        assert_eq!((rcode(&m), answer(&m).len()), (Rcode::NOERROR, 0), "{via}");
        assert!(soa_ok(&section(&m, "authority")[0]), "{via}");
        // The apex: SOA and NS (apex_test.go), NS named with the `dns` apex label.
        let m = q("apps.example.test", Rtype::SOA);
        assert!(soa_ok(&section(&m, "answer")[0]), "{via}: {:?}", section(&m, "answer"));
        let m = q("apps.example.test", Rtype::NS);
        assert_eq!(
            answer(&m),
            ["apps.example.test. 10 IN NS ns1.dns.apps.example.test."],
            "{via}"
        );
        // The kubernetes plugin beside it is unchanged.
        let m = q("storefront.shop.svc.cluster.local", Rtype::A);
        assert_eq!(
            answer(&m),
            ["storefront.shop.svc.cluster.local. 30 IN A 10.96.5.1"],
            "{via}"
        );
    }
    // The watch follows the load balancer: a new ingress address is served.
    api.update("Service", "shop", "storefront", |svc| {
        set_load_balancer(svc, &["203.0.113.99"]);
    });
    wait_until("the new ingress address", Duration::from_secs(10), || {
        answer(&s.query("storefront.shop.apps.example.test", Rtype::A))
            == ["storefront.shop.apps.example.test. 10 IN A 203.0.113.99"]
    });
    // And one that loses its external addresses leaves the zone.
    api.update("Service", "shop", "legacy", |svc| {
        svc["spec"].as_object_mut().unwrap().remove("externalIPs");
    });
    wait_until("legacy gone", Duration::from_secs(10), || {
        rcode(&s.query("legacy.shop.apps.example.test", Rtype::A)) == Rcode::NXDOMAIN
    });
    // Only the load balancer's host name left the server.
    assert!(upstream.count_type("lb-1.elb.example.net", Rtype::A) >= 1);
}
