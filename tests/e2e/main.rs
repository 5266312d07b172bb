//! End-to-end tests: the real `clusterdns` binary on 127.0.0.1, driven over real
//! sockets (and through `dig` where a real client matters), with the test kit's fake
//! Kubernetes API (the real list/watch protocol) and fake upstream (`testkit/`).

mod auto;
mod autopath;
mod cli;
mod conformance;
mod corefile;
mod corpus;
mod docs;
mod file;
mod hardening;
mod hardening_answers;
mod hardening_inputs;
mod hardening_probes;
mod k8s_external;
mod kubernetes;
mod metadata;
mod operations;
mod protocol;
mod resolver;
mod rewrite;
mod rewrite_cname;
mod rrl;
mod serving;
mod template;
mod template_cname;
mod transfer;

/// The kit finds the binary cargo built for these tests.
#[test]
fn the_kit_runs_the_binary_cargo_built() {
    let kit = std::fs::canonicalize(testkit::process::binary()).unwrap();
    let cargo = std::fs::canonicalize(env!("CARGO_BIN_EXE_clusterdns")).unwrap();
    assert_eq!(kit, cargo);
}
