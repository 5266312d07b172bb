//! `errors`: logs the error behind every failed query (README.md beside this file).

use crate::chain::{Handler, Query, Step};
use crate::config::{ConfigError, Directive};
use crate::dns::rtype;
use crate::plugin::once;
use crate::setup::{Plugin, SetupCtx};

/// The plugin. `stacktrace` is accepted for compatibility: a caught panic is always
/// logged with its message, and Rust backtraces come from `RUST_BACKTRACE`.
pub struct Errors;

/// `errors [{ stacktrace }]`.
pub fn setup(dirs: &[&Directive], _: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let d = once("errors", dirs)?;
    d.expect_args("errors", 0, 0)?;
    for opt in d.options() {
        match opt.name.as_str() {
            "stacktrace" => opt.expect_args("errors", 0, 0)?,
            "consolidate" => {
                return Err(opt.err("errors", "'consolidate' is not supported by clusterdns yet"));
            }
            other => return Err(opt.err("errors", format!("unknown property '{other}'"))),
        }
    }
    Ok(Plugin::handler(Errors))
}

impl Handler for Errors {
    fn name(&self) -> &'static str {
        "errors"
    }

    fn serve(&self, _: &mut Query<'_, '_>) -> Step {
        Step::Next
    }

    fn wants_response(&self) -> bool {
        true
    }

    /// `[ERROR] plugin/errors: 2 foo.cluster.local. A: plugin/kubernetes: no next plugin found`
    fn on_response(&self, q: &mut Query<'_, '_>) {
        if let Some(err) = &q.error {
            log::error!(
                target: "plugin/errors",
                "{} {} {}: {}",
                q.resp.rcode().0,
                q.req.qname,
                rtype::name(q.req.qtype),
                err
            );
        }
    }
}
