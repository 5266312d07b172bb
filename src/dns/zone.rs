//! Zones: the names that bound what a server block, a plugin or one of its options
//! covers (`cluster.local.`, `10.in-addr.arpa.`, the root). One type for all of them,
//! so that there is one way to write a zone and one way to ask whether a name lies in
//! it.

use std::fmt;

use super::request::NameKey;
use super::wire::{self, MAX_NAME_LEN};

/// A zone: a fully qualified name, lower-cased, in presentation form (for messages,
/// logs and metric labels) and in wire form (what query names are compared with).
///
/// Names are compared as [`NameKey`]s, which are lower-cased too, so membership is a
/// byte comparison of a label-aligned suffix: ASCII case-insensitive, as RFC 4343 asks,
/// without folding case per query.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Zone {
    /// Lower-cased, uncompressed, root label included.
    wire: Box<[u8]>,
    /// The presentation form of `wire` (`cluster.local.`, `.`).
    text: Box<str>,
}

impl Zone {
    /// Parses a zone in presentation form (`Cluster.Local`, `example.org.`, `.`; a
    /// relative name is taken as fully qualified; `\.` and `\DDD` escapes). `None` for
    /// what is no valid name: an empty label, a label over 63 bytes, a name over 255.
    pub fn new(text: &str) -> Option<Zone> {
        let mut buf = [0u8; MAX_NAME_LEN];
        let len = wire::parse_name(text, &mut buf)?;
        Some(Zone::from_lower_wire(&buf[..len]))
    }

    /// The zone of an uncompressed wire name (root label included), lower-cased.
    /// `None` if `wire` is not exactly one valid name.
    pub fn from_wire(wire: &[u8]) -> Option<Zone> {
        NameKey::from_wire(wire).map(|k| Zone::from_lower_wire(k.wire()))
    }

    fn from_lower_wire(wire: &[u8]) -> Zone {
        Zone {
            text: wire::name_to_string(wire).into_boxed_str(),
            wire: wire.into(),
        }
    }

    /// The root zone, `.`: it contains every name.
    pub fn root() -> Zone {
        Zone {
            wire: Box::new([0]),
            text: ".".into(),
        }
    }

    /// Whether this is the root zone.
    pub fn is_root(&self) -> bool {
        *self.wire == [0]
    }

    /// Lower-cased wire form, root label included.
    #[inline]
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Presentation form, fully qualified (`cluster.local.`).
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Labels, the root's excluded (0 for the root zone).
    pub fn label_count(&self) -> usize {
        wire::label_count(&self.wire)
    }

    /// If `name` is this zone or below it, how many labels it has in front of the
    /// zone (0 for the apex).
    #[inline]
    pub fn labels_before(&self, name: &NameKey) -> Option<usize> {
        name.labels_before(&self.wire)
    }

    /// Whether `name` is this zone or below it (label-aligned: `xcluster.local.` is
    /// not in `cluster.local.`).
    #[inline]
    pub fn contains(&self, name: &NameKey) -> bool {
        self.labels_before(name).is_some()
    }

    /// Whether any of `zones` contains `name`.
    #[inline]
    pub fn any_contains(zones: &[Zone], name: &NameKey) -> bool {
        zones.iter().any(|z| z.contains(name))
    }

    /// The zones' presentation forms joined with `,`: the `zones` label of the cache
    /// and rrl metrics, as CoreDNS writes it.
    pub fn join(zones: &[Zone]) -> String {
        let mut out = String::new();
        for (i, z) in zones.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(z.as_str());
        }
        out
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Zone({})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> NameKey {
        NameKey::from_text(s).unwrap()
    }

    #[test]
    fn presentation_and_wire_forms() {
        let z = Zone::new("Cluster.LOCAL").unwrap();
        assert_eq!(z.as_str(), "cluster.local.");
        assert_eq!(z.to_string(), "cluster.local.");
        assert_eq!(z.wire(), b"\x07cluster\x05local\x00");
        assert_eq!(z.label_count(), 2);
        assert_eq!(Zone::new("cluster.local."), Some(z.clone()));
        assert_eq!(Zone::from_wire(b"\x07CLUSTER\x05local\x00"), Some(z));
        assert_eq!(Zone::new("a\\.b.c").unwrap().as_str(), "a\\.b.c.");
        assert_eq!(Zone::new("\\065.x").unwrap().as_str(), "a.x.");
        for bad in ["", "a..b", ".x", &"a".repeat(64)] {
            assert_eq!(Zone::new(bad), None, "{bad:?}");
        }
        assert_eq!(Zone::from_wire(b"\x01a"), None);
        assert_eq!(Zone::from_wire(b"\x01a\x00\x00"), None);
        assert_eq!(Zone::from_wire(b"\xC0\x0C"), None);
    }

    #[test]
    fn membership_is_label_aligned_and_ignores_case() {
        let z = Zone::new("cluster.local").unwrap();
        assert!(z.contains(&key("cluster.local.")));
        assert!(z.contains(&key("web.default.svc.CLUSTER.Local")));
        assert_eq!(z.labels_before(&key("Web.Default.svc.cluster.local")), Some(3));
        assert_eq!(z.labels_before(&key("cluster.local")), Some(0));
        assert!(!z.contains(&key("xcluster.local")));
        assert!(!z.contains(&key("local")));
        assert!(!z.contains(&key("cluster.local.org")));
        assert!(!z.contains(&key(".")));
    }

    #[test]
    fn the_root_contains_everything() {
        let root = Zone::root();
        assert!(root.is_root());
        assert_eq!(Zone::new("."), Some(root.clone()));
        assert_eq!(Zone::from_wire(&[0]), Some(root.clone()));
        assert_eq!((root.as_str(), root.wire(), root.label_count()), (".", &[0u8][..], 0));
        assert_eq!(root.labels_before(&key(".")), Some(0));
        assert_eq!(root.labels_before(&key("a.b.c")), Some(3));
        assert!(!Zone::new("a").unwrap().is_root());
    }

    #[test]
    fn lists_of_zones() {
        let zones: Vec<Zone> = ["b.example.", "10.in-addr.arpa."]
            .iter()
            .map(|z| Zone::new(z).unwrap())
            .collect();
        assert_eq!(Zone::join(&zones), "b.example.,10.in-addr.arpa.");
        assert_eq!(Zone::join(&[]), "");
        assert!(Zone::any_contains(&zones, &key("1.2.10.in-addr.arpa")));
        assert!(!Zone::any_contains(&zones, &key("a.example")));
        assert!(!Zone::any_contains(&[], &key("a.example")));
    }
}
