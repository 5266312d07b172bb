//! The builder thread: applies watcher events to the [`ClusterStore`] and publishes snapshots.
//!
//! A burst of events (a list, a rollout touching many slices) is applied as a whole and
//! published once: the thread blocks for the first event, drains whatever else is
//! queued, and while a list is still arriving publishes at most every
//! [`LIST_PUBLISH_INTERVAL`], so a 100,000-object list is not 100,000 snapshots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::model::{Event, Object, Resource, ServiceKind};
use super::snapshot::{ClusterStore, Snapshot, service_key};
use crate::metrics::Histogram;

/// How often snapshots are published while a list is in progress.
pub const LIST_PUBLISH_INTERVAL: Duration = Duration::from_millis(100);

/// The longest a burst of watch events is applied before it is published, however
/// many more are queued: the most batching adds to a change's way to the answers. A
/// change is served within 5 ms at 10,000 services and 20 ms at 100,000 (issue 14),
/// so batching may take only a part of that. Publishing more often costs little: a
/// publish clones the shard pointers (about 1,800 of them) and each change copies the
/// shards it touches, whether the batches are long or short (`benches/snapshot.rs`,
/// "one change").
pub const WATCH_BATCH_LIMIT: Duration = Duration::from_millis(2);

/// `coredns_kubernetes_dns_programming_duration_seconds` buckets: 0.001·2^k, k = 0..19
/// (1ms to about 17 minutes), as CoreDNS's `prometheus.ExponentialBuckets(0.001, 2, 20)`.
pub static PROGRAMMING_BUCKETS: [f64; 20] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384, 32.768,
    65.536, 131.072, 262.144, 524.288,
];

/// Figures the builder keeps for logs and metrics.
pub struct BuilderStats {
    /// Snapshots published.
    pub publishes: AtomicU64,
    /// Events applied.
    pub events: AtomicU64,
    /// Duration of the last publish's rebuild work, in microseconds.
    pub last_apply_us: AtomicU64,
    /// DNS programming latency of headless services with a selector: from an
    /// EndpointSlice's `last-change-trigger-time` to the publish that serves the change.
    /// Written by the builder thread only.
    pub programming: Histogram,
}

impl Default for BuilderStats {
    fn default() -> BuilderStats {
        BuilderStats {
            publishes: AtomicU64::new(0),
            events: AtomicU64::new(0),
            last_apply_us: AtomicU64::new(0),
            programming: Histogram::new(&PROGRAMMING_BUCKETS),
        }
    }
}

/// Runs the builder until every event sender is gone.
pub fn spawn(
    mut store: ClusterStore,
    events: Receiver<Event>,
    out: Arc<ArcSwap<Snapshot>>,
    stats: Arc<BuilderStats>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("k8s-builder".into()).spawn(move || {
        let mut listing: Vec<Resource> = Vec::new();
        // Trigger times of the changes applied since the last publish.
        let mut triggers: Vec<f64> = Vec::new();
        loop {
            let Ok(first) = events.recv() else { return };
            let started = Instant::now();
            let mut n = 1u64;
            apply(&mut store, first, &mut listing, &mut triggers);
            // Drain the burst. While a list is running, keep applying until the publish
            // interval has passed, so big lists publish a few times, not per object.
            loop {
                match events.try_recv() {
                    Ok(e) => {
                        apply(&mut store, e, &mut listing, &mut triggers);
                        n += 1;
                        // Events that never stop coming (a rollout, a flood) must not
                        // hold the publish back forever.
                        let limit = if listing.is_empty() {
                            WATCH_BATCH_LIMIT
                        } else {
                            publish_interval(&store)
                        };
                        if started.elapsed() < limit {
                            continue;
                        }
                        break;
                    }
                    Err(TryRecvError::Disconnected) => {
                        publish(&store, &out, &stats, started, n, &mut triggers);
                        return;
                    }
                    Err(TryRecvError::Empty) => {}
                }
                let waited = started.elapsed();
                let interval = publish_interval(&store);
                if listing.is_empty() || waited >= interval {
                    break;
                }
                match events.recv_timeout(interval - waited) {
                    Ok(e) => {
                        apply(&mut store, e, &mut listing, &mut triggers);
                        n += 1;
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        publish(&store, &out, &stats, started, n, &mut triggers);
                        return;
                    }
                }
            }
            publish(&store, &out, &stats, started, n, &mut triggers);
            if listing.is_empty() && listed_since_trim(&mut store) {
                release_free_memory();
            }
        }
    })
}

