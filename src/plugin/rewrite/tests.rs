//! Behaviour tables. Each expectation cites the CoreDNS README section or test case
//! (plugin/rewrite/*_test.go, CoreDNS v1.14) that pins it down.

use std::sync::{Arc, Mutex};

use domain::base::Message;

use super::*;
use crate::chain::{Chain, Outcome, RouteTag, UpstreamProto, UpstreamReply, UpstreamRequest, WorkerCtx};
use crate::config::parse_str;
use crate::dns::wire::name_from_str;
use crate::dns::{Name, Rdata, Record, Response, Section, Transport, class, rtype};

/// `rewrite` set up from the lines of a server block.
fn rewrite(lines: &str) -> Result<Rewrite, ConfigError> {
    let text = format!(". {{\n{lines}\n}}\n");
    let parsed = parse_str(&text, "Corefile", std::path::Path::new("."))?;
    let dirs: Vec<&Directive> = parsed.blocks[0].directives.iter().collect();
    parse(&dirs)
}

/// What the plugin after `rewrite` saw.
#[derive(Clone, Debug, Default, PartialEq)]
struct Seen {
    name: String,
    qtype: u16,
    qclass: u16,
    options: Vec<(u16, Vec<u8>)>,
}

/// The plugin after `rewrite`: notes the query it sees, answers with `records`
/// (`OWNER TTL TYPE DATA`, `@` for the question it sees), rcode `rcode`.
struct Backend {
    seen: Mutex<Vec<Seen>>,
    records: Vec<String>,
    rcode: Rcode,
    /// Ask for an upstream exchange first (to test the resume path).
    upstream: bool,
}

impl Backend {
    fn new(records: &[&str]) -> Backend {
        Backend {
            seen: Mutex::new(Vec::new()),
            records: records.iter().map(|s| s.to_string()).collect(),
            rcode: Rcode::NOERROR,
            upstream: false,
        }
    }

    fn answer(&self, q: &mut Query<'_, '_>) -> Step {
        let mut name = text::Text::new();
        name.set_wire(q.req.qname_raw(), false);
        self.seen.lock().unwrap().push(Seen {
            name: name.as_str().to_string(),
            qtype: q.req.qtype,
            qclass: q.req.qclass,
            options: q.req.edns_options().map(|(c, d)| (c, d.to_vec())).collect(),
        });
        q.resp.start(q.req, self.rcode);
        for r in &self.records {
            let f: Vec<&str> = r.split_whitespace().collect();
            let section = match f[0] {
                "AUTH" => Section::Authority,
                "EXTRA" => Section::Additional,
                _ => Section::Answer,
            };
            let f = if matches!(f[0], "AUTH" | "EXTRA") {
                &f[1..]
            } else {
                &f[..]
            };
            let owner_wire = name_from_str(f[0]).unwrap_or_default();
            let owner = if f[0] == "@" {
                Name::QUESTION
            } else {
                Name::wire(&owner_wire)
            };
            let ttl: u32 = f[1].parse().unwrap();
            let target = f.last().map(|t| name_from_str(t).unwrap_or_default()).unwrap();
            let (t, data) = match f[2] {
                "A" => (rtype::A, Rdata::A(f[3].parse().unwrap())),
                "AAAA" => (rtype::AAAA, Rdata::Aaaa(f[3].parse().unwrap())),
                "CNAME" => (rtype::CNAME, Rdata::Name(Name::wire(&target))),
                "PTR" => (rtype::PTR, Rdata::Name(Name::wire(&target))),
                "SRV" => (
                    rtype::SRV,
                    Rdata::Srv {
                        priority: f[3].parse().unwrap(),
                        weight: f[4].parse().unwrap(),
                        port: f[5].parse().unwrap(),
                        target: Name::wire(&target),
                    },
                ),
                other => panic!("type {other}"),
            };
            let _ = q.resp.push(
                section,
                &Record {
                    owner,
                    rtype: t,
                    ttl,
                    data,
                },
            );
        }
        Step::Answered
    }
}

impl Handler for Backend {
    fn name(&self) -> &'static str {
        "backend"
    }
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        if self.upstream {
            q.worker.upstream_msg.clear();
            q.req.copy_for_upstream(&mut q.worker.upstream_msg);
            return Step::Upstream(UpstreamRequest {
                to: "127.0.0.1:53".parse().unwrap(),
                proto: UpstreamProto::Udp,
                timeout: std::time::Duration::from_secs(1),
                cookie: 0,
                coalesce: None,
                expire: std::time::Duration::from_secs(1),
            });
        }
        self.answer(q)
    }
    fn resume(&self, q: &mut Query<'_, '_>, _: UpstreamReply<'_>, _: u64) -> Step {
        self.answer(q)
    }
}

/// A query for `name` (as spelled) of `qtype`/`qclass`, with EDNS and these options
/// when `options` is `Some`.
fn query(name: &str, qtype: u16, qclass: u16, options: Option<&[(u16, &[u8])]>) -> Vec<u8> {
    let mut wire = [0u8; MAX_NAME_LEN];
    // Keep the spelling: parse_name lower-cases, so lay out the labels by hand (a name
    // with escapes, lower-case in the tests, is parsed).
    let mut len = 0;
    if name.contains('\\') {
        len = crate::dns::wire::parse_name(name, &mut wire).expect("a valid name") - 1;
    } else {
        for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
            wire[len] = label.len() as u8;
            wire[len + 1..len + 1 + label.len()].copy_from_slice(label.as_bytes());
            len += 1 + label.len();
        }
    }
    wire[len] = 0;
    let b = QueryBuilder::new(&wire[..len + 1], qtype).id(0x4242).class(qclass);
    match options {
        Some(o) => b.edns(1232).options(o).to_vec(),
        None => b.to_vec(),
    }
}

/// The client's view of a reply.
#[derive(Debug)]
struct Got {
    question: String,
    qtype: u16,
    rcode: Rcode,
    answer: Vec<String>,
    additional: Vec<String>,
}

/// Runs `rw` then `backend` for `raw`, as the server does (run, then the response
/// hooks); with `backend.upstream`, through a suspended exchange and `resume`.
fn exchange(rw: Rewrite, backend: Arc<Backend>, raw: &[u8]) -> Got {
    exchange_after(Vec::new(), rw, backend, raw)
}

