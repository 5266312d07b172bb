//! Kubernetes API JSON to [`model`](super::model) objects: one object, a list (streamed
//! item by item), or one line of a watch stream.
//!
//! Only the fields DNS uses are read (the ones CoreDNS keeps in `plugin/kubernetes/object`);
//! everything else, `managedFields` and the other annotations included, is skipped by the
//! parser without building a JSON tree. Each field that is read is read leniently (see
//! [`Leaf`] and [`Maybe`]): a field of the wrong JSON type rejects its own object, with the
//! field named in the error, while the rest of the list or watch stream keeps decoding.
//! Only broken JSON syntax ends a stream.
//!
//! The API's own limits ([`limits`](super::limits)) are applied while reading: an array
//! is built up to its cap (1,000 endpoints in a slice) and the rest of it only counted,
//! so an object far over a cap costs the cap, not the object; names and other fields
//! are checked against Kubernetes' validation rules, and an object that breaks one is
//! rejected whole (never cut down to fit).

use std::cell::Cell;
use std::fmt;
use std::io::{self, BufReader, Read};
use std::marker::PhantomData;
use std::net::IpAddr;
use std::ops::ControlFlow;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::limits::{
    MAX_ADDRESSES, MAX_CLUSTER_IPS, MAX_ENDPOINTS, MAX_OBJECT_BYTES, MAX_POD_IP, MAX_RESOURCE_VERSION,
    MAX_SERVICE_PORTS, MAX_SLICE_PORTS, Rule,
};
use super::model::{Endpoint, EndpointSlice, Namespace, Object, ObjectKey, Pod, Port, Resource, Service, ServiceKind};

/// Why an object, a list or a watch event could not be decoded.
#[derive(Debug)]
pub enum DecodeError {
    /// Not JSON, or JSON cut short.
    Json(serde_json::Error),
    /// A field the object needs is missing or empty.
    Missing(&'static str),
    /// A field holds another JSON type than the API defines for it.
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    /// A number outside the field's range.
    OutOfRange { field: &'static str, value: i64 },
    /// The object is of another kind than the resource being read.
    WrongKind { expected: &'static str, found: Box<str> },
    /// A watch event type the API does not define.
    UnknownEventType(Box<str>),
    /// A value the API's validation refuses; `rule` says what it must be. `value` is
    /// the start of it (it may be megabytes long), `len` its length in bytes.
    Invalid {
        field: &'static str,
        rule: Rule,
        value: Box<str>,
        len: usize,
    },
    /// An array with more elements than the API allows.
    TooMany {
        field: &'static str,
        max: usize,
        found: usize,
    },
    /// An object (a watch event line, a list item) of more bytes than this.
    TooLarge(u64),
    /// The reader of a list stopped it, for this reason (a bound of the caller's).
    Stopped(&'static str),
}

impl DecodeError {
    /// The `reason` label under which a rejected object is counted.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge(_) => "too_large",
            DecodeError::TooMany { field, .. } => match *field {
                "endpoints" => "too_many_endpoints",
                "endpoints[].addresses" => "too_many_addresses",
                "spec.clusterIPs" => "too_many_cluster_ips",
                _ => "too_many_ports",
            },
            DecodeError::Invalid { field, .. } if matches!(*field, "metadata.name" | "metadata.namespace") => {
                "invalid_name"
            }
            DecodeError::Invalid { .. } => "invalid_value",
            _ => "malformed",
        }
    }
}

/// Every `reason` label [`DecodeError::reason`] gives.
pub const REASONS: [&str; 8] = [
    "too_large",
    "too_many_endpoints",
    "too_many_addresses",
    "too_many_cluster_ips",
    "too_many_ports",
    "invalid_name",
    "invalid_value",
    "malformed",
];

/// Fails with [`DecodeError::Invalid`] unless `value` passes `rule`.
fn check(field: &'static str, value: &str, rule: Rule) -> Result<(), DecodeError> {
    if rule.allows(value) {
        return Ok(());
    }
    const SHOWN: usize = 40;
    let mut cut = value.len().min(SHOWN);
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    let shown = if cut < value.len() {
        format!("{}…", &value[..cut])
    } else {
        value.to_owned()
    };
    Err(DecodeError::Invalid {
        field,
        rule,
        value: shown.into(),
        len: value.len(),
    })
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Json(e) => write!(f, "invalid JSON: {e}"),
            DecodeError::Missing(field) => write!(f, "{field} is missing"),
            DecodeError::WrongType { field, expected, found } => {
                write!(f, "{field}: expected {expected}, found {found}")
            }
            DecodeError::OutOfRange { field, value } => write!(f, "{field}: {value} is out of range"),
            DecodeError::WrongKind { expected, found } => write!(f, "expected a {expected}, found a {found}"),
            DecodeError::UnknownEventType(t) => write!(f, "unknown watch event type {t:?}"),
            DecodeError::Invalid {
                field,
                rule,
                value,
                len,
            } => {
                write!(f, "{field}: {value:?} ({len} bytes) must be {rule}")
            }
            DecodeError::TooMany { field, max, found } => {
                write!(f, "{field}: {found} elements, more than the API allows ({max})")
            }
            DecodeError::TooLarge(max) => write!(f, "an object larger than {}", crate::config::read::human_bytes(*max)),
            DecodeError::Stopped(why) => f.write_str(why),
        }
    }
}

/// Errors are equal when they read the same (a JSON error has no other equality).
impl PartialEq for DecodeError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DecodeError::Json(e) => Some(e),
            _ => None,
        }
    }
}

impl From<serde_json::Error> for DecodeError {
    fn from(e: serde_json::Error) -> Self {
        DecodeError::Json(e)
    }
}

/// Decodes one object of `resource` (its `kind`, when present, must match).
pub fn decode(resource: Resource, json: &[u8]) -> Result<Object, DecodeError> {
    let raw: Maybe<RawObject> = serde_json::from_slice(json)?;
    let raw = raw.object("the object")?.ok_or(DecodeError::Missing("the object"))?;
    Ok(convert(resource, raw).map_err(|r| r.error)?.object)
}

/// A list's own metadata, returned after its items have all been handed over.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListMeta {
    /// `metadata.resourceVersion`: where a watch of the collection continues from.
    pub resource_version: Box<str>,
    /// `metadata.continue`: the token for the next page; `None` on the last page.
    pub continue_token: Option<Box<str>>,
}

/// Decodes a list (`{"kind":"ServiceList","metadata":{..},"items":[..]}`) from `reader`,
/// handing each item to `on_item` as soon as it is parsed, so that a page is never held
/// in memory twice (as JSON and as objects).
///
/// An item's own `kind` picks its resource, and items of kinds clusterdns does not use are
/// skipped; an item without a `kind` (the API leaves it out of typed lists) is of
/// `resource`, or else of the list's kind (`ServiceList` holds Services). A malformed item,
/// or one that breaks an API rule, is passed on as an error and the list goes on; the
/// returned error is for the list itself (broken JSON, a malformed `metadata`, an item
/// over [`MAX_OBJECT_BYTES`]).
pub fn decode_list<R: io::Read>(
    reader: R,
    resource: Option<Resource>,
    mut on_item: impl FnMut(Result<Object, DecodeError>),
) -> Result<ListMeta, DecodeError> {
    decode_list_bounded(reader, resource, MAX_OBJECT_BYTES, |item| {
        on_item(item);
        ControlFlow::Continue(())
    })
}

/// [`decode_list`] with the bound on an item's size given (`max_item` bytes read since
/// the previous item, counted in the reader's 64 KiB pieces) and a callback that may stop
/// the list: past either, reading stops and the list fails, [`DecodeError::TooLarge`] or
/// [`DecodeError::Stopped`]. No item's JSON is ever held whole: the reader streams it.
pub fn decode_list_bounded<R: io::Read>(
    reader: R,
    resource: Option<Resource>,
    max_item: u64,
    mut on_item: impl FnMut(Result<Object, DecodeError>) -> ControlFlow<&'static str>,
) -> Result<ListMeta, DecodeError> {
    let bound = ItemBound {
        since_item: Cell::new(0),
        max_item,
        stop: Cell::new(None),
    };
    let guarded = BufReader::with_capacity(
        64 << 10,
        BoundedReader {
            inner: reader,
            bound: &bound,
        },
    );
    let result = read_list(
        &mut serde_json::Deserializer::from_reader(guarded),
        resource,
        &mut on_item,
        Some(&bound),
    );
    match (result, bound.stop.get()) {
        (Err(_), Some(Stop::TooLarge)) => Err(DecodeError::TooLarge(max_item)),
        (Err(_), Some(Stop::Caller(why))) => Err(DecodeError::Stopped(why)),
        (result, _) => result,
    }
}

/// [`decode_list`] for a list already in memory (faster than through a reader).
pub fn decode_list_slice(
    json: &[u8],
    resource: Option<Resource>,
    mut on_item: impl FnMut(Result<Object, DecodeError>),
) -> Result<ListMeta, DecodeError> {
    read_list(
        &mut serde_json::Deserializer::from_slice(json),
        resource,
        &mut |item| {
            on_item(item);
            ControlFlow::Continue(())
        },
        None,
    )
}

/// Why a bounded list stopped reading.
#[derive(Clone, Copy)]
enum Stop {
    TooLarge,
    Caller(&'static str),
}

/// What the reader of a bounded list and its item visitor share: bytes read since the
/// last item ended, and why reading must stop.
struct ItemBound {
    since_item: Cell<u64>,
    max_item: u64,
    stop: Cell<Option<Stop>>,
}

impl ItemBound {
    /// An item ended (whatever it was, skipped kinds too).
    fn item_done(&self) {
        self.since_item.set(0);
    }
}

/// The bytes of a list, failing once [`ItemBound`] says stop.
struct BoundedReader<'a, R> {
    inner: R,
    bound: &'a ItemBound,
}

impl<R: Read> Read for BoundedReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.bound.stop.get().is_some() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "list reading stopped"));
        }
        let n = self.inner.read(buf)?;
        let since = self.bound.since_item.get() + n as u64;
        self.bound.since_item.set(since);
        if since > self.bound.max_item {
            self.bound.stop.set(Some(Stop::TooLarge));
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a list item over the limit"));
        }
        Ok(n)
    }
}

type OnItem<'a> = dyn FnMut(Result<Object, DecodeError>) -> ControlFlow<&'static str> + 'a;

