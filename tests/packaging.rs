//! The shipped packaging, checked offline against what the binary does: the Kubernetes
//! manifests (`packaging/kubernetes/`, with the node-local role's `node-local/`, its
//! rule files, and `autoscaling/`), the image the manifests name
//! (`packaging/Containerfile`), the systemd units (`packaging/systemd/`), the packaged
//! Corefile, the man page and the Debian metadata in Cargo.toml.
//!
//! ```text
//!   cargo test --test packaging
//! ```
//!
//! The manifests are read by a small reader for the YAML subset they are written in
//! (block mappings and sequences, `|` literals, one-line `[a, b]` lists, plain and
//! quoted scalars), with no YAML crate in the server; a test checks that a full YAML
//! parser (yaml-rust2, a dev-dependency) reads every document the same way. The units
//! go through `systemd-analyze verify` and `security --offline=yes`, and the node-local
//! role runs in a network namespace of its own: these need outside tools (`systemd`;
//! root with `ip`, `nft`, `iptables`), so they are `#[ignore]`d, run by `cargo test --locked -- --ignored` (`.ci/run` installs the
//! tools first), and fail there if a tool is missing. kubectl proxy's filters
//! are Go regexps, matched here with the `regex` crate (RE2 syntax) against tables of
//! methods and paths, the way kubectl matches them. `clusterdns-kubeconfig` runs
//! against a stand-in kubectl. The package itself is tested under a real systemd by
//! `.ci/package-test`, with the real kubectl proxy.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use clusterdns::config::{self, Directive, ServerKey};
use clusterdns::kubernetes::model::Resource;
use clusterdns::plugin::kubernetes::backend::WatchKey;
use clusterdns::plugin::kubernetes::setup as kubernetes_setup;
use clusterdns::plugin::{health, prometheus, ready};
use clusterdns::setup::SetupCtx;
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------
// The YAML subset reader.

/// Reads every `---`-separated document of `text` into JSON values.
fn read_yaml(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            if current.iter().any(|l| significant(l)) {
                let mut reader = Reader {
                    lines: std::mem::take(&mut current),
                    pos: 0,
                };
                let value = reader.block(0)?;
                if let Some(extra) = reader.peek() {
                    return Err(format!("unexpected line: {:?}", reader.lines[extra]));
                }
                docs.push(value);
            }
            current.clear();
        } else {
            if line.contains('\t') {
                return Err(format!("tab in {line:?}"));
            }
            current.push(line.to_string());
        }
    }
    Ok(docs)
}

/// Not blank and not only a comment.
fn significant(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// `line` without a trailing ` # comment` (a `#` outside quotes, after a space).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), _) if b == q => quote = None,
            (None, b'#') if i == 0 || bytes[i - 1] == b' ' => return line[..i].trim_end(),
            _ => {}
        }
    }
    line.trim_end()
}

/// Where `key: value` splits: the first `:` outside quotes followed by a space or the
/// end of the line.
fn mapping_colon(content: &str) -> Option<usize> {
    if content.starts_with('[') || content.starts_with('{') {
        return None;
    }
    let mut quote = None;
    let bytes = content.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match (quote, b) {
            (None, b'"' | b'\'') if i == 0 => quote = Some(b),
            (Some(q), _) if b == q => quote = None,
            (None, b':') if i + 1 == bytes.len() || bytes[i + 1] == b' ' => return Some(i),
            _ => {}
        }
    }
    None
}

struct Reader {
    lines: Vec<String>,
    pos: usize,
}

impl Reader {
    /// The index of the next significant line.
    fn peek(&mut self) -> Option<usize> {
        while self.pos < self.lines.len() && !significant(&self.lines[self.pos]) {
            self.pos += 1;
        }
        (self.pos < self.lines.len()).then_some(self.pos)
    }

    /// A mapping or a sequence whose lines are indented at least `min`.
    fn block(&mut self, min: usize) -> Result<Value, String> {
        let Some(i) = self.peek() else {
            return Ok(Value::Null);
        };
        let indent = indent_of(&self.lines[i]);
        if indent < min {
            return Ok(Value::Null);
        }
        let content = strip_comment(self.lines[i].trim_start());
        if content == "-" || content.starts_with("- ") {
            self.sequence(indent)
        } else {
            self.mapping(indent)
        }
    }

    fn mapping(&mut self, indent: usize) -> Result<Value, String> {
        let mut map = Map::new();
        while let Some(i) = self.peek() {
            let line = self.lines[i].clone();
            let here = indent_of(&line);
            let content = strip_comment(line.trim_start());
            if here < indent || (here == indent && (content == "-" || content.starts_with("- "))) {
                break;
            }
            if here > indent {
                return Err(format!("bad indentation: {line:?}"));
            }
            let colon = mapping_colon(content).ok_or_else(|| format!("not a mapping entry: {line:?}"))?;
            let key = match scalar(content[..colon].trim())? {
                Value::String(s) => s,
                other => other.to_string(),
            };
            let rest = content[colon + 1..].trim();
            self.pos += 1;
            let value = match rest {
                "" => match self.peek() {
                    Some(j) if indent_of(&self.lines[j]) > indent => self.block(indent + 1)?,
                    Some(j) if indent_of(&self.lines[j]) == indent && self.lines[j].trim_start().starts_with('-') => {
                        self.sequence(indent)?
                    }
                    _ => Value::Null,
                },
                "|" | "|-" => Value::String(self.literal(indent, rest == "|-")),
                _ => inline(rest)?,
            };
            if map.insert(key.clone(), value).is_some() {
                return Err(format!("duplicate key {key:?}"));
            }
        }
        Ok(Value::Object(map))
    }

    fn sequence(&mut self, indent: usize) -> Result<Value, String> {
        let mut items = Vec::new();
        while let Some(i) = self.peek() {
            let line = self.lines[i].clone();
            let content = strip_comment(line.trim_start());
            if indent_of(&line) != indent || !(content == "-" || content.starts_with("- ")) {
                if indent_of(&line) > indent {
                    return Err(format!("bad indentation: {line:?}"));
                }
                break;
            }
            let item = content[1..].trim_start();
            if item.is_empty() {
                self.pos += 1;
                items.push(self.block(indent + 1)?);
            } else if mapping_colon(item).is_some() || item == "-" || item.starts_with("- ") {
                // `- key: value` or `- - item`: a mapping or a sequence whose first line
                // starts after the dash.
                let inner = indent + (content.len() - item.len());
                self.lines[i] = format!(
                    "{}{}",
                    " ".repeat(inner),
                    &line.trim_start()[content.len() - item.len()..]
                );
                items.push(self.block(inner)?);
            } else {
                self.pos += 1;
                items.push(inline(item)?);
            }
        }
        Ok(Value::Array(items))
    }

    /// A `|` block: the following lines indented more than `indent`, newlines kept.
    fn literal(&mut self, indent: usize, strip: bool) -> String {
        let mut body: Vec<&str> = Vec::new();
        let mut block_indent = None;
        while self.pos < self.lines.len() {
            let line = &self.lines[self.pos];
            if line.trim().is_empty() {
                body.push("");
            } else if indent_of(line) > indent {
                let bi = *block_indent.get_or_insert(indent_of(line));
                body.push(&line[bi.min(indent_of(line))..]);
            } else {
                break;
            }
            self.pos += 1;
        }
        while body.last() == Some(&"") {
            body.pop();
        }
        let mut text = body.join("\n");
        if !strip && !text.is_empty() {
            text.push('\n');
        }
        text
    }
}

/// A value on the rest of a line: `[a, b]`, `{}`, or a scalar.
fn inline(text: &str) -> Result<Value, String> {
    if let Some(body) = text.strip_prefix('[') {
        let body = body
            .strip_suffix(']')
            .ok_or_else(|| format!("unterminated list: {text}"))?;
        if body.trim().is_empty() {
            return Ok(Value::Array(Vec::new()));
        }
        let mut items = Vec::new();
        let (mut quote, mut start) = (None, 0);
        for (i, b) in body.bytes().enumerate() {
            match (quote, b) {
                (None, b'"' | b'\'') => quote = Some(b),
                (Some(q), _) if b == q => quote = None,
                (None, b',') => {
                    items.push(scalar(body[start..i].trim())?);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(scalar(body[start..].trim())?);
        return Ok(Value::Array(items));
    }
    if text == "{}" {
        return Ok(Value::Object(Map::new()));
    }
    if text.starts_with('{') || text.starts_with('&') || text.starts_with('*') || text.starts_with('!') {
        return Err(format!("outside the supported YAML subset: {text}"));
    }
    scalar(text)
}

fn scalar(text: &str) -> Result<Value, String> {
    if let Some(body) = text.strip_prefix('"') {
        let body = body
            .strip_suffix('"')
            .ok_or_else(|| format!("unterminated string: {text}"))?;
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(c @ ('"' | '\\' | '/')) => out.push(c),
                    other => return Err(format!("unsupported escape \\{other:?} in {text}")),
                }
            } else {
                out.push(c);
            }
        }
        return Ok(Value::String(out));
    }
    if let Some(body) = text.strip_prefix('\'') {
        let body = body
            .strip_suffix('\'')
            .ok_or_else(|| format!("unterminated string: {text}"))?;
        return Ok(Value::String(body.replace("''", "'")));
    }
    Ok(match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" | "~" => Value::Null,
        _ if !text.is_empty() && text.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit()) && text != "-" => {
            Value::from(text.parse::<i64>().map_err(|e| format!("{text}: {e}"))?)
        }
        _ => Value::String(text.to_string()),
    })
}

#[test]
fn yaml_reader_reads_the_subset() {
    let docs = read_yaml(
        "# comment\na: 1\nb: \"x: y\" # trailing\nc:\n- d: [one, 'two', \"3\"]\n  e: |\n    line 1\n\n    line 2\n  f: {}\n- plain text\n---\n---\nlist:\n  - - nested\n",
    )
    .unwrap();
    assert_eq!(
        docs,
        vec![
            serde_json::json!({"a": 1, "b": "x: y", "c": [{"d": ["one", "two", "3"], "e": "line 1\n\nline 2\n", "f": {}}, "plain text"]}),
            serde_json::json!({"list": [["nested"]]}),
        ]
    );
    assert!(read_yaml("a: 1\na: 2\n").is_err(), "duplicate keys are refused");
    assert!(
        read_yaml("a: {b: 1}\n").is_err(),
        "flow mappings are outside the subset"
    );
}

// ---------------------------------------------------------------------------------
// Helpers.

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every document of every `packaging/kubernetes/*.yaml`, with its file name.
fn manifests() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("packaging/kubernetes"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in read_yaml(&text).unwrap_or_else(|e| panic!("{name}: {e}")) {
            out.push((name.clone(), doc));
        }
    }
    out
}

/// The one object of `kind`.
fn object(kind: &str) -> Value {
    let all: Vec<Value> = manifests()
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(all.len(), 1, "want exactly one {kind}");
    all.into_iter().next().unwrap()
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str().unwrap_or_else(|| panic!("{what}: want a string, got {v}"))
}

fn array<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("{what}: want a list, got {v}"))
}

/// Container `c` (`name`) runs locked down: no privilege escalation, a read-only root,
/// every capability dropped and only `add` added back, a memory request under its
/// limit, and no CPU limit (throttling adds DNS latency).
fn locked_down(c: &Value, name: &str, add: &[&str]) {
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
    assert_eq!(
        strings(&sc["capabilities"]["drop"], "drop"),
        ["ALL".to_string()].into(),
        "{name}"
    );
    let added = sc["capabilities"]
        .get("add")
        .map(|a| strings(a, "add"))
        .unwrap_or_default();
    let want: BTreeSet<String> = add.iter().map(|s| s.to_string()).collect();
    assert_eq!(added, want, "{name}");
    let res = &c["resources"];
    let request = mebibytes(str_of(&res["requests"]["memory"], "requests.memory"));
    let limit = mebibytes(str_of(&res["limits"]["memory"], "limits.memory"));
    assert!(
        request > 0 && limit >= request,
        "{name}: memory request {request} Mi, limit {limit} Mi"
    );
    assert!(
        res["limits"].get("cpu").is_none(),
        "{name}: no CPU limit (throttling adds DNS latency)"
    );
}

fn strings(v: &Value, what: &str) -> BTreeSet<String> {
    array(v, what).iter().map(|s| str_of(s, what).to_string()).collect()
}

fn container(name: &str) -> Value {
    let deployment = object("Deployment");
    array(&deployment["spec"]["template"]["spec"]["containers"], "containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
        .clone()
}

/// The ConfigMap's Corefile, parsed.
fn configmap_corefile() -> (String, config::Corefile) {
    let text = str_of(&object("ConfigMap")["data"]["Corefile"], "data.Corefile").to_string();
    let corefile = config::parse_str(&text, "Corefile", Path::new(".")).unwrap();
    (text, corefile)
}

fn directives<'a>(block: &'a config::ServerBlock, name: &str) -> Vec<&'a Directive> {
    block.directives.iter().filter(|d| d.name.as_str() == name).collect()
}

/// `clusterdns -check` on `text`: (exit code, output).
fn check_corefile(text: &str) -> (i32, String) {
    let (code, out, err) = testkit::process::run(&["-check", "-conf", "stdin"], root(), Some(text));
    (code, out + &err)
}

/// Every resource the watcher lists and watches. The match has no wildcard arm, so a
/// new resource fails to compile here until the RBAC and proxy checks know it.
fn watched_resources() -> Vec<Resource> {
    let all = [
        Resource::Namespaces,
        Resource::Services,
        Resource::EndpointSlices,
        Resource::Pods,
    ];
    for r in all {
        match r {
            Resource::Namespaces | Resource::Services | Resource::EndpointSlices | Resource::Pods => {}
        }
    }
    all.to_vec()
}

/// (API group, resource) of a collection path: `/api/v1/pods` is ("", "pods"),
/// `/apis/discovery.k8s.io/v1/endpointslices` is ("discovery.k8s.io", "endpointslices").
fn group_and_resource(path: &str) -> (String, String) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", resource] => (String::new(), resource.to_string()),
        ["apis", group, _version, resource] => (group.to_string(), resource.to_string()),
        _ => panic!("unexpected collection path {path}"),
    }
}

/// A Corefile's text, parsed.
fn parse_corefile(text: &str) -> config::Corefile {
    config::parse_str(text, "Corefile", Path::new(".")).unwrap()
}

