//! A `match` regex, compiled for the question each query asks of it.
//!
//! ```text
//!   does it match?  ──▶ dense DFA (built at setup when it fits in DFA_SIZE_LIMIT):
//!                        one table lookup per byte, no cache, stops at the first match
//!                   └─▶ otherwise the meta regex (lazy DFA, per-worker cache)
//!   where are the captures? ──▶ one-pass DFA (built at setup for a pattern anchored
//!                        at its start that is one-pass): one pass, no second search
//!                   └─▶ otherwise the meta regex
//! ```
//!
//! All three come from the same pattern with the same syntax options, so they agree on
//! what matches; the tests run each case through every engine a pattern gets.

use regex_automata::dfa::{Automaton, dense, onepass};
use regex_automata::meta::{self, Regex};
use regex_automata::nfa::thompson;
use regex_automata::util::captures::Captures;
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};

/// The most a dense DFA may take (built at setup, shared by every worker); a pattern
/// whose DFA is larger is searched with the meta regex instead.
pub const DFA_SIZE_LIMIT: usize = 1 << 20;

pub struct Matcher {
    meta: Regex,
    dfa: Option<dense::DFA<Vec<u32>>>,
    onepass: Option<onepass::DFA>,
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
        Ok(Matcher { meta, dfa, onepass })
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
        if let (Some(dfa), Some(c)) = (&self.onepass, &mut cache.onepass) {
            dfa.captures(c, Input::new(name).anchored(Anchored::Yes), &mut cache.caps);
        } else {
            self.meta
                .search_captures_with(&mut cache.meta, &Input::new(name), &mut cache.caps);
        }
        cache.caps.is_match()
    }

    /// Whether `is_match_wire` answers for this pattern (it has a dense DFA).
    pub fn has_dfa(&self) -> bool {
        self.dfa.is_some()
    }

    /// Which engines this pattern got (dense DFA, one-pass), for tests.
    #[cfg(test)]
    pub fn engines(&self) -> (bool, bool) {
        (self.dfa.is_some(), self.onepass.is_some())
    }
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
        ];
        let names: [&[u8]; 7] = [
            b"\x03web\x06team-a\x03svc\x07cluster\x05local\x08internal\x08cloudapp\x03net\x00",
            b"\x0bip-10-1-2-3\x05synth\x04test\x00",
            b"\x01x\x0dip-10-95-12-8\x07example\x00",
            b"\x07example\x03net\x00",
            b"\x03a.b\x02c\xff\x01@\x00",
            b"\x00",
            b"\x03web\x00",
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
        assert_eq!(synth.engines(), (true, true));
    }
}
