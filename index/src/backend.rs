//! The store interface: what `ingest`, `search`, `ask`, `eval` and `serve` need of a store,
//! so that none of them knows which store it has. Two implementations: the embedded store of
//! this crate ([`crate::Index`] / [`crate::IndexWriter`]) and, with the `milvus` feature, a
//! Milvus or Zilliz Cloud collection ([`crate::milvus`]).
//!
//! ```
//! # fn run(store: &dyn rag_index::Store) -> Result<(), rag_index::IndexError> {
//! let filter = rag_index::Filter::path_prefix("/home/me/notes/");
//! for hit in store.bm25("harbour bridge", 5, &filter)? {
//!     println!("{:.2} {}", hit.score, hit.chunk.path);
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::IndexError;
use crate::fusion::SearchOptions;
use crate::manifest::Manifest;
use crate::record::{ChunkRecord, Hit, NewChunk};

/// Whether `s` names a remote store (`milvus://`, `milvus+https://`, `http://`, `https://`)
/// rather than a directory. Known whether or not this build has the `milvus` feature, so a
/// build without it can say why it cannot open one.
///
/// ```
/// assert!(rag_index::is_remote("milvus://127.0.0.1:19530/notes"));
/// assert!(!rag_index::is_remote("./notes-index"));
/// ```
pub fn is_remote(s: &str) -> bool {
    ["milvus://", "milvus+https://", "http://", "https://"]
        .iter()
        .any(|p| s.starts_with(p))
}

/// Which chunks a search may return: every condition set must hold. The default lets every
/// chunk through.
///
/// ```
/// let f = rag_index::Filter::path_prefix("/docs/a/");
/// assert!(f.matches("/docs/a/x.txt", None) && !f.matches("/docs/b/x.txt", None));
/// let pdf = f.with_file_types(["pdf"]);
/// assert!(pdf.matches("/docs/a/report.PDF", None) && !pdf.matches("/docs/a/x.txt", None));
/// let recent = rag_index::Filter { modified_after: Some(1_700_000_000), ..Default::default() };
/// assert!(recent.matches("/a.txt", Some(1_750_000_000)));
/// assert!(!recent.matches("/a.txt", Some(1_600_000_000)) && !recent.matches("/a.txt", None));
/// assert!(rag_index::Filter::default().matches("anything", None));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Only chunks of documents whose stored path starts with this (byte prefix).
    pub path_prefix: Option<String>,
    /// Only chunks of documents whose file name ends in one of these extensions (lower case,
    /// no dot; a path's extension is compared case-insensitively). Empty: any type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_types: Vec<String>,
    /// Only chunks of documents whose file was modified at or after this time (Unix
    /// seconds). A document whose time the store does not know does not pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_after: Option<i64>,
    /// Only chunks of documents whose file was modified before this time (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_before: Option<i64>,
}

impl Filter {
    /// Chunks of documents under `prefix` only.
    pub fn path_prefix(prefix: impl Into<String>) -> Self {
        Filter {
            path_prefix: Some(prefix.into()),
            ..Filter::default()
        }
    }

    /// This filter, restricted to documents with one of these extensions (`"pdf"`, `".md"`:
    /// any case, the dot optional).
    pub fn with_file_types<S: AsRef<str>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        for t in types {
            let t = t.as_ref().trim().trim_start_matches('.').to_lowercase();
            if !t.is_empty() && !self.file_types.contains(&t) {
                self.file_types.push(t);
            }
        }
        self
    }

    /// Whether the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        self.path_prefix.is_none() && self.file_types.is_empty() && !self.has_dates()
    }

    /// Whether the filter compares modification times.
    pub fn has_dates(&self) -> bool {
        self.modified_after.is_some() || self.modified_before.is_some()
    }

    /// Whether a chunk of the document at `path`, modified at `modified` (Unix seconds, if
    /// known), passes.
    pub fn matches(&self, path: &str, modified: Option<i64>) -> bool {
        let dated = match modified {
            Some(m) => {
                self.modified_after.is_none_or(|a| m >= a)
                    && self.modified_before.is_none_or(|b| m < b)
            }
            None => !self.has_dates(),
        };
        dated
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
            && (self.file_types.is_empty() || {
                let ext = extension(path);
                self.file_types
                    .iter()
                    .any(|t| ext.chars().flat_map(char::to_lowercase).eq(t.chars()))
            })
    }
}

/// The extension of the file name at the end of `path`, as written (`""` when it has none).
fn extension(path: &str) -> &str {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext,
        _ => "",
    }
}

