//! The Corefile corpus (`tests/data/corefiles/`, one file per shape real clusters run)
//! made runnable here, in one place: every test that starts a corpus Corefile goes
//! through [`Corpus::load`], so the files stay as an operator would write them.
//!
//! What changes, line by line, with the Corefile's block structure followed (braces are
//! counted only where they are tokens of their own, so `{1}` in a rewrite or `{{ .Name }}`
//! in a quoted template is text):
//!
//! * every server block key listens on the test's port (`{port}`, which [`Launch`]
//!   fills) and the block gets `bind 127.0.0.1` (only loopback is used);
//! * `health`, `ready` and `prometheus` listen on free ports of 127.0.0.1 (kept in
//!   [`Running`]); a `lameduck` period becomes 100 ms, so that stopping the server
//!   (SIGTERM, at most 5 s, then SIGKILL) does not wait on it;
//! * each `kubernetes` plugin reads the fake API ([`Corpus::api`]): an `endpoint` line is
//!   replaced, or one is added (a one-line `kubernetes ZONES` gets a block);
//! * each `forward` destination (`/etc/resolv.conf` or an address) becomes the fake
//!   upstream ([`Corpus::upstream`]), unless the test maps it elsewhere
//!   ([`Corpus::forward_to`]);
//! * files the Corefile reads from fixed paths (`hosts /etc/NodeHosts`, `import
//!   /etc/coredns/custom/*.server`, `import custom/*.override`) are looked up in a scratch
//!   directory of the test's own, where [`Corpus::file`] puts their contents; imported
//!   `*.server` and `*.override` files are made runnable the same way.
//!
//! A corpus file that needs something the test did not give (a `kubernetes` plugin but
//! no fake API, a `forward` but no upstream) panics with what is missing.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};

use crate::api::FakeApi;
use crate::process::{Launch, Scratch, Server, free_port, wait_until};
use crate::upstream::FakeUpstream;
use crate::wire::{query_bytes, rcode, section, tcp_exchange, udp_exchange};

/// The corpus directory: `tests/data/corefiles/` of the clusterdns package.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ sits in the clusterdns package")
        .join("tests/data/corefiles")
}

/// Zone files corpus Corefiles read (`file /etc/coredns/zones/db.corp.example` reads
/// `tests/data/zones/db.corp.example`).
pub fn zones_dir() -> PathBuf {
    dir().parent().expect("tests/data").join("zones")
}

/// The path of a corpus file.
pub fn path(file: &str) -> PathBuf {
    dir().join(file)
}

/// The names of every `*.Corefile` of the corpus, sorted.
pub fn files() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir())
        .expect("the corpus directory")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".Corefile"))
        .collect();
    out.sort();
    out
}

/// A corpus Corefile on its way to a running server.
pub struct Corpus<'a> {
    file: String,
    text: String,
    api: Option<&'a FakeApi>,
    upstream: Option<&'a FakeUpstream>,
    forwards: Vec<(String, String)>,
    files: Vec<(String, String)>,
    env: Vec<(String, String)>,
}

/// What [`Corpus::localize`] made: the runnable text and where its HTTP listeners went.
pub struct Localized {
    /// The Corefile, `{port}` still to be filled by [`Launch`].
    pub text: String,
    /// The DNS port chosen for it (already filled in imported files).
    pub port: u16,
    pub health: Option<u16>,
    pub ready: Option<u16>,
    pub metrics: Option<u16>,
    /// Holds the files of [`Corpus::file`]; removed on drop.
    pub files: Scratch,
}

