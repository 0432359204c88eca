//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The shared data folder: `$RAG_SHARED`, else `../shared` beside the workspace.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("RAG_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")))
}

/// A file under the shared folder, or `None` (with a printed reason) when it is absent.
pub fn shared_file(rel: &str) -> Option<PathBuf> {
    let p = shared_dir().join(rel);
    if p.exists() {
        Some(p)
    } else {
        println!(
            "skipped: {} not found (set RAG_SHARED to the shared folder)",
            p.display()
        );
        None
    }
}

/// A committed test file under `ingest/tests/data`.
pub fn data(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data")).join(name)
}

/// Whether this process can read files whatever their permissions (root), so chmod 000 tests
/// cannot observe a refusal.
pub fn permissions_are_bypassed(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let probe = dir.join(".probe");
    std::fs::write(&probe, b"x").unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o000)).unwrap();
    let readable = std::fs::read(&probe).is_ok();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&probe).unwrap();
    readable
}
