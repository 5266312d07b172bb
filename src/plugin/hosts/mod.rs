//! `hosts`: answers A, AAAA and PTR queries from an `/etc/hosts`-style file and from
//! lines written inside the Corefile, as CoreDNS's plugin of that name does (README.md
//! beside this file).
//!
//! ```text
//!   setup ──parse inline lines──▶ Table (fixed for the server's life)
//!   setup ──read file──▶ ArcSwap<HostsData> ◀──store── reload thread: every `reload`,
//!                          │ load                     stat the file, stream it into a
//!                          ▼                          new table when its mtime or size
//!   serve: file table, then inline table              changed (within the limits)
//!            ──▶ answer / NODATA / next / SERVFAIL
//! ```
//!
//! Everything a query needs is prepared when a table is built (wire-format keys,
//! addresses, PTR targets), so answering allocates nothing. A read of the file is
//! bounded ([`MAX_FILE_BYTES`], [`MAX_ENTRIES`], lines of [`table::MAX_LINE`]) and is
//! all or nothing: a file over a limit leaves the previous table serving. A re-read
//! swaps the table in a shard at a time ([`FILE_SHARDS`]); if the file changes
//! between its passes it starts again ([`REREAD_RETRIES`]), and a table left holding
//! two versions is read again at the next check whatever the file's stamp. A stop
//! abandons a read within a few thousand lines, so it never waits for the file.

mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use crossbeam_channel::{RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::chain::{ChainError, Handler, Query, Step};
use crate::config::{ConfigError, Directive, parse_duration, zone_args};
use crate::dns::{Name, NameKey, Rcode, Rdata, Record, Zone, rtype, wire};
use crate::plugin::once;
use crate::setup::{Lifecycle, Plugin, SetupCtx};

use table::{Limits, ParseOptions, ReadError, Table, parse_addr, reverse_address};

/// The directive name, and the prefix of its errors.
const NAME: &str = "hosts";
/// The file read when the directive names none.
const DEFAULT_PATH: &str = "/etc/hosts";
/// CoreDNS's default TTL for the records it makes.
const DEFAULT_TTL: u32 = 3600;
/// CoreDNS's default interval between checks of the file.
const DEFAULT_RELOAD: Duration = Duration::from_secs(5);
/// Largest hosts file read: 128 MiB. CoreDNS reads any size; the largest hosts files
/// in use are ad-blocking lists, from a few hundred thousand lines (a few to a few
/// tens of MiB) to merged lists of about a million, which fit with room to spare.
pub const MAX_FILE_BYTES: u64 = 128 << 20;
/// Most name/address entries read from one file: 1,000,000, what bounds memory. The
/// table costs 41 bytes an entry without PTR records and 53 with them, for names like
/// `n123456.example.org` (a longer name adds its extra length), so a full file takes
/// some 55 MiB, a re-read about 1.5 times that at its peak (see [`FILE_SHARDS`]), and a
/// reload of the Corefile twice that (README.md, Limits, says how this was measured).
pub const MAX_ENTRIES: usize = 1_000_000;
/// The limits every read of the file obeys.
const LIMITS: Limits = Limits {
    bytes: MAX_FILE_BYTES,
    entries: MAX_ENTRIES,
};

/// The plugin: its options, the inline entries and the current read of the file.
pub struct Hosts {
    /// Zones the plugin answers for; PTR queries are looked up wherever they are.
    zones: Vec<Zone>,
    /// `fallthrough` zones; empty when it was not given.
    fall: Vec<Zone>,
    /// `fallthrough_unsupported`: other query types on an existing name go on too.
    fall_unsupported: bool,
    ttl: u32,
    /// How often the reload thread checks the file; zero disables it.
    reload: Duration,
    /// Entries from the Corefile's inline lines, parsed once at setup.
    inline: Table,
    /// The file and its latest read, shared with the reload thread.
    file: Arc<HostsFile>,
    /// The running reload thread, if any.
    reloader: Mutex<Option<Reloader>>,
}

/// Modification time and size: what tells one version of the file from another.
type Stamp = (SystemTime, u64);

/// What the reads of the hosts file produced: the unit the reload thread publishes.
struct HostsData {
    /// The table served: the last file read whole within the limits.
    table: Arc<Table>,
    /// The stamp of the file `table` was read from; `None` until the first read.
    stamp: Option<Stamp>,
    /// The version last refused (over a limit, or not a regular file): it is not read
    /// again, nor reported again, until the file changes (unless `mixed`).
    refused: Option<Stamp>,
    /// Whether `table` may hold shards of two versions of the file: a re-read is under
    /// way, or one ended before its last shard (the file kept changing between its
    /// passes, its new version was refused, or the plugin stopped). `stamp` then still
    /// names the version before, and the next check reads the file again whole, even
    /// if its stamp is the one served or refused: a mix is never kept for good.
    mixed: bool,
}

/// The hosts file, how to parse it, and the snapshot of its latest read.
struct HostsFile {
    path: PathBuf,
    opts: ParseOptions,
    limits: Limits,
    data: ArcSwap<HostsData>,
    /// Raised by [`Hosts::stop`]: a read under way gives up at its next look (between
    /// passes, and every few thousand lines within one), keeping what is served.
    stopping: AtomicBool,
    /// Called before each pass of a re-read with the shard it builds: lets a test change
    /// the file between passes, or stop the plugin during one.
    #[cfg(test)]
    before_pass: Mutex<Option<PassHook>>,
}

/// See [`HostsFile::before_pass`].
#[cfg(test)]
type PassHook = Box<dyn FnMut(usize) + Send>;

/// Shards of the file's table. A re-read rebuilds them one at a time, each from its own
/// pass over the file, and swaps each in as it is built: the re-read holds one shard
/// more than serving does (with its build's scratch, about half a table), where
/// building the whole new table next to the old one would hold two. It reads the file
/// four times instead of once (a pass over a million lines took 1 to 2 s on a busy
/// 2-core machine); only a change of the file costs that.
pub const FILE_SHARDS: usize = 4;

/// How many times a re-read starts again from its first pass when the file changed
/// between two of its passes (an updater writing it in place). Past that, the re-read
/// gives up with the table marked [`HostsData::mixed`], and the next check reads again.
const REREAD_RETRIES: usize = 3;

/// How one attempt at a sharded re-read ended.
enum Reread {
    /// Every shard was rebuilt from the same version, and the table published whole.
    Done,
    /// Two passes saw different files (or the file could not be opened again).
    Changed,
    /// The version read is over a limit, or could not be read: why.
    Refused(String),
    /// The plugin is stopping.
    Stopped,
}

const _: () = assert!(FILE_SHARDS <= table::MAX_SHARDS);

/// What looking at the file found.
enum FileCheck {
    /// The same version as served (or as last refused).
    Unchanged,
    /// No file (yet), or a directory: CoreDNS only warns at setup; nothing changes.
    Absent,
    /// A new version, opened.
    Changed(std::fs::File, Stamp),
    /// A new version that is not served, and why.
    Refused(String, Stamp),
}

/// The handle on a running reload thread: dropping `stop` ends it (with
/// [`HostsFile::stopping`] raised, so that a re-read under way ends too).
struct Reloader {
    stop: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Everything the Corefile says, validated.
struct Config {
    path: PathBuf,
    zones: Vec<Zone>,
    fall: Vec<Zone>,
    fall_unsupported: bool,
    ttl: u32,
    reload: Duration,
    auto_reverse: bool,
    /// The inline lines, tokens re-joined with single spaces.
    inline: Vec<String>,
}

/// `hosts [FILE [ZONES...]] { INLINE | ttl | no_reverse | reload | fallthrough ... }`.
/// The file is read here, at setup: one over a limit, or a FIFO or device, is a
/// configuration error (`-check` reports it, a reload with it keeps the old server).
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let d = once(NAME, dirs)?;
    let hosts = Hosts::new(parse_config(d, ctx)?);
    hosts.file.first_read().map_err(|why| d.err(NAME, why))?;
    Ok(Plugin::both(Arc::new(hosts)))
}

fn parse_config(d: &Directive, ctx: &SetupCtx<'_>) -> Result<Config, ConfigError> {
    let mut cfg = Config {
        path: PathBuf::from(DEFAULT_PATH),
        zones: Vec::new(),
        fall: Vec::new(),
        fall_unsupported: false,
        ttl: DEFAULT_TTL,
        reload: DEFAULT_RELOAD,
        auto_reverse: true,
        inline: Vec::new(),
    };
    if let Some((file, zones)) = d.args.split_first() {
        cfg.path = ctx.config_dir.join(&file.text);
        check_file(d, &cfg.path)?;
        cfg.zones = zone_args(NAME, zones)?;
    }
    if cfg.zones.is_empty() {
        cfg.zones = ctx.zones.to_vec();
    }
    let mut fall_unsupported_at = None;
    for opt in d.options() {
        opt.expect_no_block(NAME)?;
        match opt.name.as_str() {
            // A later `fallthrough` replaces an earlier one, as CoreDNS's does.
            "fallthrough" if opt.args.is_empty() => cfg.fall = vec![Zone::root()],
            "fallthrough" => cfg.fall = zone_args(NAME, &opt.args)?,
            "fallthrough_unsupported" => {
                opt.expect_args(NAME, 0, 0)?;
                cfg.fall_unsupported = true;
                fall_unsupported_at = Some(opt);
            }
            "no_reverse" => {
                opt.expect_args(NAME, 0, 0)?;
                cfg.auto_reverse = false;
            }
            "ttl" => cfg.ttl = parse_ttl(opt)?,
            "reload" => cfg.reload = parse_reload(opt)?,
            // CoreDNS takes any other line as a hosts-file line, but only until a
            // `fallthrough` has been seen; after it, such a line is an error.
            _ if cfg.fall.is_empty() => cfg.inline.push(inline_line(opt)?),
            other => return Err(opt.err(NAME, format!("unknown property '{other}'"))),
        }
    }
    if let (Some(opt), true) = (fall_unsupported_at, cfg.fall.is_empty()) {
        return Err(opt.err(NAME, "fallthrough_unsupported requires fallthrough"));
    }
    Ok(cfg)
}

/// CoreDNS stats a FILE given in the Corefile: a missing file (or a directory) is
/// only a warning, since the file may appear later; any other failure is an error.
/// The default `/etc/hosts` is not checked.
fn check_file(d: &Directive, path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            log::warn!(target: "plugin/hosts", "Hosts file {:?} is a directory", path.display().to_string());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::warn!(target: "plugin/hosts", "File does not exist: {}", path.display());
        }
        Err(e) => {
            return Err(d.err(NAME, format!("unable to access hosts file '{}': {e}", path.display())));
        }
    }
    Ok(())
}

