//! Measured quality: retrieval metrics on a BEIR-format set and answer metrics on a
//! SQuAD-style set, each comparing configurations on the same index.
pub mod metrics;
pub mod qa;
pub mod retrieval;

use std::path::{Path, PathBuf};

/// The folder of evaluation data (`data/scifact`, `data/squad-v1.1-dev`): `$RAG_SHARED`, else
/// `../shared` beside the repository root.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("RAG_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}
