//! Quantized dot-product kernels (the inner loops of a llama.cpp-style CPU matmul).
//!
//! Weights stay in their GGUF block format (one row of `cols` elements is `cols /
//! block_elems` consecutive blocks, see [`QType`]); activations are quantized to 8 bits per
//! 32-element block ([`BlockQ8`], via [`quantize_row_q8`]), and the dot products run in
//! integers per block, scaled in f32.
//!
//! Two implementations: AVX2 + FMA + F16C (x86_64 only, detected at run time, never assumed
//! at compile time) and a portable scalar reference. [`kernels`] says which is in use;
//! [`set_kernels`] forces the scalar one (the `rag` command does so for `RAG_KERNELS=scalar`). The
//! `*_with` variants take the choice explicitly (tests and benchmarks compare the two).
//! Within the AVX2 kernels, [`vnni`] and [`wide`] pick `vpdpbusd` and, for products of two
//! or more tokens in [`gemm_x8`], 512-bit token loops, and [`amx`] AMX tiles for products
//! of sixteen or more, where the CPU has them; the results are the same bits with
//! or without any of them, except Q6_K's, whose activations and float steps take one of
//! three forms that follow these switches ([`q6k_form`]), and the scalar kernels follow the
//! same switches.
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

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_k;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod blocks;
mod scalar;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU8, Ordering};

pub use blocks::{
    f16_to_f32, has_x8, repack_x8, x8_block_bytes, x8_group_bytes, x8_row, BlockQ8, Q6kForm, QType,
};
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

/// The kernels in use: AVX2 when detected, unless [`set_kernels`] chose otherwise.
pub fn kernels() -> Kernels {
    match CHOSEN.load(Ordering::Relaxed) {
        1 => Kernels::Avx2,
        2 => Kernels::Scalar,
        _ => {
            let k = effective(Kernels::Avx2);
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

/// 0 = not chosen yet, 1 = on, 2 = off.
static VNNI: AtomicU8 = AtomicU8::new(0);

/// Whether the x8 kernels of every block format use `vpdpbusd` (four byte products summed
/// straight into 32 bits; AVX-VNNI's encoding, or AVX512-VNNI's on 256-bit registers where
/// only that one exists, as on AMD Zen 4): where the CPU has either (detected once), unless
/// [`set_vnni`] turned it off. The results are the same bits either way (both compute each
/// integer sum exactly; Q8_0's 16-bit pair sums never saturate, see `quant/avx2.rs`), except
/// for Q6_K, whose form follows this switch ([`q6k_form`]).
pub fn vnni() -> bool {
    switch(&VNNI, vnni_available)
}

/// A kernel switch (0 = not chosen yet, 1 = on, 2 = off): on where `available()` (asked on
/// first use) unless set otherwise before.
fn switch(state: &AtomicU8, available: fn() -> bool) -> bool {
    match state.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let code = if available() { 1 } else { 2 };
            let _ = state.compare_exchange(0, code, Ordering::Relaxed, Ordering::Relaxed);
            state.load(Ordering::Relaxed) == 1
        }
    }
}

/// Which encoding of `vpdpbusd` this CPU has besides AVX2, FMA and F16C (detected once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VnniForm {
    /// AVX-VNNI (VEX; Intel Alder Lake and later, AMD Zen 5).
    Avx,
    /// AVX512-VNNI with AVX512VL (EVEX on 256-bit registers; Intel Ice Lake servers, AMD
    /// Zen 4).
    Avx512,
}

