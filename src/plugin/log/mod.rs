//! `log`: one line per query, in CoreDNS's formats and classes (README.md beside this
//! file). The line is written when the reply is complete, from the response hook, so
//! it sees the rcode, flags, size and duration that went to the client.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::chain::{Handler, Query, Step};
use crate::config::{ConfigError, Directive};
use crate::dns::{ResponseType, Zone, class, opcode, rtype};
use crate::setup::{Plugin, SetupCtx};

/// CoreDNS's `{common}` format, the default.
pub const COMMON_FORMAT: &str = "{remote}:{port} - {>id} \"{type} {class} {name} {proto} {size} {>do} {>bufsize}\" {rcode} {>rflags} {rsize} {duration}";
/// `{combined}`: common plus the opcode.
pub const COMBINED_FORMAT: &str = "{remote}:{port} - {>id} \"{type} {class} {name} {proto} {size} {>do} {>bufsize}\" {rcode} {>rflags} {rsize} {duration} \"{>opcode}\"";

/// Which replies a rule logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Classes {
    success: bool,
    denial: bool,
    error: bool,
}

impl Classes {
    const ALL: Classes = Classes {
        success: true,
        denial: true,
        error: true,
    };

    fn includes(self, t: ResponseType) -> bool {
        match t.class() {
            "success" => self.success,
            "denial" => self.denial,
            _ => self.error,
        }
    }
}

/// One piece of a parsed format string.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Type,
    Name,
    Class,
    Proto,
    Size,
    Remote,
    Port,
    Local,
    Rcode,
    Rsize,
    Duration,
    Id,
    Opcode,
    Do,
    Bufsize,
    Rflags,
    /// `{/label}`: the metadata label's value; `-` when it is not set (no `metadata`
    /// in the block, or no provider sets it for the query), as CoreDNS's replacer.
    Metadata(String),
}

/// `log NAME... FORMAT { class ... }` compiled.
#[derive(Clone, Debug)]
struct Rule {
    /// The query's name must be at or below this.
    scope: Zone,
    format: Vec<Part>,
    classes: Classes,
}

/// The plugin: the rules of every `log` line of the block, first match wins.
pub struct Log {
    rules: Vec<Rule>,
}

/// Parses every `log` directive of a block, as CoreDNS does: no argument logs every
/// name, one argument is a name scope, more arguments are names followed by an
/// optional format (recognised by a `{`).
pub fn setup(dirs: &[&Directive], _: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let mut rules = Vec::new();
    for d in dirs {
        let mut args = d.arg_strs();
        let mut format = COMMON_FORMAT;
        if args.len() > 1 && args.last().is_some_and(|a| a.contains('{')) {
            format = match args.pop().unwrap_or_default() {
                "{common}" => COMMON_FORMAT,
                "{combined}" => COMBINED_FORMAT,
                other => other,
            };
        }
        if args.is_empty() {
            args.push(".");
        }
        let mut classes = Classes::default();
        for opt in d.options() {
            match opt.name.as_str() {
                "class" => {
                    if opt.args.is_empty() {
                        return Err(opt.arg_err("log"));
                    }
                    for c in &opt.args {
                        match c.as_str() {
                            "all" => classes = Classes::ALL,
                            "success" => classes.success = true,
                            "denial" => classes.denial = true,
                            "error" => classes.error = true,
                            other => {
                                return Err(ConfigError::at(&c.loc, format!("log: invalid class '{other}'")));
                            }
                        }
                    }
                }
                other => {
                    return Err(ConfigError::at(opt.loc(), format!("log: unknown property '{other}'")));
                }
            }
        }
        if classes == Classes::default() {
            classes = Classes::ALL;
        }
        let parts = parse_format(format);
        for name in args {
            let scope = Zone::new(name).ok_or_else(|| d.err("log", format!("invalid name '{name}'")))?;
            rules.push(Rule {
                scope,
                format: parts.clone(),
                classes,
            });
        }
    }
    Ok(Plugin::handler(Log { rules }))
}

