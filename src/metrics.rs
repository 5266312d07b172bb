//! Prometheus text exposition (format 0.0.4): families gathered from every part of the
//! server at scrape time, rendered once. Samples of one family may come from several
//! places (each server block's plugins); they are grouped under one HELP and TYPE.
//!
//! Nothing here is on the query path: workers count in their own atomics
//! ([`Histogram`] and plain counters), and a scrape reads and sums them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Reloads that failed (`coredns_reload_failed_total`).
pub static RELOAD_FAILED: AtomicU64 = AtomicU64::new(0);
/// The SHA-512 of the running configuration (`coredns_reload_version_info`).
pub static RELOAD_HASH: parking_lot::Mutex<String> = parking_lot::Mutex::new(String::new());

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
    samples: String,
}

/// Label pairs of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

fn write_labels(out: &mut String, labels: Labels<'_>, extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(extra) {
        if !first {
            out.push(',');
        }
        first = false;
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
    out.push('}');
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

impl Families {
    /// Whether `source` (something shared by several plugin instances, such as the
    /// kubernetes plugin's backend) has not written its samples yet in this scrape;
    /// the first call for it says yes, the others no, so its series appear once.
    pub fn first_from<T>(&mut self, source: *const T) -> bool {
        let source = source.cast::<()>();
        if self.sources.contains(&source) {
            return false;
        }
        self.sources.push(source);
        true
    }

    fn family(&mut self, name: &str, kind: &'static str, help: &'static str) -> &mut String {
        &mut self
            .map
            .entry(name.to_string())
            .or_insert_with(|| Family {
                kind,
                help,
                samples: String::new(),
            })
            .samples
    }

    fn sample(&mut self, name: &str, kind: &'static str, help: &'static str, labels: Labels<'_>, value: f64) {
        let out = self.family(name, kind, help);
        out.push_str(name);
        write_labels(out, labels, None);
        out.push(' ');
        write_value(out, value);
        out.push('\n');
    }

    pub fn counter(&mut self, name: &str, help: &'static str, labels: Labels<'_>, value: f64) {
        self.sample(name, "counter", help, labels, value);
    }

    pub fn gauge(&mut self, name: &str, help: &'static str, labels: Labels<'_>, value: f64) {
        self.sample(name, "gauge", help, labels, value);
    }

    /// A histogram from per-bucket (not cumulative) counts, `bounds.len() + 1` of them
    /// (the last is +Inf), and the sum of the observed values.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &'static str,
        labels: Labels<'_>,
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) {
        let out = self.family(name, "histogram", help);
        let mut cumulative = 0u64;
        let mut le = String::new();
        for (i, c) in counts.iter().enumerate() {
            cumulative += c;
            le.clear();
            match bounds.get(i) {
                Some(b) => write_value(&mut le, *b),
                None => le.push_str("+Inf"),
            }
            out.push_str(name);
            out.push_str("_bucket");
            write_labels(out, labels, Some(("le", &le)));
            let _ = writeln!(out, " {cumulative}");
        }
        out.push_str(name);
        out.push_str("_sum");
        write_labels(out, labels, None);
        out.push(' ');
        write_value(out, sum);
        out.push('\n');
        out.push_str(name);
        out.push_str("_count");
        write_labels(out, labels, None);
        let _ = writeln!(out, " {cumulative}");
    }

    /// Renders every family, sorted by name.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, f) in &self.map {
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {}", f.kind);
            out.push_str(&f.samples);
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
}