/// The collection paths the watcher lists and watches for the `kubernetes` directive
/// of `corefile`'s first block: what `WatchKey::of` decides (namespaces and services
/// always, endpointslices unless `noendpoints`, pods only for `pods verified`). The
/// key keeps its list private, so it is read from the key's Debug form.
fn watched_paths(corefile: &config::Corefile) -> BTreeSet<String> {
    let block = &corefile.blocks[0];
    let zones = [clusterdns::dns::Zone::new(".").unwrap()];
    let ctx = SetupCtx {
        zones: &zones,
        config_dir: PathBuf::from("."),
        workers: 1,
        binds: None,
        process: &clusterdns::process::ProcessState::new(),
    };
    let opts = kubernetes_setup::parse(directives(block, "kubernetes")[0], &ctx).unwrap();
    let key = format!("{:?}", WatchKey::of(&opts));
    let list = key
        .split("resources: [")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .unwrap_or_else(|| panic!("no resources in {key}"));
    let names: BTreeSet<&str> = list.split(", ").collect();
    let paths: BTreeSet<String> = watched_resources()
        .into_iter()
        .filter(|r| names.contains(format!("{r:?}").as_str()))
        .map(|r| r.path().to_string())
        .collect();
    assert_eq!(paths.len(), names.len(), "unknown resources in {key}");
    paths
}

/// The strings a kubectl-proxy filter (`^a(b|c)$,^d$`) matches. Its regexes here use
/// only literals, `[.]` and one level of `(x|y)`, so the set is finite.
fn regex_language(filter: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for re in filter.split(',') {
        let body = re
            .strip_prefix('^')
            .and_then(|r| r.strip_suffix('$'))
            .unwrap_or_else(|| panic!("filter {re:?} is not anchored with ^...$"));
        let mut words = vec![String::new()];
        let mut rest = body;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("[.]") {
                words.iter_mut().for_each(|w| w.push('.'));
                rest = r;
            } else if let Some(r) = rest.strip_prefix('(') {
                let end = r.find(')').expect("unclosed group");
                let alternatives: Vec<&str> = r[..end].split('|').collect();
                words = words
                    .iter()
                    .flat_map(|w| alternatives.iter().map(move |a| format!("{w}{a}")))
                    .collect();
                rest = &r[end + 1..];
            } else {
                let c = rest.chars().next().unwrap();
                assert!(
                    c.is_ascii_alphanumeric() || c == '/' || c == '-' || c == '_',
                    "unsupported regex syntax {c:?} in {re:?}"
                );
                words.iter_mut().for_each(|w| w.push(c));
                rest = &rest[c.len_utf8()..];
            }
        }
        out.extend(words);
    }
    out
}

/// The value of `--name=` in an argument list.
fn flag_value<'a>(args: &'a [String], name: &str) -> &'a str {
    let prefix = format!("--{name}=");
    let found: Vec<&str> = args.iter().filter_map(|a| a.strip_prefix(&prefix)).collect();
    assert_eq!(found.len(), 1, "want one {prefix} in {args:?}");
    found[0]
}

/// `KEY=value` lines of a unit file's section (continuation lines joined).
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn unit_value(unit: &str, key: &str) -> String {
    let v = unit_values(unit, key);
    assert_eq!(v.len(), 1, "want one {key}= in the unit, got {v:?}");
    v[0].clone()
}

// ---------------------------------------------------------------------------------
// Kubernetes manifests.

#[test]
fn every_manifest_document_parses_with_the_expected_kinds() {
    let docs = manifests();
    let mut kinds = BTreeSet::new();
    for (file, d) in &docs {
        let kind = str_of(&d["kind"], "kind");
        let api = str_of(&d["apiVersion"], "apiVersion");
        let want_api = match kind {
            "ServiceAccount" | "ConfigMap" | "Service" => "v1",
            "ClusterRole" | "ClusterRoleBinding" => "rbac.authorization.k8s.io/v1",
            "Deployment" => "apps/v1",
            "PodDisruptionBudget" => "policy/v1",
            "NetworkPolicy" => "networking.k8s.io/v1",
            other => panic!("{file}: unexpected kind {other}"),
        };
        assert_eq!(api, want_api, "{file}: {kind}");
        assert!(!str_of(&d["metadata"]["name"], "metadata.name").is_empty());
        if !kind.starts_with("Cluster") {
            assert_eq!(d["metadata"]["namespace"], "kube-system", "{file}: {kind}");
        }
        assert!(kinds.insert(kind.to_string()), "{file}: a second {kind}");
    }
    let want: BTreeSet<String> = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "NetworkPolicy",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(kinds, want);
}

/// A full YAML parser (yaml-rust2, YAML 1.2) reads every manifest as the subset reader
/// does: the reader is checked against an independent implementation, not against
/// itself.
#[test]
fn a_full_yaml_parser_reads_the_manifests_the_same_way() {
    fn json(y: &yaml_rust2::Yaml) -> Value {
        use yaml_rust2::Yaml;
        match y {
            Yaml::Null => Value::Null,
            Yaml::Boolean(b) => Value::Bool(*b),
            Yaml::Integer(i) => Value::from(*i),
            Yaml::Real(r) => Value::from(r.parse::<f64>().unwrap()),
            Yaml::String(s) => Value::String(s.clone()),
            Yaml::Array(a) => Value::Array(a.iter().map(json).collect()),
            Yaml::Hash(h) => Value::Object(
                h.iter()
                    .map(|(k, v)| {
                        let key = match json(k) {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        (key, json(v))
                    })
                    .collect(),
            ),
            other => panic!("not in the manifests' subset: {other:?}"),
        }
    }
    let mut paths = Vec::new();
    for dir in [
        "packaging/kubernetes",
        "packaging/kubernetes/pods-verified",
        "packaging/kubernetes/node-local",
        "packaging/kubernetes/autoscaling",
    ] {
        paths.extend(std::fs::read_dir(root().join(dir)).unwrap().flatten().map(|e| e.path()));
    }
    let mut read = 0;
    for path in paths {
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let theirs = yaml_rust2::YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let theirs = Value::Array(theirs.iter().map(json).collect());
        let ours = Value::Array(read_yaml(&text).unwrap());
        assert_eq!(
            ours,
            theirs,
            "{}: the subset reader and yaml-rust2 disagree",
            path.display()
        );
        read += 1;
    }
    assert!(read >= 15, "only {read} manifests found");
}

/// What a ClusterRole grants, as (API group, resource) pairs; every rule must be
/// exactly `list` and `watch`, on whole resources.
fn granted(role: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for rule in array(&role["rules"], "rules") {
        assert_eq!(
            strings(&rule["verbs"], "verbs"),
            ["list", "watch"].iter().map(|s| s.to_string()).collect(),
            "verbs of {rule}"
        );
        assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none());
        for group in strings(&rule["apiGroups"], "apiGroups") {
            for resource in strings(&rule["resources"], "resources") {
                assert!(out.insert((group.clone(), resource)), "granted twice in {rule}");
            }
        }
    }
    out
}

fn pairs(paths: &BTreeSet<String>) -> BTreeSet<(String, String)> {
    paths.iter().map(|p| group_and_resource(p)).collect()
}

/// The documents of a YAML file, by kind (one of each).
fn documents(rel: &str) -> std::collections::BTreeMap<String, Value> {
    let mut out = std::collections::BTreeMap::new();
    for doc in read_yaml(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}")) {
        let kind = str_of(&doc["kind"], "kind").to_string();
        assert!(out.insert(kind.clone(), doc).is_none(), "{rel}: a second {kind}");
    }
    out
}

/// A binding's subject is exactly the one ServiceAccount `account` names.
fn binds_to(binding: &Value, role: &Value, account: &Value) {
    assert_eq!(binding["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let subjects = array(&binding["subjects"], "subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0]["kind"], "ServiceAccount");
    assert_eq!(subjects[0]["name"], account["metadata"]["name"]);
    assert_eq!(subjects[0]["namespace"], account["metadata"]["namespace"]);
}

