//! A BERT encoder on rag's own CPU engine ([`crate::engine`]): the six matrix products of a
//! layer run as Q8_0 weights against 8-bit activations through the interleaved x8 kernels,
//! attention and the elementwise steps in f32 compiled for AVX2 where the CPU has it.
//!
//! Texts are not padded: the tokens of every text of a batch are laid end to end, so the
//! matrix products see only real tokens, and attention runs within each text. A text's vector
//! therefore does not depend on the others of its batch (the activation blocks are quantized
//! per token, and attention never crosses texts).
//!
//! The hidden dimensions are reordered at load so that the model's few outlier dimensions share
//! their 32-value activation blocks (see [`outliers_first`]); the pooled vector comes back in
//! the checkpoint's order. Against candle's f32 BERT (the reference, [`super::Runtime::Candle`])
//! the vectors agree to a cosine above 0.999 on every text of `model/tests/minilm.rs` but the
//! empty one ([CLS] [SEP] alone: 0.9990).
use std::collections::HashMap;

use candle_core::Tensor;
use candle_transformers::models::bert::Config;
use rayon::prelude::*;

use crate::engine::quant::{self, QType};
use crate::engine::{matmul_many, quantize, QMatrix};

/// Layer normalisation's learned scale and shift.
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// A linear map `y = W x + b` with `W` quantized.
struct Linear {
    w: QMatrix,
    b: Vec<f32>,
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    attn_norm: Norm,
    up: Linear,
    down: Linear,
    out_norm: Norm,
}

/// The encoder's weights and shape.
pub(crate) struct Bert {
    word: Vec<f32>,
    position: Vec<f32>,
    /// Token type 0's embedding (sentence embeddings use no second segment).
    segment: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    /// Position `i` of the engine's hidden state holds the checkpoint's dimension `order[i]`.
    order: Vec<usize>,
    hidden: usize,
    heads: usize,
    positions: usize,
    eps: f32,
}

/// The tensors of a BERT checkpoint by name (with or without a `bert.` prefix).
pub(crate) type Tensors = HashMap<String, Tensor>;

