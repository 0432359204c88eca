//! The vocabulary tables both tokenizer algorithms share, and what can go wrong reading them
//! from GGUF metadata.
use std::collections::HashMap;

/// Errors building a tokenizer from GGUF metadata.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("GGUF metadata is missing the key '{0}'")]
    MissingKey(&'static str),
    #[error("GGUF metadata key '{key}' has the wrong type: expected {expected}")]
    WrongType {
        key: &'static str,
        expected: &'static str,
    },
    #[error("unsupported tokenizer.ggml.model '{0}' (supported: gpt2, llama)")]
    UnsupportedModel(String),
    #[error("unsupported tokenizer.ggml.pre '{name}' (supported: {supported})")]
    UnsupportedPre { name: String, supported: String },
    #[error(
        "GGUF metadata key '{key}' has {found} entries but tokenizer.ggml.tokens has {expected}"
    )]
    LengthMismatch {
        key: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("GGUF metadata key 'tokenizer.ggml.tokens' is empty")]
    EmptyVocabulary,
    #[error("could not build the pre-tokenizer for tokenizer.ggml.pre '{pre}': {message}")]
    Regex { pre: String, message: String },
}

/// Token types of `tokenizer.ggml.token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TokenKind {
    Undefined,
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    pub(super) fn from_gguf(t: i64) -> Self {
        match t {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => Self::Undefined,
        }
    }
}

/// The vocabulary tables shared by both algorithms.
pub(super) struct Vocab {
    pub(super) tokens: Vec<String>,
    pub(super) token_to_id: HashMap<String, u32>,
    pub(super) scores: Vec<f32>,
    pub(super) kinds: Vec<TokenKind>,
    /// SPM byte fallback: the `<0xXX>` token for each byte (or the one-byte token).
    pub(super) byte_tokens: [Option<u32>; 256],
}

impl Vocab {
    pub(super) fn lookup(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    pub(super) fn score(&self, id: u32) -> f32 {
        self.scores.get(id as usize).copied().unwrap_or(0.0)
    }

    pub(super) fn kind(&self, id: u32) -> Option<TokenKind> {
        self.kinds.get(id as usize).copied()
    }

    pub(super) fn byte_token(&self, b: u8) -> Option<u32> {
        self.byte_tokens[b as usize]
    }
}
