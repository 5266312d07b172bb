//! Behaviour tables: each expected answer is CoreDNS's, traced to the test or README
//! that pins it (`plugin/k8s_external/external_test.go` `tests`, `apex_test.go`
//! `testsApex`, `setup_test.go`), over the same cluster as those tests: namespace
//! `testns`; `svc1` (externalIPs 1.2.3.4), `svc6` (1:2::5), `svc11` (a load balancer
//! at 2.3.4.5), `svc12` (a load balancer known as `dummy.hostname`), each with port
//! `http/tcp/80`; `svc-headless` with endpoints `endpoint-svc-0` (1.2.3.4) and
//! `endpoint-svc-1` (1.2.3.5).

use std::sync::Arc;

use arc_swap::ArcSwap;
use domain::base::Message;
use domain::rdata::AllRecordData;

use super::*;
use crate::dns::{Request, Response, Transport};
use crate::kubernetes::model::{Endpoint, EndpointSlice, ExternalIp, Namespace, Object, Port, Service, ServiceKind};
use crate::kubernetes::snapshot::{ClusterStore, StoreOptions};
use crate::plugin::kubernetes::Exported;

fn ctx_for(zones: &[Zone]) -> SetupCtx<'static> {
    SetupCtx {
        zones: Box::leak(zones.to_vec().into_boxed_slice()),
        config_dir: "/".into(),
        workers: 1,
        binds: None,
        process: Box::leak(Box::new(crate::process::ProcessState::new())),
    }
}

/// Parses `text` (one server block) and sets up its `k8s_external` lines.
fn parse(text: &str) -> Result<Options, String> {
    let parsed = crate::config::parse_str(text, "Corefile", std::path::Path::new("/")).map_err(|e| format!("{e:?}"))?;
    let b = &parsed.blocks[0];
    let dirs: Vec<&Directive> = b
        .directives
        .iter()
        .filter(|d| d.name.as_str() == "k8s_external")
        .collect();
    let ctx = ctx_for(&[Zone::new("example.org.").unwrap()]);
    setup::parse(&dirs, &ctx).map_err(|e| e.to_string())
}

/// `setup_test.go` `TestSetup`, and the errors of `setup.go` `parse`.
#[test]
fn setup_table() {
    let o = parse("example.org {\n k8s_external\n}\n").unwrap();
    assert_eq!(o.zones[0].as_str(), "example.org.", "the block's zones by default");
    assert_eq!(&*o.apex, b"\x03dns");
    assert_eq!(o.ttl, 5, "README: the default is 5 (seconds)");
    assert!(!o.headless && o.fallthrough.is_none());
    let o = parse(". {\n k8s_external example.org {\n apex testdns\n }\n}\n").unwrap();
    assert_eq!((o.zones[0].as_str(), &*o.apex), ("example.org.", &b"\x07testdns"[..]));
    assert!(
        parse(". {\n k8s_external example.org {\n headless\n }\n}\n")
            .unwrap()
            .headless
    );
    let o = parse(". {\n k8s_external example.org {\n fallthrough\n }\n}\n").unwrap();
    assert_eq!(o.fallthrough.unwrap()[0].as_str(), ".");
    let o = parse(". {\n k8s_external example.org {\n fallthrough ip6.arpa inaddr.arpa foo.com\n }\n}\n").unwrap();
    let ft: Vec<&str> = o.fallthrough.as_ref().unwrap().iter().map(|z| z.as_str()).collect();
    assert_eq!(ft, ["ip6.arpa.", "inaddr.arpa.", "foo.com."]);
    assert_eq!(
        parse(". {\n k8s_external a.org {\n ttl 3600\n }\n}\n").unwrap().ttl,
        3600
    );
    // A CIDR stands for its reverse zones, as zone arguments everywhere.
    let o = parse(". {\n k8s_external example.org 10.0.0.0/8\n}\n").unwrap();
    assert!(o.zones.iter().any(|z| z.as_str() == "10.in-addr.arpa."));
    for (text, want) in [
        (
            ". {\n k8s_external a.org {\n ttl 3601\n }\n}\n",
            "Corefile:3 - k8s_external: ttl must be in range [0, 3600]: 3601",
        ),
        (
            ". {\n k8s_external a.org {\n ttl -1\n }\n}\n",
            "Corefile:3 - k8s_external: ttl must be in range [0, 3600]: -1",
        ),
        (
            ". {\n k8s_external a.org {\n ttl five\n }\n}\n",
            "Corefile:3 - k8s_external: strconv.Atoi: parsing \"five\": invalid syntax",
        ),
        (
            ". {\n k8s_external a.org {\n ttl\n }\n}\n",
            "Corefile:3 - k8s_external: Wrong argument count or unexpected line ending after 'ttl'",
        ),
        (
            ". {\n k8s_external a.org {\n apex\n }\n}\n",
            "Corefile:3 - k8s_external: Wrong argument count or unexpected line ending after 'apex'",
        ),
        (
            ". {\n k8s_external a.org {\n bogus\n }\n}\n",
            "Corefile:3 - k8s_external: unknown property 'bogus'",
        ),
        (
            ". {\n k8s_external a..org\n}\n",
            "Corefile:2 - k8s_external: invalid zone 'a..org'",
        ),
    ] {
        assert_eq!(parse(text).unwrap_err(), want, "{text}");
    }
}

