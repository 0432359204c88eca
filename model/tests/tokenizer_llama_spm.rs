//! The Llama 2 SentencePiece tokenizer built from GGUF metadata alone, checked against
//! llama.cpp's own tokenizer test vectors and llama-tokenizer-js's vectors
//! (tests/fixtures/llama2-spm/README.md).

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use rag_model::{Tokenizer, TokenizerFamily};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama2-spm")
}

fn load() -> Tokenizer {
    let path = fixture_dir().join("ggml-vocab-llama-spm.gguf");
    let mut file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let content = Content::read(&mut file).expect("read gguf");
    Tokenizer::from_gguf(&content).expect("build tokenizer")
}

/// llama.cpp's test-tokenizer-0 vectors: inputs separated by "\n__ggml_vocab_test__\n"
/// (read like test-tokenizer-0's `read_tests`), expected ids without BOS one line each.
fn ggml_vectors() -> Vec<(String, Vec<u32>)> {
    let dir = fixture_dir();
    let raw = std::fs::read_to_string(dir.join("ggml-vocab-llama-spm.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(dir.join("ggml-vocab-llama-spm.gguf.out")).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        match raw[pos..].find(sep) {
            Some(next) => {
                inputs.push(raw[pos..pos + next].to_string());
                pos += next + sep.len();
            }
            None => {
                inputs.push(raw[pos..].to_string());
                break;
            }
        }
    }
    let outputs: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        inputs.len(),
        outputs.len(),
        "input and output files disagree"
    );
    inputs.into_iter().zip(outputs).collect()
}

