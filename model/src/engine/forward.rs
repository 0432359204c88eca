//! The project's own CPU forward of a Llama decoder over quantized GGUF weights.
//!
//! Weights stay in GGUF blocks ([`QMatrix`]); each matrix product quantizes its input rows to 8
//! bits per 32-element block once and runs integer dot products (AVX2 when the CPU has it, else
//! the scalar reference). Every block format is regrouped at load, eight rows at a time
//! ([`super::quant::repack_x8`]: in place for the 32-element formats and Q6_K, into a copy 2.8%
//! larger for Q4_K / Q5_K, whose 6-bit scales are unpacked), and multiplied by
//! [`super::quant::gemm_x8`] for one token as for many. A matrix whose rows are not a multiple
//! of 8 keeps its rows and uses [`super::quant::vec_dot_rows`] for one token and
//! [`super::quant::vec_dot_tile`] (four activation rows per unpacked weight block) for prompts
//! and batches. Rows of the weight matrix
//! are split over the compute threads (rayon's pool, sized by [`crate::set_threads`]).
//! Attention is [`super::attn::causal`] for every step, over the f16 cache in place (keys kept
//! transposed), so that prefill and token-by-token decoding do the same arithmetic per query.
//!
//! Sequences of a batch are packed one after another (no padding), so a batch costs the tokens it
//! holds; attention runs per sequence. The KV cache ([`Cache`]) is allocated once for its capacity.
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::attn::{self, KvBlock, KvRows, KvView};
use super::matrix::{matmul_many, quantize, QMatrix};
use super::quant::{BlockQ8, QType};
use super::vmath;
use crate::error::{ModelError, Result};
use crate::hparams::{HiddenLayer, LlamaConfig};

/// Tokens per parallel task of [`attn::causal`].
const ATTN_TOKENS: usize = 8;

struct Layer {
    attn_norm: Vec<f32>,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    w_gate: QMatrix,
    w_up: QMatrix,
    w_down: QMatrix,
}

/// Weights of a Llama decoder for this engine.
pub struct Weights {
    cfg: LlamaConfig,
    tok_embd: std::sync::Arc<QMatrix>,
    output: std::sync::Arc<QMatrix>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// The rotary frequencies, `head_dim / 2`; each forward computes the cos and sin of the
    /// positions it covers (a table for the whole context would be 2 MiB at 8k tokens).
    inv_freq: Vec<f32>,
    max_ctx: usize,
}

/// Where [`Weights::load`] gets tensors: name → (type, row-major dims, bytes).
pub trait TensorSource {
    fn raw(
        &mut self,
        name: &str,
    ) -> Result<(candle_core::quantized::GgmlDType, Vec<usize>, Vec<u8>)>;
    fn has(&self, name: &str) -> bool;
}

/// Turn a GGUF tensor into a matrix: block formats with a kernel stay as they are; F32, F16 and
/// the rest are dequantized to f32.
fn matrix(
    name: &str,
    (dtype, dims, data): (candle_core::quantized::GgmlDType, Vec<usize>, Vec<u8>),
) -> Result<QMatrix> {
    let [rows, cols] = dims[..] else {
        return Err(ModelError::InvalidInput(format!(
            "tensor {name}: expected a matrix, found shape {dims:?}"
        )));
    };
    match QType::from_ggml(dtype) {
        Some(ty)
            if ty != QType::F32
                && ty != QType::F16
                && cols.is_multiple_of(32)
                && cols.is_multiple_of(ty.block_elems()) =>
        {
            QMatrix::blocks(ty, rows, cols, data)
        }
        _ => Ok(QMatrix::dense(rows, cols, dequantize(dtype, &dims, data)?)),
    }
}

fn dequantize(
    dtype: candle_core::quantized::GgmlDType,
    dims: &[usize],
    data: Vec<u8>,
) -> Result<Vec<f32>> {
    use candle_core::quantized::QTensor;
    let dev = candle_core::Device::Cpu;
    let storage =
        candle_core::quantized::QStorage::from_data(std::borrow::Cow::Owned(data), &dev, dtype)?;
    let q = QTensor::new(storage, dims.to_vec())?;
    Ok(q.dequantize(&dev)?.flatten_all()?.to_vec1::<f32>()?)
}

