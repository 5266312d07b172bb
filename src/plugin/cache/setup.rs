//! `cache [TTL] [ZONES...] { options }`, validated with file and line (CoreDNS
//! `plugin/cache/setup.go`). Every number CoreDNS takes is taken the same way; what
//! CoreDNS would silently ignore (extra arguments, an unknown property) is an error.

use std::time::Duration;

use crate::config::{ConfigError, Directive, Token, parse_duration, zone_args};
use crate::dns::Zone;
use crate::setup::SetupCtx;

/// The directive name, and the prefix of its errors.
pub const NAME: &str = "cache";
/// CoreDNS's `dnsutil.MaximumDefaulTTL`: the success cache's maximum TTL, and the
/// ceiling of a reply's minimal TTL.
pub const MAX_TTL: u32 = 3600;
/// The denial cache's maximum TTL (half the success one, as CoreDNS).
pub const MAX_DENIAL_TTL: u32 = MAX_TTL / 2;
/// CoreDNS's `dnsutil.MinimalDefaultTTL`: the minimum TTL of both caches, and the TTL
/// of a reply without records.
pub const MIN_TTL: u32 = 5;
/// Entries per cache unless `success`/`denial` say otherwise.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// How long SERVFAIL replies are kept unless `servfail` says otherwise.
pub const DEFAULT_SERVFAIL_TTL: u32 = 5;
/// CoreDNS refuses to keep SERVFAIL replies longer.
const MAX_SERVFAIL: Duration = Duration::from_secs(300);
/// `serve_stale` without a duration.
const DEFAULT_STALE: Duration = Duration::from_secs(3600);
/// The longest `serve_stale` RECHECK.
const MAX_RECHECK: Duration = Duration::from_secs(300);
/// `prefetch` defaults: a gap of this long between hits restarts the count ...
const DEFAULT_PREFETCH_WINDOW: Duration = Duration::from_secs(60);
/// ... and the refresh starts when this percentage of the TTL is left.
const DEFAULT_PREFETCH_PERCENTAGE: u32 = 10;

/// The settings of one of the two caches (`success` or `denial`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Entries, as configured (the store rounds it to whole shards).
    pub capacity: usize,
    /// Seconds; a reply's TTL is lowered to this.
    pub max_ttl: u32,
    /// Seconds; a reply's TTL is raised to this.
    pub min_ttl: u32,
}

impl Policy {
    /// CoreDNS's `computeTTL`: raise to the minimum, then lower to the maximum (so the
    /// maximum wins when the two cross).
    pub fn clamp(&self, ttl: u32) -> u32 {
        ttl.max(self.min_ttl).min(self.max_ttl)
    }
}

/// `prefetch AMOUNT [DURATION [PERCENTAGE%]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefetch {
    /// Hits, each less than `window` after the previous one, that make an entry popular.
    pub amount: u32,
    pub window: Duration,
    /// The refresh starts once at most this percentage of the entry's TTL is left.
    pub percentage: u32,
}

/// When a stale entry is refreshed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaleMode {
    /// Answer from the stale entry at once, refresh it in the background.
    Immediate,
    /// Ask the rest of the chain first; answer from the stale entry only if that fails
    /// (RFC 8767).
    Verify,
}

/// `serve_stale [DURATION] [immediate [RESPONSE_TTL [RECHECK]] | verify [TIMEOUT [RESPONSE_TTL [RECHECK]]]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stale {
    /// How long past its expiry an entry may still be served.
    pub max_age: Duration,
    pub mode: StaleMode,
    /// `verify`'s TIMEOUT, accepted but not acted on (see README, differences).
    pub timeout: Option<Duration>,
    /// The TTL of the records of a stale answer.
    pub response_ttl: u32,
    /// After a failed refresh, no new one is tried for this long (0: every time).
    pub recheck: Duration,
}

/// Every option, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Only names at or below these are cached.
    pub zones: Vec<Zone>,
    /// The zones in presentation form joined with `,`: the `zones` metric label.
    pub zones_label: String,
    pub success: Policy,
    pub denial: Policy,
    /// Seconds SERVFAIL replies are kept in the denial cache (0: never).
    pub servfail_ttl: u32,
    pub prefetch: Option<Prefetch>,
    pub stale: Option<Stale>,
    /// Names at or below these are never put in the success cache ...
    pub disable_success: Vec<Zone>,
    /// ... or the denial cache.
    pub disable_denial: Vec<Zone>,
    /// Hits carry the TTL the entry was stored with, not what is left of it.
    pub keepttl: bool,
}

