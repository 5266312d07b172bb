//! The Go `text/template` subset real `template` blocks use, compiled once at setup.
//!
//! Text, and actions `{{ ... }}` (with `{{-`/`-}}` trimming and `{{/* comments */}}`):
//! * a field: `.Name .Zone .Class .Type .Remote .Regex`, `.Group.NAME`, `.Var.NAME`;
//! * `index .Match N`, `index .Group "NAME"`, `index .Var "NAME"`;
//! * `parseInt S BASE BITS` (Go's strconv.ParseUint), `.Meta "key"`;
//! * `eq A B`, `ne A B`, `not A`, `len X`, string and integer literals, `( ... )`;
//! * `{{ if P }} ... {{ else if P }} ... {{ else }} ... {{ end }}`.
//!
//! Anything else (`.Message`, `.Question`, pipes `|`, `$variables`, `range`, `with`,
//! other functions) is a setup error that names it. Rendering writes into a buffer the
//! caller keeps, so a template whose values are the query's own allocates nothing.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::expr::View;

/// Most bytes one rendered record may have: the longest RR text that can still fit in a
/// message. A render that goes beyond fails (SERVFAIL, counted as a template failure).
pub const MAX_OUTPUT: usize = 65_535;
/// Deepest nesting of `if` blocks and parentheses.
const MAX_DEPTH: usize = 32;

/// What [`Template::skeleton`] writes for an action.
pub const SKELETON_HOLE: char = '\u{1}';

/// A compiled template.
#[derive(Clone, Debug)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Out(Cmd),
    If(Vec<(Cmd, Vec<Node>)>, Vec<Node>),
}

#[derive(Clone, Debug)]
enum Cmd {
    Arg(Arg),
    Index(Arg, Vec<Arg>),
    ParseInt(Arg, Arg, Arg),
    Eq(Arg, Arg),
    Ne(Arg, Arg),
    Not(Arg),
    Len(Arg),
    Meta(Arg),
}

#[derive(Clone, Debug)]
enum Arg {
    Field(Field),
    Str(String),
    Int(i64),
    Bool(bool),
    Sub(Box<Cmd>),
}

/// The fields of CoreDNS's templateData that the subset has.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    Name,
    Zone,
    Class,
    Type,
    Remote,
    Regex,
    Match,
    Group,
    /// `.Group.NAME`: the name, and its index among the rule's keys ([`Names::keys`]),
    /// which the rule resolves once per regex.
    GroupKey(String, usize),
    Var,
    /// A declared variable, by its index.
    VarKey(usize),
}

/// One piece of a flat template ([`Template::pieces`]): it renders as the pieces'
/// bytes one after another.
#[derive(Clone, Debug)]
pub enum Piece {
    Text(Box<[u8]>),
    /// `.Name`.
    Name,
    /// `.Group.NAME`, by its key's index among the rule's keys.
    Group(usize),
}

/// What the data of one render gives the template.
pub trait Data {
    fn field(&self, f: &Field) -> Val<'_>;
    /// The whole match (`0`) or capture `i`; `None` out of range.
    fn matched(&self, i: usize) -> Option<&str>;
    fn matches(&self) -> usize;
    /// A group by name (or by number, as CoreDNS also keys them).
    fn group(&self, name: &str) -> Option<&str>;
    /// Writes the metadata value for `key` (empty when nobody provides it).
    fn meta(&self, key: &str, out: &mut String);
    /// A variable by name (for `index .Var "x"`).
    fn var(&self, name: &str) -> Option<View<'_>>;
    fn vars(&self) -> usize;
    /// Writes field `f` as printing its value would, when the data can do that directly
    /// (`false`: nothing written, the value is made and printed).
    fn write_field(&self, _f: &Field, _out: &mut String) -> bool {
        false
    }
}

/// A value during rendering.
#[derive(Debug)]
pub enum Val<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Uint(u64),
    Bool(bool),
    Value(View<'a>),
    /// `.Match`, `.Group`, `.Var`: only indexable.
    Collection(Field),
    /// A missing map key: Go prints `<no value>`.
    NoValue,
}

