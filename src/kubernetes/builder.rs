//! The builder thread: applies watcher events to the [`Store`] and publishes snapshots.
//!
//! A burst of events (a list, a rollout touching many slices) is applied as a whole and
//! published once: the thread blocks for the first event, drains whatever else is
//! queued, and while a list is still arriving publishes at most every
//! [`LIST_PUBLISH_INTERVAL`], so a 100,000-object list is not 100,000 snapshots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::model::{Event, Resource};
use super::snapshot::{Snapshot, Store};

/// How often snapshots are published while a list is in progress.
pub const LIST_PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// Figures the builder keeps for logs and metrics.
#[derive(Default)]
pub struct BuilderStats {
    /// Snapshots published.
    pub publishes: AtomicU64,
    /// Events applied.
    pub events: AtomicU64,
    /// Duration of the last publish's rebuild work, in microseconds.
    pub last_apply_us: AtomicU64,
}

/// Runs the builder until every event sender is gone.
pub fn spawn(
    mut store: Store,
    events: Receiver<Event>,
    out: Arc<ArcSwap<Snapshot>>,
    stats: Arc<BuilderStats>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("k8s-builder".into()).spawn(move || {
        let mut listing: Vec<Resource> = Vec::new();
        loop {
            let Ok(first) = events.recv() else { return };
            let started = Instant::now();
            let mut n = 1u64;
            apply(&mut store, first, &mut listing);
            // Drain the burst. While a list is running, keep applying until the publish
            // interval has passed, so big lists publish a few times, not per object.
            loop {
                match events.try_recv() {
                    Ok(e) => {
                        apply(&mut store, e, &mut listing);
                        n += 1;
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => {
                        publish(&store, &out, &stats, started, n);
                        return;
                    }
                    Err(TryRecvError::Empty) => {}
                }
                let waited = started.elapsed();
                if listing.is_empty() || waited >= LIST_PUBLISH_INTERVAL {
                    break;
                }
                match events.recv_timeout(LIST_PUBLISH_INTERVAL - waited) {
                    Ok(e) => {
                        apply(&mut store, e, &mut listing);
                        n += 1;
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        publish(&store, &out, &stats, started, n);
                        return;
                    }
                }
            }
            publish(&store, &out, &stats, started, n);
        }
    })
}

fn apply(store: &mut Store, e: Event, listing: &mut Vec<Resource>) {
    match e {
        Event::ListStart(r) => {
            store.list_start(r);
            if !listing.contains(&r) {
                listing.push(r);
            }
        }
        Event::ListDone(r) => {
            let was_synced = store.synced();
            store.list_done(r);
            listing.retain(|x| *x != r);
            if !was_synced && store.synced() {
                let (ns, svc, ips) = store.snapshot().counts();
                log::info!(target: "plugin/kubernetes", "synced with the API: {ns} namespaces, {svc} services, {ips} addresses");
            }
        }
        Event::Upsert(o) => {
            store.upsert(o);
        }
        Event::Delete(r, k) => {
            store.delete(r, &k);
        }
        Event::Health { .. } => {}
    }
}

fn publish(store: &Store, out: &ArcSwap<Snapshot>, stats: &BuilderStats, started: Instant, n: u64) {
    // The previous snapshot is dropped here or by the last worker still holding it;
    // either way only replaced shards are freed.
    out.store(Arc::new(store.snapshot()));
    stats.publishes.fetch_add(1, Ordering::Relaxed);
    stats.events.fetch_add(n, Ordering::Relaxed);
    stats.last_apply_us.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
}
