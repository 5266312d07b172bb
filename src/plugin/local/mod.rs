//! `local`: answers the names that must never leave the host (RFC 6761 6.3
//! `localhost.` and the names below it, the loopback, "this network" and broadcast
//! reverse zones), as CoreDNS's plugin of that name does (README.md beside this file).
//!
//! ```text
//!   name below localhost., or localhost.<anything> (localhost_prefix on)
//!       ─▶ A 127.0.0.1 / AAAA ::1 / NODATA, counted
//!   name in localhost., 0.in-addr.arpa., 127.in-addr.arpa., 255.in-addr.arpa.
//!       apex ─▶ localhost. A/AAAA; SOA; NS localhost.; NODATA
//!       1.0.0.127.in-addr.arpa. ─▶ PTR localhost.; NODATA
//!       else ─▶ NXDOMAIN with the zone's SOA
//!   anything else ─▶ next plugin
//! ```
//!
//! A query costs a few comparisons on the lower-cased name; the records are written
//! from constants, owners pointing into the question as the client spelled it.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::chain::{Handler, Query, Step};
use crate::config::{ConfigError, Directive};
use crate::dns::wire::QNAME_OFFSET;
use crate::dns::{Name, Rcode, Rdata, Record, Section, Tail, rtype};
use crate::metrics::{Families, bump};
use crate::process::ProcessState;
use crate::setup::{Lifecycle, Plugin, SetupCtx};

/// The directive name, and the prefix of its errors.
const NAME: &str = "local";

/// The TTL of every record (CoreDNS's: a week).
const TTL: u32 = 604_800;

/// `localhost.`, lower-cased wire form.
const LOCALHOST: &[u8] = b"\x09localhost\x00";

/// The zones answered, lower-cased wire form (CoreDNS's list).
const ZONES: [&[u8]; 4] = [
    LOCALHOST,
    b"\x010\x07in-addr\x04arpa\x00",
    b"\x03127\x07in-addr\x04arpa\x00",
    b"\x03255\x07in-addr\x04arpa\x00",
];

/// The one name with a PTR record.
const LOOPBACK_PTR: &[u8] = b"\x011\x010\x010\x03127\x07in-addr\x04arpa\x00";

/// `root.localhost.`, the SOA's mailbox.
const ROOT_LOCALHOST: &[u8] = b"\x04root\x09localhost\x00";

/// One counter slot per worker, on a cache line of its own.
#[derive(Default)]
#[repr(align(64))]
struct Slot(AtomicU64);

/// The plugin.
pub struct Local {
    /// Whether `localhost.<domain>` names are answered as loopback (the default,
    /// for compatibility; RFC 6761 only reserves names below `localhost.`).
    prefix: bool,
    /// `coredns_local_localhost_requests_total`, per worker, kept across reloads.
    counter: Arc<[Slot]>,
}

/// Parses `local [{ localhost_prefix on|off }]`.
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    Ok(Plugin::both(Arc::new(parse(dirs, ctx.process, ctx.workers)?)))
}

fn parse(dirs: &[&Directive], process: &ProcessState, workers: usize) -> Result<Local, ConfigError> {
    let mut prefix = true;
    // CoreDNS reads every `local` line of the block; the last setting wins.
    for d in dirs {
        d.expect_args(NAME, 0, 0)?;
        for o in d.options() {
            match o.name.text.as_str() {
                "localhost_prefix" => {
                    o.expect_args(NAME, 1, 1)?;
                    prefix = match o.args[0].as_str() {
                        "on" => true,
                        "off" => false,
                        other => {
                            return Err(o.err(
                                NAME,
                                format_args!("localhost_prefix expects 'on' or 'off', got {other:?}"),
                            ));
                        }
                    };
                }
                other => return Err(o.err(NAME, format_args!("unknown property '{other}'"))),
            }
        }
    }
    Ok(Local {
        prefix,
        counter: process.kept_per_worker("local", workers.max(1)),
    })
}

/// The SOA CoreDNS writes, owned by `owner`.
fn soa(owner: Name<'_>) -> Record<'_> {
    Record {
        owner,
        rtype: rtype::SOA,
        ttl: TTL,
        data: Rdata::Soa {
            mname: Name::wire(LOCALHOST),
            rname: Name::wire(ROOT_LOCALHOST),
            serial: 1,
            refresh: 0,
            retry: 0,
            expire: 0,
            minimum: TTL,
        },
    }
}

/// The question's name from its label `i` on, as the client spelled it.
fn suffix_of_question(q: &Query<'_, '_>, i: usize) -> Name<'static> {
    let at = q.req.qname_label_offset(i);
    Name {
        head: &[],
        mid: &[],
        tail: Tail::Question(at),
    }
}

