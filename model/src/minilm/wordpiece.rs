//! WordPiece, the tokenizer of BERT-family models such as all-MiniLM-L6-v2, read from a Hugging
//! Face `tokenizer.json`. It does what the `tokenizers` library does for such a file, so that ids
//! match the ones the model was trained on: the BERT normaliser (drop control characters, one
//! space for any whitespace, spaces around CJK ideographs, strip accents, lowercase), the BERT
//! pre-tokenizer (split on whitespace, each punctuation character a word of its own), then greedy
//! longest-match-first WordPiece with a `##` continuation prefix. The project owns it rather than
//! pulling in that crate.
//!
//! Special tokens written in the input (`[SEP]`, `[MASK]`) are not parsed: document text is
//! never control input. The file's `truncation` and `padding` settings are ignored; the caller
//! decides both (see [`WordPiece::encode`]).
use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use unicode_categories::UnicodeCategories;
use unicode_normalization::UnicodeNormalization;

use crate::error::{ModelError, Result};

/// A WordPiece tokenizer: vocabulary, BERT normaliser settings and the special-token ids.
#[derive(Debug, Clone)]
pub struct WordPiece {
    vocab: HashMap<String, u32>,
    prefix: String,
    max_chars: usize,
    unk: u32,
    cls: u32,
    sep: u32,
    pad: u32,
    norm: Normalizer,
}

/// The `BertNormalizer` settings.
#[derive(Debug, Clone, Copy, Deserialize)]
struct Normalizer {
    #[serde(default = "yes")]
    clean_text: bool,
    #[serde(default = "yes")]
    handle_chinese_chars: bool,
    /// `None`: follow `lowercase` (as BERT does).
    #[serde(default)]
    strip_accents: Option<bool>,
    #[serde(default = "yes")]
    lowercase: bool,
}

fn yes() -> bool {
    true
}

/// The parts of `tokenizer.json` read here.
#[derive(Deserialize)]
struct TokenizerJson {
    model: ModelJson,
    normalizer: Option<TypedJson>,
    pre_tokenizer: Option<TypedJson>,
}

#[derive(Deserialize)]
struct ModelJson {
    #[serde(rename = "type")]
    kind: String,
    vocab: HashMap<String, u32>,
    unk_token: String,
    #[serde(default = "default_prefix")]
    continuing_subword_prefix: String,
    #[serde(default = "default_max_chars")]
    max_input_chars_per_word: usize,
}

fn default_prefix() -> String {
    "##".into()
}

fn default_max_chars() -> usize {
    100
}

/// A `{"type": ..., ...}` object whose other fields are read later, by type.
#[derive(Deserialize)]
struct TypedJson {
    #[serde(rename = "type")]
    kind: String,
    #[serde(flatten)]
    rest: serde_json::Value,
}

