//! Prometheus text exposition (format 0.0.4): families gathered from every part of the
//! server at scrape time, rendered once. Samples of one family may come from several
//! places (each server block's plugins); they are grouped under one HELP and TYPE.
//!
//! Nothing here is on the query path: workers count in their own atomics
//! ([`Histogram`] and plain counters, [`route::RouteCounters`] per route), and a scrape
//! reads and sums them. [`procfs`] reads the standard `process_*` metrics.

pub mod procfs;
pub mod route;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The metric families of one scrape.
#[derive(Default)]
pub struct Families {
    map: BTreeMap<String, Family>,
    /// Sources already written in this scrape (see [`Families::first_from`]).
    sources: Vec<*const ()>,
}

struct Family {
    kind: &'static str,
    help: &'static str,
    /// In the order first written.
    series: Vec<Series>,
    /// Rendered labels → index in `series`.
    index: HashMap<String, usize>,
}

struct Series {
    /// The label pairs as rendered between the braces (`a="1",b="x"`), or empty.
    labels: String,
    value: Value,
}

enum Value {
    Scalar(f64),
    /// Per-bucket (not cumulative) counts, the last one +Inf, and the sum.
    Histogram {
        bounds: &'static [f64],
        counts: Vec<u64>,
        sum: f64,
    },
}

/// Label pairs of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

fn write_labels(out: &mut String, labels: Labels<'_>) {
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

fn write_value(out: &mut String, v: f64) {
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

/// `name{labels}` or `name{labels,le="bound"}`, without braces when there is nothing
/// to put in them.
fn write_series(out: &mut String, name: &str, suffix: &str, labels: &str, le: Option<&str>) {
    out.push_str(name);
    out.push_str(suffix);
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    out.push_str(labels);
    if let Some(le) = le {
        if !labels.is_empty() {
            out.push(',');
        }
        out.push_str("le=\"");
        out.push_str(le);
        out.push('"');
    }
    out.push('}');
}

impl Families {
    /// Whether `source` (something shared by several plugin instances, such as the
    /// kubernetes plugin's backend) has not written its samples yet in this scrape;
    /// the first call for it says yes, the others no, so its series appear once.
    pub fn first_from<T: ?Sized>(&mut self, source: *const T) -> bool {
        let source = source.cast::<()>();
        if self.sources.contains(&source) {
            return false;
        }
        self.sources.push(source);
        true
    }

    /// Adds a sample. Two plugin instances may write the same series (two server
    /// blocks with *forward* both count `coredns_forward_max_concurrent_rejects_total`,
    /// which has no labels); like CoreDNS's process-wide vectors, the series then
    /// appears once: counters and histograms add up, a gauge keeps its first value.
    fn add(&mut self, name: &str, kind: &'static str, help: &'static str, labels: Labels<'_>, value: Value) {
        let family = self.map.entry(name.to_string()).or_insert_with(|| Family {
            kind,
            help,
            series: Vec::new(),
            index: HashMap::new(),
        });
        let mut text = String::new();
        write_labels(&mut text, labels);
        match family.index.get(&text) {
            None => {
                family.index.insert(text.clone(), family.series.len());
                family.series.push(Series { labels: text, value });
            }
            Some(&i) => match (&mut family.series[i].value, value) {
                (Value::Scalar(v), Value::Scalar(add)) if kind == "counter" => *v += add,
                (
                    Value::Histogram { bounds, counts, sum },
                    Value::Histogram {
                        bounds: b,
                        counts: c,
                        sum: s,
                    },
                ) if *bounds == b => {
                    counts.iter_mut().zip(c).for_each(|(t, c)| *t += c);
                    *sum += s;
                }
                _ => {}
            },
        }
    }

    pub fn counter(&mut self, name: &str, help: &'static str, labels: Labels<'_>, value: f64) {
        self.add(name, "counter", help, labels, Value::Scalar(value));
    }

    pub fn gauge(&mut self, name: &str, help: &'static str, labels: Labels<'_>, value: f64) {
        self.add(name, "gauge", help, labels, Value::Scalar(value));
    }

    /// A histogram from per-bucket (not cumulative) counts, `bounds.len() + 1` of them
    /// (the last is +Inf), and the sum of the observed values.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &'static str,
        labels: Labels<'_>,
        bounds: &'static [f64],
        counts: &[u64],
        sum: f64,
    ) {
        let value = Value::Histogram {
            bounds,
            counts: counts.to_vec(),
            sum,
        };
        self.add(name, "histogram", help, labels, value);
    }

    /// Renders every family, sorted by name; a family's series in the order first
    /// written.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, f) in &self.map {
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {}", f.kind);
            for s in &f.series {
                match &s.value {
                    Value::Scalar(v) => {
                        write_series(&mut out, name, "", &s.labels, None);
                        out.push(' ');
                        write_value(&mut out, *v);
                        out.push('\n');
                    }
                    Value::Histogram { bounds, counts, sum } => {
                        let mut cumulative = 0u64;
                        let mut le = String::new();
                        for (i, c) in counts.iter().enumerate() {
                            cumulative += c;
                            le.clear();
                            match bounds.get(i) {
                                Some(b) => write_value(&mut le, *b),
                                None => le.push_str("+Inf"),
                            }
                            write_series(&mut out, name, "_bucket", &s.labels, Some(&le));
                            let _ = writeln!(out, " {cumulative}");
                        }
                        write_series(&mut out, name, "_sum", &s.labels, None);
                        out.push(' ');
                        write_value(&mut out, *sum);
                        out.push('\n');
                        write_series(&mut out, name, "_count", &s.labels, None);
                        let _ = writeln!(out, " {cumulative}");
                    }
                }
            }
        }
        out
    }
}

