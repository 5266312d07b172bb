//! Corefile parsing: server blocks, directives with nested blocks, snippets and
//! `import`, with caddy's grammar and error messages.
//!
//! ```text
//! text --lex--> tokens --(frames: file, imported files, snippets)--> parser --> Corefile
//! ```
//!
//! `import` is expanded at the token level, as in caddy: the parser reads from a stack
//! of frames, and an `import` line pushes the snippet's or file's tokens on top. So an
//! imported file may hold whole server blocks or just directive lines, depending on
//! where it is imported.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use super::lexer::{Kind, LexToken, lex};
use super::read::{self, MAX_FILE_BYTES, MAX_TOTAL_BYTES, ReadError, human_bytes};
use super::{ConfigError, Corefile, Directive, Loc, ServerBlock, Token};

/// Imports nested deeper than this are refused (a cycle through files that
/// canonicalization cannot see, or simply a mistake).
const MAX_IMPORT_DEPTH: usize = 100;
/// Import lines expanded per parse: bounds the blow-up of snippets importing
/// snippets several times each, which no depth limit catches.
const MAX_IMPORTS: usize = 1000;
/// Nested `{ }` levels: bounds the parser's recursion.
const MAX_NESTING: usize = 100;
/// Files one glob may import: a `conf.d/*` holds a handful; a directory with more than
/// this is not a configuration directory (and each file counts as an import).
const MAX_GLOB_MATCHES: usize = MAX_IMPORTS;

/// Reads and parses the Corefile at `path`, resolving imports relative to its directory.
/// The Corefile must be a regular file of at most [`MAX_FILE_BYTES`] (`-conf stdin`
/// reads a pipe).
pub fn parse_file(path: &Path) -> Result<Corefile, ConfigError> {
    let text = read::read_regular_text(path, MAX_FILE_BYTES)
        .map_err(|e| ConfigError::global(format!("{}: {e}", path.display())))?;
    let base_dir = path.parent().unwrap_or(Path::new(""));
    // Known by its canonical path, the Corefile importing itself is caught as a cycle.
    let origin = Origin::File(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()));
    parse_source(&text, &path.to_string_lossy(), base_dir, origin)
}

/// Parses Corefile `text`; `file_name` names it in locations and errors, and relative
/// imports are resolved against `base_dir`.
pub fn parse_str(text: &str, file_name: &str, base_dir: &Path) -> Result<Corefile, ConfigError> {
    parse_source(text, file_name, base_dir, Origin::Text)
}

fn parse_source(text: &str, file_name: &str, base_dir: &Path, origin: Origin) -> Result<Corefile, ConfigError> {
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ConfigError::global(format!(
            "{file_name}: {}",
            ReadError::TooLarge(MAX_FILE_BYTES)
        )));
    }
    let file: Arc<str> = Arc::from(file_name);
    let tokens = lex(text, &file)?;
    let mut parser = Parser {
        frames: vec![Frame {
            tokens: tokens.into(),
            pos: 0,
            origin,
        }],
        snippets: HashMap::new(),
        root_file: file,
        base_dir: base_dir.to_path_buf(),
        imports: 0,
        budget: MAX_TOTAL_BYTES - text.len() as u64,
        last_loc: None,
    };
    Ok(Corefile {
        blocks: parser.server_blocks()?,
    })
}

/// Where a frame's tokens came from, to detect import cycles.
#[derive(PartialEq, Eq)]
enum Origin {
    /// Text given to [`parse_str`], which may not be a file at all.
    Text,
    Snippet(String),
    /// Canonical path when it could be resolved, the path as joined otherwise.
    File(PathBuf),
}

/// Tokens being read: the Corefile, an imported file or a snippet's body.
struct Frame {
    tokens: Rc<[LexToken]>,
    pos: usize,
    origin: Origin,
}

impl Frame {
    /// A frame still waiting its turn (a later file of a glob) is not an importer.
    fn started(&self) -> bool {
        self.pos > 0
    }
}

struct Parser {
    /// The top frame is read first; exhausted frames are popped lazily, so that a
    /// frame whose last line is an `import` is still on the stack, as an importer,
    /// while the import is checked for cycles.
    frames: Vec<Frame>,
    snippets: HashMap<String, Snippet>,
    root_file: Arc<str>,
    base_dir: PathBuf,
    imports: usize,
    /// Bytes the expansions may still add (see [`MAX_TOTAL_BYTES`]).
    budget: u64,
    /// The last token read, where an unexpected end of input is reported.
    last_loc: Option<Loc>,
}

/// A snippet's body, and what one expansion of it costs against the budget.
struct Snippet {
    body: Rc<[LexToken]>,
    /// The bytes of its tokens (each with one separator): about its size as text.
    cost: u64,
}

fn parse_err(loc: &Loc, msg: impl std::fmt::Display) -> ConfigError {
    ConfigError::at(loc, format!("Error during parsing: {msg}"))
}

fn syntax_err(tok: &Token, expecting: &str) -> ConfigError {
    ConfigError::at(
        &tok.loc,
        format!("Syntax error: Unexpected token '{}', expecting {expecting}", tok.text),
    )
}

fn unmatched_close(tok: &Token) -> ConfigError {
    parse_err(&tok.loc, "Unexpected '}' because no matching opening brace")
}

impl Parser {
    /// The next token without consuming it.
    fn peek(&mut self) -> Option<&LexToken> {
        while let Some(frame) = self.frames.last() {
            if frame.pos < frame.tokens.len() {
                break;
            }
            self.frames.pop();
        }
        let frame = self.frames.last()?;
        Some(&frame.tokens[frame.pos])
    }

    /// The next token, consumed.
    fn next(&mut self) -> Option<LexToken> {
        self.peek()?;
        let frame = self.frames.last_mut()?;
        let tok = frame.tokens[frame.pos].clone();
        frame.pos += 1;
        self.last_loc = Some(tok.token.loc.clone());
        Some(tok)
    }

    /// The next token that begins a statement, after expanding `import` lines.
    fn next_statement(&mut self) -> Result<Option<LexToken>, ConfigError> {
        while let Some(tok) = self.next() {
            if !tok.is_import() {
                return Ok(Some(tok));
            }
            self.import(&tok.token)?;
        }
        Ok(None)
    }