#[test]
fn rbac_is_exactly_list_and_watch_on_what_the_watcher_reads() {
    let (text, corefile) = configmap_corefile();
    let role = object("ClusterRole");
    assert_eq!(
        granted(&role),
        pairs(&watched_paths(&corefile)),
        "the ClusterRole must grant exactly what the watcher lists and watches with the shipped Corefile"
    );
    assert!(
        !granted(&role).contains(&(String::new(), "pods".to_string())),
        "`pods insecure` needs no pods"
    );
    let account = object("ServiceAccount");
    binds_to(&object("ClusterRoleBinding"), &role, &account);
    assert_eq!(
        object("Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
        account["metadata"]["name"]
    );

    // `pods verified`: pods-verified/rbac-pods.yaml adds pods, and only pods, for the
    // same ServiceAccount.
    let extra = documents("packaging/kubernetes/pods-verified/rbac-pods.yaml");
    assert_eq!(
        extra.keys().cloned().collect::<Vec<_>>(),
        ["ClusterRole", "ClusterRoleBinding"]
    );
    let pods_role = &extra["ClusterRole"];
    assert_eq!(granted(pods_role), [(String::new(), "pods".to_string())].into());
    binds_to(&extra["ClusterRoleBinding"], pods_role, &account);
    let mut both = granted(&role);
    both.extend(granted(pods_role));
    assert_eq!(both, pairs(&watched_paths(&parse_corefile(&pods_verified(&text)))));
}

#[test]
fn configmap_corefile_is_valid_and_reads_the_api_from_the_sidecar() {
    let (text, corefile) = configmap_corefile();
    let (code, out) = check_corefile(&text);
    assert_eq!(code, 0, "clusterdns -check on the ConfigMap's Corefile: {out}");
    let block = &corefile.blocks[0];
    let k8s = directives(block, "kubernetes");
    assert_eq!(k8s.len(), 1);
    let endpoints: Vec<&Directive> = k8s[0]
        .options()
        .iter()
        .filter(|o| o.name.as_str() == "endpoint")
        .collect();
    assert_eq!(endpoints.len(), 1);
    let endpoint = endpoints[0].args[0].as_str();

    let proxy = container("apiproxy");
    let command: Vec<String> = array(&proxy["command"], "command")
        .iter()
        .map(|a| str_of(a, "command").to_string())
        .collect();
    assert_eq!(&command[..2], ["kubectl", "proxy"]);
    let listen = format!(
        "http://{}:{}",
        flag_value(&command, "address"),
        flag_value(&command, "port")
    );
    assert_eq!(
        endpoint, listen,
        "the kubernetes endpoint must be the sidecar's listener"
    );
    assert_eq!(
        listen, "http://127.0.0.1:8001",
        "plain HTTP stays on the pod's loopback"
    );

    // The Corefile file the container loads is the ConfigMap's key, mounted.
    let server = container("clusterdns");
    let args: Vec<String> = array(&server["args"], "args")
        .iter()
        .map(|a| str_of(a, "args").to_string())
        .collect();
    let conf = args
        .iter()
        .position(|a| a == "-conf")
        .map(|i| args[i + 1].clone())
        .expect("-conf");
    let conf = Path::new(&conf);
    let mount = array(&server["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| Path::new(str_of(&m["mountPath"], "mountPath")) == conf.parent().unwrap())
        .expect("the -conf directory is a volume mount")
        .clone();
    assert_eq!(mount["readOnly"], true);
    let volume = array(&object("Deployment")["spec"]["template"]["spec"]["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap()
        .clone();
    assert_eq!(volume["configMap"]["name"], object("ConfigMap")["metadata"]["name"]);
    let items = array(&volume["configMap"]["items"], "items");
    assert!(
        items
            .iter()
            .any(|i| i["key"] == "Corefile" && i["path"] == conf.file_name().unwrap().to_str().unwrap()),
        "the ConfigMap key Corefile must appear as {}",
        conf.display()
    );
}

#[test]
fn container_and_service_ports_match_the_corefile() {
    let (_, corefile) = configmap_corefile();
    let block = &corefile.blocks[0];
    let dns_port = ServerKey::parse(&block.keys[0], 53).unwrap().port;
    let metrics: SocketAddr = prometheus::address(directives(block, "prometheus")[0]).unwrap();

    let server = container("clusterdns");
    let ports = array(&server["ports"], "ports");
    let port = |name: &str| -> (i64, String) {
        let p = ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}"));
        (
            p["containerPort"].as_i64().unwrap(),
            str_of(&p["protocol"], "protocol").to_string(),
        )
    };
    assert_eq!(port("dns"), (dns_port as i64, "UDP".into()));
    assert_eq!(port("dns-tcp"), (dns_port as i64, "TCP".into()));
    assert_eq!(port("metrics"), (metrics.port() as i64, "TCP".into()));
    assert!(
        metrics.ip().is_unspecified(),
        "metrics must listen beyond the pod's loopback to be scraped"
    );

    let service = object("Service");
    let mut seen = BTreeSet::new();
    for p in array(&service["spec"]["ports"], "service ports") {
        let target = match &p["targetPort"] {
            Value::String(name) => port(name).0,
            Value::Number(n) => n.as_i64().unwrap(),
            other => panic!("targetPort {other}"),
        };
        let protocol = str_of(&p["protocol"], "protocol").to_string();
        assert_eq!(p["port"].as_i64().unwrap(), target, "{p}");
        seen.insert((target, protocol));
    }
    let want: BTreeSet<(i64, String)> = [
        (dns_port as i64, "UDP".to_string()),
        (dns_port as i64, "TCP".to_string()),
        (metrics.port() as i64, "TCP".to_string()),
    ]
    .into_iter()
    .collect();
    assert_eq!(seen, want, "kube-dns: 53/UDP, 53/TCP and the metrics port");
    assert_eq!(service["metadata"]["name"], "kube-dns");
}

#[test]
fn probes_are_health_and_ready_where_the_corefile_serves_them() {
    let (_, corefile) = configmap_corefile();
    let block = &corefile.blocks[0];
    let health = health::parse(&directives(block, "health")).unwrap();
    let ready = ready::parse(&directives(block, "ready")).unwrap();
    assert!(
        !health.lameduck.is_zero(),
        "a lameduck keeps answering while the endpoints update"
    );

    let server = container("clusterdns");
    let live = &server["livenessProbe"]["httpGet"];
    assert_eq!(live["path"], "/health");
    assert_eq!(live["port"].as_i64(), Some(health.addr.port() as i64));
    let readiness = &server["readinessProbe"]["httpGet"];
    assert_eq!(readiness["path"], "/ready");
    assert_eq!(readiness["port"].as_i64(), Some(ready.addr.port() as i64));
    // The kubelet probes the pod IP from the node. The wildcard serves it; binding
    // `{$POD_IP}:8080` would only drop the pod's loopback (and break on an IPv6 pod
    // IP). Who else reaches these ports is the NetworkPolicy's business (below).
    assert!(
        health.addr.ip().is_unspecified() && ready.addr.ip().is_unspecified(),
        "the kubelet probes the pod IP"
    );
    let grace = object("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        grace > health.lameduck.as_secs() + 5,
        "the grace period must outlast the lameduck"
    );
}

/// The NetworkPolicy lets anyone in on DNS and metrics, exactly the Service's ports,
/// and on nothing else: the probe ports stay reachable from the pod's own node only
/// (NetworkPolicy always allows the node, where the kubelet probes from), not from
/// other pods.
#[test]
fn network_policy_admits_dns_and_metrics_and_leaves_the_probes_to_the_node() {
    let policy = object("NetworkPolicy");
    let spec = &policy["spec"];
    let pod_labels = object("Deployment")["spec"]["template"]["metadata"]["labels"].clone();
    let selector = spec["podSelector"]["matchLabels"].as_object().unwrap();
    assert!(!selector.is_empty());
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    assert_eq!(
        strings(&spec["policyTypes"], "policyTypes"),
        ["Ingress".to_string()].into()
    );
    let rules = array(&spec["ingress"], "ingress");
    assert_eq!(rules.len(), 1);
    assert!(rules[0].get("from").is_none(), "DNS and metrics are for every client");
    let allowed: BTreeSet<(i64, String)> = array(&rules[0]["ports"], "ports")
        .iter()
        .map(|p| {
            (
                p["port"].as_i64().expect("numeric port"),
                str_of(&p["protocol"], "protocol").to_string(),
            )
        })
        .collect();

    let server = container("clusterdns");
    let container_port = |name: &str| -> i64 {
        array(&server["ports"], "ports")
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no port {name}"))["containerPort"]
            .as_i64()
            .unwrap()
    };
    let service: BTreeSet<(i64, String)> = array(&object("Service")["spec"]["ports"], "ports")
        .iter()
        .map(|p| {
            let target = match &p["targetPort"] {
                Value::String(name) => container_port(name),
                other => other.as_i64().unwrap(),
            };
            (target, str_of(&p["protocol"], "protocol").to_string())
        })
        .collect();
    assert_eq!(allowed, service, "exactly the Service's ports");

    let (_, corefile) = configmap_corefile();
    let block = &corefile.blocks[0];
    for probe in [
        health::parse(&directives(block, "health")).unwrap().addr.port(),
        ready::parse(&directives(block, "ready")).unwrap().addr.port(),
    ] {
        assert!(
            !allowed.iter().any(|(port, _)| *port == i64::from(probe)),
            "probe port {probe} must not be open to other pods"
        );
    }
}

#[test]
fn deployment_is_replicated_spread_hardened_and_sized() {
    let deployment = object("Deployment");
    let spec = &deployment["spec"];
    assert!(spec["replicas"].as_u64().unwrap() >= 2);
    let pod_labels = spec["template"]["metadata"]["labels"].as_object().unwrap();
    let selects = |selector: &Value| {
        selector
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| pod_labels.get(k) == Some(v))
    };
    assert!(selects(&spec["selector"]["matchLabels"]));
    assert!(selects(
        &object("PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    ));
    assert!(selects(&object("Service")["spec"]["selector"]));
    let pdb = &object("PodDisruptionBudget")["spec"];
    assert!(pdb.get("maxUnavailable").is_some() || pdb.get("minAvailable").is_some());

    let pod = &spec["template"]["spec"];
    let anti = &pod["affinity"]["podAntiAffinity"];
    let terms: Vec<&Value> = [
        "requiredDuringSchedulingIgnoredDuringExecution",
        "preferredDuringSchedulingIgnoredDuringExecution",
    ]
    .iter()
    .filter_map(|k| anti.get(*k))
    .flat_map(|v| array(v, "anti-affinity"))
    .collect();
    assert!(!terms.is_empty(), "pod anti-affinity");
    for t in terms {
        let term = t.get("podAffinityTerm").unwrap_or(t);
        assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
        assert!(selects(&term["labelSelector"]["matchLabels"]));
    }

    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(pod["securityContext"]["runAsUser"].as_u64().unwrap() > 0);
    let sysctls = array(&pod["securityContext"]["sysctls"], "sysctls");
    assert!(
        sysctls
            .iter()
            .any(|s| s["name"] == "net.ipv4.ip_unprivileged_port_start" && s["value"] == "53"),
        "a non-root process binds port 53 through the safe sysctl"
    );
    for name in ["clusterdns", "apiproxy"] {
        let c = container(name);
        let add: &[&str] = if name == "clusterdns" {
            &["NET_BIND_SERVICE"]
        } else {
            &[]
        };
        locked_down(&c, name, add);
        assert!(c["resources"]["requests"].get("cpu").is_some(), "{name}: cpu request");
    }
    // Measured: 58 MiB steady, 59 MiB peak at 100,000 services, and ~18 MiB more with
    // `pods verified` at 150,000 pods (the manifest's comment has the numbers); the limit
    // leaves room for a relist that changes everything.
    let limit = mebibytes(str_of(
        &container("clusterdns")["resources"]["limits"]["memory"],
        "limit",
    ));
    assert!(
        limit >= 120,
        "the limit must hold 1.5x the measured peak at 100,000 services with 150,000 pods"
    );
}

fn mebibytes(q: &str) -> u64 {
    if let Some(n) = q.strip_suffix("Mi") {
        n.parse().unwrap()
    } else if let Some(n) = q.strip_suffix("Gi") {
        n.parse::<u64>().unwrap() * 1024
    } else {
        panic!("memory quantity {q}: want Mi or Gi")
    }
}

// ---------------------------------------------------------------------------------
// kubectl proxy's request filter, in the pod's sidecar and in the host's unit.

/// kubectl proxy's own default for `--reject-paths` (we leave it in place).
const KUBECTL_DEFAULT_REJECT_PATHS: &str = "^/api/.*/pods/.*/exec,^/api/.*/pods/.*/attach";

/// kubectl proxy's request filter (`FilterServer.accept` in kubectl's
/// pkg/proxy/proxy_server.go) with Go's semantics:
/// - each flag is split at every comma into regexps (so no regexp may hold a comma),
///   each compiled by Go's `regexp`: RE2 syntax, which the regex crate shares for
///   everything used here (`(?s)`, `(?:)`, classes, `^`, `$`);
/// - each is tried with `MatchString`, an unanchored search: only `^` and `$` anchor,
///   and `$` (no `m` flag) is the end of the text in both engines, never before a
///   trailing newline as in Perl or Python;
/// - the method is `req.Method`, exactly as sent: net/http keeps its case;
/// - the path is `req.URL.Path`: percent-decoded, without the query.
///
/// A request passes if no reject-paths regexp matches its path, no reject-methods one
/// its method, and an accept-paths one matches its path. (The host check,
/// `--accept-hosts`, keeps kubectl's default and is not modelled.)
struct ProxyFilter {
    reject_methods: Vec<regex::Regex>,
    accept_paths: Vec<regex::bytes::Regex>,
    reject_paths: Vec<regex::bytes::Regex>,
}

impl ProxyFilter {
    fn new(args: &[String]) -> ProxyFilter {
        let bytes = |list: &str| -> Vec<regex::bytes::Regex> {
            list.split(',')
                .map(|r| regex::bytes::Regex::new(r).unwrap_or_else(|e| panic!("{r:?}: {e}")))
                .collect()
        };
        assert!(
            !args.iter().any(|a| a.starts_with("--reject-paths=")),
            "kubectl's default --reject-paths is assumed"
        );
        ProxyFilter {
            reject_methods: flag_value(args, "reject-methods")
                .split(',')
                .map(|r| regex::Regex::new(r).unwrap_or_else(|e| panic!("{r:?}: {e}")))
                .collect(),
            accept_paths: bytes(flag_value(args, "accept-paths")),
            reject_paths: bytes(KUBECTL_DEFAULT_REJECT_PATHS),
        }
    }

    fn method_passes(&self, method: &str) -> bool {
        !self.reject_methods.iter().any(|r| r.is_match(method))
    }

    /// Whether `GET target` reaches the API. `None`: net/http answers 400 first.
    fn path_passes(&self, target: &str) -> Option<bool> {
        let path = url_path(target)?;
        Some(
            !self.reject_paths.iter().any(|r| r.is_match(&path)) && self.accept_paths.iter().any(|r| r.is_match(&path)),
        )
    }
}

/// `req.URL.Path` of a request target as Go's net/url computes it: the part before
/// `?`, percent-decoded (`None` for a malformed escape, which net/http refuses).
fn url_path(target: &str) -> Option<Vec<u8>> {
    let raw = target.split('?').next().unwrap().as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The arguments of a unit's `ExecStart=` value, `$$` unescaped.
fn exec_args(value: &str) -> Vec<String> {
    value.replace("$$", "$").split_whitespace().map(String::from).collect()
}

fn command_of(container: &Value) -> Vec<String> {
    array(&container["command"], "command")
        .iter()
        .map(|a| str_of(a, "command").to_string())
        .collect()
}

/// The shipped Corefile `text` switched to `pods verified`.
fn pods_verified(text: &str) -> String {
    assert_eq!(text.matches("pods insecure").count(), 1, "one `pods insecure`");
    text.replace("pods insecure", "pods verified")
}

/// One kubectl proxy we ship: where, its arguments, and the Corefile it serves.
struct ShippedProxy {
    who: &'static str,
    args: Vec<String>,
    corefile: String,
}

/// The sidecar and the unit as shipped, and each with its `pods verified` variant
/// (pods-verified/apiproxy-patch.yaml, systemd/clusterdns-apiproxy-pods.conf).
fn shipped_proxies() -> Vec<ShippedProxy> {
    let patch = read_yaml(&read("packaging/kubernetes/pods-verified/apiproxy-patch.yaml")).unwrap();
    assert_eq!(patch.len(), 1);
    let patched = array(&patch[0]["spec"]["template"]["spec"]["containers"], "containers");
    assert_eq!(patched.len(), 1, "the patch touches the sidecar only");
    assert_eq!(patched[0]["name"], "apiproxy");
    assert_eq!(
        patched[0].as_object().unwrap().len(),
        2,
        "the patch changes the sidecar's command only"
    );
    let dropin = read("packaging/systemd/clusterdns-apiproxy-pods.conf");
    let dropin_exec = unit_values(&dropin, "ExecStart");
    assert_eq!(dropin_exec.len(), 2, "ExecStart= (reset), then the command");
    assert_eq!(dropin_exec[0], "", "the drop-in must reset ExecStart first");
    let configmap = configmap_corefile().0;
    let host = read("packaging/etc/Corefile");
    vec![
        ShippedProxy {
            who: "sidecar",
            args: command_of(&container("apiproxy")),
            corefile: configmap.clone(),
        },
        ShippedProxy {
            who: "sidecar + pods-verified/apiproxy-patch.yaml",
            args: command_of(&patched[0]),
            corefile: pods_verified(&configmap),
        },
        ShippedProxy {
            who: "unit",
            args: exec_args(&unit_value(
                &read("packaging/systemd/clusterdns-apiproxy.service"),
                "ExecStart",
            )),
            corefile: host.clone(),
        },
        ShippedProxy {
            who: "unit + apiproxy-pods.conf",
            args: exec_args(&dropin_exec[1]),
            corefile: pods_verified(&host),
        },
        ShippedProxy {
            who: "node-local sidecar",
            args: command_of(&node_local_container("apiproxy")),
            corefile: node_local_corefile("Corefile"),
        },
    ]
}

/// Methods as a client may send them, case and all (net/http passes the token on as
/// it came; the empty method it refuses itself, but the filter must too).
const METHODS: &[&str] = &[
    "GET",
    "get",
    "Get",
    "gET",
    "GEt",
    "GeT",
    "HEAD",
    "head",
    "POST",
    "post",
    "Post",
    "PUT",
    "put",
    "PATCH",
    "patch",
    "DELETE",
    "delete",
    "Delete",
    "OPTIONS",
    "options",
    "TRACE",
    "trace",
    "CONNECT",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "SEARCH",
    "PRI",
    "QUERY",
    "",
    "G",
    "GE",
    "GETS",
    "GET_",
    "GETGET",
    "XGET",
    "_GET",
    "GET ",
    " GET",
    "GET\n",
    "\nGET",
    "G\nET",
];

/// Paths that must never reach the API, whatever the Corefile: other resources,
/// subresources, single objects, namespaced lists, traversal, encodings, near misses.
const FORBIDDEN_PATHS: &[&str] = &[
    "",
    "/",
    "/api",
    "/api/v1",
    "/apis",
    "/version",
    "/api/v1/secrets",
    "/api/v1/secrets?watch=1",
    "/api/v1/configmaps",
    "/api/v1/nodes",
    "/api/v1/endpoints",
    "/api/v1/serviceaccounts",
    "/api/v1/namespaces/kube-system/secrets",
    "/api/v1/namespaces/kube-system/services",
    "/api/v1/namespaces/default",
    "/api/v1/namespaces/x/pods/y",
    "/api/v1/namespaces/x/pods/y/exec",
    "/api/v1/namespaces/x/pods/y/exec?command=sh&stdin=true",
    "/api/v1/namespaces/x/pods/y/attach",
    "/api/v1/namespaces/x/pods/y/portforward",
    "/api/v1/namespaces/x/pods/y/log",
    "/api/v1/namespaces/x/pods/y/proxy/",
    "/api/v1/namespaces/x/services/y/proxy/",
    "/api/v1/nodes/n/proxy/",
    "/api/v1/services/x",
    "/api/v1/services/",
    "/api/v1/services/x/proxy",
    "/api/v1/servicesx",
    "/api/v1/services.json",
    "/api/v1/pods/../secrets",
    "/api/v1/services/../secrets",
    "/api/v1/services/../../api/v1/secrets",
    "/api/v1/services/%2e%2e/secrets",
    "/api/v1/services%2F..%2Fsecrets",
    "/api/v1/services%2fx",
    "/api/v1/%73ecrets",
    "/api/v1/services%0A",
    "/api/v1/services%0a",
    "/api/v1/services%00",
    "/api/v1/services%20",
    "/api/v1/services%3Fwatch=1",
    "/api/v1/services/%0A",
    "//api/v1/services",
    "/./api/v1/services",
    "/x/api/v1/services",
    "/api//v1/services",
    "/API/v1/services",
    "/api/V1/services",
    "/api/v1/Services",
    "/api/v2/services",
    "/apis/discovery.k8s.io/v1/endpointslices/x",
    "/apis/discovery.k8s.io/v1/namespaces/x/endpointslices",
    "/apis/discovery.k8s.io/v1beta1/endpointslices",
    "/apis/discoveryXk8s.io/v1/endpointslices",
    "/apis/discovery.k8sXio/v1/endpointslices",
    "/apis/discovery.k8s.io/v1/endpointslices/../../../../api/v1/secrets",
    "/apis/apps/v1/deployments",
    "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "/api/v1/pods/x",
    "/api/v1/podsx",
];

/// kubectl proxy passes GET and nothing else, on exactly the collections the
/// Corefile behind it watches, with any query: checked for every shipped proxy
/// against tables of methods and paths, with Go's matching rules (see
/// [`ProxyFilter`]).
#[test]
fn kubectl_proxy_passes_only_get_on_the_watched_collections() {
    let methods: BTreeSet<String> = shipped_proxies()
        .iter()
        .map(|p| flag_value(&p.args, "reject-methods").to_string())
        .collect();
    assert_eq!(methods.len(), 1, "one method filter everywhere: {methods:?}");
    for proxy in shipped_proxies() {
        let who = proxy.who;
        let args = &proxy.args;
        assert_eq!(&args[1], "proxy", "{who}");
        assert_eq!(flag_value(args, "address"), "127.0.0.1", "{who}");
        assert_eq!(
            format!("http://127.0.0.1:{}", flag_value(args, "port")),
            kubernetes_endpoint(&parse_corefile(&proxy.corefile)),
            "{who}: the proxy listens where its Corefile reads the API"
        );
        let filter = ProxyFilter::new(args);

        for &m in METHODS {
            assert_eq!(
                filter.method_passes(m),
                m == "GET",
                "{who}: method {m:?} (only exactly GET may pass)"
            );
        }

        let watched = watched_paths(&parse_corefile(&proxy.corefile));
        // The accepted language is finite and exactly the watched collections.
        assert_eq!(
            regex_language(flag_value(args, "accept-paths")),
            watched,
            "{who}: --accept-paths"
        );
        for path in watched_resources().into_iter().map(|r| r.path()) {
            let want = watched.contains(path);
            // The watcher's list and watch requests, and any other query: the filter
            // never sees the query string.
            for query in [
                "",
                "?limit=500",
                "?limit=500&continue=abc",
                "?watch=1&resourceVersion=12345&allowWatchBookmarks=true&timeoutSeconds=300",
                "?labelSelector=a%3Db&watch=1",
                "?watch=1&resourceVersion=1/../../secrets",
            ] {
                let target = format!("{path}{query}");
                assert_eq!(filter.path_passes(&target), Some(want), "{who}: GET {target}");
            }
            // A percent-encoded letter decodes to the same collection: kubectl
            // forwards it as sent and the API server decodes it alike.
            let last = path.rfind('/').unwrap() + 1;
            let encoded = format!("{}%{:02X}{}", &path[..last], path.as_bytes()[last], &path[last + 1..]);
            assert_eq!(filter.path_passes(&encoded), Some(want), "{who}: GET {encoded}");
            for suffix in ["/", "/x", "x", "%2F", "%0A", "/..", "/../secrets", "/x/status"] {
                let target = format!("{path}{suffix}");
                assert_eq!(filter.path_passes(&target), Some(false), "{who}: GET {target}");
            }
        }
        for &target in FORBIDDEN_PATHS {
            assert_ne!(
                filter.path_passes(target),
                Some(true),
                "{who}: GET {target} must not pass"
            );
        }
        // Pods: only behind `pods verified`.
        let pods = watched.contains(Resource::Pods.path());
        assert_eq!(
            pods,
            who.contains("pods"),
            "{who}: pods are watched only with `pods verified`"
        );
        assert_eq!(filter.path_passes("/api/v1/pods?watch=1"), Some(pods), "{who}: pods");
    }
    // The tables mean something: an unanchored filter, or `.` for `[.]`, would let
    // some of them through.
    let loose: Vec<String> = [
        "kubectl",
        "proxy",
        "--reject-methods=POST|PUT|PATCH|DELETE",
        "--accept-paths=/api/v1/(namespaces|services)$,^/apis/discovery.k8s.io/v1/endpointslices",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let loose = ProxyFilter::new(&loose);
    assert!(
        ["get", "post", "HEAD", "PROPFIND", ""]
            .iter()
            .all(|m| loose.method_passes(m))
    );
    for target in [
        "/x/api/v1/services",
        "/apis/discoveryXk8s.io/v1/endpointslices",
        "/apis/discovery.k8s.io/v1/endpointslices/x",
    ] {
        assert_eq!(loose.path_passes(target), Some(true), "{target}");
    }
}

/// The `pods verified` variants differ from what they replace in --accept-paths only.
#[test]
fn pods_verified_variants_change_only_the_accepted_paths() {
    let proxies = shipped_proxies();
    for (base, variant) in [(&proxies[0], &proxies[1]), (&proxies[2], &proxies[3])] {
        let strip = |args: &[String]| -> Vec<String> {
            args.iter()
                .filter(|a| !a.starts_with("--accept-paths="))
                .cloned()
                .collect()
        };
        assert_eq!(strip(&base.args), strip(&variant.args), "{}", variant.who);
        let added: BTreeSet<String> = regex_language(flag_value(&variant.args, "accept-paths"))
            .difference(&regex_language(flag_value(&base.args, "accept-paths")))
            .cloned()
            .collect();
        assert_eq!(added, [Resource::Pods.path().to_string()].into(), "{}", variant.who);
    }
}

// ---------------------------------------------------------------------------------
// The Debian package: Corefile, units, man page, metadata.

#[test]
fn packaged_corefile_is_valid_binds_loopback_and_reads_the_local_proxy() {
    let text = read("packaging/etc/Corefile");
    let (code, out) = check_corefile(&text);
    assert_eq!(code, 0, "clusterdns -check on packaging/etc/Corefile: {out}");
    let corefile = config::parse_str(&text, "Corefile", Path::new(".")).unwrap();
    let block = &corefile.blocks[0];
    let bind: Vec<&str> = directives(block, "bind")[0].args.iter().map(|t| t.as_str()).collect();
    assert_eq!(
        bind,
        ["127.0.0.1"],
        "exact addresses: coexists with systemd-resolved on 127.0.0.53"
    );
    let k8s = directives(block, "kubernetes")[0];
    let endpoint = k8s.options().iter().find(|o| o.name.as_str() == "endpoint").unwrap();
    assert_eq!(endpoint.args[0].as_str(), "http://127.0.0.1:8001");
    assert!(text.contains("kubectl proxy --port 8001") && text.contains("clusterdns-apiproxy"));
    assert!(text.contains("clusterdns-kubeconfig"), "the Corefile names the helper");
    // The HTTP endpoints stay on loopback too: on a host, a wildcard is every address
    // of the node, open to every pod of the cluster, and nothing remote probes them.
    let health = health::parse(&directives(block, "health")).unwrap();
    let ready = ready::parse(&directives(block, "ready")).unwrap();
    let metrics = prometheus::address(directives(block, "prometheus")[0]).unwrap();
    for (name, addr) in [("health", health.addr), ("ready", ready.addr), ("prometheus", metrics)] {
        assert!(addr.ip().is_loopback(), "{name} listens on {addr}: want 127.0.0.1");
    }
    assert!(!health.lameduck.is_zero());
    // The same plugins as the ConfigMap's (the kubeadm shape), plus bind.
    let (_, cm) = configmap_corefile();
    let names = |b: &config::ServerBlock| -> Vec<String> {
        b.directives
            .iter()
            .map(|d| d.name.as_str().to_string())
            .filter(|n| n != "bind")
            .collect()
    };
    assert_eq!(names(block), names(&cm.blocks[0]));
}

#[test]
fn clusterdns_unit_has_the_promised_settings() {
    let unit = read("packaging/systemd/clusterdns.service");
    assert_eq!(unit_value(&unit, "Type"), "notify");
    assert_eq!(
        unit_value(&unit, "ExecStart"),
        "/usr/bin/clusterdns -conf /etc/clusterdns/Corefile"
    );
    let reload = unit_value(&unit, "ExecReload");
    assert!(
        reload.starts_with("/bin/sh -c ") && reload.contains("kill -USR1"),
        "{reload}"
    );
    assert!(!reload.contains("/bin/kill"), "a minimal root has no /bin/kill");
    assert_eq!(unit_value(&unit, "Restart"), "on-failure");
    assert!(!unit_value(&unit, "WatchdogSec").is_empty());
    assert_eq!(unit_value(&unit, "DynamicUser"), "yes");
    assert_eq!(unit_value(&unit, "AmbientCapabilities"), "CAP_NET_BIND_SERVICE");
    assert_eq!(unit_value(&unit, "CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
    for (key, want) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
    ] {
        assert_eq!(unit_value(&unit, key), want, "{key}");
    }
    assert!(unit_values(&unit, "SystemCallFilter").contains(&"@system-service".to_string()));
    // AF_NETLINK: getifaddrs(3) for `bind IFACE` (without it `bind lo` fails to start,
    // checked under systemd by .ci/package-test).
    assert_eq!(
        unit_value(&unit, "RestrictAddressFamilies"),
        "AF_INET AF_INET6 AF_UNIX AF_NETLINK"
    );

    // Package installs what the units name.
    let cargo = read("Cargo.toml");
    for needle in [
        r#"["packaging/etc/Corefile", "etc/clusterdns/Corefile", "644"]"#,
        r#"["packaging/debian/default", "etc/default/clusterdns", "644"]"#,
        r#"["target/release/clusterdns", "usr/bin/", "755"]"#,
        r#"["packaging/clusterdns-kubeconfig", "usr/sbin/clusterdns-kubeconfig", "755"]"#,
        r#"["packaging/clusterdns-kubeconfig.8", "usr/share/man/man8/clusterdns-kubeconfig.8", "644"]"#,
        r#"["packaging/systemd/clusterdns-apiproxy-pods.conf", "usr/share/clusterdns/apiproxy-pods.conf", "644"]"#,
        r#"conf-files = ["/etc/clusterdns/Corefile", "/etc/default/clusterdns"]"#,
        r#"unit-name = "clusterdns", enable = true, start = true"#,
        r#"unit-name = "clusterdns-apiproxy", enable = false, start = false"#,
    ] {
        assert!(
            cargo.contains(needle),
            "Cargo.toml [package.metadata.deb] lacks {needle}"
        );
    }
}

/// The socket unit holds what the packaged Corefile listens on, as several UDP sockets
/// in one SO_REUSEPORT group; the service takes them; the package never restarts the
/// socket unit (an upgrade restarts the service only, so the sockets stay open).
#[test]
fn socket_unit_holds_the_corefile_addresses_and_the_package_never_restarts_it() {
    let socket = read("packaging/systemd/listen/clusterdns-listen.socket");
    let udp = unit_values(&socket, "ListenDatagram");
    let tcp = unit_values(&socket, "ListenStream");
    assert!(udp.len() >= 2, "one UDP socket per worker, several: {udp:?}");
    assert_eq!(unit_value(&socket, "ReusePort"), "yes");
    assert_eq!(unit_value(&socket, "Service"), "clusterdns.service");
    let corefile = parse_corefile(&read("packaging/etc/Corefile"));
    let mut listens: Vec<String> = Vec::new();
    for block in &corefile.blocks {
        let ports: Vec<String> = block
            .keys
            .iter()
            .map(|k| k.as_str().rsplit(':').next().unwrap().to_string())
            .collect();
        for b in directives(block, "bind") {
            for a in &b.args {
                for p in &ports {
                    listens.push(format!("{}:{p}", a.as_str()));
                }
            }
        }
    }
    listens.sort();
    listens.dedup();
    let mut held = udp.clone();
    held.sort();
    held.dedup();
    assert_eq!(held, listens, "ListenDatagram= against the Corefile's bind");
    let mut held_tcp = tcp.clone();
    held_tcp.sort();
    held_tcp.dedup();
    assert_eq!(held_tcp, listens, "ListenStream= against the Corefile's bind");

    let service = read("packaging/systemd/clusterdns.service");
    assert_eq!(unit_value(&service, "Sockets"), "clusterdns-listen.socket");
    assert_eq!(unit_value(&service, "Requires"), "clusterdns-listen.socket");
    assert!(unit_values(&service, "After").contains(&"clusterdns-listen.socket".to_string()));
    let cargo = read("Cargo.toml");
    assert!(
        cargo.contains(
            r#"unit-name = "clusterdns-listen", enable = true, start = true, restart-after-upgrade = false, stop-on-upgrade = false"#
        ),
        "the socket unit must be neither restarted nor stopped on upgrade"
    );
    // cargo-deb, like dh_installsystemd, falls back to PACKAGE.service for a unit
    // name's service: in packaging/systemd that would install a second copy of
    // clusterdns.service as clusterdns-listen.service (seen: two servers under two
    // dynamic users). Its own directory holds the socket unit alone.
    let dir: Vec<_> = std::fs::read_dir(root().join("packaging/systemd/listen"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dir, ["clusterdns-listen.socket"]);
    assert!(cargo.contains(r#"unit-scripts = "packaging/systemd/listen", unit-name = "clusterdns-listen""#));
}

/// The kubeconfig clusterdns-kubeconfig writes by default.
const PROXY_KUBECONFIG: &str = "/etc/clusterdns/apiproxy.kubeconfig";

/// The proxy unit runs as a dynamic user with no capabilities, gets the list/watch
/// kubeconfig as a systemd credential, and never falls back to another kubeconfig.
#[test]
fn apiproxy_unit_reads_only_the_list_watch_kubeconfig_as_a_dynamic_user() {
    let proxy = read("packaging/systemd/clusterdns-apiproxy.service");
    assert_eq!(unit_value(&proxy, "Before"), "clusterdns.service");
    assert_eq!(unit_value(&proxy, "WantedBy"), "clusterdns.service");
    assert_eq!(unit_value(&proxy, "DynamicUser"), "yes");
    assert_eq!(unit_value(&proxy, "CapabilityBoundingSet"), "");
    assert!(unit_values(&proxy, "AmbientCapabilities").is_empty());
    assert!(unit_values(&proxy, "User").is_empty());
    for (key, want) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
    ] {
        assert_eq!(unit_value(&proxy, key), want, "{key}");
    }
    assert_eq!(
        unit_value(&proxy, "LoadCredential"),
        format!("kubeconfig:{PROXY_KUBECONFIG}")
    );
    let args = exec_args(&unit_value(&proxy, "ExecStart"));
    assert_eq!(
        flag_value(&args, "kubeconfig"),
        "%d/kubeconfig",
        "the credential, nothing from the environment"
    );
    // Missing, the credential fails the start once (243/CREDENTIALS), and the stop
    // command says why.
    assert_eq!(unit_value(&proxy, "RestartPreventExitStatus"), "243");
    let explain = unit_value(&proxy, "ExecStopPost");
    assert!(
        explain.starts_with("/bin/sh -c ")
            && explain.contains(&format!("test -e {PROXY_KUBECONFIG} ||"))
            && explain.contains("run clusterdns-kubeconfig"),
        "{explain}"
    );
    // The environment file is optional and sets no kubeconfig.
    assert_eq!(unit_value(&proxy, "EnvironmentFile"), "-/etc/default/clusterdns");
    let default = read("packaging/debian/default");
    for line in default.lines().filter(|l| significant(l)) {
        assert!(!line.contains("KUBECONFIG"), "/etc/default/clusterdns: {line}");
    }
    assert!(default.contains(PROXY_KUBECONFIG) && default.contains("clusterdns-kubeconfig"));
    // admin.conf appears only as what the proxy never falls back to.
    for line in proxy.lines().filter(|l| significant(l)) {
        assert!(
            !line.contains("admin.conf") || line.contains("never falls back to admin.conf"),
            "{line}"
        );
    }
    // The helper writes where the unit reads, and the purge removes it.
    let helper = read("packaging/clusterdns-kubeconfig");
    assert!(helper.contains(&format!("\nout={PROXY_KUBECONFIG}\n")));
    assert!(helper.contains("\nadmin=/etc/kubernetes/admin.conf\n"));
    let postrm = read("packaging/debian/postrm");
    assert!(postrm.contains("#DEBHELPER#") && postrm.contains(&format!("rm -f {PROXY_KUBECONFIG}")));
}

#[test]
fn man_page_documents_every_flag_and_plugin() {
    let man = read("packaging/clusterdns.8");
    for line in clusterdns::cli::USAGE.lines() {
        let Some(flag) = line.trim().strip_prefix('-') else {
            continue;
        };
        let flag = flag.split_whitespace().next().unwrap();
        let roff = format!("\\-{}", flag.replace('-', "\\-"));
        assert!(
            man.contains(&roff),
            "clusterdns.8 does not document -{flag} (as {roff})"
        );
    }
    for plugin in clusterdns::plugin::implemented() {
        assert!(
            man.lines().any(|l| l.starts_with(&format!(".B {plugin}"))),
            "clusterdns.8 does not describe the {plugin} plugin"
        );
    }
    for signal in ["SIGUSR1", "SIGTERM", "SIGQUIT", "SIGHUP"] {
        assert!(man.contains(signal), "clusterdns.8 does not mention {signal}");
    }
}

/// clusterdns-kubeconfig(8) documents every option of the script's usage, its
/// environment and its files; clusterdns(8) points to it.
#[test]
fn helper_man_page_documents_its_options_and_files() {
    let man = read("packaging/clusterdns-kubeconfig.8");
    let helper = read("packaging/clusterdns-kubeconfig");
    let usage = helper
        .lines()
        .find(|l| l.starts_with("usage: $me "))
        .expect("a usage line");
    let mut options: Vec<&str> = usage
        .split(|c: char| c == '[' || c == ']' || c.is_whitespace())
        .filter(|w| w.starts_with("--"))
        .collect();
    options.push("--help");
    assert!(options.contains(&"--pods") && options.contains(&"--output"), "{usage}");
    for option in options {
        let roff = option.replace('-', "\\-");
        assert!(man.contains(&roff), "clusterdns-kubeconfig.8 lacks {option}");
    }
    for needle in [
        "KUBECTL",
        "/etc/clusterdns/apiproxy.kubeconfig",
        "/etc/kubernetes/admin.conf",
        "/usr/share/clusterdns/apiproxy\\-pods.conf",
        "kube\\-system/clusterdns\\-host",
        "kube\\-system/clusterdns\\-host\\-token",
        "system:clusterdns",
    ] {
        assert!(man.contains(needle), "clusterdns-kubeconfig.8 lacks {needle}");
    }
    let main = read("packaging/clusterdns.8");
    assert!(
        main.contains("clusterdns\\-kubeconfig"),
        "clusterdns.8 must name the helper"
    );
    assert!(
        !main.contains("admin.conf > /etc/default"),
        "no admin.conf for the proxy"
    );
}

/// The text of the here-document `<<'TAG'` in the helper.
fn helper_heredoc(tag: &str) -> String {
    let helper = read("packaging/clusterdns-kubeconfig");
    let open = format!("<<'{tag}'");
    let start = helper
        .lines()
        .position(|l| l.contains(&open))
        .unwrap_or_else(|| panic!("no {open} in the helper"));
    helper
        .lines()
        .skip(start + 1)
        .take_while(|l| *l != tag)
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A scratch directory with a stand-in kubectl for clusterdns-kubeconfig: it records
/// each call and what `apply -f -` reads, and answers the few requests the script
/// makes (`config view` with the `STUB_SERVER`/`STUB_CA` values, the Secret's token
/// `STUB_TOKEN`, base64, after `STUB_EMPTY_READS` empty reads, and `get --raw` with
/// success unless `STUB_VERIFY=fail`).
struct HelperRig {
    dir: PathBuf,
}

impl HelperRig {
    fn new(tag: &str) -> HelperRig {
        let dir = std::env::temp_dir().join(format!("clusterdns-helper-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("admin.conf"),
            "# an admin kubeconfig (the stub never reads it)\n",
        )
        .unwrap();
        let stub = r#"#!/bin/sh
d=$STUB_DIR
printf '%s\n' "$*" >>"$d/calls"
case "$*" in
    *" apply -f -")
        n=$(cat "$d/applies" 2>/dev/null || echo 0)
        cat >"$d/applied.$n"
        echo $((n + 1)) >"$d/applies"
        echo "applied" ;;
    *" delete clusterrolebinding "*) echo "deleted" ;;
    *" get secret "*)
        r=$(cat "$d/reads" 2>/dev/null || echo 0)
        echo $((r + 1)) >"$d/reads"
        [ "$r" -lt "${STUB_EMPTY_READS:-0}" ] || printf '%s' "$STUB_TOKEN" | base64 -w0 ;;
    *"cluster.server}"*) printf '%s' "$STUB_SERVER" ;;
    *"cluster.certificate-authority-data}"*) printf '%s' "$STUB_CA" ;;
    "--kubeconfig "*" get --raw /api/v1/namespaces?limit=1")
        cp "$2" "$d/verified"
        [ "${STUB_VERIFY:-ok}" = ok ] || { echo "error: Unauthorized" >&2; exit 1; }
        echo '{"kind":"NamespaceList","items":[]}' ;;
    *) echo "stub kubectl: unexpected call: $*" >&2; exit 2 ;;
esac
"#;
        std::fs::write(dir.join("kubectl"), stub).unwrap();
        Command::new("chmod")
            .arg("755")
            .arg(dir.join("kubectl"))
            .status()
            .unwrap();
        HelperRig { dir }
    }

    fn out(&self) -> PathBuf {
        self.dir.join("etc/apiproxy.kubeconfig")
    }

    /// Runs the helper with `args` (after `--output OUT`) and `env`: (exit code,
    /// stdout + stderr).
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
        for f in ["calls", "applies", "reads", "verified"] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
        let mut cmd = Command::new("sh");
        cmd.arg(root().join("packaging/clusterdns-kubeconfig"))
            .arg("--output")
            .arg(self.out())
            .args(args)
            .env("KUBECTL", self.dir.join("kubectl"))
            .env("STUB_DIR", &self.dir)
            .env("STUB_SERVER", "https://192.0.2.1:6443")
            .env("STUB_CA", CA_DATA)
            .env("STUB_TOKEN", TOKEN);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.join("calls")).unwrap_or_default()
    }

    /// The documents applied by the call numbered `n`, by kind and name.
    fn applied(&self, n: usize) -> Vec<Value> {
        read_yaml(&std::fs::read_to_string(self.dir.join(format!("applied.{n}"))).unwrap()).unwrap()
    }
}

impl Drop for HelperRig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// base64 of a PEM certificate's first line, as `certificate-authority-data` holds it.
const CA_DATA: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJmYWtlCi0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K";
/// A token of JWT shape.
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl-_";

/// The one document of `kind` and `name` in `docs`.
fn find_doc<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "want one {kind} {name}");
    found[0]
}

/// clusterdns-kubeconfig applies exactly the shipped ClusterRole, a ServiceAccount of
/// its own bound to it and a long-lived token Secret, and writes a 0600 kubeconfig
/// with the admin kubeconfig's server and CA and that token, checked before it is
/// moved into place; a second run changes nothing.
#[test]
fn kubeconfig_helper_writes_a_list_watch_kubeconfig_idempotently() {
    let rig = HelperRig::new("ok");
    let admin = rig.dir.join("admin.conf");
    let (code, out) = rig.run(&[admin.to_str().unwrap()], &[("STUB_EMPTY_READS", "1")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("systemctl enable --now clusterdns-apiproxy"), "{out}");

    // What it applied: the shipped ClusterRole, the identity, the Secret.
    let docs = rig.applied(0);
    assert_eq!(docs.len(), 4, "{docs:?}");
    let shipped = object("ClusterRole");
    let role = find_doc(&docs, "ClusterRole", str_of(&shipped["metadata"]["name"], "name"));
    assert_eq!(role, &shipped, "the helper's ClusterRole must be rbac.yaml's");
    assert_eq!(
        Value::Array(docs.clone()),
        Value::Array(read_yaml(&helper_heredoc("RBAC")).unwrap())
    );
    let account = find_doc(&docs, "ServiceAccount", "clusterdns-host");
    assert_eq!(account["metadata"]["namespace"], "kube-system");
    assert_ne!(
        account["metadata"]["name"],
        object("ServiceAccount")["metadata"]["name"],
        "an identity of its own, not the in-cluster Deployment's"
    );
    binds_to(
        find_doc(&docs, "ClusterRoleBinding", "system:clusterdns-host"),
        role,
        account,
    );
    let secret = find_doc(&docs, "Secret", "clusterdns-host-token");
    assert_eq!(secret["type"], "kubernetes.io/service-account-token");
    assert_eq!(secret["metadata"]["namespace"], "kube-system");
    assert_eq!(
        secret["metadata"]["annotations"]["kubernetes.io/service-account.name"],
        "clusterdns-host"
    );
    let calls = rig.calls();
    assert!(
        calls.contains("delete clusterrolebinding system:clusterdns-host:pods --ignore-not-found"),
        "without --pods, a pods grant left from before goes: {calls}"
    );
    assert_eq!(
        calls.matches(" get secret ").count(),
        2,
        "waited for the token: {calls}"
    );
    assert!(!calls.contains(TOKEN), "the token never goes on a command line");
    for line in calls.lines() {
        assert!(
            line.starts_with(&format!("--kubeconfig {} ", admin.display()))
                || line.ends_with(" get --raw /api/v1/namespaces?limit=1"),
            "every cluster call uses the admin kubeconfig given: {line}"
        );
    }

    // The kubeconfig.
    let path = rig.out();
    let text = std::fs::read_to_string(&path).unwrap();
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "mode of {}", path.display());
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!((meta.uid(), meta.gid()), (0, 0));
    }
    assert_eq!(
        std::fs::read_to_string(rig.dir.join("verified")).unwrap(),
        text,
        "checked with one list request before it replaced the file"
    );
    let config = &read_yaml(&text).unwrap()[0];
    assert_eq!(config["kind"], "Config");
    let cluster = &config["clusters"][0];
    assert_eq!(cluster["cluster"]["server"], "https://192.0.2.1:6443");
    assert_eq!(cluster["cluster"]["certificate-authority-data"], CA_DATA);
    let user = &config["users"][0];
    assert_eq!(user["name"], "clusterdns-host");
    assert_eq!(user["user"]["token"], TOKEN);
    assert_eq!(user["user"].as_object().unwrap().len(), 1, "a token and nothing else");
    let context = &config["contexts"][0];
    assert_eq!(config["current-context"], context["name"]);
    assert_eq!(context["context"]["cluster"], cluster["name"]);
    assert_eq!(context["context"]["user"], user["name"]);
    let leftovers: Vec<_> = std::fs::read_dir(rig.dir.join("etc")).unwrap().flatten().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");

    // Again: the same documents, the same file.
    let (code, out) = rig.run(&[admin.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(rig.applied(0), docs);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

/// With --pods the helper also grants pods, with pods-verified/rbac-pods.yaml's
/// ClusterRole bound to its own ServiceAccount.
#[test]
fn kubeconfig_helper_grants_pods_only_with_the_pods_option() {
    let rig = HelperRig::new("pods");
    let admin = rig.dir.join("admin.conf");
    let (code, out) = rig.run(&["--pods", admin.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("pods on"), "{out}");
    let docs = rig.applied(1);
    assert_eq!(
        Value::Array(docs.clone()),
        Value::Array(read_yaml(&helper_heredoc("PODS")).unwrap())
    );
    let shipped = documents("packaging/kubernetes/pods-verified/rbac-pods.yaml");
    let role = find_doc(&docs, "ClusterRole", "system:clusterdns:pods");
    assert_eq!(
        role, &shipped["ClusterRole"],
        "the helper's pods role must be rbac-pods.yaml's"
    );
    let account = find_doc(&rig.applied(0), "ServiceAccount", "clusterdns-host").clone();
    binds_to(
        find_doc(&docs, "ClusterRoleBinding", "system:clusterdns-host:pods"),
        role,
        &account,
    );
    assert!(!rig.calls().contains(" delete "), "{}", rig.calls());
}

/// Every refusal exits 1 with a message and leaves the old kubeconfig as it was.
#[test]
fn kubeconfig_helper_refuses_bad_input_and_keeps_the_old_file() {
    let rig = HelperRig::new("refuse");
    let admin = rig.dir.join("admin.conf");
    let admin = admin.to_str().unwrap();
    let missing = rig.dir.join("no-such.conf");
    std::fs::write(rig.out(), "old\n").unwrap();
    /// One bad input: what it is, the arguments and stub settings, the message.
    struct Refusal<'a> {
        what: &'a str,
        args: Vec<&'a str>,
        env: Vec<(&'a str, &'a str)>,
        message: &'a str,
    }
    let case = |what, args, env, message| Refusal {
        what,
        args,
        env,
        message,
    };
    let cases = [
        case(
            "no admin kubeconfig",
            vec![missing.to_str().unwrap()],
            vec![],
            "cannot read the admin kubeconfig",
        ),
        case("unknown option", vec!["--bogus"], vec![], "unknown option"),
        case(
            "two kubeconfigs",
            vec![admin, admin],
            vec![],
            "one admin kubeconfig only",
        ),
        case(
            "https without a CA",
            vec![admin],
            vec![("STUB_CA", "")],
            "refusing a kubeconfig that does not verify",
        ),
        case(
            "a CA that is not PEM",
            vec![admin],
            vec![("STUB_CA", "bm90IGEgY2VydA==")],
            "not a PEM certificate",
        ),
        case(
            "a CA with other characters",
            vec![admin],
            vec![("STUB_CA", "abc\"def")],
            "not base64",
        ),
        case(
            "a server that is no URL",
            vec![admin],
            vec![("STUB_SERVER", "192.0.2.1:6443")],
            "names no http(s) server",
        ),
        case(
            "a server with a quote",
            vec![admin],
            vec![("STUB_SERVER", "https://x\"y:6443")],
            "unexpected characters",
        ),
        case(
            "a server with a space",
            vec![admin],
            vec![("STUB_SERVER", "https://x y:6443")],
            "unexpected characters",
        ),
        case(
            "a token with a quote",
            vec![admin],
            vec![("STUB_TOKEN", "abc\"def")],
            "not a JWT",
        ),
        case(
            "a token with a newline",
            vec![admin],
            vec![("STUB_TOKEN", "abc\ndef")],
            "not a JWT",
        ),
        case(
            "a kubeconfig that cannot list",
            vec![admin],
            vec![("STUB_VERIFY", "fail")],
            "cannot list namespaces",
        ),
    ];
    for Refusal {
        what,
        args,
        env,
        message,
    } in cases
    {
        let (code, out) = rig.run(&args, &env);
        assert_eq!(code, 1, "{what}: {out}");
        assert!(out.contains(message), "{what}: want {message:?} in {out}");
        assert_eq!(std::fs::read_to_string(rig.out()).unwrap(), "old\n", "{what}");
        let leftovers = std::fs::read_dir(rig.dir.join("etc")).unwrap().count();
        assert_eq!(leftovers, 1, "{what}: a temporary file left behind");
    }
    let (code, out) = rig.run(&["--help"], &[]);
    assert_eq!(
        (code, out.starts_with("usage: clusterdns-kubeconfig")),
        (0, true),
        "{out}"
    );
    assert_eq!(rig.calls(), "", "--help calls nothing");
}

/// A unit with its programs pointed at files that exist here (systemd-analyze verify
/// insists on executables), in a scratch directory.
fn units_for_verification(tag: &str) -> (PathBuf, Vec<PathBuf>) {
    let dir = std::env::temp_dir().join(format!("clusterdns-packaging-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("man/man8")).unwrap();
    for page in ["clusterdns.8", "clusterdns-kubeconfig.8"] {
        std::fs::copy(root().join("packaging").join(page), dir.join("man/man8").join(page)).unwrap();
    }
    let kubectl = if Path::new("/usr/bin/kubectl").exists() {
        "/usr/bin/kubectl"
    } else {
        env!("CARGO_BIN_EXE_clusterdns")
    };
    let mut units = Vec::new();
    for name in [
        "clusterdns.service",
        "clusterdns-apiproxy.service",
        "listen/clusterdns-listen.socket",
    ] {
        let text = read(&format!("packaging/systemd/{name}"))
            .replace("/usr/bin/clusterdns", env!("CARGO_BIN_EXE_clusterdns"))
            .replace("/usr/bin/kubectl", kubectl);
        let path = dir.join(Path::new(name).file_name().unwrap());
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    (dir, units)
}

fn require_systemd_analyze() {
    testkit::tools::require("systemd-analyze", &["--version"], "systemd");
}

#[test]
#[ignore = "needs systemd-analyze (systemd); .ci/run runs it: cargo test --locked -- --ignored"]
fn units_pass_systemd_analyze_verify_with_nothing_on_stderr() {
    require_systemd_analyze();
    let (dir, units) = units_for_verification("verify");
    // Documentation=man:clusterdns(8) is looked up with man(1): point it at the page.
    let man = Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify");
    if man {
        cmd.env("MANPATH", dir.join("man"));
    } else {
        eprintln!("note: man(1) not found: verify runs with --man=no");
        cmd.arg("--man=no");
    }
    let out = cmd.args(&units).output().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );
}

#[test]
#[ignore = "needs systemd-analyze (systemd); .ci/run runs it: cargo test --locked -- --ignored"]
fn units_have_an_exposure_of_at_most_2() {
    require_systemd_analyze();
    let (dir, units) = units_for_verification("security");
    let mut results = Vec::new();
    // The exposure is a service's (a socket unit runs nothing).
    for unit in units.iter().filter(|u| u.extension().is_some_and(|e| e == "service")) {
        // systemd 252 takes the bound as --threshold=20 (tenths); parse the score too.
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(unit)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no score in:\n{text}{}", String::from_utf8_lossy(&out.stderr)));
        eprintln!("{}: exposure {score}", unit.display());
        results.push((unit.display().to_string(), score, out.status.success()));
    }
    let _ = std::fs::remove_dir_all(dir);
    for (unit, score, passed) in results {
        assert!(passed && score <= 2.0, "{unit}: exposure {score} > 2.0");
    }
}

// ---------------------------------------------------------------------------------
// The node-local role (kubernetes/node-local/), the autoscalers (kubernetes/autoscaling/)
// and the image the manifests name.

/// Every document of every `*.yaml` in `dir`, with its file name.
fn manifests_in(dir: &str) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for doc in read_yaml(&std::fs::read_to_string(&f).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}")) {
            out.push((name.clone(), doc));
        }
    }
    out
}

const NODE_LOCAL: &str = "packaging/kubernetes/node-local";
const AUTOSCALING: &str = "packaging/kubernetes/autoscaling";

/// The one object of `kind` in `dir`.
fn object_in(dir: &str, kind: &str) -> Value {
    let all: Vec<Value> = manifests_in(dir)
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(all.len(), 1, "want exactly one {kind} in {dir}");
    all.into_iter().next().unwrap()
}

fn containers_of(workload: &Value, key: &str) -> Vec<Value> {
    array(&workload["spec"]["template"]["spec"][key], key).clone()
}

/// The node-local DaemonSet `name` (the server's, or the API proxy's).
fn node_local_daemonset(name: &str) -> Value {
    let all: Vec<Value> = manifests_in(NODE_LOCAL)
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == "DaemonSet" && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(all.len(), 1, "want one DaemonSet {name}");
    all.into_iter().next().unwrap()
}

const SERVER_DS: &str = "clusterdns-node-local";
const PROXY_DS: &str = "clusterdns-node-local-apiproxy";

/// A container of the server's DaemonSet, or `apiproxy` of the proxy's.
fn node_local_container(name: &str) -> Value {
    let ds = if name == "apiproxy" { PROXY_DS } else { SERVER_DS };
    containers_of(&node_local_daemonset(ds), "containers")
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no node-local container {name}"))
}

/// The node-local ConfigMap's Corefile variant `key` (`Corefile`, `Corefile-forward`).
fn node_local_corefile(key: &str) -> String {
    str_of(&object_in(NODE_LOCAL, "ConfigMap")["data"][key], key).to_string()
}

/// The Corefile-forward variant with its upstream's environment reference filled in,
/// as the kubelet's service links fill it in a pod.
const UPSTREAM_ENV: &str = "{$KUBE_DNS_UPSTREAM_SERVICE_HOST}";

/// The `endpoint` of the first block's `kubernetes` directive.
fn kubernetes_endpoint(corefile: &config::Corefile) -> String {
    let k8s = directives(&corefile.blocks[0], "kubernetes");
    assert_eq!(k8s.len(), 1);
    let endpoints: Vec<&Directive> = k8s[0]
        .options()
        .iter()
        .filter(|o| o.name.as_str() == "endpoint")
        .collect();
    assert_eq!(endpoints.len(), 1);
    endpoints[0].args[0].as_str().to_string()
}

fn args_of(d: &Directive) -> Vec<String> {
    d.args.iter().map(|a| a.as_str().to_string()).collect()
}

/// The `bind` addresses of a block.
fn bind_addresses(block: &config::ServerBlock) -> BTreeSet<String> {
    directives(block, "bind").iter().flat_map(|d| args_of(d)).collect()
}

/// The addresses of notrack.nft's set and of notrack.rules's `-d` matches.
fn notrack_addresses() -> (BTreeSet<String>, BTreeSet<String>) {
    let nft = read(&format!("{NODE_LOCAL}/notrack.nft"));
    let elements = nft
        .lines()
        .find_map(|l| l.trim().strip_prefix("elements = {"))
        .and_then(|l| l.strip_suffix('}'))
        .expect("one `elements = { ... }` line");
    let nft: BTreeSet<String> = elements.split(',').map(|a| a.trim().to_string()).collect();
    let rules = read(&format!("{NODE_LOCAL}/notrack.rules"));
    let mut iptables = BTreeSet::new();
    for line in rules.lines().filter(|l| l.starts_with("-A ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            if *w == "-d" || *w == "-s" {
                let a = words[i + 1].strip_suffix("/32").expect("a /32 address");
                iptables.insert(a.to_string());
            }
        }
        assert!(line.ends_with("-j NOTRACK"), "{line}");
    }
    (nft, iptables)
}

fn env_of(container: &Value, name: &str) -> String {
    let env = array(&container["env"], "env");
    let found: Vec<&Value> = env.iter().filter(|e| e["name"] == name).collect();
    assert_eq!(found.len(), 1, "want one {name} in {env:?}");
    str_of(&found[0]["value"], name).to_string()
}

#[test]
fn node_local_manifests_parse_with_the_expected_kinds() {
    let mut kinds = Vec::new();
    for (file, d) in manifests_in(NODE_LOCAL) {
        let kind = str_of(&d["kind"], "kind").to_string();
        let want_api = match kind.as_str() {
            "ServiceAccount" | "ConfigMap" | "Service" => "v1",
            "ClusterRole" | "ClusterRoleBinding" => "rbac.authorization.k8s.io/v1",
            "DaemonSet" => "apps/v1",
            other => panic!("{file}: unexpected kind {other}"),
        };
        assert_eq!(d["apiVersion"], want_api, "{file}: {kind}");
        if !kind.starts_with("Cluster") {
            assert_eq!(d["metadata"]["namespace"], "kube-system", "{file}: {kind}");
        }
        // Nothing here may collide with the Deployment's objects of the same kind.
        let name = str_of(&d["metadata"]["name"], "name");
        assert!(
            manifests()
                .iter()
                .all(|(_, m)| m["kind"] != kind.as_str() || m["metadata"]["name"] != name),
            "{file}: {kind} {name} is also in packaging/kubernetes/"
        );
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "DaemonSet",
            "Service",
            "ServiceAccount",
        ],
        "the server's DaemonSet and the API proxy's, one of everything else"
    );
}

/// Both Corefile variants pass `clusterdns -check`, listen on exactly the addresses the
/// init step puts on the dummy interface and the rule files exempt from conntrack, one
/// of which is the kube-dns Service's; the watch variant reads the API from the
/// sidecar, the forward variant sends cluster names over TCP to kube-dns-upstream.
#[test]
fn node_local_corefiles_are_valid_and_listen_where_the_setup_puts_addresses() {
    let inits = containers_of(&node_local_daemonset(SERVER_DS), "initContainers");
    let setup = &inits[0];
    let addresses: BTreeSet<String> = env_of(setup, "NODE_LOCAL_ADDRESSES")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(addresses.contains("169.254.20.10"), "the link-local address by default");
    let kube_dns = str_of(&object("Service")["spec"]["clusterIP"], "clusterIP").to_string();
    assert!(addresses.contains(&kube_dns), "the kube-dns Service address {kube_dns}");
    let (nft, iptables) = notrack_addresses();
    assert_eq!(nft, addresses, "notrack.nft");
    assert_eq!(iptables, addresses, "notrack.rules");
    assert!(["nft", "iptables"].contains(&env_of(setup, "NODE_LOCAL_RULES").as_str()));

    let server = node_local_container("clusterdns");
    for key in ["Corefile", "Corefile-forward"] {
        let text = node_local_corefile(key);
        let filled = text.replace(UPSTREAM_ENV, "10.96.0.11");
        let (code, out) = check_corefile(&filled);
        assert_eq!(code, 0, "clusterdns -check on {key}: {out}");
        let corefile = parse_corefile(&filled);
        for block in &corefile.blocks {
            assert_eq!(bind_addresses(block), addresses, "{key}: bind of {:?}", block.keys);
            assert_eq!(ServerKey::parse(&block.keys[0], 53).unwrap().port, 53, "{key}");
        }
        // Everything else goes to the node's resolver, cached, with loop detection.
        let root_block = corefile
            .blocks
            .iter()
            .find(|b| b.keys.iter().any(|k| k.as_str().starts_with(".:")))
            .expect("a `.` block");
        let forward = directives(root_block, "forward");
        assert_eq!(args_of(forward[0]), [".", "/etc/resolv.conf"], "{key}");
        for plugin in ["cache", "loop", "errors", "reload"] {
            assert_eq!(directives(root_block, plugin).len(), 1, "{key}: {plugin}");
        }
        // The probes go where health and ready listen.
        let health = health::parse(&directives(root_block, "health")).unwrap();
        let ready = ready::parse(&directives(root_block, "ready")).unwrap();
        assert!(!health.lameduck.is_zero(), "{key}: lameduck");
        for (probe, addr, path) in [
            ("livenessProbe", health.addr, "/health"),
            ("readinessProbe", ready.addr, "/ready"),
        ] {
            let get = &server[probe]["httpGet"];
            assert_eq!(get["path"], path);
            assert_eq!(get["host"], addr.ip().to_string(), "{key}: {probe} host");
            assert_eq!(get["port"].as_i64(), Some(i64::from(addr.port())), "{key}: {probe}");
            assert!(
                addresses.contains(&addr.ip().to_string()),
                "{key}: {probe} on the node-local address"
            );
        }
    }

    // The watch variant: its endpoint is the sidecar (checked with the other proxies).
    let watch = parse_corefile(&node_local_corefile("Corefile"));
    assert_eq!(watch.blocks.len(), 1);
    assert!(kubernetes_endpoint(&watch).starts_with("http://127.0.0.1:"));

    // The forward variant: cluster zones to kube-dns-upstream over TCP, cached, no API.
    let text = node_local_corefile("Corefile-forward");
    assert!(!text.contains("kubernetes"), "Corefile-forward reads no API");
    let forward = parse_corefile(&text);
    let cluster = forward
        .blocks
        .iter()
        .find(|b| b.keys.iter().any(|k| k.as_str().starts_with("cluster.local")))
        .expect("a cluster.local block");
    let fwd = directives(cluster, "forward");
    assert_eq!(fwd.len(), 1);
    assert_eq!(fwd[0].args[0].as_str(), ".");
    assert!(text.contains(&format!("forward . {UPSTREAM_ENV} {{")));
    let options: BTreeSet<String> = fwd[0].options().iter().map(|o| o.name.as_str().to_string()).collect();
    assert!(options.contains("force_tcp"), "persistent TCP to the cluster DNS");
    assert!(options.contains("expire"), "connections kept beyond the 10 s default");
    assert_eq!(directives(cluster, "cache").len(), 1);
    // The reference is the kubelet's service-link variable of kube-dns-upstream, which
    // selects the cluster DNS pods, not this DaemonSet.
    let upstream = object_in(NODE_LOCAL, "Service");
    let name = str_of(&upstream["metadata"]["name"], "name");
    assert_eq!(
        format!("{{${}_SERVICE_HOST}}", name.to_uppercase().replace('-', "_")),
        UPSTREAM_ENV
    );
    assert_eq!(upstream["spec"]["selector"], object("Service")["spec"]["selector"]);
    assert!(upstream["spec"].get("clusterIP").is_none(), "any free address");
}

#[test]
fn node_local_daemonset_is_host_network_hardened_and_hands_over_on_a_host_path() {
    let ds = node_local_daemonset(SERVER_DS);
    let spec = &ds["spec"];
    let pod = &spec["template"]["spec"];
    let labels = spec["template"]["metadata"]["labels"].as_object().unwrap();
    assert!(
        spec["selector"]["matchLabels"]
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    );
    assert!(
        labels.get("k8s-app").is_none(),
        "the kube-dns Service must not select the node-local pods"
    );
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(
        pod["dnsPolicy"], "Default",
        "its upstream is the node's resolver, never itself"
    );
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert!(
        array(&pod["tolerations"], "tolerations")
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "every node"
    );
    // A surge pod beside the old one on the same node: possible only without declared
    // ports (the scheduler counts those of a host-network pod as host ports).
    let update = &spec["updateStrategy"];
    assert_eq!(update["type"], "RollingUpdate");
    assert_eq!(update["rollingUpdate"]["maxSurge"], 1);
    assert_eq!(update["rollingUpdate"]["maxUnavailable"], 0);
    let proxy_ds = node_local_daemonset(PROXY_DS);
    let containers = containers_of(&ds, "containers");
    let inits = containers_of(&ds, "initContainers");
    let proxies = containers_of(&proxy_ds, "containers");
    assert_eq!(
        containers.len(),
        1,
        "the server alone: a sidecar's fixed host port would stop the surge pod"
    );
    assert_eq!(proxies.len(), 1);
    for c in containers.iter().chain(&inits) {
        assert!(
            c.get("ports").is_none(),
            "{}: no ports on a surging host-network pod",
            c["name"]
        );
    }

    // The hand-over socket lives on a hostPath shared by the node's old and new pod.
    let server = node_local_container("clusterdns");
    let args: Vec<String> = array(&server["args"], "args")
        .iter()
        .map(|a| str_of(a, "args").to_string())
        .collect();
    let at = |flag: &str| -> String {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{flag} in {args:?}"));
        args[i + 1].clone()
    };
    assert_eq!(at("-conf"), "/etc/clusterdns/Corefile");
    let socket = PathBuf::from(at("-handover"));
    // The old pod's process must not exit after handing over (its restarted container
    // would take the sockets back): it waits for the kubelet's SIGTERM.
    assert!(args.iter().any(|a| a == "-handover.wait"), "-handover.wait in {args:?}");
    let dir = socket.parent().unwrap().to_str().unwrap().to_string();
    let mount = array(&server["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == dir.as_str())
        .unwrap_or_else(|| panic!("no mount at {dir}"))
        .clone();
    assert!(
        mount.get("readOnly").is_none_or(|r| r == false),
        "the socket is created there"
    );
    let volume = array(&pod["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap()
        .clone();
    assert_eq!(volume["hostPath"]["type"], "DirectoryOrCreate");
    assert!(
        str_of(&volume["hostPath"]["path"], "path").starts_with("/run/"),
        "gone at reboot"
    );
    let config = array(&pod["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap()
        .clone();
    assert_eq!(
        config["configMap"]["name"],
        object_in(NODE_LOCAL, "ConfigMap")["metadata"]["name"]
    );
    let items = array(&config["configMap"]["items"], "items");
    assert_eq!(items.len(), 1);
    assert!(["Corefile", "Corefile-forward"].contains(&str_of(&items[0]["key"], "key")));
    assert_eq!(items[0]["path"], "Corefile");

    // Capabilities: NET_BIND_SERVICE for the server, NET_ADMIN and NET_RAW only for the
    // init step, nothing for the proxy; no escalation, read-only roots, no CPU limits.
    for c in containers.iter().chain(&inits).chain(&proxies) {
        let name = str_of(&c["name"], "name");
        let add: &[&str] = match name {
            "clusterdns" => &["NET_BIND_SERVICE"],
            "setup" => &["NET_ADMIN", "NET_RAW"],
            "apiproxy" => &[],
            other => panic!("unexpected container {other}"),
        };
        locked_down(c, name, add);
        assert!(
            c["securityContext"].get("privileged").is_none_or(|p| p == false),
            "{name}"
        );
    }
    // The same memory as a Deployment replica: it holds the same index.
    assert_eq!(
        node_local_container("clusterdns")["resources"]["limits"],
        container("clusterdns")["resources"]["limits"]
    );
    // The proxy: on the node's network like the servers, non-root, replaced old pod
    // first (two could not hold its port).
    let proxy_pod = &proxy_ds["spec"]["template"]["spec"];
    assert_eq!(proxy_pod["hostNetwork"], true);
    assert_eq!(proxy_pod["securityContext"]["runAsNonRoot"], true);
    assert!(proxy_pod["securityContext"]["runAsUser"].as_u64().unwrap() > 0);
    assert!(
        proxy_ds["spec"]["updateStrategy"]["rollingUpdate"]
            .get("maxSurge")
            .is_none()
    );
    assert_eq!(proxy_pod["tolerations"], pod["tolerations"], "wherever a server runs");

    // RBAC: exactly what the watch variant lists and watches, for the proxy's account;
    // the server itself gets no token.
    let role = object_in(NODE_LOCAL, "ClusterRole");
    assert_eq!(
        granted(&role),
        pairs(&watched_paths(&parse_corefile(&node_local_corefile("Corefile"))))
    );
    let account = object_in(NODE_LOCAL, "ServiceAccount");
    binds_to(&object_in(NODE_LOCAL, "ClusterRoleBinding"), &role, &account);
    assert_eq!(proxy_pod["serviceAccountName"], account["metadata"]["name"]);
    assert_eq!(pod["automountServiceAccountToken"], false);
}

/// The Deployment and the DaemonSet run the image `.ci/image-check` builds from
/// packaging/Containerfile: `clusterdns:VERSION`, the static binary from scratch, as a
/// user other than root, with no shell to run.
#[test]
fn manifests_name_the_image_the_build_produces() {
    let want = format!("clusterdns:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(container("clusterdns")["image"], want.as_str());
    assert_eq!(node_local_container("clusterdns")["image"], want.as_str());
    let inits = containers_of(&node_local_daemonset(SERVER_DS), "initContainers");
    let setup = &inits[0];
    assert_eq!(
        setup["image"],
        format!("clusterdns-node-local-setup:{}", env!("CARGO_PKG_VERSION")).as_str()
    );
    // The init image carries the script and both rule files, and runs the script.
    let setup_image = read(&format!("{NODE_LOCAL}/Containerfile.node-local-setup"));
    for file in ["node-local-setup.sh", "notrack.nft", "notrack.rules"] {
        assert!(
            setup_image.contains(&format!("{NODE_LOCAL}/{file}")),
            "Containerfile.node-local-setup copies {file}"
        );
    }
    assert!(setup_image.contains("ENTRYPOINT [\"/bin/sh\", \"/node-local/node-local-setup.sh\"]"));
    let check = read(".ci/image-check");
    assert!(
        check.contains("image=clusterdns:$version"),
        "the tag .ci/image-check builds"
    );
    assert!(check.contains("target/x86_64-unknown-linux-gnu/release/clusterdns"));

    let containerfile = read("packaging/Containerfile");
    let lines: Vec<&str> = containerfile
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(lines[0], "FROM scratch");
    let copies: Vec<&&str> = lines.iter().filter(|l| l.starts_with("COPY ")).collect();
    assert_eq!(copies.len(), 1, "the binary and nothing else");
    // The binary by default, as the static build leaves it; .ci/image-check gives the
    // copy without line tables as BINARY.
    assert_eq!(copies[0].trim(), "COPY ${BINARY} /usr/bin/clusterdns");
    assert!(lines.contains(&"ARG BINARY=target/x86_64-unknown-linux-gnu/release/clusterdns"));
    assert!(check.contains("--build-arg BINARY=target/image/clusterdns"));
    assert!(
        !lines.iter().any(|l| l.starts_with("RUN ")),
        "no shell to run anything in"
    );
    let user = lines.iter().find_map(|l| l.strip_prefix("USER ")).expect("a USER");
    assert!(
        user.split(':').all(|id| id.parse::<u32>().unwrap() > 0),
        "non-root: {user}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ENTRYPOINT [\"/usr/bin/clusterdns\"]")),
        "exec form: no shell"
    );
}

#[test]
fn autoscalers_target_the_deployment_and_keep_two_replicas() {
    let deployment = object("Deployment");
    let name = str_of(&deployment["metadata"]["name"], "name");
    let docs = manifests_in(AUTOSCALING);
    let files: BTreeSet<&str> = docs.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(files, ["hpa.yaml", "proportional.yaml"].into());
    for (file, d) in &docs {
        assert_eq!(
            d["metadata"].get("namespace").is_none(),
            str_of(&d["kind"], "kind").starts_with("Cluster"),
            "{file}"
        );
    }
    let pdb_unavailable = object("PodDisruptionBudget")["spec"]["maxUnavailable"]
        .as_u64()
        .unwrap();

    // cluster-proportional-autoscaler: its ConfigMap's linear parameters, its flags,
    // and an identity that may read nodes and set exactly this Deployment's scale.
    let in_file = |kind: &str| -> Value {
        let found: Vec<&Value> = docs
            .iter()
            .filter(|(f, d)| f == "proportional.yaml" && d["kind"] == kind)
            .map(|(_, d)| d)
            .collect();
        assert_eq!(found.len(), 1, "one {kind} in proportional.yaml");
        found[0].clone()
    };
    let configmap = in_file("ConfigMap");
    let linear: Value = serde_json::from_str(str_of(&configmap["data"]["linear"], "linear")).unwrap();
    let keys: BTreeSet<&str> = linear.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "coresPerReplica",
            "nodesPerReplica",
            "min",
            "max",
            "preventSinglePointFailure",
            "includeUnschedulableNodes"
        ]
        .into()
    );
    let min = linear["min"].as_u64().unwrap();
    assert!(
        min >= 2 && min > pdb_unavailable,
        "a drain never takes the last replica"
    );
    assert!(linear["max"].as_u64().unwrap() > min);
    assert_eq!(linear["preventSinglePointFailure"], true);
    assert!(linear["coresPerReplica"].as_u64().unwrap() > 0 && linear["nodesPerReplica"].as_u64().unwrap() > 0);

    let cpa = in_file("Deployment");
    let command = command_of(&array(&cpa["spec"]["template"]["spec"]["containers"], "containers")[0]);
    assert_eq!(flag_value(&command, "target"), format!("deployment/{name}"));
    assert_eq!(flag_value(&command, "namespace"), "kube-system");
    assert_eq!(
        flag_value(&command, "configmap"),
        configmap["metadata"]["name"].as_str().unwrap()
    );
    assert!(
        !command.iter().any(|a| a.starts_with("--default-params")),
        "the ConfigMap is the one source"
    );
    let account = in_file("ServiceAccount");
    assert_eq!(
        cpa["spec"]["template"]["spec"]["serviceAccountName"],
        account["metadata"]["name"]
    );

    let cluster_role = in_file("ClusterRole");
    assert_eq!(granted(&cluster_role), [(String::new(), "nodes".to_string())].into());
    binds_to(&in_file("ClusterRoleBinding"), &cluster_role, &account);
    let role = in_file("Role");
    let binding = in_file("RoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
    let rules: BTreeSet<(String, String, String, String)> = array(&role["rules"], "rules")
        .iter()
        .flat_map(|r| {
            let names = strings(&r["resourceNames"], "resourceNames");
            assert_eq!(names.len(), 1, "one object per rule: {r}");
            let name = names.into_iter().next().unwrap();
            let group = strings(&r["apiGroups"], "apiGroups").into_iter().next().unwrap();
            let resource = strings(&r["resources"], "resources").into_iter().next().unwrap();
            strings(&r["verbs"], "verbs")
                .into_iter()
                .map(move |v| (group.clone(), resource.clone(), name.clone(), v))
        })
        .collect();
    let cm = configmap["metadata"]["name"].as_str().unwrap().to_string();
    let want: BTreeSet<(String, String, String, String)> = [
        ("", "configmaps", cm.as_str(), "get"),
        ("apps", "deployments/scale", name, "get"),
        ("apps", "deployments/scale", name, "update"),
    ]
    .iter()
    .map(|(g, r, n, v)| (g.to_string(), r.to_string(), n.to_string(), v.to_string()))
    .collect();
    assert_eq!(rules, want);

    // The HorizontalPodAutoscaler: CPU against the request, never below two replicas.
    let hpa = docs
        .iter()
        .find(|(f, _)| f == "hpa.yaml")
        .map(|(_, d)| d.clone())
        .unwrap();
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["kind"], "HorizontalPodAutoscaler");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(
        (
            target["apiVersion"].as_str(),
            target["kind"].as_str(),
            target["name"].as_str()
        ),
        (Some("apps/v1"), Some("Deployment"), Some(name))
    );
    let hpa_min = hpa["spec"]["minReplicas"].as_u64().unwrap();
    assert!(hpa_min >= 2 && hpa_min > pdb_unavailable);
    assert!(hpa["spec"]["maxReplicas"].as_u64().unwrap() > hpa_min);
    let metrics = array(&hpa["spec"]["metrics"], "metrics");
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0]["resource"]["name"], "cpu");
    assert_eq!(metrics[0]["resource"]["target"]["type"], "Utilization");
    for c in array(&deployment["spec"]["template"]["spec"]["containers"], "containers") {
        assert!(
            c["resources"]["requests"].get("cpu").is_some(),
            "utilization needs a CPU request"
        );
    }
    assert!(
        hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
            .as_u64()
            .unwrap()
            >= 60,
        "a replica removed lists everything again when it comes back"
    );
}

// ---------------------------------------------------------------------------------
// The node-local role on a node of its own: a network namespace.

/// A network namespace of this test's own (`ip netns add`), deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let name = format!("cdns-nl-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let ns = Netns { name };
        ns.ip(&["netns", "add", &ns.name]);
        ns
    }

    /// `ip ARGS`, which must succeed; its output.
    fn ip(&self, args: &[&str]) -> String {
        run_ok("ip", args, &[])
    }

    /// `ARGS` run inside the namespace with `env` (`ip netns exec`); its output.
    fn exec(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        run_ok("ip", &all, env)
    }
}

