//! The fake upstream DNS server: UDP and TCP (two-byte length framing, several queries
//! per connection) on 127.0.0.1, std only, one thread per socket and per TCP
//! connection, all stopped and joined on drop. UDP is read and answered in batches
//! (recvmmsg/sendmmsg), so that in [`Mode::Hashed`] one core answers far faster than
//! any forwarder can send (the resolver bench's upstream).
//!
//! How it answers is a [`Mode`], for every name or per name, switchable while it runs.
//! It counts every message it gets ([`FakeUpstream::received`]) and, unless told not to
//! (a bench), records each query ([`Seen`]: name as received, type, transport, ID,
//! source address, DO bit) so that tests can count what reached it.
//!
//! Answers: `A 192.0.2.TAG`, `AAAA 2001:db8::TAG`, `PTR host-TAG.upstream.test.`,
//! `NS nsTAG.upstream.test.` (for the health probe `. IN NS`), with the configured TTL
//! (default 60); other types get NODATA. TAG (default 1) tells two fakes apart. Denials
//! carry a SOA of the name's top-level zone (`ns.upstream.test. hostmaster.upstream.test.`),
//! with its own TTL (default 60; also its MINIMUM). Over UDP a reply larger than the
//! query allows (512 bytes, or its EDNS size) is sent truncated (TC, no records), as a
//! real server does.
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use domain::base::iana::{Class, Rcode, Rtype};
use domain::base::message_builder::{AuthorityBuilder, StaticCompressor};
use domain::base::{Message, MessageBuilder, Name, ParsedName, Serial, Ttl};
use domain::rdata::{A, Aaaa, Cname, Ns, Ptr, Soa};

/// The TAG of spoofed replies: their A record is `192.0.2.66`.
pub const SPOOFED: u8 = 66;

/// A reply written by a test from the raw query (None: no reply).
pub type RawReply = fn(&[u8]) -> Option<Vec<u8>>;

/// How the fake answers a query.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// NOERROR with one record of the asked type (see the module doc), or NODATA.
    Answer,
    /// NXDOMAIN with the SOA in the authority section.
    NxDomain,
    /// NXDOMAIN with nothing in the authority section.
    NxDomainNoSoa,
    /// NOERROR, no answer, the SOA in the authority section.
    NoData,
    ServFail,
    Refused,
    /// No reply at all.
    Silent,
    /// The [`Mode::Answer`] reply, sent after this delay (other queries are answered
    /// meanwhile).
    Slow(Duration),
    /// Over UDP: TC set and no records. Over TCP: the full answer.
    Truncated,
    /// An answer for another name (`wrong.upstream.test.`), with the query's ID.
    WrongQuestion,
    /// A spoofed answer (`192.0.2.66`) with another ID; then the genuine one, if
    /// [`FakeUpstream::genuine_after`].
    WrongId,
    /// Over UDP: a spoofed answer (`192.0.2.66`) with the right ID, sent from another
    /// socket (another port); then the genuine one, if [`FakeUpstream::genuine_after`].
    /// Over TCP: only that genuine one.
    FromOtherAddress,
    /// N address records (A `198.18.x.y` / AAAA `2001:db8::1:x`), starting at 1.
    BigAnswer(usize),
    /// A CNAME to `target`, followed (if `resolved`) by the target's usual answer.
    Cname {
        target: &'static str,
        resolved: bool,
    },
    /// The benches' answer, written without parsing: every A question gets one A record
    /// (with the configured TTL, AA set) of an address in 198.18.0.0/15 drawn from the
    /// name (so the same name always gets the same address, whoever forwards it), any
    /// other question an empty NOERROR; an OPT (1232) if the query had one.
    Hashed,
    /// Whatever the function makes of the raw query (a reply no honest server sends).
    Raw(RawReply),
    /// UDP is not read at all (the kernel's queue fills and drops); TCP is answered.
    Deaf,
}

/// The transport a query came over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
}

/// One query the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The name as received (letter case kept), fully qualified: `Www.Example.org.`.
    pub name: String,
    pub qtype: Rtype,
    pub proto: Proto,
    pub id: u16,
    pub from: SocketAddr,
    pub rd: bool,
    pub cd: bool,
    /// The query's EDNS UDP size, if it had an OPT record.
    pub edns: Option<u16>,
    pub dnssec_ok: bool,
    /// The codes of the EDNS options it carried.
    pub options: Vec<u16>,
    /// For TCP: the number of the connection it came on (from 1).
    pub conn: Option<usize>,
    pub at: Instant,
}

struct State {
    recording: bool,
    default: Mode,
    per_name: HashMap<String, Mode>,
    ttl: u32,
    soa_ttl: u32,
    tag: u8,
    genuine_after: Option<Duration>,
    seen: Vec<Seen>,
}

/// Where a reply goes.
enum Out {
    Udp(Arc<UdpSocket>, SocketAddr),
    Tcp(Arc<Mutex<TcpStream>>),
}

