//! `autopath`: server-side search-path completion (README.md beside this file).
//!
//! A pod's resolver with `ndots:5` tries `name.<ns>.svc.<zone>`, `name.svc.<zone>`,
//! `name.<zone>` (and the host's domains) before `name` itself: four queries for an
//! external name. Seeing the first, autopath finds the first element of the client's
//! search path under which the name exists and answers that, with a CNAME from the
//! asked name to the found one (CoreDNS's answer shape), so the client stops at once.
//!
//! ```text
//!   query x.<ns>.svc.<zone> ─▶ search path of the client (kubernetes: its pod's namespace,
//!                              only when exactly one pod has the address)
//!                           ─▶ for each element: does x.<element> exist?  (asked of the
//!                              plugins that know: kubernetes for its zones; no chain run)
//!                           ─▶ the first that does, or the name as asked (the last element)
//!                           ─▶ Step::Rewritten: the rest of the chain answers that name
//!   on_response             ◀─ the question put back, CNAME asked -> found in front
//! ```
//!
//! CoreDNS runs the rest of the chain once per element and takes the first reply that is
//! not NXDOMAIN. Here existence is decided from the data of the plugin that owns the
//! name, by name only: an A and an AAAA query for one name always stop at the same
//! element (coredns#3765, where one got NXDOMAIN and the other an answer), and no query
//! runs the chain more than once. An element that no plugin can decide (a host search
//! domain, a zone whose name errors fall through) ends the completion: the query goes on
//! as asked and the client searches on its own, as without autopath.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::chain::{ChainError, Handler, Query, SearchPath, Step};
use crate::config::{ConfigError, Directive, Loc};
use crate::dns::wire::{HEADER_LEN, MAX_NAME_LEN, QNAME_OFFSET};
use crate::dns::{Header, Name, QueryBuilder, Rcode, Rdata, Record, Request, Section, Zone, flag, rtype, wire};
use crate::metrics::Families;
use crate::plugin::{once, origins};
use crate::setup::{AttachCtx, Lifecycle, Plugin, SetupCtx};

#[cfg(test)]
mod tests;

const NAME: &str = "autopath";
/// The longest resolv.conf read.
const MAX_RESOLV_CONF: u64 = 64 * 1024;
/// EDNS options copied into the completed query (a query has a handful at most).
const MAX_OPTIONS: usize = 16;

/// Where the search path comes from.
enum Source {
    /// `RESOLV-CONF`: its `search` list, then the root (the name as asked).
    File(SearchPath),
    /// `@NAME`: the plugin of that name in the block (kubernetes).
    Plugin(String),
}

/// The plugin.
pub struct Autopath {
    zones: Vec<Zone>,
    source: Source,
    loc: Loc,
    /// The `@NAME` plugin, once the chain is built (unset: no completion, as CoreDNS
    /// when the block has no such plugin).
    target: OnceLock<Arc<dyn Handler>>,
    /// The block's plugins that can say whether a name exists (kubernetes).
    deciders: OnceLock<Vec<Arc<dyn Handler>>>,
    workers: usize,
    attached: OnceLock<Attached>,
}

/// Per-server counters of `coredns_autopath_success_total`.
struct Attached {
    /// Route slot → index into `servers`.
    by_slot: Vec<usize>,
    servers: Vec<Arc<str>>,
    /// Per server, per worker.
    counters: Vec<Arc<[AtomicU64]>>,
}

/// Per-worker buffers: the search path and the copy of a reply being rebuilt.
#[derive(Default)]
struct Scratch {
    path: SearchPath,
    copy: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Parses `autopath [ZONE...] RESOLV-CONF|@NAME`.
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    Ok(Plugin::both(Arc::new(parse(dirs, ctx)?)))
}

