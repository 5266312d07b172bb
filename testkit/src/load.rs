//! The UDP load generator and the loopback floor.
//!
//! [`Load`]: a few threads, each with a few connected non-blocking sockets, sending with
//! sendmmsg and reading with recvmmsg in batches; closed loop (a window of queries in
//! flight per socket, the benches' and the capacity passes') or open loop (a fixed
//! offered rate, whatever comes back: the floods). Every query gets a new ID, so each
//! reply is timed against its query. Bounded in time, and stopped early by a flag.
//!
//! [`echo_server`]: a one-thread recvmmsg/sendmmsg echo that sets QR and sends the query
//! back (no DNS work at all: what loopback and the kernel cost).
//!
//! [`Prober`]: sequential probes in the background, each checked and timed.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};

use crate::fault::ms;
use crate::wire::{query, query_bytes, rcode, reply_header, section};

/// The CPU benches run the server under test on, and the one their own side (load,
/// fakes, probes) runs on.
pub const SERVER_CPU: usize = 1;
pub const CLIENT_CPU: usize = 0;

/// Datagrams per sendmmsg/recvmmsg.
const BATCH: usize = 32;
/// The largest query a load sends (a query cycled from a list is copied into a slot).
const SLOT: usize = 512;

/// What a load sends.
#[derive(Clone)]
pub enum Names {
    /// These queries in turn (the ID is rewritten).
    Cycle(Arc<Vec<Vec<u8>>>),
    /// A new name per query under this zone, `qTxN.ZONE` (so that nothing coalesces or
    /// caches).
    Unique(&'static str),
}

/// A load to run.
#[derive(Clone)]
pub struct Load {
    pub to: SocketAddr,
    pub threads: usize,
    /// Sockets per thread.
    pub sockets: usize,
    pub duration: Duration,
    /// Offered queries per second over all threads; None: closed loop with `window`.
    pub rate: Option<f64>,
    /// Closed loop: queries in flight per socket.
    pub window: usize,
    pub names: Names,
    /// How long to keep reading replies after the last send.
    pub grace: Duration,
    /// Closed loop: queries of a socket silent for this long are counted lost and their
    /// places in the window freed.
    pub lost_after: Duration,
    /// Runs every load thread on this CPU.
    pub cpu: Option<usize>,
}

impl Load {
    /// The benches' closed loop: one thread, 8 sockets x 16 queries in flight, these
    /// pre-encoded queries in turn, for `seconds`; a socket silent for 200 ms has its
    /// queries counted lost.
    pub fn closed(to: SocketAddr, queries: Arc<Vec<Vec<u8>>>, seconds: f64) -> Load {
        Load {
            to,
            threads: 1,
            sockets: 8,
            duration: Duration::from_secs_f64(seconds),
            rate: None,
            window: 16,
            names: Names::Cycle(queries),
            grace: Duration::ZERO,
            lost_after: Duration::from_millis(200),
            cpu: None,
        }
    }

    /// Runs the load to its end (no stop flag).
    pub fn run_all(&self) -> LoadStats {
        self.run(&Arc::new(AtomicBool::new(false)))
    }

    /// Runs the load (threads of its own) until its duration ends or `stop` is set.
    pub fn run(&self, stop: &Arc<AtomicBool>) -> LoadStats {
        let handles: Vec<JoinHandle<LoadStats>> = (0..self.threads)
            .map(|t| {
                let (l, stop) = (self.clone(), stop.clone());
                std::thread::spawn(move || {
                    if let Some(c) = l.cpu {
                        crate::procfs::pin_to(c);
                    }
                    load_thread(&l, t, &stop)
                })
            })
            .collect();
        let mut total = LoadStats::default();
        for h in handles {
            total.merge(&h.join().unwrap());
        }
        total
    }

    /// Runs it on a thread of its own: join the handle for the figures.
    pub fn spawn(&self, stop: &Arc<AtomicBool>) -> JoinHandle<LoadStats> {
        let (l, stop) = (self.clone(), stop.clone());
        std::thread::spawn(move || l.run(&stop))
    }
}

/// What a load saw.
#[derive(Clone, Default, Debug)]
pub struct LoadStats {
    pub sent: u64,
    /// Responses (QR set) received.
    pub replies: u64,
    /// NOERROR with at least one answer.
    pub ok: u64,
    pub rcodes: [u64; 16],
    /// `ok` replies per second of the run.
    pub per_sec_ok: Vec<u64>,
    /// Replies within 100 ms of their query, by rcode.
    pub fast: [u64; 16],
    /// Replies later than 1 s after their query.
    pub late: u64,
    /// Closed loop: queries presumed lost (see [`Load::lost_after`]).
    pub lost: u64,
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
        self.lost += o.lost;
        if self.per_sec_ok.len() < o.per_sec_ok.len() {
            self.per_sec_ok.resize(o.per_sec_ok.len(), 0);
        }
        for (i, n) in o.per_sec_ok.iter().enumerate() {
            self.per_sec_ok[i] += n;
        }
    }

    pub fn nxdomain(&self) -> u64 {
        self.rcodes[3]
    }

