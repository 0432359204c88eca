//! Answer quality on SQuAD v1.1 dev: a seeded sample of questions asked over an index of the
//! SQuAD articles, with retrieval and (optionally) closed book on the same model.
//!
//! Per mode it reports the recall of the gold paragraph among the retrieved passages, SQuAD
//! exact match and token F1 (official v1.1 normalisation, best over the gold answers), whether a
//! gold answer is contained in the answer (the telling number for a model that writes sentences,
//! not spans), citation accuracy, the abstention rate and speed.
//!
//! # Which passage holds the gold paragraph
//!
//! An article file is a title line, a blank line, then the paragraphs separated by blank lines
//! (`SOURCE.md` of the data set). The article is loaded with the same loader ingest uses
//! ([`rag_ingest::load`]), so its normalised text is exactly the text the index's
//! [`ChunkRecord::byte_range`]s point into (checked: the index must hold the same content hash).
//! Normalisation keeps blank lines as `"\n\n"` and never puts one inside a paragraph, so
//! paragraph N is block N + 1 of that text split at `"\n\n"` (block 0 is the title).
//!
//! A chunk of the gold article *holds* the gold paragraph when their byte ranges overlap by at
//! least half of the paragraph or at least half of the chunk (see [`holds_gold`]). Any overlap
//! would be too lenient: chunks repeat about 32 tokens of the previous chunk, so the chunk after
//! the gold paragraph starts with its last sentence, and a chunk before it may end with its first.
//! Half of the paragraph covers the chunk that holds the whole paragraph beside parts of its
//! neighbours; half of the chunk covers a long paragraph cut into several chunks, each mostly
//! gold. Byte ranges, not text matching, so that a paragraph repeated elsewhere does not count.
//! As a model-free check of the same thing the report also gives `answer_recall_at_k`: a gold
//! answer (normalised, whole words) occurs in a retrieved passage.
use std::collections::HashMap;
use std::io::BufRead;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rag::{
    AbstainReason, Answer, AskOptions, ChunkRecord, Error, IngestOptions, IngestReport, Rag, Result,
};
use serde::{Deserialize, Serialize};

use super::metrics::mean_of as mean;
use crate::cli::config::shared_dir;

/// Which SQuAD questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum QaSet {
    /// SQuAD v1.1 dev (48 articles): every question has an answer in its paragraph.
    Squad1,
    /// The SQuAD v2.0 dev half (18 articles): half the questions look answerable from their
    /// paragraph but are not.
    Squad2,
}

impl QaSet {
    /// The data folder in `$RAG_SHARED/data`.
    pub fn folder(self) -> &'static str {
        match self {
            Self::Squad1 => "squad-v1.1-dev",
            Self::Squad2 => "squad-v2.0-dev-half",
        }
    }

    /// The index name in `$RAG_HOME/eval` (with `-EMBEDDER`).
    pub fn index_name(self) -> &'static str {
        match self {
            Self::Squad1 => "squad",
            Self::Squad2 => "squad2",
        }
    }
}

/// Which articles' questions are asked: the articles sorted by name, split alternately, so that
/// what is fitted on one half is measured on the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    All,
    /// Articles 1st, 3rd, 5th, ... (what the answerability decision is fitted on).
    Fit,
    /// Articles 2nd, 4th, 6th, ... (what it is measured on).
    Report,
}

impl Split {
    fn keeps(self, article_rank: usize) -> bool {
        match self {
            Self::All => true,
            Self::Fit => article_rank.is_multiple_of(2),
            Self::Report => !article_rank.is_multiple_of(2),
        }
    }
}

/// Settings of [`eval_qa`].
#[derive(Debug, Clone, PartialEq)]
pub struct QaOptions {
    /// The question set (names the default files below).
    pub set: QaSet,
    /// Which articles' questions are asked. Default all.
    pub split: Split,
    /// The questions, one JSON object a line (`id`, `question`, `answers`, `article_file`,
    /// `paragraph_index`). Default `$RAG_SHARED/data/squad-v1.1-dev/questions.jsonl`, where
    /// `RAG_SHARED` defaults to `../shared` beside the repository root.
    pub questions: PathBuf,
    /// The folder of article files (`<title>.txt`); a question's article is the file of its
    /// `article_file`'s name here. Default `$RAG_SHARED/data/squad-v1.1-dev/articles`.
    pub articles: PathBuf,
    /// Questions asked, drawn at random (seeded) from those eligible; 0 means all of them.
    /// Default 300: a standard error of about 2.5 points on a share near 50%.
    pub sample: usize,
    /// Seed of the sample. Default 2016 (SQuAD's year): the same seed asks the same questions.
    pub seed: u64,
    /// Only questions whose article is among the first N article files (sorted by name), so that
    /// an index of those N suffices. Default `None`: all articles.
    pub articles_limit: Option<usize>,
    /// Also ask each question closed book (no retrieval) on the same model. Default false.
    pub closed_book: bool,
    /// How to ask (retrieval and generation); `closed_book` in it is ignored (the retrieval mode
    /// sets it false, the closed-book mode true). Default [`AskOptions::default`]; its
    /// `retrieve.k` is the k of recall@k.
    pub ask: AskOptions,
}