    fn eof_err(&self) -> ConfigError {
        match &self.last_loc {
            Some(loc) => parse_err(loc, "Unexpected EOF"),
            None => ConfigError::global("Error during parsing: Unexpected EOF"),
        }
    }

    /// All server blocks; snippet definitions are recorded, not returned.
    fn server_blocks(&mut self) -> Result<Vec<ServerBlock>, ConfigError> {
        let mut blocks = Vec::new();
        while let Some(first) = self.next_statement()? {
            match first.kind {
                Kind::Close => return Err(unmatched_close(&first.token)),
                Kind::Open => return Err(syntax_err(&first.token, "a server block key")),
                Kind::Word | Kind::Quoted => {}
            }
            let first_loc = first.token.loc.clone();
            let keys = self.keys(first)?;
            if let [key] = keys.as_slice() {
                if let Some(name) = key.text.strip_prefix('(').and_then(|k| k.strip_suffix(')')) {
                    self.define_snippet(name.to_owned(), &key.loc)?;
                    continue;
                }
            }
            if keys.is_empty() {
                // Only empty words: most likely `{$ZONE}` with ZONE unset. Caddy drops such
                // a block silently, which would lose its directives without a word.
                return Err(parse_err(
                    &first_loc,
                    "server block has no key (is an environment variable unset?)",
                ));
            }
            let directives = match self.peek().map(|t| t.kind) {
                // Caddy lets the opening brace of a server block sit on the next line.
                Some(Kind::Open) => {
                    self.next();
                    self.block(0, true)?
                }
                // A single server block may omit its braces: the rest of the input is its body.
                _ if blocks.is_empty() => self.block(0, false)?,
                Some(_) => {
                    let tok = self.next().expect("peeked").token;
                    return Err(syntax_err(&tok, "'{'"));
                }
                None => return Err(self.eof_err()),
            };
            blocks.push(ServerBlock { keys, directives });
        }
        Ok(blocks)
    }

    /// The keys of a server block, from `first`: words on one line, or on several
    /// when a key ends with a comma. Trailing commas are stripped, empty keys dropped.
    fn keys(&mut self, first: LexToken) -> Result<Vec<Token>, ConfigError> {
        let mut keys = Vec::new();
        let mut tok = first.token;
        loop {
            let expecting_another = tok.text.ends_with(',');
            if expecting_another {
                tok.text.pop();
            }
            if !tok.text.is_empty() {
                keys.push(tok);
            }
            tok = loop {
                let Some(next) = self.peek() else {
                    return if expecting_another {
                        Err(self.eof_err())
                    } else {
                        Ok(keys)
                    };
                };
                let (kind, line_start, is_import) = (next.kind, next.line_start, next.is_import());
                if kind == Kind::Open {
                    if expecting_another {
                        return Err(parse_err(
                            &next.token.loc,
                            "Expected another address but had '{' - check for extra comma",
                        ));
                    }
                    return Ok(keys);
                }
                if line_start && !expecting_another {
                    return Ok(keys);
                }
                let next = self.next().expect("peeked");
                match kind {
                    Kind::Close => return Err(unmatched_close(&next.token)),
                    _ if line_start && is_import => self.import(&next.token)?,
                    _ => break next.token,
                }
            };
        }
    }

    /// Records a snippet's body, after its name: `(name) { body }`. Imports in the
    /// body are expanded where the snippet is used, not here.
    fn define_snippet(&mut self, name: String, loc: &Loc) -> Result<(), ConfigError> {
        if self.snippets.contains_key(&name) {
            return Err(parse_err(
                loc,
                format!("redeclaration of previously declared snippet {name}"),
            ));
        }
        match self.next() {
            Some(open) if open.kind == Kind::Open => {}
            Some(other) => return Err(syntax_err(&other.token, "'{'")),
            None => return Err(self.eof_err()),
        }
        let mut body = Vec::new();
        let mut depth = 0usize;
        loop {
            let Some(tok) = self.next() else {
                return Err(self.eof_err());
            };
            match tok.kind {
                Kind::Open => depth += 1,
                Kind::Close if depth == 0 => break,
                Kind::Close => depth -= 1,
                Kind::Word | Kind::Quoted => {}
            }
            body.push(tok);
        }
        // Wherever it is imported, the body starts a line of its own.
        if let Some(first) = body.first_mut() {
            first.line_start = true;
        }
        let cost = body.iter().map(|t| t.token.text.len() as u64 + 1).sum();
        self.snippets.insert(
            name,
            Snippet {
                body: body.into(),
                cost,
            },
        );
        Ok(())
    }

    /// The directives of a block, up to its closing `}` when `braced` (consumed), or to
    /// the end of input for a server block without braces.
    fn block(&mut self, depth: usize, braced: bool) -> Result<Vec<Directive>, ConfigError> {
        let mut directives = Vec::new();
        loop {
            let Some(tok) = self.next_statement()? else {
                return if braced { Err(self.eof_err()) } else { Ok(directives) };
            };
            match tok.kind {
                Kind::Close if braced => return Ok(directives),
                Kind::Close => return Err(unmatched_close(&tok.token)),
                // Caddy only opens a block at the end of a directive's line; a `{` starting
                // a line is CoreDNS's `Unknown directive '{'`.
                Kind::Open => {
                    return Err(syntax_err(
                        &tok.token,
                        "a directive (a block opens on the line of its directive)",
                    ));
                }
                Kind::Word | Kind::Quoted => directives.push(self.directive(tok.token, depth)?),
            }
        }
    }

