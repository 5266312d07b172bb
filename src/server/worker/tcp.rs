//! A worker's DNS-over-TCP service (RFC 7766): accepting within its connection limit,
//! reading length-prefixed messages (pipelined: each reply goes out as it completes),
//! writing with backpressure (a client that does not read is not read from), and the
//! read, write and idle timeouts of `timeouts`. A `tls://` listener's connections are
//! the same, over a TLS session (`server::stream`): the session is a state machine on
//! the connection, fed by the same readiness events; its handshake must finish within
//! the read timeout.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::Interest;

use super::exchange::{Client, Waiting};
use super::{CONN, Worker, token};
use crate::dns::Transport;
use crate::server::handler::{self, Handled};
use crate::server::stream::Stream;
use crate::settings::Timeouts;

/// Resource limits of a worker's TCP service (RFC 7766 section 6.2 asks for bounded
/// resources; the timeouts come per listener from the `timeouts` directive).
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    /// Connections per worker; one more is accepted and closed at once.
    pub max_connections: usize,
    /// Unsent reply bytes at which the worker stops reading more queries from a client.
    pub max_pending_output: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 1024,
            max_pending_output: 256 * 1024,
        }
    }
}

/// How much already-sent output a connection's buffer keeps before dropping it.
const SENT_PREFIX_KEPT: usize = 64 * 1024;

/// Whether `buf` starts with a whole length-prefixed message.
fn has_frame(buf: &[u8]) -> bool {
    buf.len() >= 2 && buf.len() >= 2 + usize::from(u16::from_be_bytes([buf[0], buf[1]]))
}

/// One accepted connection: its buffers, its timers and its replies still owed.
pub(super) struct Conn {
    pub(super) stream: Stream,
    pub(super) timeouts: Timeouts,
    pub(super) peer: SocketAddr,
    pub(super) local: SocketAddr,
    /// Index into `tcp_listeners` of the listener that accepted it.
    pub(super) from: usize,
    pub(super) rbuf: Vec<u8>,
    pub(super) wbuf: Vec<u8>,
    pub(super) wpos: usize,
    pub(super) last_active: Instant,
    /// When the first byte of a still incomplete message arrived.
    pub(super) partial_since: Option<Instant>,
    /// When output started waiting on the client.
    pub(super) blocked_since: Option<Instant>,
    pub(super) inflight: u32,
    pub(super) peer_closed: bool,
    pub(super) writable_registered: bool,
    /// Reading stopped because too many replies wait on the client, or a reply
    /// stream is being sent.
    pub(super) read_paused: bool,
    /// The rest of a reply of several messages (a zone transfer), sent before any
    /// other query on the connection is answered (see `stream.rs`).
    pub(super) reply_stream: Option<Box<dyn crate::chain::ReplyStream>>,
    /// Whether the connection is in the worker's stream backlog.
    pub(super) stream_queued: bool,
}

