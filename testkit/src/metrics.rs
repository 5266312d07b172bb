//! A strict parser of the Prometheus text exposition format (version 0.0.4), for the
//! tests that read `/metrics`: a page it accepts is one every Prometheus-compatible
//! scraper reads the same way.
//!
//! ```text
//!   # HELP name docstring            (\\ and \n escapes; at most one per family)
//!   # TYPE name counter|gauge|histogram|summary|untyped   (at most one, before samples)
//!   # any other comment              (ignored)
//!   name{label="value",...} value [timestamp]
//! ```
//!
//! What it checks, beyond the grammar (metric names `[a-zA-Z_:][a-zA-Z0-9_:]*`, label
//! names `[a-zA-Z_][a-zA-Z0-9_]*` and not `__`-prefixed, label values with the
//! escapes `\\`, `\"` and `\n` only, values as Go's `strconv.ParseFloat` writes them
//! with `NaN`, `+Inf` and `-Inf`, an optional integer timestamp, every line ended by a
//! line feed):
//!
//! * the lines of a family (its HELP, TYPE and samples) stand together: a family that
//!   comes back after another one is an error;
//! * no series twice (the same sample name and the same label set);
//! * a sample of a typed family has a name the type allows: `NAME` for counters,
//!   gauges and untyped, `NAME_bucket`/`NAME_sum`/`NAME_count` for histograms,
//!   `NAME`/`NAME_sum`/`NAME_count` for summaries;
//! * counters are not negative (nor NaN);
//! * a histogram series (its labels without `le`) has buckets with a valid `le`, in
//!   strictly increasing order, whose counts never decrease, the last one `+Inf`, and a
//!   `_sum` and a `_count` equal to the `+Inf` bucket; a summary series has quantiles in
//!   [0, 1], a `_sum` and a `_count`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// A family's type, from its `# TYPE` line (untyped without one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
            Kind::Untyped => "untyped",
        }
    }

    fn from_str(s: &str) -> Option<Kind> {
        Some(match s {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            "untyped" => Kind::Untyped,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The name as written (`x_bucket`, `x_total`, ...).
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// Milliseconds since the epoch, if the line has one.
    pub timestamp: Option<i64>,
    /// The type of its family.
    pub kind: Kind,
}

/// A metric family: its metadata and its samples, in page order.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

/// Why a page was refused: the line (from 1) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// A parsed page.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    pub families: Vec<Family>,
}

impl Scrape {
    /// Every sample, in page order.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.families.iter().flat_map(|f| f.samples.iter())
    }

    /// The samples named `name` (as written), in page order.
    pub fn named(&self, name: &str) -> Vec<&Sample> {
        self.samples().filter(|s| s.name == name).collect()
    }

    /// The value of the one sample named `name` with exactly these labels, if there is
    /// one.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// The value of the one sample named `name` with exactly these labels; panics,
    /// showing the samples of that name, if there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("{name}{labels:?}: wanted one sample, have {:#?}", self.named(name)))
    }

    /// The sum of the samples named `name` whose labels include every one of `having`.
    pub fn sum(&self, name: &str, having: &[(&str, &str)]) -> f64 {
        self.samples()
            .filter(|s| s.name == name)
            .filter(|s| having.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v)))
            .map(|s| s.value)
            .sum()
    }

    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }
}

/// The sum of the samples named `name` whose labels include every one of `having`, on a
/// page that must parse (panics with the parser's reason otherwise).
pub fn sum(page: &str, name: &str, having: &[(&str, &str)]) -> f64 {
    parse(page)
        .unwrap_or_else(|e| panic!("the metrics page does not parse: {e}\n--- page:\n{page}"))
        .sum(name, having)
}

/// Parses a whole page; see the module documentation for what is checked.
pub fn parse(text: &str) -> Result<Scrape, ParseError> {
    let mut p = Parser::default();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(ParseError {
            line: text.lines().count(),
            message: "the last line does not end with a line feed".into(),
        });
    }
    for (i, line) in text.split_terminator('\n').enumerate() {
        p.line(line).map_err(|message| ParseError { line: i + 1, message })?;
    }
    p.finish()
}

