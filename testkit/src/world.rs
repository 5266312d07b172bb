//! A generated Kubernetes cluster, deterministic for a seed, and everything the cluster
//! bench derives from it: the API objects (as a LIST page item, as a watch event, as a
//! `kubectl get -o json` dump), the same records as RFC 1035 zone files for Knot DNS, and
//! a query mix.
//!
//! The shape mirrors the reference harness's `gen_zone.py` (the reference data set): service
//! names built from two word lists, about N/100 namespaces, `kubernetes.default`
//! (10.96.0.1) and `kube-dns.kube-system` (10.96.0.10) first, ClusterIPs drawn at random
//! from 10.96.0.0/12, pod addresses handed out in order from 10.244.0.2 (skipping the .0,
//! .1 and .255 ends), 1 to 3 named ports per service with `http/TCP/80` first, and half of
//! the endpoints of a headless service named by a StatefulSet-like hostname, the other
//! half by their dashed address. The word lists and the code are this file's own.
//!
//! Records follow the Kubernetes DNS specification as CoreDNS serves it (TTL 5):
//!
//! ```text
//!   ClusterIP   NAME.NS.svc.cluster.local.              A    cluster IP
//!               _PORT._PROTO.NAME.NS.svc.cluster.local. SRV  0 100 PORT NAME.NS.svc.cluster.local.
//!   headless    NAME.NS.svc.cluster.local.              A    each ready endpoint
//!               EP.NAME.NS.svc.cluster.local.           A    that endpoint
//!               _PORT._PROTO.NAME.NS.svc.cluster.local. SRV  0 W PORT EP.NAME.NS.svc.cluster.local.
//!                                                           (W = floor(100 / endpoints): CoreDNS's weight
//!                                                           over the candidates of the port asked)
//!   reverse     D.C.B.10.in-addr.arpa.                  PTR  the service, or EP.NAME... for endpoints
//! ```
use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::api::{RawObject, Resource};

pub const ZONE: &str = "cluster.local.";
pub const TTL: u32 = 5;

/// Service name parts: FIRST-SECOND, as deployments are usually named.
const FIRST: &[&str] = &[
    "accounts", "adserver", "alerts", "archive", "assets", "audit", "avatar", "basket", "blob", "booking", "bus",
    "campaign", "chat", "claims", "clock", "coupon", "crm", "currency", "docs", "dispatch", "fraud", "fx", "geoip",
    "gifts", "history", "hub", "ids", "invoice", "jobs", "keys", "labels", "leads", "licence", "locale", "loyalty",
    "maps", "matcher", "menu", "notes", "offers", "orders", "parcel", "partner", "photos", "pricing", "promo", "quota",
    "quotes", "rates", "recs", "refund", "returns", "review", "rules", "scores", "seats", "signup", "slots", "sms",
    "stock", "survey", "tags", "tickets", "tiles", "tracking", "uploads", "vouchers", "wallet", "wishlist",
];
const SECOND: &[&str] = &[
    "api", "app", "backend", "cache", "core", "daemon", "db", "frontend", "gateway", "grpc", "indexer", "ingest",
    "leader", "loader", "mirror", "node", "poller", "pool", "relay", "sidecar", "sink", "store", "web", "writer",
];
/// The first namespaces; the rest are WORD-ENV-N.
const NAMESPACES: &[&str] = &[
    "default",
    "kube-system",
    "monitoring",
    "logging",
    "ingress",
    "certs",
    "payments",
    "shop",
    "search",
    "platform",
    "analytics",
    "identity",
    "mobile",
    "batch",
    "streaming",
    "storage",
    "security",
    "infra",
    "ci",
    "staging",
];
const ENVS: &[&str] = &["prod", "dev", "stg", "qa", "ops"];
/// Names pods resolve outside the cluster; with ndots:5 each is first tried with every
/// search suffix, which gives NXDOMAIN names inside cluster.local.
const EXTERNAL: &[&str] = &[
    "google.com",
    "www.google.com",
    "github.com",
    "api.github.com",
    "s3.amazonaws.com",
    "sts.amazonaws.com",
    "registry-1.docker.io",
    "pypi.org",
    "files.pythonhosted.org",
    "storage.googleapis.com",
    "login.microsoftonline.com",
    "api.stripe.com",
    "sentry.io",
    "quay.io",
    "ghcr.io",
    "example.com",
    "ntp.ubuntu.com",
    "metadata.google.internal",
    "redis-0.redis-headless",
    "collector.observability",
];
/// Named ports a service draws from (after `http`, which every service has).
const PORTS: &[Port] = &[
    Port::new("https", "tcp", 443),
    Port::new("grpc", "tcp", 9090),
    Port::new("metrics", "tcp", 9100),
    Port::new("dns", "udp", 53),
    Port::new("redis", "tcp", 6379),
    Port::new("postgres", "tcp", 5432),
    Port::new("admin", "tcp", 8081),
];
const HTTP: Port = Port::new("http", "tcp", 80);

