//! `auto`: serves every zone file of a directory whose name matches a pattern, picking
//! up files added and dropping files removed, as CoreDNS's plugin of that name does
//! (README.md beside this file). The zones are `file`'s ([`ServedZone`]): the same
//! tree, the same answers, the same reload on a new serial.
//!
//! ```text
//!   start: walk DIR ──▶ one ServedZone per matching file ──▶ ArcSwap<[zones]>
//!   reload thread, every `reload`: walk again (new files loaded, gone ones dropped,
//!   the list swapped whole), then each zone's serial check (file's reload)
//!   worker: serve ── in ZONES? ── longest loaded origin ── ServedZone::serve
//! ```
//!
//! For zone transfer, [`Auto::zones`] lists the zones loaded now and
//! [`Auto::on_change`] registers a callback on every zone, present and future (run
//! when a zone is first loaded and after each reload).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::chain::{Handler, Query, Step};
use crate::config::{ConfigError, Directive, zone_args};
use crate::dns::Zone;
use crate::plugin::file::{ChangeFn, Reloader, ServedZone, parse_options};
use crate::plugin::once;
use crate::setup::{Lifecycle, Plugin, SetupCtx};

/// The directive name, and the prefix of its errors.
const NAME: &str = "auto";
/// CoreDNS's default pattern and template: `db.example.org` serves `example.org.`.
const DEFAULT_REGEXP: &str = r"db\.(.*)";
const DEFAULT_TEMPLATE: &str = "{1}";
/// The longest REGEXP (CoreDNS's `maxRegexpLen`).
const MAX_REGEXP_LEN: usize = 10_000;
/// Most zone files one directory serves: 10,000. Past it, files are skipped (and said
/// so at each scan). Each zone is bounded as `file`'s are.
pub const MAX_ZONES: usize = 10_000;
/// How deep the scan goes below DIR (CoreDNS walks the whole tree).
pub const MAX_DEPTH: usize = 16;
/// Most directory entries one scan looks at: 100,000.
pub const MAX_ENTRIES: usize = 100_000;

/// The plugin.
pub struct Auto {
    /// ZONES: only names in them are looked up.
    origins: Vec<Zone>,
    fall: Vec<Zone>,
    loader: Arc<Loader>,
    reloader: Mutex<Option<Reloader>>,
}

/// The directory, how file names become origins, and the zones loaded from it.
struct Loader {
    directory: PathBuf,
    re: regex::Regex,
    /// The template in `regex`'s expansion syntax (`{1}` -> `${1}`).
    template: String,
    reload: Duration,
    /// Longest origin first.
    zones: ArcSwap<Vec<Arc<ServedZone>>>,
    /// The same zones by origin (lower-cased wire form), swapped in with `zones`: a
    /// query finds its zone in one lookup per label of its name, not a pass over up to
    /// 10,000 zones (62 us a query at 10,000 measured in review, against 11.5 at 10).
    index: ArcSwap<HashMap<Box<[u8]>, Arc<ServedZone>>>,
    listeners: Mutex<Vec<Arc<ChangeFn>>>,
}

/// `auto [ZONES...] { directory DIR [REGEXP ORIGIN_TEMPLATE]; reload DURATION;
/// fallthrough [ZONES...] }`.
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    Ok(Plugin::both(Arc::new(build(once(NAME, dirs)?, ctx)?)))
}