fn read_list<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    resource: Option<Resource>,
    on_item: &mut OnItem<'_>,
    bound: Option<&ItemBound>,
) -> Result<ListMeta, DecodeError> {
    let meta = (&mut *de).deserialize_map(ListVisitor {
        resource,
        on_item,
        bound,
    })?;
    de.end()?;
    let meta = meta.object("metadata")?.unwrap_or_default();
    let continue_token = meta
        .continue_token
        .string("metadata.continue")?
        .filter(|t| !t.is_empty());
    Ok(ListMeta {
        resource_version: meta
            .resource_version
            .string("metadata.resourceVersion")?
            .unwrap_or_default(),
        continue_token,
    })
}

/// One event of a watch stream.
#[derive(Debug, PartialEq)]
pub enum WatchEvent {
    /// `ADDED` or `MODIFIED`: the object as it is now.
    Upsert { object: Object, resource_version: Box<str> },
    /// `DELETED`: the key of the object that is gone.
    Delete { key: ObjectKey, resource_version: Box<str> },
    /// `BOOKMARK`: nothing changed; a newer resourceVersion to resume from.
    Bookmark { resource_version: Box<str> },
    /// `ERROR`: the Status the API ended the watch with (code 410: resourceVersion too old).
    Error(ApiStatus),
    /// `ADDED` or `MODIFIED` with an object that is not taken (it breaks an API rule or a
    /// cap, or is malformed), or any event over [`MAX_OBJECT_BYTES`], whose name and
    /// namespace are valid: the object under `key` is no longer what the API has, so a
    /// version of it stored before must go.
    Rejected {
        key: ObjectKey,
        resource_version: Box<str>,
        error: DecodeError,
    },
}

/// A Kubernetes `Status`: the body of API errors and the object of watch `ERROR` events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiStatus {
    /// The HTTP status it stands for (410 for an expired resourceVersion); 0 when absent.
    pub code: u16,
    /// Machine-readable reason, e.g. `Expired`, `Forbidden`.
    pub reason: Box<str>,
    /// Human-readable message.
    pub message: Box<str>,
}

impl fmt::Display for ApiStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

/// Decodes one line of a watch of `resource` (`{"type":"ADDED","object":{..}}`).
pub fn decode_event(resource: Resource, line: &[u8]) -> Result<WatchEvent, DecodeError> {
    let event: RawEvent = serde_json::from_slice(line)?;
    let kind = event.kind.string("type")?.ok_or(DecodeError::Missing("type"))?;
    let mut object = event.object.object("object")?.ok_or(DecodeError::Missing("object"))?;
    match &*kind {
        "ADDED" | "MODIFIED" => match convert(resource, object) {
            Ok(Decoded {
                object,
                resource_version,
            }) => Ok(WatchEvent::Upsert {
                object,
                resource_version,
            }),
            Err(Rejection {
                key: Some(key),
                resource_version,
                error,
            }) => Ok(WatchEvent::Rejected {
                key,
                resource_version,
                error,
            }),
            // Without a valid name, nothing was ever stored under it.
            Err(Rejection { error, .. }) => Err(error),
        },
        "DELETED" => {
            check_kind(resource, std::mem::take(&mut object.kind))?;
            let id = identity(resource, &mut object.metadata.object("metadata")?.unwrap_or_default())?;
            Ok(WatchEvent::Delete {
                key: ObjectKey {
                    namespace: id.namespace,
                    name: id.name,
                },
                resource_version: id.resource_version,
            })
        }
        // A bookmark object carries only `metadata.resourceVersion` (Kubernetes API
        // concepts, "Watch bookmarks").
        "BOOKMARK" => {
            let meta = object.metadata.object("metadata")?.unwrap_or_default();
            let resource_version = meta.resource_version.string("metadata.resourceVersion")?;
            Ok(WatchEvent::Bookmark {
                resource_version: resource_version.ok_or(DecodeError::Missing("metadata.resourceVersion"))?,
            })
        }
        "ERROR" => Ok(WatchEvent::Error(status_of(object))),
        _ => Err(DecodeError::UnknownEventType(kind)),
    }
}

/// What the first `prefix.len()` bytes of a watch line over [`MAX_OBJECT_BYTES`] say:
/// when they hold the event's `type` (ADDED, MODIFIED or DELETED) and the object's whole
/// `metadata` with a valid name (the API server writes `type` first, and an object's
/// `kind`, `apiVersion` and `metadata` before the rest), the key of the object, as
/// [`WatchEvent::Rejected`] with [`DecodeError::TooLarge`]`(max)`: the object is gone
/// from what clusterdns can serve. The prefix is parsed, the fields after the metadata
/// skipped without being built; `None` when it does not tell.
pub fn probe_event(resource: Resource, prefix: &[u8], max: u64) -> Option<WatchEvent> {
    let mut found = Probed::default();
    // The prefix ends mid-JSON: the error is expected, what was read before it counts.
    let _ = serde_json::Deserializer::from_slice(prefix).deserialize_map(EventProbe(&mut found));
    let kind = found.kind?;
    if !matches!(&*kind, "ADDED" | "MODIFIED" | "DELETED") {
        return None;
    }
    check_kind(resource, found.object_kind).ok()?;
    let id = identity(resource, &mut found.meta?).ok()?;
    Some(WatchEvent::Rejected {
        key: ObjectKey {
            namespace: id.namespace,
            name: id.name,
        },
        resource_version: id.resource_version,
        error: DecodeError::TooLarge(max),
    })
}

/// What [`probe_event`] found.
#[derive(Default)]
struct Probed {
    kind: Option<Box<str>>,
    object_kind: Leaf,
    meta: Option<RawMeta>,
}

/// The fields of a watch event the probe looks at.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum EventField {
    Type,
    Object,
    #[serde(other)]
    Other,
}

/// The fields of an object the probe looks at.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum ProbedField {
    Kind,
    Metadata,
    #[serde(other)]
    Other,
}

struct EventProbe<'a>(&'a mut Probed);

impl<'de> Visitor<'de> for EventProbe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a watch event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(field) = map.next_key()? {
            match field {
                EventField::Type => {
                    if let Leaf::Str(kind) = map.next_value()? {
                        self.0.kind = Some(kind);
                    }
                }
                EventField::Object => map.next_value_seed(ObjectProbe(&mut *self.0))?,
                EventField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct ObjectProbe<'a>(&'a mut Probed);

impl<'de> DeserializeSeed<'de> for ObjectProbe<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectProbe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(field) = map.next_key()? {
            match field {
                ProbedField::Kind => self.0.object_kind = map.next_value()?,
                ProbedField::Metadata => {
                    if let Maybe::Present(meta) = map.next_value::<Maybe<RawMeta>>()? {
                        self.0.meta = Some(meta);
                    }
                }
                ProbedField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Reads the `Status` of an API error response body; `None` when the body is not one.
pub fn decode_status(json: &[u8]) -> Option<ApiStatus> {
    let raw: RawObject = serde_json::from_slice(json).ok()?;
    matches!(&raw.kind, Leaf::Str(k) if &**k == "Status").then(|| status_of(raw))
}

/// The fields of a Status, read loosely: it reports an error already, and a wrong-typed
/// field in it should not hide the rest.
fn status_of(raw: RawObject) -> ApiStatus {
    let text = |leaf: Leaf| match leaf {
        Leaf::Str(s) => s,
        _ => "".into(),
    };
    let code = match raw.code {
        Leaf::Int(c) => u16::try_from(c).unwrap_or(0),
        _ => 0,
    };
    ApiStatus {
        code,
        reason: text(raw.reason),
        message: text(raw.message),
    }
}

// ---- Lenient reading -------------------------------------------------------------------

/// A JSON scalar read without committing to its type: the decoder checks the type when it
/// uses the value, so a wrong type is an error for that object and not for the stream.
#[derive(Debug, Default)]
enum Leaf {
    /// Missing or `null`.
    #[default]
    Absent,
    Str(Box<str>),
    Int(i64),
    Bool(bool),
    /// Anything else, named by what was found.
    Other(&'static str),
}

impl Leaf {
    fn found(&self) -> &'static str {
        match self {
            Leaf::Absent => "null",
            Leaf::Str(_) => "a string",
            Leaf::Int(_) => "an integer",
            Leaf::Bool(_) => "a boolean",
            Leaf::Other(found) => found,
        }
    }

    fn wrong(&self, field: &'static str, expected: &'static str) -> DecodeError {
        DecodeError::WrongType {
            field,
            expected,
            found: self.found(),
        }
    }

    fn string(self, field: &'static str) -> Result<Option<Box<str>>, DecodeError> {
        match self {
            Leaf::Absent => Ok(None),
            Leaf::Str(s) => Ok(Some(s)),
            other => Err(other.wrong(field, "a string")),
        }
    }

    fn integer(self, field: &'static str) -> Result<Option<i64>, DecodeError> {
        match self {
            Leaf::Absent => Ok(None),
            Leaf::Int(i) => Ok(Some(i)),
            other => Err(other.wrong(field, "an integer")),
        }
    }

    fn boolean(self, field: &'static str) -> Result<Option<bool>, DecodeError> {
        match self {
            Leaf::Absent => Ok(None),
            Leaf::Bool(b) => Ok(Some(b)),
            other => Err(other.wrong(field, "a boolean")),
        }
    }
}

impl<'de> Deserialize<'de> for Leaf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LeafVisitor)
    }
}

struct LeafVisitor;

