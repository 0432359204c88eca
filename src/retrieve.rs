//! The one retrieval path of `ask`, `search` and `eval`: hybrid search (BM25 + vectors, fused
//! by scaled scores, or by reciprocal ranks on request) or one retriever alone, near-duplicate
//! chunks collapsed, the top `k` kept; and a measure of how much the best passages cover the question ([`evidence`]), on which
//! rag abstains before asking the model anything. What to rank lives here; the index does the
//! searching.
use std::collections::HashSet;

use rag_index::{Filter, Fusion, Hit, SearchOptions, Store};
use rag_model::EmbedderKind;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which retrievers feed the passages.
///
/// ```
/// let mode: rag::Mode = "bm25".parse().unwrap();
/// assert_eq!(mode, rag::Mode::Bm25);
/// assert!(!mode.needs_vector() && rag::Mode::Hybrid.needs_vector());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// BM25 and HNSW, fused by reciprocal rank.
    #[default]
    Hybrid,
    /// BM25 only (no query embedding).
    Bm25,
    /// HNSW only.
    Dense,
    /// Exact (brute-force) nearest neighbours over the stored vectors: HNSW's reference.
    Exact,
}

impl Mode {
    /// The name on the command line and in reports.
    ///
    /// ```
    /// assert_eq!(rag::Mode::Exact.name(), "exact");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Hybrid => "hybrid",
            Self::Bm25 => "bm25",
            Self::Dense => "dense",
            Self::Exact => "exact",
        }
    }

    /// Whether the mode needs the query's vector (every mode but BM25).
    ///
    /// ```
    /// assert!(rag::Mode::Dense.needs_vector());
    /// ```
    pub fn needs_vector(self) -> bool {
        self != Self::Bm25
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "hybrid" => Ok(Self::Hybrid),
            "bm25" => Ok(Self::Bm25),
            "dense" => Ok(Self::Dense),
            "exact" => Ok(Self::Exact),
            _ => Err(format!(
                "unknown retrieval mode '{s}' (hybrid, bm25, dense, exact)"
            )),
        }
    }
}

/// Retrieval settings of [`crate::Rag::ask`], [`crate::Rag::search`] and
/// [`crate::Rag::retrieve`].
///
/// ```
/// let opts = rag::RetrieveOptions { k: 8, min_evidence: 0.3, ..Default::default() };
/// assert_eq!((opts.bm25_depth, opts.rrf_k), (50, 60.0));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrieveOptions {
    /// Passages handed to the model. Default 4: with 256-token chunks about 1,100 tokens of
    /// evidence, which a 135M model still reads in a few seconds; more passages mostly add
    /// distractors for a small model.
    pub k: usize,
    /// Depth of the BM25 list fed to the fusion. Default 50.
    pub bm25_depth: usize,
    /// Depth of the dense list fed to the fusion. Default 50.
    pub dense_depth: usize,
    /// The RRF constant, for fusion by reciprocal ranks ([`Fusion::Rrf`]). Default 60
    /// (Cormack et al., 2009).
    pub rrf_k: f64,
    /// Weight of the dense list in hybrid fusion (BM25's is 1). Default `None`: by the
    /// index's embedder, [`MINILM_DENSE_WEIGHT`] or [`LLAMA_DENSE_WEIGHT`].
    #[serde(default)]
    pub dense_weight: Option<f64>,
    /// How hybrid search combines its lists. Default `None`: by the index's embedder,
    /// [`MINILM_FUSION`] or [`LLAMA_FUSION`] (both scaled scores).
    #[serde(default)]
    pub fusion: Option<Fusion>,
    pub mode: Mode,
    /// Two chunks whose word-trigram sets overlap at least this much (Jaccard) count as one;
    /// the lower-ranked is dropped. Default `Some(0.8)`: copies of a file, or a page repeated
    /// across documents, collapse, while neighbouring chunks (sharing only their 32-token
    /// overlap) stay. `None` keeps every hit.
    pub duplicate_jaccard: Option<f64>,
    /// Below this evidence (how well the best passage covers the question's IDF-weighted terms,
    /// 0 to 1) the documents are taken not to hold the answer and the model is
    /// not asked. Default 0.4: on SQuAD it kept 81% of questions about indexed articles and
    /// turned away 93% of questions about other Wikipedia articles and all SciFact claims
    /// (README, Abstention).
    pub min_evidence: f32,
    /// Text put before the query for its embedding only (BM25 sees the bare query), as
    /// instruction-tuned embedders expect. Default `None`: both embedders rag ships retrieve
    /// worse with one (docs/EVAL.md).
    pub query_prefix: Option<String>,
    /// Which chunks may be retrieved. Default: all of them.
    #[serde(default)]
    pub filter: Filter,
}

