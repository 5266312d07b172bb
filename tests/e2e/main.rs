//! End-to-end tests: the real `clusterdns` binary on 127.0.0.1, driven over real
//! sockets (and through `dig` where a real client matters), with the test kit's fake
//! Kubernetes API (the real list/watch protocol) and fake upstream (`testkit/`).

mod acl;
mod any;
mod auto;
mod autopath;
mod bufsize;
mod chaos;
mod cli;
mod conformance;
mod corefile;
mod corpus;
mod debug;
mod dns64;
mod docs;
mod errors;
mod file;
mod handover;
mod hardening;
mod hardening_answers;
mod hardening_inputs;
mod hardening_probes;
mod header;
mod k8s_external;
mod kubernetes;
mod local;
mod metadata;
mod minimal;
mod nsid;
mod operations;
mod pprof;
mod protocol;
mod removed;
mod resolver;
mod rewrite;
mod rewrite_cname;
mod rrl;
mod serving;
mod template;
mod template_cname;
mod tls;
mod transfer;

/// The kit finds the binary cargo built for these tests.
#[test]
fn the_kit_runs_the_binary_cargo_built() {
    let kit = std::fs::canonicalize(testkit::process::binary()).unwrap();
    let cargo = std::fs::canonicalize(env!("CARGO_BIN_EXE_clusterdns")).unwrap();
    assert_eq!(kit, cargo);
}
