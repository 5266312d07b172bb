//! Kubernetes API objects as the API serves them (JSON), with the noise the real API
//! adds (uid, creationTimestamp, managedFields, annotations), so that tests prove the
//! server ignores it; and the small cluster most tests start from.

use serde_json::{Value, json};

fn noise_metadata(name: &str, namespace: Option<&str>, labels: Value) -> Value {
    let mut m = json!({
        "name": name,
        "uid": format!("{:08x}-0000-4000-8000-{:012x}", name.len() * 7919, name.bytes().map(u64::from).sum::<u64>()),
        "resourceVersion": "0",
        "generation": 1,
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": labels,
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"Thing\",\"metadata\":{\"name\":\"x\"}}\n",
            "example.com/note": "ignored by DNS"
        },
        "managedFields": [{
            "manager": "kubectl-client-side-apply",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2026-01-01T00:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:annotations": {".": {}}}, "f:spec": {"f:ports": {}}}
        }]
    });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

pub fn namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": noise_metadata(name, None, json!({"kubernetes.io/metadata.name": name})),
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    })
}

/// A ClusterIP service; `ports` are `(name, port, protocol)` (an empty name is an
/// unnamed port). `cluster_ip` may be IPv4 or IPv6.
pub fn service(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, u16, &str)]) -> Value {
    let family = if cluster_ip.contains(':') { "IPv6" } else { "IPv4" };
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, proto)| {
            let mut v = json!({"protocol": proto, "port": p, "targetPort": p});
            if !n.is_empty() {
                v["name"] = json!(n);
            }
            v
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": noise_metadata(name, Some(ns), json!({"app": name})),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ipFamilies": [family],
            "ipFamilyPolicy": "SingleStack",
            "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
            "selector": {"app": name},
            "ports": ports
        },
        "status": {"loadBalancer": {}}
    })
}

/// A headless service (`clusterIP: None`) with one named port `http/TCP/80`.
pub fn headless(ns: &str, name: &str) -> Value {
    let mut s = service(ns, name, "None", &[("http", 80, "TCP")]);
    s["spec"]["ipFamilies"] = json!(["IPv4"]);
    s
}

/// Makes `svc` a LoadBalancer whose ingress points are `ingress` (an address gives
/// `ip`, anything else `hostname`), as a cloud controller writes `status`.
pub fn set_load_balancer(svc: &mut Value, ingress: &[&str]) {
    svc["spec"]["type"] = json!("LoadBalancer");
    let points: Vec<Value> = ingress
        .iter()
        .map(|p| {
            if p.parse::<std::net::IpAddr>().is_ok() {
                json!({"ip": p, "ipMode": "VIP"})
            } else {
                json!({"hostname": p})
            }
        })
        .collect();
    svc["status"] = json!({"loadBalancer": {"ingress": points}});
}

/// Sets `spec.externalIPs`.
pub fn set_external_ips(svc: &mut Value, ips: &[&str]) {
    svc["spec"]["externalIPs"] = json!(ips);
}

pub fn external_name(ns: &str, name: &str, target: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": noise_metadata(name, Some(ns), json!({})),
        "spec": {"type": "ExternalName", "externalName": target, "sessionAffinity": "None"},
        "status": {"loadBalancer": {}}
    })
}

/// An EndpointSlice of `service`, one ready endpoint per address (all of one family),
/// port `http/TCP/80`.
pub fn slice(ns: &str, name: &str, service: &str, addresses: &[&str]) -> Value {
    let family = if addresses.first().is_some_and(|a| a.contains(':')) {
        "IPv6"
    } else {
        "IPv4"
    };
    let endpoints: Vec<Value> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            json!({
                "addresses": [a],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": format!("node-{}", i % 3),
                "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{service}-pod-{i}"), "uid": "00000000-0000-4000-8000-000000000001"}
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": noise_metadata(name, Some(ns), json!({
            "kubernetes.io/service-name": service,
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
        })),
        "addressType": family,
        "endpoints": endpoints,
        "ports": [{"name": "http", "protocol": "TCP", "port": 80}]
    })
}

