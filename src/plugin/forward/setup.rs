//! `forward FROM TO... { options }`, validated with file and line.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::HealthOptions;
use crate::config::{ConfigError, Directive, parse_duration};
use crate::dns::{Rcode, Zone, wire};
use crate::setup::SetupCtx;
use crate::tls;

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
    pub to: Vec<Target>,
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

/// One upstream: its address, and for `tls://` its TLS configuration and server name.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub tls: Option<Arc<tls::Upstream>>,
}

/// An upstream as written, before the block's `tls` options are known.
struct Written {
    addr: SocketAddr,
    /// `tls://`: with the server name given as `tls://IP%NAME`, if any.
    tls: Option<Option<String>>,
    /// The argument, for errors (`tls://127.0.0.1:854`).
    text: String,
}

/// `tls://IP[%NAME][:PORT]` or `tls://[IPv6[%NAME]][:PORT]`: the address (port 853 by
/// default, RFC 7858 section 3.1) and the per-upstream server name (CoreDNS's
/// `splitZone`, forward/setup.go).
fn tls_upstream(arg: &str) -> Result<(SocketAddr, Option<String>), String> {
    let bad = || format!("not a valid upstream address: '{arg}'");
    let rest = arg.strip_prefix("tls://").unwrap_or(arg);
    if let Ok(ip) = rest.parse::<IpAddr>() {
        return Ok((SocketAddr::new(ip, tls::DOT_PORT), None));
    }
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (host, port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return Err(bad()),
            None => (rest, None),
        }
    };
    let (ip, name) = match host.split_once('%') {
        Some((ip, name)) if !name.is_empty() => (ip, Some(name.to_owned())),
        Some(_) => return Err(bad()),
        None => (host, None),
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("'{arg}': not an IP address; host names are not supported as upstreams"))?;
    let port = match port {
        None => tls::DOT_PORT,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    };
    Ok((SocketAddr::new(ip, port), name))
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

