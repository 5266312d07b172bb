//! What the API client counts for `/metrics` (requests, their durations, objects
//! rejected) and the rate-limited log of rejected objects.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::LOG_TARGET;
use crate::kubernetes::decode::DecodeError;
use crate::kubernetes::model::{ObjectKey, Resource};

/// Logs rejected objects (malformed, over a cap, breaking an API rule): the first at
/// once, then at most one line a minute with the count, so that a stream of bad objects
/// cannot flood the log; every one is counted in [`ApiStats`] by reason.
#[derive(Default)]
pub(in crate::kubernetes) struct RejectLog {
    unreported: u64,
    last_logged: Option<Instant>,
}

/// Least time between two "rejected objects" lines.
pub(super) const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl RejectLog {
    pub(in crate::kubernetes) fn reject(
        &mut self,
        stats: &ApiStats,
        resource: Resource,
        error: &DecodeError,
        key: Option<&ObjectKey>,
    ) {
        stats.count_rejected(resource, error.reason());
        self.unreported += 1;
        if self.last_logged.is_none_or(|at| at.elapsed() >= REJECT_LOG_INTERVAL) {
            let (count, name) = (self.unreported, resource.name());
            let which = match key {
                Some(k) if k.namespace.is_empty() => format!("{}: ", k.name),
                Some(k) => format!("{}/{}: ", k.namespace, k.name),
                None => String::new(),
            };
            log::warn!(
                target: LOG_TARGET,
                "rejected {count} {name} object(s) from the API (latest: {which}{error}; reason {})",
                error.reason()
            );
            self.unreported = 0;
            self.last_logged = Some(Instant::now());
        }
    }
}

/// The API verbs timed in [`ApiStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verb {
    /// One list page, body included.
    List,
    /// A watch request, until its response headers.
    Watch,
}

impl Verb {
    /// The `verb` label value.
    pub fn name(self) -> &'static str {
        match self {
            Verb::List => "LIST",
            Verb::Watch => "WATCH",
        }
    }
}

/// Upper bounds of the request duration buckets, in seconds (Prometheus' defaults, as
/// `coredns_kubernetes_rest_client_request_duration_seconds` uses).
pub const DURATION_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// API request counters, for CoreDNS's `coredns_kubernetes_rest_client_requests_total`
/// and `..._request_duration_seconds`, and the objects a source did not take, for
/// `clusterdns_kubernetes_rejected_objects_total` (the API's or a `file://` dump's).
/// Written only by the watch threads (or the file source), a few times a minute, so a
/// mutex costs nothing.
#[derive(Default)]
pub struct ApiStats {
    inner: Mutex<StatsInner>,
}

#[derive(Default)]
pub(super) struct StatsInner {
    /// By (status code or `<error>`, host).
    requests: BTreeMap<(Box<str>, Box<str>), u64>,
    durations: BTreeMap<(Verb, Box<str>), DurationHistogram>,
    /// Objects rejected, by resource and reason.
    rejected: BTreeMap<(Resource, &'static str), u64>,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiStatsSnapshot {
    /// Request counts by result and host.
    pub requests: Vec<RequestCount>,
    /// Request durations by verb and host.
    pub durations: Vec<(Verb, Box<str>, DurationHistogram)>,
    /// Objects rejected, by resource and reason
    /// ([`DecodeError::reason`](crate::kubernetes::decode::DecodeError::reason)).
    pub rejected: Vec<(Resource, &'static str, u64)>,
}

/// Requests by method, result and host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestCount {
    /// Always `GET`.
    pub method: &'static str,
    /// The HTTP status code, or `<error>` when no response came (client-go's convention).
    pub code: Box<str>,
    /// `host:port` of the endpoint.
    pub host: Box<str>,
    /// Requests so far.
    pub count: u64,
}

/// A request duration histogram over [`DURATION_BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DurationHistogram {
    /// Cumulative counts: `buckets[i]` requests took at most `DURATION_BUCKETS[i]`.
    pub buckets: [u64; 11],
    /// Total time of all requests.
    pub sum_seconds: f64,
    /// Requests timed.
    pub count: u64,
}

impl ApiStats {
    /// The counters as they are now.
    pub fn snapshot(&self) -> ApiStatsSnapshot {
        let inner = self.inner.lock();
        ApiStatsSnapshot {
            requests: inner
                .requests
                .iter()
                .map(|((code, host), &count)| RequestCount {
                    method: "GET",
                    code: code.clone(),
                    host: host.clone(),
                    count,
                })
                .collect(),
            durations: inner
                .durations
                .iter()
                .map(|((verb, host), h)| (*verb, host.clone(), h.clone()))
                .collect(),
            rejected: inner.rejected.iter().map(|(&(r, why), &n)| (r, why, n)).collect(),
        }
    }

    pub(in crate::kubernetes) fn count_rejected(&self, resource: Resource, reason: &'static str) {
        *self.inner.lock().rejected.entry((resource, reason)).or_default() += 1;
    }

    pub(super) fn count(&self, code: &str, host: &str) {
        *self
            .inner
            .lock()
            .requests
            .entry((code.into(), host.into()))
            .or_default() += 1;
    }

    pub(super) fn observe(&self, verb: Verb, host: &str, took: Duration) {
        let seconds = took.as_secs_f64();
        let mut inner = self.inner.lock();
        let histogram = inner.durations.entry((verb, host.into())).or_default();
        for (count, bound) in histogram.buckets.iter_mut().zip(DURATION_BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        histogram.sum_seconds += seconds;
        histogram.count += 1;
    }
}
