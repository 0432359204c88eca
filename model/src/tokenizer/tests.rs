use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};

use super::bpe::{byte_to_unicode_table, ByteLevel, PreKind, PreTokenizer};
use super::*;

fn content(entries: Vec<(&str, Value)>) -> Content {
    Content {
        magic: VersionedMagic::GgufV3,
        metadata: entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<HashMap<_, _>>(),
        tensor_infos: HashMap::new(),
        tensor_data_offset: 0,
    }
}

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
}

/// A small SentencePiece vocabulary: <unk>, <s>, </s>, 256 byte tokens, then `normal`
/// pieces with the given scores.
fn tiny_spm(normal: &[(&str, f32)], extra: Vec<(&str, Value)>) -> Tokenizer {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32; 3];
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (t, s) in normal {
        tokens.push(t.to_string());
        types.push(1);
        scores.push(*s);
    }
    let mut entries = vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(scores.into_iter().map(Value::F32).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
    ];
    entries.extend(extra);
    Tokenizer::from_gguf(&content(entries)).expect("tiny spm vocab")
}

fn spm_id(tok: &Tokenizer, piece: &str) -> u32 {
    tok.token_id(piece)
        .unwrap_or_else(|| panic!("no token {piece:?}"))
}

fn byte_id(b: u8) -> u32 {
    3 + b as u32
}

/// A small byte-level BPE vocabulary: all 256 byte symbols, the given merges (whose results
/// are appended to the vocabulary) and control tokens.
fn tiny_bpe(pre: &str, merges: &[&str], control: &[&str]) -> Tokenizer {
    let table = byte_to_unicode_table();
    let mut tokens: Vec<String> = control.iter().map(|s| s.to_string()).collect();
    let mut types = vec![3i32; control.len()];
    for c in table {
        tokens.push(c.to_string());
        types.push(1);
    }
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    Tokenizer::from_gguf(&content(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges", strings(merges)),
    ]))
    .expect("tiny bpe vocab")
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
}

#[test]
fn byte_to_unicode_round_trip() {
    let table = byte_to_unicode_table();
    let distinct: std::collections::HashSet<char> = table.iter().copied().collect();
    assert_eq!(distinct.len(), 256);
    assert_eq!(table[b' ' as usize], '\u{120}'); // 'Ġ'
    assert_eq!(table[b'\n' as usize], '\u{10A}'); // 'Ċ'
    assert_eq!(table[b'a' as usize], 'a');
    assert_eq!(table[0xAD], '\u{143}'); // the last stand-in
    let bl = ByteLevel::new();
    let all: Vec<u8> = (0..=255u8).collect();
    let mut encoded = String::new();
    for chunk in [&all[..100], &all[100..]] {
        // encode_into works on str; feed raw bytes through the table directly
        for &b in chunk {
            encoded.push(table[b as usize]);
        }
    }
    assert_eq!(bl.decode(&encoded), all);
    let mut s = String::new();
    bl.encode_into("héllo wörld\n", &mut s);
    assert_eq!(bl.decode(&s), "héllo wörld\n".as_bytes());
}

fn split(kind: PreKind, text: &str) -> Vec<String> {
    PreTokenizer::new(kind, "test")
        .unwrap()
        .split(text)
        .into_iter()
        .map(str::to_string)
        .collect()
}

#[test]
fn gpt2_regex_splits_whitespace_runs_like_llama_cpp() {
    let k = PreKind::Gpt2;
    assert_eq!(split(k, "Hello world"), ["Hello", " world"]);
    // A run of spaces before a word leaves its last space to the word.
    assert_eq!(split(k, "a   b"), ["a", "  ", " b"]);
    assert_eq!(split(k, "a  b"), ["a", " ", " b"]);
    // Trailing whitespace is kept whole.
    assert_eq!(split(k, "a   "), ["a", "   "]);
    assert_eq!(split(k, "   "), ["   "]);
    // A single non-space whitespace before a word is a piece of its own.
    assert_eq!(split(k, "\tb"), ["\t", "b"]);
    assert_eq!(split(k, "x \n\n y"), ["x", " \n\n", " y"]);
    assert_eq!(split(k, "I'm here's"), ["I", "'m", " here", "'s"]);
    assert_eq!(split(k, "x  !!"), ["x", " ", " !!"]);
    assert_eq!(split(k, "abc 123"), ["abc", " 123"]);
    assert_eq!(split(k, ""), Vec::<String>::new());
}

#[test]
fn smollm_regex_splits_digits_first() {
    let k = PreKind::DigitsThenGpt2;
    assert_eq!(split(k, "abc 123"), ["abc", " ", "1", "2", "3"]);
    assert_eq!(split(k, "x1y"), ["x", "1", "y"]);
    assert_eq!(
        split(k, "pi is 3.14!"),
        ["pi", " is", " ", "3", ".", "1", "4", "!"]
    );
    assert_eq!(split(k, "a  \n"), ["a", "  \n"]);
}

