//! Hardening (issue 7): being written.
