//! `rag bench model`: prompt, generation and embedding throughput and peak memory of the runtime,
//! beside llama.cpp (through llama-cpp-python) on the same GGUF, prompt and thread count.
//!
//! Benchmarks, not tests: the numbers depend on the machine and its load, so they are printed
//! (and pasted into the README), never asserted. Ratios against llama.cpp measured in the same run
//! are the figures to compare across machines.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use rag::{Config, Error, Result};
use rag_model::{EmbedOptions, Embedder, Model, ModelOptions, WeightFormat};
use serde::Serialize;

use crate::cli::config::shared_dir;
use crate::cli::output::peak_rss_mib;

/// The llama.cpp side of the benchmark, compiled in so that an installed binary has it.
const LLAMACPP_SCRIPT: &str = include_str!("../../../scripts/bench_llamacpp.py");

#[derive(Args)]
pub struct BenchModelArgs {
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
    pub json: bool,
}

impl BenchModelArgs {
    pub fn options(&self, config: &Config) -> BenchOptions {
        let shared = shared_dir();
        let venv = config.home.join("venv-llamacpp/bin/python");
        BenchOptions {
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
            formats: self.formats.clone(),
            quantize_tool: Some(config.home.join("venv-llamacpp/bin/llama-quantize")),
            formats_dir: config.home.join("models/bench"),
            weights: self.weights,
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Text the prompt and embedding chunks are cut from.
    pub text_file: PathBuf,
    /// Prompt length in tokens. Default 400.
    pub prompt_tokens: usize,
    /// Tokens generated after the prompt (end-of-sequence ignored). Default 64.
    pub gen_tokens: usize,
    /// Chunk length for the embedding measurement. Default 200.
    pub embed_chunk_tokens: usize,
    /// Number of chunks embedded. Default 16.
    pub embed_chunks: usize,
    /// Repetitions; the median is reported. Default 3.
    pub runs: usize,
    /// Python of a venv with llama-cpp-python; `None` skips llama.cpp.
    pub llamacpp_python: Option<PathBuf>,
    /// GGML file types to measure (e.g. `Q4_0`, `Q8_0`, `Q4_K_M`), each made from the model
    /// with llama.cpp's quantize tool when it is not the model's own. Empty: the model only.
    pub formats: Vec<String>,
    /// llama.cpp's `llama-quantize`, needed for formats other than the model's.
    pub quantize_tool: Option<PathBuf>,
    /// Where the made files are kept (reused by later runs).
    pub formats_dir: PathBuf,
    /// How rag holds the weights (default: the project's quantized engine).
    pub weights: WeightFormat,
}

/// One engine's numbers.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct EngineNumbers {
    pub prompt_tokens: Option<usize>,
    pub prompt_tok_s: Option<f64>,
    pub gen_tokens: Option<usize>,
    pub gen_tok_s: Option<f64>,
    pub embed_tokens: Option<usize>,
    pub embed_tok_s: Option<f64>,
    pub peak_rss_mib: Option<f64>,
}

/// One model file's report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: PathBuf,
    /// The file's quantization (its most common weight type, or the name asked for).
    pub format: String,
    /// How rag held the weights.
    pub weights: String,
    pub model_size_mib: f64,
    pub threads: usize,
    pub rag: EngineNumbers,
    /// Peak RSS of loading and generation (prompt included).
    pub rag_generation_peak_rss_mib: Option<f64>,
    /// Peak RSS of the embedding phase (same weights, batched chunks).
    pub rag_embedding_peak_rss_mib: Option<f64>,
    pub llamacpp: Option<EngineNumbers>,
    /// Why llama.cpp was not measured, when it was not.
    pub llamacpp_skipped: Option<String>,
}