#[test]
fn llama3_regex_splits() {
    let k = PreKind::Llama3;
    assert_eq!(split(k, "Hello\n\n world"), ["Hello", "\n\n", " world"]);
    assert_eq!(split(k, "12345"), ["123", "45"]);
    assert_eq!(split(k, "x  \n y"), ["x", "  \n", " y"]);
    assert_eq!(split(k, "I'M fine"), ["I", "'M", " fine"]);
    assert_eq!(split(k, "(hello)"), ["(hello", ")"]);
    assert_eq!(split(k, "a   b"), ["a", "  ", " b"]);
}

#[test]
fn default_pre_splits_punctuation_then_gpt2() {
    let k = PreKind::Default;
    assert_eq!(split(k, "Hello, world!"), ["Hello", ",", " world", "!"]);
    assert_eq!(split(k, "x 12345"), ["x", " ", "123", "45"]);
}

#[test]
fn spm_merges_highest_score_then_leftmost() {
    // "abc": "ab" and "bc" tie -> leftmost pair wins.
    let tok = tiny_spm(
        &[
            ("\u{2581}", -1.0),
            ("a", -2.0),
            ("b", -2.0),
            ("c", -2.0),
            ("ab", -5.0),
            ("bc", -5.0),
        ],
        vec![("tokenizer.ggml.add_space_prefix", Value::Bool(false))],
    );
    assert_eq!(
        tok.encode("abc", false, false),
        [spm_id(&tok, "ab"), spm_id(&tok, "c")]
    );
    // A higher score wins regardless of position.
    let tok = tiny_spm(
        &[
            ("\u{2581}", -1.0),
            ("a", -2.0),
            ("b", -2.0),
            ("c", -2.0),
            ("ab", -5.0),
            ("bc", -4.0),
        ],
        vec![("tokenizer.ggml.add_space_prefix", Value::Bool(false))],
    );
    assert_eq!(
        tok.encode("abc", false, false),
        [spm_id(&tok, "a"), spm_id(&tok, "bc")]
    );
}

#[test]
fn spm_space_prefix_bos_and_byte_fallback() {
    let tok = tiny_spm(
        &[("\u{2581}", -1.0), ("a", -2.0), ("\u{2581}a", -1.5)],
        vec![],
    );
    assert_eq!(tok.family(), TokenizerFamily::LlamaSpm);
    assert!(tok.add_bos_token());
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.unk_id()),
        (Some(1), Some(2), Some(0))
    );
    let a = spm_id(&tok, "\u{2581}a");
    assert_eq!(tok.encode("a", false, false), [a]);
    assert_eq!(tok.encode("a", true, false), [1, a]);
    // "é" is not in the vocabulary: its two UTF-8 bytes fall back to <0xC3> <0xA9>.
    assert_eq!(
        tok.encode("é", false, false),
        [spm_id(&tok, "\u{2581}"), byte_id(0xC3), byte_id(0xA9)]
    );
    assert_eq!(tok.decode(&tok.encode("é a", true, false)), "é a");
    assert_eq!(tok.encode("", true, false), [1]);
    assert!(tok.encode("", false, false).is_empty());
}

#[test]
fn spm_special_tokens_only_when_parse_special() {
    let tok = tiny_spm(
        &[
            ("\u{2581}", -1.0),
            ("a", -2.0),
            ("\u{2581}a", -1.5),
            ("<", -3.0),
            (">", -3.0),
            ("s", -3.0),
            ("/", -3.0),
        ],
        vec![],
    );
    let a = spm_id(&tok, "\u{2581}a");
    // After a special token the next raw fragment gets a space prefix again (llama.cpp).
    assert_eq!(tok.encode("<s>a</s>a", false, true), [1, a, 2, a]);
    let plain = tok.encode("<s>a", false, false);
    assert!(!plain.contains(&1), "{plain:?}");
    assert_eq!(tok.decode(&plain), "<s>a");
    // <unk> is unknown-type: also only matched with parse_special.
    assert_eq!(tok.encode("<unk>", false, true), [0]);
    assert_ne!(tok.encode("<unk>", false, false), [0]);
}

#[test]
fn stream_decoder_buffers_split_utf8() {
    let tok = tiny_spm(
        &[("\u{2581}", -1.0), ("a", -2.0), ("\u{2581}a", -1.5)],
        vec![],
    );
    // 中 = E4 B8 AD
    let ids = [
        1,
        spm_id(&tok, "\u{2581}a"),
        byte_id(0xE4),
        byte_id(0xB8),
        byte_id(0xAD),
        spm_id(&tok, "a"),
    ];
    let mut dec = tok.stream_decoder();
    let pushed: Vec<String> = ids.iter().map(|&id| dec.push(id)).collect();
    assert_eq!(pushed, ["", "a", "", "", "中", "a"]);
    assert_eq!(dec.finish(), "");
    assert_eq!(tok.decode(&ids), "a中a");

    // An invalid byte becomes U+FFFD at once; an unfinished sequence at the end on finish().
    let ids = [byte_id(0xFF), byte_id(0x41), byte_id(0xE4), byte_id(0xB8)];
    let mut dec = tok.stream_decoder();
    let mut streamed: String = ids.iter().map(|&id| dec.push(id)).collect();
    streamed.push_str(&dec.finish());
    assert_eq!(streamed, tok.decode(&ids));
    assert_eq!(streamed, "\u{FFFD}A\u{FFFD}");

    // A truncated sequence followed by a new character: same replacement as decode().
    let ids = [byte_id(0xE4), byte_id(0x41)];
    let mut dec = tok.stream_decoder();
    assert_eq!(dec.push(ids[0]), "");
    assert_eq!(dec.push(ids[1]), "\u{FFFD}A");
    assert_eq!(tok.decode(&ids), "\u{FFFD}A");
}

