//! rag: answer questions over a private folder of documents, offline, grounded in them.
//!
//! The model runtime ([`model`]) loads any Llama-architecture GGUF: tokenizer and chat template
//! come from the file's own metadata, generation streams text, and embeddings pool hidden states.
pub mod bench;
pub mod config;
pub mod error;
pub mod model;
pub mod pipeline;

pub use config::{Config, DEFAULT_MODEL_FILE};
pub use error::{Error, Result};
pub use model::{GenerateParams, Generation, Model, ModelInfo, ModelOptions};
