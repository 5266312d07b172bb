//! dns64's unit tests: setup (CoreDNS's setup_test.go), the address embedding (RFC 6052
//! 2.4's table, dns64_test.go's TestTo6), which queries and replies are translated
//! (TestRequestShouldIntercept, TestResponseShould) and the replies made
//! (TestDNS64), through a chain as the worker runs it.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use domain::base::Message;

use super::*;
use crate::chain::{Chain, Outcome, RouteTag};
use crate::config::parse_str;
use crate::dns::wire::name_from_str;
use crate::dns::{Request, Response};
use crate::process::ProcessState;

/// dns64's setup on the first block of `corefile`.
fn parse(corefile: &str) -> Result<Dns64, ConfigError> {
    let parsed = parse_str(corefile, "Corefile", std::path::Path::new("."))?;
    let dirs: Vec<&Directive> = parsed.blocks[0].directives.iter().collect();
    Dns64::from_directives(&dirs)
}

fn prefix_of(d: &Dns64) -> String {
    format!("{}/{}", Ipv6Addr::from(d.prefix), d.len)
}

/// setup_test.go's TestSetupDns64, case by case (the prefix kept, or the error as
/// CoreDNS words it), and this server's line numbers.
#[test]
fn setup_follows_coredns_setup_test() {
    for (body, prefix, allow_ipv4, translate_all) in [
        ("dns64", "64:ff9b::/96", false, false),
        ("dns64 64:dead::/96", "64:dead::/96", false, false),
        ("dns64 {\n translate_all\n }", "64:ff9b::/96", false, true),
        ("dns64 {\n prefix 64:ff9b::/96\n }", "64:ff9b::/96", false, false),
        ("dns64 {\n prefix 64:ff9b::/32\n }", "64:ff9b::/32", false, false),
        (
            "dns64 {\n prefix 2002:ac12:b083::/96\n }",
            "2002:ac12:b083::/96",
            false,
            false,
        ),
        (
            "dns64 {\n prefix 2002:c0a8:a88a::/48\n }",
            "2002:c0a8:a88a::/48",
            false,
            false,
        ),
        ("dns64 {\n allow_ipv4\n }", "64:ff9b::/96", true, false),
        // Host bits are cleared, as Go's ParseCIDR does.
        ("dns64 64:ff9b::1:2:3/64", "64:ff9b::/64", false, false),
        // The README's form with both: the block's prefix is read after the line's.
        (
            "dns64 64:dead::/96 {\n prefix 64:beef::/64\n translate_all\n }",
            "64:beef::/64",
            false,
            true,
        ),
    ] {
        let d = parse(&format!(".:53 {{\n {body}\n}}\n")).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(prefix_of(&d), prefix, "{body}");
        assert_eq!(d.allow_ipv4, allow_ipv4, "{body}");
        assert_eq!(d.translate_all, translate_all, "{body}");
    }
    for (body, want) in [
        (
            "dns64 {\n prefix 64:ff9b::/52\n }",
            "Corefile:3 - dns64: invalid prefix length \"64:ff9b::/52\"",
        ),
        (
            "dns64 {\n prefix 64:ff9b::/104\n }",
            "Corefile:3 - dns64: invalid prefix length \"64:ff9b::/104\"",
        ),
        (
            "dns64 {\n prefix 8.8.8.8/24\n }",
            "Corefile:3 - dns64: invalid netmask 32 IPv6 address: \"8.8.8.0/24\"",
        ),
        (
            "dns64 foobar {\n prefix 64:ff9b::/96\n }",
            "Corefile:2 - dns64: invalid CIDR address: foobar",
        ),
        ("dns64 foobar", "Corefile:2 - dns64: invalid CIDR address: foobar"),
        ("dns64 {\n foobar\n }", "Corefile:3 - dns64: unknown property 'foobar'"),
        (
            "dns64 64:ff9b::/96 64:dead::/96",
            "Corefile:2 - dns64: Wrong argument count or unexpected line ending after '64:dead::/96'",
        ),
        (
            "dns64 {\n prefix\n }",
            "Corefile:3 - dns64: Wrong argument count or unexpected line ending after 'prefix'",
        ),
        (
            "dns64 64:ff9b::/200",
            "Corefile:2 - dns64: invalid CIDR address: 64:ff9b::/200",
        ),
        ("dns64 64:ff9b::", "Corefile:2 - dns64: invalid CIDR address: 64:ff9b::"),
    ] {
        let err = parse(&format!(".:53 {{\n {body}\n}}\n")).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some(want), "{body}");
    }
    // Every line counts: a later prefix wins, flags add up (CoreDNS's `for c.Next()`).
    let d = parse(".:53 {\n dns64 64:dead::/96\n dns64 {\n allow_ipv4\n }\n}\n").unwrap();
    assert_eq!((prefix_of(&d).as_str(), d.allow_ipv4), ("64:dead::/96", true));
}

