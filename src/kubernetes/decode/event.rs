//! One line of a watch stream (`{"type":"ADDED","object":{..}}`), the start of a line
//! too long to decode, and the API's `Status` (watch `ERROR` events, error bodies).

use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::DecodeError;
use super::lenient::{Leaf, Maybe};
use super::objects::{Decoded, Rejection, check_kind, convert, identity};
use super::shapes::{RawEvent, RawMeta, RawObject};
use crate::kubernetes::model::{Object, ObjectKey, Resource};

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
    ///
    /// [`MAX_OBJECT_BYTES`]: crate::kubernetes::limits::MAX_OBJECT_BYTES
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
///
/// [`MAX_OBJECT_BYTES`]: crate::kubernetes::limits::MAX_OBJECT_BYTES
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
pub(super) struct Probed {
    kind: Option<Box<str>>,
    object_kind: Leaf,
    meta: Option<RawMeta>,
}

/// The fields of a watch event the probe looks at.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
pub(super) enum EventField {
    Type,
    Object,
    #[serde(other)]
    Other,
}

/// The fields of an object the probe looks at.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
pub(super) enum ProbedField {
    Kind,
    Metadata,
    #[serde(other)]
    Other,
}

pub(super) struct EventProbe<'a>(&'a mut Probed);

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

pub(super) struct ObjectProbe<'a>(&'a mut Probed);

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
pub(super) fn status_of(raw: RawObject) -> ApiStatus {
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