fn parse_format(f: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = f;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let key = &rest[open + 1..open + close];
        let part = match key {
            "type" => Part::Type,
            "name" => Part::Name,
            "class" => Part::Class,
            "proto" => Part::Proto,
            "size" => Part::Size,
            "remote" => Part::Remote,
            "port" => Part::Port,
            "local" => Part::Local,
            "rcode" => Part::Rcode,
            "rsize" => Part::Rsize,
            "duration" => Part::Duration,
            ">id" => Part::Id,
            ">opcode" => Part::Opcode,
            ">do" => Part::Do,
            ">bufsize" => Part::Bufsize,
            ">rflags" => Part::Rflags,
            k if k.starts_with('/') => Part::Metadata(k[1..].to_string()),
            _ => {
                text.push_str(&rest[..open + close + 1]);
                rest = &rest[open + close + 1..];
                continue;
            }
        };
        text.push_str(&rest[..open]);
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(part);
        rest = &rest[open + close + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    parts
}

fn write_ip(out: &mut String, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            let _ = write!(out, "{ip}");
        }
        IpAddr::V6(ip) => {
            let _ = write!(out, "[{ip}]");
        }
    }
}

impl Log {
    fn render(rule: &Rule, q: &Query<'_, '_>, out: &mut String) {
        let req = q.req;
        let resp = q.resp.bytes();
        let rflags = q.resp.flags();
        for part in &rule.format {
            let _ = match part {
                Part::Text(t) => {
                    out.push_str(t);
                    Ok(())
                }
                Part::Type => write!(out, "{}", rtype::name(req.qtype)),
                Part::Name => write!(out, "{}", req.qname),
                Part::Class => write!(out, "{}", class::name(req.qclass)),
                Part::Proto => write!(out, "{}", req.transport.as_str()),
                Part::Size => write!(out, "{}", req.raw.len()),
                Part::Remote => {
                    write_ip(out, req.client);
                    Ok(())
                }
                Part::Port => write!(out, "{}", req.client.port()),
                Part::Local => {
                    write_ip(out, req.local);
                    Ok(())
                }
                Part::Rcode => write!(out, "{}", q.resp.rcode().name()),
                Part::Rsize => write!(out, "{}", resp.len()),
                Part::Duration => write!(out, "{}s", q.worker.now.elapsed().as_secs_f64()),
                Part::Id => write!(out, "{}", req.id),
                Part::Opcode => write!(out, "{}", opcode::name(req.flags.opcode())),
                Part::Do => write!(out, "{}", req.dnssec_ok()),
                Part::Bufsize => write!(out, "{}", req.max_size()),
                Part::Rflags => {
                    let mut first = true;
                    rflags.for_each_name(|name| {
                        if !first {
                            out.push(',');
                        }
                        out.push_str(name);
                        first = false;
                    });
                    Ok(())
                }
                Part::Metadata(label) => {
                    META.with(|v| {
                        let mut v = v.borrow_mut();
                        if q.metadata(label, &mut v) {
                            out.push_str(&v);
                        } else {
                            out.push('-');
                        }
                    });
                    Ok(())
                }
            };
        }
    }
}

thread_local! {
    static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(256));
    /// A metadata value being read (`{/label}`).
    static META: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(64));
}

impl Handler for Log {
    fn name(&self) -> &'static str {
        "log"
    }

    fn serve(&self, _: &mut Query<'_, '_>) -> Step {
        Step::Next
    }

    fn wants_response(&self) -> bool {
        true
    }

    fn on_response(&self, q: &mut Query<'_, '_>) {
        let Some(rule) = self.rules.iter().find(|r| r.scope.contains(&q.req.qname)) else {
            return;
        };
        if !rule.classes.includes(q.resp.response_type(q.req.qtype)) {
            return;
        }
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            Log::render(rule, q, &mut line);
            log::info!(target: "query", "{line}");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_parts() {
        let p = parse_format("{remote}:{port} - {>id} {unknown} {/meta} x");
        assert_eq!(
            p,
            vec![
                Part::Remote,
                Part::Text(":".into()),
                Part::Port,
                Part::Text(" - ".into()),
                Part::Id,
                Part::Text(" {unknown} ".into()),
                Part::Metadata("meta".into()),
                Part::Text(" x".into()),
            ]
        );
    }
}
