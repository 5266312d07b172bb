//! Zone transfer bench (issue 13, item 2): an AXFR of `cluster.local` with N services on
//! the release binary over loopback, and what UDP clients feel while it runs.
//!
//! ```text
//!   cargo bench --bench transfer                         # 100,000 services, 3 rounds
//!   cargo bench --bench transfer -- --services 10000 --rounds 5
//! ```
//!
//! The cluster is the cluster bench's generated world (`testkit::world`, gen_zone.py's
//! shape: ~10% headless with 2-6 endpoints, 1-3 named ports, N/100 namespaces) served
//! through `endpoint file://` (a `kubectl get -o json` dump) by clusterdns with one
//! worker, pinned to CPU 1, with `transfer { to * }`. The bench (transfer reader,
//! prober) runs on CPU 0. Once synced:
//!
//! * **idle**: UDP A queries, one at a time, one every 200 µs, for 3 s: p50, p99.
//! * **during**: the same probes while AXFRs of `cluster.local` run for 3 s, one after
//!   another with a pause of `--gap-ms` (100) between them; only the probes sent while a
//!   transfer ran count. Each transfer is read to its closing SOA as fast as the reader
//!   goes (1 MiB reads, messages walked, not parsed). Per transfer: wall time, messages,
//!   records, bytes. The worker that answers the probes is the one that streams.
//!
//! Method (`--sched fifo`, the default when allowed): the prober runs SCHED_FIFO at
//! priority 2, the server's threads and the reader at 1. On a host shared with other
//! work, a probe's latency then holds what the server does, not a neighbour's time
//! slice, and the prober is never queued behind the reader on their shared CPU. The
//! pause between transfers keeps the server's worker under the kernel's real-time
//! budget (95% of a CPU). `--sched normal` measures without priorities.
//! `--dump FILE` appends each probe sent during a transfer (round, transfer, µs into
//! it, stamped latency in µs) to FILE. `CLUSTERDNS_BENCH_BIN=PATH` runs another build of the server (before/after).
//!
//! The floor of issue 13: an AXFR of 100,000 services in under 2 s, and UDP answers
//! keeping their p99. Medians of `--rounds` rounds; each round prints its ratio.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use testkit::load::{CLIENT_CPU, SERVER_CPU, median};
use testkit::process::{Daemon, Scratch, free_port};
use testkit::procfs;
use testkit::wire::{Probe, query_bytes};
use testkit::world::{Shape, World};

const BIN: &str = env!("CARGO_BIN_EXE_clusterdns");

struct Args {
    services: usize,
    rounds: usize,
    fifo: bool,
    every_us: u64,
    gap_ms: u64,
    dump: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        services: 100_000,
        rounds: 3,
        fifo: true,
        every_us: 200,
        gap_ms: 100,
        dump: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--services" => a.services = it.next().expect("--services N").replace('_', "").parse().expect("N"),
            "--rounds" => a.rounds = it.next().expect("--rounds R").parse().expect("R"),
            "--sched" => a.fifo = it.next().expect("--sched fifo|normal") == "fifo",
            "--every-us" => a.every_us = it.next().expect("--every-us N").parse().expect("N"),
            "--gap-ms" => a.gap_ms = it.next().expect("--gap-ms N").parse().expect("N"),
            "--dump" => a.dump = it.next(),
            "--bench" => {}
            other => panic!("unknown argument {other} (see the top of benches/transfer.rs)"),
        }
    }
    a
}

/// One transfer as the client saw it.
struct Xfr {
    wall: Duration,
    messages: usize,
    records: usize,
    bytes: usize,
}

/// An AXFR of `zone`, read to its closing SOA (counted by the answer's SOA records:
/// the opening and the closing one). Read in large chunks (a few system calls for many
/// messages) and walked, not parsed: the reader shares its CPU with the probes.
fn axfr(to: SocketAddr, zone: &str) -> Xfr {
    let t = Instant::now();
    let mut s = TcpStream::connect(to).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let q = query_bytes(zone, domain::base::iana::Rtype::AXFR, None, 0x7777);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).unwrap();
    let (mut messages, mut records, mut bytes, mut soas) = (0, 0, 0, 0);
    let mut buf = vec![0u8; 1 << 20];
    let (mut have, mut at) = (0, 0);
    while soas < 2 {
        // A whole message at `at`? Walk it; otherwise read more (moving the rest down).
        if have - at >= 2 {
            let n = u16::from_be_bytes([buf[at], buf[at + 1]]) as usize;
            if have - at >= 2 + n {
                let (count, soa) = walk(&buf[at + 2..at + 2 + n]);
                records += count;
                soas += soa;
                messages += 1;
                bytes += n + 2;
                at += 2 + n;
                continue;
            }
        }
        buf.copy_within(at..have, 0);
        have -= at;
        at = 0;
        let got = s.read(&mut buf[have..]).expect("the transfer's next message");
        assert!(got > 0, "the server closed the transfer before its closing SOA");
        have += got;
    }
    Xfr {
        wall: t.elapsed(),
        messages,
        records,
        bytes,
    }
}

