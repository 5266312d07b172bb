//! The state that outlives a configuration: one [`ProcessState`], made once by `main`,
//! owned by the controller and handed on explicitly, never reached through a global.
//!
//! ```text
//!   main ──Arc<ProcessState>──▶ Controller ──▶ Server::build ──SetupCtx / AttachCtx──▶ plugins
//!                                   │                                  (kept counters, shared
//!                                   │                                   kubernetes backends)
//!                                   ├──▶ workers (WorkerCtx: panics, the work budget)
//!                                   ├──▶ health probe thread (its figures)
//!                                   └──▶ /metrics (reads it all), reload (failures, hash)
//! ```
//!
//! A reload builds a new server with the same `ProcessState`, which is how CoreDNS's
//! process-wide metric vectors carry on across reloads here: a plugin instance takes its
//! counters from [`ProcessState::kept`] under a key made of their labels, and the next
//! configuration's instance gets the same ones back. Unit tests make a state of their own.

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::metrics::route::RouteCounters;
use crate::metrics::{Families, Histogram};

/// `coredns_health_request_duration_seconds` buckets, CoreDNS's health plugin's.
pub static HEALTH_BUCKETS: [f64; 5] = [0.00025, 0.0025, 0.025, 0.25, 2.5];

/// Everything that crosses a reload.
pub struct ProcessState {
    /// Counters that outlive the configuration that made them, by key (see [`Self::kept`]).
    kept: Mutex<Vec<(String, Box<dyn Any + Send + Sync>)>>,
    /// Objects shared by plugin instances while any holds them, across blocks and
    /// configurations (see [`Self::shared`]): weak handles.
    shared: Mutex<Vec<Box<dyn Any + Send + Sync>>>,
    /// Panics caught while handling queries (`coredns_panics_total`).
    pub panics: AtomicU64,
    /// Queries failed because they ran out of their work budget
    /// (`clusterdns_query_budget_exceeded_total`), and the limit on logging them.
    pub budget_exceeded: AtomicU64,
    pub budget_log: LogLimit,
    /// Reloads that failed (`coredns_reload_failed_total`).
    pub reload_failed: AtomicU64,
    /// The SHA-512 of the running configuration (`coredns_reload_version_info`).
    reload_hash: Mutex<String>,
    /// Durations of the health plugin's probes of its own `/health`. One writer: the
    /// probing thread.
    pub health_duration: Histogram,
    /// Failed health probes (`coredns_health_request_failures_total`).
    pub health_failures: AtomicU64,
    /// The running configuration has `debug`: a panic while a query is handled is not
    /// recovered, and DEBUG lines are logged (see [`Self::set_debug`]).
    pub debug: AtomicBool,
    /// The log level without `debug` (RUST_LOG's, INFO by default), set by `main`.
    log_base: Mutex<log::LevelFilter>,
    /// The listening sockets served now, as a successor would take them (`-handover`).
    pub listening: Mutex<crate::handover::Listening>,
    /// The process is stopping (SIGTERM or SIGINT, or drained after a hand-over): set
    /// before `listening` is emptied, under its lock, so a successor is refused.
    pub stopping: AtomicBool,
}

impl Default for ProcessState {
    fn default() -> Self {
        ProcessState::new()
    }
}

impl ProcessState {
    pub fn new() -> ProcessState {
        ProcessState {
            kept: Mutex::new(Vec::new()),
            shared: Mutex::new(Vec::new()),
            panics: AtomicU64::new(0),
            budget_exceeded: AtomicU64::new(0),
            budget_log: LogLimit::default(),
            reload_failed: AtomicU64::new(0),
            reload_hash: Mutex::new(String::new()),
            health_duration: Histogram::new(&HEALTH_BUCKETS),
            health_failures: AtomicU64::new(0),
            debug: AtomicBool::new(false),
            log_base: Mutex::new(log::LevelFilter::Info),
            listening: Mutex::new(crate::handover::Listening::default()),
            stopping: AtomicBool::new(false),
        }
    }

