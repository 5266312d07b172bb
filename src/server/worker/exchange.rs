//! A worker's upstream exchanges: a query a plugin suspended (`Step::Upstream`) is sent,
//! waits in the worker's table without blocking, and resumes its chain with the reply,
//! the timeout or the failure; its own reply then goes to the client it came from (UDP
//! or TCP), or nowhere for a background refresh.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Worker;
use super::tcp::frame_into;
use crate::chain::UpstreamReply;
use crate::dns::Transport;
use crate::server::handler::{self, Handled, Refresh, Suspended};
use crate::server::socket::BATCH;
use crate::server::upstream::{ExchangeOutcome, Upstreams};

/// Where a suspended query's reply goes.
#[derive(Clone, Copy)]
pub(super) enum Client {
    Udp {
        sock: usize,
        from: SocketAddr,
        to: Option<IpAddr>,
    },
    Tcp {
        conn: usize,
    },
    /// A background refresh: nobody to answer.
    Nobody,
}

/// Replies to UDP clients whose queries waited on an upstream, queued in the worker's
/// batch for one sendmmsg: the socket they go out on, and copies of the replies (the
/// batch points into them until it is flushed; buffers kept for reuse).
#[derive(Default)]
pub(super) struct Relays {
    sock: Option<usize>,
    replies: Vec<Vec<u8>>,
    len: usize,
}

/// A query waiting on an upstream: what resumes it and where its reply goes.
pub(super) struct Waiting {
    pub(super) suspended: Suspended,
    pub(super) query: Vec<u8>,
    pub(super) client: Client,
    pub(super) transport: Transport,
    pub(super) peer: SocketAddr,
    pub(super) local: SocketAddr,
    /// When the client's query arrived (durations count from there).
    pub(super) received: Instant,
}

impl Worker {
    /// Sends a suspended query's message upstream and remembers where the reply goes.
    pub(super) fn suspend(&mut self, mut w: Waiting) {
        if let Client::Tcp { conn } = w.client {
            if let Some(Some(c)) = self.conns.get_mut(conn) {
                c.inflight += 1;
            }
        }
        // An Arc's count at most (a TLS upstream's configuration): nothing allocated.
        let request = w.suspended.request.clone();
        let mut msg = std::mem::take(&mut w.suspended.message);
        let started = self.upstreams.start(self.poll.registry(), &request, &mut msg, w);
        // The message is on its way: its buffer serves the next one.
        self.ctx.recycle(msg);
        self.stats
            .upstream_pending
            .store(self.upstreams.live() as u64, Ordering::Relaxed);
        if let Err((w, kind)) = started {
            // Resume at once with the failure; the plugin decides (another upstream,
            // SERVFAIL).
            self.resumed(w, UpstreamReply::Failed(kind));
            self.flush_relays();
        }
    }

    /// An upstream socket is readable: the exchanges it ended (a reply, or a failure)
    /// resume every query waiting on them; their replies to UDP clients go out together.
    pub(super) fn upstream_ready(&mut self, slot: usize) {
        let mut buf = std::mem::take(&mut self.reply_buf);
        while let Some((waiters, outcome)) = self.upstreams.ready(self.poll.registry(), slot, &mut buf) {
            self.stats
                .upstream_pending
                .store(self.upstreams.live() as u64, Ordering::Relaxed);
            for w in waiters {
                let reply = match outcome {
                    ExchangeOutcome::Reply(n) => UpstreamReply::Message(&buf[..n]),
                    ExchangeOutcome::Timeout => UpstreamReply::Timeout,
                    ExchangeOutcome::Failed(k) => UpstreamReply::Failed(k),
                };
                self.resumed(w, reply);
            }
            // A pooled socket may hold replies to several exchanges; a socket of one
            // exchange is done.
            if !Upstreams::<Waiting>::is_pooled(slot) {
                break;
            }
        }
        self.reply_buf = buf;
        self.flush_relays();
    }

    /// Sends the replies to UDP clients queued by [`Worker::send_to_client`].
    pub(super) fn flush_relays(&mut self) {
        self.relays.len = 0;
        // The batch points into reusable buffers: it is sent or cleared, never kept.
        let Some(u) = self.relays.sock.take().and_then(|sock| self.udp.get(sock)) else {
            self.batch.clear();
            return;
        };
        if let Ok(d) = self.batch.flush(u.sock.as_raw_fd()) {
            self.stats.dropped_replies.fetch_add(d as u64, Ordering::Relaxed);
        }
    }

