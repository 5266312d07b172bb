//! DNS on the wire, just enough for the cluster bench: encode a query, read a reply's
//! rcode and answer section as comparable text, and ask a server over UDP.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

pub const A: u16 = 1;
pub const PTR: u16 = 12;
pub const SRV: u16 = 33;

pub fn type_name(qtype: u16) -> &'static str {
    match qtype {
        A => "A",
        PTR => "PTR",
        SRV => "SRV",
        _ => "?",
    }
}

/// A query with RD and an EDNS OPT of 1232 bytes (as `benches/load.rs` encodes it).
pub fn encode_query(name: &str, qtype: u16, id: u16) -> Vec<u8> {
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

/// A reply, reduced to what two servers must agree on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub id: u16,
    pub rcode: u8,
    /// `owner TTL TYPE rdata`, owner names in lower case, sorted (an RRset has no order).
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

/// A name at `at` (compression pointers followed), lower-cased, and the offset after it.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *msg.get(at)? as usize;
        if len & 0xc0 == 0xc0 {
            let target = ((len & 0x3f) << 8) | *msg.get(at + 1)? as usize;
            end.get_or_insert(at + 2);
            at = target;
            continue;
        }
        if len == 0 {
            if name.is_empty() {
                name.push('.');
            }
            return Some((name, end.unwrap_or(at + 1)));
        }
        let label = msg.get(at + 1..at + 1 + len)?;
        name.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        name.push('.');
        at += 1 + len;
    }
    None
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]))
}

pub fn parse_reply(msg: &[u8]) -> Option<Reply> {
    if msg.len() < 12 || msg[2] & 0x80 == 0 {
        return None;
    }
    let qd = u16_at(msg, 4)?;
    let an = u16_at(msg, 6)?;
    let mut at = 12;
    for _ in 0..qd {
        at = read_name(msg, at)?.1 + 4;
    }
    let mut answers = Vec::new();
    for _ in 0..an {
        let (owner, next) = read_name(msg, at)?;
        let rtype = u16_at(msg, next)?;
        let ttl = u32::from_be_bytes(msg.get(next + 4..next + 8)?.try_into().ok()?);
        let rdlen = u16_at(msg, next + 8)? as usize;
        let rdata_at = next + 10;
        let rdata = msg.get(rdata_at..rdata_at + rdlen)?;
        let text = match rtype {
            A if rdlen == 4 => format!("A {}", Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3])),
            SRV => format!(
                "SRV {} {} {} {}",
                u16_at(msg, rdata_at)?,
                u16_at(msg, rdata_at + 2)?,
                u16_at(msg, rdata_at + 4)?,
                read_name(msg, rdata_at + 6)?.0
            ),
            PTR | 5 => format!(
                "{} {}",
                if rtype == 5 { "CNAME" } else { "PTR" },
                read_name(msg, rdata_at)?.0
            ),
            other => format!("TYPE{other} {rdata:02x?}"),
        };
        answers.push(format!("{owner} {ttl} {text}"));
        at = rdata_at + rdlen;
    }
    answers.sort();
    Some(Reply {
        id: u16_at(msg, 0)?,
        rcode: msg[3] & 0x0f,
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

    /// Asks once; waits up to `timeout` for the reply. None on timeout, or when nothing
    /// listens on the port yet (then after a short pause, so a caller's loop does not
    /// spin on ICMP errors).
    pub fn ask(&mut self, name: &str, qtype: u16, timeout: Duration) -> Option<Reply> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let q = encode_query(name, qtype, id);
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
