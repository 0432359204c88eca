//! What an answer is ([`Answer`], [`Citation`]) and the steps that make one, in the order
//! [`crate::Rag::ask`] runs them: retrieve (in [`crate::Rag::retrieve`]), [`gate`], [`prompt`],
//! [`generate`], [`cite`]. Each step is a plain function of what the one before produced, so the
//! path of a question reads top to bottom.
use std::collections::HashSet;

use rag_index::{Hit, Store};
use rag_model::{GenerateParams, Generation, Model, PromptFormat, StopReason};
use serde::Serialize;

use crate::answerability::{self, Decision, Fitted};
use crate::cite::{self, CitationFilter};
use crate::error::{Error, Result};
use crate::prompt::{self, Passage, Prompt};
use crate::quote::{QuoteOptions, Quoted};
use crate::retrieve::{self, RetrieveOptions};

/// How the model's answer is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerMode {
    /// The answer is a verbatim span of one passage (constrained decoding), which rag cites
    /// and shows with its sentence; an answerability decision turns away quotes that do not
    /// answer the question. Every claim is checkable by construction.
    #[default]
    Quote,
    /// Free text, whose citation markers and support are checked after the fact.
    Free,
}

impl std::str::FromStr for AnswerMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "quote" => Ok(Self::Quote),
            "free" => Ok(Self::Free),
            _ => Err(format!("unknown answer mode '{s}' (quote, free)")),
        }
    }
}

/// Settings of [`crate::Rag::ask`] (and of the prompt [`crate::Rag::search`] fits).
///
/// ```
/// let mut opts = rag::AskOptions::default();
/// opts.retrieve.k = 6; // more passages
/// opts.generate.max_tokens = 128; // a shorter answer, more room for passages
/// opts.closed_book = false;
/// assert_eq!(opts.generate.temperature, 0.0); // greedy by default
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AskOptions {
    pub retrieve: RetrieveOptions,
    /// Sampling and the answer budget (`max_tokens`, default 256 here: an answer of a few
    /// sentences with citations needs far less; the rest of the context goes to passages).
    pub generate: GenerateParams,
    /// Answer from the model alone, without retrieval (the closed-book baseline).
    pub closed_book: bool,
    /// Keep the rendered prompt in [`Answer::prompt`].
    pub keep_prompt: bool,
    /// How the answer is made. Default [`AnswerMode::Quote`] (docs/EVAL.md compares them).
    pub answer: AnswerMode,
    /// How quotes are chosen (quote mode).
    pub quote: QuoteOptions,
    /// The answerability threshold: below it a quote is not presented as an answer. Default
    /// `None`: the one fitted for the chat model, or the rule's (see [`crate::Decision`]).
    pub min_answerable: Option<f32>,
}

impl Default for AskOptions {
    fn default() -> Self {
        Self {
            retrieve: RetrieveOptions::default(),
            generate: GenerateParams {
                max_tokens: 256,
                // Penalise repeats of the answer's own tokens only: a grounded answer copies
                // names and numbers from the passages (with the prompt penalised, SmolLM2 wrote
                // "1987" for a passage's "1912"), and an unpenalised small model loops.
                penalize_prompt: false,
                // The whole answer: small models also loop over whole sentences.
                repeat_last_n: 256,
                ..GenerateParams::default()
            },
            closed_book: false,
            keep_prompt: false,
            answer: AnswerMode::Quote,
            quote: QuoteOptions::default(),
            min_answerable: None,
        }
    }
}

/// A passage the answer cites.
///
/// ```no_run
/// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
/// let answer = rag.ask("Who designed the bridge?")?;
/// for c in &answer.citations {
///     let source = rag::source_label(&c.path, c.pages);
///     println!("[{}] {source}{}", c.n, if c.inferred { " (cited by rag)" } else { "" });
/// }
/// # Ok::<(), rag::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Citation {
    /// The passage number, as written in the answer (`[n]`).
    pub n: usize,
    pub path: String,
    /// First page of the passage (PDFs).
    pub page: Option<u32>,
    pub pages: Option<(u32, u32)>,
    pub chunk_id: u64,
    /// The passage's retrieval score.
    pub score: f32,
    /// The model gave no citation and rag attributed the answer to this passage: the one that
    /// holds the largest share of the answer's topic terms (at least half of them).
    pub inferred: bool,
}

