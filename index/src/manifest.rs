//! `manifest.json`: what the index is (format, embedder, analyzer) and how big it is.
//!
//! The manifest is a *copy*: the authoritative version travels as the payload of the last
//! tantivy commit (see the crate docs), and `manifest.json` is rewritten from it, atomically,
//! after every commit and whenever a writer finds it stale. Tools and people may read the file;
//! this crate trusts the payload.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{corrupt, IndexError, IoResultExt};

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// File name of the manifest inside the index directory.
pub(crate) const MANIFEST_FILE: &str = "manifest.json";

/// Name of the English analyzer (words, figures kept whole, lower-casing, ASCII folding, English
/// stemmer): what new indexes use.
pub const ANALYZER_EN_STEM: &str = "rag_en_stem_n";
/// Name of the analyzer without stemming (words, figures kept whole, lower-casing, ASCII
/// folding).
pub const ANALYZER_SIMPLE: &str = "rag_simple_n";
/// The English analyzer of indexes made before figures were kept whole: its tokenizer splits
/// `41,000` into `41` and `000`. Still read.
pub const ANALYZER_EN_STEM_V0: &str = "rag_en_stem";
/// The analyzer without stemming of indexes made before figures were kept whole. Still read.
pub const ANALYZER_SIMPLE_V0: &str = "rag_simple";

/// Description of an index: format, embedder, analyzer, counts and times.
///
/// On disk the embedder is nested: `{"format_version":1,"embedder":{"id":..,"dim":..},...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ManifestFile", into = "ManifestFile")]
pub struct Manifest {
    /// On-disk format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Identifier of the embedding model the vectors came from.
    pub embedder_id: String,
    /// Dimension of every vector.
    pub dim: usize,
    /// Number of commits since the store was created (0 = created, nothing ingested).
    pub generation: u64,
    /// Documents (paths) in the index, including documents that produced no chunk.
    pub documents: usize,
    /// Live chunks.
    pub chunks: usize,
    /// Committed rows of `vectors.f32` (live and dead); the next chunk id.
    pub vectors_rows: u64,
    /// tantivy analyzer of the text fields ([`ANALYZER_EN_STEM`] or [`ANALYZER_SIMPLE`]; an
    /// older index's [`ANALYZER_EN_STEM_V0`] or [`ANALYZER_SIMPLE_V0`]).
    pub analyzer: String,
    /// Random id given to the store when it is created (changes with `--reindex`).
    pub store_id: String,
    /// RFC 3339 UTC time the store was created.
    pub created_at: String,
    /// RFC 3339 UTC time of the last commit.
    pub updated_at: String,
}

#[derive(Serialize, Deserialize)]
struct ManifestFile {
    format_version: u32,
    embedder: EmbedderFile,
    generation: u64,
    documents: usize,
    chunks: usize,
    vectors_rows: u64,
    analyzer: String,
    store_id: String,
    created_at: String,
    updated_at: String,
}

#[derive(Serialize, Deserialize)]
struct EmbedderFile {
    id: String,
    dim: usize,
}

impl From<ManifestFile> for Manifest {
    fn from(f: ManifestFile) -> Self {
        Manifest {
            format_version: f.format_version,
            embedder_id: f.embedder.id,
            dim: f.embedder.dim,
            generation: f.generation,
            documents: f.documents,
            chunks: f.chunks,
            vectors_rows: f.vectors_rows,
            analyzer: f.analyzer,
            store_id: f.store_id,
            created_at: f.created_at,
            updated_at: f.updated_at,
        }
    }
}

