//! The `file` plugin end to end: a zone file with every common type served by the real
//! binary over UDP and TCP, whole records compared; reloads on a new serial (and none
//! without), under query load; a bad zone file at start-up and on reload; the corpus's
//! split-horizon Corefile. Each expectation names the CoreDNS test or README section it
//! mirrors (plugin/file).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};

use testkit::corpus::Corpus;
use testkit::prelude::*;
use testkit::wire::Client;

/// A zone with every common type (A AAAA CNAME MX NS PTR SOA SRV TXT CAA), `$TTL`,
/// `$INCLUDE`, relative names, a delegation with glue, a wildcard, an empty
/// non-terminal. `{serial}` and `{www}` are filled per test.
const ZONE: &str = r#"$ORIGIN example.org.
$TTL 3600
@       IN SOA  ns1.example.org. hostmaster.example.org. (
                {serial} 7200 3600 1209600 300 )
        IN NS   ns1
        IN MX   10 mail
        IN CAA  0 issue "ca.example.net"
ns1     IN A    192.0.2.53
mail    IN A    192.0.2.25
        IN AAAA 2001:db8::25
www     IN A    {www}
        IN AAAA 2001:db8::80
        IN TXT  "hello world"
alias   IN CNAME www
_http._tcp IN SRV 10 60 80 www
*.wild  IN TXT  "wild"
sub     IN NS   ns.sub
ns.sub  IN A    192.0.2.54
deep.ent IN A   192.0.2.7
$INCLUDE reverse.inc rev.example.org.
"#;

const REVERSE: &str = "80 IN PTR www.example.org.\n";

fn zone(serial: u32, www: &str) -> String {
    ZONE.replace("{serial}", &serial.to_string()).replace("{www}", www)
}

/// Writes the zone files into a directory of the test's own.
fn zone_dir(serial: u32, www: &str) -> Scratch {
    let dir = Scratch::new("zone");
    dir.write("db.example.org", &zone(serial, www));
    dir.write("reverse.inc", REVERSE);
    dir
}

/// The same question over UDP and TCP; both replies must agree whole.
fn ask(addr: std::net::SocketAddr, name: &str, qtype: Rtype) -> Message<Vec<u8>> {
    let q = query_bytes(name, qtype, Some(1232), 0x7777);
    let udp = udp_exchange(addr, &q);
    let tcp = tcp_exchange(addr, &q);
    for s in ["answer", "authority", "additional"] {
        assert_eq!(
            section(&udp, s),
            section(&tcp, s),
            "{name} {qtype}: UDP and TCP differ in {s}"
        );
    }
    assert_eq!(rcode(&udp), rcode(&tcp), "{name} {qtype}");
    assert_eq!(udp.header().aa(), tcp.header().aa(), "{name} {qtype}");
    udp
}

/// A reply as compared: (rcode, AA, answer, authority, additional).
type Whole = (Rcode, bool, Vec<String>, Vec<String>, Vec<String>);

fn whole(m: &Message<Vec<u8>>) -> Whole {
    (
        rcode(m),
        m.header().aa(),
        section(m, "answer"),
        section(m, "authority"),
        section(m, "additional"),
    )
}

fn v(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| s.to_string()).collect()
}

const NS: &str = "example.org. 3600 IN NS ns1.example.org.";
/// RFC 2308 3: the SOA of a negative answer has TTL min(3600, MINIMUM 300).
const NEG_SOA: &str = "example.org. 300 IN SOA ns1.example.org. hostmaster.example.org. 1 7200 3600 1209600 300";