fn vector(
    name: &str,
    (dtype, dims, data): (candle_core::quantized::GgmlDType, Vec<usize>, Vec<u8>),
) -> Result<Vec<f32>> {
    if dims.len() != 1 {
        return Err(ModelError::InvalidInput(format!(
            "tensor {name}: expected a vector, found shape {dims:?}"
        )));
    }
    dequantize(dtype, &dims, data)
}

impl Weights {
    /// Load from `src`; `max_ctx` caps positions and KV caches.
    pub fn load(src: &mut dyn TensorSource, cfg: LlamaConfig, max_ctx: usize) -> Result<Self> {
        let tok = std::sync::Arc::new(matrix("token_embd.weight", src.raw("token_embd.weight")?)?);
        let output = if src.has("output.weight") {
            std::sync::Arc::new(matrix("output.weight", src.raw("output.weight")?)?)
        } else {
            tok.clone() // tied embeddings (SmolLM2): one copy serves both
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let mut m = |n: &str| -> Result<QMatrix> {
                let name = format!("blk.{i}.{n}.weight");
                let raw = src.raw(&name)?;
                matrix(&name, raw)
            };
            let (wq, wk, wv, wo) = (m("attn_q")?, m("attn_k")?, m("attn_v")?, m("attn_output")?);
            let (w_gate, w_up, w_down) = (m("ffn_gate")?, m("ffn_up")?, m("ffn_down")?);
            let mut v = |n: &str| -> Result<Vec<f32>> {
                let name = format!("blk.{i}.{n}.weight");
                let raw = src.raw(&name)?;
                vector(&name, raw)
            };
            layers.push(Layer {
                attn_norm: v("attn_norm")?,
                ffn_norm: v("ffn_norm")?,
                wq,
                wk,
                wv,
                wo,
                w_gate,
                w_up,
                w_down,
            });
        }
        let norm = vector("output_norm.weight", src.raw("output_norm.weight")?)?;
        let half = cfg.head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                1.0 / cfg
                    .rope_freq_base
                    .powf((2 * i) as f32 / cfg.head_dim as f32)
            })
            .collect();
        Ok(Self {
            cfg,
            tok_embd: tok,
            output,
            layers,
            norm,
            inv_freq,
            max_ctx,
        })
    }

    /// A KV cache for one sequence of up to `max_len` tokens.
    pub fn new_cache(&self, max_len: usize) -> Cache {
        let kv = self.cfg.n_kv_head * self.cfg.head_dim;
        let max_len = max_len.min(self.max_ctx);
        let cap = max_len.next_multiple_of(8);
        Cache {
            k: (0..self.cfg.n_layer)
                .map(|_| vec![f16::ZERO; cap * kv])
                .collect(),
            v: (0..self.cfg.n_layer)
                .map(|_| vec![f16::ZERO; cap * kv])
                .collect(),
            len: 0,
            max_len,
            cap,
        }
    }

    /// Hidden states of every token of `seqs`, packed: row `offset(s) + i` is token `i` of
    /// sequence `s`, `n_embd` values each. With a cache (one sequence only), positions start at
    /// the cache's length and the new keys and values are appended to it.
    pub fn forward(
        &self,
        seqs: &[&[u32]],
        cache: Option<&mut Cache>,
        layer: HiddenLayer,
    ) -> Result<Vec<f32>> {
        // The buffers are allocated here, on the caller's thread: allocated on a worker they
        // would land in another malloc arena and raise the peak memory.
        let c = &self.cfg;
        let total: usize = seqs.iter().map(|s| s.len()).sum();
        let widest = c.n_embd.max(c.n_ff).max(c.n_head * c.head_dim);
        let f = |n: usize| vec![0f32; total * n];
        let kvd = c.n_kv_head * c.head_dim;
        let mut s = Scratch {
            x: f(c.n_embd),
            h: f(c.n_embd),
            hq: Vec::with_capacity(total * widest / 32),
            q: f(c.n_head * c.head_dim),
            k: f(kvd),
            v: f(kvd),
            y: f(c.n_head * c.head_dim),
            gate: f(c.n_ff),
            up: f(c.n_ff),
        };
        // Run on a worker of the pool: its parallel loops then start and end on a thread of
        // the pool, instead of waking the caller after each one.
        rayon::scope(|_| self.forward_in_pool(seqs, cache, layer, &mut s))
    }

    fn forward_in_pool(
        &self,
        seqs: &[&[u32]],
        mut cache: Option<&mut Cache>,
        layer: HiddenLayer,
        s: &mut Scratch,
    ) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let d = c.n_embd;
        let (nh, nkv, hd) = (c.n_head, c.n_kv_head, c.head_dim);
        let kvd = nkv * hd;
        if cache.is_some() && seqs.len() != 1 {
            return Err(ModelError::InvalidInput(
                "a KV cache serves one sequence at a time".into(),
            ));
        }
        let pos = cache.as_ref().map_or(0, |c| c.len);
        let total: usize = seqs.iter().map(|s| s.len()).sum();
        for s in seqs {
            if pos + s.len() > self.max_ctx {
                return Err(ModelError::PromptTooLong {
                    tokens: pos + s.len(),
                    context: self.max_ctx,
                    reserved: 0,
                });
            }
            if let Some(&bad) = s.iter().find(|&&t| t as usize >= self.tok_embd.rows()) {
                return Err(ModelError::InvalidInput(format!(
                    "token id {bad} is outside the vocabulary ({})",
                    self.tok_embd.rows()
                )));
            }
        }
        if let Some(cc) = cache.as_ref() {
            if pos + total > cc.max_len {
                return Err(ModelError::InvalidInput(format!(
                    "KV cache too small: {pos} + {total} tokens for a cache of {}",
                    cc.max_len
                )));
            }
        }
        // (start row in the packed batch, length) of each sequence.
        let mut spans = Vec::with_capacity(seqs.len());
        let mut at = 0;
        for s in seqs {
            spans.push((at, s.len()));
            at += s.len();
        }
        let Scratch {
            mut x,
            mut h,
            mut hq,
            mut q,
            mut k,
            mut v,
            mut y,
            mut gate,
            mut up,
        } = std::mem::take(s);
        for (row, &tok) in x.chunks_mut(d).zip(seqs.iter().flat_map(|s| s.iter())) {
            self.tok_embd.dequantize_row(tok as usize, row);
        }
        // (cos, sin) pairs of each position of the longest sequence, `head_dim` values a
        // position.
        let longest = spans.iter().map(|s| s.1).max().unwrap_or(0);
        let mut rot = Vec::with_capacity(longest * hd);
        for p in pos..pos + longest {
            for f in &self.inv_freq {
                let a = p as f32 * f;
                rot.push(a.cos());
                rot.push(a.sin());
            }
        }
        let last = match layer {
            HiddenLayer::Final => self.layers.len(),
            HiddenLayer::After(n) => (n + 1).min(self.layers.len()),
        };
        let eps = c.rms_eps as f32;
        for (li, l) in self.layers[..last].iter().enumerate() {
            if li == 0 {
                rms_norm(&x, &l.attn_norm, eps, &mut h);
            } else {
                // The previous layer's feed-forward residual, added here with the norm.
                add_rms_norm(&mut x, &mut h, &l.attn_norm, eps);
            }
            {
                let inp = quantize(&h, d, &mut hq);
                matmul_many(&[&l.wq, &l.wk, &l.wv], &inp, &mut [&mut q, &mut k, &mut v]);
            }
            for &(start, len) in &spans {
                for i in 0..len {
                    let r = start + i;
                    let rot = &rot[i * hd..(i + 1) * hd];
                    rope(&mut q[r * nh * hd..(r + 1) * nh * hd], rot);
                    rope(&mut k[r * kvd..(r + 1) * kvd], rot);
                }
            }
            match cache.as_deref_mut() {
                Some(cc) => {
                    let kv_len = pos + total;
                    let cap = cc.cap;
                    let kt = &mut cc.k[li];
                    for (i, row) in k.chunks_exact(kvd).enumerate() {
                        for (e, &x) in row.iter().enumerate() {
                            kt[e * cap + pos + i] = f16::from_f32(x);
                        }
                    }
                    let vt = &mut cc.v[li];
                    for (i, row) in v.chunks_exact(kvd).enumerate() {
                        for (h, part) in row.chunks_exact(hd).enumerate() {
                            let at = (h * cap + pos + i) * hd;
                            vt[at..at + hd].convert_from_f32_slice(part);
                        }
                    }
                    // The kernel reads the f16 cache in place.
                    let (kt, vt) = (&cc.k[li], &cc.v[li]);
                    let views: Vec<KvView<'_>> = (0..nkv)
                        .map(|h| {
                            KvView::new(
                                KvRows::F16(&kt[h * hd * cap..(h + 1) * hd * cap]),
                                cap,
                                KvRows::F16(&vt[h * cap * hd..(h * cap + kv_len) * hd]),
                                hd,
                                kv_len,
                                hd,
                            )
                        })
                        .collect();
                    self.attention(&q, &views, pos, &mut y);
                }
                None => {
                    for &(start, len) in &spans {
                        let (ks, vs) = (
                            KvRows::F32(&k[start * kvd..(start + len) * kvd]),
                            KvRows::F32(&v[start * kvd..(start + len) * kvd]),
                        );
                        let blocks: Vec<KvBlock> = (0..nkv)
                            .map(|h| KvBlock::new(ks.from(h * hd), vs.from(h * hd), kvd, len, hd))
                            .collect();
                        let views: Vec<KvView<'_>> = blocks.iter().map(KvBlock::view).collect();
                        self.attention(
                            &q[start * nh * hd..(start + len) * nh * hd],
                            &views,
                            0,
                            &mut y[start * nh * hd..(start + len) * nh * hd],
                        );
                    }
                }
            }
            {
                let inp = quantize(&y, nh * hd, &mut hq);
                l.wo.matmul(&inp, &mut h);
            }
            add_rms_norm(&mut x, &mut h, &l.ffn_norm, eps);
            {
                let inp = quantize(&h, d, &mut hq);
                matmul_many(&[&l.w_gate, &l.w_up], &inp, &mut [&mut gate, &mut up]);
            }
            silu_mul(&mut gate, &up);
            {
                let inp = quantize(&gate, c.n_ff, &mut hq);
                l.w_down.matmul(&inp, &mut h);
            }
        }
        if let Some(cc) = cache {
            cc.len += total;
        }
        // The last layer's feed-forward residual (h is all zeros when no layer ran).
        if layer == HiddenLayer::Final {
            add_rms_norm(&mut x, &mut h, &self.norm, eps);
            return Ok(h);
        }
        add(&mut x, &h);
        Ok(x)
    }

    /// Logits over the vocabulary of `hidden` (rows of `n_embd`, final layer).
    pub fn logits(&self, hidden: &[f32]) -> Vec<f32> {
        let d = self.cfg.n_embd;
        let t = hidden.len() / d;
        let mut hq = Vec::new();
        let inp = quantize(hidden, d, &mut hq);
        let mut out = vec![0f32; t * self.output.rows()];
        rayon::scope(|_| self.output.matmul(&inp, &mut out));
        out
    }

    /// Causal attention of the query rows `q` (positions `pos..`) over the keys and values
    /// of each KV head (`kv[h]`, positions `0..`), written to `y`; query heads share KV heads
    /// in groups. One token: a task per KV head; more: a task per block of tokens.
    fn attention(&self, q: &[f32], kv: &[KvView<'_>], pos: usize, y: &mut [f32]) {
        let c = &self.cfg;
        let (nh, hd) = (c.n_head, c.head_dim);
        let rep = nh / c.n_kv_head;
        let scale = 1.0 / (hd as f32).sqrt();
        let t = y.len() / (nh * hd);
        if t == 1 {
            y.par_chunks_mut(rep * hd).enumerate().for_each_init(
                attn::Scratch::default,
                |sc, (h, out)| {
                    let qs = &q[h * rep * hd..(h + 1) * rep * hd];
                    attn::causal(&kv[h], qs, out, rep * hd, 1, rep, pos, scale, sc);
                },
            );
            return;
        }
        y.par_chunks_mut(ATTN_TOKENS * nh * hd)
            .enumerate()
            .for_each_init(attn::Scratch::default, |sc, (u, out)| {
                let g0 = u * ATTN_TOKENS;
                let tokens = out.len() / (nh * hd);
                for (h, kv) in kv.iter().enumerate() {
                    let at = h * rep * hd;
                    attn::causal(
                        kv,
                        &q[g0 * nh * hd + at..],
                        &mut out[at..],
                        nh * hd,
                        tokens,
                        rep,
                        pos + g0,
                        scale,
                        sc,
                    );
                }
            });
    }
}

