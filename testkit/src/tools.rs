//! Outside tools some tests need (dig, kdig, systemd-analyze, ip/nft/iptables). Such a
//! test is `#[ignore = "needs ..."]`, so `cargo test` alone never needs the tool; the
//! second command, `cargo test --locked -- --ignored` (which `.ci/run` runs after
//! installing the tools), runs it, and there a missing tool fails the test with what to
//! install: it never passes without having run.

use std::process::{Command, Stdio};

/// Whether `program args` runs and exits with success.
pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Panics, naming the tool and the package that has it, unless `program args` runs.
pub fn require(program: &str, args: &[&str], package: &str) {
    assert!(
        runs(program, args),
        "this test needs `{program}` ({}): install {package} (`.ci/run` does), or leave the test \
         to `cargo test --locked -- --ignored` on a machine that has it",
        if args.is_empty() {
            program.to_string()
        } else {
            format!("{program} {}", args.join(" "))
        }
    );
}

/// Requires dig (Debian: bind9-dnsutils).
pub fn require_dig() {
    require("dig", &["-v"], "bind9-dnsutils (Debian) or bind-utils");
}

/// Runs `dig` with these arguments and returns its standard output.
pub fn dig(args: &[&str]) -> String {
    let out = Command::new("dig").args(args).output().expect("run dig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Requires kdig (Debian: knot-dnsutils), the one common client that speaks DNS over
/// TLS (CoreDNS's tls README says as much).
pub fn require_kdig() {
    require("kdig", &["--version"], "knot-dnsutils (Debian) or knot-utils");
}

/// Runs `kdig` with these arguments and returns its standard output.
pub fn kdig(args: &[&str]) -> String {
    let out = Command::new("kdig").args(args).output().expect("run kdig");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "this test needs `clusterdns-no-such-tool`")]
    fn a_missing_tool_fails_the_test() {
        require("clusterdns-no-such-tool", &["--version"], "nothing");
    }

    #[test]
    fn a_present_tool_is_found() {
        // The cargo that built this test is there, whatever PATH says.
        require(env!("CARGO"), &["--version"], "the Rust toolchain");
    }
}