/// [`exchange`] with `front` (metadata, a provider) before `rewrite` in the chain.
fn exchange_after(mut front: Vec<Arc<dyn Handler>>, rw: Rewrite, backend: Arc<Backend>, raw: &[u8]) -> Got {
    front.push(Arc::new(rw));
    front.push(backend.clone());
    let chain = Chain::new(front);
    let a = "192.0.2.7:5353".parse().unwrap();
    let l = "127.0.0.1:53".parse().unwrap();
    let (bytes, rcode) = crate::chain::testing::with_query_to(raw, a, l, chain.metadata(), |q| {
        let at = match chain.run(q, 0) {
            Outcome::Reply { at } => at,
            Outcome::Upstream { at, .. } => {
                // What the worker does: the query parsed again, the chain resumed.
                let Outcome::Reply { at } = chain.resume(q, at, UpstreamReply::Timeout, 0) else {
                    panic!("no reply after resume")
                };
                at
            }
        };
        chain.complete(q, at);
        (q.resp.bytes().to_vec(), q.resp.rcode())
    });
    let msg = Message::from_octets(bytes).unwrap();
    let question = msg.first_question().unwrap();
    Got {
        question: format!("{}.", question.qname()).replace("..", "."),
        qtype: question.qtype().to_int(),
        rcode,
        answer: testkit::wire::section(&msg, "answer"),
        additional: testkit::wire::section(&msg, "additional"),
    }
}

/// Rewrites `name`/`qtype`/`qclass` with `rules`; what the next plugin saw (None: the
/// query was not passed on) and what the client got.
fn ask(rules: &str, name: &str, qtype: u16, qclass: u16, records: &[&str]) -> (Option<Seen>, Got) {
    let backend = Arc::new(Backend::new(records));
    let got = exchange(
        rewrite(rules).unwrap(),
        backend.clone(),
        &query(name, qtype, qclass, None),
    );
    let seen = backend.seen.lock().unwrap().first().cloned();
    (seen, got)
}

/// CoreDNS rewrite_test.go, TestRewrite: its twelve rules and what the plugin after
/// rewrite sees for each question (name, type, class).
#[test]
fn request_rewrites_follow_coredns_test_rewrite() {
    let rules = r"
    rewrite name from.nl. to.nl.
    rewrite name regex (core)\.(dns)\.(rocks)\.(nl) {2}.{1}.{3}.{4} answer name (dns)\.(core)\.(rocks)\.(nl) {2}.{1}.{3}.{4}
    rewrite name exact from.exact.nl. to.nl.
    rewrite name prefix prefix to
    rewrite name suffix .suffix. .nl.
    rewrite name substring from.substring to
    rewrite name regex (f.*m)\.regex\.(nl) to.{2}
    rewrite continue name regex consul\.(rocks) core.dns.{1}
    rewrite name core.dns.rocks to.nl.
    rewrite continue class HS CH
    rewrite class CH IN
    rewrite type ANY HINFO";
    let (a, any, hinfo, inet, ch, hs) = (rtype::A, 255, rtype::HINFO, class::IN, class::CH, class::HS);
    let cases = [
        ("from.nl.", a, inet, "to.nl.", a, inet),
        ("a.nl.", a, inet, "a.nl.", a, inet),
        ("a.nl.", a, ch, "a.nl.", a, inet),
        ("a.nl.", any, inet, "a.nl.", hinfo, inet),
        // name is rewritten, type is not (stop).
        ("from.nl.", any, inet, "to.nl.", any, inet),
        ("from.exact.nl.", a, inet, "to.nl.", a, inet),
        ("prefix.nl.", a, inet, "to.nl.", a, inet),
        ("to.suffix.", a, inet, "to.nl.", a, inet),
        ("from.substring.nl.", a, inet, "to.nl.", a, inet),
        ("from.regex.nl.", a, inet, "to.nl.", a, inet),
        // continue: the regex makes core.dns.rocks., the exact rule after it to.nl.
        ("consul.rocks.", a, inet, "to.nl.", a, inet),
        // the class rule comes before the type rule, and stops.
        ("a.nl.", any, ch, "a.nl.", any, inet),
        // HS to CH (continue), then CH to IN.
        ("a.nl.", any, hs, "a.nl.", any, inet),
        ("core.dns.rocks.nl.", a, inet, "dns.core.rocks.nl.", a, inet),
    ];
    for (from, ft, fc, to, tt, tc) in cases {
        let (seen, got) = ask(rules, from, ft, fc, &[]);
        let seen = seen.unwrap();
        assert_eq!(
            (seen.name.as_str(), seen.qtype, seen.qclass),
            (to, tt, tc),
            "{from} {ft} {fc}"
        );
        // The client always gets its own question back (README, Response Rewrites).
        assert_eq!((got.question.as_str(), got.qtype), (from, ft), "{from}");
    }
}

/// CoreDNS name_test.go, TestRewriteNamePrefixSuffix and
/// TestRewriteNamePrefixSuffixAutoAnswer: FROM and TO are made fully qualified (so a
/// suffix is a string suffix, not a label: the last case), and `answer auto` maps the
/// answer back.
#[test]
fn prefix_and_suffix_with_answer_auto() {
    let cases = [
        (
            "prefix foo bar",
            "foo.example.com.",
            "bar.example.com.",
            "bar.example.com.",
        ),
        (
            "prefix foo. bar.",
            "foo.example.com.",
            "bar.example.com.",
            "bar.example.com.",
        ),
        (
            "suffix com org",
            "foo.example.com.",
            "foo.example.org.",
            "foo.example.org.",
        ),
        (
            "suffix .com .org",
            "foo.example.com.",
            "foo.example.org.",
            "foo.example.org.",
        ),
        (
            "prefix foo bar answer auto",
            "foo.example.com.",
            "bar.example.com.",
            "foo.example.com.",
        ),
        (
            "prefix foo. bar. answer auto",
            "foo.example.com.",
            "bar.example.com.",
            "foo.example.com.",
        ),
        (
            "suffix com org answer auto",
            "foo.example.com.",
            "foo.example.org.",
            "foo.example.com.",
        ),
        (
            "suffix .com .org answer auto",
            "foo.example.com.",
            "foo.example.org.",
            "foo.example.com.",
        ),
        (
            "suffix .ingress.coredns.rocks nginx.coredns.rocks answer auto",
            "coredns.ingress.coredns.rocks.",
            "corednsnginx.coredns.rocks.",
            "coredns.ingress.coredns.rocks.",
        ),
    ];
    for (rule, question, rewritten, answer_owner) in cases {
        let (seen, got) = ask(
            &format!("rewrite name {rule}"),
            question,
            rtype::A,
            class::IN,
            &["@ 5 A 10.0.0.1"],
        );
        assert_eq!(seen.unwrap().name, rewritten, "{rule}");
        assert_eq!(got.question, question, "{rule}");
        assert_eq!(got.answer, [format!("{answer_owner} 5 IN A 10.0.0.1")], "{rule}");
    }
}

