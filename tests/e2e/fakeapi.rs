//! A fake Kubernetes API server for the end-to-end tests: plain HTTP/1.1 on 127.0.0.1,
//! std only (a listener thread and one thread per connection), speaking the wire
//! protocol the real API server speaks for what a DNS server reads:
//!
//! * LIST `GET /api/v1/namespaces`, `/api/v1/services`, `/api/v1/pods`,
//!   `/apis/discovery.k8s.io/v1/endpointslices` (and the namespaced forms
//!   `/api/v1/namespaces/NS/services`, ...), with `limit` and `continue` (a consistent
//!   snapshot per list; an unknown or expired token is HTTP 410 `Expired`),
//!   `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`,
//!   comma = AND) and `fieldSelector` (`path=v`, `path!=v` on dotted object paths).
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
//! Tests drive it through [`FakeApi`] methods (no HTTP control plane): add / modify /
//! delete objects, close or reset live watches, compact the history, inject faults, and
//! read what the client asked (request counters and query strings per resource).
//! Dropping the handle stops the listener, closes every connection and joins every thread.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

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
}

impl RequestRecord {
    /// A decoded query parameter.
    pub fn param(&self, key: &str) -> Option<String> {
        param(&self.query, key)
    }
}

/// A decoded query parameter of a raw query string.
pub fn param(query: &str, key: &str) -> Option<String> {
    parse_query(query).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

// ------------------------------------------------------------------------------------
// Selectors

#[derive(Clone, Debug)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Debug, Default)]
struct Selector(Vec<Req>);

impl Selector {
    fn parse(text: &str) -> Result<Selector, String> {
        let mut terms = Vec::new();
        let (mut depth, mut start) = (0i32, 0usize);
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    terms.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        terms.push(&text[start..]);
        let mut reqs = Vec::new();
        for term in terms {
            let t = term.trim();
            if t.is_empty() {
                continue;
            }
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let rest = rest.trim();
                let inner = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("bad set in {t:?}"))?;
                Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            let req = if let Some(k) = t.strip_prefix('!') {
                Req::NotExists(k.trim().to_string())
            } else if let Some((k, rest)) = t.split_once(" notin ") {
                Req::NotIn(k.trim().to_string(), set(rest)?)
            } else if let Some((k, rest)) = t.split_once(" in ") {
                Req::In(k.trim().to_string(), set(rest)?)
            } else if let Some((k, v)) = t.split_once("!=") {
                Req::Ne(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = t.split_once("==") {
                Req::Eq(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = t.split_once('=') {
                Req::Eq(k.trim().to_string(), v.trim().to_string())
            } else if t.contains(' ') || t.contains('(') {
                return Err(format!("unable to parse requirement {t:?}"));
            } else {
                Req::Exists(t.to_string())
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k).as_deref() == Some(v.as_str()),
            Req::Ne(k, v) => get(k).as_deref() != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }

    fn matches_labels(&self, obj: &Value) -> bool {
        self.matches(|k| obj.pointer("/metadata/labels").and_then(|l| l.get(k)).map(value_text))
    }

    fn matches_fields(&self, obj: &Value) -> bool {
        // A missing field compares as the empty string, as the API server does.
        self.matches(|path| {
            let mut cur = obj;
            for seg in path.split('.') {
                match cur.get(seg) {
                    Some(v) => cur = v,
                    None => return Some(String::new()),
                }
            }
            Some(value_text(cur))
        })
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
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
    kind: &'static str,
    old: Option<Value>,
    new: Value,
}

struct Watcher {
    resource: Resource,
    namespace: Option<String>,
    labels: Selector,
    fields: Selector,
    queue: VecDeque<String>,
    close: Option<Close>,
}

impl Watcher {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if obj.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns) {
                return false;
            }
        }
        self.labels.matches_labels(obj) && self.fields.matches_fields(obj)
    }

    /// The event this watcher sees for a change, after its selectors.
    fn view(&self, ev: &Event) -> Option<String> {
        let now = self.matches(&ev.new);
        let was = ev.old.as_ref().map(|o| self.matches(o));
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

fn event_line(kind: &str, obj: &Value) -> String {
    json!({"type": kind, "object": obj}).to_string()
}

struct Page {
    resource: Resource,
    items: Vec<Value>,
    next: usize,
    rv: u64,
}

type Key = (Resource, String, String);

struct State {
    config: Config,
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Event>,
    /// Watches may start from this version or later; older ones are expired.
    floor: u64,
    fault: Fault,
    watchers: HashMap<u64, Watcher>,
    next_id: u64,
    pages: HashMap<String, Page>,
    requests: Vec<RequestRecord>,
    lists_ok: HashMap<Resource, usize>,
    watches_ok: HashMap<Resource, usize>,
    last_bookmark: HashMap<Resource, u64>,
    bookmark_gen: u64,
    conns: HashMap<u64, TcpStream>,
    threads: Vec<JoinHandle<()>>,
    stopped: bool,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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

fn set_rv(obj: &mut Value, rv: u64) {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["resourceVersion"] = Value::String(rv.to_string());
}

impl State {
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
                    w.queue.push_back(line);
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

    fn change(&mut self, kind: &'static str, mut obj: Value) -> u64 {
        let key = key_of(&obj);
        let old = self.objects.get(&key).cloned();
        match (kind, &old) {
            ("ADDED", Some(_)) => panic!("fakeapi: {key:?} already exists"),
            ("MODIFIED", None) => panic!("fakeapi: {key:?} does not exist"),
            _ => {}
        }
        if key.0.namespaced() && obj.pointer("/metadata/namespace").is_none() {
            obj["metadata"]["namespace"] = Value::String(key.1.clone());
        }
        self.rv += 1;
        let rv = self.rv;
        set_rv(&mut obj, rv);
        self.objects.insert(key.clone(), obj.clone());
        self.record(Event {
            rv,
            resource: key.0,
            kind,
            old,
            new: obj,
        });
        rv
    }

    fn delete(&mut self, key: Key) -> u64 {
        let mut obj = self
            .objects
            .remove(&key)
            .unwrap_or_else(|| panic!("fakeapi: delete of missing {key:?}"));
        self.rv += 1;
        let rv = self.rv;
        set_rv(&mut obj, rv);
        self.record(Event {
            rv,
            resource: key.0,
            kind: "DELETED",
            old: None,
            new: obj,
        });
        rv
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
        let mut state = State {
            config,
            objects: BTreeMap::new(),
            rv: 1000,
            history: VecDeque::new(),
            floor: 0,
            fault: Fault::None,
            watchers: HashMap::new(),
            next_id: 1,
            pages: HashMap::new(),
            requests: Vec::new(),
            lists_ok: HashMap::new(),
            watches_ok: HashMap::new(),
            last_bookmark: HashMap::new(),
            bookmark_gen: 0,
            conns: HashMap::new(),
            threads: Vec::new(),
            stopped: false,
        };
        let mut pending = Vec::new();
        for obj in objects {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u64>().ok());
            match rv {
                Some(rv) => {
                    state.rv = state.rv.max(rv);
                    state.objects.insert(key_of(&obj), obj);
                }
                None => pending.push(obj),
            }
        }
        for mut obj in pending {
            state.rv += 1;
            set_rv(&mut obj, state.rv);
            state.objects.insert(key_of(&obj), obj);
        }
        state.floor = state.rv;
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            cond: Condvar::new(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("fakeapi: bind");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let sh = shared.clone();
        let accept = std::thread::Builder::new()
            .name("fakeapi-accept".into())
            .spawn(move || accept_loop(sh, listener))
            .unwrap();
        FakeApi {
            shared,
            addr,
            accept: Some(accept),
        }
    }

    /// An API serving a conformance world (`worlds.<name>` of kubernetes.json):
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

    /// Creates an object (its kind and metadata say what and where); returns its new
    /// resourceVersion.
    pub fn add(&self, obj: Value) -> u64 {
        self.mutate(|st| st.change("ADDED", obj))
    }

    /// Replaces an existing object.
    pub fn modify(&self, obj: Value) -> u64 {
        self.mutate(|st| st.change("MODIFIED", obj))
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
        self.shared
            .lock()
            .objects
            .get(&(r, ns.to_string(), name.to_string()))
            .cloned()
    }

    /// The current (global) resourceVersion.
    pub fn rv(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Ends every live watch stream properly (terminating chunk), as a server-side
    /// timeout does.
    pub fn close_watches(&self) {
        self.mutate(|st| st.watchers.values_mut().for_each(|w| w.close = Some(Close::Clean)));
    }

    /// Cuts every live watch connection mid-stream (no terminating chunk).
    pub fn reset_watches(&self) {
        self.mutate(|st| st.watchers.values_mut().for_each(|w| w.close = Some(Close::Reset)));
    }

    /// Compacts the history and ends every live watch with an `ERROR` 410 event.
    pub fn expire_watches(&self) {
        self.mutate(|st| {
            st.compact();
            st.watchers.values_mut().for_each(|w| w.close = Some(Close::Expire));
        });
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

    pub fn set_fault(&self, fault: Fault) {
        self.mutate(|st| st.fault = fault);
    }

    pub fn fault(&self) -> Fault {
        self.shared.lock().fault
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

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    fn count(&self, f: impl Fn(&RequestRecord) -> bool) -> usize {
        self.shared.lock().requests.iter().filter(|r| f(r)).count()
    }

    /// Lists of `r` that were answered 200 (a paginated list counts once).
    pub fn lists(&self, r: Resource) -> usize {
        self.shared.lock().lists_ok.get(&r).copied().unwrap_or(0)
    }

    /// List requests of `r` that start a list (no `continue`), whatever their outcome.
    pub fn list_attempts(&self, r: Resource) -> usize {
        self.count(|q| q.resource == Some(r) && !q.watch && !q.continued)
    }

    /// Watches of `r` that were answered 200 with a stream (expired ones included).
    pub fn watches(&self, r: Resource) -> usize {
        self.shared.lock().watches_ok.get(&r).copied().unwrap_or(0)
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

// ------------------------------------------------------------------------------------
// HTTP

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut next_conn = 0u64;
    loop {
        if shared.lock().stopped {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                next_conn += 1;
                let id = next_conn;
                let Ok(clone) = stream.try_clone() else { continue };
                let sh = shared.clone();
                let mut st = shared.lock();
                if st.stopped {
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
                st.conns.insert(id, clone);
                st.threads.retain(|t| !t.is_finished());
                let t = std::thread::Builder::new()
                    .name("fakeapi-conn".into())
                    .spawn(move || {
                        serve_connection(&sh, stream);
                        sh.lock().conns.remove(&id);
                    })
                    .unwrap();
                st.threads.push(t);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

struct HttpRequest {
    path: String,
    query: String,
    close: bool,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<HttpRequest> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let _method = parts.next()?;
    let target = parts.next()?.to_string();
    let version = parts.next().unwrap_or("HTTP/1.1").to_string();
    let mut close = version == "HTTP/1.0";
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = v.parse().unwrap_or(0);
            } else if k == "connection" {
                close = v.eq_ignore_ascii_case("close");
            }
        }
    }
    if length > 0 {
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).ok()?;
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    Some(HttpRequest { path, query, close })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// `(resource, namespace)` for a collection path.
fn route(path: &str) -> Option<(Resource, Option<String>)> {
    let path = path.trim_end_matches('/');
    for r in Resource::ALL {
        if path == r.path() {
            return Some((r, None));
        }
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", "v1", "namespaces", ns, plural] => {
            let r = [Resource::Services, Resource::Pods]
                .into_iter()
                .find(|r| r.plural() == *plural)?;
            Some((r, Some(ns.to_string())))
        }
        ["apis", "discovery.k8s.io", "v1", "namespaces", ns, "endpointslices"] => {
            Some((Resource::EndpointSlices, Some(ns.to_string())))
        }
        _ => None,
    }
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn expired_status() -> Value {
    status_object(410, "Expired", "too old resource version")
}

fn write_response(stream: &mut TcpStream, code: u16, body: &Value, close: bool) -> bool {
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\nContent-Length: {}\r\n{}\r\n",
        reason_phrase(code),
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    let mut all = head.into_bytes();
    all.extend_from_slice(body.as_bytes());
    stream.write_all(&all).is_ok() && !close
}

fn chunk(line: &str) -> Vec<u8> {
    let mut data = line.as_bytes().to_vec();
    data.push(b'\n');
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\r\n");
    out
}

fn serve_connection(shared: &Shared, stream: TcpStream) {
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut stream = stream;
    loop {
        if shared.lock().stopped {
            break;
        }
        let Some(req) = read_request(&mut reader) else { break };
        if !serve_request(shared, &mut stream, req) {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Answers one request; false when the connection must close.
fn serve_request(shared: &Shared, stream: &mut TcpStream, req: HttpRequest) -> bool {
    let routed = route(&req.path);
    let params = parse_query(&req.query);
    let get = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let watch = matches!(get("watch").as_deref(), Some("1") | Some("true"));
    let continued = get("continue").is_some_and(|c| !c.is_empty());
    let index = {
        let mut st = shared.lock();
        st.requests.push(RequestRecord {
            resource: routed.as_ref().map(|r| r.0),
            path: req.path.clone(),
            query: req.query.clone(),
            watch,
            continued,
            status: 0,
            at: Instant::now(),
        });
        st.requests.len() - 1
    };
    let set_status = |code: u16| shared.lock().requests[index].status = code;

    // Faults. A stall holds the request until the fault changes.
    let mut st = shared.lock();
    loop {
        if st.stopped {
            return false;
        }
        match st.fault {
            Fault::Stall => st = shared.cond.wait(st).unwrap_or_else(|p| p.into_inner()),
            Fault::Slow(d) => {
                let end = Instant::now() + d;
                while !st.stopped && Instant::now() < end {
                    let left = end.saturating_duration_since(Instant::now());
                    st = shared.cond.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
                }
                if st.stopped {
                    return false;
                }
                break;
            }
            _ => break,
        }
    }
    let error = match (st.fault, &routed) {
        (Fault::Unavailable, _) => Some((
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        )),
        (Fault::Status500, _) => Some((500, "InternalError", "Internal error occurred: fake fault")),
        (Fault::Forbidden(r), Some((rr, _))) if r == *rr => Some((
            403,
            "Forbidden",
            "forbidden: User \"system:serviceaccount:kube-system:coredns\" cannot list resource",
        )),
        (_, None) => Some((404, "NotFound", "the server could not find the requested resource")),
        _ => None,
    };
    drop(st);
    if let Some((code, reason, message)) = error {
        set_status(code);
        return write_response(stream, code, &status_object(code, reason, message), req.close);
    }
    let (resource, namespace) = routed.unwrap();
    let labels = match Selector::parse(&get("labelSelector").unwrap_or_default()) {
        Ok(s) => s,
        Err(e) => {
            set_status(400);
            return write_response(stream, 400, &status_object(400, "BadRequest", &e), req.close);
        }
    };
    let fields = match Selector::parse(&get("fieldSelector").unwrap_or_default()) {
        Ok(s) => s,
        Err(e) => {
            set_status(400);
            return write_response(stream, 400, &status_object(400, "BadRequest", &e), req.close);
        }
    };
    let filter = Watcher {
        resource,
        namespace,
        labels,
        fields,
        queue: VecDeque::new(),
        close: None,
    };
    if watch {
        let timeout = get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok());
        let from = get("resourceVersion").filter(|v| !v.is_empty() && v != "0");
        let bookmarks = get("allowWatchBookmarks").as_deref() == Some("true");
        serve_watch(shared, stream, index, filter, from, timeout, bookmarks);
        false
    } else {
        let limit = get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
        serve_list(shared, stream, index, filter, get("continue"), limit, req.close)
    }
}

fn serve_list(
    shared: &Shared,
    stream: &mut TcpStream,
    index: usize,
    filter: Watcher,
    cont: Option<String>,
    limit: usize,
    close: bool,
) -> bool {
    let mut st = shared.lock();
    let resource = filter.resource;
    let mut page = match cont.filter(|c| !c.is_empty()) {
        Some(token) => match st.pages.remove(&token) {
            Some(p) if p.resource == resource => p,
            _ => {
                st.requests[index].status = 410;
                drop(st);
                let body = status_object(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                );
                return write_response(stream, 410, &body, close);
            }
        },
        None => Page {
            resource,
            items: st
                .objects
                .iter()
                .filter(|((r, _, _), obj)| *r == resource && filter.matches(obj))
                .map(|(_, obj)| obj.clone())
                .collect(),
            next: 0,
            rv: st.rv,
        },
    };
    let first = page.next == 0;
    let end = if limit == 0 {
        page.items.len()
    } else {
        (page.next + limit).min(page.items.len())
    };
    let items: Vec<Value> = page.items[page.next..end].to_vec();
    page.next = end;
    let mut metadata = json!({"resourceVersion": page.rv.to_string()});
    if end < page.items.len() {
        st.next_id += 1;
        let token = format!("c{}-{}", st.next_id, page.rv);
        metadata["continue"] = json!(token);
        metadata["remainingItemCount"] = json!(page.items.len() - end);
        st.pages.insert(token, page);
    }
    st.requests[index].status = 200;
    if first {
        *st.lists_ok.entry(resource).or_insert(0) += 1;
    }
    drop(st);
    let body = json!({
        "kind": format!("{}List", resource.kind()),
        "apiVersion": resource.api_version(),
        "metadata": metadata,
        "items": items,
    });
    write_response(stream, 200, &body, close)
}

fn serve_watch(
    shared: &Shared,
    stream: &mut TcpStream,
    index: usize,
    mut watcher: Watcher,
    from: Option<String>,
    timeout: Option<u64>,
    bookmarks: bool,
) {
    let resource = watcher.resource;
    let mut st = shared.lock();
    let from = match from.map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            st.requests[index].status = 400;
            drop(st);
            let body = status_object(400, "BadRequest", "invalid resource version");
            write_response(stream, 400, &body, true);
            return;
        }
    };
    let expired = from.is_some_and(|v| v < st.floor);
    if expired && st.config.expired_as == ExpiredAs::Http410 {
        st.requests[index].status = 410;
        drop(st);
        write_response(stream, 410, &expired_status(), true);
        return;
    }
    if expired {
        watcher.close = Some(Close::Expire);
    } else {
        match from {
            // No version: synthetic ADDED events for what exists, then changes.
            None => {
                for ((r, _, _), obj) in &st.objects {
                    if *r == resource && watcher.matches(obj) {
                        watcher.queue.push_back(event_line("ADDED", obj));
                    }
                }
            }
            Some(v) => {
                for ev in st.history.iter().filter(|e| e.resource == resource && e.rv > v) {
                    if let Some(line) = watcher.view(ev) {
                        watcher.queue.push_back(line);
                    }
                }
            }
        }
    }
    st.next_id += 1;
    let id = st.next_id;
    st.watchers.insert(id, watcher);
    st.requests[index].status = 200;
    *st.watches_ok.entry(resource).or_insert(0) += 1;
    let max = st.config.max_watch;
    let duration = timeout.map(|t| Duration::from_secs(t).min(max)).unwrap_or(max);
    let start = Instant::now();
    let deadline = start + duration;
    let mut next_bookmark = start + st.config.bookmark_interval;
    let mut bookmark_gen = st.bookmark_gen;
    drop(st);

    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if stream.write_all(head.as_bytes()).is_err() {
        shared.lock().watchers.remove(&id);
        return;
    }
    let mut st = shared.lock();
    loop {
        if st.stopped {
            st.watchers.remove(&id);
            return;
        }
        let stalled = st.fault == Fault::Stall;
        let mut out: Vec<u8> = Vec::new();
        let mut finish: Option<Close> = None;
        let now = Instant::now();
        if !stalled {
            let rv = st.rv;
            let interval = st.config.bookmark_interval;
            let gen_now = st.bookmark_gen;
            let w = st.watchers.get_mut(&id).expect("registered watcher");
            while let Some(line) = w.queue.pop_front() {
                out.extend(chunk(&line));
            }
            finish = w.close;
            if finish.is_none() && bookmarks && (now >= next_bookmark || gen_now != bookmark_gen) {
                let obj = json!({
                    "kind": resource.kind(),
                    "apiVersion": resource.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()},
                });
                out.extend(chunk(&event_line("BOOKMARK", &obj)));
                next_bookmark = now + interval;
                bookmark_gen = gen_now;
                st.last_bookmark.insert(resource, rv);
            }
        } else if st.watchers[&id].close == Some(Close::Reset) {
            finish = Some(Close::Reset);
        }
        if finish.is_none() && now >= deadline {
            finish = Some(Close::Clean);
        }
        if finish.is_some() {
            st.watchers.remove(&id);
        }
        if !out.is_empty() || finish.is_some() {
            drop(st);
            match finish {
                Some(Close::Clean) => out.extend_from_slice(b"0\r\n\r\n"),
                Some(Close::Expire) => {
                    out.extend(chunk(&event_line("ERROR", &expired_status())));
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                Some(Close::Reset) | None => {}
            }
            let ok = out.is_empty() || stream.write_all(&out).is_ok();
            if finish.is_some() {
                if finish == Some(Close::Reset) {
                    let _ = stream.shutdown(Shutdown::Both);
                }
                return;
            }
            st = shared.lock();
            if !ok {
                st.watchers.remove(&id);
                return;
            }
            continue;
        }
        let mut wake = deadline;
        if bookmarks && !stalled {
            wake = wake.min(next_bookmark);
        }
        let wait = wake
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        st = shared.cond.wait_timeout(st, wait).unwrap_or_else(|p| p.into_inner()).0;
    }
}

// ------------------------------------------------------------------------------------
// Object constructors: API-shaped JSON, with the noise the real API adds (uid,
// creationTimestamp, managedFields, annotations) so tests prove the client ignores it.

fn noise_metadata(name: &str, namespace: Option<&str>, labels: Value) -> Value {
    let mut m = json!({
        "name": name,
        "uid": format!("{:08x}-0000-4000-8000-{:012x}", name.len() * 7919, name.bytes().map(u64::from).sum::<u64>()),
        "resourceVersion": "0",
        "generation": 1,
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "labels": labels,
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"Thing\",\"metadata\":{\"name\":\"x\"}}\n",
            "example.com/note": "ignored by DNS"
        },
        "managedFields": [{
            "manager": "kubectl-client-side-apply",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2026-01-01T00:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:annotations": {".": {}}}, "f:spec": {"f:ports": {}}}
        }]
    });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

pub fn namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": noise_metadata(name, None, json!({"kubernetes.io/metadata.name": name})),
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}
    })
}

/// A ClusterIP service; `ports` are `(name, port, protocol)` (an empty name is an
/// unnamed port). `cluster_ip` may be IPv4 or IPv6.
pub fn service(ns: &str, name: &str, cluster_ip: &str, ports: &[(&str, u16, &str)]) -> Value {
    let family = if cluster_ip.contains(':') { "IPv6" } else { "IPv4" };
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, proto)| {
            let mut v = json!({"protocol": proto, "port": p, "targetPort": p});
            if !n.is_empty() {
                v["name"] = json!(n);
            }
            v
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": noise_metadata(name, Some(ns), json!({"app": name})),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ipFamilies": [family],
            "ipFamilyPolicy": "SingleStack",
            "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
            "selector": {"app": name},
            "ports": ports
        },
        "status": {"loadBalancer": {}}
    })
}

/// A headless service (`clusterIP: None`) with one named port `http/TCP/80`.
pub fn headless(ns: &str, name: &str) -> Value {
    let mut s = service(ns, name, "None", &[("http", 80, "TCP")]);
    s["spec"]["ipFamilies"] = json!(["IPv4"]);
    s
}

pub fn external_name(ns: &str, name: &str, target: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": noise_metadata(name, Some(ns), json!({})),
        "spec": {"type": "ExternalName", "externalName": target, "sessionAffinity": "None"},
        "status": {"loadBalancer": {}}
    })
}

/// An EndpointSlice of `service`, one ready endpoint per address (all of one family),
/// port `http/TCP/80`.
pub fn slice(ns: &str, name: &str, service: &str, addresses: &[&str]) -> Value {
    let family = if addresses.first().is_some_and(|a| a.contains(':')) {
        "IPv6"
    } else {
        "IPv4"
    };
    let endpoints: Vec<Value> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            json!({
                "addresses": [a],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": format!("node-{}", i % 3),
                "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{service}-pod-{i}"), "uid": "00000000-0000-4000-8000-000000000001"}
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": noise_metadata(name, Some(ns), json!({
            "kubernetes.io/service-name": service,
            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
        })),
        "addressType": family,
        "endpoints": endpoints,
        "ports": [{"name": "http", "protocol": "TCP", "port": 80}]
    })
}

