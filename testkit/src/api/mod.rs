//! The fake Kubernetes API: plain HTTP/1.1 on 127.0.0.1, std only (a listener thread
//! and one thread per connection), speaking the wire protocol the real API server speaks
//! for what a DNS server reads:
//!
//! * LIST `GET /api/v1/namespaces`, `/api/v1/services`, `/api/v1/pods`,
//!   `/apis/discovery.k8s.io/v1/endpointslices` (and the namespaced forms
//!   `/api/v1/namespaces/NS/services`, ...), with `limit` and `continue` (a consistent
//!   snapshot per list; an unknown or expired token is HTTP 410 `Expired`),
//!   `labelSelector` and `fieldSelector` (see [`selector`]). Items come in key order
//!   (namespace, name), as etcd keeps them.
//! * WATCH (the same paths with `watch=1|true`): from `resourceVersion`, a `200` with
//!   `Transfer-Encoding: chunked` and one JSON event per line: first the retained
//!   history after that version, then live changes; `BOOKMARK`s every
//!   [`Config::bookmark_interval`] when `allowWatchBookmarks=true`; the stream ends after
//!   `timeoutSeconds` (capped by [`Config::max_watch`]); a version older than the
//!   retained history gets an `ERROR` event with a 410 `Expired` Status (or an HTTP 410,
//!   see [`ExpiredAs`]). Objects leaving or entering a selector become `DELETED` /
//!   `ADDED` events, as the real server sends them.
//! * One global, monotonically increasing resourceVersion over every resource (etcd's).
//!
//! Tests and benches drive it through [`FakeApi`] methods (no HTTP control plane): add,
//! modify and delete objects (as JSON values, or pre-rendered text for bulk worlds of
//! 100,000 services); close, reset or expire live watches; compact the history; inject
//! faults ([`Fault`]: errors, stalls, delays), abusive behaviours ([`Abuse`]: huge lines,
//! endless streams, malformed JSON, silence) and hand-written watch streams
//! ([`FakeApi::inject_next_watch`]); and read what the client asked (every request, when
//! each list completed and each watch started, when an event was written).
//! Dropping the handle stops the listener, closes every connection and joins every thread.
//!
//! Objects are kept as JSON text (with their resourceVersion written in), so a list page
//! or a watch event is a concatenation; they are parsed only for a selector or a
//! [`FakeApi::get`].

mod abuse;
mod selector;
mod serve;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use abuse::{Abuse, Inject, chunk};
use selector::Selector;

// ------------------------------------------------------------------------------------
// Resources

/// The resources the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Namespaces,
    Services,
    EndpointSlices,
    Pods,
}

impl Resource {
    pub const ALL: [Resource; 4] = [
        Resource::Namespaces,
        Resource::Services,
        Resource::EndpointSlices,
        Resource::Pods,
    ];

    /// The cluster-wide collection path.
    pub fn path(self) -> &'static str {
        match self {
            Resource::Namespaces => "/api/v1/namespaces",
            Resource::Services => "/api/v1/services",
            Resource::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
            Resource::Pods => "/api/v1/pods",
        }
    }

    /// The plural name (the last path segment).
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Namespaces => "namespaces",
            Resource::Services => "services",
            Resource::EndpointSlices => "endpointslices",
            Resource::Pods => "pods",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Resource::Namespaces => "Namespace",
            Resource::Services => "Service",
            Resource::EndpointSlices => "EndpointSlice",
            Resource::Pods => "Pod",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Resource::EndpointSlices => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    pub fn namespaced(self) -> bool {
        self != Resource::Namespaces
    }

    /// From a kind (`Service`), a plural (`services`) or a short name (`svc`).
    pub fn from_kind(kind: &str) -> Resource {
        match kind.to_ascii_lowercase().as_str() {
            "namespace" | "namespaces" | "ns" => Resource::Namespaces,
            "service" | "services" | "svc" => Resource::Services,
            "endpointslice" | "endpointslices" | "slice" | "slices" => Resource::EndpointSlices,
            "pod" | "pods" => Resource::Pods,
            other => panic!("fakeapi: unknown kind {other:?}"),
        }
    }
}

// ------------------------------------------------------------------------------------
// Configuration, faults

