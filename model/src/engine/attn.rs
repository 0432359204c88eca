//! Causal attention for every step: prefill, embedding batches and generation.
//!
//! Keys are read transposed ([`KvView`]: element `d` of keys `j..j + 8` side by side), so
//! [`causal`] computes the scores of up to three query heads against 32 keys at a time with
//! one FMA per element and no horizontal sum (where the CPU has AVX-512 and
//! [`super::quant::wide`] is on, up to eight queries, sixteen keys a register: 7B Q5_K_M
//! prefill of 1,500 tokens 159 -> 168 tok/s); the softmax runs eight keys at a time with a
//! polynomial `exp` ([`super::vmath::exp`]), and the values are summed in registers. The
//! engine's KV cache keeps its keys transposed in f16 so that a generation step reads them in
//! place; a batch without a cache lays its keys out once per layer in a [`KvBlock`]. One
//! kernel for all steps matters: the model amplifies last-bit differences (an 8-bit rounding
//! of an activation flips), so a prefill and a token-by-token decode agree only when a
//! query's arithmetic does not depend on the path. The scalar code performs the same float
//! operations in the same order, so all kernels give the same bits.
use super::quant::{effective, kernels, wide, wide_available, Kernels};

/// Keys or values for [`causal`]: f32 (a batch without a cache) or f16 (the KV cache), read
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

/// One KV head's first `n` keys and values, f32 or f16: element `d` of key `j` at
/// `kt[d * kstride + j]`, element `d` of value `j` at `v[j * vstride + d]`. Keys are read up
/// to `n` rounded up to 8 (those past `n` are read and then masked).
#[derive(Clone, Copy)]
pub struct KvView<'a> {
    kt: KvRows<'a>,
    kstride: usize,
    v: KvRows<'a>,
    vstride: usize,
    n: usize,
    hd: usize,
}

