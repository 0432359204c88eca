//! A Llama decoder forward owned by the project.
//!
//! candle's `quantized_llama` returns only last-position logits and grows its KV cache by
//! concatenation. This forward returns hidden states for every position (embeddings) or logits
//! (generation), writes into a preallocated KV cache, and runs a batch of sequences of different
//! lengths in one pass with a key-padding mask. Grouped-query attention is computed by folding the
//! query heads that share a KV head into the row dimension, so K and V are never copied per head.
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::error::Result;
use crate::model::cpu::engine;
use crate::model::gguf::GgufFile;

/// Hyperparameters read from `llama.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub n_ctx_train: usize,
    pub rope_freq_base: f32,
    pub rms_eps: f64,
    pub vocab_size: usize,
}

impl LlamaConfig {
    /// Read the hyperparameters of a `llama` GGUF.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = "llama";
        let n_embd = g.arch_u32(arch, "embedding_length")?;
        let n_head = g.arch_u32(arch, "attention.head_count")?;
        let n_kv_head = g
            .arch_u32(arch, "attention.head_count_kv")
            .unwrap_or(n_head);
        if n_head == 0 || n_kv_head == 0 || n_embd % n_head != 0 || n_head % n_kv_head != 0 {
            return Err(g.bad(format!(
                "inconsistent attention sizes: embedding {n_embd}, heads {n_head}, kv heads {n_kv_head}"
            )));
        }
        let head_dim = n_embd / n_head;
        if let Ok(rope_dim) = g.arch_u32(arch, "rope.dimension_count") {
            if rope_dim != head_dim {
                return Err(g.bad(format!(
                    "partial rotary embeddings (rope dimension {rope_dim}, head dimension {head_dim}) are not supported"
                )));
            }
        }
        let vocab_size = match g.arch_u32(arch, "vocab_size") {
            Ok(v) => v,
            Err(_) => g
                .content
                .tensor_infos
                .get("token_embd.weight")
                .map(|i| i.shape.dims()[0])
                .ok_or_else(|| g.bad("tensor token_embd.weight is missing".into()))?,
        };
        Ok(Self {
            n_layer: g.arch_u32(arch, "block_count")?,
            n_embd,
            n_ff: g.arch_u32(arch, "feed_forward_length")?,
            n_head,
            n_kv_head,
            head_dim,
            n_ctx_train: g.arch_u32(arch, "context_length")?,
            rope_freq_base: g.arch_f32(arch, "rope.freq_base").unwrap_or(10_000.0),
            rms_eps: g
                .arch_f32(arch, "attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-5) as f64,
            vocab_size,
        })
    }
}

/// How the weight matrices are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// As stored in the GGUF (Q4_1, Q4_K, ...), run by the project's own CPU engine
    /// ([`crate::model::cpu`]): 8-bit activations and SIMD integer dot products. The smallest
    /// in memory and the fastest.
    #[default]
    Quantized,
    /// As stored, multiplied by candle's quantized matmul (the engine before
    /// [`WeightFormat::Quantized`]; kept for comparison in `rag bench model`).
    CandleQuantized,
    /// Dequantized to f32 at load: ~4 bytes a parameter, fastest for prefill and embeddings.
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

fn matmul_weight(q: QTensor, format: WeightFormat, device: &Device) -> Result<QMatMul> {
    // 1-D and float tensors are always dense; QMatMul::from_qtensor dequantizes those itself.
    Ok(match format {
        WeightFormat::Quantized | WeightFormat::CandleQuantized => QMatMul::from_qtensor(q)?,
        WeightFormat::F32 => QMatMul::Tensor(q.dequantize(device)?),
        WeightFormat::F16 => QMatMul::TensorF16(q.dequantize_f16(device)?),
    })
}

struct Layer {
    attn_norm: Tensor,
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    ffn_norm: Tensor,
    w_gate: QMatMul,
    w_up: QMatMul,
    w_down: QMatMul,
}

/// Which hidden states a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HiddenLayer {
    /// After the last block and the final RMSNorm (what the LM head sees).
    #[default]
    Final,
    /// The residual stream after block `n` (0-based), stopping the forward there.
    After(usize),
}

