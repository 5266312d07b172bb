//! Processes: the binary under test, started with a Corefile in a scratch directory
//! ([`Launch`], [`Server`]), or any program pinned to CPUs with its output kept
//! ([`Spawn`], [`Process`]); ports to give them; signals and exits. Every process is
//! stopped by its PID when its handle drops (SIGTERM, then SIGKILL after 5 s).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use domain::base::Message;
use domain::base::iana::Rtype;

use crate::procfs;
use crate::wire::{query_bytes, raw_udp, tcp_exchange, udp_exchange};

/// The `clusterdns` binary cargo built next to the running test or bench executable:
/// `target/PROFILE/clusterdns` for `target/PROFILE/deps/NAME-HASH` (cargo builds a
/// package's binaries before its integration tests and benches). Tests that want the
/// path cargo gives at compile time compare it with `env!("CARGO_BIN_EXE_clusterdns")`.
///
/// `CLUSTERDNS_TEST_BINARY=PATH` runs another build instead (an older one, to see a new
/// test fail where the behaviour it checks is missing).
pub fn binary() -> PathBuf {
    if let Some(other) = std::env::var_os("CLUSTERDNS_TEST_BINARY") {
        return PathBuf::from(other);
    }
    let exe = std::env::current_exe().expect("the path of the running executable");
    let mut dir = exe.parent().expect("the executable's directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("clusterdns{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "no clusterdns binary at {} (run through cargo test or cargo bench)",
        bin.display()
    );
    bin
}

// ------------------------------------------------------------------------------------
// Scratch directories and ports

/// A scratch directory for one test or bench, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A new empty directory under the system's temporary directory, named after the
    /// process, a counter and `tag`.
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "clusterdns-test-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            tag
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `text` to `name` (creating its directories); returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write scratch file");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 for a server about to start.
///
/// Taken from outside the kernel's ephemeral range when there is room: a port from
/// inside it, checked free and released, can be handed to any client socket of a test
/// running alongside (the hardening floods open thousands) before the server binds it,
/// and the server then fails with "address in use" (seen in CI). Ports outside the range
/// are only ever taken by an explicit bind; calls in this process walk through them one
/// after the other, from a start that depends on the process ID.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let free =
        |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok();
    if let Some((low, span)) = outside_ephemeral() {
        let start = std::process::id().wrapping_mul(7919);
        for _ in 0..span {
            let port = low + (start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span);
            if free(port as u16) {
                return port as u16;
            }
        }
    }
    for _ in 0..100 {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("addr").port();
        drop(tcp);
        if free(port) {
            return port;
        }
    }
    panic!("no free port");
}

/// `N` distinct free ports (for a server's HTTP endpoints).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let mut out = [0u16; N];
    let mut i = 0;
    while i < N {
        let p = free_port();
        if !out[..i].contains(&p) {
            out[i] = p;
            i += 1;
        }
    }
    out
}

/// Ports (first, count) that the kernel never hands out on its own: below the
/// ephemeral range (`net.ipv4.ip_local_port_range`) and above 10000, or above it.
fn outside_ephemeral() -> Option<(u32, u32)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = range.split_whitespace().map(|v| v.parse::<u32>().ok());
    let (low, high) = (it.next()??, it.next()??);
    if low >= 12_000 {
        Some((10_000, low - 10_000))
    } else if high <= 63_000 {
        Some((high + 1, 65_535 - high))
    } else {
        None
    }
}

/// A TCP port of 127.0.0.1 nothing listens on (bound, then released): an API endpoint
/// that refuses every connection.
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Polls `f` every 10 ms until it holds (panics after `timeout`, naming `what`);
/// returns how long it took.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(f(), "timed out after {timeout:?} waiting for: {what}");
    t.elapsed()
}

// ------------------------------------------------------------------------------------
// Any process

/// Where a standard stream of a spawned process goes.
pub enum Output {
    /// Kept, line by line with the time each was read ([`Process::output`]).
    Capture,
    Inherit,
    Null,
    /// Written to this file.
    File(PathBuf),
}

/// How to start a process: a [`Command`], where its output goes, and the CPUs it (and
/// every thread it starts) may run on.
pub struct Spawn {
    name: String,
    cmd: Command,
    stdout: Output,
    stderr: Output,
    cpus: Option<Vec<usize>>,
}