pub(crate) fn vnni_form() -> Option<VnniForm> {
    #[cfg(target_arch = "x86_64")]
    {
        static DETECTED: std::sync::OnceLock<Option<VnniForm>> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            if !avx2_available() {
                None
            } else if is_x86_feature_detected!("avxvnni") {
                Some(VnniForm::Avx)
            } else if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")
            {
                Some(VnniForm::Avx512)
            } else {
                None
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// Whether this CPU has AVX-VNNI or AVX512-VNNI (with AVX512VL) besides AVX2, FMA and F16C.
pub fn vnni_available() -> bool {
    vnni_form().is_some()
}

/// Use AVX-VNNI where available (`true`) or the AVX2 instructions alone (`false`, for
/// comparisons); returns what is in use afterwards.
pub fn set_vnni(on: bool) -> bool {
    let on = on && vnni_available();
    VNNI.store(if on { 1 } else { 2 }, Ordering::Relaxed);
    on
}

/// 0 = not chosen yet, 1 = on, 2 = off.
static WIDE: AtomicU8 = AtomicU8::new(0);

/// Whether this CPU has AVX-512 (F, BW, VL) and AVX512-VNNI besides AVX2, FMA and F16C
/// (detected once): what the 512-bit token loops need.
pub fn wide_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            avx2_available()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether [`gemm_x8`] of two or more tokens runs 512-bit token loops (two tokens or sixteen
/// rows in each `vpdpbusd`; `quant/avx512.rs`): where [`wide_available`] and [`vnni`] are
/// both true, unless [`set_wide`] turned it off. One token, memory-bound, stays on the 256-bit
/// kernels. The results are the same bits either way, except Q6_K's, whose form follows this
/// switch ([`q6k_form`]).
pub fn wide() -> bool {
    switch(&WIDE, wide_available) && vnni()
}

/// Use the 512-bit token loops where available (`true`) or the 256-bit ones alone (`false`,
/// for comparisons); returns what is in use afterwards.
pub fn set_wide(on: bool) -> bool {
    let on = on && wide_available();
    WIDE.store(if on { 1 } else { 2 }, Ordering::Relaxed);
    wide()
}

/// 0 = not chosen yet, 1 = on, 2 = off.
static Q8_PAIRS: AtomicU8 = AtomicU8::new(0);

/// Whether this is an Intel CPU (its CPUID vendor string; detected once).
fn intel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| {
            // SAFETY: CPUID leaf 0 exists on every x86_64 CPU.
            #[allow(unused_unsafe)]
            let r = unsafe { std::arch::x86_64::__cpuid(0) };
            let mut v = [0u8; 12];
            v[..4].copy_from_slice(&r.ebx.to_le_bytes());
            v[4..8].copy_from_slice(&r.edx.to_le_bytes());
            v[8..].copy_from_slice(&r.ecx.to_le_bytes());
            &v == b"GenuineIntel"
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the 256-bit Q8_0 token loop (AVX2, with or without VNNI) takes two tokens a step,
/// each reloaded weight register serving both: on Intel CPUs, unless [`set_q8_pairs`] said
/// otherwise. On an Intel Xeon (AMX host held to AVX2, 2026-12-07) it read 112-114 against
/// 97-99 GMAC/s on 7B's gate/up shape and 111-112 against 88-93 on its down shape without
/// VNNI, 151-154 against 140-144 with AVX-VNNI, and 107-114 against 102-106 on SmolLM2's; on an AMD EPYC (Zen 3, 2026-12-01) two tokens had measured
/// 0.83-1.0x one, so other CPUs keep one. The same bits either way.
pub fn q8_pairs() -> bool {
    switch(&Q8_PAIRS, intel)
}

/// Two tokens a step in the 256-bit Q8_0 token loop (`true`) or one (`false`), on any CPU
/// (for comparisons and tests); returns what is in use afterwards.
pub fn set_q8_pairs(on: bool) -> bool {
    Q8_PAIRS.store(if on { 1 } else { 2 }, Ordering::Relaxed);
    q8_pairs()
}

/// 0 = not chosen yet, 1 = on, 2 = off.
static AMX: AtomicU8 = AtomicU8::new(0);

/// Whether this CPU has AMX-TILE and AMX-INT8, the OS lets this process use the tiles (on
/// Linux the first call asks for them), and [`wide_available`] holds (detected once).
pub fn amx_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static DETECTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| wide_available() && amx::detect())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether [`gemm_x8`] of sixteen or more tokens runs Q4_0, Q4_1, Q5_0, Q5_1, Q4_K and Q5_K
/// on AMX tiles (`quant/amx.rs`: one `tdpbssd` for sixteen tokens × sixteen rows
/// of a block or sub-block): where [`amx_available`] and [`wide`] are both true, unless
/// [`set_amx`] turned it off. The results are the same bits either way.
pub fn amx() -> bool {
    switch(&AMX, amx_available) && wide()
}

/// Use the AMX tiles where available (`true`) or the 512-bit token loops (`false`, for
/// comparisons); returns what is in use afterwards.
pub fn set_amx(on: bool) -> bool {
    let on = on && amx_available();
    AMX.store(if on { 1 } else { 2 }, Ordering::Relaxed);
    amx()
}

// ---------------------------------------------------------------------------------------
// Public entry points.

/// Quantize `x` (length `32 * out.len()`) to 8-bit blocks.
pub fn quantize_row_q8(x: &[f32], out: &mut [BlockQ8]) {
    quantize_row_q8_with(kernels(), x, out)
}

/// Quantize `x` (length `32 * out.len()`, `out.len()` a multiple of 8) to 8-bit blocks with
/// one scale per 256 values: each unit of eight blocks shares the `d` of its largest
/// magnitude (as llama.cpp's Q8_K). What Q6_K products take where [`q6k_units`] holds. The
/// same bits with either kernels.
pub fn quantize_row_q8_units(x: &[f32], out: &mut [BlockQ8]) {
    quantize_row_q8_units_with(kernels(), x, out)
}

/// [`quantize_row_q8_units`] with explicit kernels.
pub fn quantize_row_q8_units_with(k: Kernels, x: &[f32], out: &mut [BlockQ8]) {
    assert!(
        x.len() == 32 * out.len() && out.len().is_multiple_of(8),
        "quantize_row_q8_units: {} values for {} blocks",
        x.len(),
        out.len()
    );
    match effective(k) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: effective() returned Avx2 only where the features were detected.
        Kernels::Avx2 => unsafe { avx2::quantize_row_q8_units(x, out) },
        _ => scalar::quantize_row_q8_units(x, out),
    }
}

/// The form Q6_K's products take here: [`Q6kForm::UnitsFolded`] where [`vnni`] is off (AVX2
/// alone); [`Q6kForm::UnitsFloat`] with the 512-bit token loops ([`wide`]), AMX or not (Q6_K
/// takes no tiles); [`Q6kForm::Blocks`] otherwise (AVX-VNNI without AVX-512). The scalar
/// kernels follow the same switches. Per unit of 256 columns the units forms take one float
/// step (or sixteen cheap ones) where the blocks take sixteen full ones: 1.12-1.24x (AVX2)
/// and 1.3x (AVX-512) the speed of the blocks form on 7B shapes, and 1.15-1.4x the blocks
/// form on AMX tiles (`quant/amx.rs`).
pub fn q6k_form() -> Q6kForm {
    if !vnni() {
        Q6kForm::UnitsFolded
    } else if wide() {
        Q6kForm::UnitsFloat
    } else {
        Q6kForm::Blocks
    }
}

/// Whether Q6_K's products take activations with one scale per 256 columns
/// ([`quantize_row_q8_units`]) here: [`q6k_form`] is one of the units forms.
/// [`super::matmul_many`] quantizes an input that way for the calls that hold a Q6_K matrix.
pub fn q6k_units() -> bool {
    q6k_form() != Q6kForm::Blocks
}

/// Panics unless each eight blocks of `acts` share one scale where `ty` takes them so.
fn check_units(ty: QType, acts: &[BlockQ8]) {
    if ty == QType::Q6K && q6k_units() {
        assert!(
            acts.chunks(8)
                .all(|u| u.iter().all(|b| b.d.to_bits() == u[0].d.to_bits())),
            "gemm_x8: Q6_K here takes activations with one scale per 256 columns \
             (quantize_row_q8_units)"
        );
    }
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

/// `out[i * R + r] = dot(row r, activation row i)` for the R = 8 × groups rows of
/// [`repack_x8`] data in `packed` and the T activation rows in `acts` (`cols / 32` blocks
/// each): the matrix kernel of every block format, for one token as for many. The K-quants
/// work the same way per 32-column sub-block, with each row's sub-block scale `d·sc` (and
/// minimum `-dmin·m`; Q6_K: a scale per 16 columns and an offset of 32), their integer sums
/// exact (AVX2 or AVX-VNNI, [`vnni`]); a single token reads their packed bytes straight into
/// the products. For the 32-element formats, per block,
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
    check_units(ty, acts);
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
    check_units(ty, acts);
    gemm_x8_raw(kernels(), ty, packed, acts, cols / 32, out, ldo)
}

/// (rows, tokens) of a [`gemm_x8`] call, after checking the sizes.
fn x8_shape(ty: QType, packed: &[u8], acts: &[BlockQ8], cols: usize) -> (usize, usize) {
    let nb = cols / 32;
    assert!(
        has_x8(ty)
            && cols.is_multiple_of(ty.block_elems().max(32))
            && nb > 0
            && packed.len().is_multiple_of(x8_group_bytes(ty, cols))
            && acts.len().is_multiple_of(nb),
        "gemm_x8: {} bytes of {ty:?} and {} blocks for {cols} columns",
        packed.len(),
        acts.len()
    );
    (packed.len() / x8_group_bytes(ty, cols) * 8, acts.len() / nb)
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
        // SAFETY: features detected and the tiles granted (`amx` implies `amx_available`
        // and `wide`); sizes checked by the caller.
        Kernels::Avx2 if acts.len() >= 16 * nb && amx::takes(ty) && amx() => {
            amx::gemm_x8(ty, packed, acts, nb, out, ldo)
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features detected (`UnitsFloat` implies `wide`, which implies
        // `wide_available`); sizes checked by the caller. (`UnitsFolded` takes the AVX2 Q6_K
        // kernel below.)
        Kernels::Avx2 if ty == QType::Q6K && q6k_form() == Q6kForm::UnitsFloat => {
            avx512::gemm_x8_q6k_units(packed, acts, nb, out, ldo)
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features detected (`wide` implies `wide_available`); sizes checked by the
        // caller.
        Kernels::Avx2 if acts.len() > nb && wide() => match ty {
            QType::Q4_0 => avx512::gemm_x8_q45::<false, false>(packed, acts, nb, out, ldo),
            QType::Q4_1 => avx512::gemm_x8_q45::<false, true>(packed, acts, nb, out, ldo),
            QType::Q5_0 => avx512::gemm_x8_q45::<true, false>(packed, acts, nb, out, ldo),
            QType::Q5_1 => avx512::gemm_x8_q45::<true, true>(packed, acts, nb, out, ldo),
            QType::Q4K => avx512::gemm_x8_k45::<false>(packed, acts, nb, out, ldo),
            QType::Q5K => avx512::gemm_x8_k45::<true>(packed, acts, nb, out, ldo),
            // (Not reached: `wide` makes Q6_K's form `UnitsFloat`, the arm above.)
            QType::Q6K => avx512::gemm_x8_q6k_units(packed, acts, nb, out, ldo),
            _ => avx512::gemm_x8_q8(packed, acts, nb, out, ldo),
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features detected; sizes checked by the caller.
        Kernels::Avx2 if vnni() && vnni_form() == Some(VnniForm::Avx512) => match ty {
            QType::Q4_0 => avx2::gemm_x8_q45_vnni512::<false, false>(packed, acts, nb, out, ldo),
            QType::Q4_1 => avx2::gemm_x8_q45_vnni512::<false, true>(packed, acts, nb, out, ldo),
            QType::Q5_0 => avx2::gemm_x8_q45_vnni512::<true, false>(packed, acts, nb, out, ldo),
            QType::Q5_1 => avx2::gemm_x8_q45_vnni512::<true, true>(packed, acts, nb, out, ldo),
            QType::Q4K => avx2_k::gemm_x8_k45_vnni512::<false>(packed, acts, nb, out, ldo),
            QType::Q5K => avx2_k::gemm_x8_k45_vnni512::<true>(packed, acts, nb, out, ldo),
            QType::Q6K => avx2_k::gemm_x8_q6k_vnni512(packed, acts, nb, out, ldo),
            _ => avx2::gemm_x8_q8_vnni512(packed, acts, nb, out, ldo, q8_pairs()),
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: features detected; sizes checked by the caller.
        Kernels::Avx2 => match ty {
            QType::Q4_0 if vnni() => {
                avx2::gemm_x8_q45_vnni::<false, false>(packed, acts, nb, out, ldo)
            }
            QType::Q4_1 if vnni() => {
                avx2::gemm_x8_q45_vnni::<false, true>(packed, acts, nb, out, ldo)
            }
            QType::Q5_0 if vnni() => {
                avx2::gemm_x8_q45_vnni::<true, false>(packed, acts, nb, out, ldo)
            }
            QType::Q5_1 if vnni() => {
                avx2::gemm_x8_q45_vnni::<true, true>(packed, acts, nb, out, ldo)
            }
            QType::Q4_0 => avx2::gemm_x8_q45::<false, false>(packed, acts, nb, out, ldo),
            QType::Q4_1 => avx2::gemm_x8_q45::<false, true>(packed, acts, nb, out, ldo),
            QType::Q5_0 => avx2::gemm_x8_q45::<true, false>(packed, acts, nb, out, ldo),
            QType::Q5_1 => avx2::gemm_x8_q45::<true, true>(packed, acts, nb, out, ldo),
            QType::Q4K if vnni() => avx2_k::gemm_x8_k45_vnni::<false>(packed, acts, nb, out, ldo),
            QType::Q5K if vnni() => avx2_k::gemm_x8_k45_vnni::<true>(packed, acts, nb, out, ldo),
            QType::Q6K if vnni() => avx2_k::gemm_x8_q6k_vnni(packed, acts, nb, out, ldo),
            QType::Q4K => avx2_k::gemm_x8_k45::<false>(packed, acts, nb, out, ldo),
            QType::Q5K => avx2_k::gemm_x8_k45::<true>(packed, acts, nb, out, ldo),
            QType::Q6K => avx2_k::gemm_x8_q6k(packed, acts, nb, out, ldo),
            _ if vnni() => avx2::gemm_x8_q8_vnni(packed, acts, nb, out, ldo, q8_pairs()),
            _ => avx2::gemm_x8_q8(packed, acts, nb, out, ldo, q8_pairs()),
        },
        _ => scalar::gemm_x8(ty, packed, acts, nb, out, ldo, q6k_form()),
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

/// `sum(a[i] * b[i])`.
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
