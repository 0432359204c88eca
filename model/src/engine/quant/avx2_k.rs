//! The x8 kernels of the K-quants (Q4_K, Q5_K, Q6_K; layout in [`super::blocks::k_layout`]),
//! on the x8 loop of [`super::avx2`]. Each is compiled twice: for AVX2 (`maddubs` into 16-bit
//! sums, widened before they can overflow) and for AVX-VNNI (`vpdpbusd`, four products
//! straight into 32-bit sums), chosen at run time ([`super::vnni`]). Both compute every
//! integer sum exactly, for any activation block, and then the same float operations in the
//! same order, so they give the same bits as each other and as the scalar reference.
#![allow(clippy::needless_range_loop)]
use std::arch::x86_64::*;

use super::avx2::{group_sets, x8_loop, SHARE};
use super::blocks::{k_layout, q6k_at, x8_block_bytes, BlockQ8, QType};

/// One unit (256 columns) of up to [`SHARE`] groups of eight rows of a K-quant, unpacked for
/// the token loop: the 64 weight registers (8 rows × 4 columns of 0..63 each; register
/// `8j + k` holds columns `4k..4k + 4` of sub-block `j`), `S` scales (d × the 6- or 8-bit
/// scale, per sub-block or per 16 columns) and for Q4_K / Q5_K the eight minimums (dmin ×
/// the 6-bit minimum), all eight rows at a time.
pub(super) struct UnpackedK<const G: usize, const S: usize> {
    pub(super) w: [[__m256i; 64]; G],
    pub(super) sc: [[__m256; S]; G],
    pub(super) nm: [[__m256; 8]; G],
}

/// Eight bytes at `p` as eight f32 lanes (unsigned or signed).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn bytes8_ps<const SIGNED: bool>(p: *const u8) -> __m256 {
    let x = _mm_loadl_epi64(p as *const __m128i);
    _mm256_cvtepi32_ps(if SIGNED {
        _mm256_cvtepi8_epi32(x)
    } else {
        _mm256_cvtepu8_epi32(x)
    })
}

/// Ask for the `bs`-byte unit after the one at `blk` (the one-token kernels stream their
/// units in order; the address may lie past the matrix, which a prefetch tolerates).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn prefetch_next_unit(blk: *const u8, bs: usize) {
    let mut o = 0;
    while o < bs {
        _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(bs + o) as *const i8);
        o += 64;
    }
}

/// The sums of `a`'s two halves of 16 quants (Q6_K's sub-blocks are 16 columns wide).
pub(super) fn half_sums(a: &BlockQ8) -> [i32; 2] {
    [0, 1].map(|e| a.qs[16 * e..16 * e + 16].iter().map(|&q| q as i32).sum())
}

/// Bytes `4k..4k + 4` of `a`'s quants, broadcast to eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn piece(a: &BlockQ8, k: usize) -> __m256i {
    _mm256_set1_epi32((a.qs.as_ptr().add(4 * k) as *const i32).read_unaligned())
}

/// Q4_K / Q5_K: fill group `g` of `u` from the unit at `blk`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_k45<const G: usize, const FIVE: bool>(
    blk: *const u8,
    g: usize,
    u: &mut UnpackedK<G, 8>,
) {
    let l = k_layout(if FIVE { QType::Q5K } else { QType::Q4K });
    let mask = _mm256_set1_epi8(0x0F);
    let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
    let dmin = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(l.dmin) as *const __m128i));
    for j in 0..8 {
        u.sc[g][j] = _mm256_mul_ps(d, bytes8_ps::<false>(blk.add(l.sc + 8 * j)));
        u.nm[g][j] = _mm256_mul_ps(dmin, bytes8_ps::<false>(blk.add(l.m + 8 * j)));
    }
    let w = &mut u.w[g];
    for c in 0..4 {
        for k in 0..8 {
            let x = _mm256_loadu_si256(blk.add(l.qs + 256 * c + 32 * k) as *const __m256i);
            let mut lo = _mm256_and_si256(x, mask);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(x), mask);
            if FIVE {
                // Bits 2c and 2c + 1 of each high-bit byte to 0x10.
                let h = _mm256_loadu_si256(blk.add(l.qh + 32 * k) as *const __m256i);
                let bit = |b: usize| {
                    let b = _mm256_set1_epi8(1 << b);
                    let on = _mm256_cmpeq_epi8(_mm256_and_si256(h, b), b);
                    _mm256_and_si256(on, _mm256_set1_epi8(0x10))
                };
                lo = _mm256_or_si256(lo, bit(2 * c));
                hi = _mm256_or_si256(hi, bit(2 * c + 1));
            }
            w[16 * c + k] = lo;
            w[16 * c + 8 + k] = hi;
        }
    }
}