/// How long a list may run before what it brought so far is published. Once synced,
/// [`LIST_PUBLISH_INTERVAL`]: a relist's changes are served as they come. Before the
/// first sync nobody is served from the snapshot until CoreDNS's start-up wait is over
/// (the kubernetes plugin's `startup_timeout`, 5 s by default): publishing earlier
/// would only make each publish copy every shard the list has touched since the last,
/// which at 100,000 services was the start-up's memory peak (+17 MiB over steady).
fn publish_interval(store: &ClusterStore) -> Duration {
    if store.synced() {
        LIST_PUBLISH_INTERVAL
    } else {
        UNSYNCED_PUBLISH_INTERVAL
    }
}

/// How often snapshots are published while the first lists are in progress.
pub const UNSYNCED_PUBLISH_INTERVAL: Duration = Duration::from_secs(5);

/// Whether a list completed since the last call (a relist frees many objects at once).
fn listed_since_trim(store: &mut ClusterStore) -> bool {
    store.take_list_completed()
}

/// Gives the memory a relist freed back to the system (glibc keeps freed chunks in its
/// heap otherwise, and RSS stays at the relist's peak).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory at the top of glibc's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn apply(store: &mut ClusterStore, e: Event, listing: &mut Vec<Resource>, triggers: &mut Vec<f64>) {
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
            let trigger = match &o {
                Object::EndpointSlice(s) if !s.service.is_empty() => s
                    .last_change_trigger
                    .map(|t| (t, service_key(&s.namespace, &s.service))),
                _ => None,
            };
            // Before the first sync every slice is new and its trigger time may be
            // days old: that is no programming latency. After it, a changed slice is.
            let measured = store.synced();
            if store.upsert(o) && measured {
                if let Some((t, key)) = trigger {
                    // CoreDNS measures headless services only (its
                    // `EndpointLatencyRecorder.record`): for a ClusterIP service an
                    // endpoint change changes no answer.
                    if store.service(&key).is_some_and(|s| s.svc.kind == ServiceKind::Headless) {
                        triggers.push(t);
                    }
                }
            }
        }
        Event::Delete(r, k) => {
            store.delete(r, &k);
        }
        Event::Health { .. } => {}
    }
}

