//! Text generation: chunked prefill into a preallocated KV cache, then one token at a time with
//! greedy or seeded sampling, streaming text as it completes.
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::Serialize;

use crate::error::{ModelError, Result};
use crate::llama::{Fed, KvCache, Logits};
use crate::model::Model;

/// Sampling and stopping settings.
///
/// ```
/// let params = rag_model::GenerateParams { max_tokens: 64, temperature: 0.7, ..Default::default() };
/// assert_eq!(params.seed, rag_model::GenerateParams::default().seed);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// Most tokens to generate. Default 512.
    pub max_tokens: usize,
    /// 0 means greedy (argmax), reproducible and the default: grounded answers want the most
    /// likely wording, not variety.
    pub temperature: f64,
    /// Keep the k most likely tokens when sampling (temperature > 0). Default 40, as llama.cpp.
    pub top_k: Option<usize>,
    /// Nucleus sampling mass when sampling (temperature > 0). Default 0.95, as llama.cpp.
    pub top_p: Option<f64>,
    /// Divide the logits of recently seen tokens by this (1.0 = off). Default 1.1, which stops
    /// small models from looping without changing their wording much.
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at. Default 64.
    pub repeat_last_n: usize,
    /// Whether the repeat penalty also looks at prompt tokens (as llama.cpp does). Default true.
    /// Turn it off when the answer should copy words from the prompt, as a grounded answer
    /// copies names and numbers from its passages: the penalty then only stops loops.
    pub penalize_prompt: bool,
    /// Seed of the sampler. Default 299792458.
    pub seed: u64,
    /// Stops the generation when cancelled from elsewhere (a client that went away). Default:
    /// a fresh one nobody cancels. Clones of these params share the flag: give each generation
    /// that may be cancelled a `Cancel::default()` of its own.
    pub cancel: Cancel,
}

/// A flag that stops a generation from another thread: cheap to clone, every clone sees the
/// same flag; two are equal when they are the same flag.
///
/// ```
/// let cancel = rag_model::Cancel::default();
/// let params = rag_model::GenerateParams { cancel: cancel.clone(), ..Default::default() };
/// cancel.cancel();
/// assert!(params.cancel.is_cancelled());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Cancel(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Cancel {
    /// Ask the generation to stop (at its next token).
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl PartialEq for Cancel {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            max_tokens: 512,
            temperature: 0.0,
            top_k: Some(40),
            top_p: Some(0.95),
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            penalize_prompt: true,
            seed: 299_792_458,
            cancel: Cancel::default(),
        }
    }
}

/// Why generation stopped.
///
/// ```
/// let stop = serde_json::to_string(&rag_model::StopReason::MaxTokens).unwrap();
/// assert_eq!(stop, "\"max_tokens\"");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced its end-of-sequence token.
    EndOfSequence,
    /// The model produced the template's end-of-turn token.
    EndOfTurn,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context window is full.
    ContextFull,
    /// The generation was cancelled ([`Cancel`]).
    Cancelled,
}

/// A finished generation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// The generated text (stop tokens excluded).
    pub text: String,
    /// The generated token ids (stop token excluded).
    pub tokens: Vec<u32>,
    /// The natural-log probability the model gave each generated token (before any repeat
    /// penalty).
    pub logprobs: Vec<f32>,
    pub prompt_tokens: usize,
    pub stop: StopReason,
    /// Seconds spent reading the prompt.
    pub prefill_secs: f64,
    /// Seconds spent generating after the prompt.
    pub decode_secs: f64,
}

impl Generation {
    /// Prompt tokens read per second.
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs.max(1e-9)
    }

    /// Tokens generated per second (the first token's sampling included).
    pub fn decode_tok_s(&self) -> f64 {
        self.tokens.len() as f64 / self.decode_secs.max(1e-9)
    }
}

/// Prompt tokens are read in slices of this many, bounding the scratch memory of a forward
/// (~25 KiB a token on SmolLM2, ~220 KiB on Llama 2 7B). 256 rather than 128: each slice's
/// products unpack their weights once (on AMX tiles) or read them once per run of tokens,
/// so longer slices read a 1,500-token prompt faster (Llama 2 7B, 8 layers, Q5_K_M: 159-164
/// -> 171-178 tok/s on the AMX Xeon, and 512 gave 180-183 for 70 MiB more peak memory, past
/// the bound of the file + KV cache + 10%). On the CPU engine the result does not depend on
/// the slicing: its attention and matrix kernels give each token the same bits whatever the
/// batch.
const PREFILL_CHUNK: usize = 256;

