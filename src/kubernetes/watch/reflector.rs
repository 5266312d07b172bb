//! The reflector's decisions, without I/O: what to request next (a list page, a watch
//! from a resourceVersion), what a response, a list item or a watch event means (an
//! event for the builder, a rejected object, a relist, a failure), and how long to wait
//! after a failure. The runner ([`super::runner`]) performs each [`Action`] and feeds
//! back what came of it as an [`Input`]; time comes in with each input, and the jitter
//! from one [`Rng`] the reflector owns, so a test drives every branch from a table.
//!
//! ```text
//!        Start ──▶ LIST page ──Response(200)──▶ ReadPage ──Item…──▶ PageEnd ─┬─ continue token: next page
//!                    ▲   │                                                    └─ last page: ListDone,
//!                    │   ├─ 410 with a continue token (once): first page again        WATCH from its RV
//!                    │   └─ other status: ReadError ──▶ failure                           │
//!                    │                                                                    ▼
//!      410 Gone ─────┤   WATCH ──Response(200)──▶ ReadLine ──Line…──▶ End (≥ 1 s or events): WATCH again
//!   (HTTP or ERROR   │     │ events advance the RV; the first one is progress (backoff reset, healthy)
//!    event; a second │     └─ ERROR event, short watch, other status ──▶ failure
//!    one in a row    │
//!    without progress│   failure (transport, read, stall, status, malformed list):
//!    waits a backoff)│     Health false once per outage, next endpoint, Wait(backoff) ──▶ same step again
//! ```
//!
//! Every input is answered by exactly one action; an input that leads to several
//! (an event and a health change) queues the rest, and [`Input::Done`] collects them.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stats::Verb;
use super::stream::NextLine;
use super::{LOG_TARGET, WatchConfig};
use crate::chain::Rng;
use crate::kubernetes::decode::{ApiStatus, DecodeError, ListMeta, WatchEvent};
use crate::kubernetes::limits::MAX_OBJECT_BYTES;
use crate::kubernetes::model::{Event, Object, ObjectKey, Resource};

/// client-go's reflector treats a watch that ends within a second without an event as an
/// error ("very short watch"), so a server that closes at once is not hammered.
const MIN_WATCH_DURATION: Duration = Duration::from_secs(1);

/// The most objects one list may bring, every page together: ten times the largest
/// clusters Kubernetes supports (150,000 pods). An API that sends more is broken or
/// hostile, and the list fails rather than grow the store without end.
const MAX_LIST_OBJECTS: u64 = 1_500_000;

/// Fields a pod watch filters on, as CoreDNS does: pods that are done keep no IP.
pub(super) const POD_FIELD_SELECTOR: &str = "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown";

/// What came of the last [`Action`].
#[derive(Debug)]
pub enum Input {
    /// The first call.
    Start,
    /// A [`Action::Wait`] is over.
    Waited,
    /// An [`Action::Emit`] or [`Action::Reject`] was done.
    Done,
    /// The request got a response with this HTTP status (its body not read yet).
    Response(u16),
    /// The body of a failed response, after [`Action::ReadError`]: the API Status's
    /// message, or the status's reason phrase.
    ErrorBody(String),
    /// One item of the list page being read.
    Item(Result<Object, DecodeError>),
    /// The list page was read to its end.
    PageEnd(ListMeta),
    /// The list page's body is not a list, or broke a bound ([`DecodeError::TooLarge`],
    /// or [`DecodeError::Stopped`] after an [`Action::AbortPage`]).
    PageError(DecodeError),
    /// The next line of the watch stream.
    Line(NextLine),
    /// The request or the reading of its body failed.
    Failed(IoFailure),
}

/// A failure of the I/O itself, as the runner saw it.
#[derive(Debug)]
pub enum IoFailure {
    /// No answer: connection refused or reset, no response within the timeout.
    Transport(String),
    /// The body stopped: the connection was lost.
    Read(String),
    /// The body was silent for longer than the idle timeout (a stalled stream).
    Stalled,
}

/// What the runner must do next.
#[derive(Debug)]
pub enum Action {
    /// Send `GET url`; answer with [`Input::Response`] or [`Input::Failed`].
    Get { verb: Verb, url: String },
    /// Read the failed response's body for its Status message; answer with
    /// [`Input::ErrorBody`].
    ReadError,
    /// Read the list page on: answer with the next [`Input::Item`], or
    /// [`Input::PageEnd`], [`Input::PageError`], [`Input::Failed`].
    ReadPage,
    /// Stop reading the page (it broke a bound): the decoder then ends with
    /// [`DecodeError::Stopped`], answered as [`Input::PageError`].
    AbortPage(&'static str),
    /// Read the next line of the watch stream; answer with [`Input::Line`] or
    /// [`Input::Failed`].
    ReadLine,
    /// Hand this event to the builder; answer with [`Input::Done`].
    Emit(Event),
    /// Count and log an object that is not taken; answer with [`Input::Done`].
    Reject { error: DecodeError, key: Option<ObjectKey> },
    /// Wait this long (a backoff); answer with [`Input::Waited`].
    Wait(Duration),
}

/// Why a request failed; displayed in the outage log line.
#[derive(Debug)]
pub enum Failure {
    /// No answer: connection refused or reset, no response within the timeout.
    Transport { url: Box<str>, error: String },
    /// An answer other than 200 (with 410 handled before).
    Status { url: Box<str>, code: u16, message: String },
    /// The body stopped: connection lost.
    Read { url: Box<str>, error: String },
    /// The body was silent beyond the idle timeout.
    Stalled { url: Box<str> },
    /// The list body is not a list.
    Decode { url: Box<str>, error: DecodeError },
    /// The watch ended with an ERROR event other than 410.
    WatchError { url: Box<str>, status: ApiStatus },
    /// The watch ended at once without delivering anything.
    ShortWatch { url: Box<str> },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Transport { url, error } => write!(f, "GET {url}: {error}"),
            Failure::Status { url, code, message } => write!(f, "GET {url}: HTTP {code}: {message}"),
            Failure::Read { url, error } => write!(f, "GET {url}: reading the response: {error}"),
            Failure::Stalled { url } => write!(f, "GET {url}: no data within the idle timeout (stalled stream)"),
            Failure::Decode { url, error } => write!(f, "GET {url}: malformed list: {error}"),
            Failure::WatchError { url, status } => write!(f, "GET {url}: watch ended with an error: {status}"),
            Failure::ShortWatch { url } => write!(f, "GET {url}: the watch closed at once without any event"),
        }
    }
}

