//! Kubernetes: the object model DNS needs, the API watchers (list and watch over plain
//! HTTP, or a `kubectl get -o json` file), and the snapshot builder that turns objects
//! into an immutable, query-ready [`snapshot::Snapshot`].
//!
//! ```text
//!  API (http://) ◀─GET── watch::runner ◀─Action── watch::reflector (decisions, no I/O:
//!        │              (a thread per resource) ─Input─▶  list/continue/watch/410/backoff)
//!        └─JSON─▶ decode ─▶ model::Object ─┐
//!  file:// ──poll──▶ file thread ─decode───┼─Event─▶ builder ──▶ snapshot::ClusterStore ──store──▶ ArcSwap<Snapshot>
//!                                          ┘  (crossbeam)  coalesces   applies in place,            │ load
//!                                                          a burst     copy-on-write shards         ▼
//!                                                                                kubernetes plugin (workers)
//! ```
//!
//! - [`watch`]: the API client: the reflector's sans-I/O decisions, the runner
//!   that performs them, the request and rejection counters;
//! - [`file`](mod@file): the `file://` source;
//! - [`decode`]: API JSON to [`model`] objects, with the API's [`limits`];
//! - [`builder`]: the thread that applies events and publishes snapshots;
//! - [`snapshot`]: the read side the workers answer from, and the builder's store.

pub mod builder;
pub mod decode;
pub mod file;
pub mod limits;
pub mod model;
pub mod snapshot;
pub mod watch;
