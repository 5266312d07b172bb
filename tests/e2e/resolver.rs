//! The resolver path, end to end: *forward* (UDP, TCP, truncation, failover and its
//! timing, health checks, `max_concurrent`, coalescing, spoofing resistance), *cache*
//! (every rule visible from outside), *loop* and *loadbalance*, and the whole standard
//! Kubernetes Corefile, with the real binary on 127.0.0.1 against the test kit's fake
//! upstream (`testkit/src/upstream.rs`) and fake API (`testkit/src/api`).
//!
//! Most servers get a second block, `up.probe.test`, answered by *whoami*: the harness
//! waits on it, so that no query reaches the fake upstream before the test sends one.

use std::collections::{BTreeSet, HashSet};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};

use testkit::prelude::*;
use testkit::upstream::SPOOFED;

// ------------------------------------------------------------------------------------
// Helpers

/// Starts a server whose `.` block holds `body` (one directive per line, unindented)
/// after `bind 127.0.0.1`, plus the `up.probe.test` block it is waited on with.
fn serve(body: &str, args: &[&str]) -> Server {
    let indented: String = body.lines().map(|l| format!("    {l}\n")).collect();
    let text = format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n{indented}}}\n\nup.probe.test:{{port}} {{\n    bind 127.0.0.1\n    whoami\n}}\n"
    );
    let mut launch = Launch::new(&text);
    launch.wait_for = Some("up.probe.test.");
    for a in args {
        launch = launch.arg(*a);
    }
    launch.start()
}

/// A query: one question, RD, EDNS (1232) with or without DO, CD as given.
fn query(name: &str, qtype: Rtype, id: u16, dnssec_ok: bool, cd: bool) -> Vec<u8> {
    testkit::wire::query_flags(name, qtype, id, Some(1232), dnssec_ok, cd)
}

/// A UDP exchange with the server, timed; None if no reply within `wait`.
fn timed_udp(s: &Server, msg: &[u8], wait: Duration) -> (Option<Message<Vec<u8>>>, Duration) {
    let t = Instant::now();
    let r = raw_udp(s.addr(), msg, wait).map(|r| Message::from_octets(r).expect("reply parses"));
    (r, t.elapsed())
}

/// A UDP query for `name`/`qtype` (EDNS, no DO), with a generous wait.
fn ask(s: &Server, name: &str, qtype: Rtype) -> Message<Vec<u8>> {
    let (r, _) = timed_udp(s, &query(name, qtype, 0x2a2a, false, false), Duration::from_secs(8));
    r.unwrap_or_else(|| panic!("no reply for {name} {qtype}\n{}", s.output()))
}

/// The same over TCP.
fn ask_tcp(s: &Server, name: &str, qtype: Rtype) -> Message<Vec<u8>> {
    let mut c = TcpStream::connect(s.addr()).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    write_frame(&mut c, &query(name, qtype, 0x2b2b, false, false));
    let r = read_frame(&mut c).unwrap_or_else(|| panic!("no TCP reply for {name}\n{}", s.output()));
    Message::from_octets(r).expect("reply parses")
}

/// The address data of the answer section, in order.
fn addrs(m: &Message<Vec<u8>>) -> Vec<String> {
    section(m, "answer")
        .iter()
        .filter(|r| r.contains(" IN A ") || r.contains(" IN AAAA "))
        .filter_map(|r| r.split_whitespace().last().map(str::to_string))
        .collect()
}

/// The TTLs of every record in answer and authority.
fn ttls(m: &Message<Vec<u8>>) -> Vec<u32> {
    let mut v: Vec<u32> = Vec::new();
    for sec in ["answer", "authority"] {
        for r in section(m, sec) {
            v.push(r.split_whitespace().nth(1).unwrap().parse().unwrap());
        }
    }
    v
}

/// The one TTL of the reply's records (all of them carry the same, behind *cache*).
fn ttl(m: &Message<Vec<u8>>) -> u32 {
    let t = ttls(m);
    assert!(!t.is_empty(), "no records in {:?}", section(m, "answer"));
    assert!(t.iter().all(|x| *x == t[0]), "TTLs differ: {t:?}");
    t[0]
}

/// The question name as written in the reply (no final dot).
fn qname(m: &Message<Vec<u8>>) -> String {
    m.sole_question().unwrap().qname().to_string()
}

fn scrape(port: u16) -> String {
    match http_get(port, "/metrics") {
        Ok((200, body)) => body,
        other => panic!("/metrics: {other:?}"),
    }
}

/// The sum of the samples of `name` whose labels include `labels`; None if none.
fn metric(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (n, ls) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        if labels.iter().all(|(k, v)| ls.contains(&format!("{k}=\"{v}\""))) {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap_or(f64::NAN);
        }
    }
    found
}

