//! clusterdns: a CoreDNS-compatible cluster DNS server on a synchronous,
//! thread-per-core core.
//!
//! ```text
//!   Corefile ──config::parse──▶ Corefile ──server::build──▶ Server (chains, routers)
//!                                                              │ ArcSwap
//!   SO_REUSEPORT UDP/TCP ──▶ worker thread (mio Poll) ──▶ handler ──▶ Chain ──▶ plugins
//!     (one set per worker)      owns sockets, TCP conns,             │
//!                               pending upstream queries ◀───────────┘ Step::Upstream
//!   main thread: flags, signals            background threads: plugin watchers
//! ```
//!
//! Modules: [`dns`] (wire format), [`config`] (Corefile), [`chain`] (the plugin
//! contract), [`plugin`] (the plugins), [`server`] (sockets and workers), [`runtime`]
//! (process lifecycle), [`cli`] (flags).

pub mod chain;
pub mod cli;
pub mod config;
pub mod control;
pub mod dns;
#[doc(hidden)]
pub mod fuzzing;
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

/// The release version, as `-version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
