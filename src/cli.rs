//! The command line, CoreDNS's flags (Go `flag` syntax: `-name value`, `-name=value`,
//! one or two dashes) plus `-check` and `-workers`.

use std::fmt;

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flags {
    /// `-conf`: the Corefile path, `stdin`, or `None` for `Corefile` in the working
    /// directory (falling back to the built-in default when that does not exist).
    pub conf: Option<String>,
    /// `-dns.port` / `-p`: the port for server keys without one.
    pub port: u16,
    pub pidfile: Option<String>,
    pub plugins: bool,
    pub quiet: bool,
    pub version: bool,
    /// `-check`: validate the Corefile and exit, binding nothing.
    pub check: bool,
    /// `-workers`: worker threads (default: the CPUs this process may run on).
    pub workers: Option<usize>,
    /// `-tcp.max-connections`: open TCP connections per worker.
    pub tcp_max_connections: usize,
    /// `-handover`: the Unix socket through which a successor takes this process's
    /// listening sockets, and through which this one takes its predecessor's.
    pub handover: Option<String>,
    /// `-handover.wait`: after handing its sockets over, stay (serving nothing) until
    /// SIGTERM or SIGINT instead of exiting, for a container that would be restarted.
    pub handover_wait: bool,
    pub help: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            conf: None,
            port: 53,
            pidfile: None,
            plugins: false,
            quiet: false,
            version: false,
            check: false,
            workers: None,
            tcp_max_connections: 1024,
            handover: None,
            handover_wait: false,
            help: false,
        }
    }
}

