//! `rag bench store`: the store alone, at a size no test corpus here reaches. It writes N chunks
//! (texts cut from the SQuAD articles, vectors drawn around 256 random centres, as embeddings
//! cluster by topic) into an embedded index or a Milvus collection, then times BM25, HNSW and
//! hybrid searches with SQuAD questions and vectors near stored ones. Embedding is left out on
//! both sides: it costs the same whatever the store, and 100,000 real chunks would take hours
//! to embed on 2 cores.
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use rag::{Config, Location};
use rag_index::{Filter, NewChunk, SearchOptions};

use crate::cli::config::shared_dir;
use crate::cli::eval::metrics::quantile;

#[derive(Args)]
pub struct BenchStoreArgs {
    /// Where to write: a directory or a milvus:// (https://) address. WIPED and rebuilt.
    #[arg(long, value_name = "DIR|URI")]
    to: String,
    /// Chunks to write.
    #[arg(long, default_value_t = 100_000)]
    chunks: usize,
    /// Vector dimension (all-MiniLM-L6-v2's by default).
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// Searches per retriever.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A small deterministic generator (xorshift*), so both stores get the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    fn vector(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.unit()).collect()
    }
}

fn near(rng: &mut Rng, centre: &[f32], spread: f32) -> Vec<f32> {
    centre.iter().map(|c| c + spread * rng.unit()).collect()
}

/// Pieces of about 60 words from the SQuAD articles.
fn pieces() -> Result<Vec<String>> {
    let dir = shared_dir().join("data/squad-v1.1-dev/articles");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {} (set RAG_SHARED)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).with_context(|| f.display().to_string())?;
        let words: Vec<&str> = text.split_whitespace().collect();
        out.extend(words.chunks(60).map(|w| w.join(" ")));
    }
    anyhow::ensure!(!out.is_empty(), "no text in {}", dir.display());
    Ok(out)
}

fn questions(n: usize) -> Result<Vec<String>> {
    let file = shared_dir().join("data/squad-v1.1-dev/questions.jsonl");
    let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
    let all: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["question"].as_str().map(str::to_string))
        .collect();
    let step = (all.len() / n.max(1)).max(1);
    Ok(all.into_iter().step_by(step).take(n).collect())
}

pub fn bench_store(config: &Config, args: &BenchStoreArgs) -> Result<serde_json::Value> {
    const PER_DOC: usize = 20;
    const CENTRES: usize = 256;
    let at = Location::parse(&args.to, config.store_token.clone())?;
    let pieces = pieces()?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let centres: Vec<Vec<f32>> = (0..CENTRES).map(|_| rng.vector(args.dim)).collect();

    let mut writer = at.writer("bench:synthetic", args.dim, true)?;
    let t0 = Instant::now();
    let docs = args.chunks.div_ceil(PER_DOC);
    let mut written = 0;
    let mut probes: Vec<Vec<f32>> = Vec::new();
    for d in 0..docs {
        let n = PER_DOC.min(args.chunks - written);
        let centre = &centres[d % CENTRES];
        let chunks: Vec<NewChunk> = (0..n)
            .map(|j| {
                let i = written + j;
                let text = format!("{} (part {i})", pieces[i % pieces.len()]);
                NewChunk {
                    byte_range: 0..text.len(),
                    modified: None,
                    text,
                    title: Some(format!("Document {d}")),
                    heading: None,
                    pages: None,
                    vector: near(&mut rng, centre, 0.5),
                }
            })
            .collect();
        if probes.len() < args.queries && d % (docs / args.queries.max(1)).max(1) == 0 {
            probes.push(chunks[0].vector.clone());
        }
        writer.replace_document(&format!("/bench/doc-{d:05}.txt"), "v1", chunks)?;
        written += n;
        if (d + 1) % 50 == 0 {
            writer.commit()?;
        }
        if (d + 1) % 500 == 0 {
            eprint!(
                "\r{written} chunks, {:.0}/s",
                written as f64 / t0.elapsed().as_secs_f64()
            );
        }
    }
    writer.commit()?;
    writer.seal()?;
    drop(writer);
    let ingest_secs = t0.elapsed().as_secs_f64();
    eprintln!();

    let t_open = Instant::now();
    let store = at.open()?;
    let open_secs = t_open.elapsed().as_secs_f64();
    let qs = questions(args.queries)?;
    let vectors: Vec<Vec<f32>> = probes
        .iter()
        .cycle()
        .take(qs.len())
        .map(|p| near(&mut rng, p, 0.2))
        .collect();
    let none = Filter::default();
    let opts = SearchOptions {
        k: 10,
        ..Default::default()
    };
    // One of each first: connections and page faults are not what is measured.
    store.hybrid(&qs[0], &vectors[0], &opts, &none)?;
    let mut modes = Vec::new();
    for mode in ["bm25", "dense", "hybrid"] {
        let mut ms = Vec::with_capacity(qs.len());
        for (q, v) in qs.iter().zip(&vectors) {
            let t = Instant::now();
            let hits = match mode {
                "bm25" => store.bm25(q, 10, &none)?,
                "dense" => store.dense(v, 10, &none)?,
                _ => store.hybrid(q, v, &opts, &none)?,
            };
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(!hits.is_empty() || mode == "bm25", "{mode} found nothing");
        }
        modes.push(serde_json::json!({
            "mode": mode,
            "p50_ms": quantile(&ms, 0.5),
            "p95_ms": quantile(&ms, 0.95),
        }));
    }
    Ok(serde_json::json!({
        "store": at.to_string(),
        "chunks": store.len(),
        "documents": docs,
        "dim": args.dim,
        "ingest_secs": ingest_secs,
        "ingest_chunks_per_s": written as f64 / ingest_secs,
        "open_secs": open_secs,
        "queries": qs.len(),
        "modes": modes,
    }))
}

pub fn table(r: &serde_json::Value) -> String {
    let mut s = format!(
        "{}: {} chunks of dim {} in {} documents\nwritten in {:.1} s ({:.0} chunks/s, vectors given); opened in {:.2} s\n\n",
        r["store"].as_str().unwrap_or_default(),
        r["chunks"],
        r["dim"],
        r["documents"],
        r["ingest_secs"].as_f64().unwrap_or_default(),
        r["ingest_chunks_per_s"].as_f64().unwrap_or_default(),
        r["open_secs"].as_f64().unwrap_or_default(),
    );
    s += &super::search::latency_table(r);
    s
}
