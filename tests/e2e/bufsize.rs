//! `bufsize` end to end: a query's larger EDNS size is lowered for the reply the server
//! writes and for the query `forward` sends upstream; a smaller size, a query without
//! EDNS and TCP are left as they are.

use domain::base::Message;
use domain::base::iana::Rtype;

use testkit::prelude::*;

/// The records of a big answer: 100 A records for `big.test.` (about 1,650 bytes).
fn big_hosts() -> String {
    (1..=100)
        .map(|i| format!("        10.0.{}.{} big.test\n", i / 256, i % 256))
        .collect()
}

/// `big.test` answered by hosts, everything else forwarded to `up`, both blocks capped
/// at 1100 bytes (or not at all, when `bufsize` is empty).
fn start(up: &FakeUpstream, bufsize: &str) -> Server {
    let corefile = format!(
        "big.test:{{port}} {{\n    bind 127.0.0.1\n    {bufsize}\n    hosts {{\n{}    }}\n}}\n\
         .:{{port}} {{\n    bind 127.0.0.1\n    {bufsize}\n    forward . {}\n}}\n",
        big_hosts(),
        up.spec()
    );
    Server::start(&corefile)
}

fn ask(s: &Server, name: &str, edns: Option<u16>, tcp: bool) -> (Message<Vec<u8>>, usize) {
    let q = query_bytes(name, Rtype::A, edns, 0x7a7a);
    if tcp {
        let m = tcp_exchange(s.addr(), &q);
        let n = m.as_slice().len();
        (m, n)
    } else {
        let raw = raw_udp(s.addr(), &q, std::time::Duration::from_secs(3)).expect("a UDP reply");
        let n = raw.len();
        (Message::from_octets(raw).unwrap(), n)
    }
}

/// README "Description": a larger size is lowered (CoreDNS's TestBufsize "Limit response
/// buffer size"), a smaller one kept ("Do not increase response buffer size"), no OPT
/// record added to a query without one ("Buffer size should not be set"); forward sends
/// the query as the chain sees it.
#[test]
fn the_upstream_gets_the_lowered_size() {
    let up = FakeUpstream::start();
    let s = start(&up, "bufsize 1100");
    for (i, (asked, sent)) in [(Some(4096), Some(1100)), (Some(1000), Some(1000)), (None, None)]
        .into_iter()
        .enumerate()
    {
        for tcp in [false, true] {
            let name = format!("q{i}-{tcp}.example.org");
            let (m, _) = ask(&s, &name, asked, tcp);
            assert_eq!(section(&m, "answer"), [format!("{name}. 60 IN A 192.0.2.1")]);
            let seen: Vec<_> = up.seen().into_iter().filter(|q| q.name == format!("{name}.")).collect();
            assert_eq!(seen.len(), 1, "{name}");
            assert_eq!(seen[0].edns, sent, "{name}");
        }
    }
    // The upstream keeps its reply under the lowered size: a 100-record answer comes
    // back truncated over UDP and is relayed as it came (TC, nothing in it), though the
    // client asked for 4096 bytes; over TCP it is whole.
    up.set_mode_for("many.example.org", Mode::BigAnswer(100));
    let (udp, _) = ask(&s, "many.example.org", Some(4096), false);
    assert!(udp.header().tc());
    assert_eq!(counts(&udp).1, 0);
    let (tcp, _) = ask(&s, "many.example.org", Some(4096), true);
    assert!(!tcp.header().tc());
    assert_eq!(section(&tcp, "answer").len(), 100);
}

/// The server's own reply stops at the lowered size (TC set, the records that fit
/// kept in order); without bufsize the same query gets the whole answer over UDP.
#[test]
fn replies_fit_the_lowered_size() {
    let up = FakeUpstream::start();
    let s = start(&up, "bufsize 1100");
    let (tcp, _) = ask(&s, "big.test", Some(4096), true);
    let all = section(&tcp, "answer");
    assert_eq!(all.len(), 100);
    assert!(!tcp.header().tc());
    let (udp, len) = ask(&s, "big.test", Some(4096), false);
    assert!(udp.header().tc());
    assert!(len <= 1100, "{len}");
    let kept = section(&udp, "answer");
    assert!(kept.len() > 50 && kept.len() < 100, "{}", kept.len());
    assert_eq!(kept[..], all[..kept.len()]);
    // A client asking for less than the cap is held to its own size.
    let (small, len) = ask(&s, "big.test", Some(700), false);
    assert!(small.header().tc() && len <= 700, "{len}");
    drop(s);

    let plain = start(&up, "");
    let (udp, len) = ask(&plain, "big.test", Some(4096), false);
    assert!(!udp.header().tc() && len > 1100, "{len}");
    assert_eq!(section(&udp, "answer"), all);
}
