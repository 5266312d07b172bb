//! Answering from a snapshot, exactly as CoreDNS's kubernetes plugin decides
//! (reference: `coredns-kubernetes.md` sections 1-4; CoreDNS `plugin/kubernetes`
//! `handler.go`, `kubernetes.go` `Services`/`Records`/`findServices`/`findPods`,
//! `parse.go`, `reverse.go`, and `plugin/backend_lookup.go` for A, SRV, PTR, TXT).
//!
//! Names, port names and protocols compare case-insensitively (the query key is
//! lower-cased, object names are lower-case); owners keep the query's spelling through
//! compression pointers into the question.
//!
//! Every answer costs in proportion to the records it writes, whatever the size of the
//! service: the common answers (A/AAAA of a service) come straight from prepared
//! address lists; the others walk the service's candidates (CoreDNS's `msg.Service`
//! list: an endpoint or cluster IP with one of its matching ports) in CoreDNS's order
//! without building the list, stop as soon as the message is full (the client's UDP
//! size, with TC, or 64 KiB over TCP), find an endpoint by name through its slice's
//! index, and write each (target, port) or (target, address) pair once with a per-thread
//! set ([`seen`](super::seen)) instead of comparing each candidate with the earlier
//! ones. The SRV weight, which counts every candidate, is computed per slice (its
//! endpoints times its matching ports; each port list is matched once per query). What
//! is left unbounded by the output (duplicates, slices that do not match, slices
//! counted) is charged to the query's work budget
//! ([`crate::chain::Budget`]): past it, the query fails. Answering allocates nothing
//! once the per-thread buffers have grown.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::seen::{Seen, hash_words};
use super::setup::{Options, PodMode, Zone};
use crate::chain::Budget;
use crate::dns::{Name, NameKey, PushError, Rdata, Record, Request, Response, Section, Tail, rtype};
use crate::kubernetes::model::{Port, ServiceKind};
use crate::kubernetes::snapshot::{Owner, ServiceEntry, SliceData, Snapshot, label_hash};

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
    /// Answering would visit more records than the query's work budget allows: the
    /// server answers SERVFAIL.
    OverBudget,
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

/// What a query selects from a service: an endpoint by name, or ports by name and
/// protocol (`_http._tcp.`; an empty or `_` label is any). Labels of the query name.
#[derive(Clone, Copy, Debug, Default)]
struct Sel<'n> {
    endpoint: Option<&'n [u8]>,
    port: Option<&'n [u8]>,
    protocol: Option<&'n [u8]>,
}

impl<'n> Sel<'n> {
    fn of(name: &'n NameKey, p: &Parsed) -> Sel<'n> {
        Sel {
            endpoint: p.endpoint.map(|i| name.label(i)),
            port: p.port.map(|i| strip_underscore(name.label(i))),
            protocol: p.protocol.map(|i| strip_underscore(name.label(i))),
        }
    }

    fn port_ok(&self, port: &Port) -> bool {
        self.port
            .is_none_or(|want| want.is_empty() || want.eq_ignore_ascii_case(port.name.as_bytes()))
            && self
                .protocol
                .is_none_or(|want| want.is_empty() || want.eq_ignore_ascii_case(port.protocol.as_bytes()))
    }
}

/// The ports of one list that a query selects: a bit mask of the 128 ports from the
/// first that matches (a query names one port, or none and takes them all); matches
/// further on, if any, are found again where they are used.
#[derive(Clone, Copy, Debug, Default)]
struct Matched {
    /// The index of the first matching port; bit `k` of `mask` is port `first + k`.
    first: u32,
    mask: u128,
    /// Whether a port past `first + 127` matches.
    beyond: bool,
    /// How many ports match (the SRV weight counts them).
    count: u32,
    /// Whether some matching port has a number (not CoreDNS's `-1` for "no ports"):
    /// only those make SRV records, and the addresses of the additional section.
    numbered: bool,
}

/// Why a walk over candidates stopped before the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Halt {
    /// The message is full: what follows would be left out anyway.
    Full,
    /// The query's work budget is spent.
    OverBudget,
    /// The caller found what it looked for.
    Enough,
}

/// Why `records` found nothing.
#[derive(Debug, PartialEq, Eq)]
enum Miss {
    Name,
    OverBudget,
}

impl From<NameError> for Miss {
    fn from(_: NameError) -> Miss {
        Miss::Name
    }
}

/// NS names, by the (local address, owner) indices that first gave each.
type NsNames = Vec<(u32, u32)>;
/// NS (name, sequence, address) pairs.
type NsPairs = Vec<(u32, u32, IpAddr)>;

thread_local! {
    /// The pairs written so far by this thread's current answer.
    static SEEN: RefCell<Seen> = const { RefCell::new(Seen::new()) };
    /// NS answers: the names (by the local address and owner that first gave them) and
    /// the (name, sequence, address) pairs, reused from query to query.
    static NS: RefCell<(NsNames, NsPairs)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// What `Records` found for a name.
enum Found<'s> {
    /// Exists, no records (apex, `svc`, a namespace).
    Nothing,
    /// A service with at least one candidate for the query.
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
    /// The query's work budget (the worker's, reset for each run of the chain).
    pub budget: &'a Budget,
    /// The port lists matched so far in this query (see [`Ctx::matched`]): the
    /// lists' addresses, what matched in each, and the slot to use next.
    matched_lists: [Cell<usize>; MATCHED_KEPT],
    matched: [Cell<Matched>; MATCHED_KEPT],
    matched_next: Cell<usize>,
}

/// Port lists whose matches a query keeps: the slices of a service share one list
/// (lists are interned), two or three while its ports change.
const MATCHED_KEPT: usize = 4;

/// A hash of byte strings and numbers, for [`Seen`].
fn hash_parts(parts: &[&[u8]], numbers: &[u64]) -> u64 {
    use std::hash::Hasher;
    let mut h = crate::kubernetes::snapshot::FxHasher::default();
    for p in parts {
        h.write(p);
        h.write_u8(0xff);
    }
    let mut words = [h.finish(), 0, 0];
    let n = numbers.len().min(2);
    words[1..1 + n].copy_from_slice(&numbers[..n]);
    hash_words(&words[..1 + n])
}

/// An address as two words, for hashing.
fn ip_words(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            (v as u64) ^ ((v >> 64) as u64).rotate_left(17) ^ (1 << 63)
        }
    }
}

