//! From a parsed Corefile to a [`Server`]: the plugin chains of the server blocks, the
//! addresses to listen on and, per address, the table that routes a query to the block
//! with the longest matching zone. Building binds nothing and contacts nothing, which
//! is what `-check` and a failed reload rely on.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use crate::chain::{Chain, Handler, RouteTag};
use crate::config::{ConfigError, Corefile, Directive, Scheme, ServerKey};
use crate::dns::wire::MAX_NAME_LEN;
use crate::dns::{NameKey, Zone};
use crate::metrics::Families;
use crate::metrics::route::{RouteCounters, Totals};
use crate::process::ProcessState;
use crate::settings::{BlockSettings, ProcessSettings, Timeouts};
use crate::setup::{self, AttachCtx, Kind, Lifecycle, SetupCtx, Spec};
use crate::tls::ServerTls;

/// One server block, built: its zones, its chain and its plugins' lifecycles.
pub struct Block {
    /// The zones of the block's keys (`cluster.local.`).
    pub zones: Vec<Zone>,
    pub chain: Chain,
    /// The plugins with a lifecycle, by directive name, in execution order.
    pub lifecycles: Vec<(&'static str, Arc<dyn Lifecycle>)>,
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
    /// The routes' zones, indexed by wire length.
    index: ZoneIndex,
}

impl Router {
    fn new(routes: Vec<Route>) -> Router {
        let index = ZoneIndex::new(routes.iter().map(|r| r.zone.wire()));
        Router { routes, index }
    }

    /// The block whose zone is the longest suffix of `qname`, and that zone's name. DS
    /// queries go to the shortest match instead, so that they reach the parent side of
    /// a zone cut (as CoreDNS does).
    #[inline]
    pub fn route(&self, qname: &NameKey, ds: bool) -> Option<&Route> {
        self.index.find(qname, ds).map(|i| &self.routes[i])
    }
}

/// Zone wires (lower-cased, distinct) grouped by length, for finding which of them are
/// suffixes of a name at its label boundaries. A query costs one table look-up per
/// label of its name and a byte comparison only where a zone has that suffix's length,
/// whatever the number of zones (a linear scan of 20 zones cost about twice as much).
struct ZoneIndex {
    /// The zones, longest first; the result of [`ZoneIndex::find`] indexes this.
    wires: Box<[Box<[u8]>]>,
    /// For each wire length, the range of `wires` with that length.
    by_len: Box<[(u16, u16); MAX_NAME_LEN + 1]>,
}

impl ZoneIndex {
    /// `wires` must be sorted longest first.
    fn new<'a>(wires: impl Iterator<Item = &'a [u8]>) -> ZoneIndex {
        let wires: Box<[Box<[u8]>]> = wires.map(Box::from).collect();
        debug_assert!(wires.windows(2).all(|w| w[0].len() >= w[1].len()));
        let mut by_len = Box::new([(0u16, 0u16); MAX_NAME_LEN + 1]);
        for (i, w) in wires.iter().enumerate() {
            let slot = &mut by_len[w.len()];
            if slot.0 == slot.1 {
                *slot = (i as u16, i as u16 + 1);
            } else {
                slot.1 = i as u16 + 1;
            }
        }
        ZoneIndex { wires, by_len }
    }

    /// The zone equal to `qname` with its leftmost `skip` labels removed, if any.
    #[inline]
    fn at(&self, qname: &NameKey, skip: usize) -> Option<usize> {
        let suffix = qname.suffix(skip);
        let (from, to) = self.by_len[suffix.len()];
        (from as usize..to as usize).find(|&i| *self.wires[i] == *suffix)
    }

    /// The longest zone that is `qname` or a label-aligned suffix of it (the shortest
    /// with `shortest`), as an index into the zones.
    #[inline]
    fn find(&self, qname: &NameKey, shortest: bool) -> Option<usize> {
        let labels = qname.label_count();
        if shortest {
            (0..=labels).rev().find_map(|skip| self.at(qname, skip))
        } else {
            (0..=labels).find_map(|skip| self.at(qname, skip))
        }
    }
}

