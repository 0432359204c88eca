//! The read side: a snapshot of the last commit with BM25, HNSW, exact and hybrid search.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::ops::Bound;
use tantivy::collector::TopDocs;

use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, DisjunctionMaxQuery, Occur, Query, RangeQuery,
    TermQuery, TermSetQuery,
};
use tantivy::schema::{IndexRecordOption, TantivyDocument};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{DocAddress, IndexReader, Term};

use crate::backend::{Filter, Store};
use crate::catalog::Catalog;
use crate::dense::DenseIndex;
use crate::error::{corrupt, IndexError};
use crate::fusion::{fuse, SearchOptions};
use crate::manifest::Manifest;
use crate::record::{ChunkRecord, Hit, NewChunk};
use crate::schema::{analyzer, Fields};
use crate::store::{manual_reader, open_tantivy, snapshot, tantivy_exists};
use crate::vectors::{check_rows, normalised, read_rows};

/// BM25 weight of a match in a chunk's heading path, relative to its text (1.0). Headings are
/// short and shared by the chunks of a section, so they help rank but must not dominate.
pub const HEADING_BOOST: f32 = 0.5;
/// BM25 weight of a match in the document title, relative to the text (1.0). Lower than the
/// heading: every chunk of the document carries the title.
pub const TITLE_BOOST: f32 = 0.3;

/// A read-only view of the last commit of an index. `Send + Sync`: share it across threads.
///
/// Opening loads the HNSW graph dumped by the writer (or builds it from `vectors.f32`);
/// nothing on the query path touches the disk except the stored chunk texts (tantivy's
/// memory-mapped doc store).
pub struct Index {
    dir: PathBuf,
    fields: Fields,
    reader: IndexReader,
    index: tantivy::Index,
    searcher: tantivy::Searcher,
    analyzer: TextAnalyzer,
    manifest: Manifest,
    catalog: Catalog,
    dense: DenseIndex,
}

