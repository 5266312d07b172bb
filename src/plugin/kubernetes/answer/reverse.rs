//! PTR (CoreDNS `reverse.go`): the address of a reverse name, and the names its owners
//! give (a cluster IP's service, else every endpoint with that address).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::parse::parse;
use super::{Answer, Ctx, Halt, Miss, SEEN, hash_parts, push};
use crate::dns::{Name, NameKey, Rdata, Record, Response, Section, Tail, rtype};
use crate::kubernetes::snapshot::Owner;

/// Whether `name` is a reverse name (under in-addr.arpa. or ip6.arpa.).
pub(super) fn is_reverse(name: &NameKey) -> bool {
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

impl<'a, 'r, 's, 'z> Ctx<'a, 'r, 's, 'z> {
    /// PTR (CoreDNS `Reverse`): a cluster IP names its service (the first one, only the
    /// `namespaces` option filters), else every endpoint with that address, once per
    /// name, until the message is full. The snapshot keeps cluster IP owners first.
    pub(super) fn ptr(&self, resp: &mut Response) -> Answer<'s> {
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
        let primary = self.opts.primary_zone.wire();
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
                    sa.rel() == sb.rel() && sa.label(*ea as usize, &mut ba) == sb.label(*eb as usize, &mut bb)
                }
                _ => false,
            };
            let hash = |i: [u32; 3]| match &owners[i[0] as usize] {
                Owner::Endpoint(s, e) => {
                    let mut b = [0u8; 64];
                    hash_parts(&[s.rel(), s.label(*e as usize, &mut b)], &[])
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
                        mid: slice.rel(),
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
}
