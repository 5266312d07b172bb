//! The serving core's chain contract and worker behaviour: the upstream path (through
//! the test plugin `testupstream`), contained panics, TCP connection caps, and the
//! first plugins' output formats.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use domain::base::iana::{Rcode, Rtype};

use testkit::prelude::*;

fn relay(upstream: &FakeUpstream, timeout: &str) -> Server {
    Server::start(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    errors\n    log\n    testupstream {} {timeout}\n}}\n",
        upstream.addr()
    ))
}

#[test]
fn a_plugin_can_hand_a_query_upstream_and_answer_from_the_reply() {
    let up = FakeUpstream::start();
    let s = relay(&up, "2s");
    let before = up.received() as usize;
    let r = s.query("Mixed.Example.com", Rtype::A);
    assert_eq!(rcode(&r), Rcode::NOERROR);
    assert_eq!(section(&r, "answer"), vec!["Mixed.Example.com. 60 IN A 192.0.2.1"]);
    assert_eq!(up.received() as usize, before + 1);
    // Over TCP the same path answers too.
    let r = s.query_tcp("tcp.example.com", Rtype::A);
    assert_eq!(section(&r, "answer"), vec!["tcp.example.com. 60 IN A 192.0.2.1"]);
    // The response path ran: `log` logged the relayed answer.
    assert!(s.wait_output(Duration::from_secs(2), |o| o.contains("\"A IN mixed.example.com. udp")));
}

#[test]
fn an_upstream_timeout_resumes_the_plugin_which_fails_the_query() {
    let up = FakeUpstream::with_mode(Mode::Silent);
    let s = relay(&up, "300ms");
    let t = Instant::now();
    let r = s.query("slow.example.com", Rtype::A);
    let waited = t.elapsed();
    assert_eq!(rcode(&r), Rcode::SERVFAIL);
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    assert!(s.wait_output(Duration::from_secs(2), |o| {
        o.contains("[ERROR] plugin/errors: 2 slow.example.com. A: plugin/testupstream: timeout")
    }));
}

#[test]
fn replies_with_the_wrong_id_are_ignored() {
    // First a spoofed reply with another ID, then the genuine one.
    let up = FakeUpstream::with_mode(Mode::WrongId);
    up.genuine_after(Some(Duration::from_millis(20)));
    let s = relay(&up, "2s");
    let r = s.query("spoof.example.com", Rtype::A);
    assert_eq!(rcode(&r), Rcode::NOERROR);
    assert_eq!(section(&r, "answer"), vec!["spoof.example.com. 60 IN A 192.0.2.1"]);
}

#[test]
fn a_reply_to_another_question_is_not_passed_on() {
    let up = FakeUpstream::with_mode(Mode::WrongQuestion);
    let s = relay(&up, "2s");
    let r = s.query("asked.example.com", Rtype::A);
    assert_eq!(rcode(&r), Rcode::FORMERR);
    assert!(section(&r, "answer").is_empty());
}

#[test]
fn many_queries_in_flight_upstream_at_once_all_complete() {
    let up = FakeUpstream::start();
    let s = relay(&up, "2s");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    for id in 0..200u16 {
        sock.send_to(
            &query_bytes(&format!("n{id}.example.com"), Rtype::A, Some(1232), id),
            s.addr(),
        )
        .unwrap();
    }
    let mut seen = [false; 200];
    let mut buf = [0u8; 2048];
    for _ in 0..200 {
        let n = sock.recv(&mut buf).expect("every query answered");
        let m = domain::base::Message::from_octets(buf[..n].to_vec()).unwrap();
        assert_eq!(rcode(&m), Rcode::NOERROR);
        seen[m.header().id() as usize] = true;
    }
    assert!(seen.iter().all(|s| *s));
}

