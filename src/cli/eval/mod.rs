//! `rag eval`: measured quality, each run comparing configurations on the same index:
//! retrieval metrics on a BEIR-format set ([`retrieval`]), the right page of long PDFs
//! ([`pages`]) and answer metrics on SQuAD ([`qa`]).
pub mod fit;
pub mod metrics;
pub mod pages;
pub mod qa;
pub mod retrieval;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use rag::{AnswerMode, Config, EmbedderKind, IngestEvent, IngestOptions, Pooling, Rag};
use rag_model::DEFAULT_EMBEDDER;

use super::config::{shared_dir, LlamaVariantArgs};
use super::output;
use qa::{QaOptions, QaSet, Split};
use retrieval::{eval_retrieval, BeirSet, RetrievalOptions};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// nDCG@10, recall@10/100, MRR@10 of BM25, dense (HNSW, exact) and hybrid retrieval on a
    /// BEIR-format set, on one index, with search latency and HNSW recall against exact search.
    #[command(after_help = "Examples:
  rag eval retrieval                          SciFact from $RAG_SHARED (default ../shared)
  rag eval retrieval --embedder minilm --json
  rag eval retrieval --set path/to/beir-set --split dev --limit 50

The corpus is written to $RAG_HOME/eval/SET-docs (one .md per document) and ingested into
$RAG_HOME/eval/SET-EMBEDDER (again: nothing to do), unless --index says otherwise.")]
    Retrieval(EvalRetrievalArgs),
    /// Answer quality on SQuAD v1.1 dev: recall@k of the gold paragraph, exact match, token F1,
    /// "answer contained", citation accuracy, abstention and speed, with retrieval and closed
    /// book on the same model.
    #[command(after_help = "Examples:
  rag eval qa --sample 100 --closed-book      100 seeded questions, both modes
  rag eval qa --articles-limit 4 --sample 20  a quick check on a small index
  rag eval qa --embedder llama --json

The articles are ingested into $RAG_HOME/eval/squad-EMBEDDER (again: nothing to do) unless
--index says otherwise.")]
    Qa(EvalQaArgs),
    /// The right document and the right page for questions about long PDFs: doc@k, page@k and
    /// MRR of BM25, dense and hybrid retrieval, and how many `rag ask` would turn away.
    #[command(after_help = "Examples:
  rag eval pages                              43 questions over $RAG_SHARED/data/pdf-samples
  rag eval pages --embedder llama --json
  rag eval pages --ask --json > pages.json   also ask each question (answers in the JSON)
  rag eval pages --questions my.jsonl --docs ~/reports

A question file has one JSON object a line: {\"question\": \"...\", \"file\": \"sub/doc.pdf\",
\"pages\": [3]}, the file relative to --docs, pages counted from 1. The documents are ingested
into $RAG_HOME/eval/pdf-samples-EMBEDDER (again: nothing to do) unless --index says otherwise.")]
    Pages(EvalPagesArgs),
}

