//! The `errors` plugin end to end: `consolidate` sums matching errors up in one line per
//! period, in CoreDNS's words and at the level asked; `stacktrace` logs the backtrace of
//! a caught panic (CoreDNS's errors README, "Syntax").

use std::time::Duration;

use domain::base::iana::{Rcode, Rtype};

use testkit::prelude::*;

#[test]
fn consolidate_logs_one_line_per_period() {
    // The upstream never answers: every query under the two zones fails with
    // `plugin/testupstream: timeout` after 200ms.
    let up = FakeUpstream::with_mode(Mode::Silent);
    let s = Server::start(&format!(
        "slow.example:{{port}} {{\n    bind 127.0.0.1\n    errors {{\n        consolidate 1s \"timeout$\" warning\n    }}\n    testupstream {up} 200ms\n}}\n\
         first.example:{{port}} {{\n    bind 127.0.0.1\n    errors {{\n        consolidate 1s \"^plugin/testupstream\" error show_first\n    }}\n    testupstream {up} 200ms\n}}\n\
         .:{{port}} {{\n    bind 127.0.0.1\n    whoami\n}}\n",
        up = up.addr()
    ));
    let ask = |name: &str, tcp: bool| {
        let q = query_bytes(name, Rtype::A, Some(1232), 0x6161);
        let r = if tcp {
            tcp_exchange(s.addr(), &q)
        } else {
            udp_exchange(s.addr(), &q)
        };
        assert_eq!(rcode(&r), Rcode::SERVFAIL, "{name}");
    };
    ask("a.slow.example", false);
    ask("b.slow.example", true);
    ask("c.slow.example", false);
    ask("a.first.example", false);
    ask("b.first.example", true);
    // errors_test.go TestLogPattern: `N errors like 'RE' occurred in last D`, at the level.
    let summed = "[WARNING] plugin/errors: 3 errors like 'timeout$' occurred in last 1s";
    let shown = "[ERROR] plugin/errors: 2 errors like '^plugin/testupstream' occurred in last 1s";
    assert!(
        s.wait_output(Duration::from_secs(5), |o| o.contains(summed) && o.contains(shown)),
        "{}",
        s.output()
    );
    let out = s.output();
    // Without show_first no error of the period is logged by itself; with it, the first.
    assert!(!out.contains("slow.example. A: plugin/testupstream: timeout"), "{out}");
    assert_eq!(
        out.matches("first.example. A: plugin/testupstream: timeout").count(),
        1,
        "{out}"
    );
    assert!(
        out.contains("[ERROR] plugin/errors: 2 a.first.example. A: plugin/testupstream: timeout"),
        "{out}"
    );
    // One line per period: nothing more after it ended.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(s.output().matches("errors like").count(), 2, "{}", s.output());
}

/// The Corefile of a block whose `testpanic` panics for `panic.*`, with `errors` as given.
/// RUST_BACKTRACE is cleared: the default panic hook would print a backtrace itself.
fn panicking(errors: &str) -> Server {
    Launch::new(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    {errors}\n    testpanic\n    whoami\n}}\n"
    ))
    .env("RUST_BACKTRACE", "0")
    .start()
}

#[test]
fn stacktrace_logs_the_backtrace_of_a_caught_panic() {
    // README "Syntax": `stacktrace` logs a stack trace during panic recovery.
    let s = panicking("errors {\n        stacktrace\n    }");
    for tcp in [false, true] {
        let q = query_bytes("panic.example.org", Rtype::A, Some(1232), 0x6262);
        let r = if tcp {
            tcp_exchange(s.addr(), &q)
        } else {
            udp_exchange(s.addr(), &q)
        };
        assert_eq!(rcode(&r), Rcode::SERVFAIL);
    }
    let line = "[ERROR] plugin/errors: 2 panic.example.org. A: panic: testpanic: asked to panic by panic.example.org.";
    assert!(
        s.wait_output(Duration::from_secs(3), |o| o.matches(line).count() == 2),
        "{}",
        s.output()
    );
    // The frames follow the line: the panicking plugin's among them.
    let out = s.output();
    let after = &out[out.find(line).unwrap()..];
    assert!(after.contains("clusterdns::plugin::testing"), "{out}");
    // The worker carries on.
    assert_eq!(rcode(&s.query("ok.example.org", Rtype::A)), Rcode::NOERROR);

    // Without it, the error line alone.
    let s = panicking("errors");
    assert_eq!(rcode(&s.query("panic.example.org", Rtype::A)), Rcode::SERVFAIL);
    assert!(s.wait_output(Duration::from_secs(3), |o| o.contains(line)));
    assert!(!s.output().contains("clusterdns::plugin::testing"), "{}", s.output());
}
