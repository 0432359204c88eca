//! [`Rag`]: one index directory with the models that serve it. Open it, ingest files, search,
//! ask. Models and the index are loaded on first use and kept: nothing on the query path
//! reloads them.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use rag_index::{Hit, Index, IndexError};
use serde::Serialize;

use crate::answer::{self, CitationFilter, Passage, NOT_FOUND};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::embed::variant_of_id;
use crate::model::minilm::MiniLm;
use crate::model::{
    EmbedOptions, EmbedderKind, GenerateParams, Model, StopReason, TextEmbedder, WeightFormat,
};
use crate::pipeline::{IngestEvent, IngestOptions, IngestReport};
use crate::retrieve::{self, Mode, RetrieveOptions};

/// Settings of [`Rag::ask`].
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
    /// holds the largest share of the answer's topic terms (at least [`MIN_SUPPORT`]).
    pub inferred: bool,
}

/// A passage must hold at least this share of an uncited answer's topic terms for rag to cite
/// it on the model's behalf.
pub const MIN_SUPPORT: f32 = 0.5;

/// Why rag gave the "not found" answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AbstainReason {
    /// Retrieval found nothing that covers the question well enough; the model was not asked.
    NoEvidence,
    /// The model replied that the passages do not hold the answer (or did not know, closed book).
    Model,
}

/// Seconds per stage of one [`Rag::ask`].
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

/// A grounded answer.
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
    /// How well the best passage covers the question's terms (see [`retrieve::evidence`]).
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

/// An index directory and the models that serve it.
///
/// ```no_run
/// use rag::{Config, Rag};
/// let mut rag = Rag::open(".rag", Config::resolve(&Default::default())?)?;
/// rag.ingest(&["docs".into()])?;
/// let answer = rag.ask("When was the bridge built?")?;
/// println!("{}", answer.answer);
/// for c in &answer.citations {
///     println!("[{}] {}", c.n, c.path);
/// }
/// # Ok::<(), rag::Error>(())
/// ```
pub struct Rag {
    dir: PathBuf,
    config: Config,
    options: AskOptions,
    embedder: OnceLock<TextEmbedder>,
    chat: OnceLock<Arc<Model>>,
    index: OnceLock<Index>,
}