/// Why rag gave the "not found" answer.
///
/// ```no_run
/// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
/// let answer = rag.ask("What is the boiling point of mercury?")?;
/// if answer.abstain_reason == Some(rag::AbstainReason::NoEvidence) {
///     eprintln!("no passage covers the question; the model was not asked");
/// }
/// # Ok::<(), rag::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AbstainReason {
    /// Retrieval found nothing that covers the question well enough; the model was not asked.
    NoEvidence,
    /// The model replied that the passages do not hold the answer (or did not know, closed book).
    Model,
    /// The passages are about the question but, by the answerability decision, do not answer
    /// it (see [`Answer::decision`]).
    Unanswerable,
    /// The model's answer cites no passage that supports it.
    Unsupported,
}

/// What a cited passage contributes to the answer: the sentence(s) holding the quote (or, for
/// a free answer, the passage sentence that best supports the sentence citing it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quote {
    /// The passage number, as cited.
    pub n: usize,
    pub text: String,
    pub path: String,
    /// First page of the passage (PDFs).
    pub page: Option<u32>,
}

/// Seconds per stage of one [`crate::Rag::ask`].
///
/// ```no_run
/// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
/// let t = rag.ask("Who designed the bridge?")?.timings;
/// println!("{} prompt tokens at {:.0} tok/s, {:.1} s in all", t.prompt_tokens, t.prefill_tok_s, t.total_secs);
/// # Ok::<(), rag::Error>(())
/// ```
#[derive(Debug, Clone, Default, Serialize)]
pub struct AskTimings {
    /// Loading models and opening the index (first call only).
    pub load_secs: f64,
    /// Embedding the question.
    pub embed_secs: f64,
    /// BM25, HNSW and fusion.
    pub search_secs: f64,
    /// Reading the prompt.
    pub prefill_secs: f64,
    /// Generating the answer.
    pub decode_secs: f64,
    pub total_secs: f64,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
}

/// A grounded answer: the text, the passages it cites, every passage the model was shown, and
/// whether rag abstained. Serializes to the JSON of `rag ask --json`.
///
/// ```no_run
/// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
/// let answer = rag.ask("Who designed the bridge?")?;
/// if answer.abstained {
///     println!("{}", rag::NOT_FOUND);
/// } else {
///     println!("{} ({} passages shown)", answer.answer, answer.passages.len());
/// }
/// # Ok::<(), rag::Error>(())
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub question: String,
    /// The answer text; citation markers that named no passage are removed.
    pub answer: String,
    /// The passages the answer cites, in order of first citation.
    pub citations: Vec<Citation>,
    /// What each cited passage contributes: its supporting sentence(s).
    pub quotes: Vec<Quote>,
    /// Every passage the model was shown, numbered as in the prompt.
    pub passages: Vec<Passage>,
    /// Whether the answer is "not in the documents" (see `abstain_reason`).
    pub abstained: bool,
    pub abstain_reason: Option<AbstainReason>,
    /// Passage numbers the model cited that do not exist (removed from `answer`).
    pub invalid_citations: Vec<usize>,
    /// How well the best passage covers the question's terms (`None` closed book).
    pub evidence: Option<f32>,
    /// The share of the answer's topic terms found in the passages it cites (0 to 1): low
    /// support means the answer says things the cited passages do not.
    pub support: Option<f32>,
    /// How the answerability decision went (quote mode, when the model was asked).
    pub decision: Option<crate::answerability::Decision>,
    /// Why generation stopped (`None` when the model was not asked).
    pub stop: Option<StopReason>,
    /// The rendered prompt, when asked for: in quote mode the one the model read, which
    /// holds only the passages a quote may start in.
    pub prompt: Option<String>,
    pub timings: AskTimings,
}