/// CoreDNS name_test.go, TestRewriteNameExactAnswer and TestRewriteNameRegexAnswer: an
/// exact rule always maps the answer back (README: "answers for rewrites of type exact
/// are always rewritten"); a regex rule does with `answer auto` or `answer name`, and
/// not without.
#[test]
fn exact_and_regex_answers() {
    let cases = [
        (
            "exact coredns.rocks service.consul answer auto",
            "coredns.rocks.",
            "service.consul.",
            "coredns.rocks.",
        ),
        (
            "exact coredns.rocks. service.consul.",
            "coredns.rocks.",
            "service.consul.",
            "coredns.rocks.",
        ),
        (
            "exact coredns.org. service.consul.",
            "coredns.rocks.",
            "coredns.rocks.",
            "coredns.rocks.",
        ),
        (
            r"regex (.*).coredns.rocks {1}.coredns.maps answer auto",
            "foo.coredns.rocks.",
            "foo.coredns.maps.",
            "foo.coredns.rocks.",
        ),
        (
            r"regex (.*).coredns.rocks {1}.coredns.maps answer name (.*).coredns.maps {1}.coredns.works",
            "foo.coredns.rocks.",
            "foo.coredns.maps.",
            "foo.coredns.works.",
        ),
        (
            r"regex (.*).coredns.rocks {1}.coredns.maps",
            "foo.coredns.rocks.",
            "foo.coredns.maps.",
            "foo.coredns.maps.",
        ),
    ];
    for (rule, question, rewritten, answer_owner) in cases {
        let (seen, got) = ask(
            &format!("rewrite name {rule}"),
            question,
            rtype::A,
            class::IN,
            &["@ 5 A 10.0.0.1"],
        );
        assert_eq!(seen.unwrap().name, rewritten, "{rule}");
        assert_eq!(got.question, question, "{rule}");
        assert_eq!(got.answer, [format!("{answer_owner} 5 IN A 10.0.0.1")], "{rule}");
    }
}

/// README, "Response Rewrites" / "Explicit Response Name Rewrite": the block form is one
/// rule; the README's dig output shows the answer under the asked name.
#[test]
fn readme_explicit_response_name_rewrite() {
    let rules = r"
    rewrite stop {
        name regex (.*)-(us-west-1)\.coredns\.rocks {1}.service.{2}.consul
        answer name (.*)\.service\.(us-west-1)\.consul {1}-{2}.coredns.rocks
    }";
    let records = ["@ 0 A 10.10.10.10", "@ 0 A 10.20.20.20", "@ 0 A 10.30.30.30"];
    let (seen, got) = ask(rules, "ftp-us-west-1.coredns.rocks.", rtype::A, class::IN, &records);
    assert_eq!(seen.unwrap().name, "ftp.service.us-west-1.consul.");
    assert_eq!(got.question, "ftp-us-west-1.coredns.rocks.");
    assert_eq!(
        got.answer,
        [
            "ftp-us-west-1.coredns.rocks. 0 IN A 10.10.10.10",
            "ftp-us-west-1.coredns.rocks. 0 IN A 10.20.20.20",
            "ftp-us-west-1.coredns.rocks. 0 IN A 10.30.30.30",
        ]
    );
    // Without the answer rule the README shows the names the backend used.
    let (_, got) = ask(
        r"rewrite name regex (.*)-(us-west-1)\.coredns\.rocks {1}.service.{2}.consul",
        "ftp-us-west-1.coredns.rocks.",
        rtype::A,
        class::IN,
        &records[..1],
    );
    assert_eq!(got.question, "ftp-us-west-1.coredns.rocks.");
    assert_eq!(got.answer, ["ftp.service.us-west-1.consul. 0 IN A 10.10.10.10"]);
}

/// README, "Rewriting other Response Values", and reverter_test.go
/// TestValueResponseReverter: `answer value` rewrites the names inside CNAME, SRV, PTR
/// data, in every section; `answer auto` maps values that are the rewritten name or
/// below it (remapStringRewriter, TestRemapStringRewriter).
#[test]
fn answer_value_and_auto_values() {
    let rules = r"rewrite name suffix .arpa .arpa answer auto answer value (.*)\.service\.consul\. {1}.coredns.rocks.";
    let (_, got) = ask(
        rules,
        "30.30.30.10.in-addr.arpa.",
        rtype::PTR,
        class::IN,
        &[
            "@ 60 PTR ftp-us-west-1.service.consul.",
            "EXTRA srv.service.consul. 60 A 10.0.0.9",
        ],
    );
    assert_eq!(
        got.answer,
        ["30.30.30.10.in-addr.arpa. 60 IN PTR ftp-us-west-1.coredns.rocks."]
    );
    // A value rule does not touch owners.
    assert_eq!(got.additional, ["srv.service.consul. 60 IN A 10.0.0.9"]);

    // answer auto on a regex rule: the CNAME target below the rewritten name comes back
    // under the asked one; other targets stay.
    let (_, got) = ask(
        r"rewrite name regex ^web\.example\.org\.$ web.default.svc.cluster.local. answer auto",
        "web.example.org.",
        rtype::SRV,
        class::IN,
        &[
            "@ 5 SRV 0 100 80 pod-1.web.default.svc.cluster.local.",
            "@ 5 SRV 0 100 80 other.default.svc.cluster.local.",
            "EXTRA pod-1.web.default.svc.cluster.local. 5 A 10.1.0.1",
        ],
    );
    assert_eq!(
        got.answer,
        [
            // (`domain` prints an SRV target without its final dot.)
            "web.example.org. 5 IN SRV 0 100 80 pod-1.web.example.org",
            "web.example.org. 5 IN SRV 0 100 80 other.default.svc.cluster.local",
        ]
    );
    assert_eq!(got.additional, ["pod-1.web.example.org. 5 IN A 10.1.0.1"]);
}

/// README: "When multiple rules are matched, the request rewrite follows the line order
/// in the configuration, while the response rewrite (answer option) is executed in
/// reverse order."
#[test]
fn several_rules_in_order_and_responses_in_reverse() {
    let rules = "
    rewrite continue name suffix .example.com. .example.net. answer auto
    rewrite name suffix .example.net. .svc.cluster.local. answer auto";
    let (seen, got) = ask(rules, "www.example.com.", rtype::A, class::IN, &["@ 7 A 10.0.0.1"]);
    assert_eq!(seen.unwrap().name, "www.svc.cluster.local.");
    // Reverse order: .svc.cluster.local. -> .example.net. -> .example.com.; the other
    // order would leave .example.net.
    assert_eq!(got.answer, ["www.example.com. 7 IN A 10.0.0.1"]);
    // stop (the default): the second rule does not run after the first.
    let rules = "
    rewrite name suffix .example.com. .example.net. answer auto
    rewrite name suffix .example.net. .svc.cluster.local. answer auto";
    let (seen, _) = ask(rules, "www.example.com.", rtype::A, class::IN, &["@ 7 A 10.0.0.1"]);
    assert_eq!(seen.unwrap().name, "www.example.net.");
}

