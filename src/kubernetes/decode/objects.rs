//! Each resource's conversion from its JSON shape to the [`model`](crate::kubernetes::model),
//! as CoreDNS's `plugin/kubernetes/object` keeps it, with the API's validation rules
//! ([`limits`](crate::kubernetes::limits)): an object that breaks one is rejected whole.

use std::net::IpAddr;

use super::lenient::{Capped, Leaf, Maybe};
use super::shapes::{RawEndpoint, RawMeta, RawObject, RawPort, RawSpec, RawStatus};
use super::{DecodeError, check};
use crate::kubernetes::limits::{MAX_ENDPOINTS, MAX_POD_IP, MAX_RESOURCE_VERSION, MAX_SLICE_PORTS, Rule};
use crate::kubernetes::model::{
    Endpoint, EndpointSlice, ExternalIp, Namespace, Object, ObjectKey, Pod, Port, Resource, Service, ServiceKind,
};

/// An object with the resourceVersion it had (which Namespaces do not keep).
pub(super) struct Decoded {
    pub(super) object: Object,
    pub(super) resource_version: Box<str>,
}

/// Why an object was not taken, with its key when its name and namespace are valid (so
/// that a version stored before can be removed).
pub(super) struct Rejection {
    pub(super) key: Option<ObjectKey>,
    pub(super) resource_version: Box<str>,
    pub(super) error: DecodeError,
}

impl From<DecodeError> for Rejection {
    fn from(error: DecodeError) -> Self {
        Rejection {
            key: None,
            resource_version: "".into(),
            error,
        }
    }
}

/// An object's name, namespace and resourceVersion.
pub(super) struct Identity {
    pub(super) namespace: Box<str>,
    pub(super) name: Box<str>,
    pub(super) resource_version: Box<str>,
}

pub(super) fn check_kind(resource: Resource, kind: Leaf) -> Result<(), DecodeError> {
    match kind.string("kind")? {
        Some(kind) if &*kind != resource.kind() => Err(DecodeError::WrongKind {
            expected: resource.kind(),
            found: kind,
        }),
        _ => Ok(()),
    }
}

/// Names are lower-cased so that every key and DNS label is compared in one case (DNS
/// names are case-insensitive; the API already requires lower-case object names), and
/// must be what the API allows: Namespace and Service names are DNS-1123 labels
/// (`ValidateNamespaceName`; `ValidateServiceName` is the stricter DNS-1035 label, or a
/// DNS-1123 label with `RelaxedServiceNameValidation`, which is what is taken here),
/// EndpointSlice and Pod names DNS-1123 subdomains (`ValidateEndpointSliceName`,
/// `ValidatePodName`), `metadata.namespace` a DNS-1123 label.
pub(super) fn identity(resource: Resource, meta: &mut RawMeta) -> Result<Identity, DecodeError> {
    let name = std::mem::take(&mut meta.name)
        .string("metadata.name")?
        .filter(|n| !n.is_empty());
    let name = lower(name.ok_or(DecodeError::Missing("metadata.name"))?);
    let name_rule = match resource {
        Resource::Namespaces | Resource::Services => Rule::Label,
        Resource::EndpointSlices | Resource::Pods => Rule::Subdomain,
    };
    check("metadata.name", &name, name_rule)?;
    let namespace = std::mem::take(&mut meta.namespace).string("metadata.namespace")?;
    let namespace = match resource {
        // Namespaces are cluster-scoped: their key has no namespace.
        Resource::Namespaces => "".into(),
        _ => lower(
            namespace
                .filter(|n| !n.is_empty())
                .ok_or(DecodeError::Missing("metadata.namespace"))?,
        ),
    };
    if resource != Resource::Namespaces {
        check("metadata.namespace", &namespace, Rule::Label)?;
    }
    let resource_version = std::mem::take(&mut meta.resource_version).string("metadata.resourceVersion")?;
    if let Some(rv) = &resource_version {
        check("metadata.resourceVersion", rv, Rule::MaxLen(MAX_RESOURCE_VERSION))?;
    }
    Ok(Identity {
        namespace,
        name,
        resource_version: resource_version.unwrap_or_default(),
    })
}

