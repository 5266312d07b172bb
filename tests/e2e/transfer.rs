//! `transfer` end to end: zone transfers of `cluster.local` from the fake API through
//! the real binary, compared record for record with what the kubernetes plugin answers
//! for each name; the `to` list, UDP refused, IXFR; and a large transfer streaming
//! while UDP queries are answered by the same (single) worker.
//!
//! References: CoreDNS `plugin/transfer/README.md` and `transfer_test.go`,
//! `plugin/kubernetes/xfr.go` and `xfr_test.go`.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};
use serde_json::Value;

use testkit::objects::{endpoints, headless_with, slices};
use testkit::prelude::*;

const ZONE: &str = "cluster.local.";

/// The cluster: the kit's base cluster, and in `testns` a ClusterIP service with a
/// named and an unnamed port, a dual-stack one, a headless one with two endpoints (one
/// named by its hostname) and two ports, and an ExternalName.
fn cluster() -> Vec<Value> {
    let mut objects = base_cluster();
    objects.push(namespace("testns"));
    objects.push(service(
        "testns",
        "svc1",
        "10.96.7.1",
        &[("http", 80, "TCP"), ("", 8080, "TCP")],
    ));
    let mut dual = service("testns", "dual", "10.96.7.2", &[("http", 80, "TCP")]);
    dual["spec"]["clusterIPs"] = serde_json::json!(["10.96.7.2", "fd00::7:2"]);
    dual["spec"]["ipFamilies"] = serde_json::json!(["IPv4", "IPv6"]);
    dual["spec"]["ipFamilyPolicy"] = serde_json::json!("PreferDualStack");
    objects.push(dual);
    objects.push(headless_with("testns", "hdls", &[("http", 80), ("metrics", 9090)]));
    objects.extend(slices(
        "testns",
        "hdls",
        &[vec![
            ("10.244.7.1".to_string(), Some("web-0".to_string())),
            ("10.244.7.2".to_string(), None),
        ]],
        &[("http", 80), ("metrics", 9090)],
    ));
    objects.push(external_name("testns", "ext", "ext.example.test"));
    // Ports that repeat a number or a (name, protocol), which the SRV weights count: a
    // few (counted pairwise by the transfer) and more than 16 (counted through maps).
    objects.push(service(
        "testns",
        "pairs",
        "10.96.7.3",
        &[
            ("dns", 53, "UDP"),
            ("dns", 53, "TCP"),
            ("", 53, "TCP"),
            ("dns", 5353, "TCP"),
        ],
    ));
    let names: Vec<String> = (0..20).map(|i| format!("p{}", i % 12)).collect();
    let many: Vec<(&str, u16, &str)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.as_str(),
                7000 + (i % 15) as u16,
                if i % 3 == 0 { "UDP" } else { "TCP" },
            )
        })
        .collect();
    objects.push(service("testns", "many", "10.96.7.4", &many));
    objects
}

fn corefile(api: &FakeApi, transfer: &str) -> String {
    format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    {transfer}\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        endpoint {}\n    }}\n}}\n",
        api.url()
    )
}

fn start(api: &FakeApi, transfer: &str, args: &[&str]) -> Server {
    let text = corefile(api, transfer);
    let mut launch = Launch::new(&text);
    for a in args {
        launch = launch.arg(*a);
    }
    let s = launch.start();
    wait_until("the first sync", Duration::from_secs(10), || {
        rcode(&s.query("kubernetes.default.svc.cluster.local.", Rtype::A)) == Rcode::NOERROR
    });
    s
}

/// Sends `q` over a new TCP connection and reads messages until the second SOA (or a
/// message that is not NOERROR, or the only message of a one-SOA reply).
fn transfer_msgs(addr: SocketAddr, q: &[u8]) -> Vec<Message<Vec<u8>>> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write_frame(&mut s, q);
    let mut msgs = Vec::new();
    let mut soas = 0;
    while let Some(frame) = read_frame(&mut s) {
        let m = Message::from_octets(frame).unwrap();
        let answer = section(&m, "answer");
        soas += answer.iter().filter(|r| r.contains(" SOA ")).count();
        let last = rcode(&m) != Rcode::NOERROR || soas >= 2 || (msgs.is_empty() && answer.len() == 1);
        msgs.push(m);
        if last {
            break;
        }
    }
    msgs
}