/// Sets `conditions.ready` of the endpoint holding `address`.
pub fn set_ready(slice: &mut Value, address: &str, ready: bool) {
    for ep in slice["endpoints"].as_array_mut().expect("endpoints") {
        if ep["addresses"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == address))
        {
            ep["conditions"]["ready"] = json!(ready);
            ep["conditions"]["serving"] = json!(ready);
        }
    }
}

pub fn pod(ns: &str, name: &str, ip: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": noise_metadata(name, Some(ns), json!({"app": name})),
        "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}], "nodeName": "node-1"},
        "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}
    })
}

/// Replaces the object's labels.
pub fn with_labels(mut obj: Value, labels: &[(&str, &str)]) -> Value {
    let map: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    obj["metadata"]["labels"] = Value::Object(map);
    obj
}

/// A headless service (`clusterIP: None`) with these ports (name, number; TCP).
pub fn headless_with(ns: &str, name: &str, ports: &[(&str, u16)]) -> Value {
    let mut s = headless(ns, name);
    s["spec"]["ports"] = Value::Array(
        ports
            .iter()
            .map(|(n, p)| json!({"name": n, "protocol": "TCP", "port": p, "targetPort": p}))
            .collect(),
    );
    s
}

/// An endpoint of an EndpointSlice: its address and hostname (ready, no targetRef).
pub type Endpoint = (String, Option<String>);

/// An EndpointSlice `SERVICE-NNNN` (`n` in four digits) of `service` in `ns`, with
/// minimal metadata: every endpoint ready, ports as (name, number; TCP).
pub fn slice_with(ns: &str, service: &str, n: usize, endpoints: &[Endpoint], ports: &[(&str, u16)]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(ip, host)| {
            let mut e = json!({"addresses": [ip], "conditions": {"ready": true}});
            if let Some(h) = host {
                e["hostname"] = json!(h);
            }
            e
        })
        .collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(name, p)| json!({"name": name, "protocol": "TCP", "port": p}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-{n:04}"),
            "namespace": ns,
            "resourceVersion": "1",
            "labels": {"kubernetes.io/service-name": service}
        },
        "addressType": "IPv4",
        "endpoints": eps,
        "ports": ports
    })
}

/// `count` IPv4 endpoints from 10.`net`.0.0 on, in groups of 1,000 (one slice each),
/// named by `host`.
pub fn endpoints(net: usize, count: usize, host: impl Fn(usize) -> Option<String>) -> Vec<Vec<Endpoint>> {
    (0..count.div_ceil(1000))
        .map(|s| {
            (s * 1000..((s + 1) * 1000).min(count))
                .map(|i| {
                    (
                        format!("10.{}.{}.{}", net + i / 65536, (i / 256) % 256, i % 256),
                        host(i),
                    )
                })
                .collect()
        })
        .collect()
}

/// The slices of `service` in `ns`, one per group of endpoints.
pub fn slices(ns: &str, service: &str, groups: &[Vec<Endpoint>], ports: &[(&str, u16)]) -> Vec<Value> {
    groups
        .iter()
        .enumerate()
        .map(|(n, e)| slice_with(ns, service, n, e, ports))
        .collect()
}

/// A small cluster: namespaces default, kube-system and team-a; the `kubernetes`
/// service (10.96.0.1) that tests wait on to know the server has synced; kube-dns
/// (10.96.0.10); a web service in team-a (10.96.1.1).
pub fn base_cluster() -> Vec<Value> {
    vec![
        namespace("default"),
        namespace("kube-system"),
        namespace("team-a"),
        service("default", "kubernetes", "10.96.0.1", &[("https", 443, "TCP")]),
        service(
            "kube-system",
            "kube-dns",
            "10.96.0.10",
            &[("dns", 53, "UDP"), ("dns-tcp", 53, "TCP")],
        ),
        service("team-a", "web", "10.96.1.1", &[("http", 80, "TCP")]),
    ]
}

/// Sets a service's ClusterIP (and its `clusterIPs`).
pub fn set_cluster_ip(svc: &mut Value, ip: &str) {
    svc["spec"]["clusterIP"] = json!(ip);
    svc["spec"]["clusterIPs"] = json!([ip]);
}

/// A `kubectl get -o json` dump (a v1 List) of these objects.
pub fn kubectl_dump(items: &[Value]) -> String {
    serde_json::to_string_pretty(&json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": ""},
        "items": items,
    }))
    .unwrap()
}
