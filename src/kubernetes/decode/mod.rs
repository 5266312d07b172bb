//! Kubernetes API JSON to [`model`](super::model) objects: one object, a list (streamed
//! item by item), or one line of a watch stream.
//!
//! Only the fields DNS uses are read (the ones CoreDNS keeps in `plugin/kubernetes/object`);
//! everything else, `managedFields` and the other annotations included, is skipped by the
//! parser without building a JSON tree. Each field that is read is read leniently (see
//! `Leaf` and `Maybe`): a field of the wrong JSON type rejects its own object, with the
//! field named in the error, while the rest of the list or watch stream keeps decoding.
//! Only broken JSON syntax ends a stream.
//!
//! The API's own limits ([`limits`](super::limits)) are applied while reading: an array
//! is built up to its cap (1,000 endpoints in a slice) and the rest of it only counted,
//! so an object far over a cap costs the cap, not the object; names and other fields
//! are checked against Kubernetes' validation rules, and an object that breaks one is
//! rejected whole (never cut down to fit).
//!
//! - `list`: a list's framing: its metadata, its items handed over one by one, the
//!   bound on an item's size;
//! - `event`: one line of a watch stream, the probe of an over-long one, an API Status;
//! - `lenient`: JSON fields read without committing to their type;
//! - `shapes`: the API's JSON shapes, only the fields DNS reads;
//! - `objects`: each resource's conversion from its shape to the model, with the
//!   API's rules.

use std::fmt;

use super::limits::Rule;
use super::model::{Object, Resource};

mod event;
mod lenient;
mod list;
mod objects;
mod shapes;

pub use event::{ApiStatus, WatchEvent, decode_event, decode_status, probe_event};
use lenient::Maybe;
pub use list::{ListItem, ListMeta, decode_list, decode_list_bounded, decode_list_slice};
use objects::convert;
use shapes::RawObject;

/// Why an object, a list or a watch event could not be decoded.
#[derive(Debug)]
pub enum DecodeError {
    /// Not JSON, or JSON cut short.
    Json(serde_json::Error),
    /// A field the object needs is missing or empty.
    Missing(&'static str),
    /// A field holds another JSON type than the API defines for it.
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    /// A number outside the field's range.
    OutOfRange { field: &'static str, value: i64 },
    /// The object is of another kind than the resource being read.
    WrongKind { expected: &'static str, found: Box<str> },
    /// A watch event type the API does not define.
    UnknownEventType(Box<str>),
    /// A value the API's validation refuses; `rule` says what it must be. `value` is
    /// the start of it (it may be megabytes long), `len` its length in bytes.
    Invalid {
        field: &'static str,
        rule: Rule,
        value: Box<str>,
        len: usize,
    },
    /// An array with more elements than the API allows.
    TooMany {
        field: &'static str,
        max: usize,
        found: usize,
    },
    /// An object (a watch event line, a list item) of more bytes than this.
    TooLarge(u64),
    /// The reader of a list stopped it, for this reason (a bound of the caller's).
    Stopped(&'static str),
}

impl DecodeError {
    /// The `reason` label under which a rejected object is counted.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge(_) => "too_large",
            DecodeError::TooMany { field, .. } => match *field {
                "endpoints" => "too_many_endpoints",
                "endpoints[].addresses" | "spec.externalIPs" | "status.loadBalancer.ingress" => "too_many_addresses",
                "spec.clusterIPs" => "too_many_cluster_ips",
                _ => "too_many_ports",
            },
            DecodeError::Invalid { field, .. } if matches!(*field, "metadata.name" | "metadata.namespace") => {
                "invalid_name"
            }
            DecodeError::Invalid { .. } => "invalid_value",
            _ => "malformed",
        }
    }
}

/// Every `reason` label [`DecodeError::reason`] gives.
pub const REASONS: [&str; 8] = [
    "too_large",
    "too_many_endpoints",
    "too_many_addresses",
    "too_many_cluster_ips",
    "too_many_ports",
    "invalid_name",
    "invalid_value",
    "malformed",
];

/// Fails with [`DecodeError::Invalid`] unless `value` passes `rule`.
fn check(field: &'static str, value: &str, rule: Rule) -> Result<(), DecodeError> {
    if rule.allows(value) {
        return Ok(());
    }
    const SHOWN: usize = 40;
    let mut cut = value.len().min(SHOWN);
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    let shown = if cut < value.len() {
        format!("{}…", &value[..cut])
    } else {
        value.to_owned()
    };
    Err(DecodeError::Invalid {
        field,
        rule,
        value: shown.into(),
        len: value.len(),
    })
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Json(e) => write!(f, "invalid JSON: {e}"),
            DecodeError::Missing(field) => write!(f, "{field} is missing"),
            DecodeError::WrongType { field, expected, found } => {
                write!(f, "{field}: expected {expected}, found {found}")
            }
            DecodeError::OutOfRange { field, value } => write!(f, "{field}: {value} is out of range"),
            DecodeError::WrongKind { expected, found } => write!(f, "expected a {expected}, found a {found}"),
            DecodeError::UnknownEventType(t) => write!(f, "unknown watch event type {t:?}"),
            DecodeError::Invalid {
                field,
                rule,
                value,
                len,
            } => {
                write!(f, "{field}: {value:?} ({len} bytes) must be {rule}")
            }
            DecodeError::TooMany { field, max, found } => {
                write!(f, "{field}: {found} elements, more than the API allows ({max})")
            }
            DecodeError::TooLarge(max) => write!(f, "an object larger than {}", crate::config::read::human_bytes(*max)),
            DecodeError::Stopped(why) => f.write_str(why),
        }
    }
}

/// Errors are equal when they read the same (a JSON error has no other equality).
impl PartialEq for DecodeError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeError::Json(e) => Some(e),
            _ => None,
        }
    }
}

impl From<serde_json::Error> for DecodeError {
    fn from(e: serde_json::Error) -> Self {
        DecodeError::Json(e)
    }
}