fn http() -> Vec<Port> {
    vec![Port {
        name: "http".into(),
        protocol: "tcp".into(),
        port: 80,
    }]
}

fn svc(name: &str, kind: ServiceKind, cluster: &[&str], external: Vec<ExternalIp>) -> Object {
    Object::Service(Service {
        namespace: "testns".into(),
        name: name.into(),
        resource_version: "1".into(),
        kind,
        cluster_ips: cluster.iter().map(|i| i.parse().unwrap()).collect(),
        external_name: "".into(),
        external_ips: external,
        ports: http(),
    })
}

fn ip(s: &str) -> ExternalIp {
    ExternalIp::Addr(s.parse().unwrap())
}

/// The cluster of CoreDNS's `external_test.go` (`svcIndexExternal`, `epIndexExternal`).
fn coredns_cluster() -> ClusterStore {
    let mut st = ClusterStore::new(StoreOptions::default(), vec![]);
    st.upsert(Object::Namespace(Namespace { name: "testns".into() }));
    st.upsert(svc("svc1", ServiceKind::ClusterIp, &["10.0.0.1"], vec![ip("1.2.3.4")]));
    st.upsert(svc("svc6", ServiceKind::ClusterIp, &["10.0.0.3"], vec![ip("1:2::5")]));
    st.upsert(svc("svc11", ServiceKind::ClusterIp, &["10.0.0.3"], vec![ip("2.3.4.5")]));
    st.upsert(svc(
        "svc12",
        ServiceKind::ClusterIp,
        &["10.0.0.3"],
        vec![ExternalIp::Host("dummy.hostname".into())],
    ));
    st.upsert(svc("svc-headless", ServiceKind::Headless, &[], vec![]));
    let ep = |a: &str, h: &str| Endpoint {
        addresses: vec![(a.parse().unwrap(), a.into())],
        hostname: Some(h.into()),
        pod_name: None,
        node_name: None,
    };
    st.upsert(Object::EndpointSlice(EndpointSlice {
        namespace: "testns".into(),
        name: "svc-headless-1".into(),
        resource_version: "1".into(),
        service: "svc-headless".into(),
        endpoints: vec![ep("1.2.3.4", "endpoint-svc-0"), ep("1.2.3.5", "endpoint-svc-1")],
        ports: http(),
        last_change_trigger: None,
    }));
    st
}

fn kube(store: &ClusterStore, local: &[&str]) -> Arc<Exported> {
    let parsed = crate::config::parse_str(
        "cluster.local {\n kubernetes\n}\n",
        "Corefile",
        std::path::Path::new("/"),
    )
    .unwrap();
    let ctx = ctx_for(&[Zone::new("cluster.local.").unwrap()]);
    let mut opts = crate::plugin::kubernetes::setup::parse(&parsed.blocks[0].directives[0], &ctx).unwrap();
    opts.local_ips = local.iter().map(|a| a.parse().unwrap()).collect();
    let mut snap = store.snapshot();
    snap.synced = true;
    Arc::new(Exported {
        snapshot: Arc::new(ArcSwap::from_pointee(snap)),
        opts,
    })
}

fn plugin(corefile: &str, store: &ClusterStore, local: &[&str]) -> External {
    External::new(parse(corefile).unwrap()).with_kubernetes(kube(store, local))
}

/// What one query got: rcode, AA, and each section as sorted `owner TTL TYPE rdata`
/// lines (CoreDNS's `test.SortAndCheck` compares sections sorted), or `next` when the
/// query went on to the next plugin.
#[derive(Debug, PartialEq)]
struct Got {
    rcode: String,
    answer: Vec<String>,
    ns: Vec<String>,
    extra: Vec<String>,
}