/// `ttl SECONDS`: 1 to 65535, with CoreDNS's messages.
fn parse_ttl(opt: &Directive) -> Result<u32, ConfigError> {
    let Some(first) = opt.args.first() else {
        return Err(opt.err(NAME, "ttl needs a time in second"));
    };
    // CoreDNS ignores anything after the number; a second argument is more likely a
    // mistake worth reporting.
    opt.expect_args(NAME, 1, 1)?;
    // Go's Atoi: an optional sign, decimal digits, 64-bit range.
    let ttl: i64 = first
        .text
        .parse()
        .map_err(|_| opt.err(NAME, "ttl needs a number of second"))?;
    match u32::try_from(ttl) {
        Ok(ttl @ 1..=65535) => Ok(ttl),
        _ => Err(opt.err(NAME, "ttl provided is invalid")),
    }
}

/// `reload DURATION`: a Go duration, `0` to disable, negative refused (CoreDNS's
/// messages). Sub-second values are allowed, as in CoreDNS.
fn parse_reload(opt: &Directive) -> Result<Duration, ConfigError> {
    let [arg] = opt.args.as_slice() else {
        return Err(opt.err(NAME, "reload needs a duration (zero seconds to disable)"));
    };
    let text = arg.text.as_str();
    // Go's ParseDuration takes one leading sign; the shared parser takes none.
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let reload =
        parse_duration(unsigned).ok_or_else(|| opt.err(NAME, format!("invalid duration for reload '{text}'")))?;
    if negative && !reload.is_zero() {
        return Err(opt.err(NAME, format!("invalid negative duration for reload '{text}'")));
    }
    Ok(reload)
}

/// Checks an inline line (`IP NAME...`) and returns it as hosts-file text. CoreDNS
/// accepts any line here and skips what does not parse, so a misspelt option (`tll
/// 60`) passes unnoticed; clusterdns refuses a line that is not a valid entry.
fn inline_line(opt: &Directive) -> Result<String, ConfigError> {
    if parse_addr(opt.name.as_str()).is_none() {
        return Err(opt.err(NAME, format!("unknown property '{}'", opt.name.text)));
    }
    if opt.args.is_empty() {
        return Err(opt.arg_err(NAME));
    }
    let mut line = opt.name.text.clone();
    for name in &opt.args {
        if wire::name_from_str(&name.text).is_none() {
            return Err(ConfigError::at(
                &name.loc,
                format!("{NAME}: invalid name '{}'", name.text),
            ));
        }
        line.push(' ');
        line.push_str(&name.text);
    }
    Ok(line)
}

impl Hosts {
    fn new(cfg: Config) -> Hosts {
        let opts = ParseOptions {
            zones: cfg.zones.clone(),
            auto_reverse: cfg.auto_reverse,
        };
        let inline = Table::parse(cfg.inline.join("\n").as_bytes(), &opts);
        let empty = HostsData {
            table: Arc::new(Table::default()),
            stamp: None,
            refused: None,
            mixed: false,
        };
        Hosts {
            zones: cfg.zones,
            fall: cfg.fall,
            fall_unsupported: cfg.fall_unsupported,
            ttl: cfg.ttl,
            reload: cfg.reload,
            inline,
            file: Arc::new(HostsFile {
                path: cfg.path,
                opts,
                limits: LIMITS,
                data: ArcSwap::from_pointee(empty),
                stopping: AtomicBool::new(false),
                #[cfg(test)]
                before_pass: Mutex::new(None),
            }),
            reloader: Mutex::new(None),
        }
    }

    /// The hosts file this plugin reads.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// `coredns_hosts_entries`: the entries of the file plus those of the inline lines.
    pub fn entries(&self) -> usize {
        self.file.data.load().table.entries() + self.inline.entries()
    }

    /// `coredns_hosts_reload_timestamp_seconds`: CoreDNS reports the modification time
    /// of the file as last parsed (not the time of the parse); `None` before any read.
    pub fn reload_timestamp(&self) -> Option<SystemTime> {
        self.file.data.load().stamp.map(|(mtime, _)| mtime)
    }

    /// Whether `fallthrough` covers `name`.
    fn falls_through(&self, name: &NameKey) -> bool {
        Zone::any_contains(&self.fall, name)
    }
}

