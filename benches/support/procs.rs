//! Processes for the socket benches (load, cluster, resolver): servers started pinned
//! to one CPU and stopped by PID (SIGTERM, then SIGKILL), their CPU time and memory from
//! /proc, a closed-loop UDP load generator and a bare UDP echo responder (the loopback
//! floor).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SERVER_CPU: usize = 1;
pub const CLIENT_CPU: usize = 0;
const SOCKETS: usize = 8;
const IN_FLIGHT_PER_SOCKET: usize = 16;
const BATCH: usize = 32;

pub fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Total CPU time (user + system) of all threads of `pid`, in nanoseconds.
pub fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// A `Vm...:` field of /proc/PID/status, in KiB (VmRSS: resident now; VmHWM: its peak).
pub fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

pub fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

pub fn hwm_kb(pid: u32) -> u64 {
    status_kb(pid, "VmHWM:")
}

/// Resets VmHWM to the current RSS (proc(5), clear_refs "5"), so the next peak read is
/// the peak of what follows.
pub fn reset_hwm(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM through /proc/PID/clear_refs");
}

/// Waits until the process has used less than 1% of a CPU over `window` (its work is
/// done); gives up after `max`. Returns how long it waited.
pub fn wait_quiet(pid: u32, window: Duration, max: Duration) -> Duration {
    let start = Instant::now();
    let mut last = cpu_ns(pid);
    while start.elapsed() < max {
        std::thread::sleep(window);
        let now = cpu_ns(pid);
        if ((now - last) as f64) < window.as_nanos() as f64 * 0.01 {
            break;
        }
        last = now;
    }
    start.elapsed()
}

pub struct Scratch(pub PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn scratch(tag: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("clusterdns-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

/// A server process, stopped on drop: SIGTERM, then SIGKILL after 5 s.
pub struct Server {
    pub name: String,
    pub child: Child,
    pub port: u16,
    pub started: Instant,
    /// Standard output lines with the time they were read (clusterdns logs there).
    pub log: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Server {
    /// Starts `program args` under `taskset -c cpu`; its stdout is kept in `log` when
    /// `capture` is set.
    pub fn spawn(name: &str, program: &Path, args: &[String], cpu: usize, port: u16, capture: bool) -> Server {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpu.to_string()).arg(program).args(args);
        cmd.stdin(Stdio::null()).stderr(Stdio::inherit());
        cmd.stdout(if capture { Stdio::piped() } else { Stdio::null() });
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} with taskset: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let log = log.clone();
            // Ends when the process closes its stdout (it exits).
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push((Instant::now(), line));
                }
            });
        }
        Server {
            name: name.into(),
            child,
            port,
            started,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Log lines containing `text`, with their times.
    pub fn log_lines(&self, text: &str) -> Vec<(Instant, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.contains(text))
            .cloned()
            .collect()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signalling our own child, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop within 5 s of SIGTERM: SIGKILL", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a load pass saw.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadResult {
    pub sent: u64,
    pub answered: u64,
    pub nxdomain: u64,
    /// Replies with an rcode other than NOERROR and NXDOMAIN.
    pub other_rcode: u64,
    /// Queries presumed lost (a socket silent for 200 ms with queries outstanding).
    pub lost: u64,
}

struct Batch {
    bufs: Vec<[u8; 1500]>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Box<Batch> {
        let mut b = Box::new(Batch {
            bufs: vec![[0u8; 1500]; BATCH],
            iov: Vec::with_capacity(BATCH),
            // SAFETY: a zeroed mmsghdr is valid (null pointers, zero lengths).
            hdrs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
        });
        let Batch { bufs, iov, hdrs } = &mut *b;
        for buf in bufs.iter_mut() {
            iov.push(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            });
        }
        for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()) {
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        b
    }
}

/// Closed-loop load for `seconds` from CLIENT_CPU: SOCKETS sockets, each keeping
/// IN_FLIGHT_PER_SOCKET queries outstanding, sent with sendmmsg and read with recvmmsg;
/// a socket silent for 200 ms has its queries counted lost and is topped up again.
pub fn load(port: u16, queries: &[Vec<u8>], seconds: f64) -> LoadResult {
    pin_to(CLIENT_CPU);
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let socks: Vec<UdpSocket> = (0..SOCKETS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(to).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let mut res = LoadResult::default();
    let mut next = 0usize;
    let mut in_flight = [0usize; SOCKETS];
    let mut last_reply = [Instant::now(); SOCKETS];
    let mut rx = Batch::new();
    let mut tx_iov: Vec<libc::iovec> = Vec::with_capacity(IN_FLIGHT_PER_SOCKET);
    // SAFETY: as above.
    let mut tx_hdrs: Vec<libc::mmsghdr> = (0..IN_FLIGHT_PER_SOCKET)
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    let mut send = |s: &UdpSocket, n: usize, next: &mut usize| -> usize {
        tx_iov.clear();
        for _ in 0..n {
            let q = &queries[*next % queries.len()];
            *next += 1;
            tx_iov.push(libc::iovec {
                iov_base: q.as_ptr() as *mut libc::c_void,
                iov_len: q.len(),
            });
        }
        for (h, v) in tx_hdrs.iter_mut().zip(tx_iov.iter_mut()) {
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the headers point at live iovecs over live query buffers.
        let r = unsafe { libc::sendmmsg(s.as_raw_fd(), tx_hdrs.as_mut_ptr(), n as u32, 0) };
        r.max(0) as usize
    };
    for (i, s) in socks.iter().enumerate() {
        in_flight[i] = send(s, IN_FLIGHT_PER_SOCKET, &mut next);
        res.sent += in_flight[i] as u64;
    }
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut pfds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while Instant::now() < end {
        // SAFETY: pfds is a valid array of pollfd.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as u64, 10) };
        for (i, s) in socks.iter().enumerate() {
            for h in rx.hdrs.iter_mut() {
                h.msg_len = 0;
            }
            // SAFETY: the headers point at the batch's own iovecs and buffers.
            let got = unsafe {
                libc::recvmmsg(
                    s.as_raw_fd(),
                    rx.hdrs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            let got = got.max(0) as usize;
            if got > 0 {
                res.answered += got as u64;
                for (b, h) in rx.bufs.iter().zip(rx.hdrs.iter()).take(got) {
                    if h.msg_len >= 4 {
                        match b[3] & 0x0f {
                            0 => {}
                            3 => res.nxdomain += 1,
                            _ => res.other_rcode += 1,
                        }
                    }
                }
                in_flight[i] -= got.min(in_flight[i]);
                last_reply[i] = Instant::now();
            } else if last_reply[i].elapsed() > Duration::from_millis(200) && in_flight[i] > 0 {
                // Presumed lost: top the socket up again.
                res.lost += in_flight[i] as u64;
                in_flight[i] = 0;
                last_reply[i] = Instant::now();
            }
            let want = IN_FLIGHT_PER_SOCKET - in_flight[i];
            if want > 0 {
                let n = send(s, want, &mut next);
                in_flight[i] += n;
                res.sent += n as u64;
            }
        }
    }
    res
}

/// The floor: a one-thread recvmmsg/sendmmsg echo that sets QR and sends the query back.
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
        // SAFETY: zeroed headers, then pointed at live buffers.
        let mut hdrs: Vec<libc::mmsghdr> = (0..64).map(|_| unsafe { std::mem::zeroed() }).collect();
        for ((h, v), a) in hdrs.iter_mut().zip(iov.iter_mut()).zip(addrs.iter_mut()) {
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_name = (a as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        }
        // SAFETY: as above; blocking wait for at least one datagram.
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

/// Median of a non-empty slice (sorts it).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