impl Index {
    /// Open the last commit. Works while a writer is running (it sees only committed data).
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        if !tantivy_exists(dir) {
            return Err(IndexError::NotFound {
                dir: dir.to_path_buf(),
            });
        }
        let index = open_tantivy(dir)?;
        let fields = Fields::from_schema(dir, &index.schema())?;
        let reader = manual_reader(&index)?;
        let snap = snapshot(dir, &index, &reader)?;
        let analyzer = analyzer(&snap.manifest.analyzer).ok_or_else(|| {
            corrupt(
                dir,
                format!("unknown text analyzer `{}`", snap.manifest.analyzer),
            )
        })?;
        check_rows(dir, snap.manifest.dim, snap.manifest.vectors_rows)?;
        let dense = DenseIndex::open(dir, &snap.manifest, &snap.catalog)?;
        Ok(Index {
            dir: dir.to_path_buf(),
            fields,
            reader,
            index,
            searcher: snap.searcher,
            analyzer,
            manifest: snap.manifest,
            catalog: snap.catalog,
            dense,
        })
    }

    /// The manifest of the commit this view shows (counts are those of the view).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Refuse query vectors of an embedder other than the one that built the index
    /// ([`Manifest::check_embedder`]).
    pub fn check_embedder(&self, id: &str, dim: usize) -> Result<(), IndexError> {
        self.manifest.check_embedder(&self.dir, id, dim)
    }

    /// Pick up new commits: new vectors are added to the graph, deleted ones masked.
    pub fn reload(&mut self) -> Result<(), IndexError> {
        let snap = snapshot(&self.dir, &self.index, &self.reader)?;
        if snap.manifest.analyzer != self.manifest.analyzer {
            self.analyzer = analyzer(&snap.manifest.analyzer).ok_or_else(|| {
                corrupt(
                    &self.dir,
                    format!("unknown text analyzer `{}`", snap.manifest.analyzer),
                )
            })?;
        }
        check_rows(&self.dir, snap.manifest.dim, snap.manifest.vectors_rows)?;
        self.dense
            .refresh(&self.dir, &snap.manifest, &snap.catalog)?;
        self.searcher = snap.searcher;
        self.manifest = snap.manifest;
        self.catalog = snap.catalog;
        Ok(())
    }

    /// path -> content_hash of every document in this view.
    pub fn documents(&self) -> HashMap<String, String> {
        self.catalog.documents_map()
    }

    /// Number of live chunks.
    pub fn len(&self) -> usize {
        self.catalog.chunks()
    }

    /// Whether the index has no chunk.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One chunk by id; `None` if it does not exist or was deleted.
    pub fn chunk(&self, chunk_id: u64) -> Result<Option<ChunkRecord>, IndexError> {
        match self.catalog.addr.get(&chunk_id) {
            Some(&addr) => self.record(addr).map(Some),
            None => Ok(None),
        }
    }

    fn record(&self, addr: DocAddress) -> Result<ChunkRecord, IndexError> {
        let doc: TantivyDocument = self.searcher.doc(addr)?;
        self.fields
            .record(&doc)
            .ok_or_else(|| corrupt(&self.dir, "a chunk hit has no chunk id"))
    }

    /// The query as BM25 sees it: the analyzed terms of `text`, each once, each scoring the
    /// best of its match in the text, the heading ([`HEADING_BOOST`]) and the title
    /// ([`TITLE_BOOST`]); the terms' scores add up. The best field, not the sum of the three: a
    /// title is often in the text too (a Markdown file's first heading, an abstract's title
    /// line), and the sum counted it up to three times (SciFact BM25 nDCG@10 0.653 summed, 0.681
    /// at the best; the alternatives measured in docs/EVAL.md). No query syntax: quotes, `+`,
    /// `-`, `:` and parentheses are ordinary characters, so any user text is a valid query.
    fn bm25_query(&self, text: &str, filter: &Filter) -> Option<Box<dyn Query>> {
        let terms = crate::schema::distinct_terms(&self.analyzer, text);
        if terms.is_empty() {
            return None;
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let fields = [
                    (self.fields.text, 1.0),
                    (self.fields.heading, HEADING_BOOST),
                    (self.fields.title, TITLE_BOOST),
                ];
                let each: Vec<Box<dyn Query>> = fields
                    .into_iter()
                    .map(|(field, boost)| {
                        let q = TermQuery::new(
                            Term::from_field_text(field, t),
                            IndexRecordOption::WithFreqs,
                        );
                        if boost == 1.0 {
                            Box::new(q) as Box<dyn Query>
                        } else {
                            Box::new(BoostQuery::new(Box::new(q), boost))
                        }
                    })
                    .collect();
                let best: Box<dyn Query> = Box::new(DisjunctionMaxQuery::new(each));
                (Occur::Should, best)
            })
            .collect();
        let terms: Box<dyn Query> = Box::new(BooleanQuery::new(clauses));
        if filter.is_empty() {
            return Some(terms);
        }
        let only: Box<dyn Query> = match filter.path_prefix.as_deref() {
            // Paths are raw (untokenized) terms: a prefix is the range
            // [prefix, prefix + U+10FFFF].
            Some(prefix) if filter.file_types.is_empty() && !filter.has_dates() => {
                Box::new(RangeQuery::new(
                    Bound::Included(Term::from_field_text(self.fields.path, prefix)),
                    Bound::Included(Term::from_field_text(
                        self.fields.path,
                        &format!("{prefix}\u{10FFFF}"),
                    )),
                ))
            }
            // Any other condition: the documents that pass, from the catalog.
            _ => Box::new(TermSetQuery::new(
                self.catalog
                    .docs
                    .iter()
                    .filter(|(p, d)| filter.matches(p, d.modified))
                    .map(|(p, _)| Term::from_field_text(self.fields.path, p)),
            )),
        };
        let only = Box::new(ConstScoreQuery::new(only, 0.0));
        Some(Box::new(BooleanQuery::new(vec![
            (Occur::Must, terms),
            (Occur::Must, only),
        ])))
    }

    /// BM25 over the chunk texts (and, with lower weights, headings and titles: a term scores
    /// its best field). `score` is the BM25 score. Ties are broken by chunk id.
    pub fn search_bm25(&self, query: &str, k: usize) -> Result<Vec<Hit>, IndexError> {
        self.bm25(query, k, &Filter::default())
    }

    fn bm25_hits(&self, query: &str, k: usize, filter: &Filter) -> Result<Vec<Hit>, IndexError> {
        let mut hits = Vec::new();
        for (rank, (score, _, addr)) in self.bm25_addrs(query, k, filter)?.into_iter().enumerate() {
            let chunk = self.record(addr)?;
            hits.push(Hit::new(chunk, score, Some((rank + 1, score)), None));
        }
        Ok(hits)
    }

    /// BM25 top `k` as (score, chunk id, address), best first, ties by chunk id.
    fn bm25_addrs(
        &self,
        query: &str,
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<(f32, u64, DocAddress)>, IndexError> {
        let Some(q) = self.bm25_query(query, filter) else {
            return Ok(Vec::new());
        };
        // TopDocs allocates for k: never more than there are documents.
        let k = k.min(self.searcher.num_docs() as usize);
        if k == 0 {
            return Ok(Vec::new());
        }
        let top = self
            .searcher
            .search(&q, &TopDocs::with_limit(k).order_by_score())?;
        // Deterministic order among equal scores: by chunk id.
        let ids = self
            .searcher
            .segment_readers()
            .iter()
            .map(|s| s.fast_fields().column_opt::<u64>(crate::schema::F_CHUNK_ID))
            .collect::<Result<Vec<_>, _>>()?;
        let mut keyed: Vec<(f32, u64, DocAddress)> = top
            .into_iter()
            .map(|(score, addr)| {
                let id = ids[addr.segment_ord as usize]
                    .as_ref()
                    .and_then(|c| c.first(addr.doc_id))
                    .unwrap_or(u64::MAX);
                (score, id, addr)
            })
            .collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        Ok(keyed)
    }

    /// Approximate nearest neighbours (HNSW, cosine). `score` is the cosine similarity.
    pub fn search_dense(&self, vector: &[f32], k: usize) -> Result<Vec<Hit>, IndexError> {
        self.dense(vector, k, &Filter::default())
    }

    /// Exact nearest neighbours by brute force over the live vectors. `score` is the cosine.
    pub fn search_exact(&self, vector: &[f32], k: usize) -> Result<Vec<Hit>, IndexError> {
        self.exact(vector, k, &Filter::default())
    }

    /// The nearest live chunks passing `filter`: HNSW without a filter; with one, exact
    /// (a filtered graph search loses recall when few chunks pass, and brute force over
    /// 100,000 vectors takes milliseconds).
    fn nearest(&self, q: &[f32], k: usize, filter: &Filter, exact: bool) -> Vec<(u64, f32)> {
        if filter.is_empty() {
            return if exact {
                self.dense.search_exact(q, k)
            } else {
                self.dense.search_hnsw(q, k)
            };
        }
        // Decided once per document, then looked up per vector.
        let passes: Vec<bool> = self
            .catalog
            .paths
            .iter()
            .map(|p| filter.matches(p, self.catalog.modified(p)))
            .collect();
        self.dense.search_exact_where(q, k, |id| {
            self.catalog
                .chunk_path
                .get(&id)
                .is_some_and(|&slot| passes[slot as usize])
        })
    }

    fn dense_hits(&self, found: Vec<(u64, f32)>) -> Result<Vec<Hit>, IndexError> {
        let mut hits = Vec::with_capacity(found.len());
        for (rank, (id, score)) in found.into_iter().enumerate() {
            let Some(chunk) = self.chunk(id)? else {
                continue;
            };
            hits.push(Hit::new(chunk, score, None, Some((rank + 1, score))));
        }
        Ok(hits)
    }

    /// Reciprocal-rank fusion of BM25 (depth `bm25_depth`) and HNSW (depth `dense_depth`);
    /// the top `k` by fused score, ties by chunk id. Each hit keeps both ranks and scores.
    pub fn search_hybrid(
        &self,
        query: &str,
        vector: &[f32],
        opts: &SearchOptions,
    ) -> Result<Vec<Hit>, IndexError> {
        self.hybrid(query, vector, opts, &Filter::default())
    }

    fn hybrid_hits(
        &self,
        query: &str,
        vector: &[f32],
        opts: &SearchOptions,
        filter: &Filter,
    ) -> Result<Vec<Hit>, IndexError> {
        let q = normalised(vector, self.manifest.dim, "of the query")?;
        let bm25: Vec<(u64, f32)> = self
            .bm25_addrs(query, opts.bm25_depth, filter)?
            .into_iter()
            .map(|(score, id, _)| (id, score))
            .collect();
        let dense = self.nearest(&q, opts.dense_depth, filter, false);
        let fused = fuse(&bm25, &dense, opts);
        let mut hits = Vec::with_capacity(fused.len());
        for f in fused {
            if let Some(chunk) = self.chunk(f.id)? {
                hits.push(f.hit(chunk));
            }
        }
        Ok(hits)
    }

    /// Whether this index can apply `filter`: dates need an index that recorded them.
    fn check_filter(&self, filter: &Filter) -> Result<(), IndexError> {
        if filter.has_dates() && self.fields.modified.is_none() {
            return Err(IndexError::NoDates {
                store: self.dir.display().to_string(),
            });
        }
        Ok(())
    }

    /// The terms of `text` as BM25 indexes it (tokenized, lower-cased, folded, stemmed by the
    /// index's analyzer), in order, repeats kept.
    pub fn analyze(&self, text: &str) -> Vec<String> {
        crate::schema::terms(&self.analyzer, text)
    }

    /// The distinct analyzed terms of `query`, each with its BM25 inverse document frequency in
    /// the chunk texts of this view: `ln(1 + (N - n + 0.5) / (n + 0.5))` for `n` of `N`
    /// documents holding the term. A term no chunk holds gets the largest weight, so a query
    /// about things the corpus never mentions scores low on any coverage measure built on it.
    pub fn term_weights(&self, query: &str) -> Result<Vec<(String, f32)>, IndexError> {
        let total = self.searcher.num_docs() as f64;
        let mut out: Vec<(String, f32)> = Vec::new();
        for t in crate::schema::distinct_terms(&self.analyzer, query) {
            let n = self
                .searcher
                .doc_freq(&Term::from_field_text(self.fields.text, &t))? as f64;
            let idf = (1.0 + (total - n + 0.5) / (n + 0.5)).ln();
            out.push((t, idf as f32));
        }
        Ok(out)
    }

    /// Live vectors in the HNSW graph (for diagnostics).
    pub fn vector_count(&self) -> usize {
        self.dense.live_count()
    }

    /// The chunks of `path` with their vectors, in chunk-id order (= the order they were added).
    fn document_chunks(&self, path: &str) -> Result<Vec<NewChunk>, IndexError> {
        let q = TermQuery::new(
            Term::from_field_text(self.fields.path, path),
            IndexRecordOption::Basic,
        );
        let n = self.catalog.docs.get(path).map_or(0, |d| d.chunks);
        if n == 0 {
            return Ok(Vec::new());
        }
        let found = self
            .searcher
            .search(&q, &TopDocs::with_limit(n + 1).order_by_score())?;
        let mut records = Vec::with_capacity(n);
        for (_, addr) in found {
            let doc: TantivyDocument = self.searcher.doc(addr)?;
            if let Some(r) = self.fields.record(&doc) {
                records.push(r);
            }
        }
        records.sort_by_key(|r| r.chunk_id);
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(Vec::new());
        };
        let mut vectors: HashMap<u64, Vec<f32>> = HashMap::with_capacity(records.len());
        let want: std::collections::HashSet<u64> = records.iter().map(|r| r.chunk_id).collect();
        read_rows(
            &self.dir,
            self.manifest.dim,
            first.chunk_id,
            last.chunk_id + 1,
            |id| want.contains(&id),
            |id, row| {
                vectors.insert(id, row.to_vec());
            },
        )?;
        records
            .into_iter()
            .map(|r| {
                let vector = vectors.remove(&r.chunk_id).ok_or_else(|| {
                    corrupt(&self.dir, format!("chunk {} has no vector", r.chunk_id))
                })?;
                Ok(r.into_new_chunk(vector))
            })
            .collect()
    }
}

