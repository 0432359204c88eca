//! The library's error type. Every variant that concerns a file names it and says what to do.
use std::path::PathBuf;

use crate::model::tokenizer::TokenizerError;

/// Errors from the rag library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file does not exist.
    #[error("model file {path} does not exist: fetch the default model with scripts/fetch-models.sh, or pass --model PATH (or set RAG_MODEL) to a GGUF file")]
    ModelNotFound { path: PathBuf },

    /// The default model is not in the cache yet.
    #[error("no model given and the default model is not at {path}: run scripts/fetch-models.sh (or `make model`), or pass --model PATH to a Llama-architecture GGUF")]
    DefaultModelMissing { path: PathBuf },

    /// A file of the MiniLM sentence embedder is missing.
    #[error("MiniLM model file {path} does not exist: run scripts/fetch-models.sh --minilm (or `make model`) to fetch all-MiniLM-L6-v2")]
    MiniLmMissing { path: PathBuf },

    /// The file exists but is not GGUF.
    #[error("{path} is not a GGUF file (its first bytes are {magic:?}, expected \"GGUF\"): rag reads Llama-architecture models in GGUF format, e.g. llama-2-7b-chat.Q4_K_M.gguf")]
    NotGguf { path: PathBuf, magic: String },

    /// The GGUF header or tensor data cannot be read in full.
    #[error("{path} is a damaged or truncated GGUF file ({detail}): download it again")]
    CorruptGguf { path: PathBuf, detail: String },

    /// The GGUF holds a model architecture rag does not run.
    #[error("{path} holds a '{arch}' model; rag runs the 'llama' architecture (Llama 1/2/3, SmolLM, TinyLlama, Mistral converted as llama)")]
    UnsupportedArchitecture { path: PathBuf, arch: String },

    /// A hyperparameter the forward needs is missing or inconsistent.
    #[error("{path}: {detail}")]
    BadModel { path: PathBuf, detail: String },

    /// The tokenizer described by the GGUF metadata cannot be built.
    #[error("{path}: {source}")]
    Tokenizer {
        path: PathBuf,
        #[source]
        source: TokenizerError,
    },

    /// A prompt does not fit in the model's context window.
    #[error("the prompt is {tokens} tokens but the model's context holds {context} (with {reserved} kept for the answer): shorten the input or lower --max-tokens")]
    PromptTooLong {
        tokens: usize,
        context: usize,
        reserved: usize,
    },

    /// An option has a value that cannot work.
    #[error("{0}")]
    InvalidOption(String),

    /// The configuration file cannot be read.
    #[error("config file {path}: {detail}")]
    Config { path: PathBuf, detail: String },

    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The index exists but holds no passage.
    #[error("the index at {dir} holds no passages: run `rag ingest PATH` on a folder with txt, md, html or pdf files first")]
    EmptyIndex { dir: PathBuf },

    /// An error of the index (store) layer; its message names the index directory.
    #[error(transparent)]
    Index(#[from] rag_index::IndexError),

    /// An error inside the tensor library.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
