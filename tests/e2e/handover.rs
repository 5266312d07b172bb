//! Restarts without loss, end to end: two real processes on one port under a steady
//! stream of UDP queries and a pipelining TCP client, the second taking the first's
//! sockets with `-handover` (the first then killed with SIGKILL at a random moment of
//! its drain); the same restart without a hand-over, for the figure; and sockets passed
//! the way systemd passes them (`LISTEN_FDS`, `LISTEN_PID`) kept across a stop and a
//! start by their holder.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use domain::base::Message;
use domain::base::iana::Rtype;
use testkit::prelude::*;
use testkit::process::{Process, Spawn, free_ports};
use testkit::wire::{addresses, udp_exchange_within};

const NAME: &str = "a.example.org.";
const OLD_IP: &str = "10.0.0.1";
const NEW_IP: &str = "10.0.0.2";

/// A hosts zone (`a.example.org` is `{ip}`), health on `{H}`, and `slow.test` forwarded
/// to `{up}` (a fake upstream that answers late: a query in flight while draining).
const COREFILE: &str = "example.org:{port} {
    bind 127.0.0.1
    health 127.0.0.1:{H}
    hosts {
        {ip} a.example.org
    }
}
slow.test:{port} {
    bind 127.0.0.1
    forward . {up}
}
";

fn corefile(ip: &str, h: u16, up: SocketAddr) -> String {
    COREFILE
        .replace("{ip}", ip)
        .replace("{H}", &h.to_string())
        .replace("{up}", &up.to_string())
}

// ------------------------------------------------------------------------------------
// The load: UDP streams and a pipelining TCP client

/// One query: when it was first sent, and the address it was answered with (None: lost).
#[derive(Clone, Debug)]
struct Sample {
    sent: Instant,
    got: Option<String>,
    /// TCP: times it was sent again on a new connection after the old one closed.
    retries: u32,
}

/// Sequential UDP queries from `threads` sockets (every 2 ms each, each waiting up to
/// `patience`), until stopped (at most 20 s).
struct UdpLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Sample>>>,
}

impl UdpLoad {
    fn start(to: SocketAddr, threads: usize, patience: Duration) -> UdpLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|t| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                    sock.connect(to).unwrap();
                    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                    let begin = Instant::now();
                    let mut out = Vec::new();
                    let mut buf = [0u8; 1500];
                    for i in 0..10_000u32 {
                        if stop.load(Ordering::Acquire) || begin.elapsed() > Duration::from_secs(20) {
                            break;
                        }
                        let id = ((t as u32) << 13 | (i & 0x1fff)) as u16;
                        let sent = Instant::now();
                        let _ = sock.send(&query_bytes(NAME, Rtype::A, Some(1232), id));
                        let mut got = None;
                        while got.is_none() && sent.elapsed() < patience {
                            if let Ok(n) = sock.recv(&mut buf) {
                                if let Ok(m) = Message::from_octets(buf[..n].to_vec()) {
                                    if m.header().id() == id {
                                        got = Some(addresses(&m).join(","));
                                    }
                                }
                            }
                        }
                        out.push(Sample { sent, got, retries: 0 });
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    out
                })
            })
            .collect();
        UdpLoad { stop, threads }
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Release);
        self.threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    }
}

/// A TCP client keeping 4 queries in flight on one connection. When the server closes
/// it (or it breaks), the unanswered queries go again on a new connection, as RFC 7766
/// clients do; a query is lost when 3 connections in a row could not answer it.
struct TcpLoad {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Sample>>>,
}