impl<'a> Corpus<'a> {
    /// Reads `tests/data/corefiles/FILE`.
    pub fn load(file: &str) -> Corpus<'a> {
        let p = path(file);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        Corpus {
            file: file.to_string(),
            text,
            api: None,
            upstream: None,
            forwards: Vec::new(),
            files: Vec::new(),
            env: Vec::new(),
        }
    }

    /// An environment variable for the server process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The fake API every `kubernetes` plugin of the file reads.
    pub fn api(mut self, api: &'a FakeApi) -> Self {
        self.api = Some(api);
        self
    }

    /// The fake upstream every `forward` destination becomes (but see
    /// [`Corpus::forward_to`]).
    pub fn upstream(mut self, upstream: &'a FakeUpstream) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// A `forward` destination `from` of the file becomes `to` (`{port}` is the server's
    /// own port: a block that forwards to the cluster's DNS service forwards to itself).
    pub fn forward_to(mut self, from: &str, to: &str) -> Self {
        self.forwards.push((from.to_string(), to.to_string()));
        self
    }

    /// The contents of a file the Corefile reads, by its name relative to the directory
    /// of the path in the Corefile: `NodeHosts` for `/etc/NodeHosts`,
    /// `custom/extra.server` for `import /etc/coredns/custom/*.server`.
    pub fn file(mut self, name: &str, contents: &str) -> Self {
        self.files.push((name.to_string(), contents.to_string()));
        self
    }

    /// Replaces `from` with `to` in the file's text before it is made runnable, for a
    /// test that varies the shape (panics unless `from` is there).
    pub fn edit(mut self, from: &str, to: &str) -> Self {
        assert!(self.text.contains(from), "{}: no {from:?} to edit", self.file);
        self.text = self.text.replace(from, to);
        self
    }

    /// The runnable Corefile.
    pub fn localize(self) -> Localized {
        let files = Scratch::new("corpus-files");
        let mut out = Localized {
            text: String::new(),
            port: free_port(),
            health: None,
            ready: None,
            metrics: None,
            files,
        };
        // Imported pieces of Corefile are made runnable as the file is; the rest is data.
        for (name, contents) in &self.files {
            let text = if name.ends_with(".server") {
                self.localized(contents, 0, &mut out)
            } else if name.ends_with(".override") {
                self.localized(contents, 1, &mut out)
            } else {
                contents.clone()
            };
            let port = out.port.to_string();
            out.files.write(name, &text.replace("{port}", &port));
        }
        out.text = self.localized(&self.text, 0, &mut out);
        out
    }

    /// `text` made runnable, its lines at block depth `depth` (0: server blocks, 1: the
    /// directives of one); the HTTP listeners it has go into `out`.
    fn localized(&self, text: &str, depth: usize, out: &mut Localized) -> String {
        let mut result = String::new();
        let mut stack: Vec<String> = vec![String::new(); depth];
        for line in text.lines() {
            let toks = tokens(line);
            let opens = toks.last().map(String::as_str) == Some("{");
            let closes = toks.first().map(String::as_str) == Some("}");
            if closes {
                stack.pop();
                result.push_str(line);
                result.push('\n');
                continue;
            }
            let Some(first) = toks.first() else {
                result.push_str(line);
                result.push('\n');
                continue;
            };
            let indent = &line[..line.len() - line.trim_start().len()];
            let inner = format!("{indent}    ");
            let parent = stack.last().map(String::as_str).unwrap_or("");
            let mut emitted = None;
            if stack.is_empty() && opens && !first.starts_with('(') {
                // A server block: its keys on the test's port, loopback only.
                let keys: Vec<String> = toks[..toks.len() - 1].iter().map(|k| on_test_port(k)).collect();
                emitted = Some(format!("{} {{\n{inner}bind 127.0.0.1", keys.join(" ")));
            } else if first == "health" || first == "ready" || first == "prometheus" {
                let port = {
                    let slot = match first.as_str() {
                        "health" => &mut out.health,
                        "ready" => &mut out.ready,
                        _ => &mut out.metrics,
                    };
                    *slot.get_or_insert_with(free_port)
                };
                let brace = if opens { " {" } else { "" };
                emitted = Some(format!("{indent}{first} 127.0.0.1:{port}{brace}"));
            } else if first == "lameduck" && parent == "health" {
                emitted = Some(format!("{indent}lameduck 100ms"));
            } else if first == "endpoint" && parent == "kubernetes" {
                emitted = Some(String::new());
            } else if first == "kubernetes" && stack.len() == 1 {
                let api = self
                    .api
                    .unwrap_or_else(|| panic!("{}: a kubernetes plugin, but no fake API given", self.file));
                let head = if opens {
                    line.trim_end().to_string()
                } else {
                    format!("{} {{", line.trim_end())
                };
                let tail = if opens { String::new() } else { format!("\n{indent}}}") };
                emitted = Some(format!("{head}\n{inner}endpoint {}{tail}", api.url()));
            } else if first == "forward" && stack.len() == 1 && toks.len() >= 3 {
                let mut parts = vec![toks[0].clone(), toks[1].clone()];
                for to in &toks[2..] {
                    if to == "{" {
                        continue;
                    }
                    let mapped = self.forwards.iter().find(|(f, _)| f == to).map(|(_, t)| t.clone());
                    parts.push(mapped.unwrap_or_else(|| {
                        self.upstream
                            .unwrap_or_else(|| panic!("{}: forward to {to}, but no fake upstream given", self.file))
                            .spec()
                    }));
                }
                if opens {
                    parts.push("{".into());
                }
                emitted = Some(format!("{indent}{}", parts.join(" ")));
            } else if first == "hosts" && stack.len() == 1 && toks.len() >= 2 && toks[1].starts_with('/') {
                let name = Path::new(&toks[1]).file_name().unwrap().to_string_lossy().into_owned();
                let local = out.files.path(&name);
                if !local.exists() {
                    out.files.write(&name, "");
                }
                let rest = toks[2..].join(" ");
                emitted = Some(format!("{indent}hosts {} {rest}", local.display()));
            } else if (first == "file" || first == "directory")
                && toks.len() >= 2
                && self.zone_path(first, parent, &stack)
            {
                // A zone file (`file DBFILE`) or zone directory (`auto { directory DIR }`):
                // in CoreDNS a relative path is the working directory's (or `root`'s),
                // here the Corefile's; either way it becomes the scratch directory's
                // copy, filled from `tests/data/zones/` unless the test gave the file.
                let name = Path::new(&toks[1]).file_name().unwrap().to_string_lossy().into_owned();
                let local = out.files.path(&name);
                if first == "file" && !local.exists() {
                    let shipped = zones_dir().join(&name);
                    let text = std::fs::read_to_string(&shipped).unwrap_or_default();
                    out.files.write(&name, &text);
                }
                if first == "directory" {
                    std::fs::create_dir_all(&local).unwrap();
                }
                let rest = toks[2..].join(" ");
                emitted = Some(format!("{indent}{first} {} {rest}", local.display()));
            } else if first == "import" && toks.len() == 2 && toks[1].contains('/') {
                let p = Path::new(&toks[1]);
                let folder = p.parent().and_then(Path::file_name).unwrap_or_default();
                let local = out.files.0.join(folder);
                std::fs::create_dir_all(&local).unwrap();
                emitted = Some(format!(
                    "{indent}import {}",
                    local.join(p.file_name().unwrap()).display()
                ));
            }
            match emitted {
                Some(text) if text.is_empty() => {}
                Some(text) => {
                    result.push_str(&text);
                    result.push('\n');
                }
                None => {
                    result.push_str(line);
                    result.push('\n');
                }
            }
            if opens {
                stack.push(first.clone());
            }
        }
        assert!(stack.len() == depth, "{}: unbalanced braces", self.file);
        result
    }

    /// Whether a `file` or `directory` line names a zone file or directory: `file` as a
    /// plugin of a server block, `directory` inside an `auto` block.
    fn zone_path(&self, first: &str, parent: &str, stack: &[String]) -> bool {
        match first {
            "file" => stack.len() == 1,
            _ => parent == "auto",
        }
    }

    /// Starts the binary under test on the runnable Corefile; returns as soon as it
    /// answers (see [`Running::wait_for`] for the cluster's names).
    pub fn start(self) -> Running {
        let file = self.file.clone();
        let env = self.env.clone();
        let local = self.localize();
        let mut launch = Launch::new(&local.text).port(local.port);
        for (k, v) in &env {
            launch = launch.env(k, v);
        }
        let server = launch.start();
        Running {
            file,
            server,
            health: local.health,
            ready: local.ready,
            metrics: local.metrics,
            _files: local.files,
        }
    }
}

