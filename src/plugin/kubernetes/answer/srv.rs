//! SRV (CoreDNS `plugin.SRV`): one record per (target, port), the weight from the
//! candidate count, the targets' addresses in the additional section.

use std::net::IpAddr;

use super::parse::Sel;
use super::{Answer, Ctx, Found, Halt, SEEN, hash_parts, ip_words, push};
use crate::dns::{Name, Rdata, Record, Response, Section, Tail, rtype};
use crate::kubernetes::snapshot::ServiceEntry;
use crate::plugin::kubernetes::seen::hash_words;

impl<'a, 'r, 's, 'z> Ctx<'a, 'r, 's, 'z> {
    /// SRV (CoreDNS `plugin.SRV`): one record per (target, port), weight from the
    /// candidate count before any filtering, addresses in the additional section.
    pub(super) fn srv(&self, resp: &mut Response) -> Answer<'s> {
        if self.is_default_ns() || self.z.before == 0 {
            return Answer::NoData;
        }
        let (p, found) = match self.lookup() {
            Ok(pf) => pf,
            Err(answer) => return answer,
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
    pub(super) fn srv_records(
        &self,
        resp: &mut Response,
        entry: &'s ServiceEntry,
        sel: &Sel<'_>,
    ) -> Result<usize, Halt> {
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
            let ip_of = |i: [u32; 3]| slices[i[0] as usize].eps.addr(i[1] as usize);
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
}
