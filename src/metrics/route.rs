//! What one worker counts for one route (listen address + zone): the samples behind
//! CoreDNS's `coredns_dns_*` families, as plain atomics that only that worker writes.
//!
//! ```text
//!   worker k ──record──▶ counters[k][route]      (single writer: load + store, no lock)
//!   scrape   ──Totals::add over k──▶ Totals ──write──▶ Families
//! ```
//!
//! Everything a query touches is allocated in `attach`; recording is index arithmetic
//! and relaxed stores, so the query path neither allocates nor waits.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::dns::{Rcode, rtype};
use crate::metrics::{Families, Histogram, bump};

/// `coredns_dns_request_duration_seconds` buckets: 0.00025·2^k, k = 0..15, as CoreDNS's
/// `prometheus.ExponentialBuckets(0.00025, 2, 16)`.
pub static DURATION_BUCKETS: [f64; 16] = [
    0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192,
];

/// Request and response size buckets, CoreDNS's list (the odd values are its own: the
/// edges of the usual UDP payload sizes).
pub static SIZE_BUCKETS: [f64; 14] = [
    0.0, 100.0, 200.0, 300.0, 400.0, 511.0, 1023.0, 2047.0, 4095.0, 8291.0, 16000.0, 32000.0, 48000.0, 64000.0,
];

/// The query types with a `type` label of their own (CoreDNS's `monitorType`); every
/// other type counts as `other`.
pub const TYPES: [(u16, &str); 19] = [
    (rtype::A, "A"),
    (rtype::AAAA, "AAAA"),
    (rtype::CNAME, "CNAME"),
    (rtype::DNSKEY, "DNSKEY"),
    (rtype::DS, "DS"),
    (rtype::MX, "MX"),
    (rtype::NSEC, "NSEC"),
    (rtype::NSEC3, "NSEC3"),
    (rtype::NS, "NS"),
    (rtype::PTR, "PTR"),
    (rtype::RRSIG, "RRSIG"),
    (rtype::SOA, "SOA"),
    (rtype::SRV, "SRV"),
    (rtype::TXT, "TXT"),
    (rtype::HTTPS, "HTTPS"),
    (rtype::SVCB, "SVCB"),
    (rtype::IXFR, "IXFR"),
    (rtype::AXFR, "AXFR"),
    (rtype::ANY, "ANY"),
];
/// `TYPES` plus `other`.
const TYPE_SLOTS: usize = TYPES.len() + 1;
/// `proto` label values, indexed by [`Sample::proto`].
const PROTOS: [&str; 2] = ["udp", "tcp"];
/// `family` label values, indexed by [`Sample::family`].
const FAMILIES: [&str; 2] = ["1", "2"];

/// Rcodes 0..=23 (up to BADCOOKIE, the last one assigned) each get a counter; larger
/// extended rcodes share the last one, labelled `other`.
const RCODE_SLOTS: usize = 25;
/// Distinct answering plugins remembered per worker and route. A chain has fewer
/// plugins than this that write replies; a seventeenth name would share the overflow
/// slot, labelled `other`.
const PLUGIN_NAMES: usize = 16;
const PLUGIN_SLOTS: usize = PLUGIN_NAMES + 1;
/// Label of the shared slots past the fixed tables.
const OTHER: &str = "other";

/// The `type` label slot of a query type.
pub fn type_index(qtype: u16) -> usize {
    TYPES.iter().position(|(t, _)| *t == qtype).unwrap_or(TYPES.len())
}

fn type_name(i: usize) -> &'static str {
    TYPES.get(i).map_or(OTHER, |(_, n)| n)
}

/// What is counted of one finished query.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// 0 UDP, 1 TCP.
    pub proto: usize,
    /// 0 IPv4 (`family="1"`), 1 IPv6 (`"2"`).
    pub family: usize,
    /// The question's type.
    pub qtype: u16,
    /// The query's EDNS DO bit.
    pub dnssec_ok: bool,
    /// Seconds from receiving the query to the finished reply.
    pub seconds: f64,
    /// The query message's length.
    pub request_bytes: usize,
    /// The finished reply's length.
    pub response_bytes: usize,
    /// The reply's rcode (extended by EDNS).
    pub rcode: Rcode,
    /// The plugin that wrote the reply ("" when the server did).
    pub plugin: &'static str,
}

