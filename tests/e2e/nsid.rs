//! `nsid` end to end: the server's identifier in the OPT record of the replies to
//! queries that ask for it (RFC 5001), forwarded and cached answers alike, over UDP and
//! TCP; nothing for queries that do not ask.

use domain::base::iana::{Rcode, Rtype};
use domain::base::{Message, MessageBuilder, Name};

use testkit::prelude::*;

/// A query with RD and EDNS 1232, with an empty NSID option when `nsid`.
pub fn nsid_query(name: &str, qtype: Rtype, nsid: bool) -> Vec<u8> {
    let mut b = MessageBuilder::new_vec();
    b.header_mut().set_id(0x5e5e);
    b.header_mut().set_rd(true);
    let mut q = b.question();
    let n: Name<Vec<u8>> = name.parse().unwrap();
    q.push((&n, qtype)).unwrap();
    let mut a = q.additional();
    a.opt(|o| {
        o.set_udp_payload_size(1232);
        if nsid {
            o.client_nsid()?;
        }
        Ok(())
    })
    .unwrap();
    a.finish()
}

/// The reply's NSID, as text (None: the OPT record has no NSID option).
pub fn nsid_of(m: &Message<Vec<u8>>) -> Option<String> {
    let opt = m.opt().expect("an OPT record");
    opt.opt()
        .nsid()
        .map(|n| String::from_utf8(n.as_slice().to_vec()).unwrap())
}

/// The same question over UDP and TCP.
pub fn both(s: &Server, name: &str, qtype: Rtype, nsid: bool) -> [Message<Vec<u8>>; 2] {
    let q = nsid_query(name, qtype, nsid);
    [udp_exchange(s.addr(), &q), tcp_exchange(s.addr(), &q)]
}

/// README "Examples" (`nsid Use The Force`, dig +nsid shows it); nsid_test.go: the
/// option only when asked. The cache answers the repeats, and nsid still adds it,
/// whether the stored reply was first asked for with NSID or without.
#[test]
fn the_identifier_comes_with_forwarded_and_cached_replies() {
    let up = FakeUpstream::start();
    let s = Launch::new(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    nsid Use The Force\n    cache 30\n    forward . {}\n}}\n",
        up.spec()
    ))
    .start();
    for (name, first_asks) in [("a.example.org", true), ("b.example.org", false)] {
        // The first answer comes from the upstream, the later ones from the cache.
        let [first, _] = both(&s, name, Rtype::A, first_asks);
        assert_eq!(
            nsid_of(&first).as_deref(),
            if first_asks { Some("Use The Force") } else { None }
        );
        for m in both(&s, name, Rtype::A, true) {
            assert_eq!(rcode(&m), Rcode::NOERROR);
            assert_eq!(section(&m, "answer"), [format!("{name}. 30 IN A 192.0.2.1")]);
            assert_eq!(nsid_of(&m).as_deref(), Some("Use The Force"), "{name}");
            assert_eq!(section(&m, "additional"), Vec::<String>::new());
        }
        for m in both(&s, name, Rtype::A, false) {
            assert_eq!(nsid_of(&m), None);
        }
        assert_eq!(up.count_name(name), 1, "{name}: the repeats were cache hits");
    }
    // The query goes upstream as the client sent it, its NSID option included.
    let seen: Vec<_> = up.seen().into_iter().filter(|q| q.name == "a.example.org.").collect();
    assert_eq!(seen[0].options, [3]);
}

/// Without DATA the identifier is the host's name (README "Syntax"); a failure the
/// server writes (here: no upstream answers) carries none, as in CoreDNS.
#[test]
fn the_host_name_by_default_and_none_on_server_failures() {
    let up = FakeUpstream::start();
    up.set_mode_for("broken.example.org", Mode::ServFail);
    let s = Launch::new(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    nsid\n    forward . {}\n}}\n",
        up.spec()
    ))
    .start();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for m in both(&s, "ok.example.org", Rtype::A, true) {
        assert_eq!(nsid_of(&m).as_deref(), Some(host.trim()));
    }
    // An upstream's SERVFAIL is a reply forward writes: it gets the identifier.
    for m in both(&s, "broken.example.org", Rtype::A, true) {
        assert_eq!(rcode(&m), Rcode::SERVFAIL);
        assert_eq!(nsid_of(&m).as_deref(), Some(host.trim()));
    }
    up.set_mode_for("silent.example.org", Mode::Silent);
    let m = udp_exchange(s.addr(), &nsid_query("silent.example.org", Rtype::A, true));
    assert_eq!(rcode(&m), Rcode::SERVFAIL);
    assert_eq!(nsid_of(&m), None);
}

/// The node-cache corpus Corefile: cluster and reverse names go to the cluster's DNS
/// over TCP (forward README `force_tcp`), the rest to the node's resolvers, each block
/// caches (TTLs capped at 30) and every reply to a query asking for NSID carries the
/// node's host name (nsid README "Syntax": no DATA, the host name).
#[test]
fn the_node_cache_shape_names_the_node_in_every_block() {
    let cluster = FakeUpstream::tagged(2);
    let up = FakeUpstream::start();
    let s = testkit::corpus::Corpus::load("node-cache-nsid.Corefile")
        .upstream(&up)
        .forward_to("10.96.0.11", &cluster.spec())
        .start();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    let cases = [
        ("web.team-a.svc.cluster.local", Rtype::A, "30 IN A 192.0.2.2"),
        ("2.1.96.10.in-addr.arpa", Rtype::PTR, "30 IN PTR host-2.upstream.test."),
        ("www.example.org", Rtype::A, "30 IN A 192.0.2.1"),
    ];
    for (name, qtype, data) in cases {
        let want = [format!("{name}. {data}")];
        // Without NSID asked: the kit's plain query (EDNS, no option), no identifier.
        for m in s.both(name, qtype) {
            assert_eq!(section(&m, "answer"), want, "{name}");
            assert_eq!(nsid_of(&m), None);
        }
        // Asked (answered from the cache by now): the node's name.
        for m in both(&s, name, qtype, true) {
            assert_eq!(section(&m, "answer"), want, "{name}");
            assert_eq!(nsid_of(&m).as_deref(), Some(host), "{name}");
        }
    }
    // Cluster and reverse names reached the cluster's DNS over TCP only; the rest the
    // node's resolvers, once each (the repeats were cache hits).
    let seen = cluster.seen();
    for name in ["web.team-a.svc.cluster.local.", "2.1.96.10.in-addr.arpa."] {
        let asked: Vec<_> = seen.iter().filter(|q| q.name == name).collect();
        assert_eq!(asked.len(), 1, "{name}");
        assert_eq!(asked[0].proto, Proto::Tcp, "{name}");
    }
    assert_eq!(up.count_name("www.example.org"), 1);
    assert_eq!(up.count_name("web.team-a.svc.cluster.local"), 0);
}
