//! The expression language of CoreDNS's `view` plugin, which `template`'s `var` and
//! `expr` take too: the subset of expr-lang (expr-lang.org) that CoreDNS's docs list,
//! compiled once at setup into a tree and evaluated per query.
//!
//! ```text
//!   text ──lex──▶ tokens ──parse (precedence climbing, depth ≤ 64)──▶ Expr tree
//!                                │ every name resolved here: a function of the subset,
//!                                │ a variable declared before, or an error naming it
//!                                ▼
//!   Expr::eval(&Facts, &mut Heap) ──▶ Value   (per query, no allocation once the
//!                                              worker's heap is warm; errors are the query's)
//! ```
//!
//! What is in the subset (anything else is a setup error that names it):
//! * literals: integers, floats, `'strings'` and `"strings"`, `true`, `false`, `nil`,
//!   arrays `[a, b]`;
//! * operators: `== != < <= > >=`, `&&`/`and`, `||`/`or`, `!`/`not`, `in`, `not in`,
//!   `matches` (a literal pattern, compiled at setup), `contains`, `startsWith`,
//!   `endsWith`, `+ - * / %` (and `+` on strings), `? :`, parentheses;
//! * expr-lang built-ins: `len upper lower trim trimPrefix trimSuffix replace split
//!   hasPrefix hasSuffix indexOf int float string abs any all none one`, the closures of
//!   `any`/`all`/`none`/`one` using `#`;
//! * CoreDNS's query functions (`plugin/pkg/expression`): `type() name() class()
//!   proto() size() client_ip() port() id() opcode() do() bufsize() server_ip()
//!   server_port()`, and `incidr(ip, cidr)`, `metadata(label)`;
//! * `group(name|index)` where the caller allows it (`template`).
//!
//! Bounds: an expression is at most [`MAX_LEN`] bytes and [`MAX_DEPTH`] levels deep;
//! an array literal has at most [`MAX_ARRAY`] items. Evaluation is linear in the tree
//! except for `any`/`all`/`none`/`one`, which run their predicate per item (nested, they
//! multiply): a query's evaluations visit at most [`MAX_STEPS`] nodes. A string a query
//! makes is at most [`MAX_STRING`] bytes.

mod eval;
mod lex;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;

pub use eval::{Cidr, Facts, GroupKey, Heap, Span, Value, View, in_cidr, parse_ip, parse_ipv4, write_name};

/// Longest expression text accepted.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting of operators, calls and brackets.
pub const MAX_DEPTH: usize = 64;
/// Most items in one array literal.
pub const MAX_ARRAY: usize = 256;
/// Longest string one evaluation may build (concatenation, `replace`).
pub const MAX_STRING: usize = 65_535;
/// Most bytes of strings (and most array items) one query's evaluations may keep.
pub const MAX_HEAP: usize = 1 << 20;
/// Expression nodes the evaluations of one template for one query may visit: a
/// quantifier inside a quantifier over 256-item arrays would otherwise visit 256^depth
/// nodes (an error past it: the template answers SERVFAIL, as for any evaluation error).
pub const MAX_STEPS: u32 = 100_000;

/// A compiled expression.
#[derive(Debug)]
pub struct Program {
    root: parse::Expr,
    text: String,
    uses_group: bool,
}

/// What a program may name besides the built-in functions.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Variables declared before, in order: `Facts::vars[i]` holds the value of `vars[i]`.
    pub vars: Vec<String>,
    /// Whether `group(...)` is available (template's `var`/`expr`).
    pub group: bool,
}

impl Scope {
    /// Whether `name` is a function, keyword or literal of the language: a `var` may not
    /// take such a name (CoreDNS's template setup refuses them, as `reserved`).
    pub fn is_reserved(&self, name: &str) -> bool {
        parse::is_function(name) || lex::is_keyword(name) || (self.group && name == "group")
    }
}

/// Why an expression does not compile; the text says where and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError(pub String);

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an evaluation failed (a query's error: the caller decides what it costs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalError(pub String);

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Program {
    /// Compiles `text` against `scope`.
    pub fn compile(text: &str, scope: &Scope) -> Result<Program, CompileError> {
        if text.len() > MAX_LEN {
            return Err(CompileError(format!(
                "expression too long: {} > {MAX_LEN} bytes",
                text.len()
            )));
        }
        let tokens = lex::lex(text)?;
        let (root, uses_group) = parse::parse(&tokens, scope)?;
        Ok(Program {
            root,
            text: text.to_string(),
            uses_group,
        })
    }

    /// Evaluates the program for one query; strings and arrays it makes go to `heap`
    /// (which the caller clears once per query, before the first evaluation).
    pub fn eval(&self, facts: &Facts<'_, '_>, heap: &mut Heap) -> Result<Value, EvalError> {
        eval::eval(&self.root, facts, heap, None)
    }

    /// Whether the program calls `group(...)` (the caller must then capture).
    pub fn uses_group(&self) -> bool {
        self.uses_group
    }

    /// The source text.
    pub fn text(&self) -> &str {
        &self.text
    }
}