impl Val<'_> {
    fn truthy(&self) -> bool {
        match self {
            Val::Str(s) => !s.is_empty(),
            Val::Int(i) => *i != 0,
            Val::Uint(u) => *u != 0,
            Val::Bool(b) => *b,
            Val::Value(v) => v.truthy(),
            Val::Collection(_) => true,
            Val::NoValue => false,
        }
    }

    fn write(&self, out: &mut String) -> Result<(), String> {
        match self {
            Val::Str(s) => out.push_str(s),
            Val::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Val::Uint(u) => {
                let _ = write!(out, "{u}");
            }
            Val::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Val::Value(View::Str(s)) => out.push_str(s),
            Val::Value(v) => {
                let _ = write!(out, "{v}");
            }
            Val::Collection(f) => return Err(format!("cannot print {f:?} as a whole")),
            Val::NoValue => out.push_str("<no value>"),
        }
        Ok(())
    }

    /// Go's `eq` on basic kinds: same kind and value (integers of either sign compare).
    fn equals(&self, other: &Val<'_>) -> Result<bool, String> {
        fn basic<'b>(v: &'b Val<'_>) -> Result<Basic<'b>, String> {
            Ok(match v {
                Val::Str(s) => Basic::S(s),
                Val::Int(i) => Basic::I(i128::from(*i)),
                Val::Uint(u) => Basic::I(i128::from(*u)),
                Val::Bool(b) => Basic::B(*b),
                Val::Value(View::Str(s)) => Basic::S(s),
                Val::Value(View::Int(i)) => Basic::I(i128::from(*i)),
                Val::Value(View::Bool(b)) => Basic::B(*b),
                Val::Value(View::Float(f)) => Basic::F(*f),
                _ => return Err("eq: invalid type for comparison".into()),
            })
        }
        #[derive(PartialEq)]
        enum Basic<'b> {
            S(&'b str),
            I(i128),
            B(bool),
            F(f64),
        }
        let (a, b) = (basic(self)?, basic(other)?);
        if std::mem::discriminant(&a) != std::mem::discriminant(&b) {
            return Err("eq: incompatible types for comparison".into());
        }
        Ok(a == b)
    }
}

/// What a template compiles against: the variables `var` declares.
pub struct Names<'a> {
    pub vars: &'a [String],
    /// The `.Group.NAME` keys of the rule's templates, gathered as they compile.
    pub keys: &'a std::cell::RefCell<Vec<String>>,
}

impl Template {
    /// Compiles `source`.
    pub fn compile(source: &str, names: &Names<'_>) -> Result<Template, String> {
        let mut p = Parser {
            src: source,
            at: 0,
            names,
            depth: 0,
        };
        let (nodes, end) = p.nodes()?;
        if let Some(end) = end {
            return Err(format!("unexpected {{{{{end}}}}}"));
        }
        Ok(Template { nodes })
    }

    /// The text, when the template has no actions: it renders the same for every query.
    pub fn constant(&self) -> Option<String> {
        let mut s = String::new();
        for n in &self.nodes {
            match n {
                Node::Text(t) => s.push_str(t),
                _ => return None,
            }
        }
        Some(s)
    }

    /// The text with each action written as [`SKELETON_HOLE`]; `None` when the
    /// template has an `if` (its text depends on the data).
    pub fn skeleton(&self) -> Option<String> {
        let mut s = String::new();
        for n in &self.nodes {
            match n {
                Node::Text(t) => s.push_str(t),
                Node::Out(_) => s.push(SKELETON_HOLE),
                Node::If(..) => return None,
            }
        }
        Some(s)
    }

    /// The text right after the owner when the template starts with `{{ .Name }}`
    /// followed by text (what [`rr::head`](super::rr::head) reads the TTL, class and
    /// type from): such a record can be written from the query's wire name.
    pub fn after_name_owner(&self) -> Option<&str> {
        match self.nodes.as_slice() {
            [Node::Out(Cmd::Arg(Arg::Field(Field::Name))), Node::Text(t), ..] => Some(t),
            _ => None,
        }
    }

