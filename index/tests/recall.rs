//! HNSW recall@10 against exact search on clustered data.

mod common;

use std::collections::HashSet;

use common::{chunk, normalize, Rng};
use rag_index::{Index, IndexWriter};

/// `n` points around `clusters` random centres (Gaussian spread), normalised.
fn clustered(rng: &mut Rng, n: usize, dim: usize, clusters: usize, spread: f32) -> Vec<Vec<f32>> {
    let centres: Vec<Vec<f32>> = (0..clusters).map(|_| rng.unit(dim)).collect();
    (0..n)
        .map(|_| {
            let c = &centres[(rng.next_u64() % clusters as u64) as usize];
            normalize(
                c.iter()
                    .map(|x| x + spread * rng.gauss() / (dim as f32).sqrt())
                    .collect(),
            )
        })
        .collect()
}

fn recall_at_10(idx: &Index, queries: &[Vec<f32>]) -> f64 {
    let mut found = 0usize;
    let mut total = 0usize;
    for q in queries {
        let exact: HashSet<u64> = idx
            .search_exact(q, 10)
            .unwrap()
            .iter()
            .map(|h| h.chunk.chunk_id)
            .collect();
        let approx = idx.search_dense(q, 10).unwrap();
        assert_eq!(approx.len(), 10);
        found += approx
            .iter()
            .filter(|h| exact.contains(&h.chunk.chunk_id))
            .count();
        total += exact.len();
    }
    found as f64 / total as f64
}

#[test]
fn hnsw_recall_on_5000_clustered_vectors() {
    let dim = 64;
    let mut rng = Rng::new(5000);
    let data = clustered(&mut rng, 5000, dim, 50, 0.6);
    let queries = clustered(&mut Rng::new(5001), 200, dim, 50, 0.6);
    let dir = tempfile::tempdir().unwrap();
    let mut w = IndexWriter::open(dir.path(), "e", dim, false).unwrap();
    // Documents of 10 chunks; every other document is replaced below.
    for (d, group) in data.chunks(10).enumerate() {
        let chunks = group
            .iter()
            .enumerate()
            .map(|(j, v)| chunk(&format!("doc {d} chunk {j}"), v.clone()))
            .collect();
        w.replace_document(&format!("d{d}"), "v1", chunks).unwrap();
    }
    w.commit().unwrap();

    let t = std::time::Instant::now();
    let mut idx = Index::open(dir.path()).unwrap();
    let open = t.elapsed();
    let r = recall_at_10(&idx, &queries);
    eprintln!("recall@10 (5000 x {dim}, fresh graph) = {r:.4}; open took {open:.2?}");
    assert!(r >= 0.95, "recall@10 = {r}");

    // Replace 40% of the documents with new vectors: the reader's graph now holds masked
    // nodes, and the search must still fill k with live ones.
    let fresh = clustered(&mut rng, 2000, dim, 50, 0.6);
    for (n, group) in fresh.chunks(10).enumerate() {
        let d = n * 5 / 2; // 200 of the 500 documents
        let chunks = group
            .iter()
            .enumerate()
            .map(|(j, v)| chunk(&format!("doc {d} chunk {j} v2"), v.clone()))
            .collect();
        w.replace_document(&format!("d{d}"), "v2", chunks).unwrap();
    }
    w.commit().unwrap();
    idx.reload().unwrap();
    assert_eq!(idx.len(), 5000);
    let r2 = recall_at_10(&idx, &queries);
    eprintln!("recall@10 after replacing 40% (masked nodes in the graph) = {r2:.4}");
    assert!(r2 >= 0.95, "recall@10 with masked nodes = {r2}");
}