/// The buffers of one forward pass.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    hq: Vec<BlockQ8>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    y: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

/// Per-layer keys and values of one sequence, `cap × n_kv_head × head_dim` each, in f16
/// (as llama.cpp keeps them): half the memory of f32, with rounding far below that of the
/// 8-bit activations.
pub struct Cache {
    /// Keys transposed: element `e` (of `n_kv_head × head_dim`) of position `p` at
    /// `e * cap + p`, so that attention reads eight positions with one load.
    k: Vec<Vec<f16>>,
    /// Values head by head: element `d` of KV head `h` at position `p` at
    /// `(h * cap + p) * head_dim + d`, so that a generation step streams each head's values
    /// as one run of memory (kept position by position, a head's rows lay `n_kv_head ×
    /// head_dim` elements apart, a new page every few rows).
    v: Vec<Vec<f16>>,
    len: usize,
    max_len: usize,
    /// `max_len` rounded up to 8: the row length of the transposed keys and the positions
    /// each head's values have room for.
    cap: usize,
}

impl Cache {
    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in tokens.
    pub fn capacity(&self) -> usize {
        self.max_len
    }

    /// Forget the positions from `len` on (the memory stays): the next forward writes there.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Forget what is cached (the memory stays).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    let one = |(x, out): (&[f32], &mut [f32])| norm_row(x, w, eps, out);
    if x.len() / d >= 16 {
        x.par_chunks(d).zip(out.par_chunks_mut(d)).for_each(one);
    } else {
        x.chunks(d).zip(out.chunks_mut(d)).for_each(one);
    }
}