impl Local {
    /// A name below `localhost.`, or `localhost.` followed by anything when the
    /// prefix form is on (CoreDNS: longer than `localhost.` and ending in
    /// `.localhost.`, or starting with `localhost.`).
    fn is_localhost_name(&self, q: &Query<'_, '_>) -> bool {
        let name = &q.req.qname;
        name.label_count() > 1
            && (name.suffix(name.label_count() - 1) == LOCALHOST || (self.prefix && name.label(0) == b"localhost"))
    }

    /// CoreDNS's `doLocalhost`: loopback addresses, NODATA with a SOA owned by the
    /// name for other types.
    fn loopback(&self, q: &mut Query<'_, '_>) {
        if let Some(slot) = self.counter.get(q.worker.id) {
            bump(&slot.0, 1);
        }
        log::debug!(
            target: "plugin/local",
            "Intercepting localhost query for {:?} {}, from {}",
            q.req.qname.to_string(),
            rtype::name(q.req.qtype),
            q.req.client.ip()
        );
        q.resp.start(q.req, Rcode::NOERROR);
        match q.req.qtype {
            rtype::A => q
                .resp
                .answer(Record::at_question(rtype::A, TTL, Rdata::A(Ipv4Addr::LOCALHOST))),
            rtype::AAAA => q
                .resp
                .answer(Record::at_question(rtype::AAAA, TTL, Rdata::Aaaa(Ipv6Addr::LOCALHOST))),
            _ => q.resp.authority(soa(Name::QUESTION)),
        }
    }
}

impl Handler for Local {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        if self.is_localhost_name(q) {
            self.loopback(q);
            return Step::Answered;
        }
        let Some((zone, before)) = ZONES.iter().find_map(|z| q.req.qname.labels_before(z).map(|i| (*z, i))) else {
            return Step::Next;
        };
        q.resp.start(q.req, Rcode::NOERROR);
        let qtype = q.req.qtype;
        if before == 0 {
            // A zone's apex.
            match qtype {
                rtype::A if zone == LOCALHOST => {
                    q.resp
                        .answer(Record::at_question(rtype::A, TTL, Rdata::A(Ipv4Addr::LOCALHOST)));
                }
                rtype::AAAA if zone == LOCALHOST => {
                    q.resp
                        .answer(Record::at_question(rtype::AAAA, TTL, Rdata::Aaaa(Ipv6Addr::LOCALHOST)));
                }
                rtype::SOA => q.resp.answer(soa(Name::QUESTION)),
                rtype::NS => q
                    .resp
                    .answer(Record::at_question(rtype::NS, TTL, Rdata::Name(Name::wire(LOCALHOST)))),
                _ => q.resp.authority(soa(Name::QUESTION)),
            }
        } else if q.req.qname.wire() == LOOPBACK_PTR {
            if qtype == rtype::PTR {
                q.resp
                    .answer(Record::at_question(rtype::PTR, TTL, Rdata::Name(Name::wire(LOCALHOST))));
            } else {
                let zone = suffix_of_question(q, before);
                q.resp.authority(soa(zone));
            }
        } else {
            // No such name in the zone.
            q.resp.set_rcode(Rcode::NXDOMAIN);
            let zone = suffix_of_question(q, before);
            let _ = q.resp.push(Section::Authority, &soa(zone));
        }
        debug_assert!(q.req.qname_end > QNAME_OFFSET);
        Step::Answered
    }
}

