//! clusterdns: a CoreDNS-compatible cluster DNS server on a synchronous,
//! thread-per-core core.
//!
//! ```text
//!   Corefile ──config::parse──▶ Corefile ──server::build──▶ Server (chains, routers,
//!                                  ▲           │ reads          lifecycles)
//!            plugin::PLUGINS ──────┘ rows:     │                     │ ArcSwap
//!            one per directive, in order   setup(ctx) per directive  │ (reload swaps it whole)
//!                                          → Handler + Lifecycle     ▼
//!   SO_REUSEPORT UDP/TCP ──▶ worker thread (mio Poll) ──▶ handler ──▶ Chain ──▶ Handlers
//!     (one set per worker)      owns sockets, TCP conns,             │
//!                               pending upstream queries ◀───────────┘ Step::Upstream
//!
//!   main: flags, signals ──▶ control::Controller ── owns ──▶ process::ProcessState
//!                              reload, lameduck,            (what outlives a reload: kept
//!                              http::Endpoints              counters, shared watches,
//!                              (/health /ready /metrics)    panic and reload counts)
//!   background threads: plugin watchers (kubernetes API, files), health probe, watchdog
//! ```
//!
//! Modules: [`dns`] (wire format), [`config`] (Corefile), [`setup`] (the plugin table's
//! types, what a setup gets and returns, the lifecycle half of the contract), [`chain`]
//! (the per-query half), [`plugin`] (the plugins and their table), [`settings`] (what
//! server- and process-level directives set), [`server`] (sockets and workers; imports
//! no plugin), [`process`] (state across reloads), [`metrics`] (the text format, route
//! counters), [`tls`] (DNS-over-TLS configurations, both ends; the sessions run on the
//! workers), [`control`] and [`runtime`] (process lifecycle), [`http`] (the endpoints),
//! [`kubernetes`] (API client and snapshot), [`cli`] (flags). CONTRIBUTING.md says how
//! to add a plugin.

pub mod chain;
pub mod cli;
pub mod config;
pub mod control;
pub mod dns;
pub mod expr;
#[doc(hidden)]
pub mod fuzzing;
pub mod handover;
pub mod http;
pub mod kubernetes;
pub mod lines;
pub mod metrics;
pub mod notify;
pub mod plugin;
pub mod process;
pub mod runtime;
pub mod server;
pub mod settings;
pub mod setup;
pub mod tls;

/// The release version, as `-version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
