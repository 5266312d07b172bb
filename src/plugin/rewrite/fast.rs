//! The fast path of `exact` and `suffix` name rules: matched and applied on the wire
//! form of the name, with no text in between (issue 12: a rewritten cluster name must
//! cost about what a direct answer costs).
//!
//! CoreDNS matches names as lower-cased presentation text, and a `suffix` need not
//! start at a label (`suffix a.example. ...` matches `team-a.example.`). On the wire
//! that is: the name's last labels are the suffix's whole labels, and the label before
//! them ends with the suffix's first piece. The two agree when every label involved
//! is plain (no byte that the text form escapes), which is checked; whatever is not
//! plain, or a rule this path does not cover, goes the text way (rules.rs), so both give
//! the same answer.

use super::rules::{Kind, Matcher, NameRule, Rule};
use super::text::plain;
use crate::dns::NameKey;
use crate::dns::wire::{self, MAX_NAME_LEN};

/// A presentation-form suffix in wire pieces: `piece` (the text before its first dot)
/// ends the label before `labels` (the rest, as wire labels ending with the root).
#[derive(Debug)]
pub struct WireSuffix {
    piece: Vec<u8>,
    labels: Vec<u8>,
    /// `piece` then `labels`: what a new name ends with, written in one copy.
    tail: Vec<u8>,
    /// How many labels `labels` holds (the root aside).
    count: usize,
    /// The length of the presentation text (`piece`, a dot, the labels' text).
    text_len: usize,
}

/// What an `exact` or `suffix` rule does, in wire form.
#[derive(Debug)]
pub enum WireRule {
    /// `exact FROM TO`: the whole names.
    Exact { from: Vec<u8>, to: Vec<u8> },
    /// `suffix FROM TO`.
    Suffix { from: WireSuffix, to: WireSuffix },
}

/// Where a name's labels start (names are at most 255 bytes: at most 128 labels).
struct Labels {
    at: [u8; 128],
    n: usize,
}

/// The label offsets of an uncompressed wire name; `None` if it is not one.
fn labels(name: &[u8]) -> Option<Labels> {
    let mut l = Labels { at: [0; 128], n: 0 };
    let mut pos = 0;
    loop {
        let len = *name.get(pos)? as usize;
        if len == 0 {
            return (pos + 1 == name.len()).then_some(l);
        }
        if len > 63 || l.n == l.at.len() {
            return None;
        }
        l.at[l.n] = pos as u8;
        l.n += 1;
        pos += 1 + len;
    }
}

/// `a == b`, without a call to the C library: its `memcmp` (the AVX-512 one) took
/// ~40 ns of a suffix rule's 16-byte compare in the bench, more than the rest of the
/// rule (perf on benches/inprocess.rs, issue 12). Names are short: eight bytes at a
/// time, then the rest.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    for (p, q) in (&mut x).zip(&mut y) {
        if u64::from_ne_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]])
            != u64::from_ne_bytes([q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7]])
        {
            return false;
        }
    }
    x.remainder().iter().zip(y.remainder()).all(|(p, q)| p == q)
}

fn label_is_plain(label: &[u8]) -> bool {
    label.iter().all(|&b| plain(b))
}

impl WireSuffix {
    /// From a normalised (lower-cased, fully qualified) text; `None` unless every
    /// character is plain or a dot and the labels after the first dot are valid.
    fn of(text: &str) -> Option<WireSuffix> {
        if !text.ends_with('.') || !text.bytes().all(|b| b == b'.' || plain(b)) {
            return None;
        }
        let dot = text.find('.')?;
        let rest = &text[dot + 1..];
        let labels = if rest.is_empty() {
            vec![0]
        } else {
            wire::name_from_str(rest)?
        };
        let piece = text.as_bytes()[..dot].to_vec();
        Some(WireSuffix {
            tail: [&piece[..], &labels[..]].concat(),
            count: self::labels(&labels).map_or(0, |l| l.n),
            text_len: text.len(),
            piece,
            labels,
        })
    }

