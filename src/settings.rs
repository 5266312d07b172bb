//! What the Corefile's server-level and process-level directives set. Their plugins
//! (`bind`, `timeouts`, `health`, `ready`, `reload`, `prometheus`'s endpoint) only parse
//! into these types; the server and the controller use them, without knowing any
//! plugin.
//!
//! ```text
//!   bind, timeouts, tls ─────────▶ BlockSettings   (per server block: its listeners)
//!   health, ready, reload,
//!   prometheus's address ────────▶ ProcessSettings (per process: the first block to set
//!                                                   one wins; metrics endpoints add up)
//! ```

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What a server block's server-level directives say about its listeners.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockSettings {
    /// The `bind` addresses, if the block has `bind`.
    pub binds: Option<Vec<IpAddr>>,
    /// The TCP timeouts, if the block has `timeouts`.
    pub timeouts: Option<Timeouts>,
    /// The server certificate and client policy of a `tls://` block (`tls`).
    pub tls: Option<crate::tls::ServerSettings>,
}

/// The TCP read, write and idle timeouts of a listener (`timeouts`), CoreDNS's defaults
/// where not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub read: Duration,
    pub write: Duration,
    pub idle: Duration,
}

impl Default for Timeouts {
    /// CoreDNS's server defaults: read 3s, write 5s, idle 10s.
    fn default() -> Self {
        Timeouts {
            read: Duration::from_secs(3),
            write: Duration::from_secs(5),
            idle: Duration::from_secs(10),
        }
    }
}

/// The process-wide settings of a Corefile, gathered from every block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessSettings {
    pub health: Option<Health>,
    pub ready: Option<Ready>,
    pub reload: Option<Reload>,
    /// Addresses of `/metrics` endpoints (`prometheus`).
    pub metrics: Vec<SocketAddr>,
    /// `debug` in some block: process-wide, as in CoreDNS.
    pub debug: bool,
    /// Warnings for the operator, logged when the configuration is checked, started or
    /// reloaded: (log target, message), one per target (the first block's). A directive
    /// accepted without effect (`pprof`) says so here, never silently.
    pub warnings: Vec<(&'static str, String)>,
}

impl ProcessSettings {
    /// Logs the configuration's warnings, one line each.
    pub fn log_warnings(&self) {
        for (target, msg) in &self.warnings {
            log::warn!(target: *target, "{msg}");
        }
    }

    /// Folds one block's settings in: the first block that sets health, ready or
    /// reload wins, as the process has one of each; metrics endpoints add up.
    pub fn merge(&mut self, other: ProcessSettings) {
        self.health = self.health.or(other.health);
        self.ready = self.ready.or(other.ready);
        self.reload = self.reload.or(other.reload);
        self.debug |= other.debug;
        for w in other.warnings {
            if !self.warnings.iter().any(|x| x.0 == w.0) {
                self.warnings.push(w);
            }
        }
        for m in other.metrics {
            if !self.metrics.contains(&m) {
                self.metrics.push(m);
            }
        }
    }
}

/// `health [ADDRESS] { lameduck DURATION }`, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub addr: SocketAddr,
    /// How long DNS and `/health` keep serving after SIGTERM before the listeners close.
    pub lameduck: Duration,
}

/// `ready [ADDRESS] { monitor until-ready|continuously }`, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready {
    pub addr: SocketAddr,
    pub monitor: Monitor,
}

/// Whether a plugin, once ready, is asked again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Monitor {
    /// Once ready, always ready (CoreDNS's default).
    UntilReady,
    /// Asked on every request.
    Continuously,
}

/// When `reload` checks the Corefile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reload {
    pub interval: Duration,
    /// Each period is `interval` plus a random offset in `[-jitter/2, jitter/2)`.
    pub jitter: Duration,
}
