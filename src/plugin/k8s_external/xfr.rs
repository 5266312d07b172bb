//! The external zone as a zone transfer sends it (CoreDNS `plugin/k8s_external/
//! transfer.go`): the SOA, the NS and `ns1.<apex>` addresses, then for every Service
//! the zone has (external addresses, or with `headless` a headless Service's
//! endpoints) the records of each of its names, then the SOA again.
//!
//! Each name's records are what the plugin answers for it: the transfer asks the
//! answer code (`answer.rs`) for every (name, type) a Service has, `<service>.<ns>`
//! A, AAAA and SRV, `_<port>._<proto>.<service>.<ns>` SRV, and with endpoints
//! `<endpoint>.<service>.<ns>` A and AAAA, and copies the answer section, each record
//! once. So a secondary holds what a query would return; a name whose answer would be
//! over the work budget (`chain::Budget`) or a message is left out (logged).
//!
//! The walk holds an `Arc` of the snapshot the transfer started with, goes through its
//! service shards one at a time (sorted by name within a shard), and keeps the
//! answers of one Service between messages.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use super::answer::{Answer, Ctx};
use super::setup::Options;
use crate::chain::Budget;
use crate::dns::wire::{self, MAX_NAME_LEN};
use crate::dns::{PushError, QueryBuilder, Rcode, Request, Response, Section, Transport, Zone, rtype};
use crate::kubernetes::model::ServiceKind;
use crate::kubernetes::snapshot::{Keyed, ServiceEntry, Snapshot};
use crate::plugin::kubernetes::Exported;
use crate::plugin::transfer::{Transferer, ZoneStream};

/// The `k8s_external` zones, for `transfer`.
pub(super) struct ExternalTransferer {
    pub(super) opts: Options,
    pub(super) kubernetes: Arc<OnceLock<Arc<Exported>>>,
}

impl Transferer for ExternalTransferer {
    /// Exactly one of the plugin's zones (CoreDNS: `z != zone` is not authoritative),
    /// not a reverse zone, once the cluster is synced. An IXFR at the zone's serial or
    /// a later one gets the SOA alone (CoreDNS: `serial >= soa.Serial`).
    fn transfer(&self, req: &Request<'_>, serial: Option<u32>) -> Option<Box<dyn ZoneStream>> {
        let zone = self.opts.zones.iter().find(|z| z.wire() == req.qname.wire())?.clone();
        let n = req.qname.label_count();
        if n >= 2 && req.qname.label(n - 1) == b"arpa" {
            return None;
        }
        let k = self.kubernetes.get()?.clone();
        let snap = k.snapshot.load_full();
        if !snap.synced {
            return None;
        }
        let only_soa = serial.is_some_and(|s| s >= snap.external_serial);
        let mut z = ExternalZone {
            opts: self.opts.clone(),
            kube: k,
            snap,
            zone,
            only_soa,
            step: Step::Head,
            shard: 0,
            list: Vec::new(),
            at: 0,
            answers: Vec::new(),
            records: Vec::new(),
            next: 0,
            seen: HashSet::new(),
            query: Vec::with_capacity(512),
        };
        z.head();
        Some(Box::new(z))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The SOA, NS and NS addresses (or the SOA alone), gathered in `records`.
    Head,
    Services,
    /// The closing SOA, alone in `records`.
    Tail,
    Done,
}

/// A transfer of an external zone in progress.
struct ExternalZone {
    opts: Options,
    kube: Arc<Exported>,
    snap: Arc<Snapshot>,
    zone: Zone,
    only_soa: bool,
    step: Step,
    shard: usize,
    /// The shard's Services the zone has, sorted by (name, namespace).
    list: Vec<Arc<ServiceEntry>>,
    at: usize,
    /// The answers of the names being sent (finished messages) and their records to
    /// copy, (answer, offset), each record once; `next` the first not yet copied.
    answers: Vec<Vec<u8>>,
    records: Vec<(usize, usize)>,
    next: usize,
    /// The identities of the records in `records` (see [`key_of`]).
    seen: HashSet<Vec<u8>>,
    /// Where each query is written.
    query: Vec<u8>,
}

impl ExternalZone {
    /// The SOA alone (an IXFR that is current), or the SOA, NS and NS addresses.
    fn head(&mut self) {
        self.clear();
        let apex = self.zone.wire().to_vec();
        self.ask(&apex, rtype::SOA);
        if !self.only_soa {
            self.ask(&apex, rtype::NS);
            let mut ns1 = b"\x03ns1".to_vec();
            ns1.extend_from_slice(&self.opts.apex);
            ns1.extend_from_slice(&apex);
            self.ask(&ns1, rtype::A);
            self.ask(&ns1, rtype::AAAA);
        }
    }

