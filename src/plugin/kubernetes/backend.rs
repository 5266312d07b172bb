//! The background half of the kubernetes plugin: a source (the API watchers or a
//! `file://` dump) and the snapshot builder, publishing into one snapshot cell.
//!
//! ```text
//!   Corefile generation 1: kubernetes ─┐
//!                                      ├─▶ Backend (key: the watch settings) ─▶ ArcSwap<Snapshot>
//!   Corefile generation 2: kubernetes ─┘      watchers + builder, running while held
//! ```
//!
//! Every plugin instance whose watch settings ([`WatchKey`]) are equal shares one
//! backend: two server blocks over the same API watch it once, and a Corefile reload
//! that keeps the settings (a changed `ttl`, `fallthrough`, another plugin...) takes
//! over the running backend, so the new configuration answers from the same snapshot
//! at once: no relist, no second copy of the cluster in memory, no wait for a sync.
//! (CoreDNS starts a new informer per reload and lists the whole cluster again; at
//! 100,000 services that doubled this process's memory, and malloc kept it.)
//!
//! The work runs while at least one started plugin holds the backend: the reload
//! starts the new configuration before it stops the old one, so the count never drops
//! to zero in between. A backend that did stop is retired, so a later configuration
//! starts a fresh one instead of adopting a stale snapshot. The backends on offer are
//! in the process state ([`ProcessState::shared`]), which outlives configurations.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::setup::{Options, PodMode};
use crate::kubernetes::builder::{self, BuilderStats};
use crate::kubernetes::file::FileSource;
use crate::kubernetes::model::Resource;
use crate::kubernetes::snapshot::{ClusterStore, Snapshot, StoreOptions};
use crate::kubernetes::watch::{ApiStats, WatchConfig, Watchers};
use crate::process::ProcessState;

/// Objects per LIST page.
const PAGE_SIZE: usize = 500;
/// How often a `file://` dump is checked for a change.
const FILE_POLL: Duration = Duration::from_secs(1);

/// Everything that decides what a backend watches and how it builds the snapshot. Two
/// plugin instances with equal keys serve from the same data; anything else in
/// [`Options`] (zones, ttl, namespaces, pods mode short of `verified`, fallthrough,
/// ...) is applied when answering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchKey {
    endpoints: Vec<String>,
    resources: Vec<Resource>,
    labels: Option<String>,
    namespace_labels: Option<String>,
    endpoint_pod_names: bool,
    watch_timeout: Duration,
    idle_timeout: Duration,
    backoff: (Duration, Duration),
}

impl WatchKey {
    pub fn of(opts: &Options) -> WatchKey {
        let mut resources = vec![Resource::Namespaces, Resource::Services];
        if !opts.noendpoints {
            resources.push(Resource::EndpointSlices);
        }
        if opts.pods == PodMode::Verified {
            resources.push(Resource::Pods);
        }
        WatchKey {
            endpoints: opts.endpoints.clone(),
            resources,
            labels: opts.labels.clone(),
            namespace_labels: opts.namespace_labels.clone(),
            endpoint_pod_names: opts.endpoint_pod_names,
            watch_timeout: opts.watch_timeout,
            idle_timeout: opts.idle_timeout,
            backoff: opts.backoff,
        }
    }
}

/// The running source and builder.
struct Running {
    source: Source,
    builder: Option<std::thread::JoinHandle<()>>,
}

enum Source {
    Api(Watchers),
    File(FileSource),
}

/// Started holders and the work they keep running.
#[derive(Default)]
struct State {
    holders: usize,
    running: Option<Running>,
}

/// One source and builder and the snapshot cell they publish into.
pub struct Backend {
    key: WatchKey,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub builder_stats: Arc<BuilderStats>,
    /// The source's counters (the watchers' API requests, the objects the watchers or
    /// the file source did not take), once started; kept after the stop, so that a
    /// scrape still shows what was counted.
    api_stats: Mutex<Option<Arc<ApiStats>>>,
    state: Mutex<State>,
    /// Its last holder stopped it: never adopted again.
    retired: AtomicBool,
}

impl Backend {
    /// A backend of its own, never shared (tests and fuzz targets that publish their
    /// own snapshots).
    pub fn private(key: WatchKey) -> Arc<Backend> {
        Arc::new(Backend {
            key,
            snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            builder_stats: Arc::new(BuilderStats::default()),
            api_stats: Mutex::new(None),
            state: Mutex::new(State::default()),
            retired: AtomicBool::new(false),
        })
    }

    /// The live, unretired backend of `process` with this key, or a new one that later
    /// instances with the same key will share.
    pub fn shared(key: WatchKey, process: &ProcessState) -> Arc<Backend> {
        process.shared(
            |b: &Backend| b.key == key && !b.retired.load(Ordering::Acquire),
            || Backend::private(key.clone()),
        )
    }

    /// The source's counters, if it ever started.
    pub fn api_stats(&self) -> Option<Arc<ApiStats>> {
        self.api_stats.lock().clone()
    }