/// The answer records of a NOERROR reply and how many are SOA, found by skipping
/// names (labels and pointers) and rdata.
fn walk(msg: &[u8]) -> (usize, usize) {
    assert_eq!(msg[3] & 0x0f, 0, "a NOERROR message");
    let count = u16::from_be_bytes([msg[6], msg[7]]) as usize;
    let mut at = skip_name(msg, 12) + 4;
    let mut soa = 0;
    for _ in 0..count {
        at = skip_name(msg, at);
        if u16::from_be_bytes([msg[at], msg[at + 1]]) == 6 {
            soa += 1;
        }
        at += 10 + u16::from_be_bytes([msg[at + 8], msg[at + 9]]) as usize;
    }
    (count, soa)
}

/// Where the name at `at` ends (labels, then a zero or a pointer).
fn skip_name(msg: &[u8], mut at: usize) -> usize {
    loop {
        let l = msg[at] as usize;
        if l & 0xc0 == 0xc0 {
            return at + 2;
        }
        at += 1 + l;
        if l == 0 {
            return at;
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Real-time priorities the bench gives its threads and the server's (`--sched fifo`):
/// neighbours on a shared host then cannot put their time slices into a probe's latency
/// (waking the prober, or the server's worker, while something else runs), and the
/// prober preempts the transfer reader that shares its CPU. The server's threads and the
/// reader get the same, lower one; the prober a higher one.
const PRIO_PROBER: i32 = 2;
const PRIO_OTHERS: i32 = 1;

/// Makes thread `tid` (0: the calling one) SCHED_FIFO at `prio`; false when not allowed.
fn fifo(tid: i32, prio: i32) -> bool {
    let p = libc::sched_param { sched_priority: prio };
    // SAFETY: a plain system call on a valid sched_param.
    unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &p) == 0 }
}

/// Every thread of process `pid` SCHED_FIFO at `prio`.
fn fifo_process(pid: u32, prio: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut all = true;
    for t in tasks.flatten() {
        if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
            all &= fifo(tid, prio);
        }
    }
    all
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One probe: when it was sent (from the bench's start), and, when answered right, its
/// latency as the prober saw it and as the kernel stamped the reply's arrival.
type Probed = (Duration, Option<(Duration, Duration)>);

fn realtime() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Sends one A query for `name` and waits up to 2 s for its answer holding `want`.
/// Returns (latency as the prober saw it, latency to the kernel's receive stamp): the
/// second leaves out the time the prober waited for its CPU after the reply arrived
/// (the reply is stamped as it enters the socket, by the sending side on loopback).
fn probe_stamped(
    sock: &std::net::UdpSocket,
    to: SocketAddr,
    id: u16,
    name: &str,
    want: Ipv4Addr,
) -> Option<(Duration, Duration)> {
    let q = query_bytes(name, domain::base::iana::Rtype::A, Some(1232), id);
    let wall = realtime();
    let t = Instant::now();
    sock.send_to(&q, to).ok()?;
    let mut buf = [0u8; 4096];
    let mut cbuf = [0u64; 16];
    loop {
        let left = Duration::from_secs(2).checked_sub(t.elapsed())?;
        sock.set_read_timeout(Some(left.max(Duration::from_micros(1)))).unwrap();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: a zeroed msghdr is valid; the pointers set below outlive the call.
        let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf.as_mut_ptr().cast();
        mh.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        // SAFETY: recvmsg on an open socket with the buffers described above.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut mh, 0) };
        if n < 0 {
            return None;
        }
        let took = t.elapsed();
        let msg = &buf[..n as usize];
        if msg.len() < 12 || u16::from_be_bytes([msg[0], msg[1]]) != id {
            continue;
        }
        let mut stamp = None;
        // SAFETY: walking the control messages recvmsg filled in, with libc's macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&mh);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    stamp = Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
                }
                c = libc::CMSG_NXTHDR(&mh, c);
            }
        }
        let (_, soa) = walk(msg);
        assert_eq!(soa, 0);
        if !has_a(msg, want) {
            return None;
        }
        return Some((took, stamp?.saturating_sub(wall)));
    }
}

