//! Every case of `../shared/conformance/kubernetes.json` against the real binary: per
//! group, a fake Kubernetes API serving the group's world, the server started on the
//! file's Corefile template, each case sent as `conventions.query` says and compared as
//! `conventions.compare` says. One test per group (they run in parallel, and a failure
//! names its group); groups the file gains later run in `groups_without_their_own_test`.
//! A failing group reports every failing case (expected vs got), not only the first.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};
use serde_json::Value;

use crate::fakeapi::{Config, FakeApi};
use crate::support::*;

const SPEC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/conformance/kubernetes.json");

fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        // CLUSTERDNS_CONFORMANCE overrides the file (to try an edited copy).
        let path = std::env::var("CLUSTERDNS_CONFORMANCE").unwrap_or_else(|_| SPEC_PATH.to_string());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        serde_json::from_str(&text).expect("kubernetes.json parses")
    })
}

fn group(name: &str) -> &'static Value {
    spec()["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no group {name:?} in {SPEC_PATH}"))
}

/// A string field that may also be written as an array of lines.
fn lines_of(v: &Value) -> Vec<String> {
    match v {
        Value::Null => Vec::new(),
        Value::String(s) => s.lines().map(str::to_string).collect(),
        Value::Array(a) => a.iter().flat_map(lines_of).collect(),
        other => vec![other.to_string()],
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect())
        .unwrap_or_default()
}

/// A Go duration as written in a Corefile (`1s`, `500ms`, `1m`).
fn go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    for (suffix, ms) in [("ms", 1.0), ("s", 1000.0), ("m", 60_000.0), ("h", 3_600_000.0)] {
        if let Some(n) = s.strip_suffix(suffix) {
            if let Ok(v) = n.parse::<f64>() {
                return Some(Duration::from_millis((v * ms) as u64));
            }
        }
    }
    None
}

/// Why a group cannot run here, if it cannot.
fn skip_reason(g: &Value) -> Option<String> {
    if g["requires"].as_str() == Some("server_local_ips")
        || lines_of(&g["requires"]).iter().any(|r| r == "server_local_ips")
    {
        return Some("requires server_local_ips: the server has no hook to be told its own addresses".into());
    }
    if g["server_local_ips"].as_array().is_some_and(|a| !a.is_empty()) {
        return Some(format!(
            "expects local addresses {}: the server has no hook to be told its own addresses",
            g["server_local_ips"]
        ));
    }
    None
}

/// The group's Corefile, from `conventions.corefile_template`, in the support
/// harness's form (`{port}` for the DNS port). Every group stays on loopback: a
/// server block without `bind` gets `bind 127.0.0.1` (no group that runs here depends
/// on the server's local addresses; those that would are skipped).
fn corefile(g: &Value, api_port: u16) -> String {
    let template = spec()["conventions"]["corefile_template"]
        .as_str()
        .expect("corefile_template");
    let mut server = lines_of(&g["server_block"]);
    if !server.iter().any(|l| l.split_whitespace().next() == Some("bind")) {
        server.push("bind 127.0.0.1".into());
    }
    let zones = match &g["zones"] {
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "),
        v => v.as_str().expect("zones").to_string(),
    };
    let mut text = template.to_string();
    // The server-block placeholder: `{SERVER_BLOCK...}` up to its closing brace.
    if let Some(start) = text.find("{SERVER_BLOCK") {
        let end = start + text[start..].find('}').expect("closing brace") + 1;
        let indent = line_indent(&text, start);
        text.replace_range(start..end, &server.join(&format!("\n{indent}")));
    }
    if let Some(start) = text.find("{KUBERNETES_BLOCK}") {
        let indent = line_indent(&text, start);
        let block = lines_of(&g["kubernetes_block"]);
        text.replace_range(
            start..start + "{KUBERNETES_BLOCK}".len(),
            &block.join(&format!("\n{indent}")),
        );
    }
    text.replace("{DNS_PORT}", "{port}")
        .replace("{API_PORT}", &api_port.to_string())
        .replace("{ZONES}", &zones)
}

fn line_indent(text: &str, at: usize) -> String {
    let line_start = text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
    text[line_start..at].chars().take_while(|c| c.is_whitespace()).collect()
}

// ------------------------------------------------------------------------------------
// Queries