    /// What follows byte `from` of the text after the owner (see
    /// [`Self::after_name_owner`]): the record's rdata, as a template of its own.
    pub fn rdata_from(&self, from: usize) -> Option<Template> {
        let [_, Node::Text(t), rest @ ..] = self.nodes.as_slice() else {
            return None;
        };
        let mut nodes = Vec::with_capacity(rest.len() + 1);
        let tail = t.get(from..)?;
        if !tail.is_empty() {
            nodes.push(Node::Text(tail.to_string()));
        }
        nodes.extend(rest.iter().cloned());
        Some(Template { nodes })
    }

    /// The template as a flat list of pieces, when it only prints text, `.Name` and
    /// `.Group.NAME` (what a record's flat path renders by copying bytes).
    pub fn pieces(&self) -> Option<Vec<Piece>> {
        self.nodes
            .iter()
            .map(|n| match n {
                Node::Text(t) => Some(Piece::Text(t.as_bytes().into())),
                Node::Out(Cmd::Arg(Arg::Field(Field::Name))) => Some(Piece::Name),
                Node::Out(Cmd::Arg(Arg::Field(Field::GroupKey(_, id)))) => Some(Piece::Group(*id)),
                _ => None,
            })
            .collect()
    }

    /// Whether the template uses `.Match` or `.Group` (the regex must then capture).
    pub fn uses_captures(&self) -> bool {
        self.uses(&|f| matches!(f, Field::Match | Field::Group | Field::GroupKey(..)))
    }

    /// Whether the template uses `.Remote` (the client's address is then written out).
    pub fn uses_remote(&self) -> bool {
        self.uses(&|f| *f == Field::Remote)
    }

    /// Whether some field the template reads satisfies `want`.
    fn uses(&self, want: &dyn Fn(&Field) -> bool) -> bool {
        fn arg(a: &Arg, want: &dyn Fn(&Field) -> bool) -> bool {
            match a {
                Arg::Field(f) => want(f),
                Arg::Sub(c) => cmd(c, want),
                _ => false,
            }
        }
        fn cmd(c: &Cmd, want: &dyn Fn(&Field) -> bool) -> bool {
            match c {
                Cmd::Arg(a) | Cmd::Not(a) | Cmd::Len(a) | Cmd::Meta(a) => arg(a, want),
                Cmd::Index(a, b) => arg(a, want) || b.iter().any(|x| arg(x, want)),
                Cmd::ParseInt(a, b, c) => arg(a, want) || arg(b, want) || arg(c, want),
                Cmd::Eq(a, b) | Cmd::Ne(a, b) => arg(a, want) || arg(b, want),
            }
        }
        fn nodes(n: &[Node], want: &dyn Fn(&Field) -> bool) -> bool {
            n.iter().any(|n| match n {
                Node::Text(_) => false,
                Node::Out(c) => cmd(c, want),
                Node::If(arms, other) => arms.iter().any(|(c, b)| cmd(c, want) || nodes(b, want)) || nodes(other, want),
            })
        }
        nodes(&self.nodes, want)
    }

    /// Renders into `out` (cleared first).
    pub fn render(&self, data: &dyn Data, out: &mut String) -> Result<(), String> {
        out.clear();
        render_nodes(&self.nodes, data, out)?;
        if out.len() > MAX_OUTPUT {
            return Err(format!("rendered record longer than {MAX_OUTPUT} bytes"));
        }
        Ok(())
    }
}

