//! The DNS wire format (RFC 1035, with EDNS: RFC 6891), and the only module that knows
//! it. Everything else reads a [`Request`], writes [`Record`]s into a [`Response`], looks
//! at a message's header through [`Header`], builds a query with [`QueryBuilder`] and
//! names a zone with a [`Zone`]; nobody outside tests header bits or lays out a
//! message by hand.
//!
//! ```text
//!   request.rs   the request view: one validating pass over a received query, and
//!                NameKey, the lower-cased lookup key every plugin matches names with
//!   response/    the response writer: records, name compression, truncation, OPT
//!   header.rs    Header, HeaderMut: views of a message's first 12 bytes; Flags
//!   query.rs     QueryBuilder: the queries the server sends itself
//!   zone.rs      Zone: a zone in presentation and wire form, one membership test
//!   cookie.rs    DNS cookies (RFC 7873)
//!   wire.rs      constants, reading and checking names and messages, names as text
//! ```
//!
//! # What it is built on
//!
//! **Hand-written, here**: everything a query goes through. The request view, the
//! response writer, the header views and the query builder work on the bytes of
//! buffers the worker keeps from query to query, so that a query is answered without
//! a heap allocation (`benches/inprocess.rs` counts them) and without first copying
//! the message into a parsed form. They also carry the choices CoreDNS's library
//! (miekg/dns) makes where the RFCs leave room, which clients and tests see: which
//! malformed query gets FORMERR and which is dropped, how far compression pointers
//! may lead, which records a truncated reply keeps, that a reply spells the question
//! as the client did.
//!
//! **From the `domain` crate** (NLnet Labs; `std` only, no Tokio): the extended rcode
//! of an upstream reply's OPT record ([`wire::message_rcode`], off the hot path, where
//! a full lazily checked parse is worth its cost), and, in tests, the independent
//! parser every writer here is checked against: header bits, the builder's queries,
//! the writer's replies and parsed names must read back the same through `domain`.
//! Not used, and why: its `MessageBuilder` owns its target by value and grows it
//! through its own octets traits, where the worker writes into a `Vec` it keeps; its
//! name types keep the spelling and compare case-insensitively on every comparison,
//! where a [`NameKey`] or [`Zone`] is lower-cased once so that matching is a byte
//! comparison. When the server reads zone files (`file`, `auto`), `domain`'s
//! zone-file parser is the tool to take.

pub mod cookie;
pub mod header;
pub mod query;
pub mod request;
pub mod response;
pub mod wire;
pub mod zone;

pub use header::{Flags, Header, HeaderMut};
pub use query::QueryBuilder;
pub use request::{Edns, NameKey, Reject, Request, Transport};
pub use response::{Name, PushError, Rdata, Record, RecordPos, Response, ResponseType, Section, Tail};
pub use wire::{Rcode, class, flag, opcode, rtype};
pub use zone::Zone;
