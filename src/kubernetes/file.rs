//! The `endpoint file://PATH` source: the objects of a `kubectl get namespaces,services,
//! endpointslices,pods -A -o json` dump (a `List` of mixed kinds, or one kind's
//! `ServiceList`...), read at start and again whenever the file changes. It serves the
//! README's demo without a cluster, and shows what DNS a cluster's dump would serve.
//!
//! Each successful read is sent as a full list per resource (`ListStart`, `Upsert`s,
//! `ListDone`), so objects removed from the file disappear from DNS. A file that cannot be
//! read or parsed changes nothing: the last good contents keep serving.
//!
//! The bounds of the API apply: the file must be a regular file (a FIFO is refused, not
//! waited on), an item may not exceed [`MAX_OBJECT_BYTES`] (the file is streamed, never
//! held whole), and an object that breaks an API rule (a name over 63 characters, 1,001
//! endpoints...) is skipped, as the watch skips it, and counted by resource and reason in
//! the same [`ApiStats`] (`clusterdns_kubernetes_rejected_objects_total`), once per read
//! of the file.

use std::fs;
use std::ops::ControlFlow;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::decode;
use super::limits::MAX_OBJECT_BYTES;
use super::model::{Event, Object, Resource};
use super::watch::{ApiStats, send_until_stopped};

/// Log lines read `plugin/kubernetes: ...`, as CoreDNS's do.
const LOG_TARGET: &str = "plugin/kubernetes";

/// The thread that loads the file and polls it for changes.
pub struct FileSource {
    thread: Option<JoinHandle<()>>,
    /// Dropped to stop: wakes the poll sleep at once.
    stop: Option<Sender<()>>,
    stats: Arc<ApiStats>,
}

impl FileSource {
    /// Starts the thread: it loads `path` first thing, then checks every `poll` whether
    /// the file changed (modification time, size or inode: an editor's rename and a
    /// ConfigMap's symlink swap both show) and loads it again. Only objects of
    /// `resources` are sent.
    pub fn start(path: PathBuf, resources: Vec<Resource>, events: Sender<Event>, poll: Duration) -> FileSource {
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let stats = Arc::new(ApiStats::default());
        let watcher = FileWatcher {
            path,
            resources,
            events,
            stop: stopped,
            stats: Arc::clone(&stats),
            last_error: None,
        };
        let thread = thread::Builder::new()
            .name("watch-file".into())
            .spawn(move || watcher.run(poll));
        let thread = match thread {
            Ok(handle) => Some(handle),
            Err(e) => {
                log::error!(target: LOG_TARGET, "cannot start the file watcher: {e}");
                None
            }
        };
        FileSource {
            thread,
            stop: Some(stop),
            stats,
        }
    }

