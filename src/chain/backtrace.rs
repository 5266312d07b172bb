//! The backtrace of a panic caught while a query was handled, for `errors { stacktrace }`
//! (CoreDNS logs `debug.Stack()` when it recovers such a panic).
//!
//! ```text
//!   errors.serve ──wanted()──▶ this thread will keep the next panic's backtrace
//!   panic ──▶ panic hook (main) ──capture()──▶ kept in a thread-local
//!   the worker catches it (server::handler) ──▶ errors.on_response ──take()──▶ logged
//! ```
//!
//! The panic hook runs on the panicking thread before it unwinds, the only moment the
//! stack can be read; the worker that catches the panic is that same thread, so a
//! thread-local carries it over. Nothing is captured unless a block's `errors` asked
//! for it during the query (a capture walks the stack; resolving the symbols, when it
//! is logged, costs milliseconds).

use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};

thread_local! {
    static WANTED: Cell<bool> = const { Cell::new(false) };
    static KEPT: RefCell<Option<Backtrace>> = const { RefCell::new(None) };
}

/// Asks for the backtrace of a panic on this thread from now on, and forgets one kept
/// from an earlier query. Called per query by `errors` with `stacktrace`: a
/// thread-local store, no allocation.
pub fn want() {
    WANTED.with(|w| w.set(true));
    KEPT.with(|k| {
        if let Ok(mut k) = k.try_borrow_mut() {
            *k = None;
        }
    });
}

/// Called by the panic hook: keeps the current stack if this thread asked for it.
pub fn capture() {
    if WANTED.with(Cell::get) {
        let bt = Backtrace::force_capture();
        KEPT.with(|k| {
            if let Ok(mut k) = k.try_borrow_mut() {
                *k = Some(bt);
            }
        });
    }
}

/// The backtrace kept by the last panic on this thread, if any was asked for.
pub fn take() -> Option<Backtrace> {
    KEPT.with(|k| k.try_borrow_mut().ok().and_then(|mut k| k.take()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_thread_that_asked_keeps_a_backtrace() {
        std::thread::spawn(|| {
            capture();
            assert!(take().is_none());
            want();
            capture();
            let bt = take().expect("kept");
            assert!(bt.to_string().contains("only_a_thread_that_asked_keeps_a_backtrace"));
            assert!(take().is_none());
            // A new query forgets what an earlier one left.
            capture();
            want();
            assert!(take().is_none());
        })
        .join()
        .unwrap();
    }
}
