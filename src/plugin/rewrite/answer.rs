//! The response side: the reply a later plugin wrote for the rewritten query is
//! rewritten back for the client. The question is the client's again; the records'
//! names and values go through the response rules of the rules that applied, in the
//! reverse of their order (CoreDNS's ResponseReverter); TTL and rcode rules apply.
//!
//! The reply is rebuilt rather than patched: names change length, and the writer's
//! compression must be re-made. The old reply is copied into a per-worker buffer, the
//! reply restarted with the client's question, and every record pushed again through
//! the writer (`push_copied`), so the size limit, truncation and compression hold as
//! for any reply. Each record is laid out uncompressed at the end of the copy first:
//! nothing is allocated once that buffer has grown to the largest reply.

use super::Rewrite;
use super::rules::{Answer, Kind, Matcher, NameRule};
use super::text::Text;
use crate::dns::wire::{self, HEADER_LEN, MAX_NAME_LEN};
use crate::dns::{Header, HeaderMut, Rcode, Request, Response, Section, rtype};

/// The rules that applied to a query, and for each `name` rule with automatic answer
/// rewriting the name it was given and the name it made (as ranges of an arena).
pub struct Plan {
    pub matched: u64,
    pub names: [(u32, u32, u32, u32); super::rules::MAX_RULES],
    /// The question changed (name, type, class or options): it is put back.
    pub changed: bool,
    /// Some rule that applied rewrites responses (names, values, TTLs, rcodes).
    pub effects: bool,
}

impl Plan {
    pub fn new() -> Plan {
        Plan {
            matched: 0,
            names: [(0, 0, 0, 0); super::rules::MAX_RULES],
            changed: false,
            effects: false,
        }
    }

    /// The indexes of the rules that applied, last first.
    fn reversed(&self) -> impl Iterator<Item = usize> + '_ {
        (0..super::rules::MAX_RULES)
            .rev()
            .filter(|i| self.matched & (1u64 << i) != 0)
    }
}

/// Where a name sits in a record, for the rules that tell them apart.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Owner,
    Value,
}

/// `src` ends with `suffix`, ASCII case aside; the length of what comes before.
fn cut_suffix(src: &str, suffix: &str) -> Option<usize> {
    let cut = src.len().checked_sub(suffix.len())?;
    (src.is_char_boundary(cut) && src[cut..].eq_ignore_ascii_case(suffix)).then_some(cut)
}

/// Applies one name rule's response rules to `name` at `place`, in reverse of the order
/// CoreDNS lists them (automatic name, automatic value, then the `answer` options).
fn revert_one(rule: &NameRule, remap: Option<(&str, &str)>, place: Place, name: &mut Text, tmp: &mut Text) -> bool {
    let mut changed = false;
    for a in rule.answers.iter().rev() {
        let r = match (a, place) {
            (Answer::Name(r), Place::Owner) | (Answer::Value(r), Place::Value) => r,
            _ => continue,
        };
        if super::rules::replace(r, name.as_str(), tmp) {
            name.copy_from(tmp);
            changed = true;
        }
    }
    if !rule.auto {
        return changed;
    }
    tmp.clear();
    let done = match (&rule.matcher, remap) {
        // A suffix rule's automatic rewrite swaps the suffixes back (CoreDNS:
        // newSuffixStringRewriter(replacement, suffix)).
        (Matcher::Suffix(from), _) => match cut_suffix(name.as_str(), &rule.to) {
            Some(cut) => tmp.push(&name.as_str()[..cut]) && tmp.push(from),
            None => false,
        },
        // The others map the name the rule made, or a name below it, back to the name
        // it was given (CoreDNS's remapStringRewriter).
        (_, Some((before, after))) => {
            let src = name.as_str();
            if src.eq_ignore_ascii_case(after) {
                tmp.push(before)
            } else {
                match cut_suffix(src, after) {
                    Some(cut) if cut > 0 && src.as_bytes()[cut - 1] == b'.' => {
                        tmp.push(&src[..cut]) && tmp.push(before)
                    }
                    _ => false,
                }
            }
        }
        _ => false,
    };
    if done {
        name.copy_from(tmp);
        changed = true;
    }
    changed
}

/// Rewrites `name` at `place` through every applied rule, last first.
fn revert_name(rw: &Rewrite, plan: &Plan, arena: &[u8], place: Place, name: &mut Text, tmp: &mut Text) -> bool {
    let mut changed = false;
    for i in plan.reversed() {
        if let Kind::Name(rule) = &rw.rules[i].kind {
            let (b0, b1, a0, a1) = plan.names[i];
            let text = |s: u32, e: u32| std::str::from_utf8(&arena[s as usize..e as usize]).unwrap_or("");
            let remap = Some((text(b0, b1), text(a0, a1)));
            changed |= revert_one(rule, remap, place, name, tmp);
        }
    }
    changed
}

/// The TTL after the applied `ttl` rules, last first.
fn revert_ttl(rw: &Rewrite, plan: &Plan, mut ttl: u32) -> u32 {
    for i in plan.reversed() {
        if let Kind::Ttl { min, max, .. } = rw.rules[i].kind {
            if ttl < min {
                ttl = min;
            } else if ttl > max {
                ttl = max;
            }
        }
    }
    ttl
}

