//! 512-bit forms of the x8 kernels, for products of two or more tokens on CPUs with
//! AVX-512 (F, BW, VL) and AVX512-VNNI ([`super::wide`]). The x8 layout is unchanged: each
//! `vpdpbusd` on a 512-bit register takes one 256-bit register of eight rows' weights in both
//! halves, against two tokens' activations, one token a half. The weights are unpacked by the
//! 256-bit kernels' own code ([`super::avx2`], [`super::avx2_k`]), once per block for a run of
//! tokens; only the token loop is wider, so each instruction of it does two tokens' work.
//!
//! Every integer sum is exact, and each lane then takes the same float operations in the same
//! order as the 256-bit kernels and the scalar reference: the same bits, for any activation
//! block (Q8_0 keeps `_mm256_sign_epi8`'s wrapping of -128, which AVX-512 has no instruction
//! for, with a masked negation).
#![allow(clippy::needless_range_loop)]
use std::arch::x86_64::*;

use super::avx2::{group_sets, prefetch, prefetch_out, unpack_q45, Unpacked, RUN, SHARE};
use super::avx2_k::{unpack_k45, unpack_q6k, UnpackedK};
use super::blocks::{x8_block_bytes, BlockQ8, QType};

/// `v` in both halves.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn both(v: __m256i) -> __m512i {
    _mm512_broadcast_i64x4(v)
}

/// `v` in both halves.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn both_ps(v: __m256) -> __m512 {
    _mm512_castsi512_ps(_mm512_broadcast_i64x4(_mm256_castps_si256(v)))
}

/// Bytes `4k..4k + 4` of `a`'s quants in the eight lanes of the low half, `b`'s in the high.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn pair_piece(a: &BlockQ8, b: &BlockQ8, k: usize) -> __m512i {
    let at = |x: &BlockQ8| (x.qs.as_ptr().add(4 * k) as *const i32).read_unaligned();
    _mm512_mask_set1_epi32(_mm512_set1_epi32(at(a)), 0xFF00, at(b))
}

/// `a` in the low half's lanes, `b` in the high half's.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn pair_ps(a: f32, b: f32) -> __m512 {
    _mm512_mask_mov_ps(_mm512_set1_ps(a), 0xFF00, _mm512_set1_ps(b))
}

/// [`super::avx2::x8_loop`] two tokens a step: for each set of `G` groups of eight rows and
/// each run of up to [`RUN`] tokens, block by block, `unpack` fills `u` and `token(u, [a, b],
/// acc)` adds the activation blocks of two tokens into one 512-bit accumulator per group (the
/// first token's eight rows in the low half, the second's in the high). A run of an odd count
/// of tokens ends with its last token in both halves of its last step; only the low half of
/// that step is stored.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn pair_loop<const G: usize, U>(
    packed: &[u8],
    acts: &[BlockQ8],
    (nb, unit, bs): (usize, usize, usize),
    g0: usize,
    po: *mut f32,
    ldo: usize,
    u: &mut U,
    unpack: impl Fn(*const u8, usize, &mut U),
    token: impl Fn(&U, [&BlockQ8; 2], &mut [__m512; G]),
) {
    let t = acts.len() / nb;
    let units = nb / unit;
    let ahead = if unit == 1 { 4 * bs } else { bs };
    let zero = [_mm512_setzero_ps(); G];
    // A run's steps, left uninitialised: each run zeroes the part it uses.
    let mut acc = [std::mem::MaybeUninit::<[__m512; G]>::uninit(); RUN / 2];
    let mut i0 = 0;
    while i0 < t {
        let n = (t - i0).min(RUN);
        let steps = n.div_ceil(2);
        for a in &mut acc[..steps] {
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
            for s in 0..steps {
                let (j, k) = (i0 + 2 * s, i0 + (2 * s + 1).min(n - 1));
                let a = [
                    acts.get_unchecked(j * nb + b * unit),
                    acts.get_unchecked(k * nb + b * unit),
                ];
                // SAFETY: s < steps <= RUN / 2, initialised at the start of the run.
                token(u, a, acc.get_unchecked_mut(s).assume_init_mut());
            }
        }
        for s in 0..steps {
            // SAFETY: initialised at the start of the run.
            let a = acc[s].assume_init_ref();
            let j = i0 + 2 * s;
            for g in 0..G {
                let o = po.add(j * ldo + 8 * (g0 + g));
                _mm256_storeu_ps(o, _mm512_castps512_ps256(a[g]));
                if 2 * s + 1 < n {
                    let hi = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(a[g]));
                    _mm256_storeu_ps(o.add(ldo), _mm256_castpd_ps(hi));
                }
            }
        }
        i0 += n;
    }
}

