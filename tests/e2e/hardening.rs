//! Hardening (issue 7): the fault cases. The real binary on 127.0.0.1 is driven through
//! overload (UDP well over its capacity; forwarded queries beyond its pending-upstream
//! table), TCP abuse (idle floods, half-sent length prefixes, slow readers, connection
//! floods) and a misbehaving Kubernetes API (huge objects, endless streams, malformed
//! JSON, silence: the test kit's fake API in its abusive modes), and each case checks
//! that nothing was lost or crashed: the process is up, memory and descriptors
//! (`/proc/PID/status`, `/proc/PID/fd`) stay bounded and come back, and DNS keeps
//! answering correctly.
//!
//! Each case is a test of its own (`hardening::fault_...`, and the `hardening_*` files'
//! for issue 16): `cargo test --test e2e hardening` runs them all, one at a time (the
//! kit's fault lock: their load must not mix), and each prints one report line with its
//! figures (`-- --nocapture` shows them). `CLUSTERDNS_FAULT_TRACE=1` also prints the RSS
//! samples of the API cases and the answers per second of the UDP overload.
//!
//! Every load loop is bounded in count and time, every process is stopped by its guard
//! (the server's, the fake API's), and every socket is on loopback.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use domain::base::iana::{Rcode, Rtype};
use testkit::api::Abuse;
use testkit::check;
use testkit::fault::{Outcome, ms, run_case};
use testkit::load::{Load, Names, ProbeStats, Prober, probe_once, rcode_counts, set_sockopt};
use testkit::prelude::*;
use testkit::procfs::{RssTrace, alive, fd_count, fds_back, mib, rss_kb, settled_fds, tcp_unread, udp_drops};
use testkit::wire::{framed, query as wire_query, reply_header};

// ------------------------------------------------------------------------------------
// The cases, one test each

#[test]
fn fault_tcp_idle_flood() {
    run_case("tcp idle flood", tcp_idle_flood);
}

#[test]
fn fault_tcp_half_sent_prefixes() {
    run_case("tcp half-sent prefixes", tcp_half_sent);
}

#[test]
fn fault_tcp_slow_readers() {
    run_case("tcp slow readers", tcp_slow_readers);
}

#[test]
fn fault_tcp_backlogged_readers() {
    run_case("tcp backlogged readers", tcp_backlogged_readers);
}

#[test]
fn fault_tcp_connection_flood() {
    run_case("tcp connection flood", tcp_connection_flood);
}

#[test]
fn fault_api_huge_watch_line() {
    run_case("api huge watch line", || api_case(Abuse::HugeWatchLine));
}

#[test]
fn fault_api_huge_list_object() {
    run_case("api huge list object", || api_case(Abuse::HugeListItem));
}

#[test]
fn fault_api_endless_watch_stream() {
    run_case("api endless watch stream", || api_case(Abuse::EndlessWatch));
}

#[test]
fn fault_api_endless_list() {
    run_case("api endless list", || api_case(Abuse::EndlessList));
}

#[test]
fn fault_api_malformed_json() {
    run_case("api malformed json", || api_case(Abuse::Malformed));
}

#[test]
fn fault_api_silent_and_trickling() {
    run_case("api silent and trickling", || api_case(Abuse::Slow));
}

#[test]
fn fault_forward_overload() {
    run_case("forward overload", forward_overload);
}

#[test]
fn fault_udp_overload() {
    run_case("udp overload", udp_overload);
}

#[test]
fn fault_udp_flood_then_sigterm() {
    run_case("udp flood then sigterm", udp_flood_sigterm);
}

// ------------------------------------------------------------------------------------
// Fixtures

/// Services every API-backed server resolves: (name, address).
const ANCHORS: [(&str, &str); 3] = [
    ("kubernetes.default.svc.cluster.local.", "10.96.0.1"),
    ("kube-dns.kube-system.svc.cluster.local.", "10.96.0.10"),
    ("web.team-a.svc.cluster.local.", "10.96.1.1"),
];

/// A server block with the kubernetes plugin on `@URL`, health, ready and metrics.
const KUBE_COREFILE: &str = ".:{port} {
    bind 127.0.0.1
    health 127.0.0.1:@H
    ready 127.0.0.1:@R
    prometheus 127.0.0.1:@M
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        endpoint @URL
        backoff 50ms 500ms
        idle_timeout 2s
    }
}
";

struct KubeServer {
    server: Server,
    health: u16,
    ready: u16,
    metrics: u16,
}