    /// A directive line after its name: the arguments to the end of the line, then an
    /// optional `{ ... }` block. A `}` on the line ends it (and closes the enclosing
    /// block), so `cache { success 1000 }` reads as expected.
    fn directive(&mut self, name: Token, depth: usize) -> Result<Directive, ConfigError> {
        let mut args = Vec::new();
        let mut block = None;
        while let Some(next) = self.peek() {
            if next.line_start {
                break;
            }
            match next.kind {
                Kind::Close => break,
                Kind::Open => {
                    let open = self.next().expect("peeked");
                    if depth + 1 >= MAX_NESTING {
                        return Err(parse_err(
                            &open.token.loc,
                            format!("blocks nested more than {MAX_NESTING} levels deep"),
                        ));
                    }
                    block = Some(self.block(depth + 1, true)?);
                    // CoreDNS would hand any word after the `}` to the plugin as one more
                    // argument; that is never meant, so say so.
                    if let Some(after) = self.peek().filter(|t| !t.line_start && t.kind != Kind::Close) {
                        let after = after.token.clone();
                        return Err(syntax_err(&after, "a new line after '}'"));
                    }
                    break;
                }
                Kind::Word | Kind::Quoted => args.push(self.next().expect("peeked").token),
            }
        }
        Ok(Directive { name, args, block })
    }

    /// Expands `import PATTERN` (the `import` word just read): pushes the snippet's or
    /// the files' tokens, to be read next.
    fn import(&mut self, import: &Token) -> Result<(), ConfigError> {
        let pattern = self.import_pattern(import)?;
        self.imports += 1;
        if self.imports > MAX_IMPORTS {
            return Err(parse_err(
                &import.loc,
                format!("more than {MAX_IMPORTS} imports expanded"),
            ));
        }
        if self.frames.iter().filter(|f| f.started()).count() >= MAX_IMPORT_DEPTH {
            return Err(parse_err(
                &import.loc,
                format!("maximum import depth ({MAX_IMPORT_DEPTH}) exceeded"),
            ));
        }

        if let Some(snippet) = self.snippets.get(&pattern.text) {
            let (body, cost) = (snippet.body.clone(), snippet.cost);
            self.spend(cost, &import.loc)?;
            let frame = Frame {
                tokens: body,
                pos: 0,
                origin: Origin::Snippet(pattern.text.clone()),
            };
            self.check_cycle(&frame.origin, &import.loc, &pattern.text)?;
            self.frames.push(frame);
            return Ok(());
        }

        let dir = self.dir_of(&import.loc.file);
        let mut frames = Vec::new();
        let paths = resolve_import(&dir, &pattern.text, &import.loc)?;
        // Every file of a glob is an import of its own.
        self.imports += paths.len().saturating_sub(1);
        if self.imports > MAX_IMPORTS {
            return Err(parse_err(
                &import.loc,
                format!("more than {MAX_IMPORTS} imports expanded"),
            ));
        }
        for path in paths {
            // Only a regular file, and no more than the budget left: `import /dev/zero`
            // (or a FIFO, a directory, a file still growing) fails here, at once.
            let cap = MAX_FILE_BYTES.min(self.budget);
            let text = read::read_regular_text(&path, cap).map_err(|e| match e {
                ReadError::TooLarge(_) if cap < MAX_FILE_BYTES => self.over_budget(&import.loc),
                e => parse_err(&import.loc, format!("Could not import {}: {e}", path.display())),
            })?;
            self.spend(text.len() as u64, &import.loc)?;
            let tokens = lex(&text, &Arc::from(path.to_string_lossy()))?;
            let origin = Origin::File(std::fs::canonicalize(&path).unwrap_or(path));
            self.check_cycle(&origin, &import.loc, &pattern.text)?;
            frames.push(Frame {
                tokens: tokens.into(),
                pos: 0,
                origin,
            });
        }
        // The first file must end up on top.
        self.frames.extend(frames.into_iter().rev());
        Ok(())
    }

    /// Takes `cost` bytes from the budget of the whole parse.
    fn spend(&mut self, cost: u64, loc: &Loc) -> Result<(), ConfigError> {
        match self.budget.checked_sub(cost) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => Err(self.over_budget(loc)),
        }
    }

    fn over_budget(&self, loc: &Loc) -> ConfigError {
        parse_err(
            loc,
            format!(
                "the Corefile and what it imports exceed {} in total (each import counts every time it is expanded)",
                human_bytes(MAX_TOTAL_BYTES)
            ),
        )
    }

    /// Reads PATTERN, which must be the only word after `import` on its line. It is
    /// read from the frame `import` came from: a line never continues into another file.
    fn import_pattern(&mut self, import: &Token) -> Result<Token, ConfigError> {
        let frame = self.frames.last_mut().expect("import was read from a frame");
        let pattern = match frame.tokens.get(frame.pos).filter(|t| !t.line_start) {
            Some(t) if matches!(t.kind, Kind::Word | Kind::Quoted) => t.token.clone(),
            _ => {
                return Err(parse_err(
                    &import.loc,
                    "Wrong argument count or unexpected line ending after 'import'",
                ));
            }
        };
        frame.pos += 1;
        if let Some(extra) = frame.tokens.get(frame.pos).filter(|t| !t.line_start) {
            return Err(parse_err(
                &extra.token.loc,
                "Import takes only one argument (glob pattern or file)",
            ));
        }
        if pattern.text.is_empty() {
            return Err(parse_err(&pattern.loc, "Import requires a non-empty filepath"));
        }
        Ok(pattern)
    }

    fn check_cycle(&self, origin: &Origin, loc: &Loc, pattern: &str) -> Result<(), ConfigError> {
        if self.frames.iter().any(|f| f.started() && f.origin == *origin) {
            return Err(parse_err(
                loc,
                format!("import cycle detected: '{pattern}' is already being imported"),
            ));
        }
        Ok(())
    }

    /// The directory against which imports written in `file` are resolved.
    fn dir_of(&self, file: &Arc<str>) -> PathBuf {
        if *file == self.root_file {
            return self.base_dir.clone();
        }
        // Imported files are named by their path as resolved, so their parent is right.
        Path::new(&**file).parent().unwrap_or(Path::new("")).to_path_buf()
    }
}

