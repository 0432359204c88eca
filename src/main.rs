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
enum BenchCommand {
    /// Prompt, generation and embedding throughput and peak memory, with llama.cpp on the same
    /// GGUF, prompt and thread count when its Python bindings are installed
    /// (scripts/llamacpp-venv.sh).
    #[command(after_help = "Examples:
  rag bench model
  rag bench model --threads 2 --prompt-tokens 400 --gen-tokens 64 --json")]
    Model(BenchModelArgs),
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
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl BenchModelArgs {
    fn options(&self, config: &Config) -> rag::bench::BenchOptions {
        let shared = std::env::var_os("RAG_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("../shared"));
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
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli) -> Result<()> {
    let g = cli.global;
    let config = Config::resolve(&Overrides {
        config: g.config,
        model: g.model,
        threads: g.threads,
        template: g.template,
        context: g.context,
    })?;
    rag::model::set_threads(config.threads)?;
    match cli.command {
        Command::Model {
            command: ModelCommand::Info { json },
        } => model_info(&config, json),
        Command::Chat(args) => chat(&config, args),
        Command::Embed(args) => embed(&config, args),
        Command::Bench {
            command: BenchCommand::Model(args),
        } => {
            let report = rag::bench::bench_model(&config, &args.options(&config))?;
            let mut out = std::io::stdout().lock();
            if args.json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", report.table())?;
            }
            Ok(())
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
    let mut write_err = None;
    let gen = model.generate(&ids, &params, &mut |piece| {
        if !args.json && write_err.is_none() {
            if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                write_err = Some(e);
            }
        }
    })?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
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
