//! `bufsize`: lowers the EDNS UDP payload size a query asks for to a maximum, so that
//! replies stay under the fragmentation limit, as CoreDNS's plugin of that name does
//! (README.md beside this file).
//!
//! CoreDNS's plugin changes the query's OPT record in place, so every plugin after it,
//! the server's size check on the reply and the upstream that `forward` asks see the
//! lowered size. Here the plugin states its limit ([`Handler::udp_size_limit`]) and the
//! server lowers the size in the request before the chain runs: the same for every
//! plugin that reads it (none before `bufsize` in CoreDNS's order does), and the query
//! costs nothing more than a comparison.

use crate::chain::{Handler, Query, Step};
use crate::config::{ConfigError, Directive};
use crate::plugin::once;
use crate::setup::{Plugin, SetupCtx};

/// The directive name, and the prefix of its errors.
const NAME: &str = "bufsize";

/// The default limit: the figure of DNS flag day 2020 (CoreDNS's default).
pub const DEFAULT: u16 = 1232;

/// The range CoreDNS accepts (RFC 6891 6.2.5: below 512 is taken as 512; 4096 is the
/// largest size it recommends).
const RANGE: std::ops::RangeInclusive<u16> = 512..=4096;

/// The plugin: the largest UDP payload size a query keeps.
pub struct Bufsize {
    size: u16,
}

/// Parses `bufsize [SIZE]`.
pub fn setup(dirs: &[&Directive], _: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let d = once(NAME, dirs)?;
    d.expect_no_block(NAME)?;
    let size = match d.args.as_slice() {
        [] => DEFAULT,
        // CoreDNS answers a value that is no number, or out of range, with its
        // argument-count error (setup.go), and so does this.
        [a] => match a.text.parse::<u16>() {
            Ok(n) if RANGE.contains(&n) => n,
            _ => return Err(d.arg_err(NAME)),
        },
        _ => return Err(d.arg_err(NAME)),
    };
    Ok(Plugin::handler(Bufsize { size }))
}

impl Handler for Bufsize {
    fn name(&self) -> &'static str {
        NAME
    }

    /// The request already carries the lowered size (see the module comment).
    fn serve(&self, _: &mut Query<'_, '_>) -> Step {
        Step::Next
    }

    fn udp_size_limit(&self) -> Option<u16> {
        Some(self.size)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::chain::Chain;
    use crate::dns::{Request, Transport, rtype};

    fn setup_from(corefile: &str) -> Result<Plugin, ConfigError> {
        crate::chain::testing::with_directives(corefile, setup)
    }

    fn limit(corefile: &str) -> Option<u16> {
        setup_from(corefile).unwrap().handler.unwrap().udp_size_limit()
    }

    /// CoreDNS's TestSetupBufsize cases, with this project's error text.
    #[test]
    fn setup_takes_a_size_from_512_to_4096() {
        assert_eq!(limit(". {\n    bufsize\n}\n"), Some(1232));
        assert_eq!(limit(". {\n    bufsize \"1220\"\n}\n"), Some(1220));
        assert_eq!(limit(". {\n    bufsize 512\n}\n"), Some(512));
        assert_eq!(limit(". {\n    bufsize 4096\n}\n"), Some(4096));
        for (corefile, want) in [
            (
                ". {\n    bufsize 5000\n}\n",
                "Corefile:2 - bufsize: Wrong argument count or unexpected line ending after '5000'",
            ),
            (
                ". {\n    bufsize \"512 512\"\n}\n",
                "Corefile:2 - bufsize: Wrong argument count or unexpected line ending after '512 512'",
            ),
            (
                ". {\n    bufsize 511\n}\n",
                "Corefile:2 - bufsize: Wrong argument count or unexpected line ending after '511'",
            ),
            (
                ". {\n    bufsize abc123\n}\n",
                "Corefile:2 - bufsize: Wrong argument count or unexpected line ending after 'abc123'",
            ),
            (
                ". {\n    bufsize 1232 1232\n}\n",
                "Corefile:2 - bufsize: Wrong argument count or unexpected line ending after '1232'",
            ),
            (
                ". {\n    bufsize {\n        size 1232\n    }\n}\n",
                "Corefile:3 - bufsize: unknown property 'size'",
            ),
            (
                ". {\n    bufsize\n    bufsize 1100\n}\n",
                "Corefile:3 - bufsize: this plugin can only be used once per Server Block",
            ),
        ] {
            let err = setup_from(corefile).err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some(want), "{corefile}");
        }
    }

    /// A query for `.` A with an OPT record of `size`, or none.
    fn query(size: Option<u16>) -> Vec<u8> {
        let mut b = crate::dns::QueryBuilder::new(b"\x00", rtype::A).id(7);
        if let Some(s) = size {
            b = b.edns(s);
        }
        let mut out = Vec::new();
        b.write(&mut out);
        out
    }

    /// CoreDNS's TestBufsize: a larger size is lowered, a smaller one kept, no OPT
    /// record added; the reply's limit and the message sent upstream follow.
    #[test]
    fn a_larger_size_is_lowered_for_the_chain_and_the_upstream() {
        let chain = Chain::new(vec![Arc::new(Bufsize { size: 1024 })]);
        assert_eq!(chain.udp_size_limit(), Some(1024));
        let a = "127.0.0.1:5300".parse().unwrap();
        for (asked, seen) in [(Some(1152), Some(1024)), (Some(896), Some(896)), (None, None)] {
            let raw = query(asked);
            let mut req = Request::parse(&raw, Transport::Udp, a, a).ok().unwrap();
            req.limit_udp_size(chain.udp_size_limit().unwrap());
            assert_eq!(req.edns.map(|e| e.udp_size), seen);
            assert_eq!(req.max_size(), usize::from(seen.unwrap_or(512)));
            let mut up = Vec::new();
            req.copy_for_upstream(&mut up);
            let sent = Request::parse(&up, Transport::Udp, a, a).ok().unwrap();
            assert_eq!(sent.edns.map(|e| e.udp_size), seen);
            assert_eq!(up.len(), raw.len());
        }
        // Over TCP the reply may still take 65,535 bytes.
        let raw = query(Some(4096));
        let mut req = Request::parse(&raw, Transport::Tcp, a, a).ok().unwrap();
        req.limit_udp_size(1024);
        assert_eq!(req.max_size(), 65535);
    }
}