/// SplitMix64: small, deterministic, good enough to draw a data set.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_5EED)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    pub fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: &'static str,
    /// Lower case, as in DNS names; the API spells it in upper case.
    pub proto: &'static str,
    pub number: u16,
}

impl Port {
    const fn new(name: &'static str, proto: &'static str, number: u16) -> Port {
        Port { name, proto, number }
    }
}

#[derive(Clone, Debug)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    /// Set on StatefulSet-like pods; the others are named by their dashed address.
    pub hostname: Option<String>,
}

impl Endpoint {
    /// The endpoint's label in DNS (hostname, else the dashed address).
    pub fn label(&self) -> String {
        match &self.hostname {
            Some(h) => h.clone(),
            None => self.ip.to_string().replace('.', "-"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Service {
    pub namespace: usize,
    pub name: String,
    /// None for a headless service.
    pub cluster_ip: Option<Ipv4Addr>,
    pub ports: Vec<Port>,
    /// Ready endpoints (one EndpointSlice); headless services only.
    pub endpoints: Vec<Endpoint>,
}

/// How many services are headless.
#[derive(Clone, Copy, Debug)]
pub enum Headless {
    /// Each generated service with this probability (gen_zone.py's shape).
    Fraction(f64),
    /// Exactly this many, spread evenly over the list (the issue's 100k/250k shape).
    Exactly(usize),
}

#[derive(Clone, Debug)]
pub struct Shape {
    pub services: usize,
    pub namespaces: usize,
    pub headless: Headless,
    /// Endpoints per headless service, inclusive range.
    pub endpoints: (usize, usize),
    pub seed: u64,
}

impl Shape {
    /// gen_zone.py's defaults: 10% headless with 2 to 6 endpoints, N/100 namespaces.
    pub fn mixed(services: usize, seed: u64) -> Shape {
        Shape {
            services,
            namespaces: (services / 100).max(2),
            headless: Headless::Fraction(0.10),
            endpoints: (2, 6),
            seed,
        }
    }

    /// The issue's memory shape: half the services headless with 5 endpoints each
    /// (100,000 services carry 250,000 endpoints), N/100 namespaces.
    pub fn half_headless(services: usize, seed: u64) -> Shape {
        Shape {
            services,
            namespaces: (services / 100).max(2),
            headless: Headless::Exactly(services / 2),
            endpoints: (5, 5),
            seed,
        }
    }

    pub fn describe(&self) -> String {
        let headless = match self.headless {
            Headless::Fraction(f) => format!("{:.0}% headless", f * 100.0),
            Headless::Exactly(n) => format!("{n} headless"),
        };
        let eps = if self.endpoints.0 == self.endpoints.1 {
            format!("{}", self.endpoints.0)
        } else {
            format!("{}-{}", self.endpoints.0, self.endpoints.1)
        };
        format!(
            "{} services ({headless} x {eps} ready endpoints, the rest ClusterIP; 1-3 named ports), {} namespaces, seed {}",
            self.services, self.namespaces, self.seed
        )
    }
}

pub struct World {
    pub shape: Shape,
    pub namespaces: Vec<String>,
    pub services: Vec<Service>,
}

/// A `d.c.b.a.in-addr.arpa.` name.
pub fn reverse_name(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
}

fn uid(kind: u8, n: usize) -> String {
    format!("{:08x}-{kind:02x}00-4000-8000-{:012x}", n as u32 ^ 0x5bd1_e995, n)
}

const CREATED: &str = "2024-05-02T09:14:07Z";

impl World {
    pub fn generate(shape: &Shape) -> World {
        let mut rng = Rng::new(shape.seed);
        let mut namespaces: Vec<String> = NAMESPACES
            .iter()
            .take(shape.namespaces)
            .map(|s| s.to_string())
            .collect();
        while namespaces.len() < shape.namespaces {
            let n = namespaces.len();
            namespaces.push(format!("{}-{}-{n}", rng.pick(NAMESPACES), rng.pick(ENVS)));
        }
        let mut services = vec![
            Service {
                namespace: 0,
                name: "kubernetes".into(),
                cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 1)),
                ports: vec![Port::new("https", "tcp", 443)],
                endpoints: vec![],
            },
            Service {
                namespace: 1,
                name: "kube-dns".into(),
                cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 10)),
                ports: vec![
                    Port::new("dns", "udp", 53),
                    Port::new("dns-tcp", "tcp", 53),
                    Port::new("metrics", "tcp", 9153),
                ],
                endpoints: vec![],
            },
        ];
        // Distinct ClusterIP offsets in 10.96.0.0/12 above the first 16 (a partial
        // Fisher-Yates shuffle of the range).
        let mut offsets: Vec<u32> = (16..1u32 << 20).collect();
        assert!(shape.services <= offsets.len(), "too many services for 10.96.0.0/12");
        let mut next_offset = 0;
        let mut pod = u32::from(Ipv4Addr::new(10, 244, 0, 2));
        let mut taken: HashSet<(usize, String)> = HashSet::new();
        taken.insert((0, "kubernetes".into()));
        taken.insert((1, "kube-dns".into()));
        let generated = shape.services.saturating_sub(services.len());
        let mut k = 0usize;
        let mut attempts = 0usize;
        while services.len() < shape.services {
            attempts += 1;
            assert!(
                attempts < 10 * shape.services + 100,
                "cannot draw distinct service names"
            );
            let j = services.len() - 2;
            let namespace = rng.below(namespaces.len());
            let base = format!("{}-{}", rng.pick(FIRST), rng.pick(SECOND));
            let name = if taken.contains(&(namespace, base.clone())) {
                k += 1;
                format!("{base}-{k}")
            } else {
                base
            };
            if !taken.insert((namespace, name.clone())) {
                continue;
            }
            let headless = match shape.headless {
                Headless::Fraction(p) => rng.chance(p),
                // Bresenham: exactly n of the generated services, the last one included.
                Headless::Exactly(n) => (j + 1) * n / generated > j * n / generated,
            };
            let mut ports = vec![HTTP];
            let extra = [0, 0, 0, 1, 1, 2][rng.below(6)];
            while ports.len() < 1 + extra {
                let p = *rng.pick(PORTS);
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
            let mut svc = Service {
                namespace,
                name,
                cluster_ip: None,
                ports,
                endpoints: vec![],
            };
            if headless {
                let (lo, hi) = shape.endpoints;
                let count = lo + rng.below(hi - lo + 1);
                for e in 0..count {
                    while matches!(pod & 0xff, 0 | 1 | 255) {
                        pod += 1;
                    }
                    let ip = Ipv4Addr::from(pod);
                    pod += 1;
                    let hostname = rng.chance(0.5).then(|| format!("{}-{e}", svc.name));
                    svc.endpoints.push(Endpoint { ip, hostname });
                }
            } else {
                let pick = next_offset + rng.below(offsets.len() - next_offset);
                offsets.swap(next_offset, pick);
                svc.cluster_ip = Some(Ipv4Addr::from(
                    u32::from(Ipv4Addr::new(10, 96, 0, 0)) + offsets[next_offset],
                ));
                next_offset += 1;
            }
            services.push(svc);
        }
        World {
            shape: shape.clone(),
            namespaces,
            services,
        }
    }

    pub fn endpoint_count(&self) -> usize {
        self.services.iter().map(|s| s.endpoints.len()).sum()
    }

    pub fn headless_count(&self) -> usize {
        self.services.iter().filter(|s| s.cluster_ip.is_none()).count()
    }

    /// `NAME.NS.svc.cluster.local.`
    pub fn fqdn(&self, s: &Service) -> String {
        format!("{}.{}.svc.{ZONE}", s.name, self.namespaces[s.namespace])
    }

    /// The addresses an A query for the service gets, sorted.
    pub fn addresses(&self, s: &Service) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = match s.cluster_ip {
            Some(ip) => vec![ip],
            None => s.endpoints.iter().map(|e| e.ip).collect(),
        };
        v.sort();
        v
    }

