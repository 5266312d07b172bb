//! Replies of several messages on a TCP connection (zone transfers, RFC 5936 2.2):
//! the first message is an ordinary reply; the plugin leaves the rest as a
//! [`ReplyStream`](crate::chain::ReplyStream) that the connection keeps.
//!
//! ```text
//!   answer_frames: reply 1 ──▶ wbuf; stream ──▶ Conn::reply_stream (reading stops)
//!   flush_conn: wbuf drained ──▶ slot into stream_backlog
//!   each turn of the loop: pump_streams ──▶ one next_message per slot ──▶ wbuf ──▶ flush
//!        (the socket would block: the writable event brings the slot back)
//!   next_message = None ──▶ stream dropped, reading resumes
//! ```
//!
//! So a transfer holds at most one message in the connection's buffer and one in its
//! producer, however large the zone; it goes at the pace the client reads; and between
//! two of its messages the worker serves everything else (one message per connection
//! per turn, and the loop does not wait while a stream has more to send).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;

use super::Worker;
use super::tcp::frame_into;

impl Worker {
    /// Gives every connection in the stream backlog its turn.
    pub(super) fn pump_streams(&mut self) {
        if self.stream_backlog.is_empty() {
            return;
        }
        let mut carried = std::mem::take(&mut self.stream_backlog);
        for slot in carried.drain(..) {
            self.pump_stream(slot);
        }
        if self.stream_backlog.is_empty() {
            // Keep the allocation for the next turn.
            self.stream_backlog = carried;
        }
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
                c.last_active = std::time::Instant::now();
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