impl BenchReport {
    /// A plain-text table with ratios (rag / llama.cpp).
    pub fn table(&self) -> String {
        let mut s = format!(
            "model {} ({}, {:.1} MiB), {} threads, rag weights {}\n\n",
            self.model.display(),
            self.format,
            self.model_size_mib,
            self.threads,
            self.weights,
        );
        s += &format!(
            "{:<26} {:>12} {:>12} {:>8}\n",
            "", "rag", "llama.cpp", "ratio"
        );
        let l = self.llamacpp.clone().unwrap_or_default();
        let mut row = |name: &str, a: Option<f64>, b: Option<f64>| {
            let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
            let r = match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            s += &format!("{name:<26} {:>12} {:>12} {r:>8}\n", f(a), f(b));
        };
        row(
            &format!("prompt tok/s ({} tok)", self.rag.prompt_tokens.unwrap_or(0)),
            self.rag.prompt_tok_s,
            l.prompt_tok_s,
        );
        row(
            &format!(
                "generation tok/s ({} tok)",
                self.rag.gen_tokens.unwrap_or(0)
            ),
            self.rag.gen_tok_s,
            l.gen_tok_s,
        );
        row(
            &format!(
                "embedding tok/s ({} tok)",
                self.rag.embed_tokens.unwrap_or(0)
            ),
            self.rag.embed_tok_s,
            l.embed_tok_s,
        );
        row("peak RSS MiB", self.rag.peak_rss_mib, l.peak_rss_mib);
        if let (Some(g), Some(e)) = (
            self.rag_generation_peak_rss_mib,
            self.rag_embedding_peak_rss_mib,
        ) {
            s += &format!(
                "\nrag peak RSS: generation {g:.0} MiB ({:.2}x the file), embedding {e:.0} MiB\n",
                g / self.model_size_mib.max(1e-9)
            );
        }
        if let Some(why) = &self.llamacpp_skipped {
            s += &format!("\nllama.cpp not measured: {why}\n");
        }
        s
    }
}

/// Reports for several files of one model, and a summary.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSuite {
    pub threads: usize,
    pub reports: Vec<BenchReport>,
}

impl BenchSuite {
    /// Each file's table, then (for several files) one line per format with the ratios.
    pub fn table(&self) -> String {
        let mut s = String::new();
        for r in &self.reports {
            s += &r.table();
            s += "\n";
        }
        if self.reports.len() > 1 {
            s += &format!(
                "summary, {} threads: rag tok/s / llama.cpp tok/s (ratio)\n",
                self.threads
            );
            s += &format!(
                "{:<8} {:>24} {:>24} {:>24} {:>16}\n",
                "format", "prompt", "generation", "embedding", "gen RSS / file"
            );
            for r in &self.reports {
                let l = r.llamacpp.clone().unwrap_or_default();
                let cell = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) if b > 0.0 => {
                        format!("{a:.0} / {b:.0} ({:.2}x)", a / b)
                    }
                    (Some(a), _) => format!("{a:.0} / -"),
                    _ => "-".into(),
                };
                let rss = r
                    .rag_generation_peak_rss_mib
                    .map_or("-".into(), |g| format!("{:.2}x", g / r.model_size_mib));
                s += &format!(
                    "{:<8} {:>24} {:>24} {:>24} {:>16}\n",
                    r.format,
                    cell(r.rag.prompt_tok_s, l.prompt_tok_s),
                    cell(r.rag.gen_tok_s, l.gen_tok_s),
                    cell(r.rag.embed_tok_s, l.embed_tok_s),
                    rss
                );
            }
        }
        s
    }
}

/// Run the benchmark on the configured model, or on each of `opts.formats` made from it.
pub fn bench_models(config: &Config, opts: &BenchOptions) -> Result<BenchSuite> {
    let path = config.model_path()?;
    let mut reports = Vec::new();
    if opts.formats.is_empty() {
        reports.push(bench_model(config, &path, None, opts)?);
    }
    for f in &opts.formats {
        let file = format_file(&path, f, opts)?;
        reports.push(bench_model(config, &file, Some(f), opts)?);
    }
    Ok(BenchSuite {
        threads: config.threads_or_default(),
        reports,
    })
}