    fn clear(&mut self) {
        self.answers.clear();
        self.records.clear();
        self.seen.clear();
        self.next = 0;
    }

    /// Asks the answer code for `name`/`qtype` and keeps the answer section's records
    /// not kept already for this batch.
    fn ask(&mut self, name: &[u8], qtype: u16) {
        if name.len() > MAX_NAME_LEN || wire::check_name(name, 0) != Some(name.len()) {
            return;
        }
        self.query.clear();
        QueryBuilder::new(name, qtype).rd(false).write(&mut self.query);
        let local = SocketAddr::from(([127, 0, 0, 1], 53));
        let Ok(req) = Request::parse(&self.query, Transport::Tcp, local, local) else {
            return;
        };
        let budget = Budget::new();
        let ctx = Ctx::new(&self.opts, &self.kube.opts, &self.snap, &req, &self.zone, &budget);
        let mut resp = Response::new();
        resp.start(&req, Rcode::NOERROR);
        match ctx.answer(&mut resp) {
            Answer::Records | Answer::Chase(_) => {}
            Answer::OverBudget => {
                log::warn!(
                    "plugin/k8s_external: {} {} left out of a zone transfer: over the work budget",
                    req.qname,
                    rtype::name(qtype)
                );
                return;
            }
            _ => return,
        }
        if resp.truncated() {
            log::warn!(
                "plugin/k8s_external: {} {} cut short in a zone transfer: more than a message",
                req.qname,
                rtype::name(qtype)
            );
        }
        let msg = resp.finish().to_vec();
        let idx = self.answers.len();
        for pos in resp.records().iter().filter(|p| p.section == Section::Answer) {
            let Some(key) = key_of(&msg, pos.start as usize) else {
                continue;
            };
            if self.seen.insert(key) {
                self.records.push((idx, pos.start as usize));
            }
        }
        self.answers.push(msg);
    }

    /// Whether the zone has this Service: an exposed namespace, and external
    /// addresses (or, with `headless`, a headless Service's endpoints).
    fn has(&self, e: &ServiceEntry) -> bool {
        let ns = e.svc.namespace();
        let exposed = (self.kube.opts.namespaces.is_empty()
            || self.kube.opts.namespaces.iter().any(|n| n.as_bytes() == ns))
            && self.snap.namespace_exists(ns);
        exposed && (e.svc.has_external() || (self.opts.headless && e.svc.kind == ServiceKind::Headless))
    }

