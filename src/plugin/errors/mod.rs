//! `errors`: logs the error behind every failed query, consolidates the errors that
//! match a pattern into one line per period, and logs the backtrace of a caught panic
//! (README.md beside this file).
//!
//! ```text
//!   a later plugin fails a query ──▶ on_response: the error's text, in the worker's
//!        │                           buffer, against each `consolidate` pattern in order
//!        ├─ no pattern matches ──▶ logged at once, ERROR
//!        └─ pattern i matches ──▶ counted (count 0 → 1: the period starts, the
//!                                  consolidation thread is told its deadline)
//!   consolidation thread: at each deadline, `N errors like 'RE' occurred in last P`
//!   at the pattern's level; at stop, the same for what is pending
//! ```
//!
//! Bounds: a pattern is at most 10,000 characters (CoreDNS's `maxRegexpLen`) and
//! compiles into at most 1 MiB; it is matched in time linear in the error's text. The
//! thread takes the lock shared with the workers only to read or set deadlines; a
//! worker takes it only at the first error of a period.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::Level;
use parking_lot::{Condvar, Mutex};
use regex_automata::Input;
use regex_automata::meta::{self, Regex};

use crate::chain::{ChainError, Handler, Query, Step, backtrace};
use crate::config::{ConfigError, Directive, parse_duration};
use crate::dns::rtype;
use crate::plugin::once;
use crate::setup::{Lifecycle, Plugin, SetupCtx};

/// The directive name, and the prefix of its errors.
const NAME: &str = "errors";

/// CoreDNS's `maxRegexpLen`.
const MAX_REGEXP_LEN: usize = 10_000;
/// What a pattern may compile into.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One `consolidate DURATION REGEXP [LEVEL] [show_first]`.
struct Pattern {
    period: Duration,
    /// The pattern as written: the summary line quotes it.
    source: String,
    regex: Regex,
    level: Level,
    /// Log the first error of a period at once, the summary only if more followed.
    show_first: bool,
}

/// The state the workers and the consolidation thread share.
struct Consolidation {
    patterns: Box<[Pattern]>,
    /// Errors counted in the current period, per pattern.
    counts: Box<[AtomicU64]>,
    /// When each pattern's period ends (`None`: no period running).
    deadlines: Mutex<Vec<Option<Instant>>>,
    wake: Condvar,
    stopping: AtomicBool,
}

/// A worker's buffer for an error's text, and its regex caches (one per pattern): so
/// that matching takes no shared lock and allocates nothing once warm.
struct Scratch {
    text: String,
    caches: Vec<meta::Cache>,
}

/// The plugin.
pub struct Errors {
    stacktrace: bool,
    shared: Arc<Consolidation>,
    scratch: Box<[Mutex<Scratch>]>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// `errors [stdout] [{ stacktrace; consolidate DURATION REGEXP [LEVEL] [show_first] }]`.
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let (stacktrace, patterns) = parse(dirs)?;
    Ok(Plugin::both(Arc::new(Errors::new(stacktrace, patterns, ctx.workers))))
}

fn parse(dirs: &[&Directive]) -> Result<(bool, Vec<Pattern>), ConfigError> {
    let d = once(NAME, dirs)?;
    match d.args.as_slice() {
        [] => {}
        // setup.go: the one log destination there is.
        [a] if a.text == "stdout" => {}
        [a] => return Err(ConfigError::at(&a.loc, format!("{NAME}: invalid log file: {}", a.text))),
        _ => return Err(d.arg_err(NAME)),
    }
    let mut stacktrace = false;
    let mut patterns = Vec::new();
    for opt in d.options() {
        match opt.name.as_str() {
            "stacktrace" => {
                opt.expect_args(NAME, 0, 0)?;
                stacktrace = true;
            }
            "consolidate" => patterns.push(consolidate(opt)?),
            other => return Err(opt.err(NAME, format!("unknown property '{other}'"))),
        }
    }
    Ok((stacktrace, patterns))
}