impl<'a> KvView<'a> {
    /// A view of `n` keys of width `hd`, after checking that the slices hold them.
    pub fn new(
        kt: KvRows<'a>,
        kstride: usize,
        v: KvRows<'a>,
        vstride: usize,
        n: usize,
        hd: usize,
    ) -> Self {
        let w = n.next_multiple_of(8);
        assert!(
            hd > 0
                && kstride >= w
                && vstride >= hd
                && (n == 0 || kt.len() >= (hd - 1) * kstride + w)
                && (n == 0 || v.len() >= (n - 1) * vstride + hd),
            "KvView: {n} keys of width {hd} (strides {kstride}, {vstride}) in {} and {} elements",
            kt.len(),
            v.len()
        );
        KvView {
            kt,
            kstride,
            v,
            vstride,
            n,
            hd,
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

/// One KV head's keys and values copied from rows (f32 or f16) into the layout of
/// [`KvView`], for a batch without a cache.
#[derive(Default)]
pub struct KvBlock {
    kt: Vec<f32>,
    v: Vec<f32>,
    n: usize,
    hd: usize,
}

impl KvBlock {
    /// The rows `j < n` of width `hd` at element `j * stride` of `keys` and `values`.
    pub fn new(keys: KvRows<'_>, values: KvRows<'_>, stride: usize, n: usize, hd: usize) -> Self {
        let mut b = KvBlock::default();
        b.fill(keys, values, stride, n, hd);
        b
    }

    /// [`KvBlock::new`] into this block's buffers.
    pub fn fill(
        &mut self,
        keys: KvRows<'_>,
        values: KvRows<'_>,
        stride: usize,
        n: usize,
        hd: usize,
    ) {
        assert!(
            hd > 0 && stride >= hd,
            "KvBlock: head width {hd}, stride {stride}"
        );
        if n > 0 {
            let need = (n - 1) * stride + hd;
            assert!(
                keys.len() >= need && values.len() >= need,
                "KvBlock: {n} rows of stride {stride} need {need} elements; keys {}, values {}",
                keys.len(),
                values.len()
            );
        }
        let npad = n.next_multiple_of(8);
        self.kt.clear();
        self.kt.resize(hd * npad, 0.0);
        self.v.clear();
        self.v.resize(n * hd, 0.0);
        let mut row = vec![0f32; hd];
        for j in 0..n {
            keys.widen(j * stride, &mut row);
            for (d, &x) in row.iter().enumerate() {
                self.kt[d * npad + j] = x;
            }
            values.widen(j * stride, &mut self.v[j * hd..(j + 1) * hd]);
        }
        (self.n, self.hd) = (n, hd);
    }

    /// The block as a [`KvView`].
    pub fn view(&self) -> KvView<'_> {
        let npad = self.n.next_multiple_of(8);
        KvView::new(
            KvRows::F32(&self.kt),
            npad,
            KvRows::F32(&self.v),
            self.hd,
            self.n,
            self.hd,
        )
    }
}

/// Scores of one call of [`causal`], reused across calls.
#[derive(Default)]
pub struct Scratch {
    s: Vec<f32>,
}

/// Causal attention over one KV head: for token `g < tokens` and head `r < heads`, the query
/// at `q[g * row_stride + r * hd..][..hd]` attends to keys `0..first + g + 1` of `kv` with
/// `p = softmax(scale · q·k_j)`, and `Σ_j p_j v_j` goes to `out` at the same offset. Scores
/// are `fma`-summed over the elements in order; the softmax sums `exp` in eight lanes (key
/// `j` in lane `j % 8`) then the lanes pairwise; the values are `fma`-summed in key order.
/// The same bits from both kernels.
#[allow(clippy::too_many_arguments)]
pub fn causal(
    kv: &KvView<'_>,
    q: &[f32],
    out: &mut [f32],
    row_stride: usize,
    tokens: usize,
    heads: usize,
    first: usize,
    scale: f32,
    scratch: &mut Scratch,
) {
    causal_with(
        kernels(),
        kv,
        q,
        out,
        row_stride,
        tokens,
        heads,
        first,
        scale,
        scratch,
    )
}

/// The kernel `$k::$f::<M, HALF>` for `$m` queries (1 to 3, or to 8 for the 512-bit ones)
/// over rows of `$rows`'s kind.
#[cfg(target_arch = "x86_64")]
macro_rules! pick {
    (avx2, $f:ident, $m:expr, $rows:expr) => {
        match ($m, $rows) {
            (1, KvRows::F32(_)) => avx2::$f::<1, false>,
            (2, KvRows::F32(_)) => avx2::$f::<2, false>,
            (_, KvRows::F32(_)) => avx2::$f::<3, false>,
            (1, KvRows::F16(_)) => avx2::$f::<1, true>,
            (2, KvRows::F16(_)) => avx2::$f::<2, true>,
            (_, KvRows::F16(_)) => avx2::$f::<3, true>,
        }
    };
    (avx512, $f:ident, $m:expr, $rows:expr) => {
        match ($m, $rows) {
            (1, KvRows::F32(_)) => avx512::$f::<1, false>,
            (2, KvRows::F32(_)) => avx512::$f::<2, false>,
            (3, KvRows::F32(_)) => avx512::$f::<3, false>,
            (4, KvRows::F32(_)) => avx512::$f::<4, false>,
            (5, KvRows::F32(_)) => avx512::$f::<5, false>,
            (6, KvRows::F32(_)) => avx512::$f::<6, false>,
            (7, KvRows::F32(_)) => avx512::$f::<7, false>,
            (_, KvRows::F32(_)) => avx512::$f::<8, false>,
            (1, KvRows::F16(_)) => avx512::$f::<1, true>,
            (2, KvRows::F16(_)) => avx512::$f::<2, true>,
            (3, KvRows::F16(_)) => avx512::$f::<3, true>,
            (4, KvRows::F16(_)) => avx512::$f::<4, true>,
            (5, KvRows::F16(_)) => avx512::$f::<5, true>,
            (6, KvRows::F16(_)) => avx512::$f::<6, true>,
            (7, KvRows::F16(_)) => avx512::$f::<7, true>,
            (_, KvRows::F16(_)) => avx512::$f::<8, true>,
        }
    };
}

/// [`causal`] with explicit kernels (the 512-bit ones where [`wide`] holds).
#[allow(clippy::too_many_arguments)]
pub fn causal_with(
    k: Kernels,
    kv: &KvView<'_>,
    q: &[f32],
    out: &mut [f32],
    row_stride: usize,
    tokens: usize,
    heads: usize,
    first: usize,
    scale: f32,
    scratch: &mut Scratch,
) {
    causal_in(
        k,
        wide(),
        kv,
        q,
        out,
        row_stride,
        tokens,
        heads,
        first,
        scale,
        scratch,
    )
}

/// [`causal_with`] with the 512-bit kernels on or off (`wide`; ignored without AVX-512).
#[allow(clippy::too_many_arguments)]
fn causal_in(
    k: Kernels,
    wide: bool,
    kv: &KvView<'_>,
    q: &[f32],
    out: &mut [f32],
    row_stride: usize,
    tokens: usize,
    heads: usize,
    first: usize,
    scale: f32,
    scratch: &mut Scratch,
) {
    let hd = kv.hd;
    if tokens == 0 || heads == 0 {
        return;
    }
    let need = (tokens - 1) * row_stride + heads * hd;
    assert!(
        row_stride >= heads * hd && q.len() >= need && out.len() >= need,
        "attn::causal: {tokens} tokens of {heads} heads × {hd} at stride {row_stride} need \
         {need} elements; q {}, out {}",
        q.len(),
        out.len()
    );
    assert!(
        first + tokens <= kv.n,
        "attn::causal: {} keys needed, {} held",
        first + tokens,
        kv.n
    );
    let k = effective(k);
    #[cfg(target_arch = "x86_64")]
    if k == Kernels::Avx2 {
        let wide = wide && wide_available();
        // SAFETY: AVX2 detected (effective), AVX-512 where `wide`; sizes checked above and in
        // KvView.
        return unsafe {
            causal_avx2(
                kv, q, out, row_stride, tokens, heads, first, scale, wide, scratch,
            )
        };
    }
    // The scalar reference: each token's heads, up to three at a time.
    for g in 0..tokens {
        let nk = first + g + 1;
        let mut r = 0;
        while r < heads {
            let m = (heads - r).min(3);
            let at = g * row_stride + r * hd;
            let w = nk.next_multiple_of(8);
            scratch.s.clear();
            scratch.s.resize(m * w, 0.0);
            scalar::scores(kv, &q[at..at + m * hd], m, nk, scale, &mut scratch.s);
            for p in scratch.s.chunks_exact_mut(w) {
                scalar::softmax(p, nk);
            }
            let o = &mut out[at..at + m * hd];
            for (p, o) in scratch.s.chunks_exact(w).zip(o.chunks_exact_mut(hd)) {
                scalar::values(kv, p, nk, o);
            }
            r += m;
        }
    }
}

/// The AVX2 half of [`causal_with`]: the (token, head) queries in order, three at a time
/// (eight with the 512-bit kernels; heads of one token, or with one head per KV head as in
/// Llama 2 7B, consecutive tokens), so that each key and value loaded serves all of them. A
/// query whose token sees fewer keys than the last of its group gets scores for the extra
/// keys too; its softmax makes their weights exactly 0 and the values add `0 · v` to sums
/// that are never -0, so every query's result has the bits of attending alone (the scalar
/// kernel's order). The 512-bit kernels hold sixteen keys or elements a register, each still
/// summed in the same order.
///
/// A generation step whose KV heads serve up to three query heads each (one for Llama 2 7B,
/// three for SmolLM2) reads the cache row by row instead (`rows`): each element row of the
/// keys front to back with the sums in memory, and each value row whole, fetched ahead.
/// With few queries to share each load, the work is reading the cache, and the
/// register-blocked loops, which touch 32 keys of every element row in turn, leave it to the
/// latency of scattered lines. Generation after 1,500 tokens on the AVX-512 Xeon, 512-bit
/// kernels: 7B Q4_K_M 12.2-13.1 -> 13.8-15.5 tok/s (17.7 after 100 tokens), SmolLM2 89-90
/// -> 95-98; 256-bit (`RAG_KERNELS=avx2`): 7B 12.9-13.6 -> 13.1-14.3, SmolLM2 79-84 ->
/// 87-92. With eight query heads a KV head (TinyLlama) the registers did as well.
///
/// # Safety
/// AVX2, FMA and F16C present, and AVX-512F where `wide`; the sizes checked by
/// [`causal_with`].
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn causal_avx2(
    kv: &KvView<'_>,
    q: &[f32],
    out: &mut [f32],
    row_stride: usize,
    tokens: usize,
    heads: usize,
    first: usize,
    scale: f32,
    wide: bool,
    scratch: &mut Scratch,
) {
    let hd = kv.hd;
    let most = if wide { 8 } else { 3 };
    let (mut qbuf, mut obuf) = (vec![0f32; most * hd], vec![0f32; most * hd]);
    let pairs = tokens * heads;
    let at = |i: usize| (i / heads) * row_stride + (i % heads) * hd;
    let mut i0 = 0;
    while i0 < pairs {
        let m = (pairs - i0).min(most);
        for i in 0..m {
            qbuf[i * hd..(i + 1) * hd].copy_from_slice(&q[at(i0 + i)..at(i0 + i) + hd]);
        }
        // Keys seen by each query, and by the last (the most).
        let nk = |i: usize| first + (i0 + i) / heads + 1;
        let w = nk(m - 1).next_multiple_of(8);
        let rows = tokens == 1 && m <= 3;
        scratch.s.clear();
        scratch.s.resize(m * w, 0.0);
        let f = if wide {
            pick!(avx512, scores, m, kv.kt)
        } else {
            pick!(avx2, scores, m, kv.kt)
        };
        f(kv, &qbuf[..m * hd], nk(m - 1), scale, rows, &mut scratch.s);
        for (i, p) in scratch.s.chunks_exact_mut(w).enumerate() {
            avx2::softmax(p, nk(i));
        }
        let f = if wide {
            pick!(avx512, values, m, kv.v)
        } else {
            pick!(avx2, values, m, kv.v)
        };
        f(kv, &scratch.s, w, nk(m - 1), rows, &mut obuf[..m * hd]);
        for i in 0..m {
            out[at(i0 + i)..at(i0 + i) + hd].copy_from_slice(&obuf[i * hd..(i + 1) * hd]);
        }
        i0 += m;
    }
}

// Index loops: they spell out the AVX2 lanes.
#[allow(clippy::needless_range_loop)]
mod scalar {
    use super::KvView;
    use crate::engine::vmath;

    /// `s[h * w + j] = scale · Σ_d q_h[d] k_j[d]` (fma in element order) for the `m` queries
    /// of `qs` and keys `j < w`, `w = nk` rounded up to 8.
    pub fn scores(kv: &KvView<'_>, qs: &[f32], m: usize, nk: usize, scale: f32, s: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("fma") {
            // SAFETY: FMA detected.
            return unsafe { fma::scores(kv, qs, m, nk, scale, s) };
        }
        scores_body(kv, qs, m, nk, scale, s)
    }

    #[inline(always)]
    pub(super) fn scores_body(
        kv: &KvView<'_>,
        qs: &[f32],
        m: usize,
        nk: usize,
        scale: f32,
        s: &mut [f32],
    ) {
        let (hd, ks) = (kv.hd, kv.kstride);
        let w = nk.next_multiple_of(8);
        let mut col = vec![0f32; w];
        let mut acc = vec![0f32; m * w];
        for d in 0..hd {
            kv.kt.widen(d * ks, &mut col);
            for h in 0..m {
                let x = qs[h * hd + d];
                for j in 0..w {
                    acc[h * w + j] = x.mul_add(col[j], acc[h * w + j]);
                }
            }
        }
        for (s, a) in s.iter_mut().zip(&acc) {
            *s = a * scale;
        }
    }

    /// Softmax of `p[..nk]` in place (`p[nk..]` becomes 0): max, `exp(s - max)` summed in
    /// eight lanes, the lanes summed pairwise, then each times 1 / sum.
    pub fn softmax(p: &mut [f32], nk: usize) {
        let max = p[..nk].iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut lanes = [0f32; 8];
        for (j, v) in p.iter_mut().enumerate() {
            *v = if j < nk { vmath::exp(*v - max) } else { 0.0 };
            lanes[j % 8] += *v;
        }
        let inv = 1.0 / hsum8(&lanes);
        for v in &mut p[..nk] {
            *v *= inv;
        }
    }

    /// (l0 + l4) + (l2 + l6) + ((l1 + l5) + (l3 + l7)), the AVX2 `hsum` order.
    pub(super) fn hsum8(l: &[f32; 8]) -> f32 {
        let t = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
        let u = [t[0] + t[2], t[1] + t[3]];
        u[0] + u[1]
    }

    /// `o = Σ_{j < nk} p_j v_j`, each element fma-summed in key order from 0.
    pub fn values(kv: &KvView<'_>, p: &[f32], nk: usize, o: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("fma") {
            // SAFETY: FMA detected.
            return unsafe { fma::values(kv, p, nk, o) };
        }
        values_body(kv, p, nk, o)
    }

