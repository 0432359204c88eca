//! What an answer is ([`Answer`], [`Citation`]) and the steps that make one, in the order
//! [`crate::Rag::ask`] runs them: retrieve (in [`crate::Rag::retrieve`]), [`gate`], [`prompt`],
//! [`generate`], [`cite`]. Each step is a plain function of what the one before produced, so the
//! path of a question reads top to bottom.
use std::collections::HashSet;

use rag_index::{Hit, Index};
use rag_model::{GenerateParams, Model, PromptFormat, StopReason};
use serde::Serialize;

use crate::cite::{self, CitationFilter};
use crate::error::{Error, Result};
use crate::prompt::{self, Passage};
use crate::retrieve::{self, RetrieveOptions};

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
    /// Why generation stopped (`None` when the model was not asked).
    pub stop: Option<StopReason>,
    /// The rendered prompt, when asked for.
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
            passages: Vec::new(),
            abstained: false,
            abstain_reason: None,
            invalid_citations: Vec::new(),
            evidence: None,
            support: None,
            stop: None,
            prompt: None,
            timings: AskTimings::default(),
        }
    }

    /// Turn this into the "not in the documents" answer, for `reason`.
    pub(crate) fn abstain(&mut self, reason: AbstainReason) {
        self.answer = prompt::NOT_FOUND.to_string();
        self.abstained = true;
        self.abstain_reason = Some(reason);
    }
}

/// The question, trimmed; an empty one is an error.
pub(crate) fn check_question(question: &str) -> Result<&str> {
    let q = question.trim();
    if q.is_empty() {
        return Err(Error::EmptyQuestion);
    }
    Ok(q)
}

/// Step 2, the evidence gate: whether to answer "not in the documents" without asking the
/// model, because no passage covers the question's terms well enough.
pub(crate) fn gate(hits: &[Hit], evidence: f32, opts: &RetrieveOptions) -> Option<AbstainReason> {
    (hits.is_empty() || evidence < opts.min_evidence).then_some(AbstainReason::NoEvidence)
}

/// A rendered prompt and the passages in it.
pub(crate) struct Prompt {
    pub passages: Vec<Passage>,
    pub text: String,
    pub ids: Vec<u32>,
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
    let (system, user, passages) = if opts.closed_book {
        (
            prompt::closed_book_system_prompt(),
            question.to_string(),
            Vec::new(),
        )
    } else {
        let system = prompt::system_prompt();
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

/// Step 5: read the answer back into `answer`: the model's "not found" reply becomes an
/// abstention; otherwise its citations are resolved to passages (or, when it cites none, rag
/// cites the best-supporting passage on its behalf, streaming the marker) and its support is
/// measured.
pub(crate) fn cite(
    index: Option<&Index>,
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
    answer.stop = Some(generation.stop);
    let t = &mut answer.timings;
    t.prefill_secs = generation.prefill_secs;
    t.decode_secs = generation.decode_secs;
    t.prompt_tokens = generation.prompt_tokens;
    t.generated_tokens = generation.tokens.len();
    t.prefill_tok_s = generation.prefill_tok_s();
    t.decode_tok_s = generation.decode_tok_s();
    if cite::is_not_found(&text) {
        answer.abstain(AbstainReason::Model);
        return;
    }
    if let (Some(index), false) = (index, answer.passages.is_empty()) {
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
        let sets: Vec<&HashSet<String>> = cited.iter().map(|&n| &passage_terms[n - 1]).collect();
        answer.support = Some(cite::support(&answer_terms, &sets));
        answer.citations = cited
            .iter()
            .filter_map(|&n| answer.passages.get(n - 1))
            .map(|p| Citation {
                n: p.n,
                path: p.path.clone(),
                page: p.pages.map(|(a, _)| a),
                pages: p.pages,
                chunk_id: p.chunk_id,
                score: p.score,
                inferred,
            })
            .collect();
    }
    answer.answer = text.trim().to_string();
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
