//! Sentence embeddings from a Llama model's hidden states: tokenize, batch by length, run the
//! decoder without its LM head, pool (mean by default), L2-normalise, and standardize each
//! dimension by statistics the model gives on fixed calibration texts ([`EmbedOptions::standardize`]).
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
/// `...:last:layer15`, then `:z1` for standardized vectors and `:q` for the engine's), as
/// [`Embedder::id`] writes them; `None` if `id` does not end so.
///
/// ```
/// use rag_model::{variant_of_id, HiddenLayer, Pooling};
/// let engine = "llama:SmolLM2-135M-Instruct.Q4_1.gguf:98362432:mean:final:q";
/// assert_eq!(variant_of_id(engine), Some((Pooling::Mean, HiddenLayer::Final)));
/// let standardized = "llama:SmolLM2-135M-Instruct.Q4_1.gguf:98362432:echo:final:z1:q";
/// assert_eq!(variant_of_id(standardized), Some((Pooling::Echo, HiddenLayer::Final)));
/// assert_eq!(variant_of_id("llama:m.gguf:1:last:layer15"), Some((Pooling::LastToken, HiddenLayer::After(15))));
/// ```
pub fn variant_of_id(id: &str) -> Option<(Pooling, HiddenLayer)> {
    let id = id.strip_suffix(ENGINE_SUFFIX).unwrap_or(id);
    let id = id.strip_suffix(STANDARD_SUFFIX).unwrap_or(id);
    let mut parts = id.rsplitn(3, ':');
    let layer = match parts.next()? {
        "final" => HiddenLayer::Final,
        l => HiddenLayer::After(l.strip_prefix("layer")?.parse().ok()?),
    };
    let pooling = parts.next()?.parse().ok()?;
    Some((pooling, layer))
}

/// Whether an embedder id is of standardized vectors ([`EmbedOptions::standardize`]); ids
/// made before standardization, and those of `--no-standardize` indexes, are not.
///
/// ```
/// use rag_model::standardized_of_id;
/// assert!(standardized_of_id("llama:m.gguf:1:mean:final:z1:q"));
/// assert!(!standardized_of_id("llama:m.gguf:1:mean:final:q"));
/// ```
pub fn standardized_of_id(id: &str) -> bool {
    id.strip_suffix(ENGINE_SUFFIX)
        .unwrap_or(id)
        .ends_with(STANDARD_SUFFIX)
}

/// What an id gains when its vectors are standardized: the version of the calibration texts
/// and of how their statistics are taken. A change to either must change it, so that an index
/// refuses query vectors standardized another way.
const STANDARD_SUFFIX: &str = ":z1";

/// The calibration texts: forty short paragraphs written for this, on unrelated subjects and
/// in unrelated registers (a recipe, a contract clause, a match report, ...), one per blank-line
/// separated block. What their vectors share is the model's, not a corpus's.
const CALIBRATION: &str = include_str!("embed_calibration.txt");

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
    /// Standardize each dimension of the pooled unit vector (subtract its mean, divide by its
    /// standard deviation, both over the vectors of the calibration texts) and normalise again.
    /// Default `true`. An untuned decoder's states share a few dimensions of large magnitude
    /// that dominate every cosine (one of SmolLM2's 576 holds 0.58 of its mean unit vector,
    /// and unrelated sentences have cosines above 0.5); evened out, the SciFact subset's dense
    /// nDCG@10 goes from 0.246 to 0.439 (docs/EVAL.md).
    pub standardize: bool,
    /// Where the calibration statistics are kept between runs, one small JSON file per model
    /// and variant. Default `None`: computed again by each embedder that needs them (the
    /// calibration texts through the model: 2 s for SmolLM2-135M on 2 cores).
    pub stats_dir: Option<PathBuf>,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        Self {
            pooling: Pooling::Mean,
            layer: HiddenLayer::Final,
            max_tokens: 512,
            batch_tokens: 2048,
            standardize: true,
            stats_dir: None,
        }
    }
}

/// Turns texts into unit vectors with a loaded model: on rag's engine
/// ([`WeightFormat::Quantized`], the GGUF's own weights, unpadded batches) or on candle's dense
/// f32 weights ([`WeightFormat::F32`], as indexes made before the engine were).
pub struct Embedder {
    model: Arc<Model>,
    opts: EmbedOptions,
    /// The calibration statistics, once a standardizing embedder has needed them.
    stats: OnceLock<Standardizer>,
}

impl Embedder {
    /// An embedder over `model`. Nothing runs yet: a standardizing embedder computes (or
    /// reads) its calibration statistics on its first [`Embedder::embed`].
    pub fn new(model: Arc<Model>, opts: EmbedOptions) -> Self {
        Self {
            model,
            opts,
            stats: OnceLock::new(),
        }
    }

