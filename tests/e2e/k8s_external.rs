//! `k8s_external` end to end: the corpus Corefile `tests/data/corefiles/k8s-external.Corefile`
//! (a cluster's usual server block with an outside zone) started against the test
//! kit's fake API, queried over UDP and TCP, answers compared with CoreDNS's
//! documented behaviour (README of CoreDNS's `k8s_external`, and the tests it cites:
//! `external_test.go`, `apex_test.go`); and its start-up error.

use std::time::Duration;

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};
use serde_json::Value;

use testkit::corpus::{Corpus, Running};
use testkit::objects::{set_external_ips, set_load_balancer, slice};
use testkit::prelude::*;

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

/// The zone's SOA as CoreDNS's apex.go builds it (ns1 and hostmaster under the `dns`
/// apex label, refresh 7200, retry 1800, expire 86400, minimum = the TTL; apex_test.go);
/// its serial moves with the cluster.
fn soa_of(line: &str, zone: &str, ttl: u32) -> bool {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (ttl, ns, mbox) = (
        ttl.to_string(),
        format!("ns1.dns.{zone}"),
        format!("hostmaster.dns.{zone}"),
    );
    f.len() == 11
        && f[..6] == [zone, ttl.as_str(), "IN", "SOA", ns.as_str(), mbox.as_str()]
        && f[7..] == ["7200", "1800", "86400", ttl.as_str()]
}

/// The corpus zone's SOA (`ttl 10`).
fn soa_ok(line: &str) -> bool {
    soa_of(line, "apps.example.test.", 10)
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
    // Without the file's `cache 30`: the TCP pass repeats the UDP pass's ~20 questions,
    // and a cached record's TTL counts down by the second (`cache 30` keeps k8s_external's
    // TTL 10), so a pass that took over a second on a loaded machine would read 9.
    let s = Corpus::load("k8s-external.Corefile")
        .api(&api)
        .upstream(&upstream)
        .edit("    cache 30\n", "")
        .start();
    s.wait_for("storefront.shop.apps.example.test", Rtype::A);
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
    // Only the load balancer's host name left the server.
    assert!(upstream.count_type("lb-1.elb.example.net", Rtype::A) >= 1);
}

/// The watch follows the Services: the corpus Corefile without its `cache` (with it,
/// CoreDNS too serves the old answer for the record's TTL: 10 s here, which made this
/// part of the test above wait out the cache, at the edge of its 10 s bound).
#[test]
fn the_zone_follows_load_balancers_and_external_ips() {
    let api = FakeApi::with_objects(cluster());
    let upstream = FakeUpstream::start();
    let s = Corpus::load("k8s-external.Corefile")
        .api(&api)
        .upstream(&upstream)
        .edit("    cache 30\n", "")
        .start();
    s.wait_for("storefront.shop.apps.example.test", Rtype::A);
    // A new ingress address is served.
    api.update("Service", "shop", "storefront", |svc| {
        set_load_balancer(svc, &["203.0.113.99"]);
    });
    wait_until("the new ingress address", Duration::from_secs(10), || {
        answer(&s.query("storefront.shop.apps.example.test", Rtype::A))
            == ["storefront.shop.apps.example.test. 10 IN A 203.0.113.99"]
    });
    // A Service that loses its external addresses leaves the zone.
    api.update("Service", "shop", "legacy", |svc| {
        svc["spec"].as_object_mut().unwrap().remove("externalIPs");
    });
    wait_until("legacy gone", Duration::from_secs(10), || {
        rcode(&s.query("legacy.shop.apps.example.test", Rtype::A)) == Rcode::NXDOMAIN
    });
}

/// The Service of the README's example (headless, `externalIPs`, no ports) and a
/// LoadBalancer Service, in `default`.
fn docs_cluster() -> Vec<Value> {
    let mut objects = base_cluster();
    let mut test = service("default", "test", "None", &[]);
    set_external_ips(&mut test, &["192.168.200.123"]);
    objects.push(test);
    let mut lb = service("default", "lb", "10.96.7.7", &[("http", 80, "TCP")]);
    set_load_balancer(&mut lb, &["203.0.113.7"]);
    objects.push(lb);
    objects
}

/// Asks over UDP and TCP; both replies must have `code` and `answer` (sorted).
fn expect(s: &Running, name: &str, qtype: Rtype, code: Rcode, want: &[&str]) -> Message<Vec<u8>> {
    let [udp, tcp] = s.both(name, qtype);
    for (m, via) in [(&udp, "udp"), (&tcp, "tcp")] {
        assert_eq!(rcode(m), code, "{} {name} {qtype} over {via}", s.file);
        assert_eq!(answer(m), want, "{} {name} {qtype} over {via}", s.file);
    }
    udp
}

