//! Replacing and removing documents: old chunks never come back, counts stay right.

mod common;

use std::collections::{HashMap, HashSet};

use common::{doc_chunks, Rng};
use rag_index::{Index, IndexWriter, NewChunk, SearchOptions};

const DIM: usize = 16;

fn ids(hits: &[rag_index::Hit]) -> HashSet<u64> {
    hits.iter().map(|h| h.chunk.chunk_id).collect()
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn replace_and_remove() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(3);
    let mut w = IndexWriter::open(dir.path(), "e", DIM, false).unwrap();
    let a = doc_chunks(&mut rng, DIM, "alpha", 1, 3);
    let b1 = doc_chunks(&mut rng, DIM, "beta", 1, 2);
    let c = doc_chunks(&mut rng, DIM, "gamma", 1, 4);
    w.replace_document("a.md", "a1", a).unwrap();
    w.replace_document("b.md", "b1", b1.clone()).unwrap();
    w.replace_document("c.md", "c1", c.clone()).unwrap();
    // Nothing is visible before the commit.
    assert!(w.documents().is_empty());
    w.commit().unwrap();
    assert_eq!(w.manifest().chunks, 9);
    assert_eq!(
        w.documents(),
        map(&[("a.md", "a1"), ("b.md", "b1"), ("c.md", "c1")])
    );
    let before = Index::open(dir.path()).unwrap();
    let old_b: HashSet<u64> = before
        .search_bm25("beta", 10)
        .unwrap()
        .iter()
        .map(|h| h.chunk.chunk_id)
        .collect();
    assert_eq!(old_b.len(), 2);

    // Replace b with three new chunks.
    let b2 = doc_chunks(&mut rng, DIM, "beta", 2, 3);
    w.replace_document("b.md", "b2", b2.clone()).unwrap();
    w.commit().unwrap();
    assert_eq!(w.manifest().generation, 2);
    assert_eq!(w.manifest().documents, 3);
    assert_eq!(w.manifest().chunks, 10);
    assert_eq!(w.manifest().vectors_rows, 12, "rows are never reused");

    let idx = Index::open(dir.path()).unwrap();
    assert_eq!(idx.manifest().chunks, 10);
    assert_eq!(
        idx.documents(),
        map(&[("a.md", "a1"), ("b.md", "b2"), ("c.md", "c1")])
    );
    let hits = idx.search_bm25("beta", 10).unwrap();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.chunk.content_hash == "b2"));
    assert!(ids(&hits).is_disjoint(&old_b));
    assert!(idx
        .search_bm25("v1 beta", 20)
        .unwrap()
        .iter()
        .all(|h| { !(h.chunk.path == "b.md" && h.chunk.content_hash == "b1") }));
    for id in &old_b {
        assert!(idx.chunk(*id).unwrap().is_none());
    }
    // The old vectors are still in vectors.f32 but no search reaches them.
    for old in &b1 {
        for hits in [
            idx.search_dense(&old.vector, 10).unwrap(),
            idx.search_exact(&old.vector, 10).unwrap(),
            idx.search_hybrid("beta", &old.vector, &SearchOptions::default())
                .unwrap(),
        ] {
            assert_eq!(hits.len(), 10);
            assert!(ids(&hits).is_disjoint(&old_b), "{:?}", ids(&hits));
        }
    }
    // The new ones are found.
    for new in &b2 {
        let top = &idx.search_dense(&new.vector, 1).unwrap()[0];
        assert_eq!(
            (top.chunk.path.as_str(), top.chunk.content_hash.as_str()),
            ("b.md", "b2")
        );
    }

    // Remove c.
    w.remove_document("c.md").unwrap();
    w.commit().unwrap();
    assert_eq!(w.manifest().documents, 2);
    assert_eq!(w.manifest().chunks, 6);
    assert_eq!(w.documents(), map(&[("a.md", "a1"), ("b.md", "b2")]));
    let idx = Index::open(dir.path()).unwrap();
    assert!(idx.search_bm25("gamma", 10).unwrap().is_empty());
    for old in &c {
        assert!(idx
            .search_exact(&old.vector, 10)
            .unwrap()
            .iter()
            .all(|h| h.chunk.path != "c.md"));
        assert!(idx
            .search_dense(&old.vector, 10)
            .unwrap()
            .iter()
            .all(|h| h.chunk.path != "c.md"));
    }
    assert_eq!(idx.search_exact(&c[0].vector, 100).unwrap().len(), 6);

    // Reopen: the same state.
    let manifest = w.manifest().clone();
    drop(w);
    let w = IndexWriter::open(dir.path(), "e", DIM, false).unwrap();
    assert_eq!(w.manifest(), &manifest);
    assert_eq!(w.documents(), map(&[("a.md", "a1"), ("b.md", "b2")]));
}

