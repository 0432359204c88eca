//! [`Llama`]: a Llama decoder, on whichever forward the weight format asks for. Quantized weights
//! (the default) run on the project's CPU engine ([`crate::engine`]), which works on plain
//! slices end to end; dense and candle-quantized weights run on candle ([`crate::dense`]).
//! Generation goes through [`Llama::feed`], which on the engine converts nothing to or from
//! tensors; [`Llama::forward_hidden`] is the tensor interface both paths share (embedding
//! batches, tests).
use candle_core::{Device, Tensor};

use crate::dense::{DenseCache, DenseFormat, DenseWeights};
use crate::engine;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::hparams::{HiddenLayer, LlamaConfig};

/// How the weight matrices are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// As stored in the GGUF (Q4_1, Q4_K, ...), run by the project's own CPU engine
    /// ([`crate::engine`]): 8-bit activations and SIMD integer dot products. The smallest
    /// in memory and the fastest.
    #[default]
    Quantized,
    /// As stored, multiplied by candle's quantized matmul (the engine before
    /// [`WeightFormat::Quantized`]; kept for comparison in benchmarks).
    CandleQuantized,
    /// Dequantized to f32 at load: ~4 bytes a parameter.
    F32,
    /// Dequantized to f16 at load.
    F16,
}

impl std::str::FromStr for WeightFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "quantized" | "q" => Ok(Self::Quantized),
            "candle" => Ok(Self::CandleQuantized),
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            _ => Err(format!(
                "unknown weight format '{s}' (quantized, candle, f32, f16)"
            )),
        }
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Quantized => "quantized",
            Self::CandleQuantized => "candle",
            Self::F32 => "f32",
            Self::F16 => "f16",
        })
    }
}

/// Which logits [`Llama::feed`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None: a slice of a prompt that is not its end.
    None,
    /// After the last token fed.
    Last,
    /// After each token fed, one row of the vocabulary's size per token.
    All,
}

/// What [`Llama::feed`] returns.
#[derive(Debug, Clone, Default)]
pub struct Fed {
    /// The logits asked for (empty for [`Logits::None`]).
    pub logits: Vec<f32>,
    /// The final (normed) hidden state of the last token fed (empty for [`Logits::None`]).
    pub hidden: Vec<f32>,
}

/// Llama weights. Immutable and shareable; the KV cache lives apart in [`KvCache`] so one
/// model can serve several sequences.
pub struct Llama {
    cfg: LlamaConfig,
    format: WeightFormat,
    imp: Imp,
    max_ctx: usize,
    device: Device,
}

enum Imp {
    Dense(DenseWeights),
    Native(engine::Weights),
}

/// [`engine::TensorSource`] over an open GGUF.
struct GgufSource<'a>(&'a mut GgufFile);

impl engine::TensorSource for GgufSource<'_> {
    fn raw(
        &mut self,
        name: &str,
    ) -> Result<(candle_core::quantized::GgmlDType, Vec<usize>, Vec<u8>)> {
        self.0.raw_tensor(name)
    }
    fn has(&self, name: &str) -> bool {
        self.0.has_tensor(name)
    }
}

