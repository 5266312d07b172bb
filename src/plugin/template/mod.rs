//! `template`: answers queries from records written as Go templates, as CoreDNS's
//! plugin of that name does (README.md beside this file).
//!
//! ```text
//!   setup:  template CLASS TYPE [ZONE...] { match, var, expr, answer, authority,
//!           additional, rcode, ederror, fallthrough }   (one Rule per directive)
//!           regexes compiled (regex crate, size-limited), templates compiled
//!           (gotmpl.rs), a record without actions encoded once, here (rr.rs)
//!
//!   query:  for each rule, in Corefile order:
//!             ├─ zone, class or type not the rule's ──▶ next rule
//!             ├─ no regex matches, or an `expr` is false ──▶ fallthrough covers the
//!             │       name? next rule : SERVFAIL
//!             └─ matched ──▶ rcode SERVFAIL? SERVFAIL
//!                            : reply (AA, rcode, EDE) with each record rendered into
//!                              the worker's buffers and copied in
//!           no rule answered ──▶ Next
//! ```
//!
//! Per query a rule costs one regex search (matcher.rs: a dense DFA walked over the
//! wire name when only "does it match" is asked; for captures, one forward walk of the
//! pattern's steps when it can match only one way, else a one-pass DFA); a record
//! without actions is copied as encoded at setup; one with actions whose owner is
//! `{{ .Name }}` and whose TTL, class and type are fixed (A AAAA CNAME NS PTR DNAME) is
//! written from the query's wire name, the type/class/TTL bytes encoded at setup and
//! its rendered rdata parsed by type (`Fast`); any other is rendered whole and parsed
//! (rr.rs), all into per-worker buffers that keep their capacity; `var`/`expr` values live
//! in a per-worker heap. Answering allocates nothing. A CNAME answer to an A/AAAA
//! question is followed through the server (Step::Upstream, then `resume`).
//!
//! A rule without `var`, `expr` or `.Remote` whose regexes all have shapes and whose
//! records are fixed (no CNAME) or addresses rendered from text, `.Name` and `.Group`
//! pieces has a flat path (`Rule::flat`): no lock, the name's text on the stack, the
//! address read as its pieces are copied, records pushed from their parts; a query it
//! cannot take so goes the general way (test `flat_path_replies_as_the_general_path_does`).

mod gotmpl;
mod matcher;
mod rr;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use regex_automata::util::captures::Captures;

use crate::chain::{ChainError, Handler, Query, Step, UpstreamProto, UpstreamReply, UpstreamRequest};
use crate::config::keys::zone_args;
use crate::config::{ConfigError, Directive};
use crate::dns::{Header, QueryBuilder, Rcode, Section, Zone, class, flag, rtype};
use crate::expr::{Facts, GroupKey, Heap, Program, Scope, Value, View, write_name as name_text};
use crate::metrics::Families;
use crate::plugin::kubernetes::CHASE_OPTION;
use crate::setup::{AttachCtx, Lifecycle, Plugin, SetupCtx};
use gotmpl::{Data, Field, Names, Template, Val};
use matcher::{MatchCache, Matcher};

const NAME: &str = "template";

/// The longest regex pattern accepted (CoreDNS's `maxRegexpLen`).
pub const MAX_REGEX_LEN: usize = 10_000;
/// The most a compiled regex may take (the regex crate's size limit).
pub const MAX_REGEX_SIZE: usize = 1 << 20;
/// Most `template` directives in one server block (metric keys carry the index).
pub const MAX_RULES: usize = 255;
/// Most zones one `template` lists.
pub const MAX_ZONES: usize = 255;
/// Most records one `template` writes (answer + authority + additional).
pub const MAX_RECORDS: usize = 64;
/// Longest record template text.
pub const MAX_TEMPLATE_LEN: usize = 4096;

/// The plugin: every `template` directive of a server block, in Corefile order.
pub struct TemplatePlugin {
    rules: Vec<Rule>,
    scratch: Box<[Mutex<Scratch>]>,
    /// Kept in the process state under the block's `template` lines, so that a reload
    /// that keeps them keeps counting (CoreDNS's counters live as long as the process).
    counters: Arc<Counters>,
    /// Route slot to the index of its `server` label in `counters.servers` (set when
    /// attached): counters are keyed by label, which outlives a reload, not by slot.
    by_slot: std::sync::OnceLock<Vec<u16>>,
    /// Whether failures are logged here: the block has no `errors` (set when attached).
    self_log: std::sync::atomic::AtomicBool,
    /// The second (since `started`, plus one) of the last failure logged here.
    logged_at: AtomicU64,
    started: std::time::Instant,
}

/// One `template` directive.
struct Rule {
    qclass: u16,
    qtype: u16,
    zones: Vec<Zone>,
    /// Empty: everything matches (CoreDNS's default `.*`).
    regexes: Vec<Matcher>,
    /// Their patterns (`.Regex`).
    patterns: Vec<String>,
    /// Per regex, per `.Group.NAME` key of the templates (`Field::GroupKey`'s index):
    /// the first slot (in the captures) of the group it names in that regex.
    key_index: Vec<Vec<Option<usize>>>,
    /// Answer, authority, additional (the order they are written in the reply).
    sections: [Vec<Rr>; 3],
    rcode: Rcode,
    ede: Option<(u16, String)>,
    /// `None`: no fallthrough; `Some(zones)`: those zones fall through (root: all).
    fall: Option<Vec<Zone>>,
    var_names: Vec<String>,
    vars: Vec<Program>,
    exprs: Vec<Program>,
    /// Whether a template or expression reads the captures (`.Match`, `.Group`, `group()`).
    captures: bool,
    /// Whether a template reads `.Remote`.
    remote: bool,
    /// Whether answering needs none of the worker's scratch: no captures, variables or
    /// expressions, records fixed at setup, every regex searched by its dense DFA.
    stateless: bool,
    /// Whether the rule has a flat path: no variables, expressions or `.Remote`, every
    /// regex with a shape, every record fixed (not a CNAME) or an A/AAAA owned by
    /// `{{ .Name }}` whose rdata has flat pieces ([`TemplatePlugin::flat`]). The query
    /// name is written on the stack, the regexes' shapes search it there, the addresses
    /// are rendered by copying bytes and parsed before anything is written, and each
    /// record goes into the reply from its parts; a query it cannot answer so (a name
    /// whose presentation form has escapes, a group that took no part, an address that
    /// does not parse) takes the general path, which gives the same bytes or the error.
    flat: bool,
}

/// Most capture slots a flat path keeps (on the stack).
const MAX_FLAT_SLOTS: usize = 16;
/// Most rendered records a flat path writes (their rdata are on the stack).
const MAX_FLAT_RENDERED: usize = 4;
/// Longest rdata text a flat path renders (an AAAA's longest is 45 bytes).
const MAX_FLAT_TEXT: usize = 64;

