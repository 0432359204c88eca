//! Kernel tests: bit-identity of the AVX2 and scalar kernels, agreement with GGML's
//! dequantization and with an f64 reference.
use super::*;
use candle_core::quantized::{GgmlDType, QTensor};
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
                let four = vec_dot_x4_with(k, ty, &bytes, [&acts[0], &acts[1], &acts[2], &acts[3]]);
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
    // One scale per 256 values, the largest magnitude in each of the unit's blocks in turn.
    for x in [
        activation(&weights(1024, 3), true, 4),
        (0..768).map(|i| (i as f32 - 300.0) * 0.37).collect(),
    ] {
        let units = |k| {
            let mut out = vec![BlockQ8::default(); x.len() / 32];
            quantize_row_q8_units_with(k, &x, &mut out);
            out
        };
        assert_eq!(units(Kernels::Scalar), units(Kernels::Avx2));
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
/// Held by the tests that flip the global kernel switches ([`set_vnni`] and the like) and by
/// those whose Q6_K activations follow them ([`q6k_units`]): where VNNI exists, `x8_gemm`
/// turns it off for a while, which changes the form Q6_K's kernels take in the meantime.
static SWITCHES: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn hold_switches() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed while holding it poisons it; the others still run, each reading
    // the switches as it finds them.
    SWITCHES.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn x8_gemm() {
    let _switches = hold_switches();
    for ty in QType::ALL.into_iter().filter(|&t| has_x8(t)) {
        // 2, 5 and 7 groups of eight rows: the kernels' sets of four, three and one.
        for rows in [16, 40, 56] {
            x8_gemm_for(ty, rows);
        }
    }
}

fn x8_gemm_for(ty: QType, rows: usize) {
    // The K-quants' rows are whole superblocks of 256.
    let cols = if ty.block_elems() == 256 { 768 } else { 576 };
    let (bytes, _) = candle_row(ty, &weights(rows * cols, 77));
    let packed = repack_x8(ty, bytes.clone(), rows, cols);
    assert_eq!(packed.len(), rows / 8 * x8_group_bytes(ty, cols));
    if ty.block_elems() == 32 || ty == QType::Q6K {
        assert_eq!(packed.len(), bytes.len());
    }
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
    // The activations as the kernels in use take them: for Q6_K without VNNI, one scale per
    // 256 columns.
    let acts_for = |units: bool| {
        let mut acts: Vec<BlockQ8> = (0..t as u64)
            .flat_map(|i| {
                let x = activation(&weights(cols, 80 + i), i % 2 == 1, 90 + i);
                if units {
                    let mut out = vec![BlockQ8::default(); nb];
                    quantize_row_q8_units(&x, &mut out);
                    out
                } else {
                    q8(&x, Kernels::Scalar)
                }
            })
            .collect();
        // Extreme blocks too: all -128 / +127 against the largest nibbles.
        for q in acts[0].qs.iter_mut() {
            *q = -128;
        }
        for q in acts[1].qs.iter_mut() {
            *q = 127;
        }
        acts
    };
    // (kernels, VNNI on, 512-bit token loops on, AMX on, two tokens a step in the 256-bit
    // Q8_0 loop) of each run: Q8_0's 256-bit loops both ways ([`q8_pairs`]).
    let mut kernels = vec![(Kernels::Scalar, false, false, false, false)];
    let pairs: &[bool] = if ty == QType::Q8_0 {
        &[false, true]
    } else {
        &[false]
    };
    for &p in pairs {
        if avx2_available() {
            kernels.push((Kernels::Avx2, false, false, false, p));
        }
        if vnni_available() {
            kernels.push((Kernels::Avx2, true, false, false, p));
        }
    }
    if vnni_available() && wide_available() {
        kernels.push((Kernels::Avx2, true, true, false, false));
    }
    if vnni_available() && amx_available() {
        kernels.push((Kernels::Avx2, true, true, true, false));
    }
    let (vnni_was, wide_was, amx_was, pairs_was) = (vnni(), wide(), amx(), q8_pairs());
    for &(k, v, w, x, p) in &kernels {
        set_vnni(v);
        set_wide(w);
        set_amx(x);
        set_q8_pairs(p);
        let acts = acts_for(ty == QType::Q6K && q6k_units());
        let mut out = vec![f32::NAN; rows * t];
        gemm_x8_with(k, ty, &packed, &acts, cols, &mut out);
        // The scalar kernels with the same switches (Q6_K's float order follows VNNI).
        let mut want = vec![f32::NAN; rows * t];
        gemm_x8_with(Kernels::Scalar, ty, &packed, &acts, cols, &mut want);
        for (a, b) in out.iter().zip(&want) {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{ty:?} {k:?} VNNI {v} pairs {p} vs scalar"
            );
        }
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
    }
    set_vnni(vnni_was);
    set_wide(wide_was);
    set_amx(amx_was);
    set_q8_pairs(pairs_was);
}

