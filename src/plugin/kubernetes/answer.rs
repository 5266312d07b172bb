//! Answering from a snapshot, exactly as CoreDNS's kubernetes plugin decides
//! (reference: `coredns-kubernetes.md` sections 1-4; CoreDNS `plugin/kubernetes`
//! `handler.go`, `kubernetes.go` `Services`/`Records`/`findServices`/`findPods`,
//! `parse.go`, `reverse.go`, and `plugin/backend_lookup.go` for A, SRV, PTR, TXT).
//!
//! Names, port names and protocols compare case-insensitively (the query key is
//! lower-cased, object names are lower-case); owners keep the query's spelling through
//! compression pointers into the question. The common answers (A/AAAA of a service)
//! come straight from prepared address lists; the rest build small candidate lists in
//! a per-thread buffer, so answering allocates nothing.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::setup::{Options, PodMode, Zone};
use crate::dns::{Name, NameKey, Rdata, Record, Request, Response, Section, Tail, rtype};
use crate::kubernetes::model::ServiceKind;
use crate::kubernetes::snapshot::{LabelBuf, Owner, ServiceEntry, Snapshot};

/// The schema version of the Kubernetes DNS specification served (`dns-version`).
pub const SCHEMA_VERSION: &[u8] = b"1.1.0";
const SCHEMA_TTL: u32 = 28800;
/// CNAME links followed before giving up (CoreDNS stops past 7 previous records).
const MAX_CHAIN: usize = 8;

/// How a query ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer<'s> {
    /// Records were written to the answer (and additional) section.
    Records,
    /// The name exists but has no data of the type: NOERROR, SOA in authority.
    NoData,
    /// The name does not exist (NXDOMAIN, or SERVFAIL before the first sync, or the
    /// next plugin with fallthrough).
    NameError,
    /// Zone transfers are refused (written by the server).
    Refused,
    /// An ExternalName chain leaves the zone for this name (wire form): the CNAMEs
    /// written so far must be completed with its records, looked up through the
    /// server's chain.
    Chase(&'s [u8]),
}

/// The query as the plugin sees it: where its zone starts.
pub struct Zoned<'z> {
    pub zone: &'z Zone,
    /// Labels in front of the zone.
    pub before: usize,
    /// Offset, in the raw message, of the zone as the client spelled it.
    pub zone_off: usize,
    /// Whether the client spelled the zone in lower case (several CoreDNS checks
    /// compare the lower-cased name with the zone as spelled).
    pub zone_lower: bool,
}

impl<'z> Zoned<'z> {
    /// Finds the longest plugin zone containing the query name.
    pub fn find(opts: &'z Options, req: &Request<'_>) -> Option<Zoned<'z>> {
        let zone = opts.zones.iter().find(|z| req.qname.labels_before(&z.wire).is_some())?;
        let before = req.qname.labels_before(&zone.wire)?;
        let zone_off = req.qname_label_offset(before);
        let spelled = &req.raw[zone_off..req.qname_end];
        Some(Zoned {
            zone,
            before,
            zone_off,
            zone_lower: spelled == &req.qname.wire()[req.qname.label_offset(before)..],
        })
    }
}

/// What `parseRequest` makes of the labels in front of the zone: indices of labels
/// in the query name.
#[derive(Default, Clone, Copy, Debug)]
struct Parsed {
    /// `svc` or `pod` given.
    kind: Option<Kind>,
    namespace: Option<usize>,
    service: Option<usize>,
    endpoint: Option<usize>,
    port: Option<usize>,
    protocol: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Svc,
    Pod,
}

/// A name error from parsing or lookup (CoreDNS's errNoItems / errInvalidRequest).
#[derive(Debug)]
struct NameError;

fn strip_underscore(l: &[u8]) -> &[u8] {
    l.strip_prefix(b"_").unwrap_or(l)
}

fn parse(name: &NameKey, before: usize) -> Result<Parsed, NameError> {
    let mut p = Parsed::default();
    if before == 0 {
        return Ok(p);
    }
    let mut last = before - 1;
    let kind = match name.label(last) {
        b"svc" => Kind::Svc,
        b"pod" => Kind::Pod,
        _ => return Err(NameError),
    };
    if before == 1 {
        // `svc.<zone>` and `pod.<zone>` exist without data.
        return Ok(p);
    }
    p.kind = Some(kind);
    last -= 1;
    p.namespace = Some(last);
    if last == 0 {
        return Ok(p);
    }
    last -= 1;
    p.service = Some(last);
    match last {
        0 => {}
        1 => p.endpoint = Some(0),
        2 => {
            p.port = Some(0);
            p.protocol = Some(1);
        }
        _ => return Err(NameError),
    }
    Ok(p)
}