/// `consolidate DURATION REGEXP [LEVEL] [show_first]`, checked in setup.go's order.
fn consolidate(opt: &Directive) -> Result<Pattern, ConfigError> {
    opt.expect_args(NAME, 2, 4)?;
    opt.expect_no_block(NAME)?;
    let err = |msg: String| opt.err(NAME, msg);
    let period_text = opt.args[0].as_str();
    let period = parse_duration(period_text).ok_or_else(|| {
        // Go's time.ParseDuration's words.
        if !period_text.is_empty() && period_text.bytes().all(|b| b.is_ascii_digit() || b == b'.') && period_text != "0"
        {
            err(format!("time: missing unit in duration \"{period_text}\""))
        } else {
            err(format!("time: invalid duration \"{period_text}\""))
        }
    })?;
    let source = opt.args[1].as_str();
    if source.len() > MAX_REGEXP_LEN {
        return Err(err(format!(
            "regex pattern too long: {} > {MAX_REGEXP_LEN}",
            source.len()
        )));
    }
    let regex = Regex::builder()
        .configure(
            Regex::config()
                .nfa_size_limit(Some(REGEX_SIZE_LIMIT))
                .onepass_size_limit(Some(REGEX_SIZE_LIMIT))
                .dfa_size_limit(Some(REGEX_SIZE_LIMIT)),
        )
        .build(source)
        .map_err(|_| err(format!("error parsing regexp: `{source}`")))?;
    let mut level = None;
    let mut show_first = false;
    for a in &opt.args[2..] {
        let l = match a.as_str() {
            "warning" => Level::Warn,
            "error" => Level::Error,
            "info" => Level::Info,
            "debug" => Level::Debug,
            "show_first" => {
                show_first = true;
                continue;
            }
            other => return Err(err(format!("unknown option in consolidate: {other}"))),
        };
        if level.is_some() {
            return Err(err("multiple log levels specified in consolidate".into()));
        }
        if show_first {
            return Err(err("log level must come before show_first in consolidate".into()));
        }
        level = Some(l);
    }
    Ok(Pattern {
        period,
        source: source.to_string(),
        regex,
        level: level.unwrap_or(Level::Error),
        show_first,
    })
}

impl Errors {
    fn new(stacktrace: bool, patterns: Vec<Pattern>, workers: usize) -> Errors {
        let n = patterns.len();
        let scratch = (0..workers.max(1))
            .map(|_| {
                Mutex::new(Scratch {
                    text: String::new(),
                    caches: patterns.iter().map(|p| p.regex.create_cache()).collect(),
                })
            })
            .collect();
        Errors {
            stacktrace,
            shared: Arc::new(Consolidation {
                patterns: patterns.into_boxed_slice(),
                counts: (0..n).map(|_| AtomicU64::new(0)).collect(),
                deadlines: Mutex::new(vec![None; n]),
                wake: Condvar::new(),
                stopping: AtomicBool::new(false),
            }),
            scratch,
            thread: Mutex::new(None),
        }
    }

    /// The pattern `text` is consolidated under, if any (the first that matches,
    /// README "Syntax"), using worker `worker`'s caches.
    fn matching(&self, worker: usize, err: &ChainError) -> Option<usize> {
        let patterns = &self.shared.patterns;
        if patterns.is_empty() {
            return None;
        }
        let mut s = self.scratch[worker % self.scratch.len()].lock();
        let Scratch { text, caches } = &mut *s;
        text.clear();
        let _ = write!(text, "{err}");
        patterns.iter().zip(caches.iter_mut()).position(|(p, cache)| {
            p.regex
                .search_with(cache, &Input::new(text.as_str()).earliest(true))
                .is_some()
        })
    }
}

impl Consolidation {
    /// Counts an error of pattern `i`; `true` when it is consolidated (not to be logged
    /// now). errors.go consolidateError: the first of a period starts its timer, and is
    /// logged at once with `show_first`.
    fn count(&self, i: usize, now: Instant) -> bool {
        if self.stopping.load(Ordering::Relaxed) {
            return false;
        }
        if self.counts[i].fetch_add(1, Ordering::AcqRel) == 0 {
            let mut deadlines = self.deadlines.lock();
            if deadlines[i].is_none() {
                deadlines[i] = Some(now + self.patterns[i].period);
            }
            self.wake.notify_one();
            return !self.patterns[i].show_first;
        }
        true
    }

    /// Logs the summaries of the periods ended by `now` (all of them when `flush`);
    /// returns the next deadline. errors.go logPattern: nothing for no error, nothing
    /// for the one error `show_first` already logged.
    fn expire(&self, now: Instant, flush: bool) -> Option<Instant> {
        let mut ended: Vec<(usize, u64)> = Vec::new();
        let mut next: Option<Instant> = None;
        {
            let mut deadlines = self.deadlines.lock();
            for (i, d) in deadlines.iter_mut().enumerate() {
                let Some(at) = *d else { continue };
                if at > now && !flush {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    continue;
                }
                *d = None;
                ended.push((i, self.counts[i].swap(0, Ordering::AcqRel)));
            }
        }
        // Logged without the lock, which a worker may be waiting for.
        for (i, n) in ended {
            let p = &self.patterns[i];
            if let Some(line) = summary(p, n) {
                log::log!(target: "plugin/errors", p.level, "{line}");
            }
        }
        next
    }

