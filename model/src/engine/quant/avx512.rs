//! 512-bit forms of the x8 kernels, for products of two or more tokens on CPUs with
//! AVX-512 (F, BW, VL) and AVX512-VNNI ([`super::wide`]). The x8 layout is unchanged, and
//! the weights are unpacked by the 256-bit kernels' own code ([`super::avx2`],
//! [`super::avx2_k`]), once per block or unit for a run of tokens; only the token loop is
//! wider. The 32-element formats ([`pair_loop`]) run each `vpdpbusd` on one 256-bit register
//! of eight rows' weights in both halves, against two tokens' activations, one token a
//! half. The K-quants ([`row16_loop`]) join two groups of eight rows into one register of
//! sixteen, against one token's activations in every lane: a 4-byte activation is then a
//! broadcast load instead of a shuffle of two tokens' bytes.
//!
//! Every integer sum is exact, and each lane then takes the same float operations in the same
//! order as the 256-bit kernels and the scalar reference: the same bits, for any activation
//! block (Q8_0 keeps `_mm256_sign_epi8`'s wrapping of -128, which AVX-512 has no instruction
//! for, with a masked negation). Q6_K here takes its own form ([`super::Q6kForm::UnitsFloat`],
//! [`gemm_x8_q6k_units`]), which the scalar kernels follow.
#![allow(clippy::needless_range_loop)]
use std::arch::x86_64::*;

use super::avx2::{group_sets, prefetch, prefetch_out, unpack_q45, Unpacked, RUN, SHARE};
use super::avx2_k::{
    bytes8_ps, half_sums, piece, prefetch_next_unit, q6k_piece, unpack_k45, unpack_q6k, UnpackedK,
};
use super::blocks::{k_layout, x8_block_bytes, BlockQ8, QType};

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

// ---------------------------------------------------------------------------------------
// The K-quants: sixteen rows a register.

/// Tokens a step of [`row16_loop`]: their products share each load of a weight register.
/// Four measured 1.10x two (Q4_K, 7B shapes, examples/matmul_speed): more independent
/// `vpdpbusd` chains in flight.
const STEP: usize = 4;

/// `lo` in the low half, `hi` in the high.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// `lo` in the low half, `hi` in the high.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn join_ps(lo: __m256, hi: __m256) -> __m512 {
    _mm512_castsi512_ps(join(_mm256_castps_si256(lo), _mm256_castps_si256(hi)))
}

/// The two groups of a 512-bit register of `G` groups: `2p` and `2p + 1`, or the last group
/// twice where `G` is odd (its high half is then never stored).
#[inline]
fn pair_of<const G: usize>(p: usize) -> (usize, usize) {
    (2 * p, (2 * p + 1).min(G - 1))
}

/// One unit (256 columns) of a K-quant for [`row16_loop`], [`UnpackedK`]'s registers two
/// groups a register ([`pair_of`]).
struct WideK<const P: usize, const S: usize> {
    w: [[__m512i; 64]; P],
    sc: [[__m512; S]; P],
    nm: [[__m512; 8]; P],
}

impl<const P: usize, const S: usize> WideK<P, S> {
    #[target_feature(enable = "avx512f")]
    fn new() -> Self {
        WideK {
            w: [[_mm512_setzero_si512(); 64]; P],
            sc: [[_mm512_setzero_ps(); S]; P],
            nm: [[_mm512_setzero_ps(); 8]; P],
        }
    }

    /// Joins the `G` groups of `u`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512f")]
    unsafe fn join<const G: usize>(&mut self, u: &UnpackedK<G, S>) {
        for p in 0..P {
            let (a, b) = pair_of::<G>(p);
            for c in 0..64 {
                self.w[p][c] = join(u.w[a][c], u.w[b][c]);
            }
            for k in 0..S {
                self.sc[p][k] = join_ps(u.sc[a][k], u.sc[b][k]);
            }
            for j in 0..8 {
                self.nm[p][j] = join_ps(u.nm[a][j], u.nm[b][j]);
            }
        }
    }
}

fn unpacked_k<const G: usize, const S: usize>() -> UnpackedK<G, S> {
    // SAFETY: all-zero bits are valid for these integer and float vectors.
    unsafe { std::mem::zeroed() }
}

/// Bytes `4k..4k + 4` of `a`'s quants in every lane.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn piece16(a: &BlockQ8, k: usize) -> __m512i {
    _mm512_set1_epi32((a.qs.as_ptr().add(4 * k) as *const i32).read_unaligned())
}

