//! The rules: what each line of `rewrite` says, parsed once at setup (with CoreDNS's
//! start-up errors), and how each changes a query in flight ([`Work`]).
//!
//! A name is matched and built as CoreDNS does it: as lower-cased presentation text
//! (`state.Name()`), with FROM and TO normalised (`plugin.Name(..).Normalize()`:
//! lower-cased, fully qualified) except a regex's FROM. So `prefix foo bar` matches
//! names starting with `foo.` (CoreDNS's rewrite_test.go, TestRewrite: `prefix prefix
//! to` turns `prefix.nl.` into `to.nl.`).

use std::net::IpAddr;

use regex::{Regex, RegexBuilder};

use super::text::{Text, normalize};
use crate::dns::{Rcode, Request, Transport, class, rtype};

/// CoreDNS's `maxRegexpLen`: a longer pattern is refused at setup.
pub const MAX_REGEX_LEN: usize = 10_000;
/// The most memory one compiled regex (and its lazy DFA cache) may take: 1 MiB each,
/// so that no pattern can make start-up or a query costly. The `regex` crate matches
/// in time linear in the name (no backtracking); names are at most 1,024 characters.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Rules in one server block. The matched rules of a query are kept in a 64-bit set.
pub const MAX_RULES: usize = 64;
/// EDNS options a query may carry for an `edns0` rule to change them (real clients send
/// one to three); a query with more is left as it is by `edns0` rules.
pub const MAX_OPTIONS: usize = 32;
/// Bytes of option data the `edns0` rules of one query may produce (computed values:
/// `{qname}` is at most 1,024 characters, an address 16 bytes, a subnet 20).
const ARENA: usize = 2048;

/// `continue` or `stop` (the default): whether the rules after a matching one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Stop,
    Continue,
}

/// How a rule matches a name.
#[derive(Debug)]
pub enum Matcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Substring(String),
    Regex(Regex),
}

impl Matcher {
    /// Whether `name` (lower-cased presentation form) matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Matcher::Exact(s) => name == s,
            Matcher::Prefix(s) => name.starts_with(s.as_str()),
            Matcher::Suffix(s) => name.ends_with(s.as_str()),
            Matcher::Substring(s) => name.contains(s.as_str()),
            Matcher::Regex(r) => r.is_match(name),
        }
    }

    fn parse(kind: &str, pattern: &str, what: &str) -> Result<Matcher, String> {
        Ok(match kind.to_ascii_lowercase().as_str() {
            "exact" => Matcher::Exact(normalize(pattern)),
            "prefix" => Matcher::Prefix(normalize(pattern)),
            "suffix" => Matcher::Suffix(normalize(pattern)),
            "substring" => Matcher::Substring(normalize(pattern)),
            "regex" => {
                if pattern.len() > MAX_REGEX_LEN {
                    return Err(format!(
                        "regex pattern too long in a {what} rule: {} > {MAX_REGEX_LEN}",
                        pattern.len()
                    ));
                }
                Matcher::Regex(
                    compile(pattern).map_err(|_| format!("invalid regex pattern in a {what} rule: {pattern}"))?,
                )
            }
            _ => {
                return Err(format!(
                    "{what} rule supports only exact, prefix, suffix, substring, and regex name matching"
                ));
            }
        })
    }
}

/// Compiles a pattern with the size bounds.
pub(super) fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// A regex and its replacement template (`{1}.service.{2}.consul.`).
#[derive(Debug)]
pub struct Replace {
    pub pattern: Regex,
    pub template: String,
}

impl Replace {
    /// CoreDNS's `isValidRegexPattern`, then the template normalised.
    fn parse(from: &str, to: &str) -> Result<Replace, String> {
        if from.len() > MAX_REGEX_LEN {
            return Err(format!("regex pattern too long: {} > {MAX_REGEX_LEN}", from.len()));
        }
        let pattern = compile(from).map_err(|_| format!("invalid regex matching pattern: {from}"))?;
        let used = (0..=100).filter(|i| to.contains(&format!("{{{i}}}"))).count();
        if used > pattern.captures_len() - 1 {
            return Err(format!(
                "the rewrite regex pattern ({to}) uses more subexpressions than its corresponding matching regex pattern ({from})"
            ));
        }
        Ok(Replace {
            pattern,
            template: normalize(to),
        })
    }
}

