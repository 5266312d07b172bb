//! The fake API's HTTP side: accepting connections, reading requests, answering lists
//! and streaming watches (and handing requests to the abusive behaviours).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::selector::Selector;
use super::{Abuse, Close, ExpiredAs, Fault, Page, RequestRecord, Resource, Shared, WRITTEN_KEPT, Watcher, abuse};

pub(super) fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut next_conn = 0u64;
    for stream in listener.incoming() {
        if shared.lock().stopped {
            return;
        }
        let Ok(stream) = stream else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
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
}

pub(super) struct HttpRequest {
    pub path: String,
    pub query: String,
    pub close: bool,
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

pub(super) fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// `(resource, namespace)` for a collection path.
pub(super) fn route(path: &str) -> Option<(Resource, Option<String>)> {
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

/// Writes one whole response; false when the connection must close (or is gone).
fn write_response(stream: &mut TcpStream, code: u16, body: &str, close: bool) -> bool {
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\nContent-Length: {}\r\n{}\r\n",
        reason_phrase(code),
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    let mut all = Vec::with_capacity(head.len() + body.len());
    all.extend_from_slice(head.as_bytes());
    all.extend_from_slice(body.as_bytes());
    stream.write_all(&all).is_ok() && !close
}

fn chunk(line: &str) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", line.len() + 1).into_bytes();
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\n\r\n");
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
        let (mode, generation, rv) = shared.lock().abuse;
        if mode != Abuse::None {
            abuse::respond(shared, &mut stream, mode, generation, rv, &req);
            break;
        }
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
            answered: None,
            last_page: false,
        });
        st.requests.len() - 1
    };
    // The status is recorded before the response is written (a client that has read it
    // finds it in the log), the time after.
    let status = |code: u16| shared.lock().requests[index].status = code;
    let answered = || shared.lock().requests[index].answered = Some(Instant::now());

    // An injected stream instead of this watch.
    if watch {
        let mut st = shared.lock();
        if st
            .inject
            .as_ref()
            .is_some_and(|(r, _)| routed.as_ref().is_some_and(|x| x.0 == *r))
        {
            let (_, inject) = st.inject.take().unwrap();
            st.requests[index].status = 200;
            drop(st);
            abuse::inject(shared, stream, inject);
            return false;
        }
    }

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
                    st = shared.wait(st, left);
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
        let body = status_object(code, reason, message).to_string();
        status(code);
        let keep = write_response(stream, code, &body, req.close);
        answered();
        return keep;
    }
    let (resource, namespace) = routed.unwrap();
    let mut selectors = Vec::new();
    for which in ["labelSelector", "fieldSelector"] {
        match Selector::parse(&get(which).unwrap_or_default()) {
            Ok(s) => selectors.push(s),
            Err(e) => {
                let body = status_object(400, "BadRequest", &e).to_string();
                status(400);
                let keep = write_response(stream, 400, &body, req.close);
                answered();
                return keep;
            }
        }
    }
    let fields = selectors.pop().unwrap();
    let labels = selectors.pop().unwrap();
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
                )
                .to_string();
                let keep = write_response(stream, 410, &body, close);
                shared.lock().requests[index].answered = Some(Instant::now());
                return keep;
            }
        },
        None => Page {
            resource,
            items: st
                .of(resource)
                .filter(|((_, ns, _), text)| filter.matches(ns, text))
                .map(|(_, text)| text.clone())
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
    let items: Vec<std::sync::Arc<str>> = page.items[page.next..end].to_vec();
    page.next = end;
    let last = end == page.items.len();
    let mut metadata = format!(r#"{{"resourceVersion":"{}""#, page.rv);
    if !last {
        st.next_id += 1;
        let token = format!("c{}-{}", st.next_id, page.rv);
        metadata.push_str(&format!(
            r#","continue":"{token}","remainingItemCount":{}"#,
            page.items.len() - end
        ));
        st.pages.insert(token, page);
    }
    metadata.push('}');
    if first {
        *st.lists_ok.entry(resource).or_insert(0) += 1;
    }
    st.requests[index].status = 200;
    st.requests[index].last_page = last;
    drop(st);
    let mut body = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + metadata.len() + 100);
    body.push_str(&format!(
        r#"{{"kind":"{}List","apiVersion":"{}","metadata":{metadata},"items":["#,
        resource.kind(),
        resource.api_version()
    ));
    for (k, item) in items.iter().enumerate() {
        if k > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push_str("]}");
    let keep = write_response(stream, 200, &body, close);
    shared.lock().requests[index].answered = Some(Instant::now());
    keep
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
            let body = status_object(400, "BadRequest", "invalid resource version").to_string();
            write_response(stream, 400, &body, true);
            return;
        }
    };
    let expired = from.is_some_and(|v| v < st.floor);
    if expired && st.config.expired_as == ExpiredAs::Http410 {
        st.requests[index].status = 410;
        drop(st);
        write_response(stream, 410, &expired_status().to_string(), true);
        return;
    }
    if expired {
        watcher.close = Some(Close::Expire);
    } else {
        match from {
            // No version: synthetic ADDED events for what exists, then changes.
            None => {
                let rv = st.rv;
                let lines: Vec<(u64, String)> = st
                    .of(resource)
                    .filter(|((_, ns, _), text)| watcher.matches(ns, text))
                    .map(|(_, text)| (rv, super::event_line("ADDED", text)))
                    .collect();
                watcher.queue.extend(lines);
            }
            Some(v) => {
                for ev in st.history.iter().filter(|e| e.resource == resource && e.rv > v) {
                    if let Some(line) = watcher.view(ev) {
                        watcher.queue.push_back((ev.rv, line));
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
    let wrote_head = stream.write_all(head.as_bytes()).is_ok();
    let mut st = shared.lock();
    st.requests[index].answered = Some(Instant::now());
    if !wrote_head {
        st.watchers.remove(&id);
        return;
    }
    loop {
        if st.stopped {
            st.watchers.remove(&id);
            return;
        }
        let stalled = st.fault == Fault::Stall;
        let mut out: Vec<u8> = Vec::new();
        let mut versions: Vec<u64> = Vec::new();
        let mut finish: Option<Close> = None;
        let now = Instant::now();
        if !stalled {
            let rv = st.rv;
            let interval = st.config.bookmark_interval;
            let gen_now = st.bookmark_gen;
            let w = st.watchers.get_mut(&id).expect("registered watcher");
            while let Some((v, line)) = w.queue.pop_front() {
                out.extend(chunk(&line));
                versions.push(v);
            }
            finish = w.close;
            if finish.is_none() && bookmarks && (now >= next_bookmark || gen_now != bookmark_gen) {
                let line = format!(
                    r#"{{"type":"BOOKMARK","object":{{"kind":"{}","apiVersion":"{}","metadata":{{"resourceVersion":"{rv}"}}}}}}"#,
                    resource.kind(),
                    resource.api_version()
                );
                out.extend(chunk(&line));
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
                    out.extend(chunk(&super::event_line("ERROR", &expired_status().to_string())));
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                Some(Close::Reset) | None => {}
            }
            let ok = out.is_empty() || stream.write_all(&out).is_ok();
            let wrote = Instant::now();
            if ok && !versions.is_empty() {
                let mut st = shared.lock();
                for v in versions {
                    st.written.push_back((resource, v, wrote));
                }
                while st.written.len() > WRITTEN_KEPT {
                    st.written.pop_front();
                }
                drop(st);
                shared.cond.notify_all();
            }
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
        st = shared.wait(st, wait);
    }
}

/// The abusive side uses these as they are.
pub(super) fn abused_resource(path: &str) -> (&'static str, &'static str) {
    route(path).map_or(("Namespace", "v1"), |(r, _)| (r.kind(), r.api_version()))
}

pub(super) fn count_abuse(shared: &Shared) -> u64 {
    shared.abusive.fetch_add(1, Ordering::Relaxed)
}