impl Model {
    /// Generate a continuation of `prompt` (token ids, e.g. from [`crate::Prompt::encode`]),
    /// calling `on_text` with each piece of text as soon as it forms valid UTF-8.
    ///
    /// Stops at end-of-sequence, the template's end-of-turn token, `max_tokens`, or a full context.
    /// A prompt that leaves no room for even one token is an error, never silently truncated.
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        self.session(prompt, params.max_tokens)?
            .generate(params, on_text)
    }

    /// Read `prompt` into a new KV cache with room for `max_new` more tokens (fewer if the
    /// context ends first), ready to be continued: see [`Session`].
    pub fn session(&self, prompt: &[u32], max_new: usize) -> Result<Session<'_>> {
        let ctx = self.llama.max_context();
        if prompt.is_empty() {
            return Err(ModelError::InvalidInput("the prompt is empty".into()));
        }
        if prompt.len() >= ctx {
            return Err(ModelError::PromptTooLong {
                tokens: prompt.len(),
                context: ctx,
                reserved: 1,
            });
        }
        let room = max_new.max(1).min(ctx - prompt.len());
        let mut cache = self.llama.new_cache(1, prompt.len() + room)?;
        let t0 = Instant::now();
        let fed = self.feed_prompt(prompt, &mut cache)?;
        Ok(Session {
            model: self,
            cache,
            prompt_len: prompt.len(),
            history: prompt.to_vec(),
            logits: fed.logits,
            hidden: fed.hidden,
            prefill_secs: t0.elapsed().as_secs_f64(),
        })
    }

    /// A KV cache for this model, for [`Model::prefill`] and [`Model::step`].
    pub fn new_cache(&self, max_len: usize) -> Result<KvCache> {
        self.llama.new_cache(1, max_len)
    }

    /// Feed the (non-empty) `prompt` after what the cache holds, 128 tokens at a time (bounding
    /// the scratch memory; the result does not depend on it); return the next-token logits after
    /// its last token.
    pub fn prefill(&self, prompt: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        Ok(self.feed_prompt(prompt, cache)?.logits)
    }

    /// Feed `tokens` after what the cache holds; return the next-token logits after the last.
    pub fn step(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        Ok(self.llama.feed(tokens, cache, Logits::Last)?.logits)
    }

    /// [`Model::prefill`], also keeping the last token's hidden state.
    fn feed_prompt(&self, prompt: &[u32], cache: &mut KvCache) -> Result<Fed> {
        if prompt.is_empty() {
            return Err(ModelError::InvalidInput("the prompt is empty".into()));
        }
        let last = (prompt.len() - 1) / PREFILL_CHUNK * PREFILL_CHUNK;
        for chunk in prompt[..last].chunks(PREFILL_CHUNK) {
            self.llama.feed(chunk, cache, Logits::None)?;
        }
        self.llama.feed(&prompt[last..], cache, Logits::Last)
    }

    /// The template's end-of-turn token ids (`<|im_end|>`; for Llama 2 that is EOS itself).
    fn turn_tokens(&self) -> Vec<u32> {
        self.tokenizer
            .token_id(self.template.end_of_turn())
            .into_iter()
            .collect()
    }
}

/// A prompt read into a KV cache ([`Model::session`]), ready to be continued: the prompt's
/// last hidden state, the log-probabilities of candidate continuations ([`Session::score`],
/// [`Session::best_span`]), then one generation ([`Session::generate`]).
///
/// ```no_run
/// # let model = rag_model::Model::load("m.gguf".as_ref(), &Default::default())?;
/// let prompt = model.chat_prompt("", "Who wrote Hamlet?").encode(model.tokenizer());
/// let mut session = model.session(&prompt, 32)?;
/// let idk = model.tokenizer().encode("I don't know.", false, false);
/// let idk_logprob: f32 = session.score(&idk)?.iter().sum();
/// let answer = session.generate(&Default::default(), &mut |_| {})?;
/// # Ok::<(), rag_model::ModelError>(())
/// ```
pub struct Session<'m> {
    model: &'m Model,
    cache: KvCache,
    prompt_len: usize,
    /// The prompt, then what was generated (for the repeat penalty).
    history: Vec<u32>,
    /// The next-token logits after the prompt.
    logits: Vec<f32>,
    /// The final hidden state of the prompt's last token.
    hidden: Vec<f32>,
    prefill_secs: f64,
}

