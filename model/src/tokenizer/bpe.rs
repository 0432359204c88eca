//! Byte-level BPE (`tokenizer.ggml.model = gpt2`), following llama.cpp's `llm_tokenizer_bpe`.
//!
//! Pipeline for one run of raw text (special tokens were already split off by the caller):
//! 1. pre-tokenize with the regex list selected by `tokenizer.ggml.pre` (llama.cpp's
//!    `regex_exprs`); each regex further splits the pieces produced by the previous one, and
//!    text between matches is kept as pieces of its own (llama.cpp's `unicode_regex_split`);
//! 2. map every byte of each piece to its GPT-2 byte-level character;
//! 3. merge adjacent symbols by lowest merge rank (ties: leftmost), as llama.cpp's
//!    `llm_tokenizer_bpe_session` does, and look the final symbols up in the vocabulary.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use fancy_regex::Regex;

use super::vocab::{TokenizerError, Vocab};

/// GPT-2's printable-character stand-ins for the 256 byte values.
pub(super) fn byte_to_unicode_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut assigned = [false; 256];
    for b in (0x21u32..=0x7E).chain(0xA1..=0xAC).chain(0xAE..=0xFF) {
        table[b as usize] = char::from_u32(b).expect("latin-1 code point");
        assigned[b as usize] = true;
    }
    let mut n = 0u32;
    for b in 0..256usize {
        if !assigned[b] {
            table[b] = char::from_u32(256 + n).expect("code point below 0x144");
            n += 1;
        }
    }
    table
}

/// Byte-level alphabet: byte -> char for encoding, char -> byte for decoding.
#[derive(Debug, Clone)]
pub(super) struct ByteLevel {
    encode: [char; 256],
    decode: HashMap<char, u8>,
}

impl ByteLevel {
    pub(super) fn new() -> Self {
        let encode = byte_to_unicode_table();
        let decode = encode
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect();
        Self { encode, decode }
    }

    /// Appends the byte-level form of `text` to `out`.
    pub(super) fn encode_into(&self, text: &str, out: &mut String) {
        for &b in text.as_bytes() {
            out.push(self.encode[b as usize]);
        }
    }