impl Default for RetrieveOptions {
    fn default() -> Self {
        Self {
            k: 4,
            bm25_depth: 50,
            dense_depth: 50,
            rrf_k: 60.0,
            dense_weight: None,
            fusion: None,
            mode: Mode::Hybrid,
            duplicate_jaccard: Some(0.8),
            min_evidence: 0.4,
            query_prefix: None,
            filter: Filter::default(),
        }
    }
}

/// The weight of a Llama-states index's dense list in hybrid fusion ([`LLAMA_FUSION`]). An
/// untuned decoder's hidden states retrieve far worse than BM25 (SciFact subset nDCG@10: 0.25
/// mean-pooled against 0.795), and fused at equal weight they drag BM25 down. Fitted on the
/// first 150 SciFact test queries (the best of 0.1 to 1) and measured on the other 150: BM25
/// 0.765, hybrid 0.779 on standardized states (docs/EVAL.md).
pub const LLAMA_DENSE_WEIGHT: f64 = 0.2;

/// How a Llama-states index fuses its lists: by scaled scores, so that the weak dense list
/// moves a BM25 hit only where it is clearly surer of it than of the rest. Reciprocal ranks at
/// any weight gave nothing over BM25 alone (SciFact subset, standardized states: 0.792 at best
/// against BM25's 0.795; 0.807 this way; docs/EVAL.md).
pub const LLAMA_FUSION: Fusion = Fusion::Scores;

/// How a MiniLM index fuses its lists: by scaled scores too. Against reciprocal ranks on
/// SciFact (nDCG@10): full corpus 0.726 against 0.702, subset 0.846 against 0.831, and on
/// each half of the test queries apart (docs/EVAL.md).
pub const MINILM_FUSION: Fusion = Fusion::Scores;

/// The weight of a MiniLM index's dense list (BM25's is 1): the two count alike. Fitted on the
/// first 150 SciFact test queries (0.5 to 1.2; 1 best) and measured on the other 150: 0.704
/// against 0.677 by ranks.
pub const MINILM_DENSE_WEIGHT: f64 = 1.0;

/// Run the retrievers and return the top `opts.k` distinct hits, best first. `vector` is the
/// query embedding, which every mode but BM25 needs.
pub(crate) fn retrieve(
    index: &dyn Store,
    query: &str,
    vector: Option<&[f32]>,
    opts: &RetrieveOptions,
) -> Result<Vec<Hit>> {
    // Fetch extra so that collapsing duplicates still leaves k.
    let want = match opts.duplicate_jaccard {
        Some(_) => opts.k.saturating_mul(2).max(opts.k + 4),
        None => opts.k,
    };
    let vector = match (opts.mode, vector) {
        (Mode::Bm25, _) => &[][..],
        (_, Some(v)) => v,
        (mode, None) => {
            return Err(Error::InvalidOption(format!(
                "{} search needs the query's vector",
                mode.name()
            )))
        }
    };
    let filter = &opts.filter;
    let kind = EmbedderKind::of_id(&index.manifest().embedder_id);
    let hits = match opts.mode {
        Mode::Bm25 => index.bm25(query, want, filter)?,
        Mode::Dense => index.dense(vector, want, filter)?,
        Mode::Exact => index.exact(vector, want, filter)?,
        Mode::Hybrid => index.hybrid(
            query,
            vector,
            &SearchOptions {
                k: want,
                bm25_depth: opts.bm25_depth.max(want),
                dense_depth: opts.dense_depth.max(want),
                rrf_k: opts.rrf_k,
                dense_weight: opts.dense_weight.unwrap_or(match kind {
                    EmbedderKind::MiniLm => MINILM_DENSE_WEIGHT,
                    EmbedderKind::Llama => LLAMA_DENSE_WEIGHT,
                }),
                fusion: opts.fusion.unwrap_or(match kind {
                    EmbedderKind::MiniLm => MINILM_FUSION,
                    EmbedderKind::Llama => LLAMA_FUSION,
                }),
            },
            filter,
        )?,
    };
    let mut kept = match opts.duplicate_jaccard {
        Some(t) => collapse_duplicates(hits, t),
        None => hits,
    };
    kept.truncate(opts.k);
    Ok(kept)
}

