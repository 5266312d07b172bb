//! An EndpointSlice as answers need it ([`SliceData`]): its ready addresses ([`Ep`]),
//! their name labels, and an index that finds an endpoint by name.

use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64};

use super::entry::label_at;
use super::shard::{FxHasher, Keyed};
use crate::kubernetes::model::Port;

/// One ready address of an EndpointSlice: 20 bytes (there can be hundreds of
/// thousands); its name, when it has one of its own, is in the slice's `names`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ep {
    ip: [u8; 16],
    v6: bool,
    /// Offset of its name label in the slice's `names`, or [`NO_NAME`] when the name is
    /// simply the address with dashes.
    name: u16,
}

/// [`Ep::name`] for an endpoint named after its address.
pub(super) const NO_NAME: u16 = u16::MAX;

/// A stack buffer for one label.
pub type LabelBuf = [u8; 64];

impl Ep {
    pub(super) fn new(addr: IpAddr, name: u16) -> Ep {
        let (ip, v6) = match addr {
            IpAddr::V4(a) => {
                let mut ip = [0u8; 16];
                ip[..4].copy_from_slice(&a.octets());
                (ip, false)
            }
            IpAddr::V6(a) => (a.octets(), true),
        };
        Ep { ip, v6, name }
    }

    /// The endpoint's address.
    pub fn addr(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.ip))
        } else {
            IpAddr::V4(Ipv4Addr::new(self.ip[0], self.ip[1], self.ip[2], self.ip[3]))
        }
    }
}

/// An IPv4 endpoint as a slice of IPv4 endpoints stores it: 6 bytes, not [`Ep`]'s 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ep4 {
    ip: [u8; 4],
    name: u16,
}

impl Ep4 {
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.ip)
    }
}

/// A slice's endpoints. An EndpointSlice has one address type, and in most clusters
/// that is IPv4: such a slice keeps 6 bytes an endpoint; one with any IPv6 address
/// keeps every endpoint as an [`Ep`].
#[derive(Debug, PartialEq, Eq)]
pub enum Eps {
    V4(Box<[Ep4]>),
    Any(Box<[Ep]>),
}

impl Default for Eps {
    fn default() -> Eps {
        Eps::V4(Box::default())
    }
}

impl Eps {
    pub(super) fn from_vec(eps: Vec<Ep>) -> Eps {
        if eps.iter().any(|e| e.v6) {
            return Eps::Any(eps.into_boxed_slice());
        }
        Eps::V4(
            eps.iter()
                .map(|e| Ep4 {
                    ip: [e.ip[0], e.ip[1], e.ip[2], e.ip[3]],
                    name: e.name,
                })
                .collect(),
        )
    }

