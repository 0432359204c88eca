//! The Llama forward on candle tensors: dense f32 / f16 weights, or candle's own quantized
//! matmul ([`crate::WeightFormat::CandleQuantized`], kept for comparison in benchmarks).
//!
//! candle's `quantized_llama` returns only last-position logits and grows its KV cache by
//! concatenation. This forward returns hidden states for every position (embeddings) or logits
//! (generation), writes into a preallocated KV cache, and runs a batch of sequences of different
//! lengths in one pass with a key-padding mask. Grouped-query attention is computed by folding the
//! query heads that share a KV head into the row dimension, so K and V are never copied per head.
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::hparams::{HiddenLayer, LlamaConfig};

/// How a dense forward holds its matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DenseFormat {
    /// As stored, multiplied by candle's quantized matmul.
    CandleQuantized,
    F32,
    F16,
}

fn matmul_weight(q: QTensor, format: DenseFormat, device: &Device) -> Result<QMatMul> {
    // 1-D and float tensors are always dense; QMatMul::from_qtensor dequantizes those itself.
    Ok(match format {
        DenseFormat::CandleQuantized => QMatMul::from_qtensor(q)?,
        DenseFormat::F32 => QMatMul::Tensor(q.dequantize(device)?),
        DenseFormat::F16 => QMatMul::TensorF16(q.dequantize_f16(device)?),
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

/// The weights and rotary tables of the candle forward.
pub(crate) struct DenseWeights {
    cfg: LlamaConfig,
    tok_embd: QMatMul,
    layers: Vec<Layer>,
    norm: Tensor,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    max_ctx: usize,
    device: Device,
}

/// Per-layer keys and values of shape `(batch, n_kv_head, max_len, head_dim)`, allocated once.
pub(crate) struct DenseCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    len: usize,
    max_len: usize,
}

impl DenseCache {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn capacity(&self) -> usize {
        self.max_len
    }

    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

impl DenseWeights {
    /// Load the weights of a `llama` GGUF. `max_ctx` caps the rotary tables.
    pub(crate) fn load(
        g: &mut GgufFile,
        cfg: LlamaConfig,
        format: DenseFormat,
        max_ctx: usize,
    ) -> Result<Self> {
        let device = Device::Cpu;
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
            tok_embd,
            layers,
            norm,
            output,
            cos,
            sin,
            max_ctx,
            device,
        })
    }

    /// A cache for `batch` sequences of up to `max_len` tokens.
    pub(crate) fn new_cache(&self, batch: usize, max_len: usize) -> Result<DenseCache> {
        let shape = (batch, self.cfg.n_kv_head, max_len, self.cfg.head_dim);
        let mut k = Vec::with_capacity(self.cfg.n_layer);
        let mut v = Vec::with_capacity(self.cfg.n_layer);
        for _ in 0..self.cfg.n_layer {
            k.push(Tensor::zeros(shape, DType::F32, &self.device)?);
            v.push(Tensor::zeros(shape, DType::F32, &self.device)?);
        }
        Ok(DenseCache {
            k,
            v,
            len: 0,
            max_len,
        })
    }

    /// See [`crate::Llama::forward_hidden`].
    pub(crate) fn forward_hidden(
        &self,
        tokens: &Tensor,
        cache: Option<&mut DenseCache>,
        lengths: Option<&[usize]>,
        layer: HiddenLayer,
    ) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let pos = cache.as_ref().map_or(0, |c| c.len);
        if pos + t > self.max_ctx {
            return Err(ModelError::PromptTooLong {
                tokens: pos + t,
                context: self.max_ctx,
                reserved: 0,
            });
        }
        if let Some(c) = cache.as_ref() {
            if pos + t > c.max_len || c.k[0].dim(0)? != b {
                return Err(ModelError::InvalidInput(format!(
                    "KV cache too small: {} + {t} tokens for a cache of {} (batch {})",
                    c.len,
                    c.max_len,
                    c.k[0].dim(0)?
                )));
            }
        }
        let mask = attention_mask(b, t, pos, lengths, &self.device)?;
        let cos = self.cos.narrow(0, pos, t)?;
        let sin = self.sin.narrow(0, pos, t)?;
        let mut x = self.tok_embd.embedding(tokens)?;
        let last = match layer {
            HiddenLayer::Final => self.layers.len(),
            HiddenLayer::After(n) => (n + 1).min(self.layers.len()),
        };
        let eps = self.cfg.rms_eps as f32;
        for (i, l) in self.layers[..last].iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &l.attn_norm, eps)?;
            let kv = cache.as_ref().map(|c| (&c.k[i], &c.v[i]));
            let h = self.attention(l, &h, kv, pos, mask.as_ref(), &cos, &sin)?;
            x = (x + h)?;
            let h = candle_nn::ops::rms_norm(&x, &l.ffn_norm, eps)?;
            let gate = l.w_gate.forward(&h)?.silu()?;
            let up = l.w_up.forward(&h)?;
            x = (x + l.w_down.forward(&(gate * up)?)?)?;
        }
        if let Some(c) = cache {
            c.len += t;
        }
        Ok(match layer {
            HiddenLayer::Final => candle_nn::ops::rms_norm(&x, &self.norm, eps)?,
            HiddenLayer::After(_) => x,
        })
    }

    /// Logits over the vocabulary for hidden states `(.., n_embd)` (final layer).
    pub(crate) fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.output.forward(hidden)?)
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