impl Options {
    /// The defaults of a `cache` line without arguments or options, for `zones`.
    fn defaults(zones: &[Zone]) -> Options {
        Options {
            zones: zones.to_vec(),
            zones_label: Zone::join(zones),
            success: Policy {
                capacity: DEFAULT_CAPACITY,
                max_ttl: MAX_TTL,
                min_ttl: MIN_TTL,
            },
            denial: Policy {
                capacity: DEFAULT_CAPACITY,
                max_ttl: MAX_DENIAL_TTL,
                min_ttl: MIN_TTL,
            },
            servfail_ttl: DEFAULT_SERVFAIL_TTL,
            prefetch: None,
            stale: None,
            disable_success: Vec::new(),
            disable_denial: Vec::new(),
            keepttl: false,
        }
    }
}

fn at(tok: &Token, msg: impl std::fmt::Display) -> ConfigError {
    ConfigError::at(&tok.loc, format!("{NAME}: {msg}"))
}

/// A whole number as Go's `strconv.Atoi` reads it (sign allowed).
fn integer(tok: &Token, what: &str) -> Result<i64, ConfigError> {
    tok.text
        .parse::<i64>()
        .map_err(|_| at(tok, format!("invalid {what} '{}'", tok.text)))
}

/// A maximum TTL in seconds: positive.
fn max_ttl(tok: &Token) -> Result<u32, ConfigError> {
    let n = integer(tok, "TTL")?;
    if n <= 0 {
        return Err(at(tok, format!("cache TTL can not be zero or negative: {n}")));
    }
    u32::try_from(n).map_err(|_| at(tok, format!("cache TTL is too large: {n}")))
}

/// A minimum TTL in seconds: zero or more.
fn min_ttl(tok: &Token) -> Result<u32, ConfigError> {
    let n = integer(tok, "min TTL")?;
    if n < 0 {
        return Err(at(tok, format!("cache min TTL can not be negative: {n}")));
    }
    u32::try_from(n).map_err(|_| at(tok, format!("cache min TTL is too large: {n}")))
}

fn duration(tok: &Token) -> Result<Duration, ConfigError> {
    parse_duration(&tok.text).ok_or_else(|| at(tok, format!("invalid duration '{}'", tok.text)))
}

/// A TTL written as a duration (`30s`) or as whole seconds (`30`).
fn ttl_value(tok: &Token) -> Result<u32, ConfigError> {
    if let Ok(n) = tok.text.parse::<u32>() {
        return Ok(n);
    }
    let d = duration(tok)?;
    u32::try_from(d.as_secs()).map_err(|_| at(tok, format!("TTL is too large: '{}'", tok.text)))
}

/// `success|denial CAPACITY [TTL [MINTTL]]`.
fn policy(opt: &Directive, p: &mut Policy) -> Result<(), ConfigError> {
    opt.expect_args(NAME, 1, 3)?;
    opt.expect_no_block(NAME)?;
    let cap = integer(&opt.args[0], "capacity")?;
    if cap < 0 {
        return Err(at(&opt.args[0], format!("capacity can not be negative: {cap}")));
    }
    p.capacity = usize::try_from(cap).unwrap_or(usize::MAX);
    if let Some(t) = opt.args.get(1) {
        p.max_ttl = max_ttl(t)?;
    }
    if let Some(t) = opt.args.get(2) {
        p.min_ttl = min_ttl(t)?;
    }
    Ok(())
}

/// `prefetch AMOUNT [DURATION [PERCENTAGE%]]`; `None` for an amount of 0 (off).
fn prefetch(opt: &Directive) -> Result<Option<Prefetch>, ConfigError> {
    opt.expect_args(NAME, 1, 3)?;
    opt.expect_no_block(NAME)?;
    let amount = integer(&opt.args[0], "prefetch amount")?;
    if amount < 0 {
        return Err(at(
            &opt.args[0],
            format!("prefetch amount should be positive: {amount}"),
        ));
    }
    let mut p = Prefetch {
        amount: u32::try_from(amount).unwrap_or(u32::MAX),
        window: DEFAULT_PREFETCH_WINDOW,
        percentage: DEFAULT_PREFETCH_PERCENTAGE,
    };
    if let Some(t) = opt.args.get(1) {
        p.window = duration(t)?;
    }
    if let Some(t) = opt.args.get(2) {
        let Some(num) = t.text.strip_suffix('%') else {
            let last = t.text.chars().last().unwrap_or(' ');
            return Err(at(
                t,
                format!("last character of percentage should be `%`, but is: '{last}'"),
            ));
        };
        let n: i64 = num
            .parse()
            .map_err(|_| at(t, format!("invalid percentage '{}'", t.text)))?;
        if !(10..=90).contains(&n) {
            return Err(at(t, format!("percentage should fall in range [10, 90]: {n}")));
        }
        p.percentage = n as u32;
    }
    Ok((p.amount > 0).then_some(p))
}

