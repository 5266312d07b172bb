//! A and AAAA (CoreDNS `plugin.A`/`AAAA` over `Services`): a service's prepared
//! addresses, or its endpoints' each once, a pod's address, and `ns.dns`.

use super::parse::Sel;
use super::{Answer, Ctx, Found, Halt, SEEN, ip_words};
use crate::dns::{Name, Response, rtype};
use crate::kubernetes::snapshot::ServiceEntry;
use crate::plugin::kubernetes::seen::hash_words;

impl<'a, 'r, 's, 'z> Ctx<'a, 'r, 's, 'z> {
    /// A and AAAA (CoreDNS `plugin.A`/`AAAA` over `Services`).
    pub(super) fn addresses(&self, resp: &mut Response, qtype: u16) -> Answer<'s> {
        let v4 = qtype == rtype::A;
        if self.z.before == 0 {
            return Answer::NoData;
        }
        if self.is_default_ns() {
            return self.ns_addresses(resp, v4);
        }
        let (p, found) = match self.lookup() {
            Ok(pf) => pf,
            Err(answer) => return answer,
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
    pub(super) fn write_service_addresses(
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
            let ip_of = |i: [u32; 3]| entry.slices[i[0] as usize].eps.addr(i[1] as usize);
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
    pub(super) fn has_service_address(&self, entry: &'s ServiceEntry, sel: &Sel<'_>, v4: bool) -> Result<bool, Halt> {
        let plain = sel.endpoint.is_none() && sel.port.is_none() && sel.protocol.is_none();
        if plain || Self::from_cluster_ips(entry, sel) {
            return Ok(entry.addresses(v4, |_| std::ops::ControlFlow::Break(())));
        }
        let found = self.each_endpoint(entry, sel, false, |s, e, _| {
            if entry.slices[s].eps.addr(e).is_ipv4() == v4 {
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
}
