//! Loopback load bench: queries per second and server CPU time per query, for
//! clusterdns next to references measured in the same run (a bare UDP echo responder,
//! the floor; Knot DNS serving the same names from a zone file, if `knotd` is installed).
//!
//! The server under test is pinned to one CPU with one worker, the load generator to
//! the other. The load generator is closed-loop (a fixed number of queries in flight
//! over several sockets), batches with sendmmsg/recvmmsg, and pre-encodes its
//! queries, so it is not the bottleneck. Server CPU comes from the kernel's per-thread
//! accounting (/proc/PID/task/*/schedstat, nanoseconds).
//!
//!   cargo bench --bench load                  # 3 rounds of 5 s per server
//!   cargo bench --bench load -- --rounds 5 --seconds 10 --servers clusterdns,knot,echo

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER_CPU: usize = 1;
const CLIENT_CPU: usize = 0;
const SOCKETS: usize = 8;
const IN_FLIGHT_PER_SOCKET: usize = 16;
const BATCH: usize = 32;

struct Args {
    rounds: usize,
    seconds: f64,
    servers: Vec<String>,
    names: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        rounds: 3,
        seconds: 5.0,
        servers: vec!["echo".into(), "clusterdns".into(), "knot".into()],
        names: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds S"),
            "--servers" => {
                a.servers = it
                    .next()
                    .expect("--servers LIST")
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            "--names" => a.names = it.next().and_then(|v| v.parse().ok()).expect("--names N"),
            "--quick" => {
                a.rounds = 1;
                a.seconds = 2.0;
            }
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn free_port() -> u16 {
    let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

/// Total CPU time (user + system) of all threads of `pid`, from schedstat.
fn cpu_ns(pid: u32) -> u64 {
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

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn encode_query(name: &str, qtype: u16, id: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    for label in name.trim_end_matches('.').split('.') {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    m
}

/// A server process under test, killed on drop.
struct Running {
    child: Child,
    port: u16,
    _dir: Scratch,
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("clusterdns-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

fn names(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("svc{i}.ns{}.example.org", i % 10),
                format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
            )
        })
        .collect()
}

fn start(kind: &str, data: &[(String, String)]) -> Option<Running> {
    let port = free_port();
    let dir = scratch(kind);
    let mut cmd = match kind {
        "clusterdns" => {
            let mut hosts = String::new();
            for (name, ip) in data {
                hosts.push_str(&format!("{ip} {name}\n"));
            }
            std::fs::write(dir.0.join("hosts"), hosts).unwrap();
            let corefile = format!(
                "example.org:{port} {{\n    bind 127.0.0.1\n    hosts {} {{\n        reload 0\n    }}\n}}\n",
                dir.0.join("hosts").display()
            );
            std::fs::write(dir.0.join("Corefile"), corefile).unwrap();
            let mut c = Command::new(env!("CARGO_BIN_EXE_clusterdns"));
            c.args(["-quiet", "-workers", "1", "-conf"]).arg(dir.0.join("Corefile"));
            c
        }
        "knot" => {
            if Command::new("knotd").arg("--version").output().is_err() {
                eprintln!("knotd not installed (apt-get install knot): skipping knot");
                return None;
            }
            let mut zone = String::from(
                "$ORIGIN example.org.\n$TTL 3600\n@ IN SOA ns.example.org. hostmaster.example.org. 1 7200 1800 86400 5\n@ IN NS ns\nns IN A 127.0.0.1\n",
            );
            for (name, ip) in data {
                zone.push_str(&format!("{name}. IN A {ip}\n"));
            }
            std::fs::write(dir.0.join("example.org.zone"), zone).unwrap();
            let conf = format!(
                "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\ncontrol:\n    listen: \"{d}/knot.sock\"\nlog:\n  - target: stderr\n    any: warning\ndatabase:\n    storage: \"{d}\"\ntemplate:\n  - id: default\n    storage: \"{d}\"\n    zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\n    semantic-checks: off\nzone:\n  - domain: example.org\n    file: example.org.zone\n",
                d = dir.0.display()
            );
            std::fs::write(dir.0.join("knot.conf"), conf).unwrap();
            let mut c = Command::new("knotd");
            c.arg("-c").arg(dir.0.join("knot.conf"));
            c
        }
        "echo" => {
            // The floor: this very program, as a one-thread recvmmsg/sendmmsg echo.
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args(["--echo-server", &port.to_string()]);
            c
        }
        other => panic!("unknown server {other}"),
    };
    cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).stdin(Stdio::null());
    // The server runs on SERVER_CPU only, whatever it spawns.
    let child = {
        let mut set_cpu = Command::new("taskset");
        set_cpu
            .arg("-c")
            .arg(SERVER_CPU.to_string())
            .arg(cmd.get_program())
            .args(cmd.get_args());
        set_cpu
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .stdin(Stdio::null());
        set_cpu.spawn().ok()?
    };
    let running = Running { child, port, _dir: dir };
    // Wait until it answers.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let q = encode_query(&data[0].0, 1, 7);
    let end = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 512];
    while Instant::now() < end {
        let _ = sock.send_to(&q, ("127.0.0.1", port));
        if sock.recv(&mut buf).is_ok() {
            // knotd spawns its threads later than it answers: pin them all again.
            let _ = Command::new("taskset")
                .args([
                    "-a",
                    "-p",
                    "-c",
                    &SERVER_CPU.to_string(),
                    &running.child.id().to_string(),
                ])
                .stdout(Stdio::null())
                .status();
            return Some(running);
        }
    }
    eprintln!("{kind} did not answer within 20s");
    None
}

/// Closed-loop load for `seconds`; returns (answered, lost).
fn load(port: u16, queries: &[Vec<u8>], seconds: f64) -> (u64, u64) {
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
    let mut next = 0usize;
    let mut answered = 0u64;
    let mut lost = 0u64;
    let mut in_flight = [0usize; SOCKETS];
    let mut last_reply = [Instant::now(); SOCKETS];
    let mut rx = vec![[0u8; 1500]; BATCH];
    let send = |s: &UdpSocket, n: usize, next: &mut usize| -> usize {
        let mut iov: Vec<libc::iovec> = Vec::with_capacity(n);
        for _ in 0..n {
            let q = &queries[*next % queries.len()];
            *next += 1;
            iov.push(libc::iovec {
                iov_base: q.as_ptr() as *mut libc::c_void,
                iov_len: q.len(),
            });
        }
        // SAFETY: zeroed mmsghdrs are valid; each points at one live iovec.
        let mut hdrs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()) {
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the headers and buffers outlive the call.
        let r = unsafe { libc::sendmmsg(s.as_raw_fd(), hdrs.as_mut_ptr(), n as u32, 0) };
        r.max(0) as usize
    };
    for (i, s) in socks.iter().enumerate() {
        in_flight[i] = send(s, IN_FLIGHT_PER_SOCKET, &mut next);
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
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
            let mut iov: Vec<libc::iovec> = rx
                .iter_mut()
                .map(|b| libc::iovec {
                    iov_base: b.as_mut_ptr().cast(),
                    iov_len: b.len(),
                })
                .collect();
            // SAFETY: as above.
            let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
            for (h, v) in hdrs.iter_mut().zip(iov.iter_mut()) {
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: the headers and buffers outlive the call.
            let got = unsafe {
                libc::recvmmsg(
                    s.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            let got = got.max(0) as usize;
            if got > 0 {
                answered += got as u64;
                in_flight[i] -= got.min(in_flight[i]);
                last_reply[i] = Instant::now();
            } else if last_reply[i].elapsed() > Duration::from_millis(200) && in_flight[i] > 0 {
                // Presumed lost: top the socket up again.
                lost += in_flight[i] as u64;
                in_flight[i] = 0;
                last_reply[i] = Instant::now();
            }
            let want = IN_FLIGHT_PER_SOCKET - in_flight[i];
            if want > 0 {
                in_flight[i] += send(s, want, &mut next);
            }
        }
    }
    (answered, lost)
}

fn echo_server(port: u16) -> ! {
    let s = UdpSocket::bind(("127.0.0.1", port)).unwrap();
    let fd = s.as_raw_fd();
    let mut bufs = vec![[0u8; 1500]; 64];
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

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let mut argv = std::env::args().skip(1);
    if argv.next().as_deref() == Some("--echo-server") {
        echo_server(argv.next().and_then(|p| p.parse().ok()).expect("port"));
    }
    let args = parse_args();
    let data = names(args.names);
    let queries: Vec<Vec<u8>> = data
        .iter()
        .enumerate()
        .map(|(i, (n, _))| encode_query(n, 1, i as u16))
        .collect();
    let mut results: Vec<(String, Vec<f64>, Vec<f64>, u64)> = args
        .servers
        .iter()
        .map(|s| (s.clone(), Vec::new(), Vec::new(), 0))
        .collect();
    for round in 0..args.rounds {
        for r in results.iter_mut() {
            let Some(server) = start(&r.0, &data) else { continue };
            let pid = server.child.id();
            // Warm-up, then the measured pass.
            load(server.port, &queries, 0.5);
            let c0 = cpu_ns(pid);
            let t0 = Instant::now();
            let (answered, lost) = load(server.port, &queries, args.seconds);
            let wall = t0.elapsed().as_secs_f64();
            let cpu = (cpu_ns(pid) - c0) as f64;
            let qps = answered as f64 / wall;
            let us_per_q = cpu / 1000.0 / answered.max(1) as f64;
            r.1.push(qps);
            r.2.push(us_per_q);
            r.3 = r.3.max(rss_kb(pid));
            eprintln!(
                "round {round}: {:<11} {qps:>10.0} q/s  {us_per_q:>6.2} us CPU/query  (lost {lost}, cpu {:.0}%)",
                r.0,
                cpu / 1e9 / wall * 100.0
            );
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nmedians over {} rounds of {} s (server pinned to CPU {SERVER_CPU}, one worker):",
        args.rounds, args.seconds
    );
    let _ = writeln!(
        out,
        "{:<12} {:>12} {:>14} {:>10}",
        "server", "queries/s", "us CPU/query", "RSS MiB"
    );
    let mut medians = Vec::new();
    for r in results.iter_mut().filter(|r| !r.1.is_empty()) {
        let (q, c) = (median(&mut r.1), median(&mut r.2));
        medians.push((r.0.clone(), c));
        let _ = writeln!(out, "{:<12} {q:>12.0} {c:>14.2} {:>10.1}", r.0, r.3 as f64 / 1024.0);
    }
    let find = |n: &str| medians.iter().find(|(m, _)| m == n).map(|(_, c)| *c);
    if let Some(ours) = find("clusterdns") {
        for reference in ["echo", "knot"] {
            if let Some(c) = find(reference) {
                let _ = writeln!(out, "clusterdns CPU/query = {:.2} x {reference}", ours / c);
            }
        }
    }
}
