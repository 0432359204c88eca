//! `rag bench model`: prompt, generation and embedding throughput and peak memory of the runtime,
//! beside llama.cpp (through llama-cpp-python) on the same GGUF, prompt and thread count.
//!
//! Benchmarks, not tests: the numbers depend on the machine and its load, so they are printed
//! (and pasted into the README), never asserted. Ratios against llama.cpp measured in the same run
//! are the figures to compare across machines.
use std::io::{BufRead, BufReader, Lines, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
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
    /// Chunks to embed (default 16; 0 skips the embedding phase, as --shape does unless
    /// this is given).
    #[arg(long, value_name = "N")]
    embed_chunks: Option<usize>,
    /// Runs of each engine (medians reported): each rag run is paired with a llama.cpp run
    /// (loaded once), back to back, the order flipping run by run, so that both see the same
    /// minutes of a machine whose speed drifts; the table lists each pair's ratio.
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
    /// Measure a random-weight file with a real model's dimensions and the Llama 2 vocabulary
    /// instead of the configured model: made once (f16) with
    /// $RAG_SHARED/tools/make_llama_shaped.py in $RAG_HOME/models/bench, then quantized to each
    /// of --formats (default q4_0,q4_k_m,q5_k_m,q6_k,q8_0). Speed does not depend on the
    /// weights' values; the embedding phase is skipped unless --embed-chunks is given.
    #[arg(long, value_name = "SHAPE")]
    shape: Option<Shape>,
    /// With --shape: the number of layers (llama2-7b has 32; 8 keeps the per-layer work and
    /// a quarter of the file).
    #[arg(long, value_name = "N", requires = "shape")]
    layers: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A model shape for `--shape`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// TinyLlama 1.1B: 2048 wide, 22 layers, 4 KV heads.
    Tinyllama,
    /// Llama 2 7B: 4096 wide, 32 layers.
    #[value(name = "llama2-7b")]
    Llama2_7b,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Tinyllama => "tinyllama",
            Shape::Llama2_7b => "llama2-7b",
        }
    }
}

/// The formats `--shape` measures by default: the table.
const SHAPE_FORMATS: [&str; 5] = ["q4_0", "q4_k_m", "q5_k_m", "q6_k", "q8_0"];

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
            embed_chunks: self
                .embed_chunks
                .unwrap_or(if self.shape.is_some() { 0 } else { 16 }),
            runs: self.runs,
            llamacpp_python: if self.no_llamacpp {
                None
            } else {
                self.llamacpp_python
                    .clone()
                    .or_else(|| venv.exists().then_some(venv))
            },
            formats: if self.formats.is_empty() && self.shape.is_some() {
                SHAPE_FORMATS.iter().map(|f| f.to_string()).collect()
            } else {
                self.formats.clone()
            },
            shape: self.shape.map(|s| ShapeFile {
                name: s.name(),
                layers: self.layers,
                tool: shared.join("tools/make_llama_shaped.py"),
            }),
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
    /// Runs of each engine, paired and alternated ([`PairedRun`]); medians are reported.
    /// Default 3.
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
    /// Measure a random-weight file of this shape instead of the configured model.
    pub shape: Option<ShapeFile>,
}

/// A random-weight file with a real model's dimensions ([`BenchOptions::shape`]).
#[derive(Debug, Clone)]
pub struct ShapeFile {
    /// `tinyllama` or `llama2-7b` (the tool's names).
    pub name: &'static str,
    /// Layers, when not the shape's own count.
    pub layers: Option<usize>,
    /// `make_llama_shaped.py`.
    pub tool: PathBuf,
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
    /// The kernels rag ran ([`kernels_in_use`]).
    pub kernels: String,
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
    /// The file's bytes times rag's generation tokens/s, GB/s: the rate weights are read at
    /// (a slight overestimate: of the token table only one row is read per token, unless it
    /// is also the output matrix).
    pub rag_weights_gb_s: Option<f64>,
    /// Each run's rates, rag's and llama.cpp's alternating (the medians above are of these).
    pub runs: Vec<PairedRun>,
}