impl QaOptions {
    /// The defaults for `set`: its questions and articles in `$RAG_SHARED`.
    pub fn for_set(set: QaSet) -> Self {
        let data = shared_dir().join("data").join(set.folder());
        Self {
            set,
            questions: data.join("questions.jsonl"),
            articles: data.join("articles"),
            ..Self::default()
        }
    }
}

impl Default for QaOptions {
    fn default() -> Self {
        let data = shared_dir().join("data/squad-v1.1-dev");
        Self {
            set: QaSet::Squad1,
            split: Split::All,
            questions: data.join("questions.jsonl"),
            articles: data.join("articles"),
            sample: 300,
            seed: 2016,
            articles_limit: None,
            closed_book: false,
            ask: AskOptions::default(),
        }
    }
}

/// One SQuAD question as `questions.jsonl` holds it.
#[derive(Debug, Clone, Deserialize)]
pub struct QaQuestion {
    pub id: String,
    pub question: String,
    /// Every gold answer text (duplicates included, as in the data set).
    pub answers: Vec<String>,
    /// The article file, relative to the data set folder (`articles/X.txt`).
    pub article_file: String,
    /// The gold paragraph: 0-based paragraph of the article.
    pub paragraph_index: usize,
    /// SQuAD 2.0: the paragraph does not answer the question (`answers` is empty).
    #[serde(default)]
    pub is_impossible: bool,
}

/// The result of [`eval_qa`].
#[derive(Debug, Clone, Serialize)]
pub struct QaReport {
    pub set: QaSet,
    pub split: Split,
    pub questions_file: PathBuf,
    pub articles: PathBuf,
    /// Questions eligible (about the articles in scope) before sampling.
    pub eligible: usize,
    /// The requested sample size (0 = all).
    pub sample: usize,
    pub seed: u64,
    pub articles_limit: Option<usize>,
    /// The k of recall@k: passages retrieved per question.
    pub k: usize,
    /// When the run started, in seconds since the Unix epoch.
    pub started_unix: u64,
    pub retrieval: ModeMetrics,
    pub closed_book: Option<ModeMetrics>,
    /// The answerability trade-off at thresholds 0, 0.05, ..., 1 (quote mode; empty when no
    /// decision was made).
    pub curve: Vec<CurvePoint>,
    /// Every question asked, in the order asked.
    pub items: Vec<QaItem>,
}

/// Metrics of one mode over the sample. Shares are between 0 and 1.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModeMetrics {
    /// Questions asked.
    pub n: usize,
    /// Share whose gold paragraph is in the first retrieved passage (`None` closed book).
    pub recall_at_1: Option<f64>,
    /// Share whose gold paragraph is among the k retrieved passages (`None` closed book).
    pub recall_at_k: Option<f64>,
    /// Share where a gold answer occurs (normalised, whole words) in a retrieved passage.
    pub answer_recall_at_k: Option<f64>,
    /// SQuAD exact match, best over the gold answers (0 when abstained).
    pub exact_match: f64,
    /// SQuAD token F1, best over the gold answers (0 when abstained).
    pub f1: f64,
    /// Share where a normalised gold answer occurs, as whole words, in the normalised answer.
    pub contained: f64,
    /// Among answered questions with at least one citation, the share where a cited passage
    /// holds the gold paragraph (`None` closed book or when no answer cites).
    pub citation_accuracy: Option<f64>,
    /// Answered questions with at least one citation (the denominator above).
    pub cited: usize,
    /// Of those, how many citations rag inferred because the model gave none.
    pub cited_inferred: usize,
    /// Share of questions answered "not found".
    pub abstained: f64,
    /// Of the abstentions, how many retrieval decided before asking the model.
    pub abstained_no_evidence: usize,
    /// Mean seconds per question, without the one-time model and index load.
    pub secs_per_question: f64,
    /// Mean prompt tokens/s over questions the model read (`None` if it read none).
    pub prefill_tok_s: Option<f64>,
    /// Mean generated tokens/s over questions the model answered (`None` if none).
    pub decode_tok_s: Option<f64>,
    pub mean_prompt_tokens: f64,
    pub mean_generated_tokens: f64,
    /// Questions whose paragraph answers them, and SQuAD 2.0's others.
    pub answerable: usize,
    pub unanswerable: usize,
    /// Share of the answerable questions answered (not abstained).
    pub answered_answerable: Option<f64>,
    /// Share of the unanswerable questions abstained on.
    pub abstained_unanswerable: Option<f64>,
    /// F1 and containment over the answerable questions only.
    pub f1_answerable: Option<f64>,
    pub contained_answerable: Option<f64>,
    /// SQuAD 2.0's official F1 over all questions (an unanswerable one scores 1 when abstained).
    pub squad2_f1: f64,
}

/// One point of the answerability trade-off: with this threshold, the share of answerable
/// questions answered and of unanswerable ones abstained on, SQuAD 2.0's F1 and F1 over the
/// answerable ones.
#[derive(Debug, Clone, Serialize)]
pub struct CurvePoint {
    pub threshold: f32,
    pub answered_answerable: f64,
    pub abstained_unanswerable: f64,
    pub squad2_f1: f64,
    pub f1_answerable: f64,
}

