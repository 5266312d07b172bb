//! `chaos`: answers TXT queries of the CHAOS class for the names servers use to say
//! who they are (`version.bind`, `authors.bind`, `hostname.bind` and the RFC 4892
//! `version.server`, `id.server`), as CoreDNS's plugin of that name does (README.md
//! beside this file).
//!
//! Every answer is prepared at setup (the host name is read then): a query costs a
//! name comparison and the records written; `authors.bind` shuffles the authors in a
//! fixed-size array on the stack.

use crate::chain::{Handler, Query, Step};
use crate::config::{ConfigError, Directive};
use crate::dns::{Rcode, Rdata, Record, Section, class, rtype};
use crate::plugin::{hostname, once};
use crate::setup::{Plugin, SetupCtx};

/// The directive name, and the prefix of its errors.
const NAME: &str = "chaos";

/// The longest TXT character string (RFC 1035 3.3): longer values are cut, as
/// CoreDNS's `trim` does.
const MAX_STRING: usize = 255;

/// Authors a `chaos` line may name: what one shuffle array on the stack holds (a reply
/// of 256 full-length strings is already past the 64 KiB of a TCP message).
pub const MAX_AUTHORS: usize = 256;

/// What `authors.bind` answers when the Corefile names nobody. CoreDNS answers the
/// GitHub handles of its OWNERS files; clusterdns keeps no such list.
const DEFAULT_AUTHORS: &[&str] = &["clusterdns maintainers"];

/// The plugin: the answers it gives.
pub struct Chaos {
    /// `version.bind`, `version.server`.
    version: Box<[u8]>,
    /// `authors.bind`: one TXT record each, in a new random order for every query.
    authors: Box<[Box<[u8]>]>,
    /// `hostname.bind`, `id.server`.
    host: Box<[u8]>,
}

/// The names answered, lower-cased wire form.
const VERSION_BIND: &[u8] = b"\x07version\x04bind\x00";
const VERSION_SERVER: &[u8] = b"\x07version\x06server\x00";
const AUTHORS_BIND: &[u8] = b"\x07authors\x04bind\x00";
const HOSTNAME_BIND: &[u8] = b"\x08hostname\x04bind\x00";
const ID_SERVER: &[u8] = b"\x02id\x06server\x00";

/// The version `version.bind` answers by default: this program's, named as such
/// (CoreDNS answers `CoreDNS-<its version>`).
pub fn default_version() -> String {
    format!("clusterdns-{}", crate::VERSION)
}

/// `s` cut to [`MAX_STRING`] bytes, on a character boundary.
fn trim(s: &str) -> Box<[u8]> {
    let mut end = s.len().min(MAX_STRING);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.as_bytes()[..end].into()
}

/// Parses `chaos [VERSION] [AUTHORS...]`.
pub fn setup(dirs: &[&Directive], _: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    Ok(Plugin::handler(parse(dirs)?))
}

fn parse(dirs: &[&Directive]) -> Result<Chaos, ConfigError> {
    let d = once(NAME, dirs)?;
    d.expect_no_block(NAME)?;
    let args = d.arg_strs();
    let version = match args.first() {
        Some(v) => trim(v),
        None => trim(&default_version()),
    };
    let authors: Vec<Box<[u8]>> = if args.len() > 1 {
        // CoreDNS keeps each author once, sorted.
        let mut list: Vec<&str> = args[1..].to_vec();
        list.sort_unstable();
        list.dedup();
        if list.len() > MAX_AUTHORS {
            return Err(d.err(NAME, format_args!("at most {MAX_AUTHORS} authors, got {}", list.len())));
        }
        list.into_iter().map(trim).collect()
    } else {
        DEFAULT_AUTHORS.iter().map(|a| trim(a)).collect()
    };
    Ok(Chaos {
        version,
        authors: authors.into(),
        host: trim(&hostname()),
    })
}

impl Chaos {
    /// Writes one CH TXT record owned by the question name, TTL 0 (CoreDNS's header).
    fn txt(q: &mut Query<'_, '_>, text: &[u8]) {
        let rr = Record::at_question(rtype::TXT, 0, Rdata::Txt(text));
        let _ = q.resp.push_in_class(Section::Answer, &rr, class::CH);
    }
}