/// A kernel's groups function: `(g0, packed, acts, nb, out, ldo)` for groups `g0..g0 + G`.
type Groups = unsafe fn(usize, &[u8], &[BlockQ8], usize, *mut f32, usize);

/// Runs `sets[G - 1]` (the kernel for `G` groups) over the sets of groups of eight rows of
/// `group_bytes` bytes each.
///
/// # Safety
/// As the kernels: features detected, sizes checked by the caller.
#[inline]
unsafe fn each_set(
    sets: [Groups; SHARE],
    group_bytes: usize,
    (packed, acts, nb): (&[u8], &[BlockQ8], usize),
    out: *mut f32,
    ldo: usize,
) {
    for (g0, n) in group_sets(packed.len() / group_bytes, acts.len() / nb) {
        sets[n - 1](g0, packed, acts, nb, out, ldo);
    }
}

/// The 32-element format of the Q4_0 / Q4_1 / Q5_0 / Q5_1 kernels' parameters.
fn q45_type(five: bool, min: bool) -> QType {
    match (five, min) {
        (false, false) => QType::Q4_0,
        (false, true) => QType::Q4_1,
        (true, false) => QType::Q5_0,
        (true, true) => QType::Q5_1,
    }
}

/// [`super::gemm_x8`] for Q4_0 / Q4_1 / Q5_0 / Q5_1 and two or more tokens (the caller
/// checked the sizes): the float steps of the 256-bit kernel on two tokens at once.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn gemm_x8_q45<const FIVE: bool, const MIN: bool>(
    packed: &[u8],
    acts: &[BlockQ8],
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let bs = x8_block_bytes(q45_type(FIVE, MIN));
    let sets: [Groups; SHARE] = [
        q45_groups::<1, FIVE, MIN>,
        q45_groups::<2, FIVE, MIN>,
        q45_groups::<3, FIVE, MIN>,
        q45_groups::<SHARE, FIVE, MIN>,
    ];
    each_set(sets, nb * bs, (packed, acts, nb), out, ldo);
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q45_groups<const G: usize, const FIVE: bool, const MIN: bool>(
    g0: usize,
    packed: &[u8],
    acts: &[BlockQ8],
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let bs = x8_block_bytes(q45_type(FIVE, MIN));
    let unpack = |blk, g, u: &mut _| unpack_q45::<G, FIVE, MIN>(blk, g, u);
    let token = |u: &Unpacked<G>, a: [&BlockQ8; 2], acc: &mut [__m512; G]| {
        let mut isum = [_mm512_setzero_si512(); G];
        for c in 0..8 {
            let x = pair_piece(a[0], a[1], c);
            for g in 0..G {
                isum[g] = _mm512_dpbusd_epi32(isum[g], both(u.w[g][c]), x);
            }
        }
        let (ad, as_) = (pair_ps(a[0].d, a[1].d), pair_ps(a[0].s, a[1].s));
        for g in 0..G {
            let f = _mm512_cvtepi32_ps(isum[g]);
            let x = _mm512_fmadd_ps(f, _mm512_mul_ps(both_ps(u.d[g]), ad), acc[g]);
            acc[g] = _mm512_fmadd_ps(both_ps(u.m[g]), as_, x);
        }
    };
    let mut u = Unpacked::<G>::new();
    pair_loop::<G, _>(
        packed,
        acts,
        (nb, 1, bs),
        g0,
        out,
        ldo,
        &mut u,
        unpack,
        token,
    );
}

