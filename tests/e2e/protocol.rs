//! Protocol rules of the serving core (RFC 1035, 6891, 7766), with crafted packets
//! against the real binary.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use domain::base::Message;
use domain::base::iana::{OptRcode, Rcode, Rtype};

use testkit::prelude::*;

/// A server with a few names, one of them with 100 addresses (too many for 512 bytes).
fn server() -> Server {
    let mut many = String::new();
    for i in 0..100 {
        many.push_str(&format!("        10.1.{}.{} big.example.org\n", i / 250, i % 250 + 1));
    }
    let corefile = format!(
        "example.org:{{port}} {{\n    bind 127.0.0.1\n    hosts {{\n        10.0.0.1 www.example.org\n{many}    }}\n}}\n"
    );
    Server::start(&corefile)
}

fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    for v in [flags, qd, an, ns, ar] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    m
}

const WWW: &[u8] = b"\x03www\x07example\x03org\x00";

fn question(name: &[u8], qtype: u16, class: u16) -> Vec<u8> {
    let mut q = name.to_vec();
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&class.to_be_bytes());
    q
}

fn opt(size: u16, version: u8, options: &[u8]) -> Vec<u8> {
    let mut o = vec![0, 0, 41];
    o.extend_from_slice(&size.to_be_bytes());
    o.extend_from_slice(&[0, version, 0, 0]);
    o.extend_from_slice(&(options.len() as u16).to_be_bytes());
    o.extend_from_slice(options);
    o
}

fn parse(raw: Vec<u8>) -> Message<Vec<u8>> {
    Message::from_octets(raw).expect("reply parses")
}

#[test]
fn a_well_formed_query_is_answered() {
    let s = server();
    let r = s.query("www.example.org", Rtype::A);
    assert_eq!(rcode(&r), Rcode::NOERROR);
    assert!(r.header().qr() && r.header().aa() && r.header().rd() && !r.header().ra());
    assert_eq!(section(&r, "answer"), vec!["www.example.org. 3600 IN A 10.0.0.1"]);
    assert_eq!(r.opt().expect("OPT echoed").udp_payload_size(), 1232);
}

#[test]
fn question_count_other_than_one_is_formerr() {
    let s = server();
    for qd in [0u16, 2] {
        let mut m = header(0xBEEF, 0x0100, qd, 0, 0, 0);
        for _ in 0..qd {
            m.extend(question(WWW, 1, 1));
        }
        let r = parse(s.raw_udp(&m, Duration::from_secs(2)).expect("a reply"));
        assert_eq!(r.header().id(), 0xBEEF);
        assert!(r.header().qr());
        assert_eq!(rcode(&r), Rcode::FORMERR, "qdcount {qd}");
        assert_eq!(counts(&r).1, 0);
    }
}

#[test]
fn malformed_questions_are_formerr() {
    let s = server();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("label type 0x40", {
            let mut m = header(1, 0x0100, 1, 0, 0, 0);
            m.extend_from_slice(b"\x41abc\x00\x00\x01\x00\x01");
            m
        }),
        ("cut inside the name", {
            let mut m = header(2, 0x0100, 1, 0, 0, 0);
            m.extend_from_slice(b"\x03www\x07exa");
            m
        }),
        ("no type and class", {
            let mut m = header(3, 0x0100, 1, 0, 0, 0);
            m.extend_from_slice(WWW);
            m
        }),
        ("compression pointer in the question", {
            let mut m = header(4, 0x0100, 1, 0, 0, 0);
            m.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01");
            m
        }),
        ("additional count larger than the records present", {
            let mut m = header(5, 0x0100, 1, 0, 0, 1);
            m.extend(question(WWW, 1, 1));
            m
        }),
        ("two OPT records", {
            let mut m = header(6, 0x0100, 1, 0, 0, 2);
            m.extend(question(WWW, 1, 1));
            m.extend(opt(1232, 0, &[]));
            m.extend(opt(1232, 0, &[]));
            m
        }),
        ("an EDNS option overrunning its record", {
            let mut m = header(7, 0x0100, 1, 0, 0, 1);
            m.extend(question(WWW, 1, 1));
            let mut o = opt(1232, 0, &[0, 10, 0, 8, 1, 2]);
            o[10] = 6; // rdlength 6, but the option claims 8 bytes of data
            m.extend(o);
            m
        }),
        ("name longer than 255 bytes", {
            let mut m = header(8, 0x0100, 1, 0, 0, 0);
            for _ in 0..5 {
                m.push(63);
                m.extend_from_slice(&[b'a'; 63]);
            }
            m.extend_from_slice(b"\x00\x00\x01\x00\x01");
            m
        }),
    ];
    for (what, msg) in cases {
        let reply = s
            .raw_udp(&msg, Duration::from_secs(2))
            .unwrap_or_else(|| panic!("{what}: no reply"));
        let r = parse(reply);
        assert_eq!(rcode(&r), Rcode::FORMERR, "{what}");
        assert_eq!(r.header().id(), u16::from_be_bytes([msg[0], msg[1]]), "{what}");
    }
    // The server is still there.
    assert_eq!(rcode(&s.query("www.example.org", Rtype::A)), Rcode::NOERROR);
}

