//! The API's JSON shapes, only the fields DNS reads, every one of them lenient.

use serde::Deserialize;
use serde::de::MapAccess;
use serde::de::value::MapAccessDeserializer;

use super::lenient::{Capped, Leaf, Maybe, PickKey, Picked, Shape};
use crate::kubernetes::limits::{
    MAX_ADDRESSES, MAX_CLUSTER_IPS, MAX_ENDPOINTS, MAX_EXTERNAL_ADDRESSES, MAX_SERVICE_PORTS, MAX_SLICE_PORTS,
};

/// The object types, read through their derived `Deserialize` (whose fields are all
/// lenient, so it only fails on broken JSON).
macro_rules! object_shape {
    ($($t:ty),*) => {$(
        impl<'de> Shape<'de> for $t {
            fn from_map<A: MapAccess<'de>>(map: A) -> Result<Maybe<Self>, A::Error> {
                Self::deserialize(MapAccessDeserializer::new(map)).map(Maybe::Present)
            }
        }
    )*};
}

object_shape!(
    RawObject,
    RawMeta,
    RawSpec,
    RawPort,
    RawEndpoint,
    RawConditions,
    RawTargetRef,
    RawStatus,
    RawLoadBalancer,
    RawIngress
);

/// `kubernetes.io/service-name`: the Service an EndpointSlice belongs to.
pub(super) enum ServiceNameLabel {}

impl PickKey for ServiceNameLabel {
    const KEY: &'static str = "kubernetes.io/service-name";
}

/// `endpoints.kubernetes.io/last-change-trigger-time`: when the change that produced an
/// EndpointSlice happened (for the DNS programming latency metric).
pub(super) enum TriggerTimeAnnotation {}

impl PickKey for TriggerTimeAnnotation {
    const KEY: &'static str = "endpoints.kubernetes.io/last-change-trigger-time";
}

/// Any object of the watched kinds, or a Status: the union of the fields read from each.
/// One type for all kinds lets a mixed-kind list (`kubectl get ... -o json`) be read in
/// one pass, whatever order the fields come in.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RawObject {
    pub(super) kind: Leaf,
    pub(super) metadata: Maybe<RawMeta>,
    pub(super) spec: Maybe<RawSpec>,
    /// An object for Pods and Services; a string (`Failure`) for a Status.
    pub(super) status: Maybe<RawStatus>,
    /// EndpointSlice `endpoints`.
    pub(super) endpoints: Maybe<Capped<Maybe<RawEndpoint>, MAX_ENDPOINTS>>,
    /// EndpointSlice `ports`.
    pub(super) ports: Maybe<Capped<Maybe<RawPort>, MAX_SLICE_PORTS>>,
    /// Status `code`, `reason`, `message`.
    pub(super) code: Leaf,
    pub(super) reason: Leaf,
    pub(super) message: Leaf,
}

/// `metadata` of objects and of lists.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawMeta {
    pub(super) name: Leaf,
    pub(super) namespace: Leaf,
    pub(super) resource_version: Leaf,
    pub(super) deletion_timestamp: Leaf,
    pub(super) labels: Maybe<Picked<ServiceNameLabel>>,
    pub(super) annotations: Maybe<Picked<TriggerTimeAnnotation>>,
    #[serde(rename = "continue")]
    pub(super) continue_token: Leaf,
}

/// Service `spec`.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RawSpec {
    #[serde(rename = "type")]
    pub(super) kind: Leaf,
    #[serde(rename = "clusterIP")]
    pub(super) cluster_ip: Leaf,
    #[serde(rename = "clusterIPs")]
    pub(super) cluster_ips: Maybe<Capped<Leaf, MAX_CLUSTER_IPS>>,
    #[serde(rename = "externalName")]
    pub(super) external_name: Leaf,
    pub(super) ports: Maybe<Capped<Maybe<RawPort>, MAX_SERVICE_PORTS>>,
    /// Addresses the cluster routes to the Service (for `k8s_external`).
    #[serde(rename = "externalIPs")]
    pub(super) external_ips: Maybe<Capped<Leaf, MAX_EXTERNAL_ADDRESSES>>,
    /// A Pod's `spec.hostNetwork` (for autopath and the client metadata).
    #[serde(rename = "hostNetwork")]
    pub(super) host_network: Leaf,
}

/// `status` of a Pod (`podIP`) or a Service (`loadBalancer`).
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawStatus {
    #[serde(rename = "podIP")]
    pub(super) pod_ip: Leaf,
    pub(super) load_balancer: Maybe<RawLoadBalancer>,
}

/// Service `status.loadBalancer`.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RawLoadBalancer {
    pub(super) ingress: Maybe<Capped<Maybe<RawIngress>, MAX_EXTERNAL_ADDRESSES>>,
}

/// One `status.loadBalancer.ingress[]` point: an address or a host name.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RawIngress {
    pub(super) ip: Leaf,
    pub(super) hostname: Leaf,
}

/// A Service port or an EndpointSlice port.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RawPort {
    pub(super) name: Leaf,
    pub(super) protocol: Leaf,
    pub(super) port: Leaf,
}

/// An EndpointSlice endpoint.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct RawEndpoint {
    pub(super) addresses: Maybe<Capped<Leaf, MAX_ADDRESSES>>,
    pub(super) conditions: Maybe<RawConditions>,
    pub(super) hostname: Leaf,
    pub(super) node_name: Leaf,
    pub(super) target_ref: Maybe<RawTargetRef>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RawConditions {
    pub(super) ready: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RawTargetRef {
    pub(super) kind: Leaf,
    pub(super) name: Leaf,
}

/// A watch event line.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct RawEvent {
    #[serde(rename = "type")]
    pub(super) kind: Leaf,
    pub(super) object: Maybe<RawObject>,
}