/// Sends every message from its own socket at (nearly) the same time, each on its own
/// thread; returns each reply and when it arrived, in order.
fn burst(to: SocketAddr, msgs: Vec<Vec<u8>>, wait: Duration) -> Vec<(Option<Message<Vec<u8>>>, Duration)> {
    let socks: Vec<UdpSocket> = msgs
        .iter()
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(wait)).unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    for (s, m) in socks.iter().zip(&msgs) {
        s.send_to(m, to).unwrap();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = socks
            .iter()
            .map(|s| {
                scope.spawn(move || {
                    let mut buf = vec![0u8; 65535];
                    match s.recv(&mut buf) {
                        Ok(n) => (Some(Message::from_octets(buf[..n].to_vec()).unwrap()), start.elapsed()),
                        Err(_) => (None, start.elapsed()),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ------------------------------------------------------------------------------------
// forward: relaying

#[test]
fn forward_relays_udp_answers_with_the_client_id_and_question_case() {
    let up = FakeUpstream::start();
    let s = serve(&format!("forward . {}", up.spec()), &[]);

    let (r, _) = timed_udp(&s, &query("WwW.ExAmPlE.oRg", Rtype::A, 0xBEEF, false, false), ms(3000));
    let r = r.expect("reply");
    assert_eq!(r.header().id(), 0xBEEF);
    assert!(r.header().qr());
    assert_eq!(rcode(&r), Rcode::NOERROR);
    assert!(r.header().ra(), "RA relayed");
    assert!(!r.header().aa(), "the upstream's AA (clear) relayed");
    assert_eq!(qname(&r), "WwW.ExAmPlE.oRg");
    assert_eq!(section(&r, "answer"), ["WwW.ExAmPlE.oRg. 60 IN A 192.0.2.1"]);
    assert_eq!(up.count("www.example.org", Rtype::A, Proto::Udp), 1);
    assert_eq!(up.count("www.example.org", Rtype::A, Proto::Tcp), 0);
    // The upstream got our query with the client's flags (RD) and its EDNS.
    let seen = &up.seen()[0];
    assert!(seen.rd);
    assert_eq!(seen.edns.map(|e| e >= 512), Some(true), "{seen:?}");

    let r = ask(&s, "v6.example.org", Rtype::AAAA);
    assert_eq!(section(&r, "answer"), ["v6.example.org. 60 IN AAAA 2001:db8::1"]);

    // Denials and errors are relayed as they are.
    up.set_mode_for("nx.example.org", Mode::NxDomain);
    let r = ask(&s, "nx.example.org", Rtype::A);
    assert_eq!(rcode(&r), Rcode::NXDOMAIN);
    assert!(section(&r, "answer").is_empty());
    let auth = section(&r, "authority");
    assert_eq!(auth.len(), 1, "{auth:?}");
    assert!(
        auth[0].starts_with("org. 60 IN SOA ns.upstream.test. hostmaster.upstream.test. "),
        "{auth:?}"
    );

    up.set_mode_for("nodata.example.org", Mode::NoData);
    let r = ask(&s, "nodata.example.org", Rtype::A);
    assert_eq!(rcode(&r), Rcode::NOERROR);
    assert!(section(&r, "answer").is_empty());
    assert_eq!(section(&r, "authority").len(), 1);

    up.set_mode_for("sf.example.org", Mode::ServFail);
    assert_eq!(rcode(&ask(&s, "sf.example.org", Rtype::A)), Rcode::SERVFAIL);
    up.set_mode_for("ref.example.org", Mode::Refused);
    assert_eq!(rcode(&ask(&s, "ref.example.org", Rtype::A)), Rcode::REFUSED);
    assert_eq!(up.total_over(Proto::Tcp), 0);
}

#[test]
fn a_client_cookie_is_answered_here_and_not_forwarded() {
    let up = FakeUpstream::start();
    let s = serve(&format!("forward . {}", up.spec()), &[]);
    // The client's OPT: a COOKIE (client cookie only) and a local-use option.
    let mut q = query("www.example.org", Rtype::A, 7, false, false);
    q.truncate(q.len() - 2);
    q.extend_from_slice(&[0, 18, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0xFD, 0xE9, 0, 2, 0xAA, 0xBB]);
    let (r, _) = timed_udp(&s, &q, ms(3000));
    let r = r.expect("reply");
    assert_eq!(section(&r, "answer"), ["www.example.org. 60 IN A 192.0.2.1"]);
    // The cookie is between the client and this server: the upstream saw the other
    // option only, and the client got its cookie back with our server cookie.
    let seen = &up.seen()[0];
    assert_eq!(seen.options, [0xFDE9], "{seen:?}");
    let tail = &r.as_slice()[r.as_slice().len() - 28..];
    assert_eq!(&tail[..12], &[0, 10, 0, 24, 1, 2, 3, 4, 5, 6, 7, 8]);
}

#[test]
fn forward_sends_tcp_queries_over_tcp_and_reuses_the_connection_until_expire() {
    let up = FakeUpstream::start();
    // One worker: the pool of TCP connections is per worker.
    let s = serve(
        &format!("forward . {} {{\n    expire 1s\n}}", up.spec()),
        &["-workers", "1"],
    );

    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write_frame(&mut c, &query("Tcp.Example.org", Rtype::A, 0x4321, false, false));
    let r = Message::from_octets(read_frame(&mut c).expect("reply")).unwrap();
    assert_eq!(r.header().id(), 0x4321);
    assert_eq!(qname(&r), "Tcp.Example.org");
    assert_eq!(section(&r, "answer"), ["Tcp.Example.org. 60 IN A 192.0.2.1"]);
    assert_eq!(up.count("tcp.example.org", Rtype::A, Proto::Tcp), 1);
    assert_eq!(up.total_over(Proto::Udp), 0);

    // More queries, on new client connections: one upstream connection carries them.
    for i in 0..4 {
        let r = ask_tcp(&s, &format!("n{i}.example.org"), Rtype::A);
        assert_eq!(addrs(&r), ["192.0.2.1"]);
    }
    assert_eq!(up.total_over(Proto::Tcp), 5);
    assert_eq!(up.connections(), 1, "TCP connection reused: {:?}", up.seen());

    // A big answer comes whole over TCP.
    up.set_mode_for("big.example.org", Mode::BigAnswer(100));
    let r = ask_tcp(&s, "big.example.org", Rtype::A);
    assert_eq!(addrs(&r).len(), 100);
    assert!(!r.header().tc());
    assert_eq!(up.connections(), 1);

    // Idle past `expire`: a new connection.
    std::thread::sleep(ms(1300));
    assert_eq!(addrs(&ask_tcp(&s, "later.example.org", Rtype::A)), ["192.0.2.1"]);
    assert_eq!(up.connections(), 2, "a connection idle past expire is not reused");
}

#[test]
fn prefer_udp_asks_again_over_tcp_when_the_udp_reply_is_truncated() {
    let up = FakeUpstream::start();
    up.set_mode_for("tc.example.org", Mode::Truncated);
    let s = serve(&format!("forward . {} {{\n    prefer_udp\n}}", up.spec()), &[]);

    let r = ask(&s, "tc.example.org", Rtype::A);
    assert!(!r.header().tc(), "the client gets the full answer");
    assert_eq!(section(&r, "answer"), ["tc.example.org. 60 IN A 192.0.2.1"]);
    assert_eq!(up.count("tc.example.org", Rtype::A, Proto::Udp), 1);
    assert_eq!(up.count("tc.example.org", Rtype::A, Proto::Tcp), 1);

    // A TCP client too goes out over UDP first with prefer_udp.
    let r = ask_tcp(&s, "tc.example.org", Rtype::AAAA);
    assert_eq!(section(&r, "answer"), ["tc.example.org. 60 IN AAAA 2001:db8::1"]);
    assert_eq!(up.count("tc.example.org", Rtype::AAAA, Proto::Udp), 1);
    assert_eq!(up.count("tc.example.org", Rtype::AAAA, Proto::Tcp), 1);
}

#[test]
fn a_reply_larger_than_the_udp_client_allows_is_truncated_for_it() {
    let up = FakeUpstream::start();
    up.set_mode_for("big.example.org", Mode::BigAnswer(100));
    let s = serve(&format!("forward . {} {{\n    prefer_udp\n}}", up.spec()), &[]);
    // Too big for the 1232 bytes of the query: the upstream truncates over UDP, the
    // server asks again over TCP, and then cuts the 100 records to the client's size.
    let (r, _) = timed_udp(&s, &query("big.example.org", Rtype::A, 3, false, false), ms(5000));
    let r = r.expect("reply");
    assert!(r.header().tc(), "TC for the UDP client");
    assert!(r.as_slice().len() <= 1232, "{} bytes", r.as_slice().len());
    let got = addrs(&r);
    assert!(got.len() < 100, "{}", got.len());
    assert_eq!(up.count("big.example.org", Rtype::A, Proto::Tcp), 1);
    // The client's own retry over TCP gets them all.
    let r = ask_tcp(&s, "big.example.org", Rtype::A);
    assert!(!r.header().tc());
    assert_eq!(addrs(&r).len(), 100);
}

#[test]
fn without_prefer_udp_a_udp_client_gets_tc_and_retries_over_tcp_itself() {
    let up = FakeUpstream::start();
    up.set_mode_for("tc.example.org", Mode::Truncated);
    let s = serve(&format!("forward . {}", up.spec()), &[]);

    let r = ask(&s, "tc.example.org", Rtype::A);
    assert!(r.header().tc(), "TC relayed to the UDP client");
    assert!(section(&r, "answer").is_empty());
    assert_eq!(up.count("tc.example.org", Rtype::A, Proto::Udp), 1);
    assert_eq!(up.count("tc.example.org", Rtype::A, Proto::Tcp), 0);

    let r = ask_tcp(&s, "tc.example.org", Rtype::A);
    assert!(!r.header().tc());
    assert_eq!(section(&r, "answer"), ["tc.example.org. 60 IN A 192.0.2.1"]);
    assert_eq!(up.count("tc.example.org", Rtype::A, Proto::Tcp), 1);
    assert_eq!(up.count("tc.example.org", Rtype::A, Proto::Udp), 1);
}

#[test]
fn force_tcp_sends_udp_clients_queries_over_tcp() {
    let up = FakeUpstream::start();
    let s = serve(&format!("forward . {} {{\n    force_tcp\n}}", up.spec()), &[]);
    let r = ask(&s, "f.example.org", Rtype::A);
    assert_eq!(addrs(&r), ["192.0.2.1"]);
    assert_eq!(up.count("f.example.org", Rtype::A, Proto::Tcp), 1);
    assert_eq!(up.total_over(Proto::Udp), 0);
}

#[test]
fn forward_only_sends_names_under_from_and_not_under_except() {
    let up = FakeUpstream::start();
    let s = serve(
        &format!(
            "forward example.org {} {{\n    except private.example.org\n}}\nwhoami",
            up.spec()
        ),
        &[],
    );
    assert_eq!(addrs(&ask(&s, "www.example.org", Rtype::A)), ["192.0.2.1"]);
    // Not forwarded: whoami, the next plugin, answers (no answer records).
    for name in ["x.private.example.org", "private.example.org", "www.example.net"] {
        let r = ask(&s, name, Rtype::A);
        assert!(addrs(&r).is_empty(), "{name}: {:?}", section(&r, "answer"));
        assert_eq!(up.count_name(name), 0, "{name} was forwarded");
    }
    assert_eq!(up.total(), 1);
}

// ------------------------------------------------------------------------------------
// forward: failover

#[test]
fn a_silent_upstream_is_left_after_read_timeout_for_the_next_one() {
    let a = FakeUpstream::tagged(1);
    let b = FakeUpstream::tagged(2);
    a.set_mode(Mode::Silent);
    let s = serve(
        &format!(
            "forward . {} {} {{\n    policy sequential\n    read_timeout 300ms\n}}",
            a.spec(),
            b.spec()
        ),
        &[],
    );
    let (r, took) = timed_udp(&s, &query("fo.example.org", Rtype::A, 7, false, false), ms(5000));
    let r = r.expect("reply");
    assert_eq!(addrs(&r), ["192.0.2.2"], "answered by the second upstream");
    assert!(took >= ms(290), "answered after {took:?}, before read_timeout");
    assert!(
        took < ms(1500),
        "answered after {took:?}, long after read_timeout (300ms)"
    );
    assert_eq!(a.count_name("fo.example.org"), 1);
    assert_eq!(b.count_name("fo.example.org"), 1);
    println!("failover after {took:?}");
}

#[test]
fn a_network_error_moves_to_the_next_upstream_at_once() {
    // A port nothing listens on: the connected UDP socket gets ECONNREFUSED.
    let dead = {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.local_addr().unwrap()
    };
    let b = FakeUpstream::tagged(2);
    let s = serve(
        &format!("forward . {dead} {} {{\n    policy sequential\n}}", b.spec()),
        &[],
    );
    let (r, took) = timed_udp(&s, &query("ne.example.org", Rtype::A, 7, false, false), ms(5000));
    assert_eq!(addrs(&r.expect("reply")), ["192.0.2.2"]);
    assert!(
        took < ms(1000),
        "took {took:?}: the refused upstream was waited on (read_timeout 2s)"
    );
}

#[test]
fn failover_rcodes_move_to_the_next_upstream_and_other_rcodes_are_relayed() {
    let a = FakeUpstream::tagged(1);
    let b = FakeUpstream::tagged(2);
    a.set_mode(Mode::ServFail);
    let with = serve(
        &format!(
            "forward . {} {} {{\n    policy sequential\n    failover SERVFAIL\n}}",
            a.spec(),
            b.spec()
        ),
        &[],
    );
    let (r, took) = timed_udp(&with, &query("sf.example.org", Rtype::A, 7, false, false), ms(5000));
    let r = r.expect("reply");
    assert_eq!(rcode(&r), Rcode::NOERROR);
    assert_eq!(addrs(&r), ["192.0.2.2"]);
    assert!(took < ms(1000), "failover on SERVFAIL took {took:?}");
    assert_eq!(a.count_name("sf.example.org"), 1);
    assert_eq!(b.count_name("sf.example.org"), 1);

    // REFUSED is not in the list: relayed.
    a.set_mode(Mode::Refused);
    let r = ask(&with, "ref.example.org", Rtype::A);
    assert_eq!(rcode(&r), Rcode::REFUSED);
    assert_eq!(b.count_name("ref.example.org"), 0);

    // Without `failover`, the SERVFAIL itself is the answer.
    a.set_mode(Mode::ServFail);
    let without = serve(
        &format!("forward . {} {} {{\n    policy sequential\n}}", a.spec(), b.spec()),
        &[],
    );
    let r = ask(&without, "sf2.example.org", Rtype::A);
    assert_eq!(rcode(&r), Rcode::SERVFAIL);
    assert_eq!(b.count_name("sf2.example.org"), 0);
}

#[test]
fn round_robin_alternates_upstreams_and_random_uses_both() {
    let a = FakeUpstream::tagged(1);
    let b = FakeUpstream::tagged(2);
    let rr = serve(
        &format!("forward . {} {} {{\n    policy round_robin\n}}", a.spec(), b.spec()),
        &[],
    );
    // One worker's queries one after the other: strictly alternating upstreams.
    let order: Vec<String> = (0..6)
        .map(|i| addrs(&ask(&rr, &format!("rr{i}.example.org"), Rtype::A)).join(","))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] != w[1]),
        "round_robin did not alternate: {order:?}"
    );
    let asked = |up: &FakeUpstream, prefix: &str| up.seen().iter().filter(|q| q.name.starts_with(prefix)).count();
    assert_eq!((asked(&a, "rr"), asked(&b, "rr")), (3, 3));

    // The default policy, random: 40 names spread over both (all on one: 2^-39).
    let (a2, b2) = (FakeUpstream::tagged(1), FakeUpstream::tagged(2));
    let random = serve(&format!("forward . {} {}", a2.spec(), b2.spec()), &[]);
    for i in 0..40 {
        assert_eq!(
            rcode(&ask(&random, &format!("rnd{i}.example.org"), Rtype::A)),
            Rcode::NOERROR
        );
    }
    let (na, nb) = (asked(&a2, "rnd"), asked(&b2, "rnd"));
    assert_eq!(na + nb, 40);
    assert!(na > 0 && nb > 0, "random used one upstream only: {na}/{nb}");
}

#[test]
fn every_upstream_silent_gives_servfail_after_trying_each() {
    let a = FakeUpstream::start();
    let b = FakeUpstream::start();
    a.set_mode(Mode::Silent);
    b.set_mode(Mode::Silent);
    // Default read_timeout (2s): two tries, then SERVFAIL, within the 5 s deadline.
    let s = serve(
        &format!("forward . {} {} {{\n    policy sequential\n}}", a.spec(), b.spec()),
        &[],
    );
    let (r, took) = timed_udp(&s, &query("dead.example.org", Rtype::A, 7, false, false), ms(9000));
    let r = r.unwrap_or_else(|| panic!("no reply at all after {took:?}\n{}", s.output()));
    assert_eq!(rcode(&r), Rcode::SERVFAIL);
    assert!(
        took >= ms(3900),
        "SERVFAIL after {took:?}, before both upstreams timed out"
    );
    assert!(took <= ms(5300), "SERVFAIL after {took:?}, past the 5 s deadline");
    assert_eq!(a.count_name("dead.example.org"), 1);
    assert_eq!(b.count_name("dead.example.org"), 1);
    println!("SERVFAIL after {took:?}");
}

#[test]
fn the_overall_deadline_bounds_a_query_with_many_silent_upstreams() {
    let ups: Vec<FakeUpstream> = (0..3).map(|_| FakeUpstream::start()).collect();
    for u in &ups {
        u.set_mode(Mode::Silent);
    }
    let list: Vec<String> = ups.iter().map(|u| u.spec()).collect();
    let s = serve(
        &format!("forward . {} {{\n    policy sequential\n}}", list.join(" ")),
        &[],
    );
    let (r, took) = timed_udp(&s, &query("late.example.org", Rtype::A, 7, false, false), ms(9000));
    let r = r.unwrap_or_else(|| panic!("no reply at all after {took:?}\n{}", s.output()));
    assert_eq!(rcode(&r), Rcode::SERVFAIL);
    println!(
        "SERVFAIL after {took:?}; upstreams asked: {:?}",
        ups.iter().map(|u| u.total()).collect::<Vec<_>>()
    );
    assert!(
        took <= ms(5300),
        "SERVFAIL after {took:?}, past the overall 5 s deadline"
    );
}

// ------------------------------------------------------------------------------------
// forward: health

#[test]
fn a_failing_upstream_is_skipped_probed_with_root_ns_and_used_again_once_it_answers() {
    let a = FakeUpstream::tagged(1);
    let b = FakeUpstream::tagged(2);
    a.set_mode(Mode::Silent);
    let m = free_port();
    let s = serve(
        &format!(
            "prometheus 127.0.0.1:{m}\nforward . {} {} {{\n    policy sequential\n    read_timeout 300ms\n    max_fails 2\n    health_check 100ms\n}}",
            a.spec(),
            b.spec()
        ),
        &[],
    );
    // Two failures: each query waits for A, then B answers.
    for i in 0..2 {
        let (r, took) = timed_udp(
            &s,
            &query(&format!("h{i}.example.org"), Rtype::A, 7, false, false),
            ms(5000),
        );
        assert_eq!(addrs(&r.expect("reply")), ["192.0.2.2"]);
        assert!(took >= ms(290), "{took:?}");
    }
    assert_eq!(a.total_but_probes(), 2);

    // A is down now: probed with `. IN NS`, and skipped by queries.
    let took = wait_until("a health probe reaches A", Duration::from_secs(3), || a.probes() >= 1);
    println!("first probe {took:?} after A went down");
    let probe = a.seen().into_iter().find(|q| q.qtype == Rtype::NS).unwrap();
    assert_eq!(probe.name, ".");
    assert!(probe.rd, "the probe asks for recursion (no no_rec)");
    for i in 0..5 {
        let (r, took) = timed_udp(
            &s,
            &query(&format!("d{i}.example.org"), Rtype::A, 7, false, false),
            ms(5000),
        );
        assert_eq!(addrs(&r.expect("reply")), ["192.0.2.2"]);
        assert!(took < ms(250), "query {i} took {took:?}: the down upstream was tried");
    }
    assert_eq!(a.total_but_probes(), 2, "queries kept going to the down upstream");
    // A failed probe (1 s without a reply) is counted.
    let to = a.spec();
    wait_until("a failed health check counted", Duration::from_secs(4), || {
        metric(
            &scrape(m),
            "coredns_proxy_healthcheck_failures_total",
            &[("proxy_name", "forward"), ("to", &to)],
        )
        .is_some_and(|f| f >= 1.0)
    });

    // A answers again: the next probe puts it back, and sequential picks it first.
    a.set_mode(Mode::Answer);
    let mut n = 0;
    let took = wait_until("A used again", Duration::from_secs(6), || {
        n += 1;
        let r = ask(&s, &format!("back{n}.example.org"), Rtype::A);
        addrs(&r) == ["192.0.2.1"]
    });
    println!("A back in service {took:?} after it answered again");
    assert!(a.total_but_probes() > 2);
}

// ------------------------------------------------------------------------------------
// forward: max_concurrent, coalescing

#[test]
fn max_concurrent_refuses_the_excess_at_once_and_counts_it() {
    let up = FakeUpstream::start();
    up.set_mode(Mode::Slow(ms(1000)));
    let m = free_port();
    let s = serve(
        &format!(
            "prometheus 127.0.0.1:{m}\nforward . {} {{\n    max_concurrent 4\n}}",
            up.spec()
        ),
        &["-workers", "1"],
    );
    let msgs = (0..10)
        .map(|i| query(&format!("c{i}.example.org"), Rtype::A, 100 + i, false, false))
        .collect();
    let got = burst(s.addr(), msgs, ms(5000));
    let mut ok = 0;
    let mut refused = 0;
    for (i, (r, at)) in got.iter().enumerate() {
        let r = r
            .as_ref()
            .unwrap_or_else(|| panic!("query {i}: no reply\n{}", s.output()));
        match rcode(r) {
            Rcode::NOERROR => {
                ok += 1;
                assert!(
                    *at >= ms(900),
                    "query {i} answered after {at:?}, before the slow upstream"
                );
            }
            Rcode::REFUSED => {
                refused += 1;
                assert!(*at < ms(500), "query {i} refused only after {at:?}");
            }
            other => panic!("query {i}: {other}"),
        }
    }
    assert_eq!((ok, refused), (4, 6), "{got:?}");
    assert_eq!(up.total(), 4);
    let page = scrape(m);
    assert_eq!(
        metric(&page, "coredns_forward_max_concurrent_rejects_total", &[]),
        Some(6.0),
        "{page}"
    );

    // Once they are done, new queries get through again.
    up.set_mode(Mode::Answer);
    assert_eq!(rcode(&ask(&s, "after.example.org", Rtype::A)), Rcode::NOERROR);
}

#[test]
fn identical_queries_in_flight_go_upstream_once_and_every_client_gets_the_answer() {
    let up = FakeUpstream::start();
    up.set_mode(Mode::Slow(ms(500)));
    let s = serve(&format!("forward . {}", up.spec()), &["-workers", "1"]);
    let mut msgs: Vec<Vec<u8>> = (0..10)
        .map(|i| query("same.example.org", Rtype::A, 1000 + i, false, false))
        .collect();
    msgs.extend((0..4).map(|i| query("same.example.org", Rtype::AAAA, 2000 + i, false, false)));
    let got = burst(s.addr(), msgs, ms(5000));
    for (i, (r, at)) in got.iter().enumerate() {
        let r = r
            .as_ref()
            .unwrap_or_else(|| panic!("client {i}: no reply after {at:?}\n{}", s.output()));
        let (id, want) = if i < 10 {
            (1000 + i as u16, "192.0.2.1")
        } else {
            (2000 + i as u16 - 10, "2001:db8::1")
        };
        assert_eq!(r.header().id(), id, "client {i} gets its own ID");
        assert_eq!(rcode(r), Rcode::NOERROR);
        assert_eq!(addrs(r), [want], "client {i}");
    }
    assert_eq!(up.count_type("same.example.org", Rtype::A), 1, "{:?}", up.seen());
    assert_eq!(up.count_type("same.example.org", Rtype::AAAA), 1, "{:?}", up.seen());

    // Clients that spell the name differently each get their own question back.
    let got = mixed_case_burst(&s);
    for ((r, _), name) in got.iter().zip(MIXED) {
        let r = r.as_ref().expect("reply");
        assert_eq!(qname(r), name);
        assert_eq!(addrs(r), ["192.0.2.1"]);
        let owner = section(r, "answer")[0].split_whitespace().next().unwrap().to_string();
        assert!(owner.eq_ignore_ascii_case(&format!("{name}.")), "{owner}");
    }
}

const MIXED: [&str; 3] = ["Mixed.Example.org", "mixed.example.org", "MIXED.EXAMPLE.ORG"];

/// The three spellings of [`MIXED`] at once, against a slow upstream.
fn mixed_case_burst(s: &Server) -> Vec<(Option<Message<Vec<u8>>>, Duration)> {
    let msgs = MIXED.iter().map(|n| query(n, Rtype::A, 7, false, false)).collect();
    burst(s.addr(), msgs, ms(5000))
}

#[test]
fn coalesced_answers_are_spelled_as_each_client_asked() {
    // Without coalescing (CoreDNS), each client gets the upstream's reply to its own
    // query, whose owner names follow that query's spelling; the cache, too, respells
    // owner names as the new query spells them. A coalesced reply should do the same.
    let up = FakeUpstream::start();
    up.set_mode(Mode::Slow(ms(500)));
    let s = serve(&format!("forward . {}", up.spec()), &["-workers", "1"]);
    let got = mixed_case_burst(&s);
    println!(
        "upstream queries: {:?}",
        up.seen().iter().map(|q| &q.name).collect::<Vec<_>>()
    );
    for ((r, _), name) in got.iter().zip(MIXED) {
        let r = r.as_ref().expect("reply");
        assert_eq!(qname(r), name);
        assert_eq!(section(r, "answer"), [format!("{name}. 60 IN A 192.0.2.1")]);
    }
}

// ------------------------------------------------------------------------------------
// forward: spoofing

#[test]
fn replies_with_a_wrong_id_or_from_another_address_are_ignored() {
    let up = FakeUpstream::start();
    up.set_mode_for("wid.example.org", Mode::WrongId);
    up.set_mode_for("other.example.org", Mode::FromOtherAddress);
    up.genuine_after(Some(ms(200)));
    let s = serve(&format!("forward . {} {{\n    read_timeout 1s\n}}", up.spec()), &[]);

    for name in ["wid.example.org", "other.example.org"] {
        let (r, took) = timed_udp(&s, &query(name, Rtype::A, 7, false, false), ms(5000));
        let r = r.expect("reply");
        assert_eq!(
            addrs(&r),
            ["192.0.2.1"],
            "{name}: the spoofed reply (192.0.2.{SPOOFED}) was taken"
        );
        assert!(
            took >= ms(190),
            "{name}: answered after {took:?}, before the genuine reply was sent"
        );
        assert_eq!(up.count_name(name), 1);
    }

    // No genuine reply: the spoofed one is still not taken; SERVFAIL after the timeout.
    up.genuine_after(None);
    for name in ["wid.example.org", "other.example.org"] {
        let (r, took) = timed_udp(&s, &query(name, Rtype::AAAA, 8, false, false), ms(5000));
        let r = r.expect("reply");
        assert_eq!(rcode(&r), Rcode::SERVFAIL, "{name}: {:?}", section(&r, "answer"));
        assert!(section(&r, "answer").is_empty());
        assert!(took >= ms(950), "{name}: SERVFAIL after {took:?}, before read_timeout");
    }
}

#[test]
fn forwarded_queries_in_parallel_each_get_their_own_reply() {
    // Many exchanges in flight on each worker's few pooled sockets at once: every reply
    // must reach the query it answers (ID, name, address), none another's.
    let up = FakeUpstream::start();
    up.set_mode(Mode::Slow(ms(20)));
    let s = serve(&format!("forward . {}", up.spec()), &["-workers", "2"]);
    let addr = s.addr();
    let threads: Vec<_> = (0..8u16)
        .map(|t| {
            std::thread::spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.set_read_timeout(Some(ms(5000))).unwrap();
                // 40 queries out at once from this socket, then their replies.
                for i in 0..40u16 {
                    let id = t * 1000 + i;
                    let q = query(&format!("p{t}-{i}.example.org"), Rtype::A, id, false, false);
                    sock.send_to(&q, addr).unwrap();
                }
                let mut got = Vec::new();
                let mut buf = [0u8; 1500];
                for _ in 0..40 {
                    let Ok(n) = sock.recv(&mut buf) else { break };
                    got.push(Message::from_octets(buf[..n].to_vec()).expect("reply parses"));
                }
                (t, got)
            })
        })
        .collect();
    for th in threads {
        let (t, got) = th.join().unwrap();
        assert_eq!(got.len(), 40, "thread {t}: {} replies", got.len());
        let mut ids: Vec<u16> = got.iter().map(|m| m.header().id()).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..40).map(|i| t * 1000 + i).collect::<Vec<_>>());
        for m in &got {
            let i = m.header().id() - t * 1000;
            assert_eq!(qname(m), format!("p{t}-{i}.example.org"));
            assert_eq!(
                section(m, "answer"),
                [format!("p{t}-{i}.example.org. 60 IN A 192.0.2.1")]
            );
        }
    }
    assert_eq!(up.total(), 320);
}