/// The token loop of the K-quants: [`pair_loop`] with sixteen rows in each 512-bit register
/// (two groups of eight, [`pair_of`]; `P` registers for `G` groups) against one token's
/// activations broadcast to every lane, so that each 4-byte activation is a broadcast load
/// where the pair loop builds it from two tokens' blocks with a shuffle. Per unit,
/// `unpack(blk, g, u)` fills group `g` of `u` and `join(u, v)` makes the 512-bit registers;
/// `token(v, at, acc)` then adds [`STEP`] tokens (each one's first activation block of the
/// unit at `acts[at[i]]`) into their accumulators, each weight register loaded once for all
/// of them. A run whose count of tokens is not a multiple of [`STEP`] repeats its last token
/// into accumulators that are not stored. Each lane takes the same operations in the same
/// order as the 256-bit kernels: the same bits. 1.2-1.3x the pair loop on the K-quants
/// (7B shapes, one thread, examples/matmul_speed).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn row16_loop<const G: usize, const P: usize, U, V>(
    packed: &[u8],
    (nb, bs): (usize, usize),
    t: usize,
    (g0, po, ldo): (usize, *mut f32, usize),
    (u, v): (&mut U, &mut V),
    unpack: impl Fn(*const u8, usize, &mut U),
    join: impl Fn(&U, &mut V),
    token: impl Fn(&V, [usize; STEP], &mut [[__m512; P]; STEP]),
) {
    debug_assert_eq!(P, G.div_ceil(2));
    let units = nb / 8;
    let zero = [_mm512_setzero_ps(); P];
    // A run's accumulators (and room for the repeated last token), left uninitialised:
    // each run zeroes the part it uses.
    let mut acc = [std::mem::MaybeUninit::<[__m512; P]>::uninit(); RUN + STEP - 1];
    let mut i0 = 0;
    while i0 < t {
        let n = (t - i0).min(RUN);
        let steps = n.div_ceil(STEP);
        for a in &mut acc[..steps * STEP] {
            a.write(zero);
        }
        for b in 0..units {
            for g in 0..G {
                let blk = packed.as_ptr().add(((g0 + g) * units + b) * bs);
                prefetch(blk.wrapping_add(bs), bs);
                unpack(blk, g, u);
            }
            join(u, v);
            if b + 1 == units {
                prefetch_out::<G>(po.add(i0 * ldo + 8 * g0), ldo, n);
            }
            for s in 0..steps {
                let at = std::array::from_fn(|k| (i0 + (STEP * s + k).min(n - 1)) * nb + 8 * b);
                // SAFETY: STEP consecutive accumulators of the run, initialised above
                // (MaybeUninit<T> has T's layout).
                let a = &mut *(acc.as_mut_ptr().add(STEP * s) as *mut [[__m512; P]; STEP]);
                token(v, at, a);
            }
        }
        for s in 0..n {
            // SAFETY: initialised at the start of the run.
            let a = acc[s].assume_init_ref();
            let o = po.add((i0 + s) * ldo + 8 * g0);
            for p in 0..P {
                if 2 * p + 1 < G {
                    _mm512_storeu_ps(o.add(16 * p), a[p]);
                } else {
                    _mm256_storeu_ps(o.add(16 * p), _mm512_castps512_ps256(a[p]));
                }
            }
        }
        i0 += n;
    }
}

/// Runs `kernel::<G, P>(g0, ...)` for each set of groups of [`group_sets`].
macro_rules! each_k_set {
    ($kernel:ident $(, $c:ident)*; $packed:expr, $group_bytes:expr, $t:expr; $($arg:expr),*) => {
        for (g0, n) in group_sets($packed.len() / $group_bytes, $t) {
            match n {
                1 => $kernel::<1, 1 $(, $c)*>(g0, $($arg),*),
                2 => $kernel::<2, 1 $(, $c)*>(g0, $($arg),*),
                3 => $kernel::<3, 2 $(, $c)*>(g0, $($arg),*),
                _ => $kernel::<SHARE, 2 $(, $c)*>(g0, $($arg),*),
            }
        }
    };
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
    each_k_set!(k45_groups, FIVE; packed, nb / 8 * bs, acts.len() / nb; packed, acts, nb, out, ldo);
}

