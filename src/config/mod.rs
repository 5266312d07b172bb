//! The Corefile: lexing, parsing (server blocks, nested blocks, environment
//! substitution, `import` of files, globs and snippets) and server-block keys.
//!
//! This module knows syntax, not plugins: it turns text into [`ServerBlock`]s of
//! [`Directive`]s, each token carrying the file and line it came from, so that every
//! later error (a plugin's unknown option, say) can name them. Plugins read their own
//! options from a [`Directive`] with the helpers below.

use std::fmt;
use std::sync::Arc;

pub mod digest;
pub mod keys;
mod lexer;
mod parser;
pub mod read;

pub use keys::{Scheme, ServerKey, TLS_PORT, reverse_zones_for_cidr, zone_args};
pub use parser::{parse_file, parse_str};

/// Where a token came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Loc {
    pub file: Arc<str>,
    pub line: u32,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One word of the Corefile, after quote removal and environment substitution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    pub loc: Loc,
}

impl Token {
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A Corefile error, printed `FILE:LINE - message` for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub loc: Option<Loc>,
    pub msg: String,
}

impl ConfigError {
    /// An error at a token's location.
    pub fn at(loc: &Loc, msg: impl Into<String>) -> ConfigError {
        ConfigError {
            loc: Some(loc.clone()),
            msg: msg.into(),
        }
    }

    /// An error with no place in a file (a file that cannot be read, say).
    pub fn global(msg: impl Into<String>) -> ConfigError {
        ConfigError {
            loc: None,
            msg: msg.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.loc {
            Some(loc) => write!(f, "{loc} - {}", self.msg),
            None => f.write_str(&self.msg),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A parsed Corefile: its server blocks in file order (snippets already expanded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corefile {
    pub blocks: Vec<ServerBlock>,
}

/// `KEY [KEY...] { directives }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerBlock {
    pub keys: Vec<Token>,
    pub directives: Vec<Directive>,
}

/// A line inside a block: a name, its arguments, and optionally a nested `{ }` block
/// whose lines are directives too (the plugin's options).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Directive {
    pub name: Token,
    pub args: Vec<Token>,
    /// `Some` when the line opened a `{ ... }` block (possibly empty).
    pub block: Option<Vec<Directive>>,
}

impl Directive {
    pub fn loc(&self) -> &Loc {
        &self.name.loc
    }

    /// The arguments as strings.
    pub fn arg_strs(&self) -> Vec<&str> {
        self.args.iter().map(|t| t.text.as_str()).collect()
    }

    /// The nested block's lines (empty without a block).
    pub fn options(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }

    /// An error at this directive's line, prefixed with `prefix: ` (the plugin name).
    pub fn err(&self, prefix: &str, msg: impl fmt::Display) -> ConfigError {
        ConfigError::at(self.loc(), format!("{prefix}: {msg}"))
    }

    /// The CoreDNS message for a wrong number of arguments.
    pub fn arg_err(&self, prefix: &str) -> ConfigError {
        let last = self.args.last().unwrap_or(&self.name);
        ConfigError::at(
            &last.loc,
            format!(
                "{prefix}: Wrong argument count or unexpected line ending after '{}'",
                last.text
            ),
        )
    }

    /// Fails unless the argument count is within `min..=max`.
    pub fn expect_args(&self, prefix: &str, min: usize, max: usize) -> Result<(), ConfigError> {
        if self.args.len() < min || self.args.len() > max {
            return Err(self.arg_err(prefix));
        }
        Ok(())
    }

    /// Fails if the directive has a `{ }` block with anything in it.
    pub fn expect_no_block(&self, prefix: &str) -> Result<(), ConfigError> {
        match self.options().first() {
            Some(d) => Err(ConfigError::at(
                d.loc(),
                format!("{prefix}: unknown property '{}'", d.name.text),
            )),
            None => Ok(()),
        }
    }

    /// A canonical one-line rendering (for hashing and debugging): tokens quoted,
    /// nested blocks in braces.
    pub fn canonical(&self, out: &mut String) {
        quote_into(&self.name.text, out);
        for a in &self.args {
            out.push(' ');
            quote_into(&a.text, out);
        }
        if let Some(block) = &self.block {
            out.push_str(" {");
            for d in block {
                out.push(' ');
                d.canonical(out);
                out.push(';');
            }
            out.push_str(" }");
        }
    }
}

impl Corefile {
    /// A rendering of the parsed blocks in which comments, whitespace, quoting style
    /// and the split into imported files do not show: what `reload` hashes.
    pub fn canonical(&self) -> String {
        let mut out = String::new();
        for b in &self.blocks {
            for (i, k) in b.keys.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                quote_into(&k.text, &mut out);
            }
            out.push_str(" {\n");
            for d in &b.directives {
                out.push_str("  ");
                d.canonical(&mut out);
                out.push('\n');
            }
            out.push_str("}\n");
        }
        out
    }
}

fn quote_into(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Parses a Go-style duration (`5s`, `1m30s`, `250ms`, `1h`), as CoreDNS's options take.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    if s == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += n * scale;
    }
    (total.is_finite() && (0.0..1e12).contains(&total)).then(|| std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
    }
}
