//! DNS messages: the request view and the response writer, on the wire format of
//! RFC 1035 with EDNS (RFC 6891). Only this module knows the wire layout; plugins
//! see [`Request`] and push [`Record`]s into a [`Response`].

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
