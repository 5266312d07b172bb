//! Operations, end to end: `/health` with lameduck, `/ready`, `/metrics` (read with the
//! test kit's strict Prometheus text parser), reload by SIGUSR1 and by the `reload` plugin, the
//! signals, and systemd's notifications, against the real binary on 127.0.0.1 while the
//! tests send a steady stream of queries (bounded in count and time).
//!
//! Every Corefile binds DNS to 127.0.0.1 and every HTTP endpoint to 127.0.0.1 on a
//! port from `free_port()`.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};
use testkit::metrics::{self, Kind, Scrape};
use testkit::prelude::*;
use testkit::process::free_ports;
use testkit::wire::query_with;

// ------------------------------------------------------------------------------------
// Corefiles

/// A hosts zone with health (lameduck `{lameduck}`), ready and prometheus endpoints.
const ENDPOINTS_COREFILE: &str = "example.org:{port} {
    bind 127.0.0.1
    health 127.0.0.1:{H} {
        lameduck {lameduck}
    }
    ready 127.0.0.1:{R}
    prometheus 127.0.0.1:{M}
    hosts {
        {ip} a.example.org
    }
}
";

/// Just a hosts zone: `a.example.org` is `{ip}`.
const HOSTS_COREFILE: &str = "example.org:{port} {
    bind 127.0.0.1
    hosts {
        {ip} a.example.org
    }
}
";

const NAME: &str = "a.example.org.";
const OLD_IP: &str = "10.0.0.1";
const NEW_IP: &str = "10.0.0.2";

fn a_record(ip: &str) -> String {
    format!("a.example.org. 3600 IN A {ip}")
}

/// Replaces `{KEY}` placeholders (not `{port}` and `{dir}`, which `Launch` fills).
fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

const SHA_LINE: &str = "Running configuration SHA512 = ";
const USR1_LINE: &str = "SIGUSR1 received: reloading";
const RELOAD_FAILED: &str = "Corefile changed but reload failed: ";

/// The hashes of the `Running configuration SHA512 = ...` lines, in order.
fn sha_lines(s: &Server) -> Vec<String> {
    s.output()
        .lines()
        .filter_map(|l| l.split_once(SHA_LINE).map(|(_, h)| h.trim().to_string()))
        .collect()
}

/// Sends SIGUSR1 and waits until the server logged that it got it (the `n`th time), so
/// that signals sent one after the other are not merged into one.
fn usr1(s: &Server, n: usize) {
    s.signal(libc::SIGUSR1);
    s.wait_lines(USR1_LINE, n, Duration::from_secs(3));
}

/// Starting a server: DNS answering (what `Launch::start` waits for) comes before the
/// HTTP endpoints open; `Running configuration SHA512` is logged once both are up.
trait Up {
    fn up(self) -> Server;
}

impl Up for Launch<'_> {
    fn up(self) -> Server {
        let s = self.start();
        s.wait_lines(SHA_LINE, 1, Duration::from_secs(10));
        s
    }
}

// ------------------------------------------------------------------------------------
// HTTP

fn ok_text(body: &str) -> Result<(u16, String), String> {
    Ok((200, body.to_string()))
}

fn refused(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1)).is_err()
}

