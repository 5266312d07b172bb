//! The plugins, and the plugin table: one row per directive, in execution order.
//!
//! The table is CoreDNS's `plugin.cfg` (v1.14), row for row, with clusterdns's own
//! plugins in the place where they run, then the names CoreDNS users may write that
//! never run here (plugins CoreDNS removed, plugins from outside CoreDNS's tree). Every
//! list of plugins derives from it: the execution order (a row's index), `-plugins`
//! ([`implemented`]), `-check`'s errors and the server build (`server::build` reads the
//! rows through `BuildOptions`). Adding a plugin is one folder here and one row below;
//! CONTRIBUTING.md walks through it with `whoami`.
//!
//! A directive that CoreDNS has but clusterdns does not is an error at start-up, never
//! silently ignored: a Corefile that relies on it would otherwise answer differently.

use crate::config::{ConfigError, Directive, reverse_zones_for_cidr};
use crate::dns::Zone;
use crate::setup::{SetupCtx, Spec};

pub mod acl;
pub mod any;
pub mod auto;
pub mod autopath;
pub mod bind;
pub mod bufsize;
pub mod cache;
pub mod chaos;
pub mod debug;
pub mod dns64;
pub mod errors;
pub mod file;
pub mod forward;
pub mod header;
pub mod health;
pub mod hosts;
pub mod k8s_external;
pub mod kubernetes;
pub mod loadbalance;
pub mod local;
pub mod log;
pub mod loop_detect;
pub mod metadata;
pub mod minimal;
pub mod nsid;
pub mod pprof;
pub mod prometheus;
pub mod ready;
pub mod reload;
pub mod rewrite;
pub mod rrl;
pub mod template;
#[cfg(debug_assertions)]
pub mod testing;
pub mod timeouts;
pub mod tls;
pub mod transfer;
pub mod whoami;