/// How the API misbehaves, for every request that arrives while it is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    None,
    /// HTTP 503 with a Status body to every request.
    Unavailable,
    /// HTTP 500 with a Status body to every request.
    Status500,
    /// Accept and read requests but never answer (TCP stays open); live watch streams go
    /// silent too (no events, no bookmarks). Clearing the fault answers the held requests
    /// and lets the streams go on.
    Stall,
    /// Delay every response (list bodies, watch response heads) by this much.
    Slow(Duration),
    /// HTTP 403 for this resource only.
    Forbidden(Resource),
}

/// How a watch from a resourceVersion older than the retained history is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiredAs {
    /// `200`, then one `ERROR` event carrying a 410 `Expired` Status, then the end.
    ErrorEvent,
    /// An HTTP 410 with the Status as body.
    Http410,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Period of BOOKMARK events on streams that allow them.
    pub bookmark_interval: Duration,
    /// Cap on a watch's duration (`timeoutSeconds` above it is cut to this); also the
    /// duration of a watch that names no timeout.
    pub max_watch: Duration,
    pub expired_as: ExpiredAs,
    /// Keep at most this many events of history (older ones are compacted away).
    pub history_limit: Option<usize>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            bookmark_interval: Duration::from_secs(1),
            max_watch: Duration::from_secs(60),
            expired_as: ExpiredAs::ErrorEvent,
            history_limit: None,
        }
    }
}

impl Config {
    /// For benches: bookmarks every 15 s (well within a client's idle timeout) and
    /// watches that last until the client or the bench ends them.
    pub fn long_watches() -> Config {
        Config {
            bookmark_interval: Duration::from_secs(15),
            max_watch: Duration::from_secs(3600),
            ..Config::default()
        }
    }
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    pub resource: Option<Resource>,
    pub path: String,
    /// The raw query string (still percent-encoded).
    pub query: String,
    pub watch: bool,
    /// A list page that continues an earlier one.
    pub continued: bool,
    /// The HTTP status sent (0 while unanswered).
    pub status: u16,
    pub at: Instant,
    /// When its response was written whole (a watch: its head).
    pub answered: Option<Instant>,
    /// A list page that was the last of its list.
    pub last_page: bool,
}

impl RequestRecord {
    /// A decoded query parameter.
    pub fn param(&self, key: &str) -> Option<String> {
        param(&self.query, key)
    }
}

