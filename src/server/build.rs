//! From a parsed Corefile to a [`Server`]: the plugin chains of the server blocks, the
//! addresses to listen on and, per address, the table that routes a query to the block
//! with the longest matching zone. Building binds nothing and contacts nothing, which
//! is what `-check` and a failed reload rely on.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use crate::chain::{Chain, Plugin, RouteTag};
use crate::config::{ConfigError, Corefile, Directive, ServerKey};
use crate::dns::{NameKey, Zone};
use crate::plugin::prometheus::counters::RouteCounters;
use crate::plugin::timeouts::Timeouts;
use crate::plugin::{self, Kind, SetupCtx};

/// One server block, built: its zones and its chain.
pub struct Block {
    /// The zones of the block's keys (`cluster.local.`).
    pub zones: Vec<Zone>,
    pub chain: Chain,
    /// The block has `ready`: its plugins' readiness counts for `/ready`.
    pub ready: bool,
}

/// A zone → block entry of a router.
pub struct Route {
    zone: Zone,
    /// Slot, listener and zone names, for metric labels.
    pub tag: Arc<RouteTag>,
    pub block: Arc<Block>,
}

/// Picks the block for a query on one listen address.
pub struct Router {
    /// Longest zone first, so the first suffix match is the longest.
    routes: Vec<Route>,
}

impl Router {
    /// The block whose zone is the longest suffix of `qname`, and that zone's name. DS
    /// queries go to the shortest match instead, so that they reach the parent side of
    /// a zone cut (as CoreDNS does).
    pub fn route(&self, qname: &NameKey, ds: bool) -> Option<&Route> {
        let matches = |r: &&Route| r.zone.contains(qname);
        if ds {
            self.routes.iter().rev().find(matches)
        } else {
            self.routes.iter().find(matches)
        }
    }
}

/// One address to listen on (UDP and TCP), with its router.
pub struct Listener {
    pub addr: SocketAddr,
    pub router: Router,
    /// `dns://[bind]:port`, the `server` label of CoreDNS's metrics.
    pub label: String,
    /// TCP timeouts (`timeouts`).
    pub timeouts: Timeouts,
    /// Per worker: queries turned away before any chain (metrics zone `dropped`).
    pub dropped: Arc<[RouteCounters]>,
}

/// A complete configuration generation: what the workers serve.
pub struct Server {
    pub listeners: Vec<Listener>,
    pub blocks: Vec<Arc<Block>>,
    /// The start-up lines CoreDNS prints (`.:53`, `example.org.:53 on 127.0.0.1`).
    pub banner: Vec<String>,
    /// Health, readiness, reload and metrics endpoints.
    pub process: ProcessConfig,
}

/// How to build: the defaults the command line sets.
pub struct BuildOptions<'a> {
    /// Port for keys without one (`-dns.port`).
    pub default_port: u16,
    /// Worker count, for plugins with per-worker state.
    pub workers: usize,
    /// Directory relative paths in the Corefile are taken from.
    pub config_dir: &'a Path,
}

