//! Properties of the chunker on generated documents, and its cost on big ones.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rag_ingest::{chunk, load_bytes, Chunk, ChunkOptions, DocKind, Document, TokenCounter};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One token per whitespace-separated word: additive, like most tokenizers nearly are.
struct Words;
impl TokenCounter for Words {
    fn count(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
}

/// One token per four characters, rounded up: not additive across pieces.
struct Chars4;
impl TokenCounter for Chars4 {
    fn count(&self, text: &str) -> usize {
        text.chars().count().div_ceil(4)
    }
}

/// Wraps a counter and records how much text it was asked to count.
struct Metered<'a> {
    inner: &'a dyn TokenCounter,
    calls: Cell<usize>,
    bytes: Cell<usize>,
}
impl TokenCounter for Metered<'_> {
    fn count(&self, text: &str) -> usize {
        self.calls.set(self.calls.get() + 1);
        self.bytes.set(self.bytes.get() + text.len());
        self.inner.count(text)
    }
}

fn raw_doc(text: String) -> Document {
    Document {
        path: PathBuf::from("generated.txt"),
        kind: DocKind::Text,
        title: None,
        text,
        headings: vec![],
        pages: vec![],
        content_hash: String::new(),
        warnings: vec![],
    }
}

/// The invariants every chunking must satisfy, whatever the text and counter.
fn check_invariants(
    doc: &Document,
    chunks: &[Chunk],
    counter: &dyn TokenCounter,
    opts: &ChunkOptions,
) {
    let text = &doc.text;
    let mut covered_to = 0;
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.index, i);
        let r = c.byte_range.clone();
        assert!(r.start < r.end && r.end <= text.len(), "{r:?}");
        assert!(
            text.is_char_boundary(r.start) && text.is_char_boundary(r.end),
            "{r:?}"
        );
        assert_eq!(c.text, text[r.clone()]);
        assert_eq!(
            c.text.trim(),
            c.text,
            "chunk {i} has surrounding whitespace"
        );
        assert_eq!(c.tokens, counter.count(&c.text));
        let single_char = c.text.chars().count() == 1;
        assert!(
            c.tokens <= opts.max_tokens.max(1) || single_char,
            "chunk {i}: {} tokens",
            c.tokens
        );
        assert_eq!(c.heading_path, doc.heading_path_at(r.start));
        if i > 0 {
            let prev = &chunks[i - 1].byte_range;
            assert!(
                prev.start < r.start && prev.end < r.end,
                "{prev:?} then {r:?}"
            );
        }
        // Anything between the text covered so far and this chunk must be whitespace.
        if r.start > covered_to {
            assert!(
                text[covered_to..r.start].trim().is_empty(),
                "uncovered {:?}",
                &text[covered_to..r.start]
            );
        }
        covered_to = covered_to.max(r.end);
    }
    assert!(
        text[covered_to..].trim().is_empty(),
        "uncovered tail {:?}",
        &text[covered_to..]
    );
}

fn word() -> impl Strategy<Value = String> {
    "[a-z]{1,8}"
}

/// A sentence: a capitalised first word, more words, a full stop.
fn sentence(max_words: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(word(), 1..=max_words).prop_map(|ws| {
        let mut s = ws.join(" ");
        s[..1].make_ascii_uppercase();
        s.push('.');
        s
    })
}

/// Markdown: paragraphs of sentences, some preceded by headings.
fn markdown(max_words: usize) -> impl Strategy<Value = String> {
    let paragraph = prop::collection::vec(sentence(max_words), 1..8).prop_map(|s| s.join(" "));
    let heading = prop::option::weighted(0.3, (1u8..4, prop::collection::vec(word(), 1..4)));
    prop::collection::vec((heading, paragraph), 1..10).prop_map(|blocks| {
        let mut md = String::new();
        for (h, p) in blocks {
            if let Some((level, words)) = h {
                md.push_str(&format!(
                    "{} {}\n\n",
                    "#".repeat(level as usize),
                    words.join(" ")
                ));
            }
            md.push_str(&p);
            md.push_str("\n\n");
        }
        md
    })
}

