//! autopath and the kubernetes plugin's client metadata, through the real binary: a
//! pod's resolver emulated over UDP and TCP from the pod's own address (127.0.0.x, the
//! loopback network), the testkit's fake API with pods, the fake upstream.
//!
//! What the issue asks autopath to show: an external name costs 1 query at the server
//! instead of 4; A and AAAA for the same short name, sent together, never split; two
//! pods with one address (one terminating) get no completion. The Corefile is the
//! corpus's `autopath-pods-verified.Corefile`.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};
use testkit::corpus::{Corpus, Running};
use testkit::prelude::*;
use testkit::wire::Client;

/// The search path a pod in team-a gets from the kubelet (ndots:5).
const SEARCH: [&str; 3] = ["team-a.svc.cluster.local.", "svc.cluster.local.", "cluster.local."];

/// The cluster: the base cluster, a dual-stack `both` service in team-a, and the pod
/// `team-a/client` at 127.0.0.1 (where the tests' queries come from).
fn cluster() -> Vec<serde_json::Value> {
    let mut objects = base_cluster();
    let mut both = service("team-a", "both", "10.96.1.2", &[("http", 80, "TCP")]);
    both["spec"]["clusterIPs"] = serde_json::json!(["10.96.1.2", "fd00::1:2"]);
    both["spec"]["ipFamilies"] = serde_json::json!(["IPv4", "IPv6"]);
    objects.push(both);
    objects.push(pod("team-a", "client", "127.0.0.1", "Running"));
    objects
}

/// A server on the corpus Corefile (or, `autopath: false`, the same without autopath).
fn start(api: &FakeApi, upstream: &FakeUpstream, autopath: bool) -> Running {
    start_with_host(api, upstream, autopath, &[])
}

/// [`start`] on a host whose resolv.conf has `search` domains `host_search` (the kubernetes
/// plugin reads them for autopath; a debug build takes the file from
/// `CLUSTERDNS_TEST_RESOLV_CONF`, so the test does not depend on this machine's file).
fn start_with_host(api: &FakeApi, upstream: &FakeUpstream, autopath: bool, host_search: &[&str]) -> Running {
    let dir = Scratch::new("autopath-resolv");
    let mut text = String::from("nameserver 127.0.0.1\n");
    if !host_search.is_empty() {
        text.push_str(&format!("search {}\n", host_search.join(" ")));
    }
    let resolv = dir.write("resolv.conf", &text);
    let mut corpus = Corpus::load("autopath-pods-verified.Corefile")
        .api(api)
        .upstream(upstream)
        .env("CLUSTERDNS_TEST_RESOLV_CONF", resolv.to_str().unwrap())
        // Each query one log line, to count them at the server.
        .edit("    errors\n", "    errors\n    log\n");
    if !autopath {
        corpus = corpus.edit("    autopath @kubernetes\n", "");
    }
    let s = corpus.start();
    s.synced();
    s
}

/// A query for `name` over `client`; the parsed reply.
fn ask(client: &mut Client, name: &str, qtype: Rtype, id: u16) -> Message<Vec<u8>> {
    let reply = client
        .ask(&query_bytes(name, qtype, Some(1232), id))
        .unwrap_or_else(|| panic!("no reply for {name} {qtype}"))
        .to_vec();
    Message::from_octets(reply).unwrap()
}

/// A pod's resolver (ndots:5): `short` with each search domain, then as is, until a
/// reply that is not NXDOMAIN. Returns that reply and how many queries it sent.
fn resolve(client: &mut Client, short: &str, qtype: Rtype) -> (Message<Vec<u8>>, usize) {
    let mut sent = 0;
    for domain in SEARCH.iter().copied().chain(std::iter::once("")) {
        let name = if domain.is_empty() {
            format!("{short}.")
        } else {
            format!("{short}.{domain}")
        };
        sent += 1;
        let r = ask(client, &name, qtype, 0x4000 + sent as u16);
        if rcode(&r) != Rcode::NXDOMAIN || domain.is_empty() {
            return (r, sent);
        }
    }
    unreachable!()
}