    /// The counters kept under `key`, made by `make` the first time. CoreDNS's metric
    /// vectors belong to the process, so a reload does not reset them; here counters
    /// belong to plugin instances, which a reload replaces, so an instance takes its
    /// counters from here under a key made of the labels they are exported with (and the
    /// plugin's name), and the next configuration's instance gets the same ones back.
    /// `T` is a shared handle (`Arc<...>`); a key made with another type, or for another
    /// number of workers (`fits`), is made anew. The list only grows with label sets
    /// ever configured. Called at setup, never per query.
    pub fn kept<T: Any + Clone + Send + Sync>(
        &self,
        key: &str,
        fits: impl Fn(&T) -> bool,
        make: impl FnOnce() -> T,
    ) -> T {
        let mut all = self.kept.lock();
        if let Some(t) = all
            .iter()
            .filter(|(k, _)| k == key)
            .find_map(|(_, v)| v.downcast_ref::<T>().filter(|t| fits(t)))
        {
            return t.clone();
        }
        let t = make();
        all.retain(|(k, v)| k != key || !v.is::<T>());
        all.push((key.to_string(), Box::new(t.clone())));
        t
    }

    /// Per-worker counters kept under `key` (see [`Self::kept`]): one `T` per worker.
    pub fn kept_per_worker<T: Default + Send + Sync + 'static>(&self, key: &str, workers: usize) -> Arc<[T]> {
        self.kept(
            key,
            |t: &Arc<[T]>| t.len() == workers,
            || (0..workers).map(|_| T::default()).collect(),
        )
    }

    /// A live `T` that `adopt` accepts, or a new one from `make` that later calls will be
    /// offered. Only weak handles are kept: what no holder keeps alive is gone. This is
    /// how two server blocks, or two configurations across a reload, share one
    /// Kubernetes watch (the kubernetes plugin's backend decides what it accepts).
    pub fn shared<T: Send + Sync + 'static>(
        &self,
        adopt: impl Fn(&T) -> bool,
        make: impl FnOnce() -> Arc<T>,
    ) -> Arc<T> {
        let mut all = self.shared.lock();
        all.retain(|w| w.downcast_ref::<Weak<T>>().is_none_or(|w| w.strong_count() > 0));
        if let Some(t) = all
            .iter()
            .filter_map(|w| w.downcast_ref::<Weak<T>>()?.upgrade())
            .find(|t| adopt(t))
        {
            return t;
        }
        let t = make();
        all.push(Box::new(Arc::downgrade(&t)));
        t
    }

    /// The log level to come back to when `debug` is off.
    pub fn set_log_base(&self, level: log::LevelFilter) {
        *self.log_base.lock() = level;
    }

    /// Turns CoreDNS's debug mode on or off for the whole process (CoreDNS: `log.D`
    /// set or cleared at each start and reload, and its server's recovery skipped): the
    /// controller calls it with the configuration it is about to serve.
    pub fn set_debug(&self, on: bool) {
        self.debug.store(on, Ordering::Release);
        let base = *self.log_base.lock();
        log::set_max_level(if on { base.max(log::LevelFilter::Debug) } else { base });
    }

    /// Sets the hash of the running configuration.
    pub fn set_reload_hash(&self, hash: &str) {
        *self.reload_hash.lock() = hash.to_string();
    }

    /// The hash of the running configuration ("" before the first).
    pub fn reload_hash(&self) -> String {
        self.reload_hash.lock().clone()
    }

    /// The per-worker query counters of the `server`/`zone` labels (CoreDNS's
    /// `coredns_dns_*`), the same ones for every configuration of the process: the
    /// `prometheus` plugin's routes, and the queries no block took (zone `dropped`).
    pub fn route_counters(&self, server: &str, zone: &str, workers: usize) -> Arc<[RouteCounters]> {
        self.kept_per_worker(&format!("route|{server}|{zone}"), workers)
    }

    /// The metrics that belong to the process, not to a plugin instance: build
    /// information, panics, queries over budget, reloads, health probes, and the
    /// standard `process_*` ones.
    pub fn metrics(&self, out: &mut Families) {
        let p = self;
        out.gauge(
            "coredns_build_info",
            "A metric with a constant '1' value labeled by version, revision and goversion (here: the Rust compiler).",
            &[
                ("version", crate::VERSION),
                ("revision", env!("CLUSTERDNS_COMMIT")),
                ("goversion", env!("CLUSTERDNS_RUSTC")),
            ],
            1.0,
        );
        out.counter(
            "coredns_panics_total",
            "A metric that counts the number of panics.",
            &[],
            p.panics.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "clusterdns_query_budget_exceeded_total",
            "Queries answered SERVFAIL because answering them would have visited more records than the per-query work budget allows.",
            &[],
            p.budget_exceeded.load(Ordering::Relaxed) as f64,
        );
        out.counter(
            "coredns_reload_failed_total",
            "Counter of the number of failed reload attempts.",
            &[],
            p.reload_failed.load(Ordering::Relaxed) as f64,
        );
        let hash = p.reload_hash();
        if !hash.is_empty() {
            out.gauge(
                "coredns_reload_version_info",
                "A metric with a constant '1' value labeled by hash, and value which type of hash generated.",
                &[("hash", "sha512"), ("value", &hash)],
                1.0,
            );
        }
        let mut counts = [0u64; HEALTH_BUCKETS.len() + 1];
        let mut sum = 0.0;
        p.health_duration.add_to(&mut counts, &mut sum);
        out.histogram(
            "coredns_health_request_duration_seconds",
            "Histogram of the time (in seconds) each health probe took.",
            &[],
            &HEALTH_BUCKETS,
            &counts,
            sum,
        );
        out.counter(
            "coredns_health_request_failures_total",
            "The number of times the health probe failed.",
            &[],
            p.health_failures.load(Ordering::Relaxed) as f64,
        );
        crate::metrics::procfs::write(out);
    }
}