fn axfr_query(zone: &str) -> Vec<u8> {
    query_bytes(zone, Rtype::AXFR, None, 0x5a5a)
}

/// An IXFR query for `zone` carrying a SOA with `serial` in its authority section
/// (RFC 1995 3).
fn ixfr_query(zone: &str, serial: u32) -> Vec<u8> {
    let mut q = query_bytes(zone, Rtype::IXFR, None, 0x1f1f);
    q[9] = 1; // NSCOUNT
    q.extend_from_slice(&[0xc0, 0x0c]); // owner: the question's name
    q.extend_from_slice(&6u16.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q.extend_from_slice(&0u32.to_be_bytes());
    q.extend_from_slice(&22u16.to_be_bytes());
    q.extend_from_slice(&[0, 0]); // mname, rname: the root
    q.extend_from_slice(&serial.to_be_bytes());
    q.extend_from_slice(&[0; 16]);
    q
}

/// Every answer record of a transfer, in order.
fn records(msgs: &[Message<Vec<u8>>]) -> Vec<String> {
    msgs.iter().flat_map(|m| section(m, "answer")).collect()
}

/// Field `i` of a record line (owner, ttl, class, type, data...).
fn field(line: &str, i: usize) -> &str {
    line.split_whitespace().nth(i).unwrap_or("")
}

/// CoreDNS `xfr_test.go` `TestKubernetesAXFR`: SOA first and last, the apex NS and its
/// address, then every service's records; here each (name, type) of the transfer is
/// asked over UDP and TCP, and the answer must be exactly the transfer's records.
#[test]
fn an_axfr_of_the_cluster_zone_is_what_the_plugin_answers_name_by_name() {
    let api = FakeApi::with_objects(cluster());
    let s = start(&api, "transfer {\n        to *\n    }", &[]);
    let msgs = transfer_msgs(s.addr(), &axfr_query(ZONE));
    let all = records(&msgs);
    assert!(all.len() > 10, "{all:#?}");
    for m in &msgs {
        assert_eq!(rcode(m), Rcode::NOERROR);
        assert!(m.header().aa(), "every message authoritative");
        assert_eq!(m.header().id(), 0x5a5a);
    }
    // RFC 5936 2.2: the SOA opens and closes the transfer.
    let (first, last) = (&all[0], &all[all.len() - 1]);
    assert_eq!(field(first, 3), "SOA", "{first}");
    assert_eq!(first, last);
    assert_eq!(field(first, 0), ZONE);
    assert_eq!(field(first, 4), "ns.dns.cluster.local.");
    assert_eq!(field(first, 5), "hostmaster.cluster.local.");
    assert_eq!(all.iter().filter(|r| field(r, 3) == "SOA").count(), 2);
    // The body: what each name answers.
    let mut by_name: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in &all[1..all.len() - 1] {
        by_name
            .entry((field(r, 0).to_string(), field(r, 3).to_string()))
            .or_default()
            .push(r.clone());
    }
    for ((name, qtype), want) in &by_name {
        let mut want = want.clone();
        want.sort();
        let t = Rtype::from_mnemonic(qtype.as_bytes()).unwrap();
        for (how, reply) in [("udp", s.query(name, t)), ("tcp", s.query_tcp(name, t))] {
            let mut got = section(&reply, "answer");
            got.sort();
            assert_eq!(got, want, "{name} {qtype} over {how}");
        }
    }
    // And what CoreDNS's transfer has for each kind of service (xfr.go).
    for want in [
        "svc1.testns.svc.cluster.local. 5 IN A 10.96.7.1",
        "svc1.testns.svc.cluster.local. 5 IN SRV 0 50 80 svc1.testns.svc.cluster.local",
        "svc1.testns.svc.cluster.local. 5 IN SRV 0 50 8080 svc1.testns.svc.cluster.local",
        "_http._tcp.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local",
        "dual.testns.svc.cluster.local. 5 IN AAAA fd00::7:2",
        "hdls.testns.svc.cluster.local. 5 IN A 10.244.7.1",
        "web-0.hdls.testns.svc.cluster.local. 5 IN A 10.244.7.1",
        "10-244-7-2.hdls.testns.svc.cluster.local. 5 IN A 10.244.7.2",
        "_http._tcp.hdls.testns.svc.cluster.local. 5 IN SRV 0 50 80 web-0.hdls.testns.svc.cluster.local",
        "_metrics._tcp.hdls.testns.svc.cluster.local. 5 IN SRV 0 50 9090 10-244-7-2.hdls.testns.svc.cluster.local",
        "ext.testns.svc.cluster.local. 5 IN CNAME ext.example.test.",
        "kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1",
    ] {
        assert!(all.iter().any(|r| r == want), "missing {want} in\n{all:#?}");
    }
    // The services with repeated ports are there (their weights are checked above).
    for name in [
        "_dns._tcp.pairs.testns.svc.cluster.local.",
        "_p0._udp.many.testns.svc.cluster.local.",
    ] {
        assert!(all.iter().any(|r| field(r, 0) == name), "missing {name} in\n{all:#?}");
    }
    // No unnamed port gets a `_port._proto` name (the spec, 2.3.2), no record twice.
    assert!(!all.iter().any(|r| r.starts_with("_._")));
    let mut body = all[1..all.len() - 1].to_vec();
    body.sort();
    let n = body.len();
    body.dedup();
    assert_eq!(body.len(), n, "a record repeated");
}

/// CoreDNS `transfer.go`: over UDP a transfer is refused whatever the zone; a client
/// not in `to` is refused (`TestTransferNotAllowed`); a name of no transfer zone goes
/// on to the next plugin (kubernetes, which refuses transfers itself: handler.go); an
/// IXFR at the current serial gets the SOA alone (`TestTransferIXFRCurrent`,
/// `TestKubernetesIXFRCurrent`), an older serial the whole zone
/// (`TestKubernetesIXFRFallback`).
#[test]
fn udp_and_strangers_are_refused_and_a_current_ixfr_gets_the_soa() {
    let api = FakeApi::with_objects(cluster());
    let s = start(&api, "transfer {\n        to *\n    }", &[]);
    let r = s.raw_udp(&axfr_query(ZONE), Duration::from_secs(2)).expect("a reply");
    let r = Message::from_octets(r).unwrap();
    assert_eq!(rcode(&r), Rcode::REFUSED);
    assert_eq!(counts(&r).1, 0);

    let soa = section(&s.query(ZONE, Rtype::SOA), "answer");
    let serial: u32 = field(&soa[0], 6).parse().unwrap();
    let current = transfer_msgs(s.addr(), &ixfr_query(ZONE, serial));
    assert_eq!(current.len(), 1);
    assert_eq!(records(&current), soa);
    let older = records(&transfer_msgs(s.addr(), &ixfr_query(ZONE, serial - 1)));
    assert_eq!(older, records(&transfer_msgs(s.addr(), &axfr_query(ZONE))));
    assert!(older.len() > 10);
    // An IXFR without its SOA: SERVFAIL (transfer.go).
    let bare = query_bytes(ZONE, Rtype::IXFR, None, 7);
    assert_eq!(rcode(&transfer_msgs(s.addr(), &bare)[0]), Rcode::SERVFAIL);
    // Inside the zone but not a zone: kubernetes refuses it.
    let sub = transfer_msgs(s.addr(), &axfr_query("svc.cluster.local."));
    assert_eq!(rcode(&sub[0]), Rcode::REFUSED);
    drop(s);

    let s = start(
        &api,
        "transfer cluster.local {\n        to 192.0.2.1 [2001:db8::1]:5300\n    }",
        &[],
    );
    let r = transfer_msgs(s.addr(), &axfr_query(ZONE));
    assert_eq!(r.len(), 1);
    assert_eq!(rcode(&r[0]), Rcode::REFUSED);
    assert_eq!(counts(&r[0]).1, 0);
    drop(s);
    let s = start(
        &api,
        "transfer cluster.local {\n        to 192.0.2.1 127.0.0.1\n    }",
        &[],
    );
    assert!(records(&transfer_msgs(s.addr(), &axfr_query(ZONE))).len() > 10);
}

/// A TCP connection to `to` (IPv4) with a 16 KiB receive buffer set before it connects
/// (so the window is small from the start): a client that stops reading stops the
/// server's writes within a few messages.
fn small_window_connect(to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = to else { panic!("IPv4 only") };
    // SAFETY: a new socket we own; setsockopt and connect with pointers to live values
    // of the sizes given; the descriptor is handed to the TcpStream, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        testkit::load::set_sockopt(fd, libc::SO_RCVBUF, 16 * 1024);
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

/// A transfer of thousands of services streams: the one worker answers UDP queries
/// while the client holds the transfer half-read (its socket full), then the rest
/// arrives whole.
#[test]
fn a_large_transfer_streams_while_the_same_worker_answers_udp() {
    const SERVICES: usize = 4000;
    let mut objects = base_cluster();
    objects.push(namespace("big"));
    for i in 0..SERVICES {
        objects.push(service(
            "big",
            &format!("s{i}"),
            &format!("10.97.{}.{}", i / 250, i % 250 + 1),
            &[("http", 80, "TCP")],
        ));
    }
    // And one headless service of 3,000 endpoints (three slices).
    objects.push(headless_with("big", "wide", &[("http", 80)]));
    objects.extend(slices("big", "wide", &endpoints(100, 3000, |_| None), &[("http", 80)]));
    let api = FakeApi::with_objects(objects);
    let s = start(&api, "transfer {\n        to *\n    }", &["-workers", "1"]);
    wait_until("every service", Duration::from_secs(20), || {
        rcode(&s.query(&format!("s{}.big.svc.cluster.local.", SERVICES - 1), Rtype::A)) == Rcode::NOERROR
    });

    let mut conn = small_window_connect(s.addr());
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    conn.write_all(&testkit::wire::framed(&axfr_query(ZONE))).unwrap();
    let first = Message::from_octets(read_frame(&mut conn).unwrap()).unwrap();
    assert_eq!(field(&section(&first, "answer")[0], 3), "SOA");
    // The transfer waits on this client; the worker serves others meanwhile.
    let t = Instant::now();
    for i in 0..200 {
        let name = format!("s{}.big.svc.cluster.local.", i * 17 % SERVICES);
        let r = s.query(&name, Rtype::A);
        assert_eq!(rcode(&r), Rcode::NOERROR, "{name}");
        assert_eq!(section(&r, "answer").len(), 1);
    }
    let during = t.elapsed();
    assert!(during < Duration::from_secs(5), "200 UDP answers took {during:?}");
    // The rest, whole.
    let mut all = section(&first, "answer");
    let mut messages = 1;
    while all.iter().filter(|r| field(r, 3) == "SOA").count() < 2 {
        let m = Message::from_octets(read_frame(&mut conn).expect("the rest of the transfer")).unwrap();
        assert!(m.as_slice().len() <= 65535);
        all.extend(section(&m, "answer"));
        messages += 1;
    }
    assert!(messages > 3, "{messages} messages");
    let a = |prefix: &str| {
        all.iter()
            .filter(|r| r.starts_with(prefix) && field(r, 3) == "A")
            .count()
    };
    for i in [0, 1, SERVICES / 2, SERVICES - 1] {
        assert_eq!(a(&format!("s{i}.big.svc.cluster.local. ")), 1, "s{i}");
    }
    let services = all
        .iter()
        .filter(|r| {
            field(r, 3) == "A" && field(r, 0).ends_with(".big.svc.cluster.local.") && field(r, 0).starts_with('s')
        })
        .count();
    assert_eq!(services, SERVICES);
    assert_eq!(a("wide.big.svc.cluster.local. "), 3000);
    // The connection takes queries again once the transfer is out.
    write_frame(&mut conn, &query_bytes("s1.big.svc.cluster.local.", Rtype::A, None, 9));
    let t = Instant::now();
    let r = read_frame(&mut conn);
    let r =
        Message::from_octets(r.unwrap_or_else(|| panic!("no reply after {:?}:\n{}", t.elapsed(), s.output()))).unwrap();
    assert_eq!(r.header().id(), 9);
    assert_eq!(section(&r, "answer").len(), 1);
}

const DB: &str = "$ORIGIN example.org.
$TTL 3600
@       IN SOA ns1.example.org. admin.example.org. SERIAL 7200 3600 1209600 300
@       IN NS  ns1
ns1     IN A   192.0.2.53
www     IN A   192.0.2.80
www     IN AAAA 2001:db8::80
mail    IN MX  10 mx.example.org.
mx      IN A   192.0.2.25
alias   IN CNAME www
_sip._tcp IN SRV 10 60 5060 sip.example.org.
sip     IN A   192.0.2.60
txt     IN TXT \"v=spf1 -all\"
";

fn db(serial: u32, extra: &str) -> String {
    DB.replace("SERIAL", &serial.to_string()) + extra
}

/// A NOTIFY receiver: answers each NOTIFY with NOERROR and keeps the zone names.
struct Secondary {
    sock: std::net::UdpSocket,
}

impl Secondary {
    fn new() -> Secondary {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Secondary { sock }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    /// Waits up to `wait` for a NOTIFY; returns its question name and answers it.
    fn next_notify(&self, wait: Duration) -> Option<String> {
        let end = Instant::now() + wait;
        let mut buf = [0u8; 512];
        while Instant::now() < end {
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let m = Message::from_octets(buf[..n].to_vec()).unwrap();
            // RFC 1996 3.7: opcode NOTIFY, AA, the zone's SOA as the question.
            assert_eq!(m.header().opcode(), domain::base::iana::Opcode::NOTIFY);
            assert!(m.header().aa());
            let q = m.first_question().unwrap();
            assert_eq!(q.qtype(), Rtype::SOA);
            let mut reply = buf[..n].to_vec();
            reply[2] |= 0x80; // QR
            self.sock.send_to(&reply, from).unwrap();
            return Some(q.qname().to_string());
        }
        None
    }
}

/// CoreDNS's `file` with `transfer` (file/xfr.go, file/setup.go, file/reload.go): the
/// zone's records between two SOAs, each (name, type) what a query answers; a NOTIFY
/// to the `to` hosts once the zone serves and after each reload (transfer/notify.go:
/// opcode NOTIFY, the zone's SOA asked); the new version transferred after it; an IXFR
/// at the new serial gets the SOA alone.
#[test]
fn a_file_zone_transfers_and_notifies_after_a_reload() {
    let secondary = Secondary::new();
    let text = format!(
        "example.org:{{port}} {{\n    bind 127.0.0.1\n    transfer {{\n        to 127.0.0.1:{}\n    }}\n    file {{dir}}/db.example.org {{\n        reload 1s\n    }}\n}}\n",
        secondary.port()
    );
    // The file must exist before the server reads it: write it where {dir} points.
    let port = free_port();
    let dir = Scratch::new("xfr-file");
    dir.write("db.example.org", &db(2024010101, ""));
    let text = text.replace("{dir}", &dir.path("").display().to_string());
    let s = Launch::new(&text).port(port).start();
    assert_eq!(
        secondary.next_notify(Duration::from_secs(10)).as_deref(),
        Some("example.org"),
        "{}",
        s.output()
    );

    let zone = "example.org.";
    let all = records(&transfer_msgs(s.addr(), &axfr_query(zone)));
    assert_eq!(field(&all[0], 3), "SOA");
    assert_eq!(all[0], all[all.len() - 1]);
    assert_eq!(all.len(), 2 + 10, "{all:#?}");
    let mut by_name: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in &all[1..all.len() - 1] {
        by_name
            .entry((field(r, 0).to_string(), field(r, 3).to_string()))
            .or_default()
            .push(r.clone());
    }
    for ((name, qtype), want) in &by_name {
        let mut want = want.clone();
        want.sort();
        let t = Rtype::from_mnemonic(qtype.as_bytes()).unwrap();
        for (how, reply) in [("udp", s.query(name, t)), ("tcp", s.query_tcp(name, t))] {
            let mut got = section(&reply, "answer");
            got.sort();
            // A CNAME's answer also has its target's records.
            got.retain(|r| field(r, 0) == name);
            assert_eq!(got, want, "{name} {qtype} over {how}");
        }
    }

    // A new serial: reloaded within the reload interval, then notified.
    dir.write("db.example.org", &db(2024010102, "new IN A 192.0.2.99\n"));
    assert_eq!(
        secondary.next_notify(Duration::from_secs(10)).as_deref(),
        Some("example.org"),
        "{}",
        s.output()
    );
    let after = records(&transfer_msgs(s.addr(), &axfr_query(zone)));
    assert!(
        after.iter().any(|r| r == "new.example.org. 3600 IN A 192.0.2.99"),
        "{after:#?}"
    );
    assert!(after[0].contains(" 2024010102 "));
    let current = transfer_msgs(s.addr(), &ixfr_query(zone, 2024010102));
    assert_eq!(records(&current), vec![after[0].clone()]);
    let old = records(&transfer_msgs(s.addr(), &ixfr_query(zone, 2024010101)));
    assert_eq!(old, after);
    let _ = port;
}

/// CoreDNS's `k8s_external` with `transfer` (k8s_external/transfer.go, its README's
/// example): the zone's SOA first and last, its NS and `ns1.dns` addresses, then each
/// Service's external records (addresses, SRV per port, a load balancer's host name as
/// a CNAME, with `headless` the endpoints); every (name, type) what a query answers;
/// an IXFR at the zone's serial gets the SOA alone.
#[test]
fn an_external_zone_transfers_what_its_names_answer() {
    use testkit::objects::{set_external_ips, set_load_balancer};
    let mut objects = base_cluster();
    objects.push(namespace("shop"));
    let mut storefront = service(
        "shop",
        "storefront",
        "10.96.5.1",
        &[("http", 80, "TCP"), ("https", 443, "TCP")],
    );
    set_load_balancer(&mut storefront, &["203.0.113.10", "2001:db8::10"]);
    objects.push(storefront);
    let mut legacy = service("shop", "legacy", "10.96.5.2", &[("web", 8080, "TCP")]);
    set_external_ips(&mut legacy, &["198.51.100.20"]);
    objects.push(legacy);
    let mut edge = service("shop", "edge", "10.96.5.3", &[("http", 80, "TCP")]);
    set_load_balancer(&mut edge, &["lb-1.elb.example.net"]);
    objects.push(edge);
    objects.push(headless("shop", "db"));
    objects.push(testkit::objects::slice(
        "shop",
        "db-abcde",
        "db",
        &["10.244.3.1", "10.244.3.2"],
    ));
    // Only cluster IPs: not in the zone.
    objects.push(service("shop", "internal", "10.96.5.4", &[("http", 80, "TCP")]));
    let api = FakeApi::with_objects(objects);
    let text = format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    transfer example.org {{\n        to *\n    }}\n    kubernetes cluster.local {{\n        endpoint {}\n    }}\n    k8s_external example.org {{\n        headless\n    }}\n}}\n",
        api.url()
    );
    let s = Launch::new(&text).start();
    wait_until("the first sync", Duration::from_secs(10), || {
        rcode(&s.query("legacy.shop.example.org.", Rtype::A)) == Rcode::NOERROR
    });
    let zone = "example.org.";
    let all = records(&transfer_msgs(s.addr(), &axfr_query(zone)));
    assert_eq!(field(&all[0], 3), "SOA", "{all:#?}");
    assert_eq!(all[0], all[all.len() - 1]);
    assert_eq!(field(&all[0], 4), "ns1.dns.example.org.");
    assert_eq!(field(&all[1], 3), "NS");
    let mut by_name: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for r in &all[1..all.len() - 1] {
        by_name
            .entry((field(r, 0).to_string(), field(r, 3).to_string()))
            .or_default()
            .push(r.clone());
    }
    for ((name, qtype), want) in &by_name {
        let mut want = want.clone();
        want.sort();
        // A host name's CNAME is what an A query answers first.
        let asked = if qtype == "CNAME" { "A" } else { qtype.as_str() };
        let t = Rtype::from_mnemonic(asked.as_bytes()).unwrap();
        for (how, reply) in [("udp", s.query(name, t)), ("tcp", s.query_tcp(name, t))] {
            let mut got: Vec<String> = section(&reply, "answer")
                .into_iter()
                .filter(|r| field(r, 3) == qtype && field(r, 0) == name)
                .collect();
            got.sort();
            assert_eq!(got, want, "{name} {qtype} over {how}");
        }
    }
    for want in [
        "storefront.shop.example.org. 5 IN A 203.0.113.10",
        "storefront.shop.example.org. 5 IN AAAA 2001:db8::10",
        "_https._tcp.storefront.shop.example.org. 5 IN SRV",
        "legacy.shop.example.org. 5 IN A 198.51.100.20",
        "edge.shop.example.org. 5 IN CNAME lb-1.elb.example.net.",
        "db.shop.example.org. 5 IN A 10.244.3.1",
        "10-244-3-2.db.shop.example.org. 5 IN A 10.244.3.2",
    ] {
        assert!(all.iter().any(|r| r.starts_with(want)), "missing {want} in\n{all:#?}");
    }
    assert!(!all.iter().any(|r| r.contains("internal.shop")), "{all:#?}");
    let mut body = all[1..all.len() - 1].to_vec();
    body.sort();
    let n = body.len();
    body.dedup();
    assert_eq!(body.len(), n, "a record repeated");
    let serial: u32 = field(&all[0], 6).parse().unwrap();
    assert_eq!(
        records(&transfer_msgs(s.addr(), &ixfr_query(zone, serial))),
        vec![all[0].clone()]
    );
}