#[test]
fn source_ports_and_ids_keep_changing() {
    // Upstream sockets are pooled but replaced after 100 exchanges: 800 queries from one
    // worker go out from at least 8 ports, none of them the server's, with random IDs.
    let up = FakeUpstream::start();
    let s = serve(&format!("forward . {}", up.spec()), &["-workers", "1"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(ms(5000))).unwrap();
    let mut buf = [0u8; 1500];
    for i in 0..800 {
        sock.send_to(
            &query(&format!("sp{i}.example.org"), Rtype::A, 9, false, false),
            s.addr(),
        )
        .unwrap();
        sock.recv(&mut buf).expect("a reply");
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 800);
    let ports: HashSet<u16> = seen.iter().map(|q| q.from.port()).collect();
    // (A port the kernel hands out twice counts once: 7, not 8, leaves room for it.)
    assert!(ports.len() >= 7, "{} source ports: {ports:?}", ports.len());
    assert!(!ports.contains(&s.addr().port()));
    // At most 4 sockets in use at a time: the first 100 queries came from at most 4 ports.
    let first: HashSet<u16> = seen[..100].iter().map(|q| q.from.port()).collect();
    assert!(first.len() <= 4, "{first:?}");
    let ids: HashSet<u16> = seen.iter().map(|q| q.id).collect();
    assert!(ids.len() > 780, "{} distinct IDs of 800", ids.len());
    let in_sequence = seen.windows(2).filter(|w| w[1].id == w[0].id.wrapping_add(1)).count();
    assert!(in_sequence < 5, "{in_sequence} IDs follow their predecessor");
}

#[test]
fn self_lookup_markers_never_reach_an_upstream() {
    // rewrite's cname rule looks the new target up through the server (EDNS option
    // 65302 marks it), which forwards it; a client may send the markers too (65301 is
    // the kubernetes chase's). The upstream sees neither.
    let up = FakeUpstream::start();
    up.set_mode_for(
        "www.example.org",
        Mode::Cname {
            target: "old.example.net",
            resolved: false,
        },
    );
    let s = serve(
        &format!(
            "rewrite cname exact old.example.net. new.example.net.\nforward . {}",
            up.spec()
        ),
        &[],
    );
    let r = ask(&s, "www.example.org", Rtype::A);
    assert!(
        section(&r, "answer").iter().any(|a| a.contains("new.example.net")),
        "{:?}",
        section(&r, "answer")
    );
    assert!(
        up.count_name("new.example.net") >= 1,
        "the rewritten target was not looked up"
    );
    let mut q = query("client.example.org", Rtype::A, 7, false, false);
    q.truncate(q.len() - 2);
    q.extend_from_slice(&[
        0, 15, 0xFF, 0x15, 0, 1, 3, 0xFD, 0xE9, 0, 2, 0xAA, 0xBB, 0xFF, 0x16, 0, 0,
    ]);
    let (r, _) = timed_udp(&s, &q, ms(3000));
    assert_eq!(addrs(&r.expect("reply")), ["192.0.2.1"]);
    let seen = up.seen();
    for q in &seen {
        assert!(
            !q.options.contains(&65301) && !q.options.contains(&65302),
            "{} went upstream with {:?}",
            q.name,
            q.options
        );
    }
    let client = seen
        .iter()
        .find(|q| q.name == "client.example.org.")
        .expect("forwarded");
    assert_eq!(client.options, [0xFDE9]);
}

#[test]
fn a_reply_to_another_question_is_formerr() {
    let up = FakeUpstream::start();
    up.set_mode_for("wq.example.org", Mode::WrongQuestion);
    let s = serve(&format!("forward . {}", up.spec()), &[]);
    let (r, took) = timed_udp(&s, &query("wq.example.org", Rtype::A, 0x77, false, false), ms(5000));
    let r = r.expect("reply");
    assert_eq!(rcode(&r), Rcode::FORMERR);
    assert_eq!(r.header().id(), 0x77);
    assert!(section(&r, "answer").is_empty(), "{:?}", section(&r, "answer"));
    assert!(took < ms(1000), "{took:?}");
}

#[test]
fn upstream_queries_use_random_source_ports_and_ids() {
    // Two workers, each with its own pool of (at most 4) sockets to the upstream, which
    // opens a new socket for each of its first 4 exchanges: of 20 queries one worker
    // takes at least 10, so they come from 4 to 8 ports, none the server's, spread
    // over the ephemeral range, each with its own random ID.
    let up = FakeUpstream::start();
    let s = serve(&format!("forward . {}", up.spec()), &["-workers", "2"]);
    for i in 0..20 {
        let r = ask(&s, &format!("r{i}.example.org"), Rtype::A);
        assert_eq!(rcode(&r), Rcode::NOERROR);
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 20);
    let ports: HashSet<u16> = seen.iter().map(|q| q.from.port()).collect();
    let ids: HashSet<u16> = seen.iter().map(|q| q.id).collect();
    assert!(
        (4..=8).contains(&ports.len()),
        "{} distinct source ports: {ports:?}",
        ports.len()
    );
    let (lo, hi) = (ports.iter().min().unwrap(), ports.iter().max().unwrap());
    assert!(hi - lo > 64, "ports {lo}..{hi}: in sequence, not random");
    assert!(!ports.contains(&s.addr().port()));
    assert!(ids.len() >= 19, "{} distinct IDs: {ids:?}", ids.len());
}

// ------------------------------------------------------------------------------------
// cache

#[test]
fn cache_hits_after_a_miss_count_the_ttl_down_cap_it_and_keep_the_query_case() {
    let up = FakeUpstream::start();
    let s = serve(&format!("forward . {}\ncache 30", up.spec()), &[]);

    let r = ask(&s, "hit.example.org", Rtype::A);
    assert_eq!(addrs(&r), ["192.0.2.1"]);
    assert_eq!(ttl(&r), 30, "the miss already carries the capped TTL");
    assert_eq!(up.count_name("hit.example.org"), 1);

    std::thread::sleep(ms(1100));
    let (r, _) = timed_udp(&s, &query("hit.example.org", Rtype::A, 0x5151, false, false), ms(3000));
    let r = r.expect("reply");
    assert_eq!(up.count_name("hit.example.org"), 1, "hit: not asked again");
    assert_eq!(r.header().id(), 0x5151);
    assert!(r.header().aa(), "hits are authoritative");
    assert!(r.header().ra());
    let t = ttl(&r);
    assert!((28..=29).contains(&t), "TTL {t} a second after the miss");

    // The same question in other letters: from the cache, in the asker's spelling.
    let r = ask(&s, "HiT.ExAmPlE.oRg", Rtype::A);
    assert_eq!(up.count_name("hit.example.org"), 1);
    assert_eq!(qname(&r), "HiT.ExAmPlE.oRg");
    let ans = section(&r, "answer");
    assert_eq!(ans.len(), 1);
    assert!(ans[0].starts_with("HiT.ExAmPlE.oRg. "), "{ans:?}");

    // Over TCP, the same entry.
    let r = ask_tcp(&s, "hit.example.org", Rtype::A);
    assert_eq!(addrs(&r), ["192.0.2.1"]);
    assert_eq!(up.count_name("hit.example.org"), 1);
}

#[test]
fn cache_keeps_the_upstream_ttl_below_the_cap_and_raises_it_to_the_minimum() {
    let up = FakeUpstream::start();
    let s = serve(&format!("forward . {}\ncache", up.spec()), &[]);
    assert_eq!(ttl(&ask(&s, "sixty.example.org", Rtype::A)), 60);

    // TTL 1 from upstream: raised to the default minimum, 5, and kept that long.
    up.set_ttl(1);
    assert_eq!(ttl(&ask(&s, "low.example.org", Rtype::A)), 5);
    std::thread::sleep(ms(1500));
    let t = ttl(&ask(&s, "low.example.org", Rtype::A));
    assert!((3..=4).contains(&t), "{t}");
    assert_eq!(up.count_name("low.example.org"), 1);

    // A configured minimum.
    let s2 = serve(
        &format!("forward . {}\ncache {{\n    success 10000 3600 2\n}}", up.spec()),
        &[],
    );
    assert_eq!(ttl(&ask(&s2, "min2.example.org", Rtype::A)), 2);
    std::thread::sleep(ms(2200));
    ask(&s2, "min2.example.org", Rtype::A);
    assert_eq!(up.count_name("min2.example.org"), 2, "expired after its 2 s");
}

#[test]
fn cache_caps_ttls_at_3600_for_answers_and_1800_for_denials_by_default() {
    let up = FakeUpstream::start();
    up.set_ttl(7200);
    up.set_soa_ttl(7200);
    up.set_mode_for("nx.example.org", Mode::NxDomain);
    let s = serve(&format!("forward . {}\ncache", up.spec()), &[]);
    assert_eq!(ttl(&ask(&s, "long.example.org", Rtype::A)), 3600);
    assert_eq!(ttl(&ask(&s, "nx.example.org", Rtype::A)), 1800);
}

#[test]
fn cache_keeps_a_cname_chain_only_when_it_reaches_the_asked_type() {
    let up = FakeUpstream::start();
    up.set_mode_for(
        "alias.example.org",
        Mode::Cname {
            target: "target.example.net.",
            resolved: true,
        },
    );
    up.set_mode_for(
        "dangling.example.org",
        Mode::Cname {
            target: "nowhere.example.net.",
            resolved: false,
        },
    );
    let s = serve(&format!("forward . {}\ncache 30", up.spec()), &[]);
    for _ in 0..2 {
        let r = ask(&s, "alias.example.org", Rtype::A);
        assert_eq!(
            section(&r, "answer"),
            [
                "alias.example.org. 30 IN CNAME target.example.net.",
                "target.example.net. 30 IN A 192.0.2.1"
            ]
        );
    }
    assert_eq!(up.count_name("alias.example.org"), 1, "a complete chain is cached");
    for _ in 0..2 {
        let r = ask(&s, "dangling.example.org", Rtype::A);
        assert_eq!(
            section(&r, "answer"),
            ["dangling.example.org. 30 IN CNAME nowhere.example.net."]
        );
    }
    assert_eq!(
        up.count_name("dangling.example.org"),
        2,
        "a CNAME that does not reach the type, without SOA, is not cached"
    );
}

#[test]
fn cache_keeps_denials_with_a_soa_and_not_those_without() {
    let up = FakeUpstream::start();
    up.set_soa_ttl(60);
    up.set_mode_for("nx.example.org", Mode::NxDomain);
    up.set_mode_for("nodata.example.org", Mode::NoData);
    up.set_mode_for("bare.example.org", Mode::NxDomainNoSoa);
    let s = serve(&format!("forward . {}\ncache 30", up.spec()), &[]);

    for name in ["nx.example.org", "nodata.example.org"] {
        let r1 = ask(&s, name, Rtype::A);
        assert_eq!(ttl(&r1), 30, "{name}: the SOA TTL capped by `cache 30`");
        let r2 = ask(&s, name, Rtype::A);
        assert_eq!(rcode(&r2), rcode(&r1));
        assert_eq!(section(&r2, "authority").len(), 1, "{name}: SOA kept");
        assert!(r2.header().aa());
        assert_eq!(up.count_name(name), 1, "{name}: denial cached");
    }
    assert_eq!(rcode(&ask(&s, "nx.example.org", Rtype::A)), Rcode::NXDOMAIN);

    for _ in 0..2 {
        assert_eq!(rcode(&ask(&s, "bare.example.org", Rtype::A)), Rcode::NXDOMAIN);
    }
    assert_eq!(
        up.count_name("bare.example.org"),
        2,
        "NXDOMAIN without SOA is not cached"
    );
}

#[test]
fn cache_keeps_servfail_for_the_servfail_duration_only() {
    let up = FakeUpstream::start();
    up.set_mode_for("sf.example.org", Mode::ServFail);
    let s = serve(
        &format!(
            "forward . {} {{\n    read_timeout 300ms\n}}\ncache 30 {{\n    servfail 1s\n}}",
            up.spec()
        ),
        &[],
    );
    assert_eq!(rcode(&ask(&s, "sf.example.org", Rtype::A)), Rcode::SERVFAIL);
    assert_eq!(rcode(&ask(&s, "sf.example.org", Rtype::A)), Rcode::SERVFAIL);
    assert_eq!(up.count_name("sf.example.org"), 1, "SERVFAIL cached");
    std::thread::sleep(ms(1300));
    assert_eq!(rcode(&ask(&s, "sf.example.org", Rtype::A)), Rcode::SERVFAIL);
    assert_eq!(up.count_name("sf.example.org"), 2, "kept only for `servfail 1s`");

    // The server's own SERVFAIL (the upstream timed out) is not a reply to keep.
    up.set_mode_for("quiet.example.org", Mode::Silent);
    assert_eq!(rcode(&ask(&s, "quiet.example.org", Rtype::A)), Rcode::SERVFAIL);
    assert_eq!(rcode(&ask(&s, "quiet.example.org", Rtype::A)), Rcode::SERVFAIL);
    assert_eq!(up.count_name("quiet.example.org"), 2);

    // servfail 0: never kept.
    let s0 = serve(
        &format!("forward . {}\ncache 30 {{\n    servfail 0s\n}}", up.spec()),
        &[],
    );
    up.set_mode_for("sf0.example.org", Mode::ServFail);
    ask(&s0, "sf0.example.org", Rtype::A);
    ask(&s0, "sf0.example.org", Rtype::A);
    assert_eq!(up.count_name("sf0.example.org"), 2);
}

#[test]
fn cache_does_not_keep_truncated_or_refused_replies() {
    let up = FakeUpstream::start();
    up.set_mode_for("tc.example.org", Mode::Truncated);
    up.set_mode_for("ref.example.org", Mode::Refused);
    let s = serve(&format!("forward . {}\ncache 30", up.spec()), &[]);
    for _ in 0..2 {
        assert!(ask(&s, "tc.example.org", Rtype::A).header().tc());
    }
    assert_eq!(
        up.count("tc.example.org", Rtype::A, Proto::Udp),
        2,
        "truncated reply cached"
    );
    // The TCP retry gets the full answer, which is kept.
    assert_eq!(addrs(&ask_tcp(&s, "tc.example.org", Rtype::A)), ["192.0.2.1"]);
    let r = ask(&s, "tc.example.org", Rtype::A);
    assert_eq!(
        addrs(&r),
        ["192.0.2.1"],
        "the full answer is cached and served over UDP"
    );
    assert_eq!(up.count_name("tc.example.org"), 3);

    for _ in 0..2 {
        assert_eq!(rcode(&ask(&s, "ref.example.org", Rtype::A)), Rcode::REFUSED);
    }
    assert_eq!(up.count_name("ref.example.org"), 2, "REFUSED cached");
}

#[test]
fn cache_key_includes_the_do_and_cd_bits() {
    let up = FakeUpstream::start();
    let s = serve(&format!("forward . {}\ncache 30", up.spec()), &[]);
    let n = "dnssec.example.org";
    let send = |d: bool, cd: bool| {
        let (r, _) = timed_udp(&s, &query(n, Rtype::A, 9, d, cd), ms(3000));
        assert_eq!(addrs(&r.expect("reply")), ["192.0.2.1"]);
    };
    send(false, false);
    assert_eq!(up.count_name(n), 1);
    send(true, false);
    assert_eq!(up.count_name(n), 2, "DO set: another key");
    send(true, false);
    send(false, false);
    assert_eq!(up.count_name(n), 2);
    send(false, true);
    assert_eq!(up.count_name(n), 3, "CD set: another key");
    send(false, true);
    assert_eq!(up.count_name(n), 3);
    let dos: Vec<bool> = up.seen().iter().map(|q| q.dnssec_ok).collect();
    assert_eq!(dos, [false, true, false], "the DO bit goes upstream");
}

#[test]
fn serve_stale_immediate_answers_from_expired_entries_when_the_upstream_is_gone() {
    let up = FakeUpstream::start();
    up.set_ttl(1);
    let s = serve(
        &format!(
            "forward . {}\ncache {{\n    success 10000 3600 1\n    serve_stale 2s\n}}",
            up.spec()
        ),
        &[],
    );
    let t0 = Instant::now();
    assert_eq!(ttl(&ask(&s, "stale.example.org", Rtype::A)), 1);
    drop(up); // the upstream dies: its port is closed

    // Expired for less than 2 s: served at once, TTL 0.
    std::thread::sleep((t0 + ms(1500)).saturating_duration_since(Instant::now()));
    let (r, took) = timed_udp(&s, &query("stale.example.org", Rtype::A, 3, false, false), ms(5000));
    let r = r.expect("reply");
    assert_eq!(rcode(&r), Rcode::NOERROR);
    assert_eq!(addrs(&r), ["192.0.2.1"]);
    assert_eq!(ttl(&r), 0, "a stale answer has TTL 0");
    assert!(took < ms(300), "stale answer after {took:?}: not immediate");
    // Again (the refresh failed meanwhile): still the stale entry.
    let r = ask(&s, "stale.example.org", Rtype::A);
    assert_eq!((addrs(&r), ttl(&r)), (vec!["192.0.2.1".to_string()], 0));

    // Past the serve_stale duration: gone, and the dead upstream gives SERVFAIL.
    std::thread::sleep((t0 + ms(3600)).saturating_duration_since(Instant::now()));
    assert_eq!(rcode(&ask(&s, "stale.example.org", Rtype::A)), Rcode::SERVFAIL);
}

#[test]
fn serve_stale_immediate_refreshes_in_the_background() {
    let up = FakeUpstream::tagged(1);
    up.set_ttl(1);
    let m = free_port();
    let s = serve(
        &format!(
            "prometheus 127.0.0.1:{m}\nforward . {}\ncache {{\n    success 10000 3600 1\n    serve_stale\n}}",
            up.spec()
        ),
        &[],
    );
    ask(&s, "bg.example.org", Rtype::A);
    std::thread::sleep(ms(2100));
    up.set_tag(2);
    let r = ask(&s, "bg.example.org", Rtype::A);
    assert_eq!(
        (addrs(&r), ttl(&r)),
        (vec!["192.0.2.1".to_string()], 0),
        "the stale entry first"
    );
    // Until the refresh lands, the stale entry is served again.
    let mut stale = 1;
    wait_until("the refreshed answer", Duration::from_secs(3), || {
        let r = ask(&s, "bg.example.org", Rtype::A);
        if addrs(&r) == ["192.0.2.1"] {
            assert_eq!(ttl(&r), 0);
            stale += 1;
        }
        addrs(&r) == ["192.0.2.2"]
    });
    assert_eq!(up.count_name("bg.example.org"), 2, "one refresh");
    let page = scrape(m);
    assert_eq!(
        metric(&page, "coredns_cache_served_stale_total", &[]),
        Some(stale as f64),
        "{page}"
    );
}

#[test]
fn serve_stale_verify_tries_the_upstream_first_and_serves_stale_only_if_that_fails() {
    let up = FakeUpstream::tagged(1);
    up.set_ttl(1);
    let s = serve(
        &format!(
            "forward . {} {{\n    read_timeout 300ms\n    max_fails 0\n}}\ncache {{\n    success 10000 3600 1\n    serve_stale 1h verify\n}}",
            up.spec()
        ),
        &[],
    );
    ask(&s, "v.example.org", Rtype::A);
    std::thread::sleep(ms(2100));

    // The upstream answers: the fresh answer, not the stale one.
    up.set_tag(2);
    let r = ask(&s, "v.example.org", Rtype::A);
    assert_eq!(addrs(&r), ["192.0.2.2"], "verify: refreshed first");
    assert_eq!(ttl(&r), 1);
    assert_eq!(up.count_name("v.example.org"), 2);
    std::thread::sleep(ms(2100));

    // The upstream is silent: tried (read_timeout), then the stale entry.
    up.set_mode(Mode::Silent);
    let (r, took) = timed_udp(&s, &query("v.example.org", Rtype::A, 5, false, false), ms(5000));
    let r = r.expect("reply");
    assert_eq!(rcode(&r), Rcode::NOERROR);
    assert_eq!((addrs(&r), ttl(&r)), (vec!["192.0.2.2".to_string()], 0));
    assert!(
        took >= ms(290),
        "stale answer after {took:?}, without trying the upstream"
    );
    assert_eq!(up.count_name("v.example.org"), 3);

    // SERVFAIL from the upstream is a failed refresh too.
    up.set_mode(Mode::ServFail);
    let r = ask(&s, "v.example.org", Rtype::A);
    assert_eq!(
        (rcode(&r), addrs(&r), ttl(&r)),
        (Rcode::NOERROR, vec!["192.0.2.2".to_string()], 0)
    );
    assert_eq!(up.count_name("v.example.org"), 4);
}

#[test]
fn prefetch_refreshes_a_popular_entry_before_it_expires() {
    let up = FakeUpstream::tagged(1);
    up.set_ttl(10);
    let m = free_port();
    let s = serve(
        &format!(
            "prometheus 127.0.0.1:{m}\nforward . {}\ncache {{\n    prefetch 2 1m 90%\n}}",
            up.spec()
        ),
        &[],
    );
    let t0 = Instant::now();
    assert_eq!(ttl(&ask(&s, "pf.example.org", Rtype::A)), 10);
    up.set_tag(2);
    std::thread::sleep((t0 + ms(1200)).saturating_duration_since(Instant::now()));
    // First hit: popular only at the second, though little enough TTL is left.
    let r = ask(&s, "pf.example.org", Rtype::A);
    assert_eq!(addrs(&r), ["192.0.2.1"]);
    std::thread::sleep(ms(300));
    assert_eq!(
        up.count_name("pf.example.org"),
        1,
        "prefetched after one hit (prefetch 2)"
    );
    // Second hit, with 9 s of 10 left (<= 90%): served from the entry, and refreshed.
    let r = ask(&s, "pf.example.org", Rtype::A);
    assert_eq!(addrs(&r), ["192.0.2.1"]);
    wait_until("the prefetch", Duration::from_secs(3), || {
        up.count_name("pf.example.org") == 2
    });
    let r = ask(&s, "pf.example.org", Rtype::A);
    assert_eq!(addrs(&r), ["192.0.2.2"], "the refreshed entry");
    assert!(ttl(&r) >= 9, "{}", ttl(&r));
    assert_eq!(up.count_name("pf.example.org"), 2);
    assert_eq!(metric(&scrape(m), "coredns_cache_prefetch_total", &[]), Some(1.0));
}

#[test]
fn keepttl_answers_hits_with_the_stored_ttl() {
    let up = FakeUpstream::start();
    let s = serve(&format!("forward . {}\ncache 30 {{\n    keepttl\n}}", up.spec()), &[]);
    assert_eq!(ttl(&ask(&s, "k.example.org", Rtype::A)), 30);
    std::thread::sleep(ms(1200));
    let r = ask(&s, "k.example.org", Rtype::A);
    assert_eq!(ttl(&r), 30);
    assert!(r.header().aa());
    assert_eq!(up.count_name("k.example.org"), 1);
}

#[test]
fn disable_turns_off_one_cache_for_some_zones_and_zones_limit_the_cache() {
    let up = FakeUpstream::start();
    up.set_mode_for("nx.example.org", Mode::NxDomain);
    up.set_mode_for("nx.example.net", Mode::NxDomain);
    let s = serve(
        &format!(
            "forward . {}\ncache 30 example.org example.net {{\n    disable success example.net\n    disable denial example.org\n}}",
            up.spec()
        ),
        &[],
    );
    for name in [
        "a.example.org",
        "a.example.net",
        "nx.example.org",
        "nx.example.net",
        "a.example.com",
    ] {
        ask(&s, name, Rtype::A);
        ask(&s, name, Rtype::A);
    }
    assert_eq!(up.count_name("a.example.org"), 1, "success cached for example.org");
    assert_eq!(up.count_name("a.example.net"), 2, "success disabled for example.net");
    assert_eq!(up.count_name("nx.example.org"), 2, "denial disabled for example.org");
    assert_eq!(up.count_name("nx.example.net"), 1, "denial cached for example.net");
    assert_eq!(
        up.count_name("a.example.com"),
        2,
        "example.com is not among the cache's zones"
    );
    // Outside the cache's zones the upstream's TTL is left alone.
    assert_eq!(ttl(&ask(&s, "a.example.com", Rtype::A)), 60);
}

// ------------------------------------------------------------------------------------
// loop

/// Starts `.:PORT { loop; forward . 127.0.0.1:PORT }` with `args` and checks that it
/// ends with status 1 and CoreDNS's message.
fn assert_loop_detected(args: &[&str]) {
    let mut launch =
        Launch::new(".:{port} {\n    bind 127.0.0.1\n    loop\n    forward . 127.0.0.1:{port}\n}\n").no_wait();
    for a in args {
        launch = launch.arg(*a);
    }
    let mut s = launch.start();
    let code = s.wait_exit(Duration::from_secs(20));
    let out = s.output();
    assert_eq!(code, Some(1), "{args:?}: exit status after 20 s\n{out}");
    let line = out
        .lines()
        .find(|l| l.contains("[FATAL] plugin/loop: Loop ("))
        .unwrap_or_else(|| panic!("no FATAL line\n{out}"));
    let want = format!(
        " -> 127.0.0.1:{}) detected for zone \".\", see https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO ",
        s.port
    );
    assert!(line.starts_with("[FATAL] plugin/loop: Loop (127.0.0.1:"), "{line}");
    assert!(line.contains(&want), "{line}\nwanted: {want}");
    assert!(line.ends_with(".\""), "{line}");
}

#[test]
fn forwarding_to_itself_is_a_loop_that_ends_the_process() {
    // One worker: every trip around the loop lands on the worker that sent it.
    assert_loop_detected(&["-workers", "1"]);
    // The default worker count (this machine's CPUs).
    for _ in 0..3 {
        assert_loop_detected(&[]);
    }
}

#[test]
fn loop_sends_one_probe_upstream_and_then_disarms() {
    let up = FakeUpstream::start();
    let s = serve(&format!("loop\nforward . {}", up.spec()), &[]);
    up.wait_until(Duration::from_secs(5), |u| {
        u.seen().iter().any(|q| q.qtype == Rtype::HINFO)
    });
    let probe = up
        .seen()
        .into_iter()
        .find(|q| q.qtype == Rtype::HINFO)
        .expect("the loop probe");
    // <number>.<number>. under the block's zone, the root.
    let labels: Vec<&str> = probe.name.trim_end_matches('.').split('.').collect();
    assert_eq!(labels.len(), 2, "{}", probe.name);
    assert!(
        labels.iter().all(|l| l.chars().all(|c| c.is_ascii_digit())),
        "{}",
        probe.name
    );
    // Disarmed 2 s after the reply: the same query again, several times, is harmless.
    std::thread::sleep(ms(2500));
    for _ in 0..4 {
        ask(&s, &probe.name, Rtype::HINFO);
    }
    std::thread::sleep(ms(200));
    assert_eq!(ask(&s, "alive.example.org", Rtype::A).header().rcode(), Rcode::NOERROR);
    assert!(!s.output().contains("FATAL"), "{}", s.output());
    assert_eq!(up.count_type(&probe.name, Rtype::HINFO), 5);
}

// ------------------------------------------------------------------------------------
// loadbalance

#[test]
fn loadbalance_shuffles_forwarded_and_cached_addresses() {
    let up = FakeUpstream::start();
    up.set_mode(Mode::BigAnswer(4));
    let want: BTreeSet<String> = (1..=4).map(|i| format!("198.18.0.{i}")).collect();
    let s = serve(&format!("loadbalance\nforward . {}", up.spec()), &[]);
    let mut firsts = BTreeSet::new();
    let mut orders = BTreeSet::new();
    for i in 0..50 {
        let a = addrs(&ask(&s, &format!("lb{i}.example.org"), Rtype::A));
        assert_eq!(a.iter().cloned().collect::<BTreeSet<_>>(), want, "{a:?}");
        assert_eq!(a.len(), 4);
        firsts.insert(a[0].clone());
        orders.insert(a);
    }
    assert!(firsts.len() >= 3, "first addresses over 50 replies: {firsts:?}");
    assert!(orders.len() >= 5, "orders over 50 replies: {orders:?}");

    // Behind the cache too: one upstream query, still shuffled.
    let c = serve(&format!("loadbalance\ncache 30\nforward . {}", up.spec()), &[]);
    let mut firsts = BTreeSet::new();
    for _ in 0..50 {
        let a = addrs(&ask(&c, "cached.example.org", Rtype::A));
        assert_eq!(a.iter().cloned().collect::<BTreeSet<_>>(), want);
        firsts.insert(a[0].clone());
    }
    assert_eq!(up.count_name("cached.example.org"), 1);
    assert!(firsts.len() >= 3, "first addresses of cached replies: {firsts:?}");
}

#[test]
fn loadbalance_prefer_puts_the_subnet_first() {
    let up = FakeUpstream::start();
    up.set_mode(Mode::BigAnswer(4));
    let s = serve(
        &format!("loadbalance {{\n    prefer 198.18.0.3/32\n}}\nforward . {}", up.spec()),
        &[],
    );
    let mut seconds = BTreeSet::new();
    for i in 0..30 {
        let a = addrs(&ask(&s, &format!("p{i}.example.org"), Rtype::A));
        assert_eq!(a.len(), 4);
        assert_eq!(a[0], "198.18.0.3", "{a:?}");
        seconds.insert(a[1].clone());
    }
    assert!(seconds.len() >= 2, "the others are still shuffled: {seconds:?}");
}

// ------------------------------------------------------------------------------------
// The standard Kubernetes Corefile

#[test]
fn the_standard_kubernetes_corefile_end_to_end() {
    let api = FakeApi::with_objects(vec![
        namespace("default"),
        namespace("kube-system"),
        namespace("team-a"),
        service("default", "kubernetes", "10.96.0.1", &[("https", 443, "TCP")]),
        service("team-a", "web", "10.96.1.1", &[("http", 80, "TCP")]),
        headless("team-a", "pool"),
        slice(
            "team-a",
            "pool-abc",
            "pool",
            &["10.244.1.1", "10.244.1.2", "10.244.1.3", "10.244.1.4"],
        ),
        external_name("team-a", "ext", "www.external.test"),
    ]);
    let up = FakeUpstream::tagged(9);
    let (h, r, m) = (free_port(), free_port(), free_port());
    let text = format!(
        ".:{{port}} {{
    bind 127.0.0.1
    errors
    health 127.0.0.1:{h} {{
        lameduck 1s
    }}
    ready 127.0.0.1:{r}
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        endpoint {url}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }}
    prometheus 127.0.0.1:{m}
    forward . {upstream} {{
        max_concurrent 1000
    }}
    cache 30
    loop
    reload
    loadbalance
}}
",
        url = api.url(),
        upstream = up.spec(),
    );
    let s = Launch::new(&text).start();
    wait_until("/ready 200", Duration::from_secs(10), || {
        matches!(http_get(r, "/ready"), Ok((200, _)))
    });
    assert_eq!(http_get(r, "/ready"), Ok((200, "OK".into())));
    assert_eq!(http_get(h, "/health"), Ok((200, "OK".into())));
    let cluster_queries_upstream = || {
        up.seen()
            .into_iter()
            .filter(|q| q.name.ends_with("cluster.local.") || q.name.ends_with(".10.in-addr.arpa."))
            .map(|q| q.name)
            .collect::<Vec<_>>()
    };

    // A service, from kubernetes: authoritative, TTL 30, never upstream.
    let ans = ask(&s, "web.team-a.svc.cluster.local", Rtype::A);
    assert_eq!(rcode(&ans), Rcode::NOERROR);
    assert!(ans.header().aa());
    assert_eq!(
        section(&ans, "answer"),
        ["web.team-a.svc.cluster.local. 30 IN A 10.96.1.1"]
    );
    let nx = ask(&s, "nope.team-a.svc.cluster.local", Rtype::A);
    assert_eq!(rcode(&nx), Rcode::NXDOMAIN);
    assert!(nx.header().aa());
    let pod = ask(&s, "10-244-7-7.team-a.pod.cluster.local", Rtype::A);
    assert_eq!(addrs(&pod), ["10.244.7.7"], "pods insecure");
    // A reverse name of a service, from kubernetes.
    let ptr = ask(&s, "1.1.96.10.in-addr.arpa", Rtype::PTR);
    assert_eq!(
        section(&ptr, "answer"),
        ["1.1.96.10.in-addr.arpa. 30 IN PTR web.team-a.svc.cluster.local."]
    );
    // Headless endpoints come shuffled by loadbalance.
    let mut firsts = BTreeSet::new();
    for _ in 0..30 {
        let a = addrs(&ask(&s, "pool.team-a.svc.cluster.local", Rtype::A));
        assert_eq!(a.len(), 4, "{a:?}");
        firsts.insert(a[0].clone());
    }
    assert!(firsts.len() >= 2, "{firsts:?}");
    assert_eq!(
        cluster_queries_upstream(),
        Vec::<String>::new(),
        "cluster names went upstream"
    );

    // An external name: forwarded once, then from the cache.
    let ext = ask(&s, "www.example.com", Rtype::A);
    assert_eq!(addrs(&ext), ["192.0.2.9"]);
    assert_eq!(ttl(&ext), 30, "60 from upstream, capped by cache 30");
    let again = ask(&s, "www.example.com", Rtype::A);
    assert_eq!(addrs(&again), ["192.0.2.9"]);
    assert!(again.header().aa());
    assert_eq!(up.count_name("www.example.com"), 1);

    // A PTR outside the cluster falls through to forward.
    let ptr = ask(&s, "4.3.2.1.in-addr.arpa", Rtype::PTR);
    assert_eq!(rcode(&ptr), Rcode::NOERROR);
    assert_eq!(
        section(&ptr, "answer"),
        ["4.3.2.1.in-addr.arpa. 30 IN PTR host-9.upstream.test."]
    );
    assert_eq!(up.count_type("4.3.2.1.in-addr.arpa", Rtype::PTR), 1);

    // An ExternalName pointing outside: the CNAME, and the target's A through the
    // server's own chain (forwarded).
    let ext = ask(&s, "ext.team-a.svc.cluster.local", Rtype::A);
    assert_eq!(rcode(&ext), Rcode::NOERROR);
    let ans = section(&ext, "answer");
    assert_eq!(ans.len(), 2, "{ans:?}");
    assert_eq!(ans[0], "ext.team-a.svc.cluster.local. 30 IN CNAME www.external.test.");
    assert!(
        ans[1].starts_with("www.external.test. ") && ans[1].ends_with(" IN A 192.0.2.9"),
        "{ans:?}"
    );
    assert_eq!(up.count_type("www.external.test", Rtype::A), 1);

    // Metrics: cache and forward.
    let page = scrape(m);
    let hits = metric(&page, "coredns_cache_hits_total", &[("type", "success")]);
    assert!(hits.is_some_and(|v| v >= 1.0), "hits {hits:?}\n{page}");
    let misses = metric(&page, "coredns_cache_misses_total", &[]);
    assert!(misses.is_some_and(|v| v >= 1.0), "misses {misses:?}");
    let entries = metric(&page, "coredns_cache_entries", &[("type", "success")]);
    assert!(entries.is_some_and(|v| v >= 1.0), "entries {entries:?}");
    assert!(metric(&page, "coredns_cache_requests_total", &[]).is_some_and(|v| v >= 3.0));
    assert_eq!(
        metric(&page, "coredns_forward_max_concurrent_rejects_total", &[]),
        Some(0.0)
    );
    let to = up.spec();
    let fwd = metric(
        &page,
        "coredns_proxy_request_duration_seconds_count",
        &[("proxy_name", "forward"), ("to", &to), ("rcode", "NOERROR")],
    );
    assert!(fwd.is_some_and(|v| v >= 3.0), "forward durations {fwd:?}\n{page}");
    assert!(page.contains("coredns_dns_requests_total{"), "{page}");
    assert!(!s.output().contains("[FATAL]"), "{}", s.output());
}
