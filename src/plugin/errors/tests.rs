//! Setup errors and the consolidation's counting. Each expectation cites the CoreDNS
//! test it mirrors (plugin/errors/*_test.go, CoreDNS v1.14).

use super::*;
use crate::config::parse_str;

fn parsed(lines: &str) -> Result<(bool, Vec<Pattern>), ConfigError> {
    let text = format!(". {{\n{lines}\n}}\n");
    let parsed = parse_str(&text, "Corefile", std::path::Path::new("."))?;
    let dirs: Vec<&Directive> = parsed.blocks[0].directives.iter().collect();
    parse(&dirs)
}

fn err(lines: &str) -> String {
    match parsed(lines) {
        Ok(_) => "accepted".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn setup_accepts_what_coredns_accepts() {
    // setup_test.go TestErrorsParse, the cases that parse: (lines, patterns, stacktrace).
    for (lines, n, stacktrace) in [
        ("errors", 0, false),
        ("errors stdout", 0, false),
        ("errors {\nstacktrace\n}", 0, true),
        ("errors {\nstacktrace\nconsolidate 1m ^exact$\n}", 1, true),
        ("errors {\nconsolidate 1m ^exact$\n}", 1, false),
        ("errors {\nconsolidate 1m error\n}", 1, false),
        ("errors {\nconsolidate 1m \"format error\"\n}", 1, false),
        ("errors {\nconsolidate 1m error1\nconsolidate 5s error2\n}", 2, false),
        ("errors {\nconsolidate 1m error show_first\n}", 1, false),
        ("errors {\nconsolidate 1m error warning show_first\n}", 1, false),
    ] {
        let (st, patterns) = parsed(lines).unwrap_or_else(|e| panic!("{lines}: {e}"));
        assert_eq!((patterns.len(), st), (n, stacktrace), "{lines}");
    }
    // TestProperLogCallbackIsSet and TestShowFirstOption: the level, error by default.
    for (lines, level, show_first) in [
        ("consolidate 1m .* warning", Level::Warn, false),
        ("consolidate 1m .* error", Level::Error, false),
        ("consolidate 1m .* info", Level::Info, false),
        ("consolidate 1m .* debug", Level::Debug, false),
        ("consolidate 1m .*", Level::Error, false),
        ("consolidate 1m .* show_first", Level::Error, true),
        ("consolidate 1m .* warning show_first", Level::Warn, true),
    ] {
        let (_, p) = parsed(&format!("errors {{\n{lines}\n}}")).unwrap();
        assert_eq!((p[0].level, p[0].show_first), (level, show_first), "{lines}");
    }
}

#[test]
fn setup_errors_are_corednss() {
    // setup_test.go TestErrorsParse, the cases that must fail, with our messages.
    let cases = [
        (
            "errors stdout\nerrors",
            "Corefile:3 - errors: this plugin can only be used once per Server Block",
        ),
        ("errors file", "Corefile:2 - errors: invalid log file: file"),
        (
            "errors a b",
            "Corefile:2 - errors: Wrong argument count or unexpected line ending after 'b'",
        ),
        (
            "errors {\nstacktrace\nfoo\n}",
            "Corefile:4 - errors: unknown property 'foo'",
        ),
        (
            "errors {\nconsolidate\n}",
            "Corefile:3 - errors: Wrong argument count or unexpected line ending after 'consolidate'",
        ),
        (
            "errors {\nconsolidate 1m\n}",
            "Corefile:3 - errors: Wrong argument count or unexpected line ending after '1m'",
        ),
        (
            "errors {\nconsolidate 1m .* warning show_first extra\n}",
            "Corefile:3 - errors: Wrong argument count or unexpected line ending after 'extra'",
        ),
        (
            "errors {\nconsolidate abc .*\n}",
            "Corefile:3 - errors: time: invalid duration \"abc\"",
        ),
        (
            "errors {\nconsolidate 1 .*\n}",
            "Corefile:3 - errors: time: missing unit in duration \"1\"",
        ),
        (
            "errors {\nconsolidate 1m ())\n}",
            "Corefile:3 - errors: error parsing regexp: `())`",
        ),
        (
            "errors {\nconsolidate 1m error invalid_option\n}",
            "Corefile:3 - errors: unknown option in consolidate: invalid_option",
        ),
        (
            "errors {\nconsolidate 1m error warning error\n}",
            "Corefile:3 - errors: multiple log levels specified in consolidate",
        ),
        (
            "errors {\nconsolidate 1m error info debug\n}",
            "Corefile:3 - errors: multiple log levels specified in consolidate",
        ),
        (
            "errors {\nconsolidate 1m error show_first warning\n}",
            "Corefile:3 - errors: log level must come before show_first in consolidate",
        ),
    ];
    for (lines, want) in cases {
        assert_eq!(err(lines), want, "{lines}");
    }
    // TestErrorsParseLargeRegex.
    let long = "a".repeat(MAX_REGEXP_LEN + 1);
    assert_eq!(
        err(&format!("errors {{\nconsolidate 1m {long}\n}}")),
        "Corefile:3 - errors: regex pattern too long: 10001 > 10000"
    );
}

#[test]
fn durations_print_as_go_prints_them() {
    for (d, want) in [
        (Duration::from_secs(2), "2s"),
        (Duration::from_secs(30), "30s"),
        (Duration::from_secs(300), "5m0s"),
        (Duration::from_secs(90), "1m30s"),
        (Duration::from_secs(3600), "1h0m0s"),
        (Duration::from_millis(1500), "1.5s"),
        (Duration::from_millis(250), "250ms"),
        (Duration::from_micros(1500), "1.5ms"),
        (Duration::from_nanos(20), "20ns"),
        (Duration::ZERO, "0s"),
    ] {
        assert_eq!(go_duration(d), want);
    }
}

fn errors(lines: &str) -> Errors {
    let (st, patterns) = parsed(lines).unwrap();
    Errors::new(st, patterns, 2)
}

#[test]
fn errors_are_counted_under_the_first_pattern_they_match() {
    // README "Syntax": the first matching pattern takes an error.
    let e = errors("errors {\nconsolidate 2s \"timed out$\" warning\nconsolidate 1m ^plugin/\n}");
    let timeout = ChainError::Plugin("forward", "upstream timed out".into());
    let other = ChainError::Plugin("forward", "no healthy upstreams".into());
    let panic = ChainError::Panic("boom".into());
    assert_eq!(e.matching(0, &timeout), Some(0));
    assert_eq!(e.matching(1, &other), Some(1));
    assert_eq!(e.matching(0, &panic), None);
}

#[test]
fn a_period_counts_from_its_first_error_and_ends_with_one_line() {
    // errors_test.go TestInc, TestStop, TestLogPattern.
    let e = errors("errors {\nconsolidate 2s ^error.*!$\n}");
    let c = &e.shared;
    let t0 = Instant::now();
    assert!(c.count(0, t0));
    assert!(c.count(0, t0));
    assert!(c.count(0, t0));
    assert_eq!(c.counts[0].load(Ordering::Relaxed), 3);
    assert_eq!(*c.deadlines.lock(), [Some(t0 + Duration::from_secs(2))]);
    // Not over yet.
    assert_eq!(
        c.expire(t0 + Duration::from_secs(1), false),
        Some(t0 + Duration::from_secs(2))
    );
    assert_eq!(c.counts[0].load(Ordering::Relaxed), 3);
    assert_eq!(
        summary(&c.patterns[0], 3).as_deref(),
        Some("3 errors like '^error.*!$' occurred in last 2s")
    );
    assert_eq!(c.expire(t0 + Duration::from_secs(2), false), None);
    assert_eq!(c.counts[0].load(Ordering::Relaxed), 0);
    assert_eq!(*c.deadlines.lock(), [None]);
    // The next error starts a new period.
    let t1 = t0 + Duration::from_secs(5);
    assert!(c.count(0, t1));
    assert_eq!(*c.deadlines.lock(), [Some(t1 + Duration::from_secs(2))]);
    // stop: what is pending is logged and counting ends (errors are logged at once).
    e.stop();
    assert_eq!(c.counts[0].load(Ordering::Relaxed), 0);
    assert!(!c.count(0, t1));
}

#[test]
fn show_first_logs_the_first_and_sums_up_only_more() {
    // errors_test.go TestShowFirst.
    let e = errors("errors {\nconsolidate 2s ^error.*!$ error show_first\n}");
    let c = &e.shared;
    let now = Instant::now();
    assert!(!c.count(0, now), "the first is logged at once");
    assert!(c.count(0, now));
    assert!(c.count(0, now));
    assert_eq!(
        summary(&c.patterns[0], 3).as_deref(),
        Some("3 errors like '^error.*!$' occurred in last 2s")
    );
    assert_eq!(summary(&c.patterns[0], 1), None);
}

#[test]
fn the_consolidation_thread_ends_periods_on_time_and_stops() {
    let e = errors("errors {\nconsolidate 50ms x\n}");
    e.start();
    assert!(e.shared.count(0, Instant::now()));
    let end = Instant::now() + Duration::from_secs(5);
    while e.shared.counts[0].load(Ordering::Relaxed) != 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(e.shared.counts[0].load(Ordering::Relaxed), 0, "the period ended");
    assert_eq!(*e.shared.deadlines.lock(), [None]);
    e.stop();
    assert!(e.thread.lock().is_none());
}

#[test]
fn the_hexdump_is_corednss() {
    // plugin/debug pcap_test.go ExampleHexdump: the same message, the same lines.
    let msg = [
        0x00, 0x0a, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x07, 0x65, 0x78, 0x61, 0x6d, 0x70,
        0x6c, 0x65, 0x05, 0x6c, 0x6f, 0x63, 0x61, 0x6c, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x29, 0x10, 0x00,
        0x00, 0x00, 0x80, 0x00, 0x00, 0x00,
    ];
    assert_eq!(
        hexdump(&msg),
        "debug: 000000 00 0a 01 00 00 01 00 00 00 00 00 01 07 65 78 61\n\
         debug: 000010 6d 70 6c 65 05 6c 6f 63 61 6c 00 00 01 00 01 00\n\
         debug: 000020 00 29 10 00 00 00 80 00 00 00\n\
         debug: 00002a"
    );
}

#[test]
fn consolidating_allocates_nothing_once_warm() {
    let e = errors("errors {\nconsolidate 1h \"timed out$\"\n}");
    let raw = crate::dns::QueryBuilder::new(b"\x01a\x00", crate::dns::rtype::A).to_vec();
    crate::chain::testing::with_query(
        &raw,
        "127.0.0.1:53".parse().unwrap(),
        crate::chain::Metadata::NONE,
        |q| {
            q.resp.start(q.req, crate::dns::Rcode::SERVFAIL);
            q.resp.finish();
            q.error = Some(ChainError::Plugin("forward", "upstream timed out".into()));
            e.on_response(q);
            let n = crate::plugin::prometheus::tests::allocations_in(|| {
                for _ in 0..1000 {
                    e.on_response(q);
                }
            });
            assert_eq!(n, 0);
        },
    );
    assert_eq!(e.shared.counts[0].load(Ordering::Relaxed), 1001);
}
