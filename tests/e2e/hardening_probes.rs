//! Hardening II (issue 16), fault-suite cases: the probe ports (`/health`, `/ready`,
//! `/metrics`) under idle, slow and trickling connections and parallel scrapers, a
//! stuck worker (the `teststall` test plugin), SIGTERM while a worker is busy.
//! Each case is a test (`hardening_probes::fault_...`), run one at a time with the
//! other fault cases (see `hardening.rs`).
//!
//! The bounds they hold the server to (src/http, src/control.rs, src/runtime.rs):
//! a request head must arrive within 5 s of the connection ([`REQUEST_DEADLINE`]); a
//! worker that has not come round its loop for 3 s fails `/health`
//! ([`STALL_BOUND`]); SIGTERM ends the process within the lameduck pause plus 2 s
//! ([`STOP_BOUND`]) even if a worker never returns.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use domain::base::iana::Rtype;
use testkit::check;
use testkit::fault::{Outcome, ms, run_case};
use testkit::http::{request as get, trim};
use testkit::prelude::*;
use testkit::procfs::{alive, fd_count};

#[test]
fn fault_probes_under_idle_and_slow_connections() {
    run_case("probes under idle and slow connections", probes_under_idle_and_slow);
}

#[test]
fn fault_probes_parallel_metrics_scrapers() {
    run_case("probes parallel metrics scrapers", metrics_scrapers);
}

#[test]
fn fault_probes_bare_lf_and_trickled_requests() {
    run_case("probes bare LF and trickled requests", bare_lf_and_trickle);
}

#[test]
fn fault_probes_wedged_worker_fails_health() {
    run_case("probes wedged worker fails health", wedged_worker_fails_health);
}

#[test]
fn fault_probes_sigterm_with_a_wedged_worker() {
    run_case("probes sigterm with a wedged worker", sigterm_with_a_wedged_worker);
}

/// Time from accepting a connection to its whole request head.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// A worker with no loop turn for this long fails `/health`.
const STALL_BOUND: Duration = Duration::from_secs(3);
/// How long after the lameduck pause SIGTERM may take to end the process.
const STOP_BOUND: Duration = Duration::from_secs(2);
/// What kubelet allows a probe by default (`timeoutSeconds: 1`).
const PROBE_LIMIT: Duration = Duration::from_secs(1);

// ------------------------------------------------------------------------------------
// The server

/// DNS on 127.0.0.1 with health (lameduck `{lameduck}`), ready and prometheus on ports of
/// their own, `teststall {stall}` and a hosts zone (`a.example.org` is 192.0.2.1).
const COREFILE: &str = "example.org:{port} {
    bind 127.0.0.1
    health 127.0.0.1:{H} {
        lameduck {lameduck}
    }
    ready 127.0.0.1:{R}
    prometheus 127.0.0.1:{M}
    teststall {stall}
    hosts {
        192.0.2.1 a.example.org
        fallthrough
    }
}
";

struct Probed {
    s: Server,
    health: u16,
    ready: u16,
    metrics: u16,
}

