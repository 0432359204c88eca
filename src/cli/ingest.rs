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
  rag ingest --watch ./docs          index, then keep the index current as files change (Ctrl-C stops)

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
    /// Chunks from consecutive files embedded together (1: each file on its own).
    #[arg(long, default_value_t = 64, value_name = "CHUNKS")]
    batch_chunks: usize,
    /// After indexing, keep watching: files added, changed, removed or renamed are indexed again
    /// once the folder has been still for one interval. Runs until stopped (Ctrl-C).
    #[arg(long)]
    watch: bool,
    /// How often --watch looks at the files, in seconds.
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "SECONDS",
        requires = "watch"
    )]
    interval: f64,
}

pub fn run(mut config: Config, args: IngestArgs) -> Result<ExitCode> {
    if args.embedder.is_some() {
        config.embedder = args.embedder;
    }
    args.variant.apply(&mut config);
    let mut opts = IngestOptions {
        reindex: args.reindex,
        commit_every_files: args.commit_every.max(1),
        batch_chunks: args.batch_chunks.max(1),
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
    anyhow::ensure!(
        args.interval.is_finite() && args.interval > 0.0,
        "--interval must be a positive number of seconds"
    );
    let rag = Rag::open(&args.index.index, config)?;
    // What the first pass sees, as --watch compares: a file changed while it runs is seen after.
    let seen = args.watch.then(|| snapshot(&args.paths, &opts.walk));
    let report = pass(&rag, &args, &opts)?;
    if let Some(seen) = seen {
        opts.reindex = false;
        return watch(&rag, &args, &opts, seen);
    }
    Ok(if report.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One ingest of `args.paths`: progress on a terminal, lines or JSON events, then the summary.
fn pass(rag: &Rag, args: &IngestArgs, opts: &IngestOptions) -> Result<rag::IngestReport> {
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
    let report = rag.ingest_with(&args.paths, opts, &mut on_event)?;
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
    Ok(report)
}

/// What `--watch` compares: each file it would ingest, with its size and modification time.
type Snapshot = std::collections::BTreeMap<PathBuf, (u64, Option<std::time::SystemTime>)>;

fn snapshot(paths: &[PathBuf], walk: &rag_ingest::WalkOptions) -> Snapshot {
    rag_ingest::walk(paths, walk)
        .into_iter()
        .filter_map(|e| match e {
            rag_ingest::WalkEntry::File { path, size, .. } => {
                let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                Some((path, (size, modified)))
            }
            _ => None,
        })
        .collect()
}

/// `--watch`: looks at the files every interval (a stat per file: it works on network and
/// container mounts, where change notifications do not arrive); when they differ from the last
/// pass and then hold still for one interval (a save or a copy finished), ingests again. The
/// ingest is incremental, so only what changed is embedded; a rename is a removal and an
/// addition. Each pass is compared with the files as they were when it started, so a change made
/// while it runs gets a pass of its own. This process is the one writer; searches and answers
/// elsewhere see the last commit. A pass that fails (another ingest holding the index, a disk
/// error) is reported and the watch goes on.
fn watch(rag: &Rag, args: &IngestArgs, opts: &IngestOptions, seen: Snapshot) -> Result<ExitCode> {
    let interval = std::time::Duration::from_secs_f64(args.interval);
    let paths: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
    if args.json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({"event": "watching", "paths": paths, "interval_s": args.interval}),
        )?;
        writeln!(out)?;
        out.flush()?;
    } else if !args.quiet {
        eprintln!(
            "watching {} every {:.1}s for changes (Ctrl-C stops)",
            paths.join(", "),
            args.interval
        );
    }
    let mut last = seen;
    loop {
        std::thread::sleep(interval);
        let mut now = snapshot(&args.paths, &opts.walk);
        if now == last {
            continue;
        }
        // Wait for the folder to hold still: an editor saving, a copy half-way.
        loop {
            std::thread::sleep(interval);
            let again = snapshot(&args.paths, &opts.walk);
            if again == now {
                break;
            }
            now = again;
        }
        if let Err(e) = pass(rag, args, opts) {
            eprintln!("error: {e:#}; still watching");
        }
        last = now;
    }
}
