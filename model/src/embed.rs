//! Sentence embeddings from a Llama model's hidden states: tokenize, batch by length, run the
//! decoder without its LM head, pool (mean by default), L2-normalise.
use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::hparams::HiddenLayer;
use crate::llama::WeightFormat;
use crate::model::Model;

/// How token states become one vector.
///
/// ```
/// assert_eq!("last".parse(), Ok(rag_model::Pooling::LastToken));
/// assert_eq!(rag_model::Pooling::default(), rag_model::Pooling::Mean);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// Mean over the sequence's tokens. The default: it separated related from unrelated
    /// sentence pairs better than last-token pooling in the design measurements.
    #[default]
    Mean,
    /// The last token's state (the only one that has seen the whole sequence).
    LastToken,
    /// Echo embeddings (Springer et al., 2024): the model reads "Rewrite the sentence: TEXT,
    /// rewritten sentence: TEXT" and the states of the second copy are averaged. A decoder's
    /// token sees only what precedes it; in the second copy every token has seen the whole
    /// text once.
    Echo,
}

impl Pooling {
    /// The name in ids and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::LastToken => "last",
            Self::Echo => "echo",
        }
    }
}

impl std::str::FromStr for Pooling {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "mean" => Ok(Self::Mean),
            "last" | "last-token" => Ok(Self::LastToken),
            "echo" => Ok(Self::Echo),
            _ => Err(format!("unknown pooling '{s}' (mean, last, echo)")),
        }
    }
}

/// The pooling and layer written at the end of an embedder id (`...:mean:final`,
/// `...:last:layer15`, then `:q` for the engine's vectors), as [`Embedder::id`] writes them;
/// `None` if `id` does not end so.
///
/// ```
/// use rag_model::{variant_of_id, HiddenLayer, Pooling};
/// let engine = "llama:SmolLM2-135M-Instruct.Q4_1.gguf:98362432:mean:final:q";
/// assert_eq!(variant_of_id(engine), Some((Pooling::Mean, HiddenLayer::Final)));
/// assert_eq!(variant_of_id("llama:m.gguf:1:last:layer15"), Some((Pooling::LastToken, HiddenLayer::After(15))));
/// ```
pub fn variant_of_id(id: &str) -> Option<(Pooling, HiddenLayer)> {
    let id = id.strip_suffix(ENGINE_SUFFIX).unwrap_or(id);
    let mut parts = id.rsplitn(3, ':');
    let layer = match parts.next()? {
        "final" => HiddenLayer::Final,
        l => HiddenLayer::After(l.strip_prefix("layer")?.parse().ok()?),
    };
    let pooling = parts.next()?.parse().ok()?;
    Some((pooling, layer))
}

/// What ends the id of a Llama embedder that runs on rag's engine (the GGUF's own quantized
/// weights); ids without it are of dense f32 weights on candle, as every Llama index made
/// before the engine embedded.
const ENGINE_SUFFIX: &str = ":q";

/// How a Llama embedder's weights are held, from its id: [`WeightFormat::Quantized`] (rag's
/// engine) for ids that end in `:q`, else [`WeightFormat::F32`].
///
/// ```
/// use rag_model::{llama_format_of_id, WeightFormat};
/// assert_eq!(llama_format_of_id("llama:m.gguf:1:mean:final:q"), WeightFormat::Quantized);
/// assert_eq!(llama_format_of_id("llama:m.gguf:1:mean:final"), WeightFormat::F32);
/// ```
pub fn llama_format_of_id(id: &str) -> WeightFormat {
    if id.ends_with(ENGINE_SUFFIX) {
        WeightFormat::Quantized
    } else {
        WeightFormat::F32
    }
}

/// Embedding settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedOptions {
    pub pooling: Pooling,
    pub layer: HiddenLayer,
    /// Texts are truncated to this many tokens. Default 512: chunks are made smaller than this.
    pub max_tokens: usize,
    /// Padded tokens per forward batch. Default 2048: large enough to amortise the matmuls,
    /// small enough that the attention scratch stays in the tens of megabytes.
    pub batch_tokens: usize,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            pooling: Pooling::Mean,
            layer: HiddenLayer::Final,
            max_tokens: 512,
            batch_tokens: 2048,
        }
    }
}

/// Turns texts into unit vectors with a loaded model: on rag's engine
/// ([`WeightFormat::Quantized`], the GGUF's own weights, unpadded batches) or on candle's dense
/// f32 weights ([`WeightFormat::F32`], as indexes made before the engine were).
pub struct Embedder {
    model: Arc<Model>,
    opts: EmbedOptions,
}

impl Embedder {
    /// An embedder over `model`.
    pub fn new(model: Arc<Model>, opts: EmbedOptions) -> Self {
        Self { model, opts }
    }

    /// Identifies what made the vectors, so an index refuses vectors from anything else:
    /// model file name and size, pooling and layer, and `:q` when rag's engine runs the
    /// GGUF's quantized weights.
    pub fn id(&self) -> String {
        let m = &self.model;
        let name = m
            .path()
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let size = m.info().file_size;
        let pooling = self.opts.pooling.name();
        let layer = match self.opts.layer {
            HiddenLayer::Final => "final".to_string(),
            HiddenLayer::After(n) => format!("layer{n}"),
        };
        let engine = if self.weight_format() == WeightFormat::Quantized {
            ENGINE_SUFFIX
        } else {
            ""
        };
        format!("llama:{name}:{size}:{pooling}:{layer}{engine}")
    }

