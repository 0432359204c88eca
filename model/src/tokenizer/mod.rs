//! Tokenizers built from a GGUF file's metadata alone, reproducing llama.cpp's tokenization.
//!
//! Two families are supported, chosen by `tokenizer.ggml.model`:
//! - `gpt2`: byte-level BPE with merges ([`TokenizerFamily::Gpt2Bpe`]), pre-tokenized by the
//!   regexes llama.cpp selects from `tokenizer.ggml.pre`;
//! - `llama`: SentencePiece BPE with scores and `<0xXX>` byte fallback
//!   ([`TokenizerFamily::LlamaSpm`]).
//!
//! Special tokens are split off first, exactly like llama.cpp's `tokenizer_st_partition`:
//! every control, user-defined and unknown-type token string is searched for, longest first.
//! With `parse_special == false` control and unknown tokens are not searched for, so document
//! text cannot inject them; user-defined tokens are still matched (as llama.cpp and Hugging
//! Face tokenizers do).

mod bpe;
mod spm;
mod vocab;

use std::collections::{HashMap, HashSet};
use std::fmt;

use candle_core::quantized::gguf_file::{Content, Value};

pub use vocab::TokenizerError;
use vocab::{TokenKind, Vocab};

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
const KEY_EOT: &str = "tokenizer.ggml.eot_token_id";
const KEY_EOM: &str = "tokenizer.ggml.eom_token_id";
const KEY_UNK: &str = "tokenizer.ggml.unknown_token_id";
const KEY_PAD: &str = "tokenizer.ggml.padding_token_id";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const KEY_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
const KEY_NAME: &str = "general.name";

/// Which tokenization algorithm a vocabulary uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerFamily {
    /// `tokenizer.ggml.model = gpt2`: byte-level BPE with merges.
    Gpt2Bpe,
    /// `tokenizer.ggml.model = llama`: SentencePiece BPE with scores and byte fallback.
    LlamaSpm,
}

/// The byte-level BPE parts of a `gpt2` tokenizer.
struct BpeParts {
    pre: bpe::PreTokenizer,
    merges: bpe::MergeRanks,
    bytes: bpe::ByteLevel,
    ignore_merges: bool,
}

/// A piece of input text during special-token partitioning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fragment {
    /// Raw text `text[start..end]`, still to be tokenized.
    Raw(usize, usize),
    /// A special token matched as a whole.
    Token(u32),
}

/// A tokenizer built from GGUF metadata. Immutable after construction: `Send + Sync`, cheap
/// to share behind an `Arc`.
pub struct Tokenizer {
    family: TokenizerFamily,
    pre_name: Option<String>,
    vocab: Vocab,
    bpe: Option<BpeParts>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    /// Control, user-defined and unknown tokens, longest text first (llama.cpp's
    /// `cache_special_tokens`).
    special_tokens: Vec<u32>,
    lstrip: HashSet<u32>,
    rstrip: HashSet<u32>,
    eog: HashSet<u32>,
    /// What each token contributes to decoded text.
    pieces: Vec<Box<[u8]>>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("family", &self.family)
            .field("pre", &self.pre_name)
            .field("vocab_size", &self.vocab.tokens.len())
            .field(
                "merges",
                &self.bpe.as_ref().map(|b| b.merges.len()).unwrap_or(0),
            )
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("add_space_prefix", &self.add_space_prefix)
            .field("special_tokens", &self.special_tokens.len())
            .finish()
    }
}

// ---- metadata helpers ----------------------------------------------------------------------

type Metadata = HashMap<String, Value>;

fn value_as_i64(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => *x as i64,
        Value::I8(x) => *x as i64,
        Value::U16(x) => *x as i64,
        Value::I16(x) => *x as i64,
        Value::U32(x) => *x as i64,
        Value::I32(x) => *x as i64,
        Value::U64(x) => i64::try_from(*x).ok()?,
        Value::I64(x) => *x,
        _ => return None,
    })
}

fn opt_str<'a>(md: &'a Metadata, key: &'static str) -> Result<Option<&'a str>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(TokenizerError::WrongType {
            key,
            expected: "a string",
        }),
    }
}