impl Server {
    /// Builds every block's chain and the listeners, validating every plugin's options.
    /// Every error found is returned, not only the first (for `-check`).
    pub fn build(corefile: &Corefile, opts: &BuildOptions<'_>) -> Result<Server, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut blocks = Vec::new();
        let mut process = ProcessConfig::default();
        // (listen address, zone) must be unique; listen address -> routes.
        let mut routes: BTreeMap<SocketAddr, (Vec<Route>, bool, Option<Timeouts>)> = BTreeMap::new();
        let mut seen: HashSet<(SocketAddr, Zone)> = HashSet::new();
        let mut banner = Vec::new();
        for sb in &corefile.blocks {
            let mut keys = Vec::new();
            for k in &sb.keys {
                match ServerKey::parse(k, opts.default_port) {
                    Ok(k) => keys.push(k),
                    Err(e) => errors.push(e),
                }
            }
            let zones: Vec<Zone> = keys.iter().flat_map(|k| k.zones.iter().cloned()).collect();
            // A block with errors still goes on (with what could be built), so that its
            // zones count when later blocks are checked for duplicates.
            let BlockParts {
                chain,
                binds,
                timeouts,
                process: block_process,
            } = build_chain(&sb.directives, &zones, opts, &mut errors);
            let ready = block_process.ready.is_some();
            process.merge(block_process);
            let block = Arc::new(Block { zones, chain, ready });
            blocks.push(block.clone());
            for key in &keys {
                let addrs: Vec<(IpAddr, bool)> = match &binds {
                    Some(ips) => ips.iter().map(|ip| (*ip, true)).collect(),
                    None => vec![
                        (IpAddr::V4(Ipv4Addr::UNSPECIFIED), false),
                        (IpAddr::V6(Ipv6Addr::UNSPECIFIED), false),
                    ],
                };
                for zone in &key.zones {
                    let line = match &binds {
                        Some(ips) => {
                            let list: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
                            format!("{zone}:{} on {}", key.port, list.join(", "))
                        }
                        None => format!("{zone}:{}", key.port),
                    };
                    if !banner.contains(&line) {
                        banner.push(line);
                    }
                }
                for (ip, bound) in addrs {
                    let addr = SocketAddr::new(ip, key.port);
                    for zone in &key.zones {
                        if !seen.insert((addr, zone.clone())) {
                            errors.push(ConfigError::at(
                                &key.loc,
                                format!("cannot serve dns://{zone}:{} - it is already defined", key.port),
                            ));
                            continue;
                        }
                        let entry = routes.entry(addr).or_insert_with(|| (Vec::new(), bound, None));
                        if entry.2.is_none() {
                            entry.2 = timeouts;
                        }
                        entry.0.push(Route {
                            zone: zone.clone(),
                            tag: Arc::new(RouteTag {
                                slot: 0,
                                server: "".into(),
                                zone: zone.as_str().into(),
                            }),
                            block: block.clone(),
                        });
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        banner.sort();
        let mut slot = 0;
        let listeners: Vec<Listener> = routes
            .into_iter()
            .map(|(addr, (mut routes, bound, timeouts))| {
                routes.sort_by(|a, b| {
                    b.zone
                        .wire()
                        .len()
                        .cmp(&a.zone.wire().len())
                        .then_with(|| a.tag.zone.cmp(&b.tag.zone))
                });
                let label = if bound {
                    match addr.ip() {
                        IpAddr::V6(ip) => format!("dns://[{ip}]:{}", addr.port()),
                        IpAddr::V4(ip) => format!("dns://{ip}:{}", addr.port()),
                    }
                } else {
                    format!("dns://:{}", addr.port())
                };
                // Now that the listener's label is known, the routes get their tags.
                let server: Arc<str> = label.as_str().into();
                for r in &mut routes {
                    r.tag = Arc::new(RouteTag {
                        slot,
                        server: server.clone(),
                        zone: r.tag.zone.clone(),
                    });
                    slot += 1;
                }
                let dropped = crate::plugin::prometheus::route_counters(&label, "dropped", opts.workers.max(1));
                Listener {
                    addr,
                    router: Router { routes },
                    label,
                    timeouts: timeouts.unwrap_or_default(),
                    dropped,
                }
            })
            .collect();
        // Tell each block's plugins which routes they serve.
        for b in &blocks {
            let tags: Vec<Arc<RouteTag>> = listeners
                .iter()
                .flat_map(|l| l.router.routes.iter())
                .filter(|r| Arc::ptr_eq(&r.block, b))
                .map(|r| r.tag.clone())
                .collect();
            for p in b.chain.plugins() {
                p.attach(&tags);
            }
        }
        Ok(Server {
            listeners,
            blocks,
            banner,
            process,
        })
    }

    /// Every plugin of every block, once.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<dyn Plugin>> {
        self.blocks.iter().flat_map(|b| b.chain.plugins().iter())
    }

    /// Starts the plugins' background work.
    pub fn start(&self) {
        for p in self.plugins() {
            p.start();
        }
    }

    /// Stops the plugins' background work.
    pub fn stop(&self) {
        for p in self.plugins() {
            p.stop();
        }
    }

    /// The names of the plugins, in blocks with `ready`, that report not ready yet
    /// (sorted, each once): what `/ready` answers with.
    pub fn not_ready(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .blocks
            .iter()
            .filter(|b| b.ready)
            .flat_map(|b| b.chain.plugins().iter())
            .filter(|p| p.ready() == Some(false))
            .map(|p| p.name())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// A block's chain and what its server-level and process-level directives say.
struct BlockParts {
    chain: Chain,
    binds: Option<Vec<IpAddr>>,
    timeouts: Option<Timeouts>,
    process: ProcessConfig,
}

/// The process-wide settings of a Corefile: gathered from every block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessConfig {
    pub health: Option<plugin::health::Health>,
    pub ready: Option<plugin::ready::Ready>,
    pub reload: Option<plugin::reload::Reload>,
    /// Addresses of `/metrics` endpoints (`prometheus`).
    pub metrics: Vec<SocketAddr>,
}

impl ProcessConfig {
    /// Folds one block's settings in: the first block that sets health, ready or
    /// reload wins, as the process has one of each; metrics endpoints add up.
    fn merge(&mut self, other: ProcessConfig) {
        self.health = self.health.or(other.health);
        self.ready = self.ready.or(other.ready);
        self.reload = self.reload.or(other.reload);
        for m in other.metrics {
            if !self.metrics.contains(&m) {
                self.metrics.push(m);
            }
        }
    }
}

/// Sets up the plugins of one block in CoreDNS's order; every error found is added to
/// `errors` and the rest is built anyway.
fn build_chain(
    directives: &[Directive],
    zones: &[Zone],
    opts: &BuildOptions<'_>,
    errors: &mut Vec<ConfigError>,
) -> BlockParts {
    // Group the directives by name, keeping the order of first appearance for errors.
    let mut by_name: Vec<(usize, Kind, Vec<&Directive>)> = Vec::new();
    for d in directives {
        let name = d.name.as_str();
        let Some((order, kind)) = plugin::lookup(name) else {
            errors.push(ConfigError::at(
                d.loc(),
                format!("Error during parsing: Unknown directive '{name}'"),
            ));
            continue;
        };
        if let Kind::Unsupported = kind {
            errors.push(ConfigError::at(
                d.loc(),
                format!("Error during parsing: plugin '{name}' is not supported by clusterdns"),
            ));
            continue;
        }
        match by_name.iter_mut().find(|(_, _, ds)| ds[0].name.as_str() == name) {
            Some((_, _, ds)) => ds.push(d),
            None => by_name.push((order, kind, vec![d])),
        }
    }
    // Server-level directives first: plugins may depend on them (kubernetes on `bind`).
    let mut binds = None;
    let mut timeouts = None;
    for (_, kind, ds) in &by_name {
        if let Kind::Server = kind {
            if ds[0].name.as_str() == "timeouts" {
                match plugin::timeouts::parse(ds) {
                    Ok(t) => timeouts = Some(t),
                    Err(e) => errors.push(e),
                }
            } else {
                match plugin::bind::addresses(ds) {
                    Ok(b) => binds = Some(b),
                    Err(e) => errors.push(e),
                }
            }
        }
    }
    let ctx = SetupCtx {
        zones,
        config_dir: opts.config_dir.to_path_buf(),
        workers: opts.workers,
        binds: binds.as_deref(),
    };
    let mut plugins: Vec<(usize, Arc<dyn Plugin>)> = Vec::new();
    for (order, kind, ds) in &by_name {
        if let Kind::Chain(setup) = kind {
            match setup(ds, &ctx) {
                Ok(p) => plugins.push((*order, p)),
                Err(e) => errors.push(e),
            }
        }
    }
    let mut process = ProcessConfig::default();
    for (_, kind, ds) in &by_name {
        let parsed = match (kind, ds[0].name.as_str()) {
            (Kind::Process, "health") => plugin::health::parse(ds).map(|h| process.health = Some(h)),
            (Kind::Process, "ready") => plugin::ready::parse(ds).map(|r| process.ready = Some(r)),
            (Kind::Process, "reload") => plugin::reload::parse(ds).map(|r| process.reload = Some(r)),
            (Kind::Chain(_), "prometheus") => plugin::prometheus::address(ds[0]).map(|a| process.metrics.push(a)),
            _ => Ok(()),
        };
        if let Err(e) = parsed {
            errors.push(e);
        }
    }
    plugins.sort_by_key(|(order, _)| *order);
    BlockParts {
        chain: Chain::new(plugins.into_iter().map(|(_, p)| p).collect()),
        binds,
        timeouts,
        process,
    }
}