/// The files an import pattern names, in sorted order: one plain path, which must
/// exist, or the matches of a pattern with a single `*` or `?` in its last component
/// (none is only a warning, as in CoreDNS).
fn resolve_import(dir: &Path, pattern: &str, loc: &Loc) -> Result<Vec<PathBuf>, ConfigError> {
    let wildcards = pattern.matches(['*', '?']).count();
    // Caddy refuses character classes and several wildcards (globbing could hang).
    if wildcards > 1 || (pattern.contains('[') && pattern.contains(']')) {
        return Err(parse_err(
            loc,
            format!("Glob pattern may only contain one wildcard (*), but has others: {pattern}"),
        ));
    }
    let path = dir.join(pattern);
    if wildcards == 0 {
        return match std::fs::metadata(&path) {
            Ok(_) => Ok(vec![path]),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(parse_err(loc, format!("File to import not found: {pattern}")))
            }
            Err(e) => Err(parse_err(loc, format!("Could not import {}: {e}", path.display()))),
        };
    }

    let name_pattern = path
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.contains(['*', '?']));
    let (Some(name_pattern), Some(parent)) = (name_pattern, path.parent()) else {
        return Err(parse_err(
            loc,
            format!("Glob pattern may only have its wildcard in the last path component: {pattern}"),
        ));
    };
    // A relative path of one component has an empty parent, which read_dir refuses.
    let read_from = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let entries = match std::fs::read_dir(read_from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            log::warn!("{loc} - No files matching import glob pattern: {pattern}");
            return Ok(Vec::new());
        }
        Err(e) => return Err(parse_err(loc, format!("Could not import {pattern}: {e}"))),
    };
    let mut matches = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| parse_err(loc, format!("Could not import {pattern}: {e}")))?;
        // A name that is not UTF-8 cannot match a pattern written in the Corefile.
        let name = entry.file_name();
        if name.to_str().is_some_and(|name| wildcard_match(name_pattern, name)) {
            if matches.len() == MAX_GLOB_MATCHES {
                return Err(parse_err(
                    loc,
                    format!("more than {MAX_GLOB_MATCHES} files match import glob pattern: {pattern}"),
                ));
            }
            matches.push(parent.join(name));
        }
    }
    if matches.is_empty() {
        log::warn!("{loc} - No files matching import glob pattern: {pattern}");
    }
    matches.sort();
    Ok(matches)
}

