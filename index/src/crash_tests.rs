//! A simulated crash after each step of the commit protocol, then recovery.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

use crate::testing::{crash_at, CrashPoint};
use crate::{Index, IndexWriter, NewChunk};

const DIM: usize = 4;

fn chunks(doc: &str, version: u32, n: usize) -> Vec<NewChunk> {
    (0..n)
        .map(|j| {
            let x = (version * 10 + j as u32) as f32;
            NewChunk {
                text: format!("{doc} v{version} part{j}"),
                title: None,
                heading: None,
                pages: None,
                byte_range: 0..1,
                modified: None,
                vector: vec![1.0, x.sin(), x.cos(), 0.5],
            }
        })
        .collect()
}

fn manifest_generation(dir: &Path) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    v["generation"].as_u64().unwrap()
}

fn docs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn check_no_duplicates(idx: &Index) {
    let mut seen = HashSet::new();
    for id in 0..idx.manifest().vectors_rows {
        if let Some(c) = idx.chunk(id).unwrap() {
            assert!(seen.insert(c.text.clone()), "duplicate chunk {c:?}");
            assert_eq!(idx.documents()[&c.path], c.content_hash);
        }
    }
    assert_eq!(seen.len(), idx.manifest().chunks);
}

fn crash_and_recover(point: CrashPoint) {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    {
        let mut w = IndexWriter::open(dir, "e", DIM, false).unwrap();
        w.replace_document("a", "a1", chunks("a", 1, 3)).unwrap();
        w.commit().unwrap();
    }
    {
        let mut w = IndexWriter::open(dir, "e", DIM, false).unwrap();
        w.replace_document("a", "a2", chunks("a", 2, 2)).unwrap();
        w.replace_document("b", "b1", chunks("b", 1, 2)).unwrap();
        crash_at(point);
        let err = w.commit().unwrap_err();
        assert!(err.to_string().contains("simulated crash"), "{err}");
        // The writer refuses further work.
        assert!(w.commit().is_err());
    }
    let committed = matches!(
        point,
        CrashPoint::TantivyCommitted | CrashPoint::ManifestTmpWritten
    );
    let (want_gen, want_docs, want_chunks) = if committed {
        (2, docs(&[("a", "a2"), ("b", "b1")]), 4)
    } else {
        (1, docs(&[("a", "a1")]), 3)
    };

    // Readers see the last commit; they do not touch manifest.json.
    let idx = Index::open(dir).unwrap();
    assert_eq!(idx.manifest().generation, want_gen, "{point:?}");
    assert_eq!(idx.documents(), want_docs, "{point:?}");
    assert_eq!(idx.len(), want_chunks);
    check_no_duplicates(&idx);
    assert_eq!(
        manifest_generation(dir),
        1,
        "{point:?}: manifest.json still old"
    );
    drop(idx);

    // The next writer repairs manifest.json and cuts unreachable vector rows.
    let mut w = IndexWriter::open(dir, "e", DIM, false).unwrap();
    assert_eq!(manifest_generation(dir), want_gen);
    assert_eq!(w.manifest().generation, want_gen);
    assert_eq!(w.documents(), want_docs);
    let rows = w.manifest().vectors_rows;
    assert_eq!(rows, if committed { 7 } else { 3 });
    assert_eq!(
        fs::metadata(dir.join("vectors.f32")).unwrap().len(),
        rows * DIM as u64 * 4
    );
    // ... and finishes the job: redo what the committed hashes say is missing.
    let have = w.documents();
    for (path, hash, version, n) in [("a", "a2", 2, 2), ("b", "b1", 1, 2)] {
        if have.get(path).map(String::as_str) != Some(hash) {
            w.replace_document(path, hash, chunks(path, version, n))
                .unwrap();
        }
    }
    w.commit().unwrap();
    drop(w);
    let idx = Index::open(dir).unwrap();
    assert_eq!(idx.documents(), docs(&[("a", "a2"), ("b", "b1")]));
    assert_eq!(idx.len(), 4);
    check_no_duplicates(&idx);
    assert_eq!(manifest_generation(dir), idx.manifest().generation);
}

#[test]
fn crash_after_vectors_synced() {
    crash_and_recover(CrashPoint::VectorsSynced);
}

#[test]
fn crash_after_prepare_commit() {
    crash_and_recover(CrashPoint::Prepared);
}

#[test]
fn crash_after_tantivy_commit() {
    crash_and_recover(CrashPoint::TantivyCommitted);
}

#[test]
fn crash_after_manifest_temp_file() {
    crash_and_recover(CrashPoint::ManifestTmpWritten);
}

#[test]
fn crash_during_reindex_wipe_leaves_old_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    {
        let mut w = IndexWriter::open(dir, "e", DIM, false).unwrap();
        w.replace_document("a", "a1", chunks("a", 1, 3)).unwrap();
        w.commit().unwrap();
    }
    // Killed after the wipe removed manifest.json only: the old index is intact and the
    // manifest is restored from the commit.
    fs::remove_file(dir.join("manifest.json")).unwrap();
    assert_eq!(Index::open(dir).unwrap().len(), 3);
    drop(IndexWriter::open(dir, "e", DIM, false).unwrap());
    assert_eq!(manifest_generation(dir), 1);
    // Killed after it also removed tantivy's meta.json: no index, and a writer starts over.
    fs::remove_file(dir.join("manifest.json")).unwrap();
    fs::remove_file(dir.join("tantivy/meta.json")).unwrap();
    assert!(matches!(
        Index::open(dir),
        Err(crate::IndexError::NotFound { .. })
    ));
    let w = IndexWriter::open(dir, "e", DIM, false).unwrap();
    assert_eq!(w.manifest().generation, 0);
    assert!(w.documents().is_empty());
    assert_eq!(fs::metadata(dir.join("vectors.f32")).unwrap().len(), 0);
}
