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

#[cfg(test)]
mod tests {
    use domain::base::{Message, ParsedName};
    use domain::rdata::AllRecordData;

    use super::*;
    use crate::chain::{RouteTag, WorkerCtx};
    use crate::dns::{Request, Response, Transport};

    /// Runs `whoami`'s setup on the first block of `corefile`.
    fn setup_from(corefile: &str) -> Result<Plugin, ConfigError> {
        crate::chain::testing::with_directives(corefile, setup)
    }

    #[test]
    fn setup_takes_nothing_and_is_a_handler_only() {
        let p = setup_from("example.org {\n    whoami\n}\n").unwrap();
        assert!(p.handler.is_some() && p.lifecycle.is_none());
        for (corefile, want) in [
            (
                "example.org {\n    whoami x\n}\n",
                "Corefile:2 - whoami: Wrong argument count or unexpected line ending after 'x'",
            ),
            (
                "example.org {\n    whoami\n    whoami\n}\n",
                "Corefile:3 - whoami: this plugin can only be used once per Server Block",
            ),
        ] {
            let err = setup_from(corefile).err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some(want), "{corefile}");
        }
    }

    /// The additional section whoami writes for a query from `client`, one
    /// `owner ttl class type data` line per record (`domain` shows the SRV target `.` as
    /// nothing), and whether the reply is authoritative.
    fn ask(client: &str, transport: Transport) -> (bool, Vec<String>) {
        let raw = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07Example\x03org\x00\x00\x01\x00\x01";
        let client = client.parse().unwrap();
        let req = Request::parse(raw, transport, client, client).ok().unwrap();
        let mut resp = Response::new();
        let mut worker = WorkerCtx::new(0);
        let route = RouteTag {
            slot: 0,
            server: "dns://:53".into(),
            zone: "example.org.".into(),
        };
        let mut q = Query {
            req: &req,
            resp: &mut resp,
            worker: &mut worker,
            route: &route,
            answered_by: "",
            error: None,
            refresh: false,
            coalesce: true,
            meta: crate::chain::Metadata::NONE,
        };
        assert!(matches!(Whoami.serve(&mut q), Step::Answered));
        let msg = Message::from_octets(q.resp.finish().to_vec()).unwrap();
        assert_eq!(msg.header_counts().ancount(), 0, "the answer section is empty");
        let records = msg
            .additional()
            .unwrap()
            .map(|rr| {
                let rr = rr
                    .unwrap()
                    .into_any_record::<AllRecordData<_, ParsedName<_>>>()
                    .unwrap();
                rr.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .collect();
        (msg.header().aa(), records)
    }

    #[test]
    fn the_client_address_port_and_transport_come_back() {
        assert_eq!(
            ask("192.0.2.7:40212", Transport::Udp),
            (
                true,
                vec![
                    "Example.org. 0 IN A 192.0.2.7".to_string(),
                    "_udp.Example.org. 0 IN SRV 0 0 40212".to_string()
                ]
            )
        );
        assert_eq!(
            ask("[2001:db8::7]:53000", Transport::Tcp).1,
            [
                "Example.org. 0 IN AAAA 2001:db8::7",
                "_tcp.Example.org. 0 IN SRV 0 0 53000"
            ]
        );
        // An IPv4 client on a dual-stack socket is an IPv4 client.
        assert_eq!(
            ask("[::ffff:192.0.2.7]:5353", Transport::Udp).1[0],
            "Example.org. 0 IN A 192.0.2.7"
        );
    }
}