fn opt_id(md: &Metadata, key: &'static str) -> Result<Option<i64>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => value_as_i64(v).map(Some).ok_or(TokenizerError::WrongType {
            key,
            expected: "an integer",
        }),
    }
}

fn opt_bool(md: &Metadata, key: &'static str) -> Result<Option<bool>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => value_as_i64(v)
            .map(|x| Some(x != 0))
            .ok_or(TokenizerError::WrongType {
                key,
                expected: "a bool",
            }),
    }
}

fn opt_array<'a>(
    md: &'a Metadata,
    key: &'static str,
) -> Result<Option<&'a Vec<Value>>, TokenizerError> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(TokenizerError::WrongType {
            key,
            expected: "an array",
        }),
    }
}

fn string_array<'a>(
    values: &'a [Value],
    key: &'static str,
) -> Result<Vec<&'a str>, TokenizerError> {
    values
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.as_str()),
            _ => Err(TokenizerError::WrongType {
                key,
                expected: "an array of strings",
            }),
        })
        .collect()
}

/// Like llama.cpp, a per-token array may be longer than the vocabulary, not shorter.
fn check_len(key: &'static str, expected: usize, found: usize) -> Result<(), TokenizerError> {
    if found >= expected {
        Ok(())
    } else {
        Err(TokenizerError::LengthMismatch {
            key,
            expected,
            found,
        })
    }
}

/// Token texts that llama.cpp (as vendored by llama-cpp-python 0.3.36) treats as
/// end-of-generation and forces to control type.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
    "[e~[",
];

/// Fill-in-the-middle tokens llama.cpp auto-detects by text when the metadata does not name
/// them: (metadata keys, texts, whether the token also ends generation). Detected tokens are
/// forced to control type.
const FIM_GROUPS: &[(&[&str], &[&str], bool)] = &[
    (
        &[
            "tokenizer.ggml.fim_pre_token_id",
            "tokenizer.ggml.prefix_token_id",
        ],
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<\u{ff5c}fim\u{2581}begin\u{ff5c}>",
            "<PRE>",
            "\u{2581}<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
        false,
    ),
    (
        &[
            "tokenizer.ggml.fim_suf_token_id",
            "tokenizer.ggml.suffix_token_id",
        ],
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<\u{ff5c}fim\u{2581}hole\u{ff5c}>",
            "<SUF>",
            "\u{2581}<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
        false,
    ),
    (
        &[
            "tokenizer.ggml.fim_mid_token_id",
            "tokenizer.ggml.middle_token_id",
        ],
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<\u{ff5c}fim\u{2581}end\u{ff5c}>",
            "<MID>",
            "\u{2581}<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
        false,
    ),
    (
        &["tokenizer.ggml.fim_pad_token_id"],
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
        true,
    ),
    (
        &["tokenizer.ggml.fim_rep_token_id"],
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
        true,
    ),
    (
        &["tokenizer.ggml.fim_sep_token_id"],
        &["<|file_sep|>"],
        true,
    ),
];