/// Whether a reply's answer section holds an A record with `want`.
fn has_a(msg: &[u8], want: Ipv4Addr) -> bool {
    let count = u16::from_be_bytes([msg[6], msg[7]]) as usize;
    let mut at = skip_name(msg, 12) + 4;
    for _ in 0..count {
        at = skip_name(msg, at);
        let (ty, len) = (
            u16::from_be_bytes([msg[at], msg[at + 1]]),
            u16::from_be_bytes([msg[at + 8], msg[at + 9]]) as usize,
        );
        if ty == 1 && msg[at + 10..at + 10 + len] == want.octets() {
            return true;
        }
        at += 10 + len;
    }
    false
}

/// Sequential UDP probes (as `testkit::load::Prober`), each with its send time, so that
/// the ones sent while a transfer ran can be told from the others.
fn probe_thread(
    to: SocketAddr,
    names: Vec<(String, Ipv4Addr)>,
    every: Duration,
    t0: Instant,
    stop: Arc<AtomicBool>,
    rt: bool,
) -> std::thread::JoinHandle<Vec<Probed>> {
    std::thread::spawn(move || {
        if rt {
            fifo(0, PRIO_PROBER);
        }
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on an open socket with an int option.
        let ok = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as _,
            )
        };
        assert_eq!(ok, 0, "SO_TIMESTAMPNS");
        let mut out = Vec::new();
        let end = Instant::now() + Duration::from_secs(600);
        let mut id = 0u16;
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            let (name, want) = &names[out.len() % names.len()];
            id = id.wrapping_add(1);
            let at = t0.elapsed();
            out.push((at, probe_stamped(&sock, to, id, name, *want)));
            std::thread::sleep(every);
        }
        out
    })
}