/// Text with no structure to speak of: words, odd spacing, blank lines, multibyte characters.
fn messy_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z]{1,30}",
        Just(" ".to_string()),
        Just("\n".to_string()),
        Just("\n\n\n".to_string()),
        Just("\t ".to_string()),
        Just(". ".to_string()),
        "[é漢字🙂ß]{1,40}",
        "\\PC{1,6}",
    ];
    prop::collection::vec(piece, 0..120).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn structured_text_chunks_at_sentence_ends(md in markdown(6), max in 6usize..60, overlap in 0usize..20) {
        let doc = match load_bytes(Path::new("p.md"), DocKind::Markdown, md.as_bytes()) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let opts = ChunkOptions { max_tokens: max, overlap_tokens: overlap };
        let chunks = chunk(&doc, &Words, &opts);
        check_invariants(&doc, &chunks, &Words, &opts);
        let heading_ends: Vec<usize> = doc.headings.iter().map(|h| h.offset + h.title.len()).collect();
        for (i, c) in chunks.iter().enumerate() {
            let r = &c.byte_range;
            // Every sentence fits, so a chunk ends at a sentence end (or right after a heading).
            prop_assert!(
                doc.text[..r.end].ends_with('.') || heading_ends.contains(&r.end),
                "chunk {} ends mid-sentence: {:?}", i, c.text
            );
            // And starts at a word start.
            prop_assert!(r.start == 0 || doc.text[..r.start].ends_with(char::is_whitespace));
            if i > 0 {
                let prev = &chunks[i - 1].byte_range;
                if r.start < prev.end {
                    let shared = Words.count(&doc.text[r.start..prev.end]);
                    prop_assert!(shared <= overlap.min(max / 2), "overlap of {} tokens", shared);
                }
            }
        }
    }

    #[test]
    fn messy_text_keeps_the_invariants(text in messy_text(), max in 1usize..40, overlap in 0usize..12) {
        let doc = raw_doc(text);
        let opts = ChunkOptions { max_tokens: max, overlap_tokens: overlap };
        for counter in [&Words as &dyn TokenCounter, &Chars4] {
            let chunks = chunk(&doc, counter, &opts);
            check_invariants(&doc, &chunks, counter, &opts);
        }
    }

    #[test]
    fn normalised_messy_text_keeps_the_invariants(text in messy_text(), max in 1usize..40) {
        let Ok(doc) = load_bytes(Path::new("m.txt"), DocKind::Text, text.as_bytes()) else {
            return Ok(());
        };
        let opts = ChunkOptions { max_tokens: max, overlap_tokens: 4 };
        let chunks = chunk(&doc, &Chars4, &opts);
        check_invariants(&doc, &chunks, &Chars4, &opts);
    }
}

/// Deterministic pseudo-random text: paragraphs of 1–9 sentences of 3–20 words.
fn big_text(bytes: usize, paragraphs: bool) -> String {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    const WORDS: &[&str] = &[
        "retrieval",
        "index",
        "chunk",
        "token",
        "the",
        "a",
        "of",
        "model",
        "document",
        "query",
        "answer",
        "context",
        "embedding",
        "vector",
        "search",
        "paragraph",
        "sentence",
        "word",
    ];
    let mut text = String::with_capacity(bytes + 200);
    while text.len() < bytes {
        for _ in 0..=next(9) {
            let n = 3 + next(18);
            for i in 0..n {
                let w = WORDS[next(WORDS.len() as u64) as usize];
                if i == 0 {
                    text.push_str(&w[..1].to_ascii_uppercase());
                    text.push_str(&w[1..]);
                } else {
                    text.push(' ');
                    text.push_str(w);
                }
            }
            text.push_str(". ");
        }
        text.pop();
        text.push_str(if paragraphs { "\n\n" } else { " " });
    }
    text.trim_end().to_string()
}

fn timed_chunking(
    name: &str,
    doc: &Document,
    counter: &dyn TokenCounter,
    opts: &ChunkOptions,
) -> Vec<Chunk> {
    let metered = Metered {
        inner: counter,
        calls: Cell::new(0),
        bytes: Cell::new(0),
    };
    let start = Instant::now();
    let chunks = chunk(doc, &metered, opts);
    let elapsed = start.elapsed();
    let len = doc.text.len();
    println!(
        "{name}: {:.1} MB in {} chunks, {:.2?}; counter called {} times on {:.1}x the text",
        len as f64 / 1e6,
        chunks.len(),
        elapsed,
        metered.calls.get(),
        metered.bytes.get() as f64 / len as f64
    );
    // Linear work: each byte is counted a bounded number of times, whatever the machine's speed.
    assert!(
        metered.bytes.get() <= 8 * len,
        "counted {} bytes for {len}",
        metered.bytes.get()
    );
    check_invariants(doc, &chunks, counter, opts);
    chunks
}

#[test]
fn five_megabytes_chunk_in_linear_work() {
    let opts = ChunkOptions::default();
    let doc = raw_doc(big_text(5_000_000, true));
    let chunks = timed_chunking("5 MB of paragraphs", &doc, &Words, &opts);
    assert!(chunks.len() > 1000);

    // One 5 MB paragraph: sentence units everywhere.
    let doc = raw_doc(big_text(5_000_000, false));
    timed_chunking("5 MB single paragraph", &doc, &Words, &opts);

    // 1 MB without any whitespace: split by characters.
    let doc = raw_doc("abcdefghij".repeat(100_000));
    let chunks = timed_chunking("1 MB single word", &doc, &Chars4, &opts);
    assert!(chunks.iter().all(|c| c.tokens <= 256));
}