fn embedded(prefix: &str, v4: &str) -> String {
    let d = parse(&format!(".:53 {{\n dns64 {prefix}\n}}\n")).unwrap();
    d.embed(v4.parse::<Ipv4Addr>().unwrap().octets()).to_string()
}

/// RFC 6052 2.4's table (192.0.2.33 under each prefix length; the u octet, bits 64 to
/// 71, stays zero), and dns64_test.go's TestTo6 (64.64.64.64).
#[test]
fn addresses_are_embedded_as_rfc_6052_says() {
    for (prefix, want) in [
        ("2001:db8::/32", "2001:db8:c000:221::"),
        ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
        ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
        ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
        ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"),
        ("2001:db8:122:344::/96", "2001:db8:122:344::c000:221"),
    ] {
        assert_eq!(embedded(prefix, "192.0.2.33"), want, "{prefix}");
    }
    for (prefix, want) in [
        ("64:ff9b::/96", "64:ff9b::4040:4040"),
        ("64:ff9b::/64", "64:ff9b::40:4040:4000:0"),
        ("64:ff9b::/56", "64:ff9b:0:40:40:4040::"),
        ("64::/32", "64:0:4040:4040::"),
    ] {
        assert_eq!(embedded(prefix, "64.64.64.64"), want, "{prefix}");
    }
    // Lengths RFC 6052 does not define but CoreDNS accepts: the address follows the
    // prefix's bytes, byte 8 included (CoreDNS's to6).
    assert_eq!(
        embedded("2001:db8:122:344:ff00::/72", "192.0.2.33"),
        "2001:db8:122:344:ffc0:2:2100:0"
    );
    assert_eq!(embedded("2001:db8::/88", "192.0.2.33"), "2001:db8::c0:2:2100");
}

// ------------------------------------------------------------------------------------
// Replies

/// A record for a test message, in the few shapes the tests need.
enum R {
    A(&'static str, u32, [u8; 4]),
    Aaaa(&'static str, u32, &'static str),
    Cname(&'static str, u32, &'static str),
    Soa(&'static str, u32),
}

/// A reply to `name`/`qtype` with `rcode` and these records (TC if `tc`).
fn message(name: &str, qtype: u16, rcode: Rcode, tc: bool, answer: &[R], authority: &[R]) -> Vec<u8> {
    let mut raw = Vec::new();
    QueryBuilder::new(&name_from_str(name).unwrap(), qtype).write(&mut raw);
    let any = "127.0.0.1:53".parse().unwrap();
    let req = Request::parse(&raw, Transport::Tcp, any, any).unwrap();
    let mut resp = Response::new();
    resp.start(&req, rcode);
    let (m, n) = (name_from_str("foo.").unwrap(), name_from_str("bar.").unwrap());
    for (section, records) in [(Section::Answer, answer), (Section::Authority, authority)] {
        for r in records {
            let (owner, ttl) = match r {
                R::A(o, t, _) | R::Aaaa(o, t, _) | R::Cname(o, t, _) | R::Soa(o, t) => (name_from_str(o).unwrap(), *t),
            };
            let target = match r {
                R::Cname(_, _, to) => name_from_str(to).unwrap(),
                _ => Vec::new(),
            };
            let (rt, data) = match r {
                R::A(_, _, a) => (rtype::A, Rdata::A(Ipv4Addr::from(*a))),
                R::Aaaa(_, _, a) => (rtype::AAAA, Rdata::Aaaa(a.parse().unwrap())),
                R::Cname(..) => (rtype::CNAME, Rdata::Name(Name::wire(&target))),
                R::Soa(..) => (
                    rtype::SOA,
                    Rdata::Soa {
                        mname: Name::wire(&m),
                        rname: Name::wire(&n),
                        serial: 1,
                        refresh: 7200,
                        retry: 900,
                        expire: 1209600,
                        minimum: 86400,
                    },
                ),
            };
            let rec = Record {
                owner: Name::wire(&owner),
                rtype: rt,
                ttl,
                data,
            };
            resp.push(section, &rec).unwrap();
        }
    }
    if tc {
        resp.set_flag(flag::TC, true);
    }
    resp.finish().to_vec()
}

/// The later plugin: answers with a stored reply (its rcode, TC and records).
struct Canned(Vec<u8>);

/// A later plugin that fails: the server writes the SERVFAIL.
struct Failing;

impl Handler for Failing {
    fn name(&self) -> &'static str {
        "failing"
    }
    fn serve(&self, _: &mut Query<'_, '_>) -> Step {
        Step::Fail(Rcode::SERVFAIL, None)
    }
}

/// A later plugin that answers as `acl` does when it refuses a client.
struct Refusing;

impl Handler for Refusing {
    fn name(&self) -> &'static str {
        "acl"
    }
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        q.resp.start(q.req, Rcode::REFUSED);
        Step::Answered
    }
}