impl TcpLoad {
    fn start(to: SocketAddr) -> TcpLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let begin = Instant::now();
            let mut done: Vec<Sample> = Vec::new();
            // (id, sample) in flight.
            let mut inflight: Vec<(u16, Sample)> = Vec::new();
            let mut next_id = 1u16;
            'conn: while begin.elapsed() < Duration::from_secs(20) {
                let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(1)) else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                // What was unanswered goes again.
                for (id, x) in &mut inflight {
                    x.retries += 1;
                    if s.write_all(&framed(&query_bytes(NAME, Rtype::A, Some(1232), *id)))
                        .is_err()
                    {
                        continue 'conn;
                    }
                }
                let lost: Vec<usize> = (0..inflight.len()).filter(|&i| inflight[i].1.retries > 3).collect();
                for i in lost.into_iter().rev() {
                    done.push(inflight.remove(i).1);
                }
                loop {
                    let stopping = flag.load(Ordering::Acquire);
                    while !stopping && inflight.len() < 4 {
                        let id = next_id;
                        next_id = next_id.wrapping_add(1).max(1);
                        let x = Sample {
                            sent: Instant::now(),
                            got: None,
                            retries: 0,
                        };
                        inflight.push((id, x));
                        if s.write_all(&framed(&query_bytes(NAME, Rtype::A, Some(1232), id)))
                            .is_err()
                        {
                            continue 'conn;
                        }
                    }
                    if inflight.is_empty() {
                        return done;
                    }
                    let Some(reply) = read_framed(&mut s) else {
                        continue 'conn;
                    };
                    let Ok(m) = Message::from_octets(reply) else {
                        continue 'conn;
                    };
                    if let Some(i) = inflight.iter().position(|(id, _)| *id == m.header().id()) {
                        let (_, mut x) = inflight.remove(i);
                        x.got = Some(addresses(&m).join(","));
                        done.push(x);
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
            done.extend(inflight.into_iter().map(|(_, x)| x));
            done
        });
        TcpLoad {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Release);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn framed(q: &[u8]) -> Vec<u8> {
    let mut b = (q.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(q);
    b
}

fn read_framed(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut b = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut b).ok()?;
    Some(b)
}

/// (queries, lost, wrong) among `samples` sent before `until`.
fn tally(samples: &[Sample], until: Instant) -> (usize, usize, usize) {
    let before: Vec<&Sample> = samples.iter().filter(|x| x.sent < until).collect();
    let lost = before.iter().filter(|x| x.got.is_none()).count();
    let wrong = before
        .iter()
        .filter(|x| x.got.as_deref().is_some_and(|a| a != OLD_IP && a != NEW_IP))
        .count();
    (before.len(), lost, wrong)
}

/// A number from the clock, for the moment of the SIGKILL.
fn random_below(n: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (t ^ (t >> 7) ^ (std::process::id() as u64) << 3) % n.max(1)
}

// ------------------------------------------------------------------------------------
// 1. The hand-over