/// One worker's counters for one route. Aligned to two cache lines so that two
/// workers' counters never share one (adjacent-line prefetch included).
#[repr(align(128))]
pub struct RouteCounters {
    /// By `[proto][family][type]`.
    requests: [AtomicU64; 2 * 2 * TYPE_SLOTS],
    do_requests: AtomicU64,
    duration: Histogram,
    /// By proto.
    request_size: [Histogram; 2],
    response_size: [Histogram; 2],
    /// The answering plugins seen so far, filled in first-seen order and never changed,
    /// so a slot's index means the same plugin for the life of these counters.
    plugins: [OnceLock<&'static str>; PLUGIN_NAMES],
    /// By `[rcode slot][plugin slot]`.
    responses: [AtomicU64; RCODE_SLOTS * PLUGIN_SLOTS],
}

impl Default for RouteCounters {
    fn default() -> RouteCounters {
        RouteCounters {
            requests: [const { AtomicU64::new(0) }; 2 * 2 * TYPE_SLOTS],
            do_requests: AtomicU64::new(0),
            duration: Histogram::new(&DURATION_BUCKETS),
            request_size: std::array::from_fn(|_| Histogram::new(&SIZE_BUCKETS)),
            response_size: std::array::from_fn(|_| Histogram::new(&SIZE_BUCKETS)),
            plugins: [const { OnceLock::new() }; PLUGIN_NAMES],
            responses: [const { AtomicU64::new(0) }; RCODE_SLOTS * PLUGIN_SLOTS],
        }
    }
}

impl RouteCounters {
    /// Counts one query. Only the worker that owns these counters may call it.
    pub fn record(&self, s: &Sample) {
        let proto = s.proto.min(1);
        let family = s.family.min(1);
        bump(
            &self.requests[(proto * 2 + family) * TYPE_SLOTS + type_index(s.qtype)],
            1,
        );
        if s.dnssec_ok {
            bump(&self.do_requests, 1);
        }
        self.duration.observe(s.seconds);
        self.request_size[proto].observe(s.request_bytes as f64);
        self.response_size[proto].observe(s.response_bytes as f64);
        let rcode = usize::from(s.rcode.0).min(RCODE_SLOTS - 1);
        bump(&self.responses[rcode * PLUGIN_SLOTS + self.plugin_slot(s.plugin)], 1);
    }

    /// The slot of an answering plugin's name, taking a free one for a new name. Names
    /// are `&'static str` from `Handler::name`, so the pointer comparison almost always
    /// decides; the text comparison covers equal names from different literals.
    fn plugin_slot(&self, name: &'static str) -> usize {
        for (i, slot) in self.plugins.iter().enumerate() {
            match slot.get() {
                Some(n) if std::ptr::eq(*n, name) || *n == name => return i,
                Some(_) => {}
                None => {
                    // Single writer: nobody else can fill this slot in between.
                    let _ = slot.set(name);
                    return i;
                }
            }
        }
        PLUGIN_NAMES
    }
}

/// A route's counters summed over the workers, at scrape time.
pub struct Totals {
    requests: [u64; 2 * 2 * TYPE_SLOTS],
    do_requests: u64,
    duration: (Vec<u64>, f64),
    request_size: [(Vec<u64>, f64); 2],
    response_size: [(Vec<u64>, f64); 2],
    /// Response counts by rcode, per plugin name.
    responses: Vec<(&'static str, [u64; RCODE_SLOTS])>,
}

impl Default for Totals {
    fn default() -> Totals {
        let sizes = || (vec![0; SIZE_BUCKETS.len() + 1], 0.0);
        Totals {
            requests: [0; 2 * 2 * TYPE_SLOTS],
            do_requests: 0,
            duration: (vec![0; DURATION_BUCKETS.len() + 1], 0.0),
            request_size: [sizes(), sizes()],
            response_size: [sizes(), sizes()],
            responses: Vec::new(),
        }
    }
}

impl Totals {
    /// Adds one worker's counters.
    pub fn add(&mut self, c: &RouteCounters) {
        for (t, v) in self.requests.iter_mut().zip(&c.requests) {
            *t += v.load(Ordering::Relaxed);
        }
        self.do_requests += c.do_requests.load(Ordering::Relaxed);
        c.duration.add_to(&mut self.duration.0, &mut self.duration.1);
        for p in 0..2 {
            let (counts, sum) = &mut self.request_size[p];
            c.request_size[p].add_to(counts, sum);
            let (counts, sum) = &mut self.response_size[p];
            c.response_size[p].add_to(counts, sum);
        }
        // Workers fill their name tables in different orders: merge by name.
        for slot in 0..PLUGIN_SLOTS {
            let name = match c.plugins.get(slot) {
                Some(s) => match s.get() {
                    Some(n) => *n,
                    None => break,
                },
                None => OTHER,
            };
            let at = match self.responses.iter().position(|(n, _)| *n == name) {
                Some(at) => at,
                None => {
                    self.responses.push((name, [0; RCODE_SLOTS]));
                    self.responses.len() - 1
                }
            };
            for (rcode, total) in self.responses[at].1.iter_mut().enumerate() {
                *total += c.responses[rcode * PLUGIN_SLOTS + slot].load(Ordering::Relaxed);
            }
        }
    }

