//! Replays, through the functions the fuzz targets call (`clusterdns::fuzzing`), the
//! targets' seeds (`fuzz/seeds/TARGET/`) and every input that once made a target fail
//! (`tests/fuzz_regressions/TARGET/`, where `fuzz/run.sh` copies new failures). Without
//! a fuzzer: each input runs once, as any test.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    for dir in [root.join("fuzz/seeds"), root.join("tests/fuzz_regressions")] {
        let Ok(entries) = std::fs::read_dir(dir.join(target)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .collect();
        files.sort();
        all.extend(files);
    }
    all
}

fn replay(target: &str, run: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no seeds for the fuzz target {target}");
    for path in files {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
            eprintln!("fuzz target {target} fails on {}", path.display());
            resume_unwind(panic);
        }
    }
}

#[test]
fn packet() {
    replay("packet", clusterdns::fuzzing::packet);
}

#[test]
fn corefile() {
    replay("corefile", clusterdns::fuzzing::corefile);
}

#[test]
fn kubernetes_json() {
    replay("kubernetes_json", clusterdns::fuzzing::kubernetes_json);
}

#[test]
fn forward_reply() {
    replay("forward_reply", clusterdns::fuzzing::forward_reply);
}

#[test]
fn http_request() {
    replay("http_request", clusterdns::fuzzing::http_request);
}
