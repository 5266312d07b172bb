//! A minimal Kubernetes API for the cluster bench: plain HTTP/1.1 on 127.0.0.1, serving
//! Namespaces, Services and EndpointSlices by LIST (`limit` and `continue`, one
//! consistent resourceVersion per list) and by WATCH (a chunked stream the bench writes
//! events into), and telling the bench when it finished sending each list.
//!
//! It is smaller than `tests/e2e/fakeapi.rs` on purpose: the items are JSON text
//! rendered once (a 100,000-service cluster costs no JSON tree here), and the bench
//! writes a watch event on the client's socket itself, so the time it takes right after
//! the write is the start of a change-to-answer measurement, with no thread hand-off in
//! between. Changes pushed on a watch are not folded back into the list contents: a
//! bench that pushes changes expects no relist.
//!
//! ```text
//!   GET /api/v1/services?limit=500[&continue=OFFSET.RV]      200 ServiceList page (Content-Length)
//!   GET /api/v1/services?watch=1&resourceVersion=RV&...       200 chunked, Connection: close
//!       RV older than the last expire():                      ERROR 410 event, end of stream
//!   push(resource, line)   one event line on the live stream, returns the time after the write
//!   expire()               ERROR 410 on every live stream, ends them: the client must LIST again
//! ```
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const NAMESPACES: usize = 0;
pub const SERVICES: usize = 1;
pub const ENDPOINTSLICES: usize = 2;

/// Collection path, kind, list kind, apiVersion.
const RESOURCES: [(&str, &str, &str, &str); 3] = [
    ("/api/v1/namespaces", "Namespace", "NamespaceList", "v1"),
    ("/api/v1/services", "Service", "ServiceList", "v1"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "EndpointSlice",
        "EndpointSliceList",
        "discovery.k8s.io/v1",
    ),
];

/// Period of BOOKMARK events on live streams (the client's idle timeout is 75 s).
const BOOKMARK_EVERY: Duration = Duration::from_secs(15);

#[derive(Default)]
struct State {
    rv: u64,
    /// Watches and continue tokens older than this are expired (410).
    floor: u64,
    /// The live watch stream of each resource: (stream id, socket).
    streams: [Option<(u64, TcpStream)>; 3],
    next_stream: u64,
    list_started: [Vec<Instant>; 3],
    list_done: [Vec<Instant>; 3],
    watches: [Vec<Instant>; 3],
    /// Every connection, to shut them down on drop.
    conns: Vec<TcpStream>,
    workers: Vec<JoinHandle<()>>,
}

