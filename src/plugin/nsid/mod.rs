//! `nsid`: adds this server's identifier (RFC 5001 NSID) to the replies of queries
//! that ask for it, as CoreDNS's plugin of that name does (README.md beside this
//! file).
//!
//! CoreDNS wraps the response writer of every query that carries an NSID option, so
//! the option goes into whatever reply a later plugin writes, a cached one included.
//! Here the plugin's response hook does it: it runs after every later plugin's hook
//! (cache stores the reply without the option first) and adds the option to the
//! finished reply's OPT record ([`crate::dns::Response::add_option`]): a copy of the
//! identifier, no allocation.

use crate::chain::{Handler, Query, Step};
use crate::config::{ConfigError, Directive};
use crate::plugin::{hostname, once};
use crate::setup::{Plugin, SetupCtx};

/// The directive name, and the prefix of its errors.
const NAME: &str = "nsid";

/// The EDNS option code of NSID (RFC 5001 2.3).
pub const OPTION: u16 = 3;

/// The longest identifier taken: far more than any host name (64) or label a server
/// is named by; what a 512-byte reply can still carry.
pub const MAX_DATA: usize = 255;

/// The plugin: the identifier its replies carry.
pub struct Nsid {
    data: Box<[u8]>,
}

/// Parses `nsid [DATA]`.
pub fn setup(dirs: &[&Directive], _: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    Ok(Plugin::handler(parse(dirs)?))
}

fn parse(dirs: &[&Directive]) -> Result<Nsid, ConfigError> {
    let d = once(NAME, dirs)?;
    d.expect_no_block(NAME)?;
    // CoreDNS joins the arguments with single spaces; none: the host's name.
    let data = if d.args.is_empty() {
        hostname()
    } else {
        d.arg_strs().join(" ")
    };
    if data.len() > MAX_DATA {
        return Err(d.err(
            NAME,
            format_args!(
                "DATA is {} bytes, more than the {MAX_DATA} an NSID may have here",
                data.len()
            ),
        ));
    }
    Ok(Nsid {
        data: data.into_bytes().into(),
    })
}

impl Handler for Nsid {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(&self, _: &mut Query<'_, '_>) -> Step {
        Step::Next
    }

    fn wants_response(&self) -> bool {
        true
    }

    /// Adds the NSID option when the query had one (RFC 5001 2.1: the server sends
    /// NSID only when asked), to the replies a plugin wrote. A failure the server
    /// writes itself (a plugin returned an error rcode) goes out without it, as in
    /// CoreDNS, whose server writes such replies past the plugin's writer.
    fn on_response(&self, q: &mut Query<'_, '_>) {
        if q.answered_by.is_empty() || !q.req.edns_options().any(|(code, _)| code == OPTION) {
            return;
        }
        q.resp.add_option(OPTION, &self.data);
    }
}

#[cfg(test)]
mod tests {
    use domain::base::Message;
    use domain::base::opt::AllOptData;

    use super::*;
    use crate::chain::testing::with_query;
    use crate::chain::{Chain, Metadata, Outcome};
    use crate::dns::{QueryBuilder, Rcode, Rdata, Record, rtype};
    use std::sync::Arc;

    fn setup_from(corefile: &str) -> Result<Nsid, ConfigError> {
        crate::chain::testing::with_directives(corefile, |d, _| parse(d))
    }

