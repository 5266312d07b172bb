//! `file`: serves zones from RFC 1035 master files, authoritatively, as CoreDNS's plugin
//! of that name does (README.md beside this file); `auto` serves the zone files of a
//! directory with the same zones ([`ServedZone`]) and the same answers.
//!
//! ```text
//!   setup: read each DBFILE for each origin ──▶ ZoneData (immutable tree, zone.rs)
//!          (domain's zone-file scanner, parse.rs)        │ ArcSwapOption in a ServedZone
//!                                                        ▼
//!   worker: serve ── longest origin ── load ──▶ ZoneData::answer ──▶ reply buffer
//!                                                        ▲ store (whole zone)
//!   reload thread (Lifecycle::start..stop): every `reload`, per zone: read the file up
//!   to its first SOA; same serial (or, with reload_by_mtime, same mtime): nothing;
//!   otherwise build the new zone here, off the workers, and swap it in. A file that
//!   does not parse keeps the old zone serving, and the reason is logged.
//! ```
//!
//! # The zones, for other plugins (zone transfer)
//!
//! Each zone served is an `Arc<`[`ServedZone`]`>`: [`File::zones`] and `auto`'s
//! `Auto::zones` list them. A `ServedZone` gives
//!
//! * [`ServedZone::origin`]: its name;
//! * [`ServedZone::current`]: the zone being served now, an `Arc<`[`ZoneData`]`>` that
//!   never changes (a reload swaps in another), `None` while no version of the file
//!   has loaded;
//! * [`ServedZone::serial`]: that zone's SOA serial;
//! * [`ZoneData::records`]: every record of that zone in a stable order, the apex SOA
//!   first, then the names in canonical order (RFC 4034 6.1) ([`ZoneRecord`]: owner,
//!   type, TTL and data in uncompressed wire form); [`ZoneData::soa`] the SOA alone;
//! * [`ServedZone::generation`], a counter raised at each swap, and
//!   [`ServedZone::on_change`], callbacks run (on the reload thread) after each swap,
//!   for NOTIFY (CoreDNS's file and auto call `transfer.Notify` after a reload).
//!
//! # Bounds
//!
//! A zone's files together hold at most [`parse::MAX_ZONE_BYTES`] (64 MiB) and
//! [`parse::MAX_RECORDS`] (1,000,000) records; `$INCLUDE` nests at most
//! [`parse::MAX_INCLUDE_DEPTH`] deep. An answer costs a walk of the query name's labels
//! (binary search per level), a CNAME chain of at most 9 links inside the zone, and
//! one budget visit per record written.

pub mod parse;
pub mod xfr;
pub mod zone;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::chain::{Handler, Query, Step};
use crate::config::{ConfigError, Directive, Loc, parse_duration, zone_args};
use crate::dns::{NameKey, Rcode, Zone, rtype};
use crate::setup::{Lifecycle, Plugin, SetupCtx};

pub use parse::ParseError;
pub use zone::{ZoneData, ZoneRecord};

/// The directive name, and the prefix of its errors.
const NAME: &str = "file";
/// CoreDNS's default interval between checks of a zone file.
pub const DEFAULT_RELOAD: Duration = Duration::from_secs(60);

/// A callback run after a new version of a zone is swapped in.
pub type ChangeFn = Box<dyn Fn(&ServedZone) + Send + Sync>;

/// One zone served from a file: its current version, swapped whole on reload.
pub struct ServedZone {
    origin: Zone,
    /// The file it is read from (`auto` may move it to another file of its directory).
    path: Mutex<PathBuf>,
    data: ArcSwapOption<ZoneData>,
    generation: AtomicU64,
    listeners: Mutex<Vec<Arc<ChangeFn>>>,
    /// How often the reload thread looks at the file; zero: never.
    reload: Duration,
    /// `reload_by_mtime`: a newer modification time, not a new serial, makes a reload.
    by_mtime: bool,
}

impl ServedZone {
    /// A zone read from `path`, not loaded yet.
    pub fn new(origin: Zone, path: PathBuf, reload: Duration, by_mtime: bool) -> ServedZone {
        ServedZone {
            origin,
            path: Mutex::new(path),
            data: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            listeners: Mutex::new(Vec::new()),
            reload,
            by_mtime,
        }
    }

    /// The zone's name.
    pub fn origin(&self) -> &Zone {
        &self.origin
    }

    /// The file the zone is read from.
    pub fn path(&self) -> PathBuf {
        self.path.lock().clone()
    }

    pub(crate) fn set_path(&self, path: PathBuf) {
        *self.path.lock() = path;
    }

