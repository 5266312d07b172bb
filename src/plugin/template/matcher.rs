//! A `match` regex, compiled for the question each query asks of it.
//!
//! ```text
//!   does it match?  ──▶ dense DFA (built at setup when it fits in DFA_SIZE_LIMIT):
//!                        one table lookup per byte, no cache, stops at the first match
//!                   └─▶ otherwise the meta regex (lazy DFA, per-worker cache)
//!   where are the captures? ──▶ shape (a pattern anchored at its start whose syntax
//!                        tree is literals, captures, single-byte classes repeated, and
//!                        fixed repeats of those, where each open-ended run is followed
//!                        by a byte it cannot take: one way to match, found in one
//!                        forward walk, `^ip-([0-9]+)-([0-9]+)[.]x[.]$`)
//!                   └─▶ one-pass DFA (built at setup for a pattern anchored at its
//!                        start that is one-pass): one pass, no second search
//!                   └─▶ otherwise the meta regex
//! ```
//!
//! All three come from the same pattern with the same syntax options, so they agree on
//! what matches; the tests run each case through every engine a pattern gets.

use regex_automata::dfa::{Automaton, dense, onepass};
use regex_automata::meta::{self, Regex};
use regex_automata::nfa::thompson;
use regex_automata::util::captures::Captures;
use regex_automata::util::primitives::{NonMaxUsize, StateID};
use regex_automata::util::start;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, PatternID};
use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// The most a dense DFA may take (built at setup, shared by every worker); a pattern
/// whose DFA is larger is searched with the meta regex instead.
pub const DFA_SIZE_LIMIT: usize = 1 << 20;

pub struct Matcher {
    meta: Regex,
    dfa: Option<dense::DFA<Vec<u32>>>,
    onepass: Option<onepass::DFA>,
    shape: Option<Shape>,
    /// The named groups and their indexes (a scan of a few short names is cheaper per
    /// query than the hash lookup of `Captures::get_group_by_name`).
    names: Vec<(Box<str>, usize)>,
}

/// A worker's search state for one matcher.
pub struct MatchCache {
    meta: meta::Cache,
    onepass: Option<onepass::Cache>,
    /// Where the last capturing search found the groups.
    pub caps: Captures,
}

impl Matcher {
    /// Compiles `pattern`: on the name's bytes with ASCII classes when the pattern
    /// allows it (the haystack is always ASCII: other bytes are written as `\DDD`), as
    /// written otherwise (`\pL`). `nfa_limit` bounds each compiled automaton.
    pub fn new(pattern: &str, nfa_limit: usize) -> Result<Matcher, String> {
        let bytes = syntax::Config::new().unicode(false).utf8(false);
        let nfa = thompson::Config::new().nfa_size_limit(Some(nfa_limit));
        let meta_config = Regex::config().nfa_size_limit(Some(nfa_limit));
        let (meta, syn) = match Regex::builder()
            .configure(meta_config.clone())
            .syntax(bytes)
            .build(pattern)
        {
            Ok(r) => (r, bytes),
            Err(_) => (
                Regex::builder()
                    .configure(meta_config)
                    .build(pattern)
                    .map_err(|e| e.to_string())?,
                syntax::Config::new(),
            ),
        };
        let dfa = dense::Builder::new()
            .configure(
                dense::DFA::config()
                    .dfa_size_limit(Some(DFA_SIZE_LIMIT))
                    .determinize_size_limit(Some(DFA_SIZE_LIMIT)),
            )
            .syntax(syn)
            .thompson(nfa.clone())
            .build(pattern)
            .ok();
        // One-pass needs an anchored search: only a pattern anchored at its start means
        // the same searched that way.
        let onepass = thompson::Compiler::new()
            .syntax(syn)
            .configure(nfa)
            .build(pattern)
            .ok()
            .filter(thompson::NFA::is_always_start_anchored)
            // Bounded like the dense DFA: over it, captures use the meta regex.
            .and_then(|nfa| {
                onepass::Builder::new()
                    .configure(onepass::Config::new().size_limit(Some(DFA_SIZE_LIMIT)))
                    .build_from_nfa(nfa)
                    .ok()
            });
        let names = meta
            .group_info()
            .pattern_names(PatternID::ZERO)
            .enumerate()
            .filter_map(|(i, n)| Some((Box::from(n?), i)))
            .collect();
        let caps = match &onepass {
            Some(o) => o.create_captures(),
            None => meta.create_captures(),
        };
        let shape = regex_automata::util::syntax::parse_with(pattern, &syn)
            .ok()
            .and_then(|hir| Shape::new(&hir, &caps));
        Ok(Matcher {
            meta,
            dfa,
            onepass,
            shape,
            names,
        })
    }

