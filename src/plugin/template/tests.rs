//! Behaviour tables: each case is a Corefile fragment, a question and the reply CoreDNS
//! gives, traced to the README example or the test of CoreDNS's plugin/template
//! (v1.14) that pins it (cited per case). `next` means the query went on to the next
//! plugin (CoreDNS's tests: `rcodeFallthrough`).

use std::sync::Arc;

use domain::base::{Message, ParsedName};
use domain::rdata::AllRecordData;

use super::*;
use crate::chain::{Chain, Outcome, Query, RouteTag, WorkerCtx};
use crate::config::parse_str;
use crate::dns::{NameKey, QueryBuilder, Request, Response, Transport};
use crate::process::ProcessState;

/// Answers every query it gets, so that a test can tell a query passed on.
struct Next;
impl Handler for Next {
    fn name(&self) -> &'static str {
        "next"
    }
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        q.resp.start(q.req, Rcode::NOERROR);
        Step::Answered
    }
    fn handles_class(&self, _: u16) -> bool {
        true
    }
}

/// A metadata provider with fixed labels (CoreDNS's tests set them in the context).
struct Labels(&'static [(&'static str, &'static str)]);
impl Handler for Labels {
    fn name(&self) -> &'static str {
        "labels"
    }
    fn serve(&self, _: &mut Query<'_, '_>) -> Step {
        Step::Next
    }
    fn provides_metadata(&self) -> bool {
        true
    }
    fn metadata(&self, _: &Query<'_, '_>, label: &str, out: &mut String) -> bool {
        match self.0.iter().find(|(k, _)| *k == label) {
            Some((_, v)) => {
                out.push_str(v);
                true
            }
            None => false,
        }
    }
}

fn ctx_zones() -> Vec<Zone> {
    vec![Zone::root()]
}

/// Runs `template`'s setup over the `template` lines of `body` (a server block's body).
fn setup_body(body: &str) -> Result<Plugin, ConfigError> {
    let corefile = format!(". {{\n{body}\n}}\n");
    let parsed = parse_str(&corefile, "Corefile", std::path::Path::new("."))?;
    let dirs: Vec<&Directive> = parsed.blocks[0]
        .directives
        .iter()
        .filter(|d| d.name.text == NAME)
        .collect();
    let zones = ctx_zones();
    let ctx = SetupCtx {
        zones: &zones,
        config_dir: ".".into(),
        workers: 1,
        binds: None,
        process: &ProcessState::new(),
    };
    setup(&dirs, &ctx)
}

/// What came back, in CoreDNS test terms.
#[derive(Debug, PartialEq)]
struct Reply {
    /// The rcode's name, or `next`.
    rcode: String,
    aa: bool,
    answer: Vec<String>,
    authority: Vec<String>,
    additional: Vec<String>,
    /// The Extended DNS Error option: info code and text.
    ede: Option<(u16, String)>,
}

fn rrs<'m>(
    section: impl Iterator<Item = Result<domain::base::ParsedRecord<'m, Vec<u8>>, domain::base::wire::ParseError>>,
) -> Vec<String> {
    section
        .filter_map(|rr| {
            let rr = rr.unwrap();
            if rr.rtype() == domain::base::Rtype::OPT {
                return None;
            }
            let rr = rr.into_any_record::<AllRecordData<_, ParsedName<_>>>().unwrap();
            Some(rr.to_string().split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect()
}

struct Ask<'a> {
    qname: &'a str,
    qtype: u16,
    qclass: u16,
    client: &'a str,
    edns: bool,
    labels: &'static [(&'static str, &'static str)],
}

fn ask_a(qname: &str) -> Ask<'_> {
    Ask {
        qname,
        qtype: rtype::A,
        qclass: class::IN,
        client: "10.240.0.1:40000",
        edns: false,
        labels: &[],
    }
}

fn run(body: &str, a: &Ask<'_>) -> Reply {
    let (next, bytes) = run_bytes(body, a);
    let msg = Message::from_octets(bytes.clone()).unwrap();
    let ede = ede_of(&bytes);
    Reply {
        rcode: if next {
            "next".into()
        } else {
            Rcode(msg.header().rcode().to_int() as u16).name().into_owned()
        },
        aa: msg.header().aa(),
        answer: rrs(msg.answer().unwrap()),
        authority: rrs(msg.authority().unwrap()),
        additional: rrs(msg.additional().unwrap()),
        ede,
    }
}

/// Whether the query went on to the next plugin, and the reply's bytes.
fn run_bytes(body: &str, a: &Ask<'_>) -> (bool, Vec<u8>) {
    let plugin = setup_body(body).unwrap_or_else(|e| panic!("{body}: {e}"));
    let template = plugin.handler.unwrap();
    let metadata = crate::plugin::metadata::setup(
        &[
            &crate::config::parse_str(". {\n metadata\n}\n", "Corefile", std::path::Path::new("."))
                .unwrap()
                .blocks[0]
                .directives[0],
        ],
        &SetupCtx {
            zones: &ctx_zones(),
            config_dir: ".".into(),
            workers: 1,
            binds: None,
            process: &ProcessState::new(),
        },
    )
    .unwrap()
    .handler
    .unwrap();
    let chain = Chain::new(vec![metadata, Arc::new(Labels(a.labels)), template, Arc::new(Next)]);
    let name = NameKey::from_text(a.qname).unwrap();
    let mut b = QueryBuilder::new(name.wire(), a.qtype).class(a.qclass);
    if a.edns {
        b = b.edns(1232);
    }
    let raw = b.to_vec();
    let client = a.client.parse().unwrap();
    let local = "127.0.0.1:53".parse().unwrap();
    let (next, bytes) = crate::chain::testing::with_query_to(&raw, client, local, chain.metadata(), |q| {
        // A CNAME's target is asked of the server; here nobody answers (CoreDNS's
        // template_test "CNAMEWithoutUpstream": the CNAME alone).
        let at = match chain.run(q, 0) {
            Outcome::Reply { at } => at,
            Outcome::Upstream { at, request } => {
                match chain.resume(q, at, crate::chain::UpstreamReply::Timeout, request.cookie) {
                    Outcome::Reply { at } => at,
                    _ => panic!("upstream twice"),
                }
            }
            #[allow(unreachable_patterns)]
            _ => panic!("no reply"),
        };
        chain.complete(q, at);
        (q.answered_by == "next", q.resp.bytes().to_vec())
    });
    (next, bytes)
}

/// The EDE option of a reply's OPT record (RFC 8914 2: option 15, info code, text).
fn ede_of(msg: &[u8]) -> Option<(u16, String)> {
    use crate::dns::wire::{get_u16, skip_name, skip_record};
    let counts = crate::dns::Header::of(msg)?.counts();
    let mut at = skip_name(msg, 12)? + 4;
    for i in 0..(counts[1] + counts[2] + counts[3]) {
        let after = skip_name(msg, at)?;
        if i >= counts[1] + counts[2] && get_u16(msg, after)? == rtype::OPT {
            let len = get_u16(msg, after + 8)? as usize;
            let opts = &msg[after + 10..after + 10 + len];
            let mut o = 0;
            while o + 4 <= opts.len() {
                let code = get_u16(opts, o)?;
                let n = get_u16(opts, o + 2)? as usize;
                let data = &opts[o + 4..o + 4 + n];
                if code == 15 {
                    return Some((get_u16(data, 0)?, String::from_utf8_lossy(&data[2..]).into_owned()));
                }
                o += 4 + n;
            }
        }
        at = skip_record(msg, at)?;
    }
    None
}

fn rcode(body: &str, a: &Ask<'_>) -> String {
    run(body, a).rcode
}

fn answer(body: &str, a: &Ask<'_>) -> Vec<String> {
    let r = run(body, a);
    assert_eq!(r.rcode, "NOERROR", "{body}");
    assert!(
        r.aa,
        "template replies are authoritative (template.go: msg.Authoritative = true)"
    );
    r.answer
}

const IP_A: &str = r#"template IN A example {
  match (^|[.])ip-(?P<a>[0-9]*)-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
  answer "{{ .Name }} 60 IN A {{ .Group.a }}.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
  fallthrough
}
template IN PTR in-addr.arpa {
  match ^(?P<d>[0-9]*)[.](?P<c>[0-9]*)[.](?P<b>[0-9]*)[.](?P<a>[0-9]*)[.]in-addr[.]arpa[.]$
  answer "{{ .Name }} 60 IN PTR ip-{{ .Group.a }}-{{ .Group.b }}-{{ .Group.c }}-{{ .Group.d }}.example."
}"#;