fn render_nodes<'d>(nodes: &'d [Node], data: &'d dyn Data, out: &mut String) -> Result<(), String> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Out(c) => {
                // A field printed as it is: written by the data itself, with no value made.
                let written = match c {
                    Cmd::Arg(Arg::Field(f)) => data.write_field(f, out),
                    _ => false,
                };
                if !written {
                    eval(c, data, out)?.write(out)?;
                }
            }
            Node::If(arms, other) => {
                let mut done = false;
                for (cond, body) in arms {
                    let mut scratch = String::new();
                    if eval(cond, data, &mut scratch)?.truthy() {
                        render_nodes(body, data, out)?;
                        done = true;
                        break;
                    }
                }
                if !done {
                    render_nodes(other, data, out)?;
                }
            }
        }
        if out.len() > MAX_OUTPUT {
            return Err(format!("rendered record longer than {MAX_OUTPUT} bytes"));
        }
    }
    Ok(())
}

fn arg<'d>(a: &'d Arg, data: &'d dyn Data, out: &mut String) -> Result<Val<'d>, String> {
    Ok(match a {
        Arg::Field(f) => data.field(f),
        Arg::Str(s) => Val::Str(Cow::Borrowed(s)),
        Arg::Int(i) => Val::Int(*i),
        Arg::Bool(b) => Val::Bool(*b),
        Arg::Sub(c) => eval(c, data, out)?,
    })
}

fn text<'v>(v: &'v Val<'_>) -> Result<&'v str, String> {
    match v {
        Val::Str(s) => Ok(s),
        Val::Value(View::Str(s)) => Ok(s),
        _ => Err("expected a string".into()),
    }
}

fn int(v: &Val<'_>) -> Result<i64, String> {
    match v {
        Val::Int(i) => Ok(*i),
        Val::Uint(u) => i64::try_from(*u).map_err(|_| "integer out of range".to_string()),
        Val::Value(View::Int(i)) => Ok(*i),
        _ => Err("expected an integer".into()),
    }
}

fn eval<'d>(c: &'d Cmd, data: &'d dyn Data, out: &mut String) -> Result<Val<'d>, String> {
    Ok(match c {
        Cmd::Arg(a) => arg(a, data, out)?,
        Cmd::Not(a) => Val::Bool(!arg(a, data, out)?.truthy()),
        Cmd::Eq(a, b) => Val::Bool(arg(a, data, out)?.equals(&arg(b, data, out)?)?),
        Cmd::Ne(a, b) => Val::Bool(!arg(a, data, out)?.equals(&arg(b, data, out)?)?),
        Cmd::Len(a) => match arg(a, data, out)? {
            Val::Str(s) => Val::Int(s.len() as i64),
            Val::Value(View::Str(s)) => Val::Int(s.len() as i64),
            Val::Value(View::Array(_, a)) => Val::Int(a.len() as i64),
            Val::Collection(Field::Match) => Val::Int(data.matches() as i64),
            Val::Collection(Field::Var) => Val::Int(data.vars() as i64),
            Val::Collection(Field::Group) => Val::Int(data.matches() as i64),
            _ => return Err("len of a value without a length".into()),
        },
        Cmd::Index(coll, keys) => {
            let mut v = arg(coll, data, out)?;
            for k in keys {
                let k = arg(k, data, out)?;
                v = match v {
                    Val::Collection(Field::Match) => {
                        let i = int(&k)?;
                        match usize::try_from(i).ok().and_then(|i| data.matched(i)) {
                            Some(m) => Val::Str(Cow::Borrowed(m)),
                            None => {
                                return Err(format!("error calling index: index out of range: {i}"));
                            }
                        }
                    }
                    Val::Collection(Field::Group) => match data.group(text(&k)?) {
                        Some(g) => Val::Str(Cow::Borrowed(g)),
                        None => Val::NoValue,
                    },
                    Val::Collection(Field::Var) => match data.var(text(&k)?) {
                        Some(v) => Val::Value(v),
                        None => Val::NoValue,
                    },
                    _ => return Err("index of a value that cannot be indexed".into()),
                };
            }
            v
        }
        Cmd::ParseInt(s, base, bits) => {
            let sv = arg(s, data, out)?;
            let s = text(&sv)?;
            let base = int(&arg(base, data, out)?)?;
            let bits = int(&arg(bits, data, out)?)?;
            Val::Uint(parse_uint(s, base, bits)?)
        }
        Cmd::Meta(key) => {
            let kv = arg(key, data, out)?;
            let mut v = String::new();
            data.meta(text(&kv)?, &mut v);
            Val::Str(Cow::Owned(v))
        }
    })
}

