//! Evaluation: a tree walk over one query's facts, with every string and array the
//! query makes kept in a [`Heap`] the caller owns and reuses, so that a warm worker
//! evaluates without allocating.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use super::parse::{BinOp, Expr, Func, Quant};
use super::{EvalError, MAX_HEAP, MAX_STEPS, MAX_STRING};
use crate::dns::{Header, Request, Transport, class, rtype};

/// Where a string or an array lies in a [`Heap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    at: u32,
    len: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.at as usize..(self.at + self.len) as usize
    }
}

/// A value of the language (expr-lang's types that the subset can make). Strings and
/// arrays live in the [`Heap`] they were made in: read them through [`Heap::view`].
#[derive(Clone, Copy, Debug, Default)]
pub enum Value {
    #[default]
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Span),
    Array(Span),
}

impl Value {
    /// Go's truth for templates (`{{ if }}`): false, 0, nil and empty are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) | Value::Array(s) => s.len != 0,
        }
    }

    /// The type's name, as expr-lang's errors write it.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
        }
    }
}

/// A worker's store for the strings and arrays of one query's evaluations: cleared
/// per query, keeping its capacity, at most [`MAX_HEAP`] bytes of text.
#[derive(Debug, Default)]
pub struct Heap {
    text: String,
    items: Vec<Value>,
    /// Array items being evaluated (a literal's items are made contiguous once all are known).
    stack: Vec<Value>,
    /// Where a new string is built before it is appended to `text`.
    tmp: String,
    /// Expression nodes evaluated since the last clear: `any`/`all` nested over arrays
    /// multiply, so a query's evaluations stop at [`MAX_STEPS`].
    steps: u32,
}

/// A value read from its heap.
#[derive(Clone, Copy, Debug)]
pub enum View<'h> {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'h str),
    Array(&'h Heap, &'h [Value]),
}

impl View<'_> {
    pub fn truthy(&self) -> bool {
        match self {
            View::Nil => false,
            View::Bool(b) => *b,
            View::Int(i) => *i != 0,
            View::Float(f) => *f != 0.0,
            View::Str(s) => !s.is_empty(),
            View::Array(_, a) => !a.is_empty(),
        }
    }
}

/// Prints as Go's `fmt` prints the same value (what a template writes for `.Var.x`).
impl fmt::Display for View<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            View::Nil => f.write_str("<nil>"),
            View::Bool(b) => write!(f, "{b}"),
            View::Int(i) => write!(f, "{i}"),
            View::Float(x) => write!(f, "{x}"),
            View::Str(s) => f.write_str(s),
            View::Array(heap, a) => {
                f.write_str("[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{}", heap.view(*v))?;
                }
                f.write_str("]")
            }
        }
    }
}

impl Heap {
    /// Forgets every value (their spans are no longer valid).
    pub fn clear(&mut self) {
        self.text.clear();
        self.items.clear();
        self.stack.clear();
        self.steps = 0;
    }

