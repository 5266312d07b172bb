//! Setup errors and flag tables. Each expectation cites the CoreDNS test case
//! (plugin/header/*_test.go, CoreDNS v1.14) or README section it mirrors.

use std::sync::{Arc, Mutex};

use super::*;
use crate::chain::{Chain, Metadata, Outcome};
use crate::config::parse_str;
use crate::dns::Rcode;

fn header(lines: &str) -> Result<Header, ConfigError> {
    let text = format!(". {{\n{lines}\n}}\n");
    let parsed = parse_str(&text, "Corefile", std::path::Path::new("."))?;
    let dirs: Vec<&Directive> = parsed.blocks[0].directives.iter().collect();
    parse(&dirs)
}

fn err(lines: &str) -> String {
    header(lines)
        .map(|h| format!("accepted: {h:?}"))
        .unwrap_or_else(|e| e.to_string())
}

#[test]
fn setup_errors_are_corednss() {
    // setup_test.go TestSetupHeader, case by case, then what is ours.
    let cases = [
        (
            // One token `{}`, as Caddy lexes it too.
            "header {}",
            "Corefile:2 - header: Wrong argument count or unexpected line ending after '{}'",
        ),
        (
            "header {\nfoo\n}",
            "Corefile:3 - header: setting up rule: invalid selector=foo should be query or response",
        ),
        (
            "header {\nresponse set\n}",
            "Corefile:3 - header: setting up rule: invalid length for flags, at least one should be provided",
        ),
        (
            "header {\nquery foo\n}",
            "Corefile:3 - header: setting up rule: invalid length for flags, at least one should be provided",
        ),
        (
            "header {\nquery foo rd\n}",
            "Corefile:3 - header: setting up rule: unknown flag action=foo, should be set or clear",
        ),
        (
            "header {\nquery\n}",
            "Corefile:3 - header: setting up rule: no flag action provided",
        ),
        (
            "header {\nresponse set ra\nquery set tc\n}",
            "Corefile:4 - header: setting up rule: unknown/unsupported flag=tc",
        ),
        (
            "header",
            "Corefile:2 - header: Wrong argument count or unexpected line ending after 'header'",
        ),
        (
            "header x {\nquery set rd\n}",
            "Corefile:2 - header: Wrong argument count or unexpected line ending after 'x'",
        ),
        (
            "header {\nquery set rd\n}\nheader {\nquery set rd\n}",
            "Corefile:5 - header: this plugin can only be used once per Server Block",
        ),
    ];
    for (lines, want) in cases {
        assert_eq!(err(lines), want, "{lines}");
    }
    // Accepted (setup_test.go), with selector, action and flag in any case.
    for lines in [
        "header {\nquery set rd\n}",
        "header {\nresponse set aa\n}",
        "header {\nresponse set ra aa\nquery clear rd\n}",
        "header {\nRESPONSE Set RA\n}",
    ] {
        assert!(header(lines).is_ok(), "{lines}");
    }
}

#[test]
fn later_rules_win_per_flag() {
    // README "Syntax": actions are evaluated in order, the last has most precedence.
    let h = header("header {\nresponse set ra aa\nresponse clear aa\nresponse set rd\n}").unwrap();
    let f = h.response.apply(Flags(flag::QR | flag::AA));
    assert_eq!(f, Flags(flag::QR | flag::RA | flag::RD));
    let h = header("header {\nquery clear rd\nquery set rd\n}").unwrap();
    assert_eq!(h.query.apply(Flags(0)), Flags(flag::RD));
    assert!(!h.response.any && h.query.any);
}

/// The plugin after `header`: notes the flags of the query it sees and answers.
struct Backend(Mutex<Vec<Flags>>, Rcode);

impl Handler for Backend {
    fn name(&self) -> &'static str {
        "backend"
    }
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        self.0.lock().unwrap().push(q.req.flags);
        if self.1 == Rcode::SERVFAIL {
            return Step::Fail(Rcode::SERVFAIL, None);
        }
        q.resp.start(q.req, self.1);
        Step::Answered
    }
}