/// One answer candidate of a service (CoreDNS's `msg.Service` for an address):
/// a cluster IP or an endpoint, with one of the ports that matched.
#[derive(Clone, Copy, Debug)]
struct Cand {
    /// Index of the slice in the entry, or `CLUSTER` for a cluster IP.
    slice: u32,
    /// Index of the endpoint in the slice, or of the cluster IP.
    item: u32,
    /// Index of the port in the slice's (or the service's) ports.
    port: u32,
}

const CLUSTER: u32 = u32::MAX;

thread_local! {
    static CANDS: RefCell<Vec<Cand>> = const { RefCell::new(Vec::new()) };
    static SEEN: RefCell<Vec<IpAddr>> = const { RefCell::new(Vec::new()) };
}

/// What `Records` found for a name.
enum Found<'s> {
    /// Exists, no records (apex, `svc`, a namespace).
    Nothing,
    /// Candidates of this service (in `CANDS`).
    Service(&'s ServiceEntry),
    /// An ExternalName service.
    External(&'s ServiceEntry),
    /// A pod address (`<ip>.<ns>.pod`).
    Pod(IpAddr),
}

/// Everything needed to answer one query.
pub struct Ctx<'a, 'r, 's, 'z> {
    pub opts: &'a Options,
    pub snap: &'s Snapshot,
    pub req: &'r Request<'r>,
    pub z: Zoned<'z>,
}

fn label_is(name: &NameKey, i: usize, want: &[u8]) -> bool {
    name.label(i) == want
}

/// Whether `name` is a reverse name (under in-addr.arpa. or ip6.arpa.).
fn is_reverse(name: &NameKey) -> bool {
    let n = name.label_count();
    n >= 2 && name.label(n - 1) == b"arpa" && matches!(name.label(n - 2), b"in-addr" | b"ip6")
}

/// The address a full reverse name stands for (4 octets under in-addr.arpa., 32
/// nibbles under ip6.arpa.), as CoreDNS's `ExtractAddressFromReverse`.
pub fn reverse_address(name: &NameKey) -> Option<IpAddr> {
    let n = name.label_count();
    if n < 2 || name.label(n - 1) != b"arpa" {
        return None;
    }
    match name.label(n - 2) {
        b"in-addr" if n == 6 => {
            let mut o = [0u8; 4];
            for (i, slot) in o.iter_mut().enumerate() {
                let l = name.label(3 - i);
                if l.is_empty() || l.len() > 3 || !l.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                let v: u32 = std::str::from_utf8(l).ok()?.parse().ok()?;
                *slot = u8::try_from(v).ok()?;
            }
            Some(IpAddr::V4(Ipv4Addr::from(o)))
        }
        b"ip6" if n == 34 => {
            let mut b = [0u8; 16];
            for i in 0..32 {
                let l = name.label(31 - i);
                if l.len() != 1 {
                    return None;
                }
                let v = (l[0] as char).to_digit(16)? as u8;
                b[i / 2] |= if i % 2 == 0 { v << 4 } else { v };
            }
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// Converts a pod label (`10-0-0-1`, `fd00--1`) to the IP text CoreDNS compares.
fn pod_ip_text(label: &[u8], out: &mut [u8; 64]) -> Option<usize> {
    if label.len() > out.len() {
        return None;
    }
    let dashes = label.iter().filter(|&&c| c == b'-').count();
    let v4 = dashes == 3 && !label.windows(2).any(|w| w == b"--");
    for (o, &c) in out.iter_mut().zip(label) {
        *o = if c == b'-' { if v4 { b'.' } else { b':' } } else { c };
    }
    Some(label.len())
}

impl<'a, 'r, 's, 'z> Ctx<'a, 'r, 's, 'z> {
    fn name(&self) -> &NameKey {
        &self.req.qname
    }

    /// Whether namespace label `i` is exposed: listed by `namespaces` (if given) and a
    /// Namespace object of that name exists.
    fn exposed(&self, i: usize) -> bool {
        let ns = self.name().label(i);
        self.listed(ns) && self.snap.namespace_exists(ns)
    }

    /// Only the `namespaces` option (PTR answers use this alone).
    fn listed(&self, ns: &[u8]) -> bool {
        self.opts.namespaces.is_empty() || self.opts.namespaces.iter().any(|n| n.as_bytes() == ns)
    }

    /// CoreDNS `Records`: parse the name and find what it stands for.
    fn records(&self, p: &Parsed) -> Result<Found<'s>, NameError> {
        let Some(kind) = p.kind else { return Ok(Found::Nothing) };
        if is_reverse(self.name()) {
            return Err(NameError);
        }
        let ns = p.namespace.expect("kind implies a namespace");
        if !self.exposed(ns) {
            return Err(NameError);
        }
        match kind {
            Kind::Pod => self.find_pod(p),
            Kind::Svc => self.find_service(p),
        }
    }

    fn find_pod(&self, p: &Parsed) -> Result<Found<'s>, NameError> {
        if self.opts.pods == PodMode::Disabled {
            return Err(NameError);
        }
        let Some(si) = p.service else { return Ok(Found::Nothing) };
        let mut text = [0u8; 64];
        let len = pod_ip_text(self.name().label(si), &mut text).ok_or(NameError)?;
        let ip_text = &text[..len];
        let ip: IpAddr = std::str::from_utf8(ip_text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(NameError)?;
        if self.opts.pods == PodMode::Verified {
            let ns = self.name().label(p.namespace.expect("set with service"));
            let mut key = [0u8; 64];
            key[0] = ns.len() as u8;
            key[1..1 + ns.len()].copy_from_slice(ns);
            if !self.snap.pod_exists(&key[..1 + ns.len()], ip_text) {
                return Err(NameError);
            }
        }
        Ok(Found::Pod(ip))
    }

    /// CoreDNS `findServices`, filling `CANDS`.
    fn find_service(&self, p: &Parsed) -> Result<Found<'s>, NameError> {
        let Some(si) = p.service else { return Ok(Found::Nothing) };
        let name = self.name();
        let ns = p.namespace.expect("set with service");
        let key = &name.wire()[name.label_offset(si)..name.label_offset(ns + 1)];
        let entry = self.snap.service(key).ok_or(NameError)?;
        let svc = &entry.svc;
        if self.opts.ignore_empty_service && svc.kind == ServiceKind::ClusterIp && entry.ready_addresses == 0 {
            return Err(NameError);
        }
        if svc.kind == ServiceKind::ExternalName {
            if p.endpoint.is_some() || p.port.is_some() || svc.external.is_none() {
                return Err(NameError);
            }
            return Ok(Found::External(entry));
        }
        let port_ok = |port: &crate::kubernetes::model::Port| {
            p.port.is_none_or(|i| {
                let want = strip_underscore(name.label(i));
                want.is_empty() || want.eq_ignore_ascii_case(port.name.as_bytes())
            }) && p.protocol.is_none_or(|i| {
                let want = strip_underscore(name.label(i));
                want.is_empty() || want.eq_ignore_ascii_case(port.protocol.as_bytes())
            })
        };
        let found = CANDS.with(|c| {
            let mut c = c.borrow_mut();
            c.clear();
            if svc.kind == ServiceKind::Headless || p.endpoint.is_some() {
                let want = p.endpoint.map(|i| name.label(i));
                for (s, slice) in entry.slices.iter().enumerate() {
                    for e in 0..slice.eps.len() {
                        let mut buf = [0u8; 64];
                        if want.is_some_and(|w| !slice.label(e, &mut buf)[1..].eq_ignore_ascii_case(w)) {
                            continue;
                        }
                        for (pi, port) in slice.ports.iter().enumerate() {
                            if port_ok(port) {
                                c.push(Cand {
                                    slice: s as u32,
                                    item: e as u32,
                                    port: pi as u32,
                                });
                            }
                        }
                    }
                }
                !c.is_empty()
            } else {
                let mut any = false;
                for (pi, port) in svc.ports.iter().enumerate() {
                    if !port_ok(port) {
                        continue;
                    }
                    any = true;
                    for i in 0..svc.cluster_ips.len() {
                        c.push(Cand {
                            slice: CLUSTER,
                            item: i as u32,
                            port: pi as u32,
                        });
                    }
                }
                any
            }
        });
        if found {
            Ok(Found::Service(entry))
        } else {
            Err(NameError)
        }
    }

    fn cand_ip(entry: &ServiceEntry, c: Cand) -> IpAddr {
        if c.slice == CLUSTER {
            entry.svc.cluster_ips[c.item as usize]
        } else {
            entry.slices[c.slice as usize].eps[c.item as usize].addr()
        }
    }

    fn cand_port(entry: &ServiceEntry, c: Cand) -> i32 {
        if c.slice == CLUSTER {
            entry.svc.ports[c.port as usize].port
        } else {
            entry.slices[c.slice as usize].ports[c.port as usize].port
        }
    }

    /// `ns.dns.<zone>` (CoreDNS `isDefaultNS`: the lower-cased name against the zone as
    /// spelled, so a mixed-case zone does not match).
    fn is_default_ns(&self) -> bool {
        self.z.before == 2 && self.z.zone_lower && label_is(self.name(), 0, b"ns") && label_is(self.name(), 1, b"dns")
    }

    fn ttl(&self) -> u32 {
        self.opts.ttl
    }

    // ---- writers ---------------------------------------------------------------

    fn write_addr(&self, resp: &mut Response, owner: Name<'_>, ip: IpAddr) {
        let (t, data) = Rdata::address(ip);
        resp.answer(Record {
            owner,
            rtype: t,
            ttl: self.ttl(),
            data,
        });
    }

    /// The zone's SOA record (owner and names in the query's spelling).
    pub fn soa(&self) -> Record<'static> {
        let off = self.z.zone_off;
        Record {
            owner: Name::under_question(&[], off),
            rtype: rtype::SOA,
            ttl: self.ttl().min(300),
            data: Rdata::Soa {
                mname: Name::under_question(b"\x02ns\x03dns", off),
                rname: Name::under_question(b"\x0ahostmaster", off),
                serial: self.snap.serial,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: self.ttl(),
            },
        }
    }

    // ---- per type ------------------------------------------------------------

    /// Answers the query into `resp` (already started, NOERROR, AA).
    pub fn answer(&self, resp: &mut Response) -> Answer<'s> {
        match self.req.qtype {
            rtype::A | rtype::AAAA => self.addresses(resp, self.req.qtype),
            rtype::TXT => self.txt(resp),
            rtype::CNAME => self.cname(resp),
            rtype::PTR => self.ptr(resp),
            rtype::SRV => self.srv(resp),
            rtype::MX => self.exists_via_services(rtype::MX),
            rtype::SOA => {
                if self.z.before == 0 {
                    resp.answer(self.soa());
                    Answer::Records
                } else {
                    Answer::NoData
                }
            }
            rtype::AXFR | rtype::IXFR => Answer::Refused,
            rtype::NS if self.z.before == 0 && self.z.zone_lower => self.ns(resp),
            _ => self.exists_via_services(rtype::A),
        }
    }

    /// Types answered by existence only: NODATA or NXDOMAIN (CoreDNS's fake A lookup,
    /// and MX which never has data here).
    fn exists_via_services(&self, as_type: u16) -> Answer<'s> {
        if self.is_default_ns() || (as_type == rtype::A && self.z.before == 0) {
            return Answer::NoData;
        }
        let Ok(p) = parse(self.name(), self.z.before) else {
            return Answer::NameError;
        };
        match self.records(&p) {
            Ok(_) => Answer::NoData,
            Err(NameError) => Answer::NameError,
        }
    }

    /// A and AAAA (CoreDNS `plugin.A`/`AAAA` over `Services`).
    fn addresses(&self, resp: &mut Response, qtype: u16) -> Answer<'s> {
        let v4 = qtype == rtype::A;
        if self.z.before == 0 {
            return Answer::NoData;
        }
        if self.is_default_ns() {
            let mut any = false;
            for ip in self.ns_addresses() {
                if ip.is_ipv4() == v4 {
                    self.write_addr(resp, Name::QUESTION, ip);
                    any = true;
                }
            }
            return if any { Answer::Records } else { Answer::NoData };
        }
        let Ok(p) = parse(self.name(), self.z.before) else {
            return Answer::NameError;
        };
        let found = match self.records(&p) {
            Ok(f) => f,
            Err(NameError) => return Answer::NameError,
        };
        match found {
            Found::Nothing => Answer::NoData,
            Found::Pod(ip) => {
                if ip.is_ipv4() == v4 {
                    self.write_addr(resp, Name::QUESTION, ip);
                    Answer::Records
                } else {
                    Answer::NoData
                }
            }
            Found::External(entry) => self.chase(resp, entry, qtype),
            Found::Service(entry) => {
                let plain = p.endpoint.is_none() && p.port.is_none();
                let written = if plain {
                    // The prepared, deduplicated addresses: the hot path.
                    entry.addresses(v4, |ip| self.write_addr(resp, Name::QUESTION, ip))
                } else {
                    self.write_cands(resp, entry, Name::QUESTION, v4)
                };
                if written > 0 { Answer::Records } else { Answer::NoData }
            }
        }
    }

    /// Writes each candidate's address of the family once; returns how many.
    fn write_cands(&self, resp: &mut Response, entry: &ServiceEntry, owner: Name<'_>, v4: bool) -> usize {
        CANDS.with(|c| {
            SEEN.with(|seen| {
                let c = c.borrow();
                let mut seen = seen.borrow_mut();
                seen.clear();
                for &cand in c.iter() {
                    let ip = Self::cand_ip(entry, cand);
                    if ip.is_ipv4() != v4 || seen.contains(&ip) {
                        continue;
                    }
                    seen.push(ip);
                    self.write_addr(resp, owner, ip);
                }
                seen.len()
            })
        })
    }

    /// Follows an ExternalName: in-zone targets are resolved here (the CNAMEs are kept
    /// only if the chain ends in records of the asked type); a target outside the zone
    /// is left to the server's chain.
    fn chase(&self, resp: &mut Response, first: &'s ServiceEntry, qtype: u16) -> Answer<'s> {
        let v4 = qtype == rtype::A;
        let mut chain: [&'s [u8]; MAX_CHAIN] = [&[]; MAX_CHAIN];
        let mut n = 0;
        let mut cur = first;
        loop {
            let Some(target) = cur.svc.external.as_deref() else {
                return Answer::NoData;
            };
            let Some(key) = NameKey::from_wire(target) else {
                return Answer::NoData;
            };
            // x CNAME x (or below x) is a loop; so is a target already in the chain.
            if key.labels_before(self.name().wire()).is_some()
                || chain[..n].iter().any(|t| t.eq_ignore_ascii_case(target))
            {
                return Answer::NoData;
            }
            if n == MAX_CHAIN {
                return Answer::NoData;
            }
            chain[n] = target;
            n += 1;
            let Some(before) = key.labels_before(&self.z.zone.wire) else {
                // Out of the zone: the worker resolves it through the server.
                self.write_chain(resp, &chain[..n]);
                return Answer::Chase(target);
            };
            let Ok(p) = parse(&key, before) else {
                return Answer::NoData;
            };
            // Records of the target, judged on the target's name.
            let renamed = self.req.with_qname(key);
            let sub = Ctx {
                opts: self.opts,
                snap: self.snap,
                req: &renamed,
                z: Zoned {
                    zone: self.z.zone,
                    before,
                    zone_off: self.z.zone_off,
                    zone_lower: self.z.zone_lower,
                },
            };
            let found = match sub.records(&p) {
                Ok(f) => f,
                Err(NameError) => return Answer::NoData,
            };
            let owner = Name::wire(target);
            match found {
                Found::External(next) => cur = next,
                Found::Nothing => return Answer::NoData,
                Found::Pod(ip) => {
                    if ip.is_ipv4() != v4 {
                        return Answer::NoData;
                    }
                    self.write_chain(resp, &chain[..n]);
                    self.write_addr(resp, owner, ip);
                    return Answer::Records;
                }
                Found::Service(entry) => {
                    let has = if p.endpoint.is_none() && p.port.is_none() {
                        entry.addresses(v4, |_| {}) > 0
                    } else {
                        CANDS.with(|c| c.borrow().iter().any(|&x| Self::cand_ip(entry, x).is_ipv4() == v4))
                    };
                    if !has {
                        return Answer::NoData;
                    }
                    self.write_chain(resp, &chain[..n]);
                    if p.endpoint.is_none() && p.port.is_none() {
                        entry.addresses(v4, |ip| self.write_addr(resp, owner, ip));
                    } else {
                        self.write_cands(resp, entry, owner, v4);
                    }
                    return Answer::Records;
                }
            }
        }
    }

    /// Writes the CNAMEs of a chain: the question to the first target, each target to
    /// the next.
    fn write_chain(&self, resp: &mut Response, chain: &[&[u8]]) {
        let mut owner = Name::QUESTION;
        for t in chain {
            resp.answer(Record {
                owner,
                rtype: rtype::CNAME,
                ttl: self.ttl(),
                data: Rdata::Name(Name::wire(t)),
            });
            owner = Name::wire(t);
        }
    }

    /// TXT: `dns-version`, else NODATA when the name has records of any kind.
    fn txt(&self, resp: &mut Response) -> Answer<'s> {
        if self.z.before == 1 && label_is(self.name(), 0, b"dns-version") {
            resp.answer(Record::at_question(rtype::TXT, SCHEMA_TTL, Rdata::Txt(SCHEMA_VERSION)));
            return Answer::Records;
        }
        let Ok(p) = parse(self.name(), self.z.before) else {
            return Answer::NameError;
        };
        match self.records(&p) {
            Ok(Found::Nothing) | Err(NameError) => Answer::NameError,
            Ok(_) => Answer::NoData,
        }
    }

    /// CNAME: the ExternalName target, if the name is one.
    fn cname(&self, resp: &mut Response) -> Answer<'s> {
        if self.is_default_ns() || self.z.before == 0 {
            return Answer::NoData;
        }
        let Ok(p) = parse(self.name(), self.z.before) else {
            return Answer::NameError;
        };
        match self.records(&p) {
            Err(NameError) => Answer::NameError,
            Ok(Found::External(entry)) => {
                let target = entry.svc.external.as_deref().expect("External has a target");
                resp.answer(Record::at_question(
                    rtype::CNAME,
                    self.ttl(),
                    Rdata::Name(Name::wire(target)),
                ));
                Answer::Records
            }
            Ok(_) => Answer::NoData,
        }
    }

    /// PTR (CoreDNS `Reverse`): a cluster IP names its service (the first one, only the
    /// `namespaces` option filters), else every endpoint with that address, once per name.
    fn ptr(&self, resp: &mut Response) -> Answer<'s> {
        let Some(ip) = reverse_address(self.name()) else {
            let Ok(p) = parse(self.name(), self.z.before) else {
                return Answer::NameError;
            };
            return match self.records(&p) {
                Ok(_) => Answer::NoData,
                Err(NameError) => Answer::NameError,
            };
        };
        let owners = self.snap.owners(&ip);
        let primary = &self.opts.primary_zone;
        let cluster = owners.iter().find_map(|o| match o {
            Owner::Cluster(svc) if self.listed(svc.namespace()) => Some(svc),
            _ => None,
        });
        if let Some(svc) = cluster {
            resp.answer(Record::at_question(
                rtype::PTR,
                self.ttl(),
                Rdata::Name(Name {
                    head: &svc.rel,
                    mid: &[],
                    tail: Tail::Wire(primary),
                }),
            ));
            return Answer::Records;
        }
        let endpoints = || {
            owners.iter().filter_map(|o| match o {
                Owner::Endpoint(slice, e) if self.listed(slice.namespace()) => Some((slice, *e as usize)),
                _ => None,
            })
        };
        let mut written = 0;
        for (i, (slice, ep)) in endpoints().enumerate() {
            let mut buf = [0u8; 64];
            let label = slice.label(ep, &mut buf);
            // One PTR per distinct target (the same address in two slices of one
            // service gives one).
            let dup = endpoints().take(i).any(|(s2, e2)| {
                let mut b2 = [0u8; 64];
                s2.rel == slice.rel && s2.label(e2, &mut b2) == label
            });
            if dup {
                continue;
            }
            resp.answer(Record::at_question(
                rtype::PTR,
                self.ttl(),
                Rdata::Name(Name {
                    head: label,
                    mid: &slice.rel,
                    tail: Tail::Wire(primary),
                }),
            ));
            written += 1;
        }
        if written > 0 {
            Answer::Records
        } else {
            Answer::NameError
        }
    }

    /// SRV (CoreDNS `plugin.SRV`): one record per (target, port), weight from the
    /// candidate count before any filtering, addresses in the additional section.
    fn srv(&self, resp: &mut Response) -> Answer<'s> {
        if self.is_default_ns() || self.z.before == 0 {
            return Answer::NoData;
        }
        let Ok(p) = parse(self.name(), self.z.before) else {
            return Answer::NameError;
        };
        let found = match self.records(&p) {
            Ok(f) => f,
            Err(NameError) => return Answer::NameError,
        };
        match found {
            Found::Nothing | Found::External(_) => Answer::NoData,
            Found::Pod(ip) => {
                // Quirk: a pod name answers SRV with port 0 and itself as target.
                let name = self.name();
                let si = p.service.expect("pod found by name");
                let ns = p.namespace.expect("pod found by name");
                let head = &name.wire()[name.label_offset(si)..name.label_offset(ns + 1)];
                let target = Name {
                    head,
                    mid: b"\x03pod",
                    tail: Tail::Question(self.z.zone_off),
                };
                resp.answer(Record::at_question(
                    rtype::SRV,
                    self.ttl(),
                    Rdata::Srv {
                        priority: 0,
                        weight: 100,
                        port: 0,
                        target,
                    },
                ));
                let (t, data) = Rdata::address(ip);
                let _ = resp.push(
                    Section::Additional,
                    &Record {
                        owner: target,
                        rtype: t,
                        ttl: self.ttl(),
                        data,
                    },
                );
                Answer::Records
            }
            Found::Service(entry) => self.srv_records(resp, entry),
        }
    }

    /// A candidate's SRV target: `<svc>.<ns>.svc.<zone>` for a cluster IP,
    /// `<endpoint>.<svc>.<ns>.svc.<zone>` for an endpoint (the zone as the client spelled it).
    fn target<'e>(entry: &'e ServiceEntry, c: Cand, zone_off: usize, buf: &'e mut LabelBuf) -> Name<'e> {
        if c.slice == CLUSTER {
            Name {
                head: &entry.svc.rel,
                mid: &[],
                tail: Tail::Question(zone_off),
            }
        } else {
            Name {
                head: entry.slices[c.slice as usize].label(c.item as usize, buf),
                mid: &entry.svc.rel,
                tail: Tail::Question(zone_off),
            }
        }
    }

    /// The endpoint label of a candidate (empty for a cluster IP).
    fn cand_label<'e>(entry: &'e ServiceEntry, c: Cand, buf: &'e mut LabelBuf) -> &'e [u8] {
        if c.slice == CLUSTER {
            &[]
        } else {
            entry.slices[c.slice as usize].label(c.item as usize, buf)
        }
    }

    fn srv_records(&self, resp: &mut Response, entry: &ServiceEntry) -> Answer<'s> {
        CANDS.with(|c| {
            let c = c.borrow();
            let n = c.len().max(1) as f64;
            // CoreDNS: weight = floor(100 / (100 * N) * 100), at least 1.
            let weight = ((100.0 / (100.0 * n)) * 100.0).floor().max(1.0) as u16;
            let same_target = |a: Cand, b: Cand| {
                let (mut ba, mut bb) = ([0u8; 64], [0u8; 64]);
                (a.slice == CLUSTER) == (b.slice == CLUSTER)
                    && Self::cand_label(entry, a, &mut ba) == Self::cand_label(entry, b, &mut bb)
            };
            let mut written = 0;
            for (i, &cand) in c.iter().enumerate() {
                let port = Self::cand_port(entry, cand);
                if port == -1 {
                    continue;
                }
                // One SRV per (target, port): the protocol is not part of the key.
                if c[..i]
                    .iter()
                    .any(|&o| Self::cand_port(entry, o) == port && same_target(o, cand))
                {
                    continue;
                }
                resp.answer(Record::at_question(
                    rtype::SRV,
                    self.ttl(),
                    Rdata::Srv {
                        priority: 0,
                        weight,
                        port: port as u16,
                        target: Self::target(entry, cand, self.z.zone_off, &mut [0u8; 64]),
                    },
                ));
                written += 1;
            }
            if written == 0 {
                return Answer::NoData;
            }
            // One address per (target, address), for the candidates that made an SRV.
            for (i, &cand) in c.iter().enumerate() {
                if Self::cand_port(entry, cand) == -1 {
                    continue;
                }
                let ip = Self::cand_ip(entry, cand);
                if c[..i]
                    .iter()
                    .any(|&o| Self::cand_port(entry, o) != -1 && Self::cand_ip(entry, o) == ip && same_target(o, cand))
                {
                    continue;
                }
                let (t, data) = Rdata::address(ip);
                let _ = resp.push(
                    Section::Additional,
                    &Record {
                        owner: Self::target(entry, cand, self.z.zone_off, &mut [0u8; 64]),
                        rtype: t,
                        ttl: self.ttl(),
                        data,
                    },
                );
            }
            Answer::Records
        })
    }

    // ---- NS -----------------------------------------------------------------------

    /// The addresses behind `ns.dns.<zone>` (CoreDNS `nsAddrs` when no slice holds a
    /// local address: the local addresses themselves; otherwise the services' names).
    fn ns_addresses(&self) -> Vec<IpAddr> {
        let set = self.ns_set();
        set.into_iter().flat_map(|(_, ips)| ips).collect()
    }

    /// (name relative to the zone as wire labels, addresses) per NS name.
    fn ns_set(&self) -> Vec<(Vec<u8>, Vec<IpAddr>)> {
        let mut out: Vec<(Vec<u8>, Vec<IpAddr>)> = Vec::new();
        fn add(out: &mut Vec<(Vec<u8>, Vec<IpAddr>)>, name: Vec<u8>, ip: IpAddr) {
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, ips)) => {
                    if !ips.contains(&ip) {
                        ips.push(ip)
                    }
                }
                None => out.push((name, vec![ip])),
            }
        }
        for local in &self.opts.local_ips {
            for owner in self.snap.owners(local) {
                let Owner::Endpoint(slice, e) = owner else { continue };
                let Some(entry) = self.snap.service(slice.service_key()) else {
                    continue;
                };
                match entry.svc.kind {
                    ServiceKind::ClusterIp => {
                        for ip in entry.svc.cluster_ips.iter() {
                            add(&mut out, entry.svc.rel.to_vec(), *ip);
                        }
                    }
                    ServiceKind::Headless => {
                        let mut buf = [0u8; 64];
                        let mut name = slice.label(*e as usize, &mut buf).to_vec();
                        name.extend_from_slice(&entry.svc.rel);
                        for ep in slice.eps.iter() {
                            add(&mut out, name.clone(), ep.addr());
                        }
                    }
                    ServiceKind::ExternalName => {}
                }
            }
        }
        if out.is_empty() {
            for ip in &self.opts.local_ips {
                add(&mut out, b"\x02ns\x03dns".to_vec(), *ip);
            }
        }
        out
    }

    /// NS at the apex, with addresses in the additional section.
    fn ns(&self, resp: &mut Response) -> Answer<'s> {
        let set = self.ns_set();
        if set.is_empty() {
            return Answer::NoData;
        }
        for (name, _) in &set {
            resp.answer(Record::at_question(
                rtype::NS,
                self.ttl(),
                Rdata::Name(Name::under_question(name, self.z.zone_off)),
            ));
        }
        for (name, ips) in &set {
            for ip in ips {
                let (t, data) = Rdata::address(*ip);
                let _ = resp.push(
                    Section::Additional,
                    &Record {
                        owner: Name::under_question(name, self.z.zone_off),
                        rtype: t,
                        ttl: self.ttl(),
                        data,
                    },
                );
            }
        }
        Answer::Records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> NameKey {
        NameKey::from_wire(&crate::dns::wire::name_from_str(s).unwrap()).unwrap()
    }

    #[test]
    fn reverse_addresses() {
        assert_eq!(
            reverse_address(&key("100.0.0.10.in-addr.arpa")),
            Some("10.0.0.100".parse().unwrap())
        );
        assert_eq!(reverse_address(&key("0.0.10.in-addr.arpa")), None);
        assert_eq!(reverse_address(&key("300.0.0.10.in-addr.arpa")), None);
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa";
        assert_eq!(reverse_address(&key(v6)), Some("1234:abcd::1".parse().unwrap()));
        assert_eq!(reverse_address(&key("x.ip6.arpa")), None);
    }

    #[test]
    fn parse_shapes() {
        let n = key("_http._tcp.svc1.testns.svc.cluster.local");
        let p = parse(&n, 5).unwrap();
        assert_eq!(
            (p.port, p.protocol, p.service, p.namespace),
            (Some(0), Some(1), Some(2), Some(3))
        );
        assert!(parse(&key("a.b.c.svc1.testns.svc.cluster.local"), 6).is_err());
        assert!(parse(&key("x.cluster.local"), 1).is_err());
        assert!(parse(&key("svc.cluster.local"), 1).unwrap().kind.is_none());
        let p = parse(&key("ep.svc1.ns.svc.cluster.local"), 4).unwrap();
        assert_eq!((p.endpoint, p.service), (Some(0), Some(1)));
    }

    #[test]
    fn pod_labels() {
        let mut out = [0u8; 64];
        let n = pod_ip_text(b"10-240-0-1", &mut out).unwrap();
        assert_eq!(&out[..n], b"10.240.0.1");
        let n = pod_ip_text(b"1234-abcd--1", &mut out).unwrap();
        assert_eq!(&out[..n], b"1234:abcd::1");
    }
}