/// Lets a line through at most once a second, whatever the rate of the events behind
/// it, and counts the events not logged meanwhile. Lock-free: events may come from
/// every worker at once.
#[derive(Default)]
pub struct LogLimit {
    /// When a line last went out, in seconds since the Unix epoch.
    logged_at: AtomicU64,
    /// Events since then that were not logged.
    unlogged: AtomicU64,
}

impl LogLimit {
    /// `Some(events not logged since the last line)` if a line may go out now.
    pub fn allow(&self) -> Option<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.logged_at.load(Ordering::Relaxed);
        if now <= last
            || self
                .logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.unlogged.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_counters_are_found_again_by_key_type_and_fit() {
        let p = ProcessState::new();
        let a: Arc<[AtomicU64]> = p.kept_per_worker("x|a", 2);
        a[1].fetch_add(5, Ordering::Relaxed);
        // The next configuration with the same labels counts on.
        let again: Arc<[AtomicU64]> = p.kept_per_worker("x|a", 2);
        assert!(Arc::ptr_eq(&a, &again));
        // Other labels, or another worker count, start afresh.
        assert!(!Arc::ptr_eq(&a, &p.kept_per_worker("x|b", 2)));
        let three: Arc<[AtomicU64]> = p.kept_per_worker("x|a", 3);
        assert_eq!(three.len(), 3);
        assert_eq!(three[1].load(Ordering::Relaxed), 0);
        // Another process state knows nothing of these.
        let other = ProcessState::new();
        assert!(!Arc::ptr_eq(&a, &other.kept_per_worker("x|a", 2)));
    }

    #[test]
    fn shared_objects_live_while_held() {
        let p = ProcessState::new();
        let a = p.shared(|v: &u32| *v == 1, || Arc::new(1u32));
        let b = p.shared(|v: &u32| *v == 1, || Arc::new(1u32));
        assert!(Arc::ptr_eq(&a, &b), "adopted while held");
        let c = p.shared(|v: &u32| *v == 2, || Arc::new(2u32));
        assert!(!Arc::ptr_eq(&a, &c));
        // Another type is another registry.
        let s = p.shared(|_: &String| true, || Arc::new("s".to_string()));
        assert_eq!(*s, "s");
        let weak = Arc::downgrade(&a);
        drop((a, b));
        assert!(weak.upgrade().is_none(), "the registry holds no strong handle");
        let d = p.shared(|v: &u32| *v == 1, || Arc::new(1u32));
        assert!(!std::ptr::eq(weak.as_ptr(), Arc::as_ptr(&d)) || weak.upgrade().is_none());
    }

    #[test]
    fn a_log_line_at_most_once_a_second() {
        let l = LogLimit::default();
        assert_eq!(l.allow(), Some(0));
        // Within the same second: counted, not logged.
        let mut unlogged = 0;
        for _ in 0..5 {
            if l.allow().is_none() {
                unlogged += 1;
            }
        }
        assert!(unlogged >= 4, "{unlogged}");
    }
}