/// The object of `resource` in `raw`, or why it is not taken (with its key when the
/// object got as far as a valid name).
pub(super) fn convert(resource: Resource, raw: RawObject) -> Result<Decoded, Rejection> {
    check_kind(resource, raw.kind)?;
    let mut meta = raw.metadata.object("metadata")?.unwrap_or_default();
    let id = identity(resource, &mut meta)?;
    let key = ObjectKey {
        namespace: id.namespace.clone(),
        name: id.name.clone(),
    };
    let resource_version = id.resource_version.clone();
    let object = match resource {
        Resource::Namespaces => Ok(Object::Namespace(Namespace { name: id.name })),
        Resource::Services => raw
            .spec
            .object("spec")
            .and_then(|spec| service(id, spec.unwrap_or_default(), raw.status))
            .map(Object::Service),
        Resource::EndpointSlices => endpoint_slice(id, meta, raw.endpoints, raw.ports).map(Object::EndpointSlice),
        Resource::Pods => pod(id, meta, raw.status).map(Object::Pod),
    };
    match object {
        Ok(object) => Ok(Decoded {
            object,
            resource_version,
        }),
        Err(error) => Err(Rejection {
            key: Some(key),
            resource_version,
            error,
        }),
    }
}

/// A Service as CoreDNS's `object.ToService` keeps it.
pub(super) fn service(id: Identity, spec: RawSpec, status: Maybe<RawStatus>) -> Result<Service, DecodeError> {
    let service_type = spec.kind.string("spec.type")?;
    let mut ips = Vec::new();
    for ip in spec.cluster_ips.items("spec.clusterIPs")? {
        ips.extend(ip.string("spec.clusterIPs[]")?);
    }
    // `clusterIPs` is newer than `clusterIP` (dual-stack, Kubernetes 1.20); CoreDNS falls
    // back to the single field when the list is empty.
    if ips.is_empty() {
        ips.extend(spec.cluster_ip.string("spec.clusterIP")?);
    }
    let kind = if service_type.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName
    } else if ips.first().is_some_and(|ip| &**ip == "None") {
        ServiceKind::Headless
    } else {
        ServiceKind::ClusterIp
    };
    let external_name = spec.external_name.string("spec.externalName")?;
    if let (ServiceKind::ExternalName, Some(target)) = (&kind, &external_name) {
        // `ValidateService`: a DNS-1123 subdomain, which may end with a dot.
        let target = target.strip_suffix('.').unwrap_or(target);
        if !target.is_empty() {
            check("spec.externalName", target, Rule::Subdomain)?;
        }
    }
    let (cluster_ips, external_name) = match kind {
        // Text that is not an address (an unassigned "" or a stray "None") answers nothing.
        ServiceKind::ClusterIp => (ips.iter().filter_map(|ip| ip.parse().ok()).collect(), "".into()),
        ServiceKind::Headless => (Vec::new(), "".into()),
        ServiceKind::ExternalName => (Vec::new(), external_name.unwrap_or_default()),
    };
    Ok(Service {
        namespace: id.namespace,
        name: id.name,
        resource_version: id.resource_version,
        kind,
        cluster_ips,
        external_name,
        ports: ports(spec.ports, &SERVICE_PORTS)?,
        external_ips: external_ips(spec.external_ips, status)?,
    })
}

/// CoreDNS's `ExternalIPs` of a Service: `spec.externalIPs`, then the
/// `status.loadBalancer.ingress[]` points, an `ip` before a `hostname`, each at most
/// [`MAX_EXTERNAL_ADDRESSES`](crate::kubernetes::limits::MAX_EXTERNAL_ADDRESSES) per
/// list. Text that is not an address is skipped (it could not be answered), as is an
/// ingress host name that is not a DNS-1123 subdomain; a repeated entry is kept once.
fn external_ips(
    spec: Maybe<Capped<Leaf, { crate::kubernetes::limits::MAX_EXTERNAL_ADDRESSES }>>,
    status: Maybe<RawStatus>,
) -> Result<Vec<ExternalIp>, DecodeError> {
    let mut out: Vec<ExternalIp> = Vec::new();
    let mut push = |e: ExternalIp| {
        // At most 2 x 256 entries: a linear check keeps this simple and bounded.
        if !out.contains(&e) {
            out.push(e);
        }
    };
    for ip in spec.items("spec.externalIPs")? {
        if let Some(ip) = ip.string("spec.externalIPs[]")?.and_then(|t| t.parse().ok()) {
            push(ExternalIp::Addr(ip));
        }
    }
    let Some(status) = status.object("status")? else {
        return Ok(out);
    };
    let lb = status.load_balancer.object("status.loadBalancer")?.unwrap_or_default();
    for point in lb.ingress.items("status.loadBalancer.ingress")? {
        let point = point.object("status.loadBalancer.ingress[]")?.unwrap_or_default();
        let ip = point.ip.string("status.loadBalancer.ingress[].ip")?.unwrap_or_default();
        let host = point
            .hostname
            .string("status.loadBalancer.ingress[].hostname")?
            .unwrap_or_default();
        if !ip.is_empty() {
            if let Ok(ip) = ip.parse() {
                push(ExternalIp::Addr(ip));
            }
            continue;
        }
        let host = lower(host);
        let host = host.strip_suffix('.').unwrap_or(&host);
        if Rule::Subdomain.allows(host) {
            push(ExternalIp::Host(host.into()));
        }
    }
    Ok(out)
}