impl Answer {
    /// An answer to `question` with nothing in it yet.
    pub(crate) fn new(question: &str) -> Self {
        Self {
            question: question.to_string(),
            answer: String::new(),
            citations: Vec::new(),
            quotes: Vec::new(),
            passages: Vec::new(),
            abstained: false,
            abstain_reason: None,
            invalid_citations: Vec::new(),
            evidence: None,
            support: None,
            decision: None,
            stop: None,
            prompt: None,
            timings: AskTimings::default(),
        }
    }

    /// Turn this into the "not in the documents" answer, for `reason`: nothing is cited.
    pub(crate) fn abstain(&mut self, reason: AbstainReason) {
        self.answer = prompt::NOT_FOUND.to_string();
        self.abstained = true;
        self.abstain_reason = Some(reason);
        self.citations.clear();
        self.quotes.clear();
        self.support = None;
    }
}

/// The question, trimmed; one without a letter or digit is an error.
pub(crate) fn check_question(question: &str) -> Result<&str> {
    let q = question.trim();
    if !q.chars().any(char::is_alphanumeric) {
        return Err(Error::EmptyQuestion);
    }
    Ok(q)
}

/// Step 2, the evidence gate: whether to answer "not in the documents" without asking the
/// model, because no passage covers the question's terms well enough.
pub(crate) fn gate(hits: &[Hit], evidence: f32, opts: &RetrieveOptions) -> Option<AbstainReason> {
    (hits.is_empty() || evidence < opts.min_evidence).then_some(AbstainReason::NoEvidence)
}

/// Step 3: the prompt. Hits become numbered passages fitted into the context minus the
/// answer budget (the last one cut at a word or dropped), then the whole prompt is counted
/// again, since tokens at the seams may merge differently. Closed book, the question alone.
pub(crate) fn prompt(
    format: &PromptFormat,
    question: &str,
    hits: &[Hit],
    opts: &AskOptions,
) -> Result<Prompt> {
    let ctx = format.context_length();
    let max_tokens = opts.generate.max_tokens;
    if max_tokens == 0 || max_tokens >= ctx {
        return Err(Error::InvalidOption(format!(
            "the answer budget (max_tokens, {max_tokens}) must be between 1 and the context length minus the prompt ({ctx} tokens here)"
        )));
    }
    let tokens =
        |system: &str, user: &str| format.chat_prompt(system, user).encode(format.tokenizer());
    let system_prompt = match opts.answer {
        AnswerMode::Quote => prompt::quote_system_prompt(),
        AnswerMode::Free => prompt::system_prompt(),
    };
    let (system, user, passages) = if opts.closed_book {
        (
            prompt::closed_book_system_prompt(),
            question.to_string(),
            Vec::new(),
        )
    } else {
        let system = system_prompt;
        // Tokens of the prompt around the user message, then what is left for passages.
        let frame = tokens(&system, "").len();
        let budget = ctx.saturating_sub(max_tokens + frame + 8);
        let count = |s: &str| format.count(s);
        let mut passages = prompt::fit_passages(hits, question, budget, 32, &count);
        loop {
            let n = tokens(&system, &prompt::user_message(&passages, question)).len();
            if n + max_tokens <= ctx || passages.is_empty() {
                break;
            }
            passages.pop();
        }
        if passages.is_empty() && !hits.is_empty() {
            return Err(rag_model::ModelError::PromptTooLong {
                tokens: tokens(&system, question).len(),
                context: ctx,
                reserved: max_tokens,
            }
            .into());
        }
        let user = prompt::user_message(&passages, question);
        (system, user, passages)
    };
    let rendered = format.chat_prompt(&system, &user);
    let ids = rendered.encode(format.tokenizer());
    if ids.len() + max_tokens > ctx {
        return Err(rag_model::ModelError::PromptTooLong {
            tokens: ids.len(),
            context: ctx,
            reserved: max_tokens,
        }
        .into());
    }
    Ok(Prompt {
        passages,
        text: rendered.text(),
        ids,
    })
}

