//! Whether a quoted answer is presented as an answer: the documents may be about the question's
//! topic and still not answer it (a name, a date or a negation in the question that the
//! passage does not have), and the quote decoder always finds *some* span. The decision reads
//! features of the question, the quote, its sentence and the model's own probabilities, and
//! turns them into an estimated probability that the documents answer the question:
//!
//! - for a chat model with a fitted file ([`Fitted`], a small versioned JSON keyed to the model
//!   file's name and size; a user's own fit in `$RAG_HOME/answerability/` comes first, then
//!   the default model's, compiled in from `src/answerability/`), a logistic regression over
//!   the features and a linear probe of the prompt's last hidden state, fitted on part of the
//!   SQuAD 2.0 dev half (`rag eval qa --set squad2 --split fit --fit`); the same file holds
//!   the [`SpanRanker`] that chooses the quote among the spans the model scored;
//! - for any other model, a rule over the model-independent features alone: the share of the
//!   question's IDF-weighted terms found around the quote (its sentence and the two beside
//!   it), less the weight of the most important term the quoted passage lacks, held to
//!   [`RULE_THRESHOLD`].
//!
//! Below the threshold the answer is "not in the documents" (`abstain_reason: unanswerable`).
//! This module is public for the fitted file's format ([`Fitted`]); [`crate::Rag`] uses it
//! on its own.
//!
//! ```
//! use rag::answerability::{Fitted, FEATURES};
//! let text = std::fs::read_to_string("src/answerability/SmolLM2-135M-Instruct.Q4_1.json").unwrap();
//! let fitted = Fitted::parse(&text, "built in").unwrap();
//! assert_eq!(fitted.features, FEATURES);
//! assert!(fitted.threshold > 0.0 && fitted.threshold < 1.0);
//! assert!(fitted.spans.is_some(), "the default model's span ranker");
//! ```
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use rag_index::Store;
use serde::{Deserialize, Serialize};

use crate::cite;
use crate::error::{Error, Result};
use crate::retrieve;

/// Version of the fitted-file format.
///
/// ```
/// assert_eq!(rag::answerability::FITTED_VERSION, 3);
/// ```
pub const FITTED_VERSION: u32 = 3;

/// A span that was scored: its text and its [`SPAN_FEATURES`].
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub text: String,
    pub features: Vec<f32>,
}

/// The features a span is ranked by, in the order a fitted ranker lists them
/// ([`SpanRanker`]).
pub const SPAN_FEATURES: &[&str] = &[
    "score",
    "logprob_sum",
    "logprob_mean",
    "logprob_first",
    "stop",
    "prior",
    "start_rank",
    "tokens",
    "words",
    "sentence_rank",
    "sentence_score",
    "question_terms_in_span",
    "typed_start",
    "type_number",
    "type_person",
    "has_number",
    "capitalised",
    "number_has_number",
    "person_capitalised",
    "ends_stopword",
    "question_term_left",
    "question_term_right",
    "punct_before",
    "punct_after",
    "has_comma",
    "passage_rank",
    "amount",
];

/// The features, in the order a fitted file lists them.
///
/// ```
/// assert_eq!(rag::answerability::FEATURES[0], "evidence");
/// ```
pub const FEATURES: [&str; 48] = [
    "evidence",
    "coverage_sentence",
    "coverage_window",
    "coverage_passage",
    "missing_top",
    "missing_top_sentence",
    "missing_count_sentence",
    "negation_question_only",
    "pair_overlap",
    "question_terms",
    "span_logprob_mean",
    "span_logprob_first",
    "span_logprob_min",
    "span_tokens",
    "not_found_logprob",
    "span_in_question",
    "passage_rank",
    "quote_score",
    "quote_logprob_sum",
    "quote_logprob_mean",
    "quote_logprob_first",
    "quote_stop",
    "quote_prior",
    "quote_start_rank",
    "quote_tokens",
    "quote_words",
    "quote_sentence_rank",
    "quote_sentence_score",
    "quote_question_terms_in_span",
    "quote_typed_start",
    "quote_type_number",
    "quote_type_person",
    "quote_has_number",
    "quote_capitalised",
    "quote_number_has_number",
    "quote_person_capitalised",
    "quote_ends_stopword",
    "quote_question_term_left",
    "quote_question_term_right",
    "quote_punct_before",
    "quote_punct_after",
    "quote_has_comma",
    "quote_passage_rank",
    "quote_amount",
    "rank_score",
    "rank_margin",
    "rank_confidence",
    "rank_candidates",
];