/// The read side of a store: one consistent view of what was committed.
///
/// Scores: BM25 scores are comparable only within one store (the embedded store and Milvus
/// compute them differently); ranks are what fusion and callers rely on.
pub trait Store: Send + Sync {
    /// Where the store is, for messages: a directory or a `milvus://` address.
    fn location(&self) -> String;
    /// Embedder, counts and analyzer of this view.
    fn manifest(&self) -> &Manifest;
    /// Refuse query vectors of an embedder other than the one that built the store.
    fn check_embedder(&self, id: &str, dim: usize) -> Result<(), IndexError>;
    /// path -> content hash of every document.
    fn documents(&self) -> HashMap<String, String>;
    /// Live chunks.
    fn len(&self) -> usize;
    /// Whether the store holds no chunk.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// One chunk by id; `None` if it does not exist.
    fn chunk(&self, chunk_id: u64) -> Result<Option<ChunkRecord>, IndexError>;
    /// BM25, best first.
    fn bm25(&self, query: &str, k: usize, filter: &Filter) -> Result<Vec<Hit>, IndexError>;
    /// Approximate nearest neighbours (HNSW, cosine), best first.
    fn dense(&self, vector: &[f32], k: usize, filter: &Filter) -> Result<Vec<Hit>, IndexError>;
    /// Exact nearest neighbours, best first (the reference HNSW is measured against).
    fn exact(&self, vector: &[f32], k: usize, filter: &Filter) -> Result<Vec<Hit>, IndexError>;
    /// BM25 and HNSW fused by reciprocal rank (`opts.rrf_k`), best first.
    fn hybrid(
        &self,
        query: &str,
        vector: &[f32],
        opts: &SearchOptions,
        filter: &Filter,
    ) -> Result<Vec<Hit>, IndexError>;
    /// The terms of `text` as BM25 indexes it, in order, repeats kept.
    fn analyze(&self, text: &str) -> Vec<String>;
    /// The distinct analyzed terms of `query` with their BM25 inverse document frequency,
    /// `ln(1 + (N - n + 0.5) / (n + 0.5))`.
    fn term_weights(&self, query: &str) -> Result<Vec<(String, f32)>, IndexError>;
    /// Every chunk of the document at `path` with its stored (unit) vector, in chunk order:
    /// what copying a store into another needs, without embedding again.
    fn export_document(&self, path: &str) -> Result<Vec<NewChunk>, IndexError>;
}

/// The write side of a store. Changes become visible to new views after
/// [`StoreWriter::commit`]; a document's chunks are replaced as a whole.
pub trait StoreWriter: Send {
    /// Where the store is, for messages.
    fn location(&self) -> String;
    /// Embedder and counts as of the last commit.
    fn manifest(&self) -> &Manifest;
    /// path -> content hash of every committed document. A store may also list a document
    /// whose first write was cut short, with an empty hash, so that an ingest redoes it (or
    /// removes it, and what it left, when the file is gone).
    fn documents(&self) -> HashMap<String, String>;
    /// Replace all chunks of `path` with these. A document with no chunks is still recorded.
    fn replace_document(
        &mut self,
        path: &str,
        content_hash: &str,
        chunks: Vec<NewChunk>,
    ) -> Result<(), IndexError>;
    /// Remove `path` and all its chunks.
    fn remove_document(&mut self, path: &str) -> Result<(), IndexError>;
    /// Make the changes durable and visible.
    fn commit(&mut self) -> Result<(), IndexError>;
    /// After a bulk load ([`copy`], or an ingest that changed something): let the store
    /// arrange what it holds for searching. The embedded store has nothing to do; Milvus seals
    /// the written data into segments (Milvus Lite searches unsealed rows by rebuilding their
    /// BM25 index for every query: at 10,208 chunks, 300 queries took 2 minutes sealed and had
    /// not finished in 30 unsealed).
    fn seal(&mut self) -> Result<(), IndexError> {
        Ok(())
    }
}

/// What [`copy`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// Documents written to the target.
    pub copied: usize,
    /// Documents the target already held with the same content hash.
    pub unchanged: usize,
    /// Chunks written.
    pub chunks: usize,
}

/// Copy every document of `from` into `to` with its stored vectors (no embedding), skipping
/// documents `to` already holds with the same content hash, committing every `commit_every`
/// documents and at the end. `on_document` sees each path copied. Run it again after a failure:
/// it picks up where it stopped, without duplicates.
pub fn copy(
    from: &dyn Store,
    to: &mut dyn StoreWriter,
    commit_every: usize,
    on_document: &mut dyn FnMut(&str, usize),
) -> Result<CopyReport, IndexError> {
    let have = to.documents();
    let mut docs: Vec<(String, String)> = from.documents().into_iter().collect();
    docs.sort();
    let mut report = CopyReport::default();
    let mut pending = 0;
    for (path, hash) in docs {
        if have.get(&path) == Some(&hash) {
            report.unchanged += 1;
            continue;
        }
        let chunks = from.export_document(&path)?;
        let n = chunks.len();
        to.replace_document(&path, &hash, chunks)?;
        report.copied += 1;
        report.chunks += n;
        on_document(&path, n);
        pending += 1;
        if pending >= commit_every.max(1) {
            to.commit()?;
            pending = 0;
        }
    }
    to.commit()?;
    if report.copied > 0 {
        to.seal()?;
    }
    Ok(report)
}
