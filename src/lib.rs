//! rag: answer questions over a private folder of documents, offline, grounded in them.
//!
//! [`Rag`] is the front door: open an index directory, [`Rag::ingest`] files and folders,
//! [`Rag::search`] them, and [`Rag::ask`] questions that are answered from the passages found,
//! with citations, or with "I could not find this in the documents." when they do not hold the
//! answer.
//!
//! Underneath, the model runtime ([`model`]) loads any Llama-architecture GGUF: tokenizer and
//! chat template come from the file's own metadata, generation streams text, and embeddings pool
//! hidden states. The store is the `rag-index` crate (tantivy BM25 + hnsw_rs vectors), the
//! loaders and chunker the `rag-ingest` crate.
pub mod answer;
pub mod bench;
pub mod config;
pub mod error;
pub mod eval;
pub mod model;
pub mod pipeline;
mod rag;
pub mod retrieve;

pub use config::{Config, DEFAULT_MODEL_FILE};
pub use error::{Error, Result};
pub use model::{GenerateParams, Generation, Model, ModelInfo, ModelOptions};
pub use pipeline::{IngestOptions, IngestReport};
pub use rag::{
    load_embedder, AbstainReason, Answer, AskOptions, AskTimings, Citation, EmbedderUse, Rag,
};
pub use rag_index::{Hit, Retriever};
pub use retrieve::{Mode, RetrieveOptions};
