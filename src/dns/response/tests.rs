//! The writer's tests: what it writes, read back through `domain`.

use super::*;
use std::net::Ipv4Addr;

use crate::dns::request::Transport;

fn q(name: &[u8], udp: Option<u16>) -> Vec<u8> {
    let mut m = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(udp.is_some())];
    m.extend_from_slice(name);
    m.extend_from_slice(&[0, 1, 0, 1]);
    if let Some(size) = udp {
        m.extend_from_slice(&[0, 0, 41]);
        m.extend_from_slice(&size.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    m
}

fn req(raw: &[u8]) -> Request<'_> {
    let a = "127.0.0.1:1".parse().unwrap();
    Request::parse(raw, Transport::Udp, a, a).ok().unwrap()
}

#[test]
fn answer_points_at_question_and_adds_opt() {
    let raw = q(b"\x03Web\x05local\x00", Some(1232));
    let r = req(&raw);
    let mut resp = Response::new();
    resp.start(&r, Rcode::NOERROR);
    resp.set_aa(true);
    resp.answer(Record::at_question(rtype::A, 5, Rdata::A(Ipv4Addr::new(10, 0, 0, 1))));
    let out = resp.finish().to_vec();
    let msg = domain::base::Message::from_octets(out.as_slice()).unwrap();
    assert!(msg.header().qr() && msg.header().aa() && msg.header().rd());
    assert_eq!(msg.header_counts().ancount(), 1);
    assert_eq!(msg.header_counts().arcount(), 1);
    assert_eq!(&out[27..29], &[0xC0, 0x0C]);
    let opt = msg.opt().unwrap();
    assert_eq!(opt.udp_payload_size(), ADVERTISED_UDP_PAYLOAD);
}

#[test]
fn truncation_keeps_whole_records_and_sets_tc() {
    let raw = q(b"\x01a\x00", None);
    let r = req(&raw);
    let mut resp = Response::new();
    resp.start(&r, Rcode::NOERROR);
    for i in 0..100u8 {
        resp.answer(Record::at_question(rtype::A, 5, Rdata::A(Ipv4Addr::new(10, 0, 0, i))));
    }
    let out = resp.finish();
    assert!(out.len() <= 512);
    let msg = domain::base::Message::from_octets(out).unwrap();
    assert!(msg.header().tc());
    // 12 header + 7 question, 16 bytes per record: (512 - 19) / 16 = 30.
    assert_eq!(msg.header_counts().ancount(), 30);
    assert_eq!(msg.answer().unwrap().count(), 30);
}

#[test]
fn compresses_rdata_names_and_keeps_case() {
    let raw = q(b"\x03Web\x07Cluster\x05local\x00", Some(4096));
    let r = req(&raw);
    let zone_off = r.qname_label_offset(1);
    let mut resp = Response::new();
    resp.start(&r, Rcode::NXDOMAIN);
    resp.authority(Record {
        owner: Name::under_question(&[], zone_off),
        rtype: rtype::SOA,
        ttl: 5,
        data: Rdata::Soa {
            mname: Name::under_question(b"\x02ns\x03dns", zone_off),
            rname: Name::under_question(b"\x0ahostmaster", zone_off),
            serial: 1,
            refresh: 7200,
            retry: 1800,
            expire: 86400,
            minimum: 5,
        },
    });
    resp.additional(Record {
        owner: Name::wire(b"\x02ns\x03dns\x07Cluster\x05local\x00"),
        rtype: rtype::A,
        ttl: 5,
        data: Rdata::A(Ipv4Addr::LOCALHOST),
    });
    let out = resp.finish().to_vec();
    let msg = domain::base::Message::from_octets(out.as_slice()).unwrap();
    let text = msg.display_dig_style().to_string();
    assert!(
        text.contains("Cluster.local. 5 IN SOA ns.dns.Cluster.local. hostmaster.Cluster.local."),
        "{text}"
    );
    assert!(text.contains("ns.dns.Cluster.local. 5 IN A 127.0.0.1"), "{text}");
    // The additional owner is a single pointer to the SOA's mname.
    let rec = resp.records()[1];
    assert_eq!(rec.ttl_at - rec.start, 2 + 4);
}

