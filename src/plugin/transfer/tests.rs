//! The transfer plugin's setup and decisions. Each expectation that mirrors CoreDNS
//! names the `plugin/transfer` test it comes from.

use std::net::SocketAddr;

use super::*;
use crate::chain::{Metadata, testing::with_query_over};
use crate::config::parse_str;
use crate::dns::wire::QNAME_OFFSET;
use crate::dns::{Name, Rdata, Record};

fn parse(corefile: &str) -> Result<Transfer, ConfigError> {
    let parsed = parse_str(corefile, "Corefile", std::path::Path::new("/"))?;
    let dirs: Vec<&Directive> = parsed.blocks[0]
        .directives
        .iter()
        .filter(|d| d.name.text == NAME)
        .collect();
    let zones = [Zone::new("example.org.").unwrap()];
    let ctx = SetupCtx {
        zones: &zones,
        config_dir: "/".into(),
        workers: 1,
        binds: None,
        process: &crate::process::ProcessState::new(),
    };
    let mut xfrs = Vec::new();
    for d in dirs {
        xfrs.push(parse_one(d, &ctx)?);
    }
    Ok(Transfer::new(xfrs))
}

fn err(corefile: &str) -> String {
    parse(corefile).err().expect("an error").to_string()
}

/// `setup_test.go` `TestParse`: zones from the arguments or the block, `to` hosts
/// with the default port, `*`, `source`; every error case of that table.
#[test]
fn setup_reads_zones_hosts_and_source() {
    let t = parse(
        "example.org {\n transfer example.net example.org {\n  to 1.2.3.4 5.6.7.8:1053 [1::2]:34 [fe80::1%eth0]:53\n  source 2001:db8::53\n }\n transfer example.com example.edu {\n  to * 1.2.3.4\n }\n}\n",
    )
    .unwrap();
    assert_eq!(t.xfrs.len(), 2);
    let zones: Vec<&str> = t.xfrs[0].zones.iter().map(|z| z.as_str()).collect();
    assert_eq!(zones, ["example.net.", "example.org."]);
    let host = |s: &str| To::Host(s.parse::<SocketAddr>().unwrap());
    assert_eq!(
        t.xfrs[0].to,
        [
            host("1.2.3.4:53"),
            host("5.6.7.8:1053"),
            host("[1::2]:34"),
            host("[fe80::1]:53")
        ]
    );
    assert_eq!(t.xfrs[0].source, Some("2001:db8::53".parse().unwrap()));
    assert_eq!(t.xfrs[1].to, [To::Any, host("1.2.3.4:53")]);
    assert_eq!(t.xfrs[1].source, None);
    // No zones: the block's.
    let t = parse("example.org {\n transfer {\n  to 1.2.3.4\n }\n}\n").unwrap();
    assert_eq!(t.xfrs[0].zones, [Zone::new("example.org.").unwrap()]);

    assert_eq!(
        err("example.org {\n transfer example.net {\n }\n}\n"),
        "Corefile:2 - transfer: 'to' is required"
    );
    assert_eq!(
        err("example.org {\n transfer\n}\n"),
        "Corefile:2 - transfer: 'to' is required"
    );
    assert_eq!(
        err("example.org {\n transfer {\n  invalid option\n }\n}\n"),
        "Corefile:3 - transfer: unknown property \"invalid\""
    );
    assert_eq!(
        err("example.org {\n transfer {\n  to 1.2.3.4\n  source example.org\n }\n}\n"),
        "Corefile:4 - transfer: invalid source address \"example.org\""
    );
    assert_eq!(
        err("example.org {\n transfer {\n  to 1.2.3.4\n  source 192.0.2.53\n  source 2001:db8::53\n }\n}\n"),
        "Corefile:5 - transfer: source already specified"
    );
    assert_eq!(
        err("example.org {\n transfer {\n  to example.com 1.2.3.4\n }\n}\n"),
        "Corefile:3 - transfer: must specify an IP address: `example.com'"
    );
    assert!(err("example.org {\n transfer {\n  to\n }\n}\n").contains("Wrong argument count"));
}