/// Matches `name` against `pattern`, which holds exactly one `*` (any run of
/// characters, maybe none) or `?` (exactly one character).
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let Some(at) = pattern.find(['*', '?']) else {
        return pattern == name;
    };
    let (prefix, suffix) = (&pattern[..at], &pattern[at + 1..]);
    if name.len() < prefix.len() + suffix.len() || !name.starts_with(prefix) || !name.ends_with(suffix) {
        return false;
    }
    let middle = &name[prefix.len()..name.len() - suffix.len()];
    match &pattern[at..=at] {
        "?" => middle.chars().count() == 1,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn parse(text: &str) -> Result<Corefile, ConfigError> {
        parse_str(text, "Corefile", Path::new("."))
    }

    fn parse_ok(text: &str) -> Corefile {
        parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn err_of(text: &str) -> String {
        parse(text).expect_err("should fail").to_string()
    }

    /// One line per block and directive: `keys` then indented `name args` lines,
    /// nested blocks in braces. Compact enough to assert structure exactly.
    fn outline(c: &Corefile) -> String {
        fn directive(d: &Directive, indent: usize, out: &mut String) {
            out.push_str(&"  ".repeat(indent));
            out.push_str(&d.name.text);
            for a in &d.args {
                out.push(' ');
                out.push_str(&a.text);
            }
            if let Some(block) = &d.block {
                out.push_str(" {\n");
                for d in block {
                    directive(d, indent + 1, out);
                }
                out.push_str(&"  ".repeat(indent));
                out.push('}');
            }
            out.push('\n');
        }
        let mut out = String::new();
        for b in &c.blocks {
            let keys: Vec<&str> = b.keys.iter().map(|k| k.as_str()).collect();
            out.push_str(&keys.join(" | "));
            out.push('\n');
            for d in &b.directives {
                directive(d, 1, &mut out);
            }
        }
        out
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("clusterdns-parser-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create dir");
            }
            std::fs::write(&path, text).expect("write file");
            path
        }

        fn parse(&self, text: &str) -> Result<Corefile, ConfigError> {
            let path = self.write("Corefile", text);
            parse_file(&path)
        }

        fn name(&self, rel: &str) -> String {
            self.0.join(rel).display().to_string()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn empty_inputs_have_no_blocks() {
        for text in ["", "\n\n", "# just a comment\n  # and another\n"] {
            assert_eq!(parse_ok(text), Corefile { blocks: vec![] });
        }
    }

    #[test]
    fn the_standard_kubernetes_corefile() {
        let c = parse_ok(
            ".:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
",
        );
        assert_eq!(
            outline(&c),
            ".:53
  errors
  health {
    lameduck 5s
  }
  ready
  kubernetes cluster.local in-addr.arpa ip6.arpa {
    pods insecure
    fallthrough in-addr.arpa ip6.arpa
    ttl 30
  }
  prometheus :9153
  forward . /etc/resolv.conf {
    max_concurrent 1000
  }
  cache 30
  loop
  reload
  loadbalance
"
        );
        let k = &c.blocks[0].directives[3];
        assert_eq!(k.loc().line, 7);
        assert_eq!(k.options()[2].args[0].loc.line, 10);
        assert_eq!(&*k.loc().file, "Corefile");
        assert!(c.blocks[0].directives[0].block.is_none());
    }

    #[test]
    fn several_keys_and_comma_continuation() {
        let c = parse_ok(
            "cluster.local:53 in-addr.arpa:53 {\n}\na.org, b.org {\n}\nc.org,\n  d.org e.org, f.org\n{\n whoami\n}",
        );
        assert_eq!(
            outline(&c),
            "cluster.local:53 | in-addr.arpa:53\na.org | b.org\nc.org | d.org | e.org | f.org\n  whoami\n"
        );
        let lines: Vec<u32> = c.blocks[2].keys.iter().map(|k| k.loc.line).collect();
        assert_eq!(lines, vec![5, 6, 6, 6]);
    }

    #[test]
    fn comma_errors() {
        assert_eq!(
            err_of("a.org, {\n}"),
            "Corefile:1 - Error during parsing: Expected another address but had '{' - check for extra comma"
        );
        assert_eq!(
            err_of("a.org,\nb.org,"),
            "Corefile:2 - Error during parsing: Unexpected EOF"
        );
    }

    #[test]
    fn block_without_braces() {
        let c = parse_ok("example.org\nwhoami\nforward . 1.1.1.1 {\n  max_fails 3\n}\nlog");
        assert_eq!(
            outline(&c),
            "example.org\n  whoami\n  forward . 1.1.1.1 {\n    max_fails 3\n  }\n  log\n"
        );
        // Keys alone.
        assert_eq!(outline(&parse_ok("a.org b.org")), "a.org | b.org\n");
        assert_eq!(
            err_of("a.org\nwhoami\n}"),
            "Corefile:3 - Error during parsing: Unexpected '}' because no matching opening brace"
        );
    }

    #[test]
    fn missing_brace_with_several_blocks() {
        assert_eq!(
            err_of("a.org {\n  whoami\n}\n\nb.org\n  whoami\n"),
            "Corefile:6 - Syntax error: Unexpected token 'whoami', expecting '{'"
        );
        assert_eq!(
            err_of("a.org {\n}\nb.org"),
            "Corefile:3 - Error during parsing: Unexpected EOF"
        );
    }

    #[test]
    fn brace_on_the_next_line_of_keys() {
        assert_eq!(
            outline(&parse_ok("a.org\n{\n  whoami\n}\nb.org\n{\n}")),
            "a.org\n  whoami\nb.org\n"
        );
    }

    #[test]
    fn empty_blocks() {
        let c = parse_ok("x {\n}\ny { }\nz {\n  cache {\n  }\n  log { }\n}");
        assert_eq!(outline(&c), "x\ny\nz\n  cache {\n  }\n  log {\n  }\n");
        assert_eq!(c.blocks[2].directives[0].block, Some(vec![]));
        // `{}` without a space is a word, as in caddy: here a second key.
        assert_eq!(outline(&parse_ok("x {}")), "x | {}\n");
    }

    #[test]
    fn nested_blocks_three_levels() {
        let c = parse_ok(". {\n  a 1 {\n    b 2 {\n      c 3 {\n        d\n      }\n      e\n    }\n  }\n  f\n}");
        assert_eq!(
            outline(&c),
            ".\n  a 1 {\n    b 2 {\n      c 3 {\n        d\n      }\n      e\n    }\n  }\n  f\n"
        );
        let c3 = &c.blocks[0].directives[0].options()[0].options()[0];
        assert_eq!((c3.name.as_str(), c3.loc().line), ("c", 4));
        assert_eq!(c3.options()[0].loc().line, 5);
    }

    #[test]
    fn blocks_on_one_line() {
        let c = parse_ok(". {\n  cache { success 1000 }\n  template IN A { answer x } }\nb {\n}");
        assert_eq!(
            outline(&c),
            ".\n  cache {\n    success 1000\n  }\n  template IN A {\n    answer x\n  }\nb\n"
        );
        // Words after a block's `{` start its first line.
        assert_eq!(
            outline(&parse_ok(". {\n  cache { success 1000\n    denial 5 }\n}")),
            ".\n  cache {\n    success 1000\n    denial 5\n  }\n"
        );
        // One-line server blocks, even two on one line, as caddy allows.
        assert_eq!(outline(&parse_ok("a { whoami } b { log }")), "a\n  whoami\nb\n  log\n");
    }

    #[test]
    fn stray_braces() {
        assert_eq!(
            err_of(". {\n  cache\n  {\n    success 1000\n  }\n}"),
            "Corefile:3 - Syntax error: Unexpected token '{', expecting a directive (a block opens on the line of its directive)"
        );
        assert_eq!(
            err_of(". {\n  cache { success 1000 } 30\n}"),
            "Corefile:2 - Syntax error: Unexpected token '30', expecting a new line after '}'"
        );
        assert_eq!(
            err_of(". {\n  whoami\n}\n}"),
            "Corefile:4 - Error during parsing: Unexpected '}' because no matching opening brace"
        );
        assert_eq!(
            err_of("}"),
            "Corefile:1 - Error during parsing: Unexpected '}' because no matching opening brace"
        );
        assert_eq!(
            err_of("a.org }"),
            "Corefile:1 - Error during parsing: Unexpected '}' because no matching opening brace"
        );
        assert_eq!(
            err_of("{\n}"),
            "Corefile:1 - Syntax error: Unexpected token '{', expecting a server block key"
        );
    }

    #[test]
    fn unexpected_eof() {
        assert_eq!(
            err_of(". {\n  whoami\n"),
            "Corefile:2 - Error during parsing: Unexpected EOF"
        );
        assert_eq!(
            err_of(". {\n  kubernetes cluster.local {\n    pods insecure\n}"),
            "Corefile:4 - Error during parsing: Unexpected EOF"
        );
        assert_eq!(
            err_of("(snip) {\n  log\n"),
            "Corefile:2 - Error during parsing: Unexpected EOF"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!(". {{\n{}", "a {\n".repeat(200));
        assert_eq!(
            err_of(&deep),
            "Corefile:101 - Error during parsing: blocks nested more than 100 levels deep"
        );
    }

    #[test]
    fn quoted_tokens() {
        let c = parse_ok(
            ". {\n  template IN TXT {\n    answer \"{{ .Name }} 60 IN TXT \\\"a b\\\"\"\n  }\n  log \"{\" \"}\" \"\"\n}",
        );
        let answer = &c.blocks[0].directives[0].options()[0];
        assert_eq!(answer.arg_strs(), vec![r#"{{ .Name }} 60 IN TXT "a b""#]);
        // Quoted braces and an empty quoted word are plain arguments.
        assert_eq!(c.blocks[0].directives[1].arg_strs(), vec!["{", "}", ""]);
        assert_eq!(c.blocks[0].directives[1].block, None);
    }

    #[test]
    fn quotes_spanning_lines() {
        let c = parse_ok(". {\n  a \"one\ntwo\" x\n  b\n}");
        let a = &c.blocks[0].directives[0];
        assert_eq!(a.arg_strs(), vec!["one\ntwo", "x"]);
        assert_eq!((a.args[0].loc.line, a.args[1].loc.line), (2, 3));
        assert_eq!(c.blocks[0].directives[1].loc().line, 4);
    }

    #[test]
    fn comments_everywhere() {
        let c = parse_ok(
            "# header\n. { # open\n  forward . 1.1.1.1#dns.example\n  # a whole line\n  cache 30 # end\n}#tail\n",
        );
        assert_eq!(outline(&c), ".\n  forward . 1.1.1.1\n  cache 30\n");
        assert_eq!(c.blocks[0].directives[1].loc().line, 5);
    }

    #[test]
    fn byte_order_mark() {
        assert_eq!(outline(&parse_ok("\u{feff}. {\n whoami\n}")), ".\n  whoami\n");
    }

    #[test]
    fn environment_substitution() {
        // SAFETY: these variable names are used by this test only.
        unsafe {
            std::env::set_var("CLUSTERDNS_PARSER_TEST_ZONE", "cluster.local");
            std::env::set_var("CLUSTERDNS_PARSER_TEST_PORT", "1053");
            std::env::set_var("CLUSTERDNS_PARSER_TEST_PLUGIN", "cache");
            std::env::remove_var("CLUSTERDNS_PARSER_TEST_UNSET");
        }
        let c = parse_ok(
            "{$CLUSTERDNS_PARSER_TEST_ZONE}:{%CLUSTERDNS_PARSER_TEST_PORT%} {\n  {$CLUSTERDNS_PARSER_TEST_PLUGIN} 30\n  log x{$CLUSTERDNS_PARSER_TEST_UNSET}y {%CLUSTERDNS_PARSER_TEST_UNSET%}\n}",
        );
        assert_eq!(outline(&c), "cluster.local:1053\n  cache 30\n  log xy \n");
        assert_eq!(
            err_of("{$CLUSTERDNS_PARSER_TEST_UNSET} {\n}"),
            "Corefile:1 - Error during parsing: server block has no key (is an environment variable unset?)"
        );
    }

    #[test]
    fn snippets() {
        let c = parse_ok(
            "(common) {\n  errors\n  cache 30 {\n    success 100\n  }\n}\n(keys) {\n  b.org\n}\n\na.org {\n  import common\n  whoami\n}\nimport keys\n{\n  log\n  import common\n}\n",
        );
        assert_eq!(
            outline(&c),
            "a.org\n  errors\n  cache 30 {\n    success 100\n  }\n  whoami\nb.org\n  log\n  errors\n  cache 30 {\n    success 100\n  }\n"
        );
        // Snippet tokens keep the lines of their definition.
        let errors = &c.blocks[0].directives[0];
        assert_eq!(errors.loc().line, 2);
        assert_eq!(c.blocks[0].directives[2].loc().line, 13);
    }

    #[test]
    fn snippet_body_starting_on_the_brace_line() {
        let c = parse_ok("(s) { log\n  errors }\n. {\n  import s\n}");
        assert_eq!(outline(&c), ".\n  log\n  errors\n");
    }

    #[test]
    fn snippet_errors() {
        assert_eq!(
            err_of("(s) {\n}\n(s) {\n}"),
            "Corefile:3 - Error during parsing: redeclaration of previously declared snippet s"
        );
        assert_eq!(
            err_of("(s)\nlog"),
            "Corefile:2 - Syntax error: Unexpected token 'log', expecting '{'"
        );
        assert_eq!(
            err_of("(loop) {\n  import loop\n}\n. {\n  import loop\n}"),
            "Corefile:2 - Error during parsing: import cycle detected: 'loop' is already being imported"
        );
        assert_eq!(
            err_of("(a) {\n  import b\n}\n(b) {\n  log\n  import a\n}\n. {\n  import a\n}"),
            "Corefile:6 - Error during parsing: import cycle detected: 'a' is already being imported"
        );
        // Used twice in a row is not a cycle.
        assert_eq!(
            outline(&parse_ok("(s) {\n  log\n}\n. {\n  import s\n  import s\n}")),
            ".\n  log\n  log\n"
        );
    }

    #[test]
    fn snippet_import_blow_up_is_bounded() {
        // Each level imports the one below twice: 2^12 expansions without any cycle.
        let mut text = String::from("(s0) {\n  log\n}\n");
        for i in 1..=12 {
            text.push_str(&format!("(s{i}) {{\n  import s{}\n  import s{}\n}}\n", i - 1, i - 1));
        }
        text.push_str(". {\n  import s12\n}\n");
        assert!(err_of(&text).ends_with("Error during parsing: more than 1000 imports expanded"));
    }

    #[test]
    fn import_depth_is_bounded() {
        // A chain of 150 snippets, each importing the one before: no cycle, but too deep.
        let mut text = String::from("(s0) {\n  log\n}\n");
        for i in 1..150 {
            text.push_str(&format!("(s{i}) {{\n  import s{}\n}}\n", i - 1));
        }
        text.push_str(". {\n  import s149\n}\n");
        assert!(err_of(&text).ends_with("Error during parsing: maximum import depth (100) exceeded"));
        // 90 levels are fine.
        let fine = text.replace(". {\n  import s149\n}\n", ". {\n  import s89\n}\n");
        assert_eq!(outline(&parse_ok(&fine)), ".\n  log\n");
    }

    #[test]
    fn import_syntax_errors() {
        assert_eq!(
            err_of(". {\n  import\n}"),
            "Corefile:2 - Error during parsing: Wrong argument count or unexpected line ending after 'import'"
        );
        assert_eq!(
            err_of(". {\n  import a b\n}"),
            "Corefile:2 - Error during parsing: Import takes only one argument (glob pattern or file)"
        );
        assert_eq!(
            err_of("import \"\""),
            "Corefile:1 - Error during parsing: Import requires a non-empty filepath"
        );
        // `import` later on a line is an ordinary word.
        let c = parse_ok(". {\n  basicauth / import password\n}");
        assert_eq!(c.blocks[0].directives[0].arg_strs(), vec!["/", "import", "password"]);
        // So is a quoted one.
        assert_eq!(outline(&parse_ok(". {\n  \"import\" x\n}")), ".\n  import x\n");
    }

    #[test]
    fn import_file_in_a_block_and_at_top_level() {
        let dir = TempDir::new("file");
        dir.write("plugins.conf", "errors\ncache 30 {\n  success 10\n}\n");
        dir.write("sub/blocks.conf", "# blocks\nb.org {\n  import ../plugins.conf\n}\n");
        let c = dir
            .parse("a.org {\n  log\n  import plugins.conf\n  whoami\n}\nimport sub/blocks.conf\nc.org {\n}\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            outline(&c),
            "a.org\n  log\n  errors\n  cache 30 {\n    success 10\n  }\n  whoami\nb.org\n  errors\n  cache 30 {\n    success 10\n  }\nc.org\n"
        );
        // Locations name each file as resolved.
        let corefile = dir.name("Corefile");
        let a = &c.blocks[0];
        assert_eq!(
            (&*a.directives[0].loc().file, a.directives[0].loc().line),
            (corefile.as_str(), 2)
        );
        assert_eq!(&*a.directives[1].loc().file, dir.name("plugins.conf"));
        assert_eq!(a.directives[2].options()[0].loc().line, 3);
        assert_eq!(
            (&*a.directives[3].loc().file, a.directives[3].loc().line),
            (corefile.as_str(), 4)
        );
        let b = &c.blocks[1];
        assert_eq!(
            (&*b.keys[0].loc.file, b.keys[0].loc.line),
            (dir.name("sub/blocks.conf").as_str(), 2)
        );
        assert_eq!(&*b.directives[0].loc().file, dir.name("sub/../plugins.conf"));
    }

    #[test]
    fn import_errors_are_located() {
        let dir = TempDir::new("errors");
        dir.write("bad.conf", "ok\n\n{\n");
        assert_eq!(
            dir.parse(". {\n  import bad.conf\n}").unwrap_err().to_string(),
            format!(
                "{}:3 - Syntax error: Unexpected token '{{', expecting a directive (a block opens on the line of its directive)",
                dir.name("bad.conf")
            )
        );
        assert_eq!(
            dir.parse(". {\n  log\n  import missing.conf\n}")
                .unwrap_err()
                .to_string(),
            format!(
                "{}:3 - Error during parsing: File to import not found: missing.conf",
                dir.name("Corefile")
            )
        );
        // A relative import in an imported file is resolved against that file's directory.
        dir.write("sub/inner.conf", "import plugins.conf\n");
        dir.write("plugins.conf", "log\n");
        assert_eq!(
            dir.parse(". {\n  import sub/inner.conf\n}").unwrap_err().to_string(),
            format!(
                "{}:1 - Error during parsing: File to import not found: plugins.conf",
                dir.name("sub/inner.conf")
            )
        );
    }

    #[test]
    fn imports_take_only_regular_files() {
        let dir = TempDir::new("kinds");
        let err = |text: &str| dir.parse(text).unwrap_err().to_string();
        let t = std::time::Instant::now();
        assert_eq!(
            err(". {\n  log\n  import /dev/zero\n}"),
            format!(
                "{}:3 - Error during parsing: Could not import /dev/zero: not a regular file (a character device)",
                dir.name("Corefile")
            )
        );
        std::fs::create_dir_all(dir.0.join("sub")).unwrap();
        assert_eq!(
            err(". {\n  import sub\n}"),
            format!(
                "{}:2 - Error during parsing: Could not import {}: not a regular file (a directory)",
                dir.name("Corefile"),
                dir.name("sub")
            )
        );
        let fifo = dir.0.join("fifo.conf");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(err(". {\n  import fifo.conf\n}").ends_with("not a regular file (a FIFO)"));
        // A glob that matches a FIFO fails the same way, and never blocks on it.
        assert!(err(". {\n  import fifo*\n}").ends_with("not a regular file (a FIFO)"));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        // The Corefile itself too (`-conf stdin` reads pipes).
        assert_eq!(
            parse_file(&fifo).unwrap_err().to_string(),
            format!("{}: not a regular file (a FIFO)", fifo.display())
        );
    }

    #[test]
    fn file_and_total_sizes_are_capped() {
        let dir = TempDir::new("sizes");
        let line = "# padding padding padding padding padding padding padding padding\n";
        let big = line.repeat((MAX_FILE_BYTES as usize / line.len()) + 1);
        dir.write("big.conf", &big);
        assert_eq!(
            dir.parse(". {\n  import big.conf\n}").unwrap_err().to_string(),
            format!(
                "{}:2 - Error during parsing: Could not import {}: larger than 1 MiB",
                dir.name("Corefile"),
                dir.name("big.conf")
            )
        );
        assert_eq!(
            dir.parse(&big).unwrap_err().to_string(),
            format!("{}: larger than 1 MiB", dir.name("Corefile"))
        );
        assert_eq!(parse(&big).unwrap_err().to_string(), "Corefile: larger than 1 MiB");
        // Files under the per-file cap, imported often enough to pass the total.
        let half = line.repeat(MAX_FILE_BYTES as usize / 2 / line.len());
        dir.write("half.conf", &format!("{half}log\n"));
        let imports = ". {\n".to_string() + &"  import half.conf\n".repeat(9) + "}\n";
        assert_eq!(
            dir.parse(&imports).unwrap_err().to_string(),
            format!(
                "{}:10 - Error during parsing: the Corefile and what it imports exceed 4 MiB in total (each import counts every time it is expanded)",
                dir.name("Corefile")
            )
        );
        let fine = ". {\n".to_string() + &"  import half.conf\n".repeat(8) + "}\n";
        assert_eq!(dir.parse(&fine).unwrap().blocks[0].directives.len(), 8);
        // A snippet counts every time it is expanded too.
        let body = "  log a-rather-long-argument-to-make-the-snippet-large\n".repeat(15_000);
        let snippets = format!("(s) {{\n{body}}}\n. {{\n{}}}\n", "  import s\n".repeat(5));
        assert!(parse(&snippets).unwrap_err().msg.contains("exceed 4 MiB in total"));
    }

    #[test]
    fn glob_matches_are_capped() {
        let dir = TempDir::new("manyglob");
        for i in 0..=MAX_GLOB_MATCHES {
            dir.write(&format!("d/{i}.conf"), "");
        }
        assert_eq!(
            dir.parse(". {\n  import d/*.conf\n}").unwrap_err().to_string(),
            format!(
                "{}:2 - Error during parsing: more than 1000 files match import glob pattern: d/*.conf",
                dir.name("Corefile")
            )
        );
        std::fs::remove_file(dir.0.join("d/0.conf")).unwrap();
        assert!(dir.parse(". {\n  import d/*.conf\n}").is_ok());
        // Each file counts as an import.
        assert!(
            dir.parse(". {\n  import d/*.conf\n  import d/1.conf\n}")
                .unwrap_err()
                .msg
                .contains("more than 1000 imports expanded")
        );
    }

    #[test]
    fn import_glob() {
        let dir = TempDir::new("glob");
        dir.write("conf.d/b.conf", "b.org {\n  log\n}\n");
        dir.write("conf.d/a.conf", "a.org {\n  whoami\n}\n");
        dir.write("conf.d/c.conf", "c.org {\n}\n");
        dir.write("conf.d/notes.txt", "not a corefile {");
        let c = dir.parse("import conf.d/*.conf\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outline(&c), "a.org\n  whoami\nb.org\n  log\nc.org\n");
        let c = dir.parse("import conf.d/?.conf\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.blocks.len(), 3);
        // No match is only a warning.
        let c = dir
            .parse(". {\n  import conf.d/*.none\n  import nodir/*\n}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outline(&c), ".\n");
    }

    #[test]
    fn parse_str_resolves_against_base_dir() {
        let dir = TempDir::new("basedir");
        dir.write("conf.d/x.conf", "whoami\n");
        // SAFETY: this variable name is used by this test only.
        unsafe { std::env::set_var("CLUSTERDNS_PARSER_TEST_CONFD", "conf.d") };
        let c = parse_str(
            ". {\n  import {$CLUSTERDNS_PARSER_TEST_CONFD}/x.conf\n}",
            "stdin",
            &dir.0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outline(&c), ".\n  whoami\n");
        assert_eq!(&*c.blocks[0].keys[0].loc.file, "stdin");
        assert_eq!(&*c.blocks[0].directives[0].loc().file, dir.name("conf.d/x.conf"));
    }

    #[test]
    fn glob_files_may_import_each_other() {
        // b.conf is imported by a.conf and again by the glob: not a cycle.
        let dir = TempDir::new("siblings");
        dir.write("d/a.conf", "import b.conf\n");
        dir.write("d/b.conf", "log\n");
        let c = dir.parse(". {\n  import d/*.conf\n}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outline(&c), ".\n  log\n  log\n");
    }

    #[test]
    fn glob_errors() {
        let dir = TempDir::new("globerr");
        assert_eq!(
            dir.parse(". {\n  import conf.d/*/*.conf\n}").unwrap_err().to_string(),
            format!(
                "{}:2 - Error during parsing: Glob pattern may only contain one wildcard (*), but has others: conf.d/*/*.conf",
                dir.name("Corefile")
            )
        );
        assert!(
            dir.parse("import a?b*")
                .unwrap_err()
                .msg
                .contains("may only contain one wildcard")
        );
        assert!(
            dir.parse("import [ab].conf")
                .unwrap_err()
                .msg
                .contains("may only contain one wildcard")
        );
        assert_eq!(
            dir.parse("import conf*/a.conf").unwrap_err().to_string(),
            format!(
                "{}:1 - Error during parsing: Glob pattern may only have its wildcard in the last path component: conf*/a.conf",
                dir.name("Corefile")
            )
        );
    }

    #[test]
    fn import_cycle_through_files() {
        let dir = TempDir::new("cycle");
        dir.write("a.conf", "log\nimport b.conf\n");
        dir.write("b.conf", "import ./a.conf\n");
        assert_eq!(
            dir.parse(". {\n  import a.conf\n}").unwrap_err().to_string(),
            format!(
                "{}:1 - Error during parsing: import cycle detected: './a.conf' is already being imported",
                dir.name("b.conf")
            )
        );
        dir.write("self.conf", "import self.conf");
        assert!(
            dir.parse("import self.conf")
                .unwrap_err()
                .msg
                .contains("import cycle detected")
        );
        // Importing the Corefile itself is a cycle too.
        assert_eq!(
            dir.parse(". {\n  import Corefile\n}").unwrap_err().to_string(),
            format!(
                "{}:2 - Error during parsing: import cycle detected: 'Corefile' is already being imported",
                dir.name("Corefile")
            )
        );
    }

    #[test]
    fn snippets_defined_in_an_imported_file() {
        let dir = TempDir::new("snipfile");
        dir.write("snippets.conf", "(common) {\n  errors\n}\n");
        let c = dir
            .parse("import snippets.conf\n. {\n  import common\n}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outline(&c), ".\n  errors\n");
        assert_eq!(&*c.blocks[0].directives[0].loc().file, dir.name("snippets.conf"));
    }

    #[test]
    fn imported_tokens_never_join_the_import_line() {
        // Without line-start flags, `errors` (line 2 of the snippet's file) would look
        // like it continues line 2 of the Corefile.
        let dir = TempDir::new("lines");
        dir.write("x.conf", "\nerrors\n");
        let c = dir
            .parse(". {\n  import x.conf\n  log\n}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outline(&c), ".\n  errors\n  log\n");
    }

    #[test]
    fn parse_file_errors() {
        let missing = std::env::temp_dir().join("clusterdns-parser-no-such-dir/Corefile");
        let err = parse_file(&missing).unwrap_err();
        assert_eq!(err.loc, None);
        assert!(err.msg.starts_with(&format!("{}: ", missing.display())), "{err}");
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.conf", "a.conf"));
        assert!(wildcard_match("*.conf", ".conf"));
        assert!(!wildcard_match("*.conf", "a.conf.bak"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(wildcard_match("a?c", "aéc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(!wildcard_match("a?c", "abbc"));
        assert!(!wildcard_match("ab*ba", "aba"));
        assert!(wildcard_match("ab*ba", "abba"));
    }
}