impl Handler for Canned {
    fn name(&self) -> &'static str {
        "canned"
    }
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        q.resp.start(q.req, wire::message_rcode(&self.0));
        q.resp
            .copy_sections(&self.0, &[Section::Answer, Section::Authority, Section::Additional])
            .unwrap();
        if Header::of(&self.0).unwrap().tc() {
            q.resp.set_flag(flag::TC, true);
        }
        Step::Answered
    }
}

/// What a client got, and what the plugin asked the server.
struct Got {
    /// The A query sent through the server, if one was.
    lookup: Option<(Vec<u8>, UpstreamRequest)>,
    reply: Message<Vec<u8>>,
    translated: u64,
}

impl Got {
    fn answer(&self) -> Vec<String> {
        testkit::wire::section(&self.reply, "answer")
    }
    fn authority(&self) -> Vec<String> {
        testkit::wire::section(&self.reply, "authority")
    }
    fn flags(&self) -> String {
        let h = self.reply.header();
        let mut f = Vec::new();
        for (on, name) in [(h.aa(), "aa"), (h.tc(), "tc"), (h.rd(), "rd"), (h.ra(), "ra")] {
            if on {
                f.push(name);
            }
        }
        f.join(" ")
    }
}

/// Runs `[dns64, Canned(first)]` for an AAAA query (RD, EDNS) for `name` from `client`,
/// as the worker does: run, the response hooks; then, if dns64 asked, `a` (or a
/// timeout) as the server's reply, resume and the hooks again.
fn ask(d: Dns64, client: &str, qtype: u16, name: &str, first: Vec<u8>, a: Option<Vec<u8>>) -> Got {
    ask_after(d, client, qtype, name, Arc::new(Canned(first)), a)
}

/// [`ask`] with `next` as the plugin after dns64.
fn ask_after(d: Dns64, client: &str, qtype: u16, name: &str, next: Arc<dyn Handler>, a: Option<Vec<u8>>) -> Got {
    let d = Arc::new(d);
    let process = ProcessState::new();
    let route = Arc::new(RouteTag {
        slot: 0,
        server: "dns://:53".into(),
        zone: ".".into(),
    });
    d.attach(&AttachCtx::routes(std::slice::from_ref(&route), &process));
    let chain = Chain::new(vec![d.clone(), next]);
    let mut raw = Vec::new();
    QueryBuilder::new(&name_from_str(name).unwrap(), qtype)
        .id(42)
        .edns(1232)
        .write(&mut raw);
    let client = client.parse().unwrap();
    let local = "[2001:db8::53]:53".parse().unwrap();
    let (lookup, bytes) = crate::chain::testing::with_query_to(&raw, client, local, chain.metadata(), |q| {
        let Outcome::Reply { at } = chain.run(q, 0) else {
            panic!("dns64 passes the query on")
        };
        let mut lookup = None;
        if let Outcome::Upstream { at, request } = chain.complete(q, at) {
            assert_eq!(at, 0);
            let cookie = request.cookie;
            lookup = Some((q.worker.upstream_msg.clone(), request));
            let reply = match &a {
                Some(a) => UpstreamReply::Message(a),
                None => UpstreamReply::Timeout,
            };
            let Outcome::Reply { at } = chain.resume(q, 0, reply, cookie) else {
                panic!("dns64 answers after its lookup")
            };
            assert!(
                matches!(chain.complete(q, at), Outcome::Reply { .. }),
                "one lookup only"
            );
        }
        (lookup, q.resp.bytes().to_vec())
    });
    let c = process.kept(
        "dns64|dns://:53",
        |_: &Arc<AtomicU64>| true,
        || Arc::new(AtomicU64::new(0)),
    );
    Got {
        lookup,
        reply: Message::from_octets(bytes).unwrap(),
        translated: c.load(Ordering::Relaxed),
    }
}