fn qtype_of(s: &str) -> Rtype {
    Rtype::from_str(s).unwrap_or_else(|_| panic!("unknown qtype {s:?}"))
}

fn exchange(addr: SocketAddr, qname: &str, qtype: Rtype, tcp: bool) -> Result<Message<Vec<u8>>, String> {
    static ID: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0x5000);
    let id = ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let q = query_bytes(qname, qtype, Some(4096), id);
    let bytes = if tcp {
        let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut f = (q.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(&q);
        s.write_all(&f).map_err(|e| format!("tcp write: {e}"))?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).map_err(|e| format!("no TCP reply: {e}"))?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).map_err(|e| format!("short TCP reply: {e}"))?;
        buf
    } else {
        raw_udp(addr, &q, Duration::from_secs(3)).ok_or("no UDP reply within 3s")?
    };
    let msg = Message::from_octets(bytes).map_err(|e| format!("reply does not parse: {e}"))?;
    if msg.header().id() != id {
        return Err(format!("reply id {} for query id {id}", msg.header().id()));
    }
    Ok(msg)
}

// ------------------------------------------------------------------------------------
// Comparison

fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// A record in the form both sides are compared in: single spaces, names absolute
/// (case kept), addresses parsed and re-printed, SOA serial 0.
fn normalize(record: &str) -> String {
    let mut parts = record.trim().splitn(5, char::is_whitespace);
    let (Some(owner), Some(ttl), Some(class), Some(rtype)) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return record.trim().to_string();
    };
    let rdata = parts.next().unwrap_or("").trim();
    let fields: Vec<&str> = rdata.split_whitespace().collect();
    let rdata = match rtype {
        "A" | "AAAA" => rdata
            .parse::<IpAddr>()
            .map(|a| a.to_string())
            .unwrap_or(rdata.to_string()),
        "CNAME" | "PTR" | "NS" | "DNAME" => absolute(rdata),
        "SRV" if fields.len() == 4 => format!("{} {} {} {}", fields[0], fields[1], fields[2], absolute(fields[3])),
        "MX" if fields.len() == 2 => format!("{} {}", fields[0], absolute(fields[1])),
        "SOA" if fields.len() == 7 => format!(
            "{} {} 0 {} {} {} {}",
            absolute(fields[0]),
            absolute(fields[1]),
            fields[3],
            fields[4],
            fields[5],
            fields[6]
        ),
        _ => fields.join(" "),
    };
    format!("{} {ttl} {class} {rtype} {rdata}", absolute(owner))
}

fn owner(record: &str) -> &str {
    record.split_whitespace().next().unwrap_or("")
}

/// Multiset difference: (expected but missing, present but unexpected).
fn diff(want: &[String], got: &[String]) -> (Vec<String>, Vec<String>) {
    let mut rest: Vec<String> = got.to_vec();
    let mut missing = Vec::new();
    for w in want {
        match rest.iter().position(|g| g == w) {
            Some(i) => {
                rest.remove(i);
            }
            None => missing.push(w.clone()),
        }
    }
    (missing, rest)
}