#[test]
fn an_external_name_costs_one_query_instead_of_four() {
    let api = FakeApi::with_objects(cluster());
    let upstream = FakeUpstream::start();
    let mut results = Vec::new();
    for autopath in [true, false] {
        let s = start(&api, &upstream, autopath);
        for tcp in [false, true] {
            let name = format!("ext{}{}.example", u8::from(autopath), u8::from(tcp));
            let mut c = Client::new(s.addr(), tcp, Duration::from_secs(3));
            let (r, sent) = resolve(&mut c, &name, Rtype::A);
            assert_eq!(rcode(&r), Rcode::NOERROR, "{name}");
            // Counted at the server: its log line per query received.
            let count = || {
                s.output()
                    .lines()
                    .filter(|l| l.contains("[INFO]") && l.contains(&name))
                    .count()
            };
            wait_until("the queries logged", Duration::from_secs(3), || count() >= sent);
            std::thread::sleep(Duration::from_millis(100));
            let at_server = count();
            results.push((autopath, tcp, sent, at_server, section(&r, "answer")));
        }
    }
    for (autopath, tcp, sent, at_server, answer) in &results {
        let name = format!("ext{}{}.example", u8::from(*autopath), u8::from(*tcp));
        if *autopath {
            // One query: CNAME asked -> found, then the records (CoreDNS's cnamer shape).
            assert_eq!((*sent, *at_server), (1, 1), "tcp {tcp}: {answer:?}");
            assert_eq!(answer.len(), 2, "{answer:?}");
            assert!(
                answer[0].starts_with(&format!("{name}.{} ", SEARCH[0]))
                    && answer[0].ends_with(&format!("CNAME {name}.")),
                "{answer:?}"
            );
            assert!(
                answer[1].starts_with(&format!("{name}. ")) && answer[1].contains(" A 192.0.2.1"),
                "{answer:?}"
            );
        } else {
            assert_eq!((*sent, *at_server), (4, 4), "without autopath, tcp {tcp}");
        }
    }
    // The upstream saw each external name once either way.
    for (autopath, tcp, ..) in &results {
        let name = format!("ext{}{}.example.", u8::from(*autopath), u8::from(*tcp));
        assert_eq!(upstream.count_name(&name), 1, "{name}");
    }
}

/// The host's search domains come after the cluster's (CoreDNS reads the host's
/// resolv.conf too); no plugin can tell whether a name exists under them, so the
/// completion of an external name stops before them (README "Differences") and the
/// client searches on its own: 4 queries, as without autopath.
#[test]
fn host_search_domains_end_the_completion_of_external_names() {
    let api = FakeApi::with_objects(cluster());
    let upstream = FakeUpstream::start();
    let s = start_with_host(&api, &upstream, true, &["corp.example"]);
    let mut c = Client::new(s.addr(), false, Duration::from_secs(3));
    let (r, sent) = resolve(&mut c, "exthost.example", Rtype::A);
    assert_eq!((rcode(&r), sent), (Rcode::NOERROR, 4));
    assert_eq!(section(&r, "answer").len(), 1, "the name as asked, no CNAME");
}

#[test]
fn in_cluster_names_complete_to_the_service_and_count_success() {
    let api = FakeApi::with_objects(cluster());
    let upstream = FakeUpstream::start();
    let s = Corpus::load("autopath-pods-verified.Corefile")
        .api(&api)
        .upstream(&upstream)
        .start();
    s.synced();
    let metrics_port = s.metrics.unwrap();
    upstream.set_mode_for("nothing-here.", Mode::NxDomain);
    for tcp in [false, true] {
        let mut c = Client::new(s.addr(), tcp, Duration::from_secs(3));
        // A service of the client's own namespace: found as asked, no CNAME.
        // (The corpus's kubernetes `ttl 30`.)
        let (r, sent) = resolve(&mut c, "web", Rtype::A);
        assert_eq!(sent, 1);
        assert_eq!(
            section(&r, "answer"),
            ["web.team-a.svc.cluster.local. 30 IN A 10.96.1.1"]
        );
        // Another namespace's: completed to the second element (kubernetes README,
        // "AutoPath"; autopath_test.go's CNAME-then-records shape).
        let (r, sent) = resolve(&mut c, "kubernetes.default", Rtype::A);
        // The CNAME takes the first answer's TTL (cname.go).
        assert_eq!(sent, 1);
        assert_eq!(
            section(&r, "answer"),
            [
                "kubernetes.default.team-a.svc.cluster.local. 30 IN CNAME kubernetes.default.svc.cluster.local.",
                "kubernetes.default.svc.cluster.local. 30 IN A 10.96.0.1",
            ]
        );
        // A name that exists nowhere (the upstream says NXDOMAIN for it too): NXDOMAIN
        // for the name asked, with the client's question.
        let r = ask(&mut c, "nothing-here.team-a.svc.cluster.local.", Rtype::A, 9);
        assert_eq!(rcode(&r), Rcode::NXDOMAIN);
        assert_eq!(
            r.first_question().unwrap().qname().to_string(),
            "nothing-here.team-a.svc.cluster.local"
        );
    }
    let (_, body) = http_get(metrics_port, "/metrics").unwrap();
    let line = body
        .lines()
        .find(|l| l.starts_with("coredns_autopath_success_total{"))
        .unwrap_or_else(|| panic!("no autopath metric:\n{body}"));
    // kubernetes.default twice; nothing-here ended in NXDOMAIN (not counted); web was
    // found as asked (not counted here, unlike CoreDNS: README differences).
    assert!(line.ends_with(" 2"), "{line}");
}

