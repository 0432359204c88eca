//! Weight matrices and their products: a [`QMatrix`] holds one GGUF weight matrix (blocks as
//! stored, the eight-row interleaved layout for the 32-element formats, or dense f32), and
//! [`matmul_many`] multiplies several of them by the same quantized input ([`Input`], made by
//! [`quantize`]) in one parallel pass, rows split over rayon's pool. The K-quants run the
//! row kernels ([`super::quant::vec_dot_rows`] for one token, [`super::quant::vec_dot_tile`]
//! for many); the interleaved formats [`super::quant::gemm_x8`] for any number of tokens.
use rayon::prelude::*;

use super::quant::{self, BlockQ8, QType};
use crate::error::{ModelError, Result};

/// A weight matrix of `rows × cols`, row-major, each row stored as GGUF blocks of its type, or
/// as f32 for types without a kernel (dequantized at load).
pub struct QMatrix {
    ty: QType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: Store,
}

enum Store {
    Blocks(Vec<u8>),
    /// Rows interleaved eight at a time ([`quant::repack_x8`]): every block format whose
    /// matrix has a multiple of 8 rows.
    X8(Vec<u8>),
    Dense(Vec<f32>),
}

impl QMatrix {
    /// A matrix from GGUF bytes of type `ty` (anything but F32/F16, which go through
    /// [`QMatrix::dense`]).
    pub fn blocks(ty: QType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        if !cols.is_multiple_of(ty.block_elems()) || !cols.is_multiple_of(32) {
            return Err(ModelError::InvalidInput(format!(
                "a {ty:?} matrix needs rows that are a multiple of {} elements; this one has {cols}",
                ty.block_elems().max(32)
            )));
        }
        let row_bytes = ty.row_bytes(cols);
        if data.len() != rows * row_bytes {
            return Err(ModelError::InvalidInput(format!(
                "{ty:?} matrix {rows}×{cols}: {} bytes, expected {}",
                data.len(),
                rows * row_bytes
            )));
        }
        let data = if quant::has_x8(ty) && rows.is_multiple_of(8) {
            Store::X8(quant::repack_x8(ty, data, rows, cols))
        } else {
            Store::Blocks(data)
        };
        Ok(Self {
            ty,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// A dense f32 matrix (`data.len() == rows * cols`).
    pub fn dense(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), rows * cols, "dense matrix {rows}×{cols}");
        Self {
            ty: QType::F32,
            rows,
            cols,
            row_bytes: cols * 4,
            data: Store::Dense(data),
        }
    }

    /// Number of rows (outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The storage type.
    pub fn qtype(&self) -> QType {
        self.ty
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match &self.data {
            Store::Blocks(b) | Store::X8(b) => b.len(),
            Store::Dense(d) => 4 * d.len(),
        }
    }

    /// Row `r` as f32 (the token-embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        match &self.data {
            Store::Blocks(b) => quant::dequantize_row(
                self.ty,
                &b[r * self.row_bytes..(r + 1) * self.row_bytes],
                out,
            ),
            Store::X8(p) => {
                quant::dequantize_row(self.ty, &quant::x8_row(self.ty, p, self.cols, r), out)
            }
            Store::Dense(d) => out.copy_from_slice(&d[r * self.cols..(r + 1) * self.cols]),
        }
    }

    /// `y[i * rows + r] = W[r] · x[i]` for the `x.t` input rows.
    pub fn matmul(&self, x: &Input<'_>, y: &mut [f32]) {
        matmul_many(&[self], x, &mut [y]);
    }

    /// Rows `r0..r1` of the product into `out` (`t × rows`, row-major); `units`, `x` with
    /// one scale per 256 columns where Q6_K takes it so (see [`matmul_many`]), else empty.
    fn rows_into(&self, x: &Input<'_>, units: &[BlockQ8], r0: usize, r1: usize, out: SyncPtr) {
        let t = x.t;
        let rows = self.rows;
        match &self.data {
            Store::Blocks(b) => {
                let nb = self.cols / 32;
                let act = |i: usize| &x.q[i * nb..(i + 1) * nb];
                // Tokens in tiles whose activations stay in L1 (~16 KiB) while each weight
                // row of the task is read once per tile and used for every token of it.
                let act_bytes = nb * std::mem::size_of::<BlockQ8>();
                let tile = ((16 << 10) / act_bytes.max(1)).max(4) / 4 * 4;
                if t == 1 {
                    // SAFETY: the task owns rows r0..r1 of the single output row.
                    let o = unsafe { std::slice::from_raw_parts_mut(out.0.add(r0), r1 - r0) };
                    let w = &b[r0 * self.row_bytes..r1 * self.row_bytes];
                    quant::vec_dot_rows(self.ty, w, act(0), o);
                    return;
                }
                let w = &b[r0 * self.row_bytes..r1 * self.row_bytes];
                tiles(t, tile, r0, r1, rows, out, |t0, t1, part| {
                    quant::vec_dot_tile(self.ty, w, &x.q[t0 * nb..t1 * nb], self.cols, part)
                });
            }
            Store::X8(p) => {
                // Row ranges start and end on groups of eight (see matmul_many).
                let nb = self.cols / 32;
                let q = if self.ty == QType::Q6K && !units.is_empty() {
                    units
                } else {
                    x.q
                };
                let gb = quant::x8_group_bytes(self.ty, self.cols);
                let w = &p[r0 / 8 * gb..r1 / 8 * gb];
                let n = r1 - r0;
                if t == 1 {
                    // SAFETY: the task owns rows r0..r1 of the single output row.
                    let o = unsafe { std::slice::from_raw_parts_mut(out.0.add(r0), n) };
                    quant::gemm_x8(self.ty, w, q, self.cols, o);
                    return;
                }
                // Tiles of one run of the x8 kernels (256 tokens, a prefill slice), each
                // against all the task's rows.
                const TILE: usize = 256;
                let mut t0 = 0;
                while t0 < t {
                    let t1 = (t0 + TILE).min(t);
                    // SAFETY: tasks own disjoint row ranges, so cells (i, r0..r1) of tokens
                    // t0..t1 are written by this task only, and they lie inside the output.
                    unsafe {
                        quant::gemm_x8_strided(
                            self.ty,
                            w,
                            &q[t0 * nb..t1 * nb],
                            self.cols,
                            out.0.add(t0 * rows + r0),
                            rows,
                        )
                    };
                    t0 = t1;
                }
            }
            Store::Dense(d) => {
                for i in 0..t {
                    let a = &x.f[i * self.cols..(i + 1) * self.cols];
                    for r in r0..r1 {
                        let w = &d[r * self.cols..(r + 1) * self.cols];
                        // SAFETY: as above.
                        unsafe { *out.0.add(i * rows + r) = quant::dot_f32(w, a) };
                    }
                }
            }
        }
    }
}