impl HostsFile {
    /// Looks at the file: a new version (its modification time or size changed since
    /// the version served or last refused, as CoreDNS's `readHosts` compares; any
    /// version while the table is [`HostsData::mixed`]) is opened if it is a regular
    /// file within the byte limit.
    fn check(&self, data: &HostsData) -> FileCheck {
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) if meta.is_dir() => return FileCheck::Absent,
            Ok(meta) => meta,
            Err(_) => return FileCheck::Absent,
        };
        let stamp = (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
        if !data.mixed && (data.stamp == Some(stamp) || data.refused == Some(stamp)) {
            return FileCheck::Unchanged;
        }
        // Never blocks (a FIFO), never reads a device.
        match crate::config::read::open_regular(&self.path) {
            Ok(_) if meta.len() > self.limits.bytes => {
                FileCheck::Refused(table::ReadError::TooLarge(self.limits.bytes).to_string(), stamp)
            }
            Ok((file, _)) => FileCheck::Changed(file, stamp),
            Err(e) => FileCheck::Refused(format!("it is {e}"), stamp),
        }
    }

    fn reader(file: std::fs::File) -> std::io::BufReader<std::fs::File> {
        std::io::BufReader::with_capacity(64 << 10, file)
    }

    /// The read at setup (one pass, every shard at once: nothing is served yet): a file
    /// refused is an error for the configuration.
    fn first_read(&self) -> Result<(), String> {
        let refused = |why: String| format!("hosts file '{}' refused: {why}", self.path.display());
        match self.check(&self.data.load()) {
            FileCheck::Unchanged | FileCheck::Absent => Ok(()),
            FileCheck::Refused(why, _) => Err(refused(why)),
            FileCheck::Changed(file, stamp) => {
                let table = Table::read(Self::reader(file), &self.opts, self.limits, FILE_SHARDS, &self.stopping)
                    .map_err(|e| refused(e.to_string()))?;
                self.publish(Arc::new(table), Some(stamp), None, false);
                self.loaded();
                release_free_memory();
                Ok(())
            }
        }
    }

    /// Re-reads the file if it changed. A file that disappears keeps the entries read
    /// before (as in CoreDNS); one over a limit, or that is no longer a regular file,
    /// is refused whole: the previous table keeps serving and the refusal is logged
    /// once per version of the file. A file within the limits is read shard by shard
    /// (see [`FILE_SHARDS`]); the first pass checks the limits on the whole file before
    /// anything is swapped in. If the file changes between two passes, the re-read
    /// starts again from the first pass, up to [`REREAD_RETRIES`] times. A raised
    /// [`HostsFile::stopping`] abandons the read.
    fn refresh(&self) {
        let data = self.data.load_full();
        let (file, stamp) = match self.check(&data) {
            FileCheck::Unchanged | FileCheck::Absent => return,
            FileCheck::Refused(why, stamp) => return self.refuse(&data, &why, stamp),
            FileCheck::Changed(file, stamp) => (file, stamp),
        };
        self.read(data, file, stamp);
        release_free_memory();
    }

    /// Reads version `stamp` of the file, opened as `file`, for [`HostsFile::refresh`].
    fn read(&self, data: Arc<HostsData>, file: std::fs::File, stamp: Stamp) {
        if data.stamp.is_none() {
            // Nothing from the file is served: one pass builds it all.
            return match Table::read(Self::reader(file), &self.opts, self.limits, FILE_SHARDS, &self.stopping) {
                Ok(table) => {
                    self.publish(Arc::new(table), Some(stamp), None, false);
                    self.loaded();
                }
                Err(ReadError::Stopped) => self.stopped(),
                Err(e) => self.refuse(&data, &e.to_string(), stamp),
            };
        }
        // Not held while the shards are rebuilt: each old shard must be free to go once
        // its successor is published.
        drop(data);
        let mut opened = Some((file, stamp));
        for _ in 0..=REREAD_RETRIES {
            let (file, stamp) = match opened.take() {
                Some(opened) => opened,
                // Again from the first pass, with the version there is now.
                None => {
                    let data = self.data.load_full();
                    match self.check(&data) {
                        FileCheck::Changed(file, stamp) => (file, stamp),
                        FileCheck::Refused(why, stamp) => return self.refuse(&data, &why, stamp),
                        // Gone: what is served stays, marked mixed; it is read when back.
                        FileCheck::Unchanged | FileCheck::Absent => return self.changed_while_read("went away"),
                    }
                }
            };
            match self.reread(file, stamp) {
                Reread::Done => return self.loaded(),
                Reread::Changed => continue,
                Reread::Refused(why) => return self.refuse(&self.data.load_full(), &why, stamp),
                Reread::Stopped => return self.stopped(),
            }
        }
        self.changed_while_read(&format!("changed during each of {} reads", REREAD_RETRIES + 1));
    }

    /// One attempt at a sharded re-read of `file` (version `stamp`): a pass per shard,
    /// each swapped in as it is built; the stamp served changes with the last one.
    fn reread(&self, file: std::fs::File, stamp: Stamp) -> Reread {
        let data = self.data.load_full();
        let (mut table, served) = (data.table.clone(), data.stamp);
        drop(data);
        let mut first: Option<table::Pass> = None;
        let mut file = Some(file);
        for k in 0..table.shard_count() {
            self.before_pass(k);
            if self.stopping.load(Ordering::Relaxed) {
                return Reread::Stopped;
            }
            let file = match file.take() {
                Some(f) => f,
                None => match crate::config::read::open_regular(&self.path) {
                    Ok((f, _)) => f,
                    Err(_) => return Reread::Changed,
                },
            };
            let (next, pass) = match table.read_shard(Self::reader(file), &self.opts, self.limits, k, &self.stopping) {
                Ok(built) => built,
                Err(ReadError::Stopped) => return Reread::Stopped,
                // Over a limit in the first pass: nothing of this version was swapped in.
                Err(e) if first.is_none() => return Reread::Refused(e.to_string()),
                // The first pass found it within the limits: it changed since.
                Err(_) => return Reread::Changed,
            };
            if first.is_some_and(|p| p != pass) {
                return Reread::Changed;
            }
            first = Some(pass);
            table = Arc::new(next);
            let done = k + 1 == table.shard_count();
            self.publish(table.clone(), if done { Some(stamp) } else { served }, None, !done);
        }
        Reread::Done
    }

    #[cfg(test)]
    fn before_pass(&self, k: usize) {
        if let Some(hook) = self.before_pass.lock().as_mut() {
            hook(k);
        }
    }

    #[cfg(not(test))]
    fn before_pass(&self, _: usize) {}

    /// The file kept changing between the passes of a re-read (or went away during
    /// one): some shards hold one version, some another. The table stays marked mixed,
    /// so the next check reads the file again, whole, whatever its stamp.
    fn changed_while_read(&self, what: &str) {
        log::warn!(
            target: "plugin/hosts",
            "hosts file {:?} {what}; serving a mix of its versions until the next check reads it again",
            self.path.display().to_string()
        );
    }

    /// The plugin is stopping: the read under way was abandoned.
    fn stopped(&self) {
        log::debug!(
            target: "plugin/hosts",
            "hosts file {:?}: read abandoned, the plugin is stopping",
            self.path.display().to_string()
        );
    }

    /// Keeps what is served, and remembers the refused version so as not to report it
    /// again (nor read it again, unless the table served is a mix).
    fn refuse(&self, data: &HostsData, why: &str, stamp: Stamp) {
        if data.refused != Some(stamp) {
            let mixed = if data.mixed {
                ", partly from a version that changed while it was read (the file is read again at every check)"
            } else {
                ""
            };
            log::error!(
                target: "plugin/hosts",
                "hosts file {:?} refused: {why}; still serving the {} entries read before{mixed}",
                self.path.display().to_string(),
                data.table.entries()
            );
        }
        self.publish(data.table.clone(), data.stamp, Some(stamp), data.mixed);
    }

    fn publish(&self, table: Arc<Table>, stamp: Option<Stamp>, refused: Option<Stamp>, mixed: bool) {
        self.data.store(Arc::new(HostsData {
            table,
            stamp,
            refused,
            mixed,
        }));
    }

    /// Logs what the read that completed found.
    fn loaded(&self) {
        let data = self.data.load();
        if data.table.long_lines() > 0 {
            log::warn!(
                target: "plugin/hosts",
                "hosts file {:?}: skipped {} line(s) longer than {} bytes",
                self.path.display().to_string(),
                data.table.long_lines(),
                table::MAX_LINE
            );
        }
        log::debug!(
            target: "plugin/hosts",
            "Parsed hosts file into {} entries ({} KiB)",
            data.table.entries(),
            data.table.heap_bytes() >> 10
        );
    }
}

