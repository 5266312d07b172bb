//! DNS on the wire for tests and benches: queries (a fast encoder for floods and
//! benches, and one built with `domain`, an implementation independent from the
//! server's own wire code), header views, TCP framing, one-shot exchanges, and replies
//! read with `domain` into text that tests compare.

use std::fmt::Display;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use domain::base::iana::{Class, Rcode, Rtype};
use domain::base::{Message, MessageBuilder, Name};
use domain::rdata::AllRecordData;

pub const A: u16 = 1;
pub const CNAME: u16 = 5;
pub const PTR: u16 = 12;
pub const AAAA: u16 = 28;
pub const SRV: u16 = 33;

/// The mnemonic of the types benches ask.
pub fn type_name(qtype: u16) -> &'static str {
    match qtype {
        A => "A",
        PTR => "PTR",
        SRV => "SRV",
        AAAA => "AAAA",
        _ => "?",
    }
}

// ------------------------------------------------------------------------------------
// Queries

/// A query with RD set and one question (`name` in dotted form, class IN), with an EDNS
/// OPT record of that UDP size if `edns` is given. Written by hand, so that a flood
/// generator can make one per query even in a debug build.
pub fn query(name: &str, qtype: u16, id: u16, edns: Option<u16>) -> Vec<u8> {
    let mut m = Vec::with_capacity(name.len() + 30);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    let name = name.trim_end_matches('.');
    if !name.is_empty() {
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    if let Some(size) = edns {
        let [hi, lo] = size.to_be_bytes();
        m.extend_from_slice(&[0, 0, 41, hi, lo, 0, 0, 0, 0, 0, 0]);
    }
    m
}

/// A query message built with `domain`: one question, RD set, optional EDNS with that
/// UDP size (the name is parsed, escapes included, and must be valid).
pub fn query_bytes(name: &str, qtype: Rtype, edns: Option<u16>, id: u16) -> Vec<u8> {
    query_with(name, qtype, id, edns, false)
}

/// [`query_bytes`] with the DO bit of EDNS set as given (EDNS is added when `dnssec_ok`).
pub fn query_with(name: &str, qtype: Rtype, id: u16, edns: Option<u16>, dnssec_ok: bool) -> Vec<u8> {
    query_flags(name, qtype, id, edns, dnssec_ok, false)
}

/// [`query_with`] with the CD (checking disabled) bit as given.
pub fn query_flags(name: &str, qtype: Rtype, id: u16, edns: Option<u16>, dnssec_ok: bool, cd: bool) -> Vec<u8> {
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_id(id);
    b.header_mut().set_rd(true);
    b.header_mut().set_cd(cd);
    let mut q = b.question();
    let n: Name<Vec<u8>> = name.parse().expect("valid name");
    q.push((&n, qtype, Class::IN)).unwrap();
    if edns.is_none() && !dnssec_ok {
        return q.finish();
    }
    let mut a = q.additional();
    a.opt(|o| {
        o.set_udp_payload_size(edns.unwrap_or(1232));
        o.set_dnssec_ok(dnssec_ok);
        Ok(())
    })
    .unwrap();
    a.finish()
}

// ------------------------------------------------------------------------------------
// Header views

/// The fixed header of a message, read without parsing the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub qr: bool,
    pub aa: bool,
    pub tc: bool,
    pub rd: bool,
    pub rcode: u8,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    /// The header of `msg`; None if it is shorter than 12 bytes.
    pub fn of(msg: &[u8]) -> Option<Header> {
        let h: &[u8; 12] = msg.get(..12)?.try_into().ok()?;
        let u = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        Some(Header {
            id: u(0),
            qr: h[2] & 0x80 != 0,
            aa: h[2] & 0x04 != 0,
            tc: h[2] & 0x02 != 0,
            rd: h[2] & 0x01 != 0,
            rcode: h[3] & 0x0f,
            qdcount: u(4),
            ancount: u(6),
            nscount: u(8),
            arcount: u(10),
        })
    }

    /// The header of a response (QR set); None for anything else.
    pub fn of_reply(msg: &[u8]) -> Option<Header> {
        Header::of(msg).filter(|h| h.qr)
    }
}

/// (ID, rcode, answer count) of a reply; None for anything but a response.
pub fn reply_header(b: &[u8]) -> Option<(u16, u8, u16)> {
    Header::of_reply(b).map(|h| (h.id, h.rcode, h.ancount))
}

// ------------------------------------------------------------------------------------
// TCP framing and exchanges

