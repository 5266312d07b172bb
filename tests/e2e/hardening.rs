//! Hardening (issue 7): the fault suite. The real binary on 127.0.0.1 is driven through
//! overload (UDP well over its capacity; forwarded queries beyond its pending-upstream
//! table), TCP abuse (idle floods, half-sent length prefixes, slow readers, connection
//! floods) and a misbehaving Kubernetes API (huge objects, endless streams, malformed
//! JSON, silence), and each case checks that nothing was lost or crashed: the process is
//! up, memory and descriptors (`/proc/PID/status`, `/proc/PID/fd`) stay bounded and come
//! back, and DNS keeps answering correctly.
//!
//! One test, `fault_suite`, runs the cases one after another (their load must not mix),
//! catches a panic per case, prints a report line per case to stderr (`--nocapture` shows
//! them) and then `fault suite: N passed, N failed`, and fails if any case failed.
//! `CLUSTERDNS_FAULT_CASES=tcp,api` runs only the cases whose name contains one of the
//! comma-separated words; `CLUSTERDNS_FAULT_TRACE=1` also prints the RSS samples of the
//! API cases and the answers per second of the UDP overload.
//!
//! Every load loop is bounded in count and time, every process is stopped by its guard
//! (the server's, the fake API's), and every socket is on loopback.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};

use crate::fakeapi::{FakeApi, namespace, service};
use crate::operations::http_get;
use crate::support::*;

// ------------------------------------------------------------------------------------
// The suite

/// A case's report line (what was tried, what was measured), or why it failed.
pub(crate) type Outcome = Result<String, String>;

/// One fault case: a name to select it by, and the run that reports its figures.
pub(crate) struct Case {
    pub(crate) name: &'static str,
    pub(crate) run: fn() -> Outcome,
}

const CASES: &[Case] = &[
    Case {
        name: "tcp idle flood",
        run: tcp_idle_flood,
    },
    Case {
        name: "tcp half-sent prefixes",
        run: tcp_half_sent,
    },
    Case {
        name: "tcp slow readers",
        run: tcp_slow_readers,
    },
    Case {
        name: "tcp backlogged readers",
        run: tcp_backlogged_readers,
    },
    Case {
        name: "tcp connection flood",
        run: tcp_connection_flood,
    },
    Case {
        name: "api huge watch line",
        run: || api_case(Abuse::HugeWatchLine),
    },
    Case {
        name: "api huge list object",
        run: || api_case(Abuse::HugeListItem),
    },
    Case {
        name: "api endless watch stream",
        run: || api_case(Abuse::EndlessWatch),
    },
    Case {
        name: "api endless list",
        run: || api_case(Abuse::EndlessList),
    },
    Case {
        name: "api malformed json",
        run: || api_case(Abuse::Malformed),
    },
    Case {
        name: "api silent and trickling",
        run: || api_case(Abuse::Slow),
    },
    Case {
        name: "forward overload",
        run: forward_overload,
    },
    Case {
        name: "udp overload",
        run: udp_overload,
    },
    Case {
        name: "udp flood then sigterm",
        run: udp_flood_sigterm,
    },
];

/// Every case of the suite: this file's, then those of the `hardening_*` files (issue 16).
fn suite() -> impl Iterator<Item = &'static Case> {
    CASES
        .iter()
        .chain(crate::hardening_probes::CASES)
        .chain(crate::hardening_answers::CASES)
        .chain(crate::hardening_inputs::CASES)
}

#[test]
fn fault_suite() {
    let only: Vec<String> = std::env::var("CLUSTERDNS_FAULT_CASES")
        .map(|v| {
            v.split(',')
                .map(|w| w.trim().to_string())
                .filter(|w| !w.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let began = Instant::now();
    let (mut passed, mut failed) = (0, 0);
    let mut failures = Vec::new();
    for case in suite() {
        if !only.is_empty() && !only.iter().any(|w| case.name.contains(w.as_str())) {
            continue;
        }
        let t = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(case.run)).unwrap_or_else(|p| {
            let text = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("panicked: {text}"))
        });
        let secs = t.elapsed().as_secs_f64();
        match outcome {
            Ok(line) => {
                passed += 1;
                eprintln!("fault: {}: {line}: ok ({secs:.1}s)", case.name);
            }
            Err(why) => {
                failed += 1;
                eprintln!("fault: {}: FAILED: {why} ({secs:.1}s)", case.name);
                failures.push(case.name);
            }
        }
    }
    eprintln!(
        "fault suite: {passed} passed, {failed} failed ({:.0}s)",
        began.elapsed().as_secs_f64()
    );
    assert!(failed == 0, "fault cases failed: {failures:?}");
}

/// Returns `Err(message)` from the case unless `cond` holds (the `hardening_*` files
/// use it too: `mod hardening` is `#[macro_use]`).
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        let holds: bool = $cond;
        if !holds {
            return Err(format!($($fmt)+));
        }
    };
}

// ------------------------------------------------------------------------------------
// The process under test, seen from /proc

pub(crate) fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