/// Every mismatch of one reply against one case (empty: the case passes).
fn check(case: &Value, msg: &Message<Vec<u8>>) -> Vec<String> {
    let mut problems = Vec::new();
    let want_rcode = case["rcode"].as_str().unwrap_or("NOERROR");
    let got_rcode = rcode(msg).to_string();
    if want_rcode != got_rcode {
        problems.push(format!("rcode: want {want_rcode}, got {got_rcode}"));
    }
    let h = msg.header();
    for flag in strings(&case["flags"]) {
        let (want, name) = match flag.strip_prefix('!') {
            Some(n) => (false, n.to_string()),
            None => (true, flag.clone()),
        };
        let got = match name.as_str() {
            "aa" => h.aa(),
            "ra" => h.ra(),
            "tc" => h.tc(),
            "rd" => h.rd(),
            "ad" => h.ad(),
            "cd" => h.cd(),
            "qr" => h.qr(),
            other => {
                problems.push(format!("unknown flag {other:?} in the case"));
                continue;
            }
        };
        if got != want {
            problems.push(format!("flag {name}: want {}, got {}", on(want), on(got)));
        }
    }
    for (field, sec) in [("answer", "answer"), ("ns", "authority"), ("extra", "additional")] {
        let want: Vec<String> = strings(&case[field]).iter().map(|r| normalize(r)).collect();
        let got: Vec<String> = section(msg, sec).iter().map(|r| normalize(r)).collect();
        let (missing, unexpected) = diff(&want, &got);
        if !missing.is_empty() || !unexpected.is_empty() {
            let list = |v: &[String]| {
                if v.is_empty() {
                    " (none)".to_string()
                } else {
                    v.iter().map(|r| format!("\n        {r}")).collect()
                }
            };
            let mut p = format!("{field}:\n      want:{}\n      got:{}", list(&want), list(&got));
            if !missing.is_empty() {
                let _ = write!(p, "\n      missing:{}", list(&missing));
            }
            if !unexpected.is_empty() {
                let _ = write!(p, "\n      unexpected:{}", list(&unexpected));
            }
            problems.push(p);
        }
        if field == "answer" {
            // A CNAME comes before the records owned by its target.
            for (i, r) in got.iter().enumerate() {
                let f: Vec<&str> = r.split_whitespace().collect();
                if f.get(3) == Some(&"CNAME") {
                    let target = f[4];
                    if got[..i].iter().any(|e| owner(e).eq_ignore_ascii_case(target)) {
                        problems.push(format!("answer order: {r} comes after records of its target: {got:?}"));
                    }
                }
            }
        }
    }
    problems
}

fn on(b: bool) -> &'static str {
    if b { "set" } else { "clear" }
}

// ------------------------------------------------------------------------------------
// Running a group

struct Outcome {
    total: usize,
    failures: Vec<String>,
    /// Corefile, server output and API requests, when something failed.
    context: Option<String>,
    skipped: Option<String>,
}

fn run_group(name: &str) -> Outcome {
    let g = group(name);
    let cases = g["cases"].as_array().expect("cases");
    if let Some(reason) = skip_reason(g) {
        return Outcome {
            total: cases.len(),
            failures: Vec::new(),
            context: None,
            skipped: Some(reason),
        };
    }
    let world_name = g["world"].as_str().expect("world");
    let world = &spec()["worlds"][world_name];
    assert!(world.is_object(), "group {name}: no world {world_name:?}");
    let api = FakeApi::from_world(world, Config::default());
    let corefile = corefile(g, api.port());
    let unavailable = world["api_behavior"].as_str() == Some("unavailable");
    let started = Instant::now();
    let server = Launch::new(&corefile).no_wait().start();
    server.wait_answering("dns-version.cluster.local.");

    if unavailable {
        // The API never syncs: query once startup_timeout has passed.
        let timeout = lines_of(&g["kubernetes_block"])
            .iter()
            .find_map(|l| l.trim().strip_prefix("startup_timeout").and_then(go_duration))
            .unwrap_or(Duration::from_secs(5));
        let ready_at = started + timeout + Duration::from_millis(500);
        std::thread::sleep(ready_at.saturating_duration_since(Instant::now()));
    } else {
        // Synced: a name that should answer stops being SERVFAIL (the unsynced answer).
        let probe = cases
            .iter()
            .find(|c| c["rcode"] == "NOERROR" && !strings(&c["answer"]).is_empty())
            .or_else(|| cases.iter().find(|c| c["rcode"] != "SERVFAIL"));
        if let Some(probe) = probe {
            let qname = probe["qname"].as_str().unwrap();
            let qtype = qtype_of(probe["qtype"].as_str().unwrap());
            let end = Instant::now() + Duration::from_secs(15);
            while Instant::now() < end {
                match exchange(server.addr(), qname, qtype, false) {
                    Ok(m) if rcode(&m) != Rcode::SERVFAIL => break,
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }

    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let qname = case["qname"].as_str().expect("qname");
        let qtype_s = case["qtype"].as_str().expect("qtype");
        let tcp = case["transport"].as_str() == Some("tcp");
        let problems = match exchange(server.addr(), qname, qtype_of(qtype_s), tcp) {
            Ok(msg) => check(case, &msg),
            Err(e) => vec![e],
        };
        if !problems.is_empty() {
            let mut f = format!(
                "[{name} #{i}] {qname} {qtype_s}{}\n    note: {}\n",
                if tcp { " (tcp)" } else { "" },
                case["note"].as_str().unwrap_or("-")
            );
            for p in problems {
                let _ = writeln!(f, "    {p}");
            }
            failures.push(f);
        }
    }
    let mut context = None;
    if !failures.is_empty() {
        let out = server.output();
        let tail: Vec<&str> = out
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        context = Some(format!(
            "[{name}] Corefile:\n{}\n[{name}] server output (last lines):\n{}\n[{name}] API requests:\n{}",
            std::fs::read_to_string(&server.corefile).unwrap_or_default(),
            tail.join("\n"),
            api.request_log().lines().take(40).collect::<Vec<_>>().join("\n")
        ));
    }
    Outcome {
        total: cases.len(),
        failures,
        context,
        skipped: None,
    }
}

fn report(names: &[&str]) {
    let mut failed = Vec::new();
    let mut summary = String::new();
    for name in names {
        let o = run_group(name);
        let bad = o.failures.len();
        match &o.skipped {
            Some(why) => {
                let _ = writeln!(summary, "conformance {name}: SKIPPED ({} cases): {why}", o.total);
            }
            None => {
                let _ = writeln!(summary, "conformance {name}: {}/{} passed", o.total - bad, o.total);
            }
        }
        failed.extend(o.failures);
        failed.extend(o.context);
    }
    print!("{summary}");
    if !failed.is_empty() {
        panic!("{summary}\nfailing cases:\n\n{}", failed.join("\n"));
    }
}

macro_rules! group_tests {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                report(&[$name]);
            }
        )*
        const NAMED_GROUPS: &[&str] = &[$($name),*];
    };
}