/// `msg` with its two-byte length prefix (RFC 1035 4.2.2).
pub fn framed(msg: &[u8]) -> Vec<u8> {
    let mut f = (msg.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(msg);
    f
}

pub fn write_frame(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(&framed(msg)).unwrap();
}

/// The next framed message on the stream; None at its end or on a timeout.
pub fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// Sends `q` over UDP from a new socket; the raw reply from `to`, or None after `wait`.
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

/// A UDP exchange that must get a parsable reply within 3 s.
pub fn udp_exchange(to: SocketAddr, q: &[u8]) -> Message<Vec<u8>> {
    let reply = raw_udp(to, q, Duration::from_secs(3)).unwrap_or_else(|| panic!("no UDP reply from {to}"));
    Message::from_octets(reply).expect("reply parses")
}

/// A UDP exchange within `wait`: the parsed reply, or None.
pub fn udp_exchange_within(to: SocketAddr, q: &[u8], wait: Duration) -> Option<Message<Vec<u8>>> {
    raw_udp(to, q, wait).and_then(|r| Message::from_octets(r).ok())
}

/// A TCP exchange on a new connection that must get a parsable reply within 3 s.
pub fn tcp_exchange(to: SocketAddr, q: &[u8]) -> Message<Vec<u8>> {
    let mut s = TcpStream::connect(to).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write_frame(&mut s, q);
    let reply = read_frame(&mut s).expect("tcp reply");
    Message::from_octets(reply).expect("reply parses")
}

/// One connection to a server over UDP (a connected socket) or TCP, one query at a time,
/// its reply read into a buffer it keeps.
pub enum Client {
    Udp(UdpSocket, Vec<u8>, Duration),
    Tcp(TcpStream, Vec<u8>),
}

impl Client {
    /// A client of `to`; each reply must come within `wait`.
    pub fn new(to: SocketAddr, tcp: bool, wait: Duration) -> Client {
        if tcp {
            let s = TcpStream::connect(to).expect("connect over TCP");
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(wait)).unwrap();
            Client::Tcp(s, vec![0; 65535])
        } else {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect(to).unwrap();
            s.set_read_timeout(Some(wait)).unwrap();
            Client::Udp(s, vec![0; 65535], wait)
        }
    }

    /// Sends `q`; its reply (over UDP the first with the query's ID), or None.
    pub fn ask(&mut self, q: &[u8]) -> Option<&[u8]> {
        match self {
            Client::Udp(s, buf, wait) => {
                s.send(q).ok()?;
                let end = Instant::now() + *wait;
                while Instant::now() < end {
                    let n = s.recv(buf).ok()?;
                    if n >= 2 && buf[..2] == q[..2] {
                        return Some(&buf[..n]);
                    }
                }
                None
            }
            Client::Tcp(s, buf) => {
                s.write_all(&framed(q)).ok()?;
                let mut len = [0u8; 2];
                s.read_exact(&mut len).ok()?;
                let n = u16::from_be_bytes(len) as usize;
                s.read_exact(&mut buf[..n]).ok()?;
                Some(&buf[..n])
            }
        }
    }
}

// ------------------------------------------------------------------------------------
// Replies as text

/// The records of a section in presentation form: `owner. TTL IN TYPE RDATA` (OPT left
/// out). `which` is `answer`, `authority` or `additional`.
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

/// The record counts of the sections, as the header says.
pub fn counts(msg: &Message<Vec<u8>>) -> (u16, u16, u16, u16) {
    let c = msg.header_counts();
    (c.qdcount(), c.ancount(), c.nscount(), c.arcount())
}

/// The data of the A and AAAA records of the answer section, sorted.
pub fn addresses(msg: &Message<Vec<u8>>) -> Vec<String> {
    let mut a: Vec<String> = section(msg, "answer")
        .iter()
        .filter(|r| r.contains(" IN A ") || r.contains(" IN AAAA "))
        .filter_map(|r| r.split_whitespace().last().map(str::to_string))
        .collect();
    a.sort();
    a
}

/// A name as text, lower-cased, with the final dot (`.` for the root).
fn fqdn(name: impl Display) -> String {
    let s = name.to_string().to_ascii_lowercase();
    if s.is_empty() || s == "." {
        ".".into()
    } else if s.ends_with('.') {
        s
    } else {
        format!("{s}.")
    }
}

/// A reply, reduced to what two servers must agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub id: u16,
    pub rcode: u8,
    /// `owner TTL TYPE rdata`, names in lower case with their final dot, sorted (an
    /// RRset has no order).
    pub answers: Vec<String>,
}

impl Reply {
    /// The addresses of the A records in the answer, sorted.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self
            .answers
            .iter()
            .filter_map(|a| {
                let mut f = a.split(' ');
                match (f.next(), f.next(), f.next(), f.next()) {
                    (Some(_), Some(_), Some("A"), Some(ip)) => ip.parse().ok(),
                    _ => None,
                }
            })
            .collect();
        v.sort();
        v
    }

    pub fn rcode_name(&self) -> String {
        match self.rcode {
            0 => "NOERROR".into(),
            2 => "SERVFAIL".into(),
            3 => "NXDOMAIN".into(),
            5 => "REFUSED".into(),
            n => format!("RCODE{n}"),
        }
    }
}

