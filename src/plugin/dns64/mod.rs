//! `dns64`: AAAA records made from A records for IPv6-only clients behind NAT64
//! (RFC 6147), as CoreDNS's plugin of that name makes them (README.md beside this file).
//!
//! CoreDNS's plugin lets the next plugins answer the AAAA query, and when that answer
//! has no AAAA asks the whole server for the name's A records (`upstream.Lookup`). A
//! plugin here does no I/O, so the same two steps go through the worker:
//!
//! ```text
//!   AAAA query ─▶ serve: Next ─▶ later plugins answer (kubernetes, cache, forward, ...)
//!   follow_up (a response hook): an AAAA query from an IPv6 client (or allow_ipv4), a
//!       reply that is not NXDOMAIN and has no AAAA (or translate_all)?
//!         no  ─▶ the reply goes on as it is
//!         yes ─▶ the same name, type A, to the server itself (Step::Upstream's path:
//!                the worker sends it to the address the query came to, over its
//!                transport); the reply is dropped, its SOA's TTL kept in the cookie
//!   resume(A reply) ─▶ NOERROR; each A in its answer as an AAAA under the prefix
//!       (RFC 6052 2.2), TTL min(A, SOA or 600); other records (CNAMEs) as they are;
//!       its authority and additional sections; its TC
//! ```
//!
//! One lookup per AAAA query at most: the lookup is type A, which this plugin never
//! looks at, and a plugin's hook never sees its own reply; so it needs no mark (as
//! `rewrite`'s and `kubernetes`'s self-lookups do to stop loops). Whatever answers the
//! A query for this server (a cluster zone, the cache, forward's upstream) answers it
//! here, as in CoreDNS.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::chain::{ChainError, Handler, Query, Step, UpstreamProto, UpstreamReply, UpstreamRequest};
use crate::config::{ConfigError, Directive, Token};
use crate::dns::wire::{self, HEADER_LEN, MAX_NAME_LEN};
use crate::dns::{Header, Name, PushError, QueryBuilder, Rcode, Rdata, Record, Section, Transport, class, flag, rtype};
use crate::metrics::Families;
use crate::setup::{AttachCtx, Lifecycle, Plugin, SetupCtx};

/// The directive name, and the prefix of its errors.
const NAME: &str = "dns64";