impl WordPiece {
    /// Read a `tokenizer.json`. Errors name the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text).map_err(|detail| ModelError::BadModel {
            path: path.to_path_buf(),
            detail: format!("not a usable WordPiece tokenizer.json: {detail}"),
        })
    }

    /// Build from the text of a `tokenizer.json` with a WordPiece model, a `BertNormalizer`
    /// (or none) and a `BertPreTokenizer`.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let t: TokenizerJson = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if t.model.kind != "WordPiece" {
            return Err(format!("model type is '{}', not WordPiece", t.model.kind));
        }
        let norm = match t.normalizer {
            None => Normalizer {
                clean_text: false,
                handle_chinese_chars: false,
                strip_accents: Some(false),
                lowercase: false,
            },
            Some(n) if n.kind == "BertNormalizer" => {
                serde_json::from_value(n.rest).map_err(|e| format!("normalizer: {e}"))?
            }
            Some(n) => return Err(format!("unsupported normalizer '{}'", n.kind)),
        };
        match t.pre_tokenizer {
            Some(p) if p.kind == "BertPreTokenizer" => {}
            Some(p) => return Err(format!("unsupported pre_tokenizer '{}'", p.kind)),
            None => return Err("no pre_tokenizer (expected BertPreTokenizer)".into()),
        }
        let vocab = t.model.vocab;
        let id = |token: &str| {
            vocab
                .get(token)
                .copied()
                .ok_or_else(|| format!("the vocabulary has no {token}"))
        };
        Ok(Self {
            unk: id(&t.model.unk_token)?,
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            pad: id("[PAD]")?,
            prefix: t.model.continuing_subword_prefix,
            max_chars: t.model.max_input_chars_per_word,
            norm,
            vocab,
        })
    }

    /// The word-piece ids of `text`, without `[CLS]`/`[SEP]`.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let text = self.normalize(text);
        let mut ids = Vec::with_capacity(text.len() / 3);
        for chunk in text.split(char::is_whitespace) {
            let mut start = 0;
            for (i, c) in chunk.char_indices() {
                if is_punctuation(c) {
                    self.word(&chunk[start..i], &mut ids);
                    self.word(&chunk[i..i + c.len_utf8()], &mut ids);
                    start = i + c.len_utf8();
                }
            }
            self.word(&chunk[start..], &mut ids);
        }
        ids
    }

    /// `[CLS]`, the word pieces of `text`, `[SEP]`; at most `max_tokens` ids (at least the two
    /// special tokens): pieces past the limit are dropped, `[SEP]` is kept.
    pub fn encode(&self, text: &str, max_tokens: usize) -> Vec<u32> {
        let mut ids = vec![self.cls];
        ids.extend(self.tokenize(text));
        ids.truncate(max_tokens.max(2) - 1);
        ids.push(self.sep);
        ids
    }

    /// Ids of [`encode`](Self::encode) with no limit.
    pub fn count(&self, text: &str) -> usize {
        self.tokenize(text).len() + 2
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The id of a vocabulary entry, e.g. `"##ing"`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    /// The `[UNK]` id.
    pub fn unk_id(&self) -> u32 {
        self.unk
    }

    /// The `[PAD]` id (what padded positions hold; the attention mask hides them).
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// The BERT normaliser, in the order the `tokenizers` library applies it.
    fn normalize(&self, text: &str) -> String {
        let n = self.norm;
        let mut out = String::with_capacity(text.len() + 8);
        for c in text.chars() {
            if n.clean_text && (c == '\0' || c == '\u{fffd}' || is_control(c)) {
                continue;
            }
            let c = if n.clean_text && is_whitespace(c) {
                ' '
            } else {
                c
            };
            if n.handle_chinese_chars && is_chinese_char(c) {
                out.extend([' ', c, ' ']);
            } else {
                out.push(c);
            }
        }
        if n.strip_accents.unwrap_or(n.lowercase) {
            out = out.nfd().filter(|c| !c.is_mark_nonspacing()).collect();
        }
        if n.lowercase {
            // Per character, as `tokenizers` does: no word-final sigma rule.
            out = out.chars().flat_map(char::to_lowercase).collect();
        }
        out
    }

    /// Greedy longest-match-first WordPiece of one word, appended to `ids`; the whole word is
    /// `[UNK]` when some part of it matches nothing or it is longer than `max_chars`.
    fn word(&self, word: &str, ids: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        if word.chars().count() > self.max_chars {
            ids.push(self.unk);
            return;
        }
        let first = ids.len();
        let mut piece = String::with_capacity(word.len() + self.prefix.len());
        let mut start = 0;
        while start < word.len() {
            let mut end = word.len();
            let id = loop {
                piece.clear();
                if start > 0 {
                    piece.push_str(&self.prefix);
                }
                piece.push_str(&word[start..end]);
                if let Some(&id) = self.vocab.get(&piece) {
                    break Some(id);
                }
                match word[start..end].chars().next_back() {
                    Some(c) if end - c.len_utf8() > start => end -= c.len_utf8(),
                    _ => break None,
                }
            };
            match id {
                Some(id) => ids.push(id),
                None => {
                    ids.truncate(first);
                    ids.push(self.unk);
                    return;
                }
            }
            start = end;
        }
    }
}

/// BERT's whitespace: tab, newline, carriage return and Unicode White_Space.
fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

/// BERT's control characters: categories Cc, Cf, Co (and unassigned), except tab and newlines.
fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

/// BERT's punctuation: every ASCII symbol that is not a letter or digit (`$`, `+`, `^` ...,
/// which Unicode calls symbols) and Unicode category P.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

