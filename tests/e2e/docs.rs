//! The documentation's examples work: every Corefile example in a plugin README passes
//! `-check`, and the README's demo Corefile serves what the README says it does.

use std::path::Path;

use domain::base::iana::{Rcode, Rtype};

use crate::support::*;

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
    let demo = std::fs::read_to_string(root.join("packaging/demo/Corefile")).unwrap();
    let s = Server::start(&demo.replace(":1053", ":{port}"));
    let r = s.query("dns.example.org", Rtype::A);
    assert_eq!(section(&r, "answer"), vec!["dns.example.org. 3600 IN A 10.96.0.10"]);
    let r = s.query("api.example.org", Rtype::AAAA);
    assert_eq!(section(&r, "answer"), vec!["api.example.org. 3600 IN AAAA fd00::1"]);
    let r = s.query("1.0.96.10.in-addr.arpa", Rtype::PTR);
    assert_eq!(
        section(&r, "answer"),
        vec!["1.0.96.10.in-addr.arpa. 3600 IN PTR api.example.org."]
    );
    let r = s.query("anything.example.org", Rtype::A);
    assert_eq!(rcode(&r), Rcode::NOERROR);
    assert_eq!(section(&r, "additional")[0], "anything.example.org. 0 IN A 127.0.0.1");
    let r = s.query_tcp("dns.example.org", Rtype::A);
    assert_eq!(section(&r, "answer"), vec!["dns.example.org. 3600 IN A 10.96.0.10"]);
}