#[test]
fn compression_finds_written_suffixes_by_hash_and_case() {
    let raw = q(b"\x01x\x05Local\x00", Some(4096));
    let r = req(&raw);
    let mut resp = Response::new();
    resp.start(&r, Rcode::NOERROR);
    let mut want = Vec::new();
    for i in 0..40 {
        // Alternate the spelling of a shared suffix: only an exact match may be
        // pointed to.
        let zone: &[u8] = if i % 2 == 0 {
            b"\x03svc\x05local\x00"
        } else {
            b"\x03SVC\x05local\x00"
        };
        let head = format!("h{i}");
        let mut name = vec![head.len() as u8];
        name.extend_from_slice(head.as_bytes());
        let target = Name {
            head: &name,
            mid: b"\x02ns",
            tail: Tail::Wire(zone),
        };
        resp.answer(Record::at_question(rtype::PTR, 5, Rdata::Name(target)));
        want.push(format!("h{i}.ns.{}.local.", if i % 2 == 0 { "svc" } else { "SVC" }));
    }
    let out = resp.finish().to_vec();
    let msg = domain::base::Message::from_octets(out.as_slice()).unwrap();
    let got: Vec<String> = msg
        .answer()
        .unwrap()
        .limit_to::<domain::rdata::Ptr<_>>()
        .map(|r| r.unwrap().data().ptrdname().to_string() + ".")
        .collect();
    assert_eq!(got, want);
    // Each name after the first two of its spelling is its own label and a pointer:
    // 12 (owner pointer, type, class, TTL, length) + 4 + 2.
    let last = resp.records()[39];
    assert_eq!(last.end - last.start, 12 + 4 + 2);
}

#[test]
fn srv_target_is_not_compressed() {
    let raw = q(b"\x01x\x05local\x00", None);
    let r = req(&raw);
    let mut resp = Response::new();
    resp.start(&r, Rcode::NOERROR);
    resp.answer(Record::at_question(
        rtype::SRV,
        5,
        Rdata::Srv {
            priority: 0,
            weight: 100,
            port: 80,
            target: Name::under_question(b"\x01y", r.qname_label_offset(1)),
        },
    ));
    let out = resp.finish();
    assert!(out.ends_with(b"\x01y\x05local\x00"));
}

/// An option added to a finished reply goes after the OPT record's own (an EDE here),
/// and the rdata length covers both; minimal's cut keeps the OPT record whole.
#[test]
fn a_finished_reply_takes_an_option_and_loses_its_later_sections() {
    let raw = q(b"\x01a\x00", Some(1232));
    let r = req(&raw);
    let mut resp = Response::new();
    resp.start(&r, Rcode::NOERROR);
    assert!(resp.set_ede(18, "prohibited"));
    resp.answer(Record::at_question(rtype::A, 5, Rdata::A(Ipv4Addr::new(10, 0, 0, 1))));
    resp.authority(Record::at_question(
        rtype::NS,
        5,
        Rdata::Name(Name::wire(b"\x02ns\x00")),
    ));
    resp.additional(Record {
        owner: Name::wire(b"\x02ns\x00"),
        rtype: rtype::A,
        ttl: 5,
        data: Rdata::A(Ipv4Addr::new(10, 0, 0, 53)),
    });
    resp.finish();
    assert!(resp.add_option(3, b"node-1"));
    resp.keep_answers_only();
    let msg = domain::base::Message::from_octets(resp.bytes().to_vec()).unwrap();
    let c = msg.header_counts();
    assert_eq!((c.ancount(), c.nscount(), c.arcount()), (1, 0, 1));
    let opt = msg.opt().unwrap();
    let codes: Vec<u16> = opt
        .opt()
        .iter::<domain::base::opt::AllOptData<_, _>>()
        .map(|o| domain::base::opt::OptData::code(&o.unwrap()).to_int())
        .collect();
    assert_eq!(codes, [15, 3]);
    assert_eq!(opt.opt().nsid().unwrap().as_slice(), b"node-1");
    assert!(!msg.header().tc());

    // Nothing is added to a reply without EDNS, finished or not.
    let plain = q(b"\x01a\x00", None);
    let r = req(&plain);
    resp.start(&r, Rcode::NOERROR);
    assert!(!resp.add_option(3, b"x"));
    resp.finish();
    assert!(!resp.add_option(3, b"x"));
}