#[test]
fn a_zone_with_every_common_type_answers_whole_records_over_udp_and_tcp() {
    let dir = zone_dir(1, "192.0.2.80");
    let s = Server::start(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    file {}/db.example.org example.org\n}}\n",
        dir.0.display()
    ));
    let a = s.addr();
    let cases: Vec<(&str, Rtype, Whole)> = vec![
        // lookup_test.go: a positive answer is authoritative, apex NS in authority.
        (
            "www.example.org",
            Rtype::A,
            (
                Rcode::NOERROR,
                true,
                v(&["www.example.org. 3600 IN A 192.0.2.80"]),
                v(&[NS]),
                vec![],
            ),
        ),
        (
            "www.example.org",
            Rtype::AAAA,
            (
                Rcode::NOERROR,
                true,
                v(&["www.example.org. 3600 IN AAAA 2001:db8::80"]),
                v(&[NS]),
                vec![],
            ),
        ),
        (
            "www.example.org",
            Rtype::TXT,
            (
                Rcode::NOERROR,
                true,
                v(&["www.example.org. 3600 IN TXT \"hello world\""]),
                v(&[NS]),
                vec![],
            ),
        ),
        // lookup.go: the apex SOA with the NS in authority; the apex NS with its
        // in-zone target's address in additional and no authority.
        (
            "example.org",
            Rtype::SOA,
            (
                Rcode::NOERROR,
                true,
                v(&["example.org. 3600 IN SOA ns1.example.org. hostmaster.example.org. 1 7200 3600 1209600 300"]),
                v(&[NS]),
                vec![],
            ),
        ),
        (
            "example.org",
            Rtype::NS,
            (
                Rcode::NOERROR,
                true,
                v(&[NS]),
                vec![],
                v(&["ns1.example.org. 3600 IN A 192.0.2.53"]),
            ),
        ),
        // `additionalProcessing`: MX and SRV targets' addresses in additional.
        (
            "example.org",
            Rtype::MX,
            (
                Rcode::NOERROR,
                true,
                v(&["example.org. 3600 IN MX 10 mail.example.org."]),
                v(&[NS]),
                v(&[
                    "mail.example.org. 3600 IN A 192.0.2.25",
                    "mail.example.org. 3600 IN AAAA 2001:db8::25",
                ]),
            ),
        ),
        (
            "_http._tcp.example.org",
            Rtype::SRV,
            (
                Rcode::NOERROR,
                true,
                // (domain's text form of SRV has no final dot.)
                v(&["_http._tcp.example.org. 3600 IN SRV 10 60 80 www.example.org"]),
                v(&[NS]),
                v(&[
                    "www.example.org. 3600 IN A 192.0.2.80",
                    "www.example.org. 3600 IN AAAA 2001:db8::80",
                ]),
            ),
        ),
        (
            "example.org",
            Rtype::CAA,
            (
                Rcode::NOERROR,
                true,
                v(&["example.org. 3600 IN CAA 0 issue \"ca.example.net\""]),
                v(&[NS]),
                vec![],
            ),
        ),
        // lookup_test.go: a CNAME in the zone is followed.
        (
            "alias.example.org",
            Rtype::A,
            (
                Rcode::NOERROR,
                true,
                v(&[
                    "alias.example.org. 3600 IN CNAME www.example.org.",
                    "www.example.org. 3600 IN A 192.0.2.80",
                ]),
                v(&[NS]),
                vec![],
            ),
        ),
        // wildcard_test.go: synthesised under the name asked.
        (
            "a.wild.example.org",
            Rtype::TXT,
            (
                Rcode::NOERROR,
                true,
                v(&["a.wild.example.org. 3600 IN TXT \"wild\""]),
                v(&[NS]),
                vec![],
            ),
        ),
        // NODATA and NXDOMAIN: the SOA in authority (lookup_test.go), ent_test.go's
        // empty non-terminal is NODATA.
        (
            "www.example.org",
            Rtype::MX,
            (Rcode::NOERROR, true, vec![], v(&[NEG_SOA]), vec![]),
        ),
        (
            "nope.example.org",
            Rtype::A,
            (Rcode::NXDOMAIN, true, vec![], v(&[NEG_SOA]), vec![]),
        ),
        (
            "ent.example.org",
            Rtype::A,
            (Rcode::NOERROR, true, vec![], v(&[NEG_SOA]), vec![]),
        ),
        // delegation_test.go: a referral, not authoritative, with glue.
        (
            "host.sub.example.org",
            Rtype::A,
            (
                Rcode::NOERROR,
                false,
                vec![],
                v(&["sub.example.org. 3600 IN NS ns.sub.example.org."]),
                v(&["ns.sub.example.org. 3600 IN A 192.0.2.54"]),
            ),
        ),
        // The PTR from the $INCLUDEd file, read with the origin the $INCLUDE gave
        // (include_test.go; RFC 1035 5.1).
        (
            "80.rev.example.org",
            Rtype::PTR,
            (
                Rcode::NOERROR,
                true,
                v(&["80.rev.example.org. 3600 IN PTR www.example.org."]),
                v(&[NS]),
                vec![],
            ),
        ),
    ];
    for (name, qtype, want) in cases {
        let got = whole(&ask(a, name, qtype));
        assert_eq!(got, want, "{name} {qtype}");
    }
}