#[test]
fn readme_examples_answer_as_documented() {
    // README "Resolve everything to NXDOMAIN".
    let r = run("template ANY ANY {\n rcode NXDOMAIN\n}", &ask_a("anything.at.all."));
    assert_eq!((r.rcode.as_str(), r.aa, r.answer.len()), ("NXDOMAIN", true, 0));

    // README "Resolve .invalid as NXDOMAIN": NXDOMAIN, a SOA in authority, EDE 21; in
    // class CH the SOA is CH too (point 3 of the example).
    let invalid = r#"template ANY ANY invalid {
  rcode NXDOMAIN
  authority "invalid. 60 {{ .Class }} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)"
  ederror 21 "Blocked according to RFC2606"
}"#;
    let mut a = ask_a("foo.invalid.");
    a.edns = true;
    let r = run(invalid, &a);
    assert_eq!(r.rcode, "NXDOMAIN");
    assert_eq!(
        r.authority,
        ["invalid. 60 IN SOA ns.invalid. hostmaster.invalid. 1 60 60 60 60"]
    );
    assert_eq!(r.ede, Some((21, "Blocked according to RFC2606".into())));
    a.qclass = class::CH;
    assert_eq!(
        run(invalid, &a).authority,
        ["invalid. 60 CH SOA ns.invalid. hostmaster.invalid. 1 60 60 60 60"]
    );
    // Outside the template's zone: the next plugin.
    assert_eq!(rcode(invalid, &ask_a("example.org.")), "next");

    // README "Block invalid search domain completions", zone form and regex form.
    let zone_form = r#"template IN ANY example.com.dc1.example.com {
  rcode NXDOMAIN
  authority "{{ .Zone }} 60 IN SOA ns.example.com hostmaster.example.com (1 60 60 60 60)"
}"#;
    let r = run(zone_form, &ask_a("something.example.com.dc1.example.com."));
    assert_eq!(r.rcode, "NXDOMAIN");
    assert_eq!(
        r.authority,
        ["example.com.dc1.example.com. 60 IN SOA ns.example.com. hostmaster.example.com. 1 60 60 60 60"]
    );
    let regex_form = r#"template IN ANY example.com {
  match "example\.com\.(dc1\.example\.com\.)$"
  rcode NXDOMAIN
  authority "{{ index .Match 1 }} 60 IN SOA ns.{{ index .Match 1 }} hostmaster.{{ index .Match 1 }} (1 60 60 60 60)"
  fallthrough
}"#;
    let r = run(regex_form, &ask_a("something.example.com.dc1.example.com."));
    assert_eq!(r.rcode, "NXDOMAIN");
    assert_eq!(
        r.authority,
        ["dc1.example.com. 60 IN SOA ns.dc1.example.com. hostmaster.dc1.example.com. 1 60 60 60 60"]
    );
    assert_eq!(rcode(regex_form, &ask_a("www.example.com.")), "next");

    // README "Resolve A/PTR for .example" (and the note: a wildcard for subdomains).
    assert_eq!(
        answer(IP_A, &ask_a("ip-10-1-2-3.example.")),
        ["ip-10-1-2-3.example. 60 IN A 10.1.2.3"]
    );
    assert_eq!(
        answer(IP_A, &ask_a("x.ip-10-1-2-3.example.")),
        ["x.ip-10-1-2-3.example. 60 IN A 10.1.2.3"]
    );
    let mut ptr = ask_a("3.2.1.10.in-addr.arpa.");
    ptr.qtype = rtype::PTR;
    assert_eq!(
        answer(IP_A, &ptr),
        ["3.2.1.10.in-addr.arpa. 60 IN PTR ip-10-1-2-3.example."]
    );
    // An A template does not take AAAA (template.go match: type check): next plugin.
    let mut aaaa = ask_a("ip-10-1-2-3.example.");
    aaaa.qtype = rtype::AAAA;
    assert_eq!(rcode(IP_A, &aaaa), "next");

    // README "Resolve hexadecimal ip pattern using parseInt"; template_test.go
    // "ExampleDomainMatchHexIp" (ip0a5f0c09 -> 10.95.12.9).
    let hex = r#"template IN A example {
  match "^ip0a(?P<b>[a-f0-9]{2})(?P<c>[a-f0-9]{2})(?P<d>[a-f0-9]{2})[.]example[.]$"
  answer "{{ .Name }} 60 IN A 10.{{ parseInt .Group.b 16 8 }}.{{ parseInt .Group.c 16 8 }}.{{ parseInt .Group.d 16 8 }}"
  fallthrough
}"#;
    assert_eq!(
        answer(hex, &ask_a("ip0a5f0c09.example.")),
        ["ip0a5f0c09.example. 60 IN A 10.95.12.9"]
    );

    // README "Resolve multiple ip patterns": the first regex that matches wins.
    let multi = r#"template IN A example {
  match "^ip-(?P<a>10)-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]dc[.]example[.]$"
  match "^(?P<a>[0-9]*)[.](?P<b>[0-9]*)[.](?P<c>[0-9]*)[.](?P<d>[0-9]*)[.]ext[.]example[.]$"
  answer "{{ .Name }} 60 IN A {{ .Group.a}}.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
  fallthrough
}"#;
    assert_eq!(
        answer(multi, &ask_a("ip-10-1-2-3.dc.example.")),
        ["ip-10-1-2-3.dc.example. 60 IN A 10.1.2.3"]
    );
    assert_eq!(
        answer(multi, &ask_a("1.2.3.4.ext.example.")),
        ["1.2.3.4.ext.example. 60 IN A 1.2.3.4"]
    );

    // README "Adding authoritative nameservers"; template_test.go "ExampleDomainANSMatch".
    let ns = r#"template IN A example {
  match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
  answer "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
  authority  "example. 60 IN NS ns0.example."
  authority  "example. 60 IN NS ns1.example."
  additional "ns0.example. 60 IN A 203.0.113.8"
  additional "ns1.example. 60 IN A 198.51.100.8"
  fallthrough
}
template IN MX example {
  match ^ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
  answer "{{ .Name }} 60 IN MX 10 {{ .Name }}"
  additional "{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
  fallthrough
}"#;
    let r = run(ns, &ask_a("ip-10-95-12-8.example."));
    assert_eq!(r.answer, ["ip-10-95-12-8.example. 60 IN A 10.95.12.8"]);
    assert_eq!(
        r.authority,
        ["example. 60 IN NS ns0.example.", "example. 60 IN NS ns1.example."]
    );
    assert_eq!(
        r.additional,
        ["ns0.example. 60 IN A 203.0.113.8", "ns1.example. 60 IN A 198.51.100.8"]
    );
    let mut mx = ask_a("ip-10-95-12-8.example.");
    mx.qtype = rtype::MX;
    let r = run(ns, &mx);
    // template_test.go "ExampleDomainMXMatch".
    assert_eq!(r.answer, ["ip-10-95-12-8.example. 60 IN MX 10 ip-10-95-12-8.example."]);
    assert_eq!(r.additional, ["ip-10-95-12-8.example. 60 IN A 10.95.12.8"]);

    // README "Fabricate a CNAME"; template_test.go "CNAMEWithoutUpstream" (without an
    // upstream the answer is the CNAME alone).
    let cname =
        "template IN ANY foogle.com {\n match \"^foogle\\.com\\.$\"\n answer \"foogle.com 60 IN CNAME google.com\"\n}";
    assert_eq!(
        answer(cname, &ask_a("foogle.com.")),
        ["foogle.com. 60 IN CNAME google.com."]
    );

    // README "Resolve device addresses for HTTPS on LAN": var, expr with any/incidr.
    let lan = r#"template IN A example.com {
  match ^(?P<ip>[0-9]{1,3}(-[0-9]{1,3}){3})[.](?P<id>[a-z2-7]{26})[.]example[.]com[.]$
  var ip replace(group('ip'), '-', '.')
  expr "any(['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16'], incidr(ip, #))"
  answer "{{ .Name }} 60 IN A {{ .Var.ip }}"
  fallthrough
}"#;
    let id = "abcdefghijklmnopqrstuvwxyz";
    let q = format!("192-168-1-7.{id}.example.com.");
    assert_eq!(answer(lan, &ask_a(&q)), [format!("{q} 60 IN A 192.168.1.7")]);
    // A public address fails the expression: fallthrough to the next plugin.
    assert_eq!(rcode(lan, &ask_a(&format!("8-8-8-8.{id}.example.com."))), "next");
}