fn dns64(body: &str) -> Dns64 {
    parse(&format!(".:53 {{\n {body}\n}}\n")).unwrap()
}

const V6: &str = "[2001:db8::1]:5353";
const V4: &str = "192.0.2.1:5353";
const NAME_: &str = "example.com.";

/// dns64_test.go TestDNS64 "standard flow": NODATA (SOA TTL 70), the A lookup's two
/// records become AAAA under 64:ff9b::/96 with TTL min(A, 70); the header is a fresh
/// reply's (no AA, no RA), NOERROR, the A reply's (empty) authority.
#[test]
fn nodata_is_translated_from_the_a_records() {
    let first = message(NAME_, rtype::AAAA, Rcode::NOERROR, false, &[], &[R::Soa(NAME_, 70)]);
    let a = message(
        NAME_,
        rtype::A,
        Rcode::NOERROR,
        false,
        &[R::A(NAME_, 60, [192, 0, 2, 42]), R::A(NAME_, 5000, [192, 0, 2, 43])],
        &[],
    );
    let got = ask(dns64("dns64"), V6, rtype::AAAA, NAME_, first, Some(a));
    assert_eq!(
        got.answer(),
        [
            "example.com. 60 IN AAAA 64:ff9b::c000:22a",
            "example.com. 70 IN AAAA 64:ff9b::c000:22b"
        ]
    );
    assert_eq!(got.authority(), Vec::<String>::new());
    assert_eq!(got.reply.header().rcode(), domain::base::iana::Rcode::NOERROR);
    assert_eq!(got.reply.header().id(), 42);
    assert_eq!(got.flags(), "rd");
    assert_eq!(got.translated, 1);
    // The lookup: the client's name, type A, class IN, to the address the query came
    // to, over its transport, the SOA TTL kept in the cookie.
    let (msg, req) = got.lookup.unwrap();
    let m = Message::from_octets(msg).unwrap();
    let question = m.sole_question().unwrap();
    assert_eq!(question.qname().to_string(), "example.com");
    assert_eq!(question.qtype(), domain::base::iana::Rtype::A);
    assert!(m.header().rd());
    assert_eq!(req.to, "[2001:db8::53]:53".parse().unwrap());
    assert_eq!(req.proto, UpstreamProto::Udp);
    assert_eq!(req.cookie, 70);
}

/// TestDNS64 "a empty": neither AAAA nor A; the A reply's authority (its SOA) is what
/// the client gets, under NOERROR.
#[test]
fn no_a_records_give_the_a_replys_denial() {
    let first = message(NAME_, rtype::AAAA, Rcode::NOERROR, false, &[], &[R::Soa(NAME_, 3600)]);
    let a = message(NAME_, rtype::A, Rcode::NOERROR, false, &[], &[R::Soa(NAME_, 3600)]);
    let got = ask(dns64("dns64"), V6, rtype::AAAA, NAME_, first, Some(a));
    assert_eq!(got.answer(), Vec::<String>::new());
    assert_eq!(
        got.authority(),
        ["example.com. 3600 IN SOA foo. bar. 1 7200 900 1209600 86400"]
    );
    assert_eq!(got.reply.header().rcode(), domain::base::iana::Rcode::NOERROR);
    assert_eq!(got.translated, 1);
}

/// TestDNS64 "non-nxdomain error": an error other than NXDOMAIN counts as an empty
/// answer (RFC 6147 5.1.2); without a SOA the TTL cap is 600.
#[test]
fn an_error_other_than_nxdomain_is_translated_with_the_600_cap() {
    let first = message(NAME_, rtype::AAAA, Rcode::REFUSED, false, &[], &[]);
    let a = message(
        NAME_,
        rtype::A,
        Rcode::NOERROR,
        false,
        &[R::A(NAME_, 60, [192, 0, 2, 42]), R::A(NAME_, 5000, [192, 0, 2, 43])],
        &[],
    );
    let got = ask(dns64("dns64"), V6, rtype::AAAA, NAME_, first, Some(a));
    assert_eq!(
        got.answer(),
        [
            "example.com. 60 IN AAAA 64:ff9b::c000:22a",
            "example.com. 600 IN AAAA 64:ff9b::c000:22b"
        ]
    );
    assert_eq!(got.reply.header().rcode(), domain::base::iana::Rcode::NOERROR);
}