    /// The version served now; `None` until the file has loaded once.
    pub fn current(&self) -> Option<Arc<ZoneData>> {
        self.data.load_full()
    }

    /// The SOA serial of the version served now.
    pub fn serial(&self) -> Option<u32> {
        self.data.load().as_ref().map(|d| d.serial())
    }

    /// Raised by one each time a new version is swapped in (0: none yet).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Runs `f` after every later swap of a new version, on the thread that swapped it
    /// (the reload thread): it must not block for long.
    pub fn on_change(&self, f: ChangeFn) {
        self.listeners.lock().push(Arc::new(f));
    }

    /// Reads the zone from its file now, whatever the serial (setup, a new `auto`
    /// file).
    pub fn load(&self) -> Result<(), ParseError> {
        let path = self.path();
        let parsed = parse::read_zone(&path, &self.origin, None)?;
        let data = ZoneData::build(&self.origin, parsed.records, parsed.mtime).map_err(|e| ParseError::File {
            file: path.clone(),
            msg: e,
        })?;
        self.publish(data);
        Ok(())
    }

    fn publish(&self, data: ZoneData) {
        if data.ignored() > 0 {
            log::warn!(
                target: "plugin/file",
                "zone {:?}: {} record(s) outside the zone or a second SOA ignored",
                self.origin.as_str(),
                data.ignored()
            );
        }
        self.data.store(Some(Arc::new(data)));
        self.generation.fetch_add(1, Ordering::AcqRel);
        let listeners: Vec<Arc<ChangeFn>> = self.listeners.lock().clone();
        for f in listeners {
            f(self);
        }
    }

    /// CoreDNS's reload tick (reload.go): with `reload_by_mtime`, nothing unless the
    /// file is newer than the version served; otherwise the file is read up to its
    /// first SOA, and nothing more if its serial is the one served. A new version is
    /// built here and swapped in; a file that does not parse or build is logged and the
    /// version served stays.
    pub fn reload(&self) {
        let path = self.path();
        let current = self.current();
        let mut unchanged_if = current.as_ref().map(|d| d.serial());
        if self.by_mtime {
            let mtime = match std::fs::metadata(&path).and_then(|m| m.modified()) {
                Ok(t) => t,
                Err(e) => {
                    log::error!(target: "plugin/file", "Failed to stat zone {:?} in {:?}: {e}", self.origin.as_str(), path.display().to_string());
                    return;
                }
            };
            if let Some(d) = &current {
                if d.mtime().is_some_and(|old| mtime <= old) {
                    return;
                }
            }
            unchanged_if = None;
        }
        let built = parse::read_zone(&path, &self.origin, unchanged_if).and_then(|p| {
            ZoneData::build(&self.origin, p.records, p.mtime).map_err(|e| ParseError::File {
                file: path.clone(),
                msg: e,
            })
        });
        match built {
            Ok(data) => {
                let serial = data.serial();
                self.publish(data);
                log::info!(
                    target: "plugin/file",
                    "Successfully reloaded zone {:?} in {:?} with {serial} SOA serial",
                    self.origin.as_str(),
                    path.display().to_string()
                );
            }
            Err(ParseError::Unchanged(_)) => {}
            Err(e) => {
                let keeping = match &current {
                    Some(d) => format!("still serving serial {}", d.serial()),
                    None => "nothing served yet".to_string(),
                };
                log::error!(target: "plugin/file", "Parsing zone {:?}: {e}; {keeping}", self.origin.as_str());
            }
        }
    }

    /// Answers `q` (a name in this zone) for plugin `plugin`.
    pub(crate) fn serve(&self, q: &mut Query<'_, '_>, plugin: &'static str, fall: &[Zone]) -> Step {
        // Without the transfer plugin before this one, transfers are refused (file.go).
        if q.req.qtype == rtype::AXFR || q.req.qtype == rtype::IXFR {
            return Step::Fail(Rcode::REFUSED, None);
        }
        let data = self.data.load();
        let Some(data) = data.as_ref() else {
            // No version of the file has loaded: CoreDNS's zone without a SOA.
            return Step::Fail(Rcode::SERVFAIL, None);
        };
        let falls = !fall.is_empty() && Zone::any_contains(fall, &q.req.qname);
        data.answer(q, plugin, falls)
    }
}

/// The zone of `zones` (sorted with the longest origins first) that holds `name`.
pub(crate) fn zone_for<'z>(zones: &'z [Arc<ServedZone>], name: &NameKey) -> Option<&'z Arc<ServedZone>> {
    zones.iter().find(|z| z.origin.contains(name))
}

