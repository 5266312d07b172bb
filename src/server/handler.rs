//! What the server does with one message, without any I/O: validate it, answer what
//! the server itself answers (FORMERR, NOTIMP, BADVERS, REFUSED), route it to a block,
//! and run that block's chain, containing any panic.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::build::{Block, Listener};
use crate::chain::{ChainError, Outcome, Query, RouteTag, UpstreamReply, UpstreamRequest, WorkerCtx};
use crate::dns::{Rcode, Reject, Request, Response, Transport, class, rtype};
use crate::metrics::route::Sample;

/// What to do after handling a message.
pub enum Handled {
    /// Send the finished reply in the response buffer; then, if asked, run the refresh.
    Reply(Option<Refresh>),
    /// Send nothing.
    Drop,
    /// Send `worker.upstream_msg` upstream and resume later.
    Upstream(Suspended),
}

/// A background refresh a plugin asked for when it answered from stored data: the rest
/// of the chain runs again for the same question, and `owner` gets the result.
#[derive(Clone)]
pub struct Refresh {
    block: Arc<Block>,
    route: Arc<RouteTag>,
    owner: usize,
}

/// A query waiting on an upstream exchange: what to send, and what is needed to
/// resume its chain.
pub struct Suspended {
    pub block: Arc<Block>,
    pub route: Arc<RouteTag>,
    pub at: usize,
    pub request: UpstreamRequest,
    /// The message to send (the plugin wrote it into the worker's buffer, which the
    /// next query reuses, so it is copied here).
    pub message: Vec<u8>,
    /// A background refresh for plugin `.0`: its result goes to that plugin, not to a
    /// client.
    pub refresh_for: Option<usize>,
    /// The refresh the client's query asked for (a stale cache hit) before a response
    /// hook suspended it (dns64's A lookup): started once the client's reply is written,
    /// as it would have been without the exchange.
    pub refresh_after: Option<Refresh>,
}

/// Handles one received message on `listener`; the reply, if any, is left finished in `resp`.
pub fn handle(
    listener: &Listener,
    raw: &[u8],
    transport: Transport,
    client: SocketAddr,
    local: SocketAddr,
    worker: &mut WorkerCtx,
    resp: &mut Response,
) -> Handled {
    let mut req = match Request::parse(raw, transport, client, local) {
        Ok(r) => r,
        Err(Reject::Drop) => return Handled::Drop,
        Err(Reject::Error { rcode, question_end }) => {
            resp.start_reject(raw, rcode, question_end);
            resp.finish();
            return Handled::Reply(None);
        }
    };
    // RFC 6891 6.1.3: a version we do not implement gets BADVERS (with our OPT, version 0).
    if req.edns.is_some_and(|e| e.version > 0) {
        resp.start(&req, Rcode::BADVERS);
        resp.finish();
        return Handled::Reply(None);
    }
    let Some(route) = listener.router.route(&req.qname, req.qtype == rtype::DS) else {
        return dropped(listener, &req, worker, resp);
    };
    let block = &route.block;
    if block.chain.is_empty() || (req.qclass != class::IN && !block.chain.handles_class(req.qclass)) {
        return dropped(listener, &req, worker, resp);
    }
    if let Some(max) = block.chain.udp_size_limit() {
        req.limit_udp_size(max);
    }
    let mut q = Query {
        req: &req,
        resp,
        worker,
        route: &route.tag,
        answered_by: "",
        error: None,
        refresh: false,
        coalesce: true,
        meta: block.chain.metadata(),
    };
    let all = block.chain.handlers().len();
    let outcome = contained(&mut q, all, |q| block.chain.run(q, 0));
    let refresh = match outcome {
        Outcome::Reply { at } if q.refresh => Some(Refresh {
            block: block.clone(),
            route: route.tag.clone(),
            owner: at,
        }),
        _ => None,
    };
    let handled = match finish(block, &mut q, outcome) {
        None if q.resp.is_withheld() => Handled::Drop,
        None => Handled::Reply(refresh),
        Some((at, request)) => Handled::Upstream(Suspended {
            block: block.clone(),
            route: route.tag.clone(),
            at,
            request,
            message: q.worker.upstream_copy(),
            refresh_for: None,
            refresh_after: refresh,
        }),
    };
    // The rest of a reply of several messages goes out on a TCP connection only, after
    // its first message (see `chain::ReplyStream`); anything else drops it here.
    if transport != Transport::Tcp || !matches!(handled, Handled::Reply(_)) {
        q.worker.stream = None;
    }
    handled
}

/// Runs a refresh: the chain after the plugin that asked, for the same question. The
/// reply goes to that plugin's `on_refresh` only; nothing is sent and no other
/// plugin's response hook sees it (it is not a client's query).
pub fn refresh(
    job: Refresh,
    raw: &[u8],
    transport: Transport,
    client: SocketAddr,
    local: SocketAddr,
    worker: &mut WorkerCtx,
    resp: &mut Response,
) -> Handled {
    let Ok(mut req) = Request::parse(raw, transport, client, local) else {
        return Handled::Drop;
    };
    if let Some(max) = job.block.chain.udp_size_limit() {
        req.limit_udp_size(max);
    }
    let mut q = Query {
        req: &req,
        resp,
        worker,
        route: &job.route,
        answered_by: "",
        error: None,
        refresh: false,
        coalesce: true,
        meta: job.block.chain.metadata(),
    };
    let outcome = contained(&mut q, 0, |q| job.block.chain.run(q, job.owner + 1));
    // Nobody receives a refresh's reply, let alone the rest of one.
    q.worker.stream = None;
    settle_refresh(&job.block, job.owner, &mut q, outcome).map_or(Handled::Drop, |(at, request)| {
        Handled::Upstream(Suspended {
            block: job.block.clone(),
            route: job.route.clone(),
            at,
            request,
            message: q.worker.upstream_copy(),
            refresh_for: Some(job.owner),
            refresh_after: None,
        })
    })
}

