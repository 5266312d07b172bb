//! `rewrite`: changes the query the later plugins see (its name, type, class, EDNS
//! options) and the reply the client gets back (the question put back, names, values,
//! TTLs and rcodes rewritten), as CoreDNS's plugin of that name does (README.md beside
//! this file).
//!
//! ```text
//!   client query ─▶ serve: exact/suffix rules on the wire name (fast.rs): the client's
//!                   message with the new name, into the worker's `rewritten` buffer,
//!                   and a chain::Renamed mark (where the name ends, which rule);
//!                   any other rule: all rules in line order on text (rules.rs), the
//!                   new query built into the same buffer; the later plugins see it
//!   client reply ◀─ on_response: the chain hands the mark back (no second match)
//!                   and the client's question is put back in place (the records named
//!                   after it follow), or was written in place at once (the chain's
//!                   echo; checked, and undone where it cannot stand); without a mark (a query with records that
//!                   was written the text way) the wire rules are matched again;
//!                   otherwise the text
//!                   rules applied again to the client's query and the reply rebuilt:
//!                   the client's question, the response rules of the applied rules,
//!                   last first
//! ```
//!
//! Nothing is kept between the two halves but the mark, which lives only from serve's
//! return to this plugin's response hook for the same query, inside one run of the
//! chain: the worker may hold many queries at once (upstream exchanges), and applying
//! the rules again costs less than storing their results per query. Nothing is
//! allocated per query but a metadata value an `edns0` rule reads and a regex's match
//! groups.
//!
//! `cname` rules are the exception (cname.rs): their work needs the reply and a new
//! lookup, so a query they apply to goes through the server itself (Step::Upstream),
//! and a first answer waits, kept by the plugin, for the lookup of its new target.

mod answer;
mod cname;
mod fast;
mod rules;
mod text;

use crate::chain::{ChainError, Handler, Query, Renamed, Step, UpstreamReply};
use crate::config::{ConfigError, Directive};
use crate::dns::wire::{MAX_NAME_LEN, QNAME_OFFSET};
use crate::dns::{Header, QueryBuilder, Rcode, Request};
use crate::setup::{Plugin, SetupCtx};

use answer::Plan;
use fast::Fast;
use rules::{Applied, Kind, MAX_OPTIONS, MAX_RULES, Meta, Rule, Work};

/// The plugin: the rules of one server block, in line order.
pub struct Rewrite {
    rules: Vec<Rule>,
    /// Some rule is a `cname` rule.
    has_cname: bool,
    /// First replies of `cname` lookups waiting for their second.
    pending: cname::Pending,
}

/// Every `rewrite` line of the block is one rule; a line with fewer than two words and
/// a block takes the block's words as the rest of the rule (CoreDNS's `rewriteParse`:
/// `rewrite stop { name regex ... answer name ... }` is one rule).
pub fn setup(dirs: &[&Directive], _: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    Ok(Plugin::handler(parse(dirs)?))
}

fn parse(dirs: &[&Directive]) -> Result<Rewrite, ConfigError> {
    let mut out = Vec::new();
    for d in dirs {
        let mut words: Vec<&str> = d.args.iter().map(|t| t.as_str()).collect();
        if words.len() < 2 {
            for line in d.options() {
                words.push(line.name.as_str());
                words.extend(line.args.iter().map(|t| t.as_str()));
            }
        } else if let Some(first) = d.options().first() {
            return Err(ConfigError::at(
                first.loc(),
                format!("rewrite: unexpected block after '{}'", words.join(" ")),
            ));
        }
        let rule = rules::parse(&words).map_err(|e| d.err("rewrite", e))?;
        if out.len() == MAX_RULES {
            return Err(d.err("rewrite", format!("more than {MAX_RULES} rules in one server block")));
        }
        out.push(rule);
    }
    Ok(Rewrite {
        has_cname: out.iter().any(|r| matches!(r.kind, Kind::Cname(_))),
        rules: out,
        pending: cname::Pending::default(),
    })
}

