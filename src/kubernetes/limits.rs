//! What the Kubernetes API server itself allows in the objects clusterdns reads, as caps
//! the decoder applies while it reads (so an object over one is never built whole) and
//! as the name rules an object must pass to be stored. An object that breaks one is
//! rejected whole and counted (`clusterdns_kubernetes_rejected_objects_total`), never
//! cut down to fit: two Services whose names share their first 63 bytes must not
//! become one name.
//!
//! The rules are Kubernetes' own (`k8s.io/apimachinery/pkg/util/validation`,
//! `pkg/apis/core/validation`, `pkg/apis/discovery/validation`); a real API server
//! never sends an object that breaks them, so only a broken or hostile API (or a hand
//! edited dump) meets them.

/// Longest watch event line, or list item, read: 4 MiB. etcd refuses a write over its
/// default `--max-request-bytes` of 1.5 MiB, and an object is stored as protobuf; the
/// API server accepts JSON request bodies up to 3 MiB (`MaxRequestBodyBytes`, twice
/// etcd's limit, because JSON is the larger encoding), so no stored object comes back
/// as more than about 3 MiB of JSON; 4 MiB leaves room for the watch event around it.
pub const MAX_OBJECT_BYTES: u64 = 4 << 20;

/// Endpoints in one EndpointSlice: `maxEndpoints` in the discovery API's validation.
pub const MAX_ENDPOINTS: usize = 1000;

/// Addresses of one endpoint: `maxAddresses` in the discovery API's validation.
pub const MAX_ADDRESSES: usize = 100;

/// Ports of one EndpointSlice: `maxPorts` in the discovery API's validation.
pub const MAX_SLICE_PORTS: usize = 20_000;

/// Ports of one Service. The API sets no number (only unique port/protocol pairs and
/// the object size), but the EndpointSlice controller copies a Service's ports into
/// each of its slices, which hold at most [`MAX_SLICE_PORTS`]: a Service with more
/// could never have endpoints.
pub const MAX_SERVICE_PORTS: usize = MAX_SLICE_PORTS;

/// `spec.clusterIPs`: at most two, one per IP family (dual-stack validation).
pub const MAX_CLUSTER_IPS: usize = 2;

/// `spec.externalIPs`, and `status.loadBalancer.ingress`, each: the API sets no number
/// (only the object's size), so this is clusterdns's own bound: 256 addresses of one
/// family already take 4 KiB of A records, more than most clients' UDP answers
/// hold, and a Service with more is no real load balancer. Over it, the Service is
/// rejected whole (`too_many_addresses`), never cut.
pub const MAX_EXTERNAL_ADDRESSES: usize = 256;

/// A DNS-1123 label (RFC 1123): Service and Namespace names, `metadata.namespace`, an
/// endpoint's `hostname`, Service and EndpointSlice port names, label values.
pub const MAX_LABEL: usize = 63;

/// A DNS-1123 subdomain: EndpointSlice, Pod and Node names, an ExternalName target.
pub const MAX_SUBDOMAIN: usize = 253;

/// `metadata.resourceVersion`: opaque to clients, but for the built-in resources it is
/// etcd's revision, an int64 (at most 20 digits); 128 leaves room for any storage.
pub const MAX_RESOURCE_VERSION: usize = 128;

/// `status.podIP`: an IP address as text (45 characters at most); 64 with room.
pub const MAX_POD_IP: usize = 64;

/// The form a field's value must have, for the error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `IsDNS1123Label`.
    Label,
    /// `IsDNS1123Subdomain`.
    Subdomain,
    /// `IsValidLabelValue`.
    LabelValue,
    /// TCP, UDP or SCTP (`supportedPortProtocols`).
    Protocol,
    /// At most this many bytes.
    MaxLen(usize),
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Label => write!(
                f,
                "a DNS-1123 label (at most {MAX_LABEL} of a-z, 0-9 and '-', starting and ending with a letter or digit)"
            ),
            Rule::Subdomain => write!(
                f,
                "a DNS-1123 subdomain (at most {MAX_SUBDOMAIN} characters: labels of a-z, 0-9 and '-' joined by '.')"
            ),
            Rule::LabelValue => write!(
                f,
                "a label value (at most {MAX_LABEL} of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending with a letter or digit)"
            ),
            Rule::Protocol => f.write_str("TCP, UDP or SCTP"),
            Rule::MaxLen(n) => write!(f, "at most {n} bytes long"),
        }
    }
}

impl Rule {
    /// Whether `s` passes. Letters are compared without case: the decoder lower-cases
    /// names (DNS is case-insensitive), as it always has.
    pub fn allows(self, s: &str) -> bool {
        match self {
            Rule::Label => is_label(s),
            Rule::Subdomain => is_subdomain(s),
            Rule::LabelValue => is_label_value(s),
            Rule::Protocol => ["tcp", "udp", "sctp"].iter().any(|p| s.eq_ignore_ascii_case(p)),
            Rule::MaxLen(n) => s.len() <= n,
        }
    }
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, 1 to 63 characters (letters in either case).
pub fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// Labels as [`is_label`] but of any length, joined by dots, 1 to 253 characters in all
/// (Kubernetes checks the total, not each label).
pub fn is_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SUBDOMAIN
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// `(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`, at most 63 characters (empty allowed).
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= MAX_LABEL
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "kube-dns", "0abc", "A-B", &"x".repeat(63)] {
            assert!(is_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a.b", "a_b", "ü", &"x".repeat(64)] {
            assert!(!is_label(bad), "{bad}");
        }
    }

    #[test]
    fn subdomains() {
        for ok in ["a", "web-abcde", "a.b.c", &"x".repeat(70), &["a"; 127].join(".")] {
            assert!(is_subdomain(ok), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a_b", &"x".repeat(254)] {
            assert!(!is_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn label_values() {
        for ok in ["", "web", "My_App.v1", &"x".repeat(63)] {
            assert!(is_label_value(ok), "{ok}");
        }
        for bad in ["-a", "a.", "a b", "a/b", &"x".repeat(64)] {
            assert!(!is_label_value(bad), "{bad}");
        }
    }

    #[test]
    fn rules() {
        assert!(Rule::Protocol.allows("TCP") && Rule::Protocol.allows("sctp"));
        assert!(!Rule::Protocol.allows("icmp"));
        assert!(Rule::MaxLen(3).allows("abc") && !Rule::MaxLen(3).allows("abcd"));
    }
}
