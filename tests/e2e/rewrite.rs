//! `rewrite` through the real binary: the Corefiles of tests/data/corefiles/ that use
//! it (a team's `answer auto` to a Service, a cluster-domain alias, vcluster's,
//! Gardener's and kubespray's shapes), made runnable by `testkit::corpus`, started
//! against the fake API and queried over UDP and TCP; and a rewritten query relayed by
//! `forward` to the fake upstream. Each expectation names the CoreDNS README section
//! (plugin/rewrite/README.md unless said otherwise) that documents it.

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};

use testkit::corpus::{Corpus, Running};
use testkit::objects::external_name;
use testkit::prelude::*;

fn question(m: &Message<Vec<u8>>) -> String {
    m.sole_question().unwrap().qname().to_string()
}

/// Asks `name` over UDP and TCP; each reply must have `rcode`, the question as asked
/// (README "Response Rewrites": the question is always restored) and `answer`.
fn expect(s: &Running, name: &str, qtype: Rtype, code: Rcode, answer: &[&str]) {
    for (m, via) in s.both(name, qtype).iter().zip(["udp", "tcp"]) {
        assert_eq!(rcode(m), code, "{} {name} {qtype} over {via}", s.file);
        assert_eq!(question(m), name.trim_end_matches('.'), "{} over {via}", s.file);
        assert_eq!(section(m, "answer"), answer, "{} {name} {qtype} over {via}", s.file);
    }
}

#[test]
fn a_public_name_is_answered_by_a_service_under_its_own_name() {
    let api = FakeApi::with_objects(base_cluster());
    let up = FakeUpstream::start();
    let s = Corpus::load("rewrite-service-answer-auto.Corefile")
        .api(&api)
        .upstream(&up)
        .start();
    s.synced();
    // "Response Rewrites": the exact rule's answer is always mapped back ("answers for
    // rewrites of type exact are always rewritten"); the Service's address with the
    // kubernetes plugin's `ttl 30`.
    expect(
        &s,
        "api.example.com",
        Rtype::A,
        Rcode::NOERROR,
        &["api.example.com. 30 IN A 10.96.1.1"],
    );
    // "Auto Response Name Rewrite": a suffix rule with `answer auto` swaps the suffix back.
    expect(
        &s,
        "web.shop.example.com",
        Rtype::A,
        Rcode::NOERROR,
        &["web.shop.example.com. 30 IN A 10.96.1.1"],
    );
    // A name the kubernetes plugin does not know: its NXDOMAIN, the question restored.
    expect(&s, "nobody.shop.example.com", Rtype::A, Rcode::NXDOMAIN, &[]);
    // The cluster name itself is answered as before.
    expect(
        &s,
        "web.team-a.svc.cluster.local",
        Rtype::A,
        Rcode::NOERROR,
        &["web.team-a.svc.cluster.local. 30 IN A 10.96.1.1"],
    );
    // None of these went upstream.
    assert_eq!(
        up.count_name("api.example.com") + up.count_name("web.team-a.svc.cluster.local"),
        0
    );
}

#[test]
fn a_cluster_domain_alias_answers_with_the_alias_names() {
    let api = FakeApi::with_objects(base_cluster());
    let up = FakeUpstream::start();
    let s = Corpus::load("rewrite-cluster-domain-alias.Corefile")
        .api(&api)
        .upstream(&up)
        .start();
    s.synced();
    // The block form with `answer name` ("Explicit Response Name Rewrite"), after a
    // `continue` TTL rule that raises the kubernetes plugin's default TTL of 5 to 10
    // ("TTL Field Rewrites", ranges; kubernetes README: `ttl` defaults to 5).
    expect(
        &s,
        "web.team-a.svc.team.example",
        Rtype::A,
        Rcode::NOERROR,
        &["web.team-a.svc.team.example. 10 IN A 10.96.1.1"],
    );
    // Names outside the alias are untouched (TTL 5).
    expect(
        &s,
        "web.team-a.svc.cluster.local",
        Rtype::A,
        Rcode::NOERROR,
        &["web.team-a.svc.cluster.local. 5 IN A 10.96.1.1"],
    );
}