impl Rewrite {
    /// Applies the rules to `req` in line order (CoreDNS's ServeDNS loop): a rule that
    /// applies stops the rest unless it is `continue`. With a plan, records which
    /// applied (and for name rules the names before and after, in `arena`).
    fn apply<'a>(
        &'a self,
        req: &Request<'a>,
        w: &mut Work<'a>,
        mut plan: Option<(&mut Plan, &mut Vec<u8>)>,
        meta: Meta<'_>,
    ) -> Result<(), ()> {
        for (i, rule) in self.rules.iter().enumerate() {
            let before = plan.as_mut().map(|(_, arena)| {
                let start = arena.len() as u32;
                arena.extend_from_slice(w.name.as_str().as_bytes());
                (start, arena.len() as u32)
            });
            match rule.apply(req, w, meta) {
                Applied::Ignored => {
                    if let (Some((_, arena)), Some((start, _))) = (plan.as_mut(), before) {
                        arena.truncate(start as usize);
                    }
                    continue;
                }
                Applied::Invalid => return Err(()),
                Applied::Done => {}
            }
            if let (Some((p, arena)), Some((b0, b1))) = (plan.as_mut(), before) {
                p.matched |= 1u64 << i;
                let a0 = arena.len() as u32;
                arena.extend_from_slice(w.name.as_str().as_bytes());
                p.names[i] = (b0, b1, a0, arena.len() as u32);
                p.effects |= match &rule.kind {
                    Kind::Name(r) => r.auto || !r.answers.is_empty(),
                    Kind::Ttl { .. } | Kind::Rcode { .. } => true,
                    _ => false,
                };
            }
            if rule.stops() {
                break;
            }
        }
        Ok(())
    }

    /// The `cname` rules the rules in line order reach for `req` (as a set of indexes).
    fn cnames_reached<'a>(&'a self, req: &Request<'a>, meta: Meta<'_>) -> u64 {
        let mut w = Work::of(req);
        let mut reached = 0u64;
        for (i, rule) in self.rules.iter().enumerate() {
            match rule.apply(req, &mut w, meta) {
                Applied::Ignored => continue,
                Applied::Invalid => return 0,
                Applied::Done => {}
            }
            if matches!(rule.kind, Kind::Cname(_)) {
                reached |= 1u64 << i;
            }
            if rule.stops() {
                break;
            }
        }
        reached
    }

    /// The `cname` rules in `reached`, last first (the order responses are rewritten
    /// in).
    fn cnames(&self, reached: u64) -> impl Iterator<Item = &cname::CnameRule> + Clone {
        self.rules
            .iter()
            .enumerate()
            .rev()
            .filter_map(move |(i, r)| match &r.kind {
                Kind::Cname(c) if reached & (1u64 << i) != 0 => Some(c),
                _ => None,
            })
    }

    /// Whether the client's message can take another question name as it is: no record
    /// but its OPT, so its bytes after the name hold no pointer that would move.
    fn renamable(req: &Request<'_>) -> bool {
        Header::of(req.raw).is_some_and(|h| {
            let [_, an, ns, ar] = h.counts();
            an == 0 && ns == 0 && ar == u16::from(req.edns.is_some())
        })
    }

    /// Writes the query the later plugins see into `out`.
    fn write(req: &Request<'_>, w: &Work<'_>, out: &mut Vec<u8>) -> bool {
        let mut qname = [0u8; MAX_NAME_LEN];
        let Some(len) = w.name.to_wire(&mut qname) else {
            return false;
        };
        let mut b = QueryBuilder::new(&qname[..len], w.qtype)
            .id(req.id)
            .class(w.qclass)
            .rd(req.rd())
            .cd(req.cd())
            .ad(req.flags.ad());
        let mut opts: [(u16, &[u8]); MAX_OPTIONS] = [(0, &[]); MAX_OPTIONS];
        let n = match (&w.options, req.edns) {
            (Some(o), edns) => {
                // CoreDNS adds an OPT advertising 4096 bytes to a query without one.
                let (size, dnssec_ok) = edns.map_or((4096, false), |e| (e.udp_size, e.dnssec_ok));
                b = b.edns(size).dnssec_ok(dnssec_ok);
                o.resolved(&mut opts)
            }
            (None, Some(e)) => {
                b = b.edns(e.udp_size).dnssec_ok(e.dnssec_ok);
                let mut n = 0;
                for (code, data) in req.edns_options() {
                    if n == MAX_OPTIONS {
                        return false;
                    }
                    opts[n] = (code, data);
                    n += 1;
                }
                n
            }
            (None, None) => 0,
        };
        if n > 0 {
            b = b.options(&opts[..n]);
        }
        b.write(out);
        true
    }
}

impl Rewrite {
    /// Exact and suffix rules on the wire: the client's message, the new name in place
    /// of its question name, written straight into the worker's buffer. `None` when
    /// only the text way can tell (something may be left in the buffer).
    #[inline(always)]
    fn serve_wire(&self, q: &mut Query<'_, '_>) -> Option<Step> {
        let out = &mut q.worker.rewritten;
        out.clear();
        out.extend_from_slice(&q.req.raw[..QNAME_OFFSET]);
        match fast::run(&self.rules, &q.req.qname, Some(out)) {
            Fast::Untouched => Some(Step::Next),
            Fast::Renamed { rule } if Rewrite::renamable(q.req) => {
                // The chain's contract (chain::Renamed): the client's header and bytes
                // after the name, the name lower-cased (the client's key and the
                // rule's lower-cased names); the rule comes back to on_response.
                let qname_end = out.len();
                out.extend_from_slice(&q.req.raw[q.req.qname_end..]);
                q.worker.renamed = Some(Renamed {
                    qname_end,
                    note: rule as u32,
                    // `answer auto` (on_response): a reply may come with the client's
                    // question already in place.
                    echo: matches!(&self.rules[rule].kind, Kind::Name(r) if r.auto),
                });
                Some(Step::Rewritten)
            }
            _ => None,
        }
    }

