//! Plugins that exist only to test the server itself; registered only when
//! `CLUSTERDNS_TEST_PLUGINS=1` is set, never in a production Corefile.
//!
//! * `testupstream ADDR [TIMEOUT]` relays every query to ADDR over UDP through the
//!   worker's upstream path and copies the reply: the path `forward` uses, tested
//!   before `forward` exists.
//! * `testpanic` panics on names whose first label is `panic`, to prove a panic in
//!   one query is contained.
//! * `teststall [DURATION]` holds the worker (sleeps, default 1h) on names whose first
//!   label is `stall`, to prove that a wedged worker fails `/health` and cannot keep
//!   SIGTERM from ending the process.

use std::net::SocketAddr;
use std::time::Duration;

use crate::chain::{ChainError, Handler, Query, Step, UpstreamProto, UpstreamReply, UpstreamRequest};
use crate::config::{ConfigError, Directive, parse_duration};
use crate::dns::{Header, QueryBuilder, Rcode, Section};
use crate::plugin::once;
use crate::setup::{Plugin, SetupCtx};

/// Relays queries to one upstream.
pub struct TestUpstream {
    to: SocketAddr,
    timeout: Duration,
}

pub fn setup_upstream(dirs: &[&Directive], _: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let d = once("testupstream", dirs)?;
    d.expect_args("testupstream", 1, 2)?;
    let to = d.args[0]
        .as_str()
        .parse()
        .map_err(|_| d.err("testupstream", "want IP:PORT"))?;
    let timeout = match d.args.get(1) {
        Some(t) => parse_duration(t.as_str()).ok_or_else(|| d.err("testupstream", "bad timeout"))?,
        None => Duration::from_secs(2),
    };
    Ok(Plugin::handler(TestUpstream { to, timeout }))
}

impl Handler for TestUpstream {
    fn name(&self) -> &'static str {
        "testupstream"
    }

    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        QueryBuilder::new(q.req.qname_raw(), q.req.qtype)
            .class(q.req.qclass)
            .write(&mut q.worker.upstream_msg);
        Step::Upstream(UpstreamRequest {
            to: self.to,
            proto: UpstreamProto::Udp,
            timeout: self.timeout,
            cookie: 7,
            coalesce: None,
            expire: Duration::from_secs(10),
        })
    }

    fn resume(&self, q: &mut Query<'_, '_>, reply: UpstreamReply<'_>, cookie: u64) -> Step {
        assert_eq!(cookie, 7, "the worker hands back the cookie it was given");
        let msg = match reply {
            UpstreamReply::Message(m) => m,
            UpstreamReply::Timeout => {
                return Step::Fail(
                    Rcode::SERVFAIL,
                    Some(ChainError::Plugin("testupstream", "timeout".into())),
                );
            }
            UpstreamReply::Failed(kind) => {
                return Step::Fail(
                    Rcode::SERVFAIL,
                    Some(ChainError::Plugin("testupstream", format!("{kind:?}").into())),
                );
            }
        };
        // The reply must carry our question, or it answers something else.
        let qend = 12 + q.req.question().len();
        if msg.len() < qend || msg[12..qend] != *q.req.question() {
            return Step::Fail(Rcode::FORMERR, None);
        }
        q.resp
            .start(q.req, Header::of(msg).map_or(Rcode::SERVFAIL, |h| h.rcode()));
        let _ = q
            .resp
            .copy_sections(msg, &[Section::Answer, Section::Authority, Section::Additional]);
        Step::Answered
    }
}

/// Panics on demand.
pub struct TestPanic;

pub fn setup_panic(dirs: &[&Directive], _: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    once("testpanic", dirs)?.expect_args("testpanic", 0, 0)?;
    Ok(Plugin::handler(TestPanic))
}

impl Handler for TestPanic {
    fn name(&self) -> &'static str {
        "testpanic"
    }

    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        if q.req.qname.label_count() > 0 && q.req.qname.label(0) == b"panic" {
            panic!("testpanic: asked to panic by {}", q.req.qname);
        }
        Step::Next
    }
}

/// Wedges the worker that serves a `stall.*` name: the query does not return for the
/// configured duration, so the worker does not come round its loop.
pub struct TestStall {
    hold: Duration,
}

pub fn setup_stall(dirs: &[&Directive], _: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let d = once("teststall", dirs)?;
    d.expect_args("teststall", 0, 1)?;
    let hold = match d.args.first() {
        Some(t) => parse_duration(t.as_str()).ok_or_else(|| d.err("teststall", "bad duration"))?,
        None => Duration::from_secs(3600),
    };
    Ok(Plugin::handler(TestStall { hold }))
}

impl Handler for TestStall {
    fn name(&self) -> &'static str {
        "teststall"
    }

    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        if q.req.qname.label_count() > 0 && q.req.qname.label(0) == b"stall" {
            // Sleeping, not spinning: the worker is as stuck either way, and a test
            // machine's cores stay free for the rest of the test.
            log::warn!("teststall: holding this worker for {:?} ({})", self.hold, q.req.qname);
            std::thread::sleep(self.hold);
            q.resp.start(q.req, Rcode::SERVFAIL);
            return Step::Answered;
        }
        Step::Next
    }
}