/// Q6_K: fill group `g` of `u` from the unit at `blk`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn unpack_q6k<const G: usize>(
    blk: *const u8,
    g: usize,
    u: &mut UnpackedK<G, 16>,
) {
    let l = k_layout(QType::Q6K);
    let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
    for k in 0..16 {
        u.sc[g][k] = _mm256_mul_ps(d, bytes8_ps::<true>(blk.add(l.sc + 8 * k)));
    }
    let w = &mut u.w[g];
    for h in 0..2 {
        for k in 0..8 {
            let q = q6k_piece(blk, h, k);
            for i in 0..4 {
                w[8 * (4 * h + i) + k] = q[i];
            }
        }
    }
}

/// Q6_K: columns `4k..4k + 4` of sub-blocks `4h..4h + 4` of the unit at `blk`, as 0..63:
/// three planes ([`q6k_at`]), each one register's weights in its low six bits and two bits
/// of the fourth register's in its top two.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6k_piece(blk: *const u8, h: usize, k: usize) -> [__m256i; 4] {
    let at = blk.add(k_layout(QType::Q6K).qs + q6k_at(h, k, 0, 0, 0));
    let p: [__m256i; 3] =
        std::array::from_fn(|i| _mm256_loadu_si256(at.add(32 * i) as *const __m256i));
    let low = _mm256_set1_epi8(0x3F);
    // Each plane's top two bits to their place in the fourth weight (16-bit shifts: the
    // masks drop what crosses from the other byte of a lane).
    let top = _mm256_or_si256(
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<6>(p[0]), _mm256_set1_epi8(0x03)),
            _mm256_and_si256(_mm256_srli_epi16::<4>(p[1]), _mm256_set1_epi8(0x0C)),
        ),
        _mm256_and_si256(_mm256_srli_epi16::<2>(p[2]), _mm256_set1_epi8(0x30)),
    );
    [
        _mm256_and_si256(p[0], low),
        _mm256_and_si256(p[1], low),
        _mm256_and_si256(p[2], low),
        top,
    ]
}

/// One unit (256 columns) of up to [`SHARE`] groups of eight rows of Q6_K, unpacked for the
/// AVX2 loops without VNNI ([`gemm_x8_q6k_units`]): [`unpack_q6k`]'s registers with the
/// weights made signed (q - 32); each 16 columns' 8-bit scales as 16-bit pairs (`sc`
/// twice in each row's lane, for `madd`); `off`, -128 times the sum over the unit of each
/// 16 columns' weights times their scale; and the rows' `d`.
struct UnpackedQ6<const G: usize> {
    k: UnpackedK<G, 16>,
    sc: [[__m256i; 16]; G],
    off: [__m256i; G],
    d: [__m256; G],
}

/// The 8-bit scales of 16 columns `k` of the unit at `blk`, one per row, as 16-bit pairs:
/// each row's 32-bit lane holds its scale twice.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_scale_pairs(blk: *const u8, k: usize) -> __m256i {
    let at = blk.add(k_layout(QType::Q6K).sc + 8 * k);
    let s = _mm256_cvtepi8_epi32(_mm_loadl_epi64(at as *const __m128i));
    _mm256_or_si256(
        _mm256_and_si256(s, _mm256_set1_epi32(0xFFFF)),
        _mm256_slli_epi32::<16>(s),
    )
}