#[test]
fn handler_cases_of_coredns_template_test() {
    // template_test.go "ExampleIPMatch": .Remote.
    let remote = "template IN A . {\n answer \"{{ .Name }} 60 IN A {{ .Remote }}\"\n}";
    assert_eq!(
        answer(remote, &ask_a("test.example.")),
        ["test.example. 60 IN A 10.240.0.1"]
    );
    // "RcodeServFail": rcode SERVFAIL is a bare SERVFAIL.
    assert_eq!(
        rcode("template ANY ANY {\n rcode SERVFAIL\n}", &ask_a("test.invalid.")),
        "SERVFAIL"
    );
    // "ExampleDomainNameMismatch": the zone matches, no regex does, no fallthrough: SERVFAIL.
    assert_eq!(
        rcode("template ANY ANY {\n match [.]example[.]$\n}", &ask_a("test.invalid.")),
        "SERVFAIL"
    );
    // "BrokenTemplate": index .Match 2 out of range -> SERVFAIL at query time.
    assert_eq!(
        rcode(
            "template ANY ANY {\n match [.]example[.]$\n answer \"{{ .Name }} 60 IN TXT \\\"{{ index .Match 2 }}\\\"\"\n}",
            &ask_a("test.example.")
        ),
        "SERVFAIL"
    );
    // "BrokenParseIntTemplate".
    assert_eq!(
        rcode(
            "template ANY ANY {\n match [.]example[.]$\n answer \"{{ .Name }} 60 IN TXT \\\"{{ parseInt \\\"gg\\\" 16 8 }}\\\"\"\n}",
            &ask_a("test.example.")
        ),
        "SERVFAIL"
    );
    // "NonRRTemplate" / "NonRRAdditionalTemplate" / "NonRRAuthorityTemplate": a record
    // that does not parse at query time is SERVFAIL.
    for section in ["answer", "additional", "authority"] {
        let body = format!("template ANY ANY {{\n match [.]example[.]$\n {section} \"{{{{ .Name }}}}\"\n}}");
        assert_eq!(rcode(&body, &ask_a("test.example.")), "SERVFAIL", "{section}");
    }
    // "ExampleInvalidNXDOMAIN": NXDOMAIN with the SOA (here in the answer section).
    let r = run(
        "template ANY ANY {\n match [.]invalid[.]$\n rcode NXDOMAIN\n answer \"invalid. 60 {{ .Class }} SOA a.invalid. b.invalid. (1 60 60 60 60)\"\n}",
        &ask_a("test.invalid."),
    );
    assert_eq!(r.rcode, "NXDOMAIN");
    assert_eq!(r.answer, ["invalid. 60 IN SOA a.invalid. b.invalid. 1 60 60 60 60"]);
    // "mdMatch" / "mdMissing": .Meta reads the query's metadata; a missing label is "".
    let md = r#"template ANY ANY {
  match (^|[.])ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$
  answer "{{ .Meta \"foo\" }}-{{ .Name }} 60 IN A 10.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}"
  additional "{{ .Meta \"bar\" }}.example. IN A 203.0.113.8"
  authority "example. IN NS {{ .Meta \"bar\" }}.example.com."
  fallthrough
}"#;
    let mut a = ask_a("ip-10-95-12-8.example.");
    a.labels = &[("foo", "myfoo"), ("bar", "mybar")];
    let r = run(md, &a);
    assert_eq!(r.answer, ["myfoo-ip-10-95-12-8.example. 60 IN A 10.95.12.8"]);
    assert_eq!(r.authority, ["example. 3600 IN NS mybar.example.com."]);
    assert_eq!(r.additional, ["mybar.example. 3600 IN A 203.0.113.8"]);
    let missing = "template ANY ANY {\n answer \"{{ .Meta \\\"foofoo\\\" }}{{ .Name }} 60 IN A 10.95.12.8\"\n}";
    assert_eq!(
        answer(missing, &ask_a("ip-10-95-12-8.example.")),
        ["ip-10-95-12-8.example. 60 IN A 10.95.12.8"]
    );
    // "EDNS error": ederror on NXDOMAIN.
    let mut a = ask_a("test.invalid.");
    a.edns = true;
    let r = run(
        "template ANY ANY {\n rcode NXDOMAIN\n ederror 21 \"Blocked due to RFC2606\"\n}",
        &a,
    );
    assert_eq!(
        (r.rcode.as_str(), r.ede),
        ("NXDOMAIN", Some((21, "Blocked due to RFC2606".into())))
    );
}

