//! The file plugin's setup and answers. Each expectation that mirrors CoreDNS names
//! the plugin/file test or source it comes from; the zones are written here.

use super::*;
use crate::chain::{Metadata, WorkerCtx};
use crate::config::Directive;
use crate::dns::{Request, Response, Transport};
use domain::base::{Message, ParsedName};
use domain::rdata::AllRecordData;
use std::path::Path;
use std::sync::atomic::AtomicUsize;

/// A directory of its own under the temp dir, removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "clusterdns-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every common type, relative names, `$TTL`, `@`, a delegation with glue, a
/// wildcard, an empty non-terminal, CNAME chains (in the zone, out of it, to nothing,
/// in a loop), MX and SRV with in-zone targets.
pub(crate) const ZONE: &str = r#"
$ORIGIN example.org.
$TTL 3600
@       IN SOA ns1.example.org. hostmaster.example.org. (
               2024010101 ; serial
               7200 3600 1209600
               300 )      ; minimum
        IN NS   ns1
        IN NS   ns.other.net.
        IN MX   10 mail
ns1     IN A    192.0.2.53
mail    IN A    192.0.2.25
        IN AAAA 2001:db8::25
www     IN A    192.0.2.80
        IN AAAA 2001:db8::80
   600  IN TXT  "hello world"
alias   IN CNAME www
chain   IN CNAME alias
out     IN CNAME www.other.net.
missing IN CNAME nothere
loop1   IN CNAME loop2
loop2   IN CNAME loop1
_http._tcp IN SRV 10 60 80 www
ptr     IN PTR  www.example.org.
caa     IN CAA  0 issue "ca.example.net"
*.wild  IN TXT  "wild"
*.wild  IN A    192.0.2.99
sub     IN NS   ns.sub
ns.sub  IN A    192.0.2.54
deep.ent IN A   192.0.2.7
"#;

/// A `file` plugin from `corefile`'s first block, with its zone files in `dir`.
pub(crate) fn setup_in(corefile: &str, dir: &Path) -> Result<Arc<dyn Handler>, ConfigError> {
    let parsed = crate::config::parse_str(corefile, "Corefile", dir)?;
    let dirs: Vec<&Directive> = parsed.blocks[0]
        .directives
        .iter()
        .filter(|d| d.name.text == NAME)
        .collect();
    let zones = [Zone::new("example.org.").unwrap()];
    let ctx = SetupCtx {
        zones: &zones,
        config_dir: dir.to_path_buf(),
        workers: 1,
        binds: None,
        process: &crate::process::ProcessState::new(),
    };
    Ok(setup(&dirs, &ctx)?.handler.expect("file handles queries"))
}

fn example() -> (TempDir, Arc<dyn Handler>) {
    let dir = TempDir::new("file");
    dir.write("db.example.org", ZONE);
    let h = setup_in("example.org {\n file db.example.org\n}\n", &dir.0).unwrap();
    (dir, h)
}