/// Every directive clusterdns knows, in execution order: the first runs first.
///
/// * The rows up to `nomad` are CoreDNS's `plugin.cfg` (v1.14) in its order; those
///   clusterdns does not have are [`Spec::unsupported`].
/// * `rrl`: not in CoreDNS's tree (its external plugin of that name is usually compiled
///   in after `acl`); before `cache`, so that it sees every reply, cached ones included.
/// * The test plugins, just before `forward`, exist only in debug builds (see
///   `plugin::testing`).
/// * Then the names that never run: plugins CoreDNS removed (with what replaces them)
///   and CoreDNS's external plugins (coredns.io/explugins, January 2026).
pub static PLUGINS: &[Spec] = &[
    Spec::unsupported("root"),
    Spec::chain("metadata", metadata::setup),
    Spec::unsupported("geoip"),
    Spec::unsupported("cancel"),
    Spec::unsupported("proxyproto"),
    Spec::unsupported("quic"),
    Spec::unsupported("grpc_server"),
    Spec::unsupported("https"),
    Spec::unsupported("https3"),
    Spec::server("timeouts", timeouts::configure),
    Spec::unsupported("multisocket"),
    Spec::process("reload", reload::configure),
    Spec::chain("nsid", nsid::setup),
    Spec::chain("bufsize", bufsize::setup),
    Spec::server("bind", bind::configure),
    Spec::process("debug", debug::configure),
    Spec::unsupported("trace"),
    Spec::process("ready", ready::configure),
    Spec::process("health", health::configure),
    Spec::process("pprof", pprof::configure),
    Spec::unsupported("shed"),
    Spec::chain_and_process("prometheus", prometheus::setup, prometheus::configure),
    Spec::chain("errors", errors::setup),
    Spec::chain("log", log::setup),
    Spec::unsupported("dnstap"),
    Spec::chain("local", local::setup),
    Spec::chain("dns64", dns64::setup),
    Spec::chain("any", any::setup),
    Spec::chain("chaos", chaos::setup),
    Spec::chain("loadbalance", loadbalance::setup),
    Spec::unsupported("tsig"),
    Spec::chain("rewrite", rewrite::setup),
    Spec::chain("autopath", autopath::setup),
    Spec::chain("acl", acl::setup),
    Spec::chain("rrl", rrl::setup),
    Spec::chain("cache", cache::setup),
    Spec::chain("header", header::setup),
    Spec::unsupported("dnssec"),
    Spec::server("tls", tls::configure),
    Spec::chain("minimal", minimal::setup),
    Spec::chain("template", template::setup),
    Spec::chain("transfer", transfer::setup),
    Spec::chain("hosts", hosts::setup),
    Spec::unsupported("route53"),
    Spec::unsupported("azure"),
    Spec::unsupported("clouddns"),
    Spec::chain("k8s_external", k8s_external::setup),
    Spec::chain("kubernetes", kubernetes::setup),
    Spec::chain("file", file::setup),
    Spec::chain("auto", auto::setup),
    Spec::unsupported("secondary"),
    Spec::unsupported("etcd"),
    Spec::chain("loop", loop_detect::setup),
    #[cfg(debug_assertions)]
    Spec::test("testupstream", testing::setup_upstream),
    #[cfg(debug_assertions)]
    Spec::test("testpanic", testing::setup_panic),
    #[cfg(debug_assertions)]
    Spec::test("teststall", testing::setup_stall),
    Spec::chain("forward", forward::setup),
    Spec::unsupported("grpc"),
    Spec::unsupported("erratic"),
    Spec::chain("whoami", whoami::setup),
    Spec::unsupported("on"),
    Spec::unsupported("sign"),
    Spec::unsupported("view"),
    Spec::unsupported("nomad"),
    // Never run: removed from CoreDNS.
    Spec::removed("proxy", "removed from CoreDNS in 1.5.0; use 'forward'"),
    Spec::removed(
        "federation",
        "removed from CoreDNS in 1.7.0 with Kubernetes Federation v1; names across clusters \
         now come from the Multi-Cluster Services API (clusterset.local), which CoreDNS serves \
         with the kubernetes plugin's 'multicluster' option (not in clusterdns yet)",
    ),
    Spec::removed(
        "reverse",
        "removed from CoreDNS in 1.2.0; 'template' answers names made from addresses, PTR included",
    ),
    Spec::removed("startup", "removed from CoreDNS in 1.1.0, replaced by 'on'"),
    Spec::removed("shutdown", "removed from CoreDNS in 1.1.0, replaced by 'on'"),
    // Never run: CoreDNS's external plugins.
    Spec::external("alias"),
    Spec::external("alternate"),
    Spec::external("amazondns"),
    Spec::external("dump"),
    Spec::external("ebpf"),
    Spec::external("ens"),
    Spec::external("fanout"),
    Spec::external("finalize"),
    Spec::external("gathersrv"),
    Spec::external("git"),
    Spec::external("gravwell"),
    Spec::external("gslb"),
    Spec::external("idetcd"),
    Spec::external("ipecho"),
    Spec::external("ipin"),
    Spec::external("json"),
    Spec::external("k8s_cache"),
    Spec::external("k8s_dns_chaos"),
    Spec::external("k8s_event"),
    Spec::external("k8s_gateway"),
    Spec::external("kubeforward"),
    Spec::external("kubenodes"),
    Spec::external("kubernetai"),
    Spec::external("lighthouse"),
    Spec::external("mdns"),
    Spec::external("meship"),
    Spec::external("meshname"),
    Spec::external("multicluster"),
    Spec::external("mysql"),
    Spec::external("netbox"),
    Spec::external("pdsql"),
    Spec::external("records"),
    Spec::external("recursor"),
    Spec::external("redis"),
    Spec::external("redisc"),
    Spec::external("unbound"),
    Spec::external("warnlist"),
    Spec::external("wgsd"),
];

/// The plugins clusterdns implements, sorted by name: what `-plugins` lists.
pub fn implemented() -> Vec<&'static str> {
    crate::setup::implemented(PLUGINS)
}

/// The setup wrapper for plugins that may appear only once per server block.
pub fn once<'d>(name: &str, dirs: &[&'d Directive]) -> Result<&'d Directive, ConfigError> {
    match dirs {
        [d] => Ok(d),
        [_, second, ..] => Err(second.err(name, "this plugin can only be used once per Server Block")),
        [] => unreachable!("setup is only called for directives that are present"),
    }
}

/// The host's name (Go's `os.Hostname`, which CoreDNS's `chaos` and `nsid` use), or
/// `localhost` when it cannot be read; read at setup, not per query.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(name) if rc == 0 && !name.is_empty() => name.to_string(),
        _ => "localhost".to_string(),
    }
}

