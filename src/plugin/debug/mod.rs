//! `debug`: CoreDNS's debug mode for the whole process (README.md beside this file): a
//! panic while a query is handled ends the process with its backtrace instead of being
//! recovered, and DEBUG lines are logged (the failing query's hex dump by `errors`,
//! consolidated errors at level `debug`). Process-wide, as in CoreDNS: the controller
//! applies it at start and at each reload (`ProcessState::set_debug`).

use crate::config::{ConfigError, Directive};
use crate::settings::ProcessSettings;

/// The directive name, and the prefix of its errors.
const NAME: &str = "debug";

/// The table's entry: `debug`, no arguments (debug.go: `debug off` is an error). It may
/// be repeated, in one block or several, as in CoreDNS.
pub fn configure(dirs: &[&Directive], process: &mut ProcessSettings) -> Result<(), ConfigError> {
    for d in dirs {
        d.expect_args(NAME, 0, 0)?;
        d.expect_no_block(NAME)?;
    }
    process.debug = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn configured(lines: &str) -> Result<bool, String> {
        let text = format!(". {{\n{lines}\n}}\n");
        let parsed = parse_str(&text, "Corefile", std::path::Path::new(".")).map_err(|e| e.to_string())?;
        let dirs: Vec<&Directive> = parsed.blocks[0].directives.iter().collect();
        let mut p = ProcessSettings::default();
        configure(&dirs, &mut p).map_err(|e| e.to_string())?;
        Ok(p.debug)
    }

    #[test]
    fn debug_takes_nothing_and_turns_the_mode_on() {
        // debug_test.go TestDebug: `debug` sets it, `debug off` is an error.
        assert_eq!(configured("debug"), Ok(true));
        assert_eq!(configured("debug\ndebug"), Ok(true));
        assert_eq!(
            configured("debug off"),
            Err("Corefile:2 - debug: Wrong argument count or unexpected line ending after 'off'".into())
        );
        assert_eq!(
            configured("debug {\nx\n}"),
            Err("Corefile:3 - debug: unknown property 'x'".into())
        );
        // Process-wide: one block with it is enough.
        let mut p = ProcessSettings::default();
        p.merge(ProcessSettings {
            debug: true,
            ..ProcessSettings::default()
        });
        p.merge(ProcessSettings::default());
        assert!(p.debug);
    }
}