#[test]
fn the_readmes_example_resolves_the_example_service_and_a_load_balancer() {
    let api = FakeApi::with_objects(docs_cluster());
    let s = Corpus::load("k8s-external-docs-example.Corefile").api(&api).start();
    s.synced();
    // README "Examples": the example Service gets an A record for
    // test.default.example.org with its external IP; README "Syntax": TTL 5 by default.
    expect(
        &s,
        "test.default.example.org",
        Rtype::A,
        Rcode::NOERROR,
        &["test.default.example.org. 5 IN A 192.168.200.123"],
    );
    // README "Description": "the external IP address(es) of a Kubernetes service": a
    // LoadBalancer's ingress address (external_test.go "A Service").
    expect(
        &s,
        "lb.default.example.org",
        Rtype::A,
        Rcode::NOERROR,
        &["lb.default.example.org. 5 IN A 203.0.113.7"],
    );
    // external_test.go "AAAA Service (with an existing A record, but no AAAA record)":
    // NODATA with the SOA.
    let m = expect(&s, "lb.default.example.org", Rtype::AAAA, Rcode::NOERROR, &[]);
    let auth = section(&m, "authority");
    assert!(auth.len() == 1 && soa_of(&auth[0], "example.org.", 5), "{auth:?}");
    // external_test.go "A Service (non-existing service)" and a Service with only a
    // cluster IP: NXDOMAIN with the SOA; and no fallthrough without the option.
    for name in ["nope.default.example.org", "web.team-a.example.org"] {
        let m = expect(&s, name, Rtype::A, Rcode::NXDOMAIN, &[]);
        let auth = section(&m, "authority");
        assert!(
            auth.len() == 1 && soa_of(&auth[0], "example.org.", 5),
            "{name}: {auth:?}"
        );
    }
    // The apex (README "Description"; apex_test.go): NS ns1.dns.example.org, the SOA.
    expect(
        &s,
        "example.org",
        Rtype::NS,
        Rcode::NOERROR,
        &["example.org. 5 IN NS ns1.dns.example.org."],
    );
    // apex_test.go: other types at the apex and the `dns` empty non-terminal: NODATA
    // with the SOA; apex.go serveSubApex: a name under `dns` other than ns1: NXDOMAIN.
    for (name, qtype, code) in [
        ("example.org", Rtype::SRV, Rcode::NOERROR),
        ("dns.example.org", Rtype::NS, Rcode::NOERROR),
        ("ns2.dns.example.org", Rtype::A, Rcode::NXDOMAIN),
    ] {
        let m = expect(&s, name, qtype, code, &[]);
        let auth = section(&m, "authority");
        assert!(
            auth.len() == 1 && soa_of(&auth[0], "example.org.", 5),
            "{name}: {auth:?}"
        );
    }
    let m = s.query("example.org", Rtype::SOA);
    assert!(
        soa_of(&section(&m, "answer")[0], "example.org.", 5),
        "{:?}",
        section(&m, "answer")
    );
    // The kubernetes plugin beside it (its default TTL 5).
    expect(
        &s,
        "web.team-a.svc.cluster.local",
        Rtype::A,
        Rcode::NOERROR,
        &["web.team-a.svc.cluster.local. 5 IN A 10.96.1.1"],
    );
}

#[test]
fn the_readmes_fallthrough_example_passes_unknown_names_to_forward() {
    let api = FakeApi::with_objects(docs_cluster());
    let upstream = FakeUpstream::start();
    let s = Corpus::load("k8s-external-docs-fallthrough.Corefile")
        .api(&api)
        .upstream(&upstream)
        .start();
    s.synced();
    // README, `fallthrough`: a name that does not exist goes to the next plugin: forward
    // (the fake upstream standing in for 8.8.8.8, its TTL 60).
    expect(
        &s,
        "nope.default.example.org",
        Rtype::A,
        Rcode::NOERROR,
        &["nope.default.example.org. 60 IN A 192.0.2.1"],
    );
    assert_eq!(upstream.count_type("nope.default.example.org", Rtype::A), 2);
    // Existing names are still k8s_external's.
    expect(
        &s,
        "test.default.example.org",
        Rtype::A,
        Rcode::NOERROR,
        &["test.default.example.org. 5 IN A 192.168.200.123"],
    );
    assert_eq!(upstream.count_name("test.default.example.org"), 0);
}
