//! Pods bench (issue 14, item 2): `pods verified` at cluster scale, on the release
//! binary over loopback, against the test kit's fake API (lists in pages of 500, then
//! watches).
//!
//! ```text
//!   cargo bench --bench pods                         # 150,000 pods over 10,000 services, 3 rounds
//!   cargo bench --bench pods -- --pods N --rounds R --changes K
//!   cargo bench --bench pods -- --quick              # 20,000 pods, 1 round, 20 changes
//!   CLUSTERDNS_BENCH_BIN=/path/to/clusterdns target/release/deps/pods-<hash>   # another build
//! ```
//!
//! The cluster: the cluster bench's memory shape at 10,000 services (half headless with
//! 5 ready endpoints, 100 namespaces), and N pods over its namespaces (names as a
//! Deployment's ReplicaSet gives them, each with its own address from 10.128.0.0, JSON
//! as the API sends it: labels, owner, managed fields, containers, conditions), the
//! last of them `client` at 127.0.0.1 (where the probes come from) for autopath.
//! Each round starts two servers on the same API (one worker, pinned):
//!   * reference: the kubernetes plugin without `pods` (no pod watch): steady RSS;
//!   * `pods verified` with `autopath @kubernetes`:
//!     - first answer: from spawning the server to the first correct answer for both a
//!       pod record (`<dashed IP>.<ns>.pod.cluster.local` of the last pod listed) and an
//!       autopath lookup from the client pod (`<svc>.<ns>.<client ns>.svc.cluster.local`
//!       answered with the CNAME to `<svc>.<ns>.svc.cluster.local` and its address);
//!     - steady RSS once idle, and added: minus the reference's;
//!     - first-list peak: VmHWM after the first sync, and its excess over the
//!       reference's steady RSS;
//!     - change-to-answer: `--changes` watch events on the Pods stream, in turn ADDED
//!       (a new pod at a new address: until its pod record answers), DELETED (that pod:
//!       until NXDOMAIN), DELETED of the client pod (until the autopath lookup is
//!       NXDOMAIN) and ADDED of it again (until the completion answers): from the write
//!       of the event on the watch socket to the first correct answer; p50, p99, max.
//!
//! Medians over the rounds. The host is shared: RSS figures are stable, times are not
//! (repeat, and read the load average printed first).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use testkit::api::{Config, FakeApi, RawObject, Resource};
use testkit::load::{SERVER_CPU, median};
use testkit::process::{Daemon as Server, Scratch, free_port};
use testkit::procfs::{hwm_kb, rss_kb, wait_quiet};
use testkit::wire::{self, Probe, Reply};
use testkit::world::{Shape, World};

/// The binary under test: this tree's, or `CLUSTERDNS_BENCH_BIN` (another build, to
/// compare with in the same run's conditions).
fn bin() -> String {
    std::env::var("CLUSTERDNS_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_clusterdns").into())
}
const QUIET: Duration = Duration::from_millis(500);

struct Args {
    pods: usize,
    rounds: usize,
    changes: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        pods: 150_000,
        rounds: 3,
        changes: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} N"))
        };
        match arg.as_str() {
            "--pods" => a.pods = value("--pods"),
            "--rounds" => a.rounds = value("--rounds").max(1),
            "--changes" => a.changes = value("--changes").max(4),
            "--quick" => (a.pods, a.rounds, a.changes) = (20_000, 1, 20),
            "--bench" => {}
            other => panic!("unknown option {other}"),
        }
    }
    a
}

fn pod_json(ns: &str, name: &str, ip: &str, rv: u64, n: usize) -> String {
    format!(
        r#"{{"metadata":{{"name":"{name}","generateName":"{gen}","namespace":"{ns}","uid":"{n:08x}-0000-4000-8000-{n:012x}","resourceVersion":"{rv}","creationTimestamp":"2026-01-01T00:00:00Z","labels":{{"app":"{gen}","pod-template-hash":"7d9f8c6b5"}},"ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"{gen}","uid":"{n:08x}-0000-4000-8000-000000000001","controller":true,"blockOwnerDeletion":true}}],"managedFields":[{{"manager":"kube-controller-manager","operation":"Update","apiVersion":"v1","time":"2026-01-01T00:00:00Z","fieldsType":"FieldsV1","fieldsV1":{{"f:metadata":{{"f:generateName":{{}},"f:labels":{{".":{{}},"f:app":{{}}}}}},"f:spec":{{"f:containers":{{}}}}}}}}]}},"spec":{{"containers":[{{"name":"main","image":"registry.example/app:1.2.3","ports":[{{"containerPort":8080,"protocol":"TCP"}}],"resources":{{"requests":{{"cpu":"100m","memory":"128Mi"}}}}}}],"restartPolicy":"Always","dnsPolicy":"ClusterFirst","serviceAccountName":"default","nodeName":"node-{node}","schedulerName":"default-scheduler"}},"status":{{"phase":"Running","conditions":[{{"type":"Ready","status":"True","lastTransitionTime":"2026-01-01T00:00:00Z"}},{{"type":"ContainersReady","status":"True","lastTransitionTime":"2026-01-01T00:00:00Z"}}],"hostIP":"192.168.{nh}.{nl}","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"startTime":"2026-01-01T00:00:00Z","qosClass":"Burstable"}}}}"#,
        gen = name.rsplit_once('-').map_or(name, |(g, _)| g),
        node = n % 500,
        nh = n % 500 / 250,
        nl = n % 250 + 1,
    )
}

