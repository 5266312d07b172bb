//! The cluster zone as a zone transfer sends it (CoreDNS `plugin/kubernetes/xfr.go`):
//! the SOA, the apex NS set and its addresses, then every exposed service's records,
//! then the SOA again.
//!
//! Per service, in CoreDNS's order: a ClusterIP service's addresses, then per port its
//! SRV at the service name and, for a named port, at `_port._proto`; a headless
//! service's endpoints, each with its address at the service name, at its own name,
//! and an SRV per named port at `_port._proto` with itself as target; an ExternalName
//! service's CNAME. Each record is the one a query for its name and type answers
//! (`answer/`): the same TTL, the same SRV weight (the candidates the query counts),
//! each (name, data) once. CoreDNS writes a fixed weight and repeats records where its
//! answers do not (README.md, Differences).
//!
//! The walk holds an `Arc` of the snapshot the transfer started with and goes through
//! its service shards one at a time, [`CHUNK`] services' pointers at once (in the
//! shard's own order; services in no particular order, README.md Differences), with a
//! cursor inside the current service (slice, endpoint, record), so a message boundary
//! anywhere costs nothing and no service is walked twice.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::answer::{Ctx, Zoned};
use super::setup::Options;
use crate::chain::Budget;
use crate::dns::wire::QNAME_OFFSET;
use crate::dns::{Name, PushError, Rdata, Record, Request, Response, Section, Tail, rtype};
use crate::kubernetes::model::{Port, ServiceKind};
use crate::kubernetes::snapshot::{ServiceEntry, Snapshot};
use crate::plugin::transfer::{Transferer, ZoneStream};

/// The kubernetes plugin's zones, for `transfer`.
pub(super) struct KubeTransferer {
    pub(super) snapshot: Arc<ArcSwap<Snapshot>>,
    pub(super) opts: Options,
}