/// Runs `header` (from `lines`) then the backend on a query whose RD is that of
/// `flags`; the flags the backend saw and the reply's flags.
fn run(lines: &str, flags: u16, rcode: Rcode) -> (Option<Flags>, Flags) {
    let backend = Arc::new(Backend(Mutex::new(Vec::new()), rcode));
    let chain = Chain::new(vec![Arc::new(header(lines).unwrap()), backend.clone()]);
    let raw = crate::dns::QueryBuilder::new(b"\x01a\x00", crate::dns::rtype::A)
        .id(0x1234)
        .rd(flags & flag::RD != 0)
        .to_vec();
    let reply = crate::chain::testing::with_query(&raw, "127.0.0.1:5300".parse().unwrap(), Metadata::NONE, |q| {
        let Outcome::Reply { at } = chain.run(q, 0) else {
            panic!("no upstream here")
        };
        chain.complete(q, at);
        q.resp.flags()
    });
    let seen = backend.0.lock().unwrap().first().copied();
    (seen, reply)
}

#[test]
fn query_rules_change_what_later_plugins_see_and_the_replys_rd() {
    // header_test.go TestHeaderQueryRules: rd set, rd cleared, aa set on the query.
    let (seen, reply) = run("header {\nquery set rd\n}", 0, Rcode::NOERROR);
    assert_eq!(seen, Some(Flags(flag::RD)));
    // The reply copies RD from the query the answering plugin saw (miekg SetReply).
    assert!(reply.rd());
    let (seen, reply) = run("header {\nquery clear rd\n}", flag::RD, Rcode::NOERROR);
    assert_eq!(seen, Some(Flags(0)));
    assert!(!reply.rd());
    let (seen, _) = run("header {\nquery set aa\n}", flag::RD, Rcode::NOERROR);
    assert_eq!(seen, Some(Flags(flag::RD | flag::AA)));
    // Nothing to change: the client's own query goes on (not copied).
    let (seen, _) = run("header {\nquery set rd\n}", flag::RD, Rcode::NOERROR);
    assert_eq!(seen, Some(Flags(flag::RD)));
}

#[test]
fn response_rules_change_the_reply_a_later_plugin_wrote() {
    // header_test.go TestHeaderResponseRules: ra set, ra cleared, rd set, aa set.
    let (_, reply) = run("header {\nresponse set ra\n}", 0, Rcode::NOERROR);
    assert_eq!(reply, Flags(flag::QR | flag::RA));
    let (_, reply) = run("header {\nresponse clear ra rd\n}", flag::RD, Rcode::NOERROR);
    assert_eq!(reply, Flags(flag::QR));
    let (_, reply) = run("header {\nresponse set rd aa\n}", 0, Rcode::NXDOMAIN);
    assert_eq!(reply, Flags(flag::QR | flag::RD | flag::AA | 3));
    // Both selectors together (README's second example with a query rule).
    let (seen, reply) = run(
        "header {\nquery clear rd\nresponse set ra aa\n}",
        flag::RD,
        Rcode::NOERROR,
    );
    assert_eq!(seen, Some(Flags(0)));
    assert_eq!(reply, Flags(flag::QR | flag::RA | flag::AA));
    // A failure the server writes is not a later plugin's reply: left as it is.
    let (_, reply) = run("header {\nresponse set ra aa\n}", flag::RD, Rcode::SERVFAIL);
    assert_eq!(reply, Flags(flag::QR | flag::RD | 2));
}

#[test]
fn applying_rules_allocates_nothing() {
    let h = header("header {\nquery clear rd\nresponse set ra aa\n}").unwrap();
    let raw = crate::dns::QueryBuilder::new(b"\x01a\x00", crate::dns::rtype::A).to_vec();
    crate::chain::testing::with_query(&raw, "127.0.0.1:53".parse().unwrap(), Metadata::NONE, |q| {
        assert!(matches!(h.serve(q), Step::Rewritten));
        q.resp.start(q.req, Rcode::NOERROR);
        q.resp.finish();
        q.answered_by = "backend";
        let n = crate::plugin::prometheus::tests::allocations_in(|| {
            for _ in 0..1000 {
                h.serve(q);
                h.on_response(q);
            }
        });
        assert_eq!(n, 0);
        assert!(q.resp.flags().ra() && q.resp.flags().aa());
        // The counter counts (so that the 0 above means something).
        let one = crate::plugin::prometheus::tests::allocations_in(|| {
            std::hint::black_box(Vec::<u8>::with_capacity(8));
        });
        assert_eq!(one, 1);
    });
}
