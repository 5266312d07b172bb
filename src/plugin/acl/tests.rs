//! Setup errors and decision tables. Each case cites the CoreDNS test it mirrors
//! (plugin/acl/setup_test.go, acl_test.go, CoreDNS v1.14) by its name there.

use super::*;
use crate::chain::testing::with_query;
use crate::chain::{Metadata, RouteTag};
use crate::config::parse_str;
use crate::dns::{QueryBuilder, rtype};
use crate::process::ProcessState;

/// The plugin set up from `lines` in a block for `zone`.
fn acl(zone: &str, lines: &str) -> Result<Acl, ConfigError> {
    let text = format!("{zone} {{\n{lines}\n}}\n");
    let parsed = parse_str(&text, "Corefile", std::path::Path::new("."))?;
    let dirs: Vec<&Directive> = parsed.blocks[0].directives.iter().collect();
    let zones = [Zone::new(zone).unwrap()];
    let process = ProcessState::new();
    let ctx = SetupCtx {
        zones: &zones,
        config_dir: ".".into(),
        workers: 1,
        binds: None,
        process: &process,
    };
    let (rules, zones) = parse(&dirs, &ctx)?;
    Ok(Acl {
        rules,
        zones,
        workers: 1,
        attached: OnceLock::new(),
    })
}