    /// Replies with an rcode other than NOERROR and NXDOMAIN.
    pub fn other_rcode(&self) -> u64 {
        self.replies - self.rcodes[0] - self.rcodes[3]
    }
}

/// The benches' closed loop ([`Load::closed`]) on 127.0.0.1:`port` for `seconds`.
pub fn closed_loop(port: u16, queries: &Arc<Vec<Vec<u8>>>, seconds: f64) -> LoadStats {
    Load::closed(SocketAddr::from(([127, 0, 0, 1], port)), queries.clone(), seconds).run_all()
}

/// Median of a non-empty slice (sorts it).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The name of an rcode (`NOERROR`), or its number.
pub fn rcode_name(rc: usize) -> String {
    Rcode::checked_from_int(rc as u8).map_or_else(|| rc.to_string(), |r| r.to_string())
}

/// `3 NOERROR, 1 SERVFAIL` (or `none`).
pub fn rcode_counts(c: &[u64; 16]) -> String {
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

/// Sets an integer socket option.
pub fn set_sockopt(fd: i32, opt: i32, value: i32) {
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

/// Message headers over `bufs` (each used up to its length), built once per batch.
fn headers(iov: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iov.iter_mut()
        .map(|v| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect()
}

/// Sends the first `n` slots; returns how many went.
fn send_batch(fd: i32, slots: &mut [[u8; SLOT]], lens: &[usize], n: usize) -> usize {
    let mut iov: Vec<libc::iovec> = slots
        .iter_mut()
        .zip(lens)
        .take(n)
        .map(|(b, l)| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: *l,
        })
        .collect();
    let mut hdrs = headers(&mut iov);
    // SAFETY: the headers point at `iov`, which points at `slots`; all outlive the call.
    let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), hdrs.len() as u32, 0) };
    sent.max(0) as usize
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
    let mut hdrs = headers(&mut iov);
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

/// Waits up to `timeout_ms` until one of `fds` is readable.
fn wait_readable(fds: &mut [libc::pollfd], timeout_ms: i32) {
    // SAFETY: poll on live descriptors.
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms);
    }
}

/// One socket of a load thread.
struct Sock {
    sock: UdpSocket,
    in_flight: usize,
    last_reply: Instant,
}

/// A load thread's receiving side: reads what arrived and counts it.
struct Rx {
    start: Instant,
    inb: Vec<[u8; 1024]>,
    lens: Vec<usize>,
    /// When each query ID was last sent.
    sent_at: Vec<Option<Instant>>,
}