fn parse(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Autopath, ConfigError> {
    let d = once(NAME, dirs)?;
    d.expect_no_block(NAME)?;
    let Some((last, zone_args)) = d.args.split_last() else {
        return Err(d.err(NAME, "no resolv-conf specified"));
    };
    let source = match last.as_str().strip_prefix('@') {
        Some(name) => Source::Plugin(name.to_string()),
        None => Source::File(
            read_search(last.as_str(), ctx).map_err(|e| ConfigError::at(&last.loc, format!("{NAME}: {e}")))?,
        ),
    };
    let zone_dir = Directive {
        args: zone_args.to_vec(),
        block: None,
        ..d.clone()
    };
    let zones = origins(NAME, &zone_dir, ctx)?;
    Ok(Autopath::new(zones, source, d.loc().clone(), ctx.workers))
}

/// The search list of a resolv.conf file (CoreDNS: `dns.ClientConfigFromFile`), the
/// root last; relative paths are taken from the Corefile's directory.
fn read_search(path: &str, ctx: &SetupCtx<'_>) -> Result<SearchPath, String> {
    use std::io::Read;
    let full = ctx.config_dir.join(path);
    let mut text = String::new();
    std::fs::File::open(&full)
        .and_then(|f| f.take(MAX_RESOLV_CONF).read_to_string(&mut text))
        .map_err(|e| format!("failed to parse {path:?}: open {path}: {e}"))?;
    let mut search: Vec<Zone> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let Some("search" | "domain") = words.next() {
            search = words.filter(|w| *w != ".").filter_map(Zone::new).collect();
        }
    }
    let mut path = SearchPath::default();
    for z in search.iter().take(SearchPath::MAX - 1) {
        path.push(&[], z.wire());
    }
    path.push(&[], &[0]);
    Ok(path)
}

/// Writes into `out` the client's query with its name replaced by `name` (wire form):
/// same ID, type, class, flags and EDNS options. `false` when it cannot be written.
fn write_query(req: &Request<'_>, name: &[u8], out: &mut Vec<u8>) -> bool {
    let mut b = QueryBuilder::new(name, req.qtype)
        .id(req.id)
        .class(req.qclass)
        .rd(req.rd())
        .cd(req.cd())
        .ad(req.flags.ad());
    let mut opts: [(u16, &[u8]); MAX_OPTIONS] = [(0, &[]); MAX_OPTIONS];
    let mut n = 0;
    if let Some(e) = req.edns {
        b = b.edns(e.udp_size).dnssec_ok(e.dnssec_ok);
        for (code, data) in req.edns_options() {
            if n == MAX_OPTIONS {
                return false;
            }
            opts[n] = (code, data);
            n += 1;
        }
    }
    if n > 0 {
        b = b.options(&opts[..n]);
    }
    b.write(out);
    true
}

/// What the search decided.
#[derive(Debug, PartialEq, Eq)]
enum Pick {
    /// Leave the query as it is.
    AsAsked,
    /// Complete it to the search path's element `i` (the query is in the buffer).
    Element(usize),
}

impl Autopath {
    fn new(zones: Vec<Zone>, source: Source, loc: Loc, workers: usize) -> Autopath {
        Autopath {
            zones,
            source,
            loc,
            target: OnceLock::new(),
            deciders: OnceLock::new(),
            workers,
            attached: OnceLock::new(),
        }
    }

    /// Whether any of the deciders knows if the name of `req` exists.
    fn exists(&self, req: &Request<'_>, q: &Query<'_, '_>) -> Result<Option<bool>, ChainError> {
        for d in self.deciders.get().into_iter().flatten() {
            let Some(p) = d.autopather() else { continue };
            match p.name_exists(req, &q.worker.budget) {
                Ok(Some(e)) => return Ok(Some(e)),
                Ok(None) => {}
                Err(_) => return Err(ChainError::OverBudget(NAME)),
            }
        }
        Ok(None)
    }

    /// Fills `path` with the client's search path; `false`: no completion.
    fn search_path(&self, req: &Request<'_>, path: &mut SearchPath) -> bool {
        match &self.source {
            Source::File(p) => {
                path.clear();
                for i in 0..p.len() {
                    path.push(&[], p.get(i));
                }
                true
            }
            Source::Plugin(_) => {
                let Some(p) = self.target.get().and_then(|t| t.autopather()) else {
                    return false;
                };
                p.search_path(req, path)
            }
        }
    }

