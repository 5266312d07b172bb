//! DNS over TLS for the tests: certificates made in the test ([`Pki`]: a self-signed
//! CA and leaves it signs, with rcgen), a blocking rustls client that asks over DoT
//! ([`DotClient`], pipelining allowed), and a TLS upstream for `forward . tls://`
//! ([`TlsFront`]: terminates TLS and relays each message to a plain TCP server, usually
//! a [`crate::upstream::FakeUpstream`], so its answers and records serve DoT too).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

/// The provider both ends use (the one clusterdns uses).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA made for one test, writing its files into a directory.
pub struct Pki {
    dir: PathBuf,
    /// The CA certificate (PEM), for `tls CERT KEY CA` and the clients.
    pub ca: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA named `name`, its certificate written to `dir/NAME-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).expect("write ca");
        Pki {
            dir: dir.to_path_buf(),
            ca,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate for these names (DNS names, or IP addresses as IP SANs),
    /// signed by this CA, written as `dir/FILE.pem` and `dir/FILE-key.pem`.
    pub fn leaf(&self, file: &str, names: &[&str]) -> Pair {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("leaf params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let pair = Pair {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}-key.pem")),
        };
        std::fs::write(&pair.cert, cert.pem()).expect("write cert");
        std::fs::write(&pair.key, key.serialize_pem()).expect("write key");
        pair
    }

    /// A client configuration trusting this CA, with a client certificate if given.
    pub fn client_config(&self, client: Option<&Pair>) -> Arc<ClientConfig> {
        client_config(&self.ca, client)
    }
}

/// A client configuration that trusts the CA in `ca`, presenting `client` if given.
pub fn client_config(ca: &Path, client: Option<&Pair>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("read ca") {
        roots.add(c.expect("ca pem")).expect("add ca");
    }
    let b = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    Arc::new(match client {
        Some(p) => b
            .with_client_auth_cert(certs(&p.cert), key(&p.key))
            .expect("client cert"),
        None => b.with_no_client_auth(),
    })
}

/// A server configuration with this certificate, asking no client certificate.
pub fn server_config(pair: &Pair) -> Arc<ServerConfig> {
    Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs(&pair.cert), key(&pair.key))
            .expect("server cert"),
    )
}

fn certs(p: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(p)
        .expect("read cert")
        .map(|c| c.expect("cert pem"))
        .collect()
}

fn key(p: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(p).expect("read key")
}

/// A blocking DNS-over-TLS client on one connection (several queries may be written
/// before any reply is read: pipelining, RFC 7766 section 6.2.1.1).
pub struct DotClient {
    tls: StreamOwned<ClientConnection, TcpStream>,
}

impl DotClient {
    /// Connects to `to` and completes the handshake, checking the server's certificate
    /// against `name` (a DNS name or an IP address). Fails with the handshake's error.
    pub fn connect(to: SocketAddr, name: &str, config: Arc<ClientConfig>) -> std::io::Result<DotClient> {
        let sock = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
        sock.set_write_timeout(Some(Duration::from_secs(5)))?;
        let name = ServerName::try_from(name.to_owned()).map_err(std::io::Error::other)?;
        let session = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
        let mut tls = StreamOwned::new(session, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(DotClient { tls })
    }

    /// Writes one length-prefixed message (not flushed past the TLS layer's buffering:
    /// several sends go out together).
    pub fn send(&mut self, msg: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(&crate::wire::framed(msg))?;
        self.tls.flush()
    }

    /// Reads one length-prefixed message.
    pub fn recv(&mut self) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 2];
        self.tls.read_exact(&mut len)?;
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        self.tls.read_exact(&mut msg)?;
        Ok(msg)
    }

    /// One query, one reply.
    pub fn ask(&mut self, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        self.send(msg)?;
        self.recv()
    }
}

/// A DNS-over-TLS upstream: accepts TLS connections (a thread each, bounded by the
/// test) and relays each message, over one plain TCP connection per TLS connection, to
/// `backend` (a FakeUpstream's address), writing the replies back in order.
pub struct TlsFront {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TlsFront {
    /// Listens on a free loopback port with `config`, relaying to `backend`.
    pub fn start(config: Arc<ServerConfig>, backend: SocketAddr) -> TlsFront {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind tls front");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut conns = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                            let config = config.clone();
                            let stop = stop.clone();
                            conns.push(std::thread::spawn(move || relay(sock, config, backend, &stop)));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                for c in conns {
                    let _ = c.join();
                }
            })
        };
        TlsFront {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TLS connections accepted so far (a reused connection counts once).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One TLS connection of a [`TlsFront`]: each message to the backend and back.
fn relay(sock: TcpStream, config: Arc<ServerConfig>, backend: SocketAddr, stop: &AtomicBool) {
    let _ = sock.set_nonblocking(false);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(session) = ServerConnection::new(config) else {
        return;
    };
    let mut tls = StreamOwned::new(session, sock);
    let Ok(mut back) = TcpStream::connect_timeout(&backend, Duration::from_secs(2)) else {
        return;
    };
    let _ = back.set_read_timeout(Some(Duration::from_secs(2)));
    let mut len = [0u8; 2];
    while !stop.load(Ordering::Relaxed) {
        match tls.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
        // The rest of a message follows its length at once; a timeout here ends it.
        if tls.read_exact(&mut msg).is_err() {
            return;
        }
        crate::wire::write_frame(&mut back, &msg);
        let Some(reply) = crate::wire::read_frame(&mut back) else {
            return;
        };
        if tls
            .write_all(&crate::wire::framed(&reply))
            .and_then(|()| tls.flush())
            .is_err()
        {
            return;
        }
    }
}