fn ask(p: &External, name: &str, qtype: u16) -> Option<Got> {
    let raw = crate::dns::QueryBuilder::new(&crate::dns::wire::name_from_str(name).unwrap(), qtype).to_vec();
    let msg = crate::chain::testing::with_query(
        &raw,
        "127.0.0.1:1".parse().unwrap(),
        crate::chain::Metadata::NONE,
        |q| {
            match p.serve(q) {
                Step::Answered => {}
                Step::Next => return None,
                // A load balancer's host name is looked up through the server; here the
                // lookup fails, as in CoreDNS's tests: the CNAME alone.
                Step::Upstream(_) => {
                    assert!(matches!(
                        p.resume(q, crate::chain::UpstreamReply::Timeout, 0),
                        Step::Answered
                    ));
                }
                other => panic!("{name}: {other:?}"),
            }
            Some(q.resp.finish().to_vec())
        },
    )?;
    let m = Message::from_octets(msg).unwrap();
    assert!(m.header().aa(), "{name}: authoritative");
    let lines = |sec: domain::base::message::RecordSection<'_, Vec<u8>>| {
        let mut v: Vec<String> = sec
            .limit_to::<AllRecordData<_, _>>()
            .map(|r| {
                let r = r.unwrap();
                // Owners and SRV targets as `domain` prints them lack the final dot.
                let mut data = r.data().to_string();
                if r.rtype() == domain::base::iana::Rtype::SRV && !data.ends_with('.') {
                    data.push('.');
                }
                format!("{}. {} {} {data}", r.owner(), r.ttl().as_secs(), r.rtype())
            })
            .collect();
        v.sort();
        v
    };
    Some(Got {
        rcode: m.header().rcode().to_string(),
        answer: lines(m.answer().unwrap()),
        ns: lines(m.authority().unwrap()),
        extra: lines(m.additional().unwrap()),
    })
}

fn got(rcode: &str, answer: &[&str], ns: &[&str], extra: &[&str]) -> Option<Got> {
    let v = |s: &[&str]| {
        let mut v: Vec<String> = s.iter().map(|x| x.to_string()).collect();
        v.sort();
        v
    };
    Some(Got {
        rcode: rcode.into(),
        answer: v(answer),
        ns: v(ns),
        extra: v(extra),
    })
}

/// The zone's SOA as this cluster has it: the serial is the Unix time of the last
/// change to a service with external addresses (CoreDNS `ExternalSerial`).
fn soa(p: &External, zone: &str) -> String {
    let serial = p.kubernetes.get().unwrap().snapshot.load().external_serial;
    format!("{zone} 5 SOA ns1.dns.{zone} hostmaster.dns.{zone} {serial} 7200 1800 86400 5")
}

