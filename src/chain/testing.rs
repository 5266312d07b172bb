//! What a plugin's unit tests need to hand a handler a query the way a worker does,
//! without a server: one request, a fresh worker context and the route of a
//! `dns://:53` block for the root zone.

use super::{Metadata, Query, RouteTag, WorkerCtx};
use crate::dns::{Request, Response, Transport};
use std::net::SocketAddr;

/// Parses `raw` as a UDP query from `client` (to the same address) and runs `f` with
/// a [`Query`] for it, carrying `meta` (`Metadata::NONE`, or a chain's
/// `metadata()`). Panics when `raw` is no query: a test's own input.
pub fn with_query<'m, R>(
    raw: &[u8],
    client: SocketAddr,
    meta: Metadata<'m>,
    f: impl FnOnce(&mut Query<'_, '_>) -> R,
) -> R {
    with_query_to(raw, client, client, meta, f)
}

/// [`with_query`] for a query that arrived at `local` (the server's address, where a
/// plugin sends what it asks of the server itself).
pub fn with_query_to<'m, R>(
    raw: &[u8],
    client: SocketAddr,
    local: SocketAddr,
    meta: Metadata<'m>,
    f: impl FnOnce(&mut Query<'_, '_>) -> R,
) -> R {
    with_query_over(raw, Transport::Udp, client, local, meta, f)
}

/// [`with_query_to`] for a query that came over `transport` (TCP: a zone transfer).
pub fn with_query_over<'m, R>(
    raw: &[u8],
    transport: Transport,
    client: SocketAddr,
    local: SocketAddr,
    meta: Metadata<'m>,
    f: impl FnOnce(&mut Query<'_, '_>) -> R,
) -> R {
    let Ok(req) = Request::parse(raw, transport, client, local) else {
        panic!("a test's query parses")
    };
    let mut resp = Response::new();
    let mut worker = WorkerCtx::new(0);
    let route = RouteTag {
        slot: 0,
        server: "dns://:53".into(),
        zone: ".".into(),
    };
    let mut q = Query {
        req: &req,
        resp: &mut resp,
        worker: &mut worker,
        route: &route,
        answered_by: "",
        error: None,
        refresh: false,
        coalesce: true,
        meta,
    };
    f(&mut q)
}

/// Runs `f` (a plugin's setup, or its option parser) on the directives of the first
/// server block of `corefile`, read as `Corefile` in the current directory, with the
/// context of a one-worker block for the root zone and a fresh [`ProcessState`]: what
/// a plugin's setup-error tables need, written once.
///
/// [`ProcessState`]: crate::process::ProcessState
pub fn with_directives<T>(
    corefile: &str,
    f: impl FnOnce(&[&crate::config::Directive], &crate::setup::SetupCtx<'_>) -> Result<T, crate::config::ConfigError>,
) -> Result<T, crate::config::ConfigError> {
    let parsed = crate::config::parse_str(corefile, "Corefile", std::path::Path::new("."))?;
    let dirs: Vec<&crate::config::Directive> = parsed.blocks[0].directives.iter().collect();
    let process = crate::process::ProcessState::new();
    let ctx = crate::setup::SetupCtx {
        zones: &[],
        config_dir: ".".into(),
        workers: 1,
        binds: None,
        process: &process,
    };
    f(&dirs, &ctx)
}
