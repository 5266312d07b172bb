//! Evaluation: a tree walk over one query's facts.

use std::fmt;
use std::net::IpAddr;

use super::parse::{BinOp, Expr, Func, Quant};
use super::{EvalError, MAX_STRING};
use crate::dns::{Header, Request, Transport, class, rtype, wire};

/// A value of the language (expr-lang's types that the subset can make).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Value>),
}

impl Value {
    /// Go's truth for templates (`{{ if }}`): false, 0, nil and empty are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
        }
    }

    fn kind(&self) -> &'static str {
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

/// Prints as Go's `fmt` prints the same value (what a template writes for `.Var.x`).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("<nil>"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
            Value::Array(a) => {
                f.write_str("[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// A capture group asked for by `group(...)`.
#[derive(Clone, Copy, Debug)]
pub enum GroupKey<'a> {
    Name(&'a str),
    Index(i64),
}

/// What an expression may ask about the query it runs for.
pub struct Facts<'a> {
    pub req: &'a Request<'a>,
    /// The values of the variables declared before, in order.
    pub vars: &'a [Value],
    /// `group(...)`: the capture, or `""` when there is no such group.
    pub group: &'a dyn Fn(GroupKey<'_>) -> String,
    /// `metadata(label)`: the value, or `""` when nobody provides it.
    pub metadata: &'a dyn Fn(&str) -> String,
}

fn err<T>(msg: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError(msg.into()))
}

fn bounded(s: String) -> Result<Value, EvalError> {
    if s.len() > MAX_STRING {
        return err(format!("string longer than {MAX_STRING} bytes"));
    }
    Ok(Value::Str(s))
}

