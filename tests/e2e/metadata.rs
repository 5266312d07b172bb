//! metadata and the kubernetes plugin's labels, seen through log's `{/label}`
//! placeholders of the corpus's `metadata-client-log.Corefile`, over UDP and TCP.

use std::time::Duration;

use domain::base::iana::{Rcode, Rtype};
use testkit::prelude::*;

use testkit::corpus::Corpus;

#[test]
fn log_prints_the_client_pod_and_the_name_s_parts() {
    let mut objects = base_cluster();
    objects.push(pod("team-a", "client-7f9c", "127.0.0.1", "Running"));
    let api = FakeApi::with_objects(objects);
    let upstream = FakeUpstream::start();
    let s = Corpus::load("metadata-client-log.Corefile")
        .api(&api)
        .upstream(&upstream)
        .edit("{type} {name} {rcode}", "{type} {name} {rcode} {/kubernetes/kind}:{/kubernetes/namespace}:{/kubernetes/service}:{/kubernetes/port-name}:{/kubernetes/protocol}:{/nobody/sets-this}")
        .start();
    s.synced();
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
    let s = Corpus::load("metadata-client-log.Corefile")
        .api(&api)
        .upstream(&upstream)
        .edit("    metadata\n", "")
        .start();
    s.synced();
    s.query("web.team-a.svc.cluster.local.", Rtype::A);
    wait_until("the line", Duration::from_secs(3), || {
        s.output()
            .contains("127.0.0.1 -/- A web.team-a.svc.cluster.local. NOERROR")
    });
}