/// What the model said about the prompt, beside the quote: read while generating it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Signals {
    /// The final hidden state of the prompt's last token.
    pub hidden: Vec<f32>,
    /// The mean log-probability per token of the "not in the documents" reply.
    pub not_found_logprob: f32,
    /// The log-probability of each token of the quote.
    pub span_logprobs: Vec<f32>,
    /// The quote's [`SPAN_FEATURES`].
    pub span_features: Vec<f32>,
    /// How the quote's ranking went: its score (the span ranker's, else the model's), its
    /// margin over the next best span, its share of a softmax over all spans' scores, and
    /// the log of the number of spans scored.
    pub ranking: [f32; 4],
}

/// How the decision was made, for `--json` and evaluations.
///
/// ```no_run
/// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
/// let answer = rag.ask("Who is the deputy harbour master?")?;
/// if let Some(d) = &answer.decision {
///     println!("{:?} was judged answerable at {:.2} (threshold {:.2})", d.candidate, d.answerable, d.threshold);
/// }
/// # Ok::<(), rag::Error>(())
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The estimated probability that the documents answer the question.
    pub answerable: f32,
    /// The threshold it was held to.
    pub threshold: f32,
    /// `fitted:<model file>` or `rule`.
    pub by: String,
    /// The quote the decision was about (the answer when presented), its sentence and its
    /// passage number.
    pub candidate: String,
    pub candidate_sentence: String,
    pub candidate_passage: usize,
    /// The features, by name.
    pub features: BTreeMap<String, f32>,
    /// The prompt's last hidden state (for fitting probes; not serialised).
    #[serde(skip)]
    pub hidden: Vec<f32>,
    /// Every span quote mode scored, when asked for (for fitting a span ranker; not
    /// serialised).
    #[serde(skip)]
    pub candidates: Vec<Candidate>,
}