struct Shared {
    /// The list contents; replaced whole by `set_items`.
    items: Mutex<Arc<[Vec<String>; 3]>>,
    state: Mutex<State>,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct FakeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

/// One HTTP chunk holding one event line.
fn chunk(line: &str) -> String {
    format!("{:x}\r\n{line}\n\r\n", line.len() + 1)
}

fn expired_event(rv: u64, floor: u64) -> String {
    format!(
        r#"{{"type":"ERROR","object":{{"kind":"Status","apiVersion":"v1","metadata":{{}},"status":"Failure","message":"too old resource version: {rv} ({floor})","reason":"Expired","code":410}}}}"#
    )
}

impl FakeApi {
    /// Serves these list items (Namespaces, Services, EndpointSlices) at
    /// resourceVersion `rv` (above every item's own).
    pub fn start(items: [Vec<String>; 3], rv: u64) -> FakeApi {
        let shared = Arc::new(Shared {
            items: Mutex::new(Arc::new(items)),
            state: Mutex::new(State {
                rv,
                floor: 0,
                ..State::default()
            }),
            stop: AtomicBool::new(false),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("fake API: bind");
        let addr = listener.local_addr().unwrap();
        let sh = shared.clone();
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let _ = stream.set_nodelay(true);
                let Ok(clone) = stream.try_clone() else { continue };
                let sh2 = sh.clone();
                let worker = std::thread::spawn(move || serve(&sh2, stream));
                let mut st = sh.lock();
                st.conns.push(clone);
                st.workers.push(worker);
            }
        });
        let sh = shared.clone();
        let bookmarks = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !sh.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                if last.elapsed() < BOOKMARK_EVERY {
                    continue;
                }
                last = Instant::now();
                let mut st = sh.lock();
                let rv = st.rv;
                for (r, slot) in st.streams.iter_mut().enumerate() {
                    if let Some((_, s)) = slot {
                        let line = format!(
                            r#"{{"type":"BOOKMARK","object":{{"kind":"{}","apiVersion":"{}","metadata":{{"resourceVersion":"{rv}"}}}}}}"#,
                            RESOURCES[r].1, RESOURCES[r].3
                        );
                        let _ = s.write_all(chunk(&line).as_bytes());
                    }
                }
            }
        });
        FakeApi {
            shared,
            addr,
            threads: vec![accept, bookmarks],
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Replaces what the next lists return (items whose own resourceVersions are all
    /// below `rv`), at resourceVersion `rv`.
    pub fn set_items(&self, items: [Vec<String>; 3], rv: u64) {
        *self.shared.items.lock().unwrap() = Arc::new(items);
        let mut st = self.shared.lock();
        st.rv = st.rv.max(rv);
    }

    /// The next resourceVersion, for an event about to be pushed.
    pub fn next_rv(&self) -> u64 {
        let mut st = self.shared.lock();
        st.rv += 1;
        st.rv
    }

    /// Writes one event line on the live watch stream of `resource`; returns the time
    /// right after the write, or None if no stream is live.
    pub fn push(&self, resource: usize, line: &str) -> Option<Instant> {
        let data = chunk(line);
        let mut st = self.shared.lock();
        let (_, s) = st.streams[resource].as_mut()?;
        s.write_all(data.as_bytes()).ok()?;
        Some(Instant::now())
    }

    /// Sends an ERROR 410 on every live watch stream and ends them, and expires every
    /// older resourceVersion and continue token: the client must list again. Returns the
    /// time after the writes.
    pub fn expire(&self) -> Instant {
        let mut st = self.shared.lock();
        let old = st.rv;
        st.rv += 1;
        st.floor = st.rv;
        let line = expired_event(old, st.floor);
        for slot in st.streams.iter_mut() {
            if let Some((_, mut s)) = slot.take() {
                let _ = s.write_all(chunk(&line).as_bytes());
                let _ = s.write_all(b"0\r\n\r\n");
                let _ = s.shutdown(Shutdown::Write);
            }
        }
        Instant::now()
    }

    /// When each LIST of `resource` sent its last page (first list first).
    pub fn lists_done(&self, resource: usize) -> Vec<Instant> {
        self.shared.lock().list_done[resource].clone()
    }

    /// When each LIST of `resource` was asked for its first page.
    pub fn lists_started(&self, resource: usize) -> Vec<Instant> {
        self.shared.lock().list_started[resource].clone()
    }

    /// When each WATCH of `resource` started streaming.
    pub fn watches(&self, resource: usize) -> Vec<Instant> {
        self.shared.lock().watches[resource].clone()
    }

    pub fn live(&self, resource: usize) -> bool {
        self.shared.lock().streams[resource].is_some()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        let (conns, workers) = {
            let mut st = self.shared.lock();
            st.streams = Default::default();
            (std::mem::take(&mut st.conns), std::mem::take(&mut st.workers))
        };
        for c in &conns {
            let _ = c.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Connections accepted while stopping.
        let late = std::mem::take(&mut self.shared.lock().conns);
        for c in &late {
            let _ = c.shutdown(Shutdown::Both);
        }
        for w in workers {
            let _ = w.join();
        }
        for w in std::mem::take(&mut self.shared.lock().workers) {
            let _ = w.join();
        }
    }
}

/// Path and query of the next request on the connection (a GET, no body).
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, String)> {
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
    let target = line.split_whitespace().nth(1)?.to_string();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        if h.trim().is_empty() {
            break;
        }
    }
    Some(match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    })
}

fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn respond(out: &mut TcpStream, code: u16, body: &str) -> bool {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        410 => "Gone",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes()).is_ok() && out.write_all(body.as_bytes()).is_ok()
}

fn serve(shared: &Shared, stream: TcpStream) {
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut out = stream;
    while let Some((path, query)) = read_request(&mut reader) {
        let Some(r) = RESOURCES.iter().position(|(p, ..)| *p == path.trim_end_matches('/')) else {
            if !respond(&mut out, 404, r#"{"kind":"Status","code":404}"#) {
                return;
            }
            continue;
        };
        if matches!(param(&query, "watch"), Some("1" | "true")) {
            watch(shared, r, &query, out, reader);
            return;
        }
        if !list_page(shared, r, &query, &mut out) {
            return;
        }
    }
}

/// One LIST page; false when the connection is gone.
fn list_page(shared: &Shared, r: usize, query: &str, out: &mut TcpStream) -> bool {
    let all = shared.items.lock().unwrap().clone();
    let items = &all[r];
    let limit = param(query, "limit")
        .and_then(|l| l.parse().ok())
        .filter(|&l: &usize| l > 0);
    let (offset, rv) = {
        let mut st = shared.lock();
        match param(query, "continue").and_then(|t| t.split_once('.')) {
            Some((off, rv)) => {
                let (off, rv): (usize, u64) = (off.parse().unwrap_or(0), rv.parse().unwrap_or(0));
                if rv < st.floor {
                    drop(st);
                    return respond(
                        out,
                        410,
                        r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Expired","code":410}"#,
                    );
                }
                (off, rv)
            }
            None => {
                st.list_started[r].push(Instant::now());
                (0, st.rv)
            }
        }
    };
    let end = limit.map_or(items.len(), |l| (offset + l).min(items.len()));
    let more = if end < items.len() {
        format!(r#","continue":"{end}.{rv}","remainingItemCount":{}"#, items.len() - end)
    } else {
        String::new()
    };
    let (_, _, list_kind, api_version) = RESOURCES[r];
    let page = &items[offset.min(end)..end];
    let mut body = String::with_capacity(page.iter().map(|i| i.len() + 1).sum::<usize>() + 200);
    body.push_str(&format!(
        r#"{{"kind":"{list_kind}","apiVersion":"{api_version}","metadata":{{"resourceVersion":"{rv}"{more}}},"items":["#
    ));
    for (k, item) in page.iter().enumerate() {
        if k > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push_str("]}");
    if !respond(out, 200, &body) {
        return false;
    }
    if end == items.len() {
        shared.lock().list_done[r].push(Instant::now());
    }
    true
}

/// A WATCH: the stream stays open (and registered for `push`) until the client closes
/// it or `expire` ends it.
fn watch(shared: &Shared, r: usize, query: &str, mut out: TcpStream, mut reader: BufReader<TcpStream>) {
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    let from: u64 = param(query, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let id = {
        let mut st = shared.lock();
        if from < st.floor {
            let line = expired_event(from, st.floor);
            drop(st);
            let _ = out.write_all(chunk(&line).as_bytes());
            let _ = out.write_all(b"0\r\n\r\n");
            let _ = out.shutdown(Shutdown::Write);
            let _ = reader.read(&mut [0u8; 64]);
            return;
        }
        let Ok(mine) = out.try_clone() else { return };
        // A blocked client must not block the bench that writes to it.
        let _ = mine.set_write_timeout(Some(Duration::from_secs(2)));
        st.next_stream += 1;
        let id = st.next_stream;
        if let Some((_, old)) = st.streams[r].replace((id, mine)) {
            let _ = old.shutdown(Shutdown::Both);
        }
        st.watches[r].push(Instant::now());
        id
    };
    // Until the client closes, or `expire` shuts the stream down.
    let mut buf = [0u8; 256];
    while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
    let mut st = shared.lock();
    if st.streams[r].as_ref().is_some_and(|(i, _)| *i == id) {
        st.streams[r] = None;
    }
}