    #[inline(always)]
    pub(super) fn values_body(kv: &KvView<'_>, p: &[f32], nk: usize, o: &mut [f32]) {
        let hd = kv.hd;
        let mut row = vec![0f32; hd];
        o.fill(0.0);
        for j in 0..nk {
            kv.v.widen(j * kv.vstride, &mut row);
            for d in 0..hd {
                o[d] = p[j].mul_add(row[d], o[d]);
            }
        }
    }

    /// The same code compiled for FMA hardware (see `quant`'s twin module).
    #[cfg(target_arch = "x86_64")]
    mod fma {
        use super::{scores_body, values_body, KvView};

        #[target_feature(enable = "fma")]
        pub(super) unsafe fn scores(
            kv: &KvView<'_>,
            qs: &[f32],
            m: usize,
            nk: usize,
            scale: f32,
            s: &mut [f32],
        ) {
            scores_body(kv, qs, m, nk, scale, s)
        }

        #[target_feature(enable = "fma")]
        pub(super) unsafe fn values(kv: &KvView<'_>, p: &[f32], nk: usize, o: &mut [f32]) {
            values_body(kv, p, nk, o)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)]
mod avx2 {
    use super::{KvRows, KvView};
    use crate::engine::vmath::avx2::exp8;
    use std::arch::x86_64::*;

