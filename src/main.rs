//! The `rag` command: a thin layer over the library. Parses flags, resolves a [`rag::Config`],
//! calls the library, prints results or the error chain, and picks the exit code
//! (0 ok, 2 error; a closed pipe is not an error).
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use rag::config::Overrides;
use rag::model::{
    EmbedOptions, Embedder, GenerateParams, HiddenLayer, Model, ModelInfo, Pooling, TemplateFamily,
    WeightFormat,
};
use rag::Config;

#[derive(Parser)]
#[command(
    name = "rag",
    version,
    about = "Answer questions over a private folder of documents, offline.",
    after_help = "Examples:
  rag ingest ./docs                       index a folder (txt, md, html, pdf) into ./.rag
  rag ask \"When was the bridge built?\"    a grounded answer with cited sources
  rag search \"bridge construction\"        the matching passages, no generation
  rag model info                          describe the default model
  rag chat \"What is the capital of France?\"
  rag --model llama-2-7b-chat.Q4_K_M.gguf chat \"Hello\"
  rag embed \"first sentence\" \"second sentence\" --json
  rag bench model                         throughput, with llama.cpp for comparison

The default model (SmolLM2-135M-Instruct, Q4_1) is fetched by scripts/fetch-models.sh into
$RAG_HOME/models (RAG_HOME defaults to ~/.cache/rag)."
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct GlobalArgs {
    /// GGUF model file (Llama architecture). Default: $RAG_MODEL, the config file, or the
    /// default model in $RAG_HOME/models.
    #[arg(long, global = true, value_name = "PATH")]
    model: Option<PathBuf>,
    /// GGUF whose hidden states embed chunks and queries (ingest, search, ask). Default:
    /// $RAG_EMBED_MODEL, the config file, or the default model, whatever --model is.
    #[arg(long, global = true, value_name = "PATH")]
    embed_model: Option<PathBuf>,
    /// Compute threads (default: $RAG_THREADS, the config file, or the number of cores).
    #[arg(long, short = 't', global = true, value_name = "N")]
    threads: Option<usize>,
    /// Chat template family, overriding what the GGUF says.
    #[arg(long, global = true, value_name = "llama2|chatml")]
    template: Option<TemplateFamily>,
    /// Cap on the context window in tokens (default: the model's, at most 8192).
    #[arg(long, global = true, value_name = "TOKENS")]
    context: Option<usize>,
    /// Config file (TOML: model, threads, template, context). Default: ./rag.toml or
    /// $RAG_HOME/config.toml.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect a model.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Chat with the model, without retrieval (the closed-book baseline).
    #[command(after_help = "Examples:
  rag chat \"What is the capital of France?\"
  rag chat --temperature 0.7 --seed 1 \"Write a haiku about rust\"
  rag chat --show-prompt --system \"Answer in French.\" \"Hello\"")]
    Chat(ChatArgs),
    /// Index files and folders (txt, md, html, pdf) for search and questions.
    #[command(after_help = "Examples:
  rag ingest ./docs                  index a folder into ./.rag (again: only changed files)
  rag ingest --index /data/idx a.pdf notes/
  rag ingest --reindex ./docs        rebuild from scratch
  rag ingest --json ./docs | jq .    one JSON event per line, then the summary

Exit code: 0 all good, 1 some files failed (the rest is indexed), 2 error.")]
    Ingest(IngestArgs),
    /// Answer a question from the indexed documents, citing the passages used.
    #[command(after_help = "Examples:
  rag ask \"When was the Zorblat bridge built?\"
  rag ask -k 6 --show-prompt \"Who designed it?\"
  rag ask --json \"What does the warranty cover?\" | jq .citations
  rag ask --no-retrieval \"What is the capital of France?\"   closed book, for comparison
  rag --model llama-2-7b-chat.Q4_K_M.gguf ask \"...\"          answer with another chat model

