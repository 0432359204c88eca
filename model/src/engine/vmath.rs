//! Elementwise float functions whose scalar and AVX2 versions give the same bits: a
//! polynomial `exp` (for the softmax of [`super::attn`]) and the SiLU gate of the
//! feed-forward block. libm's `expf` is one call per element and cannot be matched lane by
//! lane.
use super::quant::{effective, kernels, Kernels};

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 in two parts: the high one has trailing zero bits, so `n · LN2_HI` is exact.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Below this, `exp` is 0 (e^-87 ≈ 1.6e-38, near the smallest normal f32, 1.2e-38).
const EXP_MIN: f32 = -87.0;
/// Above this, `exp` stays at e^88 ≈ 1.65e38 (f32 overflows past e^88.72).
const EXP_MAX: f32 = 88.0;
/// Taylor coefficients of e^r, highest first: 1/720 … 1/1 (|r| ≤ ln2/2: error below 2e-7).
const EXP_POLY: [f32; 7] = [
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// e^x as the AVX2 code computes it: x clamped to [-87, 88], x = n ln2 + r with
/// n = round(x log2 e), a degree-6 polynomial in r, times 2^n; 0 below -87 (and for NaN).
/// Relative error below 3e-7.
#[inline]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(EXP_MIN, EXP_MAX);
    let n = (xc * LOG2E).round_ties_even();
    let r = n.mul_add(-LN2_HI, xc);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p.mul_add(r, c);
    }
    let e = p * f32::from_bits(((n as i32 + 127) << 23) as u32);
    // As the AVX2 compare: NaN gives 0 too.
    if x >= EXP_MIN {
        e
    } else {
        0.0
    }
}

/// `g = g / (1 + exp(-g)) · u` elementwise (SiLU of the gate times the up projection).
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    silu_mul_with(kernels(), g, u)
}

/// [`silu_mul`] with explicit kernels.
pub fn silu_mul_with(k: Kernels, g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len(), "silu_mul: lengths");
    let k = effective(k);
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    if k == Kernels::Avx2 {
        // SAFETY: features detected; lengths checked.
        i = unsafe { avx2::silu_mul(g, u) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = k;
    for (g, &u) in g[i..].iter_mut().zip(&u[i..]) {
        *g = *g / (1.0 + exp(-*g)) * u;
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{EXP_MAX, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO, LOG2E};
    use std::arch::x86_64::*;

    /// [`super::exp`] on eight lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn exp8(x: __m256) -> __m256 {
        let lo = _mm256_set1_ps(EXP_MIN);
        let xc = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(EXP_MAX));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(xc, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), xc);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        let e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
        // x < EXP_MIN (or NaN) → 0.
        _mm256_and_ps(e, _mm256_cmp_ps::<_CMP_GE_OQ>(x, lo))
    }

    /// [`super::silu_mul`] on the first multiple of 8 elements; returns how many.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn silu_mul(g: &mut [f32], u: &[f32]) -> usize {
        let n = g.len() / 8 * 8;
        let (pg, pu) = (g.as_mut_ptr(), u.as_ptr());
        let one = _mm256_set1_ps(1.0);
        let neg = _mm256_set1_ps(-0.0);
        let mut i = 0;
        while i < n {
            let x = _mm256_loadu_ps(pg.add(i));
            let e = exp8(_mm256_xor_ps(x, neg));
            let y = _mm256_mul_ps(
                _mm256_div_ps(x, _mm256_add_ps(one, e)),
                _mm256_loadu_ps(pu.add(i)),
            );
            _mm256_storeu_ps(pg.add(i), y);
            i += 8;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quant::avx2_available;

    #[test]
    fn exp_close_to_f64() {
        let mut worst = 0f64;
        let mut x = 88f32;
        while x > -87.0 {
            let e = exp(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((e - want) / want).abs());
            x -= 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::NAN), 0.0);
        assert_eq!(exp(1000.0), exp(88.0));
        assert!(exp(88.0).is_finite());
    }

    /// The AVX2 lanes give the scalar bits, on a sweep, the clamps, infinities and NaN, and
    /// a length with a tail.
    #[test]
    fn silu_mul_kernels_agree() {
        let mut g: Vec<f32> = (0..2003).map(|i| (i as f32 - 1000.0) * 0.093).collect();
        g.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -0.0,
            0.0,
            1e30,
            -1e30,
        ]);
        let u: Vec<f32> = (0..g.len()).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let mut want = g.clone();
        silu_mul_with(Kernels::Scalar, &mut want, &u);
        for (i, (&x, &y)) in g.iter().zip(&want).enumerate().take(2003) {
            let exact = (x as f64 / (1.0 + (-x as f64).exp())) * u[i] as f64;
            assert!(
                (y as f64 - exact).abs() <= 1e-6 * (1.0 + exact.abs()),
                "{x}: {y} vs {exact}"
            );
        }
        if !avx2_available() {
            eprintln!("skipping the AVX2 half: AVX2/FMA/F16C not detected");
            return;
        }
        let mut got = g.clone();
        silu_mul_with(Kernels::Avx2, &mut got, &u);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "element {i} ({})", g[i]);
        }
    }
}