#[test]
fn var_cases_of_coredns_var_test() {
    let a = ask_a("a.example.");
    let tpl = |lines: &str| format!("template IN A example. {{\n{lines}\n}}");
    // var_test.go "Constant", "Chained", "QueryFunctions", "BoolInTemplateCondition".
    assert_eq!(
        answer(
            &tpl("var ttl 60\nanswer \"{{ .Name }} {{ .Var.ttl }} IN A 10.0.0.1\""),
            &a
        ),
        ["a.example. 60 IN A 10.0.0.1"]
    );
    assert_eq!(
        answer(
            &tpl(
                "var a 1\nvar b a + 1\nvar c b * 10\nanswer \"{{ .Name }} 60 IN A 10.{{ .Var.a }}.{{ .Var.b }}.{{ .Var.c }}\""
            ),
            &a
        ),
        ["a.example. 60 IN A 10.1.2.20"]
    );
    let r = run(
        &tpl(
            "var n name()\nvar t type()\nvar ip client_ip()\nanswer \"{{ .Var.n }} 60 IN A {{ .Var.ip }}\"\nadditional \"{{ .Var.n }} 60 IN TXT \\\"{{ .Var.t }}\\\"\"",
        ),
        &a,
    );
    assert_eq!(r.answer, ["a.example. 60 IN A 10.240.0.1"]);
    assert_eq!(r.additional, ["a.example. 60 IN TXT \"A\""]);
    assert_eq!(
        answer(
            &tpl(
                "var local incidr(client_ip(), '10.0.0.0/8')\nanswer \"{{ .Name }} 60 IN A {{ if .Var.local }}10.0.0.1{{ else }}192.0.2.1{{ end }}\""
            ),
            &a
        ),
        ["a.example. 60 IN A 10.0.0.1"]
    );
    // "GroupByNameAndIndex".
    assert_eq!(
        answer(
            &tpl(
                "match ^(?P<a>[0-9]+)-(?P<b>[0-9]+)[.]example[.]$\nvar a group('a')\nvar b group(2)\nvar whole group(0)\nanswer \"{{ .Var.whole }} 60 IN A 10.0.{{ .Var.a }}.{{ .Var.b }}\""
            ),
            &ask_a("12-34.example.")
        ),
        ["12-34.example. 60 IN A 10.0.12.34"]
    );
    // "Metadata": metadata('test/region').
    let mut md = ask_a("a.example.");
    md.labels = &[("test/region", "eu")];
    assert_eq!(
        answer(
            &tpl("var region metadata('test/region')\nanswer \"{{ .Var.region }}.{{ .Name }} 60 IN A 10.0.0.1\""),
            &md
        ),
        ["eu.a.example. 60 IN A 10.0.0.1"]
    );
    // "RuntimeError", "RuntimeErrorWithFallthrough": SERVFAIL either way.
    let bad = "var bad incidr('notanip', '10.0.0.0/8')\nanswer \"{{ .Name }} 60 IN A 10.0.0.1\"";
    assert_eq!(rcode(&tpl(bad), &a), "SERVFAIL");
    assert_eq!(rcode(&tpl(&format!("{bad}\nfallthrough")), &a), "SERVFAIL");
    // "NoMatchNoEvaluation": the regex fails first, the variable is never evaluated.
    assert_eq!(
        rcode(&tpl(&format!("match ^b[.]example[.]$\n{bad}\nfallthrough")), &a),
        "next"
    );
}

