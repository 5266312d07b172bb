//! `acl`: allows, blocks, filters or drops queries by source address and query type,
//! as CoreDNS's plugin of that name does (README.md beside this file).
//!
//! ```text
//!   for each acl directive (a rule), in Corefile order:
//!       qname outside its zones ──▶ next rule
//!       first policy whose types and nets match:
//!           allow  ──▶ stop looking: the query goes on           (allowed)
//!           block  ──▶ REFUSED, EDE 15 "Blocked"                 (blocked)
//!           filter ──▶ NOERROR, no records, EDE 17 "Filtered"    (filtered)
//!           drop   ──▶ nothing is sent                           (dropped)
//!       no policy matches ──▶ next rule
//!   no rule decided ──▶ the query goes on                        (allowed)
//! ```
//!
//! Work per query: a pass over the rules and their policies, a zone test per zone of a
//! rule, a binary search in a policy's types and one in its prefix ranges (see
//! [`set::Nets`]); no allocation. Counters are per worker and summed at scrape time.

mod set;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::chain::{Handler, Query, Step};
use crate::config::{ConfigError, Directive};
use crate::dns::{Rcode, Zone};
use crate::metrics::Families;
use crate::plugin::origins;
use crate::setup::{AttachCtx, Lifecycle, Plugin, SetupCtx};
use set::{Nets, Prefix, Types};

/// The directive name, and the prefix of its errors.
const NAME: &str = "acl";

/// RFC 8914 4.16 and 4.18: the info codes CoreDNS's acl puts in its replies.
const EDE_BLOCKED: u16 = 15;
const EDE_FILTERED: u16 = 17;

/// What a matching policy does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Allow,
    Block,
    Filter,
    Drop,
}

/// One line of an acl block.
#[derive(Debug)]
struct Policy {
    action: Action,
    types: Types,
    nets: Nets,
}

/// One `acl` directive: its zones (with their index among the plugin's zones, for the
/// metrics) and its policies in order.
#[derive(Debug)]
struct Rule {
    zones: Vec<(Zone, usize)>,
    policies: Vec<Policy>,
}

/// The plugin: every `acl` of a server block, in the order written.
pub struct Acl {
    rules: Vec<Rule>,
    /// Every zone of every rule, once: the `zone` label.
    zones: Vec<Zone>,
    workers: usize,
    attached: OnceLock<Attached>,
}

/// One worker's counts for one (server, zone), on a cache line of its own.
#[derive(Default)]
#[repr(align(64))]
struct ZoneCounts {
    blocked: AtomicU64,
    filtered: AtomicU64,
    dropped: AtomicU64,
}

/// One worker's count of allowed queries for one server.
#[derive(Default)]
#[repr(align(64))]
struct Allowed(AtomicU64);

/// The block's routes, learnt at attach: the `server` label of each route slot and the
/// counters of each server (kept across reloads under their labels).
struct Attached {
    servers: Vec<Arc<str>>,
    /// Route slot → index in `servers`.
    by_slot: Vec<usize>,
    allowed: Vec<Arc<[Allowed]>>,
    /// `[server][zone]`.
    by_zone: Vec<Vec<Arc<[ZoneCounts]>>>,
}

/// `acl [ZONES...] { ACTION [type QTYPE...] [net SOURCE...] }`, any number per block.
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let (rules, zones) = parse(dirs, ctx)?;
    Ok(Plugin::both(Arc::new(Acl {
        rules,
        zones,
        workers: ctx.workers,
        attached: OnceLock::new(),
    })))
}