    /// Reads a value.
    pub fn view(&self, v: Value) -> View<'_> {
        match v {
            Value::Nil => View::Nil,
            Value::Bool(b) => View::Bool(b),
            Value::Int(i) => View::Int(i),
            Value::Float(x) => View::Float(x),
            Value::Str(s) => View::Str(self.text.get(s.range()).unwrap_or("")),
            Value::Array(s) => View::Array(self, self.items.get(s.range()).unwrap_or(&[])),
        }
    }

    /// A string value's text ("" for anything else).
    pub fn str(&self, v: Value) -> &str {
        match v {
            Value::Str(s) => self.text.get(s.range()).unwrap_or(""),
            _ => "",
        }
    }

    /// Stores a string (bounded as [`Self::build`] bounds one, without its copy).
    pub fn string(&mut self, s: &str) -> Result<Value, EvalError> {
        if s.len() > MAX_STRING {
            return err(format!("string longer than {MAX_STRING} bytes"));
        }
        if self.text.len() + s.len() > MAX_HEAP {
            return err(format!("more than {MAX_HEAP} bytes of strings in one query"));
        }
        let at = self.text.len();
        self.text.push_str(s);
        Ok(Value::Str(Span {
            at: at as u32,
            len: s.len() as u32,
        }))
    }

    /// Stores an array.
    pub fn array(&mut self, items: &[Value]) -> Result<Value, EvalError> {
        let at = self.items.len();
        if at + items.len() > MAX_HEAP {
            return err(format!("more than {MAX_HEAP} values in one query"));
        }
        self.items.extend_from_slice(items);
        Ok(Value::Array(Span {
            at: at as u32,
            len: items.len() as u32,
        }))
    }

    /// Builds a string from the heap's text (`f` reads the text, writes the result),
    /// then stores it: bounded by [`MAX_STRING`] per string and [`MAX_HEAP`] in all.
    fn build(&mut self, f: impl FnOnce(&str, &mut String) -> Result<(), EvalError>) -> Result<Value, EvalError> {
        let Heap { text, tmp, .. } = self;
        tmp.clear();
        f(text, tmp)?;
        if tmp.len() > MAX_STRING {
            return err(format!("string longer than {MAX_STRING} bytes"));
        }
        if text.len() + tmp.len() > MAX_HEAP {
            return err(format!("more than {MAX_HEAP} bytes of strings in one query"));
        }
        let at = text.len();
        text.push_str(tmp);
        Ok(Value::Str(Span {
            at: at as u32,
            len: tmp.len() as u32,
        }))
    }

    /// A part of a stored string (`part` must be a sub-slice of `self.str(of)`).
    fn sub(&self, of: Value, part: &str) -> Value {
        let Value::Str(s) = of else { return Value::Nil };
        let whole = self.str(of);
        let off = part.as_ptr() as usize - whole.as_ptr() as usize;
        Value::Str(Span {
            at: s.at + off as u32,
            len: part.len() as u32,
        })
    }
}

/// A capture group asked for by `group(...)`.
#[derive(Clone, Copy, Debug)]
pub enum GroupKey<'a> {
    Name(&'a str),
    Index(i64),
}

/// What an expression may ask about the query it runs for.
pub struct Facts<'a, 'n> {
    pub req: &'a Request<'a>,
    /// The query name, lower-cased, in presentation form (`name()`: see [`write_name`]).
    pub name: &'a str,
    /// The values of the variables declared before, in order (in the heap given to `eval`).
    pub vars: &'a [Value],
    /// `group(...)`: the capture, or `None` when there is no such group.
    pub group: &'a dyn Fn(GroupKey<'_>) -> Option<&'n str>,
    /// `metadata(label)`: writes the value into the empty string given (nothing when
    /// nobody provides it).
    pub metadata: &'a dyn Fn(&str, &mut String),
}

fn err<T>(msg: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError(msg.into()))
}