/// The plugin: the zones of every `file` directive of the block.
pub struct File {
    /// Longest origin first, so that the first that holds a name is its zone.
    zones: Vec<Arc<ServedZone>>,
    fall: Vec<Zone>,
    reloader: Mutex<Option<Reloader>>,
}

/// `file DBFILE [ZONES...] { reload DURATION; reload_by_mtime; fallthrough [ZONES...] }`,
/// any number of times in a block (CoreDNS's setup reads them all). Each file is read
/// here, once per origin: a file that does not parse fails the configuration with the
/// file's name and line (`-check`, start-up, a Corefile reload).
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let mut zones: Vec<Arc<ServedZone>> = Vec::new();
    let mut fall = Vec::new();
    for d in dirs {
        let Some((file, origins)) = d.args.split_first() else {
            return Err(d.arg_err(NAME));
        };
        let origins = if origins.is_empty() {
            ctx.zones.to_vec()
        } else {
            zone_args(NAME, origins)?
        };
        let opts = parse_options(NAME, d, &mut fall)?;
        let path = ctx.config_dir.join(&file.text);
        let missing = match crate::config::read::open_regular(&path) {
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = &missing {
            // CoreDNS: fatal without reload, else tried again at each reload.
            if opts.reload.is_zero() {
                return Err(d.err(NAME, format!("open {}: {why}", path.display())));
            }
            log::warn!(
                target: "plugin/file",
                "Failed to open {:?}: {why}: trying again in {:?}",
                path.display().to_string(),
                opts.reload
            );
        }
        for origin in origins {
            if zones.iter().any(|z| z.origin == origin) {
                return Err(d.err(NAME, format!("zone {} is served twice", origin.as_str())));
            }
            let z = ServedZone::new(origin, path.clone(), opts.reload, opts.by_mtime);
            if missing.is_none() {
                z.load().map_err(|e| zone_error(d, &z.origin, e))?;
            }
            zones.push(Arc::new(z));
        }
    }
    zones.sort_by_key(|z| std::cmp::Reverse(z.origin.label_count()));
    Ok(Plugin::both(Arc::new(File {
        zones,
        fall,
        reloader: Mutex::new(None),
    })))
}

/// What the block of a `file` or `auto` directive set.
pub(crate) struct Options {
    pub reload: Duration,
    pub by_mtime: bool,
    pub directory: Option<(Directive, Vec<String>)>,
}

/// The block's options, in CoreDNS's words. `auto` adds `directory` (the directive's
/// line is returned for it to check) and has no `reload_by_mtime`.
pub(crate) fn parse_options(name: &str, d: &Directive, fall: &mut Vec<Zone>) -> Result<Options, ConfigError> {
    let mut opts = Options {
        reload: DEFAULT_RELOAD,
        by_mtime: false,
        directory: None,
    };
    for opt in d.options() {
        opt.expect_no_block(name)?;
        match opt.name.as_str() {
            "fallthrough" if opt.args.is_empty() => *fall = vec![Zone::root()],
            "fallthrough" => *fall = zone_args(name, &opt.args)?,
            "reload" => opts.reload = parse_reload(name, opt)?,
            "reload_by_mtime" if name == NAME => {
                opt.expect_args(name, 0, 0)?;
                opts.by_mtime = true;
            }
            "directory" if name != NAME => {
                opts.directory = Some((opt.clone(), opt.args.iter().map(|a| a.text.clone()).collect()));
            }
            "upstream" => {
                // CoreDNS still reads and ignores it ("remove soon"): said once here.
                log::warn!(target: "plugin/file", "{}: {name}: 'upstream' has no effect (CoreDNS ignores it too)", opt.loc());
            }
            other => return Err(opt.err(name, format!("unknown property '{other}'"))),
        }
    }
    Ok(opts)
}

/// `reload DURATION`: a Go duration; `0` turns reloading off; negative is refused.
fn parse_reload(name: &str, opt: &Directive) -> Result<Duration, ConfigError> {
    let Some(arg) = opt.args.first() else {
        return Err(opt.err(name, "reload duration value is expected"));
    };
    opt.expect_args(name, 1, 1)?;
    let text = arg.text.as_str();
    if let Some(rest) = text.strip_prefix('-') {
        if parse_duration(rest).is_some_and(|d| !d.is_zero()) {
            return Err(opt.err(name, format!("invalid negative duration for reload '{text}'")));
        }
    }
    parse_duration(text.strip_prefix('+').unwrap_or(text))
        .or_else(|| text.strip_prefix('-').and_then(parse_duration))
        .ok_or_else(|| opt.err(name, format!("time: invalid duration \"{text}\"")))
}

