//! `health`: the `/health` liveness endpoint, and the lameduck pause at shutdown
//! (README.md beside this file). Process-wide: the server runs it, not the chain.

use std::time::Duration;

use crate::config::{ConfigError, Directive, parse_duration};
use crate::plugin::once;
use crate::settings::{Health, ProcessSettings};

/// The table's entry: the process's `/health` endpoint.
pub fn configure(dirs: &[&Directive], process: &mut ProcessSettings) -> Result<(), ConfigError> {
    process.health = Some(parse(dirs)?);
    Ok(())
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
