//! [`ModelError`]: what can go wrong loading and running a model. Every variant that concerns a
//! file names it, and each message says what to do next. Messages name no command-line flag:
//! the application that uses this crate adds its own hints.
use std::path::PathBuf;

use crate::tokenizer::TokenizerError;

/// Errors of the model runtime.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model file does not exist.
    #[error("model file {path} does not exist: check the path, or download the model first")]
    ModelNotFound { path: PathBuf },

    /// A file a model needs is missing (e.g. MiniLM's `model.safetensors`).
    #[error("{what} file {path} does not exist: put the model's files in that folder (config.json, tokenizer.json, model.safetensors)")]
    MissingFile { path: PathBuf, what: &'static str },

    /// The file exists but is not GGUF.
    #[error("{path} is not a GGUF file (its first bytes are {magic:?}, expected \"GGUF\"): this runtime reads Llama-architecture models in GGUF format, e.g. llama-2-7b-chat.Q4_K_M.gguf")]
    NotGguf { path: PathBuf, magic: String },

    /// The GGUF header or tensor data cannot be read in full.
    #[error("{path} is a damaged or truncated GGUF file ({detail}): download it again")]
    CorruptGguf { path: PathBuf, detail: String },

    /// The GGUF holds a model architecture this runtime does not run.
    #[error("{path} holds a '{arch}' model; this runtime runs the 'llama' architecture (Llama 1/2/3, SmolLM, TinyLlama, Mistral converted as llama)")]
    UnsupportedArchitecture { path: PathBuf, arch: String },

    /// A hyperparameter or tensor the forward needs is missing or inconsistent.
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
    #[error("the prompt is {tokens} tokens but the model's context holds {context} (with {reserved} kept for the answer): shorten the input or ask for fewer new tokens")]
    PromptTooLong {
        tokens: usize,
        context: usize,
        reserved: usize,
    },

    /// An argument has a value that cannot work (an empty prompt, a token outside the
    /// vocabulary, a cache of the wrong model, ...).
    #[error("{0}")]
    InvalidInput(String),

    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An error inside the tensor library.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The result type of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