/// Drop hits whose text nearly repeats a better-ranked hit's (word-trigram Jaccard >= `threshold`).
pub(crate) fn collapse_duplicates(hits: Vec<Hit>, threshold: f64) -> Vec<Hit> {
    let mut kept: Vec<(Hit, HashSet<u64>)> = Vec::new();
    for h in hits {
        let sh = shingles(&h.chunk.text);
        if kept.iter().any(|(_, s)| jaccard(s, &sh) >= threshold) {
            continue;
        }
        kept.push((h, sh));
    }
    kept.into_iter().map(|(h, _)| h).collect()
}

fn shingles(text: &str) -> HashSet<u64> {
    use std::hash::{Hash, Hasher};
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let n = 3.min(words.len().max(1));
    words
        .windows(n)
        .map(|w| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            w.hash(&mut h);
            h.finish()
        })
        .collect()
}

fn jaccard(a: &HashSet<u64>, b: &HashSet<u64>) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let inter = a.intersection(b).count();
    inter as f64 / (a.len() + b.len() - inter) as f64
}

/// Words that carry no topic; left out of the question before [`evidence`] weighs its terms.
const STOPWORDS: &[&str] = &[
    "a",
    "about",
    "according",
    "all",
    "also",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "been",
    "being",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "for",
    "from",
    "had",
    "has",
    "have",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "many",
    "me",
    "much",
    "my",
    "name",
    "named",
    "of",
    "on",
    "or",
    "other",
    "our",
    "so",
    "some",
    "tell",
    "than",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "to",
    "type",
    "us",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "whose",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
];

/// The topic terms of `text` as the index analyses them: stopwords dropped, then tokenized,
/// folded and stemmed like the BM25 field.
pub(crate) fn topic_terms(index: &dyn Store, text: &str) -> Vec<String> {
    index.analyze(&without_stopwords(text))
}

/// The question's topic terms (stopwords dropped, analysed as BM25 does) with their IDF
/// weights in the index.
pub(crate) fn question_weights(index: &dyn Store, question: &str) -> Result<Vec<(String, f32)>> {
    Ok(index.term_weights(&without_stopwords(question))?)
}

/// Whether `word` carries no topic (see [`STOPWORDS`]).
pub(crate) fn is_stopword(word: &str) -> bool {
    STOPWORDS.contains(&word.to_lowercase().as_str())
}

/// Words that, right after "how", ask for a kind of answer ("how long": a duration) rather
/// than name the topic: a passage that answers "How long does the crossing take?" says "35
/// minutes", not "long".
const HOW_WORDS: &[&str] = &[
    "big", "far", "high", "large", "long", "many", "much", "often", "old", "soon", "tall",
];

/// A fiscal year's digits without their "FY" ("FY2023" gives "2023", "fy23" gives "23"); any
/// other word as it is.
pub(crate) fn without_fiscal_prefix(word: &str) -> &str {
    match word.get(..2) {
        Some(p)
            if p.eq_ignore_ascii_case("fy")
                && word.len() >= 4
                && word[2..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &word[2..]
        }
        _ => word,
    }
}

