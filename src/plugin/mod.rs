//! The plugin registry: every directive CoreDNS knows, in CoreDNS's execution order
//! (its `plugin.cfg`), with the setup function of those clusterdns implements.
//!
//! A directive that CoreDNS has but clusterdns does not is an error at start-up, never
//! silently ignored: a Corefile that relies on it would otherwise answer differently.

use std::path::PathBuf;
use std::sync::Arc;

use crate::chain::Plugin;
use crate::config::{ConfigError, Directive};

pub mod bind;
pub mod cache;
pub mod errors;
pub mod forward;
pub mod health;
pub mod hosts;
pub mod kubernetes;
pub mod loadbalance;
pub mod log;
pub mod loop_detect;
pub mod prometheus;
pub mod ready;
pub mod reload;
pub mod rrl;
pub mod testing;
pub mod timeouts;
pub mod whoami;

/// What a plugin's setup knows about the server block it is in.
pub struct SetupCtx<'a> {
    /// The block's zones (`cluster.local.`), in the order of its keys.
    pub zones: &'a [crate::dns::Zone],
    /// The directory relative paths are taken from (the Corefile's).
    pub config_dir: PathBuf,
    /// How many worker threads will run the chain (for per-worker state).
    pub workers: usize,
    /// The block's `bind` addresses, if it has a `bind` directive.
    pub binds: Option<&'a [std::net::IpAddr]>,
}

/// Builds a plugin from every directive of its name in one server block (most plugins
/// accept only one; see [`once`]).
pub type SetupFn = fn(&[&Directive], &SetupCtx<'_>) -> Result<Arc<dyn Plugin>, ConfigError>;

/// How clusterdns handles a directive.
#[derive(Clone, Copy)]
pub enum Kind {
    /// A plugin in the chain.
    Chain(SetupFn),
    /// Handled by the server itself, not part of the chain (`bind`, `timeouts`).
    Server,
    /// Process-wide, run by the runtime (`health`, `ready`, `reload`).
    Process,
    /// CoreDNS has it; clusterdns does not.
    Unsupported,
}

/// CoreDNS's plugin order (plugin.cfg, v1.14): the first runs first.
pub const COREDNS_ORDER: &[&str] = &[
    "root",
    "metadata",
    "geoip",
    "cancel",
    "proxyproto",
    "quic",
    "grpc_server",
    "https",
    "https3",
    "timeouts",
    "multisocket",
    "reload",
    "nsid",
    "bufsize",
    "bind",
    "debug",
    "trace",
    "ready",
    "health",
    "pprof",
    "shed",
    "prometheus",
    "errors",
    "log",
    "dnstap",
    "local",
    "dns64",
    "any",
    "chaos",
    "loadbalance",
    "tsig",
    "rewrite",
    "autopath",
    "acl",
    "cache",
    "header",
    "dnssec",
    "tls",
    "minimal",
    "template",
    "transfer",
    "hosts",
    "route53",
    "azure",
    "clouddns",
    "k8s_external",
    "kubernetes",
    "file",
    "auto",
    "secondary",
    "etcd",
    "loop",
    "forward",
    "grpc",
    "erratic",
    "whoami",
    "on",
    "sign",
];

/// Plugins CoreDNS does not ship, and the plugin each runs just after.
/// * `rrl`: CoreDNS's external plugin of that name is usually compiled in after `acl`;
///   before `cache`, so that it sees every reply, cached ones included.
const OWN_PLUGINS: &[(&str, &str)] = &[("rrl", "acl")];

/// Test-only plugins, registered when `CLUSTERDNS_TEST_PLUGINS=1` is set in the
/// environment, and their position in the order (just before `forward`).
const TEST_PLUGINS: &[(&str, SetupFn)] = &[
    ("testupstream", testing::setup_upstream),
    ("testpanic", testing::setup_panic),
    ("teststall", testing::setup_stall),
];

/// The environment variable that enables the test plugins.
pub const TEST_PLUGINS_ENV: &str = "CLUSTERDNS_TEST_PLUGINS";

fn kind_of(name: &str) -> Option<Kind> {
    let k = match name {
        "bind" | "timeouts" => Kind::Server,
        "health" | "ready" | "reload" => Kind::Process,
        "cache" => Kind::Chain(cache::setup),
        "errors" => Kind::Chain(errors::setup),
        "forward" => Kind::Chain(forward::setup),
        "hosts" => Kind::Chain(hosts::setup),
        "kubernetes" => Kind::Chain(kubernetes::setup),
        "loadbalance" => Kind::Chain(loadbalance::setup),
        "log" => Kind::Chain(log::setup),
        "loop" => Kind::Chain(loop_detect::setup),
        "prometheus" => Kind::Chain(prometheus::setup),
        "rrl" => Kind::Chain(rrl::setup),
        "whoami" => Kind::Chain(whoami::setup),
        _ if COREDNS_ORDER.contains(&name) => Kind::Unsupported,
        _ => return test_plugin(name).map(|(_, f)| Kind::Chain(f)),
    };
    Some(k)
}

fn test_plugin(name: &str) -> Option<(usize, SetupFn)> {
    if std::env::var(TEST_PLUGINS_ENV).as_deref() != Ok("1") {
        return None;
    }
    let forward = 2 * COREDNS_ORDER
        .iter()
        .position(|&n| n == "forward")
        .unwrap_or(COREDNS_ORDER.len())
        - 1;
    TEST_PLUGINS
        .iter()
        .position(|(n, _)| *n == name)
        .map(|i| (forward, TEST_PLUGINS[i].1))
}

/// Looks a directive up: its position in the execution order and how it is handled.
/// `None` for a name CoreDNS does not know either.
pub fn lookup(name: &str) -> Option<(usize, Kind)> {
    let kind = kind_of(name)?;
    // CoreDNS's plugins at even positions, so that others fit between them.
    let order = COREDNS_ORDER
        .iter()
        .position(|&n| n == name)
        .map(|i| 2 * i)
        .or_else(|| own_position(name))
        .or_else(|| test_plugin(name).map(|(pos, _)| pos))?;
    Some((order, kind))
}

/// Where a plugin of [`OWN_PLUGINS`] runs: just after the one it follows.
fn own_position(name: &str) -> Option<usize> {
    let (_, after) = OWN_PLUGINS.iter().find(|(n, _)| *n == name)?;
    COREDNS_ORDER.iter().position(|n| n == after).map(|i| 2 * i + 1)
}

/// The plugins clusterdns implements, as `-plugins` lists them.
pub fn implemented() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = COREDNS_ORDER
        .iter()
        .copied()
        .chain(OWN_PLUGINS.iter().map(|(n, _)| *n))
        .filter(|n| !matches!(kind_of(n), Some(Kind::Unsupported) | None))
        .collect();
    v.sort_unstable();
    v
}

/// The setup wrapper for plugins that may appear only once per server block.
pub fn once<'d>(name: &str, dirs: &[&'d Directive]) -> Result<&'d Directive, ConfigError> {
    match dirs {
        [d] => Ok(d),
        [_, second, ..] => Err(second.err(name, "this plugin can only be used once per Server Block")),
        [] => unreachable!("setup is only called for directives that are present"),
    }
}