pub fn eval(e: &Expr, f: &Facts<'_, '_>, h: &mut Heap, elem: Option<Value>) -> Result<Value, EvalError> {
    h.steps += 1;
    if h.steps > MAX_STEPS {
        return err(format!("evaluation took more than {MAX_STEPS} steps"));
    }
    Ok(match e {
        Expr::Lit(v) => *v,
        Expr::LitStr(s) => h.string(s)?,
        Expr::Array(items) => {
            let base = h.stack.len();
            for i in items {
                let v = eval(i, f, h, elem)?;
                h.stack.push(v);
            }
            let at = h.items.len();
            let n = h.stack.len() - base;
            if at + n > MAX_HEAP {
                return err(format!("more than {MAX_HEAP} values in one query"));
            }
            let Heap { items, stack, .. } = h;
            items.extend(stack.drain(base..));
            Value::Array(Span {
                at: at as u32,
                len: n as u32,
            })
        }
        Expr::Var(i) => f.vars.get(*i).copied().unwrap_or(Value::Nil),
        Expr::Elem => elem.unwrap_or(Value::Nil),
        Expr::Not(x) => match eval(x, f, h, elem)? {
            Value::Bool(b) => Value::Bool(!b),
            v => return err(format!("invalid operation: ! ({})", v.kind())),
        },
        Expr::Neg(x) => match eval(x, f, h, elem)? {
            Value::Int(i) => Value::Int(i.wrapping_neg()),
            Value::Float(x) => Value::Float(-x),
            v => return err(format!("invalid operation: - ({})", v.kind())),
        },
        Expr::And(a, b) => Value::Bool(boolean(eval(a, f, h, elem)?, "&&")? && boolean(eval(b, f, h, elem)?, "&&")?),
        Expr::Or(a, b) => Value::Bool(boolean(eval(a, f, h, elem)?, "||")? || boolean(eval(b, f, h, elem)?, "||")?),
        Expr::Cond(c, a, b) => {
            if boolean(eval(c, f, h, elem)?, "?:")? {
                eval(a, f, h, elem)?
            } else {
                eval(b, f, h, elem)?
            }
        }
        Expr::Matches(x, re) => match eval(x, f, h, elem)? {
            v @ Value::Str(_) => Value::Bool(re.is_match(h.str(v))),
            v => return err(format!("invalid operation: matches ({})", v.kind())),
        },
        Expr::Binary(op, a, b) => {
            let a = eval(a, f, h, elem)?;
            let b = eval(b, f, h, elem)?;
            binary(*op, a, b, h)?
        }
        Expr::Call(func, args) => {
            // No function takes more than three arguments (checked by the parser).
            let mut vals = [Value::Nil; 3];
            for (slot, a) in vals.iter_mut().zip(args) {
                *slot = eval(a, f, h, elem)?;
            }
            call(*func, &vals[..args.len().min(3)], f, h)?
        }
        Expr::InCidr(x, net) => {
            // The literal's node, which the call would have visited.
            h.steps += 1;
            let v = eval(x, f, h, elem)?;
            string_arg(v, "incidr")?;
            let Some(ip) = parse_ip(h.str(v)) else {
                return err("first argument is not an IP address");
            };
            Value::Bool(net.contains(ip))
        }
        Expr::Closure(q, array, pred) => {
            let Value::Array(items) = eval(array, f, h, elem)? else {
                return err("any/all/none/one need an array");
            };
            let mut hits = 0usize;
            for k in items.range() {
                let item = h.items[k];
                if boolean(eval(pred, f, h, Some(item))?, "predicate")? {
                    hits += 1;
                }
            }
            Value::Bool(match q {
                Quant::Any => hits > 0,
                Quant::All => hits == items.len as usize,
                Quant::None => hits == 0,
                Quant::One => hits == 1,
            })
        }
    })
}

fn boolean(v: Value, op: &str) -> Result<bool, EvalError> {
    match v {
        Value::Bool(b) => Ok(b),
        v => err(format!("invalid operation: {op} on {}", v.kind())),
    }
}

/// expr-lang's `==`: numbers of either kind by value, strings and arrays by content.
fn equal(a: Value, b: Value, h: &Heap) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => (x as f64) == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Nil, Value::Nil) => true,
        (Value::Str(_), Value::Str(_)) => h.str(a) == h.str(b),
        (Value::Array(x), Value::Array(y)) => {
            x.len == y.len && x.range().zip(y.range()).all(|(i, j)| equal(h.items[i], h.items[j], h))
        }
        _ => false,
    }
}

fn number(v: Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(i as f64),
        Value::Float(x) => Some(x),
        _ => None,
    }
}

