//! auto's setup and scan. Expectations that mirror CoreDNS name the plugin/auto test
//! or source they come from.

use super::*;
use crate::dns::rtype;
use crate::plugin::file::tests::{TempDir, ZONE, ask};

fn setup_in(corefile: &str, dir: &Path) -> Result<Arc<Auto>, ConfigError> {
    let parsed = crate::config::parse_str(corefile, "Corefile", dir)?;
    let dirs: Vec<&Directive> = parsed.blocks[0]
        .directives
        .iter()
        .filter(|d| d.name.text == NAME)
        .collect();
    let zones = [Zone::root()];
    let ctx = SetupCtx {
        zones: &zones,
        config_dir: dir.to_path_buf(),
        workers: 1,
        binds: None,
        process: &crate::process::ProcessState::new(),
    };
    let _ = setup(&dirs, &ctx)?;
    Ok(Arc::new(build(once(NAME, &dirs)?, &ctx)?))
}

fn zone_text(origin: &str, serial: u32) -> String {
    ZONE.replace("example.org.", origin)
        .replace("2024010101", &serial.to_string())
}

#[test]
fn setup_checks_every_option() {
    let dir = TempDir::new("auto");
    std::fs::create_dir_all(dir.0.join("zones")).unwrap();
    let err = |c: &str| setup_in(c, &dir.0).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        err(". {\n auto {\n directory\n }\n}\n"),
        "Corefile:3 - auto: Wrong argument count or unexpected line ending after 'directory'"
    );
    // setup.go: a REGEXP needs its TEMPLATE, one sub-expression, no more arguments.
    assert_eq!(
        err(". {\n auto {\n directory zones db\\.(.*)\n }\n}\n"),
        "Corefile:3 - auto: Wrong argument count or unexpected line ending after 'db\\.(.*)'"
    );
    assert_eq!(
        err(". {\n auto {\n directory zones db\\..* {1}\n }\n}\n"),
        "Corefile:3 - auto: Need at least one sub expression"
    );
    assert_eq!(
        err(". {\n auto {\n directory zones (.*) {1} x\n }\n}\n"),
        "Corefile:3 - auto: Wrong argument count or unexpected line ending after 'x'"
    );
    assert!(err(". {\n auto {\n directory zones ( {1}\n }\n}\n").starts_with("Corefile:3 - auto: regex parse error"));
    let long = format!(
        ". {{\n auto {{\n directory zones ({}) {{1}}\n }}\n}}\n",
        "a".repeat(MAX_REGEXP_LEN)
    );
    assert_eq!(err(&long), "Corefile:3 - auto: regexp too large");
    assert_eq!(
        err(". {\n auto {\n directory zones\n reload\n }\n}\n"),
        "Corefile:4 - auto: reload duration value is expected"
    );
    assert_eq!(
        err(". {\n auto {\n directory zones\n reload -5s\n }\n}\n"),
        "Corefile:4 - auto: invalid negative duration for reload '-5s'"
    );
    // auto has no reload_by_mtime (CoreDNS: unknown property).
    assert_eq!(
        err(". {\n auto {\n directory zones\n reload_by_mtime\n }\n}\n"),
        "Corefile:4 - auto: unknown property 'reload_by_mtime'"
    );
    assert_eq!(
        err(". {\n auto\n}\n"),
        "Corefile:2 - auto: a 'directory' line is required"
    );
    assert_eq!(
        err(". {\n auto {\n directory zones\n }\n auto {\n directory zones\n }\n}\n"),
        "Corefile:5 - auto: this plugin can only be used once per Server Block"
    );
}

#[test]
fn the_scan_serves_matching_files_and_follows_additions_and_removals() {
    let dir = TempDir::new("auto");
    dir.write("zones/db.example.org", &zone_text("example.org.", 1));
    dir.write("zones/sub/db.example.net", &zone_text("example.net.", 1));
    dir.write("zones/notes.txt", "not a zone");
    dir.write("zones/db.broken.test", "$ORIGIN broken.test.\nwww IN A 1.2.3.4\n");
    let a = setup_in(". {\n auto {\n directory zones\n }\n}\n", &dir.0).unwrap();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s = seen.clone();
    a.on_change(Box::new(move |_| {
        s.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }));
    a.loader.walk();
    // walk.go: each matching file under DIR (subdirectories too), origin from `db\.(.*)`.
    let origins: Vec<String> = a.zones().iter().map(|z| z.origin().as_str().to_string()).collect();
    assert_eq!(origins.len(), 2, "{origins:?}");
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "a first load is a change"
    );
    let r = ask(&*a, "www.example.net.", rtype::A);
    assert_eq!(r.sections[0], ["www.example.net. 3600 IN A 192.0.2.80"]);
    // A file that does not parse is skipped; names of no zone go on.
    assert_eq!(ask(&*a, "www.broken.test.", rtype::A).step, "Next");
    // A new file is picked up at the next scan; a removed one is dropped.
    dir.write("zones/db.example.com", &zone_text("example.com.", 7));
    std::fs::remove_file(dir.0.join("zones/sub/db.example.net")).unwrap();
    a.loader.walk();
    assert_eq!(ask(&*a, "www.example.com.", rtype::A).sections[0].len(), 1);
    assert_eq!(ask(&*a, "www.example.net.", rtype::A).step, "Next");
    assert_eq!(a.zones().len(), 2);
}

#[test]
fn a_pattern_and_template_name_the_origin_and_zones_limit_what_is_asked() {
    let dir = TempDir::new("auto");
    dir.write("zones/www.db.example.org", &zone_text("example.org.", 1));
    dir.write("zones/www.db.example.net", &zone_text("example.net.", 1));
    // README: `www\.db\.(.*) {1}` reads example.org from www.db.example.org; ZONES
    // limit what is looked up (example.net is loaded, never asked).
    let a = setup_in(
        ". {\n auto example.org {\n directory zones www\\.db\\.(.*) {1}\n }\n}\n",
        &dir.0,
    )
    .unwrap();
    a.loader.walk();
    assert_eq!(a.zones().len(), 2);
    assert_eq!(ask(&*a, "www.example.org.", rtype::A).sections[0].len(), 1);
    assert_eq!(ask(&*a, "www.example.net.", rtype::A).step, "Next");
}

/// A query's zone is found by its name's suffixes, longest first (nested origins), in
/// lookups per label rather than a pass over the zones.
#[test]
fn the_longest_origin_holding_a_name_is_found_by_its_suffixes() {
    let served = |o: &str| {
        Arc::new(ServedZone::new(
            Zone::new(o).unwrap(),
            PathBuf::from("/nonexistent"),
            Duration::ZERO,
            false,
        ))
    };
    let zones = [served("example.org."), served("sub.example.org."), served("other.")];
    let index: HashMap<Box<[u8]>, Arc<ServedZone>> = zones
        .iter()
        .map(|z| (Box::from(z.origin().wire()), z.clone()))
        .collect();
    let find = |n: &str| longest_in(&index, Zone::new(n).unwrap().wire()).map(|z| z.origin().as_str().to_string());
    assert_eq!(find("a.b.sub.example.org.").as_deref(), Some("sub.example.org."));
    assert_eq!(find("sub.example.org.").as_deref(), Some("sub.example.org."));
    assert_eq!(find("x.example.org.").as_deref(), Some("example.org."));
    assert_eq!(find("example.org.").as_deref(), Some("example.org."));
    assert_eq!(find("xsub.example.org.").as_deref(), Some("example.org."));
    assert_eq!(find("example.com."), None);
    assert_eq!(find("."), None);
}