/// The trade-off of the answerability threshold over `items` (retrieval mode): at each
/// threshold, a question is answered with its candidate quote when its decision's probability
/// reaches it; questions without a decision (turned away at the evidence gate) stay abstained.
pub fn curve(items: &[QaItem], thresholds: &[f32]) -> Vec<CurvePoint> {
    let n_ans = items.iter().filter(|i| !i.is_impossible).count().max(1) as f64;
    let n_un = items.iter().filter(|i| i.is_impossible).count().max(1) as f64;
    thresholds
        .iter()
        .map(|&t| {
            let (mut answered, mut abstained, mut f1, mut f1_all) = (0.0, 0.0, 0.0, 0.0);
            for it in items {
                let d = it.retrieval.decision.as_ref();
                let answers = d.is_some_and(|d| d.answerable >= t);
                if it.is_impossible {
                    if !answers {
                        abstained += 1.0;
                        f1_all += 1.0;
                    }
                } else if answers {
                    answered += 1.0;
                    let c = d.map_or(0.0, |d| d.candidate_f1);
                    f1 += c;
                    f1_all += c;
                }
            }
            CurvePoint {
                threshold: t,
                answered_answerable: answered / n_ans,
                abstained_unanswerable: abstained / n_un,
                squad2_f1: f1_all / items.len().max(1) as f64,
                f1_answerable: f1 / n_ans,
            }
        })
        .collect()
}

/// One question and what each mode made of it.
#[derive(Debug, Clone, Serialize)]
pub struct QaItem {
    pub id: String,
    pub question: String,
    pub gold: Vec<String>,
    pub article_file: String,
    pub paragraph_index: usize,
    /// SQuAD 2.0: the documents do not answer it (abstaining is right).
    pub is_impossible: bool,
    pub retrieval: QaOutcome,
    pub closed_book: Option<QaOutcome>,
}

/// The answerability decision on one quoted answer, and how good the quote was.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    /// The estimated probability that the documents answer the question.
    pub answerable: f32,
    pub threshold: f32,
    /// The quote the decision was about.
    pub candidate: String,
    /// Its F1 and containment against the gold answers (0 / false for unanswerable).
    pub candidate_f1: f64,
    pub candidate_contained: bool,
    /// Whether a gold answer occurs in the quote's sentence.
    pub sentence_contains_gold: bool,
    pub features: std::collections::BTreeMap<String, f32>,
    /// The prompt's last hidden state (for fitting the probe; not serialised).
    #[serde(skip)]
    pub hidden: Vec<f32>,
    /// Every span quote mode scored, when the run fits (`--fit`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<SpanRecord>,
}

/// A span quote mode scored, its F1 against the gold answers and its features
/// ([`rag::answerability::SPAN_FEATURES`]).
#[derive(Debug, Clone, Serialize)]
pub struct SpanRecord {
    pub text: String,
    pub f1: f64,
    pub features: Vec<f32>,
}

/// One answer, scored.
#[derive(Debug, Clone, Serialize)]
pub struct QaOutcome {
    /// The answer as rag gave it (citation markers included).
    pub answer: String,
    /// SQuAD 2.0's F1: the F1 of an answerable question, and for an unanswerable one 1 when
    /// abstained, else 0.
    pub squad2_f1: f64,
    /// The answerability decision (quote mode, when the model was asked).
    pub decision: Option<DecisionRecord>,
    pub abstained: bool,
    pub abstain_reason: Option<AbstainReason>,
    pub exact_match: bool,
    pub f1: f64,
    pub contained: bool,
    /// 1-based rank of the first retrieved passage holding the gold paragraph.
    pub gold_rank: Option<usize>,
    /// Whether a gold answer occurs in a retrieved passage (`None` closed book).
    pub answer_in_passages: Option<bool>,
    /// Passage numbers cited.
    pub citations: Vec<usize>,
    pub citations_inferred: bool,
    /// Whether a cited passage holds the gold paragraph (`None` without citations).
    pub citation_hit: Option<bool>,
    pub secs: f64,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
}

/// The article files in `articles` (`*.txt`), sorted by name, the first `limit` of them.
pub fn article_files(articles: &Path, limit: Option<usize>) -> Result<Vec<PathBuf>> {
    let io = |source| Error::Io {
        path: articles.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(articles).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "txt") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if let Some(n) = limit {
        files.truncate(n);
    }
    Ok(files)
}

/// Ingest the first `limit` article files of `articles` (all with `None`) into `rag`'s index.
/// Incremental: files already indexed unchanged are neither read again nor embedded.
pub fn ensure_ingested(rag: &Rag, articles: &Path, limit: Option<usize>) -> Result<IngestReport> {
    let files = article_files(articles, limit)?;
    if files.is_empty() {
        return Err(Error::InvalidOption(format!(
            "no article files (*.txt) in {}",
            articles.display()
        )));
    }
    rag.ingest_with(&files, &IngestOptions::default(), &mut |_| {})
}

/// Read the questions file.
pub fn read_questions(path: &Path) -> Result<Vec<QaQuestion>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let q: QaQuestion = serde_json::from_str(&line)
            .map_err(|e| data_error(path, format!("line {}: {e}", i + 1)))?;
        out.push(q);
    }
    Ok(out)
}

fn data_error(path: &Path, msg: String) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, msg),
    }
}

/// A gold article: where the index keeps it and where its paragraphs lie.
struct GoldArticle {
    /// The document path as the index stores it (canonical).
    key: String,
    /// Byte ranges of the paragraphs in the normalised text (title excluded).
    paragraphs: Vec<Range<usize>>,
}

