//! `rrl`: response rate limiting, as BIND, NSD and Knot have it and as CoreDNS's
//! external plugin of that name configures it (README.md beside this file).
//!
//! ```text
//!   UDP query under the zones
//!        │ serve: requests-per-second account of the client's prefix
//!        │        (over the limit: nothing is sent)
//!        ▼
//!   later plugins answer
//!        │ on_response: the reply's category (response, nodata, nxdomain, referral,
//!        │ error) picks an allowance; the account is the client's prefix + category
//!        │ (+ name and type, except for errors)
//!        ▼
//!   balance ≥ 0: sent   │   balance < 0: dropped, but every slip-ratio'th one is
//!                       │   sent as an empty TC=1 reply so a real client retries over TCP
//! ```
//!
//! An account's balance is credited at its allowance per second, up to one second's
//! worth, and debited by one per response; it may fall to `-window × allowance`, so
//! a source that keeps flooding stays limited for up to `window` seconds after it
//! slows down. Balances are kept in thousandths and credited per millisecond, so the
//! limit holds within a second as well as over it.
//!
//! TCP is never limited: its source addresses cannot be spoofed, and slipping exists to
//! send real clients there.
//!
//! The accounts live in shards of a table bounded by `max-table-size`. A full shard
//! first forgets the accounts that have been idle for longer than the window (they
//! are back at a full balance, which is what a missing account means); if it is still
//! full, the new source is not limited (counted in
//! `coredns_rrl_untracked_responses_total`), as in CoreDNS's plugin.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::chain::{Handler, Query, Rng, Step};
use crate::config::{ConfigError, Directive, Token, zone_args};
use crate::dns::{Rcode, Request, ResponseType, Transport, Zone, flag};
use crate::kubernetes::snapshot::FxHasher;
use crate::metrics::Families;
use crate::plugin::once;
use crate::process::ProcessState;
use crate::setup::{Lifecycle, Plugin, SetupCtx};

/// The directive name, and the prefix of its errors.
const NAME: &str = "rrl";

/// Shards of the account table; each has its own lock.
const SHARDS: usize = 64;
/// Balances are kept in thousandths of a response.
const UNIT: i64 = 1000;

/// What a reply is, for the allowance that applies to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Category {
    /// NOERROR with answers.
    Response = 0,
    /// NOERROR without answers.
    Nodata = 1,
    Nxdomain = 2,
    /// NOERROR pointing elsewhere (NS records in authority, no answers).
    Referral = 3,
    /// Any other rcode: accounted per client prefix only, whatever the name.
    Error = 4,
}

impl Category {
    fn of(t: ResponseType, answers: u16) -> Category {
        match t {
            ResponseType::NoError if answers > 0 => Category::Response,
            ResponseType::NoError | ResponseType::NoData => Category::Nodata,
            ResponseType::NameError => Category::Nxdomain,
            ResponseType::Delegation => Category::Referral,
            ResponseType::Meta | ResponseType::OtherError => Category::Error,
        }
    }
}

/// The configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Options {
    /// Zones limited.
    zones: Vec<Zone>,
    /// The zones in presentation form, joined with `,`: the metrics' `zones` label.
    zones_label: String,
    window: u32,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    /// Responses per second allowed per account, by [`Category`]; 0 is unlimited.
    allowance: [u32; 5],
    /// Queries per second allowed per client prefix; 0 is unlimited.
    requests: u32,
    /// Every `slip`th dropped response is sent truncated instead; 0 never.
    slip: u32,
    max_table: usize,
    /// Count what would be limited, limit nothing.
    report_only: bool,
}

/// One account: its balance (thousandths of a response) and when it was last credited.
#[derive(Clone, Copy, Debug)]
struct Account {
    balance: i64,
    /// Milliseconds since the plugin started.
    at: u64,
    /// Responses over the limit so far, for slipping every Nth.
    over: u32,
}

type Shard = HashMap<u64, Account, BuildHasherDefault<IdentityHasher>>;

/// The keys are already hashes (with a secret seed): hashing them again is waste.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// What to do with a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Send,
    Drop,
    /// Send an empty reply with TC set.
    Slip,
}

/// The plugin.
pub struct Rrl {
    opts: Options,
    shards: Box<[Mutex<Shard>]>,
    /// Mixed into every account key, so that sources cannot aim at one shard or collide
    /// on purpose.
    seed: u64,
    epoch: Instant,
    /// Kept across reloads under the `zones` label (see `ProcessState::kept`).
    counters: Arc<Counters>,
}

