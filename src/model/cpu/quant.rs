//! Quantized dot-product kernels (the inner loops of a llama.cpp-style CPU matmul).
//!
//! Weights stay in their GGUF block format (one row of `cols` elements is `cols /
//! block_elems` consecutive blocks, see [`QType`]); activations are quantized to 8 bits per
//! 32-element block ([`BlockQ8`], via [`quantize_row_q8`]), and the dot products run in
//! integers per block, scaled in f32.
//!
//! Two implementations: AVX2 + FMA + F16C (x86_64 only, detected at run time, never assumed
//! at compile time) and a portable scalar reference. [`kernels`] says which is in use;
//! [`set_kernels`] or `RAG_KERNELS=scalar` (read at first use) forces the scalar one. The
//! `*_with` variants take the choice explicitly (tests and benchmarks compare the two).
//!
//! The scalar kernels are bit-identical to the AVX2 ones: [`vec_dot`], [`vec_dot_x4`],
//! [`dot_f32`] and [`quantize_row_q8`] return the same bits with either. The
//! scalar code performs the same floating-point operations in the same order (the integer
//! partial sums grouped into the same 8 lanes, each FMA'd with `f32::mul_add` into the same
//! accumulator with the same scale product, the same horizontal-sum tree, the same
//! correction terms in the same order); only the exact integer arithmetic is organised
//! differently, including the i16 saturation of `maddubs`, so this holds for any activation
//! block, not only those [`quantize_row_q8`] writes. That is what lets a whole forward pass
//! (where a 1-ulp difference would flip an activation's rounding and compound) run on the
//! scalar reference and be compared with the fast one token for token, tolerance 0. Keep it
//! so: a change to the float order of one implementation must be made in the other (the
//! tests compare `to_bits()`). Each row of [`vec_dot_x4`] is also bit-identical to
//! [`vec_dot`] of that row alone, as is each cell of [`vec_dot_tile`]. The same holds, each
//! with its own float order, for [`gemm_x8`] (the matrix kernel of rows regrouped by
//! [`repack_x8`], whose results for a token do not depend on the other tokens of the call);
//! attention lives in [`super::attn`], under the same rule.
//!
//! F32 and F16 weight rows: [`vec_dot`] accepts them (against the dequantized activation,
//! scalar, slow), but the forward pass should instead dequantize such rows with
//! [`dequantize_row`] (or read F32 directly) and use [`dot_f32`] against the unquantized
//! activation, which is both faster and exact.

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::quantized::GgmlDType;

/// A weight row's storage type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl QType {
    /// All supported types.
    pub const ALL: [QType; 10] = [
        QType::F32,
        QType::F16,
        QType::Q4_0,
        QType::Q4_1,
        QType::Q5_0,
        QType::Q5_1,
        QType::Q8_0,
        QType::Q4K,
        QType::Q5K,
        QType::Q6K,
    ];

    /// The kernel type for a GGML tensor type; `None` when unsupported (BF16, Q8_1, Q2K,
    /// Q3K, Q8K).
    pub fn from_ggml(t: GgmlDType) -> Option<QType> {
        Some(match t {
            GgmlDType::F32 => QType::F32,
            GgmlDType::F16 => QType::F16,
            GgmlDType::Q4_0 => QType::Q4_0,
            GgmlDType::Q4_1 => QType::Q4_1,
            GgmlDType::Q5_0 => QType::Q5_0,
            GgmlDType::Q5_1 => QType::Q5_1,
            GgmlDType::Q8_0 => QType::Q8_0,
            GgmlDType::Q4K => QType::Q4K,
            GgmlDType::Q5K => QType::Q5K,
            GgmlDType::Q6K => QType::Q6K,
            _ => return None,
        })
    }

    /// The matching GGML type.
    pub fn to_ggml(self) -> GgmlDType {
        match self {
            QType::F32 => GgmlDType::F32,
            QType::F16 => GgmlDType::F16,
            QType::Q4_0 => GgmlDType::Q4_0,
            QType::Q4_1 => GgmlDType::Q4_1,
            QType::Q5_0 => GgmlDType::Q5_0,
            QType::Q5_1 => GgmlDType::Q5_1,
            QType::Q8_0 => GgmlDType::Q8_0,
            QType::Q4K => GgmlDType::Q4K,
            QType::Q5K => GgmlDType::Q5K,
            QType::Q6K => GgmlDType::Q6K,
        }
    }

    /// Elements per block: 1 for F32/F16, 32 for the simple quants, 256 for the K-quants.
    pub fn block_elems(self) -> usize {
        match self {
            QType::F32 | QType::F16 => 1,
            QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q5_1 | QType::Q8_0 => 32,
            QType::Q4K | QType::Q5K | QType::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            QType::F32 => 4,
            QType::F16 => 2,
            QType::Q4_0 => 18,
            QType::Q4_1 => 20,
            QType::Q5_0 => 22,
            QType::Q5_1 => 24,
            QType::Q8_0 => 34,
            QType::Q4K => 144,
            QType::Q5K => 176,
            QType::Q6K => 210,
        }
    }

    /// Bytes in a row of `cols` elements. Panics unless `cols` is a multiple of
    /// [`block_elems`](Self::block_elems).
    pub fn row_bytes(self, cols: usize) -> usize {
        let be = self.block_elems();
        assert!(
            cols.is_multiple_of(be),
            "{self:?} row of {cols} elements: not a multiple of {be}"
        );
        cols / be * self.block_bytes()
    }
}

/// One 32-element block of a quantized activation row. d = scale, s = d * sum(qs),
/// qs = round(x/d) (ties to even), |qs| <= 127.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct BlockQ8 {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; 32],
}

/// Which kernel implementation runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    Avx2,
    Scalar,
}

/// Whether this CPU has AVX2, FMA and F16C (detected once).
pub fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// 0 = not chosen yet, 1 = AVX2, 2 = scalar.
static CHOSEN: AtomicU8 = AtomicU8::new(0);

fn code(k: Kernels) -> u8 {
    match k {
        Kernels::Avx2 => 1,
        Kernels::Scalar => 2,
    }
}

/// `k` if it can run here, else scalar.
pub(crate) fn effective(k: Kernels) -> Kernels {
    if k == Kernels::Avx2 && avx2_available() {
        Kernels::Avx2
    } else {
        Kernels::Scalar
    }
}

/// The kernels in use: AVX2 when detected, unless `RAG_KERNELS=scalar` was set at first use
/// or [`set_kernels`] chose otherwise.
pub fn kernels() -> Kernels {
    match CHOSEN.load(Ordering::Relaxed) {
        1 => Kernels::Avx2,
        2 => Kernels::Scalar,
        _ => {
            let forced_scalar = std::env::var("RAG_KERNELS")
                .map(|v| v.trim().eq_ignore_ascii_case("scalar"))
                .unwrap_or(false);
            let k = if forced_scalar {
                Kernels::Scalar
            } else {
                effective(Kernels::Avx2)
            };
            let _ = CHOSEN.compare_exchange(0, code(k), Ordering::Relaxed, Ordering::Relaxed);
            if CHOSEN.load(Ordering::Relaxed) == 1 {
                Kernels::Avx2
            } else {
                Kernels::Scalar
            }
        }
    }
}

/// Force the kernels. `Scalar` always works; `Avx2` is ignored (scalar is used) where AVX2,
/// FMA and F16C are not all detected. Returns what is in use afterwards.
pub fn set_kernels(k: Kernels) -> Kernels {
    let k = effective(k);
    CHOSEN.store(code(k), Ordering::Relaxed);
    k
}

// ---------------------------------------------------------------------------------------
// Public entry points.

/// Quantize `x` (length `32 * out.len()`) to 8-bit blocks.
pub fn quantize_row_q8(x: &[f32], out: &mut [BlockQ8]) {
    quantize_row_q8_with(kernels(), x, out)
}

/// [`quantize_row_q8`] with explicit kernels.
pub fn quantize_row_q8_with(k: Kernels, x: &[f32], out: &mut [BlockQ8]) {
    assert_eq!(x.len(), 32 * out.len(), "quantize_row_q8: length mismatch");
    match effective(k) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: effective() returned Avx2 only where the features were detected.
        Kernels::Avx2 => unsafe { avx2::quantize_row_q8(x, out) },
        _ => scalar::quantize_row_q8(x, out),
    }
}

/// Dequantize a weight row (`row.len() == ty.row_bytes(out.len())`) to f32; bit-identical to
/// GGML's / candle's dequantization.
pub fn dequantize_row(ty: QType, row: &[u8], out: &mut [f32]) {
    assert_eq!(
        row.len(),
        ty.row_bytes(out.len()),
        "dequantize_row: {ty:?} row of {} bytes for {} elements",
        row.len(),
        out.len()
    );
    scalar::dequantize_row(ty, row, out)
}

fn check_row(ty: QType, row: &[u8], act: &[BlockQ8]) {
    assert_eq!(
        row.len(),
        ty.row_bytes(32 * act.len()),
        "vec_dot: {ty:?} row of {} bytes against {} activation blocks",
        row.len(),
        act.len()
    );
}

/// dot(weight row, activation row). `row.len() == ty.row_bytes(cols)`,
/// `act.len() == cols / 32`. F32/F16 rows work but slowly (see the module docs).
pub fn vec_dot(ty: QType, row: &[u8], act: &[BlockQ8]) -> f32 {
    vec_dot_with(kernels(), ty, row, act)
}

/// [`vec_dot`] with explicit kernels.
pub fn vec_dot_with(k: Kernels, ty: QType, row: &[u8], act: &[BlockQ8]) -> f32 {
    check_row(ty, row, act);
    match effective(k) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features detected (effective); lengths checked above.
        Kernels::Avx2 => unsafe { avx2::vec_dot::<1>(ty, row, [act])[0] },
        _ => scalar::vec_dot(ty, row, [act])[0],
    }
}

/// `out[r] = dot(weight row r, act)` for the `out.len()` consecutive rows in `rows`: the
/// matrix-vector inner loop, with the length check and the kernel choice made once for all rows.
/// Bit-identical to [`vec_dot`] on each row.
pub fn vec_dot_rows(ty: QType, rows: &[u8], act: &[BlockQ8], out: &mut [f32]) {
    let rb = ty.row_bytes(32 * act.len());
    assert_eq!(
        rows.len(),
        rb * out.len(),
        "vec_dot_rows: {} bytes for {} {ty:?} rows of {rb} bytes",
        rows.len(),
        out.len()
    );
    match effective(kernels()) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features detected (effective); every row has act's length.
        Kernels::Avx2 => unsafe { avx2::rows(ty, rows, rb, act, out) },
        _ => {
            for (row, o) in rows.chunks_exact(rb).zip(out) {
                *o = scalar::vec_dot(ty, row, [act])[0];
            }
        }
    }
}

/// The matrix-matrix tile: `out[i * R + r] = dot(weight row r, activation row i)` for the R
/// rows in `rows` and the T rows of `cols / 32` blocks in `acts` (`out.len() == T * R`). Four
/// activation rows share each unpacked weight block ([`vec_dot_x4`]); one length check and one
/// kernel choice serve the whole tile. Bit-identical to [`vec_dot`] on each cell.
pub fn vec_dot_tile(ty: QType, rows: &[u8], acts: &[BlockQ8], cols: usize, out: &mut [f32]) {
    vec_dot_tile_with(kernels(), ty, rows, acts, cols, out)
}

/// [`vec_dot_tile`] with explicit kernels.
pub fn vec_dot_tile_with(
    k: Kernels,
    ty: QType,
    rows: &[u8],
    acts: &[BlockQ8],
    cols: usize,
    out: &mut [f32],
) {
    let nb = cols / 32;
    let rb = ty.row_bytes(cols);
    assert!(
        cols.is_multiple_of(32)
            && nb > 0
            && rows.len().is_multiple_of(rb)
            && acts.len().is_multiple_of(nb),
        "vec_dot_tile: {} bytes of {ty:?} rows and {} blocks for {cols} columns",
        rows.len(),
        acts.len()
    );
    let (r_n, t_n) = (rows.len() / rb, acts.len() / nb);
    assert_eq!(out.len(), r_n * t_n, "vec_dot_tile: output size");
    match effective(k) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features detected (effective); every row and activation row has `nb` blocks.
        Kernels::Avx2 => unsafe { avx2::tile(ty, rows, rb, acts, nb, out) },
        _ => {
            let act = |i: usize| &acts[i * nb..(i + 1) * nb];
            for (r, w) in rows.chunks_exact(rb).enumerate() {
                let mut i = 0;
                while i + 4 <= t_n {
                    let d = scalar::vec_dot(ty, w, [act(i), act(i + 1), act(i + 2), act(i + 3)]);
                    for (j, v) in d.into_iter().enumerate() {
                        out[(i + j) * r_n + r] = v;
                    }
                    i += 4;
                }
                for i in i..t_n {
                    out[i * r_n + r] = scalar::vec_dot(ty, w, [act(i)])[0];
                }
            }
        }
    }
}

/// Whether [`repack_x8`] handles `ty`: the 32-element formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.
pub fn has_x8(ty: QType) -> bool {
    matches!(
        ty,
        QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q5_1 | QType::Q8_0
    )
}

/// Bytes of one block (32 columns) of eight interleaved rows of `ty` ([`repack_x8`]): the
/// same as eight blocks of `ty`.
pub fn x8_block_bytes(ty: QType) -> usize {
    8 * ty.block_bytes()
}

