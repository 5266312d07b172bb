//! `forward FROM TO... { options }`, validated with file and line.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::HealthOptions;
use crate::config::{ConfigError, Directive, parse_duration};
use crate::dns::{Rcode, Zone, wire};
use crate::setup::SetupCtx;

const NAME: &str = "forward";
/// CoreDNS accepts at most this many upstreams.
const MAX_UPSTREAMS: usize = 15;

/// How upstreams are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Random,
    RoundRobin,
    Sequential,
}

/// Every option, validated.
#[derive(Clone, Debug)]
pub struct Options {
    /// Names at or below this are forwarded ...
    pub from: Zone,
    /// ... except those at or below one of these.
    pub except: Vec<Zone>,
    pub to: Vec<SocketAddr>,
    pub force_tcp: bool,
    pub prefer_udp: bool,
    /// How long an idle TCP connection is reused.
    pub expire: Duration,
    /// Failures in a row before an upstream counts as down (0: never).
    pub max_fails: u32,
    pub health: HealthOptions,
    pub policy: Policy,
    pub max_concurrent: Option<usize>,
    /// Rcodes that hand the query to the next plugin.
    pub next: Vec<Rcode>,
    pub next_on_nodata: bool,
    /// Rcodes that make the next upstream be tried.
    pub failover: Vec<Rcode>,
    pub failfast_all_unhealthy: bool,
    /// Per-upstream reply timeout.
    pub read_timeout: Duration,
    /// Tries per query (CoreDNS's `max_connect_attempts`, default twice the upstreams).
    pub max_tries: usize,
}

fn rcodes(opt: &Directive, allow_noerror: bool) -> Result<Vec<Rcode>, ConfigError> {
    if opt.args.is_empty() {
        return Err(opt.arg_err(NAME));
    }
    opt.args
        .iter()
        .map(|a| {
            let r = Rcode::from_name(a.as_str())
                .ok_or_else(|| ConfigError::at(&a.loc, format!("{NAME}: '{}' is not a valid rcode", a.as_str())))?;
            if r == Rcode::NOERROR && !allow_noerror {
                return Err(ConfigError::at(
                    &a.loc,
                    format!("{NAME}: NOERROR cannot be a failover rcode"),
                ));
            }
            Ok(r)
        })
        .collect()
}

