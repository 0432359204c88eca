//! Model runtime: GGUF loading, tokenizer from GGUF metadata, Llama forward, generation,
//! embeddings. One GGUF file is enough: tokenizer and chat template come from its metadata.
pub mod cpu;
pub mod embed;
pub mod generate;
pub mod gguf;
pub mod llama;
pub mod minilm;
pub mod template;
pub mod text_embedder;
pub mod tokenizer;
pub mod wordpiece;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use embed::{EmbedOptions, Embedder, Pooling};
pub use generate::{GenerateParams, Generation, StopReason};
pub use gguf::GgufFile;
pub use llama::{HiddenLayer, KvCache, Llama, LlamaConfig, WeightFormat};
pub use template::{ChatTemplate, Prompt, TemplateFamily};
pub use text_embedder::{EmbedderKind, TextEmbedder, DEFAULT_EMBEDDER};
pub use tokenizer::{Tokenizer, TokenizerFamily};

use crate::error::{Error, Result};

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct ModelOptions {
    /// How weights are held; see [`WeightFormat`]. Default: as stored (quantized).
    pub format: WeightFormat,
    /// Cap on the context window (default: the model's training context, at most 8192, so a
    /// 128k-context GGUF does not allocate gigabytes of rotary tables and cache).
    pub max_context: Option<usize>,
    /// Chat template family; default detected from the GGUF.
    pub template: Option<TemplateFamily>,
}

/// The default context cap; see [`ModelOptions::max_context`].
pub const DEFAULT_MAX_CONTEXT: usize = 8192;

/// A loaded model: tokenizer, weights and chat template.
pub struct Model {
    path: PathBuf,
    pub(crate) tokenizer: Arc<Tokenizer>,
    pub(crate) llama: Llama,
    pub(crate) template: ChatTemplate,
    info: ModelInfo,
}

impl Model {
    /// Load a Llama-architecture GGUF.
    pub fn load(path: &Path, opts: &ModelOptions) -> Result<Self> {
        let mut gguf = GgufFile::open(path)?;
        let (info, tokenizer) = inspect(&gguf, opts.template)?;
        // The vocabulary and merges now live in `tokenizer`; drop the header's copy before the
        // weights arrive, so it does not count towards the peak memory of loading.
        gguf.content
            .metadata
            .retain(|k, _| !k.starts_with("tokenizer.ggml."));
        release_freed_memory();
        let max_ctx = opts
            .max_context
            .unwrap_or(DEFAULT_MAX_CONTEXT)
            .min(info.context_length);
        let llama = Llama::load(&mut gguf, opts.format, max_ctx)?;
        let template = ChatTemplate::new(info.template);
        Ok(Self {
            path: path.to_path_buf(),
            tokenizer: Arc::new(tokenizer),
            llama,
            template,
            info,
        })
    }

    /// Read a GGUF's header and describe it, without loading weights.
    pub fn inspect(path: &Path) -> Result<ModelInfo> {
        let gguf = GgufFile::open(path)?;
        Ok(inspect(&gguf, None)?.0)
    }

    /// The file this model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the model is.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The decoder.
    pub fn llama(&self) -> &Llama {
        &self.llama
    }

    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The context window this instance runs with.
    pub fn context_length(&self) -> usize {
        self.llama.max_context()
    }

    /// Render a system + user turn in the model's chat format.
    pub fn chat_prompt(&self, system: &str, user: &str) -> Prompt {
        self.template.render(system, user)
    }
}

/// What `rag model info` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub name: Option<String>,
    pub architecture: String,
    pub file_size: u64,
    pub parameters: usize,
    /// Parameters per GGML type, largest first, e.g. `[("Q4_1", 106M), ("Q8_0", 28M), ...]`.
    pub tensor_types: Vec<(String, usize)>,
    /// The most common weight type (what people call the file's quantization).
    pub quantization: String,
    pub tokenizer: String,
    pub tokenizer_pre: Option<String>,
    pub vocab_size: usize,
    pub template: TemplateFamily,
    pub context_length: usize,
    pub layers: usize,
    pub embedding_length: usize,
    pub feed_forward_length: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub rope_freq_base: f32,
}

impl Serialize for TemplateFamily {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

fn inspect(gguf: &GgufFile, template: Option<TemplateFamily>) -> Result<(ModelInfo, Tokenizer)> {
    let arch = gguf.architecture().unwrap_or("(none)").to_string();
    if arch != "llama" {
        return Err(Error::UnsupportedArchitecture {
            path: gguf.path().to_path_buf(),
            arch,
        });
    }
    let cfg = LlamaConfig::from_gguf(gguf)?;
    let tokenizer = Tokenizer::from_gguf(gguf.content()).map_err(|source| Error::Tokenizer {
        path: gguf.path().to_path_buf(),
        source,
    })?;
    let template = template.unwrap_or_else(|| TemplateFamily::detect(gguf, &tokenizer));
    let tensor_types = gguf.tensor_types();
    let quantization = tensor_types
        .first()
        .map(|(t, _)| t.clone())
        .unwrap_or_default();
    let info = ModelInfo {
        path: gguf.path().to_path_buf(),
        name: gguf.get_str("general.name").map(str::to_string),
        architecture: arch,
        file_size: gguf.file_size(),
        parameters: gguf.parameter_count(),
        tensor_types,
        quantization,
        tokenizer: match tokenizer.family() {
            TokenizerFamily::Gpt2Bpe => "gpt2 (byte-level BPE)".into(),
            TokenizerFamily::LlamaSpm => "llama (SentencePiece)".into(),
        },
        tokenizer_pre: tokenizer.pre().map(str::to_string),
        vocab_size: tokenizer.vocab_size(),
        template,
        context_length: cfg.n_ctx_train,
        layers: cfg.n_layer,
        embedding_length: cfg.n_embd,
        feed_forward_length: cfg.n_ff,
        heads: cfg.n_head,
        kv_heads: cfg.n_kv_head,
        rope_freq_base: cfg.rope_freq_base,
    };
    Ok((info, tokenizer))
}

/// Use exactly `n` compute threads (candle's matmuls and rayon). Call once, before any model
/// work: candle reads the count from `RAYON_NUM_THREADS`, and its pool busy-waits, so running
/// more threads than cores costs far more than it gains.
pub fn set_threads(n: usize) -> Result<()> {
    let n = n.max(1);
    // SAFETY-free in edition 2021; called before any worker thread exists.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        Ok(()) => Ok(()),
        // Already built (e.g. a second call in tests): fine if it has the same size.
        Err(_) if rayon::current_num_threads() == n => Ok(()),
        Err(_) => Err(Error::InvalidOption(format!(
            "the thread pool already runs {} threads; set the thread count before loading a model",
            rayon::current_num_threads()
        ))),
    }
}

/// The number of cores available to this process: the default thread count.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Hand the heap pages freed so far back to the system. Parsing the vocabulary and merges of a
/// GGUF makes ~100k short-lived strings; glibc keeps their pages, and the weights, allocated
/// next in their own mappings, would add to them in the peak memory.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator; no pointer is affected.
    unsafe {
        libc::malloc_trim(0);
    }
}