    /// Decides the completion of the query; writes the completed query into the
    /// worker's `rewritten` buffer when there is one.
    fn pick(&self, q: &mut Query<'_, '_>, path: &SearchPath) -> Result<Pick, ChainError> {
        let req = q.req;
        let Some(first) = (!path.is_empty()).then(|| path.get(0)) else {
            return Ok(Pick::AsAsked);
        };
        // CoreDNS's firstInSearchPath: the name is under the first element. The name
        // equal to it has nothing to complete (CoreDNS would make `.<element>`).
        let before = match req.qname.labels_before(first) {
            Some(n) if n > 0 => n,
            _ => return Ok(Pick::AsAsked),
        };
        // The name in front of the element, as the client spelled it.
        let base = &req.raw[QNAME_OFFSET..QNAME_OFFSET + req.qname.label_offset(before)];
        let mut name = [0u8; MAX_NAME_LEN];
        let mut buf = std::mem::take(&mut q.worker.rewritten);
        let mut pick = Ok(Pick::AsAsked);
        let last = path.len() - 1;
        for i in 0..path.len() {
            let element = path.get(i);
            let len = base.len() + element.len();
            if len > MAX_NAME_LEN {
                // No such name: as NXDOMAIN.
                continue;
            }
            name[..base.len()].copy_from_slice(base);
            name[base.len()..len].copy_from_slice(element);
            buf.clear();
            if !write_query(req, &name[..len], &mut buf) {
                break;
            }
            let Ok(candidate) = Request::parse(&buf, req.transport, req.client, req.local) else {
                break;
            };
            match self.exists(&candidate, q) {
                Ok(Some(true)) => {
                    pick = Ok(if i == 0 { Pick::AsAsked } else { Pick::Element(i) });
                    break;
                }
                Ok(Some(false)) => continue,
                // Nobody can tell: only the name as asked is answered without
                // knowing (the client would ask it next); otherwise the client
                // searches on as it would without autopath.
                Ok(None) if i == last && i > 0 => {
                    pick = Ok(Pick::Element(i));
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    pick = Err(e);
                    break;
                }
            }
        }
        q.worker.rewritten = buf;
        pick
    }