/// Field names of a port list, for errors.
pub(super) struct PortFields {
    list: &'static str,
    item: &'static str,
    name: &'static str,
    protocol: &'static str,
    port: &'static str,
}

pub(super) const SERVICE_PORTS: PortFields = PortFields {
    list: "spec.ports",
    item: "spec.ports[]",
    name: "spec.ports[].name",
    protocol: "spec.ports[].protocol",
    port: "spec.ports[].port",
};

pub(super) const SLICE_PORTS: PortFields = PortFields {
    list: "ports",
    item: "ports[]",
    name: "ports[].name",
    protocol: "ports[].protocol",
    port: "ports[].port",
};

/// Ports of a Service or an EndpointSlice. No ports becomes CoreDNS's sentinel port -1
/// (`object/service.go`, `object/endpoint.go`), so the names still answer A queries.
/// A port's name is a DNS-1123 label (`validateServicePort`, the discovery API's
/// `validatePorts`: it becomes the `_name` label of SRV names), its protocol TCP, UDP
/// or SCTP.
pub(super) fn ports<const N: usize>(
    raw: Maybe<Capped<Maybe<RawPort>, N>>,
    fields: &PortFields,
) -> Result<Vec<Port>, DecodeError> {
    let mut ports = Vec::new();
    for port in raw.items(fields.list)? {
        let port = port.object(fields.item)?.unwrap_or_default();
        let number = match port.port.integer(fields.port)? {
            // EndpointSlice ports may omit the number (all ports of the endpoints).
            None => -1,
            Some(n @ 0..=65535) => n as i32,
            Some(n) => {
                return Err(DecodeError::OutOfRange {
                    field: fields.port,
                    value: n,
                });
            }
        };
        let name = lower(port.name.string(fields.name)?.unwrap_or_default());
        if !name.is_empty() {
            check(fields.name, &name, Rule::Label)?;
        }
        // TCP is the API's default protocol.
        let protocol = lower(port.protocol.string(fields.protocol)?.unwrap_or_else(|| "tcp".into()));
        check(fields.protocol, &protocol, Rule::Protocol)?;
        ports.push(Port {
            name,
            protocol,
            port: number,
        });
    }
    if ports.is_empty() {
        ports.push(Port {
            name: "".into(),
            protocol: "tcp".into(),
            port: -1,
        });
    }
    Ok(ports)
}