    pub fn len(&self) -> usize {
        match self {
            Eps::V4(v) => v.len(),
            Eps::Any(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Endpoint `i` (panics past the end, as indexing does).
    #[inline]
    pub fn at(&self, i: usize) -> Ep {
        match self {
            Eps::V4(v) => {
                let e = v[i];
                let mut ip = [0u8; 16];
                ip[..4].copy_from_slice(&e.ip);
                Ep {
                    ip,
                    v6: false,
                    name: e.name,
                }
            }
            Eps::Any(v) => v[i],
        }
    }

    /// Endpoint `i`'s address (panics past the end).
    #[inline]
    pub fn addr(&self, i: usize) -> IpAddr {
        match self {
            Eps::V4(v) => IpAddr::V4(Ipv4Addr::from(v[i].ip)),
            Eps::Any(v) => v[i].addr(),
        }
    }

    /// Endpoint `i`'s name offset (see [`Ep`]; panics past the end).
    #[inline]
    fn name(&self, i: usize) -> u16 {
        match self {
            Eps::V4(v) => v[i].name,
            Eps::Any(v) => v[i].name,
        }
    }

    /// The endpoints in order.
    pub fn iter(&self) -> impl Iterator<Item = Ep> + '_ {
        (0..self.len()).map(|i| self.at(i))
    }
}

/// Writes an address with `.` or `:` turned into `-` (and a `0` after a trailing `-`);
/// returns the length.
pub(super) fn write_dashed(addr: IpAddr, out: &mut [u8]) -> usize {
    if let (IpAddr::V4(a), true) = (addr, out.len() >= 15) {
        // The common case without the formatter: answers write this label for every
        // endpoint named after its address.
        let mut n = 0;
        for (i, o) in a.octets().into_iter().enumerate() {
            if i > 0 {
                out[n] = b'-';
                n += 1;
            }
            if o >= 100 {
                out[n] = b'0' + o / 100;
                n += 1;
            }
            if o >= 10 {
                out[n] = b'0' + (o / 10) % 10;
                n += 1;
            }
            out[n] = b'0' + o % 10;
            n += 1;
        }
        return n;
    }
    struct W<'a>(&'a mut [u8], usize);
    impl std::fmt::Write for W<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            for b in s.bytes() {
                if self.1 < self.0.len() {
                    self.0[self.1] = if b == b'.' || b == b':' { b'-' } else { b };
                    self.1 += 1;
                }
            }
            Ok(())
        }
    }
    let mut w = W(out, 0);
    let _ = std::fmt::Write::write_fmt(&mut w, format_args!("{addr}"));
    let n = w.1;
    if n > 0 && out[n - 1] == b'-' && n < out.len() {
        out[n] = b'0';
        return n + 1;
    }
    n
}

/// An EndpointSlice as answers need it: one [`Ep`] per ready address.
#[derive(Debug)]
pub struct SliceData {
    /// In one allocation (a slice is 50,000 of them in a large cluster, and malloc
    /// adds 8 to 24 bytes to each allocation): its key (`<ns>` as a wire label, then
    /// the slice's name), `<service>.<ns>.svc` as wire labels ([`SliceData::rel`]),
    /// then the endpoints' own name labels, one after the other (see [`Ep`]).
    text: Box<[u8]>,
    key_len: u16,
    rel_len: u16,
    /// As [`ServiceData`]'s.
    pub(super) version: AtomicU64,
    pub(super) seen: AtomicU32,
    pub ports: Arc<[Port]>,
    pub eps: Eps,
    /// Endpoints by name label, so that `<endpoint>.<service>...` finds its endpoints
    /// without looking at the others (see [`SliceData::named`]); empty for small slices.
    pub(super) index: Box<[u16]>,
    pub last_change_trigger: Option<f64>,
}

/// Slices with more endpoints than this get a name index; smaller ones are scanned.
pub(super) const INDEX_MIN: usize = 16;

/// The hash of an endpoint label (without its length byte) that [`SliceData::named`]
/// takes: computed once per query, used for every slice.
pub fn label_hash(label: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(label);
    h.finish()
}

/// Endpoint `i`'s label (length byte first), from a slice's parts.
pub(super) fn label_of<'b>(eps: &Eps, names: &'b [u8], i: usize, buf: &'b mut LabelBuf) -> &'b [u8] {
    let name = eps.name(i);
    if name != NO_NAME {
        let at = name as usize;
        let len = names[at] as usize;
        return &names[at..at + 1 + len];
    }
    let n = write_dashed(eps.addr(i), &mut buf[1..]);
    buf[0] = n as u8;
    &buf[..1 + n]
}

/// The slot a hash starts probing from in a table of `len` (a power of two) slots: the
/// hash's top bits, the best mixed by FxHash's multiply.
pub(super) fn home(hash: u64, len: usize) -> usize {
    (hash >> (64 - len.trailing_zeros())) as usize
}