/// Llama weights and rotary tables. Immutable and shareable; the KV cache lives apart in
/// [`KvCache`] so one model can serve several sequences.
pub struct Llama {
    cfg: LlamaConfig,
    format: WeightFormat,
    imp: Imp,
    max_ctx: usize,
    device: Device,
}

enum Imp {
    /// candle tensors (dense formats, and candle's quantized matmul).
    Candle(CandleWeights),
    /// The project's CPU engine over the GGUF blocks.
    Native(engine::Weights),
}

struct CandleWeights {
    tok_embd: QMatMul,
    layers: Vec<Layer>,
    norm: Tensor,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
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
        let device = Device::Cpu;
        let cfg = LlamaConfig::from_gguf(g)?;
        let max_ctx = max_ctx.min(cfg.n_ctx_train).max(1);
        if format == WeightFormat::Quantized {
            let w = engine::Weights::load(&mut GgufSource(g), cfg.clone(), max_ctx)?;
            return Ok(Self {
                cfg,
                format,
                imp: Imp::Native(w),
                max_ctx,
                device,
            });
        }
        let vec_f32 = |g: &mut GgufFile, name: &str| -> Result<Tensor> {
            Ok(g.tensor(name, &device)?.dequantize(&device)?)
        };
        let tok_q = g.tensor("token_embd.weight", &device)?;
        // The token table is read row by row, so it can stay quantized whatever the format,
        // except when it is also the LM head and the format asks for dense weights.
        let tied = !g.has_tensor("output.weight");
        // Tied embeddings (SmolLM2): read the table a second time for the LM head.
        let head = if tied {
            "token_embd.weight"
        } else {
            "output.weight"
        };
        let output = matmul_weight(g.tensor(head, &device)?, format, &device)?;
        let tok_embd = QMatMul::from_qtensor(tok_q)?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("blk.{i}");
            let mut w = |n: &str| -> Result<QMatMul> {
                let q = g.tensor(&format!("{p}.{n}.weight"), &device)?;
                matmul_weight(q, format, &device)
            };
            let wq = w("attn_q")?;
            let wk = w("attn_k")?;
            let wv = w("attn_v")?;
            let wo = w("attn_output")?;
            let w_gate = w("ffn_gate")?;
            let w_up = w("ffn_up")?;
            let w_down = w("ffn_down")?;
            layers.push(Layer {
                attn_norm: vec_f32(g, &format!("{p}.attn_norm.weight"))?,
                ffn_norm: vec_f32(g, &format!("{p}.ffn_norm.weight"))?,
                wq,
                wk,
                wv,
                wo,
                w_gate,
                w_up,
                w_down,
            });
        }
        let norm = vec_f32(g, "output_norm.weight")?;
        let (cos, sin) = rope_tables(cfg.head_dim, cfg.rope_freq_base, max_ctx, &device)?;
        Ok(Self {
            cfg,
            format,
            imp: Imp::Candle(CandleWeights {
                tok_embd,
                layers,
                norm,
                output,
                cos,
                sin,
            }),
            max_ctx,
            device,
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
        if let Imp::Native(w) = &self.imp {
            if batch != 1 {
                return Err(crate::error::Error::InvalidOption(format!(
                    "a KV cache holds one sequence with quantized weights (asked for {batch})"
                )));
            }
            return Ok(KvCache {
                imp: CacheImp::Native(w.new_cache(max_len)),
            });
        }
        let shape = (batch, self.cfg.n_kv_head, max_len, self.cfg.head_dim);
        let mut k = Vec::with_capacity(self.cfg.n_layer);
        let mut v = Vec::with_capacity(self.cfg.n_layer);
        for _ in 0..self.cfg.n_layer {
            k.push(Tensor::zeros(shape, DType::F32, &self.device)?);
            v.push(Tensor::zeros(shape, DType::F32, &self.device)?);
        }
        Ok(KvCache {
            imp: CacheImp::Candle {
                k,
                v,
                len: 0,
                max_len,
            },
        })
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
        let w = match &self.imp {
            Imp::Native(w) => return self.forward_native(w, tokens, cache, lengths, layer),
            Imp::Candle(w) => w,
        };
        let cache = match cache {
            None => None,
            Some(KvCache {
                imp: CacheImp::Candle { k, v, len, max_len },
            }) => Some(CandleCache { k, v, len, max_len }),
            Some(_) => unreachable!("caches come from new_cache of the same model"),
        };
        let (b, t) = tokens.dims2()?;
        let pos = cache.as_ref().map_or(0, |c| *c.len);
        if pos + t > self.max_ctx {
            return Err(crate::error::Error::PromptTooLong {
                tokens: pos + t,
                context: self.max_ctx,
                reserved: 0,
            });
        }
        if let Some(c) = cache.as_ref() {
            if pos + t > *c.max_len || c.k[0].dim(0)? != b {
                return Err(crate::error::Error::InvalidOption(format!(
                    "KV cache too small: {} + {t} tokens for a cache of {} (batch {})",
                    c.len,
                    c.max_len,
                    c.k[0].dim(0)?
                )));
            }
        }
        let mask = attention_mask(b, t, pos, lengths, &self.device)?;
        let cos = w.cos.narrow(0, pos, t)?;
        let sin = w.sin.narrow(0, pos, t)?;
        let mut x = w.tok_embd.embedding(tokens)?;
        let last = match layer {
            HiddenLayer::Final => w.layers.len(),
            HiddenLayer::After(n) => (n + 1).min(w.layers.len()),
        };
        for (i, l) in w.layers[..last].iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &l.attn_norm, self.cfg.rms_eps as f32)?;
            let kv = cache.as_ref().map(|c| (&c.k[i], &c.v[i]));
            let h = self.attention(l, &h, kv, pos, mask.as_ref(), &cos, &sin)?;
            x = (x + h)?;
            let h = candle_nn::ops::rms_norm(&x, &l.ffn_norm, self.cfg.rms_eps as f32)?;
            let gate = l.w_gate.forward(&h)?.silu()?;
            let up = l.w_up.forward(&h)?;
            x = (x + l.w_down.forward(&(gate * up)?)?)?;
        }
        if let Some(c) = cache {
            *c.len += t;
        }
        Ok(match layer {
            HiddenLayer::Final => candle_nn::ops::rms_norm(&x, &w.norm, self.cfg.rms_eps as f32)?,
            HiddenLayer::After(_) => x,
        })
    }

    /// [`Llama::forward_hidden`] on the CPU engine: the real tokens of each sequence are packed
    /// (padding costs nothing) and the result is spread back to `(batch, seq, n_embd)`, zeros at
    /// padded positions.
    fn forward_native(
        &self,
        w: &engine::Weights,
        tokens: &Tensor,
        cache: Option<&mut KvCache>,
        lengths: Option<&[usize]>,
        layer: HiddenLayer,
    ) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let ids = tokens.to_vec2::<u32>()?;
        let lens: Vec<usize> = (0..b).map(|i| lengths.map_or(t, |l| l[i].min(t))).collect();
        let seqs: Vec<&[u32]> = ids.iter().zip(&lens).map(|(s, &n)| &s[..n]).collect();
        let cache = match cache {
            None => None,
            Some(KvCache {
                imp: CacheImp::Native(c),
            }) => Some(c),
            Some(_) => unreachable!("caches come from new_cache of the same model"),
        };
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
            Imp::Candle(w) => Ok(w.output.forward(hidden)?),
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

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        l: &Layer,
        x: &Tensor,
        kv: Option<(&Tensor, &Tensor)>,
        pos: usize,
        mask: Option<&Tensor>,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim);
        let rep = nh / nkv;
        let q = l.wq.forward(x)?.reshape((b, t, nh, hd))?.transpose(1, 2)?;
        let k = l.wk.forward(x)?.reshape((b, t, nkv, hd))?.transpose(1, 2)?;
        let v = l.wv.forward(x)?.reshape((b, t, nkv, hd))?.transpose(1, 2)?;
        let q = candle_nn::rotary_emb::rope_i(&q.contiguous()?, cos, sin)?;
        let k = candle_nn::rotary_emb::rope_i(&k.contiguous()?, cos, sin)?;
        let v = v.contiguous()?;
        let (k, v) = match kv {
            Some((kc, vc)) => {
                kc.slice_set(&k, 2, pos)?;
                vc.slice_set(&v, 2, pos)?;
                (kc.narrow(2, 0, pos + t)?, vc.narrow(2, 0, pos + t)?)
            }
            None => (k, v),
        };
        let kv_len = k.dim(2)?;
        // Fold the `rep` query heads of each KV head into rows: (b, nkv, rep * t, hd).
        let q = (q * (1.0 / (hd as f64).sqrt()))?.reshape((b, nkv, rep * t, hd))?;
        let att = q.matmul(&k.t()?)?;
        let att = match mask {
            Some(m) => att
                .reshape((b, nkv, rep, t, kv_len))?
                .broadcast_add(m)?
                .reshape((b, nkv, rep * t, kv_len))?,
            None => att,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v)?; // (b, nkv, rep * t, hd)
        let y = y
            .reshape((b, nh, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, nh * hd))?;
        Ok(l.wo.forward(&y)?)
    }
}

