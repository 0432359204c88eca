//! SQuAD v1.1 dev answer quality ([`rag::eval::qa`]) on the default chat model, with the MiniLM
//! embedder: ingest the articles needed (incremental), ask a seeded sample, print the table.
//!
//!     cargo run --release --example eval_qa -- --index DIR [--sample N] [--seed S]
//!         [--articles-limit N] [--closed-book] [--json]
//!
//! `--json` prints the whole report (metrics and every answer) after the table. The data set is
//! `$RAG_SHARED/data/squad-v1.1-dev` (RAG_SHARED defaults to ../shared beside the repository).
//! Needs the default model and MiniLM (`scripts/fetch-models.sh --minilm`); RAG_THREADS sets
//! the threads.
use std::io::Write;
use std::path::PathBuf;

use rag::eval::qa::{self, QaOptions};
use rag::model::EmbedderKind;
use rag::{Config, Rag};

fn main() -> anyhow::Result<()> {
    let mut opts = QaOptions::default();
    let (mut index, mut json) = (None, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--index" => index = Some(PathBuf::from(value()?)),
            "--sample" => opts.sample = value()?.parse()?,
            "--seed" => opts.seed = value()?.parse()?,
            "--articles-limit" => opts.articles_limit = Some(value()?.parse()?),
            "--closed-book" => opts.closed_book = true,
            "--json" => json = true,
            _ => anyhow::bail!("unknown argument {a} (see the top of examples/eval_qa.rs)"),
        }
    }
    let index = index.ok_or_else(|| anyhow::anyhow!("--index DIR is required"))?;

    let mut config = Config::resolve(&Default::default())?;
    config.embedder = Some(EmbedderKind::MiniLm);
    rag::model::set_threads(config.threads)?;
    eprintln!(
        "model {} ({} threads), index {}",
        config.model.display(),
        config.threads,
        index.display()
    );
    let mut rag = Rag::open(&index, config)?.with_options(opts.ask.clone());

    let r = qa::ensure_ingested(&mut rag, &opts.articles, opts.articles_limit)?;
    eprintln!(
        "ingest: {} indexed, {} unchanged, {} failed; {} documents, {} chunks in the index ({:.1}s)",
        r.indexed, r.unchanged, r.failed, r.total_documents, r.total_chunks, r.seconds
    );

    let report = qa::eval_qa(&rag, &opts, &mut |done, total| {
        eprint!("\r{done}/{total}");
        let _ = std::io::stderr().flush();
    })?;
    eprintln!();
    println!(
        "SQuAD v1.1 dev: {} questions of {} eligible, seed {}, articles {}",
        report.retrieval.n,
        report.eligible,
        report.seed,
        report
            .articles_limit
            .map_or_else(|| "all".to_string(), |n| format!("first {n}"))
    );
    print!("{}", report.table());
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