#[test]
fn expr_cases_of_coredns_expr_test() {
    let a = ask_a("a.example.");
    let tpl =
        |lines: &str| format!("template IN A example. {{\n{lines}\nanswer \"{{{{ .Name }}}} 60 IN A 10.0.0.1\"\n}}");
    let cases: &[(&str, &str)] = &[
        ("expr name() == 'a.example.'", "NOERROR"),           // "True"
        ("expr name() == 'b.example.'", "SERVFAIL"),          // "FalseServfail"
        ("expr name() == 'b.example.'\nfallthrough", "next"), // "FalseFallthrough"
        ("expr name() == 'b.example.'\nfallthrough other.example.", "SERVFAIL"), // "FalseFallthroughZoneMismatch"
        (
            "expr name() == 'a.example.'\nexpr type() == 'A'\nexpr incidr(client_ip(), '10.0.0.0/8')",
            "NOERROR",
        ), // "AllTrue"
        (
            "expr name() == 'a.example.'\nexpr type() == 'A'\nexpr incidr(client_ip(), '192.0.2.0/24')\nfallthrough",
            "next",
        ), // "LastFalse"
        ("expr 1\nfallthrough", "next"),                      // "NonBool"
        ("expr incidr('notanip', '10.0.0.0/8')", "SERVFAIL"), // "RuntimeError"
        (
            "match ^b[.]example[.]$\nexpr incidr('notanip', '10.0.0.0/8')\nfallthrough",
            "next",
        ), // "NoMatchNoEvaluation"
    ];
    for (lines, want) in cases {
        assert_eq!(rcode(&tpl(lines), &a), *want, "{lines}");
    }
    // "FalseFallsToNextTemplate".
    let two = "template IN A example. {\n expr name() == 'b.example.'\n answer \"{{ .Name }} 60 IN A 10.0.0.1\"\n fallthrough\n}\ntemplate IN A example. {\n answer \"{{ .Name }} 60 IN A 10.0.0.2\"\n}";
    assert_eq!(answer(two, &a), ["a.example. 60 IN A 10.0.0.2"]);
    // "UsesVars" / "UsesVarsFalse" / "UsesGroup".
    let uses = "template IN A example. {\n match ^(?P<n>[0-9]+)[.]example[.]$\n var num int(group('n'))\n expr num > 1\n answer \"{{ .Name }} 60 IN A 10.0.0.{{ .Var.num }}\"\n fallthrough\n}";
    assert_eq!(answer(uses, &ask_a("2.example.")), ["2.example. 60 IN A 10.0.0.2"]);
    assert_eq!(rcode(uses, &ask_a("1.example.")), "next");
    let group = "template IN A example. {\n match ^(?P<n>[0-9]+)[.]example[.]$\n expr group('n') == '2' && group(0) == '2.example.'\n answer \"{{ .Name }} 60 IN A 10.0.0.2\"\n}";
    assert_eq!(answer(group, &ask_a("2.example.")), ["2.example. 60 IN A 10.0.0.2"]);
}

/// setup_test.go TestSetupParse, with CoreDNS's messages; and what clusterdns refuses
/// at setup that CoreDNS only finds per query (a constant record that does not parse).
#[test]
fn setup_errors() {
    let err = |body: &str| setup_body(body).err().map(|e| e.to_string()).unwrap_or_default();
    for (body, want) in [
        (
            "template",
            "template: Wrong argument count or unexpected line ending after 'template'",
        ),
        ("template X", "invalid query class X"),
        ("template ANY", "Wrong argument count"),
        ("template ANY X", "invalid RR class X"),
        (
            "template ANY ANY {\n match \"(?P<x>\"\n}",
            "could not parse regex: (?P<x>",
        ),
        (
            "template ANY ANY {\n answer \"{{ notAFunc }}\"\n}",
            "could not compile template: {{ notAFunc }}, function \"notAFunc\" not defined",
        ),
        ("template ANY ANY {\n rcode FOO\n}", "unknown rcode FOO"),
        ("template ANY ANY {\n rcode\n}", "Wrong argument count"),
        (
            "template ANY ANY {\n ederror x\n}",
            "error parsing extended DNS error code x, strconv.ParseUint: parsing \"x\": invalid syntax",
        ),
        ("template ANY ANY {\n ederror\n}", "Wrong argument count"),
        (
            "template ANY ANY {\n unknown\n}",
            "Wrong argument count or unexpected line ending after 'unknown'",
        ),
        ("template ANY ANY {\n var 1x 1\n}", "invalid variable name \"1x\""),
        (
            "template ANY ANY {\n var true 1\n}",
            "variable name \"true\" is reserved",
        ),
        ("template ANY ANY {\n var len 1\n}", "variable name \"len\" is reserved"),
        (
            "template ANY ANY {\n var group 1\n}",
            "variable name \"group\" is reserved",
        ),
        ("template ANY ANY {\n var x\n}", "Wrong argument count"),
        (
            "template ANY ANY {\n var x now()\n}",
            "could not compile expression: x, the function 'now' is not in the expression subset",
        ),
        (
            "template ANY ANY {\n expr y > 1\n}",
            "could not compile expression: unknown name 'y'",
        ),
        // Type errors knowable at setup (expr-lang's checker refuses them when it
        // compiles; CoreDNS's template compiles every var/expr at setup).
        (
            "template ANY ANY {\n expr size() > 'big'\n}",
            "could not compile expression: invalid operation: > (mismatched types int and string)",
        ),
        (
            "template ANY ANY {\n var x 1\n expr incidr(client_ip(), 8)\n}",
            "cannot use int as argument (type string) to call incidr, argument 2",
        ),
        (
            "template ANY ANY {\n expr name() == 1\n}",
            "invalid operation: == (mismatched types string and int)",
        ),
        (
            "template ANY ANY {\n var n len(name()) + 'x'\n}",
            "could not compile expression: n, invalid operation: + (mismatched types int and string)",
        ),
        (
            "template ANY ANY {\n expr incidr(client_ip())\n}",
            "incidr() takes 2 argument(s), got 1",
        ),
        // Knowable at setup: a record without actions that is no record.
        (
            "template ANY ANY {\n answer \"example. 60 IN A 300.0.0.1\"\n}",
            "invalid record \"example. 60 IN A 300.0.0.1\": bad A address",
        ),
        (
            "template ANY ANY {\n answer \"{{ .Var.nope }} 60 IN A 1.2.3.4\"\n}",
            "no variable 'nope'",
        ),
        (
            "template ANY ANY {\n answer \"{{ .Message }}\"\n}",
            ".Message is not in the template subset",
        ),
        // Knowable with holes: the type after a per-query owner, and the whole record
        // when only the owner is per query.
        (
            "template ANY ANY {\n answer \"{{ .Name }} 60 IN FOO 1.2.3.4\"\n}",
            "unknown RR type 'FOO'",
        ),
        (
            "template ANY ANY {\n answer \"{{ .Name }} 60 IN HINFO a b\"\n}",
            "not one template writes",
        ),
        (
            "template ANY ANY {\n answer \"{{ .Name }} 60 IN A 10.0.0.300\"\n}",
            "bad A address",
        ),
    ] {
        let got = err(body);
        assert!(got.contains(want), "{body}\n got: {got}\nwant: {want}");
    }
    // Where: FILE:LINE of the line, as every setup error.
    assert!(
        err("template ANY ANY {\n expr do() && 'yes'\n}")
            .starts_with("Corefile:3 - template: could not compile expression: invalid operation: && (mismatched types bool and string)"),
        "{}",
        err("template ANY ANY {\n expr do() && 'yes'\n}")
    );
    let long = format!("template ANY ANY {{\n match \"{}\"\n}}", "a".repeat(MAX_REGEX_LEN + 1));
    assert!(err(&long).contains("regex pattern too long: 10001 > 10000"));
    // A compiled-size bomb is refused by the regex crate's size limit, not compiled.
    let bomb = "template ANY ANY {\n match \"(a{1000}){1000}\"\n}";
    assert!(err(bomb).contains("could not parse regex"), "{}", err(bomb));
    // Accepted: setup_test.go's valid cases.
    for body in [
        "template ANY ANY {\n match .* .*\n}",
        "template ANY A example.com {\n match ip-(?P<a>[0-9]*)-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]com\n answer \"{{ .Name }} A {{ .Group.a }}.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}\"\n fallthrough\n}",
        "template ANY ANY invalid {\n rcode NXDOMAIN\n authority \"invalid. 60 {{ .Class }} SOA ns.invalid. hostmaster.invalid. (1 60 60 60 60)\"\n ederror 21 \"Blocked according to RFC2606\"\n}",
        "template IN A example {\n var a 1\n var b a + 1\n expr b == 2\n upstream\n}",
    ] {
        setup_body(body).unwrap_or_else(|e| panic!("{body}: {e}"));
    }
}

