//! DNS over TLS through the real binary, both ends: `tls://` server blocks asked by a
//! rustls client (pipelined queries, client certificates, a stalled handshake beside UDP
//! answers), `kdig +tls`, and `forward . tls://` to a TLS upstream made in the test. The
//! certificates come from a CA the test makes (testkit::tls::Pki).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};

use testkit::prelude::*;
use testkit::tls::{DotClient, Pair, Pki, TlsFront, server_config};

/// Records the hosts plugin answers in the DoT block.
const HOSTS: &str = "        192.0.2.53 a.example.org\n        192.0.2.54 b.example.org\n";

/// A server with a plain block on `{port}` (for readiness and UDP answers) and a
/// `tls://` block on `dot` with these `tls` lines.
fn dot_server(dot: u16, tls: &str) -> Server {
    Server::start(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    hosts {{\n{HOSTS}    }}\n}}\n\
         tls://.:{dot} {{\n    bind 127.0.0.1\n    {tls}\n    hosts {{\n{HOSTS}    }}\n}}\n"
    ))
}

fn dot_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn parse(reply: Vec<u8>) -> Message<Vec<u8>> {
    Message::from_octets(reply).expect("reply parses")
}

/// Whether a DoT query for a.example.org gets its answer with this client configuration.
fn answered(port: u16, config: std::sync::Arc<rustls::ClientConfig>) -> bool {
    let Ok(mut c) = DotClient::connect(dot_addr(port), "dns.example.test", config) else {
        return false;
    };
    // TLS 1.3: the client's handshake ends before the server has checked the client's
    // certificate, so a refusal shows on the first read.
    c.ask(&query_bytes("a.example.org", Rtype::A, Some(1232), 7))
        .is_ok_and(|r| section(&parse(r), "answer") == ["a.example.org. 3600 IN A 192.0.2.53"])
}