#[derive(Default)]
struct Parser {
    families: Vec<Family>,
    /// Whether the last family has HELP / TYPE lines.
    has_help: bool,
    has_type: bool,
    /// The families closed so far, by name (a family may not come back).
    closed: HashMap<String, Kind>,
    /// (sample name, labels) seen.
    series: HashSet<(String, Vec<(String, String)>)>,
}

fn valid_metric_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_') && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

fn blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// A float as the format writes it: a decimal number, `NaN`, `+Inf`, `-Inf` (or `Inf`).
fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => return Ok(f64::NAN),
        "+Inf" | "Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    let numeric = s
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if !numeric || !s.chars().any(|c| c.is_ascii_digit()) {
        return Err(format!("invalid value {s:?}"));
    }
    s.parse::<f64>().map_err(|_| format!("invalid value {s:?}"))
}

/// Whether a sample named `sample` belongs to `family` (by the names its type allows).
fn allowed(family: &Family, sample: &str) -> bool {
    let base = family.name.as_str();
    let suffix = sample.strip_prefix(base);
    match family.kind {
        Kind::Counter | Kind::Gauge | Kind::Untyped => sample == base,
        Kind::Histogram => matches!(suffix, Some("_bucket" | "_sum" | "_count")),
        Kind::Summary => matches!(suffix, Some("" | "_sum" | "_count")),
    }
}

impl Parser {
    fn line(&mut self, line: &str) -> Result<(), String> {
        if line.contains('\r') {
            return Err("a carriage return (lines end with a line feed only)".into());
        }
        let rest = line.trim_start_matches(blank);
        if rest.is_empty() {
            return Ok(());
        }
        if let Some(comment) = rest.strip_prefix('#') {
            return self.comment(comment);
        }
        self.sample(rest)
    }

    fn comment(&mut self, c: &str) -> Result<(), String> {
        let c = c.trim_start_matches(blank);
        let (word, rest) = c.split_once(blank).unwrap_or((c, ""));
        if word != "HELP" && word != "TYPE" {
            return Ok(());
        }
        let rest = rest.trim_start_matches(blank);
        let (name, rest) = rest.split_once(blank).unwrap_or((rest, ""));
        if !valid_metric_name(name) {
            return Err(format!("invalid metric name {name:?} in {word}"));
        }
        self.open(name, true)?;
        let fam = self.families.last_mut().unwrap();
        if word == "HELP" {
            if self.has_help {
                return Err(format!("a second HELP line for {name}"));
            }
            self.has_help = true;
            fam.help = Some(unescape(rest.trim_start_matches(blank), false)?);
        } else {
            if self.has_type {
                return Err(format!("a second TYPE line for {name}"));
            }
            if !fam.samples.is_empty() {
                return Err(format!("a TYPE line for {name} after its samples"));
            }
            let t = rest.trim_matches(blank);
            fam.kind = Kind::from_str(t).ok_or_else(|| format!("unknown type {t:?} for {name}"))?;
            self.has_type = true;
        }
        Ok(())
    }

    /// Makes `name` the current family: it is already, or it starts now (and the
    /// current one closes). `metadata`: for a HELP or TYPE line (else for a sample, whose
    /// name may be a histogram's or summary's suffixed one).
    fn open(&mut self, name: &str, metadata: bool) -> Result<(), String> {
        if let Some(cur) = self.families.last() {
            if cur.name == name || (!metadata && allowed(cur, name)) {
                return Ok(());
            }
            self.closed.insert(cur.name.clone(), cur.kind);
        }
        if self.closed.contains_key(name) {
            return Err(format!("the lines of {name} do not stand together"));
        }
        if !metadata {
            // A sample of a histogram or summary that came earlier.
            for suffix in ["_bucket", "_sum", "_count"] {
                let base = name.strip_suffix(suffix);
                let kind = base.and_then(|b| self.closed.get(b));
                let split = match kind {
                    Some(Kind::Histogram) => true,
                    Some(Kind::Summary) => suffix != "_bucket",
                    _ => false,
                };
                if split {
                    return Err(format!(
                        "the lines of {} do not stand together ({name})",
                        base.unwrap_or_default()
                    ));
                }
            }
        }
        self.families.push(Family {
            name: name.to_string(),
            kind: Kind::Untyped,
            help: None,
            samples: Vec::new(),
        });
        self.has_help = false;
        self.has_type = false;
        Ok(())
    }

