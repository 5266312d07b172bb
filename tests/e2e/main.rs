//! End-to-end tests: the real `clusterdns` binary on 127.0.0.1, driven over real
//! sockets (and through `dig` where a real client matters).

mod cli;
mod corefile;
mod docs;
mod protocol;
mod serving;
mod support;
