//! `rag eval retrieval`: nDCG@10, recall@10, recall@100 and MRR@10 of BM25, dense (HNSW and
//! exact) and hybrid retrieval on a BEIR-format set, all on the same index, with search latency
//! and HNSW recall against exact search.
//!
//! The corpus (`corpus.jsonl`) is written out as one Markdown file per document (`# title`, then
//! the text) and ingested like any folder, so the index is an ordinary rag index and a second
//! run ingests nothing. A chunk hit counts for its document; a document ranks where its best
//! chunk ranks (later chunks of the same document are skipped).
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rag::{Error, Hit, IngestReport, Mode, Rag, Result, RetrieveOptions};
use serde::{Deserialize, Serialize};

use super::metrics::{mean, mrr_at, ndcg_at, quantile, recall_at};
use crate::cli::output::{dir_size, peak_rss_mib};

/// A BEIR-format set: corpus, queries and relevance judgements of one split.
#[derive(Debug, Clone)]
pub struct BeirSet {
    /// The set's name (its folder name).
    pub name: String,
    /// (id, title, text) of each document.
    pub corpus: Vec<(String, String, String)>,
    /// (id, text) of each query that has judgements in the split, in file order.
    pub queries: Vec<(String, String)>,
    /// Relevant document ids of each query.
    pub qrels: HashMap<String, HashSet<String>>,
}

#[derive(Deserialize)]
struct CorpusLine {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    title: String,
    text: String,
}

#[derive(Deserialize)]
struct QueryLine {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

fn bad(path: &Path, detail: String) -> Error {
    Error::InvalidOption(format!(
        "{}: {detail} (expected a BEIR set: corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)",
        path.display()
    ))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl BeirSet {
    /// Read `dir/corpus.jsonl`, `dir/queries.jsonl` and `dir/qrels/{split}.tsv`.
    pub fn load(dir: &Path, split: &str) -> Result<Self> {
        let corpus_path = dir.join("corpus.jsonl");
        let mut corpus = Vec::new();
        for (i, line) in read(&corpus_path)?.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let d: CorpusLine = serde_json::from_str(line)
                .map_err(|e| bad(&corpus_path, format!("line {}: {e}", i + 1)))?;
            corpus.push((d.id, d.title, d.text));
        }
        let qrels_path = dir.join("qrels").join(format!("{split}.tsv"));
        let mut qrels: HashMap<String, HashSet<String>> = HashMap::new();
        for (i, line) in read(&qrels_path)?.lines().enumerate() {
            let f: Vec<&str> = line.trim_end_matches('\r').split('\t').collect();
            if i == 0 && f.first() == Some(&"query-id") {
                continue;
            }
            if f.len() < 3 {
                continue;
            }
            let score: f64 = f[2]
                .trim()
                .parse()
                .map_err(|_| bad(&qrels_path, format!("line {}: bad score", i + 1)))?;
            if score > 0.0 {
                qrels
                    .entry(f[0].to_string())
                    .or_default()
                    .insert(f[1].to_string());
            }
        }
        let queries_path = dir.join("queries.jsonl");
        let mut queries = Vec::new();
        for (i, line) in read(&queries_path)?.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let q: QueryLine = serde_json::from_str(line)
                .map_err(|e| bad(&queries_path, format!("line {}: {e}", i + 1)))?;
            if qrels.contains_key(&q.id) {
                queries.push((q.id, q.text));
            }
        }
        if corpus.is_empty() || queries.is_empty() {
            return Err(bad(dir, "no documents or no judged queries".into()));
        }
        let name = dir
            .file_name()
            .map_or_else(|| "beir".into(), |n| n.to_string_lossy().into_owned());
        Ok(Self {
            name,
            corpus,
            queries,
            qrels,
        })
    }

    /// Keep the documents judged relevant to any query, plus other documents up to `max_docs`
    /// in all (taken in corpus order): a smaller corpus on which configurations can still be
    /// compared with each other, though not with published full-corpus figures.
    pub fn subset(&mut self, max_docs: usize) {
        let judged: HashSet<&String> = self.qrels.values().flatten().collect();
        let mut room = max_docs.saturating_sub(
            self.corpus
                .iter()
                .filter(|(id, _, _)| judged.contains(id))
                .count(),
        );
        let corpus = std::mem::take(&mut self.corpus);
        self.corpus = corpus
            .into_iter()
            .filter(|(id, _, _)| {
                if judged.contains(id) {
                    return true;
                }
                if room > 0 {
                    room -= 1;
                    return true;
                }
                false
            })
            .collect();
        self.name = format!("{}-sub{max_docs}", self.name);
    }