impl GoldArticle {
    fn load(path: &Path, indexed: &HashMap<String, String>) -> Result<Self> {
        let canon = std::fs::canonicalize(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let key = canon.to_string_lossy().into_owned();
        let doc = rag_ingest::load(&canon).map_err(|e| data_error(path, e.to_string()))?;
        match indexed.get(&key) {
            Some(h) if *h == doc.content_hash => {}
            Some(_) => {
                return Err(data_error(
                    path,
                    "the index holds another version of this article: ingest the articles again"
                        .into(),
                ))
            }
            None => {
                return Err(data_error(
                    path,
                    "this article is not in the index: ingest the articles folder first".into(),
                ))
            }
        }
        let mut blocks = blocks(&doc.text);
        if !blocks.is_empty() {
            blocks.remove(0); // the title line
        }
        Ok(Self {
            key,
            paragraphs: blocks,
        })
    }

    fn holds(&self, chunk: &ChunkRecord, paragraph: usize) -> bool {
        chunk.path == self.key
            && self
                .paragraphs
                .get(paragraph)
                .is_some_and(|p| holds_gold(&chunk.byte_range, p))
    }
}

/// Byte ranges of the blocks of `text` separated by blank lines (`"\n\n"`, as normalised text
/// writes them), empty blocks left out.
pub fn blocks(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, _) in text.match_indices("\n\n") {
        if i > start {
            out.push(start..i);
        }
        start = i + 2;
    }
    if start < text.len() {
        out.push(start..text.len());
    }
    out
}

/// Whether a chunk at `chunk` holds the gold paragraph at `gold` (byte ranges in the same
/// document): they overlap by at least half of the paragraph or at least half of the chunk.
pub fn holds_gold(chunk: &Range<usize>, gold: &Range<usize>) -> bool {
    let overlap = chunk
        .end
        .min(gold.end)
        .saturating_sub(chunk.start.max(gold.start));
    overlap > 0 && (2 * overlap >= gold.len() || 2 * overlap >= chunk.len())
}

/// SQuAD v1.1 answer normalisation (the official script's `normalize_answer`): lowercase,
/// remove ASCII punctuation, remove the articles a, an, the (as whole words), collapse
/// whitespace.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    // `re.sub(r'\b(a|an|the)\b', ' ', text)`: a run of word characters (Python's `\w`: letters,
    // digits, underscore) equal to an article becomes a space.
    let mut no_articles = String::with_capacity(no_punct.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if matches!(word.as_str(), "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in no_punct.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut no_articles);
            no_articles.push(c);
        }
    }
    flush(&mut word, &mut no_articles);
    no_articles.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// SQuAD exact match: the normalised texts are equal.
pub fn exact_match(prediction: &str, gold: &str) -> bool {
    normalize_answer(prediction) == normalize_answer(gold)
}