/// Gives the memory a read freed back to the system: the old table's shards and the
/// build's scratch, a table's worth at once, which glibc would keep (measured: serving
/// 1,000,000 entries in 57 MiB, the process stayed at 79-81 MiB after re-reads; with
/// this, at 55 MiB). As the kubernetes builder does after a relist. On the reload
/// thread, or at setup: never on a worker.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory at the top of glibc's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A query that visited more records than a query may (the chain counts and logs it).
fn over_budget() -> Step {
    Step::Fail(Rcode::SERVFAIL, Some(ChainError::OverBudget(NAME)))
}

impl Handler for Hosts {
    fn name(&self) -> &'static str {
        NAME
    }

    /// CoreDNS's `ServeDNS`: outside the zones only PTR is looked at; a PTR without a
    /// match always goes to the next plugin; an A/AAAA answer lists the file's
    /// addresses, then the inline ones; a name with no addresses at all is NXDOMAIN,
    /// which without a SOA CoreDNS turns into SERVFAIL unless `fallthrough` covers it;
    /// an existing name without the asked type gets an empty authoritative answer.
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        // The request outlives `q`'s borrow: the lookups below hold on to its name while
        // the answer is written.
        let req = q.req;
        let name = &req.qname;
        let qtype = req.qtype;
        if qtype != rtype::PTR && !Zone::any_contains(&self.zones, name) {
            return Step::Next;
        }
        let file = self.file.data.load();
        let tables = [&*file.table, &self.inline];
        let ttl = self.ttl;
        if qtype == rtype::PTR {
            let Some(addr) = reverse_address(name) else {
                return Step::Next;
            };
            if !tables.iter().any(|t| t.has_reverse(addr)) {
                return Step::Next;
            }
            start_authoritative(q);
            let targets = tables.iter().flat_map(|t| t.names_of(addr));
            return answer_each(q, rtype::PTR, ttl, targets, |target| Rdata::Name(Name::wire(target)));
        }
        let has = |t: &&Table| !t.v4(name).is_empty() || !t.v6(name).is_empty();
        if !tables.iter().any(has) {
            if self.falls_through(name) {
                return Step::Next;
            }
            return Step::Fail(Rcode::SERVFAIL, None);
        }
        let supported = qtype == rtype::A || qtype == rtype::AAAA;
        if !supported && self.fall_unsupported && self.falls_through(name) {
            return Step::Next;
        }
        start_authoritative(q);
        match qtype {
            rtype::A => {
                let addrs = tables.iter().flat_map(|t| t.v4(name));
                answer_each(q, qtype, ttl, addrs, |&ip| Rdata::A(ip))
            }
            rtype::AAAA => {
                let addrs = tables.iter().flat_map(|t| t.v6(name));
                answer_each(q, qtype, ttl, addrs, |&ip| Rdata::Aaaa(ip))
            }
            // NODATA.
            _ => Step::Answered,
        }
    }
}

impl Lifecycle for Hosts {
    /// Reads the file once (CoreDNS's start-up read), then, unless `reload 0`, starts
    /// the thread that checks it every `reload`.
    fn start(&self) {
        let mut reloader = self.reloader.lock();
        if reloader.is_some() {
            return;
        }
        self.file.stopping.store(false, Ordering::Relaxed);
        self.file.refresh();
        if self.reload.is_zero() {
            return;
        }
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let file = Arc::clone(&self.file);
        let every = self.reload;
        let spawned = std::thread::Builder::new().name("hosts-reload".into()).spawn(move || {
            // A tick every `every` (Go's ticker) until the sender is dropped.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                file.refresh();
            }
        });
        match spawned {
            Ok(thread) => *reloader = Some(Reloader { stop, thread }),
            Err(e) => log::error!(target: "plugin/hosts", "cannot start the reload thread: {e}"),
        }
    }

    /// Ends the reload thread: dropping the sender wakes it at once, and a re-read under
    /// way gives up within a few thousand lines (what is served stays), so a stop never
    /// waits for a read of the whole file.
    fn stop(&self) {
        // Raised before the lock: `start`'s own read holds it.
        self.file.stopping.store(true, Ordering::Relaxed);
        if let Some(Reloader { stop, thread }) = self.reloader.lock().take() {
            drop(stop);
            let _ = thread.join();
        }
    }

    /// CoreDNS's two unlabelled gauges. The timestamp is 0 until the file has been
    /// read, as CoreDNS's gauge is before its first set.
    fn metrics(&self, out: &mut crate::metrics::Families) {
        out.gauge(
            "coredns_hosts_entries",
            "The combined number of entries in the hosts file and the Corefile.",
            &[],
            self.entries() as f64,
        );
        let stamp = self
            .reload_timestamp()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        out.gauge(
            "coredns_hosts_reload_timestamp_seconds",
            "The modification time of the hosts file as last read, in Unix seconds.",
            &[],
            stamp,
        );
    }
}

/// Answers with one `rtype` record per item, in order, charging the query's budget
/// for each, and stops at the first record that does not fit (the reply is then
/// truncated): a query costs what its answer holds, not what the tables hold.
fn answer_each<'a, T>(
    q: &mut Query<'_, '_>,
    rtype: u16,
    ttl: u32,
    items: impl Iterator<Item = T>,
    rdata: impl Fn(T) -> Rdata<'a>,
) -> Step {
    for item in items {
        if q.worker.budget.charge(1).is_err() {
            return over_budget();
        }
        q.resp.answer(Record::at_question(rtype, ttl, rdata(item)));
        if q.resp.truncated() {
            break;
        }
    }
    Step::Answered
}