fn js_vectors() -> Vec<(String, Vec<u32>)> {
    let raw =
        std::fs::read_to_string(fixture_dir().join("llama_tokenizer_js_vectors.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let text = case["text"].as_str().unwrap().to_string();
            let ids = case["ids_with_bos"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            (text, ids)
        })
        .collect()
}

#[test]
fn metadata() {
    let tok = load();
    assert_eq!(tok.family(), TokenizerFamily::LlamaSpm);
    assert_eq!(tok.vocab_size(), 32_000);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert!(tok.add_bos_token());
    assert_eq!(tok.token_id("<s>"), Some(1));
    assert_eq!(tok.token_piece(2), Some("</s>"));
    assert!(tok.is_control(1) && tok.is_control(2) && !tok.is_control(0));
    assert!(tok.is_eog(2));
    assert_eq!(tok.token_bytes(13), b"\n"); // <0x0A>
    assert_eq!(tok.token_bytes(15043), b" Hello");
    assert!(tok.token_bytes(1).is_empty());
}

#[test]
fn ggml_vocab_test_vectors() {
    let tok = load();
    let vectors = ggml_vectors();
    assert_eq!(vectors.len(), 46);
    let mut failures = Vec::new();
    for (i, (text, expected)) in vectors.iter().enumerate() {
        // test-tokenizer-0 calls common_tokenize(ctx, text, add_special = false,
        // parse_special = false); none of the inputs contains a special token string, so
        // parse_special = true must give the same ids.
        let got = tok.encode(text, false, false);
        if &got != expected {
            failures.push(format!(
                "#{i} {text:?}\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
        assert_eq!(tok.encode(text, false, true), got, "#{i} parse_special");
        // add_bos only prepends BOS.
        let mut with_bos = vec![1];
        with_bos.extend_from_slice(&got);
        if text.is_empty() {
            assert_eq!(tok.encode(text, true, false), [1]);
        } else {
            assert_eq!(tok.encode(text, true, false), with_bos, "#{i} add_bos");
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors differ:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

#[test]
fn llama_tokenizer_js_vectors() {
    let tok = load();
    let vectors = js_vectors();
    assert_eq!(vectors.len(), 12);
    let mut failures = Vec::new();
    for (i, (text, expected)) in vectors.iter().enumerate() {
        let got = tok.encode(text, true, false);
        if &got != expected {
            failures.push(format!(
                "#{i} {text:?}\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors differ:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

#[test]
fn decode_round_trips() {
    let tok = load();
    // Llama's SentencePiece model has no normalizer and falls back to bytes, so decoding
    // the reference ids (with or without BOS) gives back every input exactly.
    for (text, ids) in ggml_vectors() {
        assert_eq!(tok.decode(&ids), text, "ids {ids:?}");
        assert_eq!(tok.decode(&tok.encode(&text, true, false)), text);
    }
    for (text, ids) in js_vectors() {
        assert_eq!(tok.decode(&ids), text, "ids {ids:?}");
        assert_eq!(tok.decode(&tok.encode(&text, false, false)), text);
    }
}

fn stream(tok: &Tokenizer, ids: &[u32]) -> (String, Vec<String>) {
    let mut dec = tok.stream_decoder();
    let mut chunks: Vec<String> = ids.iter().map(|&id| dec.push(id)).collect();
    chunks.push(dec.finish());
    (chunks.concat(), chunks)
}

#[test]
fn streaming_decode_matches_decode() {
    let tok = load();
    let mut split_chars = 0;
    let all: Vec<(String, Vec<u32>)> = ggml_vectors().into_iter().chain(js_vectors()).collect();
    for (text, ids) in &all {
        let (streamed, chunks) = stream(&tok, ids);
        let decoded = tok.decode(ids);
        assert_eq!(streamed, decoded, "{text:?}");
        assert_eq!(&decoded, text);
        assert!(!decoded.contains('\u{FFFD}'));
        // No chunk carries a replacement character, i.e. no partial UTF-8 was emitted.
        for c in &chunks {
            assert!(!c.contains('\u{FFFD}'), "chunk {c:?} of {text:?}");
        }
        split_chars += ids
            .iter()
            .filter(|&&id| (3..259).contains(&id) && tok.token_bytes(id)[0] >= 0x80)
            .count();
    }
    // The vectors do exercise multi-byte characters split over <0xXX> byte tokens.
    assert!(split_chars > 50, "{split_chars}");
}

#[test]
fn streaming_cjk_and_emoji_byte_tokens() {
    let tok = load();
    // 🦙 (4 bytes) and Ꙋ (3 bytes) have no tokens and are spelled with byte tokens.
    let text = "Llamas 🦙 and Ꙋ, 我想在apple工作 😁!";
    let ids = tok.encode(text, true, false);
    assert!(ids.contains(&243)); // <0xF0>
    let (streamed, chunks) = stream(&tok, &ids);
    assert_eq!(streamed, text);
    assert_eq!(tok.decode(&ids), text);
    for c in &chunks {
        assert!(!c.contains('\u{FFFD}'), "{c:?}");
    }
    // The chunk for a 4-byte char is only emitted at its last byte.
    let llama_pos = ids.iter().position(|&id| id == 243).unwrap();
    assert_eq!(chunks[llama_pos], "");
    assert_eq!(chunks[llama_pos + 1], "");
    assert_eq!(chunks[llama_pos + 2], "");
    assert_eq!(chunks[llama_pos + 3], "🦙");
}

#[test]
fn special_tokens_only_with_parse_special() {
    let tok = load();
    // llama.cpp: the raw text after a special token gets a space prefix again.
    let ids = tok.encode("<s>[INST] Hi [/INST]", false, true);
    assert_eq!(ids[0], 1);
    assert_eq!(
        &ids[1..],
        &tok.encode("[INST] Hi [/INST]", false, false)[..]
    );
    let plain = tok.encode("<s>Hi</s>", true, false);
    assert_eq!(plain[0], 1);
    assert!(!plain[1..].contains(&1) && !plain.contains(&2), "{plain:?}");
    assert_eq!(tok.decode(&plain), "<s>Hi</s>");
    let special = tok.encode("<s>Hi</s>", false, true);
    assert_eq!(special.first(), Some(&1));
    assert_eq!(special.last(), Some(&2));
    assert_eq!(tok.decode(&special), "Hi");
}

#[test]
fn encodes_long_text_quickly() {
    let tok = load();
    let (text, _) = js_vectors().pop().unwrap();
    let big = text.repeat(20);
    let t = std::time::Instant::now();
    let ids = tok.encode(&big, true, false);
    let elapsed = t.elapsed();
    assert!(ids.len() > 8000, "{}", ids.len());
    assert_eq!(tok.decode(&ids), big);
    eprintln!("{} tokens in {elapsed:?}", ids.len());
    assert!(
        elapsed.as_secs_f64() < 1.0,
        "{} tokens took {elapsed:?}",
        ids.len()
    );
}