    /// `cname` rules, then the wire way, then every rule on text.
    #[inline(never)]
    fn serve_text(&self, q: &mut Query<'_, '_>) -> Step {
        if self.has_cname {
            if !cname::is_pass(q.req) {
                let meta = |label: &str, out: &mut String| q.metadata(label, out);
                if self.cnames_reached(q.req, &meta) != 0 {
                    return cname::first(q);
                }
            }
            if let Some(step) = self.serve_wire(q) {
                return step;
            }
        }
        let mut w = Work::of(q.req);
        let meta = |label: &str, out: &mut String| q.metadata(label, out);
        if self.apply(q.req, &mut w, None, &meta).is_err() {
            let msg = format!("invalid name after rewrite: {}", w.name.as_str());
            return Step::Fail(Rcode::SERVFAIL, Some(ChainError::Plugin("rewrite", msg.into())));
        }
        if !w.changed {
            return Step::Next;
        }
        if !Rewrite::write(q.req, &w, &mut q.worker.rewritten) {
            let msg = format!("more than {MAX_OPTIONS} EDNS options in a rewritten query");
            return Step::Fail(Rcode::SERVFAIL, Some(ChainError::Plugin("rewrite", msg.into())));
        }
        Step::Rewritten
    }

    /// What `on_response` does past the common echoed reply, with the chain's mark.
    #[inline(never)]
    fn respond(&self, q: &mut Query<'_, '_>, mark: Option<Renamed>) {
        // An exact or suffix rule with `answer auto`: the reply's names that come from
        // the question are pointers to it, so putting the client's question back in
        // place renames them as the text way would; any other name the rule would
        // rename sends the reply the text way.
        // The chain hands back what serve's wire path did (no second match); without
        // it (a query the wire path could not rename in place) the rules run again.
        let fast = match mark {
            Some(m) => Fast::Renamed { rule: m.note as usize },
            None => fast::run(&self.rules, &q.req.qname, None),
        };
        match fast {
            Fast::Untouched => {
                q.resp.unecho();
                return;
            }
            Fast::Renamed { rule, .. } => {
                if let Kind::Name(r) = &self.rules[rule].kind {
                    if let (true, Some(w)) = (r.auto, &r.wire) {
                        // A reply written with the client's question (chain::Renamed's
                        // echo) stands when its other names are ones the rule leaves
                        // alone; otherwise it comes back with the query's question.
                        if q.resp.settle_echo(|n| !w.reverts(n))
                            || q.resp.replace_question(q.req.question(), |n| !w.reverts(n))
                        {
                            return;
                        }
                    }
                }
            }
            Fast::Unsure => {}
        }
        // The text way works on the reply as written for the query (a no-op unless
        // the reply came echoed and was not settled above).
        q.resp.unecho();
        let mut arena = std::mem::take(&mut q.worker.rewritten);
        arena.clear();
        let mut plan = Plan::new();
        let mut w = Work::of(q.req);
        let meta = |label: &str, out: &mut String| q.metadata(label, out);
        let applied = self.apply(q.req, &mut w, Some((&mut plan, &mut arena)), &meta);
        plan.changed = w.changed;
        if applied.is_ok() && plan.matched != 0 && (plan.changed || plan.effects) {
            let mut copy = std::mem::take(&mut q.worker.scratch);
            let scratch = answer::Scratch {
                copy: &mut copy,
                name: &mut w.name,
                tmp: &mut w.next,
            };
            answer::rebuild(self, &plan, &arena, q.req, q.resp, scratch);
            q.worker.scratch = copy;
        }
        q.worker.rewritten = arena;
    }
}

impl Handler for Rewrite {
    fn name(&self) -> &'static str {
        "rewrite"
    }

    /// The wire way first, alone in a small function (the text way's state and the
    /// `cname` rules are set up only when it cannot tell).
    #[inline]
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        if !self.has_cname {
            if let Some(step) = self.serve_wire(q) {
                return step;
            }
        }
        self.serve_text(q)
    }

    /// The lookups of `cname` rules through the server (cname.rs).
    fn resume(&self, q: &mut Query<'_, '_>, reply: UpstreamReply<'_>, cookie: u64) -> Step {
        let meta = |label: &str, out: &mut String| q.metadata(label, out);
        let reached = self.cnames_reached(q.req, &meta);
        match cookie & 0xFF {
            1 => cname::after_first(q, reply, self.cnames(reached), &self.pending),
            _ => cname::after_second(q, reply, cookie, self.cnames(reached), &self.pending),
        }
    }

    fn rewrites(&self) -> bool {
        true
    }

    /// A class a `class` rule rewrites from is taken (CoreDNS's TestRewrite: `rewrite
    /// class CH IN` makes a CH query an IN one); the server refuses classes no plugin
    /// of the block takes.
    fn handles_class(&self, class: u16) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.kind, Kind::Class { from, .. } if from == class))
    }

    fn wants_response(&self) -> bool {
        true
    }

    fn on_response(&self, q: &mut Query<'_, '_>) {
        let mark = q.worker.renamed.take();
        if mark.is_some_and(|m| m.echo) && q.resp.settle_bare_echo() {
            // The common echoed reply stands with no rule looked at (issue 12).
            return;
        }
        self.respond(q, mark);
    }
}

#[cfg(test)]
mod tests;