/// A zone that did not load at setup, as a configuration error: at the zone file's
/// line when the error has one (`db.example.org:7 - file: ...`), else at the directive.
pub(crate) fn zone_error(d: &Directive, origin: &Zone, e: ParseError) -> ConfigError {
    match e {
        ParseError::At { file, line, msg } => ConfigError::at(
            &Loc {
                file: file.display().to_string().into(),
                line: line as u32,
            },
            format!(
                "{NAME}: failed to parse zone {} ({} names it at line {}): {msg}",
                origin.as_str(),
                d.loc().file,
                d.loc().line
            ),
        ),
        ParseError::File { file, msg } => d.err(
            NAME,
            format!(
                "failed to parse file {:?} for origin {}: {msg}",
                file.display().to_string(),
                origin.as_str()
            ),
        ),
        e => d.err(NAME, format!("zone {}: {e}", origin.as_str())),
    }
}

impl File {
    /// The zones served, longest origin first.
    pub fn zones(&self) -> &[Arc<ServedZone>] {
        &self.zones
    }
}

impl Handler for File {
    fn name(&self) -> &'static str {
        NAME
    }

    /// CoreDNS's `ServeDNS`: a name outside every zone goes to the next plugin;
    /// AXFR/IXFR are refused; a zone not loaded is SERVFAIL; the rest is the zone's
    /// answer (zone.rs).
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        match zone_for(&self.zones, &q.req.qname) {
            Some(z) => z.serve(q, NAME, &self.fall),
            None => Step::Next,
        }
    }

    /// The zones for `transfer` (xfr.rs).
    fn transferer(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let source = xfr::FileTransferer::fixed(self.zones.clone());
        Some(Arc::new(crate::plugin::transfer::Source(Arc::new(source))))
    }
}

impl Lifecycle for File {
    /// Starts the reload thread, unless every zone has `reload 0`.
    fn start(&self) {
        let zones: Vec<Arc<ServedZone>> = self.zones.iter().filter(|z| !z.reload.is_zero()).cloned().collect();
        let mut reloader = self.reloader.lock();
        if reloader.is_none() && !zones.is_empty() {
            *reloader = Reloader::spawn("file-reload", None, move || zones.clone(), || {});
        }
    }

    fn stop(&self) {
        if let Some(r) = self.reloader.lock().take() {
            r.stop();
        }
    }
}

/// A background thread that reloads zones when they are due, each every its own
/// `reload`, and runs `tick` (auto's directory scan) every `every` when given.
pub(crate) struct Reloader {
    stop: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Reloader {
    /// Starts the thread: `zones` lists the zones to look at (asked again each round,
    /// for `auto`, whose zones come and go).
    pub(crate) fn spawn(
        name: &str,
        every: Option<Duration>,
        zones: impl Fn() -> Vec<Arc<ServedZone>> + Send + 'static,
        tick: impl Fn() + Send + 'static,
    ) -> Option<Reloader> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
            let start = Instant::now();
            // When each zone was last looked at (from the start when never).
            let mut last: HashMap<Zone, Instant> = HashMap::new();
            let mut last_tick = start;
            loop {
                let list = zones();
                let due = |z: &ServedZone, last: &HashMap<Zone, Instant>| {
                    last.get(&z.origin).copied().unwrap_or(start) + z.reload
                };
                let now = Instant::now();
                let mut next = now + Duration::from_secs(3600);
                if let Some(every) = every {
                    next = next.min(last_tick + every);
                }
                for z in list.iter().filter(|z| !z.reload.is_zero()) {
                    next = next.min(due(z, &last));
                }
                match stopped.recv_timeout(next.saturating_duration_since(now)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let now = Instant::now();
                if every.is_some_and(|e| now >= last_tick + e) {
                    last_tick = now;
                    tick();
                }
                let list = zones();
                last.retain(|o, _| list.iter().any(|z| z.origin == *o));
                for z in list.iter().filter(|z| !z.reload.is_zero()) {
                    if now >= due(z, &last) {
                        last.insert(z.origin.clone(), now);
                        z.reload();
                    }
                }
            }
        });
        match spawned {
            Ok(thread) => Some(Reloader { stop, thread }),
            Err(e) => {
                log::error!(target: "plugin/file", "cannot start the reload thread: {e}");
                None
            }
        }
    }

    /// Ends the thread (a reload under way finishes first: one zone's read).
    pub(crate) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
pub(crate) mod tests;
