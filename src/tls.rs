//! TLS configurations for DNS over TLS (RFC 7858), both ends, built with rustls (the
//! `ring` provider; no OpenSSL): the server side of `tls://` blocks (the `tls` plugin's
//! `CERT KEY [CA] { client_auth ... keylog ... }`) and the client side of `forward . tls://`
//! (`tls [CERT KEY] [CA]`, `tls_servername`). Only configurations live here: the sessions
//! themselves are driven by the worker over its own non-blocking sockets
//! (`server::stream`), and no socket is touched in this module.
//!
//! ```text
//!   plugin/tls (syntax) ─▶ ServerSettings ─load─▶ ServerTls  ─▶ server::build: tls:// listeners
//!   plugin/forward      ─▶ client_config  ─────▶ Upstream   ─▶ chain::UpstreamProto::Tls
//! ```
//!
//! As CoreDNS's `plugin/pkg/tls`: TLS 1.2 is the minimum; with no CA file the system's
//! certificate bundle is used to verify the other end.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::config::read::{MAX_FILE_BYTES, read_regular};
use crate::config::{ConfigError, Loc};

/// The system certificate bundles looked for, in order, when no CA file is given (the
/// places Go's `crypto/x509` reads on Linux, which is what CoreDNS uses); `SSL_CERT_FILE`
/// comes first when set.
const SYSTEM_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The DNS-over-TLS port (RFC 7858 section 3.1): `tls://` upstreams without a port.
pub const DOT_PORT: u16 = 853;

/// The crypto provider every configuration uses: *ring*. rustls 0.23.48 deprecates it
/// because it has no post-quantum key exchange (X25519MLKEM768, which Go, and so
/// CoreDNS, offers by default); aws-lc-rs has it, at the price of a C build of aws-lc in
/// every build (README: "Differences from CoreDNS" in plugin/tls).
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 and 1.2: CoreDNS's minimum is 1.2.
const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// `client_auth`: how the server treats client certificates (Go's `ClientAuthType`,
/// whose names CoreDNS's `tls` plugin takes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// `nocert`: none is asked for (the default).
    #[default]
    NoCert,
    /// `request`: asked for, not required, not verified.
    Request,
    /// `require`: required, not verified against a CA.
    Require,
    /// `verify_if_given`: not required; verified when given.
    VerifyIfGiven,
    /// `require_and_verify`: required and verified.
    RequireAndVerify,
}

impl ClientAuth {
    /// The keyword's meaning, `None` for an unknown one.
    pub fn from_keyword(s: &str) -> Option<ClientAuth> {
        Some(match s {
            "nocert" => ClientAuth::NoCert,
            "request" => ClientAuth::Request,
            "require" => ClientAuth::Require,
            "verify_if_given" => ClientAuth::VerifyIfGiven,
            "require_and_verify" => ClientAuth::RequireAndVerify,
            _ => return None,
        })
    }
}

/// The `tls` plugin's options, as written (paths not yet resolved nor read): what a
/// `tls://` block's listeners need, carried in the block's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    pub cert: String,
    pub key: String,
    pub ca: Option<String>,
    pub client_auth: ClientAuth,
    /// `keylog FILE`: the session secrets are appended there (for debugging only).
    pub keylog: Option<String>,
    /// Where the directive was written (errors from loading the files point there).
    pub loc: Loc,
}