/// Q6_K for [`q6k_units_groups`]: fill group `g` of `u` from the unit at `blk`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_q6k_units<const G: usize>(blk: *const u8, g: usize, u: &mut UnpackedQ6<G>) {
    unpack_q6k::<G>(blk, g, &mut u.k);
    u.d[g] = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
    let m32 = _mm256_set1_epi8(32);
    let w = &mut u.k.w[g];
    for r in w.iter_mut() {
        *r = _mm256_sub_epi8(*r, m32);
    }
    // Each row's 16 weights of a half summed (pairs by `maddubs` against ones, at most 64 in
    // size, four pieces' pairs added in 16 bits), times the half's scale by `madd`, over the
    // unit; then times -128.
    let ones = _mm256_set1_epi8(1);
    let mut off = _mm256_setzero_si256();
    for k in 0..16 {
        let sc = q6k_scale_pairs(blk, k);
        u.sc[g][k] = sc;
        let (j, e) = (k / 2, k % 2);
        let mut sw = _mm256_setzero_si256();
        for p in 4 * e..4 * e + 4 {
            sw = _mm256_add_epi16(sw, _mm256_maddubs_epi16(ones, w[8 * j + p]));
        }
        off = _mm256_add_epi32(off, _mm256_madd_epi16(sw, sc));
    }
    u.off[g] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<7>(off));
}

/// [`super::gemm_x8`] for Q6_K on AVX2 without VNNI ([`super::q6k_units`]): activations with
/// one scale per 256 columns ([`super::quantize_row_q8_units`]), so each row's sixteen
/// 8-bit scales fold into its integer sum and a unit takes one float step,
/// `fma(sum, d·d_a, acc)`, instead of sixteen (1.12-1.24x the speed of a float step per 16
/// columns, 7B shapes, one thread, alternated in one process). The sum is exact (see
/// [`q6k_units_groups`]); the scalar kernels compute the same integer and the same float
/// step, so the same bits.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gemm_x8_q6k_units(
    packed: &[u8],
    acts: &[BlockQ8],
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    if acts.len() == nb {
        return q6k_units_gemv(packed, acts, out);
    }
    let bs = x8_block_bytes(QType::Q6K);
    for (g0, n) in group_sets(packed.len() / (nb / 8 * bs), acts.len() / nb) {
        let f = match n {
            1 => q6k_units_groups::<1>,
            2 => q6k_units_groups::<2>,
            3 => q6k_units_groups::<3>,
            _ => q6k_units_groups::<SHARE>,
        };
        f(g0, packed, acts, nb, out, ldo);
    }
}