/// Pushes a record; only a full message stops the caller (a malformed record, such as
/// a name over 255 bytes, is left out as before).
fn push(resp: &mut Response, section: Section, rr: &Record<'_>) -> Result<(), Halt> {
    match resp.push(section, rr) {
        Err(PushError::Truncated) => Err(Halt::Full),
        _ => Ok(()),
    }
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
    pub fn new(opts: &'a Options, snap: &'s Snapshot, req: &'r Request<'r>, z: Zoned<'z>, budget: &'a Budget) -> Self {
        Ctx {
            opts,
            snap,
            req,
            z,
            budget,
            matched_lists: Default::default(),
            matched: Default::default(),
            matched_next: Cell::new(0),
        }
    }

    fn name(&self) -> &NameKey {
        &self.req.qname
    }

    fn charge(&self, n: u32) -> Result<(), Halt> {
        self.budget.charge(n).map_err(|_| Halt::OverBudget)
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
    fn records(&self, p: &Parsed) -> Result<Found<'s>, Miss> {
        let Some(kind) = p.kind else { return Ok(Found::Nothing) };
        if is_reverse(self.name()) {
            return Err(Miss::Name);
        }
        let ns = p.namespace.expect("kind implies a namespace");
        if !self.exposed(ns) {
            return Err(Miss::Name);
        }
        match kind {
            Kind::Pod => Ok(self.find_pod(p)?),
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

    /// CoreDNS `findServices`: the service, if the query selects at least one candidate
    /// of it (found without listing them).
    fn find_service(&self, p: &Parsed) -> Result<Found<'s>, Miss> {
        let Some(si) = p.service else { return Ok(Found::Nothing) };
        let name = self.name();
        let ns = p.namespace.expect("set with service");
        let key = &name.wire()[name.label_offset(si)..name.label_offset(ns + 1)];
        let entry = self.snap.service(key).ok_or(Miss::Name)?;
        let svc = &entry.svc;
        if self.opts.ignore_empty_service && svc.kind == ServiceKind::ClusterIp && entry.ready_addresses == 0 {
            return Err(Miss::Name);
        }
        if svc.kind == ServiceKind::ExternalName {
            if p.endpoint.is_some() || p.port.is_some() || svc.external.is_none() {
                return Err(Miss::Name);
            }
            return Ok(Found::External(entry));
        }
        let sel = Sel::of(name, p);
        let found = if Self::from_cluster_ips(entry, &sel) {
            // A ClusterIP service exists for any matching port, even without an address.
            self.matched(&svc.ports, &sel).map(|m| m.count > 0)
        } else if sel.endpoint.is_none() && sel.port.is_none() && sel.protocol.is_none() {
            // Every port matches: a slice with endpoints and ports (every decoded slice
            // has one, at least CoreDNS's -1), found without reading them.
            let mut any = Ok(false);
            for slice in entry.slices.iter() {
                if let Err(h) = self.charge(1) {
                    any = Err(h);
                    break;
                }
                if !slice.eps.is_empty() && !slice.ports.is_empty() {
                    any = Ok(true);
                    break;
                }
            }
            any
        } else if sel.endpoint.is_none() {
            self.candidate_count(entry, &sel).map(|n| n > 0)
        } else {
            match self.each_endpoint(entry, &sel, false, |_, _, _| Err(Halt::Enough)) {
                Err(Halt::Enough) => Ok(true),
                Ok(()) => Ok(false),
                Err(h) => Err(h),
            }
        };
        match found {
            Ok(true) => Ok(Found::Service(entry)),
            Ok(false) => Err(Miss::Name),
            Err(_) => Err(Miss::OverBudget),
        }
    }

    /// Whether the candidates are the service's cluster IPs (a ClusterIP service not
    /// asked for one of its endpoints), not its endpoints.
    fn from_cluster_ips(entry: &ServiceEntry, sel: &Sel<'_>) -> bool {
        entry.svc.kind == ServiceKind::ClusterIp && sel.endpoint.is_none()
    }

    /// The ports of `ports` that `sel` selects. Without a port in the query, all of
    /// them, known without reading them (but whether one has a number, usually the
    /// first); with one, one step per port, once per query for each port list (the
    /// query's `sel` is the same throughout).
    fn matched(&self, ports: &[Port], sel: &Sel<'_>) -> Result<Matched, Halt> {
        let key = ports.as_ptr() as usize;
        if let Some(i) = self.matched_lists.iter().position(|k| k.get() == key) {
            return Ok(self.matched[i].get());
        }
        let mut m = Matched::default();
        if sel.port.is_none() && sel.protocol.is_none() {
            self.charge(1)?;
            m.count = ports.len() as u32;
            m.beyond = ports.len() > 128;
            m.mask = if ports.len() >= 128 {
                u128::MAX
            } else {
                (1u128 << ports.len()) - 1
            };
            for port in ports {
                if port.port != -1 {
                    m.numbered = true;
                    break;
                }
                self.charge(1)?;
            }
        } else {
            self.charge(ports.len() as u32)?;
            for (i, port) in ports.iter().enumerate() {
                if sel.port_ok(port) {
                    if m.count == 0 {
                        m.first = i as u32;
                    }
                    match i - m.first as usize {
                        k if k < 128 => m.mask |= 1 << k,
                        _ => m.beyond = true,
                    }
                    m.count += 1;
                    m.numbered |= port.port != -1;
                }
            }
        }
        let slot = self.matched_next.get();
        self.matched_lists[slot].set(key);
        self.matched[slot].set(m);
        self.matched_next.set((slot + 1) % MATCHED_KEPT);
        Ok(m)
    }

    /// Calls `f` with the index of each port of `ports` in `m`, in order.
    fn each_port(
        &self,
        ports: &[Port],
        m: &Matched,
        sel: &Sel<'_>,
        mut f: impl FnMut(usize) -> Result<(), Halt>,
    ) -> Result<(), Halt> {
        let first = m.first as usize;
        let mut bits = m.mask;
        while bits != 0 {
            f(first + bits.trailing_zeros() as usize)?;
            bits &= bits - 1;
        }
        if m.beyond {
            for (i, port) in ports.iter().enumerate().skip(first + 128) {
                self.charge(1)?;
                if sel.port_ok(port) {
                    f(i)?;
                }
            }
        }
        Ok(())
    }

    /// The number of candidates (CoreDNS's `len(services)`, which the SRV weight
    /// divides among): cluster IPs or endpoints, times their matching ports.
    fn candidate_count(&self, entry: &ServiceEntry, sel: &Sel<'_>) -> Result<u64, Halt> {
        if Self::from_cluster_ips(entry, sel) {
            let m = self.matched(&entry.svc.ports, sel)?;
            return Ok(u64::from(m.count) * entry.svc.cluster_ips.len() as u64);
        }
        let mut n = 0u64;
        if sel.endpoint.is_none() {
            // Per slice, without looking at the endpoints (each port list once).
            for slice in entry.slices.iter() {
                self.charge(1)?;
                n += u64::from(self.matched(&slice.ports, sel)?.count) * slice.eps.len() as u64;
            }
            return Ok(n);
        }
        self.each_endpoint(entry, sel, false, |_, _, m| {
            n += u64::from(m.count);
            Ok(())
        })?;
        Ok(n)
    }

    /// Calls `f(slice, endpoint, matched ports)` for each endpoint of the service with
    /// at least one selected port (with `numbered`: one with a number), in CoreDNS's
    /// order (slices by name, endpoints in slice order). An endpoint asked for by name
    /// is found through each slice's name index. Every slice and endpoint looked at is
    /// one step of the budget.
    fn each_endpoint(
        &self,
        entry: &'s ServiceEntry,
        sel: &Sel<'_>,
        numbered: bool,
        mut f: impl FnMut(usize, usize, &Matched) -> Result<(), Halt>,
    ) -> Result<(), Halt> {
        let want = sel.endpoint.map(|w| (w, label_hash(w)));
        for (s, slice) in entry.slices.iter().enumerate() {
            self.charge(1)?;
            let m = self.matched(&slice.ports, sel)?;
            if m.count == 0 || (numbered && !m.numbered) {
                continue;
            }
            match want {
                None => {
                    for e in 0..slice.eps.len() {
                        self.charge(1)?;
                        f(s, e, &m)?;
                    }
                }
                Some((w, hash)) => {
                    for e in slice.named(hash) {
                        self.charge(1)?;
                        let mut buf = [0u8; 64];
                        if slice.label(e, &mut buf)[1..] == *w {
                            f(s, e, &m)?;
                        }
                    }
                }
            }
        }
        Ok(())
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

    fn write_addr(&self, resp: &mut Response, owner: Name<'_>, ip: IpAddr) -> Result<(), Halt> {
        let (t, data) = Rdata::address(ip);
        push(
            resp,
            Section::Answer,
            &Record {
                owner,
                rtype: t,
                ttl: self.ttl(),
                data,
            },
        )
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
            Err(Miss::Name) => Answer::NameError,
            Err(Miss::OverBudget) => Answer::OverBudget,
        }
    }

    /// A and AAAA (CoreDNS `plugin.A`/`AAAA` over `Services`).
    fn addresses(&self, resp: &mut Response, qtype: u16) -> Answer<'s> {
        let v4 = qtype == rtype::A;
        if self.z.before == 0 {
            return Answer::NoData;
        }
        if self.is_default_ns() {
            return self.ns_addresses(resp, v4);
        }
        let Ok(p) = parse(self.name(), self.z.before) else {
            return Answer::NameError;
        };
        let found = match self.records(&p) {
            Ok(f) => f,
            Err(Miss::Name) => return Answer::NameError,
            Err(Miss::OverBudget) => return Answer::OverBudget,
        };
        match found {
            Found::Nothing => Answer::NoData,
            Found::Pod(ip) => {
                if ip.is_ipv4() == v4 {
                    let _ = self.write_addr(resp, Name::QUESTION, ip);
                    Answer::Records
                } else {
                    Answer::NoData
                }
            }
            Found::External(entry) => self.chase(resp, entry, qtype),
            Found::Service(entry) => {
                let sel = Sel::of(self.name(), &p);
                let written = self.write_service_addresses(resp, entry, &sel, Name::QUESTION, v4);
                match written {
                    Ok(0) => Answer::NoData,
                    Ok(_) | Err(Halt::Full | Halt::Enough) => Answer::Records,
                    Err(Halt::OverBudget) => Answer::OverBudget,
                }
            }
        }
    }

    /// Writes the addresses of the family of the service's candidates, each once, in
    /// candidate order, until the message is full; returns how many (Err(Full) once
    /// the first did not fit: there was at least one).
    fn write_service_addresses(
        &self,
        resp: &mut Response,
        entry: &'s ServiceEntry,
        sel: &Sel<'_>,
        owner: Name<'_>,
        v4: bool,
    ) -> Result<usize, Halt> {
        let plain = sel.endpoint.is_none() && sel.port.is_none() && sel.protocol.is_none();
        if plain || Self::from_cluster_ips(entry, sel) {
            // The prepared, deduplicated addresses: the hot path. (For a ClusterIP
            // service asked for a port, the candidates are its cluster IPs, once the
            // port matched, which `records` checked.)
            let mut n = 0;
            let mut full = false;
            entry.addresses(v4, |ip| {
                n += 1;
                if self.write_addr(resp, owner, ip).is_err() {
                    full = true;
                    return std::ops::ControlFlow::Break(());
                }
                std::ops::ControlFlow::Continue(())
            });
            return if full { Err(Halt::Full) } else { Ok(n) };
        }
        // Endpoints: each address once (a distinct service has no address twice).
        let dedup = !(entry.distinct && sel.endpoint.is_none());
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            seen.clear();
            let mut n = 0;
            let ip_of = |i: [u32; 3]| entry.slices[i[0] as usize].eps[i[1] as usize].addr();
            self.each_endpoint(entry, sel, false, |s, e, _| {
                let ip = ip_of([s as u32, e as u32, 0]);
                if ip.is_ipv4() != v4 {
                    return Ok(());
                }
                if dedup
                    && !seen.insert(
                        [s as u32, e as u32, 0],
                        |i| hash_words(&[ip_words(ip_of(i))]),
                        |a, b| ip_of(a) == ip_of(b),
                    )
                {
                    return Ok(());
                }
                n += 1;
                self.write_addr(resp, owner, ip)
            })?;
            Ok(n)
        })
    }

    /// Whether the service's candidates have an address of the family (one step per
    /// candidate looked at).
    fn has_service_address(&self, entry: &'s ServiceEntry, sel: &Sel<'_>, v4: bool) -> Result<bool, Halt> {
        let plain = sel.endpoint.is_none() && sel.port.is_none() && sel.protocol.is_none();
        if plain || Self::from_cluster_ips(entry, sel) {
            return Ok(entry.addresses(v4, |_| std::ops::ControlFlow::Break(())));
        }
        let found = self.each_endpoint(entry, sel, false, |s, e, _| {
            if entry.slices[s].eps[e].addr().is_ipv4() == v4 {
                return Err(Halt::Enough);
            }
            Ok(())
        });
        match found {
            Ok(()) => Ok(false),
            Err(Halt::Enough) => Ok(true),
            Err(h) => Err(h),
        }
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
            let sub = Ctx::new(
                self.opts,
                self.snap,
                &renamed,
                Zoned {
                    zone: self.z.zone,
                    before,
                    zone_off: self.z.zone_off,
                    zone_lower: self.z.zone_lower,
                },
                self.budget,
            );
            let found = match sub.records(&p) {
                Ok(f) => f,
                Err(Miss::Name) => return Answer::NoData,
                Err(Miss::OverBudget) => return Answer::OverBudget,
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
                    let _ = self.write_addr(resp, owner, ip);
                    return Answer::Records;
                }
                Found::Service(entry) => {
                    let sel = Sel::of(sub.name(), &p);
                    match sub.has_service_address(entry, &sel, v4) {
                        Ok(true) => {}
                        Ok(false) => return Answer::NoData,
                        Err(_) => return Answer::OverBudget,
                    }
                    self.write_chain(resp, &chain[..n]);
                    return match sub.write_service_addresses(resp, entry, &sel, owner, v4) {
                        Err(Halt::OverBudget) => Answer::OverBudget,
                        _ => Answer::Records,
                    };
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
            Ok(Found::Nothing) | Err(Miss::Name) => Answer::NameError,
            Err(Miss::OverBudget) => Answer::OverBudget,
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
            Err(Miss::Name) => Answer::NameError,
            Err(Miss::OverBudget) => Answer::OverBudget,
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
    /// `namespaces` option filters), else every endpoint with that address, once per
    /// name, until the message is full. The snapshot keeps cluster IP owners first.
    fn ptr(&self, resp: &mut Response) -> Answer<'s> {
        let Some(ip) = reverse_address(self.name()) else {
            let Ok(p) = parse(self.name(), self.z.before) else {
                return Answer::NameError;
            };
            return match self.records(&p) {
                Ok(_) => Answer::NoData,
                Err(Miss::Name) => Answer::NameError,
                Err(Miss::OverBudget) => Answer::OverBudget,
            };
        };
        let owners = self.snap.owners(&ip);
        let primary = &self.opts.primary_zone;
        let mut endpoints_from = owners.len();
        for (i, o) in owners.iter().enumerate() {
            if self.charge(1).is_err() {
                return Answer::OverBudget;
            }
            match o {
                Owner::Cluster(svc) if self.listed(svc.namespace()) => {
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
                Owner::Cluster(_) => {}
                Owner::Endpoint(..) => {
                    endpoints_from = i;
                    break;
                }
            }
        }
        let owners = &owners[endpoints_from..];
        // One PTR per distinct target (the same address in two slices of one service
        // gives one): (service, endpoint label).
        let outcome: Result<usize, Halt> = SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            seen.clear();
            let mut written = 0usize;
            let same = |a: [u32; 3], b: [u32; 3]| match (&owners[a[0] as usize], &owners[b[0] as usize]) {
                (Owner::Endpoint(sa, ea), Owner::Endpoint(sb, eb)) => {
                    let (mut ba, mut bb) = ([0u8; 64], [0u8; 64]);
                    sa.rel == sb.rel && sa.label(*ea as usize, &mut ba) == sb.label(*eb as usize, &mut bb)
                }
                _ => false,
            };
            let hash = |i: [u32; 3]| match &owners[i[0] as usize] {
                Owner::Endpoint(s, e) => {
                    let mut b = [0u8; 64];
                    hash_parts(&[&s.rel, s.label(*e as usize, &mut b)], &[])
                }
                Owner::Cluster(_) => 0,
            };
            for (i, o) in owners.iter().enumerate() {
                self.charge(1)?;
                let Owner::Endpoint(slice, e) = o else { continue };
                if !self.listed(slice.namespace()) || !seen.insert([i as u32, 0, 0], hash, same) {
                    continue;
                }
                written += 1;
                let mut buf = [0u8; 64];
                let rr = Record::at_question(
                    rtype::PTR,
                    self.ttl(),
                    Rdata::Name(Name {
                        head: slice.label(*e as usize, &mut buf),
                        mid: &slice.rel,
                        tail: Tail::Wire(primary),
                    }),
                );
                if push(resp, Section::Answer, &rr).is_err() {
                    return Ok(written);
                }
            }
            Ok(written)
        });
        match outcome {
            Ok(0) => Answer::NameError,
            Ok(_) => Answer::Records,
            Err(_) => Answer::OverBudget,
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
            Err(Miss::Name) => return Answer::NameError,
            Err(Miss::OverBudget) => return Answer::OverBudget,
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
            Found::Service(entry) => {
                let sel = Sel::of(self.name(), &p);
                match self.srv_records(resp, entry, &sel) {
                    Ok(0) => Answer::NoData,
                    Ok(_) | Err(Halt::Full | Halt::Enough) => Answer::Records,
                    Err(Halt::OverBudget) => Answer::OverBudget,
                }
            }
        }
    }

    /// The SRV records of a service's candidates and their addresses; returns how many
    /// (target, port) pairs there were (Err(Full) once the message filled).
    fn srv_records(&self, resp: &mut Response, entry: &'s ServiceEntry, sel: &Sel<'_>) -> Result<usize, Halt> {
        let n = self.candidate_count(entry, sel)?;
        // CoreDNS: weight = floor(100 / (100 * N) * 100), at least 1.
        let weight = ((100.0 / (100.0 * n.max(1) as f64)) * 100.0).floor().max(1.0) as u16;
        let zone_off = self.z.zone_off;
        let ttl = self.ttl();
        let srv = |port: i32, target: Name<'_>, resp: &mut Response| {
            push(
                resp,
                Section::Answer,
                &Record::at_question(
                    rtype::SRV,
                    ttl,
                    Rdata::Srv {
                        priority: 0,
                        weight,
                        port: port as u16,
                        target,
                    },
                ),
            )
        };
        let glue = |ip: IpAddr, owner: Name<'_>, resp: &mut Response| {
            let (t, data) = Rdata::address(ip);
            push(
                resp,
                Section::Additional,
                &Record {
                    owner,
                    rtype: t,
                    ttl,
                    data,
                },
            )
        };
        SEEN.with(|seen| {
            let mut seen = seen.borrow_mut();
            seen.clear();
            let mut written = 0usize;
            if Self::from_cluster_ips(entry, sel) {
                // Target `<svc>.<ns>.svc.<zone>`: one SRV per port number, then each
                // cluster IP once.
                let ips = &entry.svc.cluster_ips;
                let ports = &entry.svc.ports;
                let target = Name::under_question(&entry.svc.rel, zone_off);
                let m = self.matched(ports, sel)?;
                if ips.is_empty() {
                    return Ok(0);
                }
                self.each_port(ports, &m, sel, |pi| {
                    let port = ports[pi].port;
                    if port == -1
                        || !seen.insert(
                            [pi as u32, 0, 0],
                            |i| hash_words(&[ports[i[0] as usize].port as u64]),
                            |a, b| ports[a[0] as usize].port == ports[b[0] as usize].port,
                        )
                    {
                        return Ok(());
                    }
                    written += 1;
                    srv(port, target, resp)
                })?;
                if written > 0 {
                    for ip in ips.iter() {
                        glue(*ip, target, resp)?;
                    }
                }
                return Ok(written);
            }
            // Endpoints: target `<endpoint>.<svc>.<ns>.svc.<zone>`.
            let dedup = !(entry.distinct && sel.endpoint.is_none());
            let slices = &entry.slices;
            let rel = &entry.svc.rel;
            let port_of = |i: [u32; 3]| slices[i[0] as usize].ports[i[2] as usize].port;
            let label_hash_of = |i: [u32; 3]| {
                let mut b = [0u8; 64];
                hash_parts(&[slices[i[0] as usize].label(i[1] as usize, &mut b)], &[])
            };
            let same_label = |a: [u32; 3], b: [u32; 3]| {
                let (mut ba, mut bb) = ([0u8; 64], [0u8; 64]);
                slices[a[0] as usize].label(a[1] as usize, &mut ba)
                    == slices[b[0] as usize].label(b[1] as usize, &mut bb)
            };
            self.each_endpoint(entry, sel, true, |s, e, m| {
                let slice = &slices[s];
                let mut buf = [0u8; 64];
                let label = slice.label(e, &mut buf);
                self.each_port(&slice.ports, m, sel, |pi| {
                    self.charge(1)?;
                    let port = slice.ports[pi].port;
                    let item = [s as u32, e as u32, pi as u32];
                    // One SRV per (target, port): the protocol is not part of the key.
                    if port == -1
                        || (dedup
                            && !seen.insert(
                                item,
                                |i| hash_words(&[label_hash_of(i), port_of(i) as u64]),
                                |a, b| port_of(a) == port_of(b) && same_label(a, b),
                            ))
                    {
                        return Ok(());
                    }
                    written += 1;
                    let target = Name {
                        head: label,
                        mid: rel,
                        tail: Tail::Question(zone_off),
                    };
                    srv(port, target, resp)
                })
            })?;
            if written == 0 {
                return Ok(0);
            }
            // One address per (target, address), for the endpoints that made an SRV.
            seen.clear();
            let ip_of = |i: [u32; 3]| slices[i[0] as usize].eps[i[1] as usize].addr();
            self.each_endpoint(entry, sel, true, |s, e, _| {
                let item = [s as u32, e as u32, 0];
                if dedup
                    && !seen.insert(
                        item,
                        |i| hash_words(&[label_hash_of(i), ip_words(ip_of(i))]),
                        |a, b| ip_of(a) == ip_of(b) && same_label(a, b),
                    )
                {
                    return Ok(());
                }
                let mut buf = [0u8; 64];
                let owner = Name {
                    head: slices[s].label(e, &mut buf),
                    mid: rel,
                    tail: Tail::Question(zone_off),
                };
                glue(ip_of(item), owner, resp)
            })?;
            Ok(written)
        })
    }

    // ---- NS -----------------------------------------------------------------------

    /// The NS name given by owner `owner` of local address `local` (indices; `FALLBACK`
    /// for `ns.dns`), as (endpoint label or empty, the rest relative to the zone), with
    /// the addresses that come with it; `None` when that owner gives no name.
    fn ns_name<'b>(&self, local: u32, owner: u32, buf: &'b mut [u8; 64]) -> Option<NsName<'b>>
    where
        's: 'b,
    {
        if local == FALLBACK {
            return Some(NsName {
                label: &[],
                rel: b"\x02ns\x03dns",
                ips: NsIps::Local,
            });
        }
        let ip = self.opts.local_ips.get(local as usize)?;
        let Owner::Endpoint(slice, e) = self.snap.owners(ip).get(owner as usize)? else {
            return None;
        };
        let entry = self.snap.service(slice.service_key())?;
        match entry.svc.kind {
            ServiceKind::ClusterIp if !entry.svc.cluster_ips.is_empty() => Some(NsName {
                label: &[],
                rel: &entry.svc.rel,
                ips: NsIps::Cluster(&entry.svc.cluster_ips),
            }),
            ServiceKind::Headless => Some(NsName {
                label: slice.label(*e as usize, buf),
                rel: &entry.svc.rel,
                ips: NsIps::Slice(slice),
            }),
            _ => None,
        }
    }

    /// CoreDNS `nsAddrs`: for every endpoint holding one of the server's local
    /// addresses, its service's name and cluster IPs (a headless service: the
    /// endpoint's name and the addresses of its slice); with none, `ns.dns` and the
    /// local addresses themselves. Fills `names` (the (local, owner) that first gave
    /// each name) and `pairs` ((name, sequence, address), each pair once), sorted by
    /// name then sequence: the additional section's order.
    fn ns_collect(&self, seen: &mut Seen, names: &mut NsNames, pairs: &mut NsPairs) -> Result<(), Halt> {
        names.clear();
        pairs.clear();
        seen.clear();
        // Names are items [NAME, index in `names`, 0], pairs [PAIR, index in `pairs`,
        // 0], in one set: one hash and one equality for both, since the set may rehash
        // every item it holds on any insert.
        const NAME: u32 = 0;
        const PAIR: u32 = 1;
        let hash = |i: [u32; 3], names: &NsNames, pairs: &NsPairs| match i[0] {
            NAME => {
                let (l, o) = names[i[1] as usize];
                let mut b = [0u8; 64];
                self.ns_name(l, o, &mut b)
                    .map_or(0, |n| hash_parts(&[n.label, n.rel], &[]))
            }
            _ => {
                let (n, _, ip) = pairs[i[1] as usize];
                hash_words(&[u64::from(n), ip_words(ip)])
            }
        };
        let same = |a: [u32; 3], b: [u32; 3], names: &NsNames, pairs: &NsPairs| match (a[0], b[0]) {
            (NAME, NAME) => {
                let ((la, oa), (lb, ob)) = (names[a[1] as usize], names[b[1] as usize]);
                let (mut ba, mut bb) = ([0u8; 64], [0u8; 64]);
                match (self.ns_name(la, oa, &mut ba), self.ns_name(lb, ob, &mut bb)) {
                    (Some(x), Some(y)) => x.label == y.label && x.rel == y.rel,
                    _ => false,
                }
            }
            (PAIR, PAIR) => {
                let (x, y) = (pairs[a[1] as usize], pairs[b[1] as usize]);
                x.0 == y.0 && x.2 == y.2
            }
            _ => false,
        };
        let mut add = |local: u32, owner: u32, names: &mut NsNames, pairs: &mut NsPairs| -> Result<(), Halt> {
            let mut buf = [0u8; 64];
            let Some(name) = self.ns_name(local, owner, &mut buf) else {
                return Ok(());
            };
            names.push((local, owner));
            let item = [NAME, names.len() as u32 - 1, 0];
            let held = seen.find_or_insert(item, |i| hash(i, names, pairs), |a, b| same(a, b, names, pairs));
            let id = match held {
                None => names.len() as u32 - 1,
                Some(held) => {
                    names.pop();
                    held[1]
                }
            };
            let mut one = |ip: IpAddr, names: &NsNames, pairs: &mut NsPairs| -> Result<(), Halt> {
                self.charge(1)?;
                pairs.push((id, pairs.len() as u32, ip));
                let item = [PAIR, pairs.len() as u32 - 1, 0];
                if !seen.insert(item, |i| hash(i, names, pairs), |a, b| same(a, b, names, pairs)) {
                    pairs.pop();
                }
                Ok(())
            };
            match name.ips {
                NsIps::Cluster(ips) => ips.iter().try_for_each(|ip| one(*ip, names, pairs)),
                NsIps::Slice(slice) => slice.eps.iter().try_for_each(|ep| one(ep.addr(), names, pairs)),
                NsIps::Local => self.opts.local_ips.iter().try_for_each(|ip| one(*ip, names, pairs)),
            }
        };
        for (li, local) in self.opts.local_ips.iter().enumerate() {
            for oi in 0..self.snap.owners(local).len() {
                self.charge(1)?;
                add(li as u32, oi as u32, names, pairs)?;
            }
        }
        if names.is_empty() && !self.opts.local_ips.is_empty() {
            add(FALLBACK, 0, names, pairs)?;
        }
        pairs.sort_unstable_by_key(|&(name, seq, _)| (name, seq));
        Ok(())
    }

    /// Runs `f` with the NS names and address pairs (see [`Ctx::ns_collect`]).
    fn with_ns<T>(&self, f: impl FnOnce(&[(u32, u32)], &[(u32, u32, IpAddr)]) -> T) -> Result<T, Halt> {
        SEEN.with(|seen| {
            NS.with(|ns| {
                let mut seen = seen.borrow_mut();
                let mut ns = ns.borrow_mut();
                let (names, pairs) = &mut *ns;
                self.ns_collect(&mut seen, names, pairs)?;
                Ok(f(names, pairs))
            })
        })
    }

    /// A/AAAA of `ns.dns.<zone>`: the NS addresses of the family, name by name.
    fn ns_addresses(&self, resp: &mut Response, v4: bool) -> Answer<'s> {
        let any = self.with_ns(|_, pairs| {
            let mut any = false;
            for &(_, _, ip) in pairs {
                if ip.is_ipv4() == v4 {
                    any = true;
                    if self.write_addr(resp, Name::QUESTION, ip).is_err() {
                        break;
                    }
                }
            }
            any
        });
        match any {
            Ok(true) => Answer::Records,
            Ok(false) => Answer::NoData,
            Err(_) => Answer::OverBudget,
        }
    }

    /// NS at the apex, with addresses in the additional section.
    fn ns(&self, resp: &mut Response) -> Answer<'s> {
        let zone_off = self.z.zone_off;
        let written = self.with_ns(|names, pairs| {
            if names.is_empty() {
                return false;
            }
            for &(l, o) in names {
                let mut buf = [0u8; 64];
                let Some(n) = self.ns_name(l, o, &mut buf) else {
                    continue;
                };
                let rr = Record::at_question(
                    rtype::NS,
                    self.ttl(),
                    Rdata::Name(Name {
                        head: n.label,
                        mid: n.rel,
                        tail: Tail::Question(zone_off),
                    }),
                );
                if push(resp, Section::Answer, &rr).is_err() {
                    return true;
                }
            }
            for &(id, _, ip) in pairs {
                let (l, o) = names[id as usize];
                let mut buf = [0u8; 64];
                let Some(n) = self.ns_name(l, o, &mut buf) else {
                    continue;
                };
                let (t, data) = Rdata::address(ip);
                let rr = Record {
                    owner: Name {
                        head: n.label,
                        mid: n.rel,
                        tail: Tail::Question(zone_off),
                    },
                    rtype: t,
                    ttl: self.ttl(),
                    data,
                };
                if push(resp, Section::Additional, &rr).is_err() {
                    break;
                }
            }
            true
        });
        match written {
            Ok(true) => Answer::Records,
            Ok(false) => Answer::NoData,
            Err(_) => Answer::OverBudget,
        }
    }
}

