//! `pprof`: accepted, validated as CoreDNS validates it, and without effect: there is no
//! Go runtime here to profile (README.md beside this file). The one directive accepted
//! without effect, so it says so in a warning when the configuration is checked,
//! started or reloaded, never silently.

use crate::config::{ConfigError, Directive};
use crate::plugin::once;
use crate::settings::ProcessSettings;

/// The directive name, and the prefix of its errors.
const NAME: &str = "pprof";

/// The table's entry: `pprof [ADDRESS] [{ block [RATE] }]`, once per server block.
pub fn configure(dirs: &[&Directive], process: &mut ProcessSettings) -> Result<(), ConfigError> {
    let d = once(NAME, dirs)?;
    parse(d)?;
    process.warnings.push((
        "plugin/pprof",
        format!(
            "{}:{} - pprof has no effect: clusterdns has no Go runtime to profile \
             (profile it with perf or another native profiler)",
            d.loc().file,
            d.loc().line
        ),
    ));
    Ok(())
}

/// What setup.go checks: at most one address, which `net.SplitHostPort` must take;
/// `block` with at most one integer (`strconv.Atoi`); no other option.
fn parse(d: &Directive) -> Result<(), ConfigError> {
    match d.args.as_slice() {
        [] => {}
        [addr] => {
            split_host_port(addr.as_str())
                .map_err(|why| ConfigError::at(&addr.loc, format!("{NAME}: address {}: {why}", addr.as_str())))?;
        }
        _ => return Err(d.arg_err(NAME)),
    }
    for opt in d.options() {
        match opt.name.as_str() {
            "block" => {
                opt.expect_args(NAME, 0, 1)?;
                opt.expect_no_block(NAME)?;
                if let Some(rate) = opt.args.first() {
                    if rate.as_str().parse::<i64>().is_err() {
                        return Err(opt.err(
                            NAME,
                            format!("property 'block' invalid integer value '{}'", rate.as_str()),
                        ));
                    }
                }
            }
            other => return Err(opt.err(NAME, format!("unknown property '{other}'"))),
        }
    }
    Ok(())
}

/// Go's `net.SplitHostPort` checks, with its reasons: `host:port`, `[host]:port`.
fn split_host_port(s: &str) -> Result<(), &'static str> {
    if let Some(rest) = s.strip_prefix('[') {
        let Some(end) = rest.find(']') else {
            return Err("missing ']' in address");
        };
        return match &rest[end + 1..] {
            "" => Err("missing port in address"),
            tail if !tail.starts_with(':') => Err("missing port in address"),
            tail if tail[1..].contains(':') => Err("too many colons in address"),
            tail if tail[1..].contains(['[', ']']) || rest[..end].contains('[') => Err("unexpected '[' in address"),
            _ => Ok(()),
        };
    }
    let Some(i) = s.rfind(':') else {
        return Err("missing port in address");
    };
    if s[..i].contains(':') {
        return Err("too many colons in address");
    }
    if s.contains(['[', ']']) {
        return Err("unexpected ']' in address");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn configured(lines: &str) -> Result<ProcessSettings, String> {
        let text = format!(". {{\n{lines}\n}}\n");
        let parsed = parse_str(&text, "Corefile", std::path::Path::new(".")).map_err(|e| e.to_string())?;
        let dirs: Vec<&Directive> = parsed.blocks[0].directives.iter().collect();
        let mut p = ProcessSettings::default();
        configure(&dirs, &mut p).map_err(|e| e.to_string())?;
        Ok(p)
    }

    #[test]
    fn options_are_validated_as_coredns_validates_them() {
        // setup_test.go TestPProf, the cases that parse.
        for lines in [
            "pprof",
            "pprof 1.2.3.4:1234",
            "pprof :1234",
            "pprof {\n}",
            "pprof {\nblock\n}",
            "pprof :1234 {\nblock 20\n}",
            "pprof [::1]:6060",
            "pprof localhost:6053 {\nblock -1\n}",
        ] {
            assert!(configured(lines).is_ok(), "{lines}: {:?}", configured(lines).err());
        }
        // ... and those that fail, with Go's reasons.
        for (lines, want) in [
            (
                "pprof :1234 -1",
                "Corefile:2 - pprof: Wrong argument count or unexpected line ending after '-1'",
            ),
            (
                "pprof /foo",
                "Corefile:2 - pprof: address /foo: missing port in address",
            ),
            (
                "pprof ::1:80",
                "Corefile:2 - pprof: address ::1:80: too many colons in address",
            ),
            ("pprof {\na b\n}", "Corefile:3 - pprof: unknown property 'a'"),
            (
                "pprof {\nblock 20 30\n}",
                "Corefile:3 - pprof: Wrong argument count or unexpected line ending after '30'",
            ),
            (
                "pprof {\nblock invalid\n}",
                "Corefile:3 - pprof: property 'block' invalid integer value 'invalid'",
            ),
            (
                "pprof {\nunknown_property\n}",
                "Corefile:3 - pprof: unknown property 'unknown_property'",
            ),
            (
                "pprof\npprof",
                "Corefile:3 - pprof: this plugin can only be used once per Server Block",
            ),
        ] {
            assert_eq!(configured(lines).err().as_deref(), Some(want), "{lines}");
        }
    }

    #[test]
    fn it_is_accepted_with_one_warning_per_process() {
        let p = configured("pprof").unwrap();
        assert_eq!(
            p.warnings,
            [(
                "plugin/pprof",
                "Corefile:2 - pprof has no effect: clusterdns has no Go runtime to profile \
                 (profile it with perf or another native profiler)"
                    .to_string()
            )]
        );
        // Two blocks with pprof: still one warning (the first block's).
        let mut all = ProcessSettings::default();
        all.merge(p.clone());
        all.merge(p);
        assert_eq!(all.warnings.len(), 1);
    }
}