/// A decoded query parameter of a raw query string.
pub fn param(query: &str, key: &str) -> Option<String> {
    serve::parse_query(query)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// An object already rendered as the API sends it (for bulk worlds): its identity, its
/// resourceVersion, and its JSON text (with that resourceVersion in it).
#[derive(Clone, Debug)]
pub struct RawObject {
    pub resource: Resource,
    /// Empty for namespaces.
    pub namespace: String,
    pub name: String,
    pub rv: u64,
    pub json: String,
}

impl RawObject {
    /// A JSON object as it is (its resourceVersion, 0 if it has none, is kept).
    pub fn from_value(obj: &Value) -> RawObject {
        let (resource, namespace, name) = key_of(obj);
        RawObject {
            resource,
            namespace,
            name,
            rv: rv_of(obj).unwrap_or(0),
            json: obj.to_string(),
        }
    }
}

// ------------------------------------------------------------------------------------
// State

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Close {
    /// End the chunked stream properly (terminating chunk), as at timeoutSeconds.
    Clean,
    /// Cut the TCP connection mid-stream.
    Reset,
    /// Send an ERROR event with a 410 Status, then end the stream.
    Expire,
}

struct Event {
    rv: u64,
    resource: Resource,
    namespace: String,
    kind: &'static str,
    old: Option<Arc<str>>,
    new: Arc<str>,
}

/// A live watch stream (or, unregistered, the filter of a list).
struct Watcher {
    resource: Resource,
    namespace: Option<String>,
    labels: Selector,
    fields: Selector,
    /// Event lines waiting to be written, with the resourceVersion they carry.
    queue: VecDeque<(u64, String)>,
    close: Option<Close>,
}

impl Watcher {
    fn matches(&self, namespace: &str, text: &str) -> bool {
        if self.namespace.as_deref().is_some_and(|ns| ns != namespace) {
            return false;
        }
        if self.labels.is_empty() && self.fields.is_empty() {
            return true;
        }
        let obj: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        self.labels.matches_labels(&obj) && self.fields.matches_fields(&obj)
    }

    /// The event this watcher sees for a change, after its selectors.
    fn view(&self, ev: &Event) -> Option<String> {
        let now = self.matches(&ev.namespace, &ev.new);
        let was = ev.old.as_ref().map(|o| self.matches(&ev.namespace, o));
        let kind = match (ev.kind, was, now) {
            ("ADDED", _, true) => "ADDED",
            ("MODIFIED", Some(true), true) => "MODIFIED",
            ("MODIFIED", Some(true), false) => "DELETED",
            ("MODIFIED", _, true) => "ADDED",
            ("DELETED", _, true) => "DELETED",
            _ => return None,
        };
        Some(event_line(kind, &ev.new))
    }
}

fn event_line(kind: &str, object: &str) -> String {
    format!(r#"{{"type":"{kind}","object":{object}}}"#)
}

/// A list in progress: the snapshot it was started on.
struct Page {
    resource: Resource,
    items: Vec<Arc<str>>,
    next: usize,
    rv: u64,
}

type Key = (Resource, String, String);

/// How many event writes [`FakeApi::written`] remembers.
const WRITTEN_KEPT: usize = 1 << 16;

struct State {
    config: Config,
    objects: BTreeMap<Key, Arc<str>>,
    rv: u64,
    history: VecDeque<Event>,
    /// Watches may start from this version or later; older ones are expired.
    floor: u64,
    fault: Fault,
    /// The abusive behaviour in force, its generation (each change is a new one) and
    /// the resourceVersion its responses carry.
    abuse: (Abuse, u64, u64),
    /// A watch stream to hand out instead of the next watch of a resource.
    inject: Option<(Resource, Inject)>,
    watchers: HashMap<u64, Watcher>,
    next_id: u64,
    pages: HashMap<String, Page>,
    requests: Vec<RequestRecord>,
    lists_ok: HashMap<Resource, usize>,
    watches_ok: HashMap<Resource, usize>,
    last_bookmark: HashMap<Resource, u64>,
    bookmark_gen: u64,
    /// When event lines were written on a stream: (resource, resourceVersion, time).
    written: VecDeque<(Resource, u64, Instant)>,
    conns: HashMap<u64, TcpStream>,
    threads: Vec<JoinHandle<()>>,
    stopped: bool,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    /// Abusive responses started, bytes of them written, objects sent by endless lists.
    abusive: AtomicU64,
    abuse_bytes: AtomicU64,
    abuse_items: AtomicU64,
    injected: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait<'a>(&self, st: MutexGuard<'a, State>, timeout: Duration) -> MutexGuard<'a, State> {
        self.cond.wait_timeout(st, timeout).unwrap_or_else(|p| p.into_inner()).0
    }
}

fn key_of(obj: &Value) -> Key {
    let r = Resource::from_kind(obj["kind"].as_str().expect("object has a kind"));
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .expect("object has a name");
    let ns = if r.namespaced() {
        obj.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
    } else {
        ""
    };
    (r, ns.to_string(), name.to_string())
}

fn rv_of(obj: &Value) -> Option<u64> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u64>().ok())
}

fn set_rv(obj: &mut Value, rv: u64) {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
}

impl State {
    fn new(config: Config) -> State {
        State {
            config,
            objects: BTreeMap::new(),
            rv: 1000,
            history: VecDeque::new(),
            floor: 0,
            fault: Fault::None,
            abuse: (Abuse::None, 0, 0),
            inject: None,
            watchers: HashMap::new(),
            next_id: 1,
            pages: HashMap::new(),
            requests: Vec::new(),
            lists_ok: HashMap::new(),
            watches_ok: HashMap::new(),
            last_bookmark: HashMap::new(),
            bookmark_gen: 0,
            written: VecDeque::new(),
            conns: HashMap::new(),
            threads: Vec::new(),
            stopped: false,
        }
    }

    /// Objects of `resource`, in key order.
    fn of(&self, resource: Resource) -> impl Iterator<Item = (&Key, &Arc<str>)> {
        self.objects
            .range((resource, String::new(), String::new())..)
            .take_while(move |(k, _)| k.0 == resource)
    }

    fn compact(&mut self) {
        self.rv += 1;
        self.floor = self.rv;
        self.history.clear();
        self.pages.clear();
    }