/// Where the reflector is.
#[derive(Debug)]
enum Phase {
    /// Before the first step.
    Idle,
    /// Waiting out a backoff; then the step that failed (or the relist) again.
    BackingOff,
    /// Listing, page by page.
    List(Listing),
    /// Watching from [`Reflector::resource_version`].
    Watch(Watching),
    /// Reading the body of a response with this failed status.
    ErrorBody(u16),
}

/// A list in progress.
#[derive(Debug, Default)]
struct Listing {
    continue_token: Option<Box<str>>,
    /// The list was restarted once after its continue token expired.
    restarted: bool,
    /// `ListStart` was emitted for this list.
    started: bool,
    /// The page's response came (its body is being read).
    reading: bool,
    /// Items of this list, every page, and of the page being read.
    listed: u64,
    page_items: u64,
}

/// A watch in progress.
#[derive(Debug)]
struct Watching {
    begun: Instant,
    /// The response came (the stream is being read).
    reading: bool,
    /// An event was delivered.
    delivered: bool,
}

/// One resource's list-and-watch decisions (client-go's reflector: "Efficient detection
/// of changes" in the Kubernetes API concepts).
pub struct Reflector {
    resource: Resource,
    cfg: Arc<WatchConfig>,
    /// `None`: the next step is a list; `Some`: watch from this resourceVersion.
    resource_version: Option<Box<str>>,
    /// Index in `cfg.endpoints` of the endpoint in use.
    endpoint: usize,
    /// Whether the API is taken to be reachable (true at start, so that the first failure
    /// is reported as an outage).
    healthy: bool,
    backoff: Backoff,
    /// Set by a 410 relist, cleared when a watch makes progress.
    expired_without_progress: bool,
    rng: Rng,
    phase: Phase,
    /// Actions decided and not handed out yet.
    pending: VecDeque<Action>,
    /// The URL of the request in flight, without its query (continue tokens are long and
    /// opaque), for messages.
    url: Box<str>,
    /// The most objects one list may bring ([`MAX_LIST_OBJECTS`]; lower in tests).
    max_list_objects: u64,
    /// The last failure, for tests.
    last_failure: Option<Failure>,
}

impl Reflector {
    /// The reflector of `resource` over the endpoints of `cfg` (at least one), drawing
    /// its jitter from `rng`.
    pub fn new(resource: Resource, cfg: Arc<WatchConfig>, rng: Rng) -> Reflector {
        debug_assert!(!cfg.endpoints.is_empty(), "a reflector needs an endpoint");
        Reflector {
            resource,
            backoff: Backoff::new(cfg.backoff_initial, cfg.backoff_max),
            cfg,
            resource_version: None,
            endpoint: 0,
            healthy: true,
            expired_without_progress: false,
            rng,
            phase: Phase::Idle,
            pending: VecDeque::new(),
            url: "".into(),
            max_list_objects: MAX_LIST_OBJECTS,
            last_failure: None,
        }
    }

    /// Takes what came of the last action (at `now`) and says what to do next.
    pub fn next(&mut self, input: Input, now: Instant) -> Action {
        if !matches!(input, Input::Done) {
            self.handle(input, now);
        }
        match self.pending.pop_front() {
            Some(action) => action,
            None => {
                self.unexpected("Done with nothing left to do");
                self.pending.pop_front().expect("unexpected() queues a wait")
            }
        }
    }

    /// The failure the reflector last backed off from.
    #[cfg(test)]
    pub fn last_failure(&self) -> Option<&Failure> {
        self.last_failure.as_ref()
    }

    fn handle(&mut self, input: Input, now: Instant) {
        if !self.pending.is_empty() {
            return self.unexpected("an input while actions were queued");
        }
        let phase = std::mem::replace(&mut self.phase, Phase::Idle);
        match (phase, input) {
            (Phase::Idle, Input::Start) | (Phase::BackingOff, Input::Waited) => self.step(now),
            (Phase::List(list), input) => self.listing(list, input, now),
            (Phase::Watch(watch), input) => self.watching(watch, input, now),
            (Phase::ErrorBody(code), Input::ErrorBody(message)) => self.status_failure(code, message),
            (phase, Input::Failed(io)) if !matches!(phase, Phase::Idle | Phase::BackingOff) => self.io_failure(io),
            (phase, input) => {
                self.phase = phase;
                self.unexpected(&format!("{input:?}"));
            }
        }
    }

    /// Lists when no resourceVersion is known, else watches from it. A failed step is
    /// retried as it was: a failed watch resumes from the same resourceVersion (the API
    /// replays what was missed, or answers 410 if that is no longer possible).
    fn step(&mut self, now: Instant) {
        match self.resource_version.clone() {
            None => {
                self.phase = Phase::List(Listing::default());
                self.request_page(None);
            }
            Some(rv) => {
                let url = self.watch_url(&rv);
                self.phase = Phase::Watch(Watching {
                    begun: now,
                    reading: false,
                    delivered: false,
                });
                self.get(Verb::Watch, url);
            }
        }
    }

    fn request_page(&mut self, continue_token: Option<&str>) {
        let url = self.list_url(continue_token);
        self.get(Verb::List, url);
    }

    fn get(&mut self, verb: Verb, url: String) {
        self.url = without_query(&url);
        self.pending.push_back(Action::Get { verb, url });
    }

