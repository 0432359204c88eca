//! The portable scalar reference kernels. Each performs the AVX2 kernels' floating-point
//! operations in the same order (integer partial sums in the same eight lanes, the same FMAs,
//! the same horizontal-sum tree), so the two give the same bits; see the dispatch module's
//! docs. Index loops spell out the AVX2 lanes.
#![allow(clippy::needless_range_loop)]
use super::blocks::{
    k_layout, q6k_source, q6k_x8, rd_f16, scale_min_k4, x8_block_bytes, x8_parts, BlockQ8, Q6kForm,
    QType,
};

/// [`super::gemm_x8`], lane by lane as the AVX2 code; `q6k`: the form Q6_K takes
/// ([`super::q6k_form`]).
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
    q6k: Q6kForm,
) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("fma") {
        // SAFETY: FMA detected.
        return fma::gemm_x8(ty, packed, acts, nb, out, ldo, q6k);
    }
    gemm_x8_body(ty, packed, acts, nb, out, ldo, q6k)
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
    q6k: Q6kForm,
) {
    if ty.block_elems() == 256 {
        return gemm_x8k_body(ty, packed, acts, nb, out, ldo, q6k);
    }
    let (nf, five, nq) = x8_parts(ty);
    let min = nf == 2;
    let chunks_at = 16 * nf + if five { 32 } else { 0 };
    let bs = x8_block_bytes(ty);
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
                        // Q8_0: |w| against a with w's sign, byte pairs clamped as maddubs
                        // does (a bound they never reach: |w| <= 128, signed a >= -128).
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

/// The K-quant part of [`gemm_x8_body`]: for each row, unit (256 columns) and 32-column
/// sub-block, the exact integer sum against that sub-block's activation block, then, as the
/// AVX2 kernels, `fma(sum, (d·scale)·d_a)` and for Q4_K / Q5_K `fma(-(dmin·min), s_a)`
/// (Q6_K: per 16-column half, its weights 0..63 less 32, each half with its own scale; in
/// the units forms, activations with one scale per 256 columns, the halves' sums times their
/// scales summed over the unit, in integers or in float ([`Q6kForm`]), and one
/// `fma(sum, d·d_a)` with that scale).
#[inline(always)]
unsafe fn gemm_x8k_body(
    ty: QType,
    packed: &[u8],
    acts: &[BlockQ8],
    nb: usize,
    out: *mut f32,
    ldo: usize,
    q6k: Q6kForm,
) {
    let l = k_layout(ty);
    let bs = x8_block_bytes(ty);
    let units = nb / 8;
    let rows = packed.len() / (units * bs) * 8;
    let t = acts.len() / nb;
    let chunk = |at: usize, r: usize, i: usize| at + 32 * (i / 4) + 4 * r + i % 4;
    for g in 0..rows / 8 {
        for i in 0..t {
            let mut acc = [0f32; 8];
            for b in 0..units {
                let o = &packed[(g * units + b) * bs..][..bs];
                for (r, acc) in acc.iter_mut().enumerate() {
                    let d = rd_f16(o, 2 * r);
                    if ty == QType::Q6K && q6k != Q6kForm::Blocks {
                        // One activation scale for the unit: the scales fold into the
                        // integer sum (`avx2_k::gemm_x8_q6k_units`) or a float sum
                        // (`avx512::gemm_x8_q6k_units`), one float step.
                        let (mut isum, mut fsum) = (0i32, 0f32);
                        for k in 0..16 {
                            let a = &acts[i * nb + 8 * b + k / 2];
                            let mut dot = 0i32;
                            for c in 16 * (k % 2)..16 * (k % 2) + 16 {
                                let q = q6k_x8(&o[l.qs..], r, k / 2, c) as i32 - 32;
                                dot += q * a.qs[c] as i32;
                            }
                            let sc = o[l.sc + 8 * k + r] as i8;
                            isum += sc as i32 * dot;
                            fsum = (dot as f32).mul_add(sc as f32, fsum);
                        }
                        if q6k == Q6kForm::UnitsFolded {
                            fsum = isum as f32;
                        }
                        *acc = fsum.mul_add(d * acts[i * nb + 8 * b].d, *acc);
                        continue;
                    }
                    for j in 0..8 {
                        let a = &acts[i * nb + 8 * b + j];
                        if ty == QType::Q6K {
                            for e in 0..2 {
                                let mut isum = 0i32;
                                for c in 16 * e..16 * e + 16 {
                                    let q = q6k_x8(&o[l.qs..], r, j, c) as i32 - 32;
                                    isum += q * a.qs[c] as i32;
                                }
                                let sc = o[l.sc + 8 * (2 * j + e) + r] as i8 as f32;
                                *acc = (isum as f32).mul_add((d * sc) * a.d, *acc);
                            }
                            continue;
                        }
                        let mut isum = 0i32;
                        for c in 0..32 {
                            let x = o[chunk(l.qs + 256 * (j / 2), r, c)];
                            let mut q = if j % 2 == 0 { x & 0xF } else { x >> 4 };
                            if ty == QType::Q5K {
                                q |= ((o[chunk(l.qh, r, c)] >> j) & 1) << 4;
                            }
                            isum += q as i32 * a.qs[c] as i32;
                        }
                        let scale = d * o[l.sc + 8 * j + r] as f32;
                        let nm = rd_f16(o, l.dmin + 2 * r) * o[l.m + 8 * j + r] as f32;
                        *acc = (isum as f32).mul_add(scale * a.d, *acc);
                        *acc = (-nm).mul_add(a.s, *acc);
                    }
                }
            }
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

pub fn quantize_row_q8_units(x: &[f32], out: &mut [BlockQ8]) {
    for (xu, ou) in x.chunks_exact(256).zip(out.chunks_exact_mut(8)) {
        let amax = xu.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        for (xb, ob) in xu.chunks_exact(32).zip(ou.iter_mut()) {
            let mut sum = 0i32;
            for (q, &v) in ob.qs.iter_mut().zip(xb) {
                *q = (v * id).round_ties_even() as i8;
                sum += *q as i32;
            }
            ob.d = d;
            ob.s = d * sum as f32;
        }
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
            let sc = &b[192..208];
            let d = rd_f16(b, 208);
            for l in 0..32 {
                q[l] = q6k_source(b, 32 * (g % 8) + l) as i8 - 32;
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
                let q: [i32; 32] =
                    std::array::from_fn(|l| q6k_source(blk, 128 * h + 32 * g + l) as i32 - 32);
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
    use super::{dot_f32_body, gemm_x8_body, vec_dot_body, BlockQ8, Q6kForm, QType};

    #[target_feature(enable = "fma")]
    pub(super) unsafe fn gemm_x8(
        ty: QType,
        packed: &[u8],
        acts: &[BlockQ8],
        nb: usize,
        out: *mut f32,
        ldo: usize,
        q6k: Q6kForm,
    ) {
        gemm_x8_body(ty, packed, acts, nb, out, ldo, q6k)
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
