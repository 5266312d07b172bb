//! `header`: sets or clears the AA, RA and RD flags of the query the later plugins see
//! and of the reply the client gets, as CoreDNS's plugin of that name does (README.md
//! beside this file).
//!
//! ```text
//!   query rules change the flags? ──no──▶ Next (nothing copied)
//!        │ yes
//!        ▼ the client's message copied into WorkerCtx::rewritten, its flag word
//!          patched: Step::Rewritten (the later plugins, forward's upstream query and
//!          the reply's RD, see the new flags)
//!   later plugins answer
//!        │
//!        ▼ on_response: the response rules patch the finished reply's flag word
//! ```
//!
//! The rules of one selector fold into two masks at setup (the last rule naming a flag
//! wins, CoreDNS README "Syntax"), so applying them is two bit operations.

use crate::chain::{Handler, Query, Step};
use crate::config::{ConfigError, Directive};
use crate::dns::{Flags, HeaderMut, flag};
use crate::plugin::once;
use crate::setup::{Plugin, SetupCtx};

/// The directive name, and the prefix of its errors.
const NAME: &str = "header";

/// What the rules of one selector do to a flag word: bits to set, then bits to clear.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Rules {
    set: u16,
    clear: u16,
    /// Whether any rule was given (CoreDNS's `len(rules) > 0`).
    any: bool,
}

impl Rules {
    /// Adds one rule after those already folded in: it overrides them for its flag.
    fn push(&mut self, bit: u16, on: bool) {
        if on {
            self.set |= bit;
            self.clear &= !bit;
        } else {
            self.clear |= bit;
            self.set &= !bit;
        }
        self.any = true;
    }

    fn apply(self, f: Flags) -> Flags {
        Flags((f.0 | self.set) & !self.clear)
    }
}

/// The plugin.
#[derive(Debug)]
pub struct Header {
    query: Rules,
    response: Rules,
}

/// `header { query|response set|clear FLAG... }`, once per server block.
pub fn setup(dirs: &[&Directive], _: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    Ok(Plugin::handler(parse(dirs)?))
}

fn parse(dirs: &[&Directive]) -> Result<Header, ConfigError> {
    // CoreDNS reads the first `header` of a block that has rules and ignores the
    // rest; a second one here is an error rather than silently dropped.
    let d = once(NAME, dirs)?;
    // CoreDNS's `header foo { ... }` skips `foo` by accident of its parser; an argument
    // means nothing here, so it is refused.
    d.expect_args(NAME, 0, 0)?;
    let mut h = Header {
        query: Rules::default(),
        response: Rules::default(),
    };
    for line in d.options() {
        // setup.go: the selector is lower-cased.
        let selector = line.name.text.to_ascii_lowercase();
        let rules = match selector.as_str() {
            "query" => &mut h.query,
            "response" => &mut h.response,
            _ => {
                return Err(line.err(
                    NAME,
                    format!("setting up rule: invalid selector={selector} should be query or response"),
                ));
            }
        };
        // header.go newRules: no action, then no flag, then an unknown action, then
        // an unknown flag, in that order (setup_test.go: `query foo` is a missing flag).
        let Some((action, flags)) = line.args.split_first() else {
            return Err(line.err(NAME, "setting up rule: no flag action provided"));
        };
        if flags.is_empty() {
            return Err(line.err(
                NAME,
                "setting up rule: invalid length for flags, at least one should be provided",
            ));
        }
        let action = action.text.to_ascii_lowercase();
        let on = match action.as_str() {
            "set" => true,
            "clear" => false,
            _ => {
                return Err(line.err(
                    NAME,
                    format!("setting up rule: unknown flag action={action}, should be set or clear"),
                ));
            }
        };
        for f in flags {
            let name = f.text.to_ascii_lowercase();
            let bit = match name.as_str() {
                "aa" => flag::AA,
                "ra" => flag::RA,
                "rd" => flag::RD,
                _ => {
                    return Err(ConfigError::at(
                        &f.loc,
                        format!("{NAME}: setting up rule: unknown/unsupported flag={name}"),
                    ));
                }
            };
            rules.push(bit, on);
        }
    }
    if !h.query.any && !h.response.any {
        // setup.go: a block without rules is `c.ArgErr()`.
        return Err(d.arg_err(NAME));
    }
    Ok(h)
}

impl Handler for Header {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Changes the query's flags for the later plugins when a rule changes them. The
    /// client's message is copied whole with only its flag word patched (no
    /// allocation once the worker's buffer has grown to the largest query).
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        let flags = self.query.apply(q.req.flags);
        if flags == q.req.flags {
            return Step::Next;
        }
        let buf = &mut q.worker.rewritten;
        buf.clear();
        buf.extend_from_slice(q.req.raw);
        if let Some(mut h) = HeaderMut::of(buf) {
            h.set_flags(flags);
        }
        Step::Rewritten
    }

    fn rewrites(&self) -> bool {
        self.query.any
    }

    fn wants_response(&self) -> bool {
        self.response.any
    }

    /// Applies the response rules to a reply a later plugin wrote. A failure reply the
    /// server wrote (`answered_by` empty) is left alone: in CoreDNS the server writes it
    /// with the client's own writer, outside the one this plugin wraps.
    fn on_response(&self, q: &mut Query<'_, '_>) {
        if !self.response.any || q.answered_by.is_empty() {
            return;
        }
        let flags = self.response.apply(q.resp.flags());
        for bit in [flag::AA, flag::RA, flag::RD] {
            q.resp.set_flag(bit, flags.has(bit));
        }
    }
}

#[cfg(test)]
mod tests;
