//! The `template` plugin end to end: the Corefile corpus of tests/data/corefiles/ that
//! uses it (AKS's shape and two team customisations), made runnable by `testkit::corpus`, starts against
//! the test kit's fake API and answers over UDP and TCP as CoreDNS's template README
//! documents (the section is cited beside each expectation).

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};

use testkit::corpus::{Corpus, Running};
use testkit::prelude::*;

/// A corpus Corefile made to run here (testkit::corpus), started against the fake API
/// and upstream; returns once the cluster's names answer. Its metrics port is in
/// `metrics`.
fn launch(file: &str, api: &FakeApi, up: &FakeUpstream) -> Running {
    let s = Corpus::load(file).api(api).upstream(up).start();
    s.synced();
    s
}

/// The same question over UDP and over TCP; both replies, which must agree.
fn ask(s: &Server, name: &str, qtype: Rtype) -> Message<Vec<u8>> {
    let q = query_bytes(name, qtype, Some(1232), 0x4321);
    let udp = udp_exchange(s.addr(), &q);
    let tcp = tcp_exchange(s.addr(), &q);
    for section_name in ["answer", "authority"] {
        assert_eq!(
            section(&udp, section_name),
            section(&tcp, section_name),
            "{name} {qtype}: UDP and TCP differ"
        );
    }
    assert_eq!(rcode(&udp), rcode(&tcp), "{name} {qtype}");
    udp
}

/// NXDOMAIN, authoritative, nothing in the answer.
fn assert_nxdomain(m: &Message<Vec<u8>>, what: &str) {
    assert_eq!(rcode(m), Rcode::NXDOMAIN, "{what}");
    // template.go: msg.Authoritative = true for every templated reply.
    assert!(m.header().aa(), "{what}: AA");
    assert_eq!(counts(m).1, 0, "{what}: answer");
}

#[test]
fn the_aks_shape_nxdomains_search_path_junk_and_serves_the_rest() {
    let api = FakeApi::with_objects(base_cluster());
    let up = FakeUpstream::start();
    // A stub domain in the custom ConfigMap, the way AKS documents customising it, with
    // a nameserver of its own (answers 192.0.2.2).
    let stub = FakeUpstream::tagged(2);
    let s = Corpus::load("aks-template.Corefile")
        .api(&api)
        .upstream(&up)
        .forward_to("10.0.0.10", &stub.spec())
        .file(
            "custom/corp.server",
            "corp.example:53 {\n    errors\n    cache 30\n    forward . 10.0.0.10\n}\n",
        )
        .start();
    s.synced();

    // Five labels before internal.cloudapp.net: the regex matches, rcode NXDOMAIN
    // (README "Block invalid search domain completions", regex form), for A and AAAA.
    let junk = "kubernetes.default.svc.cluster.local.internal.cloudapp.net";
    for qtype in [Rtype::A, Rtype::AAAA] {
        assert_nxdomain(&ask(&s, junk, qtype), junk);
    }
    // Two labels: no match, `fallthrough` (README "Syntax": the next plugin, forward).
    // The upstream's TTL 60 is capped to 30 by `cache 30` (cache README, TTL).
    let vm = "vm1.abcdef.internal.cloudapp.net";
    assert_eq!(
        section(&ask(&s, vm, Rtype::A), "answer"),
        ["vm1.abcdef.internal.cloudapp.net. 30 IN A 192.0.2.1"]
    );
    // Anything under reddog.microsoft.com: the default regex `.*`, NXDOMAIN (README
    // "Resolve everything to NXDOMAIN", with a zone).
    assert_nxdomain(&ask(&s, "a.b.reddog.microsoft.com", Rtype::A), "reddog");
    assert_nxdomain(&ask(&s, "reddog.microsoft.com", Rtype::TXT), "reddog apex");
    // The cluster is served as ever.
    // (kubernetes `ttl 30`.)
    assert_eq!(
        section(&ask(&s, "web.team-a.svc.cluster.local", Rtype::A), "answer"),
        ["web.team-a.svc.cluster.local. 30 IN A 10.96.1.1"]
    );
    // The imported stub domain forwards its names (TTL 60 capped to 30 by its cache).
    assert_eq!(
        section(&ask(&s, "db.corp.example", Rtype::A), "answer"),
        ["db.corp.example. 30 IN A 192.0.2.2"]
    );
    // The junk never reached the upstream; the VM name did.
    assert_eq!(up.count_name(junk), 0);
    assert_eq!(up.count_name("a.b.reddog.microsoft.com"), 0);
    assert!(up.count_name(vm) >= 1);
    // README "Metrics": matches counted per zone, class and type. (`cache` runs before
    // `template`, as in CoreDNS: the TCP repeat of a question may be a cache hit, so
    // each series counts one or two.)
    let (_, body) = http_get(s.metrics.unwrap(), "/metrics").expect("scrape");
    for (zone, t) in [
        ("internal.cloudapp.net.", "A"),
        ("internal.cloudapp.net.", "AAAA"),
        ("reddog.microsoft.com.", "A"),
        ("reddog.microsoft.com.", "TXT"),
    ] {
        let series = format!(
            "coredns_template_matches_total{{server=\"dns://127.0.0.1:{}\",zone=\"{zone}\",view=\"\",class=\"IN\",type=\"{t}\"}} ",
            s.port
        );
        let value = body
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("{series} not in\n{body}"));
        assert!(value == "1" || value == "2", "{series}{value}");
    }
}

