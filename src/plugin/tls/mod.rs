//! `tls`: the certificate, key and client policy of a `tls://` server block (README.md
//! beside this file). Like `bind`, it configures the block's listeners, not the chain:
//! it parses into [`ServerSettings`]; the server build reads the files
//! ([`ServerSettings::load`]) and the workers run the sessions.

use crate::config::{ConfigError, Directive};
use crate::settings::BlockSettings;
use crate::tls::{ClientAuth, ServerSettings};

const NAME: &str = "tls";

/// The table's entry: the block's TLS settings.
pub fn configure(dirs: &[&Directive], block: &mut BlockSettings) -> Result<(), ConfigError> {
    block.tls = Some(parse(dirs)?);
    Ok(())
}

/// Parses `tls CERT KEY [CA] { client_auth TYPE; keylog FILE }` (CoreDNS's
/// `parseManualTLS`, plugin/tls/tls.go).
pub fn parse(dirs: &[&Directive]) -> Result<ServerSettings, ConfigError> {
    if let [_, second, ..] = dirs {
        // CoreDNS: "TLS already configured for this server instance".
        return Err(second.err(NAME, "TLS already configured for this server instance"));
    }
    let d = dirs[0];
    if d.args.is_empty() {
        // `tls { acme ... }`: certificates from an ACME CA, which needs an HTTP client
        // and a DNS-01 responder clusterdns does not have.
        return Err(d.err(
            NAME,
            "automatic certificates (ACME) are not supported by clusterdns: give CERT and KEY",
        ));
    }
    d.expect_args(NAME, 2, 3)?;
    let mut s = ServerSettings {
        cert: d.args[0].text.clone(),
        key: d.args[1].text.clone(),
        ca: d.args.get(2).map(|t| t.text.clone()),
        client_auth: ClientAuth::NoCert,
        keylog: None,
        loc: d.loc().clone(),
    };
    for opt in d.options() {
        match opt.name.as_str() {
            "client_auth" => {
                opt.expect_args(NAME, 1, 1)?;
                let a = &opt.args[0];
                s.client_auth = ClientAuth::from_keyword(a.as_str()).ok_or_else(|| {
                    ConfigError::at(&a.loc, format!("{NAME}: unknown authentication type '{}'", a.as_str()))
                })?;
            }
            "keylog" => {
                opt.expect_args(NAME, 1, 1)?;
                s.keylog = Some(opt.args[0].text.clone());
            }
            other => return Err(opt.err(NAME, format!("unknown option '{other}'"))),
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn parsed(body: &str) -> Result<ServerSettings, String> {
        let c = parse_str(
            &format!("tls://.:853 {{\n{body}\n}}\n"),
            "Corefile",
            std::path::Path::new("."),
        )
        .unwrap();
        let dirs: Vec<&Directive> = c.blocks[0].directives.iter().filter(|d| d.name.text == "tls").collect();
        parse(&dirs).map_err(|e| e.to_string())
    }

    // CoreDNS plugin/tls/tls_test.go TestTLS and TestTLSClientAuthentication: every
    // keyword maps to its Go ClientAuthType; no block means nocert.
    #[test]
    fn client_auth_keywords() {
        let cases = [
            ("", ClientAuth::NoCert),
            ("{\nclient_auth nocert\n}", ClientAuth::NoCert),
            ("{\nclient_auth request\n}", ClientAuth::Request),
            ("{\nclient_auth require\n}", ClientAuth::Require),
            ("{\nclient_auth verify_if_given\n}", ClientAuth::VerifyIfGiven),
            ("{\nclient_auth require_and_verify\n}", ClientAuth::RequireAndVerify),
        ];
        for (opt, want) in cases {
            let s = parsed(&format!("tls cert.pem key.pem ca.pem {opt}")).unwrap();
            assert_eq!(s.client_auth, want, "{opt}");
            assert_eq!(
                (s.cert.as_str(), s.key.as_str(), s.ca.as_deref()),
                ("cert.pem", "key.pem", Some("ca.pem"))
            );
        }
        assert_eq!(parsed("tls c.pem k.pem").unwrap().ca, None);
        assert_eq!(
            parsed("tls c.pem k.pem {\nkeylog /tmp/x.log\n}")
                .unwrap()
                .keylog
                .as_deref(),
            Some("/tmp/x.log")
        );
    }

    // CoreDNS tls_test.go negative cases: "unknown option", "Wrong argument",
    // "unknown authentication type"; and parseManualTLS's argument count (2 or 3).
    #[test]
    fn errors() {
        let cases = [
            ("tls c k ca {\nunknown\n}", "Corefile:3 - tls: unknown option 'unknown'"),
            (
                "tls c k ca {\nclient_auth\n}",
                "Corefile:3 - tls: Wrong argument count or unexpected line ending after 'client_auth'",
            ),
            (
                "tls c k ca {\nclient_auth none bogus\n}",
                "Corefile:3 - tls: Wrong argument count or unexpected line ending after 'bogus'",
            ),
            (
                "tls c k ca {\nclient_auth bogus\n}",
                "Corefile:3 - tls: unknown authentication type 'bogus'",
            ),
            (
                "tls c k ca {\nkeylog\n}",
                "Corefile:3 - tls: Wrong argument count or unexpected line ending after 'keylog'",
            ),
            (
                "tls c",
                "Corefile:2 - tls: Wrong argument count or unexpected line ending after 'c'",
            ),
            (
                "tls a b c d",
                "Corefile:2 - tls: Wrong argument count or unexpected line ending after 'd'",
            ),
            (
                "tls c k\ntls c k",
                "Corefile:3 - tls: TLS already configured for this server instance",
            ),
            (
                "tls {\nacme dns.example.org\n}",
                "Corefile:2 - tls: automatic certificates (ACME) are not supported by clusterdns: give CERT and KEY",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parsed(body).unwrap_err(), want, "{body}");
        }
    }
}
