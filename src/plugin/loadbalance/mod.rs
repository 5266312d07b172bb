//! `loadbalance`: shuffles the address records of every successful reply, as CoreDNS's
//! plugin of that name does with its `round_robin` policy, and optionally puts the
//! addresses of preferred subnets first (README.md beside this file).
//!
//! ```text
//!   later plugins write and finish the reply
//!        │
//!        ▼  on_response, per section (answer, authority, additional):
//!   order = CNAME… rest… A/AAAA (shuffled)… MX (shuffled)…
//!           with `prefer`, in answer and additional: CNAME… A/AAAA (preferred first)… MX… rest…
//!        │
//!        ▼  Response::reorder_records: the records' bytes move in place, unless a
//!           compression pointer leads into one that would move (then the section stays)
//! ```
//!
//! The order is built in a per-thread scratch kept from query to query, so shuffling
//! allocates nothing once warm.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::chain::{Handler, Query, Rng, Step};
use crate::config::{ConfigError, Directive};
use crate::dns::{Rcode, RecordPos, Section, rtype};
use crate::setup::{Plugin, SetupCtx};

/// The directive name, and the prefix of its errors.
const NAME: &str = "loadbalance";

/// The plugin: the subnets whose addresses go first, in the order given.
pub struct LoadBalance {
    prefer: Box<[Subnet]>,
}

/// A `prefer` prefix, with the host bits cleared (Go's `net.ParseCIDR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Subnet {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
}

impl Subnet {
    /// Parses `ADDR/LEN`; the error is Go's, which CoreDNS prints.
    fn parse(s: &str) -> Result<Subnet, String> {
        let bad = || format!("invalid CIDR address: {s}");
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let len: u32 = len.parse().map_err(|_| bad())?;
        match addr.parse::<IpAddr>().map_err(|_| bad())? {
            IpAddr::V4(ip) if len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                Ok(Subnet::V4 {
                    net: u32::from(ip) & mask,
                    mask,
                })
            }
            IpAddr::V6(ip) if len <= 128 => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                Ok(Subnet::V6 {
                    net: u128::from(ip) & mask,
                    mask,
                })
            }
            _ => Err(bad()),
        }
    }

    /// Whether `ip` is inside. As in Go, an IPv4-mapped IPv6 address counts as IPv4:
    /// it matches IPv4 prefixes and no IPv6 prefix.
    fn contains(self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self, ip) {
            (Subnet::V4 { net, mask }, IpAddr::V4(ip)) => u32::from(ip) & mask == net,
            (Subnet::V6 { net, mask }, IpAddr::V6(ip)) => u128::from(ip) & mask == net,
            _ => false,
        }
    }
}

/// `loadbalance [round_robin] { prefer CIDR... }`. As in CoreDNS every `loadbalance`
/// line of the block counts, and their `prefer` lists add up.
pub fn setup(dirs: &[&Directive], _: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    Ok(Plugin::handler(LoadBalance::from_directives(dirs)?))
}

impl LoadBalance {
    fn from_directives(dirs: &[&Directive]) -> Result<LoadBalance, ConfigError> {
        let mut prefer = Vec::new();
        for d in dirs {
            prefer.extend(parse(d)?);
        }
        Ok(LoadBalance {
            prefer: prefer.into_boxed_slice(),
        })
    }
}

/// One `loadbalance` line: its policy and the subnets of its `prefer` lines.
fn parse(d: &Directive) -> Result<Vec<Subnet>, ConfigError> {
    match d.arg_strs().as_slice() {
        [] | ["round_robin"] => {}
        ["round_robin", ..] => return Err(d.err(NAME, "unknown property for round_robin")),
        ["weighted", ..] => return Err(d.err(NAME, "the weighted policy is not supported by clusterdns")),
        [other, ..] => return Err(d.err(NAME, format!("unknown policy: {other}"))),
    }
    let mut prefer = Vec::new();
    for opt in d.options() {
        opt.expect_no_block(NAME)?;
        match opt.name.as_str() {
            // CoreDNS accepts `prefer` without arguments (it prefers nothing).
            "prefer" => {
                for cidr in &opt.args {
                    let subnet = Subnet::parse(&cidr.text).map_err(|e| {
                        ConfigError::at(&cidr.loc, format!("{NAME}: invalid CIDR \"{}\": {e}", cidr.text))
                    })?;
                    prefer.push(subnet);
                }
            }
            other => return Err(opt.err(NAME, format!("unknown property '{other}'"))),
        }
    }
    Ok(prefer)
}