/// A reply written for a rewritten query with the client's question in place
/// (`Request::echo`), then settled with `unrelated`: whether it stood, the question it
/// ends with, and its answer and authority sections as read.
fn echoed(
    client: &[u8],
    renamed: &[u8],
    unrelated: impl Fn(&[u8]) -> bool,
    write: impl Fn(&mut Response, &Request<'_>),
) -> (bool, String, Vec<String>, Vec<String>) {
    let (client_raw, renamed_raw) = (q(client, Some(1232)), q(renamed, Some(1232)));
    let client_req = req(&client_raw);
    let mut r = req(&renamed_raw);
    r.echo = Some(client_req.question());
    let mut resp = Response::new();
    resp.start(&r, Rcode::NOERROR);
    assert!(resp.is_echoed());
    write(&mut resp, &r);
    resp.finish();
    let stood = resp.settle_echo(unrelated);
    assert!(!resp.is_echoed());
    let msg = domain::base::Message::from_octets(resp.bytes().to_vec()).unwrap();
    let question = msg.first_question().unwrap().qname().to_string();
    let (answer, authority) = (
        testkit::wire::section(&msg, "answer"),
        testkit::wire::section(&msg, "authority"),
    );
    (stood, question, answer, authority)
}

/// Names of the rewritten query's zone are the ones `answer auto` would change.
fn outside_svc(name: &[u8]) -> bool {
    !name.ends_with(b"\x03svc\x07cluster\x05local\x00")
}

#[test]
fn an_echoed_reply_stands_when_its_other_names_are_left_alone() {
    let client = b"\x03web\x06team-a\x07example\x00";
    let renamed = b"\x03web\x06team-a\x03svc\x07cluster\x05local\x00";
    let write = |resp: &mut Response, r: &Request<'_>| {
        let a = |i| Rdata::A(Ipv4Addr::new(10, 0, 0, i));
        resp.answer(Record::at_question(rtype::A, 5, a(1)));
        // Labels in front of the question and a suffix of the query's name (a zone):
        // the first reads under the client's name, the second as the query's.
        let head = b"\x01x";
        resp.answer(Record {
            owner: Name::under_question(head, QNAME_OFFSET),
            rtype: rtype::A,
            ttl: 5,
            data: a(2),
        });
        resp.authority(Record {
            owner: Name::under_question(&[], r.qname_label_offset(3)),
            rtype: rtype::A,
            ttl: 5,
            data: a(3),
        });
    };
    let (stood, question, answer, authority) = echoed(client, renamed, outside_svc, write);
    assert!(stood);
    assert_eq!(question, "web.team-a.example");
    assert_eq!(
        answer,
        [
            "web.team-a.example. 5 IN A 10.0.0.1",
            "x.web.team-a.example. 5 IN A 10.0.0.2"
        ]
    );
    assert_eq!(authority, ["cluster.local. 5 IN A 10.0.0.3"]);
}

#[test]
fn an_echoed_reply_that_cannot_stand_gets_the_querys_question_back() {
    let client = b"\x03web\x06team-a\x07example\x00";
    let renamed = b"\x03web\x06team-a\x03svc\x07cluster\x05local\x00";
    // A name the rule would change (under the query's zone), and a record whose owner
    // points past the question (it moves with the question).
    let target = b"\x05other\x07example\x03net\x00";
    let svc = b"\x02db\x06team-a\x03svc\x07cluster\x05local\x00";
    let write = |resp: &mut Response, _: &Request<'_>| {
        resp.answer(Record::at_question(rtype::CNAME, 5, Rdata::Name(Name::wire(target))));
        resp.answer(Record {
            owner: Name::wire(target),
            rtype: rtype::CNAME,
            ttl: 5,
            data: Rdata::Name(Name::wire(svc)),
        });
        resp.answer(Record {
            owner: Name::wire(target),
            rtype: rtype::A,
            ttl: 5,
            data: Rdata::A(Ipv4Addr::new(10, 0, 0, 4)),
        });
    };
    let (stood, question, answer, _) = echoed(client, renamed, outside_svc, write);
    assert!(!stood);
    assert_eq!(question, "web.team-a.svc.cluster.local");
    assert_eq!(
        answer,
        [
            "web.team-a.svc.cluster.local. 5 IN CNAME other.example.net.",
            "other.example.net. 5 IN CNAME db.team-a.svc.cluster.local.",
            "other.example.net. 5 IN A 10.0.0.4",
        ]
    );
    // Without that name it stands, the pointer past the question in place.
    let (stood, question, answer, _) = echoed(client, renamed, |_| true, write);
    assert!(stood);
    assert_eq!(question, "web.team-a.example");
    assert_eq!(answer[0], "web.team-a.example. 5 IN CNAME other.example.net.");
    assert_eq!(answer[2], "other.example.net. 5 IN A 10.0.0.4");
}

