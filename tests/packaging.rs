//! The shipped packaging, checked offline against what the binary does: the Kubernetes
//! manifests (`packaging/kubernetes/`), the systemd units (`packaging/systemd/`), the
//! packaged Corefile, the man page and the Debian metadata in Cargo.toml.
//!
//! ```text
//!   cargo test --test packaging
//! ```
//!
//! The manifests are read by a small reader for the YAML subset they are written in
//! (block mappings and sequences, `|` literals, one-line `[a, b]` lists, plain and
//! quoted scalars), with no YAML crate; when Python's `yaml` module is installed
//! (`python3-yaml`), a test checks that PyYAML reads every document the same way. The
//! units go through `systemd-analyze verify` and `security --offline=yes` when
//! systemd-analyze exists (skipped, with a note, otherwise). The package itself is
//! tested under a real systemd by `.ci/package-test`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clusterdns::config::{self, Directive, ServerKey};
use clusterdns::kubernetes::model::Resource;
use clusterdns::plugin::{health, prometheus, ready};
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_clusterdns"))
        .args(["-check", "-conf", "stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
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
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(kinds, want);
}

/// PyYAML, when installed, reads every manifest as the subset reader does.
#[test]
fn pyyaml_reads_the_manifests_the_same_way() {
    let probe = Command::new("python3").args(["-c", "import yaml"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("note: python3 with the yaml module not found (apt-get install python3-yaml): cross-check skipped");
        return;
    }
    let script = "import json, sys, yaml\nprint(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    for entry in std::fs::read_dir(root().join("packaging/kubernetes"))
        .unwrap()
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let out = Command::new("python3")
            .args(["-c", script])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
        let ours = Value::Array(read_yaml(&std::fs::read_to_string(&path).unwrap()).unwrap());
        assert_eq!(
            ours,
            theirs,
            "{}: the subset reader and PyYAML disagree",
            path.display()
        );
    }
}

#[test]
fn rbac_is_exactly_list_and_watch_on_what_the_watcher_reads() {
    let role = object("ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in array(&role["rules"], "rules") {
        assert_eq!(
            strings(&rule["verbs"], "verbs"),
            ["list", "watch"].iter().map(|s| s.to_string()).collect(),
            "verbs of {rule}"
        );
        assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none());
        for group in strings(&rule["apiGroups"], "apiGroups") {
            for resource in strings(&rule["resources"], "resources") {
                assert!(granted.insert((group.clone(), resource)), "granted twice in {rule}");
            }
        }
    }
    let used: BTreeSet<(String, String)> = watched_resources()
        .into_iter()
        .map(|r| group_and_resource(r.path()))
        .collect();
    assert_eq!(
        granted, used,
        "the ClusterRole must grant exactly what the watcher lists and watches"
    );

    let binding = object("ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let account = object("ServiceAccount");
    let subjects = array(&binding["subjects"], "subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0]["kind"], "ServiceAccount");
    assert_eq!(subjects[0]["name"], account["metadata"]["name"]);
    assert_eq!(subjects[0]["namespace"], account["metadata"]["namespace"]);
    assert_eq!(
        object("Deployment")["spec"]["template"]["spec"]["serviceAccountName"],
        account["metadata"]["name"]
    );
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
        let want: BTreeSet<String> = if name == "clusterdns" {
            ["NET_BIND_SERVICE".to_string()].into()
        } else {
            BTreeSet::new()
        };
        assert_eq!(added, want, "{name}");
        let res = &c["resources"];
        let request = mebibytes(str_of(&res["requests"]["memory"], "requests.memory"));
        let limit = mebibytes(str_of(&res["limits"]["memory"], "limits.memory"));
        assert!(
            request > 0 && limit >= request,
            "{name}: memory request {request} Mi, limit {limit} Mi"
        );
        assert!(res["requests"].get("cpu").is_some(), "{name}: cpu request");
        assert!(
            res["limits"].get("cpu").is_none(),
            "{name}: no CPU limit (throttling adds DNS latency)"
        );
    }
    // Measured: 79 MiB steady and peak at 100,000 services (the manifest's comment has
    // the numbers); the limit leaves room for a relist that changes everything.
    let limit = mebibytes(str_of(
        &container("clusterdns")["resources"]["limits"]["memory"],
        "limit",
    ));
    assert!(
        limit >= 120,
        "the limit must hold 1.5x the measured peak at 100,000 services"
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

/// The proxy's filters pass exactly GET on the watched collections: in the pod's
/// sidecar and in the host's companion unit alike.
#[test]
fn kubectl_proxy_filters_pass_exactly_the_watched_paths() {
    let watched: BTreeSet<String> = watched_resources().into_iter().map(|r| r.path().to_string()).collect();
    let sidecar: Vec<String> = array(&container("apiproxy")["command"], "command")
        .iter()
        .map(|a| str_of(a, "command").to_string())
        .collect();
    let unit = read("packaging/systemd/clusterdns-apiproxy.service");
    let exec = unit_value(&unit, "ExecStart").replace("$$", "$");
    let unit_args: Vec<String> = exec.split_whitespace().map(String::from).collect();
    assert_eq!(&unit_args[..2], ["/usr/bin/kubectl", "proxy"]);
    for (who, args) in [("sidecar", &sidecar), ("unit", &unit_args)] {
        assert_eq!(
            regex_language(flag_value(args, "accept-paths")),
            watched,
            "{who}: --accept-paths"
        );
        let rejected = regex_language(flag_value(args, "reject-methods"));
        for m in ["POST", "PUT", "PATCH", "DELETE"] {
            assert!(rejected.contains(m), "{who}: {m} must be rejected");
        }
        assert!(!rejected.contains("GET"), "{who}: GET must pass");
        assert_eq!(flag_value(args, "address"), "127.0.0.1", "{who}");
        assert_eq!(flag_value(args, "port"), "8001", "{who}");
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

    let proxy = read("packaging/systemd/clusterdns-apiproxy.service");
    assert_eq!(unit_value(&proxy, "Before"), "clusterdns.service");
    assert_eq!(unit_value(&proxy, "EnvironmentFile"), "/etc/default/clusterdns");
    assert!(
        read("packaging/debian/default")
            .lines()
            .any(|l| l.starts_with("KUBECONFIG="))
    );

    // The package installs what the units name.
    let cargo = read("Cargo.toml");
    for needle in [
        r#"["packaging/etc/Corefile", "etc/clusterdns/Corefile", "644"]"#,
        r#"["packaging/debian/default", "etc/default/clusterdns", "644"]"#,
        r#"["target/release/clusterdns", "usr/bin/", "755"]"#,
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

/// A unit with its programs pointed at files that exist here (systemd-analyze verify
/// insists on executables), in a scratch directory.
fn units_for_verification(tag: &str) -> (PathBuf, Vec<PathBuf>) {
    let dir = std::env::temp_dir().join(format!("clusterdns-packaging-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("man/man8")).unwrap();
    std::fs::copy(root().join("packaging/clusterdns.8"), dir.join("man/man8/clusterdns.8")).unwrap();
    let kubectl = if Path::new("/usr/bin/kubectl").exists() {
        "/usr/bin/kubectl"
    } else {
        env!("CARGO_BIN_EXE_clusterdns")
    };
    let mut units = Vec::new();
    for name in ["clusterdns.service", "clusterdns-apiproxy.service"] {
        let text = read(&format!("packaging/systemd/{name}"))
            .replace("/usr/bin/clusterdns", env!("CARGO_BIN_EXE_clusterdns"))
            .replace("/usr/bin/kubectl", kubectl);
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        units.push(path);
    }
    (dir, units)
}

fn systemd_analyze() -> bool {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("note: systemd-analyze not found: unit checks skipped (.ci/package-test runs them under systemd)");
    }
    found
}

#[test]
fn units_pass_systemd_analyze_verify_with_nothing_on_stderr() {
    if !systemd_analyze() {
        return;
    }
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
fn units_have_an_exposure_of_at_most_2() {
    if !systemd_analyze() {
        return;
    }
    let (dir, units) = units_for_verification("security");
    let mut results = Vec::new();
    for unit in &units {
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
