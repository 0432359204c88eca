//! Text generation: chunked prefill into a preallocated KV cache, then one token at a time with
//! greedy or seeded sampling, streaming text as it completes.
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::Serialize;

use crate::error::{ModelError, Result};
use crate::llama::KvCache;
use crate::model::Model;

/// Sampling and stopping settings.
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
        }
    }
}

/// Why generation stopped.
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
}

/// A finished generation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// The generated text (stop tokens excluded).
    pub text: String,
    /// The generated token ids (stop token excluded).
    pub tokens: Vec<u32>,
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
/// (~25 KiB a token on SmolLM2; at 128, a 400-token prompt peaks 7 MiB lower than in one
/// slice). On the CPU engine the result does not depend on the slicing: its attention and
/// matrix kernels give each token the same bits whatever the batch.
const PREFILL_CHUNK: usize = 128;

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
        let budget = params.max_tokens.min(ctx - prompt.len());
        let mut cache = self.llama.new_cache(1, prompt.len() + budget)?;
        let mut sampler = Sampler::new(params);
        let stops = self.stop_tokens();

        let t0 = Instant::now();
        let mut logits = self.prefill(prompt, &mut cache)?;
        let prefill_secs = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let mut history: Vec<u32> = if params.penalize_prompt {
            prompt.to_vec()
        } else {
            Vec::new()
        };
        let mut out = Vec::new();
        let mut decoder = self.tokenizer.stream_decoder();
        let mut text = String::new();
        let stop = loop {
            if params.repeat_penalty != 1.0 && !history.is_empty() {
                let start = history.len().saturating_sub(params.repeat_last_n);
                apply_repeat_penalty(&mut logits, params.repeat_penalty, &history[start..]);
            }
            let next = sampler.sample(logits)?;
            if stops.contains(&next) {
                break StopReason::EndOfTurn;
            }
            if Some(next) == self.tokenizer.eos_id() {
                break StopReason::EndOfSequence;
            }
            out.push(next);
            history.push(next);
            let piece = decoder.push(next);
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
            logits = self.step(&[next], &mut cache)?;
        };
        let tail = decoder.finish();
        if !tail.is_empty() {
            on_text(&tail);
            text.push_str(&tail);
        }
        Ok(Generation {
            text,
            tokens: out,
            prompt_tokens: prompt.len(),
            stop,
            prefill_secs,
            decode_secs: t1.elapsed().as_secs_f64(),
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
        if prompt.is_empty() {
            return Err(ModelError::InvalidInput("the prompt is empty".into()));
        }
        let last = (prompt.len() - 1) / PREFILL_CHUNK * PREFILL_CHUNK;
        for chunk in prompt[..last].chunks(PREFILL_CHUNK) {
            self.llama.next_logits(chunk, cache, false)?;
        }
        self.step(&prompt[last..], cache)
    }

    /// Feed `tokens` after what the cache holds; return the next-token logits after the last.
    pub fn step(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        self.llama.next_logits(tokens, cache, true)
    }

    /// The template's end-of-turn token ids (`<|im_end|>`; for Llama 2 that is EOS itself).
    fn stop_tokens(&self) -> Vec<u32> {
        self.tokenizer
            .token_id(self.template.end_of_turn())
            .into_iter()
            .collect()
    }
}

/// Divide positive logits of the tokens in `context` by `penalty` and multiply negative ones
/// (each token once), as llama.cpp and candle do.
fn apply_repeat_penalty(logits: &mut [f32], penalty: f32, context: &[u32]) {
    let mut seen = std::collections::HashSet::new();
    for &t in context {
        if !seen.insert(t) {
            continue;
        }
        if let Some(l) = logits.get_mut(t as usize) {
            if *l >= 0.0 {
                *l /= penalty
            } else {
                *l *= penalty
            }
        }
    }
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

    fn sample(&mut self, logits: Vec<f32>) -> Result<u32> {
        match self {
            Self::Greedy => argmax(&logits),
            Self::Sample(p) => {
                let n = logits.len();
                Ok(p.sample(&Tensor::from_vec(logits, n, &Device::Cpu)?)?)
            }
        }
    }
}

/// The index of the first maximum (NaN never wins), as candle's `argmax` picks it.
fn argmax(logits: &[f32]) -> Result<u32> {
    let Some(&first) = logits.first() else {
        return Err(ModelError::InvalidInput("no logits to pick from".into()));
    };
    let (mut best, mut at) = (first, 0);
    for (i, &x) in logits.iter().enumerate() {
        if best < x {
            best = x;
            at = i;
        }
    }
    Ok(at as u32)
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