/// [`Ctx::ns_name`]'s local index for the `ns.dns` fallback.
const FALLBACK: u32 = u32::MAX;

/// An NS name and where its addresses come from.
struct NsName<'b> {
    label: &'b [u8],
    rel: &'b [u8],
    ips: NsIps<'b>,
}

enum NsIps<'b> {
    Cluster(&'b [IpAddr]),
    Slice(&'b SliceData),
    Local,
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

    // ---- answers from an in-memory snapshot ------------------------------------

    use crate::chain::Budget;
    use crate::dns::Transport;
    use crate::kubernetes::model::{Endpoint, EndpointSlice, Namespace, Object, Port, Service};
    use crate::kubernetes::snapshot::{ClusterStore, StoreOptions};
    use domain::base::Message;
    use domain::rdata::AllRecordData;

    fn options() -> Options {
        let parsed = crate::config::parse_str(
            "cluster.local {\n kubernetes cluster.local in-addr.arpa ip6.arpa\n}\n",
            "Corefile",
            std::path::Path::new("/"),
        )
        .unwrap();
        let zones = ["cluster.local.".to_owned()];
        let ctx = crate::plugin::SetupCtx {
            zones: &zones,
            config_dir: "/".into(),
            workers: 1,
            binds: None,
        };
        let mut o = super::super::setup::parse(&parsed.blocks[0].directives[0], &ctx).unwrap();
        o.local_ips = Vec::new();
        o
    }

    fn port(name: &str, proto: &str, number: i32) -> Port {
        Port {
            name: name.into(),
            protocol: proto.into(),
            port: number,
        }
    }

    fn service(name: &str, kind: ServiceKind, ips: &[&str], ports: Vec<Port>) -> Object {
        Object::Service(Service {
            namespace: "ns".into(),
            name: name.into(),
            resource_version: "1".into(),
            kind,
            cluster_ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            external_name: "".into(),
            ports,
        })
    }

    /// A slice of service `svc`: endpoints as (address, hostname).
    fn slice(svc: &str, name: &str, eps: &[(String, Option<String>)], ports: Vec<Port>) -> Object {
        Object::EndpointSlice(EndpointSlice {
            namespace: "ns".into(),
            name: name.into(),
            resource_version: "1".into(),
            service: svc.into(),
            endpoints: eps
                .iter()
                .map(|(a, h)| Endpoint {
                    addresses: vec![(a.parse().unwrap(), a.as_str().into())],
                    hostname: h.as_deref().map(Into::into),
                    pod_name: None,
                    node_name: None,
                })
                .collect(),
            ports,
            last_change_trigger: None,
        })
    }

    fn store(objects: Vec<Object>) -> ClusterStore {
        let mut st = ClusterStore::new(StoreOptions::default(), vec![]);
        st.upsert(Object::Namespace(Namespace { name: "ns".into() }));
        for o in objects {
            st.upsert(o);
        }
        st
    }

    fn wire_query(name: &str, qtype: u16, udp: Option<u16>) -> Vec<u8> {
        let mut m = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(udp.is_some())];
        m.extend_from_slice(&crate::dns::wire::name_from_str(name).unwrap());
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        if let Some(size) = udp {
            m.extend_from_slice(&[0, 0, 41]);
            m.extend_from_slice(&size.to_be_bytes());
            m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        m
    }

    /// Answers `name`/`qtype` from `snap` as the plugin does; the finished message.
    fn ask(
        opts: &Options,
        snap: &Snapshot,
        name: &str,
        qtype: u16,
        tcp: bool,
        budget: &Budget,
    ) -> (Answer<'static>, Vec<u8>) {
        let raw = wire_query(name, qtype, (!tcp).then_some(512));
        let a = "127.0.0.1:1".parse().unwrap();
        let t = if tcp { Transport::Tcp } else { Transport::Udp };
        let req = Request::parse(&raw, t, a, a).ok().unwrap();
        let ctx = Ctx::new(opts, snap, &req, Zoned::find(opts, &req).expect("in a zone"), budget);
        let mut resp = Response::new();
        resp.start(&req, crate::dns::Rcode::NOERROR);
        let answer = match ctx.answer(&mut resp) {
            Answer::Records => Answer::Records,
            Answer::NoData => Answer::NoData,
            Answer::NameError => Answer::NameError,
            Answer::Refused => Answer::Refused,
            Answer::Chase(_) => Answer::Chase(&[]),
            Answer::OverBudget => Answer::OverBudget,
        };
        (answer, resp.finish().to_vec())
    }

    /// A section's records as `owner TYPE rdata` (TTL and class left out).
    fn records(msg: &[u8], additional: bool) -> Vec<String> {
        let m = Message::from_octets(msg).unwrap();
        let sec = if additional { m.additional() } else { m.answer() }.unwrap();
        sec.limit_to::<AllRecordData<_, _>>()
            .map(|r| {
                let r = r.unwrap();
                // Names without their final dot, however `domain` prints them.
                format!("{} {} {}", r.owner(), r.rtype(), r.data())
                    .replace(". ", " ")
                    .trim_end_matches('.')
                    .to_string()
            })
            .filter(|r| !r.contains(" OPT "))
            .collect()
    }

    fn tc(msg: &[u8]) -> bool {
        Message::from_octets(msg).unwrap().header().tc()
    }

    /// What the answers were before they were made linear: every candidate listed, each
    /// compared with all earlier ones. The reference the new code must match.
    fn reference(entry: &ServiceEntry, sel: &Sel<'_>) -> (Vec<String>, Vec<String>, Vec<String>) {
        struct C {
            label: String,
            port: i32,
            ip: IpAddr,
            cluster: bool,
        }
        let mut c = Vec::new();
        let svc = &entry.svc;
        if svc.kind == ServiceKind::Headless || sel.endpoint.is_some() {
            for sl in entry.slices.iter() {
                for e in 0..sl.eps.len() {
                    let mut b = [0u8; 64];
                    let l = sl.label(e, &mut b)[1..].to_vec();
                    if sel.endpoint.is_some_and(|w| w != &l[..]) {
                        continue;
                    }
                    for p in sl.ports.iter() {
                        if sel.port_ok(p) {
                            c.push(C {
                                label: String::from_utf8(l.clone()).unwrap(),
                                port: p.port,
                                ip: sl.eps[e].addr(),
                                cluster: false,
                            });
                        }
                    }
                }
            }
        } else {
            for p in svc.ports.iter().filter(|p| sel.port_ok(p)) {
                for ip in svc.cluster_ips.iter() {
                    c.push(C {
                        label: String::new(),
                        port: p.port,
                        ip: *ip,
                        cluster: true,
                    });
                }
            }
        }
        let me = String::from_utf8(svc.name().to_vec()).unwrap();
        let target = |x: &C| {
            if x.cluster {
                format!("{me}.ns.svc.cluster.local")
            } else {
                format!("{}.{me}.ns.svc.cluster.local", x.label)
            }
        };
        let n = c.len().max(1) as f64;
        let weight = ((100.0 / (100.0 * n)) * 100.0).floor().max(1.0) as u16;
        let mut srv = Vec::new();
        for (i, x) in c.iter().enumerate() {
            if x.port != -1
                && !c[..i]
                    .iter()
                    .any(|o| o.port == x.port && o.label == x.label && o.cluster == x.cluster)
            {
                srv.push(format!("{} SRV 0 {weight} {} {}", "Q", x.port, target(x)));
            }
        }
        let mut glue = Vec::new();
        for (i, x) in c.iter().enumerate() {
            if x.port != -1
                && !c[..i]
                    .iter()
                    .any(|o| o.port != -1 && o.ip == x.ip && o.label == x.label && o.cluster == x.cluster)
            {
                let t = if x.ip.is_ipv4() { "A" } else { "AAAA" };
                glue.push(format!("{} {t} {}", target(x), x.ip));
            }
        }
        let mut addrs = Vec::new();
        for (i, x) in c.iter().enumerate() {
            if !c[..i].iter().any(|o| o.ip == x.ip) {
                addrs.push(x.ip.to_string());
            }
        }
        (srv, glue, addrs)
    }

    /// A small deterministic generator.
    struct Rand(u64);
    impl Rand {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A headless service `svc` with repeated names, addresses and port numbers, and a
    /// ClusterIP service `web` over the same slices' shapes.
    fn random_world(seed: u64) -> ClusterStore {
        let mut r = Rand(seed | 1);
        let lists = [
            vec![port("http", "tcp", 80)],
            vec![
                port("dns", "udp", 53),
                port("dns", "tcp", 53),
                port("metrics", "tcp", 9153),
            ],
            vec![port("", "tcp", -1)],
            vec![
                port("http", "tcp", 80),
                port("alt", "tcp", 80),
                port("https", "tcp", 443),
            ],
        ];
        let mut objs = vec![
            service("svc", ServiceKind::Headless, &[], vec![port("http", "tcp", 80)]),
            service(
                "web",
                ServiceKind::ClusterIp,
                &["10.96.0.5", "fd00::5"],
                lists[3].clone(),
            ),
        ];
        for (svc, slices) in [("svc", 2 + r.below(5)), ("web", 1 + r.below(3))] {
            for s in 0..slices {
                let v6 = r.below(3) == 0;
                let eps: Vec<(String, Option<String>)> = (0..1 + r.below(40))
                    .map(|_| {
                        let a = r.below(30);
                        let addr = if v6 {
                            format!("fd00::{a:x}")
                        } else {
                            format!("10.1.0.{a}")
                        };
                        let host = match r.below(4) {
                            0 => Some(format!("host-{}", r.below(10))),
                            _ => None,
                        };
                        (addr, host)
                    })
                    .collect();
                let ports = lists[r.below(lists.len() as u64) as usize].clone();
                objs.push(slice(svc, &format!("{svc}-{s}"), &eps, ports));
            }
        }
        store(objs)
    }

    #[test]
    fn answers_match_the_quadratic_reference_on_random_worlds() {
        let opts = options();
        let budget = Budget::new();
        for seed in 1..60u64 {
            let st = random_world(seed * 7919);
            let snap = st.snapshot();
            for svc in ["svc", "web"] {
                let entry = snap
                    .service(&crate::kubernetes::snapshot::service_key("ns", svc))
                    .unwrap();
                let mut prefixes: Vec<(String, Sel<'static>)> = vec![
                    (String::new(), Sel::default()),
                    (
                        "_http._tcp.".into(),
                        Sel {
                            port: Some(b"http"),
                            protocol: Some(b"tcp"),
                            ..Sel::default()
                        },
                    ),
                    (
                        "_dns._.".into(),
                        Sel {
                            port: Some(b"dns"),
                            protocol: Some(b""),
                            ..Sel::default()
                        },
                    ),
                ];
                for l in ["host-3", "10-1-0-7", "fd00--7", "host-9"] {
                    let leaked: &'static [u8] = Box::leak(l.as_bytes().to_vec().into_boxed_slice());
                    prefixes.push((
                        format!("{l}."),
                        Sel {
                            endpoint: Some(leaked),
                            ..Sel::default()
                        },
                    ));
                }
                for (prefix, sel) in &prefixes {
                    let name = format!("{prefix}{svc}.ns.svc.cluster.local");
                    let (srv, glue, addrs) = reference(entry, sel);
                    let (a, msg) = ask(&opts, &snap, &name, rtype::SRV, true, &budget);
                    budget.reset();
                    let got: Vec<String> = records(&msg, false)
                        .into_iter()
                        .map(|r| r.replacen(&name, "Q", 1))
                        .collect();
                    let ctx = format!("seed {seed} {name} SRV");
                    if srv.is_empty() {
                        assert_ne!(a, Answer::Records, "{ctx}");
                    } else {
                        assert_eq!(got, srv, "{ctx}");
                        assert_eq!(records(&msg, true), glue, "{ctx}");
                    }
                    if svc == "web" && sel.endpoint.is_none() {
                        continue;
                    }
                    for qtype in [rtype::A, rtype::AAAA] {
                        let (_, msg) = ask(&opts, &snap, &name, qtype, true, &budget);
                        budget.reset();
                        let want: Vec<String> = addrs
                            .iter()
                            .filter(|a| a.contains(':') == (qtype == rtype::AAAA))
                            .cloned()
                            .collect();
                        let got: Vec<String> = records(&msg, false)
                            .into_iter()
                            .map(|r| r.rsplit(' ').next().unwrap().to_string())
                            .collect();
                        assert_eq!(got, want, "seed {seed} {name} {qtype}");
                    }
                }
            }
        }
    }

    fn big_headless(
        n: usize,
        per_slice: usize,
        ports: Vec<Port>,
        host: impl Fn(usize) -> Option<String>,
    ) -> ClusterStore {
        let mut objs = vec![service(
            "big",
            ServiceKind::Headless,
            &[],
            vec![port("http", "tcp", 80)],
        )];
        for s in 0..n.div_ceil(per_slice) {
            let eps: Vec<(String, Option<String>)> = (s * per_slice..((s + 1) * per_slice).min(n))
                .map(|i| (format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255), host(i)))
                .collect();
            objs.push(slice("big", &format!("big-{s:04}"), &eps, ports.clone()));
        }
        store(objs)
    }

    #[test]
    fn a_large_answer_stops_when_the_message_is_full() {
        let opts = options();
        let budget = Budget::new();
        let four = vec![
            port("a", "tcp", 1),
            port("b", "tcp", 2),
            port("c", "tcp", 3),
            port("d", "tcp", 4),
        ];
        let st = big_headless(4000, 1000, four, |_| None);
        let snap = st.snapshot();
        for (qtype, tcp) in [
            (rtype::SRV, false),
            (rtype::SRV, true),
            (rtype::A, false),
            (rtype::A, true),
        ] {
            let (a, msg) = ask(&opts, &snap, "big.ns.svc.cluster.local", qtype, tcp, &budget);
            let spent = budget.spent();
            budget.reset();
            assert_eq!(a, Answer::Records);
            let n = records(&msg, false).len();
            // Everything that fits, TC set unless all fit (4,000 A records do over TCP),
            // and the walk stopped there: about one step per record written, not one
            // per candidate (16,000).
            assert!(tc(&msg) || (qtype == rtype::A && n == 4000), "{qtype} tcp={tcp}: TC");
            assert!(msg.len() <= if tcp { 65535 } else { 512 }, "{}", msg.len());
            assert!(n > if tcp { 500 } else { 5 }, "{qtype} tcp={tcp}: {n} records");
            assert!(
                spent as usize <= 4 * n + 64,
                "{qtype} tcp={tcp}: {spent} steps for {n} records"
            );
            if qtype == rtype::SRV {
                // CoreDNS's weight counts every candidate: 100 / 16,000, at least 1.
                assert!(
                    records(&msg, false)[0].contains(" SRV 0 1 1 "),
                    "{:?}",
                    &records(&msg, false)[0]
                );
            }
        }
    }

    #[test]
    fn an_endpoint_name_is_found_through_the_slice_index() {
        let opts = options();
        let budget = Budget::new();
        let st = big_headless(5000, 1000, vec![port("http", "tcp", 80)], |i| {
            (i % 2 == 0).then(|| format!("web-{i}"))
        });
        let snap = st.snapshot();
        for (name, want) in [("web-4242", "10.0.16.146"), ("10-0-16-147", "10.0.16.147")] {
            let (a, msg) = ask(
                &opts,
                &snap,
                &format!("{name}.big.ns.svc.cluster.local"),
                rtype::A,
                false,
                &budget,
            );
            let spent = budget.spent();
            budget.reset();
            assert_eq!(a, Answer::Records);
            assert_eq!(records(&msg, false).len(), 1);
            assert!(records(&msg, false)[0].ends_with(want), "{:?}", records(&msg, false));
            // Five slices, each probed once: no walk over 5,000 endpoints.
            assert!(spent < 60, "{spent} steps");
        }
        let (a, _) = ask(
            &opts,
            &snap,
            "nobody.big.ns.svc.cluster.local",
            rtype::A,
            false,
            &budget,
        );
        assert_eq!(a, Answer::NameError);
    }

    #[test]
    fn a_pathological_service_runs_out_of_budget() {
        let opts = options();
        let budget = Budget::new();
        // 20,000 endpoints with one name: one SRV record, 20,000 duplicates to skip.
        let st = big_headless(20_000, 1000, vec![port("http", "tcp", 80)], |_| Some("same".into()));
        let snap = st.snapshot();
        let (a, _) = ask(&opts, &snap, "big.ns.svc.cluster.local", rtype::SRV, true, &budget);
        assert_eq!(a, Answer::OverBudget);
        assert_eq!(budget.spent(), Budget::RECORDS);
        budget.reset();
        // The plain address answer is prepared: it stops when full.
        let (a, msg) = ask(&opts, &snap, "big.ns.svc.cluster.local", rtype::A, true, &budget);
        assert_eq!(a, Answer::Records);
        assert!(tc(&msg));
    }

    #[test]
    fn a_port_list_is_read_once_per_query() {
        let opts = options();
        let budget = Budget::new();
        // A port-range service (media servers have such): 2,000 ports on 30 slices of
        // 100 endpoints that share the list; and one with the API's 20,000.
        let range: Vec<Port> = (0..2000).map(|i| port(&format!("p{i}"), "udp", 10_000 + i)).collect();
        let mut st = big_headless(3000, 100, range, |_| None);
        let huge: Vec<Port> = (0..20_000).map(|i| port(&format!("p{i}"), "udp", 20_000 + i)).collect();
        st.upsert(service(
            "huge",
            ServiceKind::Headless,
            &[],
            vec![port("http", "tcp", 80)],
        ));
        st.upsert(slice("huge", "huge-1", &[("10.8.0.1".into(), None)], huge));
        let snap = st.snapshot();
        let (a, msg) = ask(
            &opts,
            &snap,
            "_p1999._udp.big.ns.svc.cluster.local",
            rtype::SRV,
            true,
            &budget,
        );
        let spent = budget.spent();
        budget.reset();
        assert_eq!(a, Answer::Records);
        // 3,000 candidates (one port each): what fits, with TC.
        assert!(tc(&msg) && records(&msg, false).len() > 1000);
        assert!(
            records(&msg, false)[0].contains(" SRV 0 1 11999 "),
            "{:?}",
            records(&msg, false)[0]
        );
        // 2,000 ports read once, then about one step per endpoint and record.
        assert!(spent < 2000 + 4 * 3000, "{spent} steps");
        for (name, qtype) in [
            ("huge.ns.svc.cluster.local", rtype::A),
            ("huge.ns.svc.cluster.local", rtype::SRV),
            ("10-8-0-1.huge.ns.svc.cluster.local", rtype::SRV),
        ] {
            let (a, msg) = ask(&opts, &snap, name, qtype, true, &budget);
            let spent = budget.spent();
            budget.reset();
            assert_eq!(a, Answer::Records, "{name} {qtype}");
            assert!(tc(&msg) || qtype == rtype::A, "{name} {qtype}");
            assert!(spent < 5000, "{name} {qtype}: {spent} steps");
        }
        // A port asked for by name means reading the 20,000: more than the budget.
        let (a, _) = ask(
            &opts,
            &snap,
            "_p7._udp.huge.ns.svc.cluster.local",
            rtype::SRV,
            true,
            &budget,
        );
        assert_eq!(a, Answer::OverBudget);
    }

    #[test]
    fn ptr_of_a_shared_address_names_each_target_once_until_full() {
        let opts = options();
        let budget = Budget::new();
        // 3,000 endpoints of one address, named 0..1500 twice (two slices list them).
        let mut objs = vec![service(
            "shared",
            ServiceKind::Headless,
            &[],
            vec![port("http", "tcp", 80)],
        )];
        for s in 0..2 {
            let eps: Vec<(String, Option<String>)> = (0..1500)
                .map(|i| ("10.9.9.9".to_string(), Some(format!("h{i}"))))
                .collect();
            objs.push(slice(
                "shared",
                &format!("shared-{s}"),
                &eps,
                vec![port("http", "tcp", 80)],
            ));
        }
        // A cluster IP on the same address wins.
        let st = store(objs);
        let snap = st.snapshot();
        let (a, msg) = ask(&opts, &snap, "9.9.9.10.in-addr.arpa", rtype::PTR, true, &budget);
        let spent = budget.spent();
        budget.reset();
        assert_eq!(a, Answer::Records);
        let ptrs = records(&msg, false);
        let mut unique = ptrs.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ptrs.len(), "no target twice");
        assert!(
            ptrs[0].ends_with(" PTR h0.shared.ns.svc.cluster.local"),
            "{:?}",
            ptrs[0]
        );
        assert!(ptrs.len() == 1500 || (tc(&msg) && ptrs.len() > 1000), "{}", ptrs.len());
        assert!(spent as usize <= 2 * ptrs.len() + 16, "{spent}");
        let (_, msg) = ask(&opts, &snap, "9.9.9.10.in-addr.arpa", rtype::PTR, false, &budget);
        assert!(tc(&msg) && msg.len() <= 512);

        let mut st = st;
        st.upsert(service(
            "vip",
            ServiceKind::ClusterIp,
            &["10.9.9.9"],
            vec![port("http", "tcp", 80)],
        ));
        let snap = st.snapshot();
        let (_, msg) = ask(&opts, &snap, "9.9.9.10.in-addr.arpa", rtype::PTR, true, &budget);
        assert_eq!(
            records(&msg, false),
            ["9.9.9.10.in-addr.arpa PTR vip.ns.svc.cluster.local"]
        );
    }

    #[test]
    fn ns_names_each_service_once_with_its_addresses() {
        let mut opts = options();
        let budget = Budget::new();
        opts.local_ips = vec!["10.0.0.53".parse().unwrap(), "fd00::53".parse().unwrap()];
        let dns_eps = |a: &str| vec![(a.to_string(), None)];
        let st = store(vec![
            service(
                "kube-dns",
                ServiceKind::ClusterIp,
                &["10.96.0.10", "fd00::10"],
                vec![port("dns", "udp", 53)],
            ),
            slice(
                "kube-dns",
                "kube-dns-v4",
                &dns_eps("10.0.0.53"),
                vec![port("dns", "udp", 53)],
            ),
            slice(
                "kube-dns",
                "kube-dns-v6",
                &dns_eps("fd00::53"),
                vec![port("dns", "udp", 53)],
            ),
            service("hl", ServiceKind::Headless, &[], vec![port("dns", "udp", 53)]),
            slice(
                "hl",
                "hl-1",
                &[
                    ("10.0.0.53".to_string(), Some("me".to_string())),
                    ("10.0.0.54".to_string(), None),
                    ("10.0.0.53".to_string(), Some("me".to_string())),
                ],
                vec![port("dns", "udp", 53)],
            ),
        ]);
        let snap = st.snapshot();
        let (a, msg) = ask(&opts, &snap, "cluster.local", rtype::NS, true, &budget);
        assert_eq!(a, Answer::Records);
        assert_eq!(
            records(&msg, false),
            [
                "cluster.local NS kube-dns.ns.svc.cluster.local",
                "cluster.local NS me.hl.ns.svc.cluster.local",
            ]
        );
        assert_eq!(
            records(&msg, true),
            [
                "kube-dns.ns.svc.cluster.local A 10.96.0.10",
                "kube-dns.ns.svc.cluster.local AAAA fd00::10",
                "me.hl.ns.svc.cluster.local A 10.0.0.53",
                "me.hl.ns.svc.cluster.local A 10.0.0.54",
            ]
        );
        let (_, msg) = ask(&opts, &snap, "ns.dns.cluster.local", rtype::A, true, &budget);
        assert_eq!(
            records(&msg, false),
            [
                "ns.dns.cluster.local A 10.96.0.10",
                "ns.dns.cluster.local A 10.0.0.53",
                "ns.dns.cluster.local A 10.0.0.54",
            ]
        );
        // No endpoint holds a local address: `ns.dns` and the local addresses.
        let snap = store(vec![]).snapshot();
        let (_, msg) = ask(&opts, &snap, "cluster.local", rtype::NS, true, &budget);
        assert_eq!(records(&msg, false), ["cluster.local NS ns.dns.cluster.local"]);
        assert_eq!(
            records(&msg, true),
            ["ns.dns.cluster.local A 10.0.0.53", "ns.dns.cluster.local AAAA fd00::53"]
        );
    }

    #[test]
    fn ns_with_many_names_matches_the_reference() {
        let mut opts = options();
        let budget = Budget::new();
        opts.local_ips = vec!["10.0.0.53".parse().unwrap(), "10.0.0.54".parse().unwrap()];
        // 20 headless services whose slices hold the local addresses among others (some
        // twice, some shared), and two ClusterIP ones: over the set's inline size.
        let mut objs = Vec::new();
        let mut want_names = Vec::new();
        let mut want_glue: Vec<(String, Vec<String>)> = Vec::new();
        for k in 0..20 {
            let svc = format!("h{k}");
            objs.push(service(&svc, ServiceKind::Headless, &[], vec![port("dns", "udp", 53)]));
            let eps: Vec<(String, Option<String>)> = vec![
                (format!("10.2.{k}.1"), None),
                ("10.0.0.53".into(), Some("me".into())),
                (format!("10.2.{}.1", k / 2), None),
                ("10.0.0.53".into(), Some("me".into())),
            ];
            objs.push(slice(&svc, &format!("{svc}-a"), &eps, vec![port("dns", "udp", 53)]));
            let mut ips = Vec::new();
            for (a, _) in &eps {
                if !ips.contains(a) {
                    ips.push(a.clone());
                }
            }
            want_names.push(format!("me.{svc}.ns.svc.cluster.local"));
            want_glue.push((format!("me.{svc}.ns.svc.cluster.local"), ips));
        }
        for k in 0..2 {
            let svc = format!("c{k}");
            objs.push(service(
                &svc,
                ServiceKind::ClusterIp,
                &[&format!("10.96.1.{k}")],
                vec![port("dns", "udp", 53)],
            ));
            objs.push(slice(
                &svc,
                &format!("{svc}-a"),
                &[("10.0.0.54".into(), None)],
                vec![port("dns", "udp", 53)],
            ));
            want_names.push(format!("{svc}.ns.svc.cluster.local"));
            want_glue.push((format!("{svc}.ns.svc.cluster.local"), vec![format!("10.96.1.{k}")]));
        }
        let snap = store(objs).snapshot();
        let (a, msg) = ask(&opts, &snap, "cluster.local", rtype::NS, true, &budget);
        assert_eq!(a, Answer::Records);
        // The owners of one address are kept in the order they were added (slices by
        // key), so compare as sets of names, and each name's addresses in order.
        let mut got: Vec<String> = records(&msg, false)
            .iter()
            .map(|r| r.rsplit(' ').next().unwrap().to_string())
            .collect();
        let mut want = want_names.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        let glue = records(&msg, true);
        for (name, ips) in &want_glue {
            let of_name: Vec<String> = glue
                .iter()
                .filter(|r| r.starts_with(&format!("{name} ")))
                .map(|r| r.rsplit(' ').next().unwrap().to_string())
                .collect();
            assert_eq!(&of_name, ips, "{name}");
        }
        assert_eq!(glue.len(), want_glue.iter().map(|g| g.1.len()).sum::<usize>());
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