/// Moves the calling thread into the network namespace `name`: the sockets it opens,
/// the threads and processes it starts are there from then on.
fn enter_netns(name: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
    // SAFETY: setns(2) on an open namespace file; it changes only this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn run_ok(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The restart step starts the new process beside the old one with `-handover` and
/// `-handover.wait`, as the DaemonSet does, and the test demands that nothing is lost;
/// `false` gives the plain SIGTERM-then-start figure for comparison.
const HANDOVER: bool = true;

const LINK_LOCAL: &str = "169.254.20.10";

/// A node-local server on `conf` (with `-handover` when [`HANDOVER`]), answering.
fn start_node_local(conf: &Path, handover: &Path) -> testkit::process::Process {
    let mut spawn = testkit::process::Spawn::new(testkit::process::binary())
        .arg("-conf")
        .arg(conf);
    if HANDOVER {
        spawn = spawn.arg("-handover").arg(handover).arg("-handover.wait");
    }
    let mut p = spawn.start();
    let to: SocketAddr = format!("{LINK_LOCAL}:53").parse().unwrap();
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let mut id = 0u16;
    let t = std::time::Instant::now();
    loop {
        id += 1;
        let got = testkit::load::probe_once(
            &sock,
            to,
            id,
            "web.team-a.svc.cluster.local",
            "10.96.10.20",
            std::time::Duration::from_millis(200),
        );
        if got.is_ok() {
            return p;
        }
        assert!(p.running(), "the node-local server exited:\n{}", p.output());
        assert!(
            t.elapsed().as_secs() < 20,
            "not answering after 20 s: {got:?}\n{}",
            p.output()
        );
    }
}

/// The restart step: replaces the running node-local server `old` by a new one on the
/// same Corefile, as an upgrade of the DaemonSet does. Without the hand-over: SIGTERM
/// (the old one answers through its lameduck, then exits) and only then the new one,
/// so what arrives in between is lost. With it ([`HANDOVER`]): the new one starts
/// beside the old one and takes its sockets; the old one drains and waits
/// (`-handover.wait`) for the SIGTERM the kubelet sends when it deletes the old pod.
fn restart_node_local(mut old: testkit::process::Process, conf: &Path, handover: &Path) -> testkit::process::Process {
    if HANDOVER {
        // The old one still answers meanwhile, so the new one's first answer says
        // nothing: its taking over shows in the old one's log.
        let new = start_node_local(conf, handover);
        assert!(
            old.wait_output(std::time::Duration::from_secs(30), |o| o
                .contains("waiting for SIGTERM")),
            "the old process drains after the hand-over and waits:\n{}",
            old.output()
        );
        assert!(
            old.running(),
            "-handover.wait: the old process stays:\n{}",
            old.output()
        );
        old.signal(libc::SIGTERM);
        assert_eq!(
            old.wait_exit(std::time::Duration::from_secs(10)),
            Some(0),
            "SIGTERM after the hand-over ends the old process:\n{}",
            old.output()
        );
        new
    } else {
        stop_node_local(old);
        start_node_local(conf, handover)
    }
}

/// Stops a node-local server as the kubelet does, SIGTERM: it must exit cleanly
/// within the pod's grace period, its lameduck included.
fn stop_node_local(mut p: testkit::process::Process) {
    p.signal(libc::SIGTERM);
    assert_eq!(
        p.wait_exit(std::time::Duration::from_secs(30)),
        Some(0),
        "SIGTERM: {}",
        p.output()
    );
}

/// The nft counters of notrack.nft's rules, summed.
fn notrack_packets(ns: &Netns) -> u64 {
    let table = ns.exec(&[], &["nft", "list", "table", "inet", "clusterdns_node_local"]);
    table
        .split("counter packets ")
        .skip(1)
        .map(|r| r.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The node-local role on a stand-in node, a network namespace of its own:
/// node-local-setup.sh makes the interface and its addresses and applies both rule
/// files (each twice: they are idempotent); the shipped Corefiles run there, the
/// cluster read from the demo's file, a local server standing for the node's upstream
/// resolver and another for the cluster DNS; a client in the namespace, as a pod
/// would, resolves cluster and external names on the link-local and the kube-dns
/// address, over UDP and TCP, and through a restart of the server under a steady
/// query stream (see [`restart_node_local`] and [`HANDOVER`]).
#[test]
#[ignore = "needs root, ip and nft (and iptables); .ci/run runs it: cargo test --locked -- --ignored"]
fn node_local_role_in_a_network_namespace() {
    // SAFETY: geteuid(2) has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (network namespaces)");
    testkit::tools::require("ip", &["-V"], "iproute2");
    testkit::tools::require("nft", &["--version"], "nftables");
    testkit::tools::require("iptables-restore", &["--version"], "iptables");

    let inits = containers_of(&node_local_daemonset(SERVER_DS), "initContainers");
    let setup = &inits[0];
    let addresses = env_of(setup, "NODE_LOCAL_ADDRESSES");
    let ns = Netns::new();
    ns.ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
    // The dummy interface, as on a node; a kernel built without the dummy driver (such
    // as this CI's VM) gets a bridge with no ports, which is as inert.
    let link_type = if Command::new("ip")
        .args(["-n", &ns.name, "link", "add", "probe0", "type", "dummy"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        ns.ip(&["-n", &ns.name, "link", "del", "probe0"]);
        "dummy"
    } else {
        "bridge"
    };
    let script = root().join(NODE_LOCAL).join("node-local-setup.sh");
    let script = script.to_str().unwrap();
    for rules in ["nft", "nft", "iptables", "iptables"] {
        let env = [
            ("NODE_LOCAL_ADDRESSES", addresses.as_str()),
            ("NODE_LOCAL_RULES", rules),
            ("NODE_LOCAL_LINK_TYPE", link_type),
        ];
        ns.exec(&env, &["sh", script]);
    }
    let shown = ns.ip(&["-n", &ns.name, "-4", "addr", "show", "dev", "nodelocaldns"]);
    for a in addresses.split_whitespace() {
        assert!(shown.contains(&format!("inet {a}/32 ")), "{a} on nodelocaldns: {shown}");
    }
    let raw = ns.exec(&[], &["iptables", "-w", "-t", "raw", "-S"]);
    for chain in ["PREROUTING", "OUTPUT"] {
        assert_eq!(
            raw.matches(&format!("-A {chain} -j CLUSTERDNS-NODE-LOCAL")).count(),
            1,
            "one jump after two runs: {raw}"
        );
    }
    assert_eq!(
        raw.matches("-j NOTRACK").count(),
        4 * addresses.split_whitespace().count(),
        "{raw}"
    );
    let tables = ns.exec(&[], &["nft", "list", "tables"]);
    assert_eq!(tables.matches("inet clusterdns_node_local").count(), 1, "{tables}");

    let dir = testkit::process::Scratch::new("node-local");
    std::fs::copy(root().join("packaging/demo/cluster.json"), dir.path("cluster.json")).unwrap();
    let upstream = dir.write(
        "upstream.Corefile",
        ".:53 {\n    bind 127.0.0.53\n    hosts {\n        203.0.113.7 www.example.org\n    }\n}\n",
    );
    let cluster_dns = dir.write(
        "cluster-dns.Corefile",
        ".:53 {\n    bind 127.0.0.54\n    log\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n        endpoint file://cluster.json\n        pods insecure\n    }\n}\n",
    );
    let replace_once = |text: &str, from: &str, to: &str| -> String {
        assert_eq!(text.matches(from).count(), 1, "one {from:?} in the shipped Corefile");
        text.replace(from, to)
    };
    let watch = replace_once(
        &node_local_corefile("Corefile"),
        &format!(
            "endpoint {}",
            kubernetes_endpoint(&parse_corefile(&node_local_corefile("Corefile")))
        ),
        "endpoint file://cluster.json",
    );
    let watch = dir.write(
        "watch.Corefile",
        &replace_once(&watch, "forward . /etc/resolv.conf", "forward . 127.0.0.53"),
    );
    let forward = replace_once(&node_local_corefile("Corefile-forward"), UPSTREAM_ENV, "127.0.0.54");
    let forward = dir.write(
        "forward.Corefile",
        &replace_once(&forward, "forward . /etc/resolv.conf", "forward . 127.0.0.53"),
    );
    let handover = dir.path("handover.sock");
    let kube_dns = str_of(&object("Service")["spec"]["clusterIP"], "clusterIP").to_string();

    let body = {
        let name = ns.name.clone();
        move || {
            enter_netns(&name);
            let bin = testkit::process::binary();
            let _upstream = testkit::process::Spawn::new(&bin).arg("-conf").arg(&upstream).start();
            let cluster = testkit::process::Spawn::new(&bin)
                .arg("-conf")
                .arg(&cluster_dns)
                .start();
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            let wait = std::time::Duration::from_secs(3);
            let mut id = 0u16;
            let mut resolves = |server: &str, name: &str, want: &str| {
                id += 1;
                let to: SocketAddr = format!("{server}:53").parse().unwrap();
                testkit::load::probe_once(&sock, to, id, name, want, wait)
                    .unwrap_or_else(|e| panic!("{name} A at {server} (UDP): {e}"));
                let q = testkit::wire::query_bytes(name, domain::base::iana::Rtype::A, None, id);
                let reply = testkit::wire::tcp_exchange(to, &q);
                let answers = testkit::wire::section(&reply, "answer");
                assert!(
                    answers.iter().any(|a| a.ends_with(&format!(" A {want}"))),
                    "{name} A at {server} (TCP): {answers:?}"
                );
            };

            // The watch variant: cluster names from its own index, the rest forwarded.
            let mut server = start_node_local(&watch, &handover);
            for at in [LINK_LOCAL, kube_dns.as_str()] {
                resolves(at, "web.team-a.svc.cluster.local", "10.96.10.20");
                resolves(at, "www.example.org", "203.0.113.7");
            }

            // The restart step, under a steady stream of queries from a pod-like client.
            let to: SocketAddr = format!("{LINK_LOCAL}:53").parse().unwrap();
            let prober = testkit::load::Prober::start(
                to,
                &[
                    ("web.team-a.svc.cluster.local", "10.96.10.20"),
                    ("www.example.org", "203.0.113.7"),
                ],
                std::time::Duration::from_millis(2),
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
            server = restart_node_local(server, &watch, &handover);
            std::thread::sleep(std::time::Duration::from_millis(300));
            let stats = prober.stop();
            eprintln!(
                "node-local restart ({}): {} queries, {} lost, {} wrong",
                if HANDOVER { "hand-over" } else { "SIGTERM, then start" },
                stats.sent,
                stats.lost,
                stats.wrong.len()
            );
            assert!(stats.wrong.is_empty(), "wrong answers: {:?}", stats.wrong);
            assert!(stats.sent > 100, "the stream ran: {}", stats.sent);
            if HANDOVER {
                assert_eq!(stats.lost, 0, "a restart with the hand-over loses nothing");
            }
            resolves(LINK_LOCAL, "web.team-a.svc.cluster.local", "10.96.10.20");
            stop_node_local(server);

            // The forward variant: cluster names over TCP to the cluster DNS stand-in.
            let server = start_node_local(&forward, &handover);
            for at in [LINK_LOCAL, kube_dns.as_str()] {
                resolves(at, "db-0.db.team-a.svc.cluster.local", "10.244.1.30");
                resolves(at, "www.example.org", "203.0.113.7");
            }
            let logged = cluster.log_lines("db-0.db.team-a.svc.cluster.local");
            assert!(!logged.is_empty(), "{}", cluster.output());
            assert!(
                logged.iter().all(|(_, l)| l.contains(" tcp ")),
                "force_tcp: every forwarded query over TCP: {logged:?}"
            );
            stop_node_local(server);
        }
    };
    let before = notrack_packets(&ns);
    if let Err(e) = std::thread::spawn(body).join() {
        std::panic::resume_unwind(e);
    }
    assert!(notrack_packets(&ns) > before, "the NOTRACK rules saw the queries");
}