    fn sample(&mut self, line: &str) -> Result<(), String> {
        let end = line.find(|c: char| c == '{' || blank(c)).unwrap_or(line.len());
        let name = &line[..end];
        if !valid_metric_name(name) {
            return Err(format!("invalid metric name {name:?}"));
        }
        let mut rest = &line[end..];
        let mut labels: Vec<(String, String)> = Vec::new();
        let after = rest.trim_start_matches(blank);
        if let Some(inner) = after.strip_prefix('{') {
            rest = parse_labels(inner, &mut labels)?;
        }
        if !rest.starts_with(blank) {
            return Err(format!("{name}: no blank before the value"));
        }
        let mut fields = rest.split(blank).filter(|f| !f.is_empty());
        let value = parse_value(fields.next().ok_or_else(|| format!("{name}: no value"))?)?;
        let timestamp = match fields.next() {
            None => None,
            Some(t) => {
                let ok = t.strip_prefix('-').unwrap_or(t);
                if ok.is_empty() || !ok.chars().all(|c| c.is_ascii_digit()) {
                    return Err(format!("{name}: invalid timestamp {t:?}"));
                }
                Some(
                    t.parse::<i64>()
                        .map_err(|_| format!("{name}: invalid timestamp {t:?}"))?,
                )
            }
        };
        if let Some(extra) = fields.next() {
            return Err(format!("{name}: unexpected {extra:?} after the value"));
        }
        self.open(name, false)?;
        let mut sorted = labels.clone();
        sorted.sort();
        if !self.series.insert((name.to_string(), sorted)) {
            return Err(format!("the series {name}{labels:?} twice"));
        }
        let fam = self.families.last_mut().unwrap();
        let kind = fam.kind;
        if !allowed(fam, name) {
            return Err(format!("{name} is not a sample name of the {kind} {}", fam.name));
        }
        let le = labels.iter().any(|(k, _)| k == "le");
        match kind {
            Kind::Counter if !non_negative(value) => return Err(format!("the counter {name} is {value}")),
            Kind::Histogram if name.ends_with("_bucket") && !le => {
                return Err(format!("the bucket {name} has no le label"));
            }
            Kind::Histogram if !name.ends_with("_bucket") && le => {
                return Err(format!("{name} has an le label"));
            }
            Kind::Summary if name == fam.name && !labels.iter().any(|(k, _)| k == "quantile") => {
                return Err(format!("the summary sample {name} has no quantile label"));
            }
            _ => {}
        }
        fam.samples.push(Sample {
            name: name.to_string(),
            labels: labels.into_iter().collect(),
            value,
            timestamp,
            kind,
        });
        Ok(())
    }

    fn finish(self) -> Result<Scrape, ParseError> {
        for fam in &self.families {
            let problem = match fam.kind {
                Kind::Histogram => check_histogram(fam),
                Kind::Summary => check_summary(fam),
                _ => Ok(()),
            };
            problem.map_err(|message| ParseError { line: 0, message })?;
        }
        Ok(Scrape {
            families: self.families,
        })
    }
}

/// Parses `name="value",...}` (after the `{`); returns what follows the `}`.
fn parse_labels<'a>(mut s: &'a str, out: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start_matches(blank);
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let end = s.find(|c: char| c == '=' || blank(c)).ok_or("unterminated label set")?;
        let name = &s[..end];
        if !valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        if name.starts_with("__") {
            return Err(format!("the label name {name:?} is reserved"));
        }
        if out.iter().any(|(k, _)| k == name) {
            return Err(format!("the label {name} twice"));
        }
        s = s[end..].trim_start_matches(blank);
        s = s
            .strip_prefix('=')
            .ok_or_else(|| format!("no = after the label {name}"))?;
        s = s.trim_start_matches(blank);
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("the value of {name} is not quoted"))?;
        // The closing quote: the first one not escaped.
        let mut close = None;
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let close = close.ok_or_else(|| format!("the value of {name} is not terminated"))?;
        out.push((name.to_string(), unescape(&s[..close], true)?));
        s = s[close + 1..].trim_start_matches(blank);
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!("expected , or }} after the label {name}"));
        }
    }
}

