//! ExternalName services: the CNAME, and the chase of its target for A and AAAA (in
//! the zone: resolved here; out of it: left to the server's chain).

use super::parse::{Sel, parse};
use super::{Answer, Ctx, Found, Halt, Miss, Zoned};
use crate::dns::{Name, NameKey, Rdata, Record, Response, rtype};
use crate::kubernetes::snapshot::ServiceEntry;

/// CNAME links followed before giving up (CoreDNS stops past 7 previous records).
pub(super) const MAX_CHAIN: usize = 8;

impl<'a, 'r, 's, 'z> Ctx<'a, 'r, 's, 'z> {
    /// Follows an ExternalName: in-zone targets are resolved here (the CNAMEs are kept
    /// only if the chain ends in records of the asked type); a target outside the zone
    /// is left to the server's chain.
    pub(super) fn chase(&self, resp: &mut Response, first: &'s ServiceEntry, qtype: u16) -> Answer<'s> {
        let v4 = qtype == rtype::A;
        let mut chain: [&'s [u8]; MAX_CHAIN] = [&[]; MAX_CHAIN];
        let mut n = 0;
        let mut cur = first;
        loop {
            let Some(target) = cur.svc.external() else {
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
            let Some(before) = self.z.zone.labels_before(&key) else {
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
    pub(super) fn write_chain(&self, resp: &mut Response, chain: &[&[u8]]) {
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

    /// CNAME: the ExternalName target, if the name is one.
    pub(super) fn cname(&self, resp: &mut Response) -> Answer<'s> {
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
                let target = entry.svc.external().expect("External has a target");
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
}