pub(crate) fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Whether the process exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Datagrams the kernel dropped on the UDP sockets bound to `port` (a full receive
/// queue), from /proc/net/udp.
fn udp_drops(pid: u32, port: u16) -> u64 {
    let suffix = format!(":{port:04X}");
    std::fs::read_to_string(format!("/proc/{pid}/net/udp"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|a| a.ends_with(&suffix)))
        .filter_map(|l| l.split_whitespace().last().and_then(|d| d.parse::<u64>().ok()))
        .sum()
}

/// Established TCP connections on the server's `port` (its side of them) and the bytes
/// waiting unread in their receive queues, from /proc/net/tcp.
fn tcp_unread(pid: u32, port: u16) -> (usize, u64) {
    let suffix = format!(":{port:04X}");
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    let mut n = 0;
    let mut unread = 0;
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() > 4 && f[1].ends_with(&suffix) && f[3] == "01" {
            n += 1;
            unread += f[4]
                .split_once(':')
                .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
                .unwrap_or(0);
        }
    }
    (n, unread)
}

pub(crate) fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Waits until the server's descriptor count is back to `base` (or below); returns how
/// long that took, or the count it was stuck at.
pub(crate) fn fds_back(pid: u32, base: usize, timeout: Duration) -> Result<Duration, usize> {
    let t = Instant::now();
    loop {
        let n = fd_count(pid);
        if n <= base {
            return Ok(t.elapsed());
        }
        if t.elapsed() >= timeout {
            return Err(n);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The descriptor count once it has not changed for 300 ms.
pub(crate) fn settled_fds(pid: u32) -> usize {
    let mut last = fd_count(pid);
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(300));
        let n = fd_count(pid);
        if n == last {
            return n;
        }
        last = n;
    }
    last
}

/// RSS samples over a case.
struct Rss {
    t0: Instant,
    samples: Vec<(Duration, u64)>,
}

impl Rss {
    fn new() -> Rss {
        Rss {
            t0: Instant::now(),
            samples: Vec::new(),
        }
    }

    fn sample(&mut self, pid: u32) -> u64 {
        let kb = rss_kb(pid);
        self.samples.push((self.t0.elapsed(), kb));
        kb
    }

    fn peak(&self) -> u64 {
        self.samples.iter().map(|s| s.1).max().unwrap_or(0)
    }

    /// The lowest sample in `[from, to)` (transient spikes do not raise it).
    fn floor(&self, from: Duration, to: Duration) -> u64 {
        self.samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|s| s.1)
            .min()
            .unwrap_or(0)
    }

    fn span(&self) -> Duration {
        self.samples.last().map_or(Duration::ZERO, |s| s.0)
    }
}

// ------------------------------------------------------------------------------------
// HTTP and DNS clients

/// A query in wire form (RD, no EDNS): `name` as dotted labels.
fn wire_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m
}

/// (ID, rcode, answer count) of a reply; None for anything but a response.
fn reply_header(b: &[u8]) -> Option<(u16, u8, u16)> {
    if b.len() < 12 || b[2] & 0x80 == 0 {
        return None;
    }
    Some((
        u16::from_be_bytes([b[0], b[1]]),
        b[3] & 0x0f,
        u16::from_be_bytes([b[6], b[7]]),
    ))
}

/// One UDP query for `name` A on `sock`: Ok(latency) when the answer holds `want`.
fn probe_once(
    sock: &UdpSocket,
    to: SocketAddr,
    id: u16,
    name: &str,
    want: &str,
    wait: Duration,
) -> Result<Duration, String> {
    let q = query_bytes(name, Rtype::A, Some(1232), id);
    let t = Instant::now();
    sock.send_to(&q, to).map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 4096];
    loop {
        let left = wait.saturating_sub(t.elapsed());
        if left.is_zero() {
            return Err("lost".into());
        }
        sock.set_read_timeout(Some(left)).unwrap();
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            return Err("lost".into());
        };
        if n < 2 || u16::from_be_bytes([buf[0], buf[1]]) != id {
            continue;
        }
        let took = t.elapsed();
        let msg = Message::from_octets(buf[..n].to_vec()).map_err(|e| format!("unparsable reply: {e}"))?;
        let answers = section(&msg, "answer");
        let suffix = format!(" A {want}");
        if rcode(&msg) != Rcode::NOERROR || !answers.iter().any(|a| a.ends_with(&suffix)) {
            return Err(format!("{name}: {} {answers:?}", rcode(&msg)));
        }
        return Ok(took);
    }
}

#[derive(Default)]
struct ProbeStats {
    sent: usize,
    lost: usize,
    wrong: Vec<String>,
    latencies: Vec<Duration>,
}