/// Groups `g0..g0 + G` of [`gemm_x8_k45`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn k45_groups<const G: usize, const P: usize, const FIVE: bool>(
    g0: usize,
    packed: &[u8],
    acts: &[BlockQ8],
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let ap = acts.as_ptr();
    let token = |v: &WideK<P, 8>, at: [usize; STEP], acc: &mut [[__m512; P]; STEP]| {
        for j in 0..8 {
            // Two partial sums a sub-block (even and odd pieces): more independent chains
            // in flight (1.2x one); their integer sum is the same.
            let mut isum = [[[_mm512_setzero_si512(); P]; STEP]; 2];
            for k in 0..8 {
                let w: [__m512i; P] = std::array::from_fn(|p| v.w[p][8 * j + k]);
                for i in 0..STEP {
                    let x = piece16(&*ap.add(at[i] + j), k);
                    for p in 0..P {
                        isum[k % 2][i][p] = _mm512_dpbusd_epi32(isum[k % 2][i][p], w[p], x);
                    }
                }
            }
            for i in 0..STEP {
                let a = &*ap.add(at[i] + j);
                let (ad, as_) = (_mm512_set1_ps(a.d), _mm512_set1_ps(a.s));
                for p in 0..P {
                    let sum = _mm512_add_epi32(isum[0][i][p], isum[1][i][p]);
                    let f = _mm512_cvtepi32_ps(sum);
                    let x = _mm512_fmadd_ps(f, _mm512_mul_ps(v.sc[p][j], ad), acc[i][p]);
                    acc[i][p] = _mm512_fnmadd_ps(v.nm[p][j], as_, x);
                }
            }
        }
    };
    let ty = if FIVE { QType::Q5K } else { QType::Q4K };
    row16_loop::<G, P, _, _>(
        packed,
        (nb, x8_block_bytes(ty)),
        acts.len() / nb,
        (g0, out, ldo),
        (&mut unpacked_k::<G, 8>(), &mut WideK::<P, 8>::new()),
        |blk, g, u: &mut _| unpack_k45::<G, FIVE>(blk, g, u),
        |u, v: &mut WideK<P, 8>| v.join(u),
        token,
    );
}

/// Q6_K's offset term, -32 times each 16 activations' sum, two per block: where each
/// 16 columns' integer sum starts (the weights are taken as 0..63, not -32..31), which
/// costs no instruction beyond the broadcast load.
fn q6k_offsets(acts: &[BlockQ8]) -> Vec<i32> {
    acts.iter()
        .flat_map(|a| half_sums(a).map(|h| -32 * h))
        .collect()
}

/// Q6_K, for [`STEP`] tokens (their first activation blocks of the unit at `ap + at[i]`),
/// 16 columns `k` of a unit against the joined weights `w`: each integer sum started at its
/// offset ([`q6k_offsets`], at `op`), then the four `vpdpbusd` of the 16 columns.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q6k_half<const P: usize>(
    w: &[[__m512i; 64]; P],
    (ap, op): (*const BlockQ8, *const i32),
    at: [usize; STEP],
    k: usize,
) -> [[__m512i; P]; STEP] {
    let (j, e) = (k / 2, k % 2);
    let mut isum: [[__m512i; P]; STEP] =
        std::array::from_fn(|i| [_mm512_set1_epi32(*op.add(2 * (at[i] + j) + e)); P]);
    for c in 4 * e..4 * e + 4 {
        let w: [__m512i; P] = std::array::from_fn(|p| w[p][8 * j + c]);
        for i in 0..STEP {
            let x = piece16(&*ap.add(at[i] + j), c);
            for p in 0..P {
                isum[i][p] = _mm512_dpbusd_epi32(isum[i][p], w[p], x);
            }
        }
    }
    isum
}

/// Q6_K's sixteen 8-bit scales of the unit at `blk` as floats, eight rows a register.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k_scales(blk: *const u8) -> [__m256; 16] {
    let l = k_layout(QType::Q6K);
    std::array::from_fn(|k| bytes8_ps::<true>(blk.add(l.sc + 8 * k)))
}

/// [`super::gemm_x8`] for Q6_K where [`super::q6k_form`] is
/// [`super::Q6kForm::UnitsFloat`] (the caller checked the sizes): activations with one scale
/// per 256 columns; per 16 columns, the exact integer sum (weights 0..63 against the
/// activations, started at the offset, [`q6k_offsets`]) times the 8-bit scale by an FMA into
/// a float sum over the unit; then one float step per unit, `fma(sum, d·d_a, acc)`. On the
/// same loop, ordinary blocks (a product of scales per 16 columns besides; removed since)
/// measured 127 GMAC/s, this form 162-172 (7B shapes, one thread, examples/matmul_speed);
/// folding the scales into the integer sum as on AVX2 ([`super::avx2_k::gemm_x8_q6k_units`])
/// 133, one `vpmulld` per 16 columns costing what it saves. One token takes
/// [`q6k_units_gemv`], the same bits. On AMX hosts too: Q6_K takes no tiles (`amx.rs`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn gemm_x8_q6k_units(
    packed: &[u8],
    acts: &[BlockQ8],
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let offs = q6k_offsets(acts);
    if acts.len() == nb {
        return q6k_units_gemv(packed, (acts, &offs), out);
    }
    let group_bytes = nb / 8 * x8_block_bytes(QType::Q6K);
    each_k_set!(q6k_units_groups; packed, group_bytes, acts.len() / nb; packed, (acts, &offs), nb, out, ldo);
}