    // ---------------------------------------------------------------------------------
    // API objects

    /// A Namespace as the API serves it (`kind` and `apiVersion` only outside a list).
    pub fn namespace_json(&self, i: usize, rv: u64, with_kind: bool) -> String {
        let name = &self.namespaces[i];
        format!(
            r#"{{{}"metadata":{{"name":"{name}","uid":"{}","resourceVersion":"{rv}","creationTimestamp":"{CREATED}","labels":{{"kubernetes.io/metadata.name":"{name}"}}}},"spec":{{"finalizers":["kubernetes"]}},"status":{{"phase":"Active"}}}}"#,
            if with_kind {
                r#""kind":"Namespace","apiVersion":"v1","#
            } else {
                ""
            },
            uid(1, i)
        )
    }

    /// A Service; `managed_fields` adds the entry the API adds (a dump from kubectl has
    /// none).
    pub fn service_json(&self, s: &Service, n: usize, rv: u64, with_kind: bool, managed_fields: bool) -> String {
        let mut j = String::with_capacity(1024);
        let ns = &self.namespaces[s.namespace];
        let name = &s.name;
        j.push('{');
        if with_kind {
            j.push_str(r#""kind":"Service","apiVersion":"v1","#);
        }
        let _ = write!(
            j,
            r#""metadata":{{"name":"{name}","namespace":"{ns}","uid":"{}","resourceVersion":"{rv}","creationTimestamp":"{CREATED}","labels":{{"app.kubernetes.io/name":"{name}","app.kubernetes.io/part-of":"{ns}"}}"#,
            uid(2, n)
        );
        if managed_fields {
            let _ = write!(
                j,
                r#","managedFields":[{{"manager":"kubectl-client-side-apply","operation":"Update","apiVersion":"v1","time":"{CREATED}","fieldsType":"FieldsV1","fieldsV1":{{"f:metadata":{{"f:labels":{{".":{{}},"f:app.kubernetes.io/name":{{}},"f:app.kubernetes.io/part-of":{{}}}}}},"f:spec":{{"f:internalTrafficPolicy":{{}},"f:ports":{{}},"f:selector":{{}},"f:sessionAffinity":{{}},"f:type":{{}}}}}}}}]"#
            );
        }
        j.push_str(r#"},"spec":{"ports":["#);
        for (k, p) in s.ports.iter().enumerate() {
            if k > 0 {
                j.push(',');
            }
            let _ = write!(
                j,
                r#"{{"name":"{}","protocol":"{}","port":{},"targetPort":{}}}"#,
                p.name,
                p.proto.to_ascii_uppercase(),
                p.number,
                p.number
            );
        }
        let ip = s.cluster_ip.map_or("None".to_string(), |ip| ip.to_string());
        let _ = write!(
            j,
            r#"],"selector":{{"app.kubernetes.io/name":"{name}"}},"clusterIP":"{ip}","clusterIPs":["{ip}"],"type":"ClusterIP","sessionAffinity":"None","ipFamilies":["IPv4"],"ipFamilyPolicy":"SingleStack","internalTrafficPolicy":"Cluster"}},"status":{{"loadBalancer":{{}}}}}}"#
        );
        j
    }

    /// The EndpointSlice of a headless service.
    pub fn slice_json(&self, s: &Service, n: usize, rv: u64, with_kind: bool, managed_fields: bool) -> String {
        let mut j = String::with_capacity(2048);
        let ns = &self.namespaces[s.namespace];
        let name = &s.name;
        j.push('{');
        if with_kind {
            j.push_str(r#""kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","#);
        }
        let _ = write!(
            j,
            r#""metadata":{{"name":"{}","generateName":"{name}-","namespace":"{ns}","uid":"{}","resourceVersion":"{rv}","creationTimestamp":"{CREATED}","labels":{{"endpointslice.kubernetes.io/managed-by":"endpointslice-controller.k8s.io","kubernetes.io/service-name":"{name}"}},"ownerReferences":[{{"apiVersion":"v1","kind":"Service","name":"{name}","uid":"{}","controller":true,"blockOwnerDeletion":true}}]"#,
            slice_name(s, n),
            uid(3, n),
            uid(2, n)
        );
        if managed_fields {
            let _ = write!(
                j,
                r#","managedFields":[{{"manager":"kube-controller-manager","operation":"Update","apiVersion":"discovery.k8s.io/v1","time":"{CREATED}","fieldsType":"FieldsV1","fieldsV1":{{"f:addressType":{{}},"f:endpoints":{{}},"f:metadata":{{"f:labels":{{}},"f:ownerReferences":{{}}}},"f:ports":{{}}}}}}]"#
            );
        }
        j.push_str(r#"},"addressType":"IPv4","endpoints":["#);
        for (k, e) in s.endpoints.iter().enumerate() {
            if k > 0 {
                j.push(',');
            }
            let _ = write!(
                j,
                r#"{{"addresses":["{}"],"conditions":{{"ready":true,"serving":true,"terminating":false}},"#,
                e.ip
            );
            if let Some(h) = &e.hostname {
                let _ = write!(j, r#""hostname":"{h}","#);
            }
            let _ = write!(
                j,
                r#""targetRef":{{"kind":"Pod","namespace":"{ns}","name":"{name}-{k}","uid":"{}"}},"nodeName":"node-{}","zone":"zone-{}"}}"#,
                uid(4, n * 8 + k),
                (n + k) % 50,
                ["a", "b", "c"][k % 3]
            );
        }
        j.push_str(r#"],"ports":["#);
        for (k, p) in s.ports.iter().enumerate() {
            if k > 0 {
                j.push(',');
            }
            let _ = write!(
                j,
                r#"{{"name":"{}","protocol":"{}","port":{}}}"#,
                p.name,
                p.proto.to_ascii_uppercase(),
                p.number
            );
        }
        j.push_str("]}");
        j
    }

    /// The objects as the API's LIST pages carry them (no `kind`, with
    /// `managedFields`), namespaces first, then each service and its slice; their
    /// resourceVersions count up from `first_rv`.
    pub fn api_objects(&self, first_rv: u64) -> Vec<RawObject> {
        let mut rv = first_rv;
        let mut out = Vec::with_capacity(self.namespaces.len() + self.services.len() * 2);
        for (i, name) in self.namespaces.iter().enumerate() {
            rv += 1;
            out.push(RawObject {
                resource: Resource::Namespaces,
                namespace: String::new(),
                name: name.clone(),
                rv,
                json: self.namespace_json(i, rv, false),
            });
        }
        for (n, s) in self.services.iter().enumerate() {
            let ns = &self.namespaces[s.namespace];
            rv += 1;
            out.push(RawObject {
                resource: Resource::Services,
                namespace: ns.clone(),
                name: s.name.clone(),
                rv,
                json: self.service_json(s, n, rv, false, true),
            });
            if !s.endpoints.is_empty() {
                rv += 1;
                out.push(RawObject {
                    resource: Resource::EndpointSlices,
                    namespace: ns.clone(),
                    name: slice_name(s, n),
                    rv,
                    json: self.slice_json(s, n, rv, false, true),
                });
            }
        }
        out
    }

    /// A `kubectl get namespaces,services,endpointslices -A -o json` dump, the objects'
    /// resourceVersions counting up from `first_rv`.
    pub fn kubectl_dump(&self, first_rv: u64) -> String {
        let mut rv = first_rv;
        let mut next = || {
            rv += 1;
            rv
        };
        let mut out = String::from(r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":["#);
        let mut first = true;
        let mut push = |out: &mut String, item: String| {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
            out.push('\n');
            out.push_str(&item);
        };
        for i in 0..self.namespaces.len() {
            push(&mut out, self.namespace_json(i, next(), true));
        }
        for (n, s) in self.services.iter().enumerate() {
            push(&mut out, self.service_json(s, n, next(), true, false));
        }
        for (n, s) in self.services.iter().enumerate() {
            if !s.endpoints.is_empty() {
                push(&mut out, self.slice_json(s, n, next(), true, false));
            }
        }
        out.push_str("\n]}\n");
        out
    }

    // ---------------------------------------------------------------------------------
    // Zone files

    /// The same records as master files for `cluster.local.` and `10.in-addr.arpa.`;
    /// returns (forward, reverse, record count).
    pub fn zone_files(&self) -> (String, String, usize) {
        let soa = "@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n@ IN NS ns.dns.cluster.local.\n";
        let mut fwd =
            format!("$ORIGIN {ZONE}\n$TTL {TTL}\n{soa}ns.dns IN A 10.96.0.10\ndns-version 28800 IN TXT \"1.1.0\"\n");
        let mut rev = format!("$ORIGIN 10.in-addr.arpa.\n$TTL {TTL}\n{soa}");
        let mut records = 6;
        for s in &self.services {
            let fq = self.fqdn(s);
            match s.cluster_ip {
                Some(ip) => {
                    let _ = writeln!(fwd, "{fq} IN A {ip}");
                    for p in &s.ports {
                        let _ = writeln!(fwd, "_{}._{}.{fq} IN SRV 0 100 {} {fq}", p.name, p.proto, p.number);
                    }
                    let _ = writeln!(rev, "{} IN PTR {fq}", reverse_name(ip));
                    records += 2 + s.ports.len();
                }
                None => {
                    let weight = (100 / s.endpoints.len()).max(1);
                    for e in &s.endpoints {
                        let target = format!("{}.{fq}", e.label());
                        let _ = writeln!(fwd, "{fq} IN A {}", e.ip);
                        let _ = writeln!(fwd, "{target} IN A {}", e.ip);
                        let _ = writeln!(rev, "{} IN PTR {target}", reverse_name(e.ip));
                        for p in &s.ports {
                            let _ = writeln!(
                                fwd,
                                "_{}._{}.{fq} IN SRV 0 {weight} {} {target}",
                                p.name, p.proto, p.number
                            );
                        }
                        records += 3 + s.ports.len();
                    }
                }
            }
        }
        (fwd, rev, records)
    }

    // ---------------------------------------------------------------------------------
    // Queries

    /// Every owner name of the forward zone and all their ancestors (an empty
    /// non-terminal is NODATA, not NXDOMAIN, so an NXDOMAIN query must avoid them).
    fn existing_names(&self) -> HashSet<String> {
        let mut names = HashSet::new();
        let mut add = |name: &str| {
            let mut n = name;
            while n.len() > ZONE.len() && names.insert(n.to_string()) {
                n = n.split_once('.').map_or(ZONE, |(_, rest)| rest);
            }
        };
        for s in &self.services {
            let fq = self.fqdn(s);
            add(&fq);
            for e in &s.endpoints {
                add(&format!("{}.{fq}", e.label()));
            }
            for p in &s.ports {
                add(&format!("_{}._{}.{fq}", p.name, p.proto));
            }
        }
        add(&format!("ns.dns.{ZONE}"));
        add(&format!("dns-version.{ZONE}"));
        names
    }

    /// `count` queries in gen_zone.py's default mix: 70% A of existing services
    /// (ClusterIP and headless), 10% SRV of existing ports, 10% NXDOMAIN names made the
    /// way a pod's `ndots:5` search path makes them, 10% PTR of existing addresses.
    pub fn query_mix(&self, count: usize, seed: u64) -> Vec<(String, u16)> {
        let mut rng = Rng::new(seed.wrapping_mul(7919).wrapping_add(17));
        let a: Vec<String> = self.services.iter().map(|s| self.fqdn(s)).collect();
        let mut srv = Vec::new();
        let mut ptr = Vec::new();
        for s in &self.services {
            let fq = self.fqdn(s);
            for p in &s.ports {
                srv.push(format!("_{}._{}.{fq}", p.name, p.proto));
            }
            if let Some(ip) = s.cluster_ip {
                ptr.push(reverse_name(ip));
            }
            for e in &s.endpoints {
                ptr.push(reverse_name(e.ip));
            }
        }
        let existing = self.existing_names();
        (0..count)
            .map(|_| match rng.below(100) {
                0..70 => (rng.pick(&a).clone(), 1),
                70..80 => (rng.pick(&srv).clone(), 33),
                80..90 => (self.search_path_miss(&mut rng, &existing), 1),
                _ => (rng.pick(&ptr).clone(), 12),
            })
            .collect()
    }

    /// A name that does not exist, built as a resolver with `search NS.svc.cluster.local
    /// svc.cluster.local cluster.local` and `ndots:5` builds it.
    pub fn search_path_miss(&self, rng: &mut Rng, existing: &HashSet<String>) -> String {
        for _ in 0..1000 {
            let here = rng.pick(&self.namespaces);
            let r = rng.below(10);
            let name = if r < 6 {
                // An external name tried with each search suffix.
                let suffix = match rng.below(3) {
                    0 => format!("{here}.svc.{ZONE}"),
                    1 => format!("svc.{ZONE}"),
                    _ => ZONE.to_string(),
                };
                format!("{}.{suffix}", rng.pick(EXTERNAL))
            } else if r < 9 {
                // "svc.otherns" tried with the pod's own namespace first.
                let s = rng.pick(&self.services);
                format!("{}.{}.{here}.svc.{ZONE}", s.name, self.namespaces[s.namespace])
            } else {
                format!(
                    "{}-{}-{}.{here}.svc.{ZONE}",
                    rng.pick(FIRST),
                    rng.pick(SECOND),
                    rng.below(1000)
                )
            };
            if !existing.contains(&name) {
                return name;
            }
        }
        panic!("no NXDOMAIN name found");
    }

    /// A few queries of every kind in the mix, plus endpoint names, to check that two
    /// servers give the same answers.
    pub fn check_set(&self, seed: u64) -> Vec<(String, u16)> {
        let mut rng = Rng::new(seed ^ 0xC0FFEE);
        let existing = self.existing_names();
        let mut out = vec![
            (format!("kubernetes.default.svc.{ZONE}"), 1),
            (format!("_dns._udp.kube-dns.kube-system.svc.{ZONE}"), 33),
            ("10.0.96.10.in-addr.arpa.".to_string(), 12),
            (format!("google.com.default.svc.{ZONE}"), 1),
        ];
        let clusterip: Vec<&Service> = self.services.iter().filter(|s| s.cluster_ip.is_some()).collect();
        let headless: Vec<&Service> = self.services.iter().filter(|s| s.cluster_ip.is_none()).collect();
        for _ in 0..8 {
            let s = rng.pick(&clusterip);
            let fq = self.fqdn(s);
            let p = rng.pick(&s.ports);
            out.push((fq.clone(), 1));
            out.push((format!("_{}._{}.{fq}", p.name, p.proto), 33));
            out.push((reverse_name(s.cluster_ip.unwrap()), 12));
            out.push((self.search_path_miss(&mut rng, &existing), 1));
        }
        for _ in 0..8.min(headless.len()) {
            let s = rng.pick(&headless);
            let fq = self.fqdn(s);
            let p = rng.pick(&s.ports);
            let e = rng.pick(&s.endpoints);
            out.push((fq.clone(), 1));
            out.push((format!("{}.{fq}", e.label()), 1));
            out.push((format!("_{}._{}.{fq}", p.name, p.proto), 33));
            out.push((reverse_name(e.ip), 12));
        }
        out
    }

    /// Names whose answers prove a full sync: the last service the API lists and the
    /// service of the last EndpointSlice it lists (lists come in key order: namespace,
    /// then name), with their addresses.
    pub fn sync_probes(&self) -> Vec<(String, Vec<Ipv4Addr>)> {
        let last = self
            .services
            .iter()
            .max_by_key(|s| (self.namespaces[s.namespace].as_str(), s.name.as_str()))
            .unwrap();
        let mut probes = vec![(self.fqdn(last), self.addresses(last))];
        let last_slice = self
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.endpoints.is_empty())
            .max_by_key(|(n, s)| (self.namespaces[s.namespace].as_str(), slice_name(s, *n)))
            .map(|(_, s)| s);
        if let Some(s) = last_slice {
            if !std::ptr::eq(s, last) {
                probes.push((self.fqdn(s), self.addresses(s)));
            }
        }
        probes
    }
}

/// The name of the EndpointSlice of the `n`th service: `NAME-XXXXX`.
fn slice_name(s: &Service, n: usize) -> String {
    format!("{}-{:05x}", s.name, n & 0xfffff)
}