/// Run `kernel(t0, t1, part)` over the tokens `0..t` in tiles of `tile`, `part` holding the
/// tile's rows `r0..r1` (tokens × rows), and copy each part into those columns of `out` (`t ×
/// rows`, row-major).
fn tiles(
    t: usize,
    tile: usize,
    r0: usize,
    r1: usize,
    rows: usize,
    out: SyncPtr,
    mut kernel: impl FnMut(usize, usize, &mut [f32]),
) {
    let n = r1 - r0;
    let mut part = vec![0f32; tile.min(t) * n];
    let mut t0 = 0;
    while t0 < t {
        let t1 = (t0 + tile).min(t);
        let part = &mut part[..(t1 - t0) * n];
        kernel(t0, t1, part);
        for (i, p) in (t0..t1).zip(part.chunks_exact(n)) {
            // SAFETY: tasks own disjoint row ranges, so cells (i, r0..r1) are written by this
            // task only, and they lie inside the output.
            unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), out.0.add(i * rows + r0), n) };
        }
        t0 = t1;
    }
}

/// Several products of the same input in one parallel pass (q, k and v; gate and up): one
/// dispatch to the threads instead of one per matrix, which matters for single-token steps.
pub fn matmul_many(mats: &[&QMatrix], x: &Input<'_>, ys: &mut [&mut [f32]]) {
    assert_eq!(mats.len(), ys.len());
    let threads = rayon::current_num_threads();
    let total_rows: usize = mats.iter().map(|m| m.rows).sum();
    // Enough chunks per thread that a thread slowed by other load does not hold up the rest,
    // few enough that scheduling stays cheap.
    // A multiple of 8: interleaved matrices split only between groups of eight rows. With
    // several tokens, a multiple of 32: the x8 kernels then run every group of eight in a set
    // of four (a lone group shares no broadcasts; with 2 threads, 72-row chunks of the
    // 576-row matrices left one in nine groups alone).
    let align = if x.t >= 4 { 32 } else { 8 };
    let chunk = total_rows
        .div_ceil(threads * 4)
        .max(16)
        .next_multiple_of(align);
    let mut tasks = Vec::new(); // (matrix, r0, r1)
    for (mi, (m, y)) in mats.iter().zip(ys.iter()).enumerate() {
        assert_eq!(x.cols, m.cols, "matmul input width");
        assert_eq!(y.len(), x.t * m.rows, "matmul output size");
        let mut r = 0;
        while r < m.rows {
            let e = (r + chunk).min(m.rows);
            tasks.push((mi, r, e));
            r = e;
        }
    }
    // Q6_K's units forms take activations with one scale per 256 columns
    // (`quant::q6k_units`): made here, once for the matrices of the call that take them.
    let mut units = Vec::new();
    let takes_units = |m: &&QMatrix| m.ty == QType::Q6K && matches!(m.data, Store::X8(_));
    if quant::q6k_units() && mats.iter().any(takes_units) {
        units.resize(x.q.len(), BlockQ8::default());
        quantize_rows(x.f, x.cols, &mut units, quant::quantize_row_q8_units);
    }
    let outs: Vec<SyncPtr> = ys.iter_mut().map(|y| SyncPtr(y.as_mut_ptr())).collect();
    let run =
        |&(mi, r0, r1): &(usize, usize, usize)| mats[mi].rows_into(x, &units, r0, r1, outs[mi]);
    if tasks.len() <= 1 || threads <= 1 {
        tasks.iter().for_each(run);
    } else {
        tasks.par_iter().for_each(run);
    }
}

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: used only to write disjoint cells from parallel tasks (see QMatrix::matmul).
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

/// Each row of `cols` values of `x` into its part of `q` by `f`, rows in parallel from 8 on.
fn quantize_rows(x: &[f32], cols: usize, q: &mut [BlockQ8], f: fn(&[f32], &mut [BlockQ8])) {
    let nb = cols / 32;
    if x.len() / cols >= 8 {
        q.par_chunks_mut(nb)
            .zip(x.par_chunks(cols))
            .for_each(|(q, x)| f(x, q));
    } else {
        for (q, x) in q.chunks_mut(nb).zip(x.chunks(cols)) {
            f(x, q);
        }
    }
}

/// The input of a matrix product: `t` rows of `cols` values, as f32 and quantized.
pub struct Input<'a> {
    f: &'a [f32],
    q: &'a [BlockQ8],
    t: usize,
    cols: usize,
}

/// Quantize `t` rows of `cols` f32 values into `q` (resized) and return them as an [`Input`].
pub fn quantize<'a>(x: &'a [f32], cols: usize, q: &'a mut Vec<BlockQ8>) -> Input<'a> {
    let t = x.len() / cols;
    q.resize(t * (cols / 32), BlockQ8::default());
    quantize_rows(x, cols, q, quant::quantize_row_q8);
    Input { f: x, q, t, cols }
}