/// The features of a quote: `passage` is the quoted passage's text, `heading` its headings,
/// `quote` the byte range of the quote in it, `rank` the passage's number in the prompt. The
/// coverages count the headings' terms as the passage's own.
#[allow(clippy::too_many_arguments)]
pub(crate) fn features(
    index: &dyn Store,
    question: &str,
    evidence: f32,
    passage: &str,
    heading: Option<&str>,
    quote: Range<usize>,
    rank: usize,
    signals: &Signals,
) -> Result<Vec<f32>> {
    let weights = retrieve::question_weights(index, question)?;
    let total: f32 = weights.iter().map(|(_, w)| w).sum();
    let heading = heading.map(|h| index.analyze(h)).unwrap_or_default();
    // (share of the question's weight found, largest weight share missing, terms missing).
    let coverage = |text: &str| -> (f32, f32, f32) {
        if weights.is_empty() || total <= 0.0 {
            return (1.0, 0.0, 0.0);
        }
        let terms: std::collections::HashSet<String> = index
            .analyze(text)
            .into_iter()
            .chain(heading.iter().cloned())
            .collect();
        let got: f32 = weights
            .iter()
            .filter(|(t, _)| terms.contains(t))
            .map(|(_, w)| w)
            .sum();
        let missing: Vec<f32> = weights
            .iter()
            .filter(|(t, _)| !terms.contains(t))
            .map(|(_, w)| w / total)
            .collect();
        let top = missing.iter().copied().fold(0.0, f32::max);
        (got / total, top, missing.len() as f32)
    };
    let sentence = cite::sentence_around(passage, quote.clone());
    let sentences = cite::sentences(passage);
    let window = {
        let i = sentences
            .iter()
            .position(|s| s.start <= sentence.start && sentence.start < s.end.max(s.start + 1))
            .unwrap_or(0);
        let a = sentences
            .get(i.saturating_sub(1))
            .map_or(sentence.start, |s| s.start);
        let b = sentences.get(i + 1).map_or(sentence.end, |s| s.end);
        a.min(sentence.start)..b.max(sentence.end)
    };
    let quote_text = &passage[quote];
    let question_terms: std::collections::HashSet<String> =
        weights.iter().map(|(t, _)| t.clone()).collect();
    let quote_terms = retrieve::topic_terms(index, quote_text);
    let in_question = if quote_terms.is_empty() {
        0.0
    } else {
        quote_terms
            .iter()
            .filter(|t| question_terms.contains(*t))
            .count() as f32
            / quote_terms.len() as f32
    };
    let lp = &signals.span_logprobs;
    let mean = |v: &[f32]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f32>() / v.len() as f32
        }
    };
    let in_sentence = coverage(&passage[sentence.clone()]);
    let in_passage = coverage(passage);
    // Pairs of consecutive question words the sentence repeats, as a share of the question's.
    let q_all = index.analyze(question);
    let s_all = index.analyze(&passage[sentence.clone()]);
    let q_pairs: std::collections::HashSet<(&String, &String)> =
        q_all.windows(2).map(|w| (&w[0], &w[1])).collect();
    let s_pairs: std::collections::HashSet<(&String, &String)> =
        s_all.windows(2).map(|w| (&w[0], &w[1])).collect();
    let pairs = q_pairs.intersection(&s_pairs).count() as f32 / q_pairs.len().max(1) as f32;
    // A negation the question has and the sentence lacks: one way SQuAD 2.0's unanswerable
    // questions are made from answerable ones.
    let negation_question_only =
        f32::from(u8::from(negated(question) && !negated(&passage[sentence])));
    let span_features =
        (0..SPAN_FEATURES.len()).map(|i| signals.span_features.get(i).copied().unwrap_or(0.0));
    Ok([
        evidence,
        in_sentence.0,
        coverage(&passage[window]).0,
        in_passage.0,
        in_passage.1,
        in_sentence.1,
        in_sentence.2,
        negation_question_only,
        pairs,
        weights.len() as f32,
        mean(lp),
        lp.first().copied().unwrap_or(0.0),
        lp.iter().copied().fold(0.0, f32::min),
        (1.0 + lp.len() as f32).ln(),
        signals.not_found_logprob,
        in_question,
        rank as f32,
    ]
    .into_iter()
    .chain(span_features)
    .chain(signals.ranking)
    .collect())
}

/// Whether `text` has a negation word (not, no, never, n't, ...).
fn negated(text: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(str::to_lowercase)
        .any(|w| {
            matches!(
                w.as_str(),
                "not"
                    | "no"
                    | "never"
                    | "nor"
                    | "none"
                    | "neither"
                    | "without"
                    | "cannot"
                    | "nobody"
                    | "nothing"
            ) || w.ends_with("n't")
        })
}

/// A linear probe of a hidden state: `w · (h - mean) / scale + b`.
///
/// ```
/// use rag::answerability::Probe;
/// let p = Probe { mean: vec![0.0, 1.0], scale: vec![1.0, 2.0], weights: vec![1.0, -1.0], bias: 0.5 };
/// assert_eq!(p.score(&[2.0, 3.0]), 0.5 + 2.0 - 1.0);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    pub weights: Vec<f32>,
    pub bias: f32,
}

impl Probe {
    /// The probe's score of `h` (a logit).
    pub fn score(&self, h: &[f32]) -> f32 {
        if h.len() != self.weights.len() {
            return 0.0;
        }
        standardised_dot(h, &self.mean, &self.scale, &self.weights) + self.bias
    }
}

