//! The persisted HNSW graph: used when present, optional, caught up when stale.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use common::{doc_chunks, Rng};
use rag_index::{Index, IndexWriter, NewChunk};

const DIM: usize = 16;

fn dumps(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("hnsw-"))
        .collect();
    v.sort();
    v
}

fn pointer(dir: &Path) -> String {
    fs::read_to_string(dir.join("hnsw.current")).unwrap()
}

/// Top-1 of the dense search is the chunk itself, for every chunk given.
fn finds_each(idx: &Index, chunks: &[NewChunk]) {
    for c in chunks {
        let top = &idx.search_dense(&c.vector, 1).unwrap()[0];
        assert_eq!(top.chunk.text, c.text);
    }
}

fn write(dir: &Path, rng: &mut Rng, docs: usize, version: u32) -> Vec<NewChunk> {
    let mut w = IndexWriter::open(dir, "e", DIM, false).unwrap();
    let mut all = Vec::new();
    for d in 0..docs {
        let chunks = doc_chunks(rng, DIM, &format!("doc{d}"), version, 5);
        all.extend(chunks.iter().cloned());
        w.replace_document(&format!("d{d}"), &format!("v{version}"), chunks)
            .unwrap();
    }
    w.commit().unwrap();
    all
}

#[test]
fn dump_is_used_and_optional() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = write(dir.path(), &mut Rng::new(1), 40, 1);
    assert!(dir.path().join(pointer(dir.path()).trim()).is_dir());
    finds_each(&Index::open(dir.path()).unwrap(), &chunks);

    // No dump: the reader builds the graph.
    let name = pointer(dir.path());
    fs::remove_file(dir.path().join("hnsw.current")).unwrap();
    finds_each(&Index::open(dir.path()).unwrap(), &chunks);

    // A damaged dump: ignored, the graph is built. A torn file is caught by its size; garbage
    // of the right size by catching hnsw_rs's panic.
    fs::write(dir.path().join("hnsw.current"), &name).unwrap();
    let graph = dir.path().join(name.trim()).join("graph.hnsw.graph");
    let len = fs::metadata(&graph).unwrap().len() as usize;
    let good = fs::read(&graph).unwrap();
    fs::write(&graph, &good[..len / 2]).unwrap();
    finds_each(&Index::open(dir.path()).unwrap(), &chunks);
    fs::write(&graph, vec![7u8; len]).unwrap();
    finds_each(&Index::open(dir.path()).unwrap(), &chunks);
    fs::write(dir.path().join("hnsw.current"), "hnsw-../../etc").unwrap();
    finds_each(&Index::open(dir.path()).unwrap(), &chunks);
}

#[test]
fn stale_dump_is_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(2);
    let v1 = write(dir.path(), &mut rng, 20, 1);
    let old_pointer = pointer(dir.path());
    // Replace half the documents; the new dump covers that commit.
    let mut w = IndexWriter::open(dir.path(), "e", DIM, false).unwrap();
    let mut v2 = Vec::new();
    for d in 0..10 {
        let chunks = doc_chunks(&mut rng, DIM, &format!("doc{d}"), 2, 5);
        v2.extend(chunks.iter().cloned());
        w.replace_document(&format!("d{d}"), "v2", chunks).unwrap();
    }
    w.commit().unwrap();
    drop(w);
    assert_ne!(pointer(dir.path()), old_pointer);
    // Point readers back at the older dump, as if the newer one had not been written.
    fs::write(dir.path().join("hnsw.current"), &old_pointer).unwrap();
    let idx = Index::open(dir.path()).unwrap();
    assert_eq!(idx.len(), 100);
    assert_eq!(idx.vector_count(), 100);
    finds_each(&idx, &v2);
    finds_each(&idx, &v1[50..]);
    let old: HashSet<&str> = v1[..50].iter().map(|c| c.text.as_str()).collect();
    for c in &v1[..50] {
        for h in idx.search_dense(&c.vector, 10).unwrap() {
            assert!(
                !old.contains(h.chunk.text.as_str()),
                "deleted chunk returned"
            );
        }
    }
}

#[test]
fn old_dumps_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(3);
    for version in 1..=4 {
        write(dir.path(), &mut rng, 3, version);
        let d = dumps(dir.path());
        assert!(d.len() <= 2, "{d:?}");
        assert!(d.contains(&pointer(dir.path())), "{d:?}");
    }
    // --reindex removes the graph with everything else; the new store starts its own.
    drop(IndexWriter::open(dir.path(), "e", DIM, true).unwrap());
    assert!(dumps(dir.path()).is_empty());
    let chunks = write(dir.path(), &mut rng, 2, 9);
    finds_each(&Index::open(dir.path()).unwrap(), &chunks);
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn dump_newer_than_the_snapshot() {
    // A reader may pin a commit and then find a dump the writer made after a later commit.
    // Simulated by putting back the tantivy files of the earlier commit.
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(4);
    let v1 = write(dir.path(), &mut rng, 10, 1);
    let saved = tempfile::tempdir().unwrap();
    copy_dir(&dir.path().join("tantivy"), saved.path());
    let v2 = write(dir.path(), &mut rng, 10, 2); // replaces every document
    fs::remove_dir_all(dir.path().join("tantivy")).unwrap();
    copy_dir(saved.path(), &dir.path().join("tantivy"));

    let idx = Index::open(dir.path()).unwrap();
    assert_eq!(idx.manifest().generation, 1);
    assert_eq!(idx.vector_count(), 50);
    finds_each(&idx, &v1);
    let newer: HashSet<&str> = v2.iter().map(|c| c.text.as_str()).collect();
    for c in &v2 {
        for h in idx.search_dense(&c.vector, 10).unwrap() {
            assert!(
                !newer.contains(h.chunk.text.as_str()),
                "uncommitted chunk returned"
            );
        }
    }
}