impl Bert {
    /// Build the encoder from a checkpoint's tensors; `Err` names the first missing or
    /// misshapen tensor. The config's activation must be `gelu` (checked by the caller).
    pub(crate) fn new(tensors: &Tensors, config: &Config) -> std::result::Result<Self, String> {
        let (hidden, heads, layers) = (
            config.hidden_size,
            config.num_attention_heads,
            config.num_hidden_layers,
        );
        let (intermediate, positions, vocab) = (
            config.intermediate_size,
            config.max_position_embeddings,
            config.vocab_size,
        );
        let eps = config.layer_norm_eps as f32;
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(format!("{hidden} wide with {heads} heads"));
        }
        if !hidden.is_multiple_of(32) || !intermediate.is_multiple_of(32) {
            return Err(format!(
                "widths {hidden} and {intermediate} must be multiples of 32 for the engine"
            ));
        }
        let get = |name: &str, shape: &[usize]| -> std::result::Result<Vec<f32>, String> {
            let t = tensors
                .get(name)
                .or_else(|| tensors.get(&format!("bert.{name}")))
                .ok_or_else(|| format!("no tensor {name}"))?;
            if t.dims() != shape {
                return Err(format!("{name} is {:?}, expected {shape:?}", t.dims()));
            }
            t.to_dtype(candle_core::DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| format!("{name}: {e}"))
        };
        let norm = |prefix: &str| -> std::result::Result<Norm, String> {
            Ok(Norm {
                weight: get(&format!("{prefix}.weight"), &[hidden])?,
                bias: get(&format!("{prefix}.bias"), &[hidden])?,
            })
        };
        let p = |i: usize| format!("encoder.layer.{i}");
        let mut norms = vec![norm("embeddings.LayerNorm")?];
        for i in 0..layers {
            norms.push(norm(&format!("{}.attention.output.LayerNorm", p(i)))?);
            norms.push(norm(&format!("{}.output.LayerNorm", p(i)))?);
        }
        // The hidden dimensions reordered by how large the layer norms make them, so that the
        // few outlier dimensions of a BERT (one of all-MiniLM-L6-v2's reaches 10 where most
        // stay under 1) share their 32-value activation blocks with each other rather than
        // crushing the 8-bit resolution of 31 ordinary ones. The order changes nothing else:
        // every product and norm sees the same dimensions, and the pooled vector is put back
        // in the checkpoint's order.
        let order = outliers_first(&norms, hidden);
        let norms: Vec<Norm> = norms
            .into_iter()
            .map(|n| Norm {
                weight: permute(&n.weight, 1, &order),
                bias: permute(&n.bias, 1, &order),
            })
            .collect();
        let mut norms = norms.into_iter();
        // Matrices reading the hidden state (q, k, v, up) have their columns reordered; those
        // writing it (the attention's output, down), their rows.
        let linear = |prefix: &str, rows: usize, cols: usize| -> std::result::Result<_, String> {
            let mut w = get(&format!("{prefix}.weight"), &[rows, cols])?;
            let mut b = get(&format!("{prefix}.bias"), &[rows])?;
            let writes = prefix.ends_with(".output.dense");
            if !writes {
                w = w
                    .chunks_exact(cols)
                    .flat_map(|row| order.iter().map(|&d| row[d]))
                    .collect();
            }
            if writes {
                w = permute(&w, cols, &order);
                b = permute(&b, 1, &order);
            }
            Ok(Linear {
                w: QMatrix::blocks(QType::Q8_0, rows, cols, quantize_q8_0(&w))
                    .map_err(|e| format!("{prefix}: {e}"))?,
                b,
            })
        };
        let embed_norm = norms.next().expect("the embeddings' norm");
        let mut stack = Vec::with_capacity(layers);
        for i in 0..layers {
            let p = p(i);
            stack.push(Layer {
                q: linear(&format!("{p}.attention.self.query"), hidden, hidden)?,
                k: linear(&format!("{p}.attention.self.key"), hidden, hidden)?,
                v: linear(&format!("{p}.attention.self.value"), hidden, hidden)?,
                o: linear(&format!("{p}.attention.output.dense"), hidden, hidden)?,
                attn_norm: norms.next().expect("one per layer"),
                up: linear(&format!("{p}.intermediate.dense"), intermediate, hidden)?,
                down: linear(&format!("{p}.output.dense"), hidden, intermediate)?,
                out_norm: norms.next().expect("one per layer"),
            });
        }
        let columns = |v: Vec<f32>| -> Vec<f32> {
            v.chunks_exact(hidden)
                .flat_map(|row| order.iter().map(|&d| row[d]))
                .collect()
        };
        let types = get("embeddings.token_type_embeddings.weight", &[2, hidden])
            .or_else(|_| get("embeddings.token_type_embeddings.weight", &[1, hidden]))?;
        Ok(Self {
            word: columns(get("embeddings.word_embeddings.weight", &[vocab, hidden])?),
            position: columns(get(
                "embeddings.position_embeddings.weight",
                &[positions, hidden],
            )?),
            segment: columns(types[..hidden].to_vec()),
            embed_norm,
            layers: stack,
            order,
            hidden,
            heads,
            positions,
            eps,
        })
    }

    /// Mean-pooled final hidden states of each sequence (not normalised). Every sequence holds
    /// 1 to `positions` token ids below the vocabulary size (checked by the caller).
    pub(crate) fn mean_states(&self, seqs: &[&[u32]]) -> Vec<Vec<f32>> {
        let h = self.hidden;
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let t: usize = lens.iter().sum();
        debug_assert!(lens.iter().all(|&n| n >= 1 && n <= self.positions));
        let fast = quant::kernels() == quant::Kernels::Avx2;

        // Embeddings: word + position + segment 0, normalised.
        let mut x = vec![0f32; t * h];
        {
            let mut rows = x.chunks_exact_mut(h);
            for s in seqs {
                for (p, &id) in s.iter().enumerate() {
                    let row = rows.next().expect("one row per token");
                    let w = &self.word[id as usize * h..][..h];
                    let pos = &self.position[p * h..][..h];
                    for (((o, a), b), c) in row.iter_mut().zip(w).zip(pos).zip(&self.segment) {
                        *o = a + b + c;
                    }
                }
            }
        }
        layer_norm(fast, &mut x, h, &self.embed_norm, self.eps);

        let inter = self.layers.first().map_or(0, |l| l.up.w.rows());
        let (mut q, mut k, mut v) = (vec![0f32; t * h], vec![0f32; t * h], vec![0f32; t * h]);
        let mut ctx = vec![0f32; t * h];
        let mut proj = vec![0f32; t * h];
        let mut up = vec![0f32; t * inter];
        let mut qbuf = Vec::new();
        for layer in &self.layers {
            {
                let input = quantize(&x, h, &mut qbuf);
                matmul_many(
                    &[&layer.q.w, &layer.k.w, &layer.v.w],
                    &input,
                    &mut [&mut q, &mut k, &mut v],
                );
            }
            add_bias(fast, &mut q, &layer.q.b);
            add_bias(fast, &mut k, &layer.k.b);
            add_bias(fast, &mut v, &layer.v.b);
            self.attention(fast, &lens, &q, &k, &v, &mut ctx);

            layer.o.w.matmul(&quantize(&ctx, h, &mut qbuf), &mut proj);
            add_bias_residual(fast, &mut x, &proj, &layer.o.b);
            layer_norm(fast, &mut x, h, &layer.attn_norm, self.eps);

            layer.up.w.matmul(&quantize(&x, h, &mut qbuf), &mut up);
            bias_gelu(fast, &mut up, &layer.up.b);
            layer
                .down
                .w
                .matmul(&quantize(&up, inter, &mut qbuf), &mut proj);
            add_bias_residual(fast, &mut x, &proj, &layer.down.b);
            layer_norm(fast, &mut x, h, &layer.out_norm, self.eps);
        }

        let mut out = Vec::with_capacity(seqs.len());
        let mut at = 0;
        for &n in &lens {
            let mut mean = vec![0f32; h];
            for row in x[at * h..(at + n) * h].chunks_exact(h) {
                mean.iter_mut().zip(row).for_each(|(m, v)| *m += v);
            }
            let inv = 1.0 / n as f32;
            let mut v = vec![0f32; h];
            for (&d, m) in self.order.iter().zip(&mean) {
                v[d] = m * inv;
            }
            out.push(v);
            at += n;
        }
        out
    }

    /// Bidirectional multi-head attention within each sequence: `ctx = softmax(q kᵀ / √d) v`
    /// per head, the sequences in parallel.
    fn attention(
        &self,
        fast: bool,
        lens: &[usize],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        ctx: &mut [f32],
    ) {
        let h = self.hidden;
        let mut parts = Vec::with_capacity(lens.len());
        let (mut rest, mut at) = (ctx, 0);
        for &n in lens {
            let (mine, tail) = rest.split_at_mut(n * h);
            parts.push((at, n, mine));
            rest = tail;
            at += n;
        }
        let heads = self.heads;
        parts.into_par_iter().for_each(|(at, n, out)| {
            let span = at * h..(at + n) * h;
            attend(
                fast,
                &q[span.clone()],
                &k[span.clone()],
                &v[span],
                n,
                h,
                heads,
                out,
            );
        });
    }
}

