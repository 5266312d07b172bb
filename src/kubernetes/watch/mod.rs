//! The Kubernetes API client: one thread per watched resource lists the collection page
//! by page, then watches it from the list's resourceVersion, and sends what it sees to the
//! snapshot builder as [`Event`]s. Plain HTTP only (ureq without TLS): `kubectl proxy`, an
//! authenticating sidecar, or a test fake.
//!
//! ```text
//!   LIST ?limit=N ──continue──▶ …  ─────────▶  WATCH ?resourceVersion=RV&allowWatchBookmarks=true
//!   ListStart, Upserts, ListDone               ADDED/MODIFIED → Upsert, DELETED → Delete, BOOKMARK → RV
//!        ▲                                       │
//!        └── 410 Gone (ERROR event or HTTP 410) ─┤
//!                                                ├─ closed by the server (timeoutSeconds):
//!                                                │  watch again from the last RV
//!                                                └─ failure (connect, 5xx, 403, stall): back off, next endpoint,
//!                                                   watch again from the last RV
//!   A failure while listing: back off, next endpoint, list again from the first page.
//! ```
//!
//! The API conventions followed are those of client-go's reflector ("Efficient detection
//! of changes" in the Kubernetes API concepts): list with `limit`/`continue`, watch with
//! `allowWatchBookmarks`, relist only when the resourceVersion has expired.
//!
//! Decisions and I/O are apart (ARCHITECTURE.md rule 10): the `reflector` decides
//! (what to request, what a response or an event means, when to relist, how long to
//! back off, which endpoint is next) without doing any I/O, and the `runner` performs
//! what it decides with ureq, one thread per resource:
//!
//! ```text
//!   reflector ──Action (Get, ReadPage, ReadLine, Emit, Reject, Wait…)──▶ runner ──▶ ureq, the
//!       ▲          reflector.next(input, now) -> action                    │      builder's channel,
//!       └──────────── Input (Response, Item, PageEnd, Line, Failed…) ◀─────┘      sleep
//! ```
//!
//! `stream` reads a watch stream one bounded line at a time, and `stats` holds the
//! request metrics and the counts of rejected objects.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::model::{Event, Resource};
use crate::chain::Rng;

mod reflector;
mod runner;
mod stats;
mod stream;

use reflector::Reflector;
use runner::Runner;
pub(super) use runner::send_until_stopped;
pub(super) use stats::RejectLog;
pub use stats::{ApiStats, ApiStatsSnapshot, DURATION_BUCKETS, DurationHistogram, RequestCount, Verb};
pub use stream::{NextLine, next_line};

/// Log lines read `plugin/kubernetes: ...`, as CoreDNS's do.
const LOG_TARGET: &str = "plugin/kubernetes";
/// How long a TCP connect to the API may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the API may take to start answering a request (status and headers).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Read buffer for list bodies and watch streams.
const READ_BUFFER: usize = 64 << 10;
/// Most of an error response body read for its Status message.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// Where and what to watch, and how patiently.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// `http://` base URLs; with several, each failure moves on to the next one.
    pub endpoints: Vec<String>,
    /// The resources to list and watch, one thread each.
    pub resources: Vec<Resource>,
    /// `labels` option: label selector for services, endpointslices and pods.
    pub label_selector: Option<String>,
    /// `namespace_labels` option: label selector for namespaces.
    pub namespace_label_selector: Option<String>,
    /// Items per list page (`limit`); 0 asks for the whole list at once.
    pub page_size: usize,
    /// Base watch duration: each watch asks for `timeoutSeconds` in `[base, 2*base)`
    /// (client-go's jitter, so that replicas do not reconnect in lockstep).
    pub watch_timeout: Duration,
    /// A stream silent for longer than this is dead; keep it above the API's bookmark
    /// interval (about a minute).
    pub idle_timeout: Duration,
    /// First retry delay after a failure (doubled per failure in a row, jittered).
    pub backoff_initial: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            endpoints: vec!["http://127.0.0.1:8001".into()],
            resources: vec![Resource::Namespaces, Resource::Services, Resource::EndpointSlices],
            label_selector: None,
            namespace_label_selector: None,
            page_size: 500,
            watch_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(75),
            backoff_initial: Duration::from_millis(800),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// The running watch threads.
