//! metadata and the kubernetes plugin's labels, seen through log's `{/label}`
//! placeholders of the corpus's `metadata-client-log.Corefile`, over UDP and TCP.

use std::time::Duration;

use domain::base::iana::{Rcode, Rtype};
use testkit::prelude::*;

use super::autopath::localized;

#[test]
fn log_prints_the_client_pod_and_the_name_s_parts() {
    let mut objects = base_cluster();
    objects.push(pod("team-a", "client-7f9c", "127.0.0.1", "Running"));
    let api = FakeApi::with_objects(objects);
    let upstream = FakeUpstream::start();
    let text = localized("metadata-client-log.Corefile", &api, &upstream)
        .replace("{type} {name} {rcode}", "{type} {name} {rcode} {/kubernetes/kind}:{/kubernetes/namespace}:{/kubernetes/service}:{/kubernetes/port-name}:{/kubernetes/protocol}:{/nobody/sets-this}");
    let s = Server::start(&text);
    wait_until("synced", Duration::from_secs(10), || {
        rcode(&s.query("kubernetes.default.svc.cluster.local.", Rtype::A)) == Rcode::NOERROR
    });
    let udp = s.query("web.team-a.svc.cluster.local.", Rtype::A);
    assert_eq!(rcode(&udp), Rcode::NOERROR);
    let tcp = s.query_tcp("_http._tcp.web.team-a.svc.cluster.local.", Rtype::SRV);
    assert_eq!(rcode(&tcp), Rcode::NOERROR);
    s.query("example.org.", Rtype::A);
    // kubernetes README "Metadata": the client's pod; for names of the zone, kind,
    // namespace, service, port-name and protocol (metadata_test.go's cases for
    // `s.ns.svc` and `_http._tcp.s.ns.svc`); an unset label prints `-` (replacer.go).
    for want in [
        "team-a/client-7f9c A web.team-a.svc.cluster.local. NOERROR svc:team-a:web:::-",
        "team-a/client-7f9c SRV _http._tcp.web.team-a.svc.cluster.local. NOERROR svc:team-a:web:http:tcp:-",
        "team-a/client-7f9c A example.org. NOERROR -:-:-:-:-:-",
    ] {
        wait_until(want, Duration::from_secs(3), || s.output().contains(want));
    }
    // A client no pod has: no client labels.
    let other = std::net::UdpSocket::bind("127.0.0.9:0").unwrap();
    other.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    other
        .send_to(
            &query_bytes("web.team-a.svc.cluster.local.", Rtype::A, Some(1232), 3),
            s.addr(),
        )
        .unwrap();
    let mut buf = [0u8; 2048];
    other.recv(&mut buf).expect("reply");
    wait_until("the unknown client's line", Duration::from_secs(3), || {
        s.output()
            .contains("127.0.0.9 -/- A web.team-a.svc.cluster.local. NOERROR svc:team-a:web:::-")
    });
}

#[test]
fn without_metadata_every_label_is_unset() {
    let mut objects = base_cluster();
    objects.push(pod("team-a", "client-7f9c", "127.0.0.1", "Running"));
    let api = FakeApi::with_objects(objects);
    let upstream = FakeUpstream::start();
    let text = localized("metadata-client-log.Corefile", &api, &upstream).replace("    metadata\n", "");
    let s = Server::start(&text);
    wait_until("synced", Duration::from_secs(10), || {
        rcode(&s.query("kubernetes.default.svc.cluster.local.", Rtype::A)) == Rcode::NOERROR
    });
    s.query("web.team-a.svc.cluster.local.", Rtype::A);
    wait_until("the line", Duration::from_secs(3), || {
        s.output()
            .contains("127.0.0.1 -/- A web.team-a.svc.cluster.local. NOERROR")
    });
}

/// Every Corefile of the corpus passes `-check` (the issue: "-check accepts each one").
#[test]
fn check_accepts_every_corpus_corefile() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corefiles");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("Corefile") {
            continue;
        }
        let (code, out, err) = run(&["-check", "-conf", path.to_str().unwrap()], &dir, None);
        assert_eq!(code, 0, "{}: {out}{err}", path.display());
        n += 1;
    }
    assert!(n >= 2, "the corpus has {n} Corefiles");
}