    fn record(&mut self, ev: Event) {
        // A stream being closed gets nothing more.
        for w in self.watchers.values_mut() {
            if w.resource == ev.resource && w.close.is_none() {
                if let Some(line) = w.view(&ev) {
                    w.queue.push_back((ev.rv, line));
                }
            }
        }
        self.history.push_back(ev);
        if let Some(limit) = self.config.history_limit {
            while self.history.len() > limit {
                let old = self.history.pop_front().unwrap();
                self.floor = self.floor.max(old.rv);
            }
        }
    }

    /// Stores an object under `key` (rendered by `render` with its new version) and
    /// records the event.
    fn change(&mut self, kind: &'static str, key: Key, render: impl FnOnce(u64) -> String) -> u64 {
        let old = self.objects.get(&key).cloned();
        match (kind, &old) {
            ("ADDED", Some(_)) => panic!("fakeapi: {key:?} already exists"),
            ("MODIFIED", None) => panic!("fakeapi: {key:?} does not exist"),
            _ => {}
        }
        self.rv += 1;
        let rv = self.rv;
        let text: Arc<str> = render(rv).into();
        self.objects.insert(key.clone(), text.clone());
        self.record(Event {
            rv,
            resource: key.0,
            namespace: key.1,
            kind,
            old,
            new: text,
        });
        rv
    }

    fn change_value(&mut self, kind: &'static str, mut obj: Value) -> u64 {
        let key = key_of(&obj);
        if key.0.namespaced() && obj.pointer("/metadata/namespace").is_none() {
            obj["metadata"]["namespace"] = Value::String(key.1.clone());
        }
        self.change(kind, key, |rv| {
            set_rv(&mut obj, rv);
            obj.to_string()
        })
    }

    fn delete(&mut self, key: Key) -> u64 {
        let old = self
            .objects
            .remove(&key)
            .unwrap_or_else(|| panic!("fakeapi: delete of missing {key:?}"));
        self.rv += 1;
        let rv = self.rv;
        let mut obj: Value = serde_json::from_str(&old).expect("stored objects are JSON");
        set_rv(&mut obj, rv);
        self.record(Event {
            rv,
            resource: key.0,
            namespace: key.1,
            kind: "DELETED",
            old: None,
            new: obj.to_string().into(),
        });
        rv
    }

    /// Puts objects in place as they are (no events); the version moves past theirs.
    fn load(&mut self, objects: Vec<RawObject>) {
        for o in objects {
            self.rv = self.rv.max(o.rv);
            let ns = if o.resource.namespaced() {
                o.namespace
            } else {
                String::new()
            };
            self.objects.insert((o.resource, ns, o.name), o.json.into());
        }
    }
}

// ------------------------------------------------------------------------------------
// The handle

/// A running fake API server. Stops (and joins all its threads) on drop.
pub struct FakeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl FakeApi {
    /// An empty API with the default configuration.
    pub fn start() -> FakeApi {
        FakeApi::with_config(Config::default(), Vec::new())
    }

    /// An API serving these objects (their resourceVersions are kept when they have one).
    pub fn with_objects(objects: Vec<Value>) -> FakeApi {
        FakeApi::with_config(Config::default(), objects)
    }

    pub fn with_config(config: Config, objects: Vec<Value>) -> FakeApi {
        let mut state = State::new(config);
        let mut pending = Vec::new();
        for obj in objects {
            match rv_of(&obj) {
                Some(_) => state.load(vec![RawObject::from_value(&obj)]),
                None => pending.push(obj),
            }
        }
        for mut obj in pending {
            state.rv += 1;
            set_rv(&mut obj, state.rv);
            state.load(vec![RawObject::from_value(&obj)]);
        }
        FakeApi::serve(state)
    }

    /// An API serving objects already rendered (a bench's world of 100,000 services):
    /// nothing is parsed; the global version starts past every object's.
    pub fn bulk(config: Config, objects: Vec<RawObject>) -> FakeApi {
        let mut state = State::new(config);
        state.rv = 1;
        state.load(objects);
        FakeApi::serve(state)
    }

