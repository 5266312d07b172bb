//! Snapshot bench: builds the kubernetes store and snapshot in-process for a generated
//! cluster, and reports build time, heap bytes held (per service and per endpoint), a
//! relist's peak, and the cost of one change at that size.
//!
//!   cargo bench --bench snapshot                      # 10,000 and 100,000 services
//!   cargo bench --bench snapshot -- --services 50000
//!   cargo bench --bench snapshot -- --pods 150000     # `pods verified`: pods on top of 10,000 services
//!
//! Half the services are ClusterIP, half headless with 5 ready endpoints each (so
//! 100,000 services carry 250,000 endpoints), spread over 1,000 namespaces.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clusterdns::kubernetes::model::{
    Endpoint, EndpointSlice, Namespace, Object, Pod, Port, Resource, Service, ServiceKind,
};
use clusterdns::kubernetes::snapshot::{ClusterStore, StoreOptions};

/// Tracks live heap bytes and their peak.
struct Tracking;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Live allocations, and what glibc's malloc spends on them (each a chunk of the size
/// asked plus an 8-byte header, rounded up to 16, at least 32): the per-allocation
/// overhead that heap bytes alone do not show.
static COUNT: AtomicUsize = AtomicUsize::new(0);
static CHUNKS: AtomicUsize = AtomicUsize::new(0);