/// `external_test.go` `tests`, case by case, with its zones (`example.com.`,
/// `in-addr.arpa.`) and `headless`.
#[test]
fn coredns_external_table() {
    use crate::dns::rtype::{A, AAAA, PTR, SOA, SRV};
    let st = coredns_cluster();
    let p = plugin(
        ". {\n k8s_external example.com in-addr.arpa {\n headless\n }\n}\n",
        &st,
        &["127.0.0.1"],
    );
    let z = "example.com.";
    let soa = soa(&p, z);
    let s = soa.as_str();
    let rsoa = self::soa(&p, "in-addr.arpa.");
    let cases: Vec<(&str, u16, Option<Got>)> = vec![
        // "PTR reverse lookup": the service with that external address, named under
        // the first zone.
        (
            "4.3.2.1.in-addr.arpa.",
            PTR,
            got(
                "NOERROR",
                &["4.3.2.1.in-addr.arpa. 5 PTR svc1.testns.example.com."],
                &[],
                &[],
            ),
        ),
        // An address no service has outside: NXDOMAIN.
        (
            "9.9.9.9.in-addr.arpa.",
            PTR,
            got("NXDOMAIN", &[], &[rsoa.as_str()], &[]),
        ),
        // "Bad PTR reverse lookup using existing service name": NODATA.
        ("svc1.testns.example.com.", PTR, got("NOERROR", &[], &[s], &[])),
        // "... non-existing service name": NXDOMAIN.
        ("not-existing.testns.example.com.", PTR, got("NXDOMAIN", &[], &[s], &[])),
        // "A Service".
        (
            "svc1.testns.example.com.",
            A,
            got("NOERROR", &["svc1.testns.example.com. 5 A 1.2.3.4"], &[], &[]),
        ),
        (
            "svc1.testns.example.com.",
            SRV,
            got(
                "NOERROR",
                &["svc1.testns.example.com. 5 SRV 0 100 80 svc1.testns.example.com."],
                &[],
                &["svc1.testns.example.com. 5 A 1.2.3.4"],
            ),
        ),
        // "SRV Service Not udp/tcp": no wildcard, no match: NXDOMAIN.
        (
            "*._not-udp-or-tcp.svc1.testns.example.com.",
            SRV,
            got("NXDOMAIN", &[], &[s], &[]),
        ),
        // "SRV Service".
        (
            "_http._tcp.svc1.testns.example.com.",
            SRV,
            got(
                "NOERROR",
                &["_http._tcp.svc1.testns.example.com. 5 SRV 0 100 80 svc1.testns.example.com."],
                &[],
                &["svc1.testns.example.com. 5 A 1.2.3.4"],
            ),
        ),
        // "AAAA Service (with an existing A record, but no AAAA record)": NODATA.
        ("svc1.testns.example.com.", AAAA, got("NOERROR", &[], &[s], &[])),
        // "AAAA/A Service (non-existing service)", "(non-existing namespace)".
        ("svc0.testns.example.com.", AAAA, got("NXDOMAIN", &[], &[s], &[])),
        ("svc0.testns.example.com.", A, got("NXDOMAIN", &[], &[s], &[])),
        ("svc0.svc-nons.example.com.", A, got("NXDOMAIN", &[], &[s], &[])),
        // "AAAA Service", and its SRVs.
        (
            "svc6.testns.example.com.",
            AAAA,
            got("NOERROR", &["svc6.testns.example.com. 5 AAAA 1:2::5"], &[], &[]),
        ),
        (
            "_http._tcp.svc6.testns.example.com.",
            SRV,
            got(
                "NOERROR",
                &["_http._tcp.svc6.testns.example.com. 5 SRV 0 100 80 svc6.testns.example.com."],
                &[],
                &["svc6.testns.example.com. 5 AAAA 1:2::5"],
            ),
        ),
        (
            "svc6.testns.example.com.",
            SRV,
            got(
                "NOERROR",
                &["svc6.testns.example.com. 5 SRV 0 100 80 svc6.testns.example.com."],
                &[],
                &["svc6.testns.example.com. 5 AAAA 1:2::5"],
            ),
        ),
        // The namespace alone: NODATA, for A and SOA alike.
        ("testns.example.com.", A, got("NOERROR", &[], &[s], &[])),
        ("testns.example.com.", SOA, got("NOERROR", &[], &[s], &[])),
        // "svc11": a load balancer's address.
        (
            "svc11.testns.example.com.",
            A,
            got("NOERROR", &["svc11.testns.example.com. 5 A 2.3.4.5"], &[], &[]),
        ),
        (
            "_http._tcp.svc11.testns.example.com.",
            SRV,
            got(
                "NOERROR",
                &["_http._tcp.svc11.testns.example.com. 5 SRV 0 100 80 svc11.testns.example.com."],
                &[],
                &["svc11.testns.example.com. 5 A 2.3.4.5"],
            ),
        ),
        // "svc12": a load balancer's host name: a CNAME; the SRV targets it.
        (
            "svc12.testns.example.com.",
            A,
            got(
                "NOERROR",
                &["svc12.testns.example.com. 5 CNAME dummy.hostname."],
                &[],
                &[],
            ),
        ),
        (
            "_http._tcp.svc12.testns.example.com.",
            SRV,
            got(
                "NOERROR",
                &["_http._tcp.svc12.testns.example.com. 5 SRV 0 100 80 dummy.hostname."],
                &[],
                &[],
            ),
        ),
        (
            "svc12.testns.example.com.",
            SRV,
            got(
                "NOERROR",
                &["svc12.testns.example.com. 5 SRV 0 100 80 dummy.hostname."],
                &[],
                &[],
            ),
        ),
        // "headless service": its endpoints, named by their host names.
        (
            "svc-headless.testns.example.com.",
            A,
            got(
                "NOERROR",
                &[
                    "svc-headless.testns.example.com. 5 A 1.2.3.4",
                    "svc-headless.testns.example.com. 5 A 1.2.3.5",
                ],
                &[],
                &[],
            ),
        ),
        (
            "svc-headless.testns.example.com.",
            SRV,
            got(
                "NOERROR",
                &[
                    "svc-headless.testns.example.com. 5 SRV 0 50 80 endpoint-svc-0.svc-headless.testns.example.com.",
                    "svc-headless.testns.example.com. 5 SRV 0 50 80 endpoint-svc-1.svc-headless.testns.example.com.",
                ],
                &[],
                &[
                    "endpoint-svc-0.svc-headless.testns.example.com. 5 A 1.2.3.4",
                    "endpoint-svc-1.svc-headless.testns.example.com. 5 A 1.2.3.5",
                ],
            ),
        ),
        (
            "_http._tcp.svc-headless.testns.example.com.",
            SRV,
            got(
                "NOERROR",
                &[
                    "_http._tcp.svc-headless.testns.example.com. 5 SRV 0 50 80 endpoint-svc-0.svc-headless.testns.example.com.",
                    "_http._tcp.svc-headless.testns.example.com. 5 SRV 0 50 80 endpoint-svc-1.svc-headless.testns.example.com.",
                ],
                &[],
                &[
                    "endpoint-svc-0.svc-headless.testns.example.com. 5 A 1.2.3.4",
                    "endpoint-svc-1.svc-headless.testns.example.com. 5 A 1.2.3.5",
                ],
            ),
        ),
        (
            "endpoint-svc-0.svc-headless.testns.example.com.",
            SRV,
            got(
                "NOERROR",
                &[
                    "endpoint-svc-0.svc-headless.testns.example.com. 5 SRV 0 100 80 endpoint-svc-0.svc-headless.testns.example.com.",
                ],
                &[],
                &["endpoint-svc-0.svc-headless.testns.example.com. 5 A 1.2.3.4"],
            ),
        ),
        (
            "endpoint-svc-1.svc-headless.testns.example.com.",
            A,
            got(
                "NOERROR",
                &["endpoint-svc-1.svc-headless.testns.example.com. 5 A 1.2.3.5"],
                &[],
                &[],
            ),
        ),
    ];
    for (name, qtype, want) in cases {
        assert_eq!(ask(&p, name, qtype), want, "{name} {qtype}");
    }
}