    /// Gathers every record of the current Service.
    fn service(&mut self) {
        self.clear();
        let entry = self.list[self.at].clone();
        let mut base = entry.svc.key().to_vec();
        base.extend_from_slice(self.zone.wire());
        for t in [rtype::A, rtype::AAAA, rtype::SRV] {
            self.ask(&base, t);
        }
        let endpoints = self.opts.headless && !entry.svc.has_external() && entry.svc.kind == ServiceKind::Headless;
        // `_<port>._<proto>` of the Service's ports and, for endpoints, its slices'.
        let mut ports: Vec<(Box<str>, Box<str>)> = Vec::new();
        let mut seen = HashSet::new();
        let slice_ports = entry.slices.iter().filter(|_| endpoints).flat_map(|s| s.ports.iter());
        for p in entry.svc.ports.iter().chain(slice_ports) {
            if !p.name.is_empty() && seen.insert((p.name.clone(), p.protocol.clone())) {
                ports.push((p.name.clone(), p.protocol.clone()));
            }
        }
        for (name, proto) in &ports {
            let mut n = Vec::with_capacity(base.len() + name.len() + proto.len() + 4);
            for l in [name, proto] {
                n.push(l.len() as u8 + 1);
                n.push(b'_');
                n.extend(l.bytes().map(|b| b.to_ascii_lowercase()));
            }
            n.extend_from_slice(&base);
            self.ask(&n, rtype::SRV);
        }
        if endpoints {
            let mut labels = HashSet::new();
            for s in entry.slices.iter() {
                for e in 0..s.eps.len() {
                    let mut buf = [0u8; 64];
                    let label = s.label(e, &mut buf).to_vec();
                    if labels.insert(label.clone()) {
                        let mut n = label;
                        n.extend_from_slice(&base);
                        self.ask(&n, rtype::A);
                        self.ask(&n, rtype::AAAA);
                    }
                }
            }
        }
    }

    /// Loads the next shard's Services.
    fn load_shard(&mut self) {
        let snap = self.snap.clone();
        let mut list = std::mem::take(&mut self.list);
        list.clear();
        list.extend(snap.shard_services(self.shard).filter(|e| self.has(e)).cloned());
        list.sort_unstable_by(|a, b| (a.svc.name(), a.svc.namespace()).cmp(&(b.svc.name(), b.svc.namespace())));
        self.list = list;
        self.shard += 1;
        self.at = 0;
    }

    /// Copies the gathered records from `next` on; `false` when the message filled.
    fn copy(&mut self, msg: &mut Response) -> bool {
        while let Some(&(a, at)) = self.records.get(self.next) {
            if let Err(PushError::Truncated) = msg.copy_or_full(Section::Answer, &self.answers[a], at) {
                return false;
            }
            self.next += 1;
        }
        true
    }
}

/// A record's identity: its owner uncompressed, then type, class and data as written
/// (the answers of one name spell a target the same way).
fn key_of(msg: &[u8], at: usize) -> Option<Vec<u8>> {
    let mut owner = [0u8; MAX_NAME_LEN];
    let (after, len) = wire::read_name(msg, at, &mut owner)?;
    let end = wire::skip_record(msg, at)?;
    let mut k = owner[..len].to_ascii_lowercase();
    k.extend_from_slice(&msg[after..after + 4]);
    k.extend_from_slice(msg.get(after + 8..end)?);
    Some(k)
}

impl ZoneStream for ExternalZone {
    fn fill(&mut self, msg: &mut Response) -> bool {
        loop {
            match self.step {
                Step::Head => {
                    if !self.copy(msg) {
                        return false;
                    }
                    if self.only_soa {
                        self.step = Step::Done;
                        continue;
                    }
                    self.clear();
                    self.step = Step::Services;
                }
                Step::Services => {
                    if self.next < self.records.len() {
                        if !self.copy(msg) {
                            return false;
                        }
                        continue;
                    }
                    if self.at < self.list.len() {
                        self.service();
                        self.at += 1;
                        continue;
                    }
                    if self.shard >= self.snap.service_shards() {
                        self.list = Vec::new();
                        self.clear();
                        let apex = self.zone.wire().to_vec();
                        self.ask(&apex, rtype::SOA);
                        self.step = Step::Tail;
                        continue;
                    }
                    self.load_shard();
                }
                Step::Tail => {
                    if !self.copy(msg) {
                        return false;
                    }
                    self.step = Step::Done;
                }
                Step::Done => return true,
            }
        }
    }
}
