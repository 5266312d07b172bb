//! The plugin table's types and the setup contract: what a row says about a directive
//! ([`Spec`], [`Kind`]), what a plugin's setup is given ([`SetupCtx`]) and what it
//! returns ([`Plugin`]: a query [`Handler`] for the chain, a [`Lifecycle`] for the
//! server, or both), and the lifecycle half of the plugin contract.
//!
//! ```text
//!   plugin::PLUGINS: one Spec per directive, in execution order (CoreDNS's plugin.cfg)
//!        │
//!        ▼  server::build, for each directive of a server block
//!   Kind::Server  ── configure ──▶ BlockSettings     (bind, timeouts: first, the chain may read them)
//!   Kind::Chain   ── setup ──────▶ the plugin, placed in the chain by its row's position
//!   Kind::Process ── configure ──▶ ProcessSettings   (health, ready, reload)
//!   Kind::ChainAndProcess          both (prometheus: counts queries, opens /metrics)
//!   Kind::Unsupported / Removed / External ──▶ `FILE:LINE - Error during parsing: ...`
//! ```
//!
//! The rows themselves live in `plugin/mod.rs`; the server gets them through
//! `server::BuildOptions`, so that it knows no plugin by name (or at all).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::chain::{Handler, RouteTag};
use crate::config::{ConfigError, Directive};
use crate::metrics::Families;
use crate::process::ProcessState;
use crate::settings::{BlockSettings, ProcessSettings};

/// One row of the plugin table: a directive and how clusterdns handles it.
#[derive(Clone, Copy)]
pub struct Spec {
    /// The directive name, as written in a Corefile.
    pub name: &'static str,
    pub kind: Kind,
}

/// How clusterdns handles a directive.
#[derive(Clone, Copy)]
pub enum Kind {
    /// A plugin in the query chain.
    Chain(SetupFn),
    /// Configures the block's listeners, not the chain (`bind`, `timeouts`). Runs before
    /// the chain's setups, which may read what it set ([`SetupCtx::binds`]).
    Server(ServerFn),
    /// Process-wide, run by the controller (`health`, `ready`, `reload`).
    Process(ProcessFn),
    /// In the chain and process-wide: `prometheus` counts its block's queries and opens
    /// a `/metrics` endpoint.
    ChainAndProcess(SetupFn, ProcessFn),
    /// A chain plugin that tests the server itself. Its rows exist only in debug builds
    /// (what the end-to-end tests run), and even there only with
    /// [`TEST_PLUGINS_ENV`]`=1`: a production Corefile can never name one.
    Test(SetupFn),
    /// CoreDNS has it; clusterdns does not (yet). An error, never silently ignored: a
    /// Corefile that relies on it would otherwise answer differently.
    Unsupported,
    /// CoreDNS had it and removed it; the text says since when and what replaces it.
    Removed(&'static str),
    /// A CoreDNS plugin that lives outside CoreDNS's tree (compiled in by those who want
    /// it): never part of clusterdns.
    External,
}

/// Builds a plugin from every directive of its name in one server block (most plugins
/// accept only one: see `plugin::once`).
pub type SetupFn = fn(&[&Directive], &SetupCtx<'_>) -> Result<Plugin, ConfigError>;

/// Parses a server-level directive (every one of its name in the block) into the
/// block's settings.
pub type ServerFn = fn(&[&Directive], &mut BlockSettings) -> Result<(), ConfigError>;

/// Parses a process-level directive (every one of its name in the block) into the
/// block's share of the process settings.
pub type ProcessFn = fn(&[&Directive], &mut ProcessSettings) -> Result<(), ConfigError>;

/// The environment variable that enables the test plugins ([`Kind::Test`]).
pub const TEST_PLUGINS_ENV: &str = "CLUSTERDNS_TEST_PLUGINS";

impl Spec {
    /// A plugin in the chain.
    pub const fn chain(name: &'static str, setup: SetupFn) -> Spec {
        Spec {
            name,
            kind: Kind::Chain(setup),
        }
    }

    /// A directive that configures the block's listeners.
    pub const fn server(name: &'static str, configure: ServerFn) -> Spec {
        Spec {
            name,
            kind: Kind::Server(configure),
        }
    }

    /// A process-wide directive.
    pub const fn process(name: &'static str, configure: ProcessFn) -> Spec {
        Spec {
            name,
            kind: Kind::Process(configure),
        }
    }

    /// A chain plugin that is process-wide too.
    pub const fn chain_and_process(name: &'static str, setup: SetupFn, configure: ProcessFn) -> Spec {
        Spec {
            name,
            kind: Kind::ChainAndProcess(setup, configure),
        }
    }

    /// A plugin for the server's own tests.
    pub const fn test(name: &'static str, setup: SetupFn) -> Spec {
        Spec {
            name,
            kind: Kind::Test(setup),
        }
    }

    /// A CoreDNS plugin clusterdns does not have.
    pub const fn unsupported(name: &'static str) -> Spec {
        Spec {
            name,
            kind: Kind::Unsupported,
        }
    }

    /// A plugin CoreDNS removed: `hint` says when, and what to use instead.
    pub const fn removed(name: &'static str, hint: &'static str) -> Spec {
        Spec {
            name,
            kind: Kind::Removed(hint),
        }
    }

    /// A CoreDNS plugin from outside CoreDNS's tree.
    pub const fn external(name: &'static str) -> Spec {
        Spec {
            name,
            kind: Kind::External,
        }
    }

    /// Whether clusterdns runs this directive (what `-plugins` lists). Test plugins do
    /// not count: they are not part of the product.
    pub fn is_implemented(&self) -> bool {
        matches!(
            self.kind,
            Kind::Chain(_) | Kind::Server(_) | Kind::Process(_) | Kind::ChainAndProcess(..)
        )
    }

    /// The start-up error for a directive that names this row but that clusterdns cannot
    /// run, in CoreDNS's words where CoreDNS has some (`Unknown directive '...'`), with
    /// what a CoreDNS user needs to know added.
    pub fn refusal(&self) -> Option<String> {
        let name = self.name;
        match self.kind {
            Kind::Unsupported => Some(format!(
                "Error during parsing: plugin '{name}' is not supported by clusterdns"
            )),
            Kind::Removed(hint) => Some(format!("{}: {hint}", unknown(name))),
            Kind::External => Some(format!(
                "{}: an external CoreDNS plugin, not built into clusterdns",
                unknown(name)
            )),
            _ => None,
        }
    }
}

/// CoreDNS's error for a directive it does not know.
pub fn unknown(name: &str) -> String {
    format!("Error during parsing: Unknown directive '{name}'")
}

/// Finds a directive's row: its position in the execution order (its index in
/// `table`) and the row. `None` for a name the table does not have, and for a test
/// plugin unless [`TEST_PLUGINS_ENV`] is `1`.
pub fn lookup(table: &'static [Spec], name: &str) -> Option<(usize, &'static Spec)> {
    let (i, spec) = table.iter().enumerate().find(|(_, s)| s.name == name)?;
    if matches!(spec.kind, Kind::Test(_)) && std::env::var(TEST_PLUGINS_ENV).as_deref() != Ok("1") {
        return None;
    }
    Some((i, spec))
}

/// The directives clusterdns runs, sorted by name: what `-plugins` lists.
pub fn implemented(table: &[Spec]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = table.iter().filter(|s| s.is_implemented()).map(|s| s.name).collect();
    names.sort_unstable();
    names
}

/// What a plugin's setup knows about the server block it is in.
pub struct SetupCtx<'a> {
    /// The block's zones (`cluster.local.`), in the order of its keys.
    pub zones: &'a [crate::dns::Zone],
    /// The directory relative paths are taken from (the Corefile's).
    pub config_dir: PathBuf,
    /// How many worker threads will run the chain (for per-worker state).
    pub workers: usize,
    /// The block's `bind` addresses, if it has a `bind` directive.
    pub binds: Option<&'a [IpAddr]>,
    /// What outlives this configuration: counters kept across reloads, objects shared
    /// by instances (see [`ProcessState`]).
    pub process: &'a ProcessState,
}

/// What a setup returns: the plugin's part in the query chain, in the server's
/// lifecycle, or both (most plugins that do both are one object: [`Plugin::both`]).
pub struct Plugin {
    /// Runs per query, in the block's chain.
    pub handler: Option<Arc<dyn Handler>>,
    /// Started, stopped, asked for readiness and metrics by the server.
    pub lifecycle: Option<Arc<dyn Lifecycle>>,
}

impl Plugin {
    /// A plugin that only handles queries.
    pub fn handler(handler: impl Handler + 'static) -> Plugin {
        Plugin {
            handler: Some(Arc::new(handler)),
            lifecycle: None,
        }
    }