group_tests! {
    group_handler => "handler",
    group_handler_all_namespaces => "handler_all_namespaces",
    group_not_synced => "not_synced",
    group_preserve_case => "preserve_case",
    group_ignore_empty_service => "ignore_empty_service",
    group_pods_disabled => "pods_disabled",
    group_pods_insecure => "pods_insecure",
    group_pods_verified => "pods_verified",
    group_apex => "apex",
    group_apex_ns_no_local_address => "apex_ns_no_local_address",
    group_reverse => "reverse",
    group_reverse_standard_zones => "reverse_standard_zones",
    group_reverse_fallthrough => "reverse_fallthrough",
}

/// Groups the file has that no test above names still run, here.
#[test]
fn groups_without_their_own_test() {
    let others: Vec<&str> = spec()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .filter(|n| !NAMED_GROUPS.contains(n))
        .collect();
    if !others.is_empty() {
        println!("conformance: groups without their own test: {others:?}");
    }
    report(&others);
}

// ------------------------------------------------------------------------------------
// The harness itself (no server needed)

#[test]
fn the_file_is_complete_and_every_group_is_runnable() {
    let s = spec();
    for key in ["corefile_template", "query", "compare"] {
        assert!(!s["conventions"][key].is_null(), "conventions.{key}");
    }
    let mut names = std::collections::HashSet::new();
    for g in s["groups"].as_array().unwrap() {
        let name = g["name"].as_str().expect("group name");
        assert!(names.insert(name), "group {name} twice");
        assert!(s["worlds"][g["world"].as_str().unwrap()].is_object(), "{name}: world");
        let text = corefile(g, 6443);
        assert!(!text.contains("{SERVER_BLOCK") && !text.contains("{KUBERNETES_BLOCK}") && !text.contains("{ZONES}"));
        assert!(text.contains("endpoint http://127.0.0.1:6443"), "{text}");
        assert!(text.contains("bind 127.0.0.1"), "{name} stays on loopback:\n{text}");
        for c in g["cases"].as_array().unwrap() {
            let _ = qtype_of(c["qtype"].as_str().unwrap());
            Rcode::from_str(c["rcode"].as_str().unwrap()).expect("rcode");
            for f in ["answer", "ns", "extra"] {
                for r in strings(&c[f]) {
                    assert_eq!(r.split_whitespace().nth(2), Some("IN"), "{name}: {r}");
                }
            }
        }
    }
}