fn wire_as_spelled(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// What a plugin did with a query.
#[derive(Debug)]
pub(crate) struct Reply {
    pub step: String,
    pub rcode: u16,
    pub aa: bool,
    pub sections: [Vec<String>; 3],
}

/// Asks `h` for `name` `qtype` (EDNS, 4096 bytes) as a worker would.
pub(crate) fn ask(h: &dyn Handler, name: &str, qtype: u16) -> Reply {
    let raw = crate::dns::QueryBuilder::new(&wire_as_spelled(name), qtype)
        .id(0x1234)
        .edns(4096)
        .to_vec();
    let a = "127.0.0.1:1".parse().unwrap();
    let req = Request::parse(&raw, Transport::Udp, a, a).ok().unwrap();
    let mut resp = Response::new();
    let mut worker = WorkerCtx::new(0);
    let route = crate::chain::RouteTag {
        slot: 0,
        server: "dns://:53".into(),
        zone: "example.org.".into(),
    };
    let mut q = Query {
        req: &req,
        resp: &mut resp,
        worker: &mut worker,
        route: &route,
        answered_by: "",
        error: None,
        refresh: false,
        coalesce: true,
        meta: Metadata::NONE,
    };
    let step = h.serve(&mut q);
    let step = format!("{step:?}");
    if !step.starts_with("Answered") {
        return Reply {
            step,
            rcode: 0,
            aa: false,
            sections: Default::default(),
        };
    }
    let bytes = resp.finish().to_vec();
    let msg = Message::from_octets(bytes.as_slice()).unwrap();
    let list = |sec: domain::base::RecordSection<'_, &[u8]>| -> Vec<String> {
        sec.map(|rr| {
            let rr = rr
                .unwrap()
                .into_any_record::<AllRecordData<_, ParsedName<_>>>()
                .unwrap();
            rr.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .filter(|l| !l.contains(" OPT "))
        .collect()
    };
    Reply {
        step,
        rcode: msg.header().rcode().to_int() as u16,
        aa: msg.header().aa(),
        sections: [
            list(msg.answer().unwrap()),
            list(msg.authority().unwrap()),
            list(msg.additional().unwrap()),
        ],
    }
}

const NS: [&str; 2] = [
    "example.org. 3600 IN NS ns1.example.org.",
    "example.org. 3600 IN NS ns.other.net.",
];
/// The SOA of a negative answer, with its own TTL (CoreDNS's lookup.go returns the
/// stored SOA; lookup_test.go's negative cases expect the zone's SOA line as written).
const NEG_SOA: &str =
    "example.org. 3600 IN SOA ns1.example.org. hostmaster.example.org. 2024010101 7200 3600 1209600 300";

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_positive_answer_is_authoritative_with_the_apex_ns_in_authority() {
    let (_d, h) = example();
    // lookup_test.go: answers carry the apex NS in authority (`ap.ns(do)`).
    let r = ask(&*h, "www.example.org.", rtype::A);
    assert_eq!(r.rcode, 0);
    assert!(r.aa);
    assert_eq!(r.sections[0], ["www.example.org. 3600 IN A 192.0.2.80"]);
    assert_eq!(r.sections[1], strs(&NS));
    assert!(r.sections[2].is_empty());
    // The client's spelling of the name is kept in the answer.
    let r = ask(&*h, "WwW.Example.ORG.", rtype::AAAA);
    assert_eq!(r.sections[0], ["WwW.Example.ORG. 3600 IN AAAA 2001:db8::80"]);
    // A TTL on the record wins over $TTL; TXT, PTR and CAA come back whole.
    assert_eq!(
        ask(&*h, "www.example.org.", rtype::TXT).sections[0],
        ["www.example.org. 600 IN TXT \"hello world\""]
    );
    assert_eq!(
        ask(&*h, "ptr.example.org.", rtype::PTR).sections[0],
        ["ptr.example.org. 3600 IN PTR www.example.org."]
    );
    assert_eq!(
        ask(&*h, "caa.example.org.", 257).sections[0],
        ["caa.example.org. 3600 IN CAA 0 issue \"ca.example.net\""]
    );
}

#[test]
fn nodata_and_nxdomain_carry_the_soa_with_the_negative_ttl() {
    let (_d, h) = example();
    // lookup_test.go: NODATA (existing name, no such type): NOERROR, SOA in authority.
    let r = ask(&*h, "www.example.org.", rtype::MX);
    assert_eq!((r.rcode, r.aa), (0, true));
    assert!(r.sections[0].is_empty());
    assert_eq!(r.sections[1], [NEG_SOA]);
    // NXDOMAIN, SOA in authority.
    let r = ask(&*h, "nope.example.org.", rtype::A);
    assert_eq!((r.rcode, r.aa), (3, true));
    assert_eq!(r.sections[1], [NEG_SOA]);
    // ent_test.go: an empty non-terminal is NOERROR with the SOA, not NXDOMAIN.
    let r = ask(&*h, "ent.example.org.", rtype::A);
    assert_eq!((r.rcode, r.aa), (0, true));
    assert!(r.sections[0].is_empty());
    assert_eq!(r.sections[1], [NEG_SOA]);
}

#[test]
fn the_apex_soa_ns_and_mx_answers() {
    let (_d, h) = example();
    // lookup.go: SOA at the apex with the NS in authority.
    let r = ask(&*h, "example.org.", rtype::SOA);
    assert_eq!(
        r.sections[0],
        ["example.org. 3600 IN SOA ns1.example.org. hostmaster.example.org. 2024010101 7200 3600 1209600 300"]
    );
    assert_eq!(r.sections[1], strs(&NS));
    // NS at the apex: no authority, the in-zone target's address in additional.
    let r = ask(&*h, "example.org.", rtype::NS);
    assert_eq!(r.sections[0], strs(&NS));
    assert!(r.sections[1].is_empty());
    assert_eq!(r.sections[2], ["ns1.example.org. 3600 IN A 192.0.2.53"]);
    // MX: the target's A and AAAA in additional (`additionalProcessing`).
    let r = ask(&*h, "example.org.", rtype::MX);
    assert_eq!(r.sections[0], ["example.org. 3600 IN MX 10 mail.example.org."]);
    assert_eq!(r.sections[1], strs(&NS));
    assert_eq!(
        r.sections[2],
        [
            "mail.example.org. 3600 IN A 192.0.2.25",
            "mail.example.org. 3600 IN AAAA 2001:db8::25"
        ]
    );
    // SRV, the same.
    let r = ask(&*h, "_http._tcp.example.org.", rtype::SRV);
    // (domain prints an uncompressed SRV target without its final dot.)
    assert_eq!(
        r.sections[0],
        ["_http._tcp.example.org. 3600 IN SRV 10 60 80 www.example.org"]
    );
    assert_eq!(
        r.sections[2],
        [
            "www.example.org. 3600 IN A 192.0.2.80",
            "www.example.org. 3600 IN AAAA 2001:db8::80"
        ]
    );
}

#[test]
fn cnames_are_followed_inside_the_zone() {
    let (_d, h) = example();
    // lookup_test.go (CNAME chains): the chain, then the target's records, NS in authority.
    let r = ask(&*h, "chain.example.org.", rtype::A);
    assert_eq!(
        r.sections[0],
        [
            "chain.example.org. 3600 IN CNAME alias.example.org.",
            "alias.example.org. 3600 IN CNAME www.example.org.",
            "www.example.org. 3600 IN A 192.0.2.80",
        ]
    );
    assert_eq!(r.sections[1], strs(&NS));
    // Asking for the CNAME itself does not follow it.
    assert_eq!(
        ask(&*h, "alias.example.org.", rtype::CNAME).sections[0],
        ["alias.example.org. 3600 IN CNAME www.example.org."]
    );
    // A target outside the zone: the CNAME alone.
    let r = ask(&*h, "out.example.org.", rtype::A);
    assert_eq!((r.rcode, r.aa), (0, true));
    assert_eq!(r.sections[0], ["out.example.org. 3600 IN CNAME www.other.net."]);
    // A target in the zone that does not exist: the CNAME, NXDOMAIN, the SOA.
    let r = ask(&*h, "missing.example.org.", rtype::A);
    assert_eq!(r.rcode, 3);
    assert_eq!(
        r.sections[0],
        ["missing.example.org. 3600 IN CNAME nothere.example.org."]
    );
    assert_eq!(r.sections[1], [NEG_SOA]);
    // A loop ends after the first CNAME and eight more (lookup.go).
    let r = ask(&*h, "loop1.example.org.", rtype::A);
    assert_eq!(r.rcode, 0);
    assert_eq!(r.sections[0].len(), 10);
}

#[test]
fn wildcards_synthesise_under_the_query_name() {
    let (_d, h) = example();
    // wildcard_test.go: the wildcard's records under the query name, NS in authority.
    let r = ask(&*h, "a.b.wild.example.org.", rtype::TXT);
    assert_eq!(r.sections[0], ["a.b.wild.example.org. 3600 IN TXT \"wild\""]);
    assert_eq!(r.sections[1], strs(&NS));
    // NODATA from a wildcard: the SOA.
    let r = ask(&*h, "x.wild.example.org.", rtype::MX);
    assert_eq!((r.rcode, r.sections[1].clone()), (0, strs(&[NEG_SOA])));
    // No wildcard at the closest encloser: NXDOMAIN (RFC 4592 3.3.1).
    assert_eq!(ask(&*h, "x.ent.example.org.", rtype::A).rcode, 3);
}

#[test]
fn a_delegation_is_a_referral_with_glue() {
    let (_d, h) = example();
    // delegation_test.go: no AA, the cut's NS in authority, glue in additional.
    for name in ["sub.example.org.", "host.sub.example.org.", "ns.sub.example.org."] {
        let r = ask(&*h, name, rtype::A);
        assert_eq!((r.rcode, r.aa), (0, false), "{name}");
        assert!(r.sections[0].is_empty(), "{name}");
        assert_eq!(
            r.sections[1],
            ["sub.example.org. 3600 IN NS ns.sub.example.org."],
            "{name}"
        );
        assert_eq!(r.sections[2], ["ns.sub.example.org. 3600 IN A 192.0.2.54"], "{name}");
    }
    // ds_test.go: DS at the cut is the parent's to answer (here NODATA).
    let r = ask(&*h, "sub.example.org.", rtype::DS);
    assert_eq!((r.rcode, r.aa), (0, true));
    assert_eq!(r.sections[1], [NEG_SOA]);
}

#[test]
fn transfers_are_refused_and_other_zones_passed_on() {
    let (_d, h) = example();
    // file.go: AXFR/IXFR are refused when no transfer plugin took them.
    assert_eq!(ask(&*h, "example.org.", rtype::AXFR).step, "Fail(Rcode(5), None)");
    assert_eq!(ask(&*h, "example.net.", rtype::A).step, "Next");
}

#[test]
fn fallthrough_passes_on_nxdomain_and_empty_non_terminals_only() {
    let dir = TempDir::new("file");
    dir.write("db", ZONE);
    let h = setup_in("example.org {\n file db {\n fallthrough\n }\n}\n", &dir.0).unwrap();
    // file.go: "Only on NXDOMAIN we will fallthrough" (and the NOERROR of an ENT).
    assert_eq!(ask(&*h, "nope.example.org.", rtype::A).step, "Next");
    assert_eq!(ask(&*h, "ent.example.org.", rtype::A).step, "Next");
    assert_eq!(ask(&*h, "www.example.org.", rtype::MX).step, "Answered");
    assert_eq!(ask(&*h, "www.example.org.", rtype::A).step, "Answered");
}

#[test]
fn includes_are_relative_to_the_including_file_and_bounded() {
    let dir = TempDir::new("file");
    dir.write(
        "zones/db",
        "$ORIGIN example.org.\n@ 60 IN SOA ns. h. 1 2 3 4 5\n$INCLUDE inc/hosts\nafter 60 IN A 192.0.2.2\n",
    );
    dir.write(
        "zones/inc/hosts",
        "in 60 IN A 192.0.2.1\n$ORIGIN other.example.org.\nx 60 IN A 192.0.2.3\n",
    );
    let h = setup_in("example.org {\n file zones/db\n}\n", &dir.0).unwrap();
    assert_eq!(
        ask(&*h, "in.example.org.", rtype::A).sections[0],
        ["in.example.org. 60 IN A 192.0.2.1"]
    );
    assert_eq!(ask(&*h, "x.other.example.org.", rtype::A).sections[0].len(), 1);
    // The include's $ORIGIN does not leak into the including file (RFC 1035 5.1).
    assert_eq!(ask(&*h, "after.example.org.", rtype::A).sections[0].len(), 1);
    // A file that includes itself stops at the depth limit, with its name and line.
    dir.write(
        "self",
        "$ORIGIN example.org.\n@ 60 IN SOA ns. h. 1 2 3 4 5\n$INCLUDE self\n",
    );
    let err = setup_in("example.org {\n file self\n}\n", &dir.0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("self:3 - file:") && err.contains("$INCLUDE nested deeper than 7"),
        "{err}"
    );
}

#[test]
fn parse_errors_name_the_zone_file_and_line() {
    let dir = TempDir::new("file");
    dir.write(
        "db",
        "$ORIGIN example.org.\n@ IN SOA ns. h. 1 2 3 4 5\nwww IN A 192.0.2.1\nbad IN A 300.1.2.3\n",
    );
    let err = setup_in("example.org {\n file db\n}\n", &dir.0)
        .err()
        .unwrap()
        .to_string();
    let want = format!(
        "{}:4 - file: failed to parse zone example.org. (Corefile names it at line 2)",
        dir.0.join("db").display()
    );
    assert!(err.starts_with(&want), "{err}");
    // No SOA.
    dir.write("nosoa", "$ORIGIN example.org.\nwww IN A 192.0.2.1\n");
    let err = setup_in("example.org {\n file nosoa\n}\n", &dir.0)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("Corefile:2 - file: ") && err.contains("has no SOA record for origin example.org."),
        "{err}"
    );
    // NSEC3 (zone.go: not supported).
    dir.write(
        "n3",
        "$ORIGIN example.org.\n@ IN SOA ns. h. 1 2 3 4 5\n@ IN NSEC3PARAM 1 0 0 -\n",
    );
    let err = setup_in("example.org {\n file n3\n}\n", &dir.0)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("NSEC3 zone is not supported"), "{err}");
}