/// The model in GGML file type `fmt`: `model` itself when that is its type, else a copy made
/// once with llama.cpp's quantize tool in `opts.formats_dir`.
pub fn format_file(model: &Path, fmt: &str, opts: &BenchOptions) -> Result<PathBuf> {
    let fmt = fmt.to_ascii_uppercase();
    let info = Model::inspect(model)?;
    if info.quantization.eq_ignore_ascii_case(&fmt) {
        return Ok(model.to_path_buf());
    }
    let stem = model
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let base = stem
        .rsplit_once('.')
        .map_or(stem.as_str(), |(b, _)| b)
        .to_string();
    let out = opts.formats_dir.join(format!("{base}.{fmt}.gguf"));
    if out.exists() {
        return Ok(out);
    }
    let tool = opts.quantize_tool.as_ref().filter(|t| t.exists()).ok_or_else(|| {
        Error::InvalidOption(format!(
            "making a {fmt} copy of {} needs llama.cpp's llama-quantize: run scripts/llamacpp-venv.sh (it builds one), or pass --formats with the model's own type ({})",
            model.display(),
            info.quantization
        ))
    })?;
    std::fs::create_dir_all(&opts.formats_dir).map_err(|source| Error::Io {
        path: opts.formats_dir.clone(),
        source,
    })?;
    let tmp = out.with_extension("part");
    // The default model ships quantized only, so the other types are requantized from it:
    // the same shapes and the same work per token, a little more rounding error.
    let status = Command::new(tool)
        .arg("--allow-requantize")
        .arg(model)
        .arg(&tmp)
        .arg(&fmt)
        .arg("2")
        .output()
        .map_err(|source| Error::Io {
            path: tool.clone(),
            source,
        })?;
    if !status.status.success() {
        let _ = std::fs::remove_file(&tmp);
        let err = String::from_utf8_lossy(&status.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        return Err(Error::InvalidOption(format!(
            "{} could not make {fmt} from {}: {}",
            tool.display(),
            model.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    std::fs::rename(&tmp, &out).map_err(|source| Error::Io {
        path: out.clone(),
        source,
    })?;
    Ok(out)
}

/// Run the benchmark on one file.
pub fn bench_model(
    config: &Config,
    path: &Path,
    format: Option<&str>,
    opts: &BenchOptions,
) -> Result<BenchReport> {
    let path = path.to_path_buf();
    let text = std::fs::read_to_string(&opts.text_file).map_err(|source| Error::Io {
        path: opts.text_file.clone(),
        source,
    })?;
    let base = ModelOptions {
        format: opts.weights,
        ..config.model_options()
    };
    reset_peak_rss();
    let model = Arc::new(Model::load(&path, &base)?);
    let format = format.map_or_else(|| model.info().quantization.clone(), str::to_uppercase);
    let tok = model.tokenizer();
    let all = tok.encode(&text, false, false);
    let need = opts
        .prompt_tokens
        .max(opts.embed_chunk_tokens * opts.embed_chunks);
    if all.len() < need {
        return Err(Error::InvalidOption(format!(
            "{} has {} tokens; the benchmark needs {need}",
            opts.text_file.display(),
            all.len()
        )));
    }
    let prompt_text = tok.decode(&all[..opts.prompt_tokens]);
    let prompt = tok.encode(&prompt_text, true, false);

    // Prompt: fresh cache each run, median time.
    let mut times = Vec::new();
    for _ in 0..opts.runs.max(1) {
        let mut cache = model.new_cache(prompt.len() + opts.gen_tokens)?;
        let t = Instant::now();
        model.prefill(&prompt, &mut cache)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let prompt_tok_s = prompt.len() as f64 / median(&mut times);

    // Generation: greedy, end-of-sequence ignored, after the prompt.
    let mut times = Vec::new();
    for _ in 0..opts.runs.max(1) {
        let mut cache = model.new_cache(prompt.len() + opts.gen_tokens)?;
        let mut next = rag_model::greedy(&model.prefill(&prompt, &mut cache)?).unwrap_or(0);
        let t = Instant::now();
        for _ in 0..opts.gen_tokens {
            let l = model.step(&[next], &mut cache)?;
            next = rag_model::greedy(&l).unwrap_or(0);
        }
        times.push(t.elapsed().as_secs_f64());
    }
    let gen_tok_s = opts.gen_tokens as f64 / median(&mut times);
    let gen_rss = peak_rss_mib();

    // Embedding: the same weights, batched chunks.
    reset_peak_rss();
    let embedder = Embedder::new(model.clone(), EmbedOptions::default());
    let chunks: Vec<String> = all
        .chunks(opts.embed_chunk_tokens)
        .take(opts.embed_chunks)
        .map(|c| model.tokenizer().decode(c))
        .collect();
    let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
    let embed_tokens: usize = refs.iter().map(|c| embedder.count_tokens(c)).sum();
    embedder.embed(&refs[..1])?; // warm-up
    let mut times = Vec::new();
    for _ in 0..opts.runs.max(1) {
        let t = Instant::now();
        embedder.embed(&refs)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let embed_tok_s = embed_tokens as f64 / median(&mut times);
    let embed_rss = peak_rss_mib();

    let rag = EngineNumbers {
        prompt_tokens: Some(prompt.len()),
        prompt_tok_s: Some(prompt_tok_s),
        gen_tokens: Some(opts.gen_tokens),
        gen_tok_s: Some(gen_tok_s),
        embed_tokens: Some(embed_tokens),
        embed_tok_s: Some(embed_tok_s),
        peak_rss_mib: match (gen_rss, embed_rss) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        },
    };
    let (llamacpp, llamacpp_skipped) = match &opts.llamacpp_python {
        None => (
            None,
            Some("no llama-cpp-python venv (run scripts/llamacpp-venv.sh)".into()),
        ),
        Some(py) => match run_llamacpp(py, &path, &prompt_text, &chunks, config, opts) {
            Ok(n) => (Some(n), None),
            Err(e) => (None, Some(e)),
        },
    };
    Ok(BenchReport {
        format,
        weights: opts.weights.to_string(),
        model_size_mib: std::fs::metadata(&path).map_or(0.0, |m| m.len() as f64 / 1048576.0),
        model: path,
        threads: config.threads_or_default(),
        rag,
        rag_generation_peak_rss_mib: gen_rss,
        rag_embedding_peak_rss_mib: embed_rss,
        llamacpp,
        llamacpp_skipped,
    })
}

fn run_llamacpp(
    python: &Path,
    model: &Path,
    prompt_text: &str,
    chunks: &[String],
    config: &Config,
    opts: &BenchOptions,
) -> std::result::Result<EngineNumbers, String> {
    let dir = std::env::temp_dir().join(format!("rag-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let script = dir.join("bench_llamacpp.py");
    std::fs::write(&script, LLAMACPP_SCRIPT).map_err(|e| e.to_string())?;
    let prompt_file = dir.join("prompt.txt");
    let embed_file = dir.join("embed.txt");
    std::fs::write(&prompt_file, prompt_text).map_err(|e| e.to_string())?;
    std::fs::write(&embed_file, chunks.join("")).map_err(|e| e.to_string())?;
    let out = Command::new(python)
        .arg(&script)
        .arg("--model")
        .arg(model)
        .arg("--prompt-file")
        .arg(&prompt_file)
        .arg("--threads")
        .arg(config.threads_or_default().to_string())
        .arg("--gen-tokens")
        .arg(opts.gen_tokens.to_string())
        .arg("--embed-file")
        .arg(&embed_file)
        .arg("--embed-chunk-tokens")
        .arg(opts.embed_chunk_tokens.to_string())
        .arg("--json")
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.map_err(|e| format!("could not run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "bench_llamacpp.py failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable llama.cpp output: {e}"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Reset the peak-RSS mark so the next phase is measured alone (Linux; no-op elsewhere).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