#[test]
fn opcodes_other_than_query_are_notimp() {
    let s = server();
    for op in [1u16, 2, 4, 5] {
        let mut m = header(9, op << 11, 1, 0, 0, 0);
        m.extend(question(WWW, 6, 1));
        let r = parse(s.raw_udp(&m, Duration::from_secs(2)).expect("reply"));
        assert_eq!(rcode(&r), Rcode::NOTIMP, "opcode {op}");
        assert_eq!(r.header().opcode().to_int(), op as u8);
    }
}

#[test]
fn responses_and_runts_are_dropped() {
    let s = server();
    let mut response = header(10, 0x8100, 1, 0, 0, 0);
    response.extend(question(WWW, 1, 1));
    assert!(
        s.raw_udp(&response, Duration::from_millis(300)).is_none(),
        "QR set must get no reply"
    );
    assert!(
        s.raw_udp(&[1, 2, 3], Duration::from_millis(300)).is_none(),
        "under 12 bytes must get no reply"
    );
    assert_eq!(rcode(&s.query("www.example.org", Rtype::A)), Rcode::NOERROR);
}

#[test]
fn edns_version_above_zero_is_badvers() {
    let s = server();
    let mut m = header(11, 0x0100, 1, 0, 0, 1);
    m.extend(question(WWW, 1, 1));
    m.extend(opt(1232, 1, &[]));
    let r = parse(s.raw_udp(&m, Duration::from_secs(2)).expect("reply"));
    let opt = r.opt().expect("BADVERS carries an OPT");
    assert_eq!(opt.rcode(r.header()), OptRcode::BADVERS);
    assert_eq!(opt.version(), 0);
    assert_eq!(counts(&r).1, 0);
}

#[test]
fn unknown_edns_options_are_ignored() {
    let s = server();
    let mut m = header(12, 0x0100, 1, 0, 0, 1);
    m.extend(question(WWW, 1, 1));
    // Option code 65001 (local use) with 4 bytes, and a zero-length cookie-like option.
    m.extend(opt(1232, 0, &[0xFD, 0xE9, 0, 4, 1, 2, 3, 4, 0xFD, 0xEA, 0, 0]));
    let r = parse(s.raw_udp(&m, Duration::from_secs(2)).expect("reply"));
    assert_eq!(rcode(&r), Rcode::NOERROR);
    assert_eq!(section(&r, "answer").len(), 1);
}

#[test]
fn classes_other_than_in_are_refused() {
    let s = server();
    for class in [3u16, 4, 255] {
        let mut m = header(13, 0x0100, 1, 0, 0, 0);
        m.extend(question(WWW, 16, class));
        let r = parse(s.raw_udp(&m, Duration::from_secs(2)).expect("reply"));
        assert_eq!(rcode(&r), Rcode::REFUSED, "class {class}");
        assert!(!r.header().aa());
    }
}

#[test]
fn names_outside_every_zone_are_refused() {
    let s = server();
    let r = s.query("www.example.com", Rtype::A);
    assert_eq!(rcode(&r), Rcode::REFUSED);
    assert_eq!(counts(&r).1, 0);
}

#[test]
fn big_answers_are_truncated_to_whole_records_over_udp_and_complete_over_tcp() {
    let s = server();
    // No EDNS: 512 bytes. Header 12 + question 21; each A is 16 bytes (pointer owner).
    let r = udp_exchange(s.addr(), &query_bytes("big.example.org", Rtype::A, None, 1));
    assert!(r.header().tc(), "TC must be set");
    let raw_len = r.as_slice().len();
    assert!(raw_len <= 512, "{raw_len} bytes over UDP without EDNS");
    assert_eq!(counts(&r).1, (512 - 33) / 16, "as many whole records as fit");
    assert_eq!(section(&r, "answer").len(), counts(&r).1 as usize);

    // EDNS 1232: 11 bytes go to the OPT record.
    let r = udp_exchange(s.addr(), &query_bytes("big.example.org", Rtype::A, Some(1232), 2));
    assert!(r.header().tc());
    assert!(r.as_slice().len() <= 1232);
    assert_eq!(counts(&r).1, (1232 - 33 - 11) / 16);

    // A client size below 512 counts as 512 (RFC 6891 6.2.5).
    let r = udp_exchange(s.addr(), &query_bytes("big.example.org", Rtype::A, Some(100), 3));
    assert!(r.as_slice().len() <= 512 && r.as_slice().len() > 400);

    // The client's larger size is honoured.
    let r = udp_exchange(s.addr(), &query_bytes("big.example.org", Rtype::A, Some(4096), 4));
    assert!(!r.header().tc());
    assert_eq!(counts(&r).1, 100);

    // TCP gets everything.
    let r = s.query_tcp("big.example.org", Rtype::A);
    assert!(!r.header().tc());
    assert_eq!(section(&r, "answer").len(), 100);
}