/// The model file a fitted decision belongs to: its name and size.
///
/// ```
/// let dir = std::env::temp_dir().join("rag-doc-modelkey");
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("m.gguf");
/// std::fs::write(&path, [0u8; 7]).unwrap();
/// let key = rag::answerability::ModelKey::of(&path).unwrap();
/// assert_eq!((key.file_name.as_str(), key.file_size), ("m.gguf", 7));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelKey {
    pub file_name: String,
    pub file_size: u64,
}

impl ModelKey {
    /// The key of the model file at `path`.
    pub fn of(path: &Path) -> Option<Self> {
        Some(Self {
            file_name: path.file_name()?.to_string_lossy().into_owned(),
            file_size: std::fs::metadata(path).ok()?.len(),
        })
    }
}

/// A decision fitted for one chat model: logistic regression over the standardised
/// [`FEATURES`] plus, when present, a hidden-state probe's score as one more input. See the
/// module's example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fitted {
    pub version: u32,
    pub model: ModelKey,
    pub features: Vec<String>,
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    pub weights: Vec<f32>,
    pub bias: f32,
    /// Weight of the probe's score (`None`: no probe).
    pub probe_weight: Option<f32>,
    pub probe: Option<Probe>,
    /// The probability below which rag abstains.
    pub threshold: f32,
    /// What it was fitted on and how it measured (free text, for people).
    pub fitted_on: String,
    /// How quote mode ranks the spans it scored (`None`: by the model's score alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans: Option<SpanRanker>,
}

/// A linear ranker over the standardised [`SPAN_FEATURES`] of the spans quote
/// mode scored: the span with the largest `weights . (x - mean) / scale` is the quote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanRanker {
    pub features: Vec<String>,
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    pub weights: Vec<f32>,
}

impl SpanRanker {
    /// A span's score (only differences between spans of one question mean anything).
    pub fn score(&self, features: &[f32]) -> f32 {
        standardised_dot(features, &self.mean, &self.scale, &self.weights)
    }
}

/// The fitted decisions compiled in (the default chat model's), as JSON.
const BUILTIN: &[&str] = &[include_str!(
    "answerability/SmolLM2-135M-Instruct.Q4_1.json"
)];

impl Fitted {
    /// Parse a fitted file, checking its version and shape.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let f: Fitted = serde_json::from_str(text)
            .map_err(|e| Error::InvalidOption(format!("answerability file {origin}: {e}")))?;
        let n = FEATURES.len();
        if f.version != FITTED_VERSION
            || f.features != FEATURES
            || [f.mean.len(), f.scale.len(), f.weights.len()] != [n, n, n]
        {
            return Err(Error::InvalidOption(format!(
                "answerability file {origin} is of another version or feature set (version {}, {} features): fit it again for this model, or remove it",
                f.version,
                f.features.len()
            )));
        }
        if let Some(r) = &f.spans {
            let n = SPAN_FEATURES.len();
            if r.features != SPAN_FEATURES
                || [r.mean.len(), r.scale.len(), r.weights.len()] != [n, n, n]
            {
                return Err(Error::InvalidOption(format!(
                    "answerability file {origin}: its span ranker has another feature set ({} features): fit it again for this model, or remove it",
                    r.features.len()
                )));
            }
        }
        Ok(f)
    }

    /// The fitted decision for the model file at `model`: one in `dir` (`*.json`) whose key
    /// matches (a fit of the user's own), else a compiled-in one; `None` if there is none.
    pub fn find(model: &Path, dir: &Path) -> Result<Option<Self>> {
        let Some(key) = ModelKey::of(model) else {
            return Ok(None);
        };
        if let Some(f) = Self::find_in(&key, dir)? {
            return Ok(Some(f));
        }
        for text in BUILTIN {
            let f = Self::parse(text, "(built in)")?;
            if f.model == key {
                return Ok(Some(f));
            }
        }
        Ok(None)
    }

    fn find_in(key: &ModelKey, dir: &Path) -> Result<Option<Self>> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(None);
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "json") {
                let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                let f = Self::parse(&text, &path.display().to_string())?;
                if f.model == *key {
                    return Ok(Some(f));
                }
            }
        }
        Ok(None)
    }

    /// The probability that the documents answer the question.
    pub fn probability(&self, features: &[f32], hidden: &[f32]) -> f32 {
        let mut z = self.bias + standardised_dot(features, &self.mean, &self.scale, &self.weights);
        if let (Some(w), Some(p)) = (self.probe_weight, &self.probe) {
            z += w * p.score(hidden);
        }
        sigmoid(z)
    }
}