#[test]
fn a_zone_reloads_on_a_new_serial_and_not_without() {
    let dir = zone_dir(1, "192.0.2.80");
    let path = dir.0.join("db.example.org");
    let s = Server::start(&format!(
        "example.org:{{port}} {{\n    bind 127.0.0.1\n    file {} {{\n        reload 200ms\n    }}\n}}\n",
        path.display()
    ));
    let www = |s: &Server| section(&s.query("www.example.org", Rtype::A), "answer");
    assert_eq!(www(&s), ["www.example.org. 3600 IN A 192.0.2.80"]);
    // README "Syntax", reload: only a new SOA serial makes a reload. The same serial
    // with a new address: still the old one after many checks.
    std::fs::write(&path, zone(1, "192.0.2.81")).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(www(&s), ["www.example.org. 3600 IN A 192.0.2.80"]);
    assert_eq!(s.count_lines("Successfully reloaded zone"), 0);
    // A new serial: the new zone, within a few checks.
    std::fs::write(&path, zone(2, "192.0.2.81")).unwrap();
    wait_until("the reload", Duration::from_secs(10), || {
        www(&s) == ["www.example.org. 3600 IN A 192.0.2.81"]
    });
    assert_eq!(
        section(&s.query_tcp("example.org", Rtype::SOA), "answer"),
        ["example.org. 3600 IN SOA ns1.example.org. hostmaster.example.org. 2 7200 3600 1209600 300"]
    );
    s.wait_lines("Successfully reloaded zone", 1, Duration::from_secs(5));
}