impl<'de> Visitor<'de> for LeafVisitor {
    type Value = Leaf;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Leaf, E> {
        Ok(Leaf::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Leaf, E> {
        Ok(Leaf::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Leaf, E> {
        Ok(i64::try_from(v).map_or(Leaf::Other(HUGE_OR_FRACTIONAL), Leaf::Int))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Leaf, E> {
        Ok(Leaf::Other(HUGE_OR_FRACTIONAL))
    }

    fn visit_str<E>(self, v: &str) -> Result<Leaf, E> {
        Ok(Leaf::Str(v.into()))
    }

    fn visit_string<E>(self, v: String) -> Result<Leaf, E> {
        Ok(Leaf::Str(v.into_boxed_str()))
    }

    fn visit_unit<E>(self) -> Result<Leaf, E> {
        Ok(Leaf::Absent)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Leaf, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Leaf::Other("an object"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Leaf, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Leaf::Other("an array"))
    }
}

/// What a number that is not an `i64` is called in errors (serde_json reads integers
/// beyond `u64` as floats).
const HUGE_OR_FRACTIONAL: &str = "a fractional or huge number";

/// An object or array field read leniently: present with its shape, absent (or `null`),
/// or holding another JSON type (skipped, and named for the error message).
#[derive(Debug, Default)]
enum Maybe<T> {
    #[default]
    Absent,
    Present(T),
    Mistyped(&'static str),
}

impl<T> Maybe<T> {
    /// The object, `None` when absent.
    fn object(self, field: &'static str) -> Result<Option<T>, DecodeError> {
        match self {
            Maybe::Absent => Ok(None),
            Maybe::Present(v) => Ok(Some(v)),
            Maybe::Mistyped(found) => Err(DecodeError::WrongType {
                field,
                expected: "an object",
                found,
            }),
        }
    }
}

impl<E, const N: usize> Maybe<Capped<E, N>> {
    /// The array's elements, none when absent (Go encodes a nil slice as `null`); more
    /// than `N` is [`DecodeError::TooMany`].
    fn items(self, field: &'static str) -> Result<Vec<E>, DecodeError> {
        match self {
            Maybe::Absent => Ok(Vec::new()),
            Maybe::Present(c) if c.len > N => Err(DecodeError::TooMany {
                field,
                max: N,
                found: c.len,
            }),
            Maybe::Present(c) => Ok(c.items),
            Maybe::Mistyped(found) => Err(DecodeError::WrongType {
                field,
                expected: "an array",
                found,
            }),
        }
    }
}

/// How a [`Maybe`] field reads a JSON object or array. The defaults skip the value of the
/// shape the field does not have, and report what was found.
trait Shape<'de>: Sized {
    fn from_map<A: MapAccess<'de>>(map: A) -> Result<Maybe<Self>, A::Error> {
        IgnoredAny.visit_map(map)?;
        Ok(Maybe::Mistyped("an object"))
    }

    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Maybe<Self>, A::Error> {
        IgnoredAny.visit_seq(seq)?;
        Ok(Maybe::Mistyped("an array"))
    }
}

impl<'de, T: Shape<'de>> Deserialize<'de> for Maybe<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MaybeVisitor(PhantomData))
    }
}

struct MaybeVisitor<T>(PhantomData<T>);

impl<'de, T: Shape<'de>> Visitor<'de> for MaybeVisitor<T> {
    type Value = Maybe<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Maybe<T>, E> {
        Ok(Maybe::Mistyped("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Maybe<T>, E> {
        Ok(Maybe::Mistyped("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Maybe<T>, E> {
        Ok(Maybe::Mistyped("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Maybe<T>, E> {
        Ok(Maybe::Mistyped("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Maybe<T>, E> {
        Ok(Maybe::Mistyped("a string"))
    }

    fn visit_unit<E>(self) -> Result<Maybe<T>, E> {
        Ok(Maybe::Absent)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Maybe<T>, A::Error> {
        T::from_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Maybe<T>, A::Error> {
        T::from_seq(seq)
    }
}

/// An array read up to `N` elements, the most the API allows there: further elements
/// are parsed past without being built, and only counted, so that an array far over
/// its cap costs the cap. Elements are lenient ([`Leaf`] or [`Maybe`]), so one bad
/// element is reported by the object that owns it.
#[derive(Debug)]
struct Capped<E, const N: usize> {
    items: Vec<E>,
    /// Elements in the JSON array, built or not.
    len: usize,
}

impl<'de, E: Deserialize<'de>, const N: usize> Shape<'de> for Capped<E, N> {
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Maybe<Self>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(N).min(64));
        while items.len() < N {
            match seq.next_element()? {
                Some(item) => items.push(item),
                None => {
                    let len = items.len();
                    return Ok(Maybe::Present(Capped { items, len }));
                }
            }
        }
        let mut len = items.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            len += 1;
        }
        Ok(Maybe::Present(Capped { items, len }))
    }
}

/// The object types, read through their derived `Deserialize` (whose fields are all
/// lenient, so it only fails on broken JSON).
macro_rules! object_shape {
    ($($t:ty),*) => {$(
        impl<'de> Shape<'de> for $t {
            fn from_map<A: MapAccess<'de>>(map: A) -> Result<Maybe<Self>, A::Error> {
                Self::deserialize(MapAccessDeserializer::new(map)).map(Maybe::Present)
            }
        }
    )*};
}

object_shape!(
    RawObject,
    RawMeta,
    RawSpec,
    RawPort,
    RawEndpoint,
    RawConditions,
    RawTargetRef
);

/// The one entry DNS needs from a map (labels, annotations, the pod status); the other
/// entries are skipped without being stored.
struct Picked<K>(Leaf, PhantomData<K>);

/// The key a [`Picked`] map keeps.
trait PickKey {
    const KEY: &'static str;
}

/// `kubernetes.io/service-name`: the Service an EndpointSlice belongs to.
enum ServiceNameLabel {}

impl PickKey for ServiceNameLabel {
    const KEY: &'static str = "kubernetes.io/service-name";
}

/// `endpoints.kubernetes.io/last-change-trigger-time`: when the change that produced an
/// EndpointSlice happened (for the DNS programming latency metric).
enum TriggerTimeAnnotation {}

impl PickKey for TriggerTimeAnnotation {
    const KEY: &'static str = "endpoints.kubernetes.io/last-change-trigger-time";
}

/// `status.podIP` of a Pod.
enum PodIp {}

impl PickKey for PodIp {
    const KEY: &'static str = "podIP";
}

impl<'de, K: PickKey> Shape<'de> for Picked<K> {
    fn from_map<A: MapAccess<'de>>(mut map: A) -> Result<Maybe<Self>, A::Error> {
        let mut value = Leaf::Absent;
        while let Some(wanted) = map.next_key_seed(KeyIs(K::KEY))? {
            if wanted {
                value = map.next_value()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Maybe::Present(Picked(value, PhantomData)))
    }
}

impl<K> Maybe<Picked<K>> {
    /// The picked entry of the map in `field`.
    fn entry(self, field: &'static str) -> Result<Leaf, DecodeError> {
        Ok(self.object(field)?.map_or(Leaf::Absent, |p| p.0))
    }
}

/// Compares a map key with the wanted one without allocating it.
struct KeyIs(&'static str);

impl<'de> DeserializeSeed<'de> for KeyIs {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map key")
    }

    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

// ---- The API's shapes (only the fields DNS reads) ---------------------------------------

/// Any object of the watched kinds, or a Status: the union of the fields read from each.
/// One type for all kinds lets a mixed-kind list (`kubectl get ... -o json`) be read in
/// one pass, whatever order the fields come in.
#[derive(Default, Deserialize)]
#[serde(default)]
struct RawObject {
    kind: Leaf,
    metadata: Maybe<RawMeta>,
    spec: Maybe<RawSpec>,
    /// An object for Pods; a string (`Failure`) for a Status.
    status: Maybe<Picked<PodIp>>,
    /// EndpointSlice `endpoints`.
    endpoints: Maybe<Capped<Maybe<RawEndpoint>, MAX_ENDPOINTS>>,
    /// EndpointSlice `ports`.
    ports: Maybe<Capped<Maybe<RawPort>, MAX_SLICE_PORTS>>,
    /// Status `code`, `reason`, `message`.
    code: Leaf,
    reason: Leaf,
    message: Leaf,
}

/// `metadata` of objects and of lists.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawMeta {
    name: Leaf,
    namespace: Leaf,
    resource_version: Leaf,
    deletion_timestamp: Leaf,
    labels: Maybe<Picked<ServiceNameLabel>>,
    annotations: Maybe<Picked<TriggerTimeAnnotation>>,
    #[serde(rename = "continue")]
    continue_token: Leaf,
}

/// Service `spec`.
#[derive(Default, Deserialize)]
#[serde(default)]
struct RawSpec {
    #[serde(rename = "type")]
    kind: Leaf,
    #[serde(rename = "clusterIP")]
    cluster_ip: Leaf,
    #[serde(rename = "clusterIPs")]
    cluster_ips: Maybe<Capped<Leaf, MAX_CLUSTER_IPS>>,
    #[serde(rename = "externalName")]
    external_name: Leaf,
    ports: Maybe<Capped<Maybe<RawPort>, MAX_SERVICE_PORTS>>,
}

/// A Service port or an EndpointSlice port.
#[derive(Default, Deserialize)]
#[serde(default)]
struct RawPort {
    name: Leaf,
    protocol: Leaf,
    port: Leaf,
}

/// An EndpointSlice endpoint.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct RawEndpoint {
    addresses: Maybe<Capped<Leaf, MAX_ADDRESSES>>,
    conditions: Maybe<RawConditions>,
    hostname: Leaf,
    node_name: Leaf,
    target_ref: Maybe<RawTargetRef>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawConditions {
    ready: Leaf,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RawTargetRef {
    kind: Leaf,
    name: Leaf,
}

/// A watch event line.
#[derive(Default, Deserialize)]
#[serde(default)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: Leaf,
    object: Maybe<RawObject>,
}

/// The top-level fields of a list.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum ListField {
    Kind,
    Metadata,
    Items,
    #[serde(other)]
    Other,
}

/// Reads a list's fields, streaming `items` to the callback.
struct ListVisitor<'a, 'b> {
    resource: Option<Resource>,
    on_item: &'a mut OnItem<'b>,
    bound: Option<&'a ItemBound>,
}

impl<'de> Visitor<'de> for ListVisitor<'_, '_> {
    type Value = Maybe<RawMeta>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes List object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Maybe<RawMeta>, A::Error> {
        let mut meta = Maybe::Absent;
        let mut list_resource = None;
        while let Some(field) = map.next_key()? {
            match field {
                ListField::Kind => {
                    if let Leaf::Str(kind) = map.next_value()? {
                        list_resource = kind.strip_suffix("List").and_then(resource_of_kind);
                    }
                }
                ListField::Metadata => meta = map.next_value()?,
                ListField::Items => {
                    let default = self.resource.or(list_resource);
                    map.next_value_seed(Items {
                        default,
                        on_item: &mut *self.on_item,
                        bound: self.bound,
                    })?;
                }
                ListField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(meta)
    }
}

/// The `items` array of a list: each item is decoded and handed over on its own.
struct Items<'a, 'b> {
    default: Option<Resource>,
    on_item: &'a mut OnItem<'b>,
    bound: Option<&'a ItemBound>,
}

impl<'de> DeserializeSeed<'de> for Items<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Items<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of items")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<Maybe<RawObject>>()? {
            if let Some(bound) = self.bound {
                bound.item_done();
            }
            if let Some(decoded) = list_item(self.default, item) {
                if let ControlFlow::Break(why) = (self.on_item)(decoded) {
                    if let Some(bound) = self.bound {
                        bound.stop.set(Some(Stop::Caller(why)));
                    }
                    return Err(serde::de::Error::custom(why));
                }
            }
        }
        Ok(())
    }
}

/// One list item: `None` for a kind clusterdns does not use (a `kubectl get all` dump
/// holds Deployments, ConfigMaps...).
fn list_item(default: Option<Resource>, item: Maybe<RawObject>) -> Option<Result<Object, DecodeError>> {
    let raw = match item.object("items[]") {
        Ok(Some(raw)) => raw,
        Ok(None) => return Some(Err(DecodeError::Missing("items[]"))),
        Err(e) => return Some(Err(e)),
    };
    let resource = match &raw.kind {
        Leaf::Str(kind) => resource_of_kind(kind)?,
        Leaf::Absent => match default {
            Some(resource) => resource,
            None => return Some(Err(DecodeError::Missing("kind"))),
        },
        other => return Some(Err(other.wrong("kind", "a string"))),
    };
    Some(convert(resource, raw).map(|d| d.object).map_err(|r| r.error))
}

fn resource_of_kind(kind: &str) -> Option<Resource> {
    [
        Resource::Namespaces,
        Resource::Services,
        Resource::EndpointSlices,
        Resource::Pods,
    ]
    .into_iter()
    .find(|r| r.kind() == kind)
}

// ---- Conversion to the model -------------------------------------------------------------

/// An object with the resourceVersion it had (which Namespaces do not keep).
struct Decoded {
    object: Object,
    resource_version: Box<str>,
}

/// Why an object was not taken, with its key when its name and namespace are valid (so
/// that a version stored before can be removed).
struct Rejection {
    key: Option<ObjectKey>,
    resource_version: Box<str>,
    error: DecodeError,
}

impl From<DecodeError> for Rejection {
    fn from(error: DecodeError) -> Self {
        Rejection {
            key: None,
            resource_version: "".into(),
            error,
        }
    }
}

/// An object's name, namespace and resourceVersion.
struct Identity {
    namespace: Box<str>,
    name: Box<str>,
    resource_version: Box<str>,
}

fn check_kind(resource: Resource, kind: Leaf) -> Result<(), DecodeError> {
    match kind.string("kind")? {
        Some(kind) if &*kind != resource.kind() => Err(DecodeError::WrongKind {
            expected: resource.kind(),
            found: kind,
        }),
        _ => Ok(()),
    }
}

/// Names are lower-cased so that every key and DNS label is compared in one case (DNS
/// names are case-insensitive; the API already requires lower-case object names), and
/// must be what the API allows: Namespace and Service names are DNS-1123 labels
/// (`ValidateNamespaceName`; `ValidateServiceName` is the stricter DNS-1035 label, or a
/// DNS-1123 label with `RelaxedServiceNameValidation`, which is what is taken here),
/// EndpointSlice and Pod names DNS-1123 subdomains (`ValidateEndpointSliceName`,
/// `ValidatePodName`), `metadata.namespace` a DNS-1123 label.
fn identity(resource: Resource, meta: &mut RawMeta) -> Result<Identity, DecodeError> {
    let name = std::mem::take(&mut meta.name)
        .string("metadata.name")?
        .filter(|n| !n.is_empty());
    let name = lower(name.ok_or(DecodeError::Missing("metadata.name"))?);
    let name_rule = match resource {
        Resource::Namespaces | Resource::Services => Rule::Label,
        Resource::EndpointSlices | Resource::Pods => Rule::Subdomain,
    };
    check("metadata.name", &name, name_rule)?;
    let namespace = std::mem::take(&mut meta.namespace).string("metadata.namespace")?;
    let namespace = match resource {
        // Namespaces are cluster-scoped: their key has no namespace.
        Resource::Namespaces => "".into(),
        _ => lower(
            namespace
                .filter(|n| !n.is_empty())
                .ok_or(DecodeError::Missing("metadata.namespace"))?,
        ),
    };
    if resource != Resource::Namespaces {
        check("metadata.namespace", &namespace, Rule::Label)?;
    }
    let resource_version = std::mem::take(&mut meta.resource_version).string("metadata.resourceVersion")?;
    if let Some(rv) = &resource_version {
        check("metadata.resourceVersion", rv, Rule::MaxLen(MAX_RESOURCE_VERSION))?;
    }
    Ok(Identity {
        namespace,
        name,
        resource_version: resource_version.unwrap_or_default(),
    })
}

/// The object of `resource` in `raw`, or why it is not taken (with its key when the
/// object got as far as a valid name).
fn convert(resource: Resource, raw: RawObject) -> Result<Decoded, Rejection> {
    check_kind(resource, raw.kind)?;
    let mut meta = raw.metadata.object("metadata")?.unwrap_or_default();
    let id = identity(resource, &mut meta)?;
    let key = ObjectKey {
        namespace: id.namespace.clone(),
        name: id.name.clone(),
    };
    let resource_version = id.resource_version.clone();
    let object = match resource {
        Resource::Namespaces => Ok(Object::Namespace(Namespace { name: id.name })),
        Resource::Services => raw
            .spec
            .object("spec")
            .and_then(|spec| service(id, spec.unwrap_or_default()))
            .map(Object::Service),
        Resource::EndpointSlices => endpoint_slice(id, meta, raw.endpoints, raw.ports).map(Object::EndpointSlice),
        Resource::Pods => pod(id, meta, raw.status).map(Object::Pod),
    };
    match object {
        Ok(object) => Ok(Decoded {
            object,
            resource_version,
        }),
        Err(error) => Err(Rejection {
            key: Some(key),
            resource_version,
            error,
        }),
    }
}

/// A Service as CoreDNS's `object.ToService` keeps it.
fn service(id: Identity, spec: RawSpec) -> Result<Service, DecodeError> {
    let service_type = spec.kind.string("spec.type")?;
    let mut ips = Vec::new();
    for ip in spec.cluster_ips.items("spec.clusterIPs")? {
        ips.extend(ip.string("spec.clusterIPs[]")?);
    }
    // `clusterIPs` is newer than `clusterIP` (dual-stack, Kubernetes 1.20); CoreDNS falls
    // back to the single field when the list is empty.
    if ips.is_empty() {
        ips.extend(spec.cluster_ip.string("spec.clusterIP")?);
    }
    let kind = if service_type.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName
    } else if ips.first().is_some_and(|ip| &**ip == "None") {
        ServiceKind::Headless
    } else {
        ServiceKind::ClusterIp
    };
    let external_name = spec.external_name.string("spec.externalName")?;
    if let (ServiceKind::ExternalName, Some(target)) = (&kind, &external_name) {
        // `ValidateService`: a DNS-1123 subdomain, which may end with a dot.
        let target = target.strip_suffix('.').unwrap_or(target);
        if !target.is_empty() {
            check("spec.externalName", target, Rule::Subdomain)?;
        }
    }
    let (cluster_ips, external_name) = match kind {
        // Text that is not an address (an unassigned "" or a stray "None") answers nothing.
        ServiceKind::ClusterIp => (ips.iter().filter_map(|ip| ip.parse().ok()).collect(), "".into()),
        ServiceKind::Headless => (Vec::new(), "".into()),
        ServiceKind::ExternalName => (Vec::new(), external_name.unwrap_or_default()),
    };
    Ok(Service {
        namespace: id.namespace,
        name: id.name,
        resource_version: id.resource_version,
        kind,
        cluster_ips,
        external_name,
        ports: ports(spec.ports, &SERVICE_PORTS)?,
    })
}

/// Field names of a port list, for errors.
struct PortFields {
    list: &'static str,
    item: &'static str,
    name: &'static str,
    protocol: &'static str,
    port: &'static str,
}

const SERVICE_PORTS: PortFields = PortFields {
    list: "spec.ports",
    item: "spec.ports[]",
    name: "spec.ports[].name",
    protocol: "spec.ports[].protocol",
    port: "spec.ports[].port",
};

const SLICE_PORTS: PortFields = PortFields {
    list: "ports",
    item: "ports[]",
    name: "ports[].name",
    protocol: "ports[].protocol",
    port: "ports[].port",
};

/// Ports of a Service or an EndpointSlice. No ports becomes CoreDNS's sentinel port -1
/// (`object/service.go`, `object/endpoint.go`), so the names still answer A queries.
/// A port's name is a DNS-1123 label (`validateServicePort`, the discovery API's
/// `validatePorts`: it becomes the `_name` label of SRV names), its protocol TCP, UDP
/// or SCTP.
fn ports<const N: usize>(raw: Maybe<Capped<Maybe<RawPort>, N>>, fields: &PortFields) -> Result<Vec<Port>, DecodeError> {
    let mut ports = Vec::new();
    for port in raw.items(fields.list)? {
        let port = port.object(fields.item)?.unwrap_or_default();
        let number = match port.port.integer(fields.port)? {
            // EndpointSlice ports may omit the number (all ports of the endpoints).
            None => -1,
            Some(n @ 0..=65535) => n as i32,
            Some(n) => {
                return Err(DecodeError::OutOfRange {
                    field: fields.port,
                    value: n,
                });
            }
        };
        let name = lower(port.name.string(fields.name)?.unwrap_or_default());
        if !name.is_empty() {
            check(fields.name, &name, Rule::Label)?;
        }
        // TCP is the API's default protocol.
        let protocol = lower(port.protocol.string(fields.protocol)?.unwrap_or_else(|| "tcp".into()));
        check(fields.protocol, &protocol, Rule::Protocol)?;
        ports.push(Port {
            name,
            protocol,
            port: number,
        });
    }
    if ports.is_empty() {
        ports.push(Port {
            name: "".into(),
            protocol: "tcp".into(),
            port: -1,
        });
    }
    Ok(ports)
}

/// An EndpointSlice as CoreDNS's `object.EndpointSliceToEndpoints` keeps it.
/// Limits (the discovery API's validation): at most 1,000 endpoints, 100 addresses an
/// endpoint, 20,000 ports; a `hostname` is a DNS-1123 label, a `nodeName` a DNS-1123
/// subdomain, the service-name label a label value.
fn endpoint_slice(
    id: Identity,
    meta: RawMeta,
    endpoints: Maybe<Capped<Maybe<RawEndpoint>, MAX_ENDPOINTS>>,
    raw_ports: Maybe<Capped<Maybe<RawPort>, MAX_SLICE_PORTS>>,
) -> Result<EndpointSlice, DecodeError> {
    let service = meta
        .labels
        .entry("metadata.labels")?
        .string("metadata.labels[kubernetes.io/service-name]")?;
    if let Some(service) = &service {
        check("metadata.labels[kubernetes.io/service-name]", service, Rule::LabelValue)?;
    }
    // Only a metric depends on the trigger time: a malformed one is dropped, not fatal.
    let trigger = meta.annotations.entry("metadata.annotations")?;
    let last_change_trigger = match trigger {
        Leaf::Str(t) => parse_rfc3339(&t),
        _ => None,
    };
    let mut ready = Vec::new();
    for endpoint in endpoints.items("endpoints")? {
        let endpoint = endpoint.object("endpoints[]")?.unwrap_or_default();
        let conditions = endpoint
            .conditions
            .object("endpoints[].conditions")?
            .unwrap_or_default();
        // Kubernetes: "ready" absent means unknown, to be treated as ready; CoreDNS
        // (`endpointsliceReady`) ignores serving and terminating.
        if conditions.ready.boolean("endpoints[].conditions.ready")? == Some(false) {
            continue;
        }
        let mut addresses = Vec::new();
        for address in endpoint.addresses.items("endpoints[].addresses")? {
            let Some(text) = address.string("endpoints[].addresses[]")? else {
                continue;
            };
            // An address that does not parse cannot be answered; the others still can.
            if let Ok(ip) = text.parse::<IpAddr>() {
                addresses.push((ip, text));
            }
        }
        let hostname = endpoint
            .hostname
            .string("endpoints[].hostname")?
            .filter(|h| !h.is_empty())
            .map(lower);
        if let Some(hostname) = &hostname {
            check("endpoints[].hostname", hostname, Rule::Label)?;
        }
        let target = endpoint.target_ref.object("endpoints[].targetRef")?.unwrap_or_default();
        let target_kind = target.kind.string("endpoints[].targetRef.kind")?;
        let target_name = target.name.string("endpoints[].targetRef.name")?;
        // CoreDNS keeps the target name only below 64 characters: longer is not a DNS label.
        let pod_name = target_name
            .filter(|n| target_kind.as_deref() == Some("Pod") && !n.is_empty() && n.len() < 64)
            .map(lower);
        let node_name = endpoint.node_name.string("endpoints[].nodeName")?;
        if let Some(node) = node_name.as_deref().filter(|n| !n.is_empty()) {
            check("endpoints[].nodeName", node, Rule::Subdomain)?;
        }
        if !addresses.is_empty() {
            ready.push(Endpoint {
                addresses,
                hostname,
                pod_name,
                node_name,
            });
        }
    }
    Ok(EndpointSlice {
        namespace: id.namespace,
        name: id.name,
        resource_version: id.resource_version,
        service: lower(service.unwrap_or_default()),
        endpoints: ready,
        ports: ports(raw_ports, &SLICE_PORTS)?,
        last_change_trigger,
    })
}

/// A Pod as CoreDNS's `object.ToPod` keeps it.
fn pod(id: Identity, meta: RawMeta, status: Maybe<Picked<PodIp>>) -> Result<Pod, DecodeError> {
    let pod_ip = status.entry("status")?.string("status.podIP")?;
    if let Some(ip) = &pod_ip {
        check("status.podIP", ip, Rule::MaxLen(MAX_POD_IP))?;
    }
    let terminating = meta
        .deletion_timestamp
        .string("metadata.deletionTimestamp")?
        .is_some_and(|t| !t.is_empty());
    Ok(Pod {
        namespace: id.namespace,
        name: id.name,
        resource_version: id.resource_version,
        pod_ip: pod_ip.unwrap_or_default(),
        terminating,
    })
}

fn lower(s: Box<str>) -> Box<str> {
    let mut s = s.into_string();
    s.make_ascii_lowercase();
    s.into_boxed_str()
}

/// Parses an RFC 3339 timestamp as Kubernetes writes `metav1.Time` and `MicroTime`
/// (`2024-05-01T10:00:00Z`, `2024-05-01T10:00:00.123456+02:00`) into Unix seconds.
fn parse_rfc3339(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let digits = b.get(from..to)?;
        digits
            .iter()
            .try_fold(0i64, |n, &d| d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut fraction = 0.0;
    if sep(at, b".") {
        let start = at + 1;
        at = start;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return None;
        }
        fraction = s[start - 1..at].parse::<f64>().ok()?;
    }
    let offset = match b.get(at)? {
        b'Z' | b'z' if at + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if at + 6 == b.len() && sep(at + 3, b":") => {
            let (h, m) = (num(at + 1, at + 3)?, num(at + 4, at + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let offset = h * 3600 + m * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(seconds as f64 + fraction)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(json: &str) -> Service {
        match decode(Resource::Services, json.as_bytes()).unwrap() {
            Object::Service(s) => s,
            other => panic!("not a service: {other:?}"),
        }
    }

    fn slice(json: &str) -> EndpointSlice {
        match decode(Resource::EndpointSlices, json.as_bytes()).unwrap() {
            Object::EndpointSlice(s) => s,
            other => panic!("not a slice: {other:?}"),
        }
    }

    fn pod(json: &str) -> Pod {
        match decode(Resource::Pods, json.as_bytes()).unwrap() {
            Object::Pod(p) => p,
            other => panic!("not a pod: {other:?}"),
        }
    }

    fn port(name: &str, protocol: &str, port: i32) -> Port {
        Port {
            name: name.into(),
            protocol: protocol.into(),
            port,
        }
    }

    fn error(resource: Resource, json: &str) -> String {
        decode(resource, json.as_bytes()).unwrap_err().to_string()
    }

    /// A Service as `kubectl get svc -o json` shows it, with the fields DNS does not use.
    const KUBE_DNS: &str = r#"{
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"Service\"}\n",
                "prometheus.io/port": "9153"
            },
            "creationTimestamp": "2024-01-10T09:00:00Z",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"},
            "managedFields": [{
                "apiVersion": "v1", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:ports": {"k:{\"port\":53,\"protocol\":\"TCP\"}": {".": {}}}}},
                "manager": "kubeadm", "operation": "Update", "time": "2024-01-10T09:00:00Z"
            }],
            "name": "Kube-DNS",
            "namespace": "kube-system",
            "resourceVersion": "12345",
            "uid": "0b3f2b8e-8f38-4a4e-9d2b-3c1c6f1e2a11"
        },
        "spec": {
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10", "fd00:10:96::a"],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4", "IPv6"],
            "ipFamilyPolicy": "PreferDualStack",
            "ports": [
                {"name": "DNS", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": "dns-tcp"},
                {"name": "metrics", "port": 9153, "targetPort": 9153}
            ],
            "selector": {"k8s-app": "kube-dns"},
            "sessionAffinity": "None",
            "type": "ClusterIP",
            "futureField": {"nested": [1, 2, {"x": null}]}
        },
        "status": {"loadBalancer": {}}
    }"#;

    #[test]
    fn service_keeps_what_dns_needs() {
        let s = service(KUBE_DNS);
        assert_eq!(&*s.namespace, "kube-system");
        assert_eq!(&*s.name, "kube-dns", "names are lower-cased");
        assert_eq!(&*s.resource_version, "12345");
        assert_eq!(s.kind, ServiceKind::ClusterIp);
        assert_eq!(
            s.cluster_ips,
            [
                "10.96.0.10".parse::<IpAddr>().unwrap(),
                "fd00:10:96::a".parse().unwrap()
            ]
        );
        assert_eq!(&*s.external_name, "");
        // Port names and protocols lower-cased; a missing protocol is TCP.
        assert_eq!(
            s.ports,
            [
                port("dns", "udp", 53),
                port("dns-tcp", "tcp", 53),
                port("metrics", "tcp", 9153)
            ]
        );
    }

    #[test]
    fn service_cluster_ip_fallback_and_invalid_ips() {
        let s = service(r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"clusterIP":"10.0.0.1"}}"#);
        assert_eq!(s.cluster_ips, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        let s =
            service(r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"clusterIPs":[],"clusterIP":"10.0.0.2"}}"#);
        assert_eq!(s.cluster_ips, ["10.0.0.2".parse::<IpAddr>().unwrap()]);
        // Invalid addresses are skipped, the valid ones kept; `clusterIPs` wins over `clusterIP`.
        let s = service(
            r#"{"metadata":{"name":"a","namespace":"ns"},
                "spec":{"clusterIP":"10.0.0.9","clusterIPs":["10.0.0.300","fd00::1"]}}"#,
        );
        assert_eq!(s.kind, ServiceKind::ClusterIp);
        assert_eq!(s.cluster_ips, ["fd00::1".parse::<IpAddr>().unwrap()]);
        // More than two (one per family) is not a Service the API holds.
        assert_eq!(
            error(
                Resource::Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"clusterIPs":["10.0.0.1","fd00::1",""]}}"#
            ),
            "spec.clusterIPs: 3 elements, more than the API allows (2)"
        );
        // No IP at all (not yet allocated) is still a ClusterIP service, with nothing to answer.
        let s = service(r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{}}"#);
        assert_eq!((s.kind, s.cluster_ips.len()), (ServiceKind::ClusterIp, 0));
    }

    #[test]
    fn service_headless_and_external_name() {
        let s = service(
            r#"{"kind":"Service","metadata":{"name":"db","namespace":"ns","resourceVersion":"7"},
                "spec":{"clusterIP":"None","clusterIPs":["None"],"type":"ClusterIP",
                        "ports":[{"name":"pg","port":5432,"protocol":"TCP"}]}}"#,
        );
        assert_eq!(s.kind, ServiceKind::Headless);
        assert!(s.cluster_ips.is_empty());
        // Headless iff the *first* cluster IP is "None".
        let s = service(r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"clusterIPs":["10.0.0.1","None"]}}"#);
        assert_eq!(s.kind, ServiceKind::ClusterIp);

        let s = service(
            r#"{"metadata":{"name":"ext","namespace":"ns"},
                "spec":{"type":"ExternalName","externalName":"Example.COM.","clusterIP":"10.0.0.1"}}"#,
        );
        assert_eq!(s.kind, ServiceKind::ExternalName);
        assert_eq!(&*s.external_name, "Example.COM.", "kept as given");
        assert!(s.cluster_ips.is_empty());
        // No ports: the sentinel, so that the name still answers.
        assert_eq!(s.ports, [port("", "tcp", -1)]);
    }

    #[test]
    fn service_without_ports_gets_the_sentinel() {
        for spec in [r#"{}"#, r#"{"ports":null}"#, r#"{"ports":[]}"#] {
            let json = format!(r#"{{"metadata":{{"name":"a","namespace":"ns"}},"spec":{spec}}}"#);
            assert_eq!(service(&json).ports, [port("", "tcp", -1)], "{spec}");
        }
    }

    /// An EndpointSlice as the EndpointSlice controller writes it.
    const SLICE: &str = r#"{
        "addressType": "IPv4",
        "apiVersion": "discovery.k8s.io/v1",
        "endpoints": [
            {"addresses": ["10.244.1.5"], "conditions": {"ready": true, "serving": true, "terminating": false},
             "hostname": "Web-0", "nodeName": "node-1",
             "targetRef": {"kind": "Pod", "name": "Web-0", "namespace": "default", "uid": "1b"},
             "zone": "zone-a"},
            {"addresses": ["10.244.2.6", "not-an-ip", "10.244.2.7"],
             "targetRef": {"kind": "Pod", "name": "a-pod-name-that-is-exactly-sixty-four-characters-long-0123456789"}},
            {"addresses": ["10.244.3.8"], "conditions": {"ready": false, "serving": true, "terminating": true},
             "targetRef": {"kind": "Pod", "name": "web-2"}},
            {"addresses": ["10.244.4.9"], "conditions": {}, "targetRef": {"kind": "Node", "name": "node-4"}},
            {"addresses": ["999.1.1.1"], "conditions": {"ready": true}}
        ],
        "kind": "EndpointSlice",
        "metadata": {
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2024-05-01T10:00:00.5Z"},
            "creationTimestamp": "2024-05-01T10:00:00Z",
            "generateName": "web-",
            "generation": 4,
            "labels": {
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                "kubernetes.io/service-name": "Web"
            },
            "managedFields": [{"manager": "kube-controller-manager", "fieldsV1": {"f:endpoints": {}}}],
            "name": "web-abcde",
            "namespace": "default",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "9c"}],
            "resourceVersion": "889"
        },
        "ports": [
            {"name": "HTTP", "port": 8080, "protocol": "TCP"},
            {"port": 9090, "protocol": "UDP"},
            {"name": "any", "protocol": "SCTP"}
        ]
    }"#;

    #[test]
    fn endpoint_slice_keeps_ready_endpoints_only() {
        let s = slice(SLICE);
        assert_eq!(
            (&*s.namespace, &*s.name, &*s.resource_version),
            ("default", "web-abcde", "889")
        );
        assert_eq!(&*s.service, "web");
        assert_eq!(s.last_change_trigger, Some(1_714_557_600.5));
        assert_eq!(
            s.ports,
            [
                port("http", "tcp", 8080),
                port("", "udp", 9090),
                port("any", "sctp", -1)
            ]
        );
        let ip = |s: &str| (s.parse::<IpAddr>().unwrap(), Box::<str>::from(s));
        assert_eq!(
            s.endpoints,
            [
                Endpoint {
                    addresses: vec![ip("10.244.1.5")],
                    hostname: Some("web-0".into()),
                    pod_name: Some("web-0".into()),
                    node_name: Some("node-1".into()),
                },
                // `ready` absent counts as ready; the invalid address is skipped; a
                // 64-character target name is not kept.
                Endpoint {
                    addresses: vec![ip("10.244.2.6"), ip("10.244.2.7")],
                    hostname: None,
                    pod_name: None,
                    node_name: None,
                },
                // ready: false is skipped whatever serving says; a Node target is no pod name.
                Endpoint {
                    addresses: vec![ip("10.244.4.9")],
                    hostname: None,
                    pod_name: None,
                    node_name: None
                },
                // The endpoint with only an invalid address is dropped.
            ]
        );
    }

    #[test]
    fn endpoint_slice_nulls_and_defaults() {
        // Go encodes nil slices as null; a slice without the label belongs to no service.
        let s = slice(
            r#"{"addressType":"IPv4","endpoints":null,"ports":null,
                "metadata":{"name":"s","namespace":"ns","labels":{"app":"x"},
                            "annotations":{"endpoints.kubernetes.io/last-change-trigger-time":"yesterday"}}}"#,
        );
        assert!(s.endpoints.is_empty());
        assert_eq!(s.ports, [port("", "tcp", -1)]);
        assert_eq!(&*s.service, "");
        assert_eq!(s.last_change_trigger, None, "an unparseable trigger time is dropped");
        let s = slice(r#"{"metadata":{"name":"s","namespace":"ns"},"endpoints":[{"addresses":["fd00::5"]}]}"#);
        assert_eq!(
            s.endpoints[0].addresses,
            [("fd00::5".parse().unwrap(), "fd00::5".into())]
        );
    }

    #[test]
    fn pods_and_namespaces() {
        let p = pod(r#"{
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "default", "resourceVersion": "55",
                         "labels": {"app": "web"}, "managedFields": [{"manager": "kubelet"}]},
            "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}],
                     "hostname": "web-0", "nodeName": "node-1"},
            "status": {"phase": "Running", "podIP": "10.244.1.5",
                       "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}], "conditions": [{"type": "Ready"}]}
        }"#);
        assert_eq!(
            p,
            Pod {
                namespace: "default".into(),
                name: "web-0".into(),
                resource_version: "55".into(),
                pod_ip: "10.244.1.5".into(),
                terminating: false
            }
        );
        let p = pod(
            r#"{"metadata":{"name":"p","namespace":"ns","deletionTimestamp":"2024-05-01T10:00:00Z"},
                        "status":{"phase":"Running","podIP":"10.0.0.1"}}"#,
        );
        assert!(p.terminating);
        let p =
            pod(r#"{"metadata":{"name":"p","namespace":"ns","deletionTimestamp":null},"status":{"phase":"Pending"}}"#);
        assert_eq!((&*p.pod_ip, p.terminating), ("", false));

        let ns = decode(
            Resource::Namespaces,
            br#"{"apiVersion":"v1","kind":"Namespace",
                 "metadata":{"name":"kube-system","labels":{"kubernetes.io/metadata.name":"kube-system"},
                             "resourceVersion":"4"},
                 "spec":{"finalizers":["kubernetes"]},"status":{"phase":"Active"}}"#,
        )
        .unwrap();
        assert_eq!(
            ns,
            Object::Namespace(Namespace {
                name: "kube-system".into()
            })
        );
        assert_eq!(
            ns.key(),
            ObjectKey {
                namespace: "".into(),
                name: "kube-system".into()
            }
        );
    }

    #[test]
    fn malformed_objects_are_errors() {
        use Resource::*;
        let cases: &[(Resource, &str, &str)] = &[
            (
                Services,
                r#"{"metadata":{"name":1,"namespace":"ns"}}"#,
                "metadata.name: expected a string, found an integer",
            ),
            (
                Services,
                r#"{"metadata":{"namespace":"ns"}}"#,
                "metadata.name is missing",
            ),
            (
                Services,
                r#"{"metadata":{"name":"","namespace":"ns"}}"#,
                "metadata.name is missing",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a"}}"#,
                "metadata.namespace is missing",
            ),
            (
                Services,
                r#"{"metadata":"x"}"#,
                "metadata: expected an object, found a string",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":[1]}"#,
                "spec: expected an object, found an array",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"ports":[{"port":"80"}]}}"#,
                "spec.ports[].port: expected an integer, found a string",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"ports":[{"port":70000}]}}"#,
                "spec.ports[].port: 70000 is out of range",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"ports":[{"port":-5}]}}"#,
                "spec.ports[].port: -5 is out of range",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"ports":[{"port":99999999999999999999999}]}}"#,
                "spec.ports[].port: expected an integer, found a fractional or huge number",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"ports":[{"port":18446744073709551615}]}}"#,
                "spec.ports[].port: expected an integer, found a fractional or huge number",
            ),
            (
                Services,
                r#"{"metadata":{"name":"a","namespace":"ns"},"spec":{"clusterIPs":"10.0.0.1"}}"#,
                "spec.clusterIPs: expected an array, found a string",
            ),
            (
                Services,
                r#"{"kind":"Pod","metadata":{"name":"a","namespace":"ns"}}"#,
                "expected a Service, found a Pod",
            ),
            (
                EndpointSlices,
                r#"{"metadata":{"name":"a","namespace":"ns"},"endpoints":[{"addresses":[1]}]}"#,
                "endpoints[].addresses[]: expected a string, found an integer",
            ),
            (
                EndpointSlices,
                r#"{"metadata":{"name":"a","namespace":"ns"},"endpoints":[{"conditions":{"ready":"yes"}}]}"#,
                "endpoints[].conditions.ready: expected a boolean, found a string",
            ),
            (
                EndpointSlices,
                r#"{"metadata":{"name":"a","namespace":"ns","labels":{"kubernetes.io/service-name":true}}}"#,
                "metadata.labels[kubernetes.io/service-name]: expected a string, found a boolean",
            ),
            (
                Pods,
                r#"{"metadata":{"name":"a","namespace":"ns"},"status":{"podIP":[]}}"#,
                "status.podIP: expected a string, found an array",
            ),
            (Namespaces, r#"[]"#, "the object: expected an object, found an array"),
            (Namespaces, r#"null"#, "the object is missing"),
            (Namespaces, r#""x""#, "the object: expected an object, found a string"),
        ];
        for (resource, json, want) in cases {
            assert_eq!(error(*resource, json), *want, "{json}");
        }
        for broken in [r#"{"metadata":{"name":"a""#, "", "{", r#"{"metadata":{"name":"a"}} x"#] {
            let e = decode(Resource::Namespaces, broken.as_bytes()).unwrap_err();
            assert!(matches!(e, DecodeError::Json(_)), "{broken}: {e}");
            assert!(e.to_string().starts_with("invalid JSON: "), "{e}");
        }
    }

    /// A Service named `name` in `ns`, with `spec`.
    fn svc_json(ns: &str, name: &str, spec: &str) -> String {
        format!(r#"{{"metadata":{{"name":"{name}","namespace":"{ns}","resourceVersion":"3"}},"spec":{spec}}}"#)
    }

    #[test]
    fn names_follow_the_kubernetes_rules_and_are_never_cut() {
        use Resource::*;
        let label63 = "a".repeat(63);
        assert_eq!(&*service(&svc_json("ns", &label63, "{}")).name, label63);
        // 64 characters, and 10 MB: rejected whole, never cut to 63.
        for name in [format!("{label63}b"), "b".repeat(10 << 20)] {
            let e = decode(Services, svc_json("ns", &name, "{}").as_bytes()).unwrap_err();
            assert_eq!(e.reason(), "invalid_name");
            let text = e.to_string();
            assert!(text.starts_with("metadata.name: \""), "{text}");
            assert!(
                text.contains(&format!("({} bytes) must be a DNS-1123 label", name.len())),
                "{text}"
            );
            assert!(text.len() < 300, "the message shows the start of the value only");
        }
        let cases: &[(Resource, String, &str)] = &[
            (Services, svc_json("ns", "under_score", "{}"), "metadata.name"),
            (Services, svc_json("ns", "-a", "{}"), "metadata.name"),
            (Services, svc_json("n.s", "a", "{}"), "metadata.namespace"),
            (Services, svc_json(&"n".repeat(64), "a", "{}"), "metadata.namespace"),
            (
                Namespaces,
                format!(r#"{{"metadata":{{"name":"{}"}}}}"#, "n".repeat(64)),
                "metadata.name",
            ),
            (
                EndpointSlices,
                format!(r#"{{"metadata":{{"name":"{}","namespace":"ns"}}}}"#, "s".repeat(254)),
                "metadata.name",
            ),
            (
                Pods,
                r#"{"metadata":{"name":"a..b","namespace":"ns"}}"#.to_string(),
                "metadata.name",
            ),
        ];
        for (resource, json, field) in cases {
            match decode(*resource, json.as_bytes()) {
                Err(DecodeError::Invalid { field: f, .. }) => assert_eq!(f, *field, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
        // Subdomains may be longer than a label, and hold dots.
        let name = format!("{}.x", "s".repeat(250));
        let json = format!(r#"{{"metadata":{{"name":"{name}","namespace":"ns"}}}}"#);
        assert_eq!(&*slice(&json).name, name);
        assert_eq!(&*pod(r#"{"metadata":{"name":"web.0","namespace":"ns"}}"#).name, "web.0");
        // Upper case is lower-cased, as before (DNS ignores case).
        assert_eq!(&*service(&svc_json("NS", "Web", "{}")).name, "web");
    }

    #[test]
    fn fields_follow_the_kubernetes_rules() {
        use Resource::*;
        let slice_with = |endpoint: &str, ports: &str| {
            format!(
                r#"{{"metadata":{{"name":"s","namespace":"ns","labels":{{"kubernetes.io/service-name":"web"}}}},"endpoints":[{endpoint}],"ports":{ports}}}"#
            )
        };
        let long = "x".repeat(64);
        let cases: Vec<(Resource, String, &str)> = vec![
            (
                Services,
                svc_json("ns", "a", &format!(r#"{{"ports":[{{"name":"{long}","port":80}}]}}"#)),
                "spec.ports[].name",
            ),
            (
                Services,
                svc_json("ns", "a", r#"{"ports":[{"name":"http","port":80,"protocol":"ICMP"}]}"#),
                "spec.ports[].protocol",
            ),
            (
                Services,
                svc_json(
                    "ns",
                    "a",
                    &format!(r#"{{"type":"ExternalName","externalName":"{}.com"}}"#, "a.".repeat(126)),
                ),
                "spec.externalName",
            ),
            (
                Services,
                svc_json("ns", "a", r#"{"type":"ExternalName","externalName":"a b.com"}"#),
                "spec.externalName",
            ),
            (
                EndpointSlices,
                slice_with(&format!(r#"{{"addresses":["10.0.0.1"],"hostname":"{long}"}}"#), "[]"),
                "endpoints[].hostname",
            ),
            (
                EndpointSlices,
                slice_with(r#"{"addresses":["10.0.0.1"],"nodeName":"a_b"}"#, "[]"),
                "endpoints[].nodeName",
            ),
            (
                EndpointSlices,
                slice_with(
                    r#"{"addresses":["10.0.0.1"]}"#,
                    &format!(r#"[{{"name":"{long}","port":1}}]"#),
                ),
                "ports[].name",
            ),
            (
                EndpointSlices,
                r#"{"metadata":{"name":"s","namespace":"ns","labels":{"kubernetes.io/service-name":"a b"}}}"#
                    .to_string(),
                "metadata.labels[kubernetes.io/service-name]",
            ),
            (
                Pods,
                format!(
                    r#"{{"metadata":{{"name":"p","namespace":"ns"}},"status":{{"podIP":"{}"}}}}"#,
                    "1".repeat(65)
                ),
                "status.podIP",
            ),
            (
                Services,
                format!(
                    r#"{{"metadata":{{"name":"a","namespace":"ns","resourceVersion":"{}"}}}}"#,
                    "9".repeat(129)
                ),
                "metadata.resourceVersion",
            ),
        ];
        for (resource, json, field) in &cases {
            match decode(*resource, json.as_bytes()) {
                Err(e @ DecodeError::Invalid { .. }) => {
                    assert!(e.to_string().starts_with(&format!("{field}: ")), "{e}");
                    assert_eq!(e.reason(), "invalid_value", "{e}");
                }
                other => panic!("{json}: {other:?}"),
            }
        }
        // An ExternalName may end with a dot; its case is kept.
        let s = service(&svc_json(
            "ns",
            "a",
            r#"{"type":"ExternalName","externalName":"Example.COM."}"#,
        ));
        assert_eq!(&*s.external_name, "Example.COM.");
    }

    #[test]
    fn arrays_over_the_api_caps_are_rejected_without_being_built() {
        use Resource::*;
        let endpoints = |n: usize| vec![r#"{"addresses":["10.0.0.1"]}"#; n].join(",");
        let json = |n: usize| {
            format!(
                r#"{{"metadata":{{"name":"s","namespace":"ns"}},"endpoints":[{}]}}"#,
                endpoints(n)
            )
        };
        assert_eq!(slice(&json(1000)).endpoints.len(), 1000);
        let e = decode(EndpointSlices, json(1001).as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "endpoints: 1001 elements, more than the API allows (1000)"
        );
        assert_eq!(e.reason(), "too_many_endpoints");
        let addresses = vec![r#""10.0.0.1""#; 101].join(",");
        let e = decode(
            EndpointSlices,
            format!(r#"{{"metadata":{{"name":"s","namespace":"ns"}},"endpoints":[{{"addresses":[{addresses}]}}]}}"#)
                .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "too_many_addresses");
        let ports = (0..20_001)
            .map(|i| format!(r#"{{"port":{}}}"#, i % 65536))
            .collect::<Vec<_>>()
            .join(",");
        let e = decode(
            EndpointSlices,
            format!(r#"{{"metadata":{{"name":"s","namespace":"ns"}},"ports":[{ports}]}}"#).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "too_many_ports");
        let e = decode(
            Services,
            svc_json("ns", "a", &format!(r#"{{"ports":[{ports}]}}"#)).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "too_many_ports");
        // Elements past the cap are parsed past, not built: the array keeps N at most.
        let raw: Maybe<Capped<Leaf, 3>> = serde_json::from_str(r#"["a","b","c","d",{"e":[1,2]},null]"#).unwrap();
        match raw {
            Maybe::Present(c) => assert_eq!((c.items.len(), c.len), (3, 6)),
            _ => panic!(),
        }
    }

    #[test]
    fn a_modified_object_that_breaks_a_rule_is_rejected_with_its_key() {
        let bad_port = svc_json("ns", "web", r#"{"ports":[{"name":"-bad-","port":80}]}"#);
        match decode_event(Resource::Services, event_line("MODIFIED", &bad_port).as_bytes()).unwrap() {
            WatchEvent::Rejected {
                key,
                resource_version,
                error,
            } => {
                assert_eq!((&*key.namespace, &*key.name, &*resource_version), ("ns", "web", "3"));
                assert_eq!(error.reason(), "invalid_value");
            }
            other => panic!("{other:?}"),
        }
        // A malformed field of an object with a valid name: rejected with its key too.
        let mistyped = svc_json("ns", "web", r#"{"ports":"80"}"#);
        assert!(matches!(
            decode_event(Resource::Services, event_line("ADDED", &mistyped).as_bytes()),
            Ok(WatchEvent::Rejected { .. })
        ));
        // An invalid name was never stored: an error, no key.
        let long = svc_json("ns", &"w".repeat(64), "{}");
        for kind in ["ADDED", "MODIFIED", "DELETED"] {
            let e = decode_event(Resource::Services, event_line(kind, &long).as_bytes()).unwrap_err();
            assert_eq!(e.reason(), "invalid_name");
        }
    }

    fn event_line(kind: &str, object: &str) -> String {
        format!(r#"{{"type":"{kind}","object":{object}}}"#)
    }

    #[test]
    fn the_start_of_an_over_long_event_names_its_object() {
        let full = event_line(
            "MODIFIED",
            &format!(
                r#"{{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":{{"name":"web-x","namespace":"ns","resourceVersion":"9"}},"endpoints":[{}]}}"#,
                vec![r#"{"addresses":["10.0.0.1"]}"#; 100].join(",")
            ),
        );
        let cut = &full.as_bytes()[..500];
        match probe_event(Resource::EndpointSlices, cut, 500) {
            Some(WatchEvent::Rejected {
                key,
                resource_version,
                error,
            }) => {
                assert_eq!((&*key.namespace, &*key.name, &*resource_version), ("ns", "web-x", "9"));
                assert_eq!(error.reason(), "too_large");
                assert_eq!(error.to_string(), "an object larger than 500 bytes");
            }
            other => panic!("{other:?}"),
        }
        // Cut inside the metadata, of another kind, an invalid name, a bookmark: unknown.
        assert!(probe_event(Resource::EndpointSlices, &full.as_bytes()[..80], 80).is_none());
        assert!(probe_event(Resource::Services, cut, 500).is_none());
        let long = event_line(
            "ADDED",
            &format!(r#"{{"metadata":{{"name":"{}","namespace":"ns"}}}}"#, "n".repeat(300)),
        );
        assert!(probe_event(Resource::EndpointSlices, long.as_bytes(), 400).is_none());
        let bookmark = event_line("BOOKMARK", r#"{"metadata":{"resourceVersion":"5"},"x":"yyyyyyy"#);
        assert!(probe_event(Resource::Services, bookmark.as_bytes(), 60).is_none());
    }

    #[test]
    fn a_bounded_list_stops_at_a_huge_item_or_when_told() {
        let item = |name: &str, pad: usize| {
            format!(
                r#"{{"kind":"Deployment","metadata":{{"name":"{name}","namespace":"ns","annotations":{{"x":"{}"}}}}}}"#,
                "x".repeat(pad)
            )
        };
        // Many items of other kinds, each under the bound, far over it together.
        let many: Vec<String> = (0..100).map(|i| item(&format!("d{i}"), 100_000)).collect();
        let list = format!(r#"{{"kind":"List","metadata":{{}},"items":[{}]}}"#, many.join(","));
        let mut n = 0;
        let meta = decode_list_bounded(list.as_bytes(), None, 400_000, |_| {
            n += 1;
            ControlFlow::Continue(())
        });
        assert!(meta.is_ok(), "{meta:?}");
        assert_eq!(n, 0, "no item of a kind clusterdns reads");
        // One item over the bound.
        let list = format!(
            r#"{{"kind":"ServiceList","metadata":{{}},"items":[{},{}]}}"#,
            svc_json("ns", "a", "{}"),
            item("huge", 1_000_000)
        );
        let mut seen = Vec::new();
        let e = decode_list_bounded(list.as_bytes(), None, 400_000, |i| {
            seen.push(i.is_ok());
            ControlFlow::Continue(())
        })
        .unwrap_err();
        assert_eq!(
            (e.to_string(), seen),
            ("an object larger than 400000 bytes".to_string(), vec![true])
        );
        assert_eq!(e.reason(), "too_large");
        // The callback stops it.
        let list = format!(
            r#"{{"kind":"ServiceList","metadata":{{}},"items":[{},{}]}}"#,
            svc_json("ns", "a", "{}"),
            svc_json("ns", "b", "{}")
        );
        let e = decode_list_bounded(list.as_bytes(), None, 400_000, |_| ControlFlow::Break("enough")).unwrap_err();
        assert_eq!(e, DecodeError::Stopped("enough"));
    }

    #[test]
    fn list_streams_items_and_skips_bad_ones() {
        let json = r#"{
            "kind": "ServiceList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "1000", "continue": "eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ", "remainingItemCount": 7},
            "items": [
                {"metadata": {"name": "a", "namespace": "ns", "resourceVersion": "10"}, "spec": {"clusterIP": "10.0.0.1"}},
                {"metadata": {"name": "b", "namespace": "ns"}, "spec": {"ports": [{"port": "http"}]}},
                {"metadata": {"name": "c", "namespace": "ns"}, "spec": {"clusterIP": "None"}}
            ]
        }"#;
        let run = |items: &mut Vec<Result<Object, DecodeError>>, via_reader: bool| {
            if via_reader {
                decode_list(json.as_bytes(), Some(Resource::Services), |i| items.push(i))
            } else {
                decode_list_slice(json.as_bytes(), Some(Resource::Services), |i| items.push(i))
            }
        };
        for via_reader in [false, true] {
            let mut items = Vec::new();
            let meta = run(&mut items, via_reader).unwrap();
            assert_eq!(
                meta,
                ListMeta {
                    resource_version: "1000".into(),
                    continue_token: Some("eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ".into())
                }
            );
            assert_eq!(items.len(), 3);
            assert_eq!(&*items[0].as_ref().unwrap().key().name, "a");
            assert_eq!(
                items[1].as_ref().unwrap_err().to_string(),
                "spec.ports[].port: expected an integer, found a string"
            );
            assert_eq!(&*items[2].as_ref().unwrap().key().name, "c");
        }
    }

    #[test]
    fn list_last_page_and_empty_lists() {
        let mut n = 0;
        let meta = decode_list_slice(
            br#"{"metadata":{"resourceVersion":"5","continue":""},"items":null,"kind":"PodList"}"#,
            Some(Resource::Pods),
            |_| n += 1,
        )
        .unwrap();
        assert_eq!((meta.resource_version.as_ref(), meta.continue_token, n), ("5", None, 0));
        let meta = decode_list_slice(br#"{"items":[]}"#, None, |_| n += 1).unwrap();
        assert_eq!(meta, ListMeta::default());
    }

    #[test]
    fn mixed_kind_list_as_kubectl_writes_it() {
        let json = r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[
            {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"default"}},
            {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm","namespace":"default"},"data":{"a":"b"}},
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},"spec":{"clusterIP":"10.0.0.1"}},
            {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"web-1","namespace":"default",
              "labels":{"kubernetes.io/service-name":"web"}},"endpoints":[{"addresses":["10.1.0.1"]}]},
            {"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-0","namespace":"default"},"status":{"podIP":"10.1.0.1"}},
            {"apiVersion":"v1","metadata":{"name":"no-kind"}}
        ]}"#;
        let mut items = Vec::new();
        decode_list_slice(json.as_bytes(), None, |i| items.push(i)).unwrap();
        let kinds: Vec<_> = items
            .iter()
            .map(|i| i.as_ref().map(|o| o.resource()).map_err(|e| e.to_string()))
            .collect();
        assert_eq!(
            kinds,
            [
                Ok(Resource::Namespaces),
                Ok(Resource::Services),
                Ok(Resource::EndpointSlices),
                Ok(Resource::Pods),
                Err("kind is missing".to_string())
            ]
        );
        // A single-kind list: items without `kind` are of the list's kind.
        let mut items = Vec::new();
        decode_list_slice(
            br#"{"kind":"NamespaceList","items":[{"metadata":{"name":"a"}}]}"#,
            None,
            |i| items.push(i.unwrap()),
        )
        .unwrap();
        assert_eq!(items, [Object::Namespace(Namespace { name: "a".into() })]);
    }

    #[test]
    fn broken_list_json_fails_the_list_after_the_good_items() {
        let mut n = 0;
        let e = decode_list(
            &br#"{"metadata":{"resourceVersion":"1"},"items":[{"metadata":{"name":"a"}},{"metadata":{"na"#[..],
            Some(Resource::Namespaces),
            |i| {
                i.unwrap();
                n += 1;
            },
        )
        .unwrap_err();
        assert!(matches!(e, DecodeError::Json(_)), "{e}");
        assert_eq!(n, 1);
        assert!(decode_list_slice(br#"[1,2]"#, None, |_| ()).is_err());
        assert!(decode_list_slice(br#"{"items":{}}"#, None, |_| ()).is_err());
        let e = decode_list_slice(br#"{"metadata":{"resourceVersion":5},"items":[]}"#, None, |_| ()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "metadata.resourceVersion: expected a string, found an integer"
        );
    }

    #[test]
    fn watch_events() {
        let event = |line: &str| decode_event(Resource::Services, line.as_bytes());
        let added = event(
            r#"{"type":"ADDED","object":{"kind":"Service","apiVersion":"v1",
                "metadata":{"name":"a","namespace":"ns","resourceVersion":"101","managedFields":[]},
                "spec":{"clusterIP":"10.0.0.1"}}}"#,
        )
        .unwrap();
        let WatchEvent::Upsert {
            object,
            resource_version,
        } = added
        else {
            panic!("{added:?}")
        };
        assert_eq!((object.resource(), &*resource_version), (Resource::Services, "101"));
        assert!(matches!(
            event(r#"{"object":{"metadata":{"name":"a","namespace":"ns","resourceVersion":"102"}},"type":"MODIFIED"}"#),
            Ok(WatchEvent::Upsert { .. })
        ));
        let deleted = event(
            r#"{"type":"DELETED","object":{"kind":"Service",
                "metadata":{"name":"A","namespace":"ns","resourceVersion":"103"},"spec":{"ports":"junk"}}}"#,
        );
        let key = ObjectKey {
            namespace: "ns".into(),
            name: "a".into(),
        };
        assert_eq!(
            deleted.unwrap(),
            WatchEvent::Delete {
                key,
                resource_version: "103".into()
            }
        );
        let bookmark = event(
            r#"{"type":"BOOKMARK","object":{"kind":"Service","apiVersion":"v1",
                "metadata":{"resourceVersion":"12746","annotations":{"k8s.io/initial-events-end":"true"}},"spec":{}}}"#,
        );
        assert_eq!(
            bookmark.unwrap(),
            WatchEvent::Bookmark {
                resource_version: "12746".into()
            }
        );
        let expired = event(
            r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
                "message":"too old resource version: 1 (2)","reason":"Expired","code":410}}"#,
        );
        let status = ApiStatus {
            code: 410,
            reason: "Expired".into(),
            message: "too old resource version: 1 (2)".into(),
        };
        assert_eq!(expired.unwrap(), WatchEvent::Error(status));
        let namespaces = decode_event(
            Resource::Namespaces,
            br#"{"type":"ADDED","object":{"kind":"Namespace","metadata":{"name":"x","resourceVersion":"9"}}}"#,
        );
        assert!(matches!(namespaces, Ok(WatchEvent::Upsert { resource_version, .. }) if &*resource_version == "9"));

        for (line, want) in [
            (r#"{"type":"SYNC","object":{}}"#, "unknown watch event type \"SYNC\""),
            (r#"{"object":{}}"#, "type is missing"),
            (r#"{"type":"ADDED"}"#, "object is missing"),
            (
                r#"{"type":"BOOKMARK","object":{"metadata":{}}}"#,
                "metadata.resourceVersion is missing",
            ),
            (
                r#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"a","namespace":"b"}}}"#,
                "expected a Service, found a Pod",
            ),
            (
                r#"{"type":"DELETED","object":{"metadata":{"namespace":"b"}}}"#,
                "metadata.name is missing",
            ),
        ] {
            assert_eq!(event(line).unwrap_err().to_string(), want, "{line}");
        }
        assert!(matches!(
            event(r#"{"type":"ADDED","object":{"metadata":"#),
            Err(DecodeError::Json(_))
        ));
    }

    #[test]
    fn status_bodies() {
        let forbidden = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"services is forbidden: User \"system:anonymous\" cannot list resource \"services\"",
            "reason":"Forbidden","details":{"kind":"services"},"code":403}"#;
        let status = decode_status(forbidden).unwrap();
        assert_eq!((status.code, &*status.reason), (403, "Forbidden"));
        assert!(status.message.starts_with("services is forbidden"));
        assert_eq!(decode_status(b"<html>Bad Gateway</html>"), None);
        assert_eq!(decode_status(br#"{"kind":"Service"}"#), None);
        assert_eq!(
            decode_status(br#"{"kind":"Status","code":"x"}"#),
            Some(ApiStatus::default())
        );
    }

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2024-05-01T10:00:00Z"), Some(1_714_557_600.0));
        assert_eq!(parse_rfc3339("2024-05-01T12:00:00+02:00"), Some(1_714_557_600.0));
        assert_eq!(parse_rfc3339("2024-05-01T09:30:00.25-00:30"), Some(1_714_557_600.25));
        assert_eq!(parse_rfc3339("2000-02-29t23:59:59.123456z"), Some(951_868_799.123456));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Some(-1.0));
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T10:00:00",
            "2024-05-01 10:00:00Z",
            "2024-13-01T10:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T10:00:00.Z",
            "2024-05-01T10:00:00Zjunk",
            "2024-05-01T10:00:00+0200",
            "2024-05-01T10:00:00+25:00",
            "2024-0a-01T10:00:00Z",
            "２０２４-05-01T10:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
