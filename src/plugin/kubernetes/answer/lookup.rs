//! What a name stands for (CoreDNS `Records`, `findServices`, `findPods`): the
//! namespace's exposure, the service and whether the query selects one of its
//! candidates, the pod; and the walks over candidates (matching ports, endpoints by
//! name) that every answer shares, each step charged to the query's budget.

use std::net::IpAddr;

use super::parse::{Kind, NameError, Parsed, Sel, pod_ip_text};
use super::reverse::is_reverse;
use super::{Answer, Ctx, Found, Halt, Miss};
use crate::kubernetes::model::{Port, ServiceKind};
use crate::kubernetes::snapshot::{ServiceEntry, label_hash};
use crate::plugin::kubernetes::setup::PodMode;

/// The ports of one list that a query selects: a bit mask of the 128 ports from the
/// first that matches (a query names one port, or none and takes them all); matches
/// further on, if any, are found again where they are used.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Matched {
    /// The index of the first matching port; bit `k` of `mask` is port `first + k`.
    pub(super) first: u32,
    pub(super) mask: u128,
    /// Whether a port past `first + 127` matches.
    pub(super) beyond: bool,
    /// How many ports match (the SRV weight counts them).
    pub(super) count: u32,
    /// Whether some matching port has a number (not CoreDNS's `-1` for "no ports"):
    /// only those make SRV records, and the addresses of the additional section.
    pub(super) numbered: bool,
}

/// Port lists whose matches a query keeps: the slices of a service share one list
/// (lists are interned), two or three while its ports change.
pub(super) const MATCHED_KEPT: usize = 4;

impl<'a, 'r, 's, 'z> Ctx<'a, 'r, 's, 'z> {
    /// Whether namespace label `i` is exposed: listed by `namespaces` (if given) and a
    /// Namespace object of that name exists.
    pub(super) fn exposed(&self, i: usize) -> bool {
        let ns = self.name().label(i);
        self.listed(ns) && self.snap.namespace_exists(ns)
    }

    /// Only the `namespaces` option (PTR answers use this alone).
    pub(super) fn listed(&self, ns: &[u8]) -> bool {
        self.opts.namespaces.is_empty() || self.opts.namespaces.iter().any(|n| n.as_bytes() == ns)
    }

    /// The query name parsed and looked up, or the answer that ends the query there
    /// (NXDOMAIN for a name that cannot exist or is not found, SERVFAIL over budget):
    /// the first step of the A, AAAA and SRV answers.
    pub(super) fn lookup(&self) -> Result<(Parsed, Found<'s>), Answer<'s>> {
        let p = super::parse::parse(self.name(), self.z.before).map_err(|_| Answer::NameError)?;
        match self.records(&p) {
            Ok(found) => Ok((p, found)),
            Err(Miss::Name) => Err(Answer::NameError),
            Err(Miss::OverBudget) => Err(Answer::OverBudget),
        }
    }

    /// CoreDNS `Records`: parse the name and find what it stands for.
    pub(super) fn records(&self, p: &Parsed) -> Result<Found<'s>, Miss> {
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

    pub(super) fn find_pod(&self, p: &Parsed) -> Result<Found<'s>, NameError> {
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
    pub(super) fn find_service(&self, p: &Parsed) -> Result<Found<'s>, Miss> {
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
            if p.endpoint.is_some() || p.port.is_some() || svc.external().is_none() {
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
    pub(super) fn from_cluster_ips(entry: &ServiceEntry, sel: &Sel<'_>) -> bool {
        entry.svc.kind == ServiceKind::ClusterIp && sel.endpoint.is_none()
    }

    /// The ports of `ports` that `sel` selects. Without a port in the query, all of
    /// them, known without reading them (but whether one has a number, usually the
    /// first); with one, one step per port, once per query for each port list (the
    /// query's `sel` is the same throughout).
    pub(super) fn matched(&self, ports: &[Port], sel: &Sel<'_>) -> Result<Matched, Halt> {
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
    pub(super) fn each_port(
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
    pub(super) fn candidate_count(&self, entry: &ServiceEntry, sel: &Sel<'_>) -> Result<u64, Halt> {
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
    pub(super) fn each_endpoint(
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
}