/// The decision of a model without a fitted file, over the model-independent features only:
/// the share of the question's IDF-weighted terms found around the quote (its sentence and the
/// two beside it), less the weight of the most important term the quoted passage lacks.
/// Probability `clamp(coverage_window - missing_top, 0, 1)`, threshold [`RULE_THRESHOLD`].
pub(crate) fn rule(features: &[f32]) -> f32 {
    (features[2] - features[4]).clamp(0.0, 1.0)
}

/// The threshold of the rule a model without a fitted decision uses (see the module docs).
/// Measured on the SQuAD 2.0 dev half (docs/EVAL.md).
///
/// ```
/// assert!(rag::answerability::RULE_THRESHOLD > 0.0);
/// ```
pub const RULE_THRESHOLD: f32 = 0.5;

/// `sum(w * (x - mean) / scale)`.
fn standardised_dot(x: &[f32], mean: &[f32], scale: &[f32], w: &[f32]) -> f32 {
    x.iter()
        .zip(mean)
        .zip(scale)
        .zip(w)
        .map(|(((x, m), s), w)| w * (x - m) / s)
        .sum()
}

/// The logistic function.
///
/// ```
/// assert_eq!(rag::answerability::sigmoid(0.0), 0.5);
/// ```
pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(dir: &Path, texts: &[&str]) -> rag_index::Index {
        crate::retrieve::small_index(dir, texts, None)
    }

    fn named(f: &[f32]) -> BTreeMap<&'static str, f32> {
        FEATURES.iter().copied().zip(f.iter().copied()).collect()
    }

    #[test]
    fn features_see_a_question_term_the_passage_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let p = "The harbour office stands on Pier 1. The harbour master is Anneliese Brandt. Ships report by radio.";
        let idx = index(
            dir.path(),
            &[p, "The ferry leaves at nine.", "The library opens at ten."],
        );
        let at = p.find("Anneliese Brandt").unwrap();
        let signals = Signals {
            hidden: vec![],
            not_found_logprob: -2.0,
            span_logprobs: vec![-0.5, -1.5],
            ..Signals::default()
        };
        let f =
            |q: &str| named(&features(&idx, q, 0.9, p, None, at..at + 16, 2, &signals).unwrap());
        let present = f("Who is the harbour master?");
        assert_eq!(present["coverage_sentence"], 1.0);
        assert_eq!(present["missing_top"], 0.0);
        assert_eq!(present["span_logprob_mean"], -1.0);
        assert_eq!(present["span_logprob_first"], -0.5);
        assert_eq!(present["span_logprob_min"], -1.5);
        assert_eq!(present["not_found_logprob"], -2.0);
        assert_eq!(present["passage_rank"], 2.0);
        assert_eq!(present["evidence"], 0.9);
        assert_eq!(present["span_in_question"], 0.0);
        let absent = f("Who is the deputy harbour master?");
        assert!(absent["coverage_sentence"] < 0.75, "{absent:?}");
        assert!(absent["missing_top"] > 0.25, "{absent:?}");
        // The rule turns the absent one away and keeps the present one.
        let (a, b) = (
            rule(
                &features(
                    &idx,
                    "Who is the harbour master?",
                    0.9,
                    p,
                    None,
                    at..at + 16,
                    2,
                    &signals,
                )
                .unwrap(),
            ),
            rule(
                &features(
                    &idx,
                    "Who is the deputy harbour master?",
                    0.9,
                    p,
                    None,
                    at..at + 16,
                    2,
                    &signals,
                )
                .unwrap(),
            ),
        );
        assert!(a >= RULE_THRESHOLD && b < RULE_THRESHOLD, "{a} {b}");
    }

    fn fitted() -> Fitted {
        let n = FEATURES.len();
        let mut weights = vec![0.0; n];
        weights[1] = 2.0; // coverage_sentence
        weights[4] = -1.0; // missing_top
        Fitted {
            version: FITTED_VERSION,
            model: ModelKey {
                file_name: "m.gguf".into(),
                file_size: 42,
            },
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
            mean: vec![0.5; n],
            scale: vec![0.25; n],
            weights,
            bias: 0.1,
            probe_weight: Some(0.5),
            probe: Some(Probe {
                mean: vec![0.0, 1.0],
                scale: vec![1.0, 2.0],
                weights: vec![1.0, -1.0],
                bias: 0.0,
            }),
            threshold: 0.6,
            fitted_on: "test".into(),
            spans: None,
        }
    }

    #[test]
    fn a_fitted_decision_on_fixed_inputs() {
        let f = fitted();
        let mut x = vec![0.5f32; FEATURES.len()];
        // All features at their mean and a probe score of 0: the bias alone.
        assert!((f.probability(&x, &[0.0, 1.0]) - sigmoid(0.1)).abs() < 1e-6);
        // Coverage one scale above its mean: +2; the missing term one scale above: -1; the
        // probe scores h = (2, 1) as (2 - 0) / 1 * 1 + (1 - 1) / 2 * -1 = 2, weighted 0.5.
        x[1] = 0.75;
        x[4] = 0.75;
        let z = 0.1 + 2.0 - 1.0 + 0.5 * 2.0;
        assert!((f.probability(&x, &[2.0, 1.0]) - sigmoid(z)).abs() < 1e-6);
        // A hidden state of the wrong size adds nothing.
        assert!((f.probability(&x, &[2.0]) - sigmoid(0.1 + 2.0 - 1.0)).abs() < 1e-6);
    }

    #[test]
    fn fitted_files_are_checked_and_found_by_model() {
        let f = fitted();
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(Fitted::parse(&text, "t").unwrap(), f);
        let mut old = f.clone();
        old.version = FITTED_VERSION + 1;
        let err = Fitted::parse(&serde_json::to_string(&old).unwrap(), "old.json").unwrap_err();
        assert!(err.to_string().contains("old.json"), "{err}");
        // Found in a folder by the model file's name and size.
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, vec![0u8; 42]).unwrap();
        let fits = dir.path().join("answerability");
        std::fs::create_dir_all(&fits).unwrap();
        std::fs::write(fits.join("m.json"), &text).unwrap();
        assert_eq!(Fitted::find(&model, &fits).unwrap(), Some(f));
        std::fs::write(&model, vec![0u8; 43]).unwrap();
        assert_eq!(
            Fitted::find(&model, &fits).unwrap(),
            None,
            "another file, same name"
        );
    }

    #[test]
    fn span_rankers_are_checked_and_score_linearly() {
        let n = SPAN_FEATURES.len();
        let mut weights = vec![0.0; n];
        weights[0] = 2.0;
        let ranker = SpanRanker {
            features: SPAN_FEATURES.iter().map(|f| f.to_string()).collect(),
            mean: vec![1.0; n],
            scale: vec![0.5; n],
            weights,
        };
        let mut x = vec![0.0; n];
        x[0] = 2.0;
        assert_eq!(ranker.score(&x), 4.0);
        let mut f = fitted();
        f.spans = Some(ranker.clone());
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(Fitted::parse(&text, "t").unwrap(), f);
        // A ranker over other features is refused, naming the file.
        let mut other = ranker;
        other.features[0] = "something_else".into();
        f.spans = Some(other);
        let err = Fitted::parse(&serde_json::to_string(&f).unwrap(), "r.json").unwrap_err();
        assert!(err.to_string().contains("r.json"), "{err}");
        // A file without one parses (an older fit): quotes go by the model's score.
        f.spans = None;
        let text = serde_json::to_string(&f).unwrap();
        assert!(!text.contains("\"spans\""));
        assert_eq!(Fitted::parse(&text, "t").unwrap().spans, None);
    }
}