/// Sets `conditions.ready` of the endpoint holding `address`.
pub fn set_ready(slice: &mut Value, address: &str, ready: bool) {
    for ep in slice["endpoints"].as_array_mut().expect("endpoints") {
        if ep["addresses"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == address))
        {
            ep["conditions"]["ready"] = json!(ready);
            ep["conditions"]["serving"] = json!(ready);
        }
    }
}

pub fn pod(ns: &str, name: &str, ip: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": noise_metadata(name, Some(ns), json!({"app": name})),
        "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9"}], "nodeName": "node-1"},
        "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}
    })
}

/// Replaces the object's labels.
pub fn with_labels(mut obj: Value, labels: &[(&str, &str)]) -> Value {
    let map: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    obj["metadata"]["labels"] = Value::Object(map);
    obj
}

// ------------------------------------------------------------------------------------
// The fake's own tests, with a plain TcpStream client.

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal HTTP/1.1 client: one request, Content-Length or chunked body.
    struct Client {
        reader: BufReader<TcpStream>,
    }

    struct Head {
        status: u16,
        headers: Vec<(String, String)>,
    }

    impl Head {
        fn header(&self, k: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        }
    }

    impl Client {
        fn connect(api: &FakeApi) -> Client {
            let s = TcpStream::connect(api.addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Client {
                reader: BufReader::new(s),
            }
        }

        fn send(&mut self, target: &str) {
            let req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n");
            self.reader.get_mut().write_all(req.as_bytes()).unwrap();
        }

        fn head(&mut self) -> Option<Head> {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let status = line.split_whitespace().nth(1)?.parse().ok()?;
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                self.reader.read_line(&mut h).ok()?;
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let (k, v) = h.split_once(':')?;
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            Some(Head { status, headers })
        }

        /// A whole Content-Length response.
        fn get(&mut self, target: &str) -> (u16, Value) {
            self.send(target);
            let head = self.head().expect("response head");
            let n: usize = head.header("content-length").expect("content-length").parse().unwrap();
            let mut body = vec![0u8; n];
            self.reader.read_exact(&mut body).unwrap();
            (head.status, serde_json::from_slice(&body).expect("json body"))
        }

        /// The next chunk of a chunked body: Some(line) or None at the end / on timeout.
        fn next_chunk(&mut self, timeout: Duration) -> Option<String> {
            self.reader.get_ref().set_read_timeout(Some(timeout)).unwrap();
            let mut size = String::new();
            if self.reader.read_line(&mut size).ok()? == 0 {
                return None;
            }
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                return None;
            }
            let mut data = vec![0u8; n + 2];
            self.reader.read_exact(&mut data).ok()?;
            Some(String::from_utf8(data[..n].to_vec()).unwrap())
        }

        fn next_event(&mut self, timeout: Duration) -> Option<Value> {
            let line = self.next_chunk(timeout)?;
            assert!(line.ends_with('\n'), "one event per line: {line:?}");
            Some(serde_json::from_str(line.trim_end()).unwrap())
        }
    }

    fn get(api: &FakeApi, target: &str) -> (u16, Value) {
        Client::connect(api).get(target)
    }

    fn names(list: &Value) -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn small_world() -> FakeApi {
        let mut objs = vec![namespace("default"), namespace("team-a")];
        for i in 0..5 {
            objs.push(service(
                "default",
                &format!("svc{i}"),
                &format!("10.96.0.{}", i + 1),
                &[("http", 80, "TCP")],
            ));
        }
        objs.push(with_labels(
            service("team-a", "web", "10.96.1.1", &[("http", 80, "TCP")]),
            &[("app", "web"), ("tier", "front")],
        ));
        FakeApi::with_objects(objs)
    }

    #[test]
    fn list_pages_are_consistent_and_tokens_expire() {
        let api = small_world();
        let mut c = Client::connect(&api);
        let (code, p1) = c.get("/api/v1/services?limit=2");
        assert_eq!(code, 200);
        assert_eq!(p1["kind"], "ServiceList");
        assert_eq!(p1["apiVersion"], "v1");
        let rv = p1["metadata"]["resourceVersion"].as_str().unwrap().to_string();
        assert_eq!(names(&p1), ["svc0", "svc1"]);
        let token = p1["metadata"]["continue"].as_str().unwrap().to_string();
        // A change after the first page does not show in the rest of this list.
        api.add(service("default", "svc9", "10.96.0.99", &[]));
        // Same connection (keep-alive).
        let (code, p2) = c.get(&format!("/api/v1/services?limit=2&continue={token}"));
        assert_eq!(code, 200);
        assert_eq!(names(&p2), ["svc2", "svc3"]);
        assert_eq!(p2["metadata"]["resourceVersion"].as_str().unwrap(), rv);
        let token2 = p2["metadata"]["continue"].as_str().unwrap().to_string();
        let (_, p3) = c.get(&format!("/api/v1/services?limit=2&continue={token2}"));
        assert_eq!(names(&p3), ["svc4", "web"]);
        assert!(p3["metadata"].get("continue").is_none());
        // A token used up, or unknown, is 410 Expired.
        let (code, st) = c.get(&format!("/api/v1/services?limit=2&continue={token2}"));
        assert_eq!(code, 410);
        assert_eq!(st["reason"], "Expired");
        assert_eq!(st["kind"], "Status");
        // Compaction expires outstanding tokens.
        let (_, p1) = c.get("/api/v1/services?limit=3");
        api.compact();
        let t = p1["metadata"]["continue"].as_str().unwrap();
        assert_eq!(c.get(&format!("/api/v1/services?limit=3&continue={t}")).0, 410);
        // Without a limit, everything at once, including the later addition.
        let (_, all) = c.get("/api/v1/services");
        assert_eq!(all["items"].as_array().unwrap().len(), 7);
        assert_eq!(api.lists(Resource::Services), 3, "a paginated list counts once");
        assert_eq!(api.list_attempts(Resource::Services), 3);
        assert!(api.queries(Resource::Services).iter().any(|q| q.contains("continue=")));
    }

    #[test]
    fn selectors_filter_lists() {
        let api = small_world();
        let cases = [
            ("app%3Dweb", vec!["web"]),
            ("app=web,tier!=back", vec!["web"]),
            ("tier", vec!["web"]),
            ("!tier,app+in+(svc1,svc3)", vec!["svc1", "svc3"]),
            ("app%20notin%20(svc0,svc1,svc2,svc3,svc4)", vec!["web"]),
            ("app!%3Dweb", vec!["svc0", "svc1", "svc2", "svc3", "svc4"]),
        ];
        for (sel, want) in cases {
            let (code, list) = get(&api, &format!("/api/v1/services?labelSelector={sel}"));
            assert_eq!(code, 200, "{sel}");
            assert_eq!(names(&list), want, "{sel}");
        }
        assert_eq!(
            param(&api.last_query(Resource::Services).unwrap(), "labelSelector").unwrap(),
            "app!=web"
        );
        let (_, list) = get(&api, "/api/v1/namespaces/team-a/services");
        assert_eq!(names(&list), ["web"]);
        let (_, list) = get(&api, "/api/v1/services?fieldSelector=metadata.namespace%3Dteam-a");
        assert_eq!(names(&list), ["web"]);
        // Pods: the phase field selector CoreDNS sends.
        api.add(pod("default", "running", "10.244.0.1", "Running"));
        api.add(pod("default", "done", "10.244.0.2", "Succeeded"));
        let (_, list) = get(
            &api,
            "/api/v1/pods?fieldSelector=status.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed%2Cstatus.phase%21%3DUnknown",
        );
        assert_eq!(names(&list), ["running"]);
        assert_eq!(get(&api, "/api/v1/services?labelSelector=a+b").0, 400);
        assert_eq!(get(&api, "/api/v1/configmaps").0, 404);
    }

    #[test]
    fn watch_replays_history_then_streams_live_changes() {
        let api = small_world();
        let (_, list) = get(&api, "/api/v1/services");
        let rv: u64 = list["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
        let rv_add = api.add(service("default", "late", "10.96.0.50", &[]));
        api.add(namespace("other")); // another resource: not on this stream
        let mut c = Client::connect(&api);
        c.send(&format!(
            "/api/v1/services?watch=1&resourceVersion={rv}&timeoutSeconds=30"
        ));
        let head = c.head().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("transfer-encoding"), Some("chunked"));
        assert_eq!(head.header("content-type"), Some("application/json"));
        let ev = c.next_event(Duration::from_secs(2)).expect("replayed event");
        assert_eq!(ev["type"], "ADDED");
        assert_eq!(ev["object"]["metadata"]["name"], "late");
        assert_eq!(ev["object"]["metadata"]["resourceVersion"], rv_add.to_string());
        // Nothing more for now.
        assert!(c.next_event(Duration::from_millis(200)).is_none());
        // Live changes arrive as they happen.
        let t = Instant::now();
        api.update("Service", "default", "late", |s| {
            s["spec"]["clusterIP"] = json!("10.96.0.51")
        });
        let ev = c.next_event(Duration::from_secs(2)).expect("live event");
        assert!(t.elapsed() < Duration::from_millis(500));
        assert_eq!(ev["type"], "MODIFIED");
        assert_eq!(ev["object"]["spec"]["clusterIP"], "10.96.0.51");
        let rv_del = api.delete("Service", "default", "late");
        let ev = c.next_event(Duration::from_secs(2)).unwrap();
        assert_eq!(ev["type"], "DELETED");
        assert_eq!(ev["object"]["metadata"]["resourceVersion"], rv_del.to_string());
        assert_eq!(api.live_watches(Resource::Services), 1);
        // close_watches ends the stream properly.
        api.close_watches();
        assert!(c.next_chunk(Duration::from_secs(2)).is_none());
        assert_eq!(api.live_watches(Resource::Services), 0);
        assert_eq!(api.watches(Resource::Services), 1);
        // A selector turns an object leaving it into DELETED, entering it into ADDED.
        let mut c = Client::connect(&api);
        c.send(&format!(
            "/api/v1/services?watch=true&resourceVersion={}&labelSelector=tier%3Dfront",
            api.rv()
        ));
        assert_eq!(c.head().unwrap().status, 200);
        api.update("Service", "team-a", "web", |s| {
            s["metadata"]["labels"]["tier"] = json!("back")
        });
        assert_eq!(c.next_event(Duration::from_secs(2)).unwrap()["type"], "DELETED");
        api.update("Service", "team-a", "web", |s| {
            s["metadata"]["labels"]["tier"] = json!("front")
        });
        assert_eq!(c.next_event(Duration::from_secs(2)).unwrap()["type"], "ADDED");
        api.update("Service", "default", "svc1", |s| {
            s["spec"]["clusterIP"] = json!("10.96.0.77")
        });
        assert!(c.next_event(Duration::from_millis(200)).is_none(), "not selected");
        // Reset cuts the connection without a terminating chunk.
        api.reset_watches();
        let mut rest = Vec::new();
        let _ = c.reader.read_to_end(&mut rest);
        assert!(!String::from_utf8_lossy(&rest).contains("0\r\n\r\n"));
    }

    #[test]
    fn a_watch_without_version_starts_with_the_current_objects_and_ends_at_its_timeout() {
        let api = small_world();
        api.set_max_watch(Duration::from_millis(400));
        let mut c = Client::connect(&api);
        c.send("/api/v1/namespaces?watch=1&timeoutSeconds=100");
        assert_eq!(c.head().unwrap().status, 200);
        let mut seen = Vec::new();
        let t = Instant::now();
        while let Some(ev) = c.next_event(Duration::from_secs(2)) {
            assert_eq!(ev["type"], "ADDED");
            seen.push(ev["object"]["metadata"]["name"].as_str().unwrap().to_string());
        }
        assert_eq!(seen, ["default", "team-a"]);
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[test]
    fn bookmarks_come_periodically_and_on_demand() {
        let api = small_world();
        api.set_bookmark_interval(Duration::from_millis(150));
        let rv = api.rv();
        let mut c = Client::connect(&api);
        c.send(&format!(
            "/apis/discovery.k8s.io/v1/endpointslices?watch=1&resourceVersion={rv}&allowWatchBookmarks=true"
        ));
        assert_eq!(c.head().unwrap().status, 200);
        let ev = c.next_event(Duration::from_secs(2)).unwrap();
        assert_eq!(ev["type"], "BOOKMARK");
        assert_eq!(ev["object"]["kind"], "EndpointSlice");
        assert_eq!(ev["object"]["apiVersion"], "discovery.k8s.io/v1");
        assert_eq!(ev["object"]["metadata"]["resourceVersion"], rv.to_string());
        // Changes elsewhere move the bookmark's version.
        let rv2 = api.add(namespace("moved"));
        api.set_bookmark_interval(Duration::from_secs(60));
        let ev = c.next_event(Duration::from_secs(2)).unwrap();
        assert_eq!(ev["type"], "BOOKMARK");
        assert_eq!(ev["object"]["metadata"]["resourceVersion"], rv2.to_string());
        let rv3 = api.add(namespace("again"));
        api.send_bookmarks();
        let ev = c.next_event(Duration::from_secs(2)).unwrap();
        assert_eq!(ev["object"]["metadata"]["resourceVersion"], rv3.to_string());
        assert_eq!(api.last_bookmark(Resource::EndpointSlices), Some(rv3));
        // Without allowWatchBookmarks, none.
        let mut c = Client::connect(&api);
        c.send(&format!("/api/v1/services?watch=1&resourceVersion={rv3}"));
        assert_eq!(c.head().unwrap().status, 200);
        api.send_bookmarks();
        assert!(c.next_event(Duration::from_millis(300)).is_none());
    }

    #[test]
    fn an_old_version_is_expired_by_event_or_by_http_410() {
        let api = small_world();
        let old = api.rv();
        api.add(namespace("n1"));
        api.compact();
        let mut c = Client::connect(&api);
        c.send(&format!("/api/v1/namespaces?watch=1&resourceVersion={old}"));
        assert_eq!(c.head().unwrap().status, 200);
        let ev = c.next_event(Duration::from_secs(2)).unwrap();
        assert_eq!(ev["type"], "ERROR");
        assert_eq!(ev["object"]["code"], 410);
        assert_eq!(ev["object"]["reason"], "Expired");
        assert_eq!(ev["object"]["status"], "Failure");
        assert!(c.next_chunk(Duration::from_secs(2)).is_none(), "then the end");
        // The current version is fine.
        let mut c = Client::connect(&api);
        c.send(&format!("/api/v1/namespaces?watch=1&resourceVersion={}", api.rv()));
        assert_eq!(c.head().unwrap().status, 200);
        assert!(c.next_event(Duration::from_millis(100)).is_none());
        drop(c);
        api.set_expired_as(ExpiredAs::Http410);
        let (code, st) = get(&api, &format!("/api/v1/namespaces?watch=1&resourceVersion={old}"));
        assert_eq!(code, 410);
        assert_eq!(st["reason"], "Expired");
        // expire_watches: live streams get the ERROR event.
        api.set_expired_as(ExpiredAs::ErrorEvent);
        let mut c = Client::connect(&api);
        c.send(&format!("/api/v1/services?watch=1&resourceVersion={}", api.rv()));
        assert_eq!(c.head().unwrap().status, 200);
        api.expire_watches();
        let ev = c.next_event(Duration::from_secs(2)).unwrap();
        assert_eq!(
            (ev["type"].as_str(), ev["object"]["code"].as_u64()),
            (Some("ERROR"), Some(410))
        );
        // A bounded history expires on its own.
        let api = FakeApi::with_config(
            Config {
                history_limit: Some(2),
                ..Config::default()
            },
            vec![],
        );
        let start = api.rv();
        for i in 0..3 {
            api.add(namespace(&format!("n{i}")));
        }
        let mut c = Client::connect(&api);
        c.send(&format!("/api/v1/namespaces?watch=1&resourceVersion={start}"));
        c.head().unwrap();
        assert_eq!(c.next_event(Duration::from_secs(2)).unwrap()["type"], "ERROR");
        let mut c = Client::connect(&api);
        c.send(&format!("/api/v1/namespaces?watch=1&resourceVersion={}", start + 1));
        c.head().unwrap();
        assert_eq!(
            c.next_event(Duration::from_secs(2)).unwrap()["object"]["metadata"]["name"],
            "n1"
        );
    }

    #[test]
    fn faults_answer_as_configured() {
        let api = small_world();
        api.set_fault(Fault::Unavailable);
        let (code, st) = get(&api, "/api/v1/services?limit=500");
        assert_eq!(code, 503);
        assert_eq!(st["kind"], "Status");
        assert_eq!(st["code"], 503);
        assert_eq!(get(&api, "/api/v1/services?watch=1").0, 503);
        api.set_fault(Fault::Status500);
        assert_eq!(get(&api, "/api/v1/namespaces").0, 500);
        api.set_fault(Fault::Forbidden(Resource::Pods));
        assert_eq!(get(&api, "/api/v1/pods").0, 403);
        assert_eq!(get(&api, "/api/v1/services").0, 200);
        assert_eq!(api.lists(Resource::Services), 1);
        assert_eq!(api.list_attempts(Resource::Services), 2);
        api.set_fault(Fault::Slow(Duration::from_millis(300)));
        let t = Instant::now();
        assert_eq!(get(&api, "/api/v1/services").0, 200);
        assert!(t.elapsed() >= Duration::from_millis(300));
        // Stall: the request is read and held; TCP stays open; released on clearing.
        api.set_fault(Fault::Stall);
        let mut c = Client::connect(&api);
        c.send("/api/v1/services");
        c.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 1];
        let r = c.reader.get_mut().read(&mut b);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
            "{r:?}"
        );
        assert_eq!(api.list_attempts(Resource::Services), 4, "the request was read");
        api.set_fault(Fault::None);
        c.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let head = c.head().unwrap();
        assert_eq!(head.status, 200);
        assert!(api.request_log().contains("/api/v1/services? -> 200"));
    }

    #[test]
    fn a_stall_silences_live_streams_until_released() {
        let api = small_world();
        let mut c = Client::connect(&api);
        c.send(&format!(
            "/api/v1/services?watch=1&resourceVersion={}&allowWatchBookmarks=true",
            api.rv()
        ));
        assert_eq!(c.head().unwrap().status, 200);
        api.set_fault(Fault::Stall);
        api.add(service("default", "quiet", "10.96.0.60", &[]));
        api.send_bookmarks();
        assert!(c.next_event(Duration::from_millis(300)).is_none());
        api.set_fault(Fault::None);
        let ev = c.next_event(Duration::from_secs(2)).unwrap();
        assert_eq!(ev["object"]["metadata"]["name"], "quiet");
    }

    /// The client the plugin uses (ureq, plain HTTP) reads the fake as it reads the real
    /// API: pages over one kept-alive connection, a chunked watch line by line, errors.
    #[test]
    fn ureq_reads_pages_streams_and_errors() {
        let api = small_world();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut names_seen = Vec::new();
        let mut cont = String::new();
        let rv = loop {
            let mut r = agent
                .get(format!("{}/api/v1/services?limit=4{cont}", api.url()))
                .call()
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let page: Value = serde_json::from_reader(r.body_mut().as_reader()).unwrap();
            names_seen.extend(names(&page));
            match page["metadata"]["continue"].as_str() {
                Some(t) => cont = format!("&continue={t}"),
                None => break page["metadata"]["resourceVersion"].as_str().unwrap().to_string(),
            }
        };
        assert_eq!(names_seen.len(), 6);
        let mut r = agent
            .get(format!(
                "{}/api/v1/services?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=10",
                api.url()
            ))
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let mut lines = BufReader::new(r.body_mut().as_reader());
        let added = api.add(service("default", "streamed", "10.96.0.70", &[]));
        let mut line = String::new();
        lines.read_line(&mut line).unwrap();
        let ev: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(ev["type"], "ADDED");
        assert_eq!(ev["object"]["metadata"]["resourceVersion"], added.to_string());
        api.send_bookmarks();
        line.clear();
        lines.read_line(&mut line).unwrap();
        assert!(line.contains("\"BOOKMARK\""), "{line}");
        api.close_watches();
        line.clear();
        assert_eq!(lines.read_line(&mut line).unwrap(), 0, "a clean end of stream");
        drop(lines);
        api.set_fault(Fault::Unavailable);
        let mut r = agent.get(format!("{}/api/v1/services", api.url())).call().unwrap();
        assert_eq!(r.status().as_u16(), 503);
        let st: Value = serde_json::from_reader(r.body_mut().as_reader()).unwrap();
        assert_eq!(st["code"], 503);
    }

    #[test]
    fn dropping_the_fake_closes_everything() {
        let api = small_world();
        let addr = api.addr();
        let mut c = Client::connect(&api);
        c.send(&format!("/api/v1/services?watch=1&resourceVersion={}", api.rv()));
        assert_eq!(c.head().unwrap().status, 200);
        let mut idle = TcpStream::connect(addr).unwrap();
        api.set_fault(Fault::Stall);
        let mut stalled = Client::connect(&api);
        stalled.send("/api/v1/pods");
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        drop(api);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(c.next_chunk(Duration::from_secs(1)).is_none());
        idle.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut b = [0u8; 1];
        assert!(matches!(idle.read(&mut b), Ok(0) | Err(_)));
        assert!(stalled.head().is_none());
        assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err());
    }

    #[test]
    fn a_conformance_world_loads_with_its_versions() {
        let world = |name: &str| -> Value {
            let path = format!(
                "{}/tests/data/kubernetes/worlds/{name}.json",
                env!("CARGO_MANIFEST_DIR")
            );
            serde_json::from_str(&std::fs::read_to_string(&path).expect("world file")).unwrap()
        };
        let handler = world("handler");
        let api = FakeApi::from_world(&handler, Config::default());
        let (_, list) = get(&api, "/apis/discovery.k8s.io/v1/endpointslices");
        assert_eq!(list["kind"], "EndpointSliceList");
        assert!(!list["items"].as_array().unwrap().is_empty());
        let (_, ns) = get(&api, "/api/v1/namespaces");
        let max = [&handler["namespaces"], &handler["services"]]
            .iter()
            .flat_map(|a| a.as_array().unwrap())
            .map(|o| {
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .max()
            .unwrap();
        assert!(
            ns["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= max
        );
        let down = FakeApi::from_world(&world("unsynced"), Config::default());
        assert_eq!(get(&down, "/api/v1/namespaces").0, 503);
    }
}
