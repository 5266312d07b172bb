//! A zone as served: the names of the zone in a tree, built once from the records a
//! master file gave and never changed (a reload builds another and swaps it in), laid
//! out in a few flat arrays so that answering walks it without allocating.
//!
//! ```text
//!   nodes[0] = apex ── children (sorted by label) ── ... every name of the zone, and
//!      │                                               every empty non-terminal above one
//!      └─ sets (sorted by type) ── rrs (file order, duplicates dropped) ── rdata bytes
//!                 └─ extra: the nodes whose A/AAAA go in the additional section
//!                    (glue of an NS set, targets of MX and SRV sets)
//! ```
//!
//! A lookup walks the query name's labels from the apex down, a binary search among
//! each node's children: O(labels x log(fan-out)). Nodes are numbered in a pre-order
//! walk with children in label order, which is the canonical order of RFC 4034 6.1:
//! the order [`ZoneData::records`] lists the zone in.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::chain::{ChainError, Query, Step};
use crate::dns::response::{Piece, Prepared};
use crate::dns::wire::QNAME_OFFSET;
use crate::dns::{Name, NameKey, Rcode, Rdata, Record, Response, Section, Tail, Zone, rtype};

use super::parse::{RawRecord, name_end};

/// No such node.
const NONE: u32 = u32::MAX;
/// CNAMEs followed after the first one inside the zone: CoreDNS's limit (lookup.go).
const MAX_CNAME_HOPS: usize = 8;

#[derive(Clone, Copy, Debug, Default)]
struct Span {
    at: u32,
    len: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.at as usize..(self.at + self.len) as usize
    }
}

struct Node {
    /// The whole name, lower-cased wire form.
    name: Span,
    /// Its first label, without the length byte.
    label: Span,
    /// Indices into `children`.
    children: Span,
    /// Indices into `sets`; empty for an empty non-terminal.
    sets: Span,
    /// The `*` child, if there is one (RFC 4592's source of synthesis).
    wildcard: u32,
    /// Has NS records and is not the apex: a zone cut (RFC 1034 4.2.1).
    cut: bool,
}

struct Set {
    rtype: u16,
    /// Indices into `rrs`.
    rrs: Span,
    /// Indices into `extra`: nodes whose addresses go in the additional section.
    extra: Span,
}

struct Rr {
    ttl: u32,
    /// Uncompressed wire form, in `bytes`.
    rdata: Span,
    /// For NS, CNAME and PTR: the length of the target's labels in front of the origin
    /// when the target is in the zone (written as those labels and a pointer to the
    /// question's origin: no compression search), else [`OUTSIDE`].
    head: u8,
}

/// A name not in the zone (see [`Rr::head`]).
const OUTSIDE: u8 = u8::MAX;

/// One record of a zone, as [`ZoneData::records`] lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneRecord<'a> {
    /// Lower-cased, uncompressed wire form.
    pub owner: &'a [u8],
    pub rtype: u16,
    pub ttl: u32,
    /// Uncompressed wire form (names inside as in the file; those of NS, CNAME, MX and
    /// SOA lower-cased, as CoreDNS stores them).
    pub rdata: &'a [u8],
}

/// An immutable zone: what a reload builds and swaps in whole.
pub struct ZoneData {
    origin: Zone,
    origin_labels: usize,
    serial: u32,
    /// The SOA's TTL in negative answers: its own, as CoreDNS sends it (lookup.go puts
    /// the stored SOA in); a resolver takes min(TTL, MINIMUM) itself (RFC 2308 5).
    negative_ttl: u32,
    /// The SOA's MNAME and RNAME (in `bytes`, with their heads as [`Rr::head`]) and
    /// its five numbers, for writing it with compressed names.
    soa_names: [(Span, u8); 2],
    soa_numbers: [u32; 5],
    /// The apex's SOA and NS sets (`NONE` for a zone without NS).
    soa_set: u32,
    ns_set: u32,
    /// The apex NS set as a positive answer's authority section carries it, and the
    /// SOA as a negative answer's does, encoded ahead ([`Prepared`]): `None` when a
    /// name in them is outside the zone (its compression depends on the query).
    ns_prepared: Option<Prepared>,
    soa_prepared: Option<Prepared>,
    nodes: Vec<Node>,
    /// Each node's children, ordered by [`label_key`] (not by label: the lookup's
    /// binary search compares one integer a step), with the keys beside them.
    children: Vec<u32>,
    child_keys: Vec<u64>,
    sets: Vec<Set>,
    rrs: Vec<Rr>,
    extra: Vec<u32>,
    bytes: Vec<u8>,
    mtime: Option<SystemTime>,
    /// Records read but not served: owners outside the zone, a second SOA.
    ignored: usize,
}