/// p50 and p99 (ms) of the answered probes (`kernel`: to the reply's receive stamp),
/// and how many were lost or wrong.
fn stats(probes: &[&Probed], kernel: bool) -> (f64, f64, usize, usize) {
    let mut l: Vec<Duration> = probes
        .iter()
        .filter_map(|p| p.1.map(|(seen, stamped)| if kernel { stamped } else { seen }))
        .collect();
    let failed = probes.len() - l.len();
    l.sort();
    let q = |p: f64| {
        l.get(((l.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |d| ms(*d))
    };
    (q(0.5), q(0.99), l.len(), failed)
}

fn main() {
    let a = parse_args();
    procfs::pin_to(CLIENT_CPU);
    let world = World::generate(&Shape::mixed(a.services, 1));
    println!("transfer bench: {}", world.shape.describe());
    let dir = Scratch::new("bench-transfer");
    let dump = dir.path("cluster.json");
    std::fs::write(&dump, world.kubectl_dump(1000)).unwrap();
    let port = free_port();
    let conf = dir.path("Corefile");
    std::fs::write(
        &conf,
        format!(
            ".:{port} {{\n    bind 127.0.0.1\n    transfer {{\n        to *\n    }}\n    kubernetes cluster.local in-addr.arpa {{\n        endpoint file://{}\n        startup_timeout 120s\n    }}\n}}\n",
            dump.display()
        ),
    )
    .unwrap();
    let args = [
        "-workers".to_string(),
        "1".into(),
        "-conf".into(),
        conf.display().to_string(),
    ];
    let bin = std::env::var("CLUSTERDNS_BENCH_BIN").unwrap_or_else(|_| BIN.to_string());
    let server = Daemon::spawn("clusterdns", Path::new(&bin), &args, SERVER_CPU, port, false);
    let probes = world.sync_probes();
    let mut probe = Probe::new(port);
    let end = Instant::now() + Duration::from_secs(180);
    'sync: while Instant::now() < end {
        for (name, want) in &probes {
            let ok = probe
                .ask(name, 1, Duration::from_millis(200))
                .is_some_and(|r| r.addresses().first() == want.first());
            if !ok {
                std::thread::sleep(Duration::from_millis(50));
                continue 'sync;
            }
        }
        break;
    }
    // Real-time priorities (see PRIO_PROBER), set once the server is synced (its threads
    // all exist) and before any measurement.
    let rt = a.fifo && fifo_process(server.pid(), PRIO_OTHERS) && fifo(0, PRIO_OTHERS);
    println!(
        "method: server (1 worker) on CPU {SERVER_CPU}; transfer reader (1 MiB reads, messages walked not parsed) and UDP prober on CPU {CLIENT_CPU}; {}; \
         a probe every {} us, 'during' = probes sent while a transfer ran ({} ms pause between transfers); clusterdns {bin}",
        if rt {
            "SCHED_FIFO: prober 2, server threads and reader 1 (neighbours cannot delay them; the prober preempts the reader)"
        } else if a.fifo {
            "normal scheduling (SCHED_FIFO refused)"
        } else {
            "normal scheduling (--sched normal)"
        },
        a.every_us,
        a.gap_ms
    );
    let to = SocketAddr::from(([127, 0, 0, 1], port));
    let names: Vec<(String, Ipv4Addr)> = probes.iter().map(|(n, a)| (n.clone(), a[0])).collect();
    let every = Duration::from_micros(a.every_us);
    let gap = Duration::from_millis(a.gap_ms);
    let t0 = Instant::now();

    // [seen, stamped] x [idle p50, idle p99, during p50, during p99], a value a round.
    let mut q: [[Vec<f64>; 4]; 2] = Default::default();
    let mut walls = vec![];
    let mut last = None;
    for round in 0..a.rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let p = probe_thread(to, names.clone(), every, t0, stop.clone(), rt);
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        let idle = p.join().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let p = probe_thread(to, names.clone(), every, t0, stop.clone(), rt);
        let t = Instant::now();
        let mut xfrs = Vec::new();
        let mut spans = Vec::new();
        while t.elapsed() < Duration::from_secs(3) || xfrs.is_empty() {
            let from = t0.elapsed();
            xfrs.push(axfr(to, "cluster.local."));
            spans.push((from, t0.elapsed()));
            std::thread::sleep(gap);
        }
        stop.store(true, Ordering::Relaxed);
        let all = p.join().unwrap();
        let during: Vec<&Probed> = all
            .iter()
            .filter(|(at, _)| spans.iter().any(|(s, e)| at >= s && at < e))
            .collect();
        if let Some(path) = &a.dump {
            // Each probe sent during a transfer: µs since that transfer started, the
            // transfer's number, and the stamped latency in µs (for finding when slow
            // answers happen).
            use std::fmt::Write as _;
            let mut text = String::new();
            for (at, r) in &during {
                let (k, (s, _)) = spans.iter().enumerate().find(|(_, (s, e))| at >= s && at < e).unwrap();
                let lat = r.map_or(-1.0, |(_, st)| st.as_secs_f64() * 1e6);
                writeln!(text, "{round} {k} {:.0} {lat:.0}", (*at - *s).as_secs_f64() * 1e6).unwrap();
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        }
        let idle: Vec<&Probed> = idle.iter().collect();
        let mut line = String::new();
        let mut lost = 0;
        for (k, kind) in ["seen", "stamped"].iter().enumerate() {
            let (i50, i99, in_, il) = stats(&idle, k == 1);
            let (d50, d99, dn, dl) = stats(&during, k == 1);
            lost = il + dl;
            line += &format!(
                "\n  {kind:7}: idle {in_} probes p50 {i50:.3} ms p99 {i99:.3} ms | during {dn} probes p50 {d50:.3} ms p99 {d99:.3} ms | p99 {:.2}x",
                d99 / i99
            );
            for (v, x) in q[k].iter_mut().zip([i50, i99, d50, d99]) {
                v.push(x);
            }
        }
        for x in &xfrs {
            walls.push(ms(x.wall));
        }
        println!(
            "round {round}: {} transfers, AXFR wall {} | load {}{line}",
            xfrs.len(),
            xfrs.iter()
                .map(|x| format!("{:.0}ms", ms(x.wall)))
                .collect::<Vec<_>>()
                .join(" "),
            load_average()
        );
        if lost > 0 {
            println!("  probes lost or wrong: {lost}");
        }
        last = xfrs.pop();
    }
    let x = last.expect("a transfer");
    println!(
        "AXFR of cluster.local: {} records, {} messages, {:.1} MiB",
        x.records,
        x.messages,
        x.bytes as f64 / 1048576.0
    );
    let wall = median(&mut walls);
    println!(
        "median AXFR wall {wall:.0} ms (floor: under 2000 ms: {})",
        if wall < 2000.0 { "met" } else { "NOT met" }
    );
    for (k, kind) in ["seen by the prober", "to the kernel's receive stamp"]
        .iter()
        .enumerate()
    {
        let ratios: Vec<String> = q[k][3]
            .iter()
            .zip(&q[k][1])
            .map(|(d, i)| format!("{:.2}x", d / i))
            .collect();
        let [i50, i99, d50, d99] = &mut q[k];
        println!(
            "UDP probes {kind}, medians of {} rounds: idle p50 {:.3} ms p99 {:.3} ms; during transfers p50 {:.3} ms p99 {:.3} ms; p99 during/idle by round {}",
            a.rounds,
            median(i50),
            median(i99),
            median(d50),
            median(d99),
            ratios.join(" ")
        );
    }
    drop(server);
}