/// What an `answer` option asks for.
#[derive(Debug)]
pub enum Answer {
    /// `answer name FROM TO`: record owner names.
    Name(Replace),
    /// `answer value FROM TO`: names inside record data (CNAME, SRV, MX, ...).
    Value(Replace),
}

/// A `name` rule.
#[derive(Debug)]
pub struct NameRule {
    pub matcher: Matcher,
    /// The replacement: a name, or for `regex` a template.
    pub to: String,
    /// `answer auto` (always for `exact`, as CoreDNS's README says).
    pub auto: bool,
    pub answers: Vec<Answer>,
    /// The same rule on wire names, for `exact` and `suffix` with plain names.
    pub wire: Option<super::fast::WireRule>,
}

/// An `edns0` action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Set,
    Append,
    Replace,
    Unset,
}

/// A value an `edns0 local` rule computes per query (CoreDNS's variables).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Variable {
    Qname,
    Qtype,
    ClientIp,
    ClientPort,
    Protocol,
    ServerIp,
    ServerPort,
    /// `{plugin/label}`: the value of a metadata label (the block needs `metadata`);
    /// without a value, or with an empty one, the rule is ignored (CoreDNS's
    /// edns0VariableRule.ruleData: "unable to extract data", RewriteIgnored).
    Metadata(String),
}

/// What an `edns0` rule writes.
#[derive(Debug)]
pub enum Edns0 {
    Local { code: u16, data: Vec<u8> },
    Variable { code: u16, var: Variable },
    Nsid,
    Subnet { v4: u8, v6: u8 },
}

impl Edns0 {
    pub fn code(&self) -> u16 {
        match self {
            Edns0::Local { code, .. } | Edns0::Variable { code, .. } => *code,
            Edns0::Nsid => NSID,
            Edns0::Subnet { .. } => SUBNET,
        }
    }
}

const NSID: u16 = 3;
const SUBNET: u16 = 8;

/// One rule, as a line (or a block) of `rewrite` gives it.
#[derive(Debug)]
pub enum Kind {
    Name(NameRule),
    Type {
        from: u16,
        to: u16,
    },
    Class {
        from: u16,
        to: u16,
    },
    /// `revert` is accepted and has nothing to undo here: a reply carries this
    /// server's own OPT record, never the query's options (README: differences).
    Edns0 {
        action: Action,
        what: Edns0,
    },
    Ttl {
        matcher: Matcher,
        min: u32,
        max: u32,
    },
    Rcode {
        matcher: Matcher,
        old: Rcode,
        new: Rcode,
    },
    /// `cname`: CNAME targets of the reply (cname.rs).
    Cname(super::cname::CnameRule),
}

#[derive(Debug)]
pub struct Rule {
    pub mode: Mode,
    pub kind: Kind,
}