    fn serve(mut state: State) -> FakeApi {
        state.floor = state.rv;
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            cond: Condvar::new(),
            abusive: AtomicU64::new(0),
            abuse_bytes: AtomicU64::new(0),
            abuse_items: AtomicU64::new(0),
            injected: AtomicBool::new(false),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("fakeapi: bind");
        let addr = listener.local_addr().unwrap();
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name("fakeapi-accept".into())
            .spawn(move || serve::accept_loop(sh, listener))
            .unwrap();
        FakeApi {
            shared,
            addr,
            accept: Some(accept),
        }
    }

    /// An API serving a conformance world (`tests/data/kubernetes/worlds/NAME.json`):
    /// arrays `namespaces`, `services`, `endpointslices`, `pods`, and
    /// `"api_behavior": "unavailable"` for an API that answers 503 to everything.
    pub fn from_world(world: &Value, config: Config) -> FakeApi {
        let mut objects = Vec::new();
        for (field, kind, api) in [
            ("namespaces", "Namespace", "v1"),
            ("services", "Service", "v1"),
            ("endpointslices", "EndpointSlice", "discovery.k8s.io/v1"),
            ("pods", "Pod", "v1"),
        ] {
            for obj in world[field].as_array().into_iter().flatten() {
                let mut obj = obj.clone();
                if obj.get("kind").is_none() {
                    obj["kind"] = json!(kind);
                }
                if obj.get("apiVersion").is_none() {
                    obj["apiVersion"] = json!(api);
                }
                objects.push(obj);
            }
        }
        let api = FakeApi::with_config(config, objects);
        match world["api_behavior"].as_str() {
            None | Some("normal") => {}
            Some("unavailable") => api.set_fault(Fault::Unavailable),
            Some(other) => panic!("fakeapi: unknown api_behavior {other:?}"),
        }
        api
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn mutate<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = self.shared.lock();
        let out = f(&mut st);
        drop(st);
        self.shared.cond.notify_all();
        out
    }

    // --------------------------------------------------------------------------------
    // Objects

    /// Creates an object (its kind and metadata say what and where); returns its new
    /// resourceVersion.
    pub fn add(&self, obj: Value) -> u64 {
        self.mutate(|st| st.change_value("ADDED", obj))
    }

    /// Replaces an existing object.
    pub fn modify(&self, obj: Value) -> u64 {
        self.mutate(|st| st.change_value("MODIFIED", obj))
    }

    /// Creates (`added`) or replaces an object given as text: `render` writes it with
    /// the resourceVersion it gets. Returns that version.
    pub fn put_rendered(
        &self,
        added: bool,
        resource: Resource,
        ns: &str,
        name: &str,
        render: impl FnOnce(u64) -> String,
    ) -> u64 {
        let ns = if resource.namespaced() { ns } else { "" };
        let key = (resource, ns.to_string(), name.to_string());
        let kind = if added { "ADDED" } else { "MODIFIED" };
        self.mutate(|st| st.change(kind, key, render))
    }

    /// Changes an existing object in place.
    pub fn update(&self, kind: &str, ns: &str, name: &str, f: impl FnOnce(&mut Value)) -> u64 {
        let mut obj = self
            .get(kind, ns, name)
            .unwrap_or_else(|| panic!("fakeapi: no {kind} {ns}/{name}"));
        f(&mut obj);
        self.modify(obj)
    }

    /// Deletes an object (`ns` is ignored for Namespaces).
    pub fn delete(&self, kind: &str, ns: &str, name: &str) -> u64 {
        let r = Resource::from_kind(kind);
        let ns = if r.namespaced() { ns } else { "" };
        self.mutate(|st| st.delete((r, ns.to_string(), name.to_string())))
    }

    pub fn get(&self, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let r = Resource::from_kind(kind);
        let ns = if r.namespaced() { ns } else { "" };
        let text = self
            .shared
            .lock()
            .objects
            .get(&(r, ns.to_string(), name.to_string()))
            .cloned()?;
        Some(serde_json::from_str(&text).expect("stored objects are JSON"))
    }

    /// Replaces every object at once, without events (what a watch from before would
    /// not see: pair it with [`expire_watches`](Self::expire_watches)); the version moves
    /// past the new objects'.
    pub fn replace_all(&self, objects: Vec<RawObject>) {
        self.mutate(|st| {
            st.objects.clear();
            st.load(objects);
        });
    }