    /// Writes the route's samples. Like CoreDNS's labelled families, a series appears
    /// once it has been counted at least once.
    pub fn write(&self, out: &mut Families, server: &str, zone: &str) {
        let base = [("server", server), ("zone", zone), ("view", "")];
        for (proto, proto_label) in PROTOS.iter().enumerate() {
            for (family, family_label) in FAMILIES.iter().enumerate() {
                for t in 0..TYPE_SLOTS {
                    let n = self.requests[(proto * 2 + family) * TYPE_SLOTS + t];
                    if n == 0 {
                        continue;
                    }
                    out.counter(
                        "coredns_dns_requests_total",
                        "Counter of DNS requests made per zone, protocol and family.",
                        &[
                            base[0],
                            base[1],
                            base[2],
                            ("proto", proto_label),
                            ("family", family_label),
                            ("type", type_name(t)),
                        ],
                        n as f64,
                    );
                }
            }
        }
        if self.do_requests > 0 {
            out.counter(
                "coredns_dns_do_requests_total",
                "Counter of DNS requests with the DO bit set per zone.",
                &base,
                self.do_requests as f64,
            );
        }
        let (counts, sum) = &self.duration;
        if counts.iter().any(|c| *c > 0) {
            out.histogram(
                "coredns_dns_request_duration_seconds",
                "Histogram of the time (in seconds) each request took per zone.",
                &base,
                &DURATION_BUCKETS,
                counts,
                *sum,
            );
        }
        for (proto, proto_label) in PROTOS.iter().enumerate() {
            let labels = [base[0], base[1], base[2], ("proto", *proto_label)];
            let (counts, sum) = &self.request_size[proto];
            if counts.iter().any(|c| *c > 0) {
                out.histogram(
                    "coredns_dns_request_size_bytes",
                    "Size of the DNS requests in bytes, per zone and protocol.",
                    &labels,
                    &SIZE_BUCKETS,
                    counts,
                    *sum,
                );
            }
            let (counts, sum) = &self.response_size[proto];
            if counts.iter().any(|c| *c > 0) {
                out.histogram(
                    "coredns_dns_response_size_bytes",
                    "Size of the DNS responses in bytes, per zone and protocol.",
                    &labels,
                    &SIZE_BUCKETS,
                    counts,
                    *sum,
                );
            }
        }
        for (plugin, by_rcode) in &self.responses {
            for (rcode, n) in by_rcode.iter().enumerate() {
                if *n == 0 {
                    continue;
                }
                let name = match rcode {
                    r if r < RCODE_SLOTS - 1 => Rcode(r as u16).name(),
                    _ => OTHER.into(),
                };
                out.counter(
                    "coredns_dns_responses_total",
                    "Counter of DNS responses per zone, rcode and the plugin that wrote them.",
                    &[base[0], base[1], base[2], ("rcode", name.as_ref()), ("plugin", plugin)],
                    *n as f64,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_monitored_type_has_its_slot_and_the_rest_are_other() {
        for (i, (t, name)) in TYPES.iter().enumerate() {
            assert_eq!(type_index(*t), i);
            assert_eq!(rtype::name(*t), *name);
        }
        assert_eq!(type_name(type_index(rtype::HINFO)), "other");
        assert_eq!(type_name(type_index(rtype::OPT)), "other");
    }

    #[test]
    fn buckets_are_coredns_exponential_ones() {
        for (k, b) in DURATION_BUCKETS.iter().enumerate() {
            assert_eq!(*b, 0.00025 * 2f64.powi(k as i32));
        }
    }

    #[test]
    fn plugin_names_past_the_table_share_the_other_slot() {
        let c = RouteCounters::default();
        // Distinct &'static strs, as distinct plugins' names would be.
        let names: Vec<&'static str> = (0..PLUGIN_NAMES + 2)
            .map(|i| &*Box::leak(format!("p{i}").into_boxed_str()))
            .collect();
        for n in &names {
            assert!(c.plugin_slot(n) <= PLUGIN_NAMES);
        }
        assert_eq!(c.plugin_slot(names[3]), 3);
        // Same text, another pointer: same slot.
        assert_eq!(c.plugin_slot(Box::leak(String::from("p3").into_boxed_str())), 3);
        assert_eq!(c.plugin_slot(names[PLUGIN_NAMES + 1]), PLUGIN_NAMES);
    }
}