#[test]
fn setup_checks_every_option() {
    let dir = TempDir::new("file");
    dir.write("db", ZONE);
    let err = |c: &str| setup_in(c, &dir.0).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        err("example.org {\n file\n}\n"),
        "Corefile:2 - file: Wrong argument count or unexpected line ending after 'file'"
    );
    assert_eq!(
        err("example.org {\n file db {\n bogus\n }\n}\n"),
        "Corefile:3 - file: unknown property 'bogus'"
    );
    assert_eq!(
        err("example.org {\n file db {\n reload\n }\n}\n"),
        "Corefile:3 - file: reload duration value is expected"
    );
    assert_eq!(
        err("example.org {\n file db {\n reload soon\n }\n}\n"),
        "Corefile:3 - file: time: invalid duration \"soon\""
    );
    assert_eq!(
        err("example.org {\n file db {\n reload -1s\n }\n}\n"),
        "Corefile:3 - file: invalid negative duration for reload '-1s'"
    );
    assert_eq!(
        err("example.org {\n file db {\n reload_by_mtime yes\n }\n}\n"),
        "Corefile:3 - file: Wrong argument count or unexpected line ending after 'yes'"
    );
    // setup.go: a missing file is fatal with `reload 0`, a warning otherwise.
    assert!(err("example.org {\n file absent {\n reload 0\n }\n}\n").starts_with("Corefile:2 - file: open "));
    let h = setup_in("example.org {\n file absent\n}\n", &dir.0).unwrap();
    assert_eq!(ask(&*h, "www.example.org.", rtype::A).step, "Fail(Rcode(2), None)");
    // Two files, each with its zones; longest origin wins.
    dir.write(
        "db.sub",
        "$ORIGIN deeper.example.org.\n@ IN SOA ns. h. 1 2 3 4 5\nwww IN A 192.0.2.9\n",
    );
    let h = setup_in("example.org {\n file db\n file db.sub deeper.example.org\n}\n", &dir.0).unwrap();
    assert_eq!(ask(&*h, "www.deeper.example.org.", rtype::A).sections[0].len(), 1);
    assert_eq!(ask(&*h, "www.example.org.", rtype::A).sections[0].len(), 1);
    assert!(err("example.org {\n file db\n file db\n}\n").contains("zone example.org. is served twice"));
}