/// CoreDNS ttl_test.go, TestTtlRewrite (its rules and cases, A records): every match
/// kind, single values and ranges.
#[test]
fn ttl_rules_follow_coredns_test_ttl_rewrite() {
    let rules = r"
    rewrite stop ttl srv1.coredns.rocks 1
    rewrite stop ttl exact srv15.coredns.rocks 15
    rewrite stop ttl prefix srv30 30
    rewrite stop ttl suffix 45.coredns.rocks 45
    rewrite stop ttl substring rv50 50
    rewrite stop ttl regex (srv10)\.(coredns)\.(rocks) 10
    rewrite stop ttl regex (srv20)\.(coredns)\.(rocks) 20
    rewrite stop ttl range.example.com. 30-300
    rewrite stop ttl ceil.example.com. -11
    rewrite stop ttl floor.example.com. 5-";
    let cases = [
        ("srv1.coredns.rocks.", 5, 1),
        ("srv15.coredns.rocks.", 5, 15),
        ("srv30.coredns.rocks.", 5, 30),
        ("srv45.coredns.rocks.", 5, 45),
        ("srv50.coredns.rocks.", 5, 50),
        ("srv10.coredns.rocks.", 5, 10),
        ("xmpp.coredns.rocks.", 5, 5),
        ("srv20.coredns.rocks.", 5, 20),
        ("range.example.com.", 5, 30),
        ("range.example.com.", 55, 55),
        ("range.example.com.", 500, 300),
        ("ceil.example.com.", 5, 5),
        ("ceil.example.com.", 15, 11),
        ("floor.example.com.", 0, 5),
        ("floor.example.com.", 30, 30),
    ];
    for (name, ttl, want) in cases {
        let rec = format!("@ {ttl} A 10.0.0.1");
        let (seen, got) = ask(rules, name, rtype::A, class::IN, &[&rec, &rec]);
        // A TTL rule leaves the query as it is.
        assert_eq!(seen.unwrap().name, name);
        assert_eq!(
            got.answer,
            [
                format!("{name} {want} IN A 10.0.0.1"),
                format!("{name} {want} IN A 10.0.0.1")
            ],
            "{name} {ttl}"
        );
    }
}

/// CoreDNS rcode_test.go, TestRCodeRewrite and TestRCodeRewriteEmptyResponse, and the
/// README's "RCODE Field Rewrites" example (names and numbers).
#[test]
fn rcode_rules() {
    for rules in [
        r"rewrite continue { 
            rcode regex (.*)\.coredns\.rocks SERVFAIL NOERROR
        }",
        r"rewrite continue { 
            rcode regex (.*)\.coredns\.rocks 2 0
        }",
    ] {
        for records in [&[][..], &["@ 5 A 10.0.0.1"][..]] {
            let backend = Arc::new(Backend {
                rcode: Rcode::SERVFAIL,
                ..Backend::new(records)
            });
            let got = exchange(
                rewrite(rules).unwrap(),
                backend,
                &query("srv1.coredns.rocks.", rtype::A, class::IN, None),
            );
            assert_eq!(got.rcode, Rcode::NOERROR, "{rules} {records:?}");
        }
    }
    // Another name, or another rcode, is left alone.
    let backend = Arc::new(Backend {
        rcode: Rcode::SERVFAIL,
        ..Backend::new(&[])
    });
    let got = exchange(
        rewrite("rewrite rcode exact a.example. SERVFAIL NOERROR").unwrap(),
        backend,
        &query("b.example.", rtype::A, class::IN, None),
    );
    assert_eq!(got.rcode, Rcode::SERVFAIL);
    let backend = Arc::new(Backend {
        rcode: Rcode::NXDOMAIN,
        ..Backend::new(&[])
    });
    let got = exchange(
        rewrite("rewrite rcode a.example. SERVFAIL NOERROR").unwrap(),
        backend,
        &query("a.example.", rtype::A, class::IN, None),
    );
    assert_eq!(got.rcode, Rcode::NXDOMAIN);
}

/// The options the plugin after rewrite sees for `rules` and a query with `options`.
fn options_seen(rules: &str, options: Option<&[(u16, &[u8])]>) -> Vec<(u16, Vec<u8>)> {
    let backend = Arc::new(Backend::new(&[]));
    exchange(
        rewrite(rules).unwrap(),
        backend.clone(),
        &query("example.org.", rtype::A, class::IN, options),
    );
    backend.seen.lock().unwrap()[0].options.clone()
}

/// CoreDNS rewrite_test.go, TestEdns0MultiRule (local, nsid, subnet cases without
/// revert) and the README's EDNS0 section: `replace` changes only an option that is
/// there, `set` changes or adds, `append` adds when none is there, `unset` removes;
/// data is text, or hex after `0x`.
#[test]
fn edns0_actions() {
    let lf = 0xffee;
    // replace then set, no option: set adds.
    let rules = "rewrite local replace 0xffee abcdef\nrewrite local set 0xffee fedcba";
    let rules = rules.replace("rewrite local", "rewrite edns0 local");
    assert_eq!(options_seen(&rules, None), [(lf, b"fedcba".to_vec())]);
    // replace then set, the option there: replace changes it (and stops).
    assert_eq!(
        options_seen(&rules, Some(&[(lf, b"foobar")])),
        [(lf, b"abcdef".to_vec())]
    );
    // README: "0x61626364" is "abcd".
    assert_eq!(
        options_seen("rewrite edns0 local set 0xffee 0x61626364", None),
        [(lf, b"abcd".to_vec())]
    );
    // append: only when no option has the code (README).
    assert_eq!(
        options_seen("rewrite edns0 local append 0xffee abcd", Some(&[(lf, b"old")])),
        [(lf, b"old".to_vec())]
    );
    assert_eq!(
        options_seen("rewrite edns0 local append 0xffee abcd", Some(&[(0xfff0, b"x")])),
        [(0xfff0, b"x".to_vec()), (lf, b"abcd".to_vec())]
    );
    // unset removes (TestRewriteEDNS0Unset).
    assert_eq!(
        options_seen(
            "rewrite edns0 local unset 0xffee",
            Some(&[(lf, b"old"), (0xfff0, b"x")])
        ),
        [(0xfff0, b"x".to_vec())]
    );
    // nsid: an empty NSID option (README, EDNS0_NSID).
    assert_eq!(options_seen("rewrite edns0 nsid set", None), [(3, vec![])]);
    assert_eq!(
        options_seen("rewrite edns0 nsid replace", Some(&[(3, b"id")])),
        [(3, vec![])]
    );
    // subnet: the client's address (192.0.2.7) cut to 24 bits (README, EDNS0_SUBNET;
    // TestRewriteEDNS0Subnet): family 1, source 24, scope 0, three address bytes.
    assert_eq!(
        options_seen("rewrite edns0 subnet set 24 56", None),
        [(8, vec![0, 1, 24, 0, 192, 0, 2])]
    );
    assert_eq!(
        options_seen("rewrite edns0 subnet set 20 56", None),
        [(8, vec![0, 1, 20, 0, 192, 0, 0])]
    );
    assert_eq!(options_seen("rewrite edns0 subnet unset", Some(&[(8, b"xxxx")])), []);
}