/// TestDNS64 "nxdomain" (and TestResponseShould): a name error passes as it is, with
/// no lookup.
#[test]
fn nxdomain_passes_through_without_a_lookup() {
    let first = message(NAME_, rtype::AAAA, Rcode::NXDOMAIN, false, &[], &[R::Soa(NAME_, 3600)]);
    let got = ask(dns64("dns64"), V6, rtype::AAAA, NAME_, first, None);
    assert!(got.lookup.is_none());
    assert_eq!(got.reply.header().rcode(), domain::base::iana::Rcode::NXDOMAIN);
    assert_eq!(
        got.authority(),
        ["example.com. 3600 IN SOA foo. bar. 1 7200 900 1209600 86400"]
    );
    assert_eq!(got.translated, 0);
}

/// TestDNS64 "AAAA record": AAAA records are the answer (RFC 6147 5.1.1); with
/// translate_all (TestResponseShould's last case) they are replaced by translated ones.
#[test]
fn existing_aaaa_pass_unless_translate_all() {
    let aaaa = || {
        message(
            NAME_,
            rtype::AAAA,
            Rcode::NOERROR,
            false,
            &[R::Aaaa(NAME_, 60, "::1"), R::Aaaa(NAME_, 5000, "::2")],
            &[],
        )
    };
    let a = message(
        NAME_,
        rtype::A,
        Rcode::NOERROR,
        false,
        &[R::A(NAME_, 60, [192, 0, 2, 42])],
        &[],
    );
    let got = ask(dns64("dns64"), V6, rtype::AAAA, NAME_, aaaa(), Some(a.clone()));
    assert!(got.lookup.is_none());
    assert_eq!(
        got.answer(),
        ["example.com. 60 IN AAAA ::1", "example.com. 5000 IN AAAA ::2"]
    );
    let got = ask(
        dns64("dns64 {\n translate_all\n }"),
        V6,
        rtype::AAAA,
        NAME_,
        aaaa(),
        Some(a),
    );
    assert!(got.lookup.is_some());
    assert_eq!(got.answer(), ["example.com. 60 IN AAAA 64:ff9b::c000:22a"]);
}

/// TestDNS64 "truncated A response": the A reply's TC goes to the client.
#[test]
fn a_truncated_a_reply_truncates_the_answer() {
    let first = message(NAME_, rtype::AAAA, Rcode::NOERROR, false, &[], &[R::Soa(NAME_, 70)]);
    let a = message(
        NAME_,
        rtype::A,
        Rcode::NOERROR,
        true,
        &[R::A(NAME_, 60, [192, 0, 2, 42])],
        &[],
    );
    let got = ask(dns64("dns64"), V6, rtype::AAAA, NAME_, first, Some(a));
    assert_eq!(got.answer(), ["example.com. 60 IN AAAA 64:ff9b::c000:22a"]);
    assert_eq!(got.flags(), "tc rd");
}

/// TestRequestShouldIntercept: AAAA from IPv6 clients; from IPv4 ones (IPv4-mapped
/// addresses included) only with allow_ipv4; never another type.
#[test]
fn which_queries_are_translated() {
    let first = || message(NAME_, rtype::AAAA, Rcode::NOERROR, false, &[], &[R::Soa(NAME_, 70)]);
    let a = || {
        message(
            NAME_,
            rtype::A,
            Rcode::NOERROR,
            false,
            &[R::A(NAME_, 60, [192, 0, 2, 42])],
            &[],
        )
    };
    for (options, client, qtype, translated) in [
        ("dns64 {\n allow_ipv4\n }", V6, rtype::AAAA, true),
        ("dns64 {\n allow_ipv4\n }", V4, rtype::AAAA, true),
        ("dns64", V4, rtype::AAAA, false),
        ("dns64", "[::ffff:192.0.2.1]:5353", rtype::AAAA, false),
        ("dns64", V6, rtype::AAAA, true),
        ("dns64", V6, rtype::A, false),
        ("dns64 {\n allow_ipv4\n }", V6, rtype::TXT, false),
    ] {
        let got = ask(dns64(options), client, qtype, NAME_, first(), Some(a()));
        assert_eq!(got.lookup.is_some(), translated, "{options} {client} {qtype}");
        assert_eq!(got.translated, u64::from(translated), "{options} {client} {qtype}");
    }
}