/// Words that ask for an answer rather than say what it is about. A question put as "Give a
/// response relying on the details shown in the report: what were net sales?" holds them, and
/// no passage does: as topic terms they would count as missing (with the largest weight, as
/// terms the corpus never uses) and turn the question away. Verbs that are often the topic
/// ("How can a subscriber respond to a takedown?") are not in the list.
const REQUEST_WORDS: &[&str] = &[
    "answer", "briefly", "describe", "details", "explain", "give", "please", "provide", "question",
    "relying", "response", "shown",
];

/// The words of `text` that are not [`STOPWORDS`], [`REQUEST_WORDS`] nor a [`HOW_WORDS`]
/// word after "how", joined by spaces. A fiscal year written "FY2023" keeps its year: reports
/// write "fiscal 2023", or only "2023".
fn without_stopwords(text: &str) -> String {
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut kept = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let lower = w.to_lowercase();
        let after_how = i > 0 && words[i - 1].eq_ignore_ascii_case("how");
        if STOPWORDS.contains(&lower.as_str())
            || REQUEST_WORDS.contains(&lower.as_str())
            || (after_how && HOW_WORDS.contains(&lower.as_str()))
            || lower == "fy"
        {
            continue;
        }
        kept.push(without_fiscal_prefix(w));
    }
    kept.join(" ")
}

/// How well the best of `hits` covers the question, from 0 to 1: for each hit, the share of
/// the question's topic terms (stopwords dropped, then analysed as BM25 does) that the hit's
/// text, heading or title holds, each term weighted by its inverse document frequency; the
/// maximum over hits. Rare terms dominate, so a question whose distinctive words the corpus
/// never mentions scores low even when common words match. 1.0 when the question has no topic
/// term at all (nothing to check).
pub(crate) fn evidence(index: &dyn Store, question: &str, hits: &[Hit]) -> Result<f32> {
    let weights = question_weights(index, question)?;
    let total: f32 = weights.iter().map(|(_, w)| w).sum();
    if weights.is_empty() || total <= 0.0 {
        return Ok(1.0);
    }
    let mut best = 0f32;
    for h in hits {
        let c = &h.chunk;
        let mut terms: HashSet<String> = index.analyze(&c.text).into_iter().collect();
        for extra in [&c.heading, &c.title].into_iter().flatten() {
            terms.extend(index.analyze(extra));
        }
        let got: f32 = weights
            .iter()
            .filter(|(t, _)| terms.contains(t))
            .map(|(_, w)| w)
            .sum();
        best = best.max(got / total);
    }
    Ok(best)
}