#[test]
fn a_zone_reloaded_under_query_load_loses_no_answer_and_gives_no_wrong_one() {
    // Each version n of the zone has www at 192.0.2.(100+n) and says n in a TXT;
    // clients ask for both while the file changes five times. Every query must be
    // answered, every answer be one version's (never empty, never a mix in one reply),
    // and each client must see the versions in order.
    let dir = Scratch::new("zone");
    let path = dir.0.join("db.example.org");
    let version = |n: u32| format!("{}ver IN TXT \"{n}\"\n", zone(n, &format!("192.0.2.{}", 100 + n)));
    std::fs::write(&path, version(1)).unwrap();
    dir.write("reverse.inc", REVERSE);
    let s = Server::start(&format!(
        "example.org:{{port}} {{\n    bind 127.0.0.1\n    file {} {{\n        reload 100ms\n    }}\n}}\n",
        path.display()
    ));
    let addr = s.addr();
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let done = done.clone();
            let answered = answered.clone();
            std::thread::spawn(move || {
                let mut client = Client::new(addr, c % 2 == 1, Duration::from_secs(3));
                let mut last = 0u32;
                let mut errors = Vec::new();
                // Bounded: at most 20,000 queries or until the writer is done.
                for i in 0..20_000u32 {
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    let q = query_bytes("ver.example.org", Rtype::TXT, Some(1232), i as u16);
                    let Some(reply) = client.ask(&q) else {
                        errors.push(format!("query {i}: no reply"));
                        break;
                    };
                    let m = Message::from_octets(reply.to_vec()).unwrap();
                    let ans = section(&m, "answer");
                    let n: Option<u32> = match ans.as_slice() {
                        [one] => one.rsplit('"').nth(1).and_then(|t| t.parse().ok()),
                        _ => None,
                    };
                    match n {
                        Some(n) if n >= last && rcode(&m) == Rcode::NOERROR => last = n,
                        _ => errors.push(format!("query {i}: {:?} after version {last}", ans)),
                    }
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                (last, errors)
            })
        })
        .collect();
    for n in 2..=6 {
        std::thread::sleep(Duration::from_millis(400));
        let tmp = dir.0.join("db.next");
        std::fs::write(&tmp, version(n)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }
    wait_until("the last version", Duration::from_secs(10), || {
        section(&s.query("ver.example.org", Rtype::TXT), "answer") == ["ver.example.org. 3600 IN TXT \"6\""]
    });
    done.store(true, Ordering::Relaxed);
    let started = Instant::now();
    for c in clients {
        let (last, errors) = c.join().unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert!(last >= 1);
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(answered.load(Ordering::Relaxed) > 100, "the clients ran");
    assert_eq!(
        section(&s.query("www.example.org", Rtype::A), "answer"),
        ["www.example.org. 3600 IN A 192.0.2.106"]
    );
}

#[test]
fn a_bad_zone_file_fails_check_with_its_file_and_line() {
    let dir = zone_dir(1, "192.0.2.80");
    // Line 11 of the zone: an address that is none.
    let bad = zone(1, "192.0.2.300");
    dir.write("db.bad", &bad);
    let corefile = dir.write(
        "Corefile",
        &format!("example.org {{\n    file {}/db.bad\n}}\n", dir.0.display()),
    );
    let (code, out, err) = run(&["-check", "-conf", corefile.to_str().unwrap()], &dir.0, None);
    assert_ne!(code, 0, "{out}{err}");
    let want = format!(
        "{}/db.bad:11 - file: failed to parse zone example.org.",
        dir.0.display()
    );
    assert!(format!("{out}{err}").contains(&want), "{want}\nnot in\n{out}{err}");
}

#[test]
fn a_bad_zone_file_on_reload_keeps_the_old_zone_serving() {
    let dir = zone_dir(1, "192.0.2.80");
    let path = dir.0.join("db.example.org");
    let s = Server::start(&format!(
        "example.org:{{port}} {{\n    bind 127.0.0.1\n    file {} {{\n        reload 200ms\n    }}\n}}\n",
        path.display()
    ));
    std::fs::write(&path, zone(2, "192.0.2.300")).unwrap();
    s.wait_lines("Parsing zone", 1, Duration::from_secs(10));
    assert_eq!(
        section(&ask(s.addr(), "www.example.org", Rtype::A), "answer"),
        ["www.example.org. 3600 IN A 192.0.2.80"]
    );
    // Fixed, with the same new serial: read.
    std::fs::write(&path, zone(2, "192.0.2.82")).unwrap();
    wait_until("the fixed file", Duration::from_secs(10), || {
        section(&s.query("www.example.org", Rtype::A), "answer") == ["www.example.org. 3600 IN A 192.0.2.82"]
    });
}

#[test]
fn the_split_horizon_corefile_answers_the_internal_zone_beside_the_cluster() {
    let api = FakeApi::with_objects(base_cluster());
    let up = FakeUpstream::start();
    let s = Corpus::load("file-split-horizon.Corefile")
        .api(&api)
        .upstream(&up)
        .start();
    s.synced();
    let a = s.addr();
    // (The block's `cache 30` caps every TTL at 30 s: cache README.)
    const CORP_NS: &str = "corp.example. 30 IN NS ns1.corp.example.";
    // The zone file's records, whole (README "Description": authoritative answers,
    // NS in authority, MX/SRV targets' addresses in additional).
    let [udp, tcp] = s.both("intranet.corp.example", Rtype::A);
    assert_eq!(whole(&udp), whole(&tcp));
    let m = ask(a, "intranet.corp.example", Rtype::A);
    assert_eq!(
        whole(&m),
        (
            Rcode::NOERROR,
            true,
            v(&["intranet.corp.example. 30 IN A 10.20.1.10"]),
            v(&[CORP_NS]),
            vec![]
        )
    );
    let m = ask(a, "wiki.corp.example", Rtype::AAAA);
    assert_eq!(
        section(&m, "answer"),
        [
            "wiki.corp.example. 30 IN CNAME intranet.corp.example.",
            "intranet.corp.example. 30 IN AAAA fd00:20::10"
        ]
    );
    let m = ask(a, "_ldap._tcp.corp.example", Rtype::SRV);
    assert_eq!(section(&m, "additional"), ["ldap.corp.example. 30 IN A 10.20.1.30"]);
    assert_eq!(
        section(&ask(a, "build.dev.corp.example", Rtype::A), "answer"),
        ["build.dev.corp.example. 30 IN A 10.20.9.1"]
    );
    // A name the zone does not have: NXDOMAIN with the SOA, never forwarded.
    let m = ask(a, "nothere.corp.example", Rtype::A);
    assert_eq!(rcode(&m), Rcode::NXDOMAIN);
    assert_eq!(
        section(&m, "authority"),
        ["corp.example. 30 IN SOA ns1.corp.example. dns-admin.corp.example. 2026120701 3600 600 604800 60"]
    );
    assert_eq!(up.count_name("nothere.corp.example."), 0);
    // The cluster's block, as ever.
    assert_eq!(
        section(&ask(a, "kubernetes.default.svc.cluster.local", Rtype::A), "answer"),
        ["kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1"]
    );
}