/// The CJK Unified Ideographs blocks (not Hiragana, Katakana or Hangul, which are written with
/// spaces between words).
fn is_chinese_char(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF
        | 0x3400..=0x4DBF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F
        | 0x2B920..=0x2CEAF
        | 0xF900..=0xFAFF
        | 0x2F800..=0x2FA1F)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tokenizer over a small vocabulary; ids are positions in `TOKENS`.
    const TOKENS: &[&str] = &[
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "want", "##ed", "runn",
        "##ing", ",", ".", "!", "$", "cafe", "naive", "the", "中", "国", "hello", "a", "##b",
    ];

    fn tok() -> WordPiece {
        tok_with(
            r#"{"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}"#,
            100,
        )
    }

    fn tok_with(normalizer: &str, max_chars: usize) -> WordPiece {
        let vocab: serde_json::Map<String, serde_json::Value> = TOKENS
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i.into()))
            .collect();
        let json = serde_json::json!({
            "truncation": {"max_length": 128},
            "normalizer": serde_json::from_str::<serde_json::Value>(normalizer).unwrap(),
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": max_chars, "vocab": vocab},
        });
        WordPiece::from_json(&json.to_string()).unwrap()
    }

    fn pieces(t: &WordPiece, text: &str) -> Vec<&'static str> {
        t.tokenize(text)
            .into_iter()
            .map(|id| TOKENS[id as usize])
            .collect()
    }

    #[test]
    fn continuation_pieces_longest_match_first() {
        let t = tok();
        assert_eq!(pieces(&t, "unaffable"), ["un", "##aff", "##able"]);
        assert_eq!(
            pieces(&t, "wanted running"),
            ["want", "##ed", "runn", "##ing"]
        );
        // "ab" is not in the vocabulary: "a" then "##b".
        assert_eq!(pieces(&t, "ab"), ["a", "##b"]);
    }

    #[test]
    fn lowercases_and_strips_accents() {
        let t = tok();
        assert_eq!(pieces(&t, "CAFÉ Naïve"), ["cafe", "naive"]);
        // Already decomposed: e + U+0301 COMBINING ACUTE ACCENT.
        assert_eq!(pieces(&t, "Cafe\u{301}"), ["cafe"]);
    }

    #[test]
    fn keeps_accents_when_told() {
        let t = tok_with(
            r#"{"type": "BertNormalizer", "strip_accents": false, "lowercase": true}"#,
            100,
        );
        assert_eq!(pieces(&t, "café"), ["[UNK]"]);
    }

    #[test]
    fn punctuation_and_ascii_symbols_are_words() {
        let t = tok();
        assert_eq!(
            pieces(&t, "hello,the.cafe!"),
            ["hello", ",", "the", ".", "cafe", "!"]
        );
        // '$' is a Unicode symbol (Sc), but BERT splits every ASCII non-alphanumeric.
        assert_eq!(pieces(&t, "$hello"), ["$", "hello"]);
    }

    #[test]
    fn cleans_control_characters_and_whitespace() {
        let t = tok();
        assert_eq!(
            pieces(&t, "hel\u{0}lo\u{200b} the\u{fffd}\t\r\n\u{3000}cafe\u{7}"),
            ["hello", "the", "cafe"]
        );
        assert!(t.tokenize(" \n\t ").is_empty());
    }

    #[test]
    fn unknown_words_are_one_unk() {
        let t = tok();
        // "##x" matches nothing: the whole word is [UNK], not "un" + [UNK].
        assert_eq!(pieces(&t, "unx the"), ["[UNK]", "the"]);
        assert_eq!(pieces(&t, "zzz"), ["[UNK]"]);
    }

    #[test]
    fn words_over_the_length_limit_are_unk() {
        let t = tok_with(r#"{"type": "BertNormalizer"}"#, 4);
        assert_eq!(pieces(&t, "hello the"), ["[UNK]", "the"]);
    }

    #[test]
    fn cjk_ideographs_are_words_of_their_own() {
        let t = tok();
        assert_eq!(pieces(&t, "hello中国the"), ["hello", "中", "国", "the"]);
        // Hiragana is not split out: the word has no piece, so it is [UNK].
        assert_eq!(pieces(&t, "helloのthe"), ["[UNK]"]);
    }

    #[test]
    fn encode_adds_cls_sep_and_truncates_before_sep() {
        let t = tok();
        assert_eq!(t.encode("the cafe", 512), [2, 17, 15, 3]);
        assert_eq!(t.encode("the cafe", 3), [2, 17, 3]);
        assert_eq!(t.encode("", 512), [2, 3]);
        assert_eq!(t.count("the cafe"), 4);
    }

    #[test]
    fn rejects_other_models() {
        let json = r#"{"model": {"type": "BPE", "vocab": {}, "unk_token": "[UNK]"}, "pre_tokenizer": {"type": "BertPreTokenizer"}}"#;
        let err = WordPiece::from_json(json).unwrap_err();
        assert!(err.contains("BPE"), "{err}");
    }
}