/// One record template.
struct Rr {
    body: Body,
    /// A dynamic record whose owner is `{{ .Name }}` and whose TTL, class and type are
    /// fixed: written from the query's wire name and its rendered rdata alone.
    fast: Option<Fast>,
    /// A fixed record's owner length (where its type, class and TTL start).
    owner_len: usize,
    source: String,
}

/// The wire path of a dynamic record ([`rr::encode_fast`]); the text path stays for
/// what it does not write (an rdata that is not one plain token, a name with escapes).
struct Fast {
    head: rr::Head,
    rdata: Template,
    /// The rdata as flat pieces, for an A or AAAA record whose rdata prints only text,
    /// `.Name` and `.Group.NAME` (the rule's flat path: see [`Rule::flat`]).
    pieces: Option<Vec<gotmpl::Piece>>,
}

enum Body {
    /// No actions: encoded once, at setup.
    Fixed(Vec<u8>),
    Dynamic(Template),
}

/// A worker's buffers: kept from query to query, so that they stop growing.
#[derive(Default)]
struct Scratch {
    /// The query name, lower-cased, presentation form (CoreDNS's `state.Name()`),
    /// written only when something reads it (`named`).
    name: String,
    named: bool,
    remote: String,
    text: String,
    wire: Vec<u8>,
    /// Per rule, per regex: the regex's search state and where the captures lie.
    caches: Vec<Vec<MatchCache>>,
    vars: Vec<Value>,
    /// The strings and arrays `var`/`expr` make for the current query.
    heap: Heap,
}

/// The sections of CoreDNS's metric labels, by index into `Rule::sections`.
const SECTION_LABELS: [&str; 3] = ["answer", "authority", "additional"];

/// `template CLASS TYPE [ZONE...] { ... }`, every one in the block.
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    if dirs.len() > MAX_RULES {
        return Err(dirs[MAX_RULES].err(NAME, format!("more than {MAX_RULES} templates in one server block")));
    }
    let mut rules = Vec::with_capacity(dirs.len());
    for d in dirs {
        rules.push(parse_rule(d, ctx)?);
    }
    let scratch = (0..ctx.workers.max(1))
        .map(|_| {
            Mutex::new(Scratch {
                name: String::with_capacity(256),
                named: false,
                remote: String::with_capacity(48),
                text: String::with_capacity(512),
                wire: Vec::with_capacity(512),
                caches: rules
                    .iter()
                    .map(|r| r.regexes.iter().map(Matcher::cache).collect())
                    .collect(),
                vars: Vec::with_capacity(8),
                heap: Heap::default(),
            })
        })
        .collect();
    let mut key = String::from("template|");
    for d in dirs {
        d.canonical(&mut key);
        key.push('\n');
    }
    let counters = ctx
        .process
        .kept(&key, |_: &Arc<Counters>| true, || Arc::new(Counters::new()));
    Ok(Plugin::both(Arc::new(TemplatePlugin {
        rules,
        scratch,
        counters,
        by_slot: std::sync::OnceLock::new(),
        self_log: std::sync::atomic::AtomicBool::new(true),
        logged_at: AtomicU64::new(0),
        started: std::time::Instant::now(),
    })))
}

