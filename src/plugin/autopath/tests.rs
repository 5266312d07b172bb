//! Setup and completion tables, each case traced to CoreDNS's plugin/autopath tests
//! (autopath_test.go, setup_test.go) or README, or to the safety rules.

use domain::base::{Message, ParsedName};
use domain::rdata::AllRecordData;

use super::*;
use crate::chain::{AutoPather, Budget, Chain, Outcome, OverBudget};
use crate::config::parse_str;
use crate::dns::NameKey;
use crate::process::ProcessState;

fn setup_in(corefile: &str, dir: &std::path::Path) -> Result<Autopath, ConfigError> {
    let parsed = parse_str(corefile, "Corefile", dir)?;
    let dirs: Vec<&Directive> = parsed.blocks[0].directives.iter().collect();
    let zones = [Zone::new("cluster.local.").unwrap()];
    let ctx = SetupCtx {
        zones: &zones,
        config_dir: dir.to_path_buf(),
        workers: 1,
        binds: None,
        process: &ProcessState::new(),
    };
    parse(&dirs, &ctx)
}

fn loc() -> Loc {
    Loc {
        file: "Corefile".into(),
        line: 2,
    }
}

fn path_of(p: &SearchPath) -> Vec<String> {
    (0..p.len())
        .map(|i| crate::dns::wire::name_to_string(p.get(i)))
        .collect()
}