#[test]
fn a_panic_in_a_plugin_answers_servfail_and_the_worker_goes_on() {
    let s = Server::start(
        ".:{port} {\n    bind 127.0.0.1\n    log\n    testpanic\n    hosts {\n        10.0.0.1 ok.example.org\n        fallthrough\n    }\n}\n",
    );
    for _ in 0..5 {
        let r = s.query("panic.example.org", Rtype::A);
        assert_eq!(rcode(&r), Rcode::SERVFAIL);
        let r = s.query("ok.example.org", Rtype::A);
        assert_eq!(section(&r, "answer"), vec!["ok.example.org. 3600 IN A 10.0.0.1"]);
    }
    // The panic went through the response hooks: log saw the SERVFAIL.
    assert!(s.wait_output(Duration::from_secs(2), |o| {
        o.contains("\"A IN panic.example.org. udp") && o.contains("SERVFAIL")
    }));
    assert!(s.output().contains("recovered from panic"));
}

#[test]
fn tcp_connections_beyond_the_cap_are_closed() {
    let s = Launch::new(".:{port} {\n    bind 127.0.0.1\n    whoami\n}\n")
        .arg("-workers")
        .arg("1")
        .arg("-tcp.max-connections")
        .arg("3")
        .start();
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(s.addr()).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = TcpStream::connect(s.addr()).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(
        extra.read(&mut b).map_err(|e| e.kind()),
        Ok(0),
        "the 4th connection is closed"
    );
    // The held connections still work, and UDP is unaffected.
    let mut first = held.into_iter().next().unwrap();
    first.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    write_frame(&mut first, &query_bytes("x.example", Rtype::A, None, 5));
    assert!(read_frame(&mut first).is_some());
    assert_eq!(rcode(&s.query("x.example", Rtype::A)), Rcode::NOERROR);
}

#[test]
fn log_lines_follow_the_common_format() {
    let s = Server::start(".:{port} {\n    bind 127.0.0.1\n    log\n    whoami\n}\n");
    let _ = s.query("Some.Name.example", Rtype::AAAA);
    // {remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" {rcode} {>rflags} {rsize} {duration}
    let want = "\"AAAA IN some.name.example. udp ";
    assert!(
        s.wait_output(Duration::from_secs(2), |o| o.contains(want)),
        "{}",
        s.output()
    );
    let out = s.output();
    let line = out.lines().find(|l| l.contains(want)).unwrap();
    assert!(line.starts_with("[INFO] 127.0.0.1:"), "{line}");
    let tail: Vec<&str> = line.rsplit('"').next().unwrap().split_whitespace().collect();
    assert_eq!(tail[0], "NOERROR", "{line}");
    assert_eq!(tail[1], "qr,aa,rd", "{line}");
    assert!(tail[2].parse::<usize>().is_ok(), "{line}");
    assert!(
        tail[3].ends_with('s') && tail[3].trim_end_matches('s').parse::<f64>().is_ok(),
        "{line}"
    );
    assert!(line.contains(" - 4660 \""), "the query ID: {line}");
    assert!(line.contains("udp 46 false 1232\""), "size, DO and bufsize: {line}");
}

#[test]
fn log_classes_select_what_is_logged() {
    let s = Server::start(
        ".:{port} {\n    bind 127.0.0.1\n    log . {\n        class denial error\n    }\n    hosts {\n        10.0.0.1 yes.example\n    }\n}\n",
    );
    let _ = s.query("yes.example", Rtype::A);
    let _ = s.query("no.example", Rtype::A);
    assert!(s.wait_output(Duration::from_secs(2), |o| o.contains("no.example.")));
    assert!(
        !s.output().contains("yes.example."),
        "success is not logged: {}",
        s.output()
    );
}

#[test]
fn whoami_reports_the_client_address_and_port() {
    let s = Server::start(".:{port} {\n    bind 127.0.0.1\n    whoami\n}\n");
    let r = s.query("example.org", Rtype::A);
    assert!(r.header().aa());
    assert!(section(&r, "answer").is_empty());
    let extra = section(&r, "additional");
    assert_eq!(extra[0], "example.org. 0 IN A 127.0.0.1");
    assert!(extra[1].starts_with("_udp.example.org. 0 IN SRV 0 0 "), "{extra:?}");
    let r = s.query_tcp("example.org", Rtype::A);
    assert!(section(&r, "additional")[1].starts_with("_tcp.example.org. 0 IN SRV 0 0 "));
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut s = Server::start(".:{port} {\n    bind 127.0.0.1\n    whoami\n}\n");
    s.signal(15);
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0));
}
