//! Tokens of the expression language (expr-lang's lexical rules, for the subset).

use super::CompileError;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Int(i64),
    Float(f64),
    Str(String),
    Ident(String),
    /// `#`: the element inside a closure of `any`/`all`/`none`/`one`.
    Hash,
    /// Operators and punctuation, as written (`&&`, `(`, `not`, `in`...).
    Op(&'static str),
}

/// Words that are operators or literals, never names.
const WORD_OPS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "matches",
    "contains",
    "startsWith",
    "endsWith",
];

/// Whether `name` is a keyword or literal of the language.
pub fn is_keyword(name: &str) -> bool {
    WORD_OPS.contains(&name) || matches!(name, "true" | "false" | "nil" | "let" | "if" | "else")
}

const SYMBOLS: &[&str] = &[
    "==", "!=", "<=", ">=", "&&", "||", "??", "..", "**", "?.", "<", ">", "+", "-", "*", "/", "%", "!", "(", ")", "[",
    "]", ",", "?", ":", ".", "{", "}", "|", ";",
];

pub fn lex(text: &str) -> Result<Vec<Tok>, CompileError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
                i += 1;
            }
            let mut float = false;
            if i + 1 < b.len() && b[i] == b'.' && b[i + 1].is_ascii_digit() {
                float = true;
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let lit: String = text[start..i].chars().filter(|&c| c != '_').collect();
            if float {
                let v = lit.parse().map_err(|_| CompileError(format!("invalid number {lit}")))?;
                out.push(Tok::Float(v));
            } else {
                let v = lit
                    .parse()
                    .map_err(|_| CompileError(format!("invalid integer {lit}")))?;
                out.push(Tok::Int(v));
            }
            continue;
        }
        if c == b'\'' || c == b'"' {
            let (s, next) = string(text, i)?;
            out.push(Tok::Str(s));
            i = next;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b'$' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$') {
                i += 1;
            }
            let word = &text[start..i];
            match WORD_OPS.iter().find(|w| **w == word) {
                Some(w) => out.push(Tok::Op(w)),
                None => out.push(Tok::Ident(word.to_string())),
            }
            continue;
        }
        if c == b'#' {
            out.push(Tok::Hash);
            i += 1;
            continue;
        }
        match SYMBOLS.iter().find(|s| text[i..].starts_with(**s)) {
            Some(s) => {
                out.push(Tok::Op(s));
                i += s.len();
            }
            None => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(CompileError(format!("unexpected character '{ch}' at {i}")));
            }
        }
    }
    Ok(out)
}

/// A quoted string starting at `at`: expr-lang's escapes (`\n \t \\ \' \"`, `\xHH`,
/// `\uHHHH`). Returns the value and the offset after the closing quote.
fn string(text: &str, at: usize) -> Result<(String, usize), CompileError> {
    let quote = text.as_bytes()[at] as char;
    let mut s = String::new();
    let mut chars = text[at + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        match c {
            c if c == quote => return Ok((s, at + 1 + off + 1)),
            '\\' => {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    '0' => s.push('\0'),
                    '\\' | '\'' | '"' | '`' => s.push(e),
                    'x' | 'u' => {
                        let n = if e == 'x' { 2 } else { 4 };
                        let mut v = 0u32;
                        for _ in 0..n {
                            let d = chars
                                .next()
                                .and_then(|(_, c)| c.to_digit(16))
                                .ok_or_else(|| CompileError("invalid escape in string".into()))?;
                            v = v * 16 + d;
                        }
                        s.push(char::from_u32(v).ok_or_else(|| CompileError("invalid escape in string".into()))?);
                    }
                    other => return Err(CompileError(format!("invalid escape '\\{other}' in string"))),
                }
            }
            c => s.push(c),
        }
    }
    Err(CompileError("unterminated string".into()))
}