#[test]
fn vclusters_shape_sends_node_names_to_the_kubernetes_service() {
    let api = FakeApi::with_objects(base_cluster());
    let up = FakeUpstream::start();
    let s = Corpus::load("vcluster-default.Corefile")
        .api(&api)
        .upstream(&up)
        .file("NodeHosts", "172.18.0.2 node-1\n")
        // A team's server block, as vcluster mounts them from its custom ConfigMap.
        .file(
            "custom/corp.server",
            "corp.example:53 {\n    hosts {\n        10.20.0.1 git.corp.example\n    }\n}\n",
        )
        .start();
    s.synced();
    // "Response Rewrites": a regex rule without an answer option restores the question
    // only; the answer keeps the name the kubernetes plugin answered for (the README's
    // first `dig` output), with its default TTL 5.
    expect(
        &s,
        "node-1.nodes.vcluster.com",
        Rtype::A,
        Rcode::NOERROR,
        &["kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"],
    );
    // Node names from the hosts file (hosts README: `ttl 60`); `cache 30` caps the
    // TTL of what it passes on (cache README: "TTL max TTL in seconds"; cache.go
    // applies the cap to the reply it caches).
    expect(&s, "node-1", Rtype::A, Rcode::NOERROR, &["node-1. 30 IN A 172.18.0.2"]);
    // Everything else: hosts falls through, forward answers (the fake upstream's TTL 60,
    // capped to 30 by cache).
    expect(
        &s,
        "example.org",
        Rtype::A,
        Rcode::NOERROR,
        &["example.org. 30 IN A 192.0.2.1"],
    );
    // The imported block answers its zone (hosts README: `ttl` defaults to 3600).
    expect(
        &s,
        "git.corp.example",
        Rtype::A,
        Rcode::NOERROR,
        &["git.corp.example. 3600 IN A 10.20.0.1"],
    );
    assert_eq!(up.count_name("node-1.nodes.vcluster.com") + up.count_name("node-1"), 0);
}

#[test]
fn gardeners_search_path_rewrites_answer_the_first_query() {
    let mut objects = base_cluster();
    objects.push(external_name("team-a", "docs", "docs.example.com"));
    let api = FakeApi::with_objects(objects);
    let up = FakeUpstream::start();
    let s = Corpus::load("gardener-search-path-rewrite.Corefile")
        .api(&api)
        .upstream(&up)
        .file(
            "custom/team.override",
            "hosts {\n    10.1.0.1 git.corp.example\n    fallthrough\n}\n",
        )
        .start();
    s.synced();
    // A cluster name with the search domain `svc.cluster.local` glued on: "Name Field
    // Rewrites" (regex, `{1}`) to the cluster name, "Explicit Response Name Rewrite"
    // back to the asked name; kubernetes `ttl 30`.
    expect(
        &s,
        "web.team-a.svc.cluster.local.svc.cluster.local",
        Rtype::A,
        Rcode::NOERROR,
        &["web.team-a.svc.cluster.local.svc.cluster.local. 30 IN A 10.96.1.1"],
    );
    // "Rewriting other Response Values" (`answer value`): an ExternalName's CNAME target
    // under the cluster domain would be renamed too; this one is public, so it stays,
    // and the owner is renamed back.
    let [udp, _] = s.both("docs.team-a.svc.cluster.local.svc.cluster.local", Rtype::CNAME);
    assert_eq!(
        section(&udp, "answer"),
        ["docs.team-a.svc.cluster.local.svc.cluster.local. 30 IN CNAME docs.example.com."]
    );
    // A cluster name that does not exist: NXDOMAIN for the asked name.
    expect(
        &s,
        "nobody.team-a.svc.cluster.local.svc.cluster.local",
        Rtype::A,
        Rcode::NXDOMAIN,
        &[],
    );
    // A public name with `svc.cluster.local` glued on goes upstream as the public name
    // and comes back under the asked one (TTL 60 capped to 30 by `cache 30`).
    expect(
        &s,
        "api.example.com.svc.cluster.local",
        Rtype::A,
        Rcode::NOERROR,
        &["api.example.com.svc.cluster.local. 30 IN A 192.0.2.1"],
    );
    assert_eq!(up.count_name("api.example.com.svc.cluster.local"), 0);
    assert!(up.count_type("api.example.com", Rtype::A) >= 1);
    // The team's imported override (a hosts entry) is part of the block (hosts README
    // `ttl` default 3600, capped to 30 by cache).
    expect(
        &s,
        "git.corp.example",
        Rtype::A,
        Rcode::NOERROR,
        &["git.corp.example. 30 IN A 10.1.0.1"],
    );
    // Other names are untouched.
    expect(
        &s,
        "web.team-a.svc.cluster.local",
        Rtype::A,
        Rcode::NOERROR,
        &["web.team-a.svc.cluster.local. 30 IN A 10.96.1.1"],
    );
}