    fn listing(&mut self, mut list: Listing, input: Input, now: Instant) {
        match input {
            Input::Response(200) if !list.reading => {
                list.reading = true;
                list.page_items = 0;
                if !std::mem::replace(&mut list.started, true) {
                    self.pending.push_back(Action::Emit(Event::ListStart(self.resource)));
                }
                self.pending.push_back(Action::ReadPage);
            }
            // The continue token expired (a paged list reads one etcd revision, which
            // compaction removes after about five minutes): start over right away, once;
            // a second expiry in a row is a failure, retried after a backoff. The next
            // ListStart tells the builder to drop the unfinished list.
            Input::Response(410) if !list.reading && list.continue_token.is_some() && !list.restarted => {
                log::info!(target: LOG_TARGET, "list of {} expired while paging: listing again", self.resource.name());
                let restarted = Listing {
                    restarted: true,
                    ..Listing::default()
                };
                self.phase = Phase::List(restarted);
                self.request_page(None);
                return;
            }
            Input::Response(code) if !list.reading => {
                self.phase = Phase::ErrorBody(code);
                self.pending.push_back(Action::ReadError);
                return;
            }
            Input::Item(item) if list.reading => {
                // The API's answer is bounded like a watch stream: no item over
                // MAX_OBJECT_BYTES (the decoder counts the bytes since the last item), no
                // page over its limit, no list over MAX_LIST_OBJECTS; past a bound the
                // body stops being read and the list fails.
                list.page_items += 1;
                list.listed += 1;
                if list.page_items > self.page_limit() {
                    self.pending
                        .push_back(Action::AbortPage("a page ten times over its limit"));
                } else if list.listed > self.max_list_objects {
                    self.pending
                        .push_back(Action::AbortPage("more objects in a list than clusterdns takes"));
                } else {
                    // An item that breaks an API rule is not sent: the list's end then
                    // removes any version of it stored before.
                    match item {
                        Ok(object) if object.resource() == self.resource => {
                            self.pending.push_back(Action::Emit(Event::Upsert(object)));
                        }
                        Ok(object) => {
                            let error = DecodeError::WrongKind {
                                expected: self.resource.kind(),
                                found: object.resource().kind().into(),
                            };
                            self.pending.push_back(Action::Reject { error, key: None });
                        }
                        Err(error) => self.pending.push_back(Action::Reject { error, key: None }),
                    }
                    self.pending.push_back(Action::ReadPage);
                }
            }
            Input::PageEnd(meta) if list.reading => match meta.continue_token {
                Some(token) => {
                    list.reading = false;
                    self.request_page(Some(&token));
                    list.continue_token = Some(token);
                }
                None => {
                    self.pending.push_back(Action::Emit(Event::ListDone(self.resource)));
                    self.resource_version = Some(meta.resource_version);
                    // A list completed: the API answers again.
                    self.mark_healthy();
                    return self.step(now);
                }
            },
            Input::PageError(error) if list.reading => {
                if let DecodeError::TooLarge(max) = error {
                    let error = DecodeError::TooLarge(max);
                    self.pending.push_back(Action::Reject { error, key: None });
                }
                let url = self.url.clone();
                return self.fail(Failure::Decode { url, error });
            }
            Input::Failed(io) => return self.io_failure(io),
            input => {
                self.phase = Phase::List(list);
                return self.unexpected(&format!("{input:?}"));
            }
        }
        self.phase = Phase::List(list);
    }

    fn watching(&mut self, mut watch: Watching, input: Input, now: Instant) {
        let line = match input {
            Input::Response(200) if !watch.reading => {
                watch.reading = true;
                self.phase = Phase::Watch(watch);
                self.pending.push_back(Action::ReadLine);
                return;
            }
            Input::Response(410) if !watch.reading => return self.gone(now),
            Input::Response(code) if !watch.reading => {
                self.phase = Phase::ErrorBody(code);
                self.pending.push_back(Action::ReadError);
                return;
            }
            Input::Line(line) if watch.reading => line,
            Input::Failed(io) => return self.io_failure(io),
            input => {
                self.phase = Phase::Watch(watch);
                return self.unexpected(&format!("{input:?}"));
            }
        };
        let event = match line {
            NextLine::End => {
                if !watch.delivered && now.saturating_duration_since(watch.begun) < MIN_WATCH_DURATION {
                    let url = self.url.clone();
                    return self.fail(Failure::ShortWatch { url });
                }
                // Closed by the server (its timeoutSeconds): watch again from the last RV.
                self.progress();
                return self.step(now);
            }
            // Read past, not kept; which object it was is not known (its metadata was not
            // within the first MAX_OBJECT_BYTES), so whatever version of it is stored
            // stays until the next list.
            NextLine::TooLong => {
                let error = DecodeError::TooLarge(MAX_OBJECT_BYTES);
                self.pending.push_back(Action::Reject { error, key: None });
                None
            }
            NextLine::Blank => None,
            NextLine::Event(Err(error)) => {
                self.pending.push_back(Action::Reject { error, key: None });
                None
            }
            NextLine::Event(Ok(event)) => Some(event),
        };
        if let Some(event) = event {
            match event {
                WatchEvent::Upsert {
                    object,
                    resource_version,
                } => {
                    self.advance(resource_version);
                    self.pending.push_back(Action::Emit(Event::Upsert(object)));
                }
                WatchEvent::Delete { key, resource_version } => {
                    self.advance(resource_version);
                    self.pending.push_back(Action::Emit(Event::Delete(self.resource, key)));
                }
                WatchEvent::Bookmark { resource_version } => self.advance(resource_version),
                // An object the API may not hold (over a cap, an invalid name or field,
                // malformed): counted, logged, and any version of it stored before
                // removed, since the API no longer has that version either.
                WatchEvent::Rejected {
                    key,
                    resource_version,
                    error,
                } => {
                    self.advance(resource_version);
                    let reject = Action::Reject {
                        error,
                        key: Some(key.clone()),
                    };
                    self.pending.push_back(reject);
                    self.pending.push_back(Action::Emit(Event::Delete(self.resource, key)));
                }
                WatchEvent::Error(status) if status.code == 410 => return self.gone(now),
                WatchEvent::Error(status) => {
                    let url = self.url.clone();
                    return self.fail(Failure::WatchError { url, status });
                }
            }
            // A watch that delivers ends the failure streak.
            if !std::mem::replace(&mut watch.delivered, true) {
                self.progress();
            }
        }
        self.phase = Phase::Watch(watch);
        self.pending.push_back(Action::ReadLine);
    }