impl Transferer for KubeTransferer {
    /// Only a zone of the plugin itself (CoreDNS takes any name inside one, and
    /// transfers the whole zone under that name), not a reverse zone (CoreDNS would
    /// list the services under it), and not before the first sync (an empty cluster
    /// sent to a secondary would empty its copy).
    fn transfer(&self, req: &Request<'_>, serial: Option<u32>) -> Option<Box<dyn ZoneStream>> {
        self.opts.zones.iter().find(|z| z.wire() == req.qname.wire())?;
        let n = req.qname.label_count();
        if n >= 2 && req.qname.label(n - 1) == b"arpa" {
            return None;
        }
        let snap = self.snapshot.load_full();
        if !snap.synced {
            return None;
        }
        // RFC 1995 2 as CoreDNS reads it: the same serial (other than 0) is current, any
        // other gets the whole zone.
        let only_soa = serial.is_some_and(|s| s != 0 && s == snap.serial);
        let (ns_names, glue) = if only_soa {
            Default::default()
        } else {
            let z = Zoned::find(&self.opts, req)?;
            let budget = Budget::new();
            Ctx::new(&self.opts, &snap, req, z, &budget)
                .ns_for_transfer()
                .unwrap_or_default()
        };
        Some(Box::new(KubeZone {
            snap,
            ttl: self.opts.ttl,
            namespaces: self.opts.namespaces.clone(),
            ignore_empty: self.opts.ignore_empty_service,
            ns_names,
            glue,
            phase: if only_soa { Phase::LastSoa } else { Phase::Soa },
            shard: 0,
            offset: 0,
            list: Vec::new(),
            at: 0,
            cur: [0; 3],
            prep: Prep::default(),
            prepared: false,
        }))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Soa,
    Ns(usize),
    Glue(usize),
    Services,
    LastSoa,
    Done,
}

/// Services a transfer loads at once (see [`KubeZone::load_chunk`]).
const CHUNK: usize = 64;

/// A transfer of the cluster zone in progress.
struct KubeZone {
    snap: Arc<Snapshot>,
    ttl: u32,
    namespaces: Vec<String>,
    ignore_empty: bool,
    /// NS names relative to the zone (empty: a name the answer would skip).
    ns_names: Vec<Box<[u8]>>,
    glue: Vec<(usize, IpAddr)>,
    phase: Phase,
    /// The shard being sent, and where in it the next chunk starts.
    shard: usize,
    offset: usize,
    /// The chunk of services being sent; those not exposed are skipped as they come up.
    list: Vec<Arc<ServiceEntry>>,
    /// The service being sent, and where inside it (see `emit_*`).
    at: usize,
    cur: [usize; 3],
    /// What the records of the service being sent share (weights, what was written);
    /// kept from service to service for its allocations.
    prep: Prep,
    /// Whether `prep` is the current service's.
    prepared: bool,
}

/// What a service's records need that counts over the whole service, computed once
/// when its first record is written.
#[derive(Default)]
struct Prep {
    /// ClusterIP: the weight of the SRV at the service name, and per port whether it is
    /// the first with its number (the answer writes one SRV per number) and the weight
    /// of its `_port._proto` SRV.
    bare_weight: u16,
    first_of_number: Vec<bool>,
    named_weight: Vec<u16>,
    /// Headless: the weight of the `_port._proto` SRVs, by (port name, protocol).
    by_name: HashMap<(Box<str>, Box<str>), u16>,
    /// Headless whose endpoints may repeat a name, an address or a port: what was
    /// written, so that each record goes once as in the answers.
    seen: Option<HashSet<Box<[u8]>>>,
}

/// CoreDNS's SRV weight for `n` candidates (as `answer/srv.rs` computes it).
fn weight(n: u64) -> u16 {
    ((100.0 / (100.0 * n.max(1) as f64)) * 100.0).floor().max(1.0) as u16
}

/// The zone as the client spelled it: the question.
const ZONE: Tail<'static> = Tail::Question(QNAME_OFFSET);

/// Writes one record; `false` when the message is full (a malformed record, such as
/// a name over 255 bytes, is left out, as the answers leave it out).
fn put(msg: &mut Response, owner: Name<'_>, rtype: u16, ttl: u32, data: Rdata<'_>) -> bool {
    let rr = Record {
        owner,
        rtype,
        ttl,
        data,
    };
    !matches!(msg.push_or_full(Section::Answer, &rr), Err(PushError::Truncated))
}

/// `_<port>._<proto>` as wire labels, lower-cased, into `buf`.
fn port_labels<'b>(name: &str, proto: &str, buf: &'b mut [u8; 132]) -> &'b [u8] {
    let mut n = 0;
    for part in [name, proto] {
        let part = &part.as_bytes()[..part.len().min(62)];
        buf[n] = part.len() as u8 + 1;
        buf[n + 1] = b'_';
        for (o, c) in buf[n + 2..].iter_mut().zip(part) {
            *o = c.to_ascii_lowercase();
        }
        n += 2 + part.len();
    }
    &buf[..n]
}

impl KubeZone {
    fn soa(&self, msg: &mut Response) -> bool {
        put(
            msg,
            Name::under_question(&[], QNAME_OFFSET),
            rtype::SOA,
            self.ttl.min(300),
            Rdata::Soa {
                mname: Name::under_question(b"\x02ns\x03dns", QNAME_OFFSET),
                rname: Name::under_question(b"\x0ahostmaster", QNAME_OFFSET),
                serial: self.snap.serial,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: self.ttl,
            },
        )
    }

