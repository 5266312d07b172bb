//! Answering a query in an external zone, as CoreDNS decides (`k8s_external`
//! `external.go` `ServeDNS`, `apex.go`, `msg_to_dns.go`; `kubernetes` `external.go`
//! `External` and `ns.go` `nsAddrs`).
//!
//! A name is `<service>.<namespace>.<zone>`, `<endpoint>.<service>.<namespace>.<zone>`
//! or `_<port>._<protocol>.<service>.<namespace>.<zone>`. Its candidates are CoreDNS's
//! `msg.Service` list: each external address of the service with each matching port or,
//! with `headless`, for a headless service (or an endpoint name) without external
//! addresses, each ready endpoint with each matching port of its slice. A, AAAA and SRV
//! are answered from them; any other type gets NODATA when there are candidates.
//!
//! Every answer costs in proportion to what it visits, charged to the query's work
//! budget; repeats are dropped with per-thread sets, reused from query to query, so
//! answering allocates nothing once they have grown.

use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::net::IpAddr;
use std::ops::ControlFlow;

use super::setup::Options;
use crate::chain::Budget;
use crate::dns::{Name, PushError, Rdata, Record, Request, Response, Section, Tail, Zone, rtype};
use crate::kubernetes::model::{Port, ServiceKind};
use crate::kubernetes::snapshot::Keyed;
use crate::kubernetes::snapshot::{FxHasher, LabelBuf, Owner, ServiceEntry, SliceData, Snapshot, label_hash};
use crate::plugin::kubernetes::{Options as KubeOptions, reverse_address};

/// A record written once: (target label or host index, port or address, what it is).
type Key = (LabelBuf, u128, u8);
const PORT: u8 = 0;
const V4: u8 = 1;
const V6: u8 = 2;
const HOST: u8 = 3;

type Seen = HashSet<Key, BuildHasherDefault<FxHasher>>;

thread_local! {
    /// What this thread's current answer wrote: the answer section's keys and the
    /// additional section's.
    static SEEN: RefCell<(Seen, Seen)> = RefCell::new((Seen::default(), Seen::default()));
}

fn addr_key(label: &[u8], ip: IpAddr) -> Key {
    let mut l = [0u8; 64];
    l[..label.len()].copy_from_slice(label);
    match ip {
        IpAddr::V4(a) => (l, u128::from(u32::from(a)), V4),
        IpAddr::V6(a) => (l, u128::from(a), V6),
    }
}

fn port_key(label: &[u8], port: i32) -> Key {
    let mut l = [0u8; 64];
    l[..label.len()].copy_from_slice(label);
    (l, port as u32 as u128, PORT)
}

fn host_key(host: usize, value: u128) -> Key {
    let mut l = [0u8; 64];
    l[..8].copy_from_slice(&(host as u64).to_le_bytes());
    (l, value, HOST)
}

/// How a query ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer<'a> {
    /// Records were written.
    Records,
    /// Records were written, among them a CNAME to this load balancer's host name
    /// (wire form), whose own addresses CoreDNS appends (its `upstream.Lookup`).
    Chase(&'a [u8]),
    /// The name exists without data of the type: NOERROR, the SOA in authority.
    NoData,
    /// The name does not exist; `apex`: under the apex label (never falls through).
    NameError { apex: bool },
    /// Over the query's work budget: SERVFAIL.
    OverBudget,
}

struct Over;

/// What a name asks for below its service.
#[derive(Clone, Copy, Default)]
struct Sel<'q> {
    endpoint: Option<&'q [u8]>,
    port: Option<&'q [u8]>,
    protocol: Option<&'q [u8]>,
}

impl Sel<'_> {
    /// CoreDNS `matchPortAndProtocol`: an absent part matches anything, a present one
    /// must equal (without case; names are lower-case on both sides; no wildcards).
    fn port_matches(&self, p: &Port) -> bool {
        self.port.is_none_or(|n| n == p.name.as_bytes()) && self.protocol.is_none_or(|n| n == p.protocol.as_bytes())
    }
}