/// A reply read with `domain`; None for anything but a well-formed response.
pub fn parse_reply(msg: &[u8]) -> Option<Reply> {
    let h = Header::of_reply(msg)?;
    let m = Message::from_octets(msg).ok()?;
    let mut answers = Vec::new();
    for r in m.answer().ok()?.limit_to::<AllRecordData<_, _>>() {
        let r = r.ok()?;
        let text = match r.data() {
            AllRecordData::A(a) => format!("A {}", a.addr()),
            AllRecordData::Srv(s) => format!("SRV {} {} {} {}", s.priority(), s.weight(), s.port(), fqdn(s.target())),
            AllRecordData::Ptr(p) => format!("PTR {}", fqdn(p.ptrdname())),
            AllRecordData::Cname(c) => format!("CNAME {}", fqdn(c.cname())),
            other => format!("{} {other}", r.rtype()),
        };
        answers.push(format!("{} {} {text}", fqdn(r.owner()), r.ttl().as_secs()));
    }
    answers.sort();
    Some(Reply {
        id: h.id,
        rcode: h.rcode,
        answers,
    })
}

/// A UDP client for one server: one query at a time, replies matched by ID.
pub struct Probe {
    sock: UdpSocket,
    next_id: u16,
    buf: Vec<u8>,
}

impl Probe {
    pub fn new(port: u16) -> Probe {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind probe socket");
        sock.connect(SocketAddr::from(([127, 0, 0, 1], port)))
            .expect("connect probe socket");
        Probe {
            sock,
            next_id: 1,
            buf: vec![0; 4096],
        }
    }

    /// Asks once (EDNS 1232); waits up to `timeout` for the reply. None on timeout, or
    /// when nothing listens on the port yet (then after a short pause, so a caller's
    /// loop does not spin on ICMP errors).
    pub fn ask(&mut self, name: &str, qtype: u16, timeout: Duration) -> Option<Reply> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let q = query(name, qtype, id, Some(1232));
        if self.sock.send(&q).is_err() {
            std::thread::sleep(Duration::from_millis(1));
            return None;
        }
        let end = Instant::now() + timeout;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_micros(50))))
                .ok()?;
            match self.sock.recv(&mut self.buf) {
                Ok(n) => {
                    if let Some(r) = parse_reply(&self.buf[..n]) {
                        if r.id == id {
                            return Some(r);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::thread::sleep(Duration::from_millis(1).min(left));
                    return None;
                }
                Err(_) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hand_encoder_writes_what_domain_writes() {
        for (name, qtype, edns) in [
            ("a.example.org", Rtype::A, Some(1232)),
            ("a.example.org.", Rtype::SRV, None),
            (".", Rtype::SOA, Some(4096)),
            ("Mixed.Case.example", Rtype::AAAA, Some(512)),
        ] {
            assert_eq!(
                query(name, qtype.to_int(), 0x4242, edns),
                query_bytes(name, qtype, edns, 0x4242),
                "{name} {qtype} {edns:?}"
            );
        }
    }

    #[test]
    fn replies_read_as_text_with_final_dots_and_lower_case() {
        use domain::rdata::{A as ARecord, Srv};
        let q = query_bytes("Web.Example.org", Rtype::SRV, None, 7);
        let req = Message::from_octets(q).unwrap();
        let mut b = MessageBuilder::new_vec().start_answer(&req, Rcode::NOERROR).unwrap();
        let owner: Name<Vec<u8>> = "Web.Example.org".parse().unwrap();
        let target: Name<Vec<u8>> = "Host.Example.org".parse().unwrap();
        b.push((&owner, 5, Srv::new(0, 100, 80, target))).unwrap();
        b.push((&owner, 5, ARecord::from_octets(10, 0, 0, 2))).unwrap();
        b.push((&owner, 5, ARecord::from_octets(10, 0, 0, 1))).unwrap();
        let r = parse_reply(&b.finish()).unwrap();
        assert_eq!(r.id, 7);
        assert_eq!(r.rcode, 0);
        assert_eq!(
            r.answers,
            [
                "web.example.org. 5 A 10.0.0.1",
                "web.example.org. 5 A 10.0.0.2",
                "web.example.org. 5 SRV 0 100 80 host.example.org."
            ]
        );
        assert_eq!(r.addresses(), [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]);
        assert!(
            parse_reply(&query("x.example", A, 1, None)).is_none(),
            "a query is no reply"
        );
    }
}