impl Rx {
    /// Reads every reply queued on `s`; returns how many there were.
    fn receive(&mut self, st: &mut LoadStats, s: &mut Sock) -> usize {
        let mut got = 0;
        loop {
            recv_batch(s.sock.as_raw_fd(), &mut self.inb, &mut self.lens);
            if self.lens.is_empty() {
                return got;
            }
            let now = Instant::now();
            s.last_reply = now;
            for (i, n) in self.lens.iter().enumerate() {
                let Some((id, rc, an)) = reply_header(&self.inb[i][..*n]) else {
                    continue;
                };
                got += 1;
                s.in_flight = s.in_flight.saturating_sub(1);
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
    let mut socks: Vec<Sock> = (0..l.sockets.max(1))
        .map(|_| {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            set_sockopt(sock.as_raw_fd(), libc::SO_RCVBUF, 4 << 20);
            sock.connect(l.to).unwrap();
            sock.set_nonblocking(true).unwrap();
            Sock {
                sock,
                in_flight: 0,
                last_reply: Instant::now(),
            }
        })
        .collect();
    let mut pfds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut st = LoadStats::default();
    let mut slots = vec![[0u8; SLOT]; BATCH];
    let mut lens = [0usize; BATCH];
    let per_thread = l.rate.map(|r| r / l.threads as f64);
    let start = Instant::now();
    let mut seq: u64 = 0;
    let mut rx = Rx {
        start,
        inb: vec![[0u8; 1024]; BATCH],
        lens: Vec::with_capacity(BATCH),
        sent_at: vec![None; 65536],
    };
    let mut turn = 0usize;
    loop {
        let now = Instant::now();
        let elapsed = now.duration_since(start);
        if stop.load(Ordering::Relaxed) || elapsed >= l.duration {
            break;
        }
        let mut busy = false;
        let count = socks.len();
        for (k, s) in socks.iter_mut().enumerate() {
            let got = rx.receive(&mut st, s);
            busy |= got > 0;
            let want = match per_thread {
                Some(r) => {
                    // Open loop: the sockets take turns with what is due.
                    if k != turn % count {
                        continue;
                    }
                    let due = (elapsed.as_secs_f64() * r) as u64;
                    due.saturating_sub(st.sent).min(BATCH as u64) as usize
                }
                None => {
                    // Closed loop: replies lost for a while free their place in the
                    // window.
                    if got == 0 && s.in_flight > 0 && now.duration_since(s.last_reply) > l.lost_after {
                        st.lost += s.in_flight as u64;
                        s.in_flight = 0;
                        s.last_reply = now;
                    }
                    l.window.saturating_sub(s.in_flight).min(BATCH)
                }
            };
            if want == 0 {
                continue;
            }
            for (slot, len) in slots.iter_mut().zip(lens.iter_mut()).take(want) {
                let id = (seq & 0xffff) as u16;
                let n = match &l.names {
                    Names::Cycle(qs) => {
                        let q = &qs[(seq as usize + t * 7) % qs.len()];
                        slot[..q.len()].copy_from_slice(q);
                        q.len()
                    }
                    Names::Unique(zone) => {
                        let q = query(&format!("q{t}x{seq}.{zone}"), 1, 0, None);
                        slot[..q.len()].copy_from_slice(&q);
                        q.len()
                    }
                };
                slot[..2].copy_from_slice(&id.to_be_bytes());
                *len = n;
                rx.sent_at[id as usize] = Some(now);
                seq += 1;
            }
            let n = send_batch(s.sock.as_raw_fd(), &mut slots, &lens, want);
            st.sent += n as u64;
            s.in_flight += n;
            busy |= n > 0;
        }
        turn += 1;
        if !busy {
            wait_readable(&mut pfds, 1);
        }
    }
    let end = Instant::now() + l.grace;
    while Instant::now() < end {
        for s in socks.iter_mut() {
            rx.receive(&mut st, s);
        }
        wait_readable(&mut pfds, 5);
    }
    st
}

/// The floor: a one-thread recvmmsg/sendmmsg echo on 127.0.0.1:`port` that sets QR and
/// sends each query back. Never returns (a bench runs it as a process of its own).
pub fn echo_server(port: u16) -> ! {
    let s = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let fd = s.as_raw_fd();
    let mut bufs = vec![[0u8; 1500]; 64];
    // SAFETY: zeroed sockaddr_storage is valid.
    let mut addrs: Vec<libc::sockaddr_storage> = (0..64).map(|_| unsafe { std::mem::zeroed() }).collect();
    loop {
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: 1500,
            })
            .collect();
        let mut hdrs = headers(&mut iov);
        for (h, a) in hdrs.iter_mut().zip(addrs.iter_mut()) {
            h.msg_hdr.msg_name = (a as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        }
        // SAFETY: the headers point at live buffers and addresses; blocking wait for at
        // least one datagram.
        let n = unsafe { libc::recvmmsg(fd, hdrs.as_mut_ptr(), 64, libc::MSG_WAITFORONE, std::ptr::null_mut()) };
        if n <= 0 {
            continue;
        }
        for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()).take(n as usize) {
            v.iov_len = h.msg_len as usize;
        }
        for h in hdrs.iter_mut().take(n as usize) {
            // SAFETY: each header's iovec points into `bufs`; set QR like a reply.
            unsafe { *((*h.msg_hdr.msg_iov).iov_base as *mut u8).add(2) |= 0x80 };
        }
        // SAFETY: as above.
        unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as u32, 0) };
    }
}

// ------------------------------------------------------------------------------------
// Probes

/// What a [`Prober`] saw.
#[derive(Default)]
pub struct ProbeStats {
    pub sent: usize,
    pub lost: usize,
    /// Replies that were not the answer wanted, described.
    pub wrong: Vec<String>,
    pub latencies: Vec<Duration>,
}

impl ProbeStats {
    /// The `p` quantile of the latencies (rounded to the nearest sample).
    pub fn pct(&self, p: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        l[((l.len() - 1) as f64 * p).round() as usize]
    }

    pub fn summary(&self) -> String {
        format!(
            "UDP {}/{} answered, p50 {:.1}ms p99 {:.1}ms",
            self.latencies.len(),
            self.sent,
            ms(self.pct(0.5)),
            ms(self.pct(0.99)),
        )
    }

    /// No query lost or answered wrong, and p99 under `p99_max`.
    pub fn clean(&self, p99_max: Duration) -> Result<(), String> {
        if self.sent == 0 {
            return Err("no probe was sent".into());
        }
        if self.lost != 0 || !self.wrong.is_empty() {
            return Err(format!(
                "probes: {} lost, {} wrong (first: {:?}) of {}",
                self.lost,
                self.wrong.len(),
                self.wrong.first(),
                self.sent
            ));
        }
        if self.pct(0.99) > p99_max {
            return Err(format!(
                "probes p99 {:.1}ms over {:?} ({})",
                ms(self.pct(0.99)),
                p99_max,
                self.summary()
            ));
        }
        Ok(())
    }
}

/// One UDP query for `name` A (EDNS 1232) on `sock`: Ok(latency) when the answer holds
/// `want` (NOERROR and an A record of that address); `Err("lost")` when no reply with
/// its ID came within `wait`; otherwise what came.
pub fn probe_once(
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

/// Sequential UDP probes in the background: `(name, address wanted)` in turn, one every
/// `every`, each waiting up to 2 s for its answer; at most 10 minutes of them.
pub struct Prober {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<ProbeStats>>,
}

impl Prober {
    pub fn start(to: SocketAddr, names: &[(&str, &str)], every: Duration) -> Prober {
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

    pub fn stop(mut self) -> ProbeStats {
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