/// What the model wrote, its citation markers checked.
pub(crate) struct Generated {
    /// The text as shown (invalid markers removed).
    pub text: String,
    /// Valid passage numbers cited, in order of first citation.
    pub cited: Vec<usize>,
    pub invalid: Vec<usize>,
    pub generation: rag_model::Generation,
}

/// Step 4: generate, streaming each piece through the citation filter to `on_text`.
pub(crate) fn generate(
    model: &Model,
    prompt: &Prompt,
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generated> {
    let mut filter = CitationFilter::new(prompt.passages.len());
    let mut text = String::new();
    let generation = model.generate(&prompt.ids, params, &mut |piece| {
        let shown = filter.push(piece);
        if !shown.is_empty() {
            on_text(&shown);
            text.push_str(&shown);
        }
    })?;
    // Trailing whitespace is dropped, so that a citation rag adds follows the last word.
    let tail = filter.finish();
    if !tail.trim().is_empty() {
        on_text(&tail);
        text.push_str(&tail);
    }
    Ok(Generated {
        text,
        cited: filter.cited().to_vec(),
        invalid: filter.invalid().to_vec(),
        generation,
    })
}

/// The timings and stop reason of a generation, into `answer`.
fn record(generation: &Generation, answer: &mut Answer) {
    answer.stop = Some(generation.stop);
    let t = &mut answer.timings;
    t.prefill_secs = generation.prefill_secs;
    t.decode_secs = generation.decode_secs;
    t.prompt_tokens = generation.prompt_tokens;
    t.generated_tokens = generation.tokens.len();
    t.prefill_tok_s = generation.prefill_tok_s();
    t.decode_tok_s = generation.decode_tok_s();
}

/// A citation of passage `p`.
fn citation(p: &Passage, inferred: bool) -> Citation {
    Citation {
        n: p.n,
        path: p.path.clone(),
        page: p.pages.map(|(a, _)| a),
        pages: p.pages,
        chunk_id: p.chunk_id,
        score: p.score,
        inferred,
    }
}

/// The [`Quote`] of `text` from passage `p`.
fn quote_of(p: &Passage, text: &str) -> Quote {
    Quote {
        n: p.n,
        text: text.to_string(),
        path: p.path.clone(),
        page: p.pages.map(|(a, _)| a),
    }
}

/// Step 5 of a free answer: read it back into `answer`. The model's "not found" reply becomes
/// an abstention. Otherwise each citation is resolved to its passage and the passage sentence
/// that best supports the sentence citing it; a citation whose passage has no sentence holding
/// at least half of the citing sentence's topic terms is dropped and reported with the invalid
/// ones. When the model cites nothing, rag cites the best-supporting passage on its behalf
/// (streaming the marker). An answer left without a supported citation is not presented as
/// an answer ([`AbstainReason::Unsupported`]).
pub(crate) fn cite(
    index: Option<&dyn Store>,
    generated: Generated,
    answer: &mut Answer,
    on_text: &mut dyn FnMut(&str),
) {
    let Generated {
        mut text,
        mut cited,
        invalid,
        generation,
    } = generated;
    answer.invalid_citations = invalid;
    record(&generation, answer);
    if cite::is_not_found(&text) {
        // The model's own words stay the answer (they are what was streamed).
        answer.abstain(AbstainReason::Model);
        answer.answer = text.trim().to_string();
        return;
    }
    let Some(index) = index.filter(|_| !answer.passages.is_empty()) else {
        answer.answer = text.trim().to_string();
        return;
    };
    let answer_terms = retrieve::topic_terms(index, &text);
    let passage_terms: Vec<HashSet<String>> = answer
        .passages
        .iter()
        .map(|p| retrieve::topic_terms(index, &p.text).into_iter().collect())
        .collect();
    let inferred = cited.is_empty();
    if inferred {
        if let Some(i) = cite::best_supporting(&answer_terms, &passage_terms) {
            cited.push(i + 1);
            let marker = format!(" [{}]", i + 1);
            on_text(&marker);
            text = format!("{}{marker}", text.trim_end());
        }
    }
    let mut kept = Vec::new();
    for &n in &cited {
        let p = &answer.passages[n - 1];
        let claim = cite::claim_citing(&text, n);
        match cite::supporting_sentence(index, claim, &p.text) {
            Some(range) => {
                kept.push(n);
                answer.quotes.push(quote_of(p, &p.text[range]));
            }
            None => {
                text = cite::remove_marker(&text, n);
                answer.invalid_citations.push(n);
            }
        }
    }
    let sets: Vec<&HashSet<String>> = kept.iter().map(|&n| &passage_terms[n - 1]).collect();
    answer.support = Some(cite::support(&answer_terms, &sets));
    answer.citations = kept
        .iter()
        .map(|&n| citation(&answer.passages[n - 1], inferred))
        .collect();
    answer.answer = text.trim().to_string();
    if kept.is_empty() {
        answer.abstain(AbstainReason::Unsupported);
    }
}

/// Step 5 of a quoted answer: decide whether the quote answers the question
/// ([`crate::answerable`]); if so, the answer is the quote, cited, with its sentence as the
/// passage's quote, and it is streamed; if not, or when no quote came out, "not in the
/// documents".
#[allow(clippy::too_many_arguments)]
pub(crate) fn cite_quote(
    index: &dyn Store,
    fitted: Option<&Fitted>,
    question: &str,
    evidence: f32,
    quoted: Option<Quoted>,
    opts: &AskOptions,
    answer: &mut Answer,
    on_text: &mut dyn FnMut(&str),
) -> Result<()> {
    let Some(q) = quoted else {
        answer.abstain(AbstainReason::Unsupported);
        on_text(&answer.answer);
        return Ok(());
    };
    record(&q.generation, answer);
    let p = answer.passages[q.passage].clone();
    let features = answerability::features(
        index,
        question,
        evidence,
        &p.text,
        p.heading.as_deref(),
        q.range.clone(),
        p.n,
        &q.signals,
    )?;
    let (probability, threshold, by) = match fitted {
        Some(f) => (
            f.probability(&features, &q.signals.hidden),
            f.threshold,
            format!("fitted:{}", f.model.file_name),
        ),
        None => (
            answerability::rule(&features),
            answerability::RULE_THRESHOLD,
            "rule".to_string(),
        ),
    };
    let threshold = opts.min_answerable.unwrap_or(threshold);
    answer.decision = Some(Decision {
        answerable: probability,
        threshold,
        by,
        candidate: p.text[q.range.clone()].trim().to_string(),
        candidate_sentence: p.text[cite::sentence_around(&p.text, q.range.clone())].to_string(),
        candidate_passage: p.n,
        features: answerability::FEATURES
            .iter()
            .map(|n| n.to_string())
            .zip(features)
            .collect(),
        hidden: q.signals.hidden,
        candidates: q.candidates,
    });
    if probability < threshold {
        answer.abstain(AbstainReason::Unanswerable);
        on_text(&answer.answer);
        return Ok(());
    }
    answer.answer = format!("{} [{}]", p.text[q.range.clone()].trim(), p.n);
    on_text(&answer.answer);
    answer.citations = vec![citation(&p, false)];
    let sentence = cite::sentence_around(&p.text, q.range);
    answer.quotes = vec![quote_of(&p, &p.text[sentence])];
    answer.support = Some(1.0);
    Ok(())
}

/// The callback type of [`crate::Rag::ask_streaming`]: called with each piece of the answer as
/// it is generated (citation markers already checked).
///
/// ```no_run
/// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
/// let mut text = String::new();
/// let on_text: rag::OnText<'_> = &mut |piece| text.push_str(piece);
/// rag.ask_streaming("Who designed the bridge?", on_text)?;
/// # Ok::<(), rag::Error>(())
/// ```
pub type OnText<'a> = &'a mut dyn FnMut(&str);