/// Where a name led in the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    /// The name exists (perhaps as an empty non-terminal).
    Node(u32),
    /// A zone cut at or above the name (a referral).
    Cut(u32),
    /// The name does not exist; its closest encloser has this `*` child.
    Wildcard(u32),
    /// The name does not exist, and no wildcard covers it.
    Nx,
}

impl ZoneData {
    /// Builds the zone `origin` from the records read. An error says what makes the
    /// records no zone: no SOA at the apex, NSEC3 (as CoreDNS: not supported).
    pub fn build(origin: &Zone, raw: Vec<RawRecord>, mtime: Option<SystemTime>) -> Result<ZoneData, String> {
        let apex = origin.wire();
        let mut tmp = vec![Tmp {
            name: apex.to_vec(),
            children: Vec::new(),
            sets: Vec::new(),
        }];
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        index.insert(apex.to_vec(), 0);
        let mut set_of: HashMap<(usize, u16), usize> = HashMap::new();
        let mut ignored = 0;
        let mut soa_seen = false;
        for r in raw {
            if r.rtype == rtype::NSEC3 || r.rtype == 51 {
                return Err(format!(
                    "NSEC3 zone is not supported, dropping RR: {} for zone: {}",
                    crate::dns::wire::name_to_string(&r.owner),
                    origin.as_str()
                ));
            }
            if !in_zone(&r.owner, apex) {
                ignored += 1;
                continue;
            }
            if r.rtype == rtype::SOA {
                if soa_seen || r.owner != apex {
                    ignored += 1;
                    continue;
                }
                soa_seen = true;
            }
            let node = ensure(&mut tmp, &mut index, &r.owner);
            let set = *set_of.entry((node, r.rtype)).or_insert_with(|| {
                tmp[node].sets.push((r.rtype, Vec::new()));
                tmp[node].sets.len() - 1
            });
            tmp[node].sets[set].1.push((r.ttl, r.rdata));
        }
        drop(index);
        drop(set_of);
        if !soa_seen {
            return Err(format!("has no SOA record for origin {}", origin.as_str()));
        }
        let mut z = ZoneData {
            origin: origin.clone(),
            origin_labels: origin.label_count(),
            serial: 0,
            negative_ttl: 0,
            soa_names: [(Span::default(), OUTSIDE); 2],
            soa_numbers: [0; 5],
            soa_set: NONE,
            ns_set: NONE,
            ns_prepared: None,
            soa_prepared: None,
            nodes: Vec::with_capacity(tmp.len()),
            children: Vec::with_capacity(tmp.len()),
            child_keys: Vec::with_capacity(tmp.len()),
            sets: Vec::new(),
            rrs: Vec::new(),
            extra: Vec::new(),
            bytes: Vec::new(),
            mtime,
            ignored,
        };
        z.lay_out(tmp);
        z.link();
        z.prepare();
        // Built by pushing: the doubling's slack would be a third of the zone.
        z.sets.shrink_to_fit();
        z.rrs.shrink_to_fit();
        z.extra.shrink_to_fit();
        z.bytes.shrink_to_fit();
        Ok(z)
    }