    /// Write each document to `docs/{id}.md` (title as a heading) unless it is there already
    /// with the same bytes. Returns the number of files written.
    pub fn write_docs(&self, docs: &Path) -> Result<usize> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(docs).map_err(io(docs))?;
        let mut written = 0;
        for (id, title, text) in &self.corpus {
            let path = docs.join(format!("{}.md", file_stem_of(id)));
            let body = if title.trim().is_empty() {
                format!("{}\n", text.trim())
            } else {
                format!("# {}\n\n{}\n", title.trim(), text.trim())
            };
            if std::fs::read(&path).ok().as_deref() != Some(body.as_bytes()) {
                std::fs::write(&path, body).map_err(io(&path))?;
                written += 1;
            }
        }
        Ok(written)
    }
}

/// The file stem a document id is written under: the id with characters other than letters,
/// digits, `-` and `_` replaced by `_`.
pub fn file_stem_of(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Settings of [`eval_retrieval`].
#[derive(Debug, Clone)]
pub struct RetrievalOptions {
    /// Chunks fetched from each retriever (and fused for hybrid). Default 200: SciFact
    /// abstracts make one or two chunks each, so 200 chunks give at least 100 documents for
    /// recall@100.
    pub depth: usize,
    /// Queries evaluated (the first n after `skip`); `None` for all.
    pub limit: Option<usize>,
    /// Queries passed over first (to fit on some queries and report on the others).
    pub skip: usize,
    /// Weight of the dense list in the hybrid fusion (BM25's is 1); `None`: the default for the
    /// index's embedder ([`rag::MINILM_DENSE_WEIGHT`], [`rag::LLAMA_DENSE_WEIGHT`]).
    pub dense_weight: Option<f64>,
    /// How the hybrid fuses its lists; `None`: the default for the index's embedder
    /// ([`rag::MINILM_FUSION`], [`rag::LLAMA_FUSION`]).
    pub fusion: Option<rag::Fusion>,
    /// Text put before each query for the dense embedding only (BM25 sees the bare query), as
    /// instruction-tuned embedders expect. `None`: the bare query.
    pub query_instruction: Option<String>,
}

impl Default for RetrievalOptions {
    fn default() -> Self {
        Self {
            depth: 200,
            limit: None,
            skip: 0,
            dense_weight: None,
            fusion: None,
            query_instruction: None,
        }
    }
}

/// One retriever's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    pub mode: String,
    pub ndcg_at_10: f64,
    pub recall_at_10: f64,
    pub recall_at_100: f64,
    pub mrr_at_10: f64,
    /// Search time per query (query embedding excluded), milliseconds.
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
}

/// The report of [`eval_retrieval`].
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalReport {
    pub set: String,
    pub index: PathBuf,
    pub embedder: String,
    pub documents: usize,
    pub chunks: usize,
    pub queries: usize,
    pub depth: usize,
    pub modes: Vec<ModeReport>,
    /// Embedding one query, milliseconds.
    pub embed_query_p50_ms: f64,
    pub embed_query_p95_ms: f64,
    /// Mean share of the exact top 10 (brute force over the same vectors) that HNSW returns.
    pub hnsw_recall_at_10: f64,
    /// The ingest done for this run (`None` if the index was complete already).
    pub ingest: Option<IngestReport>,
    /// Size of the index directory on disk.
    pub index_mib: f64,
    pub peak_rss_mib: Option<f64>,
}

impl RetrievalReport {
    /// A plain-text table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{}: {} queries, {} documents, {} chunks; embedder {}; index {:.1} MiB\n\n",
            self.set, self.queries, self.documents, self.chunks, self.embedder, self.index_mib
        );
        s += &format!(
            "{:<8} {:>8} {:>10} {:>11} {:>7} {:>9} {:>9}\n",
            "mode", "nDCG@10", "recall@10", "recall@100", "MRR@10", "p50 ms", "p95 ms"
        );
        for m in &self.modes {
            s += &format!(
                "{:<8} {:>8.3} {:>10.3} {:>11.3} {:>7.3} {:>9.2} {:>9.2}\n",
                m.mode,
                m.ndcg_at_10,
                m.recall_at_10,
                m.recall_at_100,
                m.mrr_at_10,
                m.latency_p50_ms,
                m.latency_p95_ms
            );
        }
        s += &format!(
            "\nquery embedding p50 {:.1} ms, p95 {:.1} ms; HNSW recall@10 vs exact {:.4}\n",
            self.embed_query_p50_ms, self.embed_query_p95_ms, self.hnsw_recall_at_10
        );
        if let Some(r) = &self.ingest {
            let st = &r.stages;
            s += &format!(
                "ingest: {} files, {} chunks, {} tokens in {:.1}s ({:.1} chunks/s, {:.0} tokens/s) \
                 [parse {:.1}s, chunk {:.1}s, embed {:.1}s, index {:.1}s]\n",
                r.indexed,
                r.chunks,
                r.tokens,
                r.seconds,
                r.chunks as f64 / r.seconds.max(1e-9),
                r.tokens as f64 / r.seconds.max(1e-9),
                st.parse,
                st.chunk,
                st.embed,
                st.index
            );
        }
        if let Some(m) = self.peak_rss_mib {
            s += &format!("peak RSS {m:.0} MiB\n");
        }
        s
    }
}