impl Out {
    fn send(&self, msg: &[u8]) {
        match self {
            Out::Udp(s, to) => {
                let _ = s.send_to(msg, to);
            }
            Out::Tcp(s) => {
                let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(msg);
                let _ = s.lock().unwrap().write_all(&framed);
            }
        }
    }
}

/// A reply sent later by the delay thread.
struct Delayed {
    due: Instant,
    out: Out,
    msg: Vec<u8>,
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    /// Messages received (UDP datagrams and TCP frames), parsable or not.
    received: AtomicU64,
    connections: AtomicUsize,
    conn_threads: Mutex<Vec<JoinHandle<()>>>,
    delay: Mutex<mpsc::Sender<Delayed>>,
    /// The socket [`Mode::FromOtherAddress`] replies from.
    other: Arc<UdpSocket>,
}

/// The fake upstream. Stopped (and its threads joined) on drop.
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// `name` lower-cased and fully qualified.
fn key(name: &str) -> String {
    let mut k = name.to_ascii_lowercase();
    if !k.ends_with('.') {
        k.push('.');
    }
    k
}

fn shown(name: &ParsedName<&[u8]>) -> String {
    let s = name.to_string();
    if s.is_empty() || s == "." {
        ".".into()
    } else {
        format!("{s}.")
    }
}

/// How to start a [`FakeUpstream`].
pub struct Builder {
    port: u16,
    mode: Mode,
    tag: u8,
    ttl: u32,
    recording: bool,
    cpu: Option<usize>,
}

impl Builder {
    /// On this port of 127.0.0.1 (0, the default: a free one, the same for UDP and TCP).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The last byte of its addresses (`192.0.2.TAG`, default 1).
    pub fn tag(mut self, tag: u8) -> Self {
        self.tag = tag;
        self
    }

    /// The TTL of answer records (default 60).
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = ttl;
        self
    }

    /// Whether each query is kept for [`FakeUpstream::seen`] (default yes; a bench
    /// sending millions says no, and only counts).
    pub fn recording(mut self, on: bool) -> Self {
        self.recording = on;
        self
    }

    /// Runs its threads on this CPU only.
    pub fn pin(mut self, cpu: usize) -> Self {
        self.cpu = Some(cpu);
        self
    }

    pub fn start(self) -> FakeUpstream {
        FakeUpstream::launch(self)
    }
}

impl FakeUpstream {
    /// A fake on a free port of 127.0.0.1, answering everything ([`Mode::Answer`]).
    pub fn start() -> FakeUpstream {
        FakeUpstream::builder().start()
    }

    /// A fake with this TAG (the last byte of its addresses).
    pub fn tagged(tag: u8) -> FakeUpstream {
        FakeUpstream::builder().tag(tag).start()
    }

    /// A fake in this mode.
    pub fn with_mode(mode: Mode) -> FakeUpstream {
        FakeUpstream::builder().mode(mode).start()
    }

    /// A fake on `port` of 127.0.0.1 (0: a free one, the same for UDP and TCP).
    pub fn start_on(port: u16) -> FakeUpstream {
        FakeUpstream::builder().port(port).start()
    }

    pub fn builder() -> Builder {
        Builder {
            port: 0,
            mode: Mode::Answer,
            tag: 1,
            ttl: 60,
            recording: true,
            cpu: None,
        }
    }