    /// Numbers the nodes in pre-order with children in label order, and copies names,
    /// sets and records into the flat arrays.
    fn lay_out(&mut self, mut tmp: Vec<Tmp>) {
        let label = |t: &Tmp| t.name[1..1 + t.name[0] as usize].to_vec();
        for i in 0..tmp.len() {
            let mut kids = std::mem::take(&mut tmp[i].children);
            kids.sort_by_cached_key(|&c| label(&tmp[c]));
            tmp[i].children = kids;
        }
        // Pre-order: a node's number, then its children's subtrees in order.
        let mut order = Vec::with_capacity(tmp.len());
        let mut stack = vec![0usize];
        while let Some(n) = stack.pop() {
            order.push(n);
            stack.extend(tmp[n].children.iter().rev());
        }
        let mut number = vec![0u32; tmp.len()];
        for (k, &n) in order.iter().enumerate() {
            number[n] = k as u32;
        }
        for &n in &order {
            let t = &tmp[n];
            let name = self.push_bytes(&t.name);
            let label = Span {
                at: name.at + 1,
                len: t.name[0] as u32,
            };
            let children = Span {
                at: self.children.len() as u32,
                len: t.children.len() as u32,
            };
            let mut kids: Vec<(u64, u32)> = t
                .children
                .iter()
                .map(|&c| (label_key(&tmp[c].name[1..1 + tmp[c].name[0] as usize]), number[c]))
                .collect();
            kids.sort_unstable();
            let t = &mut tmp[n];
            self.children.extend(kids.iter().map(|k| k.1));
            self.child_keys.extend(kids.iter().map(|k| k.0));
            t.sets.sort_by_key(|s| s.0);
            let sets_at = self.sets.len() as u32;
            let mut cut = false;
            for (rtype, rrs) in std::mem::take(&mut t.sets) {
                let rrs = dedup(rrs);
                let span = Span {
                    at: self.rrs.len() as u32,
                    len: rrs.len() as u32,
                };
                for (ttl, rdata) in rrs {
                    let head = match rtype {
                        rtype::NS | rtype::CNAME | rtype::PTR => self.head_of(&rdata),
                        _ => OUTSIDE,
                    };
                    let rdata = self.push_bytes(&rdata);
                    self.rrs.push(Rr { ttl, rdata, head });
                }
                if n == 0 && rtype == rtype::SOA {
                    self.soa_set = self.sets.len() as u32;
                }
                if rtype == rtype::NS {
                    if n == 0 {
                        self.ns_set = self.sets.len() as u32;
                    } else {
                        cut = true;
                    }
                }
                self.sets.push(Set {
                    rtype,
                    rrs: span,
                    extra: Span::default(),
                });
            }
            self.nodes.push(Node {
                name,
                label,
                children,
                sets: Span {
                    at: sets_at,
                    len: self.sets.len() as u32 - sets_at,
                },
                wildcard: NONE,
                cut,
            });
        }
        for n in 0..self.nodes.len() {
            let w = self.child(n as u32, b"*").unwrap_or(NONE);
            self.nodes[n].wildcard = w;
        }
        let soa = &self.rrs[self.sets[self.soa_set as usize].rrs.at as usize];
        let (ttl, at) = (soa.ttl, soa.rdata.at as usize);
        let rdata = self.bytes[soa.rdata.range()].to_vec();
        let mid = name_end(&rdata, 0).unwrap_or(rdata.len());
        let end = name_end(&rdata, mid).unwrap_or(rdata.len());
        let num = |i: usize| {
            rdata
                .get(end + 4 * i..end + 4 * i + 4)
                .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()))
        };
        self.soa_numbers = [num(0), num(1), num(2), num(3), num(4)];
        self.serial = num(0);
        self.negative_ttl = ttl;
        let span = |from: usize, to: usize| Span {
            at: (at + from) as u32,
            len: (to - from) as u32,
        };
        self.soa_names = [
            (span(0, mid), self.head_of(&rdata[..mid])),
            (span(mid, end), self.head_of(&rdata[mid..end])),
        ];
    }

    /// Encodes the apex NS set and the SOA of negative answers ahead, when every name
    /// in them is in the zone (written as its labels and a pointer to the question's
    /// origin, as [`Writer::data`] writes them).
    fn prepare(&mut self) {
        if self.ns_set != NONE {
            let mut p = Prepared::new();
            let all = self.sets[self.ns_set as usize].rrs.range().all(|r| {
                let rr = &self.rrs[r];
                let target = &self.bytes[rr.rdata.range()];
                rr.head != OUTSIDE && p.add(rtype::NS, rr.ttl, &[Piece::Name(&target[..rr.head as usize])])
            });
            self.ns_prepared = all.then_some(p);
        }
        let [(m, mh), (r, rh)] = self.soa_names;
        if mh != OUTSIDE && rh != OUTSIDE {
            let mut numbers = [0u8; 20];
            for (i, v) in self.soa_numbers.iter().enumerate() {
                numbers[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
            }
            let mut p = Prepared::new();
            let data = [
                Piece::Name(&self.bytes[m.range()][..mh as usize]),
                Piece::Name(&self.bytes[r.range()][..rh as usize]),
                Piece::Bytes(&numbers),
            ];
            self.soa_prepared = p.add(rtype::SOA, self.negative_ttl, &data).then_some(p);
        }
    }

    /// Whether the apex NS set and the SOA were encoded ahead (tests).
    #[cfg(test)]
    pub(crate) fn prepared(&self) -> (bool, bool) {
        (self.ns_prepared.is_some(), self.soa_prepared.is_some())
    }

    /// The length of `name`'s labels in front of the origin, if it is in the zone (case
    /// ignored), else [`OUTSIDE`].
    fn head_of(&self, name: &[u8]) -> u8 {
        let mut lower = [0u8; 255];
        let Some(lower) = lower.get_mut(..name.len()) else {
            return OUTSIDE;
        };
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        let apex = self.origin.wire();
        if name_end(lower, 0) != Some(lower.len()) || !in_zone(lower, apex) {
            return OUTSIDE;
        }
        (lower.len() - apex.len()) as u8
    }

    /// Finds the additional-section nodes of each set: the glue of NS sets (addresses
    /// of targets below the NS owner, tree/glue.go) and the in-zone targets of MX and
    /// SRV sets (`additionalProcessing`), each target once.
    fn link(&mut self) {
        let mut extra = Vec::new();
        for n in 0..self.nodes.len() {
            let owner = self.nodes[n].name;
            for s in self.nodes[n].sets.range() {
                let set = &self.sets[s];
                let skip = match set.rtype {
                    rtype::NS => 0,
                    rtype::MX => 2,
                    rtype::SRV => 6,
                    _ => continue,
                };
                extra.clear();
                for r in set.rrs.range() {
                    let rdata = &self.bytes[self.rrs[r].rdata.range()];
                    let Some(target) = rdata.get(skip..) else { continue };
                    let mut lower = [0u8; 255];
                    let Some(lower) = lower.get_mut(..target.len()) else {
                        continue;
                    };
                    lower.copy_from_slice(target);
                    lower.make_ascii_lowercase();
                    let owner = &self.bytes[owner.range()];
                    if set.rtype == rtype::NS && !in_zone(lower, owner) {
                        continue;
                    }
                    let Some(t) = self.exact(lower) else { continue };
                    let has_address = self.set(t, rtype::A).is_some() || self.set(t, rtype::AAAA).is_some();
                    if has_address && !extra.contains(&t) {
                        extra.push(t);
                    }
                }
                let span = Span {
                    at: self.extra.len() as u32,
                    len: extra.len() as u32,
                };
                self.extra.extend_from_slice(&extra);
                self.sets[s].extra = span;
            }
        }
    }

    fn push_bytes(&mut self, b: &[u8]) -> Span {
        let at = self.bytes.len() as u32;
        self.bytes.extend_from_slice(b);
        Span {
            at,
            len: b.len() as u32,
        }
    }

    /// The zone's origin.
    pub fn origin(&self) -> &Zone {
        &self.origin
    }

    /// The SOA serial.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Records served.
    pub fn len(&self) -> usize {
        self.rrs.len()
    }

    /// Whether the zone holds no record (never: it has its SOA).
    pub fn is_empty(&self) -> bool {
        self.rrs.is_empty()
    }

    /// The heap the zone holds, in bytes (its arrays' capacities).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.nodes.capacity() * size_of::<Node>()
            + self.children.capacity() * 12
            + self.sets.capacity() * size_of::<Set>()
            + self.rrs.capacity() * size_of::<Rr>()
            + self.extra.capacity() * 4
            + self.bytes.capacity()
            + self.ns_prepared.as_ref().map_or(0, Prepared::heap_bytes)
            + self.soa_prepared.as_ref().map_or(0, Prepared::heap_bytes)
    }

    /// The modification time of the main file when it was read.
    pub fn mtime(&self) -> Option<SystemTime> {
        self.mtime
    }

    /// Records read but not served (outside the zone, a second SOA).
    pub fn ignored(&self) -> usize {
        self.ignored
    }

    /// The apex SOA record.
    pub fn soa(&self) -> ZoneRecord<'_> {
        self.records_of(0, self.soa_set as usize)
            .next()
            .expect("a zone has its SOA")
    }

    /// Every record of the zone, the apex SOA first, then the names in canonical
    /// order (RFC 4034 6.1), each name's sets by type, each set's records in file
    /// order: the same order for the same zone, every time (what AXFR sends).
    pub fn records(&self) -> impl Iterator<Item = ZoneRecord<'_>> + '_ {
        let soa = self.soa_set as usize;
        self.records_of(0, soa).chain((0..self.nodes.len()).flat_map(move |n| {
            self.nodes[n]
                .sets
                .range()
                .filter(move |&s| s != soa)
                .flat_map(move |s| self.records_of(n, s))
        }))
    }

    fn records_of(&self, node: usize, set: usize) -> impl Iterator<Item = ZoneRecord<'_>> + '_ {
        let owner = &self.bytes[self.nodes[node].name.range()];
        let s = &self.sets[set];
        s.rrs.range().map(move |r| ZoneRecord {
            owner,
            rtype: s.rtype,
            ttl: self.rrs[r].ttl,
            rdata: &self.bytes[self.rrs[r].rdata.range()],
        })
    }

    fn name(&self, node: u32) -> &[u8] {
        &self.bytes[self.nodes[node as usize].name.range()]
    }

    /// The child of `node` labelled `label` (lower-cased): a binary search of the
    /// children's keys, then the label compared (with the next ones, should two keys be
    /// equal).
    #[inline]
    fn child(&self, node: u32, label: &[u8]) -> Option<u32> {
        let range = self.nodes[node as usize].children.range();
        let keys = &self.child_keys[range.clone()];
        let key = label_key(label);
        let mut i = keys.partition_point(|&k| k < key);
        while i < keys.len() && keys[i] == key {
            let c = self.children[range.start + i];
            if &self.bytes[self.nodes[c as usize].label.range()] == label {
                return Some(c);
            }
            i += 1;
        }
        None
    }

    /// The set of type `rtype` at `node`.
    #[inline]
    fn set(&self, node: u32, rtype: u16) -> Option<u32> {
        let range = self.nodes[node as usize].sets.range();
        let sets = &self.sets[range.clone()];
        sets.binary_search_by_key(&rtype, |s| s.rtype)
            .ok()
            .map(|i| (range.start + i) as u32)
    }

    fn has_sets(&self, node: u32) -> bool {
        self.nodes[node as usize].sets.len > 0
    }

    /// The node of exactly `name` (lower-cased wire), cuts and wildcards ignored.
    fn exact(&self, name: &[u8]) -> Option<u32> {
        let mut offs = [0u8; 128];
        let before = self.labels_in_front(name, &mut offs)?;
        let mut node = 0;
        for i in (0..before).rev() {
            node = self.child(node, label_at(name, offs[i]))?;
        }
        Some(node)
    }

    /// The label offsets of `name` into `offs`, and how many labels it has in front of
    /// the origin; `None` when it is not in the zone.
    #[inline]
    fn labels_in_front(&self, name: &[u8], offs: &mut [u8; 128]) -> Option<usize> {
        let mut at = 0usize;
        let mut n = 0usize;
        loop {
            let l = *name.get(at)? as usize;
            if l == 0 {
                break;
            }
            *offs.get_mut(n)? = at as u8;
            n += 1;
            at += 1 + l;
        }
        let before = n.checked_sub(self.origin_labels)?;
        let start = if before < n { offs[before] as usize } else { at };
        (name.get(start..)? == self.origin.wire()).then_some(before)
    }

    /// Walks `name` (lower-cased wire) down from the apex, as CoreDNS's `Lookup` loop
    /// does: a node with NS below the apex on the way is a referral (but a DS query at
    /// the cut itself is the parent's to answer); a missing label ends the walk at the
    /// closest encloser, whose `*` child, if any, synthesises (RFC 4592 3.3.1). `None`:
    /// the name is not in the zone.
    #[inline]
    fn find(&self, name: &[u8], qtype: u16) -> Option<Found> {
        let mut offs = [0u8; 128];
        let before = self.labels_in_front(name, &mut offs)?;
        self.walk(before, |i| label_at(name, offs[i]), qtype)
    }

    /// [`Self::find`] for the query's own name, whose labels the request has already
    /// found (no second pass over the name).
    #[inline]
    fn find_key(&self, name: &NameKey, qtype: u16) -> Option<Found> {
        let before = name.labels_before(self.origin.wire())?;
        self.walk(before, |i| name.label(i), qtype)
    }

    /// The walk of [`Self::find`] over the `before` labels in front of the origin
    /// (`label(i)`: the i-th from the left, without its length byte).
    #[inline]
    fn walk<'n>(&self, before: usize, label: impl Fn(usize) -> &'n [u8], qtype: u16) -> Option<Found> {
        let mut node = 0u32;
        for i in (0..before).rev() {
            match self.child(node, label(i)) {
                Some(c) => {
                    node = c;
                    if self.nodes[c as usize].cut && !(qtype == rtype::DS && i == 0) {
                        return Some(Found::Cut(c));
                    }
                }
                None => {
                    let w = self.nodes[node as usize].wildcard;
                    return Some(if w == NONE { Found::Nx } else { Found::Wildcard(w) });
                }
            }
        }
        Some(Found::Node(node))
    }

    /// Answers `q` from this zone, with CoreDNS's file plugin's rules (lookup.go,
    /// file.go's `ServeDNS`). `falls` says whether `fallthrough` covers the name: a
    /// name that does not exist (or an empty non-terminal) then goes to the next plugin.
    pub(crate) fn answer(&self, q: &mut Query<'_, '_>, plugin: &'static str, falls: bool) -> Step {
        self.answer_as::<true>(q, plugin, falls)
    }

    /// [`Self::answer`], with the records encoded ahead (`PREPARED`) or every record
    /// pushed one by one: the tests compare the two replies byte for byte.
    #[inline]
    pub(crate) fn answer_as<const PREPARED: bool>(
        &self,
        q: &mut Query<'_, '_>,
        plugin: &'static str,
        falls: bool,
    ) -> Step {
        match self.write_answer::<PREPARED>(q, falls) {
            Ok(true) => Step::Answered,
            Ok(false) => Step::Next,
            Err(Over) => Step::Fail(Rcode::SERVFAIL, Some(ChainError::OverBudget(plugin))),
        }
    }

    fn write_answer<const PREPARED: bool>(&self, q: &mut Query<'_, '_>, falls: bool) -> Result<bool, Over> {
        let req = q.req;
        let qtype = req.qtype;
        let Some(found) = self.find_key(&req.qname, qtype) else {
            return Ok(false);
        };
        // Where the origin starts in the question: names of the zone are written as
        // their own labels and a pointer there.
        let before = req.qname.label_count() - self.origin_labels;
        let apex_off = QNAME_OFFSET + req.qname.label_offset(before);
        let mut w = Writer::<PREPARED> { z: self, q, apex_off };
        match found {
            // NXDOMAIN, and an empty non-terminal: NOERROR (lookup.go, "Hacky way to get
            // around empty-non-terminals"); both fall through when told to.
            Found::Nx | Found::Node(_) if falls && !matches!(found, Found::Node(n) if self.has_sets(n)) => {
                return Ok(false);
            }
            Found::Nx => {
                w.start(Rcode::NXDOMAIN, true);
                w.negative()?;
            }
            Found::Cut(c) => {
                // A referral is not authoritative (file.go, `Delegation`).
                w.start(Rcode::NOERROR, false);
                w.referral(c)?;
            }
            Found::Node(n) | Found::Wildcard(n) if !self.has_sets(n) => {
                // An empty non-terminal, or an empty non-terminal wildcard: NODATA
                // (wildcard_test.go, emptyNonTerminalWildcard).
                w.start(Rcode::NOERROR, true);
                w.negative()?;
            }
            Found::Node(n) | Found::Wildcard(n) => {
                w.start(Rcode::NOERROR, true);
                if n == 0 && qtype == rtype::NS && self.ns_set != NONE {
                    // The apex NS: no authority, the in-zone targets' addresses
                    // ("technically this isn't glue", lookup.go).
                    w.set(Section::Answer, self.ns_set, Name::QUESTION)?;
                    w.extra(self.ns_set)?;
                    return Ok(true);
                }
                w.positive(n, Name::QUESTION, true)?;
            }
        }
        Ok(true)
    }
}