/// A zone of SOA, one A record, SOA, for `zone` at `serial`.
struct Tiny {
    zone: &'static [u8],
    serial: u32,
    /// How many TXT records between the SOAs.
    records: usize,
    /// The length of each TXT record's text.
    txt: usize,
}

struct TinyStream {
    only_soa: bool,
    next: usize,
    records: usize,
    serial: u32,
    txt: Vec<u8>,
}

impl Transferer for Tiny {
    fn transfer(&self, req: &Request<'_>, serial: Option<u32>) -> Option<Box<dyn ZoneStream>> {
        (req.qname.wire() == self.zone).then(|| {
            Box::new(TinyStream {
                only_soa: serial == Some(self.serial),
                next: 0,
                records: self.records,
                serial: self.serial,
                txt: vec![b'x'; self.txt],
            }) as Box<dyn ZoneStream>
        })
    }
}

impl ZoneStream for TinyStream {
    fn fill(&mut self, msg: &mut Response) -> bool {
        let soa = Record {
            owner: Name::under_question(&[], QNAME_OFFSET),
            rtype: rtype::SOA,
            ttl: 100,
            data: Rdata::Soa {
                mname: Name::under_question(b"\x02ns", QNAME_OFFSET),
                rname: Name::under_question(b"\x0ahostmaster", QNAME_OFFSET),
                serial: self.serial,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: 100,
            },
        };
        let total = if self.only_soa { 1 } else { self.records + 2 };
        while self.next < total {
            let rr = if self.next == 0 || self.next == total - 1 {
                soa
            } else {
                Record {
                    owner: Name::under_question(b"\x04host", QNAME_OFFSET),
                    rtype: rtype::TXT,
                    ttl: 100,
                    data: Rdata::Txt(&self.txt),
                }
            };
            if msg.push_or_full(Section::Answer, &rr).is_err() {
                return false;
            }
            self.next += 1;
        }
        true
    }
}

fn transfer(to: &str, zones: &[&str], sources: Vec<Arc<dyn Transferer>>) -> Transfer {
    let to = match to {
        "*" => To::Any,
        a => To::Host(a.parse().unwrap()),
    };
    Transfer::new(vec![Xfr {
        zones: zones.iter().map(|z| Zone::new(z).unwrap()).collect(),
        to: vec![to],
        source: None,
    }])
    .with_sources(sources)
}

fn ask(t: &Transfer, raw: &[u8], transport: Transport) -> (Step, Rcode, u16, bool) {
    let client: SocketAddr = "127.0.0.1:5300".parse().unwrap();
    with_query_over(raw, transport, client, client, Metadata::NONE, |q| {
        let step = t.serve(q);
        (
            step,
            q.resp.rcode(),
            q.resp.count(Section::Answer),
            q.worker.stream.is_some(),
        )
    })
}

fn axfr(name: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    QueryBuilder::new(name, rtype::AXFR).rd(false).write(&mut m);
    m
}

fn ixfr(name: &[u8], serial: Option<u32>) -> Vec<u8> {
    let mut m = Vec::new();
    QueryBuilder::new(name, rtype::IXFR).rd(false).write(&mut m);
    if let Some(serial) = serial {
        m[9] = 1;
        m.extend_from_slice(&[0xc0, 0x0c, 0, 6, 0, 1, 0, 0, 0, 0, 0, 22, 0, 0]);
        m.extend_from_slice(&serial.to_be_bytes());
        m.extend_from_slice(&[0; 16]);
    }
    m
}

const ORG: &[u8] = b"\x07example\x03org\x00";

fn tiny(records: usize) -> Arc<dyn Transferer> {
    Arc::new(Tiny {
        zone: ORG,
        serial: 12345,
        records,
        txt: 240,
    })
}

