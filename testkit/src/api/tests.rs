//! The fake's own tests, with a plain TcpStream client (and ureq, the plugin's client).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::objects::{namespace, pod, service, with_labels};

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
            "{}/../tests/data/kubernetes/worlds/{name}.json",
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

/// A bulk world is served as rendered, in key order, and pages report when they
/// completed; a change rendered by the caller reaches a live stream, and the fake says
/// when it was written.
#[test]
fn a_bulk_world_lists_in_key_order_and_tells_when_lists_complete_and_events_are_written() {
    let raw = |r: Resource, ns: &str, name: &str, rv: u64| RawObject {
        resource: r,
        namespace: ns.into(),
        name: name.into(),
        rv,
        json: format!(r#"{{"metadata":{{"name":"{name}","namespace":"{ns}","resourceVersion":"{rv}"}}}}"#),
    };
    let mut objects = vec![
        raw(Resource::Namespaces, "", "b", 5),
        raw(Resource::Namespaces, "", "a", 6),
    ];
    for i in (0..7).rev() {
        objects.push(raw(Resource::Services, "b", &format!("s{i}"), 10 + i));
    }
    objects.push(raw(Resource::Services, "a", "z", 40));
    let api = FakeApi::bulk(Config::long_watches(), objects);
    assert_eq!(api.rv(), 40);
    let mut c = Client::connect(&api);
    let (_, p1) = c.get("/api/v1/services?limit=4");
    assert_eq!(names(&p1), ["z", "s0", "s1", "s2"], "namespace, then name");
    assert_eq!(p1["metadata"]["resourceVersion"], "40");
    assert!(api.lists_completed(Resource::Services).is_empty());
    let t = p1["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, p2) = c.get(&format!("/api/v1/services?limit=4&continue={t}"));
    assert_eq!(names(&p2), ["s3", "s4", "s5", "s6"]);
    // The time is taken when the write returns, which may be just after this client
    // has read the page: wait for it (briefly).
    let until = Instant::now() + Duration::from_secs(2);
    let mut done = api.lists_completed(Resource::Services);
    while done.is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
        done = api.lists_completed(Resource::Services);
    }
    assert_eq!(done.len(), 1);
    assert_eq!(api.lists_started(Resource::Services).len(), 1);
    assert!(api.lists_started(Resource::Services)[0] <= done[0]);

    let mut w = Client::connect(&api);
    w.send("/api/v1/services?watch=1&resourceVersion=40&allowWatchBookmarks=true");
    assert_eq!(w.head().unwrap().status, 200);
    assert_eq!(api.watches_started(Resource::Services).len(), 1);
    let rv = api.put_rendered(true, Resource::Services, "a", "new", |rv| {
        format!(r#"{{"kind":"Service","metadata":{{"name":"new","namespace":"a","resourceVersion":"{rv}"}}}}"#)
    });
    assert_eq!(rv, 41);
    let at = api
        .written(Resource::Services, rv, Duration::from_secs(2))
        .expect("written");
    let ev = w.next_event(Duration::from_secs(2)).unwrap();
    assert!(at.elapsed() < Duration::from_secs(2));
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["metadata"]["resourceVersion"], "41");
    let rv = api.put_rendered(false, Resource::Services, "a", "new", |rv| {
        format!(r#"{{"kind":"Service","metadata":{{"name":"new","namespace":"a","resourceVersion":"{rv}"}}}}"#)
    });
    assert!(api.written(Resource::Services, rv, Duration::from_secs(2)).is_some());
    assert_eq!(w.next_event(Duration::from_secs(2)).unwrap()["type"], "MODIFIED");
    assert!(
        api.written(Resource::Namespaces, rv, Duration::from_millis(100))
            .is_none()
    );
    // A new world, then a 410 on the stream: a new list sees only the new world.
    api.replace_all(vec![raw(Resource::Services, "c", "only", 100)]);
    api.expire_watches();
    let ev = w.next_event(Duration::from_secs(2)).unwrap();
    assert_eq!(
        (ev["type"].as_str(), ev["object"]["code"].as_u64()),
        (Some("ERROR"), Some(410))
    );
    let (_, all) = get(&api, "/api/v1/services");
    assert_eq!(names(&all), ["only"]);
    assert!(
        all["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 100
    );
}

/// Each abusive behaviour answers as it says, cuts what was open when it was switched
/// on, and counts what it sent; switching back serves the protocol again.
#[test]
fn abusive_behaviours_answer_badly_and_heal() {
    let api = small_world();
    // A live watch is cut when the behaviour changes.
    let mut w = Client::connect(&api);
    w.send(&format!("/api/v1/services?watch=1&resourceVersion={}", api.rv()));
    assert_eq!(w.head().unwrap().status, 200);
    api.abuse(Abuse::Malformed);
    assert!(w.next_chunk(Duration::from_secs(2)).is_none(), "cut");
    // Malformed: lists are broken JSON, a mistyped list, HTML (in turn).
    let body = |target: &str| {
        let mut s = TcpStream::connect(api.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let lists: Vec<String> = (0..3).map(|_| body("/api/v1/services")).collect();
    assert!(lists.iter().all(|l| l.starts_with("HTTP/1.1 200 OK")), "{lists:?}");
    assert!(lists[0].ends_with(r#"{"metadata":{"name":"x""#), "{}", lists[0]);
    assert!(lists[1].contains(r#""metadata":"nope""#), "{}", lists[1]);
    assert!(lists[2].contains("502 Bad Gateway"), "{}", lists[2]);
    // Watches, by the response's number: garbage lines then the end (3 and 4), a 410
    // event (5), broken chunking (6).
    let watches: Vec<String> = (0..4).map(|_| body("/api/v1/services?watch=1")).collect();
    assert!(watches[0].contains("not json at all") && watches[0].ends_with("0\r\n\r\n"));
    assert!(watches[1].contains("not json at all"));
    assert!(watches[2].contains(r#""code":410"#), "{}", watches[2]);
    assert!(watches[3].contains("zz\r\n"), "{}", watches[3]);
    let (n, bytes, _) = api.abuse_counts();
    assert_eq!(n, 7);
    assert!(bytes > 0);
    // Endless lists stream objects until the behaviour changes.
    api.abuse(Abuse::EndlessList);
    let mut s = TcpStream::connect(api.addr()).unwrap();
    write!(s, "GET /api/v1/services HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 1 << 20];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = 0;
    while got < 4 << 20 {
        got += s.read(&mut buf).unwrap();
    }
    assert!(api.abuse_counts().2 >= 64);
    api.abuse(Abuse::None);
    let t = Instant::now();
    while s.read(&mut buf).is_ok_and(|n| n > 0) {
        assert!(t.elapsed() < Duration::from_secs(5), "the endless list did not stop");
    }
    // Healed: the protocol again.
    let (code, list) = get(&api, "/api/v1/services");
    assert_eq!(code, 200);
    assert_eq!(names(&list).len(), 6);
}

/// The next watch of the armed resource gets the injected chunks; others are served.
#[test]
fn an_injected_stream_replaces_the_next_watch_of_its_resource() {
    let api = small_world();
    api.inject_next_watch(
        Resource::EndpointSlices,
        Box::new(|out| chunk(out, b"{\"type\":\"ADDED\",\"object\":{\"injected\":true}}\n")),
    );
    let mut c = Client::connect(&api);
    c.send("/api/v1/services?watch=1&timeoutSeconds=1");
    assert_eq!(c.head().unwrap().status, 200);
    assert!(!api.injected());
    let mut c = Client::connect(&api);
    c.send("/apis/discovery.k8s.io/v1/endpointslices?watch=1");
    assert_eq!(c.head().unwrap().status, 200);
    let ev = c.next_event(Duration::from_secs(2)).unwrap();
    assert_eq!(ev["object"]["injected"], true);
    assert!(c.next_chunk(Duration::from_secs(2)).is_none(), "then the end");
    assert!(api.injected());
    // Only once.
    let mut c = Client::connect(&api);
    c.send(&format!(
        "/apis/discovery.k8s.io/v1/endpointslices?watch=1&resourceVersion={}",
        api.rv()
    ));
    assert_eq!(c.head().unwrap().status, 200);
    assert!(c.next_event(Duration::from_millis(200)).is_none());
}
