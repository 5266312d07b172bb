//! Replies of several messages on a TCP connection (zone transfers, RFC 5936 2.2):
//! the first message is an ordinary reply; the plugin leaves the rest as a
//! [`ReplyStream`](crate::chain::ReplyStream) that the connection keeps.
//!
//! ```text
//!   answer_frames: reply 1 ──▶ wbuf; stream ──▶ Conn::reply_stream (reading stops)
//!   flush_conn: wbuf drained ──▶ slot into stream_backlog
//!   each turn of the loop, after the sockets' events: pump_streams ──▶ one
//!        next_message per slot (until STREAM_TURN is spent) ──▶ wbuf ──▶ flush
//!        (the socket would block: the writable event brings the slot back)
//!   next_message = None ──▶ stream dropped, reading resumes
//! ```
//!
//! So a transfer holds at most one message in the connection's buffer and one in its
//! producer, however large the zone; it goes at the pace the client reads; and between
//! two of its messages the worker serves everything else (one message per connection
//! per turn, the streams last in the turn and within a time budget, and the loop does
//! not wait while a stream has more to send).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Worker;
use super::tcp::frame_into;

/// How long the reply streams may work in one turn of the loop (a transfer sizes its
/// messages to take ~20 us each: `plugin::transfer::MESSAGE_TIME`): with many transfers at once, the
/// connections not reached keep their place for the next turn, and the UDP sockets
/// and other connections are served in between.
const STREAM_TURN: Duration = Duration::from_micros(500);

impl Worker {
    /// Gives the connections in the stream backlog their turn, in order, until
    /// [`STREAM_TURN`] is spent (at least one goes each turn).
    pub(super) fn pump_streams(&mut self) {
        if self.stream_backlog.is_empty() {
            return;
        }
        let start = Instant::now();
        let mut carried = std::mem::take(&mut self.stream_backlog);
        let mut done = 0;
        while let Some(&slot) = carried.get(done) {
            if done > 0 && start.elapsed() >= STREAM_TURN {
                break;
            }
            self.pump_stream(slot);
            done += 1;
        }
        // Those not reached go first next turn, before the ones queued during this one
        // (both vectors keep their allocations).
        carried.drain(..done);
        carried.append(&mut self.stream_backlog);
        std::mem::swap(&mut self.stream_backlog, &mut carried);
    }

    /// Writes a connection's next streamed message and sends it; once the stream is
    /// done, reads the queries that waited behind it.
    fn pump_stream(&mut self, slot: usize) {
        let Some(Some(c)) = self.conns.get_mut(slot) else {
            return;
        };
        c.stream_queued = false;
        if c.wpos < c.wbuf.len() {
            // Still sending the last one: the writable event brings the slot back.
            return;
        }
        let Some(stream) = c.reply_stream.as_mut() else {
            return;
        };
        // A panic in the producer ends this reply and its connection, not the worker.
        let next = catch_unwind(AssertUnwindSafe(|| match stream.next_message() {
            Some(msg) => {
                frame_into(&mut c.wbuf, msg);
                true
            }
            None => false,
        }));
        match next {
            Ok(true) => {
                c.last_active = Instant::now();
                self.flush_conn(slot);
            }
            Ok(false) => {
                c.reply_stream = None;
                if self.flush_conn(slot) {
                    self.read_conn(slot);
                }
            }
            Err(_) => {
                self.ctx.process.panics.fetch_add(1, Ordering::Relaxed);
                log::error!("worker {}: recovered from panic while streaming a reply", self.id);
                self.close_conn(slot);
            }
        }
    }
}
