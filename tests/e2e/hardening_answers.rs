//! Hardening II (issue 16), fault-suite cases: answers whose cost must stay linear in what they return (large headless services, SRV, PTR), and the per-query work budget.
//! The cases run inside `hardening::fault_suite`, one after another.

use crate::hardening::Case;

/// This file's cases, in the order the suite runs them.
pub(crate) const CASES: &[Case] = &[];