/// The corpus shape `secondary-axfr.Corefile`: the usual server block with
/// `transfer cluster.local { to SECONDARY }` (here the test's own address added to the
/// secondary's). Transfers go through `cache` (before transfer in CoreDNS's order) and
/// are never answered from it (a transfer is a meta reply: response.Typify); over UDP
/// and from elsewhere they are refused; ordinary queries over UDP and TCP answer.
#[test]
fn the_corpus_secondary_shape_transfers_the_cluster_zone_through_the_cache() {
    use testkit::corpus::Corpus;
    let api = FakeApi::with_objects(cluster());
    let up = FakeUpstream::start();
    let s = Corpus::load("secondary-axfr.Corefile")
        .api(&api)
        .upstream(&up)
        .edit("to 192.0.2.53", "to 192.0.2.53 127.0.0.1")
        .start();
    s.wait_for("svc1.testns.svc.cluster.local", Rtype::A);
    let [udp, tcp] = s.both("svc1.testns.svc.cluster.local", Rtype::A);
    for m in [&udp, &tcp] {
        assert_eq!(
            section(m, "answer"),
            ["svc1.testns.svc.cluster.local. 30 IN A 10.96.7.1"]
        );
    }
    let first = records(&transfer_msgs(s.addr(), &axfr_query(ZONE)));
    assert_eq!(field(&first[0], 3), "SOA");
    assert_eq!(first[0], first[first.len() - 1]);
    assert!(
        first
            .iter()
            .any(|r| r == "svc1.testns.svc.cluster.local. 30 IN A 10.96.7.1"),
        "{first:#?}"
    );
    // A change, then a second transfer: the new data, not a cached first message.
    api.add(service("testns", "added", "10.96.7.9", &[("http", 80, "TCP")]));
    // (Asked by a query, its NXDOMAIN would be cached: the transfers are not.)
    wait_until("the new service in a transfer", Duration::from_secs(10), || {
        let again = records(&transfer_msgs(s.addr(), &axfr_query(ZONE)));
        again
            .iter()
            .any(|r| r == "added.testns.svc.cluster.local. 30 IN A 10.96.7.9")
    });
    let r = testkit::wire::raw_udp(s.addr(), &axfr_query(ZONE), Duration::from_secs(2)).expect("a reply");
    assert_eq!(rcode(&Message::from_octets(r).unwrap()), Rcode::REFUSED);
}