    /// CoreDNS's setup_test.go: the host name by default, the arguments joined, once
    /// per block.
    #[test]
    fn setup_takes_the_host_name_or_the_words_given() {
        assert_eq!(*setup_from(". {\n    nsid\n}\n").unwrap().data, *hostname().as_bytes());
        assert_eq!(&*setup_from(". {\n    nsid ps0\n}\n").unwrap().data, b"ps0");
        assert_eq!(
            &*setup_from(". {\n    nsid \"ps0 beta\"\n}\n").unwrap().data,
            b"ps0 beta"
        );
        assert_eq!(
            &*setup_from(". {\n    nsid Use The  Force\n}\n").unwrap().data,
            b"Use The Force"
        );
        let long = "x".repeat(MAX_DATA + 1);
        for (corefile, want) in [
            (
                ". {\n    nsid one\n    nsid two\n}\n".to_string(),
                "Corefile:3 - nsid: this plugin can only be used once per Server Block".to_string(),
            ),
            (
                ". {\n    nsid {\n        data x\n    }\n}\n".to_string(),
                "Corefile:3 - nsid: unknown property 'data'".to_string(),
            ),
            (
                format!(". {{\n    nsid {long}\n}}\n"),
                "Corefile:2 - nsid: DATA is 256 bytes, more than the 255 an NSID may have here".to_string(),
            ),
        ] {
            let err = setup_from(&corefile).err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some(want.as_str()), "{corefile}");
        }
    }

    /// Answers every query with `n` A records (each 16 bytes), or fails it.
    struct Answer(usize, bool);
    impl Handler for Answer {
        fn name(&self) -> &'static str {
            "answer"
        }
        fn serve(&self, q: &mut Query<'_, '_>) -> Step {
            if self.1 {
                return Step::Fail(Rcode::SERVFAIL, None);
            }
            q.resp.start(q.req, Rcode::NOERROR);
            for i in 0..self.0 {
                let a = std::net::Ipv4Addr::from(0x0a00_0000 + i as u32);
                q.resp.answer(Record::at_question(rtype::A, 60, Rdata::A(a)));
            }
            Step::Answered
        }
    }

    /// The reply through a chain of nsid then `answer`, to a query with these EDNS
    /// `options` (None: no EDNS at all).
    fn run(nsid: &str, answer: Answer, options: Option<&[(u16, &[u8])]>) -> Message<Vec<u8>> {
        let chain = Chain::new(vec![
            Arc::new(Nsid {
                data: nsid.as_bytes().into(),
            }),
            Arc::new(answer),
        ]);
        let mut raw = Vec::new();
        let mut b = QueryBuilder::new(b"\x07example\x03org\x00", rtype::A).id(1);
        if let Some(o) = options {
            b = b.edns(512).options(o);
        }
        b.write(&mut raw);
        with_query(&raw, "127.0.0.1:53".parse().unwrap(), Metadata::NONE, |q| {
            let Outcome::Reply { at } = chain.run(q, 0) else {
                panic!()
            };
            chain.complete(q, at);
            Message::from_octets(q.resp.bytes().to_vec()).unwrap()
        })
    }

    /// The NSID options of a reply's OPT record, as text.
    fn nsids(m: &Message<Vec<u8>>) -> Vec<Vec<u8>> {
        let Some(opt) = m.opt() else { return Vec::new() };
        opt.opt()
            .iter::<AllOptData<_, _>>()
            .filter_map(|o| match o.unwrap() {
                AllOptData::Nsid(n) => Some(n.as_slice().to_vec()),
                _ => None,
            })
            .collect()
    }

    /// README: "a client with NSID support will see an OPT record with the NSID
    /// option" (nsid_test.go: asked, not asked, no EDNS).
    #[test]
    fn only_a_query_that_asks_gets_the_identifier() {
        let m = run("Use The Force", Answer(1, false), Some(&[(OPTION, b"")]));
        assert_eq!(nsids(&m), [b"Use The Force".to_vec()]);
        assert_eq!(m.answer().unwrap().count(), 1);
        // Another option in the query, and NSID after it.
        let m = run("ps0", Answer(1, false), Some(&[(65001, &[1; 4]), (OPTION, b"")]));
        assert_eq!(nsids(&m), [b"ps0".to_vec()]);
        let m = run("ps0", Answer(1, false), Some(&[(65001, &[1; 4])]));
        assert!(nsids(&m).is_empty() && m.opt().is_some());
        let m = run("ps0", Answer(1, false), None);
        assert!(m.opt().is_none());
        // A failure the server writes carries none (CoreDNS writes it past nsid).
        let m = run("ps0", Answer(1, true), Some(&[(OPTION, b"")]));
        assert_eq!(m.header().rcode(), domain::base::iana::Rcode::SERVFAIL);
        assert!(nsids(&m).is_empty());
    }

    /// The option counts against the client's size like every record: a reply that
    /// fit 512 bytes without it loses its last records and gets TC.
    #[test]
    fn a_full_reply_makes_room_for_the_identifier() {
        // 12 + 17 (question) + 29 * 16 + 11 (OPT) = 504 bytes: full without NSID.
        let m = run("ps0", Answer(29, false), Some(&[(65001, &[1; 4])]));
        assert!(!m.header().tc());
        assert_eq!(m.answer().unwrap().count(), 29);
        let m = run("server-with-a-long-name", Answer(29, false), Some(&[(OPTION, b"")]));
        assert!(m.header().tc());
        assert!(m.as_slice().len() <= 512, "{}", m.as_slice().len());
        assert_eq!(m.answer().unwrap().count(), 27);
        assert_eq!(nsids(&m), [b"server-with-a-long-name".to_vec()]);
        assert_eq!(m.header_counts().arcount(), 1);
    }
}
