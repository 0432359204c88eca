//! The one error type of this crate. Messages name the index directory and say what to do next.

use std::path::{Path, PathBuf};

/// Everything that can go wrong opening, writing or searching an index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// The directory holds no committed index.
    #[error("no index at {}: ingest documents into it first", dir.display())]
    NotFound { dir: PathBuf },

    /// Another writer holds the directory's lock file.
    #[error(
        "another writer (an ingest) is running on {} (lock held); wait for it to finish",
        dir.display()
    )]
    Locked { dir: PathBuf },

    /// The index was built with a different embedding model or dimension.
    #[error(
        "index at {} was built with embedder {have_id} (dim {have_dim}), not {want_id} \
         (dim {want_dim}): query it with the embedder that built it, or rebuild it with the new one",
        dir.display()
    )]
    EmbedderMismatch {
        dir: PathBuf,
        have_id: String,
        have_dim: usize,
        want_id: String,
        want_dim: usize,
    },

    /// The files on disk contradict each other in a way recovery cannot repair.
    #[error("index at {} is damaged ({detail}): rebuild it from the documents", dir.display())]
    Corrupt { dir: PathBuf, detail: String },

    /// The index was written by a newer (or much older) version of rag.
    #[error(
        "index at {} has on-disk format version {found}; this build reads version {supported}: \
         rebuild it from the documents, or use a matching rag",
        dir.display()
    )]
    FormatVersion {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },

    /// A vector handed in has the wrong number of components.
    #[error("vector has dimension {found}, the index expects {expected}")]
    DimensionMismatch { expected: usize, found: usize },

    /// A vector handed in is all zeros or contains NaN/infinity, so it cannot be normalised.
    #[error("vector {what} is zero or not finite; cannot L2-normalise it")]
    InvalidVector { what: String },

    /// A file operation failed.
    #[error("I/O error on {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The BM25 / stored-fields engine failed.
    #[error(transparent)]
    Tantivy(#[from] tantivy::TantivyError),

    /// A store address (`--store`) that cannot be used.
    #[error("store address {address} cannot be used: {reason}")]
    BadAddress { address: String, reason: String },

    /// A remote store (Milvus) failed or could not be reached.
    #[error("{store}: {doing} failed: {detail}")]
    Remote {
        store: String,
        doing: String,
        detail: String,
    },

    /// An earlier `commit` or staging step failed half-way; the writer refuses further work.
    /// Nothing committed is lost: drop the writer and open a new one.
    /// A search filters by date on a store written before rag recorded file dates.
    #[error(
        "{store} was written before rag recorded when files were modified, so it cannot filter \
         by date: ingest again with --reindex to record them"
    )]
    NoDates { store: String },

    #[error("the index writer on {} failed earlier ({reason}); drop it and open a new one", dir.display())]
    WriterPoisoned { dir: PathBuf, reason: String },
}

/// Attach a path to `std::io::Error`s.
pub(crate) trait IoResultExt<T> {
    fn at(self, path: &Path) -> Result<T, IndexError>;
}

impl<T> IoResultExt<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T, IndexError> {
        self.map_err(|source| IndexError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

pub(crate) fn corrupt(dir: &Path, detail: impl Into<String>) -> IndexError {
    IndexError::Corrupt {
        dir: dir.to_path_buf(),
        detail: detail.into(),
    }
}