    /// The counts of objects not taken (no requests are counted: there are none).
    pub fn stats(&self) -> Arc<ApiStats> {
        Arc::clone(&self.stats)
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FileSource {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What identifies one version of the file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Version {
    modified: Option<SystemTime>,
    size: u64,
    inode: u64,
}

struct FileWatcher {
    path: PathBuf,
    resources: Vec<Resource>,
    events: Sender<Event>,
    stop: Receiver<()>,
    stats: Arc<ApiStats>,
    /// The last failure logged, so that a file that stays broken is reported once.
    last_error: Option<String>,
}

impl FileWatcher {
    fn run(mut self, poll: Duration) {
        let mut loaded: Option<Version> = None;
        loop {
            match fs::metadata(&self.path) {
                Ok(meta) => {
                    let version = Version {
                        modified: meta.modified().ok(),
                        size: meta.len(),
                        inode: meta.ino(),
                    };
                    // The version is taken before reading: a write during the read shows
                    // as a change at the next poll.
                    if loaded != Some(version) {
                        loaded = Some(version);
                        if !self.load() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    // Read again as soon as it is back, even if it comes back the same.
                    loaded = None;
                    self.failed(format!("cannot read {}: {e}", self.path.display()));
                }
            }
            if !matches!(self.stop.recv_timeout(poll), Err(RecvTimeoutError::Timeout)) {
                return;
            }
        }
    }

    /// Reads and sends the file; false when stopped (or nobody listens any more).
    ///
    /// Two streaming passes: the first checks that the whole file parses (a file caught
    /// half-written, say, sends nothing and the last contents stay); the second sends
    /// the objects one by one as it decodes them. Neither the file nor the cluster is
    /// ever held in memory twice, which is what keeps a reload of a large dump cheap.
    fn load(&mut self) -> bool {
        let counts = match scan(&self.path, &self.resources, None, &self.stats) {
            Ok(counts) => counts,
            Err(message) => {
                self.failed(message);
                return true;
            }
        };
        if self.last_error.take().is_some() {
            log::info!(target: LOG_TARGET, "{} is readable again", self.path.display());
        }
        let summary: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {}", r.name())).collect();
        log::info!(target: LOG_TARGET, "loaded {}: {}", self.path.display(), summary.join(", "));
        for &r in &self.resources {
            if !send_until_stopped(&self.events, &self.stop, Event::ListStart(r)) {
                return false;
            }
        }
        let mut open = true;
        let sent = scan(
            &self.path,
            &self.resources,
            Some(&mut |object| {
                open = open && send_until_stopped(&self.events, &self.stop, Event::Upsert(object));
            }),
            &self.stats,
        );
        if !open {
            return false;
        }
        if let Err(message) = sent {
            // Changed between the passes: the next poll sees the new version.
            self.failed(message);
        }
        self.resources
            .iter()
            .all(|&r| send_until_stopped(&self.events, &self.stop, Event::ListDone(r)))
    }

    fn failed(&mut self, message: String) {
        if let Some(message) = self.first_report(message) {
            log::error!(target: LOG_TARGET, "{message}; serving the last data read");
        }
    }

    /// The failure if it differs from the last one reported, so a file that stays broken
    /// is logged once, not at every poll.
    fn first_report(&mut self, message: String) -> Option<&str> {
        if self.last_error.as_ref() == Some(&message) {
            return None;
        }
        Some(self.last_error.insert(message))
    }
}

/// Replaces an object's resourceVersion with a hash of its content. A dump edited by
/// hand keeps its resourceVersions, and the store skips objects whose version did not
/// change: the content decides here, so every edit takes effect.
fn with_content_version(mut object: Object) -> Object {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    format!("{object:?}").hash(&mut h);
    let version: Box<str> = format!("file-{:x}", h.finish()).into();
    match &mut object {
        Object::Service(s) => s.resource_version = version,
        Object::EndpointSlice(e) => e.resource_version = version,
        Object::Pod(p) => p.resource_version = version,
        Object::Namespace(_) => {}
    }
    object
}

/// Streams the objects of `resources` in the file to `send` (or just counts them);
/// malformed items, and those that break an API rule, are skipped and counted in a
/// warning, and, when sending, in `stats` by resource (when their kind or the list's
/// tells it) and reason; a file that is not a list, or holds an item over the size
/// bound, is an error. Returns the count per resource.
fn scan(
    path: &Path,
    resources: &[Resource],
    mut send: Option<&mut dyn FnMut(Object)>,
    stats: &ApiStats,
) -> Result<Vec<(Resource, usize)>, String> {
    let (file, _) =
        crate::config::read::open_regular(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut counts: Vec<(Resource, usize)> = resources.iter().map(|&r| (r, 0)).collect();
    let mut skipped = 0;
    let mut first_error = None;
    decode::decode_list_bounded(file, None, MAX_OBJECT_BYTES, |(resource, item)| {
        match item {
            Ok(object) => {
                let r = object.resource();
                if let Some(c) = counts.iter_mut().find(|(x, _)| *x == r) {
                    c.1 += 1;
                    if let Some(send) = send.as_mut() {
                        send(with_content_version(object));
                    }
                }
            }
            Err(e) => {
                // Counted once per read of the file (in the pass that sends), under a
                // resource the source reads.
                if let Some(r) = resource.filter(|r| send.is_some() && resources.contains(r)) {
                    stats.count_rejected(r, e.reason());
                }
                skipped += 1;
                first_error.get_or_insert(e);
            }
        }
        ControlFlow::Continue(())
    })
    .map_err(|e| format!("cannot parse {} as a Kubernetes List: {e}", path.display()))?;
    if let (Some(e), None) = (first_error, &send) {
        log::warn!(
            target: LOG_TARGET,
            "{}: skipped {skipped} object(s) malformed or breaking an API rule, the first: {e}",
            path.display()
        );
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A file in a fresh temporary directory, removed at the end of the test.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> TempFile {
            let dir = std::env::temp_dir().join(format!("clusterdns-file-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempFile(dir.join("cluster.json"))
        }

        /// Replaces the file by a rename, as editors and `kubectl ... > tmp && mv` do.
        fn write(&self, contents: &str) {
            let tmp = self.0.with_extension("tmp");
            fs::write(&tmp, contents).unwrap();
            fs::rename(&tmp, &self.0).unwrap();
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    fn dump(services: &[&str]) -> String {
        let mut items = vec![
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"default","resourceVersion":"1"}}"#.to_string(),
            r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"default"}}"#.to_string(),
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-0","namespace":"default"},"status":{"podIP":"10.1.0.1"}}"#
                .to_string(),
            r#"{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"web-x","namespace":"default",
               "labels":{"kubernetes.io/service-name":"web"}},"addressType":"IPv4","endpoints":[{"addresses":["10.1.0.1"]}]}"#
                .to_string(),
        ];
        for name in services {
            items.push(format!(
                r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"{name}","namespace":"default"}},"spec":{{"clusterIP":"10.0.0.1"}}}}"#
            ));
        }
        format!(
            r#"{{"apiVersion":"v1","kind":"List","metadata":{{"resourceVersion":""}},"items":[{}]}}"#,
            items.join(",")
        )
    }

    fn describe(event: &Event) -> String {
        match event {
            Event::ListStart(r) => format!("ListStart {}", r.name()),
            Event::ListDone(r) => format!("ListDone {}", r.name()),
            Event::Upsert(o) => format!("Upsert {} {}/{}", o.resource().name(), o.key().namespace, o.key().name),
            Event::Delete(r, key) => format!("Delete {} {}/{}", r.name(), key.namespace, key.name),
            Event::Health { resource, healthy } => format!("Health {} {healthy}", resource.name()),
        }
    }

    fn take(events: &Receiver<Event>, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                describe(
                    &events
                        .recv_timeout(Duration::from_secs(3))
                        .unwrap_or_else(|_| panic!("event {i} missing")),
                )
            })
            .collect()
    }

    fn quiet(events: &Receiver<Event>, wait: Duration) {
        if let Ok(event) = events.recv_timeout(wait) {
            panic!("unexpected event {}", describe(&event));
        }
    }

    const RESOURCES: [Resource; 3] = [Resource::Namespaces, Resource::Services, Resource::EndpointSlices];

    fn full_list(services: &[&str]) -> Vec<String> {
        let mut want = vec![
            "ListStart namespaces".to_string(),
            "ListStart services".into(),
            "ListStart endpointslices".into(),
            "Upsert namespaces /default".into(),
            "Upsert endpointslices default/web-x".into(),
        ];
        want.extend(services.iter().map(|s| format!("Upsert services default/{s}")));
        want.extend([
            "ListDone namespaces".into(),
            "ListDone services".into(),
            "ListDone endpointslices".into(),
        ]);
        want
    }

    #[test]
    fn content_decides_the_version_not_the_resource_version() {
        let svc = |ip: &str| {
            Object::Service(crate::kubernetes::model::Service {
                namespace: "ns".into(),
                name: "web".into(),
                resource_version: "7".into(),
                kind: crate::kubernetes::model::ServiceKind::ClusterIp,
                cluster_ips: vec![ip.parse().unwrap()],
                external_name: "".into(),
                external_ips: Vec::new(),
                ports: vec![],
            })
        };
        let version = |o: Object| match o {
            Object::Service(s) => s.resource_version,
            _ => unreachable!(),
        };
        let a = version(with_content_version(svc("10.0.0.1")));
        assert_eq!(a, version(with_content_version(svc("10.0.0.1"))));
        assert_ne!(
            a,
            version(with_content_version(svc("10.0.0.2"))),
            "an edit keeping the resourceVersion"
        );
    }

    #[test]
    fn loads_at_start_and_again_on_change() {
        let file = TempFile::new("change");
        file.write(&dump(&["web", "db"]));
        let (tx, rx) = crossbeam_channel::unbounded();
        let source = FileSource::start(file.0.clone(), RESOURCES.to_vec(), tx, Duration::from_millis(20));
        // Pods are not among the resources and Deployments are no resource: both skipped.
        let want = full_list(&["web", "db"]);
        assert_eq!(take(&rx, want.len()), want);
        quiet(&rx, Duration::from_millis(100));

        // The service deleted from the file is absent from the new full list.
        file.write(&dump(&["web"]));
        let want = full_list(&["web"]);
        assert_eq!(take(&rx, want.len()), want);

        // A file caught broken sends nothing; fixed, it is loaded again.
        file.write(r#"{"kind":"List","items":[{"kind":"Service","metadata":{"name":"#);
        quiet(&rx, Duration::from_millis(150));
        file.write(&dump(&["api"]));
        let want = full_list(&["api"]);
        assert_eq!(take(&rx, want.len()), want);

        let started = Instant::now();
        source.stop();
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn a_missing_file_is_loaded_once_it_appears() {
        let file = TempFile::new("missing");
        let (tx, rx) = crossbeam_channel::unbounded();
        let source = FileSource::start(file.0.clone(), RESOURCES.to_vec(), tx, Duration::from_millis(20));
        quiet(&rx, Duration::from_millis(100));
        file.write(&dump(&["web"]));
        let want = full_list(&["web"]);
        assert_eq!(take(&rx, want.len()), want);
        source.stop();
    }

    #[test]
    fn single_kind_lists_and_malformed_items() {
        let file = TempFile::new("single");
        file.write(
            r#"{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[
                {"metadata":{"name":"a","namespace":"x"},"spec":{"clusterIP":"10.0.0.1"}},
                {"metadata":{"name":"b","namespace":"x"},"spec":{"ports":"bad"}}]}"#,
        );
        let (tx, rx) = crossbeam_channel::unbounded();
        let source = FileSource::start(file.0.clone(), vec![Resource::Services], tx, Duration::from_secs(10));
        assert_eq!(
            take(&rx, 3),
            ["ListStart services", "Upsert services x/a", "ListDone services"]
        );
        // A long poll still stops at once.
        let started = Instant::now();
        source.stop();
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn rejected_objects_are_counted_once_per_read() {
        let file = TempFile::new("rejected");
        let dump = |extra: &str| {
            format!(
                r#"{{"kind":"List","apiVersion":"v1","metadata":{{}},"items":[
                {{"kind":"Service","metadata":{{"name":"a","namespace":"x"}},"spec":{{"clusterIP":"10.0.0.1"}}}},
                {{"kind":"Service","metadata":{{"name":"{}","namespace":"x"}}}},
                {{"kind":"Service","metadata":{{"name":"b","namespace":"x"}},"spec":{{"ports":"bad"}}}},
                {{"kind":"Pod","metadata":{{"name":"p","namespace":"x"}},"status":7}},
                {{"metadata":{{"name":"kindless"}}}}{extra}]}}"#,
                "l".repeat(64)
            )
        };
        file.write(&dump(""));
        let (tx, rx) = crossbeam_channel::unbounded();
        let source = FileSource::start(file.0.clone(), vec![Resource::Services], tx, Duration::from_millis(20));
        assert_eq!(
            take(&rx, 3),
            ["ListStart services", "Upsert services x/a", "ListDone services"]
        );
        // Under the resource their kind names, when the source reads it (not the Pod,
        // not the item without a kind); the pass that only checks the file counts
        // nothing.
        let want = |n| {
            vec![
                (Resource::Services, "invalid_name", n),
                (Resource::Services, "malformed", n),
            ]
        };
        assert_eq!(source.stats().snapshot().rejected, want(1));
        // Read again after a change: counted again.
        std::thread::sleep(Duration::from_millis(10));
        file.write(&dump(r#",{"kind":"Namespace","metadata":{"name":"new"}}"#));
        assert_eq!(
            take(&rx, 3),
            ["ListStart services", "Upsert services x/a", "ListDone services"]
        );
        assert_eq!(source.stats().snapshot().rejected, want(2));
        assert!(source.stats().snapshot().requests.is_empty());
        source.stop();
    }

    #[test]
    fn objects_over_the_api_bounds_are_skipped_or_fail_the_file() {
        let file = TempFile::new("bounds");
        let long = "l".repeat(64);
        file.write(&format!(
            r#"{{"kind":"ServiceList","apiVersion":"v1","metadata":{{}},"items":[
                {{"metadata":{{"name":"a","namespace":"x"}},"spec":{{"clusterIP":"10.0.0.1"}}}},
                {{"metadata":{{"name":"{long}","namespace":"x"}},"spec":{{"clusterIP":"10.0.0.2"}}}}]}}"#
        ));
        assert_eq!(
            scan(&file.0, &[Resource::Services], None, &ApiStats::default()).unwrap(),
            [(Resource::Services, 1)]
        );
        // An item over 4 MiB: the whole file is refused (the last good contents stay).
        file.write(&format!(
            r#"{{"kind":"ServiceList","apiVersion":"v1","metadata":{{}},"items":[
                {{"metadata":{{"name":"a","namespace":"x","annotations":{{"x":"{}"}}}}}}]}}"#,
            "x".repeat(5 << 20)
        ));
        let e = scan(&file.0, &[Resource::Services], None, &ApiStats::default()).unwrap_err();
        assert!(e.ends_with("an object larger than 4 MiB"), "{e}");
        // A FIFO is refused at once.
        let fifo = file.0.with_extension("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = scan(&fifo, &[Resource::Services], None, &ApiStats::default()).unwrap_err();
        assert!(e.ends_with("not a regular file (a FIFO)"), "{e}");
    }

    #[test]
    fn a_failure_is_logged_once_until_it_changes() {
        let (tx, _rx) = crossbeam_channel::unbounded();
        let (_stop, stopped) = crossbeam_channel::bounded(0);
        let mut watcher = FileWatcher {
            path: "/nonexistent".into(),
            resources: vec![],
            events: tx,
            stop: stopped,
            stats: Arc::default(),
            last_error: None,
        };
        assert_eq!(watcher.first_report("cannot read x".into()), Some("cannot read x"));
        assert_eq!(watcher.first_report("cannot read x".into()), None);
        assert_eq!(watcher.first_report("cannot parse x".into()), Some("cannot parse x"));
        assert_eq!(watcher.first_report("cannot parse x".into()), None);
        // A good read clears it: the same failure later is news again.
        watcher.last_error = None;
        assert_eq!(watcher.first_report("cannot parse x".into()), Some("cannot parse x"));
    }
}