fn pod_object(ns: &str, name: &str, ip: &str, rv: u64, n: usize) -> RawObject {
    RawObject {
        resource: Resource::Pods,
        namespace: ns.into(),
        name: name.into(),
        rv,
        json: pod_json(ns, name, ip, rv, n),
    }
}

fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a80_0000u32 + i as u32)
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

/// The world's objects and `n` pods after them, the last the client pod.
fn objects(world: &World, n: usize, client_ns: &str) -> Vec<RawObject> {
    let mut out = world.api_objects(1000);
    let mut rv = out.iter().map(|o| o.rv).max().unwrap_or(1000);
    for i in 0..n.saturating_sub(1) {
        rv += 1;
        let ns = &world.namespaces[i % world.namespaces.len()];
        let name = format!("app{}-7d9f8c6b5-{:05x}", i / 10, i & 0xfffff);
        out.push(pod_object(ns, &name, &pod_ip(i).to_string(), rv, i));
    }
    rv += 1;
    out.push(pod_object(client_ns, "client", "127.0.0.1", rv, n));
    out
}

fn start(dir: &Path, api: &FakeApi, pods: bool) -> Server {
    let port = free_port();
    let conf = dir.join(format!("Corefile-{port}"));
    let (autopath, pods) = if pods {
        ("    autopath @kubernetes\n", "        pods verified\n")
    } else {
        ("", "")
    };
    std::fs::write(
        &conf,
        format!(
            ".:{port} {{\n    bind 127.0.0.1\n{autopath}    kubernetes cluster.local in-addr.arpa {{\n        endpoint {}\n{pods}        ttl 5\n        startup_timeout 120s\n    }}\n}}\n",
            api.url()
        ),
    )
    .unwrap();
    let args = [
        "-workers".to_string(),
        "1".into(),
        "-conf".into(),
        conf.display().to_string(),
    ];
    Server::spawn("clusterdns", Path::new(&bin()), &args, SERVER_CPU, port, true)
}

/// What a probe waits for.
#[derive(Clone)]
struct Want {
    name: String,
    /// The addresses (sorted), or none for NXDOMAIN.
    addrs: Vec<Ipv4Addr>,
}

impl Want {
    fn met(&self, r: &Reply) -> bool {
        if self.addrs.is_empty() {
            r.rcode == 3
        } else {
            r.rcode == 0 && r.addresses() == self.addrs
        }
    }
}

/// Asks until every `want` is met in one pass; the time of the last answer, or None at
/// `deadline`.
fn wait_all(probe: &mut Probe, wants: &[Want], deadline: Instant) -> Option<Instant> {
    let mut k = 0;
    while Instant::now() < deadline {
        match probe.ask(&wants[k].name, wire::A, Duration::from_millis(50)) {
            Some(r) if wants[k].met(&r) => {
                k += 1;
                if k == wants.len() {
                    return Some(Instant::now());
                }
            }
            Some(_) => {
                k = 0;
                std::thread::sleep(Duration::from_micros(200));
            }
            None => k = 0,
        }
    }
    None
}

#[derive(Default)]
struct Round {
    ref_rss_kb: f64,
    first_answer: f64,
    rss_kb: f64,
    hwm_kb: f64,
    /// Change-to-answer in ms: pod added, pod deleted, client pod deleted, client added.
    changes: [Vec<f64>; 4],
}