    /// The consolidation thread: sleeps until the earliest deadline, or until a worker
    /// starts a period (or `stop`) wakes it.
    fn run(&self) {
        loop {
            {
                let mut deadlines = self.deadlines.lock();
                if self.stopping.load(Ordering::Acquire) {
                    return;
                }
                match deadlines.iter().flatten().min().copied() {
                    Some(at) if at > Instant::now() => {
                        self.wake.wait_until(&mut deadlines, at);
                    }
                    Some(_) => {}
                    None => self.wake.wait(&mut deadlines),
                }
                if self.stopping.load(Ordering::Acquire) {
                    return;
                }
            }
            self.expire(Instant::now(), false);
        }
    }
}

/// The line a period of pattern `p` that counted `n` errors ends with, if any.
fn summary(p: &Pattern, n: u64) -> Option<String> {
    (n > 1 || (n == 1 && !p.show_first)).then(|| {
        format!(
            "{n} errors like '{}' occurred in last {}",
            p.source,
            go_duration(p.period)
        )
    })
}

/// A duration as Go's `time.Duration.String` writes it (`30s`, `5m0s`, `1h0m0s`,
/// `1.5s`, `250ms`): what CoreDNS's summary line shows.
fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let frac = |v: u128, unit: u128, digits: usize| -> String {
        let whole = v / unit;
        let rest = v % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let f = format!("{rest:0digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000, 6));
    }
    let secs = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let s = frac(s * 1_000_000_000 + sub, 1_000_000_000, 9);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// The query as a hex dump in CoreDNS's `debug:` format (plugin/debug pcap.go), which
/// `text2pcap -i 17 -u 53,53` turns back into packets.
fn hexdump(msg: &[u8]) -> String {
    let mut out = String::with_capacity(msg.len() * 3 + msg.len() / 16 * 15 + 16);
    for (i, b) in msg.iter().enumerate() {
        if i % 16 == 0 {
            if i > 0 {
                out.push('\n');
            }
            let _ = write!(out, "debug: {i:06x}");
        }
        let _ = write!(out, " {b:02x}");
    }
    if !msg.is_empty() {
        out.push('\n');
    }
    let _ = write!(out, "debug: {:06x}", msg.len());
    out
}

impl Handler for Errors {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(&self, _: &mut Query<'_, '_>) -> Step {
        if self.stacktrace {
            backtrace::want();
        }
        Step::Next
    }

    fn wants_response(&self) -> bool {
        true
    }

    /// `[ERROR] plugin/errors: 2 foo.cluster.local. A: plugin/kubernetes: no next plugin found`
    fn on_response(&self, q: &mut Query<'_, '_>) {
        let Some(err) = &q.error else {
            return;
        };
        let mut level = Level::Error;
        if let Some(i) = self.matching(q.worker.id, err) {
            if self.shared.count(i, q.worker.now) {
                return;
            }
            level = self.shared.patterns[i].level;
        }
        let (rcode, qname, qtype) = (q.resp.rcode().0, &q.req.qname, rtype::name(q.req.qtype));
        match (self.stacktrace, err) {
            (true, ChainError::Panic(_)) => {
                let bt = backtrace::take().map_or_else(String::new, |b| format!("\n{b}"));
                log::log!(target: "plugin/errors", level, "{rcode} {qname} {qtype}: {err}{bt}");
            }
            _ => log::log!(target: "plugin/errors", level, "{rcode} {qname} {qtype}: {err}"),
        }
        // `debug` (which turns on DEBUG lines): the failing query in full, as CoreDNS's
        // plugins dump messages with debug.Hexdump.
        if log::log_enabled!(target: "plugin/errors", Level::Debug) {
            log::debug!(
                target: "plugin/errors",
                "{rcode} {qname} {qtype}: the query\n{}",
                hexdump(q.req.raw)
            );
        }
    }
}

impl Lifecycle for Errors {
    /// Starts the consolidation thread, when there are patterns.
    fn start(&self) {
        if self.shared.patterns.is_empty() {
            return;
        }
        let mut thread = self.thread.lock();
        if thread.is_some() {
            return;
        }
        self.shared.stopping.store(false, Ordering::Release);
        let shared = Arc::clone(&self.shared);
        match std::thread::Builder::new()
            .name("errors-consolidate".into())
            .spawn(move || shared.run())
        {
            Ok(t) => *thread = Some(t),
            Err(e) => log::error!(target: "plugin/errors", "cannot start the consolidation thread: {e}"),
        }
    }

    /// Stops the thread and logs what the running periods counted (errors.go stop).
    fn stop(&self) {
        {
            let _deadlines = self.shared.deadlines.lock();
            self.shared.stopping.store(true, Ordering::Release);
            self.shared.wake.notify_all();
        }
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        self.shared.expire(Instant::now(), true);
    }
}

#[cfg(test)]
mod tests;
