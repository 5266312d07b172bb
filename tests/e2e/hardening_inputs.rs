//! Hardening II (issue 16), fault-suite cases: bounded inputs: Corefile imports, hosts files, oversized or invalid API objects, compression loops.
//! Each case is a test (`hardening_inputs::fault_...`), run one at a time with the
//! other fault cases (see `hardening.rs`).
//!
//! Each case reports its figures (times, RSS in MiB from `/proc/PID/status`, counts from
//! `/metrics`) and fails with them when a bound does not hold. Processes that run away
//! (an endless read of `/dev/zero`) are killed by their PID as soon as the bound is
//! passed, so a failing case costs the machine little.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};
use serde_json::Value;
use testkit::api::chunk;
use testkit::check;
use testkit::fault::{Outcome, run_case};
use testkit::prelude::*;
use testkit::process::run_bounded;
use testkit::procfs::{RssTrace, alive, mib, rss_kb};
use testkit::wire::addresses;

#[test]
fn fault_inputs_import_dev_zero_check() {
    run_case("inputs import dev zero check", import_check);
}

#[test]
fn fault_inputs_import_dev_zero_reload() {
    run_case("inputs import dev zero reload", import_reload);
}

#[test]
fn fault_inputs_hosts_over_the_entry_cap() {
    run_case("inputs hosts over the entry cap", hosts_over_cap);
}

#[test]
fn fault_inputs_hosts_reread() {
    run_case("inputs hosts re-read", hosts_reread);
}

#[test]
fn fault_inputs_api_huge_endpointslice() {
    run_case("inputs api huge endpointslice", api_huge_slice);
}

#[test]
fn fault_inputs_api_names_not_cut() {
    run_case("inputs api names not cut", api_names);
}

#[test]
fn fault_inputs_compression_loops() {
    run_case("inputs compression loops", compression_loops);
}

// ------------------------------------------------------------------------------------
// Helpers

/// `rcode` and sorted A/AAAA data of a UDP query, or why there was none.
fn ask(to: SocketAddr, name: &str, qtype: Rtype, wait: Duration) -> Result<(Rcode, Vec<String>), String> {
    let reply = raw_udp(to, &query_bytes(name, qtype, Some(1232), 0x5151), wait).ok_or("no reply")?;
    let msg = Message::from_octets(reply).map_err(|e| format!("unparsable reply: {e}"))?;
    Ok((rcode(&msg), addresses(&msg)))
}

