//! rag: answer questions over a private folder of documents, offline, grounded in them.
//!
//! [`Rag`] is the front door: open an index directory, [`Rag::ingest`] files and folders,
//! [`Rag::search`] them, and [`Rag::ask`] questions that are answered from the passages found,
//! with citations, or with "I could not find this in the documents." when they do not hold the
//! answer. [`Config`] names the models; everything else has a documented default.
//!
//! ```no_run
//! use rag::{Config, Rag};
//!
//! let rag = Rag::open(".rag", Config::new("/home/me/.cache/rag"))?;
//! rag.ingest(&["docs".into()])?;
//! let answer = rag.ask_streaming("Who designed the bridge?", &mut |piece| print!("{piece}"))?;
//! for c in &answer.citations {
//!     println!("\n[{}] {}", c.n, c.path);
//! }
//! # Ok::<(), rag::Error>(())
//! ```
//!
//! Underneath: the model runtime is the `rag-model` crate (GGUF, tokenizers, the CPU engine,
//! generation, embedders), the store the `rag-index` crate (tantivy BM25 + hnsw_rs vectors), the
//! loaders and chunker the `rag-ingest` crate. `docs/ARCHITECTURE.md` has the map.
pub mod answerability;
mod ask;
mod cite;
mod config;
mod embedder;
mod error;
mod filter;
mod followup;
mod ingest;
mod prompt;
mod quote;
mod rag;
mod retrieve;
mod server;
mod store;

pub use answerability::Decision;
pub use ask::{AbstainReason, Answer, AnswerMode, AskOptions, AskTimings, Citation, OnText, Quote};
pub use config::{default_model_in, Config, DEFAULT_MODEL_FILE, EMBED_STATS_DIR};
pub use error::{Error, Result};
pub use filter::parse_filters;
pub use followup::standalone_question;
pub use ingest::{FileStatus, IngestEvent, IngestOptions, IngestReport, StageTimes};
pub use prompt::{source_label, Passage, NOT_FOUND};
pub use quote::QuoteOptions;
pub use rag::{Document, IndexInfo, Rag, Retrieval, Search};
pub use rag_index::{ChunkRecord, CopyReport, Filter, Fusion, Hit, Retriever};
pub use rag_ingest::{ChunkOptions, WalkOptions};
pub use rag_model::{
    EmbedderKind, GenerateParams, HiddenLayer, MiniLmRuntime, Pooling, StopReason, TemplateFamily,
    MINILM_DIR,
};
pub use retrieve::{
    Mode, RetrieveOptions, LLAMA_DENSE_WEIGHT, LLAMA_FUSION, MINILM_DENSE_WEIGHT, MINILM_FUSION,
};
pub use server::{Server, ServerOptions};
pub use store::{copy_index, Location};