    /// Where group `index`'s start and end are in the captures' slots.
    pub fn group_slot(&self, index: usize) -> Option<usize> {
        self.meta.group_info().slot(PatternID::ZERO, index)
    }

    /// The index of the group called `name`.
    pub fn group_index(&self, name: &str) -> Option<usize> {
        self.names.iter().find(|(n, _)| **n == *name).map(|&(_, i)| i)
    }

    pub fn cache(&self) -> MatchCache {
        MatchCache {
            meta: self.meta.create_cache(),
            onepass: self.onepass.as_ref().map(onepass::DFA::create_cache),
            caps: match &self.onepass {
                Some(o) => o.create_captures(),
                None => self.meta.create_captures(),
            },
        }
    }

    /// Whether the pattern matches anywhere in `name`.
    pub fn is_match(&self, name: &str, cache: &mut MatchCache) -> bool {
        let input = Input::new(name).earliest(true);
        if let Some(dfa) = &self.dfa
            && let Ok(found) = dfa.try_search_fwd(&input)
        {
            return found.is_some();
        }
        self.meta.search_half_with(&mut cache.meta, &input).is_some()
    }

    /// Whether the pattern matches the presentation form of the lower-cased wire name
    /// `wire`, fed to the dense DFA byte by byte as it is written (RFC 1035 5.1 escapes),
    /// with no string built; `None` when this pattern has no dense DFA.
    pub fn is_match_wire(&self, wire: &[u8]) -> Option<bool> {
        let dfa = self.dfa.as_ref()?;
        let sid = dfa.start_state(&start::Config::new().anchored(Anchored::No)).ok()?;
        match feed_name(dfa, sid, wire) {
            Ok(sid) => Some(dfa.is_match_state(dfa.next_eoi_state(sid))),
            Err(decided) => decided,
        }
    }

    /// Searches `name`, leaving the groups in `cache.caps`; whether it matched.
    pub fn captures(&self, name: &str, cache: &mut MatchCache) -> bool {
        if let Some(shape) = &self.shape {
            shape.captures(name.as_bytes(), &mut cache.caps);
        } else if let (Some(dfa), Some(c)) = (&self.onepass, &mut cache.onepass) {
            dfa.captures(c, Input::new(name).anchored(Anchored::Yes), &mut cache.caps);
        } else {
            self.meta
                .search_captures_with(&mut cache.meta, &Input::new(name), &mut cache.caps);
        }
        cache.caps.is_match()
    }

    /// How many capture slots a search by [`Self::shape_captures`] writes, when the
    /// pattern has a shape (that search then answers for it).
    pub fn shape_slots(&self) -> Option<usize> {
        self.shape.as_ref().map(|s| s.slots)
    }

    /// Searches `name` by the pattern's shape, leaving the groups' slots in `slots`
    /// (at least [`Self::shape_slots`] long, as [`Captures::slots`] lays them out);
    /// whether it matched. `false` also when the pattern has no shape.
    pub fn shape_captures(&self, name: &[u8], slots: &mut [Option<NonMaxUsize>]) -> bool {
        self.shape.as_ref().is_some_and(|s| s.run(name, slots))
    }

    /// Whether `is_match_wire` answers for this pattern (it has a dense DFA).
    pub fn has_dfa(&self) -> bool {
        self.dfa.is_some()
    }

    /// Which engines this pattern got (dense DFA, one-pass, shape), for tests.
    #[cfg(test)]
    pub fn engines(&self) -> (bool, bool, bool) {
        (self.dfa.is_some(), self.onepass.is_some(), self.shape.is_some())
    }
}

/// Most copies a fixed repeat of a group is unrolled into (`(-[0-9]+){3}`).
const MAX_UNROLL: u32 = 16;
/// Most steps a shape may have.
const MAX_STEPS: usize = 256;