/// Polls `name` A until its data is `want` (or `timeout`); returns how long it took.
fn wait_a(to: SocketAddr, name: &str, want: &[&str], timeout: Duration) -> Result<Duration, String> {
    let t = Instant::now();
    let mut last = Err("never asked".to_string());
    while t.elapsed() < timeout {
        last = ask(to, name, Rtype::A, Duration::from_millis(500));
        if let Ok((Rcode::NOERROR, data)) = &last {
            if data == want {
                return Ok(t.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{name}: wanted {want:?} within {timeout:?}, last {last:?}"))
}

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a plain mkfifo(3) on a path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

// ------------------------------------------------------------------------------------
// Corefile imports

/// `-check` of Corefiles importing /dev/zero, a FIFO and a 2 MiB file: each fails in
/// under a second with `FILE:LINE` and a non-zero exit, within a few MiB.
fn import_check() -> Outcome {
    let dir = Scratch::new("import-check");
    mkfifo(&dir.path("fifo.conf"));
    dir.write("big.conf", &"# padding\n".repeat(210_000));
    let mut report = Vec::new();
    for (what, line) in [
        ("/dev/zero", "import /dev/zero"),
        ("a FIFO", "import fifo.conf"),
        ("a 2 MiB file", "import big.conf"),
    ] {
        dir.write("Corefile", &format!(". {{\n    whoami\n    {line}\n}}\n"));
        let b = run_bounded(
            &["-check", "-conf", "Corefile"],
            &dir.0,
            Duration::from_secs(3),
            300 << 10,
        );
        let (code, took, err, peak) = (b.code, b.elapsed, b.stderr, b.peak_kb);
        let figure = format!(
            "{what}: exit {} after {:.0} ms, peak RSS {:.1} MiB",
            code.map_or("none (killed)".to_string(), |c| c.to_string()),
            took.as_secs_f64() * 1000.0,
            mib(peak)
        );
        check!(code.is_some_and(|c| c != 0), "{figure}: {err}");
        check!(took < Duration::from_secs(1), "{figure}: not under 1 s");
        check!(err.contains("Corefile:3 - "), "{figure}: no FILE:LINE in {err:?}");
        report.push(figure);
    }
    Ok(report.join("; "))
}

/// A running server's Corefile gains `import /dev/zero`; SIGUSR1 reloads: the reload
/// fails within a second with `FILE:LINE`, the old configuration keeps answering, RSS
/// stays flat.
fn import_reload() -> Outcome {
    let corefile = ".:{port} {\n    bind 127.0.0.1\n    hosts {\n        10.9.9.9 old.example.org\n    }\n}\n";
    let mut s = Launch::new(corefile).start();
    wait_a(s.addr(), "old.example.org.", &["10.9.9.9"], Duration::from_secs(5))?;
    let mut rss = RssTrace::starting(s.pid());
    let broken = ".:{port} {\n    bind 127.0.0.1\n    hosts {\n        10.9.9.9 old.example.org\n    }\n    import /dev/zero\n}\n"
        .replace("{port}", &s.port.to_string());
    std::fs::write(&s.corefile, broken).unwrap();
    let t = Instant::now();
    s.signal(libc::SIGUSR1);
    let mut failed_at = None;
    while t.elapsed() < Duration::from_secs(3) {
        rss.sample();
        if failed_at.is_none() && s.output().contains("reload failed") {
            failed_at = Some(t.elapsed());
        }
        if failed_at.is_some_and(|at| t.elapsed() > at + Duration::from_millis(300)) || rss.growth() > 200 << 10 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let figure = format!(
        "reload failed after {}, RSS {:.1} -> peak {:.1} MiB",
        failed_at.map_or("never".to_string(), |d| format!("{:.0} ms", d.as_secs_f64() * 1000.0)),
        mib(rss.start()),
        mib(rss.peak())
    );
    if failed_at.is_none_or(|d| d >= Duration::from_secs(1)) || rss.growth() > 20 << 10 {
        s.kill_now();
        return Err(format!("{figure}: the reload must fail within 1 s and RSS stay flat"));
    }
    let out = s.output();
    let line = out.lines().find(|l| l.contains("reload failed")).unwrap_or_default();
    check!(
        line.contains("Corefile:6 - ") && line.contains("/dev/zero"),
        "{figure}: no FILE:LINE in {line:?}"
    );
    let still = ask(s.addr(), "old.example.org.", Rtype::A, Duration::from_secs(1))?;
    check!(
        still == (Rcode::NOERROR, vec!["10.9.9.9".to_string()]),
        "{figure}: the old configuration does not answer: {still:?}"
    );
    check!(alive(s.pid()), "{figure}: the server died");
    Ok(format!(
        "{figure}; the old configuration still answers; log: {}",
        line.trim()
    ))
}

// ------------------------------------------------------------------------------------
// hosts files

/// A hosts file of `n` entries `n{i}.example.org` with addresses from `base` (the
/// second octet), and `extra` lines first.
fn hosts_text(n: usize, base: u8, extra: &str) -> String {
    let mut text = String::with_capacity(n * 30 + extra.len());
    text.push_str(extra);
    for i in 0..n {
        text.push_str(&format!("10.{base}.{}.{} n{i}.example.org\n", (i >> 8) & 255, i & 255));
    }
    text
}

const HOSTS_COREFILE: &str = ".:{port} {
    bind 127.0.0.1
    hosts {dir}/hosts example.org {
        reload 200ms
        no_reverse
    }
}
";

/// A running server's hosts file is replaced by one of 1,000,001 entries: it is
/// refused with an error that says so, the old entries keep answering; and `-check`
/// with that file fails with `FILE:LINE`.
fn hosts_over_cap() -> Outcome {
    let s = Launch::new(HOSTS_COREFILE).no_wait().start();
    std::fs::write(s.scratch.path("hosts"), "10.0.0.1 old.example.org\n").unwrap();
    wait_a(s.addr(), "old.example.org.", &["10.0.0.1"], Duration::from_secs(10))?;
    let mut rss = RssTrace::starting(s.pid());
    let big = hosts_text(1_000_001, 1, "10.0.0.2 old.example.org\n");
    let bytes = big.len();
    let tmp = s.scratch.path("hosts.tmp");
    std::fs::write(&tmp, &big).unwrap();
    drop(big);
    std::fs::rename(&tmp, s.scratch.path("hosts")).unwrap();
    let t = Instant::now();
    let mut refused = None;
    while t.elapsed() < Duration::from_secs(60) && refused.is_none() {
        rss.sample();
        if s.output().contains("refused") {
            refused = Some(t.elapsed());
        }
        if let Ok((_, data)) = ask(s.addr(), "old.example.org.", Rtype::A, Duration::from_millis(500)) {
            check!(
                data == ["10.0.0.1"],
                "the file over the cap was served: old.example.org is {data:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = s
        .output()
        .lines()
        .find(|l| l.contains("refused"))
        .unwrap_or_default()
        .to_string();
    let figure = format!(
        "{:.1} MiB file of 1,000,001 entries: refused after {}, RSS {:.1} -> peak {:.1} MiB",
        bytes as f64 / 1048576.0,
        refused.map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
        mib(rss.start()),
        mib(rss.peak())
    );
    check!(refused.is_some(), "{figure}: no refusal logged:\n{}", s.output());
    check!(
        line.contains("more than 1000000") && line.contains("still serving the 1 entries"),
        "{figure}: the log line does not give the count: {line:?}"
    );
    let still = ask(s.addr(), "old.example.org.", Rtype::A, Duration::from_secs(1))?;
    check!(
        still == (Rcode::NOERROR, vec!["10.0.0.1".to_string()]),
        "{figure}: old entry after the refusal: {still:?}"
    );
    // The same file at start: a configuration error.
    let text = HOSTS_COREFILE
        .replace("{port}", "53")
        .replace("{dir}", &s.scratch.0.display().to_string());
    std::fs::write(s.scratch.path("Corefile.check"), text).unwrap();
    let b = run_bounded(
        &["-check", "-conf", "Corefile.check"],
        &s.scratch.0,
        Duration::from_secs(60),
        1 << 20,
    );
    let (code, took, err) = (b.code, b.elapsed, b.stderr);
    check!(
        code.is_some_and(|c| c != 0) && err.contains("Corefile.check:3 - hosts: ") && err.contains("more than 1000000"),
        "{figure}; -check with that file: exit {code:?}: {err:?}"
    );
    Ok(format!(
        "{figure}; old entries kept; log: {}; -check fails in {:.1} s: {}",
        line.trim(),
        took.as_secs_f64(),
        err.trim()
    ))
}

/// A hosts file of 500,000 entries appears, then is rewritten: the table's cost per
/// entry, and the peak RSS of the re-read against the RSS serving it.
fn hosts_reread() -> Outcome {
    const N: usize = 500_000;
    let s = Launch::new(HOSTS_COREFILE).no_wait().start();
    s.wait_answering(".");
    std::thread::sleep(Duration::from_millis(500));
    let base = rss_kb(s.pid());
    let path = s.scratch.path("hosts");
    let tmp = s.scratch.path("hosts.tmp");
    std::fs::write(&tmp, hosts_text(N, 1, "")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let first = wait_a(s.addr(), "n77.example.org.", &["10.1.0.77"], Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_millis(1000));
    let mut rss = RssTrace::starting(s.pid());
    let steady = rss.start();
    std::fs::write(&tmp, hosts_text(N, 2, "")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        rss.sample();
        if let Ok((Rcode::NOERROR, data)) = ask(s.addr(), "n77.example.org.", Rtype::A, Duration::from_millis(200)) {
            if data == ["10.2.0.77"] {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let reread = t.elapsed();
    // The last samples, after the swap.
    for _ in 0..20 {
        rss.sample();
        std::thread::sleep(Duration::from_millis(10));
    }
    let table = steady.saturating_sub(base);
    let per_entry = table as f64 * 1024.0 / N as f64;
    let ratio = rss.peak() as f64 / steady as f64;
    let figure = format!(
        "{N} entries: RSS {:.1} MiB without the file, {:.1} MiB serving it ({per_entry:.0} bytes an entry, read in {:.1} s), peak {:.1} MiB during a re-read ({ratio:.2}x; {:.1} s)",
        mib(base),
        mib(steady),
        first.as_secs_f64(),
        mib(rss.peak()),
        reread.as_secs_f64()
    );
    check!(reread < Duration::from_secs(60), "{figure}: the new file never served");
    check!(per_entry < 120.0, "{figure}: over 120 bytes an entry");
    // The re-read rebuilds the table a shard (a quarter) at a time: it may cost about
    // half a table on top of what serving costs, never a second table.
    check!(
        rss.peak().saturating_sub(steady) < table / 2 + (4 << 10),
        "{figure}: the re-read cost more than half a table"
    );
    check!(
        ratio < 1.5,
        "{figure}: the re-read's peak is not well below twice the RSS serving it"
    );
    Ok(figure)
}

// ------------------------------------------------------------------------------------
// The Kubernetes API: a watch stream written here

/// Writes a MODIFIED/ADDED event of an EndpointSlice `name` of service `big` in team-a
/// with `n` ready endpoints, metadata first (as the API server writes it), in pieces of
/// about 1 MiB; returns its length.
fn slice_event(out: &mut std::net::TcpStream, kind: &str, name: &str, rv: u64, n: usize) -> std::io::Result<usize> {
    let head = format!(
        r#"{{"type":"{kind}","object":{{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":{{"name":"{name}","namespace":"team-a","resourceVersion":"{rv}","labels":{{"kubernetes.io/service-name":"big"}}}},"addressType":"IPv4","endpoints":["#
    );
    let mut len = head.len();
    chunk(out, head.as_bytes())?;
    let mut piece = String::with_capacity(1 << 20);
    for i in 0..n {
        if i > 0 {
            piece.push(',');
        }
        // `ready` absent is ready.
        piece.push_str(&format!(
            r#"{{"addresses":["10.{}.{}.{}"]}}"#,
            100 + (i >> 16),
            (i >> 8) & 255,
            i & 255
        ));
        if piece.len() > 1 << 20 {
            len += piece.len();
            chunk(out, piece.as_bytes())?;
            piece.clear();
        }
    }
    piece.push_str(r#"],"ports":[{"name":"http","port":80,"protocol":"TCP"}]}}"#);
    piece.push('\n');
    len += piece.len();
    chunk(out, piece.as_bytes())?;
    Ok(len)
}

/// The objects of the API cases: the base cluster, and a headless service `big` in
/// team-a with two endpoints in slice `big-1`.
fn big_cluster() -> Vec<Value> {
    let mut objects = base_cluster();
    objects.push(headless("team-a", "big"));
    objects.push(slice("team-a", "big-1", "big", &["10.5.0.1", "10.5.0.2"]));
    objects
}

const KUBE_COREFILE: &str = ".:{port} {
    bind 127.0.0.1
    prometheus 127.0.0.1:@M
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        endpoint @URL
        backoff 50ms 500ms
    }
}
";

/// A server on the API at `url`, synced; and its metrics port.
fn kube_server(url: &str) -> Result<(Server, u16), String> {
    let m = free_port();
    let text = KUBE_COREFILE.replace("@M", &m.to_string()).replace("@URL", url);
    let s = Launch::new(&text).start();
    wait_a(
        s.addr(),
        "kubernetes.default.svc.cluster.local.",
        &["10.96.0.1"],
        Duration::from_secs(15),
    )?;
    let t = Instant::now();
    while http_get(m, "/metrics").is_err() {
        check!(t.elapsed() < Duration::from_secs(5), "/metrics never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((s, m))
}

fn metrics(port: u16) -> String {
    http_get(port, "/metrics").map(|r| r.1).unwrap_or_default()
}

/// A watch of EndpointSlices brings a 15 MB slice of 470,000 endpoints (modifying
/// `big-1`; under the 16 MiB the watch took before, over the 4 MiB it takes now), a
/// 2 MB one of 60,000 (under the line cap, over the endpoint cap), one of 1,001, then a
/// good one: the three are rejected and counted, `big-1`'s old endpoints
/// are gone, the good one serves, and RSS grows by less than 20 MiB throughout.
fn api_huge_slice() -> Outcome {
    let api = FakeApi::with_objects(big_cluster());
    let (mut s, m) = kube_server(&api.url())?;
    wait_a(
        s.addr(),
        "big.team-a.svc.cluster.local.",
        &["10.5.0.1", "10.5.0.2"],
        Duration::from_secs(10),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let mut rss = RssTrace::starting(s.pid());
    let rv = api.rv();
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let written = sizes.clone();
    api.inject_next_watch(
        Resource::EndpointSlices,
        Box::new(move |out| {
            let sizes = vec![
                slice_event(out, "MODIFIED", "big-1", rv, 470_000)?,
                slice_event(out, "ADDED", "big-2", rv, 60_000)?,
                slice_event(out, "ADDED", "big-3", rv, 1001)?,
                slice_event(out, "ADDED", "big-4", rv, 1)?,
            ];
            *written.lock().unwrap() = sizes;
            Ok(())
        }),
    );
    // The next watch of slices gets the injection.
    api.close_watches();
    let t = Instant::now();
    let mut served = None;
    while t.elapsed() < Duration::from_secs(60) {
        rss.sample();
        if rss.growth() > 300 << 10 {
            s.kill_now();
            return Err(format!("RSS passed +300 MiB ({:.1} MiB): cut short", mib(rss.peak())));
        }
        if let Ok((Rcode::NOERROR, data)) = ask(
            s.addr(),
            "big.team-a.svc.cluster.local.",
            Rtype::A,
            Duration::from_millis(200),
        ) {
            if data == ["10.100.0.0"] {
                served = Some(t.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..20 {
        rss.sample();
        std::thread::sleep(Duration::from_millis(10));
    }
    let text = metrics(m);
    let rejected = |reason: &str| {
        testkit::metrics::sum(
            &text,
            "clusterdns_kubernetes_rejected_objects_total",
            &[("resource", "endpointslices"), ("reason", reason)],
        )
    };
    let sizes: Vec<String> = sizes
        .lock()
        .unwrap()
        .iter()
        .map(|&b| match b {
            b if b >= 100_000 => format!("{:.1} MB", b as f64 / 1e6),
            b => format!("{:.1} KB", b as f64 / 1e3),
        })
        .collect();
    let figure = format!(
        "slices of {} injected ({}): rejected too_large {}, too_many_endpoints {}; RSS {:.1} -> peak {:.1} MiB (+{:.1}); the good one served after {}",
        sizes.join(", "),
        if api.injected() { "delivered" } else { "not delivered" },
        rejected("too_large"),
        rejected("too_many_endpoints"),
        mib(rss.start()),
        mib(rss.peak()),
        mib(rss.growth()),
        served.map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
    );
    check!(
        served.is_some(),
        "{figure}: big-4 never served, or big-1's old endpoints stayed"
    );
    check!(rss.growth() < 20 << 10, "{figure}: RSS grew by 20 MiB or more");
    check!(
        rejected("too_large") >= 1.0 && rejected("too_many_endpoints") >= 2.0,
        "{figure}: the rejections are not counted"
    );
    check!(alive(s.pid()), "{figure}: the server died");
    let anchor = ask(
        s.addr(),
        "web.team-a.svc.cluster.local.",
        Rtype::A,
        Duration::from_secs(1),
    )?;
    check!(
        anchor == (Rcode::NOERROR, vec!["10.96.1.1".to_string()]),
        "{figure}: web.team-a: {anchor:?}"
    );
    Ok(figure)
}

/// Two Services whose names share their first 63 characters (the second has 64) and
/// a 1 MiB name, listed and watched, and a Service modified into one with a 64-character
/// port name: the invalid ones are rejected and counted, never cut into the valid name;
/// the modified one is removed.
fn api_names() -> Outcome {
    let a63 = "a".repeat(63);
    let c63 = "c".repeat(63);
    let mut objects = base_cluster();
    objects.push(service("team-a", &a63, "10.96.50.1", &[("http", 80, "TCP")]));
    objects.push(service(
        "team-a",
        &format!("{a63}b"),
        "10.96.50.2",
        &[("http", 80, "TCP")],
    ));
    let api = FakeApi::with_objects(objects);
    let (s, m) = kube_server(&api.url())?;
    let a_name = format!("{a63}.team-a.svc.cluster.local.");
    let listed = ask(s.addr(), &a_name, Rtype::A, Duration::from_secs(1))?;
    // Through the watch: another pair, a 1 MiB name, and `web` modified.
    api.add(service("team-a", &c63, "10.96.51.1", &[("http", 80, "TCP")]));
    api.add(service(
        "team-a",
        &format!("{c63}d"),
        "10.96.51.2",
        &[("http", 80, "TCP")],
    ));
    api.add(service(
        "team-a",
        &"m".repeat(1 << 20),
        "10.96.52.1",
        &[("http", 80, "TCP")],
    ));
    let long_port = "p".repeat(64);
    api.update("Service", "team-a", "web", |svc| {
        svc["spec"]["ports"][0]["name"] = Value::String(long_port);
    });
    api.add(service("team-a", "marker", "10.96.53.1", &[("http", 80, "TCP")]));
    wait_a(
        s.addr(),
        "marker.team-a.svc.cluster.local.",
        &["10.96.53.1"],
        Duration::from_secs(10),
    )?;
    let c_name = format!("{c63}.team-a.svc.cluster.local.");
    let watched = ask(s.addr(), &c_name, Rtype::A, Duration::from_secs(1))?;
    let web = ask(
        s.addr(),
        "web.team-a.svc.cluster.local.",
        Rtype::A,
        Duration::from_secs(1),
    )?;
    let text = metrics(m);
    let rejected = |reason: &str| {
        testkit::metrics::sum(
            &text,
            "clusterdns_kubernetes_rejected_objects_total",
            &[("resource", "services"), ("reason", reason)],
        )
    };
    let figure = format!(
        "63-character name listed next to a 64-character one: {listed:?}; watched: {watched:?}; web after its port name became 64 characters: {web:?}; rejected invalid_name {}, invalid_value {}",
        rejected("invalid_name"),
        rejected("invalid_value")
    );
    check!(
        listed == (Rcode::NOERROR, vec!["10.96.50.1".to_string()]),
        "{figure}: the listed pair collapsed"
    );
    check!(
        watched == (Rcode::NOERROR, vec!["10.96.51.1".to_string()]),
        "{figure}: the watched pair collapsed"
    );
    check!(
        web.0 == Rcode::NXDOMAIN,
        "{figure}: the modified, invalid web still answers"
    );
    check!(
        rejected("invalid_name") >= 3.0 && rejected("invalid_value") >= 1.0,
        "{figure}: the rejections are not counted"
    );
    Ok(figure)
}

// ------------------------------------------------------------------------------------
// Compression loops

/// A DNS message: header (ID, flags, counts) and `body` (the question and records).
fn message(id: u16, flags: u16, counts: [u16; 4], body: &[u8]) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        m.extend_from_slice(&c.to_be_bytes());
    }
    m.extend_from_slice(body);
    m
}

fn wire_name(name: &str) -> Vec<u8> {
    let mut w = Vec::new();
    for l in name.trim_end_matches('.').split('.') {
        w.push(l.len() as u8);
        w.extend_from_slice(l.as_bytes());
    }
    w.push(0);
    w
}

/// A record: `owner` bytes as given, type, class IN, TTL 60, `rdata`.
fn record(owner: &[u8], rtype: u16, rdata: &[u8]) -> Vec<u8> {
    let mut r = owner.to_vec();
    r.extend_from_slice(&rtype.to_be_bytes());
    r.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
    r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    r.extend_from_slice(rdata);
    r
}

/// A pointer to offset `at`.
fn ptr(at: usize) -> [u8; 2] {
    [0xC0 | (at >> 8) as u8, at as u8]
}

/// The fake upstream's reply (see [`Mode::Raw`]) to a query for `loop-answer.`: a
/// pointer loop in the answer section; for `loop-additional.`: a sound answer and a loop
/// in the additional section; for anything else: one sound A record.
fn looping_reply(q: &[u8]) -> Option<Vec<u8>> {
    let n = q.len();
    if n < 17 {
        return None;
    }
    // The question, as asked (name, type, class).
    let mut end = 12;
    while end < n && q[end] != 0 {
        end += 1 + q[end] as usize;
    }
    let question = q.get(12..end + 5)?;
    let first = 12 + question.len();
    let a = record(&ptr(12), 1, &[192, 0, 2, 1]);
    let (counts, records) = if question.starts_with(b"\x0bloop-answer") {
        // A sound record, then one whose owner points to itself.
        let second = first + a.len();
        (
            [1, 2, 0, 0],
            [a.clone(), record(&ptr(second), 1, &[192, 0, 2, 2])].concat(),
        )
    } else if question.starts_with(b"\x0floop-additional") {
        // The answer, then glue whose name points into its own first label.
        let glue = first + a.len();
        let mut owner = b"\x02ns".to_vec();
        owner.extend_from_slice(&ptr(glue));
        ([1, 1, 0, 1], [a.clone(), record(&owner, 1, &[192, 0, 2, 3])].concat())
    } else {
        ([1, 1, 0, 0], a.clone())
    };
    Some(message(
        u16::from_be_bytes([q[0], q[1]]),
        0x8180,
        counts,
        &[question, &records].concat(),
    ))
}

/// Requests with pointer loops in the answer, authority and additional sections get
/// FORMERR; upstream replies with loops in the answer or additional section get
/// SERVFAIL; all within a second, and sound ones still answer.
fn compression_loops() -> Outcome {
    let upstream = FakeUpstream::with_mode(Mode::Raw(looping_reply));
    let up = upstream.addr();
    let corefile = format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    whoami\n}}\nupstream.test:{{port}} {{\n    bind 127.0.0.1\n    forward . {up}\n}}\n"
    );
    let s = Launch::new(&corefile).start();
    let mut report = Vec::new();
    let mut problems = Vec::new();
    // Requests: a question for a.example.org (12..31), then one record.
    let question = [wire_name("a.example.org"), vec![0, 1, 0, 1]].concat();
    let first = 12 + question.len();
    let requests: [(&str, [u16; 4], Vec<u8>); 4] = [
        (
            "answer: a pointer to itself",
            [1, 1, 0, 0],
            record(&ptr(first), 1, &[10, 0, 0, 1]),
        ),
        (
            "authority: a pointer forward",
            [1, 0, 1, 0],
            record(&ptr(first + 40), 1, &[10, 0, 0, 1]),
        ),
        (
            "additional: a pointer into its own name",
            [1, 0, 0, 1],
            record(&[&b"\x01x"[..], &ptr(first)].concat(), 1, &[10, 0, 0, 1]),
        ),
        (
            "answer: a CNAME whose target loops",
            [1, 1, 0, 0],
            record(&ptr(12), 5, &ptr(first + 12)),
        ),
    ];
    for (what, counts, rec) in requests {
        let m = message(0x7777, 0x0100, counts, &[&question[..], &rec].concat());
        let t = Instant::now();
        let reply = raw_udp(s.addr(), &m, Duration::from_secs(2));
        let took = t.elapsed();
        let rc = reply.as_ref().filter(|r| r.len() >= 4).map(|r| r[3] & 0xF);
        report.push(format!(
            "request {what}: {} in {:.1} ms",
            rc.map_or("no reply".to_string(), |c| Rcode::masked_from_int(c).to_string()),
            took.as_secs_f64() * 1000.0
        ));
        if rc != Some(1) || took > Duration::from_secs(1) {
            problems.push(format!("request {what}: want FORMERR within 1 s"));
        }
    }
    for (name, want) in [
        ("loop-answer.upstream.test.", Rcode::SERVFAIL),
        ("loop-additional.upstream.test.", Rcode::SERVFAIL),
        ("sound.upstream.test.", Rcode::NOERROR),
    ] {
        let t = Instant::now();
        let got = ask(s.addr(), name, Rtype::A, Duration::from_secs(3));
        let took = t.elapsed();
        report.push(format!(
            "reply for {name}: {} in {:.1} ms",
            got.as_ref()
                .map_or_else(|e| e.clone(), |(rc, data)| format!("{rc} {data:?}")),
            took.as_secs_f64() * 1000.0
        ));
        if got.as_ref().map(|g| g.0) != Ok(want) || took > Duration::from_secs(1) {
            problems.push(format!("reply for {name}: want {want} within 1 s"));
        }
    }
    drop(upstream);
    let figure = report.join("; ");
    check!(alive(s.pid()), "{figure}: the server died");
    check!(problems.is_empty(), "{}: {figure}", problems.join("; "));
    Ok(figure)
}
