//! The apex NS set and `ns.dns.<zone>` (CoreDNS `ns.go` `nsAddrs`): the names and
//! addresses of the services whose endpoints hold the server's local addresses.

use std::cell::RefCell;
use std::net::IpAddr;

use super::{Answer, Ctx, Halt, SEEN, hash_parts, ip_words, label_is, push};
use crate::dns::{Name, Rdata, Record, Response, Section, Tail, rtype};
use crate::kubernetes::model::ServiceKind;
use crate::kubernetes::snapshot::{Owner, SliceData};
use crate::plugin::kubernetes::seen::{Seen, hash_words};

/// NS names, by the (local address, owner) indices that first gave each.
pub(super) type NsNames = Vec<(u32, u32)>;
/// NS (name, sequence, address) pairs.
pub(super) type NsPairs = Vec<(u32, u32, IpAddr)>;
/// The apex NS set as a transfer writes it: names relative to the zone, and (name
/// index, address) glue.
pub(in crate::plugin::kubernetes) type NsTransfer = (Vec<Box<[u8]>>, Vec<(usize, IpAddr)>);

thread_local! {
    /// NS answers: the names (by the local address and owner that first gave them) and
    /// the (name, sequence, address) pairs, reused from query to query.
    static NS: RefCell<(NsNames, NsPairs)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

impl<'a, 'r, 's, 'z> Ctx<'a, 'r, 's, 'z> {
    /// `ns.dns.<zone>` (CoreDNS `isDefaultNS`: the lower-cased name against the zone as
    /// spelled, so a mixed-case zone does not match).
    pub(super) fn is_default_ns(&self) -> bool {
        self.z.before == 2 && self.z.zone_lower && label_is(self.name(), 0, b"ns") && label_is(self.name(), 1, b"dns")
    }

    /// The NS name given by owner `owner` of local address `local` (indices; `FALLBACK`
    /// for `ns.dns`), as (endpoint label or empty, the rest relative to the zone), with
    /// the addresses that come with it; `None` when that owner gives no name.
    pub(super) fn ns_name<'b>(&self, local: u32, owner: u32, buf: &'b mut [u8; 64]) -> Option<NsName<'b>>
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
    pub(super) fn ns_collect(&self, seen: &mut Seen, names: &mut NsNames, pairs: &mut NsPairs) -> Result<(), Halt> {
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
    pub(super) fn with_ns<T>(&self, f: impl FnOnce(&[(u32, u32)], &[(u32, u32, IpAddr)]) -> T) -> Result<T, Halt> {
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

    /// The apex NS set for a zone transfer: each name (wire labels relative to the
    /// zone, no root) and the (name index, address) pairs of its glue, in the order
    /// the NS answer writes them. `None` over the work budget.
    pub(in crate::plugin::kubernetes) fn ns_for_transfer(&self) -> Option<NsTransfer> {
        self.with_ns(|names, pairs| {
            let rel = names
                .iter()
                .map(|&(l, o)| {
                    let mut buf = [0u8; 64];
                    self.ns_name(l, o, &mut buf)
                        .map_or_else(Box::default, |n| [n.label, n.rel].concat().into_boxed_slice())
                })
                .collect();
            let glue = pairs.iter().map(|&(id, _, ip)| (id as usize, ip)).collect();
            (rel, glue)
        })
        .ok()
    }

    /// A/AAAA of `ns.dns.<zone>`: the NS addresses of the family, name by name.
    pub(super) fn ns_addresses(&self, resp: &mut Response, v4: bool) -> Answer<'s> {
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
    pub(super) fn ns(&self, resp: &mut Response) -> Answer<'s> {
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
pub(super) const FALLBACK: u32 = u32::MAX;

/// An NS name and where its addresses come from.
pub(super) struct NsName<'b> {
    label: &'b [u8],
    rel: &'b [u8],
    ips: NsIps<'b>,
}

pub(super) enum NsIps<'b> {
    Cluster(&'b [IpAddr]),
    Slice(&'b SliceData),
    Local,
}