fn parse_rule(d: &Directive, ctx: &SetupCtx<'_>) -> Result<Rule, ConfigError> {
    let Some(class_tok) = d.args.first() else {
        return Err(d.arg_err(NAME));
    };
    let qclass = parse_class(&class_tok.text).ok_or_else(|| {
        ConfigError::at(
            &class_tok.loc,
            format!("{NAME}: invalid query class {}", class_tok.text),
        )
    })?;
    let Some(type_tok) = d.args.get(1) else {
        return Err(d.arg_err(NAME));
    };
    // CoreDNS's message says "class" for a type too.
    let qtype = parse_type(&type_tok.text)
        .ok_or_else(|| ConfigError::at(&type_tok.loc, format!("{NAME}: invalid RR class {}", type_tok.text)))?;
    let mut zones = zone_args(NAME, &d.args[2..])?;
    if zones.is_empty() {
        zones = ctx.zones.to_vec();
    }
    if zones.is_empty() {
        zones.push(Zone::root());
    }
    if zones.len() > MAX_ZONES {
        return Err(d.err(NAME, format!("more than {MAX_ZONES} zones")));
    }
    let mut rule = Rule {
        qclass,
        qtype,
        zones,
        regexes: Vec::new(),
        patterns: Vec::new(),
        key_index: Vec::new(),
        sections: [Vec::new(), Vec::new(), Vec::new()],
        rcode: Rcode::NOERROR,
        ede: None,
        fall: None,
        var_names: Vec::new(),
        vars: Vec::new(),
        exprs: Vec::new(),
        captures: false,
        remote: false,
        stateless: false,
        flat: false,
    };
    // Record templates are compiled once every `var` is known (CoreDNS evaluates all
    // variables before any record, wherever the lines are).
    let mut pending: Vec<(usize, &Directive, &str)> = Vec::new();
    let mut uses_group = false;
    for opt in d.options() {
        let args = opt.arg_strs();
        match opt.name.as_str() {
            "match" => {
                if args.is_empty() {
                    return Err(opt.arg_err(NAME));
                }
                for re in args {
                    if re.len() > MAX_REGEX_LEN {
                        return Err(opt.err(NAME, format!("regex pattern too long: {} > {MAX_REGEX_LEN}", re.len())));
                    }
                    let compiled = Matcher::new(re, MAX_REGEX_SIZE)
                        .map_err(|e| opt.err(NAME, format!("could not parse regex: {re}, {e}")))?;
                    rule.regexes.push(compiled);
                    rule.patterns.push(re.to_string());
                }
            }
            section @ ("answer" | "authority" | "additional") => {
                if args.is_empty() {
                    return Err(opt.arg_err(NAME));
                }
                let i = SECTION_LABELS.iter().position(|s| *s == section).unwrap_or(0);
                for a in &opt.args {
                    pending.push((i, opt, a.text.as_str()));
                }
            }
            "var" => {
                if args.len() < 2 {
                    return Err(opt.arg_err(NAME));
                }
                let name = args[0];
                let ident = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !ident {
                    return Err(opt.err(NAME, format!("invalid variable name {name:?}")));
                }
                let scope = Scope {
                    vars: rule.var_names.clone(),
                    group: true,
                };
                if scope.is_reserved(name) {
                    return Err(opt.err(NAME, format!("variable name {name:?} is reserved")));
                }
                let text = args[1..].join(" ");
                let prog = Program::compile(&text, &scope)
                    .map_err(|e| opt.err(NAME, format!("could not compile expression: {name}, {e}")))?;
                uses_group |= prog.uses_group();
                rule.var_names.push(name.to_string());
                rule.vars.push(prog);
            }
            "expr" => {
                if args.is_empty() {
                    return Err(opt.arg_err(NAME));
                }
                let scope = Scope {
                    vars: rule.var_names.clone(),
                    group: true,
                };
                let text = args.join(" ");
                let prog = Program::compile(&text, &scope)
                    .map_err(|e| opt.err(NAME, format!("could not compile expression: {e}")))?;
                uses_group |= prog.uses_group();
                rule.exprs.push(prog);
            }
            "rcode" => {
                if args.is_empty() {
                    return Err(opt.arg_err(NAME));
                }
                // miekg/dns's StringToRcode: the upper-case names, exactly.
                rule.rcode = Rcode::from_name(args[0])
                    .filter(|r| r.name() == args[0])
                    .ok_or_else(|| opt.err(NAME, format!("unknown rcode {}", args[0])))?;
            }
            "ederror" => {
                if args.len() != 1 && args.len() != 2 {
                    return Err(opt.arg_err(NAME));
                }
                let code: u16 = args[0].parse().map_err(|_| {
                    opt.err(
                        NAME,
                        format!(
                            "error parsing extended DNS error code {}, strconv.ParseUint: parsing {:?}: invalid syntax",
                            args[args.len() - 1],
                            args[0]
                        ),
                    )
                })?;
                let reason = args.get(1).copied().unwrap_or("");
                if reason.len() > crate::dns::Response::MAX_EDE_TEXT {
                    return Err(opt.err(
                        NAME,
                        format!(
                            "extended error text longer than {} bytes",
                            crate::dns::Response::MAX_EDE_TEXT
                        ),
                    ));
                }
                rule.ede = Some((code, reason.to_string()));
            }
            "fallthrough" => {
                let fall = zone_args(NAME, &opt.args)?;
                rule.fall = Some(if fall.is_empty() { vec![Zone::root()] } else { fall });
            }
            // CoreDNS still reads and ignores it ("remove soon").
            "upstream" => {}
            _ => return Err(opt.arg_err(NAME)),
        }
    }
    let total = pending.len();
    if total > MAX_RECORDS {
        return Err(d.err(NAME, format!("more than {MAX_RECORDS} records in one template")));
    }
    let keys = std::cell::RefCell::new(Vec::new());
    let names = Names {
        vars: &rule.var_names,
        keys: &keys,
    };
    for (section, opt, text) in pending {
        if text.len() > MAX_TEMPLATE_LEN {
            return Err(opt.err(NAME, format!("template longer than {MAX_TEMPLATE_LEN} bytes")));
        }
        // CoreDNS names the line's last argument (caddy's c.Val() after RemainingArgs).
        let last = opt.args.last().map_or("", |a| a.text.as_str());
        let t = Template::compile(text, &names)
            .map_err(|e| opt.err(NAME, format!("could not compile template: {last}, {e}")))?;
        rule.captures |= t.uses_captures();
        rule.remote |= t.uses_remote();
        let body = match t.constant() {
            // Knowable now: a record that does not parse is a setup error (CoreDNS finds
            // it on the first query and answers SERVFAIL every time).
            Some(fixed) => {
                let mut wire = Vec::new();
                rr::encode(&fixed, &mut wire).map_err(|e| opt.err(NAME, format!("invalid record {fixed:?}: {e}")))?;
                Body::Fixed(wire)
            }
            None => {
                // What is knowable of a record with holes: its type, and the rest when
                // only the owner is per query ("{{ .Name }} 60 IN A 10.0.0.1").
                if let Some(skeleton) = t.skeleton() {
                    rr::check_skeleton(&skeleton, gotmpl::SKELETON_HOLE)
                        .map_err(|e| opt.err(NAME, format!("invalid record {text:?}: {e}")))?;
                }
                Body::Dynamic(t)
            }
        };
        let fast = match &body {
            Body::Dynamic(t) => fast_path(t),
            Body::Fixed(_) => None,
        };
        let owner_len = match &body {
            Body::Fixed(w) => crate::dns::wire::skip_name(w, 0).unwrap_or(0),
            Body::Dynamic(_) => 0,
        };
        rule.sections[section].push(Rr {
            body,
            fast,
            owner_len,
            source: text.to_string(),
        });
    }
    // Each `.Group.NAME` key's group in each regex, found once: a number is the group
    // of that index, a name the group of that name; kept as the group's first slot.
    rule.key_index = rule
        .regexes
        .iter()
        .map(|m| {
            keys.borrow()
                .iter()
                .map(|k| {
                    k.parse::<usize>()
                        .ok()
                        .or_else(|| m.group_index(k))
                        .and_then(|i| m.group_slot(i))
                })
                .collect()
        })
        .collect();
    rule.captures |= uses_group;
    rule.stateless = !rule.captures
        && !rule.remote
        && rule.vars.is_empty()
        && rule.exprs.is_empty()
        && rule.regexes.iter().all(Matcher::has_dfa)
        && rule.sections.iter().flatten().all(|r| matches!(r.body, Body::Fixed(_)));
    let records = rule.sections.iter().flatten();
    rule.flat = rule.vars.is_empty()
        && rule.exprs.is_empty()
        && !rule.remote
        && !rule.regexes.is_empty()
        && rule
            .regexes
            .iter()
            .all(|m| m.shape_slots().is_some_and(|n| n <= MAX_FLAT_SLOTS))
        && records.clone().filter(|r| matches!(r.body, Body::Dynamic(_))).count() <= MAX_FLAT_RENDERED
        && records.into_iter().all(|r| match &r.body {
            Body::Fixed(w) => cname_target(w).is_none() && r.owner_len > 0,
            Body::Dynamic(_) => r.fast.as_ref().is_some_and(|f| f.pieces.is_some()),
        });
    Ok(rule)
}

/// The wire path of a record template, when it has one (see [`Fast`]).
fn fast_path(t: &Template) -> Option<Fast> {
    let (head, from) = rr::head(t.after_name_owner()?)?;
    let rdata = t.rdata_from(from)?;
    let pieces = if head.rtype == rtype::A || head.rtype == rtype::AAAA {
        rdata.pieces()
    } else {
        None
    };
    Some(Fast { head, rdata, pieces })
}

/// Writes a dynamic record's wire form into `wire`: by its wire path when it has one
/// and the query name and rendered rdata allow, else by rendering its whole text into
/// `text` and parsing that (the errors are the text path's).
fn encode_dynamic(
    t: &Template,
    fast: Option<&Fast>,
    qname: &[u8],
    data: &dyn gotmpl::Data,
    text: &mut String,
    wire: &mut Vec<u8>,
) -> Result<(), RrError> {
    if let Some(f) = fast
        && rr::plain_name(qname)
        && f.rdata.render(data, text).is_ok()
        && rr::encode_fast(qname, &f.head, text, wire)
    {
        return Ok(());
    }
    t.render(data, text).map_err(RrError::Render)?;
    rr::encode(text, wire).map_err(RrError::Parse)?;
    Ok(())
}