#[test]
fn setup_table_of_coredns() {
    // setup_test.go TestSetupAutoPath, with its resolv.conf.
    let dir = std::env::temp_dir().join(format!("clusterdns-autopath-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("resolv.conf"),
        "nameserver 1.2.3.4\ndomain foo.com\nsearch bar.com baz.com\noptions ndots:5\n",
    )
    .unwrap();
    let get = |corefile: &str| setup_in(corefile, &dir).map_err(|e| e.to_string());
    let a = get("cluster.local {\n autopath @kubernetes\n}\n").unwrap();
    assert!(matches!(&a.source, Source::Plugin(n) if n == "kubernetes"));
    assert_eq!(a.zones, [Zone::new("cluster.local.").unwrap()]);
    let a = get("cluster.local {\n autopath example.org @kubernetes\n}\n").unwrap();
    assert_eq!(a.zones, [Zone::new("example.org.").unwrap()]);
    let a = get("cluster.local {\n autopath 10.0.0.0/8 @kubernetes\n}\n").unwrap();
    assert_eq!(a.zones, [Zone::new("10.in-addr.arpa.").unwrap()]);
    let a = get("cluster.local {\n autopath resolv.conf\n}\n").unwrap();
    let Source::File(p) = &a.source else { panic!() };
    assert_eq!(path_of(p), ["bar.com.", "baz.com.", "."]);

    for (corefile, want) in [
        (
            "cluster.local {\n autopath\n}\n",
            "Corefile:2 - autopath: no resolv-conf specified",
        ),
        (
            "cluster.local {\n autopath kubernetes\n}\n",
            "Corefile:2 - autopath: failed to parse \"kubernetes\": open kubernetes:",
        ),
        (
            "cluster.local {\n autopath \"\"\n}\n",
            "Corefile:2 - autopath: failed to parse \"\"",
        ),
        (
            "cluster.local {\n autopath @kubernetes\n autopath @kubernetes\n}\n",
            "Corefile:3 - autopath: this plugin can only be used once per Server Block",
        ),
    ] {
        let err = get(corefile).err().unwrap_or_default();
        assert!(err.starts_with(want), "{corefile}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A plugin that knows which names of `zone` exist and answers them: A 127.0.0.53,
/// TTL 3600 (autopath_test.go's `nextHandler`) for names in `a`, AAAA too for names
/// in `aaaa`; NXDOMAIN for the rest. Its search path is `path` for every client.
struct Names {
    zone: Zone,
    a: Vec<&'static str>,
    aaaa: Vec<&'static str>,
    path: Option<Vec<&'static str>>,
    decides: bool,
}

impl Names {
    fn has(&self, name: &NameKey, list: &[&str]) -> bool {
        list.iter()
            .any(|n| NameKey::from_text(n).unwrap().wire() == name.wire())
    }
}

impl Handler for Names {
    fn name(&self) -> &'static str {
        "names"
    }
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        let name = &q.req.qname;
        let exists = self.has(name, &self.a) || self.has(name, &self.aaaa);
        q.resp
            .start(q.req, if exists { Rcode::NOERROR } else { Rcode::NXDOMAIN });
        let v4 = q.req.qtype == rtype::A && self.has(name, &self.a);
        let v6 = q.req.qtype == rtype::AAAA && self.has(name, &self.aaaa);
        if v4 {
            q.resp.answer(Record::at_question(
                rtype::A,
                3600,
                Rdata::A("127.0.0.53".parse().unwrap()),
            ));
        }
        if v6 {
            q.resp.answer(Record::at_question(
                rtype::AAAA,
                3600,
                Rdata::Aaaa("::53".parse().unwrap()),
            ));
        }
        Step::Answered
    }
    fn autopather(&self) -> Option<&dyn AutoPather> {
        Some(self)
    }
}

impl AutoPather for Names {
    fn search_path(&self, _: &Request<'_>, out: &mut SearchPath) -> bool {
        out.clear();
        let Some(path) = &self.path else { return false };
        for p in path {
            out.push(&[], Zone::new(p).unwrap().wire());
        }
        true
    }
    fn name_exists(&self, req: &Request<'_>, _: &Budget) -> Result<Option<bool>, OverBudget> {
        if !self.decides || !self.zone.contains(&req.qname) {
            return Ok(None);
        }
        Ok(Some(self.has(&req.qname, &self.a) || self.has(&req.qname, &self.aaaa)))
    }
}

/// Asks `chain` for `qname`/`qtype`; the reply as (rcode, question, answer lines).
fn ask(chain: &Chain, qname: &str, qtype: u16) -> (String, String, Vec<String>) {
    let name = NameKey::from_text(qname).unwrap();
    let raw = QueryBuilder::new(name.wire(), qtype).id(7).to_vec();
    let bytes = crate::chain::testing::with_query(&raw, "10.1.0.5:4000".parse().unwrap(), chain.metadata(), |q| {
        let Outcome::Reply { at } = chain.run(q, 0) else {
            panic!("upstream")
        };
        chain.complete(q, at);
        q.resp.bytes().to_vec()
    });
    let msg = Message::from_octets(bytes).unwrap();
    let question = msg.first_question().unwrap().qname().to_string();
    let answers = msg
        .answer()
        .unwrap()
        .map(|rr| {
            let rr = rr
                .unwrap()
                .into_any_record::<AllRecordData<_, ParsedName<_>>>()
                .unwrap();
            rr.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect();
    (msg.header().rcode().to_string(), question, answers)
}

fn chain_with(source: Source, names: Names) -> Chain {
    let ap = Arc::new(Autopath::new(vec![Zone::root()], source, loc(), 1));
    let handlers: Vec<Arc<dyn Handler>> = vec![ap.clone(), Arc::new(names)];
    ap.link(&handlers).unwrap();
    Chain::new(handlers)
}

fn file(search: &[&str]) -> Source {
    let mut p = SearchPath::default();
    for s in search {
        p.push(&[], Zone::new(s).unwrap().wire());
    }
    Source::File(p)
}

/// autopath_test.go's fixture: search path example.org., example.com., com., "".
fn coredns_fixture(decides: bool) -> Chain {
    chain_with(
        file(&["example.org.", "example.com.", "com.", "."]),
        Names {
            zone: Zone::root(),
            a: vec!["b.com.", "a.example.com."],
            aaaa: vec![],
            path: None,
            decides,
        },
    )
}

#[test]
fn completion_has_coredns_s_answer_shape() {
    let chain = coredns_fixture(true);
    // autopath_test.go TestAutoPath case 1: "search path expansion".
    assert_eq!(
        ask(&chain, "b.example.org.", rtype::A),
        (
            "NOERROR".into(),
            "b.example.org".into(),
            vec![
                "b.example.org. 3600 IN CNAME b.com.".into(),
                "b.com. 3600 IN A 127.0.0.53".into()
            ]
        )
    );
    // Case 2: "no search path expansion" (not under the first element).
    assert_eq!(
        ask(&chain, "a.example.com.", rtype::A).2,
        ["a.example.com. 3600 IN A 127.0.0.53"]
    );
    // The name found has no AAAA: NODATA, and the CNAME to the name found all the same
    // (CoreDNS's cnamer adds one only in front of an answer record, so its reply says
    // the asked name exists): A and AAAA stop at the same element, and say so.
    assert_eq!(
        ask(&chain, "b.example.org.", rtype::AAAA),
        (
            "NOERROR".into(),
            "b.example.org".into(),
            vec!["b.example.org. 0 IN CNAME b.com.".into()]
        )
    );
    // Nothing found anywhere but the name as asked: the name as asked answers
    // (NXDOMAIN here), with the client's question.
    assert_eq!(
        ask(&chain, "c.example.org.", rtype::A),
        ("NXDOMAIN".into(), "c.example.org".into(), vec![])
    );
}

#[test]
fn undecidable_elements_leave_the_query_as_asked() {
    // Nobody can tell whether b.example.org. exists without running the chain: the
    // query goes on unchanged and the client searches on its own.
    let chain = coredns_fixture(false);
    assert_eq!(
        ask(&chain, "b.example.org.", rtype::A),
        ("NXDOMAIN".into(), "b.example.org".into(), vec![])
    );
}

#[test]
fn first_in_search_path() {
    // autopath_test.go TestInSearchPath: under the first element or not.
    let chain = chain_with(
        file(&[
            "default.svc.cluster.local.",
            "svc.cluster.local.",
            "cluster.local.",
            ".",
        ]),
        Names {
            zone: Zone::root(),
            a: vec!["a.svc.cluster.local.", "google.com.", "a.b.svc.cluster.local."],
            aaaa: vec![],
            path: None,
            decides: true,
        },
    );
    // Not under the first element: as asked.
    assert_eq!(
        ask(&chain, "google.com.", rtype::A).2,
        ["google.com. 3600 IN A 127.0.0.53"]
    );
    assert_eq!(
        ask(&chain, "a.b.svc.cluster.local.", rtype::A).2,
        ["a.b.svc.cluster.local. 3600 IN A 127.0.0.53"]
    );
    // The first element itself: nothing to complete (CoreDNS would ask for
    // `.default.svc.cluster.local.`).
    assert_eq!(ask(&chain, "default.svc.cluster.local.", rtype::A).0, "NXDOMAIN");
    // Under it: completed to the second element, and the last (the name as asked).
    assert_eq!(
        ask(&chain, "a.default.svc.cluster.local.", rtype::A).2,
        [
            "a.default.svc.cluster.local. 3600 IN CNAME a.svc.cluster.local.",
            "a.svc.cluster.local. 3600 IN A 127.0.0.53"
        ]
    );
    assert_eq!(
        ask(&chain, "google.com.default.svc.cluster.local.", rtype::A).2,
        [
            "google.com.default.svc.cluster.local. 3600 IN CNAME google.com.",
            "google.com. 3600 IN A 127.0.0.53"
        ]
    );
}

#[test]
fn the_search_path_comes_from_the_named_plugin() {
    let names = |path: Option<Vec<&'static str>>| Names {
        zone: Zone::new("cluster.local.").unwrap(),
        a: vec!["web.svc.cluster.local."],
        aaaa: vec!["web.svc.cluster.local."],
        path,
        decides: true,
    };
    let at_names = || Source::Plugin("names".into());
    let chain = chain_with(
        at_names(),
        names(Some(vec![
            "ns.svc.cluster.local.",
            "svc.cluster.local.",
            "cluster.local.",
            ".",
        ])),
    );
    for qtype in [rtype::A, rtype::AAAA] {
        let (rcode, _, answer) = ask(&chain, "web.ns.svc.cluster.local.", qtype);
        assert_eq!(rcode, "NOERROR");
        assert_eq!(
            answer[0],
            "web.ns.svc.cluster.local. 3600 IN CNAME web.svc.cluster.local."
        );
    }
    // The plugin gives no search path for this client (no single pod has its
    // address): no completion (coredns#2842).
    let chain = chain_with(at_names(), names(None));
    assert_eq!(ask(&chain, "web.ns.svc.cluster.local.", rtype::A).0, "NXDOMAIN");
}

#[test]
fn a_named_plugin_that_is_no_autopather_is_an_error_and_a_missing_one_is_not() {
    let ap = Autopath::new(vec![Zone::root()], Source::Plugin("whoami".into()), loc(), 1);
    let whoami: Vec<Arc<dyn Handler>> = vec![Arc::new(crate::plugin::whoami::Whoami)];
    let err = ap.link(&whoami).unwrap_err().to_string();
    assert!(
        err.ends_with("autopath: whoami does not implement the AutoPather interface"),
        "{err}"
    );
    // setup.go: no such plugin in the block is no error (and no completion).
    assert!(ap.link(&[]).is_ok());
}
