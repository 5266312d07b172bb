//! What /proc says about a process: memory (VmRSS, VmHWM), CPU time, descriptors,
//! liveness, the state of its sockets; and CPU pinning of the calling thread.

use std::time::{Duration, Instant};

/// A `Vm...:` field of /proc/PID/status, in KiB (0 if the process is gone).
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

/// Resident memory now, in KiB.
pub fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

/// The peak of resident memory (since the start, or since [`reset_hwm`]), in KiB.
pub fn hwm_kb(pid: u32) -> u64 {
    status_kb(pid, "VmHWM:")
}

/// Resets VmHWM to the current RSS (proc(5), clear_refs "5"), so the next peak read is
/// the peak of what follows.
pub fn reset_hwm(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM through /proc/PID/clear_refs");
}

/// KiB as MiB.
pub fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Total CPU time (user + system) of the live threads of `pid`, in nanoseconds, from
/// /proc/PID/task/*/schedstat (the kernel's own accounting, not clock ticks).
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

/// CPU time (user + system) of the whole process so far, threads that ended included,
/// from /proc/PID/stat (in clock ticks, usually 10 ms).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // After the command: state is field 3, utime 14 and stime 15 (proc(5)).
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// Open descriptors of the process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Whether the process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Waits until the descriptor count is back to `base` (or below); returns how long that
/// took, or the count it was stuck at.
pub fn fds_back(pid: u32, base: usize, timeout: Duration) -> Result<Duration, usize> {
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

/// The descriptor count once it has not changed for 300 ms (3 s at most).
pub fn settled_fds(pid: u32) -> usize {
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

/// Datagrams the kernel dropped on the UDP sockets bound to `port` (a full receive
/// queue), from /proc/PID/net/udp.
pub fn udp_drops(pid: u32, port: u16) -> u64 {
    let suffix = format!(":{port:04X}");
    std::fs::read_to_string(format!("/proc/{pid}/net/udp"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|a| a.ends_with(&suffix)))
        .filter_map(|l| l.split_whitespace().last().and_then(|d| d.parse::<u64>().ok()))
        .sum()
}

/// Established TCP connections on `port` (the server's side of them) and the bytes
/// waiting unread in their receive queues, from /proc/PID/net/tcp.
pub fn tcp_unread(pid: u32, port: u16) -> (usize, u64) {
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

/// Pins the calling thread (and the threads and processes it starts later) to `cpu`.
pub fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// RSS samples of one process over time.
pub struct RssTrace {
    pub pid: u32,
    t0: Instant,
    /// (time since the trace began, KiB).
    pub samples: Vec<(Duration, u64)>,
}

impl RssTrace {
    /// An empty trace (the first [`sample`](Self::sample) is its start).
    pub fn new(pid: u32) -> RssTrace {
        RssTrace {
            pid,
            t0: Instant::now(),
            samples: Vec::new(),
        }
    }

    /// A trace with its first sample taken now.
    pub fn starting(pid: u32) -> RssTrace {
        let mut t = RssTrace::new(pid);
        t.sample();
        t
    }

    /// Takes a sample; returns it (KiB).
    pub fn sample(&mut self) -> u64 {
        let kb = rss_kb(self.pid);
        self.samples.push((self.t0.elapsed(), kb));
        kb
    }

    /// The first sample.
    pub fn start(&self) -> u64 {
        self.samples.first().map_or(0, |s| s.1)
    }

    pub fn peak(&self) -> u64 {
        self.samples.iter().map(|s| s.1).max().unwrap_or(0)
    }

    /// How far the peak is above the first sample.
    pub fn growth(&self) -> u64 {
        self.peak().saturating_sub(self.start())
    }

    /// The lowest sample in `[from, to)` (transient spikes do not raise it).
    pub fn floor(&self, from: Duration, to: Duration) -> u64 {
        self.samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|s| s.1)
            .min()
            .unwrap_or(0)
    }

    /// The time of the last sample.
    pub fn span(&self) -> Duration {
        self.samples.last().map_or(Duration::ZERO, |s| s.0)
    }

    /// `seconds:MiB` for every sample (a trace for a report).
    pub fn trace(&self) -> String {
        let v: Vec<String> = self
            .samples
            .iter()
            .map(|(t, kb)| format!("{:.1}:{:.0}", t.as_secs_f64(), mib(*kb)))
            .collect();
        v.join(" ")
    }
}