/// `apex_test.go` `testsApex`: SOA and NS at the apex, the `dns` label an empty
/// non-terminal, `ns1.dns` with the NS addresses (here the server's local address:
/// no endpoint holds it).
#[test]
fn coredns_apex_table() {
    use crate::dns::rtype::{A, AAAA, NS, SOA, SRV};
    let st = coredns_cluster();
    let p = plugin(
        ". {\n k8s_external example.com {\n headless\n }\n}\n",
        &st,
        &["127.0.0.1"],
    );
    let soa = soa(&p, "example.com.");
    let s = soa.as_str();
    let cases: Vec<(&str, u16, Option<Got>)> = vec![
        ("example.com.", SOA, got("NOERROR", &[s], &[], &[])),
        (
            "example.com.",
            NS,
            got(
                "NOERROR",
                &["example.com. 5 NS ns1.dns.example.com."],
                &[],
                &["ns1.dns.example.com. 5 A 127.0.0.1"],
            ),
        ),
        ("example.com.", SRV, got("NOERROR", &[], &[s], &[])),
        ("dns.example.com.", SRV, got("NOERROR", &[], &[s], &[])),
        ("dns.example.com.", NS, got("NOERROR", &[], &[s], &[])),
        ("ns1.dns.example.com.", SRV, got("NOERROR", &[], &[s], &[])),
        ("ns1.dns.example.com.", NS, got("NOERROR", &[], &[s], &[])),
        ("ns1.dns.example.com.", AAAA, got("NOERROR", &[], &[s], &[])),
        (
            "ns1.dns.example.com.",
            A,
            got("NOERROR", &["ns1.dns.example.com. 5 A 127.0.0.1"], &[], &[]),
        ),
        // `serveSubApex`: any other name under the apex label does not exist.
        ("ns2.dns.example.com.", A, got("NXDOMAIN", &[], &[s], &[])),
        ("x.ns1.dns.example.com.", A, got("NXDOMAIN", &[], &[s], &[])),
    ];
    for (name, qtype, want) in cases {
        assert_eq!(ask(&p, name, qtype), want, "{name} {qtype}");
    }
    // `apex` names the label; `ttl` sets every TTL and the SOA's minimum.
    let p = plugin(
        ". {\n k8s_external example.com {\n apex ext\n ttl 30\n }\n}\n",
        &st,
        &["127.0.0.1"],
    );
    let serial = p.kubernetes.get().unwrap().snapshot.load().external_serial;
    assert_eq!(
        ask(&p, "example.com.", SOA).unwrap().answer,
        [format!(
            "example.com. 30 SOA ns1.ext.example.com. hostmaster.ext.example.com. {serial} 7200 1800 86400 30"
        )]
    );
    assert_eq!(
        ask(&p, "ns1.ext.example.com.", A).unwrap().answer,
        ["ns1.ext.example.com. 30 A 127.0.0.1"]
    );
    assert_eq!(
        ask(&p, "svc1.testns.example.com.", A).unwrap().answer,
        ["svc1.testns.example.com. 30 A 1.2.3.4"]
    );
    // The old apex label is now a service name like any other.
    assert_eq!(ask(&p, "ns1.dns.example.com.", A).unwrap().rcode, "NXDOMAIN");
}

/// The NS addresses when the server runs in the cluster (`nsAddrs(external: true)`):
/// the external addresses of the service whose endpoint holds the local address.
#[test]
fn ns_addresses_are_the_dns_service_external_ones() {
    use crate::dns::rtype::{A, NS};
    let mut st = coredns_cluster();
    st.upsert(svc(
        "dns",
        ServiceKind::ClusterIp,
        &["10.96.0.10"],
        vec![ip("192.0.2.53")],
    ));
    st.upsert(Object::EndpointSlice(EndpointSlice {
        namespace: "testns".into(),
        name: "dns-1".into(),
        resource_version: "1".into(),
        service: "dns".into(),
        endpoints: vec![Endpoint {
            addresses: vec![("10.244.0.5".parse().unwrap(), "10.244.0.5".into())],
            hostname: None,
            pod_name: None,
            node_name: None,
        }],
        ports: http(),
        last_change_trigger: None,
    }));
    let p = plugin(". {\n k8s_external example.com\n}\n", &st, &["10.244.0.5"]);
    assert_eq!(
        ask(&p, "example.com.", NS).unwrap().extra,
        ["ns1.dns.example.com. 5 A 192.0.2.53"]
    );
    assert_eq!(
        ask(&p, "ns1.dns.example.com.", A).unwrap().answer,
        ["ns1.dns.example.com. 5 A 192.0.2.53"]
    );
}

