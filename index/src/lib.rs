//! rag-index: the embedded store of rag. It keeps chunks and their vectors and searches them
//! (BM25, HNSW, exact, and their reciprocal-rank fusion). It knows nothing of models: vectors
//! come in from the caller, already computed.
//!
//! # On disk (an index directory, `./.rag` by default)
//!
//! | path | what |
//! |---|---|
//! | `tantivy/` | one tantivy document per chunk: `chunk_id`, `path`, `content_hash`, `title`, `heading`, `page_start`/`page_end` (0 = none), `byte_start`/`byte_end`, `text` (BM25, stemmed by default). A document without chunks has a marker document. |
//! | `vectors.f32` | little-endian f32 rows of `dim` floats; row *n* is chunk id *n*. Append-only. |
//! | `manifest.json` | [`Manifest`]: format version, embedder id and dim, counts, `vectors_rows`, times. A copy of the authoritative payload (below). |
//! | `lock` | held (`flock`) by the one [`IndexWriter`]. |
//! | `hnsw.current`, `hnsw-*/` | the HNSW graph as hnsw_rs dumps it, with the chunk id of each node; `hnsw.current` names the current dump. Derived data. |
//!
//! The HNSW graph is derived data: the writer updates it after each commit and dumps it (at
//! most every 10 s, and when dropped); a reader loads the dump and catches up on rows committed
//! after it, or builds the graph from `vectors.f32` when there is no usable dump (see
//! `dense.rs`).
//!
//! # Commit protocol and crash safety
//!
//! The tantivy commit is the point of truth. [`IndexWriter::commit`]:
//! 1. flushes and fsyncs the vector rows appended since the last commit;
//! 2. commits tantivy (`prepare_commit` + `commit`, which fsyncs the segments and atomically
//!    replaces tantivy's `meta.json`) with the JSON of the new manifest (generation + 1, counts,
//!    `vectors_rows`) as the commit payload;
//! 3. writes `manifest.json` from that payload atomically (temp file, fsync, rename, fsync dir);
//! 4. updates the HNSW graph and maybe dumps it (derived data; a failure here is ignored).
//!
//! Killed before (2) completes, the old commit stays in force: tantivy ignores uncommitted
//! segments (and deletes them later), and vector rows past the committed `vectors_rows` are
//! ignored by readers and truncated by the next writer. Killed between (2) and (3), the payload
//! is newer than `manifest.json`: readers trust the payload, the next writer rewrites the file.
//! Killed during (4), a half-written dump sits in a `*.tmp` directory that `hnsw.current` never
//! names (it is replaced atomically once the dump is complete and synced).
//! Deletes and adds of a document go through the same tantivy commit, so a document is
//! replaced all at once and its chunks are never duplicated; the next ingest compares
//! [`IndexWriter::documents`] (the committed content hashes) and redoes whatever was lost.
//! A new store makes a first commit (generation 0) before anything else; `--reindex` removes
//! `manifest.json`, then tantivy's `meta.json`, then the rest, so a crash leaves the old store
//! or none.
//!
//! Readers never lock: a reader pins one tantivy commit and pairs it with that commit's
//! payload; it reads vector rows only of chunks live in that commit, all of which were synced
//! before the commit. Deleted chunks' rows become unreachable (the "live set" is the set of
//! chunk ids in the pinned commit); a search never returns them.

mod backend;
mod catalog;
mod dense;
mod error;
mod fusion;
mod manifest;
#[cfg(feature = "milvus")]
pub mod milvus;
mod reader;
mod record;
mod schema;
mod store;
mod vectors;
mod writer;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod testing;

pub use backend::{copy, is_remote, CopyReport, Filter, Store, StoreWriter};
pub use dense::{HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH_MIN, HNSW_M};
pub use error::IndexError;
pub use fusion::{rrf, rrf_weighted, score_weighted, Fusion, SearchOptions};
pub use manifest::{
    Manifest, ANALYZER_EN_STEM, ANALYZER_EN_STEM_V0, ANALYZER_SIMPLE, ANALYZER_SIMPLE_V0,
    FORMAT_VERSION,
};
pub use reader::{Index, HEADING_BOOST, TITLE_BOOST};
pub use record::{ChunkRecord, Hit, NewChunk, Retriever};
pub use writer::{IndexWriter, WriterOptions};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Index>();
        check::<IndexWriter>();
    }
}