    /// Counts a completion answered with something other than NXDOMAIN.
    fn count(&self, q: &Query<'_, '_>) {
        let Some(a) = self.attached.get() else { return };
        let Some(&s) = a.by_slot.get(q.route.slot) else { return };
        if let Some(c) = a.counters.get(s).and_then(|c| c.get(q.worker.id)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Handler for Autopath {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        if !Zone::any_contains(&self.zones, &q.req.qname) {
            return Step::Next;
        }
        let picked = SCRATCH.with(|s| {
            let path = &mut s.borrow_mut().path;
            if !self.search_path(q.req, path) {
                return Ok(Pick::AsAsked);
            }
            self.pick(q, path)
        });
        match picked {
            Ok(Pick::AsAsked) => Step::Next,
            Ok(Pick::Element(_)) => Step::Rewritten,
            Err(e) => Step::Fail(Rcode::SERVFAIL, Some(e)),
        }
    }

    /// The serve above depends on the query and the cluster's data alone (the chain
    /// asks again after an upstream exchange).
    fn rewrites(&self) -> bool {
        true
    }

    fn wants_response(&self) -> bool {
        true
    }

    /// A completed query's reply goes back with the client's question and, in front
    /// of the answer, a CNAME from the asked name to the owner of the first answer
    /// record (CoreDNS's `cnamer`); a reply without answer records gets no CNAME.
    fn on_response(&self, q: &mut Query<'_, '_>) {
        let resp = q.resp.bytes();
        let asked = q.req.question();
        let qlen = q.req.qname_end - QNAME_OFFSET;
        let same = resp
            .get(QNAME_OFFSET..QNAME_OFFSET + qlen)
            .is_some_and(|n| n.eq_ignore_ascii_case(&asked[..qlen]))
            && resp.get(QNAME_OFFSET + qlen) == asked.get(qlen);
        // Not completed (or failed before any plugin answered: the client's question).
        if same || !q.resp.is_finished() {
            return;
        }
        SCRATCH.with(|s| {
            let copy = &mut s.borrow_mut().copy;
            copy.clear();
            copy.extend_from_slice(q.resp.bytes());
            let Some(h) = Header::of(copy) else { return };
            let rcode = q.resp.rcode();
            let flags = h.flags();
            q.resp.start(q.req, rcode);
            q.resp.set_aa(flags.aa());
            q.resp.set_flag(flag::RA, flags.ra());
            q.resp.set_flag(flag::AD, flags.ad());
            q.resp.set_flag(flag::TC, flags.tc());
            // The CNAME goes in front of the first answer record, to its owner, with its
            // TTL (CoreDNS's cnamer). A NODATA reply for the name found gets it too, to
            // that name, with the negative TTL of its SOA: without it the reply would say
            // that the asked name exists (CoreDNS's shape there), and the A and AAAA
            // queries of a name with addresses of one family would disagree on it.
            let target = match first_record(copy, 1) {
                Some(t) => Some(t),
                None if rcode == Rcode::NOERROR => {
                    Some((first_record(copy, 2).map_or(0, |(ttl, _)| ttl), QNAME_OFFSET))
                }
                None => None,
            };
            if let Some((ttl, target)) = target {
                let mut owner = [0u8; MAX_NAME_LEN];
                if let Some((_, n)) = wire::read_name(copy, target, &mut owner) {
                    let cname = Record {
                        owner: Name::QUESTION,
                        rtype: rtype::CNAME,
                        ttl,
                        data: Rdata::Name(Name::wire(&owner[..n])),
                    };
                    let _ = q.resp.push(Section::Answer, &cname);
                }
            }
            let _ = q
                .resp
                .copy_sections(copy, &[Section::Answer, Section::Authority, Section::Additional]);
            q.resp.finish();
            if rcode != Rcode::NXDOMAIN {
                self.count(q);
            }
        });
    }

    fn link(&self, chain: &[Arc<dyn Handler>]) -> Result<(), ConfigError> {
        let deciders = chain.iter().filter(|h| h.autopather().is_some()).cloned().collect();
        let _ = self.deciders.set(deciders);
        let Source::Plugin(name) = &self.source else {
            return Ok(());
        };
        // CoreDNS: a plugin of that name that is not in the block means no
        // completion; one that cannot give a search path is an error.
        let Some(h) = chain.iter().find(|h| h.name() == name) else {
            return Ok(());
        };
        let Some(p) = h.autopather() else {
            return Err(ConfigError::at(
                &self.loc,
                format!("{NAME}: {name} does not implement the AutoPather interface"),
            ));
        };
        if let Some(why) = p.unavailable() {
            log::warn!(target: "plugin/autopath", "no search-path completion: {why}");
        }
        let _ = self.target.set(h.clone());
        Ok(())
    }
}

/// The TTL and the owner's offset of the first record of section `section` (1 answer,
/// 2 authority) of `msg`.
fn first_record(msg: &[u8], section: usize) -> Option<(u32, usize)> {
    let counts = Header::of(msg)?.counts();
    if counts[section] == 0 {
        return None;
    }
    let mut at = HEADER_LEN;
    for _ in 0..counts[0] {
        at = wire::skip_name(msg, at)? + 4;
    }
    for skipped in &counts[1..section] {
        for _ in 0..*skipped {
            at = wire::skip_record(msg, at)?;
        }
    }
    let name_end = wire::skip_name(msg, at)?;
    Some((wire::get_u32(msg, name_end + 4)?, at))
}

impl Lifecycle for Autopath {
    fn attach(&self, block: &AttachCtx<'_>) {
        let (by_slot, servers) = block.servers_by_slot();
        let counters = servers
            .iter()
            .map(|s| block.process.kept_per_worker(&format!("autopath|{s}"), self.workers))
            .collect();
        let _ = self.attached.set(Attached {
            by_slot,
            servers,
            counters,
        });
    }

    /// `coredns_autopath_success_total{server}`: a series once it has counted (CoreDNS's
    /// labelled counter).
    fn metrics(&self, out: &mut Families) {
        let Some(a) = self.attached.get() else { return };
        for (i, server) in a.servers.iter().enumerate() {
            if !out.first_from(Arc::as_ptr(&a.counters[i])) {
                continue;
            }
            let n: u64 = a.counters[i].iter().map(|c| c.load(Ordering::Relaxed)).sum();
            if n > 0 {
                out.counter(
                    "coredns_autopath_success_total",
                    "Counter of requests that did autopath.",
                    &[("server", server)],
                    n as f64,
                );
            }
        }
    }
}
