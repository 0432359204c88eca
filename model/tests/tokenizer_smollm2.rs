//! The SmolLM2 byte-level BPE tokenizer (gpt2 family, `pre = smollm`) built from the default
//! model's GGUF metadata, checked against reference ids from llama.cpp
//! (tests/fixtures/smollm2_tokenizer.json) and for self-consistency.
//!
//! The model comes from `RAG_MODEL`, else `$RAG_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf`
//! (`RAG_HOME` defaults to `~/.cache/rag`; `scripts/fetch-models.sh` fetches it). Without the
//! model (or without the fixture, for the reference test) the tests print why and pass.

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use rag_model::{Tokenizer, TokenizerFamily};
use sha2::{Digest, Sha256};

const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn model_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RAG_MODEL") {
        return Some(PathBuf::from(p));
    }
    let home = match std::env::var_os("RAG_HOME") {
        Some(h) => PathBuf::from(h),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/rag"),
    };
    Some(home.join("models").join(MODEL_FILE))
}

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2_tokenizer.json")
}

/// The SmolLM2 tokenizer and the model path, or None (with the reason printed).
fn load() -> Option<(Tokenizer, PathBuf)> {
    let Some(path) = model_path() else {
        eprintln!("skipping: neither RAG_MODEL, RAG_HOME nor HOME is set");
        return None;
    };
    if !path.is_file() {
        eprintln!(
            "skipping: model {} not found (run scripts/fetch-models.sh or set RAG_MODEL)",
            path.display()
        );
        return None;
    }
    let mut file = std::fs::File::open(&path).expect("open model");
    let content = Content::read(&mut file).expect("read gguf metadata");
    let tok = Tokenizer::from_gguf(&content).expect("build tokenizer");
    if tok.pre() != Some("smollm") || tok.vocab_size() != 49_152 {
        eprintln!(
            "skipping: {} is not SmolLM2 (pre {:?}, {} tokens)",
            path.display(),
            tok.pre(),
            tok.vocab_size()
        );
        return None;
    }
    Some((tok, path))
}

fn sha256_file(path: &Path) -> String {
    let mut file = std::fs::File::open(path).expect("open model");
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).expect("read model");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pieces(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&id| tok.token_piece(id).unwrap().to_string())
        .collect()
}

fn stream(tok: &Tokenizer, ids: &[u32]) -> (String, Vec<String>) {
    let mut dec = tok.stream_decoder();
    let mut chunks: Vec<String> = ids.iter().map(|&id| dec.push(id)).collect();
    chunks.push(dec.finish());
    (chunks.concat(), chunks)
}

const SAMPLES: &[&str] = &[
    "",
    " ",
    "Hello world",
    " Hello World!",
    "    indented\n\tcode();\n\n",
    "trailing spaces   ",
    "In 2024, 3.14159 and 1,000,000 people.",
    "I'm sure you'll see they've done it, 'twas odd.",
    "нещо на Български",
    "我想在apple工作1314151天～",
    "emoji 🦙🚀 😶‍🌫️ ✅ and Ꙋ",
    "<|im_start|>user\nHi<|im_end|>\n",
    "line one\r\nline two\n\n\nthree",
    "\u{3000}ideographic space and\u{00A0}nbsp",
];

#[test]
fn metadata_matches_smollm2() {
    let Some((tok, _)) = load() else { return };
    assert_eq!(tok.family(), TokenizerFamily::Gpt2Bpe);
    assert_eq!(tok.pre(), Some("smollm"));
    assert_eq!(tok.vocab_size(), 49_152);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert!(!tok.add_bos_token());
    assert_eq!(tok.token_piece(1), Some("<|im_start|>"));
    assert_eq!(tok.token_id("<|im_end|>"), Some(2));
    let controls = (0..tok.vocab_size() as u32)
        .filter(|&id| tok.is_control(id))
        .count();
    assert_eq!(controls, 17);
    assert!(tok.is_eog(2) && tok.is_eog(0) && !tok.is_eog(1));
    assert!(tok.token_bytes(1).is_empty());
}