impl Llama {
    /// Load the weights of a `llama` GGUF. `max_ctx` caps the rotary tables and KV caches
    /// (it may be lower than the training context to save memory).
    pub fn load(g: &mut GgufFile, format: WeightFormat, max_ctx: usize) -> Result<Self> {
        let cfg = LlamaConfig::from_gguf(g)?;
        let max_ctx = max_ctx.min(cfg.n_ctx_train).max(1);
        let imp = match format {
            WeightFormat::Quantized => Imp::Native(engine::Weights::load(
                &mut GgufSource(g),
                cfg.clone(),
                max_ctx,
            )?),
            WeightFormat::CandleQuantized => Imp::Dense(DenseWeights::load(
                g,
                cfg.clone(),
                DenseFormat::CandleQuantized,
                max_ctx,
            )?),
            WeightFormat::F32 => Imp::Dense(DenseWeights::load(
                g,
                cfg.clone(),
                DenseFormat::F32,
                max_ctx,
            )?),
            WeightFormat::F16 => Imp::Dense(DenseWeights::load(
                g,
                cfg.clone(),
                DenseFormat::F16,
                max_ctx,
            )?),
        };
        Ok(Self {
            cfg,
            format,
            imp,
            max_ctx,
            device: Device::Cpu,
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// How the weights are held.
    pub fn weight_format(&self) -> WeightFormat {
        self.format
    }

    /// The longest sequence this instance can process (rotary tables and caches are this long).
    pub fn max_context(&self) -> usize {
        self.max_ctx
    }

    /// A KV cache for `batch` sequences of up to `max_len` tokens, allocated once.
    pub fn new_cache(&self, batch: usize, max_len: usize) -> Result<KvCache> {
        let max_len = max_len.min(self.max_ctx);
        let imp = match &self.imp {
            Imp::Native(_) if batch != 1 => {
                return Err(ModelError::InvalidInput(format!(
                    "a KV cache holds one sequence with quantized weights (asked for {batch})"
                )))
            }
            Imp::Native(w) => CacheImp::Native(w.new_cache(max_len)),
            Imp::Dense(w) => CacheImp::Dense(w.new_cache(batch, max_len)?),
        };
        Ok(KvCache { imp })
    }

    /// Run the decoder over `tokens` (shape `(batch, seq)`, u32) and return hidden states of shape
    /// `(batch, seq, n_embd)`.
    ///
    /// - `cache`: when given, positions start at `cache.len()`, the new keys and values are written
    ///   into it and attention sees everything cached so far; when `None`, positions start at 0
    ///   and attention sees only this call's tokens.
    /// - `lengths`: the real length of each sequence in a right-padded batch. Keys at padded
    ///   positions are masked out, so a sequence's hidden states do not depend on what it is
    ///   batched with. `None` means no padding.
    pub fn forward_hidden(
        &self,
        tokens: &Tensor,
        cache: Option<&mut KvCache>,
        lengths: Option<&[usize]>,
        layer: HiddenLayer,
    ) -> Result<Tensor> {
        match &self.imp {
            Imp::Native(w) => {
                let cache = cache.map(|c| c.native()).transpose()?;
                self.forward_native(w, tokens, cache, lengths, layer)
            }
            Imp::Dense(w) => {
                let cache = cache.map(|c| c.dense()).transpose()?;
                w.forward_hidden(tokens, cache, lengths, layer)
            }
        }
    }

    /// Feed `tokens` after what `cache` holds and return what [`Logits`] asks for: nothing
    /// (a slice of a prompt that is not its end), the next-token logits after the last token
    /// with its final hidden state, or the logits after every token. The engine path takes
    /// and returns plain slices: no tensor is made per token.
    pub fn feed(&self, tokens: &[u32], cache: &mut KvCache, want: Logits) -> Result<Fed> {
        if tokens.is_empty() {
            return Err(ModelError::InvalidInput("no tokens to feed".into()));
        }
        let d = self.cfg.n_embd;
        let hidden = match &self.imp {
            Imp::Native(w) => w.forward(&[tokens], Some(cache.native()?), HiddenLayer::Final)?,
            Imp::Dense(w) => {
                let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
                let h = w.forward_hidden(&input, Some(cache.dense()?), None, HiddenLayer::Final)?;
                h.flatten_all()?.to_vec1::<f32>()?
            }
        };
        let rows = match want {
            Logits::None => return Ok(Fed::default()),
            Logits::Last => &hidden[hidden.len() - d..],
            Logits::All => &hidden[..],
        };
        let logits = match &self.imp {
            Imp::Native(w) => w.logits(rows),
            Imp::Dense(w) => {
                let t = Tensor::from_slice(rows, (rows.len() / d, d), &self.device)?;
                w.logits(&t)?.flatten_all()?.to_vec1::<f32>()?
            }
        };
        Ok(Fed {
            logits,
            hidden: hidden[hidden.len() - d..].to_vec(),
        })
    }

    /// [`Llama::forward_hidden`] on the CPU engine: the real tokens of each sequence are packed
    /// (padding costs nothing) and the result is spread back to `(batch, seq, n_embd)`, zeros at
    /// padded positions.
    fn forward_native(
        &self,
        w: &engine::Weights,
        tokens: &Tensor,
        cache: Option<&mut engine::Cache>,
        lengths: Option<&[usize]>,
        layer: HiddenLayer,
    ) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let ids = tokens.to_vec2::<u32>()?;
        let lens: Vec<usize> = (0..b).map(|i| lengths.map_or(t, |l| l[i].min(t))).collect();
        let seqs: Vec<&[u32]> = ids.iter().zip(&lens).map(|(s, &n)| &s[..n]).collect();
        let packed = w.forward(&seqs, cache, layer)?;
        let d = self.cfg.n_embd;
        if lens.iter().all(|&n| n == t) {
            return Ok(Tensor::from_vec(packed, (b, t, d), &self.device)?);
        }
        let mut out = vec![0f32; b * t * d];
        let mut at = 0;
        for (i, &n) in lens.iter().enumerate() {
            out[i * t * d..(i * t + n) * d].copy_from_slice(&packed[at * d..(at + n) * d]);
            at += n;
        }
        Ok(Tensor::from_vec(out, (b, t, d), &self.device)?)
    }

    /// Logits over the vocabulary for hidden states `(.., n_embd)` (final layer).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        match &self.imp {
            Imp::Dense(w) => w.logits(hidden),
            Imp::Native(w) => {
                let mut dims = hidden.dims().to_vec();
                let h = hidden.flatten_all()?.to_vec1::<f32>()?;
                let out = w.logits(&h);
                if let Some(last) = dims.last_mut() {
                    *last = out.len() / (h.len() / self.cfg.n_embd).max(1);
                }
                Ok(Tensor::from_vec(out, dims, &self.device)?)
            }
        }
    }
}