    fn launch(b: Builder) -> FakeUpstream {
        let (udp, tcp) = bind_pair(b.port);
        let addr = udp.local_addr().unwrap();
        // Wakes up now and then to see whether it should stop.
        udp.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        // A deep queue: a burst of forwarded queries must not be dropped here, or the
        // forwarder's timeouts would be measured instead of its work. The kernel caps it
        // at net.core.rmem_max.
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt on our own socket with a c_int option value.
        unsafe {
            libc::setsockopt(
                udp.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
        tcp.set_nonblocking(true).unwrap();
        let (tx, rx) = mpsc::channel::<Delayed>();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                recording: b.recording,
                default: b.mode,
                per_name: HashMap::new(),
                ttl: b.ttl,
                soa_ttl: 60,
                tag: b.tag,
                genuine_after: None,
                seen: Vec::new(),
            }),
            stop: AtomicBool::new(false),
            received: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            conn_threads: Mutex::new(Vec::new()),
            delay: Mutex::new(tx),
            other: Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap()),
        });
        let udp = Arc::new(udp);
        let mut threads = Vec::new();
        let cpu = b.cpu;
        let pin = move || {
            if let Some(c) = cpu {
                crate::procfs::pin_to(c);
            }
        };

        let s = shared.clone();
        threads.push(std::thread::spawn(move || {
            pin();
            s.serve_udp(&udp);
        }));

        let s = shared.clone();
        threads.push(std::thread::spawn(move || {
            pin();
            while !s.stop.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((stream, from)) => {
                        let n = s.connections.fetch_add(1, Ordering::Relaxed) + 1;
                        let s2 = s.clone();
                        let t = std::thread::spawn(move || s2.serve_tcp(stream, from, n));
                        s.conn_threads.lock().unwrap().push(t);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));

        let s = shared.clone();
        threads.push(std::thread::spawn(move || {
            pin();
            let mut pending: Vec<Delayed> = Vec::new();
            while !s.stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                let mut i = 0;
                while i < pending.len() {
                    if pending[i].due <= now {
                        let d = pending.swap_remove(i);
                        d.out.send(&d.msg);
                    } else {
                        i += 1;
                    }
                }
                let wait = pending
                    .iter()
                    .map(|d| d.due.saturating_duration_since(now))
                    .min()
                    .unwrap_or(Duration::from_millis(20))
                    .min(Duration::from_millis(20));
                match rx.recv_timeout(wait) {
                    Ok(d) => pending.push(d),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        }));

        FakeUpstream { addr, shared, threads }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `127.0.0.1:PORT`, for a Corefile.
    pub fn spec(&self) -> String {
        self.addr.to_string()
    }

    /// The mode for every name without a mode of its own.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.state.lock().unwrap().default = mode;
    }

    /// The mode for `name` (any letter case; with or without the final dot).
    pub fn set_mode_for(&self, name: &str, mode: Mode) {
        self.shared.state.lock().unwrap().per_name.insert(key(name), mode);
    }

    /// `name` answers by the default mode again.
    pub fn clear_mode_for(&self, name: &str) {
        self.shared.state.lock().unwrap().per_name.remove(&key(name));
    }

    /// The TTL of answer records.
    pub fn set_ttl(&self, ttl: u32) {
        self.shared.state.lock().unwrap().ttl = ttl;
    }

    /// The TTL (and MINIMUM) of the SOA record of denials.
    pub fn set_soa_ttl(&self, ttl: u32) {
        self.shared.state.lock().unwrap().soa_ttl = ttl;
    }

    /// The last byte of the answer addresses (`192.0.2.TAG`).
    pub fn set_tag(&self, tag: u8) {
        self.shared.state.lock().unwrap().tag = tag;
    }

    /// After a spoofed reply ([`Mode::WrongId`], [`Mode::FromOtherAddress`]), send the
    /// genuine answer this long later (None: never).
    pub fn genuine_after(&self, after: Option<Duration>) {
        self.shared.state.lock().unwrap().genuine_after = after;
    }

    /// Every query received so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.state.lock().unwrap().seen.clone()
    }

    /// Messages received so far (UDP datagrams and TCP frames, parsable or not).
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Forgets the queries received so far (not the TCP connection count).
    pub fn reset(&self) {
        self.shared.state.lock().unwrap().seen.clear();
    }

    fn count_where(&self, f: impl Fn(&Seen) -> bool) -> usize {
        self.shared.state.lock().unwrap().seen.iter().filter(|s| f(s)).count()
    }

    /// Queries for `name` (any case) of `qtype` over `proto`.
    pub fn count(&self, name: &str, qtype: Rtype, proto: Proto) -> usize {
        let k = key(name);
        self.count_where(|s| key(&s.name) == k && s.qtype == qtype && s.proto == proto)
    }

    /// Queries for `name` of `qtype`, over either transport.
    pub fn count_type(&self, name: &str, qtype: Rtype) -> usize {
        let k = key(name);
        self.count_where(|s| key(&s.name) == k && s.qtype == qtype)
    }

    /// Queries for `name`, any type, any transport.
    pub fn count_name(&self, name: &str) -> usize {
        let k = key(name);
        self.count_where(|s| key(&s.name) == k)
    }

    /// Every query received.
    pub fn total(&self) -> usize {
        self.count_where(|_| true)
    }

    /// Queries received over `proto`.
    pub fn total_over(&self, proto: Proto) -> usize {
        self.count_where(|s| s.proto == proto)
    }

    /// Queries other than the health probe (`. IN NS`).
    pub fn total_but_probes(&self) -> usize {
        self.count_where(|s| !(s.name == "." && s.qtype == Rtype::NS))
    }

    /// Health probes received (`. IN NS`).
    pub fn probes(&self) -> usize {
        self.count_where(|s| s.name == "." && s.qtype == Rtype::NS)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Polls until `f` holds (true) or `timeout` passes (false).
    pub fn wait_until(&self, timeout: Duration, f: impl Fn(&FakeUpstream) -> bool) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if f(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        f(self)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let conns: Vec<_> = self.shared.conn_threads.lock().unwrap().drain(..).collect();
        for t in conns {
            let _ = t.join();
        }
    }
}

/// UDP and TCP sockets on the same port of 127.0.0.1.
fn bind_pair(port: u16) -> (UdpSocket, TcpListener) {
    if port != 0 {
        let udp = UdpSocket::bind(("127.0.0.1", port)).expect("bind fake upstream UDP");
        let tcp = TcpListener::bind(("127.0.0.1", port)).expect("bind fake upstream TCP");
        return (udp, tcp);
    }
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = udp.local_addr().unwrap().port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", p)) {
            return (udp, tcp);
        }
    }
    panic!("no free port for the fake upstream");
}

