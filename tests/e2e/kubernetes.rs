//! The kubernetes plugin's watch path and lifecycle, end to end: the real binary
//! against the test kit's fake API, which speaks the real list/watch protocol.
//!
//! Besides the CoreDNS options, these tests use three clusterdns tuning options of the
//! kubernetes block to keep timings short: `watch_timeout DURATION` (the server-side
//! `timeoutSeconds` base), `idle_timeout DURATION` (a stream silent for longer is dead)
//! and `backoff INITIAL MAX` (retry backoff).

use std::time::{Duration, Instant};

use domain::base::iana::{Rcode, Rtype};
use serde_json::{Value, json};

use testkit::objects::{kubectl_dump, set_cluster_ip};
use testkit::prelude::*;
use testkit::process::closed_port;
use testkit::wire::addresses;

const ZONES: &str = "cluster.local in-addr.arpa ip6.arpa";
/// Fast retries, so outages and 410s heal within a test's patience.
const FAST: &str = "backoff 50ms 500ms";
/// The resources every configuration watches (pods only with `pods verified`).
const WATCHED: [Resource; 3] = [Resource::Namespaces, Resource::Services, Resource::EndpointSlices];

fn corefile(endpoints: &str, options: &[&str]) -> String {
    let mut s = format!(".:{{port}} {{\n    bind 127.0.0.1\n    kubernetes {ZONES} {{\n        endpoint {endpoints}\n");
    for o in options {
        s.push_str(&format!("        {o}\n"));
    }
    s.push_str("    }\n}\n");
    s
}

fn start(api: &FakeApi, options: &[&str]) -> Server {
    Server::start(&corefile(&api.url(), options))
}

const ANCHOR: &str = "kubernetes.default.svc.cluster.local.";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Want {
    /// NOERROR with exactly these addresses (A and AAAA, in any order).
    Addrs(Vec<String>),
    NxDomain,
    /// NOERROR, empty answer.
    NoData,
}

fn addrs(list: &[&str]) -> Want {
    Want::Addrs(list.iter().map(|s| s.to_string()).collect())
}

/// The rcode and the sorted address data of an A (or AAAA) query.
fn look(s: &Server, name: &str, qtype: Rtype) -> (Rcode, Vec<String>) {
    let r = s.query(name, qtype);
    (rcode(&r), addresses(&r))
}

fn matches(got: &(Rcode, Vec<String>), want: &Want) -> bool {
    match want {
        Want::Addrs(w) => {
            let mut w = w.clone();
            w.sort();
            got.0 == Rcode::NOERROR && got.1 == w
        }
        Want::NxDomain => got.0 == Rcode::NXDOMAIN,
        Want::NoData => got.0 == Rcode::NOERROR && got.1.is_empty(),
    }
}

fn qtype_for(want: &Want) -> Rtype {
    match want {
        Want::Addrs(w) if w.first().is_some_and(|a| a.contains(':')) => Rtype::AAAA,
        _ => Rtype::A,
    }
}