/// Without `headless`, a headless service (and an endpoint name) has no records here;
/// an endpoint label in front of a service with external addresses is not looked at
/// (CoreDNS `External`: the external addresses answer whatever the label).
#[test]
fn headless_only_when_asked() {
    use crate::dns::rtype::A;
    let st = coredns_cluster();
    let p = plugin(". {\n k8s_external example.com\n}\n", &st, &[]);
    assert_eq!(
        ask(&p, "svc-headless.testns.example.com.", A).unwrap().rcode,
        "NXDOMAIN"
    );
    assert_eq!(
        ask(&p, "endpoint-svc-0.svc-headless.testns.example.com.", A)
            .unwrap()
            .rcode,
        "NXDOMAIN"
    );
    assert_eq!(
        ask(&p, "anything.svc1.testns.example.com.", A).unwrap().answer,
        ["anything.svc1.testns.example.com. 5 A 1.2.3.4"]
    );
    // A service with only cluster IPs has nothing outside.
    let mut st = coredns_cluster();
    st.upsert(svc("internal", ServiceKind::ClusterIp, &["10.0.0.9"], vec![]));
    let p = plugin(". {\n k8s_external example.com\n}\n", &st, &[]);
    assert_eq!(ask(&p, "internal.testns.example.com.", A).unwrap().rcode, "NXDOMAIN");
    // `_` asks for any port or protocol (CoreDNS `matchPortAndProtocol` with "").
    assert_eq!(
        ask(&p, "_._tcp.svc1.testns.example.com.", crate::dns::rtype::SRV)
            .unwrap()
            .answer,
        ["_._tcp.svc1.testns.example.com. 5 SRV 0 100 80 svc1.testns.example.com."]
    );
    assert_eq!(
        ask(&p, "_http._udp.svc1.testns.example.com.", crate::dns::rtype::SRV)
            .unwrap()
            .rcode,
        "NXDOMAIN"
    );
    // Too many labels: NXDOMAIN.
    assert_eq!(ask(&p, "a.b.c.svc1.testns.example.com.", A).unwrap().rcode, "NXDOMAIN");
}

/// README "fallthrough": a name that does not exist goes on to the next plugin; the
/// apex's names never do; names outside the zones are not this plugin's.
#[test]
fn fallthrough_and_other_zones() {
    use crate::dns::rtype::A;
    let st = coredns_cluster();
    let p = plugin(". {\n k8s_external example.com {\n fallthrough\n }\n}\n", &st, &[]);
    assert_eq!(ask(&p, "svc0.testns.example.com.", A), None);
    assert_eq!(ask(&p, "svc1.testns.example.com.", A).unwrap().rcode, "NOERROR");
    assert_eq!(ask(&p, "ns2.dns.example.com.", A).unwrap().rcode, "NXDOMAIN");
    assert_eq!(ask(&p, "svc1.testns.example.org.", A), None);
    // Fallthrough limited to other zones does not apply here.
    let p = plugin(
        ". {\n k8s_external example.com {\n fallthrough other.org\n }\n}\n",
        &st,
        &[],
    );
    assert_eq!(ask(&p, "svc0.testns.example.com.", A).unwrap().rcode, "NXDOMAIN");
}

/// The kubernetes plugin's `namespaces` limits what is exposed here too.
#[test]
fn namespaces_limit_what_is_exposed() {
    use crate::dns::rtype::A;
    let st = coredns_cluster();
    let k = kube(&st, &[]);
    let mut opts = k.opts.clone();
    opts.namespaces = vec!["other".into()];
    let k = Arc::new(Exported {
        snapshot: k.snapshot.clone(),
        opts,
    });
    let p = External::new(parse(". {\n k8s_external example.com\n}\n").unwrap()).with_kubernetes(k);
    assert_eq!(ask(&p, "svc1.testns.example.com.", A).unwrap().rcode, "NXDOMAIN");
}

