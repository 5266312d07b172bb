//! The parser: tokens to a tree, every name resolved, depth bounded.

use super::eval::{Cidr, Value};
use super::lex::Tok;
use super::{CompileError, MAX_ARRAY, MAX_DEPTH, Scope};

/// A compiled expression node.
#[derive(Debug)]
pub enum Expr {
    Lit(Value),
    /// A string literal (copied into the query's heap when evaluated).
    LitStr(String),
    Array(Vec<Expr>),
    /// A variable declared before (its index in `Facts::vars`).
    Var(usize),
    /// `#`, the element a closure looks at.
    Elem,
    Not(Box<Expr>),
    Neg(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `x matches 'literal'`: the pattern compiled once, here.
    Matches(Box<Expr>, Box<regex::Regex>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
    /// `any/all/none/one(array, predicate)`.
    Closure(Quant, Box<Expr>, Box<Expr>),
    /// `incidr(x, 'literal')` whose literal is a network: parsed once, here.
    InCidr(Box<Expr>, Cidr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Contains,
    StartsWith,
    EndsWith,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quant {
    Any,
    All,
    None,
    One,
}

/// The functions of the subset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Len,
    Upper,
    Lower,
    Trim,
    TrimPrefix,
    TrimSuffix,
    Replace,
    Split,
    HasPrefix,
    HasSuffix,
    IndexOf,
    Int,
    Float,
    String,
    Abs,
    // CoreDNS's query functions (plugin/pkg/expression DefaultEnv).
    Type,
    Name,
    Class,
    Proto,
    Size,
    ClientIp,
    Port,
    Id,
    Opcode,
    Do,
    Bufsize,
    ServerIp,
    ServerPort,
    Incidr,
    Metadata,
    /// template's `group(name|index)`.
    Group,
}

/// Name, function, fewest and most arguments.
const FUNCTIONS: &[(&str, Func, usize, usize)] = &[
    ("len", Func::Len, 1, 1),
    ("upper", Func::Upper, 1, 1),
    ("lower", Func::Lower, 1, 1),
    ("trim", Func::Trim, 1, 2),
    ("trimPrefix", Func::TrimPrefix, 2, 2),
    ("trimSuffix", Func::TrimSuffix, 2, 2),
    ("replace", Func::Replace, 3, 3),
    ("split", Func::Split, 2, 2),
    ("hasPrefix", Func::HasPrefix, 2, 2),
    ("hasSuffix", Func::HasSuffix, 2, 2),
    ("indexOf", Func::IndexOf, 2, 2),
    ("int", Func::Int, 1, 1),
    ("float", Func::Float, 1, 1),
    ("string", Func::String, 1, 1),
    ("abs", Func::Abs, 1, 1),
    ("type", Func::Type, 0, 0),
    ("name", Func::Name, 0, 0),
    ("class", Func::Class, 0, 0),
    ("proto", Func::Proto, 0, 0),
    ("size", Func::Size, 0, 0),
    ("client_ip", Func::ClientIp, 0, 0),
    ("port", Func::Port, 0, 0),
    ("id", Func::Id, 0, 0),
    ("opcode", Func::Opcode, 0, 0),
    ("do", Func::Do, 0, 0),
    ("bufsize", Func::Bufsize, 0, 0),
    ("server_ip", Func::ServerIp, 0, 0),
    ("server_port", Func::ServerPort, 0, 0),
    ("incidr", Func::Incidr, 2, 2),
    ("metadata", Func::Metadata, 1, 1),
];

const QUANTIFIERS: &[(&str, Quant)] = &[
    ("any", Quant::Any),
    ("all", Quant::All),
    ("none", Quant::None),
    ("one", Quant::One),
];

/// Whether `name` is a function of the subset.
pub fn is_function(name: &str) -> bool {
    FUNCTIONS.iter().any(|f| f.0 == name) || QUANTIFIERS.iter().any(|q| q.0 == name)
}

struct Parser<'a> {
    toks: &'a [Tok],
    at: usize,
    scope: &'a Scope,
    depth: usize,
    /// How many closures we are inside (`#` is valid only then).
    closures: usize,
    /// Whether `group(...)` was called.
    group: bool,
}

/// The tree, and whether it calls `group(...)`.
pub fn parse(toks: &[Tok], scope: &Scope) -> Result<(Expr, bool), CompileError> {
    if toks.is_empty() {
        return Err(CompileError("empty expression".into()));
    }
    let mut p = Parser {
        toks,
        at: 0,
        scope,
        depth: 0,
        closures: 0,
        group: false,
    };
    let e = p.expr()?;
    if let Some(t) = p.peek() {
        return Err(CompileError(format!("unexpected {} after the expression", show(t))));
    }
    check(&e)?;
    let mut e = e;
    fold(&mut e);
    Ok((e, p.group))
}

/// Work done once that every evaluation would repeat: `incidr(x, '10.0.0.0/8')` keeps
/// its network parsed ([`Expr::InCidr`]); a literal that is no network stays a call (its
/// error is the query's, as before).
fn fold(e: &mut Expr) {
    match e {
        Expr::Lit(_) | Expr::LitStr(_) | Expr::Var(_) | Expr::Elem => {}
        Expr::Array(items) => items.iter_mut().for_each(fold),
        Expr::Not(x) | Expr::Neg(x) | Expr::Matches(x, _) | Expr::InCidr(x, _) => fold(x),
        Expr::And(a, b) | Expr::Or(a, b) | Expr::Binary(_, a, b) | Expr::Closure(_, a, b) => {
            fold(a);
            fold(b);
        }
        Expr::Cond(c, a, b) => {
            fold(c);
            fold(a);
            fold(b);
        }
        Expr::Call(func, args) => {
            args.iter_mut().for_each(fold);
            let net = match (*func, args.as_slice()) {
                (Func::Incidr, [_, Expr::LitStr(c)]) => Cidr::parse(c),
                _ => None,
            };
            if let Some(net) = net {
                let x = std::mem::replace(&mut args[0], Expr::Lit(Value::Nil));
                *e = Expr::InCidr(Box::new(x), net);
            }
        }
    }
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Int(v) => format!("'{v}'"),
        Tok::Float(v) => format!("'{v}'"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Ident(s) => format!("'{s}'"),
        Tok::Hash => "'#'".into(),
        Tok::Op(o) => format!("'{o}'"),
    }
}

fn unsupported(what: &str) -> CompileError {
    CompileError(format!(
        "{what} is not in the expression subset clusterdns implements (see the template README)"
    ))
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    fn peek_op(&self) -> Option<&'static str> {
        match self.peek() {
            Some(Tok::Op(o)) => Some(o),
            _ => None,
        }
    }

    fn eat(&mut self, op: &str) -> bool {
        if self.peek_op() == Some(op) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, op: &str) -> Result<(), CompileError> {
        if self.eat(op) {
            return Ok(());
        }
        Err(match self.peek() {
            Some(t) => CompileError(format!("expected '{op}', found {}", show(t))),
            None => CompileError(format!("expected '{op}' at the end of the expression")),
        })
    }

    fn enter(&mut self) -> Result<(), CompileError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(CompileError(format!(
                "expression nested deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, CompileError> {
        self.enter()?;
        let cond = self.binary(0)?;
        let e = if self.eat("?") {
            let a = self.expr()?;
            self.expect(":")?;
            let b = self.expr()?;
            Expr::Cond(Box::new(cond), Box::new(a), Box::new(b))
        } else {
            cond
        };
        self.depth -= 1;
        Ok(e)
    }

    /// The binary operator ahead, its precedence and width in tokens.
    fn binop(&self) -> Result<Option<(&'static str, u8, usize)>, CompileError> {
        let Some(op) = self.peek_op() else {
            return Ok(None);
        };
        let prec = match op {
            "||" | "or" => 10,
            "&&" | "and" => 15,
            "==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "matches" | "contains" | "startsWith" | "endsWith" => 20,
            "not" => match self.toks.get(self.at + 1) {
                Some(Tok::Op("in")) => return Ok(Some(("not in", 20, 2))),
                _ => return Ok(None),
            },
            "+" | "-" => 30,
            "*" | "/" | "%" => 60,
            "??" | ".." | "**" | "|" => return Err(unsupported(&format!("the operator '{op}'"))),
            _ => return Ok(None),
        };
        Ok(Some((op, prec, 1)))
    }

    fn binary(&mut self, min: u8) -> Result<Expr, CompileError> {
        self.enter()?;
        let mut left = self.unary()?;
        // Each operator of a chain (`1+1+1...`) puts the tree so far one level deeper,
        // and evaluation recurses that deep: counted like nesting, so that a 4 KiB
        // expression cannot be thousands of levels deep on a worker's stack.
        let mut chained = 0;
        while let Some((op, prec, width)) = self.binop()? {
            if prec < min {
                break;
            }
            self.enter()?;
            chained += 1;
            self.at += width;
            let right = self.binary(prec + 1)?;
            let (l, r) = (Box::new(left), Box::new(right));
            left = match op {
                "||" | "or" => Expr::Or(l, r),
                "&&" | "and" => Expr::And(l, r),
                "matches" => match *r {
                    Expr::LitStr(ref pat) => {
                        let re = regex::RegexBuilder::new(pat)
                            .size_limit(1 << 20)
                            .build()
                            .map_err(|e| CompileError(format!("could not parse regex: {pat}, {e}")))?;
                        Expr::Matches(l, Box::new(re))
                    }
                    _ => return Err(unsupported("'matches' with a pattern that is not a string literal")),
                },
                _ => {
                    let b = match op {
                        "==" => BinOp::Eq,
                        "!=" => BinOp::Ne,
                        "<" => BinOp::Lt,
                        "<=" => BinOp::Le,
                        ">" => BinOp::Gt,
                        ">=" => BinOp::Ge,
                        "in" => BinOp::In,
                        "not in" => BinOp::NotIn,
                        "contains" => BinOp::Contains,
                        "startsWith" => BinOp::StartsWith,
                        "endsWith" => BinOp::EndsWith,
                        "+" => BinOp::Add,
                        "-" => BinOp::Sub,
                        "*" => BinOp::Mul,
                        "/" => BinOp::Div,
                        _ => BinOp::Mod,
                    };
                    Expr::Binary(b, l, r)
                }
            };
        }
        self.depth -= 1 + chained;
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, CompileError> {
        self.enter()?;
        let e = if self.eat("!") || self.eat("not") {
            Expr::Not(Box::new(self.binary(50)?))
        } else if self.eat("-") {
            Expr::Neg(Box::new(self.binary(90)?))
        } else if self.eat("+") {
            self.binary(90)?
        } else {
            self.postfix()?
        };
        self.depth -= 1;
        Ok(e)
    }

    fn postfix(&mut self) -> Result<Expr, CompileError> {
        let e = self.primary()?;
        match self.peek_op() {
            Some("." | "?.") => Err(unsupported("member access ('.')")),
            Some("[") => Err(unsupported("indexing ('[...]')")),
            _ => Ok(e),
        }
    }

    fn primary(&mut self) -> Result<Expr, CompileError> {
        let Some(tok) = self.peek().cloned() else {
            return Err(CompileError("unexpected end of the expression".into()));
        };
        self.at += 1;
        match tok {
            Tok::Int(v) => Ok(Expr::Lit(Value::Int(v))),
            Tok::Float(v) => Ok(Expr::Lit(Value::Float(v))),
            Tok::Str(s) => Ok(Expr::LitStr(s)),
            Tok::Hash => {
                if self.closures == 0 {
                    return Err(CompileError("'#' outside a predicate of any/all/none/one".into()));
                }
                Ok(Expr::Elem)
            }
            Tok::Op("(") => {
                let e = self.expr()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Op("[") => {
                let mut items = Vec::new();
                if !self.eat("]") {
                    loop {
                        items.push(self.expr()?);
                        if items.len() > MAX_ARRAY {
                            return Err(CompileError(format!("array literal longer than {MAX_ARRAY} items")));
                        }
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                Ok(Expr::Array(items))
            }
            Tok::Op("{") => Err(unsupported("a map literal ('{...}')")),
            Tok::Op(o) => Err(CompileError(format!("unexpected '{o}'"))),
            Tok::Ident(name) => self.ident(&name),
        }
    }

    fn ident(&mut self, name: &str) -> Result<Expr, CompileError> {
        if self.peek_op() == Some("(") {
            self.at += 1;
            return self.call(name);
        }
        match name {
            "true" => return Ok(Expr::Lit(Value::Bool(true))),
            "false" => return Ok(Expr::Lit(Value::Bool(false))),
            "nil" => return Ok(Expr::Lit(Value::Nil)),
            "let" | "if" => return Err(unsupported(&format!("'{name}'"))),
            _ => {}
        }
        // The latest declaration of a name wins.
        match self.scope.vars.iter().rposition(|v| v == name) {
            Some(i) => Ok(Expr::Var(i)),
            None if is_function(name) || (self.scope.group && name == "group") => {
                Err(CompileError(format!("'{name}' is a function: call it as {name}(...)")))
            }
            None => Err(CompileError(format!("unknown name '{name}'"))),
        }
    }

    fn args(&mut self) -> Result<Vec<Expr>, CompileError> {
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat(")") {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    fn call(&mut self, name: &str) -> Result<Expr, CompileError> {
        if let Some(&(_, q)) = QUANTIFIERS.iter().find(|q| q.0 == name) {
            let array = self.expr()?;
            self.expect(",")?;
            self.closures += 1;
            let braced = self.eat("{");
            let pred = self.expr()?;
            if braced {
                self.expect("}")?;
            }
            self.closures -= 1;
            self.expect(")")?;
            return Ok(Expr::Closure(q, Box::new(array), Box::new(pred)));
        }
        let (func, min, max) = if name == "group" && self.scope.group {
            self.group = true;
            (Func::Group, 1, 1)
        } else {
            match FUNCTIONS.iter().find(|f| f.0 == name) {
                Some(&(_, f, min, max)) => (f, min, max),
                None => return Err(unsupported(&format!("the function '{name}'"))),
            }
        };
        let args = self.args()?;
        if args.len() < min || args.len() > max {
            let want = if min == max {
                format!("{min}")
            } else {
                format!("{min} to {max}")
            };
            return Err(CompileError(format!(
                "{name}() takes {want} argument(s), got {}",
                args.len()
            )));
        }
        Ok(Expr::Call(func, args))
    }
}

/// A type known at setup (`Any`: only the query will tell: variables, `nil`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Any,
    Bool,
    Int,
    Float,
    Str,
    Array,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Any => "interface {}",
            Ty::Bool => "bool",
            Ty::Int => "int",
            Ty::Float => "float64",
            Ty::Str => "string",
            Ty::Array => "[]interface {}",
        }
    }

    fn number(self) -> bool {
        matches!(self, Ty::Int | Ty::Float | Ty::Any)
    }

    /// Whether a value of this type may be what `want` asks for.
    fn fits(self, want: Ty) -> bool {
        self == Ty::Any || want == Ty::Any || self == want
    }
}

/// The type errors knowable before any query, as expr-lang's checker reports them
/// (`invalid operation: < (mismatched types int and string)`); the expression's type.
pub fn check(e: &Expr) -> Result<Ty, CompileError> {
    let fail = |msg: String| Err(CompileError(msg));
    Ok(match e {
        Expr::Lit(Value::Bool(_)) => Ty::Bool,
        Expr::Lit(Value::Int(_)) => Ty::Int,
        Expr::Lit(Value::Float(_)) => Ty::Float,
        Expr::Lit(_) | Expr::Var(_) | Expr::Elem => Ty::Any,
        Expr::LitStr(_) => Ty::Str,
        Expr::Array(items) => {
            for i in items {
                check(i)?;
            }
            Ty::Array
        }
        Expr::Not(x) => {
            let t = check(x)?;
            if !t.fits(Ty::Bool) {
                return fail(format!("invalid operation: ! ({})", t.name()));
            }
            Ty::Bool
        }
        Expr::Neg(x) => {
            let t = check(x)?;
            if !t.number() {
                return fail(format!("invalid operation: - ({})", t.name()));
            }
            t
        }
        Expr::And(a, b) | Expr::Or(a, b) => {
            let op = if matches!(e, Expr::And(..)) { "&&" } else { "||" };
            let (x, y) = (check(a)?, check(b)?);
            if !x.fits(Ty::Bool) || !y.fits(Ty::Bool) {
                return fail(format!(
                    "invalid operation: {op} (mismatched types {} and {})",
                    x.name(),
                    y.name()
                ));
            }
            Ty::Bool
        }
        Expr::Cond(c, a, b) => {
            let t = check(c)?;
            if !t.fits(Ty::Bool) {
                return fail(format!("non-bool expression (type {}) used as condition", t.name()));
            }
            let (x, y) = (check(a)?, check(b)?);
            if x == y { x } else { Ty::Any }
        }
        Expr::Matches(x, _) => {
            let t = check(x)?;
            if !t.fits(Ty::Str) {
                return fail(format!(
                    "invalid operation: matches (mismatched types {} and string)",
                    t.name()
                ));
            }
            Ty::Bool
        }
        Expr::Binary(op, a, b) => {
            let (x, y) = (check(a)?, check(b)?);
            let both = |t: Ty| x.fits(t) && y.fits(t);
            let mismatched = || {
                fail(format!(
                    "invalid operation: {} (mismatched types {} and {})",
                    op.symbol(),
                    x.name(),
                    y.name()
                ))
            };
            match op {
                // expr-lang compares any two values of one kind (numbers of either).
                BinOp::Eq | BinOp::Ne => {
                    if !(x.fits(y) || (x.number() && y.number())) {
                        return mismatched();
                    }
                    Ty::Bool
                }
                BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                    if !((x.number() && y.number()) || both(Ty::Str)) {
                        return mismatched();
                    }
                    Ty::Bool
                }
                BinOp::In | BinOp::NotIn => {
                    if !y.fits(Ty::Array) {
                        return mismatched();
                    }
                    Ty::Bool
                }
                BinOp::Contains | BinOp::StartsWith | BinOp::EndsWith => {
                    if !both(Ty::Str) {
                        return mismatched();
                    }
                    Ty::Bool
                }
                BinOp::Add => match (x, y) {
                    (Ty::Int, Ty::Int) => Ty::Int,
                    (Ty::Str, Ty::Str) => Ty::Str,
                    _ if x.number() && y.number() && x != Ty::Any && y != Ty::Any => Ty::Float,
                    _ if x == Ty::Any || y == Ty::Any => {
                        if (x == Ty::Str && y.number() && y != Ty::Any) || (y == Ty::Str && x.number() && x != Ty::Any)
                        {
                            return mismatched();
                        }
                        Ty::Any
                    }
                    _ => return mismatched(),
                },
                BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => {
                    if !(x.number() && y.number()) || (*op == BinOp::Mod && (x == Ty::Float || y == Ty::Float)) {
                        return mismatched();
                    }
                    match (op, x, y) {
                        (BinOp::Div, ..) => Ty::Float,
                        (_, Ty::Int, Ty::Int) => Ty::Int,
                        (_, Ty::Any, _) | (_, _, Ty::Any) => Ty::Any,
                        _ => Ty::Float,
                    }
                }
            }
        }
        Expr::Call(func, args) => {
            let mut tys = [Ty::Any; 3];
            for (t, a) in tys.iter_mut().zip(args) {
                *t = check(a)?;
            }
            let (want, ret): (&[Ty], Ty) = match func {
                Func::Len => (&[Ty::Any], Ty::Int),
                Func::Upper | Func::Lower => (&[Ty::Str], Ty::Str),
                Func::Trim => (&[Ty::Str, Ty::Str], Ty::Str),
                Func::TrimPrefix | Func::TrimSuffix => (&[Ty::Str, Ty::Str], Ty::Str),
                Func::Replace => (&[Ty::Str, Ty::Str, Ty::Str], Ty::Str),
                Func::Split => (&[Ty::Str, Ty::Str], Ty::Array),
                Func::HasPrefix | Func::HasSuffix => (&[Ty::Str, Ty::Str], Ty::Bool),
                Func::IndexOf => (&[Ty::Str, Ty::Str], Ty::Int),
                Func::Int => (&[Ty::Any], Ty::Int),
                Func::Float => (&[Ty::Any], Ty::Float),
                Func::String => (&[Ty::Any], Ty::Str),
                Func::Abs => (&[Ty::Any], Ty::Any),
                Func::Type
                | Func::Name
                | Func::Class
                | Func::Proto
                | Func::ClientIp
                | Func::Port
                | Func::ServerIp
                | Func::ServerPort => (&[], Ty::Str),
                Func::Size | Func::Id | Func::Opcode | Func::Bufsize => (&[], Ty::Int),
                Func::Do => (&[], Ty::Bool),
                Func::Incidr => (&[Ty::Str, Ty::Str], Ty::Bool),
                Func::Metadata => (&[Ty::Str], Ty::Str),
                Func::Group => (&[Ty::Any], Ty::Str),
            };
            for (i, (got, want)) in tys.iter().zip(want).enumerate().take(args.len()) {
                if !got.fits(*want) {
                    return fail(format!(
                        "cannot use {} as argument (type {}) to call {}, argument {}",
                        got.name(),
                        want.name(),
                        func.name(),
                        i + 1
                    ));
                }
            }
            if *func == Func::Abs && !tys[0].number() {
                return fail(format!("invalid argument for abs (type {})", tys[0].name()));
            }
            if *func == Func::Len && matches!(tys[0], Ty::Int | Ty::Float | Ty::Bool) {
                return fail(format!("invalid argument for len (type {})", tys[0].name()));
            }
            ret
        }
        Expr::InCidr(x, _) => {
            check(x)?;
            Ty::Bool
        }
        Expr::Closure(_, array, pred) => {
            let a = check(array)?;
            if !a.fits(Ty::Array) {
                return fail(format!("builtin any/all/none/one takes only array (got {})", a.name()));
            }
            let p = check(pred)?;
            if !p.fits(Ty::Bool) {
                return fail(format!("predicate should return boolean (got {})", p.name()));
            }
            Ty::Bool
        }
    })
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
            BinOp::NotIn => "not in",
            BinOp::Contains => "contains",
            BinOp::StartsWith => "startsWith",
            BinOp::EndsWith => "endsWith",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
        }
    }
}

impl Func {
    fn name(self) -> &'static str {
        if self == Func::Group {
            return "group";
        }
        FUNCTIONS.iter().find(|f| f.1 == self).map_or("?", |f| f.0)
    }
}
