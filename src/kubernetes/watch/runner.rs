//! The I/O half of a watch thread: performs the [`Reflector`]'s actions with ureq and the
//! builder's channel, and feeds back what came of them. It decides nothing about the
//! API's protocol; it owns the connection, the body being read, the stop signal, the
//! request metrics and the log of rejected objects.

use std::io::{self, BufReader};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};

use super::reflector::{Action, Input, IoFailure, Reflector};
use super::stats::{ApiStats, RejectLog, Verb};
use super::stream::next_line;
use super::{MAX_ERROR_BODY, READ_BUFFER};
use crate::kubernetes::decode::{self, DecodeError};
use crate::kubernetes::limits::MAX_OBJECT_BYTES;
use crate::kubernetes::model::{Event, Resource};

type Response = ureq::http::Response<ureq::Body>;

/// One resource's watch thread.
pub(super) struct Runner {
    pub(super) resource: Resource,
    pub(super) reflector: Reflector,
    pub(super) agent: ureq::Agent,
    pub(super) events: Sender<Event>,
    pub(super) stop: Receiver<()>,
    pub(super) stats: Arc<ApiStats>,
    pub(super) rejected: RejectLog,
}

/// The request in flight: what the metrics need of it.
struct Request {
    host: Box<str>,
    begun: Instant,
}

impl Runner {
    /// Runs until stopped (or until the builder is gone).
    pub(super) fn run(mut self) {
        let mut input = Input::Start;
        let mut request: Option<Request> = None;
        // The response whose body is still to be read, and the watch stream once reading
        // has begun.
        let mut response: Option<Response> = None;
        let mut stream: Option<BufReader<ureq::BodyReader<'static>>> = None;
        let mut line = Vec::new();
        loop {
            let action = self.reflector.next(input, Instant::now());
            input = match action {
                Action::Get { verb, url } => {
                    if self.stopped() {
                        return;
                    }
                    // The previous body, if any, is done with.
                    stream = None;
                    response = None;
                    let begun = Instant::now();
                    let host: Box<str> = host_of(&url).into();
                    let result = self.agent.get(&url).call();
                    let status = result.as_ref().ok().map(|r| r.status());
                    self.stats
                        .count(status.as_ref().map_or("<error>", |s| s.as_str()), &host);
                    let current = request.insert(Request { host, begun });
                    match result {
                        Ok(r) => {
                            if verb == Verb::Watch {
                                self.stats.observe(Verb::Watch, &current.host, begun.elapsed());
                            }
                            let status = r.status().as_u16();
                            response = Some(r);
                            Input::Response(status)
                        }
                        // After a stop, errors are the cancelled requests: not worth a word.
                        Err(_) if self.stopped() => return,
                        Err(error) => Input::Failed(IoFailure::Transport(error.to_string())),
                    }
                }
                Action::ReadError => Input::ErrorBody(response.take().map(status_message).unwrap_or_default()),
                Action::ReadPage => {
                    let Some(body) = response.take() else {
                        return self.broken("ReadPage without a response");
                    };
                    match self.read_page(body) {
                        Some(Input::PageEnd(meta)) => {
                            if let Some(r) = &request {
                                self.stats.observe(Verb::List, &r.host, r.begun.elapsed());
                            }
                            Input::PageEnd(meta)
                        }
                        Some(Input::Failed(_)) if self.stopped() => return,
                        Some(input) => input,
                        None => return,
                    }
                }
                Action::ReadLine => {
                    if stream.is_none() {
                        let Some(body) = response.take() else {
                            return self.broken("ReadLine without a response");
                        };
                        stream = Some(BufReader::with_capacity(READ_BUFFER, body.into_body().into_reader()));
                    }
                    let reader = stream.as_mut().expect("set above");
                    match next_line(reader, &mut line, MAX_OBJECT_BYTES, self.resource) {
                        Ok(next) => Input::Line(next),
                        Err(_) if self.stopped() => return,
                        Err(error) => Input::Failed(io_failure(error)),
                    }
                }
                Action::Emit(event) => {
                    if !send_until_stopped(&self.events, &self.stop, event) {
                        return;
                    }
                    Input::Done
                }
                Action::Reject { error, key } => {
                    self.rejected.reject(&self.stats, self.resource, &error, key.as_ref());
                    Input::Done
                }
                Action::AbortPage(_) => return self.broken("AbortPage outside a page"),
                Action::Wait(delay) => {
                    if self.sleep(delay) {
                        return;
                    }
                    Input::Waited
                }
            };
        }
    }