    /// 410 Gone: the resourceVersion has been compacted away: list again.
    fn gone(&mut self, now: Instant) {
        let rv = self.resource_version.take().unwrap_or_default();
        let name = self.resource.name();
        log::info!(
            target: LOG_TARGET,
            "watch of {name} expired (resourceVersion {rv} is too old): listing again"
        );
        // A relist whose watch expires again before delivering anything (an API server
        // lagging behind the one that answered the list) backs off, so that it cannot
        // become a relist loop.
        if std::mem::replace(&mut self.expired_without_progress, true) {
            self.phase = Phase::BackingOff;
            let delay = self.backoff.next(&mut self.rng);
            self.pending.push_back(Action::Wait(delay));
        } else {
            self.step(now);
        }
    }

    fn status_failure(&mut self, code: u16, mut message: String) {
        if code == 403 {
            // The usual cause after an upgrade is RBAC (CoreDNS 1.8 and EndpointSlices):
            // name exactly what to grant.
            let (group, resource) = match self.resource {
                Resource::EndpointSlices => ("discovery.k8s.io", "endpointslices"),
                other => ("\"\" (core)", other.name()),
            };
            message.push_str(&format!(
                " (clusterdns needs the verbs list and watch on resource {resource} in API group {group})"
            ));
        }
        let url = self.url.clone();
        self.fail(Failure::Status { url, code, message });
    }

    fn io_failure(&mut self, io: IoFailure) {
        let url = self.url.clone();
        self.fail(match io {
            IoFailure::Transport(error) => Failure::Transport { url, error },
            IoFailure::Read(error) => Failure::Read { url, error },
            IoFailure::Stalled => Failure::Stalled { url },
        });
    }

    /// Logs an outage once, when it starts (never per retry), moves to the next
    /// endpoint, and backs off.
    fn fail(&mut self, failure: Failure) {
        let name = self.resource.name();
        if self.healthy {
            self.healthy = false;
            log::warn!(target: LOG_TARGET, "API unreachable for {name}: {failure}; serving the last data and retrying");
            self.pending.push_back(Action::Emit(Event::Health {
                resource: self.resource,
                healthy: false,
            }));
        } else {
            log::debug!(target: LOG_TARGET, "{name} still failing: {failure}");
        }
        self.last_failure = Some(failure);
        self.endpoint = (self.endpoint + 1) % self.cfg.endpoints.len();
        self.phase = Phase::BackingOff;
        let delay = self.backoff.next(&mut self.rng);
        self.pending.push_back(Action::Wait(delay));
    }

    /// The runner broke the protocol (a bug): start over after a backoff rather than
    /// stop watching.
    fn unexpected(&mut self, what: &str) {
        debug_assert!(false, "reflector of {}: unexpected {what}", self.resource.name());
        log::error!(target: LOG_TARGET, "watch of {}: unexpected {what}; starting over", self.resource.name());
        self.pending.clear();
        self.resource_version = None;
        self.phase = Phase::BackingOff;
        let delay = self.backoff.next(&mut self.rng);
        self.pending.push_back(Action::Wait(delay));
    }

    /// A watch delivered events or ran its course: the failure streak is over.
    fn progress(&mut self) {
        self.backoff.reset();
        self.expired_without_progress = false;
        self.mark_healthy();
    }

    fn mark_healthy(&mut self) {
        if !self.healthy {
            self.healthy = true;
            log::info!(target: LOG_TARGET, "API reachable again for {} at {}", self.resource.name(), self.endpoint());
            self.pending.push_back(Action::Emit(Event::Health {
                resource: self.resource,
                healthy: true,
            }));
        }
    }

    /// Moves the resourceVersion forward; an event without one leaves it as it was.
    fn advance(&mut self, seen: Box<str>) {
        if !seen.is_empty() {
            self.resource_version = Some(seen);
        }
    }

    /// The most items a page may hold: the API honours `limit` for the lists clusterdns
    /// asks for (never at resourceVersion=0); a page ten times over it is not a page.
    fn page_limit(&self) -> u64 {
        match self.cfg.page_size {
            0 => u64::MAX,
            n => (n as u64 * 10).max(10_000),
        }
    }

    fn list_url(&self, continue_token: Option<&str>) -> String {
        let mut url = format!("{}{}?", self.endpoint(), self.resource.path());
        if self.cfg.page_size > 0 {
            url.push_str(&format!("limit={}&", self.cfg.page_size));
        }
        self.push_selectors(&mut url);
        if let Some(token) = continue_token {
            url.push_str("continue=");
            push_encoded(&mut url, token);
        }
        trim_query(url)
    }

    /// A watch asks for `timeoutSeconds` in `[base, 2*base)` (client-go's jitter, so that
    /// replicas do not reconnect in lockstep), with bookmarks.
    fn watch_url(&mut self, resource_version: &str) -> String {
        let base = self.cfg.watch_timeout.as_secs().max(1);
        let timeout = base + below(&mut self.rng, base);
        let mut url = format!("{}{}?watch=1&resourceVersion=", self.endpoint(), self.resource.path());
        push_encoded(&mut url, resource_version);
        url.push_str(&format!("&allowWatchBookmarks=true&timeoutSeconds={timeout}&"));
        self.push_selectors(&mut url);
        trim_query(url)
    }

    /// Appends `labelSelector=..&` and `fieldSelector=..&` as the resource uses them
    /// (CoreDNS: `labels` for services, endpointslices and pods; `namespace_labels` for
    /// namespaces; a phase filter for pods).
    fn push_selectors(&self, url: &mut String) {
        let labels = match self.resource {
            Resource::Namespaces => &self.cfg.namespace_label_selector,
            _ => &self.cfg.label_selector,
        };
        if let Some(selector) = labels.as_deref().filter(|s| !s.is_empty()) {
            url.push_str("labelSelector=");
            push_encoded(url, selector);
            url.push('&');
        }
        if self.resource == Resource::Pods {
            url.push_str("fieldSelector=");
            push_encoded(url, POD_FIELD_SELECTOR);
            url.push('&');
        }
    }

    fn endpoint(&self) -> &str {
        self.cfg.endpoints[self.endpoint].trim_end_matches('/')
    }
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
fn push_encoded(url: &mut String, value: &str) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            url.push(char::from(byte));
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
}