    /// The current (global) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.shared.lock().rv
    }

    // --------------------------------------------------------------------------------
    // Streams

    /// Ends every live watch stream properly (terminating chunk), as a server-side
    /// timeout does.
    pub fn close_watches(&self) {
        self.mutate(|st| st.watchers.values_mut().for_each(|w| w.close = Some(Close::Clean)));
    }

    /// Cuts every live watch connection mid-stream (no terminating chunk).
    pub fn reset_watches(&self) {
        self.mutate(|st| st.watchers.values_mut().for_each(|w| w.close = Some(Close::Reset)));
    }

    /// Compacts the history and ends every live watch with an `ERROR` 410 event: the
    /// client must list again. Returns when that was decided.
    pub fn expire_watches(&self) -> Instant {
        self.mutate(|st| {
            st.compact();
            st.watchers.values_mut().for_each(|w| w.close = Some(Close::Expire));
        });
        Instant::now()
    }

    /// Forgets the event history (and every list continue token) and moves the global
    /// version on by one (as a restarted watch cache would): a watch from any version a
    /// client already knows is refused as expired; a new list gets a version that can
    /// be watched from.
    pub fn compact(&self) {
        self.mutate(State::compact);
    }

    /// [`compact`](Self::compact) and [`close_watches`](Self::close_watches) in one step,
    /// so that no live stream can carry the new version (in a bookmark) in between.
    pub fn compact_and_close(&self) {
        self.mutate(|st| {
            st.compact();
            st.watchers.values_mut().for_each(|w| w.close = Some(Close::Clean));
        });
    }

    /// Expires every outstanding list continue token.
    pub fn expire_continue_tokens(&self) {
        self.mutate(|st| st.pages.clear());
    }

    /// Sends a BOOKMARK now on every live stream that allows them.
    pub fn send_bookmarks(&self) {
        self.mutate(|st| st.bookmark_gen += 1);
    }

    /// When the event that carries `rv` was written on a live stream of `resource`
    /// (the time right after the write), waiting up to `timeout` for it.
    pub fn written(&self, resource: Resource, rv: u64, timeout: Duration) -> Option<Instant> {
        let end = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if let Some(&(_, _, at)) = st.written.iter().rev().find(|w| w.0 == resource && w.1 == rv) {
                return Some(at);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() || st.stopped {
                return None;
            }
            st = self.shared.wait(st, left);
        }
    }

    // --------------------------------------------------------------------------------
    // Misbehaviour

    pub fn set_fault(&self, fault: Fault) {
        self.mutate(|st| st.fault = fault);
    }

    pub fn fault(&self) -> Fault {
        self.shared.lock().fault
    }

    /// Switches to an abusive behaviour ([`Abuse::None`]: back to the protocol) and cuts
    /// every open connection, so that the client's next requests meet the new one.
    /// Abusive responses carry the current resourceVersion (resuming from it is sound).
    pub fn abuse(&self, abuse: Abuse) {
        let conns: Vec<TcpStream> = self.mutate(|st| {
            st.abuse = (abuse, st.abuse.1 + 1, st.rv);
            st.watchers.values_mut().for_each(|w| w.close = Some(Close::Reset));
            st.conns.values().filter_map(|c| c.try_clone().ok()).collect()
        });
        for c in conns {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// (abusive responses started, bytes of them written, objects endless lists sent).
    pub fn abuse_counts(&self) -> (u64, u64, u64) {
        let s = &self.shared;
        (
            s.abusive.load(Ordering::Relaxed),
            s.abuse_bytes.load(Ordering::Relaxed),
            s.abuse_items.load(Ordering::Relaxed),
        )
    }

    /// The next watch of `resource` gets a `200` chunked stream whose chunks `inject`
    /// writes (see [`chunk`]), then the end of the stream; other requests are
    /// served as usual.
    pub fn inject_next_watch(&self, resource: Resource, inject: Inject) {
        self.mutate(|st| st.inject = Some((resource, inject)));
    }

    /// Whether an injected stream was handed out.
    pub fn injected(&self) -> bool {
        self.shared.injected.load(Ordering::Acquire)
    }

    pub fn set_expired_as(&self, how: ExpiredAs) {
        self.mutate(|st| st.config.expired_as = how);
    }

    pub fn set_bookmark_interval(&self, d: Duration) {
        self.mutate(|st| st.config.bookmark_interval = d);
    }

    pub fn set_max_watch(&self, d: Duration) {
        self.mutate(|st| st.config.max_watch = d);
    }

    // --------------------------------------------------------------------------------
    // What the client asked

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    fn count(&self, f: impl Fn(&RequestRecord) -> bool) -> usize {
        self.shared.lock().requests.iter().filter(|r| f(r)).count()
    }

    fn times(&self, f: impl Fn(&RequestRecord) -> Option<Instant>) -> Vec<Instant> {
        self.shared.lock().requests.iter().filter_map(f).collect()
    }

    /// Lists of `r` that were answered 200 (a paginated list counts once).
    pub fn lists(&self, r: Resource) -> usize {
        self.shared.lock().lists_ok.get(&r).copied().unwrap_or(0)
    }

    /// List requests of `r` that start a list (no `continue`), whatever their outcome.
    pub fn list_attempts(&self, r: Resource) -> usize {
        self.count(|q| q.resource == Some(r) && !q.watch && !q.continued)
    }

    /// When each list of `r` was asked for (its first page), first first.
    pub fn lists_started(&self, r: Resource) -> Vec<Instant> {
        self.times(|q| (q.resource == Some(r) && !q.watch && !q.continued).then_some(q.at))
    }

    /// When each list of `r` sent its last page, whole (first first).
    pub fn lists_completed(&self, r: Resource) -> Vec<Instant> {
        self.times(|q| {
            (q.resource == Some(r) && !q.watch && q.status == 200 && q.last_page)
                .then_some(q.answered)
                .flatten()
        })
    }

    /// Watches of `r` that were answered 200 with a stream (expired ones included).
    pub fn watches(&self, r: Resource) -> usize {
        self.shared.lock().watches_ok.get(&r).copied().unwrap_or(0)
    }

    /// When each watch of `r` that got a stream was asked for.
    pub fn watches_started(&self, r: Resource) -> Vec<Instant> {
        self.times(|q| (q.resource == Some(r) && q.watch && q.status == 200).then_some(q.at))
    }

    /// Watch requests of `r`, whatever their outcome.
    pub fn watch_attempts(&self, r: Resource) -> usize {
        self.count(|q| q.resource == Some(r) && q.watch)
    }

    /// Watch streams of `r` open right now.
    pub fn live_watches(&self, r: Resource) -> usize {
        self.shared.lock().watchers.values().filter(|w| w.resource == r).count()
    }

    /// The raw query strings of every request for `r`, in order.
    pub fn queries(&self, r: Resource) -> Vec<String> {
        let st = self.shared.lock();
        st.requests
            .iter()
            .filter(|q| q.resource == Some(r))
            .map(|q| q.query.clone())
            .collect()
    }

    pub fn last_query(&self, r: Resource) -> Option<String> {
        self.queries(r).pop()
    }

    pub fn last_list_query(&self, r: Resource) -> Option<String> {
        let st = self.shared.lock();
        st.requests
            .iter()
            .rev()
            .find(|q| q.resource == Some(r) && !q.watch)
            .map(|q| q.query.clone())
    }

    pub fn last_watch_query(&self, r: Resource) -> Option<String> {
        let st = self.shared.lock();
        st.requests
            .iter()
            .rev()
            .find(|q| q.resource == Some(r) && q.watch)
            .map(|q| q.query.clone())
    }

    /// The resourceVersion of the last BOOKMARK sent on a stream of `r`.
    pub fn last_bookmark(&self, r: Resource) -> Option<u64> {
        self.shared.lock().last_bookmark.get(&r).copied()
    }

    /// One line per request: `GET path?query -> status` (for failure messages).
    pub fn request_log(&self) -> String {
        let st = self.shared.lock();
        let t0 = st.requests.first().map(|r| r.at);
        let mut out = String::new();
        for r in &st.requests {
            let ms = t0.map(|t| r.at.duration_since(t).as_millis()).unwrap_or(0);
            let _ = writeln!(out, "+{ms}ms GET {}?{} -> {}", r.path, r.query, r.status);
        }
        out
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.cond.notify_all();
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let (conns, threads) = {
            let mut st = self.shared.lock();
            (std::mem::take(&mut st.conns), std::mem::take(&mut st.threads))
        };
        for s in conns.values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.shared.cond.notify_all();
        for t in threads {
            let _ = t.join();
        }
    }
}