#[test]
fn dot_answers_pipelined_queries_on_one_connection() {
    let dir = Scratch::new("dot");
    let pki = Pki::new(&dir.0, "dot");
    let leaf = pki.leaf("server", &["dns.example.test"]);
    let [dot, metrics] = testkit::process::free_ports::<2>();
    let s = dot_server(
        dot,
        &format!(
            "tls {} {}\n    prometheus 127.0.0.1:{metrics}",
            leaf.cert.display(),
            leaf.key.display()
        ),
    );
    let mut c = DotClient::connect(dot_addr(dot), "dns.example.test", pki.client_config(None)).unwrap();
    // Eight queries written before any reply is read (RFC 7766 section 6.2.1.1): each
    // answered, matched by its ID, over the one connection.
    for id in 0..8u16 {
        let name = if id.is_multiple_of(2) {
            "a.example.org"
        } else {
            "b.example.org"
        };
        c.send(&query_bytes(name, Rtype::A, Some(1232), 100 + id)).unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..8 {
        let r = parse(c.recv().unwrap());
        let id = r.header().id();
        let want = if id.is_multiple_of(2) {
            "a.example.org. 3600 IN A 192.0.2.53"
        } else {
            "b.example.org. 3600 IN A 192.0.2.54"
        };
        assert_eq!(rcode(&r), Rcode::NOERROR);
        assert_eq!(section(&r, "answer"), [want]);
        seen.push(id);
    }
    seen.sort_unstable();
    assert_eq!(seen, (100..108).collect::<Vec<u16>>());
    // The DoT port has no UDP (RFC 7858 is TCP only; CoreDNS opens none either)...
    assert!(
        testkit::wire::raw_udp(
            dot_addr(dot),
            &query_bytes("a.example.org", Rtype::A, None, 9),
            Duration::from_millis(300)
        )
        .is_none()
    );
    // ... and plain DNS over TCP on it is no DoT: the server waits for a ClientHello.
    let mut plain = TcpStream::connect(dot_addr(dot)).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write_frame(&mut plain, &query_bytes("a.example.org", Rtype::A, None, 9));
    assert!(
        read_frame(&mut plain).is_none(),
        "a plain query on the DoT port got a DNS reply"
    );
    // Counted under the TLS listener, over TCP (CoreDNS: server "tls://...", proto tcp).
    let (_, body) = http_get(metrics, "/metrics").unwrap();
    let line = format!(
        "coredns_dns_requests_total{{server=\"tls://127.0.0.1:{dot}\",zone=\".\",view=\"\",proto=\"tcp\",family=\"1\",type=\"A\"}} 8"
    );
    assert!(body.lines().any(|l| l == line), "no {line} in\n{body}");
    // The start-up banner names the scheme, as CoreDNS's does.
    assert!(s.wait_output(Duration::from_secs(2), |o| o.contains(&format!("tls://.:{dot}"))));
}

#[test]
fn client_auth_require_refuses_a_client_without_a_certificate() {
    let dir = Scratch::new("dot-auth");
    let pki = Pki::new(&dir.0, "dot");
    let leaf = pki.leaf("server", &["dns.example.test"]);
    let client = pki.leaf("client", &["client.example.test"]);
    // A certificate from a CA the server does not know.
    let other = Pki::new(&dir.0, "other");
    let stranger: Pair = other.leaf("stranger", &["client.example.test"]);
    let [p1, p2] = testkit::process::free_ports::<2>();
    let tls = |auth: &str| {
        format!(
            "tls {} {} {} {{\n        client_auth {auth}\n    }}",
            leaf.cert.display(),
            leaf.key.display(),
            pki.ca.display()
        )
    };
    // `require` (Go's RequireAnyClientCert, CoreDNS plugin/tls README): a certificate
    // must come, any certificate.
    let _s1 = dot_server(p1, &tls("require"));
    assert!(
        !answered(p1, pki.client_config(None)),
        "require let a client without a certificate in"
    );
    assert!(answered(p1, pki.client_config(Some(&client))));
    assert!(answered(p1, client_with(&pki, &stranger)), "require checks no CA");
    // `require_and_verify`: the certificate must chain to the CA.
    let _s2 = dot_server(p2, &tls("require_and_verify"));
    assert!(
        !answered(p2, client_with(&pki, &stranger)),
        "a certificate from another CA was accepted"
    );
    assert!(!answered(p2, pki.client_config(None)));
    assert!(answered(p2, pki.client_config(Some(&client))));
}

/// A client trusting `pki`'s CA (the server's) that presents `cert`.
fn client_with(pki: &Pki, cert: &Pair) -> std::sync::Arc<rustls::ClientConfig> {
    testkit::tls::client_config(&pki.ca, Some(cert))
}

#[test]
fn a_stalled_handshake_neither_holds_udp_answers_nor_stays_open() {
    let dir = Scratch::new("dot-stall");
    let pki = Pki::new(&dir.0, "dot");
    let leaf = pki.leaf("server", &["dns.example.test"]);
    let dot = free_port();
    let s = Server::start(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    hosts {{\n{HOSTS}    }}\n}}\n\
         tls://.:{dot} {{\n    bind 127.0.0.1\n    timeouts {{\n        read 1s\n    }}\n    \
         tls {} {}\n    hosts {{\n{HOSTS}    }}\n}}\n",
        leaf.cert.display(),
        leaf.key.display()
    ));
    // Connections that start a handshake and stop: half a ClientHello record header,
    // then nothing, on every worker.
    let mut stalled: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut t = TcpStream::connect(dot_addr(dot)).unwrap();
            t.write_all(&[0x16, 0x03, 0x01]).unwrap();
            t
        })
        .collect();
    // UDP answers meanwhile, as fast as ever.
    for i in 0..50 {
        let t = Instant::now();
        let r = s.query(if i % 2 == 0 { "a.example.org" } else { "b.example.org" }, Rtype::A);
        assert_eq!(rcode(&r), Rcode::NOERROR);
        assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
    }
    // A DoT client gets its answer beside them.
    assert!(answered(dot, pki.client_config(None)));
    // The stalled handshakes are closed after the read timeout (1 s; the sweep runs
    // every 100 ms).
    let t = Instant::now();
    for c in &mut stalled {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // At most an alert (the close), then the end of the stream.
        let mut got = Vec::new();
        let r = std::io::Read::read_to_end(c, &mut got);
        assert!(r.is_ok() && got.len() < 64, "{r:?}, {} bytes", got.len());
    }
    assert!(t.elapsed() < Duration::from_secs(3), "closed after {:?}", t.elapsed());
}