#[test]
fn a_team_template_nxdomains_public_names_glued_to_the_search_path() {
    let api = FakeApi::with_objects(base_cluster());
    let up = FakeUpstream::start();
    let s = launch("team-search-junk-template.Corefile", &api, &up);
    // README "Block invalid search domain completions": NXDOMAIN and the SOA for
    // negative caching in the authority section.
    let junk = "api.example.com.team-a.svc.cluster.local";
    let m = ask(&s, junk, Rtype::A);
    assert_nxdomain(&m, junk);
    assert_eq!(
        section(&m, "authority"),
        ["cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30"]
    );
    // No match: fallthrough to kubernetes, which answers its names.
    // (kubernetes README: `ttl` defaults to 5.)
    assert_eq!(
        section(&ask(&s, "web.team-a.svc.cluster.local", Rtype::A), "answer"),
        ["web.team-a.svc.cluster.local. 5 IN A 10.96.1.1"]
    );
    assert_eq!(
        rcode(&ask(&s, "nosuch.team-a.svc.cluster.local", Rtype::A)),
        Rcode::NXDOMAIN
    );
    // Outside cluster.local: forward.
    // (The upstream's TTL 60, capped to 30 by `cache 30`: cache README, TTL.)
    assert_eq!(
        section(&ask(&s, "api.example.com", Rtype::A), "answer"),
        ["api.example.com. 30 IN A 192.0.2.1"]
    );
}

#[test]
fn a_team_template_synthesizes_names_from_addresses_both_ways() {
    let api = FakeApi::with_objects(base_cluster());
    let up = FakeUpstream::start();
    let s = launch("team-ip-names-template.Corefile", &api, &up);
    // README "Resolve A/PTR for .example".
    let m = ask(&s, "ip-10-1-2-3.lab.example", Rtype::A);
    assert_eq!(section(&m, "answer"), ["ip-10-1-2-3.lab.example. 60 IN A 10.1.2.3"]);
    assert!(m.header().aa());
    let m = ask(&s, "3.2.1.10.in-addr.arpa", Rtype::PTR);
    assert_eq!(
        section(&m, "answer"),
        ["3.2.1.10.in-addr.arpa. 60 IN PTR ip-10-1-2-3.lab.example."]
    );
    // README "Resolve hexadecimal ip pattern using parseInt".
    let m = ask(&s, "ip0a7b7b7b.hex.lab.example", Rtype::A);
    assert_eq!(
        section(&m, "answer"),
        ["ip0a7b7b7b.hex.lab.example. 60 IN A 10.123.123.123"]
    );
    // README "Resolve device addresses for HTTPS on LAN": the expression keeps
    // synthesized names inside 10.0.0.0/8; a public address falls through (forward).
    // (No cache in this block: the upstream's TTL 60.)
    assert_eq!(
        section(&ask(&s, "ip-192-0-2-9.lab.example", Rtype::A), "answer"),
        ["ip-192-0-2-9.lab.example. 60 IN A 192.0.2.1"]
    );
    // An A template does not answer AAAA: the name goes on (forward's fake answers).
    assert_eq!(rcode(&ask(&s, "ip-10-1-2-3.lab.example", Rtype::AAAA)), Rcode::NOERROR);
    assert_eq!(
        up.count_name("ip-10-1-2-3.lab.example"),
        2,
        "AAAA over UDP and TCP only"
    );
}