    /// Start of `r`'s elements.
    pub(super) fn base(r: KvRows<'_>) -> *const u8 {
        match r {
            KvRows::F32(x) => x.as_ptr().cast(),
            KvRows::F16(x) => x.as_ptr().cast(),
        }
    }

    /// Eight elements at element index `i` of `p` (f16 when `HALF`, else f32) as f32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn load8<const HALF: bool>(p: *const u8, i: usize) -> __m256 {
        if HALF {
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i) as *const __m128i))
        } else {
            _mm256_loadu_ps((p as *const f32).add(i))
        }
    }

    /// Element `i` of `p` as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn elem<const HALF: bool>(p: *const u8, i: usize) -> f32 {
        if HALF {
            let h = (p.add(2 * i) as *const u16).read_unaligned();
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
        } else {
            *(p as *const f32).add(i)
        }
    }

    /// [`super::scalar::scores`] for `M` queries: 32 keys at a time (four registers of
    /// eight per query; 24 for three queries), each element of the queries broadcast once
    /// for all of them; where `rows`, [`scores_rows`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn scores<const M: usize, const HALF: bool>(
        kv: &KvView<'_>,
        qs: &[f32],
        nk: usize,
        scale: f32,
        rows: bool,
        s: &mut [f32],
    ) {
        let (hd, ks) = (kv.hd, kv.kstride);
        let w = nk.next_multiple_of(8);
        if rows {
            return scores_rows::<M, HALF>(kv, qs, w, scale, s);
        }
        let kt = base(kv.kt);
        let pq = qs.as_ptr();
        let ps = s.as_mut_ptr();
        let sc = _mm256_set1_ps(scale);
        // Three queries take 24 keys a step: 9 sums, 3 broadcasts and a key leave room in
        // the 16 registers (with 32 keys, 12 sums and 4 keys, the compiler spilled sums to
        // the stack and shuffled registers in the loop; scores 5.1% -> 4.5% of a 7B Q6_K
        // prompt's samples).
        let mut j = if M >= 3 {
            scores_regs::<M, HALF, 3>(kt, ks, pq, hd, w, sc, ps)
        } else {
            scores_regs::<M, HALF, 4>(kt, ks, pq, hd, w, sc, ps)
        };
        while j < w {
            let mut acc = [_mm256_setzero_ps(); M];
            for d in 0..hd {
                let kr = load8::<HALF>(kt, d * ks + j);
                for h in 0..M {
                    acc[h] = _mm256_fmadd_ps(_mm256_set1_ps(*pq.add(h * hd + d)), kr, acc[h]);
                }
            }
            for h in 0..M {
                _mm256_storeu_ps(ps.add(h * w + j), _mm256_mul_ps(acc[h], sc));
            }
            j += 8;
        }
    }

    /// [`scores`]' register-blocked part: `8B` keys a step, from key 0 while a step fits
    /// in `w`; returns the first key it left.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scores_regs<const M: usize, const HALF: bool, const B: usize>(
        kt: *const u8,
        ks: usize,
        pq: *const f32,
        hd: usize,
        w: usize,
        sc: __m256,
        ps: *mut f32,
    ) -> usize {
        let mut j = 0;
        while j + 8 * B <= w {
            let mut acc = [[_mm256_setzero_ps(); B]; M];
            for d in 0..hd {
                let at = d * ks + j;
                let x: [__m256; M] = std::array::from_fn(|h| _mm256_set1_ps(*pq.add(h * hd + d)));
                for b in 0..B {
                    let k = load8::<HALF>(kt, at + 8 * b);
                    for h in 0..M {
                        acc[h][b] = _mm256_fmadd_ps(x[h], k, acc[h][b]);
                    }
                }
            }
            for h in 0..M {
                for b in 0..B {
                    _mm256_storeu_ps(ps.add(h * w + j + 8 * b), _mm256_mul_ps(acc[h][b], sc));
                }
            }
            j += 8 * B;
        }
        j
    }

    /// The scores of `M` queries against keys `0..w`, element row by element row:
    /// `s[h * w + j] = fma(q_h[d], k_j[d], s[h * w + j])` for `d` in order over each row of
    /// `w` keys, then times `scale`. The order of [`super::scalar::scores`], with the sums in
    /// `s` rather than registers, so that each row of the transposed keys is read front to
    /// back. `s` holds zeros on entry (the caller clears it for every call).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scores_rows<const M: usize, const HALF: bool>(
        kv: &KvView<'_>,
        qs: &[f32],
        w: usize,
        scale: f32,
        s: &mut [f32],
    ) {
        let (hd, ks) = (kv.hd, kv.kstride);
        let (kt, pq) = (base(kv.kt), qs.as_ptr());
        let s = &mut s[..M * w];
        let ps = s.as_mut_ptr();
        for d in 0..hd {
            let row = d * ks;
            let mut x = [_mm256_setzero_ps(); M];
            for h in 0..M {
                x[h] = _mm256_set1_ps(*pq.add(h * hd + d));
            }
            for j in (0..w).step_by(8) {
                let k = load8::<HALF>(kt, row + j);
                for h in 0..M {
                    let p = ps.add(h * w + j);
                    _mm256_storeu_ps(p, _mm256_fmadd_ps(x[h], k, _mm256_loadu_ps(p)));
                }
            }
        }
        let sc = _mm256_set1_ps(scale);
        for i in (0..s.len()).step_by(8) {
            _mm256_storeu_ps(ps.add(i), _mm256_mul_ps(_mm256_loadu_ps(ps.add(i)), sc));
        }
    }

    /// Keys a value row is fetched ahead of its use by a generation step's loops (`rows`):
    /// written when value rows lay a KV row apart, too far for the hardware's stride
    /// prefetch. The cache now keeps each head's rows as one run (`vstride` = head width);
    /// whether the fetch still helps there has not been measured.
    pub(super) const AHEAD: usize = 16;

    /// Fetches the `elems` elements at element index `i` of `p` into the cache. The
    /// addresses are formed with `wrapping_add`: they may lie past the rows (a prefetch
    /// never faults).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn fetch<const HALF: bool>(p: *const u8, i: usize, elems: usize) {
        let size = if HALF { 2 } else { 4 };
        let at = p.wrapping_add(i * size);
        for l in (0..elems * size).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(l) as *const i8);
        }
    }

    /// [`super::scalar::softmax`]; `p.len()` is a multiple of 8.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn softmax(p: &mut [f32], nk: usize) {
        let pp = p.as_mut_ptr();
        // The maximum in eight lanes rather than one chain of dependent steps (the softmax's
        // share of an embedding profile did not move measurably, ~1.3%). The maximum is the
        // same in any order, and a NaN is skipped as `f32::max` skips it: `max_ps` returns its
        // second operand when either is NaN, and the lanes never hold one.
        let mut m8 = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut j = 0;
        while j + 8 <= nk {
            m8 = _mm256_max_ps(_mm256_loadu_ps(pp.add(j)), m8);
            j += 8;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), m8);
        let max = p[j..nk]
            .iter()
            .chain(&lanes)
            .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mx = _mm256_set1_ps(max);
        let mut sum = _mm256_setzero_ps();
        let mut j = 0;
        while j < p.len() {
            let mut e = exp8(_mm256_sub_ps(_mm256_loadu_ps(pp.add(j)), mx));
            if j + 8 > nk {
                // Lanes of keys past nk are 0 (whole chunks of them too: a row shorter than
                // the others of its call).
                let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let live = _mm256_cmpgt_epi32(_mm256_set1_epi32(nk.saturating_sub(j) as i32), idx);
                e = _mm256_and_ps(e, _mm256_castsi256_ps(live));
            }
            _mm256_storeu_ps(pp.add(j), e);
            sum = _mm256_add_ps(sum, e);
            j += 8;
        }
        let s = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps::<1>(sum));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        let inv = _mm256_set1_ps(1.0 / _mm_cvtss_f32(s));
        let mut j = 0;
        while j < nk {
            _mm256_storeu_ps(pp.add(j), _mm256_mul_ps(_mm256_loadu_ps(pp.add(j)), inv));
            j += 8;
        }
    }

    /// [`super::scalar::values`] for `M` heads at once (`p` holds their weights, `w` apart;
    /// `o` their outputs, `hd` apart): 32 elements at a time in registers across all keys,
    /// each value loaded once for all heads. Where `rows` (a generation step), the keys go
    /// in blocks of [`BLOCK`] rows: each block's rows are fetched whole, [`AHEAD`], by the
    /// pass over its first elements (32, or 64 for one head), and the passes over the
    /// others find them in the first-level cache; the sums are carried from block to block
    /// in `o`, so each element is still summed in key order (the same bits). Before, each
    /// 32-element pass read one line of every row of the head, 4 passes with a stride of a
    /// row each for Llama 2's 128-element heads.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn values<const M: usize, const HALF: bool>(
        kv: &KvView<'_>,
        p: &[f32],
        w: usize,
        nk: usize,
        rows: bool,
        o: &mut [f32],
    ) {
        let (hd, vs) = (kv.hd, kv.vstride);
        let v = base(kv.v);
        let (pp, po) = (p.as_ptr(), o.as_mut_ptr());
        let wide = hd / 32 * 32;
        if rows {
            // One head: 64 elements a pass, eight sums in flight (four leave the FMAs
            // waiting on each other).
            let wider = if M == 1 { hd / 64 * 64 } else { 0 };
            let mut j0 = 0;
            while j0 < nk {
                let j1 = (j0 + BLOCK).min(nk);
                for c in (0..wider).step_by(64) {
                    let fetch = if c == 0 { hd } else { 0 };
                    values_regs::<M, HALF, 8>(v, vs, pp, w, (j0, j1), c, po, hd, fetch);
                }
                for c in (wider..wide).step_by(32) {
                    let fetch = if c == 0 { hd } else { 0 };
                    values_regs::<M, HALF, 4>(v, vs, pp, w, (j0, j1), c, po, hd, fetch);
                }
                j0 = j1;
            }
        } else {
            for c in (0..wide).step_by(32) {
                values_regs::<M, HALF, 4>(v, vs, pp, w, (0, nk), c, po, hd, 0);
            }
        }
        values_tail::<M, HALF>(v, vs, pp, w, nk, wide, po, hd, rows);
    }

    /// Keys a block of [`values`] for a generation step: 16 KiB of Llama 2's f16 rows, half
    /// the first-level cache.
    const BLOCK: usize = 64;

    /// [`values`] of the elements from `c` on: eight at a time, then one at a time.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn values_tail<const M: usize, const HALF: bool>(
        v: *const u8,
        vs: usize,
        pp: *const f32,
        w: usize,
        nk: usize,
        mut c: usize,
        po: *mut f32,
        hd: usize,
        ahead: bool,
    ) {
        while c + 8 <= hd {
            let fetch = if ahead { 8 } else { 0 };
            values_regs::<M, HALF, 1>(v, vs, pp, w, (0, nk), c, po, hd, fetch);
            c += 8;
        }
        for h in 0..M {
            for d in c..hd {
                let mut a = 0f32;
                for j in 0..nk {
                    a = (*pp.add(h * w + j)).mul_add(elem::<HALF>(v, j * vs + d), a);
                }
                *po.add(h * hd + d) = a;
            }
        }
    }

    /// Elements `c..c + 8R` of the `M` heads' value sums over keys `j0..j1`, added
    /// to the sums in `o` unless `j0` is 0; each key's `fetch` elements from element `c` of
    /// its row fetched [`AHEAD`] keys early (none when 0).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn values_regs<const M: usize, const HALF: bool, const R: usize>(
        v: *const u8,
        vs: usize,
        p: *const f32,
        w: usize,
        (j0, j1): (usize, usize),
        c: usize,
        o: *mut f32,
        hd: usize,
        fetch: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); R]; M];
        if j0 > 0 {
            for h in 0..M {
                for r in 0..R {
                    acc[h][r] = _mm256_loadu_ps(o.add(h * hd + c + 8 * r));
                }
            }
        }
        for j in j0..j1 {
            if fetch > 0 {
                // Up to AHEAD rows past the last key: addresses in the cache's room for
                // more positions, or past it.
                self::fetch::<HALF>(v, (j + AHEAD) * vs + c, fetch);
            }
            let mut pw = [_mm256_setzero_ps(); M];
            for h in 0..M {
                pw[h] = _mm256_set1_ps(*p.add(h * w + j));
            }
            let at = j * vs + c;
            for r in 0..R {
                let x = load8::<HALF>(v, at + 8 * r);
                for h in 0..M {
                    acc[h][r] = _mm256_fmadd_ps(pw[h], x, acc[h][r]);
                }
            }
        }
        for h in 0..M {
            for r in 0..R {
                _mm256_storeu_ps(o.add(h * hd + c + 8 * r), acc[h][r]);
            }
        }
    }
}

