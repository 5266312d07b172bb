#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/seeds/TARGET/ (run from
anywhere; the files are committed, so this runs again only to change them).

packet: client queries. corefile: Corefiles. kubernetes_json: API lists, objects and
watch streams. forward_reply: [selector][query length][query][upstream reply], see
clusterdns::fuzzing::forward_reply. http_request: what clients send to /health, /ready
and /metrics."""

import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEEDS = os.path.join(HERE, "seeds")

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT, ANY, AXFR, DNAME = 1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 255, 252, 39


def name(n):
    out = b""
    for label in n.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def opt(size=1232, do=False, version=0, options=b"", ext_rcode=0):
    ttl = (ext_rcode << 24) | (version << 16) | (0x8000 if do else 0)
    return b"\0" + struct.pack(">HHIH", OPT, size, ttl, len(options)) + options


def query(qname, qtype=A, qclass=1, edns=True, do=False, ident=0x1234, flags=0x0100, extra=b"", arcount=None,
          qdcount=1):
    ar = b""
    if edns:
        ar = opt(do=do) if edns is True else edns
    if arcount is None:
        arcount = 1 if ar else 0
    head = struct.pack(">HHHHHH", ident, flags, qdcount, 0, 0, arcount)
    return head + name(qname) + struct.pack(">HH", qtype, qclass) + extra + ar


def rr(owner, rtype, rdata, ttl=300, rclass=1):
    return owner + struct.pack(">HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def reply(q, answers=(), authority=(), additional=(), rcode=0, flags=0x8180, ident=0x9999):
    """A reply to query `q` (its question copied), records given as bytes."""
    qd_end = 12
    while q[qd_end] != 0:
        qd_end += 1 + q[qd_end]
    question = q[12:qd_end + 5]
    head = struct.pack(">HHHHHH", ident, flags | rcode, 1, len(answers), len(authority), len(additional))
    return head + question + b"".join(answers) + b"".join(authority) + b"".join(additional)


PTR_Q = b"\xc0\x0c"  # a pointer to the question name


def write(target, fname, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def packet():
    t = "packet"
    write(t, "a-clusterip", query("web.team-a.svc.cluster.local"))
    write(t, "aaaa-clusterip", query("web.team-a.svc.cluster.local", AAAA, edns=False))
    write(t, "a-headless", query("db.team-a.svc.cluster.local", do=True))
    write(t, "srv-headless", query("_postgres._tcp.db.team-a.svc.cluster.local", SRV))
    write(t, "srv-small-udp", query("_postgres._tcp.db.team-a.svc.cluster.local", SRV, edns=opt(size=0)))
    write(t, "a-endpoint", query("db-0.db.team-a.svc.cluster.local"))
    write(t, "a-externalname", query("search.team-a.svc.cluster.local"))
    write(t, "cname-externalname", query("search.team-a.svc.cluster.local", CNAME))
    write(t, "ptr-clusterip", query("10.0.96.10.in-addr.arpa", PTR))
    write(t, "ptr-endpoint", query("6.1.244.10.in-addr.arpa", PTR))
    write(t, "a-pod", query("10-244-1-20.team-a.pod.cluster.local"))
    write(t, "nxdomain", query("nothere.team-a.svc.cluster.local"))
    write(t, "wildcard", query("*.team-a.svc.cluster.local", SRV))
    write(t, "txt-dns-version", query("dns-version.cluster.local", TXT))
    write(t, "ns-zone", query("cluster.local", NS))
    write(t, "soa-zone", query("Cluster.Local", SOA))
    write(t, "axfr", query("cluster.local", AXFR))
    write(t, "any", query("web.team-a.svc.cluster.local", ANY))
    write(t, "hosts-inline", query("example.internal"))
    write(t, "hosts-file", query("files.example.internal", AAAA))
    write(t, "hosts-ptr", query("53.2.0.192.in-addr.arpa", PTR))
    write(t, "whoami", query("anything.example.org"))
    write(t, "chaos", query("version.bind", TXT, qclass=3))
    write(t, "notimp", query("web.team-a.svc.cluster.local", flags=0x2800))
    write(t, "formerr-two-questions", query("web.team-a.svc.cluster.local", qdcount=2))
    write(t, "badvers", query("web.team-a.svc.cluster.local", edns=opt(version=1)))
    write(t, "edns-cookie", query("web.team-a.svc.cluster.local",
                                   edns=opt(options=struct.pack(">HH", 10, 8) + b"\x01\x02\x03\x04\x05\x06\x07\x08")))
    write(t, "chase-depth", query("search.team-a.svc.cluster.local",
                                  edns=opt(options=struct.pack(">HHB", 65301, 1, 7))))
    write(t, "response-dropped", query("web.team-a.svc.cluster.local", flags=0x8100))
    write(t, "ds-parent", query("cluster.local", 43))


def corefile():
    t = "corefile"
    for src, dst in [("packaging/demo/Corefile", "demo"), ("packaging/etc/Corefile", "etc")]:
        with open(os.path.join(ROOT, src), "rb") as f:
            write(t, dst, f.read())
    write(t, "everything", """\