/// Groups `g0..g0 + G` of [`gemm_x8_q6k_units`]: the activation bytes taken as unsigned
/// (a + 128, by flipping the top bit) against the signed weights, so that `maddubs` needs no
/// offset term per token; the unpacked `off` (-128 times the scaled weights' sum) starts each
/// sum instead, once per unit for all tokens. Per 16 columns, two pairs of products (each at
/// most 2 · 255 · 32 in size: two fit in 16 bits) summed in 16 bits, then times the scale
/// and widened by one `madd`; a unit's sum is at most about 4 · 10^8 in size, in 32 bits.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_units_groups<const G: usize>(
    g0: usize,
    packed: &[u8],
    acts: &[BlockQ8],
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let token = |u: &UnpackedQ6<G>, a: [&BlockQ8; 1], acc: &mut [[__m256; G]; 1]| {
        let flip = _mm256_set1_epi8(i8::MIN);
        let a0 = a[0] as *const BlockQ8;
        // The unit's activation bytes with their top bit flipped (a + 128), once for all
        // groups: each piece is then a broadcast straight from memory.
        let mut flipped = [_mm256_setzero_si256(); 8];
        for (j, f) in flipped.iter_mut().enumerate() {
            let q = (*a0.add(j)).qs.as_ptr() as *const __m256i;
            *f = _mm256_xor_si256(_mm256_loadu_si256(q), flip);
        }
        let fp = flipped.as_ptr() as *const i32;
        let mut isum: [__m256i; G] = u.off;
        for j in 0..8 {
            for e in 0..2 {
                for k2 in [4 * e, 4 * e + 2] {
                    let x = [
                        _mm256_set1_epi32(fp.add(8 * j + k2).read()),
                        _mm256_set1_epi32(fp.add(8 * j + k2 + 1).read()),
                    ];
                    for g in 0..G {
                        let w = &u.k.w[g][8 * j + k2..8 * j + k2 + 2];
                        let s = _mm256_add_epi16(
                            _mm256_maddubs_epi16(x[0], w[0]),
                            _mm256_maddubs_epi16(x[1], w[1]),
                        );
                        let v = _mm256_madd_epi16(s, u.sc[g][2 * j + e]);
                        isum[g] = _mm256_add_epi32(isum[g], v);
                    }
                }
            }
        }
        // The unit's one activation scale.
        let ad = _mm256_set1_ps((*a0).d);
        for g in 0..G {
            let f = _mm256_cvtepi32_ps(isum[g]);
            acc[0][g] = _mm256_fmadd_ps(f, _mm256_mul_ps(u.d[g], ad), acc[0][g]);
        }
    };
    let mut u = UnpackedQ6::<G> {
        k: UnpackedK {
            w: [[_mm256_setzero_si256(); 64]; G],
            sc: [[_mm256_setzero_ps(); 16]; G],
            nm: [[_mm256_setzero_ps(); 8]; G],
        },
        sc: [[_mm256_setzero_si256(); 16]; G],
        off: [_mm256_setzero_si256(); G],
        d: [_mm256_setzero_ps(); G],
    };
    let shape = (nb, 8, x8_block_bytes(QType::Q6K));
    let unpack = |blk, g, u: &mut _| unpack_q6k_units::<G>(blk, g, u);
    x8_loop::<G, 1, _>(packed, acts, shape, g0, out, ldo, &mut u, unpack, token);
}

/// One token of [`gemm_x8_q6k_units`], read straight from the packed bytes (no unpacked
/// copy): the unsigned weights (0..63) against the activations, two pieces' pairs summed in
/// 16 bits (at most 4 · 63 · 128), times the scale by `madd`; less 32 times each 16
/// activations' sum times its scale (one `madd` per sub-block's two halves: a half's
/// activation sum fits in 16 bits). The same integer as the token loop, the same float
/// step, so the same bits.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_units_gemv(packed: &[u8], act: &[BlockQ8], out: *mut f32) {
    let (l, bs) = (k_layout(QType::Q6K), x8_block_bytes(QType::Q6K));
    let units = act.len() / 8;
    // Per sub-block, its two halves' activation sums as one 32-bit word (16 bits each).
    let halves: Vec<i32> = act
        .iter()
        .map(|a| {
            let [h0, h1] = half_sums(a);
            (h0 & 0xFFFF) | (h1 << 16)
        })
        .collect();
    for g in 0..packed.len() / (units * bs) {
        let mut acc = _mm256_setzero_ps();
        for b in 0..units {
            let blk = packed.as_ptr().add((g * units + b) * bs);
            prefetch_next_unit(blk, bs);
            let mut isum = _mm256_setzero_si256();
            let mut corr = _mm256_setzero_si256();
            for j in 0..8 {
                // Each row's two half scales of sub-block j as a 16-bit pair, against the
                // two halves' activation sums.
                let pair = _mm_unpacklo_epi8(
                    _mm_loadl_epi64(blk.add(l.sc + 16 * j) as *const __m128i),
                    _mm_loadl_epi64(blk.add(l.sc + 16 * j + 8) as *const __m128i),
                );
                let v = _mm256_madd_epi16(
                    _mm256_cvtepi8_epi16(pair),
                    _mm256_set1_epi32(halves[8 * b + j]),
                );
                corr = _mm256_add_epi32(corr, v);
            }
            for h in 0..2 {
                for k2 in (0..8).step_by(2) {
                    let mut s16 = [_mm256_setzero_si256(); 4];
                    for k in k2..k2 + 2 {
                        let q = q6k_piece(blk, h, k);
                        for i in 0..4 {
                            let x = piece(&act[8 * b + 4 * h + i], k);
                            s16[i] = _mm256_add_epi16(s16[i], _mm256_maddubs_epi16(q[i], x));
                        }
                    }
                    for i in 0..4 {
                        let sc = q6k_scale_pairs(blk, 2 * (4 * h + i) + k2 / 4);
                        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(s16[i], sc));
                    }
                }
            }
            let isum = _mm256_sub_epi32(isum, _mm256_slli_epi32::<5>(corr));
            let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
            let f = _mm256_cvtepi32_ps(isum);
            acc = _mm256_fmadd_ps(f, _mm256_mul_ps(d, _mm256_set1_ps(act[8 * b].d)), acc);
        }
        _mm256_storeu_ps(out.add(8 * g), acc);
    }
}