/// A block without the kubernetes plugin does not start: CoreDNS's `OnStartup` errors.
#[test]
fn needs_kubernetes_in_its_block() {
    struct Named(&'static str, Option<Arc<Exported>>);
    impl Handler for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        fn serve(&self, _: &mut Query<'_, '_>) -> Step {
            Step::Next
        }
        fn externaler(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
            self.1.clone().map(|e| e as Arc<dyn std::any::Any + Send + Sync>)
        }
    }
    let p = External::new(parse(". {\n k8s_external example.com\n}\n").unwrap());
    let others: Vec<Arc<dyn Handler>> = vec![Arc::new(Named("hosts", None))];
    assert_eq!(
        p.link(&others).unwrap_err().to_string(),
        "plugin/k8s_external: kubernetes plugin not loaded"
    );
    let imposter: Vec<Arc<dyn Handler>> = vec![Arc::new(Named("kubernetes", None))];
    assert_eq!(
        p.link(&imposter).unwrap_err().to_string(),
        "plugin/k8s_external: kubernetes plugin does not implement the Externaler interface"
    );
    let st = coredns_cluster();
    let chain: Vec<Arc<dyn Handler>> = vec![Arc::new(Named("kubernetes", Some(kube(&st, &[]))))];
    assert!(p.link(&chain).is_ok());
    assert_eq!(
        ask(&p, "svc1.testns.example.com.", crate::dns::rtype::A)
            .unwrap()
            .answer,
        ["svc1.testns.example.com. 5 A 1.2.3.4"]
    );
}

/// The external-address index follows the services: a changed address moves its PTR,
/// a deleted service takes its own away, another service with the same address keeps
/// its own; the external serial moves only with services that have external addresses.
#[test]
fn reverse_index_follows_changes() {
    use crate::dns::rtype::PTR;
    use crate::kubernetes::model::{ObjectKey, Resource};
    let mut st = coredns_cluster();
    let corefile = ". {\n k8s_external example.com in-addr.arpa\n}\n";
    let ptr = |st: &ClusterStore, name: &str| {
        let p = plugin(corefile, st, &[]);
        let g = ask(&p, name, PTR).unwrap();
        (g.rcode, g.answer)
    };
    st.upsert(svc("twin", ServiceKind::ClusterIp, &["10.0.0.7"], vec![ip("1.2.3.4")]));
    assert_eq!(
        ptr(&st, "4.3.2.1.in-addr.arpa.").1,
        [
            "4.3.2.1.in-addr.arpa. 5 PTR svc1.testns.example.com.",
            "4.3.2.1.in-addr.arpa. 5 PTR twin.testns.example.com.",
        ]
    );
    let Object::Service(mut moved) = svc("svc1", ServiceKind::ClusterIp, &["10.0.0.1"], vec![ip("1.2.3.9")]) else {
        unreachable!()
    };
    moved.resource_version = "2".into();
    st.upsert(Object::Service(moved));
    assert_eq!(
        ptr(&st, "4.3.2.1.in-addr.arpa.").1,
        ["4.3.2.1.in-addr.arpa. 5 PTR twin.testns.example.com."]
    );
    assert_eq!(
        ptr(&st, "9.3.2.1.in-addr.arpa.").1,
        ["9.3.2.1.in-addr.arpa. 5 PTR svc1.testns.example.com."]
    );
    st.delete(
        Resource::Services,
        &ObjectKey {
            namespace: "testns".into(),
            name: "twin".into(),
        },
    );
    assert_eq!(ptr(&st, "4.3.2.1.in-addr.arpa.").0, "NXDOMAIN");
    // A service without external addresses leaves the external serial alone.
    let before = st.snapshot().external_serial;
    assert_ne!(before, 0);
    let mut fresh = ClusterStore::new(StoreOptions::default(), vec![]);
    fresh.upsert(svc("internal", ServiceKind::ClusterIp, &["10.0.0.9"], vec![]));
    assert_eq!(fresh.snapshot().external_serial, 0);
    assert_ne!(fresh.snapshot().serial, 0);
}

