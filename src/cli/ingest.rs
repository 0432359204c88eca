//! `rag ingest`: index files and folders, with progress on a terminal, lines otherwise, or JSON
//! events.
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use rag::{Config, EmbedderKind, FileStatus, IngestEvent, IngestOptions, Rag};

use super::config::{IndexArg, LlamaVariantArgs};
use super::output;

pub const EXAMPLES: &str = "Examples:
  rag ingest ./docs                  index a folder into ./.rag (again: only changed files)
  rag ingest --index /data/idx a.pdf notes/
  rag ingest --reindex ./docs        rebuild from scratch
  rag ingest --json ./docs | jq .    one JSON event per line, then the summary

Reads .txt .md .html .pdf .docx .pptx .xlsx .csv .tsv .epub; other files are reported as skipped.

Exit code: 0 all good, 1 some files failed (the rest is indexed), 2 error.";

#[derive(Args)]
pub struct IngestArgs {
    /// Files and folders to index.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    index: IndexArg,
    /// Delete the index and build it again.
    #[arg(long)]
    reindex: bool,
    /// Embedder of a new index: llama (hidden states of --embed-model) or minilm
    /// (all-MiniLM-L6-v2, `scripts/fetch-models.sh --minilm`). Default: $RAG_EMBEDDER, the
    /// config file, the index's own, or minilm. Queries always use the index's embedder.
    #[arg(long, value_name = "llama|minilm")]
    embedder: Option<EmbedderKind>,
    #[command(flatten)]
    variant: LlamaVariantArgs,
    /// Chunk size in tokens (default 256).
    #[arg(long, value_name = "TOKENS")]
    chunk_tokens: Option<usize>,
    /// Overlap between consecutive chunks in tokens (default 32).
    #[arg(long, value_name = "TOKENS")]
    chunk_overlap: Option<usize>,
    /// Include hidden files and folders.
    #[arg(long)]
    hidden: bool,
    /// Do not honour .gitignore / .ignore files.
    #[arg(long)]
    no_ignore: bool,
    /// One JSON object per event on stdout, then the summary.
    #[arg(long)]
    json: bool,
    /// Print only the summary and failures.
    #[arg(long, short)]
    quiet: bool,
    /// Commit after this many changed files (a kill loses at most that much work).
    #[arg(long, default_value_t = 32, value_name = "FILES")]
    commit_every: usize,
}

pub fn run(mut config: Config, args: IngestArgs) -> Result<ExitCode> {
    if args.embedder.is_some() {
        config.embedder = args.embedder;
    }
    args.variant.apply(&mut config);
    let mut opts = IngestOptions {
        reindex: args.reindex,
        commit_every_files: args.commit_every.max(1),
        ..Default::default()
    };
    opts.walk.include_hidden = args.hidden;
    opts.walk.respect_ignore_files = !args.no_ignore;
    if let Some(n) = args.chunk_tokens {
        anyhow::ensure!(n >= 16, "--chunk-tokens must be at least 16");
        opts.chunk.max_tokens = n;
    }
    if let Some(n) = args.chunk_overlap {
        opts.chunk.overlap_tokens = n;
    }
    anyhow::ensure!(
        opts.chunk.overlap_tokens < opts.chunk.max_tokens,
        "--chunk-overlap must be smaller than --chunk-tokens"
    );
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !args.json && !args.quiet;
    let bar = indicatif::ProgressBar::hidden();
    if tty {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} files  {msg}  ETA {eta}",
            )
            .expect("valid template"),
        );
    }
    let started = std::time::Instant::now();
    let mut chunks = 0usize;
    let mut out = std::io::stdout().lock();
    let mut on_event = |e: &IngestEvent| {
        if args.json {
            let _ = serde_json::to_writer(&mut out, e);
            let _ = writeln!(out);
            return;
        }
        match e {
            IngestEvent::Started { files } => bar.set_length(*files as u64),
            IngestEvent::File {
                path,
                status,
                chunks: n,
                reason,
                warnings,
            } => {
                chunks += n;
                if matches!(
                    status,
                    FileStatus::Indexed | FileStatus::Unchanged | FileStatus::Failed
                ) {
                    bar.inc(1);
                }
                let rate = chunks as f64 / started.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!("{chunks} chunks, {rate:.1} chunks/s"));
                let line = match (status, reason) {
                    (FileStatus::Failed, Some(r)) => {
                        Some(format!("failed    {}: {r}", path.display()))
                    }
                    (FileStatus::Skipped, Some(r)) if !args.quiet => {
                        Some(format!("skipped   {}: {r}", path.display()))
                    }
                    (FileStatus::Indexed, _) if !args.quiet => {
                        Some(format!("indexed   {} ({n} chunks)", path.display()))
                    }
                    (FileStatus::Removed, _) if !args.quiet => {
                        Some(format!("removed   {}", path.display()))
                    }
                    _ => None,
                };
                for w in warnings.iter().filter(|_| !args.quiet) {
                    bar.suspend(|| eprintln!("warning   {}: {w}", path.display()));
                }
                if let Some(l) = line {
                    bar.suspend(|| eprintln!("{l}"));
                }
            }
            IngestEvent::Committed { .. } => {}
        }
    };
    let rag = Rag::open(&args.index.index, config)?;
    let report = rag.ingest_with(&args.paths, &opts, &mut on_event)?;
    bar.finish_and_clear();
    if args.json {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({
                "event": "summary",
                "report": report,
                "peak_rss_mib": output::peak_rss_mib(),
            }),
        )?;
        writeln!(out)?;
    } else {
        let s = &report.stages;
        eprintln!(
            "{} indexed, {} unchanged, {} skipped, {} failed, {} removed; {} chunks ({} tokens) in {:.1}s \
             [parse {:.1}s, chunk {:.1}s, embed {:.1}s, index {:.1}s]; index {} now holds {} documents, {} chunks",
            report.indexed,
            report.unchanged,
            report.skipped,
            report.failed,
            report.removed,
            report.chunks,
            report.tokens,
            report.seconds,
            s.parse,
            s.chunk,
            s.embed,
            s.index,
            rag.location(),
            report.total_documents,
            report.total_chunks,
        );
        if report.chunks > 0 {
            eprintln!(
                "{:.1} chunks/s, {:.0} tokens/s; peak RSS {:.0} MiB",
                report.chunks as f64 / report.seconds.max(1e-9),
                report.tokens as f64 / report.seconds.max(1e-9),
                output::peak_rss_mib().unwrap_or(f64::NAN)
            );
        }
        if report.indexed == 0 && report.removed == 0 && report.failed == 0 {
            eprintln!("nothing changed: no file was embedded");
        }
    }
    Ok(if report.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
