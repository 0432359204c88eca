//! [`Config`]: which models serve an index, and how they run. Built in code with documented
//! defaults; the library reads no environment variable and no file. (The `rag` command builds
//! one from its flags, the environment and a config file.)
use std::path::{Path, PathBuf};

use rag_model::{
    EmbedderKind, HiddenLayer, MiniLmRuntime, ModelOptions, Pooling, TemplateFamily, MINILM_DIR,
};

use crate::error::{Error, Result};

/// File name of the default chat model inside `home/models`.
///
/// ```
/// let home = std::path::Path::new("/home/me/.cache/rag");
/// assert!(rag::default_model_in(home).ends_with(rag::DEFAULT_MODEL_FILE));
/// ```
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The folder in `home` where a Llama embedder keeps its calibration statistics
/// ([`rag_model::EmbedOptions::stats_dir`]).
pub const EMBED_STATS_DIR: &str = "embed-stats";

/// Which models serve an index, and how they run.
///
/// ```
/// use rag::{Config, EmbedderKind};
/// let config = Config::new("/home/me/.cache/rag")
///     .model("/models/llama-2-7b-chat.Q4_K_M.gguf")
///     .embedder(EmbedderKind::MiniLm)
///     .threads(4);
/// assert_eq!(config.threads_or_default(), 4);
/// ```
#[derive(Clone, PartialEq)]
pub struct Config {
    /// The cache folder: the default models live in `home/models` (the `rag` command uses
    /// `$RAG_HOME`, default `~/.cache/rag`).
    pub home: PathBuf,
    /// The chat model, a Llama-architecture GGUF. Default `None`: [`DEFAULT_MODEL_FILE`]
    /// (SmolLM2-135M-Instruct, Q4_1) in `home/models`.
    pub model: Option<PathBuf>,
    /// The GGUF whose hidden states embed chunks and queries for a Llama-embedder index.
    /// Default `None`: the default model, whatever [`Config::model`] is: embedding a corpus
    /// with a 7B model on a CPU takes hours, and an index must be queried by the model that
    /// built it.
    pub embed_model: Option<PathBuf>,
    /// The all-MiniLM-L6-v2 folder (`config.json`, `tokenizer.json`, `model.safetensors`).
    /// Default `None`: [`MINILM_DIR`] in `home/models`.
    pub minilm_dir: Option<PathBuf>,
    /// The embedder of a new index. Default `None`: the one an existing index was built with,
    /// else [`rag_model::DEFAULT_EMBEDDER`] (MiniLM, the one that measured best). Queries always
    /// use the index's own.
    pub embedder: Option<EmbedderKind>,
    /// What runs MiniLM for a new or rebuilt index. Default `None`: rag's engine (Q8_0, ~4x
    /// faster); [`MiniLmRuntime::Candle`] is candle's f32 BERT, the reference. An existing
    /// index is always served by the runtime that made its vectors.
    pub minilm_runtime: Option<MiniLmRuntime>,
    /// Pooling of a new Llama-embedder index. Default `None`: the index's own, or mean.
    pub embed_pooling: Option<Pooling>,
    /// Hidden layer of a new Llama-embedder index. Default `None`: the index's own, or the
    /// final one.
    pub embed_layer: Option<HiddenLayer>,
    /// Whether a new Llama-embedder index standardizes its vectors
    /// ([`rag_model::EmbedOptions::standardize`]). Default `None`: as the index was built, or
    /// yes for a new one.
    pub embed_standardize: Option<bool>,
    /// Compute threads. Default `None`: the number of cores. Never more: the kernels' pool
    /// busy-waits, so extra threads cost far more than they gain.
    pub threads: Option<usize>,
    /// Chat template family. Default `None`: what the GGUF says.
    pub template: Option<TemplateFamily>,
    /// Cap on the context window in tokens. Default `None`: the model's, at most 8,192.
    pub context: Option<usize>,
    /// A remote store instead of the index directory: `milvus://host:port[/collection]`, or
    /// `https://endpoint[/collection]` for Zilliz Cloud (see [`crate::Location::parse`]).
    /// Default `None`: the embedded store in the directory [`crate::Rag::open`] is given.
    pub store: Option<String>,
    /// The remote store's token (a Zilliz Cloud API key, or `user:password`). Default `None`.
    pub store_token: Option<String>,
}