    /// One more started holder; the first starts the work.
    pub fn acquire(&self) {
        let mut state = self.state.lock();
        state.holders += 1;
        if state.running.is_none() {
            state.running = self.start();
        }
    }

    /// One holder fewer; the last stops the work (and waits for its threads) and
    /// withdraws the backend from sharing.
    pub fn release(self: &Arc<Self>) {
        let mut state = self.state.lock();
        state.holders = state.holders.saturating_sub(1);
        if state.holders > 0 {
            return;
        }
        self.retired.store(true, Ordering::Release);
        let Some(mut r) = state.running.take() else {
            return;
        };
        drop(state);
        match r.source {
            Source::Api(w) => w.stop(),
            Source::File(f) => f.stop(),
        }
        // The sources dropped their senders: the builder drains and exits.
        if let Some(b) = r.builder.take() {
            let _ = b.join();
        }
    }

    fn start(&self) -> Option<Running> {
        let k = &self.key;
        let store = ClusterStore::new(
            StoreOptions {
                endpoint_pod_names: k.endpoint_pod_names,
            },
            k.resources.clone(),
        );
        let (tx, rx) = crossbeam_channel::bounded(4096);
        let builder = match builder::spawn(store, rx, self.snapshot.clone(), self.builder_stats.clone()) {
            Ok(b) => b,
            Err(e) => {
                log::error!(target: "plugin/kubernetes", "cannot start the snapshot builder: {e}");
                return None;
            }
        };
        let source = match k.endpoints[0].strip_prefix("file://") {
            Some(path) => {
                let file = FileSource::start(path.into(), k.resources.clone(), tx, FILE_POLL);
                *self.api_stats.lock() = Some(file.stats());
                Source::File(file)
            }
            None => {
                let watchers = Watchers::start(
                    WatchConfig {
                        endpoints: k.endpoints.clone(),
                        resources: k.resources.clone(),
                        label_selector: k.labels.clone(),
                        namespace_label_selector: k.namespace_labels.clone(),
                        page_size: PAGE_SIZE,
                        watch_timeout: k.watch_timeout,
                        idle_timeout: k.idle_timeout,
                        backoff_initial: k.backoff.0,
                        backoff_max: k.backoff.1,
                    },
                    tx,
                );
                *self.api_stats.lock() = Some(watchers.stats());
                Source::Api(watchers)
            }
        };
        Some(Running {
            source,
            builder: Some(builder),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(endpoint: &str) -> WatchKey {
        WatchKey {
            endpoints: vec![endpoint.to_string()],
            resources: vec![Resource::Namespaces, Resource::Services],
            labels: None,
            namespace_labels: None,
            endpoint_pod_names: false,
            watch_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            backoff: (Duration::from_millis(100), Duration::from_secs(5)),
        }
    }

    #[test]
    fn a_file_source_counts_the_objects_it_rejects() {
        let dir = std::env::temp_dir().join(format!("clusterdns-backend-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rejects.json");
        let long = "l".repeat(64);
        std::fs::write(
            &path,
            format!(
                r#"{{"kind":"List","metadata":{{}},"items":[{{"kind":"Namespace","metadata":{{"name":"x"}}}},
                {{"kind":"Service","metadata":{{"name":"{long}","namespace":"x"}}}}]}}"#
            ),
        )
        .unwrap();
        let b = Backend::private(key(&format!("file://{}", path.display())));
        b.acquire();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !b.snapshot.load().synced && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let rejected = b.api_stats().map(|s| s.snapshot().rejected);
        b.release();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(rejected, Some(vec![(Resource::Services, "invalid_name", 1)]));
    }

    #[test]
    fn equal_keys_share_until_the_last_holder_stops() {
        // A file that does not exist: the source starts, finds nothing, and retries.
        let k = key("file:///nonexistent/clusterdns-backend-share.json");
        let process = ProcessState::new();
        let a = Backend::shared(k.clone(), &process);
        let b = Backend::shared(k.clone(), &process);
        assert!(Arc::ptr_eq(&a, &b), "same settings, same backend");
        assert!(!Arc::ptr_eq(
            &a,
            &Backend::shared(key("file:///nonexistent/other.json"), &process)
        ));
        // Another process state (another test) shares nothing with this one.
        assert!(!Arc::ptr_eq(&a, &Backend::shared(k.clone(), &ProcessState::new())));
        assert!(!Arc::ptr_eq(&a, &Backend::private(k.clone())));

        a.acquire();
        b.acquire();
        assert!(a.state.lock().running.is_some());
        // The old configuration stops: the new one keeps it running.
        a.release();
        assert!(b.state.lock().running.is_some());
        assert!(Arc::ptr_eq(&b, &Backend::shared(k.clone(), &process)));
        // The last holder stops it, and it is no longer handed out.
        b.release();
        assert!(b.state.lock().running.is_none());
        assert!(!Arc::ptr_eq(&b, &Backend::shared(k, &process)));
    }
}
