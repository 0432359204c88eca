//! Shared helpers for integration tests: where the default model and all-MiniLM-L6-v2 are, and a
//! tiny random-weight Llama 2 GGUF built from the real 32,000-token Llama 2 vocabulary. Used by
//! the rag-model tests and, through `#[path]`, by the rag tests, so it depends on neither crate.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// `$RAG_HOME` (default `~/.cache/rag`), where `scripts/fetch-models.sh` puts the models.
pub fn rag_home() -> PathBuf {
    let get = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    get("RAG_HOME").unwrap_or_else(|| {
        get("HOME")
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".cache/rag")
    })
}

/// The default model, or `None` (with the reason printed) when it has not been fetched.
pub fn default_model() -> Option<PathBuf> {
    let path = match std::env::var_os("RAG_MODEL") {
        Some(p) => PathBuf::from(p),
        None => rag_home()
            .join("models")
            .join("SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "SKIP: the default model is not at {} (run scripts/fetch-models.sh or `make test`)",
            path.display()
        );
        None
    }
}

/// The all-MiniLM-L6-v2 directory, or `None` (with the reason printed) when it has not been
/// fetched.
pub fn minilm_dir() -> Option<PathBuf> {
    let dir = rag_home().join("models").join("all-MiniLM-L6-v2");
    if dir.join("model.safetensors").exists() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: all-MiniLM-L6-v2 is not in {} (run scripts/fetch-models.sh --minilm or `make test`)",
            dir.display()
        );
        None
    }
}

/// The committed test fixtures (`model/tests/fixtures`), from either crate's tests.
pub fn fixtures() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    ["tests/fixtures", "model/tests/fixtures"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_dir())
        .expect("model/tests/fixtures")
}

/// The committed Llama 2 SentencePiece vocabulary GGUF.
pub fn llama2_vocab_gguf() -> PathBuf {
    fixtures().join("llama2-spm/ggml-vocab-llama-spm.gguf")
}

/// Sizes of the tiny model.
pub const TINY_EMBD: usize = 64;
pub const TINY_LAYERS: usize = 2;

/// Write a tiny Llama GGUF with random weights and the real Llama 2 vocabulary to `path`.
/// `tweak` may edit the metadata (e.g. to make a bad file).
pub fn write_tiny_llama2(path: &Path, tweak: impl FnOnce(&mut Vec<(String, Value)>)) {
    let vocab_path = llama2_vocab_gguf();
    let mut f = std::fs::File::open(&vocab_path).expect("vocabulary fixture");
    let vocab = Content::read(&mut f).expect("vocabulary GGUF");
    let mut md: Vec<(String, Value)> = vocab
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    md.sort_by(|a, b| a.0.cmp(&b.0));
    let n_vocab = match vocab.metadata.get("tokenizer.ggml.tokens") {
        Some(Value::Array(a)) => a.len(),
        _ => panic!("no tokens in the vocabulary fixture"),
    };
    let (embd, ff, heads, kv_heads) = (TINY_EMBD, 128usize, 4u32, 2u32);
    md.extend([
        (
            "general.architecture".to_string(),
            Value::String("llama".into()),
        ),
        (
            "general.name".to_string(),
            Value::String("tiny-llama2-test".into()),
        ),
        ("llama.context_length".to_string(), Value::U32(256)),
        (
            "llama.embedding_length".to_string(),
            Value::U32(embd as u32),
        ),
        (
            "llama.block_count".to_string(),
            Value::U32(TINY_LAYERS as u32),
        ),
        (
            "llama.feed_forward_length".to_string(),
            Value::U32(ff as u32),
        ),
        ("llama.attention.head_count".to_string(), Value::U32(heads)),
        (
            "llama.attention.head_count_kv".to_string(),
            Value::U32(kv_heads),
        ),
        (
            "llama.rope.dimension_count".to_string(),
            Value::U32(embd as u32 / heads),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".to_string(),
            Value::F32(1e-5),
        ),
    ]);
    tweak(&mut md);

    let dev = Device::Cpu;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = |shape: &[usize], scale: f32| -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
            })
            .collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    let q = |t: Tensor, dt: GgmlDType| QTensor::quantize(&t, dt).unwrap();
    let kv = embd / heads as usize * kv_heads as usize;
    let mut tensors: Vec<(String, QTensor)> = vec![
        (
            "token_embd.weight".into(),
            q(rand(&[n_vocab, embd], 0.5), GgmlDType::Q8_0),
        ),
        (
            "output_norm.weight".into(),
            q(
                Tensor::ones(embd, candle_core::DType::F32, &dev).unwrap(),
                GgmlDType::F32,
            ),
        ),
        (
            "output.weight".into(),
            q(rand(&[n_vocab, embd], 0.5), GgmlDType::Q4_0),
        ),
    ];
    for i in 0..TINY_LAYERS {
        let p = format!("blk.{i}");
        for (name, rows, cols) in [
            ("attn_q", embd, embd),
            ("attn_k", kv, embd),
            ("attn_v", kv, embd),
            ("attn_output", embd, embd),
            ("ffn_gate", ff, embd),
            ("ffn_up", ff, embd),
            ("ffn_down", embd, ff),
        ] {
            tensors.push((
                format!("{p}.{name}.weight"),
                q(rand(&[rows, cols], 0.2), GgmlDType::Q4_0),
            ));
        }
        for name in ["attn_norm", "ffn_norm"] {
            tensors.push((
                format!("{p}.{name}.weight"),
                q(
                    Tensor::ones(embd, candle_core::DType::F32, &dev).unwrap(),
                    GgmlDType::F32,
                ),
            ));
        }
    }
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create tiny GGUF"));
    candle_core::quantized::gguf_file::write(&mut f, &md_refs, &t_refs).expect("write tiny GGUF");
    std::io::Write::flush(&mut f).expect("write tiny GGUF");
}