#[test]
fn special_tokens_and_pretokenization() {
    let Some((tok, _)) = load() else { return };
    assert_eq!(tok.encode("<|im_start|>", false, true), [1]);
    assert_eq!(tok.encode("<|im_start|>", true, true), [1]); // add_bos_token is false
    assert_eq!(tok.encode("<|im_end|>", false, true), [2]);
    let plain = tok.encode("<|im_start|>", false, false);
    assert!(plain.len() > 1 && !plain.contains(&1), "{plain:?}");
    assert_eq!(tok.decode(&plain), "<|im_start|>");

    let chat = tok.encode("<|im_start|>user\nHi<|im_end|>\n", false, true);
    assert_eq!(chat[0], 1);
    assert_eq!(
        pieces(&tok, &chat[1..]),
        ["user", "Ċ", "Hi", "<|im_end|>", "Ċ"]
    );
    assert_eq!(tok.decode(&chat), "user\nHi\n");

    assert_eq!(
        pieces(&tok, &tok.encode("Hello world", false, false)),
        ["Hello", "Ġworld"]
    );
    // smollm splits every digit off before the GPT-2 regex.
    assert_eq!(
        pieces(&tok, &tok.encode("in 2024", false, false)),
        ["in", "Ġ", "2", "0", "2", "4"]
    );
}

#[test]
fn round_trips_and_streaming() {
    let Some((tok, _)) = load() else { return };
    for text in SAMPLES {
        let ids = tok.encode(text, false, false);
        assert_eq!(&tok.decode(&ids), text, "ids {ids:?}");
        let (streamed, chunks) = stream(&tok, &ids);
        assert_eq!(&streamed, text);
        for c in &chunks {
            assert!(!c.contains('\u{FFFD}'), "chunk {c:?} of {text:?}");
        }
    }
}

#[test]
fn encodes_8k_tokens_quickly() {
    let Some((tok, _)) = load() else { return };
    let para = "The llama (/ˈlɑːmə/; Spanish pronunciation: [ˈʎama]) is a domesticated South \
                American camelid, widely used as a meat and pack animal by Andean cultures \
                since the pre-Columbian era. In 2007 there were over 7 million llamas! 🦙\n\n";
    let text = para.repeat(150);
    let t = std::time::Instant::now();
    let ids = tok.encode(&text, false, false);
    let elapsed = t.elapsed();
    assert!(ids.len() > 8000, "{}", ids.len());
    assert_eq!(tok.decode(&ids), text);
    eprintln!("{} tokens in {elapsed:?}", ids.len());
    assert!(
        elapsed.as_secs_f64() < 1.0,
        "{} tokens took {elapsed:?}",
        ids.len()
    );
}

#[test]
fn matches_llama_cpp_reference_ids() {
    let Some((tok, path)) = load() else { return };
    let fixture = fixture_path();
    let Ok(raw) = std::fs::read_to_string(&fixture) else {
        eprintln!(
            "skipping: reference fixture {} not found",
            fixture.display()
        );
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&raw).expect("fixture JSON");
    if let Some(want) = v["model_sha256"].as_str() {
        let have = sha256_file(&path);
        if have != want {
            eprintln!(
                "skipping: {} has sha256 {have}, the fixture was made from {want}",
                path.display()
            );
            return;
        }
    }
    let cases = v["cases"].as_array().expect("cases array");
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let text = case["text"].as_str().expect("text");
        let parse_special = case["parse_special"].as_bool().expect("parse_special");
        let add_special = case
            .get("add_special")
            .or_else(|| case.get("add_bos"))
            .and_then(|x| x.as_bool())
            .unwrap_or(false);
        let expected: Vec<u32> = case["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect();
        let got = tok.encode(text, add_special, parse_special);
        if got != expected {
            failures.push(format!(
                "#{i} {text:?} (parse_special {parse_special})\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
        if !parse_special {
            assert_eq!(tok.decode(&got), text, "#{i} round trip");
            assert_eq!(tok.decode(&expected), text, "#{i} decode of reference ids");
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from llama.cpp:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{} reference cases match", cases.len());
}