#[test]
#[ignore = "needs kdig"]
fn kdig_asks_over_tls() {
    testkit::tools::require_kdig();
    let dir = Scratch::new("dot-kdig");
    let pki = Pki::new(&dir.0, "dot");
    let leaf = pki.leaf("server", &["dns.example.test"]);
    let dot = free_port();
    let _s = dot_server(dot, &format!("tls {} {}", leaf.cert.display(), leaf.key.display()));
    let out = testkit::tools::kdig(&[
        "@127.0.0.1",
        "-p",
        &dot.to_string(),
        "+tls",
        &format!("+tls-ca={}", pki.ca.display()),
        "+tls-hostname=dns.example.test",
        "+noall",
        "+answer",
        "a.example.org",
        "A",
    ]);
    let answers: Vec<&str> = out
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .collect();
    assert_eq!(answers.len(), 1, "{out}");
    let fields: Vec<&str> = answers[0].split_whitespace().collect();
    assert_eq!(fields, ["a.example.org.", "3600", "IN", "A", "192.0.2.53"], "{out}");
}

/// A FakeUpstream behind a TLS front whose certificate names `names`.
fn tls_upstream(pki: &Pki, names: &[&str]) -> (FakeUpstream, TlsFront) {
    let up = FakeUpstream::start();
    let leaf = pki.leaf("upstream", names);
    let front = TlsFront::start(server_config(&leaf), up.addr());
    (up, front)
}

#[test]
fn forward_over_tls_reuses_its_connection() {
    let dir = Scratch::new("fwd-tls");
    let pki = Pki::new(&dir.0, "up");
    let (up, front) = tls_upstream(&pki, &["dns.upstream.test"]);
    let s = Server::start(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    forward . tls://{} {{\n        tls {}\n        \
         tls_servername dns.upstream.test\n    }}\n}}\n",
        front.addr(),
        pki.ca.display()
    ));
    for i in 0..20 {
        let name = format!("n{i}.example.com");
        let r = s.query(&name, Rtype::A);
        assert_eq!(rcode(&r), Rcode::NOERROR);
        assert_eq!(section(&r, "answer"), [format!("{name}. 60 IN A 192.0.2.1")]);
        let r = s.query_tcp(&name, Rtype::AAAA);
        assert_eq!(rcode(&r), Rcode::NOERROR);
    }
    // Every query went over TLS (the front relays to the fake over TCP) ...
    assert!(up.count("n19.example.com", Rtype::A, Proto::Tcp) >= 1);
    // ... on connections that were reused: one per worker at most, plus the one
    // readiness probe, not one per query.
    assert!(
        front.accepted() <= 4,
        "{} TLS connections for 40 queries",
        front.accepted()
    );
}

#[test]
fn forward_over_tls_with_the_wrong_server_name_fails() {
    let dir = Scratch::new("fwd-tls-name");
    let pki = Pki::new(&dir.0, "up");
    let (up, front) = tls_upstream(&pki, &["dns.upstream.test"]);
    let s = Launch::new(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    hosts {{\n        192.0.2.9 ready.test\n        fallthrough\n    }}\n    \
         forward . tls://{} {{\n        tls {}\n        tls_servername other.upstream.test\n    }}\n}}\n",
        front.addr(),
        pki.ca.display()
    ))
    .start();
    // CoreDNS: the handshake fails, every try fails, SERVFAIL.
    let r = s.query("x.example.com", Rtype::A);
    assert_eq!(rcode(&r), Rcode::SERVFAIL);
    assert_eq!(up.count_name("x.example.com"), 0);
    // The certificate's own name (`tls://IP%NAME`) works.
    drop(s);
    let s = Server::start(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    forward . tls://{}%dns.upstream.test:{} {{\n        tls {}\n    }}\n}}\n",
        front.addr().ip(),
        front.addr().port(),
        pki.ca.display()
    ));
    let r = s.query("y.example.com", Rtype::A);
    assert_eq!(section(&r, "answer"), ["y.example.com. 60 IN A 192.0.2.1"]);
}