fn publish(
    store: &ClusterStore,
    out: &ArcSwap<Snapshot>,
    stats: &BuilderStats,
    started: Instant,
    n: u64,
    triggers: &mut Vec<f64>,
) {
    // The previous snapshot is dropped here or by the last worker still holding it;
    // either way only replaced shards are freed.
    out.store(Arc::new(store.snapshot()));
    // The changes are served from now on: that ends their programming latency. The
    // trigger time comes from the API server's clock; a skew that puts it in the future
    // counts as 0, not as a negative duration.
    if !triggers.is_empty() {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for t in triggers.drain(..) {
            stats.programming.observe((now - t).max(0.0));
        }
    }
    stats.publishes.fetch_add(1, Ordering::Relaxed);
    stats.events.fetch_add(n, Ordering::Relaxed);
    stats
        .last_apply_us
        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::kubernetes::model::{Endpoint, EndpointSlice, Service};

    fn service(name: &str, kind: ServiceKind) -> Event {
        let cluster_ips = match kind {
            ServiceKind::ClusterIp => vec!["10.96.0.10".parse().unwrap()],
            _ => Vec::new(),
        };
        Event::Upsert(Object::Service(Service {
            namespace: "ns".into(),
            name: name.into(),
            resource_version: "1".into(),
            kind,
            cluster_ips,
            external_name: "".into(),
            external_ips: Vec::new(),
            ports: Vec::new(),
        }))
    }

    /// A slice with one endpoint, whose address changes with the version (a new
    /// version with the same endpoints is no change to measure).
    fn slice(name: &str, service: &str, version: &str, trigger: Option<f64>) -> Event {
        let addr: IpAddr = format!("10.244.0.{version}").parse().unwrap();
        Event::Upsert(Object::EndpointSlice(EndpointSlice {
            namespace: "ns".into(),
            name: name.into(),
            resource_version: version.into(),
            service: service.into(),
            endpoints: vec![Endpoint {
                addresses: vec![(addr, addr.to_string().into())],
                hostname: None,
                pod_name: None,
                node_name: None,
            }],
            ports: Vec::new(),
            last_change_trigger: trigger,
        }))
    }

    fn unix_now() -> f64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    #[test]
    fn programming_latency_is_measured_for_changed_headless_slices_after_the_sync() {
        let mut store = ClusterStore::new(Default::default(), vec![Resource::Services, Resource::EndpointSlices]);
        let (mut listing, mut triggers) = (Vec::new(), Vec::new());
        let now = unix_now();
        let events = [
            Event::ListStart(Resource::Services),
            service("db", ServiceKind::Headless),
            service("web", ServiceKind::ClusterIp),
            Event::ListDone(Resource::Services),
            Event::ListStart(Resource::EndpointSlices),
            // Part of the first sync: an old trigger time, not a latency.
            slice("db-1", "db", "1", Some(now - 3600.0)),
            Event::ListDone(Resource::EndpointSlices),
            // Measured: a change of a headless service's slice.
            slice("db-1", "db", "2", Some(now - 3.0)),
            // Not measured: unchanged, a ClusterIP service, no such service, no trigger,
            // a new version serving the same endpoints.
            slice("db-1", "db", "2", Some(now - 3.0)),
            slice("web-1", "web", "2", Some(now - 1.0)),
            slice("gone-1", "gone", "2", Some(now - 1.0)),
            slice("db-2", "db", "1", None),
        ];
        for e in events {
            apply(&mut store, e, &mut listing, &mut triggers);
        }
        assert_eq!(triggers.len(), 1);
        let stats = BuilderStats::default();
        let out = ArcSwap::from_pointee(Snapshot::default());
        publish(&store, &out, &stats, Instant::now(), 1, &mut triggers);
        assert!(triggers.is_empty());
        let mut counts = [0u64; PROGRAMMING_BUCKETS.len() + 1];
        let mut sum = 0.0;
        stats.programming.add_to(&mut counts, &mut sum);
        // 3s and a little: the 4.096 bucket.
        let at = PROGRAMMING_BUCKETS.iter().position(|b| *b == 4.096).unwrap();
        assert_eq!(counts.iter().sum::<u64>(), 1);
        assert_eq!(counts[at], 1, "{counts:?}");
        assert!((3.0..4.0).contains(&sum), "{sum}");
    }

    #[test]
    fn a_flood_of_watch_events_is_published_every_batch_limit() {
        // A queue that never runs dry (here: filled before the builder starts) is
        // published at least every WATCH_BATCH_LIMIT, not once at its end.
        let (tx, rx) = crossbeam_channel::unbounded();
        let events = 8_000;
        for i in 0..events {
            let Event::Upsert(Object::Service(mut svc)) = service(&format!("svc{i}"), ServiceKind::ClusterIp) else {
                unreachable!()
            };
            // An address each: one shared by all would make every change copy a
            // growing owner list.
            svc.cluster_ips = vec![IpAddr::from([10, 96, (i >> 8) as u8, i as u8])];
            tx.send(Event::Upsert(Object::Service(svc))).unwrap();
        }
        drop(tx);
        let store = ClusterStore::new(Default::default(), vec![Resource::Services]);
        let out = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let stats = Arc::new(BuilderStats::default());
        let started = Instant::now();
        spawn(store, rx, out.clone(), stats.clone()).unwrap().join().unwrap();
        let took = started.elapsed();
        let publishes = stats.publishes.load(Ordering::Relaxed);
        assert_eq!(stats.events.load(Ordering::Relaxed), events);
        assert_eq!(out.load().counts().1, events as usize);
        // A batch ends at the limit (measured from its first event, so time off the
        // CPU shortens it), then pays its publish: in a debug build on a loaded host a
        // few milliseconds in all. A limit of 20 ms, as before, fails this.
        let per_batch = took / publishes as u32;
        assert!(per_batch < WATCH_BATCH_LIMIT * 10, "{publishes} publishes in {took:?}");
    }

    #[test]
    fn programming_buckets_are_coredns_exponential_ones() {
        for (k, b) in PROGRAMMING_BUCKETS.iter().enumerate() {
            assert_eq!(*b, 0.001 * 2f64.powi(k as i32));
        }
    }
}
