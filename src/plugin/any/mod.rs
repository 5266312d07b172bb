//! `any`: answers every query of type ANY with one short HINFO record instead of
//! everything the name has (RFC 8482 4.2), as CoreDNS's plugin of that name does
//! (README.md beside this file).

use crate::chain::{Handler, Query, Step};
use crate::config::{ConfigError, Directive};
use crate::dns::{Rcode, Rdata, Record, rtype};
use crate::plugin::once;
use crate::setup::{Plugin, SetupCtx};

/// The directive name, and the prefix of its errors.
const NAME: &str = "any";

/// The HINFO data CoreDNS answers: CPU "ANY obsoleted", OS "See RFC 8482", as two
/// character strings (RFC 1035 3.3.2).
const HINFO: &[u8] = b"\x0dANY obsoleted\x0cSee RFC 8482";

/// The TTL of the HINFO record (CoreDNS's, the RFC's number).
const TTL: u32 = 8482;

/// The plugin; it has no options.
pub struct Any;

/// `any` takes no arguments and no block.
pub fn setup(dirs: &[&Directive], _: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let d = once(NAME, dirs)?;
    d.expect_args(NAME, 0, 0)?;
    d.expect_no_block(NAME)?;
    Ok(Plugin::handler(Any))
}

impl Handler for Any {
    fn name(&self) -> &'static str {
        NAME
    }

    /// An ANY query gets NOERROR with the HINFO record under the question's name
    /// (class IN, not authoritative); every other query goes to the next plugin.
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        if q.req.qtype != rtype::ANY {
            return Step::Next;
        }
        q.resp.start(q.req, Rcode::NOERROR);
        q.resp.answer(Record::at_question(rtype::HINFO, TTL, Rdata::Raw(HINFO)));
        Step::Answered
    }
}

#[cfg(test)]
mod tests {
    use domain::base::Message;
    use domain::rdata::AllRecordData;

    use super::*;
    use crate::chain::Metadata;
    use crate::chain::testing::with_query;
    use crate::dns::QueryBuilder;

    fn setup_from(corefile: &str) -> Result<Plugin, ConfigError> {
        crate::chain::testing::with_directives(corefile, setup)
    }

    /// CoreDNS's setup_test.go: `any` alone; an argument or an option is an error.
    #[test]
    fn setup_takes_nothing() {
        assert!(setup_from(". {\n    any\n}\n").is_ok());
        for (corefile, want) in [
            (
                ". {\n    any example.org\n}\n",
                "Corefile:2 - any: Wrong argument count or unexpected line ending after 'example.org'",
            ),
            (
                ". {\n    any {\n        hinfo x\n    }\n}\n",
                "Corefile:3 - any: unknown property 'hinfo'",
            ),
            (
                ". {\n    any\n    any\n}\n",
                "Corefile:3 - any: this plugin can only be used once per Server Block",
            ),
        ] {
            let err = setup_from(corefile).err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some(want), "{corefile}");
        }
    }

    /// The answer to `Example.org.` of `qtype`: None when passed on.
    fn ask(qtype: u16) -> Option<(Vec<String>, bool)> {
        let mut raw = Vec::new();
        QueryBuilder::new(b"\x07Example\x03org\x00", qtype)
            .id(9)
            .write(&mut raw);
        with_query(&raw, "127.0.0.1:53".parse().unwrap(), Metadata::NONE, |q| {
            if !matches!(Any.serve(q), Step::Answered) {
                return None;
            }
            let m = Message::from_octets(q.resp.finish().to_vec()).unwrap();
            assert_eq!(m.header().rcode(), domain::base::iana::Rcode::NOERROR);
            assert_eq!(m.header_counts().nscount() + m.header_counts().arcount(), 0);
            let answer = m
                .answer()
                .unwrap()
                .limit_to::<AllRecordData<_, _>>()
                .map(|r| r.unwrap().to_string().split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            Some((answer, m.header().aa()))
        })
    }

    /// CoreDNS's TestAny and TestAnyNonANYQuery; README "Examples" for the record.
    #[test]
    fn any_gets_the_hinfo_and_the_rest_passes() {
        assert_eq!(
            ask(rtype::ANY),
            Some((
                vec!["Example.org. 8482 IN HINFO \"ANY obsoleted\" \"See RFC 8482\"".to_string()],
                false
            ))
        );
        for t in [rtype::A, rtype::AAAA, rtype::MX, rtype::TXT, rtype::CNAME] {
            assert_eq!(ask(t), None);
        }
    }
}