impl ProbeStats {
    fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() - 1) as f64 * p).round() as usize]
    }

    fn summary(&self) -> String {
        format!(
            "UDP {}/{} answered, p50 {:.1}ms p99 {:.1}ms",
            self.latencies.len(),
            self.sent,
            ms(self.pct(0.5)),
            ms(self.pct(0.99)),
        )
    }

    /// No query lost or answered wrong, and p99 under `p99_max`.
    fn clean(&self, p99_max: Duration) -> Result<(), String> {
        check!(self.sent > 0, "no probe was sent");
        check!(
            self.lost == 0 && self.wrong.is_empty(),
            "probes: {} lost, {} wrong (first: {:?}) of {}",
            self.lost,
            self.wrong.len(),
            self.wrong.first(),
            self.sent
        );
        check!(
            self.pct(0.99) <= p99_max,
            "probes p99 {:.1}ms over {:?} ({})",
            ms(self.pct(0.99)),
            p99_max,
            self.summary()
        );
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Sequential UDP probes in the background: `(name, address wanted)` in turn, one every
/// `every`, each waiting up to 2 s for its answer.
struct Prober {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<ProbeStats>>,
}

impl Prober {
    fn start(to: SocketAddr, names: &[(&str, &str)], every: Duration) -> Prober {
        let names: Vec<(String, String)> = names.iter().map(|(n, a)| (n.to_string(), a.to_string())).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut st = ProbeStats::default();
            let mut id = 0u16;
            // Bounded: at most 10 minutes of probes.
            let end = Instant::now() + Duration::from_secs(600);
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                let (name, want) = &names[st.sent % names.len()];
                id = id.wrapping_add(1);
                st.sent += 1;
                match probe_once(&sock, to, id, name, want, Duration::from_secs(2)) {
                    Ok(l) => st.latencies.push(l),
                    Err(e) if e == "lost" => st.lost += 1,
                    Err(e) => st.wrong.push(e),
                }
                std::thread::sleep(every);
            }
            st
        });
        Prober {
            stop,
            handle: Some(handle),
        }
    }

    fn stop(mut self) -> ProbeStats {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ------------------------------------------------------------------------------------
// The UDP load generator: a few threads, each with a connected non-blocking socket,
// sendmmsg/recvmmsg in batches; closed loop (a window of queries in flight) or open loop
// (a fixed offered rate, whatever comes back).

const BATCH: usize = 32;

#[derive(Clone)]
enum Names {
    /// These queries in turn (the ID is rewritten).
    Cycle(Arc<Vec<Vec<u8>>>),
    /// A new name per query under this zone (so that nothing coalesces or caches).
    Unique(&'static str),
}

#[derive(Clone)]
struct Load {
    to: SocketAddr,
    threads: usize,
    duration: Duration,
    /// Offered queries per second over all threads; None: closed loop with `window`.
    rate: Option<f64>,
    window: usize,
    names: Names,
    /// How long to keep reading replies after the last send.
    grace: Duration,
}

#[derive(Clone, Default)]
struct LoadStats {
    sent: u64,
    replies: u64,
    /// NOERROR with at least one answer.
    ok: u64,
    rcodes: [u64; 16],
    /// `ok` replies per second of the run.
    per_sec_ok: Vec<u64>,
    /// Replies within 100 ms of their query, by rcode.
    fast: [u64; 16],
    /// Replies later than 1 s after their query.
    late: u64,
}

impl LoadStats {
    fn merge(&mut self, o: &LoadStats) {
        self.sent += o.sent;
        self.replies += o.replies;
        self.ok += o.ok;
        for i in 0..16 {
            self.rcodes[i] += o.rcodes[i];
            self.fast[i] += o.fast[i];
        }
        self.late += o.late;
        if self.per_sec_ok.len() < o.per_sec_ok.len() {
            self.per_sec_ok.resize(o.per_sec_ok.len(), 0);
        }
        for (i, n) in o.per_sec_ok.iter().enumerate() {
            self.per_sec_ok[i] += n;
        }
    }
}

fn rcode_name(rc: usize) -> String {
    Rcode::checked_from_int(rc as u8).map_or_else(|| rc.to_string(), |r| r.to_string())
}

fn rcode_counts(c: &[u64; 16]) -> String {
    let parts: Vec<String> = (0..16)
        .filter(|i| c[*i] > 0)
        .map(|i| format!("{} {}", c[i], rcode_name(i)))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

fn run_load(load: &Load, stop: &Arc<AtomicBool>) -> LoadStats {
    let handles: Vec<JoinHandle<LoadStats>> = (0..load.threads)
        .map(|t| {
            let (l, stop) = (load.clone(), stop.clone());
            std::thread::spawn(move || load_thread(&l, t, &stop))
        })
        .collect();
    let mut total = LoadStats::default();
    for h in handles {
        total.merge(&h.join().unwrap());
    }
    total
}

fn set_sockopt(fd: i32, opt: i32, value: i32) {
    // SAFETY: setsockopt on a socket we own, with a pointer to a live i32.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
    }
}

fn send_batch(fd: i32, bufs: &[Vec<u8>]) -> usize {
    let mut iov: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: the headers point at `iov`, which points at `bufs`; all outlive the call.
    let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), hdrs.len() as u32, 0) };
    n.max(0) as usize
}

/// Receives what is queued (without waiting) into `bufs`; returns the lengths.
fn recv_batch(fd: i32, bufs: &mut [[u8; 1024]], lens: &mut Vec<usize>) {
    lens.clear();
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: as in send_batch.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: the headers point at `iov`, which points at `bufs`; all outlive the call.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            hdrs.len() as u32,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    for h in hdrs.iter().take(n.max(0) as usize) {
        lens.push(h.msg_len as usize);
    }
}

fn wait_readable(fd: i32, timeout_ms: i32) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one live descriptor.
    unsafe {
        libc::poll(&mut p, 1, timeout_ms);
    }
}

/// A load thread's receiving side: reads what arrived and counts it.
struct Rx {
    fd: i32,
    start: Instant,
    inb: Vec<[u8; 1024]>,
    lens: Vec<usize>,
    /// When each query ID was last sent.
    sent_at: Vec<Option<Instant>>,
}

