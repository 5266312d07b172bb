//! `cname` rules (CoreDNS's cname_target.go): a CNAME target in the reply that a rule
//! matches is replaced, and the new target is looked up to fill the answer.
//!
//! CoreDNS does this from its response writer, asking the whole server for the new
//! target (`upstream.Lookup`). A plugin here does no I/O and sees no reply it can
//! still send queries for, so the plugin asks the server itself, twice, through the
//! worker (as k8s_external follows a load balancer's host name):
//!
//! ```text
//!   client query ─▶ serve: a cname rule applies ─▶ the client's query, marked, to the
//!                   server itself (Step::Upstream) ─▶ reply 1: what the block answers
//!                   (the marked pass runs every rule but `cname`)
//!   resume(1) ─▶ a CNAME target a rule matches? no: reply 1 is the answer
//!             ─▶ yes: the new target (client's type), marked, to the server itself;
//!                reply 1 kept (per plugin, bounded) until
//!   resume(2) ─▶ reply 1's CNAMEs up to the matched one (its target replaced), then
//!                reply 2's answer; reply 1's rcode, authority and additional; TC as
//!                reply 2 has it (CoreDNS: "if not propagated, the truncated response
//!                might get cached")
//! ```
//!
//! The mark is a local-use EDNS option; a query that carries it is not sent again, so
//! the lookups cannot loop.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use regex::Regex;

use super::rules::{MAX_OPTIONS, MAX_REGEX_LEN, compile, regex_rewrite};
use super::text::{Text, normalize};
use crate::chain::{Query, Step, UpstreamProto, UpstreamReply, UpstreamRequest};
use crate::dns::wire::{self, HEADER_LEN, MAX_NAME_LEN};
use crate::dns::{
    Header, HeaderMut, Name, QueryBuilder, Rcode, Rdata, Record, Request, Section, Transport, flag, rtype,
};

/// The EDNS option (local-use range, RFC 6891 9) on the queries `rewrite` sends
/// through the server for its `cname` rules: the server's own pass, not a client's.
pub const PASS_OPTION: u16 = 65302;

/// First replies kept while their second lookup is out; the oldest goes first (its
/// query then gets SERVFAIL: its first reply is gone). At most 1,024 x 64 KiB.
const MAX_PENDING: usize = 1024;

/// How long a lookup through the server may take (as k8s_external's).
const TIMEOUT: Duration = Duration::from_secs(2);

/// The `upstream` cookie of each lookup: which one, and for the second its key.
const FIRST: u64 = 1;
const SECOND: u64 = 2;

/// How a `cname` rule matches a target.
#[derive(Debug)]
enum How {
    Exact,
    Prefix,
    Suffix,
    Substring,
    Regex(Regex),
}

/// One `cname` rule.
#[derive(Debug)]
pub struct CnameRule {
    how: How,
    from: String,
    to: String,
}

/// CoreDNS's `newCNAMERule`, with its messages: `[TYPE] FROM TO`, both lower-cased,
/// made fully qualified for `exact` only.
pub fn parse(args: &[&str]) -> Result<CnameRule, String> {
    let (kind, from, to) = match args {
        [kind, from, to] => (kind.to_ascii_lowercase(), *from, *to),
        [from, to] => ("exact".to_string(), *from, *to),
        _ => return Err(format!("too few ({}) arguments for a cname rule", args.len())),
    };
    let (from, to) = (from.to_ascii_lowercase(), to.to_ascii_lowercase());
    let how = match kind.as_str() {
        "exact" => {
            return Ok(CnameRule {
                how: How::Exact,
                from: normalize(&from),
                to: normalize(&to),
            });
        }
        "prefix" => How::Prefix,
        "suffix" => How::Suffix,
        "substring" => How::Substring,
        "regex" => {
            if from.len() > MAX_REGEX_LEN {
                return Err(format!(
                    "regex pattern too long in a cname rule: {} > {MAX_REGEX_LEN}",
                    from.len()
                ));
            }
            How::Regex(compile(&from).map_err(|e| format!("invalid cname rewrite regex pattern: {e}"))?)
        }
        _ => return Err(format!("unknown cname rewrite type: {kind}")),
    };
    Ok(CnameRule { how, from, to })
}