/// One block of up to [`SHARE`] groups of eight Q8_0 rows: `|w|` of each chunk, the lanes
/// where `w` is negative (in both halves), the scales.
struct UnpackedQ8<const G: usize> {
    aw: [[__m256i; 8]; G],
    neg: [[__mmask64; 8]; G],
    d: [__m256; G],
}

/// [`super::gemm_x8`] for Q8_0 and two or more tokens (the caller checked the sizes): `|w|`
/// against the activation negated where `w` is negative (wrapping, as `_mm256_sign_epi8`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn gemm_x8_q8(
    packed: &[u8],
    acts: &[BlockQ8],
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let sets: [Groups; SHARE] = [
        q8_groups::<1>,
        q8_groups::<2>,
        q8_groups::<3>,
        q8_groups::<SHARE>,
    ];
    each_set(sets, nb * (16 + 256), (packed, acts, nb), out, ldo);
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_groups<const G: usize>(
    g0: usize,
    packed: &[u8],
    acts: &[BlockQ8],
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let unpack = |blk: *const u8, g: usize, u: &mut UnpackedQ8<G>| {
        u.d[g] = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
        for c in 0..8 {
            let w = _mm256_loadu_si256(blk.add(16 + 32 * c) as *const __m256i);
            u.aw[g][c] = _mm256_abs_epi8(w);
            let m = _mm256_movemask_epi8(w) as u32 as u64;
            u.neg[g][c] = m | (m << 32);
        }
    };
    let token = |u: &UnpackedQ8<G>, a: [&BlockQ8; 2], acc: &mut [__m512; G]| {
        let zero = _mm512_setzero_si512();
        let mut isum = [_mm512_setzero_si512(); G];
        for c in 0..8 {
            let x = pair_piece(a[0], a[1], c);
            for g in 0..G {
                let sx = _mm512_mask_sub_epi8(x, u.neg[g][c], zero, x);
                isum[g] = _mm512_dpbusd_epi32(isum[g], both(u.aw[g][c]), sx);
            }
        }
        let ad = pair_ps(a[0].d, a[1].d);
        for g in 0..G {
            let f = _mm512_cvtepi32_ps(isum[g]);
            acc[g] = _mm512_fmadd_ps(f, _mm512_mul_ps(both_ps(u.d[g]), ad), acc[g]);
        }
    };
    let mut u = UnpackedQ8::<G> {
        aw: [[_mm256_setzero_si256(); 8]; G],
        neg: [[0; 8]; G],
        d: [_mm256_setzero_ps(); G],
    };
    pair_loop::<G, _>(
        packed,
        acts,
        (nb, 1, 16 + 256),
        g0,
        out,
        ldo,
        &mut u,
        unpack,
        token,
    );
}