/// CoreDNS `stripUnderscore`.
fn strip(label: &[u8]) -> &[u8] {
    label.strip_prefix(b"_").unwrap_or(label)
}

/// One query being answered.
pub(super) struct Ctx<'a, 'r> {
    opts: &'a Options,
    kube: &'a KubeOptions,
    snap: &'a Snapshot,
    req: &'a Request<'r>,
    zone: &'a Zone,
    /// Labels in front of the zone.
    before: usize,
    budget: &'a Budget,
}

impl<'a, 'r> Ctx<'a, 'r> {
    pub(super) fn new(
        opts: &'a Options,
        kube: &'a KubeOptions,
        snap: &'a Snapshot,
        req: &'a Request<'r>,
        zone: &'a Zone,
        budget: &'a Budget,
    ) -> Ctx<'a, 'r> {
        let before = zone.labels_before(&req.qname).unwrap_or(0);
        Ctx {
            opts,
            kube,
            snap,
            req,
            zone,
            before,
            budget,
        }
    }

    fn charge(&self, n: u32) -> Result<(), Over> {
        self.budget.charge(n).map_err(|_| Over)
    }

    fn apex_labels(&self) -> usize {
        crate::dns::wire::label_count(&self.opts.apex)
    }

    /// The SOA of the zone (CoreDNS `apex.go` `soa`): `ns1.<apex>.<zone>`,
    /// `hostmaster.<apex>.<zone>`, the external serial, 7200 1800 86400, the TTL.
    fn soa_record(&self) -> Record<'a> {
        let zone = self.zone.wire();
        Record {
            owner: Name::wire(zone),
            rtype: rtype::SOA,
            ttl: self.opts.ttl,
            data: Rdata::Soa {
                mname: Name {
                    head: b"\x03ns1",
                    mid: &self.opts.apex,
                    tail: Tail::Wire(zone),
                },
                rname: Name {
                    head: b"\x0ahostmaster",
                    mid: &self.opts.apex,
                    tail: Tail::Wire(zone),
                },
                serial: self.snap.external_serial,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: self.opts.ttl,
            },
        }
    }

    /// The SOA in the authority section.
    pub(super) fn soa(&self, resp: &mut Response) {
        resp.authority(self.soa_record());
    }

    /// Answers into `resp` (started, AA set).
    pub(super) fn answer(&self, resp: &mut Response) -> Answer<'a> {
        match self.dispatch(resp) {
            Ok(a) => a,
            Err(Over) => Answer::OverBudget,
        }
    }

    fn dispatch(&self, resp: &mut Response) -> Result<Answer<'a>, Over> {
        if self.before == 0 {
            return self.apex(resp);
        }
        let n = self.apex_labels();
        let name = &self.req.qname;
        if self.before >= n {
            let sub = self.before - n;
            let apex_start = name.label_offset(sub);
            let zone_start = name.label_offset(self.before);
            if name.wire()[apex_start..zone_start] == *self.opts.apex {
                return self.sub_apex(resp, sub);
            }
        }
        if self.req.qtype == rtype::PTR {
            if let Some(ip) = reverse_address(name) {
                return Ok(self.ptr(resp, ip));
            }
        }
        self.service_name(resp)
    }

    /// PTR of an external address (CoreDNS `ExternalReverse`): each service that has it
    /// (in an exposed namespace, when `namespaces` is set), named
    /// `<service>.<namespace>.<first zone>`; none: NXDOMAIN.
    fn ptr(&self, resp: &mut Response, ip: IpAddr) -> Answer<'a> {
        let mut any = false;
        for svc in self.snap.external_owners(&ip) {
            if self.charge(1).is_err() {
                return Answer::OverBudget;
            }
            if !self.kube.namespaces.is_empty() && !self.namespace_exposed(svc.namespace()) {
                continue;
            }
            any = true;
            let target = Name {
                head: svc.key(),
                mid: &[],
                tail: Tail::Wire(self.opts.first_zone.wire()),
            };
            let rr = Record::at_question(rtype::PTR, self.opts.ttl, Rdata::Name(target));
            if resp.push(Section::Answer, &rr) == Err(PushError::Truncated) {
                break;
            }
        }
        if any {
            Answer::Records
        } else {
            Answer::NameError { apex: false }
        }
    }

    /// The zone's apex: SOA, NS (with the NS addresses), NODATA for the rest
    /// (`serveApex`).
    fn apex(&self, resp: &mut Response) -> Result<Answer<'a>, Over> {
        match self.req.qtype {
            rtype::SOA => {
                resp.answer(self.soa_record());
                Ok(Answer::Records)
            }
            rtype::NS => {
                let ns1 = Name {
                    head: b"\x03ns1",
                    mid: &self.opts.apex,
                    tail: Tail::Wire(self.zone.wire()),
                };
                resp.answer(Record::at_question(rtype::NS, self.opts.ttl, Rdata::Name(ns1)));
                // The addresses, named `ns1.<apex>.<question>`.
                let owner = Name {
                    head: b"\x03ns1",
                    mid: &self.opts.apex,
                    tail: Name::QUESTION.tail,
                };
                self.ns_addrs(|ip| {
                    let (t, data) = Rdata::address(ip);
                    let rr = Record {
                        owner,
                        rtype: t,
                        ttl: self.opts.ttl,
                        data,
                    };
                    resp.push(Section::Additional, &rr).is_ok()
                })?;
                Ok(Answer::Records)
            }
            _ => Ok(Answer::NoData),
        }
    }

    /// Names under `<apex>.<zone>` (`serveSubApex`): the apex label itself is an empty
    /// non-terminal (NODATA), `ns1` has the NS addresses, anything else does not exist.
    fn sub_apex(&self, resp: &mut Response, sub: usize) -> Result<Answer<'a>, Over> {
        if sub == 0 {
            return Ok(Answer::NoData);
        }
        if sub != 1 || self.req.qname.label(0) != b"ns1" {
            return Ok(Answer::NameError { apex: true });
        }
        let want_v4 = match self.req.qtype {
            rtype::A => true,
            rtype::AAAA => false,
            _ => return Ok(Answer::NoData),
        };
        let mut any = false;
        self.ns_addrs(|ip| {
            if ip.is_ipv4() != want_v4 {
                return true;
            }
            any = true;
            let (t, data) = Rdata::address(ip);
            resp.push(Section::Answer, &Record::at_question(t, self.opts.ttl, data))
                .is_ok()
        })?;
        Ok(if any { Answer::Records } else { Answer::NoData })
    }

    /// CoreDNS `nsAddrs(external: true, ...)`: for every endpoint holding one of the
    /// server's local addresses, its service's external addresses (with `headless`, a
    /// headless service's: the endpoints of that slice); with no such endpoint, the
    /// local addresses themselves. Each address once; `f` returns false when the
    /// message is full.
    fn ns_addrs(&self, mut f: impl FnMut(IpAddr) -> bool) -> Result<(), Over> {
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            let seen = &mut seen.1;
            seen.clear();
            let mut found = false;
            let mut emit = |ip: IpAddr, seen: &mut Seen| -> Result<bool, Over> {
                self.charge(1)?;
                Ok(!seen.insert(addr_key(&[], ip)) || f(ip))
            };
            for local in &self.kube.local_ips {
                for owner in self.snap.owners(local) {
                    self.charge(1)?;
                    let Owner::Endpoint(slice, _) = owner else { continue };
                    found = true;
                    let Some(entry) = self.snap.service(slice.service_key()) else {
                        continue;
                    };
                    if self.opts.headless && entry.svc.kind == ServiceKind::Headless {
                        for ep in slice.eps.iter() {
                            if !emit(ep.addr(), seen)? {
                                return Ok(());
                            }
                        }
                    } else {
                        for ip in entry.svc.external_ips() {
                            if !emit(*ip, seen)? {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            if !found {
                for ip in &self.kube.local_ips {
                    if !emit(*ip, seen)? {
                        return Ok(());
                    }
                }
            }
            Ok(())
        })
    }

    /// CoreDNS `kubernetes.External`'s exposure test: a namespace listed by
    /// `namespaces` (when set) that exists.
    fn namespace_exposed(&self, ns: &[u8]) -> bool {
        (self.kube.namespaces.is_empty() || self.kube.namespaces.iter().any(|n| n.as_bytes() == ns))
            && self.snap.namespace_exists(ns)
    }

    /// A name below the zone that is not under the apex label.
    fn service_name(&self, resp: &mut Response) -> Result<Answer<'a>, Over> {
        let name = &self.req.qname;
        let before = self.before;
        if !self.namespace_exposed(name.label(before - 1)) {
            return Ok(Answer::NameError { apex: false });
        }
        // The namespace alone exists, with no records.
        if before == 1 {
            return Ok(Answer::NoData);
        }
        // CoreDNS compares with "": a label that is empty once stripped (`_`) asks for
        // nothing in particular.
        let part = |i: usize| Some(strip(name.label(i))).filter(|l| !l.is_empty());
        let sel = match before {
            2 => Sel::default(),
            3 => Sel {
                endpoint: part(0),
                ..Sel::default()
            },
            4 => Sel {
                port: part(0),
                protocol: part(1),
                ..Sel::default()
            },
            _ => return Ok(Answer::NameError { apex: false }),
        };
        let key = &name.wire()[name.label_offset(before - 2)..name.label_offset(before)];
        let Some(entry) = self.snap.service(key) else {
            return Ok(Answer::NameError { apex: false });
        };
        // CoreDNS: endpoints for a headless service, or an endpoint name, when the
        // service has no external address; its external addresses otherwise (an
        // endpoint label in front of them is not looked at).
        let endpoints = self.opts.headless
            && !entry.svc.has_external()
            && (entry.svc.kind == ServiceKind::Headless || sel.endpoint.is_some());
        let cands = Candidates {
            ctx: self,
            entry,
            sel,
            endpoints,
            hash: sel.endpoint.map_or(0, label_hash),
        };
        // A PTR for a name that is not a reverse one: NODATA or NXDOMAIN as the name
        // has candidates or not (`External`).
        let count = cands.count()?;
        if count == 0 {
            return Ok(Answer::NameError { apex: false });
        }
        let wrote = match self.req.qtype {
            rtype::A | rtype::AAAA => match cands.addresses(resp, self.req.qtype == rtype::A)? {
                (_, Some(host)) => return Ok(Answer::Chase(&entry.svc.external_hosts()[host])),
                (wrote, None) => wrote,
            },
            rtype::SRV => cands.srv(resp, count)?,
            _ => false,
        };
        Ok(if wrote { Answer::Records } else { Answer::NoData })
    }
}

/// The candidates of a service name (CoreDNS's `msg.Service` list), walked without
/// building the list.
struct Candidates<'c, 'a, 'r> {
    ctx: &'c Ctx<'a, 'r>,
    entry: &'a ServiceEntry,
    sel: Sel<'c>,
    /// From the endpoints (else from the external addresses).
    endpoints: bool,
    /// The hash of the endpoint label asked for.
    hash: u64,
}