    /// Reads a list page, handing each item to the reflector as soon as it is decoded
    /// (the page is never held whole, so a relist costs one copy of the cluster, not
    /// two) and doing what it says; returns how the page ended, or `None` when the
    /// thread must end.
    fn read_page(&mut self, response: Response) -> Option<Input> {
        let Runner {
            resource,
            reflector,
            events,
            stop,
            stats,
            rejected,
            ..
        } = self;
        let mut gone = false;
        let body = response.into_body().into_reader();
        let meta = decode::decode_list_bounded(body, Some(*resource), MAX_OBJECT_BYTES, |(_, item)| {
            let mut action = reflector.next(Input::Item(item), Instant::now());
            loop {
                match action {
                    Action::ReadPage => return ControlFlow::Continue(()),
                    Action::AbortPage(why) => return ControlFlow::Break(why),
                    Action::Emit(event) => {
                        if !send_until_stopped(events, stop, event) {
                            gone = true;
                            return ControlFlow::Break("stopped");
                        }
                    }
                    Action::Reject { error, key } => rejected.reject(stats, *resource, &error, key.as_ref()),
                    other => {
                        debug_assert!(false, "{other:?} while reading a page");
                        gone = true;
                        return ControlFlow::Break("protocol");
                    }
                }
                action = reflector.next(Input::Done, Instant::now());
            }
        });
        if gone {
            return None;
        }
        Some(match meta {
            Ok(meta) => Input::PageEnd(meta),
            // A read error surfaces through the JSON parser; report it as one.
            Err(DecodeError::Json(e)) if e.is_io() => Input::Failed(io_failure(io::Error::from(e))),
            Err(error) => Input::PageError(error),
        })
    }

    /// A protocol bug between the reflector and the runner: logged, and the thread ends
    /// (never in a correct build; the reflector's table tests hold it to the protocol).
    fn broken(&self, what: &str) {
        debug_assert!(false, "watch runner: {what}");
        log::error!(target: super::LOG_TARGET, "watch of {}: {what}; stopping", self.resource.name());
    }

    fn stopped(&self) -> bool {
        matches!(self.stop.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Sleeps for `duration` unless stopped first; true when stopped.
    fn sleep(&self, duration: Duration) -> bool {
        !matches!(self.stop.recv_timeout(duration), Err(RecvTimeoutError::Timeout))
    }
}

/// A failed response's Status message, or its reason phrase (at most
/// [`MAX_ERROR_BODY`] of the body is read).
fn status_message(response: Response) -> String {
    let status = response.status();
    let body = response
        .into_body()
        .into_with_config()
        .limit(MAX_ERROR_BODY)
        .read_to_vec()
        .unwrap_or_default();
    decode::decode_status(&body)
        .map(|s| s.message)
        .filter(|m| !m.is_empty())
        .map_or_else(|| status.canonical_reason().unwrap_or("").to_owned(), String::from)
}

/// An I/O error of a body: a stall when ureq's per-read timeout (the idle guard) fired.
fn io_failure(error: io::Error) -> IoFailure {
    let stalled = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|e| matches!(e, ureq::Error::Timeout(ureq::Timeout::PerRead)));
    if stalled {
        IoFailure::Stalled
    } else {
        IoFailure::Read(error.to_string())
    }
}

/// `host:port` of a URL, the `host` label of the request metrics.
fn host_of(url: &str) -> &str {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    authority.split('/').next().unwrap_or(authority)
}

/// Sends `event` to the builder; false once stopped, or when the builder is gone. A
/// bounded channel that stays full cannot block a stop.
pub(in crate::kubernetes) fn send_until_stopped(events: &Sender<Event>, stop: &Receiver<()>, event: Event) -> bool {
    match events.try_send(event) {
        Ok(()) => true,
        Err(TrySendError::Disconnected(_)) => false,
        Err(TrySendError::Full(event)) => crossbeam_channel::select! {
            send(events, event) -> sent => sent.is_ok(),
            recv(stop) -> _ => false,
        },
    }
}
