//! Resolver bench (issue 5): being written.
fn main() {}
