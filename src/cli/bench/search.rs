//! `rag bench search`: search latency (p50/p95) of each retriever on an index, through the
//! retrieval step of `rag ask`, and HNSW recall@10 against exact search over the same vectors.
use anyhow::{Context, Result};
use clap::Args;
use rag::{Config, Rag};

use crate::cli::config::{shared_dir, IndexArg};
use crate::cli::eval::metrics::{mean, quantile};
use crate::cli::eval::retrieval::{run_queries, MODES};
use crate::cli::output::dir_size;

#[derive(Args)]
pub struct BenchSearchArgs {
    #[command(flatten)]
    index: IndexArg,
    /// JSON lines with one query each, and the field that holds it. Default: the SQuAD
    /// questions in $RAG_SHARED.
    #[arg(long, value_name = "FILE[:FIELD]")]
    queries: Option<String>,
    /// Queries to run (spread evenly over the file).
    #[arg(long, default_value_t = 200)]
    limit: usize,
    /// Hits asked of each retriever (and the depth of each list fused by hybrid).
    #[arg(long, default_value_t = 50)]
    depth: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn bench_search(config: Config, args: BenchSearchArgs) -> Result<serde_json::Value> {
    let spec = args.queries.unwrap_or_else(|| {
        shared_dir()
            .join("data/squad-v1.1-dev/questions.jsonl")
            .display()
            .to_string()
    });
    let (file, field) = match spec.rsplit_once(':') {
        Some((f, fld)) if !fld.contains('/') => (f.to_string(), fld.to_string()),
        _ => (spec.clone(), "question".to_string()),
    };
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let step = (lines.len() / args.limit.max(1)).max(1);
    let mut queries = Vec::new();
    for line in lines.iter().step_by(step).take(args.limit) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{file}: not JSON lines"))?;
        let q = v[&field]
            .as_str()
            .with_context(|| format!("{file}: no string field `{field}`"))?;
        queries.push(q.to_string());
    }
    anyhow::ensure!(!queries.is_empty(), "{file} holds no queries");
    let rag = Rag::open(&args.index.index, config)?;
    let texts: Vec<&str> = queries.iter().map(String::as_str).collect();
    // One warm-up query, so the first search does not pay for page faults (not one of the
    // set: rag keeps the last query's vector, which would make the first one free).
    run_queries(
        &rag,
        &["warm up the index and the embedder"],
        args.depth,
        None,
        None,
        None,
    )?;
    let runs = run_queries(&rag, &texts, args.depth, None, None, None)?;
    let info = rag.info()?;
    let modes: Vec<serde_json::Value> = MODES
        .iter()
        .enumerate()
        .map(|(i, mode)| {
            serde_json::json!({
                "mode": mode.name(),
                "p50_ms": quantile(&runs.latency_ms[i], 0.5),
                "p95_ms": quantile(&runs.latency_ms[i], 0.95),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "index_mib": dir_size(&info.dir) as f64 / (1024.0 * 1024.0),
        "index": info.dir,
        "embedder": info.embedder,
        "documents": info.documents,
        "chunks": info.chunks,
        "queries": queries.len(),
        "depth": args.depth,
        "modes": modes,
        "embed_query_p50_ms": quantile(&runs.embed_ms, 0.5),
        "embed_query_p95_ms": quantile(&runs.embed_ms, 0.95),
        "hnsw_recall_at_10": mean(&runs.hnsw_recall),
    }))
}

pub fn table(r: &serde_json::Value) -> String {
    let mut s = format!(
        "{}: {} documents, {} chunks, {:.1} MiB; embedder {}\n{} queries, depth {}\n\n",
        r["index"].as_str().unwrap_or_default(),
        r["documents"],
        r["chunks"],
        r["index_mib"].as_f64().unwrap_or_default(),
        r["embedder"].as_str().unwrap_or_default(),
        r["queries"],
        r["depth"],
    );
    s += &latency_table(r);
    s += &format!(
        "\nquery embedding p50 {:.1} ms, p95 {:.1} ms; HNSW recall@10 vs exact {:.4}\n",
        r["embed_query_p50_ms"].as_f64().unwrap_or_default(),
        r["embed_query_p95_ms"].as_f64().unwrap_or_default(),
        r["hnsw_recall_at_10"].as_f64().unwrap_or_default()
    );
    s
}

/// The p50 / p95 rows of a report's `modes`, under a header.
pub fn latency_table(r: &serde_json::Value) -> String {
    let mut s = format!("{:<8} {:>9} {:>9}\n", "mode", "p50 ms", "p95 ms");
    for m in r["modes"].as_array().into_iter().flatten() {
        s += &format!(
            "{:<8} {:>9.2} {:>9.2}\n",
            m["mode"].as_str().unwrap_or_default(),
            m["p50_ms"].as_f64().unwrap_or_default(),
            m["p95_ms"].as_f64().unwrap_or_default()
        );
    }
    s
}