#[test]
fn several_changes_to_one_document_in_one_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(4);
    let mut w = IndexWriter::open(dir.path(), "e", DIM, false).unwrap();
    w.replace_document("x", "x1", doc_chunks(&mut rng, DIM, "xdoc", 1, 2))
        .unwrap();
    w.replace_document("x", "x2", doc_chunks(&mut rng, DIM, "xdoc", 2, 3))
        .unwrap();
    w.replace_document("y", "y1", doc_chunks(&mut rng, DIM, "ydoc", 1, 2))
        .unwrap();
    w.remove_document("y").unwrap();
    w.replace_document("z", "z1", doc_chunks(&mut rng, DIM, "zdoc", 1, 2))
        .unwrap();
    w.remove_document("z").unwrap();
    w.replace_document("z", "z2", doc_chunks(&mut rng, DIM, "zdoc", 2, 1))
        .unwrap();
    w.commit().unwrap();
    assert_eq!(w.documents(), map(&[("x", "x2"), ("z", "z2")]));
    assert_eq!(w.manifest().chunks, 4);
    let idx = Index::open(dir.path()).unwrap();
    assert_eq!(idx.manifest().chunks, 4);
    let hits = idx.search_bm25("xdoc zdoc ydoc", 50).unwrap();
    assert_eq!(hits.len(), 4);
    assert!(hits
        .iter()
        .all(|h| h.chunk.content_hash == "x2" || h.chunk.content_hash == "z2"));
}

#[test]
fn no_op_changes_do_not_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = IndexWriter::open(dir.path(), "e", DIM, false).unwrap();
    w.commit().unwrap();
    w.remove_document("never-there").unwrap();
    w.commit().unwrap();
    assert_eq!(w.manifest().generation, 0);
}

#[test]
fn ingest_loop_skips_unchanged() {
    // The way `rag ingest` is expected to drive the writer.
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(5);
    let corpus = |v: u32| -> Vec<(String, String)> {
        (0..10)
            .map(|i| {
                let version = if i % 3 == 0 { v } else { 1 };
                (format!("d{i}"), format!("h{i}-{version}"))
            })
            .collect()
    };
    let mut chunks_of = |p: &str, h: &str| -> Vec<NewChunk> {
        doc_chunks(&mut rng, DIM, &format!("{p} {h}"), 0, 2)
    };
    for round in 1..=3u32 {
        let mut w = IndexWriter::open(dir.path(), "e", DIM, false).unwrap();
        let have = w.documents();
        let mut replaced = 0;
        for (p, h) in corpus(round) {
            if have.get(&p) != Some(&h) {
                w.replace_document(&p, &h, chunks_of(&p, &h)).unwrap();
                replaced += 1;
            }
        }
        w.commit().unwrap();
        assert_eq!(replaced, if round == 1 { 10 } else { 4 });
        assert_eq!(w.manifest().documents, 10);
        assert_eq!(w.manifest().chunks, 20);
        let idx = Index::open(dir.path()).unwrap();
        assert_eq!(idx.len(), 20);
    }
}