/// Evaluate BM25, dense (HNSW), exact and hybrid retrieval of `set` on the index of `rag`,
/// which must hold the set's documents as written by [`BeirSet::write_docs`].
pub fn eval_retrieval(
    rag: &Rag,
    set: &BeirSet,
    opts: &RetrievalOptions,
    ingest: Option<IngestReport>,
) -> Result<RetrievalReport> {
    let queries: Vec<&(String, String)> = set
        .queries
        .iter()
        .skip(opts.skip)
        .take(opts.limit.unwrap_or(usize::MAX))
        .collect();
    let id_of: HashMap<String, &str> = set
        .corpus
        .iter()
        .map(|(id, _, _)| (file_stem_of(id), id.as_str()))
        .collect();
    let texts: Vec<&str> = queries.iter().map(|(_, t)| t.as_str()).collect();
    let runs = run_queries(
        rag,
        &texts,
        opts.depth,
        opts.dense_weight,
        opts.fusion,
        opts.query_instruction.as_deref(),
    )?;
    let mut reports = Vec::new();
    for (m, mode) in MODES.iter().enumerate() {
        let (mut nd, mut r10, mut r100, mut mrr) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (qi, (qid, _)) in queries.iter().enumerate() {
            let rel = &set.qrels[qid];
            let stems = documents_of(&runs.hits[m][qi]);
            let docs: Vec<&str> = stems
                .iter()
                .map(|stem| id_of.get(stem).copied().unwrap_or(stem.as_str()))
                .collect();
            nd.push(ndcg_at(&docs, rel, 10));
            r10.push(recall_at(&docs, rel, 10));
            r100.push(recall_at(&docs, rel, 100));
            mrr.push(mrr_at(&docs, rel, 10));
        }
        reports.push(ModeReport {
            mode: mode.name().to_string(),
            ndcg_at_10: mean(&nd),
            recall_at_10: mean(&r10),
            recall_at_100: mean(&r100),
            mrr_at_10: mean(&mrr),
            latency_p50_ms: quantile(&runs.latency_ms[m], 0.5),
            latency_p95_ms: quantile(&runs.latency_ms[m], 0.95),
        });
    }
    let info = rag.info()?;
    Ok(RetrievalReport {
        set: set.name.clone(),
        index_mib: dir_size(&info.dir) as f64 / (1024.0 * 1024.0),
        index: info.dir,
        embedder: info.embedder,
        documents: info.documents,
        chunks: info.chunks,
        queries: queries.len(),
        depth: opts.depth,
        modes: reports,
        embed_query_p50_ms: quantile(&runs.embed_ms, 0.5),
        embed_query_p95_ms: quantile(&runs.embed_ms, 0.95),
        hnsw_recall_at_10: mean(&runs.hnsw_recall),
        ingest,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// The retrievers measured, in report order.
pub const MODES: [Mode; 4] = [Mode::Bm25, Mode::Dense, Mode::Exact, Mode::Hybrid];

/// What [`run_queries`] saw: per mode (in [`MODES`] order) and query, the hits and the search
/// time; per query, the embedding time and the share of the exact top 10 that HNSW found.
pub struct QueryRuns {
    pub hits: Vec<Vec<Vec<Hit>>>,
    pub latency_ms: Vec<Vec<f64>>,
    pub embed_ms: Vec<f64>,
    pub hnsw_recall: Vec<f64>,
}

/// Run every query through every retriever of [`MODES`] at `depth` (hybrid weighing the dense
/// list by `dense_weight`, fused by `fusion`), by the retrieval step of
/// `rag ask` ([`Rag::retrieve`]), timing each search (the query is embedded once, timed on its
/// own). The ranking is scored as BEIR scores it, before duplicate collapsing, which would
/// otherwise deepen the fused lists. `instruction`, when given, is put before each query for
/// its embedding only.
pub fn run_queries(
    rag: &Rag,
    queries: &[&str],
    depth: usize,
    dense_weight: Option<f64>,
    fusion: Option<rag::Fusion>,
    instruction: Option<&str>,
) -> Result<QueryRuns> {
    let mut runs = QueryRuns {
        hits: vec![Vec::new(); MODES.len()],
        latency_ms: vec![Vec::new(); MODES.len()],
        embed_ms: Vec::new(),
        hnsw_recall: Vec::new(),
    };
    let options = |mode: Mode, k: usize| RetrieveOptions {
        k,
        bm25_depth: depth,
        dense_depth: depth,
        mode,
        duplicate_jaccard: None,
        query_prefix: instruction.map(str::to_string),
        dense_weight,
        fusion,
        ..RetrieveOptions::default()
    };
    for text in queries {
        let mut embed_secs = 0.0;
        for (m, &mode) in MODES.iter().enumerate() {
            let found = rag.retrieve(text, &options(mode, depth))?;
            embed_secs += found.embed_secs;
            runs.latency_ms[m].push(found.search_secs * 1e3);
            runs.hits[m].push(found.hits);
        }
        runs.embed_ms.push(embed_secs * 1e3);
        let exact: HashSet<u64> = rag
            .retrieve(text, &options(Mode::Exact, 10))?
            .hits
            .iter()
            .map(|h| h.chunk.chunk_id)
            .collect();
        let found = rag
            .retrieve(text, &options(Mode::Dense, 10))?
            .hits
            .iter()
            .filter(|h| exact.contains(&h.chunk.chunk_id))
            .count();
        runs.hnsw_recall
            .push(found as f64 / exact.len().max(1) as f64);
    }
    Ok(runs)
}

/// Document ids (file stems) of chunk hits, best first, each once.
fn documents_of(hits: &[Hit]) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for h in hits {
        let id = Path::new(&h.chunk.path)
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        if seen.insert(id.clone()) {
            out.push(id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_beir_set_and_writes_its_documents() {
        let dir = tempfile::tempdir().unwrap();
        let set_dir = dir.path().join("tiny");
        std::fs::create_dir_all(set_dir.join("qrels")).unwrap();
        std::fs::write(
            set_dir.join("corpus.jsonl"),
            "{\"_id\": \"d1\", \"title\": \"Cats\", \"text\": \"Cats purr.\"}\n\
             {\"_id\": \"d/2\", \"title\": \"\", \"text\": \"Dogs bark.\"}\n",
        )
        .unwrap();
        std::fs::write(
            set_dir.join("queries.jsonl"),
            "{\"_id\": \"q1\", \"text\": \"purring\"}\n{\"_id\": \"q2\", \"text\": \"unjudged\"}\n",
        )
        .unwrap();
        std::fs::write(
            set_dir.join("qrels/test.tsv"),
            "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq1\td/2\t0\r\n",
        )
        .unwrap();
        let set = BeirSet::load(&set_dir, "test").unwrap();
        assert_eq!(set.name, "tiny");
        assert_eq!(set.corpus.len(), 2);
        assert_eq!(set.queries, [("q1".to_string(), "purring".to_string())]);
        assert_eq!(set.qrels["q1"], HashSet::from(["d1".to_string()]));
        let docs = dir.path().join("docs");
        assert_eq!(set.write_docs(&docs).unwrap(), 2);
        assert_eq!(
            std::fs::read_to_string(docs.join("d1.md")).unwrap(),
            "# Cats\n\nCats purr.\n"
        );
        assert_eq!(
            std::fs::read_to_string(docs.join("d_2.md")).unwrap(),
            "Dogs bark.\n"
        );
        // Unchanged documents are not rewritten.
        assert_eq!(set.write_docs(&docs).unwrap(), 0);
        // A subset keeps the judged documents first.
        let mut sub = set.clone();
        sub.subset(1);
        assert_eq!(sub.name, "tiny-sub1");
        assert_eq!(sub.corpus.len(), 1);
        assert_eq!(sub.corpus[0].0, "d1");
        let mut sub = set.clone();
        sub.subset(5);
        assert_eq!(sub.corpus.len(), 2);
        let err = BeirSet::load(dir.path(), "test").unwrap_err().to_string();
        assert!(err.contains("corpus.jsonl"), "{err}");
    }

    #[test]
    fn a_document_ranks_at_its_best_chunk() {
        let hit = |id: u64, path: &str| Hit {
            chunk: rag_index::ChunkRecord {
                chunk_id: id,
                path: path.into(),
                content_hash: String::new(),
                title: None,
                heading: None,
                pages: None,
                byte_range: 0..1,
                modified: None,
                text: String::new(),
            },
            score: 0.0,
            bm25_rank: None,
            dense_rank: None,
            bm25_score: None,
            dense_score: None,
            found_by: rag_index::Retriever::Bm25,
        };
        let hits = [hit(1, "/x/7.md"), hit(2, "/x/3.md"), hit(3, "/x/7.md")];
        assert_eq!(documents_of(&hits), ["7", "3"]);
    }
}