/// The query ran out of its work budget.
struct Over;

/// Writes one answer from one zone into the query's reply; `PREPARED`: with the
/// records the zone encoded ahead where they fit ([`Prepared`]).
struct Writer<'z, 'q, 'r, 'a, const PREPARED: bool> {
    z: &'z ZoneData,
    q: &'q mut Query<'r, 'a>,
    /// The offset of the origin in the question (see `write_answer`).
    apex_off: usize,
}

impl<'z, const PREPARED: bool> Writer<'z, '_, '_, '_, PREPARED> {
    fn start(&mut self, rcode: Rcode, aa: bool) {
        self.q.resp.start(self.q.req, rcode);
        self.q.resp.set_aa(aa);
    }

    fn resp(&mut self) -> &mut Response {
        self.q.resp
    }

    /// A name of the zone (lower-cased wire; `head` bytes of labels in front of the
    /// origin) as its labels and a pointer to the question's origin, or, outside the
    /// zone, whole.
    #[inline]
    fn name<'n>(&self, bytes: &'n [u8], head: u8) -> Name<'n> {
        if head == OUTSIDE {
            return Name::wire(bytes);
        }
        Name {
            head: &bytes[..head as usize],
            mid: &[],
            tail: Tail::Question(self.apex_off),
        }
    }

    /// The name of `node`.
    #[inline]
    fn node_name(&self, node: u32) -> Name<'z> {
        let z = self.z;
        let name = z.name(node);
        Name {
            head: &name[..name.len() - z.origin.wire().len()],
            mid: &[],
            tail: Tail::Question(self.apex_off),
        }
    }

    /// The data of record `rr` of a set of type `rtype`: the names of NS, CNAME, PTR
    /// and SOA compressed (RFC 3597 4), the rest as stored.
    #[inline]
    fn data(&self, rtype: u16, rr: &Rr) -> Rdata<'z> {
        let z = self.z;
        let bytes = &z.bytes[rr.rdata.range()];
        match rtype {
            rtype::NS | rtype::CNAME | rtype::PTR => Rdata::Name(self.name(bytes, rr.head)),
            rtype::SOA => {
                let [(m, mh), (r, rh)] = z.soa_names;
                let [serial, refresh, retry, expire, minimum] = z.soa_numbers;
                Rdata::Soa {
                    mname: self.name(&z.bytes[m.range()], mh),
                    rname: self.name(&z.bytes[r.range()], rh),
                    serial,
                    refresh,
                    retry,
                    expire,
                    minimum,
                }
            }
            _ => Rdata::Raw(bytes),
        }
    }

    /// NXDOMAIN or NODATA: the SOA in the authority section (RFC 2308 3), with its
    /// own TTL as CoreDNS sends it.
    fn negative(&mut self) -> Result<(), Over> {
        self.charge(1)?;
        let z = self.z;
        if let (true, Some(p)) = (PREPARED, &z.soa_prepared) {
            let at = self.apex_off;
            if self.resp().push_prepared(Section::Authority, p, at, at) {
                return Ok(());
            }
        }
        let soa = &z.rrs[z.sets[z.soa_set as usize].rrs.at as usize];
        let record = Record {
            owner: self.node_name(0),
            rtype: rtype::SOA,
            ttl: z.negative_ttl,
            data: self.data(rtype::SOA, soa),
        };
        let _ = self.resp().push(Section::Authority, &record);
        Ok(())
    }

    /// A referral to the zone cut at `cut`: its NS in authority, their glue.
    fn referral(&mut self, cut: u32) -> Result<(), Over> {
        let z = self.z;
        let ns = z.set(cut, rtype::NS).expect("a cut has NS");
        self.set(Section::Authority, ns, self.node_name(cut))?;
        self.extra(ns)
    }

    /// The records of `node` (the query name's, or the wildcard's written under the
    /// query name) for the query type, after CNAMEs inside the zone; apex NS in
    /// authority, addresses of MX and SRV targets in additional (lookup.go).
    fn positive(&mut self, node: u32, owner: Name<'z>, exact: bool) -> Result<(), Over> {
        let z = self.z;
        let qtype = self.q.req.qtype;
        if qtype != rtype::CNAME {
            if let Some(cname) = z.set(node, rtype::CNAME) {
                self.set(Section::Answer, cname, owner)?;
                return self.chase(cname);
            }
        }
        match z.set(node, qtype) {
            Some(set) => {
                self.set(Section::Answer, set, owner)?;
                self.apex_ns()?;
                self.extra(set)
            }
            // NODATA (for a name reached through a CNAME of the zone, CoreDNS answers
            // the chain with the apex NS, as for an answer).
            None if exact && self.resp().count(Section::Answer) > 0 => self.apex_ns(),
            None => self.negative(),
        }
    }

    /// Follows the CNAME set `cname` inside the zone (`externalLookup`): up to
    /// [`MAX_CNAME_HOPS`] more, each target looked up as a query would be. A target
    /// outside the zone ends the chain (CoreDNS asks its own server for it).
    fn chase(&mut self, mut cname: u32) -> Result<(), Over> {
        let z = self.z;
        let qtype = self.q.req.qtype;
        for _ in 0..=MAX_CNAME_HOPS {
            let first = z.sets[cname as usize].rrs.at as usize;
            let target: &'z [u8] = &z.bytes[z.rrs[first].rdata.range()];
            let head = (target.len().saturating_sub(z.origin.wire().len())) as u8;
            match z.find(target, qtype) {
                None => return self.apex_ns(),
                Some(Found::Cut(c)) => return self.referral(c),
                Some(Found::Nx) => {
                    self.resp().set_rcode(Rcode::NXDOMAIN);
                    return self.negative();
                }
                Some(Found::Node(n) | Found::Wildcard(n)) if !z.has_sets(n) => return self.negative(),
                Some(found @ (Found::Node(n) | Found::Wildcard(n))) => {
                    // In the zone (`find` said so): its labels and the origin.
                    let owner = self.name(target, head);
                    let exact = matches!(found, Found::Node(_));
                    if qtype != rtype::CNAME {
                        if let Some(next) = z.set(n, rtype::CNAME) {
                            self.set(Section::Answer, next, owner)?;
                            cname = next;
                            continue;
                        }
                    }
                    return self.positive(n, owner, exact);
                }
            }
        }
        // A longer chain (or a loop): what was found so far.
        self.apex_ns()
    }

    /// The apex NS set in authority (CoreDNS's `ap.ns` on positive answers).
    fn apex_ns(&mut self) -> Result<(), Over> {
        let z = self.z;
        if z.ns_set == NONE {
            return Ok(());
        }
        if let (true, Some(p)) = (PREPARED, &z.ns_prepared) {
            self.charge(p.len() as u32)?;
            let at = self.apex_off;
            if !self.resp().push_prepared(Section::Authority, p, at, at) {
                self.write_set(Section::Authority, z.ns_set, self.node_name(0));
            }
            return Ok(());
        }
        self.set(Section::Authority, z.ns_set, self.node_name(0))
    }

    /// The A then AAAA records of each additional node of `set`.
    fn extra(&mut self, set: u32) -> Result<(), Over> {
        let z = self.z;
        for &node in &z.extra[z.sets[set as usize].extra.range()] {
            for t in [rtype::A, rtype::AAAA] {
                if let Some(s) = z.set(node, t) {
                    self.set(Section::Additional, s, self.node_name(node))?;
                }
            }
        }
        Ok(())
    }

    /// Writes every record of `set` under `owner`, charging one visit each; stops at
    /// the first that does not fit (the reply is then truncated).
    fn set(&mut self, section: Section, set: u32, owner: Name<'_>) -> Result<(), Over> {
        let z = self.z;
        // The whole set at once: one visit a record, as many as may be written.
        self.charge(z.sets[set as usize].rrs.len)?;
        self.write_set(section, set, owner);
        Ok(())
    }

    /// [`Self::set`], charged already.
    fn write_set(&mut self, section: Section, set: u32, owner: Name<'_>) {
        let z = self.z;
        let s = &z.sets[set as usize];
        // Data without names (written as stored) under a name that is a pointer into
        // the question: written directly ([`Response::push_raw`]).
        let raw_at = match owner {
            Name {
                head: [],
                mid: [],
                tail: Tail::Question(at),
            } if PREPARED && !matches!(s.rtype, rtype::NS | rtype::CNAME | rtype::PTR | rtype::SOA) => Some(at),
            _ => None,
        };
        for r in s.rrs.range() {
            let rr = &z.rrs[r];
            if let Some(at) = raw_at {
                if self
                    .q
                    .resp
                    .push_raw(section, at, s.rtype, rr.ttl, &z.bytes[rr.rdata.range()])
                {
                    continue;
                }
            }
            let record = Record {
                owner,
                rtype: s.rtype,
                ttl: rr.ttl,
                data: self.data(s.rtype, rr),
            };
            if self.resp().push(section, &record).is_err() && self.resp().truncated() {
                break;
            }
        }
    }

    fn charge(&mut self, n: u32) -> Result<(), Over> {
        self.q.worker.budget.charge(n).map_err(|_| Over)
    }
}