/// `transfer_test.go`: a query that is no transfer, or a name of no transfer zone, goes
/// on (`TestTransferNotAXFRorIXFR`, `TestTransferNonZone`); over UDP, REFUSED
/// (`transfer.go`); a client not in `to`, REFUSED (`TestTransferNotAllowed`); an
/// AXFR is SOA, records, SOA (`TestTransferAXFRExampleOrg`); an IXFR at the current
/// serial the SOA alone (`TestTransferIXFRCurrent`), at an older one the zone
/// (`TestTransferIXFRFallback`); an IXFR without its SOA, SERVFAIL.
#[test]
fn serve_follows_coredns_order_of_checks() {
    let t = transfer("*", &["example.org."], vec![tiny(2)]);
    let mut a = Vec::new();
    QueryBuilder::new(ORG, rtype::A).write(&mut a);
    assert!(matches!(ask(&t, &a, Transport::Tcp).0, Step::Next));
    assert!(matches!(
        ask(&t, &axfr(b"\x07example\x04test\x00"), Transport::Tcp).0,
        Step::Next
    ));
    // In a transfer zone but no source has exactly that zone.
    assert!(matches!(
        ask(&t, &axfr(b"\x03sub\x07example\x03org\x00"), Transport::Tcp).0,
        Step::Next
    ));
    // UDP: refused whatever the name.
    for name in [ORG, b"\x07example\x04test\x00"] {
        assert!(matches!(
            ask(&t, &axfr(name), Transport::Udp).0,
            Step::Fail(Rcode::REFUSED, None)
        ));
    }
    let (step, rcode, answers, more) = ask(&t, &axfr(ORG), Transport::Tcp);
    assert!(matches!(step, Step::Answered));
    assert_eq!((rcode, answers, more), (Rcode::NOERROR, 4, false));
    // Mixed case: the same zone (`TestAXFRZoneMatchCaseInsensitive`).
    let (_, _, answers, _) = ask(&t, &axfr(b"\x07ExAmPlE\x03OrG\x00"), Transport::Tcp);
    assert_eq!(answers, 4);
    assert_eq!(ask(&t, &ixfr(ORG, Some(12345)), Transport::Tcp).2, 1);
    assert_eq!(ask(&t, &ixfr(ORG, Some(12344)), Transport::Tcp).2, 4);
    assert!(matches!(
        ask(&t, &ixfr(ORG, None), Transport::Tcp).0,
        Step::Fail(Rcode::SERVFAIL, None)
    ));

    let strangers = transfer("192.0.2.1:53", &["example.org."], vec![tiny(2)]);
    assert!(matches!(
        ask(&strangers, &axfr(ORG), Transport::Tcp).0,
        Step::Fail(Rcode::REFUSED, None)
    ));
    // The port of a `to` host is where NOTIFY goes, not a condition on the client.
    let friend = transfer("127.0.0.1:9", &["example.org."], vec![tiny(2)]);
    assert!(matches!(ask(&friend, &axfr(ORG), Transport::Tcp).0, Step::Answered));
}

/// `TestLongestMatchMostSpecificZone`: the most specific directive decides, so a
/// refusal there is not overruled by a wider one that allows everyone.
#[test]
fn the_longest_zone_decides() {
    let t = Transfer::new(vec![
        Xfr {
            zones: vec![Zone::new("org.").unwrap()],
            to: vec![To::Any],
            source: None,
        },
        Xfr {
            zones: vec![Zone::new("example.org.").unwrap()],
            to: vec![To::Host("192.0.2.1:53".parse().unwrap())],
            source: None,
        },
    ])
    .with_sources(vec![tiny(2)]);
    assert!(matches!(
        ask(&t, &axfr(ORG), Transport::Tcp).0,
        Step::Fail(Rcode::REFUSED, None)
    ));
    assert!(t.longest_match(&NameKey::from_text("other.net").unwrap()).is_none());
}