/// The hidden dimensions, largest first by the sum over all layer norms of `|weight| + |bias|`
/// (what a normalised value of about 1 becomes): an order that puts the outliers together.
fn outliers_first(norms: &[Norm], hidden: usize) -> Vec<usize> {
    let size: Vec<f32> = (0..hidden)
        .map(|d| {
            norms
                .iter()
                .map(|n| n.weight[d].abs() + n.bias[d].abs())
                .sum()
        })
        .collect();
    let mut order: Vec<usize> = (0..hidden).collect();
    order.sort_by(|&a, &b| size[b].total_cmp(&size[a]).then(a.cmp(&b)));
    order
}

/// Rows of `width` values in the order `order` gives (`out[i] = rows[order[i]]`).
fn permute(rows: &[f32], width: usize, order: &[usize]) -> Vec<f32> {
    order
        .iter()
        .flat_map(|&r| &rows[r * width..(r + 1) * width])
        .copied()
        .collect()
}

/// Quantize f32 rows (a multiple of 32 long) to GGUF Q8_0 blocks: per 32 values an f16 scale
/// `d = max|x| / 127` and `round(x / d)` as i8 (ggml's reference quantizer).
pub(crate) fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for block in x.chunks_exact(32) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
    }
    out
}

/// `x[row] += b` for every row.
fn add_bias(fast: bool, x: &mut [f32], b: &[f32]) {
    #[inline(always)]
    fn body(x: &mut [f32], b: &[f32]) {
        for row in x.chunks_exact_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn avx2(x: &mut [f32], b: &[f32]) {
        body(x, b)
    }
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: `fast` only where AVX2, FMA and F16C were detected.
        return unsafe { avx2(x, b) };
    }
    let _ = fast;
    body(x, b)
}