fn start_authoritative(q: &mut Query<'_, '_>) {
    q.resp.start(q.req, Rcode::NOERROR);
    q.resp.set_aa(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::WorkerCtx;
    use crate::dns::{Request, Response, Transport};
    use domain::base::{Message, ParsedName};
    use domain::rdata::AllRecordData;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, unique to this test run and
    /// removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "clusterdns-hosts-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A plugin and the directory its file lives in (removed with it).
    struct Fixture {
        hosts: Hosts,
        _dir: TempDir,
    }

    impl std::ops::Deref for Fixture {
        type Target = Hosts;
        fn deref(&self) -> &Hosts {
            &self.hosts
        }
    }

    /// Runs `hosts` setup on the `hosts` lines of `corefile`'s first block, with the
    /// block's zones fixed to `example.org.` and relative paths taken from `dir`.
    fn setup_in(corefile: &str, dir: &Path) -> Result<(Config, Arc<dyn Handler>), ConfigError> {
        let parsed = crate::config::parse_str(corefile, "Corefile", dir)?;
        let dirs: Vec<&Directive> = parsed.blocks[0]
            .directives
            .iter()
            .filter(|d| d.name.text == NAME)
            .collect();
        let zones = [Zone::new("example.org.").unwrap()];
        let ctx = SetupCtx {
            zones: &zones,
            config_dir: dir.to_path_buf(),
            workers: 1,
            binds: None,
            process: &crate::process::ProcessState::new(),
        };
        let plugin = setup(&dirs, &ctx)?.handler.expect("hosts handles queries");
        Ok((parse_config(dirs[0], &ctx)?, plugin))
    }

    fn config(corefile: &str) -> Config {
        setup_in(corefile, Path::new("/nonexistent"))
            .unwrap_or_else(|e| panic!("{e}"))
            .0
    }

    fn error(corefile: &str) -> String {
        match setup_in(corefile, Path::new("/nonexistent")) {
            Ok(_) => panic!("no error for {corefile}"),
            Err(e) => e.to_string(),
        }
    }

    /// A plugin for a Corefile whose `hosts` reads `file` (written into a fresh dir).
    fn plugin(hosts_line: &str, file: &str) -> Fixture {
        let dir = TempDir::new();
        std::fs::write(dir.join("hosts"), file).unwrap();
        let corefile = format!("example.org {{\n{hosts_line}\n}}\n");
        let (cfg, _) = setup_in(&corefile, &dir).unwrap_or_else(|e| panic!("{e}"));
        let h = Hosts::new(cfg);
        h.file.refresh();
        Fixture { hosts: h, _dir: dir }
    }

    fn wire_as_spelled(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    /// Asks `h` for `name`/`qtype`; the reply bytes when it answered.
    fn ask(h: &Hosts, name: &str, qtype: u16) -> (Step, Option<Vec<u8>>) {
        ask_plugin(h, name, qtype)
    }

    fn ask_plugin(h: &dyn Handler, name: &str, qtype: u16) -> (Step, Option<Vec<u8>>) {
        let (step, reply, _) = ask_counting(h, name, qtype);
        (step, reply)
    }

    /// Like [`ask_plugin`], with the records the query visited (its work budget spent).
    fn ask_counting(h: &dyn Handler, name: &str, qtype: u16) -> (Step, Option<Vec<u8>>, u32) {
        let raw = crate::dns::QueryBuilder::new(&wire_as_spelled(name), qtype)
            .id(0x1234)
            .to_vec();
        let a = "127.0.0.1:1".parse().unwrap();
        let req = Request::parse(&raw, Transport::Udp, a, a).ok().unwrap();
        let mut resp = Response::new();
        let mut worker = WorkerCtx::new(0);
        let mut q = Query {
            req: &req,
            resp: &mut resp,
            worker: &mut worker,
            route: &crate::chain::RouteTag {
                slot: 0,
                server: "dns://:53".into(),
                zone: "example.org.".into(),
            },
            answered_by: "",
            error: None,
            refresh: false,
            coalesce: true,
            meta: crate::chain::Metadata::NONE,
        };
        let step = h.serve(&mut q);
        let reply = matches!(step, Step::Answered).then(|| q.resp.finish().to_vec());
        let spent = q.worker.budget.spent();
        (step, reply, spent)
    }

    /// The answer records of a reply, one `owner ttl class type data` line each, and
    /// checks the reply is an authoritative NOERROR.
    fn answers(reply: &[u8]) -> Vec<String> {
        let msg = Message::from_octets(reply).unwrap();
        assert!(msg.header().aa(), "not authoritative");
        assert_eq!(msg.header().rcode(), domain::base::iana::Rcode::NOERROR);
        msg.answer()
            .unwrap()
            .map(|rr| {
                let rr = rr
                    .unwrap()
                    .into_any_record::<AllRecordData<_, ParsedName<_>>>()
                    .unwrap();
                rr.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
            })
            .collect()
    }

    fn answered(h: &Hosts, name: &str, qtype: u16) -> Vec<String> {
        answered_by(h, name, qtype)
    }

    fn answered_by(h: &dyn Handler, name: &str, qtype: u16) -> Vec<String> {
        match ask_plugin(h, name, qtype) {
            (Step::Answered, Some(reply)) => answers(&reply),
            (step, _) => panic!("{name} {qtype}: {step:?}"),
        }
    }

    const FILE: &str = "\
10.0.0.1 example.org www.example.org
10.0.0.2 www.example.org
::1 www.example.org v6only.example.org
10.0.0.9 other.net
192.168.1.10 *.wild.example.org
";

    const INLINE: &str = "hosts hosts {
        10.0.0.3 www.example.org
        10.0.0.4 inline.example.org
    }";

    #[test]
    fn defaults() {
        let c = config("example.org {\n    hosts\n}\n");
        assert_eq!(c.path, Path::new("/etc/hosts"));
        assert_eq!(c.zones, [Zone::new("example.org.").unwrap()]);
        assert_eq!(
            (c.ttl, c.reload, c.auto_reverse, c.fall_unsupported),
            (3600, Duration::from_secs(5), true, false)
        );
        assert!(c.fall.is_empty() && c.inline.is_empty());
    }

    #[test]
    fn file_zones_and_options() {
        let c = config(
            "example.org {
    hosts example.hosts Example.ORG 10.0.0.9/8 dns://example.net:53 {
        ttl 60
        reload 100ms
        no_reverse
        10.0.0.1 a.example.org b.example.org
        fe80::1%lo0 c.example.org
        fallthrough sub.example.org 10.1.0.0/16
        fallthrough_unsupported
    }
}",
        );
        assert_eq!(c.path, Path::new("/nonexistent/example.hosts"));
        let zones: Vec<&str> = c.zones.iter().map(Zone::as_str).collect();
        assert_eq!(zones, ["example.org.", "10.in-addr.arpa.", "example.net."]);
        assert_eq!(
            (c.ttl, c.reload, c.auto_reverse),
            (60, Duration::from_millis(100), false)
        );
        let fall: Vec<&str> = c.fall.iter().map(Zone::as_str).collect();
        assert_eq!(fall, ["sub.example.org.", "1.10.in-addr.arpa."]);
        assert!(c.fall_unsupported);
        assert_eq!(
            c.inline,
            ["10.0.0.1 a.example.org b.example.org", "fe80::1%lo0 c.example.org"]
        );
    }

    #[test]
    fn fallthrough_without_zones_covers_everything_and_last_one_wins() {
        let c = config("example.org {\n hosts {\n  fallthrough example.net\n  fallthrough\n }\n}\n");
        assert_eq!(c.fall, [Zone::root()]);
        let c = config("example.org {\n hosts /etc/hosts {\n  reload 0\n }\n}\n");
        assert_eq!(c.reload, Duration::ZERO);
        // Go's ParseDuration takes a sign: -0 is zero, +1s is one second.
        assert_eq!(
            config("example.org {\n hosts {\n  reload -0\n }\n}\n").reload,
            Duration::ZERO
        );
        assert_eq!(
            config("example.org {\n hosts {\n  reload +1.5s\n }\n}\n").reload,
            Duration::from_millis(1500)
        );
        assert_eq!(config("example.org {\n hosts {\n  ttl +65535\n }\n}\n").ttl, 65535);
    }

    #[test]
    fn setup_errors_name_file_and_line() {
        let block = |body: &str| format!("example.org {{\n    hosts {{\n        {body}\n    }}\n}}\n");
        let cases = [
            ("ttl", "Corefile:3 - hosts: ttl needs a time in second"),
            ("ttl sixty", "Corefile:3 - hosts: ttl needs a number of second"),
            ("ttl 0", "Corefile:3 - hosts: ttl provided is invalid"),
            ("ttl 65536", "Corefile:3 - hosts: ttl provided is invalid"),
            ("ttl -5", "Corefile:3 - hosts: ttl provided is invalid"),
            (
                "ttl 5 6",
                "Corefile:3 - hosts: Wrong argument count or unexpected line ending after '6'",
            ),
            (
                "reload",
                "Corefile:3 - hosts: reload needs a duration (zero seconds to disable)",
            ),
            (
                "reload 1s 2s",
                "Corefile:3 - hosts: reload needs a duration (zero seconds to disable)",
            ),
            ("reload 5", "Corefile:3 - hosts: invalid duration for reload '5'"),
            (
                "reload -1s",
                "Corefile:3 - hosts: invalid negative duration for reload '-1s'",
            ),
            (
                "no_reverse yes",
                "Corefile:3 - hosts: Wrong argument count or unexpected line ending after 'yes'",
            ),
            ("tll 60", "Corefile:3 - hosts: unknown property 'tll'"),
            (
                "10.0.0.1",
                "Corefile:3 - hosts: Wrong argument count or unexpected line ending after '10.0.0.1'",
            ),
            (
                "10.0.0.1 a..example.org",
                "Corefile:3 - hosts: invalid name 'a..example.org'",
            ),
            (
                "fallthrough\n 10.0.0.1 a.example.org",
                "Corefile:4 - hosts: unknown property '10.0.0.1'",
            ),
            (
                "fallthrough exa..mple.org",
                "Corefile:3 - hosts: invalid zone 'exa..mple.org'",
            ),
            (
                "fallthrough_unsupported",
                "Corefile:3 - hosts: fallthrough_unsupported requires fallthrough",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(error(&block(body)), want, "{body}");
        }
        assert_eq!(
            error("example.org {\n hosts\n hosts\n}\n"),
            "Corefile:3 - hosts: this plugin can only be used once per Server Block"
        );
        assert_eq!(
            error("example.org {\n hosts /etc/hosts a..b\n}\n"),
            "Corefile:2 - hosts: invalid zone 'a..b'"
        );
    }

    #[test]
    fn a_missing_file_is_a_warning_other_failures_are_errors() {
        let dir = TempDir::new();
        assert!(setup_in("example.org {\n hosts no-such-file\n}\n", &dir).is_ok());
        // A directory is only a warning too.
        assert!(setup_in("example.org {\n hosts .\n}\n", &dir).is_ok());
        std::fs::write(dir.join("plain"), "").unwrap();
        let err = setup_in("example.org {\n hosts plain/hosts\n}\n", &dir)
            .err()
            .unwrap()
            .to_string();
        let want = format!(
            "Corefile:2 - hosts: unable to access hosts file '{}/plain/hosts': ",
            dir.display()
        );
        assert!(err.starts_with(&want), "{err}");
    }

    #[test]
    fn answers_a_and_aaaa_file_first_then_inline_under_the_question_name() {
        let h = plugin(INLINE, FILE);
        // The owner is the question as spelled (a pointer to it), TTL the default.
        assert_eq!(
            answered(&h, "WWW.Example.ORG", rtype::A),
            [
                "WWW.Example.ORG. 3600 IN A 10.0.0.1",
                "WWW.Example.ORG. 3600 IN A 10.0.0.2",
                "WWW.Example.ORG. 3600 IN A 10.0.0.3"
            ]
        );
        assert_eq!(
            answered(&h, "www.example.org", rtype::AAAA),
            ["www.example.org. 3600 IN AAAA ::1"]
        );
        assert_eq!(
            answered(&h, "inline.example.org", rtype::A),
            ["inline.example.org. 3600 IN A 10.0.0.4"]
        );
        assert_eq!(
            answered(&h, "x.wild.example.org", rtype::A),
            ["x.wild.example.org. 3600 IN A 192.168.1.10"]
        );
        // File: 5 name/address pairs in the zone, each forward and reverse, and the
        // wildcard (no PTR); inline: 2 pairs, forward and reverse.
        assert_eq!(h.entries(), 5 * 2 + 1 + 2 * 2);
    }

    #[test]
    fn an_existing_name_without_the_type_is_nodata() {
        let h = plugin(INLINE, FILE);
        for (name, qtype) in [
            ("v6only.example.org", rtype::A),
            ("www.example.org", rtype::MX),
            ("a.wild.example.org", rtype::TXT),
        ] {
            assert!(answered(&h, name, qtype).is_empty(), "{name}");
        }
    }

    #[test]
    fn a_missing_name_is_servfail_unless_fallthrough_covers_it() {
        let h = plugin("hosts hosts", FILE);
        assert!(matches!(
            ask(&h, "missing.example.org", rtype::A).0,
            Step::Fail(Rcode::SERVFAIL, None)
        ));
        // The wildcard's own parent is not matched by it.
        assert!(matches!(
            ask(&h, "wild.example.org", rtype::A).0,
            Step::Fail(Rcode::SERVFAIL, None)
        ));
        // Outside the zones the plugin is not consulted, fallthrough or not.
        assert!(matches!(ask(&h, "other.net", rtype::A).0, Step::Next));

        let h = plugin("hosts hosts {\n fallthrough sub.example.org\n}", FILE);
        assert!(matches!(
            ask(&h, "missing.example.org", rtype::A).0,
            Step::Fail(Rcode::SERVFAIL, None)
        ));
        assert!(matches!(ask(&h, "x.sub.example.org", rtype::A).0, Step::Next));
        // NODATA is an answer: fallthrough does not apply to it.
        assert!(answered(&h, "v6only.example.org", rtype::A).is_empty());
    }

    #[test]
    fn fallthrough_unsupported_passes_other_types_on_existing_names() {
        let h = plugin("hosts hosts {\n fallthrough\n fallthrough_unsupported\n}", FILE);
        assert!(matches!(ask(&h, "www.example.org", rtype::TXT).0, Step::Next));
        assert!(answered(&h, "v6only.example.org", rtype::A).is_empty());
        assert_eq!(answered(&h, "www.example.org", rtype::AAAA).len(), 1);
    }

    #[test]
    fn ptr_answers_for_known_addresses_even_outside_the_zones() {
        let h = plugin("hosts hosts {\n ttl 60\n 10.0.0.1 inline.example.org\n}", FILE);
        assert_eq!(
            answered(&h, "1.0.0.10.in-addr.arpa", rtype::PTR),
            [
                "1.0.0.10.in-addr.arpa. 60 IN PTR example.org.",
                "1.0.0.10.in-addr.arpa. 60 IN PTR www.example.org.",
                "1.0.0.10.in-addr.arpa. 60 IN PTR inline.example.org."
            ]
        );
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa";
        assert_eq!(
            answered(&h, v6, rtype::PTR),
            [
                format!("{v6}. 60 IN PTR www.example.org."),
                format!("{v6}. 60 IN PTR v6only.example.org.")
            ]
        );
        // Unknown addresses, and names outside the zones (never stored), go on
        // whatever fallthrough says; so does a PTR query for a forward name.
        for name in ["2.2.2.2.in-addr.arpa", "9.0.0.10.in-addr.arpa", "www.example.org"] {
            assert!(matches!(ask(&h, name, rtype::PTR).0, Step::Next), "{name}");
        }
        let h = plugin("hosts hosts {\n no_reverse\n}", FILE);
        assert!(matches!(ask(&h, "1.0.0.10.in-addr.arpa", rtype::PTR).0, Step::Next));
        assert_eq!(answered(&h, "example.org", rtype::A).len(), 1);
    }

    #[test]
    fn the_file_is_read_at_setup_and_start_does_not_read_it_again() {
        let dir = TempDir::new();
        std::fs::write(dir.join("hosts"), FILE).unwrap();
        let corefile = "example.org {\n hosts hosts {\n  10.0.0.4 inline.example.org\n  reload 0\n }\n}\n";
        // The plugin setup makes answers from the file before it is started.
        let (cfg, plugin) = setup_in(corefile, &dir).unwrap();
        assert_eq!(answered_by(&*plugin, "inline.example.org", rtype::A).len(), 1);
        assert_eq!(answered_by(&*plugin, "example.org", rtype::A).len(), 1);
        // As setup does it: Hosts::new reads nothing, first_read reads.
        let h = Hosts::new(cfg);
        assert!(h.reload_timestamp().is_none());
        h.file.first_read().unwrap();
        let read = Arc::as_ptr(&h.file.data.load().table);
        h.start();
        assert!(h.reloader.lock().is_none());
        assert_eq!(Arc::as_ptr(&h.file.data.load().table), read, "read again");
        h.stop();
    }

    /// A plugin reading `dir/hosts` with these limits, read once.
    fn limited(dir: &Path, limits: Limits) -> Hosts {
        let (cfg, _) = setup_in("example.org {\n hosts hosts {\n  reload 0\n }\n}\n", dir).unwrap();
        let mut h = Hosts::new(cfg);
        let file = Arc::get_mut(&mut h.file).unwrap();
        file.limits = limits;
        h
    }

    #[test]
    fn a_file_over_a_limit_is_refused_at_setup_and_kept_out_on_reread() {
        let dir = TempDir::new();
        let path = dir.join("hosts");
        std::fs::write(&path, "10.0.0.1 a.example.org\n").unwrap();
        let limits = Limits {
            bytes: 1000,
            entries: 2,
        };
        let h = limited(&dir, limits);
        h.file.first_read().unwrap();
        assert_eq!(
            answered(&h, "a.example.org", rtype::A),
            ["a.example.org. 3600 IN A 10.0.0.1"]
        );
        // Three entries: refused, the old table stays, and the refusal is remembered.
        std::fs::write(&path, "10.0.0.2 a.example.org b.example.org c.example.org\n").unwrap();
        h.file.refresh();
        assert_eq!(
            answered(&h, "a.example.org", rtype::A),
            ["a.example.org. 3600 IN A 10.0.0.1"]
        );
        let refused = h.file.data.load().refused;
        assert!(refused.is_some());
        // Too many bytes, likewise.
        std::fs::write(&path, format!("10.0.0.3 a.example.org\n#{}\n", "x".repeat(1000))).unwrap();
        h.file.refresh();
        assert_eq!(
            answered(&h, "a.example.org", rtype::A),
            ["a.example.org. 3600 IN A 10.0.0.1"]
        );
        assert_ne!(h.file.data.load().refused, refused);
        // Back within the limits: served.
        std::fs::write(&path, "10.0.0.4 a.example.org b.example.org\n").unwrap();
        h.file.refresh();
        assert_eq!(
            answered(&h, "b.example.org", rtype::A),
            ["b.example.org. 3600 IN A 10.0.0.4"]
        );
        assert!(h.file.data.load().refused.is_none());
        // At setup, a refusal is an error for the configuration.
        std::fs::write(&path, "10.0.0.2 a.example.org b.example.org c.example.org\n").unwrap();
        let h = limited(&dir, limits);
        assert_eq!(
            h.file.first_read().unwrap_err(),
            format!(
                "hosts file '{}' refused: it has more than 2 name/address entries",
                path.display()
            )
        );
    }

    #[test]
    fn a_reread_rebuilds_every_shard() {
        let dir = TempDir::new();
        let path = dir.join("hosts");
        let file = |third: u8| {
            (0..100)
                .map(|i| format!("10.0.{third}.{i} n{i}.example.org\n"))
                .collect::<String>()
        };
        std::fs::write(&path, file(1)).unwrap();
        let h = limited(&dir, LIMITS);
        h.file.first_read().unwrap();
        assert_eq!(h.file.data.load().table.shard_count(), FILE_SHARDS);
        std::fs::write(&path, file(2) + "10.0.3.1 extra.example.org\n").unwrap();
        h.file.refresh();
        for i in [0, 33, 99] {
            assert_eq!(
                answered(&h, &format!("n{i}.example.org"), rtype::A),
                [format!("n{i}.example.org. 3600 IN A 10.0.2.{i}")]
            );
        }
        assert_eq!(h.entries(), 2 * 101);
        assert_eq!(
            h.reload_timestamp(),
            Some(std::fs::metadata(&path).unwrap().modified().unwrap())
        );
    }

    /// 100 lines `10.0.V.i ni.example.org`: version `V` of a file, all versions of one
    /// size while `V` has as many digits.
    fn version(v: u8) -> String {
        (0..100).map(|i| format!("10.0.{v}.{i} n{i}.example.org\n")).collect()
    }

    /// Whether every name of [`version`] answers from version `v`.
    fn serves_version(h: &Hosts, v: u8) -> bool {
        (0..100).all(|i| {
            answered(h, &format!("n{i}.example.org"), rtype::A) == [format!("n{i}.example.org. 3600 IN A 10.0.{v}.{i}")]
        })
    }

    /// Gives `path` the modification time `mtime` (so that two versions of one size
    /// have one stamp, as on a file system with coarse times).
    fn set_mtime(path: &Path, mtime: SystemTime) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(mtime).unwrap();
    }

    fn mtime(path: &Path) -> SystemTime {
        std::fs::metadata(path).unwrap().modified().unwrap()
    }

    #[test]
    fn a_file_that_changes_between_passes_is_read_again_from_the_first_pass() {
        let dir = TempDir::new();
        let path = dir.join("hosts");
        std::fs::write(&path, version(1)).unwrap();
        let h = limited(&dir, LIMITS);
        h.file.first_read().unwrap();
        std::fs::write(&path, version(2)).unwrap();
        // Shards 0 and 1 are built from version 2, then version 3 replaces it.
        let (p, mut passes) = (path.clone(), 0);
        *h.file.before_pass.lock() = Some(Box::new(move |_| {
            passes += 1;
            if passes == 3 {
                std::fs::write(&p, version(3)).unwrap();
            }
        }));
        h.file.refresh();
        // One version served whole, and named by its stamp.
        assert!(serves_version(&h, 3), "a mix of versions is served");
        assert!(!h.file.data.load().mixed);
        assert_eq!(h.reload_timestamp(), Some(mtime(&path)));
    }

    #[test]
    fn a_mix_is_read_again_at_the_next_check_even_when_its_new_version_was_refused() {
        let dir = TempDir::new();
        let path = dir.join("hosts");
        std::fs::write(&path, version(1)).unwrap();
        // 100 lines of one name: 100 name/address pairs.
        let h = limited(
            &dir,
            Limits {
                bytes: 1 << 20,
                entries: 150,
            },
        );
        h.file.first_read().unwrap();
        std::fs::write(&path, version(2)).unwrap();
        // Version 3 has two names a line (200 pairs): over the limit.
        let over = version(3).replace(".example.org\n", ".example.org m.example.org\n");
        let (p, mut passes) = (path.clone(), 0);
        *h.file.before_pass.lock() = Some(Box::new(move |_| {
            passes += 1;
            if passes == 2 {
                std::fs::write(&p, &over).unwrap();
            }
        }));
        // Shard 0 from version 2, then version 3 is refused: a mix is served.
        h.file.refresh();
        h.file.refresh();
        assert!(!serves_version(&h, 1) && !serves_version(&h, 2), "no mix");
        let refused = h.file.data.load().refused;
        assert_eq!(refused, Some((mtime(&path), std::fs::metadata(&path).unwrap().len())));
        // Version 4 is within the limits and has version 3's stamp (one size; the same
        // mtime, as a coarse clock gives two writes within its tick).
        let refused_mtime = mtime(&path);
        std::fs::write(
            &path,
            version(4).replace(".example.org\n", ".example.org #.example.org\n"),
        )
        .unwrap();
        set_mtime(&path, refused_mtime);
        assert_eq!(Some((mtime(&path), std::fs::metadata(&path).unwrap().len())), refused);
        h.file.refresh();
        assert!(serves_version(&h, 4), "the mix is still served");
        let data = h.file.data.load();
        assert!(!data.mixed && data.refused.is_none());
    }

    #[test]
    fn a_file_that_never_holds_still_is_given_up_on_and_read_at_the_next_check() {
        let dir = TempDir::new();
        let path = dir.join("hosts");
        std::fs::write(&path, version(1)).unwrap();
        let served_mtime = mtime(&path);
        let h = limited(&dir, LIMITS);
        h.file.first_read().unwrap();
        std::fs::write(&path, version(2)).unwrap();
        // Before every pass but the first of an attempt, a new version.
        let (p, writes) = (path.clone(), Arc::new(AtomicUsize::new(0)));
        let w = writes.clone();
        *h.file.before_pass.lock() = Some(Box::new(move |k| {
            if k > 0 {
                let n = w.fetch_add(1, Ordering::Relaxed);
                std::fs::write(&p, version(3 + (n % 2) as u8)).unwrap();
            }
        }));
        h.file.refresh();
        // The first attempt and every retry each got as far as their second pass.
        assert_eq!(writes.load(Ordering::Relaxed), REREAD_RETRIES + 1);
        assert!(h.file.data.load().mixed);
        *h.file.before_pass.lock() = None;
        // Version 5 comes back with the stamp still served (version 1's): read anyway.
        std::fs::write(&path, version(5)).unwrap();
        set_mtime(&path, served_mtime);
        assert_eq!(h.reload_timestamp(), Some(served_mtime));
        h.file.refresh();
        assert!(serves_version(&h, 5), "the mix is still served");
        assert!(!h.file.data.load().mixed);
    }

    /// A re-read of a file of a million lines is under way when the plugin stops: the
    /// stop does not wait for it (four passes over the file), and what was served stays.
    #[test]
    fn stop_does_not_wait_for_a_reread() {
        use std::fmt::Write as _;
        let dir = TempDir::new();
        let path = dir.join("hosts");
        std::fs::write(&path, "10.0.0.1 old.example.org\n").unwrap();
        let corefile = "example.org {\n hosts hosts {\n  reload 10ms\n  no_reverse\n }\n}\n";
        let (cfg, _) = setup_in(corefile, &dir).unwrap();
        let h = Hosts::new(cfg);
        h.start();
        let stamp = h.file.data.load().stamp;
        let mut big = String::with_capacity(30 << 20);
        for i in 0..1_000_000u32 {
            let _ = writeln!(big, "10.{}.{}.{} n{i}.example.org", i >> 16, (i >> 8) & 255, i & 255);
        }
        let (began, reading) = crossbeam_channel::bounded(1);
        *h.file.before_pass.lock() = Some(Box::new(move |k| {
            if k == 0 {
                let _ = began.try_send(());
            }
        }));
        let tmp = dir.join("hosts.tmp");
        std::fs::write(&tmp, big).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        reading.recv_timeout(Duration::from_secs(10)).expect("no re-read began");
        // Well into the first pass.
        std::thread::sleep(Duration::from_millis(50));
        let stopping = std::time::Instant::now();
        h.stop();
        let took = stopping.elapsed();
        eprintln!("hosts: stop during a re-read of 1,000,000 lines took {took:?}");
        assert!(took < Duration::from_millis(200), "stop took {took:?}");
        assert_eq!(
            answered(&h, "old.example.org", rtype::A),
            ["old.example.org. 3600 IN A 10.0.0.1"]
        );
        let data = h.file.data.load();
        assert_eq!((data.stamp, data.mixed, data.table.entries()), (stamp, false, 1));
    }

    #[test]
    fn devices_and_fifos_are_configuration_errors() {
        let t = std::time::Instant::now();
        let err = error("example.org {\n hosts /dev/zero\n}\n");
        assert_eq!(
            err,
            "Corefile:2 - hosts: hosts file '/dev/zero' refused: it is not a regular file (a character device)"
        );
        let dir = TempDir::new();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = setup_in("example.org {\n hosts fifo\n}\n", &dir)
            .err()
            .unwrap()
            .to_string();
        assert!(err.ends_with("it is not a regular file (a FIFO)"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn reload_picks_up_a_changed_file_and_stop_ends_the_thread() {
        let dir = TempDir::new();
        let path = dir.join("hosts");
        std::fs::write(&path, "10.0.0.1 example.org\n").unwrap();
        let (cfg, _) = setup_in("example.org {\n hosts hosts {\n  reload 100ms\n }\n}\n", &dir).unwrap();
        let h = Hosts::new(cfg);
        h.start();
        assert_eq!(
            answered(&h, "example.org", rtype::A),
            ["example.org. 3600 IN A 10.0.0.1"]
        );
        let first = h.reload_timestamp().unwrap();
        assert_eq!(first, std::fs::metadata(&path).unwrap().modified().unwrap());
        // A different size is a change even where mtime is coarse.
        std::fs::write(&path, "10.0.0.2 example.org\n10.0.0.3 new.example.org\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while h.entries() != 4 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            answered(&h, "example.org", rtype::A),
            ["example.org. 3600 IN A 10.0.0.2"]
        );
        assert_eq!(answered(&h, "new.example.org", rtype::A).len(), 1);
        // A deleted file keeps the last entries, as in CoreDNS.
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(h.entries(), 4);
        let stopping = std::time::Instant::now();
        h.stop();
        assert!(stopping.elapsed() < Duration::from_secs(1));
        assert!(h.reloader.lock().is_none());
    }

    #[test]
    fn readme_examples_set_up() {
        let readme = include_str!("README.md");
        let mut examples = 0;
        for block in readme.split("~~~ corefile\n").skip(1) {
            let corefile = block.split("~~~").next().unwrap();
            setup_in(corefile, Path::new("/nonexistent")).unwrap_or_else(|e| panic!("{e}\n{corefile}"));
            examples += 1;
        }
        assert_eq!(examples, 4);
    }

    /// A name with 50,000 addresses, and an address with 50,000 names: an answer stops
    /// at the first record that does not fit (512 bytes here), so the query visits
    /// about as many entries as it writes, not the whole list.
    #[test]
    fn an_answer_costs_what_it_writes_not_what_the_file_holds() {
        use std::fmt::Write as _;
        let mut file = String::new();
        for i in 0..50_000u32 {
            let _ = writeln!(file, "10.{}.{}.{} many.example.org", i >> 16, (i >> 8) & 255, i & 255);
            let _ = writeln!(file, "192.0.2.1 n{i}.example.org");
        }
        let h = plugin("hosts hosts", &file);
        for (name, qtype) in [("many.example.org", rtype::A), ("1.2.0.192.in-addr.arpa", rtype::PTR)] {
            let (step, reply, spent) = ask_counting(&*h, name, qtype);
            assert!(matches!(step, Step::Answered), "{name}: {step:?}");
            let reply = reply.unwrap();
            let msg = Message::from_octets(&reply[..]).unwrap();
            assert!(msg.header().tc(), "{name}: TC");
            let written = u32::from(msg.header_counts().ancount());
            assert!(written > 5, "{name}: {written} records");
            assert!(
                spent <= written + 1,
                "{name}: {spent} entries visited for {written} records"
            );
        }
    }

    #[test]
    fn metrics_report_entries_and_the_files_modification_time() {
        let h = plugin(
            "hosts hosts {\n 10.0.0.9 inline.example.org\n}",
            "10.0.0.1 a.example.org\n",
        );
        let mut f = crate::metrics::Families::default();
        h.metrics(&mut f);
        let text = f.render();
        let mtime = std::fs::metadata(h.path())
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // Each line: a name and its reverse entry.
        assert!(text.lines().any(|l| l == "coredns_hosts_entries 4"), "{text}");
        let stamp: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("coredns_hosts_reload_timestamp_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((stamp - mtime).abs() < 1e-6, "{stamp} vs {mtime}");
    }
}
