//! `health`: the `/health` liveness endpoint, and the lameduck pause at shutdown
//! (README.md beside this file). Process-wide: the server runs it, not the chain.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{ConfigError, Directive, parse_duration};
use crate::plugin::once;

/// `health [ADDRESS] { lameduck DURATION }`, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub addr: SocketAddr,
    /// How long DNS and `/health` keep serving after SIGTERM before the listeners close.
    pub lameduck: Duration,
}

/// Parses the block's `health` directive (default address `:8080`).
pub fn parse(dirs: &[&Directive]) -> Result<Health, ConfigError> {
    let d = once("health", dirs)?;
    d.expect_args("health", 0, 1)?;
    let addr = match d.args.first() {
        Some(a) => crate::http::parse_listen(a.as_str())
            .ok_or_else(|| ConfigError::at(&a.loc, format!("health: invalid address '{}'", a.as_str())))?,
        None => crate::http::every_address(8080),
    };
    let mut lameduck = Duration::ZERO;
    for opt in d.options() {
        match opt.name.as_str() {
            "lameduck" => {
                opt.expect_args("health", 1, 1)?;
                lameduck = parse_duration(opt.args[0].as_str()).ok_or_else(|| {
                    ConfigError::at(
                        &opt.args[0].loc,
                        format!(
                            "health: unable to parse lameduck duration value: '{}'",
                            opt.args[0].as_str()
                        ),
                    )
                })?;
            }
            other => return Err(opt.err("health", format!("unknown property '{other}'"))),
        }
    }
    Ok(Health { addr, lameduck })
}