/// CoreDNS rewrite_test.go, TestRewriteEDNS0LocalVariable: the variables' wire forms.
#[test]
fn edns0_variables() {
    let lf = 0xffee;
    let cases: [(&str, Vec<u8>); 7] = [
        ("{qname}", b"example.org.".to_vec()),
        ("{qtype}", vec![0, 1]),
        ("{client_ip}", vec![192, 0, 2, 7]),
        ("{client_port}", 5353u16.to_be_bytes().to_vec()),
        ("{protocol}", b"udp".to_vec()),
        ("{server_ip}", vec![127, 0, 0, 1]),
        ("{server_port}", 53u16.to_be_bytes().to_vec()),
    ];
    for (var, want) in cases {
        let rule = format!("rewrite edns0 local set 0xffee {var}");
        assert_eq!(options_seen(&rule, None), [(lf, want)], "{var}");
    }
    // A metadata label nobody provides: the rule is ignored (CoreDNS: RewriteIgnored).
    assert_eq!(options_seen("rewrite edns0 local set 0xffee {some/label}", None), []);
}

/// rewrite.go: a name that is not a valid domain name after the rewrite is SERVFAIL,
/// and the query goes no further (name_test.go, TestRewriteIllegalName).
#[test]
fn an_invalid_name_after_rewrite_is_servfail() {
    let (seen, got) = ask(
        r"rewrite name regex (.*)\.example\.org\. {1}..bad.",
        "www.example.org.",
        rtype::A,
        class::IN,
        &[],
    );
    assert_eq!(seen, None);
    assert_eq!(got.rcode, Rcode::SERVFAIL);
    assert_eq!(got.question, "www.example.org.");
}

/// A later plugin that suspends for an upstream exchange sees the rewritten query again
/// when it resumes (the chain asks rewrite again), and the client still gets its own
/// question and names back.
#[test]
fn the_rewritten_query_survives_an_upstream_exchange() {
    let backend = Arc::new(Backend {
        upstream: true,
        ..Backend::new(&["@ 9 A 10.0.0.2"])
    });
    let got = exchange(
        rewrite("rewrite name exact www.example.com. web.default.svc.cluster.local.").unwrap(),
        backend.clone(),
        &query("WWW.example.com.", rtype::A, class::IN, Some(&[])),
    );
    assert_eq!(backend.seen.lock().unwrap()[0].name, "web.default.svc.cluster.local.");
    // The question as the client spelled it (reverter.go restores the original question).
    assert_eq!(got.question, "WWW.example.com.");
    assert_eq!(got.answer, ["WWW.example.com. 9 IN A 10.0.0.2"]);
}

/// Queries no rule matches pass on untouched, and the reply is left as written.
#[test]
fn no_match_passes_the_query_on_unchanged() {
    let (seen, got) = ask(
        "rewrite name exact a.example. b.example.",
        "Other.Example.",
        rtype::A,
        class::IN,
        &["@ 3 A 10.0.0.3"],
    );
    assert_eq!(seen.unwrap().name, "Other.Example.");
    assert_eq!(got.answer, ["Other.Example. 3 IN A 10.0.0.3"]);
}

/// Start-up errors in CoreDNS's words (rewrite_test.go TestNewRule, name_test.go
/// TestNewNameRule, ttl_test.go TestNewTTLRule, rcode_test.go TestNewRCodeRule).
#[test]
fn setup_errors() {
    let long = format!("rewrite name regex {} x", "a".repeat(10_001));
    let cases = [
        ("rewrite", "rewrite: no rule type specified for rewrite"),
        ("rewrite continue", "rewrite: continue rule must begin with a rule type"),
        ("rewrite name a", "rewrite: too few arguments for a name rule"),
        (
            "rewrite answer auto",
            "rewrite: response rewrites must begin with a name rule",
        ),
        ("rewrite foo a b", "rewrite: invalid rule type \"foo\""),
        ("rewrite type A", "rewrite: type rules must have exactly two arguments"),
        ("rewrite type A XYZ", "rewrite: invalid type \"XYZ\""),
        ("rewrite class IN XX", "rewrite: invalid class \"XX\""),
        (
            "rewrite name fuzzy a b",
            "rewrite: name rule supports only exact, prefix, suffix, substring, and regex name matching, received: fuzzy",
        ),
        ("rewrite name regex ( b", "rewrite: invalid regex matching pattern: ("),
        (
            "rewrite name regex (a) {1}.{2}",
            "rewrite: the rewrite regex pattern ({1}.{2}) uses more subexpressions than its corresponding matching regex pattern ((a))",
        ),
        (
            "rewrite name suffix a b answer",
            "rewrite: invalid arguments for suffix rule",
        ),
        (
            "rewrite name suffix a b foo bar",
            "rewrite: exceeded the number of arguments for a non-answer rule argument for suffix rule",
        ),
        (
            "rewrite name regex (a) b answer auto answer name x y",
            "rewrite: auto name answer rule cannot be combined with explicit name anwer rules",
        ),
        ("rewrite edns0 local", "rewrite: too few arguments for an EDNS0 rule"),
        ("rewrite edns0 local foo 1 2", "rewrite: invalid action: \"foo\""),
        (
            "rewrite edns0 local set 0xffee",
            "rewrite: EDNS0 local rules require three or four args",
        ),
        (
            "rewrite edns0 local set 0xffee {dummy}",
            "rewrite: unsupported variable name \"{dummy}\"",
        ),
        (
            "rewrite edns0 subnet set 33 56",
            "rewrite: invalid IPv4 bit mask length 33",
        ),
        (
            "rewrite edns0 subnet set 24 129",
            "rewrite: invalid IPv6 bit mask length 129",
        ),
        (
            "rewrite edns0 nsid set x",
            "rewrite: EDNS0 NSID rules can accept no more than one arg",
        ),
        ("rewrite ttl a", "rewrite: too few (1) arguments for a ttl rule"),
        ("rewrite ttl a x", "rewrite: invalid TTL 'x' for a ttl rule"),
        ("rewrite ttl a 20-10", "rewrite: invalid TTL '20-10' for a ttl rule"),
        (
            "rewrite ttl fuzzy a 1",
            "rewrite: ttl rule supports only exact, prefix, suffix, substring, and regex name matching",
        ),
        (
            "rewrite rcode a NOERROR",
            "rewrite: too few (2) arguments for a rcode rule",
        ),
        (
            "rewrite rcode a 24 0",
            "rewrite: invalid matching RCODE '24' for a rcode rule",
        ),
        (
            "rewrite rcode a 0 FOO",
            "rewrite: invalid replacement RCODE 'FOO' for a rcode rule",
        ),
        (&long, "rewrite: regex pattern too long: 10001 > 10000"),
    ];
    for (line, want) in cases {
        let err = rewrite(&format!("    {line}")).err().map(|e| e.to_string());
        assert_eq!(err, Some(format!("Corefile:2 - {want}")), "{line}");
    }
    // The accepted forms of rewrite_test.go TestNewRule.
    for line in [
        "rewrite name a.com b.com",
        "rewrite stop name a.com b.com",
        "rewrite continue name a.com b.com",
        "rewrite type any a",
        "rewrite class ch in",
        "rewrite edns0 local set 0xffee abcdefg",
        "rewrite edns0 local append 0xffee abcdefg revert",
        "rewrite edns0 local replace 0xffee {server_port} revert",
        "rewrite edns0 nsid append",
        "rewrite edns0 subnet replace 24 56 revert",
        "rewrite edns0 local unset 0xffee",
        "rewrite ttl regex (.*)\\.coredns\\.rocks 15",
        "rewrite rcode regex (.*)\\.coredns\\.rocks SERVFAIL NOERROR",
    ] {
        assert!(rewrite(&format!("    {line}")).is_ok(), "{line}");
    }
}

