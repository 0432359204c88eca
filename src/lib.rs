//! rag: answer questions over a private folder of documents, offline.
pub mod model;