pub struct Watchers {
    threads: Vec<JoinHandle<()>>,
    agent: ureq::Agent,
    /// Dropped to stop: every thread's `stop` receiver then reports disconnection, which
    /// wakes backoff sleeps and blocked sends at once.
    stop: Option<Sender<()>>,
    stats: Arc<ApiStats>,
}

impl Watchers {
    /// Spawns one thread per resource; each sends its [`Event`]s to `events`.
    ///
    /// Per resource the events are: `ListStart`, the list's `Upsert`s, `ListDone`, then
    /// `Upsert`/`Delete` from the watch, and a new `ListStart` ... `ListDone` after each
    /// relist. A `ListStart` can also follow a `ListStart` whose list never finished (the
    /// list failed half-way and is being retried): the new one replaces it. `Health`
    /// comes once when the API starts failing and once when it answers again.
    pub fn start(cfg: WatchConfig, events: Sender<Event>) -> Watchers {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // The proxy would otherwise come from HTTP_PROXY, and a kubectl proxy on
            // loopback must not be reached through it.
            .proxy(None)
            .http_status_as_error(false)
            .user_agent(format!("clusterdns/{}", crate::VERSION))
            .accept("application/json")
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .timeout_per_read(Some(cfg.idle_timeout))
            .build()
            .into();
        let stats = Arc::new(ApiStats::default());
        let (stop, stopped) = crossbeam_channel::bounded(0);
        let mut threads = Vec::new();
        if cfg.endpoints.is_empty() {
            log::error!(target: LOG_TARGET, "no API endpoint configured; not watching the API");
        } else {
            let cfg = Arc::new(cfg);
            for &resource in &cfg.resources {
                let runner = Runner {
                    resource,
                    reflector: Reflector::new(resource, Arc::clone(&cfg), Rng::seeded()),
                    agent: agent.clone(),
                    events: events.clone(),
                    stop: stopped.clone(),
                    stats: Arc::clone(&stats),
                    rejected: RejectLog::default(),
                };
                let spawned = thread::Builder::new()
                    .name(format!("watch-{}", resource.name()))
                    .spawn(|| runner.run());
                match spawned {
                    Ok(handle) => threads.push(handle),
                    Err(e) => log::error!(target: LOG_TARGET, "cannot start the {} watcher: {e}", resource.name()),
                }
            }
        }
        Watchers {
            threads,
            agent,
            stop: Some(stop),
            stats,
        }
    }

    /// Cancels every request and stream at once and waits for the threads to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Request counters and durations, for `/metrics`.
    pub fn stats(&self) -> Arc<ApiStats> {
        Arc::clone(&self.stats)
    }

    fn shutdown(&mut self) {
        if self.stop.take().is_none() {
            return;
        }
        // Closes the connections of every clone of the agent, so blocked reads return now
        // (ureq 3.5 `Agent::shutdown`); the threads see the stop and exit.
        self.agent.clone().shutdown();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use crossbeam_channel::Receiver;
    use parking_lot::Mutex;

    use super::reflector::POD_FIELD_SELECTOR;
    use super::*;

    /// One request the fake API received.
    #[derive(Clone, Debug)]
    struct Request {
        path: String,
        /// The query as sent (still percent-encoded).
        raw_query: String,
        /// The query, decoded.
        query: HashMap<String, String>,
        at: Instant,
    }

    impl Request {
        fn param(&self, name: &str) -> Option<&str> {
            self.query.get(name).map(String::as_str)
        }

        fn is_watch(&self) -> bool {
            self.param("watch") == Some("1")
        }
    }

    /// The connection a fake API handler answers on (one request per connection).
    struct Conn(TcpStream);

    impl Conn {
        fn json(mut self, status: u16, body: &str) {
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = self
                .0
                .write_all(head.as_bytes())
                .and_then(|_| self.0.write_all(body.as_bytes()));
        }

        /// Starts a chunked 200 response, as a watch is.
        fn stream(&mut self) {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            let _ = self.0.write_all(head.as_bytes());
        }

        /// Sends one event line as a chunk.
        fn event(&mut self, line: &str) {
            self.chunk(&format!("{line}\n"));
        }

        fn chunk(&mut self, data: &str) {
            let _ = write!(self.0, "{:x}\r\n{data}\r\n", data.len());
            let _ = self.0.flush();
        }

        /// Ends the stream normally, as the API does at `timeoutSeconds`.
        fn end(mut self) {
            let _ = self.0.write_all(b"0\r\n\r\n");
        }

        /// Keeps the connection open and silent until the client closes it (bounded, so a
        /// failed test cannot hang).
        fn hold(mut self) {
            let _ = self.0.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0; 64];
            while matches!(self.0.read(&mut buf), Ok(n) if n > 0) {}
        }
    }