/// Why a dynamic record could not be written.
enum RrError {
    /// The template failed (CoreDNS's template failure).
    Render(String),
    /// What it rendered is not a record (CoreDNS's RR failure).
    Parse(String),
}

fn parse_class(s: &str) -> Option<u16> {
    // miekg/dns's StringToClass: upper-case names.
    match s {
        "IN" => Some(class::IN),
        "CH" => Some(class::CH),
        "HS" => Some(class::HS),
        "NONE" => Some(class::NONE),
        "ANY" => Some(class::ANY),
        "CS" => Some(2),
        _ => None,
    }
}

fn parse_type(s: &str) -> Option<u16> {
    // StringToType has the upper-case mnemonics only.
    if s != s.to_ascii_uppercase() || s.starts_with("TYPE") {
        return None;
    }
    rtype::from_name(s)
}

/// What a rule made of a query.
enum Matched {
    /// The rule's zone, but no regex matched or an `expr` was false.
    No,
    /// An expression failed to evaluate (CoreDNS: SERVFAIL whatever `fallthrough` says).
    Failed(String),
    /// Regex `usize` matched in zone `usize`.
    Yes(usize, usize),
}

impl TemplatePlugin {
    /// SERVFAIL with the error, which `errors` logs (CoreDNS's way); in a block without
    /// `errors` the plugin logs it itself, at most once a second, so that a template
    /// that fails per query is never silent and never floods the log.
    fn fail(&self, msg: String) -> Step {
        if self.self_log.load(Ordering::Relaxed) {
            let now = self.started.elapsed().as_secs() + 1;
            let last = self.logged_at.load(Ordering::Relaxed);
            if now > last
                && self
                    .logged_at
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                log::error!(target: "plugin/template", "SERVFAIL: {msg}");
            }
        }
        Step::Fail(Rcode::SERVFAIL, Some(ChainError::Plugin(NAME, msg.into())))
    }

    /// The index of a route's `server` label (0x7FFF, no label, before `attach`).
    fn server_of(&self, slot: usize) -> usize {
        self.by_slot
            .get()
            .and_then(|v| v.get(slot))
            .map_or(0x7FFF, |&i| usize::from(i).min(0x7FFF))
    }

    /// The zone of rule `ri` the query is in, when the rule takes its class and type
    /// (`None`: the rule is skipped).
    fn takes(&self, ri: usize, q: &Query<'_, '_>) -> Option<usize> {
        let rule = &self.rules[ri];
        let req = q.req;
        if rule.qclass != class::ANY && req.qclass != class::ANY && req.qclass != rule.qclass {
            return None;
        }
        if rule.qtype != rtype::ANY && req.qtype != rtype::ANY && req.qtype != rule.qtype {
            return None;
        }
        // plugin.Zones(t.zones).Matches: the longest zone the name is in.
        let zone = rule
            .zones
            .iter()
            .enumerate()
            .filter(|(_, z)| z.contains(&req.qname))
            .max_by_key(|(_, z)| z.label_count());
        zone.map(|(zi, _)| zi)
    }

    /// Whether rule `ri`, which takes the query in its zone `zi`, matches it.
    fn matches(&self, ri: usize, zi: usize, q: &Query<'_, '_>, s: &mut Scratch) -> Matched {
        let rule = &self.rules[ri];
        let req = q.req;
        let regex = if rule.regexes.is_empty() {
            usize::MAX
        } else {
            let wire = req.qname.wire();
            let found = if rule.captures {
                s.write_name(wire);
                let (name, caches) = (s.name.as_str(), &mut s.caches[ri]);
                rule.regexes
                    .iter()
                    .zip(caches.iter_mut())
                    .position(|(re, cache)| re.captures(name, cache))
            } else {
                // Whether it matches is all that is asked: stop at the first match, on
                // the wire name where the pattern has a dense DFA.
                let mut found = None;
                for (i, re) in rule.regexes.iter().enumerate() {
                    let hit = match re.is_match_wire(wire) {
                        Some(hit) => hit,
                        None => {
                            s.write_name(wire);
                            match s.caches.get_mut(ri).and_then(|c| c.get_mut(i)) {
                                Some(cache) => re.is_match(&s.name, cache),
                                // A stateless rule's DFA stopped (it has no quit bytes,
                                // so never): search with a cache made here.
                                None => re.is_match(&s.name, &mut re.cache()),
                            }
                        }
                    };
                    if hit {
                        found = Some(i);
                        break;
                    }
                }
                found
            };
            match found {
                Some(i) => i,
                None => return Matched::No,
            }
        };
        if !rule.vars.is_empty() || !rule.exprs.is_empty() {
            s.write_name(req.qname.wire());
            let Scratch {
                name,
                caches,
                vars,
                heap,
                ..
            } = s;
            let name: &str = name;
            let caps = caches[ri].get(regex).map(|c| &c.caps);
            let group = |k: GroupKey<'_>| -> Option<&str> {
                let span = match (caps, k) {
                    (Some(c), GroupKey::Index(i)) => usize::try_from(i).ok().and_then(|i| c.get_group(i)),
                    (Some(c), GroupKey::Name(n)) => rule.regexes[regex].group_index(n).and_then(|i| c.get_group(i)),
                    // The default `.*` matches the whole name, capture 0 only.
                    (None, GroupKey::Index(0)) => return Some(name),
                    (None, _) => None,
                };
                span.map(|s| &name[s.range()])
            };
            // CoreDNS's `metadata(label)`: "" when the block has no `metadata` or
            // nobody sets the label.
            let metadata = |label: &str, out: &mut String| {
                q.metadata(label, out);
            };
            heap.clear();
            vars.clear();
            for prog in &rule.vars {
                let facts = Facts {
                    req,
                    name,
                    vars: vars.as_slice(),
                    group: &group,
                    metadata: &metadata,
                };
                match prog.eval(&facts, heap) {
                    Ok(v) => vars.push(v),
                    Err(e) => return Matched::Failed(format!("var: {}: {e}", prog.text())),
                }
            }
            for prog in &rule.exprs {
                let facts = Facts {
                    req,
                    name,
                    vars: vars.as_slice(),
                    group: &group,
                    metadata: &metadata,
                };
                match prog.eval(&facts, heap) {
                    Ok(Value::Bool(true)) => {}
                    Ok(_) => return Matched::No,
                    Err(e) => return Matched::Failed(format!("expr: {}: {e}", prog.text())),
                }
            }
        }
        Matched::Yes(regex, zi)
    }

    /// Writes the reply of rule `ri`, matched with regex `regex` in zone `zi`.
    /// `chased`: the server's reply for the target of the CNAME this answer holds (on
    /// the second pass, after [`Step::Upstream`]).
    fn answer(
        &self,
        ri: usize,
        regex: usize,
        zi: usize,
        q: &mut Query<'_, '_>,
        s: &mut Scratch,
        chased: Option<UpstreamReply<'_>>,
    ) -> Step {
        let rule = &self.rules[ri];
        let req = q.req;
        let (class_label, type_label) = labels(rule, req.qclass, req.qtype);
        if chased.is_none() {
            // Counted once per query, not again when it resumes after the chase.
            let server = self.server_of(q.route.slot);
            self.counters.matched(server, ri, zi, class_label, type_label);
        }
        // CoreDNS looks up the target of a CNAME answer for A and AAAA questions.
        let follow = req.qtype == rtype::A || req.qtype == rtype::AAAA;
        let mut chase_target = false;
        if rule.rcode == Rcode::SERVFAIL {
            return Step::Fail(Rcode::SERVFAIL, None);
        }
        q.resp.start(req, rule.rcode);
        q.resp.set_aa(true);
        if let Some((code, text)) = &rule.ede {
            q.resp.set_ede(*code, text);
        }
        let dynamic = rule
            .sections
            .iter()
            .flatten()
            .any(|r| matches!(r.body, Body::Dynamic(_)));
        if dynamic {
            s.write_name(req.qname.wire());
        }
        if rule.remote {
            s.remote.clear();
            let _ = write!(s.remote, "{}", req.client.ip());
        }
        let Scratch {
            name,
            remote,
            text,
            wire,
            caches,
            vars,
            heap,
            ..
        } = s;
        for (si, section) in [Section::Answer, Section::Authority, Section::Additional]
            .into_iter()
            .enumerate()
        {
            for (k, rr) in rule.sections[si].iter().enumerate() {
                if q.worker.budget.charge(1).is_err() {
                    return Step::Fail(Rcode::SERVFAIL, Some(ChainError::OverBudget(NAME)));
                }
                let encoded: &[u8] = match &rr.body {
                    Body::Fixed(w) => w,
                    Body::Dynamic(t) => {
                        let meta = |key: &str, out: &mut String| {
                            q.metadata(key, out);
                        };
                        let data = RenderData {
                            meta: &meta,
                            name,
                            zone: rule.zones[zi].as_str(),
                            class: class_label,
                            rtype: type_label,
                            remote,
                            pattern: rule.patterns.get(regex).map(String::as_str),
                            caps: caches[ri].get(regex).map(|c| &c.caps),
                            matcher: rule.regexes.get(regex),
                            keys: rule.key_index.get(regex).map(Vec::as_slice),
                            vars,
                            heap,
                            var_names: &rule.var_names,
                        };
                        // An address owned by the query name: its rdata parsed from the
                        // rendered text and the record pushed from its parts (the bytes
                        // `encode_dynamic` would encode, without reading them back).
                        let mut ip = [0u8; 16];
                        if let Some(f) = rr.fast.as_ref()
                            && (f.head.rtype == rtype::A || f.head.rtype == rtype::AAAA)
                            && rr::plain_name(req.qname.wire())
                            && f.rdata.render(&data, text).is_ok()
                            && let Some(n) = rr::address(f.head.rtype, text, &mut ip)
                        {
                            if let Err(crate::dns::PushError::Malformed | crate::dns::PushError::OutOfOrder) =
                                q.resp.push_parts(section, req.qname.wire(), f.head.wire(), &ip[..n])
                            {
                                return self.fail(format!("record from {:?} could not be written", rr.source));
                            }
                            continue;
                        }
                        match encode_dynamic(t, rr.fast.as_ref(), req.qname.wire(), &data, text, wire) {
                            Ok(()) => {}
                            Err(RrError::Render(e)) => {
                                self.counters
                                    .failed(q.route.slot, ri, zi, si, k, class_label, type_label, false);
                                return self.fail(format!("{}: {e}", rr.source));
                            }
                            Err(RrError::Parse(e)) => {
                                self.counters
                                    .failed(q.route.slot, ri, zi, si, k, class_label, type_label, true);
                                return self.fail(format!("invalid record {text:?} from {:?}: {e}", rr.source));
                            }
                        }
                        wire
                    }
                };
                if let Err(crate::dns::PushError::Malformed | crate::dns::PushError::OutOfOrder) =
                    q.resp.push_encoded(section, encoded)
                {
                    return self.fail(format!("record from {:?} could not be written", rr.source));
                }
                if follow
                    && si == 0
                    && !chase_target
                    && chased.is_none()
                    && let Some(target) = cname_target(encoded)
                {
                    // The first CNAME's target, asked of the server itself below.
                    chase_target = true;
                    QueryBuilder::new(target, req.qtype)
                        .edns(4096)
                        .options(&[(CHASE_OPTION, &[chase_depth(q).saturating_add(1)])])
                        .write(&mut q.worker.upstream_msg);
                }
            }
        }
        match chased {
            // The target's records after the CNAME; a truncated reply truncates ours
            // (CoreDNS's template_test TestTruncatedCNAME).
            Some(UpstreamReply::Message(reply)) => {
                if Header::of(reply).is_some_and(|h| h.tc()) {
                    q.resp.set_flag(flag::TC, true);
                }
                let _ = q.resp.copy_sections(reply, &[Section::Answer]);
            }
            // No reply: the CNAME alone, as CoreDNS answers when its lookup fails.
            Some(_) => {}
            None if chase_target && chase_depth(q) < MAX_CHASE_DEPTH => {
                return Step::Upstream(UpstreamRequest {
                    to: req.local,
                    proto: UpstreamProto::Udp,
                    timeout: CHASE_TIMEOUT,
                    cookie: 0,
                    coalesce: None,
                    expire: CHASE_TIMEOUT,
                });
            }
            None => {}
        }
        Step::Answered
    }
}