/// `serve_stale [DURATION] [immediate [RESPONSE_TTL [RECHECK]] | verify [TIMEOUT [RESPONSE_TTL [RECHECK]]]]`;
/// `None` for a duration of 0 (off).
fn serve_stale(opt: &Directive) -> Result<Option<Stale>, ConfigError> {
    opt.expect_no_block(NAME)?;
    let mut s = Stale {
        max_age: DEFAULT_STALE,
        mode: StaleMode::Immediate,
        timeout: None,
        response_ttl: 0,
        recheck: Duration::ZERO,
    };
    let args = &opt.args;
    if let Some(t) = args.first() {
        s.max_age = duration(t)?;
    }
    let mut rest = args.get(2..).unwrap_or(&[]);
    if let Some(t) = args.get(1) {
        s.mode = match t.text.to_ascii_lowercase().as_str() {
            "immediate" => StaleMode::Immediate,
            "verify" => StaleMode::Verify,
            _ => return Err(at(t, format!("invalid value for serve_stale refresh mode: {}", t.text))),
        };
    }
    if s.mode == StaleMode::Verify {
        if let Some((t, tail)) = rest.split_first() {
            let d = duration(t)?;
            if d.is_zero() {
                return Err(at(t, "serve_stale verify timeout must be greater than zero"));
            }
            s.timeout = Some(d);
            rest = tail;
        }
    }
    if rest.len() > 2 {
        return Err(opt.arg_err(NAME));
    }
    if let Some(t) = rest.first() {
        s.response_ttl = ttl_value(t)?;
    }
    if let Some(t) = rest.get(1) {
        s.recheck = duration(t)?;
        if s.recheck > MAX_RECHECK {
            return Err(at(t, "serve_stale recheck over 5 minutes is not permitted"));
        }
    }
    Ok((!s.max_age.is_zero()).then_some(s))
}

/// `servfail DURATION`: whole seconds kept, at most 5 minutes.
fn servfail(opt: &Directive) -> Result<u32, ConfigError> {
    opt.expect_args(NAME, 1, 1)?;
    opt.expect_no_block(NAME)?;
    let d = duration(&opt.args[0])?;
    if d > MAX_SERVFAIL {
        return Err(at(
            &opt.args[0],
            "caching SERVFAIL responses over 5 minutes is not permitted",
        ));
    }
    Ok(d.as_secs() as u32)
}

/// Parses the plugin's directive.
pub fn parse(d: &Directive, ctx: &SetupCtx<'_>) -> Result<Options, ConfigError> {
    let mut args = d.args.as_slice();
    let mut o = Options::defaults(ctx.zones);
    // The first argument is the TTL if it is a number, else a zone.
    if let Some(first) = args.first() {
        if first.text.parse::<i64>().is_ok() {
            let ttl = max_ttl(first)?;
            o.success.max_ttl = ttl;
            o.denial.max_ttl = ttl;
            args = &args[1..];
        }
    }
    if !args.is_empty() {
        o.zones = zone_args(NAME, args)?;
        o.zones_label = Zone::join(&o.zones);
    }
    for opt in d.options() {
        match opt.name.as_str() {
            "success" => policy(opt, &mut o.success)?,
            "denial" => policy(opt, &mut o.denial)?,
            "prefetch" => o.prefetch = prefetch(opt)?,
            "serve_stale" => o.stale = serve_stale(opt)?,
            "servfail" => o.servfail_ttl = servfail(opt)?,
            "disable" => {
                if opt.args.is_empty() {
                    return Err(opt.arg_err(NAME));
                }
                opt.expect_no_block(NAME)?;
                let zones = if opt.args.len() > 1 {
                    zone_args(NAME, &opt.args[1..])?
                } else {
                    o.zones.clone()
                };
                match opt.args[0].as_str() {
                    "success" => o.disable_success = zones,
                    "denial" => o.disable_denial = zones,
                    _ => {
                        return Err(at(
                            &opt.args[0],
                            "cache type for disable must be \"success\" or \"denial\"",
                        ));
                    }
                }
            }
            "keepttl" => {
                opt.expect_args(NAME, 0, 0)?;
                opt.expect_no_block(NAME)?;
                o.keepttl = true;
            }
            "serve_stale_policy" => return Err(opt.err(NAME, "serve_stale_policy is not supported")),
            other => return Err(opt.err(NAME, format!("unknown property '{other}'"))),
        }
    }
    Ok(o)
}