fn binary(op: BinOp, a: Value, b: Value, h: &mut Heap) -> Result<Value, EvalError> {
    use std::cmp::Ordering;
    let bad = |a: Value, b: Value| err(format!("invalid operation: {op:?} ({} and {})", a.kind(), b.kind()));
    Ok(match op {
        BinOp::Eq => Value::Bool(equal(a, b, h)),
        BinOp::Ne => Value::Bool(!equal(a, b, h)),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let ord = match (a, b) {
                (Value::Int(x), Value::Int(y)) => x.cmp(&y),
                (Value::Str(_), Value::Str(_)) => h.str(a).cmp(h.str(b)),
                _ => match (number(a), number(b)) {
                    (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
                    _ => return bad(a, b),
                },
            };
            Value::Bool(match op {
                BinOp::Lt => ord == Ordering::Less,
                BinOp::Le => ord != Ordering::Greater,
                BinOp::Gt => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            })
        }
        BinOp::In | BinOp::NotIn => {
            let found = match b {
                Value::Array(items) => items.range().any(|i| equal(a, h.items[i], h)),
                _ => return bad(a, b),
            };
            Value::Bool(found == (op == BinOp::In))
        }
        BinOp::Contains | BinOp::StartsWith | BinOp::EndsWith => match (a, b) {
            (Value::Str(_), Value::Str(_)) => {
                let (x, y) = (h.str(a), h.str(b));
                Value::Bool(match op {
                    BinOp::Contains => x.contains(y),
                    BinOp::StartsWith => x.starts_with(y),
                    _ => x.ends_with(y),
                })
            }
            _ => return bad(a, b),
        },
        BinOp::Add => match (a, b) {
            (Value::Int(x), Value::Int(y)) => Value::Int(x.wrapping_add(y)),
            (Value::Str(x), Value::Str(y)) => h.build(|t, out| {
                out.push_str(&t[x.range()]);
                out.push_str(&t[y.range()]);
                Ok(())
            })?,
            _ => match (number(a), number(b)) {
                (Some(x), Some(y)) => Value::Float(x + y),
                _ => return bad(a, b),
            },
        },
        BinOp::Sub | BinOp::Mul => match (a, b) {
            (Value::Int(x), Value::Int(y)) if op == BinOp::Sub => Value::Int(x.wrapping_sub(y)),
            (Value::Int(x), Value::Int(y)) => Value::Int(x.wrapping_mul(y)),
            _ => match (number(a), number(b)) {
                (Some(x), Some(y)) if op == BinOp::Sub => Value::Float(x - y),
                (Some(x), Some(y)) => Value::Float(x * y),
                _ => return bad(a, b),
            },
        },
        // expr-lang: `/` always divides as floats.
        BinOp::Div => match (number(a), number(b)) {
            (Some(x), Some(y)) => Value::Float(x / y),
            _ => return bad(a, b),
        },
        BinOp::Mod => match (a, b) {
            (Value::Int(_), Value::Int(0)) => return err("integer divide by zero"),
            (Value::Int(x), Value::Int(y)) => Value::Int(x.wrapping_rem(y)),
            _ => return bad(a, b),
        },
    })
}

/// The span of a string argument, or the error naming the function.
fn string_arg(v: Value, func: &str) -> Result<Span, EvalError> {
    match v {
        Value::Str(s) => Ok(s),
        v => err(format!("{func}: expected a string, got {}", v.kind())),
    }
}

