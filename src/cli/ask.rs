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

/// `--filter` values as one [`rag::Filter`]: every one must hold.
///
/// `path:PREFIX`: a relative prefix is made absolute (stored paths are), keeping a trailing `/`
/// so that `path:docs/` does not also match `docs-old/`. `type:EXT[,EXT...]`: extensions, any
/// case, the dot optional.
pub fn parse_filters(values: &[String]) -> Result<rag::Filter> {
    let mut filter = rag::Filter::default();
    for s in values {
        if let Some(prefix) = s.strip_prefix("path:") {
            anyhow::ensure!(
                !prefix.is_empty(),
                "--filter path: needs a path after the colon"
            );
            anyhow::ensure!(
                filter.path_prefix.is_none(),
                "--filter {s}: give one path: filter (a document is under one folder)"
            );
            filter.path_prefix = Some(absolute_prefix(prefix)?);
        } else if let Some(types) = s.strip_prefix("type:") {
            let list: Vec<&str> = types.split(',').map(str::trim).collect();
            anyhow::ensure!(
                list.iter().all(|t| !t.trim_start_matches('.').is_empty()),
                "--filter {s}: the form is type:EXT[,EXT...], e.g. type:pdf,docx"
            );
            filter = filter.with_file_types(list);
        } else if let Some(day) = s.strip_prefix("after:") {
            filter.modified_after =
                Some(unix_day(day).map_err(|e| anyhow::anyhow!("--filter {s}: {e}"))?);
        } else if let Some(day) = s.strip_prefix("before:") {
            filter.modified_before =
                Some(unix_day(day).map_err(|e| anyhow::anyhow!("--filter {s}: {e}"))?);
        } else {
            anyhow::bail!(
                "--filter {s}: the forms are path:DIR (documents under DIR), type:EXT[,EXT...] \
                 (documents with these extensions, e.g. type:pdf,docx), after:YYYY-MM-DD and \
                 before:YYYY-MM-DD (files modified on or after / before that day)"
            );
        }
    }
    Ok(filter)
}

/// The Unix time of 00:00 UTC on the day `YYYY-MM-DD`.
fn unix_day(s: &str) -> Result<i64, String> {
    let bad = || format!("`{s}` is not a date of the form YYYY-MM-DD, e.g. 2024-03-31");
    let mut parts = s.splitn(3, '-');
    let mut next = |len: usize| -> Result<i64, String> {
        let p = parts.next().filter(|p| p.len() == len).ok_or_else(bad)?;
        p.parse::<i64>().map_err(|_| bad())
    };
    let (y, m, d) = (next(4)?, next(2)?, next(2)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > days_in[(m - 1) as usize] {
        return Err(bad());
    }
    // Days from 1970-01-01 to y-m-d (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok((era * 146_097 + doe - 719_468) * 86_400)
}

fn absolute_prefix(prefix: &str) -> Result<String> {
    let looks_remote = prefix.contains("://");
    let mut p = if looks_remote || std::path::Path::new(prefix).is_absolute() {
        prefix.to_string()
    } else {
        std::path::absolute(prefix)?.to_string_lossy().into_owned()
    };
    if prefix.ends_with('/') && !p.ends_with('/') {
        p.push('/');
    }
    Ok(p)
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
            "[{} passages, {} prompt tokens at {:.0} tok/s, quote chosen in {:.2}s, {:.1}s in all]",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_unix_times_at_utc_midnight() {
        assert_eq!(unix_day("1970-01-01"), Ok(0));
        assert_eq!(unix_day("2000-02-29"), Ok(951_782_400));
        assert_eq!(unix_day("2024-03-01"), Ok(1_709_251_200));
        assert_eq!(unix_day("1969-12-31"), Ok(-86_400));
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-1-01",
            "24-01-01",
            "2024-01-01x",
            "",
        ] {
            assert!(unix_day(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_combine() {
        let f = parse_filters(&[
            "type:PDF,.md".to_string(),
            "after:2024-01-01".to_string(),
            "before:2024-02-01".to_string(),
            "path:/docs/".to_string(),
        ])
        .unwrap();
        assert_eq!(f.file_types, ["pdf", "md"]);
        assert_eq!(f.path_prefix.as_deref(), Some("/docs/"));
        assert_eq!(
            (f.modified_after, f.modified_before),
            (Some(1_704_067_200), Some(1_706_745_600))
        );
        assert!(f.matches("/docs/a.pdf", Some(1_705_000_000)));
        assert!(!f.matches("/docs/a.pdf", Some(1_707_000_000)));
        for bad in ["kind:pdf", "type:", "type:pdf,", "after:yesterday", "path:"] {
            let e = parse_filters(&[bad.to_string()]).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        let two = ["path:/a/".to_string(), "path:/b/".to_string()];
        assert!(parse_filters(&two).is_err());
        assert!(parse_filters(&[]).unwrap().is_empty());
    }
}