/// How many times a query may have gone round the server for CNAME targets (the
/// kubernetes plugin's chase depth, shared: a loop of templates ends).
const MAX_CHASE_DEPTH: u8 = 8;
/// How long the server's own answer for a CNAME target is waited for.
const CHASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The chase depth a query carries (0 for a client's).
fn chase_depth(q: &Query<'_, '_>) -> u8 {
    q.req
        .edns_options()
        .find(|(code, _)| *code == CHASE_OPTION)
        .and_then(|(_, d)| d.first().copied())
        .unwrap_or(0)
}

/// The target of an encoded record (uncompressed, as rr.rs writes it) when it is a CNAME.
fn cname_target(rr: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    while *rr.get(at)? != 0 {
        at += 1 + usize::from(rr[at]);
    }
    at += 1;
    let rtype = u16::from_be_bytes([*rr.get(at)?, *rr.get(at + 1)?]);
    (rtype == rtype::CNAME).then(|| rr.get(at + 10..)).flatten()
}

/// CoreDNS's `.Class`/`.Type` (and metric labels): the query's, or the rule's when the
/// query asks for ANY.
fn labels(rule: &Rule, qclass: u16, qtype: u16) -> (u16, u16) {
    let c = if qclass != class::ANY { qclass } else { rule.qclass };
    let t = if qtype != rtype::ANY { qtype } else { rule.qtype };
    (c, t)
}

struct RenderData<'a> {
    /// `.Meta "label"`: the query's metadata (empty when unset).
    meta: &'a dyn Fn(&str, &mut String),
    name: &'a str,
    zone: &'a str,
    class: u16,
    rtype: u16,
    remote: &'a str,
    /// The pattern that matched (`None`: the default `.*`) and its captures.
    pattern: Option<&'a str>,
    caps: Option<&'a Captures>,
    /// The regex that matched (its group names).
    matcher: Option<&'a Matcher>,
    /// Its groups by `.Group.NAME` key (`Rule::key_index`).
    keys: Option<&'a [Option<usize>]>,
    vars: &'a [Value],
    heap: &'a Heap,
    var_names: &'a [String],
}