/// The rcode after the applied `rcode` rules: CoreDNS applies them once per record
/// (every section, its OPT record included), or once when there is none.
fn revert_rcode(rw: &Rewrite, plan: &Plan, mut rcode: Rcode, records: usize) -> Rcode {
    for _ in 0..records.max(1) {
        let start = rcode;
        for i in plan.reversed() {
            if let Kind::Rcode { old, new, .. } = rw.rules[i].kind {
                if rcode == old {
                    rcode = new;
                }
            }
        }
        // Nothing more can change once a round changes nothing.
        if rcode == start {
            break;
        }
    }
    rcode
}

/// Whether the first name in the data of `rtype` is a "value" CoreDNS rewrites
/// (reverter.go: SRV, MX, CNAME, NS, DNAME, SOA's MNAME, PTR; NAPTR's replacement is
/// not rewritten here, see the README).
fn value_type(t: u16) -> bool {
    matches!(
        t,
        rtype::SRV | rtype::MX | rtype::CNAME | rtype::NS | 39 | rtype::SOA | rtype::PTR
    )
}

/// The buffers a rebuild works in: the per-worker copy of the reply, and two names.
pub struct Scratch<'s> {
    pub copy: &'s mut Vec<u8>,
    pub name: &'s mut Text,
    pub tmp: &'s mut Text,
}

/// Rebuilds the finished reply in `resp` for the client's `req` (see the module
/// comment).
pub fn rebuild(rw: &Rewrite, plan: &Plan, arena: &[u8], req: &Request<'_>, resp: &mut Response, s: Scratch<'_>) {
    let Scratch { copy, name, tmp } = s;
    copy.clear();
    copy.extend_from_slice(resp.bytes());
    let Some(h) = Header::of(copy) else {
        return;
    };
    let (flags, counts) = (h.flags(), h.counts());
    let rcode = resp.rcode();
    let withheld = resp.is_withheld();
    resp.start(req, rcode);
    if withheld {
        resp.withhold();
    }
    if let Some(mut hm) = HeaderMut::of(resp.bytes_mut()) {
        hm.set_flags(flags);
    }
    let mut at = HEADER_LEN;
    for _ in 0..counts[0] {
        match wire::skip_name(copy, at) {
            Some(end) => at = end + 4,
            None => return,
        }
    }
    let mut records = 0usize;
    let end_of_message = copy.len();
    'sections: for (s, section) in [Section::Answer, Section::Authority, Section::Additional]
        .into_iter()
        .enumerate()
    {
        for _ in 0..counts[s + 1] {
            records += 1;
            let mut owner = [0u8; MAX_NAME_LEN];
            let Some((after, olen)) = wire::read_name(copy, at, &mut owner) else {
                break 'sections;
            };
            let (Some(t), Some(cls), Some(ttl), Some(rdlen)) = (
                wire::get_u16(copy, after),
                wire::get_u16(copy, after + 2),
                wire::get_u32(copy, after + 4),
                wire::get_u16(copy, after + 8),
            ) else {
                break 'sections;
            };
            let (rd_start, rd_end) = (after + 10, after + 10 + rdlen as usize);
            if rd_end > end_of_message {
                break 'sections;
            }
            at = rd_end;
            if t == rtype::OPT {
                continue; // the writer adds its own
            }
            let base = copy.len();
            // The owner.
            name.set_wire(&owner[..olen], false);
            let mut wire_name = [0u8; MAX_NAME_LEN];
            match revert_name(rw, plan, arena, Place::Owner, name, tmp)
                .then(|| name.to_wire(&mut wire_name))
                .flatten()
            {
                Some(n) => copy.extend_from_slice(&wire_name[..n]),
                None => copy.extend_from_slice(&owner[..olen]),
            }
            copy.extend_from_slice(&t.to_be_bytes());
            copy.extend_from_slice(&cls.to_be_bytes());
            copy.extend_from_slice(&revert_ttl(rw, plan, ttl).to_be_bytes());
            let rdlen_at = copy.len();
            copy.extend_from_slice(&[0, 0]);
            // The data, its names uncompressed (and the first rewritten as a value).
            match wire::rdata_names(t) {
                None => copy.extend_from_within(rd_start..rd_end),
                Some((fixed, names)) => {
                    let mut p = rd_start + fixed;
                    if p > rd_end {
                        copy.truncate(base);
                        continue;
                    }
                    copy.extend_from_within(rd_start..p);
                    for n in 0..names {
                        let mut v = [0u8; MAX_NAME_LEN];
                        let Some((next, vlen)) = wire::read_name(copy, p, &mut v) else {
                            break 'sections;
                        };
                        p = next;
                        let mut written = false;
                        if n == 0 && value_type(t) {
                            name.set_wire(&v[..vlen], false);
                            if revert_name(rw, plan, arena, Place::Value, name, tmp) {
                                if let Some(len) = name.to_wire(&mut wire_name) {
                                    copy.extend_from_slice(&wire_name[..len]);
                                    written = true;
                                }
                            }
                        }
                        if !written {
                            copy.extend_from_slice(&v[..vlen]);
                        }
                    }
                    if p > rd_end {
                        break 'sections;
                    }
                    copy.extend_from_within(p..rd_end);
                }
            }
            let len = copy.len() - rdlen_at - 2;
            if len > u16::MAX as usize {
                copy.truncate(base);
                continue;
            }
            copy[rdlen_at..rdlen_at + 2].copy_from_slice(&(len as u16).to_be_bytes());
            let pushed = resp.push_copied(section, copy, base);
            copy.truncate(base);
            if pushed.is_err() && resp.truncated() {
                break 'sections;
            }
        }
    }
    resp.set_rcode(revert_rcode(rw, plan, rcode, records));
    resp.finish();
}