/// A key of a server block on the test's port: `.:53` -> `.:{port}`,
/// `dns://example.org` -> `example.org:{port}`.
fn on_test_port(key: &str) -> String {
    let key = key.strip_prefix("dns://").unwrap_or(key);
    let host = match key.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => key,
    };
    format!("{host}:{{port}}")
}

/// The tokens of a Corefile line (quoted strings are one token, a `#` starting a token
/// ends the line).
fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut has = false;
    for c in line.chars() {
        if quoted {
            cur.push(c);
            if c == '"' {
                quoted = false;
            }
            continue;
        }
        if c.is_whitespace() {
            if has {
                out.push(std::mem::take(&mut cur));
                has = false;
            }
            continue;
        }
        if c == '#' && !has {
            break;
        }
        if c == '"' {
            quoted = true;
        }
        cur.push(c);
        has = true;
    }
    if has {
        out.push(cur);
    }
    out
}

/// A corpus Corefile being served: the [`Server`] and its HTTP listeners' ports.
pub struct Running {
    pub file: String,
    pub server: Server,
    pub health: Option<u16>,
    pub ready: Option<u16>,
    pub metrics: Option<u16>,
    _files: Scratch,
}

impl Deref for Running {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

impl Running {
    /// Waits (at most 15 s) until `name` `qtype` is answered NOERROR with at least one
    /// record: the server has read the fake API.
    pub fn wait_for(&self, name: &str, qtype: Rtype) {
        wait_until(
            &format!("{}: an answer for {name} {qtype}", self.file),
            Duration::from_secs(15),
            || {
                let m = self.server.query(name, qtype);
                rcode(&m) == Rcode::NOERROR && !section(&m, "answer").is_empty()
            },
        );
    }