    /// Identifies what made the vectors, so an index refuses vectors from anything else:
    /// model file name and size, pooling and layer, `:z1` when standardized, and `:q` when
    /// rag's engine runs the GGUF's quantized weights.
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
        let standard = if self.opts.standardize {
            STANDARD_SUFFIX
        } else {
            ""
        };
        let engine = if self.weight_format() == WeightFormat::Quantized {
            ENGINE_SUFFIX
        } else {
            ""
        };
        format!("llama:{name}:{size}:{pooling}:{layer}{standard}{engine}")
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
        let vectors = self.embed_pooled(texts)?;
        self.standardized(vectors)
    }

    /// The vectors after [`EmbedOptions::standardize`], when it is set.
    fn standardized(&self, mut vectors: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
        if self.opts.standardize && !vectors.is_empty() {
            let stats = match self.stats.get() {
                Some(s) => s,
                None => {
                    let s = self.calibrate()?;
                    self.stats.get_or_init(|| s)
                }
            };
            vectors.iter_mut().for_each(|v| stats.apply(v));
        }
        Ok(vectors)
    }

    /// The calibration statistics: read from [`EmbedOptions::stats_dir`] when a file there
    /// was made by this model and variant from these texts, else computed (and written there,
    /// if possible: a cache that cannot be written only costs the next run the time again).
    fn calibrate(&self) -> Result<Standardizer> {
        let id = self.id();
        let calibration = hex16(&Sha256::digest(CALIBRATION.as_bytes()));
        let file = self
            .opts
            .stats_dir
            .as_deref()
            .map(|d| d.join(stats_file_name(&id)));
        if let Some(saved) = file.as_deref().and_then(read_stats) {
            if saved.id == id
                && saved.calibration == calibration
                && saved.mean.len() == self.dim()
                && saved.std.len() == self.dim()
            {
                return Ok(Standardizer::new(saved.mean, &saved.std));
            }
        }
        let texts: Vec<&str> = calibration_texts().collect();
        let vectors = self.embed_pooled(&texts)?;
        let (mean, std) = mean_and_std(&vectors, self.dim());
        if let Some(file) = file {
            let saved = SavedStats {
                id,
                calibration,
                mean: mean.clone(),
                std: std.clone(),
            };
            // Best effort, as said above.
            let _ = write_stats(&file, &saved);
        }
        Ok(Standardizer::new(mean, &std))
    }

    /// Pooled, unit-length vectors before standardization.
    fn embed_pooled(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
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

    /// Embed token sequences in one batch, pooling the whole of each (and standardizing, as
    /// [`Embedder::embed`]).
    pub fn embed_ids(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let vectors = self.embed_from(seqs, &vec![0; seqs.len()])?;
        self.standardized(vectors)
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

/// Per-dimension standardization of unit vectors, from calibration statistics.
struct Standardizer {
    mean: Vec<f32>,
    /// 1 / standard deviation; 0 for a dimension that never varied (it carries nothing).
    inv_std: Vec<f32>,
}

impl Standardizer {
    fn new(mean: Vec<f32>, std: &[f32]) -> Self {
        let inv_std = std
            .iter()
            .map(|&s| if s > 1e-6 { 1.0 / s } else { 0.0 })
            .collect();
        Self { mean, inv_std }
    }

    /// `v` with each dimension standardized, then scaled to unit length.
    fn apply(&self, v: &mut [f32]) {
        for ((x, m), s) in v.iter_mut().zip(&self.mean).zip(&self.inv_std) {
            *x = (*x - m) * s;
        }
        normalize(v);
    }
}

/// The calibration texts, one per blank-line separated block.
fn calibration_texts() -> impl Iterator<Item = &'static str> {
    CALIBRATION
        .split("\n\n")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Each dimension's mean and (population) standard deviation over `vectors`.
fn mean_and_std(vectors: &[Vec<f32>], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let n = vectors.len().max(1) as f64;
    let mut mean = vec![0f64; dim];
    for v in vectors {
        for (m, &x) in mean.iter_mut().zip(v) {
            *m += f64::from(x) / n;
        }
    }
    let mut var = vec![0f64; dim];
    for v in vectors {
        for ((s, &x), m) in var.iter_mut().zip(v).zip(&mean) {
            *s += (f64::from(x) - m).powi(2) / n;
        }
    }
    (
        mean.iter().map(|&m| m as f32).collect(),
        var.iter().map(|&s| s.sqrt() as f32).collect(),
    )
}

/// The calibration statistics as kept in [`EmbedOptions::stats_dir`].
#[derive(Serialize, Deserialize)]
struct SavedStats {
    /// The embedder id they are of.
    id: String,
    /// The first 16 hex digits of the calibration texts' SHA-256.
    calibration: String,
    mean: Vec<f32>,
    std: Vec<f32>,
}

fn read_stats(path: &Path) -> Option<SavedStats> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Write through a temporary file and a rename, so a reader never sees half a file.
fn write_stats(path: &Path, stats: &SavedStats) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec(stats)?)?;
    std::fs::rename(&tmp, path)
}

/// A file name for an embedder id (ids hold `:` and the model's file name).
fn stats_file_name(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.json")
}

fn hex16(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
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