#[test]
fn handover_under_load_loses_nothing_even_with_the_old_process_killed_mid_drain() {
    let [port, h] = free_ports::<2>();
    let up = FakeUpstream::with_mode(Mode::Slow(Duration::from_millis(700)));
    let dir = Scratch::new("handover");
    let sock = dir.path("h.sock");
    let sock_arg = sock.to_string_lossy().into_owned();
    let old_text = corefile(OLD_IP, h, up.addr());
    let mut old = Launch::new(&old_text)
        .port(port)
        .arg("-workers")
        .arg("2")
        .arg("-handover")
        .arg(&sock_arg)
        .start();
    assert!(
        old.wait_output(Duration::from_secs(5), |o| o.contains("hand-over: listening on")),
        "{}",
        old.output()
    );
    let to = old.addr();
    let udp = UdpLoad::start(to, 3, Duration::from_secs(3));
    let tcp = TcpLoad::start(to);
    std::thread::sleep(Duration::from_millis(400));
    // A query the old process is waiting on upstream for when it is told to drain: its
    // drain lasts until that answer (700 ms) unless the SIGKILL comes first.
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(&framed(&query_bytes("x.slow.test.", Rtype::A, None, 77)))
            .unwrap();
        read_framed(&mut s).is_some()
    });
    std::thread::sleep(Duration::from_millis(100));

    let new_text = corefile(NEW_IP, h, up.addr());
    let new = Launch::new(&new_text)
        .port(port)
        .arg("-workers")
        .arg("3")
        .arg("-handover")
        .arg(&sock_arg)
        .no_wait()
        .start();
    let took = wait_until("the old process drains", Duration::from_secs(15), || {
        old.output().contains("serves the sockets; draining")
    });
    let drain_start = Instant::now();
    let delay = Duration::from_millis(random_below(600));
    std::thread::sleep(delay);
    let kill = Instant::now();
    old.signal(libc::SIGKILL);
    let _ = old.wait_exit(Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(600));
    let udp = udp.finish();
    let tcp = tcp.finish();
    let slow_answered = slow.join().unwrap();

    let out = format!("--- old\n{}--- new\n{}", old.output(), new.output());
    assert!(new.output().contains("hand-over: took 5 sockets from PID"), "{out}");
    let (n_udp, lost_udp, wrong_udp) = tally(&udp, kill);
    let (n_all, lost_all, wrong_all) = tally(&udp, Instant::now());
    let (n_tcp, lost_tcp, wrong_tcp) = tally(&tcp, Instant::now());
    let retried = tcp.iter().filter(|x| x.retries > 0).count();
    let during = udp.iter().filter(|x| x.sent >= drain_start && x.sent < kill).count();
    let new_answers = udp.iter().filter(|x| x.got.as_deref() == Some(NEW_IP)).count();
    println!(
        "hand-over (new ready {took:?} after start), SIGKILL {:?} into the drain ({}):\n  \
         UDP: {n_udp} queries before the SIGKILL ({during} during the drain), {lost_udp} lost, {wrong_udp} wrong; \
         {n_all} in all, {lost_all} lost; {new_answers} answered by the new process\n  \
         TCP (4 in flight): {n_tcp} queries, {lost_tcp} lost, {wrong_tcp} wrong, {retried} sent again on a new connection",
        kill - drain_start,
        if slow_answered {
            "the slow query was answered first"
        } else {
            "the slow query in flight was lost with it"
        },
    );
    assert!(
        n_udp >= 200 && during > 0 || delay < Duration::from_millis(20),
        "too few queries: {n_udp}/{during}"
    );
    assert!(new_answers > 50, "the new process answered {new_answers}\n{out}");
    assert_eq!((lost_udp, wrong_udp), (0, 0), "UDP before the SIGKILL\n{out}");
    assert_eq!(wrong_all, 0, "{out}");
    assert_eq!((lost_tcp, wrong_tcp), (0, 0), "TCP\n{out}");
    assert!(n_tcp >= 50, "only {n_tcp} TCP queries");
    // The new process serves everything alone now: UDP, TCP, HTTP.
    let m = udp_exchange(to, &query_bytes(NAME, Rtype::A, Some(1232), 5));
    assert_eq!(addresses(&m), [NEW_IP]);
    let m = tcp_exchange(to, &query_bytes(NAME, Rtype::A, Some(1232), 6));
    assert_eq!(addresses(&m), [NEW_IP]);
    assert_eq!(http_get(h, "/health"), Ok((200, "OK".into())), "{out}");
    assert!(new.output().contains("hand-over: listening on"), "{out}");
}

#[test]
fn a_successor_takes_over_from_a_successor_and_a_stale_socket_file_is_no_obstacle() {
    let [port, h] = free_ports::<2>();
    let up = FakeUpstream::start();
    let dir = Scratch::new("handover2");
    let sock = dir.path("h.sock");
    // A socket file nobody listens on (a process that died): bound over.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let arg = sock.to_string_lossy().into_owned();
    let text = corefile(OLD_IP, h, up.addr());
    let mut procs = Vec::new();
    for generation in 0..3 {
        let p = Launch::new(&text)
            .port(port)
            .arg("-workers")
            .arg("2")
            .arg("-handover")
            .arg(&arg)
            .no_wait()
            .start();
        assert!(
            p.wait_output(Duration::from_secs(10), |o| o.contains("hand-over: listening on")),
            "generation {generation}: {}",
            p.output()
        );
        procs.push(p);
    }
    for (i, p) in procs.iter_mut().enumerate().take(2) {
        assert_eq!(
            p.wait_exit(Duration::from_secs(5)),
            Some(0),
            "generation {i}:\n{}",
            p.output()
        );
    }
    assert!(procs[2].running());
    let m = udp_exchange(procs[2].addr(), &query_bytes(NAME, Rtype::A, Some(1232), 5));
    assert_eq!(addresses(&m), [OLD_IP]);
    // Not a clusterdns at the path: refused clearly, the process does not start.
    let other = dir.path("other.sock");
    let listener = std::os::unix::net::UnixListener::bind(&other).unwrap();
    let talker = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _ = s.write_all(b"\0\0\0\x05HELLO");
        std::thread::sleep(Duration::from_millis(300));
    });
    let mut bad = Launch::new(&text)
        .port(free_ports::<1>()[0])
        .arg("-handover")
        .arg(other.to_string_lossy())
        .no_wait()
        .start();
    assert_eq!(bad.wait_exit(Duration::from_secs(10)), Some(1));
    assert!(bad.output().contains("not a clusterdns hand-over"), "{}", bad.output());
    talker.join().unwrap();
}