/// Where a candidate's records point.
enum Target<'s> {
    /// `<service>.<namespace>.<zone>` (an external address).
    Service,
    /// `<endpoint>.<service>.<namespace>.<zone>`: the endpoint's label.
    Endpoint(&'s [u8]),
    /// A load balancer's host name (wire form), by its index.
    Host(usize, &'s [u8]),
}

impl<'c, 'a, 'r> Candidates<'c, 'a, 'r> {
    /// Calls `f(address or None for a host, port, target)` for every candidate in
    /// CoreDNS's order, until it returns false.
    fn walk(&self, mut f: impl FnMut(Option<IpAddr>, i32, Target<'_>) -> bool) -> Result<(), Over> {
        let ctx = self.ctx;
        if !self.endpoints {
            let svc = &self.entry.svc;
            for ip in svc.external_ips() {
                for p in svc.ports.iter() {
                    ctx.charge(1)?;
                    if self.sel.port_matches(p) && !f(Some(*ip), p.port, Target::Service) {
                        return Ok(());
                    }
                }
            }
            for (i, h) in svc.external_hosts().iter().enumerate() {
                for p in svc.ports.iter() {
                    ctx.charge(1)?;
                    if self.sel.port_matches(p) && !f(None, p.port, Target::Host(i, h)) {
                        return Ok(());
                    }
                }
            }
            return Ok(());
        }
        for slice in self.entry.slices.iter() {
            ctx.charge(1)?;
            let mut ports = slice.ports.iter().filter(|p| self.sel.port_matches(p)).peekable();
            if ports.peek().is_none() {
                continue;
            }
            let mut go = |e: usize, slice: &SliceData| -> Result<bool, Over> {
                let mut buf = [0u8; 64];
                let label = slice.label(e, &mut buf);
                if let Some(want) = self.sel.endpoint {
                    if &label[1..] != want {
                        return Ok(true);
                    }
                }
                for p in slice.ports.iter().filter(|p| self.sel.port_matches(p)) {
                    ctx.charge(1)?;
                    if !f(Some(slice.eps.addr(e)), p.port, Target::Endpoint(label)) {
                        return Ok(false);
                    }
                }
                Ok(true)
            };
            if self.sel.endpoint.is_some() {
                for e in slice.named(self.hash) {
                    ctx.charge(1)?;
                    if !go(e, slice)? {
                        return Ok(());
                    }
                }
            } else {
                for e in 0..slice.eps.len() {
                    if !go(e, slice)? {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// How many candidates there are (CoreDNS's SRV weight counts them all), counted
    /// per port list, not per candidate: a service's addresses times its matching
    /// ports, each slice's endpoints times its matching ports; only an endpoint name
    /// walks its (few) endpoints.
    fn count(&self) -> Result<usize, Over> {
        let ctx = self.ctx;
        let matching = |ports: &[Port]| -> Result<usize, Over> {
            ctx.charge(1 + ports.len() as u32 / 8)?;
            Ok(ports.iter().filter(|p| self.sel.port_matches(p)).count())
        };
        if !self.endpoints {
            let svc = &self.entry.svc;
            return Ok((svc.external_ips().len() + svc.external_hosts().len()) * matching(&svc.ports)?);
        }
        if self.sel.endpoint.is_none() {
            let mut n = 0;
            for slice in self.entry.slices.iter() {
                n += slice.eps.len() * matching(&slice.ports)?;
            }
            return Ok(n);
        }
        let mut n = 0;
        self.walk(|_, _, _| {
            n += 1;
            true
        })?;
        Ok(n)
    }

    /// `<service>.<namespace>.<zone>` as the question spells it.
    fn service_name(&self) -> Name<'static> {
        Name::under_question(&[], self.ctx.req.qname_label_offset(self.ctx.before - 2))
    }

    /// A or AAAA (`msg_to_dns.go` `a`, `aaaa`): each address of the family once; a
    /// load balancer's host name as a CNAME (once each). Returns whether anything was
    /// written, and the first host name's index.
    fn addresses(&self, resp: &mut Response, v4: bool) -> Result<(bool, Option<usize>), Over> {
        let ttl = self.ctx.opts.ttl;
        if self.endpoints && self.sel.endpoint.is_none() && self.sel.port.is_none() && self.sel.protocol.is_none() {
            // A headless service's name: every endpoint address once, in order, is
            // what the snapshot keeps ready (every slice has a port, so each endpoint
            // is a candidate); no need to visit each endpoint's ports.
            let mut wrote = false;
            let mut over = false;
            self.entry.addresses(v4, |ip| {
                if self.ctx.charge(1).is_err() {
                    over = true;
                    return ControlFlow::Break(());
                }
                wrote = true;
                let (t, data) = Rdata::address(ip);
                match resp.push(Section::Answer, &Record::at_question(t, ttl, data)) {
                    Err(PushError::Truncated) => ControlFlow::Break(()),
                    _ => ControlFlow::Continue(()),
                }
            });
            return if over { Err(Over) } else { Ok((wrote, None)) };
        }
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            let seen = &mut seen.0;
            seen.clear();
            let mut wrote = false;
            let mut host = None;
            self.walk(|ip, _, target| {
                let rr = match (ip, target) {
                    (Some(ip), _) if ip.is_ipv4() == v4 => {
                        if !seen.insert(addr_key(&[], ip)) {
                            return true;
                        }
                        let (t, data) = Rdata::address(ip);
                        Record::at_question(t, ttl, data)
                    }
                    (None, Target::Host(i, h)) => {
                        if !seen.insert(host_key(i, 0)) {
                            return true;
                        }
                        host = host.or(Some(i));
                        Record::at_question(rtype::CNAME, ttl, Rdata::Name(Name::wire(h)))
                    }
                    _ => return true,
                };
                wrote = true;
                resp.push(Section::Answer, &rr) != Err(PushError::Truncated)
            })?;
            Ok((wrote, host))
        })
    }

    /// SRV (`msg_to_dns.go` `srv`): one record per (target, port), weight
    /// `100 / candidates` (at least 1), port -1 left out; the targets' addresses in the
    /// additional section, one per (target, address).
    fn srv(&self, resp: &mut Response, count: usize) -> Result<bool, Over> {
        let ttl = self.ctx.opts.ttl;
        let weight = ((100.0 / count as f64).floor() as u16).max(1);
        let svc = self.service_name();
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            let (answers, extras) = &mut *seen;
            answers.clear();
            extras.clear();
            let mut wrote = false;
            let mut full = false;
            self.walk(|_, port, target| {
                if port == -1 {
                    return true;
                }
                let (key, name) = match target {
                    Target::Service => (port_key(&[], port), svc),
                    Target::Endpoint(l) => (
                        port_key(l, port),
                        Name {
                            head: l,
                            mid: &[],
                            tail: svc.tail,
                        },
                    ),
                    Target::Host(i, h) => (host_key(i, port as u32 as u128 + 1), Name::wire(h)),
                };
                if !answers.insert(key) {
                    return true;
                }
                wrote = true;
                let rr = Record::at_question(
                    rtype::SRV,
                    ttl,
                    Rdata::Srv {
                        priority: 0,
                        weight,
                        port: port as u16,
                        target: name,
                    },
                );
                full = resp.push(Section::Answer, &rr) == Err(PushError::Truncated);
                !full
            })?;
            if full {
                return Ok(wrote);
            }
            self.walk(|ip, port, target| {
                let (Some(ip), true) = (ip, port != -1) else {
                    return true;
                };
                let (label, owner): (&[u8], Name<'_>) = match target {
                    Target::Service => (&[], svc),
                    Target::Endpoint(l) => (
                        l,
                        Name {
                            head: l,
                            mid: &[],
                            tail: svc.tail,
                        },
                    ),
                    Target::Host(..) => return true,
                };
                if !extras.insert(addr_key(label, ip)) {
                    return true;
                }
                let (t, data) = Rdata::address(ip);
                let rr = Record {
                    owner,
                    rtype: t,
                    ttl,
                    data,
                };
                resp.push(Section::Additional, &rr) != Err(PushError::Truncated)
            })?;
            Ok(wrote)
        })
    }
}