#[test]
fn the_records_are_listed_soa_first_in_canonical_order() {
    let dir = TempDir::new("file");
    dir.write("db", ZONE);
    let z = ServedZone::new(
        Zone::new("example.org").unwrap(),
        dir.0.join("db"),
        DEFAULT_RELOAD,
        false,
    );
    z.load().unwrap();
    let data = z.current().unwrap();
    assert_eq!(z.serial(), Some(2024010101));
    let owners: Vec<String> = data
        .records()
        .map(|r| format!("{} {}", crate::dns::wire::name_to_string(r.owner), rtype::name(r.rtype)))
        .collect();
    assert_eq!(owners[0], "example.org. SOA");
    assert_eq!(owners.len(), data.len());
    // Canonical order: the apex, then `*.wild` sorts before `_http`, which before `alias`.
    let pos = |s: &str| {
        owners
            .iter()
            .position(|o| o == s)
            .unwrap_or_else(|| panic!("{s} in {owners:?}"))
    };
    assert!(pos("example.org. NS") < pos("_http._tcp.example.org. SRV"));
    assert!(pos("_http._tcp.example.org. SRV") < pos("alias.example.org. CNAME"));
    assert!(pos("deep.ent.example.org. A") < pos("loop1.example.org. CNAME"));
    assert!(pos("*.wild.example.org. A") < pos("*.wild.example.org. TXT"));
    assert!(pos("ns.sub.example.org. A") > pos("sub.example.org. NS"));
    // The same listing every time.
    let again: Vec<String> = data
        .records()
        .map(|r| format!("{} {}", crate::dns::wire::name_to_string(r.owner), rtype::name(r.rtype)))
        .collect();
    assert_eq!(owners, again);
}

