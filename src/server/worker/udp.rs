//! A worker's UDP service: datagrams in batches (recvmmsg/sendmmsg), each answered
//! through the handler, a bounded number of batches per socket per turn so that a flood
//! on one socket cannot starve the rest of the worker.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use super::exchange::{Client, Waiting};
use super::{Worker, millis_since_epoch};
use crate::dns::{Header, Rcode, Transport};
use crate::server::handler::{self, Handled};
use crate::server::socket::BATCH;

/// Batches of datagrams ([`BATCH`] each) one UDP socket is served in a row before the
/// worker goes back to its loop: under a flood, TCP connections, upstream replies,
/// timers, commands (stop, reload) and the worker's other sockets still get their turn
/// every 512 datagrams, a fraction of a millisecond of work.
const UDP_BATCHES_PER_TURN: usize = 512 / BATCH;

impl Worker {
    /// Serves UDP socket `idx` for one turn; if datagrams are left queued, it goes on
    /// the backlog for the next turn.
    pub(super) fn serve_udp(&mut self, idx: usize) {
        if !self.udp_readable(idx) && !self.udp_backlog.contains(&idx) {
            self.udp_backlog.push(idx);
        }
    }

    /// Answers up to [`UDP_BATCHES_PER_TURN`] batches from UDP socket `idx`; whether
    /// its queue ran dry (false: more may wait).
    pub(super) fn udp_readable(&mut self, idx: usize) -> bool {
        let Some(u) = self.udp.get(idx) else { return true };
        let fd = u.sock.as_raw_fd();
        let bound = u.addr;
        // Only a wildcard socket asked for each datagram's destination.
        let destinations = bound.ip().is_unspecified();
        for _ in 0..UDP_BATCHES_PER_TURN {
            let n = match self.batch.recv(fd, destinations) {
                Ok(0) => return true,
                Ok(n) => n,
                Err(e) => {
                    log::warn!("worker {}: udp receive on {bound}: {e}", self.id);
                    return true;
                }
            };
            self.stats.udp_queries.fetch_add(n as u64, Ordering::Relaxed);
            let server = self.current_server();
            let listener = self.udp[idx].listener.map(|l| &server.listeners[l]);
            let mut dest: [Option<(SocketAddr, Option<IpAddr>)>; BATCH] = [None; BATCH];
            for (i, slot) in dest.iter_mut().enumerate().take(n) {
                let Some(dg) = self.batch.datagram(i) else {
                    continue;
                };
                let local = SocketAddr::new(dg.to.unwrap_or(bound.ip()), bound.port());
                let resp = &mut self.replies[i];
                let Some(listener) = listener else { continue };
                if dg.truncated {
                    if Header::of(dg.data).is_some_and(|h| !h.qr()) {
                        resp.start_reject(dg.data, Rcode::FORMERR, None);
                        resp.finish();
                        *slot = Some((dg.from, dg.to));
                    }
                    continue;
                }
                match handler::handle(listener, dg.data, Transport::Udp, dg.from, local, &mut self.ctx, resp) {
                    Handled::Reply(refresh) => {
                        *slot = Some((dg.from, dg.to));
                        if let Some(job) = refresh {
                            self.refreshes.push((job, dg.data.to_vec(), dg.from, local));
                        }
                    }
                    Handled::Drop => {}
                    Handled::Upstream(s) => {
                        let query = self.ctx.copy_buf(dg.data);
                        let client = Client::Udp {
                            sock: idx,
                            from: dg.from,
                            to: dg.to,
                        };
                        self.to_suspend.push((s, query, client, dg.from, local));
                    }
                }
            }
            drop(server);
            for (i, d) in dest.iter().enumerate().take(n) {
                if let Some((to, from)) = d {
                    let bytes = self.replies[i].bytes();
                    let _ = self.batch.queue(fd, bytes, *to, *from);
                }
            }
            if let Ok(dropped) = self.batch.flush(fd) {
                if dropped > 0 {
                    self.stats.dropped_replies.fetch_add(dropped as u64, Ordering::Relaxed);
                }
            }
            let mut list = std::mem::take(&mut self.to_suspend);
            for (s, query, client, peer, local) in list.drain(..) {
                self.suspend(Waiting {
                    suspended: s,
                    query,
                    client,
                    transport: Transport::Udp,
                    peer,
                    local,
                    received: self.ctx.now,
                });
            }
            self.to_suspend = list;
            let mut jobs = std::mem::take(&mut self.refreshes);
            for (job, query, peer, local) in jobs.drain(..) {
                self.run_refresh(job, &query, peer, local);
            }
            self.refreshes = jobs;
            // Each batch done shows the worker alive, also within a long turn.
            self.stats.heartbeat.store(millis_since_epoch(), Ordering::Relaxed);
            if n < BATCH {
                return true;
            }
        }
        false
    }
}