/// A server's TLS configuration, loaded: what a `tls://` listener hands every new
/// connection. Equal only to itself (one per configuration generation).
#[derive(Clone)]
pub struct ServerTls(pub Arc<ServerConfig>);

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls")
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl ServerSettings {
    /// Reads the certificate chain, the key and the CA, relative paths from `dir` (the
    /// Corefile's directory), and builds the server configuration.
    pub fn load(&self, dir: &Path) -> Result<ServerTls, ConfigError> {
        let err = |m: String| ConfigError::at(&self.loc, format!("tls: {m}"));
        let (certs, key) = cert_and_key(&path_in(dir, &self.cert), &path_in(dir, &self.key)).map_err(err)?;
        let roots = || -> Result<Arc<RootCertStore>, ConfigError> {
            let store = match &self.ca {
                Some(ca) => roots_from(&path_in(dir, ca)).map_err(err)?,
                None => system_roots().map_err(err)?,
            };
            Ok(Arc::new(store))
        };
        let p = provider();
        let verifier: Arc<dyn ClientCertVerifier> = match self.client_auth {
            ClientAuth::NoCert => WebPkiClientVerifier::no_client_auth(),
            ClientAuth::Request | ClientAuth::Require => Arc::new(AnyClientCert {
                mandatory: self.client_auth == ClientAuth::Require,
                algorithms: p.signature_verification_algorithms,
            }),
            ClientAuth::VerifyIfGiven => WebPkiClientVerifier::builder_with_provider(roots()?, p.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| err(format!("client CA: {e}")))?,
            ClientAuth::RequireAndVerify => WebPkiClientVerifier::builder_with_provider(roots()?, p.clone())
                .build()
                .map_err(|e| err(format!("client CA: {e}")))?,
        };
        let mut config = ServerConfig::builder_with_provider(p)
            .with_protocol_versions(VERSIONS)
            .map_err(|e| err(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| err(cert_error(e)))?;
        if let Some(file) = &self.keylog {
            config.key_log = Arc::new(KeyLogFile::open(&path_in(dir, file)).map_err(err)?);
        }
        Ok(ServerTls(Arc::new(config)))
    }
}

/// A TLS upstream of `forward`: the client configuration and the name its certificate
/// must carry (`tls_servername`, or the upstream's address). Equal only to itself.
pub struct Upstream {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tls::Upstream({:?})", self.server_name)
    }
}

impl PartialEq for Upstream {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Upstream {}

impl Upstream {
    /// A new client session for this upstream.
    pub fn session(&self) -> Result<rustls::ClientConnection, rustls::Error> {
        rustls::ClientConnection::new(self.config.clone(), self.server_name.clone())
    }
}

/// The name a server's certificate is checked against: a DNS name, or an IP address
/// (then the certificate needs it as an IP SAN, as Go checks when `ServerName` is empty).
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(name.to_owned()).map_err(|_| format!("invalid TLS server name '{name}'"))
}

/// A client configuration from `forward`'s `tls` arguments (CoreDNS's
/// `NewTLSConfigFromArgs`): none (system CAs), `CA`, `CERT KEY` (system CAs) or
/// `CERT KEY CA`. Relative paths are taken from `dir`.
pub fn client_config(args: &[&str], dir: &Path) -> Result<Arc<ClientConfig>, String> {
    let (cert_key, ca) = match args {
        [] => (None, None),
        [ca] => (None, Some(*ca)),
        [cert, key] => (Some((*cert, *key)), None),
        [cert, key, ca] => (Some((*cert, *key)), Some(*ca)),
        _ => {
            return Err(format!(
                "maximum of three arguments allowed for TLS config, found {}",
                args.len()
            ));
        }
    };
    let roots = match ca {
        Some(ca) => roots_from(&path_in(dir, ca))?,
        // As Go, which reads the system pool when it first verifies: a host without a
        // bundle starts, and every upstream certificate is refused (said once, here).
        None => system_roots().unwrap_or_else(|m| {
            log::warn!(target: "plugin/forward", "{m}: no tls:// upstream's certificate can be verified");
            RootCertStore::empty()
        }),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match cert_key {
        Some((cert, key)) => {
            let (certs, key) = cert_and_key(&path_in(dir, cert), &path_in(dir, key))?;
            builder.with_client_auth_cert(certs, key).map_err(cert_error)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A certificate and key rustls refused, in words for the operator (CoreDNS: `could
/// not load TLS cert: ...`).
fn cert_error(e: rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => {
            "could not load TLS cert: the private key does not match the certificate".into()
        }
        e => format!("could not load TLS cert: {e}"),
    }
}

fn path_in(dir: &Path, p: &str) -> PathBuf {
    dir.join(p)
}

/// A PEM file's bytes (a regular file of at most 1 MiB, like every file the Corefile
/// names).
fn read_pem(path: &Path) -> Result<Vec<u8>, String> {
    read_regular(path, MAX_FILE_BYTES).map_err(|e| format!("error reading {}: {e}", path.display()))
}

/// A certificate chain and its private key (CoreDNS: `could not load TLS cert: ...`).
fn cert_and_key(cert: &Path, key: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let bad = |m: String| format!("could not load TLS cert: {m}");
    let pem = read_pem(cert).map_err(bad)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("{}: {e:?}", cert.display())))?;
    if certs.is_empty() {
        return Err(bad(format!("{}: no certificate found", cert.display())));
    }
    let pem = read_pem(key).map_err(bad)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad(format!("{}: {e:?}", key.display())))?;
    Ok((certs, key))
}