/// The zones a plugin covers: its arguments, or the server block's zones when it has
/// none (CoreDNS's `plugin.OriginsFromArgsOrServerBlock`): fully qualified, lower-cased,
/// a CIDR standing for its reverse zones, duplicates dropped.
pub fn origins(name: &str, d: &Directive, ctx: &SetupCtx<'_>) -> Result<Vec<Zone>, ConfigError> {
    if d.args.is_empty() {
        return Ok(ctx.zones.to_vec());
    }
    let mut zones: Vec<Zone> = Vec::new();
    for a in &d.args {
        let text = a.as_str();
        let parsed: Option<Vec<Zone>> = match reverse_zones_for_cidr(text) {
            Some(rev) => rev.iter().map(|z| Zone::new(z)).collect(),
            None => Zone::new(text).map(|z| vec![z]),
        };
        let parsed = parsed.ok_or_else(|| ConfigError::at(&a.loc, format!("{name}: invalid zone '{text}'")))?;
        for z in parsed {
            if !zones.contains(&z) {
                zones.push(z);
            }
        }
    }
    Ok(zones)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::{self, Kind};

    /// CoreDNS's `plugin.cfg` at v1.14.7, its directive names in order: the spec the
    /// table follows.
    const COREDNS_V1_14: [&str; 60] = [
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
        "view",
        "nomad",
    ];

    fn position(name: &str) -> usize {
        PLUGINS
            .iter()
            .position(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} is not in the table"))
    }

    #[test]
    fn every_name_is_in_the_table_once() {
        let mut names: Vec<&str> = PLUGINS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a name has two rows");
        for name in COREDNS_V1_14 {
            position(name);
        }
    }

    #[test]
    fn the_order_is_coredns_plugin_cfg() {
        let ours: Vec<&str> = PLUGINS
            .iter()
            .map(|s| s.name)
            .filter(|n| COREDNS_V1_14.contains(n))
            .collect();
        assert_eq!(ours, COREDNS_V1_14);
        // clusterdns's own plugins run where their rows say: rrl after acl, before cache.
        assert_eq!(position("rrl"), position("acl") + 1);
        assert_eq!(position("cache"), position("rrl") + 1);
        // Rows that never run come after every row that does.
        let last_run = PLUGINS
            .iter()
            .rposition(|s| !matches!(s.kind, Kind::Removed(_) | Kind::External))
            .unwrap();
        assert!(
            PLUGINS[..last_run]
                .iter()
                .all(|s| !matches!(s.kind, Kind::Removed(_) | Kind::External))
        );
    }

    #[test]
    fn plugins_lists_what_is_implemented() {
        // What `-plugins` printed before the table existed: it must not change.
        assert_eq!(
            implemented(),
            [
                "acl",
                "any",
                "auto",
                "autopath",
                "bind",
                "bufsize",
                "cache",
                "chaos",
                "debug",
                "dns64",
                "errors",
                "file",
                "forward",
                "header",
                "health",
                "hosts",
                "k8s_external",
                "kubernetes",
                "loadbalance",
                "local",
                "log",
                "loop",
                "metadata",
                "minimal",
                "nsid",
                "pprof",
                "prometheus",
                "ready",
                "reload",
                "rewrite",
                "rrl",
                "template",
                "timeouts",
                "tls",
                "transfer",
                "whoami"
            ]
        );
        // Byte for byte what the binary printed then.
        assert_eq!(
            crate::cli::plugins_listing(&implemented()),
            concat!(
                "Server types:\n",
                "  dns\n",
                "\n",
                "Caddyfile loaders:\n",
                "  flag\n",
                "  default\n",
                "\n",
                "Other plugins:\n",
                "  dns.acl\n",
                "  dns.any\n",
                "  dns.auto\n",
                "  dns.autopath\n",
                "  dns.bind\n",
                "  dns.bufsize\n",
                "  dns.cache\n",
                "  dns.chaos\n",
                "  dns.debug\n",
                "  dns.dns64\n",
                "  dns.errors\n",
                "  dns.file\n",
                "  dns.forward\n",
                "  dns.header\n",
                "  dns.health\n",
                "  dns.hosts\n",
                "  dns.k8s_external\n",
                "  dns.kubernetes\n",
                "  dns.loadbalance\n",
                "  dns.local\n",
                "  dns.log\n",
                "  dns.loop\n",
                "  dns.metadata\n",
                "  dns.minimal\n",
                "  dns.nsid\n",
                "  dns.pprof\n",
                "  dns.prometheus\n",
                "  dns.ready\n",
                "  dns.reload\n",
                "  dns.rewrite\n",
                "  dns.rrl\n",
                "  dns.template\n",
                "  dns.timeouts\n",
                "  dns.tls\n",
                "  dns.transfer\n",
                "  dns.whoami\n",
            )
        );
        // Derived from the rows: every implemented row, and nothing else.
        for s in PLUGINS {
            assert_eq!(implemented().contains(&s.name), s.is_implemented(), "{}", s.name);
        }
    }

    #[test]
    fn test_plugins_exist_only_in_debug_builds() {
        let test_rows: Vec<&str> = PLUGINS
            .iter()
            .filter(|s| matches!(s.kind, Kind::Test(_)))
            .map(|s| s.name)
            .collect();
        if cfg!(debug_assertions) {
            assert_eq!(test_rows, ["testupstream", "testpanic", "teststall"]);
            // Just before forward, as before the table existed.
            assert_eq!(position("teststall") + 1, position("forward"));
        } else {
            assert!(test_rows.is_empty(), "{test_rows:?} in a release build");
        }
        // Never listed, even where compiled in.
        assert!(implemented().iter().all(|n| !n.starts_with("test")));
    }

    #[test]
    fn test_plugins_need_the_environment_variable() {
        // Unit tests do not set it; e2e tests set it for the binary they start.
        if std::env::var(setup::TEST_PLUGINS_ENV).is_err() {
            assert!(setup::lookup(PLUGINS, "testpanic").is_none());
        }
        assert!(setup::lookup(PLUGINS, "whoami").is_some());
        assert!(setup::lookup(PLUGINS, "frobnicate").is_none());
    }

    /// The error `-check` prints for a one-directive block.
    fn check(directive: &str) -> String {
        let text = format!("example.org {{\n    whoami\n    {directive}\n}}\n");
        let corefile = crate::config::parse_str(&text, "Corefile", std::path::Path::new(".")).unwrap();
        let opts = crate::server::BuildOptions {
            default_port: 53,
            workers: 1,
            config_dir: std::path::Path::new("."),
            plugins: PLUGINS,
            process: &crate::process::ProcessState::new(),
        };
        match crate::server::Server::build(&corefile, &opts) {
            Ok(_) => panic!("{directive}: accepted"),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"),
        }
    }

    #[test]
    fn directives_clusterdns_cannot_run_are_start_up_errors() {
        let cases = [
            (
                "frobnicate",
                "Corefile:3 - Error during parsing: Unknown directive 'frobnicate'",
            ),
            (
                "dnssec example.org",
                "Corefile:3 - Error during parsing: plugin 'dnssec' is not supported by clusterdns",
            ),
            (
                "nomad",
                "Corefile:3 - Error during parsing: plugin 'nomad' is not supported by clusterdns",
            ),
            (
                "proxy . 8.8.8.8",
                "Corefile:3 - Error during parsing: Unknown directive 'proxy': removed from CoreDNS in 1.5.0; use 'forward'",
            ),
            (
                "federation cluster.local { prod prod.feddomain.com }",
                "Corefile:3 - Error during parsing: Unknown directive 'federation': removed from CoreDNS in 1.7.0 \
                 with Kubernetes Federation v1; names across clusters now come from the Multi-Cluster \
                 Services API (clusterset.local), which CoreDNS serves with the kubernetes plugin's \
                 'multicluster' option (not in clusterdns yet)",
            ),
            (
                "alternate original NXDOMAIN . 8.8.8.8",
                "Corefile:3 - Error during parsing: Unknown directive 'alternate': an external CoreDNS plugin, not built into clusterdns",
            ),
            (
                "k8s_gateway example.org",
                "Corefile:3 - Error during parsing: Unknown directive 'k8s_gateway': an external CoreDNS plugin, not built into clusterdns",
            ),
            (
                "netbox { url http://127.0.0.1 }",
                "Corefile:3 - Error during parsing: Unknown directive 'netbox': an external CoreDNS plugin, not built into clusterdns",
            ),
        ];
        for (directive, want) in cases {
            assert_eq!(check(directive), want);
        }
        // Each row that cannot run says so; each that can, does not.
        for s in PLUGINS {
            let runs = s.is_implemented() || matches!(s.kind, Kind::Test(_));
            assert_eq!(s.refusal().is_none(), runs, "{}", s.name);
        }
    }
}
