//! What a worker counts and shows of itself: its socket counters (`clusterdns_*`
//! metrics, summed at scrape time) and its heartbeat, which `/health` and the systemd
//! watchdog read to tell a stuck worker from a busy one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters a worker alone writes and anyone may read.
#[derive(Default)]
pub struct WorkerStats {
    pub udp_queries: AtomicU64,
    pub tcp_queries: AtomicU64,
    pub dropped_replies: AtomicU64,
    pub tcp_connections: AtomicU64,
    pub tcp_rejected: AtomicU64,
    pub upstream_pending: AtomicU64,
    /// Milliseconds since [`epoch`] when the worker last went round its loop or
    /// finished a batch of datagrams (for `/health` and the systemd watchdog: a worker
    /// stuck in one query stops it; one busy with a flood does not).
    pub heartbeat: AtomicU64,
}

/// What the workers count of their sockets, by worker, as `clusterdns_*` metrics (CoreDNS
/// has no equivalent: Go's runtime hides them).
pub fn metrics(workers: &[Arc<WorkerStats>], out: &mut crate::metrics::Families) {
    for (i, w) in workers.iter().enumerate() {
        let id = i.to_string();
        let labels = [("worker", id.as_str())];
        let counters: [(&str, &'static str, &AtomicU64); 4] = [
            (
                "clusterdns_tcp_connections_total",
                "TCP connections accepted, by worker.",
                &w.tcp_connections,
            ),
            (
                "clusterdns_tcp_rejected_total",
                "TCP connections closed at once because the worker had its maximum open, by worker.",
                &w.tcp_rejected,
            ),
            (
                "clusterdns_udp_replies_dropped_total",
                "UDP replies the kernel would not send (socket buffer full), by worker.",
                &w.dropped_replies,
            ),
            (
                "clusterdns_udp_queries_total",
                "UDP datagrams received, by worker (how evenly SO_REUSEPORT spreads the load).",
                &w.udp_queries,
            ),
        ];
        for (name, help, c) in counters {
            out.counter(name, help, &labels, c.load(Ordering::Relaxed) as f64);
        }
        out.gauge(
            "clusterdns_upstream_pending",
            "Upstream exchanges in flight (forward, cache refreshes, ExternalName chases), by worker.",
            &labels,
            w.upstream_pending.load(Ordering::Relaxed) as f64,
        );
    }
}

/// How long a worker may go without coming round its loop (or finishing a batch of
/// datagrams) before it counts as stuck: `/health` answers 503 and the systemd watchdog
/// is not pinged. An idle worker comes round twice a second; a busy one after each
/// batch, which no query should make last more than milliseconds. 3 s is six idle turns: no scheduling hiccup reaches
/// it, and a client (5 s timeout by default) has not yet given up on the queries queued
/// behind the stuck one.
pub const STALL_BOUND: Duration = Duration::from_secs(3);

/// The workers that have not come round their loop within `bound`: (index, time since
/// their last turn).
pub fn stalled(workers: &[Arc<WorkerStats>], bound: Duration) -> Vec<(usize, Duration)> {
    let now = millis_since_epoch();
    workers
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let age = Duration::from_millis(now.saturating_sub(w.heartbeat.load(Ordering::Relaxed)));
            (age >= bound).then_some((i, age))
        })
        .collect()
}

/// The reference point of [`WorkerStats::heartbeat`]. A static because it is a constant
/// once set (the first call), not state: every heartbeat of the process counts from it.
pub fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`epoch`].
pub fn millis_since_epoch() -> u64 {
    epoch().elapsed().as_millis() as u64
}