/// What an answer holds.
enum Content<'a> {
    /// The usual answer for the type.
    Normal,
    /// N address records.
    Many(usize),
    /// No records; with the SOA or not.
    Empty { soa: bool },
    /// A CNAME, and the target's usual record or not.
    Cname { target: &'a str, resolved: bool },
}

/// Everything needed to write one reply.
struct Spec<'a> {
    id: u16,
    rcode: Rcode,
    tc: bool,
    /// The question's name, as the reply states it.
    qname: &'a str,
    content: Content<'a>,
    ttl: u32,
    soa_ttl: u32,
    tag: u8,
}

/// Datagrams read (and replies sent) per system call.
const BATCH: usize = 64;
/// The largest datagram read whole.
const DATAGRAM: usize = 4096;

/// Buffers and message headers for one batch each way, allocated once; the headers
/// point into the vectors' heap storage, which never moves.
struct Buffers {
    rx: Vec<[u8; DATAGRAM]>,
    tx: Vec<[u8; 1500]>,
    addrs: Vec<libc::sockaddr_storage>,
    rx_iov: Vec<libc::iovec>,
    tx_iov: Vec<libc::iovec>,
    rx_hdrs: Vec<libc::mmsghdr>,
    tx_hdrs: Vec<libc::mmsghdr>,
}

impl Buffers {
    fn new() -> Box<Buffers> {
        // SAFETY (all zeroed values below): sockaddr_storage and mmsghdr are plain C
        // structs for which all-zero bytes are valid.
        let mut b = Box::new(Buffers {
            rx: vec![[0u8; DATAGRAM]; BATCH],
            tx: vec![[0u8; 1500]; BATCH],
            addrs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            rx_iov: Vec::with_capacity(BATCH),
            tx_iov: Vec::with_capacity(BATCH),
            rx_hdrs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            tx_hdrs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
        });
        let Buffers {
            rx,
            tx,
            rx_iov,
            tx_iov,
            rx_hdrs,
            ..
        } = &mut *b;
        for (r, t) in rx.iter_mut().zip(tx.iter_mut()) {
            rx_iov.push(libc::iovec {
                iov_base: r.as_mut_ptr().cast(),
                iov_len: r.len(),
            });
            tx_iov.push(libc::iovec {
                iov_base: t.as_mut_ptr().cast(),
                iov_len: 0,
            });
        }
        for (h, v) in rx_hdrs.iter_mut().zip(rx_iov.iter_mut()) {
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        b
    }
}

/// The address a datagram came from.
fn source(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match a.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let v4 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr)),
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let v6 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(v6.sin6_addr.s6_addr),
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

impl Shared {
    /// The UDP socket: batches in, each datagram answered as its mode says; in
    /// [`Mode::Hashed`] (for every name) the replies go out in batches too.
    fn serve_udp(&self, udp: &Arc<UdpSocket>) {
        let fd = udp.as_raw_fd();
        let mut b = Buffers::new();
        while !self.stop.load(Ordering::Relaxed) {
            let (deaf, fast, ttl) = {
                let st = self.state.lock().unwrap();
                let hashed = matches!(st.default, Mode::Hashed) && st.per_name.is_empty();
                (matches!(st.default, Mode::Deaf), hashed && !st.recording, st.ttl)
            };
            if deaf {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            for (h, a) in b.rx_hdrs.iter_mut().zip(b.addrs.iter_mut()) {
                h.msg_hdr.msg_name = (a as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
                h.msg_len = 0;
            }
            // SAFETY: the headers point at live buffers and address slots of `b`. Blocks
            // for the first datagram (up to the read timeout), then takes what is queued.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    b.rx_hdrs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if n <= 0 {
                continue;
            }
            let n = n as usize;
            self.received.fetch_add(n as u64, Ordering::Relaxed);
            if !fast {
                for i in 0..n {
                    let len = (b.rx_hdrs[i].msg_len as usize).min(DATAGRAM);
                    let Some(from) = source(&b.addrs[i]) else { continue };
                    self.handle(&b.rx[i][..len], Proto::Udp, from, None, || Out::Udp(udp.clone(), from));
                }
                continue;
            }
            let mut k = 0;
            for i in 0..n {
                let len = (b.rx_hdrs[i].msg_len as usize).min(DATAGRAM);
                let reply_len = hashed_reply(&b.rx[i][..len], &mut b.tx[k], ttl);
                if reply_len == 0 {
                    continue;
                }
                b.tx_iov[k].iov_base = b.tx[k].as_mut_ptr().cast();
                b.tx_iov[k].iov_len = reply_len;
                let h = &mut b.tx_hdrs[k];
                h.msg_hdr.msg_iov = &mut b.tx_iov[k];
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = b.rx_hdrs[i].msg_hdr.msg_namelen;
                k += 1;
            }
            let mut sent = 0;
            while sent < k {
                // SAFETY: the first k headers point at live replies and source addresses.
                let r = unsafe { libc::sendmmsg(fd, b.tx_hdrs[sent..].as_mut_ptr(), (k - sent) as u32, 0) };
                if r <= 0 {
                    // The one at the head failed (its sender gone): skip it, send the rest.
                    sent += 1;
                } else {
                    sent += r as usize;
                }
            }
        }
    }

    fn serve_tcp(&self, stream: TcpStream, from: SocketAddr, conn: usize) {
        stream.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let writer = Arc::new(Mutex::new(stream.try_clone().unwrap()));
        let mut reader = stream;
        let mut input = Vec::new();
        let mut chunk = [0u8; 4096];
        while !self.stop.load(Ordering::Relaxed) {
            match reader.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => input.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                Err(_) => return,
            }
            while input.len() >= 2 {
                let len = u16::from_be_bytes([input[0], input[1]]) as usize;
                if input.len() < 2 + len {
                    break;
                }
                let msg: Vec<u8> = input.drain(..2 + len).skip(2).collect();
                self.received.fetch_add(1, Ordering::Relaxed);
                self.handle(&msg, Proto::Tcp, from, Some(conn), || Out::Tcp(writer.clone()));
            }
        }
    }

