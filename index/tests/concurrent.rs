//! Readers alongside a writer: they see commits only, and only after `reload`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{doc_chunks, Rng};
use rag_index::{Index, IndexWriter};

const DIM: usize = 16;

#[test]
fn reader_sees_commits_only_after_reload() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(21);
    let mut w = IndexWriter::open(dir.path(), "e", DIM, false).unwrap();
    let a1 = doc_chunks(&mut rng, DIM, "alpha", 1, 2);
    w.replace_document("a", "a1", a1.clone()).unwrap();
    w.commit().unwrap();

    // Open while the writer holds the lock.
    let mut r = Index::open(dir.path()).unwrap();
    assert_eq!(r.len(), 2);

    let b1 = doc_chunks(&mut rng, DIM, "beta", 1, 3);
    w.replace_document("b", "b1", b1.clone()).unwrap();
    r.reload().unwrap();
    assert_eq!(r.len(), 2, "staged work is invisible");
    assert_eq!(Index::open(dir.path()).unwrap().len(), 2);

    w.commit().unwrap();
    assert_eq!(r.len(), 2, "a reader keeps its snapshot until reload");
    assert!(r.search_bm25("beta", 5).unwrap().is_empty());
    r.reload().unwrap();
    assert_eq!(r.len(), 5);
    assert_eq!(r.manifest().generation, 2);
    assert_eq!(r.search_bm25("beta", 5).unwrap().len(), 3);
    for c in &b1 {
        // Inserted into the existing graph by reload.
        let top = &r.search_dense(&c.vector, 1).unwrap()[0];
        assert_eq!(top.chunk.text, c.text);
    }

    // Replace a: reload masks its old vectors.
    let a2 = doc_chunks(&mut rng, DIM, "alpha", 2, 1);
    w.replace_document("a", "a2", a2.clone()).unwrap();
    w.commit().unwrap();
    r.reload().unwrap();
    assert_eq!(r.len(), 4);
    for c in &a1 {
        for hits in [
            r.search_dense(&c.vector, 10).unwrap(),
            r.search_exact(&c.vector, 10).unwrap(),
        ] {
            assert_eq!(hits.len(), 4);
            assert!(hits.iter().all(|h| h.chunk.content_hash != "a1"));
        }
    }
    assert_eq!(
        r.search_dense(&a2[0].vector, 1).unwrap()[0].chunk.text,
        a2[0].text
    );
    assert_eq!(r.documents()["a"], "a2");

    // A reindexed store under the same directory: reload rebuilds from scratch.
    drop(w);
    let mut w = IndexWriter::open(dir.path(), "e", DIM, true).unwrap();
    let c1 = doc_chunks(&mut rng, DIM, "gamma", 1, 2);
    w.replace_document("c", "c1", c1.clone()).unwrap();
    w.commit().unwrap();
    r.reload().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(
        r.search_dense(&c1[1].vector, 1).unwrap()[0].chunk.text,
        c1[1].text
    );
    assert_eq!(r.search_exact(&a2[0].vector, 10).unwrap().len(), 2);
}

#[test]
fn readers_in_threads_while_writer_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(22);
    let mut w = IndexWriter::open(dir.path(), "e", DIM, false).unwrap();
    w.commit().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let dir = dir.path().to_path_buf();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut idx = Index::open(&dir).unwrap();
                let mut checks = 0;
                let mut q = Rng::new(t);
                while !stop.load(Ordering::Relaxed) {
                    if t == 0 {
                        idx.reload().unwrap();
                    } else {
                        idx = Index::open(&dir).unwrap();
                    }
                    // Every document has 2 chunks of one version.
                    let m = idx.manifest();
                    assert_eq!(m.chunks, 2 * m.documents, "{m:?}");
                    assert_eq!(idx.len(), m.chunks);
                    let hits = idx.search_exact(&q.unit(DIM), 1000).unwrap();
                    assert_eq!(hits.len(), m.chunks);
                    let dense = idx.search_dense(&q.unit(DIM), 5).unwrap();
                    assert_eq!(dense.len(), m.chunks.min(5));
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    for round in 0..30u32 {
        for i in 0..5 {
            w.replace_document(
                &format!("d{i}"),
                &format!("v{round}"),
                doc_chunks(&mut rng, DIM, &format!("d{i}"), round, 2),
            )
            .unwrap();
        }
        w.commit().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let checks = r.join().unwrap();
        assert!(checks > 0);
    }
}
