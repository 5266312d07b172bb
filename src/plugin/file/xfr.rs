//! The zones of `file` (and `auto`) as a zone transfer sends them (CoreDNS
//! `plugin/file/xfr.go`): the version served when the transfer starts, SOA first,
//! every record in [`ZoneData::records`]' order, SOA last; the SOA alone to an IXFR at
//! the current serial. NOTIFY at start-up and after every reload, as CoreDNS's file
//! and auto send them, through [`Transferer::notifies`].

use std::sync::Arc;

use super::{ChangeFn, ServedZone, ZoneData, ZoneRecord};
use crate::dns::wire::QNAME_OFFSET;
use crate::dns::{Name, PushError, Rdata, Record, Request, Response, Section, Tail, Zone, rtype};
use crate::plugin::transfer::{Transferer, ZoneStream};

/// The zones served now (`file`: its fixed list; `auto`: those loaded at this moment).
pub type ZonesFn = Box<dyn Fn() -> Arc<Vec<Arc<ServedZone>>> + Send + Sync>;
/// Registers a callback on every zone, present and future.
pub type WatchFn = Box<dyn Fn(ChangeFn) + Send + Sync>;

/// The zones of one `file` or `auto` plugin, for `transfer`.
pub struct FileTransferer {
    pub zones: ZonesFn,
    pub watch: WatchFn,
    /// The zones to notify at start-up: `file`'s, loaded at setup (`auto`'s are
    /// loaded when it starts, and their first load is a change).
    pub startup: Vec<Zone>,
}

impl FileTransferer {
    /// A fixed list of zones (`file`).
    pub fn fixed(zones: Vec<Arc<ServedZone>>) -> FileTransferer {
        let startup = zones.iter().map(|z| z.origin().clone()).collect();
        let zones = Arc::new(zones);
        let watched = zones.clone();
        FileTransferer {
            zones: Box::new(move || zones.clone()),
            watch: Box::new(move |f: ChangeFn| {
                let f = Arc::new(f);
                for z in watched.iter() {
                    let f = f.clone();
                    z.on_change(Box::new(move |z| f(z)));
                }
            }),
            startup,
        }
    }
}

impl Transferer for FileTransferer {
    /// Exactly one of the zones (CoreDNS: `matched != zone` is not authoritative),
    /// once a version of it has loaded.
    fn transfer(&self, req: &Request<'_>, serial: Option<u32>) -> Option<Box<dyn ZoneStream>> {
        let zones = (self.zones)();
        let z = zones.iter().find(|z| z.origin().wire() == req.qname.wire())?;
        let data = z.current()?;
        // CoreDNS's file answers with the SOA alone only for a client serial other than 0.
        let only_soa = serial.is_some_and(|s| s != 0 && s == data.serial());
        Some(Box::new(FileZone::new(data, only_soa)))
    }

    fn serves(&self, zone: &Zone) -> bool {
        (self.zones)()
            .iter()
            .any(|z| z.origin() == zone && z.current().is_some())
    }

    fn notifies(&self, changed: Arc<dyn Fn(&Zone) + Send + Sync>) -> Option<Vec<Zone>> {
        (self.watch)(Box::new(move |z: &ServedZone| changed(z.origin())));
        Some(self.startup.clone())
    }
}

/// A transfer of one version of a zone in progress.
struct FileZone {
    /// Borrows from `data` (declared first, so dropped first): see [`FileZone::new`].
    records: Box<dyn Iterator<Item = ZoneRecord<'static>> + Send>,
    /// A record that did not fit in the last message: it opens the next.
    pending: Option<ZoneRecord<'static>>,
    soa: ZoneRecord<'static>,
    /// Where the stream is: 0 the opening SOA next, 1 among the records, 2 the
    /// closing SOA next, 3 done.
    state: u8,
    origin_len: usize,
    data: Arc<ZoneData>,
}

impl FileZone {
    fn new(data: Arc<ZoneData>, only_soa: bool) -> FileZone {
        // SAFETY: the iterator and the SOA borrow from the `ZoneData` behind `data`,
        // which this struct keeps alive and never hands out or replaces; an `Arc`'s
        // value does not move; and `records` and `soa` are dropped before `data`
        // (declaration order). So the borrows, made `'static` here, never outlive
        // what they borrow. (The zone's records are walked by one iterator kept
        // across messages: skipping to a position again for every message would cost
        // the square of the zone's size.)
        let zone: &'static ZoneData = unsafe { &*Arc::as_ptr(&data) };
        let mut records: Box<dyn Iterator<Item = ZoneRecord<'static>> + Send> = Box::new(zone.records());
        if only_soa {
            records = Box::new(std::iter::empty());
        } else {
            // The SOA opens the list: it is written apart, first and last.
            records.next();
        }
        FileZone {
            records,
            pending: None,
            soa: zone.soa(),
            state: if only_soa { 2 } else { 0 },
            origin_len: data.origin().wire().len(),
            data,
        }
    }

    /// Writes one record, its owner relative to the question (the zone); `false` when
    /// the message is full.
    fn put(&self, msg: &mut Response, r: &ZoneRecord<'_>) -> bool {
        let head = &r.owner[..r.owner.len().saturating_sub(self.origin_len)];
        let rr = Record {
            owner: Name {
                head,
                mid: &[],
                tail: Tail::Question(QNAME_OFFSET),
            },
            rtype: r.rtype,
            ttl: r.ttl,
            data: Rdata::Raw(r.rdata),
        };
        !matches!(msg.push_or_full(Section::Answer, &rr), Err(PushError::Truncated))
    }
}

impl ZoneStream for FileZone {
    fn fill(&mut self, msg: &mut Response) -> bool {
        let _ = &self.data;
        if self.state == 0 {
            if !self.put(msg, &self.soa) {
                return false;
            }
            self.state = 1;
        }
        if self.state == 1 {
            while let Some(r) = self.pending.take().or_else(|| self.records.next()) {
                if !self.put(msg, &r) {
                    self.pending = Some(r);
                    return false;
                }
            }
            self.state = 2;
        }
        if self.state == 2 {
            if !self.put(msg, &self.soa) {
                return false;
            }
            self.state = 3;
        }
        debug_assert_eq!(self.soa.rtype, rtype::SOA);
        true
    }
}