impl CnameRule {
    /// CoreDNS's `getFromAndToTarget` and the check after it: the new target for
    /// `target` (lower-cased presentation form) in `out`, or `false`.
    pub fn target(&self, target: &str, out: &mut Text) -> bool {
        out.clear();
        let from = self.from.as_str();
        match &self.how {
            How::Exact => target == from && out.push(&self.to),
            How::Prefix => target
                .strip_prefix(from)
                .is_some_and(|after| out.push(&self.to) && out.push(after)),
            How::Suffix => target
                .strip_suffix(from)
                .is_some_and(|before| out.push(before) && out.push(&self.to)),
            How::Substring => {
                if from.is_empty() || !target.contains(from) {
                    return false;
                }
                let mut rest = target;
                let mut ok = true;
                while let Some(at) = rest.find(from) {
                    ok &= out.push(&rest[..at]) && out.push(&self.to);
                    rest = &rest[at + from.len()..];
                }
                ok && out.push(rest)
            }
            How::Regex(r) => regex_rewrite(r, &self.to, target, out) == Some(true),
        }
    }
}

/// Replies kept between the two lookups, by key.
#[derive(Default)]
pub struct Pending {
    next: AtomicU64,
    kept: Mutex<VecDeque<(u64, Vec<u8>)>>,
}

impl Pending {
    fn keep(&self, reply: &[u8]) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.kept.lock();
        if kept.len() == MAX_PENDING {
            kept.pop_front();
        }
        kept.push_back((key, reply.to_vec()));
        key
    }

    fn take(&self, key: u64) -> Option<Vec<u8>> {
        let mut kept = self.kept.lock();
        let at = kept.iter().position(|(k, _)| *k == key)?;
        kept.remove(at).map(|(_, r)| r)
    }
}

/// Whether `req` is one of the server's own passes.
pub fn is_pass(req: &Request<'_>) -> bool {
    req.edns_options().any(|(code, _)| code == PASS_OPTION)
}

/// A lookup through the server: to the address the query came to, over the client's
/// transport (a TCP client's answer must not come back truncated from a UDP pass).
fn upstream(q: &Query<'_, '_>, cookie: u64) -> Step {
    Step::Upstream(UpstreamRequest {
        to: q.req.local,
        proto: match q.req.transport {
            Transport::Udp => UpstreamProto::Udp,
            Transport::Tcp => UpstreamProto::Tcp,
        },
        timeout: TIMEOUT,
        cookie,
        coalesce: None,
        expire: Duration::from_secs(10),
    })
}

/// The first lookup: the client's query, marked, through the server (its COOKIE
/// option left out: it is the client's, for this server).
pub fn first(q: &mut Query<'_, '_>) -> Step {
    let mut opts: [(u16, &[u8]); MAX_OPTIONS + 1] = [(0, &[]); MAX_OPTIONS + 1];
    let mut n = 0;
    for (code, data) in q.req.edns_options() {
        if code != crate::dns::cookie::OPTION && n < MAX_OPTIONS {
            opts[n] = (code, data);
            n += 1;
        }
    }
    opts[n] = (PASS_OPTION, &[]);
    let size = q.req.edns.map_or(4096, |e| e.udp_size.max(512));
    QueryBuilder::new(q.req.qname_raw(), q.req.qtype)
        .class(q.req.qclass)
        .rd(q.req.rd())
        .cd(q.req.cd())
        .edns(size)
        .dnssec_ok(q.req.dnssec_ok())
        .options(&opts[..=n])
        .write(&mut q.worker.upstream_msg);
    upstream(q, FIRST)
}

/// The CNAME record of `reply`'s answer whose target a rule of `rules` (applied, in
/// the order given) matches: its index among the answer's records, with the new
/// target (wire form) in `to`.
fn matched<'r>(
    reply: &[u8],
    rules: impl Iterator<Item = &'r CnameRule> + Clone,
    to: &mut [u8; MAX_NAME_LEN],
) -> Option<(usize, usize)> {
    let counts = Header::of(reply)?.counts();
    let mut at = HEADER_LEN;
    for _ in 0..counts[0] {
        at = wire::skip_name(reply, at)? + 4;
    }
    let (mut text, mut next) = (Text::new(), Text::new());
    for i in 0..counts[1] as usize {
        let name_end = wire::skip_name(reply, at)?;
        let t = wire::get_u16(reply, name_end)?;
        let rd = name_end + 10;
        if t == rtype::CNAME {
            let mut target = [0u8; MAX_NAME_LEN];
            let (_, len) = wire::read_name(reply, rd, &mut target)?;
            text.set_wire(&target[..len], true);
            for rule in rules.clone() {
                if rule.target(text.as_str(), &mut next) {
                    let len = next.to_wire(to)?;
                    return Some((i, len));
                }
            }
        }
        at = wire::skip_record(reply, at)?;
    }
    None
}