#[test]
fn an_echoed_reply_with_a_name_only_the_querys_question_carries_gets_it_back() {
    // Labels that fit in front of the query's short name, not the client's long one.
    let mut client = Vec::new();
    for _ in 0..4 {
        client.push(50);
        client.extend_from_slice(&[b'c'; 50]);
    }
    client.push(0);
    let renamed = b"\x01a\x03svc\x00";
    let mut head = Vec::new();
    for _ in 0..3 {
        head.push(20);
        head.extend_from_slice(&[b'h'; 20]);
    }
    let write = |resp: &mut Response, _: &Request<'_>| {
        resp.answer(Record {
            owner: Name::under_question(&head, QNAME_OFFSET),
            rtype: rtype::A,
            ttl: 5,
            data: Rdata::A(Ipv4Addr::new(10, 0, 0, 5)),
        });
    };
    let (stood, question, answer, _) = echoed(&client, renamed, |_| true, write);
    assert!(!stood);
    assert_eq!(question, "a.svc");
    let h = "h".repeat(20);
    assert_eq!(answer, [format!("{h}.{h}.{h}.a.svc. 5 IN A 10.0.0.5")]);
}

#[test]
fn an_echoed_reply_with_a_pointer_into_the_querys_name_gets_it_back() {
    let client = b"\x03web\x06team-a\x07example\x00";
    let renamed = b"\x03web\x06team-a\x03svc\x07cluster\x05local\x00";
    // An encoded record (a template's) owned by `x.` and a pointer to `svc.cluster.local.`
    // in the query's question.
    let write = |resp: &mut Response, r: &Request<'_>| {
        let at = r.qname_label_offset(2) as u8;
        let rec = [1, b'x', 0xC0, at, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 0, 0, 6];
        resp.push_encoded(Section::Answer, &rec).unwrap();
    };
    let (stood, question, answer, _) = echoed(client, renamed, |_| true, write);
    assert!(!stood);
    assert_eq!(question, "web.team-a.svc.cluster.local");
    assert_eq!(answer, ["x.svc.cluster.local. 5 IN A 10.0.0.6"]);
}

