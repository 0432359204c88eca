//! Turning a folder of files into normalised text and token-sized chunks, with no model code.
//!
//! The pipeline is `walk` → `load` → `chunk`:
//! - [`walk()`] lists the files to ingest (ignore files, hidden files, symlink loops, size limit) and
//!   reports every file it will not ingest, with the reason;
//! - [`load()`] / [`load_bytes()`] turn one file (plain text, Markdown, HTML or PDF) into a [`Document`]:
//!   normalised text plus headings, page offsets, a content hash and warnings; a bad file is a
//!   [`LoadError`] that says what to do, never a panic;
//! - [`chunk()`] cuts a document into [`Chunk`]s sized in the embedder's tokens (through
//!   [`TokenCounter`]), preferring heading, paragraph and sentence boundaries.
//!
//! This crate must not depend on candle or on the root `rag` crate: the root crate implements
//! [`TokenCounter`] with the model's tokenizer.

mod chunk;
mod document;
mod loaders;
mod normalize;
mod walk;

pub use chunk::{chunk, Chunk, ChunkOptions, TokenCounter};
pub use document::{doc_kind, DocKind, Document, Heading, LoadError};
pub use loaders::{content_hash, load, load_bytes};
pub use normalize::normalize;
pub use walk::{walk, WalkEntry, WalkOptions};
