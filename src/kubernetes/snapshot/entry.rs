//! A service as answers need it: its data ([`ServiceData`]) and, with its slices, what a
//! name `<svc>.<ns>.svc.<zone>` resolves from ([`ServiceEntry`]); names as wire labels.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64};

use super::shard::{FxSet, Keyed};
use super::slice::{Eps, SliceData};
use crate::kubernetes::model::{Port, ServiceKind};

/// Wire-format labels (length-prefixed, no root) for `labels` joined in order. Every
/// label is a DNS label the decoder has checked (at most 63 bytes): the cut below only
/// keeps the wire form valid, it must never make two names one.
pub fn wire_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Box<[u8]> {
    let mut out = Vec::new();
    for l in labels {
        debug_assert!(l.len() <= 63, "label over 63 bytes reached the snapshot: {l:?}");
        let l = &l.as_bytes()[..l.len().min(63)];
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.into_boxed_slice()
}

/// Label `i` (without its length byte) of wire labels.
pub fn label_at(wire: &[u8], i: usize) -> &[u8] {
    let mut at = 0;
    for _ in 0..i {
        at += 1 + wire[at] as usize;
    }
    let l = wire[at] as usize;
    &wire[at + 1..at + 1 + l]
}

/// A Service as answers need it.
#[derive(Debug)]
pub struct ServiceData {
    /// `<svc>.<ns>.svc` as wire labels (no root): SRV and PTR targets append a zone; the
    /// first two labels are its key.
    pub rel: Box<[u8]>,
    /// A hash of the resourceVersion stored (builder only; updated in place when a new
    /// version changes nothing DNS serves).
    pub(super) version: AtomicU64,
    /// The list generation the service was last seen in (builder only).
    pub(super) seen: AtomicU32,
    pub kind: ServiceKind,
    pub cluster_ips: Box<[IpAddr]>,
    /// What few services have (an ExternalName target, external addresses), behind one
    /// pointer: `None` for most.
    pub outside: Option<Box<Outside>>,
    /// Shared between every service and slice with the same list.
    pub ports: Arc<[Port]>,
}

/// What few services have, kept behind one pointer so that a service without any of
/// it pays 8 bytes for all of it (`cargo bench --bench snapshot`: bytes/service).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outside {
    /// The ExternalName target as wire bytes (fully qualified, case kept); `None` when
    /// the service is not ExternalName or its target is an IP address (ignored, as
    /// CoreDNS does) or not a valid name.
    pub external_name: Option<Box<[u8]>>,
    /// The external addresses (`spec.externalIPs`, then load-balancer ingress IPs),
    /// each once, in CoreDNS's order: what `k8s_external` answers.
    pub ips: Box<[IpAddr]>,
    /// Load-balancer ingress host names, as wire names (fully qualified), each once.
    pub hosts: Box<[Box<[u8]>]>,
}

impl ServiceData {
    pub fn name(&self) -> &[u8] {
        label_at(&self.rel, 0)
    }

    /// The ExternalName target (see [`Outside::external_name`]).
    pub fn external(&self) -> Option<&[u8]> {
        self.outside.as_ref()?.external_name.as_deref()
    }

    /// The external addresses (see [`Outside::ips`]).
    pub fn external_ips(&self) -> &[IpAddr] {
        self.outside.as_ref().map_or(&[], |o| &o.ips)
    }

    /// The load-balancer host names (see [`Outside::hosts`]).
    pub fn external_hosts(&self) -> &[Box<[u8]>] {
        self.outside.as_ref().map_or(&[], |o| &o.hosts)
    }

    /// Whether the service has any external address or host name (CoreDNS:
    /// `len(svc.ExternalIPs) > 0`).
    pub fn has_external(&self) -> bool {
        !self.external_ips().is_empty() || !self.external_hosts().is_empty()
    }

    pub fn namespace(&self) -> &[u8] {
        label_at(&self.rel, 1)
    }
}

impl Keyed for ServiceData {
    /// `<svc><ns>` wire labels.
    fn key(&self) -> &[u8] {
        &self.rel[..self.rel.len() - 4]
    }
}

/// What a name `<svc>.<ns>.svc.<zone>` resolves from: the service and its slices, with
/// what a headless service's answers need prepared, so that answering one costs in
/// proportion to the records it writes.
#[derive(Debug)]
pub struct ServiceEntry {
    pub svc: Arc<ServiceData>,
    pub slices: Box<[Arc<SliceData>]>,
    /// Headless only, and only when endpoints repeat an address: every ready address
    /// once, in order. Otherwise (nearly always) the addresses are the slices'
    /// endpoints as they are, and an entry keeps no copy of them. A ClusterIP service
    /// answers from its cluster IPs.
    unique: Option<Box<Unique>>,
    /// Ready addresses over all slices (for `ignore empty_service`).
    pub ready_addresses: u32,
    /// Headless only: no two endpoints share a name or an address, and no port list
    /// repeats a port number; then no (target, port) or (target, address) pair can
    /// repeat, and answers need no duplicate check.
    pub distinct: bool,
}

/// A headless service's addresses, each once, when its endpoints repeat some.
#[derive(Debug)]
struct Unique {
    v4: Box<[Ipv4Addr]>,
    v6: Box<[Ipv6Addr]>,
}

