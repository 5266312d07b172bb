//! The Kubernetes objects as DNS needs them: only the fields the kubernetes plugin
//! reads (reference: CoreDNS `plugin/kubernetes/object`), decoded once when they arrive,
//! and the events the API watchers send the snapshot builder.

use std::net::IpAddr;

/// The resources clusterdns watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Namespaces,
    Services,
    EndpointSlices,
    Pods,
}

impl Resource {
    /// The collection's path under the API root, as listed and watched.
    pub fn path(self) -> &'static str {
        match self {
            Resource::Namespaces => "/api/v1/namespaces",
            Resource::Services => "/api/v1/services",
            Resource::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
            Resource::Pods => "/api/v1/pods",
        }
    }

    /// The `kind` of its objects.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::Namespaces => "Namespace",
            Resource::Services => "Service",
            Resource::EndpointSlices => "EndpointSlice",
            Resource::Pods => "Pod",
        }
    }

    /// Lower-case plural name, for logs and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Namespaces => "namespaces",
            Resource::Services => "services",
            Resource::EndpointSlices => "endpointslices",
            Resource::Pods => "pods",
        }
    }
}

/// An object's identity within its resource: namespace (empty for Namespaces) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: Box<str>,
    pub name: Box<str>,
}

/// A Namespace: its existence is what matters (names in a namespace resolve only while
/// a Namespace object of that name exists).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub name: Box<str>,
}

/// A port of a Service or an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Port {
    /// The port's name, lower-cased ("" when unnamed).
    pub name: Box<str>,
    /// `tcp`, `udp` or `sctp` (lower-cased; "tcp" when the API omits it, its default).
    pub protocol: Box<str>,
    /// The port number; `-1` when the API object has no port number.
    pub port: i32,
}

/// What kind of DNS records a Service gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// Has cluster IPs (ClusterIP, NodePort, LoadBalancer).
    ClusterIp,
    /// `clusterIP: None`: records come from its endpoints.
    Headless,
    /// `type: ExternalName`: a CNAME to `external_name`.
    ExternalName,
}

/// A Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub resource_version: Box<str>,
    pub kind: ServiceKind,
    /// `spec.clusterIPs` (or `[spec.clusterIP]`), parsed; empty for headless and
    /// ExternalName services.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.externalName` as given (ExternalName services only).
    pub external_name: Box<str>,
    /// `spec.ports`; an empty list in the API becomes one port `("", "tcp", -1)`, as
    /// CoreDNS does, so that the service still answers A queries.
    pub ports: Vec<Port>,
    /// Where the Service is reached from outside the cluster, in CoreDNS's order
    /// (`object.ToService` `ExternalIPs`): `spec.externalIPs`, then each
    /// `status.loadBalancer.ingress[]` point (its `ip`, else its `hostname`). What
    /// `k8s_external` answers; empty for most services.
    pub external_ips: Vec<ExternalIp>,
}

/// One address of [`Service::external_ips`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ExternalIp {
    Addr(IpAddr),
    /// A load balancer known by name (AWS ELB): lower-cased, no final dot.
    Host(Box<str>),
}

/// One endpoint of an EndpointSlice that is ready (`conditions.ready` true or absent).
/// Endpoints that are not ready are dropped when decoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Each address, parsed, with the text the API gave (dashed endpoint names are
    /// made from the text, not from a canonical form).
    pub addresses: Vec<(IpAddr, Box<str>)>,
    /// `hostname`, lower-cased, if set.
    pub hostname: Option<Box<str>>,
    /// `targetRef.name` when the target is a Pod and the name is shorter than 64
    /// characters (for `endpoint_pod_names`).
    pub pod_name: Option<Box<str>>,
    pub node_name: Option<Box<str>>,
}

/// An EndpointSlice (discovery.k8s.io/v1).
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointSlice {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub resource_version: Box<str>,
    /// The `kubernetes.io/service-name` label ("" when absent).
    pub service: Box<str>,
    /// Ready endpoints only.
    pub endpoints: Vec<Endpoint>,
    /// `ports`; empty becomes one port `("", "tcp", -1)` as for services.
    pub ports: Vec<Port>,
    /// `endpoints.kubernetes.io/last-change-trigger-time`, as Unix seconds (fractional),
    /// for the DNS programming latency metric.
    pub last_change_trigger: Option<f64>,
}

/// A Pod (watched only for `pods verified`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub resource_version: Box<str>,
    /// `status.podIP` exactly as the API gives it (compared textually, as CoreDNS does).
    pub pod_ip: Box<str>,
    /// Set when the pod is terminating (`metadata.deletionTimestamp`).
    pub terminating: bool,
    /// `spec.hostNetwork`: the pod shares its node's address (which is then its
    /// `podIP`), so an address does not tell which such pod a query came from.
    pub host_network: bool,
}

/// A decoded object of any watched resource.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Pod(Pod),
}

impl Object {
    pub fn resource(&self) -> Resource {
        match self {
            Object::Namespace(_) => Resource::Namespaces,
            Object::Service(_) => Resource::Services,
            Object::EndpointSlice(_) => Resource::EndpointSlices,
            Object::Pod(_) => Resource::Pods,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let (namespace, name) = match self {
            Object::Namespace(n) => ("".into(), n.name.clone()),
            Object::Service(s) => (s.namespace.clone(), s.name.clone()),
            Object::EndpointSlice(e) => (e.namespace.clone(), e.name.clone()),
            Object::Pod(p) => (p.namespace.clone(), p.name.clone()),
        };
        ObjectKey { namespace, name }
    }
}

/// What a watcher tells the snapshot builder.
#[derive(Debug)]
pub enum Event {
    /// A full list of `resource` begins: the objects follow as `Upsert`s, then
    /// `ListDone`. Objects not upserted in between are gone.
    ListStart(Resource),
    /// An object was added or changed (or is part of a list).
    Upsert(Object),
    /// An object was deleted.
    Delete(Resource, ObjectKey),
    /// The full list of `resource` is complete.
    ListDone(Resource),
    /// The API became unreachable for `resource` (logged once per outage), or reachable
    /// again (`healthy: true`).
    Health { resource: Resource, healthy: bool },
}