(common) {
    errors
    log . "{remote} {type} {name} {rcode}" {
        class denial error
    }
}
cluster.local:1053 in-addr.arpa:1053 10.0.0.0/24:1053 dns://example.org:1053 {
    import common
    bind 127.0.0.1 ::1
    timeouts {
        read 10s
        write 5s
        idle 30s
    }
    health :8080 {
        lameduck 2s
    }
    ready :8181
    reload 30s 10s
    prometheus 127.0.0.1:9153
    cache 300 cluster.local {
        success 5000 600 10
        denial 2500 60
        prefetch 10 1m 20%
        serve_stale 1h verify 5s 30 5s
        servfail 3s
        disable denial example.org
        keepttl
    }
    loadbalance round_robin
    hosts resolv.conf example.org {
        10.0.0.1 a.example.org
        ttl 60
        reload 0
        no_reverse
        fallthrough example.org
    }
    kubernetes cluster.local in-addr.arpa {
        endpoint http://127.0.0.1:8001 http://127.0.0.2:8001
        namespaces default team-a
        labels app=web,tier!=db
        namespace_labels team in (a,b)
        pods verified
        endpoint_pod_names
        ttl 5
        noendpoints
        fallthrough in-addr.arpa
        ignore empty_service
        startup_timeout 2s
        watch_timeout 30s
    }
    forward . 192.0.2.1:53 dns://[2001:db8::1]:5353 resolv.conf {
        except internal.example.org
        force_tcp
        prefer_udp
        expire 10s
        max_fails 3
        read_timeout 2s
        max_connect_attempts 2
        health_check 1s no_rec domain example.org
        policy round_robin
        max_concurrent 100
        next NXDOMAIN
        next_on_nodata
        failover SERVFAIL REFUSED
        failfast_all_unhealthy_upstreams
    }
    loop
    whoami
}
.:{$FUZZ_PORT} {
    import import.conf
    import *.conf
    forward . resolv.conf
}
""")
    write(t, "env-and-quotes", 'example.org {\n    hosts {\n        "192.0.2.1" {%FUZZ_HOST%}.example.org # comment\n'
                               '        fallthrough\n    }\n    whoami\n}\n:5300 {\n whoami\n}\n')
    write(t, "errors", "a b {\n  nosuchplugin\n  file db.example\n  cache x\n  forward\n}\n} {\n")


def lst(kind, items, rv="100", cont=None):
    meta = {"resourceVersion": rv}
    if cont:
        meta["continue"] = cont
    return json.dumps({"apiVersion": "v1", "kind": kind, "metadata": meta, "items": items}, indent=1)


def svc(ns, nm, ip="10.96.0.50", ports=None, typ="ClusterIP", ext=None, rv="11"):
    spec = {"type": typ, "ports": ports if ports is not None else [{"name": "http", "port": 80, "protocol": "TCP"}]}
    if typ == "ExternalName":
        spec["externalName"] = ext
    else:
        spec["clusterIP"] = ip
        spec["clusterIPs"] = [ip] if ip != "None" else ["None"]
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": nm, "namespace": ns, "resourceVersion": rv},
            "spec": spec}


def eps(ns, nm, service, endpoints, ports=None, rv="21"):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": nm, "namespace": ns, "resourceVersion": rv,
                         "labels": {"kubernetes.io/service-name": service},
                         "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2024-01-01T00:00:00Z"}},
            "endpoints": endpoints,
            "ports": ports if ports is not None else [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def kubernetes_json():
    t = "kubernetes_json"
    with open(os.path.join(ROOT, "packaging/demo/cluster.json"), "rb") as f:
        write(t, "demo-dump", f.read())
    write(t, "service-list-page", lst("ServiceList", [
        svc("team-b", "api", "10.96.1.1"),
        svc("team-b", "dual", "fd00::10", ports=[{"name": "grpc", "port": 9000, "protocol": "UDP"}]),
        svc("team-b", "headless", "None", ports=[]),
        svc("team-b", "ext", typ="ExternalName", ext="db.example.com."),
        {"kind": "Service", "metadata": {"name": "broken", "namespace": "team-b"}, "spec": {"clusterIP": 7}},
    ], cont="eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MTAwfQ"))
    write(t, "slice-list", lst("EndpointSliceList", [
        eps("team-b", "headless-x", "headless", [
            {"addresses": ["10.244.3.1"], "hostname": "h-0", "conditions": {"ready": True},
             "targetRef": {"kind": "Pod", "name": "headless-0", "namespace": "team-b"}, "nodeName": "node-1"},
            {"addresses": ["10.244.3.2"], "conditions": {"ready": False}},
            {"addresses": ["10.244.3.3"], "targetRef": {"kind": "Pod", "name": "headless-2"}},
        ]),
        eps("team-b", "api-x", "api", [{"addresses": ["10.244.3.9"]}], ports=[]),
    ]))
    write(t, "mixed-list", lst("List", [
        {"kind": "Namespace", "metadata": {"name": "team-b", "resourceVersion": "1"}},
        svc("team-b", "headless", "None"),
        {"kind": "Pod", "metadata": {"name": "headless-0", "namespace": "team-b", "resourceVersion": "5",
                                     "deletionTimestamp": "2024-01-01T00:00:00Z"},
         "status": {"podIP": "10.244.3.1", "phase": "Running"}},
        {"kind": "ConfigMap", "metadata": {"name": "skipped"}},
    ]))
    events = [
        {"type": "ADDED", "object": svc("team-b", "api", "10.96.1.1", rv="31")},
        {"type": "MODIFIED", "object": svc("team-b", "api", "10.96.1.2", rv="32")},
        {"type": "ADDED", "object": {"kind": "Namespace", "metadata": {"name": "team-b", "resourceVersion": "33"}}},
        {"type": "ADDED", "object": eps("team-b", "api-x", "api", [{"addresses": ["10.244.3.9"], "hostname": "x"}],
                                        rv="34")},
        {"type": "ADDED", "object": {"kind": "Pod", "metadata": {"name": "p", "namespace": "team-b",
                                                                 "resourceVersion": "35"},
                                     "status": {"podIP": "10.244.3.9"}}},
        {"type": "BOOKMARK", "object": {"kind": "Service", "metadata": {"resourceVersion": "36"}}},
        {"type": "DELETED", "object": svc("team-b", "api", rv="37")},
        {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}},
    ]
    write(t, "watch-stream", "\n".join(json.dumps(e) for e in events) + "\n\n")
    write(t, "list-then-watch", lst("ServiceList", [svc("default", "a", "10.96.9.9")]).replace("\n", "") + "\n"
          + "\n".join(json.dumps(e) for e in events[:3]) + "\n")
    write(t, "status", json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
                                   "reason": "Forbidden", "message": "services is forbidden"}))
    write(t, "one-service", json.dumps(svc("default", "one", "10.96.7.7")))


def forward_reply():
    t = "forward_reply"

    def seed(fname, sel, q, r):
        assert len(q) < 256
        write(t, fname, bytes([sel, len(q)]) + q + r)

    q = query("www.example.com")
    seed("a", 0, q, reply(q, [rr(PTR_Q, A, bytes([192, 0, 2, 1])), rr(PTR_Q, A, bytes([192, 0, 2, 2]))],
                          additional=[opt()]))
    seed("a-tcp", 1, q, reply(q, [rr(PTR_Q, A, bytes([192, 0, 2, 1]))]))
    cname_target = name("target.example.net")
    seed("cname-chain", 0, q, reply(q, [rr(PTR_Q, CNAME, cname_target),
                                        rr(cname_target, A, bytes([198, 51, 100, 7]), ttl=5)]))
    soa = name("ns.example.com") + name("host.example.com") + struct.pack(">IIIII", 1, 2, 3, 4, 60)
    seed("nxdomain-soa", 0, q, reply(q, authority=[rr(name("example.com"), SOA, soa)], rcode=3))
    seed("nxdomain-next", 4, q, reply(q, authority=[rr(name("example.com"), SOA, soa)], rcode=3))
    seed("nodata-next", 4, q, reply(q, authority=[rr(name("example.com"), SOA, soa)]))
    seed("servfail-failover", 2, q, reply(q, rcode=2))
    seed("truncated-prefer-udp", 2, q, reply(q, flags=0x8380))
    qmx = query("example.com", MX, do=True)
    seed("mx-compressed", 0, qmx, reply(qmx, [rr(PTR_Q, MX, b"\x00\x0a\x04mail\xc0\x0c")],
                                        additional=[rr(b"\x04mail\xc0\x0c", AAAA, bytes(15) + b"\x01")]))
    qsrv = query("_sip._udp.example.com", SRV, edns=False)
    seed("srv", 1, qsrv, reply(qsrv, [rr(PTR_Q, SRV, struct.pack(">HHH", 1, 2, 5060) + name("sip.example.com"))]))
    qtxt = query("example.com", TXT)
    seed("txt-badvers-opt", 0, qtxt, reply(qtxt, [rr(PTR_Q, TXT, b"\x05hello\x00")],
                                           additional=[opt(ext_rcode=1)]))
    qptr = query("1.2.0.192.in-addr.arpa", PTR)
    seed("ptr-dname", 0, qptr, reply(qptr, [rr(name("2.0.192.in-addr.arpa"), DNAME, name("example.net")),
                                            rr(PTR_Q, PTR, name("host.example.net"))]))
    seed("wrong-question", 0, q, reply(query("other.example.com"), [rr(PTR_Q, A, bytes(4))]))
    # The kubernetes ExternalName chase (selector 6): the reply answers www.example.com.
    qk = query("search.team-a.svc.cluster.local")
    seed("chase", 6, qk, reply(query("www.example.com"), [rr(PTR_Q, A, bytes([93, 184, 216, 34]))]))
    seed("chase-tcp", 7, qk, reply(query("www.example.com"), [rr(PTR_Q, CNAME, name("edge.example.net")),
                                                               rr(name("edge.example.net"), A, bytes(4))]))


def http_request():
    t = "http_request"
    write(t, "kubelet-probe", b"GET /health HTTP/1.1\r\nHost: 10.244.1.5:8080\r\nUser-Agent: kube-probe/1.30\r\n"
                              b"Accept: */*\r\nConnection: close\r\n\r\n")
    write(t, "prometheus-scrape", b"GET /metrics HTTP/1.1\r\nHost: 10.244.1.5:9153\r\nUser-Agent: Prometheus/2.53.0\r\n"
                                  b"Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.2\r\n"
                                  b"Accept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n")
    write(t, "bare-lf", b"GET /ready HTTP/1.0\n\n")
    write(t, "mixed-endings", b"GET /health?verbose=1 HTTP/1.1\r\nHost: x\n\r\nbody after the head")
    write(t, "absolute-form", b"HEAD http://127.0.0.1:8181/ready#frag HTTP/1.1\r\n\r\n")
    write(t, "asterisk", b"\r\nOPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
    write(t, "folded-header", b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n")
    write(t, "bare-cr", b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n")
    write(t, "http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    write(t, "tls-hello", bytes.fromhex("16030100a5010000a10303") + bytes(32) + b"\n\n")
    write(t, "partial", b"GET /health HTTP/1.1\r\nHost: x\r\n")
    write(t, "oversize", b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 8200 + b"\r\n\r\n")


if __name__ == "__main__":
    shutil.rmtree(SEEDS, ignore_errors=True)
    packet()
    corefile()
    kubernetes_json()
    forward_reply()
    http_request()
    for target in sorted(os.listdir(SEEDS)):
        print(target, len(os.listdir(os.path.join(SEEDS, target))))