/// `x[row] += p[row] + b` for every row (the residual connection after a projection).
fn add_bias_residual(fast: bool, x: &mut [f32], p: &[f32], b: &[f32]) {
    #[inline(always)]
    fn body(x: &mut [f32], p: &[f32], b: &[f32]) {
        for (row, prow) in x.chunks_exact_mut(b.len()).zip(p.chunks_exact(b.len())) {
            for ((x, p), b) in row.iter_mut().zip(prow).zip(b) {
                *x += p + b;
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn avx2(x: &mut [f32], p: &[f32], b: &[f32]) {
        body(x, p, b)
    }
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: `fast` only where AVX2, FMA and F16C were detected.
        return unsafe { avx2(x, p, b) };
    }
    let _ = fast;
    body(x, p, b)
}

/// `x = gelu(x + b)` per row, GELU with the exact error function as BERT uses it (erf from
/// Abramowitz and Stegun 7.1.28, absolute error below 3e-7, branch-free so it vectorizes).
fn bias_gelu(fast: bool, x: &mut [f32], b: &[f32]) {
    #[inline(always)]
    fn body(x: &mut [f32], b: &[f32]) {
        for row in x.chunks_exact_mut(b.len()) {
            for (x, b) in row.iter_mut().zip(b) {
                let y = *x + b;
                *x = 0.5 * y * (1.0 + erf(y * std::f32::consts::FRAC_1_SQRT_2));
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn avx2(x: &mut [f32], b: &[f32]) {
        body(x, b)
    }
    // Rows in parallel: GELU is a tenth of a layer's time on one thread.
    par_rows(x, b.len(), |x| {
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: `fast` only where AVX2, FMA and F16C were detected.
            return unsafe { avx2(x, b) };
        }
        body(x, b)
    });
}

/// Run `f` on `x` in parallel, in runs of whole rows of `width` values (about two runs per
/// thread).
fn par_rows(x: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Send + Sync) {
    let per = (x.len() / width)
        .div_ceil(rayon::current_num_threads() * 2)
        .max(1)
        * width;
    x.par_chunks_mut(per).for_each(f);
}

/// erf(x) by Abramowitz and Stegun 7.1.28: `1 - (1 + a₁x + … + a₆x⁶)⁻¹⁶` for x ≥ 0, odd.
#[inline(always)]
fn erf(x: f32) -> f32 {
    const A: [f32; 6] = [
        0.070_523_08,
        0.042_282_01,
        0.009_270_527,
        0.000_152_014_3,
        0.000_276_567_2,
        0.000_043_063_8,
    ];
    let a = x.abs();
    let mut p = A[5];
    for c in A[..5].iter().rev() {
        p = p.mul_add(a, *c);
    }
    let p = p.mul_add(a, 1.0);
    let p2 = p * p;
    let p4 = p2 * p2;
    let p8 = p4 * p4;
    let e = 1.0 - 1.0 / (p8 * p8);
    e.copysign(x)
}

/// Layer normalisation of every row of `x` (rows of `h`), in parallel over rows.
fn layer_norm(fast: bool, x: &mut [f32], h: usize, n: &Norm, eps: f32) {
    #[inline(always)]
    fn body(x: &mut [f32], h: usize, n: &Norm, eps: f32) {
        for row in x.chunks_exact_mut(h) {
            // Eight partial sums, so the loops vectorize.
            let mut acc = [0f32; 8];
            for c in row.chunks_exact(8) {
                for l in 0..8 {
                    acc[l] += c[l];
                }
            }
            let mean = acc.iter().sum::<f32>() / h as f32;
            let mut acc = [0f32; 8];
            for c in row.chunks_exact(8) {
                for l in 0..8 {
                    let d = c[l] - mean;
                    acc[l] = d.mul_add(d, acc[l]);
                }
            }
            let var = acc.iter().sum::<f32>() / h as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((x, w), b) in row.iter_mut().zip(&n.weight).zip(&n.bias) {
                *x = ((*x - mean) * inv).mul_add(*w, *b);
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn avx2(x: &mut [f32], h: usize, n: &Norm, eps: f32) {
        body(x, h, n, eps)
    }
    // The partial sums cover whole rows only when h is a multiple of 8 (new() requires 32).
    assert!(h.is_multiple_of(8), "layer_norm: width {h}");
    par_rows(x, h, |x| {
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: `fast` only where AVX2, FMA and F16C were detected.
            return unsafe { avx2(x, h, n, eps) };
        }
        body(x, h, n, eps)
    });
}

/// Attention of one sequence of `n` tokens (rows of `h` = `heads` × head width in `q`, `k`,
/// `v`), all heads, into `out`.
#[allow(clippy::too_many_arguments)]
fn attend(
    fast: bool,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    h: usize,
    heads: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn avx2(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        n: usize,
        h: usize,
        heads: usize,
        o: &mut [f32],
    ) {
        attend_heads(true, q, k, v, n, h, heads, o)
    }
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: `fast` only where AVX2, FMA and F16C were detected.
        return unsafe { avx2(q, k, v, n, h, heads, out) };
    }
    let _ = fast;
    attend_heads(false, q, k, v, n, h, heads, out)
}

/// Keys per block of scores: a query's scores for 32 keys stay in four AVX2 registers while
/// the head's dimensions go by.
const KEYS: usize = 32;

/// The body of [`attend`]; `simd`: inlined into a function compiled with AVX2 and FMA, so the
/// intrinsics may run.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend_heads(
    simd: bool,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    h: usize,
    heads: usize,
    out: &mut [f32],
) {
    let hd = h / heads;
    let scale = 1.0 / (hd as f32).sqrt();
    // Per head: keys transposed (hd × padded n, zeros past n) so a block of scores is hd
    // broadcast FMAs; values gathered (n × hd). Queries go two at a time (the key loads
    // shared; scores for both in `s`, np apart).
    let np = n.next_multiple_of(KEYS);
    let mut kt = vec![0f32; hd * np];
    let mut vh = vec![0f32; n * hd];
    let mut s = vec![0f32; 2 * np];
    for head in 0..heads {
        let c0 = head * hd;
        for j in 0..n {
            for d in 0..hd {
                kt[d * np + j] = k[j * h + c0 + d];
            }
            vh[j * hd..(j + 1) * hd].copy_from_slice(&v[j * h + c0..j * h + c0 + hd]);
        }
        for i in (0..n).step_by(2) {
            let pair = (n - i).min(2);
            let (s0, s1) = s.split_at_mut(np);
            let q0 = &q[i * h + c0..][..hd];
            let q1 = &q[(i + pair - 1) * h + c0..][..hd];
            #[cfg(target_arch = "x86_64")]
            if simd {
                // SAFETY: inside a function compiled with AVX2, FMA and F16C, run where they
                // were detected; kt holds hd rows of np (a multiple of KEYS), s0 and s1 np.
                unsafe { scores2_avx2(q0, q1, &kt, np, scale, s0, s1) };
            }
            if !simd {
                scores2(q0, q1, &kt, np, scale, s0, s1);
            }
            for (r, s) in [s0, s1].into_iter().take(pair).enumerate() {
                // Keys past n weigh nothing.
                s[n..].iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
                let o = &mut out[(i + r) * h + c0..][..hd];
                #[cfg(target_arch = "x86_64")]
                if simd && hd == 32 {
                    // SAFETY: as above; s holds np (a multiple of 8) scores, vh n rows of 32.
                    unsafe {
                        let inv = softmax_avx2(s);
                        weighted_sum32_avx2(&s[..n], &vh, inv, o);
                    }
                    continue;
                }
                let inv = softmax(s);
                let s = &s[..n];
                match hd {
                    32 => weighted_sum::<32>(s, &vh, o),
                    64 => weighted_sum::<64>(s, &vh, o),
                    _ => {
                        o.iter_mut().for_each(|o| *o = 0.0);
                        for (&p, vj) in s.iter().zip(vh.chunks_exact(hd)) {
                            o.iter_mut()
                                .zip(vj)
                                .for_each(|(o, v)| *o = p.mul_add(*v, *o));
                        }
                    }
                }
                o.iter_mut().for_each(|o| *o *= inv);
            }
        }
    }
}

/// The scores of two queries against every key (`s0`, `s1`), in blocks of [`KEYS`] keys held
/// in registers while the head's dimensions go by.
#[inline(always)]
fn scores2(
    q0: &[f32],
    q1: &[f32],
    kt: &[f32],
    np: usize,
    scale: f32,
    s0: &mut [f32],
    s1: &mut [f32],
) {
    for jb in (0..np).step_by(KEYS) {
        let (mut a, mut b) = ([0f32; KEYS], [0f32; KEYS]);
        for (d, (&x0, &x1)) in q0.iter().zip(q1).enumerate() {
            let kd = &kt[d * np + jb..][..KEYS];
            for l in 0..KEYS {
                a[l] = x0.mul_add(kd[l], a[l]);
                b[l] = x1.mul_add(kd[l], b[l]);
            }
        }
        for l in 0..KEYS {
            s0[jb + l] = a[l] * scale;
            s1[jb + l] = b[l] * scale;
        }
    }
}

/// [`scores2`] in AVX2 registers: eight accumulators, each key load used twice.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn scores2_avx2(
    q0: &[f32],
    q1: &[f32],
    kt: &[f32],
    np: usize,
    scale: f32,
    s0: &mut [f32],
    s1: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(np.is_multiple_of(KEYS) && kt.len() >= q0.len() * np);
    debug_assert!(s0.len() >= np && s1.len() >= np && q1.len() == q0.len());
    let sc = _mm256_set1_ps(scale);
    let k = kt.as_ptr();
    for jb in (0..np).step_by(KEYS) {
        let mut a = [_mm256_setzero_ps(); 4];
        let mut b = [_mm256_setzero_ps(); 4];
        for d in 0..q0.len() {
            let (x0, x1) = (_mm256_set1_ps(q0[d]), _mm256_set1_ps(q1[d]));
            let kd = k.add(d * np + jb);
            for l in 0..4 {
                let kv = _mm256_loadu_ps(kd.add(8 * l));
                a[l] = _mm256_fmadd_ps(x0, kv, a[l]);
                b[l] = _mm256_fmadd_ps(x1, kv, b[l]);
            }
        }
        for l in 0..4 {
            _mm256_storeu_ps(s0.as_mut_ptr().add(jb + 8 * l), _mm256_mul_ps(a[l], sc));
            _mm256_storeu_ps(s1.as_mut_ptr().add(jb + 8 * l), _mm256_mul_ps(b[l], sc));
        }
    }
}

/// `s = exp(s - max s)` in place (a multiple of 8 long); returns `1 / Σ s`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn softmax_avx2(s: &mut [f32]) -> f32 {
    use std::arch::x86_64::*;
    debug_assert!(s.len().is_multiple_of(8));
    let p = s.as_mut_ptr();
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in (0..s.len()).step_by(8) {
        m = _mm256_max_ps(m, _mm256_loadu_ps(p.add(c)));
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), m);
    let max = _mm256_set1_ps(lanes.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)));
    let mut sum = _mm256_setzero_ps();
    for c in (0..s.len()).step_by(8) {
        let e = crate::engine::vmath::avx2::exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(c)), max));
        _mm256_storeu_ps(p.add(c), e);
        sum = _mm256_add_ps(sum, e);
    }
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
    1.0 / lanes.iter().sum::<f32>()
}