    /// Bytes a byte-level vocabulary string stands for. A character outside the byte-level
    /// alphabet (not produced by GPT-2 style converters) contributes its own UTF-8 bytes.
    pub(super) fn decode(&self, piece: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(piece.len());
        for c in piece.chars() {
            match self.decode.get(&c) {
                Some(&b) => out.push(b),
                None => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        out
    }
}

/// GPT-2's pre-tokenizer regex (llama.cpp's custom `unicode_regex_split_custom_gpt2`
/// implements exactly this, including the trailing `\s+` alternative).
const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Llama 3's pre-tokenizer regex, in llama.cpp's case-insensitive-free spelling.
const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2 / StableLM2: Llama 3's regex with single digits.
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer groups of llama.cpp (as vendored by llama-cpp-python 0.3.36) that this
/// crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PreKind {
    /// `default` or missing `tokenizer.ggml.pre`: llama.cpp's default regex list.
    Default,
    /// `gpt-2` and friends: the plain GPT-2 regex.
    Gpt2,
    /// `smollm`, `starcoder`, ...: every digit split off, then the GPT-2 regex.
    DigitsThenGpt2,
    /// `llama3`, `llama-bpe`, ...: the Llama 3 regex.
    Llama3,
    /// `qwen2`, `stablelm2`, `megrez`.
    Qwen2,
}

/// `tokenizer.ggml.pre` values accepted, with the group each belongs to.
pub(super) const SUPPORTED_PRE: &[(&str, PreKind)] = &[
    ("default", PreKind::Default),
    ("gpt-2", PreKind::Gpt2),
    ("phi-2", PreKind::Gpt2),
    ("gigachat", PreKind::Gpt2),
    ("a.x-4.0", PreKind::Gpt2),
    ("mellum", PreKind::Gpt2),
    ("exaone4", PreKind::Gpt2),
    ("mpt", PreKind::Gpt2),
    ("olmo", PreKind::Gpt2),
    ("jais", PreKind::Gpt2),
    ("trillion", PreKind::Gpt2),
    ("granite-docling", PreKind::Gpt2),
    ("smollm", PreKind::DigitsThenGpt2),
    ("starcoder", PreKind::DigitsThenGpt2),
    ("refact", PreKind::DigitsThenGpt2),
    ("command-r", PreKind::DigitsThenGpt2),
    ("codeshell", PreKind::DigitsThenGpt2),
    ("exaone", PreKind::DigitsThenGpt2),
    ("minerva-7b", PreKind::DigitsThenGpt2),
    ("mellum2", PreKind::DigitsThenGpt2),
    ("llama3", PreKind::Llama3),
    ("llama-v3", PreKind::Llama3),
    ("llama-bpe", PreKind::Llama3),
    ("falcon3", PreKind::Llama3),
    ("falcon-h1", PreKind::Llama3),
    ("pixtral", PreKind::Llama3),
    ("midm-2.0", PreKind::Llama3),
    ("lfm2", PreKind::Llama3),
    ("dbrx", PreKind::Llama3),
    ("smaug-bpe", PreKind::Llama3),
    ("qwen2", PreKind::Qwen2),
    ("deepseek-r1-qwen", PreKind::Qwen2),
    ("kormo", PreKind::Qwen2),
    ("f2llmv2", PreKind::Qwen2),
    ("stablelm2", PreKind::Qwen2),
    ("megrez", PreKind::Qwen2),
    ("hunyuan", PreKind::Qwen2),
];

pub(super) fn supported_pre_list() -> String {
    SUPPORTED_PRE
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// llama.cpp sets `ignore_merges` (a pre-token that is itself a vocabulary entry is used
/// whole) and a default `add_bos = true` for these names only.
pub(super) fn pre_ignores_merges(name: &str) -> bool {
    matches!(
        name,
        "llama3"
            | "llama-v3"
            | "llama-bpe"
            | "falcon3"
            | "falcon-h1"
            | "pixtral"
            | "midm-2.0"
            | "lfm2"
    )
}

/// Splits text into pre-tokens with a list of regexes applied in sequence.
#[derive(Debug)]
pub(super) struct PreTokenizer {
    regexes: Vec<Regex>,
}

impl PreTokenizer {
    pub(super) fn new(kind: PreKind, name: &str) -> Result<Self, TokenizerError> {
        let exprs: &[&str] = match kind {
            PreKind::Default => &[
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_RE,
                r"\p{N}+",
                r"[0-9][0-9][0-9]",
            ],
            PreKind::Gpt2 => &[GPT2_RE],
            PreKind::DigitsThenGpt2 => &[r"\p{N}", GPT2_RE],
            PreKind::Llama3 => &[LLAMA3_RE],
            PreKind::Qwen2 => &[QWEN2_RE],
        };
        let regexes = exprs
            .iter()
            .map(|e| {
                Regex::new(e).map_err(|err| TokenizerError::Regex {
                    pre: name.to_string(),
                    message: err.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { regexes })
    }

    /// Pre-tokens of `text`, as byte ranges. Every regex only sees one piece at a time (so
    /// `(?!\S)` sees the piece's end), and the text between its matches becomes pieces too.
    pub(super) fn split_ranges(&self, text: &str) -> Vec<(usize, usize)> {
        let mut pieces = if text.is_empty() {
            Vec::new()
        } else {
            vec![(0, text.len())]
        };
        for re in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for &(start, end) in &pieces {
                split_one(re, text, start, end, &mut next);
            }
            pieces = next;
        }
        pieces
    }

    /// Pre-tokens of `text` as string slices.
    #[cfg(test)]
    pub(super) fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        self.split_ranges(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect()
    }
}

fn split_one(re: &Regex, text: &str, start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
    let piece = &text[start..end];
    let mut last = 0;
    for m in re.find_iter(piece) {
        let m = match m {
            Ok(m) => m,
            // Backtracking limit: keep the rest of the piece whole rather than lose text.
            Err(_) => break,
        };
        if m.start() == m.end() {
            continue;
        }
        if m.start() > last {
            out.push((start + last, start + m.start()));
        }
        out.push((start + m.start(), start + m.end()));
        last = m.end();
    }
    if last < piece.len() {
        out.push((start + last, end));
    }
}

/// Merge ranks from `tokenizer.ggml.merges`, looked up by (left, right) strings.
#[derive(Debug, Default)]
pub(super) struct MergeRanks {
    ranks: HashMap<String, HashMap<String, u32>>,
    len: usize,
}

impl MergeRanks {
    /// Parses "left right" merge lines like llama.cpp: the split is at the first space at or
    /// after byte 1; a line without one yields an empty pair; the first rank of a pair wins.
    pub(super) fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut ranks: HashMap<String, HashMap<String, u32>> = HashMap::new();
        let mut len = 0;
        for (rank, line) in lines.into_iter().enumerate() {
            let space = line
                .as_bytes()
                .iter()
                .skip(1)
                .position(|&b| b == b' ')
                .map(|p| p + 1);
            let (first, second) = match space {
                Some(p) => (&line[..p], &line[p + 1..]),
                None => ("", ""),
            };
            let inner = ranks.entry(first.to_string()).or_default();
            if !inner.contains_key(second) {
                inner.insert(second.to_string(), rank as u32);
                len += 1;
            }
        }
        Self { ranks, len }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    fn rank(&self, left: &str, right: &str) -> Option<u32> {
        self.ranks.get(left)?.get(right).copied()
    }
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    n: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Tokenizes one byte-level-encoded pre-token and appends the ids to `out`.
pub(super) fn tokenize_word(
    word: &str,
    vocab: &Vocab,
    merges: &MergeRanks,
    ignore_merges: bool,
    out: &mut Vec<u32>,
) {
    if word.is_empty() {
        return;
    }
    if ignore_merges {
        if let Some(id) = vocab.lookup(word) {
            out.push(id);
            return;
        }
    }

    let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
    for (i, (off, c)) in word.char_indices().enumerate() {
        symbols.push(Symbol {
            start: off,
            n: c.len_utf8(),
            prev: i.checked_sub(1),
            next: Some(i + 1),
        });
    }
    if let Some(last) = symbols.last_mut() {
        last.next = None;
    }

    // Min-heap on (rank, left): lowest rank first, leftmost on ties (llama.cpp's comparator).
    let mut queue: BinaryHeap<Reverse<(u32, usize, usize, usize)>> = BinaryHeap::new();
    let text_of = |s: &Symbol| &word[s.start..s.start + s.n];
    let add_bigram = |symbols: &[Symbol],
                      queue: &mut BinaryHeap<Reverse<(u32, usize, usize, usize)>>,
                      left: Option<usize>,
                      right: Option<usize>| {
        let (Some(l), Some(r)) = (left, right) else {
            return;
        };
        let (ls, rs) = (&symbols[l], &symbols[r]);
        if let Some(rank) = merges.rank(text_of(ls), text_of(rs)) {
            queue.push(Reverse((rank, l, r, ls.n + rs.n)));
        }
    };
    for i in 1..symbols.len() {
        add_bigram(&symbols, &mut queue, Some(i - 1), Some(i));
    }

    while let Some(Reverse((_rank, l, r, size))) = queue.pop() {
        let (ln, rn) = (symbols[l].n, symbols[r].n);
        // Outdated bigram: one side was merged away or grew since it was queued.
        if ln == 0 || rn == 0 || ln + rn != size {
            continue;
        }
        symbols[l].n += rn;
        symbols[r].n = 0;
        let after = symbols[r].next;
        symbols[l].next = after;
        if let Some(a) = after {
            symbols[a].prev = Some(l);
        }
        let prev = symbols[l].prev;
        add_bigram(&symbols, &mut queue, prev, Some(l));
        add_bigram(&symbols, &mut queue, Some(l), after);
    }

    let mut i = Some(0);
    while let Some(idx) = i {
        let sym = symbols[idx];
        i = sym.next;
        if sym.n == 0 {
            continue;
        }
        let text = text_of(&sym);
        match vocab.lookup(text) {
            Some(id) => out.push(id),
            None => {
                // llama.cpp looks every byte up as a one-byte string and drops misses.
                for &b in text.as_bytes() {
                    if b.is_ascii() {
                        let s = [b];
                        let s = std::str::from_utf8(&s).expect("ASCII");
                        if let Some(id) = vocab.lookup(s) {
                            out.push(id);
                        }
                    }
                }
            }
        }
    }
}