/// CoreDNS's `auto` with `transfer` (auto/setup.go, auto/xfr.go): each zone file of the
/// directory transfers as `file`'s do, and is announced by NOTIFY when it loads, a file
/// added later included.
#[test]
fn auto_zones_transfer_and_notify_as_they_load() {
    let secondary = Secondary::new();
    let dir = Scratch::new("xfr-auto");
    dir.write("zones/db.example.org", &db(2024010101, ""));
    let text = format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    transfer {{\n        to 127.0.0.1:{}\n    }}\n    auto {{\n        directory {} db\\.(.*) {{1}}\n        reload 1s\n    }}\n}}\n",
        secondary.port(),
        dir.path("zones").display()
    );
    let s = Launch::new(&text).start();
    assert_eq!(
        secondary.next_notify(Duration::from_secs(10)).as_deref(),
        Some("example.org"),
        "{}",
        s.output()
    );
    let all = records(&transfer_msgs(s.addr(), &axfr_query("example.org.")));
    assert_eq!(all.len(), 12, "{all:#?}");
    assert!(all.iter().any(|r| r == "www.example.org. 3600 IN A 192.0.2.80"));
    // A new file: a new zone, announced once it serves.
    dir.write(
        "zones/db.example.net",
        &db(7, "").replace("example.org.", "example.net."),
    );
    assert_eq!(
        secondary.next_notify(Duration::from_secs(10)).as_deref(),
        Some("example.net"),
        "{}",
        s.output()
    );
    let net = records(&transfer_msgs(s.addr(), &axfr_query("example.net.")));
    assert!(
        net.iter().any(|r| r == "www.example.net. 3600 IN A 192.0.2.80"),
        "{net:#?}"
    );
}