/// Delivers a refresh's reply to its owner, or returns where it suspended.
fn settle_refresh(
    block: &Block,
    owner: usize,
    q: &mut Query<'_, '_>,
    outcome: Outcome,
) -> Option<(usize, UpstreamRequest)> {
    match outcome {
        Outcome::Reply { .. } => {
            q.resp.finish();
            let p = &block.chain.handlers()[owner];
            let _ = catch_unwind(AssertUnwindSafe(|| p.on_refresh(q)));
            None
        }
        Outcome::Upstream { at, request } => Some((at, request)),
    }
}

/// Refuses a query no chain takes (no zone for its name, a class nobody answers), and
/// counts it as CoreDNS does, under the metrics zone `dropped`.
fn dropped(listener: &Listener, req: &Request<'_>, worker: &WorkerCtx, resp: &mut Response) -> Handled {
    resp.start(req, Rcode::REFUSED);
    resp.finish();
    if let Some(c) = listener.dropped.get(worker.id) {
        let family = match req.client.ip() {
            std::net::IpAddr::V4(_) => 0,
            std::net::IpAddr::V6(a) => usize::from(a.to_ipv4_mapped().is_none()),
        };
        c.record(&Sample {
            proto: usize::from(req.transport == Transport::Tcp),
            family,
            qtype: req.qtype,
            dnssec_ok: req.dnssec_ok(),
            seconds: worker.now.elapsed().as_secs_f64(),
            request_bytes: req.raw.len(),
            response_bytes: resp.bytes().len(),
            rcode: Rcode::REFUSED,
            plugin: "",
        });
    }
    Handled::Reply(None)
}

/// Resumes a suspended query with what came back from upstream. `raw` is the original
/// query, kept by the worker.
#[allow(clippy::too_many_arguments)]
pub fn resume(
    s: &Suspended,
    raw: &[u8],
    transport: Transport,
    client: SocketAddr,
    local: SocketAddr,
    reply: UpstreamReply<'_>,
    worker: &mut WorkerCtx,
    resp: &mut Response,
) -> Handled {
    let Ok(mut req) = Request::parse(raw, transport, client, local) else {
        return Handled::Drop;
    };
    if let Some(max) = s.block.chain.udp_size_limit() {
        req.limit_udp_size(max);
    }
    let mut q = Query {
        req: &req,
        resp,
        worker,
        route: &s.route,
        answered_by: "",
        error: None,
        refresh: false,
        coalesce: true,
        meta: s.block.chain.metadata(),
    };
    let all = s.block.chain.handlers().len();
    let outcome = contained(&mut q, all, |q| s.block.chain.resume(q, s.at, reply, s.request.cookie));
    // Replies of several messages start from `serve` only (see `handle`).
    q.worker.stream = None;
    let next = match s.refresh_for {
        Some(owner) => settle_refresh(&s.block, owner, &mut q, outcome),
        None => finish(&s.block, &mut q, outcome),
    };
    match next {
        None if s.refresh_for.is_some() || q.resp.is_withheld() => Handled::Drop,
        None => Handled::Reply(s.refresh_after.clone()),
        Some((at, request)) => Handled::Upstream(Suspended {
            block: s.block.clone(),
            route: s.route.clone(),
            at,
            request,
            message: q.worker.upstream_copy(),
            refresh_for: s.refresh_for,
            refresh_after: s.refresh_after.clone(),
        }),
    }
}

/// Completes a reply (response hooks included) or returns where the chain, or a
/// response hook, suspended.
fn finish(block: &Block, q: &mut Query<'_, '_>, outcome: Outcome) -> Option<(usize, UpstreamRequest)> {
    match outcome {
        Outcome::Reply { at } => {
            // A panic in a response hook leaves a SERVFAIL reply, already finished.
            let next = contained(q, 0, |q| block.chain.complete(q, at));
            q.resp.finish();
            match next {
                Outcome::Reply { .. } => None,
                // A response hook asked for an exchange (dns64's A lookup).
                Outcome::Upstream { at, request } => Some((at, request)),
            }
        }
        Outcome::Upstream { at, request } => Some((at, request)),
    }
}

/// Runs `f`; a panic inside becomes a SERVFAIL reply and is counted and logged, and
/// the worker carries on (no query of death). The reply then goes through the response
/// hooks of the first `hooks_to` plugins (so `log` and metrics see it).
fn contained(q: &mut Query<'_, '_>, hooks_to: usize, f: impl FnOnce(&mut Query<'_, '_>) -> Outcome) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| f(q))) {
        Ok(o) => o,
        Err(payload) => {
            q.worker.process.panics.fetch_add(1, Ordering::Relaxed);
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            if q.worker.process.debug.load(Ordering::Acquire) {
                // `debug`: no recovery (CoreDNS's server skips its recover), and like an
                // unrecovered Go panic the process ends with status 2. The panic hook
                // has logged the message and the backtrace.
                log::error!(
                    "debug: not recovering from the panic while handling {} {}: {msg}",
                    q.req.qname,
                    rtype::name(q.req.qtype)
                );
                std::process::exit(2);
            }
            log::error!(
                "recovered from panic while handling {} {}: {msg}",
                q.req.qname,
                rtype::name(q.req.qtype)
            );
            q.resp.start(q.req, Rcode::SERVFAIL);
            // The rest of a reply that failed half-way is not sent either.
            q.worker.stream = None;
            q.answered_by = "";
            q.error = Some(ChainError::Panic(msg.into()));
            Outcome::Reply { at: hooks_to }
        }
    }
}