/// A capturing search without an engine, for the patterns that can match a name in one
/// way only: the syntax tree flattened into steps walked once over the name. Each step
/// either must match where it stands or the name does not match at all, so the first
/// walk that reaches the end is the match, with the groups where any engine puts them
/// (a group inside a fixed repeat holds its last copy, as RE2's do).
struct Shape {
    steps: Vec<Step>,
    /// Slots in the captures to clear before a search (those a step sets).
    slots: usize,
}

enum Step {
    /// These bytes, here.
    Lit(Box<[u8]>),
    /// Bytes of the set, as many as there are (greedy), from `min` to `max`.
    Run { set: Box<[bool; 256]>, min: u32, max: u32 },
    /// The position goes into this slot.
    Save(usize),
    /// The end of the name (`$`).
    End,
}

impl Shape {
    /// The shape of `hir`, when it has one (see [`Shape`]); `caps` says where the
    /// groups' slots are.
    fn new(hir: &Hir, caps: &Captures) -> Option<Shape> {
        // Anchored at the start: `^` first (groups may open before it).
        let mut steps = Vec::new();
        let mut anchored = false;
        flatten(hir, caps, &mut steps, &mut anchored, &mut false)?;
        if !anchored || steps.len() > MAX_STEPS {
            return None;
        }
        // One way to match: an open-ended run is followed by a literal whose first
        // byte it cannot take, by the end, or by nothing; a run of fixed length may be
        // followed by anything.
        for (i, st) in steps.iter().enumerate() {
            let Step::Run { set, min, max } = st else { continue };
            if min == max {
                continue;
            }
            let next = steps[i + 1..].iter().find(|s| !matches!(s, Step::Save(_)));
            match next {
                None | Some(Step::End) => {}
                Some(Step::Lit(l)) if !set[usize::from(l[0])] => {}
                _ => return None,
            }
        }
        // Every slot of the pattern is written by a step (no optional group).
        let slots = caps.group_info().slot_len();
        let mut seen = vec![false; slots];
        for st in &steps {
            if let Step::Save(i) = st {
                seen[*i] = true;
            }
        }
        if seen.iter().skip(2).any(|s| !s) {
            return None;
        }
        Some(Shape { steps, slots })
    }

    /// Searches `name` (anchored at its start), leaving the groups in `caps`.
    fn captures(&self, name: &[u8], caps: &mut Captures) {
        caps.set_pattern(None);
        if self.run(name, caps.slots_mut()) {
            caps.set_pattern(Some(PatternID::ZERO));
        }
    }

    /// Searches `name` (anchored at its start), leaving the groups' slots in `slots`
    /// (cleared first); whether it matched.
    fn run(&self, name: &[u8], slots: &mut [Option<NonMaxUsize>]) -> bool {
        let Some(slots) = slots.get_mut(..self.slots) else {
            return false;
        };
        slots.fill(None);
        let mut at = 0usize;
        for st in &self.steps {
            match st {
                Step::Lit(l) => {
                    if !name[at..].starts_with(l) {
                        return false;
                    }
                    at += l.len();
                }
                Step::Run { set, min, max } => {
                    let rest = &name[at..];
                    let limit = rest.len().min(*max as usize);
                    let n = rest[..limit]
                        .iter()
                        .position(|&b| !set[usize::from(b)])
                        .unwrap_or(limit);
                    if n < *min as usize {
                        return false;
                    }
                    at += n;
                }
                Step::Save(i) => slots[*i] = NonMaxUsize::new(at),
                Step::End => {
                    if at != name.len() {
                        return false;
                    }
                }
            }
        }
        slots[0] = NonMaxUsize::new(0);
        slots[1] = NonMaxUsize::new(at);
        true
    }
}