/// Decodes one object of `resource` (its `kind`, when present, must match).
pub fn decode(resource: Resource, json: &[u8]) -> Result<Object, DecodeError> {
    let raw: Maybe<RawObject> = serde_json::from_slice(json)?;
    let raw = raw.object("the object")?.ok_or(DecodeError::Missing("the object"))?;
    Ok(convert(resource, raw).map_err(|r| r.error)?.object)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::ops::ControlFlow;

    use super::lenient::{Capped, Leaf};
    use super::objects::parse_rfc3339;
    use super::*;
    use crate::kubernetes::model::{Endpoint, EndpointSlice, Namespace, ObjectKey, Pod, Port, Service, ServiceKind};

    fn service(json: &str) -> Service {
        match decode(Resource::Services, json.as_bytes()).unwrap() {
            Object::Service(s) => s,
            other => panic!("not a service: {other:?}"),
        }
    }

    fn slice(json: &str) -> EndpointSlice {
        match decode(Resource::EndpointSlices, json.as_bytes()).unwrap() {
            Object::EndpointSlice(s) => s,
            other => panic!("not a slice: {other:?}"),
        }
    }

    fn pod(json: &str) -> Pod {
        match decode(Resource::Pods, json.as_bytes()).unwrap() {
            Object::Pod(p) => p,
            other => panic!("not a pod: {other:?}"),
        }
    }

    fn port(name: &str, protocol: &str, port: i32) -> Port {
        Port {
            name: name.into(),
            protocol: protocol.into(),
            port,
        }
    }

    fn error(resource: Resource, json: &str) -> String {
        decode(resource, json.as_bytes()).unwrap_err().to_string()
    }

    /// A Service as `kubectl get svc -o json` shows it, with the fields DNS does not use.
    const KUBE_DNS: &str = r#"{
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"Service\"}\n",
                "prometheus.io/port": "9153"
            },
            "creationTimestamp": "2024-01-10T09:00:00Z",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
            "managedFields": [{
                "apiVersion": "v1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:ports": {"k:{\"port\":53,\"protocol\":\"TCP\"}": {".": {}}}}},
                "manager": "kubeadm", "operation": "Update", "time": "2024-01-10T09:00:00Z"
            }],
            "name": "Kube-DNS",
            "namespace": "kube-system",
            "resourceVersion": "12345",
            "uid": "0b3f2b8e-8f38-4a4e-9d2b-3c1c6f1e2a11"
        },
        "spec": {
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10", "fd00:10:96::a"],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4", "IPv6"],
            "ipFamilyPolicy": "PreferDualStack",
            "ports": [
                {"name": "DNS", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": "dns-tcp"},
                {"name": "metrics", "port": 9153, "targetPort": 9153}
            ],
            "selector": {"k8s-app": "kube-dns"},
            "sessionAffinity": "None",
            "type": "ClusterIP",
            "futureField": {"nested": [1, 2, {"x": null}]}
        },
        "status": {"loadBalancer": {}}
    }"#;

    /// CoreDNS `object.ToService`: `ExternalIPs` is `spec.externalIPs` then each
    /// load-balancer ingress point, its `ip` else its `hostname`.
    #[test]
    fn service_keeps_external_and_load_balancer_addresses_in_coredns_order() {
        use crate::kubernetes::model::ExternalIp;
        let s = service(
            r#"{"metadata":{"name":"lb","namespace":"ns"},
                "spec":{"type":"LoadBalancer","clusterIP":"10.0.0.1","externalIPs":["192.0.2.1","bad","192.0.2.1"]},
                "status":{"loadBalancer":{"ingress":[
                    {"ip":"198.51.100.7","hostname":"ignored.example","ipMode":"VIP"},
                    {"hostname":"LB-1.Example.com."},
                    {"ip":"2001:db8::7"},
                    {"hostname":"not a name"},
                    {}
                ]}}}"#,
        );
        assert_eq!(
            s.external_ips,
            [
                ExternalIp::Addr("192.0.2.1".parse().unwrap()),
                ExternalIp::Addr("198.51.100.7".parse().unwrap()),
                ExternalIp::Host("lb-1.example.com".into()),
                ExternalIp::Addr("2001:db8::7".parse().unwrap()),
            ]
        );
        // Most services have none: nothing is kept.
        assert!(service(KUBE_DNS).external_ips.is_empty());
        // Bounded: a list over the cap rejects the Service whole.
        let many = vec![r#""192.0.2.1""#; 257].join(",");
        let e = decode(
            Resource::Services,
            format!(r#"{{"metadata":{{"name":"a","namespace":"ns"}},"spec":{{"externalIPs":[{many}]}}}}"#).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "too_many_addresses");
        let many = vec![r#"{"ip":"192.0.2.1"}"#; 257].join(",");
        let e = decode(
            Resource::Services,
            format!(
                r#"{{"metadata":{{"name":"a","namespace":"ns"}},"status":{{"loadBalancer":{{"ingress":[{many}]}}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "too_many_addresses");
        // Wrong types are errors, as for every other field.
        assert_eq!(
            error(
                Resource::Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"externalIPs":"192.0.2.1"}}"#
            ),
            "spec.externalIPs: expected an array, found a string"
        );
    }

    #[test]
    fn service_keeps_what_dns_needs() {
        let s = service(KUBE_DNS);
        assert_eq!(&*s.namespace, "kube-system");
        assert_eq!(&*s.name, "kube-dns", "names are lower-cased");
        assert_eq!(&*s.resource_version, "12345");
        assert_eq!(s.kind, ServiceKind::ClusterIp);
        assert_eq!(
            s.cluster_ips,
            [
                "10.96.0.10".parse::<IpAddr>().unwrap(),
                "fd00:10:96::a".parse().unwrap()
            ]
        );
        assert_eq!(&*s.external_name, "");
        // Port names and protocols lower-cased; a missing protocol is TCP.
        assert_eq!(
            s.ports,
            [
                port("dns", "udp", 53),
                port("dns-tcp", "tcp", 53),
                port("metrics", "tcp", 9153)
            ]
        );
    }

    #[test]
    fn service_cluster_ip_fallback_and_invalid_ips() {
        let s = service(r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"clusterIP":"10.0.0.1"}}"#);
        assert_eq!(s.cluster_ips, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        let s =
            service(r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"clusterIPs":[],"clusterIP":"10.0.0.2"}}"#);
        assert_eq!(s.cluster_ips, ["10.0.0.2".parse::<IpAddr>().unwrap()]);
        // Invalid addresses are skipped, the valid ones kept; `clusterIPs` wins over `clusterIP`.
        let s = service(
            r#"{"metadata":{"name":"a","namespace":"ns"},
                "spec":{"clusterIP":"10.0.0.9","clusterIPs":["10.0.0.300","fd00::1"]}}"#,
        );
        assert_eq!(s.kind, ServiceKind::ClusterIp);
        assert_eq!(s.cluster_ips, ["fd00::1".parse::<IpAddr>().unwrap()]);
        // More than two (one per family) is not a Service the API holds.
        assert_eq!(
            error(
                Resource::Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"clusterIPs":["10.0.0.1","fd00::1",""]}}"#
            ),
            "spec.clusterIPs: 3 elements, more than the API allows (2)"
        );
        // No IP at all (not yet allocated) is still a ClusterIP service, with nothing to answer.
        let s = service(r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{}}"#);
        assert_eq!((s.kind, s.cluster_ips.len()), (ServiceKind::ClusterIp, 0));
    }

    #[test]
    fn service_headless_and_external_name() {
        let s = service(
            r#"{"kind":"Service","metadata":{"name":"db","namespace":"ns","resourceVersion":"7"},
                "spec":{"clusterIP":"None","clusterIPs":["None"],"type":"ClusterIP",
                        "ports":[{"name":"pg","port":5432,"protocol":"TCP"}]}}"#,
        );
        assert_eq!(s.kind, ServiceKind::Headless);
        assert!(s.cluster_ips.is_empty());
        // Headless iff the *first* cluster IP is "None".
        let s = service(r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"clusterIPs":["10.0.0.1","None"]}}"#);
        assert_eq!(s.kind, ServiceKind::ClusterIp);

        let s = service(
            r#"{"metadata":{"name":"ext","namespace":"ns"},
                "spec":{"type":"ExternalName","externalName":"Example.COM.","clusterIP":"10.0.0.1"}}"#,
        );
        assert_eq!(s.kind, ServiceKind::ExternalName);
        assert_eq!(&*s.external_name, "Example.COM.", "kept as given");
        assert!(s.cluster_ips.is_empty());
        // No ports: the sentinel, so that the name still answers.
        assert_eq!(s.ports, [port("", "tcp", -1)]);
    }

    #[test]
    fn service_without_ports_gets_the_sentinel() {
        for spec in [r#"{}"#, r#"{"ports":null}"#, r#"{"ports":[]}"#] {
            let json = format!(r#"{{"metadata":{{"name":"a","namespace":"ns"}},"spec":{spec}}}"#);
            assert_eq!(service(&json).ports, [port("", "tcp", -1)], "{spec}");
        }
    }

    /// An EndpointSlice as the EndpointSlice controller writes it.
    const SLICE: &str = r#"{
        "addressType": "IPv4",
        "apiVersion": "discovery.k8s.io/v1",
        "endpoints": [
            {"addresses": ["10.244.1.5"], "conditions": {"ready": true, "serving": true, "terminating": false},
             "hostname": "Web-0", "nodeName": "node-1",
             "targetRef": {"kind": "Pod", "name": "Web-0", "namespace": "default", "uid": "1b"},
             "zone": "zone-a"},
            {"addresses": ["10.244.2.6", "not-an-ip", "10.244.2.7"],
             "targetRef": {"kind": "Pod", "name": "a-pod-name-that-is-exactly-sixty-four-characters-long-0123456789"}},
            {"addresses": ["10.244.3.8"], "conditions": {"ready": false, "serving": true, "terminating": true},
             "targetRef": {"kind": "Pod", "name": "web-2"}},
            {"addresses": ["10.244.4.9"], "conditions": {}, "targetRef": {"kind": "Node", "name": "node-4"}},
            {"addresses": ["999.1.1.1"], "conditions": {"ready": true}}
        ],
        "kind": "EndpointSlice",
        "metadata": {
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2024-05-01T10:00:00.5Z"},
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "generateName": "web-",
            "generation": 4,
            "labels": {
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": "Web"
            },
            "managedFields": [{"manager": "kube-controller-manager", "fieldsV1": {"f:endpoints": {}}}],
            "name": "web-abcde",
            "namespace": "default",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "9c"}],
            "resourceVersion": "889"
        },
        "ports": [
            {"name": "HTTP", "port": 8080, "protocol": "TCP"},
            {"port": 9090, "protocol": "UDP"},
            {"name": "any", "protocol": "SCTP"}
        ]
    }"#;

    #[test]
    fn endpoint_slice_keeps_ready_endpoints_only() {
        let s = slice(SLICE);
        assert_eq!(
            (&*s.namespace, &*s.name, &*s.resource_version),
            ("default", "web-abcde", "889")
        );
        assert_eq!(&*s.service, "web");
        assert_eq!(s.last_change_trigger, Some(1_714_557_600.5));
        assert_eq!(
            s.ports,
            [
                port("http", "tcp", 8080),
                port("", "udp", 9090),
                port("any", "sctp", -1)
            ]
        );
        let ip = |s: &str| (s.parse::<IpAddr>().unwrap(), Box::<str>::from(s));
        assert_eq!(
            s.endpoints,
            [
                Endpoint {
                    addresses: vec![ip("10.244.1.5")],
                    hostname: Some("web-0".into()),
                    pod_name: Some("web-0".into()),
                    node_name: Some("node-1".into()),
                },
                // `ready` absent counts as ready; the invalid address is skipped; a
                // 64-character target name is not kept.
                Endpoint {
                    addresses: vec![ip("10.244.2.6"), ip("10.244.2.7")],
                    hostname: None,
                    pod_name: None,
                    node_name: None,
                },
                // ready: false is skipped whatever serving says; a Node target is no pod name.
                Endpoint {
                    addresses: vec![ip("10.244.4.9")],
                    hostname: None,
                    pod_name: None,
                    node_name: None
                },
                // The endpoint with only an invalid address is dropped.
            ]
        );
    }

    #[test]
    fn endpoint_slice_nulls_and_defaults() {
        // Go encodes nil slices as null; a slice without the label belongs to no service.
        let s = slice(
            r#"{"addressType":"IPv4","endpoints":null,"ports":null,
                "metadata":{"name":"s","namespace":"ns","labels":{"app":"x"},
                            "annotations":{"endpoints.kubernetes.io/last-change-trigger-time":"yesterday"}}}"#,
        );
        assert!(s.endpoints.is_empty());
        assert_eq!(s.ports, [port("", "tcp", -1)]);
        assert_eq!(&*s.service, "");
        assert_eq!(s.last_change_trigger, None, "an unparseable trigger time is dropped");
        let s = slice(r#"{"metadata":{"name":"s","namespace":"ns"},"endpoints":[{"addresses":["fd00::5"]}]}"#);
        assert_eq!(
            s.endpoints[0].addresses,
            [("fd00::5".parse().unwrap(), "fd00::5".into())]
        );
    }

    #[test]
    fn pods_and_namespaces() {
        let p = pod(r#"{
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "default", "resourceVersion": "55",
                         "labels": {"app": "web"}, "managedFields": [{"manager": "kubelet"}]},
            "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}],
                     "hostname": "web-0", "nodeName": "node-1"},
            "status": {"phase": "Running", "podIP": "10.244.1.5",
                       "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}], "conditions": [{"type": "Ready"}]}
        }"#);
        assert_eq!(
            p,
            Pod {
                namespace: "default".into(),
                name: "web-0".into(),
                resource_version: "55".into(),
                pod_ip: "10.244.1.5".into(),
                terminating: false
            }
        );
        let p = pod(
            r#"{"metadata":{"name":"p","namespace":"ns","deletionTimestamp":"2024-05-01T10:00:00Z"},
                        "status":{"phase":"Running","podIP":"10.0.0.1"}}"#,
        );
        assert!(p.terminating);
        let p =
            pod(r#"{"metadata":{"name":"p","namespace":"ns","deletionTimestamp":null},"status":{"phase":"Pending"}}"#);
        assert_eq!((&*p.pod_ip, p.terminating), ("", false));

        let ns = decode(
            Resource::Namespaces,
            br#"{"apiVersion":"v1","kind":"Namespace",
                 "metadata":{"name":"kube-system","labels":{"kubernetes.io/metadata.name":"kube-system"},
                             "resourceVersion":"4"},
                 "spec":{"finalizers":["kubernetes"]},"status":{"phase":"Active"}}"#,
        )
        .unwrap();
        assert_eq!(
            ns,
            Object::Namespace(Namespace {
                name: "kube-system".into()
            })
        );
        assert_eq!(
            ns.key(),
            ObjectKey {
                namespace: "".into(),
                name: "kube-system".into()
            }
        );
    }

    #[test]
    fn malformed_objects_are_errors() {
        use Resource::*;
        let cases: &[(Resource, &str, &str)] = &[
            (
                Services,
                r#"{"metadata":{"name":1,"namespace":"ns"}}"#,
                "metadata.name: expected a string, found an integer",
            ),
            (
                Services,
                r#"{"metadata":{"namespace":"ns"}}"#,
                "metadata.name is missing",
            ),
            (
                Services,
                r#"{"metadata":{"name":"","namespace":"ns"}}"#,
                "metadata.name is missing",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a"}}"#,
                "metadata.namespace is missing",
            ),
            (
                Services,
                r#"{"metadata":"x"}"#,
                "metadata: expected an object, found a string",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":[1]}"#,
                "spec: expected an object, found an array",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"ports":[{"port":"80"}]}}"#,
                "spec.ports[].port: expected an integer, found a string",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"ports":[{"port":70000}]}}"#,
                "spec.ports[].port: 70000 is out of range",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"ports":[{"port":-5}]}}"#,
                "spec.ports[].port: -5 is out of range",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"ports":[{"port":99999999999999999999999}]}}"#,
                "spec.ports[].port: expected an integer, found a fractional or huge number",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"ports":[{"port":18446744073709551615}]}}"#,
                "spec.ports[].port: expected an integer, found a fractional or huge number",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"clusterIPs":"10.0.0.1"}}"#,
                "spec.clusterIPs: expected an array, found a string",
            ),
            (
                Services,
                r#"{"kind":"Pod","metadata":{"name":"a","namespace":"ns"}}"#,
                "expected a Service, found a Pod",
            ),
            (
                EndpointSlices,
                r#"{"metadata":{"name":"a","namespace":"ns"},"endpoints":[{"addresses":[1]}]}"#,
                "endpoints[].addresses[]: expected a string, found an integer",
            ),
            (
                EndpointSlices,
                r#"{"metadata":{"name":"a","namespace":"ns"},"endpoints":[{"conditions":{"ready":"yes"}}]}"#,
                "endpoints[].conditions.ready: expected a boolean, found a string",
            ),
            (
                EndpointSlices,
                r#"{"metadata":{"name":"a","namespace":"ns","labels":{"kubernetes.io/service-name":true}}}"#,
                "metadata.labels[kubernetes.io/service-name]: expected a string, found a boolean",
            ),
            (
                Pods,
                r#"{"metadata":{"name":"a","namespace":"ns"},"status":{"podIP":[]}}"#,
                "status.podIP: expected a string, found an array",
            ),
            (Namespaces, r#"[]"#, "the object: expected an object, found an array"),
            (Namespaces, r#"null"#, "the object is missing"),
            (Namespaces, r#""x""#, "the object: expected an object, found a string"),
        ];
        for (resource, json, want) in cases {
            assert_eq!(error(*resource, json), *want, "{json}");
        }
        for broken in [r#"{"metadata":{"name":"a""#, "", "{", r#"{"metadata":{"name":"a"}} x"#] {
            let e = decode(Resource::Namespaces, broken.as_bytes()).unwrap_err();
            assert!(matches!(e, DecodeError::Json(_)), "{broken}: {e}");
            assert!(e.to_string().starts_with("invalid JSON: "), "{e}");
        }
    }

    /// A Service named `name` in `ns`, with `spec`.
    fn svc_json(ns: &str, name: &str, spec: &str) -> String {
        format!(r#"{{"metadata":{{"name":"{name}","namespace":"{ns}","resourceVersion":"3"}},"spec":{spec}}}"#)
    }

    #[test]
    fn names_follow_the_kubernetes_rules_and_are_never_cut() {
        use Resource::*;
        let label63 = "a".repeat(63);
        assert_eq!(&*service(&svc_json("ns", &label63, "{}")).name, label63);
        // 64 characters, and 10 MB: rejected whole, never cut to 63.
        for name in [format!("{label63}b"), "b".repeat(10 << 20)] {
            let e = decode(Services, svc_json("ns", &name, "{}").as_bytes()).unwrap_err();
            assert_eq!(e.reason(), "invalid_name");
            let text = e.to_string();
            assert!(text.starts_with("metadata.name: \""), "{text}");
            assert!(
                text.contains(&format!("({} bytes) must be a DNS-1123 label", name.len())),
                "{text}"
            );
            assert!(text.len() < 300, "the message shows the start of the value only");
        }
        let cases: &[(Resource, String, &str)] = &[
            (Services, svc_json("ns", "under_score", "{}"), "metadata.name"),
            (Services, svc_json("ns", "-a", "{}"), "metadata.name"),
            (Services, svc_json("n.s", "a", "{}"), "metadata.namespace"),
            (Services, svc_json(&"n".repeat(64), "a", "{}"), "metadata.namespace"),
            (
                Namespaces,
                format!(r#"{{"metadata":{{"name":"{}"}}}}"#, "n".repeat(64)),
                "metadata.name",
            ),
            (
                EndpointSlices,
                format!(r#"{{"metadata":{{"name":"{}","namespace":"ns"}}}}"#, "s".repeat(254)),
                "metadata.name",
            ),
            (
                Pods,
                r#"{"metadata":{"name":"a..b","namespace":"ns"}}"#.to_string(),
                "metadata.name",
            ),
        ];
        for (resource, json, field) in cases {
            match decode(*resource, json.as_bytes()) {
                Err(DecodeError::Invalid { field: f, .. }) => assert_eq!(f, *field, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
        // Subdomains may be longer than a label, and hold dots.
        let name = format!("{}.x", "s".repeat(250));
        let json = format!(r#"{{"metadata":{{"name":"{name}","namespace":"ns"}}}}"#);
        assert_eq!(&*slice(&json).name, name);
        assert_eq!(&*pod(r#"{"metadata":{"name":"web.0","namespace":"ns"}}"#).name, "web.0");
        // Upper case is lower-cased, as before (DNS ignores case).
        assert_eq!(&*service(&svc_json("NS", "Web", "{}")).name, "web");
    }

    #[test]
    fn fields_follow_the_kubernetes_rules() {
        use Resource::*;
        let slice_with = |endpoint: &str, ports: &str| {
            format!(
                r#"{{"metadata":{{"name":"s","namespace":"ns","labels":{{"kubernetes.io/service-name":"web"}}}},"endpoints":[{endpoint}],"ports":{ports}}}"#
            )
        };
        let long = "x".repeat(64);
        let cases: Vec<(Resource, String, &str)> = vec![
            (
                Services,
                svc_json("ns", "a", &format!(r#"{{"ports":[{{"name":"{long}","port":80}}]}}"#)),
                "spec.ports[].name",
            ),
            (
                Services,
                svc_json("ns", "a", r#"{"ports":[{"name":"http","port":80,"protocol":"ICMP"}]}"#),
                "spec.ports[].protocol",
            ),
            (
                Services,
                svc_json(
                    "ns",
                    "a",
                    &format!(r#"{{"type":"ExternalName","externalName":"{}.com"}}"#, "a.".repeat(126)),
                ),
                "spec.externalName",
            ),
            (
                Services,
                svc_json("ns", "a", r#"{"type":"ExternalName","externalName":"a b.com"}"#),
                "spec.externalName",
            ),
            (
                EndpointSlices,
                slice_with(&format!(r#"{{"addresses":["10.0.0.1"],"hostname":"{long}"}}"#), "[]"),
                "endpoints[].hostname",
            ),
            (
                EndpointSlices,
                slice_with(r#"{"addresses":["10.0.0.1"],"nodeName":"a_b"}"#, "[]"),
                "endpoints[].nodeName",
            ),
            (
                EndpointSlices,
                slice_with(
                    r#"{"addresses":["10.0.0.1"]}"#,
                    &format!(r#"[{{"name":"{long}","port":1}}]"#),
                ),
                "ports[].name",
            ),
            (
                EndpointSlices,
                r#"{"metadata":{"name":"s","namespace":"ns","labels":{"kubernetes.io/service-name":"a b"}}}"#
                    .to_string(),
                "metadata.labels[kubernetes.io/service-name]",
            ),
            (
                Pods,
                format!(
                    r#"{{"metadata":{{"name":"p","namespace":"ns"}},"status":{{"podIP":"{}"}}}}"#,
                    "1".repeat(65)
                ),
                "status.podIP",
            ),
            (
                Services,
                format!(
                    r#"{{"metadata":{{"name":"a","namespace":"ns","resourceVersion":"{}"}}}}"#,
                    "9".repeat(129)
                ),
                "metadata.resourceVersion",
            ),
        ];
        for (resource, json, field) in &cases {
            match decode(*resource, json.as_bytes()) {
                Err(e @ DecodeError::Invalid { .. }) => {
                    assert!(e.to_string().starts_with(&format!("{field}: ")), "{e}");
                    assert_eq!(e.reason(), "invalid_value", "{e}");
                }
                other => panic!("{json}: {other:?}"),
            }
        }
        // An ExternalName may end with a dot; its case is kept.
        let s = service(&svc_json(
            "ns",
            "a",
            r#"{"type":"ExternalName","externalName":"Example.COM."}"#,
        ));
        assert_eq!(&*s.external_name, "Example.COM.");
    }

    #[test]
    fn arrays_over_the_api_caps_are_rejected_without_being_built() {
        use Resource::*;
        let endpoints = |n: usize| vec![r#"{"addresses":["10.0.0.1"]}"#; n].join(",");
        let json = |n: usize| {
            format!(
                r#"{{"metadata":{{"name":"s","namespace":"ns"}},"endpoints":[{}]}}"#,
                endpoints(n)
            )
        };
        assert_eq!(slice(&json(1000)).endpoints.len(), 1000);
        let e = decode(EndpointSlices, json(1001).as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "endpoints: 1001 elements, more than the API allows (1000)"
        );
        assert_eq!(e.reason(), "too_many_endpoints");
        let addresses = vec![r#""10.0.0.1""#; 101].join(",");
        let e = decode(
            EndpointSlices,
            format!(r#"{{"metadata":{{"name":"s","namespace":"ns"}},"endpoints":[{{"addresses":[{addresses}]}}]}}"#)
                .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "too_many_addresses");
        let ports = (0..20_001)
            .map(|i| format!(r#"{{"port":{}}}"#, i % 65536))
            .collect::<Vec<_>>()
            .join(",");
        let e = decode(
            EndpointSlices,
            format!(r#"{{"metadata":{{"name":"s","namespace":"ns"}},"ports":[{ports}]}}"#).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "too_many_ports");
        let e = decode(
            Services,
            svc_json("ns", "a", &format!(r#"{{"ports":[{ports}]}}"#)).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "too_many_ports");
        // Elements past the cap are parsed past, not built: the array keeps N at most.
        let raw: Maybe<Capped<Leaf, 3>> = serde_json::from_str(r#"["a","b","c","d",{"e":[1,2]},null]"#).unwrap();
        match raw {
            Maybe::Present(c) => assert_eq!((c.items.len(), c.len), (3, 6)),
            _ => panic!(),
        }
    }

    #[test]
    fn a_modified_object_that_breaks_a_rule_is_rejected_with_its_key() {
        let bad_port = svc_json("ns", "web", r#"{"ports":[{"name":"-bad-","port":80}]}"#);
        match decode_event(Resource::Services, event_line("MODIFIED", &bad_port).as_bytes()).unwrap() {
            WatchEvent::Rejected {
                key,
                resource_version,
                error,
            } => {
                assert_eq!((&*key.namespace, &*key.name, &*resource_version), ("ns", "web", "3"));
                assert_eq!(error.reason(), "invalid_value");
            }
            other => panic!("{other:?}"),
        }
        // A malformed field of an object with a valid name: rejected with its key too.
        let mistyped = svc_json("ns", "web", r#"{"ports":"80"}"#);
        assert!(matches!(
            decode_event(Resource::Services, event_line("ADDED", &mistyped).as_bytes()),
            Ok(WatchEvent::Rejected { .. })
        ));
        // An invalid name was never stored: an error, no key.
        let long = svc_json("ns", &"w".repeat(64), "{}");
        for kind in ["ADDED", "MODIFIED", "DELETED"] {
            let e = decode_event(Resource::Services, event_line(kind, &long).as_bytes()).unwrap_err();
            assert_eq!(e.reason(), "invalid_name");
        }
    }

    fn event_line(kind: &str, object: &str) -> String {
        format!(r#"{{"type":"{kind}","object":{object}}}"#)
    }

    #[test]
    fn the_start_of_an_over_long_event_names_its_object() {
        let full = event_line(
            "MODIFIED",
            &format!(
                r#"{{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":{{"name":"web-x","namespace":"ns","resourceVersion":"9"}},"endpoints":[{}]}}"#,
                vec![r#"{"addresses":["10.0.0.1"]}"#; 100].join(",")
            ),
        );
        let cut = &full.as_bytes()[..500];
        match probe_event(Resource::EndpointSlices, cut, 500) {
            Some(WatchEvent::Rejected {
                key,
                resource_version,
                error,
            }) => {
                assert_eq!((&*key.namespace, &*key.name, &*resource_version), ("ns", "web-x", "9"));
                assert_eq!(error.reason(), "too_large");
                assert_eq!(error.to_string(), "an object larger than 500 bytes");
            }
            other => panic!("{other:?}"),
        }
        // Cut inside the metadata, of another kind, an invalid name, a bookmark: unknown.
        assert!(probe_event(Resource::EndpointSlices, &full.as_bytes()[..80], 80).is_none());
        assert!(probe_event(Resource::Services, cut, 500).is_none());
        let long = event_line(
            "ADDED",
            &format!(r#"{{"metadata":{{"name":"{}","namespace":"ns"}}}}"#, "n".repeat(300)),
        );
        assert!(probe_event(Resource::EndpointSlices, long.as_bytes(), 400).is_none());
        let bookmark = event_line("BOOKMARK", r#"{"metadata":{"resourceVersion":"5"},"x":"yyyyyyy"#);
        assert!(probe_event(Resource::Services, bookmark.as_bytes(), 60).is_none());
    }

    #[test]
    fn a_bounded_list_stops_at_a_huge_item_or_when_told() {
        let item = |name: &str, pad: usize| {
            format!(
                r#"{{"kind":"Deployment","metadata":{{"name":"{name}","namespace":"ns","annotations":{{"x":"{}"}}}}}}"#,
                "x".repeat(pad)
            )
        };
        // Many items of other kinds, each under the bound, far over it together.
        let many: Vec<String> = (0..100).map(|i| item(&format!("d{i}"), 100_000)).collect();
        let list = format!(r#"{{"kind":"List","metadata":{{}},"items":[{}]}}"#, many.join(","));
        let mut n = 0;
        let meta = decode_list_bounded(list.as_bytes(), None, 400_000, |_| {
            n += 1;
            ControlFlow::Continue(())
        });
        assert!(meta.is_ok(), "{meta:?}");
        assert_eq!(n, 0, "no item of a kind clusterdns reads");
        // One item over the bound.
        let list = format!(
            r#"{{"kind":"ServiceList","metadata":{{}},"items":[{},{}]}}"#,
            svc_json("ns", "a", "{}"),
            item("huge", 1_000_000)
        );
        let mut seen = Vec::new();
        let e = decode_list_bounded(list.as_bytes(), None, 400_000, |(_, i)| {
            seen.push(i.is_ok());
            ControlFlow::Continue(())
        })
        .unwrap_err();
        assert_eq!(
            (e.to_string(), seen),
            ("an object larger than 400000 bytes".to_string(), vec![true])
        );
        assert_eq!(e.reason(), "too_large");
        // The callback stops it.
        let list = format!(
            r#"{{"kind":"ServiceList","metadata":{{}},"items":[{},{}]}}"#,
            svc_json("ns", "a", "{}"),
            svc_json("ns", "b", "{}")
        );
        let e = decode_list_bounded(list.as_bytes(), None, 400_000, |_| ControlFlow::Break("enough")).unwrap_err();
        assert_eq!(e, DecodeError::Stopped("enough"));
    }

    #[test]
    fn list_items_come_with_their_resource() {
        // The second is rejected (a name over 63 characters), but by its kind a Service.
        let long = "x".repeat(64);
        let list = format!(
            r#"{{"kind":"List","metadata":{{}},"items":[{},{},{},{},null,{{"kind":7}}]}}"#,
            r#"{"kind":"Service","metadata":{"name":"a","namespace":"ns"}}"#,
            format_args!(r#"{{"kind":"Service","metadata":{{"name":"{long}","namespace":"ns"}}}}"#),
            r#"{"kind":"Namespace","metadata":{"name":"-bad-"}}"#,
            r#"{"metadata":{"name":"kindless"}}"#,
        );
        let mut items = Vec::new();
        decode_list_bounded(list.as_bytes(), None, 400_000, |(resource, item)| {
            items.push((resource, item.map_err(|e| e.reason())));
            ControlFlow::Continue(())
        })
        .unwrap();
        let resources: Vec<_> = items.iter().map(|(r, item)| (*r, item.is_ok())).collect();
        assert_eq!(
            resources,
            [
                (Some(Resource::Services), true),
                (Some(Resource::Services), false),
                (Some(Resource::Namespaces), false),
                // Neither the item nor the list tells.
                (None, false),
                (None, false),
                (None, false),
            ]
        );
        // In a list of one kind, an item that does not say is of that kind.
        let typed = format!(
            r#"{{"kind":"ServiceList","metadata":{{}},"items":[null,{}]}}"#,
            r#"{"kind":7}"#
        );
        let mut resources = Vec::new();
        decode_list_bounded(typed.as_bytes(), None, 400_000, |(resource, _)| {
            resources.push(resource);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(resources, [Some(Resource::Services), Some(Resource::Services)]);
    }

    #[test]
    fn list_streams_items_and_skips_bad_ones() {
        let json = r#"{
            "kind": "ServiceList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "1000", "continue": "eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ", "remainingItemCount": 7},
            "items": [
                {"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "10"}, "spec": {"clusterIP": "10.0.0.1"}},
                {"metadata": {"name": "b", "namespace": "ns"}, "spec": {"ports": [{"port": "http"}]}},
                {"metadata": {"name": "c", "namespace": "ns"}, "spec": {"clusterIP": "None"}}
            ]
        }"#;
        let run = |items: &mut Vec<Result<Object, DecodeError>>, via_reader: bool| {
            if via_reader {
                decode_list(json.as_bytes(), Some(Resource::Services), |i| items.push(i))
            } else {
                decode_list_slice(json.as_bytes(), Some(Resource::Services), |i| items.push(i))
            }
        };
        for via_reader in [false, true] {
            let mut items = Vec::new();
            let meta = run(&mut items, via_reader).unwrap();
            assert_eq!(
                meta,
                ListMeta {
                    resource_version: "1000".into(),
                    continue_token: Some("eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ".into())
                }
            );
            assert_eq!(items.len(), 3);
            assert_eq!(&*items[0].as_ref().unwrap().key().name, "a");
            assert_eq!(
                items[1].as_ref().unwrap_err().to_string(),
                "spec.ports[].port: expected an integer, found a string"
            );
            assert_eq!(&*items[2].as_ref().unwrap().key().name, "c");
        }
    }

    #[test]
    fn list_last_page_and_empty_lists() {
        let mut n = 0;
        let meta = decode_list_slice(
            br#"{"metadata":{"resourceVersion":"5","continue":""},"items":null,"kind":"PodList"}"#,
            Some(Resource::Pods),
            |_| n += 1,
        )
        .unwrap();
        assert_eq!((meta.resource_version.as_ref(), meta.continue_token, n), ("5", None, 0));
        let meta = decode_list_slice(br#"{"items":[]}"#, None, |_| n += 1).unwrap();
        assert_eq!(meta, ListMeta::default());
    }

    #[test]
    fn mixed_kind_list_as_kubectl_writes_it() {
        let json = r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[
            {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"default"}},
            {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm","namespace":"default"},"data":{"a":"b"}},
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},"spec":{"clusterIP":"10.0.0.1"}},
            {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"web-1","namespace":"default",
              "labels":{"kubernetes.io/service-name":"web"}},"endpoints":[{"addresses":["10.1.0.1"]}]},
            {"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-0","namespace":"default"},"status":{"podIP":"10.1.0.1"}},
            {"apiVersion":"v1","metadata":{"name":"no-kind"}}
        ]}"#;
        let mut items = Vec::new();
        decode_list_slice(json.as_bytes(), None, |i| items.push(i)).unwrap();
        let kinds: Vec<_> = items
            .iter()
            .map(|i| i.as_ref().map(|o| o.resource()).map_err(|e| e.to_string()))
            .collect();
        assert_eq!(
            kinds,
            [
                Ok(Resource::Namespaces),
                Ok(Resource::Services),
                Ok(Resource::EndpointSlices),
                Ok(Resource::Pods),
                Err("kind is missing".to_string())
            ]
        );
        // A single-kind list: items without `kind` are of the list's kind.
        let mut items = Vec::new();
        decode_list_slice(
            br#"{"kind":"NamespaceList","items":[{"metadata":{"name":"a"}}]}"#,
            None,
            |i| items.push(i.unwrap()),
        )
        .unwrap();
        assert_eq!(items, [Object::Namespace(Namespace { name: "a".into() })]);
    }

    #[test]
    fn broken_list_json_fails_the_list_after_the_good_items() {
        let mut n = 0;
        let e = decode_list(
            &br#"{"metadata":{"resourceVersion":"1"},"items":[{"metadata":{"name":"a"}},{"metadata":{"na"#[..],
            Some(Resource::Namespaces),
            |i| {
                i.unwrap();
                n += 1;
            },
        )
        .unwrap_err();
        assert!(matches!(e, DecodeError::Json(_)), "{e}");
        assert_eq!(n, 1);
        assert!(decode_list_slice(br#"[1,2]"#, None, |_| ()).is_err());
        assert!(decode_list_slice(br#"{"items":{}}"#, None, |_| ()).is_err());
        let e = decode_list_slice(br#"{"metadata":{"resourceVersion":5},"items":[]}"#, None, |_| ()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "metadata.resourceVersion: expected a string, found an integer"
        );
    }

    #[test]
    fn watch_events() {
        let event = |line: &str| decode_event(Resource::Services, line.as_bytes());
        let added = event(
            r#"{"type":"ADDED","object":{"kind":"Service","apiVersion":"v1",
                "metadata":{"name":"a","namespace":"ns","resourceVersion":"101","managedFields":[]},
                "spec":{"clusterIP":"10.0.0.1"}}}"#,
        )
        .unwrap();
        let WatchEvent::Upsert {
            object,
            resource_version,
        } = added
        else {
            panic!("{added:?}")
        };
        assert_eq!((object.resource(), &*resource_version), (Resource::Services, "101"));
        assert!(matches!(
            event(r#"{"object":{"metadata":{"name":"a","namespace":"ns","resourceVersion":"102"}},"type":"MODIFIED"}"#),
            Ok(WatchEvent::Upsert { .. })
        ));
        let deleted = event(
            r#"{"type":"DELETED","object":{"kind":"Service",
                "metadata":{"name":"A","namespace":"ns","resourceVersion":"103"},"spec":{"ports":"junk"}}}"#,
        );
        let key = ObjectKey {
            namespace: "ns".into(),
            name: "a".into(),
        };
        assert_eq!(
            deleted.unwrap(),
            WatchEvent::Delete {
                key,
                resource_version: "103".into()
            }
        );
        let bookmark = event(
            r#"{"type":"BOOKMARK","object":{"kind":"Service","apiVersion":"v1",
                "metadata":{"resourceVersion":"12746","annotations":{"k8s.io/initial-events-end":"true"}},"spec":{}}}"#,
        );
        assert_eq!(
            bookmark.unwrap(),
            WatchEvent::Bookmark {
                resource_version: "12746".into()
            }
        );
        let expired = event(
            r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                "message":"too old resource version: 1 (2)","reason":"Expired","code":410}}"#,
        );
        let status = ApiStatus {
            code: 410,
            reason: "Expired".into(),
            message: "too old resource version: 1 (2)".into(),
        };
        assert_eq!(expired.unwrap(), WatchEvent::Error(status));
        let namespaces = decode_event(
            Resource::Namespaces,
            br#"{"type":"ADDED","object":{"kind":"Namespace","metadata":{"name":"x","resourceVersion":"9"}}}"#,
        );
        assert!(matches!(namespaces, Ok(WatchEvent::Upsert { resource_version, .. }) if &*resource_version == "9"));

        for (line, want) in [
            (r#"{"type":"SYNC","object":{}}"#, "unknown watch event type \"SYNC\""),
            (r#"{"object":{}}"#, "type is missing"),
            (r#"{"type":"ADDED"}"#, "object is missing"),
            (
                r#"{"type":"BOOKMARK","object":{"metadata":{}}}"#,
                "metadata.resourceVersion is missing",
            ),
            (
                r#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"a","namespace":"b"}}}"#,
                "expected a Service, found a Pod",
            ),
            (
                r#"{"type":"DELETED","object":{"metadata":{"namespace":"b"}}}"#,
                "metadata.name is missing",
            ),
        ] {
            assert_eq!(event(line).unwrap_err().to_string(), want, "{line}");
        }
        assert!(matches!(
            event(r#"{"type":"ADDED","object":{"metadata":"#),
            Err(DecodeError::Json(_))
        ));
    }

    #[test]
    fn status_bodies() {
        let forbidden = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"services is forbidden: User \"system:anonymous\" cannot list resource \"services\"",
            "reason":"Forbidden","details":{"kind":"services"},"code":403}"#;
        let status = decode_status(forbidden).unwrap();
        assert_eq!((status.code, &*status.reason), (403, "Forbidden"));
        assert!(status.message.starts_with("services is forbidden"));
        assert_eq!(decode_status(b"<html>Bad Gateway</html>"), None);
        assert_eq!(decode_status(br#"{"kind":"Service"}"#), None);
        assert_eq!(
            decode_status(br#"{"kind":"Status","code":"x"}"#),
            Some(ApiStatus::default())
        );
    }

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2024-05-01T10:00:00Z"), Some(1_714_557_600.0));
        assert_eq!(parse_rfc3339("2024-05-01T12:00:00+02:00"), Some(1_714_557_600.0));
        assert_eq!(parse_rfc3339("2024-05-01T09:30:00.25-00:30"), Some(1_714_557_600.25));
        assert_eq!(parse_rfc3339("2000-02-29t23:59:59.123456z"), Some(951_868_799.123456));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1.0));
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T10:00:00",
            "2024-05-01 10:00:00Z",
            "2024-13-01T10:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T10:00:00.Z",
            "2024-05-01T10:00:00Zjunk",
            "2024-05-01T10:00:00+0200",
            "2024-05-01T10:00:00+25:00",
            "2024-0a-01T10:00:00Z",
            "２０２４-05-01T10:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
