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
//!
//! The files follow CoreDNS's split of the plugin: [`parse`] (the query name's
//! grammar), [`lookup`] (services, endpoints and pods for a name), [`address`] (A and
//! AAAA), [`external`] (ExternalName: CNAME and the chase), [`srv`], [`reverse`]
//! (PTR), [`ns`] (the apex NS set and `ns.dns`); this file dispatches on the type and
//! holds what they share.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;

use super::seen::{Seen, hash_words};
use super::setup::Options;
use crate::chain::Budget;
use crate::dns::{Name, NameKey, PushError, Rdata, Record, Request, Response, Section, Zone, rtype};
use crate::kubernetes::snapshot::{ServiceEntry, Snapshot};

mod address;
mod external;
mod lookup;
pub mod metadata;
mod ns;
mod parse;
mod reverse;
mod srv;

use lookup::{MATCHED_KEPT, Matched};
use parse::{NameError, parse};
pub use reverse::reverse_address;

thread_local! {
    /// The pairs written so far by this thread's current answer.
    static SEEN: RefCell<Seen> = const { RefCell::new(Seen::new()) };
}

/// The schema version of the Kubernetes DNS specification served (`dns-version`).
pub const SCHEMA_VERSION: &[u8] = b"1.1.0";
const SCHEMA_TTL: u32 = 28800;

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
        let zone = opts.zones.iter().find(|z| z.contains(&req.qname))?;
        let before = zone.labels_before(&req.qname)?;
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

    fn ttl(&self) -> u32 {
        self.opts.ttl
    }

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
}

#[cfg(test)]
mod tests {
    use super::parse::{Sel, pod_ip_text};
    use super::reverse::reverse_address;
    use super::*;
    use crate::kubernetes::model::ServiceKind;

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
        let zones = [Zone::new("cluster.local.").unwrap()];
        let ctx = crate::setup::SetupCtx {
            zones: &zones,
            config_dir: "/".into(),
            workers: 1,
            binds: None,
            process: &crate::process::ProcessState::new(),
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
            external_ips: Vec::new(),
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
                                ip: sl.eps.addr(e),
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