/// A load balancer's host name: the CNAME, then what the server answers for the name
/// (CoreDNS `msg_to_dns.go` `a`: `upstream.Lookup`), asked of the server itself with
/// the chase depth the kubernetes plugin uses.
#[test]
fn host_names_are_looked_up_through_the_server() {
    use crate::dns::rtype::A;
    let st = coredns_cluster();
    let p = plugin(". {\n k8s_external example.com\n}\n", &st, &[]);
    let raw = crate::dns::QueryBuilder::new(
        &crate::dns::wire::name_from_str("svc12.testns.example.com.").unwrap(),
        A,
    )
    .to_vec();
    let a = "127.0.0.1:1".parse().unwrap();
    let out = crate::chain::testing::with_query(&raw, a, crate::chain::Metadata::NONE, |q| {
        let Step::Upstream(up) = p.serve(q) else {
            panic!("no lookup")
        };
        assert_eq!(up.to, a);
        let sent = Message::from_octets(q.worker.upstream_msg.clone()).unwrap();
        let question = sent.sole_question().unwrap();
        assert_eq!(question.qname().to_string(), "dummy.hostname");
        assert_eq!(u16::from(question.qtype()), A);
        // The server's reply: one A record for the host name.
        let mut r = Response::new();
        let host = crate::dns::wire::name_from_str("dummy.hostname.").unwrap();
        let hreq_raw = crate::dns::QueryBuilder::new(&host, A).to_vec();
        let hreq = Request::parse(&hreq_raw, Transport::Udp, a, a).ok().unwrap();
        r.start(&hreq, Rcode::NOERROR);
        r.answer(crate::dns::Record::at_question(
            A,
            60,
            crate::dns::Rdata::A("192.0.2.1".parse().unwrap()),
        ));
        let reply = r.finish().to_vec();
        assert!(matches!(
            p.resume(q, crate::chain::UpstreamReply::Message(&reply), 0),
            Step::Answered
        ));
        q.resp.finish().to_vec()
    });
    let m = Message::from_octets(out).unwrap();
    let answer: Vec<String> = m
        .answer()
        .unwrap()
        .limit_to::<AllRecordData<_, _>>()
        .map(|r| r.unwrap().to_string())
        .collect();
    assert_eq!(
        answer,
        [
            "svc12.testns.example.com. 5 IN CNAME dummy.hostname.",
            "dummy.hostname. 60 IN A 192.0.2.1",
        ]
    );
}

/// A headless service of 20,000 endpoints answers A and SRV (cut to the message,
/// with TC) within the query's work budget: candidates are counted per slice, and a
/// plain name's addresses come from the snapshot's prepared list.
#[test]
fn a_large_headless_service_answers_within_the_budget() {
    use crate::dns::rtype::{A, SRV};
    let mut st = coredns_cluster();
    st.upsert(svc("big", ServiceKind::Headless, &[], vec![]));
    for s in 0..20u32 {
        st.upsert(Object::EndpointSlice(EndpointSlice {
            namespace: "testns".into(),
            name: format!("big-{s}").into(),
            resource_version: "1".into(),
            service: "big".into(),
            endpoints: (0..1000u32)
                .map(|e| {
                    let a = std::net::Ipv4Addr::from(0x0a00_0000 + s * 1000 + e);
                    Endpoint {
                        addresses: vec![(a.into(), a.to_string().into())],
                        hostname: None,
                        pod_name: None,
                        node_name: None,
                    }
                })
                .collect(),
            ports: http(),
            last_change_trigger: None,
        }));
    }
    let p = plugin(". {\n k8s_external example.com {\n headless\n }\n}\n", &st, &[]);
    let g = ask(&p, "big.testns.example.com.", A).unwrap();
    assert_eq!(g.rcode, "NOERROR");
    assert!(!g.answer.is_empty());
    let g = ask(&p, "big.testns.example.com.", SRV).unwrap();
    assert_eq!(g.rcode, "NOERROR");
    // 20,000 candidates: CoreDNS's weight floor(100 / 20,000) is 0, raised to 1.
    assert!(g.answer[0].contains(" SRV 0 1 80 "), "{:?}", g.answer[0]);
}

/// An address many LoadBalancer Services share (k3s's ServiceLB gives each the node's
/// addresses): indexing costs a bounded copy per Service (32,000 took 41 s when each
/// copied the whole list), and a PTR names the first MAX_EXTERNAL_OWNERS of them.
#[test]
fn an_address_shared_by_many_services_is_indexed_in_bounded_time() {
    use crate::kubernetes::snapshot::MAX_EXTERNAL_OWNERS;
    let mut st = ClusterStore::new(StoreOptions::default(), vec![]);
    st.upsert(Object::Namespace(Namespace { name: "testns".into() }));
    let t = std::time::Instant::now();
    for i in 0..20_000 {
        st.upsert(svc(
            &format!("lb{i}"),
            ServiceKind::ClusterIp,
            &[],
            vec![ip("192.0.2.1")],
        ));
    }
    assert!(t.elapsed() < std::time::Duration::from_secs(20), "{:?}", t.elapsed());
    let snap = st.snapshot();
    let owners = snap.external_owners(&"192.0.2.1".parse().unwrap());
    assert_eq!(owners.len(), MAX_EXTERNAL_OWNERS);
    // One of them leaves: its place is not taken by another (documented).
    st.delete(
        crate::kubernetes::model::Resource::Services,
        &crate::kubernetes::model::ObjectKey {
            namespace: "testns".into(),
            name: "lb0".into(),
        },
    );
    let snap = st.snapshot();
    assert_eq!(
        snap.external_owners(&"192.0.2.1".parse().unwrap()).len(),
        MAX_EXTERNAL_OWNERS - 1
    );
}