/// Q6_K's activations with one scale per 256 columns: each unit shares the `d` of its
/// largest magnitude, which quantizes to ±127; `s` is `d` times the block's sum; and where
/// [`q6k_units`] holds, `gemm_x8` refuses ordinary blocks instead of misreading them.
#[test]
fn q8_units() {
    let _switches = hold_switches();
    let x: Vec<f32> = (0..512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * if i < 256 { 0.01 } else { 3.0 })
        .collect();
    let mut out = vec![BlockQ8::default(); 16];
    quantize_row_q8_units(&x, &mut out);
    for (u, xu) in out.chunks(8).zip(x.chunks(256)) {
        let amax = xu.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(u.iter().all(|b| b.d == amax / 127.0), "{:?}", u[0].d);
        let qs: Vec<i8> = u.iter().flat_map(|b| b.qs).collect();
        assert_eq!(qs.iter().map(|q| q.unsigned_abs()).max(), Some(127));
        for (q, v) in qs.iter().zip(xu) {
            assert!((*q as f32 * u[0].d - v).abs() <= u[0].d / 2.0 * 1.0001);
        }
        for b in u {
            let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
            assert_eq!(b.s, b.d * sum as f32);
        }
    }
    if q6k_units() {
        let cols = 256;
        let (bytes, _) = candle_row(QType::Q6K, &weights(8 * cols, 5));
        let packed = repack_x8(QType::Q6K, bytes, 8, cols);
        let blocks = q8(&x[..cols], Kernels::Scalar);
        let mut y = vec![0f32; 8];
        let r = std::panic::catch_unwind(move || {
            gemm_x8_with(Kernels::Scalar, QType::Q6K, &packed, &blocks, cols, &mut y)
        });
        assert!(r.is_err(), "ordinary blocks taken for Q6_K's units");
    }
}

/// Q6_K with one activation scale per 256 columns is as close to the exact product as with
/// a scale per 32 (the per-32 blocks reach finer values where a unit's magnitudes differ),
/// in both units forms (the scalar kernels, given the form), and the fast kernels give the
/// scalar kernels' bits in the form they take here.
#[test]
fn q6k_units_close_to_reference() {
    let _switches = hold_switches();
    let (rows, cols) = (16, 1024);
    let w = weights(rows * cols, 41);
    let (bytes, deq) = candle_row(QType::Q6K, &w);
    let packed = repack_x8(QType::Q6K, bytes, rows, cols);
    for seed in 0..4 {
        let x = activation(&weights(cols, 60 + seed), seed % 2 == 0, 70 + seed);
        let mut units = vec![BlockQ8::default(); cols / 32];
        quantize_row_q8_units(&x, &mut units);
        for form in [Q6kForm::UnitsFolded, Q6kForm::UnitsFloat] {
            let mut y = vec![0f32; rows];
            // SAFETY: `y` holds the one token's rows.
            unsafe {
                scalar::gemm_x8(
                    QType::Q6K,
                    &packed,
                    &units,
                    cols / 32,
                    y.as_mut_ptr(),
                    rows,
                    form,
                )
            };
            if q6k_form() == form {
                let mut fast = vec![0f32; rows];
                gemm_x8_with(Kernels::Avx2, QType::Q6K, &packed, &units, cols, &mut fast);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&fast),
                    bits(&y),
                    "{form:?} seed {seed}: fast vs scalar"
                );
            }
            for r in 0..rows {
                let wr = &deq[r * cols..(r + 1) * cols];
                let exact: f64 = wr.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
                let mag: f64 = wr
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum();
                // The activations' rounding: at most half a unit's step per value.
                let (want, _) = reference(wr, &units);
                assert!(
                    (y[r] as f64 - want).abs() <= 1e-5 * mag,
                    "{form:?} seed {seed} row {r}: {} vs {want}",
                    y[r]
                );
                assert!(
                    (want - exact).abs() <= 0.02 * mag,
                    "seed {seed} row {r}: {want} vs exact {exact}"
                );
            }
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
    assert_eq!(set_kernels(Kernels::Scalar), Kernels::Scalar);
    assert_eq!(kernels(), Kernels::Scalar);
    assert_eq!(set_kernels(Kernels::Avx2), detected);
    assert_eq!(kernels(), detected);
}
