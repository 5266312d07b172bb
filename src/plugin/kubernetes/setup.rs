//! `kubernetes [ZONES...] { options }`: the options, validated up front with the
//! file and line of each mistake.

use std::net::IpAddr;
use std::time::Duration;

use crate::config::{ConfigError, Directive, parse_duration, reverse_zones_for_cidr};
use crate::dns::Zone;
use crate::setup::SetupCtx;

/// How pod names (`<ip-with-dashes>.<ns>.pod.<zone>`) are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodMode {
    Disabled,
    Insecure,
    Verified,
}

/// Every option of the plugin, validated.
#[derive(Clone, Debug)]
pub struct Options {
    /// Longest first, so the first match is the longest.
    pub zones: Vec<Zone>,
    /// PTR targets use this zone: the first zone not under `.in-addr.arpa.` or
    /// `.ip6.arpa.`.
    pub primary_zone: Zone,
    /// `http://` API base URLs (several: failover) or one `file://` path.
    pub endpoints: Vec<String>,
    pub namespaces: Vec<String>,
    pub labels: Option<String>,
    pub namespace_labels: Option<String>,
    pub pods: PodMode,
    pub endpoint_pod_names: bool,
    pub ttl: u32,
    pub noendpoints: bool,
    /// `None`: no fallthrough; `Some(zones)`: name errors under these zones go on.
    pub fallthrough: Option<Vec<Zone>>,
    pub ignore_empty_service: bool,
    pub startup_timeout: Duration,
    /// Base of the watch's `timeoutSeconds` (jittered up to twice that).
    pub watch_timeout: Duration,
    /// A watch stream silent for this long is dead.
    pub idle_timeout: Duration,
    pub backoff: (Duration, Duration),
    /// The addresses the apex NS set is built from (CoreDNS: the host's non-loopback
    /// addresses, none when the block has `bind`).
    pub local_ips: Vec<IpAddr>,
}

const NAME: &str = "kubernetes";

/// Whether a zone counts as reverse for the primary-zone choice (CoreDNS tests for the
/// suffix with its leading dot, so the bare `in-addr.arpa.` does not count).
fn under_reverse(zone: &str) -> bool {
    zone.ends_with(".in-addr.arpa.") || zone.ends_with(".ip6.arpa.")
}

fn is_reverse(zone: &str) -> bool {
    zone.ends_with("in-addr.arpa.") || zone.ends_with("ip6.arpa.")
}

/// A zone argument: a name (lower-cased, fully qualified) or a CIDR standing for its
/// reverse zones.
fn normalize_zone(arg: &str) -> Option<Vec<Zone>> {
    match reverse_zones_for_cidr(arg) {
        Some(zones) => zones.iter().map(|z| Zone::new(z)).collect(),
        None if arg.ends_with('.') => Some(vec![Zone::new(arg)?]),
        // Fully qualified the way CoreDNS's `plugin.Host` does it: a final dot added.
        None => Some(vec![Zone::new(&format!("{arg}."))?]),
    }
}