/// The rules with their wire forms taken away: everything goes the text way.
fn text_only(mut rw: Rewrite) -> Rewrite {
    for r in &mut rw.rules {
        if let Kind::Name(n) = &mut r.kind {
            n.wire = None;
        }
    }
    rw
}

/// The wire way of `exact` and `suffix` rules (fast.rs, and the reply's question put
/// back in place) answers what the text way answers, names aside from their case (the
/// in-place question keeps the client's spelling). The rules are CoreDNS's README
/// "Name Field Rewrites" shapes; the replies have names from the question, names
/// below it, names a rule maps back that are not from it (the text way's), pointers
/// into the middle of the question (an SOA-like owner), and non-plain labels.
#[test]
fn the_wire_way_answers_as_the_text_way() {
    let rules = [
        "rewrite name suffix .team-a.example. .team-a.svc.cluster.local. answer auto",
        "rewrite name suffix a.example. b.svc.cluster.local. answer auto",
        "rewrite name suffix .example. .svc.cluster.local.",
        "rewrite name exact web.exact.example. web.team-a.svc.cluster.local.",
        "rewrite name suffix .one. .svc.cluster.local. answer auto\nrewrite name exact web.two. web.svc.cluster.local.",
        "rewrite continue name suffix .one. .svc.cluster.local. answer auto",
        "rewrite name suffix .example. . answer auto",
        "rewrite name suffix example. svc. answer auto",
    ];
    let questions = [
        "web.team-a.example.",
        "WEB.Team-A.example.",
        "web.exact.example.",
        "web.team-b.example.",
        "x.one.",
        "web.two.",
        "example.",
        "a\\.b.team-a.example.",
        // Escapes where the suffix starts: the text ends with it, the wire does not
        // (CoreDNS matches the text).
        "x\\.team-a.example.",
        "x\\.example.",
        "b\\.a.example.",
        "x\\000a.example.",
        "web.nope.",
    ];
    let replies: [&[&str]; 6] = [
        &["@ 5 A 10.0.0.1"],
        // A pointer past the question (the A's owner to the CNAME's target) moves.
        &["@ 5 CNAME other.example.net.", "other.example.net. 5 A 10.0.0.6"],
        &[
            "@ 5 CNAME other.team-a.svc.cluster.local.",
            "other.team-a.svc.cluster.local. 5 A 10.0.0.2",
        ],
        &["@ 5 A 10.0.0.1", "AUTH cluster.local. 5 A 10.0.0.9"],
        &["x.web.team-a.svc.cluster.local. 5 A 10.0.0.3", "EXTRA @ 5 A 10.0.0.4"],
        &[
            "@ 5 SRV 0 1 80 web.team-a.svc.cluster.local.",
            "web.svc.cluster.local. 5 A 10.0.0.5",
        ],
    ];
    let lower = |g: &Got| {
        format!(
            "{} {} {:?} {:?} {:?}",
            g.question.to_ascii_lowercase(),
            g.qtype,
            g.rcode,
            g.answer.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>(),
            g.additional.iter().map(|s| s.to_ascii_lowercase()).collect::<Vec<_>>()
        )
    };
    for rule in rules {
        for question in questions {
            for records in replies {
                let raw = query(question, rtype::A, class::IN, Some(&[]));
                let (b1, b2) = (Arc::new(Backend::new(records)), Arc::new(Backend::new(records)));
                let fast = exchange(rewrite(rule).unwrap(), b1.clone(), &raw);
                let text = exchange(text_only(rewrite(rule).unwrap()), b2.clone(), &raw);
                let seen = |b: &Backend| b.seen.lock().unwrap().first().map(|s| s.name.to_ascii_lowercase());
                assert_eq!(
                    seen(&b1),
                    seen(&b2),
                    "{rule} / {question} / {records:?}: the query passed on"
                );
                assert_eq!(lower(&fast), lower(&text), "{rule} / {question} / {records:?}");
                assert_eq!(fast.question, question, "{rule} / {question}: the client's question");
            }
        }
    }
}

/// `metadata` for the root zone, and a provider of `test/label` (its value per query
/// name: `web.` has `v1`, `empty.` an empty value, the rest none).
struct MetaBlock {
    zones: Vec<crate::dns::Zone>,
}