/// Per-layer keys and values, allocated once for the cache's capacity; each forward writes its
/// new positions in place.
pub struct KvCache {
    imp: CacheImp,
}

enum CacheImp {
    Dense(DenseCache),
    Native(engine::Cache),
}

impl KvCache {
    /// Tokens cached so far.
    pub fn len(&self) -> usize {
        match &self.imp {
            CacheImp::Dense(c) => c.len(),
            CacheImp::Native(c) => c.len(),
        }
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Capacity in tokens.
    pub fn capacity(&self) -> usize {
        match &self.imp {
            CacheImp::Dense(c) => c.capacity(),
            CacheImp::Native(c) => c.capacity(),
        }
    }

    /// Forget everything cached (the memory is kept).
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Forget the positions from `len` on (the memory is kept): what is fed next is written
    /// there, as if the rest had never been.
    pub fn truncate(&mut self, len: usize) {
        match &mut self.imp {
            CacheImp::Dense(c) => c.truncate(len),
            CacheImp::Native(c) => c.truncate(len),
        }
    }

    fn native(&mut self) -> Result<&mut engine::Cache> {
        match &mut self.imp {
            CacheImp::Native(c) => Ok(c),
            CacheImp::Dense(_) => Err(mismatched_cache()),
        }
    }

    fn dense(&mut self) -> Result<&mut DenseCache> {
        match &mut self.imp {
            CacheImp::Dense(c) => Ok(c),
            CacheImp::Native(_) => Err(mismatched_cache()),
        }
    }
}

fn mismatched_cache() -> ModelError {
    ModelError::InvalidInput("this KV cache was made by a model with another weight format".into())
}
