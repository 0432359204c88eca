//! Single-thread throughput of the quantized dot-product kernels (`rag_model::engine::quant`):
//! for each weight type, a 1536x576 matrix (576x1536 for the K-quants, whose rows are the
//! 1536-wide ffn_down) against one activation with `vec_dot`, scalar and AVX2, and against
//! four activations with `vec_dot_x4` (counted per activation row). Prints GMAC/s
//! (multiply-accumulates per second).
//!
//!     cargo run --release --example kernels_speed
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use rag_model::engine::quant::{
    avx2_available, dot_f32_with, gemm_x8, has_x8, quantize_row_q8_with, repack_x8, vec_dot_tile,
    vec_dot_with, vec_dot_x4_with, BlockQ8, Kernels, QType,
};

use common::random;

/// Run `f` (one pass over the matrix doing `macs` multiply-accumulates) until 0.3 s have
/// passed; best-of-3 GMAC/s.
fn gmacs(macs: usize, mut f: impl FnMut()) -> f64 {
    let mut best = 0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let mut iters = 0usize;
        while start.elapsed() < Duration::from_millis(300) {
            f();
            iters += 1;
        }
        best = best.max((macs * iters) as f64 / start.elapsed().as_secs_f64() / 1e9);
    }
    best
}

fn main() -> anyhow::Result<()> {
    let avx2 = avx2_available();
    println!("AVX2+FMA+F16C detected: {avx2}");
    println!(
        "{:<6} {:>11} {:>10} {:>10} {:>13} {:>11} {:>10}",
        "type", "matrix", "scalar", "avx2", "avx2 x4/row", "tile16/row", "x8 64/row"
    );
    let types = QType::ALL
        .into_iter()
        .filter(|t| !matches!(t, QType::F32 | QType::F16));
    for ty in types {
        let (rows, cols) = if ty.block_elems() == 256 {
            (576, 1536)
        } else {
            (1536, 576)
        };
        let w = Tensor::from_vec(random(rows * cols, 1), (rows, cols), &Device::Cpu)?;
        let data = QTensor::quantize(&w, ty.to_ggml())?.data()?.into_owned();
        let rb = ty.row_bytes(cols);
        let acts: Vec<Vec<BlockQ8>> = (0..4)
            .map(|s| {
                let mut a = vec![BlockQ8::default(); cols / 32];
                quantize_row_q8_with(Kernels::Scalar, &random(cols, 10 + s), &mut a);
                a
            })
            .collect();
        let mut out = vec![0f32; rows];
        let mut one = |k: Kernels| {
            gmacs(rows * cols, || {
                for (r, o) in out.iter_mut().enumerate() {
                    *o = vec_dot_with(k, ty, &data[r * rb..(r + 1) * rb], &acts[0]);
                }
                black_box(&out);
            })
        };
        let scalar = one(Kernels::Scalar);
        let vec = if avx2 {
            format!("{:.2}", one(Kernels::Avx2))
        } else {
            "-".into()
        };
        let mut out4 = vec![[0f32; 4]; rows];
        let x4 = if avx2 {
            let g = gmacs(4 * rows * cols, || {
                for (r, o) in out4.iter_mut().enumerate() {
                    let a = [&acts[0][..], &acts[1][..], &acts[2][..], &acts[3][..]];
                    *o = vec_dot_x4_with(Kernels::Avx2, ty, &data[r * rb..(r + 1) * rb], a);
                }
                black_box(&out4);
            });
            format!("{g:.2}")
        } else {
            "-".into()
        };
        // The engine's prefill shape: 16 tokens against 128-row slices (kernels() in use).
        let acts16: Vec<BlockQ8> = (0..16).flat_map(|i| acts[i % 4].clone()).collect();
        let mut out16 = vec![0f32; 16 * 128];
        let tile = gmacs(16 * (rows / 128 * 128) * cols, || {
            for r0 in (0..rows / 128 * 128).step_by(128) {
                vec_dot_tile(
                    ty,
                    &data[r0 * rb..(r0 + 128) * rb],
                    &acts16,
                    cols,
                    &mut out16,
                );
                black_box(&out16);
            }
        });
        // The x8 layout (32-element formats): 64 tokens against the whole matrix.
        let x8 = if has_x8(ty) {
            let packed = repack_x8(ty, data.clone(), rows, cols);
            let acts64: Vec<BlockQ8> = (0..64).flat_map(|i| acts[i % 4].clone()).collect();
            let mut out64 = vec![0f32; 64 * rows];
            let g = gmacs(64 * rows * cols, || {
                gemm_x8(ty, &packed, &acts64, cols, &mut out64);
                black_box(&out64);
            });
            format!("{g:.2}")
        } else {
            "-".into()
        };
        println!(
            "{:<6} {:>11} {:>10.2} {:>10} {:>13} {:>11.2} {:>10}",
            format!("{ty:?}"),
            format!("{rows}x{cols}"),
            scalar,
            vec,
            x4,
            tile,
            x8
        );
    }
    // f32 rows (dequantized weights) for comparison.
    let (rows, cols) = (1536, 576);
    let w = random(rows * cols, 1);
    let x = random(cols, 2);
    let mut out = vec![0f32; rows];
    let mut f32_rate = |k: Kernels| {
        gmacs(rows * cols, || {
            for (r, o) in out.iter_mut().enumerate() {
                *o = dot_f32_with(k, &w[r * cols..(r + 1) * cols], &x);
            }
            black_box(&out);
        })
    };
    let scalar = f32_rate(Kernels::Scalar);
    let vec = if avx2 {
        format!("{:.2}", f32_rate(Kernels::Avx2))
    } else {
        "-".into()
    };
    println!(
        "{:<6} {:>11} {:>10.2} {:>10} {:>13}",
        "F32", "1536x576", scalar, vec, "-"
    );
    Ok(())
}