    /// Records the query and sends what its mode says.
    fn handle(&self, raw: &[u8], proto: Proto, from: SocketAddr, conn: Option<usize>, out: impl Fn() -> Out) {
        let Ok(req) = Message::from_octets(raw.to_vec()) else {
            return;
        };
        let recording = self.state.lock().unwrap().recording;
        let Ok(q) = req.sole_question() else {
            return;
        };
        let name = shown(q.qname());
        let qtype = q.qtype();
        let opt = req.opt();
        let edns = opt.as_ref().map(|o| o.udp_payload_size());
        let dnssec_ok = opt.as_ref().is_some_and(|o| o.dnssec_ok());
        let options: Vec<u16> = opt.as_ref().map_or(Vec::new(), |o| {
            o.opt()
                .iter::<domain::base::opt::UnknownOptData<&[u8]>>()
                .filter_map(Result::ok)
                .map(|d| d.code().to_int())
                .collect()
        });
        let (mode, ttl, soa_ttl, tag, genuine_after) = {
            let mut st = self.state.lock().unwrap();
            if recording {
                st.seen.push(Seen {
                    name: name.clone(),
                    qtype,
                    proto,
                    id: req.header().id(),
                    from,
                    rd: req.header().rd(),
                    cd: req.header().cd(),
                    edns,
                    dnssec_ok,
                    options,
                    conn,
                    at: Instant::now(),
                });
            }
            let mode = st.per_name.get(&key(&name)).copied().unwrap_or(st.default);
            (mode, st.ttl, st.soa_ttl, st.tag, st.genuine_after)
        };
        let limit = match proto {
            Proto::Udp => usize::from(edns.unwrap_or(512).max(512)),
            Proto::Tcp => 65535,
        };
        let id = req.header().id();
        let spec = |rcode, content| Spec {
            id,
            rcode,
            tc: false,
            qname: &name,
            content,
            ttl,
            soa_ttl,
            tag,
        };
        let reply = |s: Spec<'_>| build(&req, s, limit);
        let now = |msg: Vec<u8>| out().send(&msg);
        let later = |after: Duration, msg: Vec<u8>| {
            let _ = self.delay.lock().unwrap().send(Delayed {
                due: Instant::now() + after,
                out: out(),
                msg,
            });
        };
        match mode {
            Mode::Answer => now(reply(spec(Rcode::NOERROR, Content::Normal))),
            Mode::NxDomain => now(reply(spec(Rcode::NXDOMAIN, Content::Empty { soa: true }))),
            Mode::NxDomainNoSoa => now(reply(spec(Rcode::NXDOMAIN, Content::Empty { soa: false }))),
            Mode::NoData => now(reply(spec(Rcode::NOERROR, Content::Empty { soa: true }))),
            Mode::ServFail => now(reply(spec(Rcode::SERVFAIL, Content::Empty { soa: false }))),
            Mode::Refused => now(reply(spec(Rcode::REFUSED, Content::Empty { soa: false }))),
            Mode::Silent => {}
            Mode::Slow(d) => later(d, reply(spec(Rcode::NOERROR, Content::Normal))),
            Mode::Truncated => match proto {
                Proto::Udp => now(reply(Spec {
                    tc: true,
                    ..spec(Rcode::NOERROR, Content::Empty { soa: false })
                })),
                Proto::Tcp => now(reply(spec(Rcode::NOERROR, Content::Normal))),
            },
            Mode::WrongQuestion => now(reply(Spec {
                qname: "wrong.upstream.test.",
                ..spec(Rcode::NOERROR, Content::Normal)
            })),
            Mode::WrongId => {
                now(reply(Spec {
                    id: id ^ 0x5a5a,
                    tag: SPOOFED,
                    ..spec(Rcode::NOERROR, Content::Normal)
                }));
                if let Some(d) = genuine_after {
                    later(d, reply(spec(Rcode::NOERROR, Content::Normal)));
                }
            }
            Mode::FromOtherAddress => {
                if proto == Proto::Udp {
                    let spoofed = reply(Spec {
                        tag: SPOOFED,
                        ..spec(Rcode::NOERROR, Content::Normal)
                    });
                    let _ = self.other.send_to(&spoofed, from);
                }
                if let Some(d) = genuine_after {
                    later(d, reply(spec(Rcode::NOERROR, Content::Normal)));
                }
            }
            Mode::BigAnswer(n) => now(reply(spec(Rcode::NOERROR, Content::Many(n)))),
            Mode::Hashed => {
                let mut buf = [0u8; 1500];
                let n = hashed_reply(raw, &mut buf, ttl);
                if n > 0 {
                    now(buf[..n].to_vec());
                }
            }
            Mode::Raw(f) => {
                if let Some(msg) = f(raw) {
                    now(msg);
                }
            }
            // Over TCP (UDP is never read): the usual answer.
            Mode::Deaf => now(reply(spec(Rcode::NOERROR, Content::Normal))),
            Mode::Cname { target, resolved } => now(reply(spec(Rcode::NOERROR, Content::Cname { target, resolved }))),
        }
    }
}