#[test]
fn kubesprays_external_zones_rewrite_to_a_service_through_the_cluster_dns() {
    let api = FakeApi::with_objects(base_cluster());
    let up = FakeUpstream::start();
    // The zone forwards to the cluster's DNS service (10.233.0.3): here, the server
    // itself.
    let s = Corpus::load("kubespray-external-zones.Corefile")
        .api(&api)
        .upstream(&up)
        .forward_to("10.233.0.3", "127.0.0.1:{port}")
        .start();
    s.synced();
    // "Response Rewrites": an exact rule's answer is always mapped back; the Service's
    // address with the kubernetes plugin's default TTL 5 (under both caches' caps).
    expect(
        &s,
        "shop.mydomain.tld",
        Rtype::A,
        Rcode::NOERROR,
        &["shop.mydomain.tld. 5 IN A 10.96.1.1"],
    );
    // "Auto Response Name Rewrite" for the suffix rule.
    expect(
        &s,
        "web.apps.mydomain.tld",
        Rtype::A,
        Rcode::NOERROR,
        &["web.apps.mydomain.tld. 5 IN A 10.96.1.1"],
    );
    // The other external zone: its nameservers (the fake upstream), `cache 5` capping
    // the upstream's TTL 60 (cache README: "TTL max TTL in seconds").
    expect(
        &s,
        "www.example.io",
        Rtype::A,
        Rcode::NOERROR,
        &["www.example.io. 5 IN A 192.0.2.1"],
    );
    // The cluster's names never left the server.
    assert_eq!(
        up.count_name("web.team-a.svc.cluster.local") + up.count_name("shop.mydomain.tld"),
        0
    );
}

/// kubespray's docs write a zone's rewrite item as `name stop FROM TO`; CoreDNS reads
/// `stop` there as the match type and refuses it (rewrite/name.go, newNameRule), and so
/// does clusterdns: the corpus uses the working order `stop name exact FROM TO`.
#[test]
fn kubesprays_documented_item_order_is_refused_as_coredns_refuses_it() {
    let dir = Scratch::new("kubespray-order");
    dir.write(
        "Corefile",
        "mydomain.tld:1053 {\n    rewrite name stop website.tld website.namespace.svc.cluster.local\n    forward . 127.0.0.1:9\n}\n",
    );
    let (code, _, err) = run(&["-check", "-conf", "Corefile"], &dir.0, None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Corefile:2 - ")
            && err.contains(
                "name rule supports only exact, prefix, suffix, substring, and regex name matching, received: stop"
            ),
        "{err}"
    );
}

#[test]
fn a_rewritten_query_goes_upstream_rewritten_and_comes_back_under_the_asked_name() {
    let up = FakeUpstream::start();
    let s = Server::start(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    rewrite name suffix .corp.example. .example.org. answer auto\n    forward . {}\n}}\n",
        up.spec()
    ));
    for (tcp, proto) in [(false, Proto::Udp), (true, Proto::Tcp)] {
        let r = if tcp {
            s.query_tcp("www.corp.example", Rtype::A)
        } else {
            s.query("www.corp.example", Rtype::A)
        };
        assert_eq!(rcode(&r), Rcode::NOERROR);
        assert_eq!(question(&r), "www.corp.example");
        assert_eq!(section(&r, "answer"), ["www.corp.example. 60 IN A 192.0.2.1"]);
        // The upstream was asked the rewritten name (forward resumed with it).
        assert_eq!(up.count("www.example.org", Rtype::A, proto), 1, "{proto:?}");
    }
    assert_eq!(up.count_name("www.corp.example"), 0);
}