/// Go's strconv.ParseUint(s, base, bitSize): base 0 (prefix decides) or 2..=36, size
/// 0 (64) or 1..=64; errors in Go's words.
fn parse_uint(s: &str, base: i64, bits: i64) -> Result<u64, String> {
    let fail = |why: &str| Err(format!("strconv.ParseUint: parsing \"{s}\": {why}"));
    let bits = if bits == 0 { 64 } else { bits };
    if !(1..=64).contains(&bits) {
        return Err(format!("strconv.ParseUint: parsing \"{s}\": invalid bit size {bits}"));
    }
    let (digits, base) = match base {
        0 => {
            let l = s.to_ascii_lowercase();
            if l.starts_with("0x") {
                (&s[2..], 16)
            } else if l.starts_with("0b") {
                (&s[2..], 2)
            } else if l.starts_with("0o") {
                (&s[2..], 8)
            } else if s.len() > 1 && s.starts_with('0') {
                (&s[1..], 8)
            } else {
                (s, 10)
            }
        }
        2..=36 => (s, base as u32),
        _ => return Err(format!("strconv.ParseUint: parsing \"{s}\": invalid base {base}")),
    };
    if digits.is_empty() {
        return fail("invalid syntax");
    }
    let Ok(v) = u64::from_str_radix(digits, base) else {
        return if digits.chars().all(|c| c.is_digit(base)) {
            fail("value out of range")
        } else {
            fail("invalid syntax")
        };
    };
    if bits < 64 && v >> bits != 0 {
        return fail("value out of range");
    }
    Ok(v)
}

struct Parser<'a> {
    src: &'a str,
    at: usize,
    names: &'a Names<'a>,
    depth: usize,
}

/// How a list of nodes ended: at the end of the text, or at `else`/`else if`/`end`.
type End = Option<String>;