/// One address to listen on (UDP and TCP, or TLS), with its router.
pub struct Listener {
    pub addr: SocketAddr,
    pub router: Router,
    /// `dns://[bind]:port` (`tls://...`), the `server` label of CoreDNS's metrics.
    pub label: String,
    /// `Some` for a `tls://` listener: DNS over TLS on TCP only, no UDP socket.
    pub tls: Option<ServerTls>,
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
    pub process: ProcessSettings,
}

/// How to build: the defaults the command line sets.
pub struct BuildOptions<'a> {
    /// Port for keys without one (`-dns.port`).
    pub default_port: u16,
    /// Worker count, for plugins with per-worker state.
    pub workers: usize,
    /// Directory relative paths in the Corefile are taken from.
    pub config_dir: &'a Path,
    /// The plugin table (`plugin::PLUGINS`): what each directive is and where it runs.
    pub plugins: &'static [Spec],
    /// What outlives the configuration (counters kept across reloads, shared watches).
    pub process: &'a ProcessState,
}

impl Server {
    /// Builds every block's chain and the listeners, validating every plugin's options.
    /// Every error found is returned, not only the first (for `-check`).
    pub fn build(corefile: &Corefile, opts: &BuildOptions<'_>) -> Result<Server, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut blocks = Vec::new();
        let mut process = ProcessSettings::default();
        // (listen address, zone) must be unique; listen address -> routes.
        let mut routes: BTreeMap<SocketAddr, Pending> = BTreeMap::new();
        let mut seen: HashSet<(SocketAddr, Zone)> = HashSet::new();
        // Transport clashes reported (once per key and zone, not per address family).
        let mut clashes: HashSet<(crate::config::Loc, Zone)> = HashSet::new();
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
                lifecycles,
                settings: BlockSettings { binds, timeouts, tls },
                process: block_process,
            } = build_chain(&sb.directives, &zones, opts, &mut errors);
            let tls = block_tls(&keys, tls.as_ref(), opts, &mut errors);
            let ready = block_process.ready.is_some();
            process.merge(block_process);
            let block = Arc::new(Block {
                zones,
                chain,
                lifecycles,
                ready,
            });
            blocks.push(block.clone());
            for key in &keys {
                let addrs: Vec<(IpAddr, bool)> = match &binds {
                    Some(ips) => ips.iter().map(|ip| (*ip, true)).collect(),
                    None => vec![
                        (IpAddr::V4(Ipv4Addr::UNSPECIFIED), false),
                        (IpAddr::V6(Ipv6Addr::UNSPECIFIED), false),
                    ],
                };
                // CoreDNS prints the scheme of all but plain DNS (`tls://.:853`).
                let scheme = match key.scheme {
                    Scheme::Dns => "",
                    Scheme::Tls => "tls://",
                };
                for zone in &key.zones {
                    let line = match &binds {
                        Some(ips) => {
                            let list: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
                            format!("{scheme}{zone}:{} on {}", key.port, list.join(", "))
                        }
                        None => format!("{scheme}{zone}:{}", key.port),
                    };
                    if !banner.contains(&line) {
                        banner.push(line);
                    }
                }
                for (ip, bound) in addrs {
                    let addr = SocketAddr::new(ip, key.port);
                    for zone in &key.zones {
                        let scheme = key.scheme.as_str();
                        if !seen.insert((addr, zone.clone())) {
                            errors.push(ConfigError::at(
                                &key.loc,
                                format!("cannot serve {scheme}://{zone}:{} - it is already defined", key.port),
                            ));
                            continue;
                        }
                        let entry = routes.entry(addr).or_insert_with(|| Pending {
                            routes: Vec::new(),
                            bound,
                            timeouts: None,
                            scheme: key.scheme,
                            tls: None,
                        });
                        if entry.scheme != key.scheme {
                            // One address, one transport: TLS and plain DNS cannot share
                            // a TCP port (CoreDNS fails to bind the second).
                            if !clashes.insert((key.loc.clone(), zone.clone())) {
                                continue;
                            }
                            errors.push(ConfigError::at(
                                &key.loc,
                                format!(
                                    "cannot serve {scheme}://{zone}:{} - the address is already served by {}://",
                                    key.port,
                                    entry.scheme.as_str()
                                ),
                            ));
                            continue;
                        }
                        if entry.timeouts.is_none() {
                            entry.timeouts = timeouts;
                        }
                        // The first block's certificate serves the address (CoreDNS keeps
                        // one TLS configuration per listener too).
                        if key.scheme == Scheme::Tls && entry.tls.is_none() {
                            entry.tls = tls.clone();
                        }
                        entry.routes.push(Route {
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
            .map(|(addr, pending)| {
                let Pending {
                    mut routes,
                    bound,
                    timeouts,
                    scheme,
                    tls,
                } = pending;
                let scheme = scheme.as_str();
                routes.sort_by(|a, b| {
                    b.zone
                        .wire()
                        .len()
                        .cmp(&a.zone.wire().len())
                        .then_with(|| a.tag.zone.cmp(&b.tag.zone))
                });
                let label = if bound {
                    match addr.ip() {
                        IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{}", addr.port()),
                        IpAddr::V4(ip) => format!("{scheme}://{ip}:{}", addr.port()),
                    }
                } else {
                    format!("{scheme}://:{}", addr.port())
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
                let dropped = opts.process.route_counters(&label, "dropped", opts.workers.max(1));
                Listener {
                    addr,
                    router: Router::new(routes),
                    label,
                    tls,
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
            let chain: Vec<&'static str> = b.chain.handlers().iter().map(|h| h.name()).collect();
            let ctx = AttachCtx {
                routes: &tags,
                chain: &chain,
                process: opts.process,
            };
            for (_, l) in &b.lifecycles {
                l.attach(&ctx);
            }
        }
        Ok(Server {
            listeners,
            blocks,
            banner,
            process,
        })
    }

    /// The lifecycle of every plugin of every block that has one.
    pub fn lifecycles(&self) -> impl Iterator<Item = &Arc<dyn Lifecycle>> {
        self.blocks.iter().flat_map(|b| b.lifecycles.iter().map(|(_, l)| l))
    }

    /// Starts the plugins' background work.
    pub fn start(&self) {
        for l in self.lifecycles() {
            l.start();
        }
    }

    /// Stops the plugins' background work.
    pub fn stop(&self) {
        for l in self.lifecycles() {
            l.stop();
        }
    }

    /// The metrics of every plugin of every block (each once), and the queries turned
    /// away before any chain (no zone for the name, a class other than IN), which CoreDNS
    /// counts under the zone `dropped`.
    pub fn metrics(&self, out: &mut Families) {
        let mut seen: HashSet<*const ()> = HashSet::new();
        for l in self.lifecycles() {
            if seen.insert(Arc::as_ptr(l).cast::<()>()) {
                l.metrics(out);
            }
        }
        for l in &self.listeners {
            // The IPv4 and IPv6 listeners of one unbound address share their label, and
            // so their counters.
            if !out.first_from(Arc::as_ptr(&l.dropped)) {
                continue;
            }
            let mut totals = Totals::default();
            l.dropped.iter().for_each(|c| totals.add(c));
            totals.write(out, &l.label, "dropped");
        }
    }

    /// The names of the plugins, in blocks with `ready`, that report not ready yet
    /// (sorted, each once): what `/ready` answers with.
    pub fn not_ready(&self) -> Vec<&'static str> {
        self.not_ready_in(false)
    }

    /// The same over every block, with `ready` or not: what a process that took its
    /// sockets in a hand-over waits for before its predecessor stops reading them.
    pub fn not_ready_anywhere(&self) -> Vec<&'static str> {
        self.not_ready_in(true)
    }

    fn not_ready_in(&self, every_block: bool) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = self
            .blocks
            .iter()
            .filter(|b| every_block || b.ready)
            .flat_map(|b| b.lifecycles.iter())
            .filter(|(_, l)| l.ready() == Some(false))
            .map(|(name, _)| *name)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// One listen address's share of the blocks, while they are gathered.
struct Pending {
    routes: Vec<Route>,
    /// Bound to a `bind` address (not the wildcard).
    bound: bool,
    timeouts: Option<Timeouts>,
    scheme: Scheme,
    tls: Option<ServerTls>,
}

/// A block's TLS configuration, loaded: its `tls://` keys need one (CoreDNS would serve
/// such a block unencrypted without it, which clusterdns refuses), and `tls` is an
/// error in a block without one (CoreDNS ignores it there).
fn block_tls(
    keys: &[ServerKey],
    settings: Option<&crate::tls::ServerSettings>,
    opts: &BuildOptions<'_>,
    errors: &mut Vec<ConfigError>,
) -> Option<ServerTls> {
    let tls_key = keys.iter().find(|k| k.scheme == Scheme::Tls);
    match (tls_key, settings) {
        (Some(k), None) => {
            errors.push(ConfigError::at(
                &k.loc,
                "Error during parsing: a tls:// server block needs the tls plugin (tls CERT KEY [CA])",
            ));
            None
        }
        (None, Some(s)) => {
            errors.push(ConfigError::at(
                &s.loc,
                "tls: only a tls:// server block can use it (this block serves plain DNS)",
            ));
            None
        }
        (Some(_), Some(s)) => match s.load(opts.config_dir) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        (None, None) => None,
    }
}

/// A block's chain and what its server-level and process-level directives say.
struct BlockParts {
    chain: Chain,
    lifecycles: Vec<(&'static str, Arc<dyn Lifecycle>)>,
    settings: BlockSettings,
    process: ProcessSettings,
}

/// Sets up the plugins of one block in the table's order; every error found is added
/// to `errors` and the rest is built anyway.
fn build_chain(
    directives: &[Directive],
    zones: &[Zone],
    opts: &BuildOptions<'_>,
    errors: &mut Vec<ConfigError>,
) -> BlockParts {
    // Group the directives by name, keeping the order of first appearance for errors.
    let mut by_name: Vec<(usize, &Spec, Vec<&Directive>)> = Vec::new();
    for d in directives {
        let name = d.name.as_str();
        let Some((order, spec)) = setup::lookup(opts.plugins, name) else {
            errors.push(ConfigError::at(d.loc(), setup::unknown(name)));
            continue;
        };
        if let Some(refusal) = spec.refusal() {
            errors.push(ConfigError::at(d.loc(), refusal));
            continue;
        }
        match by_name.iter_mut().find(|(_, s, _)| s.name == name) {
            Some((_, _, ds)) => ds.push(d),
            None => by_name.push((order, spec, vec![d])),
        }
    }
    // Server-level directives first: plugins may depend on them (kubernetes on `bind`).
    let mut settings = BlockSettings::default();
    for (_, spec, ds) in &by_name {
        if let Kind::Server(configure) = spec.kind {
            if let Err(e) = configure(ds, &mut settings) {
                errors.push(e);
            }
        }
    }
    let ctx = SetupCtx {
        zones,
        config_dir: opts.config_dir.to_path_buf(),
        workers: opts.workers,
        binds: settings.binds.as_deref(),
        process: opts.process,
    };
    let mut plugins: Vec<(usize, &'static str, setup::Plugin)> = Vec::new();
    for (order, spec, ds) in &by_name {
        if let Kind::Chain(setup) | Kind::ChainAndProcess(setup, _) | Kind::Test(setup) = spec.kind {
            match setup(ds, &ctx) {
                Ok(p) => plugins.push((*order, spec.name, p)),
                Err(e) => errors.push(e),
            }
        }
    }
    let mut process = ProcessSettings::default();
    for (_, spec, ds) in &by_name {
        if let Kind::Process(configure) | Kind::ChainAndProcess(_, configure) = spec.kind {
            if let Err(e) = configure(ds, &mut process) {
                errors.push(e);
            }
        }
    }
    plugins.sort_by_key(|(order, _, _)| *order);
    let mut handlers: Vec<Arc<dyn Handler>> = Vec::new();
    let mut lifecycles = Vec::new();
    for (_, name, p) in plugins {
        handlers.extend(p.handler);
        lifecycles.extend(p.lifecycle.map(|l| (name, l)));
    }
    // Plugins that work with another of the block find it now (autopath @kubernetes).
    for h in &handlers {
        if let Err(e) = h.link(&handlers) {
            errors.push(e);
        }
    }
    BlockParts {
        chain: Chain::new(handlers),
        lifecycles,
        settings,
        process,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The router's rule as a linear scan: the longest zone containing the name (the
    /// shortest for DS), over zones sorted longest first.
    fn linear(zones: &[Zone], qname: &NameKey, ds: bool) -> Option<usize> {
        let matches = |i: &usize| zones[*i].contains(qname);
        if ds {
            (0..zones.len()).rev().find(matches)
        } else {
            (0..zones.len()).find(matches)
        }
    }

    fn sorted(texts: &[&str]) -> Vec<Zone> {
        let mut zones: Vec<Zone> = texts.iter().map(|t| Zone::new(t).unwrap()).collect();
        zones.sort_by(|a, b| {
            b.wire()
                .len()
                .cmp(&a.wire().len())
                .then_with(|| a.as_str().cmp(b.as_str()))
        });
        zones
    }

    #[test]
    fn zone_index_agrees_with_a_linear_scan() {
        let tables: [&[&str]; 4] = [
            &[
                "cluster.local",
                "svc.cluster.local",
                "default.svc.cluster.local",
                "local",
                ".",
                "10.in-addr.arpa",
                "0.10.in-addr.arpa",
                "in-addr.arpa",
                "ip6.arpa",
                "synth.test",
                "example.org",
                "org",
                "a\\.b.c",
                "xcluster.local",
            ],
            &["cluster.local", "example.org"],
            &["."],
            &[],
        ];
        let names = [
            ".",
            "local.",
            "cluster.local.",
            "CLUSTER.Local.",
            "xcluster.local.",
            "Xcluster.local.",
            "a.xcluster.local.",
            "yxcluster.local.",
            "luster.local.",
            "svc.cluster.local.",
            "web.default.svc.cluster.local.",
            "WEB.Default.SVC.cluster.LOCAL.",
            "a.b.c.d.e.f.g.svc.cluster.local.",
            "default.svc.cluster.local.",
            "1.0.0.10.in-addr.arpa.",
            "1.0.1.10.in-addr.arpa.",
            "10.in-addr.arpa.",
            "in-addr.arpa.",
            "1.0.0.127.in-addr.arpa.",
            "b.a.ip6.arpa.",
            "arpa.",
            "foo.synth.test.",
            "synth.test.",
            "ynth.test.",
            "test.",
            "www.example.org.",
            "example.org.",
            "xexample.org.",
            "org.",
            "a.org.",
            "a\\.b.c.",
            "x.a\\.b.c.",
            "a.b.c.",
            "b.c.",
            "nothere.",
            "very.long.name.with.many.labels.that.goes.on.and.on.example.org.",
        ];
        for table in tables {
            let zones = sorted(table);
            let index = ZoneIndex::new(zones.iter().map(|z| z.wire()));
            for name in names {
                let qname = NameKey::from_text(name).unwrap();
                for ds in [false, true] {
                    let got = index.find(&qname, ds);
                    assert_eq!(got, linear(&zones, &qname, ds), "{table:?} {name} ds={ds}");
                    let got = got.map(|i| zones[i].as_str());
                    if table.len() == 14 && name == "web.default.svc.cluster.local." {
                        assert_eq!(got, Some(if ds { "." } else { "default.svc.cluster.local." }));
                    }
                    if table.len() == 14 && name == "Xcluster.local." {
                        assert_eq!(got, Some(if ds { "." } else { "xcluster.local." }));
                    }
                    if table.len() == 2 && name == "xcluster.local." {
                        assert_eq!(got, None);
                    }
                }
            }
        }
    }
}
