//! A TCP connection's byte stream, plain or TLS: what the worker's DNS-over-TCP service
//! (`worker/tcp.rs`) and its TCP upstreams (`upstream.rs`) read and write, so that the
//! same framing, pipelining, backpressure and timeouts serve DNS over TLS (RFC 7858).
//!
//! ```text
//!   tcp.rs / upstream.rs ── Read / Write (plaintext: DNS messages, length-prefixed)
//!                 │
//!   Stream::Plain(TcpStream)              Stream::Tls: rustls session (a state machine,
//!                                           no thread) ── read_tls / write_tls ──▶ TcpStream
//! ```
//!
//! The TLS session is driven by the socket's readiness like everything else on the
//! worker: `read` feeds it what the socket has (handshake records included) and returns
//! the plaintext it yields, or `WouldBlock`; `write` hands it plaintext and pushes the
//! records out as far as the socket takes them. Records the socket did not take stay
//! in the session (at most [`TLS_BUFFER`] bytes of them): [`Stream::wants_write`] says
//! so, and the owner watches the socket for writability until
//! [`Stream::flush_pending`] has sent them. Nothing here blocks or waits.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// Bytes a server's TLS session buffers towards the socket (records not yet sent plus
/// plaintext not yet sealed). Past it `write` takes nothing more (`WouldBlock`) and the
/// caller keeps its own buffer, where its backpressure limits apply.
pub const TLS_BUFFER: usize = 32 * 1024;

/// The same for an upstream (client) session: a whole framed query (65,537 bytes at
/// most) fits while the handshake is still going, so it is written at once and goes out
/// when the handshake ends, without waiting on another writable event.
pub const TLS_CLIENT_BUFFER: usize = 80 * 1024;

/// A connection's stream.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

/// A TCP stream with a TLS session on top.
pub struct TlsStream {
    sock: TcpStream,
    session: rustls::Connection,
    /// When the session started (the handshake's deadline counts from it).
    started: Instant,
}

impl Stream {
    /// A TLS stream over `sock` with a fresh session (server or client side).
    pub fn tls(sock: TcpStream, session: impl Into<rustls::Connection>) -> Stream {
        let mut session = session.into();
        let limit = match session {
            rustls::Connection::Server(_) => TLS_BUFFER,
            rustls::Connection::Client(_) => TLS_CLIENT_BUFFER,
        };
        session.set_buffer_limit(Some(limit));
        Stream::Tls(Box::new(TlsStream {
            sock,
            session,
            started: Instant::now(),
        }))
    }

    /// Whether TLS records wait to be written to the socket (a handshake message, an
    /// alert, sealed replies the socket did not take): then the socket must be watched
    /// for writability. Always false for plain TCP, whose writes go straight out.
    pub fn wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.session.wants_write(),
        }
    }

    /// Writes the TLS records that wait, as far as the socket takes them. A full
    /// socket is no error (`wants_write` stays true); a broken one is.
    pub fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(t) => t.flush_records(),
        }
    }

    /// When the TLS handshake began, while it is still in progress (for its timeout);
    /// `None` for plain TCP and once the handshake is done.
    pub fn handshaking_since(&self) -> Option<Instant> {
        match self {
            Stream::Tls(t) if t.session.is_handshaking() => Some(t.started),
            _ => None,
        }
    }

    /// Before the connection is dropped: a TLS session says goodbye (close_notify,
    /// RFC 8446 section 6.1), as far as the socket takes it at once; nothing waits.
    pub fn close_notify(&mut self) {
        if let Stream::Tls(t) = self {
            t.session.send_close_notify();
            let _ = t.flush_records();
        }
    }

    /// The TCP stream underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &mut t.sock,
        }
    }
}

impl TlsStream {
    fn flush_records(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Full, or (a client) still connecting: the next writable event retries.
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected) => {
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for Stream {
    /// Plaintext: what the TLS session has decrypted, after feeding it what the socket
    /// holds. `Ok(0)` is the end (close_notify, or the TCP stream's end); `WouldBlock`
    /// means the socket is drained and no whole record waits (a handshake in progress
    /// returns it too, after queuing its answer: call `flush_pending`).
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let t = match self {
            Stream::Plain(s) => return s.read(out),
            Stream::Tls(t) => t,
        };
        loop {
            match t.session.reader().read(out) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // rustls reads at most one buffer's worth (it bounds what it holds), then
            // the records are processed before more is read.
            match t.session.read_tls(&mut t.sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    if let Err(e) = t.session.process_new_packets() {
                        // Tell the peer why (the alert rustls queued), as far as the
                        // socket takes it, then fail: the caller closes.
                        let _ = t.session.write_tls(&mut t.sock);
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for Stream {
    /// Plaintext in. TLS: records left from before go out first; while the socket does
    /// not take them nothing new is accepted (`WouldBlock`), so the session never holds
    /// more than [`TLS_BUFFER`]; what is accepted is sealed and sent at once, as far as
    /// the socket takes it.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let t = match self {
            Stream::Plain(s) => return s.write(buf),
            Stream::Tls(t) => t,
        };
        t.flush_records()?;
        if t.session.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = t.session.writer().write(buf)?;
        t.flush_records()?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_pending()
    }
}

impl mio::event::Source for Stream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        self.tcp_mut().register(registry, token, interests)
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        self.tcp_mut().reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.tcp_mut().deregister(registry)
    }
}