/// `x += h`, then `h = rms_norm(x)`, row by row in one pass: the residual add and the norm
/// that follows it.
fn add_rms_norm(x: &mut [f32], h: &mut [f32], w: &[f32], eps: f32) {
    let d = w.len();
    let one = |(x, h): (&mut [f32], &mut [f32])| {
        for (a, b) in x.iter_mut().zip(h.iter()) {
            *a += b;
        }
        norm_row(x, w, eps, h);
    };
    if x.len() / d >= 16 {
        x.par_chunks_mut(d).zip(h.par_chunks_mut(d)).for_each(one);
    } else {
        x.chunks_mut(d).zip(h.chunks_mut(d)).for_each(one);
    }
}

/// One row of [`rms_norm`]. The sum of squares runs in eight lanes (the compiler keeps them
/// in vector registers), added in a fixed order.
fn norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let mut lanes = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    let mut ss = lanes.iter().sum::<f32>();
    for v in chunks.remainder() {
        ss += v * v;
    }
    let r = 1.0 / (ss / w.len() as f32 + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = v * r * g;
    }
}

/// Rotate the pairs `(x[2i], x[2i+1])` of every head in `x` by the angles whose (cos, sin)
/// pairs are `rot`.
fn rope(x: &mut [f32], rot: &[f32]) {
    for head in x.chunks_mut(rot.len()) {
        for (pair, cs) in head.chunks_exact_mut(2).zip(rot.chunks_exact(2)) {
            let (a, b, c, s) = (pair[0], pair[1], cs[0], cs[1]);
            pair[0] = a * c - b * s;
            pair[1] = a * s + b * c;
        }
    }
}

fn add(x: &mut [f32], h: &[f32]) {
    let one = |(a, b): (&mut [f32], &[f32])| {
        for (a, b) in a.iter_mut().zip(b) {
            *a += b;
        }
    };
    if x.len() >= 1 << 15 {
        x.par_chunks_mut(4096).zip(h.par_chunks(4096)).for_each(one);
    } else {
        one((x, h));
    }
}

/// `gate = silu(gate) * up`.
fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let one = |(g, u): (&mut [f32], &[f32])| {
        vmath::silu_mul(g, u);
    };
    if gate.len() >= 1 << 15 {
        gate.par_chunks_mut(4096)
            .zip(up.par_chunks(4096))
            .for_each(one);
    } else {
        one((gate, up));
    }
}
