//! `whoami`: answers every query with the client's address and port, as CoreDNS's
//! plugin of that name does (README.md beside this file).

use std::net::IpAddr;

use crate::chain::{Handler, Query, Step};
use crate::config::{ConfigError, Directive};
use crate::dns::{Name, Rcode, Rdata, Record, Section, rtype};
use crate::plugin::once;
use crate::setup::{Plugin, SetupCtx};

/// The plugin; it has no options.
pub struct Whoami;

/// `whoami` takes no arguments and no block.
pub fn setup(dirs: &[&Directive], _: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let d = once("whoami", dirs)?;
    d.expect_args("whoami", 0, 0)?;
    d.expect_no_block("whoami")?;
    Ok(Plugin::handler(Whoami))
}

impl Handler for Whoami {
    fn name(&self) -> &'static str {
        "whoami"
    }

    /// An empty answer section; in the additional section the client's address (A or
    /// AAAA) under the query name and an SRV `_udp.<qname>` / `_tcp.<qname>` carrying
    /// its port, TTL 0, with AA set.
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        q.resp.start(q.req, Rcode::NOERROR);
        q.resp.set_aa(true);
        let client = q.req.client;
        let addr = match client.ip() {
            IpAddr::V4(ip) => Record::at_question(rtype::A, 0, Rdata::A(ip)),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => Record::at_question(rtype::A, 0, Rdata::A(v4)),
                None => Record::at_question(rtype::AAAA, 0, Rdata::Aaaa(ip)),
            },
        };
        let _ = q.resp.push(Section::Additional, &addr);
        let proto: &[u8] = match q.req.transport {
            crate::dns::Transport::Udp => b"\x04_udp",
            crate::dns::Transport::Tcp => b"\x04_tcp",
        };
        let srv = Record {
            owner: Name::under_question(proto, crate::dns::wire::QNAME_OFFSET),
            rtype: rtype::SRV,
            ttl: 0,
            data: Rdata::Srv {
                priority: 0,
                weight: 0,
                port: client.port(),
                target: Name::wire(&[0]),
            },
        };
        let _ = q.resp.push(Section::Additional, &srv);
        Step::Answered
    }
}