/// Every field but the store token, which shows as `[redacted]`.
///
/// ```
/// let mut c = rag::Config::new("/cache");
/// c.store_token = Some("secret".into());
/// assert!(!format!("{c:?}").contains("secret"));
/// ```
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("home", &self.home)
            .field("model", &self.model)
            .field("embed_model", &self.embed_model)
            .field("minilm_dir", &self.minilm_dir)
            .field("embedder", &self.embedder)
            .field("minilm_runtime", &self.minilm_runtime)
            .field("embed_pooling", &self.embed_pooling)
            .field("embed_layer", &self.embed_layer)
            .field("embed_standardize", &self.embed_standardize)
            .field("threads", &self.threads)
            .field("template", &self.template)
            .field("context", &self.context)
            .field("store", &self.store)
            .field(
                "store_token",
                &self.store_token.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

impl Config {
    /// Every default, with the cache folder `home`.
    ///
    /// ```
    /// let config = rag::Config::new("/home/me/.cache/rag");
    /// assert_eq!(config.model, None); // the default model, in home/models
    /// ```
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Self {
            home: home.into(),
            model: None,
            embed_model: None,
            minilm_dir: None,
            embedder: None,
            minilm_runtime: None,
            embed_pooling: None,
            embed_layer: None,
            embed_standardize: None,
            threads: None,
            template: None,
            context: None,
            store: None,
            store_token: None,
        }
    }

    /// Set [`Config::model`].
    ///
    /// ```
    /// let c = rag::Config::new("/cache").model("/models/llama-2-7b-chat.Q4_K_M.gguf");
    /// assert_eq!(c.model_path().unwrap(), std::path::Path::new("/models/llama-2-7b-chat.Q4_K_M.gguf"));
    /// ```
    pub fn model(mut self, path: impl Into<PathBuf>) -> Self {
        self.model = Some(path.into());
        self
    }

    /// Set [`Config::embed_model`].
    ///
    /// ```
    /// let c = rag::Config::new("/cache").embed_model("/models/small.gguf");
    /// assert!(c.embed_model.is_some());
    /// ```
    pub fn embed_model(mut self, path: impl Into<PathBuf>) -> Self {
        self.embed_model = Some(path.into());
        self
    }

    /// Set [`Config::embedder`].
    ///
    /// ```
    /// let c = rag::Config::new("/cache").embedder(rag::EmbedderKind::Llama);
    /// assert_eq!(c.embedder, Some(rag::EmbedderKind::Llama));
    /// ```
    pub fn embedder(mut self, kind: EmbedderKind) -> Self {
        self.embedder = Some(kind);
        self
    }

    /// Set [`Config::threads`].
    ///
    /// ```
    /// assert_eq!(rag::Config::new("/cache").threads(2).threads_or_default(), 2);
    /// ```
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// Set [`Config::context`].
    ///
    /// ```
    /// assert_eq!(rag::Config::new("/cache").context(4096).context, Some(4096));
    /// ```
    pub fn context(mut self, tokens: usize) -> Self {
        self.context = Some(tokens);
        self
    }

    /// Set [`Config::template`].
    ///
    /// ```
    /// let c = rag::Config::new("/cache").template(rag::TemplateFamily::Llama2);
    /// assert_eq!(c.template, Some(rag::TemplateFamily::Llama2));
    /// ```
    pub fn template(mut self, family: TemplateFamily) -> Self {
        self.template = Some(family);
        self
    }

    /// The thread count to run with: [`Config::threads`], else the number of cores.
    ///
    /// ```
    /// assert!(rag::Config::new("/cache").threads_or_default() >= 1);
    /// ```
    pub fn threads_or_default(&self) -> usize {
        self.threads.unwrap_or_else(rag_model::default_threads)
    }

    /// The chat model's path; for the default model, an error that says how to fetch it when
    /// it is missing.
    ///
    /// ```
    /// let err = rag::Config::new("/nonexistent").model_path().unwrap_err();
    /// assert!(err.to_string().contains("fetch-models.sh"));
    /// ```
    pub fn model_path(&self) -> Result<PathBuf> {
        self.given_or_default(&self.model, "chat model")
    }

    /// The embedding model's path (Llama embedder), checked like [`Config::model_path`].
    ///
    /// ```
    /// let c = rag::Config::new("/cache").embed_model("/models/small.gguf");
    /// assert_eq!(c.embed_model_path().unwrap(), std::path::Path::new("/models/small.gguf"));
    /// ```
    pub fn embed_model_path(&self) -> Result<PathBuf> {
        self.given_or_default(&self.embed_model, "embedding model")
    }

    /// The MiniLM folder; for the default one, an error that says how to fetch it when it is
    /// missing.
    ///
    /// ```
    /// let err = rag::Config::new("/nonexistent").minilm_path().unwrap_err();
    /// assert!(err.to_string().contains("--minilm"));
    /// ```
    pub fn minilm_path(&self) -> Result<PathBuf> {
        if let Some(dir) = &self.minilm_dir {
            return Ok(dir.clone());
        }
        let dir = self.home.join("models").join(MINILM_DIR);
        if !dir.join("model.safetensors").is_file() {
            return Err(Error::DefaultModelMissing {
                what: "all-MiniLM-L6-v2 (the default embedder)",
                path: dir,
                fetch: "scripts/fetch-models.sh --minilm",
            });
        }
        Ok(dir)
    }

    fn given_or_default(&self, given: &Option<PathBuf>, what: &'static str) -> Result<PathBuf> {
        if let Some(p) = given {
            return Ok(p.clone());
        }
        let path = default_model_in(&self.home);
        if !path.exists() {
            return Err(Error::DefaultModelMissing {
                what,
                path,
                fetch: "scripts/fetch-models.sh",
            });
        }
        Ok(path)
    }

    /// Model loading options from this config (weights as stored, on the CPU engine).
    ///
    /// ```
    /// let opts = rag::Config::new("/cache").context(2048).model_options();
    /// assert_eq!(opts.max_context, Some(2048));
    /// ```
    pub fn model_options(&self) -> ModelOptions {
        ModelOptions {
            format: Default::default(),
            max_context: self.context,
            template: self.template,
        }
    }
}

/// Where the default chat model lives under a cache folder.
///
/// ```
/// let path = rag::default_model_in("/home/me/.cache/rag".as_ref());
/// assert_eq!(path, std::path::Path::new("/home/me/.cache/rag/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
/// ```
pub fn default_model_in(home: &Path) -> PathBuf {
    home.join("models").join(DEFAULT_MODEL_FILE)
}