/// Appends the steps of `hir`; `None` when it is not of a shape (see [`Shape`]).
/// `anchored`: a `^` was seen; `started`: a step that reads a byte was.
fn flatten(hir: &Hir, caps: &Captures, out: &mut Vec<Step>, anchored: &mut bool, started: &mut bool) -> Option<()> {
    if out.len() > MAX_STEPS {
        return None;
    }
    match hir.kind() {
        HirKind::Empty => {}
        HirKind::Literal(l) => {
            if l.0.is_empty() {
                return Some(());
            }
            if !*anchored {
                return None;
            }
            *started = true;
            match out.last_mut() {
                Some(Step::Lit(prev)) => {
                    let mut joined = prev.to_vec();
                    joined.extend_from_slice(&l.0);
                    *prev = joined.into_boxed_slice();
                }
                _ => out.push(Step::Lit(l.0.clone())),
            }
        }
        HirKind::Class(c) => {
            if !*anchored {
                return None;
            }
            *started = true;
            out.push(Step::Run {
                set: byte_set(c)?,
                min: 1,
                max: 1,
            });
        }
        HirKind::Look(Look::Start) => {
            // `^` is the first thing read, or the pattern is not anchored.
            if *started {
                return None;
            }
            *anchored = true;
        }
        HirKind::Look(Look::End) => {
            if !*anchored {
                return None;
            }
            out.push(Step::End);
        }
        HirKind::Look(_) => return None,
        HirKind::Repetition(r) => {
            if !*anchored || !r.greedy {
                return None;
            }
            let single = match r.sub.kind() {
                HirKind::Class(c) => Some(byte_set(c)?),
                HirKind::Literal(l) if l.0.len() == 1 => {
                    let mut set = Box::new([false; 256]);
                    set[usize::from(l.0[0])] = true;
                    Some(set)
                }
                _ => None,
            };
            match single {
                Some(set) => {
                    *started = true;
                    out.push(Step::Run {
                        set,
                        min: r.min,
                        max: r.max.unwrap_or(u32::MAX),
                    });
                }
                // A fixed repeat of something larger: its copies one after another.
                None if r.max == Some(r.min) && r.min <= MAX_UNROLL => {
                    for _ in 0..r.min {
                        flatten(&r.sub, caps, out, anchored, started)?;
                    }
                }
                None => return None,
            }
        }
        HirKind::Capture(c) => {
            let gi = caps.group_info();
            let start = gi.slot(PatternID::ZERO, c.index as usize)?;
            out.push(Step::Save(start));
            flatten(&c.sub, caps, out, anchored, started)?;
            out.push(Step::Save(start + 1));
        }
        HirKind::Concat(parts) => {
            for p in parts {
                flatten(p, caps, out, anchored, started)?;
            }
        }
        HirKind::Alternation(_) => return None,
    }
    Some(())
}

/// The bytes a class takes (a Unicode class only when it is all ASCII: names are).
fn byte_set(c: &Class) -> Option<Box<[bool; 256]>> {
    let bytes = match c {
        Class::Bytes(b) => b.clone(),
        Class::Unicode(u) => u.to_byte_class()?,
    };
    let mut set = Box::new([false; 256]);
    for r in bytes.ranges() {
        for b in r.start()..=r.end() {
            set[usize::from(b)] = true;
        }
    }
    Some(set)
}