/// `s = exp(s - max s)` in place; returns `1 / Σ s`. Eight-lane partial maxima and sums so
/// it vectorizes.
#[inline(always)]
fn softmax(s: &mut [f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] = acc[l].max(c[l]);
        }
    }
    let mut max = acc.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for &r in chunks.remainder() {
        max = max.max(r);
    }
    let mut acc = [0f32; 8];
    let mut chunks = s.chunks_exact_mut(8);
    for c in &mut chunks {
        for l in 0..8 {
            c[l] = crate::engine::vmath::exp(c[l] - max);
            acc[l] += c[l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for r in chunks.into_remainder() {
        *r = crate::engine::vmath::exp(*r - max);
        sum += *r;
    }
    1.0 / sum
}

/// `o = scale · Σⱼ p[j] v[j]` for rows of 32 values (`v.len() >= 32 * p.len()`), eight
/// accumulators in registers.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn weighted_sum32_avx2(p: &[f32], v: &[f32], scale: f32, o: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert!(v.len() >= 32 * p.len() && o.len() >= 32);
    let vp = v.as_ptr();
    let mut a = [_mm256_setzero_ps(); 4];
    let mut b = [_mm256_setzero_ps(); 4];
    let mut j = 0;
    while j + 2 <= p.len() {
        let (p0, p1) = (_mm256_set1_ps(p[j]), _mm256_set1_ps(p[j + 1]));
        let (r0, r1) = (vp.add(j * 32), vp.add(j * 32 + 32));
        for l in 0..4 {
            a[l] = _mm256_fmadd_ps(p0, _mm256_loadu_ps(r0.add(8 * l)), a[l]);
            b[l] = _mm256_fmadd_ps(p1, _mm256_loadu_ps(r1.add(8 * l)), b[l]);
        }
        j += 2;
    }
    if j < p.len() {
        let p0 = _mm256_set1_ps(p[j]);
        let r0 = vp.add(j * 32);
        for (l, a) in a.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(p0, _mm256_loadu_ps(r0.add(8 * l)), *a);
        }
    }
    let sc = _mm256_set1_ps(scale);
    for (l, (a, b)) in a.iter().zip(&b).enumerate() {
        _mm256_storeu_ps(
            o.as_mut_ptr().add(8 * l),
            _mm256_mul_ps(_mm256_add_ps(*a, *b), sc),
        );
    }
}

/// `o = Σⱼ p[j] v[j]` for rows of `HD` values, with two sets of accumulators (even and odd
/// keys) held in registers so the FMA chains overlap.
#[inline(always)]
fn weighted_sum<const HD: usize>(p: &[f32], v: &[f32], o: &mut [f32]) {
    let (mut even, mut odd) = ([0f32; HD], [0f32; HD]);
    let mut pairs = p.chunks_exact(2).zip(v.chunks_exact(2 * HD));
    for (pp, vv) in &mut pairs {
        for l in 0..HD {
            even[l] = pp[0].mul_add(vv[l], even[l]);
            odd[l] = pp[1].mul_add(vv[HD + l], odd[l]);
        }
    }
    if p.len() % 2 == 1 {
        let (last, vl) = (p[p.len() - 1], &v[(p.len() - 1) * HD..][..HD]);
        for l in 0..HD {
            even[l] = last.mul_add(vl[l], even[l]);
        }
    }
    for l in 0..HD {
        o[l] = even[l] + odd[l];
    }
}
