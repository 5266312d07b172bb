//! The `rrl` plugin end to end: a flood from one source is limited (dropped, or slipped
//! as TC=1 so that real clients retry over TCP), another source on the same server is
//! served normally, TCP is never limited, and the counters say what happened.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use domain::base::{Message, Rtype};

use testkit::prelude::*;

/// A server for `www.example.org` (an answer) with `rrl OPTIONS` and metrics on a port
/// of its own; returns it and the metrics port.
fn limited(options: &str) -> (Server, u16) {
    let metrics = free_port();
    let corefile = format!(
        "example.org:{{port}} {{\n  rrl {{\n{options}\n  }}\n  prometheus 127.0.0.1:{metrics}\n  hosts {{\n    192.0.2.1 www.example.org\n  }}\n}}\n"
    );
    let s = Launch::new(&corefile).no_wait().start();
    s.wait_answering("www.example.org");
    (s, metrics)
}

/// What a burst of `n` UDP queries for `www.example.org` from `source` got back.
#[derive(Debug, Default)]
struct Burst {
    full: usize,
    truncated: usize,
    other: usize,
}

impl Burst {
    fn replies(&self) -> usize {
        self.full + self.truncated + self.other
    }
}

/// Sends `n` queries as fast as the socket takes them (distinct IDs) while a second
/// thread reads the replies (a burst of replies would overflow an unread socket's
/// buffer), until 300 ms pass without one.
fn burst(server: SocketAddr, source: &str, n: u16) -> Burst {
    burst_of(server, source, n, |id| {
        query_bytes("www.example.org", Rtype::A, Some(1232), id)
    })
}

/// [`burst`] with the queries `query(id)` makes.
fn burst_of(server: SocketAddr, source: &str, n: u16, query: impl Fn(u16) -> Vec<u8>) -> Burst {
    let sock = UdpSocket::bind((source, 0)).expect("bind the source address");
    // Room for every reply, whoever gets the CPU first: the sender or the reader.
    let size: libc::c_int = 1 << 20;
    // SAFETY: setsockopt on a socket we own, with a c_int value of the right length.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let reader = sock.try_clone().unwrap();
    let replies = std::thread::spawn(move || {
        let mut b = Burst::default();
        let mut buf = [0u8; 2048];
        let end = Instant::now() + Duration::from_secs(10);
        while let Ok((len, _)) = reader.recv_from(&mut buf) {
            let msg = Message::from_octets(buf[..len].to_vec()).expect("reply parses");
            match (msg.header().tc(), counts(&msg).1) {
                (false, 1) => b.full += 1,
                (true, 0) => b.truncated += 1,
                _ => b.other += 1,
            }
            if Instant::now() > end {
                break;
            }
        }
        b
    });
    for id in 0..n {
        sock.send_to(&query(id), server).unwrap();
    }
    replies.join().unwrap()
}