#[derive(Args)]
pub struct EvalPagesArgs {
    /// Question file (JSON lines). Default: the built-in set over $RAG_SHARED/data/pdf-samples.
    #[arg(long, value_name = "FILE")]
    questions: Option<PathBuf>,
    /// The folder the questions' files are in (and what is ingested).
    #[arg(long, value_name = "DIR")]
    docs: Option<PathBuf>,
    /// Index directory (default $RAG_HOME/eval/pdf-samples-EMBEDDER).
    #[arg(long, value_name = "DIR")]
    index: Option<PathBuf>,
    /// Embedder of the index: llama or minilm.
    #[arg(long, value_name = "llama|minilm")]
    embedder: Option<EmbedderKind>,
    /// Also ask each question as `rag ask` does (the configured model and answer mode): how many
    /// are answered, and how many of those cite a passage on a right page; the answers are in
    /// --json. Slower: the model reads a prompt for each.
    #[arg(long)]
    ask: bool,
    /// Print the whole report (scores and every question's ranks) as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EvalQaArgs {
    /// The question set: squad1 (SQuAD v1.1 dev, every question answerable) or squad2 (the
    /// SQuAD v2.0 dev half, half of them unanswerable from their paragraph).
    #[arg(long, default_value = "squad1")]
    set: QaSet,
    /// Which articles' questions: all, fit (1st, 3rd, ... article) or report (2nd, 4th, ...).
    #[arg(long, default_value = "all")]
    split: Split,
    /// Index directory (default $RAG_HOME/eval/squad-EMBEDDER, squad2-EMBEDDER).
    #[arg(long, value_name = "DIR")]
    index: Option<PathBuf>,
    /// Embedder of the index: llama or minilm (default minilm: the faster one to ingest).
    #[arg(long, value_name = "llama|minilm")]
    embedder: Option<EmbedderKind>,
    /// Questions asked (seeded random sample; 0 = all 10,570).
    #[arg(long, default_value_t = 300)]
    sample: usize,
    /// Seed of the sample.
    #[arg(long, default_value_t = 2016)]
    seed: u64,
    /// Only questions about the first N articles (sorted by name); only those are ingested.
    #[arg(long, value_name = "N")]
    articles_limit: Option<usize>,
    /// Also ask every question closed book, to show what retrieval adds.
    #[arg(long)]
    closed_book: bool,
    /// Passages per question (the k of recall@k).
    #[arg(short, long)]
    k: Option<usize>,
    /// How answers are made: quote or free (as `rag ask --answer`).
    #[arg(long, default_value = "quote", value_name = "quote|free")]
    answer: AnswerMode,
    /// Quote mode: the answerability threshold (default: the model's fitted one, or the rule's).
    #[arg(long, value_name = "0..1")]
    min_answerable: Option<f32>,
    /// Quote mode: the longest quote in tokens.
    #[arg(long, value_name = "TOKENS")]
    quote_tokens: Option<usize>,
    /// Quote mode: the passage sentences a quote may start in.
    #[arg(long, value_name = "N")]
    quote_sentences: Option<usize>,
    /// Quote mode: the starts whose spans are scored in full.
    #[arg(long, value_name = "N")]
    quote_starts: Option<usize>,
    /// Quote mode: the weight of a first token's prior taken off its score.
    #[arg(long, value_name = "W", allow_hyphen_values = true)]
    quote_prior: Option<f32>,
    /// Quote mode: the model reads every retrieved passage before it scores spans, not only
    /// the one the quote may start in (the way before 2026-12-07: slower, and its quotes less
    /// accurate on SQuAD 2.0).
    #[arg(long)]
    quote_all_passages: bool,
    /// Fit the answerability decision and the span ranker on this run's quotes (use with --set
    /// squad2 --split fit) and write them here (default $RAG_HOME/answerability/MODEL.json,
    /// where rag finds them). Run it twice: the decision is fitted on the quotes the ranker
    /// in use chose.
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    fit: Option<Option<PathBuf>>,
    /// Print the whole report (metrics and every answer) as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct EvalRetrievalArgs {
    /// BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv). Default:
    /// $RAG_SHARED/data/scifact.
    #[arg(long, value_name = "DIR")]
    set: Option<PathBuf>,
    /// Which qrels file.
    #[arg(long, default_value = "test")]
    split: String,
    /// Index directory (default $RAG_HOME/eval/SET-EMBEDDER).
    #[arg(long, value_name = "DIR")]
    index: Option<PathBuf>,
    /// Embedder of the index: llama or minilm.
    #[arg(long, value_name = "llama|minilm")]
    embedder: Option<EmbedderKind>,
    #[command(flatten)]
    variant: LlamaVariantArgs,
    /// Evaluate only the first N queries (after --skip).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Pass over the first N queries (with --limit: fit a setting on some queries, report on
    /// the others).
    #[arg(long, value_name = "N", default_value_t = 0)]
    skip: usize,
    /// Weight of the dense list in the hybrid fusion, BM25's being 1 (default: 1 for MiniLM,
    /// 0.2 for Llama hidden states).
    #[arg(long, value_name = "W")]
    dense_weight: Option<f64>,
    /// How the hybrid fuses its lists: rrf (reciprocal ranks) or scores (each list's scores
    /// scaled to 0..1, then weighed). Default: scores.
    #[arg(long, value_name = "rrf|scores")]
    fusion: Option<rag::Fusion>,
    /// Index only the judged documents plus others up to N in all (a smaller corpus for
    /// comparing slow configurations; not comparable with full-corpus figures).
    #[arg(long, value_name = "N")]
    max_docs: Option<usize>,
    /// Chunks fetched from each retriever (default 200).
    #[arg(long)]
    depth: Option<usize>,
    /// Text put before each query for its embedding (not for BM25), e.g. "Represent this
    /// sentence for searching relevant passages: ". Default: none (measured in docs/EVAL.md).
    #[arg(long, value_name = "TEXT")]
    query_instruction: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(config: Config, command: EvalCommand) -> Result<()> {
    match command {
        EvalCommand::Retrieval(args) => run_retrieval(config, args),
        EvalCommand::Qa(args) => run_qa(config, args),
        EvalCommand::Pages(args) => run_pages(config, args),
    }
}

fn run_pages(mut config: Config, args: EvalPagesArgs) -> Result<()> {
    let questions = match &args.questions {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| rag::Error::Io {
                path: path.clone(),
                source,
            })?;
            pages::parse_questions(&text, &path.display().to_string())?
        }
        None => pages::parse_questions(pages::BUILT_IN, "the built-in question set")?,
    };
    let docs = args
        .docs
        .unwrap_or_else(|| pages::default_docs(&shared_dir()));
    pages::check_files(&questions, &docs)?;
    let kind = args
        .embedder
        .or(config.embedder)
        .unwrap_or(DEFAULT_EMBEDDER);
    config.embedder = Some(kind);
    let name = docs
        .file_name()
        .map_or("docs".into(), |n| n.to_string_lossy().into_owned());
    let index = args
        .index
        .unwrap_or_else(|| config.home.join("eval").join(format!("{name}-{kind}")));
    eprintln!(
        "{} questions over {}; index {}",
        questions.len(),
        docs.display(),
        index.display()
    );
    let rag = Rag::open(&index, config)?;
    let report = rag.ingest(&[docs])?;
    if report.indexed > 0 || report.removed > 0 {
        eprintln!(
            "ingest: {} files, {} chunks in {:.1}s",
            report.indexed, report.chunks, report.seconds
        );
    }
    let mut progress = |done: usize, n: usize| {
        if args.ask {
            eprint!("\rasked {done}/{n}");
            if done == n {
                eprintln!();
            }
        }
    };
    let r = pages::eval_pages(&rag, &questions, args.ask, &mut progress)?;
    print_report(args.json, &r, || r.table())
}

