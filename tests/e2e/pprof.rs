//! The `pprof` plugin end to end: accepted, validated as CoreDNS's setup.go validates
//! it, with one warning that it does nothing (no Go runtime to profile), at -check and at
//! start; nothing listens on its address.

use std::time::Duration;

use domain::base::iana::{Rcode, Rtype};

use testkit::prelude::*;

const WARNING: &str =
    "pprof has no effect: clusterdns has no Go runtime to profile (profile it with perf or another native profiler)";

#[test]
fn pprof_is_accepted_with_one_warning_and_does_nothing() {
    let profile = free_port();
    let text = format!(
        "example.org:{{port}} {{\n    bind 127.0.0.1\n    pprof 127.0.0.1:{profile} {{\n        block 5\n    }}\n    whoami\n}}\n\
         .:{{port}} {{\n    bind 127.0.0.1\n    pprof\n    whoami\n}}\n"
    );
    // -check: valid, and says so after the warning (the first block's line).
    let dir = Scratch::new("pprof");
    dir.write("Corefile", &text.replace("{port}", "1053"));
    let (code, out, err) = run(&["-check", "-conf", "Corefile"], &dir.0, None);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            0,
            format!("[WARNING] plugin/pprof: Corefile:3 - {WARNING}\nCorefile OK\n").as_str(),
            ""
        )
    );
    // Started: the same warning once, for two blocks with pprof.
    let s = Server::start(&text);
    for r in [
        s.query("a.example.org", Rtype::A),
        s.query_tcp("a.example.org", Rtype::A),
    ] {
        assert_eq!(rcode(&r), Rcode::NOERROR);
        assert_eq!(section(&r, "additional")[0], "a.example.org. 0 IN A 127.0.0.1");
    }
    // (The server's Corefile is named by its absolute path.)
    let line = format!("/Corefile:3 - {WARNING}");
    assert!(
        s.wait_output(Duration::from_secs(2), |o| o
            .lines()
            .any(|l| l.starts_with("[WARNING] plugin/pprof: /") && l.ends_with(&line))),
        "{}",
        s.output()
    );
    assert_eq!(s.output().matches("pprof has no effect").count(), 1, "{}", s.output());
    // No profiling endpoint.
    assert!(std::net::TcpStream::connect(("127.0.0.1", profile)).is_err());
}

#[test]
fn pprof_options_are_checked_as_coredns_checks_them() {
    // setup_test.go TestPProf's failing cases.
    for (directive, want) in [
        (
            "pprof /foo",
            "Corefile:2 - pprof: address /foo: missing port in address",
        ),
        (
            "pprof :1234 -1",
            "Corefile:2 - pprof: Wrong argument count or unexpected line ending after '-1'",
        ),
        (
            "pprof {\n        block invalid\n    }",
            "Corefile:3 - pprof: property 'block' invalid integer value 'invalid'",
        ),
        (
            "pprof {\n        unknown_property\n    }",
            "Corefile:3 - pprof: unknown property 'unknown_property'",
        ),
    ] {
        let dir = Scratch::new("pprof-bad");
        dir.write("Corefile", &format!(".:1053 {{\n    {directive}\n    whoami\n}}\n"));
        let (code, out, err) = run(&["-check", "-conf", "Corefile"], &dir.0, None);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (1, "", format!("{want}\n").as_str()),
            "{directive}"
        );
    }
}