impl Spawn {
    /// `program`, stdin closed, stdout and stderr captured.
    pub fn new(program: impl AsRef<std::ffi::OsStr>) -> Spawn {
        Spawn::command(Command::new(program))
    }

    /// A command built elsewhere (its stdin setting is kept; null if none).
    pub fn command(cmd: Command) -> Spawn {
        let name = Path::new(cmd.get_program())
            .file_name()
            .map_or_else(|| "process".to_string(), |n| n.to_string_lossy().into_owned());
        Spawn {
            name,
            cmd,
            stdout: Output::Capture,
            stderr: Output::Capture,
            cpus: None,
        }
    }

    /// The name reports use (default: the program's file name).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(a);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, args: I) -> Self {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, k: impl AsRef<std::ffi::OsStr>, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    pub fn env_remove(mut self, k: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env_remove(k);
        self
    }

    pub fn dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    pub fn stdin(mut self, s: Stdio) -> Self {
        self.cmd.stdin(s);
        self
    }

    pub fn stdout(mut self, o: Output) -> Self {
        self.stdout = o;
        self
    }

    pub fn stderr(mut self, o: Output) -> Self {
        self.stderr = o;
        self
    }

    /// Runs the process on these CPUs only (its affinity, set before exec, as
    /// `taskset -c` does; threads it starts inherit it).
    pub fn pin(mut self, cpus: &[usize]) -> Self {
        self.cpus = Some(cpus.to_vec());
        self
    }

    pub fn start(self) -> Process {
        let Spawn {
            name,
            mut cmd,
            stdout,
            stderr,
            cpus,
        } = self;
        let stdio = |o: &Output| match o {
            Output::Capture => Stdio::piped(),
            Output::Inherit => Stdio::inherit(),
            Output::Null => Stdio::null(),
            Output::File(p) => Stdio::from(std::fs::File::create(p).expect("create the output file")),
        };
        cmd.stdout(stdio(&stdout)).stderr(stdio(&stderr));
        if let Some(cpus) = cpus {
            // SAFETY: a zeroed cpu_set_t is valid; the closure runs between fork and
            // exec and only calls sched_setaffinity(2), which is async-signal-safe.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            for c in cpus {
                // SAFETY: CPU_SET stays within the set for c < 1024.
                unsafe { libc::CPU_SET(c, &mut set) };
            }
            // SAFETY: see above.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        let log: Arc<Mutex<Vec<(Instant, String)>>> = Arc::new(Mutex::new(Vec::new()));
        let pipes: Vec<Box<dyn Read + Send>> = [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut readers = Vec::new();
        for pipe in pipes {
            let log = log.clone();
            // Ends when the process closes the pipe (it exits).
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lock(&log).push((Instant::now(), line));
                }
            }));
        }
        Process {
            name,
            child,
            started,
            log,
            readers,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running process, stopped by its PID on drop (SIGTERM, then SIGKILL after 5 s).
pub struct Process {
    pub name: String,
    pub child: Child,
    /// When it was spawned.
    pub started: Instant,
    log: Arc<Mutex<Vec<(Instant, String)>>>,
    /// The threads reading its stdout and stderr: done once it has exited and they
    /// have read the pipes to the end.
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's PID.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Whether it is still running (not exited, not reaped).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit; its exit code (None if it did not exit within
    /// `timeout`, or was killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                // What it printed last may still be in the pipes: read it before the
                // caller looks at the output (bounded: a grandchild could hold a pipe).
                let drained = Instant::now() + Duration::from_secs(2);
                while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < drained {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Kills it now (SIGKILL) and reaps it: for a case that failed with it running away.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything it printed so far on the captured streams, a line each.
    pub fn output(&self) -> String {
        let log = lock(&self.log);
        let mut out = String::with_capacity(log.iter().map(|(_, l)| l.len() + 1).sum());
        for (_, l) in log.iter() {
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    /// The captured lines containing `text`, with the time each was read.
    pub fn log_lines(&self, text: &str) -> Vec<(Instant, String)> {
        lock(&self.log)
            .iter()
            .filter(|(_, l)| l.contains(text))
            .cloned()
            .collect()
    }

    /// How many captured lines contain `needle`.
    pub fn count_lines(&self, needle: &str) -> usize {
        lock(&self.log).iter().filter(|(_, l)| l.contains(needle)).count()
    }

    /// Waits until `pred` holds for the output (up to `timeout`).
    pub fn wait_output(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if pred(&self.output()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        pred(&self.output())
    }

    /// Waits until `needle` was printed on at least `n` lines; panics with the output
    /// after `timeout`.
    pub fn wait_lines(&self, needle: &str, n: usize, timeout: Duration) {
        let ok = self.wait_output(timeout, |o| o.lines().filter(|l| l.contains(needle)).count() >= n);
        assert!(
            ok,
            "wanted {n} lines with {needle:?} within {timeout:?}:\n{}",
            self.output()
        );
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        self.signal(libc::SIGTERM);
        if self.wait_exit(Duration::from_secs(5)).is_none() && matches!(self.child.try_wait(), Ok(None)) {
            eprintln!("{} did not stop within 5 s of SIGTERM: SIGKILL", self.name);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A server process on a port of 127.0.0.1 (a bench's clusterdns, Knot, Unbound, the
/// echo floor).
pub struct Daemon {
    pub process: Process,
    pub port: u16,
}

impl Daemon {
    /// `program args` on `port`, pinned to `cpu` (the benches' servers): stdin closed,
    /// stderr to ours, stdout kept if `capture` (clusterdns logs there) or dropped.
    pub fn spawn(name: &str, program: &Path, args: &[String], cpu: usize, port: u16, capture: bool) -> Daemon {
        let process = Spawn::new(program)
            .name(name)
            .args(args)
            .pin(&[cpu])
            .stdin(Stdio::null())
            .stderr(Output::Inherit)
            .stdout(if capture { Output::Capture } else { Output::Null })
            .start();
        Daemon { process, port }
    }
}

impl Deref for Daemon {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

// ------------------------------------------------------------------------------------
// clusterdns under test

/// The binary under test on a Corefile of its own, in a scratch directory, on a free
/// port of 127.0.0.1, stopped on drop. Dereferences to its [`Process`].
pub struct Server {
    pub process: Process,
    pub port: u16,
    pub scratch: Scratch,
    pub corefile: PathBuf,
}

impl Deref for Server {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.process
    }
}

impl DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// How to start a [`Server`].
pub struct Launch<'a> {
    /// Corefile text; `{port}` is replaced by the chosen port, `{dir}` by the scratch dir.
    pub corefile: &'a str,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Wait until this name answers (over UDP on 127.0.0.1) before returning.
    pub wait_for: Option<&'a str>,
    pub binary: Option<PathBuf>,
    /// The DNS port, when the caller chose it (files the Corefile imports name it).
    pub port: Option<u16>,
}

impl<'a> Launch<'a> {
    /// The binary under test with the test-only plugins enabled, logging at info.
    pub fn new(corefile: &'a str) -> Launch<'a> {
        Launch {
            corefile,
            args: Vec::new(),
            env: vec![("CLUSTERDNS_TEST_PLUGINS".into(), "1".into())],
            wait_for: Some("."),
            binary: None,
            port: None,
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Listens on `port` (from [`free_port`]) instead of a port of its own choosing.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Returns as soon as the process runs (no query waited for).
    pub fn no_wait(mut self) -> Self {
        self.wait_for = None;
        self
    }

    pub fn start(self) -> Server {
        let scratch = Scratch::new("srv");
        let port = self.port.unwrap_or_else(free_port);
        let text = self
            .corefile
            .replace("{port}", &port.to_string())
            .replace("{dir}", &scratch.0.display().to_string());
        let corefile = scratch.write("Corefile", &text);
        let mut spawn = Spawn::new(self.binary.unwrap_or_else(binary))
            .name("clusterdns")
            .arg("-conf")
            .arg(&corefile)
            .args(&self.args)
            .dir(&scratch.0)
            .stdin(Stdio::null())
            .env("RUST_LOG", "info")
            // The test runner's RUST_BACKTRACE (often 1 in a developer's shell) would have
            // the server symbolise a backtrace for every panic a test provokes: seconds in
            // a debug build on a loaded machine, past a query's timeout. A test that wants
            // one sets it (`env`).
            .env("RUST_BACKTRACE", "0");
        for (k, v) in &self.env {
            spawn = spawn.env(k, v);
        }
        let server = Server {
            process: spawn.start(),
            port,
            scratch,
            corefile,
        };
        if let Some(name) = self.wait_for {
            server.wait_answering(name);
        }
        server
    }
}

impl Server {
    /// Starts a server on a Corefile (see [`Launch`]) and waits until it answers.
    pub fn start(corefile: &str) -> Server {
        Launch::new(corefile).start()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Polls until the server answers a query for `name`, or panics after 15 s (or as
    /// soon as it has exited).
    pub fn wait_answering(&self, name: &str) {
        let end = Instant::now() + Duration::from_secs(15);
        let q = query_bytes(name, Rtype::SOA, Some(1232), 0x4242);
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            let _ = sock.send_to(&q, self.addr());
            if sock.recv(&mut buf).is_ok() {
                return;
            }
            if !procfs::alive(self.pid()) {
                panic!("server exited early:\n{}", self.output());
            }
        }
        panic!("server did not answer within 15s:\n{}", self.output());
    }

    /// A UDP query with EDNS (size 1232) and RD.
    pub fn query(&self, name: &str, qtype: Rtype) -> Message<Vec<u8>> {
        udp_exchange(self.addr(), &query_bytes(name, qtype, Some(1232), 0x1234))
    }

    /// A TCP query with EDNS.
    pub fn query_tcp(&self, name: &str, qtype: Rtype) -> Message<Vec<u8>> {
        tcp_exchange(self.addr(), &query_bytes(name, qtype, Some(1232), 0x1234))
    }

    /// Sends raw bytes over UDP; returns the raw reply, or None after `wait`.
    pub fn raw_udp(&self, msg: &[u8], wait: Duration) -> Option<Vec<u8>> {
        raw_udp(self.addr(), msg, wait)
    }

    /// Replaces the Corefile at once (write aside, rename), `{port}` filled with the DNS
    /// port, so a reload never reads a half-written file.
    pub fn rewrite_corefile(&self, text: &str) {
        let text = text.replace("{port}", &self.port.to_string());
        let tmp = self.corefile.with_extension("next");
        std::fs::write(&tmp, text).expect("write Corefile");
        std::fs::rename(&tmp, &self.corefile).expect("replace Corefile");
    }
}

// ------------------------------------------------------------------------------------
// Runs to completion

/// Runs the binary under test to completion with `args` (and optional stdin) in `dir`;
/// returns (exit code, stdout, stderr). Panics if it runs longer than 20 s.
pub fn run(args: &[&str], dir: &Path, stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("spawn");
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    // Read while it runs: a full pipe would block it.
    let readers: Vec<std::thread::JoinHandle<Vec<u8>>> = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut pipe| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = pipe.read_to_end(&mut v);
            v
        })
    })
    .collect();
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} did not exit within 20s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut outs = readers.into_iter().map(|r| r.join().unwrap_or_default());
    let (out, err) = (outs.next().unwrap_or_default(), outs.next().unwrap_or_default());
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// What [`run_bounded`] saw.
pub struct Bounded {
    /// The exit code, or None if it was killed (over time or over memory).
    pub code: Option<i32>,
    pub elapsed: Duration,
    pub stderr: String,
    /// The highest RSS sampled, in KiB.
    pub peak_kb: u64,
}

/// Runs the binary under test with `args` in `dir` until it exits, at most `limit`,
/// killing it if it runs longer or its RSS passes `max_kb` (sampled every 5 ms).
pub fn run_bounded(args: &[&str], dir: &Path, limit: Duration, max_kb: u64) -> Bounded {
    let mut child = Command::new(binary())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn clusterdns");
    let stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        s
    });
    let t = Instant::now();
    let mut peak = 0;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        peak = peak.max(procfs::rss_kb(child.id()));
        if t.elapsed() > limit || peak > max_kb {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = t.elapsed();
    Bounded {
        code,
        elapsed,
        stderr: err.join().unwrap_or_default(),
        peak_kb: peak,
    }
}