/// An open-addressing table of `endpoint + 1` (0: empty) at twice the endpoint count,
/// probed linearly from the label's [`home`]. Endpoints are inserted in order, so those
/// with equal labels lie along one probe run in endpoint order. Empty when the slice
/// is small (or too large for `u16`, which the API's 1,000 endpoints per slice never is).
pub(super) fn name_index(eps: &Eps, names: &[u8]) -> Box<[u16]> {
    if eps.len() <= INDEX_MIN || eps.len() >= u16::MAX as usize {
        return Box::default();
    }
    let len = (eps.len() * 2).next_power_of_two();
    let mut table = vec![0u16; len];
    for i in 0..eps.len() {
        let mut buf = [0u8; 64];
        let mut at = home(label_hash(&label_of(eps, names, i, &mut buf)[1..]), len);
        while table[at] != 0 {
            at = (at + 1) & (len - 1);
        }
        table[at] = i as u16 + 1;
    }
    table.into_boxed_slice()
}

impl SliceData {
    /// A slice from its parts; `None` when its key or service name is too long to be
    /// a real one (the API's names are at most 253 characters, a label 63).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        key: &[u8],
        rel: &[u8],
        names: &[u8],
        version: u64,
        seen: u32,
        ports: Arc<[Port]>,
        eps: Eps,
        last_change_trigger: Option<f64>,
    ) -> Option<SliceData> {
        let key_len = u16::try_from(key.len()).ok()?;
        let rel_len = u16::try_from(rel.len()).ok()?;
        let index = name_index(&eps, names);
        Some(SliceData {
            text: [key, rel, names].concat().into_boxed_slice(),
            key_len,
            rel_len,
            version: AtomicU64::new(version),
            seen: AtomicU32::new(seen),
            ports,
            eps,
            index,
            last_change_trigger,
        })
    }

    /// Heap bytes asked for (the record with its text and name index, its endpoints),
    /// for the bench's breakdown; shared port lists not counted.
    pub(super) fn heap_bytes(&self) -> (usize, usize) {
        let eps = match &self.eps {
            Eps::V4(v) => std::mem::size_of_val(&**v),
            Eps::Any(v) => std::mem::size_of_val(&**v),
        };
        (
            16 + std::mem::size_of::<SliceData>() + self.text.len() + 2 * self.index.len(),
            eps,
        )
    }

    /// `<service>.<ns>.svc` wire labels (the service named by its label).
    pub fn rel(&self) -> &[u8] {
        let at = self.key_len as usize;
        &self.text[at..at + self.rel_len as usize]
    }

    /// The endpoints' own name labels, one after the other (see [`Ep`]).
    pub(super) fn names(&self) -> &[u8] {
        &self.text[self.key_len as usize + self.rel_len as usize..]
    }

    /// Endpoint `i`'s name as one wire label (length byte first): hostname, pod name,
    /// or the address with dashes (CoreDNS `endpointHostname`).
    pub fn label<'b>(&'b self, i: usize, buf: &'b mut LabelBuf) -> &'b [u8] {
        label_of(&self.eps, self.names(), i, buf)
    }

    /// The endpoints that may be labelled with a label of hash `hash` (see
    /// [`label_hash`]), in endpoint order: those along its probe run in the name index,
    /// or every endpoint of a small slice. The caller compares the labels; each item
    /// is one step of work.
    pub fn named(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let indexed = !self.index.is_empty();
        let len = self.index.len();
        let mut at = if indexed { home(hash, len) } else { 0 };
        let mut scanned = 0;
        std::iter::from_fn(move || {
            if !indexed {
                scanned += 1;
                return (scanned <= self.eps.len()).then_some(scanned - 1);
            }
            let v = self.index[at];
            at = (at + 1) & (len - 1);
            (v != 0).then(|| v as usize - 1)
        })
    }

    /// Whether some endpoint has a name of its own (not its address with dashes).
    pub fn has_names(&self) -> bool {
        !self.names().is_empty()
    }

    pub fn namespace(&self) -> &[u8] {
        label_at(self.rel(), 1)
    }

    /// The key of the service it belongs to (`<service><ns>`).
    pub fn service_key(&self) -> &[u8] {
        let rel = self.rel();
        &rel[..rel.len() - 4]
    }
}

impl Keyed for SliceData {
    fn key(&self) -> &[u8] {
        &self.text[..self.key_len as usize]
    }
}