/// After the first lookup: the answer as it is, or the second lookup.
pub fn after_first<'r>(
    q: &mut Query<'_, '_>,
    reply: UpstreamReply<'_>,
    rules: impl Iterator<Item = &'r CnameRule> + Clone,
    pending: &Pending,
) -> Step {
    let UpstreamReply::Message(reply) = reply else {
        return Step::Fail(Rcode::SERVFAIL, None);
    };
    let mut to = [0u8; MAX_NAME_LEN];
    match matched(reply, rules, &mut to) {
        None => {
            copy_reply(q, reply);
            Step::Answered
        }
        Some((_, len)) => {
            let key = pending.keep(reply);
            QueryBuilder::new(&to[..len], q.req.qtype)
                .class(q.req.qclass)
                .rd(q.req.rd())
                .edns(4096)
                .options(&[(PASS_OPTION, &[])])
                .write(&mut q.worker.upstream_msg);
            upstream(q, (key << 8) | SECOND)
        }
    }
}

/// After the second lookup: the answer made of both (see the module comment).
pub fn after_second<'r>(
    q: &mut Query<'_, '_>,
    reply: UpstreamReply<'_>,
    cookie: u64,
    rules: impl Iterator<Item = &'r CnameRule> + Clone,
    pending: &Pending,
) -> Step {
    let Some(first) = pending.take(cookie >> 8) else {
        return Step::Fail(Rcode::SERVFAIL, None);
    };
    let (UpstreamReply::Message(second), Some(h)) = (reply, Header::of(&first)) else {
        // CoreDNS: "upstream lookup failed", the reply as it was.
        copy_reply(q, &first);
        return Step::Answered;
    };
    let mut to = [0u8; MAX_NAME_LEN];
    let Some((index, len)) = matched(&first, rules, &mut to) else {
        copy_reply(q, &first);
        return Step::Answered;
    };
    start_like(q, &first);
    let counts = h.counts();
    let mut at = HEADER_LEN;
    for _ in 0..counts[0] {
        match wire::skip_name(&first, at) {
            Some(end) => at = end + 4,
            None => return Step::Fail(Rcode::SERVFAIL, None),
        }
    }
    // CoreDNS keeps the CNAME records up to the matched one, and only those.
    for i in 0..=index {
        let Some(name_end) = wire::skip_name(&first, at) else {
            break;
        };
        let is_cname = wire::get_u16(&first, name_end) == Some(rtype::CNAME);
        if i == index {
            let mut owner = [0u8; MAX_NAME_LEN];
            let (Some((_, olen)), Some(ttl)) = (
                wire::read_name(&first, at, &mut owner),
                wire::get_u32(&first, name_end + 4),
            ) else {
                break;
            };
            let _ = q.resp.push(
                Section::Answer,
                &Record {
                    owner: Name::wire(&owner[..olen]),
                    rtype: rtype::CNAME,
                    ttl,
                    data: Rdata::Name(Name::wire(&to[..len])),
                },
            );
        } else if is_cname {
            let _ = q.resp.push_copied(Section::Answer, &first, at);
        }
        match wire::skip_record(&first, at) {
            Some(next) => at = next,
            None => break,
        }
    }
    let _ = q.resp.copy_sections(second, &[Section::Answer]);
    let _ = q.resp.copy_sections(&first, &[Section::Authority, Section::Additional]);
    let tc = Header::of(second).is_some_and(|h| h.tc());
    q.resp.set_flag(flag::TC, tc);
    Step::Answered
}

/// Starts the client's reply with `reply`'s rcode and header flags (TC aside).
fn start_like(q: &mut Query<'_, '_>, reply: &[u8]) {
    let rcode = wire::message_rcode(reply);
    q.resp.start(q.req, rcode);
    if let (Some(h), Some(mut hm)) = (Header::of(reply), HeaderMut::of(q.resp.bytes_mut())) {
        let mut flags = h.flags();
        flags.0 &= !flag::TC;
        hm.set_flags(flags);
    }
}

/// The server's reply for the client as it is.
fn copy_reply(q: &mut Query<'_, '_>, reply: &[u8]) {
    start_like(q, reply);
    let _ = q
        .resp
        .copy_sections(reply, &[Section::Answer, Section::Authority, Section::Additional]);
    if Header::of(reply).is_some_and(|h| h.tc()) {
        q.resp.set_flag(flag::TC, true);
    }
}