/// Resolves `\\`, `\n` (and `\"` in label values); any other escape is an error.
fn unescape(s: &str, quote: bool) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quote => out.push('"'),
            Some(other) => return Err(format!("invalid escape \\{other} in {s:?}")),
            None => return Err(format!("a lone backslash at the end of {s:?}")),
        }
    }
    Ok(out)
}

/// The labels of a sample without `skip` (`le`, `quantile`): what names its series.
fn series_key(s: &Sample, skip: &str) -> Vec<(String, String)> {
    s.labels
        .iter()
        .filter(|(k, _)| *k != skip)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A histogram series: its buckets (le, count), its sum and its count.
type HistogramSeries = (Vec<(f64, f64)>, Option<f64>, Option<f64>);

/// Zero or more (not NaN).
fn non_negative(v: f64) -> bool {
    v >= 0.0
}

fn check_histogram(fam: &Family) -> Result<(), String> {
    let n = &fam.name;
    let mut series: BTreeMap<Vec<(String, String)>, HistogramSeries> = BTreeMap::new();
    for s in &fam.samples {
        let e = series.entry(series_key(s, "le")).or_default();
        if s.name.ends_with("_bucket") {
            let le = &s.labels["le"];
            let bound = parse_value(le).map_err(|_| format!("{n}: invalid le {le:?}"))?;
            if bound.is_nan() {
                return Err(format!("{n}: le is NaN"));
            }
            if !non_negative(s.value) {
                return Err(format!("{n}: the bucket le={le} counts {}", s.value));
            }
            e.0.push((bound, s.value));
        } else if s.name.ends_with("_sum") {
            e.1 = Some(s.value);
        } else {
            if !non_negative(s.value) {
                return Err(format!("{n}: the count is {}", s.value));
            }
            e.2 = Some(s.value);
        }
    }
    for (labels, (buckets, sum, count)) in &series {
        let at = format!("{n}{labels:?}");
        if buckets.is_empty() {
            return Err(format!("{at}: no buckets"));
        }
        for w in buckets.windows(2) {
            if w[0].0.partial_cmp(&w[1].0) != Some(std::cmp::Ordering::Less) {
                return Err(format!("{at}: le {} then {}: not increasing", w[0].0, w[1].0));
            }
            if w[1].1 < w[0].1 {
                return Err(format!(
                    "{at}: bucket counts not cumulative ({} then {})",
                    w[0].1, w[1].1
                ));
            }
        }
        let last = buckets.last().unwrap();
        if last.0 != f64::INFINITY {
            return Err(format!("{at}: no +Inf bucket"));
        }
        if sum.is_none() {
            return Err(format!("{at}: no _sum"));
        }
        match count {
            None => return Err(format!("{at}: no _count")),
            Some(c) if *c != last.1 => {
                return Err(format!("{at}: _count {c} is not the +Inf bucket's {}", last.1));
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_summary(fam: &Family) -> Result<(), String> {
    let n = &fam.name;
    let mut series: BTreeMap<Vec<(String, String)>, (bool, bool)> = BTreeMap::new();
    for s in &fam.samples {
        let e = series.entry(series_key(s, "quantile")).or_default();
        if s.name == fam.name {
            let q = &s.labels["quantile"];
            let v = parse_value(q).map_err(|_| format!("{n}: invalid quantile {q:?}"))?;
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{n}: quantile {q} outside [0, 1]"));
            }
        } else if s.name.ends_with("_sum") {
            e.0 = true;
        } else {
            e.1 = true;
        }
    }
    for (labels, (sum, count)) in &series {
        if !sum || !count {
            return Err(format!("{n}{labels:?}: a summary needs _sum and _count"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# A comment that is ignored.
# HELP coredns_dns_requests_total Counter of DNS requests made per zone, protocol and family.
# TYPE coredns_dns_requests_total counter
coredns_dns_requests_total{server="dns://:53",zone="example.org.",proto="udp",type="A"} 37
coredns_dns_requests_total{server="dns://:53",zone="example.org.",proto="tcp",type="A"} 6

# HELP coredns_dns_request_duration_seconds Histogram of the time (in seconds) each request took.
# TYPE coredns_dns_request_duration_seconds histogram
coredns_dns_request_duration_seconds_bucket{zone="a.",le="0.00025"} 1
coredns_dns_request_duration_seconds_bucket{zone="a.",le="0.0005"} 3
coredns_dns_request_duration_seconds_bucket{zone="a.",le="+Inf"} 4
coredns_dns_request_duration_seconds_sum{zone="a."} 0.0021
coredns_dns_request_duration_seconds_count{zone="a."} 4
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.2345e+07 1700000000000
# HELP rpc_duration_seconds A summary, with "quotes" \\ and a\nnew line.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds{quantile="0.99"} NaN
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
something_untyped{path="C:\\dir\\",msg="say \"hi\"\nbye",} -Inf
"#;

    #[test]
    fn a_page_of_every_kind_parses() {
        let s = parse(PAGE).unwrap();
        let names: Vec<(&str, Kind)> = s.families.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        assert_eq!(
            names,
            [
                ("coredns_dns_requests_total", Kind::Counter),
                ("coredns_dns_request_duration_seconds", Kind::Histogram),
                ("process_resident_memory_bytes", Kind::Gauge),
                ("rpc_duration_seconds", Kind::Summary),
                ("something_untyped", Kind::Untyped),
            ]
        );
        assert_eq!(
            s.value(
                "coredns_dns_requests_total",
                &[
                    ("server", "dns://:53"),
                    ("zone", "example.org."),
                    ("proto", "udp"),
                    ("type", "A")
                ]
            ),
            37.0
        );
        assert_eq!(s.sum("coredns_dns_requests_total", &[("type", "A")]), 43.0);
        let buckets = s.named("coredns_dns_request_duration_seconds_bucket");
        assert_eq!(buckets.len(), 3);
        assert_eq!(buckets[2].labels["le"], "+Inf");
        assert!(buckets.iter().all(|b| b.kind == Kind::Histogram));
        let rss = s.named("process_resident_memory_bytes")[0];
        assert_eq!((rss.value, rss.timestamp), (12_345_000.0, Some(1_700_000_000_000)));
        assert!(s.named("rpc_duration_seconds")[1].value.is_nan());
        assert_eq!(
            s.family("rpc_duration_seconds").unwrap().help.as_deref(),
            Some("A summary, with \"quotes\" \\ and a\nnew line.")
        );
        let u = s.named("something_untyped")[0];
        assert_eq!(u.labels["path"], "C:\\dir\\");
        assert_eq!(u.labels["msg"], "say \"hi\"\nbye");
        assert_eq!(u.value, f64::NEG_INFINITY);
        assert_eq!(parse("").unwrap().families.len(), 0);
    }

    /// Each page breaks one rule of the format; each must be refused, naming the
    /// problem.
    #[test]
    fn pages_that_break_a_rule_are_refused() {
        let cases: &[(&str, &str, &str)] = &[
            ("no final line feed", "a 1", "line feed"),
            ("carriage return", "a 1\r\n", "carriage return"),
            ("metric name starts with a digit", "1a 1\n", "invalid metric name"),
            ("metric name with a dash", "a-b 1\n", "invalid metric name"),
            ("no value", "a\n", "no blank"),
            ("no value after labels", "a{x=\"1\"}\n", "no blank"),
            ("value not a number", "a one\n", "invalid value"),
            ("value spelt inf", "a inf\n", "invalid value"),
            ("timestamp not an integer", "a 1 1.5\n", "invalid timestamp"),
            ("more after the timestamp", "a 1 2 3\n", "unexpected"),
            (
                "label name starts with a digit",
                "a{1x=\"1\"} 1\n",
                "invalid label name",
            ),
            ("reserved label name", "a{__name__=\"x\"} 1\n", "reserved"),
            ("a label twice", "a{x=\"1\",x=\"2\"} 1\n", "twice"),
            ("label value not quoted", "a{x=1} 1\n", "not quoted"),
            ("label value not terminated", "a{x=\"1} 1\n", "not terminated"),
            ("invalid escape in a label value", "a{x=\"\\t\"} 1\n", "invalid escape"),
            ("invalid escape in HELP", "# HELP a tab\\there\na 1\n", "invalid escape"),
            ("no comma between labels", "a{x=\"1\" y=\"2\"} 1\n", "expected ,"),
            ("label set not closed", "a{x=\"1\" 1\n", "expected ,"),
            ("two HELP lines", "# HELP a one\n# HELP a two\na 1\n", "second HELP"),
            ("two TYPE lines", "# TYPE a gauge\n# TYPE a gauge\na 1\n", "second TYPE"),
            ("TYPE after the samples", "a 1\n# TYPE a gauge\n", "after its samples"),
            ("unknown type", "# TYPE a meter\na 1\n", "unknown type"),
            ("invalid name in TYPE", "# TYPE 0a gauge\n", "invalid metric name"),
            ("a family split in two", "a 1\nb 1\na{x=\"1\"} 2\n", "stand together"),
            (
                "a histogram split in two",
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\nb 1\nh_bucket{le=\"1\",x=\"y\"} 1\n",
                "stand together",
            ),
            (
                "the same series twice",
                "a{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 2\n",
                "twice",
            ),
            ("a negative counter", "# TYPE c_total counter\nc_total -1\n", "counter"),
            ("a NaN counter", "# TYPE c_total counter\nc_total NaN\n", "counter"),
            (
                "a histogram sample without a suffix",
                "# TYPE h histogram\nh 1\n",
                "not a sample name",
            ),
            (
                "a bucket without le",
                "# TYPE h histogram\nh_bucket 1\nh_sum 1\nh_count 1\n",
                "no le",
            ),
            (
                "a histogram without +Inf",
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
                "+Inf",
            ),
            (
                "a count that is not the +Inf bucket",
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
                "_count",
            ),
            (
                "buckets that are not cumulative",
                "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
                "cumulative",
            ),
            (
                "le not increasing",
                "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
                "increasing",
            ),
            (
                "an invalid le",
                "# TYPE h histogram\nh_bucket{le=\"many\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
                "invalid le",
            ),
            (
                "a histogram without _sum",
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
                "no _sum",
            ),
            (
                "a histogram without _count",
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\n",
                "no _count",
            ),
            (
                "a summary quantile out of range",
                "# TYPE s summary\ns{quantile=\"1.5\"} 1\ns_sum 1\ns_count 1\n",
                "outside",
            ),
            (
                "a summary without _count",
                "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 1\n",
                "_count",
            ),
        ];
        for (what, page, says) in cases {
            match parse(page) {
                Ok(s) => panic!("{what}: accepted: {s:?}"),
                Err(e) => assert!(e.message.contains(says), "{what}: {e}"),
            }
        }
    }

    #[test]
    fn blanks_between_tokens_and_a_trailing_comma_are_allowed() {
        let s = parse("  a { x = \"1\" , y=\"2\", }\t 3 \n\n# TYPE b gauge\nb 4\n").unwrap();
        assert_eq!(s.value("a", &[("x", "1"), ("y", "2")]), 3.0);
        assert_eq!(s.value("b", &[]), 4.0);
        assert_eq!(parse("# HELP a\na 1\n").unwrap().families[0].help.as_deref(), Some(""));
        // A suffixed name next to a gauge is a family of its own (as Prometheus reads it).
        let s = parse("# TYPE g gauge\ng 1\ng_sum 2\n").unwrap();
        assert_eq!(s.families.len(), 2);
        assert_eq!(s.families[1].kind, Kind::Untyped);
    }
}
