//! Throughput of the engine's matrix products at prefill and embedding shapes, through
//! `QMatrix::matmul` on the configured threads ($RAG_THREADS, default 2): SmolLM2's gate /
//! up (3072x576) and down (576x1536) against 2,000 tokens (an embedding batch) and gate /
//! up against 128 (a prefill slice); with RAG_SHAPES=tinyllama (or llama2-7b), TinyLlama's (Llama 2 7B's) gate / up
//! (5632x2048) and down (2048x5632) against 128 tokens and against one (a generation step);
//! with RAG_SHAPES=ROWSxCOLSxTOKENS[,...], those.
//! $RAG_QTYPE picks the weight type (q4_0, q4_1, q8_0, q4_k, q5_k, q6_k; default q4_1);
//! RAG_VNNI=0, RAG_WIDE=0 and RAG_AMX=0 turn off VNNI, the 512-bit token loops and the AMX
//! tiles; RAG_Q8_PAIRS=0 or 1 sets the 256-bit Q8_0 loop's tokens a step to one or two.
//! Prints GMAC/s (and for one token, GB/s of weights read), best of five 0.4 s rounds.
//! RAG_COPIES=N (default 1) cycles through N copies of each matrix, so that one-token
//! products read their weights from memory, not from a cache that holds the whole matrix.
//!
//!     cargo run --release --example matmul_speed
//!
//! The host's speed drifts within minutes: compare builds by alternating them, or better,
//! by alternating two code paths inside one process.
mod common;

use std::time::{Duration, Instant};

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use rag_model::engine::quant::{self, QType};
use rag_model::engine::{quantize, QMatrix};

use common::random;

fn main() -> anyhow::Result<()> {
    let threads: usize = std::env::var("RAG_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    rag_model::set_threads(threads)?;
    let ty = match std::env::var("RAG_QTYPE").ok().as_deref() {
        Some("q4_0") => QType::Q4_0,
        Some("q8_0") => QType::Q8_0,
        Some("q4_k") => QType::Q4K,
        Some("q5_k") => QType::Q5K,
        Some("q6_k") => QType::Q6K,
        None | Some("q4_1") => QType::Q4_1,
        Some(other) => {
            anyhow::bail!("RAG_QTYPE={other}: expected q4_0, q4_1, q8_0, q4_k, q5_k or q6_k")
        }
    };
    // RAG_VNNI=0: the K-quants' AVX2 kernels without AVX-VNNI.
    let vnni = quant::set_vnni(std::env::var("RAG_VNNI").as_deref() != Ok("0"));
    // RAG_WIDE=0: the 256-bit token loops where the CPU has AVX-512.
    let wide = quant::set_wide(std::env::var("RAG_WIDE").as_deref() != Ok("0"));
    // RAG_AMX=0: the 512-bit token loops where the CPU has AMX (Q8_0 never takes the tiles).
    let amx = quant::set_amx(std::env::var("RAG_AMX").as_deref() != Ok("0"));
    // RAG_Q8_PAIRS=0 / 1: the 256-bit Q8_0 loop one or two tokens a step (default: by CPU).
    let pairs = match std::env::var("RAG_Q8_PAIRS").as_deref() {
        Ok("0") => quant::set_q8_pairs(false),
        Ok("1") => quant::set_q8_pairs(true),
        _ => quant::q8_pairs(),
    };
    let env_shapes = std::env::var("RAG_SHAPES").ok();
    let parsed: Vec<(usize, usize, usize)>;
    let shapes: &[(usize, usize, usize)] = match env_shapes.as_deref() {
        // Any shapes: RAG_SHAPES=ROWSxCOLSxTOKENS[,...], e.g. 4096x4096x1.
        Some(list) if list.contains('x') => {
            parsed = list
                .split(',')
                .map(|s| {
                    let n: Vec<usize> =
                        s.split('x').filter_map(|v| v.trim().parse().ok()).collect();
                    match n[..] {
                        [r, c, t] => Ok((r, c, t)),
                        _ => Err(anyhow::anyhow!("RAG_SHAPES: {s:?} is not ROWSxCOLSxTOKENS")),
                    }
                })
                .collect::<anyhow::Result<_>>()?;
            &parsed
        }
        // TinyLlama's gate / up and down, for a prefill slice and for one token.
        Some("tinyllama") => &[
            (5632, 2048, 128),
            (2048, 5632, 128),
            (5632, 2048, 1),
            (2048, 5632, 1),
        ],
        // Llama 2 7B's gate / up and down likewise.
        Some("llama2-7b") => &[
            (11008, 4096, 128),
            (4096, 11008, 128),
            (11008, 4096, 1),
            (4096, 11008, 1),
        ],
        _ => &[(3072, 576, 2000), (576, 1536, 2000), (3072, 576, 128)],
    };
    for &(rows, cols, tokens) in shapes {
        let w = Tensor::from_vec(random(rows * cols, 1), (rows, cols), &Device::Cpu)?;
        let data = QTensor::quantize(&w, ty.to_ggml())?.data()?.into_owned();
        let copies: usize = std::env::var("RAG_COPIES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(1)
            .max(1);
        let ms = (0..copies)
            .map(|_| QMatrix::blocks(ty, rows, cols, data.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let m = &ms[0];
        let x = random(tokens * cols, 7);
        let mut q = Vec::new();
        let inp = quantize(&x, cols, &mut q);
        let mut y = vec![0f32; tokens * rows];
        let mut best = 0f64;
        for _ in 0..5 {
            let start = Instant::now();
            let mut iters = 0;
            while start.elapsed() < Duration::from_millis(400) {
                let m = &ms[iters % copies];
                rayon::scope(|_| m.matmul(&inp, &mut y));
                iters += 1;
            }
            let g = (iters * rows * cols * tokens) as f64 / start.elapsed().as_secs_f64() / 1e9;
            best = best.max(g);
        }
        let gbs = best * m.bytes() as f64 / (rows * cols) as f64;
        println!(
            "{ty:?} {rows}x{cols} x {tokens} tokens, {threads} threads{}{}: {best:.1} GMAC/s ({:.1} GB/s of weights per token)",
            match (vnni, wide, amx) {
                (_, _, true) => ", VNNI, 512-bit, AMX",
                (_, true, _) => ", VNNI, 512-bit",
                (true, _, _) => ", VNNI",
                _ => "",
            },
            // Where the 256-bit Q8_0 loop runs and takes two tokens a step (sets of four groups).
            if ty == QType::Q8_0 && !wide && pairs && tokens >= 4 {
                ", pairs"
            } else {
                ""
            },
            gbs / tokens as f64
        );
    }
    Ok(())
}
