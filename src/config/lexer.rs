//! Corefile lexing, caddyfile style: whitespace-separated words, `"..."` quoting,
//! `#` comments, a leading BOM ignored, and `{$NAME}` / `{%NAME%}` environment
//! substitution in every word.
//!
//! Braces are words too: `{` and `}` mean something only when they stand alone and
//! unquoted (`foo{` is an ordinary word), exactly as in caddy, which compares whole
//! token texts.

use std::borrow::Cow;
use std::sync::Arc;

use super::{ConfigError, Loc, Token};

/// What a word is, as far as the parser cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// An unquoted word.
    Word,
    /// A `"..."` word: never a brace nor the `import` keyword.
    Quoted,
    /// A bare `{`.
    Open,
    /// A bare `}`.
    Close,
}

/// A token with what the parser needs beyond its text and place.
#[derive(Clone, Debug)]
pub(super) struct LexToken {
    pub token: Token,
    pub kind: Kind,
    /// The first token on its line. Kept as a flag rather than recomputed from line
    /// numbers so that tokens spliced in by `import` never join the line around them.
    pub line_start: bool,
}

impl LexToken {
    /// A bare `import` word (a quoted `"import"` is an ordinary argument).
    pub fn is_import(&self) -> bool {
        self.kind == Kind::Word && self.token.text == "import"
    }
}

/// Splits `text` into tokens located in `file`.
pub(super) fn lex(text: &str, file: &Arc<str>) -> Result<Vec<LexToken>, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut chars = text.chars().peekable();
    let mut tokens = Vec::new();
    let mut line: u32 = 1;
    // The line on which the previous token ended (0 before the first token).
    let mut prev_end_line: u32 = 0;

    while let Some(c) = chars.next() {
        let start_line = line;
        let (text, kind) = match c {
            '\n' => {
                line += 1;
                continue;
            }
            c if c.is_whitespace() => continue,
            '#' => {
                while chars.next_if(|&c| c != '\n').is_some() {}
                continue;
            }
            '"' => (read_quoted(&mut chars, &mut line, file, start_line)?, Kind::Quoted),
            c => {
                let mut word = String::from(c);
                // A word ends at whitespace or at a comment, even mid-word (`foo#bar` is `foo`);
                // a `"` inside a word is literal, as in caddy.
                while let Some(c) = chars.next_if(|&c| !c.is_whitespace() && c != '#') {
                    word.push(c);
                }
                let kind = match word.as_str() {
                    "{" => Kind::Open,
                    "}" => Kind::Close,
                    _ => Kind::Word,
                };
                (word, kind)
            }
        };
        let text = match substitute_env(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(replaced) => replaced,
        };
        tokens.push(LexToken {
            token: Token {
                text,
                loc: Loc {
                    file: file.clone(),
                    line: start_line,
                },
            },
            kind,
            line_start: start_line != prev_end_line,
        });
        prev_end_line = line;
    }
    Ok(tokens)
}

/// Reads a quoted word after its opening `"`. Only `\"` is an escape; any other
/// backslash is kept with the character after it (so `\\` stays two backslashes).
fn read_quoted(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    line: &mut u32,
    file: &Arc<str>,
    start_line: u32,
) -> Result<String, ConfigError> {
    let mut text = String::new();
    loop {
        let c = match chars.next() {
            Some('"') => return Ok(text),
            Some('\\') => match chars.next() {
                Some('"') => '"',
                Some(c) => {
                    text.push('\\');
                    c
                }
                None => break,
            },
            Some(c) => c,
            None => break,
        };
        if c == '\n' {
            *line += 1;
        }
        text.push(c);
    }
    // Caddy silently ends the token at EOF; an operator is better served by the
    // place where the quote began.
    let loc = Loc {
        file: file.clone(),
        line: start_line,
    };
    Err(ConfigError::at(
        &loc,
        "Error during parsing: unterminated quoted string",
    ))
}