/// What the ordering of one section needs, reused from query to query on each thread.
struct Scratch {
    /// The new order of the section's records (indices into the section).
    order: Vec<u16>,
    /// Per address record, the index of the first preferred subnet holding it.
    ranks: Vec<u16>,
    /// A copy of the section while its bytes are rewritten.
    bytes: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            order: Vec::new(),
            ranks: Vec::new(),
            bytes: Vec::new(),
        })
    };
}

/// Where each kind of record goes in a shuffled section: CoreDNS's `round_robin`
/// puts CNAMEs first (glibc's stub resolver needs them before the addresses), then
/// everything else in its order, then the addresses, then MX.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    Cname,
    Rest,
    Address,
    Mx,
}

impl Group {
    const ORDER: [Group; 4] = [Group::Cname, Group::Rest, Group::Address, Group::Mx];

    fn of(rtype: u16) -> Group {
        match rtype {
            rtype::CNAME => Group::Cname,
            rtype::A | rtype::AAAA => Group::Address,
            rtype::MX => Group::Mx,
            _ => Group::Rest,
        }
    }
}

impl Handler for LoadBalance {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The plugin only changes replies on their way out.
    fn serve(&self, _: &mut Query<'_, '_>) -> Step {
        Step::Next
    }

    fn wants_response(&self) -> bool {
        true
    }

    /// Shuffles each section of a NOERROR reply that is not a zone transfer (CoreDNS
    /// leaves those alone).
    fn on_response(&self, q: &mut Query<'_, '_>) {
        if q.resp.rcode() != Rcode::NOERROR || matches!(q.req.qtype, rtype::AXFR | rtype::IXFR) {
            return;
        }
        SCRATCH.with_borrow_mut(|s| {
            for section in [Section::Answer, Section::Authority, Section::Additional] {
                let records = q.resp.records();
                let first = records.partition_point(|p| p.section < section);
                let n = records[first..].partition_point(|p| p.section == section);
                if n < 2 || n > usize::from(u16::MAX) {
                    continue;
                }
                let recs = &records[first..first + n];
                // CoreDNS applies `prefer` to the answer and additional sections only.
                let prefer = if section == Section::Authority {
                    &[][..]
                } else {
                    &self.prefer[..]
                };
                plan(
                    recs,
                    q.resp.bytes(),
                    prefer,
                    &mut q.worker.rng,
                    &mut s.order,
                    &mut s.ranks,
                );
                let unchanged = s.order.iter().enumerate().all(|(k, &j)| usize::from(j) == k);
                if !unchanged {
                    // Refused only when a name points into a record that would move
                    // (rare: our writer points names at the question or at records
                    // that stay); the section then keeps its order.
                    q.resp.reorder_records(first, &s.order, &mut s.bytes);
                }
            }
        });
    }
}

/// Writes into `order` the new order of the section `recs` (indices into it):
/// grouped as [`Group::ORDER`] says, addresses and MX shuffled uniformly; with
/// `prefer`, then regrouped as CoreDNS's `prefer` does (CNAME, addresses with those in
/// the first matching subnet first, MX, the rest).
fn plan(recs: &[RecordPos], msg: &[u8], prefer: &[Subnet], rng: &mut Rng, order: &mut Vec<u16>, ranks: &mut Vec<u16>) {
    order.clear();
    let mut bounds = [0usize; 5];
    for (g, group) in Group::ORDER.into_iter().enumerate() {
        bounds[g] = order.len();
        order.extend((0..recs.len() as u16).filter(|&j| Group::of(recs[usize::from(j)].rtype) == group));
    }
    bounds[4] = order.len();
    let (addr, mx) = (bounds[2]..bounds[3], bounds[3]..bounds[4]);
    shuffle(&mut order[addr.clone()], rng);
    shuffle(&mut order[mx], rng);
    if prefer.is_empty() {
        return;
    }
    // The rest moves behind MX; the addresses now start right after the CNAMEs.
    let rest_len = bounds[2] - bounds[1];
    order[bounds[1]..].rotate_left(rest_len);
    let addr = bounds[1]..bounds[1] + addr.len();
    ranks.clear();
    ranks.extend(order[addr.clone()].iter().map(|&j| {
        address_of(&recs[usize::from(j)], msg)
            .and_then(|ip| prefer.iter().position(|s| s.contains(ip)))
            .map_or(prefer.len() as u16, |i| i as u16)
    }));
    // A stable sort by rank: one pass per rank present, smallest first, appending to
    // the end of `order`, then copied back over the addresses.
    let end = order.len();
    let mut rank = ranks.iter().copied().min();
    while let Some(r) = rank {
        for (i, &k) in ranks.iter().enumerate() {
            if k == r {
                order.push(order[addr.start + i]);
            }
        }
        rank = ranks.iter().copied().filter(|&k| k > r).min();
    }
    order.copy_within(end.., addr.start);
    order.truncate(end);
}