    /// Waits until the cluster's `kubernetes` Service answers (the test kit's base
    /// cluster has it): the first sync is done.
    pub fn synced(&self) {
        self.wait_for("kubernetes.default.svc.cluster.local.", Rtype::A);
    }

    /// The same query (EDNS 1232, RD) over UDP and over TCP: `[udp, tcp]`.
    pub fn both(&self, name: &str, qtype: Rtype) -> [Message<Vec<u8>>; 2] {
        let q = query_bytes(name, qtype, Some(1232), 0x5151);
        [udp_exchange(self.addr(), &q), tcp_exchange(self.addr(), &q)]
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_quoted_braces_and_stop_at_comments() {
        assert_eq!(
            tokens(r#"  answer "{{ .Name }} 60 IN A 1.2.3.4" # note {"#),
            ["answer", r#""{{ .Name }} 60 IN A 1.2.3.4""#]
        );
        assert_eq!(
            tokens("name regex (.*)\\.x {1}.y {"),
            ["name", "regex", "(.*)\\.x", "{1}.y", "{"]
        );
    }

    #[test]
    fn keys_go_to_the_test_port() {
        assert_eq!(on_test_port(".:53"), ".:{port}");
        assert_eq!(on_test_port("dns://example.org"), "example.org:{port}");
        assert_eq!(on_test_port("cluster.local"), "cluster.local:{port}");
    }

    #[test]
    fn a_corefile_is_made_runnable() {
        let api = FakeApi::with_objects(Vec::new());
        let up = FakeUpstream::start();
        let c = Corpus {
            file: "x".into(),
            text: "# c { \nexample.io:1053 {\n    forward . 10.233.0.3\n}\n.:53 {\n    health {\n        lameduck 5s\n    }\n    ready\n    kubernetes cluster.local {\n        endpoint http://x\n        pods insecure\n    }\n    k8s_external example.org\n    prometheus :9153\n    hosts /etc/NodeHosts {\n        fallthrough\n    }\n    forward . /etc/resolv.conf {\n        max_concurrent 1000\n    }\n    import custom/*.override\n}\nimport /etc/coredns/custom/*.server\n".into(),
            api: Some(&api),
            upstream: Some(&up),
            forwards: vec![("10.233.0.3".into(), "127.0.0.1:{port}".into())],
            files: vec![
                ("custom/a.server".into(), "corp.example:53 {\n    forward . 9.9.9.9\n}\n".into()),
                ("custom/b.override".into(), "forward . 9.9.9.9\n".into()),
            ],
            env: Vec::new(),
        };
        let l = c.localize();
        assert_eq!(
            std::fs::read_to_string(l.files.path("custom/a.server")).unwrap(),
            format!(
                "corp.example:{} {{\n    bind 127.0.0.1\n    forward . {}\n}}\n",
                l.port,
                up.spec()
            )
        );
        assert_eq!(
            std::fs::read_to_string(l.files.path("custom/b.override")).unwrap(),
            format!("forward . {}\n", up.spec())
        );
        let d = l.files.0.display().to_string();
        let want = format!(
            "# c {{ \nexample.io:{{port}} {{\n    bind 127.0.0.1\n    forward . 127.0.0.1:{{port}}\n}}\n.:{{port}} {{\n    bind 127.0.0.1\n    health 127.0.0.1:{h} {{\n        lameduck 100ms\n    }}\n    ready 127.0.0.1:{r}\n    kubernetes cluster.local {{\n        endpoint {api}\n        pods insecure\n    }}\n    k8s_external example.org\n    prometheus 127.0.0.1:{m}\n    hosts {d}/NodeHosts {{\n        fallthrough\n    }}\n    forward . {up} {{\n        max_concurrent 1000\n    }}\n    import {d}/custom/*.override\n}}\nimport {d}/custom/*.server\n",
            h = l.health.unwrap(),
            r = l.ready.unwrap(),
            m = l.metrics.unwrap(),
            api = api.url(),
            up = up.spec(),
        );
        assert_eq!(l.text, want);
    }
}