/// Starts the server with two workers and waits until all three endpoints answer 200.
fn start(lameduck: &str, stall: &str) -> Result<Probed, String> {
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < 3 {
        let p = free_port();
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    let text = COREFILE
        .replace("{H}", &ports[0].to_string())
        .replace("{R}", &ports[1].to_string())
        .replace("{M}", &ports[2].to_string())
        .replace("{lameduck}", lameduck)
        .replace("{stall}", stall);
    let s = Launch::new(&text).arg("-workers").arg("2").start();
    let p = Probed {
        s,
        health: ports[0],
        ready: ports[1],
        metrics: ports[2],
    };
    for (port, path) in [(p.health, "/health"), (p.ready, "/ready"), (p.metrics, "/metrics")] {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            match get(port, path, Duration::from_secs(2), &[]) {
                Ok(r) if r.status == 200 => break,
                got if Instant::now() > end => {
                    return Err(format!("{path} not up within 10s: {got:?}\n{}", p.s.output()));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    Ok(p)
}

// ------------------------------------------------------------------------------------
// HTTP client

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Whether the server still holds the connection as it was: nothing to read yet. Data
/// (an answer such as a 408), EOF or a reset mean it has dealt with it.
fn held(s: &TcpStream) -> bool {
    let _ = s.set_nonblocking(true);
    let mut b = [0u8; 1];
    let held = matches!(s.peek(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    let _ = s.set_nonblocking(false);
    held
}

// ------------------------------------------------------------------------------------
// Idle and slow connections

/// An attacker holding `idle` connections that send nothing and `slow` ones that send
/// one byte of a request head a second and never finish it, all to one port; each one
/// the server closes (or answers) is opened again (at most 100 a round of 100 ms, 40,000 in all, for
/// at most 15 s).
struct Flood {
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    fn start(port: u16, idle: usize, slow: usize) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), opened.clone());
        let thread = std::thread::spawn(move || {
            let to = addr(port);
            let open = || {
                let c = TcpStream::connect_timeout(&to, Duration::from_secs(1)).ok()?;
                count.fetch_add(1, Ordering::Relaxed);
                Some(c)
            };
            let mut idle_conns: Vec<Option<TcpStream>> = (0..idle).map(|_| open()).collect();
            // (connection, bytes of the endless head sent so far)
            let mut slow_conns: Vec<(Option<TcpStream>, usize)> = (0..slow).map(|_| (open(), 0)).collect();
            let head = b"GET /health HTTP/1.1\r\nX-Slow: ";
            let began = Instant::now();
            let mut last_byte = Instant::now();
            while !flag.load(Ordering::Acquire)
                && began.elapsed() < Duration::from_secs(15)
                && count.load(Ordering::Relaxed) < 40_000
            {
                let byte_due = last_byte.elapsed() >= Duration::from_secs(1);
                if byte_due {
                    last_byte = Instant::now();
                    for (c, sent) in slow_conns.iter_mut() {
                        let Some(s) = c else { continue };
                        let b = head.get(*sent).copied().unwrap_or(b'a');
                        if s.write_all(&[b]).is_err() {
                            *c = None;
                        } else {
                            *sent += 1;
                        }
                    }
                }
                let mut budget = 100;
                for c in idle_conns.iter_mut() {
                    if c.as_ref().is_some_and(held) {
                        continue;
                    }
                    if budget == 0 {
                        break;
                    }
                    budget -= 1;
                    *c = open();
                }
                for (c, sent) in slow_conns.iter_mut() {
                    if c.as_ref().is_some_and(held) {
                        continue;
                    }
                    if budget == 0 {
                        break;
                    }
                    budget -= 1;
                    *c = open();
                    *sent = 0;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Flood {
            stop,
            opened,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.opened.load(Ordering::Relaxed)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `/health` (then `/ready`) probed every 250 ms for 10 s, each within 1 s, while 500
/// idle and 64 slow connections are held open on the same port.
fn probes_under_idle_and_slow() -> Outcome {
    let p = start("0s", "1h")?;
    let pid = p.s.pid();
    let base = fd_count(pid);
    let mut lines = Vec::new();
    for (port, path) in [(p.health, "/health"), (p.ready, "/ready")] {
        let flood = Flood::start(port, 500, 64);
        // Let the attacker's first 564 connections land.
        std::thread::sleep(Duration::from_millis(1500));
        let (mut n, mut ok, mut worst) = (0, 0, Duration::ZERO);
        let mut failures = Vec::new();
        let mut peak_fds = 0;
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(10) && n < 40 {
            let t = Instant::now();
            n += 1;
            match get(port, path, PROBE_LIMIT, &[]) {
                Ok(g) if g.status == 200 => {
                    ok += 1;
                    worst = worst.max(g.took);
                }
                Ok(g) => failures.push(format!("status {} {:?}", g.status, g.body)),
                Err(e) => failures.push(e),
            }
            peak_fds = peak_fds.max(fd_count(pid));
            std::thread::sleep(Duration::from_millis(250).saturating_sub(t.elapsed()));
        }
        let opened = flood.stop();
        check!(
            ok == n,
            "{path}: {ok} of {n} probes answered 200 within {PROBE_LIMIT:?} under 500 idle + 64 slow connections ({opened} opened); first failures: {:?}",
            &failures[..failures.len().min(3)]
        );
        lines.push(format!(
            "{path} {ok}/{n} probes 200 within 1s (slowest {:.1}ms) while 500 idle + 64 slow conns held ({opened} opened in all), server fds {base} -> peak {peak_fds}",
            ms(worst)
        ));
    }
    check!(alive(pid), "server died");
    let m = get(p.metrics, "/metrics", Duration::from_secs(3), &[])?.body;
    let evicted = testkit::metrics::sum(&m, "clusterdns_http_failures_total", &[("reason", "evicted")]);
    let timeouts = testkit::metrics::sum(&m, "clusterdns_http_failures_total", &[("reason", "timeout")]);
    // More connections than the budget: the new ones evict the oldest (the idle ones
    // rarely live the 5 s to their deadline).
    check!(
        evicted > 0.0,
        "evictions not counted: evicted {evicted}, timeout {timeouts}"
    );
    let out = p.s.output();
    let logged = out
        .lines()
        .filter(|l| l.contains("http ") && l.contains("evicted"))
        .count();
    check!(
        (1..=20).contains(&logged),
        "{logged} log lines about evictions (want a few: logged at a bounded rate)"
    );
    Ok(format!(
        "{}; counted {evicted} evicted, {timeouts} timed out, {logged} eviction log lines",
        lines.join("; ")
    ))
}

// ------------------------------------------------------------------------------------
// Scrapers

/// One scraper's (tried, answered, slowest, errors).
type Scrapes = (u32, u32, Duration, Vec<String>);

/// 40 scrapers of `/metrics` in parallel for 4 s while two threads keep DNS busy: every
/// scrape is answered, whole.
fn metrics_scrapers() -> Outcome {
    let p = start("0s", "1h")?;
    let stop = Arc::new(AtomicBool::new(false));
    let dns = p.s.addr();
    let load: Vec<JoinHandle<(u64, u64)>> = (0..2)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || udp_load(dns, t, &stop))
        })
        .collect();
    let port = p.metrics;
    let began = Instant::now();
    let scrapers: Vec<JoinHandle<Scrapes>> = (0..40)
        .map(|_| {
            std::thread::spawn(move || {
                let (mut tried, mut ok, mut worst, mut errors) = (0u32, 0u32, Duration::ZERO, Vec::new());
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(4) && tried < 2000 {
                    tried += 1;
                    match get(port, "/metrics", Duration::from_secs(5), &[]) {
                        Ok(g) if g.status == 200 && g.body.contains("\ncoredns_build_info{") => {
                            ok += 1;
                            worst = worst.max(g.took);
                        }
                        Ok(g) => errors.push(format!("status {}", g.status)),
                        Err(e) => errors.push(e),
                    }
                }
                (tried, ok, worst, errors)
            })
        })
        .collect();
    let (mut tried, mut ok, mut worst, mut errors) = (0, 0, Duration::ZERO, Vec::new());
    for s in scrapers {
        let (t, o, w, e) = s.join().unwrap();
        tried += t;
        ok += o;
        worst = worst.max(w);
        errors.extend(e);
    }
    let secs = began.elapsed().as_secs_f64();
    stop.store(true, Ordering::Release);
    let (mut sent, mut answered) = (0, 0);
    for l in load {
        let (s, a) = l.join().unwrap();
        sent += s;
        answered += a;
    }
    check!(alive(p.s.pid()), "server died");
    check!(tried > 40, "only {tried} scrapes tried");
    check!(
        ok == tried,
        "{} of {tried} scrapes lost (first: {:?})",
        tried - ok,
        errors.first()
    );
    Ok(format!(
        "40 scrapers: {ok}/{tried} scrapes answered whole in {secs:.1}s (slowest {:.0}ms) under {:.0} DNS q/s ({answered}/{sent} answered)",
        ms(worst),
        answered as f64 / secs,
    ))
}

/// Windows of 16 UDP queries for `a.example.org` until stopped (at most 6 s): (sent,
/// answered).
fn udp_load(to: SocketAddr, t: u16, stop: &AtomicBool) -> (u64, u64) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut buf = [0u8; 1500];
    let began = Instant::now();
    let mut id = t.wrapping_mul(30_000);
    while !stop.load(Ordering::Acquire) && began.elapsed() < Duration::from_secs(6) {
        for _ in 0..16 {
            id = id.wrapping_add(1);
            if sock
                .send_to(&query_bytes("a.example.org.", Rtype::A, None, id), to)
                .is_ok()
            {
                sent += 1;
            }
        }
        for _ in 0..16 {
            match sock.recv(&mut buf) {
                Ok(_) => answered += 1,
                Err(_) => break,
            }
        }
    }
    (sent, answered)
}

// ------------------------------------------------------------------------------------
// Line endings and deadlines

/// Requests with bare-LF line endings are answered; a request head trickled one byte
/// every 250 ms is answered 408 and closed at the whole-request deadline (5 s), however
/// steadily the bytes come; both counted.
fn bare_lf_and_trickle() -> Outcome {
    let p = start("0s", "1h")?;
    let port = p.health;
    let variants: [(&str, &[u8]); 3] = [
        ("bare LF", b"GET /health HTTP/1.1\nHost: x\nConnection: close\n\n"),
        ("bare LF, HTTP/1.0, no headers", b"GET /health HTTP/1.0\n\n"),
        ("mixed CRLF and LF", b"GET /health HTTP/1.1\r\nHost: x\n\r\n"),
    ];
    let mut answered = Vec::new();
    for (what, req) in variants {
        let g = get(port, "/health", PROBE_LIMIT, req).map_err(|e| format!("{what}: {e}"))?;
        check!(g.status == 200 && g.body == "OK", "{what}: {} {:?}", g.status, g.body);
        answered.push(format!("{what} {:.1}ms", ms(g.took)));
    }

    let mut c = TcpStream::connect_timeout(&addr(port), PROBE_LIMIT).map_err(|e| format!("connect: {e}"))?;
    let t0 = Instant::now();
    c.write_all(b"GET /health HTTP/1.1\r\nX-Trickle: ")
        .map_err(|e| format!("write: {e}"))?;
    let mut bytes = 0;
    let closed = loop {
        std::thread::sleep(Duration::from_millis(250));
        if !held(&c) || c.write_all(b"a").is_err() {
            break t0.elapsed();
        }
        bytes += 1;
        if t0.elapsed() > REQUEST_DEADLINE + Duration::from_secs(4) {
            return Err(format!(
                "a request trickled one byte per 250 ms still open after {:.1}s ({bytes} bytes; deadline {REQUEST_DEADLINE:?})",
                t0.elapsed().as_secs_f64()
            ));
        }
    };
    let mut said = Vec::new();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let _ = c.read_to_end(&mut said);
    let said = String::from_utf8_lossy(&said).into_owned();
    check!(
        closed >= REQUEST_DEADLINE - Duration::from_millis(300)
            && closed <= REQUEST_DEADLINE + Duration::from_millis(800),
        "trickled request closed {:.2}s after connecting, want at the {REQUEST_DEADLINE:?} deadline",
        closed.as_secs_f64()
    );
    check!(
        said.starts_with("HTTP/1.1 408 "),
        "trickled request got {:?} before the close",
        trim(&said)
    );
    let m = get(p.metrics, "/metrics", Duration::from_secs(3), &[])?.body;
    let timeouts = testkit::metrics::sum(&m, "clusterdns_http_failures_total", &[("reason", "timeout")]);
    check!(timeouts >= 1.0, "the timeout was not counted ({timeouts})");
    let out = p.s.output();
    check!(
        out.lines().any(|l| l.contains("http ") && l.contains("deadline")),
        "the timeout was not logged:\n{out}"
    );
    Ok(format!(
        "answered: {}; a head trickled at 4 B/s closed {:.2}s after connect ({bytes} bytes after the request line) with {:?}, counted ({timeouts} timeouts)",
        answered.join(", "),
        closed.as_secs_f64(),
        said.lines().next().unwrap_or("")
    ))
}

// ------------------------------------------------------------------------------------
// A wedged worker

/// Sends `stall.example.org` once (no answer is awaited); one worker takes it and stops
/// coming round its loop for as long as `teststall` holds it.
fn wedge(s: &Server) -> Result<Instant, String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let t = Instant::now();
    sock.send_to(&query_bytes("stall.example.org.", Rtype::A, None, 7), s.addr())
        .map_err(|e| format!("send: {e}"))?;
    check!(
        s.wait_output(Duration::from_secs(2), |o| o.contains("teststall: holding")),
        "the stall query was not taken:\n{}",
        s.output()
    );
    Ok(t)
}

/// A worker held for 6 s: `/health` answers 503 (naming the worker) within the 3 s
/// bound plus one probe interval, keeps answering meanwhile, and 200 again once the
/// worker is back.
fn wedged_worker_fails_health() -> Outcome {
    let p = start("0s", "6s")?;
    let wedged = wedge(&p.s)?;
    let (mut failed_at, mut back_at, mut body) = (None, None, String::new());
    let (mut probes, mut unanswered) = (0, Vec::new());
    while wedged.elapsed() < Duration::from_secs(12) && back_at.is_none() {
        let t = Instant::now();
        probes += 1;
        match get(p.health, "/health", PROBE_LIMIT, &[]) {
            Ok(g) if g.status == 503 && failed_at.is_none() => {
                failed_at = Some(wedged.elapsed());
                body = g.body;
            }
            Ok(g) if g.status == 200 && failed_at.is_some() => back_at = Some(wedged.elapsed()),
            Ok(_) => {}
            Err(e) => unanswered.push(format!("{:.1}s: {e}", wedged.elapsed().as_secs_f64())),
        }
        std::thread::sleep(Duration::from_millis(100).saturating_sub(t.elapsed()));
    }
    let Some(failed) = failed_at else {
        return Err(format!(
            "/health never failed in 12 s with a worker held for 6 s ({probes} probes)"
        ));
    };
    check!(
        failed <= STALL_BOUND + Duration::from_millis(700),
        "/health failed {:.2}s after the worker was wedged, bound {STALL_BOUND:?}",
        failed.as_secs_f64()
    );
    check!(body.contains("worker"), "the 503 does not say which worker: {body:?}");
    check!(
        unanswered.is_empty(),
        "/health unanswered within 1 s while a worker was wedged: {unanswered:?}"
    );
    let Some(back) = back_at else {
        return Err(format!(
            "/health still failing {:.1}s after a 6 s stall",
            wedged.elapsed().as_secs_f64()
        ));
    };
    check!(
        back <= Duration::from_secs(6) + Duration::from_millis(1200),
        "/health back to 200 only {:.2}s after the start of a 6 s stall",
        back.as_secs_f64()
    );
    let a = p.s.query("a.example.org.", Rtype::A);
    check!(
        section(&a, "answer") == ["a.example.org. 3600 IN A 192.0.2.1"],
        "DNS after the stall: {:?}",
        section(&a, "answer")
    );
    Ok(format!(
        "worker held 6s: /health 503 at {:.2}s ({:?}), 200 again at {:.2}s; {probes} probes, all answered within 1s",
        failed.as_secs_f64(),
        body.trim(),
        back.as_secs_f64()
    ))
}

/// SIGTERM while a worker is held for an hour: the process still ends within the 1 s
/// lameduck plus the 2 s bound, names the worker that did not stop, and exits 1.
fn sigterm_with_a_wedged_worker() -> Outcome {
    let Probed { mut s, .. } = start("1s", "1h")?;
    wedge(&s)?;
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    s.signal(libc::SIGTERM);
    let limit = Duration::from_secs(1) + STOP_BOUND + Duration::from_millis(700);
    let code = s.wait_exit(Duration::from_secs(8));
    let took = t.elapsed();
    check!(
        code.is_some(),
        "the process did not exit within 8 s of SIGTERM with a wedged worker"
    );
    check!(
        took <= limit,
        "exited {:.2}s after SIGTERM, want within lameduck 1s + {STOP_BOUND:?}",
        took.as_secs_f64()
    );
    check!(
        took >= Duration::from_secs(1),
        "exited {:.2}s after SIGTERM: before the lameduck ended",
        took.as_secs_f64()
    );
    check!(code == Some(1), "exit status {code:?}, want 1 (a worker did not stop)");
    let out = s.output();
    let line = out
        .lines()
        .find(|l| l.contains("did not stop"))
        .ok_or_else(|| format!("no log line names the stuck worker:\n{out}"))?;
    check!(line.contains("worker"), "{line}");
    Ok(format!(
        "SIGTERM with a worker held: exited {:.2}s later (lameduck 1s + bound {STOP_BOUND:?}), status 1, logged {:?}",
        took.as_secs_f64(),
        line.trim()
    ))
}