/// The corpus's OpenShift shape with TLS upstreams: its forwards reach two TLS fronts
/// (one per server of the file) whose certificates a test CA signed, trusted as the
/// system's (SSL_CERT_FILE: the file gives no CA, as the operator writes it without a
/// caBundle), checked against the file's tls_servername.
#[test]
fn the_openshift_tls_shape_forwards_over_tls_and_serves_the_cluster() {
    let dir = Scratch::new("openshift-tls");
    let pki = Pki::new(&dir.0, "corp");
    let up = FakeUpstream::start();
    let resolvers = TlsFront::start(
        server_config(&pki.leaf("resolver", &["resolver.example.test"])),
        up.addr(),
    );
    let corp = TlsFront::start(server_config(&pki.leaf("corp", &["dns.corp.example.test"])), up.addr());
    let mut objects = vec![namespace("default")];
    objects.push(service("default", "web", "10.96.0.10", &[("http", 80, "TCP")]));
    let api = FakeApi::with_objects(objects);
    let (r, c) = (format!("tls://{}", resolvers.addr()), format!("tls://{}", corp.addr()));
    let s = testkit::corpus::Corpus::load("openshift-tls-upstream.Corefile")
        .api(&api)
        .forward_to("tls://192.0.2.53:853", &r)
        .forward_to("tls://192.0.2.54:853", &r)
        .forward_to("tls://198.51.100.20", &c)
        .forward_to("tls://198.51.100.21", &c)
        // Without the file's caches: a record's TTL would count down between the passes.
        .edit("    cache 900 {\n        denial 9984 30\n    }\n", "")
        .env("SSL_CERT_FILE", pki.ca.to_str().unwrap())
        .start();
    s.wait_for("web.default.svc.cluster.local", Rtype::A);
    for tcp in [false, true] {
        let q = |name: &str, t: Rtype| if tcp { s.query_tcp(name, t) } else { s.query(name, t) };
        let m = q("web.default.svc.cluster.local", Rtype::A);
        assert_eq!(
            section(&m, "answer"),
            ["web.default.svc.cluster.local. 5 IN A 10.96.0.10"]
        );
        // Outside the cluster: over TLS to the resolvers (policy sequential: the first).
        let name = format!("www{tcp}.example.com");
        let m = q(&name, Rtype::A);
        assert_eq!(rcode(&m), Rcode::NOERROR);
        assert_eq!(section(&m, "answer"), [format!("{name}. 60 IN A 192.0.2.1")]);
        // The corporate zone: over TLS to its own resolvers.
        let name = format!("intranet{tcp}.corp.example.test");
        let m = q(&name, Rtype::A);
        assert_eq!(section(&m, "answer"), [format!("{name}. 60 IN A 192.0.2.1")]);
        // A Service's address, reversed: the cluster answers.
        let m = q("10.0.96.10.in-addr.arpa", Rtype::PTR);
        assert_eq!(
            section(&m, "answer"),
            ["10.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."]
        );
        // One the cluster does not know falls through to the resolvers (the file's
        // `fallthrough in-addr.arpa ip6.arpa`), over TLS.
        let name = format!("{}.9.9.10.in-addr.arpa", u8::from(tcp));
        let m = q(&name, Rtype::PTR);
        assert_eq!(rcode(&m), Rcode::NOERROR);
        assert_eq!(up.count(&name, Rtype::PTR, Proto::Tcp), 1);
    }
    // Both servers' upstreams were reached over TLS only: the fronts accepted their
    // connections and relayed every question (over TCP) to the fake.
    assert!(resolvers.accepted() >= 1 && corp.accepted() >= 1);
    assert_eq!(up.count("wwwfalse.example.com", Rtype::A, Proto::Udp), 0);
    assert_eq!(up.count("wwwfalse.example.com", Rtype::A, Proto::Tcp), 1);
    assert_eq!(up.count("intranettrue.corp.example.test", Rtype::A, Proto::Tcp), 1);
}