/// An index of `texts`, one document each, in `dir` (tests): the first chunk under
/// `first_heading`, two-dimensional vectors.
#[cfg(test)]
pub(crate) fn small_index(
    dir: &std::path::Path,
    texts: &[&str],
    first_heading: Option<&str>,
) -> rag_index::Index {
    let mut w = rag_index::IndexWriter::open(dir, "test", 2, false).unwrap();
    for (i, t) in texts.iter().enumerate() {
        let c = rag_index::NewChunk {
            text: t.to_string(),
            title: None,
            heading: first_heading.filter(|_| i == 0).map(str::to_string),
            pages: None,
            byte_range: 0..t.len(),
            modified: None,
            vector: vec![1.0, i as f32],
        };
        w.replace_document(&format!("/d/{i}.txt"), "h", vec![c])
            .unwrap();
    }
    w.commit().unwrap();
    rag_index::Index::open(dir).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn how_long_asks_for_a_duration_not_about_length() {
        assert_eq!(
            without_stopwords("How long does the ferry crossing take?"),
            "ferry crossing take"
        );
        assert_eq!(
            without_stopwords("How many bridges are long?"),
            "bridges long"
        );
    }

    #[test]
    fn requests_and_fiscal_year_prefixes_are_not_topic_terms() {
        assert_eq!(
            without_stopwords(
                "Give a response relying on the details shown: what were FY2023 net sales?"
            ),
            "2023 net sales"
        );
        assert_eq!(
            without_stopwords("Capital expenditure in FY 2022"),
            "Capital expenditure 2022"
        );
        // Only a prefix before digits goes.
        assert_eq!(without_stopwords("The Fyn ferry"), "Fyn ferry");
    }
    use rag_index::{ChunkRecord, Retriever};

    fn hit(id: u64, text: &str) -> Hit {
        Hit {
            chunk: ChunkRecord {
                chunk_id: id,
                path: format!("/d/{id}.txt"),
                content_hash: "h".into(),
                title: None,
                heading: None,
                pages: None,
                byte_range: 0..text.len(),
                modified: None,
                text: text.to_string(),
            },
            score: 1.0,
            bm25_rank: None,
            dense_rank: None,
            bm25_score: None,
            dense_score: None,
            found_by: Retriever::Both,
        }
    }

    #[test]
    fn duplicates_collapse_to_the_best_ranked() {
        let a = "The Zorblat bridge was built in 1887 by the river authority of Tamsk.";
        let b = "The Zorblat bridge was built in 1887 by the river authority of Tamsk!";
        let c = "Tamsk lies on the river Vel and has a population of about forty thousand.";
        let out = collapse_duplicates(vec![hit(1, a), hit(2, c), hit(3, b)], 0.8);
        let ids: Vec<u64> = out.iter().map(|h| h.chunk.chunk_id).collect();
        assert_eq!(ids, [1, 2]);
        // A lower threshold is stricter about what counts as different.
        let half =
            "The Zorblat bridge was built in 1887 by engineers from somewhere else entirely.";
        assert_eq!(
            collapse_duplicates(vec![hit(1, a), hit(2, half)], 0.8).len(),
            2
        );
        assert_eq!(
            collapse_duplicates(vec![hit(1, a), hit(2, half)], 0.2).len(),
            1
        );
    }

    #[test]
    fn evidence_weighs_rare_question_terms() {
        let dir = tempfile::tempdir().unwrap();
        let texts = [
            "The Zorblat bridge was designed by Marta Okonkwo and opened in 1912.",
            "The library opens at ten in the morning and closes in the evening.",
            "The ferry leaves the pier in the morning and in the evening.",
            "The festival takes place in October in the town.",
        ];
        let idx = small_index(dir.path(), &texts, Some("Harbour bridge"));
        let hits: Vec<Hit> = idx.search_bm25("anything", 0).unwrap();
        assert!(hits.is_empty());
        let all: Vec<Hit> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| hit(i as u64, t))
            .collect();
        let ev = |q: &str, hs: &[Hit]| evidence(&idx, q, hs).unwrap();
        // Every topic term is in the first text.
        assert!((ev("Who designed the Zorblat bridge?", &all[..1]) - 1.0).abs() < 1e-6);
        // Stemming: "designer" matches "designed".
        assert!((ev("Zorblat bridge designer", &all[..1]) - 1.0).abs() < 1e-6);
        // The best hit counts, not the first.
        assert!(
            (ev("Who designed the Zorblat bridge?", &all[1..])
                - ev("Who designed the Zorblat bridge?", &all))
            .abs()
                > 0.5
        );
        // Common words match but the distinctive ones do not: low.
        let off = ev("What is the boiling point of mercury in the morning?", &all);
        assert!(off < 0.4, "{off}");
        // Only stopwords: nothing to check.
        assert_eq!(ev("What is it?", &all), 1.0);
        // No hits, real question: zero.
        assert_eq!(ev("Zorblat bridge", &[]), 0.0);
        // Heading terms count.
        let mut h = hit(9, "Opened in 1912.");
        h.chunk.heading = Some("Harbour bridge".into());
        assert!((ev("harbour bridge", &[h]) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn jaccard_edges() {
        let e = HashSet::new();
        assert_eq!(jaccard(&e, &e), 1.0);
        assert_eq!(shingles("one two").len(), 1);
        assert_eq!(shingles("").len(), 0);
    }
}