fn err(lines: &str) -> String {
    match acl(".", lines) {
        Ok(_) => "accepted".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn setup_accepts_what_coredns_accepts() {
    // setup_test.go, the cases that must parse.
    for lines in [
        "acl {\nblock type A net 192.168.0.0/16\n}",
        "acl {\nblock type * net 192.168.0.0/16\n}",
        "acl {\nblock type A net *\n}",
        "acl {\nallow type * net 192.168.1.0/24\nblock type * net 192.168.0.0/16\n}",
        "acl {\nfilter type A net 192.168.0.0/16\n}",
        "acl {\nallow type * net 192.168.0.0/16\nblock type * net *\n}",
        "acl {\ndrop type * net 192.168.0.0/16\n}",
        "acl a.example.org {\nblock type * net 192.168.1.0/24\n}\nacl b.example.org {\nblock type * net 192.168.2.0/24\n}",
        "acl example.org {\nblock type * net 192.168.1.0/24 192.168.3.0/24\n}",
        "acl example.org {\nblock type TXT ANY CNAME net 192.168.3.0/24\n}",
        "acl {\nblock type A net 2001:0db8:85a3:0000:0000:8a2e:0370:7334\n}",
        "acl {\nblock type A\n}",
        "acl {\nallow net 2001:db8:abcd:0012::0/64\nblock\n}",
        "acl example.org {\nblock net 2001:db8:abcd:0012::0/64 2001:db8:85a3::8a2e:370:7334/64\n}",
        // Keywords in any case (setup.go lower-cases action and section names).
        "acl {\nBLOCK TYPE A NET 10.0.0.0/8\n}",
        // An acl with no policy allows everything (acl.go: no rule decides).
        "acl",
    ] {
        assert_eq!(err(lines), "accepted", "{lines}");
    }
}

#[test]
fn setup_errors_are_corednss() {
    // setup_test.go "Missing argument 1/2", "Illegal argument 1-4", the IPv6 ones.
    let cases = [
        (
            "acl {\nblock A net 192.168.0.0/16\n}",
            "Corefile:3 - acl: unexpected token \"A\"; expect 'type | net'",
        ),
        (
            "acl {\nblock type net 192.168.0.0/16\n}",
            "Corefile:3 - acl: no token specified in \"type\" section",
        ),
        (
            "acl {\nblock type ABC net 192.168.0.0/16\n}",
            "Corefile:3 - acl: unexpected token \"ABC\"; expect legal QTYPE",
        ),
        (
            "acl {\nblck type A net 192.168.0.0/16\n}",
            "Corefile:3 - acl: unexpected token \"blck\"; expect 'allow', 'block', 'filter' or 'drop'",
        ),
        (
            "acl {\nblock type A net 192.168.0/16\n}",
            "Corefile:3 - acl: illegal CIDR notation \"192.168.0/16\"",
        ),
        (
            "acl {\nblock type A net 192.168.0.0/33\n}",
            "Corefile:3 - acl: illegal CIDR notation \"192.168.0.0/33\"",
        ),
        (
            "acl {\nblock type A net 2001::85a3::8a2e:370:7334\n}",
            "Corefile:3 - acl: illegal CIDR notation \"2001::85a3::8a2e:370:7334/128\"",
        ),
        // StringToType is case-sensitive: `a` is no type there.
        (
            "acl {\nblock type a\n}",
            "Corefile:3 - acl: unexpected token \"a\"; expect legal QTYPE",
        ),
        (
            "acl {\nblock net\n}",
            "Corefile:3 - acl: no token specified in \"net\" section",
        ),
        ("acl example..org", "Corefile:2 - acl: invalid zone 'example..org'"),
    ];
    for (lines, want) in cases {
        assert_eq!(err(lines), want, "{lines}");
    }
}

/// Runs the plugin on a query for `name`/`qtype` from `source`: the rcode and EDE
/// info code of the reply, `"next"` when the query went on, `"dropped"` when nothing
/// is sent.
fn verdict(a: &Acl, name: &str, qtype: u16, source: &str) -> String {
    let mut raw = Vec::new();
    let wire = crate::dns::wire::name_from_str(name).unwrap();
    QueryBuilder::new(&wire, qtype).id(7).edns(1232).write(&mut raw);
    let client = std::net::SocketAddr::new(source.parse().unwrap(), 5300);
    with_query(&raw, client, Metadata::NONE, |q| match a.serve(q) {
        Step::Next => "next".to_string(),
        Step::Answered if q.resp.is_withheld() => "dropped".to_string(),
        Step::Answered => {
            let msg = q.resp.finish().to_vec();
            let m = domain::base::Message::from_octets(msg).unwrap();
            let ede = m
                .opt()
                .and_then(|o| {
                    o.opt()
                        .iter::<domain::base::opt::ExtendedError<_>>()
                        .flatten()
                        .next()
                        .map(|e| u16::from(e.code()))
                })
                .map_or(String::new(), |c| format!(" ede {c}"));
            let counts = m.header_counts();
            assert_eq!(counts.ancount() + counts.nscount(), 0, "acl replies carry no records");
            format!("{}{ede}", m.header().rcode())
        }
        other => panic!("{other:?}"),
    })
}

#[test]
fn the_first_matching_policy_decides_as_in_corednss_tests() {
    // acl_test.go, by name: (Corefile lines, query name, type, source, verdict).
    let a = rtype::A;
    let cases: &[(&str, &str, u16, &str, &str)] = &[
        (
            "block type A net 192.168.0.0/16",
            "www.example.org.",
            a,
            "192.168.0.2",
            "REFUSED ede 15",
        ), // Blacklist 1 BLOCKED
        (
            "block type A net 192.168.0.0/16",
            "www.example.org.",
            a,
            "192.167.0.2",
            "next",
        ), // Blacklist 1 ALLOWED
        (
            "block type * net 192.168.0.0/16",
            "www.example.org.",
            rtype::TXT,
            "192.168.0.2",
            "REFUSED ede 15",
        ), // Blacklist 2
        (
            "block type A net *",
            "www.example.org.",
            a,
            "10.1.0.2",
            "REFUSED ede 15",
        ), // Blacklist 3 BLOCKED
        (
            "block type A net *",
            "www.example.org.",
            rtype::AAAA,
            "10.1.0.2",
            "next",
        ), // Blacklist 3 ALLOWED
        (
            "block type A net 10.1.0.1",
            "www.example.org.",
            a,
            "10.1.0.1",
            "REFUSED ede 15",
        ), // Blacklist 4 Single IP
        ("block type A net 10.1.0.1", "www.example.org.", a, "10.1.0.2", "next"),
        (
            "filter type A net 192.168.0.0/16",
            "www.example.org.",
            a,
            "192.168.0.2",
            "NOERROR ede 17",
        ), // Filter 1 FILTERED
        (
            "filter type A net 192.168.0.0/16",
            "www.example.org.",
            a,
            "192.167.0.2",
            "next",
        ), // Filter 1 ALLOWED
        (
            "allow net 192.168.0.0/16\nblock",
            "www.example.org.",
            a,
            "192.168.0.2",
            "next",
        ), // Whitelist 1 ALLOWED
        (
            "allow net 192.168.0.0/16\nblock",
            "www.example.org.",
            a,
            "192.167.0.2",
            "REFUSED ede 15",
        ), // Whitelist 1 REFUSED
        (
            "drop net 192.168.0.0/16",
            "www.example.org.",
            a,
            "192.168.0.2",
            "dropped",
        ), // Drop 1 DROPPED
        (
            "block net 192.168.1.0/24\ndrop net 192.168.0.0/16",
            "www.example.org.",
            a,
            "192.168.1.2",
            "REFUSED ede 15",
        ), // Subnet-Order 1
        (
            "drop net 192.168.0.0/16\nblock net 192.168.1.0/24",
            "www.example.org.",
            a,
            "192.168.1.1",
            "dropped",
        ), // Subnet-Order 2
        (
            "block type A net 2001:db8:abcd:0012::0/64",
            "www.example.org.",
            a,
            "2001:db8:abcd:0012::1230",
            "REFUSED ede 15",
        ), // Blacklist 1 BLOCKED IPv6
        (
            "block type A net 2001:db8:abcd:0012::0/64",
            "www.example.org.",
            a,
            "2001:db8:abcd:0013::0",
            "next",
        ), // Blacklist 1 ALLOWED IPv6
        (
            "block type A",
            "www.example.org.",
            a,
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            "REFUSED ede 15",
        ), // Blacklist 2 BLOCKED IPv6
        // An IPv4 client on a dual-stack socket is its IPv4 address.
        (
            "block net 192.168.0.0/16",
            "www.example.org.",
            a,
            "::ffff:192.168.3.4",
            "REFUSED ede 15",
        ),
    ];
    for &(lines, name, qtype, source, want) in cases {
        let p = acl("example.org", &format!("acl example.org {{\n{lines}\n}}")).unwrap();
        assert_eq!(verdict(&p, name, qtype, source), want, "{lines} / {name} from {source}");
    }
    // "Drop-Type 1 DROPPED": a rule of other zones never applies.
    let p = acl(".", "acl example.org {\ndrop type A\nallow net 192.168.0.0/16\n}").unwrap();
    assert_eq!(verdict(&p, "a.example.com.", a, "192.168.1.2"), "next");
    // "Fine-Grained 1/2/3": each acl applies to its own zones only, checked in order.
    let two =
        "acl a.example.org {\nblock net 192.168.1.0/24\n}\nacl b.example.org {\nblock type * net 192.168.2.0/24\n}";
    let p = acl("example.org", two).unwrap();
    assert_eq!(verdict(&p, "a.example.org.", a, "192.168.1.2"), "REFUSED ede 15");
    assert_eq!(verdict(&p, "a.example.org.", a, "192.168.2.2"), "next");
    assert_eq!(verdict(&p, "b.example.org.", a, "192.168.2.2"), "REFUSED ede 15");
    assert_eq!(verdict(&p, "b.example.org.", a, "192.168.1.2"), "next");
    // acl.go: an allow in an earlier rule ends the checking; a rule where nothing
    // matched hands on to the next.
    let order = "acl {\nallow net 10.0.0.0/8\n}\nacl {\nblock\n}";
    let p = acl(".", order).unwrap();
    assert_eq!(verdict(&p, "x.", a, "10.9.9.9"), "next");
    assert_eq!(verdict(&p, "x.", a, "11.9.9.9"), "REFUSED ede 15");
}

#[test]
fn the_ede_needs_edns_in_the_query() {
    let p = acl(".", "acl {\nblock\n}").unwrap();
    let raw = QueryBuilder::new(b"\x01x\x00", rtype::A).id(7).to_vec();
    with_query(&raw, "10.0.0.1:53".parse().unwrap(), Metadata::NONE, |q| {
        assert!(matches!(p.serve(q), Step::Answered));
        let m = domain::base::Message::from_octets(q.resp.finish().to_vec()).unwrap();
        assert_eq!(m.header().rcode(), domain::base::iana::Rcode::REFUSED);
        assert!(m.opt().is_none());
    });
}

#[test]
fn counters_are_per_server_and_zone() {
    let p = acl(
        "example.org",
        "acl a.example.org example.org {\nblock net 10.0.0.0/8\nfilter net 11.0.0.0/8\ndrop net 12.0.0.0/8\n}",
    )
    .unwrap();
    let process = ProcessState::new();
    let route = Arc::new(RouteTag {
        slot: 0,
        server: "dns://:53".into(),
        zone: ".".into(),
    });
    p.attach(&AttachCtx::routes(&[route], &process));
    for (name, source) in [
        ("x.a.example.org.", "10.0.0.1"),
        ("x.a.example.org.", "10.0.0.2"),
        ("b.example.org.", "11.0.0.1"),
        ("b.example.org.", "12.0.0.1"),
        ("b.example.org.", "13.0.0.1"),
    ] {
        verdict(&p, name, rtype::A, source);
    }
    let mut out = Families::default();
    p.metrics(&mut out);
    let text = out.render();
    for line in [
        "coredns_acl_blocked_requests_total{server=\"dns://:53\",zone=\"a.example.org.\",view=\"\"} 2",
        "coredns_acl_blocked_requests_total{server=\"dns://:53\",zone=\"example.org.\",view=\"\"} 0",
        "coredns_acl_filtered_requests_total{server=\"dns://:53\",zone=\"example.org.\",view=\"\"} 1",
        "coredns_acl_dropped_requests_total{server=\"dns://:53\",zone=\"example.org.\",view=\"\"} 1",
        "coredns_acl_allowed_requests_total{server=\"dns://:53\",view=\"\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
}

#[test]
fn deciding_allocates_nothing() {
    // 10,000 prefixes in one policy: still a binary search, and no allocation.
    let many: Vec<String> = (0..10_000u32)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let p = acl(
        ".",
        &format!(
            "acl {{\nblock net {}\nfilter type AAAA\nallow net 11.0.0.0/8\n}}",
            many.join(" ")
        ),
    )
    .unwrap();
    let process = ProcessState::new();
    let route = Arc::new(RouteTag {
        slot: 0,
        server: "dns://:53".into(),
        zone: ".".into(),
    });
    p.attach(&AttachCtx::routes(&[route], &process));
    for (source, qtype, want) in [
        ("10.39.15.1", rtype::A, "REFUSED ede 15"),
        ("12.0.0.1", rtype::AAAA, "NOERROR ede 17"),
        ("11.0.0.1", rtype::A, "next"),
        ("12.0.0.1", rtype::A, "next"),
    ] {
        assert_eq!(verdict(&p, "x.", qtype, source), want, "{source}");
        let mut raw = Vec::new();
        QueryBuilder::new(b"\x01x\x00", qtype).edns(1232).write(&mut raw);
        let client = std::net::SocketAddr::new(source.parse().unwrap(), 53);
        with_query(&raw, client, Metadata::NONE, |q| {
            p.serve(q);
            let n = crate::plugin::prometheus::tests::allocations_in(|| {
                for _ in 0..1000 {
                    p.serve(q);
                }
            });
            assert_eq!(n, 0, "{source}");
        });
    }
}