/// [`super::gemm_x8`] for Q4_K / Q5_K and two or more tokens (the caller checked the sizes):
/// per 32-column sub-block, the sub-block scale and minimum as in the 256-bit kernel.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn gemm_x8_k45<const FIVE: bool>(
    packed: &[u8],
    acts: &[BlockQ8],
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let bs = x8_block_bytes(if FIVE { QType::Q5K } else { QType::Q4K });
    let sets: [Groups; SHARE] = [
        k45_groups::<1, FIVE>,
        k45_groups::<2, FIVE>,
        k45_groups::<3, FIVE>,
        k45_groups::<SHARE, FIVE>,
    ];
    each_set(sets, nb / 8 * bs, (packed, acts, nb), out, ldo);
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn k45_groups<const G: usize, const FIVE: bool>(
    g0: usize,
    packed: &[u8],
    acts: &[BlockQ8],
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let token = |u: &UnpackedK<G, 8>, a: [&BlockQ8; 2], acc: &mut [__m512; G]| {
        let (p0, p1) = (a[0] as *const BlockQ8, a[1] as *const BlockQ8);
        for j in 0..8 {
            let (a0, a1) = (&*p0.add(j), &*p1.add(j));
            let mut isum = [_mm512_setzero_si512(); G];
            for k in 0..8 {
                let x = pair_piece(a0, a1, k);
                for g in 0..G {
                    isum[g] = _mm512_dpbusd_epi32(isum[g], both(u.w[g][8 * j + k]), x);
                }
            }
            let (ad, as_) = (pair_ps(a0.d, a1.d), pair_ps(a0.s, a1.s));
            for g in 0..G {
                let f = _mm512_cvtepi32_ps(isum[g]);
                let x = _mm512_fmadd_ps(f, _mm512_mul_ps(both_ps(u.sc[g][j]), ad), acc[g]);
                acc[g] = _mm512_fnmadd_ps(both_ps(u.nm[g][j]), as_, x);
            }
        }
    };
    let mut u = UnpackedK::<G, 8> {
        w: [[_mm256_setzero_si256(); 64]; G],
        sc: [[_mm256_setzero_ps(); 8]; G],
        nm: [[_mm256_setzero_ps(); 8]; G],
    };
    let ty = if FIVE { QType::Q5K } else { QType::Q4K };
    let shape = (nb, 8, x8_block_bytes(ty));
    let unpack = |blk, g, u: &mut _| unpack_k45::<G, FIVE>(blk, g, u);
    pair_loop::<G, _>(packed, acts, shape, g0, out, ldo, &mut u, unpack, token);
}

/// [`super::gemm_x8`] for Q6_K and two or more tokens (the caller checked the sizes): weights
/// 0..63 against the activations, less 32 times their sum, per 16-column half.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn gemm_x8_q6k(
    packed: &[u8],
    acts: &[BlockQ8],
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let bs = x8_block_bytes(QType::Q6K);
    let sets: [Groups; SHARE] = [
        q6k_groups::<1>,
        q6k_groups::<2>,
        q6k_groups::<3>,
        q6k_groups::<SHARE>,
    ];
    each_set(sets, nb / 8 * bs, (packed, acts, nb), out, ldo);
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q6k_groups<const G: usize>(
    g0: usize,
    packed: &[u8],
    acts: &[BlockQ8],
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let token = |u: &UnpackedK<G, 16>, a: [&BlockQ8; 2], acc: &mut [__m512; G]| {
        let off = _mm512_set1_epi8(32);
        let (p0, p1) = (a[0] as *const BlockQ8, a[1] as *const BlockQ8);
        for j in 0..8 {
            let (a0, a1) = (&*p0.add(j), &*p1.add(j));
            let ad = pair_ps(a0.d, a1.d);
            for e in 0..2 {
                let mut isum = [_mm512_setzero_si512(); G];
                let mut corr = _mm512_setzero_si512();
                for k in 4 * e..4 * e + 4 {
                    let x = pair_piece(a0, a1, k);
                    corr = _mm512_dpbusd_epi32(corr, off, x);
                    for g in 0..G {
                        isum[g] = _mm512_dpbusd_epi32(isum[g], both(u.w[g][8 * j + k]), x);
                    }
                }
                for g in 0..G {
                    let scale = _mm512_mul_ps(both_ps(u.sc[g][2 * j + e]), ad);
                    let f = _mm512_cvtepi32_ps(_mm512_sub_epi32(isum[g], corr));
                    acc[g] = _mm512_fmadd_ps(f, scale, acc[g]);
                }
            }
        }
    };
    let mut u = UnpackedK::<G, 16> {
        w: [[_mm256_setzero_si256(); 64]; G],
        sc: [[_mm256_setzero_ps(); 16]; G],
        nm: [[_mm256_setzero_ps(); 8]; G],
    };
    let shape = (nb, 8, x8_block_bytes(QType::Q6K));
    let unpack = |blk, g, u: &mut _| unpack_q6k::<G>(blk, g, u);
    pair_loop::<G, _>(packed, acts, shape, g0, out, ldo, &mut u, unpack, token);
}
