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

mod catalog;
mod dense;
mod error;
mod manifest;
mod reader;
mod schema;
mod store;
mod vectors;
mod writer;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod testing;

use std::collections::HashMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

pub use dense::{HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH_MIN, HNSW_M};
pub use error::IndexError;
pub use manifest::{Manifest, ANALYZER_EN_STEM, ANALYZER_SIMPLE, FORMAT_VERSION};
pub use reader::{Index, HEADING_BOOST, TITLE_BOOST};
pub use writer::{IndexWriter, WriterOptions};

/// A chunk to store, with its vector.
#[derive(Clone, Debug, PartialEq)]
pub struct NewChunk {
    /// The chunk text (searched by BM25, shown to the model).
    pub text: String,
    /// Document title, if known.
    pub title: Option<String>,
    /// Heading path joined with `" > "`, if any.
    pub heading: Option<String>,
    /// First and last page (1-based; PDFs only).
    pub pages: Option<(u32, u32)>,
    /// Byte range of the chunk in the normalised document text.
    pub byte_range: Range<usize>,
    /// Embedding; must have the index dimension. Normalised on the way in.
    pub vector: Vec<f32>,
}

/// A stored chunk, as searches return it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// Id of the chunk, unique for the life of the store (ids are never reused).
    pub chunk_id: u64,
    /// Document path as given to [`IndexWriter::replace_document`].
    pub path: String,
    /// Content hash of the document version this chunk came from.
    pub content_hash: String,
    pub title: Option<String>,
    pub heading: Option<String>,
    pub pages: Option<(u32, u32)>,
    pub byte_range: Range<usize>,
    pub text: String,
}

/// Which retriever found a hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Retriever {
    Bm25,
    Dense,
    Both,
}

/// A search result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hit {
    pub chunk: ChunkRecord,
    /// Fused RRF score for hybrid search; the retriever's own score otherwise (BM25 score, or
    /// cosine similarity for dense and exact search).
    pub score: f32,
    /// 1-based rank in the BM25 list, if BM25 found it.
    pub bm25_rank: Option<usize>,
    /// 1-based rank in the dense list, if the dense search found it.
    pub dense_rank: Option<usize>,
    pub bm25_score: Option<f32>,
    /// Cosine similarity.
    pub dense_score: Option<f32>,
    pub found_by: Retriever,
}

/// Options of [`Index::search_hybrid`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchOptions {
    /// Hits returned. Default 10: about what fits a small model's context with room to answer.
    pub k: usize,
    /// Depth of the BM25 list fed to the fusion. Default 50: deep enough that a chunk ranked
    /// well by one retriever only still reaches the top k.
    pub bm25_depth: usize,
    /// Depth of the dense list fed to the fusion. Default 50, as BM25.
    pub dense_depth: usize,
    /// The RRF constant. Default 60, the value of the original paper (Cormack et al., 2009),
    /// which damps the influence of the first ranks.
    pub rrf_k: f64,
}

impl Default for SearchOptions {
    fn default() -> Self {
        SearchOptions {
            k: 10,
            bm25_depth: 50,
            dense_depth: 50,
            rrf_k: 60.0,
        }
    }
}

/// Reciprocal-rank fusion: score(d) = sum over lists of 1 / (rrf_k + rank), rank 1-based.
///
/// Sorted by score, best first; equal scores by ascending id, so the result depends only on the
/// input. An id repeated within one list counts once, at its best rank.
pub fn rrf(lists: &[Vec<u64>], rrf_k: f64) -> Vec<(u64, f64)> {
    // Ranks per id, summed smallest first: the floating-point sum then depends only on the
    // ranks, not on the order of the lists.
    let mut ranks: HashMap<u64, Vec<usize>> = HashMap::new();
    for list in lists {
        let mut seen = std::collections::HashSet::with_capacity(list.len());
        for (i, &id) in list.iter().enumerate() {
            if seen.insert(id) {
                ranks.entry(id).or_default().push(i + 1);
            }
        }
    }
    let mut out: Vec<(u64, f64)> = ranks
        .into_iter()
        .map(|(id, mut r)| {
            r.sort_unstable();
            (id, r.iter().map(|&r| 1.0 / (rrf_k + r as f64)).sum())
        })
        .collect();
    out.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn rrf_hand_computed() {
        // list A: 1, 2, 3   list B: 3, 1, 4   (k = 60)
        let out = rrf(&[vec![1, 2, 3], vec![3, 1, 4]], 60.0);
        let ids: Vec<u64> = out.iter().map(|x| x.0).collect();
        // 1: 1/61 + 1/62; 3: 1/63 + 1/61; 2: 1/62; 4: 1/63
        assert_eq!(ids, vec![1, 3, 2, 4]);
        assert!(close(out[0].1, 1.0 / 61.0 + 1.0 / 62.0));
        assert!(close(out[1].1, 1.0 / 63.0 + 1.0 / 61.0));
        assert!(close(out[2].1, 1.0 / 62.0));
        assert!(close(out[3].1, 1.0 / 63.0));
    }

    #[test]
    fn rrf_ties_by_id_and_small_k() {
        // 7 and 5 both get 1/(1+1) + 1/(1+2): a tie, broken by id.
        let out = rrf(&[vec![7, 5], vec![5, 7]], 1.0);
        assert_eq!(out.iter().map(|x| x.0).collect::<Vec<_>>(), vec![5, 7]);
        assert!(close(out[0].1, 0.5 + 1.0 / 3.0));
        assert!(close(out[0].1, out[1].1));
    }

    #[test]
    fn rrf_edge_cases() {
        assert!(rrf(&[], 60.0).is_empty());
        assert!(rrf(&[vec![], vec![]], 60.0).is_empty());
        // A duplicate inside one list counts once, at its first (best) rank.
        let out = rrf(&[vec![9, 9, 8]], 60.0);
        assert_eq!(out, vec![(9, 1.0 / 61.0), (8, 1.0 / 63.0)]);
    }

    #[test]
    fn rrf_is_deterministic() {
        let lists: Vec<Vec<u64>> = (0..4)
            .map(|l| (0..200u64).map(|i| (i * 7919 + l * 31) % 257).collect())
            .collect();
        let first = rrf(&lists, 60.0);
        for _ in 0..20 {
            assert_eq!(rrf(&lists, 60.0), first);
        }
        let mut reversed = lists.clone();
        reversed.reverse();
        assert_eq!(rrf(&reversed, 60.0), first, "list order must not matter");
    }

    #[test]
    fn retriever_serialises_lowercase() {
        let s =
            serde_json::to_string(&[Retriever::Bm25, Retriever::Dense, Retriever::Both]).unwrap();
        assert_eq!(s, r#"["bm25","dense","both"]"#);
    }

    #[test]
    fn index_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Index>();
        check::<IndexWriter>();
    }
}