    /// A plugin that handles queries and has a lifecycle, as one object.
    pub fn both<T: Handler + Lifecycle + 'static>(plugin: Arc<T>) -> Plugin {
        Plugin {
            handler: Some(plugin.clone()),
            lifecycle: Some(plugin),
        }
    }
}

/// The lifecycle half of the plugin contract: what the server calls around the
/// queries, never on the query path. A plugin implements only what it uses; the
/// defaults do nothing. (The per-query half is [`Handler`].)
pub trait Lifecycle: Send + Sync {
    /// Told, once the server is built, every route its block serves and the names of the
    /// block's chain (for per-route state such as metrics).
    fn attach(&self, block: &AttachCtx<'_>) {
        let _ = block;
    }

    /// Starts background work (file watchers, API watches) once the server is built,
    /// before it serves.
    fn start(&self) {}

    /// Stops background work; called when the server is shut down or replaced.
    fn stop(&self) {}

    /// Readiness for `/ready`: `None` if the plugin does not report readiness.
    fn ready(&self) -> Option<bool> {
        None
    }

    /// Adds the plugin's metrics to a scrape.
    fn metrics(&self, out: &mut Families) {
        let _ = out;
    }
}

/// What [`Lifecycle::attach`] is told about the plugin's server block.
pub struct AttachCtx<'a> {
    /// Every (listen address, zone) route the block serves.
    pub routes: &'a [Arc<RouteTag>],
    /// The names of the block's chain, in execution order.
    pub chain: &'a [&'static str],
    /// Where per-route counters that outlive the configuration are kept.
    pub process: &'a ProcessState,
}

impl<'a> AttachCtx<'a> {
    /// A block with these routes and no chain names (what tests attach a plugin to).
    pub fn routes(routes: &'a [Arc<RouteTag>], process: &'a ProcessState) -> AttachCtx<'a> {
        AttachCtx {
            routes,
            chain: &[],
            process,
        }
    }

    /// The block's distinct server names (`dns://:53`, ...) in first-seen order, and
    /// for each route slot the index of its server there (`usize::MAX` for a slot no
    /// route of this block has): what per-server counters are keyed by.
    pub fn servers_by_slot(&self) -> (Vec<usize>, Vec<Arc<str>>) {
        let slots = self.routes.iter().map(|r| r.slot + 1).max().unwrap_or(0);
        let mut by_slot = vec![usize::MAX; slots];
        let mut servers: Vec<Arc<str>> = Vec::new();
        for r in self.routes {
            by_slot[r.slot] = match servers.iter().position(|s| *s == r.server) {
                Some(i) => i,
                None => {
                    servers.push(r.server.clone());
                    servers.len() - 1
                }
            };
        }
        (by_slot, servers)
    }
}