/// The kernels for one instruction set: `$vnni` says whether `vpdpbusd` is used, `$dp` which
/// encoding of it (AVX-VNNI's, or AVX512-VNNI's on 256-bit registers).
macro_rules! k_kernels {
    (
        $k45:ident,
        $k45_groups:ident,
        $k45_gemv:ident,
        $q6k:ident,
        $q6k_groups:ident,
        $q6k_gemv:ident,
        $features:tt,
        $vnni:literal,
        $dp:ident
    ) => {
        /// [`super::gemm_x8`] for Q4_K / Q5_K (the caller checked the sizes): per 32-column
        /// sub-block as the Q4_1 / Q5_1 kernel, with the scale `d·sc` and the minimum
        /// `-(dmin·m)` of each row and sub-block. One token a step: two measured 0.91x for
        /// Q4_K on TinyLlama's shapes (examples/matmul_speed).
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $k45<const FIVE: bool>(
            packed: &[u8],
            acts: &[BlockQ8],
            nb: usize,
            out: *mut f32,
            ldo: usize,
        ) {
            let bs = x8_block_bytes(if FIVE { QType::Q5K } else { QType::Q4K });
            if acts.len() == nb {
                return $k45_gemv::<FIVE>(packed, acts, out);
            }
            for (g0, n) in group_sets(packed.len() / (nb / 8 * bs), acts.len() / nb) {
                let f = match n {
                    1 => $k45_groups::<1, FIVE>,
                    2 => $k45_groups::<2, FIVE>,
                    3 => $k45_groups::<3, FIVE>,
                    _ => $k45_groups::<SHARE, FIVE>,
                };
                f(g0, packed, acts, nb, out, ldo);
            }
        }

        /// Groups `g0..g0 + G`.
        #[target_feature(enable = $features)]
        unsafe fn $k45_groups<const G: usize, const FIVE: bool>(
            g0: usize,
            packed: &[u8],
            acts: &[BlockQ8],
            nb: usize,
            out: *mut f32,
            ldo: usize,
        ) {
            let token = |u: &UnpackedK<G, 8>, a: [&BlockQ8; 1], acc: &mut [[__m256; G]; 1]| {
                let ones = _mm256_set1_epi16(1);
                let a0 = a[0] as *const BlockQ8;
                for j in 0..8 {
                    let a = &*a0.add(j);
                    let mut isum = [_mm256_setzero_si256(); G];
                    if $vnni {
                        for k in 0..8 {
                            let x = piece(a, k);
                            for g in 0..G {
                                isum[g] = $dp(isum[g], u.w[g][8 * j + k], x);
                            }
                        }
                    } else {
                        // 16-bit sums: a half's four pieces (eight products, each at most
                        // 31 · 128 in size) fit in a lane, and for 4-bit weights (15 · 128)
                        // both halves' sixteen do, so 5-bit weights are widened per half and
                        // 4-bit ones once. Group by group, each half's four pieces held in
                        // registers: 1.11x (Q5_K) and 1.04x (Q4_K) the speed of piece by
                        // piece across the groups, which spilled sums to the stack
                        // (examples/matmul_speed's 7B shapes, one thread, alternated in one
                        // process; the 7B Q5_K_M prompt spent 13% fewer samples here).
                        let mut s16 = [_mm256_setzero_si256(); G];
                        for half in 0..2 {
                            let x: [__m256i; 4] = std::array::from_fn(|i| piece(a, 4 * half + i));
                            for g in 0..G {
                                let w = &u.w[g][8 * j + 4 * half..8 * j + 4 * half + 4];
                                let s = _mm256_add_epi16(
                                    _mm256_add_epi16(
                                        _mm256_maddubs_epi16(w[0], x[0]),
                                        _mm256_maddubs_epi16(w[1], x[1]),
                                    ),
                                    _mm256_add_epi16(
                                        _mm256_maddubs_epi16(w[2], x[2]),
                                        _mm256_maddubs_epi16(w[3], x[3]),
                                    ),
                                );
                                if FIVE {
                                    let v = _mm256_madd_epi16(s, ones);
                                    isum[g] = _mm256_add_epi32(isum[g], v);
                                } else if half == 0 {
                                    s16[g] = s;
                                } else {
                                    let v = _mm256_add_epi16(s16[g], s);
                                    isum[g] = _mm256_madd_epi16(v, ones);
                                }
                            }
                        }
                    }
                    let (ad, as_) = (_mm256_set1_ps(a.d), _mm256_set1_ps(a.s));
                    for g in 0..G {
                        let f = _mm256_cvtepi32_ps(isum[g]);
                        let x = _mm256_fmadd_ps(f, _mm256_mul_ps(u.sc[g][j], ad), acc[0][g]);
                        acc[0][g] = _mm256_fnmadd_ps(u.nm[g][j], as_, x);
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
            x8_loop::<G, 1, _>(packed, acts, shape, g0, out, ldo, &mut u, unpack, token);
        }

        /// One token of [`$k45`]: each unit's weights read once, straight from the packed
        /// bytes into the products (no unpacked copy), a 64-column part at a time; the same
        /// float operations in the same order as the token loop, so the same bits.
        #[target_feature(enable = $features)]
        unsafe fn $k45_gemv<const FIVE: bool>(packed: &[u8], act: &[BlockQ8], out: *mut f32) {
            let ty = if FIVE { QType::Q5K } else { QType::Q4K };
            let (l, bs) = (k_layout(ty), x8_block_bytes(ty));
            let units = act.len() / 8;
            let mask = _mm256_set1_epi8(0x0F);
            let ones = _mm256_set1_epi16(1);
            for g in 0..packed.len() / (units * bs) {
                let mut acc = _mm256_setzero_ps();
                for b in 0..units {
                    let blk = packed.as_ptr().add((g * units + b) * bs);
                    prefetch_next_unit(blk, bs);
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
                    let dmin = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(l.dmin) as *const __m128i));
                    for c in 0..4 {
                        let a = [&act[8 * b + 2 * c], &act[8 * b + 2 * c + 1]];
                        let mut isum = [_mm256_setzero_si256(); 2];
                        let mut s16 = [_mm256_setzero_si256(); 2];
                        for k in 0..8 {
                            let x = _mm256_loadu_si256(
                                blk.add(l.qs + 256 * c + 32 * k) as *const __m256i
                            );
                            let mut w = [
                                _mm256_and_si256(x, mask),
                                _mm256_and_si256(_mm256_srli_epi16::<4>(x), mask),
                            ];
                            if FIVE {
                                let h =
                                    _mm256_loadu_si256(blk.add(l.qh + 32 * k) as *const __m256i);
                                for i in 0..2 {
                                    let bit = _mm256_set1_epi8(1 << (2 * c + i));
                                    let on = _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit);
                                    let on = _mm256_and_si256(on, _mm256_set1_epi8(0x10));
                                    w[i] = _mm256_or_si256(w[i], on);
                                }
                            }
                            for i in 0..2 {
                                let x = piece(a[i], k);
                                if $vnni {
                                    isum[i] = $dp(isum[i], w[i], x);
                                } else {
                                    s16[i] =
                                        _mm256_add_epi16(s16[i], _mm256_maddubs_epi16(w[i], x));
                                }
                            }
                            // 16-bit sums as in the token loop: 5-bit weights widened every
                            // four pieces, 4-bit ones after all eight.
                            if !$vnni && (k == 7 || (FIVE && k == 3)) {
                                for i in 0..2 {
                                    let v = _mm256_madd_epi16(s16[i], ones);
                                    isum[i] = _mm256_add_epi32(isum[i], v);
                                    s16[i] = _mm256_setzero_si256();
                                }
                            }
                        }
                        for i in 0..2 {
                            let j = 2 * c + i;
                            let sc = _mm256_mul_ps(d, bytes8_ps::<false>(blk.add(l.sc + 8 * j)));
                            let nm = _mm256_mul_ps(dmin, bytes8_ps::<false>(blk.add(l.m + 8 * j)));
                            let f = _mm256_cvtepi32_ps(isum[i]);
                            let x =
                                _mm256_fmadd_ps(f, _mm256_mul_ps(sc, _mm256_set1_ps(a[i].d)), acc);
                            acc = _mm256_fnmadd_ps(nm, _mm256_set1_ps(a[i].s), x);
                        }
                    }
                }
                _mm256_storeu_ps(out.add(8 * g), acc);
            }
        }

        /// [`super::gemm_x8`] for Q6_K (the caller checked the sizes): with VNNI, weights
        /// 0..63 against the activations, less 32 times their sum (per token for all
        /// groups), each 16-column half widened and scaled on its own; without,
        /// [`gemm_x8_q6k_units`]. One token a step: two measured 0.94-0.96x on TinyLlama's
        /// shapes (examples/matmul_speed).
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $q6k(
            packed: &[u8],
            acts: &[BlockQ8],
            nb: usize,
            out: *mut f32,
            ldo: usize,
        ) {
            if !$vnni {
                return gemm_x8_q6k_units(packed, acts, nb, out, ldo);
            }
            let bs = x8_block_bytes(QType::Q6K);
            if acts.len() == nb {
                return $q6k_gemv(packed, acts, out);
            }
            for (g0, n) in group_sets(packed.len() / (nb / 8 * bs), acts.len() / nb) {
                let f = match n {
                    1 => $q6k_groups::<1>,
                    2 => $q6k_groups::<2>,
                    3 => $q6k_groups::<3>,
                    _ => $q6k_groups::<SHARE>,
                };
                f(g0, packed, acts, nb, out, ldo);
            }
        }

        /// Groups `g0..g0 + G`.
        #[target_feature(enable = $features)]
        unsafe fn $q6k_groups<const G: usize>(
            g0: usize,
            packed: &[u8],
            acts: &[BlockQ8],
            nb: usize,
            out: *mut f32,
            ldo: usize,
        ) {
            let token = |u: &UnpackedK<G, 16>, a: [&BlockQ8; 1], acc: &mut [[__m256; G]; 1]| {
                let off = _mm256_set1_epi8(32);
                let a0 = a[0] as *const BlockQ8;
                for j in 0..8 {
                    let a = &*a0.add(j);
                    let ad = _mm256_set1_ps(a.d);
                    for e in 0..2 {
                        // VNNI only: AVX2 without it takes `gemm_x8_q6k_units`.
                        let mut isum = [_mm256_setzero_si256(); G];
                        let mut corr = _mm256_setzero_si256();
                        for k in 4 * e..4 * e + 4 {
                            let x = piece(a, k);
                            corr = $dp(corr, off, x);
                            for g in 0..G {
                                isum[g] = $dp(isum[g], u.w[g][8 * j + k], x);
                            }
                        }
                        for g in 0..G {
                            isum[g] = _mm256_sub_epi32(isum[g], corr);
                        }
                        for g in 0..G {
                            let scale = _mm256_mul_ps(u.sc[g][2 * j + e], ad);
                            let f = _mm256_cvtepi32_ps(isum[g]);
                            acc[0][g] = _mm256_fmadd_ps(f, scale, acc[0][g]);
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
            x8_loop::<G, 1, _>(packed, acts, shape, g0, out, ldo, &mut u, unpack, token);
        }

        /// One token of [`$q6k`], read straight from the packed bytes as [`$k45_gemv`]; the
        /// offset term, 32 times each 16 activations' sum, computed once per call.
        #[target_feature(enable = $features)]
        unsafe fn $q6k_gemv(packed: &[u8], act: &[BlockQ8], out: *mut f32) {
            let (l, bs) = (k_layout(QType::Q6K), x8_block_bytes(QType::Q6K));
            let units = act.len() / 8;
            let corr: Vec<[i32; 2]> = act.iter().map(|a| half_sums(a).map(|h| 32 * h)).collect();
            for g in 0..packed.len() / (units * bs) {
                let mut acc = _mm256_setzero_ps();
                for b in 0..units {
                    let blk = packed.as_ptr().add((g * units + b) * bs);
                    prefetch_next_unit(blk, bs);
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
                    for h in 0..2 {
                        // isum[i][e]: sub-block 4h + i, half e.
                        let mut isum = [[_mm256_setzero_si256(); 2]; 4];
                        for k in 0..8 {
                            let q = q6k_piece(blk, h, k);
                            for i in 0..4 {
                                let x = piece(&act[8 * b + 4 * h + i], k);
                                isum[i][k / 4] = $dp(isum[i][k / 4], q[i], x);
                            }
                        }
                        for i in 0..4 {
                            let j = 4 * h + i;
                            let a = &act[8 * b + j];
                            let ad = _mm256_set1_ps(a.d);
                            for e in 0..2 {
                                let c = _mm256_set1_epi32(corr[8 * b + j][e]);
                                let f = _mm256_cvtepi32_ps(_mm256_sub_epi32(isum[i][e], c));
                                let k = 2 * j + e;
                                let sc = _mm256_mul_ps(d, bytes8_ps::<true>(blk.add(l.sc + 8 * k)));
                                acc = _mm256_fmadd_ps(f, _mm256_mul_ps(sc, ad), acc);
                            }
                        }
                    }
                }
                _mm256_storeu_ps(out.add(8 * g), acc);
            }
        }
    };
}

k_kernels!(
    gemm_x8_k45,
    k45_groups,
    k45_gemv,
    gemm_x8_q6k,
    q6k_groups,
    q6k_gemv,
    "avx2,fma,f16c",
    false,
    _mm256_dpbusd_avx_epi32
);
k_kernels!(
    gemm_x8_k45_vnni,
    k45_groups_vnni,
    k45_gemv_vnni,
    gemm_x8_q6k_vnni,
    q6k_groups_vnni,
    q6k_gemv_vnni,
    "avx2,fma,f16c,avxvnni",
    true,
    _mm256_dpbusd_avx_epi32
);
k_kernels!(
    gemm_x8_k45_vnni512,
    k45_groups_vnni512,
    k45_gemv_vnni512,
    gemm_x8_q6k_vnni512,
    q6k_groups_vnni512,
    q6k_gemv_vnni512,
    "avx2,fma,f16c,avx512vnni,avx512vl",
    true,
    _mm256_dpbusd_epi32
);