/// Feeds the presentation form of `wire` to `dfa` from `sid`: `Ok` with the state
/// after the last byte, or `Err` as soon as the answer is known (`Some(true)`: a match
/// state, `Some(false)`: the dead state, `None`: a quit state, which the caller searches
/// another way).
fn feed_name(dfa: &dense::DFA<Vec<u32>>, mut sid: StateID, wire: &[u8]) -> Result<StateID, Option<bool>> {
    let mut feed = |b: u8| -> Result<(), Option<bool>> {
        sid = dfa.next_state(sid, b);
        if dfa.is_special_state(sid) {
            // Match states come one byte late: a match ended before this byte.
            if dfa.is_match_state(sid) {
                return Err(Some(true));
            }
            if dfa.is_dead_state(sid) {
                return Err(Some(false));
            }
            if dfa.is_quit_state(sid) {
                return Err(None);
            }
        }
        Ok(())
    };
    let mut at = 0;
    while at < wire.len() && wire[at] != 0 {
        let len = usize::from(wire[at]);
        for &b in wire.get(at + 1..at + 1 + len).ok_or(None)? {
            match b {
                b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                    feed(b'\\')?;
                    feed(b)?;
                }
                0x21..=0x7E => feed(b)?,
                _ => {
                    feed(b'\\')?;
                    feed(b'0' + b / 100)?;
                    feed(b'0' + b / 10 % 10)?;
                    feed(b'0' + b % 10)?;
                }
            }
        }
        feed(b'.')?;
        at += 1 + len;
    }
    if at == 0 {
        // The root: ".".
        feed(b'.')?;
    }
    Ok(sid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every engine a pattern gets says what the meta regex says, on plain names, names
    /// with escapes, and the root.
    #[test]
    fn engines_agree_with_the_meta_regex() {
        let patterns = [
            // AKS's default Corefile.
            r"^([^.]+[.]){4,}internal[.]cloudapp[.]net[.]$",
            r"^ip-(?P<a>[0-9]+)-(?P<b>[0-9]+)-(?P<c>[0-9]+)-(?P<d>[0-9]+)[.]synth[.]test[.]$",
            r"(^|[.])ip-10-(?P<b>[0-9]*)-(?P<c>[0-9]*)-(?P<d>[0-9]*)[.]example[.]$",
            r"example[.]net[.]",
            r"\\046",
            r"^\.$",
            r"a\\\.b",
            r"\bweb\b",
            "$^",
            r"\pL+",
            // Shapes: a group repeated a fixed number of times, fixed-width runs one
            // after another, bounded runs, case folding, no `$`, and patterns that look
            // alike but can match in more than one way (the engines answer those).
            r"^ip-(?P<ip>[0-9]+(-[0-9]+){3})[.]expr[.]test[.]$",
            r"^ip0a(?P<b>[a-f0-9]{2})(?P<c>[a-f0-9]{2})[.]example[.]$",
            r"^(?P<d>[0-9]{1,3})[.](?P<c>[0-9]*)[.]",
            r"^(?i)IP-([0-9]+)-",
            r"^([a-z0-9-]+)-([0-9]+)[.]",
            r"^([^.]+)[.]([^.]*)[.]?",
            r"^(x)?ip-",
            r"^[0-9]+",
        ];
        let names: [&[u8]; 13] = [
            b"\x03web\x06team-a\x03svc\x07cluster\x05local\x08internal\x08cloudapp\x03net\x00",
            b"\x0bip-10-1-2-3\x05synth\x04test\x00",
            b"\x01x\x0dip-10-95-12-8\x07example\x00",
            b"\x07example\x03net\x00",
            b"\x03a.b\x02c\xff\x01@\x00",
            b"\x00",
            b"\x03web\x00",
            b"\x0bip-10-1-2-3\x04expr\x04test\x00",
            b"\x0aip-10-1-2-\x04expr\x04test\x00",
            b"\x0cip-10-1-2-3-\x05synth\x04test\x00",
            b"\x08ip0a7b7b\x07example\x00",
            b"\x0bip-1234-5-x\x03\x31\x32\x33\x00",
            b"\x0311x\x03222\x00",
        ];
        for p in patterns {
            let m = Matcher::new(p, 1 << 20).unwrap();
            let mut cache = m.cache();
            for wire in names {
                let mut name = String::new();
                crate::expr::write_name(wire, &mut name);
                let want = m.meta.is_match(&name);
                assert_eq!(m.is_match(&name, &mut cache), want, "{p} on {name}");
                if let Some(got) = m.is_match_wire(wire) {
                    assert_eq!(got, want, "wire: {p} on {name}");
                }
                let mut meta_caps = m.meta.create_captures();
                m.meta.captures(name.as_str(), &mut meta_caps);
                assert_eq!(m.captures(&name, &mut cache), want, "captures: {p} on {name}");
                for g in 0..meta_caps.group_len() {
                    assert_eq!(
                        cache.caps.get_group(g),
                        meta_caps.get_group(g),
                        "{p} on {name}, group {g}"
                    );
                }
            }
        }
        // What the bench's patterns get.
        let aks = Matcher::new(patterns[0], 1 << 20).unwrap();
        assert!(aks.engines().0);
        let synth = Matcher::new(patterns[1], 1 << 20).unwrap();
        assert_eq!(synth.engines(), (true, true, true));
        // Which patterns the shape takes, and which it leaves to the engines.
        let shaped = |p: &str| Matcher::new(p, 1 << 20).unwrap().engines().2;
        assert!(shaped(patterns[10]), "fixed repeat of a group");
        assert!(shaped(patterns[11]), "fixed-width runs");
        assert!(shaped(patterns[12]), "bounded runs, no $");
        assert!(shaped(patterns[13]), "case folding");
        assert!(shaped(patterns[17]), "a run at the end");
        for p in [
            patterns[0],
            patterns[2],
            patterns[3],
            patterns[14],
            patterns[15],
            patterns[16],
        ] {
            assert!(!shaped(p), "{p}: more than one way to match, or not anchored");
        }
    }
}