impl Handler for MetaBlock {
    fn name(&self) -> &'static str {
        "metadata"
    }
    fn serve(&self, _: &mut Query<'_, '_>) -> Step {
        Step::Next
    }
    fn metadata_zones(&self) -> Option<&[crate::dns::Zone]> {
        Some(&self.zones)
    }
    fn provides_metadata(&self) -> bool {
        true
    }
    fn metadata(&self, q: &Query<'_, '_>, label: &str, out: &mut String) -> bool {
        match (label, q.req.qname.to_string().as_str()) {
            ("test/label", "web.") => {
                out.push_str("v1");
                true
            }
            ("test/label", "empty.") => true,
            _ => false,
        }
    }
}

/// CoreDNS README, "EDNS0 Options": with `metadata`, `{plugin/label}` is the label's
/// value; edns0.go's edns0VariableRule.ruleData: no value (or an empty one) leaves the
/// query alone (RewriteIgnored), as does a block without `metadata`.
#[test]
fn edns0_metadata_variables() {
    let rule = "rewrite edns0 local set 0xffee {test/label}";
    let seen = |name: &str, with_meta: bool| {
        let backend = Arc::new(Backend::new(&[]));
        let front: Vec<Arc<dyn Handler>> = if with_meta {
            vec![Arc::new(MetaBlock {
                zones: vec![crate::dns::Zone::root()],
            })]
        } else {
            Vec::new()
        };
        let raw = query(name, rtype::A, class::IN, Some(&[]));
        exchange_after(front, rewrite(rule).unwrap(), backend.clone(), &raw);
        backend.seen.lock().unwrap()[0].options.clone()
    };
    assert_eq!(seen("web.", true), [(0xffee, b"v1".to_vec())]);
    assert_eq!(seen("empty.", true), []);
    assert_eq!(seen("other.", true), []);
    assert_eq!(seen("web.", false), []);
    // A label needs a plugin part and a name part (metadata.IsLabel).
    assert!(rewrite("rewrite edns0 local set 0xffee {/kubernetes/client-namespace}").is_err());
}

/// The server behind `rewrite` in CoreDNS's cname_target_test.go: the reply of the
/// plugin after rewrite (the test's answer for the client's name) and the lookups of
/// its MockedUpstream (by name; a `!` first: TC set).
struct Named(Vec<(&'static str, Vec<&'static str>)>);

impl Handler for Named {
    fn name(&self) -> &'static str {
        "named"
    }
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        let name = q.req.qname.to_string();
        let records = self.0.iter().find(|(n, _)| *n == name).map_or(&[][..], |(_, r)| &r[..]);
        let truncated = records.first() == Some(&"!");
        let records: Vec<&str> = records
            .iter()
            .copied()
            .filter(|r| *r != "!")
            .filter(|r| {
                // MockedUpstream answers xyz.example.com. by the question's type.
                let t = r.split_whitespace().nth(2).unwrap_or("");
                !matches!((t, q.req.qtype), ("A", rtype::AAAA) | ("AAAA", rtype::A))
            })
            .collect();
        let step = Backend::new(&records).answer(q);
        if truncated {
            q.resp.set_flag(crate::dns::flag::TC, true);
        }
        step
    }
}

/// What the server answers for `raw`: the chain run, and every lookup the chain asks of
/// the server itself (`cname` rules) answered by running the chain again, except those
/// for a name in `lost` (they time out).
fn through_server(chain: &Chain, raw: &[u8], depth: usize, lost: &[&str]) -> Vec<u8> {
    assert!(depth < 4, "lookups through the server loop");
    let a = "192.0.2.7:5353".parse().unwrap();
    let l = "127.0.0.1:53".parse().unwrap();
    let req = Request::parse(raw, Transport::Udp, a, l).ok().unwrap();
    let mut resp = Response::new();
    let mut worker = WorkerCtx::new(0);
    let route = RouteTag {
        slot: 0,
        server: "dns://:53".into(),
        zone: ".".into(),
    };
    let mut q = Query {
        req: &req,
        resp: &mut resp,
        worker: &mut worker,
        route: &route,
        answered_by: "",
        error: None,
        refresh: false,
        coalesce: true,
        meta: chain.metadata(),
    };
    let mut outcome = chain.run(&mut q, 0);
    loop {
        match outcome {
            Outcome::Reply { at } => {
                chain.complete(&mut q, at);
                return q.resp.bytes().to_vec();
            }
            Outcome::Upstream { at, request } => {
                assert_eq!(request.to, l, "the lookup goes to the server itself");
                let msg = q.worker.upstream_msg.clone();
                let asked = Request::parse(&msg, Transport::Udp, a, l)
                    .ok()
                    .unwrap()
                    .qname
                    .to_string();
                if lost.contains(&asked.as_str()) {
                    outcome = chain.resume(&mut q, at, UpstreamReply::Timeout, request.cookie);
                    continue;
                }
                let reply = through_server(chain, &msg, depth + 1, lost);
                outcome = chain.resume(&mut q, at, UpstreamReply::Message(&reply), request.cookie);
            }
        }
    }
}