    /// A waiting query's exchange ended: forget it in its TCP connection's count, then
    /// resume it.
    pub(super) fn resumed(&mut self, w: Waiting, reply: UpstreamReply<'_>) {
        if let Client::Tcp { conn } = w.client {
            if let Some(Some(c)) = self.conns.get_mut(conn) {
                c.inflight = c.inflight.saturating_sub(1);
            }
        }
        self.resume(w, reply);
    }

    /// Continues a suspended query and sends its reply (or suspends it again). Time is
    /// the query's arrival, so durations include the wait.
    pub(super) fn resume(&mut self, w: Waiting, reply: UpstreamReply<'_>) {
        self.ctx.now = w.received;
        let handled = handler::resume(
            &w.suspended,
            &w.query,
            w.transport,
            w.peer,
            w.local,
            reply,
            &mut self.ctx,
            &mut self.resp,
        );
        match handled {
            Handled::Reply(refresh) => {
                self.send_to_client(w.client);
                if let Some(job) = refresh {
                    self.run_refresh(job, &w.query, w.peer, w.local);
                }
            }
            Handled::Drop => {}
            Handled::Upstream(next) => return self.suspend(Waiting { suspended: next, ..w }),
        }
        self.ctx.recycle(w.query);
    }

    /// Sends the reply in `self.resp` to a client whose query was suspended. UDP replies
    /// are queued for one sendmmsg per socket ([`Worker::flush_relays`], which every
    /// caller's entry point ends with, so nothing stays queued between two events).
    pub(super) fn send_to_client(&mut self, client: Client) {
        match client {
            Client::Udp { sock, from, to } => {
                if self.relays.sock.is_some_and(|s| s != sock) || self.relays.len == BATCH {
                    self.flush_relays();
                }
                let Some(u) = self.udp.get(sock) else { return };
                let fd = u.sock.as_raw_fd();
                // The reply is copied out of `resp` (which the next query reuses): the
                // batch points into the copy. (A copy of its bytes: the Response
                // itself, with its compression table, is some kilobytes to move.)
                let r = &mut self.relays;
                if r.replies.len() == r.len {
                    r.replies.push(Vec::with_capacity(512));
                }
                let out = &mut r.replies[r.len];
                out.clear();
                out.extend_from_slice(self.resp.bytes());
                let _ = self.batch.queue(fd, out, from, to);
                r.len += 1;
                r.sock = Some(sock);
            }
            Client::Nobody => {}
            Client::Tcp { conn } => {
                if let Some(Some(c)) = self.conns.get_mut(conn) {
                    frame_into(&mut c.wbuf, self.resp.bytes());
                }
                // A connection closed meanwhile has slot usize::MAX: nothing to do.
                self.flush_conn(conn);
            }
        }
    }

    /// Runs a plugin's background refresh of an answer it gave from stored data. It
    /// runs as if asked over TCP, whatever the client used, so that the reply is never
    /// truncated to a small UDP size (CoreDNS refreshes over TCP too).
    pub(super) fn run_refresh(&mut self, job: Refresh, query: &[u8], peer: SocketAddr, local: SocketAddr) {
        let transport = Transport::Tcp;
        match handler::refresh(job, query, transport, peer, local, &mut self.ctx, &mut self.resp) {
            Handled::Upstream(s) => self.suspend(Waiting {
                suspended: s,
                query: query.to_vec(),
                client: Client::Nobody,
                transport,
                peer,
                local,
                received: self.ctx.now,
            }),
            Handled::Reply(_) | Handled::Drop => {}
        }
    }

    /// Times out upstream exchanges whose deadline passed.
    pub(super) fn expire_upstreams(&mut self, now: Instant) {
        for (waiters, outcome) in self.upstreams.expire(self.poll.registry(), now) {
            for w in waiters {
                let reply = match outcome {
                    ExchangeOutcome::Failed(k) => UpstreamReply::Failed(k),
                    _ => UpstreamReply::Timeout,
                };
                self.resumed(w, reply);
            }
        }
        self.flush_relays();
        self.stats
            .upstream_pending
            .store(self.upstreams.live() as u64, Ordering::Relaxed);
    }
}