#[test]
fn decode_strips_only_the_first_leading_space() {
    let tok = tiny_spm(
        &[("\u{2581}", -1.0), ("a", -2.0), ("\u{2581}a", -1.5)],
        vec![],
    );
    let sa = spm_id(&tok, "\u{2581}a");
    assert_eq!(tok.decode(&[sa, sa]), "a a");
    assert_eq!(tok.decode(&[1, sa, 2, sa]), "a a");
    let without_prefix = tiny_spm(
        &[("\u{2581}", -1.0), ("a", -2.0), ("\u{2581}a", -1.5)],
        vec![("tokenizer.ggml.add_space_prefix", Value::Bool(false))],
    );
    assert_eq!(without_prefix.decode(&[sa, sa]), " a a");
    assert_eq!(tok.token_bytes(1), b"");
    assert!(tok.is_control(1));
    assert!(!tok.is_control(sa));
    assert_eq!(tok.token_bytes(byte_id(b'\n')), b"\n");
    assert_eq!(tok.token_bytes(sa), b" a");
}

#[test]
fn bpe_merges_by_rank() {
    // Merges listed by rank: "h e" first, then "l l", "he ll", "o Ġ"...
    let tok = tiny_bpe(
        "gpt-2",
        &["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"],
        &["<|endoftext|>", "<|im_start|>"],
    );
    assert_eq!(tok.family(), TokenizerFamily::Gpt2Bpe);
    assert_eq!(tok.pre(), Some("gpt-2"));
    assert!(!tok.add_bos_token());
    let ids = tok.encode("hello wo", false, false);
    let pieces: Vec<&str> = ids.iter().map(|&i| tok.token_piece(i).unwrap()).collect();
    assert_eq!(pieces, ["hello", "Ġwo"]);
    assert_eq!(tok.decode(&ids), "hello wo");
    // Control tokens: whole only with parse_special, never decoded.
    let im = tok.token_id("<|im_start|>").unwrap();
    let ids = tok.encode("<|im_start|>hello", false, true);
    assert_eq!(ids[0], im);
    assert_eq!(tok.decode(&ids), "hello");
    let ids = tok.encode("<|im_start|>", false, false);
    assert!(!ids.contains(&im));
    assert_eq!(tok.decode(&ids), "<|im_start|>");
    assert!(tok.is_eog(tok.token_id("<|endoftext|>").unwrap()));
}

#[test]
fn bpe_rank_ties_merge_leftmost() {
    // "aaa": the pair "a a" occurs twice; the leftmost merges first -> "aa", "a".
    let tok = tiny_bpe("gpt-2", &["a a"], &[]);
    let ids = tok.encode("aaa", false, false);
    let pieces: Vec<&str> = ids.iter().map(|&i| tok.token_piece(i).unwrap()).collect();
    assert_eq!(pieces, ["aa", "a"]);
}

#[test]
fn longest_special_token_wins() {
    let tok = tiny_bpe("gpt-2", &[], &["<|a|>", "<|a|><|b|>"]);
    let long = tok.token_id("<|a|><|b|>").unwrap();
    let short = tok.token_id("<|a|>").unwrap();
    assert_eq!(tok.encode("<|a|><|b|><|a|>", false, true), [long, short]);
}

#[test]
fn errors_are_clear() {
    let err = Tokenizer::from_gguf(&content(vec![])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "GGUF metadata is missing the key 'tokenizer.ggml.model'"
    );
    let err = Tokenizer::from_gguf(&content(vec![(
        "tokenizer.ggml.model",
        Value::String("bert".into()),
    )]))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported tokenizer.ggml.model 'bert' (supported: gpt2, llama)"
    );
    let err = Tokenizer::from_gguf(&content(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("tekken".into())),
        ("tokenizer.ggml.tokens", strings(&["a"])),
        ("tokenizer.ggml.merges", strings(&[])),
    ]))
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("unsupported tokenizer.ggml.pre 'tekken' (supported: default, gpt-2,"),
        "{msg}"
    );
    assert!(msg.contains("smollm") && msg.contains("llama-bpe"), "{msg}");
    let err = Tokenizer::from_gguf(&content(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", strings(&["a"])),
    ]))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "GGUF metadata is missing the key 'tokenizer.ggml.merges'"
    );
    let err = Tokenizer::from_gguf(&content(vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", strings(&["a", "b"])),
        ("tokenizer.ggml.scores", Value::Array(vec![Value::F32(0.0)])),
    ]))
    .unwrap_err();
    assert!(matches!(
        err,
        TokenizerError::LengthMismatch {
            expected: 2,
            found: 1,
            ..
        }
    ));
}