/// CoreDNS cname_target_test.go, TestCNameTargetRewrite: its seven `continue cname`
/// rules, its answers and its MockedUpstream, and the answer and TC bit the client
/// gets for each of its eight queries.
#[test]
fn cname_rules_follow_coredns_test_cname_target_rewrite() {
    let rules = r"
    rewrite continue cname exact def.example.com xyz.example.com
    rewrite continue cname prefix chat.openai.com bard.google.com
    rewrite continue cname suffix uvw. xyz.
    rewrite continue cname substring efgh zzzz.www
    rewrite continue cname regex (.*)\.web\.(.*)\.site\. {1}.webapp.{2}.org.
    rewrite continue cname exact music.truncated.spotify.com. music.truncated.spotify.com.
    rewrite continue cname suffix prod. staging.";
    let upstream = [
        (
            "xyz.example.com.",
            vec!["@ 3600 A 3.4.5.6", "@ 3600 AAAA 3a01:7e00::f03c:91ff:fe79:234c"],
        ),
        ("bard.google.com.cdn.cloudflare.net.", vec!["@ 1800 A 9.7.2.1"]),
        ("www.hosting.xyz.", vec!["@ 500 A 20.30.40.50"]),
        ("abcd.zzzz.www.pqrst.", vec!["@ 120 A 101.20.5.1", "@ 120 A 101.20.5.2"]),
        ("orders.webapp.eu.org.", vec!["@ 120 A 20.0.0.9"]),
        ("music.truncated.spotify.com.", vec!["!", "@ 120 A 10.1.0.9"]),
        (
            "intermediate-2.staging.",
            vec!["@ 200 CNAME final.staging.net.", "final.staging.net. 120 A 5.6.7.8"],
        ),
    ];
    type Case = (&'static str, u16, Vec<&'static str>, Vec<&'static str>, bool);
    let cases: Vec<Case> = vec![
        (
            "abc.example.com.",
            rtype::A,
            vec!["@ 5 CNAME def.example.com.", "def.example.com. 5 A 1.2.3.4"],
            vec![
                "abc.example.com. 5 IN CNAME xyz.example.com.",
                "xyz.example.com. 3600 IN A 3.4.5.6",
            ],
            false,
        ),
        (
            "abc.example.com.",
            rtype::AAAA,
            vec![
                "@ 5 CNAME def.example.com.",
                "def.example.com. 5 AAAA 2a01:7e00::f03c:91ff:fe79:234c",
            ],
            vec![
                "abc.example.com. 5 IN CNAME xyz.example.com.",
                "xyz.example.com. 3600 IN AAAA 3a01:7e00::f03c:91ff:fe79:234c",
            ],
            false,
        ),
        (
            "chat.openai.com.",
            rtype::A,
            vec![
                "@ 20 CNAME chat.openai.com.cdn.cloudflare.net.",
                "chat.openai.com.cdn.cloudflare.net. 30 A 23.2.1.2",
                "chat.openai.com.cdn.cloudflare.net. 30 A 24.6.0.8",
            ],
            vec![
                "chat.openai.com. 20 IN CNAME bard.google.com.cdn.cloudflare.net.",
                "bard.google.com.cdn.cloudflare.net. 1800 IN A 9.7.2.1",
            ],
            false,
        ),
        (
            "coredns.io.",
            rtype::A,
            vec!["@ 100 CNAME www.hosting.uvw.", "www.hosting.uvw. 200 A 7.2.3.4"],
            vec![
                "coredns.io. 100 IN CNAME www.hosting.xyz.",
                "www.hosting.xyz. 500 IN A 20.30.40.50",
            ],
            false,
        ),
        (
            "core.dns.rocks.",
            rtype::A,
            vec!["@ 200 CNAME abcd.efgh.pqrst.", "abcd.efgh.pqrst. 100 A 200.30.45.67"],
            vec![
                "core.dns.rocks. 200 IN CNAME abcd.zzzz.www.pqrst.",
                "abcd.zzzz.www.pqrst. 120 IN A 101.20.5.1",
                "abcd.zzzz.www.pqrst. 120 IN A 101.20.5.2",
            ],
            false,
        ),
        (
            "order.service.eu.",
            rtype::A,
            vec!["@ 200 CNAME orders.web.eu.site.", "orders.web.eu.site. 50 A 10.10.15.1"],
            vec![
                "order.service.eu. 200 IN CNAME orders.webapp.eu.org.",
                "orders.webapp.eu.org. 120 IN A 20.0.0.9",
            ],
            false,
        ),
        (
            "music.spotify.com.",
            rtype::A,
            vec!["@ 200 CNAME music.truncated.spotify.com."],
            vec![
                "music.spotify.com. 200 IN CNAME music.truncated.spotify.com.",
                "music.truncated.spotify.com. 120 IN A 10.1.0.9",
            ],
            true,
        ),
        (
            "cname-chain.org.",
            rtype::A,
            vec![
                "@ 200 CNAME intermediate-1.com.",
                "intermediate-1.com. 200 CNAME intermediate-2.prod.",
                "intermediate-2.prod. 200 CNAME final.prod.net.",
                "final.prod.net. 120 A 1.2.3.4",
            ],
            vec![
                "cname-chain.org. 200 IN CNAME intermediate-1.com.",
                "intermediate-1.com. 200 IN CNAME intermediate-2.staging.",
                "intermediate-2.staging. 200 IN CNAME final.staging.net.",
                "final.staging.net. 120 IN A 5.6.7.8",
            ],
            false,
        ),
    ];
    for (name, qtype, answer, expected, truncated) in cases {
        let mut table = vec![(name, answer)];
        table.extend(upstream.iter().cloned());
        let chain = Chain::new(vec![Arc::new(rewrite(rules).unwrap()), Arc::new(Named(table))]);
        let reply = through_server(&chain, &query(name, qtype, class::IN, None), 0, &[]);
        let msg = Message::from_octets(reply).unwrap();
        assert_eq!(testkit::wire::section(&msg, "answer"), expected, "{name} {qtype}");
        assert_eq!(msg.header().tc(), truncated, "{name} {qtype}: TC");
        assert_eq!(
            format!("{}.", msg.first_question().unwrap().qname()),
            name,
            "{name}: the client's question"
        );
    }
}

/// cname_target_test.go, TestCNAMETargetRewrite_upstreamFailurePaths: when the lookup of
/// the new target fails, the reply is left as it was (the old target). Here the
/// server's own pass for the new target times out; when it answers, even with nothing,
/// the target is rewritten (CoreDNS appends the lookup's empty answer).
#[test]
fn a_failed_cname_lookup_leaves_the_reply_as_it_was() {
    let rule = "rewrite stop cname exact bad.target. good.target.";
    let chain = Chain::new(vec![
        Arc::new(rewrite(rule).unwrap()),
        Arc::new(Named(vec![("bad.test.", vec!["@ 60 CNAME bad.target."])])),
    ]);
    let raw = query("bad.test.", rtype::A, class::IN, None);
    let answer = |lost: &[&str]| {
        let msg = Message::from_octets(through_server(&chain, &raw, 0, lost)).unwrap();
        testkit::wire::section(&msg, "answer")
    };
    assert_eq!(answer(&["good.target."]), ["bad.test. 60 IN CNAME bad.target."]);
    assert_eq!(answer(&[]), ["bad.test. 60 IN CNAME good.target."]);
}

/// TestNewCNAMERuleLargeRegex, TestNewCNAMERuleNormalization and newCNAMERule's errors.
#[test]
fn cname_rule_setup() {
    let long = format!("rewrite cname regex {} x", "a".repeat(10_001));
    let err = rewrite(&long).err().unwrap().to_string();
    assert!(
        err.contains("regex pattern too long in a cname rule: 10001 > 10000"),
        "{err}"
    );
    let err = rewrite("rewrite cname foo a b").err().unwrap().to_string();
    assert!(err.contains("unknown cname rewrite type: foo"), "{err}");
    let err = rewrite("rewrite cname a").err().unwrap().to_string();
    assert!(err.contains("too few (1) arguments for a cname rule"), "{err}");
    let Kind::Cname(r) = &rewrite("rewrite cname exact newyork.foo.com vpce-123.amazonaws.com")
        .unwrap()
        .rules[0]
        .kind
    else {
        panic!("not a cname rule")
    };
    let mut out = text::Text::new();
    assert!(r.target("newyork.foo.com.", &mut out));
    assert_eq!(out.as_str(), "vpce-123.amazonaws.com.");
}