/// The certificates of a CA file (CoreDNS: `could not read root certs`).
fn roots_from(path: &Path) -> Result<RootCertStore, String> {
    let pem = read_pem(path)?;
    let mut store = RootCertStore::empty();
    let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("could not read root certs: none in {}", path.display()));
    }
    Ok(store)
}

/// The system's certificate bundle: `SSL_CERT_FILE`, or the first standard path there is.
fn system_roots() -> Result<RootCertStore, String> {
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let found = env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file());
    match found {
        Some(p) => roots_from(&p),
        None => {
            Err("no CA file given and no system certificate bundle found (set SSL_CERT_FILE or give the CA)".into())
        }
    }
}

/// `client_auth request|require`: a client certificate is asked for (and, with
/// `require`, must be sent), but not checked against any CA, as Go's
/// `RequestClientCert` and `RequireAnyClientCert`. The handshake signature is still
/// checked: the client must hold the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `keylog FILE`: session secrets in the NSS key log format, appended to a file
/// opened 0600 at start-up (as CoreDNS). A debugging aid that compromises every
/// session it logs: a warning says so. The write happens during a handshake, on the
/// worker; a slow disk slows handshakes, nothing else.
struct KeyLogFile {
    file: Mutex<std::fs::File>,
}

impl fmt::Debug for KeyLogFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyLogFile")
    }
}

impl KeyLogFile {
    fn open(path: &Path) -> Result<KeyLogFile, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("unable to write TLS Key Log to \"{}\": {e}", path.display()))?;
        log::warn!(target: "plugin/tls", "Writing TLS Key Log to \"{}\"", path.display());
        Ok(KeyLogFile { file: Mutex::new(file) })
    }
}

impl rustls::KeyLog for KeyLogFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let mut line = String::with_capacity(label.len() + 2 + 2 * (client_random.len() + secret.len()) + 1);
        line.push_str(label);
        line.push(' ');
        for b in client_random {
            line.push_str(&format!("{b:02x}"));
        }
        line.push(' ');
        for b in secret {
            line.push_str(&format!("{b:02x}"));
        }
        line.push('\n');
        let _ = self.file.lock().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_dns_names_or_addresses() {
        assert!(matches!(server_name("dns.quad9.net"), Ok(ServerName::DnsName(_))));
        assert!(matches!(server_name("9.9.9.9"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(server_name("2620:fe::fe"), Ok(ServerName::IpAddress(_))));
        assert_eq!(
            server_name("not a name").unwrap_err(),
            "invalid TLS server name 'not a name'"
        );
    }

    // CoreDNS plugin/pkg/tls NewTLSConfigFromArgs: zero to three arguments.
    #[test]
    fn client_configs_take_at_most_three_arguments() {
        assert_eq!(
            client_config(&["a", "b", "c", "d"], Path::new(".")).unwrap_err(),
            "maximum of three arguments allowed for TLS config, found 4"
        );
        assert_eq!(
            client_config(&["/nonexistent/ca.pem"], Path::new(".")).unwrap_err(),
            "error reading /nonexistent/ca.pem: No such file or directory (os error 2)"
        );
    }
}