impl Data for RenderData<'_> {
    fn field(&self, f: &Field) -> Val<'_> {
        match f {
            Field::Name => Val::Str(self.name.into()),
            Field::Zone => Val::Str(self.zone.into()),
            Field::Class => Val::Str(class::name(self.class)),
            Field::Type => Val::Str(rtype::name(self.rtype)),
            Field::Remote => Val::Str(self.remote.into()),
            Field::Regex => Val::Str(self.pattern.unwrap_or(".*").into()),
            Field::GroupKey(k, id) => self.group_key(k, *id).map_or(Val::NoValue, |g| Val::Str(g.into())),
            Field::VarKey(i) => self
                .vars
                .get(*i)
                .map_or(Val::NoValue, |v| Val::Value(self.heap.view(*v))),
            f => Val::Collection(f.clone()),
        }
    }

    fn matched(&self, i: usize) -> Option<&str> {
        match self.caps {
            Some(c) => c.get_group(i).map(|s| &self.name[s.range()]),
            // The default `.*` matches the whole name.
            None => (i == 0).then_some(self.name),
        }
    }

    fn matches(&self) -> usize {
        self.caps.map_or(1, Captures::group_len)
    }

    fn group(&self, key: &str) -> Option<&str> {
        let span = match (self.caps, key.parse::<usize>()) {
            (None, Ok(0)) => return Some(self.name),
            (None, _) => return None,
            (Some(c), Ok(i)) => c.get_group(i),
            (Some(c), Err(_)) => self
                .matcher
                .and_then(|m| m.group_index(key))
                .and_then(|i| c.get_group(i)),
        };
        span.map(|s| &self.name[s.range()])
    }

    fn meta(&self, key: &str, out: &mut String) {
        (self.meta)(key, out);
    }

    fn var(&self, name: &str) -> Option<View<'_>> {
        let i = self.var_names.iter().rposition(|v| v == name)?;
        self.vars.get(i).map(|v| self.heap.view(*v))
    }

    fn vars(&self) -> usize {
        self.var_names.len()
    }

    fn write_field(&self, f: &Field, out: &mut String) -> bool {
        match f {
            Field::Name => out.push_str(self.name),
            Field::GroupKey(k, id) => out.push_str(self.group_key(k, *id).unwrap_or("<no value>")),
            Field::VarKey(i) => match self.vars.get(*i).map(|v| self.heap.view(*v)) {
                Some(View::Str(s)) => out.push_str(s),
                _ => return false,
            },
            _ => return false,
        }
        true
    }
}

impl RenderData<'_> {
    /// `.Group.KEY`, key `id` of the rule: by the index resolved at setup when a regex
    /// matched, as [`Data::group`] finds it otherwise.
    fn group_key(&self, key: &str, id: usize) -> Option<&str> {
        match (self.caps, self.keys.and_then(|k| k.get(id))) {
            (Some(c), Some(slot)) => {
                let slot = (*slot)?;
                if !c.is_match() {
                    return None;
                }
                let slots = c.slots();
                let (start, end) = (slots.get(slot).copied()??, slots.get(slot + 1).copied()??);
                self.name.get(start.get()..end.get())
            }
            _ => self.group(key),
        }
    }
}

impl Handler for TemplatePlugin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        self.handle(q, None)
    }

    fn resume(&self, q: &mut Query<'_, '_>, reply: UpstreamReply<'_>, _cookie: u64) -> Step {
        // Answer again (the same rule matches the same query), then add the target's records.
        self.handle(q, Some(reply))
    }

    fn handles_class(&self, c: u16) -> bool {
        self.rules.iter().any(|r| r.qclass == c || r.qclass == class::ANY)
    }
}

impl TemplatePlugin {
    fn handle(&self, q: &mut Query<'_, '_>, chased: Option<UpstreamReply<'_>>) -> Step {
        // (A query in no rule's zone is taken by none below: Step::Next.)
        // A rule that keeps nothing per query (a regex with a dense DFA, fixed records)
        // works on an empty stack scratch, which allocates nothing, and takes no lock.
        let mut local: Option<Scratch> = None;
        let mut guard = None;
        for ri in 0..self.rules.len() {
            let Some(zi) = self.takes(ri, q) else { continue };
            if self.rules[ri].flat && chased.is_none() && flat_allowed() {
                match self.flat(ri, zi, q) {
                    FlatOutcome::Answered(step) => return step,
                    FlatOutcome::No => match &self.rules[ri].fall {
                        Some(fall) if Zone::any_contains(fall, &q.req.qname) => continue,
                        _ => return Step::Fail(Rcode::SERVFAIL, None),
                    },
                    FlatOutcome::General => {}
                }
            }
            let s: &mut Scratch = if self.rules[ri].stateless {
                local.get_or_insert_with(Scratch::default)
            } else {
                guard.get_or_insert_with(|| {
                    let mut g = self.scratch[q.worker.id % self.scratch.len()].lock();
                    g.named = false;
                    g
                })
            };
            match self.matches(ri, zi, q, s) {
                Matched::No => match &self.rules[ri].fall {
                    Some(fall) if Zone::any_contains(fall, &q.req.qname) => {}
                    _ => return Step::Fail(Rcode::SERVFAIL, None),
                },
                Matched::Failed(e) => return self.fail(e),
                Matched::Yes(regex, zi) => return self.answer(ri, regex, zi, q, s, chased),
            }
        }
        Step::Next
    }
}

/// An IPv4 address in its canonical text (four decimal parts of 0 to 255 without
/// leading zeros, blanks and tabs around it), read from bytes fed one at a time: what
/// [`rr::address`] reads from that text. Any other text is refused, and left to it.
#[derive(Default)]
struct Quad {
    octets: [u8; 4],
    part: usize,
    value: u16,
    digits: u8,
    /// A blank came after the address began: only blanks may follow.
    after: bool,
}