impl From<Manifest> for ManifestFile {
    fn from(m: Manifest) -> Self {
        ManifestFile {
            format_version: m.format_version,
            embedder: EmbedderFile {
                id: m.embedder_id,
                dim: m.dim,
            },
            generation: m.generation,
            documents: m.documents,
            chunks: m.chunks,
            vectors_rows: m.vectors_rows,
            analyzer: m.analyzer,
            store_id: m.store_id,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

impl Manifest {
    /// A manifest for a brand-new, empty store.
    pub(crate) fn new_store(embedder_id: &str, dim: usize, analyzer: &str) -> Self {
        let now = now_rfc3339();
        Manifest {
            format_version: FORMAT_VERSION,
            embedder_id: embedder_id.to_string(),
            dim,
            generation: 0,
            documents: 0,
            chunks: 0,
            vectors_rows: 0,
            analyzer: analyzer.to_string(),
            store_id: random_id(),
            created_at: now.clone(),
            updated_at: now,
        }
    }

    /// Whether vectors from the embedder `id` of dimension `dim` belong in this index: the one
    /// compatibility check, used by the writer before any write and by readers before a query
    /// vector is searched. `dir` names the index in the error.
    pub fn check_embedder(&self, dir: &Path, id: &str, dim: usize) -> Result<(), IndexError> {
        if self.embedder_id == id && self.dim == dim {
            return Ok(());
        }
        Err(IndexError::EmbedderMismatch {
            dir: dir.to_path_buf(),
            have_id: self.embedder_id.clone(),
            have_dim: self.dim,
            want_id: id.to_string(),
            want_dim: dim,
        })
    }

    /// The manifest as it is written to disk and into the tantivy payload.
    pub(crate) fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a manifest always serialises");
        s.push('\n');
        s
    }

    /// Parse a manifest, checking the format version before the shape.
    pub(crate) fn from_json(dir: &Path, json: &str) -> Result<Self, IndexError> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| corrupt(dir, format!("manifest is not JSON: {e}")))?;
        let found = value
            .get("format_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| corrupt(dir, "manifest has no format_version"))?;
        if found != u64::from(FORMAT_VERSION) {
            return Err(IndexError::FormatVersion {
                dir: dir.to_path_buf(),
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        let manifest: Manifest = serde_json::from_value(value)
            .map_err(|e| corrupt(dir, format!("manifest is malformed: {e}")))?;
        if manifest.dim == 0 {
            return Err(corrupt(dir, "manifest says the vector dimension is 0"));
        }
        Ok(manifest)
    }
}

/// Replace `dir/name` with `contents`: write a temporary file, fsync it, rename it over the
/// target and fsync the directory, so that a crash leaves either the old or the new file.
pub(crate) fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<(), IndexError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let target = dir.join(name);
    {
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(contents).at(&tmp)?;
        f.sync_all().at(&tmp)?;
    }
    #[cfg(test)]
    crate::testing::crash_point(crate::testing::CrashPoint::ManifestTmpWritten)?;
    fs::rename(&tmp, &target).at(&target)?;
    sync_dir(dir)
}

/// fsync a directory so that renames and new entries in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), IndexError> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_rfc3339(secs)
}

fn format_rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = (z - era * 146_097) as u64;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe as i64 + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// 64 random bits as hex, from the standard library's randomly seeded hasher.
fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_704_067_200), "2024-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn json_shape_and_round_trip() {
        let m = Manifest::new_store("smollm2-135m/mean", 576, ANALYZER_EN_STEM);
        let json = m.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["format_version"], 1);
        assert_eq!(v["embedder"]["id"], "smollm2-135m/mean");
        assert_eq!(v["embedder"]["dim"], 576);
        for key in [
            "generation",
            "documents",
            "chunks",
            "vectors_rows",
            "created_at",
            "updated_at",
        ] {
            assert!(v.get(key).is_some(), "{key} missing from {json}");
        }
        let back = Manifest::from_json(Path::new("x"), &json).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn future_format_is_refused_before_shape() {
        let err =
            Manifest::from_json(Path::new("d"), r#"{"format_version": 7, "x": 1}"#).unwrap_err();
        assert!(
            matches!(
                err,
                IndexError::FormatVersion {
                    found: 7,
                    supported: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = Manifest::from_json(Path::new("d"), "{nope").unwrap_err();
        assert!(matches!(err, IndexError::Corrupt { .. }), "{err:?}");
    }
}