/// What the plugin counts, for `coredns_rrl_*`.
#[derive(Default)]
struct Counters {
    requests_exceeded: AtomicU64,
    responses_exceeded: AtomicU64,
    slipped: AtomicU64,
    untracked: AtomicU64,
}

pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let d = once(NAME, dirs)?;
    Ok(Plugin::both(Arc::new(Rrl::new(parse(d, ctx)?, ctx.process))))
}

impl Rrl {
    fn new(opts: Options, process: &ProcessState) -> Rrl {
        let per_shard = opts.max_table.div_ceil(SHARDS);
        Rrl {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Shard::with_capacity_and_hasher(per_shard.min(1024), Default::default())))
                .collect(),
            seed: Rng::secure_u64(),
            epoch: Instant::now(),
            counters: process.kept(
                &format!("{NAME}|{}", opts.zones_label),
                |_: &Arc<Counters>| true,
                || Arc::new(Counters::default()),
            ),
            opts,
        }
    }

    /// Whether the plugin looks at `req` at all: UDP, under one of the zones.
    fn applies(&self, req: &Request<'_>) -> bool {
        req.transport == Transport::Udp && Zone::any_contains(&self.opts.zones, &req.qname)
    }

    /// The account key of `client`'s prefix, with `extra` hashed in.
    fn key(&self, client: IpAddr, extra: impl FnOnce(&mut FxHasher)) -> u64 {
        let mut h = FxHasher::default();
        h.write_u64(self.seed);
        match client {
            IpAddr::V6(a) if a.to_ipv4_mapped().is_none() => {
                let bits = u128::from(a) & mask128(self.opts.ipv6_prefix);
                h.write_u8(6);
                h.write(&bits.to_be_bytes());
            }
            ip => {
                let v4 = match ip {
                    IpAddr::V4(a) => a,
                    IpAddr::V6(a) => a.to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                };
                let shift = 32 - u32::from(self.opts.ipv4_prefix);
                let bits = u32::from(v4).checked_shr(shift).unwrap_or(0);
                h.write_u8(4);
                h.write(&bits.to_be_bytes());
            }
        }
        extra(&mut h);
        h.finish()
    }

    /// Debits account `key` (allowance `rate` per second) for one response at `now`.
    fn debit(&self, key: u64, rate: u32, now: Instant) -> Verdict {
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let rate = i64::from(rate);
        let full = rate * UNIT;
        let floor = -(i64::from(self.opts.window) * rate * UNIT);
        let mut shard = self.shards[(key >> 58) as usize % SHARDS].lock();
        let cap = self.opts.max_table.div_ceil(SHARDS);
        if shard.len() >= cap && !shard.contains_key(&key) {
            // Forget the accounts idle for longer than the window: credited since, they
            // would be full again, which is what no account means.
            let idle = u64::from(self.opts.window) * 1000;
            shard.retain(|_, a| ms.saturating_sub(a.at) <= idle);
            if shard.len() >= cap {
                self.counters.untracked.fetch_add(1, Ordering::Relaxed);
                return Verdict::Send;
            }
        }
        let a = shard.entry(key).or_insert(Account {
            balance: full,
            at: ms,
            over: 0,
        });
        // One credit per elapsed millisecond: `rate` thousandths of a response each.
        let credit = (ms.saturating_sub(a.at) as i64).saturating_mul(rate);
        a.balance = a.balance.saturating_add(credit).min(full) - UNIT;
        a.at = ms;
        if a.balance >= 0 {
            return Verdict::Send;
        }
        a.balance = a.balance.max(floor);
        a.over = a.over.wrapping_add(1);
        let slip = self.opts.slip;
        if slip > 0 && a.over.is_multiple_of(slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// The netmask of an IPv6 prefix of `len` bits.
fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl Handler for Rrl {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        let rate = self.opts.requests;
        if rate == 0 || !self.applies(q.req) {
            return Step::Next;
        }
        // The request account has a key of its own: the prefix and nothing else.
        let key = self.key(q.req.client.ip(), |h| h.write_u8(0xFF));
        if self.debit(key, rate, q.worker.now) == Verdict::Send {
            return Step::Next;
        }
        self.counters.requests_exceeded.fetch_add(1, Ordering::Relaxed);
        if self.opts.report_only {
            return Step::Next;
        }
        q.resp.start(q.req, Rcode::REFUSED);
        q.resp.withhold();
        Step::Answered
    }

    fn wants_response(&self) -> bool {
        self.opts.allowance.iter().any(|&a| a > 0)
    }

    fn on_response(&self, q: &mut Query<'_, '_>) {
        // A valid server cookie proves the source address (RFC 7873): its answers
        // cannot be aimed at a spoofed victim, so they are not limited.
        if q.resp.is_withheld() || !self.applies(q.req) || q.req.cookie_valid() {
            return;
        }
        let category = Category::of(
            q.resp.response_type(q.req.qtype),
            q.resp.count(crate::dns::Section::Answer),
        );
        let rate = self.opts.allowance[category as usize];
        if rate == 0 {
            return;
        }
        let key = self.key(q.req.client.ip(), |h| {
            h.write_u8(category as u8);
            if category != Category::Error {
                h.write(q.req.qname.wire());
                h.write(&q.req.qtype.to_be_bytes());
            }
        });
        let verdict = self.debit(key, rate, q.worker.now);
        if verdict == Verdict::Send {
            return;
        }
        self.counters.responses_exceeded.fetch_add(1, Ordering::Relaxed);
        if self.opts.report_only {
            return;
        }
        match verdict {
            Verdict::Send => {}
            Verdict::Drop => q.resp.withhold(),
            Verdict::Slip => {
                self.counters.slipped.fetch_add(1, Ordering::Relaxed);
                let rcode = q.resp.rcode();
                q.resp.start(q.req, rcode);
                q.resp.set_flag(flag::TC, true);
                q.resp.finish();
            }
        }
    }
}

impl Lifecycle for Rrl {
    fn metrics(&self, out: &mut Families) {
        // Two instances with the same zones count into the same counters: shown once.
        if !out.first_from(Arc::as_ptr(&self.counters)) {
            return;
        }
        let c = &self.counters;
        let labels: &[(&str, &str)] = &[("zones", &self.opts.zones_label)];
        let counters: [(&str, &'static str, &AtomicU64); 4] = [
            (
                "coredns_rrl_requests_exceeded_total",
                "Counter of requests exceeding the requests-per-second limit.",
                &c.requests_exceeded,
            ),
            (
                "coredns_rrl_responses_exceeded_total",
                "Counter of responses exceeding their per-second allowance.",
                &c.responses_exceeded,
            ),
            (
                "coredns_rrl_responses_slipped_total",
                "Counter of responses over the limit sent truncated instead of dropped.",
                &c.slipped,
            ),
            (
                "coredns_rrl_untracked_responses_total",
                "Counter of responses not limited because the table was full.",
                &c.untracked,
            ),
        ];
        for (name, help, value) in counters {
            out.counter(name, help, labels, value.load(Ordering::Relaxed) as f64);
        }
    }
}

// --- configuration -----------------------------------------------------------------------

fn at(tok: &Token, msg: impl std::fmt::Display) -> ConfigError {
    ConfigError::at(&tok.loc, format!("{NAME}: {msg}"))
}

/// The single argument of option `opt`, as a whole number within `min..=max`.
fn number(opt: &Directive, min: u64, max: u64) -> Result<u64, ConfigError> {
    opt.expect_args(NAME, 1, 1)?;
    opt.expect_no_block(NAME)?;
    let tok = &opt.args[0];
    match tok.text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(at(
            tok,
            format!(
                "{} must be a whole number from {min} to {max}, not '{}'",
                opt.name.text, tok.text
            ),
        )),
    }
}

fn parse(d: &Directive, ctx: &SetupCtx<'_>) -> Result<Options, ConfigError> {
    let zones = if d.args.is_empty() {
        ctx.zones.to_vec()
    } else {
        zone_args(NAME, &d.args)?
    };
    let zones_label = Zone::join(&zones);
    let mut o = Options {
        zones,
        zones_label,
        window: 15,
        ipv4_prefix: 24,
        ipv6_prefix: 56,
        allowance: [0; 5],
        requests: 0,
        slip: 2,
        max_table: 100_000,
        report_only: false,
    };
    // The category allowances default to responses-per-second, whatever the order.
    let mut set: [Option<u32>; 5] = [None; 5];
    const PER_SECOND: u64 = 1_000_000;
    for opt in d.options() {
        match opt.name.as_str() {
            "window" => o.window = number(opt, 1, 3600)? as u32,
            "ipv4-prefix-length" => o.ipv4_prefix = number(opt, 1, 32)? as u8,
            "ipv6-prefix-length" => o.ipv6_prefix = number(opt, 1, 128)? as u8,
            "responses-per-second" => set[Category::Response as usize] = Some(number(opt, 0, PER_SECOND)? as u32),
            "nodata-per-second" => set[Category::Nodata as usize] = Some(number(opt, 0, PER_SECOND)? as u32),
            "nxdomains-per-second" => set[Category::Nxdomain as usize] = Some(number(opt, 0, PER_SECOND)? as u32),
            "referrals-per-second" => set[Category::Referral as usize] = Some(number(opt, 0, PER_SECOND)? as u32),
            "errors-per-second" => set[Category::Error as usize] = Some(number(opt, 0, PER_SECOND)? as u32),
            "requests-per-second" => o.requests = number(opt, 0, PER_SECOND)? as u32,
            "slip-ratio" => o.slip = number(opt, 0, 10)? as u32,
            "max-table-size" => o.max_table = number(opt, 1, 100_000_000)? as usize,
            "report-only" => {
                opt.expect_args(NAME, 0, 0)?;
                opt.expect_no_block(NAME)?;
                o.report_only = true;
            }
            other => return Err(opt.err(NAME, format!("unknown property '{other}'"))),
        }
    }
    let responses = set[Category::Response as usize].unwrap_or(0);
    for (i, v) in set.iter().enumerate() {
        o.allowance[i] = v.unwrap_or(responses);
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::parse_str;

    fn options(text: &str) -> Result<Options, String> {
        let corefile = parse_str(
            &format!("example.org {{\n{text}\n}}"),
            "Corefile",
            std::path::Path::new("."),
        )
        .map_err(|e| e.to_string())?;
        let d = &corefile.blocks[0].directives[0];
        let zones = vec![Zone::new("example.org.").unwrap()];
        let ctx = SetupCtx {
            zones: &zones,
            config_dir: ".".into(),
            workers: 1,
            binds: None,
            process: &crate::process::ProcessState::new(),
        };
        parse(d, &ctx).map_err(|e| e.to_string())
    }

    #[test]
    fn options_default_to_coredns_and_allowances_to_responses_per_second() {
        let o = options("rrl").unwrap();
        assert_eq!(
            (o.window, o.ipv4_prefix, o.ipv6_prefix, o.slip, o.max_table, o.requests),
            (15, 24, 56, 2, 100_000, 0)
        );
        assert_eq!(o.allowance, [0; 5]);
        assert_eq!(o.zones_label, "example.org.");
        let o = options("rrl sub.example.org 10.0.0.0/8 {\n nxdomains-per-second 3\n responses-per-second 10\n errors-per-second 0\n report-only\n}").unwrap();
        assert_eq!(o.allowance, [10, 10, 3, 10, 0]);
        assert!(o.report_only);
        assert_eq!(o.zones_label, "sub.example.org.,10.in-addr.arpa.");
    }

    #[test]
    fn bad_options_name_the_line() {
        for (text, msg) in [
            (
                "rrl {\n window 0\n}",
                "Corefile:3 - rrl: window must be a whole number from 1 to 3600, not '0'",
            ),
            ("rrl {\n ipv4-prefix-length 33\n}", "from 1 to 32"),
            ("rrl {\n slip-ratio 11\n}", "from 0 to 10"),
            ("rrl {\n responses-per-second -1\n}", "not '-1'"),
            ("rrl {\n responses-per-second\n}", "Wrong argument count"),
            ("rrl {\n bogus 1\n}", "Corefile:3 - rrl: unknown property 'bogus'"),
            ("rrl {\n report-only yes\n}", "Wrong argument count"),
            ("rrl no..zone", "invalid zone"),
        ] {
            let err = options(text).unwrap_err();
            assert!(err.contains(msg), "{text}: {err}");
        }
    }

    fn plugin(text: &str) -> Rrl {
        Rrl::new(options(text).unwrap(), &ProcessState::new())
    }

    /// Debits the response account of `client` `n` times at `now`; the verdicts.
    fn debits(p: &Rrl, client: &str, rate: u32, now: Instant, n: usize) -> Vec<Verdict> {
        let key = p.key(client.parse().unwrap(), |h| h.write_u8(0));
        (0..n).map(|_| p.debit(key, rate, now)).collect()
    }

    #[test]
    fn a_burst_gets_one_second_of_allowance_then_every_second_drop_slips() {
        let p = plugin("rrl");
        let t0 = p.epoch;
        let v = debits(&p, "192.0.2.1", 5, t0, 9);
        assert_eq!(&v[..5], &[Verdict::Send; 5]);
        assert_eq!(&v[5..], &[Verdict::Drop, Verdict::Slip, Verdict::Drop, Verdict::Slip]);
        // The same /24 shares the account; another /24 does not.
        assert_eq!(debits(&p, "192.0.2.200", 5, t0, 1), [Verdict::Drop]);
        assert_eq!(debits(&p, "192.0.3.1", 5, t0, 1), [Verdict::Send]);
    }

    #[test]
    fn the_balance_refills_at_the_allowance_and_a_flood_stays_limited_for_the_window() {
        let p = plugin("rrl {\n window 2\n slip-ratio 0\n}");
        let t0 = p.epoch;
        // 5/s: after the burst, 200 ms buys one more response.
        assert!(debits(&p, "198.51.100.7", 5, t0, 5).iter().all(|v| *v == Verdict::Send));
        assert_eq!(debits(&p, "198.51.100.7", 5, t0, 1), [Verdict::Drop]);
        // At t0 the balance is -1; 400 ms later it is +1: one more is sent.
        assert_eq!(
            debits(&p, "198.51.100.7", 5, t0 + Duration::from_millis(400), 2),
            [Verdict::Send, Verdict::Drop]
        );
        // A second later: the 600 ms since bought three responses (one owed), then a
        // long flood drives the balance to its floor (-window × rate = -10)...
        let t1 = t0 + Duration::from_secs(1);
        let flood = debits(&p, "198.51.100.7", 5, t1, 100);
        assert_eq!(flood.iter().filter(|v| **v == Verdict::Send).count(), 2);
        // ...from which it takes the window (and one response's worth) to come back.
        assert_eq!(
            debits(&p, "198.51.100.7", 5, t1 + Duration::from_millis(1900), 1),
            [Verdict::Drop]
        );
        assert_eq!(
            debits(&p, "198.51.100.7", 5, t1 + Duration::from_millis(2500), 1),
            [Verdict::Send]
        );
    }

    #[test]
    fn ipv6_clients_share_their_prefix_and_mapped_ipv4_counts_as_ipv4() {
        let p = plugin("rrl {\n ipv6-prefix-length 48\n slip-ratio 0\n}");
        let t0 = p.epoch;
        assert_eq!(debits(&p, "2001:db8:1::1", 1, t0, 2), [Verdict::Send, Verdict::Drop]);
        assert_eq!(debits(&p, "2001:db8:1:ffff::9", 1, t0, 1), [Verdict::Drop]);
        assert_eq!(debits(&p, "2001:db8:2::1", 1, t0, 1), [Verdict::Send]);
        assert_eq!(debits(&p, "10.1.2.3", 1, t0, 1), [Verdict::Send]);
        assert_eq!(debits(&p, "::ffff:10.1.2.99", 1, t0, 1), [Verdict::Drop]);
    }

    #[test]
    fn a_full_table_forgets_idle_accounts_and_then_stops_tracking() {
        let p = plugin("rrl {\n max-table-size 64\n window 1\n slip-ratio 0\n}");
        let t0 = p.epoch;
        // One account per shard at most (64 / 64 shards): fill the shards.
        let mut sources = 0;
        for i in 0..=255u8 {
            debits(&p, &format!("10.{i}.0.1"), 1, t0, 1);
            sources += 1;
        }
        assert_eq!(sources, 256);
        let tracked: usize = p.shards.iter().map(|s| s.lock().len()).sum();
        assert!(tracked <= 64, "{tracked}");
        assert!(p.counters.untracked.load(Ordering::Relaxed) >= 256 - 64);
        // Two seconds later, every account is idle past the window: new ones fit.
        let later = t0 + Duration::from_secs(2);
        let before = p.counters.untracked.load(Ordering::Relaxed);
        debits(&p, "172.16.0.1", 1, later, 1);
        assert_eq!(p.counters.untracked.load(Ordering::Relaxed), before);
    }
}
