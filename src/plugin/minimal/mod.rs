//! `minimal`: strips the authority and additional sections from successful replies
//! that are not delegations, as CoreDNS's plugin of that name does (README.md beside
//! this file).
//!
//! CoreDNS's plugin has the later plugins write into a buffer, classifies the reply
//! (`response.Typify`) and writes only its header, question and answers. Here its
//! response hook classifies the finished reply the same way and cuts it in place
//! ([`crate::dns::Response::keep_answers_only`]): the bytes after the answers are
//! dropped, the OPT record moves down; nothing is allocated.

use crate::chain::{ChainError, Handler, Query, Step};
use crate::config::{ConfigError, Directive};
use crate::dns::ResponseType;
use crate::plugin::once;
use crate::setup::{Plugin, SetupCtx};

/// The directive name, and the prefix of its errors.
const NAME: &str = "minimal";

/// The plugin; it has no options.
pub struct Minimal;

/// `minimal` takes no arguments and no block.
pub fn setup(dirs: &[&Directive], _: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let d = once(NAME, dirs)?;
    d.expect_args(NAME, 0, 0)?;
    d.expect_no_block(NAME)?;
    Ok(Plugin::handler(Minimal))
}

impl Handler for Minimal {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(&self, _: &mut Query<'_, '_>) -> Step {
        Step::Next
    }

    fn wants_response(&self) -> bool {
        true
    }