/// The well-known prefix (RFC 6052 2.1), CoreDNS's default.
const WELL_KNOWN: ([u8; 16], u8) = ([0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 96);

/// The TTL cap when the AAAA reply has no SOA (RFC 6147 5.1.7; CoreDNS's 600).
const NO_SOA_TTL: u32 = 600;

/// How long the A lookup through the server may take: `forward`'s whole deadline, as
/// the lookup of a name outside the cluster is forwarded like any other query (the
/// other self-lookups, for names the server mostly answers itself, wait 2 s).
const TIMEOUT: Duration = Duration::from_secs(5);

/// EDNS options of the client copied onto the A lookup (CoreDNS asks with the client's
/// message, options included); more are left out.
const MAX_OPTIONS: usize = 16;

/// The plugin: the prefix (network bytes, host bits clear, and length) and its flags.
pub struct Dns64 {
    prefix: [u8; 16],
    len: u8,
    translate_all: bool,
    allow_ipv4: bool,
    /// `coredns_dns64_requests_translated_total`, known once the block is attached.
    counters: OnceLock<Counters>,
}

/// The translated-request counters of the block's `server` labels: one per label, kept
/// in the process state (so they outlive a reload, as CoreDNS's process-wide vector),
/// and which of them each route slot counts into.
struct Counters {
    by_slot: Box<[Option<Arc<AtomicU64>>]>,
    series: Box<[(Arc<str>, Arc<AtomicU64>)]>,
}

/// `dns64 [PREFIX]` or `dns64 [PREFIX] { prefix PREFIX; translate_all; allow_ipv4 }`.
/// As CoreDNS's parser, every `dns64` line of the block is read: a later prefix
/// replaces an earlier one, and a flag set anywhere stays set.
pub fn setup(dirs: &[&Directive], _: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    Ok(Plugin::both(Arc::new(Dns64::from_directives(dirs)?)))
}

impl Dns64 {
    fn from_directives(dirs: &[&Directive]) -> Result<Dns64, ConfigError> {
        let (mut prefix, mut len) = WELL_KNOWN;
        let (mut translate_all, mut allow_ipv4) = (false, false);
        for d in dirs {
            match d.args.as_slice() {
                [] => {}
                [p] => (prefix, len) = parse_prefix(p)?,
                _ => return Err(d.arg_err(NAME)),
            }
            for opt in d.options() {
                opt.expect_no_block(NAME)?;
                match opt.name.as_str() {
                    "prefix" => match opt.args.as_slice() {
                        [p] => (prefix, len) = parse_prefix(p)?,
                        _ => return Err(opt.arg_err(NAME)),
                    },
                    "translate_all" => {
                        opt.expect_args(NAME, 0, 0)?;
                        translate_all = true;
                    }
                    "allow_ipv4" => {
                        opt.expect_args(NAME, 0, 0)?;
                        allow_ipv4 = true;
                    }
                    other => return Err(opt.err(NAME, format!("unknown property '{other}'"))),
                }
            }
        }
        Ok(Dns64 {
            prefix,
            len,
            translate_all,
            allow_ipv4,
            counters: OnceLock::new(),
        })
    }

    /// The AAAA address for `v4` under the prefix (RFC 6052 2.2): the prefix's bytes,
    /// then the IPv4 address's, skipping byte 8 (bits 64 to 71, the `u` octet, zero),
    /// then zeros. CoreDNS's `to6` does the same for the lengths RFC 6052 has not (72,
    /// 80, 88): byte 8 is then the prefix's.
    fn embed(&self, v4: [u8; 4]) -> Ipv6Addr {
        embed(&self.prefix, self.len, v4)
    }

    /// Whether a reply to `q`'s query gets AAAA records made (CoreDNS's
    /// `requestShouldIntercept` and `responseShouldDNS64`), and if so the SOA TTL that
    /// caps theirs.
    fn wants(&self, q: &Query<'_, '_>) -> Option<u32> {
        let req = q.req;
        // RFC 6147 5.1: AAAA queries of class IN only.
        if req.qtype != rtype::AAAA || req.qclass != class::IN {
            return None;
        }
        // IPv6 clients only, unless allow_ipv4; as Go's `To4`, an IPv4-mapped address
        // is an IPv4 client.
        if !self.allow_ipv4 && is_ipv4(req.client.ip()) {
            return None;
        }
        let resp = &*q.resp;
        // RFC 6147 5.1.2: a name error goes to the client as it is. Records left out
        // for size: the client asks again over TCP and gets the whole answer (see the
        // README's differences). A withheld reply (rrl) is not sent at all.
        if resp.rcode() == Rcode::NXDOMAIN || resp.flags().tc() || resp.is_withheld() {
            return None;
        }
        // A failure the server wrote itself (a later plugin failed, no plugin was left,
        // a panic was caught: no plugin answered) goes out as it is: CoreDNS's dns64 has
        // no written message then and returns the error. And acl's refusal or filter
        // stands: CoreDNS's in-process A lookup carries the client's address, which acl
        // refuses again, while ours comes from the server's own address, which it would
        // let through (the client would get the records acl withheld).
        if q.answered_by.is_empty() || q.answered_by == "acl" {
            return None;
        }
        let mut soa_ttl = NO_SOA_TTL;
        let mut has_aaaa = false;
        let bytes = resp.bytes();
        for r in resp.records() {
            match (r.section, r.rtype) {
                (Section::Answer, rtype::AAAA) => has_aaaa = true,
                // CoreDNS takes the last SOA's TTL (its record TTL, not its MINIMUM).
                (Section::Authority, rtype::SOA) => {
                    soa_ttl = wire::get_u32(bytes, r.ttl_at as usize).unwrap_or(soa_ttl);
                }
                _ => {}
            }
        }
        // RFC 6147 5.1.1: AAAA records in the answer are the answer, unless translate_all
        // (CoreDNS's option that leaves 5.1.1 aside).
        (self.translate_all || !has_aaaa).then_some(soa_ttl)
    }

    /// Counts a translated request under the query's `server` label.
    fn count(&self, q: &Query<'_, '_>) {
        let counter = self
            .counters
            .get()
            .and_then(|c| c.by_slot.get(q.route.slot))
            .and_then(Option::as_ref);
        if let Some(c) = counter {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Parses `ADDR/LEN` as CoreDNS's `parsePrefix`, with its errors: an IPv6 network
/// (host bits cleared, as Go's `ParseCIDR`) whose length is a multiple of 8 from 32
/// to 96.
fn parse_prefix(tok: &Token) -> Result<([u8; 16], u8), ConfigError> {
    let text = tok.as_str();
    let err = |msg: String| ConfigError::at(&tok.loc, format!("{NAME}: {msg}"));
    let cidr = || err(format!("invalid CIDR address: {text}"));
    let (addr, len) = text.split_once('/').ok_or_else(cidr)?;
    if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(cidr());
    }
    let len: u32 = len.parse().map_err(|_| cidr())?;
    match addr.parse::<IpAddr>().map_err(|_| cidr())? {
        IpAddr::V4(ip) => {
            if len > 32 {
                return Err(cidr());
            }
            let net = u32::from(ip) & u32::MAX.checked_shl(32 - len).unwrap_or(0);
            Err(err(format!(
                "invalid netmask 32 IPv6 address: \"{}/{len}\"",
                std::net::Ipv4Addr::from(net)
            )))
        }
        IpAddr::V6(ip) => {
            if len > 128 {
                return Err(cidr());
            }
            let net = Ipv6Addr::from(u128::from(ip) & u128::MAX.checked_shl(128 - len).unwrap_or(0));
            if !len.is_multiple_of(8) || !(32..=96).contains(&len) {
                return Err(err(format!("invalid prefix length \"{net}/{len}\"")));
            }
            Ok((net.octets(), len as u8))
        }
    }
}

/// See [`Dns64::embed`].
fn embed(prefix: &[u8; 16], len: u8, v4: [u8; 4]) -> Ipv6Addr {
    let mut out = [0u8; 16];
    let start = usize::from(len / 8);
    out[..start].copy_from_slice(&prefix[..start]);
    let mut at = start;
    for b in v4 {
        if at == 8 {
            at += 1;
        }
        out[at] = b;
        at += 1;
    }
    Ipv6Addr::from(out)
}

/// Whether the client is an IPv4 one (Go's `To4() != nil`: IPv4, or IPv4-mapped IPv6).
fn is_ipv4(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    }
}

/// Writes the A query for the client's name into the worker's upstream buffer: RD, CD
/// and DO as the client's, the client's EDNS options but its COOKIE (which is for this
/// server, from that client), a large EDNS size (the reply is taken apart, not sent).
fn write_a_query(q: &mut Query<'_, '_>) {
    let req = q.req;
    let mut opts: [(u16, &[u8]); MAX_OPTIONS] = [(0, &[]); MAX_OPTIONS];
    let mut n = 0;
    for (code, data) in req.edns_options() {
        if code != crate::dns::cookie::OPTION && n < MAX_OPTIONS {
            opts[n] = (code, data);
            n += 1;
        }
    }
    QueryBuilder::new(req.qname_raw(), rtype::A)
        .rd(req.rd())
        .cd(req.cd())
        .edns(4096)
        .dnssec_ok(req.dnssec_ok())
        .options(&opts[..n])
        .write(&mut q.worker.upstream_msg);
}

/// Why a synthesis failed, for `errors`.
const LOOKUP_FAILED: &str = "the A lookup through the server got no reply";
const BAD_REPLY: &str = "the A reply from the server does not parse";

impl Dns64 {
    /// The reply made from the server's A reply `a` (CoreDNS's `Synthesize`): NOERROR
    /// with the client's question, header as a fresh reply (RD, CD), TC as `a` has it;
    /// `a`'s answer with every A turned into an AAAA (RFC 6147 5.1.7: TTL the lesser of
    /// the A's and `soa_ttl`) and every other record as it is (5.3.3: CNAMEs stay), then
    /// `a`'s authority and additional sections (5.3.2). The reply is at most 65,535
    /// bytes, so the walk visits at most ~4,700 records, each once.
    fn synthesize(&self, q: &mut Query<'_, '_>, a: &[u8], soa_ttl: u32) -> Result<(), PushError> {
        let h = Header::of(a).ok_or(PushError::Malformed)?;
        q.resp.start(q.req, Rcode::NOERROR);
        if h.tc() {
            q.resp.set_flag(flag::TC, true);
        }
        let counts = h.counts();
        let mut at = HEADER_LEN;
        for _ in 0..counts[0] {
            at = wire::skip_name(a, at).ok_or(PushError::Malformed)? + 4;
        }
        let question = q.req.qname_raw();
        let mut owner = [0u8; MAX_NAME_LEN];
        for _ in 0..counts[1] {
            let (name_end, olen) = wire::read_name(a, at, &mut owner).ok_or(PushError::Malformed)?;
            let head = (
                wire::get_u16(a, name_end),
                wire::get_u16(a, name_end + 2),
                wire::get_u32(a, name_end + 4),
                wire::get_u16(a, name_end + 8),
            );
            let (Some(t), Some(c), Some(ttl), Some(rdlen)) = head else {
                return Err(PushError::Malformed);
            };
            let rd = name_end + 10;
            let end = rd + usize::from(rdlen);
            let v4 = a.get(rd..end).and_then(|b| <[u8; 4]>::try_from(b).ok());
            let pushed = match v4 {
                Some(v4) if t == rtype::A && c == class::IN => {
                    let owner = &owner[..olen];
                    let record = Record {
                        // The question's name in the client's spelling (and compressed).
                        owner: if owner.eq_ignore_ascii_case(question) {
                            Name::QUESTION
                        } else {
                            Name::wire(owner)
                        },
                        rtype: rtype::AAAA,
                        ttl: ttl.min(soa_ttl),
                        data: Rdata::Aaaa(self.embed(v4)),
                    };
                    q.resp.push(Section::Answer, &record).map(|_| end)
                }
                _ => q.resp.push_copied(Section::Answer, a, at),
            };
            match pushed {
                Ok(next) => at = next,
                // What does not fit is left out and TC set, as for any reply.
                Err(PushError::Truncated) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        match q.resp.copy_sections(a, &[Section::Authority, Section::Additional]) {
            Ok(()) | Err(PushError::Truncated) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Handler for Dns64 {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The query goes on: what to do is decided on its reply ([`Handler::follow_up`]).
    fn serve(&self, _: &mut Query<'_, '_>) -> Step {
        Step::Next
    }

    fn follows_up(&self) -> bool {
        true
    }

    fn follow_up(&self, q: &mut Query<'_, '_>) -> Option<UpstreamRequest> {
        let soa_ttl = self.wants(q)?;
        write_a_query(q);
        Some(UpstreamRequest {
            to: q.req.local,
            // A TCP client's answer must not come back truncated from a UDP lookup.
            proto: match q.req.transport {
                Transport::Udp => UpstreamProto::Udp,
                Transport::Tcp => UpstreamProto::Tcp,
            },
            timeout: TIMEOUT,
            cookie: u64::from(soa_ttl),
            coalesce: None,
            expire: Duration::from_secs(10),
        })
    }

    fn resume(&self, q: &mut Query<'_, '_>, reply: UpstreamReply<'_>, cookie: u64) -> Step {
        // CoreDNS: an A lookup that could not be made is SERVFAIL, with its error.
        let UpstreamReply::Message(a) = reply else {
            return Step::Fail(Rcode::SERVFAIL, Some(ChainError::Plugin(NAME, LOOKUP_FAILED.into())));
        };
        let soa_ttl = u32::try_from(cookie).unwrap_or(NO_SOA_TTL);
        if self.synthesize(q, a, soa_ttl).is_err() {
            return Step::Fail(Rcode::SERVFAIL, Some(ChainError::Plugin(NAME, BAD_REPLY.into())));
        }
        self.count(q);
        Step::Answered
    }
}

impl Lifecycle for Dns64 {
    /// Finds the counter of each `server` label the block serves.
    fn attach(&self, block: &AttachCtx<'_>) {
        let slots = block.routes.iter().map(|r| r.slot + 1).max().unwrap_or(0);
        let mut by_slot: Vec<Option<Arc<AtomicU64>>> = vec![None; slots];
        let mut series: Vec<(Arc<str>, Arc<AtomicU64>)> = Vec::new();
        for r in block.routes {
            let counter = match series.iter().find(|(s, _)| *s == r.server) {
                Some((_, c)) => c.clone(),
                None => {
                    let key = format!("dns64|{}", r.server);
                    let c = block
                        .process
                        .kept(&key, |_: &Arc<AtomicU64>| true, || Arc::new(AtomicU64::new(0)));
                    series.push((r.server.clone(), c.clone()));
                    c
                }
            };
            by_slot[r.slot] = Some(counter);
        }
        let _ = self.counters.set(Counters {
            by_slot: by_slot.into_boxed_slice(),
            series: series.into_boxed_slice(),
        });
    }

    /// `coredns_dns64_requests_translated_total{server}`: once a request of that server
    /// was translated (CoreDNS's series appear with their first count), and once per
    /// scrape however many blocks share the label.
    fn metrics(&self, out: &mut Families) {
        let Some(c) = self.counters.get() else { return };
        for (server, counter) in c.series.iter() {
            let n = counter.load(Ordering::Relaxed);
            if n > 0 && out.first_from(Arc::as_ptr(counter)) {
                out.counter(
                    "coredns_dns64_requests_translated_total",
                    "Counter of DNS requests translated by dns64.",
                    &[("server", server)],
                    n as f64,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
