//! The owners of an address (cluster IPs first, then endpoints): what the reverse index
//! holds for PTR and NS answers.

use std::sync::Arc;

use super::entry::ServiceData;
use super::slice::SliceData;

/// An owner of an IP address.
#[derive(Debug, Clone)]
pub enum Owner {
    /// A service with this cluster IP.
    Cluster(Arc<ServiceData>),
    /// Endpoint `.1` of a slice.
    Endpoint(Arc<SliceData>, u32),
}

impl Owner {
    pub(super) fn is(&self, other: &Owner) -> bool {
        match (self, other) {
            (Owner::Cluster(a), Owner::Cluster(b)) => Arc::ptr_eq(a, b),
            (Owner::Endpoint(a, i), Owner::Endpoint(b, j)) => Arc::ptr_eq(a, b) && i == j,
            _ => false,
        }
    }
}

/// The owners of one address, kept inline when there is one (the usual case). Cluster
/// IPs come first, then endpoints, each in the order they were added: a PTR answer
/// takes the first cluster IP owner or else every endpoint, and finds the former
/// without walking past the latter.
///
/// 16 bytes: `Many` holds a thin pointer, which fits beside `One`'s tag, so an entry of
/// the reverse index (an IPv4 address and its owners, in two arrays) is 20 bytes, not 32. The index has an
/// entry per cluster IP and endpoint address, the largest table of the snapshot: a
/// shared address pays one more pointer hop instead of every address paying 8 bytes.
#[derive(Debug, Clone)]
pub enum Owners {
    One(Owner),
    Many(Arc<Box<[Owner]>>),
}

impl Owners {
    pub fn as_slice(&self) -> &[Owner] {
        match self {
            Owners::One(o) => std::slice::from_ref(o),
            Owners::Many(v) => v,
        }
    }

    /// `cur` with `added` (a batch: one copy of the list, however many are added).
    pub(super) fn with(cur: Option<&Owners>, added: Vec<Owner>) -> Owners {
        let old = cur.map_or(&[][..], Owners::as_slice);
        if old.is_empty() && added.len() == 1 {
            return Owners::One(added.into_iter().next().expect("one"));
        }
        let is_cluster = |o: &&Owner| matches!(o, Owner::Cluster(_));
        let all: Box<[Owner]> = old
            .iter()
            .filter(is_cluster)
            .chain(added.iter().filter(is_cluster))
            .chain(old.iter().filter(|o| !is_cluster(o)))
            .chain(added.iter().filter(|o| !is_cluster(o)))
            .cloned()
            .collect();
        Owners::Many(Arc::new(all))
    }

    pub(super) fn without(&self, gone: impl Fn(&Owner) -> bool) -> Option<Owners> {
        let left: Vec<Owner> = self.as_slice().iter().filter(|o| !gone(o)).cloned().collect();
        match left.len() {
            0 => None,
            1 => left.into_iter().next().map(Owners::One),
            _ => Some(Owners::Many(Arc::new(left.into_boxed_slice()))),
        }
    }
}