/// The outcome of one reply, for comparing A with AAAA: the rcode and the CNAME target
/// the completion chose (none when not completed).
fn outcome(msg: &[u8]) -> (Rcode, Option<String>) {
    let m = Message::from_octets(msg.to_vec()).unwrap();
    let cname = section(&m, "answer")
        .into_iter()
        .find(|r| r.contains(" CNAME "))
        .map(|r| r.rsplit(' ').next().unwrap_or_default().to_string());
    (rcode(&m), cname)
}

#[test]
fn a_and_aaaa_of_one_short_name_never_split() {
    let api = FakeApi::with_objects(cluster());
    let upstream = FakeUpstream::start();
    let s = start(&api, &upstream, true);
    // Short names as a team-a pod's first query makes them: an external name, a
    // dual-stack and an IPv4-only service in the client's namespace, another
    // namespace's service, a name that exists nowhere.
    let names = [
        "split.example.team-a.svc.cluster.local.",
        "both.team-a.svc.cluster.local.",
        "web.team-a.svc.cluster.local.",
        "kubernetes.default.team-a.svc.cluster.local.",
        "nowhere.team-a.svc.cluster.local.",
    ];
    upstream.set_mode_for("nowhere.", Mode::NxDomain);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(s.addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let rounds = 10_000;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut buf = vec![0u8; 65535];
    let mut splits = Vec::new();
    let mut done = 0;
    for round in 0..rounds {
        if Instant::now() > deadline {
            break;
        }
        let name = names[round % names.len()];
        let id = (round % 30_000) as u16 * 2;
        // Sent together, as a resolver does (glibc's parallel A/AAAA).
        sock.send(&query_bytes(name, Rtype::A, Some(1232), id)).unwrap();
        sock.send(&query_bytes(name, Rtype::AAAA, Some(1232), id + 1)).unwrap();
        let mut got: [Option<(Rcode, Option<String>)>; 2] = [None, None];
        while got.iter().any(Option::is_none) {
            let n = match sock.recv(&mut buf) {
                Ok(n) => n,
                // A timed read is not restarted after a stop/continue of the test
                // process (seen in a loaded run): read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("reply within 2s: {e}"),
            };
            let rid = u16::from_be_bytes([buf[0], buf[1]]);
            if rid == id || rid == id + 1 {
                got[usize::from(rid == id + 1)] = Some(outcome(&buf[..n]));
            }
        }
        let [a, aaaa] = got.map(Option::unwrap);
        // The same rcode and the same completion; NXDOMAIN for one and an answer for
        // the other is the coredns#3765 split.
        if a != aaaa {
            splits.push((name, a, aaaa));
        }
        done += 1;
    }
    assert!(
        splits.is_empty(),
        "{} splits, first: {:?}",
        splits.len(),
        splits.first()
    );
    assert_eq!(done, rounds, "only {done} rounds within the time bound");
}

/// A pod object with `spec.hostNetwork`.
fn host_network_pod(ns: &str, name: &str, ip: &str) -> serde_json::Value {
    let mut p = pod(ns, name, ip, "Running");
    p["spec"]["hostNetwork"] = serde_json::json!(true);
    p
}

#[test]
fn an_address_two_pods_have_completes_nothing() {
    let api = FakeApi::with_objects(cluster());
    let upstream = FakeUpstream::start();
    let s = start(&api, &upstream, true);
    let asked = "kubernetes.default.team-a.svc.cluster.local.";
    let completed = |s: &Running| {
        let r = udp_exchange(s.addr(), &query_bytes(asked, Rtype::A, Some(1232), 7));
        rcode(&r) == Rcode::NOERROR
    };
    wait_until(
        "completion for the one pod at 127.0.0.1",
        Duration::from_secs(5),
        || completed(&s),
    );
    // The address is handed to a pod in another namespace while the first terminates
    // (coredns#2842): two pods have it; whose search path it is, nobody knows.
    api.update("Pod", "team-a", "client", |p| {
        p["metadata"]["deletionTimestamp"] = serde_json::json!("2026-01-01T00:00:00Z");
    });
    api.add(pod("default", "newcomer", "127.0.0.1", "Running"));
    wait_until(
        "no completion while two pods have the address",
        Duration::from_secs(5),
        || !completed(&s),
    );
    for tcp in [false, true] {
        let mut c = Client::new(s.addr(), tcp, Duration::from_secs(3));
        let r = ask(&mut c, asked, Rtype::A, 11);
        assert_eq!(rcode(&r), Rcode::NXDOMAIN, "tcp {tcp}");
        assert!(section(&r, "answer").is_empty());
    }
    // The old pod is gone: the newcomer alone has the address, and its search path is
    // default's: `web.team-a` as its resolver first asks it is completed.
    api.delete("Pod", "team-a", "client");
    wait_until("the newcomer's search path", Duration::from_secs(5), || {
        let r = udp_exchange(
            s.addr(),
            &query_bytes("web.team-a.default.svc.cluster.local.", Rtype::A, Some(1232), 8),
        );
        rcode(&r) == Rcode::NOERROR
    });
    assert!(!completed(&s), "a team-a name is not completed for a default pod");
}

#[test]
fn a_host_network_pod_is_not_completed() {
    let mut objects = cluster();
    objects.push(host_network_pod("kube-system", "node-agent", "127.0.0.2"));
    objects.push(pod("team-a", "second", "127.0.0.3", "Running"));
    let api = FakeApi::with_objects(objects);
    let upstream = FakeUpstream::start();
    let s = start(&api, &upstream, true);
    let from = |ip: &str, name: &str| -> Rcode {
        let sock = UdpSocket::bind(SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        sock.send_to(&query_bytes(name, Rtype::A, Some(1232), 5), s.addr())
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("reply");
        rcode(&Message::from_octets(buf[..n].to_vec()).unwrap())
    };
    // A pod with its own address (127.0.0.3, team-a) is completed...
    assert_eq!(
        from("127.0.0.3", "kubernetes.default.team-a.svc.cluster.local."),
        Rcode::NOERROR
    );
    // ...a host-network pod's address is its node's: not completed with its namespace.
    assert_eq!(
        from("127.0.0.2", "kubernetes.default.kube-system.svc.cluster.local."),
        Rcode::NXDOMAIN
    );
}

/// The example of CoreDNS's kubernetes README, "AutoPath" (`autopath @kubernetes` and
/// `pods verified` in a `cluster.local` block), over UDP and TCP from the pod
/// team-a/client (127.0.0.1).
#[test]
fn the_readmes_example_completes_a_pods_first_query() {
    let api = FakeApi::with_objects(cluster());
    let s = Corpus::load("autopath-docs-example.Corefile").api(&api).start();
    s.synced();
    for (m, via) in s
        .both("kubernetes.default.team-a.svc.cluster.local.", Rtype::A)
        .iter()
        .zip(["udp", "tcp"])
    {
        // autopath README "Description": the first reply that is not NXDOMAIN along the
        // search path, with a CNAME from the asked name to the found one; cname.go gives
        // the CNAME the TTL of the first answer (the kubernetes plugin's default 5);
        // the question is the asked name (autopath_test.go).
        assert_eq!(rcode(m), Rcode::NOERROR, "{via}");
        assert_eq!(
            m.first_question().unwrap().qname().to_string(),
            "kubernetes.default.team-a.svc.cluster.local",
            "{via}"
        );
        assert_eq!(
            section(m, "answer"),
            [
                "kubernetes.default.team-a.svc.cluster.local. 5 IN CNAME kubernetes.default.svc.cluster.local.",
                "kubernetes.default.svc.cluster.local. 5 IN A 10.96.0.1",
            ],
            "{via}"
        );
    }
    // A name found as asked: no CNAME (cnamer adds one only for another owner name).
    for (m, via) in s
        .both("web.team-a.svc.cluster.local.", Rtype::A)
        .iter()
        .zip(["udp", "tcp"])
    {
        assert_eq!(
            section(m, "answer"),
            ["web.team-a.svc.cluster.local. 5 IN A 10.96.1.1"],
            "{via}"
        );
    }
    // kubernetes README "AutoPath": the source address must be the pod's. From an
    // address no pod has, the name is answered as asked: NXDOMAIN.
    let other = UdpSocket::bind("127.0.0.9:0").unwrap();
    other.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    other
        .send_to(
            &query_bytes("kubernetes.default.team-a.svc.cluster.local.", Rtype::A, Some(1232), 5),
            s.addr(),
        )
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = other.recv(&mut buf).expect("reply");
    let m = Message::from_octets(buf[..n].to_vec()).unwrap();
    assert_eq!(rcode(&m), Rcode::NXDOMAIN);
    assert!(section(&m, "answer").is_empty());
}