/// One run of each engine, back to back: a prompt from an empty cache, then the generation
/// after it.
#[derive(Debug, Clone, Serialize)]
pub struct PairedRun {
    pub rag_prompt_tok_s: f64,
    pub rag_gen_tok_s: f64,
    pub llamacpp_prompt_tok_s: Option<f64>,
    pub llamacpp_gen_tok_s: Option<f64>,
    /// Whether llama.cpp ran first in this pair (the order flips run by run).
    pub llamacpp_first: bool,
}

/// The machine's read bandwidth, GB/s: `threads` threads summing their parts of a 512 MiB
/// buffer, best of three passes (the same threads the model runs on).
pub fn read_bandwidth_gb_s(threads: usize) -> f64 {
    let words: usize = 64 << 20; // 512 MiB of u64
    let buf: Vec<u64> = (0..words as u64).collect();
    let part = words.div_ceil(threads.max(1));
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let sum: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(part)
                .map(|c| s.spawn(move || c.iter().fold(0u64, |a, &x| a.wrapping_add(x))))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        std::hint::black_box(sum);
        best = best.max((words * 8) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

impl BenchReport {
    /// A plain-text table with ratios (rag / llama.cpp).
    pub fn table(&self) -> String {
        let mut s = format!(
            "model {} ({}, {:.1} MiB), {} threads, rag weights {}, kernels {}\n\n",
            self.model.display(),
            self.format,
            self.model_size_mib,
            self.threads,
            self.weights,
            self.kernels,
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
        if let Some(n) = self.rag.embed_tokens {
            row(
                &format!("embedding tok/s ({n} tok)"),
                self.rag.embed_tok_s,
                l.embed_tok_s,
            );
        }
        row("peak RSS MiB", self.rag.peak_rss_mib, l.peak_rss_mib);
        // Each pair's ratios: how far one run can be trusted on this machine.
        let ratios = |f: fn(&PairedRun) -> (f64, Option<f64>)| {
            let v: Vec<String> = self
                .runs
                .iter()
                .filter_map(|r| match f(r) {
                    (a, Some(b)) if b > 0.0 => Some(format!("{:.2}x", a / b)),
                    _ => None,
                })
                .collect();
            v.join(" ")
        };
        if self.runs.len() > 1 && self.runs.iter().any(|r| r.llamacpp_prompt_tok_s.is_some()) {
            s += &format!(
                "\nruns, alternated (ratio each): prompt {}; generation {}\n",
                ratios(|r| (r.rag_prompt_tok_s, r.llamacpp_prompt_tok_s)),
                ratios(|r| (r.rag_gen_tok_s, r.llamacpp_gen_tok_s)),
            );
        }
        if let Some(g) = self.rag_generation_peak_rss_mib {
            s += &format!(
                "\nrag peak RSS: generation {g:.0} MiB ({:.2}x the file)",
                g / self.model_size_mib.max(1e-9)
            );
            if let Some(e) = self.rag_embedding_peak_rss_mib {
                s += &format!(", embedding {e:.0} MiB");
            }
            s += "\n";
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
    /// [`read_bandwidth_gb_s`] on as many threads, measured before the models.
    pub read_gb_s: f64,
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
                "{:<8} {:>24} {:>24} {:>24} {:>18} {:>16} {:>12}\n",
                "format",
                "prompt",
                "generation",
                "embedding",
                "first token s",
                "gen RSS / file",
                "weights GB/s"
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
                // Time to first token: reading the prompt (the first token comes out of it).
                let first = |n: &EngineNumbers| match (n.prompt_tokens, n.prompt_tok_s) {
                    (Some(t), Some(r)) if r > 0.0 => format!("{:.2}", t as f64 / r),
                    _ => "-".into(),
                };
                let gbs = r.rag_weights_gb_s.map_or("-".into(), |g| format!("{g:.1}"));
                s += &format!(
                    "{:<8} {:>24} {:>24} {:>24} {:>18} {:>16} {:>12}\n",
                    r.format,
                    cell(r.rag.prompt_tok_s, l.prompt_tok_s),
                    cell(r.rag.gen_tok_s, l.gen_tok_s),
                    cell(r.rag.embed_tok_s, l.embed_tok_s),
                    format!("{} / {}", first(&r.rag), first(&l)),
                    rss,
                    gbs
                );
            }
            s += &format!(
                "weights GB/s: the file's size times rag's generation tok/s; this machine reads \
                 {:.1} GB/s on {} threads\n",
                self.read_gb_s, self.threads
            );
        }
        s
    }
}

/// Run the benchmark on the configured model, or on each of `opts.formats` made from it.
pub fn bench_models(config: &Config, opts: &BenchOptions) -> Result<BenchSuite> {
    let path = match &opts.shape {
        Some(shape) => shaped_file(shape, opts)?,
        None => config.model_path()?,
    };
    let read_gb_s = read_bandwidth_gb_s(config.threads_or_default());
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
        read_gb_s,
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
    let mut cmd = Command::new(tool);
    cmd.arg("--allow-requantize")
        .arg(model)
        .arg(&tmp)
        .arg(&fmt)
        .arg("2");
    make_file(&mut cmd, tool, &tmp, &out, |tail| {
        format!(
            "{} could not make {fmt} from {}: {tail}",
            tool.display(),
            model.display()
        )
    })?;
    Ok(out)
}

/// Run `cmd` (the program `tool`), which writes `tmp`, then move `tmp` to `out`; on failure
/// remove `tmp` and fail with `message(the last lines of its stderr)`.
fn make_file(
    cmd: &mut Command,
    tool: &Path,
    tmp: &Path,
    out: &Path,
    message: impl FnOnce(String) -> String,
) -> Result<()> {
    let res = cmd.output().map_err(|source| Error::Io {
        path: tool.to_path_buf(),
        source,
    })?;
    if !res.status.success() {
        let _ = std::fs::remove_file(tmp);
        let err = String::from_utf8_lossy(&res.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        let tail = tail.into_iter().rev().collect::<Vec<_>>().join(" | ");
        return Err(Error::InvalidOption(message(tail)));
    }
    std::fs::rename(tmp, out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })
}

/// The f16 file of `shape`, made once in `opts.formats_dir` with its tool (run by the
/// llama.cpp venv's Python, which has numpy, or by `python3`).
fn shaped_file(shape: &ShapeFile, opts: &BenchOptions) -> Result<PathBuf> {
    let name = match shape.layers {
        Some(n) => format!("random-{}-{n}l", shape.name),
        None => format!("random-{}", shape.name),
    };
    let out = opts.formats_dir.join(format!("{name}.F16.gguf"));
    if out.exists() {
        return Ok(out);
    }
    if !shape.tool.exists() {
        return Err(Error::InvalidOption(format!(
            "--shape needs {} (set RAG_SHARED to the folder holding tools/make_llama_shaped.py)",
            shape.tool.display()
        )));
    }
    std::fs::create_dir_all(&opts.formats_dir).map_err(|source| Error::Io {
        path: opts.formats_dir.clone(),
        source,
    })?;
    let python = opts
        .llamacpp_python
        .clone()
        .unwrap_or_else(|| PathBuf::from("python3"));
    let tmp = out.with_extension("part");
    eprintln!(
        "making {} with {} (a few minutes; kept for later runs)",
        out.display(),
        shape.tool.display()
    );
    let mut cmd = Command::new(&python);
    cmd.arg(&shape.tool)
        .arg(&tmp)
        .arg("--shape")
        .arg(shape.name);
    if let Some(n) = shape.layers {
        cmd.arg("--layers").arg(n.to_string());
    }
    make_file(&mut cmd, &python, &tmp, &out, |tail| {
        format!(
            "{} could not make the {} shape (it needs `pip install gguf numpy` in {}): {tail}",
            shape.tool.display(),
            shape.name,
            python.display()
        )
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
    // A prompt longer than the text: the text again (the work per token is the same).
    let mut all = all;
    while !all.is_empty() && all.len() < need {
        let again = all.clone();
        all.extend(again);
    }
    if all.len() < need {
        return Err(Error::InvalidOption(format!(
            "{} has {} tokens; the benchmark needs {need}",
            opts.text_file.display(),
            all.len()
        )));
    }
    let prompt_text = tok.decode(&all[..opts.prompt_tokens]);
    let prompt = tok.encode(&prompt_text, true, false);
    let chunks: Vec<String> = all
        .chunks(opts.embed_chunk_tokens)
        .take(opts.embed_chunks)
        .map(|c| tok.decode(c))
        .collect();

    // llama.cpp loaded and warmed up in its own process first, so that its runs can alternate
    // with rag's: this machine's speed drifts by a fifth within minutes, and two engines
    // measured a few minutes apart would compare the drift.
    let mut llamacpp = match &opts.llamacpp_python {
        None => Err("skipped (--no-llamacpp, or no llama-cpp-python venv: run \
                     scripts/llamacpp-venv.sh)"
            .to_string()),
        Some(py) => LlamaCpp::start(py, &path, &prompt_text, &chunks, config, opts),
    };

    // A short warm-up (code paths, the thread pool, buffers), then the runs: a fresh cache
    // each, the prompt timed, then greedy generation after it (end-of-sequence ignored).
    // Run by run the order flips (rag first, then llama.cpp first), so a drift in the
    // machine's speed falls on both.
    let rag_run = |prompt: &[u32], gen_tokens: usize| -> Result<(f64, f64)> {
        let mut cache = model.new_cache(prompt.len() + gen_tokens)?;
        let t = Instant::now();
        let logits = model.prefill(prompt, &mut cache)?;
        let prompt_s = t.elapsed().as_secs_f64();
        let mut next = rag_model::greedy(&logits).unwrap_or(0);
        let t = Instant::now();
        for _ in 0..gen_tokens {
            let l = model.step(&[next], &mut cache)?;
            next = rag_model::greedy(&l).unwrap_or(0);
        }
        Ok((prompt_s, t.elapsed().as_secs_f64()))
    };
    rag_run(&prompt[..prompt.len().min(64)], opts.gen_tokens.min(8))?;
    let mut runs = Vec::new();
    for i in 0..opts.runs.max(1) {
        let llama_first = i % 2 == 1;
        let mut other = None;
        if llama_first {
            other = LlamaCpp::run_or_stop(&mut llamacpp, opts.gen_tokens);
        }
        let (prompt_s, gen_s) = rag_run(&prompt, opts.gen_tokens)?;
        if !llama_first {
            other = LlamaCpp::run_or_stop(&mut llamacpp, opts.gen_tokens);
        }
        let rate = |n: usize, s: f64| n as f64 / s;
        runs.push(PairedRun {
            rag_prompt_tok_s: rate(prompt.len(), prompt_s),
            rag_gen_tok_s: rate(opts.gen_tokens, gen_s),
            llamacpp_prompt_tok_s: other.map(|(p, _)| p),
            llamacpp_gen_tok_s: other.map(|(_, g)| g),
            llamacpp_first: llama_first && other.is_some(),
        });
    }
    let rates = |f: fn(&PairedRun) -> f64| median(&mut runs.iter().map(f).collect::<Vec<_>>());
    let prompt_tok_s = rates(|r| r.rag_prompt_tok_s);
    let gen_tok_s = rates(|r| r.rag_gen_tok_s);
    let gen_rss = peak_rss_mib();

    // Embedding: the same weights, batched chunks.
    let (embed_tokens, embed_tok_s, embed_rss) = if chunks.is_empty() {
        (None, None, None)
    } else {
        let (n, rate, rss) = bench_embedding(&model, &chunks, opts)?;
        (Some(n), Some(rate), rss)
    };

    let rag = EngineNumbers {
        prompt_tokens: Some(prompt.len()),
        prompt_tok_s: Some(prompt_tok_s),
        gen_tokens: Some(opts.gen_tokens),
        gen_tok_s: Some(gen_tok_s),
        embed_tokens,
        embed_tok_s,
        peak_rss_mib: match (gen_rss, embed_rss) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        },
    };
    // llama.cpp's own report (its medians of the same runs, its embedding and peak memory).
    let (llamacpp, llamacpp_skipped) = match llamacpp.and_then(LlamaCpp::finish) {
        Ok(n) => (Some(n), None),
        Err(e) => (None, Some(e)),
    };
    let file_bytes = std::fs::metadata(&path).map_or(0.0, |m| m.len() as f64);
    Ok(BenchReport {
        format,
        weights: opts.weights.to_string(),
        kernels: kernels_in_use(),
        model_size_mib: file_bytes / 1048576.0,
        model: path,
        threads: config.threads_or_default(),
        rag,
        rag_generation_peak_rss_mib: gen_rss,
        rag_weights_gb_s: Some(file_bytes * gen_tok_s / 1e9),
        rag_embedding_peak_rss_mib: embed_rss,
        llamacpp,
        llamacpp_skipped,
        runs,
    })
}

/// The quantized kernels rag runs here, as the switches left them (`RAG_KERNELS`): "scalar",
/// "AVX2", "AVX2 + VNNI" (AVX-VNNI, or AVX512-VNNI on 256-bit registers), "AVX-512" or
/// "AVX-512 + AMX".
fn kernels_in_use() -> String {
    use rag_model::engine::quant;
    let name = if quant::kernels() == quant::Kernels::Scalar {
        "scalar"
    } else if quant::amx() {
        "AVX-512 + AMX"
    } else if quant::wide() {
        "AVX-512"
    } else if quant::vnni() {
        "AVX2 + VNNI"
    } else {
        "AVX2"
    };
    name.to_string()
}

/// The embedding phase over `chunks`: (tokens, tokens/s, peak RSS).
fn bench_embedding(
    model: &Arc<Model>,
    chunks: &[String],
    opts: &BenchOptions,
) -> Result<(usize, f64, Option<f64>)> {
    reset_peak_rss();
    let embedder = Embedder::new(model.clone(), EmbedOptions::default());
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
    Ok((embed_tokens, embed_tok_s, embed_rss))
}

/// llama.cpp in a child process (`bench_llamacpp.py --serve`): the model loaded and warmed up
/// once, then one timed run (a prompt and the generation after it) per [`LlamaCpp::run`].
struct LlamaCpp {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// The script, its inputs and its stderr; removed on drop.
    dir: PathBuf,
    python: PathBuf,
    /// The prompt's length as llama.cpp tokenizes it (its rates are of this).
    prompt_tokens: usize,
}

impl LlamaCpp {
    fn start(
        python: &Path,
        model: &Path,
        prompt_text: &str,
        chunks: &[String],
        config: &Config,
        opts: &BenchOptions,
    ) -> std::result::Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("rag-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok::<_, String>(p)
        };
        let script = write("bench_llamacpp.py", LLAMACPP_SCRIPT)?;
        let prompt_file = write("prompt.txt", prompt_text)?;
        let embed_file = write("embed.txt", &chunks.concat())?;
        let stderr = std::fs::File::create(dir.join("stderr.txt"))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut cmd = Command::new(python);
        cmd.arg(&script);
        if !chunks.is_empty() {
            cmd.arg("--embed-file").arg(&embed_file);
        }
        let n_ctx = (opts.prompt_tokens + opts.gen_tokens + 64).max(2048);
        cmd.arg("--model")
            .arg(model)
            .arg("--prompt-file")
            .arg(&prompt_file)
            .arg("--threads")
            .arg(config.threads_or_default().to_string())
            .arg("--gen-tokens")
            .arg(opts.gen_tokens.to_string())
            .arg("--n-ctx")
            .arg(n_ctx.to_string())
            .arg("--embed-chunk-tokens")
            .arg(opts.embed_chunk_tokens.to_string())
            .args(["--json", "--serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("could not run {}: {e}", python.display()));
            }
        };
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let mut me = LlamaCpp {
            child,
            stdin,
            stdout: BufReader::new(stdout.expect("piped stdout")).lines(),
            dir,
            python: python.to_path_buf(),
            prompt_tokens: 0,
        };
        #[derive(serde::Deserialize)]
        struct Ready {
            prompt_tokens: usize,
        }
        match me
            .line()
            .and_then(|l| serde_json::from_str::<Ready>(&l).ok())
        {
            Some(r) => {
                me.prompt_tokens = r.prompt_tokens;
                Ok(me)
            }
            None => Err(me.failure()),
        }
    }

    /// The next line the script prints, or `None` at its end.
    fn line(&mut self) -> Option<String> {
        self.stdout.next().and_then(|l| l.ok())
    }

    /// One timed run: (prompt tokens/s, generation tokens/s).
    fn run(&mut self, gen_tokens: usize) -> std::result::Result<(f64, f64), String> {
        #[derive(serde::Deserialize)]
        struct Times {
            prompt_s: f64,
            gen_s: f64,
        }
        let asked = self
            .stdin
            .as_mut()
            .is_some_and(|i| writeln!(i, "run").and_then(|()| i.flush()).is_ok());
        let answer = asked.then(|| self.line()).flatten();
        match answer.and_then(|l| serde_json::from_str::<Times>(&l).ok()) {
            Some(t) => Ok((
                self.prompt_tokens as f64 / t.prompt_s,
                gen_tokens as f64 / t.gen_s,
            )),
            None => Err(self.failure()),
        }
    }

    /// [`LlamaCpp::run`], turning `state` into the error when it fails (llama.cpp is then left
    /// out of the remaining runs and the report says why).
    fn run_or_stop(
        state: &mut std::result::Result<Self, String>,
        gen_tokens: usize,
    ) -> Option<(f64, f64)> {
        let me = state.as_mut().ok()?;
        match me.run(gen_tokens) {
            Ok(t) => Some(t),
            Err(e) => {
                *state = Err(e);
                None
            }
        }
    }

    /// End the runs and read the script's report.
    fn finish(mut self) -> std::result::Result<EngineNumbers, String> {
        if let Some(mut i) = self.stdin.take() {
            let _ = writeln!(i, "done");
        }
        let last = std::iter::from_fn(|| self.line()).last();
        match last.map(|l| serde_json::from_str::<EngineNumbers>(&l)) {
            Some(Ok(n)) if self.child.wait().is_ok_and(|s| s.success()) => Ok(n),
            Some(Err(e)) => Err(format!("unreadable llama.cpp output: {e}")),
            _ => Err(self.failure()),
        }
    }

    /// Why the script stopped: waits for it and reads its stderr.
    fn failure(&mut self) -> String {
        self.stdin = None;
        let _ = self.child.kill();
        let status = self.child.wait();
        let stderr = std::fs::read_to_string(self.dir.join("stderr.txt")).unwrap_or_default();
        // Killed by a signal it did not get from us: llama.cpp itself crashed (its AMX kernels
        // did on one machine).
        #[cfg(unix)]
        if let Ok(Some(sig)) = status
            .as_ref()
            .map(std::os::unix::process::ExitStatusExt::signal)
        {
            if sig != 9 {
                return format!(
                    "llama.cpp crashed (signal {sig}); on a CPU that lists AMX, rebuild it \
                     without AMX with `LLAMACPP_AMX=0 scripts/llamacpp-venv.sh`"
                );
            }
        }
        let tail: Vec<&str> = stderr.trim().lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{} bench_llamacpp.py stopped ({}): {}",
            self.python.display(),
            status.map_or_else(|e| e.to_string(), |s| s.to_string()),
            tail.join(" / ")
        )
    }
}

impl Drop for LlamaCpp {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Reset the peak-RSS mark so the next phase is measured alone (Linux; no-op elsewhere).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}