/// A histogram one thread records into and any thread reads: per-bucket counts and a
/// sum in integer units (so recording is two relaxed increments).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    /// Sum of observations in `1 / SCALE` units.
    sum: AtomicU64,
}

/// Sums are kept in millionths (microseconds for durations).
const SCALE: f64 = 1e6;

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one observation (single writer: plain load and store).
    pub fn observe(&self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        bump(&self.counts[i], 1);
        bump(&self.sum, (v * SCALE) as u64);
    }

    /// Adds this histogram's counts and sum into totals (for summing workers).
    pub fn add_to(&self, counts: &mut [u64], sum: &mut f64) {
        for (t, c) in counts.iter_mut().zip(self.counts.iter()) {
            *t += c.load(Ordering::Relaxed);
        }
        *sum += self.sum.load(Ordering::Relaxed) as f64 / SCALE;
    }

    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }
}

/// Increments a counter that only one thread writes: a load and a store, no locked
/// instruction (readers see a recent value, which is all a scrape needs).
#[inline]
pub fn bump(c: &AtomicU64, by: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(by), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_grouped_families() {
        let mut f = Families::default();
        f.counter("x_total", "Things.", &[("a", "1")], 3.0);
        f.gauge("g", "A gauge.", &[], 1.5);
        f.counter("x_total", "Things.", &[("a", "2\"q\"")], 4.0);
        static B: [f64; 2] = [0.1, 1.0];
        let h = Histogram::new(&B);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(7.0);
        let mut counts = [0u64; 3];
        let mut sum = 0.0;
        h.add_to(&mut counts, &mut sum);
        f.histogram("h_seconds", "Durations.", &[("z", ".")], &B, &counts, sum);
        let out = f.render();
        assert_eq!(
            out,
            "# HELP g A gauge.\n# TYPE g gauge\ng 1.5\n\
             # HELP h_seconds Durations.\n# TYPE h_seconds histogram\n\
             h_seconds_bucket{z=\".\",le=\"0.1\"} 1\nh_seconds_bucket{z=\".\",le=\"1\"} 2\n\
             h_seconds_bucket{z=\".\",le=\"+Inf\"} 3\nh_seconds_sum{z=\".\"} 7.55\nh_seconds_count{z=\".\"} 3\n\
             # HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"1\"} 3\nx_total{a=\"2\\\"q\\\"\"} 4\n"
        );
    }

    #[test]
    fn a_series_written_twice_appears_once() {
        static B: [f64; 1] = [1.0];
        let mut f = Families::default();
        for _ in 0..2 {
            f.counter("c_total", "C.", &[], 2.0);
            f.counter("c_total", "C.", &[("to", "x")], 1.0);
            f.gauge("g", "G.", &[], 5.0);
            f.histogram("h", "H.", &[], &B, &[1, 2], 4.0);
        }
        f.gauge("g", "G.", &[], 9.0);
        assert_eq!(
            f.render(),
            "# HELP c_total C.\n# TYPE c_total counter\nc_total 4\nc_total{to=\"x\"} 2\n\
             # HELP g G.\n# TYPE g gauge\ng 5\n\
             # HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 6\nh_sum 8\nh_count 6\n"
        );
    }
}