// ------------------------------------------------------------------------------------
// 2. For comparison: the same restart without a hand-over (figures only)

#[test]
fn without_a_handover_a_restart_loses_queries_figures_only() {
    let up = FakeUpstream::start();
    for how in ["SIGKILL, then start", "SIGTERM (no lameduck), exit, then start"] {
        let [port, h] = free_ports::<2>();
        let text = corefile(OLD_IP, h, up.addr());
        let mut old = Launch::new(&text).port(port).arg("-workers").arg("2").start();
        let to = old.addr();
        // As patient as a stub resolver's first try (1 s), not more: a query lost is
        // one the client has to send again.
        let udp = UdpLoad::start(to, 3, Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(400));
        let t = Instant::now();
        if how.starts_with("SIGKILL") {
            old.signal(libc::SIGKILL);
        } else {
            old.signal(libc::SIGTERM);
        }
        let _ = old.wait_exit(Duration::from_secs(5));
        let new_text = corefile(NEW_IP, h, up.addr());
        let new = Launch::new(&new_text).port(port).arg("-workers").arg("2").start();
        let gap = t.elapsed();
        std::thread::sleep(Duration::from_millis(1500));
        let samples = udp.finish();
        let (n, lost, wrong) = tally(&samples, Instant::now());
        println!("no hand-over, {how}: {n} UDP queries, {lost} lost, {wrong} wrong; answering again after {gap:?}");
        assert!(n >= 100, "only {n} queries");
        assert_eq!(wrong, 0);
        assert!(
            samples.iter().any(|x| x.got.as_deref() == Some(NEW_IP)),
            "{}",
            new.output()
        );
    }
}

// ------------------------------------------------------------------------------------
// 3. systemd's socket activation

/// Starts the binary the way systemd starts a socket-activated service: `fds` as
/// descriptors 3, 4, ..., `LISTEN_FDS` their count, `LISTEN_PID` the PID the shell
/// keeps when it execs the binary.
fn activated(fds: &[RawFd], names: &str, corefile: &std::path::Path, workers: &str) -> Process {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS={} LISTEN_FDNAMES={names} exec \"$0\" \"$@\"",
            fds.len()
        ))
        .arg(binary())
        .args(["-conf", &corefile.to_string_lossy(), "-workers", workers])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    let fds = fds.to_vec();
    // SAFETY: between fork and exec only fcntl(2) and dup2(2), async-signal-safe: the
    // descriptors are first moved out of the way (a source may sit where a target goes).
    unsafe {
        cmd.pre_exec(move || {
            let mut high = Vec::with_capacity(fds.len());
            for fd in &fds {
                let h = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 200);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(h);
            }
            for (i, h) in high.iter().enumerate() {
                if libc::dup2(*h, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Spawn::command(cmd).name("clusterdns").start()
}

fn reuseport_socket(ty: libc::c_int, port: u16) -> OwnedFd {
    // SAFETY: plain socket calls on a descriptor owned at once; the address is valid.
    unsafe {
        let fd = OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, ty | libc::SOCK_CLOEXEC, 0));
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            4,
        );
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = port.to_be();
        sin.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        assert_eq!(
            libc::bind(
                fd.as_raw_fd(),
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32
            ),
            0
        );
        if ty == libc::SOCK_STREAM {
            assert_eq!(libc::listen(fd.as_raw_fd(), 128), 0);
        }
        fd
    }
}