fn build(d: &Directive, ctx: &SetupCtx<'_>) -> Result<Auto, ConfigError> {
    let origins = if d.args.is_empty() {
        ctx.zones.to_vec()
    } else {
        zone_args(NAME, &d.args)?
    };
    let mut fall = Vec::new();
    let opts = parse_options(NAME, d, &mut fall)?;
    let Some((line, args)) = opts.directory else {
        return Err(d.err(NAME, "a 'directory' line is required"));
    };
    let Some((dir, rest)) = args.split_first() else {
        return Err(line.arg_err(NAME));
    };
    let directory = ctx.config_dir.join(dir);
    match std::fs::metadata(&directory) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::warn!(target: "plugin/auto", "Directory does not exist: {}", directory.display());
        }
        Err(e) => {
            return Err(line.err(
                NAME,
                format!("Unable to access root path '{}': {e}", directory.display()),
            ));
        }
    }
    let (pattern, template) = match rest {
        [] => (DEFAULT_REGEXP, DEFAULT_TEMPLATE),
        [_] => return Err(line.arg_err(NAME)),
        [re, template] => (re.as_str(), template.as_str()),
        _ => return Err(line.arg_err(NAME)),
    };
    if pattern.len() > MAX_REGEXP_LEN {
        return Err(line.err(NAME, "regexp too large"));
    }
    let re = regex::Regex::new(pattern).map_err(|e| line.err(NAME, e))?;
    if re.captures_len() < 2 {
        return Err(line.err(NAME, "Need at least one sub expression"));
    }
    // CoreDNS's rewriteToExpand: every `{` gets a `$` in front.
    let template = template.replace('{', "${");
    Ok(Auto {
        origins,
        fall,
        loader: Arc::new(Loader {
            directory,
            re,
            template,
            reload: opts.reload,
            zones: ArcSwap::from_pointee(Vec::new()),
            index: ArcSwap::from_pointee(HashMap::new()),
            listeners: Mutex::new(Vec::new()),
        }),
        reloader: Mutex::new(None),
    })
}

impl Auto {
    /// The zones loaded now, longest origin first.
    pub fn zones(&self) -> Arc<Vec<Arc<ServedZone>>> {
        self.loader.zones.load_full()
    }

    /// Runs `f` after every swap of a new version of any zone, present or loaded later
    /// (a zone's first load included).
    pub fn on_change(&self, f: ChangeFn) {
        self.loader.on_change(f);
    }
}

impl Loader {
    /// See [`Auto::on_change`].
    fn on_change(&self, f: ChangeFn) {
        let f = Arc::new(f);
        self.listeners.lock().push(f.clone());
        for z in self.zones.load().iter() {
            let f = f.clone();
            z.on_change(Box::new(move |z| f(z)));
        }
    }

    /// CoreDNS's `Walk`: every regular file under the directory (sorted by name, as
    /// Go's filepath.Walk goes) whose name matches makes a zone; the first file for an
    /// origin wins; zones already loaded keep their version (their own reload reads
    /// them); those whose file is gone are dropped.
    fn walk(&self) {
        let dir = std::fs::canonicalize(&self.directory).unwrap_or_else(|_| self.directory.clone());
        let mut files = Vec::new();
        let mut entries = 0usize;
        collect(&dir, 0, &mut files, &mut entries);
        let old = self.zones.load_full();
        let mut next: Vec<Arc<ServedZone>> = Vec::new();
        let mut changed = false;
        let mut skipped = 0usize;
        for path in files {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(caps) = self.re.captures(name) else {
                continue;
            };
            let mut expanded = String::new();
            caps.expand(&self.template, &mut expanded);
            let Some(origin) = Zone::new(&expanded) else {
                log::warn!(target: "plugin/auto", "File {:?} gives no valid origin ({expanded:?})", path.display().to_string());
                continue;
            };
            if let Some(previous) = next.iter().find(|z| *z.origin() == origin) {
                if previous.path() != path {
                    log::warn!(
                        target: "plugin/auto",
                        "Multiple zone files match origin {:?}: using {:?} instead of {:?}",
                        origin.as_str(),
                        previous.path().display().to_string(),
                        path.display().to_string()
                    );
                }
                continue;
            }
            if let Some(z) = old.iter().find(|z| *z.origin() == origin) {
                z.set_path(path);
                next.push(z.clone());
                continue;
            }
            if next.len() >= MAX_ZONES {
                skipped += 1;
                continue;
            }
            let z = ServedZone::new(origin, path.clone(), self.reload, false);
            for f in self.listeners.lock().iter() {
                let f = f.clone();
                z.on_change(Box::new(move |z| f(z)));
            }
            if let Err(e) = z.load() {
                log::warn!(target: "plugin/auto", "Parse zone `{}': {e}", z.origin().as_str());
                continue;
            }
            log::info!(target: "plugin/auto", "Inserting zone `{}' from: {}", z.origin().as_str(), path.display());
            next.push(Arc::new(z));
            changed = true;
        }
        if skipped > 0 {
            log::warn!(target: "plugin/auto", "{skipped} zone file(s) not loaded: more than {MAX_ZONES} zones");
        }
        for z in old.iter() {
            if !next.iter().any(|n| Arc::ptr_eq(n, z)) {
                log::info!(target: "plugin/auto", "Deleting zone `{}'", z.origin().as_str());
                changed = true;
            }
        }
        if changed {
            next.sort_by_key(|z| std::cmp::Reverse(z.origin().label_count()));
            let index = next.iter().map(|z| (Box::from(z.origin().wire()), z.clone())).collect();
            self.index.store(Arc::new(index));
            self.zones.store(Arc::new(next));
        }
    }
}