fn chunk(size: usize) -> usize {
    ((size + 8 + 15) & !15).max(32)
}

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator unchanged, only counting.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        COUNT.fetch_add(1, Ordering::Relaxed);
        CHUNKS.fetch_add(chunk(layout.size()), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        COUNT.fetch_sub(1, Ordering::Relaxed);
        CHUNKS.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        CHUNKS.fetch_add(chunk(new_size), Ordering::Relaxed);
        CHUNKS.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        if new_size > layout.size() {
            grew(new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

const NAMESPACES: usize = 1000;
const ENDPOINTS: usize = 5;

fn ip4(n: u32) -> IpAddr {
    IpAddr::from(n.to_be_bytes())
}

/// Objects of a generated cluster, one at a time in the order a list would bring them
/// (never all at once: the input must not count in the figures).
fn cluster(services: usize, rv: u64, mut out: impl FnMut(Object)) {
    for n in 0..NAMESPACES {
        out(Object::Namespace(Namespace {
            name: format!("ns{n}").into(),
        }));
    }
    let port = || Port {
        name: "http".into(),
        protocol: "tcp".into(),
        port: 80,
    };
    let mut next_ip = 0x0a80_0000u32; // 10.128.0.0: pod addresses
    for i in 0..services {
        let ns: Box<str> = format!("ns{}", i % NAMESPACES).into();
        let name: Box<str> = format!("svc{i}").into();
        let headless = i % 2 == 1;
        out(Object::Service(Service {
            namespace: ns.clone(),
            name: name.clone(),
            resource_version: format!("{}", rv + i as u64).into(),
            kind: if headless {
                ServiceKind::Headless
            } else {
                ServiceKind::ClusterIp
            },
            cluster_ips: if headless {
                vec![]
            } else {
                vec![ip4(0x0a60_0000 + i as u32)]
            },
            external_name: "".into(),
            external_ips: Vec::new(),
            ports: vec![port()],
        }));
        if headless {
            let endpoints = (0..ENDPOINTS)
                .map(|e| {
                    next_ip += 1;
                    let addr = ip4(next_ip);
                    Endpoint {
                        addresses: vec![(addr, addr.to_string().into())],
                        hostname: None,
                        pod_name: Some(format!("{name}-{e}").into()),
                        node_name: Some("node-1".into()),
                    }
                })
                .collect();
            out(Object::EndpointSlice(EndpointSlice {
                namespace: ns,
                name: format!("{name}-abcde").into(),
                resource_version: format!("{}", rv + i as u64).into(),
                service: name,
                endpoints,
                ports: vec![port()],
                last_change_trigger: None,
            }));
        }
    }
}

fn list(store: &mut ClusterStore, services: usize) {
    for r in [Resource::Namespaces, Resource::Services, Resource::EndpointSlices] {
        store.list_start(r);
    }
    cluster(services, 1000, |o| {
        store.upsert(o);
    });
    for r in [Resource::Namespaces, Resource::Services, Resource::EndpointSlices] {
        store.list_done(r);
    }
}

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn run(services: usize) {
    let endpoints = services / 2 * ENDPOINTS;
    let (count0, chunks0) = (COUNT.load(Ordering::Relaxed), CHUNKS.load(Ordering::Relaxed));
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t = Instant::now();
    let mut store = ClusterStore::new(
        StoreOptions::default(),
        vec![Resource::Namespaces, Resource::Services, Resource::EndpointSlices],
    );
    list(&mut store, services);
    let snap = store.snapshot();
    let build = t.elapsed();
    let held = LIVE.load(Ordering::Relaxed) - base;
    let allocs = COUNT.load(Ordering::Relaxed) - count0;
    let breakdown = store.heap_breakdown();
    let chunks = CHUNKS.load(Ordering::Relaxed) - chunks0;
    assert!(snap.synced);

    // A relist with nothing changed (the same resourceVersions), as after a 410.
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let t = Instant::now();
    list(&mut store, services);
    let relist = t.elapsed();
    let relist_peak = PEAK.load(Ordering::Relaxed) - base;

    // One change, with a published snapshot still held (as a worker would).
    let hold = store.snapshot();
    let mut changes = Vec::new();
    for k in 0..200 {
        let i = (k as usize * 7919) % services;
        let obj = Object::Service(Service {
            namespace: format!("ns{}", i % NAMESPACES).into(),
            name: format!("svc{i}").into(),
            resource_version: format!("{}", 10_000_000 + k).into(),
            kind: ServiceKind::ClusterIp,
            cluster_ips: vec![ip4(0x0b00_0000 + k as u32)],
            external_name: "".into(),
            external_ips: Vec::new(),
            ports: vec![Port {
                name: "http".into(),
                protocol: "tcp".into(),
                port: 80,
            }],
        });
        let t = Instant::now();
        store.upsert(obj);
        let _published = store.snapshot();
        changes.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(hold);
    changes.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{services:>7} services {endpoints:>7} endpoints | build {:>7.1} ms | held {:>6.1} MiB ({:>4.0} B/service+5/2 endpoints) | relist {:>7.1} ms, peak {:>6.1} MiB ({:.2}x) | one change p50 {:>5.0} us p99 {:>5.0} us",
        build.as_secs_f64() * 1e3,
        mib(held),
        held as f64 / services as f64,
        relist.as_secs_f64() * 1e3,
        mib(relist_peak),
        relist_peak as f64 / held as f64,
        changes[changes.len() / 2],
        changes[changes.len() * 99 / 100],
    );
    println!(
        "{services:>7} services: {allocs} allocations ({:.2} a service), {:.1} MiB with malloc's chunk headers and rounding",
        allocs as f64 / services as f64,
        mib(chunks),
    );
    let parts: Vec<String> = breakdown
        .iter()
        .map(|(what, b)| format!("{what} {:.1}", mib(*b)))
        .collect();
    println!("{services:>7} services: heap by structure, MiB: {}", parts.join(", "));
    drop(snap);
}

/// Pods as a list brings them: `pods` pods over the bench's namespaces, each with its
/// own address, names as a Deployment's ReplicaSet gives them; every 50th terminating.
fn pods(pods: usize, rv: u64, mut out: impl FnMut(Object)) {
    for i in 0..pods {
        let addr = ip4(0x0a40_0000 + i as u32);
        out(Object::Pod(Pod {
            namespace: format!("ns{}", i % NAMESPACES).into(),
            name: format!("app{}-7d9f8c6b5-{:05x}", i / 10, i & 0xfffff).into(),
            resource_version: format!("{}", rv + i as u64).into(),
            pod_ip: addr.to_string().into(),
            terminating: i % 50 == 0,
            host_network: false,
        }));
    }
}

/// `pods verified`: what `pods` pods add to a store of 10,000 services, their first
/// list's peak, a relist's peak (every pod at a new resourceVersion), and one change.
fn run_pods(n: usize) {
    let mut store = ClusterStore::new(
        StoreOptions::default(),
        vec![
            Resource::Namespaces,
            Resource::Services,
            Resource::EndpointSlices,
            Resource::Pods,
        ],
    );
    list(&mut store, 10_000);
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let t = Instant::now();
    store.list_start(Resource::Pods);
    pods(n, 1000, |o| {
        store.upsert(o);
    });
    store.list_done(Resource::Pods);
    let snap = store.snapshot();
    let build = t.elapsed();
    let held = LIVE.load(Ordering::Relaxed) - base;
    let first_peak = PEAK.load(Ordering::Relaxed) - base;
    assert!(snap.synced);
    let hold = store.snapshot();
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    let t = Instant::now();
    store.list_start(Resource::Pods);
    pods(n, 10_000_000, |o| {
        store.upsert(o);
    });
    store.list_done(Resource::Pods);
    let relist = t.elapsed();
    let relist_peak = PEAK.load(Ordering::Relaxed) - base;
    drop(hold);
    let mut changes = Vec::new();
    for k in 0..200u32 {
        let i = (k as usize * 7919) % n;
        let obj = Object::Pod(Pod {
            namespace: format!("ns{}", i % NAMESPACES).into(),
            name: format!("app{}-7d9f8c6b5-{:05x}", i / 10, i & 0xfffff).into(),
            resource_version: format!("{}", 20_000_000 + k).into(),
            pod_ip: ip4(0x0b40_0000 + k).to_string().into(),
            terminating: false,
            host_network: false,
        });
        let t = Instant::now();
        store.upsert(obj);
        let _published = store.snapshot();
        changes.push(t.elapsed().as_secs_f64() * 1e6);
    }
    changes.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{n:>7} pods (pods verified, over 10,000 services) | list {:>7.1} ms | held {:>6.1} MiB ({:>4.0} B/pod) | first list peak {:>6.1} MiB | relist (all new versions) {:>7.1} ms, peak {:>6.1} MiB ({:.2}x) | one change p50 {:>5.0} us p99 {:>5.0} us",
        build.as_secs_f64() * 1e3,
        mib(held),
        held as f64 / n as f64,
        mib(first_peak),
        relist.as_secs_f64() * 1e3,
        mib(relist_peak),
        relist_peak as f64 / held as f64,
        changes[changes.len() / 2],
        changes[changes.len() * 99 / 100],
    );
    drop(snap);
}

fn main() {
    let mut sizes = vec![10_000, 100_000];
    let mut pod_sizes = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--services" {
            sizes = vec![args.next().and_then(|v| v.parse().ok()).expect("--services N")];
        }
        if a == "--pods" {
            pod_sizes = vec![args.next().and_then(|v| v.parse().ok()).expect("--pods N")];
            sizes.clear();
        }
    }
    for n in sizes {
        run(n);
    }
    for n in pod_sizes {
        run_pods(n);
    }
}
