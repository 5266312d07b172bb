//! End-to-end tests: the real `clusterdns` binary on 127.0.0.1, driven over real
//! sockets (and through `dig` where a real client matters), with a fake Kubernetes API
//! that speaks the real list/watch protocol.

mod cli;
mod conformance;
mod corefile;
mod docs;
mod fakeapi;
#[macro_use]
mod hardening;
mod hardening_answers;
mod hardening_inputs;
mod hardening_probes;
mod kubernetes;
mod operations;
mod protocol;
mod resolver;
mod rrl;
mod serving;
mod support;
mod upstream;