#[test]
fn a_reload_swaps_only_on_a_new_serial_and_keeps_serving_through_a_bad_file() {
    let dir = TempDir::new("file");
    let path = dir.write("db", ZONE);
    let z = ServedZone::new(Zone::new("example.org").unwrap(), path.clone(), DEFAULT_RELOAD, false);
    z.load().unwrap();
    let notified = Arc::new(AtomicUsize::new(0));
    let n = notified.clone();
    z.on_change(Box::new(move |_| {
        n.fetch_add(1, Ordering::Relaxed);
    }));
    let generation = z.generation();
    // reload.go: the same serial, new records: not read.
    std::fs::write(&path, format!("{ZONE}new IN A 192.0.2.200\n")).unwrap();
    z.reload();
    assert_eq!(z.generation(), generation);
    assert_eq!(notified.load(Ordering::Relaxed), 0);
    // A new serial: swapped, listeners told.
    let bumped = ZONE.replace("2024010101", "2024010102");
    std::fs::write(&path, format!("{bumped}new IN A 192.0.2.200\n")).unwrap();
    z.reload();
    assert_eq!(z.generation(), generation + 1);
    assert_eq!(z.serial(), Some(2024010102));
    assert_eq!(notified.load(Ordering::Relaxed), 1);
    // A file that does not parse: the old zone stays.
    std::fs::write(
        &path,
        bumped.replace("2024010102", "2024010103") + "bad IN A nonsense\n",
    )
    .unwrap();
    z.reload();
    assert_eq!(z.serial(), Some(2024010102));
    assert_eq!(z.generation(), generation + 1);
}