impl Rx {
    /// Reads every reply queued; returns how many there were.
    fn receive(&mut self, st: &mut LoadStats, in_flight: &mut usize, last_reply: &mut Instant) -> usize {
        let mut got = 0;
        loop {
            recv_batch(self.fd, &mut self.inb, &mut self.lens);
            if self.lens.is_empty() {
                return got;
            }
            let now = Instant::now();
            *last_reply = now;
            for (i, n) in self.lens.iter().enumerate() {
                let Some((id, rc, an)) = reply_header(&self.inb[i][..*n]) else {
                    continue;
                };
                got += 1;
                *in_flight = in_flight.saturating_sub(1);
                st.replies += 1;
                st.rcodes[rc as usize] += 1;
                if rc == 0 && an > 0 {
                    st.ok += 1;
                    let sec = now.duration_since(self.start).as_secs() as usize;
                    if st.per_sec_ok.len() <= sec {
                        st.per_sec_ok.resize(sec + 1, 0);
                    }
                    st.per_sec_ok[sec] += 1;
                }
                if let Some(at) = self.sent_at[id as usize].take() {
                    let took = now.duration_since(at);
                    if took < Duration::from_millis(100) {
                        st.fast[rc as usize] += 1;
                    } else if took > Duration::from_secs(1) {
                        st.late += 1;
                    }
                }
            }
        }
    }
}