    /// [`Self::find`] for a query's key (lower-cased), from its label offsets: the
    /// suffix's labels can only start at the label `count` from the right, so one
    /// comparison tells, with no walk over the name.
    #[inline(always)]
    fn find_key(&self, key: &NameKey) -> Result<Option<(usize, usize)>, ()> {
        let name = key.wire();
        let Some(j) = key.label_count().checked_sub(self.count).filter(|&j| j > 0) else {
            return self.unsure_text(key);
        };
        let tail = key.label_offset(j);
        if !same_bytes(&name[tail..], &self.labels) {
            return self.unsure_text(key);
        }
        let o = key.label_offset(j - 1);
        let label = &name[o + 1..tail];
        if self.piece.is_empty() {
            // The text ends with `.` and the labels, whatever the label before holds
            // (escapes only lengthen the text before that dot), and the text way puts
            // the same bytes back before `to`.
            return Ok(Some((o, label.len())));
        }
        if !label_is_plain(label) {
            return Err(());
        }
        if label.len() < self.piece.len() || !same_bytes(&label[label.len() - self.piece.len()..], &self.piece) {
            return Ok(None);
        }
        Ok(Some((o, label.len() - self.piece.len())))
    }

    /// For a name whose wire form does not end as the suffix: `Ok(None)` when its text
    /// does not either, which holds when the labels its last `text_len` text characters
    /// come from are plain (text then follows the wire byte for byte); `Err(())`
    /// otherwise: an escape there can make the text end as the suffix where the wire
    /// does not (`x\.team-a.example.` ends with `.team-a.example.`; its labels are
    /// `x.team-a` and `example`), and only the text way can tell.
    #[cold]
    fn unsure_text(&self, key: &NameKey) -> Result<Option<(usize, usize)>, ()> {
        // Every label's text is at least as long as its bytes: the labels from the
        // right whose bytes (and length bytes) cover `text_len` hold those characters.
        let mut covered = 1;
        for i in (0..key.label_count()).rev() {
            if covered >= self.text_len {
                break;
            }
            let label = key.label(i);
            if !label_is_plain(label) {
                return Err(());
            }
            covered += 1 + label.len();
        }
        Ok(None)
    }

    /// Where `name`'s text ends with this suffix: the offset of the label holding the
    /// piece and how many of its bytes come before the piece. `Ok(None)`: it does not;
    /// `Err(())`: a label involved is not plain, so only the text can tell. ASCII case
    /// aside (a reply's names keep their spelling).
    fn find(&self, name: &[u8]) -> Result<Option<(usize, usize)>, ()> {
        // The suffix's labels are the name's last bytes, on a label boundary, with a
        // label before them (the text ends with `piece.` + labels only then).
        let plain_name = || {
            labels(name).is_some_and(|l| {
                l.at[..l.n].iter().all(|&o| {
                    let o = o as usize;
                    label_is_plain(&name[o + 1..o + 1 + name[o] as usize])
                })
            })
        };
        // Not ending so on the wire: nor in text, unless an escape makes it so
        // (see `unsure_text`).
        let differs = || if plain_name() { Ok(None) } else { Err(()) };
        let Some(tail) = name.len().checked_sub(self.labels.len()) else {
            return differs();
        };
        if !name[tail..].eq_ignore_ascii_case(&self.labels) {
            return differs();
        }
        let (mut pos, mut before) = (0usize, None);
        while pos < tail {
            let len = name[pos] as usize;
            if len == 0 || len > 63 {
                return Err(());
            }
            before = Some(pos);
            pos += 1 + len;
        }
        let (true, Some(o)) = (pos == tail, before) else {
            return differs();
        };
        let label = &name[o + 1..tail];
        if !label_is_plain(label) {
            return Err(());
        }
        if label.len() < self.piece.len() || !label[label.len() - self.piece.len()..].eq_ignore_ascii_case(&self.piece)
        {
            return Ok(None);
        }
        Ok(Some((o, label.len() - self.piece.len())))
    }
}

/// `name` is `suffix` or below it (whole labels), ASCII case aside.
fn at_or_below(name: &[u8], suffix: &[u8]) -> bool {
    labels(name).is_some_and(|l| {
        l.at[..l.n]
            .iter()
            .map(|&o| o as usize)
            .chain(std::iter::once(name.len() - 1))
            .any(|o| name[o..].eq_ignore_ascii_case(suffix))
    })
}