fn call(func: Func, args: &[Value], f: &Facts<'_, '_>, h: &mut Heap) -> Result<Value, EvalError> {
    let req = f.req;
    let s = |i: usize, name: &str| string_arg(args[i], name);
    let t = |sp: Span, h: &Heap| -> String { h.text[sp.range()].to_string() };
    Ok(match func {
        Func::Len => match args[0] {
            Value::Str(_) => Value::Int(h.str(args[0]).chars().count() as i64),
            Value::Array(a) => Value::Int(i64::from(a.len)),
            v => return err(format!("invalid argument for len (type {})", v.kind())),
        },
        // Go's strings.ToUpper/ToLower: rune by rune.
        Func::Upper => {
            let x = s(0, "upper")?;
            h.build(|t, out| {
                out.extend(t[x.range()].chars().flat_map(char::to_uppercase));
                Ok(())
            })?
        }
        Func::Lower => {
            let x = s(0, "lower")?;
            h.build(|t, out| {
                out.extend(t[x.range()].chars().flat_map(char::to_lowercase));
                Ok(())
            })?
        }
        // Trimming only narrows a string: the result is a part of the argument.
        Func::Trim => {
            s(0, "trim")?;
            let x = h.str(args[0]);
            let part = match args.get(1) {
                None => x.trim(),
                Some(&cut) => {
                    string_arg(cut, "trim")?;
                    let cut = h.str(cut);
                    x.trim_matches(|c| cut.contains(c))
                }
            };
            h.sub(args[0], part)
        }
        Func::TrimPrefix | Func::TrimSuffix => {
            let name = if func == Func::TrimPrefix {
                "trimPrefix"
            } else {
                "trimSuffix"
            };
            s(0, name)?;
            s(1, name)?;
            let (x, p) = (h.str(args[0]), h.str(args[1]));
            let part = if func == Func::TrimPrefix {
                x.strip_prefix(p).unwrap_or(x)
            } else {
                x.strip_suffix(p).unwrap_or(x)
            };
            h.sub(args[0], part)
        }
        Func::Replace => {
            let (x, from, to) = (s(0, "replace")?, s(1, "replace")?, s(2, "replace")?);
            h.build(|t, out| {
                let (x, from, to) = (&t[x.range()], &t[from.range()], &t[to.range()]);
                // Bound the result before building it: each match may grow it.
                let n = if from.is_empty() {
                    x.chars().count() + 1
                } else if let &[f] = from.as_bytes() {
                    if to.len() <= 1 && 2 * x.len() <= MAX_STRING {
                        // The bound below holds whatever the count: not counted.
                        0
                    } else {
                        x.bytes().filter(|&b| b == f).count()
                    }
                } else {
                    x.matches(from).count()
                };
                if x.len() + n * to.len() > MAX_STRING {
                    return err(format!("replace: result longer than {MAX_STRING} bytes"));
                }
                if from.is_empty() {
                    // Go's strings.Replace with an empty old: `to` around every rune.
                    out.push_str(to);
                    for c in x.chars() {
                        out.push(c);
                        out.push_str(to);
                    }
                } else if let (&[f], &[t]) = (from.as_bytes(), to.as_bytes())
                    && f.is_ascii()
                    && t.is_ascii()
                {
                    // One ASCII byte for another (`replace(ip, '-', '.')`): one pass,
                    // not the substring searcher's setup per call.
                    let (f, t) = (char::from(f), char::from(t));
                    out.extend(x.chars().map(|c| if c == f { t } else { c }));
                } else {
                    let mut last = 0;
                    for (i, m) in x.match_indices(from) {
                        out.push_str(&x[last..i]);
                        out.push_str(to);
                        last = i + m.len();
                    }
                    out.push_str(&x[last..]);
                }
                Ok(())
            })?
        }
        Func::Split => {
            s(0, "split")?;
            s(1, "split")?;
            let (x, sep) = (args[0], args[1]);
            let mut parts: Vec<Value> = std::mem::take(&mut h.stack);
            let (whole, sepv) = (h.str(x), h.str(sep));
            let at = h.items.len();
            let Value::Str(base) = x else { return Ok(Value::Nil) };
            let mark = parts.len();
            let span = |p: &str| {
                Value::Str(Span {
                    at: base.at + (p.as_ptr() as usize - whole.as_ptr() as usize) as u32,
                    len: p.len() as u32,
                })
            };
            if sepv.is_empty() {
                for (i, c) in whole.char_indices() {
                    parts.push(span(&whole[i..i + c.len_utf8()]));
                }
            } else {
                for p in whole.split(sepv) {
                    parts.push(span(p));
                }
            }
            let n = parts.len() - mark;
            let r = if at + n > MAX_HEAP {
                err(format!("more than {MAX_HEAP} values in one query"))
            } else {
                h.items.extend(parts.drain(mark..));
                Ok(Value::Array(Span {
                    at: at as u32,
                    len: n as u32,
                }))
            };
            parts.truncate(mark);
            h.stack = parts;
            r?
        }
        Func::HasPrefix => {
            s(0, "hasPrefix")?;
            s(1, "hasPrefix")?;
            Value::Bool(h.str(args[0]).starts_with(h.str(args[1])))
        }
        Func::HasSuffix => {
            s(0, "hasSuffix")?;
            s(1, "hasSuffix")?;
            Value::Bool(h.str(args[0]).ends_with(h.str(args[1])))
        }
        Func::IndexOf => {
            s(0, "indexOf")?;
            s(1, "indexOf")?;
            let (x, sub) = (h.str(args[0]), h.str(args[1]));
            Value::Int(x.find(sub).map_or(-1, |i| x[..i].chars().count() as i64))
        }
        Func::Int => match args[0] {
            Value::Int(i) => Value::Int(i),
            Value::Float(x) => Value::Int(x as i64),
            v @ Value::Str(sp) => match h.str(v).parse() {
                Ok(i) => Value::Int(i),
                Err(_) => return err(format!("strconv.Atoi: parsing \"{}\": invalid syntax", t(sp, h))),
            },
            v => return err(format!("invalid operation: int({})", v.kind())),
        },
        Func::Float => match args[0] {
            Value::Int(i) => Value::Float(i as f64),
            Value::Float(x) => Value::Float(x),
            v @ Value::Str(sp) => match h.str(v).parse() {
                Ok(v) => Value::Float(v),
                Err(_) => return err(format!("strconv.ParseFloat: parsing \"{}\": invalid syntax", t(sp, h))),
            },
            v => return err(format!("invalid operation: float({})", v.kind())),
        },
        Func::String => match args[0] {
            v @ Value::Str(_) => v,
            v => {
                // Printed into the scratch string, then stored.
                let mut tmp = std::mem::take(&mut h.tmp);
                tmp.clear();
                let _ = write!(tmp, "{}", h.view(v));
                let r = h.string(&tmp);
                h.tmp = tmp;
                r?
            }
        },
        Func::Abs => match args[0] {
            Value::Int(i) => Value::Int(i.wrapping_abs()),
            Value::Float(x) => Value::Float(x.abs()),
            v => return err(format!("invalid argument for abs (type {})", v.kind())),
        },
        Func::Type => h.string(&rtype::name(req.qtype))?,
        Func::Name => h.string(f.name)?,
        Func::Class => h.string(&class::name(req.qclass))?,
        Func::Proto => h.string(match req.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })?,
        Func::Size => Value::Int(req.raw.len() as i64),
        Func::ClientIp => h.build(|_, out| {
            let _ = write!(out, "{}", req.client.ip());
            Ok(())
        })?,
        Func::Port => h.build(|_, out| {
            let _ = write!(out, "{}", req.client.port());
            Ok(())
        })?,
        Func::Id => Value::Int(i64::from(req.id)),
        Func::Opcode => Value::Int(Header::of(req.raw).map_or(0, |h| i64::from(h.opcode()))),
        Func::Do => Value::Bool(req.dnssec_ok()),
        Func::Bufsize => Value::Int(req.max_size() as i64),
        Func::ServerIp => h.build(|_, out| {
            let _ = write!(out, "{}", req.local.ip());
            Ok(())
        })?,
        Func::ServerPort => h.build(|_, out| {
            let _ = write!(out, "{}", req.local.port());
            Ok(())
        })?,
        Func::Incidr => {
            s(0, "incidr")?;
            let cidr = s(1, "incidr")?;
            let Some(ip) = parse_ip(h.str(args[0])) else {
                return err("first argument is not an IP address");
            };
            match in_cidr(ip, h.str(args[1])) {
                Some(b) => Value::Bool(b),
                None => return err(format!("invalid CIDR address: {}", t(cidr, h))),
            }
        }
        Func::Metadata => {
            let label = s(0, "metadata")?;
            h.build(|t, out| {
                (f.metadata)(&t[label.range()], out);
                Ok(())
            })?
        }
        Func::Group => {
            let found = match args[0] {
                v @ Value::Str(_) => (f.group)(GroupKey::Name(h.str(v))),
                Value::Int(i) => (f.group)(GroupKey::Index(i)),
                _ => None,
            };
            h.string(found.unwrap_or(""))?
        }
    })
}