/// The rrl counters from `/metrics`, by name without the `coredns_rrl_` prefix.
fn counters(metrics: u16) -> HashMap<String, f64> {
    let (_, body) = http_get(metrics, "/metrics").expect("scrape");
    body.lines()
        .filter_map(|l| l.strip_prefix("coredns_rrl_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let name = name.split('{').next()?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn a_flood_from_one_prefix_is_limited_and_slipped_while_another_is_served() {
    let (s, metrics) = limited("    responses-per-second 10\n    window 5");
    let started = Instant::now();
    let flood = burst(s.addr(), "127.0.0.1", 300);
    let elapsed = started.elapsed().as_secs_f64();
    // One second's allowance, plus what the time the burst took earned (10/s), plus
    // the answer the start-up probe already took from it.
    let allowed = 10.0 + 10.0 * elapsed;
    assert!(
        flood.full >= 9 && (flood.full as f64) <= allowed + 1.0,
        "{flood:?} in {elapsed:.2}s"
    );
    assert_eq!(flood.other, 0, "{flood:?}");
    // slip-ratio 2: every second response over the limit goes out as TC=1, the rest not at all.
    let over = 300 - flood.full;
    assert!(flood.truncated.abs_diff(over / 2) <= 2, "{flood:?}");
    // Another /24 (127.0.1.x) has an account of its own, untouched by the flood.
    let other = burst(s.addr(), "127.0.1.1", 8);
    assert_eq!((other.full, other.replies()), (8, 8), "{other:?}");
    // TCP is never limited: the flooding source still gets its answer there.
    let q = query_bytes("www.example.org", Rtype::A, None, 7);
    for _ in 0..20 {
        let reply = tcp_exchange(s.addr(), &q);
        assert_eq!(section(&reply, "answer").len(), 1);
    }
    let c = counters(metrics);
    assert_eq!(c.get("responses_exceeded_total").copied(), Some(over as f64), "{c:?}");
    assert_eq!(
        c.get("responses_slipped_total").copied(),
        Some(flood.truncated as f64),
        "{c:?}"
    );
    assert_eq!(c.get("requests_exceeded_total").copied(), Some(0.0), "{c:?}");
}

#[test]
#[ignore = "needs dig (bind9-dnsutils); .ci/run runs it: cargo test --locked -- --ignored"]
fn dig_gets_its_answer_over_tcp_after_a_slip() {
    testkit::tools::require_dig();
    // slip-ratio 1: every response over the limit is slipped, none dropped.
    let (s, _) = limited("    responses-per-second 1\n    slip-ratio 1\n    window 60");
    let flood = burst(s.addr(), "127.0.0.1", 50);
    assert!(flood.truncated >= 45, "{flood:?}");
    let port = s.port.to_string();
    let out = testkit::tools::dig(&[
        "@127.0.0.1",
        "-p",
        &port,
        "-b",
        "127.0.0.1",
        "www.example.org",
        "A",
        "+tries=1",
    ]);
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert!(out.contains("www.example.org.\t3600\tIN\tA\t192.0.2.1"), "{out}");
}

#[test]
fn requests_per_second_drops_queries_beyond_the_limit_without_slipping() {
    let (s, metrics) = limited("    requests-per-second 20\n    window 5");
    let flood = burst(s.addr(), "127.0.0.1", 200);
    assert!(flood.replies() >= 15 && flood.replies() <= 40, "{flood:?}");
    assert_eq!(flood.truncated, 0, "{flood:?}");
    let c = counters(metrics);
    let exceeded = c.get("requests_exceeded_total").copied().unwrap_or(0.0);
    assert_eq!(exceeded as usize, 200 - flood.replies(), "{c:?}");
}

#[test]
fn report_only_counts_without_limiting() {
    let (s, metrics) = limited("    responses-per-second 5\n    report-only");
    let flood = burst(s.addr(), "127.0.0.1", 100);
    assert_eq!((flood.full, flood.replies()), (100, 100), "{flood:?}");
    let c = counters(metrics);
    assert!(
        c.get("responses_exceeded_total").copied().unwrap_or(0.0) >= 80.0,
        "{c:?}"
    );
}

#[test]
fn without_rrl_nothing_is_limited() {
    let s = Launch::new("example.org:{port} {\n  hosts {\n    192.0.2.1 www.example.org\n  }\n}\n")
        .no_wait()
        .start();
    s.wait_answering("www.example.org");
    let flood = burst(s.addr(), "127.0.0.1", 300);
    assert_eq!(flood.full, 300, "{flood:?}");
}

/// `www.example.org` A with EDNS and a COOKIE option holding `cookie`.
fn with_cookie(id: u16, cookie: &[u8]) -> Vec<u8> {
    let mut q = query_bytes("www.example.org", Rtype::A, Some(1232), id);
    // The OPT record is last and has no options: its rdata length is the last field.
    q.truncate(q.len() - 2);
    q.extend_from_slice(&((4 + cookie.len()) as u16).to_be_bytes());
    q.extend_from_slice(&[0, 10]);
    q.extend_from_slice(&(cookie.len() as u16).to_be_bytes());
    q.extend_from_slice(cookie);
    q
}

/// The client and server cookie `server` gives `source` for client cookie `cc`: the
/// last 28 bytes of the reply are the COOKIE option (code, length, 24 bytes of data).
fn learn_cookie(server: SocketAddr, source: &str, cc: [u8; 8]) -> Vec<u8> {
    let sock = UdpSocket::bind((source, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(&with_cookie(1, &cc), server).unwrap();
    let mut buf = [0u8; 2048];
    let (len, _) = sock.recv_from(&mut buf).expect("a reply");
    let tail = &buf[len - 28..len];
    assert_eq!(&tail[..4], &[0, 10, 0, 24], "no COOKIE option at the end of the reply");
    assert_eq!(&tail[4..12], &cc);
    tail[4..].to_vec()
}

/// `f`'s result and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    (f(), t.elapsed())
}

/// The most full answers a limited burst can get at 2 per second: one second's
/// allowance, what the burst's duration earned, one for rounding.
fn limit(took: Duration) -> usize {
    (2.0 + 2.0 * took.as_secs_f64()).ceil() as usize + 1
}

#[test]
fn a_client_with_a_valid_server_cookie_is_not_limited() {
    let secret = "000102030405060708090a0b0c0d0e0f";
    let corefile = |metrics: u16| {
        format!(
            "example.org:{{port}} {{\n  rrl {{\n    responses-per-second 2\n    window 5\n  }}\n  prometheus 127.0.0.1:{metrics}\n  hosts {{\n    192.0.2.1 www.example.org\n  }}\n}}\n"
        )
    };
    let start = |secret: Option<&str>| {
        let metrics = free_port();
        let text = corefile(metrics);
        let mut launch = Launch::new(&text).no_wait();
        if let Some(secret) = secret {
            launch = launch.env("CLUSTERDNS_COOKIE_SECRET", secret);
        }
        let s = launch.start();
        s.wait_answering("www.example.org");
        (s, metrics)
    };
    let (s, metrics) = start(Some(secret));
    let cc = [9, 8, 7, 6, 5, 4, 3, 2];
    let cookie = learn_cookie(s.addr(), "127.0.0.1", cc);

    // Its own valid cookie: a source proven not spoofed gets every answer.
    let proven = burst_of(s.addr(), "127.0.0.1", 200, |id| with_cookie(id, &cookie));
    assert_eq!((proven.full, proven.replies()), (200, 200), "{proven:?}");
    // Only a client cookie (as at first contact), or none: limited as before.
    let (first, took) = timed(|| burst_of(s.addr(), "127.0.0.1", 200, |id| with_cookie(id, &cc)));
    assert!(first.full <= limit(took), "{first:?} in {took:?}");
    assert_eq!(
        counters(metrics).get("responses_exceeded_total").copied(),
        Some((200 - first.full) as f64)
    );
    // The cookie is bound to the address it was given to: another source presenting
    // it (an attacker who saw it) is limited.
    let (stolen, took) = timed(|| burst_of(s.addr(), "127.0.1.1", 200, |id| with_cookie(id, &cookie)));
    assert!(stolen.full <= limit(took), "{stolen:?} in {took:?}");

    // A replica with the same secret accepts the cookie; one with its own does not.
    let (twin, _) = start(Some(secret));
    let shared = burst_of(twin.addr(), "127.0.0.1", 200, |id| with_cookie(id, &cookie));
    assert_eq!(shared.full, 200, "{shared:?}");
    let (stranger, _) = start(None);
    let (other, took) = timed(|| burst_of(stranger.addr(), "127.0.0.1", 200, |id| with_cookie(id, &cookie)));
    assert!(other.full <= limit(took), "{other:?} in {took:?}");
}

#[test]
fn a_malformed_cookie_secret_stops_the_start() {
    let out = std::process::Command::new(binary())
        .args(["-conf", "/nonexistent/Corefile"])
        .env("CLUSTERDNS_COOKIE_SECRET", "not-hex")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CLUSTERDNS_COOKIE_SECRET: want 32 hexadecimal digits"),
        "{err}"
    );
}