/// One HTTP probe: when, which port, which path, and (status, body) or the error.
type Probe = (Instant, u16, &'static str, Result<(u16, String), String>);

/// Repeatedly GETs a few (port, path) pairs, every 10 ms, recording every outcome, until
/// stopped (at most 1500 rounds, 12 s).
struct HttpPoller {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Probe>>>,
}

impl HttpPoller {
    fn start(targets: Vec<(u16, &'static str)>) -> HttpPoller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let mut seen = Vec::new();
            for _ in 0..1500 {
                if flag.load(Ordering::Acquire) || start.elapsed() > Duration::from_secs(12) {
                    break;
                }
                for (port, path) in &targets {
                    seen.push((Instant::now(), *port, *path, http_get(*port, path)));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            seen
        });
        HttpPoller {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Probe> {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().expect("poller thread")
    }
}

impl Drop for HttpPoller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------------------------------
// A steady stream of UDP queries

type Got = Result<(Rcode, Vec<String>), String>;

/// One query of a [`Stream`] and what came back.
#[derive(Clone, Debug)]
struct Sample {
    sent: Instant,
    got: Got,
}

/// A thread sending one UDP query every 5 ms (rotating over 4 source ports, so that
/// every worker gets some), each waiting up to 1 s for its reply; at most 2000 queries
/// and 9 s, or until finished.
struct Stream {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Sample>>>,
}

impl Stream {
    fn start(to: SocketAddr, name: &'static str) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let socks: Vec<UdpSocket> = (0..4)
                .map(|_| {
                    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                    s.connect(to).unwrap();
                    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    s
                })
                .collect();
            let start = Instant::now();
            let mut samples = Vec::new();
            for i in 0..2000usize {
                if flag.load(Ordering::Acquire) || start.elapsed() > Duration::from_secs(9) {
                    break;
                }
                let id = i as u16 + 1;
                let sent = Instant::now();
                let got = exchange(
                    &socks[i % socks.len()],
                    &query_bytes(name, Rtype::A, Some(1232), id),
                    id,
                );
                samples.push(Sample { sent, got });
                if let Some(rest) = Duration::from_millis(5).checked_sub(sent.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            samples
        });
        Stream {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().expect("stream thread")
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `q` on a connected socket and waits up to 1 s for the reply with that ID.
fn exchange(sock: &UdpSocket, q: &[u8], id: u16) -> Got {
    sock.send(q).map_err(|e| format!("send: {e}"))?;
    let end = Instant::now() + Duration::from_secs(1);
    let mut buf = vec![0u8; 4096];
    while Instant::now() < end {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let Ok(msg) = Message::from_octets(buf[..n].to_vec()) else {
                    return Err("unparsable reply".into());
                };
                if msg.header().id() == id {
                    return Ok((rcode(&msg), section(&msg, "answer")));
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
    Err("no reply within 1s".into())
}

/// A TCP query on a new connection.
fn tcp_query(to: SocketAddr, name: &str) -> Got {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(1)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    write_frame(&mut s, &query_bytes(name, Rtype::A, Some(1232), 0x7777));
    let reply = read_frame(&mut s).ok_or("no TCP reply")?;
    let msg = Message::from_octets(reply).map_err(|_| "unparsable reply".to_string())?;
    Ok((rcode(&msg), section(&msg, "answer")))
}

fn answer_is(got: &Got, ip: &str) -> bool {
    matches!(got, Ok((Rcode::NOERROR, a)) if *a == [a_record(ip)])
}

fn udp_answer(s: &Server) -> Got {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(s.addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    exchange(&sock, &query_bytes(NAME, Rtype::A, Some(1232), 0x5151), 0x5151)
}

/// Every sample of a stream that went across a reload from `OLD_IP` to `NEW_IP` was
/// answered, with the old address and then, from some point on, only the new one; the
/// switch came at most `within` after `changed`. Returns when the new answer came.
fn assert_switched(samples: &[Sample], changed: Instant, within: Duration, out: &str) -> Duration {
    assert!(samples.len() >= 100, "only {} queries sent", samples.len());
    let bad: Vec<&Sample> = samples
        .iter()
        .filter(|x| !answer_is(&x.got, OLD_IP) && !answer_is(&x.got, NEW_IP))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} queries lost or wrong, first ones: {:?}\n{out}",
        bad.len(),
        samples.len(),
        &bad[..bad.len().min(5)]
    );
    let first_new = samples
        .iter()
        .position(|x| answer_is(&x.got, NEW_IP))
        .unwrap_or_else(|| panic!("the new answer never came ({} queries)\n{out}", samples.len()));
    let flapped = samples[first_new..]
        .iter()
        .filter(|x| answer_is(&x.got, OLD_IP))
        .count();
    assert_eq!(flapped, 0, "the old answer came back after the new one\n{out}");
    let at = samples[first_new].sent.saturating_duration_since(changed);
    assert!(
        samples[first_new].sent + Duration::from_millis(50) >= changed,
        "new answer before the change"
    );
    assert!(
        at <= within,
        "the new answer came {at:?} after the change (limit {within:?})\n{out}"
    );
    assert!(
        samples.len() - first_new >= 20,
        "too few queries after the switch to see it stay: {}",
        samples.len() - first_new
    );
    at
}

// ------------------------------------------------------------------------------------
// Prometheus text, through a strict parser

/// Parses a metrics page with the kit's strict parser; panics if it does not parse.
fn parse_metrics(text: &str) -> Scrape {
    testkit::metrics::parse(text)
        .unwrap_or_else(|e| panic!("the Prometheus parser rejected the page: {e}\n--- page:\n{text}"))
}

fn samples_named<'a>(ms: &'a Scrape, name: &str) -> Vec<&'a metrics::Sample> {
    ms.named(name)
}

/// The value of the one sample with exactly these labels.
fn value(ms: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    ms.value(name, labels)
}

fn scrape(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics").expect("scrape");
    assert_eq!(status, 200, "{body}");
    body
}

/// A query with EDNS and the DO bit.
fn do_query(name: &str, id: u16) -> Vec<u8> {
    query_with(name, Rtype::A, id, Some(1232), true)
}

// ------------------------------------------------------------------------------------
// systemd notifications

/// Collects the datagrams sent to a notify socket, with their arrival times.
struct NotifySocket {
    /// What to put in `NOTIFY_SOCKET`.
    env: String,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: Option<Scratch>,
}

impl NotifySocket {
    fn start(sock: UnixDatagram, env: String, dir: Option<Scratch>) -> NotifySocket {
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, flag) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let start = Instant::now();
            // Bounded: at most 30 s, and 10000 datagrams.
            while !flag.load(Ordering::Acquire) && start.elapsed() < Duration::from_secs(30) {
                if let Ok(n) = sock.recv(&mut buf) {
                    let mut g = g.lock().unwrap();
                    if g.len() < 10000 {
                        g.push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
                    }
                }
            }
        });
        NotifySocket {
            env,
            got,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// A socket at a path in a scratch directory.
    fn at_path() -> NotifySocket {
        let dir = Scratch::new("notify");
        let path = dir.path("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket::start(sock, path.display().to_string(), Some(dir))
    }

    /// A socket in the abstract namespace (`@name`).
    fn abstract_name() -> NotifySocket {
        use std::os::linux::net::SocketAddrExt;
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!("clusterdns-test-{}-{nanos}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract notify socket");
        NotifySocket::start(sock, format!("@{name}"), None)
    }

    fn messages(&self) -> Vec<String> {
        self.got.lock().unwrap().iter().map(|(_, m)| m.clone()).collect()
    }

    fn timed(&self) -> Vec<(Instant, String)> {
        self.got.lock().unwrap().clone()
    }

    /// The messages other than watchdog pings.
    fn states(&self) -> Vec<String> {
        self.messages().into_iter().filter(|m| m != "WATCHDOG=1").collect()
    }

    fn wait(&self, what: &str, timeout: Duration, f: impl Fn(&[String]) -> bool) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if f(&self.messages()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            f(&self.messages()),
            "notify: no {what} within {timeout:?}: {:?}",
            self.messages()
        );
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

// ------------------------------------------------------------------------------------
// 1. Lameduck

#[test]
fn sigterm_lameduck_takes_ready_down_keeps_answering_and_loses_no_query() {
    let [h, r, m] = free_ports::<3>();
    let text = fill(
        ENDPOINTS_COREFILE,
        &[
            ("H", &h.to_string()),
            ("R", &r.to_string()),
            ("M", &m.to_string()),
            ("lameduck", "2s"),
            ("ip", OLD_IP),
        ],
    );
    let mut s = Launch::new(&text).arg("-workers").arg("2").up();
    assert_eq!(http_get(r, "/ready"), ok_text("OK"), "{}", s.output());
    assert_eq!(http_get(h, "/health"), ok_text("OK"));

    let stream = Stream::start(s.addr(), NAME);
    std::thread::sleep(Duration::from_secs(1));
    let term = Instant::now();
    s.signal(libc::SIGTERM);
    let lameduck_end = term + Duration::from_secs(2);

    // /ready goes down at once...
    let took = wait_until("/ready 503", Duration::from_millis(500), || {
        http_get(r, "/ready") == Ok((503, "Shutting down".into()))
    });
    println!("/ready down {took:?} after SIGTERM");
    // ...while /health and DNS (UDP and TCP) keep serving for the rest of the lameduck.
    let mut checks = 0;
    while term.elapsed() < Duration::from_millis(1700) {
        assert_eq!(
            http_get(r, "/ready"),
            Ok((503, "Shutting down".into())),
            "at {:?}",
            term.elapsed()
        );
        assert_eq!(http_get(h, "/health"), ok_text("OK"), "at {:?}", term.elapsed());
        let tcp = tcp_query(s.addr(), NAME);
        assert!(
            answer_is(&tcp, OLD_IP),
            "TCP during lameduck at {:?}: {tcp:?}",
            term.elapsed()
        );
        checks += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(checks >= 5, "only {checks} checks during the lameduck");

    let code = s.wait_exit(Duration::from_secs(6));
    let exited = term.elapsed();
    let exit_seen = Instant::now();
    println!("exited {exited:?} after SIGTERM");
    assert_eq!(code, Some(0), "exit status after SIGTERM\n{}", s.output());
    assert!(
        exited >= Duration::from_millis(1950),
        "exited {exited:?} after SIGTERM: before the lameduck ended"
    );
    assert!(exited < Duration::from_millis(4500), "exit took {exited:?}");
    // Gone: the stream sees refusals, nothing answers any more.
    std::thread::sleep(Duration::from_millis(300));
    let samples = stream.finish();
    assert!(
        raw_udp(
            s.addr(),
            &query_bytes(NAME, Rtype::A, None, 9),
            Duration::from_millis(300)
        )
        .is_none()
    );
    assert!(tcp_query(s.addr(), NAME).is_err(), "TCP still answers after exit");
    assert!(
        refused(h) && refused(r) && refused(m),
        "HTTP endpoints closed after exit"
    );

    let margin = lameduck_end - Duration::from_millis(200);
    let before: Vec<&Sample> = samples.iter().filter(|x| x.sent < margin).collect();
    let during = before.iter().filter(|x| x.sent >= term).count();
    let lost: Vec<&&Sample> = before.iter().filter(|x| !answer_is(&x.got, OLD_IP)).collect();
    println!(
        "{} queries, {} before the lameduck ended ({during} during it), {} lost",
        samples.len(),
        before.len(),
        lost.len()
    );
    assert!(
        before.len() >= 100 && during >= 50,
        "too few queries: {}/{during}",
        before.len()
    );
    assert!(
        lost.is_empty(),
        "{} queries sent before the end of the lameduck lost, first: {:?} (at {:?} after SIGTERM)\n{}",
        lost.len(),
        lost[0],
        lost[0].sent.saturating_duration_since(term),
        s.output()
    );
    // No wrong answer at any time, and none after the process was gone.
    for x in &samples {
        assert!(x.got.is_err() || answer_is(&x.got, OLD_IP), "wrong answer {x:?}");
        if x.sent > exit_seen {
            assert!(x.got.is_err(), "answered after exit: {x:?}");
        }
    }
    assert!(
        samples.iter().any(|x| x.sent > exit_seen),
        "the stream stopped before the server exited"
    );
    let out = s.output();
    assert!(out.contains("SIGTERM received"), "{out}");
    assert!(out.contains("Going into lameduck mode for 2s"), "{out}");
}

// ------------------------------------------------------------------------------------
// 2. SIGUSR1 reload

#[test]
fn sigusr1_reload_applies_a_change_without_losing_a_query_and_ignores_whitespace_edits() {
    let mut s = Launch::new(&fill(HOSTS_COREFILE, &[("ip", OLD_IP)]))
        .arg("-workers")
        .arg("2")
        .up();
    let first = sha_lines(&s);
    assert_eq!(first.len(), 1, "{}", s.output());
    assert_eq!(first[0].len(), 128, "a SHA-512 in hex: {:?}", first[0]);
    assert!(first[0].bytes().all(|b| b.is_ascii_hexdigit()));

    let stream = Stream::start(s.addr(), NAME);
    std::thread::sleep(Duration::from_millis(500));

    // Comments, blank lines and other spacing are not a change.
    s.rewrite_corefile(
        "# the same configuration, spelt differently\n\nexample.org:{port}   {\n  bind   127.0.0.1 # here\n\n\n\thosts {\n  10.0.0.1    a.example.org   # a\n  }\n}\n# end\n",
    );
    usr1(&s, 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sha_lines(&s), first, "a whitespace-only edit reloaded:\n{}", s.output());

    // A real change.
    s.rewrite_corefile(&fill(HOSTS_COREFILE, &[("ip", NEW_IP)]));
    let changed = Instant::now();
    usr1(&s, 2);
    s.wait_lines(SHA_LINE, 2, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(1500));
    let samples = stream.finish();
    let out = s.output();
    let at = assert_switched(&samples, changed, Duration::from_secs(2), &out);
    println!("{} queries, none lost; new answer {at:?} after SIGUSR1", samples.len());

    // Exactly one more configuration started (the whitespace edit, handled before it,
    // did not count), with another hash.
    let hashes = sha_lines(&s);
    assert_eq!(hashes.len(), 2, "{out}");
    assert_ne!(hashes[1], hashes[0]);
    assert!(!out.contains(RELOAD_FAILED), "{out}");
    assert_eq!(s.child.try_wait().unwrap(), None, "still running");
}

// ------------------------------------------------------------------------------------
// 3. The reload plugin

#[test]
fn the_reload_plugin_applies_a_change_without_a_signal_and_loses_no_query() {
    let template = "example.org:{port} {\n    bind 127.0.0.1\n    reload 2s 1s\n    hosts {\n        {ip} a.example.org\n    }\n}\n";
    let s = Launch::new(&fill(template, &[("ip", OLD_IP)]))
        .arg("-workers")
        .arg("2")
        .up();
    let stream = Stream::start(s.addr(), NAME);
    std::thread::sleep(Duration::from_millis(300));
    s.rewrite_corefile(&fill(template, &[("ip", NEW_IP)]));
    let changed = Instant::now();
    wait_until("the new answer", Duration::from_secs(5), || {
        answer_is(&udp_answer(&s), NEW_IP)
    });
    std::thread::sleep(Duration::from_millis(500));
    let samples = stream.finish();
    let out = s.output();
    // Checked every 2 s ± 0.5 s: the change is served within 2.5 s plus the build.
    let at = assert_switched(&samples, changed, Duration::from_millis(3500), &out);
    println!("{} queries, none lost; new answer {at:?} after the edit", samples.len());
    let hashes = sha_lines(&s);
    assert_eq!(hashes.len(), 2, "{out}");
    assert_ne!(hashes[0], hashes[1]);
    assert!(!out.contains(USR1_LINE));
}

// ------------------------------------------------------------------------------------
// 4. A broken Corefile on reload

#[test]
fn a_broken_corefile_on_reload_keeps_the_old_one_serving_and_is_counted() {
    let [m] = free_ports::<1>();
    let good = "example.org:{port} {\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{M}\n    hosts {\n        {ip} a.example.org\n    }\n}\n";
    let m_text = m.to_string();
    let s = Launch::new(&fill(good, &[("M", &m_text), ("ip", OLD_IP)]))
        .arg("-workers")
        .arg("2")
        .up();
    let failed_total = || {
        scrape(m)
            .lines()
            .find_map(|l| l.strip_prefix("coredns_reload_failed_total ").map(str::to_string))
            .unwrap_or_else(|| panic!("no coredns_reload_failed_total"))
    };
    assert_eq!(failed_total(), "0");
    let stream = Stream::start(s.addr(), NAME);
    std::thread::sleep(Duration::from_millis(300));

    // An unknown directive on line 3.
    let broken = "example.org:{port} {\n    bind 127.0.0.1\n    no_such_directive\n    prometheus 127.0.0.1:{M}\n    hosts {\n        10.0.0.9 a.example.org\n    }\n}\n";
    s.rewrite_corefile(&fill(broken, &[("M", &m_text)]));
    usr1(&s, 1);
    s.wait_lines(RELOAD_FAILED, 1, Duration::from_secs(3));
    let out = s.output();
    let line = out.lines().find(|l| l.contains(RELOAD_FAILED)).unwrap();
    assert!(line.contains("Corefile:3 - "), "{line}");
    assert!(line.contains("no_such_directive"), "{line}");
    assert_eq!(failed_total(), "1");
    assert!(answer_is(&udp_answer(&s), OLD_IP));

    // The same broken file again is the same failure: not counted twice.
    usr1(&s, 2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(failed_total(), "1");
    assert_eq!(s.count_lines(RELOAD_FAILED), 1, "{}", s.output());

    // A different failure, found when setting up (reload's minimum interval), on line 7.
    let bad_setup = "example.org:{port} {\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{M}\n    hosts {\n        10.0.0.9 a.example.org\n    }\n    reload 1s\n}\n";
    s.rewrite_corefile(&fill(bad_setup, &[("M", &m_text)]));
    usr1(&s, 3);
    s.wait_lines(RELOAD_FAILED, 2, Duration::from_secs(3));
    let out = s.output();
    let line = out.lines().filter(|l| l.contains(RELOAD_FAILED)).nth(1).unwrap();
    assert!(line.contains("Corefile:7 - "), "{line}");
    assert_eq!(failed_total(), "2");
    assert!(answer_is(&udp_answer(&s), OLD_IP));

    // Fixed: reloads as usual.
    s.rewrite_corefile(&fill(good, &[("M", &m_text), ("ip", NEW_IP)]));
    let changed = Instant::now();
    usr1(&s, 4);
    s.wait_lines(SHA_LINE, 2, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(500));
    let samples = stream.finish();
    let out = s.output();
    assert_switched(&samples, changed, Duration::from_secs(2), &out);
    assert_eq!(failed_total(), "2");
    assert_eq!(s.count_lines(RELOAD_FAILED), 2, "{out}");
    // The version metric follows the running configuration.
    let hashes = sha_lines(&s);
    assert!(
        scrape(m).contains(&format!(
            "coredns_reload_version_info{{hash=\"sha512\",value=\"{}\"}} 1",
            hashes[1]
        )),
        "{}",
        scrape(m)
    );
}

/// A FIFO put where the Corefile was: the reload fails at once with the file named
/// (it is not a regular file) instead of blocking the control thread on the FIFO's
/// open, the old configuration keeps serving, and the next good Corefile reloads.
#[test]
fn a_fifo_in_place_of_the_corefile_fails_the_reload_without_blocking() {
    let good = "example.org:{port} {\n    bind 127.0.0.1\n    hosts {\n        {ip} a.example.org\n    }\n}\n";
    let s = Launch::new(&fill(good, &[("ip", OLD_IP)])).up();
    std::fs::remove_file(&s.corefile).unwrap();
    let path = std::ffi::CString::new(s.corefile.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    usr1(&s, 1);
    s.wait_lines(RELOAD_FAILED, 1, Duration::from_secs(3));
    let out = s.output();
    let line = out.lines().find(|l| l.contains(RELOAD_FAILED)).unwrap();
    assert!(line.contains("not a regular file"), "{line}");
    assert!(answer_is(&udp_answer(&s), OLD_IP));
    // The control thread is free: a good Corefile in its place reloads.
    std::fs::remove_file(&s.corefile).unwrap();
    s.rewrite_corefile(&fill(good, &[("ip", NEW_IP)]));
    usr1(&s, 2);
    s.wait_lines(SHA_LINE, 2, Duration::from_secs(3));
    assert!(answer_is(&udp_answer(&s), NEW_IP));
}

// ------------------------------------------------------------------------------------
// 5. A reload that changes the listen addresses

#[test]
fn a_reload_binds_new_addresses_keeps_the_unchanged_ones_and_closes_removed_ones() {
    let one = fill(HOSTS_COREFILE, &[("ip", OLD_IP)]);
    let s = Launch::new(&one).arg("-workers").arg("2").up();
    let q_port = loop {
        let p = free_port();
        if p != s.port {
            break p;
        }
    };
    let q = SocketAddr::from(([127, 0, 0, 1], q_port));
    let other = "\nexample.net:{Q} {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.9 b.example.net\n    }\n}\n";
    let two = format!("{one}{}", fill(other, &[("Q", &q_port.to_string())]));
    let b_answer = |to: SocketAddr| -> Option<Vec<String>> {
        let r = raw_udp(
            to,
            &query_bytes("b.example.net.", Rtype::A, Some(1232), 3),
            Duration::from_millis(200),
        )?;
        Some(section(&Message::from_octets(r).unwrap(), "answer"))
    };
    assert_eq!(b_answer(q), None, "nothing on {q} yet");

    let stream = Stream::start(s.addr(), NAME);
    std::thread::sleep(Duration::from_millis(300));
    s.rewrite_corefile(&two);
    usr1(&s, 1);
    let took = wait_until("the new listener answers", Duration::from_secs(2), || {
        b_answer(q) == Some(vec!["b.example.net. 3600 IN A 10.0.0.9".into()])
    });
    println!("{q} answering {took:?} after SIGUSR1");
    assert!(answer_is(&tcp_query(s.addr(), NAME), OLD_IP));
    std::thread::sleep(Duration::from_millis(300));

    // Back to one block: the other address stops answering, the first goes on.
    s.rewrite_corefile(&one);
    usr1(&s, 2);
    s.wait_lines(SHA_LINE, 3, Duration::from_secs(3));
    wait_until("the removed listener closes", Duration::from_secs(2), || {
        b_answer(q).is_none()
    });
    assert!(
        TcpStream::connect_timeout(&q, Duration::from_secs(1)).is_err(),
        "TCP on {q} still open"
    );
    std::thread::sleep(Duration::from_millis(300));
    let samples = stream.finish();
    let lost: Vec<&Sample> = samples.iter().filter(|x| !answer_is(&x.got, OLD_IP)).collect();
    println!("{} queries on the kept address, {} lost", samples.len(), lost.len());
    assert!(samples.len() >= 100, "{}", samples.len());
    assert!(
        lost.is_empty(),
        "lost on the kept address: {:?}\n{}",
        &lost[..lost.len().min(5)],
        s.output()
    );
    assert!(answer_is(&tcp_query(s.addr(), NAME), OLD_IP));
}

// ------------------------------------------------------------------------------------
// 6. Metrics

#[test]
fn metrics_parse_with_a_prometheus_parser_and_count_exactly_the_queries_sent() {
    let [h, m] = free_ports::<2>();
    let text = fill(
        "example.org:{port} {\n    bind 127.0.0.1\n    errors\n    health 127.0.0.1:{H}\n    prometheus 127.0.0.1:{M}\n    hosts {\n        10.0.0.1 a.example.org\n    }\n}\n",
        &[("H", &h.to_string()), ("M", &m.to_string())],
    );
    let s = Launch::new(&text).arg("-workers").arg("2").no_wait().start();
    // Not waiting with a query: the endpoint opens once the workers run, and the first
    // scrape must show no query counted.
    let t = Instant::now();
    while http_get(m, "/metrics").is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no metrics endpoint\n{}",
            s.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = parse_metrics(&scrape(m));
    assert!(
        samples_named(&start, "coredns_dns_requests_total").is_empty(),
        "{:?}",
        samples_named(&start, "coredns_dns_requests_total")
    );

    // From 16 source ports, so that both workers get some.
    let socks: Vec<UdpSocket> = (0..16)
        .map(|_| {
            let u = UdpSocket::bind("127.0.0.1:0").unwrap();
            u.connect(s.addr()).unwrap();
            u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            u
        })
        .collect();
    let mut id = 100u16;
    let mut send = |q: &dyn Fn(u16) -> Vec<u8>, check: &dyn Fn(&Got) -> bool| {
        id += 1;
        let got = exchange(&socks[id as usize % socks.len()], &q(id), id);
        assert!(check(&got), "query {id}: {got:?}");
    };
    let a_ok = |g: &Got| answer_is(g, "10.0.0.1");
    let nodata = |g: &Got| matches!(g, Ok((Rcode::NOERROR, a)) if a.is_empty());
    let servfail = |g: &Got| matches!(g, Ok((Rcode::SERVFAIL, _)));
    const A: u32 = 37;
    const AAAA: u32 = 5;
    const SERVFAIL: u32 = 3;
    const DO: u32 = 4;
    const TCP: u32 = 6;
    for _ in 0..A {
        send(&|id| query_bytes(NAME, Rtype::A, Some(1232), id), &a_ok);
    }
    for _ in 0..AAAA {
        send(&|id| query_bytes(NAME, Rtype::AAAA, None, id), &nodata);
    }
    for _ in 0..SERVFAIL {
        send(
            &|id| query_bytes("nx.example.org.", Rtype::A, Some(1232), id),
            &servfail,
        );
    }
    for _ in 0..DO {
        send(&|id| do_query(NAME, id), &a_ok);
    }
    for _ in 0..TCP {
        let got = tcp_query(s.addr(), NAME);
        assert!(a_ok(&got), "{got:?}");
    }
    let total = A + AAAA + SERVFAIL + DO + TCP;

    // The health plugin's own probe, once a second.
    wait_until("a health probe", Duration::from_secs(4), || {
        scrape(m)
            .lines()
            .any(|l| l.starts_with("coredns_health_request_duration_seconds_count ") && !l.ends_with(" 0"))
    });
    let page = scrape(m);
    let ms = parse_metrics(&page);
    let server = format!("dns://127.0.0.1:{}", s.port);
    let route = [("server", server.as_str()), ("zone", "example.org."), ("view", "")];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        route.iter().copied().chain(extra.iter().copied()).collect()
    };

    let req = |proto, ty| {
        value(
            &ms,
            "coredns_dns_requests_total",
            &with(&[("proto", proto), ("family", "1"), ("type", ty)]),
        )
    };
    assert_eq!(req("udp", "A"), f64::from(A + SERVFAIL + DO), "{page}");
    assert_eq!(req("udp", "AAAA"), f64::from(AAAA));
    assert_eq!(req("tcp", "A"), f64::from(TCP));
    assert_eq!(samples_named(&ms, "coredns_dns_requests_total").len(), 3, "{page}");

    let resp = |rcode, plugin| {
        value(
            &ms,
            "coredns_dns_responses_total",
            &with(&[("rcode", rcode), ("plugin", plugin)]),
        )
    };
    assert_eq!(resp("NOERROR", "hosts"), f64::from(A + AAAA + DO + TCP), "{page}");
    assert_eq!(resp("SERVFAIL", ""), f64::from(SERVFAIL), "{page}");
    assert_eq!(samples_named(&ms, "coredns_dns_responses_total").len(), 2, "{page}");

    assert_eq!(value(&ms, "coredns_dns_do_requests_total", &route), f64::from(DO));

    // The duration histogram: CoreDNS's buckets, every query in it.
    let name = "coredns_dns_request_duration_seconds";
    assert_eq!(value(&ms, &format!("{name}_count"), &route), f64::from(total));
    assert!(value(&ms, &format!("{name}_sum"), &route) > 0.0);
    let buckets: Vec<&metrics::Sample> = samples_named(&ms, &format!("{name}_bucket"));
    let les: Vec<String> = buckets.iter().map(|b| b.labels["le"].clone()).collect();
    // 0.00025 * 2^k, k = 0..15 (scaling by a power of two is exact in f64).
    let mut want: Vec<f64> = (0..16).map(|k| 0.00025 * f64::from(1u32 << k)).collect();
    want.push(f64::INFINITY);
    let les_f: Vec<f64> = les.iter().map(|l| l.parse::<f64>().unwrap()).collect();
    assert_eq!(les_f, want, "{les:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].value <= w[1].value),
        "cumulative buckets"
    );
    assert_eq!(buckets.last().unwrap().value, f64::from(total));
    assert!(buckets.iter().all(|b| b.kind == Kind::Histogram));

    for size in ["coredns_dns_request_size_bytes", "coredns_dns_response_size_bytes"] {
        let count = |proto| value(&ms, &format!("{size}_count"), &with(&[("proto", proto)]));
        assert_eq!(count("udp"), f64::from(total - TCP), "{size}");
        assert_eq!(count("tcp"), f64::from(TCP), "{size}");
        let les: Vec<f64> = samples_named(&ms, &format!("{size}_bucket"))
            .iter()
            .filter(|b| b.labels["proto"] == "udp")
            .map(|b| b.labels["le"].parse().unwrap())
            .collect();
        assert_eq!(
            les,
            [
                0.0,
                100.0,
                200.0,
                300.0,
                400.0,
                511.0,
                1023.0,
                2047.0,
                4095.0,
                8291.0,
                16000.0,
                32000.0,
                48000.0,
                64000.0,
                f64::INFINITY
            ],
            "{size}"
        );
    }

    // The block's chain.
    let enabled: BTreeSet<&str> = samples_named(&ms, "coredns_plugin_enabled")
        .iter()
        .map(|p| {
            assert_eq!(p.value, 1.0);
            assert_eq!(p.labels["server"], server);
            assert_eq!(p.labels["zone"], "example.org.");
            p.labels["name"].as_str()
        })
        .collect();
    assert_eq!(enabled, BTreeSet::from(["errors", "hosts", "prometheus"]), "{page}");

    // Process-wide.
    let build = samples_named(&ms, "coredns_build_info");
    assert_eq!(build.len(), 1);
    assert_eq!(build[0].value, 1.0);
    assert_eq!(build[0].labels["version"], env!("CARGO_PKG_VERSION"));
    assert!(!build[0].labels["revision"].is_empty() && build[0].labels["goversion"].starts_with("rustc "));
    assert_eq!(value(&ms, "coredns_panics_total", &[]), 0.0);
    assert_eq!(value(&ms, "coredns_reload_failed_total", &[]), 0.0);
    assert!(value(&ms, "coredns_health_request_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(value(&ms, "coredns_health_request_failures_total", &[]), 0.0);
    let health_les: Vec<f64> = samples_named(&ms, "coredns_health_request_duration_seconds_bucket")
        .iter()
        .map(|b| b.labels["le"].parse().unwrap())
        .collect();
    assert_eq!(health_les, [0.00025, 0.0025, 0.025, 0.25, 2.5, f64::INFINITY]);

    let rss = value(&ms, "process_resident_memory_bytes", &[]);
    let vsz = value(&ms, "process_virtual_memory_bytes", &[]);
    let fds = value(&ms, "process_open_fds", &[]);
    let max_fds = value(&ms, "process_max_fds", &[]);
    let cpu = value(&ms, "process_cpu_seconds_total", &[]);
    let started = value(&ms, "process_start_time_seconds", &[]);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(rss > 100_000.0 && rss < 2e9, "rss {rss}");
    assert!(vsz >= rss, "vsz {vsz} rss {rss}");
    assert!(fds >= 3.0 && fds <= max_fds, "fds {fds} of {max_fds}");
    assert!((0.0..60.0).contains(&cpu), "cpu {cpu}");
    assert!(
        started > now - 60.0 && started <= now + 1.0,
        "start {started}, now {now}"
    );
    for (n, kind) in [
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("coredns_dns_requests_total", "counter"),
        ("coredns_dns_responses_total", "counter"),
        ("coredns_build_info", "gauge"),
        ("coredns_reload_failed_total", "counter"),
    ] {
        assert!(
            samples_named(&ms, n).iter().all(|m| m.kind.as_str() == kind),
            "{n} should be a {kind}: {:?}",
            samples_named(&ms, n).first()
        );
    }
}

/// CoreDNS counts queries refused before the chain (no block for the name) with the
/// zone `dropped` and no plugin (reference 7.4).
#[test]

fn refused_queries_without_a_zone_are_counted_as_dropped() {
    let [m] = free_ports::<1>();
    let text = fill(
        "example.org:{port} {\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{M}\n    hosts {\n        10.0.0.1 a.example.org\n    }\n}\n",
        &[("M", &m.to_string())],
    );
    let s = Launch::new(&text).no_wait().start();
    wait_until("metrics endpoint", Duration::from_secs(10), || {
        http_get(m, "/metrics").is_ok()
    });
    for i in 0..3 {
        let r = udp_exchange(s.addr(), &query_bytes("www.example.com.", Rtype::A, Some(1232), i));
        assert_eq!(rcode(&r), Rcode::REFUSED);
    }
    let server = format!("dns://127.0.0.1:{}", s.port);
    let page = scrape(m);
    let want = [
        format!(
            "coredns_dns_requests_total{{server=\"{server}\",zone=\"dropped\",view=\"\",proto=\"udp\",family=\"1\",type=\"A\"}} 3"
        ),
        format!(
            "coredns_dns_responses_total{{server=\"{server}\",zone=\"dropped\",view=\"\",rcode=\"REFUSED\",plugin=\"\"}} 3"
        ),
    ];
    for w in want {
        assert!(page.lines().any(|l| l == w), "missing {w}\n{page}");
    }
}

/// CoreDNS's counters belong to the process: a reload does not reset them.
#[test]
fn query_counters_carry_on_across_a_reload() {
    let [m] = free_ports::<1>();
    let m_text = m.to_string();
    let template = "example.org:{port} {\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{M}\n    hosts {\n        {ip} a.example.org\n    }\n}\n";
    let s = Launch::new(&fill(template, &[("M", &m_text), ("ip", OLD_IP)]))
        .arg("-workers")
        .arg("2")
        .up();
    let ask = |want: &str, n: u16| {
        for i in 0..n {
            let r = udp_exchange(s.addr(), &query_bytes(NAME, Rtype::A, Some(1232), i));
            assert_eq!(section(&r, "answer"), [format!("{NAME} 3600 IN A {want}")]);
        }
    };
    ask(OLD_IP, 5);
    s.rewrite_corefile(&fill(template, &[("M", &m_text), ("ip", NEW_IP)]));
    usr1(&s, 1);
    s.wait_lines(SHA_LINE, 2, Duration::from_secs(5));
    ask(NEW_IP, 3);
    let ms = parse_metrics(&scrape(m));
    let server = format!("dns://127.0.0.1:{}", s.port);
    let base = [("server", server.as_str()), ("zone", "example.org."), ("view", "")];
    let requests = [
        base[0],
        base[1],
        base[2],
        ("proto", "udp"),
        ("family", "1"),
        ("type", "A"),
    ];
    assert_eq!(value(&ms, "coredns_dns_requests_total", &requests), 8.0);
    let responses = [base[0], base[1], base[2], ("rcode", "NOERROR"), ("plugin", "hosts")];
    assert_eq!(value(&ms, "coredns_dns_responses_total", &responses), 8.0);
}

/// The workers' socket counters: TCP accepted and turned away at the cap, UDP received.
#[test]
fn worker_socket_counters_show_tcp_rejections_and_udp_spread() {
    let [m] = free_ports::<1>();
    let text = fill(
        "example.org:{port} {\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{M}\n    hosts {\n        10.0.0.1 a.example.org\n    }\n}\n",
        &[("M", &m.to_string())],
    );
    let s = Launch::new(&text)
        .arg("-workers")
        .arg("1")
        .arg("-tcp.max-connections")
        .arg("4")
        .up();
    for i in 0..7 {
        udp_exchange(s.addr(), &query_bytes(NAME, Rtype::A, Some(1232), i));
    }
    // Four connections held open (each answered once, so each is accepted), then three
    // more: the worker is at its cap and closes them at once.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = std::net::TcpStream::connect(s.addr()).unwrap();
        write_frame(&mut c, &query_bytes(NAME, Rtype::A, None, 1));
        assert!(read_frame(&mut c).is_some());
        held.push(c);
    }
    for _ in 0..3 {
        let mut c = std::net::TcpStream::connect(s.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        assert!(matches!(std::io::Read::read(&mut c, &mut buf), Ok(0) | Err(_)));
    }
    let ms = parse_metrics(&scrape(m));
    let w0 = [("worker", "0")];
    assert_eq!(value(&ms, "clusterdns_tcp_connections_total", &w0), 4.0);
    assert_eq!(value(&ms, "clusterdns_tcp_rejected_total", &w0), 3.0);
    // The seven queries, and the SOA probes `up` sent while waiting for the start.
    assert!(value(&ms, "clusterdns_udp_queries_total", &w0) >= 7.0);
    assert_eq!(value(&ms, "clusterdns_udp_replies_dropped_total", &w0), 0.0);
    assert_eq!(value(&ms, "clusterdns_upstream_pending", &w0), 0.0);
    drop(held);
}

// ------------------------------------------------------------------------------------
// 7. Readiness with kubernetes

#[test]
fn ready_waits_for_the_kubernetes_sync_and_health_stays_up() {
    let api = FakeApi::with_objects(vec![
        namespace("default"),
        service("default", "kubernetes", "10.96.0.1", &[("https", 443, "TCP")]),
    ]);
    api.set_fault(Fault::Unavailable);
    let [h, r] = free_ports::<2>();
    let text = fill(
        ".:{port} {\n    bind 127.0.0.1\n    health 127.0.0.1:{H}\n    ready 127.0.0.1:{R}\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n        endpoint {URL}\n        backoff 50ms 500ms\n        startup_timeout 1s\n    }\n}\n",
        &[("H", &h.to_string()), ("R", &r.to_string()), ("URL", &api.url())],
    );
    let notify = NotifySocket::at_path();
    let spawned = Instant::now();
    let s = Launch::new(&text).env("NOTIFY_SOCKET", &notify.env).no_wait().start();
    s.wait_answering(".");
    notify.wait("READY=1", Duration::from_secs(5), |m| m.iter().any(|m| m == "READY=1"));
    let ready_at = notify.timed().iter().find(|(_, m)| m == "READY=1").unwrap().0;
    assert!(
        ready_at.duration_since(spawned) >= Duration::from_millis(950),
        "READY=1 {:?} after start, before startup_timeout passed",
        ready_at.duration_since(spawned)
    );
    // The line and READY=1 come from different threads: on a loaded machine the line
    // can reach the pipe a moment after the notification.
    assert!(
        s.wait_output(Duration::from_secs(5), |o| o
            .contains("starting server with unsynced Kubernetes API")),
        "{}",
        s.output()
    );

    // Unsynced: not ready, naming the plugin; alive.
    for _ in 0..5 {
        assert_eq!(http_get(r, "/ready"), Ok((503, "kubernetes".into())), "{}", s.output());
        assert_eq!(http_get(h, "/health"), ok_text("OK"));
        std::thread::sleep(Duration::from_millis(50));
    }
    for (port, path) in [
        (r, "/nope"),
        (h, "/nope"),
        (h, "/ready"),
        (r, "/health"),
        (h, "/metrics"),
    ] {
        let got = http_get(port, path);
        assert_eq!(got.as_ref().map(|g| g.0), Ok(404), "{port}{path}: {got:?}");
    }

    // The API heals: ready, and health was up all along.
    api.set_fault(Fault::None);
    let took = wait_until("/ready 200", Duration::from_secs(5), || {
        assert_eq!(http_get(h, "/health"), ok_text("OK"));
        match http_get(r, "/ready") {
            Ok((200, body)) => {
                assert_eq!(body, "OK");
                true
            }
            Ok((503, body)) => {
                assert_eq!(body, "kubernetes");
                false
            }
            other => panic!("/ready: {other:?}"),
        }
    });
    println!("ready {took:?} after the API healed");
    let r2 = s.query("kubernetes.default.svc.cluster.local.", Rtype::A);
    assert_eq!(
        section(&r2, "answer"),
        ["kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1"]
    );

    // Losing the API again does not make it unready: it keeps serving its data.
    api.set_fault(Fault::Unavailable);
    for _ in 0..10 {
        assert_eq!(http_get(r, "/ready"), ok_text("OK"));
        assert_eq!(http_get(h, "/health"), ok_text("OK"));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The only notification so far is READY=1 (no watchdog without WATCHDOG_USEC).
    assert_eq!(notify.messages(), ["READY=1"]);
}

// ------------------------------------------------------------------------------------
// 8. systemd notifications

#[test]
fn notify_socket_gets_ready_watchdog_reloading_and_stopping_in_order() {
    let notify = NotifySocket::at_path();
    let spawned = Instant::now();
    let mut s = Launch::new(&fill(HOSTS_COREFILE, &[("ip", OLD_IP)]))
        .env("NOTIFY_SOCKET", &notify.env)
        .env("WATCHDOG_USEC", "400000")
        .up();
    notify.wait("READY=1", Duration::from_secs(5), |m| !m.is_empty());
    assert_eq!(notify.messages()[0], "READY=1", "READY=1 first");
    let ready_at = notify.timed()[0].0;
    assert!(ready_at > spawned);
    // READY=1 means answering.
    assert!(answer_is(&udp_answer(&s), OLD_IP));

    // Watchdog pings every 200 ms (half of WATCHDOG_USEC).
    std::thread::sleep(Duration::from_millis(1100));
    let pings: Vec<Instant> = notify
        .timed()
        .iter()
        .filter(|(t, m)| m == "WATCHDOG=1" && *t <= ready_at + Duration::from_millis(1050))
        .map(|(t, _)| *t)
        .collect();
    println!("{} watchdog pings in the first second", pings.len());
    assert!(
        (2..=8).contains(&pings.len()),
        "{} pings in ~1 s, want about 5: {:?}",
        pings.len(),
        notify.messages()
    );
    assert_eq!(notify.states(), ["READY=1"]);

    // A whitespace-only edit is no reload: no RELOADING=1.
    s.rewrite_corefile(
        "# comment\nexample.org:{port} {\n  bind 127.0.0.1\n  hosts {\n    10.0.0.1 a.example.org\n  }\n}\n",
    );
    usr1(&s, 1);
    // (Let that check finish before the file changes again.)
    std::thread::sleep(Duration::from_millis(300));
    // A real change: RELOADING=1 (with the monotonic time) then READY=1.
    s.rewrite_corefile(&fill(HOSTS_COREFILE, &[("ip", NEW_IP)]));
    let before = monotonic_usec();
    usr1(&s, 2);
    notify.wait("READY=1 after the reload", Duration::from_secs(3), |_| {
        notify.states().len() >= 3
    });
    let after = monotonic_usec();
    let states = notify.states();
    assert_eq!(states.len(), 3, "{states:?}");
    let (first, usec) = states[1].split_once('\n').expect("two lines");
    assert_eq!(first, "RELOADING=1", "{states:?}");
    let usec: u64 = usec
        .strip_prefix("MONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("{usec:?}"))
        .parse()
        .unwrap();
    assert!(
        (before..=after).contains(&usec),
        "MONOTONIC_USEC={usec} not between {before} and {after}"
    );
    assert_eq!(states[2], "READY=1");
    assert!(
        answer_is(&udp_answer(&s), NEW_IP),
        "READY=1 after the new configuration serves"
    );
    // Still pinging after the reload.
    let n = notify.messages().len();
    notify.wait("watchdog after the reload", Duration::from_secs(1), |m| {
        m.len() > n && m[n..].iter().any(|m| m == "WATCHDOG=1")
    });

    // SIGTERM: STOPPING=1, and it is the last message.
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0), "{}", s.output());
    std::thread::sleep(Duration::from_millis(300));
    let all = notify.messages();
    assert_eq!(all.last().map(String::as_str), Some("STOPPING=1"), "{all:?}");
    assert_eq!(
        notify.states(),
        ["READY=1", states[1].as_str(), "READY=1", "STOPPING=1"]
    );
}

#[test]
fn notify_socket_in_the_abstract_namespace_gets_ready() {
    let notify = NotifySocket::abstract_name();
    let mut s = Launch::new(&fill(HOSTS_COREFILE, &[("ip", OLD_IP)]))
        .env("NOTIFY_SOCKET", &notify.env)
        .up();
    notify.wait("READY=1", Duration::from_secs(5), |m| !m.is_empty());
    assert_eq!(notify.messages(), ["READY=1"]);
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0));
    notify.wait("STOPPING=1", Duration::from_secs(1), |m| m.len() >= 2);
    assert_eq!(notify.messages(), ["READY=1", "STOPPING=1"]);
    assert!(!s.output().contains("sd_notify"), "{}", s.output());
}

// ------------------------------------------------------------------------------------
// 9. Signals

#[test]
fn sighup_neither_stops_nor_reloads() {
    let [r] = free_ports::<1>();
    let template = "example.org:{port} {\n    bind 127.0.0.1\n    ready 127.0.0.1:{R}\n    hosts {\n        {ip} a.example.org\n    }\n}\n";
    let r_text = r.to_string();
    let mut s = Launch::new(&fill(template, &[("R", &r_text), ("ip", OLD_IP)])).up();
    s.rewrite_corefile(&fill(template, &[("R", &r_text), ("ip", NEW_IP)]));
    for _ in 0..2 {
        s.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(s.child.try_wait().unwrap(), None, "still running after SIGHUP");
    assert!(answer_is(&udp_answer(&s), OLD_IP), "SIGHUP reloaded");
    assert!(answer_is(&tcp_query(s.addr(), NAME), OLD_IP));
    assert_eq!(http_get(r, "/ready"), ok_text("OK"));
    assert_eq!(sha_lines(&s).len(), 1, "{}", s.output());
    // The change was there to be applied: SIGUSR1 does.
    usr1(&s, 1);
    wait_until("the new answer", Duration::from_secs(2), || {
        answer_is(&udp_answer(&s), NEW_IP)
    });
}

#[test]
fn sigint_is_graceful_and_a_second_sigint_exits_at_once_with_status_2() {
    let [h1, r1, m1, h2, r2, m2] = free_ports::<6>();
    let corefile = |h: u16, r: u16, m: u16, lameduck: &str| {
        fill(
            ENDPOINTS_COREFILE,
            &[
                ("H", &h.to_string()),
                ("R", &r.to_string()),
                ("M", &m.to_string()),
                ("lameduck", lameduck),
                ("ip", OLD_IP),
            ],
        )
    };
    let mut once = Launch::new(&corefile(h1, r1, m1, "1s")).up();
    let mut twice = Launch::new(&corefile(h2, r2, m2, "10s")).up();

    let t1 = Instant::now();
    once.signal(libc::SIGINT);
    let t2 = Instant::now();
    twice.signal(libc::SIGINT);
    for (r, s) in [(r1, &once), (r2, &twice)] {
        wait_until("/ready 503 after SIGINT", Duration::from_secs(1), || {
            http_get(r, "/ready") == Ok((503, "Shutting down".into()))
        });
        assert!(answer_is(&udp_answer(s), OLD_IP), "answering during the lameduck");
    }
    twice.wait_lines("SIGINT received", 1, Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(200));
    // The second SIGINT: out at once, status 2, long before the 10 s lameduck ends.
    let again = Instant::now();
    twice.signal(libc::SIGINT);
    let code = twice.wait_exit(Duration::from_secs(3));
    let took = again.elapsed();
    assert_eq!(code, Some(2), "{}", twice.output());
    assert!(took < Duration::from_secs(1), "second SIGINT took {took:?}");
    assert!(t2.elapsed() < Duration::from_secs(5));
    assert!(twice.output().contains("SIGINT: force quit"), "{}", twice.output());

    // One SIGINT: graceful, after the 1 s lameduck, status 0.
    let code = once.wait_exit(Duration::from_secs(5));
    let took = t1.elapsed();
    assert_eq!(code, Some(0), "{}", once.output());
    assert!(
        took >= Duration::from_millis(950),
        "exited {took:?} after SIGINT, lameduck 1s"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn sigquit_exits_at_once_with_status_0_even_during_a_lameduck() {
    let [h1, r1, m1, h2, r2, m2] = free_ports::<6>();
    let corefile = |h: u16, r: u16, m: u16| {
        fill(
            ENDPOINTS_COREFILE,
            &[
                ("H", &h.to_string()),
                ("R", &r.to_string()),
                ("M", &m.to_string()),
                ("lameduck", "10s"),
                ("ip", OLD_IP),
            ],
        )
    };
    let mut running = Launch::new(&corefile(h1, r1, m1)).up();
    let mut stopping = Launch::new(&corefile(h2, r2, m2)).up();

    let t = Instant::now();
    running.signal(libc::SIGQUIT);
    assert_eq!(
        running.wait_exit(Duration::from_secs(3)),
        Some(0),
        "{}",
        running.output()
    );
    assert!(t.elapsed() < Duration::from_secs(1), "SIGQUIT took {:?}", t.elapsed());
    assert!(
        running
            .raw_udp(&query_bytes(NAME, Rtype::A, None, 1), Duration::from_millis(300))
            .is_none()
    );
    assert!(refused(h1) && refused(r1) && refused(m1));

    stopping.signal(libc::SIGTERM);
    wait_until("/ready 503 after SIGTERM", Duration::from_secs(1), || {
        http_get(r2, "/ready") == Ok((503, "Shutting down".into()))
    });
    let t = Instant::now();
    stopping.signal(libc::SIGQUIT);
    assert_eq!(
        stopping.wait_exit(Duration::from_secs(3)),
        Some(0),
        "{}",
        stopping.output()
    );
    assert!(t.elapsed() < Duration::from_secs(1), "SIGQUIT took {:?}", t.elapsed());
    assert!(refused(h2) && refused(r2) && refused(m2));
}

// ------------------------------------------------------------------------------------
// 10. HTTP endpoints through reloads

#[test]
fn http_endpoints_keep_answering_through_reloads() {
    let [h, r, m, m2] = free_ports::<4>();
    let vars = |ip: &'static str, m: u16| -> String {
        fill(
            ENDPOINTS_COREFILE,
            &[
                ("H", &h.to_string()),
                ("R", &r.to_string()),
                ("M", &m.to_string()),
                ("lameduck", "1s"),
                ("ip", ip),
            ],
        )
    };
    let s = Launch::new(&vars(OLD_IP, m)).arg("-workers").arg("2").up();
    let poller = HttpPoller::start(vec![(h, "/health"), (r, "/ready"), (m, "/metrics")]);
    std::thread::sleep(Duration::from_millis(200));
    for (i, ip) in [NEW_IP, OLD_IP, NEW_IP].into_iter().enumerate() {
        s.rewrite_corefile(&vars(ip, m));
        usr1(&s, i + 1);
        s.wait_lines(SHA_LINE, i + 2, Duration::from_secs(3));
        wait_until("the new answer", Duration::from_secs(2), || {
            answer_is(&udp_answer(&s), ip)
        });
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = poller.finish();
    let rounds = seen.len() / 3;
    println!("{rounds} rounds of GETs through 3 reloads");
    assert!(rounds >= 20, "only {rounds} rounds");
    for (at, port, path, got) in &seen {
        let ok = match *path {
            "/metrics" => matches!(got, Ok((200, body)) if body.contains("\ncoredns_build_info{")),
            _ => *got == ok_text("OK"),
        };
        assert!(ok, "{port}{path} at {:?}: {got:?}\n{}", at.elapsed(), s.output());
    }

    // Moving the metrics endpoint: the new address opens, the old one closes, the
    // others stay.
    s.rewrite_corefile(&vars(NEW_IP, m2));
    usr1(&s, 4);
    s.wait_lines(SHA_LINE, 5, Duration::from_secs(3));
    wait_until("metrics on the new port", Duration::from_secs(2), || {
        matches!(http_get(m2, "/metrics"), Ok((200, _)))
    });
    wait_until("the old metrics port closed", Duration::from_secs(2), || refused(m));
    assert_eq!(http_get(h, "/health"), ok_text("OK"));
    assert_eq!(http_get(r, "/ready"), ok_text("OK"));
}