#[test]
fn sockets_passed_by_systemd_serve_and_outlive_a_stop_and_start_without_loss() {
    let [port, h] = free_ports::<2>();
    let up = FakeUpstream::start();
    let dir = Scratch::new("listenfds");
    let old = dir.write(
        "old/Corefile",
        &corefile(OLD_IP, h, up.addr()).replace("{port}", &port.to_string()),
    );
    let new = dir.write(
        "new/Corefile",
        &corefile(NEW_IP, h, up.addr()).replace("{port}", &port.to_string()),
    );
    // What the socket unit holds: two UDP sockets in one SO_REUSEPORT group (two
    // ListenDatagram= lines) and a TCP listener.
    let held = [
        reuseport_socket(libc::SOCK_DGRAM, port),
        reuseport_socket(libc::SOCK_DGRAM, port),
        reuseport_socket(libc::SOCK_STREAM, port),
    ];
    let raw: Vec<RawFd> = held.iter().map(|f| f.as_raw_fd()).collect();
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let mut first = activated(&raw, "dns-udp:dns-udp:dns-tcp", &old, "3");
    let up_at = wait_until("answers", Duration::from_secs(15), || {
        udp_exchange_within(to, &query_bytes(NAME, Rtype::A, None, 1), Duration::from_millis(100)).is_some()
    });
    // The passed descriptors (dup2'd without FD_CLOEXEC) are not inherited further.
    for fd in 3..6 {
        let info = std::fs::read_to_string(format!("/proc/{}/fdinfo/{fd}", first.pid())).unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            .unwrap();
        assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "descriptor {fd}: {info}");
    }
    let out = first.output();
    assert_eq!(
        out.matches(&format!("systemd passed Udp 127.0.0.1:{port} (dns-udp"))
            .count(),
        2,
        "{out}"
    );
    assert!(
        out.contains(&format!("systemd passed Tcp 127.0.0.1:{port} (dns-tcp, descriptor 5)")),
        "{out}"
    );
    println!("answering {up_at:?} after start");

    // 3 s: the time from the stop to the new process serving is within it.
    let udp = UdpLoad::start(to, 3, Duration::from_secs(3));
    let tcp = TcpLoad::start(to);
    std::thread::sleep(Duration::from_millis(400));
    // The service stops: the sockets stay open in their holder and queue what arrives.
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit(Duration::from_secs(5)), Some(0), "{}", first.output());
    let stopped = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let second = activated(&raw, "dns-udp:dns-udp:dns-tcp", &new, "2");
    std::thread::sleep(Duration::from_millis(1500));
    let udp = udp.finish();
    let tcp = tcp.finish();
    let gap: Vec<&Sample> = udp.iter().filter(|x| x.sent >= stopped).take(1).collect();
    let (n, lost, wrong) = tally(&udp, Instant::now());
    let (nt, lost_t, wrong_t) = tally(&tcp, Instant::now());
    let retried = tcp.iter().filter(|x| x.retries > 0).count();
    println!(
        "stop + start on sockets held for it: UDP {n} queries, {lost} lost, {wrong} wrong; \
         TCP {nt} queries, {lost_t} lost, {retried} sent again"
    );
    let out = format!("--- first\n{}--- second\n{}", first.output(), second.output());
    assert!(!gap.is_empty(), "no query sent while nothing served");
    assert_eq!((lost, wrong), (0, 0), "{out}");
    assert_eq!((lost_t, wrong_t), (0, 0), "{out}");
    assert!(udp.iter().any(|x| x.got.as_deref() == Some(NEW_IP)), "{out}");
    drop(second);
}

#[test]
fn listen_fds_that_are_not_sockets_fail_the_start_clearly() {
    let dir = Scratch::new("listenfds-bad");
    let core = dir.write("Corefile", ".:0 {\n    bind 127.0.0.1\n    whoami\n}\n");
    let file = std::fs::File::open(&core).unwrap();
    let mut p = activated(&[file.as_raw_fd()], "x", &core, "1");
    assert_eq!(p.wait_exit(Duration::from_secs(10)), Some(1), "{}", p.output());
    assert!(
        p.output().contains("LISTEN_FDS: descriptor 3 (x): not a socket"),
        "{}",
        p.output()
    );
}

