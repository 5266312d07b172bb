//! `reload`: re-read the Corefile on a schedule and apply it when it changed (README.md
//! beside this file). Process-wide: the server runs the check, not the chain.

use std::time::Duration;

use crate::config::{ConfigError, Directive, parse_duration};
use crate::settings::{ProcessSettings, Reload};

/// The table's entry: the process's reload schedule.
pub fn configure(dirs: &[&Directive], process: &mut ProcessSettings) -> Result<(), ConfigError> {
    process.reload = Some(parse(dirs)?);
    Ok(())
}

/// Parses `reload [INTERVAL [JITTER]]`: defaults 30s and 15s; INTERVAL at least 2s;
/// JITTER 0 or at least 1s, capped at INTERVAL/2 (as CoreDNS validates them).
pub fn parse(dirs: &[&Directive]) -> Result<Reload, ConfigError> {
    let d = dirs[dirs.len() - 1];
    d.expect_args("reload", 0, 2)?;
    d.expect_no_block("reload")?;
    let dur = |i: usize, default: Duration| -> Result<Duration, ConfigError> {
        match d.args.get(i) {
            None => Ok(default),
            Some(a) => parse_duration(a.as_str())
                .ok_or_else(|| ConfigError::at(&a.loc, format!("reload: invalid duration '{}'", a.as_str()))),
        }
    };
    let interval = dur(0, Duration::from_secs(30))?;
    let mut jitter = dur(1, Duration::from_secs(15))?;
    if interval < Duration::from_secs(2) {
        return Err(d.err("reload", "interval value must be greater or equal to 2s"));
    }
    if !jitter.is_zero() && jitter < Duration::from_secs(1) {
        return Err(d.err("reload", "jitter value must be greater or equal to 1s"));
    }
    if jitter > interval / 2 {
        jitter = interval / 2;
    }
    Ok(Reload { interval, jitter })
}