fn trim_query(mut url: String) -> String {
    while url.ends_with(['&', '?']) {
        url.pop();
    }
    url
}

/// The URL without its query, for messages (continue tokens are long and opaque).
fn without_query(url: &str) -> Box<str> {
    url.split('?').next().unwrap_or(url).into()
}

/// A value in `[0, bound)` (the generator's own `below` takes `usize` bounds below
/// 2^32; backoff jitter is counted in nanoseconds).
fn below(rng: &mut Rng, bound: u64) -> u64 {
    rng.next_u64() % bound.max(1)
}

/// Capped exponential backoff with jitter: the n-th failure in a row waits a random time
/// in `[d/2, d]`, `d = min(initial * 2^n, max)`, so that replicas spread out after an API
/// restart instead of relisting together.
#[derive(Debug)]
struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            failures: 0,
        }
    }

    fn next(&mut self, rng: &mut Rng) -> Duration {
        let factor = 1u32 << self.failures.min(20);
        self.failures = self.failures.saturating_add(1);
        let full = self.initial.saturating_mul(factor).min(self.max);
        let half = full / 2;
        half + Duration::from_nanos(below(rng, u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1)))
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::model::{Namespace, Service, ServiceKind};

    fn config(endpoints: &[&str], backoff_max_ms: u64) -> WatchConfig {
        WatchConfig {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            resources: vec![Resource::Services],
            page_size: 2,
            watch_timeout: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(backoff_max_ms),
            ..WatchConfig::default()
        }
    }

    /// A reflector and the start of its clock, driven row by row.
    struct Table {
        reflector: Reflector,
        t0: Instant,
    }

    impl Table {
        fn new(resource: Resource, cfg: WatchConfig) -> Table {
            Table {
                reflector: Reflector::new(resource, Arc::new(cfg), Rng::with_seed(7)),
                t0: Instant::now(),
            }
        }

        fn services(endpoints: &[&str]) -> Table {
            Table::new(Resource::Services, config(endpoints, 80))
        }

        /// Feeds each row's input at its time (ms since the start) and checks the action.
        fn run(&mut self, rows: Vec<(u64, Input, &str)>) {
            for (i, (at, input, want)) in rows.into_iter().enumerate() {
                let shown = format!("{input:?}");
                let got = describe(&self.reflector.next(input, self.t0 + Duration::from_millis(at)));
                assert!(fits(&got, want), "row {i} ({shown:.80}): got {got:?}, want {want:?}");
            }
        }

        fn failure(&self) -> String {
            self.reflector.last_failure().map(|f| f.to_string()).unwrap_or_default()
        }
    }

    /// An action as a short string: `LIST a/api/...`, `emit Upsert ns/a`, `wait 17ms`...
    fn describe(action: &Action) -> String {
        match action {
            Action::Get { verb, url } => format!("{} {}", verb.name(), url.trim_start_matches("http://")),
            Action::ReadError => "read error".into(),
            Action::ReadPage => "read page".into(),
            Action::AbortPage(why) => format!("abort: {why}"),
            Action::ReadLine => "read line".into(),
            Action::Emit(Event::ListStart(_)) => "emit ListStart".into(),
            Action::Emit(Event::ListDone(_)) => "emit ListDone".into(),
            Action::Emit(Event::Upsert(o)) => format!("emit Upsert {}/{}", o.key().namespace, o.key().name),
            Action::Emit(Event::Delete(_, k)) => format!("emit Delete {}/{}", k.namespace, k.name),
            Action::Emit(Event::Health { healthy, .. }) => format!("emit Health {healthy}"),
            Action::Reject { error, key } => match key {
                Some(k) => format!("reject {} {}/{}", error.reason(), k.namespace, k.name),
                None => format!("reject {}", error.reason()),
            },
            Action::Wait(delay) => format!("wait {}ms", delay.as_millis()),
        }
    }

    /// Whether an action matches what a row wants; `wait A..Bms` is a range (jitter).
    fn fits(got: &str, want: &str) -> bool {
        let range = want
            .strip_prefix("wait ")
            .and_then(|w| w.strip_suffix("ms")?.split_once(".."));
        match (got.strip_prefix("wait "), range) {
            (Some(got), Some((lo, hi))) => {
                let got: u64 = got.trim_end_matches("ms").parse().unwrap();
                lo.parse::<u64>().unwrap() <= got && got <= hi.parse().unwrap()
            }
            _ => got == want,
        }
    }

    fn svc(name: &str) -> Object {
        Object::Service(Service {
            namespace: "ns".into(),
            name: name.into(),
            resource_version: "".into(),
            kind: ServiceKind::ClusterIp,
            cluster_ips: Vec::new(),
            external_name: "".into(),
            external_ips: Vec::new(),
            ports: Vec::new(),
        })
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn ok() -> Input {
        Input::Response(200)
    }

    fn status(code: u16) -> Input {
        Input::Response(code)
    }

    fn body(message: &str) -> Input {
        Input::ErrorBody(message.into())
    }

    fn item(name: &str) -> Input {
        Input::Item(Ok(svc(name)))
    }

    fn page(rv: &str, continue_token: Option<&str>) -> Input {
        Input::PageEnd(ListMeta {
            resource_version: rv.into(),
            continue_token: continue_token.map(Into::into),
        })
    }

    fn line(event: WatchEvent) -> Input {
        Input::Line(NextLine::Event(Ok(event)))
    }

    fn upsert(name: &str, rv: &str) -> Input {
        line(WatchEvent::Upsert {
            object: svc(name),
            resource_version: rv.into(),
        })
    }

    fn delete(name: &str, rv: &str) -> Input {
        line(WatchEvent::Delete {
            key: key(name),
            resource_version: rv.into(),
        })
    }

    fn bookmark(rv: &str) -> Input {
        line(WatchEvent::Bookmark {
            resource_version: rv.into(),
        })
    }

    fn watch_error(code: u16) -> Input {
        line(WatchEvent::Error(ApiStatus {
            code,
            reason: "Reason".into(),
            message: "message".into(),
        }))
    }

    fn end() -> Input {
        Input::Line(NextLine::End)
    }

    fn refused() -> Input {
        Input::Failed(IoFailure::Transport("connection refused".into()))
    }

    const LIST_A: &str = "LIST a/api/v1/services?limit=2";
    const LIST_B: &str = "LIST b/api/v1/services?limit=2";

    fn watch(endpoint: &str, rv: &str) -> String {
        format!(
            "WATCH {endpoint}/api/v1/services?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=1"
        )
    }

    /// Lists one empty page at `rv`, leaving the reflector waiting for the watch's
    /// response.
    fn listed(t: &mut Table, rv: &str) {
        t.run(vec![
            (0, Input::Start, LIST_A),
            (0, ok(), "emit ListStart"),
            (0, Input::Done, "read page"),
            (0, page(rv, None), "emit ListDone"),
            (0, Input::Done, &watch("a", rv)),
        ]);
    }

    #[test]
    fn lists_page_by_page_then_watches_from_the_lists_version() {
        let mut t = Table::services(&["http://a", "http://b"]);
        t.run(vec![
            (0, Input::Start, LIST_A),
            (0, ok(), "emit ListStart"),
            (0, Input::Done, "read page"),
            (0, item("a"), "emit Upsert ns/a"),
            (0, Input::Done, "read page"),
            (0, item("b"), "emit Upsert ns/b"),
            (0, Input::Done, "read page"),
            // The continue token is opaque: encoded as it is.
            (
                0,
                page("100", Some("p2/+=")),
                "LIST a/api/v1/services?limit=2&continue=p2%2F%2B%3D",
            ),
            // One ListStart per list, not per page.
            (0, ok(), "read page"),
            (0, item("c"), "emit Upsert ns/c"),
            (0, Input::Done, "read page"),
            // The last page: the list is done, and the watch starts from its version.
            (0, page("100", None), "emit ListDone"),
            (0, Input::Done, &watch("a", "100")),
            (0, ok(), "read line"),
            (10, upsert("d", "101"), "emit Upsert ns/d"),
            (10, Input::Done, "read line"),
            (10, Input::Line(NextLine::Blank), "read line"),
            (10, delete("a", "102"), "emit Delete ns/a"),
            (10, Input::Done, "read line"),
            (10, bookmark("105"), "read line"),
            // An event without a version leaves the version as it was.
            (10, upsert("e", ""), "emit Upsert ns/e"),
            (10, Input::Done, "read line"),
            // Closed by the server (timeoutSeconds): watch again from the last version
            // seen (the bookmark's), without a relist.
            (300_000, end(), &watch("a", "105")),
        ]);
        assert!(t.reflector.last_failure().is_none());
    }

    #[test]
    fn list_failures_back_off_fail_over_and_report_the_outage_once() {
        let mut t = Table::new(Resource::Services, config(&["http://a", "http://b"], 1000));
        t.run(vec![
            (0, Input::Start, LIST_A),
            (0, refused(), "emit Health false"),
            (0, Input::Done, "wait 10..20ms"),
            (20, Input::Waited, LIST_B),
            (20, status(500), "read error"),
            // Still failing: no second Health event, the backoff doubles.
            (20, body("etcd is down"), "wait 20..40ms"),
        ]);
        assert_eq!(t.failure(), "GET http://b/api/v1/services: HTTP 500: etcd is down");
        t.run(vec![
            (60, Input::Waited, LIST_A),
            (60, ok(), "emit ListStart"),
            (60, Input::Done, "read page"),
            (60, item("a"), "emit Upsert ns/a"),
            (60, Input::Done, "read page"),
            (
                60,
                Input::Failed(IoFailure::Read("connection reset".into())),
                "wait 40..80ms",
            ),
        ]);
        assert_eq!(
            t.failure(),
            "GET http://a/api/v1/services: reading the response: connection reset"
        );
        t.run(vec![
            // A failed list starts over from its first page, with a new ListStart.
            (140, Input::Waited, LIST_B),
            (140, ok(), "emit ListStart"),
            (140, Input::Done, "read page"),
            (140, page("10", None), "emit ListDone"),
            // A completed list ends the outage...
            (140, Input::Done, "emit Health true"),
            (140, Input::Done, &watch("b", "10")),
            // ... but not the failure streak: only a watch's progress resets the backoff.
            (140, Input::Failed(IoFailure::Stalled), "emit Health false"),
            (140, Input::Done, "wait 80..160ms"),
        ]);
        assert_eq!(
            t.failure(),
            "GET http://b/api/v1/services: no data within the idle timeout (stalled stream)"
        );
    }

    #[test]
    fn watch_failures_resume_from_the_last_version_and_the_backoff_is_capped() {
        let mut t = Table::services(&["http://a", "http://b"]);
        listed(&mut t, "10");
        t.run(vec![
            (0, ok(), "read line"),
            (0, upsert("a", "11"), "emit Upsert ns/a"),
            (0, Input::Done, "read line"),
            (5000, Input::Failed(IoFailure::Stalled), "emit Health false"),
            (5000, Input::Done, "wait 10..20ms"),
            // The next endpoint, from the last version seen: no relist.
            (5020, Input::Waited, &watch("b", "11")),
            (5020, refused(), "wait 20..40ms"),
            (5060, Input::Waited, &watch("a", "11")),
            (5060, refused(), "wait 40..80ms"),
            (5140, Input::Waited, &watch("b", "11")),
            // Capped at backoff_max (80 ms).
            (5140, refused(), "wait 40..80ms"),
            (5220, Input::Waited, &watch("a", "11")),
            (5220, ok(), "read line"),
            // Progress ends the outage and resets the backoff.
            (5300, bookmark("12"), "emit Health true"),
            (5300, Input::Done, "read line"),
            (
                5400,
                Input::Failed(IoFailure::Read("reset".into())),
                "emit Health false",
            ),
            (5400, Input::Done, "wait 10..20ms"),
            (5420, Input::Waited, &watch("b", "12")),
        ]);
    }

    #[test]
    fn a_short_watch_is_a_failure_unless_it_delivered() {
        let mut t = Table::services(&["http://a", "http://b"]);
        listed(&mut t, "10");
        t.run(vec![
            (0, ok(), "read line"),
            // Malformed lines and over-long ones are not progress.
            (
                0,
                Input::Line(NextLine::Event(Err(DecodeError::Missing("type")))),
                "reject malformed",
            ),
            (0, Input::Done, "read line"),
            (0, Input::Line(NextLine::TooLong), "reject too_large"),
            (0, Input::Done, "read line"),
            // Closed within a second without an event: a failure (client-go's "very
            // short watch"), so that a server closing at once is not hammered.
            (500, end(), "emit Health false"),
            (500, Input::Done, "wait 10..20ms"),
            (520, Input::Waited, &watch("b", "10")),
            (520, ok(), "read line"),
            // A quiet watch that ran its course is fine: progress, and a new watch at once.
            (2600, end(), "emit Health true"),
            (2600, Input::Done, &watch("b", "10")),
            (2600, ok(), "read line"),
            (2700, upsert("e", "11"), "emit Upsert ns/e"),
            (2700, Input::Done, "read line"),
            // Short, but it delivered: watch again at once.
            (2800, end(), &watch("b", "11")),
        ]);
        assert_eq!(
            t.failure(),
            "GET http://a/api/v1/services: the watch closed at once without any event"
        );
    }

    #[test]
    fn gone_relists_at_once_and_backs_off_when_it_repeats_without_progress() {
        for http in [true, false] {
            let gone = || if http { status(410) } else { watch_error(410) };
            let mut t = Table::services(&["http://a", "http://b"]);
            listed(&mut t, "10");
            let (watch20, watch30) = (watch("a", "20"), watch("a", "30"));
            let mut rows = Vec::new();
            if !http {
                rows.push((0, ok(), "read line"));
            }
            rows.extend([
                // 410: the version is too old; list again, at once, from the same endpoint
                // (not a failure: no Health event, no endpoint change).
                (0, gone(), LIST_A),
                (0, ok(), "emit ListStart"),
                (0, Input::Done, "read page"),
                (0, page("20", None), "emit ListDone"),
                (0, Input::Done, &watch20),
            ]);
            if !http {
                rows.push((0, ok(), "read line"));
            }
            rows.extend([
                // Expired again before any progress: an API server lagging behind the one
                // that listed; back off rather than relist in a loop.
                (0, gone(), "wait 10..20ms"),
                (20, Input::Waited, LIST_A),
                (20, ok(), "emit ListStart"),
                (20, Input::Done, "read page"),
                (20, page("30", None), "emit ListDone"),
                (20, Input::Done, &watch30),
                (20, ok(), "read line"),
                // Progress clears it: the next expiry relists at once.
                (30, bookmark("31"), "read line"),
                (40, watch_error(410), LIST_A),
            ]);
            t.run(rows);
            assert!(t.reflector.last_failure().is_none(), "http 410: {http}");
        }
    }

    #[test]
    fn an_expired_continue_token_restarts_the_list_once() {
        let mut t = Table::services(&["http://a", "http://b"]);
        t.run(vec![
            (0, Input::Start, LIST_A),
            (0, ok(), "emit ListStart"),
            (0, Input::Done, "read page"),
            (0, item("a"), "emit Upsert ns/a"),
            (0, Input::Done, "read page"),
            (
                0,
                page("10", Some("old")),
                "LIST a/api/v1/services?limit=2&continue=old",
            ),
            // At once, from the first page; the new ListStart replaces the unfinished list.
            (0, status(410), LIST_A),
            (0, ok(), "emit ListStart"),
            (0, Input::Done, "read page"),
            (
                0,
                page("11", Some("old2")),
                "LIST a/api/v1/services?limit=2&continue=old2",
            ),
            // A second expiry in one list is a failure.
            (0, status(410), "read error"),
            (
                0,
                body("The provided continue parameter is too old"),
                "emit Health false",
            ),
            (0, Input::Done, "wait 10..20ms"),
            (20, Input::Waited, LIST_B),
            // 410 on a first page (no continue token) is a failure too.
            (20, status(410), "read error"),
            (20, body("Gone"), "wait 20..40ms"),
        ]);
        assert_eq!(t.failure(), "GET http://b/api/v1/services: HTTP 410: Gone");
    }

    #[test]
    fn watch_events_advance_the_version_and_a_rejected_object_is_removed() {
        let mut t = Table::services(&["http://a", "http://b"]);
        listed(&mut t, "10");
        let rejected = WatchEvent::Rejected {
            key: key("x"),
            resource_version: "12".into(),
            error: DecodeError::TooMany {
                field: "endpoints",
                max: 1000,
                found: 1001,
            },
        };
        t.run(vec![
            (0, ok(), "read line"),
            // Counted and logged, and any stored version removed.
            (0, line(rejected), "reject too_many_endpoints ns/x"),
            (0, Input::Done, "emit Delete ns/x"),
            (0, Input::Done, "read line"),
            // An ERROR other than 410 ends the watch as a failure; the watch resumes from
            // the version the rejected object carried.
            (0, watch_error(500), "emit Health false"),
            (0, Input::Done, "wait 10..20ms"),
            (20, Input::Waited, &watch("b", "12")),
            (20, status(503), "read error"),
            (20, body("Service Unavailable"), "wait 20..40ms"),
            (60, Input::Waited, &watch("a", "12")),
        ]);
        assert_eq!(
            t.failure(),
            "GET http://b/api/v1/services: HTTP 503: Service Unavailable"
        );
    }

    #[test]
    fn list_items_are_checked_and_bounded() {
        let mut t = Table::services(&["http://a", "http://b"]);
        t.reflector.max_list_objects = 5;
        let namespace = Object::Namespace(Namespace { name: "kube".into() });
        t.run(vec![
            (0, Input::Start, LIST_A),
            (0, ok(), "emit ListStart"),
            (0, Input::Done, "read page"),
            // Another kind than the resource listed, and a malformed item: not taken.
            (0, Input::Item(Ok(namespace)), "reject malformed"),
            (0, Input::Done, "read page"),
            (
                0,
                Input::Item(Err(DecodeError::Missing("metadata.name"))),
                "reject malformed",
            ),
            (0, Input::Done, "read page"),
            (0, item("a"), "emit Upsert ns/a"),
            (0, Input::Done, "read page"),
            (0, page("10", Some("p2")), "LIST a/api/v1/services?limit=2&continue=p2"),
            (0, ok(), "read page"),
            (0, item("b"), "emit Upsert ns/b"),
            (0, Input::Done, "read page"),
            (0, item("c"), "emit Upsert ns/c"),
            (0, Input::Done, "read page"),
            // The sixth object of the list, every page together: too many.
            (0, item("d"), "abort: more objects in a list than clusterdns takes"),
            (
                0,
                Input::PageError(DecodeError::Stopped("more objects in a list than clusterdns takes")),
                "emit Health false",
            ),
            (0, Input::Done, "wait 10..20ms"),
            (20, Input::Waited, LIST_B),
            (20, ok(), "emit ListStart"),
            (20, Input::Done, "read page"),
            // An item over MAX_OBJECT_BYTES fails its list (a JSON list cannot be resumed
            // past it), and is counted.
            (
                20,
                Input::PageError(DecodeError::TooLarge(MAX_OBJECT_BYTES)),
                "reject too_large",
            ),
            (20, Input::Done, "wait 20..40ms"),
            (60, Input::Waited, LIST_A),
            (60, ok(), "emit ListStart"),
            (60, Input::Done, "read page"),
        ]);
        // A page ten times over its limit (here 10,000 items for a limit of 2) is not a page.
        t.reflector.max_list_objects = u64::MAX;
        let now = t.t0;
        for _ in 0..10_000 {
            let reject = t.reflector.next(Input::Item(Err(DecodeError::Missing("x"))), now);
            assert_eq!(describe(&reject), "reject malformed");
            assert_eq!(describe(&t.reflector.next(Input::Done, now)), "read page");
        }
        t.run(vec![
            (60, item("z"), "abort: a page ten times over its limit"),
            (
                60,
                Input::PageError(DecodeError::Stopped("a page ten times over its limit")),
                "wait 40..80ms",
            ),
        ]);
        assert_eq!(
            t.failure(),
            "GET http://a/api/v1/services: malformed list: a page ten times over its limit"
        );
    }

    #[test]
    fn forbidden_names_the_grant_clusterdns_needs() {
        for (resource, grant) in [
            (Resource::Services, r#"resource services in API group "" (core)"#),
            (
                Resource::EndpointSlices,
                "resource endpointslices in API group discovery.k8s.io",
            ),
        ] {
            let mut t = Table::new(resource, config(&["http://a"], 80));
            let list = format!("LIST a{}?limit=2", resource.path());
            t.run(vec![
                (0, Input::Start, &list),
                (0, status(403), "read error"),
                (0, body("forbidden"), "emit Health false"),
                (0, Input::Done, "wait 10..20ms"),
                // One endpoint: failing over is trying it again.
                (20, Input::Waited, &list),
            ]);
            assert_eq!(
                t.failure(),
                format!(
                    "GET http://a{}: HTTP 403: forbidden (clusterdns needs the verbs list and watch on {grant})",
                    resource.path()
                )
            );
        }
    }

    #[test]
    fn selectors_and_versions_are_encoded_into_the_urls() {
        let cfg = WatchConfig {
            label_selector: Some("app in (a,b)".into()),
            namespace_label_selector: Some("team=dns".into()),
            ..config(&["http://a/"], 80)
        };
        let cfg = Arc::new(cfg);
        let mut pods = Reflector::new(Resource::Pods, Arc::clone(&cfg), Rng::with_seed(1));
        assert_eq!(
            pods.list_url(Some("t")),
            "http://a/api/v1/pods?limit=2&labelSelector=app%20in%20%28a%2Cb%29\
             &fieldSelector=status.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed%2Cstatus.phase%21%3DUnknown&continue=t"
        );
        assert_eq!(
            pods.watch_url("7 8"),
            "http://a/api/v1/pods?watch=1&resourceVersion=7%208&allowWatchBookmarks=true&timeoutSeconds=1\
             &labelSelector=app%20in%20%28a%2Cb%29\
             &fieldSelector=status.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed%2Cstatus.phase%21%3DUnknown"
        );
        let namespaces = Reflector::new(Resource::Namespaces, Arc::clone(&cfg), Rng::with_seed(1));
        assert_eq!(
            namespaces.list_url(None),
            "http://a/api/v1/namespaces?limit=2&labelSelector=team%3Ddns"
        );
        let whole = Reflector::new(
            Resource::Services,
            Arc::new(WatchConfig {
                page_size: 0,
                ..config(&["http://a"], 80)
            }),
            Rng::with_seed(1),
        );
        assert_eq!(whole.list_url(None), "http://a/api/v1/services");
    }

    #[test]
    fn watch_timeouts_are_jittered_between_base_and_twice_base() {
        let cfg = Arc::new(WatchConfig {
            watch_timeout: Duration::from_secs(300),
            ..config(&["http://a"], 80)
        });
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let mut r = Reflector::new(Resource::Services, Arc::clone(&cfg), Rng::with_seed(seed));
            let url = r.watch_url("1");
            let timeout: u64 = url.rsplit("timeoutSeconds=").next().unwrap().parse().unwrap();
            assert!((300..600).contains(&timeout), "{url}");
            seen.insert(timeout);
        }
        assert!(seen.len() > 50, "not spread: {seen:?}");
    }

    #[test]
    fn backoff_is_jittered_capped_and_reproducible_from_its_seed() {
        let delays = |seed| {
            let mut rng = Rng::with_seed(seed);
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
            let mut delays: Vec<_> = (0..8).map(|_| backoff.next(&mut rng)).collect();
            backoff.reset();
            delays.push(backoff.next(&mut rng));
            delays
        };
        let first = delays(3);
        for (n, delay) in first.iter().enumerate() {
            let full = Duration::from_millis(100 << (n % 8)).min(Duration::from_secs(1));
            let full = if n == 8 { Duration::from_millis(100) } else { full };
            assert!(
                *delay >= full / 2 && *delay <= full,
                "{n}: {delay:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
        assert_eq!(first, delays(3), "one seed, one sequence");
        assert_ne!(first, delays(4), "another seed, another sequence");
    }
}