    /// Whether the answers serve this service (its namespace exposed, and not an
    /// empty ClusterIP service with `ignore_empty_service`).
    fn served(&self, e: &ServiceEntry) -> bool {
        let ns = e.svc.namespace();
        (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n.as_bytes() == ns))
            && self.snap.namespace_exists(ns)
            && !(self.ignore_empty && e.svc.kind == ServiceKind::ClusterIp && e.ready_addresses == 0)
    }

    /// Loads the next chunk of the current shard's services (none when the shard is
    /// done: it moves on to the next).
    fn load_chunk(&mut self) {
        self.list.clear();
        // Which of them are served is asked as each comes up (`fill`), so that loading,
        // paid inside one message, stays small (a whole shard of ~400 cold entries,
        // sorted, took ~0.1 ms: what a UDP query waited behind a transfer at p99).
        self.list.extend(
            self.snap
                .shard_services(self.shard)
                .skip(self.offset)
                .take(CHUNK)
                .cloned(),
        );
        if self.list.len() < CHUNK {
            self.shard += 1;
            self.offset = 0;
        } else {
            self.offset += CHUNK;
        }
        self.at = 0;
    }

    /// Writes the current service from the cursor on; `false` when the message filled.
    fn emit_service(&mut self, msg: &mut Response) -> bool {
        let entry = self.list[self.at].clone();
        if !self.prepared {
            prepare(&entry, &mut self.prep);
            self.prepared = true;
        }
        match entry.svc.kind {
            ServiceKind::ClusterIp => self.emit_cluster_ip(&entry, msg),
            ServiceKind::Headless => self.emit_headless(&entry, msg),
            ServiceKind::ExternalName => {
                if self.cur[0] == 0 {
                    if let Some(target) = entry.svc.external() {
                        let owner = Name {
                            head: &[],
                            mid: &entry.svc.rel,
                            tail: ZONE,
                        };
                        if !put(msg, owner, rtype::CNAME, self.ttl, Rdata::Name(Name::wire(target))) {
                            return false;
                        }
                    }
                    self.cur[0] = 1;
                }
                true
            }
        }
    }

    /// Cursor: `[address, port, 0 = SRV at the service | 1 = SRV at _port._proto]`.
    fn emit_cluster_ip(&mut self, entry: &ServiceEntry, msg: &mut Response) -> bool {
        let svc = &entry.svc;
        let owner = Name {
            head: &[],
            mid: &svc.rel,
            tail: ZONE,
        };
        if svc.cluster_ips.is_empty() {
            return true;
        }
        let ttl = self.ttl;
        while let Some(ip) = svc.cluster_ips.get(self.cur[0]) {
            let (t, data) = Rdata::address(*ip);
            if !put(msg, owner, t, ttl, data) {
                return false;
            }
            self.cur[0] += 1;
        }
        let prep = &self.prep;
        while let Some(p) = svc.ports.get(self.cur[1]) {
            let i = self.cur[1];
            if p.port != -1 {
                if self.cur[2] == 0 {
                    if prep.first_of_number[i] {
                        let srv = Rdata::Srv {
                            priority: 0,
                            weight: prep.bare_weight,
                            port: p.port as u16,
                            target: owner,
                        };
                        if !put(msg, owner, rtype::SRV, ttl, srv) {
                            return false;
                        }
                    }
                    self.cur[2] = 1;
                }
                if !p.name.is_empty() {
                    let mut buf = [0u8; 132];
                    let named = Name {
                        head: port_labels(&p.name, &p.protocol, &mut buf),
                        mid: &svc.rel,
                        tail: ZONE,
                    };
                    let srv = Rdata::Srv {
                        priority: 0,
                        weight: prep.named_weight[i],
                        port: p.port as u16,
                        target: owner,
                    };
                    if !put(msg, named, rtype::SRV, ttl, srv) {
                        return false;
                    }
                }
            }
            self.cur[1] += 1;
            self.cur[2] = 0;
        }
        true
    }

    /// Cursor: `[slice, endpoint, 0 = address at the service | 1 = address at the
    /// endpoint's name | 2 + j = SRV for port j]`.
    fn emit_headless(&mut self, entry: &ServiceEntry, msg: &mut Response) -> bool {
        let rel = &entry.svc.rel;
        let ttl = self.ttl;
        let svc_owner = Name {
            head: &[],
            mid: rel,
            tail: ZONE,
        };
        let prep = &mut self.prep;
        while let Some(slice) = entry.slices.get(self.cur[0]) {
            while self.cur[1] < slice.eps.len() {
                let e = self.cur[1];
                let ip = slice.eps.addr(e);
                let mut buf = [0u8; 64];
                let label = slice.label(e, &mut buf);
                let ep_owner = Name {
                    head: label,
                    mid: rel,
                    tail: ZONE,
                };
                let (t, data) = Rdata::address(ip);
                if self.cur[2] == 0 {
                    let key = prep.seen.as_ref().map(|_| key_of(0, &[&ip_bytes(ip)]));
                    if !prep.written(&key) {
                        if !put(msg, svc_owner, t, ttl, data) {
                            return false;
                        }
                        prep.mark(key);
                    }
                    self.cur[2] = 1;
                }
                if self.cur[2] == 1 {
                    let key = prep.seen.as_ref().map(|_| key_of(1, &[label, &ip_bytes(ip)]));
                    if !prep.written(&key) {
                        if !put(msg, ep_owner, t, ttl, data) {
                            return false;
                        }
                        prep.mark(key);
                    }
                    self.cur[2] = 2;
                }
                while let Some(p) = slice.ports.get(self.cur[2] - 2) {
                    if !p.name.is_empty() && p.port != -1 {
                        let port = (p.port as u16).to_be_bytes();
                        let key = prep
                            .seen
                            .as_ref()
                            .map(|_| key_of(2, &[p.name.as_bytes(), p.protocol.as_bytes(), label, &port]));
                        if !prep.written(&key) {
                            let mut pbuf = [0u8; 132];
                            let owner = Name {
                                head: port_labels(&p.name, &p.protocol, &mut pbuf),
                                mid: rel,
                                tail: ZONE,
                            };
                            let w = prep
                                .by_name
                                .get(&(p.name.clone(), p.protocol.clone()))
                                .copied()
                                .unwrap_or(1);
                            let srv = Rdata::Srv {
                                priority: 0,
                                weight: w,
                                port: p.port as u16,
                                target: ep_owner,
                            };
                            if !put(msg, owner, rtype::SRV, ttl, srv) {
                                return false;
                            }
                            prep.mark(key);
                        }
                    }
                    self.cur[2] += 1;
                }
                self.cur[1] += 1;
                self.cur[2] = 0;
            }
            self.cur[0] += 1;
            self.cur[1] = 0;
        }
        true
    }
}