#[test]
fn a_successor_binds_the_addresses_it_adds_and_leaves_those_it_drops() {
    let [a, b] = free_ports::<2>();
    let dir = Scratch::new("handover3");
    let sock = dir.path("h.sock").to_string_lossy().into_owned();
    let block = |port: u16, ip: &str| {
        format!("example.org:{port} {{\n    bind 127.0.0.1\n    hosts {{\n        {ip} a.example.org\n    }}\n}}\n")
    };
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let ask = |port: u16| {
        udp_exchange_within(
            at(port),
            &query_bytes(NAME, Rtype::A, Some(1232), 9),
            Duration::from_secs(1),
        )
        .map(|m| addresses(&m).join(","))
    };
    // The first serves `a` only; the second `a` (taken over) and `b` (bound).
    let first_text = block(a, OLD_IP);
    let mut first = Launch::new(&first_text).arg("-handover").arg(&sock).no_wait().start();
    assert!(first.wait_output(Duration::from_secs(10), |o| o.contains("hand-over: listening on")));
    let second_text = format!("{}{}", block(a, NEW_IP), block(b, NEW_IP));
    let mut second = Launch::new(&second_text).arg("-handover").arg(&sock).no_wait().start();
    assert_eq!(first.wait_exit(Duration::from_secs(10)), Some(0), "{}", first.output());
    assert_eq!(ask(a).as_deref(), Some(NEW_IP), "{}", second.output());
    assert_eq!(ask(b).as_deref(), Some(NEW_IP), "{}", second.output());
    // The third serves `b` only: `a` is closed with the second.
    let third_text = block(b, OLD_IP);
    let third = Launch::new(&third_text).arg("-handover").arg(&sock).no_wait().start();
    assert_eq!(
        second.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        second.output()
    );
    assert!(
        third
            .output()
            .contains(&format!("hand-over: not taking Dns(Udp) 127.0.0.1:{a}")),
        "{}",
        third.output()
    );
    assert_eq!(ask(b).as_deref(), Some(OLD_IP), "{}", third.output());
    assert_eq!(ask(a), None, "the dropped address still answers");
}

/// `-handover.wait`: a predecessor in a container (the node-local DaemonSet) must not
/// exit after the hand-over, or its runtime restarts it and the restarted process takes
/// the sockets back. It drains, stays without serving, and a SIGTERM ends it with 0.
/// `launch` on `port` with two workers, `-handover SOCK -handover.wait`, once its
/// hand-over socket listens.
fn start_waiting(launch: Launch, port: u16, sock: &str) -> Server {
    let p = launch
        .port(port)
        .arg("-workers")
        .arg("2")
        .arg("-handover")
        .arg(sock)
        .arg("-handover.wait")
        .no_wait()
        .start();
    assert!(
        p.wait_output(Duration::from_secs(10), |o| o.contains("hand-over: listening on")),
        "{}",
        p.output()
    );
    p
}

#[test]
fn with_handover_wait_the_predecessor_stays_until_sigterm() {
    let [port, h] = free_ports::<2>();
    let up = FakeUpstream::start();
    let dir = Scratch::new("handover-wait");
    let arg = dir.path("h.sock").to_string_lossy().into_owned();
    let text = corefile(OLD_IP, h, up.addr());
    let start = || start_waiting(Launch::new(&text), port, &arg);
    let mut old = start();
    let mut new = start();
    assert!(
        old.wait_output(Duration::from_secs(10), |o| o.contains("waiting for SIGTERM")),
        "{}",
        old.output()
    );
    // Still there a while later, and the successor answers on the port.
    std::thread::sleep(Duration::from_millis(500));
    assert!(old.running(), "{}", old.output());
    let m = udp_exchange(new.addr(), &query_bytes(NAME, Rtype::A, Some(1232), 7));
    assert_eq!(addresses(&m), [OLD_IP]);
    old.signal(libc::SIGTERM);
    assert_eq!(old.wait_exit(Duration::from_secs(5)), Some(0), "{}", old.output());
    // The successor keeps serving after its predecessor is gone.
    let m = udp_exchange(new.addr(), &query_bytes(NAME, Rtype::A, Some(1232), 8));
    assert_eq!(addresses(&m), [OLD_IP]);
    assert!(new.running());
}