#[test]
fn reload_by_mtime_reloads_a_newer_file_whatever_its_serial() {
    let dir = TempDir::new("file");
    let path = dir.write("db", ZONE);
    let z = ServedZone::new(Zone::new("example.org").unwrap(), path.clone(), DEFAULT_RELOAD, true);
    z.load().unwrap();
    let g = z.generation();
    z.reload();
    assert_eq!(z.generation(), g, "same mtime: nothing");
    std::fs::write(&path, format!("{ZONE}new IN A 192.0.2.200\n")).unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    z.reload();
    assert_eq!(z.generation(), g + 1);
    assert_eq!(z.current().unwrap().len(), z.current().unwrap().records().count());
}

#[test]
fn answering_allocates_nothing_and_stays_within_the_budget() {
    let (_d, h) = example();
    // One visit per record written: a chain of ten CNAMEs is ten.
    let raw = crate::dns::QueryBuilder::new(&wire_as_spelled("loop1.example.org."), rtype::A).to_vec();
    let a = "127.0.0.1:1".parse().unwrap();
    let req = Request::parse(&raw, Transport::Udp, a, a).ok().unwrap();
    let mut resp = Response::new();
    let mut worker = WorkerCtx::new(0);
    let route = crate::chain::RouteTag {
        slot: 0,
        server: "dns://:53".into(),
        zone: ".".into(),
    };
    let mut q = Query {
        req: &req,
        resp: &mut resp,
        worker: &mut worker,
        route: &route,
        answered_by: "",
        error: None,
        refresh: false,
        coalesce: true,
        meta: Metadata::NONE,
    };
    q.worker.budget.reset();
    assert!(matches!(h.serve(&mut q), Step::Answered));
    assert_eq!(q.worker.budget.spent(), 12, "ten CNAMEs and two NS");
}