/// The SOA zone of `name`: its last label (`org.`), or the root.
fn zone_of(name: &str) -> String {
    let labels: Vec<&str> = name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
        .collect();
    match labels.last() {
        Some(l) => format!("{l}."),
        None => ".".into(),
    }
}

/// The reply for `req` as `s` says; over the size `limit`, TC and no records.
fn build(req: &Message<Vec<u8>>, s: Spec<'_>, limit: usize) -> Vec<u8> {
    let full = compose(req, &s, false);
    if full.len() <= limit {
        return full;
    }
    compose(req, &s, true)
}

fn compose(req: &Message<Vec<u8>>, s: &Spec<'_>, cut: bool) -> Vec<u8> {
    let q = req.sole_question().unwrap();
    let qtype = q.qtype();
    let owner = Name::<Vec<u8>>::from_str(s.qname).unwrap();
    let mut b = MessageBuilder::from_target(StaticCompressor::new(Vec::new())).unwrap();
    {
        let h = b.header_mut();
        h.set_id(s.id);
        h.set_qr(true);
        h.set_opcode(req.header().opcode());
        h.set_rd(req.header().rd());
        h.set_cd(req.header().cd());
        h.set_ra(true);
        h.set_rcode(s.rcode);
        h.set_tc(s.tc || cut);
    }
    let mut qb = b.question();
    qb.push((&owner, qtype, Class::IN)).unwrap();
    let mut ab = qb.answer();
    let mut nodata = false;
    let mut owner = owner;
    if let (false, Content::Cname { target, resolved }) = (cut, &s.content) {
        let target = Name::<Vec<u8>>::from_str(target).unwrap();
        ab.push((&owner, s.ttl, Cname::new(target.clone()))).unwrap();
        owner = target;
        if !resolved {
            return finish(req, ab.authority(), cut, false, s);
        }
    }
    if !cut {
        match s.content {
            Content::Normal | Content::Cname { .. } => match qtype {
                Rtype::A => ab
                    .push((&owner, s.ttl, A::new(Ipv4Addr::new(192, 0, 2, s.tag))))
                    .unwrap(),
                Rtype::AAAA => ab
                    .push((
                        &owner,
                        s.ttl,
                        Aaaa::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, s.tag.into())),
                    ))
                    .unwrap(),
                Rtype::PTR => {
                    let target = Name::<Vec<u8>>::from_str(&format!("host-{}.upstream.test.", s.tag)).unwrap();
                    ab.push((&owner, s.ttl, Ptr::new(target))).unwrap()
                }
                Rtype::NS => {
                    let target = Name::<Vec<u8>>::from_str(&format!("ns{}.upstream.test.", s.tag)).unwrap();
                    ab.push((&owner, s.ttl, Ns::new(target))).unwrap()
                }
                _ => nodata = true,
            },
            Content::Many(n) => {
                for i in 1..=n {
                    match qtype {
                        Rtype::AAAA => ab
                            .push((
                                &owner,
                                s.ttl,
                                Aaaa::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, i as u16)),
                            ))
                            .unwrap(),
                        _ => ab
                            .push((
                                &owner,
                                s.ttl,
                                A::new(Ipv4Addr::new(198, 18, (i >> 8) as u8, (i & 0xff) as u8)),
                            ))
                            .unwrap(),
                    }
                }
            }
            Content::Empty { soa } => nodata = soa,
        }
    }
    finish(req, ab.authority(), cut, nodata, s)
}

