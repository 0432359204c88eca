//! SentencePiece BPE (`tokenizer.ggml.model = llama`), following llama.cpp's
//! `llm_tokenizer_spm_session`.
//!
//! The input is one run of raw text whose spaces were already replaced by U+2581 (and, where
//! llama.cpp does it, prefixed with one). Start with one symbol per character; repeatedly
//! merge the adjacent pair whose concatenation is a vocabulary entry with the highest score
//! (ties: leftmost); then emit each final symbol's id, or byte-fallback `<0xXX>` tokens for
//! a symbol that is not in the vocabulary.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    n: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl Ord for Bigram {
    /// Max-heap order of llama.cpp's `llm_bigram_spm::comparator`: higher score first, then
    /// the smaller `left` index. Scores compare like C++ `<` (so -0.0 == 0.0).
    fn cmp(&self, other: &Self) -> Ordering {
        match self.score.partial_cmp(&other.score) {
            Some(Ordering::Equal) | None => other.left.cmp(&self.left),
            Some(o) => o,
        }
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

/// Tokenizes `text` (already whitespace-escaped) and appends the ids to `out`.
pub(super) fn tokenize(text: &str, vocab: &Vocab, out: &mut Vec<u32>) {
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (i, (off, c)) in text.char_indices().enumerate() {
        symbols.push(Symbol {
            start: off,
            n: c.len_utf8(),
            prev: i.checked_sub(1),
            next: Some(i + 1),
        });
    }
    let Some(last) = symbols.last_mut() else {
        return;
    };
    last.next = None;

    let mut queue = BinaryHeap::new();
    let try_add_bigram = |symbols: &[Symbol],
                          queue: &mut BinaryHeap<Bigram>,
                          left: Option<usize>,
                          right: Option<usize>| {
        let (Some(l), Some(r)) = (left, right) else {
            return;
        };
        // The right symbol always starts where the left one ends.
        let start = symbols[l].start;
        let size = symbols[l].n + symbols[r].n;
        if let Some(id) = vocab.lookup(&text[start..start + size]) {
            queue.push(Bigram {
                left: l,
                right: r,
                score: vocab.score(id),
                size,
            });
        }
    };
    for i in 1..symbols.len() {
        try_add_bigram(&symbols, &mut queue, Some(i - 1), Some(i));
    }

    while let Some(b) = queue.pop() {
        let (ln, rn) = (symbols[b.left].n, symbols[b.right].n);
        // Skip a bigram if either symbol was merged away or grew since it was queued.
        if ln == 0 || rn == 0 || ln + rn != b.size {
            continue;
        }
        symbols[b.left].n += rn;
        symbols[b.right].n = 0;
        let after = symbols[b.right].next;
        symbols[b.left].next = after;
        if let Some(a) = after {
            symbols[a].prev = Some(b.left);
        }
        let prev = symbols[b.left].prev;
        try_add_bigram(&symbols, &mut queue, prev, Some(b.left));
        try_add_bigram(&symbols, &mut queue, Some(b.left), after);
    }

    // llama.cpp's `resegment` would first split a non-vocabulary symbol back along its
    // recorded merge (`rev_merge`). Every merge it records is itself a vocabulary entry, so
    // a symbol missing from the vocabulary is always a single character and that path can
    // never fire: such a symbol goes straight to byte fallback, as below.
    let mut i = Some(0);
    while let Some(idx) = i {
        let sym = symbols[idx];
        i = sym.next;
        let piece = &text[sym.start..sym.start + sym.n];
        match vocab.lookup(piece) {
            Some(id) => out.push(id),
            None => {
                for &b in piece.as_bytes() {
                    if let Some(id) = vocab.byte_token(b) {
                        out.push(id);
                    }
                }
            }
        }
    }
}