impl WireRule {
    /// The wire form of a name rule, when it has one (exact and suffix rules with plain
    /// names; no explicit `answer` rules, which work on text).
    pub fn of(r: &NameRule) -> Option<WireRule> {
        if !r.answers.is_empty() {
            return None;
        }
        match &r.matcher {
            Matcher::Exact(from) => {
                // Whole names: plain text parses to wire and back unchanged.
                let is_plain = |s: &str| s.ends_with('.') && s.bytes().all(|b| b == b'.' || plain(b));
                if !is_plain(from) || !is_plain(&r.to) {
                    return None;
                }
                Some(WireRule::Exact {
                    from: wire::name_from_str(from)?,
                    to: wire::name_from_str(&r.to)?,
                })
            }
            Matcher::Suffix(from) => Some(WireRule::Suffix {
                from: WireSuffix::of(from)?,
                to: WireSuffix::of(&r.to)?,
            }),
            _ => None,
        }
    }

    /// Applies the rule to the query's name `key`, appending the new name to `out` if
    /// given: `Ok(true)`, `Ok(false)` when it does not match, `Err(())` when only the
    /// text way can tell (or the new name would be invalid: the text way fails it).
    #[inline(always)]
    pub fn apply(&self, key: &NameKey, out: Option<&mut Vec<u8>>) -> Result<bool, ()> {
        let name = key.wire();
        match self {
            WireRule::Exact { from, to } => {
                // Text equal to a plain name has no escape: the wire bytes are equal.
                if !same_bytes(name, from) {
                    return Ok(false);
                }
                if let Some(out) = out {
                    out.extend_from_slice(to);
                }
                Ok(true)
            }
            WireRule::Suffix { from, to } => {
                let Some((o, keep)) = from.find_key(key)? else {
                    return Ok(false);
                };
                // The labels before, the kept start of the cut label joined to the first
                // piece of `to`, then the labels of `to`.
                let joined = keep + to.piece.len();
                if joined == 0 || joined > 63 || o + 1 + joined + to.labels.len() > MAX_NAME_LEN {
                    // An empty label (`web.` + `.svc.`), one too long, a name too long:
                    // the text way decides (the rule fails the query).
                    return Err(());
                }
                if let Some(out) = out {
                    // Two copies: the name up to the kept bytes of the cut label (its
                    // length byte then set to the joined label's), and `to`'s piece and
                    // labels kept together. Five pieces cost ~140 instructions of a
                    // rewritten answer's ~4,200 (issue 12); these two, ~50.
                    let at = out.len() + o;
                    out.extend_from_slice(&name[..o + 1 + keep]);
                    out[at] = joined as u8;
                    out.extend_from_slice(&to.tail);
                }
                Ok(true)
            }
        }
    }

    /// Whether `answer auto` would change `name` (a name of the reply that does not come
    /// from the question), ASCII case aside; `true` when unsure.
    pub fn reverts(&self, name: &[u8]) -> bool {
        match self {
            WireRule::Exact { to, .. } => {
                at_or_below(name, to)
                    || labels(name).is_none_or(|l| {
                        (0..l.n).any(|i| {
                            let o = l.at[i] as usize;
                            !label_is_plain(&name[o + 1..o + 1 + name[o] as usize])
                        })
                    })
            }
            WireRule::Suffix { to, .. } => !matches!(to.find(name), Ok(None)),
        }
    }
}

/// What the fast path says about a query.
pub enum Fast {
    /// No rule applies: the query goes on unchanged, nothing to do on the reply.
    Untouched,
    /// Rule `rule` (an exact or suffix name rule that stops the rules) applies.
    Renamed { rule: usize },
    /// Only the text way can tell.
    Unsure,
}

/// Runs the rules on `qname` (the query's key) as long as each is an exact or
/// suffix name rule with a wire form; the first that applies must stop the rules. The
/// new name is appended to `out` if given (and something may be appended on `Unsure`).
#[inline(always)]
pub fn run(rules: &[Rule], qname: &NameKey, mut out: Option<&mut Vec<u8>>) -> Fast {
    for (i, rule) in rules.iter().enumerate() {
        let Kind::Name(r) = &rule.kind else {
            return Fast::Unsure;
        };
        let Some(w) = &r.wire else {
            return Fast::Unsure;
        };
        let last = rule.stops() || i + 1 == rules.len();
        match w.apply(qname, if last { out.as_deref_mut() } else { None }) {
            Ok(false) => continue,
            Ok(true) if last => return Fast::Renamed { rule: i },
            _ => return Fast::Unsure,
        }
    }
    Fast::Untouched
}