/// C's `isspace` for the bytes llama.cpp strips around lstrip/rstrip special tokens.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(content: &Content) -> Result<Self, TokenizerError> {
        let md = &content.metadata;

        let model = opt_str(md, KEY_MODEL)?.ok_or(TokenizerError::MissingKey(KEY_MODEL))?;
        let family = match model {
            "gpt2" => TokenizerFamily::Gpt2Bpe,
            "llama" => TokenizerFamily::LlamaSpm,
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let pre_name = opt_str(md, KEY_PRE)?.map(str::to_string);

        // Vocabulary.
        let token_values =
            opt_array(md, KEY_TOKENS)?.ok_or(TokenizerError::MissingKey(KEY_TOKENS))?;
        if token_values.is_empty() {
            return Err(TokenizerError::EmptyVocabulary);
        }
        let n = token_values.len();
        let tokens: Vec<String> = string_array(token_values, KEY_TOKENS)?
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_empty() {
                    format!("[EMPTY_{i}]")
                } else {
                    t.to_string()
                }
            })
            .collect();
        let scores: Vec<f32> = match opt_array(md, KEY_SCORES)? {
            None => vec![0.0; n],
            Some(a) => {
                check_len(KEY_SCORES, n, a.len())?;
                a.iter()
                    .take(n)
                    .map(|v| match v {
                        Value::F32(x) => Ok(*x),
                        Value::F64(x) => Ok(*x as f32),
                        Value::I32(x) => Ok(*x as f32),
                        _ => Err(TokenizerError::WrongType {
                            key: KEY_SCORES,
                            expected: "an array of f32",
                        }),
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let mut kinds: Vec<TokenKind> = match opt_array(md, KEY_TOKEN_TYPE)? {
            None => vec![TokenKind::Normal; n],
            Some(a) => {
                check_len(KEY_TOKEN_TYPE, n, a.len())?;
                a.iter()
                    .take(n)
                    .map(|v| {
                        value_as_i64(v)
                            .map(TokenKind::from_gguf)
                            .ok_or(TokenizerError::WrongType {
                                key: KEY_TOKEN_TYPE,
                                expected: "an array of i32",
                            })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        // Later duplicates win, as in llama.cpp's `token_to_id[word] = i`.
        let mut token_to_id = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            token_to_id.insert(t.clone(), i as u32);
        }

        // Family defaults (llama.cpp's llama_vocab::impl::load).
        // A default id outside the vocabulary is disabled.
        let in_vocab = |id: u32| Some(id).filter(|&x| (x as usize) < n);
        let (mut bos, mut eos, mut unk, mut pad) = match family {
            TokenizerFamily::LlamaSpm => (in_vocab(1), in_vocab(2), in_vocab(0), None),
            TokenizerFamily::Gpt2Bpe => (None, None, None, None),
        };
        let mut add_space_prefix = family == TokenizerFamily::LlamaSpm;
        let mut add_bos = family == TokenizerFamily::LlamaSpm;
        let mut add_eos = false;

        let bpe = match family {
            TokenizerFamily::LlamaSpm => None,
            TokenizerFamily::Gpt2Bpe => {
                let pre_key = pre_name.as_deref().unwrap_or("default");
                let kind = bpe::SUPPORTED_PRE
                    .iter()
                    .find(|(name, _)| *name == pre_key)
                    .map(|(_, kind)| *kind)
                    .ok_or_else(|| TokenizerError::UnsupportedPre {
                        name: pre_key.to_string(),
                        supported: bpe::supported_pre_list(),
                    })?;
                let ignore_merges = bpe::pre_ignores_merges(pre_key);
                if ignore_merges {
                    add_bos = true;
                }
                let merge_values =
                    opt_array(md, KEY_MERGES)?.ok_or(TokenizerError::MissingKey(KEY_MERGES))?;
                let merges = bpe::MergeRanks::from_lines(string_array(merge_values, KEY_MERGES)?);
                Some(BpeParts {
                    pre: bpe::PreTokenizer::new(kind, pre_key)?,
                    merges,
                    bytes: bpe::ByteLevel::new(),
                    ignore_merges,
                })
            }
        };

        if let Some(v) = opt_bool(md, KEY_ADD_SPACE_PREFIX)? {
            add_space_prefix = v;
        }
        let valid_id =
            |id: Option<i64>| id.filter(|&x| x >= 0 && (x as usize) < n).map(|x| x as u32);
        for (key, slot) in [
            (KEY_BOS, &mut bos),
            (KEY_EOS, &mut eos),
            (KEY_UNK, &mut unk),
            (KEY_PAD, &mut pad),
        ] {
            // An out-of-range id keeps the default, as llama.cpp does.
            if let Some(id) = valid_id(opt_id(md, key)?) {
                *slot = Some(id);
            }
        }
        if let Some(v) = opt_bool(md, KEY_ADD_BOS)? {
            add_bos = v;
        }
        if let Some(v) = opt_bool(md, KEY_ADD_EOS)? {
            add_eos = v;
        }

        // End-of-generation tokens, and llama.cpp's forcing of control-looking tokens to type
        // control (llama.cpp forces only the first FIM token of each kind it meets in hash
        // order; all of them are forced here).
        let mut eog = HashSet::new();
        for text in EOG_TEXTS {
            if let Some(&id) = token_to_id.get(*text) {
                eog.insert(id);
                kinds[id as usize] = TokenKind::Control;
            }
        }
        for (keys, texts, ends_generation) in FIM_GROUPS {
            let mut from_metadata = None;
            for key in *keys {
                if let Some(id) = valid_id(opt_id(md, key)?) {
                    from_metadata = Some(id);
                }
            }
            match from_metadata {
                Some(id) => {
                    if *ends_generation {
                        eog.insert(id);
                    }
                }
                None => {
                    for text in *texts {
                        if let Some(&id) = token_to_id.get(*text) {
                            kinds[id as usize] = TokenKind::Control;
                            if *ends_generation {
                                eog.insert(id);
                            }
                        }
                    }
                }
            }
        }
        for id in [
            eos,
            valid_id(opt_id(md, KEY_EOT)?),
            valid_id(opt_id(md, KEY_EOM)?),
        ]
        .into_iter()
        .flatten()
        {
            eog.insert(id);
        }

        // Special tokens, longest first (ties by id, for determinism).
        let mut special_tokens: Vec<u32> = (0..n as u32)
            .filter(|&id| {
                matches!(
                    kinds[id as usize],
                    TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown
                )
            })
            .collect();
        special_tokens.sort_by(|&a, &b| {
            tokens[b as usize]
                .len()
                .cmp(&tokens[a as usize].len())
                .then(a.cmp(&b))
        });

        // Per-model strip attributes llama.cpp sets by name.
        let mut lstrip = HashSet::new();
        let mut rstrip = HashSet::new();
        let model_name = opt_str(md, KEY_NAME)?.unwrap_or("").to_lowercase();
        let pre_lc = pre_name.as_deref().unwrap_or("");
        if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
            .iter()
            .any(|p| pre_lc.contains(p))
        {
            if let Some(&id) = token_to_id.get("<mask>") {
                lstrip.insert(id);
            }
        } else if model_name.contains("phi-3") || model_name.contains("phi3") {
            rstrip.extend(special_tokens.iter().copied());
            if let Some(&id) = token_to_id.get("</s>") {
                rstrip.insert(id);
            }
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                if let Some(id) = token_to_id.get(t) {
                    rstrip.remove(id);
                }
            }
        }

        let mut byte_tokens = [None; 256];
        if family == TokenizerFamily::LlamaSpm {
            for (b, slot) in byte_tokens.iter_mut().enumerate() {
                let hex = format!("<0x{b:02X}>");
                *slot = token_to_id.get(&hex).copied().or_else(|| {
                    // llama.cpp falls back to the byte itself as a one-byte token.
                    std::str::from_utf8(&[b as u8])
                        .ok()
                        .and_then(|s| token_to_id.get(s).copied())
                });
            }
        }

        let pieces = tokens
            .iter()
            .zip(&kinds)
            .map(|(text, kind)| {
                token_piece_bytes(family, bpe.as_ref().map(|b| &b.bytes), text, *kind)
                    .into_boxed_slice()
            })
            .collect();

        Ok(Self {
            family,
            pre_name,
            vocab: Vocab {
                tokens,
                token_to_id,
                scores,
                kinds,
                byte_tokens,
            },
            bpe,
            bos,
            eos,
            unk,
            pad,
            add_bos,
            add_eos,
            add_space_prefix,
            special_tokens,
            lstrip,
            rstrip,
            eog,
            pieces,
        })
    }

    pub fn family(&self) -> TokenizerFamily {
        self.family
    }

    /// The `tokenizer.ggml.pre` metadata value, if present (the gpt2 pre-tokenizer name).
    pub fn pre(&self) -> Option<&str> {
        self.pre_name.as_deref()
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.tokens.len()
    }

    /// Encodes text into token ids, as llama.cpp's `llama_tokenize(text, add_special = add_bos,
    /// parse_special)` does.
    ///
    /// `add_bos`: prepend BOS when the vocabulary asks for it (`add_bos_token`; default true
    /// for llama, false for gpt2 except Llama 3 style pre-tokenizers). Like llama.cpp's
    /// `add_special`, it also appends EOS when the vocabulary sets `add_eos_token`.
    ///
    /// `parse_special`: when true, exact occurrences of control / user-defined token strings
    /// (e.g. `<|im_start|>`, `<s>`) become those single tokens; when false control tokens
    /// are tokenized as plain text (user-defined tokens are still matched, as in llama.cpp).
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Vec<u32> {
        let fragments = self.partition(text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos && self.add_bos {
            if let Some(bos) = self.bos {
                out.push(bos);
            }
        }
        match self.family {
            TokenizerFamily::LlamaSpm => {
                // llama.cpp prefixes a space to the first raw fragment and to every raw
                // fragment that follows a special token.
                let mut is_prev_special = true;
                let mut buf = String::new();
                for frag in fragments {
                    match frag {
                        Fragment::Raw(s, e) => {
                            buf.clear();
                            if self.add_space_prefix && is_prev_special {
                                buf.push(' ');
                            }
                            buf.push_str(&text[s..e]);
                            let escaped = buf.replace(' ', "\u{2581}");
                            spm::tokenize(&escaped, &self.vocab, &mut out);
                            is_prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            is_prev_special = true;
                        }
                    }
                }
            }
            TokenizerFamily::Gpt2Bpe => {
                let parts = self.bpe.as_ref().expect("gpt2 tokenizer has BPE parts");
                let mut word = String::new();
                for frag in fragments {
                    match frag {
                        Fragment::Raw(s, e) => {
                            let raw = &text[s..e];
                            for (ws, we) in parts.pre.split_ranges(raw) {
                                word.clear();
                                parts.bytes.encode_into(&raw[ws..we], &mut word);
                                bpe::tokenize_word(
                                    &word,
                                    &self.vocab,
                                    &parts.merges,
                                    parts.ignore_merges,
                                    &mut out,
                                );
                            }
                        }
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
        }
        if add_bos && self.add_eos {
            if let Some(eos) = self.eos {
                out.push(eos);
            }
        }
        out
    }

    /// Splits `text` around special tokens (llama.cpp's `tokenizer_st_partition`).
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let bytes = text.as_bytes();
        let mut fragments = vec![Fragment::Raw(0, text.len())];
        for &id in &self.special_tokens {
            let kind = self.vocab.kinds[id as usize];
            if !parse_special && matches!(kind, TokenKind::Control | TokenKind::Unknown) {
                continue;
            }
            let needle = self.vocab.tokens[id as usize].as_str();
            if !text.contains(needle) {
                continue;
            }
            let lstrip = self.lstrip.contains(&id);
            let rstrip = self.rstrip.contains(&id);
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for frag in fragments {
                let Fragment::Raw(start, end) = frag else {
                    next.push(frag);
                    continue;
                };
                let mut base = start;
                loop {
                    let Some(rel) = text[base..end].find(needle) else {
                        if base < end {
                            next.push(Fragment::Raw(base, end));
                        }
                        break;
                    };
                    let m = base + rel;
                    let mut left_end = m;
                    if lstrip {
                        while left_end > base && is_c_space(bytes[left_end - 1]) {
                            left_end -= 1;
                        }
                    }
                    if left_end > base {
                        next.push(Fragment::Raw(base, left_end));
                    }
                    next.push(Fragment::Token(id));
                    let mut right = m + needle.len();
                    if rstrip {
                        while right < end && is_c_space(bytes[right]) {
                            right += 1;
                        }
                    }
                    if right >= end {
                        break;
                    }
                    base = right;
                }
            }
            fragments = next;
        }
        fragments
    }

    /// Whether `encode(.., add_bos = true, ..)` prepends BOS.
    pub fn add_bos_token(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Whether `encode(.., add_bos = true, ..)` appends EOS (`tokenizer.ggml.add_eos_token`).
    pub fn add_eos_token(&self) -> bool {
        self.add_eos && self.eos.is_some()
    }

    /// Whether SentencePiece text gets a leading space before tokenization.
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// Whether generation should stop at this token: EOS, an EOT/EOM token from the metadata,
    /// or one of the end-of-turn texts llama.cpp recognises (`<|im_end|>`, `<|eot_id|>`,
    /// `<|endoftext|>`, `<end_of_turn>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// Exact vocabulary lookup, e.g. `token_id("<|im_end|>")`.
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.vocab.lookup(piece)
    }

    /// The raw vocabulary string of a token.
    pub fn token_piece(&self, id: u32) -> Option<&str> {
        self.vocab.tokens.get(id as usize).map(String::as_str)
    }

    /// Token type 3 (control), including the end-of-turn / FIM tokens llama.cpp forces to it.
    pub fn is_control(&self, id: u32) -> bool {
        self.vocab.kind(id) == Some(TokenKind::Control)
    }

    /// Bytes this token contributes to output text, as llama.cpp's `token_to_piece(special =
    /// false)`: byte-level BPE decoded, SPM `▁` -> ` `, `<0xXX>` byte tokens -> that byte,
    /// user-defined tokens -> their text; control, unknown and unused tokens give nothing.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.piece(id).to_vec()
    }

    fn piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize).map(|p| &p[..]).unwrap_or(&[])
    }

    /// Decodes ids to text (lossy UTF-8), skipping control tokens. When the vocabulary adds a
    /// space prefix (SPM), the one leading space of the first token that produces text is
    /// removed, as SentencePiece's decoder does (llama.cpp keeps it when BOS comes first).
    /// llama.cpp's optional `clean_spaces` post-processing (" ," -> ",", used by some gpt2
    /// pre-tokenizers but not `smollm`) is not applied: decoding is the plain concatenation
    /// of [`Tokenizer::token_bytes`].
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        let mut strip = self.add_space_prefix;
        for &id in ids {
            let piece = self.piece(id);
            if piece.is_empty() {
                continue;
            }
            let piece = if strip && piece[0] == b' ' {
                &piece[1..]
            } else {
                piece
            };
            strip = false;
            bytes.extend_from_slice(piece);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A streaming detokenizer over this vocabulary.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder {
            tokenizer: self,
            pending: Vec::new(),
            strip: self.add_space_prefix,
        }
    }
}

/// What a token contributes to decoded text (llama.cpp's `token_to_piece(special = false)`).
fn token_piece_bytes(
    family: TokenizerFamily,
    byte_level: Option<&bpe::ByteLevel>,
    text: &str,
    kind: TokenKind,
) -> Vec<u8> {
    match kind {
        TokenKind::Control | TokenKind::Unknown | TokenKind::Unused | TokenKind::Undefined => {
            Vec::new()
        }
        TokenKind::UserDefined => text.as_bytes().to_vec(),
        TokenKind::Normal => match (family, byte_level) {
            (TokenizerFamily::Gpt2Bpe, Some(bl)) => bl.decode(text),
            _ => text.replace('\u{2581}', " ").into_bytes(),
        },
        TokenKind::Byte => match family {
            TokenizerFamily::LlamaSpm => text
                .get(3..5)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .map(|b| vec![b])
                .unwrap_or_default(),
            // llama.cpp gives byte-type tokens of a BPE vocabulary no text.
            TokenizerFamily::Gpt2Bpe => Vec::new(),
        },
    }
}

/// Streaming detokenizer: push ids one by one and get back the newly completed text.
///
/// Never emits part of a UTF-8 sequence: bytes of an incomplete multi-byte character are held
/// until it completes (invalid bytes become U+FFFD exactly where `decode` puts them). Handles
/// the SPM leading space like [`Tokenizer::decode`], so the concatenation of every `push`
/// and `finish` equals `decode` of all the ids.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
    strip: bool,
}

impl StreamDecoder<'_> {
    /// Adds one token and returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        let piece = self.tokenizer.piece(id);
        if piece.is_empty() {
            return String::new();
        }
        let piece = if self.strip && piece[0] == b' ' {
            &piece[1..]
        } else {
            piece
        };
        self.strip = false;
        self.pending.extend_from_slice(piece);
        self.drain_complete()
    }

    /// Returns whatever is still held back (an incomplete UTF-8 sequence becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    fn drain_complete(&mut self) -> String {
        let mut out = String::new();
        let mut consumed = 0;
        loop {
            let rest = &self.pending[consumed..];
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    consumed = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&rest[..valid]).expect("valid prefix"));
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            consumed += valid + bad;
                        }
                        None => {
                            // An incomplete sequence at the end: wait for more bytes.
                            consumed += valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..consumed);
        out
    }
}

#[cfg(test)]
mod tests;