/// `-check`'s errors for TLS blocks (each with its line): CoreDNS would serve a
/// `tls://` block without *tls* unencrypted and ignore *tls* in a plain block;
/// clusterdns refuses both (src/plugin/tls/README.md, "Differences from CoreDNS").
#[test]
fn check_names_what_is_wrong_with_a_tls_block() {
    let dir = Scratch::new("dot-check");
    let pki = Pki::new(&dir.0, "check");
    let leaf = pki.leaf("cert", &["dns.example.test"]);
    let other = pki.leaf("other", &["other.example.test"]);
    let (cert, key) = (leaf.cert.display().to_string(), leaf.key.display().to_string());
    let cases = [
        (
            "tls://.:8853 {\n    whoami\n}\n".to_string(),
            "stdin:1 - Error during parsing: a tls:// server block needs the tls plugin (tls CERT KEY [CA])"
                .to_string(),
        ),
        (
            format!(".:8853 {{\n    tls {cert} {key}\n    whoami\n}}\n"),
            "stdin:2 - tls: only a tls:// server block can use it (this block serves plain DNS)".into(),
        ),
        (
            format!("tls://.:8853 {{\n    tls {cert} {key}\n    whoami\n}}\nexample.org:8853 {{\n    whoami\n}}\n"),
            "stdin:5 - cannot serve dns://example.org.:8853 - the address is already served by tls://".into(),
        ),
        (
            "tls://.:8853 {\n    tls missing.pem key.pem\n    whoami\n}\n".into(),
            format!(
                "stdin:2 - tls: could not load TLS cert: error reading {}/missing.pem: No such file or directory (os error 2)",
                dir.0.display()
            ),
        ),
        (
            // A key that is not the certificate's.
            format!(
                "tls://.:8853 {{\n    tls {cert} {}\n    whoami\n}}\n",
                other.key.display()
            ),
            "stdin:2 - tls: could not load TLS cert: the private key does not match the certificate".into(),
        ),
        (
            format!("tls://.:8853 {{\n    tls {cert} {key} {cert}-nope\n    whoami\n}}\n"),
            String::new(),
        ),
    ];
    for (corefile, want) in cases {
        let (code, out, err) = run(&["-check", "-conf", "stdin"], &dir.0, Some(&corefile));
        if want.is_empty() {
            // A CA file is read only for client_auth verify_if_given|require_and_verify.
            assert!(code == 0 && out.ends_with("OK\n"), "{corefile}\n{out}{err}");
            continue;
        }
        assert_eq!(code, 1, "{corefile}\n{out}");
        assert_eq!(err.trim_end(), want, "{corefile}");
    }
    // The same CA file when it is read: a file with no certificate in it.
    let corefile = format!(
        "tls://.:8853 {{\n    tls {cert} {key} {key} {{\n        client_auth require_and_verify\n    }}\n    whoami\n}}\n"
    );
    let (code, _, err) = run(&["-check", "-conf", "stdin"], &dir.0, Some(&corefile));
    assert_eq!(code, 1);
    assert_eq!(
        err.trim_end(),
        format!("stdin:2 - tls: could not read root certs: none in {key}")
    );
}

/// A reload that turns a plain address into a DoT one and back: its UDP socket goes and
/// comes back, TCP serves TLS, then plain DNS again; the other address never stops.
#[test]
fn a_reload_switches_an_address_between_plain_dns_and_tls() {
    let dir = Scratch::new("dot-reload");
    let pki = Pki::new(&dir.0, "dot");
    let leaf = pki.leaf("server", &["dns.example.test"]);
    let other = free_port();
    let plain = format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    hosts {{\n{HOSTS}    }}\n}}\n.:{other} {{\n    bind 127.0.0.1\n    hosts {{\n{HOSTS}    }}\n}}\n"
    );
    let tls = format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    hosts {{\n{HOSTS}    }}\n}}\ntls://.:{other} {{\n    bind 127.0.0.1\n    tls {} {}\n    hosts {{\n{HOSTS}    }}\n}}\n",
        leaf.cert.display(),
        leaf.key.display()
    );
    let s = Server::start(&plain);
    let q = query_bytes("a.example.org", Rtype::A, Some(1232), 3);
    let udp_answers = || testkit::wire::raw_udp(dot_addr(other), &q, Duration::from_millis(300)).is_some();
    assert!(udp_answers());
    s.rewrite_corefile(&tls);
    s.signal(libc::SIGUSR1);
    wait_until("DoT on the reloaded address", Duration::from_secs(10), || {
        answered(other, pki.client_config(None))
    });
    assert!(!udp_answers(), "the TLS address still answers over UDP");
    assert_eq!(rcode(&s.query("a.example.org", Rtype::A)), Rcode::NOERROR);
    s.rewrite_corefile(&plain);
    s.signal(libc::SIGUSR1);
    wait_until("plain DNS on the address again", Duration::from_secs(10), udp_answers);
    let r = tcp_exchange(dot_addr(other), &q);
    assert_eq!(section(&r, "answer"), ["a.example.org. 3600 IN A 192.0.2.53"]);
}