#[test]
fn tcp_pipelined_queries_are_all_answered() {
    let s = server();
    let mut conn = TcpStream::connect(s.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut burst = Vec::new();
    for id in 1..=20u16 {
        let q = query_bytes(
            if id % 2 == 0 {
                "www.example.org"
            } else {
                "big.example.org"
            },
            Rtype::A,
            None,
            id,
        );
        burst.extend_from_slice(&(q.len() as u16).to_be_bytes());
        burst.extend_from_slice(&q);
    }
    conn.write_all(&burst).unwrap();
    let mut ids: Vec<u16> = (0..20)
        .map(|_| {
            let r = Message::from_octets(read_frame(&mut conn).expect("a reply per query")).unwrap();
            assert_eq!(rcode(&r), Rcode::NOERROR);
            r.header().id()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
}

#[test]
fn tcp_queries_split_across_writes_are_reassembled() {
    let s = server();
    let mut conn = TcpStream::connect(s.addr()).unwrap();
    conn.set_nodelay(true).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let q = query_bytes("www.example.org", Rtype::A, None, 77);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    for b in &framed {
        conn.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = Message::from_octets(read_frame(&mut conn).expect("reply")).unwrap();
    assert_eq!(r.header().id(), 77);
    assert_eq!(section(&r, "answer"), vec!["www.example.org. 3600 IN A 10.0.0.1"]);
}

#[test]
fn tcp_client_that_reads_slowly_gets_every_answer() {
    let s = server();
    let mut conn = TcpStream::connect(s.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // 300 answers of ~1.6 kB: far more than the socket buffers hold at once.
    let n = 300u16;
    let mut burst = Vec::new();
    for id in 0..n {
        let q = query_bytes("big.example.org", Rtype::A, None, id);
        burst.extend_from_slice(&(q.len() as u16).to_be_bytes());
        burst.extend_from_slice(&q);
    }
    conn.write_all(&burst).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut got = 0;
    while got < n {
        let Some(reply) = read_frame(&mut conn) else {
            break;
        };
        assert_eq!(Message::from_octets(reply).unwrap().header_counts().ancount(), 100);
        got += 1;
    }
    assert_eq!(got, n, "every pipelined query answered in full");
}

#[test]
fn udp_and_tcp_serve_the_same_answer() {
    let s = server();
    let u = s.query("www.example.org", Rtype::A);
    let t = s.query_tcp("www.example.org", Rtype::A);
    assert_eq!(section(&u, "answer"), section(&t, "answer"));
}

#[test]
fn many_concurrent_udp_clients_are_all_answered() {
    let s = server();
    let start = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let addr = s.addr();
            std::thread::spawn(move || {
                for i in 0..200u16 {
                    let r = udp_exchange(addr, &query_bytes("www.example.org", Rtype::A, Some(1232), i));
                    assert_eq!(r.header().id(), i);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert!(start.elapsed() < Duration::from_secs(30));
}

// ------------------------------------------------------------------------------------
// DNS cookies (RFC 7873, server cookies as RFC 9018)

/// The COOKIE option data of a reply, if its OPT has one.
fn reply_cookie(r: &Message<Vec<u8>>) -> Option<Vec<u8>> {
    use domain::base::opt::UnknownOptData;
    let opt = r.opt()?;
    opt.opt()
        .iter::<UnknownOptData<&[u8]>>()
        .filter_map(Result::ok)
        .find(|o| o.code().to_int() == 10)
        .map(|o| o.as_slice().to_vec())
}

/// A query for www.example.org with EDNS and a COOKIE option holding `cookie`.
fn cookie_query(id: u16, cookie: &[u8]) -> Vec<u8> {
    let mut m = header(id, 0x0100, 1, 0, 0, 1);
    m.extend(question(WWW, 1, 1));
    let mut o = vec![0, 10];
    o.extend_from_slice(&(cookie.len() as u16).to_be_bytes());
    o.extend_from_slice(cookie);
    m.extend(opt(1232, 0, &o));
    m
}

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

#[test]
fn a_client_cookie_gets_a_server_cookie_back() {
    let s = server();
    let cc = [1, 2, 3, 4, 5, 6, 7, 8];
    let r = parse(s.raw_udp(&cookie_query(1, &cc), Duration::from_secs(2)).expect("reply"));
    assert_eq!(rcode(&r), Rcode::NOERROR);
    assert_eq!(section(&r, "answer").len(), 1);
    let c = reply_cookie(&r).expect("a COOKIE option in the reply");
    // Client cookie, then version 1, three reserved zeros, the time, an 8-byte hash.
    assert_eq!(c.len(), 24, "{c:02x?}");
    assert_eq!(&c[..8], &cc);
    assert_eq!(&c[8..12], &[1, 0, 0, 0]);
    let stamp = u32::from_be_bytes(c[12..16].try_into().unwrap());
    assert!(stamp.abs_diff(unix_now()) <= 5, "timestamp {stamp}");

    // The client sends it back, over UDP and over TCP: answered, with a cookie for the
    // same client cookie.
    let r = parse(s.raw_udp(&cookie_query(2, &c), Duration::from_secs(2)).expect("reply"));
    assert_eq!(section(&r, "answer").len(), 1);
    assert_eq!(&reply_cookie(&r).expect("cookie")[..8], &cc);
    let r = tcp_exchange(s.addr(), &cookie_query(3, &c));
    assert_eq!(section(&r, "answer").len(), 1);
    assert_eq!(&reply_cookie(&r).expect("cookie over TCP")[..8], &cc);
    // A server cookie that is not ours (another server's, or tampered) is no error:
    // answered, with a fresh cookie of ours.
    let mut forged = c.clone();
    forged[20] ^= 0xff;
    let r = parse(
        s.raw_udp(&cookie_query(4, &forged), Duration::from_secs(2))
            .expect("reply"),
    );
    assert_eq!(rcode(&r), Rcode::NOERROR);
    let fresh = reply_cookie(&r).expect("cookie");
    assert_eq!(fresh[..12], c[..12]);
    assert_ne!(fresh[16..], forged[16..]);

    // No cookie asked, none given.
    let r = udp_exchange(s.addr(), &query_bytes("www.example.org", Rtype::A, Some(1232), 5));
    assert!(reply_cookie(&r).is_none());
}

#[test]
fn the_cookie_counts_against_the_udp_size() {
    let s = server();
    // big.example.org: 100 A records of 16 bytes; the OPT with a cookie takes 11 + 28.
    let mut m = header(8, 0x0100, 1, 0, 0, 1);
    m.extend(question(b"\x03big\x07example\x03org\x00", 1, 1));
    m.extend(opt(1232, 0, &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]));
    let raw = s.raw_udp(&m, Duration::from_secs(2)).expect("reply");
    assert!(raw.len() <= 1232, "{} bytes", raw.len());
    let r = parse(raw);
    assert!(r.header().tc());
    assert_eq!(counts(&r).1 as usize, (1232 - 33 - 39) / 16);
    assert_eq!(&reply_cookie(&r).expect("cookie")[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
}

#[test]
fn a_malformed_cookie_option_is_formerr() {
    let s = server();
    // 8 bytes alone, or 16 to 40 with a server cookie; anything else is malformed.
    for len in [0usize, 1, 7, 9, 15, 41] {
        let r = parse(
            s.raw_udp(&cookie_query(6, &vec![7; len]), Duration::from_secs(2))
                .expect("reply"),
        );
        assert_eq!(rcode(&r), Rcode::FORMERR, "cookie of {len} bytes");
    }
    for len in [8usize, 16, 40] {
        let r = parse(
            s.raw_udp(&cookie_query(7, &vec![7; len]), Duration::from_secs(2))
                .expect("reply"),
        );
        assert_eq!(rcode(&r), Rcode::NOERROR, "cookie of {len} bytes");
    }
}

#[test]
#[ignore = "needs dig (bind9-dnsutils); .ci/run runs it: cargo test --locked -- --ignored"]
fn dig_finds_its_cookie_good() {
    testkit::tools::require_dig();
    let s = server();
    let port = s.port.to_string();
    let out = testkit::tools::dig(&["@127.0.0.1", "-p", &port, "+cookie", "+norec", "www.example.org", "A"]);
    let line = out
        .lines()
        .find(|l| l.contains("COOKIE:"))
        .unwrap_or_else(|| panic!("no COOKIE in dig's output:\n{out}"));
    assert!(line.contains("(good)"), "{line}");
    // Sent back as dig would on its next query.
    let cookie = line.split_whitespace().nth(2).unwrap();
    let out = testkit::tools::dig(&[
        "@127.0.0.1",
        "-p",
        &port,
        &format!("+cookie={cookie}"),
        "www.example.org",
        "A",
    ]);
    assert!(out.contains("10.0.0.1") && out.contains("(good)"), "{out}");
}
