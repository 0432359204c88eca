//! `rag search`: the passages `rag ask` would put in the prompt for a question, with their fused
//! and per-retriever ranks, and whether `ask` would turn the question away.
use std::io::Write;

use anyhow::Result;
use clap::Args;
use rag::{Config, Passage, Rag, Retriever};

use super::ask::RetrievalArgs;
use super::config::IndexArg;
use super::output;

pub const EXAMPLES: &str = "Examples:
  rag search \"When did the black death reach Europe?\"
  rag search -k 3 --json \"What is the capital of France?\"
  rag search --mode bm25 \"exact phrase words\"
  rag search --fusion rrf --dense-weight 0.5 \"reading room opening hours\"

The passages are exactly those `rag ask` with the same flags gives the model: the same
retrieval, fusion, duplicate collapsing and trimming to the chat model's context (so the chat
model's file is read, its header only, even for --mode bm25).";

#[derive(Args)]
pub struct SearchArgs {
    /// The question (or query).
    query: String,
    #[command(flatten)]
    index: IndexArg,
    #[command(flatten)]
    retrieval: RetrievalArgs,
    /// Print JSON: the passages (text, path, pages, fused score, BM25 and dense ranks and
    /// scores), the evidence, and whether `rag ask` would abstain.
    #[arg(long)]
    json: bool,
}

pub fn run(config: Config, args: SearchArgs) -> Result<()> {
    let opts = args.retrieval.options()?;
    let rag = Rag::open(&args.index.index, config)?.with_options(opts);
    let found = rag.search(&args.query)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        return output::json(&mut out, &found);
    }
    if found.passages.is_empty() {
        if rag.info()?.chunks == 0 {
            writeln!(
                out,
                "the index holds no passages yet: run `rag ingest PATH` first"
            )?;
            return Ok(());
        }
        writeln!(out, "no passages match")?;
    }
    for p in &found.passages {
        write_passage(&mut out, p)?;
    }
    drop(out);
    let verdict = if found.abstains {
        format!(
            "`rag ask` would answer \"not in the documents\" without the model: evidence {:.2} < {:.2}",
            found.evidence, found.min_evidence
        )
    } else {
        format!(
            "`rag ask` gives the model these {} passage{} (evidence {:.2} >= {:.2})",
            found.passages.len(),
            if found.passages.len() == 1 { "" } else { "s" },
            found.evidence,
            found.min_evidence
        )
    };
    eprintln!(
        "[{verdict}; {} search, {:.1} ms]",
        found.mode.name(),
        (found.embed_secs + found.search_secs) * 1e3
    );
    Ok(())
}

fn write_passage(out: &mut impl Write, p: &Passage) -> Result<()> {
    let mut place = rag::source_label(&output::display_path(&p.path), p.pages);
    if let Some(h) = &p.heading {
        place += &format!(" > {h}");
    }
    let by = match p.found_by {
        Retriever::Bm25 => "bm25",
        Retriever::Dense => "dense",
        Retriever::Both => "both",
    };
    let ranks = [
        p.bm25_rank.map(|r| format!("bm25 #{r}")),
        p.dense_rank.map(|r| format!("dense #{r}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    writeln!(
        out,
        "[{}] {place}\n    score {:.4}, found by {by}{}{}",
        p.n,
        p.score,
        if ranks.is_empty() {
            String::new()
        } else {
            format!(" ({ranks})")
        },
        if p.truncated {
            ", cut to fit the context"
        } else {
            ""
        }
    )?;
    let text = p.text.split_whitespace().collect::<Vec<_>>().join(" ");
    writeln!(out, "    {text}\n")?;
    Ok(())
}