impl Session<'_> {
    /// The final (normed) hidden state of the prompt's last token: what the model "thinks"
    /// before answering, for probes.
    pub fn hidden(&self) -> &[f32] {
        &self.hidden
    }

    /// The next-token logits after the prompt.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Seconds spent reading the prompt.
    pub fn prefill_secs(&self) -> f64 {
        self.prefill_secs
    }

    /// The natural-log probability of each of `tokens` in turn, following the prompt
    /// (teacher-forced, without any repeat penalty). The session is left as it was.
    pub fn score(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        let Some((&first, _)) = tokens.split_first() else {
            return Ok(Vec::new());
        };
        if self.prompt_len + tokens.len() > self.cache.capacity() {
            return Err(ModelError::InvalidInput(format!(
                "{} tokens to score do not fit the session's cache ({} after the prompt)",
                tokens.len(),
                self.cache.capacity() - self.prompt_len
            )));
        }
        let mut out = vec![log_softmax_at(&self.logits, first)];
        if tokens.len() > 1 {
            let all = self
                .model
                .llama
                .feed(&tokens[..tokens.len() - 1], &mut self.cache, Logits::All)?
                .logits;
            self.cache.truncate(self.prompt_len);
            let vocab = self.logits.len();
            for (row, &t) in all.chunks_exact(vocab).zip(&tokens[1..]) {
                out.push(log_softmax_at(row, t));
            }
        }
        Ok(out)
    }

    /// For `tokens` following the prompt: the log-probability of each token in turn, and after
    /// each, the log-probability that the model ends its turn there (its end-of-turn or
    /// end-of-sequence token). Every prefix of `tokens` is thereby scored as a whole answer:
    /// `sum(logprobs[..n]) + stops[n - 1]`. The session is left as it was.
    pub fn score_with_stops(&mut self, tokens: &[u32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let Some(&first) = tokens.first() else {
            return Ok((Vec::new(), Vec::new()));
        };
        if self.prompt_len + tokens.len() > self.cache.capacity() {
            return Err(ModelError::InvalidInput(format!(
                "{} tokens to score do not fit the session's cache ({} after the prompt)",
                tokens.len(),
                self.cache.capacity() - self.prompt_len
            )));
        }
        let mut stop_ids: Vec<u32> = self
            .model
            .turn_tokens()
            .into_iter()
            .chain(self.model.tokenizer.eos_id())
            .collect();
        stop_ids.sort_unstable();
        stop_ids.dedup();
        let all = self
            .model
            .llama
            .feed(tokens, &mut self.cache, Logits::All)?
            .logits;
        self.cache.truncate(self.prompt_len);
        let vocab = self.logits.len();
        let mut logprobs = vec![log_softmax_at(&self.logits, first)];
        let mut stops = Vec::with_capacity(tokens.len());
        for (i, row) in all.chunks_exact(vocab).enumerate() {
            let lse = log_sum_exp(row);
            if let Some(&next) = tokens.get(i + 1) {
                logprobs.push(row[next as usize] - lse);
            }
            // The turn ends with any stop token: their probabilities add up.
            let stop = stop_ids
                .iter()
                .map(|&s| (row[s as usize] - lse).exp())
                .sum::<f32>();
            stops.push(stop.ln());
        }
        Ok((logprobs, stops))
    }

    /// Generate from the end of the prompt, calling `on_text` with each piece of text as soon
    /// as it forms valid UTF-8. Stops at end-of-sequence, end-of-turn, `params.max_tokens` or
    /// the session's room.
    pub fn generate(
        mut self,
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        let model = self.model;
        let room = self.cache.capacity() - self.prompt_len;
        let budget = params.max_tokens.min(room);
        let mut sampler = Sampler::new(params);
        let turn = model.turn_tokens();
        let eos = model.tokenizer.eos_id();
        let t1 = Instant::now();
        let first_new = if params.penalize_prompt {
            0
        } else {
            self.prompt_len
        };
        let mut logits = std::mem::take(&mut self.logits);
        let mut out = Vec::new();
        let mut logprobs = Vec::new();
        let mut decoder = model.tokenizer.stream_decoder();
        let mut text = String::new();
        let stop = loop {
            if params.cancel.is_cancelled() {
                break StopReason::Cancelled;
            }
            let lse = log_sum_exp(&logits);
            let penalised = &self.history[first_new..];
            let mut before_penalty = Vec::new();
            if params.repeat_penalty != 1.0 && !penalised.is_empty() {
                let start = penalised.len().saturating_sub(params.repeat_last_n);
                before_penalty =
                    apply_repeat_penalty(&mut logits, params.repeat_penalty, &penalised[start..]);
            }
            let choice = sampler.sample(&logits)?;
            let raw = before_penalty
                .iter()
                .find(|(t, _)| *t == choice)
                .map_or(logits[choice as usize], |&(_, l)| l);
            if turn.contains(&choice) {
                break StopReason::EndOfTurn;
            }
            if Some(choice) == eos {
                break StopReason::EndOfSequence;
            }
            out.push(choice);
            logprobs.push(raw - lse);
            self.history.push(choice);
            let piece = decoder.push(choice);
            if !piece.is_empty() {
                on_text(&piece);
                text.push_str(&piece);
            }
            if out.len() >= budget {
                break if budget < params.max_tokens {
                    StopReason::ContextFull
                } else {
                    StopReason::MaxTokens
                };
            }
            logits = model.step(&[choice], &mut self.cache)?;
        };
        let tail = decoder.finish();
        if !tail.is_empty() {
            on_text(&tail);
            text.push_str(&tail);
        }
        Ok(Generation {
            text,
            tokens: out,
            logprobs,
            prompt_tokens: self.prompt_len,
            stop,
            prefill_secs: self.prefill_secs,
            decode_secs: t1.elapsed().as_secs_f64(),
        })
    }
}