/// Set a metadata key, replacing any existing value.
pub fn set_md(md: &mut Vec<(String, Value)>, key: &str, value: Value) {
    md.retain(|(k, _)| k != key);
    md.push((key.to_string(), value));
}

/// Write a copy of the GGUF `src` to `dst` with each tensor re-encoded in the type `pick` gives
/// for its name and row-major shape (`None`: keep it as it is). Metadata is copied unchanged.
/// Makes the other quantization formats of the default model without llama.cpp.
pub fn requantize(src: &Path, dst: &Path, pick: impl Fn(&str, &[usize]) -> Option<GgmlDType>) {
    let dev = Device::Cpu;
    let mut f = std::fs::File::open(src).expect("source GGUF");
    let content = Content::read(&mut f).expect("source GGUF header");
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::new();
    for name in names {
        let q = content.tensor(&mut f, name, &dev).expect("tensor");
        let q = match pick(name, q.shape().dims()) {
            Some(t) if t != q.dtype() => {
                QTensor::quantize(&q.dequantize(&dev).expect("dequantize"), t).expect("quantize")
            }
            _ => q,
        };
        tensors.push((name.clone(), q));
    }
    let mut md: Vec<(&String, &Value)> = content.metadata.iter().collect();
    md.sort_by(|a, b| a.0.cmp(b.0));
    let md: Vec<(&str, &Value)> = md.into_iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let tmp = dst.with_extension("part");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).expect("create GGUF"));
    candle_core::quantized::gguf_file::write(&mut out, &md, &ts).expect("write GGUF");
    drop(out);
    std::fs::rename(&tmp, dst).expect("rename GGUF");
}

/// One forward over `ids` (no cache); the next-token logits after each position.
pub fn logits_per_position(m: &rag_model::Model, ids: &[u32]) -> Vec<Vec<f32>> {
    let x = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let h = m
        .llama()
        .forward_hidden(&x, None, None, rag_model::HiddenLayer::Final)
        .unwrap();
    let logits = m.llama().logits(&h).unwrap().squeeze(0).unwrap();
    logits.to_vec2::<f32>().unwrap()
}