/// A label's 64-bit hash: what a node's children are ordered and searched by. Keys of
/// different labels may be equal (the lookup compares the labels then), never keys of
/// equal ones.
#[inline]
fn label_key(label: &[u8]) -> u64 {
    const K: u64 = 0x517C_C1B7_2722_0A95;
    let mut h = (label.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut chunks = label.chunks_exact(8);
    for c in &mut chunks {
        h = (h.rotate_left(5) ^ u64::from_le_bytes(c.try_into().unwrap())).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(K);
    }
    h
}

#[inline]
fn label_at(name: &[u8], at: u8) -> &[u8] {
    let at = at as usize;
    &name[at + 1..at + 1 + name[at] as usize]
}

/// Whether `name` is `zone` or below it (both lower-cased wire), label-aligned.
fn in_zone(name: &[u8], zone: &[u8]) -> bool {
    if name.len() < zone.len() || !name.ends_with(zone) {
        return false;
    }
    let start = name.len() - zone.len();
    let mut at = 0;
    while at < start {
        at += 1 + name[at] as usize;
    }
    at == start
}

/// A set being built: its type and its records' (TTL, data).
type TmpSet = (u16, Vec<(u32, Vec<u8>)>);

/// A node being built.
struct Tmp {
    name: Vec<u8>,
    children: Vec<usize>,
    sets: Vec<TmpSet>,
}

/// The node of `name` (in the zone), made with its missing ancestors.
fn ensure(tmp: &mut Vec<Tmp>, index: &mut HashMap<Vec<u8>, usize>, name: &[u8]) -> usize {
    if let Some(&n) = index.get(name) {
        return n;
    }
    // The ancestors missing, deepest first; then made from the top down.
    let mut missing = vec![name];
    let mut at = name;
    let parent = loop {
        at = &at[1 + at[0] as usize..];
        match index.get(at) {
            Some(&p) => break p,
            None => missing.push(at),
        }
    };
    let mut parent = parent;
    for m in missing.into_iter().rev() {
        let n = tmp.len();
        tmp.push(Tmp {
            name: m.to_vec(),
            children: Vec::new(),
            sets: Vec::new(),
        });
        tmp[parent].children.push(n);
        index.insert(m.to_vec(), n);
        parent = n;
    }
    parent
}

/// A set's records with exact duplicates dropped (an RRset has none, RFC 2181 5),
/// the first of each kept, in file order.
fn dedup(rrs: Vec<(u32, Vec<u8>)>) -> Vec<(u32, Vec<u8>)> {
    if rrs.len() < 2 {
        return rrs;
    }
    let mut by_data: Vec<usize> = (0..rrs.len()).collect();
    by_data.sort_by(|&a, &b| rrs[a].1.cmp(&rrs[b].1).then(a.cmp(&b)));
    let mut keep = vec![true; rrs.len()];
    for w in by_data.windows(2) {
        if rrs[w[0]].1 == rrs[w[1]].1 {
            keep[w[1]] = false;
        }
    }
    rrs.into_iter().zip(keep).filter_map(|(r, k)| k.then_some(r)).collect()
}
