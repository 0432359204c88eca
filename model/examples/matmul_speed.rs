//! Throughput of the engine's matrix products at prefill and embedding shapes, through
//! `QMatrix::matmul` on the configured threads ($RAG_THREADS, default 2): SmolLM2's gate /
//! up (3072x576) and down (576x1536) against 2,000 tokens (an embedding batch) and gate /
//! up against 128 (a prefill slice). $RAG_QTYPE picks the weight type (q4_0, q4_1, q8_0;
//! default q4_1). Prints GMAC/s, best of five 0.4 s rounds.
//!
//!     cargo run --release --example matmul_speed
//!
//! The host's speed drifts within minutes: compare builds by alternating them, or better,
//! by alternating two code paths inside one process.
mod common;

use std::time::{Duration, Instant};

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use rag_model::engine::quant::QType;
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
        None | Some("q4_1") => QType::Q4_1,
        Some(other) => anyhow::bail!("RAG_QTYPE={other}: expected q4_0, q4_1 or q8_0"),
    };
    for (rows, cols, tokens) in [(3072, 576, 2000), (576, 1536, 2000), (3072, 576, 128)] {
        let w = Tensor::from_vec(random(rows * cols, 1), (rows, cols), &Device::Cpu)?;
        let data = QTensor::quantize(&w, ty.to_ggml())?.data()?.into_owned();
        let m = QMatrix::blocks(ty, rows, cols, data)?;
        let x = random(tokens * cols, 7);
        let mut q = Vec::new();
        let inp = quantize(&x, cols, &mut q);
        let mut y = vec![0f32; tokens * rows];
        let mut best = 0f64;
        for _ in 0..5 {
            let start = Instant::now();
            let mut iters = 0;
            while start.elapsed() < Duration::from_millis(400) {
                rayon::scope(|_| m.matmul(&inp, &mut y));
                iters += 1;
            }
            let g = (iters * rows * cols * tokens) as f64 / start.elapsed().as_secs_f64() / 1e9;
            best = best.max(g);
        }
        println!("{ty:?} {rows}x{cols} x {tokens} tokens, {threads} threads: {best:.1} GMAC/s");
    }
    Ok(())
}