/// A report as JSON (`--json`) or as its plain-text table.
fn print_report(
    json: bool,
    report: &impl serde::Serialize,
    table: impl FnOnce() -> String,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        output::json(&mut out, report)?;
    } else {
        write!(out, "{}", table())?;
    }
    Ok(())
}

fn run_retrieval(mut config: Config, args: EvalRetrievalArgs) -> Result<()> {
    let set_dir = args
        .set
        .unwrap_or_else(|| shared_dir().join("data/scifact"));
    let mut set = BeirSet::load(&set_dir, &args.split)?;
    if let Some(n) = args.max_docs {
        set.subset(n);
    }
    let kind = args
        .embedder
        .or(config.embedder)
        .unwrap_or(DEFAULT_EMBEDDER);
    config.embedder = Some(kind);
    args.variant.apply(&mut config);
    let variant = match (kind, args.variant.pooling, args.variant.layer) {
        (EmbedderKind::Llama, p, l) if p.is_some() || l.is_some() => format!(
            "-{}-{}",
            p.unwrap_or(Pooling::Mean).name(),
            l.map_or("final".to_string(), |n| format!("layer{n}"))
        ),
        _ => String::new(),
    };
    let eval_home = config.home.join("eval");
    let docs = eval_home.join(format!("{}-docs", set.name));
    let index = args
        .index
        .unwrap_or_else(|| eval_home.join(format!("{}-{kind}{variant}", set.name)));
    let written = set.write_docs(&docs)?;
    eprintln!(
        "{}: {} documents ({} written to {}), {} judged queries; index {}",
        set.name,
        set.corpus.len(),
        written,
        docs.display(),
        set.queries.len(),
        index.display()
    );
    let rag = Rag::open(&index, config)?;
    let total = set.corpus.len();
    let mut done = 0usize;
    let started = std::time::Instant::now();
    let report = rag.ingest_with(
        &[docs],
        &IngestOptions {
            commit_every_files: 500,
            ..Default::default()
        },
        &mut |e| {
            if let IngestEvent::File { .. } = e {
                done += 1;
                if done.is_multiple_of(500) {
                    eprintln!(
                        "ingest: {done}/{total} files, {:.0}s",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        },
    )?;
    let ingest = (report.indexed > 0 || report.removed > 0).then_some(report);
    let opts = RetrievalOptions {
        depth: args.depth.unwrap_or(RetrievalOptions::default().depth),
        limit: args.limit,
        skip: args.skip,
        dense_weight: args.dense_weight,
        fusion: args.fusion,
        query_instruction: args.query_instruction,
    };
    let r = eval_retrieval(&rag, &set, &opts, ingest)?;
    print_report(args.json, &r, || r.table())
}

fn run_qa(mut config: Config, args: EvalQaArgs) -> Result<()> {
    let kind = args
        .embedder
        .or(config.embedder)
        .unwrap_or(DEFAULT_EMBEDDER);
    config.embedder = Some(kind);
    let mut opts = QaOptions {
        sample: args.sample,
        seed: args.seed,
        articles_limit: args.articles_limit,
        closed_book: args.closed_book,
        split: args.split,
        ..QaOptions::for_set(args.set)
    };
    if let Some(k) = args.k {
        anyhow::ensure!(k >= 1, "-k must be at least 1");
        opts.ask.retrieve.k = k;
    }
    opts.ask.answer = args.answer;
    opts.ask.min_answerable = args.min_answerable;
    let q = &mut opts.ask.quote;
    q.tokens = args.quote_tokens.unwrap_or(q.tokens);
    q.sentences = args.quote_sentences.unwrap_or(q.sentences);
    q.starts = args.quote_starts.unwrap_or(q.starts);
    q.candidates = args.fit.is_some();
    q.prior = args.quote_prior.unwrap_or(q.prior);
    q.all_passages = args.quote_all_passages;
    let index = args.index.unwrap_or_else(|| {
        config
            .home
            .join("eval")
            .join(format!("{}-{kind}", args.set.index_name()))
    });
    eprintln!(
        "model {}, embedder {kind}, index {}",
        config.model_path()?.display(),
        index.display()
    );
    let rag = Rag::open(&index, config)?.with_options(opts.ask.clone());
    let r = qa::ensure_ingested(&rag, &opts.articles, opts.articles_limit)?;
    if r.indexed > 0 {
        eprintln!(
            "ingest: {} articles, {} chunks in {:.1}s",
            r.indexed, r.chunks, r.seconds
        );
    }
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let report = qa::eval_qa(&rag, &opts, &mut |done, total| {
        if tty {
            eprint!("\r{done}/{total} questions");
        } else if done.is_multiple_of(25) || done == total {
            eprintln!("{done}/{total} questions");
        }
    })?;
    if tty {
        eprintln!();
    }
    if let Some(path) = &args.fit {
        let model = rag.config().model_path()?;
        let key = rag::answerability::ModelKey::of(&model)
            .ok_or_else(|| anyhow::anyhow!("cannot read {}", model.display()))?;
        let path = path.clone().unwrap_or_else(|| {
            rag.config()
                .home
                .join("answerability")
                .join(format!("{}.json", key.file_name))
        });
        let on = format!(
            "{:?} split of {} ({} questions, seed {}), embedder {kind}, k {}",
            report.split,
            report
                .questions_file
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            report.retrieval.n,
            report.seed,
            report.k
        );
        let mut f = fit::fit(&report.items, key, on).ok_or_else(|| {
            anyhow::anyhow!("too few quoted answers to fit on (need 20, of both kinds): run more questions of --set squad2")
        })?;
        f.fitted.spans = fit::fit_spans(&report.items);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, serde_json::to_string_pretty(&f.fitted)? + "\n")?;
        eprintln!(
            "fitted on {} quoted answers: AUC features {:.3}, probe (out of fold) {:.3}, combined {:.3}; threshold {:.2}; span ranker {}; written to {}",
            f.questions,
            f.auc_features,
            f.auc_probe,
            f.auc_combined,
            f.fitted.threshold,
            if f.fitted.spans.is_some() { "fitted" } else { "none (too few answerable questions with a span overlapping the answer)" },
            path.display()
        );
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        output::json(&mut out, &report)?;
    } else {
        writeln!(
            out,
            "{}: {} questions of {} eligible, seed {}, articles {}, split {:?}",
            match report.set {
                QaSet::Squad1 => "SQuAD v1.1 dev",
                QaSet::Squad2 => "SQuAD v2.0 dev half",
            },
            report.retrieval.n,
            report.eligible,
            report.seed,
            report
                .articles_limit
                .map_or_else(|| "all".to_string(), |n| format!("first {n}")),
            report.split
        )?;
        write!(out, "{}", report.table())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::EvalQaArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Qa {
        #[command(flatten)]
        args: EvalQaArgs,
    }

    /// `--fit` alone means the default path, also when another flag follows it.
    #[test]
    fn fit_takes_an_optional_path() {
        let parse = |a: &[&str]| Qa::try_parse_from(["qa"].iter().chain(a)).unwrap().args;
        let a = parse(&["--fit", "--json"]);
        assert_eq!(a.fit, Some(None));
        assert!(a.json);
        let a = parse(&["--fit", "mine.json"]);
        assert_eq!(a.fit, Some(Some("mine.json".into())));
        assert_eq!(parse(&[]).fit, None);
    }
}
