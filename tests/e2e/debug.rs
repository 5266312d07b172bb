//! The `debug` plugin end to end: CoreDNS's meaning here (its debug README,
//! "Description"): a panic while a query is handled is not recovered, and DEBUG lines
//! are logged; `errors` then logs the failing query in full, in the `debug:` hex dump
//! format of CoreDNS's debug package (pcap.go).

use std::time::Duration;

use domain::base::iana::{Rcode, Rtype};

use testkit::prelude::*;

/// CoreDNS's `debug:` lines of a message, as its pcap_test.go ExampleHexdump shows them.
fn dump(msg: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in msg.chunks(16).enumerate() {
        out.push_str(&format!("debug: {:06x}", i * 16));
        for b in chunk {
            out.push_str(&format!(" {b:02x}"));
        }
        out.push('\n');
    }
    out.push_str(&format!("debug: {:06x}", msg.len()));
    out
}

fn failing(debug: bool, up: &FakeUpstream) -> Server {
    let d = if debug { "    debug\n" } else { "" };
    Server::start(&format!(
        "fail.example:{{port}} {{\n    bind 127.0.0.1\n{d}    errors\n    testupstream {} 200ms\n}}\n.:{{port}} {{\n    bind 127.0.0.1\n    whoami\n}}\n",
        up.addr()
    ))
}

#[test]
fn with_debug_errors_logs_the_failing_query_in_full() {
    let up = FakeUpstream::with_mode(Mode::Silent);
    let q = query_bytes("a.fail.example", Rtype::A, Some(1232), 0x7171);
    let line = "[ERROR] plugin/errors: 2 a.fail.example. A: plugin/testupstream: timeout";
    let s = failing(true, &up);
    assert_eq!(rcode(&udp_exchange(s.addr(), &q)), Rcode::SERVFAIL);
    let want = format!("[DEBUG] plugin/errors: 2 a.fail.example. A: the query\n{}\n", dump(&q));
    assert!(
        s.wait_output(Duration::from_secs(3), |o| o.contains(line) && o.contains(&want)),
        "{want}\nnot in\n{}",
        s.output()
    );
    // The same Corefile without `debug`: the error line only, no DEBUG line at all.
    let s = failing(false, &up);
    assert_eq!(rcode(&udp_exchange(s.addr(), &q)), Rcode::SERVFAIL);
    assert!(s.wait_output(Duration::from_secs(3), |o| o.contains(line)));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!s.output().contains("[DEBUG]"), "{}", s.output());
}

#[test]
fn with_debug_a_panic_is_not_recovered() {
    // README "Description": debug inhibits the recovery from panics. The process ends
    // as an unrecovered Go panic ends CoreDNS: status 2, with the backtrace.
    let mut s = Launch::new(".:{port} {\n    bind 127.0.0.1\n    debug\n    errors\n    testpanic\n    whoami\n}\n")
        .env("RUST_BACKTRACE", "0")
        .start();
    assert_eq!(rcode(&s.query("ok.example.org", Rtype::A)), Rcode::NOERROR);
    let q = query_bytes("panic.example.org", Rtype::A, Some(1232), 0x7272);
    assert!(raw_udp(s.addr(), &q, Duration::from_millis(500)).is_none(), "no reply");
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(2), "{}", s.output());
    let out = s.output();
    assert!(out.contains("testpanic: asked to panic by panic.example.org."), "{out}");
    assert!(
        out.contains("debug: not recovering from the panic while handling panic.example.org. A"),
        "{out}"
    );
    // The panic hook logged the backtrace with the message (RUST_BACKTRACE is 0).
    let after = &out[out.find("testpanic: asked to panic").unwrap()..];
    assert!(after.contains("clusterdns::plugin::testing"), "{out}");
}

#[test]
fn without_debug_the_same_panic_is_recovered() {
    // The control: the same Corefile without `debug` answers SERVFAIL and goes on.
    let mut s = Server::start(".:{port} {\n    bind 127.0.0.1\n    errors\n    testpanic\n    whoami\n}\n");
    assert_eq!(rcode(&s.query("panic.example.org", Rtype::A)), Rcode::SERVFAIL);
    assert_eq!(rcode(&s.query("ok.example.org", Rtype::A)), Rcode::NOERROR);
    assert!(s.running());
}

#[test]
fn a_reload_without_debug_turns_the_mode_off() {
    // CoreDNS clears log.D when the new configuration has no debug (server.go); so does
    // the recovery come back here.
    let up = FakeUpstream::with_mode(Mode::Silent);
    let with = format!(
        "fail.example:{{port}} {{\n    bind 127.0.0.1\n    debug\n    errors\n    testpanic\n    testupstream {} 200ms\n}}\n.:{{port}} {{\n    bind 127.0.0.1\n    whoami\n}}\n",
        up.addr()
    );
    let mut s = Launch::new(&with).env("RUST_BACKTRACE", "0").start();
    let failing = query_bytes("a.fail.example", Rtype::A, Some(1232), 0x7373);
    assert_eq!(rcode(&udp_exchange(s.addr(), &failing)), Rcode::SERVFAIL);
    assert!(s.wait_output(Duration::from_secs(3), |o| {
        o.contains("[DEBUG] plugin/errors: 2 a.fail.example. A: the query")
    }));
    s.rewrite_corefile(&with.replace("    debug\n", "").replace("{port}", &s.port.to_string()));
    s.signal(libc::SIGUSR1);
    s.wait_lines("Running configuration SHA512", 2, Duration::from_secs(5));
    // No DEBUG line for the next failure, and a panic is recovered again.
    let before = s.output().matches("[DEBUG]").count();
    assert_eq!(rcode(&udp_exchange(s.addr(), &failing)), Rcode::SERVFAIL);
    assert!(s.wait_output(Duration::from_secs(3), |o| {
        o.matches("a.fail.example. A: plugin/testupstream: timeout").count() == 2
    }));
    assert_eq!(s.output().matches("[DEBUG]").count(), before, "{}", s.output());
    let r = s.query("panic.fail.example", Rtype::A);
    assert_eq!(rcode(&r), Rcode::SERVFAIL);
    assert!(s.running());
}