impl Parser<'_> {
    /// Nodes up to the end or a closing action (returned, trimmed).
    fn nodes(&mut self) -> Result<(Vec<Node>, End), String> {
        let mut nodes = Vec::new();
        loop {
            let rest = &self.src[self.at..];
            let Some(open) = rest.find("{{") else {
                if !rest.is_empty() {
                    nodes.push(Node::Text(rest.to_string()));
                }
                self.at = self.src.len();
                return Ok((nodes, None));
            };
            let mut text = &rest[..open];
            let mut inner_start = self.at + open + 2;
            if self.src[inner_start..].starts_with("- ") || self.src[inner_start..].starts_with("-\t") {
                text = text.trim_end();
                inner_start += 1;
            }
            if !text.is_empty() {
                nodes.push(Node::Text(text.to_string()));
            }
            let Some(close) = self.src[inner_start..].find("}}") else {
                return Err("unclosed action".into());
            };
            let mut inner = &self.src[inner_start..inner_start + close];
            self.at = inner_start + close + 2;
            if inner.ends_with(" -") || inner.ends_with("\t-") {
                inner = &inner[..inner.len() - 1];
                let trimmed = self.src[self.at..].trim_start();
                self.at = self.src.len() - trimmed.len();
            }
            let inner = inner.trim();
            if inner.starts_with("/*") && inner.ends_with("*/") {
                continue;
            }
            let words = tokens(inner)?;
            match words.first().map(String::as_str) {
                Some("if") => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err(format!("if blocks nested deeper than {MAX_DEPTH}"));
                    }
                    let mut arms = vec![];
                    let mut cond = self.cmd(&words[1..])?;
                    let other = loop {
                        let (body, end) = self.nodes()?;
                        let end = end.ok_or("unexpected EOF: {{ if }} without {{ end }}")?;
                        arms.push((cond, body));
                        match end.as_str() {
                            "end" => break vec![],
                            "else" => {
                                let (body, end) = self.nodes()?;
                                if end.as_deref() != Some("end") {
                                    return Err("expected {{ end }} after {{ else }}".into());
                                }
                                break body;
                            }
                            elif => {
                                let w = tokens(elif)?;
                                cond = self.cmd(&w[2..])?;
                            }
                        }
                    };
                    self.depth -= 1;
                    nodes.push(Node::If(arms, other));
                }
                Some("end") | Some("else") if words.len() == 1 => return Ok((nodes, Some(words[0].clone()))),
                Some("else") if words.get(1).map(String::as_str) == Some("if") => {
                    return Ok((nodes, Some(inner.to_string())));
                }
                Some(
                    w @ ("range" | "with" | "define" | "template" | "block" | "break" | "continue" | "else" | "end"),
                ) => {
                    return Err(format!("'{w}' is not in the template subset clusterdns implements"));
                }
                None => return Err("missing value for command".into()),
                _ => nodes.push(Node::Out(self.cmd(&words)?)),
            }
        }
    }

    fn cmd(&mut self, words: &[String]) -> Result<Cmd, String> {
        if words.iter().any(|w| w == "|") {
            return Err("pipelines ('|') are not in the template subset clusterdns implements".into());
        }
        let Some(first) = words.first() else {
            return Err("missing value for command".into());
        };
        if let Some(w) = words.iter().find(|w| w.starts_with('$')) {
            return Err(format!(
                "variables ({w}) are not in the template subset clusterdns implements"
            ));
        }
        let args = &words[1..];
        let want = |n: usize, f: &str| {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!("wrong number of args for {f}: want {n} got {}", args.len()))
            }
        };
        Ok(match first.as_str() {
            "index" => {
                if args.is_empty() {
                    return Err("wrong number of args for index: want at least 1 got 0".into());
                }
                let coll = self.arg(&args[0])?;
                let keys = args[1..].iter().map(|a| self.arg(a)).collect::<Result<_, _>>()?;
                Cmd::Index(coll, keys)
            }
            "parseInt" => {
                want(3, "parseInt")?;
                Cmd::ParseInt(self.arg(&args[0])?, self.arg(&args[1])?, self.arg(&args[2])?)
            }
            "eq" | "ne" => {
                want(2, first)?;
                let (a, b) = (self.arg(&args[0])?, self.arg(&args[1])?);
                if first == "eq" { Cmd::Eq(a, b) } else { Cmd::Ne(a, b) }
            }
            "not" => {
                want(1, "not")?;
                Cmd::Not(self.arg(&args[0])?)
            }
            "len" => {
                want(1, "len")?;
                Cmd::Len(self.arg(&args[0])?)
            }
            ".Meta" => {
                want(1, ".Meta")?;
                Cmd::Meta(self.arg(&args[0])?)
            }
            _ if args.is_empty() => Cmd::Arg(self.arg(first)?),
            f if f.starts_with('.') || f.starts_with('"') || f.starts_with('(') => {
                return Err(format!("can't give argument to non-function {f}"));
            }
            f => {
                return Err(format!(
                    "function \"{f}\" not defined (not in the template subset clusterdns implements)"
                ));
            }
        })
    }

    fn arg(&mut self, w: &str) -> Result<Arg, String> {
        if let Some(inner) = w.strip_prefix('(').and_then(|w| w.strip_suffix(')')) {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(format!("parentheses nested deeper than {MAX_DEPTH}"));
            }
            let c = self.cmd(&tokens(inner)?)?;
            self.depth -= 1;
            return Ok(Arg::Sub(Box::new(c)));
        }
        if let Some(s) = w.strip_prefix('"') {
            return unquote(s).map(Arg::Str);
        }
        if let Some(s) = w.strip_prefix('`').and_then(|s| s.strip_suffix('`')) {
            return Ok(Arg::Str(s.to_string()));
        }
        if let Ok(i) = w.parse::<i64>() {
            return Ok(Arg::Int(i));
        }
        match w {
            "true" => return Ok(Arg::Bool(true)),
            "false" => return Ok(Arg::Bool(false)),
            _ => {}
        }
        if w.starts_with('$') {
            return Err(format!(
                "variables ({w}) are not in the template subset clusterdns implements"
            ));
        }
        let Some(path) = w.strip_prefix('.') else {
            return Err(format!(
                "function \"{w}\" not defined (not in the template subset clusterdns implements)"
            ));
        };
        let mut parts = path.split('.');
        let head = parts.next().unwrap_or("");
        let key = parts.next();
        if parts.next().is_some() {
            return Err(format!("can't evaluate {w}: too many field names"));
        }
        let f = match (head, key) {
            ("Name", None) => Field::Name,
            ("Zone", None) => Field::Zone,
            ("Class", None) => Field::Class,
            ("Type", None) => Field::Type,
            ("Remote", None) => Field::Remote,
            ("Regex", None) => Field::Regex,
            ("Match", None) => Field::Match,
            ("Group", None) => Field::Group,
            ("Group", Some(k)) => {
                let mut keys = self.names.keys.borrow_mut();
                let id = match keys.iter().position(|x| x == k) {
                    Some(id) => id,
                    None => {
                        keys.push(k.to_string());
                        keys.len() - 1
                    }
                };
                Field::GroupKey(k.to_string(), id)
            }
            ("Var", None) => Field::Var,
            ("Var", Some(k)) => match self.names.vars.iter().rposition(|v| v == k) {
                Some(i) => Field::VarKey(i),
                None => return Err(format!("{w}: no variable '{k}' is declared with 'var'")),
            },
            ("Message" | "Question", _) => {
                return Err(format!(".{head} is not in the template subset clusterdns implements"));
            }
            ("Meta", None) => return Err(".Meta needs a key: .Meta \"kubernetes/client-namespace\"".into()),
            _ => return Err(format!("can't evaluate field {path} in type *template.templateData")),
        };
        Ok(Arg::Field(f))
    }
}