pub fn eval(e: &Expr, f: &Facts<'_>, elem: Option<&Value>) -> Result<Value, EvalError> {
    Ok(match e {
        Expr::Lit(v) => v.clone(),
        Expr::Array(items) => Value::Array(items.iter().map(|i| eval(i, f, elem)).collect::<Result<_, _>>()?),
        Expr::Var(i) => f.vars.get(*i).cloned().unwrap_or(Value::Nil),
        Expr::Elem => elem.cloned().unwrap_or(Value::Nil),
        Expr::Not(x) => match eval(x, f, elem)? {
            Value::Bool(b) => Value::Bool(!b),
            v => return err(format!("invalid operation: ! ({})", v.kind())),
        },
        Expr::Neg(x) => match eval(x, f, elem)? {
            Value::Int(i) => Value::Int(i.wrapping_neg()),
            Value::Float(x) => Value::Float(-x),
            v => return err(format!("invalid operation: - ({})", v.kind())),
        },
        Expr::And(a, b) => Value::Bool(boolean(eval(a, f, elem)?, "&&")? && boolean(eval(b, f, elem)?, "&&")?),
        Expr::Or(a, b) => Value::Bool(boolean(eval(a, f, elem)?, "||")? || boolean(eval(b, f, elem)?, "||")?),
        Expr::Cond(c, a, b) => {
            if boolean(eval(c, f, elem)?, "?:")? {
                eval(a, f, elem)?
            } else {
                eval(b, f, elem)?
            }
        }
        Expr::Matches(x, re) => match eval(x, f, elem)? {
            Value::Str(s) => Value::Bool(re.is_match(&s)),
            v => return err(format!("invalid operation: matches ({})", v.kind())),
        },
        Expr::Binary(op, a, b) => binary(*op, eval(a, f, elem)?, eval(b, f, elem)?)?,
        Expr::Call(func, args) => {
            let mut vals = Vec::with_capacity(args.len());
            for a in args {
                vals.push(eval(a, f, elem)?);
            }
            call(*func, vals, f)?
        }
        Expr::Closure(q, array, pred) => {
            let Value::Array(items) = eval(array, f, elem)? else {
                return err("any/all/none/one need an array");
            };
            let mut hits = 0usize;
            for item in &items {
                if boolean(eval(pred, f, Some(item))?, "predicate")? {
                    hits += 1;
                }
            }
            Value::Bool(match q {
                Quant::Any => hits > 0,
                Quant::All => hits == items.len(),
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

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Int(x), Value::Float(y)) | (Value::Float(y), Value::Int(x)) => (*x as f64) == *y,
        _ => a == b,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) => Some(*x),
        _ => None,
    }
}

fn binary(op: BinOp, a: Value, b: Value) -> Result<Value, EvalError> {
    use std::cmp::Ordering;
    let bad = |a: &Value, b: &Value| err(format!("invalid operation: {op:?} ({} and {})", a.kind(), b.kind()));
    Ok(match op {
        BinOp::Eq => Value::Bool(equal(&a, &b)),
        BinOp::Ne => Value::Bool(!equal(&a, &b)),
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let ord = match (&a, &b) {
                (Value::Int(x), Value::Int(y)) => x.cmp(y),
                (Value::Str(x), Value::Str(y)) => x.cmp(y),
                _ => match (number(&a), number(&b)) {
                    (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
                    _ => return bad(&a, &b),
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
            let found = match &b {
                Value::Array(items) => items.iter().any(|i| equal(&a, i)),
                _ => return bad(&a, &b),
            };
            Value::Bool(found == (op == BinOp::In))
        }
        BinOp::Contains | BinOp::StartsWith | BinOp::EndsWith => match (&a, &b) {
            (Value::Str(x), Value::Str(y)) => Value::Bool(match op {
                BinOp::Contains => x.contains(y.as_str()),
                BinOp::StartsWith => x.starts_with(y.as_str()),
                _ => x.ends_with(y.as_str()),
            }),
            _ => return bad(&a, &b),
        },
        BinOp::Add => match (&a, &b) {
            (Value::Int(x), Value::Int(y)) => Value::Int(x.wrapping_add(*y)),
            (Value::Str(x), Value::Str(y)) => bounded(format!("{x}{y}"))?,
            _ => match (number(&a), number(&b)) {
                (Some(x), Some(y)) => Value::Float(x + y),
                _ => return bad(&a, &b),
            },
        },
        BinOp::Sub | BinOp::Mul => match (&a, &b) {
            (Value::Int(x), Value::Int(y)) if op == BinOp::Sub => Value::Int(x.wrapping_sub(*y)),
            (Value::Int(x), Value::Int(y)) => Value::Int(x.wrapping_mul(*y)),
            _ => match (number(&a), number(&b)) {
                (Some(x), Some(y)) if op == BinOp::Sub => Value::Float(x - y),
                (Some(x), Some(y)) => Value::Float(x * y),
                _ => return bad(&a, &b),
            },
        },
        // expr-lang: `/` always divides as floats.
        BinOp::Div => match (number(&a), number(&b)) {
            (Some(x), Some(y)) => Value::Float(x / y),
            _ => return bad(&a, &b),
        },
        BinOp::Mod => match (&a, &b) {
            (Value::Int(_), Value::Int(0)) => return err("integer divide by zero"),
            (Value::Int(x), Value::Int(y)) => Value::Int(x.wrapping_rem(*y)),
            _ => return bad(&a, &b),
        },
    })
}

fn string_arg(v: &Value, func: &str) -> Result<String, EvalError> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        v => err(format!("{func}: expected a string, got {}", v.kind())),
    }
}

fn call(func: Func, args: Vec<Value>, f: &Facts<'_>) -> Result<Value, EvalError> {
    let req = f.req;
    let s = |i: usize, name: &str| string_arg(&args[i], name);
    Ok(match func {
        Func::Len => match &args[0] {
            Value::Str(x) => Value::Int(x.chars().count() as i64),
            Value::Array(a) => Value::Int(a.len() as i64),
            v => return err(format!("invalid argument for len (type {})", v.kind())),
        },
        Func::Upper => Value::Str(s(0, "upper")?.to_uppercase()),
        Func::Lower => Value::Str(s(0, "lower")?.to_lowercase()),
        Func::Trim => {
            let x = s(0, "trim")?;
            match args.get(1) {
                None => Value::Str(x.trim().to_string()),
                Some(cut) => {
                    let cut = string_arg(cut, "trim")?;
                    Value::Str(x.trim_matches(|c| cut.contains(c)).to_string())
                }
            }
        }
        Func::TrimPrefix => {
            let (x, p) = (s(0, "trimPrefix")?, s(1, "trimPrefix")?);
            Value::Str(x.strip_prefix(p.as_str()).unwrap_or(&x).to_string())
        }
        Func::TrimSuffix => {
            let (x, p) = (s(0, "trimSuffix")?, s(1, "trimSuffix")?);
            Value::Str(x.strip_suffix(p.as_str()).unwrap_or(&x).to_string())
        }
        Func::Replace => {
            let (x, from, to) = (s(0, "replace")?, s(1, "replace")?, s(2, "replace")?);
            // Bound the result before building it: each match may grow it.
            let n = if from.is_empty() {
                x.chars().count() + 1
            } else {
                x.matches(from.as_str()).count()
            };
            if x.len() + n * to.len() > MAX_STRING {
                return err(format!("replace: result longer than {MAX_STRING} bytes"));
            }
            Value::Str(x.replace(from.as_str(), &to))
        }
        Func::Split => {
            let (x, sep) = (s(0, "split")?, s(1, "split")?);
            if sep.is_empty() {
                Value::Array(x.chars().map(|c| Value::Str(c.to_string())).collect())
            } else {
                Value::Array(x.split(sep.as_str()).map(|p| Value::Str(p.to_string())).collect())
            }
        }
        Func::HasPrefix => Value::Bool(s(0, "hasPrefix")?.starts_with(s(1, "hasPrefix")?.as_str())),
        Func::HasSuffix => Value::Bool(s(0, "hasSuffix")?.ends_with(s(1, "hasSuffix")?.as_str())),
        Func::IndexOf => {
            let (x, sub) = (s(0, "indexOf")?, s(1, "indexOf")?);
            Value::Int(x.find(sub.as_str()).map_or(-1, |i| x[..i].chars().count() as i64))
        }
        Func::Int => match &args[0] {
            Value::Int(i) => Value::Int(*i),
            Value::Float(x) => Value::Int(*x as i64),
            Value::Str(x) => match x.parse() {
                Ok(i) => Value::Int(i),
                Err(_) => return err(format!("strconv.Atoi: parsing \"{x}\": invalid syntax")),
            },
            v => return err(format!("invalid operation: int({})", v.kind())),
        },
        Func::Float => match &args[0] {
            Value::Int(i) => Value::Float(*i as f64),
            Value::Float(x) => Value::Float(*x),
            Value::Str(x) => match x.parse() {
                Ok(v) => Value::Float(v),
                Err(_) => return err(format!("strconv.ParseFloat: parsing \"{x}\": invalid syntax")),
            },
            v => return err(format!("invalid operation: float({})", v.kind())),
        },
        Func::String => Value::Str(args[0].to_string()),
        Func::Abs => match &args[0] {
            Value::Int(i) => Value::Int(i.wrapping_abs()),
            Value::Float(x) => Value::Float(x.abs()),
            v => return err(format!("invalid argument for abs (type {})", v.kind())),
        },
        Func::Type => Value::Str(rtype::name(req.qtype).into_owned()),
        Func::Name => Value::Str(wire::name_to_string(req.qname.wire())),
        Func::Class => Value::Str(class::name(req.qclass).into_owned()),
        Func::Proto => Value::Str(
            match req.transport {
                Transport::Udp => "udp",
                Transport::Tcp => "tcp",
            }
            .into(),
        ),
        Func::Size => Value::Int(req.raw.len() as i64),
        Func::ClientIp => Value::Str(req.client.ip().to_string()),
        Func::Port => Value::Str(req.client.port().to_string()),
        Func::Id => Value::Int(i64::from(req.id)),
        Func::Opcode => Value::Int(Header::of(req.raw).map_or(0, |h| i64::from(h.opcode()))),
        Func::Do => Value::Bool(req.dnssec_ok()),
        Func::Bufsize => Value::Int(req.max_size() as i64),
        Func::ServerIp => Value::Str(req.local.ip().to_string()),
        Func::ServerPort => Value::Str(req.local.port().to_string()),
        Func::Incidr => {
            let (ip, cidr) = (s(0, "incidr")?, s(1, "incidr")?);
            let Ok(ip) = ip.parse::<IpAddr>() else {
                return err("first argument is not an IP address");
            };
            match in_cidr(ip, &cidr) {
                Some(b) => Value::Bool(b),
                None => return err(format!("invalid CIDR address: {cidr}")),
            }
        }
        Func::Metadata => Value::Str((f.metadata)(&s(0, "metadata")?)),
        Func::Group => match &args[0] {
            Value::Str(n) => Value::Str((f.group)(GroupKey::Name(n))),
            Value::Int(i) => Value::Str((f.group)(GroupKey::Index(*i))),
            _ => Value::Str(String::new()),
        },
    })
}

/// Whether `ip` is in `cidr` (`10.0.0.0/8`, `2001:db8::/32`), as Go's
/// `net.ParseCIDR(...).Contains`: an IPv4 address written as IPv4-mapped IPv6 is in an
/// IPv4 network. `None` for a malformed CIDR.
pub fn in_cidr(ip: IpAddr, cidr: &str) -> Option<bool> {
    let (addr, len) = cidr.split_once('/')?;
    let net: IpAddr = addr.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if len <= 32 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            Some(u32::from(a) & mask == u32::from(n) & mask)
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if len <= 128 => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - len) };
            Some(u128::from(a) & mask == u128::from(n) & mask)
        }
        (_, IpAddr::V4(_)) if len <= 32 => Some(false),
        (_, IpAddr::V6(_)) if len <= 128 => Some(false),
        _ => None,
    }
}