The answer streams to stdout, then the cited sources. When the documents do not hold the
answer, rag says \"I could not find this in the documents.\" (and does not ask the model at all
when no passage covers the question's terms well enough: see --min-evidence).
Exit code: 0 answered or abstained, 2 error (no index, model missing, question too long).")]
    Ask(AskArgs),
    /// Retrieve the passages that best match a query (no generation).
    #[command(after_help = "Examples:
  rag search \"when did the black death reach europe\"
  rag search -k 3 --json \"capital of France\"
  rag search --mode bm25 \"exact phrase words\"")]
    Search(SearchArgs),
    /// Measure retrieval and answer quality on evaluation sets.
    Eval {
        #[command(subcommand)]
        command: EvalCommand,
    },
    /// Print embeddings of texts (unit vectors from pooled hidden states).
    Embed(EmbedArgs),
    /// Measure throughput.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Architecture, sizes, quantization, tokenizer, chat template and context length.
    #[command(after_help = "Examples:
  rag model info
  rag model info --model llama-2-7b-chat.Q4_K_M.gguf --json")]
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ChatArgs {
    /// The message.
    message: String,
    /// System prompt (default: prompts/chat-system.txt).
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Print the rendered prompt before the answer.
    #[arg(long)]
    show_prompt: bool,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Top-k when sampling (0 = off).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Top-p when sampling (1 = off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    /// Repeat penalty (1 = off).
    #[arg(long, default_value_t = 1.1)]
    repeat_penalty: f32,
    /// Sampler seed.
    #[arg(long, default_value_t = 299_792_458)]
    seed: u64,
}

impl SamplingArgs {
    fn params(&self) -> Result<GenerateParams> {
        anyhow::ensure!(self.temperature >= 0.0, "--temperature must be >= 0");
        anyhow::ensure!(
            self.top_p > 0.0 && self.top_p <= 1.0,
            "--top-p must be in (0, 1]"
        );
        anyhow::ensure!(self.repeat_penalty > 0.0, "--repeat-penalty must be > 0");
        Ok(GenerateParams {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_k: (self.top_k > 0).then_some(self.top_k),
            top_p: Some(self.top_p),
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..GenerateParams::default()
        })
    }
}

#[derive(Args)]
struct LlamaVariantArgs {
    /// Llama embedder of a new index: pooling of the hidden states (mean or last token).
    #[arg(long, value_name = "mean|last")]
    pooling: Option<Pooling>,
    /// Llama embedder of a new index: hidden states after this block (0-based) instead of the
    /// final normed layer.
    #[arg(long, value_name = "N")]
    layer: Option<usize>,
}

impl LlamaVariantArgs {
    /// Put the variant into the config (the Llama embedder of a new index reads it).
    fn apply(&self, config: &mut Config) {
        config.embed_pooling = self.pooling;
        config.embed_layer = self.layer.map(HiddenLayer::After);
    }
}

#[derive(Args)]
struct IndexArg {
    /// Index directory.
    #[arg(long, default_value = ".rag", value_name = "DIR")]
    index: PathBuf,
}

#[derive(Args)]
struct IngestArgs {
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
    embedder: Option<rag::model::EmbedderKind>,
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

#[derive(Args)]
struct AskArgs {
    /// The question.
    question: String,
    #[command(flatten)]
    index: IndexArg,
    /// Passages given to the model (default 4).
    #[arg(short, long)]
    k: Option<usize>,
    /// Retriever: hybrid (BM25 + vectors, fused), bm25, dense.
    #[arg(long, default_value = "hybrid")]
    mode: rag::Mode,
    /// Depth of each list fed to the fusion (default 50).
    #[arg(long)]
    depth: Option<usize>,
    /// Abstain without asking the model when the best passage covers less than this share of
    /// the question's (IDF-weighted) terms; 0 turns it off. Default 0.4.
    #[arg(long, value_name = "0..1")]
    min_evidence: Option<f32>,
    /// Most tokens in the answer.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
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
    /// Print one JSON object: answer, citations, passages, abstained, timings.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SearchArgs {
    /// The query.
    query: String,
    #[command(flatten)]
    index: IndexArg,
    /// Number of passages.
    #[arg(short, long, default_value_t = 5)]
    k: usize,
    /// Retriever: hybrid (BM25 + vectors, fused), bm25, dense (HNSW), exact (brute force).
    #[arg(long, default_value = "hybrid")]
    mode: SearchMode,
    /// Depth of each list fed to the fusion.
    #[arg(long, default_value_t = 50)]
    depth: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SearchMode {
    Hybrid,
    Bm25,
    Dense,
    Exact,
}

#[derive(Args)]
struct EmbedArgs {
    /// Texts to embed.
    #[arg(required = true)]
    texts: Vec<String>,
    /// Pooling: mean or last.
    #[arg(long, default_value = "mean")]
    pooling: Pooling,
    /// Hidden states of this block (0-based) instead of the final normed layer.
    #[arg(long, value_name = "N")]
    layer: Option<usize>,
    /// Weights for the embedding forward: f32 (fast), f16, quantized.
    #[arg(long, default_value = "f32")]
    weights: WeightFormat,
    /// Print JSON (vectors in full) instead of a summary with cosine similarities.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum EvalCommand {
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
}

#[derive(Args)]
struct EvalQaArgs {
    /// Index directory (default $RAG_HOME/eval/squad-EMBEDDER).
    #[arg(long, value_name = "DIR")]
    index: Option<PathBuf>,
    /// Embedder of the index: llama or minilm (default minilm: the faster one to ingest).
    #[arg(long, value_name = "llama|minilm")]
    embedder: Option<rag::model::EmbedderKind>,
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
    /// Print the whole report (metrics and every answer) as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EvalRetrievalArgs {
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
    embedder: Option<rag::model::EmbedderKind>,
    #[command(flatten)]
    variant: LlamaVariantArgs,
    /// Evaluate only the first N queries.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
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

#[derive(Subcommand)]
enum BenchCommand {
    /// Prompt, generation and embedding throughput and peak memory, with llama.cpp on the same
    /// GGUF, prompt and thread count when its Python bindings are installed
    /// (scripts/llamacpp-venv.sh).
    #[command(after_help = "Examples:
  rag bench model
  rag bench model --threads 2 --prompt-tokens 400 --gen-tokens 64 --json
  rag bench model --formats q4_0,q4_1,q8_0,q4_k_m      each format, made with llama-quantize
  rag bench model --weights candle --no-llamacpp        the candle engine, for comparison")]
    Model(BenchModelArgs),
    /// Search latency (p50/p95) of BM25, HNSW, exact and hybrid search on an index, and HNSW
    /// recall@10 against exact search over the same vectors.
    #[command(after_help = "Examples:
  rag bench search --index squad-idx
  rag bench search --index idx --queries questions.jsonl:question --limit 500 --json")]
    Search(BenchSearchArgs),
}

#[derive(Args)]
struct BenchSearchArgs {
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
    json: bool,
}

#[derive(Args)]
struct BenchModelArgs {
    /// Text the prompt and embedding chunks are cut from (default: a SQuAD article in
    /// $RAG_SHARED, which defaults to ../shared).
    #[arg(long, value_name = "PATH")]
    text_file: Option<PathBuf>,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 400)]
    prompt_tokens: usize,
    /// Tokens to generate.
    #[arg(long, default_value_t = 64)]
    gen_tokens: usize,
    /// Tokens per embedded chunk.
    #[arg(long, default_value_t = 200)]
    embed_chunk_tokens: usize,
    /// Chunks to embed.
    #[arg(long, default_value_t = 16)]
    embed_chunks: usize,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Python with llama-cpp-python (default: $RAG_HOME/venv-llamacpp/bin/python if present).
    #[arg(long, value_name = "PATH")]
    llamacpp_python: Option<PathBuf>,
    /// Skip llama.cpp.
    #[arg(long)]
    no_llamacpp: bool,
    /// GGML file types to measure, comma-separated (e.g. q4_0,q4_1,q8_0,q4_k_m): each one is
    /// made from the model with llama.cpp's llama-quantize (kept in $RAG_HOME/models/bench).
    /// Default: the model file alone.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    formats: Vec<String>,
    /// How rag holds the weights: quantized (the project's CPU engine), candle (candle's
    /// quantized matmul, the engine it replaced), f32 or f16.
    #[arg(long, value_name = "FORMAT", default_value = "quantized")]
    weights: WeightFormat,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl BenchModelArgs {
    fn options(&self, config: &Config) -> rag::bench::BenchOptions {
        let shared = rag::eval::shared_dir();
        let venv = config.home.join("venv-llamacpp/bin/python");
        rag::bench::BenchOptions {
            text_file: self
                .text_file
                .clone()
                .unwrap_or_else(|| shared.join("data/squad-v1.1-dev/articles/Black_Death.txt")),
            prompt_tokens: self.prompt_tokens,
            gen_tokens: self.gen_tokens,
            embed_chunk_tokens: self.embed_chunk_tokens,
            embed_chunks: self.embed_chunks,
            runs: self.runs,
            llamacpp_python: if self.no_llamacpp {
                None
            } else {
                self.llamacpp_python
                    .clone()
                    .or_else(|| venv.exists().then_some(venv))
            },
            llamacpp_script: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("scripts/bench_llamacpp.py"),
            formats: self.formats.clone(),
            quantize_tool: Some(config.home.join("venv-llamacpp/bin/llama-quantize")),
            formats_dir: config.home.join("models/bench"),
            weights: self.weights,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Streams generated text to stdout as it comes; the first write error (a closed pipe, say)
/// stops the writing and is returned by [`Stream::finish`].
struct Stream<'a, W: Write> {
    out: &'a mut W,
    enabled: bool,
    err: Option<std::io::Error>,
}

impl<'a, W: Write> Stream<'a, W> {
    fn new(out: &'a mut W, enabled: bool) -> Self {
        Self {
            out,
            enabled,
            err: None,
        }
    }

    fn write(&mut self, piece: &str) {
        if self.enabled && self.err.is_none() {
            if let Err(e) = self
                .out
                .write_all(piece.as_bytes())
                .and_then(|_| self.out.flush())
            {
                self.err = Some(e);
            }
        }
    }

    fn finish(self) -> Result<()> {
        self.err.map_or(Ok(()), |e| Err(e.into()))
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> Result<ExitCode> {
    let g = cli.global;
    let config = Config::resolve(&Overrides {
        config: g.config,
        model: g.model,
        embed_model: g.embed_model,
        embedder: None,
        threads: g.threads,
        template: g.template,
        context: g.context,
    })?;
    rag::model::set_threads(config.threads)?;
    match cli.command {
        Command::Model {
            command: ModelCommand::Info { json },
        } => model_info(&config, json).map(|_| ExitCode::SUCCESS),
        Command::Chat(args) => chat(&config, args).map(|_| ExitCode::SUCCESS),
        Command::Ingest(args) => ingest(config, args),
        Command::Ask(args) => ask(config, args),
        Command::Search(args) => search(&config, args),
        Command::Embed(args) => embed(&config, args).map(|_| ExitCode::SUCCESS),
        Command::Eval {
            command: EvalCommand::Retrieval(args),
        } => eval_retrieval(config, args).map(|_| ExitCode::SUCCESS),
        Command::Eval {
            command: EvalCommand::Qa(args),
        } => eval_qa(config, args).map(|_| ExitCode::SUCCESS),
        Command::Bench {
            command: BenchCommand::Model(args),
        } => {
            let report = rag::bench::bench_models(&config, &args.options(&config))?;
            let mut out = std::io::stdout().lock();
            if args.json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", report.table())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            command: BenchCommand::Search(args),
        } => {
            let json = args.json;
            let report = bench_search(config, args)?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", search_bench_table(&report))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn model_info(config: &Config, json: bool) -> Result<()> {
    let info = Model::inspect(config.model_path()?)?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &info)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", format_info(&info))?;
    }
    Ok(())
}

fn format_info(i: &ModelInfo) -> String {
    let types: Vec<String> = i
        .tensor_types
        .iter()
        .map(|(t, n)| format!("{t} {:.1}M", *n as f64 / 1e6))
        .collect();
    format!(
        "file            {}\n\
         name            {}\n\
         architecture    {}\n\
         parameters      {:.1}M ({:.1} MB on disk)\n\
         quantization    {} ({})\n\
         layers          {}\n\
         embedding       {}\n\
         feed-forward    {}\n\
         heads           {} (kv {})\n\
         context length  {}\n\
         rope base       {}\n\
         tokenizer       {}{}\n\
         vocabulary      {}\n\
         chat template   {}\n",
        i.path.display(),
        i.name.as_deref().unwrap_or("-"),
        i.architecture,
        i.parameters as f64 / 1e6,
        i.file_size as f64 / 1e6,
        i.quantization,
        types.join(", "),
        i.layers,
        i.embedding_length,
        i.feed_forward_length,
        i.heads,
        i.kv_heads,
        i.context_length,
        i.rope_freq_base,
        i.tokenizer,
        i.tokenizer_pre
            .as_deref()
            .map(|p| format!(", pre-tokenizer {p}"))
            .unwrap_or_default(),
        i.vocab_size,
        i.template,
    )
}

fn chat(config: &Config, args: ChatArgs) -> Result<()> {
    let params = args.sampling.params()?;
    let path = config.model_path()?;
    let model = Model::load(path, &config.model_options())
        .with_context(|| format!("loading {}", path.display()))?;
    let system = args.system.unwrap_or_else(|| {
        include_str!("../prompts/chat-system.txt")
            .trim()
            .to_string()
    });
    let prompt = model.chat_prompt(&system, &args.message);
    let ids = prompt.encode(model.tokenizer());
    let mut out = std::io::stdout().lock();
    if args.show_prompt && !args.json {
        writeln!(
            out,
            "--- prompt ({} tokens) ---\n{}\n---",
            ids.len(),
            prompt.text()
        )?;
    }
    let mut stream = Stream::new(&mut out, !args.json);
    let gen = model.generate(&ids, &params, &mut |piece| stream.write(piece))?;
    stream.finish()?;
    if args.json {
        let v = serde_json::json!({
            "answer": gen.text,
            "prompt": args.show_prompt.then(|| prompt.text()),
            "prompt_tokens": gen.prompt_tokens,
            "generated_tokens": gen.tokens.len(),
            "stop": gen.stop,
            "timings": {
                "prefill_secs": gen.prefill_secs,
                "decode_secs": gen.decode_secs,
                "prefill_tok_s": gen.prefill_tok_s(),
                "decode_tok_s": gen.decode_tok_s(),
            },
        });
        serde_json::to_writer_pretty(&mut out, &v)?;
    }
    writeln!(out)?;
    drop(out);
    eprintln!(
        "[{} prompt tokens at {:.0} tok/s, {} generated at {:.1} tok/s, stop: {:?}]",
        gen.prompt_tokens,
        gen.prefill_tok_s(),
        gen.tokens.len(),
        gen.decode_tok_s(),
        gen.stop
    );
    Ok(())
}

fn embed(config: &Config, args: EmbedArgs) -> Result<()> {
    let path = config.model_path()?;
    let mut opts = config.model_options();
    opts.format = args.weights;
    let model =
        Arc::new(Model::load(path, &opts).with_context(|| format!("loading {}", path.display()))?);
    let embedder = Embedder::new(
        model,
        EmbedOptions {
            pooling: args.pooling,
            layer: args.layer.map_or(HiddenLayer::Final, HiddenLayer::After),
            ..EmbedOptions::default()
        },
    );
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let vectors = embedder.embed(&texts)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let v: Vec<_> = texts
            .iter()
            .zip(&vectors)
            .map(|(t, v)| serde_json::json!({"text": t, "embedding": v}))
            .collect();
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "dimension {}", embedder.dim())?;
    for (i, (t, v)) in texts.iter().zip(&vectors).enumerate() {
        let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:.4}")).collect();
        writeln!(out, "[{i}] [{}, ...] {t}", head.join(", "))?;
    }
    for i in 0..vectors.len() {
        for j in i + 1..vectors.len() {
            let c = rag::model::embed::cosine(&vectors[i], &vectors[j]);
            writeln!(out, "cosine [{i}] [{j}] = {c:.4}")?;
        }
    }
    Ok(())
}

fn ingest(mut config: Config, args: IngestArgs) -> Result<ExitCode> {
    use rag::pipeline::{FileStatus, IngestEvent, IngestOptions};
    if args.embedder.is_some() {
        config.embedder = args.embedder;
    }
    args.variant.apply(&mut config);
    let embedder = rag::load_embedder(&config, &args.index.index, rag::EmbedderUse::Ingest)?;
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
    let report = rag::pipeline::ingest(
        &args.index.index,
        &embedder,
        &args.paths,
        &opts,
        &mut on_event,
    )?;
    bar.finish_and_clear();
    if args.json {
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({
                "event": "summary",
                "report": report,
                "peak_rss_mib": rag::bench::peak_rss_mib(),
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
            args.index.index.display(),
            report.total_documents,
            report.total_chunks,
        );
        if report.chunks > 0 {
            eprintln!(
                "{:.1} chunks/s, {:.0} tokens/s; peak RSS {:.0} MiB",
                report.chunks as f64 / report.seconds.max(1e-9),
                report.tokens as f64 / report.seconds.max(1e-9),
                rag::bench::peak_rss_mib().unwrap_or(f64::NAN)
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

fn search(config: &Config, args: SearchArgs) -> Result<ExitCode> {
    let index = rag_index::Index::open(&args.index.index)?;
    let hits = match args.mode {
        SearchMode::Bm25 => index.search_bm25(&args.query, args.k)?,
        mode => {
            let embedder = rag::load_embedder(config, &args.index.index, rag::EmbedderUse::Query)?;
            let m = index.manifest();
            anyhow::ensure!(
                m.embedder_id == embedder.id(),
                "index at {} was built with embedder {} (dim {}); the model now configured gives {} (dim {}): pass the same --model, or re-ingest with --reindex",
                args.index.index.display(),
                m.embedder_id,
                m.dim,
                embedder.id(),
                embedder.dim()
            );
            let v = embedder.embed(&[&args.query])?.remove(0);
            match mode {
                SearchMode::Dense => index.search_dense(&v, args.k)?,
                SearchMode::Exact => index.search_exact(&v, args.k)?,
                _ => index.search_hybrid(
                    &args.query,
                    &v,
                    &rag_index::SearchOptions {
                        k: args.k,
                        bm25_depth: args.depth,
                        dense_depth: args.depth,
                        ..Default::default()
                    },
                )?,
            }
        }
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &hits)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if hits.is_empty() {
        writeln!(out, "no passages match")?;
    }
    for (i, h) in hits.iter().enumerate() {
        let c = &h.chunk;
        let mut place = c.path.clone();
        if let Some((a, b)) = c.pages {
            place += &if a == b {
                format!(" (page {a})")
            } else {
                format!(" (pages {a}-{b})")
            };
        }
        if let Some(hd) = &c.heading {
            place += &format!(" > {hd}");
        }
        let by = match h.found_by {
            rag_index::Retriever::Bm25 => "bm25",
            rag_index::Retriever::Dense => "dense",
            rag_index::Retriever::Both => "both",
        };
        let ranks = [
            h.bm25_rank.map(|r| format!("bm25 #{r}")),
            h.dense_rank.map(|r| format!("dense #{r}")),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
        writeln!(
            out,
            "[{}] {place}\n    score {:.4}, found by {by} ({ranks})",
            i + 1,
            h.score
        )?;
        let snippet: String = c.text.split_whitespace().collect::<Vec<_>>().join(" ");
        let snippet: String = snippet.chars().take(300).collect();
        writeln!(
            out,
            "    {snippet}{}",
            if c.text.len() > 300 { " ..." } else { "" }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn ask(config: Config, args: AskArgs) -> Result<ExitCode> {
    let mut opts = rag::AskOptions::default();
    let r = &mut opts.retrieve;
    r.mode = args.mode;
    if let Some(k) = args.k {
        anyhow::ensure!(k >= 1, "-k must be at least 1");
        r.k = k;
    }
    if let Some(d) = args.depth {
        r.bm25_depth = d;
        r.dense_depth = d;
    }
    if let Some(m) = args.min_evidence {
        anyhow::ensure!(
            (0.0..=1.0).contains(&m),
            "--min-evidence must be between 0 and 1"
        );
        r.min_evidence = m;
    }
    anyhow::ensure!(args.temperature >= 0.0, "--temperature must be >= 0");
    opts.generate.max_tokens = args.max_tokens;
    opts.generate.temperature = args.temperature;
    opts.generate.seed = args.seed;
    opts.closed_book = args.no_retrieval;
    opts.keep_prompt = args.show_prompt;
    let rag = rag::Rag::open(&args.index.index, config)?.with_options(opts);
    let mut out = std::io::stdout().lock();
    let mut stream = Stream::new(&mut out, !args.json && !args.show_prompt);
    let answer = rag.ask_streaming(&args.question, &mut |piece| stream.write(piece))?;
    stream.finish()?;
    if args.json {
        serde_json::to_writer_pretty(&mut out, &answer)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
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
                rag::answer::source_label(&display_path(&c.path), c.pages)
            )?;
        }
    }
    drop(out);
    if !answer.invalid_citations.is_empty() {
        let list: Vec<String> = answer
            .invalid_citations
            .iter()
            .map(|n| format!("[{n}]"))
            .collect();
        eprintln!(
            "note: removed citation{} {} (the model was shown {} passage{})",
            if list.len() == 1 { "" } else { "s" },
            list.join(" "),
            answer.passages.len(),
            if answer.passages.len() == 1 { "" } else { "s" },
        );
    }
    let t = &answer.timings;
    match answer.abstain_reason {
        Some(rag::AbstainReason::NoEvidence) => eprintln!(
            "[no passage covers the question well enough (evidence {:.2} < {:.2}); the model was not asked]",
            answer.evidence.unwrap_or(0.0),
            rag.options().retrieve.min_evidence
        ),
        _ if !args.no_retrieval && answer.citations.is_empty() && !answer.abstained => eprintln!(
            "[the answer cites no passage: check it against the sources (`rag search` shows them)]"
        ),
        _ => {}
    }
    if answer.stop.is_some() {
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
    Ok(ExitCode::SUCCESS)
}

/// A stored (absolute) path, relative to the working directory when it lies under it.
fn display_path(path: &str) -> String {
    let p = std::path::Path::new(path);
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(|r| r.display().to_string()))
        .unwrap_or_else(|| path.to_string())
}

fn eval_retrieval(mut config: Config, args: EvalRetrievalArgs) -> Result<()> {
    use rag::eval::retrieval::{eval_retrieval, BeirSet, RetrievalOptions};
    let set_dir = args
        .set
        .unwrap_or_else(|| rag::eval::shared_dir().join("data/scifact"));
    let mut set = BeirSet::load(&set_dir, &args.split)?;
    if let Some(n) = args.max_docs {
        set.subset(n);
    }
    let kind = args
        .embedder
        .or(config.embedder)
        .unwrap_or(rag::model::DEFAULT_EMBEDDER);
    config.embedder = Some(kind);
    args.variant.apply(&mut config);
    let variant = match (kind, args.variant.pooling, args.variant.layer) {
        (rag::model::EmbedderKind::Llama, p, l) if p.is_some() || l.is_some() => format!(
            "-{}-{}",
            if p == Some(Pooling::LastToken) {
                "last"
            } else {
                "mean"
            },
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
    let mut rag = rag::Rag::open(&index, config)?;
    let total = set.corpus.len();
    let mut done = 0usize;
    let started = std::time::Instant::now();
    let report = rag.ingest_with(
        &[docs],
        &rag::IngestOptions {
            commit_every_files: 500,
            ..Default::default()
        },
        &mut |e| {
            if let rag::pipeline::IngestEvent::File { .. } = e {
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
        query_instruction: args.query_instruction,
    };
    let r = eval_retrieval(&rag, &set, &opts, ingest)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &r)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", r.table())?;
    }
    Ok(())
}

fn bench_search(config: Config, args: BenchSearchArgs) -> Result<serde_json::Value> {
    use rag::eval::metrics::{mean, quantile};
    use rag::eval::retrieval::{dir_size, run_queries, MODES};
    let spec = args.queries.unwrap_or_else(|| {
        rag::eval::shared_dir()
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
    let rag = rag::Rag::open(&args.index.index, config)?;
    let texts: Vec<&str> = queries.iter().map(String::as_str).collect();
    // One warm-up query, so the first search does not pay for page faults.
    run_queries(&rag, &texts[..1], args.depth, None)?;
    let runs = run_queries(&rag, &texts, args.depth, None)?;
    let index = rag.index()?;
    let m = index.manifest();
    let modes: Vec<serde_json::Value> = MODES
        .iter()
        .enumerate()
        .map(|(i, mode)| {
            serde_json::json!({
                "mode": mode,
                "p50_ms": quantile(&runs.latency_ms[i], 0.5),
                "p95_ms": quantile(&runs.latency_ms[i], 0.95),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "index": index.dir(),
        "embedder": m.embedder_id,
        "documents": m.documents,
        "chunks": m.chunks,
        "index_mib": dir_size(index.dir()) as f64 / (1024.0 * 1024.0),
        "queries": queries.len(),
        "depth": args.depth,
        "modes": modes,
        "embed_query_p50_ms": quantile(&runs.embed_ms, 0.5),
        "embed_query_p95_ms": quantile(&runs.embed_ms, 0.95),
        "hnsw_recall_at_10": mean(&runs.hnsw_recall),
    }))
}

fn search_bench_table(r: &serde_json::Value) -> String {
    let mut s = format!(
        "{}: {} documents, {} chunks, {:.1} MiB; embedder {}\n{} queries, depth {}\n\n{:<8} {:>9} {:>9}\n",
        r["index"].as_str().unwrap_or_default(),
        r["documents"],
        r["chunks"],
        r["index_mib"].as_f64().unwrap_or_default(),
        r["embedder"].as_str().unwrap_or_default(),
        r["queries"],
        r["depth"],
        "mode",
        "p50 ms",
        "p95 ms"
    );
    for m in r["modes"].as_array().into_iter().flatten() {
        s += &format!(
            "{:<8} {:>9.2} {:>9.2}\n",
            m["mode"].as_str().unwrap_or_default(),
            m["p50_ms"].as_f64().unwrap_or_default(),
            m["p95_ms"].as_f64().unwrap_or_default()
        );
    }
    s += &format!(
        "\nquery embedding p50 {:.1} ms, p95 {:.1} ms; HNSW recall@10 vs exact {:.4}\n",
        r["embed_query_p50_ms"].as_f64().unwrap_or_default(),
        r["embed_query_p95_ms"].as_f64().unwrap_or_default(),
        r["hnsw_recall_at_10"].as_f64().unwrap_or_default()
    );
    s
}

fn eval_qa(mut config: Config, args: EvalQaArgs) -> Result<()> {
    use rag::eval::qa::{self, QaOptions};
    let kind = args
        .embedder
        .or(config.embedder)
        .unwrap_or(rag::model::DEFAULT_EMBEDDER);
    config.embedder = Some(kind);
    let mut opts = QaOptions {
        sample: args.sample,
        seed: args.seed,
        articles_limit: args.articles_limit,
        closed_book: args.closed_book,
        ..QaOptions::default()
    };
    if let Some(k) = args.k {
        anyhow::ensure!(k >= 1, "-k must be at least 1");
        opts.ask.retrieve.k = k;
    }
    let index = args
        .index
        .unwrap_or_else(|| config.home.join("eval").join(format!("squad-{kind}")));
    eprintln!(
        "model {}, embedder {kind}, index {}",
        config.model.display(),
        index.display()
    );
    let mut rag = rag::Rag::open(&index, config)?.with_options(opts.ask.clone());
    let r = qa::ensure_ingested(&mut rag, &opts.articles, opts.articles_limit)?;
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
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "SQuAD v1.1 dev: {} questions of {} eligible, seed {}, articles {}",
            report.retrieval.n,
            report.eligible,
            report.seed,
            report
                .articles_limit
                .map_or_else(|| "all".to_string(), |n| format!("first {n}"))
        )?;
        write!(out, "{}", report.table())?;
    }
    Ok(())
}