    type Handler = dyn Fn(&Request, Conn) + Send + Sync;

    /// A fake API server over std TcpListener that answers each request with `handler`.
    struct FakeApi {
        url: String,
        requests: Arc<Mutex<Vec<Request>>>,
    }

    impl FakeApi {
        fn start(handler: impl Fn(&Request, Conn) + Send + Sync + 'static) -> FakeApi {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let requests = Arc::new(Mutex::new(Vec::new()));
            let handler: Arc<Handler> = Arc::new(handler);
            let log = Arc::clone(&requests);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { return };
                    let (handler, log) = (Arc::clone(&handler), Arc::clone(&log));
                    thread::spawn(move || {
                        if let Some(request) = read_request(&stream) {
                            log.lock().push(request.clone());
                            handler(&request, Conn(stream));
                        }
                    });
                }
            });
            FakeApi { url, requests }
        }

        fn requests(&self) -> Vec<Request> {
            self.requests.lock().clone()
        }

        /// Waits until `n` requests have arrived.
        fn wait_requests(&self, n: usize) -> Vec<Request> {
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                let requests = self.requests();
                if requests.len() >= n || Instant::now() > deadline {
                    assert!(requests.len() >= n, "expected {n} requests, got {requests:#?}");
                    return requests;
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
    }

    fn read_request(mut stream: &TcpStream) -> Option<Request> {
        let mut head = Vec::new();
        let mut byte = [0];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).ok()?;
        let target = head.split(' ').nth(1)?;
        let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
        let query = raw_query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), percent_decode(v)))
            .collect();
        Some(Request {
            path: path.into(),
            raw_query: raw_query.into(),
            query,
            at: Instant::now(),
        })
    }

    fn percent_decode(s: &str) -> String {
        let mut out = Vec::new();
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn svc(name: &str, rv: u32) -> String {
        format!(
            r#"{{"metadata":{{"name":"{name}","namespace":"ns","resourceVersion":"{rv}","managedFields":[{{"manager":"x"}}]}},"spec":{{"clusterIP":"10.0.0.{rv}"}}}}"#,
            rv = rv % 250
        )
    }

    fn list_page(items: &[String], rv: u32, continue_token: &str) -> String {
        format!(
            r#"{{"kind":"ServiceList","apiVersion":"v1","metadata":{{"resourceVersion":"{rv}","continue":"{continue_token}"}},"items":[{}]}}"#,
            items.join(",")
        )
    }

    fn event(kind: &str, object: &str) -> String {
        format!(r#"{{"type":"{kind}","object":{object}}}"#)
    }

    fn bookmark(rv: u32) -> String {
        event(
            "BOOKMARK",
            &format!(r#"{{"kind":"Service","apiVersion":"v1","metadata":{{"resourceVersion":"{rv}"}}}}"#),
        )
    }

    const EXPIRED: &str = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version: 10 (20)","reason":"Expired","code":410}}"#;

    fn config(endpoints: Vec<String>) -> WatchConfig {
        WatchConfig {
            endpoints,
            resources: vec![Resource::Services],
            page_size: 2,
            watch_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_millis(300),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(80),
            ..WatchConfig::default()
        }
    }

    /// Events as short strings, comparable in assertions.
    fn describe(event: &Event) -> String {
        match event {
            Event::ListStart(r) => format!("ListStart {}", r.name()),
            Event::ListDone(r) => format!("ListDone {}", r.name()),
            Event::Upsert(o) => format!("Upsert {}/{}", o.key().namespace, o.key().name),
            Event::Delete(_, key) => format!("Delete {}/{}", key.namespace, key.name),
            Event::Health { resource, healthy } => format!("Health {} {healthy}", resource.name()),
        }
    }

    /// Receives `n` events (fails after a generous timeout).
    fn take(events: &Receiver<Event>, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let event = events.recv_timeout(Duration::from_secs(3));
                describe(&event.unwrap_or_else(|_| panic!("event {i} of {n} did not come")))
            })
            .collect()
    }

    /// Asserts that no event comes within `wait`.
    fn quiet(events: &Receiver<Event>, wait: Duration) {
        if let Ok(event) = events.recv_timeout(wait) {
            panic!("unexpected event {}", describe(&event));
        }
    }

    /// A closed local port: connecting to it is refused.
    fn refused_endpoint() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    #[test]
    fn lists_all_pages_then_watches_from_the_list_version() {
        let api = FakeApi::start(|req, mut conn| {
            if req.is_watch() {
                conn.stream();
                conn.event(&event("ADDED", &svc("d", 101)));
                conn.event(&event("MODIFIED", &svc("a", 102)));
                conn.event(&event(
                    "DELETED",
                    r#"{"kind":"Service","metadata":{"name":"b","namespace":"ns","resourceVersion":"103"}}"#,
                ));
                return conn.hold();
            }
            let limit: usize = req.param("limit").unwrap().parse().unwrap();
            let page = match req.param("continue") {
                None => list_page(&[svc("a", 1), svc("b", 2)][..limit], 100, "page2"),
                Some("page2") => list_page(&[svc("c", 3), svc("e", 4)], 100, "page3"),
                Some("page3") => list_page(&[svc("f", 5)], 100, ""),
                Some(other) => panic!("unknown continue {other}"),
            };
            conn.json(200, &page);
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let watchers = Watchers::start(config(vec![api.url.clone()]), tx);
        assert_eq!(
            take(&rx, 10),
            [
                "ListStart services",
                "Upsert ns/a",
                "Upsert ns/b",
                "Upsert ns/c",
                "Upsert ns/e",
                "Upsert ns/f",
                "ListDone services",
                "Upsert ns/d",
                "Upsert ns/a",
                "Delete ns/b",
            ]
        );
        let requests = api.wait_requests(4);
        let pages: Vec<_> = requests[..3]
            .iter()
            .map(|r| (r.path.as_str(), r.raw_query.as_str()))
            .collect();
        assert_eq!(
            pages,
            [
                ("/api/v1/services", "limit=2"),
                ("/api/v1/services", "limit=2&continue=page2"),
                ("/api/v1/services", "limit=2&continue=page3"),
            ]
        );
        let watch = &requests[3];
        assert_eq!(watch.path, "/api/v1/services");
        assert_eq!(
            (
                watch.param("watch"),
                watch.param("resourceVersion"),
                watch.param("allowWatchBookmarks")
            ),
            (Some("1"), Some("100"), Some("true"))
        );
        // timeoutSeconds in [base, 2*base) with a base of 1 s.
        assert_eq!(watch.param("timeoutSeconds"), Some("1"));
        let started = Instant::now();
        watchers.stop();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "stop took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn closed_stream_watches_again_from_the_last_version_without_relisting() {
        let watches = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&watches);
        let api = FakeApi::start(move |req, mut conn| {
            if !req.is_watch() {
                return conn.json(200, &list_page(&[svc("a", 1)], 10, ""));
            }
            conn.stream();
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                conn.event(&event("ADDED", &svc("b", 11)));
                // One event line split over two chunks, sent apart.
                let line = bookmark(15) + "\n";
                conn.chunk(&line[..20]);
                thread::sleep(Duration::from_millis(20));
                conn.chunk(&line[20..]);
                conn.end();
            } else {
                conn.hold();
            }
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let watchers = Watchers::start(config(vec![api.url.clone()]), tx);
        assert_eq!(
            take(&rx, 4),
            ["ListStart services", "Upsert ns/a", "ListDone services", "Upsert ns/b"]
        );
        let requests = api.wait_requests(3);
        let versions: Vec<_> = requests
            .iter()
            .map(|r| (r.is_watch(), r.param("resourceVersion")))
            .collect();
        assert_eq!(versions, [(false, None), (true, Some("10")), (true, Some("15"))]);
        quiet(&rx, Duration::from_millis(100));
        assert_eq!(api.requests().len(), 3, "no relist");
        watchers.stop();
    }

    #[test]
    fn expired_watch_relists_once() {
        for http_410 in [false, true] {
            let lists = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&lists);
            let api = FakeApi::start(move |req, mut conn| {
                if !req.is_watch() {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let items = if n == 0 {
                        vec![svc("a", 1), svc("b", 2)]
                    } else {
                        vec![svc("b", 2)]
                    };
                    return conn.json(200, &list_page(&items, 10 + 10 * n as u32, ""));
                }
                match req.param("resourceVersion") {
                    Some("10") if http_410 => conn.json(410, EXPIRED),
                    Some("10") => {
                        conn.stream();
                        conn.event(&event("MODIFIED", &svc("b", 12)));
                        conn.event(EXPIRED);
                        conn.hold();
                    }
                    _ => {
                        conn.stream();
                        conn.hold();
                    }
                }
            });
            let (tx, rx) = crossbeam_channel::unbounded();
            let watchers = Watchers::start(config(vec![api.url.clone()]), tx);
            let mut expected = vec!["ListStart services", "Upsert ns/a", "Upsert ns/b", "ListDone services"];
            if !http_410 {
                expected.push("Upsert ns/b");
            }
            expected.extend(["ListStart services", "Upsert ns/b", "ListDone services"]);
            assert_eq!(take(&rx, expected.len()), expected, "http 410: {http_410}");
            let requests = api.wait_requests(4);
            assert_eq!(requests[3].param("resourceVersion"), Some("20"));
            quiet(&rx, Duration::from_millis(150));
            assert_eq!(lists.load(Ordering::SeqCst), 2, "exactly one relist");
            watchers.stop();
        }
    }

    #[test]
    fn expired_continue_token_restarts_the_list() {
        let api = FakeApi::start(|req, conn| {
            if req.is_watch() {
                return conn.hold();
            }
            match req.param("continue") {
                None => conn.json(200, &list_page(&[svc("a", 1), svc("b", 2)], 10, "old")),
                Some(_) => conn.json(
                    410,
                    r#"{"kind":"Status","code":410,"reason":"Expired","message":"The provided continue parameter is too old"}"#,
                ),
            }
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let watchers = Watchers::start(config(vec![api.url.clone()]), tx);
        // A new ListStart replaces the unfinished list. The list restarts at once the
        // first time; a second expiry is a failure (here every second page expires).
        assert_eq!(
            take(&rx, 10),
            [
                "ListStart services",
                "Upsert ns/a",
                "Upsert ns/b",
                "ListStart services",
                "Upsert ns/a",
                "Upsert ns/b",
                "Health services false",
                "ListStart services",
                "Upsert ns/a",
                "Upsert ns/b",
            ]
        );
        let requests = api.wait_requests(5);
        assert_eq!(requests[2].raw_query, "limit=2");
        assert!(
            requests[4].at - requests[3].at >= Duration::from_millis(10),
            "backed off"
        );
        watchers.stop();
    }

    #[test]
    fn server_errors_back_off_and_outage_is_reported_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let api = FakeApi::start(move |req, mut conn| {
            if req.is_watch() {
                conn.stream();
                return conn.hold();
            }
            // Twelve failures (alternating kinds), then the API is back.
            match counter.fetch_add(1, Ordering::SeqCst) {
                n if n < 12 && n % 2 == 0 => conn.json(500, r#"{"kind":"Status","code":500,"message":"etcd is down"}"#),
                n if n < 12 => conn.json(503, "<html>Service Unavailable</html>"),
                _ => conn.json(200, &list_page(&[svc("a", 1)], 10, "")),
            }
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let started = Instant::now();
        let watchers = Watchers::start(config(vec![api.url.clone()]), tx);
        assert_eq!(
            take(&rx, 5),
            [
                "Health services false",
                "ListStart services",
                "Upsert ns/a",
                "ListDone services",
                "Health services true"
            ]
        );
        // Backoff 20, 40, 80, 80... ms jittered to at least half: twelve failures take
        // at least 10+20+40+40*9 ms.
        let requests = api.wait_requests(14);
        let list_done = requests[12].at;
        assert!(
            list_done - started >= Duration::from_millis(430),
            "retries too fast: {:?}",
            list_done - started
        );
        let gaps: Vec<_> = requests[..13].windows(2).map(|w| w[1].at - w[0].at).collect();
        assert!(
            gaps[5..].iter().all(|gap| *gap >= Duration::from_millis(35)),
            "backoff not capped low: {gaps:?}"
        );
        assert!(
            gaps.iter().all(|gap| *gap < Duration::from_millis(300)),
            "backoff above its cap: {gaps:?}"
        );
        quiet(&rx, Duration::from_millis(100));

        let stats = watchers.stats().snapshot();
        let count = |code: &str| stats.requests.iter().find(|r| &*r.code == code).map_or(0, |r| r.count);
        assert_eq!((count("500"), count("503"), count("200")), (6, 6, 2));
        assert!(
            stats
                .requests
                .iter()
                .all(|r| r.method == "GET" && api.url.ends_with(&*r.host))
        );
        let verbs: Vec<_> = stats
            .durations
            .iter()
            .map(|(verb, _, h)| (verb.name(), h.count))
            .collect();
        assert_eq!(verbs, [("LIST", 1), ("WATCH", 1)]);
        let list = &stats.durations[0].2;
        assert_eq!(list.buckets[10], 1, "cumulative: the last bucket holds every request");
        watchers.stop();
    }

    #[test]
    fn stalled_watch_reconnects_from_the_same_version() {
        let api = FakeApi::start(|req, mut conn| {
            if !req.is_watch() {
                return conn.json(200, &list_page(&[svc("a", 1)], 10, ""));
            }
            conn.stream();
            conn.event(&bookmark(12));
            conn.hold();
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let watchers = Watchers::start(config(vec![api.url.clone()]), tx);
        assert_eq!(take(&rx, 3), ["ListStart services", "Upsert ns/a", "ListDone services"]);
        let requests = api.wait_requests(3);
        // The stall is noticed after the idle timeout (300 ms), then a short backoff.
        let gap = requests[2].at - requests[1].at;
        assert!(
            gap >= Duration::from_millis(290) && gap < Duration::from_millis(900),
            "{gap:?}"
        );
        assert_eq!(requests[2].param("resourceVersion"), Some("12"));
        assert!(!requests.iter().skip(1).any(|r| !r.is_watch()), "no relist");
        // A stall is an outage of the stream: reported once, and the next bookmark ends it.
        assert_eq!(take(&rx, 2), ["Health services false", "Health services true"]);
        watchers.stop();
    }

    #[test]
    fn stop_is_prompt_while_streams_block_or_back_off() {
        // One resource blocked in a silent watch, one in a long backoff.
        let api = FakeApi::start(|req, mut conn| match req.path.as_str() {
            "/api/v1/services" if req.is_watch() => {
                conn.stream();
                conn.hold();
            }
            "/api/v1/services" => conn.json(200, &list_page(&[], 10, "")),
            _ => conn.json(500, "{}"),
        });
        let cfg = WatchConfig {
            resources: vec![Resource::Services, Resource::Namespaces],
            idle_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(30),
            backoff_max: Duration::from_secs(30),
            ..config(vec![api.url.clone()])
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let watchers = Watchers::start(cfg, tx);
        api.wait_requests(3);
        thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        watchers.stop();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "stop took {:?}",
            started.elapsed()
        );
        let events: Vec<_> = rx.try_iter().map(|e| describe(&e)).collect();
        assert!(events.contains(&"Health namespaces false".to_string()), "{events:?}");
    }

    #[test]
    fn fails_over_to_the_next_endpoint() {
        let api = FakeApi::start(|req, mut conn| {
            if req.is_watch() {
                conn.stream();
                conn.event(&event("ADDED", &svc("b", 11)));
                return conn.hold();
            }
            conn.json(200, &list_page(&[svc("a", 1)], 10, ""));
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let watchers = Watchers::start(config(vec![refused_endpoint(), format!("{}/", api.url)]), tx);
        assert_eq!(
            take(&rx, 6),
            [
                "Health services false",
                "ListStart services",
                "Upsert ns/a",
                "ListDone services",
                "Health services true",
                "Upsert ns/b"
            ]
        );
        assert_eq!(
            api.requests()[0].path,
            "/api/v1/services",
            "the trailing slash of an endpoint is dropped"
        );
        let stats = watchers.stats().snapshot();
        assert!(stats.requests.iter().any(|r| &*r.code == "<error>"), "{stats:?}");
        watchers.stop();
    }

    #[test]
    fn selectors_are_encoded_into_the_urls() {
        let api = FakeApi::start(|req, conn| {
            if req.is_watch() {
                return conn.hold();
            }
            let kind = if req.path.ends_with("pods") {
                "PodList"
            } else {
                "NamespaceList"
            };
            conn.json(
                200,
                &format!(r#"{{"kind":"{kind}","metadata":{{"resourceVersion":"5"}},"items":[]}}"#),
            );
        });
        let cfg = WatchConfig {
            resources: vec![Resource::Pods, Resource::Namespaces],
            label_selector: Some("app in (a,b),tier!=db".into()),
            namespace_label_selector: Some("team=dns".into()),
            ..config(vec![api.url.clone()])
        };
        let (tx, _rx) = crossbeam_channel::unbounded();
        let watchers = Watchers::start(cfg, tx);
        let requests = api.wait_requests(4);
        watchers.stop();
        for request in &requests {
            let pods = request.path == "/api/v1/pods";
            assert!(pods || request.path == "/api/v1/namespaces", "{request:?}");
            let (labels, fields) = if pods {
                (Some("app in (a,b),tier!=db"), Some(POD_FIELD_SELECTOR))
            } else {
                (Some("team=dns"), None)
            };
            assert_eq!(
                (request.param("labelSelector"), request.param("fieldSelector")),
                (labels, fields)
            );
            assert!(
                !request.raw_query.contains([' ', '(', ',', '!']),
                "not encoded: {}",
                request.raw_query
            );
        }
        let pod_list = requests
            .iter()
            .find(|r| r.path == "/api/v1/pods" && !r.is_watch())
            .unwrap();
        assert_eq!(
            pod_list.raw_query,
            "limit=2&labelSelector=app%20in%20%28a%2Cb%29%2Ctier%21%3Ddb\
             &fieldSelector=status.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed%2Cstatus.phase%21%3DUnknown"
        );
    }

    #[test]
    fn a_huge_list_item_or_a_page_far_over_its_limit_fails_the_list() {
        // First answer: an item with a 17 MiB field; then a page of 10,001 items for a
        // limit of 2; then a good list.
        let lists = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = lists.clone();
        let api = FakeApi::start(move |req, mut conn| {
            if req.is_watch() {
                conn.stream();
                return conn.hold();
            }
            match seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 => {
                    let huge = format!(
                        r#"{{"metadata":{{"name":"huge","namespace":"ns","annotations":{{"x":"{}"}}}},"spec":{{}}}}"#,
                        "x".repeat(17 << 20)
                    );
                    conn.json(200, &list_page(&[svc("a", 1), huge, svc("c", 3)], 10, ""))
                }
                1 => {
                    let many: Vec<String> = (0..10_001).map(|i| svc(&format!("s{i}"), i)).collect();
                    conn.json(200, &list_page(&many, 10, ""))
                }
                _ => conn.json(200, &list_page(&[svc("ok", 1)], 10, "")),
            }
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        // The fake API builds 17 MiB and 10,001 items before its first byte: at load 10
        // that passed the 300 ms idle timeout of `config`, and the extra list this timeout
        // started broke the count of three below (seen in loaded full runs).
        let cfg = WatchConfig {
            idle_timeout: Duration::from_secs(20),
            ..config(vec![api.url.clone()])
        };
        let watchers = Watchers::start(cfg, tx);
        let mut events = Vec::new();
        // Two failed lists back off before the third, and a debug build writes and
        // parses 17 MiB and 10,001 items: 20 s was missed on a loaded 2-core machine.
        let end = Instant::now() + Duration::from_secs(60);
        while !events.iter().any(|e| e == "ListDone services") {
            assert!(Instant::now() < end, "no list completed: {events:?}");
            if let Ok(e) = rx.recv_timeout(Duration::from_secs(1)) {
                events.push(describe(&e));
            }
        }
        watchers.stop();
        // The huge item ended its list before anything after it; the long page after
        // its 10,000th item; only the third list completed.
        let upserts = |from: usize, to: usize| events[from..to].iter().filter(|e| e.starts_with("Upsert")).count();
        let starts: Vec<usize> = (0..events.len())
            .filter(|&i| events[i] == "ListStart services")
            .collect();
        assert_eq!(starts.len(), 3, "{:?}", &events[..6]);
        assert_eq!(upserts(starts[0], starts[1]), 1);
        assert_eq!(upserts(starts[1], starts[2]), 10_000);
        assert_eq!(
            events[starts[2]..],
            ["ListStart services", "Upsert ns/ok", "ListDone services"]
        );
        assert_eq!(lists.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn malformed_objects_and_lines_are_skipped() {
        let api = FakeApi::start(|req, mut conn| {
            if !req.is_watch() {
                let bad =
                    r#"{"metadata":{"name":"bad","namespace":"ns"},"spec":{"ports":[{"port":"http"}]}}"#.to_string();
                return conn.json(200, &list_page(&[svc("a", 1), bad, svc("c", 3)], 10, ""));
            }
            conn.stream();
            conn.event("this is not json");
            conn.event(&event("ADDED", r#"{"metadata":{"name":7}}"#));
            conn.event(&event("ADDED", &svc("d", 11)));
            conn.hold();
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let watchers = Watchers::start(config(vec![api.url.clone()]), tx);
        assert_eq!(
            take(&rx, 5),
            [
                "ListStart services",
                "Upsert ns/a",
                "Upsert ns/c",
                "ListDone services",
                "Upsert ns/d"
            ]
        );
        watchers.stop();
    }

    #[test]
    fn rejected_objects_are_counted_and_removed() {
        let long = "x".repeat(64);
        let (list_long, watch_long) = (long.clone(), long.clone());
        let api = FakeApi::start(move |req, mut conn| {
            if !req.is_watch() {
                let bad = format!(r#"{{"metadata":{{"name":"{list_long}","namespace":"ns"}},"spec":{{}}}}"#);
                return conn.json(200, &list_page(&[svc("a", 1), bad, svc("b", 2)], 10, ""));
            }
            conn.stream();
            // `a` modified into a Service with an invalid port name: it goes.
            conn.event(&event(
                "MODIFIED",
                r#"{"metadata":{"name":"a","namespace":"ns","resourceVersion":"11"},"spec":{"ports":[{"name":"-x-","port":1}]}}"#,
            ));
            // A name over 63 characters: not stored, nothing to remove.
            conn.event(&event(
                "ADDED",
                &format!(r#"{{"metadata":{{"name":"{watch_long}","namespace":"ns","resourceVersion":"12"}}}}"#),
            ));
            conn.event(&event("ADDED", &svc("c", 13)));
            conn.hold();
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let watchers = Watchers::start(config(vec![api.url.clone()]), tx);
        assert_eq!(
            take(&rx, 6),
            [
                "ListStart services",
                "Upsert ns/a",
                "Upsert ns/b",
                "ListDone services",
                "Delete ns/a",
                "Upsert ns/c"
            ]
        );
        let rejected = watchers.stats().snapshot().rejected;
        assert_eq!(
            rejected,
            [
                (Resource::Services, "invalid_name", 2),
                (Resource::Services, "invalid_value", 1)
            ]
        );
        watchers.stop();
    }

    #[test]
    fn watch_error_other_than_410_rewatches_without_relisting() {
        let watches = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&watches);
        let api = FakeApi::start(move |req, mut conn| {
            if !req.is_watch() {
                return conn.json(200, &list_page(&[], 10, ""));
            }
            conn.stream();
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                conn.event(&bookmark(11));
                conn.event(r#"{"type":"ERROR","object":{"kind":"Status","code":500,"reason":"InternalError","message":"boom"}}"#);
                conn.end();
            } else {
                conn.hold();
            }
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let watchers = Watchers::start(config(vec![api.url.clone()]), tx);
        let requests = api.wait_requests(3);
        assert_eq!(
            (requests[2].is_watch(), requests[2].param("resourceVersion")),
            (true, Some("11"))
        );
        assert_eq!(
            take(&rx, 3),
            ["ListStart services", "ListDone services", "Health services false"]
        );
        quiet(&rx, Duration::from_millis(100));
        watchers.stop();
    }
}
