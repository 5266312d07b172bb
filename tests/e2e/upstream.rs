//! A fake upstream DNS server for the resolver tests: UDP and TCP (two-byte length
//! framing, several queries per connection) on 127.0.0.1, std only, one thread per
//! socket and per TCP connection, all stopped and joined on drop.
//!
//! How it answers is a [`Mode`], for every name or per name, switchable while it runs.
//! It records every query it gets ([`Seen`]: name as received, type, transport, ID,
//! source address, DO bit) so that tests can count what reached it.
//!
//! Answers: `A 192.0.2.TAG`, `AAAA 2001:db8::TAG`, `PTR host-TAG.upstream.test.`,
//! `NS nsTAG.upstream.test.` (for the health probe `. IN NS`), with the configured TTL
//! (default 60); other types get NODATA. TAG (default 1) tells two fakes apart. Denials
//! carry a SOA of the name's top-level zone (`ns.upstream.test. hostmaster.upstream.test.`),
//! with its own TTL (default 60; also its MINIMUM). Over UDP a reply larger than the
//! query allows (512 bytes, or its EDNS size) is sent truncated (TC, no records), as a
//! real server does.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// How the fake answers a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

impl FakeUpstream {
    /// A fake on a free port of 127.0.0.1, answering everything ([`Mode::Answer`]).
    pub fn start() -> FakeUpstream {
        FakeUpstream::start_on(0)
    }

    /// A fake with this TAG (the last byte of its addresses).
    pub fn tagged(tag: u8) -> FakeUpstream {
        let f = FakeUpstream::start();
        f.set_tag(tag);
        f
    }

    /// A fake on `port` of 127.0.0.1 (0: a free one, the same for UDP and TCP).
    pub fn start_on(port: u16) -> FakeUpstream {
        let (udp, tcp) = bind_pair(port);
        let addr = udp.local_addr().unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let (tx, rx) = mpsc::channel::<Delayed>();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                default: Mode::Answer,
                per_name: HashMap::new(),
                ttl: 60,
                soa_ttl: 60,
                tag: 1,
                genuine_after: None,
                seen: Vec::new(),
            }),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            conn_threads: Mutex::new(Vec::new()),
            delay: Mutex::new(tx),
            other: Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap()),
        });
        let udp = Arc::new(udp);
        let mut threads = Vec::new();

        let s = shared.clone();
        threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65535];
            while !s.stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                let msg = buf[..n].to_vec();
                s.handle(&msg, Proto::Udp, from, None, || Out::Udp(udp.clone(), from));
            }
        }));

        let s = shared.clone();
        threads.push(std::thread::spawn(move || {
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

impl Shared {
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
                self.handle(&msg, Proto::Tcp, from, Some(conn), || Out::Tcp(writer.clone()));
            }
        }
    }

    /// Records the query and sends what its mode says.
    fn handle(&self, raw: &[u8], proto: Proto, from: SocketAddr, conn: Option<usize>, out: impl Fn() -> Out) {
        let Ok(req) = Message::from_octets(raw.to_vec()) else {
            return;
        };
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

// ------------------------------------------------------------------------------------
// The fake's own tests.

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::{query_bytes, raw_udp, read_frame, section, write_frame};

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