    /// A positive answer (CoreDNS's `NoError` type) keeps only its answers. Denials
    /// (NXDOMAIN, NODATA), errors and delegations go out whole, and so does a
    /// transfer, with the error CoreDNS returns for it (which `errors` logs).
    fn on_response(&self, q: &mut Query<'_, '_>) {
        match q.resp.response_type(q.req.qtype) {
            ResponseType::NoError => q.resp.keep_answers_only(),
            ResponseType::Meta if q.error.is_none() => {
                q.error = Some(ChainError::Plugin(
                    NAME,
                    format!("unhandled response type \"META\" for \"{}\"", q.req.qname).into(),
                ));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    use domain::base::Message;
    use domain::rdata::AllRecordData;

    use super::*;
    use crate::chain::testing::with_query;
    use crate::chain::{Chain, Metadata, Outcome};
    use crate::dns::{Name, QueryBuilder, Rcode, Rdata, Record, Section, rtype};

    fn setup_from(corefile: &str) -> Result<Plugin, ConfigError> {
        crate::chain::testing::with_directives(corefile, setup)
    }

    /// CoreDNS's setup_test.go: `minimal` alone; an argument is an error.
    #[test]
    fn setup_takes_nothing() {
        assert!(setup_from(". {\n    minimal\n}\n").is_ok());
        for (corefile, want) in [
            (
                ". {\n    minimal example.org\n}\n",
                "Corefile:2 - minimal: Wrong argument count or unexpected line ending after 'example.org'",
            ),
            (
                ". {\n    minimal {\n        all\n    }\n}\n",
                "Corefile:3 - minimal: unknown property 'all'",
            ),
            (
                ". {\n    minimal\n    minimal\n}\n",
                "Corefile:3 - minimal: this plugin can only be used once per Server Block",
            ),
        ] {
            let err = setup_from(corefile).err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some(want), "{corefile}");
        }
    }

    const NS: &[u8] = b"\x03ns1\x07example\x03com\x00";

    /// Writes CoreDNS's TestMinimizeResponse reply: `answers` A records for the
    /// question, 4 NS in authority (or a SOA when `soa`), `extra` glue records, with
    /// `rcode`; a DNSSEC-free reply, as the test's.
    struct Writer {
        rcode: Rcode,
        answers: usize,
        soa: bool,
        extra: usize,
    }
    impl Handler for Writer {
        fn name(&self) -> &'static str {
            "writer"
        }
        fn serve(&self, q: &mut Query<'_, '_>) -> Step {
            q.resp.start(q.req, self.rcode);
            for _ in 0..self.answers {
                q.resp.answer(Record::at_question(
                    rtype::A,
                    293,
                    Rdata::A(Ipv4Addr::new(142, 250, 76, 46)),
                ));
            }
            if self.soa {
                let rr = Record::at_question(
                    rtype::SOA,
                    60,
                    Rdata::Soa {
                        mname: Name::wire(NS),
                        rname: Name::wire(NS),
                        serial: 1,
                        refresh: 2,
                        retry: 3,
                        expire: 4,
                        minimum: 5,
                    },
                );
                q.resp.authority(rr);
            } else {
                for _ in 0..4 {
                    q.resp
                        .authority(Record::at_question(rtype::NS, 157127, Rdata::Name(Name::wire(NS))));
                }
            }
            for i in 0..self.extra {
                let rr = Record {
                    owner: Name::wire(NS),
                    rtype: rtype::A,
                    ttl: 316273,
                    data: Rdata::A(Ipv4Addr::new(216, 239, 34, i as u8)),
                };
                let _ = q.resp.push(Section::Additional, &rr);
            }
            Step::Answered
        }
    }

    /// The reply through `minimal` then `w` (EDNS 1232 unless `udp` says otherwise):
    /// its counts, TC, and its records per section as text.
    fn run(w: Writer, udp: Option<u16>) -> ([u16; 3], bool, Vec<String>) {
        let chain = Chain::new(vec![Arc::new(Minimal), Arc::new(w)]);
        let mut raw = Vec::new();
        let mut b = QueryBuilder::new(b"\x07example\x03com\x00", rtype::A).id(3);
        if let Some(size) = udp {
            b = b.edns(size);
        }
        b.write(&mut raw);
        with_query(&raw, "127.0.0.1:53".parse().unwrap(), Metadata::NONE, |q| {
            let Outcome::Reply { at } = chain.run(q, 0) else {
                panic!()
            };
            chain.complete(q, at);
            let m = Message::from_octets(q.resp.bytes().to_vec()).unwrap();
            let c = m.header_counts();
            assert_eq!(m.opt().is_some(), udp.is_some());
            let records = m
                .answer()
                .unwrap()
                .chain(m.authority().unwrap())
                .chain(m.additional().unwrap())
                .map(|r| r.unwrap().into_record::<AllRecordData<_, _>>().unwrap().unwrap())
                .filter(|r| r.rtype() != domain::base::iana::Rtype::OPT)
                .map(|r| r.to_string().split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            let opt = u16::from(udp.is_some());
            ([c.ancount(), c.nscount(), c.arcount() - opt], m.header().tc(), records)
        })
    }

    /// TestMinimizeResponse: a positive answer keeps its answers only; a delegation
    /// (no answer, NS in authority) and a failure are left whole. Denials too.
    #[test]
    fn positive_answers_lose_authority_and_additional() {
        let positive = || Writer {
            rcode: Rcode::NOERROR,
            answers: 1,
            soa: false,
            extra: 8,
        };
        let (counts, tc, records) = run(positive(), Some(1232));
        assert_eq!((counts, tc), ([1, 0, 0], false));
        assert_eq!(records, ["example.com. 293 IN A 142.250.76.46"]);
        // Without EDNS too.
        assert_eq!(run(positive(), None).0, [1, 0, 0]);
        let delegation = Writer {
            answers: 0,
            ..positive()
        };
        assert_eq!(run(delegation, Some(1232)).0, [0, 4, 8]);
        let failure = Writer {
            rcode: Rcode::SERVFAIL,
            ..positive()
        };
        assert_eq!(run(failure, Some(1232)).0, [1, 4, 8]);
        let nxdomain = Writer {
            rcode: Rcode::NXDOMAIN,
            answers: 0,
            soa: true,
            extra: 1,
        };
        assert_eq!(run(nxdomain, Some(1232)).0, [0, 1, 1]);
        let nodata = Writer {
            rcode: Rcode::NOERROR,
            answers: 0,
            soa: true,
            extra: 1,
        };
        assert_eq!(run(nodata, Some(1232)).0, [0, 1, 1]);
    }

    /// A reply cut for size in its additional section (TC) fits whole once it is
    /// minimal: TC goes (CoreDNS truncates the minimal reply, which fits); a reply cut
    /// in its answers keeps TC and the answers that fit.
    #[test]
    fn tc_stays_only_when_answers_were_left_out() {
        let many_extra = Writer {
            rcode: Rcode::NOERROR,
            answers: 3,
            soa: false,
            extra: 40,
        };
        let (counts, tc, _) = run(many_extra, None);
        assert_eq!((counts, tc), ([3, 0, 0], false));
        let many_answers = Writer {
            rcode: Rcode::NOERROR,
            answers: 40,
            soa: false,
            extra: 1,
        };
        let (counts, tc, _) = run(many_answers, None);
        assert!(tc);
        assert!(counts[0] > 20 && counts[0] < 40 && counts[1..] == [0, 0], "{counts:?}");
    }
}
