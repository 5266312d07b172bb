//! Hardening II (issue 16), fault-suite cases: bounded inputs: Corefile imports, hosts files, oversized or invalid API objects, compression loops.
//! The cases run inside `hardening::fault_suite`, one after another.

use crate::hardening::Case;

/// This file's cases, in the order the suite runs them.
pub(crate) const CASES: &[Case] = &[];