/// Parses one rule from its words (CoreDNS's `newRule`), with CoreDNS's messages.
pub fn parse(args: &[&str]) -> Result<Rule, String> {
    let Some(first) = args.first() else {
        return Err("no rule type specified for rewrite".into());
    };
    let (mode, rest) = match first.to_ascii_lowercase().as_str() {
        "continue" | "stop" => {
            let mode = if first.eq_ignore_ascii_case("continue") {
                Mode::Continue
            } else {
                Mode::Stop
            };
            if args.len() < 2 {
                return Err(format!(
                    "{} rule must begin with a rule type",
                    first.to_ascii_lowercase()
                ));
            }
            (mode, &args[1..])
        }
        _ => (Mode::Stop, args),
    };
    let field = rest[0].to_ascii_lowercase();
    let params = &rest[1..];
    let kind = match field.as_str() {
        "answer" => return Err("response rewrites must begin with a name rule".into()),
        "name" => Kind::Name(name_rule(params)?),
        "class" | "type" => {
            if params.len() != 2 {
                return Err(format!("{field} rules must have exactly two arguments"));
            }
            if field == "class" {
                let parse =
                    |s: &str| class_from_name(s).ok_or_else(|| format!("invalid class {:?}", s.to_ascii_uppercase()));
                Kind::Class {
                    from: parse(params[0])?,
                    to: parse(params[1])?,
                }
            } else {
                let parse =
                    |s: &str| rtype::from_name(s).ok_or_else(|| format!("invalid type {:?}", s.to_ascii_uppercase()));
                Kind::Type {
                    from: parse(params[0])?,
                    to: parse(params[1])?,
                }
            }
        }
        "edns0" => edns0_rule(params)?,
        "ttl" => ttl_rule(params)?,
        "rcode" => rcode_rule(params)?,
        "cname" => Kind::Cname(super::cname::parse(params)?),
        _ => return Err(format!("invalid rule type {:?}", rest[0])),
    };
    Ok(Rule { mode, kind })
}

fn class_from_name(s: &str) -> Option<u16> {
    match s.to_ascii_uppercase().as_str() {
        "IN" => Some(class::IN),
        "CH" => Some(class::CH),
        "HS" => Some(class::HS),
        "NONE" => Some(class::NONE),
        "ANY" => Some(class::ANY),
        up => up.strip_prefix("CLASS").and_then(|n| n.parse().ok()),
    }
}

fn name_rule(args: &[&str]) -> Result<NameRule, String> {
    if args.len() < 2 {
        return Err("too few arguments for a name rule".into());
    }
    let (kind, from, to) = if args.len() == 2 {
        ("exact".to_string(), args[0], args[1])
    } else {
        (args[0].to_ascii_lowercase(), args[1], args[2])
    };
    let (auto, answers) = if args.len() > 3 {
        answer_rules(&kind, &args[3..])?
    } else {
        (false, Vec::new())
    };
    let matcher = match kind.as_str() {
        "exact" | "prefix" | "suffix" | "substring" => Matcher::parse(&kind, from, "name")?,
        "regex" => {
            let r = Replace::parse(from, to)?;
            Matcher::Regex(r.pattern)
        }
        _ => {
            return Err(format!(
                "name rule supports only exact, prefix, suffix, substring, and regex name matching, received: {kind}"
            ));
        }
    };
    let mut rule = NameRule {
        auto: auto || kind == "exact",
        matcher,
        to: normalize(to),
        answers,
        wire: None,
    };
    rule.wire = super::fast::WireRule::of(&rule);
    Ok(rule)
}

/// CoreDNS's `parseAnswerRules`: `answer auto`, `answer name FROM TO`, `answer value
/// FROM TO`, the word `answer` optional after the first.
fn answer_rules(name: &str, args: &[&str]) -> Result<(bool, Vec<Answer>), String> {
    if args.len() < 2 {
        return Err(format!("invalid arguments for {name} rule"));
    }
    let (mut auto, mut rules, mut names) = (false, Vec::new(), 0);
    let mut i = 0;
    let mut first = true;
    while i < args.len() {
        if first && args[i] != "answer" {
            return Err(format!(
                "exceeded the number of arguments for a non-answer rule argument for {name} rule"
            ));
        }
        first = false;
        if args[i] == "answer" {
            i += 1;
        }
        let Some(&what) = args.get(i) else {
            return Err(format!("type missing for answer rule for {name} rule"));
        };
        i += 1;
        match what {
            "auto" => auto = true,
            "name" | "value" => {
                if args.len() - i < 2 {
                    return Err(format!("{what} answer rule for {name} rule: 2 arguments required"));
                }
                let r = Replace::parse(args[i], args[i + 1])
                    .map_err(|e| format!("{what} answer rule for {name} rule: {e}"))?;
                if what == "name" {
                    names += 1;
                    rules.push(Answer::Name(r));
                } else {
                    rules.push(Answer::Value(r));
                }
                i += 2;
            }
            _ => return Err(format!("invalid type {what:?} for answer rule for {name} rule")),
        }
    }
    if auto && names > 0 {
        return Err("auto name answer rule cannot be combined with explicit name anwer rules".into());
    }
    Ok((auto, rules))
}

