//! [`Model`]: one GGUF loaded for use: its tokenizer and chat template (from the file's own
//! metadata) and its Llama weights. Also what `rag model info` shows ([`ModelInfo`]) and the
//! compute thread count.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::hparams::LlamaConfig;
use crate::llama::{Llama, WeightFormat};
use crate::template::{ChatTemplate, Prompt, TemplateFamily};
use crate::tokenizer::{Tokenizer, TokenizerFamily};

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
        let max_ctx = context_cap(opts, info.context_length);
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

    /// What a prompt needs of the model at `path` (tokenizer, chat template, context window as
    /// [`Model::load`] would cap it), read from its header alone: a fraction of a second, and
    /// no weights in memory.
    pub fn prompt_format(path: &Path, opts: &ModelOptions) -> Result<PromptFormat> {
        let gguf = GgufFile::open(path)?;
        let (info, tokenizer) = inspect(&gguf, opts.template)?;
        Ok(PromptFormat {
            tokenizer: Arc::new(tokenizer),
            template: ChatTemplate::new(info.template),
            context: context_cap(opts, info.context_length),
        })
    }

    /// This model's [`PromptFormat`] (shares its tokenizer).
    pub fn format(&self) -> PromptFormat {
        PromptFormat {
            tokenizer: Arc::clone(&self.tokenizer),
            template: self.template.clone(),
            context: self.context_length(),
        }
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

/// The context window a model runs with: the cap asked for (default [`DEFAULT_MAX_CONTEXT`]),
/// at most the training context.
fn context_cap(opts: &ModelOptions, trained: usize) -> usize {
    opts.max_context
        .unwrap_or(DEFAULT_MAX_CONTEXT)
        .min(trained)
        .max(1)
}

/// What a prompt needs of a model: its tokenizer, chat template and context window, without
/// its weights ([`Model::prompt_format`], [`Model::format`]). Cheap to clone.
#[derive(Clone)]
pub struct PromptFormat {
    tokenizer: Arc<Tokenizer>,
    template: ChatTemplate,
    context: usize,
}

impl PromptFormat {
    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The context window in tokens.
    pub fn context_length(&self) -> usize {
        self.context
    }

    /// Render a system + user turn in the model's chat format.
    pub fn chat_prompt(&self, system: &str, user: &str) -> Prompt {
        self.template.render(system, user)
    }

    /// Tokens of `text` as plain text (no BOS, special tokens not parsed).
    pub fn count(&self, text: &str) -> usize {
        self.tokenizer.encode(text, false, false).len()
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
        return Err(ModelError::UnsupportedArchitecture {
            path: gguf.path().to_path_buf(),
            arch,
        });
    }
    let cfg = LlamaConfig::from_gguf(gguf)?;
    let tokenizer =
        Tokenizer::from_gguf(gguf.content()).map_err(|source| ModelError::Tokenizer {
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
        Err(_) => Err(ModelError::InvalidInput(format!(
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
