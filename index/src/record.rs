//! What goes into the store and what comes out: a chunk to add ([`NewChunk`]), a stored one
//! ([`ChunkRecord`]), and a search result ([`Hit`]) with the retriever that found it.
use std::ops::Range;

use serde::{Deserialize, Serialize};

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
    /// When the document's file was last modified (Unix seconds), if known: what
    /// [`crate::Filter`]'s dates compare.
    pub modified: Option<i64>,
    /// Embedding; must have the index dimension. Normalised on the way in.
    pub vector: Vec<f32>,
}

/// A stored chunk, as searches return it.
///
/// ```
/// # fn show(hit: &rag_index::Hit) {
/// let c = &hit.chunk;
/// println!("{} bytes {:?} of {}: {}", c.chunk_id, c.byte_range, c.path, c.text);
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// Id of the chunk, unique for the life of the store (ids are never reused).
    pub chunk_id: u64,
    /// Document path as given to [`crate::IndexWriter::replace_document`].
    pub path: String,
    /// Content hash of the document version this chunk came from.
    pub content_hash: String,
    pub title: Option<String>,
    pub heading: Option<String>,
    pub pages: Option<(u32, u32)>,
    pub byte_range: Range<usize>,
    pub text: String,
    /// When the document's file was last modified (Unix seconds), if the store knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<i64>,
}

impl ChunkRecord {
    /// The chunk as one to store again, with its `vector` (copying a store into another).
    pub fn into_new_chunk(self, vector: Vec<f32>) -> NewChunk {
        NewChunk {
            text: self.text,
            title: self.title,
            heading: self.heading,
            pages: self.pages,
            byte_range: self.byte_range,
            modified: self.modified,
            vector,
        }
    }
}

/// Which retriever found a hit.
///
/// ```
/// let s = serde_json::to_string(&rag_index::Retriever::Both).unwrap();
/// assert_eq!(s, "\"both\"");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Retriever {
    Bm25,
    Dense,
    Both,
}

/// A search result.
///
/// ```no_run
/// let index = rag_index::Index::open(std::path::Path::new(".rag"))?;
/// for hit in index.search_bm25("harbour bridge", 5)? {
///     println!("{:.2} bm25 #{:?} {}", hit.score, hit.bm25_rank, hit.chunk.path);
/// }
/// # Ok::<(), rag_index::IndexError>(())
/// ```
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

impl Hit {
    /// A hit with its rank (1-based) and score in each list that found it; `found_by` follows
    /// from which did. Neither: a dense hit with no rank (not made by the stores).
    pub(crate) fn new(
        chunk: ChunkRecord,
        score: f32,
        bm25: Option<(usize, f32)>,
        dense: Option<(usize, f32)>,
    ) -> Hit {
        let found_by = match (bm25, dense) {
            (Some(_), Some(_)) => Retriever::Both,
            (Some(_), None) => Retriever::Bm25,
            _ => Retriever::Dense,
        };
        Hit {
            chunk,
            score,
            bm25_rank: bm25.map(|x| x.0),
            dense_rank: dense.map(|x| x.0),
            bm25_score: bm25.map(|x| x.1),
            dense_score: dense.map(|x| x.1),
            found_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriever_serialises_lowercase() {
        let s =
            serde_json::to_string(&[Retriever::Bm25, Retriever::Dense, Retriever::Both]).unwrap();
        assert_eq!(s, r#"["bm25","dense","both"]"#);
    }
}