impl Handler for Chaos {
    fn name(&self) -> &'static str {
        NAME
    }

    /// A CH TXT query for one of the five names is answered, NOERROR, not
    /// authoritative; anything else (another class or type, another name) goes to the
    /// next plugin, as in CoreDNS (with none left, SERVFAIL).
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        if q.req.qclass != class::CH || q.req.qtype != rtype::TXT {
            return Step::Next;
        }
        match q.req.qname.wire() {
            VERSION_BIND | VERSION_SERVER => {
                q.resp.start(q.req, Rcode::NOERROR);
                Chaos::txt(q, &self.version);
            }
            HOSTNAME_BIND | ID_SERVER => {
                q.resp.start(q.req, Rcode::NOERROR);
                Chaos::txt(q, &self.host);
            }
            AUTHORS_BIND => {
                q.resp.start(q.req, Rcode::NOERROR);
                // A random order each time (CoreDNS: rand.Perm), by Fisher-Yates.
                let n = self.authors.len();
                let mut order = [0u8; MAX_AUTHORS];
                for (i, o) in order[..n].iter_mut().enumerate() {
                    *o = i as u8;
                }
                for i in (1..n).rev() {
                    let j = q.worker.rng.below(i + 1);
                    order.swap(i, j);
                }
                for &i in &order[..n] {
                    Chaos::txt(q, &self.authors[i as usize]);
                }
            }
            _ => return Step::Next,
        }
        Step::Answered
    }

    /// CoreDNS lets CH queries in once a `chaos` plugin is configured.
    fn handles_class(&self, c: u16) -> bool {
        c == class::CH
    }
}

#[cfg(test)]
mod tests {
    use domain::base::Message;
    use domain::base::iana::Class;
    use domain::rdata::AllRecordData;

    use super::*;
    use crate::chain::Metadata;
    use crate::chain::testing::with_query;

    fn setup_from(corefile: &str) -> Result<Chaos, ConfigError> {
        crate::chain::testing::with_directives(corefile, |d, _| parse(d))
    }

    /// A query for `name` of `qtype` and `qclass`, built with `domain`.
    fn query(name: &str, qtype: u16, qclass: u16) -> Vec<u8> {
        let mut b = domain::base::MessageBuilder::new_vec();
        b.header_mut().set_id(0x4242);
        b.header_mut().set_rd(true);
        let mut qb = b.question();
        let n: domain::base::Name<Vec<u8>> = name.parse().unwrap();
        qb.push((&n, domain::base::Rtype::from_int(qtype), Class::from_int(qclass)))
            .unwrap();
        qb.finish()
    }

