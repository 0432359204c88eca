//! `rag ask`: a grounded answer, streamed, then its sources; or one JSON object.
use std::io::Write;

use anyhow::Result;
use clap::Args;
use rag::{AnswerMode, AskOptions, Config};

use super::config::IndexArg;
use super::output::{self, Stream};

pub const EXAMPLES: &str = "Examples:
  rag ask \"When was the Zorblat bridge built?\"
  rag ask -k 6 --show-prompt \"Who designed it?\"
  rag ask --json \"What does the warranty cover?\" | jq .citations
  rag ask --no-retrieval \"What is the capital of France?\"   closed book, for comparison
  rag --model llama-2-7b-chat.Q4_K_M.gguf ask \"...\"          answer with another chat model

The answer streams to stdout, then the cited sources. When the documents do not hold the
answer, rag says \"I could not find this in the documents.\" (and does not ask the model at all
when no passage covers the question's terms well enough: see --min-evidence).
`rag search` with the same question shows the passages the model is given.
Exit code: 0 answered or abstained, 2 error (no index, model missing, question too long).";

#[derive(Args)]
pub struct AskArgs {
    /// The question.
    question: String,
    #[command(flatten)]
    index: IndexArg,
    #[command(flatten)]
    retrieval: RetrievalArgs,
    /// Sampling temperature; 0 = greedy (reproducible).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Sampler seed (with --temperature > 0).
    #[arg(long, default_value_t = 299_792_458)]
    seed: u64,
    /// Print the rendered prompt before the answer.
    #[arg(long)]
    show_prompt: bool,
    /// Closed book: ask the model without retrieving anything.
    #[arg(long)]
    no_retrieval: bool,
    /// Quote mode: the answerability threshold (0..1) below which rag says the documents do
    /// not answer (default: the one fitted for the model, or the rule's).
    #[arg(long, value_name = "0..1")]
    min_answerable: Option<f32>,
    /// Print one JSON object: answer, citations, quotes, passages, abstained, decision, timings.
    #[arg(long)]
    json: bool,
}

/// What decides the passages of a prompt: shared by `rag ask` and `rag search`, so that both
/// see the same ones.
#[derive(Args)]
pub struct RetrievalArgs {
    /// Passages given to the model (default 4).
    #[arg(short, long)]
    k: Option<usize>,
    /// Retriever: hybrid (BM25 + vectors, fused), bm25, dense (HNSW), exact (brute force).
    #[arg(long, default_value = "hybrid")]
    mode: rag::Mode,
    /// Depth of each list fed to the fusion (default 50).
    #[arg(long)]
    depth: Option<usize>,
    /// How hybrid search fuses its two lists: scores (each list's scores scaled to 0..1, then
    /// weighed; the default) or rrf (reciprocal ranks: only the order counts).
    #[arg(long, value_name = "scores|rrf")]
    fusion: Option<rag::Fusion>,
    /// Weight of the dense list in hybrid fusion, BM25's being 1 (default: 1 for MiniLM, 0.2
    /// for Llama hidden states; docs/EVAL.md has how they were chosen).
    #[arg(long, value_name = "W")]
    dense_weight: Option<f64>,
    /// Abstain without asking the model when the best passage covers less than this share of
    /// the question's (IDF-weighted) terms; 0 turns it off. Default 0.4.
    #[arg(long, value_name = "0..1")]
    min_evidence: Option<f32>,
    /// Most tokens in the answer (the rest of the context goes to passages).
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// How the answer is made: quote (a verbatim span of one passage, cited, with an
    /// answerability check) or free (free text with checked citations).
    #[arg(long, default_value = "quote", value_name = "quote|free")]
    answer: AnswerMode,
    /// Only some documents' passages: `path:DIR` (documents under DIR; a relative DIR is taken
    /// from the current folder, as `rag ingest` stores absolute paths), `type:EXT[,EXT...]`
    /// (by file extension: `type:pdf,docx`), `after:YYYY-MM-DD` / `before:YYYY-MM-DD` (files
    /// modified on or after / before that day, UTC, as they were when last ingested). Repeat
    /// it to require several.
    #[arg(long, value_name = "path:DIR|type:EXT|after:DATE|before:DATE")]
    filter: Vec<String>,
}

impl RetrievalArgs {
    /// The settings of an answer, with these flags applied.
    pub fn options(&self) -> Result<AskOptions> {
        let mut opts = AskOptions::default();
        let r = &mut opts.retrieve;
        r.mode = self.mode;
        if let Some(k) = self.k {
            anyhow::ensure!(k >= 1, "-k must be at least 1");
            r.k = k;
        }
        if let Some(d) = self.depth {
            r.bm25_depth = d;
            r.dense_depth = d;
        }
        r.fusion = self.fusion;
        if let Some(w) = self.dense_weight {
            anyhow::ensure!(
                w.is_finite() && w >= 0.0,
                "--dense-weight must be a number >= 0 (BM25's weight is 1), not {w}"
            );
            r.dense_weight = Some(w);
        }
        if let Some(m) = self.min_evidence {
            anyhow::ensure!(
                (0.0..=1.0).contains(&m),
                "--min-evidence must be between 0 and 1"
            );
            r.min_evidence = m;
        }
        opts.generate.max_tokens = self.max_tokens;
        opts.answer = self.answer;
        opts.retrieve.filter = parse_filters(&self.filter)?;
        Ok(opts)
    }
}