fn kube_server(url: &str, args: &[&str]) -> Result<KubeServer, String> {
    let (health, ready, metrics) = (free_port(), free_port(), free_port());
    let text = KUBE_COREFILE
        .replace("@H", &health.to_string())
        .replace("@R", &ready.to_string())
        .replace("@M", &metrics.to_string())
        .replace("@URL", url);
    let mut launch = Launch::new(&text);
    for a in args {
        launch = launch.arg(*a);
    }
    let server = launch.start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t = Instant::now();
    let (name, want) = ANCHORS[0];
    while probe_once(&sock, server.addr(), 1, name, want, Duration::from_millis(200)).is_err() {
        check!(
            t.elapsed() < Duration::from_secs(15),
            "never synced:\n{}",
            server.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    while http_get(health, "/health").is_err() || http_get(metrics, "/metrics").is_err() {
        check!(t.elapsed() < Duration::from_secs(5), "health or metrics never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(KubeServer {
        server,
        health,
        ready,
        metrics,
    })
}

/// /health, /ready and /metrics all answer 200; returns the metrics text.
fn endpoints_up(k: &KubeServer) -> Result<String, String> {
    let h = http_get(k.health, "/health")?;
    check!(h.0 == 200, "/health: {h:?}");
    let r = http_get(k.ready, "/ready")?;
    check!(r.0 == 200, "/ready: {r:?}");
    let m = http_get(k.metrics, "/metrics")?;
    check!(
        m.0 == 200 && m.1.contains("coredns_dns_requests_total"),
        "/metrics: {}",
        m.0
    );
    Ok(m.1)
}

/// A hosts-only server for the TCP cases: `a.example.org` is 192.0.2.1, and
/// `big.example.org` has 400 addresses (a 6.4 KB answer over TCP), `mid.example.org`
/// 100 (1.6 KB).
fn tcp_server(read: &str, write: &str, idle: &str, cap: usize) -> Result<(Server, usize), String> {
    let mut big = String::new();
    for i in 0..400 {
        big.push_str(&format!("        10.1.{}.{} big.example.org\n", i / 200, i % 200 + 1));
    }
    for i in 0..100 {
        big.push_str(&format!("        10.2.0.{} mid.example.org\n", i + 1));
    }
    let text = format!(
        "example.org:{{port}} {{\n    bind 127.0.0.1\n    timeouts {{\n        read {read}\n        write {write}\n        idle {idle}\n    }}\n    hosts {{\n        192.0.2.1 a.example.org\n{big}    }}\n}}\n"
    );
    let s = Launch::new(&text)
        .arg("-workers")
        .arg("2")
        .arg("-tcp.max-connections")
        .arg(cap.to_string())
        .start();
    let r = s.query_tcp("a.example.org.", Rtype::A);
    check!(
        section(&r, "answer") == ["a.example.org. 3600 IN A 192.0.2.1"],
        "TCP answer: {:?}",
        section(&r, "answer")
    );
    let base = settled_fds(s.pid());
    Ok((s, base))
}

const A_PROBE: [(&str, &str); 1] = [("a.example.org.", "192.0.2.1")];

fn connect(to: SocketAddr) -> io::Result<TcpStream> {
    TcpStream::connect_timeout(&to, Duration::from_secs(2))
}

/// A connection whose receive buffer is `rcvbuf` bytes, set before the handshake so the
/// window never grows.
fn connect_small_window(to: SocketAddr, rcvbuf: i32) -> io::Result<TcpStream> {
    // SAFETY: a new socket, owned by the TcpStream built from it below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: we own `fd`; the TcpStream closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    set_sockopt(fd, libc::SO_RCVBUF, rcvbuf);
    let SocketAddr::V4(v4) = to else {
        return Err(io::Error::other("IPv4 only"));
    };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: connect with a pointer to a live sockaddr_in of the size given.
    let rc = unsafe {
        libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

/// Closes with a reset (SO_LINGER 0) instead of a FIN.
fn reset(s: TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a pointer to a live linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// Whether the server still holds the connection open: nothing (would block) or data to
/// read, rather than EOF or a reset.
fn is_open(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let open = match s.peek(&mut b) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    open
}

/// `name` A over a new TCP connection: the time to an answer, or why there was none
/// within 1 s.
fn tcp_probe(to: SocketAddr, id: u16, name: &str) -> Result<Duration, String> {
    let t = Instant::now();
    let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(1)).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    c.write_all(&framed(&wire_query(name, 1, id, None)))
        .map_err(|e| format!("write: {e}"))?;
    let reply = read_frame(&mut c).ok_or("no reply within 1 s")?;
    match reply_header(&reply) {
        Some((rid, 0, an)) if rid == id && an > 0 => Ok(t.elapsed()),
        other => Err(format!("reply (id, rcode, answers) {other:?}")),
    }
}

// ------------------------------------------------------------------------------------
// TCP abuse

/// Many idle connections: the per-worker cap holds (the rest are closed at once), the
/// idle timeout closes the held ones, UDP is unaffected, every descriptor comes back.
fn tcp_idle_flood() -> Outcome {
    let cap = 40;
    let (s, base) = tcp_server("1s", "1s", "2s", cap)?;
    let pid = s.pid();
    let prober = Prober::start(s.addr(), &A_PROBE, Duration::from_millis(10));
    let n = 300;
    let mut conns = Vec::new();
    let mut failed = 0;
    let opened = Instant::now();
    for _ in 0..n {
        match connect(s.addr()) {
            Ok(c) => conns.push(c),
            Err(_) => failed += 1,
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let held = conns.iter().filter(|c| is_open(c)).count();
    let fds_full = fd_count(pid);
    check!(
        held <= 2 * cap && held >= cap,
        "{held} of {n} connections held open, want between {cap} (one worker full) and {} (the cap of both workers); {failed} connects failed",
        2 * cap
    );
    check!(
        fds_full <= base + 2 * cap + 2,
        "server holds {} descriptors with {held} connections open (base {base})",
        fds_full
    );
    // The held ones are closed by the idle timeout (2 s after accept).
    let t = Instant::now();
    while conns.iter().any(is_open) && t.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let still = conns.iter().filter(|c| is_open(c)).count();
    check!(
        still == 0,
        "{still} idle connections still open 6s after the idle timeout"
    );
    let idle_closed = opened.elapsed();
    let back = fds_back(pid, base, Duration::from_secs(3))
        .map_err(|n| format!("server descriptors stuck at {n} (base {base}) after the idle timeout"))?;
    let fds_after = fd_count(pid);
    drop(conns);
    let probes = prober.stop();
    probes.clean(Duration::from_millis(250))?;
    let r = s.query_tcp("a.example.org.", Rtype::A);
    check!(rcode(&r) == Rcode::NOERROR, "TCP after the flood: {}", rcode(&r));
    check!(alive(pid), "server died");
    Ok(format!(
        "{n} idle conns opened ({failed} connect errors), {held} held (cap {cap}/worker x 2 workers), {} closed at once; held ones closed by the 2s idle timeout {:.1}s after opening; server fds {base} -> {fds_full} -> {fds_after} ({:.0}ms after the last close); {}; TCP answers after",
        n - held - failed,
        idle_closed.as_secs_f64(),
        ms(back),
        probes.summary()
    ))
}

/// Half-sent length prefixes, announced-but-short messages, a whole query followed by
/// half a prefix, and byte-by-byte trickles: the read timeout (1 s; idle is 10 s)
/// closes them all, the whole query is answered first, UDP is unaffected.
fn tcp_half_sent() -> Outcome {
    let (s, base) = tcp_server("1s", "5s", "10s", 100)?;
    let pid = s.pid();
    let prober = Prober::start(s.addr(), &A_PROBE, Duration::from_millis(10));
    let query = framed(&wire_query("a.example.org", 1, 7, None));
    let mut conns: Vec<(TcpStream, &str, Instant)> = Vec::new();
    for i in 0..40 {
        let mut c = connect(s.addr()).map_err(|e| format!("connect: {e}"))?;
        c.set_nodelay(true).unwrap();
        let kind = ["half prefix", "short message", "query + half prefix", "trickle"][i % 4];
        match kind {
            "half prefix" => c.write_all(&[0]).unwrap(),
            "short message" => {
                c.write_all(&[0, 60]).unwrap();
                c.write_all(&[0xAB; 10]).unwrap();
            }
            "query + half prefix" => {
                let mut b = query.clone();
                b.push(0);
                c.write_all(&b).unwrap();
            }
            _ => c.write_all(&query[..1]).unwrap(),
        }
        conns.push((c, kind, Instant::now()));
    }
    // The whole queries are answered before the connection is dropped.
    let mut answered = 0;
    for (c, kind, _) in conns.iter_mut() {
        if *kind == "query + half prefix" {
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            if read_frame(c)
                .and_then(|r| reply_header(&r))
                .is_some_and(|h| h.0 == 7 && h.1 == 0)
            {
                answered += 1;
            }
        }
    }
    check!(
        answered == 10,
        "{answered}/10 whole queries answered before the half prefix"
    );
    // Trickle one more byte every 300 ms; note when each connection gets closed.
    let mut closed: Vec<Option<Duration>> = vec![None; conns.len()];
    let mut next_byte = vec![1usize; conns.len()];
    let t = Instant::now();
    let mut last_trickle = Instant::now();
    while closed.iter().any(Option::is_none) && t.elapsed() < Duration::from_secs(6) {
        let trickle = last_trickle.elapsed() >= Duration::from_millis(300);
        if trickle {
            last_trickle = Instant::now();
        }
        for (i, (c, kind, since)) in conns.iter_mut().enumerate() {
            if closed[i].is_some() {
                continue;
            }
            if *kind == "trickle" && trickle && next_byte[i] < query.len() {
                let _ = c.write_all(&query[next_byte[i]..next_byte[i] + 1]);
                next_byte[i] += 1;
            }
            if !is_open(c) {
                closed[i] = Some(since.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let open = closed.iter().filter(|c| c.is_none()).count();
    check!(
        open == 0,
        "{open} of 40 partial connections still open after 6s (read timeout 1s)"
    );
    let slowest = closed.iter().flatten().max().copied().unwrap_or_default();
    check!(
        slowest < Duration::from_millis(3500),
        "slowest partial connection closed after {slowest:?}: not the 1s read timeout"
    );
    let back = fds_back(pid, base, Duration::from_secs(3))
        .map_err(|n| format!("server descriptors stuck at {n} (base {base})"))?;
    drop(conns);
    let probes = prober.stop();
    probes.clean(Duration::from_millis(250))?;
    let r = s.query_tcp("a.example.org.", Rtype::A);
    check!(rcode(&r) == Rcode::NOERROR, "TCP after: {}", rcode(&r));
    check!(alive(pid), "server died");
    Ok(format!(
        "40 conns (10 each: half a length prefix, 60-byte message cut at 10, whole query + half prefix, 1 byte/300ms trickle): 10/10 whole queries answered, all closed by the 1s read timeout (slowest {:.1}s; idle is 10s); fds back to {base} ({:.0}ms); {}",
        slowest.as_secs_f64(),
        ms(back),
        probes.summary()
    ))
}

/// Clients that pipeline queries with big answers and never read them (and some that
/// read a trickle, then stop): the server stops reading from them, its buffered output
/// stays bounded, and the write timeout (1 s) closes them all.
fn tcp_slow_readers() -> Outcome {
    let (s, base) = tcp_server("10s", "1s", "10s", 100)?;
    let pid = s.pid();
    let big = s.query_tcp("mid.example.org.", Rtype::A);
    check!(
        section(&big, "answer").len() == 100,
        "mid.example.org has {} records",
        section(&big, "answer").len()
    );
    let reply_size = big.as_slice().len();
    let rss0 = rss_kb(pid);
    let prober = Prober::start(s.addr(), &A_PROBE, Duration::from_millis(10));
    let query = framed(&wire_query("mid.example.org", 1, 9, None));
    let (never, trickle) = (10usize, 4usize);
    let mut conns = Vec::new();
    for _ in 0..never + trickle {
        let c = connect_small_window(s.addr(), 4096).map_err(|e| format!("connect: {e}"))?;
        c.set_nonblocking(true).unwrap();
        conns.push((c, 0usize));
    }
    // Pipeline up to 100,000 queries each (3.5 MB), for at most 1.5 s, as far as the
    // server (and the kernel's buffers) take them.
    let mut rss = RssTrace::new(pid);
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        let mut progress = false;
        for (c, sent) in conns.iter_mut() {
            while *sent < 100_000 {
                match c.write(&query) {
                    Ok(n) if n == query.len() => {
                        *sent += 1;
                        progress = true;
                    }
                    // A partial frame: finish it blocking (the server reads it whole or
                    // the connection is gone).
                    Ok(n) => {
                        c.set_nonblocking(false).unwrap();
                        c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                        let _ = c.write_all(&query[n..]);
                        c.set_nonblocking(true).unwrap();
                        *sent += 1;
                    }
                    Err(_) => break,
                }
            }
        }
        rss.sample();
        if !progress {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let sent: Vec<usize> = conns.iter().map(|c| c.1).collect();
    let (established, unread) = tcp_unread(pid, s.port);
    // From here on the connections only sit there: UDP must not notice them.
    let burst = prober.stop();
    let prober = Prober::start(s.addr(), &A_PROBE, Duration::from_millis(10));
    // The trickle readers read 512 bytes every 100 ms for 2 s, then stop.
    let trickle_start = Instant::now();
    let trickle_end = trickle_start + Duration::from_secs(2);
    let mut buf = [0u8; 512];
    let mut peak_fds = 0;
    let mut trickle_closed: Vec<Option<Duration>> = vec![None; trickle];
    let mut all_closed = None;
    let mut trickled = 0;
    while Instant::now() < trickle_end {
        for (i, (c, _)) in conns.iter_mut().skip(never).enumerate() {
            match c.read(&mut buf) {
                Ok(0) => {
                    trickle_closed[i].get_or_insert(trickle_start.elapsed());
                }
                Ok(n) => trickled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    trickle_closed[i].get_or_insert(trickle_start.elapsed());
                }
            }
        }
        rss.sample();
        let fds = fd_count(pid);
        peak_fds = peak_fds.max(fds);
        if fds <= base && all_closed.is_none() {
            all_closed = Some(trickle_start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let back = loop {
        rss.sample();
        if all_closed.is_some() {
            break all_closed;
        }
        if fd_count(pid) <= base {
            break Some(trickle_start.elapsed());
        }
        if trickle_start.elapsed() > Duration::from_secs(8) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let probes = prober.stop();
    let held = fd_count(pid).saturating_sub(base);
    drop(conns);
    let peak = rss.peak();
    let grown = peak.saturating_sub(rss0);
    check!(
        back.is_some(),
        "{held} slow-reader connections still open 8s after the burst (write timeout 1s); queries taken per conn {sent:?}"
    );
    // 256 KiB of pending output per connection, plus the answers to one 4 KiB read.
    let per_conn = 256 + 4096 / query.len() * reply_size / 1024;
    let bound = ((never + trickle) * per_conn) as u64 + 16 * 1024;
    check!(
        grown <= bound,
        "RSS grew {:.1} MiB with {} slow readers (bound {:.1} MiB)",
        mib(grown),
        never + trickle,
        mib(bound)
    );
    // Answering the pipelined burst is real work on the worker that also serves UDP: no
    // loss, bounded delay. Once the readers only sit there, UDP is as if alone.
    burst
        .clean(Duration::from_secs(1))
        .map_err(|e| format!("while the queries were taken: {e}"))?;
    probes.clean(Duration::from_millis(250))?;
    let r = s.query_tcp("a.example.org.", Rtype::A);
    check!(rcode(&r) == Rcode::NOERROR, "TCP after: {}", rcode(&r));
    check!(alive(pid), "server died");
    let (lo, hi) = (sent.iter().min().unwrap(), sent.iter().max().unwrap());
    let trickle_report = if trickle_closed.iter().all(Option::is_some) {
        format!("the trickle readers were closed too although they kept reading ({trickled} bytes read)")
    } else {
        format!("{trickled} bytes trickled")
    };
    Ok(format!(
        "{never} never-reading + {trickle} trickle-reading (512 B/100ms, then stop) conns, 4 KiB window, {reply_size}-byte answers: clients pipelined {lo}..{hi} queries each, the server left {:.1} MiB of them unread in {established} receive queues; {trickle_report}; RSS +{:.1} MiB peak (bound {:.1}); peak fds {peak_fds}; all closed (write timeout 1s), fds back to {base} {:.1}s after the burst; while the queries were taken {}; while the readers sat {}",
        unread as f64 / 1048576.0,
        mib(grown),
        mib(bound),
        back.unwrap().as_secs_f64(),
        burst.summary(),
        probes.summary()
    ))
}

/// What one run of backlogged readers saw.
struct Backlog {
    /// When the first connection was closed by the server, if one was.
    closed_at: Option<Duration>,
    ran: Duration,
    rss0: u64,
    peak: u64,
    /// RSS floors in the second quarter and the last quarter of the run.
    early: u64,
    late: u64,
    /// Answer bytes the clients read.
    carried: usize,
    back: Result<Duration, usize>,
    bound: u64,
}

/// `n` clients each keep about 2000 big answers owed by the server and read 32 KiB every
/// 10 ms (some 3 MB/s each), for `span`, on a server with this read timeout.
fn backlog_run(read_timeout: &str, n: usize, span: Duration) -> Result<Backlog, String> {
    let (s, base) = tcp_server(read_timeout, "2s", "10s", 100)?;
    let pid = s.pid();
    let big = s.query_tcp("big.example.org.", Rtype::A);
    let reply_size = big.as_slice().len() + 2;
    let query = framed(&wire_query("big.example.org", 1, 11, None));
    let mut conns = Vec::new();
    for _ in 0..n {
        let c = connect(s.addr()).map_err(|e| format!("connect: {e}"))?;
        c.set_nonblocking(true).unwrap();
        conns.push((c, 0usize, 0usize));
    }
    let rss0 = rss_kb(pid);
    let mut rss = RssTrace::new(pid);
    let mut buf = vec![0u8; 32 << 10];
    let mut closed_at = None;
    let t = Instant::now();
    while t.elapsed() < span && closed_at.is_none() {
        for (c, sent, read) in conns.iter_mut() {
            // Whole frames only, and always about 2000 answers owed.
            while *sent < *read / reply_size + 2000 {
                match c.write(&query) {
                    Ok(k) if k == query.len() => *sent += 1,
                    Ok(k) => {
                        c.set_nonblocking(false).unwrap();
                        c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                        let _ = c.write_all(&query[k..]);
                        c.set_nonblocking(true).unwrap();
                        *sent += 1;
                    }
                    Err(_) => break,
                }
            }
            match c.read(&mut buf) {
                Ok(k) if k > 0 => *read += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                _ => {
                    closed_at.get_or_insert(t.elapsed());
                }
            }
        }
        rss.sample();
        std::thread::sleep(Duration::from_millis(10));
    }
    let ran = t.elapsed();
    let carried = conns.iter().map(|c| c.2).sum();
    drop(conns);
    let back = fds_back(pid, base, Duration::from_secs(4));
    if !alive(pid) {
        return Err("server died".into());
    }
    // 256 KiB of pending output plus the answers to one 4 KiB read, per connection.
    let per_conn = 256 + 4096 / query.len() * reply_size / 1024;
    Ok(Backlog {
        closed_at,
        ran,
        rss0,
        peak: rss.peak(),
        early: rss.floor(ran / 4, ran / 2),
        late: rss.floor(ran * 3 / 4, ran),
        carried,
        back,
        bound: (n * per_conn) as u64 + 16 * 1024,
    })
}

/// Clients that keep a backlog of answers waiting on them but do read, steadily (about
/// 3 MB/s each): not slow enough for the write timeout (2 s), and every query they send
/// is whole, so the server must not close them; and what it buffers for each must stay
/// bounded (256 KiB of pending output plus the answers to one read), however much the
/// connection has carried. One run with a 1 s read timeout (nothing may close them), one
/// with 10 s (the memory bound on its own).
fn tcp_backlogged_readers() -> Outcome {
    let n = 4;
    let short = backlog_run("1s", n, Duration::from_secs(3))?;
    let long = backlog_run("10s", n, Duration::from_secs(3))?;
    let mut problems = Vec::new();
    if let Some(at) = short.closed_at {
        problems.push(format!(
            "a client reading steadily ({:.0} MiB read) and sending only whole queries was closed after {:.1}s (read timeout 1s, write timeout 2s)",
            short.carried as f64 / 1048576.0,
            at.as_secs_f64()
        ));
    }
    for r in [&short, &long] {
        let grown = r.peak.saturating_sub(r.rss0);
        if grown > r.bound || r.late > r.early + 8 * 1024 {
            problems.push(format!(
                "server RSS grew with what the connections carried: {:.1} -> {:.1} MiB peak ({:+.1} MiB in the second half) while {n} clients read {:.0} MiB of answers in {:.1}s (bound +{:.1} MiB)",
                mib(r.rss0),
                mib(r.peak),
                (r.late as f64 - r.early as f64) / 1024.0,
                r.carried as f64 / 1048576.0,
                r.ran.as_secs_f64(),
                mib(r.bound)
            ));
        }
        if let Err(k) = r.back {
            problems.push(format!("server descriptors stuck at {k} after the clients left"));
        }
    }
    let report = format!(
        "{n} conns each kept 2000 big answers owed and read ~3 MB/s: read timeout 1s: {:.0} MiB read in {:.1}s, {}, RSS {:.1} -> peak {:.1} MiB; read timeout 10s: {:.0} MiB read in {:.1}s, RSS {:.1} -> peak {:.1} MiB (bound +{:.1}); fds back after",
        short.carried as f64 / 1048576.0,
        short.ran.as_secs_f64(),
        short.closed_at.map_or_else(
            || "none closed".to_string(),
            |d| format!("one closed at {:.1}s", d.as_secs_f64())
        ),
        mib(short.rss0),
        mib(short.peak),
        long.carried as f64 / 1048576.0,
        long.ran.as_secs_f64(),
        mib(long.rss0),
        mib(long.peak),
        mib(long.bound)
    );
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(format!("{} [{report}]", problems.join("; ")))
    }
}

/// Thousands of short connections from 4 threads: plain closes, resets, queries never
/// read, half a prefix then a reset, and real queries; the server answers the real ones,
/// UDP is unaffected, every descriptor comes back.
fn tcp_connection_flood() -> Outcome {
    let (s, base) = tcp_server("1s", "1s", "2s", 100)?;
    let pid = s.pid();
    let prober = Prober::start(s.addr(), &A_PROBE, Duration::from_millis(10));
    let to = s.addr();
    let stop_at = Instant::now() + Duration::from_secs(3);
    let t = Instant::now();
    let handles: Vec<JoinHandle<(usize, usize, usize, usize)>> = (0..4)
        .map(|th| {
            std::thread::spawn(move || {
                let query = framed(&wire_query("a.example.org", 1, 5, None));
                let (mut conns, mut errors, mut asked, mut answered) = (0, 0, 0, 0);
                for i in 0..3000 {
                    if Instant::now() > stop_at {
                        break;
                    }
                    let Ok(mut c) = connect(to) else {
                        errors += 1;
                        continue;
                    };
                    conns += 1;
                    match (i + th) % 5 {
                        0 => drop(c),
                        1 => reset(c),
                        2 => {
                            let _ = c.write_all(&query);
                            drop(c);
                        }
                        3 => {
                            let _ = c.write_all(&[0]);
                            reset(c);
                        }
                        _ => {
                            asked += 1;
                            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                            if c.write_all(&query).is_ok()
                                && read_frame(&mut c)
                                    .and_then(|r| reply_header(&r))
                                    .is_some_and(|h| h.1 == 0)
                            {
                                answered += 1;
                            }
                            reset(c);
                        }
                    }
                }
                (conns, errors, asked, answered)
            })
        })
        .collect();
    let mut peak_fds = 0;
    while handles.iter().any(|h| !h.is_finished()) {
        peak_fds = peak_fds.max(fd_count(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut conns, mut errors, mut asked, mut answered) = (0, 0, 0, 0);
    for h in handles {
        let r = h.join().unwrap();
        conns += r.0;
        errors += r.1;
        asked += r.2;
        answered += r.3;
    }
    let took = t.elapsed();
    let back = fds_back(pid, base, Duration::from_secs(4))
        .map_err(|n| format!("server descriptors stuck at {n} (base {base}) after the flood"))?;
    let probes = prober.stop();
    check!(alive(pid), "server died");
    check!(
        answered == asked,
        "{answered}/{asked} real queries answered during the flood ({conns} conns, {errors} connect errors)"
    );
    probes.clean(Duration::from_millis(250))?;
    let r = s.query_tcp("a.example.org.", Rtype::A);
    check!(rcode(&r) == Rcode::NOERROR, "TCP after: {}", rcode(&r));
    Ok(format!(
        "{conns} conns in {:.1}s ({:.0}/s; close, reset, query unread, half prefix + reset, real query), {errors} connect errors, {answered}/{asked} real queries answered; peak fds {peak_fds}, back to {base} {:.0}ms after; {}",
        took.as_secs_f64(),
        conns as f64 / took.as_secs_f64(),
        ms(back),
        probes.summary()
    ))
}

// ------------------------------------------------------------------------------------
// Overload

/// UDP well over capacity for 30 s, on cluster names: the server stays up, memory flat,
/// /health and /metrics answer, cluster names are answered near capacity, and it
/// recovers at once.
fn udp_overload() -> Outcome {
    let mut objects = base_cluster();
    objects.push(namespace("load"));
    for i in 0..64 {
        objects.push(service(
            "load",
            &format!("svc{i}"),
            &format!("10.97.0.{}", i + 1),
            &[("http", 80, "TCP")],
        ));
    }
    let api = FakeApi::with_objects(objects);
    let k = kube_server(&api.url(), &["-workers", "1"])?;
    let s = &k.server;
    let pid = s.pid();
    let names: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..64)
            .map(|i| wire_query(&format!("svc{i}.load.svc.cluster.local"), 1, 0, None))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    // Capacity: closed loop, 2 x 96 in flight (under what the server's socket queues
    // hold, so that the pass itself loses nothing), 2 s.
    let closed = Load {
        to: s.addr(),
        threads: 2,
        duration: Duration::from_secs(2),
        rate: None,
        window: 96,
        names: Names::Cycle(names.clone()),
        grace: Duration::from_millis(100),
        sockets: 1,
        lost_after: Duration::from_millis(50),
        cpu: None,
    };
    let cap = closed.run(&stop);
    let capacity = cap.ok as f64 / 2.0;
    check!(
        capacity >= 1000.0 && cap.ok == cap.replies,
        "closed-loop pass: {} ok of {} replies ({}), {capacity:.0}/s",
        cap.ok,
        cap.replies,
        rcode_counts(&cap.rcodes)
    );
    // Overload: twice the capacity offered for 30 s.
    let secs = 30u64;
    let offered = capacity * 2.0;
    let flood = Load {
        rate: Some(offered),
        duration: Duration::from_secs(secs),
        ..closed
    };
    let rss0 = rss_kb(pid);
    let drops0 = udp_drops(pid, s.port);
    let handle = flood.spawn(&stop);
    let mut rss = RssTrace::new(pid);
    let mut problems = Vec::new();
    let (mut health_max, mut metrics_max, mut tcp_max) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut health_n, mut metrics_n, mut tcp_n) = (0, 0, 0);
    let mut tick = 0u64;
    while !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(250));
        rss.sample();
        tick += 1;
        if !alive(pid) {
            problems.push("server died".to_string());
            stop.store(true, Ordering::Relaxed);
            break;
        }
        if tick.is_multiple_of(4) {
            let t = Instant::now();
            match http_get(k.health, "/health") {
                Ok((200, _)) => health_n += 1,
                other => problems.push(format!("/health at {:?}: {other:?}", rss.span())),
            }
            health_max = health_max.max(t.elapsed());
        }
        if tick % 4 == 2 {
            // The flooded worker is the only one: TCP is served between its UDP turns.
            match tcp_probe(s.addr(), tick as u16, ANCHORS[0].0) {
                Ok(took) => {
                    tcp_n += 1;
                    tcp_max = tcp_max.max(took);
                }
                Err(e) => problems.push(format!("TCP query at {:?}: {e}", rss.span())),
            }
        }
        if tick % 12 == 6 {
            let t = Instant::now();
            match http_get(k.metrics, "/metrics") {
                Ok((200, body)) if body.contains("coredns_dns_requests_total") => metrics_n += 1,
                other => problems.push(format!("/metrics at {:?}: {:?}", rss.span(), other.map(|o| o.0))),
            }
            metrics_max = metrics_max.max(t.elapsed());
        }
    }
    let st = handle.join().unwrap();
    let drops = udp_drops(pid, s.port) - drops0;
    // Recovery: the first answer after the flood, then 200 in a row.
    let stopped = Instant::now();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (name, want) = ANCHORS[0];
    let mut id = 100u16;
    let recovered = loop {
        id += 1;
        if probe_once(&sock, s.addr(), id, name, want, Duration::from_millis(100)).is_ok() {
            break Some(stopped.elapsed());
        }
        if stopped.elapsed() > Duration::from_secs(2) {
            break None;
        }
    };
    let mut after = ProbeStats::default();
    for i in 0..200 {
        let (name, want) = ANCHORS[i % ANCHORS.len()];
        id += 1;
        after.sent += 1;
        match probe_once(&sock, s.addr(), id, name, want, Duration::from_secs(1)) {
            Ok(l) => after.latencies.push(l),
            Err(e) if e == "lost" => after.lost += 1,
            Err(e) => after.wrong.push(e),
        }
    }
    check!(problems.is_empty(), "during the flood: {problems:?}");
    check!(alive(pid), "server died");
    let per_sec: Vec<u64> = st.per_sec_ok.iter().take(secs as usize).copied().collect();
    if testkit::fault::trace() {
        eprintln!("answers per second: {per_sec:?}");
    }
    let answered_rate = per_sec.iter().sum::<u64>() as f64 / secs as f64;
    let min_sec = per_sec.iter().skip(1).min().copied().unwrap_or(0);
    let wrong = st.replies - st.ok;
    check!(
        drops as f64 >= 0.1 * st.sent as f64,
        "not an overload: {} sent ({offered:.0}/s offered), {} replies, only {drops} dropped by the kernel",
        st.sent,
        st.replies
    );
    check!(
        wrong == 0,
        "{wrong} replies were not answers ({})",
        rcode_counts(&st.rcodes)
    );
    check!(
        answered_rate >= 0.5 * capacity,
        "answered {answered_rate:.0}/s under overload, under half the closed-loop capacity {capacity:.0}/s (per second: {per_sec:?})"
    );
    check!(
        min_sec as f64 >= 0.1 * capacity,
        "a second with only {min_sec} answers (capacity {capacity:.0}/s): {per_sec:?}"
    );
    let (peak, early, late) = (
        rss.peak(),
        rss.floor(Duration::from_secs(secs - 11), Duration::from_secs(secs - 9)),
        rss.floor(Duration::from_secs(secs - 2), Duration::from_secs(secs)),
    );
    check!(
        peak <= rss0 + 32 * 1024,
        "RSS peaked at {:.1} MiB from {:.1} MiB",
        mib(peak),
        mib(rss0)
    );
    check!(
        late <= early + 4 * 1024,
        "RSS still growing in the last 10s: {:.1} -> {:.1} MiB",
        mib(early),
        mib(late)
    );
    let recovered = recovered.ok_or("no answer within 2s after the flood stopped")?;
    after.clean(Duration::from_millis(100))?;
    let m = endpoints_up(&k)?;
    let counted = testkit::metrics::sum(&m, "coredns_dns_requests_total", &[]);
    check!(
        counted >= (cap.replies + st.replies) as f64,
        "metrics count {counted} requests, fewer than the {} answered",
        cap.replies + st.replies
    );
    Ok(format!(
        "capacity {capacity:.0}/s closed-loop (1 worker); 30s at {offered:.0}/s offered ({} sent, {drops} dropped by the kernel): answered {answered_rate:.0}/s ({:.0}% of capacity, slowest second {min_sec}), 0 wrong; RSS {:.1} -> peak {:.1} MiB ({:+.1} MiB over the last 10s); /health {health_n}/{health_n} max {:.0}ms, /metrics {metrics_n}/{metrics_n} max {:.0}ms, TCP queries {tcp_n}/{tcp_n} max {:.0}ms; first answer {:.1}ms after the flood, then {}",
        st.sent,
        100.0 * answered_rate / capacity,
        mib(rss0),
        mib(peak),
        (late as f64 - early as f64) / 1024.0,
        ms(health_max),
        ms(metrics_max),
        ms(tcp_max),
        ms(recovered),
        after.summary()
    ))
}

/// SIGTERM in the middle of a UDP flood on a single worker: the flooded worker still
/// takes the stop command between its UDP turns, drains what is queued and stops, so the
/// process exits on its own, status 0, within the drain (not by leaving a stuck worker
/// behind after the grace period, status 1).
fn udp_flood_sigterm() -> Outcome {
    let api = FakeApi::with_objects(base_cluster());
    let mut k = kube_server(&api.url(), &["-workers", "1"])?;
    let names: Arc<Vec<Vec<u8>>> = Arc::new(ANCHORS.iter().map(|(n, _)| wire_query(n, 1, 0, None)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let flood = Load {
        to: k.server.addr(),
        threads: 2,
        duration: Duration::from_secs(6),
        rate: Some(400_000.0),
        window: 96,
        names: Names::Cycle(names),
        grace: Duration::ZERO,
        sockets: 1,
        lost_after: Duration::from_millis(50),
        cpu: None,
    };
    let handle = flood.spawn(&stop);
    std::thread::sleep(Duration::from_millis(1500));
    let during = tcp_probe(k.server.addr(), 7, ANCHORS[0].0);
    let t = Instant::now();
    k.server.signal(libc::SIGTERM);
    let status = k.server.wait_exit(Duration::from_secs(8));
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let st = handle.join().unwrap();
    let status = status.ok_or("still running 8 s after SIGTERM")?;
    let out = k.server.output();
    check!(
        status == 0 && !out.contains("did not stop"),
        "exit status {status} {:.2}s after SIGTERM under the flood; log: {}",
        took.as_secs_f64(),
        out.lines()
            .filter(|l| l.contains("did not stop"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    // No lameduck here: 1 s to answer what is in flight, and some slack.
    check!(
        took <= Duration::from_millis(1700),
        "exited {:.2}s after SIGTERM, want within the 1 s drain",
        took.as_secs_f64()
    );
    let during = during.map_err(|e| format!("TCP query during the flood: {e}"))?;
    Ok(format!(
        "flood of {} queries, {} answered; a TCP query during it answered in {:.1}ms; exit status 0 {:.2}s after SIGTERM",
        st.sent,
        st.replies,
        ms(during),
        took.as_secs_f64()
    ))
}

/// Forwarded queries for unique names to an upstream that never answers, well beyond the
/// pending table: the table caps (the worker's `clusterdns_upstream_pending` gauge shows
/// it), queries beyond it are refused at once, memory stays bounded, local names keep
/// answering, the upstream sockets stay bounded by the pending table (the pool's 4
/// sockets taking queries and 4 being replaced per upstream per worker take 100
/// exchanges each at most; beyond that, with every socket worn and waiting on its
/// exchanges, an exchange gets a socket of its own, as before the pool) and only the
/// pool's live sockets are left afterwards.
fn forward_overload() -> Outcome {
    // A silent upstream: its UDP socket is never read.
    let silent = FakeUpstream::with_mode(Mode::Deaf);
    let mport = free_port();
    let text = format!(
        "example.org:{{port}} {{\n    bind 127.0.0.1\n    hosts {{\n        192.0.2.1 a.example.org\n    }}\n}}\n.:{{port}} {{\n    bind 127.0.0.1\n    prometheus 127.0.0.1:{mport}\n    forward . {}\n}}\n",
        silent.addr()
    );
    let pending = || {
        let (_, page) = testkit::http::http_get(mport, "/metrics").ok()?;
        page.lines()
            .find(|l| l.starts_with("clusterdns_upstream_pending{"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
    };
    let s = Launch::new(&text).arg("-workers").arg("1").start();
    let pid = s.pid();
    let base = settled_fds(pid);
    let rss0 = rss_kb(pid);
    let prober = Prober::start(s.addr(), &A_PROBE, Duration::from_millis(20));
    let secs = 3;
    let rate = 15_000.0;
    let flood = Load {
        to: s.addr(),
        threads: 1,
        duration: Duration::from_secs(secs),
        rate: Some(rate),
        window: 0,
        names: Names::Unique("flood.test"),
        // The last pending exchanges time out 2 s (read_timeout) after the flood.
        grace: Duration::from_millis(2500),
        sockets: 1,
        lost_after: Duration::from_millis(50),
        cpu: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let handle = flood.spawn(&stop);
    let mut rss = RssTrace::new(pid);
    let mut peak_fds = 0;
    let mut pending_peak = 0;
    while !handle.is_finished() {
        rss.sample();
        peak_fds = peak_fds.max(fd_count(pid));
        pending_peak = pending_peak.max(pending().unwrap_or(0.0) as usize);
        if !alive(pid) {
            stop.store(true, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = handle.join().unwrap();
    let probes = prober.stop();
    check!(alive(pid), "server died");
    // The pool's live sockets (at most 4) stay open until the upstream idles 60 s.
    let back = fds_back(pid, base + 4, Duration::from_secs(4)).map_err(|n| {
        format!("server descriptors stuck at {n} (base {base} + 4 pooled) after every exchange timed out")
    })?;
    // Pooled sockets (8) plus one per exchange beyond them, within the table (4096),
    // and a few for the metrics scrapes.
    check!(
        peak_fds <= base + 8 + 4096 + 4,
        "{} descriptors over base during the flood: more upstream sockets than the pool (8) and the pending table (4096) allow",
        peak_fds - base
    );
    check!(
        pending_peak <= 4096,
        "{pending_peak} exchanges pending during the flood: the pending table (4096 per worker) did not cap"
    );
    check!(
        pending_peak >= 3000,
        "only {pending_peak} pending exchanges at peak: the flood did not fill the table"
    );
    let peak = rss.peak();
    check!(
        peak <= rss0 + 64 * 1024,
        "RSS peaked at {:.1} MiB from {:.1} MiB",
        mib(peak),
        mib(rss0)
    );
    probes.clean(Duration::from_millis(250))?;
    let fast: u64 = st.fast.iter().sum();
    let unanswered = st.sent.saturating_sub(st.replies);
    check!(
        fast as f64 >= 0.5 * st.sent as f64,
        "only {fast} of {} queries answered within 100 ms; beyond the table they must be refused at once, not queued (late {}, unanswered {unanswered}, rcodes {})",
        st.sent,
        st.late,
        rcode_counts(&st.rcodes)
    );
    let refused = st.fast[Rcode::REFUSED.to_int() as usize];
    let report = format!(
        "{} unique names at {rate:.0}/s for {secs}s to a silent upstream (1 worker): pending table capped at {pending_peak} exchanges (peak {} upstream sockets), {fast} answered at once ({}), {} answered when their exchange timed out (2s), {unanswered} unanswered; RSS {:.1} -> peak {:.1} MiB; fds back to {base} {:.1}s after; local names {}",
        st.sent,
        peak_fds - base,
        rcode_counts(&st.fast),
        st.late,
        mib(rss0),
        mib(peak),
        back.as_secs_f64(),
        probes.summary()
    );
    check!(
        refused == fast,
        "beyond the pending table queries must be REFUSED, but the {fast} answered at once were {} [{report}]",
        rcode_counts(&st.fast)
    );
    Ok(report)
}

// ------------------------------------------------------------------------------------
// API abuse: the fake API, when told, answers badly

/// The API requests the server counted, by status code: `200 x9, 410 x3`.
fn api_codes(metrics: &str) -> String {
    let mut codes: Vec<(String, f64)> = Vec::new();
    for l in metrics
        .lines()
        .filter(|l| l.starts_with("coredns_kubernetes_rest_client_requests_total{"))
    {
        let code = l
            .split("code=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let n: f64 = l.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        match codes.iter_mut().find(|c| c.0 == code) {
            Some(c) => c.1 += n,
            None => codes.push((code.to_string(), n)),
        }
    }
    codes
        .iter()
        .map(|(c, n)| format!("{c} x{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One API abuse: sync from the fake API, turn it bad for a while, and check the server keeps answering its last snapshot with bounded memory,
/// stays healthy and ready, then heals once the API does.
fn api_case(abuse: Abuse) -> Outcome {
    let api = FakeApi::with_objects(base_cluster());
    let k = kube_server(&api.url(), &[])?;
    let s = &k.server;
    let pid = s.pid();
    endpoints_up(&k)?;
    let rss0 = rss_kb(pid);
    let prober = Prober::start(s.addr(), &ANCHORS, Duration::from_millis(20));
    // Long enough for the client to get through a 50 MiB field (a debug build parses
    // JSON at some 20 MB/s), and for growth to show over noise.
    let span = Duration::from_secs(match abuse {
        Abuse::HugeListItem | Abuse::EndlessList => 6,
        _ => 3,
    });
    api.abuse(abuse);
    let mut rss = RssTrace::new(pid);
    let t = Instant::now();
    let mut problems: Vec<String> = Vec::new();
    while t.elapsed() < span {
        let kb = rss.sample();
        if !alive(pid) {
            problems.push(format!("server died:\n{}", s.output()));
            break;
        }
        // A runaway is stopped before it hurts the machine (and fails the case below).
        if kb > rss0 + 300 * 1024 {
            problems.push(format!(
                "RSS passed +300 MiB after {:.1}s: cut short",
                t.elapsed().as_secs_f64()
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let abused = t.elapsed();
    let items = api.abuse_counts().2;
    let during = endpoints_up(&k);
    let snapshot_services =
        |m: &str| testkit::metrics::sum(m, "clusterdns_kubernetes_objects", &[("kind", "services")]);
    let services_during = during.as_ref().map_or(0.0, |m| snapshot_services(m));
    let namespaces_during = during.as_ref().map_or(0.0, |m| {
        testkit::metrics::sum(m, "clusterdns_kubernetes_objects", &[("kind", "namespaces")])
    });
    if let Err(e) = &during {
        problems.push(format!("while the API was bad: {e}"));
    }
    let peak = rss.peak();
    let grown = peak.saturating_sub(rss0);
    if grown > 100 * 1024 {
        problems.push(format!(
            "RSS grew by {:.0} MiB ({:.1} -> {:.1} MiB) in {:.1}s",
            mib(grown),
            mib(rss0),
            mib(peak),
            abused.as_secs_f64()
        ));
    }
    // Streams that carry nothing to keep must leave memory flat: from the middle to the
    // end (lowest sample over a second) it may not grow. Huge objects are judged by the
    // peak alone: their buffers come and go, and the allocator keeps some for a while.
    let second = Duration::from_secs(1);
    let (early, late) = (
        rss.floor((abused / 2).saturating_sub(second), abused / 2),
        rss.floor(abused.saturating_sub(second), abused + second),
    );
    let flat = !matches!(abuse, Abuse::HugeWatchLine | Abuse::HugeListItem);
    if flat && late > early + 8 * 1024 {
        problems.push(format!(
            "RSS still growing in the second half of the abuse: {:.1} -> {:.1} MiB",
            mib(early),
            mib(late)
        ));
    }
    if testkit::fault::trace() {
        eprintln!("rss trace: {}", rss.trace());
    }
    // The API heals.
    api.abuse(Abuse::None);
    let healed = Instant::now();
    api.add(service("default", "recovered", "10.96.7.7", &[("http", 80, "TCP")]));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut id = 1000u16;
    let recovered = loop {
        id = id.wrapping_add(1);
        let name = "recovered.default.svc.cluster.local.";
        if probe_once(&sock, s.addr(), id, name, "10.96.7.7", Duration::from_millis(200)).is_ok() {
            break Some(healed.elapsed());
        }
        if healed.elapsed() > Duration::from_secs(10) || !alive(pid) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let probes = prober.stop();
    let (abusive, bytes, _) = api.abuse_counts();
    if !alive(pid) {
        problems.push(format!("server died:\n{}", s.output()));
    }
    if abusive < 3 {
        problems.push(format!("the client made only {abusive} requests to the bad API"));
    }
    if let Err(e) = probes.clean(Duration::from_millis(500)) {
        problems.push(format!("the last snapshot was not served throughout: {e}"));
    }
    if recovered.is_none() {
        problems.push(format!(
            "a service added after the API healed never resolved:\n{}",
            s.output()
        ));
    }
    // Whatever a bad list added is gone once a good one completes (4 services).
    let t = Instant::now();
    let mut after = endpoints_up(&k);
    while after.as_ref().is_ok_and(|m| snapshot_services(m) > 4.0) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        after = endpoints_up(&k);
    }
    let rss_after = rss_kb(pid);
    let codes = match &after {
        Ok(m) => {
            if snapshot_services(m) != 4.0 {
                problems.push(format!(
                    "{} services served after the relist, want 4",
                    snapshot_services(m)
                ));
            }
            api_codes(m)
        }
        Err(e) => {
            problems.push(format!("after the API healed: {e}"));
            String::new()
        }
    };
    let what = match abuse {
        Abuse::HugeWatchLine => "watches answered with one 50 MiB event line".to_string(),
        Abuse::HugeListItem => "watches 410, lists with a 50 MiB name and a 50 MiB ignored field, cut off".to_string(),
        Abuse::EndlessWatch => "watches streaming bookmarks and garbage lines without end".to_string(),
        Abuse::EndlessList => format!(
            "watches 410, lists streaming new objects without end ({items} sent; {namespaces_during} namespaces, {services_during} services in the snapshot at the end)"
        ),
        Abuse::Malformed => "garbage watch lines, broken chunking, 410 + broken/mistyped/HTML lists".to_string(),
        Abuse::Slow => "requests never answered, watch streams trickling 1 byte/200ms".to_string(),
        Abuse::None => String::new(),
    };
    let report = format!(
        "{:.1}s of {what}: {abusive} abusive responses ({:.0} MiB); API requests counted by code: {codes}; {}; RSS {:.1} -> peak {:.1} -> {:.1} MiB after; a new service resolved {} after the API healed",
        abused.as_secs_f64(),
        bytes as f64 / 1048576.0,
        probes.summary(),
        mib(rss0),
        mib(peak),
        mib(rss_after),
        recovered.map_or_else(|| "never".to_string(), |d| format!("{:.0}ms", ms(d)))
    );
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(format!("{} [{report}]", problems.join("; ")))
    }
}