/// `ln(sum(exp(x)))`, stable.
pub(crate) fn log_sum_exp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    max + x.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

/// The log-probability of `token` under `logits`.
fn log_softmax_at(logits: &[f32], token: u32) -> f32 {
    logits
        .get(token as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY)
        - log_sum_exp(logits)
}

/// Divide positive logits of the tokens in `context` by `penalty` and multiply negative ones
/// (each token once), as llama.cpp and candle do. Returns each changed token with its logit
/// before.
fn apply_repeat_penalty(logits: &mut [f32], penalty: f32, context: &[u32]) -> Vec<(u32, f32)> {
    let mut before = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for &t in context {
        if !seen.insert(t) {
            continue;
        }
        if let Some(l) = logits.get_mut(t as usize) {
            before.push((t, *l));
            if *l >= 0.0 {
                *l /= penalty
            } else {
                *l *= penalty
            }
        }
    }
    before
}

/// Picks the next token: the first maximum when greedy (as candle's `argmax`), otherwise
/// candle's seeded sampler.
enum Sampler {
    Greedy,
    /// Boxed: the sampler's random state is large beside the greedy case.
    Sample(Box<LogitsProcessor>),
}

impl Sampler {
    fn new(params: &GenerateParams) -> Self {
        match sampling(params) {
            Sampling::ArgMax => Self::Greedy,
            s => Self::Sample(Box::new(LogitsProcessor::from_sampling(params.seed, s))),
        }
    }

    fn sample(&mut self, logits: &[f32]) -> Result<u32> {
        match self {
            Self::Greedy => greedy(logits)
                .ok_or_else(|| ModelError::InvalidInput("no logits to pick from".into())),
            Self::Sample(p) => {
                Ok(p.sample(&Tensor::from_slice(logits, logits.len(), &Device::Cpu)?)?)
            }
        }
    }
}

/// The greedy choice: the index of the first maximum, as candle's `argmax` picks it (a NaN
/// after the first logit never wins); `None` for no logits.
///
/// ```
/// assert_eq!(rag_model::greedy(&[0.5, 2.0, 2.0, -1.0]), Some(1));
/// assert_eq!(rag_model::greedy(&[]), None);
/// ```
pub fn greedy(logits: &[f32]) -> Option<u32> {
    let &first = logits.first()?;
    let (mut best, mut at) = (first, 0);
    for (i, &x) in logits.iter().enumerate() {
        if best < x {
            best = x;
            at = i;
        }
    }
    Some(at as u32)
}

fn sampling(p: &GenerateParams) -> Sampling {
    if p.temperature <= 0.0 {
        return Sampling::ArgMax;
    }
    let temperature = p.temperature;
    match (p.top_k, p.top_p) {
        (Some(k), Some(p)) if p < 1.0 => Sampling::TopKThenTopP { k, p, temperature },
        (Some(k), _) => Sampling::TopK { k, temperature },
        (None, Some(p)) if p < 1.0 => Sampling::TopP { p, temperature },
        _ => Sampling::All { temperature },
    }
}