/// Go's `strconv.ParseUint(s, 0, bits)`: decimal, `0x` hex, `0o`/`0` octal, `0b` binary.
fn parse_uint(s: &str, max: u64) -> Result<u64, String> {
    let bad = || format!("strconv.ParseUint: parsing {s:?}: invalid syntax");
    let t = s.replace('_', "");
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        u64::from_str_radix(b, 2)
    } else if let Some(o) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        u64::from_str_radix(o, 8)
    } else if t.len() > 1 && t.starts_with('0') {
        u64::from_str_radix(&t[1..], 8)
    } else {
        t.parse::<u64>()
    }
    .map_err(|_| bad())?;
    if v > max {
        return Err(format!("strconv.ParseUint: parsing {s:?}: value out of range"));
    }
    Ok(v)
}

fn edns0_rule(args: &[&str]) -> Result<Kind, String> {
    if args.len() < 2 {
        return Err("too few arguments for an EDNS0 rule".into());
    }
    let what = args[0].to_ascii_lowercase();
    let action = match args[1].to_ascii_lowercase().as_str() {
        "set" => Action::Set,
        "append" => Action::Append,
        "replace" => Action::Replace,
        "unset" => Action::Unset,
        other => return Err(format!("invalid action: {other:?}")),
    };
    if action == Action::Unset {
        let what = match what.as_str() {
            "local" if args.len() == 3 => Edns0::Local {
                code: parse_uint(args[2], u16::MAX as u64)? as u16,
                data: Vec::new(),
            },
            "local" => return Err("local unset action requires exactly two arguments".into()),
            "nsid" if args.len() == 2 => Edns0::Nsid,
            "nsid" => return Err("nsid unset action requires exactly one argument".into()),
            "subnet" if args.len() == 2 => Edns0::Subnet { v4: 0, v6: 0 },
            "subnet" => return Err("subnet unset action requires exactly one argument".into()),
            _ => return Err(format!("invalid rule type {what:?}")),
        };
        return Ok(Kind::Edns0 { action, what });
    }
    let mut args = args;
    if args.last() == Some(&"revert") {
        args = &args[..args.len() - 1];
    }
    let what = match what.as_str() {
        "local" => {
            if args.len() != 4 {
                return Err("EDNS0 local rules require three or four args".into());
            }
            let code = parse_uint(args[2], u16::MAX as u64)? as u16;
            let data = args[3];
            if data.starts_with('{') && data.ends_with('}') {
                let var = match data {
                    "{qname}" => Variable::Qname,
                    "{qtype}" => Variable::Qtype,
                    "{client_ip}" => Variable::ClientIp,
                    "{client_port}" => Variable::ClientPort,
                    "{protocol}" => Variable::Protocol,
                    "{server_ip}" => Variable::ServerIp,
                    "{server_port}" => Variable::ServerPort,
                    // A metadata label is `plugin/name` (CoreDNS's metadata.IsLabel).
                    _ if is_label(&data[1..data.len() - 1]) => Variable::Metadata(data[1..data.len() - 1].to_string()),
                    _ => return Err(format!("unsupported variable name {data:?}")),
                };
                Edns0::Variable { code, var }
            } else if let Some(hex) = data.strip_prefix("0x") {
                Edns0::Local {
                    code,
                    data: decode_hex(hex).ok_or_else(|| format!("encoding/hex: invalid byte in {hex:?}"))?,
                }
            } else {
                Edns0::Local {
                    code,
                    data: data.as_bytes().to_vec(),
                }
            }
        }
        "nsid" => {
            if args.len() != 2 {
                return Err("EDNS0 NSID rules can accept no more than one arg".into());
            }
            Edns0::Nsid
        }
        "subnet" => {
            if args.len() != 4 {
                return Err("EDNS0 subnet rules require three or four args".into());
            }
            let v4 = parse_uint(args[2], u16::MAX as u64)?;
            if v4 > 32 {
                return Err(format!("invalid IPv4 bit mask length {v4}"));
            }
            let v6 = parse_uint(args[3], u16::MAX as u64)?;
            if v6 > 128 {
                return Err(format!("invalid IPv6 bit mask length {v6}"));
            }
            Edns0::Subnet {
                v4: v4 as u8,
                v6: v6 as u8,
            }
        }
        _ => return Err(format!("invalid rule type {what:?}")),
    };
    Ok(Kind::Edns0 { action, what })
}