fn load_thread(l: &Load, t: usize, stop: &AtomicBool) -> LoadStats {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    set_sockopt(sock.as_raw_fd(), libc::SO_RCVBUF, 4 << 20);
    sock.connect(l.to).unwrap();
    sock.set_nonblocking(true).unwrap();
    let fd = sock.as_raw_fd();
    let mut st = LoadStats::default();
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    let per_thread = l.rate.map(|r| r / l.threads as f64);
    let mut in_flight = 0usize;
    let start = Instant::now();
    let mut last_reply = start;
    let mut seq: u64 = 0;
    let mut rx = Rx {
        fd,
        start,
        inb: vec![[0u8; 1024]; BATCH],
        lens: Vec::with_capacity(BATCH),
        sent_at: vec![None; 65536],
    };
    loop {
        let now = Instant::now();
        let elapsed = now.duration_since(start);
        if stop.load(Ordering::Relaxed) || elapsed >= l.duration {
            break;
        }
        let want = match per_thread {
            Some(r) => {
                let due = (elapsed.as_secs_f64() * r) as u64;
                due.saturating_sub(st.sent).min(BATCH as u64) as usize
            }
            None => {
                // Closed loop: replies lost for 50 ms free their place in the window.
                if in_flight > 0 && now.duration_since(last_reply) > Duration::from_millis(50) {
                    in_flight = 0;
                    last_reply = now;
                }
                l.window.saturating_sub(in_flight).min(BATCH)
            }
        };
        if want > 0 {
            out.clear();
            for _ in 0..want {
                let id = (seq & 0xffff) as u16;
                let mut q = match &l.names {
                    Names::Cycle(qs) => qs[(seq as usize + t * 7) % qs.len()].clone(),
                    Names::Unique(zone) => wire_query(0, &format!("q{t}x{seq}.{zone}"), 1),
                };
                q[..2].copy_from_slice(&id.to_be_bytes());
                rx.sent_at[id as usize] = Some(now);
                out.push(q);
                seq += 1;
            }
            let n = send_batch(fd, &out);
            st.sent += n as u64;
            in_flight += n;
        }
        let got = rx.receive(&mut st, &mut in_flight, &mut last_reply);
        if want == 0 && got == 0 {
            wait_readable(fd, 1);
        }
    }
    let end = Instant::now() + l.grace;
    while Instant::now() < end {
        rx.receive(&mut st, &mut in_flight, &mut last_reply);
        wait_readable(fd, 5);
    }
    st
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

/// The sum of a metric's samples whose line contains every one of `having`.
fn metric_sum(text: &str, name: &str, having: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| having.iter().all(|h| l.contains(h)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
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

fn framed(q: &[u8]) -> Vec<u8> {
    let mut f = (q.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(q);
    f
}

/// `name` A over a new TCP connection: the time to an answer, or why there was none
/// within 1 s.
fn tcp_probe(to: SocketAddr, id: u16, name: &str) -> Result<Duration, String> {
    let t = Instant::now();
    let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(1)).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    c.write_all(&framed(&wire_query(id, name, 1)))
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
    let query = framed(&wire_query(7, "a.example.org", 1));
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
    let query = framed(&wire_query(9, "mid.example.org", 1));
    let (never, trickle) = (10usize, 4usize);
    let mut conns = Vec::new();
    for _ in 0..never + trickle {
        let c = connect_small_window(s.addr(), 4096).map_err(|e| format!("connect: {e}"))?;
        c.set_nonblocking(true).unwrap();
        conns.push((c, 0usize));
    }
    // Pipeline up to 100,000 queries each (3.5 MB), for at most 1.5 s, as far as the
    // server (and the kernel's buffers) take them.
    let mut rss = Rss::new();
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
        rss.sample(pid);
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
        rss.sample(pid);
        let fds = fd_count(pid);
        peak_fds = peak_fds.max(fds);
        if fds <= base && all_closed.is_none() {
            all_closed = Some(trickle_start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let back = loop {
        rss.sample(pid);
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
    let query = framed(&wire_query(11, "big.example.org", 1));
    let mut conns = Vec::new();
    for _ in 0..n {
        let c = connect(s.addr()).map_err(|e| format!("connect: {e}"))?;
        c.set_nonblocking(true).unwrap();
        conns.push((c, 0usize, 0usize));
    }
    let rss0 = rss_kb(pid);
    let mut rss = Rss::new();
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
        rss.sample(pid);
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
                let query = framed(&wire_query(5, "a.example.org", 1));
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
    let mut objects = super::kubernetes::base();
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
            .map(|i| wire_query(0, &format!("svc{i}.load.svc.cluster.local"), 1))
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
    };
    let cap = run_load(&closed, &stop);
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
    let flag = stop.clone();
    let handle = std::thread::spawn(move || run_load(&flood, &flag));
    let mut rss = Rss::new();
    let mut problems = Vec::new();
    let (mut health_max, mut metrics_max, mut tcp_max) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut health_n, mut metrics_n, mut tcp_n) = (0, 0, 0);
    let mut tick = 0u64;
    while !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(250));
        rss.sample(pid);
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
    if std::env::var("CLUSTERDNS_FAULT_TRACE").is_ok() {
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
    let counted = metric_sum(&m, "coredns_dns_requests_total", &[]);
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
    let api = FakeApi::with_objects(super::kubernetes::base());
    let mut k = kube_server(&api.url(), &["-workers", "1"])?;
    let names: Arc<Vec<Vec<u8>>> = Arc::new(ANCHORS.iter().map(|(n, _)| wire_query(0, n, 1)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let flood = Load {
        to: k.server.addr(),
        threads: 2,
        duration: Duration::from_secs(6),
        rate: Some(400_000.0),
        window: 96,
        names: Names::Cycle(names),
        grace: Duration::ZERO,
    };
    let flag = stop.clone();
    let handle = std::thread::spawn(move || run_load(&flood, &flag));
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
/// pending table: the table caps (one socket per pending exchange, so the descriptor
/// count shows it), queries beyond it are refused at once, memory stays bounded, local
/// names keep answering, and every upstream socket is closed afterwards.
fn forward_overload() -> Outcome {
    // Bound and never read: a silent upstream.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let text = format!(
        "example.org:{{port}} {{\n    bind 127.0.0.1\n    hosts {{\n        192.0.2.1 a.example.org\n    }}\n}}\n.:{{port}} {{\n    bind 127.0.0.1\n    forward . {}\n}}\n",
        silent.local_addr().unwrap()
    );
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
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || run_load(&flood, &flag));
    let mut rss = Rss::new();
    let mut peak_fds = 0;
    while !handle.is_finished() {
        rss.sample(pid);
        peak_fds = peak_fds.max(fd_count(pid));
        if !alive(pid) {
            stop.store(true, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = handle.join().unwrap();
    let probes = prober.stop();
    check!(alive(pid), "server died");
    let back = fds_back(pid, base, Duration::from_secs(4))
        .map_err(|n| format!("server descriptors stuck at {n} (base {base}) after every exchange timed out"))?;
    let pending_peak = peak_fds.saturating_sub(base);
    check!(
        pending_peak <= 4096 + 16,
        "{pending_peak} descriptors over base during the flood: the pending table (4096 per worker) did not cap"
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
        "{} unique names at {rate:.0}/s for {secs}s to a silent upstream (1 worker): pending table capped at {pending_peak} exchanges (fds), {fast} answered at once ({}), {} answered when their exchange timed out (2s), {unanswered} unanswered; RSS {:.1} -> peak {:.1} MiB; fds back to {base} {:.1}s after; local names {}",
        st.sent,
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
// API abuse: a proxy in front of the fake API that, when told, answers itself, badly

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Abuse {
    /// Pass everything to the fake API.
    None,
    /// Watches get one 50 MB event line.
    HugeWatchLine,
    /// Watches get a 410 (relist); lists get a 50 MB item (an ignored field) and an item
    /// with a 50 MB name, then the body breaks off.
    HugeListItem,
    /// Watches get bookmarks and garbage lines, as fast as they are read, without end.
    EndlessWatch,
    /// Watches get a 410; lists get new, valid objects without end.
    EndlessList,
    /// Malformed watch lines, broken chunking, HTML, lists with broken or mistyped JSON.
    Malformed,
    /// Requests never answered, or watch streams that trickle one byte every 200 ms.
    Slow,
}

const HUGE: usize = 50 << 20;

struct BadShared {
    upstream: SocketAddr,
    mode: Mutex<(Abuse, u64)>,
    stop: AtomicBool,
    conns: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
    /// Abusive responses started, and bytes of them written.
    abusive: AtomicU64,
    bytes: AtomicU64,
    /// Objects sent by endless lists.
    items: AtomicU64,
    /// The resourceVersion bookmarks carry (the fake API's, so that resuming from it is
    /// sound).
    rv: AtomicU64,
    requests: AtomicU64,
}

impl BadShared {
    fn current(&self) -> (Abuse, u64) {
        *self.mode.lock().unwrap()
    }

    fn still(&self, generation: u64) -> bool {
        !self.stop.load(Ordering::Relaxed) && self.current().1 == generation
    }

    fn track(&self, s: &TcpStream) -> Option<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.conns.lock().unwrap().insert(id, s.try_clone().ok()?);
        Some(id)
    }

    fn untrack(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.conns.lock().unwrap().remove(&id);
        }
    }

    fn wrote(&self, s: &mut TcpStream, data: &[u8]) -> io::Result<()> {
        s.write_all(data)?;
        self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

struct BadApi {
    addr: SocketAddr,
    shared: Arc<BadShared>,
    accept: Option<JoinHandle<()>>,
}

impl BadApi {
    fn start(upstream: SocketAddr) -> BadApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(BadShared {
            upstream,
            mode: Mutex::new((Abuse::None, 0)),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            abusive: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            items: AtomicU64::new(0),
            rv: AtomicU64::new(1),
            requests: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let accept = std::thread::spawn(move || {
            let mut handlers: Vec<JoinHandle<()>> = Vec::new();
            while !sh.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let sh = sh.clone();
                        handlers.push(std::thread::spawn(move || serve_bad(&sh, s)));
                        handlers.retain(|h| !h.is_finished());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for h in handlers {
                let _ = h.join();
            }
        });
        BadApi {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches behaviour and cuts every open connection, so that the client's next
    /// requests see the new one.
    fn set(&self, abuse: Abuse, rv: u64) {
        self.shared.rv.store(rv, Ordering::Relaxed);
        {
            let mut m = self.shared.mode.lock().unwrap();
            *m = (abuse, m.1 + 1);
        }
        for s in self.shared.conns.lock().unwrap().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for BadApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.set(Abuse::None, 1);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// Reads a request head; returns it raw with its path and query.
fn read_head(r: &mut BufReader<TcpStream>) -> Option<(Vec<u8>, String, String)> {
    let mut head = Vec::new();
    let mut line = String::new();
    for _ in 0..100 {
        line.clear();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.extend_from_slice(line.as_bytes());
        if line == "\r\n" || line == "\n" {
            let first = String::from_utf8_lossy(&head).lines().next()?.to_string();
            let target = first.split_whitespace().nth(1)?.to_string();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            return Some((head, path.to_string(), query.to_string()));
        }
    }
    None
}

/// Kind and apiVersion of the collection a path names.
fn kind_of(path: &str) -> (&'static str, &'static str) {
    if path.ends_with("/endpointslices") {
        ("EndpointSlice", "discovery.k8s.io/v1")
    } else if path.ends_with("/services") {
        ("Service", "v1")
    } else if path.ends_with("/pods") {
        ("Pod", "v1")
    } else {
        ("Namespace", "v1")
    }
}

/// A valid object of `kind` named `junk-N` (namespace `junk`).
fn junk(kind: &str, n: u64) -> String {
    let (a, b) = ((n >> 8) & 0xff, n & 0xff);
    match kind {
        "Service" => format!(
            r#"{{"kind":"Service","apiVersion":"v1","metadata":{{"name":"junk-{n}","namespace":"junk","resourceVersion":"1","uid":"u{n}"}},"spec":{{"type":"ClusterIP","clusterIP":"10.200.{a}.{b}","clusterIPs":["10.200.{a}.{b}"],"ports":[{{"name":"http","port":80,"protocol":"TCP"}}]}}}}"#
        ),
        "EndpointSlice" => format!(
            r#"{{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":{{"name":"junk-{n}","namespace":"junk","resourceVersion":"1","labels":{{"kubernetes.io/service-name":"junk-{n}"}}}},"addressType":"IPv4","endpoints":[{{"addresses":["10.201.{a}.{b}"],"conditions":{{"ready":true}}}}],"ports":[{{"name":"http","port":80,"protocol":"TCP"}}]}}"#
        ),
        _ => format!(r#"{{"kind":"{kind}","apiVersion":"v1","metadata":{{"name":"junk-{n}","resourceVersion":"1"}}}}"#),
    }
}

const CHUNKED_200: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
const PLAIN_200: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";

fn chunk_of(data: &[u8]) -> Vec<u8> {
    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
    c.extend_from_slice(data);
    c.extend_from_slice(b"\r\n");
    c
}

fn gone_410() -> Vec<u8> {
    let body = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version","reason":"Expired","code":410}"#;
    format!(
        "HTTP/1.1 410 Gone\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const GARBAGE: [&str; 9] = [
    "not json at all",
    r#"{"type":"ADDED"}"#,
    r#"{"type":"MODIFIED","object":[]}"#,
    r#"{"type":"NOPE","object":{}}"#,
    "{}",
    "[1,2,3]",
    r#"{"type":"ADDED","object":{"kind":"Service","metadata":{"name":42}}}"#,
    r#"{"type":"DELETED","object":{"kind":"Service","metadata":{"namespace":"team-a"}}}"#,
    r#"{"type":"ADDED","object":{"kind":"Service","metadata":{"name":"x","namespace":"team-a"},"spec":{"clusterIP":"not-an-ip","ports":"80"}}}"#,
];

/// Writes `len` bytes of `x` in 1 MiB pieces (chunked or not) while the generation lasts.
fn pad(sh: &BadShared, s: &mut TcpStream, len: usize, chunked: bool, generation: u64) -> io::Result<()> {
    let piece = vec![b'x'; 1 << 20];
    let mut left = len;
    while left > 0 {
        if !sh.still(generation) {
            return Err(io::Error::other("mode changed"));
        }
        let n = left.min(piece.len());
        if chunked {
            sh.wrote(s, &chunk_of(&piece[..n]))?;
        } else {
            sh.wrote(s, &piece[..n])?;
        }
        left -= n;
    }
    Ok(())
}

/// Waits until the mode changes (a held request or stream).
fn hold(sh: &BadShared, generation: u64, limit: Duration) {
    let end = Instant::now() + limit;
    while sh.still(generation) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve_bad(sh: &BadShared, client: TcpStream) {
    let id = sh.track(&client);
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut out = client;
    if let Some((head, path, query)) = read_head(&mut reader) {
        let n = sh.requests.fetch_add(1, Ordering::Relaxed);
        let (mode, generation) = sh.current();
        let watch = query.split('&').any(|p| p == "watch=1" || p == "watch=true");
        if mode == Abuse::None {
            pipe(sh, reader, out, &head);
        } else {
            sh.abusive.fetch_add(1, Ordering::Relaxed);
            let _ = abuse(sh, &mut out, mode, generation, watch, &path, n);
            let _ = out.shutdown(Shutdown::Both);
        }
    }
    sh.untrack(id);
}

/// Passes the connection through to the fake API until either side closes it.
fn pipe(sh: &BadShared, mut reader: BufReader<TcpStream>, mut out: TcpStream, head: &[u8]) {
    let Ok(mut up) = TcpStream::connect(sh.upstream) else {
        return;
    };
    let up_id = sh.track(&up);
    let _ = reader.get_ref().set_read_timeout(None);
    if up.write_all(head).is_ok() {
        let mut up_read = up.try_clone().unwrap();
        let back = std::thread::spawn(move || {
            let _ = io::copy(&mut up_read, &mut out);
            let _ = out.shutdown(Shutdown::Both);
        });
        let _ = io::copy(&mut reader, &mut up);
        let _ = up.shutdown(Shutdown::Both);
        let _ = back.join();
    }
    sh.untrack(up_id);
}

fn abuse(
    sh: &BadShared,
    s: &mut TcpStream,
    mode: Abuse,
    generation: u64,
    watch: bool,
    path: &str,
    n: u64,
) -> io::Result<()> {
    let (kind, api_version) = kind_of(path);
    let rv = sh.rv.load(Ordering::Relaxed);
    let list_head = format!(
        r#"{{"kind":"{kind}List","apiVersion":"{api_version}","metadata":{{"resourceVersion":"{rv}"}},"items":["#
    );
    let limit = Duration::from_secs(60);
    match (mode, watch) {
        (Abuse::None, _) => Ok(()),
        (Abuse::HugeWatchLine, true) => {
            sh.wrote(s, CHUNKED_200.as_bytes())?;
            let start = format!(
                r#"{{"type":"MODIFIED","object":{{"kind":"{kind}","apiVersion":"{api_version}","metadata":{{"name":"huge","namespace":"default","resourceVersion":"{rv}","annotations":{{"pad":""#
            );
            sh.wrote(s, &chunk_of(start.as_bytes()))?;
            pad(sh, s, HUGE, true, generation)?;
            sh.wrote(s, &chunk_of(b"\"}}}}\n"))?;
            sh.wrote(s, b"0\r\n\r\n")
        }
        (Abuse::HugeListItem | Abuse::EndlessList, true) => sh.wrote(s, &gone_410()),
        (Abuse::HugeListItem, false) => {
            sh.wrote(s, PLAIN_200.as_bytes())?;
            sh.wrote(s, list_head.as_bytes())?;
            // An item with a huge field the decoder reads (the name)...
            sh.wrote(
                s,
                format!(r#"{{"kind":"{kind}","apiVersion":"{api_version}","metadata":{{"name":""#).as_bytes(),
            )?;
            pad(sh, s, HUGE, false, generation)?;
            sh.wrote(s, br#"","namespace":"default"}},"#)?;
            // ...and one with a huge field it skips.
            let ignored = format!(
                r#"{{"kind":"{kind}","apiVersion":"{api_version}","metadata":{{"name":"huge-a","namespace":"default","annotations":{{"pad":""#
            );
            sh.wrote(s, ignored.as_bytes())?;
            pad(sh, s, HUGE, false, generation)?;
            sh.wrote(s, b"\"}}}")
            // The body breaks off here: the list never completes.
        }
        (Abuse::EndlessWatch, true) => {
            sh.wrote(s, CHUNKED_200.as_bytes())?;
            let bookmark = format!(
                r#"{{"type":"BOOKMARK","object":{{"kind":"{kind}","apiVersion":"{api_version}","metadata":{{"resourceVersion":"{rv}"}}}}}}"#
            );
            let mut block = String::new();
            while block.len() < 64 << 10 {
                block.push_str(&bookmark);
                block.push('\n');
                for g in GARBAGE {
                    block.push_str(g);
                    block.push('\n');
                }
                block.push('\n');
            }
            let c = chunk_of(block.as_bytes());
            let end = Instant::now() + limit;
            while sh.still(generation) && Instant::now() < end {
                sh.wrote(s, &c)?;
            }
            Ok(())
        }
        (Abuse::EndlessList, false) => {
            sh.wrote(s, CHUNKED_200.as_bytes())?;
            sh.wrote(s, &chunk_of(list_head.as_bytes()))?;
            let end = Instant::now() + limit;
            let mut i = 0u64;
            while sh.still(generation) && Instant::now() < end {
                let mut block = String::new();
                for _ in 0..64 {
                    if i > 0 {
                        block.push(',');
                    }
                    block.push_str(&junk(kind, i));
                    i += 1;
                }
                sh.wrote(s, &chunk_of(block.as_bytes()))?;
                sh.items.fetch_add(64, Ordering::Relaxed);
            }
            Ok(())
        }
        (Abuse::Malformed, true) => match n % 4 {
            // Garbage lines, then a clean end after more than a second.
            0 | 3 => {
                sh.wrote(s, CHUNKED_200.as_bytes())?;
                for _ in 0..20 {
                    for g in GARBAGE {
                        sh.wrote(s, &chunk_of(format!("{g}\n").as_bytes()))?;
                    }
                }
                hold(sh, generation, Duration::from_millis(1200));
                sh.wrote(s, b"0\r\n\r\n")
            }
            // A 410 ERROR event: the client lists (and gets a broken list).
            1 => {
                sh.wrote(s, CHUNKED_200.as_bytes())?;
                let e = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old","reason":"Expired","code":410}}"#;
                sh.wrote(s, &chunk_of(format!("{e}\n").as_bytes()))?;
                sh.wrote(s, b"0\r\n\r\n")
            }
            // Broken chunked framing.
            _ => {
                sh.wrote(s, CHUNKED_200.as_bytes())?;
                sh.wrote(s, b"zz\r\n{\"type\":\"ADDED\"}\n\r\n")
            }
        },
        (Abuse::Malformed, false) => match n % 3 {
            0 => {
                sh.wrote(s, PLAIN_200.as_bytes())?;
                sh.wrote(s, list_head.as_bytes())?;
                sh.wrote(s, br#"{"metadata":{"name":"x""#)
            }
            1 => {
                sh.wrote(s, PLAIN_200.as_bytes())?;
                sh.wrote(
                    s,
                    format!(r#"{{"kind":"{kind}List","metadata":"nope","items":{{"a":1}}}}"#).as_bytes(),
                )
            }
            _ => {
                sh.wrote(s, PLAIN_200.as_bytes())?;
                sh.wrote(s, b"<html><body>502 Bad Gateway</body></html>")
            }
        },
        (Abuse::Slow, true) if n.is_multiple_of(2) => {
            sh.wrote(s, CHUNKED_200.as_bytes())?;
            let line = format!(r#"{{"type":"BOOKMARK","object":{{"metadata":{{"resourceVersion":"{rv}"}}}}}}"#);
            let end = Instant::now() + limit;
            let mut i = 0;
            while sh.still(generation) && Instant::now() < end {
                let b = line.as_bytes()[i % line.len()];
                sh.wrote(s, &chunk_of(&[b]))?;
                i += 1;
                hold(sh, generation, Duration::from_millis(200));
            }
            Ok(())
        }
        (Abuse::Slow, _) => {
            hold(sh, generation, limit);
            Ok(())
        }
        // Lists while watches are abused: pass through would need the connection; refuse.
        (Abuse::HugeWatchLine | Abuse::EndlessWatch, false) => sh.wrote(s, &gone_410()),
    }
}

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

/// One API abuse: sync from the fake API through the proxy, turn the proxy bad for a
/// while, and check the server keeps answering its last snapshot with bounded memory,
/// stays healthy and ready, then heals once the API does.
fn api_case(abuse: Abuse) -> Outcome {
    let api = FakeApi::with_objects(super::kubernetes::base());
    let bad = BadApi::start(api.addr());
    let k = kube_server(&bad.url(), &[])?;
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
    bad.set(abuse, api.rv());
    let mut rss = Rss::new();
    let t = Instant::now();
    let mut problems: Vec<String> = Vec::new();
    while t.elapsed() < span {
        let kb = rss.sample(pid);
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
    let items = bad.shared.items.load(Ordering::Relaxed);
    let during = endpoints_up(&k);
    let snapshot_services = |m: &str| metric_sum(m, "clusterdns_kubernetes_objects", &["\"services\""]);
    let services_during = during.as_ref().map_or(0.0, |m| snapshot_services(m));
    let namespaces_during = during.as_ref().map_or(0.0, |m| {
        metric_sum(m, "clusterdns_kubernetes_objects", &["\"namespaces\""])
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
    if std::env::var("CLUSTERDNS_FAULT_TRACE").is_ok() {
        let trace: Vec<String> = rss
            .samples
            .iter()
            .map(|(t, kb)| format!("{:.1}:{:.0}", t.as_secs_f64(), mib(*kb)))
            .collect();
        eprintln!("rss trace: {}", trace.join(" "));
    }
    // The API heals.
    bad.set(Abuse::None, api.rv());
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
    let abusive = bad.shared.abusive.load(Ordering::Relaxed);
    let bytes = bad.shared.bytes.load(Ordering::Relaxed);
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
