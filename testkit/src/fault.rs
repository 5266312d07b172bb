//! Fault cases (the hardening suites): each one an ordinary `#[test]` that libtest can
//! filter, but never two at once, since their load must not mix: [`run_case`] holds a
//! process-wide lock while the case runs (a case that panics releases it for the next
//! one: the lock ignores poisoning), prints the case's report line with its figures to
//! stderr (`--nocapture` shows it) and fails the test with the case's reason.
//!
//! A case returns its report line, or why it failed; [`check!`](crate::check) returns
//! early with the reason when a bound does not hold.

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// A case's report line (what was tried, what was measured), or why it failed.
pub type Outcome = Result<String, String>;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Holds the fault cases' lock until dropped (one case at a time in this process).
pub fn exclusive() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs one fault case alone: prints `fault: NAME: REPORT: ok (SECONDS)` or
/// `fault: NAME: FAILED: WHY (SECONDS)`, and panics with the reason if it failed.
pub fn run_case(name: &str, case: impl FnOnce() -> Outcome) {
    let _alone = exclusive();
    let t = Instant::now();
    let outcome = case();
    let secs = t.elapsed().as_secs_f64();
    match outcome {
        Ok(line) => eprintln!("fault: {name}: {line}: ok ({secs:.1}s)"),
        Err(why) => {
            eprintln!("fault: {name}: FAILED: {why} ({secs:.1}s)");
            panic!("fault case {name:?} failed: {why}");
        }
    }
}

/// A duration in milliseconds, for report lines.
pub fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Whether `CLUSTERDNS_FAULT_TRACE` is set: cases print their samples (RSS, answers per
/// second) as well.
pub fn trace() -> bool {
    std::env::var_os("CLUSTERDNS_FAULT_TRACE").is_some()
}

/// Returns `Err(message)` from the enclosing case unless `cond` holds.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        let holds: bool = $cond;
        if !holds {
            return Err(format!($($fmt)+));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_case_leaves_the_lock_usable() {
        let r = std::thread::spawn(|| run_case("panics", || panic!("on purpose"))).join();
        assert!(r.is_err());
        let r = std::thread::spawn(|| run_case("fails", || Err("a bound".into()))).join();
        assert!(r.is_err());
        // The next case still runs.
        run_case("passes", || Ok("fine".into()));
        drop(exclusive());
    }
}