impl Quad {
    /// Takes byte `b`; `false`: the text is not a canonical address.
    #[inline]
    fn feed(&mut self, b: u8) -> bool {
        match b {
            b'0'..=b'9' => {
                if self.after || self.digits == 3 || (self.digits == 1 && self.value == 0) {
                    return false;
                }
                self.value = self.value * 10 + u16::from(b - b'0');
                self.digits += 1;
                self.value <= 255
            }
            b'.' => {
                if self.after || self.digits == 0 || self.part == 3 {
                    return false;
                }
                self.octets[self.part] = self.value as u8;
                self.part += 1;
                self.value = 0;
                self.digits = 0;
                true
            }
            b' ' | b'\t' => {
                if self.digits > 0 || self.part > 0 {
                    self.after = true;
                }
                true
            }
            _ => false,
        }
    }

    /// The address, when the text was a whole one.
    fn finish(mut self) -> Option<[u8; 4]> {
        if self.part != 3 || self.digits == 0 {
            return None;
        }
        self.octets[3] = self.value as u8;
        Some(self.octets)
    }
}

/// What a rule's flat path made of a query.
enum FlatOutcome {
    /// The rule's zone, but no regex matched.
    No,
    /// Answered (or failed) as the general path would.
    Answered(Step),
    /// This query takes the general path; nothing was written or counted.
    General,
}

/// Whether flat paths are taken (tests turn them off to compare with the general path).
#[cfg(not(test))]
#[inline(always)]
fn flat_allowed() -> bool {
    true
}