/// The regular files under `dir` (symbolic links to files followed, to directories
/// not, as filepath.Walk), by name, depth-first, within [`MAX_DEPTH`] and
/// [`MAX_ENTRIES`].
fn collect(dir: &Path, depth: usize, out: &mut Vec<PathBuf>, entries: &mut usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let mut list: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .take(MAX_ENTRIES.saturating_sub(*entries))
            .collect(),
        Err(e) => {
            log::warn!(target: "plugin/auto", "error reading {}: {e}", dir.display());
            return;
        }
    };
    *entries += list.len();
    list.sort();
    for p in list {
        let Ok(lmeta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if lmeta.is_dir() {
            collect(&p, depth + 1, out, entries);
        } else if std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
            out.push(p);
        }
    }
}

impl Handler for Auto {
    fn name(&self) -> &'static str {
        NAME
    }

    /// CoreDNS's `ServeDNS`: a name outside ZONES, or in no zone loaded, goes to the
    /// next plugin; otherwise the zone answers as `file`'s do.
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        if !Zone::any_contains(&self.origins, &q.req.qname) {
            return Step::Next;
        }
        let index = self.loader.index.load();
        match longest_in(&index, q.req.qname.wire()) {
            Some(z) => z.serve(q, NAME, &self.fall),
            None => Step::Next,
        }
    }

    /// The zones loaded now and those loaded later, for `transfer` (file/xfr.rs).
    fn transferer(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let (zones, watch) = (self.loader.clone(), self.loader.clone());
        let source = crate::plugin::file::xfr::FileTransferer {
            zones: Box::new(move || zones.zones.load_full()),
            watch: Box::new(move |f| watch.on_change(f)),
            startup: Vec::new(),
        };
        Some(Arc::new(crate::plugin::transfer::Source(Arc::new(source))))
    }
}

impl Lifecycle for Auto {
    /// CoreDNS's start-up walk, then (unless `reload 0`) the thread that walks and
    /// reloads every `reload`.
    fn start(&self) {
        let mut reloader = self.reloader.lock();
        if reloader.is_some() {
            return;
        }
        self.loader.walk();
        if self.loader.reload.is_zero() {
            return;
        }
        let zones = self.loader.clone();
        let walker = self.loader.clone();
        *reloader = Reloader::spawn(
            "auto-reload",
            Some(self.loader.reload),
            move || zones.zones.load_full().to_vec(),
            move || walker.walk(),
        );
    }

    fn stop(&self) {
        if let Some(r) = self.reloader.lock().take() {
            r.stop();
        }
    }
}

#[cfg(test)]
mod tests;

/// The zone of `index` with the longest origin that `name` (lower-cased wire form) is at
/// or below: one hash lookup per label of the name, longest suffix first.
fn longest_in<'z>(index: &'z HashMap<Box<[u8]>, Arc<ServedZone>>, name: &[u8]) -> Option<&'z Arc<ServedZone>> {
    let mut at = 0;
    while at < name.len() {
        if let Some(z) = index.get(&name[at..]) {
            return Some(z);
        }
        if name[at] == 0 {
            break;
        }
        at += 1 + name[at] as usize;
    }
    None
}