/// Fisher-Yates with the worker's generator: every permutation equally likely.
fn shuffle(items: &mut [u16], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}

/// The address an A or AAAA record carries, from its rdata in `msg`.
fn address_of(p: &RecordPos, msg: &[u8]) -> Option<IpAddr> {
    let rdata = msg.get(p.ttl_at as usize + 6..p.end as usize)?;
    match (p.rtype, rdata.len()) {
        (rtype::A, 4) => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(rdata).ok()?))),
        (rtype::AAAA, 16) => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(rdata).ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use domain::base::{Message, ParsedName};
    use domain::rdata::AllRecordData;

    use super::*;
    use crate::chain::{RouteTag, WorkerCtx};
    use crate::dns::{Name, Rdata, Record, Request, Response, Transport};

    fn build(corefile: &str) -> Result<LoadBalance, ConfigError> {
        let parsed = crate::config::parse_str(corefile, "Corefile", Path::new("/nonexistent"))?;
        let dirs: Vec<&Directive> = parsed.blocks[0]
            .directives
            .iter()
            .filter(|d| d.name.text == NAME)
            .collect();
        let zones = [crate::dns::Zone::new(".").unwrap()];
        let ctx = SetupCtx {
            zones: &zones,
            config_dir: "/nonexistent".into(),
            workers: 1,
            binds: None,
            process: &crate::process::ProcessState::new(),
        };
        setup(&dirs, &ctx)?;
        LoadBalance::from_directives(&dirs)
    }

    fn error(corefile: &str) -> String {
        match build(corefile) {
            Ok(_) => panic!("no error for {corefile}"),
            Err(e) => e.to_string(),
        }
    }

    fn v4(s: &str) -> Subnet {
        Subnet::parse(s).unwrap()
    }

    #[test]
    fn setup_takes_round_robin_and_prefer() {
        assert!(build(". {\n    loadbalance\n}\n").unwrap().prefer.is_empty());
        assert!(
            build(". {\n    loadbalance round_robin\n}\n")
                .unwrap()
                .prefer
                .is_empty()
        );
        let lb = build(". {\n    loadbalance round_robin {\n        prefer 10.9.20.0/24 192.168.1.7/16\n        prefer fd00::/8\n    }\n}\n").unwrap();
        assert_eq!(
            &*lb.prefer,
            &[
                Subnet::V4 {
                    net: 0x0A09_1400,
                    mask: 0xFFFF_FF00
                },
                // Host bits are cleared, as Go's ParseCIDR does.
                Subnet::V4 {
                    net: 0xC0A8_0000,
                    mask: 0xFFFF_0000
                },
                Subnet::V6 {
                    net: 0xFD << 120,
                    mask: 0xFF << 120
                },
            ]
        );
        // `prefer` with nothing after it prefers nothing; every line of the block counts.
        let lb = build(
            ". {\n    loadbalance {\n        prefer\n    }\n    loadbalance {\n        prefer 10.0.0.0/8\n    }\n}\n",
        )
        .unwrap();
        assert_eq!(&*lb.prefer, &[v4("10.0.0.0/8")]);
    }

    #[test]
    fn setup_errors_name_file_and_line() {
        let cases = [
            (
                ". {\n    loadbalance round_robin extra\n}\n",
                "Corefile:2 - loadbalance: unknown property for round_robin",
            ),
            (
                ". {\n    loadbalance weighted ./weights\n}\n",
                "Corefile:2 - loadbalance: the weighted policy is not supported by clusterdns",
            ),
            (
                ". {\n    loadbalance random\n}\n",
                "Corefile:2 - loadbalance: unknown policy: random",
            ),
            (
                ". {\n    loadbalance {\n        prefer 10.0.0.0/33\n    }\n}\n",
                "Corefile:3 - loadbalance: invalid CIDR \"10.0.0.0/33\": invalid CIDR address: 10.0.0.0/33",
            ),
            (
                ". {\n    loadbalance {\n        prefer 10.0.0.0/8\n        prefer 10.0.0.1\n    }\n}\n",
                "Corefile:4 - loadbalance: invalid CIDR \"10.0.0.1\": invalid CIDR address: 10.0.0.1",
            ),
            (
                ". {\n    loadbalance {\n        prefer 10.0.0.0/x\n    }\n}\n",
                "Corefile:3 - loadbalance: invalid CIDR \"10.0.0.0/x\": invalid CIDR address: 10.0.0.0/x",
            ),
            (
                ". {\n    loadbalance {\n        reload 10s\n    }\n}\n",
                "Corefile:3 - loadbalance: unknown property 'reload'",
            ),
        ];
        for (corefile, want) in cases {
            assert_eq!(error(corefile), want, "{corefile}");
        }
    }

    #[test]
    fn subnets_match_like_go() {
        let v4net = v4("10.1.0.0/16");
        let v6net = v4("fd00:1::/32");
        assert!(v4net.contains("10.1.200.3".parse().unwrap()));
        assert!(!v4net.contains("10.2.0.1".parse().unwrap()));
        // An IPv4-mapped address is IPv4 for Go's IPNet.Contains.
        assert!(v4net.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!v4("::ffff:10.1.0.0/112").contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(v6net.contains("fd00:1:ffff::1".parse().unwrap()));
        assert!(!v6net.contains("10.1.0.1".parse().unwrap()));
        assert!(v4("0.0.0.0/0").contains("192.0.2.1".parse().unwrap()));
        assert!(v4("::/0").contains("2001:db8::1".parse().unwrap()));
    }

    // --- shuffling -----------------------------------------------------------------

    /// `name` as wire bytes, spelled as given.
    fn wire(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        crate::dns::QueryBuilder::new(&wire(name), qtype).id(0x1234).to_vec()
    }

    fn a(last: u8) -> Record<'static> {
        Record::at_question(rtype::A, 30, Rdata::A(Ipv4Addr::new(10, 0, 0, last)))
    }

    fn a_ip(ip: &str) -> Record<'static> {
        Record::at_question(rtype::A, 30, Rdata::A(ip.parse().unwrap()))
    }

    fn aaaa(ip: &str) -> Record<'static> {
        Record::at_question(rtype::AAAA, 30, Rdata::Aaaa(ip.parse().unwrap()))
    }

    /// An MX with an uncompressed exchange (raw rdata carries no pointers).
    fn mx(rdata: &'static [u8]) -> Record<'static> {
        Record::at_question(rtype::MX, 30, Rdata::Raw(rdata))
    }

    fn txt(text: &'static [u8]) -> Record<'static> {
        Record::at_question(rtype::TXT, 30, Rdata::Txt(text))
    }

    fn cname(target: &'static [u8]) -> Record<'static> {
        Record::at_question(rtype::CNAME, 30, Rdata::Name(Name::wire(target)))
    }

    /// A reply's records, section by section, as `owner ttl class type data` lines.
    fn sections(reply: &[u8]) -> [Vec<String>; 3] {
        let msg = Message::from_octets(reply).unwrap();
        let list = |sec: domain::base::RecordSection<'_, &[u8]>| -> Vec<String> {
            sec.map(|rr| {
                let rr = rr
                    .unwrap()
                    .into_any_record::<AllRecordData<_, ParsedName<_>>>()
                    .unwrap();
                rr.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .filter(|l| !l.contains(" OPT "))
            .collect()
        };
        let answer = msg.answer().unwrap();
        let authority = msg.authority().unwrap();
        let additional = msg.additional().unwrap();
        [list(answer), list(authority), list(additional)]
    }

    /// The record type column of each line.
    fn types(lines: &[String]) -> Vec<&str> {
        lines.iter().map(|l| l.split(' ').nth(3).unwrap()).collect()
    }

    /// A worker, a request and a response for `raw`, reused by the closure as often
    /// as it likes.
    struct Bench {
        raw: Vec<u8>,
        resp: Response,
        worker: WorkerCtx,
        tag: RouteTag,
    }

    impl Bench {
        fn new(raw: Vec<u8>) -> Bench {
            Bench {
                raw,
                resp: Response::new(),
                worker: WorkerCtx::new(0),
                tag: RouteTag {
                    slot: 0,
                    server: "dns://:53".into(),
                    zone: ".".into(),
                },
            }
        }

        /// Writes a reply with `write`, finishes it, runs `lb` on it; the reply bytes.
        fn run(&mut self, lb: &LoadBalance, rcode: Rcode, write: &dyn Fn(&mut Response)) -> Vec<u8> {
            let a = "127.0.0.1:1".parse().unwrap();
            let req = Request::parse(&self.raw, Transport::Udp, a, a).ok().unwrap();
            self.resp.start(&req, rcode);
            write(&mut self.resp);
            self.resp.finish();
            let mut q = Query {
                req: &req,
                resp: &mut self.resp,
                worker: &mut self.worker,
                route: &self.tag,
                answered_by: "test",
                error: None,
                refresh: false,
                coalesce: true,
                meta: crate::chain::Metadata::NONE,
            };
            lb.on_response(&mut q);
            self.check_positions();
            self.resp.bytes().to_vec()
        }

        /// The record positions still describe the bytes after a reorder.
        fn check_positions(&self) {
            let msg = self.resp.bytes();
            for p in self.resp.records() {
                let name_end = wire::skip_name(msg, p.start as usize).unwrap();
                assert_eq!(wire::get_u16(msg, name_end), Some(p.rtype));
                assert_eq!(p.ttl_at as usize, name_end + 4);
                assert_eq!(wire::skip_record(msg, p.start as usize), Some(p.end as usize));
            }
        }
    }

    fn round_robin() -> LoadBalance {
        LoadBalance { prefer: Box::new([]) }
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    use crate::dns::wire;

    /// The reply `write` makes, unshuffled.
    fn unshuffled(raw: &[u8], rcode: Rcode, write: &dyn Fn(&mut Response)) -> Vec<u8> {
        let a = "127.0.0.1:1".parse().unwrap();
        let req = Request::parse(raw, Transport::Udp, a, a).ok().unwrap();
        let mut r = Response::new();
        r.start(&req, rcode);
        write(&mut r);
        r.finish().to_vec()
    }

    #[test]
    fn shuffles_addresses_and_mx_and_keeps_cname_first() {
        let lb = round_robin();
        let mut b = Bench::new(query("web.example.", rtype::A));
        let write = |r: &mut Response| {
            r.answer(a(1));
            r.answer(mx(b"\x00\x0a\x04mail\x07example\x00"));
            r.answer(aaaa("fd00::1"));
            r.answer(cname(b"\x02lb\x07example\x00"));
            r.answer(txt(b"hello"));
            r.answer(a(2));
            r.answer(mx(b"\x00\x14\x05mail2\x07example\x00"));
            r.answer(a(3));
        };
        let plain = sections(&unshuffled(&b.raw, Rcode::NOERROR, &write));
        let mut address_orders = BTreeSet::new();
        let mut mx_orders = BTreeSet::new();
        for _ in 0..300 {
            let out = b.run(&lb, Rcode::NOERROR, &write);
            let [answer, authority, additional] = sections(&out);
            assert_eq!(sorted(answer.clone()), sorted(plain[0].clone()));
            assert!(authority.is_empty() && additional.is_empty());
            // CoreDNS's round_robin: CNAME, the rest, the addresses, MX.
            let t = types(&answer);
            assert_eq!(t[..2], ["CNAME", "TXT"], "{answer:?}");
            assert!(t[2..6].iter().all(|t| *t == "A" || *t == "AAAA"), "{answer:?}");
            assert_eq!(t[6..], ["MX", "MX"], "{answer:?}");
            address_orders.insert(answer[2..6].to_vec());
            mx_orders.insert(answer[6..].to_vec());
        }
        // 4! orders of the addresses, 2 of the MX records.
        assert_eq!(address_orders.len(), 24);
        assert_eq!(mx_orders.len(), 2);
    }

    #[test]
    fn every_order_of_three_addresses_appears() {
        let lb = round_robin();
        let mut b = Bench::new(query("web.example.", rtype::A));
        let write = |r: &mut Response| {
            r.answer(a(1));
            r.answer(a(2));
            r.answer(a(3));
        };
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            let [answer, ..] = sections(&b.run(&lb, Rcode::NOERROR, &write));
            assert_eq!(answer.len(), 3);
            seen.insert(answer);
        }
        assert_eq!(seen.len(), 6, "{seen:?}");
    }

    #[test]
    fn every_section_is_shuffled_on_its_own() {
        let lb = round_robin();
        let mut b = Bench::new(query("example.", rtype::NS));
        // Delegation-style: NS in the answer, glue in additional pointing at the NS
        // targets (which do not move: NS is not shuffled).
        let ns = |t: &'static [u8]| Record::at_question(rtype::NS, 30, Rdata::Name(Name::wire(t)));
        let glue = |owner: &'static [u8], last: u8| Record {
            owner: Name::wire(owner),
            rtype: rtype::A,
            ttl: 30,
            data: Rdata::A(Ipv4Addr::new(192, 0, 2, last)),
        };
        let write = |r: &mut Response| {
            r.answer(ns(b"\x03ns1\x07example\x00"));
            r.answer(ns(b"\x03ns2\x07example\x00"));
            r.authority(a(7));
            r.authority(a(8));
            r.additional(glue(b"\x03ns1\x07example\x00", 1));
            r.additional(glue(b"\x03ns1\x07example\x00", 2));
            r.additional(glue(b"\x03ns2\x07example\x00", 3));
        };
        let plain = sections(&unshuffled(&b.raw, Rcode::NOERROR, &write));
        let (mut authority_orders, mut additional_orders) = (BTreeSet::new(), BTreeSet::new());
        for _ in 0..200 {
            let out = sections(&b.run(&lb, Rcode::NOERROR, &write));
            assert_eq!(out[0], plain[0]);
            assert_eq!(sorted(out[1].clone()), sorted(plain[1].clone()));
            assert_eq!(sorted(out[2].clone()), sorted(plain[2].clone()));
            authority_orders.insert(out[1].clone());
            additional_orders.insert(out[2].clone());
        }
        assert_eq!(authority_orders.len(), 2);
        assert_eq!(additional_orders.len(), 6);
    }

    #[test]
    fn prefer_puts_matching_addresses_first() {
        let lb = build(". {\n    loadbalance {\n        prefer 10.1.0.0/16 fd00:1::/32\n    }\n}\n").unwrap();
        let mut b = Bench::new(query("web.example.", rtype::A));
        let write = |r: &mut Response| {
            r.answer(txt(b"first"));
            r.answer(a_ip("10.0.0.1"));
            r.answer(aaaa("fd00:1::1"));
            r.answer(a_ip("10.1.0.1"));
            r.answer(cname(b"\x02lb\x07example\x00"));
            r.answer(a_ip("10.2.0.1"));
            r.answer(a_ip("10.1.0.2"));
            r.answer(mx(b"\x00\x0a\x04mail\x07example\x00"));
            r.authority(a_ip("10.0.0.9"));
            r.authority(a_ip("10.1.0.9"));
            r.authority(txt(b"ns"));
        };
        let plain = sections(&unshuffled(&b.raw, Rcode::NOERROR, &write));
        let ip = |line: &String| line.rsplit(' ').next().unwrap().to_owned();
        let (mut preferred_orders, mut rest_orders, mut authority_firsts) =
            (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for _ in 0..200 {
            let [answer, authority, _] = sections(&b.run(&lb, Rcode::NOERROR, &write));
            assert_eq!(sorted(answer.clone()), sorted(plain[0].clone()));
            // CoreDNS's prefer: CNAME, addresses (preferred subnets first, in the order
            // of the subnets), MX, the rest.
            let t = types(&answer);
            assert_eq!(t[0], "CNAME");
            assert_eq!(t[6..], ["MX", "TXT"], "{answer:?}");
            let ips: Vec<String> = answer[1..6].iter().map(ip).collect();
            let mut first_two = ips[..2].to_vec();
            first_two.sort();
            assert_eq!(first_two, ["10.1.0.1", "10.1.0.2"], "{answer:?}");
            assert_eq!(ips[2], "fd00:1::1", "{answer:?}");
            preferred_orders.insert(ips[..2].to_vec());
            rest_orders.insert(ips[3..].to_vec());
            // The authority section is shuffled but not regrouped by `prefer`.
            assert_eq!(types(&authority), ["TXT", "A", "A"]);
            authority_firsts.insert(ip(&authority[1]));
        }
        // Preferred addresses keep the shuffled order among themselves.
        assert_eq!(preferred_orders.len(), 2);
        assert_eq!(rest_orders.len(), 2);
        assert_eq!(authority_firsts.len(), 2);
    }

    #[test]
    fn only_successful_replies_that_are_not_transfers_change() {
        let lb = round_robin();
        let write = |r: &mut Response| {
            for i in 1..=5 {
                r.additional(a(i));
            }
        };
        for (qtype, rcode) in [
            (rtype::A, Rcode::NXDOMAIN),
            (rtype::A, Rcode::SERVFAIL),
            (rtype::A, Rcode::REFUSED),
            (rtype::AXFR, Rcode::NOERROR),
            (rtype::IXFR, Rcode::NOERROR),
        ] {
            let mut b = Bench::new(query("web.example.", qtype));
            let plain = unshuffled(&b.raw, rcode, &write);
            for _ in 0..50 {
                assert_eq!(b.run(&lb, rcode, &write), plain, "{qtype} {rcode:?}");
            }
        }
    }

    #[test]
    fn a_section_with_a_pointer_into_a_moving_record_stays() {
        let lb = round_robin();
        let mut b = Bench::new(query("WEB.example.", rtype::A));
        // Owners spelled unlike the question: the first is written out, the others
        // point into it, so moving it would break them.
        let owned = |last: u8| Record {
            owner: Name::wire(b"\x03web\x07example\x00"),
            rtype: rtype::A,
            ttl: 30,
            data: Rdata::A(Ipv4Addr::new(10, 0, 0, last)),
        };
        let write = |r: &mut Response| {
            r.answer(owned(1));
            r.answer(owned(2));
            r.answer(owned(3));
            // The additional section is independent and still shuffled.
            r.additional(a(4));
            r.additional(a(5));
        };
        let plain = unshuffled(&b.raw, Rcode::NOERROR, &write);
        let plain_sections = sections(&plain);
        b.run(&lb, Rcode::NOERROR, &write);
        let first = b.resp.records()[0];
        let (first_start, first_end) = (first.start as usize, first.end as usize);
        let (mut answer_orders, mut additional_orders) = (BTreeSet::new(), BTreeSet::new());
        for _ in 0..200 {
            let out = b.run(&lb, Rcode::NOERROR, &write);
            let s = sections(&out);
            // Any order that would move the first record is refused; the other two,
            // pointing into it, may still swap.
            assert_eq!(out[first_start..first_end], plain[first_start..first_end]);
            assert_eq!(s[0][0], plain_sections[0][0]);
            assert_eq!(sorted(s[0].clone()), sorted(plain_sections[0].clone()));
            answer_orders.insert(s[0].clone());
            additional_orders.insert(s[2].clone());
        }
        assert_eq!(answer_orders.len(), 2);
        assert_eq!(additional_orders.len(), 2);
    }

    #[test]
    fn a_section_whose_every_reorder_breaks_a_pointer_is_left_alone() {
        let lb = round_robin();
        let mut b = Bench::new(query("WEB.example.", rtype::A));
        // Each owner points into the one before: every record but the last is a target.
        let chained = |owner: &'static [u8], last: u8| Record {
            owner: Name::wire(owner),
            rtype: rtype::A,
            ttl: 30,
            data: Rdata::A(Ipv4Addr::new(10, 0, 0, last)),
        };
        let write = |r: &mut Response| {
            r.answer(chained(b"\x07example\x00", 1));
            r.answer(chained(b"\x01b\x07example\x00", 2));
            r.answer(chained(b"\x01a\x01b\x07example\x00", 3));
        };
        let plain = unshuffled(&b.raw, Rcode::NOERROR, &write);
        // The first owner is a pointer to the question's `example.`; the second writes
        // `b` and points there too; the third writes `a` and points into the second.
        // The second (18 bytes) keeps its place only behind the first (16 bytes), so
        // every other order would break the third's owner: the section stays.
        for _ in 0..200 {
            assert_eq!(b.run(&lb, Rcode::NOERROR, &write), plain);
        }
    }

    #[test]
    fn pointers_from_rdata_in_later_sections_count() {
        let lb = round_robin();
        let mut b = Bench::new(query("WEB.example.", rtype::A));
        let write = |r: &mut Response| {
            r.answer(a(1));
            r.answer(a(2));
            // Spelled unlike the question: written out, and the NS below points here.
            r.answer(Record {
                owner: Name::wire(b"\x03web\x07example\x00"),
                rtype: rtype::A,
                ttl: 30,
                data: Rdata::A(Ipv4Addr::new(10, 0, 0, 3)),
            });
            r.authority(Record::at_question(
                rtype::NS,
                30,
                Rdata::Name(Name::wire(b"\x03web\x07example\x00")),
            ));
        };
        let plain = sections(&unshuffled(&b.raw, Rcode::NOERROR, &write));
        let mut orders = BTreeSet::new();
        for _ in 0..200 {
            let out = sections(&b.run(&lb, Rcode::NOERROR, &write));
            // The third record (20 bytes, behind two of 16) may not move; the NS still
            // reads `web.example.`.
            assert_eq!(out[0][2], plain[0][2]);
            assert_eq!(out[1], plain[1]);
            orders.insert(out[0].clone());
        }
        assert_eq!(orders.len(), 2, "{orders:?}");
    }

    #[test]
    fn pointers_into_records_that_stay_do_not_stop_the_shuffle() {
        let lb = round_robin();
        let mut b = Bench::new(query("web.example.", rtype::A));
        // The A owners point into the CNAME's target, which stays first.
        let at_target = |last: u8| Record {
            owner: Name::wire(b"\x02lb\x03cdn\x03net\x00"),
            rtype: rtype::A,
            ttl: 30,
            data: Rdata::A(Ipv4Addr::new(10, 0, 0, last)),
        };
        let write = |r: &mut Response| {
            r.answer(cname(b"\x02lb\x03cdn\x03net\x00"));
            r.answer(at_target(1));
            r.answer(at_target(2));
            r.answer(at_target(3));
        };
        let plain = sections(&unshuffled(&b.raw, Rcode::NOERROR, &write));
        let mut orders = BTreeSet::new();
        for _ in 0..200 {
            let [answer, ..] = sections(&b.run(&lb, Rcode::NOERROR, &write));
            assert_eq!(answer[0], plain[0][0]);
            assert_eq!(sorted(answer.clone()), sorted(plain[0].clone()));
            orders.insert(answer);
        }
        assert_eq!(orders.len(), 6);
    }

    #[test]
    fn counts_and_length_do_not_change() {
        let lb = round_robin();
        let mut b = Bench::new(query("web.example.", rtype::A));
        let write = |r: &mut Response| {
            r.answer(aaaa("fd00::1"));
            r.answer(a(1));
            r.answer(aaaa("fd00::2"));
            r.answer(a(2));
        };
        let plain = unshuffled(&b.raw, Rcode::NOERROR, &write);
        for _ in 0..50 {
            let out = b.run(&lb, Rcode::NOERROR, &write);
            assert_eq!(out.len(), plain.len());
            assert_eq!(out[..12], plain[..12]);
        }
    }

    #[test]
    fn shuffling_does_not_allocate_once_warm() {
        // The lib tests share one global allocator (the prometheus tests' counter,
        // private to them), so this checks that every buffer the path uses keeps its
        // storage: the per-thread scratch and the response's own vectors.
        let lb = build(". {\n    loadbalance {\n        prefer 10.0.0.0/30\n    }\n}\n").unwrap();
        let mut b = Bench::new(query("web.example.", rtype::A));
        let write = |r: &mut Response| {
            r.answer(cname(b"\x02lb\x07example\x00"));
            for i in 1..=40 {
                r.answer(a(i));
            }
            r.additional(aaaa("fd00::1"));
            r.additional(aaaa("fd00::2"));
        };
        let storage = |b: &Bench| {
            let s = SCRATCH.with_borrow(|s| {
                (
                    s.order.as_ptr() as usize,
                    s.order.capacity(),
                    s.ranks.as_ptr() as usize,
                    s.ranks.capacity(),
                    s.bytes.as_ptr() as usize,
                    s.bytes.capacity(),
                )
            });
            (s, b.resp.bytes().as_ptr() as usize, b.resp.records().as_ptr() as usize)
        };
        b.run(&lb, Rcode::NOERROR, &write);
        let warm = storage(&b);
        for _ in 0..500 {
            b.run(&lb, Rcode::NOERROR, &write);
            assert_eq!(storage(&b), warm);
        }
    }
}
