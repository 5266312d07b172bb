//! Test support: the real `clusterdns` binary on loopback, and a DNS client built on
//! the `domain` crate (an implementation independent from the server's own wire code).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use domain::base::iana::{Class, Rcode, Rtype};
use domain::base::{Message, MessageBuilder, Name};
use domain::rdata::AllRecordData;

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_clusterdns")
}

/// A scratch directory for one test, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "clusterdns-test-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            tag
        ));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

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

/// A port free for both UDP and TCP on 127.0.0.1 for a server a test is about to start.
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

/// A running server process, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub scratch: Scratch,
    pub corefile: PathBuf,
    output: Arc<Mutex<String>>,
}

/// How to start a server.
pub struct Launch<'a> {
    /// Corefile text; `{port}` is replaced by the chosen port, `{dir}` by the scratch dir.
    pub corefile: &'a str,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Wait until this name answers (over UDP on 127.0.0.1) before returning.
    pub wait_for: Option<&'a str>,
}

impl<'a> Launch<'a> {
    pub fn new(corefile: &'a str) -> Launch<'a> {
        Launch {
            corefile,
            args: Vec::new(),
            env: vec![("CLUSTERDNS_TEST_PLUGINS".into(), "1".into())],
            wait_for: Some("."),
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

    pub fn no_wait(mut self) -> Self {
        self.wait_for = None;
        self
    }

    pub fn start(self) -> Server {
        let scratch = Scratch::new("srv");
        let port = free_port();
        let text = self
            .corefile
            .replace("{port}", &port.to_string())
            .replace("{dir}", &scratch.0.display().to_string());
        let corefile = scratch.write("Corefile", &text);
        let mut cmd = Command::new(binary());
        cmd.arg("-conf").arg(&corefile).args(&self.args).current_dir(&scratch.0);
        cmd.env("RUST_LOG", "info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let server = spawn(cmd, port, scratch, corefile);
        if let Some(name) = self.wait_for {
            server.wait_answering(name);
        }
        server
    }
}

fn spawn(mut cmd: Command, port: u16, scratch: Scratch, corefile: PathBuf) -> Server {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
    let mut child = cmd.spawn().expect("spawn clusterdns");
    let output = Arc::new(Mutex::new(String::new()));
    for pipe in [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut o = out.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
    }
    Server {
        child,
        port,
        scratch,
        corefile,
        output,
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

    /// Everything the process printed so far (stdout and stderr, interleaved by line).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
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

    /// Polls until the server answers a query for `name`, or panics after 15 s.
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
            if let Ok(Some(status)) = self.child_status() {
                panic!("server exited early ({status}):\n{}", self.output());
            }
        }
        panic!("server did not answer within 15s:\n{}", self.output());
    }

    fn child_status(&self) -> std::io::Result<Option<std::process::ExitStatus>> {
        // try_wait needs &mut; peek through /proc instead.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        match stat {
            Ok(s) if s.split(") ").nth(1).is_some_and(|rest| rest.starts_with('Z')) => {
                Ok(Some(std::os::unix::process::ExitStatusExt::from_raw(0)))
            }
            Ok(_) => Ok(None),
            Err(_) => Ok(Some(std::os::unix::process::ExitStatusExt::from_raw(0))),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's PID.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
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
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(15);
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Runs the binary to completion with `args` (and optional stdin); returns
/// (exit code, stdout, stderr).
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
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(_status) = child.try_wait().unwrap() {
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("{args:?} did not exit within 20s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A query message: one question, RD set, optional EDNS with that UDP size.
pub fn query_bytes(name: &str, qtype: Rtype, edns: Option<u16>, id: u16) -> Vec<u8> {
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_id(id);
    b.header_mut().set_rd(true);
    let mut q = b.question();
    let n: Name<Vec<u8>> = name.parse().expect("valid name");
    q.push((&n, qtype, Class::IN)).unwrap();
    match edns {
        Some(size) => {
            let mut a = q.additional();
            a.opt(|o| {
                o.set_udp_payload_size(size);
                Ok(())
            })
            .unwrap();
            a.finish()
        }
        None => q.finish(),
    }
}

pub fn udp_exchange(to: SocketAddr, q: &[u8]) -> Message<Vec<u8>> {
    let reply = raw_udp(to, q, Duration::from_secs(3)).unwrap_or_else(|| panic!("no UDP reply from {to}"));
    Message::from_octets(reply).expect("reply parses")
}

pub fn raw_udp(to: SocketAddr, q: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind(if to.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }).unwrap();
    sock.set_read_timeout(Some(wait)).unwrap();
    sock.send_to(q, to).unwrap();
    let mut buf = vec![0u8; 65535];
    let end = Instant::now() + wait;
    loop {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == to => {
                buf.truncate(n);
                return Some(buf);
            }
            Ok(_) => {}
            // Not restarted after a signal or a stop/continue of the test process.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
        if Instant::now() > end {
            return None;
        }
    }
}

pub fn tcp_exchange(to: SocketAddr, q: &[u8]) -> Message<Vec<u8>> {
    let mut s = TcpStream::connect(to).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write_frame(&mut s, q);
    let reply = read_frame(&mut s).expect("tcp reply");
    Message::from_octets(reply).expect("reply parses")
}

pub fn write_frame(s: &mut TcpStream, msg: &[u8]) {
    let mut f = (msg.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(msg);
    s.write_all(&f).unwrap();
}

pub fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// The records of a section in presentation form: `owner. TTL IN TYPE RDATA`.
pub fn section(msg: &Message<Vec<u8>>, which: &str) -> Vec<String> {
    let sec = match which {
        "answer" => msg.answer(),
        "authority" => msg.authority(),
        "additional" => msg.additional(),
        _ => panic!("unknown section {which}"),
    }
    .expect("sections parse");
    sec.limit_to::<AllRecordData<_, _>>()
        .map(|r| r.expect("record parses").to_string())
        .filter(|r| !r.contains(" OPT "))
        .collect()
}

pub fn rcode(msg: &Message<Vec<u8>>) -> Rcode {
    msg.header().rcode()
}

/// The record count of a section, as the header says.
pub fn counts(msg: &Message<Vec<u8>>) -> (u16, u16, u16, u16) {
    let c = msg.header_counts();
    (c.qdcount(), c.ancount(), c.nscount(), c.arcount())
}

/// Whether `dig` is installed (CI installs it; a developer machine may not have it).
pub fn have_dig() -> bool {
    Command::new("dig").arg("-v").output().is_ok()
}

/// Runs `dig` with these arguments and returns its output.
pub fn dig(args: &[&str]) -> String {
    let out = Command::new("dig").args(args).output().expect("run dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How the fake upstream answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamMode {
    /// A records 192.0.2.1 for any name, TTL 60.
    Answer,
    /// Never reply.
    Silent,
    /// First a reply with a wrong ID, then the real one.
    WrongIdFirst,
    /// Reply with a different question.
    WrongQuestion,
}

/// A fake upstream DNS server on 127.0.0.1 (UDP), counting the queries it gets.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub queries: Arc<std::sync::atomic::AtomicUsize>,
    pub mode: Arc<Mutex<UpstreamMode>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeUpstream {
    pub fn start(mode: UpstreamMode) -> FakeUpstream {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = sock.local_addr().unwrap();
        let queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mode = Arc::new(Mutex::new(mode));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (q, m, s) = (queries.clone(), mode.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                q.fetch_add(1, Ordering::Relaxed);
                let Ok(req) = Message::from_octets(buf[..n].to_vec()) else {
                    continue;
                };
                let mode = *m.lock().unwrap();
                let reply = |id: u16, name: Option<&str>| -> Vec<u8> {
                    let mut b = MessageBuilder::new_vec();
                    b.header_mut().set_id(id);
                    b.header_mut().set_qr(true);
                    b.header_mut().set_rd(true);
                    b.header_mut().set_ra(true);
                    let q = req.sole_question().unwrap();
                    let mut qb = b.question();
                    match name {
                        Some(n) => {
                            let n: Name<Vec<u8>> = n.parse().unwrap();
                            qb.push((&n, q.qtype(), q.qclass())).unwrap();
                        }
                        None => qb.push(q).unwrap(),
                    }
                    let mut ab = qb.answer();
                    if q.qtype() == Rtype::A {
                        ab.push((q.qname(), 60, domain::rdata::A::from_octets(192, 0, 2, 1)))
                            .unwrap();
                    }
                    ab.finish()
                };
                let id = req.header().id();
                match mode {
                    UpstreamMode::Answer => {
                        let _ = sock.send_to(&reply(id, None), from);
                    }
                    UpstreamMode::Silent => {}
                    UpstreamMode::WrongIdFirst => {
                        let _ = sock.send_to(&reply(id.wrapping_add(1), None), from);
                        std::thread::sleep(Duration::from_millis(20));
                        let _ = sock.send_to(&reply(id, None), from);
                    }
                    UpstreamMode::WrongQuestion => {
                        let _ = sock.send_to(&reply(id, Some("other.example.")), from);
                    }
                }
            }
        });
        FakeUpstream {
            addr,
            queries,
            mode,
            stop,
            thread: Some(thread),
        }
    }

    pub fn count(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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