/// The authority (a SOA if `nodata`) and additional (OPT) sections.
fn finish(
    req: &Message<Vec<u8>>,
    mut auth: AuthorityBuilder<StaticCompressor<Vec<u8>>>,
    cut: bool,
    nodata: bool,
    s: &Spec<'_>,
) -> Vec<u8> {
    if nodata && !cut {
        let zone = Name::<Vec<u8>>::from_str(&zone_of(s.qname)).unwrap();
        let mname = Name::<Vec<u8>>::from_str("ns.upstream.test.").unwrap();
        let rname = Name::<Vec<u8>>::from_str("hostmaster.upstream.test.").unwrap();
        let soa = Soa::new(
            mname,
            rname,
            Serial(2024010101),
            Ttl::from_secs(3600),
            Ttl::from_secs(600),
            Ttl::from_secs(86400),
            Ttl::from_secs(s.soa_ttl),
        );
        auth.push((&zone, s.soa_ttl, soa)).unwrap();
    }
    let mut add = auth.additional();
    if let Some(opt) = req.opt() {
        let dnssec_ok = opt.dnssec_ok();
        add.opt(|o| {
            o.set_udp_payload_size(1232);
            o.set_dnssec_ok(dnssec_ok);
            Ok(())
        })
        .unwrap();
    }
    add.finish().into_target()
}

fn u16_at(m: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([m[at], m[at + 1]])
}

/// Writes the [`Mode::Hashed`] reply to query `q` into `out`; its length, or 0 for
/// anything that is not a one-question query (dropped).
fn hashed_reply(q: &[u8], out: &mut [u8; 1500], ttl: u32) -> usize {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16_at(q, 4) != 1 {
        return 0;
    }
    // The question name: plain labels (a query's first name is never compressed).
    let mut at = 12;
    let mut hash: u32 = 0x811c_9dc5;
    loop {
        let Some(&len) = q.get(at) else { return 0 };
        let len = len as usize;
        if len == 0 {
            at += 1;
            break;
        }
        if len & 0xc0 != 0 || at + 1 + len > q.len() {
            return 0;
        }
        for &c in &q[at + 1..at + 1 + len] {
            hash = (hash ^ c.to_ascii_lowercase() as u32).wrapping_mul(0x0100_0193);
        }
        at += 1 + len;
    }
    if at + 4 > q.len() || at + 4 + 16 + 11 > out.len() {
        return 0;
    }
    let qtype = u16_at(q, at);
    at += 4;
    out[..at].copy_from_slice(&q[..at]);
    // QR, AA, the query's RD; RA, NOERROR.
    out[2] = 0x80 | 0x04 | (q[2] & 0x01);
    out[3] = 0x80;
    let answers: u16 = if qtype == 1 { 1 } else { 0 };
    let opt = u16_at(q, 10) > 0;
    out[6..8].copy_from_slice(&answers.to_be_bytes());
    out[8..10].copy_from_slice(&0u16.to_be_bytes());
    out[10..12].copy_from_slice(&u16::from(opt).to_be_bytes());
    if answers == 1 {
        let ip = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (hash & 0x1_ffff);
        // Owner: a pointer to the question name; A IN TTL, 4 bytes of address.
        out[at..at + 12].copy_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        out[at + 6..at + 10].copy_from_slice(&ttl.to_be_bytes());
        out[at + 12..at + 16].copy_from_slice(&ip.to_be_bytes());
        at += 16;
    }
    if opt {
        // The query's OPT stands in for EDNS support: answer with one, 1232 bytes.
        out[at..at + 11].copy_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        at += 11;
    }
    at
}