impl Lifecycle for Local {
    /// `coredns_local_localhost_requests_total`: no labels (CoreDNS: "the client(s)
    /// performing these queries" matter more than the server); once per scrape however
    /// many blocks have `local`.
    fn metrics(&self, out: &mut Families) {
        if !out.first_from(Arc::as_ptr(&self.counter)) {
            return;
        }
        let n: u64 = self.counter.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
        out.counter(
            "coredns_local_localhost_requests_total",
            "Counter of special localhost subdomain requests.",
            &[],
            n as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use domain::base::Message;
    use domain::rdata::AllRecordData;

    use super::*;
    use crate::chain::Metadata;
    use crate::chain::testing::with_query;

    fn setup_from(corefile: &str) -> Result<Local, ConfigError> {
        crate::chain::testing::with_directives(corefile, |d, ctx| parse(d, ctx.process, 1))
    }

    /// CoreDNS's setup_test.go cases.
    #[test]
    fn setup_takes_localhost_prefix_on_or_off() {
        assert!(setup_from(". {\n    local\n}\n").unwrap().prefix);
        assert!(
            !setup_from(". {\n    local {\n        localhost_prefix off\n    }\n}\n")
                .unwrap()
                .prefix
        );
        assert!(
            setup_from(". {\n    local {\n        localhost_prefix on\n    }\n}\n")
                .unwrap()
                .prefix
        );
        // Every line is read; the last setting wins.
        assert!(
            !setup_from(". {\n    local\n    local {\n        localhost_prefix off\n    }\n}\n")
                .unwrap()
                .prefix
        );
        for (corefile, want) in [
            (
                ". {\n    local example.org\n}\n",
                "Corefile:2 - local: Wrong argument count or unexpected line ending after 'example.org'",
            ),
            (
                ". {\n    local {\n        localhost_prefix\n    }\n}\n",
                "Corefile:3 - local: Wrong argument count or unexpected line ending after 'localhost_prefix'",
            ),
            (
                ". {\n    local {\n        localhost_prefix on off\n    }\n}\n",
                "Corefile:3 - local: Wrong argument count or unexpected line ending after 'off'",
            ),
            (
                ". {\n    local {\n        localhost_prefix maybe\n    }\n}\n",
                "Corefile:3 - local: localhost_prefix expects 'on' or 'off', got \"maybe\"",
            ),
            (
                ". {\n    local {\n        prefix off\n    }\n}\n",
                "Corefile:3 - local: unknown property 'prefix'",
            ),
        ] {
            let err = setup_from(corefile).err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some(want), "{corefile}");
        }
    }

    /// What `local` answers for `name` `qtype`: None when it passes the query on;
    /// else the rcode, AA and every record as `owner TTL CLASS TYPE DATA`, sections
    /// separated by `|`.
    fn ask(l: &Local, name: &str, qtype: u16) -> Option<String> {
        // Built with `domain`, which keeps the letter case.
        let mut b = domain::base::MessageBuilder::new_vec();
        b.header_mut().set_id(5);
        let mut qb = b.question();
        let n: domain::base::Name<Vec<u8>> = name.parse().unwrap();
        qb.push((&n, domain::base::Rtype::from_int(qtype))).unwrap();
        let raw = qb.finish();
        with_query(&raw, "127.0.0.1:53".parse().unwrap(), Metadata::NONE, |q| {
            if !matches!(l.serve(q), Step::Answered) {
                return None;
            }
            let m = Message::from_octets(q.resp.finish().to_vec()).unwrap();
            let sec = |s: domain::base::message::RecordSection<'_, Vec<u8>>| {
                s.limit_to::<AllRecordData<_, _>>()
                    .map(|r| r.unwrap().to_string().split_whitespace().collect::<Vec<_>>().join(" "))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            Some(format!(
                "{}{} | {} | {}",
                m.header().rcode(),
                if m.header().aa() { " aa" } else { "" },
                sec(m.answer().unwrap()),
                sec(m.authority().unwrap()),
            ))
        })
    }

    const SOA_DATA: &str = "604800 IN SOA localhost. root.localhost. 1 0 0 0 604800";

    /// CoreDNS's local_test.go cases (the TestLocal table, TestLocalInterceptsLocalhost-
    /// PrefixByDefault), with more of the zones and case variants.
    #[test]
    fn the_local_zones_answer_as_coredns_does() {
        let l = setup_from(". {\n    local\n}\n").unwrap();
        let soa = |owner: &str| format!("{owner} {SOA_DATA}");
        let cases: Vec<(&str, u16, String)> = vec![
            (
                "localhost.",
                rtype::A,
                "NOERROR | localhost. 604800 IN A 127.0.0.1 | ".into(),
            ),
            (
                "localhost.",
                rtype::AAAA,
                "NOERROR | localhost. 604800 IN AAAA ::1 | ".into(),
            ),
            ("localhost.", rtype::SOA, format!("NOERROR | {} | ", soa("localhost."))),
            (
                "localhost.",
                rtype::NS,
                "NOERROR | localhost. 604800 IN NS localhost. | ".into(),
            ),
            ("localhost.", rtype::MX, format!("NOERROR |  | {}", soa("localhost."))),
            (
                "LocalHost.",
                rtype::A,
                "NOERROR | LocalHost. 604800 IN A 127.0.0.1 | ".into(),
            ),
            (
                "127.in-addr.arpa.",
                rtype::A,
                format!("NOERROR |  | {}", soa("127.in-addr.arpa.")),
            ),
            (
                "127.in-addr.arpa.",
                rtype::NS,
                "NOERROR | 127.in-addr.arpa. 604800 IN NS localhost. | ".into(),
            ),
            (
                "0.in-addr.arpa.",
                rtype::SOA,
                format!("NOERROR | {} | ", soa("0.in-addr.arpa.")),
            ),
            (
                "255.in-addr.arpa.",
                rtype::PTR,
                format!("NOERROR |  | {}", soa("255.in-addr.arpa.")),
            ),
            (
                "1.0.0.127.in-addr.arpa.",
                rtype::PTR,
                "NOERROR | 1.0.0.127.in-addr.arpa. 604800 IN PTR localhost. | ".into(),
            ),
            (
                "1.0.0.127.IN-ADDR.arpa.",
                rtype::A,
                format!("NOERROR |  | {}", soa("127.IN-ADDR.arpa.")),
            ),
            (
                "2.0.0.127.in-addr.arpa.",
                rtype::PTR,
                format!("NXDOMAIN |  | {}", soa("127.in-addr.arpa.")),
            ),
            (
                "1.0.0.0.in-addr.arpa.",
                rtype::PTR,
                format!("NXDOMAIN |  | {}", soa("0.in-addr.arpa.")),
            ),
            (
                "255.255.255.255.in-addr.arpa.",
                rtype::PTR,
                format!("NXDOMAIN |  | {}", soa("255.in-addr.arpa.")),
            ),
            // Names below localhost. (RFC 6761 6.3), and the legacy prefix form.
            (
                "a.localhost.",
                rtype::A,
                "NOERROR | a.localhost. 604800 IN A 127.0.0.1 | ".into(),
            ),
            (
                "a.b.Localhost.",
                rtype::AAAA,
                "NOERROR | a.b.Localhost. 604800 IN AAAA ::1 | ".into(),
            ),
            (
                "a.localhost.",
                rtype::TXT,
                format!("NOERROR |  | {}", soa("a.localhost.")),
            ),
            (
                "localhost.example.org.",
                rtype::A,
                "NOERROR | localhost.example.org. 604800 IN A 127.0.0.1 | ".into(),
            ),
            (
                "localhost.localhost.",
                rtype::A,
                "NOERROR | localhost.localhost. 604800 IN A 127.0.0.1 | ".into(),
            ),
        ];
        for (name, qtype, want) in cases {
            assert_eq!(ask(&l, name, qtype).as_deref(), Some(want.as_str()), "{name} {qtype}");
        }
        // Five of those were the counted kind (below localhost., or the prefix form).
        assert_eq!(l.counter[0].0.load(Ordering::Relaxed), 5);
        for name in [
            "example.org.",
            "localhostx.example.org.",
            "x.localhost.example.org.",
            "128.in-addr.arpa.",
            ".",
        ] {
            assert_eq!(ask(&l, name, rtype::A), None, "{name}");
        }
        // The ip6.arpa. loopback is not intercepted (README "Bugs").
        assert_eq!(
            ask(
                &l,
                "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
                rtype::PTR
            ),
            None
        );
    }

    /// `localhost_prefix off` (TestLocalDoesNotInterceptLocalhostPrefixWhenDisabled):
    /// only names below localhost. are loopback (RFC 6761).
    #[test]
    fn without_the_prefix_form_only_names_below_localhost_are_loopback() {
        let l = setup_from(". {\n    local {\n        localhost_prefix off\n    }\n}\n").unwrap();
        assert_eq!(ask(&l, "localhost.example.org.", rtype::A), None);
        assert_eq!(
            ask(&l, "a.localhost.", rtype::A).as_deref(),
            Some("NOERROR | a.localhost. 604800 IN A 127.0.0.1 | ")
        );
        assert_eq!(l.counter[0].0.load(Ordering::Relaxed), 1);
        let mut out = Families::default();
        l.metrics(&mut out);
        assert!(
            out.render().contains("\ncoredns_local_localhost_requests_total 1\n"),
            "{}",
            out.render()
        );
    }
}
