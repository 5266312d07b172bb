//! `ready`: the `/ready` readiness endpoint (README.md beside this file). Process-wide:
//! the server runs it, not the chain.

use crate::config::{ConfigError, Directive};
use crate::plugin::once;
use crate::settings::{Monitor, ProcessSettings, Ready};

/// The table's entry: the process's `/ready` endpoint.
pub fn configure(dirs: &[&Directive], process: &mut ProcessSettings) -> Result<(), ConfigError> {
    process.ready = Some(parse(dirs)?);
    Ok(())
}

/// Parses the block's `ready` directive (default address `:8181`).
pub fn parse(dirs: &[&Directive]) -> Result<Ready, ConfigError> {
    let d = once("ready", dirs)?;
    d.expect_args("ready", 0, 1)?;
    let addr = match d.args.first() {
        Some(a) => crate::http::parse_listen(a.as_str())
            .ok_or_else(|| ConfigError::at(&a.loc, format!("ready: invalid address '{}'", a.as_str())))?,
        None => crate::http::every_address(8181),
    };
    let mut monitor = Monitor::UntilReady;
    for opt in d.options() {
        match opt.name.as_str() {
            "monitor" => {
                opt.expect_args("ready", 1, 1)?;
                monitor = match opt.args[0].as_str() {
                    "until-ready" => Monitor::UntilReady,
                    "continuously" => Monitor::Continuously,
                    other => {
                        return Err(ConfigError::at(
                            &opt.args[0].loc,
                            format!("ready: monitor type '{other}' not supported"),
                        ));
                    }
                };
            }
            other => return Err(opt.err("ready", format!("unknown property '{other}'"))),
        }
    }
    Ok(Ready { addr, monitor })
}