/// What README's Limits say a zone costs: measured on 100,000 names of one A record
/// each (`host123456.example.org`), the common shape of a large internal zone.
#[test]
fn a_zone_is_compact() {
    let mut text =
        String::from("$ORIGIN example.org.\n@ 300 IN SOA ns1 h 1 2 3 4 5\n  IN NS ns1\nns1 IN A 192.0.2.1\n");
    for i in 0..100_000 {
        text.push_str(&format!(
            "host{i} 300 IN A 10.{}.{}.{}\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ));
    }
    let dir = TempDir::new("file");
    let path = dir.write("db", &text);
    let z = ServedZone::new(Zone::new("example.org").unwrap(), path, DEFAULT_RELOAD, false);
    z.load().unwrap();
    let data = z.current().unwrap();
    let per_record = data.heap_bytes() / data.len();
    eprintln!("{} records, {} bytes each", data.len(), per_record);
    assert!(per_record <= 120, "{per_record} bytes a record");
}

/// A zone whose apex NS targets and SOA names are all in the zone: the answers that
/// use the records encoded ahead (zone.rs's `prepare`).
const INSIDE: &str = r#"
$ORIGIN inside.test.
$TTL 300
@        IN SOA ns1 hostmaster 7 7200 3600 1209600 60
         IN NS  ns1
         IN NS  ns2.sub2
         IN MX  10 mail
         IN TXT "apex"
ns1      IN A    192.0.2.53
ns2.sub2 IN A    192.0.2.54
         IN AAAA 2001:db8::54
mail     IN A    192.0.2.25
www      IN A    192.0.2.80
         IN A    192.0.2.81
         IN AAAA 2001:db8::80
         IN TXT  "hello" "world"
alias    IN CNAME www
chain    IN CNAME alias
out      IN CNAME elsewhere.example.
missing  IN CNAME nothere
wcname   IN CNAME x.wild
*.wild   IN A    192.0.2.99
*.wild   IN TXT  "wild"
a.b.c.deep IN A  192.0.2.7
_sip._tcp IN SRV 10 60 5060 www
ptr      IN PTR  www.inside.test.
del      IN NS   ns.del
ns.del   IN A    192.0.2.66
"#;

/// The zone's SOA names outside it (the SOA goes through the general writer), its NS
/// inside.
const SOA_OUTSIDE: &str = r#"
$ORIGIN soa.test.
@    300 IN SOA ns.provider.example. dns.provider.example. 9 7200 3600 1209600 60
     300 IN NS  ns1
ns1  300 IN A   192.0.2.1
www  300 IN A   192.0.2.2
"#;

/// Ten long NS names in the zone: an answer with them crosses 512 bytes, at a record
/// that depends on the length of the query's name.
fn many_ns() -> String {
    let mut z = String::from("$ORIGIN many.test.\n@ 300 IN SOA ns00 hostmaster 1 2 3 4 5\n");
    for i in 0..10 {
        z.push_str(&format!("  300 IN NS ns{i:02}-a-rather-long-label-for-a-name-server\n"));
    }
    z.push_str("* 300 IN A 192.0.2.3\n");
    z
}

/// The reply to `raw` from `data`, with the records encoded ahead or each pushed:
/// what the plugin did, and the finished message.
fn reply_with(data: &ZoneData, raw: &[u8], prepared: bool) -> (String, Vec<u8>) {
    let a = "127.0.0.1:1".parse().unwrap();
    crate::chain::testing::with_query_over(raw, Transport::Udp, a, a, Metadata::NONE, |q| {
        q.worker.budget.reset();
        let step = if prepared {
            data.answer_as::<true>(q, NAME, false)
        } else {
            data.answer_as::<false>(q, NAME, false)
        };
        let spent = q.worker.budget.spent();
        let bytes = if matches!(step, Step::Answered) {
            q.resp.finish().to_vec()
        } else {
            Vec::new()
        };
        (format!("{step:?} spent {spent}"), bytes)
    })
}

/// `name` in three spellings: lower case, upper case, and every other letter raised
/// (a resolver's 0x20 bits).
fn spellings(name: &str) -> [String; 3] {
    let mixed = name
        .chars()
        .enumerate()
        .map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c })
        .collect();
    [name.to_ascii_lowercase(), name.to_ascii_uppercase(), mixed]
}

