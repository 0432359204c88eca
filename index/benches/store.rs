//! Timings of the store at the scale of a real corpus: ingest + commit, open (HNSW build),
//! and each search, plus HNSW recall@10 against exact search.
//!
//! `cargo bench -p rag-index` (release profile). Environment: `RAG_BENCH_N` (default 10000
//! chunks), `RAG_BENCH_DIM` (default 576, SmolLM2's hidden size).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{normalize, Rng};
use rag_index::{Index, IndexWriter, NewChunk, SearchOptions};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const WORDS: &[&str] = &[
    "index",
    "document",
    "answer",
    "question",
    "model",
    "vector",
    "search",
    "running",
    "runs",
    "garden",
    "budget",
    "committee",
    "quantum",
    "bread",
    "flour",
    "river",
    "mountain",
    "policy",
    "report",
    "engine",
    "network",
    "market",
    "energy",
    "history",
    "science",
    "language",
    "system",
    "process",
    "result",
    "method",
    "value",
    "table",
    "figure",
    "section",
    "chapter",
];

fn text(rng: &mut Rng, words: usize) -> String {
    (0..words)
        .map(|_| WORDS[(rng.next_u64() % WORDS.len() as u64) as usize])
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us with no args: stay quick
    // unless RAG_BENCH_N asks for a size.
    let quick =
        !std::env::args().any(|a| a == "--bench") && std::env::var_os("RAG_BENCH_N").is_none();
    let n = if quick {
        500
    } else {
        env("RAG_BENCH_N", 10_000)
    };
    let dim = env("RAG_BENCH_DIM", 576);
    let per_doc = 10;
    let mut rng = Rng::new(42);
    let centres: Vec<Vec<f32>> = (0..100).map(|_| rng.unit(dim)).collect();
    let point = |rng: &mut Rng| {
        let c = &centres[(rng.next_u64() % centres.len() as u64) as usize];
        normalize(
            c.iter()
                .map(|x| x + 0.6 * rng.gauss() / (dim as f32).sqrt())
                .collect(),
        )
    };

    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let mut w = IndexWriter::open(dir.path(), "bench", dim, false).unwrap();
    let create = t.elapsed();
    let mut stage = Duration::ZERO;
    let mut commits = Vec::new();
    for d in 0..n / per_doc {
        let chunks: Vec<NewChunk> = (0..per_doc)
            .map(|j| NewChunk {
                text: text(&mut rng, 150),
                title: Some(format!("Document {d}")),
                heading: Some(format!("Part {j}")),
                pages: None,
                byte_range: 0..1000,
                modified: None,
                vector: point(&mut rng),
            })
            .collect();
        let t = Instant::now();
        w.replace_document(&format!("doc{d}.txt"), "h", chunks)
            .unwrap();
        stage += t.elapsed();
        if (d + 1) % 100 == 0 {
            let t = Instant::now();
            w.commit().unwrap();
            commits.push(t.elapsed());
        }
    }
    let t = Instant::now();
    w.commit().unwrap();
    commits.push(t.elapsed());
    drop(w);
    let commit_total: Duration = commits.iter().sum();
    println!("store: {n} chunks x dim {dim}, {per_doc} chunks per document");
    println!("create store          {create:>10.2?}");
    println!("stage all chunks      {stage:>10.2?}");
    println!(
        "commits ({:>3})         {commit_total:>10.2?} total, {:.2?} max",
        commits.len(),
        commits.iter().max().unwrap()
    );

    let t = Instant::now();
    let idx = Index::open(dir.path()).unwrap();
    println!(
        "Index::open           {:>10.2?}  (HNSW graph loaded from the dump)",
        t.elapsed()
    );
    drop(idx);
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("hnsw") {
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
    let t = Instant::now();
    let idx = Index::open(dir.path()).unwrap();
    println!(
        "Index::open, no dump  {:>10.2?}  (HNSW built from vectors.f32)",
        t.elapsed()
    );

    let queries: Vec<Vec<f32>> = (0..100).map(|_| point(&mut rng)).collect();
    let texts: Vec<String> = (0..100).map(|_| text(&mut rng, 8)).collect();
    let time = |label: &str, f: &mut dyn FnMut(usize)| {
        let t = Instant::now();
        for i in 0..queries.len() {
            f(i);
        }
        println!(
            "{label:<22}{:>10.2?} per query",
            t.elapsed() / queries.len() as u32
        );
    };
    time("search_bm25 k=50", &mut |i| {
        idx.search_bm25(&texts[i], 50).unwrap();
    });
    time("search_dense k=50", &mut |i| {
        idx.search_dense(&queries[i], 50).unwrap();
    });
    time("search_exact k=50", &mut |i| {
        idx.search_exact(&queries[i], 50).unwrap();
    });
    let opts = SearchOptions::default();
    time("search_hybrid k=10", &mut |i| {
        idx.search_hybrid(&texts[i], &queries[i], &opts).unwrap();
    });

    let mut found = 0;
    for q in &queries {
        let exact: HashSet<u64> = idx
            .search_exact(q, 10)
            .unwrap()
            .iter()
            .map(|h| h.chunk.chunk_id)
            .collect();
        found += idx
            .search_dense(q, 10)
            .unwrap()
            .iter()
            .filter(|h| exact.contains(&h.chunk.chunk_id))
            .count();
    }
    println!(
        "HNSW recall@10        {:>10.4}",
        found as f64 / (10 * queries.len()) as f64
    );
    let size: u64 = walk(dir.path());
    println!(
        "store size on disk    {:>10.1} MiB",
        size as f64 / (1 << 20) as f64
    );
}

fn walk(p: &std::path::Path) -> u64 {
    std::fs::read_dir(p)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(&e.path())
            } else {
                e.metadata().unwrap().len()
            }
        })
        .sum()
}