/// Groups `g0..g0 + G` of [`gemm_x8_q6k_units`]; `offs` from [`q6k_offsets`]. The unpacked
/// scales are the 8-bit ones as floats (not times `d`).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q6k_units_groups<const G: usize, const P: usize>(
    g0: usize,
    packed: &[u8],
    (acts, offs): (&[BlockQ8], &[i32]),
    nb: usize,
    out: *mut f32,
    ldo: usize,
) {
    let (ap, op) = (acts.as_ptr(), offs.as_ptr());
    let token = |v: &WideK<P, 16>, at: [usize; STEP], acc: &mut [[__m512; P]; STEP]| {
        let mut sum = [[_mm512_setzero_ps(); P]; STEP];
        for j in 0..8 {
            for e in 0..2 {
                let isum = q6k_half(&v.w, (ap, op), at, 2 * j + e);
                for i in 0..STEP {
                    for p in 0..P {
                        let f = _mm512_cvtepi32_ps(isum[i][p]);
                        sum[i][p] = _mm512_fmadd_ps(f, v.sc[p][2 * j + e], sum[i][p]);
                    }
                }
            }
        }
        for i in 0..STEP {
            // The unit's one activation scale; `nm` holds the rows' `d`.
            let ad = _mm512_set1_ps((*ap.add(at[i])).d);
            for p in 0..P {
                let scale = _mm512_mul_ps(v.nm[p][0], ad);
                acc[i][p] = _mm512_fmadd_ps(sum[i][p], scale, acc[i][p]);
            }
        }
    };
    let unpack = |blk: *const u8, g: usize, u: &mut UnpackedK<G, 16>| {
        unpack_q6k::<G>(blk, g, u);
        u.sc[g] = q6k_scales(blk);
        u.nm[g][0] = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
    };
    row16_loop::<G, P, _, _>(
        packed,
        (nb, x8_block_bytes(QType::Q6K)),
        acts.len() / nb,
        (g0, out, ldo),
        (&mut unpacked_k::<G, 16>(), &mut WideK::<P, 16>::new()),
        unpack,
        |u, v: &mut WideK<P, 16>| v.join(u),
        token,
    );
}

/// One token of [`gemm_x8_q6k_units`] on 256-bit registers (AVX512-VNNI's encoding), read
/// straight from the packed bytes as the other one-token kernels; the same operations in
/// the same order as the token loop, so the same bits.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
unsafe fn q6k_units_gemv(packed: &[u8], (act, offs): (&[BlockQ8], &[i32]), out: *mut f32) {
    let bs = x8_block_bytes(QType::Q6K);
    let units = act.len() / 8;
    for g in 0..packed.len() / (units * bs) {
        let mut acc = _mm256_setzero_ps();
        for b in 0..units {
            let blk = packed.as_ptr().add((g * units + b) * bs);
            prefetch_next_unit(blk, bs);
            let sc = q6k_scales(blk);
            let mut sum = _mm256_setzero_ps();
            for h in 0..2 {
                // isum[i][e]: sub-block 4h + i, half e. (Started at the offsets, as in the
                // token loop, this kernel measured 0.8x: the offsets are added after.)
                let mut isum = [[_mm256_setzero_si256(); 2]; 4];
                for k in 0..8 {
                    let q = q6k_piece(blk, h, k);
                    for i in 0..4 {
                        let x = piece(&act[8 * b + 4 * h + i], k);
                        isum[i][k / 4] = _mm256_dpbusd_epi32(isum[i][k / 4], q[i], x);
                    }
                }
                for i in 0..4 {
                    let j = 4 * h + i;
                    for e in 0..2 {
                        let o = _mm256_set1_epi32(offs[2 * (8 * b + j) + e]);
                        let f = _mm256_cvtepi32_ps(_mm256_add_epi32(isum[i][e], o));
                        sum = _mm256_fmadd_ps(f, sc[2 * j + e], sum);
                    }
                }
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
            let scale = _mm256_mul_ps(d, _mm256_set1_ps(act[8 * b].d));
            acc = _mm256_fmadd_ps(sum, scale, acc);
        }
        _mm256_storeu_ps(out.add(8 * g), acc);
    }
}