/// Parses the plugin's directive.
pub fn parse(d: &Directive, ctx: &SetupCtx<'_>) -> Result<Options, ConfigError> {
    let mut names: Vec<Zone> = Vec::new();
    if d.args.is_empty() {
        names.extend(ctx.zones.iter().cloned());
    }
    for a in &d.args {
        let zones = normalize_zone(a.as_str())
            .ok_or_else(|| ConfigError::at(&a.loc, format!("{NAME}: invalid zone '{}'", a.as_str())))?;
        names.extend(zones);
    }
    names.dedup();
    if names.iter().all(|z| is_reverse(z.as_str())) {
        return Err(d.err(NAME, "non-reverse zone name must be used"));
    }
    let primary = names
        .iter()
        .find(|z| !under_reverse(z.as_str()))
        .cloned()
        .unwrap_or_else(|| names[0].clone());
    let mut zones = names;
    zones.sort_by_key(|z| std::cmp::Reverse(z.wire().len()));

    let mut o = Options {
        zones,
        primary_zone: primary,
        endpoints: vec!["http://127.0.0.1:8001".into()],
        namespaces: Vec::new(),
        labels: None,
        namespace_labels: None,
        pods: PodMode::Disabled,
        endpoint_pod_names: false,
        ttl: 5,
        noendpoints: false,
        fallthrough: None,
        ignore_empty_service: false,
        startup_timeout: Duration::from_secs(5),
        watch_timeout: Duration::from_secs(300),
        idle_timeout: Duration::from_secs(75),
        backoff: (Duration::from_millis(250), Duration::from_secs(30)),
        local_ips: Vec::new(),
    };
    let strs = |opt: &Directive| opt.args.iter().map(|t| t.as_str().to_string()).collect::<Vec<_>>();
    let one_duration = |opt: &Directive| -> Result<Duration, ConfigError> {
        opt.expect_args(NAME, 1, 1)?;
        parse_duration(opt.args[0].as_str()).ok_or_else(|| {
            ConfigError::at(
                &opt.args[0].loc,
                format!("{NAME}: invalid duration '{}'", opt.args[0].as_str()),
            )
        })
    };
    for opt in d.options() {
        let name = opt.name.as_str();
        match name {
            "endpoint" => {
                if opt.args.is_empty() {
                    return Err(opt.arg_err(NAME));
                }
                for a in &opt.args {
                    let u = a.as_str();
                    if u.starts_with("https://") {
                        return Err(ConfigError::at(
                            &a.loc,
                            format!(
                                "{NAME}: '{u}': https is not supported; reach the API over plain HTTP, e.g. through 'kubectl proxy' (see README)"
                            ),
                        ));
                    }
                    if !(u.starts_with("http://") || u.starts_with("file://")) {
                        return Err(ConfigError::at(
                            &a.loc,
                            format!("{NAME}: invalid endpoint '{u}': want http://HOST:PORT or file://PATH"),
                        ));
                    }
                }
                let files = opt.args.iter().filter(|a| a.as_str().starts_with("file://")).count();
                if files > 0 && opt.args.len() > 1 {
                    return Err(opt.err(NAME, "a file:// endpoint must be the only endpoint"));
                }
                o.endpoints = strs(opt);
                // A relative file path is taken from the Corefile's directory.
                if let Some(path) = o.endpoints[0].strip_prefix("file://") {
                    let p = std::path::Path::new(path);
                    if p.is_relative() {
                        o.endpoints[0] = format!("file://{}", ctx.config_dir.join(p).display());
                    }
                }
            }
            "namespaces" => {
                if opt.args.is_empty() {
                    return Err(opt.arg_err(NAME));
                }
                o.namespaces
                    .extend(opt.args.iter().map(|a| a.as_str().to_ascii_lowercase()));
            }
            "labels" => {
                if opt.args.is_empty() {
                    return Err(opt.arg_err(NAME));
                }
                o.labels = Some(strs(opt).join(" "));
            }
            "namespace_labels" => {
                if opt.args.is_empty() {
                    return Err(opt.arg_err(NAME));
                }
                o.namespace_labels = Some(strs(opt).join(" "));
            }
            "pods" => {
                opt.expect_args(NAME, 1, 1)?;
                o.pods = match opt.args[0].as_str() {
                    "disabled" => PodMode::Disabled,
                    "insecure" => PodMode::Insecure,
                    "verified" => PodMode::Verified,
                    other => {
                        return Err(ConfigError::at(
                            &opt.args[0].loc,
                            format!("{NAME}: invalid value for pods: '{other}'"),
                        ));
                    }
                };
            }
            "endpoint_pod_names" => {
                opt.expect_args(NAME, 0, 0)?;
                o.endpoint_pod_names = true;
            }
            "ttl" => {
                opt.expect_args(NAME, 1, 1)?;
                o.ttl = opt.args[0]
                    .as_str()
                    .parse::<u32>()
                    .ok()
                    .filter(|t| *t <= 3600)
                    .ok_or_else(|| {
                        ConfigError::at(
                            &opt.args[0].loc,
                            format!("{NAME}: ttl must be in range [0, 3600]: {}", opt.args[0].as_str()),
                        )
                    })?;
            }
            "noendpoints" => {
                opt.expect_args(NAME, 0, 0)?;
                o.noendpoints = true;
            }
            "fallthrough" => {
                let mut zones = Vec::new();
                for a in &opt.args {
                    zones.extend(normalize_zone(a.as_str()).ok_or_else(|| {
                        ConfigError::at(&a.loc, format!("{NAME}: invalid fallthrough zone '{}'", a.as_str()))
                    })?);
                }
                if zones.is_empty() {
                    zones.push(Zone::root());
                }
                o.fallthrough = Some(zones);
            }
            "ignore" => match opt.args.first().map(|t| t.as_str()) {
                Some("empty_service") if opt.args.len() == 1 => o.ignore_empty_service = true,
                // CoreDNS accepts a bare `ignore` silently.
                None => {}
                Some(other) => {
                    return Err(ConfigError::at(
                        opt.loc(),
                        format!("{NAME}: unable to parse ignore value: '{other}'"),
                    ));
                }
            },
            "startup_timeout" => o.startup_timeout = one_duration(opt)?,
            "watch_timeout" => o.watch_timeout = one_duration(opt)?.max(Duration::from_secs(1)),
            "idle_timeout" => o.idle_timeout = one_duration(opt)?.max(Duration::from_millis(100)),
            "backoff" => {
                opt.expect_args(NAME, 2, 2)?;
                let parse = |i: usize| {
                    parse_duration(opt.args[i].as_str()).ok_or_else(|| {
                        ConfigError::at(
                            &opt.args[i].loc,
                            format!("{NAME}: invalid duration '{}'", opt.args[i].as_str()),
                        )
                    })
                };
                let (a, b) = (parse(0)?, parse(1)?);
                if a.is_zero() || b < a {
                    return Err(opt.err(NAME, "backoff wants INITIAL MAX with 0 < INITIAL <= MAX"));
                }
                o.backoff = (a, b);
            }
            "tls"
            | "kubeconfig"
            | "apiserver_qps"
            | "apiserver_burst"
            | "apiserver_max_inflight"
            | "multicluster"
            | "zonal" => {
                return Err(opt.err(NAME, format!("'{name}' is not supported by clusterdns (see README)")));
            }
            // CoreDNS 1.7.0 removed these (coredns#3737; they had done nothing for
            // several releases): CoreDNS's words, and what to do about it.
            "upstream" | "resyncperiod" => {
                return Err(opt.err(
                    NAME,
                    format!(
                        "unknown property '{name}': removed from CoreDNS in 1.7.0, where it had \
                         no effect; delete the line"
                    ),
                ));
            }
            // CoreDNS 1.8.0 moved outgoing zone transfers to the transfer plugin (its
            // notes: `transfer to` under file, auto, secondary and kubernetes is gone).
            "transfer" => {
                return Err(opt.err(
                    NAME,
                    "unknown property 'transfer': removed from CoreDNS in 1.8.0; zone transfers \
                     are configured with the 'transfer' plugin",
                ));
            }
            other => return Err(opt.err(NAME, format!("unknown property '{other}'"))),
        }
    }
    if !o.namespaces.is_empty() && o.namespace_labels.is_some() {
        return Err(d.err(NAME, "namespaces and namespace_labels cannot both be set"));
    }
    if o.endpoints.len() > 1 && o.endpoints.iter().any(|e| e.starts_with("file://")) {
        return Err(d.err(NAME, "a file:// endpoint must be the only endpoint"));
    }
    o.local_ips = match ctx.binds {
        // CoreDNS tries to read each bind address as a CIDR, fails, and ends up with
        // no local address at all: the apex NS set is empty with `bind`.
        Some(_) => Vec::new(),
        None => crate::plugin::bind::all_interface_addresses()
            .into_iter()
            .map(|(_, ip)| ip)
            .filter(|ip| !ip.is_loopback() && !matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
            .collect(),
    };
    Ok(o)
}
