//! The health checker: a background thread that probes upstreams marked down with
//! `. IN NS` (any reply, even SERVFAIL, counts as alive, as in CoreDNS) every
//! `health_check` interval, and puts them back in service when they answer. It does
//! blocking I/O, on its own thread, never on a worker (a `tls://` upstream's probe
//! too: a blocking rustls stream, each read and write bounded by the probe timeout).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{HealthOptions, Upstream, health_failed};
use crate::dns::{Header, QueryBuilder, rtype};

/// The running checker.
pub struct Checker {
    thread: Option<JoinHandle<()>>,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

fn probe_message(opts: &HealthOptions, id: u16) -> Vec<u8> {
    QueryBuilder::new(&opts.domain, rtype::NS)
        .id(id)
        .rd(!opts.no_rec)
        .to_vec()
}

/// Whether `to` answers the probe within the timeout: over TLS for a `tls://`
/// upstream (CoreDNS: "when TLS is used, checks are set to tcp-tls").
fn probe(to: SocketAddr, opts: &HealthOptions, tcp: bool, tls: Option<&crate::tls::Upstream>) -> bool {
    let id = (crate::chain::Rng::secure_u64() & 0xFFFF) as u16;
    let msg = probe_message(opts, id);
    let answered = |reply: &[u8]| Header::of(reply).is_some_and(|h| h.answers(id));
    if let Some(tls) = tls {
        let Ok(s) = TcpStream::connect_timeout(&to, PROBE_TIMEOUT) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
        let _ = s.set_write_timeout(Some(PROBE_TIMEOUT));
        let Ok(session) = tls.session() else { return false };
        let mut s = rustls::StreamOwned::new(session, s);
        let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&msg);
        let mut len = [0u8; 2];
        if s.write_all(&framed).and_then(|()| s.flush()).is_err() || s.read_exact(&mut len).is_err() {
            return false;
        }
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        return s.read_exact(&mut reply).is_ok() && answered(&reply);
    }
    if tcp {
        let Ok(mut s) = TcpStream::connect_timeout(&to, PROBE_TIMEOUT) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
        let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&msg);
        let mut len = [0u8; 2];
        if s.write_all(&framed).is_err() || s.read_exact(&mut len).is_err() {
            return false;
        }
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        return s.read_exact(&mut reply).is_ok() && answered(&reply);
    }
    let any: SocketAddr = if to.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    };
    let Ok(s) = UdpSocket::bind(any) else { return false };
    let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
    if s.connect(to).is_err() || s.send(&msg).is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    matches!(s.recv(&mut buf), Ok(n) if answered(&buf[..n]))
}

impl Checker {
    /// Starts probing `upstreams` that are down.
    pub fn start(
        upstreams: Vec<Arc<Upstream>>,
        opts: HealthOptions,
        max_fails: u32,
        tcp: bool,
        stop: Arc<AtomicBool>,
    ) -> Checker {
        let thread = std::thread::Builder::new()
            .name("forward-health".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    for u in &upstreams {
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        if !u.down(max_fails) {
                            continue;
                        }
                        if probe(u.addr, &opts, tcp, u.tls.as_deref()) {
                            log::info!(target: "plugin/forward", "upstream {} is healthy again", u.addr);
                            u.fails.store(0, Ordering::Relaxed);
                        } else {
                            health_failed(u);
                        }
                    }
                    // Sleep in short steps so that stop is prompt.
                    let mut left = opts.interval;
                    while !left.is_zero() && !stop.load(Ordering::Acquire) {
                        let step = left.min(Duration::from_millis(50));
                        std::thread::sleep(step);
                        left -= step;
                    }
                }
            })
            .ok();
        Checker { thread }
    }

    pub fn stop(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