/// The additive attention mask of shape `(b, 1, 1, t, pos + t)`: 0 where query `i` may see key
/// `j` (causal, and `j` inside the sequence's real length), -inf elsewhere. `None` when nothing
/// needs masking (a single new token with no padding).
fn attention_mask(
    b: usize,
    t: usize,
    pos: usize,
    lengths: Option<&[usize]>,
    device: &Device,
) -> Result<Option<Tensor>> {
    if t == 1 && lengths.is_none() {
        return Ok(None);
    }
    let kv_len = pos + t;
    let mut m = vec![0f32; b * t * kv_len];
    for bi in 0..b {
        let valid = lengths.map_or(kv_len, |l| pos + l[bi]);
        for i in 0..t {
            let row = &mut m[(bi * t + i) * kv_len..(bi * t + i + 1) * kv_len];
            for (j, cell) in row.iter_mut().enumerate() {
                // A padded query row still sees key 0.. so softmax never divides by zero.
                let visible = j <= pos + i && (j < valid || j == 0);
                if !visible {
                    *cell = f32::NEG_INFINITY;
                }
            }
        }
    }
    Ok(Some(Tensor::from_vec(m, (b, 1, 1, t, kv_len), device)?))
}

fn rope_tables(head_dim: usize, base: f32, n: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / head_dim as f32))
        .collect();
    let half = inv.len();
    let mut angles = Vec::with_capacity(n * half);
    for p in 0..n {
        angles.extend(inv.iter().map(|f| p as f32 * f));
    }
    let a = Tensor::from_vec(angles, (n, half), device)?;
    Ok((a.cos()?, a.sin()?))
}

/// Per-layer keys and values, allocated once for the cache's capacity; each forward writes its
/// new positions in place.
pub struct KvCache {
    imp: CacheImp,
}

enum CacheImp {
    /// Tensors of shape `(batch, n_kv_head, max_len, head_dim)`.
    Candle {
        k: Vec<Tensor>,
        v: Vec<Tensor>,
        len: usize,
        max_len: usize,
    },
    Native(engine::Cache),
}

/// The candle cache's fields, borrowed for one forward.
struct CandleCache<'a> {
    k: &'a [Tensor],
    v: &'a [Tensor],
    len: &'a mut usize,
    max_len: &'a usize,
}

impl KvCache {
    /// Tokens cached so far.
    pub fn len(&self) -> usize {
        match &self.imp {
            CacheImp::Candle { len, .. } => *len,
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
            CacheImp::Candle { max_len, .. } => *max_len,
            CacheImp::Native(c) => c.capacity(),
        }
    }

    /// Forget everything cached (the memory is kept).
    pub fn clear(&mut self) {
        match &mut self.imp {
            CacheImp::Candle { len, .. } => *len = 0,
            CacheImp::Native(c) => c.clear(),
        }
    }
}
