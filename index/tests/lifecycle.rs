//! Opening rules: embedder mismatch, reindex, the writer lock, format versions.

mod common;

use common::{chunk, Rng};
use rag_index::{Index, IndexError, IndexWriter};

fn one_doc(dir: &std::path::Path, id: &str, dim: usize) {
    let mut rng = Rng::new(1);
    let mut w = IndexWriter::open(dir, id, dim, false).unwrap();
    w.replace_document("a.txt", "h", vec![chunk("hello world", rng.unit(dim))])
        .unwrap();
    w.commit().unwrap();
}

#[test]
fn embedder_mismatch_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    one_doc(dir.path(), "smollm2/mean", 576);
    let err = IndexWriter::open(dir.path(), "bge-small", 384, false)
        .err()
        .unwrap();
    assert!(
        matches!(err, IndexError::EmbedderMismatch { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "index at {} was built with embedder smollm2/mean (dim 576), not bge-small \
             (dim 384): query it with the embedder that built it, or rebuild it with the new one",
            dir.path().display()
        )
    );
    // Same id, other dim; other id, same dim.
    assert!(matches!(
        IndexWriter::open(dir.path(), "smollm2/mean", 384, false),
        Err(IndexError::EmbedderMismatch {
            have_dim: 576,
            want_dim: 384,
            ..
        })
    ));
    assert!(matches!(
        IndexWriter::open(dir.path(), "other", 576, false),
        Err(IndexError::EmbedderMismatch { .. })
    ));
    // Nothing was changed by the refusals.
    let idx = Index::open(dir.path()).unwrap();
    assert_eq!(idx.manifest().embedder_id, "smollm2/mean");
    assert_eq!(idx.len(), 1);
}

#[test]
fn reindex_wipes_and_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    one_doc(dir.path(), "old", 8);
    let old_store = Index::open(dir.path()).unwrap().manifest().store_id.clone();
    std::fs::write(dir.path().join("stray.txt"), "x").unwrap();
    std::fs::create_dir(dir.path().join("stray-dir")).unwrap();

    let w = IndexWriter::open(dir.path(), "new", 16, true).unwrap();
    assert_eq!(w.manifest().embedder_id, "new");
    assert_eq!(w.manifest().dim, 16);
    assert_eq!(w.manifest().generation, 0);
    assert_eq!(w.manifest().vectors_rows, 0);
    assert!(w.documents().is_empty());
    assert_ne!(w.manifest().store_id, old_store);
    assert!(!dir.path().join("stray.txt").exists());
    assert!(!dir.path().join("stray-dir").exists());
    assert!(dir.path().is_dir());
    drop(w);
    let idx = Index::open(dir.path()).unwrap();
    assert!(idx.is_empty());
    assert_eq!(idx.manifest().embedder_id, "new");
    assert_eq!(
        std::fs::metadata(dir.path().join("vectors.f32"))
            .unwrap()
            .len(),
        0
    );
    // Reindex of a directory that does not exist yet just creates it.
    let fresh = dir.path().join("sub/dir");
    drop(IndexWriter::open(&fresh, "e", 4, true).unwrap());
    assert!(Index::open(&fresh).is_ok());
}

#[test]
fn second_writer_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let w1 = IndexWriter::open(dir.path(), "e", 4, false).unwrap();
    let err = IndexWriter::open(dir.path(), "e", 4, false).err().unwrap();
    assert!(matches!(err, IndexError::Locked { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "another writer (an ingest) is running on {} (lock held); wait for it to finish",
            dir.path().display()
        )
    );
    // --reindex must not wipe under a running writer either.
    assert!(matches!(
        IndexWriter::open(dir.path(), "e", 4, true),
        Err(IndexError::Locked { .. })
    ));
    // Readers are not blocked.
    assert!(Index::open(dir.path()).is_ok());
    drop(w1);
    assert!(IndexWriter::open(dir.path(), "e", 4, false).is_ok());
}

#[test]
fn other_format_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    one_doc(dir.path(), "e", 4);
    // Commit a payload claiming format version 2, as a future rag would.
    {
        let index = tantivy::Index::open_in_dir(dir.path().join("tantivy")).unwrap();
        let payload = index.load_metas().unwrap().payload.unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&payload).unwrap();
        v["format_version"] = 2.into();
        let mut w: tantivy::IndexWriter = index.writer(15_000_000).unwrap();
        let mut prepared = w.prepare_commit().unwrap();
        prepared.set_payload(&v.to_string());
        prepared.commit().unwrap();
    }
    for err in [
        Index::open(dir.path()).err().unwrap(),
        IndexWriter::open(dir.path(), "e", 4, false).err().unwrap(),
    ] {
        assert!(
            matches!(
                err,
                IndexError::FormatVersion {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("rebuild it"), "{err}");
    }
    // --reindex recovers.
    drop(IndexWriter::open(dir.path(), "e", 4, true).unwrap());
    assert!(Index::open(dir.path()).is_ok());
}