fn is_label(s: &str) -> bool {
    let mut parts = s.splitn(2, '/');
    matches!((parts.next(), parts.next()), (Some(a), Some(b)) if !a.is_empty() && !b.is_empty())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// CoreDNS's `isValidTTL`: `N`, `MIN-MAX`, `MIN-`, `-MAX`.
fn ttl_value(v: &str) -> Option<(u32, u32)> {
    let parse = |s: &str| s.parse::<u32>().ok();
    match v.split_once('-') {
        None => parse(v).map(|n| (n, n)),
        Some((lo, hi)) => {
            if hi.contains('-') || (lo.is_empty() && hi.is_empty()) {
                return None;
            }
            let min = if lo.is_empty() { 0 } else { parse(lo)? };
            let max = if hi.is_empty() { i32::MAX as u32 } else { parse(hi)? };
            (min <= max).then_some((min, max))
        }
    }
}

fn ttl_rule(args: &[&str]) -> Result<Kind, String> {
    if args.len() < 2 {
        return Err(format!("too few ({}) arguments for a ttl rule", args.len()));
    }
    if args.len() > 3 {
        return Err("many few arguments for a ttl rule".into());
    }
    let s = args[args.len() - 1];
    let (min, max) = ttl_value(s).ok_or_else(|| format!("invalid TTL '{s}' for a ttl rule"))?;
    let matcher = if args.len() == 3 {
        Matcher::parse(args[0], args[1], "ttl")?
    } else {
        Matcher::Exact(normalize(args[0]))
    };
    Ok(Kind::Ttl { matcher, min, max })
}

fn rcode_value(v: &str) -> Option<Rcode> {
    match v.parse::<u64>() {
        Ok(n) if n <= 23 => Some(Rcode(n as u16)),
        Ok(_) => None,
        Err(_) => Rcode::from_name(v),
    }
}

fn rcode_rule(args: &[&str]) -> Result<Kind, String> {
    if args.len() < 3 {
        return Err(format!("too few ({}) arguments for a rcode rule", args.len()));
    }
    if args.len() > 4 {
        return Err("many few arguments for a rcode rule".into());
    }
    let (o, n) = (args[args.len() - 2], args[args.len() - 1]);
    let old = rcode_value(o).ok_or_else(|| format!("invalid matching RCODE '{o}' for a rcode rule"))?;
    let new = rcode_value(n).ok_or_else(|| format!("invalid replacement RCODE '{n}' for a rcode rule"))?;
    let matcher = if args.len() == 4 {
        Matcher::parse(args[0], args[1], "rcode")?
    } else {
        Matcher::Exact(normalize(args[0]))
    };
    Ok(Kind::Rcode { matcher, old, new })
}

/// Where an option's data lies while the rules run.
#[derive(Clone, Copy)]
enum Data<'a> {
    Slice(&'a [u8]),
    Arena(u16, u16),
}

/// The query's EDNS options as the `edns0` rules change them.
pub struct Options<'a> {
    list: [(u16, Data<'a>); MAX_OPTIONS],
    n: usize,
    arena: [u8; ARENA],
    used: usize,
}

impl<'a> Options<'a> {
    fn of(req: &Request<'a>) -> Option<Options<'a>> {
        let mut o = Options {
            list: [(0, Data::Slice(&[])); MAX_OPTIONS],
            n: 0,
            arena: [0; ARENA],
            used: 0,
        };
        for (code, data) in req.edns_options() {
            if o.n == MAX_OPTIONS {
                return None;
            }
            o.list[o.n] = (code, Data::Slice(data));
            o.n += 1;
        }
        Some(o)
    }

    fn find(&self, code: u16) -> Option<usize> {
        self.list[..self.n].iter().position(|(c, _)| *c == code)
    }

    fn push(&mut self, code: u16, data: Data<'a>) -> bool {
        if self.n == MAX_OPTIONS {
            return false;
        }
        self.list[self.n] = (code, data);
        self.n += 1;
        true
    }

    fn unset(&mut self, code: u16) {
        let mut w = 0;
        for r in 0..self.n {
            if self.list[r].0 != code {
                self.list[w] = self.list[r];
                w += 1;
            }
        }
        self.n = w;
    }

    /// Copies `bytes` into the arena; `None` when it is full.
    fn store(&mut self, bytes: &[u8]) -> Option<Data<'a>> {
        let end = self.used + bytes.len();
        if end > ARENA {
            return None;
        }
        self.arena[self.used..end].copy_from_slice(bytes);
        let d = Data::Arena(self.used as u16, bytes.len() as u16);
        self.used = end;
        Some(d)
    }

    /// The options as (code, data) for the query builder.
    pub fn resolved<'s>(&'s self, out: &mut [(u16, &'s [u8]); MAX_OPTIONS]) -> usize {
        for (slot, (code, data)) in out.iter_mut().zip(&self.list[..self.n]) {
            *slot = (
                *code,
                match *data {
                    Data::Slice(s) => s,
                    Data::Arena(at, len) => &self.arena[at as usize..at as usize + len as usize],
                },
            );
        }
        self.n
    }
}

/// A query as the rules change it: its name (lower-cased text), type, class and EDNS
/// options, and whether anything changed.
pub struct Work<'a> {
    pub name: Text,
    /// Scratch for a rule's new name (and, after the rules, for the reply's names).
    pub next: Text,
    pub qtype: u16,
    pub qclass: u16,
    /// Boxed: only `edns0` rules need it (one allocation for a query they change), and
    /// a `Work` without it stays small enough to build on every query.
    pub options: Option<Box<Options<'a>>>,
    /// The name, type, class or options changed: the later plugins get a new query.
    pub changed: bool,
    name_changed: bool,
}

impl<'a> Work<'a> {
    pub fn of(req: &Request<'a>) -> Work<'a> {
        let mut name = Text::new();
        name.set_wire(req.qname.wire(), true);
        Work {
            name,
            qtype: req.qtype,
            qclass: req.qclass,
            options: None,
            changed: false,
            name_changed: false,
            next: Text::new(),
        }
    }
}

/// How a rule reads a metadata label for the query: [`crate::chain::Query::metadata`].
pub type Meta<'m> = &'m dyn Fn(&str, &mut String) -> bool;

/// What applying one rule did.
pub enum Applied {
    Ignored,
    Done,
    /// The rule made a name that is not a valid domain name (CoreDNS: SERVFAIL).
    Invalid,
}

impl Rule {
    /// Applies the rule to the query in `w` (CoreDNS's `Rule.Rewrite`).
    pub fn apply<'a>(&'a self, req: &Request<'a>, w: &mut Work<'a>, meta: Meta<'_>) -> Applied {
        match &self.kind {
            Kind::Name(r) => {
                let name = w.name.as_str();
                let next = &mut w.next;
                next.clear();
                let fits = match &r.matcher {
                    Matcher::Exact(from) => {
                        if name != from {
                            return Applied::Ignored;
                        }
                        next.push(&r.to)
                    }
                    Matcher::Prefix(from) => match name.strip_prefix(from.as_str()) {
                        Some(after) => next.push(&r.to) && next.push(after),
                        None => return Applied::Ignored,
                    },
                    Matcher::Suffix(from) => match name.strip_suffix(from.as_str()) {
                        Some(before) => next.push(before) && next.push(&r.to),
                        None => return Applied::Ignored,
                    },
                    Matcher::Substring(from) => {
                        if !name.contains(from.as_str()) {
                            return Applied::Ignored;
                        }
                        let mut rest = name;
                        let mut ok = true;
                        while let Some(at) = rest.find(from.as_str()) {
                            ok &= next.push(&rest[..at]) && next.push(&r.to);
                            rest = &rest[at + from.len()..];
                        }
                        ok && next.push(rest)
                    }
                    Matcher::Regex(pattern) => match regex_rewrite(pattern, &r.to, name, next) {
                        Some(ok) => ok,
                        None => return Applied::Ignored,
                    },
                };
                w.name.copy_from(&w.next);
                w.changed = true;
                w.name_changed = true;
                let mut wire = [0u8; crate::dns::wire::MAX_NAME_LEN];
                if !fits || w.name.to_wire(&mut wire).is_none() {
                    return Applied::Invalid;
                }
                Applied::Done
            }
            Kind::Type { from, to } => {
                if w.qtype != *from {
                    return Applied::Ignored;
                }
                w.qtype = *to;
                w.changed = true;
                Applied::Done
            }
            Kind::Class { from, to } => {
                if w.qclass != *from {
                    return Applied::Ignored;
                }
                w.qclass = *to;
                w.changed = true;
                Applied::Done
            }
            Kind::Ttl { matcher, .. } | Kind::Rcode { matcher, .. } => {
                if matcher.matches(w.name.as_str()) {
                    Applied::Done
                } else {
                    Applied::Ignored
                }
            }
            Kind::Edns0 { action, what } => self.edns0(req, w, *action, what, meta),
            // CoreDNS's cnameTargetRule.Rewrite: done for every query (its work is on
            // the reply).
            Kind::Cname(_) => Applied::Done,
        }
    }

    fn edns0<'a>(
        &'a self,
        req: &Request<'a>,
        w: &mut Work<'a>,
        action: Action,
        what: &'a Edns0,
        meta: Meta<'_>,
    ) -> Applied {
        // The value first: a variable without one leaves the query alone (CoreDNS's
        // edns0VariableRule: RewriteIgnored), before any OPT is added.
        let mut value = [0u8; 20];
        // A metadata value (allocated only for a rule that reads one).
        let mut label_value = String::new();
        let mut text = Text::new();
        let computed: Option<&[u8]> = match what {
            Edns0::Variable { var, .. } => match var {
                Variable::Qname => {
                    if w.name_changed {
                        text.set(w.name.as_str());
                    } else {
                        text.set_wire(req.qname_raw(), false);
                    }
                    None
                }
                Variable::Qtype => {
                    value[..2].copy_from_slice(&w.qtype.to_be_bytes());
                    Some(&value[..2])
                }
                Variable::ClientIp | Variable::ServerIp => {
                    let ip = if matches!(var, Variable::ClientIp) {
                        req.client.ip()
                    } else {
                        req.local.ip()
                    };
                    match ip {
                        IpAddr::V4(a) => {
                            value[..4].copy_from_slice(&a.octets());
                            Some(&value[..4])
                        }
                        IpAddr::V6(a) => {
                            value[..16].copy_from_slice(&a.octets());
                            Some(&value[..16])
                        }
                    }
                }
                Variable::ClientPort | Variable::ServerPort => {
                    let port = if matches!(var, Variable::ClientPort) {
                        req.client.port()
                    } else {
                        req.local.port()
                    };
                    value[..2].copy_from_slice(&port.to_be_bytes());
                    Some(&value[..2])
                }
                Variable::Protocol => {
                    text.set(match req.transport {
                        Transport::Udp => "udp",
                        Transport::Tcp => "tcp",
                    });
                    None
                }
                Variable::Metadata(label) => {
                    if !meta(label, &mut label_value) || label_value.is_empty() {
                        return Applied::Ignored;
                    }
                    None
                }
            },
            Edns0::Subnet { v4, v6 } => {
                let (family, mask, octets): (u16, u8, [u8; 16]) = match req.client.ip() {
                    IpAddr::V4(a) => {
                        let mut o = [0u8; 16];
                        o[..4].copy_from_slice(&a.octets());
                        (1, *v4, o)
                    }
                    IpAddr::V6(a) => (2, *v6, a.octets()),
                };
                // RFC 7871 6: the address truncated to the source prefix, the bits past
                // it zero (miekg/dns packs ceil(mask/8) bytes).
                let bytes = (mask as usize).div_ceil(8);
                value[..2].copy_from_slice(&family.to_be_bytes());
                value[2] = mask;
                value[3] = 0;
                for i in 0..bytes {
                    let keep = (mask as usize).saturating_sub(i * 8).min(8);
                    let m = if keep == 8 { 0xFF } else { !(0xFFu8 >> keep) };
                    value[4 + i] = octets[i] & m;
                }
                Some(&value[..4 + bytes])
            }
            _ => None,
        };
        if w.options.is_none() {
            w.options = Options::of(req).map(Box::new);
        }
        let Some(opts) = w.options.as_mut() else {
            return Applied::Ignored; // more options than MAX_OPTIONS
        };
        let code = what.code();
        if action == Action::Unset {
            opts.unset(code);
            w.changed = true;
            return Applied::Done;
        }
        let data = match what {
            Edns0::Local { data, .. } => Some(Data::Slice(data.as_slice())),
            Edns0::Nsid => Some(Data::Slice(&[])),
            Edns0::Variable {
                var: Variable::Qname | Variable::Protocol,
                ..
            } => opts.store(text.as_str().as_bytes()),
            Edns0::Variable {
                var: Variable::Metadata(_),
                ..
            } => opts.store(label_value.as_bytes()),
            _ => computed.and_then(|c| opts.store(c)),
        };
        let Some(data) = data else {
            return Applied::Ignored;
        };
        match (opts.find(code), action) {
            (Some(i), Action::Set | Action::Replace) => {
                opts.list[i].1 = data;
            }
            // CoreDNS's README: append adds the option only if none with its code exists.
            (Some(_), _) => return Applied::Ignored,
            (None, Action::Set | Action::Append) => {
                if !opts.push(code, data) {
                    return Applied::Ignored;
                }
            }
            (None, _) => return Applied::Ignored,
        }
        w.changed = true;
        Applied::Done
    }

    /// Whether the rule stops the rules after it when it applies.
    pub fn stops(&self) -> bool {
        self.mode == Mode::Stop
    }
}

/// A regex name rewrite: `template` with `{N}` replaced by the groups of `pattern` in
/// `name`; `None` when it does not match.
pub(super) fn regex_rewrite(pattern: &Regex, template: &str, name: &str, out: &mut Text) -> Option<bool> {
    let caps = pattern.captures(name)?;
    out.clear();
    let mut rest = template;
    let mut ok = true;
    while let Some(open) = rest.find('{') {
        ok &= out.push(&rest[..open]);
        let after = &rest[open + 1..];
        let index = after
            .find('}')
            .and_then(|c| after[..c].parse::<usize>().ok().map(|n| (c, n)));
        match index {
            Some((c, n)) if n < caps.len() => {
                ok &= out.push(caps.get(n).map_or("", |m| m.as_str()));
                rest = &after[c + 1..];
            }
            _ => {
                ok &= out.push("{");
                rest = after;
            }
        }
    }
    Some(ok && out.push(rest))
}

/// Applies a `Replace` to a response string (CoreDNS's regexStringRewriter).
pub fn replace(r: &Replace, src: &str, out: &mut Text) -> bool {
    matches!(regex_rewrite(&r.pattern, &r.template, src, out), Some(true))
}
