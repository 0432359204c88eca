//! The AVX2 + FMA + F16C kernels (x86_64; the dispatch runs them only where the features are
//! detected at run time). Bit-identical to [`super::scalar`]; see the dispatch module's docs.
#![allow(clippy::needless_range_loop)]
use super::blocks::{scale_min_k4, BlockQ8, QType};
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
unsafe fn qk45_x4t<const FIVE: bool>(row: &[u8], acts: [&[BlockQ8]; 4], sc: Scales4) -> [f32; 4] {
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
unsafe fn qk45<const N: usize, const FIVE: bool>(row: &[u8], acts: [&[BlockQ8]; N]) -> [f32; N] {
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
    for (i, ob) in out.iter_mut().enumerate() {
        let p = x.as_ptr().add(32 * i);
        q8_block(p, abs_max(p, 4), ob);
    }
}

/// [`super::quantize_row_q8_units`]: the scalar code's operations (its maximum, division
/// and rounding), so the same bits.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_row_q8_units(x: &[f32], out: &mut [BlockQ8]) {
    for (u, ou) in out.chunks_exact_mut(8).enumerate() {
        let p = x.as_ptr().add(256 * u);
        let amax = abs_max(p, 32);
        for (i, ob) in ou.iter_mut().enumerate() {
            q8_block(p.add(32 * i), amax, ob);
        }
    }
}

/// The largest magnitude of the `8 * n` values at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn abs_max(p: *const f32, n: usize) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let mut mx = _mm256_andnot_ps(sign, _mm256_loadu_ps(p));
    for k in 1..n {
        mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(8 * k))));
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps::<1>(mx));
    let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    _mm_cvtss_f32(m4)
}

/// The 32 values at `p` as one block whose scale is `amax / 127`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_block(p: *const f32, amax: f32, ob: &mut BlockQ8) {
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let v = [
        _mm256_loadu_ps(p),
        _mm256_loadu_ps(p.add(8)),
        _mm256_loadu_ps(p.add(16)),
        _mm256_loadu_ps(p.add(24)),
    ];
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
pub(super) const SHARE: usize = 4;
/// Tokens whose accumulators the x8 kernels keep while they walk the blocks: each block
/// of weights is unpacked once for all of them. Runs of 128 measured 1.04-1.07x runs of 32
/// on Q4_1 and Q8_0 products of prefill shapes (in one process, alternating); their
/// activations (90-250 KiB for SmolLM2) stay in L2, as those of 256 would not for the
/// 1536-wide `ffn_down`.
pub(super) const RUN: usize = 128;

/// One block of up to [`SHARE`] groups of eight rows, unpacked for the token loop: the
/// quant bytes of chunk `c` of group `g` (`w[g][c]`; for Q8_0 also `|w|` in `aw`), the
/// eight rows' scales `d[g]` and minimums or offsets `m[g]` as f32.
pub(super) struct Unpacked<const G: usize> {
    pub(super) w: [[__m256i; 8]; G],
    pub(super) aw: [[__m256i; 8]; G],
    pub(super) d: [__m256; G],
    pub(super) m: [__m256; G],
}

impl<const G: usize> Unpacked<G> {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn new() -> Self {
        Self {
            w: [[_mm256_setzero_si256(); 8]; G],
            aw: [[_mm256_setzero_si256(); 8]; G],
            d: [_mm256_setzero_ps(); G],
            m: [_mm256_setzero_ps(); G],
        }
    }
}

/// Ask for the `bytes` bytes at `p` (the block after the one being unpacked). Past the last
/// block `p` lies outside the weights: the addresses are formed with `wrapping_add`, which
/// allows that, and a prefetch never faults.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn prefetch(p: *const u8, bytes: usize) {
    let mut o = 0;
    while o < bytes {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(o) as *const i8);
        o += 64;
    }
}