/// Polls until `name` answers as wanted; returns how long that took. Panics with the
/// server's output and the API's request log after `timeout`.
fn wait_answer(s: &Server, api: &FakeApi, name: &str, want: Want, timeout: Duration) -> Duration {
    let t = Instant::now();
    let qtype = qtype_for(&want);
    let mut last = (Rcode::NOERROR, Vec::new());
    while t.elapsed() < timeout {
        last = look(s, name, qtype);
        if matches(&last, &want) {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!(
        "{name}: wanted {want:?} within {timeout:?}, last got {last:?}\n--- server output:\n{}\n--- API requests:\n{}",
        s.output(),
        api.request_log()
    );
}

/// Waits for the first sync (the anchor service resolves).
fn synced(s: &Server, api: &FakeApi) {
    wait_answer(s, api, ANCHOR, addrs(&["10.96.0.1"]), Duration::from_secs(10));
}

/// Asserts `name` keeps answering as wanted for `span`.
fn steady(s: &Server, name: &str, want: &Want, span: Duration) {
    let t = Instant::now();
    while t.elapsed() < span {
        let got = look(s, name, qtype_for(want));
        assert!(
            matches(&got, want),
            "{name}: wanted {want:?} throughout, got {got:?} after {:?}\n{}",
            t.elapsed(),
            s.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn counts(api: &FakeApi, f: impl Fn(&FakeApi, Resource) -> usize) -> Vec<usize> {
    WATCHED.iter().map(|r| f(api, *r)).collect()
}

fn rv_param(query: &str) -> Option<u64> {
    param(query, "resourceVersion").and_then(|v| v.parse().ok())
}

/// What the plugin logs, once per resource, when the API becomes unreachable and when
/// it is back (`[WARNING] plugin/kubernetes: API unreachable for services: ...`).
const UNREACHABLE: &str = "API unreachable";
const REACHABLE_AGAIN: &str = "API reachable again";

// ------------------------------------------------------------------------------------

#[test]
fn a_service_added_modified_and_deleted_is_followed_through_the_watch() {
    let api = FakeApi::with_objects(base_cluster());
    let s = start(&api, &[FAST]);
    synced(&s, &api);
    let name = "api.team-a.svc.cluster.local.";
    assert_eq!(look(&s, name, Rtype::A).0, Rcode::NXDOMAIN);

    api.add(service("team-a", "api", "10.96.2.2", &[("http", 80, "TCP")]));
    let latency = wait_answer(&s, &api, name, addrs(&["10.96.2.2"]), Duration::from_secs(5));
    println!("change-to-answer latency (add, polled every 5 ms): {latency:?}");
    assert!(latency < Duration::from_secs(2), "add took {latency:?}");

    api.update("Service", "team-a", "api", |svc| set_cluster_ip(svc, "10.96.2.3"));
    let latency = wait_answer(&s, &api, name, addrs(&["10.96.2.3"]), Duration::from_secs(5));
    println!("change-to-answer latency (modify): {latency:?}");
    assert!(latency < Duration::from_secs(2));

    api.delete("Service", "team-a", "api");
    let latency = wait_answer(&s, &api, name, Want::NxDomain, Duration::from_secs(5));
    println!("change-to-answer latency (delete): {latency:?}");
    assert!(latency < Duration::from_secs(2));

    // All of that came through the watch: one list per resource, no more.
    assert_eq!(counts(&api, FakeApi::lists), [1, 1, 1], "{}", api.request_log());
    // The client asked for what the architecture says: paged lists, bookmarks, a timeout.
    for r in WATCHED {
        let list = api.last_list_query(r).expect("listed");
        assert!(param(&list, "limit").is_some(), "{r:?} list without limit: {list}");
        let watch = api.last_watch_query(r).expect("watched");
        assert_eq!(param(&watch, "allowWatchBookmarks").as_deref(), Some("true"), "{watch}");
        assert!(param(&watch, "timeoutSeconds").is_some(), "{watch}");
        assert!(rv_param(&watch).is_some(), "{watch}");
    }
    assert!(
        api.last_query(Resource::Pods).is_none(),
        "pods are not read without `pods verified`"
    );
}

#[test]
fn headless_answers_follow_endpoint_readiness() {
    let api = FakeApi::with_objects(base_cluster());
    let s = start(&api, &[FAST]);
    synced(&s, &api);
    let name = "db.team-a.svc.cluster.local.";
    api.add(headless("team-a", "db"));
    // A headless service without ready endpoints is NXDOMAIN.
    wait_until("headless service known", Duration::from_secs(5), || {
        look(&s, "_http._tcp.db.team-a.svc.cluster.local.", Rtype::SRV).0 != Rcode::SERVFAIL
    });
    assert_eq!(look(&s, name, Rtype::A).0, Rcode::NXDOMAIN);

    api.add(slice("team-a", "db-x1", "db", &["10.244.1.1", "10.244.1.2"]));
    wait_answer(
        &s,
        &api,
        name,
        addrs(&["10.244.1.1", "10.244.1.2"]),
        Duration::from_secs(5),
    );
    wait_answer(
        &s,
        &api,
        "10-244-1-2.db.team-a.svc.cluster.local.",
        addrs(&["10.244.1.2"]),
        Duration::from_secs(2),
    );

    api.update("EndpointSlice", "team-a", "db-x1", |sl| {
        set_ready(sl, "10.244.1.2", false)
    });
    wait_answer(&s, &api, name, addrs(&["10.244.1.1"]), Duration::from_secs(5));
    assert_eq!(
        look(&s, "10-244-1-2.db.team-a.svc.cluster.local.", Rtype::A).0,
        Rcode::NXDOMAIN
    );

    // A second slice adds to the first.
    api.add(slice("team-a", "db-x2", "db", &["fd00::1:5"]));
    wait_answer(&s, &api, name, addrs(&["fd00::1:5"]), Duration::from_secs(5));
    assert_eq!(look(&s, name, Rtype::A).1, ["10.244.1.1"]);

    api.delete("EndpointSlice", "team-a", "db-x1");
    api.delete("EndpointSlice", "team-a", "db-x2");
    wait_answer(&s, &api, name, Want::NxDomain, Duration::from_secs(5));
}

#[test]
fn a_deleted_namespace_hides_its_services_until_it_returns() {
    let api = FakeApi::with_objects(base_cluster());
    let s = start(&api, &[FAST]);
    synced(&s, &api);
    let web = "web.team-a.svc.cluster.local.";
    wait_answer(&s, &api, web, addrs(&["10.96.1.1"]), Duration::from_secs(2));
    api.delete("Namespace", "", "team-a");
    wait_answer(&s, &api, web, Want::NxDomain, Duration::from_secs(5));
    assert_eq!(look(&s, "team-a.svc.cluster.local.", Rtype::A).0, Rcode::NXDOMAIN);
    api.add(namespace("team-a"));
    wait_answer(&s, &api, web, addrs(&["10.96.1.1"]), Duration::from_secs(5));
    wait_answer(
        &s,
        &api,
        "team-a.svc.cluster.local.",
        Want::NoData,
        Duration::from_secs(2),
    );
}

#[test]
fn a_closed_watch_is_resumed_from_the_last_version_without_a_relist() {
    let api = FakeApi::with_objects(base_cluster());
    let s = start(&api, &[FAST]);
    synced(&s, &api);
    wait_until("every resource watched", Duration::from_secs(5), || {
        WATCHED.iter().all(|r| api.live_watches(*r) == 1)
    });
    let lists = counts(&api, FakeApi::lists);
    assert_eq!(lists, [1, 1, 1]);

    for round in 0..2 {
        let watches = counts(&api, FakeApi::watches);
        let rv = api.rv();
        if round == 0 {
            api.close_watches(); // a clean end of the stream, as at timeoutSeconds
        } else {
            api.reset_watches(); // the connection cut mid-stream
        }
        // A change made while the client is between two watches reaches it through the
        // re-watch (replayed from the history).
        let name = format!("late{round}.team-a.svc.cluster.local.");
        let ip = format!("10.96.3.{}", round + 1);
        api.add(service("team-a", &format!("late{round}"), &ip, &[]));
        wait_until("every resource watched again", Duration::from_secs(5), || {
            WATCHED
                .iter()
                .zip(&watches)
                .all(|(r, w)| api.watches(*r) > *w && api.live_watches(*r) == 1)
        });
        for r in WATCHED {
            let q = api.last_watch_query(r).unwrap();
            let from = rv_param(&q).unwrap_or_else(|| panic!("{r:?} re-watch without a version: {q}"));
            assert!(
                from >= 1000 && from <= rv + 1,
                "{r:?} re-watch from {from}, last known {rv}: {q}"
            );
        }
        wait_answer(&s, &api, &name, addrs(&[&ip]), Duration::from_secs(5));
    }
    assert_eq!(counts(&api, FakeApi::lists), lists, "no relist:\n{}", api.request_log());
    assert_eq!(counts(&api, FakeApi::list_attempts), [1, 1, 1]);
}

fn expired_watch_relists_once(how: ExpiredAs) {
    let api = FakeApi::with_objects(base_cluster());
    api.set_expired_as(how);
    let s = start(&api, &[FAST]);
    synced(&s, &api);
    wait_until("every resource watched", Duration::from_secs(5), || {
        WATCHED.iter().all(|r| api.live_watches(*r) == 1)
    });
    let before = counts(&api, FakeApi::lists);

    // 1. History compacted: with ERROR events, the live streams are told at once; with
    //    HTTP 410, they are closed and the re-watch is refused. Either way each
    //    resource lists again, once.
    match how {
        ExpiredAs::ErrorEvent => {
            api.expire_watches();
        }
        ExpiredAs::Http410 => api.compact_and_close(),
    }
    let want: Vec<usize> = before.iter().map(|n| n + 1).collect();
    wait_until("one relist per resource", Duration::from_secs(5), || {
        counts(&api, FakeApi::lists) == want
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        counts(&api, FakeApi::lists),
        want,
        "exactly one relist per resource:\n{}",
        api.request_log()
    );
    api.add(service("team-a", "after", "10.96.4.1", &[]));
    wait_answer(
        &s,
        &api,
        "after.team-a.svc.cluster.local.",
        addrs(&["10.96.4.1"]),
        Duration::from_secs(5),
    );

    // 2. A deletion the watch never saw: the API goes away, the service is deleted and
    //    the history compacted; when the API returns, the relist drops the service.
    api.set_fault(Fault::Unavailable);
    api.close_watches();
    wait_until("the streams closed", Duration::from_secs(2), || {
        WATCHED.iter().all(|r| api.live_watches(*r) == 0)
    });
    api.delete("Service", "team-a", "web");
    api.update("Service", "team-a", "after", |svc| set_cluster_ip(svc, "10.96.4.2"));
    api.compact();
    api.set_fault(Fault::None);
    wait_answer(
        &s,
        &api,
        "web.team-a.svc.cluster.local.",
        Want::NxDomain,
        Duration::from_secs(5),
    );
    wait_answer(
        &s,
        &api,
        "after.team-a.svc.cluster.local.",
        addrs(&["10.96.4.2"]),
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_secs(1));
    let want: Vec<usize> = before.iter().map(|n| n + 2).collect();
    assert_eq!(counts(&api, FakeApi::lists), want, "{}", api.request_log());
    synced(&s, &api);
}

#[test]
fn an_expired_watch_error_event_relists_once_per_resource() {
    expired_watch_relists_once(ExpiredAs::ErrorEvent);
}

#[test]
fn an_expired_watch_http_410_relists_once_per_resource() {
    expired_watch_relists_once(ExpiredAs::Http410);
}

#[test]
fn a_bookmark_moves_the_point_a_watch_resumes_from() {
    let api = FakeApi::with_config(
        Config {
            bookmark_interval: Duration::from_secs(3600),
            ..Config::default()
        },
        base_cluster(),
    );
    let s = start(&api, &[FAST]);
    synced(&s, &api);
    api.add(service("team-a", "b1", "10.96.5.1", &[]));
    wait_answer(
        &s,
        &api,
        "b1.team-a.svc.cluster.local.",
        addrs(&["10.96.5.1"]),
        Duration::from_secs(5),
    );
    let service_rv = api.rv();
    // Changes to namespaces move the global version past the services' last event.
    api.add(namespace("bm-1"));
    api.add(namespace("bm-2"));
    wait_answer(
        &s,
        &api,
        "bm-2.svc.cluster.local.",
        Want::NoData,
        Duration::from_secs(5),
    );
    let rv = api.rv();
    assert!(rv > service_rv);
    api.send_bookmarks();
    wait_until("bookmarks sent", Duration::from_secs(2), || {
        api.last_bookmark(Resource::Services) == Some(rv) && api.last_bookmark(Resource::EndpointSlices) == Some(rv)
    });
    std::thread::sleep(Duration::from_millis(300)); // let the client read them
    let watches = (api.watches(Resource::Services), api.watches(Resource::EndpointSlices));
    api.close_watches();
    wait_until("services and slices re-watched", Duration::from_secs(5), || {
        api.watches(Resource::Services) > watches.0 && api.watches(Resource::EndpointSlices) > watches.1
    });
    for r in [Resource::Services, Resource::EndpointSlices] {
        let q = api.last_watch_query(r).unwrap();
        assert_eq!(rv_param(&q), Some(rv), "{r:?} resumes from the bookmark's version: {q}");
    }
    assert_eq!(counts(&api, FakeApi::lists), [1, 1, 1]);
}

#[test]
fn an_api_outage_keeps_the_last_data_serving_and_heals_without_restart() {
    let api = FakeApi::with_objects(base_cluster());
    let s = start(&api, &[FAST]);
    synced(&s, &api);
    let web = "web.team-a.svc.cluster.local.";
    wait_answer(&s, &api, web, addrs(&["10.96.1.1"]), Duration::from_secs(2));
    wait_until("every resource watched", Duration::from_secs(5), || {
        WATCHED.iter().all(|r| api.live_watches(*r) == 1)
    });
    let lists = counts(&api, FakeApi::lists);

    api.set_fault(Fault::Unavailable);
    api.close_watches();
    wait_until("the streams closed", Duration::from_secs(2), || {
        WATCHED.iter().all(|r| api.live_watches(*r) == 0)
    });
    // Changes while the API is away (the fake keeps them in its history).
    api.add(service("team-a", "during", "10.96.6.1", &[]));
    api.update("Service", "team-a", "web", |svc| set_cluster_ip(svc, "10.96.1.2"));
    steady(&s, web, &addrs(&["10.96.1.1"]), Duration::from_secs(3));
    steady(&s, ANCHOR, &addrs(&["10.96.0.1"]), Duration::from_millis(300));
    let attempts = counts(&api, |a, r| a.watch_attempts(r) + a.list_attempts(r));
    assert!(
        attempts.iter().all(|n| *n >= 2),
        "the client kept retrying: {attempts:?}\n{}",
        api.request_log()
    );
    assert_eq!(
        s.count_lines(UNREACHABLE),
        WATCHED.len(),
        "the outage is logged once per resource, not per retry:\n{}",
        s.output()
    );

    api.set_fault(Fault::None);
    wait_answer(&s, &api, web, addrs(&["10.96.1.2"]), Duration::from_secs(5));
    wait_answer(
        &s,
        &api,
        "during.team-a.svc.cluster.local.",
        addrs(&["10.96.6.1"]),
        Duration::from_secs(5),
    );
    assert!(
        s.wait_output(Duration::from_secs(3), |o| {
            o.lines().filter(|l| l.contains(REACHABLE_AGAIN)).count() >= WATCHED.len()
        }),
        "{}",
        s.output()
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(s.count_lines(REACHABLE_AGAIN), WATCHED.len(), "{}", s.output());
    assert_eq!(s.count_lines(UNREACHABLE), WATCHED.len(), "{}", s.output());
    let after = counts(&api, FakeApi::lists);
    for ((r, a), b) in WATCHED.iter().zip(&after).zip(&lists) {
        assert!(
            a - b <= 1,
            "{r:?}: {b} lists before the outage, {a} after:\n{}",
            api.request_log()
        );
    }
}

#[test]
fn server_errors_are_retried_with_backoff_not_in_a_loop() {
    let api = FakeApi::with_objects(base_cluster());
    let s = start(&api, &["backoff 100ms 400ms"]);
    synced(&s, &api);
    let before = counts(&api, |a, r| a.watch_attempts(r) + a.list_attempts(r));
    let lists = counts(&api, FakeApi::lists);
    api.set_fault(Fault::Status500);
    api.close_watches();
    std::thread::sleep(Duration::from_secs(2));
    let during = counts(&api, |a, r| a.watch_attempts(r) + a.list_attempts(r));
    for ((r, d), b) in WATCHED.iter().zip(&during).zip(&before) {
        let n = d - b;
        // 2 s of backoff between 100 ms and 400 ms (with jitter): a handful of tries.
        assert!(
            (2..=25).contains(&n),
            "{r:?}: {n} requests in 2 s of 500s\n{}",
            api.request_log()
        );
    }
    api.add(service("team-a", "healed", "10.96.7.1", &[]));
    api.set_fault(Fault::None);
    wait_answer(
        &s,
        &api,
        "healed.team-a.svc.cluster.local.",
        addrs(&["10.96.7.1"]),
        Duration::from_secs(5),
    );
    let after = counts(&api, FakeApi::lists);
    for (a, b) in after.iter().zip(&lists) {
        assert!(a - b <= 1, "{}", api.request_log());
    }
}

#[test]
fn a_silent_stream_is_declared_dead_after_the_idle_timeout() {
    let api = FakeApi::with_config(
        Config {
            bookmark_interval: Duration::from_millis(200),
            ..Config::default()
        },
        base_cluster(),
    );
    let s = start(&api, &[FAST, "idle_timeout 1s"]);
    synced(&s, &api);
    wait_until("every resource watched", Duration::from_secs(5), || {
        WATCHED.iter().all(|r| api.live_watches(*r) == 1)
    });
    // Healthy streams (bookmarks every 200 ms) are kept.
    let watches = counts(&api, FakeApi::watch_attempts);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(counts(&api, FakeApi::watch_attempts), watches, "{}", api.request_log());
    // The API goes silent with the TCP connections open.
    api.set_fault(Fault::Stall);
    let t = Instant::now();
    wait_until("a new watch after the idle timeout", Duration::from_secs(4), || {
        counts(&api, FakeApi::watch_attempts)
            .iter()
            .zip(&watches)
            .all(|(a, b)| a > b)
    });
    println!("dead stream detected after {:?}", t.elapsed());
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "not before the idle timeout: {:?}",
        t.elapsed()
    );
    steady(&s, ANCHOR, &addrs(&["10.96.0.1"]), Duration::from_millis(300));
    api.set_fault(Fault::None);
    api.add(service("team-a", "woke", "10.96.8.1", &[]));
    wait_answer(
        &s,
        &api,
        "woke.team-a.svc.cluster.local.",
        addrs(&["10.96.8.1"]),
        Duration::from_secs(5),
    );
    assert_eq!(counts(&api, FakeApi::lists), [1, 1, 1], "{}", api.request_log());
}

#[test]
fn an_unsynced_start_answers_servfail_with_the_soa_then_resolves() {
    let api = FakeApi::with_objects(base_cluster());
    api.set_fault(Fault::Unavailable);
    let t = Instant::now();
    let s = Launch::new(&corefile(&api.url(), &[FAST, "startup_timeout 1s"]))
        .no_wait()
        .start();
    s.wait_answering(".");
    let answering = t.elapsed();
    println!("answering {answering:?} after start with the API down");
    assert!(answering < Duration::from_secs(4), "{answering:?}");
    for name in [
        ANCHOR,
        "nothere.default.svc.cluster.local.",
        "web.team-a.svc.cluster.local.",
    ] {
        for _ in 0..10 {
            let r = s.query(name, Rtype::A);
            assert_eq!(
                rcode(&r),
                Rcode::SERVFAIL,
                "{name}: never NXDOMAIN before the first sync"
            );
            assert!(r.header().aa(), "{name}: AA");
            assert!(section(&r, "answer").is_empty());
            let soa = section(&r, "authority");
            assert_eq!(soa.len(), 1, "{soa:?}");
            assert!(
                soa[0].starts_with("cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. "),
                "{soa:?}"
            );
        }
    }
    // dns-version needs no API data.
    let r = s.query("dns-version.cluster.local.", Rtype::TXT);
    assert_eq!(
        section(&r, "answer"),
        ["dns-version.cluster.local. 28800 IN TXT \"1.1.0\""]
    );
    api.set_fault(Fault::None);
    synced(&s, &api);
    wait_answer(
        &s,
        &api,
        "nothere.default.svc.cluster.local.",
        Want::NxDomain,
        Duration::from_secs(2),
    );
}

#[test]
fn a_large_list_is_read_in_pages() {
    let mut objects = vec![namespace("default"), namespace("bulk")];
    objects.push(service("default", "kubernetes", "10.96.0.1", &[("https", 443, "TCP")]));
    let ip = |i: usize| format!("10.100.{}.{}", i / 200, i % 200 + 1);
    for i in 0..1200 {
        objects.push(service("bulk", &format!("svc-{i}"), &ip(i), &[("http", 80, "TCP")]));
    }
    let api = FakeApi::with_objects(objects);
    let s = start(&api, &[FAST]);
    synced(&s, &api);
    for i in 0..1200 {
        let name = format!("svc-{i}.bulk.svc.cluster.local.");
        let got = look(&s, &name, Rtype::A);
        assert_eq!(got, (Rcode::NOERROR, vec![ip(i)]), "{name}");
    }
    let queries = api.queries(Resource::Services);
    let limited: Vec<&String> = queries.iter().filter(|q| param(q, "limit").is_some()).collect();
    assert!(!limited.is_empty(), "{queries:?}");
    let limit: usize = param(limited[0], "limit").unwrap().parse().unwrap();
    assert!(limit > 0 && limit < 1201, "limit={limit}");
    let continued = queries.iter().filter(|q| param(q, "continue").is_some()).count();
    assert_eq!(continued, 1201usize.div_ceil(limit) - 1, "{queries:#?}");
    assert_eq!(api.lists(Resource::Services), 1);
}

#[test]
fn label_selectors_are_sent_to_the_api_and_applied() {
    let objects = vec![
        with_labels(namespace("default"), &[("team", "a")]),
        with_labels(namespace("team-b"), &[("team", "b")]),
        with_labels(
            service("default", "kubernetes", "10.96.0.1", &[("https", 443, "TCP")]),
            &[("app", "web")],
        ),
        with_labels(service("default", "other", "10.96.0.2", &[]), &[("app", "other")]),
        with_labels(service("team-b", "web", "10.96.0.3", &[]), &[("app", "web")]),
        with_labels(headless("default", "hl"), &[("app", "web")]),
        with_labels(
            slice("default", "hl-1", "hl", &["10.244.0.5"]),
            &[("app", "web"), ("kubernetes.io/service-name", "hl")],
        ),
        headless("default", "hl2"),
        slice("default", "hl2-1", "hl2", &["10.244.0.6"]),
    ];
    let api = FakeApi::with_objects(objects);
    let s = start(&api, &[FAST, "labels app=web", "namespace_labels team=a"]);
    synced(&s, &api);
    let sel = |r: Resource| param(&api.last_list_query(r).unwrap(), "labelSelector").map(|v| v.replace(' ', ""));
    assert_eq!(sel(Resource::Services).as_deref(), Some("app=web"));
    assert_eq!(sel(Resource::EndpointSlices).as_deref(), Some("app=web"));
    assert_eq!(sel(Resource::Namespaces).as_deref(), Some("team=a"));
    let wsel = |r: Resource| param(&api.last_watch_query(r).unwrap(), "labelSelector").map(|v| v.replace(' ', ""));
    wait_until("watching", Duration::from_secs(5), || {
        api.last_watch_query(Resource::Services).is_some()
    });
    assert_eq!(wsel(Resource::Services).as_deref(), Some("app=web"));

    wait_answer(
        &s,
        &api,
        "hl.default.svc.cluster.local.",
        addrs(&["10.244.0.5"]),
        Duration::from_secs(2),
    );
    assert_eq!(
        look(&s, "other.default.svc.cluster.local.", Rtype::A).0,
        Rcode::NXDOMAIN
    );
    assert_eq!(look(&s, "web.team-b.svc.cluster.local.", Rtype::A).0, Rcode::NXDOMAIN);
    assert_eq!(look(&s, "hl2.default.svc.cluster.local.", Rtype::A).0, Rcode::NXDOMAIN);
    // Relabelled into the selector: the watch brings it in.
    api.update("Service", "default", "other", |svc| {
        svc["metadata"]["labels"]["app"] = json!("web")
    });
    wait_answer(
        &s,
        &api,
        "other.default.svc.cluster.local.",
        addrs(&["10.96.0.2"]),
        Duration::from_secs(5),
    );
    // And out again.
    api.update("Service", "default", "other", |svc| {
        svc["metadata"]["labels"]["app"] = json!("x")
    });
    wait_answer(
        &s,
        &api,
        "other.default.svc.cluster.local.",
        Want::NxDomain,
        Duration::from_secs(5),
    );
}

#[test]
fn a_dead_endpoint_fails_over_to_the_next() {
    let dead = closed_port();
    let api = FakeApi::with_objects(base_cluster());
    let endpoints = format!("http://127.0.0.1:{dead} {}", api.url());
    let s = Server::start(&corefile(&endpoints, &[FAST]));
    synced(&s, &api);
    api.add(service("team-a", "fo", "10.96.9.1", &[]));
    wait_answer(
        &s,
        &api,
        "fo.team-a.svc.cluster.local.",
        addrs(&["10.96.9.1"]),
        Duration::from_secs(5),
    );
}

#[test]
fn a_malformed_object_is_skipped_and_the_rest_served() {
    let mut objects = base_cluster();
    let mut bad = service("team-a", "bad", "10.96.10.1", &[]);
    bad["spec"]["ports"] = json!("eighty");
    objects.push(bad);
    let mut worse = service("team-a", "worse", "10.96.10.2", &[]);
    worse["spec"] = json!(42);
    objects.push(worse);
    let mut bad_slice = slice("team-a", "web-broken", "web", &["10.244.9.9"]);
    bad_slice["endpoints"] = json!("nope");
    objects.push(bad_slice);
    objects.push(service("team-a", "good", "10.96.10.3", &[("http", 80, "TCP")]));
    let api = FakeApi::with_objects(objects);
    let s = start(&api, &[FAST]);
    synced(&s, &api);
    wait_answer(
        &s,
        &api,
        "good.team-a.svc.cluster.local.",
        addrs(&["10.96.10.3"]),
        Duration::from_secs(2),
    );
    wait_answer(
        &s,
        &api,
        "web.team-a.svc.cluster.local.",
        addrs(&["10.96.1.1"]),
        Duration::from_secs(2),
    );
    // Garbage through the watch too.
    api.update("Service", "team-a", "good", |svc| {
        svc["spec"]["clusterIPs"] = json!({"not": "a list"})
    });
    let mut odd = service("team-a", "odd", "10.96.10.4", &[]);
    odd["metadata"]["labels"] = json!(["not", "a", "map"]);
    api.add(odd);
    api.add(service("team-a", "later", "10.96.10.5", &[]));
    wait_answer(
        &s,
        &api,
        "later.team-a.svc.cluster.local.",
        addrs(&["10.96.10.5"]),
        Duration::from_secs(5),
    );
    steady(&s, ANCHOR, &addrs(&["10.96.0.1"]), Duration::from_millis(300));
}

#[test]
fn a_file_endpoint_serves_a_kubectl_dump_and_follows_its_changes() {
    let dir = Scratch::new("k8sfile");
    let path = dir.path("cluster.json");
    let write = |items: &[Value]| {
        let tmp = dir.path("cluster.json.tmp");
        std::fs::write(&tmp, kubectl_dump(items)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    let mut items = vec![
        namespace("default"),
        service("default", "kubernetes", "10.96.0.1", &[("https", 443, "TCP")]),
        service("default", "web", "10.96.0.20", &[("http", 80, "TCP")]),
        headless("default", "db"),
        slice("default", "db-1", "db", &["10.244.3.1"]),
        // kubectl dumps hold other kinds too: ignored.
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "default"}, "data": {"a": "b"}}),
    ];
    // As in a real dump, every object has its own resourceVersion, and a changed
    // object a new one.
    for (i, item) in items.iter_mut().enumerate() {
        item["metadata"]["resourceVersion"] = json!((500 + i).to_string());
    }
    write(&items);
    let s = Server::start(&corefile(&format!("file://{}", path.display()), &[]));
    let api = FakeApi::start(); // only for wait_answer's failure log
    wait_answer(&s, &api, ANCHOR, addrs(&["10.96.0.1"]), Duration::from_secs(10));
    wait_answer(
        &s,
        &api,
        "db.default.svc.cluster.local.",
        addrs(&["10.244.3.1"]),
        Duration::from_secs(2),
    );
    let r = s.query("_http._tcp.web.default.svc.cluster.local.", Rtype::SRV);
    assert_eq!(
        section(&r, "answer"),
        // (the `domain` crate prints SRV targets without the final dot)
        ["_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local"]
    );

    set_cluster_ip(&mut items[2], "10.96.0.21");
    items[2]["metadata"]["resourceVersion"] = json!("600");
    write(&items);
    let took = wait_answer(
        &s,
        &api,
        "web.default.svc.cluster.local.",
        addrs(&["10.96.0.21"]),
        Duration::from_secs(5),
    );
    println!("file change visible after {took:?}");

    items.remove(2);
    write(&items);
    wait_answer(
        &s,
        &api,
        "web.default.svc.cluster.local.",
        Want::NxDomain,
        Duration::from_secs(5),
    );
    // An unreadable rewrite keeps the last good data.
    std::fs::write(&path, "{ not json").unwrap();
    steady(
        &s,
        "db.default.svc.cluster.local.",
        &addrs(&["10.244.3.1"]),
        Duration::from_secs(2),
    );
}

#[test]
fn sigterm_with_open_watches_exits_promptly() {
    let api = FakeApi::with_objects(base_cluster());
    let mut s = start(&api, &[FAST, "watch_timeout 60s"]);
    synced(&s, &api);
    wait_until("every resource watched", Duration::from_secs(5), || {
        WATCHED.iter().all(|r| api.live_watches(*r) == 1)
    });
    let t = Instant::now();
    s.signal(15);
    let code = s.wait_exit(Duration::from_secs(2));
    assert_eq!(
        code,
        Some(0),
        "exit within 2 s with status 0 ({:?})\n{}",
        t.elapsed(),
        s.output()
    );
    println!("exited {:?} after SIGTERM", t.elapsed());
}

#[test]
fn the_watch_timeout_option_sets_the_server_side_timeout() {
    let api = FakeApi::with_objects(base_cluster());
    api.set_max_watch(Duration::from_secs(3600));
    let s = start(&api, &[FAST, "watch_timeout 2s"]);
    synced(&s, &api);
    wait_until("watching", Duration::from_secs(5), || {
        api.last_watch_query(Resource::Services).is_some()
    });
    let q = api.last_watch_query(Resource::Services).unwrap();
    let t: u64 = param(&q, "timeoutSeconds").unwrap().parse().unwrap();
    // Jittered around the base, never far from it.
    assert!((1..=4).contains(&t), "timeoutSeconds={t} for watch_timeout 2s: {q}");
    // Streams that end at their timeout are simply renewed, without a relist.
    std::thread::sleep(Duration::from_secs(5));
    assert!(api.watches(Resource::Services) >= 2, "{}", api.request_log());
    assert_eq!(counts(&api, FakeApi::lists), [1, 1, 1]);
    api.add(service("team-a", "t", "10.96.11.1", &[]));
    wait_answer(
        &s,
        &api,
        "t.team-a.svc.cluster.local.",
        addrs(&["10.96.11.1"]),
        Duration::from_secs(5),
    );
}

#[test]
fn a_slow_api_still_syncs() {
    let api = FakeApi::with_objects(base_cluster());
    api.set_fault(Fault::Slow(Duration::from_millis(400)));
    let s = start(&api, &[FAST]);
    synced(&s, &api);
    api.add(service("team-a", "slowpoke", "10.96.12.1", &[]));
    wait_answer(
        &s,
        &api,
        "slowpoke.team-a.svc.cluster.local.",
        addrs(&["10.96.12.1"]),
        Duration::from_secs(5),
    );
}

#[test]
fn pods_verified_watches_running_pods_only() {
    let mut objects = base_cluster();
    objects.push(namespace("podns"));
    objects.push(pod("podns", "runner", "10.244.5.1", "Running"));
    objects.push(pod("podns", "finished", "10.244.5.2", "Succeeded"));
    let api = FakeApi::with_objects(objects);
    let s = start(&api, &[FAST, "pods verified"]);
    synced(&s, &api);
    wait_answer(
        &s,
        &api,
        "10-244-5-1.podns.pod.cluster.local.",
        addrs(&["10.244.5.1"]),
        Duration::from_secs(5),
    );
    assert_eq!(
        look(&s, "10-244-5-2.podns.pod.cluster.local.", Rtype::A).0,
        Rcode::NXDOMAIN
    );
    let q = api.last_list_query(Resource::Pods).expect("pods listed");
    let fields = param(&q, "fieldSelector").unwrap_or_default();
    for phase in ["Succeeded", "Failed", "Unknown"] {
        assert!(fields.contains(&format!("status.phase!={phase}")), "{q}");
    }
    api.add(pod("podns", "newer", "10.244.5.3", "Running"));
    wait_answer(
        &s,
        &api,
        "10-244-5-3.podns.pod.cluster.local.",
        addrs(&["10.244.5.3"]),
        Duration::from_secs(5),
    );
    api.update("Pod", "podns", "newer", |p| p["status"]["phase"] = json!("Failed"));
    wait_answer(
        &s,
        &api,
        "10-244-5-3.podns.pod.cluster.local.",
        Want::NxDomain,
        Duration::from_secs(5),
    );
}

#[test]
fn the_ttl_option_sets_answer_and_soa_ttls() {
    let api = FakeApi::with_objects(base_cluster());
    let s = start(&api, &[FAST, "ttl 600"]);
    synced(&s, &api);
    let r = s.query(ANCHOR, Rtype::A);
    assert_eq!(
        section(&r, "answer"),
        ["kubernetes.default.svc.cluster.local. 600 IN A 10.96.0.1"]
    );
    let r = s.query("nothere.default.svc.cluster.local.", Rtype::A);
    assert_eq!(rcode(&r), Rcode::NXDOMAIN);
    let soa = section(&r, "authority");
    assert_eq!(soa.len(), 1);
    // SOA TTL min(ttl, 300), minimum = ttl.
    assert!(
        soa[0].starts_with("cluster.local. 300 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. "),
        "{soa:?}"
    );
    assert!(soa[0].ends_with(" 7200 1800 86400 600"), "{soa:?}");
    let r = s.query("dns-version.cluster.local.", Rtype::TXT);
    assert_eq!(
        section(&r, "answer"),
        ["dns-version.cluster.local. 28800 IN TXT \"1.1.0\""]
    );
}

#[test]
fn endpoint_pod_names_names_endpoints_after_their_pods() {
    let mut objects = base_cluster();
    objects.push(headless("team-a", "db"));
    objects.push(slice("team-a", "db-1", "db", &["10.244.4.1", "10.244.4.2"]));
    let api = FakeApi::with_objects(objects);
    let s = start(&api, &[FAST, "endpoint_pod_names"]);
    synced(&s, &api);
    // The slice helper names the pods `<service>-pod-<i>`.
    wait_answer(
        &s,
        &api,
        "db-pod-1.db.team-a.svc.cluster.local.",
        addrs(&["10.244.4.2"]),
        Duration::from_secs(2),
    );
    assert_eq!(
        look(&s, "10-244-4-2.db.team-a.svc.cluster.local.", Rtype::A).0,
        Rcode::NXDOMAIN
    );
    let r = s.query("_http._tcp.db.team-a.svc.cluster.local.", Rtype::SRV);
    let mut srv = section(&r, "answer");
    srv.sort();
    assert_eq!(
        srv,
        [
            "_http._tcp.db.team-a.svc.cluster.local. 5 IN SRV 0 50 80 db-pod-0.db.team-a.svc.cluster.local",
            "_http._tcp.db.team-a.svc.cluster.local. 5 IN SRV 0 50 80 db-pod-1.db.team-a.svc.cluster.local",
        ]
    );
    // Without the option: the dashed address.
    let s = start(&api, &[FAST]);
    synced(&s, &api);
    wait_answer(
        &s,
        &api,
        "10-244-4-2.db.team-a.svc.cluster.local.",
        addrs(&["10.244.4.2"]),
        Duration::from_secs(2),
    );
    assert_eq!(
        look(&s, "db-pod-1.db.team-a.svc.cluster.local.", Rtype::A).0,
        Rcode::NXDOMAIN
    );
}

#[test]
fn noendpoints_does_not_read_endpoint_slices() {
    let mut objects = base_cluster();
    objects.push(headless("team-a", "db"));
    objects.push(slice("team-a", "db-1", "db", &["10.244.4.1"]));
    let api = FakeApi::with_objects(objects);
    let s = start(&api, &[FAST, "noendpoints"]);
    synced(&s, &api);
    wait_answer(
        &s,
        &api,
        "web.team-a.svc.cluster.local.",
        addrs(&["10.96.1.1"]),
        Duration::from_secs(2),
    );
    assert_eq!(look(&s, "db.team-a.svc.cluster.local.", Rtype::A).0, Rcode::NXDOMAIN);
    assert_eq!(look(&s, "1.4.244.10.in-addr.arpa.", Rtype::PTR).0, Rcode::NXDOMAIN);
    assert!(
        api.queries(Resource::EndpointSlices).is_empty(),
        "{}",
        api.request_log()
    );
}

// ------------------------------------------------------------------------------------
// Corefile reloads and the watch

/// Replaces the server's Corefile by a rename (`{port}` filled in), sends SIGUSR1 and
/// waits for the new configuration to be running (its `Running configuration` line).
fn reload_with(s: &Server, corefile: &str) {
    const RUNNING: &str = "Running configuration SHA512 = ";
    let before = s.count_lines(RUNNING);
    s.rewrite_corefile(corefile);
    s.signal(libc::SIGUSR1);
    let ok = s.wait_output(Duration::from_secs(10), |o| {
        o.lines().filter(|l| l.contains(RUNNING)).count() > before
    });
    assert!(ok, "no new configuration after SIGUSR1:\n{}", s.output());
}

/// The TTL of the first answer record.
fn answer_ttl(s: &Server, name: &str) -> u32 {
    let r = s.query(name, Rtype::A);
    let rr = section(&r, "answer");
    rr.first()
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no answer for {name}: {rr:?}"))
}

#[test]
fn a_reload_that_keeps_the_watch_settings_takes_over_the_running_watch() {
    let api = FakeApi::with_objects(base_cluster());
    let s = start(&api, &[FAST, "ttl 30"]);
    synced(&s, &api);
    let lists = counts(&api, FakeApi::lists);
    let watches = counts(&api, FakeApi::watches);
    assert_eq!(counts(&api, FakeApi::live_watches), [1, 1, 1]);

    // A changed answer option: a new configuration, the same watch.
    let t = Instant::now();
    reload_with(&s, &corefile(&api.url(), &[FAST, "ttl 600"]));
    let took = t.elapsed();
    assert_eq!(answer_ttl(&s, ANCHOR), 600, "{}", s.output());
    assert_eq!(counts(&api, FakeApi::lists), lists, "{}", api.request_log());
    assert_eq!(counts(&api, FakeApi::watches), watches, "{}", api.request_log());
    assert_eq!(counts(&api, FakeApi::live_watches), [1, 1, 1]);
    assert!(
        !s.output().contains("waiting for Kubernetes API"),
        "the new configuration waited for a sync:\n{}",
        s.output()
    );

    // The adopted watch feeds the new configuration.
    api.update("Service", "team-a", "web", |svc| set_cluster_ip(svc, "10.96.1.99"));
    wait_answer(
        &s,
        &api,
        "web.team-a.svc.cluster.local.",
        addrs(&["10.96.1.99"]),
        Duration::from_secs(2),
    );
    assert_eq!(answer_ttl(&s, "web.team-a.svc.cluster.local."), 600);
    println!("reload with the watch kept: {took:?} from SIGUSR1 to the new configuration, no new list or watch");
}

#[test]
fn a_reload_that_changes_the_watch_settings_lists_anew_and_closes_the_old_watch() {
    let api = FakeApi::with_objects(base_cluster());
    let s = start(&api, &[FAST]);
    synced(&s, &api);
    let other = FakeApi::with_objects({
        let mut o = base_cluster();
        o.retain(|v| v["metadata"]["name"] != "web");
        o.push(service("team-a", "web", "10.96.2.2", &[("http", 80, "TCP")]));
        o
    });
    reload_with(&s, &corefile(&other.url(), &[FAST]));
    // The new configuration waited for its own sync: the answer is the other API's at once.
    assert_eq!(
        look(&s, "web.team-a.svc.cluster.local.", Rtype::A),
        (Rcode::NOERROR, vec!["10.96.2.2".to_string()]),
        "{}",
        s.output()
    );
    assert_eq!(counts(&other, FakeApi::lists), [1, 1, 1], "{}", other.request_log());
    wait_until("the old API's watches to close", Duration::from_secs(5), || {
        counts(&api, FakeApi::live_watches) == [0, 0, 0]
    });
    // Nothing watches the old API any more.
    let before = api.requests().len();
    api.add(service("team-a", "late", "10.96.3.3", &[]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(api.requests().len(), before, "{}", api.request_log());
}

#[test]
fn blocks_with_the_same_watch_settings_share_one_watch() {
    let api = FakeApi::with_objects(base_cluster());
    // The plugin needs a forward zone for its PTR targets, so the reverse block names
    // cluster.local too (its queries only ever reach it for in-addr.arpa).
    let block = |block: &str, zones: &str| {
        format!(
            "{block}:{{port}} {{\n    bind 127.0.0.1\n    kubernetes {zones} {{\n        endpoint {}\n        {FAST}\n    }}\n}}\n",
            api.url()
        )
    };
    let s = Server::start(
        &(block("cluster.local", "cluster.local") + &block("in-addr.arpa", "cluster.local in-addr.arpa")),
    );
    synced(&s, &api);
    assert_eq!(
        look(&s, "1.1.96.10.in-addr.arpa.", Rtype::PTR).0,
        Rcode::NOERROR,
        "{}",
        s.output()
    );
    assert_eq!(counts(&api, FakeApi::lists), [1, 1, 1], "{}", api.request_log());
    assert_eq!(counts(&api, FakeApi::live_watches), [1, 1, 1]);
}
