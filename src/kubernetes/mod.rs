//! Kubernetes: the object model DNS needs, the API watchers (list and watch over plain
//! HTTP, or a `kubectl get -o json` file), and the snapshot builder that turns objects
//! into an immutable, query-ready [`snapshot::Snapshot`].
//!
//! ```text
//!  API (http://) ──list/watch──▶ watch thread per resource ─┐
//!  file://       ──poll──────▶ file thread ──────────────────┼─Event─▶ builder ──store──▶ ArcSwap<Snapshot>
//!                                                            ┘  (crossbeam)    coalesces      │ load
//!                                                                                            ▼
//!                                                                              kubernetes plugin (workers)
//! ```

pub mod builder;
pub mod decode;
pub mod file;
pub mod limits;
pub mod model;
pub mod snapshot;
pub mod watch;