    /// What the plugin does with the query: `None` when it passes it on, else the
    /// answer section as `owner TTL CLASS TYPE DATA` lines and whether AA is set.
    fn ask(chaos: &Chaos, name: &str, qtype: u16, qclass: u16) -> Option<(Vec<String>, bool)> {
        let raw = query(name, qtype, qclass);
        with_query(&raw, "127.0.0.1:5300".parse().unwrap(), Metadata::NONE, |q| {
            if !matches!(chaos.serve(q), Step::Answered) {
                return None;
            }
            let msg = Message::from_octets(q.resp.finish().to_vec()).unwrap();
            assert_eq!(msg.header().rcode(), domain::base::iana::Rcode::NOERROR);
            let answer = msg
                .answer()
                .unwrap()
                .limit_to::<AllRecordData<_, _>>()
                .map(|r| r.unwrap().to_string().split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            Some((answer, msg.header().aa()))
        })
    }

    fn chaos(corefile: &str) -> Chaos {
        setup_from(corefile).unwrap()
    }

    /// CoreDNS's chaos_test.go cases: each name, the version and authors given.
    #[test]
    fn the_five_names_are_answered_in_the_chaos_class() {
        let c = chaos(". {\n    chaos CoreDNS-001 Miek Ben\n}\n");
        let host = String::from_utf8(c.host.to_vec()).unwrap();
        for name in ["version.bind", "version.server", "VERSION.Bind"] {
            assert_eq!(
                ask(&c, name, rtype::TXT, class::CH),
                Some((vec![format!("{name}. 0 CH TXT \"CoreDNS-001\"")], false))
            );
        }
        for name in ["hostname.bind", "id.server"] {
            assert_eq!(
                ask(&c, name, rtype::TXT, class::CH),
                Some((vec![format!("{name}. 0 CH TXT \"{host}\"")], false))
            );
        }
        let (mut authors, _) = ask(&c, "authors.bind", rtype::TXT, class::CH).unwrap();
        authors.sort();
        assert_eq!(
            authors,
            ["authors.bind. 0 CH TXT \"Ben\"", "authors.bind. 0 CH TXT \"Miek\""]
        );
        // Other names, types and classes go on to the next plugin.
        assert_eq!(ask(&c, "example.org", rtype::TXT, class::CH), None);
        assert_eq!(ask(&c, "version.bind", rtype::A, class::CH), None);
        assert_eq!(ask(&c, "version.bind", rtype::TXT, class::IN), None);
        assert_eq!(ask(&c, "version.bind", rtype::TXT, class::ANY), None);
        assert_eq!(ask(&c, "x.version.bind", rtype::TXT, class::CH), None);
        assert!(c.handles_class(class::CH));
        assert!(!c.handles_class(class::HS) && !c.handles_class(class::ANY));
    }

    #[test]
    fn authors_come_in_every_order() {
        let c = chaos(". {\n    chaos v a b c d\n}\n");
        let mut orders = std::collections::HashSet::new();
        for _ in 0..200 {
            let (authors, _) = ask(&c, "authors.bind", rtype::TXT, class::CH).unwrap();
            assert_eq!(authors.len(), 4);
            orders.insert(authors);
        }
        // 24 orders; 200 draws miss one with probability under 24 * (23/24)^200 < 1e-2.
        assert!(orders.len() >= 20, "{}", orders.len());
    }

    /// CoreDNS's setup_test.go: the defaults, one argument, authors de-duplicated and
    /// cut to 255 bytes; a block is refused.
    #[test]
    fn setup_defaults_and_errors() {
        let c = chaos(". {\n    chaos\n}\n");
        assert_eq!(&*c.version, default_version().as_bytes());
        assert!(default_version().starts_with("clusterdns-"));
        assert_eq!(c.authors.len(), DEFAULT_AUTHORS.len());
        let c = chaos(". {\n    chaos v1\n}\n");
        assert_eq!(&*c.version, b"v1");
        assert_eq!(c.authors.len(), DEFAULT_AUTHORS.len());
        let c = chaos(". {\n    chaos v1 b a b\n}\n");
        assert_eq!(c.authors, vec![b"a"[..].into(), b"b"[..].into()].into());
        let long = "x".repeat(300);
        let c = chaos(&format!(". {{\n    chaos {long} {long}\n}}\n"));
        assert_eq!(c.version.len(), 255);
        assert_eq!(c.authors[0].len(), 255);
        let many: Vec<String> = (0..=MAX_AUTHORS).map(|i| format!("a{i}")).collect();
        for (corefile, want) in [
            (
                ". {\n    chaos v1 {\n        authors x\n    }\n}\n".to_string(),
                "Corefile:3 - chaos: unknown property 'authors'".to_string(),
            ),
            (
                ". {\n    chaos\n    chaos\n}\n".to_string(),
                "Corefile:3 - chaos: this plugin can only be used once per Server Block".to_string(),
            ),
            (
                format!(". {{\n    chaos v {}\n}}\n", many.join(" ")),
                "Corefile:2 - chaos: at most 256 authors, got 257".to_string(),
            ),
        ] {
            let err = setup_from(&corefile).err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some(want.as_str()), "{corefile}");
        }
        // An empty block is no option.
        assert!(setup_from(". {\n    chaos v1 {\n    }\n}\n").is_ok());
    }
}