/// The 512-bit kernels: [`avx2`]'s loops with sixteen keys (scores) or elements (values) a
/// register and up to eight queries a call. Each key's score and each element of a value sum
/// is `fma`-summed in the same order as there, so the bits are the same.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)]
mod avx512 {
    use super::avx2::{base, fetch, load8, values_tail, AHEAD};
    use super::KvView;
    use std::arch::x86_64::*;

    /// Sixteen elements at element index `i` of `p` (f16 when `HALF`, else f32) as f32 lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn load16<const HALF: bool>(p: *const u8, i: usize) -> __m512 {
        if HALF {
            _mm512_cvtph_ps(_mm256_loadu_si256(p.add(2 * i) as *const __m256i))
        } else {
            _mm512_loadu_ps((p as *const f32).add(i))
        }
    }

    /// [`super::scalar::scores`] for `M` queries: 32 keys at a time (two registers of
    /// sixteen per query), then sixteen, then eight; where `rows`, [`scores_rows`].
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn scores<const M: usize, const HALF: bool>(
        kv: &KvView<'_>,
        qs: &[f32],
        nk: usize,
        scale: f32,
        rows: bool,
        s: &mut [f32],
    ) {
        let w = nk.next_multiple_of(8);
        if rows {
            return scores_rows::<M, HALF>(kv, qs, w, scale, s);
        }
        let mut j = 0;
        while j + 32 <= w {
            scores_regs::<M, HALF, 2>(kv, qs, j, w, scale, s);
            j += 32;
        }
        if j + 16 <= w {
            scores_regs::<M, HALF, 1>(kv, qs, j, w, scale, s);
            j += 16;
        }
        if j < w {
            let (hd, ks) = (kv.hd, kv.kstride);
            let (kt, pq, ps) = (base(kv.kt), qs.as_ptr(), s.as_mut_ptr());
            let mut acc = [_mm256_setzero_ps(); M];
            for d in 0..hd {
                let kr = load8::<HALF>(kt, d * ks + j);
                for h in 0..M {
                    acc[h] = _mm256_fmadd_ps(_mm256_set1_ps(*pq.add(h * hd + d)), kr, acc[h]);
                }
            }
            let sc = _mm256_set1_ps(scale);
            for h in 0..M {
                _mm256_storeu_ps(ps.add(h * w + j), _mm256_mul_ps(acc[h], sc));
            }
        }
    }

    /// [`super::avx2`]'s `scores_rows`, sixteen keys a register; `s` likewise holds zeros.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn scores_rows<const M: usize, const HALF: bool>(
        kv: &KvView<'_>,
        qs: &[f32],
        w: usize,
        scale: f32,
        s: &mut [f32],
    ) {
        let (hd, ks) = (kv.hd, kv.kstride);
        let (kt, pq) = (base(kv.kt), qs.as_ptr());
        let s = &mut s[..M * w];
        let ps = s.as_mut_ptr();
        for d in 0..hd {
            let row = d * ks;
            let mut x = [_mm512_setzero_ps(); M];
            for h in 0..M {
                x[h] = _mm512_set1_ps(*pq.add(h * hd + d));
            }
            let mut j = 0;
            while j + 16 <= w {
                let k = load16::<HALF>(kt, row + j);
                for h in 0..M {
                    let p = ps.add(h * w + j);
                    _mm512_storeu_ps(p, _mm512_fmadd_ps(x[h], k, _mm512_loadu_ps(p)));
                }
                j += 16;
            }
            if j < w {
                let k = load8::<HALF>(kt, row + j);
                for h in 0..M {
                    let p = ps.add(h * w + j);
                    let x = _mm512_castps512_ps256(x[h]);
                    _mm256_storeu_ps(p, _mm256_fmadd_ps(x, k, _mm256_loadu_ps(p)));
                }
            }
        }
        let (sc, sc8) = (_mm512_set1_ps(scale), _mm256_set1_ps(scale));
        let mut i = 0;
        while i + 16 <= s.len() {
            _mm512_storeu_ps(ps.add(i), _mm512_mul_ps(_mm512_loadu_ps(ps.add(i)), sc));
            i += 16;
        }
        if i < s.len() {
            _mm256_storeu_ps(ps.add(i), _mm256_mul_ps(_mm256_loadu_ps(ps.add(i)), sc8));
        }
    }

    /// The scores of keys `j..j + 16 * R` for `M` queries, in registers across the elements.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn scores_regs<const M: usize, const HALF: bool, const R: usize>(
        kv: &KvView<'_>,
        qs: &[f32],
        j: usize,
        w: usize,
        scale: f32,
        s: &mut [f32],
    ) {
        let (hd, ks) = (kv.hd, kv.kstride);
        let (kt, pq, ps) = (base(kv.kt), qs.as_ptr(), s.as_mut_ptr());
        let mut acc = [[_mm512_setzero_ps(); R]; M];
        for d in 0..hd {
            let at = d * ks + j;
            let mut k = [_mm512_setzero_ps(); R];
            for r in 0..R {
                k[r] = load16::<HALF>(kt, at + 16 * r);
            }
            for h in 0..M {
                let x = _mm512_set1_ps(*pq.add(h * hd + d));
                for r in 0..R {
                    acc[h][r] = _mm512_fmadd_ps(x, k[r], acc[h][r]);
                }
            }
        }
        let sc = _mm512_set1_ps(scale);
        for h in 0..M {
            for r in 0..R {
                _mm512_storeu_ps(ps.add(h * w + j + 16 * r), _mm512_mul_ps(acc[h][r], sc));
            }
        }
    }

    /// [`super::scalar::values`] for `M` heads at once (`p` holds their weights, `w` apart;
    /// `o` their outputs, `hd` apart): 32 elements at a time in registers across all keys,
    /// then sixteen, then [`super::avx2`]'s tail; where `rows`, 128 at a time (a whole row of
    /// Llama 2's heads), each row fetched [`AHEAD`].
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn values<const M: usize, const HALF: bool>(
        kv: &KvView<'_>,
        p: &[f32],
        w: usize,
        nk: usize,
        rows: bool,
        o: &mut [f32],
    ) {
        let (hd, vs) = (kv.hd, kv.vstride);
        let v = base(kv.v);
        let (pp, po) = (p.as_ptr(), o.as_mut_ptr());
        let mut c = 0;
        if rows {
            while c + 128 <= hd {
                values_regs::<M, HALF, 8>(v, vs, pp, w, nk, c, po, hd, rows);
                c += 128;
            }
        }
        while c + 32 <= hd {
            values_regs::<M, HALF, 2>(v, vs, pp, w, nk, c, po, hd, rows);
            c += 32;
        }
        if c + 16 <= hd {
            values_regs::<M, HALF, 1>(v, vs, pp, w, nk, c, po, hd, rows);
            c += 16;
        }
        values_tail::<M, HALF>(v, vs, pp, w, nk, c, po, hd, rows);
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn values_regs<const M: usize, const HALF: bool, const R: usize>(
        v: *const u8,
        vs: usize,
        p: *const f32,
        w: usize,
        nk: usize,
        c: usize,
        o: *mut f32,
        hd: usize,
        ahead: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); R]; M];
        for j in 0..nk {
            let at = j * vs + c;
            if ahead && j + AHEAD < nk {
                fetch::<HALF>(v, at + AHEAD * vs, 16 * R);
            }
            let mut x = [_mm512_setzero_ps(); R];
            for r in 0..R {
                x[r] = load16::<HALF>(v, at + 16 * r);
            }
            for h in 0..M {
                let pw = _mm512_set1_ps(*p.add(h * w + j));
                for r in 0..R {
                    acc[h][r] = _mm512_fmadd_ps(pw, x[r], acc[h][r]);
                }
            }
        }
        for h in 0..M {
            for r in 0..R {
                _mm512_storeu_ps(o.add(h * hd + c + 16 * r), acc[h][r]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quant::{avx2_available, wide_available};

    struct Rng(u64);
    impl Rng {
        fn normal(&mut self) -> f32 {
            let mut u = || {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.0 >> 40) as f64 + 0.5) / (1u64 << 24) as f64
            };
            let (a, b) = (u(), u());
            ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
        }
    }

    /// The kernels this CPU runs: (kind, 512-bit).
    fn kernels_here() -> Vec<(Kernels, bool)> {
        let mut k = vec![(Kernels::Scalar, false)];
        if avx2_available() {
            k.push((Kernels::Avx2, false));
        } else {
            eprintln!("skipping the AVX2 half: AVX2/FMA/F16C not detected");
        }
        if wide_available() {
            k.push((Kernels::Avx2, true));
        } else {
            eprintln!("skipping the 512-bit kernels: AVX-512 not detected");
        }
        k
    }

    /// Every (hd, heads, first, tokens) case: both kernels give the same bits, and those are
    /// within 1e-4 of f64 attention.
    #[test]
    fn causal_matches_f64_and_kernels_agree() {
        let mut rng = Rng(3);
        for &(hd, heads, stride_heads, first, tokens) in &[
            (64, 3, 9, 0, 1),
            (64, 3, 9, 0, 37),
            (64, 3, 9, 5, 40),
            (64, 1, 1, 0, 70),
            (64, 2, 4, 31, 9),
            (80, 4, 4, 0, 11),
            (12, 5, 6, 2, 3),
            (128, 1, 1, 40, 1),
            (128, 2, 3, 5, 9),
            (128, 2, 3, 5, 1),
            (96, 3, 3, 17, 1),
            // A generation step over several key blocks of the AVX2 values, the last partial.
            (128, 1, 1, 150, 1),
            (80, 2, 2, 140, 1),
        ] {
            let stride = 2 * hd; // two KV heads' rows interleaved; the block reads the first
            let n = first + tokens;
            let kf: Vec<f32> = (0..n * stride).map(|_| rng.normal() * 2.0).collect();
            let vf: Vec<f32> = (0..n * stride).map(|_| rng.normal()).collect();
            let kh: Vec<half::f16> = kf.iter().map(|&x| half::f16::from_f32(x)).collect();
            let vh: Vec<half::f16> = vf.iter().map(|&x| half::f16::from_f32(x)).collect();
            let row_stride = stride_heads * hd;
            let q: Vec<f32> = (0..tokens * row_stride).map(|_| rng.normal()).collect();
            let scale = 1.0 / (hd as f32).sqrt();
            for (keys, values, kw, vw) in [
                (KvRows::F32(&kf), KvRows::F32(&vf), kf.clone(), vf.clone()),
                (
                    KvRows::F16(&kh),
                    KvRows::F16(&vh),
                    kh.iter().map(|h| h.to_f32()).collect::<Vec<_>>(),
                    vh.iter().map(|h| h.to_f32()).collect::<Vec<_>>(),
                ),
            ] {
                let block = KvBlock::new(keys, values, stride, n, hd);
                let kv = block.view();
                let mut first_out: Option<Vec<f32>> = None;
                for (k, wide) in kernels_here() {
                    let mut out = vec![f32::NAN; tokens * row_stride];
                    let mut sc = Scratch::default();
                    causal_in(
                        k, wide, &kv, &q, &mut out, row_stride, tokens, heads, first, scale,
                        &mut sc,
                    );
                    for g in 0..tokens {
                        for h in 0..heads {
                            let at = g * row_stride + h * hd;
                            let nk = first + g + 1;
                            let s: Vec<f64> = (0..nk)
                                .map(|j| {
                                    (0..hd)
                                        .map(|d| q[at + d] as f64 * kw[j * stride + d] as f64)
                                        .sum::<f64>()
                                        * scale as f64
                                })
                                .collect();
                            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                            for d in 0..hd {
                                let e: f64 = (0..nk)
                                    .map(|j| (s[j] - m).exp() / z * vw[j * stride + d] as f64)
                                    .sum();
                                let got = out[at + d] as f64;
                                assert!(
                                    (e - got).abs() < 1e-4,
                                    "{k:?} wide {wide} hd {hd} first {first} g {g} h {h} d {d}: {e} vs {got}"
                                );
                            }
                        }
                        // Heads past `heads` are not touched.
                        for x in &out[g * row_stride + heads * hd..(g + 1) * row_stride] {
                            assert!(x.is_nan());
                        }
                    }
                    match &first_out {
                        None => first_out = Some(out),
                        Some(want) => {
                            for (i, (a, b)) in out.iter().zip(want).enumerate() {
                                assert_eq!(
                                    a.to_bits(),
                                    b.to_bits(),
                                    "{k:?} wide {wide} hd {hd} at {i}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The engine's layout (9 query heads over 3 KV heads, rows of all heads per token, the
    /// transposed f16 cache): the whole batch at once, in blocks of four tokens, and token by
    /// token give the same bits, within 1e-4 of f64 attention.
    #[test]
    fn causal_same_bits_in_any_blocking() {
        let mut rng = Rng(11);
        let (nh, nkv, hd) = (9, 3, 64);
        let (kvd, rep) = (nkv * hd, nh / nkv);
        for &(first, tokens) in &[(0, 10), (3, 6), (0, 21)] {
            let n = first + tokens;
            let cap = (n + 5_usize).next_multiple_of(8);
            let kf: Vec<f32> = (0..n * kvd).map(|_| rng.normal() * 3.0).collect();
            let vf: Vec<f32> = (0..n * kvd).map(|_| rng.normal()).collect();
            let mut kt = vec![half::f16::ZERO; kvd * cap];
            for j in 0..n {
                for e in 0..kvd {
                    kt[e * cap + j] = half::f16::from_f32(kf[j * kvd + e]);
                }
            }
            let vh: Vec<half::f16> = vf.iter().map(|&x| half::f16::from_f32(x)).collect();
            let q: Vec<f32> = (0..tokens * nh * hd).map(|_| rng.normal() * 3.0).collect();
            let scale = 0.125;
            let view = |h: usize| {
                KvView::new(
                    KvRows::F16(&kt[h * hd * cap..(h + 1) * hd * cap]),
                    cap,
                    KvRows::F16(&vh).from(h * hd),
                    kvd,
                    n,
                    hd,
                )
            };
            let run = |block: usize, (k, wide): (Kernels, bool)| {
                let mut out = vec![f32::NAN; tokens * nh * hd];
                for h in 0..nkv {
                    for (u, o) in out.chunks_mut(block * nh * hd).enumerate() {
                        let at = h * rep * hd;
                        let t = o.len() / (nh * hd);
                        causal_in(
                            k,
                            wide,
                            &view(h),
                            &q[u * block * nh * hd + at..],
                            &mut o[at..],
                            nh * hd,
                            t,
                            rep,
                            first + block * u,
                            scale,
                            &mut Scratch::default(),
                        );
                    }
                }
                out
            };
            let want = run(tokens, (Kernels::Scalar, false));
            for k in kernels_here() {
                for block in [tokens, 4, 1] {
                    let got = run(block, k);
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(a.to_bits(), b.to_bits(), "{k:?} block {block} at {i}");
                    }
                }
            }
            for i in 0..tokens {
                for h in 0..nh {
                    let at = (i * nh + h) * hd;
                    let kh = h / rep * hd;
                    let nk = first + i + 1;
                    let kw =
                        |j: usize, d: usize| half::f16::from_f32(kf[j * kvd + kh + d]).to_f32();
                    let vw = |j: usize, d: usize| vh[j * kvd + kh + d].to_f32() as f64;
                    let s: Vec<f64> = (0..nk)
                        .map(|j| {
                            (0..hd)
                                .map(|d| q[at + d] as f64 * kw(j, d) as f64)
                                .sum::<f64>()
                                * scale as f64
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    for d in 0..hd {
                        let e: f64 = (0..nk).map(|j| (s[j] - m).exp() / z * vw(j, d)).sum();
                        let g = want[at + d] as f64;
                        assert!((e - g).abs() < 1e-4, "token {i} head {h} d {d}: {e} vs {g}");
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "keys needed")]
    fn causal_rejects_missing_keys() {
        let k = vec![0f32; 64 * 4];
        let kv = KvBlock::new(KvRows::F32(&k), KvRows::F32(&k), 64, 4, 64);
        let q = vec![0f32; 64 * 2];
        let mut out = vec![0f32; 64 * 2];
        causal(
            &kv.view(),
            &q,
            &mut out,
            64,
            2,
            1,
            3,
            0.125,
            &mut Scratch::default(),
        );
    }
}