/// `--filter` values as one [`rag::Filter`] (see [`rag::parse_filters`]).
pub fn parse_filters(values: &[String]) -> Result<rag::Filter> {
    Ok(rag::parse_filters(values)?)
}

pub fn run(config: Config, args: AskArgs) -> Result<()> {
    let mut opts = args.retrieval.options()?;
    anyhow::ensure!(args.temperature >= 0.0, "--temperature must be >= 0");
    opts.generate.temperature = args.temperature;
    opts.generate.seed = args.seed;
    opts.closed_book = args.no_retrieval;
    opts.keep_prompt = args.show_prompt;
    if let Some(m) = args.min_answerable {
        anyhow::ensure!(
            (0.0..=1.0).contains(&m),
            "--min-answerable must be between 0 and 1"
        );
        opts.min_answerable = Some(m);
    }
    let rag = rag::Rag::open(&args.index.index, config)?.with_options(opts);
    let mut out = std::io::stdout().lock();
    let mut stream = Stream::new(&mut out, !args.json && !args.show_prompt);
    let answer = rag.ask_streaming(&args.question, &mut |piece| stream.write(piece))?;
    stream.finish()?;
    if args.json {
        return output::json(&mut out, &answer);
    }
    if args.show_prompt {
        if let Some(p) = &answer.prompt {
            writeln!(
                out,
                "--- prompt ({} tokens) ---\n{p}\n--- answer ---",
                answer.timings.prompt_tokens
            )?;
        }
        write!(out, "{}", answer.answer)?;
    }
    writeln!(out)?;
    if !answer.citations.is_empty() {
        writeln!(out, "\nSources:")?;
        for c in &answer.citations {
            writeln!(
                out,
                "[{}] {}",
                c.n,
                rag::source_label(&output::display_path(&c.path), c.pages)
            )?;
            for q in answer.quotes.iter().filter(|q| q.n == c.n) {
                let text = q.text.split_whitespace().collect::<Vec<_>>().join(" ");
                writeln!(out, "    \"{text}\"")?;
            }
        }
    }
    drop(out);
    let shown = answer.passages.len();
    let (missing, unsupported): (Vec<usize>, Vec<usize>) =
        answer.invalid_citations.iter().partition(|&&n| n > shown);
    let list = |ns: &[usize]| {
        ns.iter()
            .map(|n| format!("[{n}]"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !missing.is_empty() {
        eprintln!(
            "note: removed citation {} (the model was shown {shown} passage{})",
            list(&missing),
            if shown == 1 { "" } else { "s" },
        );
    }
    if !unsupported.is_empty() {
        eprintln!(
            "note: removed citation {} (no sentence of the passage supports the sentence citing it)",
            list(&unsupported)
        );
    }
    let t = &answer.timings;
    match answer.abstain_reason {
        Some(rag::AbstainReason::NoEvidence) => eprintln!(
            "[no passage covers the question well enough (evidence {:.2} < {:.2}); the model was not asked]",
            answer.evidence.unwrap_or(0.0),
            rag.options().retrieve.min_evidence
        ),
        Some(rag::AbstainReason::Unanswerable) => {
            if let Some(d) = &answer.decision {
                eprintln!(
                    "[the passages are about the question but do not answer it (answerable {:.2} < {:.2}, {})]",
                    d.answerable, d.threshold, d.by
                );
            }
        }
        Some(rag::AbstainReason::Unsupported) if !args.json => eprintln!(
            "[not an answer: it cites no passage that supports it]"
        ),
        _ => {}
    }
    if answer.decision.is_some() {
        eprintln!(
            "[{} passages, the quoted one read ({} prompt tokens at {:.0} tok/s), quote chosen in {:.2}s, {:.1}s in all]",
            answer.passages.len(),
            t.prompt_tokens,
            t.prefill_tok_s,
            t.decode_secs,
            t.total_secs
        );
    } else if answer.stop.is_some() {
        eprintln!(
            "[{} passages, {} prompt tokens at {:.0} tok/s, {} generated at {:.1} tok/s, {:.1}s in all]",
            answer.passages.len(),
            t.prompt_tokens,
            t.prefill_tok_s,
            t.generated_tokens,
            t.decode_tok_s,
            t.total_secs
        );
    }
    Ok(())
}