impl Rag {
    /// Use the index at `dir` (it need not exist yet: [`Rag::ingest`] creates it) with the
    /// models named by `config`. Loads nothing yet.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Self> {
        Ok(Self {
            dir: dir.as_ref().to_path_buf(),
            config,
            options: AskOptions::default(),
            embedder: OnceLock::new(),
            chat: OnceLock::new(),
            index: OnceLock::new(),
        })
    }

    /// Replace the settings of [`Rag::ask`] and [`Rag::search`].
    pub fn with_options(mut self, options: AskOptions) -> Self {
        self.options = options;
        self
    }

    /// The settings of [`Rag::ask`] and [`Rag::search`].
    pub fn options(&self) -> &AskOptions {
        &self.options
    }

    /// Change the settings in place.
    pub fn options_mut(&mut self) -> &mut AskOptions {
        &mut self.options
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The embedder of queries (loaded on first use): the index's own; see [`load_embedder`].
    pub fn embedder(&self) -> Result<&TextEmbedder> {
        if let Some(e) = self.embedder.get() {
            return Ok(e);
        }
        let e = load_embedder(&self.config, &self.dir, EmbedderUse::Query)?;
        Ok(self.embedder.get_or_init(|| e))
    }

    /// The chat model (loaded on first use), on the quantized CPU engine: for SmolLM2 Q4_1 a
    /// SQuAD question with ~960-token prompts takes 2.06-2.13 s against 6.8 s with f32 weights, in
    /// a quarter of the memory (docs/EVAL.md, README).
    pub fn chat_model(&self) -> Result<&Arc<Model>> {
        if let Some(m) = self.chat.get() {
            return Ok(m);
        }
        let path = self.config.model_path()?;
        let mut opts = self.config.model_options();
        opts.format = WeightFormat::Quantized;
        let model = Arc::new(Model::load(path, &opts)?);
        Ok(self.chat.get_or_init(|| model))
    }

    /// The last commit of the index (opened on first use).
    pub fn index(&self) -> Result<&Index> {
        if let Some(i) = self.index.get() {
            return Ok(i);
        }
        let i = Index::open(&self.dir)?;
        Ok(self.index.get_or_init(|| i))
    }

    /// Index files and folders (see [`crate::pipeline::ingest`]) with default settings.
    pub fn ingest(&mut self, paths: &[PathBuf]) -> Result<IngestReport> {
        self.ingest_with(paths, &IngestOptions::default(), &mut |_| {})
    }

    /// Index files and folders with explicit settings, reporting progress to `on_event`.
    pub fn ingest_with(
        &mut self,
        paths: &[PathBuf],
        opts: &IngestOptions,
        on_event: &mut dyn FnMut(&IngestEvent),
    ) -> Result<IngestReport> {
        // The embedder asked for, if another than the one loaded (e.g. to --reindex with it).
        let wanted = self.config.embedder;
        if wanted.is_some_and(|k| self.embedder.get().is_some_and(|e| e.kind() != k)) {
            self.embedder = OnceLock::new();
        }
        if self.embedder.get().is_none() {
            let e = load_embedder(&self.config, &self.dir, EmbedderUse::Ingest)?;
            let _ = self.embedder.set(e);
        }
        let embedder = self.embedder()?;
        let report = crate::pipeline::ingest(&self.dir, embedder, paths, opts, on_event)?;
        // Later searches see the new commit.
        self.index = OnceLock::new();
        Ok(report)
    }

    /// The index, refusing one that is empty or was built by another embedder.
    fn ready_index(&self, need_vectors: bool) -> Result<&Index> {
        let index = self.index()?;
        if index.is_empty() {
            return Err(Error::EmptyIndex {
                dir: self.dir.clone(),
            });
        }
        if need_vectors {
            let e = self.embedder()?;
            let m = index.manifest();
            if m.embedder_id != e.id() || m.dim != e.dim() {
                return Err(Error::Index(IndexError::EmbedderMismatch {
                    dir: self.dir.clone(),
                    have_id: m.embedder_id.clone(),
                    have_dim: m.dim,
                    want_id: e.id(),
                    want_dim: e.dim(),
                }));
            }
        }
        Ok(index)
    }

    /// The top `k` distinct passages for `query` under the current retrieval settings.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>> {
        let mut opts = self.options.retrieve.clone();
        opts.k = k;
        self.retrieve(query, &opts, &mut AskTimings::default())
    }

    fn retrieve(
        &self,
        query: &str,
        opts: &RetrieveOptions,
        t: &mut AskTimings,
    ) -> Result<Vec<Hit>> {
        let need_vectors = opts.mode != Mode::Bm25;
        let t0 = Instant::now();
        let index = self.ready_index(need_vectors)?;
        t.load_secs += t0.elapsed().as_secs_f64();
        let vector = if need_vectors {
            let te = Instant::now();
            let v = self.embedder()?.embed(&[query])?.remove(0);
            t.embed_secs = te.elapsed().as_secs_f64();
            Some(v)
        } else {
            None
        };
        let ts = Instant::now();
        let hits = retrieve::retrieve(index, query, vector.as_deref(), opts)?;
        t.search_secs = ts.elapsed().as_secs_f64();
        Ok(hits)
    }

    /// Answer `question` from the documents.
    pub fn ask(&self, question: &str) -> Result<Answer> {
        self.ask_streaming(question, &mut |_| {})
    }

    /// [`Rag::ask`] with `options` in place of this `Rag`'s own settings, so that several
    /// settings (closed book, other retrieval) can be compared on one index and one loaded model.
    pub fn ask_with(&self, question: &str, options: &AskOptions) -> Result<Answer> {
        self.ask_streaming_with(question, options, &mut |_| {})
    }

    /// [`Rag::ask`], calling `on_text` with each piece of the answer as it is generated
    /// (citation markers already checked).
    pub fn ask_streaming(&self, question: &str, on_text: &mut dyn FnMut(&str)) -> Result<Answer> {
        self.ask_streaming_with(question, &self.options, on_text)
    }

    fn ask_streaming_with(
        &self,
        question: &str,
        opts: &AskOptions,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Answer> {
        let t0 = Instant::now();
        let question = question.trim();
        if question.is_empty() {
            return Err(Error::InvalidOption("the question is empty".into()));
        }
        let mut timings = AskTimings::default();
        let (hits, evidence) = if opts.closed_book {
            (Vec::new(), None)
        } else {
            let hits = self.retrieve(question, &opts.retrieve, &mut timings)?;
            let ev = retrieve::evidence(self.index()?, question, &hits)?;
            (hits, Some(ev))
        };
        let mut answer = Answer {
            question: question.to_string(),
            answer: String::new(),
            citations: Vec::new(),
            passages: Vec::new(),
            abstained: false,
            abstain_reason: None,
            invalid_citations: Vec::new(),
            evidence,
            support: None,
            stop: None,
            prompt: None,
            timings: AskTimings::default(),
        };
        let no_evidence = hits.is_empty() || evidence.unwrap_or(0.0) < opts.retrieve.min_evidence;
        if !opts.closed_book && no_evidence {
            // Nothing plausibly relevant: say so, without loading or asking the model.
            answer.answer = NOT_FOUND.to_string();
            answer.abstained = true;
            answer.abstain_reason = Some(AbstainReason::NoEvidence);
            on_text(NOT_FOUND);
            timings.total_secs = t0.elapsed().as_secs_f64();
            answer.timings = timings;
            return Ok(answer);
        }
        let tl = Instant::now();
        let model = self.chat_model()?;
        timings.load_secs += tl.elapsed().as_secs_f64();
        let tokenizer = model.tokenizer();
        let count = |s: &str| tokenizer.encode(s, false, false).len();
        let ctx = model.context_length();
        let max_tokens = opts.generate.max_tokens;
        if max_tokens == 0 || max_tokens >= ctx {
            return Err(Error::InvalidOption(format!(
                "--max-tokens must be between 1 and the context length minus the prompt ({ctx} tokens here)"
            )));
        }
        let (system, user) = if opts.closed_book {
            (answer::closed_book_system_prompt(), question.to_string())
        } else {
            let system = answer::system_prompt();
            // Tokens of the prompt around the user message, then what is left for passages.
            let frame = model.chat_prompt(&system, "").encode(tokenizer).len();
            let budget = ctx.saturating_sub(max_tokens + frame + 8);
            let mut passages = answer::fit_passages(&hits, question, budget, 32, &count);
            // The whole prompt is counted again: tokens at the seams may merge differently.
            loop {
                let user = answer::user_message(&passages, question);
                let n = model.chat_prompt(&system, &user).encode(tokenizer).len();
                if n + max_tokens <= ctx || passages.is_empty() {
                    break;
                }
                passages.pop();
            }
            if passages.is_empty() {
                let n = model.chat_prompt(&system, question).encode(tokenizer).len();
                return Err(Error::PromptTooLong {
                    tokens: n,
                    context: ctx,
                    reserved: max_tokens,
                });
            }
            let user = answer::user_message(&passages, question);
            answer.passages = passages;
            (system, user)
        };
        let prompt = model.chat_prompt(&system, &user);
        let ids = prompt.encode(tokenizer);
        if ids.len() + max_tokens > ctx {
            return Err(Error::PromptTooLong {
                tokens: ids.len(),
                context: ctx,
                reserved: max_tokens,
            });
        }
        if opts.keep_prompt {
            answer.prompt = Some(prompt.text());
        }
        let mut filter = CitationFilter::new(answer.passages.len());
        let mut text = String::new();
        let gen = model.generate(&ids, &opts.generate, &mut |piece| {
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
        answer.stop = Some(gen.stop);
        answer.invalid_citations = filter.invalid().to_vec();
        if answer::is_not_found(&text) {
            answer.abstained = true;
            answer.abstain_reason = Some(AbstainReason::Model);
        } else if !answer.passages.is_empty() {
            let index = self.index()?;
            let answer_terms = retrieve::topic_terms(index, &text);
            let passage_terms: Vec<HashSet<String>> = answer
                .passages
                .iter()
                .map(|p| retrieve::topic_terms(index, &p.text).into_iter().collect())
                .collect();
            let mut cited: Vec<usize> = filter.cited().to_vec();
            let inferred = cited.is_empty();
            if inferred {
                // The model cited nothing: cite the passage that supports the answer best.
                let best = (0..passage_terms.len())
                    .map(|i| (i, support(&answer_terms, &[&passage_terms[i]])))
                    .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
                if let Some((i, _)) = best.filter(|&(_, s)| s >= MIN_SUPPORT) {
                    cited.push(i + 1);
                    let marker = format!(" [{}]", i + 1);
                    on_text(&marker);
                    text = format!("{}{marker}", text.trim_end());
                }
            }
            let sets: Vec<&HashSet<String>> =
                cited.iter().map(|&n| &passage_terms[n - 1]).collect();
            answer.support = Some(support(&answer_terms, &sets));
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
        timings.prefill_secs = gen.prefill_secs;
        timings.decode_secs = gen.decode_secs;
        timings.prompt_tokens = gen.prompt_tokens;
        timings.generated_tokens = gen.tokens.len();
        timings.prefill_tok_s = gen.prefill_tok_s();
        timings.decode_tok_s = gen.decode_tok_s();
        timings.total_secs = t0.elapsed().as_secs_f64();
        answer.timings = timings;
        Ok(answer)
    }
}

/// What an embedder is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedderUse {
    /// Writing an index: the kind `config.embedder` names wins (a mismatch with an existing
    /// index is then refused by the writer, with the fix).
    Ingest,
    /// Embedding queries: the kind the index was built with wins, whatever is configured.
    Query,
}

/// The embedder for the index at `dir`. For [`EmbedderUse::Ingest`]: the kind `config.embedder`
/// names, else the index's own, else [`crate::model::DEFAULT_EMBEDDER`]; for
/// [`EmbedderUse::Query`] the index's own comes first. A Llama embedder holds the model with
/// dense f32 weights (the fast path for batches).
pub fn load_embedder(config: &Config, dir: &Path, usage: EmbedderUse) -> Result<TextEmbedder> {
    let index_id = index_embedder_id(dir);
    let of_index = index_id.as_deref().map(EmbedderKind::of_id);
    let kind = match usage {
        EmbedderUse::Ingest => config.embedder.or(of_index),
        EmbedderUse::Query => of_index.or(config.embedder),
    }
    .unwrap_or(crate::model::DEFAULT_EMBEDDER);
    match kind {
        EmbedderKind::Llama => {
            // Pooling and layer: for queries as the index was built; for ingest as asked, else
            // as the index was built, else the defaults.
            let mut embed = EmbedOptions::default();
            let from_index = index_id
                .as_deref()
                .filter(|id| EmbedderKind::of_id(id) == EmbedderKind::Llama)
                .and_then(variant_of_id);
            if let Some((pooling, layer)) = from_index {
                embed.pooling = pooling;
                embed.layer = layer;
            }
            if usage == EmbedderUse::Ingest || from_index.is_none() {
                if let Some(p) = config.embed_pooling {
                    embed.pooling = p;
                }
                if let Some(l) = config.embed_layer {
                    embed.layer = l;
                }
            }
            TextEmbedder::llama(config.embed_model_path()?, &config.model_options(), embed)
        }
        EmbedderKind::MiniLm => TextEmbedder::minilm(&MiniLm::default_dir()),
    }
}

/// The embedder id recorded in `dir/manifest.json`, if there is an index there.
fn index_embedder_id(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("manifest.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["embedder"]["id"].as_str().map(str::to_string)
}

/// The share of `terms` (distinct) found in any of `passages`; 1.0 for no terms.
fn support(terms: &[String], passages: &[&HashSet<String>]) -> f32 {
    let distinct: HashSet<&String> = terms.iter().collect();
    if distinct.is_empty() {
        return 1.0;
    }
    let found = distinct
        .iter()
        .filter(|t| passages.iter().any(|p| p.contains(**t)))
        .count();
    found as f32 / distinct.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn support_counts_distinct_terms() {
        let t = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p1: HashSet<String> = ["bridg", "1912", "open"].map(String::from).into();
        let p2: HashSet<String> = ["okonkwo"].map(String::from).into();
        let terms = t(&["bridg", "open", "open", "1912", "okonkwo"]);
        assert_eq!(support(&terms, &[&p1]), 0.75);
        assert_eq!(support(&terms, &[&p1, &p2]), 1.0);
        assert_eq!(support(&terms, &[]), 0.0);
        assert_eq!(support(&[], &[&p1]), 1.0);
    }
}
