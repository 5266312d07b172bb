//! `timeouts`: the TCP read, write and idle timeouts of a server block's listeners
//! (README.md beside this file). Like `bind`, it configures the server, not the chain:
//! it only parses, into [`Timeouts`] (which the server's workers apply).

use std::time::Duration;

use crate::config::{ConfigError, Directive, parse_duration};
use crate::plugin::once;
use crate::settings::{BlockSettings, Timeouts};

/// The table's entry: the block's timeouts.
pub fn configure(dirs: &[&Directive], block: &mut BlockSettings) -> Result<(), ConfigError> {
    block.timeouts = Some(parse(dirs)?);
    Ok(())
}

/// Parses `timeouts { read D; write D; idle D }`; each between 1 second and 24 hours,
/// at least one given.
pub fn parse(dirs: &[&Directive]) -> Result<Timeouts, ConfigError> {
    let d = once("timeouts", dirs)?;
    d.expect_args("timeouts", 0, 0)?;
    let mut t = Timeouts::default();
    if d.options().is_empty() {
        return Err(d.err("timeouts", "timeouts block with no timeouts specified"));
    }
    for opt in d.options() {
        opt.expect_args("timeouts", 1, 1)?;
        let v = parse_duration(opt.args[0].as_str())
            .filter(|v| (Duration::from_secs(1)..=Duration::from_secs(86400)).contains(v))
            .ok_or_else(|| {
                ConfigError::at(
                    &opt.args[0].loc,
                    format!(
                        "timeouts: {} timeout must be a duration between 1s and 24h",
                        opt.name.as_str()
                    ),
                )
            })?;
        match opt.name.as_str() {
            "read" => t.read = v,
            "write" => t.write = v,
            "idle" => t.idle = v,
            other => return Err(opt.err("timeouts", format!("unknown option '{other}'"))),
        }
    }
    Ok(t)
}