/// The records encoded ahead (the apex NS of positive answers, the SOA of negative
/// ones) and the records written directly (data without names under a pointer) give
/// the very bytes the general writer gives: every zone, question, spelling and size
/// below, truncation included.
#[test]
fn the_records_encoded_ahead_write_what_the_general_writer_writes() {
    let dir = TempDir::new("file-prepared");
    let zones = [
        ("inside.test", INSIDE.to_string()),
        ("example.org", ZONE.to_string()),
        ("soa.test", SOA_OUTSIDE.to_string()),
        ("many.test", many_ns()),
    ];
    let questions: &[(&str, &[&str])] = &[
        (
            "inside.test",
            &[
                "@",
                "www",
                "alias",
                "chain",
                "out",
                "missing",
                "wcname",
                "x.wild",
                "p.q.wild",
                "a.b.c.deep",
                "b.c.deep",
                "c.deep",
                "nope",
                "x.nope",
                "_sip._tcp",
                "ptr",
                "del",
                "x.del",
                "ns.del",
                "mail",
                "ns2.sub2",
                "sub2",
            ],
        ),
        (
            "example.org",
            &[
                "@", "www", "chain", "alias", "a.b.wild", "nope", "ent", "deep.ent", "loop1", "sub", "ns1",
            ],
        ),
        ("soa.test", &["@", "www", "nope", "ns1"]),
        (
            "many.test",
            &["@", "x", "x.y", "a-longer-label-here.y", "z.a-longer-label-here.y"],
        ),
    ];
    let types = [
        rtype::A,
        rtype::AAAA,
        rtype::TXT,
        rtype::MX,
        rtype::NS,
        rtype::SOA,
        rtype::CNAME,
        rtype::SRV,
        rtype::PTR,
        rtype::DS,
    ];
    let (mut compared, mut truncated, mut with_ns_fast) = (0, 0, 0);
    for (origin, text) in &zones {
        let path = dir.write(&format!("db.{origin}"), text);
        let z = ServedZone::new(Zone::new(origin).unwrap(), path, DEFAULT_RELOAD, false);
        z.load().unwrap();
        let data = z.current().unwrap();
        let (ns_ahead, soa_ahead) = data.prepared();
        match *origin {
            "inside.test" | "many.test" => assert!(ns_ahead && soa_ahead, "{origin}"),
            "example.org" => assert!(!ns_ahead && soa_ahead),
            _ => assert!(ns_ahead && !soa_ahead),
        }
        let names = questions.iter().find(|q| q.0 == *origin).unwrap().1;
        // Names of every length from 1 to 60 in front of a wildcard's: the replies of
        // many.test cross 512 bytes at each of its NS records in turn.
        let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        if *origin == "many.test" {
            names.extend((1..=60).map(|n| format!("{}.y", "q".repeat(n))));
        }
        for name in &names {
            let fqdn = if name == "@" {
                format!("{origin}.")
            } else {
                format!("{name}.{origin}.")
            };
            for spelled in spellings(&fqdn) {
                let wire = wire_as_spelled(&spelled);
                for &qtype in &types {
                    for edns in [None, Some(512), Some(1232), Some(4096)] {
                        let mut b = crate::dns::QueryBuilder::new(&wire, qtype).id(0x5A5A);
                        if let Some(size) = edns {
                            b = b.edns(size);
                        }
                        let raw = b.to_vec();
                        let general = reply_with(&data, &raw, false);
                        let fast = reply_with(&data, &raw, true);
                        assert_eq!(fast, general, "{spelled} type {qtype} EDNS {edns:?}");
                        compared += 1;
                        if let Ok(msg) = Message::from_octets(fast.1.as_slice()) {
                            truncated += usize::from(msg.header().tc());
                            let ns = msg
                                .authority()
                                .unwrap()
                                .filter(|r| r.as_ref().is_ok_and(|r| r.rtype() == domain::base::iana::Rtype::NS));
                            with_ns_fast += usize::from(ns_ahead && ns.count() > 0);
                        }
                    }
                }
            }
        }
    }
    eprintln!("{compared} replies compared, {truncated} truncated, {with_ns_fast} with the apex NS encoded ahead");
    assert!(truncated > 20, "the sizes must cross the limit: {truncated}");
    assert!(with_ns_fast > 100, "{with_ns_fast}");
}
