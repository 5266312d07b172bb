//! The test kit of clusterdns: one of each thing `tests/` and `benches/` need to drive
//! the real binary over loopback, written once.
//!
//! ```text
//!   tests/e2e, tests/packaging.rs, benches/*.rs
//!        │ launch, signal, watch /proc           │ queries, floods          │ objects
//!        ▼                                       ▼                          ▼
//!   process::Server / Spawn ──▶ clusterdns ◀── wire, load::Load     api::FakeApi (list/watch,
//!   procfs (RSS, CPU, fds)          │  forward                    faults, abuse, bulk worlds)
//!                                   ▼                                ▲ objects, world
//!                          upstream::FakeUpstream                    │
//!   metrics::parse (strict Prometheus text)   http::get (probes)   fault (one case at a time)
//! ```
//!
//! * [`api`]: the fake Kubernetes API: the real list/watch protocol (pages, continue
//!   tokens, resourceVersions, bookmarks, 410, selectors), scripted faults, abusive
//!   behaviours (huge lines, endless streams, malformed JSON, silence, injected
//!   streams), and bulk worlds of pre-rendered objects for the benches.
//! * [`corpus`]: the Corefile corpus of `tests/data/corefiles/` made runnable here (ports,
//!   loopback, the fake API and upstream in place of the real ones).
//! * [`objects`] builds API objects; [`world`] generates whole clusters for benches.
//! * [`upstream`]: the fake upstream DNS server (UDP and TCP, modes per name, a fast
//!   batched path for benches).
//! * [`wire`]: queries, header views, framing, exchanges, replies in text form.
//! * [`process`]: the binary under test, scratch directories, free ports, signals;
//!   [`procfs`]: what /proc says about a process (RSS, CPU, descriptors, sockets).
//! * [`load`]: the UDP load generator (closed or open loop) and the echo floor.
//! * [`metrics`]: a strict Prometheus text-format parser.
//! * [`http`]: a one-request HTTP/1.1 client for the probe endpoints.
//! * [`fault`]: fault cases, one at a time, each reporting its figures.
//! * [`tls`]: DNS over TLS: certificates made in the test, a DoT client, a TLS upstream.
//! * [`tools`]: tests that need an outside tool (dig, kdig, systemd-analyze) find it or fail.

pub mod api;
pub mod corpus;
pub mod fault;
pub mod http;
pub mod load;
pub mod metrics;
pub mod objects;
pub mod process;
pub mod procfs;
pub mod tls;
pub mod tools;
pub mod upstream;
pub mod wire;
pub mod world;

/// What an end-to-end test usually needs, in one `use testkit::prelude::*;`.
pub mod prelude {
    pub use crate::api::{Config, ExpiredAs, FakeApi, Fault, Resource, param};
    pub use crate::http::http_get;
    pub use crate::objects::{
        base_cluster, external_name, headless, namespace, pod, service, set_ready, slice, with_labels,
    };
    pub use crate::process::{Launch, Scratch, Server, binary, free_port, run, wait_until};
    pub use crate::upstream::{FakeUpstream, Mode, Proto};
    pub use crate::wire::{
        counts, query_bytes, raw_udp, rcode, read_frame, section, tcp_exchange, udp_exchange, write_frame,
    };
}
