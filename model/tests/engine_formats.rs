//! The CPU engine on each weight format, against its own scalar reference kernels and against
//! candle's f32 forward over the dequantized weights.
//!
//! The formats are made from the default model (Q4_1) by re-encoding its tensors with candle's
//! quantizers (tests/common::requantize), the way llama.cpp lays them out: Q4_0 and Q8_0 files,
//! a Q4_K_M-like mix (Q4_K / Q6_K where rows are a multiple of 256, Q5_0 / Q5_1 elsewhere,
//! Q8_0 token table), a Q5_K_M-like one (Q5_K / Q6_K, Q5_1 elsewhere) and a Q6_K one (Q8_0
//! elsewhere). They are kept in the cargo target's temporary folder between runs.
mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use rag_model::engine::quant::{self, Kernels};
use rag_model::{HiddenLayer, Model, ModelOptions, WeightFormat};

/// The kernel choice is process-wide: tests that switch it run one at a time.
static KERNELS: Mutex<()> = Mutex::new(());

const PROMPTS: [&str; 3] = [
    "The Black Death was a bubonic plague pandemic that",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
];

/// (name, file) of each format, made once per test process.
fn formats() -> Option<Vec<(&'static str, PathBuf)>> {
    static MADE: std::sync::OnceLock<Option<Vec<(&'static str, PathBuf)>>> =
        std::sync::OnceLock::new();
    MADE.get_or_init(make_formats).clone()
}

fn make_formats() -> Option<Vec<(&'static str, PathBuf)>> {
    let src = common::default_model()?;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("engine-formats");
    std::fs::create_dir_all(&dir).unwrap();
    let size = std::fs::metadata(&src).unwrap().len();
    let make = |name: &str, pick: &dyn Fn(&str, &[usize]) -> Option<GgmlDType>| {
        let dst = dir.join(format!("smollm2-{size}.{name}.gguf"));
        if !dst.exists() {
            common::requantize(&src, &dst, pick);
        }
        dst
    };
    let is_matrix = |n: &str, d: &[usize]| d.len() == 2 && n.ends_with(".weight");
    // The layer of `blk.N.…` (0 for the others).
    let layer_of = |n: &str| -> usize {
        n.split('.')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let q4_0 = make("Q4_0", &|n, d| {
        (is_matrix(n, d) && n != "token_embd.weight").then_some(GgmlDType::Q4_0)
    });
    let q8_0 = make("Q8_0", &|n, d| is_matrix(n, d).then_some(GgmlDType::Q8_0));
    let kmix = make("Q4_K_M", &|n, d| {
        if !is_matrix(n, d) || n == "token_embd.weight" {
            return None;
        }
        let layer = layer_of(n);
        Some(
            match (d[1].is_multiple_of(256), n.contains("ffn_down"), layer % 2) {
                (true, true, 0) => GgmlDType::Q6K,
                (true, _, _) => GgmlDType::Q4K,
                (false, _, _) if n.contains("attn_v") => GgmlDType::Q5_1,
                (false, _, _) => GgmlDType::Q5_0,
            },
        )
    });
    // The K-quants where rows are whole superblocks (SmolLM2's `ffn_down`, 1536 wide): Q5_K
    // with Q6_K on every other layer, as llama.cpp's Q5_K_M; Q6_K alone, as its Q6_K.
    let k5mix = make("Q5_K_M", &|n, d| {
        if !is_matrix(n, d) || n == "token_embd.weight" {
            return None;
        }
        let layer = layer_of(n);
        Some(match (d[1].is_multiple_of(256), layer % 2) {
            (true, 0) => GgmlDType::Q6K,
            (true, _) => GgmlDType::Q5K,
            (false, _) => GgmlDType::Q5_1,
        })
    });
    let q6k = make("Q6_K", &|n, d| {
        (is_matrix(n, d) && n != "token_embd.weight").then(|| {
            if d[1].is_multiple_of(256) {
                GgmlDType::Q6K
            } else {
                GgmlDType::Q8_0
            }
        })
    });
    Some(vec![
        ("Q4_1", src),
        ("Q4_0", q4_0),
        ("Q8_0", q8_0),
        ("Q4_K_M", kmix),
        ("Q5_K_M", k5mix),
        ("Q6_K", q6k),
    ])
}

fn load(path: &Path, format: WeightFormat) -> Model {
    Model::load(
        path,
        &ModelOptions {
            format,
            max_context: Some(512),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Logits at every position of `ids` in one prefill, concatenated.
fn logits(m: &Model, ids: &[u32]) -> Vec<f32> {
    common::logits_per_position(m, ids).concat()
}

/// `n` greedy tokens after `ids` (end-of-sequence ignored), one forward per token.
fn greedy(m: &Model, ids: &[u32], n: usize) -> Vec<u32> {
    let mut cache = m.llama().new_cache(1, ids.len() + n).unwrap();
    let step = |cache: &mut rag_model::KvCache, toks: &[u32]| -> u32 {
        let x = Tensor::new(toks, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let h = m
            .llama()
            .forward_hidden(&x, Some(cache), None, HiddenLayer::Final)
            .unwrap();
        let last = h.narrow(1, toks.len() - 1, 1).unwrap();
        let l: Vec<f32> = m
            .llama()
            .logits(&last)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        argmax(&l)
    };
    let mut out = vec![step(&mut cache, ids)];
    while out.len() < n {
        let t = *out.last().unwrap();
        out.push(step(&mut cache, &[t]));
    }
    out
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn fast_kernels_match_the_scalar_reference_on_every_format() {
    let Some(formats) = formats() else { return };
    let _guard = KERNELS.lock().unwrap_or_else(|e| e.into_inner());
    let detected = quant::kernels();
    if detected == Kernels::Scalar {
        eprintln!("SKIP: this CPU has no AVX2: the fast kernels are the scalar ones");
        return;
    }
    for (name, path) in &formats {
        let m = load(path, WeightFormat::Quantized);
        let prompts: Vec<Vec<u32>> = PROMPTS
            .iter()
            .map(|p| m.tokenizer().encode(p, true, true))
            .collect();
        let mut runs = Vec::new();
        for k in [detected, Kernels::Scalar] {
            quant::set_kernels(k);
            let l: Vec<Vec<f32>> = prompts.iter().map(|p| logits(&m, p)).collect();
            let g: Vec<Vec<u32>> = prompts.iter().map(|p| greedy(&m, p, 64)).collect();
            runs.push((l, g));
        }
        quant::set_kernels(detected);
        let ((fast_l, fast_g), (ref_l, ref_g)) = (&runs[0], &runs[1]);
        for (i, p) in PROMPTS.iter().enumerate() {
            // The scalar kernels do the AVX2 kernels' float operations in the same order, so
            // the tolerance is zero: the same bits, hence the same tokens.
            let d = max_abs_diff(&fast_l[i], &ref_l[i]);
            assert!(
                fast_l[i]
                    .iter()
                    .zip(&ref_l[i])
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name}, prompt {i}: logits differ between fast and scalar kernels (max {d})"
            );
            assert_eq!(
                fast_g[i], ref_g[i],
                "{name}, prompt {p:?}: greedy tokens differ between fast and scalar kernels"
            );
        }
        eprintln!("{name}: fast == scalar (bit-identical logits; 3 × 64 greedy tokens identical)");
    }
}

#[test]
fn engine_agrees_with_candle_f32_on_every_format() {
    let Some(formats) = formats() else { return };
    let _guard = KERNELS.lock().unwrap_or_else(|e| e.into_inner());
    for (name, path) in &formats {
        let fast = load(path, WeightFormat::Quantized);
        let dense = load(path, WeightFormat::F32);
        let (mut same, mut rows) = (0, 0);
        for p in PROMPTS {
            let ids = fast.tokenizer().encode(p, true, true);
            let a = logits(&fast, &ids);
            let b = logits(&dense, &ids);
            let v = dense.info().vocab_size;
            // The engine rounds activations to 8 bits per block; candle keeps them in f32. The
            // logits stay close, and the next token is the same nearly everywhere; where it is
            // not, it is a near tie: one of candle's five most likely.
            let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
            for (i, (ra, rb)) in a.chunks(v).zip(b.chunks(v)).enumerate() {
                let (x, y) = (argmax(ra), argmax(rb));
                same += usize::from(x == y);
                let mut order: Vec<usize> = (0..v).collect();
                order.sort_by(|&i, &j| rb[j].total_cmp(&rb[i]));
                assert!(
                    order[..5].contains(&(x as usize)),
                    "{name}, {p:?}, position {i}: engine's next token {x} is not in candle's top 5 ({:?})",
                    &order[..5]
                );
                for (x, y) in ra.iter().zip(rb) {
                    dot += (*x as f64) * (*y as f64);
                    na += (*x as f64).powi(2);
                    nb += (*y as f64).powi(2);
                }
            }
            rows += ids.len();
            let cos = dot / (na.sqrt() * nb.sqrt());
            assert!(
                cos > 0.995,
                "{name}, {p:?}: logits cosine {cos:.5} vs candle f32"
            );
        }
        assert!(
            same * 100 >= rows * 85,
            "{name}: next token agrees at {same} of {rows} positions"
        );
        eprintln!("{name}: next token as candle f32's at {same} of {rows} positions");
    }
}