/// Records encoded ahead ([`Prepared`]) and written with [`Response::push_raw`] leave
/// the reply exactly as pushing them one by one does: bytes, record positions, and
/// the compression targets later names find (the last record points into an NS
/// target's labels either way). With the client's question in place of the query's,
/// or past the size limit, nothing is written and `false` says so.
#[test]
fn prepared_and_raw_records_write_what_pushing_them_writes() {
    let raw = q(b"\x03WwW\x04Zone\x04TeSt\x00", Some(1232));
    let r = req(&raw);
    let apex = r.qname_label_offset(1);
    let mut p = Prepared::new();
    assert!(p.add(rtype::NS, 300, &[Piece::Name(b"\x03ns1")]));
    assert!(p.add(rtype::NS, 300, &[Piece::Name(b"\x01a\x03ns2")]));
    assert!(p.add(
        rtype::SOA,
        60,
        &[Piece::Name(b""), Piece::Name(b"\x02hm"), Piece::Bytes(&[7; 20])]
    ));
    assert!(!p.add(rtype::NS, 300, &[Piece::Name(b"\x05ns1")]), "a malformed label");
    assert_eq!(p.len(), 3);
    let glue = Name::wire(b"\x01a\x03ns2\x04Zone\x04TeSt\x00");
    let write = |resp: &mut Response, prepared: bool| {
        resp.start(&r, Rcode::NOERROR);
        if !(prepared && resp.push_raw(Section::Answer, QNAME_OFFSET, rtype::A, 5, &[10, 0, 0, 1])) {
            resp.answer(Record::at_question(rtype::A, 5, Rdata::Raw(&[10, 0, 0, 1])));
        }
        if !(prepared && resp.push_prepared(Section::Authority, &p, apex, apex)) {
            let zone = Name::under_question(&[], apex);
            resp.authority(Record {
                owner: zone,
                rtype: rtype::NS,
                ttl: 300,
                data: Rdata::Name(Name::under_question(b"\x03ns1", apex)),
            });
            resp.authority(Record {
                owner: zone,
                rtype: rtype::NS,
                ttl: 300,
                data: Rdata::Name(Name::under_question(b"\x01a\x03ns2", apex)),
            });
            let mut numbers = [0u32; 5];
            numbers.fill(u32::from_be_bytes([7; 4]));
            resp.authority(Record {
                owner: zone,
                rtype: rtype::SOA,
                ttl: 60,
                data: Rdata::Soa {
                    mname: zone,
                    rname: Name::under_question(b"\x02hm", apex),
                    serial: numbers[0],
                    refresh: numbers[1],
                    retry: numbers[2],
                    expire: numbers[3],
                    minimum: numbers[4],
                },
            });
        }
        resp.additional(Record {
            owner: glue,
            rtype: rtype::A,
            ttl: 5,
            data: Rdata::A(Ipv4Addr::new(192, 0, 2, 1)),
        });
        (resp.finish().to_vec(), resp.records().to_vec())
    };
    let (mut general, mut fast) = (Response::new(), Response::new());
    let want = write(&mut general, false);
    let got = write(&mut fast, true);
    assert_eq!(got, want);
    // The glue's owner is one pointer, to the labels `a.ns2` the prepared NS wrote.
    let last = want.1[4];
    assert_eq!(last.ttl_at - last.start, 2 + 4);
    let msg = domain::base::Message::from_octets(want.0.as_slice()).unwrap();
    let text = msg.display_dig_style().to_string();
    assert!(text.contains("Zone.TeSt. 300 IN NS a.ns2.Zone.TeSt."), "{text}");
    assert!(text.contains("a.ns2.Zone.TeSt. 5 IN A 192.0.2.1"), "{text}");

    // Past the size limit (no EDNS: 512 bytes), nothing: the caller pushes.
    let small = q(&[&[60u8][..], &[b'x'; 60], b"\x04Zone\x04TeSt\x00"].concat(), None);
    let r = req(&small);
    let mut resp = Response::new();
    resp.start(&r, Rcode::NOERROR);
    let apex = r.qname_label_offset(1);
    let mut big = Prepared::new();
    for i in 0..12u8 {
        assert!(big.add(rtype::NS, 300, &[Piece::Name(&[&[40u8][..], &[b'a' + i; 40]].concat())]));
    }
    let before = resp.bytes().len();
    assert!(!resp.push_prepared(Section::Authority, &big, apex, apex));
    assert_eq!((resp.bytes().len(), resp.truncated()), (before, false));
    // A section before the one being written: nothing either.
    assert!(resp.push_prepared(Section::Additional, &p, apex, apex));
    assert!(!resp.push_raw(Section::Answer, QNAME_OFFSET, rtype::A, 5, &[1, 2, 3, 4]));

    // With the client's question in place of the query's (a rewritten query), the
    // general writer decides: nothing here.
    let client = q(b"\x03web\x04Else\x00", Some(1232));
    let client_req = req(&client);
    let mut r = req(&raw);
    r.echo = Some(client_req.question());
    resp.start(&r, Rcode::NOERROR);
    assert!(!resp.push_raw(Section::Answer, QNAME_OFFSET, rtype::A, 5, &[1, 2, 3, 4]));
    assert!(!resp.push_prepared(Section::Authority, &p, QNAME_OFFSET, QNAME_OFFSET));
    assert_eq!(resp.count(Section::Answer) + resp.count(Section::Authority), 0);
}