    /// How the model's weights are held.
    pub fn weight_format(&self) -> WeightFormat {
        self.model.llama.weight_format()
    }

    /// The vector dimension.
    pub fn dim(&self) -> usize {
        self.model.llama.config().n_embd
    }

    /// Tokens of `text` as the embedder sees it (before truncation).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.model.tokenizer.encode(text, true, false).len()
    }

    /// Embed texts; vectors come back in input order. Document text is never parsed for
    /// special tokens.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let tok = &self.model.tokenizer;
        // Each sequence and where its pooled states start.
        let (seqs, starts): (Vec<Vec<u32>>, Vec<usize>) = texts
            .iter()
            .map(|t| {
                if self.opts.pooling == Pooling::Echo {
                    let mut ids = tok.encode(ECHO_PREFIX, true, false);
                    let mid = tok.encode(ECHO_MIDDLE, false, false);
                    let mut text = tok.encode(t, false, false);
                    let room = self.opts.max_tokens.saturating_sub(ids.len() + mid.len()) / 2;
                    text.truncate(room.max(1));
                    if text.is_empty() {
                        text.extend(tok.eos_id());
                    }
                    ids.extend_from_slice(&text);
                    ids.extend_from_slice(&mid);
                    let start = ids.len();
                    ids.extend_from_slice(&text);
                    return (ids, start);
                }
                let mut ids = tok.encode(t, true, false);
                ids.truncate(self.opts.max_tokens);
                if ids.is_empty() {
                    // An empty text still gets a vector: that of the BOS/EOS token alone.
                    ids.extend(tok.bos_id().or(tok.eos_id()));
                }
                (ids, 0)
            })
            .unzip();
        by_length(&seqs, self.opts.batch_tokens, |idx, batch| {
            let from: Vec<usize> = idx.iter().map(|&i| starts[i]).collect();
            self.embed_from(batch, &from)
        })
    }

    /// Embed token sequences in one batch, pooling the whole of each.
    pub fn embed_ids(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        self.embed_from(seqs, &vec![0; seqs.len()])
    }

    /// Embed token sequences in one batch (padded on candle, packed on the engine), mean
    /// pooling from `from[i]` on (echo pooling: the second copy).
    fn embed_from(&self, seqs: &[&[u32]], from: &[usize]) -> Result<Vec<Vec<f32>>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let max = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let lengths: Vec<usize> = seqs.iter().map(|s| s.len().max(1)).collect();
        let pad = self.model.tokenizer.eos_id().unwrap_or(0);
        let mut flat = Vec::with_capacity(seqs.len() * max);
        for s in seqs {
            flat.extend_from_slice(s);
            flat.extend(std::iter::repeat_n(pad, max - s.len()));
        }
        let input = Tensor::from_vec(flat, (seqs.len(), max), &Device::Cpu)?;
        let padded = seqs.iter().any(|s| s.len() != max);
        let hidden = self.model.llama.forward_hidden(
            &input,
            None,
            padded.then_some(&lengths[..]),
            self.opts.layer,
        )?;
        let hidden = hidden.to_vec3::<f32>()?;
        Ok(hidden
            .iter()
            .zip(lengths.iter().zip(from))
            .map(|(states, (&n, &from))| {
                let mut v = match self.opts.pooling {
                    Pooling::Mean | Pooling::Echo => {
                        let mut acc = vec![0f32; states[0].len()];
                        for row in &states[from.min(n - 1)..n] {
                            for (a, x) in acc.iter_mut().zip(row) {
                                *a += x;
                            }
                        }
                        acc
                    }
                    Pooling::LastToken => states[n - 1].clone(),
                };
                normalize(&mut v);
                v
            })
            .collect())
    }
}

/// The text around the first copy of an echo embedding's input, and between the copies.
const ECHO_PREFIX: &str = "Rewrite the sentence: ";
const ECHO_MIDDLE: &str = ", rewritten sentence: ";

/// Embed token sequences in batches of similar length, each at most `batch_tokens` padded
/// tokens (or one sequence), `forward` embedding one batch (given the sequences' indices in
/// `seqs` too); vectors come back in input order.
pub(crate) fn by_length(
    seqs: &[Vec<u32>],
    batch_tokens: usize,
    mut forward: impl FnMut(&[usize], &[&[u32]]) -> Result<Vec<Vec<f32>>>,
) -> Result<Vec<Vec<f32>>> {
    // Sort by length so each batch pads little; restore order at the end.
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| seqs[i].len());
    let mut out = vec![Vec::new(); seqs.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && seqs[order[end]].len() * (end + 1 - start) <= batch_tokens {
            end += 1;
        }
        let batch: Vec<&[u32]> = order[start..end].iter().map(|&i| &seqs[i][..]).collect();
        for (k, v) in forward(&order[start..end], &batch)?.into_iter().enumerate() {
            out[order[start + k]] = v;
        }
        start = end;
    }
    Ok(out)
}

/// Scale `v` to unit length (left as is when it is all zeros).
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}
