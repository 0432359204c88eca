//! `rag bench`: throughput and memory, printed (and pasted into the README), never asserted.
mod model;
mod search;
mod store;

use std::io::Write;

use anyhow::Result;
use clap::Subcommand;
use rag::Config;

use super::output;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Prompt, generation and embedding throughput and peak memory, with llama.cpp on the same
    /// GGUF, prompt and thread count when its Python bindings are installed
    /// (scripts/llamacpp-venv.sh).
    #[command(after_help = "Examples:
  rag bench model
  rag bench model --threads 2 --prompt-tokens 400 --gen-tokens 64 --json
  rag bench model --formats q4_0,q4_1,q8_0,q4_k_m      each format, made with llama-quantize
  rag bench model --weights candle --no-llamacpp        the candle engine, for comparison
  rag bench model --shape tinyllama --prompt-tokens 1500   TinyLlama's dimensions, five formats
  rag bench model --shape llama2-7b --layers 8 --formats q4_k_m,q6_k")]
    Model(model::BenchModelArgs),
    /// Search latency (p50/p95) of BM25, HNSW, exact and hybrid search on an index, and HNSW
    /// recall@10 against exact search over the same vectors.
    #[command(after_help = "Examples:
  rag bench search --index squad-idx
  rag bench search --index idx --queries questions.jsonl:question --limit 500 --json")]
    Search(search::BenchSearchArgs),
    /// The store alone at scale: write N synthetic chunks (SQuAD text, clustered vectors) into
    /// an embedded index or a Milvus collection, then time BM25, HNSW and hybrid searches.
    #[command(after_help = "Examples:
  rag bench store --to target/bench-store --chunks 100000
  rag bench store --to milvus://127.0.0.1:19530/bench --chunks 100000 --json

The target is wiped and rebuilt. Embedding is left out (the same cost for every store).")]
    Store(store::BenchStoreArgs),
}

pub fn run(config: Config, command: BenchCommand) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        BenchCommand::Model(args) => {
            let report = model::bench_models(&config, &args.options(&config))?;
            if args.json {
                output::json(&mut out, &report)
            } else {
                Ok(write!(out, "{}", report.table())?)
            }
        }
        BenchCommand::Store(args) => {
            let report = store::bench_store(&config, &args)?;
            if args.json {
                output::json(&mut out, &report)
            } else {
                Ok(write!(out, "{}", store::table(&report))?)
            }
        }
        BenchCommand::Search(args) => {
            let json = args.json;
            let report = search::bench_search(config, args)?;
            if json {
                output::json(&mut out, &report)
            } else {
                Ok(write!(out, "{}", search::table(&report))?)
            }
        }
    }
}