impl Keyed for ServiceEntry {
    fn key(&self) -> &[u8] {
        self.svc.key()
    }
}

/// Whether no two ports of a list have the same number (small lists: compared
/// pairwise; the API allows 100 ports per slice, and this runs when a snapshot is
/// built, not per query).
pub(super) fn port_numbers_distinct(ports: &[Port]) -> bool {
    if ports.len() <= 16 {
        return ports
            .iter()
            .enumerate()
            .all(|(i, p)| ports[..i].iter().all(|q| q.port != p.port));
    }
    let mut seen = std::collections::HashSet::with_capacity(ports.len());
    ports.iter().all(|p| seen.insert(p.port))
}

impl ServiceEntry {
    pub(super) fn new(svc: Arc<ServiceData>, slices: Box<[Arc<SliceData>]>) -> ServiceEntry {
        let ready = slices.iter().map(|s| s.eps.len()).sum::<usize>();
        let mut unique = None;
        let mut distinct = false;
        if svc.kind == ServiceKind::Headless {
            // Dedup with a set, keeping first-seen order (a small service compares
            // with what it kept, cheaper than hashing).
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            let mut seen = std::collections::HashSet::with_capacity(if ready < 64 { 0 } else { ready });
            for e in slices.iter().flat_map(|s| s.eps.iter()) {
                let new = if ready < 64 {
                    match e.addr() {
                        IpAddr::V4(a) => !v4.contains(&a),
                        IpAddr::V6(a) => !v6.contains(&a),
                    }
                } else {
                    seen.insert(e.addr())
                };
                if new {
                    match e.addr() {
                        IpAddr::V4(a) => v4.push(a),
                        IpAddr::V6(a) => v6.push(a),
                    }
                }
            }
            let addresses_distinct = v4.len() + v6.len() == ready;
            // Slices of one service nearly always share one port list (lists are
            // interned): each distinct list is checked once.
            let mut lists: FxSet<*const Port> = FxSet::default();
            distinct = addresses_distinct
                && slices.iter().all(|s| !s.has_names())
                && slices
                    .iter()
                    .filter(|s| lists.insert(s.ports.as_ptr()))
                    .all(|s| port_numbers_distinct(&s.ports));
            if !addresses_distinct {
                unique = Some(Box::new(Unique {
                    v4: v4.into_boxed_slice(),
                    v6: v6.into_boxed_slice(),
                }));
            }
        }
        ServiceEntry {
            svc,
            slices,
            unique,
            ready_addresses: ready as u32,
            distinct,
        }
    }

    /// Heap bytes asked for (the entry with its slice list and address lists; the
    /// service record and cluster IPs apart), for the bench's breakdown.
    pub(super) fn heap_bytes(&self) -> (usize, usize, usize) {
        let entry = 16
            + std::mem::size_of::<ServiceEntry>()
            + std::mem::size_of_val(&*self.slices)
            + self.unique.as_ref().map_or(0, |u| {
                std::mem::size_of::<Unique>() + std::mem::size_of_val(&*u.v4) + std::mem::size_of_val(&*u.v6)
            });
        let svc = &self.svc;
        let record = 16
            + std::mem::size_of::<ServiceData>()
            + svc.rel.len()
            + svc.outside.as_ref().map_or(0, |o| {
                std::mem::size_of::<Outside>()
                    + o.external_name.as_ref().map_or(0, |n| n.len())
                    + std::mem::size_of_val(&*o.ips)
                    + o.hosts.iter().map(|h| 16 + h.len()).sum::<usize>()
            });
        (entry, record, std::mem::size_of_val(&*svc.cluster_ips))
    }

    /// Calls `f` with the addresses of a plain A (`v4`) or AAAA query, each once, in
    /// order, until it breaks; returns whether there was any.
    pub fn addresses(&self, v4: bool, mut f: impl FnMut(IpAddr) -> ControlFlow<()>) -> bool {
        let mut any = false;
        let mut each = |ip: IpAddr| {
            any = true;
            f(ip)
        };
        let _ = match (&self.svc.kind, &self.unique) {
            (ServiceKind::Headless, Some(u)) if v4 => u.v4.iter().try_for_each(|a| each(IpAddr::V4(*a))),
            (ServiceKind::Headless, Some(u)) => u.v6.iter().try_for_each(|a| each(IpAddr::V6(*a))),
            // No address repeats: the endpoints in order are the answer.
            // An IPv4 slice is walked without a family test per endpoint.
            (ServiceKind::Headless, None) => self.slices.iter().try_for_each(|s| match &s.eps {
                Eps::V4(eps) if v4 => eps.iter().try_for_each(|e| each(IpAddr::V4(e.ip()))),
                Eps::V4(_) => ControlFlow::Continue(()),
                Eps::Any(eps) => eps
                    .iter()
                    .map(|e| e.addr())
                    .filter(|ip| ip.is_ipv4() == v4)
                    .try_for_each(&mut each),
            }),
            // Cluster IPs are deduplicated when the service is stored.
            (ServiceKind::ClusterIp, _) => self
                .svc
                .cluster_ips
                .iter()
                .filter(|ip| ip.is_ipv4() == v4)
                .try_for_each(|ip| each(*ip)),
            (ServiceKind::ExternalName, _) => ControlFlow::Continue(()),
        };
        any
    }
}