/// Whether `ip` is in `cidr` (`10.0.0.0/8`, `2001:db8::/32`), as Go's
/// `net.ParseCIDR(...).Contains`: an IPv4 address written as IPv4-mapped IPv6 is in an
/// IPv4 network. `None` for a malformed CIDR.
pub fn in_cidr(ip: IpAddr, cidr: &str) -> Option<bool> {
    Some(Cidr::parse(cidr)?.contains(ip))
}

/// A network read from `10.0.0.0/8` or `2001:db8::/32` (the prefix length fits the
/// family).
#[derive(Clone, Copy, Debug)]
pub struct Cidr {
    net: IpAddr,
    len: u32,
}

impl Cidr {
    /// `None` for a malformed CIDR.
    pub fn parse(cidr: &str) -> Option<Cidr> {
        let (addr, len) = cidr.split_once('/')?;
        let net: IpAddr = addr.parse().ok()?;
        let len: u32 = len.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Cidr { net, len })
    }

    /// Whether `ip` is in the network (see [`in_cidr`]).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let len = self.len;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (ip, self.net) {
            (IpAddr::V4(a), IpAddr::V4(n)) => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                u32::from(a) & mask == u32::from(n) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(n)) => {
                let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
                u128::from(a) & mask == u128::from(n) & mask
            }
            _ => false,
        }
    }
}