#[test]
fn the_corefile_follows_the_template() {
    let g: Value = serde_json::json!({
        "zones": "cluster.local in-addr.arpa",
        "kubernetes_block": "namespaces testns\nstartup_timeout 1s",
        "server_block": ["errors"],
    });
    let text = corefile(&g, 4242);
    assert!(text.starts_with(".:{port} {\n"), "{text}");
    assert!(text.contains("\n    errors\n    bind 127.0.0.1\n"), "{text}");
    assert!(text.contains("kubernetes cluster.local in-addr.arpa {\n"), "{text}");
    assert!(
        text.contains("endpoint http://127.0.0.1:4242\n        namespaces testns\n        startup_timeout 1s\n"),
        "{text}"
    );
    let g: Value =
        serde_json::json!({"zones": "cluster.local", "kubernetes_block": "", "server_block": ["bind 127.0.0.1"]});
    assert_eq!(corefile(&g, 1).matches("bind").count(), 1);
}

/// What the `domain` crate prints for each record type the file uses normalises to
/// the file's own spelling.
#[test]
fn records_compare_as_the_conventions_say() {
    use domain::base::{MessageBuilder, Name, Ttl};
    use domain::rdata::{A, Aaaa, Cname, Ptr, Soa, Srv, Txt};
    let n = |s: &str| -> Name<Vec<u8>> { s.parse().unwrap() };
    let mut b = MessageBuilder::new_vec().question().answer();
    b.push((n("Svc1.testns.svc.cluster.local."), 5, A::from_octets(10, 0, 0, 1)))
        .unwrap();
    b.push((
        n("svc6.testns.svc.cluster.local."),
        5,
        Aaaa::new("1234:abcd:0:0:0:0:0:1".parse().unwrap()),
    ))
    .unwrap();
    b.push((
        n("_http._tcp.svc1.testns.svc.cLuStEr.local."),
        5,
        Srv::new(0, 100, 80, n("svc1.testns.svc.cLuStEr.local.")),
    ))
    .unwrap();
    b.push((n("x.cluster.local."), 5, Cname::new(n("ext.interwebs.test."))))
        .unwrap();
    b.push((
        n("1.0.0.10.in-addr.arpa."),
        5,
        Ptr::new(n("svc1.testns.svc.cluster.local.")),
    ))
    .unwrap();
    b.push((
        n("dns-version.cluster.local."),
        28800,
        Txt::<Vec<u8>>::build_from_slice(b"1.1.0").unwrap(),
    ))
    .unwrap();
    b.push((
        n("cluster.local."),
        5,
        Soa::new(
            n("ns.dns.cluster.local."),
            n("hostmaster.cluster.local."),
            1_700_000_000.into(),
            Ttl::from_secs(7200),
            Ttl::from_secs(1800),
            Ttl::from_secs(86400),
            Ttl::from_secs(5),
        ),
    ))
    .unwrap();
    let msg = Message::from_octets(b.finish()).unwrap();
    let got: Vec<String> = section(&msg, "answer").iter().map(|r| normalize(r)).collect();
    let want: Vec<String> = [
        "Svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1",
        "svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1",
        "_http._tcp.svc1.testns.svc.cLuStEr.local. 5 IN SRV 0 100 80 svc1.testns.svc.cLuStEr.local.",
        "x.cluster.local. 5 IN CNAME ext.interwebs.test.",
        "1.0.0.10.in-addr.arpa. 5 IN PTR svc1.testns.svc.cluster.local.",
        "dns-version.cluster.local. 28800 IN TXT \"1.1.0\"",
        "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 0 7200 1800 86400 5",
    ]
    .iter()
    .map(|r| normalize(r))
    .collect();
    assert_eq!(got, want);
    // Case is significant; addresses are compared parsed.
    assert_ne!(normalize("a.b. 5 IN A 1.2.3.4"), normalize("A.b. 5 IN A 1.2.3.4"));
    assert_eq!(normalize("a. 5 IN AAAA 10:0::3"), normalize("a. 5 IN AAAA 10::3"));
    assert_ne!(normalize("a. 5 IN A 1.2.3.4"), normalize("a. 6 IN A 1.2.3.4"));
    let (missing, unexpected) = diff(
        &["x".into(), "x".into(), "y".into()],
        &["y".into(), "x".into(), "z".into()],
    );
    assert_eq!((missing, unexpected), (vec!["x".to_string()], vec!["z".to_string()]));
}