#[cfg(test)]
thread_local! {
    /// Off: every query takes the general path. `FLAT_TAKEN` counts flat answers.
    static FLAT_ON: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
    static FLAT_TAKEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
fn flat_allowed() -> bool {
    FLAT_ON.with(std::cell::Cell::get)
}

impl TemplatePlugin {
    /// Rule `ri`'s answer by its flat path ([`Rule::flat`]), for a query in its zone
    /// `zi`: what the general path (`matches` then `answer`) does, in the same order.
    fn flat(&self, ri: usize, zi: usize, q: &mut Query<'_, '_>) -> FlatOutcome {
        let rule = &self.rules[ri];
        let req = q.req;
        let qname = req.qname.wire();
        let mut text = [0u8; crate::dns::wire::MAX_NAME_LEN];
        let Some(n) = rr::plain_text(qname, &mut text) else {
            return FlatOutcome::General;
        };
        let name = &text[..n];
        let mut slots = [None; MAX_FLAT_SLOTS];
        let Some(regex) = rule.regexes.iter().position(|re| re.shape_captures(name, &mut slots)) else {
            return FlatOutcome::No;
        };
        let keys = rule.key_index.get(regex).map_or(&[][..], Vec::as_slice);
        // Every address rendered and parsed before anything is written.
        let mut rdata = [[0u8; 16]; MAX_FLAT_RENDERED];
        let mut lens = [0usize; MAX_FLAT_RENDERED];
        let mut d = 0;
        for rr in rule.sections.iter().flatten() {
            let Body::Dynamic(_) = rr.body else { continue };
            let Some((fast, pieces)) = rr.fast.as_ref().and_then(|f| Some((f, f.pieces.as_ref()?))) else {
                return FlatOutcome::General;
            };
            // An A record's address in its canonical form is read as it is rendered;
            // anything else is rendered whole, then parsed.
            let mut quad = (fast.head.rtype == rtype::A).then(Quad::default);
            let mut out = [0u8; MAX_FLAT_TEXT];
            let mut len = 0;
            for p in pieces {
                let bytes: &[u8] = match p {
                    gotmpl::Piece::Text(t) => t,
                    gotmpl::Piece::Name => name,
                    gotmpl::Piece::Group(id) => {
                        let Some(&Some(slot)) = keys.get(*id) else {
                            return FlatOutcome::General;
                        };
                        match (
                            slots.get(slot).copied().flatten(),
                            slots.get(slot + 1).copied().flatten(),
                        ) {
                            (Some(a), Some(b)) if a.get() <= b.get() => &name[a.get()..b.get()],
                            _ => return FlatOutcome::General,
                        }
                    }
                };
                if let Some(q) = &mut quad {
                    if !bytes.iter().all(|&b| q.feed(b)) {
                        return FlatOutcome::General;
                    }
                    continue;
                }
                let Some(dst) = out.get_mut(len..len + bytes.len()) else {
                    return FlatOutcome::General;
                };
                dst.copy_from_slice(bytes);
                len += bytes.len();
            }
            if let Some(q) = quad {
                match q.finish() {
                    Some(octets) => {
                        rdata[d][..4].copy_from_slice(&octets);
                        lens[d] = 4;
                    }
                    None => return FlatOutcome::General,
                }
                d += 1;
                continue;
            }
            let parsed = std::str::from_utf8(&out[..len])
                .ok()
                .and_then(|t| rr::address(fast.head.rtype, t, &mut rdata[d]));
            match parsed {
                Some(l) => lens[d] = l,
                None => return FlatOutcome::General,
            }
            d += 1;
        }
        #[cfg(test)]
        FLAT_TAKEN.with(|c| c.set(c.get() + 1));
        let (class_label, type_label) = labels(rule, req.qclass, req.qtype);
        let server = self.server_of(q.route.slot);
        self.counters.matched(server, ri, zi, class_label, type_label);
        if rule.rcode == Rcode::SERVFAIL {
            return FlatOutcome::Answered(Step::Fail(Rcode::SERVFAIL, None));
        }
        q.resp.start(req, rule.rcode);
        q.resp.set_aa(true);
        if let Some((code, text)) = &rule.ede {
            q.resp.set_ede(*code, text);
        }
        let mut d = 0;
        for (si, section) in [Section::Answer, Section::Authority, Section::Additional]
            .into_iter()
            .enumerate()
        {
            for rr in &rule.sections[si] {
                if q.worker.budget.charge(1).is_err() {
                    return FlatOutcome::Answered(Step::Fail(Rcode::SERVFAIL, Some(ChainError::OverBudget(NAME))));
                }
                let pushed = match (&rr.body, &rr.fast) {
                    (Body::Fixed(w), _) => {
                        let ol = rr.owner_len;
                        let head: &[u8; 8] = match w.get(ol..ol + 8).and_then(|h| h.try_into().ok()) {
                            Some(h) => h,
                            None => {
                                return FlatOutcome::Answered(
                                    self.fail(format!("record from {:?} could not be written", rr.source)),
                                );
                            }
                        };
                        q.resp.push_parts(section, &w[..ol], head, &w[ol + 10..])
                    }
                    (Body::Dynamic(_), Some(f)) => {
                        let r = q.resp.push_parts(section, qname, f.head.wire(), &rdata[d][..lens[d]]);
                        d += 1;
                        r
                    }
                    (Body::Dynamic(_), None) => Err(crate::dns::PushError::Malformed),
                };
                if let Err(crate::dns::PushError::Malformed | crate::dns::PushError::OutOfOrder) = pushed {
                    return FlatOutcome::Answered(
                        self.fail(format!("record from {:?} could not be written", rr.source)),
                    );
                }
            }
        }
        FlatOutcome::Answered(Step::Answered)
    }
}

impl Scratch {
    /// Writes the query name's presentation form, once per query.
    fn write_name(&mut self, wire: &[u8]) {
        if !self.named {
            // A name without escapes (the usual) is its wire bytes with dots for the
            // length bytes: written so, without the per-label work of the general writer.
            let mut buf = [0u8; crate::dns::wire::MAX_NAME_LEN];
            match rr::plain_text(wire, &mut buf).and_then(|n| std::str::from_utf8(&buf[..n]).ok()) {
                Some(text) => {
                    self.name.clear();
                    self.name.push_str(text);
                }
                None => name_text(wire, &mut self.name),
            }
            self.named = true;
        }
    }
}

/// CoreDNS's three counters. Matches are counted on the query path without a lock, in
/// a fixed open-addressed table keyed by (route, rule, zone, class, type); failures,
/// rare by nature, under a lock.
struct Counters {
    slots: Box<[(AtomicU64, AtomicU64)]>,
    /// Matches whose key found no free slot (more label combinations than slots), and
    /// failures past [`MAX_FAILURE_SERIES`].
    overflow: AtomicU64,
    failures: Mutex<BTreeMap<FailureKey, u64>>,
    /// The `server` labels seen, by index.
    servers: Mutex<Vec<Arc<str>>>,
}

/// The failure series kept per template plugin (each a label combination).
const MAX_FAILURE_SERIES: usize = 4096;

/// (server label index, rule, zone, section, record, class, type, whether the record did not parse)
type FailureKey = (usize, usize, usize, usize, usize, u16, u16, bool);

/// Label combinations the match counters keep apart.
const MATCH_SLOTS: usize = 1024;

impl Counters {
    fn new() -> Counters {
        Counters {
            slots: (0..MATCH_SLOTS)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
            overflow: AtomicU64::new(0),
            failures: Mutex::new(BTreeMap::new()),
            servers: Mutex::new(Vec::new()),
        }
    }

    /// Key layout: bit 63 set (never 0), server label index (15 bits), rule (8), zone (8),
    /// class (16), type (16).
    fn key(route: usize, rule: usize, zone: usize, class: u16, rtype: u16) -> u64 {
        1 << 63
            | ((route as u64 & 0x7FFF) << 48)
            | ((rule as u64 & 0xFF) << 40)
            | ((zone as u64 & 0xFF) << 32)
            | (u64::from(class) << 16)
            | u64::from(rtype)
    }

    fn matched(&self, route: usize, rule: usize, zone: usize, class: u16, rtype: u16) {
        let key = Counters::key(route, rule, zone, class, rtype);
        let start = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize % MATCH_SLOTS;
        for i in 0..MATCH_SLOTS {
            let (k, n) = &self.slots[(start + i) % MATCH_SLOTS];
            let cur = k.load(Ordering::Relaxed);
            if cur == key
                || (cur == 0
                    && match k.compare_exchange(0, key, Ordering::Relaxed, Ordering::Relaxed) {
                        Ok(_) => true,
                        Err(other) => other == key,
                    })
            {
                n.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.overflow.fetch_add(1, Ordering::Relaxed);
    }

    #[allow(clippy::too_many_arguments)]
    fn failed(&self, route: usize, rule: usize, zone: usize, section: usize, rr: usize, c: u16, t: u16, parse: bool) {
        let key = (route, rule, zone, section, rr, c, t, parse);
        let mut failures = self.failures.lock();
        if let Some(n) = failures.get_mut(&key) {
            *n += 1;
        } else if failures.len() < MAX_FAILURE_SERIES {
            failures.insert(key, 1);
        } else {
            // Clients choose the class and type of an ANY rule's key: past the bound,
            // failures are not counted rather than held without end.
            self.overflow.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Lifecycle for TemplatePlugin {
    fn attach(&self, block: &AttachCtx<'_>) {
        let mut servers = self.counters.servers.lock();
        let slots = block.routes.iter().map(|r| r.slot + 1).max().unwrap_or(0);
        let mut by_slot = vec![u16::MAX; slots];
        for r in block.routes {
            let i = match servers.iter().position(|s| *s == r.server) {
                Some(i) => i,
                None => {
                    servers.push(r.server.clone());
                    servers.len() - 1
                }
            };
            by_slot[r.slot] = i as u16;
        }
        let _ = self.by_slot.set(by_slot);
        self.self_log.store(!block.chain.contains(&"errors"), Ordering::Relaxed);
    }

    fn metrics(&self, out: &mut Families) {
        let servers = self.counters.servers.lock().clone();
        let server = |i: usize| -> String { servers.get(i).map_or_else(String::new, |s| s.to_string()) };
        for (k, n) in self.counters.slots.iter() {
            let key = k.load(Ordering::Relaxed);
            if key == 0 {
                continue;
            }
            let route = ((key >> 48) & 0x7FFF) as usize;
            let rule = ((key >> 40) & 0xFF) as usize;
            let zone = ((key >> 32) & 0xFF) as usize;
            let c = class::name((key >> 16) as u16);
            let t = rtype::name(key as u16);
            let zone = self
                .rules
                .get(rule)
                .and_then(|r| r.zones.get(zone))
                .map_or("", |z| z.as_str());
            out.counter(
                "coredns_template_matches_total",
                "Counter of template regex matches.",
                &[
                    ("server", &server(route)),
                    ("zone", zone),
                    ("view", ""),
                    ("class", &c),
                    ("type", &t),
                ],
                n.load(Ordering::Relaxed) as f64,
            );
        }
        for (&(route, rule, zone, section, rr, c, t, parse), &n) in self.counters.failures.lock().iter() {
            let Some(r) = self.rules.get(rule) else { continue };
            let zone = r.zones.get(zone).map_or("", |z| z.as_str());
            let source = r.sections[section].get(rr).map_or("", |x| x.source.as_str());
            let (name, help) = if parse {
                ("coredns_template_rr_failures_total", "Counter of mis-templated RRs.")
            } else {
                (
                    "coredns_template_template_failures_total",
                    "Counter of go template failures.",
                )
            };
            out.counter(
                name,
                help,
                &[
                    ("server", &server(route)),
                    ("zone", zone),
                    ("view", ""),
                    ("class", &class::name(c)),
                    ("type", &rtype::name(t)),
                    ("section", SECTION_LABELS[section]),
                    ("template", source),
                ],
                n as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests;