/// RFC 6147 5.3.3: records other than A (a CNAME chain) are kept as they are; the A
/// records of the chain's target are translated under their own name.
#[test]
fn cname_chains_are_kept() {
    let first = message(
        "www.example.com.",
        rtype::AAAA,
        Rcode::NOERROR,
        false,
        &[],
        &[R::Soa(NAME_, 300)],
    );
    let a = message(
        "www.example.com.",
        rtype::A,
        Rcode::NOERROR,
        false,
        &[
            R::Cname("www.example.com.", 100, "edge.example.net."),
            R::A("edge.example.net.", 30, [198, 51, 100, 7]),
        ],
        &[],
    );
    let got = ask(
        dns64("dns64 64:ff9b:1::/48"),
        V6,
        rtype::AAAA,
        "www.example.com.",
        first,
        Some(a),
    );
    assert_eq!(
        got.answer(),
        [
            "www.example.com. 100 IN CNAME edge.example.net.",
            "edge.example.net. 30 IN AAAA 64:ff9b:1:c633:64:700::"
        ]
    );
}

/// An A lookup with no reply (CoreDNS: the lookup's error) is SERVFAIL, not counted;
/// a reply that TC marks as cut short by this server is passed on for the TCP retry.
#[test]
fn a_failed_lookup_is_servfail_and_a_truncated_reply_passes() {
    let first = || message(NAME_, rtype::AAAA, Rcode::NOERROR, false, &[], &[R::Soa(NAME_, 70)]);
    let got = ask(dns64("dns64"), V6, rtype::AAAA, NAME_, first(), None);
    assert!(got.lookup.is_some());
    assert_eq!(got.reply.header().rcode(), domain::base::iana::Rcode::SERVFAIL);
    assert_eq!(got.translated, 0);
    let cut = message(NAME_, rtype::AAAA, Rcode::NOERROR, true, &[], &[]);
    let got = ask(dns64("dns64"), V6, rtype::AAAA, NAME_, cut, None);
    assert!(got.lookup.is_none());
    assert_eq!(got.flags(), "tc rd");
}

/// The counter appears once it counts, under its server label, once per scrape however
/// many dns64 blocks share the label.
#[test]
fn translated_requests_are_counted_per_server() {
    let process = ProcessState::new();
    let routes: Vec<Arc<RouteTag>> = ["a.", "b."]
        .iter()
        .enumerate()
        .map(|(slot, zone)| {
            Arc::new(RouteTag {
                slot,
                server: "dns://:1053".into(),
                zone: (*zone).into(),
            })
        })
        .collect();
    let (one, two) = (dns64("dns64"), dns64("dns64"));
    one.attach(&AttachCtx::routes(&routes[..1], &process));
    two.attach(&AttachCtx::routes(&routes[1..], &process));
    let mut out = Families::default();
    one.metrics(&mut out);
    assert!(!out.render().contains("dns64"));
    one.counters.get().unwrap().by_slot[0]
        .as_ref()
        .unwrap()
        .fetch_add(2, Ordering::Relaxed);
    let mut out = Families::default();
    one.metrics(&mut out);
    two.metrics(&mut out);
    let text = out.render();
    assert!(
        text.contains("coredns_dns64_requests_translated_total{server=\"dns://:1053\"} 2\n"),
        "{text}"
    );
}

/// A failure the server wrote (a later plugin failed) is not translated: CoreDNS's dns64
/// has no written message then and returns the error (dns64.go ServeDNS); translating it
/// would turn an outage into NODATA. Review finding: forward timeouts became empty NOERROR.
#[test]
fn a_failure_the_server_wrote_is_not_translated() {
    let got = ask_after(dns64("dns64"), V6, rtype::AAAA, NAME_, Arc::new(Failing), None);
    assert!(got.lookup.is_none());
    assert_eq!(got.reply.header().rcode(), domain::base::iana::Rcode::SERVFAIL);
    assert_eq!(got.translated, 0);
}

/// acl's refusal stands: CoreDNS's in-process A lookup carries the client's address and
/// is refused again; ours comes from the server's address, which acl would let through.
#[test]
fn an_acl_refusal_is_not_translated() {
    let got = ask_after(dns64("dns64"), V6, rtype::AAAA, NAME_, Arc::new(Refusing), None);
    assert!(got.lookup.is_none());
    assert_eq!(got.reply.header().rcode(), domain::base::iana::Rcode::REFUSED);
}
