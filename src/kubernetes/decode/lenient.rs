//! Lenient reading: JSON fields read without committing to their type ([`Leaf`],
//! [`Maybe`]), arrays read up to the API's cap ([`Capped`]), one entry picked from a map
//! ([`Picked`]). A field of the wrong type is an error for its object, named by the
//! decoder when it uses the value, never for the list or stream around it.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::DecodeError;

/// A JSON scalar read without committing to its type: the decoder checks the type when it
/// uses the value, so a wrong type is an error for that object and not for the stream.
#[derive(Debug, Default)]
pub(super) enum Leaf {
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
    pub(super) fn found(&self) -> &'static str {
        match self {
            Leaf::Absent => "null",
            Leaf::Str(_) => "a string",
            Leaf::Int(_) => "an integer",
            Leaf::Bool(_) => "a boolean",
            Leaf::Other(found) => found,
        }
    }

    pub(super) fn wrong(&self, field: &'static str, expected: &'static str) -> DecodeError {
        DecodeError::WrongType {
            field,
            expected,
            found: self.found(),
        }
    }

    pub(super) fn string(self, field: &'static str) -> Result<Option<Box<str>>, DecodeError> {
        match self {
            Leaf::Absent => Ok(None),
            Leaf::Str(s) => Ok(Some(s)),
            other => Err(other.wrong(field, "a string")),
        }
    }

    pub(super) fn integer(self, field: &'static str) -> Result<Option<i64>, DecodeError> {
        match self {
            Leaf::Absent => Ok(None),
            Leaf::Int(i) => Ok(Some(i)),
            other => Err(other.wrong(field, "an integer")),
        }
    }

    pub(super) fn boolean(self, field: &'static str) -> Result<Option<bool>, DecodeError> {
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

pub(super) struct LeafVisitor;

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
pub(super) const HUGE_OR_FRACTIONAL: &str = "a fractional or huge number";

/// An object or array field read leniently: present with its shape, absent (or `null`),
/// or holding another JSON type (skipped, and named for the error message).
#[derive(Debug, Default)]
pub(super) enum Maybe<T> {
    #[default]
    Absent,
    Present(T),
    Mistyped(&'static str),
}

impl<T> Maybe<T> {
    /// The object, `None` when absent.
    pub(super) fn object(self, field: &'static str) -> Result<Option<T>, DecodeError> {
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
    pub(super) fn items(self, field: &'static str) -> Result<Vec<E>, DecodeError> {
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
pub(super) trait Shape<'de>: Sized {
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

pub(super) struct MaybeVisitor<T>(PhantomData<T>);

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
pub(super) struct Capped<E, const N: usize> {
    pub(super) items: Vec<E>,
    /// Elements in the JSON array, built or not.
    pub(super) len: usize,
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

/// The one entry DNS needs from a map (labels, annotations, the pod status); the other
/// entries are skipped without being stored.
pub(super) struct Picked<K>(Leaf, PhantomData<K>);

/// The key a [`Picked`] map keeps.
pub(super) trait PickKey {
    const KEY: &'static str;
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
    pub(super) fn entry(self, field: &'static str) -> Result<Leaf, DecodeError> {
        Ok(self.object(field)?.map_or(Leaf::Absent, |p| p.0))
    }
}

/// Compares a map key with the wanted one without allocating it.
pub(super) struct KeyIs(&'static str);

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