/// Splits an action into words: quoted strings and parenthesized groups stay whole.
fn tokens(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if i >= b.len() {
                    return Err("unterminated quoted string".into());
                }
                i += 1;
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
                if i >= b.len() {
                    return Err("unterminated raw quoted string".into());
                }
                i += 1;
            }
            b'(' => {
                let mut depth = 0;
                while i < b.len() {
                    match b[i] {
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        b'"' => {
                            i += 1;
                            while i < b.len() && b[i] != b'"' {
                                i += if b[i] == b'\\' { 2 } else { 1 };
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                if i >= b.len() {
                    return Err("unclosed left paren".into());
                }
                i += 1;
            }
            _ => {
                while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'(' {
                    i += 1;
                }
            }
        }
        out.push(s[start..i.min(s.len())].to_string());
    }
    Ok(out)
}

/// A Go interpreted string literal's body (after the opening quote).
fn unquote(s: &str) -> Result<String, String> {
    let body = s.strip_suffix('"').ok_or("unterminated quoted string")?;
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            other => return Err(format!("invalid escape \\{} in a quoted string", other.unwrap_or(' '))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct D;
    impl Data for D {
        fn field(&self, f: &Field) -> Val<'_> {
            match f {
                Field::Name => Val::Str("ip0a7b7b7b.example.".into()),
                Field::Zone => Val::Str("example.".into()),
                Field::Class => Val::Str("IN".into()),
                Field::Type => Val::Str("A".into()),
                Field::Remote => Val::Str("10.240.0.1".into()),
                Field::Regex => Val::Str(".*".into()),
                Field::GroupKey(k, _) => self.group(k).map_or(Val::NoValue, |g| Val::Str(g.into())),
                Field::VarKey(_) => Val::Value(View::Bool(true)),
                f => Val::Collection(f.clone()),
            }
        }
        fn matched(&self, i: usize) -> Option<&str> {
            ["ip0a7b7b7b.example.", "7b"].get(i).copied()
        }
        fn matches(&self) -> usize {
            2
        }
        fn group(&self, name: &str) -> Option<&str> {
            (name == "b" || name == "1").then_some("7b")
        }
        fn meta(&self, key: &str, out: &mut String) {
            if key == "kubernetes/client-namespace" {
                out.push_str("default");
            }
        }
        fn var(&self, _: &str) -> Option<View<'_>> {
            None
        }
        fn vars(&self) -> usize {
            1
        }
    }

    fn render(src: &str) -> Result<String, String> {
        let vars = ["local".to_string()];
        let t = Template::compile(
            src,
            &Names {
                vars: &vars,
                keys: &Default::default(),
            },
        )?;
        let mut out = String::new();
        t.render(&D, &mut out)?;
        Ok(out)
    }

    /// Each case from CoreDNS's plugin/template README examples or template_test.go.
    #[test]
    fn the_subset_renders_as_go_does() {
        let ok = |src: &str, want: &str| assert_eq!(render(src).as_deref(), Ok(want), "{src}");
        ok("{{ .Name }} 60 IN A 10.0.0.1", "ip0a7b7b7b.example. 60 IN A 10.0.0.1");
        // README "Resolve hexadecimal ip pattern using parseInt".
        ok("10.{{ parseInt .Group.b 16 8 }}", "10.123");
        // README "Block invalid search domain completions": index .Match 1.
        ok("{{ index .Match 1 }} x", "7b x");
        ok("{{ .Zone }} 60 {{ .Class }} SOA", "example. 60 IN SOA");
        ok("{{ .Remote }}/{{ .Type }}", "10.240.0.1/A");
        // var_test "BoolInTemplateCondition".
        ok("{{ if .Var.local }}10.0.0.1{{ else }}192.0.2.1{{ end }}", "10.0.0.1");
        ok("{{ if not .Var.local }}a{{ else if eq .Type \"A\" }}b{{ end }}", "b");
        // var_test "NoVars": len .Var.
        ok("\"{{ len .Var }}\"", "\"1\"");
        ok("{{ .Meta \"kubernetes/client-namespace\" }}.svc", "default.svc");
        ok("{{ .Group.missing }}", "<no value>");
        ok("a {{- \" b \" -}} c", "a b c");
        ok("{{/* a comment */}}x", "x");
        ok("{{ index .Group \"1\" }}", "7b");
        // Failures at render time: Go's "index out of range" and ParseUint's errors.
        assert!(
            render("{{ index .Match 5 }}")
                .unwrap_err()
                .contains("index out of range: 5")
        );
        assert!(
            render("{{ parseInt .Name 16 8 }}")
                .unwrap_err()
                .contains("invalid syntax")
        );
        assert!(
            render("{{ parseInt \"1ff\" 16 8 }}")
                .unwrap_err()
                .contains("value out of range")
        );
    }

    #[test]
    fn outside_the_subset_is_a_setup_error() {
        for (src, want) in [
            ("{{ .Message }}", ".Message is not in the template subset"),
            ("{{ .Question.Name }}", ".Question is not in the template subset"),
            ("{{ .Name | printf \"%s\" }}", "pipelines ('|')"),
            ("{{ range .Match }}{{ end }}", "'range' is not in the template subset"),
            ("{{ printf \"%s\" .Name }}", "function \"printf\" not defined"),
            ("{{ $x := 1 }}", "variables ($x)"),
            ("{{ .Var.nope }}", "no variable 'nope'"),
            ("{{ .Nmae }}", "can't evaluate field Nmae"),
            ("{{ if .Name }}x", "without {{ end }}"),
            ("{{ .Name ", "unclosed action"),
            ("{{ end }}", "unexpected {{end}}"),
        ] {
            let got = render(src).unwrap_err();
            assert!(got.contains(want), "{src}: {got}");
        }
    }
}