/// An EndpointSlice as CoreDNS's `object.EndpointSliceToEndpoints` keeps it.
/// Limits (the discovery API's validation): at most 1,000 endpoints, 100 addresses an
/// endpoint, 20,000 ports; a `hostname` is a DNS-1123 label, a `nodeName` a DNS-1123
/// subdomain, the service-name label a label value.
pub(super) fn endpoint_slice(
    id: Identity,
    meta: RawMeta,
    endpoints: Maybe<Capped<Maybe<RawEndpoint>, MAX_ENDPOINTS>>,
    raw_ports: Maybe<Capped<Maybe<RawPort>, MAX_SLICE_PORTS>>,
) -> Result<EndpointSlice, DecodeError> {
    let service = meta
        .labels
        .entry("metadata.labels")?
        .string("metadata.labels[kubernetes.io/service-name]")?;
    if let Some(service) = &service {
        check("metadata.labels[kubernetes.io/service-name]", service, Rule::LabelValue)?;
    }
    // Only a metric depends on the trigger time: a malformed one is dropped, not fatal.
    let trigger = meta.annotations.entry("metadata.annotations")?;
    let last_change_trigger = match trigger {
        Leaf::Str(t) => parse_rfc3339(&t),
        _ => None,
    };
    let mut ready = Vec::new();
    for endpoint in endpoints.items("endpoints")? {
        let endpoint = endpoint.object("endpoints[]")?.unwrap_or_default();
        let conditions = endpoint
            .conditions
            .object("endpoints[].conditions")?
            .unwrap_or_default();
        // Kubernetes: "ready" absent means unknown, to be treated as ready; CoreDNS
        // (`endpointsliceReady`) ignores serving and terminating.
        if conditions.ready.boolean("endpoints[].conditions.ready")? == Some(false) {
            continue;
        }
        let mut addresses = Vec::new();
        for address in endpoint.addresses.items("endpoints[].addresses")? {
            let Some(text) = address.string("endpoints[].addresses[]")? else {
                continue;
            };
            // An address that does not parse cannot be answered; the others still can.
            if let Ok(ip) = text.parse::<IpAddr>() {
                addresses.push((ip, text));
            }
        }
        let hostname = endpoint
            .hostname
            .string("endpoints[].hostname")?
            .filter(|h| !h.is_empty())
            .map(lower);
        if let Some(hostname) = &hostname {
            check("endpoints[].hostname", hostname, Rule::Label)?;
        }
        let target = endpoint.target_ref.object("endpoints[].targetRef")?.unwrap_or_default();
        let target_kind = target.kind.string("endpoints[].targetRef.kind")?;
        let target_name = target.name.string("endpoints[].targetRef.name")?;
        // CoreDNS keeps the target name only below 64 characters: longer is not a DNS label.
        let pod_name = target_name
            .filter(|n| target_kind.as_deref() == Some("Pod") && !n.is_empty() && n.len() < 64)
            .map(lower);
        let node_name = endpoint.node_name.string("endpoints[].nodeName")?;
        if let Some(node) = node_name.as_deref().filter(|n| !n.is_empty()) {
            check("endpoints[].nodeName", node, Rule::Subdomain)?;
        }
        if !addresses.is_empty() {
            ready.push(Endpoint {
                addresses,
                hostname,
                pod_name,
                node_name,
            });
        }
    }
    Ok(EndpointSlice {
        namespace: id.namespace,
        name: id.name,
        resource_version: id.resource_version,
        service: lower(service.unwrap_or_default()),
        endpoints: ready,
        ports: ports(raw_ports, &SLICE_PORTS)?,
        last_change_trigger,
    })
}

/// A Pod as CoreDNS's `object.ToPod` keeps it.
pub(super) fn pod(id: Identity, meta: RawMeta, status: Maybe<RawStatus>) -> Result<Pod, DecodeError> {
    let pod_ip = status
        .object("status")?
        .map_or(Leaf::Absent, |s| s.pod_ip)
        .string("status.podIP")?;
    if let Some(ip) = &pod_ip {
        check("status.podIP", ip, Rule::MaxLen(MAX_POD_IP))?;
    }
    let terminating = meta
        .deletion_timestamp
        .string("metadata.deletionTimestamp")?
        .is_some_and(|t| !t.is_empty());
    Ok(Pod {
        namespace: id.namespace,
        name: id.name,
        resource_version: id.resource_version,
        pod_ip: pod_ip.unwrap_or_default(),
        terminating,
    })
}

pub(super) fn lower(s: Box<str>) -> Box<str> {
    let mut s = s.into_string();
    s.make_ascii_lowercase();
    s.into_boxed_str()
}

/// Parses an RFC 3339 timestamp as Kubernetes writes `metav1.Time` and `MicroTime`
/// (`2024-05-01T10:00:00Z`, `2024-05-01T10:00:00.123456+02:00`) into Unix seconds.
pub(super) fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let digits = b.get(from..to)?;
        digits
            .iter()
            .try_fold(0i64, |n, &d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut fraction = 0.0;
    if sep(at, b".") {
        let start = at + 1;
        at = start;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return None;
        }
        fraction = s[start - 1..at].parse::<f64>().ok()?;
    }
    let offset = match b.get(at)? {
        b'Z' | b'z' if at + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if at + 6 == b.len() && sep(at + 3, b":") => {
            let (h, m) = (num(at + 1, at + 3)?, num(at + 4, at + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let offset = h * 3600 + m * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(seconds as f64 + fraction)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
pub(super) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
