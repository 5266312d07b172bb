//! auto