/// Every message of a transfer, the first one (from `serve`) included.
fn all_messages(t: &Transfer) -> Vec<Vec<u8>> {
    let client: SocketAddr = "127.0.0.1:5300".parse().unwrap();
    let raw = axfr(ORG);
    let (first, mut stream) = with_query_over(&raw, Transport::Tcp, client, client, Metadata::NONE, |q| {
        assert!(matches!(t.serve(q), Step::Answered));
        (q.resp.finish().to_vec(), q.worker.stream.take())
    });
    let mut out = vec![first];
    if let Some(stream) = stream.as_mut() {
        while let Some(msg) = stream.next_message() {
            out.push(msg.to_vec());
            assert!(out.len() < 10_000);
        }
    }
    out
}

/// A record larger than the message size the pacing chose (here larger than
/// MESSAGE_BYTES) goes in a message of twice that size (up to 64 KiB) instead of
/// failing the transfer, and no more records than that size holds go with it.
#[test]
fn a_record_larger_than_the_message_size_still_goes() {
    let big: Arc<dyn Transferer> = Arc::new(Tiny {
        zone: ORG,
        serial: 1,
        records: 3,
        txt: MESSAGE_BYTES + 3000,
    });
    let t = transfer("*", &["example.org."], vec![big]);
    let msgs = all_messages(&t);
    let counts: Vec<u16> = msgs
        .iter()
        .map(|m| crate::dns::Header::of(m).unwrap().ancount())
        .collect();
    // The opening SOA (the first big record does not fit beside it in the chosen size),
    // then each big record in a message of 32 KiB where two of them do not fit, the
    // closing SOA beside the last: every record once, no message empty.
    assert_eq!(
        counts,
        [1, 1, 1, 2],
        "{:?}",
        msgs.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(msgs.iter().all(|m| m.len() <= 2 * MESSAGE_BYTES));
    assert!(msgs.iter().any(|m| m.len() > MESSAGE_BYTES && m.len() <= 65535));
    assert_eq!(t.live.load(Ordering::Relaxed), 0);
}

/// The pacing: a message's size follows how long the last one took (MESSAGE_TIME),
/// changing at most twofold a message, within [MIN_MESSAGE_BYTES, MESSAGE_BYTES].
#[test]
fn message_size_follows_the_time_a_message_takes() {
    let us = Duration::from_micros;
    let (min, max) = (MIN_MESSAGE_BYTES, MESSAGE_BYTES);
    assert!(min * 2 <= max);
    // min bytes in 10 us: twice that fits in MESSAGE_TIME (20 us).
    assert_eq!(next_limit(min, min, us(10)), 2 * min);
    // Fast: at most double, never past MESSAGE_BYTES.
    assert_eq!(next_limit(min, min, us(1)), 2 * min);
    assert_eq!(next_limit(max, min, us(1)), max);
    assert_eq!(next_limit(min, min, Duration::ZERO), 2 * min);
    // 2 x min in 80 us: a quarter would fit, but one slow message only halves it.
    assert_eq!(next_limit(2 * min, 2 * min, us(80)), min);
    // Never below MIN_MESSAGE_BYTES, however slow.
    assert_eq!(next_limit(min, min, Duration::from_secs(1)), min);
    // On pace: unchanged.
    assert_eq!(next_limit(min + 100, min + 100, us(20)), min + 100);
}

/// `TestTransferLargeRecordBatching`: 300 records of ~250 bytes do not fit one message;
/// the first goes in the reply, the rest through the stream, none over 65,535 bytes,
/// and every record arrives once, SOA last.
#[test]
fn a_zone_larger_than_a_message_continues_in_the_stream() {
    let t = transfer("*", &["example.org."], vec![tiny(300)]);
    let client: SocketAddr = "127.0.0.1:5300".parse().unwrap();
    let raw = axfr(ORG);
    let (first, mut stream) = with_query_over(&raw, Transport::Tcp, client, client, Metadata::NONE, |q| {
        assert!(matches!(t.serve(q), Step::Answered));
        q.resp.finish();
        (
            q.resp.count(Section::Answer) as usize,
            q.worker.stream.take().expect("more"),
        )
    });
    assert!(first > 1 && first < 302);
    assert_eq!(t.live.load(Ordering::Relaxed), 1, "counted while it runs");
    let mut total = first;
    let mut messages = 1;
    while let Some(msg) = stream.next_message() {
        assert!(msg.len() <= MESSAGE_BYTES);
        let h = crate::dns::Header::of(msg).unwrap();
        assert!(h.qr() && h.aa());
        assert!(!h.tc(), "a message of a transfer is never truncated");
        total += h.ancount() as usize;
        messages += 1;
        assert!(messages < 100);
    }
    assert_eq!(total, 302);
    assert!(messages >= 2);
    drop(stream);
    assert_eq!(t.live.load(Ordering::Relaxed), 0);
}

/// [`MAX_TRANSFERS`] at once; one more is SERVFAIL until one ends.
#[test]
fn transfers_at_once_are_bounded() {
    let t = transfer("*", &["example.org."], vec![tiny(400)]);
    let client: SocketAddr = "127.0.0.1:5300".parse().unwrap();
    let raw = axfr(ORG);
    let mut held = Vec::new();
    for _ in 0..MAX_TRANSFERS {
        held.push(with_query_over(
            &raw,
            Transport::Tcp,
            client,
            client,
            Metadata::NONE,
            |q| {
                assert!(matches!(t.serve(q), Step::Answered));
                q.worker.stream.take().unwrap()
            },
        ));
    }
    assert!(matches!(
        ask(&t, &raw, Transport::Tcp).0,
        Step::Fail(Rcode::SERVFAIL, Some(_))
    ));
    held.pop();
    assert!(matches!(ask(&t, &raw, Transport::Tcp).0, Step::Answered));
}

/// `notify_test.go` `TestNotifyMultipleFailures`: a NOTIFY to every host, failures
/// named with their rcode; `*` is not notified; a host that answers NOERROR is done.
#[test]
fn notify_reaches_every_host_and_reports_rcodes() {
    let serve = |rcode: u8| {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 512];
            // Three attempts at most.
            for _ in 0..3 {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { break };
                let m = buf[..n].to_vec();
                let mut reply = m.clone();
                reply[2] |= 0x80;
                reply[3] = (reply[3] & 0xf0) | rcode;
                sock.send_to(&reply, from).unwrap();
                seen.push(m);
                if rcode == 0 {
                    break;
                }
            }
            seen
        });
        (addr, h)
    };
    let (fail_addr, fail) = serve(2);
    let (refuse_addr, refuse) = serve(5);
    let (ok_addr, ok) = serve(0);
    let t = Transfer::new(vec![Xfr {
        zones: vec![Zone::new("example.com.").unwrap()],
        to: vec![To::Any, To::Host(fail_addr), To::Host(refuse_addr), To::Host(ok_addr)],
        source: None,
    }]);
    let failures = t.notify(&Zone::new("example.com.").unwrap());
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures[0].contains(&fail_addr.to_string()) && failures[0].contains("SERVFAIL"));
    assert!(failures[1].contains(&refuse_addr.to_string()) && failures[1].contains("REFUSED"));
    assert_eq!(fail.join().unwrap().len(), 3);
    assert_eq!(refuse.join().unwrap().len(), 3);
    let seen = ok.join().unwrap();
    assert_eq!(seen.len(), 1);
    // RFC 1996 3.7: opcode NOTIFY, AA, the zone's SOA as the question.
    let h = crate::dns::Header::of(&seen[0]).unwrap();
    assert_eq!(h.opcode(), crate::dns::opcode::NOTIFY);
    assert!(h.aa() && !h.rd());
    assert_eq!(&seen[0][QNAME_OFFSET..QNAME_OFFSET + 13], b"\x07example\x03com\x00");
    assert_eq!(&seen[0][QNAME_OFFSET + 13..QNAME_OFFSET + 15], &[0, 6]);
    // A zone no directive has: nothing sent.
    assert!(t.notify(&Zone::new("other.net.").unwrap()).is_empty());
}