// ------------------------------------------------------------------------------------
// The fake's own tests.

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{query_bytes, raw_udp, read_frame, section, write_frame};

    fn udp(f: &FakeUpstream, name: &str, qtype: Rtype, id: u16) -> Option<Message<Vec<u8>>> {
        raw_udp(
            f.addr(),
            &query_bytes(name, qtype, Some(1232), id),
            Duration::from_millis(500),
        )
        .map(|r| Message::from_octets(r).unwrap())
    }

    #[test]
    fn fake_upstream_modes_and_counters() {
        let f = FakeUpstream::tagged(7);
        let r = udp(&f, "Www.Example.org", Rtype::A, 0x1111).unwrap();
        assert_eq!(r.header().id(), 0x1111);
        assert_eq!(section(&r, "answer"), ["Www.Example.org. 60 IN A 192.0.2.7"]);
        f.set_mode_for("nx.example.org", Mode::NxDomain);
        f.set_soa_ttl(30);
        let r = udp(&f, "nx.example.org", Rtype::A, 2).unwrap();
        assert_eq!(r.header().rcode(), Rcode::NXDOMAIN);
        assert_eq!(section(&r, "authority").len(), 1);
        assert!(section(&r, "authority")[0].starts_with("org. 30 IN SOA "));
        f.set_mode(Mode::Silent);
        assert!(udp(&f, "quiet.example.org", Rtype::A, 3).is_none());
        f.set_mode(Mode::Truncated);
        let r = udp(&f, "tc.example.org", Rtype::A, 4).unwrap();
        assert!(r.header().tc());
        assert_eq!(r.header_counts().ancount(), 0);

        // TCP: several queries on one connection, the full answer.
        let mut s = TcpStream::connect(f.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for id in [10u16, 11] {
            write_frame(&mut s, &query_bytes("tc.example.org", Rtype::A, None, id));
            let r = Message::from_octets(read_frame(&mut s).unwrap()).unwrap();
            assert_eq!(r.header().id(), id);
            assert_eq!(section(&r, "answer"), ["tc.example.org. 60 IN A 192.0.2.7"]);
        }
        assert_eq!(f.connections(), 1);
        assert_eq!(f.count("tc.example.org", Rtype::A, Proto::Tcp), 2);
        assert_eq!(f.count("TC.example.org.", Rtype::A, Proto::Udp), 1);

        // Big answers are cut over UDP, whole over TCP.
        f.set_mode(Mode::BigAnswer(100));
        let r = udp(&f, "big.example.org", Rtype::A, 5).unwrap();
        assert!(r.header().tc());
        write_frame(&mut s, &query_bytes("big.example.org", Rtype::A, None, 12));
        let r = Message::from_octets(read_frame(&mut s).unwrap()).unwrap();
        assert_eq!(section(&r, "answer").len(), 100);

        // Slow: the reply comes later; others are answered meanwhile.
        f.set_mode(Mode::Answer);
        f.set_mode_for("slow.example.org", Mode::Slow(Duration::from_millis(300)));
        let t = Instant::now();
        assert!(udp(&f, "slow.example.org", Rtype::A, 6).is_some());
        assert!(t.elapsed() >= Duration::from_millis(280), "{:?}", t.elapsed());
        assert_eq!(f.total(), 9);

        f.set_mode(Mode::Cname {
            target: "t.example.net.",
            resolved: true,
        });
        let r = udp(&f, "c.example.org", Rtype::A, 7).unwrap();
        assert_eq!(
            section(&r, "answer"),
            [
                "c.example.org. 60 IN CNAME t.example.net.",
                "t.example.net. 60 IN A 192.0.2.7"
            ]
        );
        f.set_mode(Mode::Cname {
            target: "t.example.net.",
            resolved: false,
        });
        let r = udp(&f, "c.example.org", Rtype::A, 8).unwrap();
        assert_eq!(section(&r, "answer"), ["c.example.org. 60 IN CNAME t.example.net."]);
        assert!(section(&r, "authority").is_empty());

        // The health probe's name is the root.
        f.set_mode(Mode::Answer);
        let r = udp(&f, ".", Rtype::NS, 9).unwrap();
        assert_eq!(section(&r, "answer"), [". 60 IN NS ns7.upstream.test."]);
        assert_eq!(f.probes(), 1);
    }
}

#[cfg(test)]
mod more_tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::load::Load;
    use crate::wire::{Header, parse_reply, query, raw_udp};

    /// The benches' mode: one A record from the name's hash, batched; counted, not kept.
    #[test]
    fn hashed_answers_are_the_same_for_a_name_and_only_counted() {
        let up = FakeUpstream::builder()
            .mode(Mode::Hashed)
            .ttl(3600)
            .recording(false)
            .start();
        let ask = |name: &str, qtype: u16| {
            let r = raw_udp(up.addr(), &query(name, qtype, 9, Some(1232)), Duration::from_secs(2)).unwrap();
            parse_reply(&r).unwrap()
        };
        let a = ask("Svc.Example.org", 1);
        assert_eq!(a.answers.len(), 1);
        assert!(a.answers[0].starts_with("svc.example.org. 3600 A 198.1"), "{a:?}");
        assert_eq!(ask("svc.example.ORG", 1).answers, a.answers);
        assert!(ask("svc.example.org", 28).answers.is_empty());
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(
            (0..100u16)
                .map(|i| query(&format!("n{i}.bench"), 1, i, Some(1232)))
                .collect(),
        );
        let st = Load::closed(up.addr(), queries, 0.3).run(&stop);
        assert!(st.ok > 100 && st.ok == st.replies && st.lost == 0, "{st:?}");
        // The last ones may still be on their way.
        crate::process::wait_until("every query received", Duration::from_secs(2), || {
            up.received() == st.sent + 3
        });
        assert!(up.seen().is_empty());
    }

    fn loop_reply(q: &[u8]) -> Option<Vec<u8>> {
        let mut r = q.to_vec();
        r[2] |= 0x80;
        r[3] = 0x02;
        Some(r)
    }

    #[test]
    fn raw_replies_and_a_deaf_socket() {
        let up = FakeUpstream::with_mode(Mode::Raw(loop_reply));
        let r = raw_udp(up.addr(), &query("x.example", 1, 5, None), Duration::from_secs(2)).unwrap();
        let h = Header::of_reply(&r).unwrap();
        assert_eq!((h.id, h.rcode), (5, 2));
        up.set_mode(Mode::Deaf);
        std::thread::sleep(Duration::from_millis(50));
        let before = up.received();
        assert!(raw_udp(up.addr(), &query("x.example", 1, 6, None), Duration::from_millis(300)).is_none());
        assert_eq!(up.received(), before, "not even read");
    }
}
