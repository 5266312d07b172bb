//! The documentation's examples work: every Corefile example in a plugin README passes
//! `-check`, and the README's demo Corefile serves what the README says it does.

use std::path::Path;

use domain::base::iana::{Rcode, Rtype};

use testkit::prelude::*;

/// The `~~~ corefile` blocks of a Markdown file.
fn corefile_examples(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        match &mut current {
            None if line.trim() == "~~~ corefile" => current = Some(String::new()),
            Some(text) if line.trim() == "~~~" => {
                out.push(std::mem::take(text));
                current = None;
            }
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    out
}

/// The files the tls examples name (`cert.pem`, `key.pem`, `ca.pem`), made in `dir` by
/// a CA of the test's own.
fn tls_files(dir: &Path) {
    let pki = testkit::tls::Pki::new(dir, "docs");
    let leaf = pki.leaf("cert", &["dns.example.org"]);
    std::fs::rename(&leaf.key, dir.join("key.pem")).unwrap();
    std::fs::rename(&pki.ca, dir.join("ca.pem")).unwrap();
}

#[test]
fn every_plugin_readme_example_is_a_valid_corefile() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("src/plugin")).unwrap().flatten() {
        let readme = entry.path().join("README.md");
        let Ok(md) = std::fs::read_to_string(&readme) else {
            continue;
        };
        for example in corefile_examples(&md) {
            let dir = Scratch::new("docs");
            if example.contains("cert.pem") {
                tls_files(&dir.0);
            }
            let (code, out, err) = run(&["-check", "-conf", "stdin"], &dir.0, Some(&example));
            assert_eq!(
                code,
                0,
                "{}: example fails -check:\n{example}\n{out}{err}",
                readme.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "only {checked} examples found");
}

#[test]
fn the_readme_demo_serves_what_the_readme_shows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let first = readme.lines().find(|l| l.starts_with("cargo ")).unwrap();
    assert_eq!(first, "cargo run --release -- -conf packaging/demo/Corefile");
    let dir = root.join("packaging/demo");
    let demo = std::fs::read_to_string(dir.join("Corefile")).unwrap();
    // Same Corefile, on a free port, with the dump's path made absolute.
    let demo = demo.replace(":1053", ":{port}").replace(
        "file://cluster.json",
        &format!("file://{}", dir.join("cluster.json").display()),
    );
    let s = Server::start(&demo);
    s.wait_answering("web.team-a.svc.cluster.local");
    let cases: &[(&str, Rtype, &[&str])] = &[
        (
            "web.team-a.svc.cluster.local",
            Rtype::A,
            &["web.team-a.svc.cluster.local. 30 IN A 10.96.10.20"],
        ),
        (
            "web.team-a.svc.cluster.local",
            Rtype::AAAA,
            &["web.team-a.svc.cluster.local. 30 IN AAAA fd00:10:96::a14"],
        ),
        (
            "db.team-a.svc.cluster.local",
            Rtype::A,
            &[
                "db.team-a.svc.cluster.local. 30 IN A 10.244.1.30",
                "db.team-a.svc.cluster.local. 30 IN A 10.244.2.31",
                "db.team-a.svc.cluster.local. 30 IN A 10.244.1.32",
            ],
        ),
        (
            "_postgres._tcp.db.team-a.svc.cluster.local",
            Rtype::SRV,
            &[
                "_postgres._tcp.db.team-a.svc.cluster.local. 30 IN SRV 0 33 5432 db-0.db.team-a.svc.cluster.local",
                "_postgres._tcp.db.team-a.svc.cluster.local. 30 IN SRV 0 33 5432 db-1.db.team-a.svc.cluster.local",
                "_postgres._tcp.db.team-a.svc.cluster.local. 30 IN SRV 0 33 5432 db-2.db.team-a.svc.cluster.local",
            ],
        ),
        (
            "db-0.db.team-a.svc.cluster.local",
            Rtype::A,
            &["db-0.db.team-a.svc.cluster.local. 30 IN A 10.244.1.30"],
        ),
        (
            "search.team-a.svc.cluster.local",
            Rtype::A,
            &["search.team-a.svc.cluster.local. 30 IN CNAME www.example.com."],
        ),
        (
            "10.0.96.10.in-addr.arpa",
            Rtype::PTR,
            &["10.0.96.10.in-addr.arpa. 30 IN PTR kube-dns.kube-system.svc.cluster.local."],
        ),
        (
            "10-244-1-20.team-a.pod.cluster.local",
            Rtype::A,
            &["10-244-1-20.team-a.pod.cluster.local. 30 IN A 10.244.1.20"],
        ),
        (
            "example.internal",
            Rtype::A,
            &["example.internal. 3600 IN A 192.0.2.53"],
        ),
    ];
    for (name, qtype, want) in cases {
        let r = s.query(name, *qtype);
        let mut got = section(&r, "answer");
        got.sort();
        let mut want: Vec<String> = want.iter().map(|w| w.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{name} {qtype}");
    }
    let r = s.query("nothere.team-a.svc.cluster.local", Rtype::A);
    assert_eq!(rcode(&r), Rcode::NXDOMAIN);
    assert!(
        section(&r, "authority")[0]
            .starts_with("cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. ")
    );
    let r = s.query_tcp("web.team-a.svc.cluster.local", Rtype::A);
    assert_eq!(
        section(&r, "answer"),
        vec!["web.team-a.svc.cluster.local. 30 IN A 10.96.10.20"]
    );
    // Every dig line of the README names something the demo answers.
    for line in readme.lines().filter(|l| l.starts_with("dig @127.0.0.1 -p 1053 ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(words.len() >= 5, "{line}");
    }
}

/// CONTRIBUTING.md: "The server imports no plugin" (plugins reach the server through
/// the table and the Handler/Lifecycle contract, never the other way round: that is
/// what removed the prometheus <-> server import cycle). Every file under src/server/
/// is read; a `plugin::` path in code (not in a comment) names the file and line.
#[test]
fn the_server_imports_no_plugin() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/server"), &mut files);
    assert!(files.len() >= 5, "src/server/ holds the server: {files:?}");
    let mut found = Vec::new();
    for f in &files {
        for (i, line) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("plugin::") {
                found.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "the server names a plugin:\n{}", found.join("\n"));
}