/// Ask for the output lines of `n` tokens (`8 * G` floats each, a stride `ldo` apart from
/// `o`) a block ahead of their stores: they are usually outside the caches (the output of a
/// prefill product is megabytes). A read prefetch: a write-intent one (`prefetchw`) needs
/// the prfchw feature, which these functions do not enable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn prefetch_out<const G: usize>(o: *const f32, ldo: usize, n: usize) {
    for j in 0..n {
        let o = o.add(j * ldo) as *const i8;
        let mut k = 0;
        while k < 32 * G {
            _mm_prefetch::<_MM_HINT_T0>(o.add(k));
            k += 64;
        }
        _mm_prefetch::<_MM_HINT_T0>(o.add(32 * G - 1));
    }
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
pub(super) unsafe fn x8_loop<const G: usize, const P: usize, U>(
    packed: &[u8],
    acts: &[BlockQ8],
    (nb, unit, bs): (usize, usize, usize),
    g0: usize,
    po: *mut f32,
    ldo: usize,
    u: &mut U,
    unpack: impl Fn(*const u8, usize, &mut U),
    token: impl Fn(&U, [&BlockQ8; P], &mut [[__m256; G]; P]),
) {
    let t = acts.len() / nb;
    let units = nb / unit;
    // Prefetch distance: four 32-column blocks, or one K-quant unit (256 columns).
    let ahead = if unit == 1 { 4 * bs } else { bs };
    let zero = [_mm256_setzero_ps(); G];
    // RUN tokens and room for a run's last group of P to overhang it, left uninitialised:
    // each run zeroes the part it uses, instead of all of it (~17 KiB) on every call too.
    let mut acc = [std::mem::MaybeUninit::<[__m256; G]>::uninit(); RUN + 4];
    let mut i0 = 0;
    while i0 < t {
        let n = (t - i0).min(RUN);
        for a in &mut acc[..n.next_multiple_of(P)] {
            a.write(zero);
        }
        for b in 0..units {
            for g in 0..G {
                let blk = packed.as_ptr().add(((g0 + g) * units + b) * bs);
                prefetch(blk.wrapping_add(ahead), bs);
                unpack(blk, g, u);
            }
            if b + 1 == units {
                prefetch_out::<G>(po.add(i0 * ldo + 8 * g0), ldo, n);
            }
            let mut j = 0;
            while j < n {
                let a = std::array::from_fn(|k| {
                    acts.get_unchecked((i0 + (j + k).min(n - 1)) * nb + b * unit)
                });
                // SAFETY: j + P <= n.next_multiple_of(P) <= RUN + P - 1 < acc.len() (P is
                // at most 2), so the P accumulators lie inside `acc`, in its part this run
                // initialised; MaybeUninit<T> has T's layout.
                token(
                    u,
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
pub(super) fn group_sets(groups: usize, tokens: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = if tokens < SHARE { 1 } else { SHARE };
    (0..groups)
        .step_by(step)
        .map(move |g0| (g0, step.min(groups - g0)))
}

/// Q4_0 / Q4_1 / Q5_0 / Q5_1: fill group `g` of `u` from the block of eight rows at `blk`:
/// the weights as unsigned bytes (0..16 or 0..32), the scales, and the minimums or the
/// offset times the scale.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q45<const G: usize, const FIVE: bool, const MIN: bool>(
    blk: *const u8,
    g: usize,
    u: &mut Unpacked<G>,
) {
    let nf = if MIN { 2 } else { 1 };
    let chunks_at = 16 * nf + if FIVE { 32 } else { 0 };
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
}

/// The Q4_0 / Q4_1 / Q5_0 / Q5_1 kernels for one instruction set: `$vnni` says whether
/// `vpdpbusd` sums the products (exactly, as the 16-bit sums do: the same bits), `$dp` which
/// encoding of it (AVX-VNNI's, or AVX512-VNNI's on 256-bit registers).
macro_rules! q45_kernels {
    ($gemm:ident, $groups:ident, $features:tt, $vnni:literal, $dp:ident) => {
        /// [`super::gemm_x8`] for Q4_0 / Q4_1 / Q5_0 / Q5_1 (the caller checked the sizes).
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $gemm<const FIVE: bool, const MIN: bool>(
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
                    (1, _) => $groups::<1, 1, FIVE, MIN>,
                    (2, false) => $groups::<2, 2, FIVE, MIN>,
                    (2, true) => $groups::<2, 1, FIVE, MIN>,
                    (3, false) => $groups::<3, 2, FIVE, MIN>,
                    (3, true) => $groups::<3, 1, FIVE, MIN>,
                    (_, false) => $groups::<SHARE, 2, FIVE, MIN>,
                    (_, true) => $groups::<SHARE, 1, FIVE, MIN>,
                };
                f(g0, packed, acts, nb, out, ldo);
            }
        }

        /// Groups `g0..g0 + G` of the kernel above: per step of `P` tokens, the eight unpacked
        /// weight registers of each group against each token's eight broadcast activations.
        #[target_feature(enable = $features)]
        unsafe fn $groups<const G: usize, const P: usize, const FIVE: bool, const MIN: bool>(
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
            let unpack = |blk, g, u: &mut _| unpack_q45::<G, FIVE, MIN>(blk, g, u);
            let token = |u: &Unpacked<G>, a: [&BlockQ8; P], acc: &mut [[__m256; G]; P]| {
                let ones = _mm256_set1_epi16(1);
                // 16-bit sums: eight products of up to 15 · 128 per lane fit, for 5-bit weights
                // four do, so those are widened in two halves. With VNNI, `lo` holds 32-bit sums
                // of all eight pieces (the same exact integers).
                let mut lo = [[_mm256_setzero_si256(); G]; P];
                let mut hi = [[_mm256_setzero_si256(); G]; P];
                for c in 0..8 {
                    let x: [__m256i; P] = std::array::from_fn(|p| {
                        _mm256_set1_epi32(
                            (a[p].qs.as_ptr().add(4 * c) as *const i32).read_unaligned(),
                        )
                    });
                    for g in 0..G {
                        let w = u.w[g][c];
                        for p in 0..P {
                            if $vnni {
                                lo[p][g] = $dp(lo[p][g], w, x[p]);
                                continue;
                            }
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
                        let isum = if $vnni {
                            lo[p][g]
                        } else if FIVE {
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
            let mut u = Unpacked::<G>::new();
            let shape = (nb, 1, bs);
            x8_loop::<G, P, _>(packed, acts, shape, g0, out, ldo, &mut u, unpack, token);
        }
    };
}

q45_kernels!(
    gemm_x8_q45,
    q45_groups,
    "avx2,fma,f16c",
    false,
    _mm256_dpbusd_avx_epi32
);
q45_kernels!(
    gemm_x8_q45_vnni,
    q45_groups_vnni,
    "avx2,fma,f16c,avxvnni",
    true,
    _mm256_dpbusd_avx_epi32
);
q45_kernels!(
    gemm_x8_q45_vnni512,
    q45_groups_vnni512,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    true,
    _mm256_dpbusd_epi32
);

/// The Q8_0 kernels for one instruction set: |w| against the activation with w's sign moved
/// onto it, each chunk's products summed to 32 bits by `maddubs` + `madd`, or by `vpdpbusd`
/// where `$vnni`. The same bits either way: |w| is at most 128 (w = -128 stays 0x80) and the
/// signed activation byte at least -128, so a pair of products lies in [-32768, 32512] and the
/// 16-bit sums of `maddubs` never saturate; both compute each 32-bit sum exactly.
macro_rules! q8_kernels {
    ($gemm:ident, $groups:ident, $features:tt, $vnni:literal, $dp:ident) => {
        /// [`super::gemm_x8`] for Q8_0 (the caller checked the sizes), two tokens a step in
        /// sets of [`SHARE`] groups where `pairs` ([`super::q8_pairs`]).
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $gemm(
            packed: &[u8],
            acts: &[BlockQ8],
            nb: usize,
            out: *mut f32,
            ldo: usize,
            pairs: bool,
        ) {
            for (g0, n) in group_sets(packed.len() / (nb * (16 + 256)), acts.len() / nb) {
                let f = match n {
                    1 => $groups::<1, 1>,
                    2 => $groups::<2, 1>,
                    3 => $groups::<3, 1>,
                    _ if pairs => $groups::<SHARE, 2>,
                    _ => $groups::<SHARE, 1>,
                };
                f(g0, packed, acts, nb, out, ldo);
            }
        }

        /// Groups `g0..g0 + G` of the Q8_0 kernel.
        #[target_feature(enable = $features)]
        unsafe fn $groups<const G: usize, const P: usize>(
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
                        _mm256_set1_epi32(
                            (a[p].qs.as_ptr().add(4 * c) as *const i32).read_unaligned(),
                        )
                    });
                    for g in 0..G {
                        let (w, aw) = (u.w[g][c], u.aw[g][c]);
                        for p in 0..P {
                            let sx = _mm256_sign_epi8(x[p], w);
                            isum[p][g] = if $vnni {
                                $dp(isum[p][g], aw, sx)
                            } else {
                                let m = _mm256_maddubs_epi16(aw, sx);
                                _mm256_add_epi32(isum[p][g], _mm256_madd_epi16(m, ones))
                            };
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
            let mut u = Unpacked::<G>::new();
            let shape = (nb, 1, 16 + 256);
            x8_loop::<G, P, _>(packed, acts, shape, g0, out, ldo, &mut u, unpack, token);
        }
    };
}

q8_kernels!(
    gemm_x8_q8,
    q8_groups,
    "avx2,fma,f16c",
    false,
    _mm256_dpbusd_avx_epi32
);
q8_kernels!(
    gemm_x8_q8_vnni,
    q8_groups_vnni,
    "avx2,fma,f16c,avxvnni",
    true,
    _mm256_dpbusd_avx_epi32
);
q8_kernels!(
    gemm_x8_q8_vnni512,
    q8_groups_vnni512,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    true,
    _mm256_dpbusd_epi32
);

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