/// A command-line error, reported with the usage text.
#[derive(Debug, PartialEq, Eq)]
pub struct FlagError(pub String);

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The usage text.
pub const USAGE: &str = "Usage of clusterdns:
  -conf string
        Corefile to load (default \"Corefile\"; \"stdin\" reads standard input)
  -dns.port string
        Default port (default \"53\")
  -p string
        Default port (default \"53\")
  -pidfile string
        File path to write pid file
  -plugins
        List installed plugins
  -quiet
        Quiet mode (no initialization output)
  -version
        Show version
  -check
        Parse and validate the Corefile, print every error as FILE:LINE - message, and exit (0: valid, 1: not)
  -workers int
        Worker threads (default: one per CPU this process may run on)
  -tcp.max-connections int
        Open DNS-over-TCP connections per worker; more are closed at once (default 1024)
  -handover string
        Unix socket for restarts without loss: take the listening sockets of the
        clusterdns listening there (it drains and exits once this one is ready), then
        listen there for the next one
  -handover.wait
        After handing the sockets over, wait (serving nothing) for SIGTERM instead of
        exiting: for a container whose exit would be restarted (a DaemonSet pod)
";

/// What `-plugins` prints, in CoreDNS's layout (its server type, its Corefile loaders,
/// then every plugin as `dns.NAME`), for `plugins`, the names from the plugin table.
pub fn plugins_listing(plugins: &[&str]) -> String {
    let mut out = String::from("Server types:\n  dns\n\nCaddyfile loaders:\n  flag\n  default\n\nOther plugins:\n");
    for p in plugins {
        out.push_str("  dns.");
        out.push_str(p);
        out.push('\n');
    }
    out
}

impl Flags {
    /// Parses the arguments after the program name.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Flags, FlagError> {
        let mut f = Flags::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                return Err(FlagError(format!("extra command line arguments: {arg}")));
            };
            if body.is_empty() {
                // `--` ends the flags; anything after it is an extra argument.
                if let Some(extra) = args.next() {
                    return Err(FlagError(format!("extra command line arguments: {extra}")));
                }
                break;
            }
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let mut value = |name: &str| -> Result<String, FlagError> {
                match &inline {
                    Some(v) => Ok(v.clone()),
                    None => args
                        .next()
                        .ok_or_else(|| FlagError(format!("flag needs an argument: -{name}"))),
                }
            };
            let boolean = |v: &Option<String>| -> Result<bool, FlagError> {
                match v.as_deref() {
                    None | Some("true") | Some("1") | Some("t") | Some("T") | Some("TRUE") => Ok(true),
                    Some("false") | Some("0") | Some("f") | Some("F") | Some("FALSE") => Ok(false),
                    Some(other) => Err(FlagError(format!("invalid boolean value {other:?} for -{name}"))),
                }
            };
            match name {
                "conf" => f.conf = Some(value(name)?),
                "dns.port" | "p" => {
                    let v = value(name)?;
                    f.port = v
                        .parse()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| FlagError(format!("invalid value {v:?} for flag -{name}: not a port")))?;
                }
                "pidfile" => f.pidfile = Some(value(name)?),
                "plugins" => f.plugins = boolean(&inline)?,
                "quiet" => f.quiet = boolean(&inline)?,
                "version" => f.version = boolean(&inline)?,
                "check" => f.check = boolean(&inline)?,
                "handover.wait" => f.handover_wait = boolean(&inline)?,
                "workers" => {
                    let v = value(name)?;
                    f.workers =
                        Some(v.parse().ok().filter(|n| (1..=1024).contains(n)).ok_or_else(|| {
                            FlagError(format!("invalid value {v:?} for flag -workers: want 1 to 1024"))
                        })?);
                }
                "tcp.max-connections" => {
                    let v = value(name)?;
                    f.tcp_max_connections = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        FlagError(format!(
                            "invalid value {v:?} for flag -tcp.max-connections: want a positive number"
                        ))
                    })?;
                }
                "handover" => {
                    let v = value(name)?;
                    if v.is_empty() || v.len() > 100 || v.contains('\0') {
                        return Err(FlagError(format!(
                            "invalid value {v:?} for flag -handover: want a Unix socket path of 1 to 100 bytes"
                        )));
                    }
                    f.handover = Some(v);
                }
                "h" | "help" => f.help = true,
                other => {
                    return Err(FlagError(format!("flag provided but not defined: -{other}")));
                }
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Flags, FlagError> {
        Flags::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn coredns_flag_forms() {
        let f = p(&["-conf", "x", "-dns.port=1053", "--quiet", "-pidfile", "/tmp/p"]).unwrap();
        assert_eq!(f.conf.as_deref(), Some("x"));
        assert_eq!(f.port, 1053);
        assert!(f.quiet);
        assert_eq!(f.pidfile.as_deref(), Some("/tmp/p"));
        assert_eq!(p(&["-p", "5300"]).unwrap().port, 5300);
        assert!(p(&["-version"]).unwrap().version);
        assert!(!p(&["-quiet=false"]).unwrap().quiet);
        assert_eq!(p(&["-workers", "3"]).unwrap().workers, Some(3));
        assert_eq!(
            p(&["-handover", "/run/clusterdns/handover.sock"])
                .unwrap()
                .handover
                .as_deref(),
            Some("/run/clusterdns/handover.sock")
        );
    }

    #[test]
    fn errors() {
        assert_eq!(p(&["stray"]).unwrap_err().0, "extra command line arguments: stray");
        assert_eq!(p(&["-nope"]).unwrap_err().0, "flag provided but not defined: -nope");
        assert_eq!(p(&["-conf"]).unwrap_err().0, "flag needs an argument: -conf");
        assert!(p(&["-p", "0"]).is_err());
        assert!(p(&["-p", "70000"]).is_err());
        assert!(p(&["-workers", "0"]).is_err());
        assert!(p(&["--", "x"]).is_err());
        assert!(p(&["-handover", ""]).is_err());
        assert!(p(&["-handover.wait"]).unwrap().handover_wait);
        assert!(!p(&["-handover.wait=false"]).unwrap().handover_wait);
        assert!(p(&["-handover"]).is_err());
        assert!(p(&["-handover", &"x".repeat(101)]).is_err());
    }
}