impl Store for Index {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn check_embedder(&self, id: &str, dim: usize) -> Result<(), IndexError> {
        Index::check_embedder(self, id, dim)
    }

    fn documents(&self) -> HashMap<String, String> {
        Index::documents(self)
    }

    fn len(&self) -> usize {
        Index::len(self)
    }

    fn chunk(&self, chunk_id: u64) -> Result<Option<ChunkRecord>, IndexError> {
        Index::chunk(self, chunk_id)
    }

    fn bm25(&self, query: &str, k: usize, filter: &Filter) -> Result<Vec<Hit>, IndexError> {
        self.check_filter(filter)?;
        self.bm25_hits(query, k, filter)
    }

    fn dense(&self, vector: &[f32], k: usize, filter: &Filter) -> Result<Vec<Hit>, IndexError> {
        self.check_filter(filter)?;
        let q = normalised(vector, self.manifest.dim, "of the query")?;
        self.dense_hits(self.nearest(&q, k, filter, false))
    }

    fn exact(&self, vector: &[f32], k: usize, filter: &Filter) -> Result<Vec<Hit>, IndexError> {
        self.check_filter(filter)?;
        let q = normalised(vector, self.manifest.dim, "of the query")?;
        self.dense_hits(self.nearest(&q, k, filter, true))
    }

    fn hybrid(
        &self,
        query: &str,
        vector: &[f32],
        opts: &SearchOptions,
        filter: &Filter,
    ) -> Result<Vec<Hit>, IndexError> {
        self.check_filter(filter)?;
        self.hybrid_hits(query, vector, opts, filter)
    }

    fn analyze(&self, text: &str) -> Vec<String> {
        Index::analyze(self, text)
    }

    fn term_weights(&self, query: &str) -> Result<Vec<(String, f32)>, IndexError> {
        Index::term_weights(self, query)
    }

    fn export_document(&self, path: &str) -> Result<Vec<NewChunk>, IndexError> {
        self.document_chunks(path)
    }
}