/// A successor whose kubernetes plugin has not synced (the API does not answer) does
/// not tell its predecessor to drain once its startup_timeout passes: it waits, and the
/// predecessor serves meanwhile. A SIGTERM then ends the successor without a DRAIN:
/// the predecessor keeps serving.
#[test]
fn a_successor_not_ready_or_stopped_while_starting_leaves_the_predecessor_serving() {
    let [port, h, h2, closed] = free_ports::<4>();
    let up = FakeUpstream::start();
    let dir = Scratch::new("handover-notready");
    let arg = dir.path("h.sock").to_string_lossy().into_owned();
    let start = |text: &str| {
        Launch::new(text)
            .port(port)
            .arg("-workers")
            .arg("2")
            .arg("-handover")
            .arg(&arg)
            .no_wait()
            .start()
    };
    let old = start(&corefile(OLD_IP, h, up.addr()));
    assert!(
        old.wait_output(Duration::from_secs(10), |o| o.contains("hand-over: listening on")),
        "{}",
        old.output()
    );
    // Nothing listens on `closed`: the kubernetes plugin never syncs.
    let text = format!(
        "{}cluster.local:{{port}} {{\n    bind 127.0.0.1\n    kubernetes cluster.local {{\n        endpoint http://127.0.0.1:{closed}\n        startup_timeout 1s\n    }}\n}}\n",
        corefile(NEW_IP, h2, up.addr())
    );
    let mut new = start(&text);
    assert!(
        new.wait_output(Duration::from_secs(10), |o| o
            .contains("hand-over: waiting for kubernetes")),
        "{}",
        new.output()
    );
    // Past its startup_timeout, still not told to drain.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!old.output().contains("hand-over done"), "{}", old.output());
    new.signal(libc::SIGTERM);
    assert!(new.wait_exit(Duration::from_secs(10)).is_some(), "{}", new.output());
    assert!(new.output().contains("keeps serving"), "{}", new.output());
    std::thread::sleep(Duration::from_millis(300));
    let mut old = old;
    assert!(old.running(), "{}", old.output());
    assert!(!old.output().contains("hand-over done"), "{}", old.output());
    let m = udp_exchange(old.addr(), &query_bytes(NAME, Rtype::A, Some(1232), 9));
    assert_eq!(addresses(&m), [OLD_IP]);
}

/// A successor that comes while the running process stops (SIGTERM, in its lameduck)
/// is refused clearly rather than offered no sockets.
#[test]
fn a_successor_is_refused_by_a_stopping_process() {
    let [port, h] = free_ports::<2>();
    let up = FakeUpstream::start();
    let dir = Scratch::new("handover-stopping");
    let arg = dir.path("h.sock").to_string_lossy().into_owned();
    let text = corefile(OLD_IP, h, up.addr()).replace(
        &format!("health 127.0.0.1:{h}\n"),
        &format!("health 127.0.0.1:{h} {{\n        lameduck 3s\n    }}\n"),
    );
    assert!(text.contains("lameduck"));
    let start = || {
        Launch::new(&text)
            .port(port)
            .arg("-handover")
            .arg(&arg)
            .no_wait()
            .start()
    };
    let mut old = start();
    assert!(
        old.wait_output(Duration::from_secs(10), |o| o.contains("hand-over: listening on")),
        "{}",
        old.output()
    );
    old.signal(libc::SIGTERM);
    assert!(
        old.wait_output(Duration::from_secs(5), |o| o.contains("lameduck")),
        "{}",
        old.output()
    );
    let mut new = start();
    assert_eq!(new.wait_exit(Duration::from_secs(10)), Some(1), "{}", new.output());
    assert!(new.output().contains("stopping"), "{}", new.output());
    assert_eq!(old.wait_exit(Duration::from_secs(10)), Some(0), "{}", old.output());
}

/// `-handover.wait` holds even when the drain leaves a worker behind (stuck in a
/// query): exiting would have the container restarted and the sockets taken back.
#[test]
fn with_handover_wait_a_predecessor_with_a_stuck_worker_stays_too() {
    let [port, h] = free_ports::<2>();
    let up = FakeUpstream::start();
    let dir = Scratch::new("handover-wait-stuck");
    let arg = dir.path("h.sock").to_string_lossy().into_owned();
    // teststall comes after hosts in the chain: hosts falls through to it.
    let text = corefile(OLD_IP, h, up.addr())
        .replace("    hosts {\n", "    teststall 30s\n    hosts {\n")
        .replace(" a.example.org\n", " a.example.org\n        fallthrough\n");
    let start = || start_waiting(Launch::new(&text).env("CLUSTERDNS_TEST_PLUGINS", "1"), port, &arg);
    let mut old = start();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&query_bytes("stall.example.org.", Rtype::A, None, 3), old.addr())
        .unwrap();
    assert!(
        old.wait_output(Duration::from_secs(5), |o| o.contains("teststall: holding")),
        "{}",
        old.output()
    );
    let new = start();
    assert!(
        old.wait_output(Duration::from_secs(15), |o| o.contains("waiting for SIGTERM")),
        "{}",
        old.output()
    );
    assert!(old.running(), "{}", old.output());
    let m = udp_exchange(new.addr(), &query_bytes(NAME, Rtype::A, Some(1232), 4));
    assert_eq!(addresses(&m), [OLD_IP]);
    old.signal(libc::SIGTERM);
    assert_eq!(old.wait_exit(Duration::from_secs(5)), Some(0), "{}", old.output());
}