fn round(a: &Args, world: &World, dir: &Path) -> Round {
    let client_ns = world.namespaces[0].clone();
    let api = FakeApi::bulk(Config::long_watches(), objects(world, a.pods, &client_ns));
    let svc = world
        .services
        .iter()
        .find(|s| s.cluster_ip.is_some())
        .expect("a ClusterIP service");
    let svc_ns = &world.namespaces[svc.namespace];
    let autopath = |ok: bool| Want {
        name: format!("{}.{svc_ns}.{client_ns}.svc.cluster.local", svc.name),
        addrs: if ok {
            svc.cluster_ip.into_iter().collect()
        } else {
            Vec::new()
        },
    };
    let last = pod_ip(a.pods.saturating_sub(2));
    let last_ns = &world.namespaces[a.pods.saturating_sub(2) % world.namespaces.len()];
    let mut r = Round::default();

    // Reference: no pod watch.
    {
        let server = start(dir, &api, false);
        let mut probe = Probe::new(server.port);
        let sync: Vec<Want> = world
            .sync_probes()
            .into_iter()
            .map(|(name, addrs)| Want { name, addrs })
            .collect();
        wait_all(&mut probe, &sync, Instant::now() + Duration::from_secs(180))
            .expect("the reference server did not answer within 180 s");
        wait_quiet(server.pid(), QUIET, Duration::from_secs(30));
        r.ref_rss_kb = rss_kb(server.pid()) as f64;
    }

    let server = start(dir, &api, true);
    let mut probe = Probe::new(server.port);
    let first = vec![
        Want {
            name: format!("{}.{last_ns}.pod.cluster.local", dashed(last)),
            addrs: vec![last],
        },
        autopath(true),
        Want {
            name: format!("{}.{svc_ns}.svc.cluster.local", svc.name),
            addrs: svc.cluster_ip.into_iter().collect(),
        },
    ];
    let answered = wait_all(&mut probe, &first, Instant::now() + Duration::from_secs(180))
        .expect("no pod or autopath answer within 180 s of the start");
    r.first_answer = (answered - server.started).as_secs_f64();
    wait_quiet(server.pid(), QUIET, Duration::from_secs(30));
    r.rss_kb = rss_kb(server.pid()) as f64;
    r.hwm_kb = hwm_kb(server.pid()) as f64;

    for k in 0..a.changes {
        let kind = k % 4;
        let n = 1_000_000 + k / 4;
        let ip = Ipv4Addr::from(0x0ac8_0000u32 + (k / 4) as u32);
        let name = format!("churn-{}", k / 4);
        let (rv, want) = match kind {
            0 => (
                api.put_rendered(true, Resource::Pods, &client_ns, &name, |rv| {
                    pod_json(&client_ns, &name, &ip.to_string(), rv, n)
                }),
                Want {
                    name: format!("{}.{client_ns}.pod.cluster.local", dashed(ip)),
                    addrs: vec![ip],
                },
            ),
            1 => (
                api.delete("Pod", &client_ns, &name),
                Want {
                    name: format!("{}.{client_ns}.pod.cluster.local", dashed(ip)),
                    addrs: Vec::new(),
                },
            ),
            2 => (api.delete("Pod", &client_ns, "client"), autopath(false)),
            _ => (
                api.put_rendered(true, Resource::Pods, &client_ns, "client", |rv| {
                    pod_json(&client_ns, "client", "127.0.0.1", rv, a.pods)
                }),
                autopath(true),
            ),
        };
        let written = api
            .written(Resource::Pods, rv, Duration::from_secs(5))
            .expect("the event was written on the pods watch");
        let at = wait_all(
            &mut probe,
            std::slice::from_ref(&want),
            Instant::now() + Duration::from_secs(5),
        )
        .expect("the change reached the answers within 5 s");
        r.changes[kind].push(at.saturating_duration_since(written).as_secs_f64() * 1e3);
    }
    let log = server.output();
    if let Some(bad) = log.lines().find(|l| l.contains("[WARNING]") || l.contains("[ERROR]")) {
        eprintln!("  server logged: {bad}");
    }
    r
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let a = parse_args();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "pods bench: {} pods over 10,000 services, {} round(s), {} changes; load {}",
        a.pods,
        a.rounds,
        a.changes,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let world = World::generate(&Shape::half_headless(10_000, 1));
    let dir = Scratch::new("bench-pods");
    let rounds: Vec<Round> = (0..a.rounds).map(|_| round(&a, &world, &dir.0)).collect();
    let med = |f: &dyn Fn(&Round) -> f64| median(&mut rounds.iter().map(f).collect::<Vec<_>>());
    let mib = |kb: f64| kb / 1024.0;
    let added = med(&|r| r.rss_kb - r.ref_rss_kb);
    println!(
        "  reference (no pod watch) steady RSS {:.1} MiB | pods verified: steady RSS {:.1} MiB, added {:.1} MiB ({:.0} B/pod; floor 30 MiB: {}) | first-list peak {:.1} MiB (+{:.1} over the reference) | start to first pod and autopath answer {:.2} s",
        mib(med(&|r| r.ref_rss_kb)),
        mib(med(&|r| r.rss_kb)),
        mib(added),
        added * 1024.0 / a.pods as f64,
        if mib(added) <= 30.0 { "met" } else { "NOT MET" },
        mib(med(&|r| r.hwm_kb)),
        mib(med(&|r| r.hwm_kb - r.ref_rss_kb)),
        med(&|r| r.first_answer),
    );
    for (i, what) in [
        "pod ADDED -> its record answers",
        "pod DELETED -> NXDOMAIN",
        "client pod DELETED -> no completion",
        "client pod ADDED -> autopath completes",
    ]
    .iter()
    .enumerate()
    {
        let all: Vec<f64> = rounds.iter().flat_map(|r| r.changes[i].iter().copied()).collect();
        println!(
            "  change-to-answer {what:<40} p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  ({} changes)",
            pct(&all, 0.5),
            pct(&all, 0.99),
            pct(&all, 1.0),
            all.len()
        );
    }
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "  round {i}: reference {:.1} MiB, pods {:.1} MiB (added {:.1}), peak {:.1} MiB, first answer {:.2} s",
            mib(r.ref_rss_kb),
            mib(r.rss_kb),
            mib(r.rss_kb - r.ref_rss_kb),
            mib(r.hwm_kb),
            r.first_answer
        );
    }
}