/// (f16 fields, has the 5th-bit word, bytes of quants) of a block of `ty`.
fn x8_parts(ty: QType) -> (usize, bool, usize) {
    match ty {
        QType::Q4_0 => (1, false, 16),
        QType::Q4_1 => (2, false, 16),
        QType::Q5_0 => (1, true, 16),
        QType::Q5_1 => (2, true, 16),
        QType::Q8_0 => (1, false, 32),
        _ => unreachable!("x8 layout for {ty:?}"),
    }
}

/// Rows of a 32-element block format regrouped eight at a time for [`gemm_x8`]. For each
/// group of eight rows and each 32-column block: each f16 field (the scale, then for Q4_1 /
/// Q5_1 the minimum) of the eight rows; for Q5_0 / Q5_1, eight 32-bit words, word `k` holding
/// the fifth bits of columns `4k..4k + 4` of all eight rows (row `r`'s at bits `4r..4r + 4`);
/// then the quant bytes in 32-byte chunks, chunk `m` holding bytes `4m..4m + 4` of each row
/// (row `r` at bytes `4r..4r + 4`). The same size as the input, and done in place (a group of
/// eight rows occupies the same bytes before and after), so loading needs no second copy of
/// a matrix; `rows` must be a multiple of 8.
pub fn repack_x8(ty: QType, mut data: Vec<u8>, rows: usize, cols: usize) -> Vec<u8> {
    let (nb, bb, xb) = (cols / 32, ty.block_bytes(), x8_block_bytes(ty));
    assert!(
        has_x8(ty)
            && rows.is_multiple_of(8)
            && cols.is_multiple_of(32)
            && data.len() == rows * nb * bb,
        "repack_x8: {} bytes of {ty:?} for {rows}x{cols}",
        data.len()
    );
    let (nf, five, nq) = x8_parts(ty);
    let (qh_at, qs_at) = (2 * nf, bb - nq); // in a source block
    let chunks_at = 16 * nf + if five { 32 } else { 0 }; // in an x8 block
    let mut group = vec![0u8; 8 * nb * bb];
    for g in 0..rows / 8 {
        let span = g * 8 * nb * bb..(g + 1) * 8 * nb * bb;
        group.copy_from_slice(&data[span.clone()]);
        let out = &mut data[span];
        out.fill(0);
        for b in 0..nb {
            let o = &mut out[b * xb..][..xb];
            for r in 0..8 {
                let src = &group[(r * nb + b) * bb..][..bb];
                for f in 0..nf {
                    o[16 * f + 2 * r..16 * f + 2 * r + 2].copy_from_slice(&src[2 * f..2 * f + 2]);
                }
                if five {
                    let qh = u32::from_le_bytes(src[qh_at..qh_at + 4].try_into().unwrap());
                    for k in 0..8 {
                        let at = 16 * nf + 4 * k;
                        let mut w = u32::from_le_bytes(o[at..at + 4].try_into().unwrap());
                        w |= ((qh >> (4 * k)) & 0xF) << (4 * r);
                        o[at..at + 4].copy_from_slice(&w.to_le_bytes());
                    }
                }
                for m in 0..nq / 4 {
                    let at = chunks_at + 32 * m + 4 * r;
                    o[at..at + 4].copy_from_slice(&src[qs_at + 4 * m..qs_at + 4 * m + 4]);
                }
            }
        }
    }
    data
}

/// Row `r` of [`repack_x8`] data back in `ty`'s own block format.
pub fn x8_row(ty: QType, packed: &[u8], cols: usize, r: usize) -> Vec<u8> {
    let (nb, bb, xb) = (cols / 32, ty.block_bytes(), x8_block_bytes(ty));
    let (nf, five, nq) = x8_parts(ty);
    let (qh_at, qs_at) = (2 * nf, bb - nq);
    let chunks_at = 16 * nf + if five { 32 } else { 0 };
    let (g, k) = (r / 8, r % 8);
    let mut row = vec![0u8; nb * bb];
    for b in 0..nb {
        let src = &packed[(g * nb + b) * xb..][..xb];
        let dst = &mut row[b * bb..(b + 1) * bb];
        for f in 0..nf {
            dst[2 * f..2 * f + 2].copy_from_slice(&src[16 * f + 2 * k..16 * f + 2 * k + 2]);
        }
        if five {
            let mut qh = 0u32;
            for j in 0..8 {
                let at = 16 * nf + 4 * j;
                let w = u32::from_le_bytes(src[at..at + 4].try_into().unwrap());
                qh |= ((w >> (4 * k)) & 0xF) << (4 * j);
            }
            dst[qh_at..qh_at + 4].copy_from_slice(&qh.to_le_bytes());
        }
        for m in 0..nq / 4 {
            let at = chunks_at + 32 * m + 4 * k;
            dst[qs_at + 4 * m..qs_at + 4 * m + 4].copy_from_slice(&src[at..at + 4]);
        }
    }
    row
}

/// `out[i * R + r] = dot(row r, activation row i)` for the R = 8 × groups rows of
/// [`repack_x8`] data in `packed` and the T activation rows in `acts` (`cols / 32` blocks
/// each): the matrix kernel of the 32-element formats, for one token as for many. Per block,
/// eight rows' integer sums come out of one register (`maddubs` over four columns of all
/// eight rows at a time, summed in 16 bits as far as the format's range allows), and each
/// row's accumulator takes `fma(sum, d·d_a)`, then `fma(m, s_a)` where the format has an
/// offset or minimum m (-8d for Q4_0, -16d for Q5_0, the block minimum for Q4_1 / Q5_1). The
/// AVX2 and scalar kernels give the same bits, and a token's results do not depend on the
/// other tokens of the call. (The float order differs from [`vec_dot`]'s, so results differ
/// from it in the last bits.)
pub fn gemm_x8(ty: QType, packed: &[u8], acts: &[BlockQ8], cols: usize, out: &mut [f32]) {
    gemm_x8_with(kernels(), ty, packed, acts, cols, out)
}

/// [`gemm_x8`] with explicit kernels.
pub fn gemm_x8_with(
    k: Kernels,
    ty: QType,
    packed: &[u8],
    acts: &[BlockQ8],
    cols: usize,
    out: &mut [f32],
) {
    let (rows, t) = x8_shape(ty, packed, acts, cols);
    assert_eq!(out.len(), rows * t, "gemm_x8: output size");
    // SAFETY: `out` holds the t × rows cells.
    unsafe { gemm_x8_raw(k, ty, packed, acts, cols / 32, out.as_mut_ptr(), rows) }
}

/// [`gemm_x8`] writing token `i`'s results at `out + i * ldo` (`rows` of them): the columns
/// of a wider output, without a copy.
///
/// # Safety
/// For each token `i`, `out + i * ldo .. + rows` must be valid for writes and not accessed
/// by anyone else during the call.
pub unsafe fn gemm_x8_strided(
    ty: QType,
    packed: &[u8],
    acts: &[BlockQ8],
    cols: usize,
    out: *mut f32,
    ldo: usize,
) {
    let (rows, _) = x8_shape(ty, packed, acts, cols);
    assert!(
        ldo >= rows,
        "gemm_x8_strided: stride {ldo} below {rows} rows"
    );
    gemm_x8_raw(kernels(), ty, packed, acts, cols / 32, out, ldo)
}

/// (rows, tokens) of a [`gemm_x8`] call, after checking the sizes.
fn x8_shape(ty: QType, packed: &[u8], acts: &[BlockQ8], cols: usize) -> (usize, usize) {
    let nb = cols / 32;
    let xb = x8_block_bytes(ty);
    assert!(
        has_x8(ty)
            && cols.is_multiple_of(32)
            && nb > 0
            && packed.len().is_multiple_of(nb * xb)
            && acts.len().is_multiple_of(nb),
        "gemm_x8: {} bytes of {ty:?} and {} blocks for {cols} columns",
        packed.len(),
        acts.len()
    );
    (packed.len() / (nb * xb) * 8, acts.len() / nb)
}

/// # Safety
/// Sizes checked by [`x8_shape`]; the output cells as in [`gemm_x8_strided`].
unsafe fn gemm_x8_raw(
    k: Kernels,
    ty: QType,
    packed: &[u8],
    acts: &[BlockQ8],
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    match effective(k) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features detected; sizes checked by the caller.
        Kernels::Avx2 => match ty {
            QType::Q4_0 => avx2::gemm_x8_q45::<false, false>(packed, acts, nb, out, ldo),
            QType::Q4_1 => avx2::gemm_x8_q45::<false, true>(packed, acts, nb, out, ldo),
            QType::Q5_0 => avx2::gemm_x8_q45::<true, false>(packed, acts, nb, out, ldo),
            QType::Q5_1 => avx2::gemm_x8_q45::<true, true>(packed, acts, nb, out, ldo),
            _ => avx2::gemm_x8_q8(packed, acts, nb, out, ldo),
        },
        _ => scalar::gemm_x8(ty, packed, acts, nb, out, ldo),
    }
}

/// One weight row against 4 activation rows at once (each weight block is unpacked once and
/// used 4 times): the prefill / embedding microkernel. Bit-identical to 4 calls of
/// [`vec_dot`].
pub fn vec_dot_x4(ty: QType, row: &[u8], acts: [&[BlockQ8]; 4]) -> [f32; 4] {
    vec_dot_x4_with(kernels(), ty, row, acts)
}

/// [`vec_dot_x4`] with explicit kernels.
pub fn vec_dot_x4_with(k: Kernels, ty: QType, row: &[u8], acts: [&[BlockQ8]; 4]) -> [f32; 4] {
    for a in acts {
        check_row(ty, row, a);
    }
    match effective(k) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features detected (effective); lengths checked above.
        Kernels::Avx2 => unsafe { avx2::vec_dot::<4>(ty, row, acts) },
        _ => scalar::vec_dot(ty, row, acts),
    }
}

/// sum(a[i] * b[i]).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_with(kernels(), a, b)
}

/// [`dot_f32`] with explicit kernels.
pub fn dot_f32_with(k: Kernels, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32: length mismatch");
    match effective(k) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features detected; lengths equal.
        Kernels::Avx2 => unsafe { avx2::dot_f32(a, b) },
        _ => scalar::dot_f32(a, b),
    }
}

/// Keys or values for [`super::attn`]: f32 (a batch without a cache) or f16 (the KV cache), read
/// as f32 (the widening of f16 is exact).
#[derive(Clone, Copy)]
pub enum KvRows<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
}

