//! A list's framing (`{"kind":"ServiceList","metadata":{..},"items":[..]}`): its
//! metadata, and its items decoded and handed over one at a time, with a bound on the
//! bytes of one item.

use std::cell::Cell;
use std::fmt;
use std::io::{self, BufReader, Read};
use std::ops::ControlFlow;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::DecodeError;
use super::lenient::{Leaf, Maybe};
use super::objects::convert;
use super::shapes::{RawMeta, RawObject};
use crate::kubernetes::limits::MAX_OBJECT_BYTES;
use crate::kubernetes::model::{Object, Resource};

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
    decode_list_bounded(reader, resource, MAX_OBJECT_BYTES, |(_, item)| {
        on_item(item);
        ControlFlow::Continue(())
    })
}

/// [`decode_list`] with the bound on an item's size given (`max_item` bytes read since
/// the previous item, counted in the reader's 64 KiB pieces) and a callback that may stop
/// the list: past either, reading stops and the list fails, [`DecodeError::TooLarge`] or
/// [`DecodeError::Stopped`]. No item's JSON is ever held whole: the reader streams it.
/// Each item comes with the resource it is of ([`ListItem`]), so that a mixed list's
/// rejected items can be counted by resource.
pub fn decode_list_bounded<R: io::Read>(
    reader: R,
    resource: Option<Resource>,
    max_item: u64,
    mut on_item: impl FnMut(ListItem) -> ControlFlow<&'static str>,
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
        &mut |(_, item)| {
            on_item(item);
            ControlFlow::Continue(())
        },
        None,
    )
}

/// Why a bounded list stopped reading.
#[derive(Clone, Copy)]
pub(super) enum Stop {
    TooLarge,
    Caller(&'static str),
}

/// What the reader of a bounded list and its item visitor share: bytes read since the
/// last item ended, and why reading must stop.
pub(super) struct ItemBound {
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
pub(super) struct BoundedReader<'a, R> {
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

/// A list item as it is handed over: the resource it is of (its `kind`, else the list's;
/// `None` when neither tells) and the object, or why it is not taken.
pub type ListItem = (Option<Resource>, Result<Object, DecodeError>);

pub(super) type OnItem<'a> = dyn FnMut(ListItem) -> ControlFlow<&'static str> + 'a;

pub(super) fn read_list<'de, R: serde_json::de::Read<'de>>(
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

/// The top-level fields of a list.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
pub(super) enum ListField {
    Kind,
    Metadata,
    Items,
    #[serde(other)]
    Other,
}

/// Reads a list's fields, streaming `items` to the callback.
pub(super) struct ListVisitor<'a, 'b> {
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
pub(super) struct Items<'a, 'b> {
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
pub(super) fn list_item(default: Option<Resource>, item: Maybe<RawObject>) -> Option<ListItem> {
    let raw = match item.object("items[]") {
        Ok(Some(raw)) => raw,
        Ok(None) => return Some((default, Err(DecodeError::Missing("items[]")))),
        Err(e) => return Some((default, Err(e))),
    };
    let resource = match &raw.kind {
        Leaf::Str(kind) => resource_of_kind(kind)?,
        Leaf::Absent => match default {
            Some(resource) => resource,
            None => return Some((None, Err(DecodeError::Missing("kind")))),
        },
        other => return Some((default, Err(other.wrong("kind", "a string")))),
    };
    Some((
        Some(resource),
        convert(resource, raw).map(|d| d.object).map_err(|r| r.error),
    ))
}

pub(super) fn resource_of_kind(kind: &str) -> Option<Resource> {
    [
        Resource::Namespaces,
        Resource::Services,
        Resource::EndpointSlices,
        Resource::Pods,
    ]
    .into_iter()
    .find(|r| r.kind() == kind)
}