impl Worker {
    /// Accepts what waits on TCP listener `idx`, up to the connection limit (one more is
    /// closed at once and counted).
    pub(super) fn accept(&mut self, idx: usize) {
        loop {
            let Some(l) = self.tcp_listeners.get(idx) else {
                return;
            };
            let (stream, peer) = match l.sock.accept() {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and friends: log and stop for now; the next event retries.
                    log::warn!("worker {}: accept on {}: {e}", self.id, l.addr);
                    return;
                }
            };
            let live = self.conns.len() - self.free_conns.len();
            if live >= self.limits.max_connections || self.stopping.is_some() {
                self.stats.tcp_rejected.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            }
            let local = stream.local_addr().unwrap_or(l.addr);
            let (timeouts, tls) = {
                let server = self.current_server();
                let l = &self.tcp_listeners[idx];
                l.listener.map_or_else(
                    || (Timeouts::default(), None),
                    |i| (server.listeners[i].timeouts, server.listeners[i].tls.clone()),
                )
            };
            // A tls:// listener's connection gets a session with the configuration of
            // the generation that accepted it (a reload's new certificate serves new
            // connections).
            let stream = match tls {
                None => Stream::Plain(stream),
                Some(tls) => match rustls::ServerConnection::new(tls.0) {
                    Ok(session) => Stream::tls(stream, session),
                    Err(e) => {
                        log::warn!("worker {}: cannot start a tls session: {e}", self.id);
                        continue;
                    }
                },
            };
            let slot = self.free_conns.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            let mut stream = stream;
            if self
                .poll
                .registry()
                .register(&mut stream, token(CONN, slot), Interest::READABLE)
                .is_err()
            {
                self.free_conns.push(slot);
                continue;
            }
            self.stats.tcp_connections.fetch_add(1, Ordering::Relaxed);
            self.conns[slot] = Some(Conn {
                stream,
                timeouts,
                peer,
                local,
                from: idx,
                rbuf: Vec::with_capacity(512),
                wbuf: Vec::new(),
                wpos: 0,
                last_active: Instant::now(),
                partial_since: None,
                blocked_since: None,
                inflight: 0,
                peer_closed: false,
                writable_registered: false,
                read_paused: false,
                reply_stream: None,
                stream_queued: false,
            });
        }
    }

    /// A connection's readiness event: write what waits, then read (also when reading
    /// was paused and output has drained).
    pub(super) fn conn_ready(&mut self, slot: usize, readable: bool, writable: bool) {
        let paused = self
            .conns
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.read_paused);
        if writable && !self.flush_conn(slot) {
            return;
        }
        if readable || paused {
            self.read_conn(slot);
        }
    }

    /// Reads what the client sent and answers every complete message (pipelining:
    /// replies go out as each completes, RFC 7766 section 6.2.1.1). A client that does
    /// not read its answers is not read from either, until its output drains.
    pub(super) fn read_conn(&mut self, slot: usize) {
        let mut chunk = [0u8; 4096];
        loop {
            let Some(Some(c)) = self.conns.get_mut(slot) else {
                return;
            };
            if c.wbuf.len() - c.wpos >= self.limits.max_pending_output {
                c.read_paused = true;
                if !self.flush_conn(slot) {
                    return;
                }
                match self.conns.get(slot) {
                    // Drained at once: keep reading.
                    Some(Some(c)) if c.wpos >= c.wbuf.len() => continue,
                    // Wait for the writable event; it resumes reading.
                    _ => return,
                }
            }
            if c.reply_stream.is_some() {
                // Nothing more is read until the stream's last message is out.
                c.read_paused = true;
                break;
            }
            if c.read_paused {
                c.read_paused = false;
                // The time the server did not read does not count against the client.
                if c.partial_since.is_some() {
                    c.partial_since = Some(Instant::now());
                }
            }
            // Messages left unanswered when output backed up come before new input.
            if has_frame(&c.rbuf) {
                self.answer_frames(slot);
                continue;
            }
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    c.peer_closed = true;
                    break;
                }
                Ok(n) => {
                    c.rbuf.extend_from_slice(&chunk[..n]);
                    c.last_active = Instant::now();
                    self.answer_frames(slot);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close_conn(slot);
                    return;
                }
            }
        }
        self.flush_conn(slot);
    }

    /// Handles every complete length-prefixed message in a connection's read buffer.
    pub(super) fn answer_frames(&mut self, slot: usize) {
        let server = self.current_server();
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        let listener = self
            .tcp_listeners
            .get(c.from)
            .and_then(|t| t.listener)
            .map(|l| &server.listeners[l]);
        let Some(listener) = listener else {
            // Its listener is gone (a reload dropped the address, or the process drains
            // after a hand-over): nothing here may answer. Close once what is answered
            // is sent, so the client asks again at once (the successor, after a
            // hand-over) instead of waiting on a query nobody reads.
            if !c.rbuf.is_empty() {
                c.rbuf.clear();
                c.peer_closed = true;
            }
            return;
        };
        let mut at = 0;
        let mut suspended = Vec::new();
        let mut refreshes = Vec::new();
        // Stop once the answers waiting to be sent reach the limit: what is left stays
        // in the read buffer until the client reads (bounding both memory and the work
        // one event does for one client).
        let max_output = self.limits.max_pending_output;
        while c.rbuf.len() >= at + 2 && c.wbuf.len() - c.wpos < max_output && c.reply_stream.is_none() {
            let len = u16::from_be_bytes([c.rbuf[at], c.rbuf[at + 1]]) as usize;
            if c.rbuf.len() < at + 2 + len {
                break;
            }
            let msg = &c.rbuf[at + 2..at + 2 + len];
            at += 2 + len;
            self.stats.tcp_queries.fetch_add(1, Ordering::Relaxed);
            match handler::handle(
                listener,
                msg,
                Transport::Tcp,
                c.peer,
                c.local,
                &mut self.ctx,
                &mut self.resp,
            ) {
                Handled::Reply(refresh) => {
                    frame_into(&mut c.wbuf, self.resp.bytes());
                    // More messages to come: they follow this one, before any other reply.
                    c.reply_stream = self.ctx.stream.take();
                    if let Some(job) = refresh {
                        refreshes.push((job, msg.to_vec()));
                    }
                }
                Handled::Drop => {}
                Handled::Upstream(s) => suspended.push((s, msg.to_vec())),
            }
        }
        c.rbuf.drain(..at);
        c.partial_since = if c.rbuf.is_empty() {
            None
        } else {
            c.partial_since.or(Some(Instant::now()))
        };
        let (peer, local) = (c.peer, c.local);
        drop(server);
        for (s, query) in suspended {
            self.suspend(Waiting {
                suspended: s,
                query,
                client: Client::Tcp { conn: slot },
                transport: Transport::Tcp,
                peer,
                local,
                received: self.ctx.now,
            });
        }
        for (job, query) in refreshes {
            self.run_refresh(job, &query, peer, local);
        }
    }

    /// Writes what a connection has buffered; closes it when the client is gone and
    /// nothing is left to do. Returns whether the connection is still open.
    pub(super) fn flush_conn(&mut self, slot: usize) -> bool {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return false;
        };
        // TLS records left over (a handshake message, replies the socket did not take)
        // go before anything new.
        if c.stream.flush_pending().is_err() {
            self.close_conn(slot);
            return false;
        }
        while c.wpos < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => break,
                Ok(n) => {
                    c.wpos += n;
                    c.last_active = Instant::now();
                    c.blocked_since = None;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close_conn(slot);
                    return false;
                }
            }
        }
        let pending_output = c.wpos < c.wbuf.len() || c.stream.wants_write();
        if pending_output {
            c.blocked_since.get_or_insert_with(Instant::now);
            // Forget what was sent, so that a client reading steadily behind a steady
            // stream of answers does not grow the buffer without end.
            if c.wpos >= SENT_PREFIX_KEPT {
                c.wbuf.drain(..c.wpos);
                c.wpos = 0;
            }
        } else {
            c.wbuf.clear();
            c.wpos = 0;
            if c.reply_stream.is_some() && !c.stream_queued {
                // Everything sent: the stream may write its next message.
                c.stream_queued = true;
                self.stream_backlog.push(slot);
            }
        }
        if pending_output != c.writable_registered {
            let interest = if pending_output {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let _ = self
                .poll
                .registry()
                .reregister(&mut c.stream, token(CONN, slot), interest);
            c.writable_registered = pending_output;
        }
        if c.peer_closed && !pending_output && c.inflight == 0 {
            self.close_conn(slot);
            return false;
        }
        true
    }

    pub(super) fn close_conn(&mut self, slot: usize) {
        if let Some(Some(mut c)) = self.conns.get_mut(slot).map(Option::take) {
            c.stream.close_notify();
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.free_conns.push(slot);
            // Replies still owed to this connection are dropped when they arrive.
            self.upstreams.for_each_waiter(|w| {
                if matches!(w.client, Client::Tcp { conn } if conn == slot) {
                    w.client = Client::Tcp { conn: usize::MAX };
                }
            });
        }
    }

    /// Every 100 ms: closes connections idle, or stuck reading or writing, past their
    /// timeouts.
    pub(super) fn sweep_conns(&mut self, now: Instant) {
        if now.duration_since(self.last_sweep) < Duration::from_millis(100) {
            return;
        }
        self.last_sweep = now;
        for i in 0..self.conns.len() {
            let Some(c) = &self.conns[i] else { continue };
            let t = c.timeouts;
            let idle = c.inflight == 0
                && c.wpos >= c.wbuf.len()
                && c.reply_stream.is_none()
                && now.duration_since(c.last_active) >= t.idle;
            // Not while reading is paused: then the server, not the client, is waiting.
            let slow_read = !c.read_paused && c.partial_since.is_some_and(|s| now.duration_since(s) >= t.read);
            let slow_write = c.blocked_since.is_some_and(|s| now.duration_since(s) >= t.write);
            // A TLS handshake counts as reading: it must end within the read timeout
            // (Go's tls.Conn handshakes under the read deadline CoreDNS sets).
            let slow_handshake = c
                .stream
                .handshaking_since()
                .is_some_and(|s| now.duration_since(s) >= t.read);
            if idle || slow_read || slow_write || slow_handshake {
                self.close_conn(i);
            }
        }
    }
}

/// Appends a message with its 2-byte length prefix (RFC 1035 4.2.2).
pub(super) fn frame_into(buf: &mut Vec<u8>, msg: &[u8]) {
    buf.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    buf.extend_from_slice(msg);
}