/// Replaces `{$NAME}` and `{%NAME%}` with the environment variable's value (empty when
/// unset), in one left-to-right pass: a value is never itself substituted again.
/// An empty reference (`{$}`) or one without its end stays as written.
fn substitute_env(s: &str) -> Cow<'_, str> {
    if !s.contains("{$") && !s.contains("{%") {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('{') {
        let after = &rest[at + 1..];
        let end_marker = match after.as_bytes().first() {
            Some(b'$') => "}",
            Some(b'%') => "%}",
            _ => {
                out.push_str(&rest[..=at]);
                rest = after;
                continue;
            }
        };
        let body = &after[1..];
        match body.find(end_marker) {
            Some(len) if len > 0 => {
                out.push_str(&rest[..at]);
                out.push_str(&env_value(&body[..len]));
                rest = &body[len + end_marker.len()..];
            }
            _ => {
                out.push_str(&rest[..at + 2]);
                rest = body;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn env_value(name: &str) -> String {
    // Names the platform cannot hold are simply unset.
    if name.contains(['=', '\0']) {
        return String::new();
    }
    std::env::var_os(name)
        .map(|v| v.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lex_ok(text: &str) -> Vec<LexToken> {
        lex(text, &Arc::from("Corefile")).expect("lexes")
    }

    /// (text, line, kind, line_start) of each token.
    fn summary(text: &str) -> Vec<(String, u32, Kind, bool)> {
        lex_ok(text)
            .into_iter()
            .map(|t| (t.token.text, t.token.loc.line, t.kind, t.line_start))
            .collect()
    }

    fn texts(text: &str) -> Vec<String> {
        lex_ok(text).into_iter().map(|t| t.token.text).collect()
    }

    #[test]
    fn words_lines_and_line_starts() {
        use Kind::*;
        assert_eq!(
            summary(".:53 {\n\twhoami\r\n  forward . 1.1.1.1\n}\n"),
            vec![
                (".:53".into(), 1, Word, true),
                ("{".into(), 1, Open, false),
                ("whoami".into(), 2, Word, true),
                ("forward".into(), 3, Word, true),
                (".".into(), 3, Word, false),
                ("1.1.1.1".into(), 3, Word, false),
                ("}".into(), 4, Close, true),
            ]
        );
    }

    #[test]
    fn empty_and_blank_inputs() {
        for text in ["", "\n", " ", "\t\n", "# only a comment\n   # another", "\u{feff}"] {
            assert!(lex_ok(text).is_empty(), "{text:?}");
        }
    }

    #[test]
    fn braces_only_when_alone() {
        use Kind::*;
        let kinds: Vec<Kind> = lex_ok("foo{ {bar } {} { }").into_iter().map(|t| t.kind).collect();
        assert_eq!(kinds, vec![Word, Word, Close, Word, Open, Close]);
        assert_eq!(texts("foo{ {bar }"), vec!["foo{", "{bar", "}"]);
    }

    #[test]
    fn quoted_words() {
        use Kind::*;
        assert_eq!(
            summary(r#"answer "a b  c" "" "say \"hi\"" "C:\dir\\x""#),
            vec![
                ("answer".into(), 1, Word, true),
                ("a b  c".into(), 1, Quoted, false),
                ("".into(), 1, Quoted, false),
                ("say \"hi\"".into(), 1, Quoted, false),
                (r"C:\dir\\x".into(), 1, Quoted, false),
            ]
        );
        // A quoted brace is not a brace.
        assert_eq!(summary(r#""{""#), vec![("{".into(), 1, Quoted, true)]);
        // A quote only opens at the start of a word; a closing quote ends the word.
        assert_eq!(texts(r#"a"b c" "x"y"#), vec![r#"a"b"#, r#"c""#, "x", "y"]);
    }

    #[test]
    fn quotes_spanning_lines_keep_their_start_line() {
        use Kind::*;
        assert_eq!(
            summary("a \"one\ntwo\" b\nc"),
            vec![
                ("a".into(), 1, Word, true),
                ("one\ntwo".into(), 1, Quoted, false),
                // `b` is on the line where the quote ended: same line, not a line start.
                ("b".into(), 2, Word, false),
                ("c".into(), 3, Word, true),
            ]
        );
    }

    #[test]
    fn unterminated_quote_is_an_error_at_its_start() {
        let err = lex("a\nb \"open\n\nmore", &Arc::from("Corefile")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Corefile:2 - Error during parsing: unterminated quoted string"
        );
        let err = lex("a \"trailing\\", &Arc::from("Corefile")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Corefile:1 - Error during parsing: unterminated quoted string"
        );
    }

    #[test]
    fn comments() {
        assert_eq!(
            texts("# whole line\na b # end of line\nfoo#bar baz\n\"#not\" x#"),
            vec!["a", "b", "foo", "#not", "x"]
        );
        let lines: Vec<u32> = lex_ok("# c\n\na # c\nb").iter().map(|t| t.token.loc.line).collect();
        assert_eq!(lines, vec![3, 4]);
    }

    #[test]
    fn leading_bom_is_ignored() {
        assert_eq!(summary("\u{feff}a\nb")[0], ("a".into(), 1, Kind::Word, true));
        // Only a leading one.
        assert_eq!(texts("a \u{feff}b"), vec!["a", "\u{feff}b"]);
    }

    #[test]
    fn environment_substitution() {
        // SAFETY: these variable names are used by this test only.
        unsafe {
            std::env::set_var("CLUSTERDNS_LEXER_TEST_ZONE", "cluster.local");
            std::env::set_var("CLUSTERDNS_LEXER_TEST_PORT", "1053");
            std::env::set_var("CLUSTERDNS_LEXER_TEST_NESTED", "{$CLUSTERDNS_LEXER_TEST_ZONE} x");
            std::env::remove_var("CLUSTERDNS_LEXER_TEST_UNSET");
        }
        assert_eq!(
            texts("{$CLUSTERDNS_LEXER_TEST_ZONE}:{%CLUSTERDNS_LEXER_TEST_PORT%} {"),
            vec!["cluster.local:1053", "{"]
        );
        assert_eq!(
            texts(r#"k8s{$CLUSTERDNS_LEXER_TEST_UNSET}! "in {$CLUSTERDNS_LEXER_TEST_ZONE} quotes""#),
            vec!["k8s!", "in cluster.local quotes"]
        );
        // Values are not re-tokenized nor substituted again.
        assert_eq!(
            texts("{$CLUSTERDNS_LEXER_TEST_NESTED}"),
            vec!["{$CLUSTERDNS_LEXER_TEST_ZONE} x"]
        );
        // Malformed references stay as written.
        assert_eq!(texts("{$} {%A} {$A {%%}"), vec!["{$}", "{%A}", "{$A", "{%%}"]);
        let t = &lex_ok("{$CLUSTERDNS_LEXER_TEST_UNSET}")[0];
        assert_eq!((t.token.text.as_str(), t.kind), ("", Kind::Word));
    }

    #[test]
    fn substitution_fast_path_borrows() {
        assert!(matches!(substitute_env("plain{word}"), Cow::Borrowed(_)));
    }
}