#[test]
fn metrics_count_matches_and_failures_with_coredns_labels() {
    let p = setup_body(
        "template IN A example {\n match ^ok[.]\n answer \"{{ .Name }} 60 IN A 10.0.0.1\"\n fallthrough\n}\ntemplate IN ANY example {\n answer \"{{ index .Match 3 }}\"\n}",
    )
    .unwrap();
    let h = p.handler.unwrap();
    let l = p.lifecycle.unwrap();
    let chain = Chain::new(vec![h, Arc::new(Next)]);
    let ask = |qname: &str, qtype: u16| {
        let name = NameKey::from_text(qname).unwrap();
        let raw = QueryBuilder::new(name.wire(), qtype).to_vec();
        let a = "127.0.0.1:1".parse().unwrap();
        let req = Request::parse(&raw, Transport::Udp, a, a).ok().unwrap();
        let mut resp = Response::new();
        let mut w = WorkerCtx::new(0);
        let tag = RouteTag {
            slot: 0,
            server: "dns://:53".into(),
            zone: ".".into(),
        };
        let mut q = Query {
            req: &req,
            resp: &mut resp,
            worker: &mut w,
            route: &tag,
            answered_by: "",
            error: None,
            refresh: false,
            coalesce: true,
            meta: chain.metadata(),
        };
        let Outcome::Reply { at } = chain.run(&mut q, 0) else {
            panic!()
        };
        chain.complete(&mut q, at);
        q.resp.rcode()
    };
    let routes = [Arc::new(RouteTag {
        slot: 0,
        server: "dns://:53".into(),
        zone: ".".into(),
    })];
    let process = ProcessState::new();
    l.attach(&AttachCtx::routes(&routes, &process));
    assert_eq!(ask("ok.example.", rtype::A), Rcode::NOERROR);
    assert_eq!(ask("ok.example.", rtype::A), Rcode::NOERROR);
    assert_eq!(ask("x.example.", rtype::TXT), Rcode::SERVFAIL);
    let mut fams = Families::default();
    l.metrics(&mut fams);
    let text = fams.render();
    assert!(
        text.contains(
            r#"coredns_template_matches_total{server="dns://:53",zone="example.",view="",class="IN",type="A"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"coredns_template_template_failures_total{server="dns://:53",zone="example.",view="",class="IN",type="TXT",section="answer",template="{{ index .Match 3 }}"} 1"#),
        "{text}"
    );
}

/// The name regexes see: presentation form with RFC 1035 5.1 escapes, as miekg/dns
/// writes it (CoreDNS's `state.Name()`), whole labels copied on the fast path.
#[test]
fn names_are_written_as_miekg_writes_them() {
    let mut s = String::new();
    name_text(b"\x03web\x06team-a\x00", &mut s);
    assert_eq!(s, "web.team-a.");
    name_text(b"\x03a.b\x02c\xff\x01@\x00", &mut s);
    assert_eq!(s, "a\\.b.c\\255.\\@.");
    name_text(b"\x00", &mut s);
    assert_eq!(s, ".");
}

/// A CNAME answer to an A question: the target is asked of the server itself (with
/// the chase depth), and its records follow the CNAME; a truncated reply truncates
/// ours. CoreDNS cname_test.go TestTruncatedCNAME (template.go: `upstream.Lookup` for
/// A/AAAA questions answered with a CNAME).
#[test]
fn a_cname_target_is_looked_up_through_the_server() {
    use crate::dns::{Rdata, Record};
    let plugin =
        setup_body("template IN A test {\n match ^cname\\.test\\.$\n answer \"cname.test. 600 IN CNAME test.up\"\n}")
            .unwrap();
    let template = plugin.handler.unwrap();
    let raw = QueryBuilder::new(NameKey::from_text("cname.test.").unwrap().wire(), rtype::A).to_vec();
    let a = "127.0.0.1:1".parse().unwrap();
    let req = Request::parse(&raw, Transport::Udp, a, a).ok().unwrap();
    let mut resp = Response::new();
    let mut w = WorkerCtx::new(0);
    let tag = RouteTag {
        slot: 0,
        server: "dns://:53".into(),
        zone: ".".into(),
    };
    let mut q = Query {
        req: &req,
        resp: &mut resp,
        worker: &mut w,
        route: &tag,
        answered_by: "",
        error: None,
        refresh: false,
        coalesce: true,
        meta: crate::chain::Metadata::NONE,
    };
    let Step::Upstream(up) = template.serve(&mut q) else {
        panic!("the target was not looked up")
    };
    assert_eq!(up.to, a);
    let sent = Request::parse(&q.worker.upstream_msg, Transport::Udp, a, a)
        .ok()
        .unwrap();
    assert_eq!(sent.qname.wire(), NameKey::from_text("test.up.").unwrap().wire());
    assert_eq!(sent.qtype, rtype::A);
    let depth = sent
        .edns_options()
        .find(|(c, _)| *c == crate::plugin::kubernetes::CHASE_OPTION)
        .map(|(_, d)| d.to_vec());
    assert_eq!(depth, Some(vec![1]));
    // The server's reply: test.up. A 1.2.3.4, truncated.
    let mut r = Response::new();
    r.start(&sent, Rcode::NOERROR);
    r.answer(Record::at_question(rtype::A, 600, Rdata::A("1.2.3.4".parse().unwrap())));
    r.set_flag(crate::dns::flag::TC, true);
    let reply = r.finish().to_vec();
    assert!(matches!(
        template.resume(&mut q, crate::chain::UpstreamReply::Message(&reply), 0),
        Step::Answered
    ));
    let msg = resp.finish().to_vec();
    assert!(crate::dns::Header::of(&msg).unwrap().tc(), "TC carried over");
    let m = Message::from_octets(msg).unwrap();
    let answer = rrs(m.answer().unwrap());
    assert_eq!(answer.len(), 2, "{answer:?}");
    assert!(
        answer[0].contains("CNAME") && answer[0].contains("test.up"),
        "{answer:?}"
    );
    assert!(answer[1].contains("1.2.3.4"), "{answer:?}");
}

/// The wire path of a dynamic record (owner `{{ .Name }}`, fixed TTL/class/type, rdata
/// parsed by type) writes the very bytes the text path writes, over the record types
/// it takes, names with escapes, and texts it must leave to the text path.
#[test]
fn wire_path_writes_what_the_text_path_writes() {
    let templates = [
        "{{ .Name }} 60 IN A 10.0.0.1",
        "{{ .Name }} 60 IN A {{ .Remote }}",
        "{{ .Name }} IN A 10.1.2.3",
        "{{ .Name }} 3600 A 1.2.3.4",
        "{{ .Name }} A 1.2.3.4",
        "{{ .Name }} IN 1h30m A 1.2.3.4",
        "{{ .Name }}\t60\tIN\tA\t{{ .Remote }}\t",
        "{{ .Name }} 60 in a 1.2.3.4",
        "{{ .Name }} 60 CH A 1.2.3.4",
        "{{ .Name }} 60 CLASS255 A 1.2.3.4",
        "{{ .Name }} 4294967295 IN A 1.2.3.4",
        "{{ .Name }} 99999999999 IN A 1.2.3.4",
        "{{ .Name }} 60 IN A 010.1.2.3",
        "{{ .Name }} 60 IN A 300.1.2.3",
        "{{ .Name }} 60 IN A",
        "{{ .Name }} 60 IN A{{ .Remote }}",
        "{{ .Name }} 60 IN A 10.0.0.1 ; comment",
        "{{ .Name }} 60 IN A ( 10.0.0.1 )",
        "{{ .Name }} 60 IN A 10.0.0.1 10.0.0.2",
        "{{ .Name }} 60 IN A {{ if eq .Type \"A\" }}1.2.3.4{{ else }}5.6.7.8{{ end }}",
        "{{ .Name }} 60 IN AAAA ::1",
        "{{ .Name }} 60 IN AAAA 2001:db8::{{ \"5\" }}",
        "{{ .Name }} 60 IN AAAA ::ffff:1.2.3.4",
        "{{ .Name }} 60 IN AAAA 1.2.3.4",
        "{{ .Name }} 60 IN CNAME www.{{ .Zone }}",
        "{{ .Name }} 60 IN CNAME {{ .Name }}",
        "{{ .Name }} 60 IN CNAME x.{{ .Name }}",
        "{{ .Name }} 60 IN CNAME Target.Example.",
        "{{ .Name }} 60 IN CNAME x.example",
        "{{ .Name }} 60 IN CNAME @",
        "{{ .Name }} 60 IN CNAME .",
        "{{ .Name }} 60 IN CNAME a\\.b.example.",
        "{{ .Name }} 60 IN CNAME *.wild.example.",
        "{{ .Name }} 60 IN CNAME a..b.",
        "{{ .Name }} 60 IN PTR host-{{ .Remote }}.example.",
        "{{ .Name }} 60 IN NS ns1.{{ .Zone }}",
        "{{ .Name }} 60 IN DNAME target.",
        "{{ .Name }} 60 IN MX 10 mx.{{ .Zone }}",
        "{{ .Name }} 60 IN TXT \"{{ .Name }}\"",
        "{{ .Name }} 60 IN SRV 0 0 53 {{ .Name }}",
        "{{ .Name }}.x 60 IN A 1.2.3.4",
        "x.{{ .Name }} 60 IN A 1.2.3.4",
    ];
    let names = [
        "example.org.",
        "Mixed.Case.EXAMPLE.org.",
        ".",
        "a\\.b.example.",
        "sp\\032ace.example.",
        "semi\\;colon.paren\\(.",
        "at\\@.dollar\\$.",
        "q\\\"uote.back\\\\slash.",
        "bin\\255\\000\\010.x.",
        "_srv._tcp.a-b.c_d.",
        "ip-10-1-2-3.synth.test.",
        &format!("{0}.{0}.{0}.{1}.", "a".repeat(63), "b".repeat(61)),
    ];
    let meta = |_: &str, _: &mut String| {};
    let heap = Heap::default();
    let mut taken = 0;
    let mut left = 0;
    for src in templates {
        let t = Template::compile(
            src,
            &Names {
                vars: &[],
                keys: &Default::default(),
            },
        )
        .unwrap();
        let fast = fast_path(&t);
        for presentation in names {
            let mut buf = [0u8; crate::dns::wire::MAX_NAME_LEN];
            let n = crate::dns::wire::parse_name(presentation, &mut buf).unwrap();
            let qname: Vec<u8> = buf[..n].iter().map(u8::to_ascii_lowercase).collect();
            let mut name = String::new();
            name_text(&qname, &mut name);
            let data = RenderData {
                meta: &meta,
                name: &name,
                zone: "example.org.",
                class: class::IN,
                rtype: rtype::A,
                remote: "10.9.8.7",
                pattern: None,
                caps: None,
                matcher: None,
                keys: None,
                vars: &[],
                heap: &heap,
                var_names: &[],
            };
            let (mut text, mut want) = (String::new(), Vec::new());
            let slow = t
                .render(&data, &mut text)
                .map_err(|_| "render")
                .and_then(|()| rr::encode(&text, &mut want).map(|_| ()).map_err(|_| "parse"));
            let ctx = format!("{src:?} for {presentation:?}");
            if let Some(f) = &fast {
                let mut wire = Vec::new();
                if rr::plain_name(&qname)
                    && f.rdata.render(&data, &mut text).is_ok()
                    && rr::encode_fast(&qname, &f.head, &text, &mut wire)
                {
                    taken += 1;
                    assert_eq!(slow, Ok(()), "{ctx}: the wire path wrote what the text path refuses");
                    assert_eq!(wire, want, "{ctx}");
                } else {
                    left += 1;
                }
            }
            let mut wire = Vec::new();
            let got = encode_dynamic(&t, fast.as_ref(), &qname, &data, &mut text, &mut wire).map_err(|e| match e {
                RrError::Render(_) => "render",
                RrError::Parse(_) => "parse",
            });
            assert_eq!(got, slow, "{ctx}");
            if got.is_ok() {
                assert_eq!(wire, want, "{ctx}");
            }
        }
    }
    // The wire path is what answers the usual records, and it does leave some to the
    // text path (escapes, comments, bad addresses).
    assert!(taken > 100, "wire path taken {taken} times");
    assert!(left > 50, "text path taken {left} times");
}

/// A rule's flat path (query name on the stack, shapes, addresses read as rendered,
/// records from their parts) gives the very reply bytes the general path gives, over
/// rules it takes and queries it must leave to the general path (escapes, a group that
/// took no part, addresses that are not canonical, no match, SERVFAIL).
#[test]
fn flat_path_replies_as_the_general_path_does() {
    const SHAPE: &str = r"^ip-(?P<a>[0-9]+)-(?P<b>[0-9]+)-(?P<c>[0-9]+)-(?P<d>[0-9]+)[.]synth[.]test[.]$";
    let a = "{{ .Group.a }}.{{ .Group.b }}.{{ .Group.c }}.{{ .Group.d }}";
    let rules = [
        format!("template IN A synth.test {{\n match \"{SHAPE}\"\n answer \"{{{{ .Name }}}} 60 IN A {a}\"\n}}"),
        format!(
            "template IN A synth.test {{\n match \"{SHAPE}\"\n answer \"{{{{ .Name }}}} 60 IN A {a}\"\n fallthrough\n}}"
        ),
        // Fixed records around the rendered one, in every section, and an EDE.
        format!(
            "template IN ANY synth.test {{\n match \"{SHAPE}\"\n answer \"{{{{ .Name }}}} 60 IN A {a}\" \"x.synth.test. 30 IN TXT hi\"\n authority \"synth.test. 60 IN NS ns.synth.test.\"\n additional \"ns.synth.test. 60 IN A 10.0.0.53\" \"{{{{ .Name }}}} 5 IN AAAA ::{{{{ .Group.d }}}}\"\n rcode NXDOMAIN\n ederror 21 \"flat\"\n fallthrough\n}}"
        ),
        // Numbered groups, two regexes (the second matches), blanks around the address.
        "template IN A synth.test {\n match ^x-([0-9]+)[.] \"^ip-([0-9]+)-([0-9]+)-([0-9]+)-([0-9]+)[.]synth[.]test[.]$\"\n answer \"{{ .Name }} 60 IN A  {{ .Group.1 }}.{{ .Group.2 }}.{{ .Group.3 }}.{{ .Group.4 }}\t\"\n}".to_string(),
        // A group that is not the pattern's: `<no value>`, SERVFAIL.
        format!("template IN A synth.test {{\n match \"{SHAPE}\"\n answer \"{{{{ .Name }}}} 60 IN A {{{{ .Group.nope }}}}\"\n}}"),
        // The name as an address: SERVFAIL; AAAA from a capture; class CH record.
        format!("template IN A synth.test {{\n match \"{SHAPE}\"\n answer \"{{{{ .Name }}}} 60 IN A {{{{ .Name }}}}\"\n}}"),
        format!("template IN AAAA synth.test {{\n match \"{SHAPE}\"\n answer \"{{{{ .Name }}}} 60 IN AAAA 2001:db8::{{{{ .Group.a }}}}:{{{{ .Group.d }}}}\"\n}}"),
        format!("template IN A synth.test {{\n match \"{SHAPE}\"\n answer \"{{{{ .Name }}}} 60 CH A 10.{{{{ .Group.b }}}}.{{{{ .Group.c }}}}.{{{{ .Group.d }}}}\"\n}}"),
        format!("template IN A synth.test {{\n match \"{SHAPE}\"\n rcode SERVFAIL\n}}"),
        // Not flat (a CNAME, `.Remote`): the general path alone, for comparison.
        format!("template IN A synth.test {{\n match \"{SHAPE}\"\n answer \"{{{{ .Name }}}} 60 IN A {{{{ .Remote }}}}\"\n}}"),
    ];
    let names = [
        "ip-10-1-2-3.synth.test.",
        "IP-10-1-2-3.Synth.TEST.",
        "ip-0-0-0-0.synth.test.",
        "ip-255-255-255-255.synth.test.",
        "ip-256-1-2-3.synth.test.",
        "ip-010-1-2-3.synth.test.",
        "ip-00-1-2-3.synth.test.",
        "ip-1234-1-2-3.synth.test.",
        "ip-10-1-2.synth.test.",
        "ip-10-1-2-3x.synth.test.",
        "x-1.synth.test.",
        "ip-10-1-2-3.synth\\.x.synth.test.",
        "ip-10-1-2-3\\032.synth.test.",
        "a.ip-10-1-2-3.synth.test.",
        "synth.test.",
        "ip-10-1-2-3.other.test.",
    ];
    let before = FLAT_TAKEN.with(std::cell::Cell::get);
    let mut cases = 0;
    for body in &rules {
        for qname in names {
            for qtype in [rtype::A, rtype::AAAA, rtype::ANY] {
                for edns in [false, true] {
                    let ask = Ask {
                        qtype,
                        edns,
                        ..ask_a(qname)
                    };
                    FLAT_ON.with(|f| f.set(true));
                    let flat = run_bytes(body, &ask);
                    FLAT_ON.with(|f| f.set(false));
                    let general = run_bytes(body, &ask);
                    FLAT_ON.with(|f| f.set(true));
                    assert_eq!(flat, general, "{body}\n{qname} type {qtype} edns {edns}");
                    cases += 1;
                }
            }
        }
    }
    let taken = FLAT_TAKEN.with(std::cell::Cell::get) - before;
    assert!(taken >= 40, "flat path taken {taken} times of {cases}");
    assert!(cases - taken >= 200, "general path taken {} times", cases - taken);
    // What the rules get: the bench's is flat, `.Remote` is not.
    let flat = |body: &str| {
        let plugin = setup_body(body).unwrap();
        let _ = plugin;
        let parsed = parse_str(&format!(". {{\n{body}\n}}\n"), "Corefile", std::path::Path::new(".")).unwrap();
        let d = &parsed.blocks[0].directives[0];
        parse_rule(
            d,
            &SetupCtx {
                zones: &ctx_zones(),
                config_dir: ".".into(),
                workers: 1,
                binds: None,
                process: &ProcessState::new(),
            },
        )
        .unwrap()
        .flat
    };
    assert!(flat(&rules[0]) && flat(&rules[2]) && flat(&rules[3]) && flat(&rules[6]));
    assert!(!flat(&rules[9]), ".Remote is not flat");
}