/// An upstream: `IP[:PORT]`, `[IPv6]:PORT`, `dns://...`, or a resolv.conf-style file
/// (`tls://` ones are read by [`tls_upstream`]).
fn upstreams(arg: &str, ctx: &SetupCtx<'_>) -> Result<Vec<SocketAddr>, String> {
    for scheme in ["https://", "grpc://", "quic://"] {
        if arg.starts_with(scheme) {
            return Err(format!(
                "'{arg}': {scheme} upstreams are not supported by clusterdns (only dns:// and tls://)"
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
    let mut written = Vec::new();
    for a in &d.args[1..] {
        let at = |m: String| ConfigError::at(&a.loc, format!("{NAME}: {m}"));
        if a.as_str().starts_with("tls://") {
            let (addr, name) = tls_upstream(a.as_str()).map_err(at)?;
            let text = format!("tls://{addr}");
            written.push(Written {
                addr,
                tls: Some(name),
                text,
            });
            continue;
        }
        for addr in upstreams(a.as_str(), ctx).map_err(at)? {
            written.push(Written {
                addr,
                tls: None,
                text: a.text.clone(),
            });
        }
    }
    if written.len() > MAX_UPSTREAMS {
        return Err(d.err(
            NAME,
            format!("more than {MAX_UPSTREAMS} TOs configured: {}", written.len()),
        ));
    }
    // `tls [CERT KEY] [CA]` and `tls_servername NAME`, applied to the tls:// upstreams
    // once the block is read.
    let mut tls_args: Option<&Directive> = None;
    let mut tls_servername: Option<&Directive> = None;
    let mut o = Options {
        from,
        except: Vec::new(),
        to: Vec::new(),
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
            "tls" => {
                if opt.args.len() > 3 {
                    return Err(opt.arg_err(NAME));
                }
                tls_args = Some(opt);
            }
            "tls_servername" => {
                opt.expect_args(NAME, 1, 1)?;
                tls_servername = Some(opt);
            }
            "doh_method" | "source_address" | "resolver" => {
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
    o.to = targets(written, tls_args, tls_servername, d, ctx)?;
    o.max_tries = max_connect_attempts.unwrap_or(2 * o.to.len()).max(1);
    Ok(o)
}

/// The upstreams with their TLS configurations: one client configuration from `tls`
/// (or the defaults: system CAs, no client certificate) shared by every `tls://`
/// upstream, each with its server name: `tls_servername`, its own `%NAME`, or its
/// address (CoreDNS: Go then checks the certificate's IP SANs). Both names for one
/// upstream is CoreDNS's error.
fn targets(
    written: Vec<Written>,
    tls_args: Option<&Directive>,
    tls_servername: Option<&Directive>,
    d: &Directive,
    ctx: &SetupCtx<'_>,
) -> Result<Vec<Target>, ConfigError> {
    let global_name = tls_servername.map(|o| o.args[0].as_str());
    let mut config = None;
    let mut out = Vec::with_capacity(written.len());
    for w in written {
        let Some(own_name) = w.tls else {
            out.push(Target {
                addr: w.addr,
                tls: None,
            });
            continue;
        };
        if let (Some(g), Some(own)) = (global_name, &own_name) {
            return Err(d.err(
                NAME,
                format!(
                    "both forward ('{g}') and proxy level ('{own}') TLS servernames are set for upstream proxy '{}'",
                    w.text
                ),
            ));
        }
        if config.is_none() {
            let args: Vec<&str> = tls_args.map(|o| o.arg_strs()).unwrap_or_default();
            let at = tls_args.unwrap_or(d);
            config = Some(tls::client_config(&args, &ctx.config_dir).map_err(|m| at.err(NAME, m))?);
        }
        let name_text = own_name
            .as_deref()
            .or(global_name)
            .map_or_else(|| w.addr.ip().to_string(), str::to_owned);
        let server_name = tls::server_name(&name_text).map_err(|m| match tls_servername {
            Some(o) if own_name.is_none() => o.err(NAME, m),
            _ => d.err(NAME, m),
        })?;
        out.push(Target {
            addr: w.addr,
            tls: Some(Arc::new(tls::Upstream {
                config: config.clone().expect("made above"),
                server_name,
            })),
        });
    }
    Ok(out)
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

    // CoreDNS forward/setup_test.go TestSplitZone and TestSetupTLS: the per-upstream
    // server name after `%`, the port after it, brackets for IPv6, 853 by default.
    #[test]
    fn tls_upstream_addresses() {
        let ok = |s: &str| tls_upstream(s).unwrap();
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(ok("tls://127.0.0.1"), (sa("127.0.0.1:853"), None));
        assert_eq!(ok("tls://127.0.0.1:854"), (sa("127.0.0.1:854"), None));
        assert_eq!(
            ok("tls://127.0.0.1%example.net:854"),
            (sa("127.0.0.1:854"), Some("example.net".into()))
        );
        assert_eq!(
            ok("tls://127.0.0.1%example.net"),
            (sa("127.0.0.1:853"), Some("example.net".into()))
        );
        assert_eq!(
            ok("tls://[::1%example.net]:853"),
            (sa("[::1]:853"), Some("example.net".into()))
        );
        assert_eq!(
            ok("tls://[2400:3200::1%dns.alidns.com]:853"),
            (sa("[2400:3200::1]:853"), Some("dns.alidns.com".into()))
        );
        assert_eq!(ok("tls://[::1]"), (sa("[::1]:853"), None));
        assert_eq!(ok("tls://::1"), (sa("[::1]:853"), None));
        for bad in [
            "tls://127.0.0.1:0",
            "tls://127.0.0.1:x",
            "tls://[::1",
            "tls://127.0.0.1%",
        ] {
            assert!(tls_upstream(bad).is_err(), "{bad}");
        }
        assert_eq!(
            tls_upstream("tls://dns.quad9.net").unwrap_err(),
            "'tls://dns.quad9.net': not an IP address; host names are not supported as upstreams"
        );
    }

    fn parsed(text: &str) -> Result<Options, String> {
        let process = crate::process::ProcessState::new();
        let c = crate::config::parse_str(text, "Corefile", std::path::Path::new(".")).unwrap();
        parse(&c.blocks[0].directives[0], &ctx(&process)).map_err(|e| e.to_string())
    }

    // CoreDNS forward/setup_test.go TestSetupTLS: the server name each upstream's
    // certificate is checked against, and the clash of both kinds of names.
    #[test]
    fn tls_server_names() {
        let name = |o: &Options, i: usize| format!("{:?}", o.to[i].tls.as_ref().unwrap().server_name);
        // `tls` with a CA file needs the file: the tests here use the system bundle
        // only where it exists, so every case names a CA that does.
        let dir = std::env::temp_dir().join(format!("clusterdns-forward-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, TEST_CA).unwrap();
        let ca = ca.display().to_string();
        let o = parsed(&format!(
            ".:53 {{\nforward . tls://127.0.0.1 1.2.3.4 {{\ntls {ca}\ntls_servername dns\n}}\n}}\n"
        ))
        .unwrap();
        assert_eq!(name(&o, 0), format!("{:?}", tls::server_name("dns").unwrap()));
        assert!(o.to[1].tls.is_none(), "a dns:// upstream stays plain");
        let o = parsed(&format!(
            ".:53 {{\nforward . tls://127.0.0.1%example.net:854 tls://127.0.0.2 {{\ntls {ca}\n}}\n}}\n"
        ))
        .unwrap();
        assert_eq!(o.to[0].addr, "127.0.0.1:854".parse::<SocketAddr>().unwrap());
        assert_eq!(name(&o, 0), format!("{:?}", tls::server_name("example.net").unwrap()));
        // No name: the address itself (an IP SAN).
        assert_eq!(name(&o, 1), format!("{:?}", tls::server_name("127.0.0.2").unwrap()));
        assert_eq!(
            parsed(&format!(
                ".:53 {{\nforward . tls://127.0.0.1%example.net:854 {{\ntls {ca}\ntls_servername foo\n}}\n}}\n"
            ))
            .unwrap_err(),
            "Corefile:2 - forward: both forward ('foo') and proxy level ('example.net') TLS servernames are set for upstream proxy 'tls://127.0.0.1:854'"
        );
        assert_eq!(
            parsed(".:53 {\nforward . tls://127.0.0.1 {\ntls a b c d\n}\n}\n").unwrap_err(),
            "Corefile:3 - forward: Wrong argument count or unexpected line ending after 'd'"
        );
        assert_eq!(
            parsed(".:53 {\nforward . tls://127.0.0.1 {\ntls /nonexistent/ca.pem\n}\n}\n").unwrap_err(),
            "Corefile:3 - forward: error reading /nonexistent/ca.pem: No such file or directory (os error 2)"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A CA certificate (self-signed, ECDSA P-256, valid until 2126): only parsed here,
    /// never used to verify anything.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBhDCCASugAwIBAgIUftO+LuikKxlbRyKrwqZZwhkNJPEwCgYIKoZIzj0EAwIw
FzEVMBMGA1UEAwwMdW5pdCB0ZXN0IENBMCAXDTI2MTIwNzE3MDEzNFoYDzIxMjYx
MTEzMTcwMTM0WjAXMRUwEwYDVQQDDAx1bml0IHRlc3QgQ0EwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAAQGq+b5njZfv784bPjVOAUhgelrR3BpOG1XTITBCyEZrt39
YD5mnPALCgdFVb3nqJ8fHcuY6K0EXi1IeY2cRFKKo1MwUTAdBgNVHQ4EFgQUz0iO
EqRRPNRdEmQYfIHf+wbZXT8wHwYDVR0jBBgwFoAUz0iOEqRRPNRdEmQYfIHf+wbZ
XT8wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiB5mQq0wM/z+Je4
JEC0fMQhbjnfRkuUZcacSSsnOUgXngIgFo52Wzgq/iK32modCmgxEoSPJ9vsONuD
3kjcsl0wcME=
-----END CERTIFICATE-----
";
}