/// SQuAD token F1 of the normalised texts (bag of tokens); 0 when either has no tokens.
pub fn f1_score(prediction: &str, gold: &str) -> f64 {
    let p = normalize_answer(prediction);
    let g = normalize_answer(gold);
    let p: Vec<&str> = p.split_whitespace().collect();
    let g: Vec<&str> = g.split_whitespace().collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &g {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0usize;
    for t in &p {
        if let Some(c) = counts.get_mut(t) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Whether a normalised gold answer occurs in the normalised `text` as whole words (a gold
/// answer that normalises to nothing never does).
pub fn contains_answer(text: &str, gold: &str) -> bool {
    let g = normalize_answer(gold);
    !g.is_empty() && format!(" {} ", normalize_answer(text)).contains(&format!(" {g} "))
}

/// The best of `metric` over the gold answers (0 for none).
pub fn best_over_gold(golds: &[String], metric: impl Fn(&str) -> f64) -> f64 {
    golds.iter().map(|g| metric(g)).fold(0.0, f64::max)
}

/// `text` without citation markers (`[1]`, `[1, 3]`) and the spaces before them.
pub fn strip_citations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let (before, after) = rest.split_at(open);
        let marker = after.find(']').map(|close| &after[..=close]).filter(|m| {
            let inner = &m[1..m.len() - 1];
            inner.chars().any(|c| c.is_ascii_digit())
                && inner
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == ' ')
        });
        match marker {
            Some(m) => {
                out.push_str(before.trim_end());
                rest = &after[m.len()..];
            }
            None => {
                out.push_str(before);
                out.push('[');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out.trim().to_string()
}

/// splitmix64 (Steele, Lea and Flood, 2014): a tiny, well-mixed deterministic generator.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `k` distinct indices of `0..n` in random order fixed by `seed` (a Fisher-Yates shuffle with
/// [`SplitMix64`], cut to `k`); all `n` when `k` is 0 or at least `n`.
pub fn sample_indices(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(seed);
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        idx.swap(i, j);
    }
    if k > 0 {
        idx.truncate(k);
    }
    idx
}

/// Ask a seeded sample of SQuAD questions over `rag`'s index (which must already hold the
/// articles in scope, see [`ensure_ingested`]) and score the answers. `progress(done, total)`
/// is called after each question (both modes).
pub fn eval_qa(
    rag: &Rag,
    opts: &QaOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<QaReport> {
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let in_scope = article_files(&opts.articles, opts.articles_limit)?;
    let names: HashMap<String, PathBuf> = in_scope
        .iter()
        .enumerate()
        .filter(|(rank, _)| opts.split.keeps(*rank))
        .filter_map(|(_, p)| Some((p.file_name()?.to_str()?.to_string(), p.clone())))
        .collect();
    let file_name = |q: &QaQuestion| {
        Path::new(&q.article_file)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string()
    };
    let eligible: Vec<QaQuestion> = read_questions(&opts.questions)?
        .into_iter()
        .filter(|q| names.contains_key(&file_name(q)))
        .collect();
    if eligible.is_empty() {
        return Err(data_error(
            &opts.questions,
            format!(
                "no question is about an article file in {}",
                opts.articles.display()
            ),
        ));
    }
    let chosen = sample_indices(eligible.len(), opts.sample, opts.seed);

    let mut with_retrieval = opts.ask.clone();
    with_retrieval.closed_book = false;
    let mut closed = opts.ask.clone();
    closed.closed_book = true;

    let indexed: HashMap<String, String> = rag
        .documents()?
        .into_iter()
        .map(|d| (d.path, d.content_hash))
        .collect();
    let mut gold_articles: HashMap<String, GoldArticle> = HashMap::new();
    let mut items = Vec::with_capacity(chosen.len());
    for (done, &i) in chosen.iter().enumerate() {
        let q = &eligible[i];
        let name = file_name(q);
        if !gold_articles.contains_key(&name) {
            let a = GoldArticle::load(&names[&name], &indexed)?;
            gold_articles.insert(name.clone(), a);
        }
        let gold = &gold_articles[&name];
        if q.paragraph_index >= gold.paragraphs.len() {
            return Err(data_error(
                &names[&name],
                format!(
                    "question {} names paragraph {} but the article has {}",
                    q.id,
                    q.paragraph_index,
                    gold.paragraphs.len()
                ),
            ));
        }

        let answer = rag.ask_with(&q.question, &with_retrieval)?;
        let hits = retrieve_like_ask(rag, &q.question, &with_retrieval)?;
        let mut outcome = score(&answer, q);
        outcome.gold_rank = hits
            .iter()
            .position(|c| gold.holds(c, q.paragraph_index))
            .map(|r| r + 1);
        outcome.answer_in_passages = Some(
            hits.iter()
                .any(|c| q.answers.iter().any(|g| contains_answer(&c.text, g))),
        );
        if !answer.abstained && !answer.citations.is_empty() {
            let mut hit = false;
            for c in &answer.citations {
                if let Some(rec) = rag.passage(c.chunk_id)? {
                    hit |= gold.holds(&rec, q.paragraph_index);
                }
            }
            outcome.citation_hit = Some(hit);
        }

        let closed_outcome = if opts.closed_book {
            let a = rag.ask_with(&q.question, &closed)?;
            Some(score(&a, q))
        } else {
            None
        };
        items.push(QaItem {
            id: q.id.clone(),
            question: q.question.clone(),
            gold: q.answers.clone(),
            article_file: q.article_file.clone(),
            paragraph_index: q.paragraph_index,
            is_impossible: q.is_impossible,
            retrieval: outcome,
            closed_book: closed_outcome,
        });
        progress(done + 1, chosen.len());
    }

    let retrieval: Vec<(&QaOutcome, bool)> = items
        .iter()
        .map(|it| (&it.retrieval, it.is_impossible))
        .collect();
    let closed: Vec<(&QaOutcome, bool)> = items
        .iter()
        .filter_map(|it| it.closed_book.as_ref().map(|o| (o, it.is_impossible)))
        .collect();
    let curve = if items.iter().any(|i| i.retrieval.decision.is_some()) {
        let thresholds: Vec<f32> = (0..=20).map(|i| i as f32 / 20.0).collect();
        self::curve(&items, &thresholds)
    } else {
        Vec::new()
    };
    Ok(QaReport {
        set: opts.set,
        split: opts.split,
        curve,
        questions_file: opts.questions.clone(),
        articles: opts.articles.clone(),
        eligible: eligible.len(),
        sample: opts.sample,
        seed: opts.seed,
        articles_limit: opts.articles_limit,
        k: opts.ask.retrieve.k,
        started_unix,
        retrieval: aggregate(&retrieval, true),
        closed_book: opts.closed_book.then(|| aggregate(&closed, false)),
        items,
    })
}

/// The passages [`Rag::ask`] retrieves for `question` under `opts` (the same retrieval step),
/// as stored chunks with their byte ranges.
fn retrieve_like_ask(rag: &Rag, question: &str, opts: &AskOptions) -> Result<Vec<ChunkRecord>> {
    let found = rag.retrieve(question.trim(), &opts.retrieve)?;
    Ok(found.hits.into_iter().map(|h| h.chunk).collect())
}

/// EM, F1 and containment of one answer (0 when abstained), SQuAD 2.0's F1 (an unanswerable
/// question scores 1 when abstained), the answerability decision, timings; retrieval fields
/// empty.
fn score(answer: &Answer, q: &QaQuestion) -> QaOutcome {
    let golds = &q.answers;
    let text = strip_citations(&answer.answer);
    let (em, f1, contained) = if answer.abstained {
        (false, 0.0, false)
    } else {
        (
            golds.iter().any(|g| exact_match(&text, g)),
            best_over_gold(golds, |g| f1_score(&text, g)),
            golds.iter().any(|g| contains_answer(&text, g)),
        )
    };
    let t = &answer.timings;
    let squad2_f1 = if q.is_impossible {
        if answer.abstained {
            1.0
        } else {
            0.0
        }
    } else {
        f1
    };
    let decision = answer.decision.as_ref().map(|d| DecisionRecord {
        answerable: d.answerable,
        threshold: d.threshold,
        candidate_f1: best_over_gold(golds, |g| f1_score(&d.candidate, g)),
        candidate_contained: golds.iter().any(|g| contains_answer(&d.candidate, g)),
        sentence_contains_gold: golds
            .iter()
            .any(|g| contains_answer(&d.candidate_sentence, g)),
        candidate: d.candidate.clone(),
        features: d.features.clone(),
        hidden: d.hidden.clone(),
        spans: d
            .candidates
            .iter()
            .map(|c| SpanRecord {
                f1: if q.is_impossible {
                    0.0
                } else {
                    best_over_gold(golds, |g| f1_score(&c.text, g))
                },
                text: c.text.clone(),
                features: c.features.clone(),
            })
            .collect(),
    });
    QaOutcome {
        answer: answer.answer.clone(),
        squad2_f1,
        decision,
        abstained: answer.abstained,
        abstain_reason: answer.abstain_reason,
        exact_match: em,
        f1,
        contained,
        gold_rank: None,
        answer_in_passages: None,
        citations: answer.citations.iter().map(|c| c.n).collect(),
        citations_inferred: answer.citations.iter().any(|c| c.inferred),
        citation_hit: None,
        secs: (t.total_secs - t.load_secs).max(0.0),
        prompt_tokens: t.prompt_tokens,
        generated_tokens: t.generated_tokens,
        prefill_tok_s: t.prefill_tok_s,
        decode_tok_s: t.decode_tok_s,
    }
}

fn share(outcomes: &[&QaOutcome], pred: impl Fn(&QaOutcome) -> bool) -> f64 {
    mean(outcomes.iter().map(|o| if pred(o) { 1.0 } else { 0.0 })).unwrap_or(0.0)
}

fn aggregate(items: &[(&QaOutcome, bool)], retrieval: bool) -> ModeMetrics {
    let outcomes: Vec<&QaOutcome> = items.iter().map(|(o, _)| *o).collect();
    let outcomes = &outcomes[..];
    let answerable: Vec<&QaOutcome> = items
        .iter()
        .filter(|(_, imp)| !imp)
        .map(|(o, _)| *o)
        .collect();
    let unanswerable: Vec<&QaOutcome> = items
        .iter()
        .filter(|(_, imp)| *imp)
        .map(|(o, _)| *o)
        .collect();
    let k_share = |pred: &dyn Fn(&QaOutcome) -> bool| retrieval.then(|| share(outcomes, pred));
    let cited: Vec<&&QaOutcome> = outcomes
        .iter()
        .filter(|o| o.citation_hit.is_some())
        .collect();
    let ran: Vec<&&QaOutcome> = outcomes.iter().filter(|o| o.prompt_tokens > 0).collect();
    ModeMetrics {
        n: outcomes.len(),
        recall_at_1: k_share(&|o| o.gold_rank == Some(1)),
        recall_at_k: k_share(&|o| o.gold_rank.is_some()),
        answer_recall_at_k: k_share(&|o| o.answer_in_passages == Some(true)),
        exact_match: share(outcomes, |o| o.exact_match),
        f1: mean(outcomes.iter().map(|o| o.f1)).unwrap_or(0.0),
        contained: share(outcomes, |o| o.contained),
        citation_accuracy: mean(cited.iter().map(|o| {
            if o.citation_hit == Some(true) {
                1.0
            } else {
                0.0
            }
        })),
        cited: cited.len(),
        cited_inferred: cited.iter().filter(|o| o.citations_inferred).count(),
        abstained: share(outcomes, |o| o.abstained),
        abstained_no_evidence: outcomes
            .iter()
            .filter(|o| o.abstain_reason == Some(AbstainReason::NoEvidence))
            .count(),
        secs_per_question: mean(outcomes.iter().map(|o| o.secs)).unwrap_or(0.0),
        prefill_tok_s: mean(ran.iter().map(|o| o.prefill_tok_s)),
        decode_tok_s: mean(
            ran.iter()
                .filter(|o| o.generated_tokens > 0)
                .map(|o| o.decode_tok_s),
        ),
        mean_prompt_tokens: mean(ran.iter().map(|o| o.prompt_tokens as f64)).unwrap_or(0.0),
        mean_generated_tokens: mean(ran.iter().map(|o| o.generated_tokens as f64)).unwrap_or(0.0),
        answerable: answerable.len(),
        unanswerable: unanswerable.len(),
        answered_answerable: mean(answerable.iter().map(|o| f64::from(u8::from(!o.abstained)))),
        abstained_unanswerable: mean(
            unanswerable
                .iter()
                .map(|o| f64::from(u8::from(o.abstained))),
        ),
        f1_answerable: mean(answerable.iter().map(|o| o.f1)),
        contained_answerable: mean(answerable.iter().map(|o| f64::from(u8::from(o.contained)))),
        squad2_f1: mean(outcomes.iter().map(|o| o.squad2_f1)).unwrap_or(0.0),
    }
}

impl QaReport {
    /// A compact plain-text table: one row per mode; shares in percent.
    pub fn table(&self) -> String {
        let pct = |x: f64| format!("{:.1}", 100.0 * x);
        let opt_pct = |x: Option<f64>| x.map(pct).unwrap_or_else(|| "-".into());
        let two = self.retrieval.unanswerable > 0;
        let mut rows = vec![vec![
            "mode".to_string(),
            "n".into(),
            format!("recall@{}", self.k),
            "EM".into(),
            "F1".into(),
            "contained".into(),
            "citation acc.".into(),
            "abstained".into(),
            "s/question".into(),
            "decode tok/s".into(),
        ]];
        if two {
            rows[0].extend([
                "answered ans.".into(),
                "abstained unans.".into(),
                "F1 ans.".into(),
                "contained ans.".into(),
                "SQuAD2 F1".into(),
            ]);
        }
        let modes = [
            ("retrieval", Some(&self.retrieval)),
            ("closed book", self.closed_book.as_ref()),
        ];
        for (name, m) in modes {
            let Some(m) = m else { continue };
            let mut row = vec![
                name.to_string(),
                m.n.to_string(),
                opt_pct(m.recall_at_k),
                pct(m.exact_match),
                pct(m.f1),
                pct(m.contained),
                opt_pct(m.citation_accuracy),
                pct(m.abstained),
                format!("{:.2}", m.secs_per_question),
                m.decode_tok_s
                    .map(|x| format!("{x:.1}"))
                    .unwrap_or_else(|| "-".into()),
            ];
            if two {
                row.extend([
                    opt_pct(m.answered_answerable),
                    opt_pct(m.abstained_unanswerable),
                    opt_pct(m.f1_answerable),
                    opt_pct(m.contained_answerable),
                    pct(m.squad2_f1),
                ]);
            }
            rows.push(row);
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for r in &rows {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (s, &w))| {
                    if c == 0 {
                        format!("{s:<w$}")
                    } else {
                        format!("{s:>w$}")
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        if !self.curve.is_empty() {
            out.push_str(
                "\nanswerability threshold: answered answerable / abstained unanswerable / SQuAD2 F1 / F1 answerable (%)\n",
            );
            for c in &self.curve {
                out.push_str(&format!(
                    "  {:.2}  {:5.1}  {:5.1}  {:5.1}  {:5.1}\n",
                    c.threshold,
                    100.0 * c.answered_answerable,
                    100.0 * c.abstained_unanswerable,
                    100.0 * c.squad2_f1,
                    100.0 * c.f1_answerable
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn normalisation_is_squads() {
        assert_eq!(normalize_answer("The  Cat, sat!"), "cat sat");
        assert_eq!(normalize_answer("an apple a day"), "apple day");
        // Articles go only as whole words; punctuation goes before that, so "the-end" is "theend".
        assert_eq!(
            normalize_answer("theatre thE-end anthem"),
            "theatre theend anthem"
        );
        assert_eq!(normalize_answer("U.S. $12"), "us 12");
        assert_eq!(
            normalize_answer("  \"Denver  Broncos\" \n"),
            "denver broncos"
        );
        // Non-ASCII punctuation stays (string.punctuation is ASCII), and still bounds a word.
        assert_eq!(normalize_answer("the–end"), "–end");
        assert_eq!(normalize_answer("Öl Über"), "öl über");
        assert_eq!(normalize_answer("the a an"), "");
    }

    #[test]
    fn exact_match_after_normalisation() {
        assert!(exact_match("The Denver Broncos.", "Denver Broncos"));
        assert!(!exact_match("Denver Broncos won", "Denver Broncos"));
        assert!(exact_match("", "the"));
    }

    #[test]
    fn f1_hand_computed() {
        // "cat sat" vs "cat sat down": p = 2/2, r = 2/3, F1 = 2pr/(p+r) = 0.8.
        assert!(close(f1_score("the cat sat", "a cat sat down"), 0.8));
        assert!(close(f1_score("Denver Broncos", "Denver Broncos"), 1.0));
        assert!(close(f1_score("Carolina", "Denver Broncos"), 0.0));
        // Tokens count as a bag: "a a b" vs "a b b" -> "b" and "b b" after removing "a":
        // same = 1, p = 1/1, r = 1/2, F1 = 2/3.
        assert!(close(f1_score("a a b", "a b b"), 2.0 / 3.0));
        // Repeats count once each: "x x y" vs "x y z": same = 2, p = 2/3, r = 2/3.
        assert!(close(f1_score("x x y", "x y z"), 2.0 / 3.0));
        assert!(close(f1_score("", "x"), 0.0));
        assert!(close(f1_score("x", "the"), 0.0));
    }

    #[test]
    fn best_over_gold_takes_the_max() {
        let golds = vec!["Denver Broncos".to_string(), "the Broncos".to_string()];
        let pred = "Broncos";
        // vs "denver broncos": p = 1, r = 1/2, F1 = 2/3; vs "broncos": 1.
        assert!(close(best_over_gold(&golds, |g| f1_score(pred, g)), 1.0));
        assert!(close(
            best_over_gold(&golds[..1], |g| f1_score(pred, g)),
            2.0 / 3.0
        ));
        assert!(close(best_over_gold(&[], |g| f1_score(pred, g)), 0.0));
    }

    #[test]
    fn containment_is_by_whole_words() {
        assert!(contains_answer("It opened in 1912 [1].", "1912"));
        assert!(contains_answer(
            "The Denver Broncos won Super Bowl 50.",
            "Denver Broncos"
        ));
        assert!(!contains_answer("It opened in 1912.", "191"));
        assert!(!contains_answer("It opened in 1912.", "the"));
        assert!(!contains_answer("Broncos", "Denver Broncos"));
    }

    #[test]
    fn citation_markers_are_stripped() {
        assert_eq!(
            strip_citations("It opened in 1912 [1]. Kessel designed it [1, 3]."),
            "It opened in 1912. Kessel designed it."
        );
        assert_eq!(strip_citations("[2] First."), "First.");
        assert_eq!(
            strip_citations("A [note] stays [x1] too"),
            "A [note] stays [x1] too"
        );
        assert_eq!(strip_citations("open [ and [3]"), "open [ and");
        assert_eq!(strip_citations("no markers"), "no markers");
        // After stripping, EM can hold.
        assert!(exact_match(
            &strip_citations("Denver Broncos [1]"),
            "Denver Broncos"
        ));
    }

    #[test]
    fn sampler_is_deterministic() {
        let a = sample_indices(1000, 50, 7);
        assert_eq!(a, sample_indices(1000, 50, 7));
        assert_ne!(a, sample_indices(1000, 50, 8));
        assert_eq!(a.len(), 50);
        let mut d = a.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), 50, "indices are distinct");
        assert!(a.iter().all(|&i| i < 1000));
        // A larger sample begins with the smaller one.
        assert_eq!(&sample_indices(1000, 80, 7)[..50], &a[..]);
        // 0 (or more than n) means all, shuffled.
        let mut all = sample_indices(10, 0, 7);
        assert_eq!(all.len(), 10);
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(sample_indices(10, 99, 7).len(), 10);
        assert!(sample_indices(0, 5, 7).is_empty());
        // splitmix64's published first output for seed 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn blocks_find_paragraphs() {
        let text = "Title\n\nFirst para.\nSame para.\n\nSecond.";
        let b = blocks(text);
        assert_eq!(b.len(), 3);
        assert_eq!(&text[b[0].clone()], "Title");
        assert_eq!(&text[b[1].clone()], "First para.\nSame para.");
        assert_eq!(&text[b[2].clone()], "Second.");
        assert!(blocks("").is_empty());
    }

    #[test]
    fn normalised_article_keeps_paragraphs() {
        let raw = "Some title\r\n\r\nPara  one\u{a0}here.\n\n\n\nPara two,\nline two.\n";
        let text = rag_ingest::normalize(raw);
        let b = blocks(&text);
        assert_eq!(b.len(), 3);
        assert_eq!(&text[b[1].clone()], "Para one here.");
        assert_eq!(&text[b[2].clone()], "Para two,\nline two.");
    }

    /// On the real data set (skipped when `$RAG_SHARED` lacks it): block N + 1 of each
    /// normalised article is paragraph N, i.e. it holds the question's gold answer span.
    #[test]
    fn squad_gold_paragraphs_hold_the_answers() {
        let opts = QaOptions::default();
        if !opts.questions.exists() {
            eprintln!("skipped: no {}", opts.questions.display());
            return;
        }
        let questions = read_questions(&opts.questions).unwrap();
        let mut paragraphs: HashMap<String, (String, Vec<Range<usize>>)> = HashMap::new();
        let (mut held, mut total) = (0usize, 0usize);
        for q in &questions {
            let (text, b) = paragraphs.entry(q.article_file.clone()).or_insert_with(|| {
                let path = opts
                    .articles
                    .join(Path::new(&q.article_file).file_name().unwrap());
                let doc = rag_ingest::load(&path).unwrap();
                let b = blocks(&doc.text);
                (doc.text, b)
            });
            // Answers normalised as the loader does (one holds byte-order marks) and whitespace
            // collapsed (a few keep a double space or line break).
            let words = |s: &str| {
                let s = rag_ingest::normalize(s);
                s.split_whitespace().collect::<Vec<_>>().join(" ")
            };
            let p = words(&text[b[q.paragraph_index + 1].clone()]);
            total += 1;
            held += q.answers.iter().any(|a| p.contains(&words(a))) as usize;
        }
        assert_eq!(total, 10_570);
        assert_eq!(paragraphs.len(), 48);
        assert!(
            held == total,
            "{held} of {total} gold paragraphs hold an answer"
        );
    }

    #[test]
    fn overlap_test() {
        let gold = 100..300; // 200 bytes
                             // The chunk holding the whole paragraph and parts of both neighbours.
        assert!(holds_gold(&(50..400), &gold));
        // Exactly the paragraph.
        assert!(holds_gold(&(100..300), &gold));
        // A chunk that starts with the paragraph's last sentence (the 32-token overlap).
        assert!(!holds_gold(&(260..600), &gold));
        // ... or ends with its first.
        assert!(!holds_gold(&(0..130), &gold));
        // Half of the paragraph is enough.
        assert!(holds_gold(&(200..700), &gold));
        // A long paragraph cut in pieces: a piece inside it holds it.
        let long = 1000..3000;
        assert!(holds_gold(&(1800..2100), &long));
        // Mostly gold: 150 of a 250-byte chunk.
        assert!(holds_gold(&(2850..3100), &long));
        // Touching or apart is not overlapping.
        assert!(!holds_gold(&(300..400), &gold));
        assert!(!holds_gold(&(0..100), &gold));
        assert!(!holds_gold(&(500..600), &gold));
    }
}