/// An IP address as Rust's parser reads it, with the usual IPv4 form (four decimal
/// parts of at most three digits, no leading zero) read without it.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    match parse_ipv4(s) {
        Some(v4) => Some(IpAddr::V4(v4)),
        None => s.parse().ok(),
    }
}

/// `a.b.c.d`, each part 0-255 in at most three digits without a leading zero: what
/// `Ipv4Addr::from_str` takes, read in one pass (`None` for anything else, which that
/// parser then reads or refuses).
pub fn parse_ipv4(s: &str) -> Option<std::net::Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut part = 0;
    let mut digits = 0;
    let mut v: u32 = 0;
    for &b in s.as_bytes() {
        match b {
            b'0'..=b'9' => {
                if digits == 3 || (digits == 1 && v == 0) {
                    return None;
                }
                v = v * 10 + u32::from(b - b'0');
                digits += 1;
            }
            b'.' if digits > 0 && part < 3 => {
                octets[part] = u8::try_from(v).ok()?;
                part += 1;
                digits = 0;
                v = 0;
            }
            _ => return None,
        }
    }
    if part != 3 || digits == 0 {
        return None;
    }
    octets[3] = u8::try_from(v).ok()?;
    Some(std::net::Ipv4Addr::from(octets))
}

/// Writes a lower-cased wire name in presentation form (RFC 1035 5.1 escapes, as
/// CoreDNS's `state.Name()`), into a buffer that keeps its capacity.
pub fn write_name(wire: &[u8], out: &mut String) {
    // Written as bytes (all ASCII), then made a string again with one check: the
    // buffer keeps its capacity.
    let mut buf = std::mem::take(out).into_bytes();
    buf.clear();
    // The usual name, every label printable ASCII with nothing to escape: its wire form
    // from the second byte in one copy, each later length byte then made a dot.
    let mut at = 0;
    while let Some(&len) = wire.get(at)
        && len != 0
        && let Some(label) = wire.get(at + 1..at + 1 + usize::from(len))
        && label.iter().all(|&b| PLAIN[usize::from(b)])
    {
        at += 1 + usize::from(len);
    }
    if at > 0 && wire.get(at).is_none_or(|&b| b == 0) {
        buf.extend_from_slice(&wire[1..at]);
        buf.push(b'.');
        let mut p = usize::from(wire[0]);
        while p + 1 < buf.len() {
            let len = usize::from(buf[p]);
            buf[p] = b'.';
            p += 1 + len;
        }
        *out = String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        return;
    }
    let mut at = 0;
    while at < wire.len() && wire[at] != 0 {
        let len = wire[at] as usize;
        let label = wire.get(at + 1..at + 1 + len).unwrap_or(&[]);
        if label.iter().all(|&b| PLAIN[b as usize]) {
            // The usual label: printable ASCII with nothing to escape, copied whole.
            buf.extend_from_slice(label);
        } else {
            for &b in label {
                match b {
                    b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                        buf.push(b'\\');
                        buf.push(b);
                    }
                    0x21..=0x7E => buf.push(b),
                    _ => buf.extend_from_slice(&[b'\\', b'0' + b / 100, b'0' + b / 10 % 10, b'0' + b % 10]),
                }
            }
        }
        buf.push(b'.');
        at += 1 + len;
    }
    if buf.is_empty() {
        buf.push(b'.');
    }
    *out = String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
}

/// The bytes a name label holds that its presentation form writes as they are.
const PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x21;
    while b <= 0x7E {
        t[b] = !matches!(b as u8, b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$');
        b += 1;
    }
    t
};