impl Prep {
    fn written(&self, key: &Option<Box<[u8]>>) -> bool {
        match (&self.seen, key) {
            (Some(seen), Some(k)) => seen.contains(k),
            _ => false,
        }
    }

    fn mark(&mut self, key: Option<Box<[u8]>>) {
        if let (Some(seen), Some(k)) = (&mut self.seen, key) {
            seen.insert(k);
        }
    }
}

fn ip_bytes(ip: IpAddr) -> [u8; 17] {
    let mut b = [0u8; 17];
    match ip {
        IpAddr::V4(a) => b[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => {
            b[..16].copy_from_slice(&a.octets());
            b[16] = 6;
        }
    }
    b
}

/// A record's identity for [`Prep::seen`]: its kind, then its parts, each ended.
fn key_of(kind: u8, parts: &[&[u8]]) -> Box<[u8]> {
    let mut k = vec![kind];
    for p in parts {
        k.push(p.len() as u8);
        k.extend_from_slice(p);
    }
    k.into_boxed_slice()
}

/// Port lists up to this long are counted pairwise (no allocation); longer ones (the
/// API allows hundreds) through hash maps, so a service costs linear time either way.
const PAIRWISE_PORTS: usize = 16;

/// The counts a service's SRV weights divide by, as the answers count candidates
/// (`answer/lookup.rs` `candidate_count`): ports times addresses. Written into `prep`,
/// whose allocations the previous service left.
fn prepare(entry: &ServiceEntry, prep: &mut Prep) {
    prep.bare_weight = 0;
    prep.first_of_number.clear();
    prep.named_weight.clear();
    prep.by_name.clear();
    prep.seen = None;
    let svc = &entry.svc;
    match svc.kind {
        ServiceKind::ClusterIp => {
            let ips = svc.cluster_ips.len() as u64;
            let ports = &svc.ports[..];
            prep.bare_weight = weight(ports.len() as u64 * ips);
            let same_name = |a: &Port, b: &Port| {
                a.name.eq_ignore_ascii_case(&b.name) && a.protocol.eq_ignore_ascii_case(&b.protocol)
            };
            if ports.len() <= PAIRWISE_PORTS {
                for (i, p) in ports.iter().enumerate() {
                    prep.first_of_number.push(!ports[..i].iter().any(|q| q.port == p.port));
                    let n = ports.iter().filter(|q| same_name(p, q)).count() as u64;
                    prep.named_weight.push(weight(n * ips));
                }
            } else {
                let mut numbers = HashSet::with_capacity(ports.len());
                let mut by_name: HashMap<(String, String), u64> = HashMap::new();
                for p in ports {
                    prep.first_of_number.push(numbers.insert(p.port));
                    *by_name
                        .entry((p.name.to_ascii_lowercase(), p.protocol.to_ascii_lowercase()))
                        .or_default() += 1;
                }
                prep.named_weight.extend(ports.iter().map(|p| {
                    let n = by_name[&(p.name.to_ascii_lowercase(), p.protocol.to_ascii_lowercase())];
                    weight(n * ips)
                }));
            }
        }
        ServiceKind::Headless => {
            let mut counts: HashMap<(Box<str>, Box<str>), u64> = HashMap::new();
            for slice in entry.slices.iter() {
                for p in slice.ports.iter().filter(|p| !p.name.is_empty()) {
                    *counts.entry((p.name.clone(), p.protocol.clone())).or_default() += slice.eps.len() as u64;
                }
            }
            prep.by_name.extend(counts.into_iter().map(|(k, n)| (k, weight(n))));
            if !entry.distinct {
                prep.seen = Some(HashSet::new());
            }
        }
        ServiceKind::ExternalName => {}
    }
}

impl ZoneStream for KubeZone {
    fn fill(&mut self, msg: &mut Response) -> bool {
        loop {
            match self.phase {
                Phase::Soa => {
                    if !self.soa(msg) {
                        return false;
                    }
                    self.phase = Phase::Ns(0);
                }
                Phase::Ns(i) => {
                    let Some(rel) = self.ns_names.get(i) else {
                        self.phase = Phase::Glue(0);
                        continue;
                    };
                    if !rel.is_empty() {
                        let data = Rdata::Name(Name {
                            head: &[],
                            mid: rel,
                            tail: ZONE,
                        });
                        if !put(msg, Name::under_question(&[], QNAME_OFFSET), rtype::NS, self.ttl, data) {
                            return false;
                        }
                    }
                    self.phase = Phase::Ns(i + 1);
                }
                Phase::Glue(i) => {
                    let Some(&(name, ip)) = self.glue.get(i) else {
                        self.phase = Phase::Services;
                        continue;
                    };
                    if let Some(rel) = self.ns_names.get(name).filter(|r| !r.is_empty()) {
                        let owner = Name {
                            head: &[],
                            mid: rel,
                            tail: ZONE,
                        };
                        let (t, data) = Rdata::address(ip);
                        if !put(msg, owner, t, self.ttl, data) {
                            return false;
                        }
                    }
                    self.phase = Phase::Glue(i + 1);
                }
                Phase::Services => {
                    if self.at >= self.list.len() {
                        if self.shard >= self.snap.service_shards() {
                            self.list = Vec::new();
                            self.phase = Phase::LastSoa;
                        } else {
                            self.load_chunk();
                        }
                        continue;
                    }
                    if !self.prepared && !self.served(&self.list[self.at]) {
                        self.at += 1;
                        continue;
                    }
                    if !self.emit_service(msg) {
                        return false;
                    }
                    self.at += 1;
                    self.cur = [0; 3];
                    self.prepared = false;
                }
                Phase::LastSoa => {
                    if !self.soa(msg) {
                        return false;
                    }
                    self.phase = Phase::Done;
                }
                Phase::Done => return true,
            }
        }
    }
}
