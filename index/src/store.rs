//! Files of an index directory and the helpers both sides use to open them.

use std::fs;
use std::path::Path;

use tantivy::{IndexReader, ReloadPolicy, Searcher};

use crate::catalog::Catalog;
use crate::error::{IndexError, IoResultExt};
use crate::manifest::Manifest;
use crate::schema::register_analyzers;

/// Subdirectory holding the tantivy index.
pub(crate) const TANTIVY_DIR: &str = "tantivy";
/// The writer's lock file.
pub(crate) const LOCK_FILE: &str = "lock";
const TANTIVY_META: &str = "meta.json";

/// Whether tantivy has ever committed in `dir` (its `meta.json` exists).
pub(crate) fn tantivy_exists(dir: &Path) -> bool {
    dir.join(TANTIVY_DIR).join(TANTIVY_META).is_file()
}

pub(crate) fn open_tantivy(dir: &Path) -> Result<tantivy::Index, IndexError> {
    let index = tantivy::Index::open_in_dir(dir.join(TANTIVY_DIR))?;
    register_analyzers(&index);
    Ok(index)
}

pub(crate) fn manual_reader(index: &tantivy::Index) -> Result<IndexReader, IndexError> {
    Ok(index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?)
}

/// A searcher together with the manifest of the very commit it shows.
pub(crate) struct Snapshot {
    pub searcher: Searcher,
    pub manifest: Manifest,
    pub catalog: Catalog,
}

/// Load the latest commit into `reader` and pair it with that commit's payload.
///
/// A writer may commit while we read, so the commit metadata is read before and after the
/// searcher is loaded; equal opstamps prove the searcher shows that commit. A background merge
/// keeps the opstamp and the payload (and the live documents), so it does not disturb this.
pub(crate) fn snapshot(
    dir: &Path,
    index: &tantivy::Index,
    reader: &IndexReader,
) -> Result<Snapshot, IndexError> {
    const ATTEMPTS: usize = 50;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let before = index.load_metas()?;
        // A writer's garbage collection can remove a segment file between reading meta.json
        // and opening it: retry.
        let loaded = reader.reload();
        let after = index.load_metas()?;
        if let Err(e) = loaded {
            if attempt < ATTEMPTS {
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
            return Err(e.into());
        }
        if before.opstamp != after.opstamp {
            if attempt < ATTEMPTS {
                continue;
            }
            return Err(crate::error::corrupt(
                dir,
                "the index kept changing while it was being opened; try again",
            ));
        }
        let searcher = reader.searcher();
        let Some(payload) = after.payload else {
            return Err(IndexError::NotFound {
                dir: dir.to_path_buf(),
            });
        };
        let mut manifest = Manifest::from_json(dir, &payload)?;
        let catalog = Catalog::scan(dir, &searcher)?;
        // The payload counts are computed by the writer; the catalog is what is searchable.
        manifest.documents = catalog.docs.len();
        manifest.chunks = catalog.chunks();
        return Ok(Snapshot {
            searcher,
            manifest,
            catalog,
        });
    }
}

/// Read `dir/manifest.json` if present.
pub(crate) fn read_manifest_file(dir: &Path) -> Result<Option<String>, IndexError> {
    let path = dir.join(crate::manifest::MANIFEST_FILE);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at(&path),
    }
}