/// An upstream: `IP[:PORT]`, `[IPv6]:PORT`, `dns://...`, or a resolv.conf-style file.
fn upstreams(arg: &str, ctx: &SetupCtx<'_>) -> Result<Vec<SocketAddr>, String> {
    for scheme in ["tls://", "https://", "grpc://", "quic://"] {
        if arg.starts_with(scheme) {
            return Err(format!(
                "'{arg}': {scheme} upstreams are not supported by clusterdns (only dns://)"
            ));
        }
    }
    let a = arg.strip_prefix("dns://").unwrap_or(arg);
    if let Ok(ip) = a.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, 53)]);
    }
    if let Ok(sa) = a.parse::<SocketAddr>() {
        return Ok(vec![sa]);
    }
    if arg.starts_with("dns://") || a.contains(':') && !a.contains('/') {
        return Err(format!("not a valid upstream address: '{arg}'"));
    }
    // A file of nameserver lines (/etc/resolv.conf), relative to the Corefile: a regular
    // file, no larger than the Corefile may be (`forward . /dev/zero` fails at once).
    let path = ctx.config_dir.join(a);
    match crate::config::read::read_regular_text(&path, crate::config::read::MAX_FILE_BYTES) {
        Ok(text) => {
            let found = super::nameservers(&text);
            if found.is_empty() {
                return Err(format!("no nameservers found in {}", path.display()));
            }
            Ok(found)
        }
        Err(_) if !a.contains('/') && !a.starts_with('.') => Err(format!(
            "'{arg}': not an IP address or a file; host names are not supported as upstreams"
        )),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Parses the plugin's directive.
pub fn parse(d: &Directive, ctx: &SetupCtx<'_>) -> Result<Options, ConfigError> {
    if d.args.len() < 2 {
        return Err(d.arg_err(NAME));
    }
    let from_arg = d.args[0].as_str();
    let from = Zone::new(from_arg)
        .ok_or_else(|| ConfigError::at(&d.args[0].loc, format!("{NAME}: invalid zone '{from_arg}'")))?;
    let mut to = Vec::new();
    for a in &d.args[1..] {
        to.extend(upstreams(a.as_str(), ctx).map_err(|m| ConfigError::at(&a.loc, format!("{NAME}: {m}")))?);
    }
    if to.len() > MAX_UPSTREAMS {
        return Err(d.err(NAME, format!("more than {MAX_UPSTREAMS} TOs configured: {}", to.len())));
    }
    let mut o = Options {
        from,
        except: Vec::new(),
        to,
        force_tcp: false,
        prefer_udp: false,
        expire: Duration::from_secs(10),
        max_fails: 2,
        health: HealthOptions {
            interval: Duration::from_millis(500),
            no_rec: false,
            domain: vec![0],
        },
        policy: Policy::Random,
        max_concurrent: None,
        next: Vec::new(),
        next_on_nodata: false,
        failover: Vec::new(),
        failfast_all_unhealthy: false,
        read_timeout: Duration::from_secs(2),
        max_tries: 0,
    };
    let mut max_connect_attempts = None;
    let duration = |opt: &Directive| -> Result<Duration, ConfigError> {
        opt.expect_args(NAME, 1, 1)?;
        parse_duration(opt.args[0].as_str())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                ConfigError::at(
                    &opt.args[0].loc,
                    format!("{NAME}: invalid duration '{}'", opt.args[0].as_str()),
                )
            })
    };
    let number = |opt: &Directive| -> Result<u64, ConfigError> {
        opt.expect_args(NAME, 1, 1)?;
        opt.args[0].as_str().parse().map_err(|_| {
            ConfigError::at(
                &opt.args[0].loc,
                format!("{NAME}: invalid number '{}'", opt.args[0].as_str()),
            )
        })
    };
    for opt in d.options() {
        match opt.name.as_str() {
            "except" => {
                if opt.args.is_empty() {
                    return Err(opt.arg_err(NAME));
                }
                for a in &opt.args {
                    o.except
                        .push(Zone::new(a.as_str()).ok_or_else(|| {
                            ConfigError::at(&a.loc, format!("{NAME}: invalid name '{}'", a.as_str()))
                        })?);
                }
            }
            "force_tcp" => {
                opt.expect_args(NAME, 0, 0)?;
                o.force_tcp = true;
            }
            "prefer_udp" => {
                opt.expect_args(NAME, 0, 0)?;
                o.prefer_udp = true;
            }
            "expire" => o.expire = duration(opt)?,
            "max_fails" => o.max_fails = number(opt)? as u32,
            "read_timeout" => o.read_timeout = duration(opt)?,
            "max_connect_attempts" => max_connect_attempts = Some(number(opt)?.max(1) as usize),
            "max_idle_conns" => {
                number(opt)?;
            }
            "health_check" => {
                if opt.args.is_empty() {
                    return Err(opt.arg_err(NAME));
                }
                o.health.interval = parse_duration(opt.args[0].as_str())
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        ConfigError::at(
                            &opt.args[0].loc,
                            format!("{NAME}: invalid duration '{}'", opt.args[0].as_str()),
                        )
                    })?;
                let mut rest = opt.args[1..].iter();
                while let Some(a) = rest.next() {
                    match a.as_str() {
                        "no_rec" => o.health.no_rec = true,
                        "domain" => {
                            let Some(n) = rest.next() else {
                                return Err(opt.arg_err(NAME));
                            };
                            o.health.domain = wire::name_from_str(n.as_str()).ok_or_else(|| {
                                ConfigError::at(&n.loc, format!("{NAME}: invalid domain '{}'", n.as_str()))
                            })?;
                        }
                        other => {
                            return Err(ConfigError::at(
                                &a.loc,
                                format!("{NAME}: health_check: unknown option '{other}'"),
                            ));
                        }
                    }
                }
            }
            "policy" => {
                opt.expect_args(NAME, 1, 1)?;
                o.policy = match opt.args[0].as_str() {
                    "random" => Policy::Random,
                    "round_robin" => Policy::RoundRobin,
                    "sequential" => Policy::Sequential,
                    other => {
                        return Err(ConfigError::at(
                            &opt.args[0].loc,
                            format!("{NAME}: unknown policy '{other}'"),
                        ));
                    }
                };
            }
            "max_concurrent" => o.max_concurrent = Some(number(opt)? as usize),
            "next" => o.next = rcodes(opt, true)?,
            "next_on_nodata" => {
                opt.expect_args(NAME, 0, 0)?;
                o.next_on_nodata = true;
            }
            "failover" => o.failover = rcodes(opt, false)?,
            "failfast_all_unhealthy_upstreams" => {
                opt.expect_args(NAME, 0, 0)?;
                o.failfast_all_unhealthy = true;
            }
            "tls" | "tls_servername" | "doh_method" | "source_address" | "resolver" => {
                return Err(opt.err(NAME, format!("'{}' is not supported by clusterdns", opt.name.as_str())));
            }
            other => return Err(opt.err(NAME, format!("unknown property '{other}'"))),
        }
    }
    if o.force_tcp && o.prefer_udp {
        // CoreDNS lets force_tcp win; say so rather than guess silently.
        log::warn!(target: "plugin/forward", "force_tcp and prefer_udp both set: force_tcp wins");
        o.prefer_udp = false;
    }
    o.max_tries = max_connect_attempts.unwrap_or(2 * o.to.len()).max(1);
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn ctx(process: &crate::process::ProcessState) -> SetupCtx<'_> {
        SetupCtx {
            zones: &[],
            config_dir: PathBuf::from("/nonexistent"),
            workers: 1,
            binds: None,
            process,
        }
    }

    #[test]
    fn a_resolv_conf_must_be_a_small_regular_file() {
        let t = std::time::Instant::now();
        assert_eq!(
            upstreams("/dev/zero", &ctx(&crate::process::ProcessState::new())).unwrap_err(),
            "/dev/zero: not a regular file (a character device)"
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        let dir = std::env::temp_dir().join(format!("clusterdns-forward-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("resolv.conf");
        std::fs::write(&big, "nameserver 10.0.0.1\n".repeat(60_000)).unwrap();
        assert_eq!(
            upstreams(&big.display().to_string(), &ctx(&crate::process::ProcessState::new())).unwrap_err(),
            format!("{}: larger than 1 MiB", big.display())
        );
        std::fs::write(&big, "nameserver 10.0.0.1\n").unwrap();
        assert_eq!(
            upstreams(&big.display().to_string(), &ctx(&crate::process::ProcessState::new())).unwrap(),
            ["10.0.0.1:53".parse::<SocketAddr>().unwrap()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