fn parse(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<(Vec<Rule>, Vec<Zone>), ConfigError> {
    let mut all: Vec<Zone> = Vec::new();
    let mut rules = Vec::with_capacity(dirs.len());
    for d in dirs {
        let zones = origins(NAME, d, ctx)?
            .into_iter()
            .map(|z| {
                let i = match all.iter().position(|a| *a == z) {
                    Some(i) => i,
                    None => {
                        all.push(z.clone());
                        all.len() - 1
                    }
                };
                (z, i)
            })
            .collect();
        let mut policies = Vec::with_capacity(d.options().len());
        for line in d.options() {
            policies.push(policy(line)?);
        }
        rules.push(Rule { zones, policies });
    }
    Ok((rules, all))
}

/// `type` and `net` start a section, in any letter case (setup.go isPreservedIdentifier).
fn is_section(s: &str) -> bool {
    s.eq_ignore_ascii_case("type") || s.eq_ignore_ascii_case("net")
}

/// One policy line: `ACTION [type QTYPE...] [net SOURCE...]`, sections in any order
/// and repeated at will, as setup.go reads them.
fn policy(line: &Directive) -> Result<Policy, ConfigError> {
    let err = |msg: String| line.err(NAME, msg);
    if line.block.is_some() {
        return Err(err("unexpected '{'".into()));
    }
    let action = match line.name.text.to_ascii_lowercase().as_str() {
        "allow" => Action::Allow,
        "block" => Action::Block,
        "filter" => Action::Filter,
        "drop" => Action::Drop,
        _ => {
            return Err(err(format!(
                "unexpected token {:?}; expect 'allow', 'block', 'filter' or 'drop'",
                line.name.text
            )));
        }
    };
    let mut types: Option<Vec<u16>> = None;
    let mut all_types = false;
    let mut nets: Option<Vec<Prefix>> = None;
    let mut args = line.args.iter().map(|t| t.text.as_str()).peekable();
    while let Some(section) = args.next() {
        if !is_section(section) {
            return Err(err(format!("unexpected token {section:?}; expect 'type | net'")));
        }
        let section = section.to_ascii_lowercase();
        let mut tokens = Vec::new();
        while let Some(t) = args.next_if(|t| !is_section(t)) {
            tokens.push(t);
        }
        if tokens.is_empty() {
            return Err(err(format!("no token specified in {section:?} section")));
        }
        if section == "type" {
            let list = types.get_or_insert_with(Vec::new);
            for t in tokens {
                // setup.go: `*` matches every type, and ends the section's reading.
                if t == "*" {
                    all_types = true;
                    break;
                }
                let code =
                    set::type_from_name(t).ok_or_else(|| err(format!("unexpected token {t:?}; expect legal QTYPE")))?;
                list.push(code);
            }
        } else {
            let list = nets.get_or_insert_with(Vec::new);
            for t in tokens {
                // setup.go: `*` is every address of both families, replacing what came
                // before in the policy, and ends the section's reading.
                if t == "*" {
                    list.clear();
                    list.extend(Prefix::ALL);
                    break;
                }
                // setup.go normalize: a bare address is a /32 or a /128.
                let cidr = match (t.contains('/'), t.contains(':')) {
                    (true, _) => t.to_string(),
                    (false, true) => format!("{t}/128"),
                    (false, false) => format!("{t}/32"),
                };
                let p = Prefix::parse(&cidr).ok_or_else(|| err(format!("illegal CIDR notation {cidr:?}")))?;
                list.push(p);
            }
        }
    }
    let types = match types {
        Some(mut list) if !all_types => {
            list.sort_unstable();
            list.dedup();
            Types::Some(list.into_boxed_slice())
        }
        _ => Types::All,
    };
    let nets = Nets::new(nets.as_deref().unwrap_or(&Prefix::ALL));
    Ok(Policy { action, types, nets })
}

/// What the rules decided for a query: the action and the rule zone it matched in;
/// `None` when no policy matched (the query is allowed).
fn decide(rules: &[Rule], qname: &crate::dns::NameKey, qtype: u16, client: IpAddr) -> Option<(Action, usize)> {
    for rule in rules {
        // plugin.Zones.Matches: the longest of the rule's zones that holds the name.
        let Some(zone) = rule
            .zones
            .iter()
            .filter(|(z, _)| z.contains(qname))
            .max_by_key(|(z, _)| z.wire().len())
            .map(|&(_, i)| i)
        else {
            continue;
        };
        let hit = rule
            .policies
            .iter()
            .find(|p| p.types.contains(qtype) && p.nets.contains(client));
        // acl.go: the first policy that matches decides, an allow included (it ends
        // the checking of every rule).
        if let Some(p) = hit {
            return Some((p.action, zone));
        }
    }
    None
}

impl Handler for Acl {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        let decided = decide(&self.rules, &q.req.qname, q.req.qtype, q.req.client.ip());
        let counts = self.attached.get().and_then(|a| {
            let s = *a.by_slot.get(q.route.slot)?;
            Some((a, s))
        });
        let Some((action, zone)) = decided.filter(|(a, _)| *a != Action::Allow) else {
            if let Some((a, s)) = counts {
                a.allowed[s][q.worker.id % self.workers]
                    .0
                    .fetch_add(1, Ordering::Relaxed);
            }
            return Step::Next;
        };
        let c = counts.map(|(a, s)| &a.by_zone[s][zone][q.worker.id % self.workers]);
        match action {
            Action::Block => {
                // acl.go: REFUSED with EDE Blocked (the EDE only where the client sent
                // EDNS: README "Differences").
                q.resp.start(q.req, Rcode::REFUSED);
                q.resp.set_ede(EDE_BLOCKED, "");
                if let Some(c) = c {
                    c.blocked.fetch_add(1, Ordering::Relaxed);
                }
            }
            Action::Filter => {
                // acl.go: an empty NOERROR with EDE Filtered.
                q.resp.start(q.req, Rcode::NOERROR);
                q.resp.set_ede(EDE_FILTERED, "");
                if let Some(c) = c {
                    c.filtered.fetch_add(1, Ordering::Relaxed);
                }
            }
            // (Allow went on above.)
            Action::Drop | Action::Allow => {
                // acl.go: success without a reply written, so the server sends nothing;
                // the plugins before see an empty NOERROR (CoreDNS's log prints that).
                q.resp.start(q.req, Rcode::NOERROR);
                q.resp.withhold();
                if let Some(c) = c {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Step::Answered
    }
}

impl Lifecycle for Acl {
    fn attach(&self, block: &AttachCtx<'_>) {
        let (by_slot, servers) = block.servers_by_slot();
        let allowed = servers
            .iter()
            .map(|s| block.process.kept_per_worker(&format!("{NAME}|{s}"), self.workers))
            .collect();
        let by_zone = servers
            .iter()
            .map(|s| {
                self.zones
                    .iter()
                    .map(|z| {
                        block
                            .process
                            .kept_per_worker(&format!("{NAME}|{s}|{}", z.as_str()), self.workers)
                    })
                    .collect()
            })
            .collect();
        let attached = Attached {
            servers,
            by_slot,
            allowed,
            by_zone,
        };
        if self.attached.set(attached).is_err() {
            log::warn!(target: "plugin/acl", "attached twice; keeping the first routes");
        }
    }

    fn metrics(&self, out: &mut Families) {
        let Some(a) = self.attached.get() else {
            return;
        };
        for (i, server) in a.servers.iter().enumerate() {
            // Two blocks on one server count into the same kept counters: written once.
            if out.first_from(Arc::as_ptr(&a.allowed[i])) {
                let n: u64 = a.allowed[i].iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
                out.counter(
                    "coredns_acl_allowed_requests_total",
                    "Counter of DNS requests being allowed.",
                    &[("server", server), ("view", "")],
                    n as f64,
                );
            }
            for (z, zone) in self.zones.iter().enumerate() {
                let counts = &a.by_zone[i][z];
                if !out.first_from(Arc::as_ptr(counts)) {
                    continue;
                }
                let sum = |f: fn(&ZoneCounts) -> &AtomicU64| -> f64 {
                    counts.iter().map(|c| f(c).load(Ordering::Relaxed)).sum::<u64>() as f64
                };
                let labels = [("server", &**server), ("zone", zone.as_str()), ("view", "")];
                out.counter(
                    "coredns_acl_blocked_requests_total",
                    "Counter of DNS requests being blocked.",
                    &labels,
                    sum(|c| &c.blocked),
                );
                out.counter(
                    "coredns_acl_filtered_requests_total",
                    "Counter of DNS requests being filtered.",
                    &labels,
                    sum(|c| &c.filtered),
                );
                out.counter(
                    "coredns_acl_dropped_requests_total",
                    "Counter of DNS requests being dropped.",
                    &labels,
                    sum(|c| &c.dropped),
                );
            }
        }
    }
}