impl<'a> KvRows<'a> {
    /// The rows from element `at` on.
    pub fn from(self, at: usize) -> KvRows<'a> {
        match self {
            KvRows::F32(x) => KvRows::F32(&x[at..]),
            KvRows::F16(x) => KvRows::F16(&x[at..]),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            KvRows::F32(x) => x.len(),
            KvRows::F16(x) => x.len(),
        }
    }

    /// Elements `at..at + out.len()` as f32.
    pub(crate) fn widen(&self, at: usize, out: &mut [f32]) {
        match self {
            KvRows::F32(x) => out.copy_from_slice(&x[at..at + out.len()]),
            KvRows::F16(x) => {
                let n = out.len();
                for (o, h) in out.iter_mut().zip(&x[at..at + n]) {
                    *o = h.to_f32();
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Shared helpers.

/// IEEE half (little-endian bits) to f32, exact.
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match exp {
        0 => {
            // Zero or subnormal: man * 2^-24, exact in f32.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        31 => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

#[inline]
fn rd_f16(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// The 6-bit (scale, min) pair `j` (0..8) of a Q4_K / Q5_K superblock's 12 scale bytes.
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

// ---------------------------------------------------------------------------------------
// Scalar reference.

// Index loops: they spell out the AVX2 lanes.
#[allow(clippy::needless_range_loop)]
mod scalar {
    use super::{rd_f16, scale_min_k4, BlockQ8, QType};

    /// [`super::gemm_x8`], lane by lane as the AVX2 code.
    ///
    /// # Safety
    /// As [`super::gemm_x8_strided`].
    pub unsafe fn gemm_x8(
        ty: QType,
        packed: &[u8],
        acts: &[BlockQ8],
        nb: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("fma") {
            // SAFETY: FMA detected.
            return fma::gemm_x8(ty, packed, acts, nb, out, ldo);
        }
        gemm_x8_body(ty, packed, acts, nb, out, ldo)
    }

    /// `_mm256_sign_epi8(a, w)` on one byte.
    #[inline(always)]
    fn sign8(a: i8, w: i8) -> i8 {
        match w.signum() {
            1 => a,
            0 => 0,
            _ => a.wrapping_neg(),
        }
    }

    #[inline(always)]
    pub(super) unsafe fn gemm_x8_body(
        ty: QType,
        packed: &[u8],
        acts: &[BlockQ8],
        nb: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        let (nf, five, nq) = super::x8_parts(ty);
        let min = nf == 2;
        let chunks_at = 16 * nf + if five { 32 } else { 0 };
        let bs = super::x8_block_bytes(ty);
        let rows = packed.len() / (nb * bs) * 8;
        let t = acts.len() / nb;
        let off = if five { -16.0 } else { -8.0 };
        let mut acc = vec![[0f32; 8]; t];
        // The eight rows' weights of one block, column by column (Q8_0: signed).
        let mut q = [[0i32; 32]; 8];
        for g in 0..rows / 8 {
            acc.iter_mut().for_each(|a| *a = [0f32; 8]);
            for b in 0..nb {
                let blk = &packed[(g * nb + b) * bs..][..bs];
                let word = |k: usize| {
                    let at = 16 * nf + 4 * k;
                    u32::from_le_bytes(blk[at..at + 4].try_into().unwrap())
                };
                for (r, q) in q.iter_mut().enumerate() {
                    for m in 0..nq / 4 {
                        for c in 0..4 {
                            let x = blk[chunks_at + 32 * m + 4 * r + c];
                            if nq == 32 {
                                q[4 * m + c] = x as i8 as i32;
                                continue;
                            }
                            let (mut lo, mut hi) = ((x & 0x0F) as i32, (x >> 4) as i32);
                            if five {
                                lo |= (((word(m) >> (4 * r + c)) & 1) << 4) as i32;
                                hi |= (((word(4 + m) >> (4 * r + c)) & 1) << 4) as i32;
                            }
                            q[4 * m + c] = lo;
                            q[16 + 4 * m + c] = hi;
                        }
                    }
                }
                for (i, acc) in acc.iter_mut().enumerate() {
                    let a = &acts[i * nb + b];
                    for r in 0..8 {
                        let d = rd_f16(blk, 2 * r);
                        let mut isum = 0i32;
                        if nq == 32 {
                            // Q8_0: |w| against a with w's sign, byte pairs saturated as
                            // maddubs does.
                            let p = |c: usize| {
                                let w = q[r][c] as i8;
                                w.unsigned_abs() as i32 * sign8(a.qs[c], w) as i32
                            };
                            for c in (0..32).step_by(2) {
                                isum += (p(c) + p(c + 1)).clamp(i16::MIN as i32, i16::MAX as i32);
                            }
                            acc[r] = (isum as f32).mul_add(d * a.d, acc[r]);
                            continue;
                        }
                        for c in 0..32 {
                            isum += q[r][c] * a.qs[c] as i32;
                        }
                        let m = if min {
                            rd_f16(blk, 16 + 2 * r)
                        } else {
                            d * off
                        };
                        acc[r] = (isum as f32).mul_add(d * a.d, acc[r]);
                        acc[r] = m.mul_add(a.s, acc[r]);
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                std::ptr::copy_nonoverlapping(acc.as_ptr(), out.add(i * ldo + 8 * g), 8);
            }
        }
    }

    pub fn quantize_row_q8(x: &[f32], out: &mut [BlockQ8]) {
        for (xb, ob) in x.chunks_exact(32).zip(out.iter_mut()) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in ob.qs.iter_mut().zip(xb) {
                *q = (v * id).round_ties_even() as i8;
                sum += *q as i32;
            }
            ob.d = d;
            ob.s = d * sum as f32;
        }
    }

    /// One 32-element group of a weight row, decoded for [`dequantize_row`]: element i is
    /// `q[i] * w0 + m` for i < 16 and `q[i] * w1 + m` for i >= 16 (w0 == w1 except for
    /// Q6_K).
    pub struct Group {
        pub q: [i8; 32],
        pub w0: f32,
        pub w1: f32,
        pub m: f32,
    }

    /// Decode group `g` (elements 32g..32g+32) of a quantized row (not F32/F16).
    pub fn group(ty: QType, row: &[u8], g: usize) -> Group {
        let mut q = [0i8; 32];
        match ty {
            QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q5_1 | QType::Q8_0 => {
                let b = &row[g * ty.block_bytes()..(g + 1) * ty.block_bytes()];
                let d = rd_f16(b, 0);
                let (m, qh, qs, off) = match ty {
                    QType::Q4_0 => (0.0, 0u32, &b[2..18], 8),
                    QType::Q4_1 => (rd_f16(b, 2), 0, &b[4..20], 0),
                    QType::Q5_0 => (
                        0.0,
                        u32::from_le_bytes([b[2], b[3], b[4], b[5]]),
                        &b[6..22],
                        16,
                    ),
                    QType::Q5_1 => (
                        rd_f16(b, 2),
                        u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                        &b[8..24],
                        0,
                    ),
                    _ => {
                        for (o, &v) in q.iter_mut().zip(&b[2..34]) {
                            *o = v as i8;
                        }
                        return Group {
                            q,
                            w0: d,
                            w1: d,
                            m: 0.0,
                        };
                    }
                };
                for j in 0..16 {
                    let h0 = (((qh >> j) & 1) << 4) as i32;
                    let h1 = (((qh >> (j + 16)) & 1) << 4) as i32;
                    q[j] = (((qs[j] & 0xF) as i32 | h0) - off) as i8;
                    q[j + 16] = (((qs[j] >> 4) as i32 | h1) - off) as i8;
                }
                Group { q, w0: d, w1: d, m }
            }
            QType::Q4K | QType::Q5K => {
                let bb = ty.block_bytes();
                let b = &row[(g / 8) * bb..(g / 8 + 1) * bb];
                let j = g % 8;
                let d = rd_f16(b, 0);
                let dmin = rd_f16(b, 2);
                let (sc, mn) = scale_min_k4(j, &b[4..16]);
                let (qh, qs): (&[u8], &[u8]) = if ty == QType::Q4K {
                    (&[], &b[16..144])
                } else {
                    (&b[16..48], &b[48..176])
                };
                let qs = &qs[32 * (j / 2)..32 * (j / 2) + 32];
                for l in 0..32 {
                    let nib = if j.is_multiple_of(2) {
                        qs[l] & 0xF
                    } else {
                        qs[l] >> 4
                    };
                    let hb = if qh.is_empty() {
                        0
                    } else {
                        ((qh[l] >> j) & 1) << 4
                    };
                    q[l] = (nib | hb) as i8;
                }
                let w = d * sc as f32;
                Group {
                    q,
                    w0: w,
                    w1: w,
                    m: -(dmin * mn as f32),
                }
            }
            QType::Q6K => {
                let b = &row[(g / 8) * 210..(g / 8 + 1) * 210];
                let (h, gg) = ((g % 8) / 4, g % 4);
                let ql = &b[64 * h + 32 * (gg & 1)..64 * h + 32 * (gg & 1) + 32];
                let qh = &b[128 + 32 * h..128 + 32 * h + 32];
                let sc = &b[192..208];
                let d = rd_f16(b, 208);
                for l in 0..32 {
                    let nib = if gg < 2 { ql[l] & 0xF } else { ql[l] >> 4 };
                    let hb = (qh[l] >> (2 * gg)) & 3;
                    q[l] = (nib | (hb << 4)) as i8 - 32;
                }
                Group {
                    q,
                    w0: d * sc[8 * h + 2 * gg] as i8 as f32,
                    w1: d * sc[8 * h + 2 * gg + 1] as i8 as f32,
                    m: 0.0,
                }
            }
            QType::F32 | QType::F16 => unreachable!("group() of a float row"),
        }
    }

    /// A float row's element `i`.
    #[inline]
    fn float_elem(ty: QType, row: &[u8], i: usize) -> f32 {
        match ty {
            QType::F32 => {
                f32::from_le_bytes([row[4 * i], row[4 * i + 1], row[4 * i + 2], row[4 * i + 3]])
            }
            _ => rd_f16(row, 2 * i),
        }
    }

    fn float_dot(ty: QType, row: &[u8], act: &[BlockQ8]) -> f32 {
        let mut sum = 0f32;
        for (g, a) in act.iter().enumerate() {
            let mut s = 0f32;
            for (l, &q) in a.qs.iter().enumerate() {
                s += float_elem(ty, row, 32 * g + l) * q as f32;
            }
            sum += a.d * s;
        }
        sum
    }

    // -----------------------------------------------------------------------------------
    // The dot products, mirroring the AVX2 code operation for operation. Integer partial
    // sums are exact, so only their grouping into the 8 i32 lanes that the AVX2 code
    // converts to f32 matters; from there on every float operation (the scale product,
    // the FMA into the same accumulator, the horizontal sum, the correction terms) is the
    // same one, in the same order, so the results have the same bits.

    /// Eight f32 lanes (one `__m256`).
    type Lanes = [f32; 8];

    /// The AVX2 `hsum`: ((v0 + v4) + (v2 + v6)) + ((v1 + v5) + (v3 + v7)).
    #[inline(always)]
    fn hsum(v: &Lanes) -> f32 {
        let s = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
        (s[0] + s[2]) + (s[1] + s[3])
    }

    #[inline(always)]
    fn add(a: &Lanes, b: &Lanes) -> Lanes {
        std::array::from_fn(|l| a[l] + b[l])
    }

    /// `acc = fma(cvt(lanes), scale, acc)` (`_mm256_fmadd_ps`, fused: one rounding).
    #[inline(always)]
    fn fma_lanes(acc: &mut Lanes, lanes: &[i32; 8], scale: f32) {
        for l in 0..8 {
            acc[l] = (lanes[l] as f32).mul_add(scale, acc[l]);
        }
    }

    /// `_mm256_maddubs_epi16` (u8 * i8 pairs, saturated to i16) then `_mm256_madd_epi16`
    /// with ones: lane L = the products of bytes 4L..4L+4.
    #[inline(always)]
    fn dot_u8_i8(w: &[u8; 32], a: &[i8; 32]) -> [i32; 8] {
        let pair = |k: usize| {
            (w[2 * k] as i32 * a[2 * k] as i32 + w[2 * k + 1] as i32 * a[2 * k + 1] as i32)
                .clamp(i16::MIN as i32, i16::MAX as i32)
        };
        std::array::from_fn(|l| pair(2 * l) + pair(2 * l + 1))
    }

    /// A weight row against N activation rows (the caller checked: each has the row's
    /// block count); each row's result is the same as alone.
    pub fn vec_dot<const N: usize>(ty: QType, row: &[u8], acts: [&[BlockQ8]; N]) -> [f32; N] {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("fma") {
            // SAFETY: FMA detected.
            return unsafe { fma::vec_dot(ty, row, acts) };
        }
        vec_dot_body(ty, row, acts)
    }

    #[inline(always)]
    pub(super) fn vec_dot_body<const N: usize>(
        ty: QType,
        row: &[u8],
        acts: [&[BlockQ8]; N],
    ) -> [f32; N] {
        match ty {
            QType::Q4_0 | QType::Q4_1 | QType::Q5_0 | QType::Q5_1 => q4_or_5(ty, row, acts),
            QType::Q8_0 => q8_0(row, acts),
            QType::Q4K | QType::Q5K => qk45(ty == QType::Q5K, row, acts),
            QType::Q6K => q6k(row, acts),
            QType::F32 | QType::F16 => acts.map(|a| float_dot(ty, row, a)),
        }
    }

    /// Q4_0 / Q4_1 / Q5_0 / Q5_1: unsigned weights, the offset or min through `a.s`;
    /// block i into accumulator set i % 2.
    #[inline(always)]
    fn q4_or_5<const N: usize>(ty: QType, row: &[u8], acts: [&[BlockQ8]; N]) -> [f32; N] {
        let five = matches!(ty, QType::Q5_0 | QType::Q5_1);
        let min = matches!(ty, QType::Q4_1 | QType::Q5_1);
        let qs_at = 2 + if min { 2 } else { 0 } + if five { 4 } else { 0 };
        let off: f32 = if min {
            0.0
        } else if five {
            -16.0
        } else {
            -8.0
        };
        let mut acc = [[[0f32; 8]; N]; 2];
        let mut corr = [[0f32; N]; 2];
        for (i, b) in row.chunks_exact(ty.block_bytes()).enumerate() {
            let d = rd_f16(b, 0);
            let m = if min { rd_f16(b, 2) } else { off * d };
            let qh = if five {
                u32::from_le_bytes([b[qs_at - 4], b[qs_at - 3], b[qs_at - 2], b[qs_at - 1]])
            } else {
                0
            };
            let qs = &b[qs_at..qs_at + 16];
            let mut q = [0u8; 32];
            for l in 0..16 {
                q[l] = (qs[l] & 0xF) | ((((qh >> l) & 1) << 4) as u8);
                q[l + 16] = (qs[l] >> 4) | ((((qh >> (l + 16)) & 1) << 4) as u8);
            }
            let set = i % 2;
            for n in 0..N {
                let a = &acts[n][i];
                fma_lanes(&mut acc[set][n], &dot_u8_i8(&q, &a.qs), d * a.d);
                corr[set][n] += m * a.s;
            }
        }
        std::array::from_fn(|n| hsum(&add(&acc[0][n], &acc[1][n])) + (corr[0][n] + corr[1][n]))
    }

    /// Q8_0: |w| (`_mm256_sign_epi8(w, w)`, so -128 stays 0x80 = 128) against the
    /// activation with w's sign (`_mm256_sign_epi8(a, w)`, wrapping); set i % 2.
    #[inline(always)]
    fn q8_0<const N: usize>(row: &[u8], acts: [&[BlockQ8]; N]) -> [f32; N] {
        let mut acc = [[[0f32; 8]; N]; 2];
        for (i, b) in row.chunks_exact(34).enumerate() {
            let d = rd_f16(b, 0);
            let w: [i8; 32] = std::array::from_fn(|l| b[2 + l] as i8);
            let aw: [u8; 32] = std::array::from_fn(|l| w[l].wrapping_abs() as u8);
            let set = i % 2;
            for n in 0..N {
                let a = &acts[n][i];
                let mut sa = [0i8; 32];
                for l in 0..32 {
                    let q = a.qs[l];
                    sa[l] = if w[l] < 0 { q.wrapping_neg() } else { q };
                    if w[l] == 0 {
                        sa[l] = 0;
                    }
                }
                fma_lanes(&mut acc[set][n], &dot_u8_i8(&aw, &sa), d * a.d);
            }
        }
        std::array::from_fn(|n| hsum(&add(&acc[0][n], &acc[1][n])))
    }

    /// Q4_K / Q5_K: even sub-blocks into accumulator 0, odd into 1, one correction sum.
    #[inline(always)]
    fn qk45<const N: usize>(five: bool, row: &[u8], acts: [&[BlockQ8]; N]) -> [f32; N] {
        let (bb, qs_at) = if five { (176, 48) } else { (144, 16) };
        let mut acc = [[[0f32; 8]; N]; 2];
        let mut corr = [0f32; N];
        for (sb, blk) in row.chunks_exact(bb).enumerate() {
            let d = rd_f16(blk, 0);
            let dmin = rd_f16(blk, 2);
            let mut w = [0f32; 8];
            let mut mn = [0f32; 8];
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, &blk[4..16]);
                w[j] = d * sc as f32;
                mn[j] = dmin * m as f32;
            }
            for c in 0..4 {
                let x = &blk[qs_at + 32 * c..qs_at + 32 * c + 32];
                let hb = |l: usize, bit: usize| {
                    if five {
                        ((blk[16 + l] >> bit) & 1) << 4
                    } else {
                        0
                    }
                };
                let lo: [u8; 32] = std::array::from_fn(|l| (x[l] & 0xF) | hb(l, 2 * c));
                let hi: [u8; 32] = std::array::from_fn(|l| (x[l] >> 4) | hb(l, 2 * c + 1));
                let j = 8 * sb + 2 * c;
                for n in 0..N {
                    let (a0, a1) = (&acts[n][j], &acts[n][j + 1]);
                    fma_lanes(&mut acc[0][n], &dot_u8_i8(&lo, &a0.qs), w[2 * c] * a0.d);
                    fma_lanes(&mut acc[1][n], &dot_u8_i8(&hi, &a1.qs), w[2 * c + 1] * a1.d);
                    corr[n] += mn[2 * c] * a0.s + mn[2 * c + 1] * a1.s;
                }
            }
        }
        std::array::from_fn(|n| hsum(&add(&acc[0][n], &acc[1][n])) - corr[n])
    }

    /// Q6_K: lane L = scale * sum of (q - 32) * a over elements 4L..4L+4, the scale of
    /// elements 0..16 in lanes 0..4, of 16..32 in lanes 4..8; one accumulator.
    #[inline(always)]
    fn q6k<const N: usize>(row: &[u8], acts: [&[BlockQ8]; N]) -> [f32; N] {
        let mut acc = [[0f32; 8]; N];
        for (sb, blk) in row.chunks_exact(210).enumerate() {
            let d = rd_f16(blk, 208);
            let sc = &blk[192..208];
            for h in 0..2 {
                for g in 0..4 {
                    let ql = &blk[64 * h + 32 * (g & 1)..64 * h + 32 * (g & 1) + 32];
                    let qh = &blk[128 + 32 * h..128 + 32 * h + 32];
                    let q: [i32; 32] = std::array::from_fn(|l| {
                        let nib = if g < 2 { ql[l] & 0xF } else { ql[l] >> 4 };
                        (nib | (((qh[l] >> (2 * g)) & 3) << 4)) as i32 - 32
                    });
                    let k = 8 * h + 2 * g;
                    let (s0, s1) = (sc[k] as i8 as i32, sc[k + 1] as i8 as i32);
                    let j = 8 * sb + 4 * h + g;
                    for n in 0..N {
                        let a = &acts[n][j];
                        let lanes: [i32; 8] = std::array::from_fn(|l| {
                            let e = 4 * l;
                            let isum: i32 = (e..e + 4).map(|e| q[e] * a.qs[e] as i32).sum();
                            isum * if l < 4 { s0 } else { s1 }
                        });
                        fma_lanes(&mut acc[n], &lanes, d * a.d);
                    }
                }
            }
        }
        std::array::from_fn(|n| hsum(&acc[n]))
    }

    pub fn dequantize_row(ty: QType, row: &[u8], out: &mut [f32]) {
        match ty {
            QType::F32 | QType::F16 => {
                for (i, o) in out.iter_mut().enumerate() {
                    *o = float_elem(ty, row, i);
                }
            }
            _ => {
                for (g, o) in out.chunks_exact_mut(32).enumerate() {
                    let gr = group(ty, row, g);
                    for (i, o) in o.iter_mut().enumerate() {
                        let w = if i < 16 { gr.w0 } else { gr.w1 };
                        // Same operations, in the same order, as GGML: q * scale (+ min).
                        let v = gr.q[i] as f32 * w;
                        *o = if gr.m == 0.0 { v } else { v + gr.m };
                    }
                }
            }
        }
    }

    /// The AVX2 `dot_f32`: 4 x 8 lane accumulators over 32-element chunks, then 8-element
    /// chunks into the first, (acc0 + acc1) + (acc2 + acc3), `hsum`, then the tail
    /// (multiply, then add).
    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("fma") {
            // SAFETY: FMA detected.
            return unsafe { fma::dot_f32(a, b) };
        }
        dot_f32_body(a, b)
    }

    #[inline(always)]
    pub(super) fn dot_f32_body(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let mut acc = [[0f32; 8]; 4];
        let mut i = 0;
        while i + 32 <= n {
            let (x, y) = (&a[i..i + 32], &b[i..i + 32]);
            for (k, acc) in acc.iter_mut().enumerate() {
                let (x, y) = (&x[8 * k..8 * k + 8], &y[8 * k..8 * k + 8]);
                for l in 0..8 {
                    acc[l] = x[l].mul_add(y[l], acc[l]);
                }
            }
            i += 32;
        }
        while i + 8 <= n {
            let (x, y) = (&a[i..i + 8], &b[i..i + 8]);
            for l in 0..8 {
                acc[0][l] = x[l].mul_add(y[l], acc[0][l]);
            }
            i += 8;
        }
        let v = add(&add(&acc[0], &acc[1]), &add(&acc[2], &acc[3]));
        let mut s = hsum(&v);
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    /// The same code compiled for FMA hardware, used where it is detected (also with AVX2
    /// forced off): `mul_add` is exactly rounded either way, so only the speed differs
    /// (no call into libm's software `fmaf` per lane).
    #[cfg(target_arch = "x86_64")]
    mod fma {
        use super::{dot_f32_body, gemm_x8_body, vec_dot_body, BlockQ8, QType};

        #[target_feature(enable = "fma")]
        pub(super) unsafe fn gemm_x8(
            ty: QType,
            packed: &[u8],
            acts: &[BlockQ8],
            nb: usize,
            out: *mut f32,
            ldo: usize,
        ) {
            gemm_x8_body(ty, packed, acts, nb, out, ldo)
        }

        #[target_feature(enable = "fma")]
        pub(super) unsafe fn vec_dot<const N: usize>(
            ty: QType,
            row: &[u8],
            acts: [&[BlockQ8]; N],
        ) -> [f32; N] {
            vec_dot_body(ty, row, acts)
        }

        #[target_feature(enable = "fma")]
        pub(super) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
            dot_f32_body(a, b)
        }
    }
}

// ---------------------------------------------------------------------------------------
// AVX2 + FMA + F16C.

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)]
mod avx2 {
    use super::{scale_min_k4, BlockQ8, QType};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_at(p: *const u8) -> f32 {
        let h = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// 16 packed bytes → 32 bytes: low nibbles (elements 0..16), then high nibbles (16..32).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn nibbles16(p: *const u8) -> __m256i {
        let x = _mm_loadu_si128(p as *const __m128i);
        let v = _mm256_set_m128i(_mm_srli_epi16::<4>(x), x);
        _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
    }

    /// Bit i of `bits` → byte i = 0x10 if set, else 0.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn bits_to_0x10(bits: u32) -> __m256i {
        let x = _mm256_set1_epi32(bits as i32);
        let shuf = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        );
        let x = _mm256_shuffle_epi8(x, shuf);
        let x = _mm256_or_si256(x, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64));
        let x = _mm256_cmpeq_epi8(x, _mm256_set1_epi8(-1));
        _mm256_and_si256(x, _mm256_set1_epi8(0x10))
    }

    /// sum over 32 byte pairs of u8 (< 128) * i8, as 8 f32 partial sums.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_u8_i8(w: __m256i, a: __m256i) -> __m256 {
        let p = _mm256_maddubs_epi16(w, a);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_qs(a: &BlockQ8) -> __m256i {
        _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i)
    }

    /// Dispatch by type. Caller: features detected, every act has `row`'s block count.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn vec_dot<const N: usize>(
        ty: QType,
        row: &[u8],
        acts: [&[BlockQ8]; N],
    ) -> [f32; N] {
        match ty {
            QType::Q4_0 => q4_or_5::<N, false, false>(row, acts),
            QType::Q4_1 => q4_or_5::<N, false, true>(row, acts),
            QType::Q5_0 => q4_or_5::<N, true, false>(row, acts),
            QType::Q5_1 => q4_or_5::<N, true, true>(row, acts),
            QType::Q8_0 => q8_0::<N>(row, acts),
            QType::Q4K => qk45::<N, false>(row, acts),
            QType::Q5K => qk45::<N, true>(row, acts),
            QType::Q6K => q6k::<N>(row, acts),
            QType::F32 | QType::F16 => super::scalar::vec_dot(ty, row, acts),
        }
    }

    /// Q4_0 / Q4_1 / Q5_0 / Q5_1: weights unsigned (0..16 or 0..32) into maddubs; the
    /// offset (-8 / -16) or the min is folded in through the activation's s.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_or_5<const N: usize, const FIVE: bool, const MIN: bool>(
        row: &[u8],
        acts: [&[BlockQ8]; N],
    ) -> [f32; N] {
        let bb = match (FIVE, MIN) {
            (false, false) => 18,
            (false, true) => 20,
            (true, false) => 22,
            (true, true) => 24,
        };
        let qs_at = 2 + if MIN { 2 } else { 0 } + if FIVE { 4 } else { 0 };
        let off: f32 = if MIN {
            0.0
        } else if FIVE {
            -16.0
        } else {
            -8.0
        };
        let nb = acts[0].len();
        // Two accumulator sets (even / odd blocks) so consecutive FMAs do not wait on each other.
        let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); N], [_mm256_setzero_ps(); N]);
        let (mut corr0, mut corr1) = ([0f32; N], [0f32; N]);
        let p = row.as_ptr();
        let mut i = 0;
        while i + 1 < nb {
            q45_block::<N, FIVE, MIN>(p.add(i * bb), off, qs_at, i, &acts, &mut acc0, &mut corr0);
            q45_block::<N, FIVE, MIN>(
                p.add((i + 1) * bb),
                off,
                qs_at,
                i + 1,
                &acts,
                &mut acc1,
                &mut corr1,
            );
            i += 2;
        }
        if i < nb {
            q45_block::<N, FIVE, MIN>(p.add(i * bb), off, qs_at, i, &acts, &mut acc0, &mut corr0);
        }
        let mut out = [0f32; N];
        for n in 0..N {
            out[n] = hsum(_mm256_add_ps(acc0[n], acc1[n])) + (corr0[n] + corr1[n]);
        }
        out
    }

    /// The per-block scales and sums of four activation rows, interleaved (see [`tile`]).
    #[derive(Clone, Copy)]
    pub(super) struct Scales4 {
        d: *const f32,
        s: *const f32,
    }

    /// [`vec_dot`] for four activation rows, with their scales interleaved in `sc`: the same
    /// float operations on the same values (a four-lane product is four scalar products), so
    /// the same bits. The K-quants only: the 32-element formats go through the interleaved
    /// rows of [`gemm_x8_q45`] / [`gemm_x8_q8`] in the engine (a matrix whose row count is not a
    /// multiple of 8 takes [`vec_dot`]).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn vec_dot_x4t(ty: QType, row: &[u8], acts: [&[BlockQ8]; 4], sc: Scales4) -> [f32; 4] {
        match ty {
            QType::Q4K => qk45_x4t::<false>(row, acts, sc),
            QType::Q5K => qk45_x4t::<true>(row, acts, sc),
            QType::Q6K => q6k_x4t(row, acts, sc),
            _ => vec_dot::<4>(ty, row, acts),
        }
    }

    /// `[x·d_a of row n]` for the four rows, block `j`, each spread over a register.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scales4(x: f32, sc: Scales4, j: usize) -> [__m256; 4] {
        let p = _mm_mul_ps(_mm_set1_ps(x), _mm_loadu_ps(sc.d.add(4 * j)));
        let p = _mm256_set_m128(p, p);
        [
            _mm256_permute_ps::<0x00>(p),
            _mm256_permute_ps::<0x55>(p),
            _mm256_permute_ps::<0xAA>(p),
            _mm256_permute_ps::<0xFF>(p),
        ]
    }

    /// The eight sub-block scales and minimums of a Q4_K / Q5_K super-block, as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn k_scales(blk: &[u8]) -> ([f32; 8], [f32; 8]) {
        let d = f16_at(blk.as_ptr());
        let dmin = f16_at(blk.as_ptr().add(2));
        let mut w = [0f32; 8];
        let mut mn = [0f32; 8];
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &blk[4..16]);
            w[j] = d * sc as f32;
            mn[j] = dmin * m as f32;
        }
        (w, mn)
    }

    /// Quants `64c..64c + 64` of a Q4_K / Q5_K super-block as two registers (the low and the
    /// high nibbles); `hb` carries the fifth bits from one `c` to the next.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn k_quants<const FIVE: bool>(
        blk: &[u8],
        qs_at: usize,
        c: usize,
        hb: &mut __m256i,
    ) -> (__m256i, __m256i) {
        let mask = _mm256_set1_epi8(0x0F);
        let bit4 = _mm256_set1_epi8(0x10);
        let x = _mm256_loadu_si256(blk.as_ptr().add(qs_at + 32 * c) as *const __m256i);
        let mut lo = _mm256_and_si256(x, mask);
        let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(x), mask);
        if FIVE {
            lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16::<4>(*hb), bit4));
            hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16::<3>(*hb), bit4));
            *hb = _mm256_srli_epi16::<2>(*hb);
        }
        (lo, hi)
    }

    /// Quants `128h..128h + 128` of a Q6_K super-block (unsigned, 0..64) as four registers.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6k_quants(blk: *const u8, h: usize) -> [__m256i; 4] {
        let mask = _mm256_set1_epi8(0x0F);
        let bits = _mm256_set1_epi8(0x30);
        let ql0 = _mm256_loadu_si256(blk.add(64 * h) as *const __m256i);
        let ql1 = _mm256_loadu_si256(blk.add(64 * h + 32) as *const __m256i);
        let qh = _mm256_loadu_si256(blk.add(128 + 32 * h) as *const __m256i);
        [
            _mm256_or_si256(
                _mm256_and_si256(ql0, mask),
                _mm256_and_si256(_mm256_slli_epi16::<4>(qh), bits),
            ),
            _mm256_or_si256(
                _mm256_and_si256(ql1, mask),
                _mm256_and_si256(_mm256_slli_epi16::<2>(qh), bits),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), mask),
                _mm256_and_si256(qh, bits),
            ),
            _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), mask),
                _mm256_and_si256(_mm256_srli_epi16::<2>(qh), bits),
            ),
        ]
    }

    /// [`qk45`] for four rows with interleaved scales.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn qk45_x4t<const FIVE: bool>(
        row: &[u8],
        acts: [&[BlockQ8]; 4],
        sc: Scales4,
    ) -> [f32; 4] {
        let bb = if FIVE { 176 } else { 144 };
        let qs_at = if FIVE { 48 } else { 16 };
        let nsb = acts[0].len() / 8;
        let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); 4], [_mm256_setzero_ps(); 4]);
        let mut corr = _mm_setzero_ps();
        for sb in 0..nsb {
            let blk = std::slice::from_raw_parts(row.as_ptr().add(sb * bb), bb);
            let (w, mn) = k_scales(blk);
            let mut hb = if FIVE {
                _mm256_loadu_si256(blk.as_ptr().add(16) as *const __m256i)
            } else {
                _mm256_setzero_si256()
            };
            for c in 0..4 {
                let (lo, hi) = k_quants::<FIVE>(blk, qs_at, c, &mut hb);
                let j = 8 * sb + 2 * c;
                let (sc0, sc1) = (scales4(w[2 * c], sc, j), scales4(w[2 * c + 1], sc, j + 1));
                for n in 0..4 {
                    let s0 = dot_u8_i8(lo, load_qs(acts[n].get_unchecked(j)));
                    let s1 = dot_u8_i8(hi, load_qs(acts[n].get_unchecked(j + 1)));
                    acc0[n] = _mm256_fmadd_ps(s0, sc0[n], acc0[n]);
                    acc1[n] = _mm256_fmadd_ps(s1, sc1[n], acc1[n]);
                }
                // corr += mn0 · s_a(j) + mn1 · s_a(j + 1), lane by lane.
                let c0 = _mm_mul_ps(_mm_set1_ps(mn[2 * c]), _mm_loadu_ps(sc.s.add(4 * j)));
                let c1 = _mm_mul_ps(
                    _mm_set1_ps(mn[2 * c + 1]),
                    _mm_loadu_ps(sc.s.add(4 * j + 4)),
                );
                corr = _mm_add_ps(corr, _mm_add_ps(c0, c1));
            }
        }
        let mut c = [0f32; 4];
        _mm_storeu_ps(c.as_mut_ptr(), corr);
        let mut out = [0f32; 4];
        for n in 0..4 {
            out[n] = hsum(_mm256_add_ps(acc0[n], acc1[n])) - c[n];
        }
        out
    }

    /// [`q6k`] for four rows with interleaved scales.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6k_x4t(row: &[u8], acts: [&[BlockQ8]; 4], sc4: Scales4) -> [f32; 4] {
        let nsb = acts[0].len() / 8;
        let m32 = _mm256_set1_epi8(32);
        let mut acc = [_mm256_setzero_ps(); 4];
        for sb in 0..nsb {
            let blk = row.as_ptr().add(sb * 210);
            let d = f16_at(blk.add(208));
            let sc = blk.add(192) as *const i8;
            for h in 0..2 {
                let q = q6k_quants(blk, h);
                for g in 0..4 {
                    let k = 8 * h + 2 * g;
                    let scv = _mm256_set_m128i(
                        _mm_set1_epi16(*sc.add(k + 1) as i16),
                        _mm_set1_epi16(*sc.add(k) as i16),
                    );
                    let j = 8 * sb + 4 * h + g;
                    let scale = scales4(d, sc4, j);
                    for n in 0..4 {
                        let qa = load_qs(acts[n].get_unchecked(j));
                        let p = _mm256_sub_epi16(
                            _mm256_maddubs_epi16(q[g], qa),
                            _mm256_maddubs_epi16(m32, qa),
                        );
                        let s = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, scv));
                        acc[n] = _mm256_fmadd_ps(s, scale[n], acc[n]);
                    }
                }
            }
        }
        let mut out = [0f32; 4];
        for n in 0..4 {
            out[n] = hsum(acc[n]);
        }
        out
    }

    /// One block of [`q4_or_5`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn q45_block<const N: usize, const FIVE: bool, const MIN: bool>(
        b: *const u8,
        off: f32,
        qs_at: usize,
        i: usize,
        acts: &[&[BlockQ8]; N],
        acc: &mut [__m256; N],
        corr: &mut [f32; N],
    ) {
        let d = f16_at(b);
        let m = if MIN { f16_at(b.add(2)) } else { off * d };
        let mut q = nibbles16(b.add(qs_at));
        if FIVE {
            let qh = (b.add(qs_at - 4) as *const u32).read_unaligned();
            q = _mm256_or_si256(q, bits_to_0x10(qh));
        }
        for n in 0..N {
            let a = acts[n].get_unchecked(i);
            let s = dot_u8_i8(q, load_qs(a));
            acc[n] = _mm256_fmadd_ps(s, _mm256_set1_ps(d * a.d), acc[n]);
            corr[n] += m * a.s;
        }
    }

    /// Q8_0: signed weights; |w| into maddubs, w's sign moved onto the activation.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_0<const N: usize>(row: &[u8], acts: [&[BlockQ8]; N]) -> [f32; N] {
        let nb = acts[0].len();
        let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); N], [_mm256_setzero_ps(); N]);
        let p = row.as_ptr();
        let mut i = 0;
        while i + 1 < nb {
            q8_0_block::<N>(p.add(i * 34), i, &acts, &mut acc0);
            q8_0_block::<N>(p.add((i + 1) * 34), i + 1, &acts, &mut acc1);
            i += 2;
        }
        if i < nb {
            q8_0_block::<N>(p.add(i * 34), i, &acts, &mut acc0);
        }
        let mut out = [0f32; N];
        for n in 0..N {
            out[n] = hsum(_mm256_add_ps(acc0[n], acc1[n]));
        }
        out
    }

    /// One block of [`q8_0`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_0_block<const N: usize>(
        b: *const u8,
        i: usize,
        acts: &[&[BlockQ8]; N],
        acc: &mut [__m256; N],
    ) {
        let d = f16_at(b);
        let w = _mm256_loadu_si256(b.add(2) as *const __m256i);
        let aw = _mm256_sign_epi8(w, w);
        for n in 0..N {
            let a = acts[n].get_unchecked(i);
            let sa = _mm256_sign_epi8(load_qs(a), w);
            let s = dot_u8_i8(aw, sa);
            acc[n] = _mm256_fmadd_ps(s, _mm256_set1_ps(d * a.d), acc[n]);
        }
    }

    /// Q4_K / Q5_K: per 32-element sub-block j, d*sc_j*da_j*isum_j - dmin*m_j*s_j.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn qk45<const N: usize, const FIVE: bool>(
        row: &[u8],
        acts: [&[BlockQ8]; N],
    ) -> [f32; N] {
        let bb = if FIVE { 176 } else { 144 };
        let qs_at = if FIVE { 48 } else { 16 };
        let nsb = acts[0].len() / 8;
        let (mut acc0, mut acc1) = ([_mm256_setzero_ps(); N], [_mm256_setzero_ps(); N]);
        let mut corr = [0f32; N];
        for sb in 0..nsb {
            let blk = std::slice::from_raw_parts(row.as_ptr().add(sb * bb), bb);
            let (w, mn) = k_scales(blk);
            let mut hb = if FIVE {
                _mm256_loadu_si256(blk.as_ptr().add(16) as *const __m256i)
            } else {
                _mm256_setzero_si256()
            };
            for c in 0..4 {
                let (lo, hi) = k_quants::<FIVE>(blk, qs_at, c, &mut hb);
                let j = 8 * sb + 2 * c;
                for n in 0..N {
                    let a0 = acts[n].get_unchecked(j);
                    let a1 = acts[n].get_unchecked(j + 1);
                    let s0 = dot_u8_i8(lo, load_qs(a0));
                    let s1 = dot_u8_i8(hi, load_qs(a1));
                    acc0[n] = _mm256_fmadd_ps(s0, _mm256_set1_ps(w[2 * c] * a0.d), acc0[n]);
                    acc1[n] = _mm256_fmadd_ps(s1, _mm256_set1_ps(w[2 * c + 1] * a1.d), acc1[n]);
                    corr[n] += mn[2 * c] * a0.s + mn[2 * c + 1] * a1.s;
                }
            }
        }
        let mut out = [0f32; N];
        for n in 0..N {
            out[n] = hsum(_mm256_add_ps(acc0[n], acc1[n])) - corr[n];
        }
        out
    }

    /// Q6_K: 6-bit q (0..64) minus 32, 16-element sub-blocks with i8 scales; the -32 is
    /// taken off as maddubs(32, qa), the two scales applied by madd before converting.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q6k<const N: usize>(row: &[u8], acts: [&[BlockQ8]; N]) -> [f32; N] {
        let nsb = acts[0].len() / 8;
        let m32 = _mm256_set1_epi8(32);
        let mut acc = [_mm256_setzero_ps(); N];
        for sb in 0..nsb {
            let blk = row.as_ptr().add(sb * 210);
            let d = f16_at(blk.add(208));
            let sc = blk.add(192) as *const i8;
            for h in 0..2 {
                let q = q6k_quants(blk, h);
                for g in 0..4 {
                    let k = 8 * h + 2 * g;
                    let scv = _mm256_set_m128i(
                        _mm_set1_epi16(*sc.add(k + 1) as i16),
                        _mm_set1_epi16(*sc.add(k) as i16),
                    );
                    let j = 8 * sb + 4 * h + g;
                    for n in 0..N {
                        let a = acts[n].get_unchecked(j);
                        let qa = load_qs(a);
                        let p = _mm256_sub_epi16(
                            _mm256_maddubs_epi16(q[g], qa),
                            _mm256_maddubs_epi16(m32, qa),
                        );
                        let s = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, scv));
                        acc[n] = _mm256_fmadd_ps(s, _mm256_set1_ps(d * a.d), acc[n]);
                    }
                }
            }
        }
        let mut out = [0f32; N];
        for n in 0..N {
            out[n] = hsum(acc[n]);
        }
        out
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_row_q8(x: &[f32], out: &mut [BlockQ8]) {
        let sign = _mm256_set1_ps(-0.0);
        let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (i, ob) in out.iter_mut().enumerate() {
            let p = x.as_ptr().add(32 * i);
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let mut mx = _mm256_andnot_ps(sign, v[0]);
            for k in 1..4 {
                mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[k]));
            }
            let m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps::<1>(mx));
            let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            let amax = _mm_cvtss_f32(m4);
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
            let mut iv = [_mm256_setzero_si256(); 4];
            for k in 0..4 {
                let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm256_mul_ps(v[k], id),
                );
                iv[k] = _mm256_cvtps_epi32(r);
            }
            let sum = _mm256_add_epi32(
                _mm256_add_epi32(iv[0], iv[1]),
                _mm256_add_epi32(iv[2], iv[3]),
            );
            let s4 = _mm_add_epi32(
                _mm256_castsi256_si128(sum),
                _mm256_extracti128_si256::<1>(sum),
            );
            let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32::<0b01_00_11_10>(s4));
            let s4 = _mm_add_epi32(s4, _mm_shuffle_epi32::<0b10_11_00_01>(s4));
            let isum = _mm_cvtsi128_si32(s4);
            let p16a = _mm256_packs_epi32(iv[0], iv[1]);
            let p16b = _mm256_packs_epi32(iv[2], iv[3]);
            let p8 = _mm256_packs_epi16(p16a, p16b);
            let p8 = _mm256_permutevar8x32_epi32(p8, perm);
            _mm256_storeu_si256(ob.qs.as_mut_ptr() as *mut __m256i, p8);
            ob.d = d;
            ob.s = d * isum as f32;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for k in 0..4 {
                acc[k] = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * k)),
                    _mm256_loadu_ps(pb.add(i + 8 * k)),
                    acc[k],
                );
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i)),
                _mm256_loadu_ps(pb.add(i)),
                acc[0],
            );
            i += 8;
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut s = hsum(v);
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    /// Groups of eight rows that share each broadcast activation in the x8 kernels.
    const SHARE: usize = 4;
    /// Tokens whose accumulators the x8 kernels keep while they walk the blocks: each block
    /// of weights is unpacked once for all of them. Runs of 128 measured 1.04-1.07x runs of 32
    /// on Q4_1 and Q8_0 products of prefill shapes (in one process, alternating); their
    /// activations (90-250 KiB for SmolLM2) stay in L2, as those of 256 would not for the
    /// 1536-wide `ffn_down`.
    const RUN: usize = 128;

    /// One block of up to [`SHARE`] groups of eight rows, unpacked for the token loop: the
    /// quant bytes of chunk `c` of group `g` (`w[g][c]`; for Q8_0 also `|w|` in `aw`), the
    /// eight rows' scales `d[g]` and minimums or offsets `m[g]` as f32.
    struct Unpacked<const G: usize> {
        w: [[__m256i; 8]; G],
        aw: [[__m256i; 8]; G],
        d: [__m256; G],
        m: [__m256; G],
    }

    /// The loop of the x8 kernels. For each set of up to [`SHARE`] groups of eight rows
    /// (`G` of them) and each run of up to [`RUN`] tokens, block by block: `unpack(blk, g, u)`
    /// fills group `g`'s part of `u` from its block's bytes at `blk` (prefetched four blocks
    /// ahead), then `token(u, a, acc)` adds the activation blocks `a` of `P` tokens into
    /// their accumulators (eight rows of each group). Each 4-byte activation is broadcast once
    /// per token for all `G` groups, and each unpacked weight register (reloaded from the
    /// stack: four groups' 32 do not fit in the 16 registers) once for all `P` tokens. Two
    /// tokens a step measured 1.04-1.12x one for Q4_1 products of prefill shapes
    /// (examples/matmul_speed), though the compiler then spills some of the 16-bit sums;
    /// three groups with three tokens, two with four, or one with four or eight measured
    /// slower, and so did a hand-scheduled `asm!` version. The accumulators are then stored into
    /// `out` (token `i`'s rows at `out + i * ldo`). A run of a count of tokens that `P` does
    /// not divide ends with its last token repeated into a spare accumulator, so every token
    /// sees the same arithmetic whatever its place.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn x8_loop<const G: usize, const P: usize>(
        packed: &[u8],
        acts: &[BlockQ8],
        nb: usize,
        bs: usize,
        g0: usize,
        po: *mut f32,
        ldo: usize,
        unpack: impl Fn(*const u8, usize, &mut Unpacked<G>),
        token: impl Fn(&Unpacked<G>, [&BlockQ8; P], &mut [[__m256; G]; P]),
    ) {
        let t = acts.len() / nb;
        let zero = [_mm256_setzero_ps(); G];
        // RUN tokens and room for a run's last group of P to overhang it, left uninitialised:
        // each run zeroes the part it uses, instead of all of it (~17 KiB) on every call too.
        let mut acc = [std::mem::MaybeUninit::<[__m256; G]>::uninit(); RUN + 4];
        let mut u = Unpacked::<G> {
            w: [[_mm256_setzero_si256(); 8]; G],
            aw: [[_mm256_setzero_si256(); 8]; G],
            d: zero,
            m: zero,
        };
        let mut i0 = 0;
        while i0 < t {
            let n = (t - i0).min(RUN);
            for a in &mut acc[..n.next_multiple_of(P)] {
                a.write(zero);
            }
            for b in 0..nb {
                for g in 0..G {
                    let blk = packed.as_ptr().add(((g0 + g) * nb + b) * bs);
                    let mut o = 0;
                    while o < bs {
                        _mm_prefetch::<_MM_HINT_T0>(blk.add(4 * bs + o) as *const i8);
                        o += 64;
                    }
                    unpack(blk, g, &mut u);
                }
                if b + 1 == nb {
                    // Ask for the output lines a block ahead of the stores: they are usually
                    // outside the caches (the output of a prefill product is megabytes). A
                    // read prefetch: a write-intent one (`prefetchw`) needs the prfchw
                    // feature, which these functions do not enable.
                    for j in 0..n {
                        let o = po.add((i0 + j) * ldo + 8 * g0) as *const i8;
                        let mut k = 0;
                        while k < 32 * G {
                            _mm_prefetch::<_MM_HINT_T0>(o.add(k));
                            k += 64;
                        }
                        _mm_prefetch::<_MM_HINT_T0>(o.add(32 * G - 1));
                    }
                }
                let mut j = 0;
                while j < n {
                    let a = std::array::from_fn(|k| {
                        acts.get_unchecked((i0 + (j + k).min(n - 1)) * nb + b)
                    });
                    // SAFETY: j + P <= n.next_multiple_of(P) <= RUN + P - 1 < acc.len() (P is
                    // at most 2), so the P accumulators lie inside `acc`, in its part this run
                    // initialised; MaybeUninit<T> has T's layout.
                    token(
                        &u,
                        a,
                        &mut *(acc.as_mut_ptr().add(j) as *mut [[__m256; G]; P]),
                    );
                    j += P;
                }
            }
            for (j, a) in acc[..n].iter().enumerate() {
                // SAFETY: initialised at the start of the run.
                let a = a.assume_init_ref();
                for g in 0..G {
                    _mm256_storeu_ps(po.add((i0 + j) * ldo + 8 * (g0 + g)), a[g]);
                }
            }
            i0 += n;
        }
    }

    /// The sets of groups of eight rows the x8 kernels run together: (first group, count),
    /// [`SHARE`] at a time (fewer at the end); one at a time below [`SHARE`] tokens, where
    /// there is little broadcast to share and one group's weights stay in registers.
    fn group_sets(groups: usize, tokens: usize) -> impl Iterator<Item = (usize, usize)> {
        let step = if tokens < SHARE { 1 } else { SHARE };
        (0..groups)
            .step_by(step)
            .map(move |g0| (g0, step.min(groups - g0)))
    }

    /// [`super::gemm_x8`] for Q4_0 / Q4_1 / Q5_0 / Q5_1 (the caller checked the sizes).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn gemm_x8_q45<const FIVE: bool, const MIN: bool>(
        packed: &[u8],
        acts: &[BlockQ8],
        nb: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        let nf = if MIN { 2 } else { 1 };
        let bs = 16 * nf + if FIVE { 32 } else { 0 } + 128;
        for (g0, n) in group_sets(packed.len() / (nb * bs), acts.len() / nb) {
            // Two tokens a step where their 16-bit sums fit in registers (5-bit weights need
            // twice as many).
            let f = match (n, FIVE) {
                (1, _) => q45_groups::<1, 1, FIVE, MIN>,
                (2, false) => q45_groups::<2, 2, FIVE, MIN>,
                (2, true) => q45_groups::<2, 1, FIVE, MIN>,
                (3, false) => q45_groups::<3, 2, FIVE, MIN>,
                (3, true) => q45_groups::<3, 1, FIVE, MIN>,
                (_, false) => q45_groups::<SHARE, 2, FIVE, MIN>,
                (_, true) => q45_groups::<SHARE, 1, FIVE, MIN>,
            };
            f(g0, packed, acts, nb, out, ldo);
        }
    }

    /// Groups `g0..g0 + G` of [`gemm_x8_q45`]: per step of `P` tokens, the eight unpacked
    /// weight registers of each group against each token's eight broadcast activations.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q45_groups<const G: usize, const P: usize, const FIVE: bool, const MIN: bool>(
        g0: usize,
        packed: &[u8],
        acts: &[BlockQ8],
        nb: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        let nf = if MIN { 2 } else { 1 };
        let chunks_at = 16 * nf + if FIVE { 32 } else { 0 };
        let bs = chunks_at + 128;
        let unpack = |blk: *const u8, g: usize, u: &mut Unpacked<G>| {
            let mask = _mm256_set1_epi8(0x0F);
            let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
            u.d[g] = d;
            u.m[g] = if MIN {
                _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16) as *const __m128i))
            } else {
                _mm256_mul_ps(d, _mm256_set1_ps(if FIVE { -16.0 } else { -8.0 }))
            };
            let w = &mut u.w[g];
            for c in 0..4 {
                let x = _mm256_loadu_si256(blk.add(chunks_at + 32 * c) as *const __m256i);
                w[c] = _mm256_and_si256(x, mask);
                w[4 + c] = _mm256_and_si256(_mm256_srli_epi16::<4>(x), mask);
            }
            if FIVE {
                let words = blk.add(16 * nf) as *const u32;
                for k in 0..8 {
                    w[k] = _mm256_or_si256(w[k], bits_to_0x10(words.add(k).read_unaligned()));
                }
            }
        };
        let token = |u: &Unpacked<G>, a: [&BlockQ8; P], acc: &mut [[__m256; G]; P]| {
            let ones = _mm256_set1_epi16(1);
            // 16-bit sums: eight products of up to 15 · 128 per lane fit, for 5-bit weights
            // four do, so those are widened in two halves.
            let mut lo = [[_mm256_setzero_si256(); G]; P];
            let mut hi = [[_mm256_setzero_si256(); G]; P];
            for c in 0..8 {
                let x: [__m256i; P] = std::array::from_fn(|p| {
                    _mm256_set1_epi32((a[p].qs.as_ptr().add(4 * c) as *const i32).read_unaligned())
                });
                for g in 0..G {
                    let w = u.w[g][c];
                    for p in 0..P {
                        let m = _mm256_maddubs_epi16(w, x[p]);
                        if FIVE && c >= 4 {
                            hi[p][g] = _mm256_add_epi16(hi[p][g], m);
                        } else {
                            lo[p][g] = _mm256_add_epi16(lo[p][g], m);
                        }
                    }
                }
            }
            for p in 0..P {
                let (ad, as_) = (_mm256_set1_ps(a[p].d), _mm256_set1_ps(a[p].s));
                for g in 0..G {
                    let isum = if FIVE {
                        _mm256_add_epi32(
                            _mm256_madd_epi16(lo[p][g], ones),
                            _mm256_madd_epi16(hi[p][g], ones),
                        )
                    } else {
                        _mm256_madd_epi16(lo[p][g], ones)
                    };
                    let f = _mm256_cvtepi32_ps(isum);
                    let x = _mm256_fmadd_ps(f, _mm256_mul_ps(u.d[g], ad), acc[p][g]);
                    acc[p][g] = _mm256_fmadd_ps(u.m[g], as_, x);
                }
            }
        };
        x8_loop::<G, P>(packed, acts, nb, bs, g0, out, ldo, unpack, token);
    }

    /// [`super::gemm_x8`] for Q8_0 (the caller checked the sizes): |w| into `maddubs`, w's
    /// sign moved onto the activation, each chunk widened to 32 bits (two products of up to
    /// 127 · 128 already fill 16 bits).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn gemm_x8_q8(
        packed: &[u8],
        acts: &[BlockQ8],
        nb: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        for (g0, n) in group_sets(packed.len() / (nb * (16 + 256)), acts.len() / nb) {
            let f = match n {
                1 => q8_groups::<1, 1>,
                2 => q8_groups::<2, 1>,
                3 => q8_groups::<3, 1>,
                // Two tokens a step measured slower here (0.83-1.0x): with |w| and w's sign
                // both needed, the registers run out.
                _ => q8_groups::<SHARE, 1>,
            };
            f(g0, packed, acts, nb, out, ldo);
        }
    }

    /// Groups `g0..g0 + G` of [`gemm_x8_q8`].
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_groups<const G: usize, const P: usize>(
        g0: usize,
        packed: &[u8],
        acts: &[BlockQ8],
        nb: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        let unpack = |blk: *const u8, g: usize, u: &mut Unpacked<G>| {
            u.d[g] = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
            for c in 0..8 {
                let w = _mm256_loadu_si256(blk.add(16 + 32 * c) as *const __m256i);
                u.w[g][c] = w;
                u.aw[g][c] = _mm256_sign_epi8(w, w);
            }
        };
        let token = |u: &Unpacked<G>, a: [&BlockQ8; P], acc: &mut [[__m256; G]; P]| {
            let ones = _mm256_set1_epi16(1);
            let mut isum = [[_mm256_setzero_si256(); G]; P];
            for c in 0..8 {
                let x: [__m256i; P] = std::array::from_fn(|p| {
                    _mm256_set1_epi32((a[p].qs.as_ptr().add(4 * c) as *const i32).read_unaligned())
                });
                for g in 0..G {
                    let (w, aw) = (u.w[g][c], u.aw[g][c]);
                    for p in 0..P {
                        let m = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(x[p], w));
                        isum[p][g] = _mm256_add_epi32(isum[p][g], _mm256_madd_epi16(m, ones));
                    }
                }
            }
            for p in 0..P {
                let ad = _mm256_set1_ps(a[p].d);
                for g in 0..G {
                    let f = _mm256_cvtepi32_ps(isum[p][g]);
                    acc[p][g] = _mm256_fmadd_ps(f, _mm256_mul_ps(u.d[g], ad), acc[p][g]);
                }
            }
        };
        x8_loop::<G, P>(packed, acts, nb, 16 + 256, g0, out, ldo, unpack, token);
    }

    /// [`super::vec_dot_rows`] (the caller checked the sizes), asking for the row four ahead
    /// while each is computed: the weights of a single-token step stream from memory once.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows(ty: QType, rows: &[u8], rb: usize, act: &[BlockQ8], out: &mut [f32]) {
        const AHEAD: usize = 4;
        let p = rows.as_ptr();
        let n = out.len();
        for r in 0..n {
            if r + AHEAD < n {
                let next = p.add((r + AHEAD) * rb);
                let mut off = 0;
                while off < rb {
                    _mm_prefetch::<_MM_HINT_T0>(next.add(off) as *const i8);
                    off += 64;
                }
            }
            let row = rows.get_unchecked(r * rb..(r + 1) * rb);
            *out.get_unchecked_mut(r) = vec_dot::<1>(ty, row, [act])[0];
        }
    }

    /// [`super::vec_dot_tile`] (the caller checked the sizes).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn tile(
        ty: QType,
        rows: &[u8],
        rb: usize,
        acts: &[BlockQ8],
        nb: usize,
        out: &mut [f32],
    ) {
        let (r_n, t_n) = (rows.len() / rb, acts.len() / nb);
        let act = |i: usize| acts.get_unchecked(i * nb..(i + 1) * nb);
        // The scales and sums of each group of four activation rows, block by block
        // (`[d of row i, i+1, i+2, i+3]` per block), so that a kernel multiplies a weight
        // block's scale into all four with one instruction.
        let groups = t_n / 4;
        let mut ds = vec![0f32; groups * nb * 4];
        let mut ss = vec![0f32; groups * nb * 4];
        for g in 0..groups {
            for n in 0..4 {
                for (b, a) in act(4 * g + n).iter().enumerate() {
                    ds[(g * nb + b) * 4 + n] = a.d;
                    ss[(g * nb + b) * 4 + n] = a.s;
                }
            }
        }
        for r in 0..r_n {
            let w = rows.get_unchecked(r * rb..(r + 1) * rb);
            let mut i = 0;
            while i + 4 <= t_n {
                let g = i / 4;
                let sc = Scales4 {
                    d: ds.as_ptr().add(g * nb * 4),
                    s: ss.as_ptr().add(g * nb * 4),
                };
                let d = vec_dot_x4t(ty, w, [act(i), act(i + 1), act(i + 2), act(i + 3)], sc);
                for j in 0..4 {
                    *out.get_unchecked_mut((i + j) * r_n + r) = d[j];
                }
                i += 4;
            }
            while i < t_n {
                *out.get_unchecked_mut(i * r_n + r) = vec_dot::<1>(ty, w, [act(i)])[0];
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// The block types (every supported type but the float ones).
    fn quant() -> impl Iterator<Item = QType> {
        QType::ALL
            .into_iter()
            .filter(|t| !matches!(t, QType::F32 | QType::F16))
    }

    /// Row lengths to test per type: the model's widths plus edge sizes.
    fn sizes(ty: QType) -> &'static [usize] {
        match ty.block_elems() {
            256 => &[256, 512, 1536],
            _ => &[32, 64, 256, 576, 1536],
        }
    }

    /// Deterministic roughly-normal numbers.
    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32) / (1u64 << 24) as f32
        }
        fn normal(&mut self) -> f32 {
            (0..4).map(|_| self.uniform()).sum::<f32>() - 2.0
        }
    }

    /// Weights whose scale varies from block to block (so sub-block scales and mins differ),
    /// with an occasional outlier.
    fn weights(n: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng(seed);
        (0..n)
            .map(|i| {
                let scale = 0.02 * (1 + (i / 16) % 7) as f32;
                let v = r.normal() * scale + 0.01 * ((i / 32) % 3) as f32;
                if i % 97 == 13 {
                    v * 6.0
                } else {
                    v
                }
            })
            .collect()
    }

    /// An activation: correlated with `w` (so the dot is far from zero) or independent.
    fn activation(w: &[f32], correlated: bool, seed: u64) -> Vec<f32> {
        let mut r = Rng(seed ^ 0x9e37_79b9);
        w.iter()
            .enumerate()
            .map(|(i, &w)| {
                let noise = r.normal() * (0.5 + (i % 5) as f32 * 0.3);
                if correlated {
                    20.0 * w + noise
                } else {
                    noise
                }
            })
            .collect()
    }

    /// candle's quantization of `data` as one row: (raw GGUF bytes, candle's dequantization).
    fn candle_row(ty: QType, data: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let t = Tensor::from_vec(data.to_vec(), (data.len(),), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, ty.to_ggml()).unwrap();
        let bytes = q.data().unwrap().into_owned();
        assert_eq!(bytes.len(), ty.row_bytes(data.len()));
        let deq = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        (bytes, deq)
    }

    fn q8(x: &[f32], k: Kernels) -> Vec<BlockQ8> {
        let mut out = vec![BlockQ8::default(); x.len() / 32];
        quantize_row_q8_with(k, x, &mut out);
        out
    }

    /// (exact dot of the dequantized weights with the dequantized activation, sum of |terms|)
    fn reference(w: &[f32], act: &[BlockQ8]) -> (f64, f64) {
        let mut dot = 0f64;
        let mut mag = 0f64;
        for (i, &w) in w.iter().enumerate() {
            let a = &act[i / 32];
            let t = w as f64 * (a.d as f64 * a.qs[i % 32] as f64);
            dot += t;
            mag += t.abs();
        }
        (dot, mag)
    }

    fn skip_without_avx2(test: &str) -> bool {
        if avx2_available() {
            false
        } else {
            eprintln!("{test}: skipped, AVX2/FMA/F16C not detected on this CPU");
            true
        }
    }

    #[test]
    fn qtype_metadata_matches_ggml() {
        for ty in QType::ALL {
            let g = ty.to_ggml();
            assert_eq!(QType::from_ggml(g), Some(ty));
            assert_eq!(ty.block_elems(), g.block_size(), "{ty:?}");
            assert_eq!(ty.block_bytes(), g.type_size(), "{ty:?}");
            assert_eq!(
                ty.row_bytes(4 * 256),
                4 * 256 / g.block_size() * g.type_size()
            );
        }
        for g in [
            GgmlDType::BF16,
            GgmlDType::Q8_1,
            GgmlDType::Q2K,
            GgmlDType::Q3K,
            GgmlDType::Q8K,
        ] {
            assert_eq!(QType::from_ggml(g), None);
        }
        assert_eq!(std::mem::size_of::<BlockQ8>(), 40);
    }

    #[test]
    #[should_panic]
    fn row_bytes_rejects_partial_blocks() {
        QType::Q4K.row_bytes(576);
    }

    #[test]
    fn dequantize_row_matches_candle_exactly() {
        for ty in QType::ALL {
            for &cols in sizes(ty) {
                let w = weights(cols, cols as u64 + 1);
                let (bytes, deq) = candle_row(ty, &w);
                let mut out = vec![f32::NAN; cols];
                dequantize_row(ty, &bytes, &mut out);
                for i in 0..cols {
                    assert!(
                        out[i] == deq[i],
                        "{ty:?} cols {cols} elem {i}: {} vs candle {}",
                        out[i],
                        deq[i]
                    );
                }
            }
        }
    }

    #[test]
    fn scalar_vec_dot_matches_dequantized_reference() {
        for ty in QType::ALL {
            for &cols in sizes(ty) {
                for correlated in [true, false] {
                    let w = weights(cols, 7 * cols as u64);
                    let (bytes, deq) = candle_row(ty, &w);
                    let act = q8(&activation(&w, correlated, cols as u64), Kernels::Scalar);
                    let got = vec_dot_with(Kernels::Scalar, ty, &bytes, &act) as f64;
                    let (want, mag) = reference(&deq, &act);
                    let err = (got - want).abs();
                    assert!(
                        err <= 1e-5 * mag,
                        "{ty:?} cols {cols}: {got} vs {want} (mag {mag})"
                    );
                    if correlated {
                        assert!(
                            err <= 1e-5 * want.abs(),
                            "{ty:?} cols {cols}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn scalar_vec_dot_close_to_unquantized_activation() {
        for ty in quant() {
            for &cols in sizes(ty).iter().filter(|&&c| c >= 256) {
                let w = weights(cols, 3 * cols as u64);
                let (bytes, deq) = candle_row(ty, &w);
                let x = activation(&w, true, 11);
                let act = q8(&x, Kernels::Scalar);
                let got = vec_dot_with(Kernels::Scalar, ty, &bytes, &act) as f64;
                let want: f64 = deq.iter().zip(&x).map(|(&w, &x)| w as f64 * x as f64).sum();
                let rel = (got - want).abs() / want.abs();
                assert!(
                    rel < 0.03,
                    "{ty:?} cols {cols}: {got} vs {want} (rel {rel})"
                );
            }
        }
    }

    /// The comparisons above are tight enough to notice one changed weight byte.
    #[test]
    fn reference_check_catches_a_corrupted_byte() {
        for ty in quant() {
            let cols = *sizes(ty).last().unwrap();
            let w = weights(cols, 5);
            let (mut bytes, deq) = candle_row(ty, &w);
            let act = q8(&activation(&w, true, 5), Kernels::Scalar);
            let (want, _) = reference(&deq, &act);
            // A byte inside the first block's quants (past every type's header).
            let at = match ty {
                QType::Q6K => 40,
                QType::Q4K | QType::Q5K => 60,
                _ => 12,
            };
            bytes[at] ^= 0x11;
            let got = vec_dot_with(Kernels::Scalar, ty, &bytes, &act) as f64;
            assert!(
                (got - want).abs() > 1e-5 * want.abs(),
                "{ty:?}: corruption went unnoticed"
            );
        }
    }

    #[test]
    fn x4_matches_four_vec_dots() {
        for k in [Kernels::Scalar, Kernels::Avx2] {
            if k == Kernels::Avx2 && skip_without_avx2("x4_matches_four_vec_dots (AVX2)") {
                continue;
            }
            for ty in QType::ALL {
                for &cols in sizes(ty) {
                    let w = weights(cols, 13 + cols as u64);
                    let (bytes, _) = candle_row(ty, &w);
                    let acts: Vec<Vec<BlockQ8>> = (0..4)
                        .map(|s| q8(&activation(&w, s % 2 == 0, s), k))
                        .collect();
                    let four =
                        vec_dot_x4_with(k, ty, &bytes, [&acts[0], &acts[1], &acts[2], &acts[3]]);
                    for (n, act) in acts.iter().enumerate() {
                        let one = vec_dot_with(k, ty, &bytes, act);
                        assert_eq!(
                            four[n].to_bits(),
                            one.to_bits(),
                            "{k:?} {ty:?} cols {cols} act {n}: x4 {} vs {one}",
                            four[n]
                        );
                    }
                }
            }
        }
    }

    /// AVX2 and scalar agree bit for bit, single and x4, on `bytes` against `acts`.
    fn assert_same_bits(what: &str, ty: QType, bytes: &[u8], acts: [&[BlockQ8]; 4]) {
        let s4 = vec_dot_x4_with(Kernels::Scalar, ty, bytes, acts);
        let a4 = vec_dot_x4_with(Kernels::Avx2, ty, bytes, acts);
        for n in 0..4 {
            let s = vec_dot_with(Kernels::Scalar, ty, bytes, acts[n]);
            let a = vec_dot_with(Kernels::Avx2, ty, bytes, acts[n]);
            assert_eq!(
                a.to_bits(),
                s.to_bits(),
                "{what} {ty:?} act {n}: avx2 {a} vs scalar {s}"
            );
            assert_eq!(
                a4[n].to_bits(),
                s.to_bits(),
                "{what} {ty:?} act {n}: avx2 x4 {} vs scalar {s}",
                a4[n]
            );
            assert_eq!(
                s4[n].to_bits(),
                s.to_bits(),
                "{what} {ty:?} act {n}: scalar x4 {} vs scalar {s}",
                s4[n]
            );
        }
    }

    #[test]
    fn avx2_vec_dot_bit_identical_to_scalar() {
        if skip_without_avx2("avx2_vec_dot_bit_identical_to_scalar") {
            return;
        }
        for ty in QType::ALL {
            for &cols in sizes(ty) {
                let w = weights(cols, 17 * cols as u64);
                let (bytes, deq) = candle_row(ty, &w);
                let acts: Vec<Vec<BlockQ8>> = (0..4)
                    .map(|s| q8(&activation(&w, s % 2 == 0, 3 + s), Kernels::Scalar))
                    .collect();
                let acts = [&acts[0][..], &acts[1], &acts[2], &acts[3]];
                assert_same_bits(&format!("cols {cols}"), ty, &bytes, acts);
                for act in acts {
                    let a = vec_dot_with(Kernels::Avx2, ty, &bytes, act) as f64;
                    let (want, mag) = reference(&deq, act);
                    assert!(
                        (a - want).abs() <= 1e-5 * mag,
                        "{ty:?} cols {cols}: avx2 {a} vs ref {want}"
                    );
                }
            }
        }
    }

    /// Extreme but valid blocks: all-max quants (maddubs saturation), -127/127 in Q8_0;
    /// random raw weight bytes; activation blocks with any i8 at all (-128 included, which
    /// quantize_row_q8 never writes).
    #[test]
    fn avx2_extreme_values_bit_identical_to_scalar() {
        if skip_without_avx2("avx2_extreme_values_bit_identical_to_scalar") {
            return;
        }
        for ty in quant() {
            let cols = *sizes(ty).last().unwrap();
            let w: Vec<f32> = (0..cols)
                .map(|i| if (i / 3) % 2 == 0 { 1.0 } else { -1.0 })
                .collect();
            let (bytes, deq) = candle_row(ty, &w);
            let xs = [
                w.clone(),
                w.iter().map(|v| -v).collect(),
                vec![1.0; cols],
                vec![0.0; cols],
            ];
            let acts: Vec<Vec<BlockQ8>> = xs.iter().map(|x| q8(x, Kernels::Scalar)).collect();
            let acts = [&acts[0][..], &acts[1], &acts[2], &acts[3]];
            assert_same_bits("extreme", ty, &bytes, acts);
            for act in acts {
                let s = vec_dot_with(Kernels::Scalar, ty, &bytes, act) as f64;
                let (want, mag) = reference(&deq, act);
                let tol = 1e-5 * mag + 1e-30;
                assert!((s - want).abs() <= tol, "{ty:?}: scalar {s} vs ref {want}");
            }
        }
        // Random raw bytes with sane (finite, either sign) scales: every bit pattern of the
        // quants is legal.
        let mut r = Rng(99);
        for ty in quant() {
            for &cols in sizes(ty) {
                for round in 0..3 {
                    let mut bytes: Vec<u8> = (0..ty.row_bytes(cols))
                        .map(|_| (r.uniform() * 256.0) as u8)
                        .collect();
                    let bb = ty.block_bytes();
                    for b in bytes.chunks_exact_mut(bb) {
                        let mut half = || {
                            let h = if round == 0 {
                                0x3c00 // 1.0
                            } else {
                                0x2000 + (r.uniform() * 0x1c00 as f32) as u16
                            };
                            let sign = if r.uniform() < 0.3 { 0x8000 } else { 0 };
                            (h | sign).to_le_bytes()
                        };
                        let at = if ty == QType::Q6K { bb - 2 } else { 0 };
                        b[at..at + 2].copy_from_slice(&half());
                        if matches!(ty, QType::Q4_1 | QType::Q5_1 | QType::Q4K | QType::Q5K) {
                            b[2..4].copy_from_slice(&half());
                        }
                    }
                    let mut deq = vec![0f32; cols];
                    dequantize_row(ty, &bytes, &mut deq);
                    let quantized: Vec<Vec<BlockQ8>> = (0..4)
                        .map(|s| q8(&activation(&deq, s % 2 == 1, 4 + s), Kernels::Scalar))
                        .collect();
                    let acts = [
                        &quantized[0][..],
                        &quantized[1],
                        &quantized[2],
                        &quantized[3],
                    ];
                    assert_same_bits("raw", ty, &bytes, acts);
                    for act in acts {
                        let s = vec_dot_with(Kernels::Scalar, ty, &bytes, act) as f64;
                        let (want, mag) = reference(&deq, act);
                        assert!(
                            (s - want).abs() <= 1e-5 * mag,
                            "{ty:?} raw: scalar {s} vs ref {want}"
                        );
                    }
                    // Arbitrary activation blocks, outside quantize_row_q8's range.
                    let wild: Vec<Vec<BlockQ8>> = (0..4)
                        .map(|s| {
                            (0..cols / 32)
                                .map(|i| BlockQ8 {
                                    d: r.normal() * 0.01,
                                    s: r.normal() * 10.0,
                                    qs: std::array::from_fn(|l| match (s + i + l) % 11 {
                                        0 => -128,
                                        1 => 127,
                                        _ => (r.uniform() * 256.0) as i32 as u8 as i8,
                                    }),
                                })
                                .collect()
                        })
                        .collect();
                    let acts = [&wild[0][..], &wild[1], &wild[2], &wild[3]];
                    assert_same_bits("wild activations", ty, &bytes, acts);
                }
            }
        }
    }

    fn q8_blocks_for_test() -> Vec<f32> {
        let mut x = weights(1536, 21);
        x[..32].fill(0.0); // an all-zero block
        for (i, v) in x[32..64].iter_mut().enumerate() {
            *v = i as f32 - 15.5; // exact ties after scaling? d = 15.5/127: not, but a spread
        }
        for (i, v) in x[64..96].iter_mut().enumerate() {
            *v = [127.0, -0.5, 1.5, 2.5, -2.5, 0.5][i % 6]; // d = 1: ties to even
        }
        x[96] = -1e-30; // a tiny (subnormal-scale) block
        x[97..128].fill(0.0);
        x
    }

    #[test]
    fn quantize_row_q8_scalar_properties() {
        let x = q8_blocks_for_test();
        let out = q8(&x, Kernels::Scalar);
        for (b, xb) in out.iter().zip(x.chunks_exact(32)) {
            let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
            assert_eq!(b.s, b.d * sum as f32);
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert_eq!(b.d, amax / 127.0);
            for (&q, &v) in b.qs.iter().zip(xb) {
                assert!((-127..=127).contains(&q));
                assert!(
                    (q as f32 * b.d - v).abs() <= 0.5001 * b.d,
                    "{v} -> {q} * {}",
                    b.d
                );
            }
        }
        assert_eq!(out[0].qs, [0; 32]);
        assert_eq!(out[0].d, 0.0);
        assert_eq!(&out[2].qs[..6], &[127, 0, 2, 2, -2, 0]);
    }

    #[test]
    fn quantize_row_q8_avx2_matches_scalar() {
        if skip_without_avx2("quantize_row_q8_avx2_matches_scalar") {
            return;
        }
        for x in [q8_blocks_for_test(), activation(&weights(576, 1), true, 2)] {
            let s = q8(&x, Kernels::Scalar);
            let a = q8(&x, Kernels::Avx2);
            assert_eq!(s, a);
        }
    }

    #[test]
    fn dot_matches_naive() {
        let mut r = Rng(5);
        for k in [Kernels::Scalar, Kernels::Avx2] {
            if k == Kernels::Avx2 && skip_without_avx2("dot_matches_naive (AVX2)") {
                continue;
            }
            for n in [0, 1, 7, 8, 9, 31, 32, 33, 63, 576, 1000, 1536] {
                let a: Vec<f32> = (0..n).map(|_| r.normal()).collect();
                let b: Vec<f32> = (0..n).map(|_| r.normal()).collect();
                let want: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
                let mag: f64 = a
                    .iter()
                    .zip(&b)
                    .map(|(&x, &y)| (x as f64 * y as f64).abs())
                    .sum();
                let got = dot_f32_with(k, &a, &b) as f64;
                assert!(
                    (got - want).abs() <= 1e-6 * mag + 1e-12,
                    "{k:?} n {n}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn avx2_dot_bit_identical_to_scalar() {
        if skip_without_avx2("avx2_dot_bit_identical_to_scalar") {
            return;
        }
        let mut r = Rng(6);
        // Values of varied magnitude, so that summation order would show.
        let mut val = || r.normal() * [1e-3, 1.0, 30.0][(r.uniform() * 3.0) as usize % 3];
        let a: Vec<f32> = (0..1536).map(|_| val()).collect();
        let b: Vec<f32> = (0..1536).map(|_| val()).collect();
        for n in 0..=1536 {
            // Misaligned starts too.
            let off = n % 3;
            let m = n.min(1536 - off);
            let (a, b) = (&a[off..off + m], &b[..m]);
            let s = dot_f32_with(Kernels::Scalar, a, b);
            let v = dot_f32_with(Kernels::Avx2, a, b);
            assert_eq!(
                v.to_bits(),
                s.to_bits(),
                "dot n {m}: avx2 {v} vs scalar {s}"
            );
        }
    }

    /// Every cell of `vec_dot_tile` (1 to 9 activation rows: groups of four and the rest) has
    /// the bits of `vec_dot` on that row and activation, with either kernel.
    #[test]
    fn tile_bit_identical_to_vec_dot() {
        let mut kernels = vec![Kernels::Scalar];
        if avx2_available() {
            kernels.push(Kernels::Avx2);
        }
        for ty in quant() {
            let cols = *sizes(ty).last().unwrap();
            let r_n = 3;
            let (bytes, _) = candle_row(ty, &weights(r_n * cols, 41));
            let rb = ty.row_bytes(cols);
            let acts: Vec<BlockQ8> = (0..9)
                .flat_map(|i| {
                    q8(
                        &activation(&weights(cols, 50 + i), i % 2 == 0, 60 + i),
                        Kernels::Scalar,
                    )
                })
                .collect();
            let nb = cols / 32;
            for t_n in 1..=9 {
                for &k in &kernels {
                    let mut out = vec![f32::NAN; r_n * t_n];
                    vec_dot_tile_with(k, ty, &bytes, &acts[..t_n * nb], cols, &mut out);
                    for r in 0..r_n {
                        for i in 0..t_n {
                            let want = vec_dot_with(
                                Kernels::Scalar,
                                ty,
                                &bytes[r * rb..(r + 1) * rb],
                                &acts[i * nb..(i + 1) * nb],
                            );
                            assert_eq!(
                                out[i * r_n + r].to_bits(),
                                want.to_bits(),
                                "{ty:?} {k:?} t {t_n} row {r} act {i}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The interleaved layout: rows come back intact, and `gemm_x8` gives the same
    /// bits with either kernel, for a token alone as in a batch, within float rounding of
    /// `vec_dot` on the plain rows.
    #[test]
    fn x8_gemm() {
        for ty in QType::ALL.into_iter().filter(|&t| has_x8(t)) {
            // 2, 5 and 7 groups of eight rows: the kernels' sets of four, three and one.
            for rows in [16, 40, 56] {
                x8_gemm_for(ty, rows);
            }
        }
    }

    fn x8_gemm_for(ty: QType, rows: usize) {
        let cols = 576;
        let (bytes, _) = candle_row(ty, &weights(rows * cols, 77));
        let packed = repack_x8(ty, bytes.clone(), rows, cols);
        assert_eq!(packed.len(), bytes.len());
        let rb = ty.row_bytes(cols);
        for r in 0..rows {
            assert_eq!(
                x8_row(ty, &packed, cols, r),
                &bytes[r * rb..(r + 1) * rb],
                "row {r}"
            );
        }
        let nb = cols / 32;
        // More than one run of 128 tokens, the last of an odd count (the AVX2 Q4 kernels take
        // two tokens a step); single tokens (below) take the one-group path.
        let t = 131;
        let mut acts: Vec<BlockQ8> = (0..t as u64)
            .flat_map(|i| {
                q8(
                    &activation(&weights(cols, 80 + i), i % 2 == 1, 90 + i),
                    Kernels::Scalar,
                )
            })
            .collect();
        // Extreme blocks too: all -128 / +127 against the largest nibbles.
        for q in acts[0].qs.iter_mut() {
            *q = -128;
        }
        for q in acts[1].qs.iter_mut() {
            *q = 127;
        }
        let mut kernels = vec![Kernels::Scalar];
        if avx2_available() {
            kernels.push(Kernels::Avx2);
        }
        let mut all = Vec::new();
        for &k in &kernels {
            let mut out = vec![f32::NAN; rows * t];
            gemm_x8_with(k, ty, &packed, &acts, cols, &mut out);
            for i in 0..t {
                let mut one = vec![f32::NAN; rows];
                gemm_x8_with(k, ty, &packed, &acts[i * nb..(i + 1) * nb], cols, &mut one);
                for r in 0..rows {
                    assert_eq!(
                        one[r].to_bits(),
                        out[i * rows + r].to_bits(),
                        "{k:?} token {i} row {r}"
                    );
                    let v = vec_dot_with(
                        Kernels::Scalar,
                        ty,
                        &bytes[r * rb..(r + 1) * rb],
                        &acts[i * nb..(i + 1) * nb],
                    );
                    let tol = 1e-4 * (1.0 + v.abs());
                    assert!(
                        (v - out[i * rows + r]).abs() <= tol,
                        "{k:?} token {i} row {r}: {} vs {v}",
                        out[i * rows + r]
                    );
                }
            }
            all.push(out);
        }
        for o in &all[1..] {
            for (a, b) in o.iter().zip(&all[0]) {
                assert_eq!(a.to_bits(), b.to_bits(), "avx2 vs scalar");
            }
        }
    }

    /// The scalar code compiled without FMA codegen (`mul_add` through the `fmaf` libcall,
    /// as off x86 or on CPUs without FMA) gives the same bits as compiled with it.
    #[test]
    fn scalar_software_fma_same_bits() {
        for ty in QType::ALL {
            let cols = *sizes(ty).last().unwrap();
            let w = weights(cols, 23);
            let (bytes, _) = candle_row(ty, &w);
            let acts: Vec<Vec<BlockQ8>> = (0..4)
                .map(|s| q8(&activation(&w, s % 2 == 0, s), Kernels::Scalar))
                .collect();
            let acts = [&acts[0][..], &acts[1], &acts[2], &acts[3]];
            let soft = scalar::vec_dot_body(ty, &bytes, acts);
            let used = vec_dot_x4_with(Kernels::Scalar, ty, &bytes, acts);
            assert_eq!(soft.map(f32::to_bits), used.map(f32::to_bits), "{ty:?}");
        }
        let mut r = Rng(8);
        for n in [0, 5, 8, 40, 1000, 1536] {
            let a: Vec<f32> = (0..n).map(|_| r.normal()).collect();
            let b: Vec<f32> = (0..n).map(|_| r.normal() * 3.0).collect();
            let soft = scalar::dot_f32_body(&a, &b);
            let used = dot_f32_with(Kernels::Scalar, &a, &b);
            assert_eq!(soft.to_bits(), used.to_bits(), "dot n {n}");
        }
    }

    #[test]
    fn f16_conversion_is_exact() {
        for h in 0..=u16::MAX {
            let v = f16_to_f32(h);
            let t = Tensor::from_vec(vec![v], (1,), &Device::Cpu).unwrap();
            let back = t.to_dtype(candle_core::DType::F16).unwrap();
            let round = back
                .to_dtype(candle_core::DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()[0];
            if v.is_nan() {
                assert!(round.is_nan());
            } else {
                assert_eq!(round.to_bits(), v.to_bits(), "{h:#06x}");
            }
            if h == 0x7bff {
                assert_eq!(v, 65504.0);
            }
        }
    }

    #[test]
    fn kernel_choice() {
        let detected = if avx2_available() {
            Kernels::Avx2
        } else {
            Kernels::Scalar
        };
        if std::env::var("RAG_KERNELS")
            .map(|v| v == "scalar")
            .unwrap_or(false)
        {
            assert_eq!(kernels(), Kernels::Scalar);
        }
        assert_eq!(set_kernels(Kernels::Scalar), Kernels::Scalar);
        assert_eq!(kernels(), Kernels::Scalar);
        assert_eq!(set_kernels(Kernels::Avx2), detected);
        assert_eq!(kernels(), detected);
    }
}
