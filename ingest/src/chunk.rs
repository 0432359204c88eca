//! Cutting a [`Document`] into chunks sized in the embedder's tokens.
//!
//! A document is first split into sections at headings (a chunk never spans a heading, except that a
//! heading with no text of its own stays with the section below it). A section is cut into units:
//! paragraphs; a paragraph over the limit into sentences; a sentence over the limit into lines, then
//! words, then (last resort) characters. Units are packed greedily; when a chunk is full, the cut goes
//! at the strongest boundary (paragraph > sentence > line > word > character) that still leaves the
//! chunk at least half full. The next chunk starts with about `overlap_tokens` from the end of the
//! previous one, beginning at a sentence start when one is near, else at a word start.
//!
//! Cost, in calls to the counter: each paragraph once (the pieces of an over-long one again, level by
//! level), each chunk once more to verify the sum of its units (token counts are nearly, not
//! exactly, additive), and each word of an overlap once: linear in the text, never per prefix.

use crate::document::{Document, Heading, HeadingPath};
use std::ops::Range;
use unicode_segmentation::UnicodeSegmentation;

/// Counts tokens the way the embedder will.
///
/// The root crate implements it with the model's tokenizer; tests use a whitespace word count.
/// [`chunk()`] calls it about once per paragraph plus once per chunk, not once per prefix.
pub trait TokenCounter {
    /// The number of tokens `text` encodes to (without special tokens).
    fn count(&self, text: &str) -> usize;
}

/// How [`chunk`] sizes chunks.
///
/// ```
/// let opts = rag_ingest::ChunkOptions { max_tokens: 384, ..Default::default() };
/// assert_eq!(opts.overlap_tokens, 32);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// The most tokens in one chunk. Default 256: small enough that a chunk is about one topic and
    /// that several retrieved chunks fit a 2,048-token prompt with room for the question and answer,
    /// large enough to hold a whole paragraph of context. Values below 1 count as 1.
    pub max_tokens: usize,
    /// About how many tokens a chunk repeats from the end of the previous one. Default 32 (one or
    /// two sentences), so that a sentence cut at a chunk boundary is still found whole in one chunk.
    /// Capped at half of `max_tokens`.
    pub overlap_tokens: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions {
            max_tokens: 256,
            overlap_tokens: 32,
        }
    }
}

/// A piece of a document's text, ready to embed and index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the document, from 0.
    pub index: usize,
    /// `doc.text[byte_range]`, exactly.
    pub text: String,
    /// Where the chunk lies in [`Document::text`]; starts are strictly increasing, and so are ends.
    pub byte_range: Range<usize>,
    /// The headings in force at the chunk start, outermost first.
    pub heading_path: Vec<String>,
    /// First and last 1-based page the chunk spans (PDFs only).
    pub pages: Option<(u32, u32)>,
    /// The counter's count for `text`; at most `max_tokens` unless a single character counts more.
    pub tokens: usize,
}

/// Boundary strength before a unit: where a cut is best placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Break {
    Char,
    Word,
    Line,
    Sentence,
    Paragraph,
}

#[derive(Debug, Clone, Copy)]
struct Unit {
    start: usize,
    end: usize,
    tokens: usize,
    /// The boundary before this unit.
    brk: Break,
}

/// Cuts `doc.text` into chunks of at most `opts.max_tokens` tokens as counted by `counter`.
///
/// Every non-whitespace character of the text is in at least one chunk; chunks start and end on
/// character boundaries and never start or end with whitespace.
pub fn chunk(doc: &Document, counter: &dyn TokenCounter, opts: &ChunkOptions) -> Vec<Chunk> {
    let max = opts.max_tokens.max(1);
    let overlap = opts.overlap_tokens.min(max / 2);
    let text = doc.text.as_str();
    let mut chunker = Chunker {
        text,
        counter,
        max,
        overlap,
        units: Vec::new(),
        ranges: Vec::new(),
    };
    for section in sections(text, &doc.headings) {
        chunker.section_units(section);
        chunker.pack();
    }

    let mut cursor = HeadingCursor::new(&doc.headings);
    chunker
        .ranges
        .into_iter()
        .enumerate()
        .map(|(index, (range, tokens))| Chunk {
            index,
            text: text[range.clone()].to_string(),
            heading_path: cursor.path_at(range.start),
            pages: doc
                .page_at(range.start)
                .zip(doc.page_at(range.end.saturating_sub(1))),
            byte_range: range,
            tokens,
        })
        .collect()
}

/// Byte ranges of the text between headings; a section holding only its heading line is merged
/// into the next one, so a heading is not left alone in a chunk.
fn sections(text: &str, headings: &[Heading]) -> Vec<Range<usize>> {
    let mut cuts: Vec<usize> = headings
        .iter()
        .map(|h| h.offset)
        .filter(|&o| o < text.len() && text.is_char_boundary(o))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let starts_heading = |pos: usize| cuts.binary_search(&pos).is_ok();
    let mut sections = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().filter(|&&c| c > 0) {
        let heading_only = starts_heading(start) && !text[start..cut].trim().contains('\n');
        if !heading_only {
            sections.push(start..cut);
            start = cut;
        }
    }
    sections.push(start..text.len());
    sections
}

struct Chunker<'a> {
    text: &'a str,
    counter: &'a dyn TokenCounter,
    max: usize,
    overlap: usize,
    units: Vec<Unit>,
    /// The chunks so far with their token counts.
    ranges: Vec<(Range<usize>, usize)>,
}

impl Chunker<'_> {
    fn count(&self, range: Range<usize>) -> usize {
        self.counter.count(&self.text[range])
    }

    /// Splits a section into units of at most `max` tokens each (bar single characters).
    fn section_units(&mut self, section: Range<usize>) {
        let text = self.text;
        let mut pos = section.start;
        for piece in text[section.clone()].split("\n\n") {
            let range = trimmed(text, pos..pos + piece.len());
            pos += piece.len() + 2;
            if !range.is_empty() {
                self.paragraph(range);
            }
        }
    }

    fn paragraph(&mut self, range: Range<usize>) {
        let tokens = self.count(range.clone());
        if tokens <= self.max {
            self.push(range, tokens, Break::Paragraph);
            return;
        }
        // Sentence bounds ignore line breaks: in PDF text a line is not a sentence. Replacing '\n'
        // by ' ' keeps byte offsets.
        let flat = self.text[range.clone()].replace('\n', " ");
        let mut first = Break::Paragraph;
        for (offset, sentence) in flat.split_sentence_bound_indices() {
            let r = trimmed(
                self.text,
                range.start + offset..range.start + offset + sentence.len(),
            );
            if r.is_empty() {
                continue;
            }
            self.sentence(r, first);
            first = Break::Sentence;
        }
    }

    fn sentence(&mut self, range: Range<usize>, brk: Break) {
        let tokens = self.count(range.clone());
        if tokens <= self.max {
            self.push(range, tokens, brk);
            return;
        }
        let mut brk = brk;
        for r in split_ranges(self.text, range, |c| c == '\n') {
            let tokens = self.count(r.clone());
            if tokens <= self.max {
                self.push(r, tokens, brk);
            } else {
                self.words(r, brk);
            }
            brk = brk.min(Break::Line);
        }
    }

    fn words(&mut self, range: Range<usize>, brk: Break) {
        let mut brk = brk;
        for r in split_ranges(self.text, range, char::is_whitespace) {
            let tokens = self.count(r.clone());
            if tokens <= self.max {
                self.push(r, tokens, brk);
            } else {
                self.chars(r, brk);
            }
            brk = brk.min(Break::Word);
        }
    }

    /// Splits a run without whitespace into the longest prefixes that fit. Each piece is found by
    /// galloping from the previous piece's length, then bisecting: for uniform text two counts per
    /// piece, at worst O(log n) counts over at most about twice the piece.
    fn chars(&mut self, range: Range<usize>, brk: Break) {
        let mut brk = brk;
        let mut start = range.start;
        let mut hint = 1; // characters in the previous piece
        while start < range.end {
            let mut prefixes = Prefixes::new(&self.text[start..range.end], start);
            // (index, tokens) of the probes that fit; index k = the first k + 1 characters.
            let mut fitting: Option<(usize, usize)> = None;
            let mut probe = |k: usize, prefixes: &mut Prefixes| -> Option<bool> {
                let end = prefixes.end(k)?;
                let tokens = self.count(start..end);
                let fits = tokens <= self.max;
                if fits && fitting.is_none_or(|(best, _)| k > best) {
                    fitting = Some((k, tokens));
                }
                Some(fits)
            };
            // `lo` fits (index 0 always goes in, fitting or not); `hi` does not, or is past the end.
            let mut lo = 0;
            let mut hi = None;
            let mut k = hint.max(2) - 1;
            let mut step = 1;
            while hi.is_none() {
                match probe(k, &mut prefixes) {
                    Some(true) => {
                        lo = k;
                        k = lo + step;
                        step *= 2;
                    }
                    Some(false) => hi = Some(k),
                    None => hi = Some(prefixes.len()),
                }
            }
            let mut hi = hi.unwrap_or(lo + 1);
            while hi > lo + 1 {
                let mid = lo + (hi - lo) / 2;
                if probe(mid, &mut prefixes) == Some(true) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let end = prefixes
                .end(lo)
                .expect("a non-empty run has a first character");
            let tokens = match fitting {
                Some((k, tokens)) if k == lo => tokens,
                _ => self.count(start..end),
            };
            self.push(start..end, tokens, brk);
            brk = Break::Char;
            hint = lo + 1;
            start = end;
        }
    }

    fn push(&mut self, range: Range<usize>, tokens: usize, brk: Break) {
        self.units.push(Unit {
            start: range.start,
            end: range.end,
            tokens,
            brk,
        });
    }

    /// Packs the section's units into chunks (and empties `units`).
    fn pack(&mut self) {
        let units = std::mem::take(&mut self.units);
        let mut i = 0;
        // Where the chunk starts and its estimated tokens when it begins with an overlap.
        let mut carry: Option<(usize, usize)> = None;
        while i < units.len() {
            let (mut start, carried) = carry.take().unwrap_or((units[i].start, 0));
            let mut sum = carried;
            let mut j = i;
            while j < units.len() && sum + units[j].tokens <= self.max {
                sum += units[j].tokens;
                j += 1;
            }
            let j = j.max(i + 1);
            let mut k = if j == units.len() {
                j
            } else {
                self.best_cut(&units, i, j, carried)
            };
            // Token counts are not exactly additive: verify, and shrink while over.
            let tokens = loop {
                let end = units[k - 1].end;
                let tokens = self.count(start..end);
                if tokens <= self.max || (k == i + 1 && start == units[i].start) {
                    break tokens;
                }
                if k == i + 1 {
                    start = units[i].start; // drop the overlap
                    continue;
                }
                let mut removed = 0;
                while k > i + 1 && removed < tokens - self.max {
                    k -= 1;
                    removed += units[k].tokens.max(1);
                }
            };
            let end = units[k - 1].end;
            self.ranges.push((start..end, tokens));
            i = k;
            if i < units.len() && self.overlap > 0 {
                let budget = self.overlap.min(self.max.saturating_sub(units[i].tokens));
                carry = self.overlap_start(start, end, budget);
            }
        }
    }

    /// The cut (unit index) for a chunk holding units `i..j` (unit `j` did not fit): the strongest
    /// boundary, stronger than the one before `j`, that leaves the chunk at least half full, the
    /// latest among equals; else `j`.
    fn best_cut(&self, units: &[Unit], i: usize, j: usize, carried: usize) -> usize {
        let mut best: Option<(Break, usize)> = None;
        let mut fill = carried;
        for cut in i + 1..j {
            fill += units[cut - 1].tokens;
            let brk = units[cut].brk;
            if 2 * fill >= self.max && brk > units[j].brk && best.is_none_or(|(b, _)| brk >= b) {
                best = Some((brk, cut));
            }
        }
        best.map_or(j, |(_, cut)| cut)
    }

    /// Where the next chunk starts so that it repeats about `budget` tokens of `start..end`: the
    /// earliest word start whose tail fits the budget, moved forward to a sentence start when one
    /// leaves at least half the budget. `None` when not even the last word fits.
    fn overlap_start(&self, start: usize, end: usize, budget: usize) -> Option<(usize, usize)> {
        if budget == 0 {
            return None;
        }
        let text = self.text;
        let mut tail = 0;
        let mut candidates = Vec::new(); // (word start, tail tokens), from the end backwards
        let mut word_end = end;
        let mut iter = text[start..end].char_indices().rev().peekable();
        while let Some((i, c)) = iter.next() {
            if c.is_whitespace() {
                word_end = start + i;
                continue;
            }
            let at_word_start = iter.peek().is_none_or(|&(_, p)| p.is_whitespace());
            if !at_word_start || start + i == start {
                continue;
            }
            let ws = start + i;
            let next = self.count(ws..word_end);
            if tail + next > budget {
                break;
            }
            tail += next;
            candidates.push((ws, tail));
        }
        let &(word_start, word_tail) = candidates.last()?;
        let sentence = candidates
            .iter()
            .rev()
            .find(|&&(ws, t)| 2 * t >= budget && is_sentence_start(text, ws));
        Some(sentence.copied().unwrap_or((word_start, word_tail)))
    }
}

/// Whether a word starting at `pos` begins a sentence: the text before it (skipping whitespace and
/// closing quotes or brackets) ends with sentence punctuation, or a blank line comes between.
fn is_sentence_start(text: &str, pos: usize) -> bool {
    let before = &text[..pos];
    let gap = before.len() - before.trim_end().len();
    if before[before.len() - gap..].contains("\n\n") {
        return true;
    }
    let last = before
        .trim_end()
        .trim_end_matches(['"', '\'', ')', ']', '»', '”', '’'])
        .chars()
        .next_back();
    last.is_none_or(|c| matches!(c, '.' | '!' | '?' | '…' | '。' | '！' | '？' | '؟' | '।'))
}

/// The ends of a text's character prefixes (absolute offsets), computed as far as asked.
struct Prefixes<'t> {
    chars: std::str::CharIndices<'t>,
    base: usize,
    ends: Vec<usize>,
    done: bool,
}

impl<'t> Prefixes<'t> {
    fn new(text: &'t str, base: usize) -> Self {
        Prefixes {
            chars: text.char_indices(),
            base,
            ends: Vec::new(),
            done: false,
        }
    }

    /// The end of the first `k + 1` characters, or `None` past the end.
    fn end(&mut self, k: usize) -> Option<usize> {
        while self.ends.len() <= k && !self.done {
            match self.chars.next() {
                Some((i, c)) => self.ends.push(self.base + i + c.len_utf8()),
                None => self.done = true,
            }
        }
        self.ends.get(k).copied()
    }

    /// The number of characters, once `end` has run past the end.
    fn len(&self) -> usize {
        self.ends.len()
    }
}

/// `range` without leading and trailing whitespace.
fn trimmed(text: &str, range: Range<usize>) -> Range<usize> {
    let s = &text[range.clone()];
    let start = range.start + (s.len() - s.trim_start().len());
    let end = range.end - (s.len() - s.trim_end().len());
    start..end.max(start)
}

/// The non-empty runs of `range` between characters matching `sep`, trimmed.
fn split_ranges(text: &str, range: Range<usize>, sep: impl Fn(char) -> bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut pos = range.start;
    for piece in text[range.clone()].split(&sep) {
        let r = trimmed(text, pos..pos + piece.len());
        if !r.is_empty() {
            out.push(r);
        }
        pos += piece.len();
        if pos < range.end {
            pos += text[pos..].chars().next().map_or(0, char::len_utf8);
        }
    }
    out
}

/// Heading paths for increasing offsets, in one pass over the headings.
struct HeadingCursor<'a> {
    headings: &'a [Heading],
    next: usize,
    path: HeadingPath<'a>,
}

impl<'a> HeadingCursor<'a> {
    fn new(headings: &'a [Heading]) -> Self {
        HeadingCursor {
            headings,
            next: 0,
            path: HeadingPath::default(),
        }
    }

    fn path_at(&mut self, offset: usize) -> Vec<String> {
        while let Some(h) = self.headings.get(self.next).filter(|h| h.offset <= offset) {
            self.path.push(h);
            self.next += 1;
        }
        self.path.titles()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::DocKind;
    use std::path::PathBuf;

    struct Words;
    impl TokenCounter for Words {
        fn count(&self, text: &str) -> usize {
            text.split_whitespace().count()
        }
    }

    fn doc(text: &str) -> Document {
        Document {
            path: PathBuf::from("t.txt"),
            kind: DocKind::Text,
            title: None,
            text: text.into(),
            headings: vec![],
            pages: vec![],
            content_hash: String::new(),
            warnings: vec![],
        }
    }

    fn opts(max_tokens: usize, overlap_tokens: usize) -> ChunkOptions {
        ChunkOptions {
            max_tokens,
            overlap_tokens,
        }
    }

    fn texts(chunks: &[Chunk]) -> Vec<&str> {
        chunks.iter().map(|c| c.text.as_str()).collect()
    }

    #[test]
    fn short_text_is_one_chunk() {
        let d = doc("One two three.\n\nFour five.");
        let c = chunk(&d, &Words, &ChunkOptions::default());
        assert_eq!(texts(&c), vec!["One two three.\n\nFour five."]);
        assert_eq!(c[0].tokens, 5);
        assert_eq!(c[0].byte_range, 0..d.text.len());
        assert_eq!(c[0].pages, None);
        assert!(chunk(&doc(""), &Words, &ChunkOptions::default()).is_empty());
    }

    #[test]
    fn cuts_at_paragraphs_before_sentences() {
        let d = doc("a b c. d e f.\n\ng h i. j k l.\n\nm n o.");
        let c = chunk(&d, &Words, &opts(12, 0));
        assert_eq!(texts(&c), vec!["a b c. d e f.\n\ng h i. j k l.", "m n o."]);
        // Greedy packing would put "h i j." with the first paragraph; the paragraph break wins.
        let d = doc("a b c d e f g.\n\nH i j. K l m. N o p. Q r s.");
        let c = chunk(&d, &Words, &opts(10, 0));
        assert_eq!(
            texts(&c),
            vec!["a b c d e f g.", "H i j. K l m. N o p.", "Q r s."]
        );
    }

    #[test]
    fn long_paragraph_cuts_at_sentences_with_overlap() {
        let d = doc(
            "One two three four. Five six seven eight. Nine ten eleven twelve. Thirteen fourteen.",
        );
        let c = chunk(&d, &Words, &opts(8, 4));
        assert_eq!(
            texts(&c),
            vec![
                "One two three four. Five six seven eight.",
                "Five six seven eight. Nine ten eleven twelve.",
                "Nine ten eleven twelve. Thirteen fourteen.",
            ]
        );
    }

    #[test]
    fn overlap_falls_back_to_word_starts() {
        let d = doc("a b c d e f g h i j k l m n o p");
        let c = chunk(&d, &Words, &opts(8, 3));
        assert_eq!(
            texts(&c),
            vec!["a b c d e f g h", "f g h i j k l m", "k l m n o p"]
        );
    }

    #[test]
    fn giant_word_is_split_by_characters() {
        struct Chars4;
        impl TokenCounter for Chars4 {
            fn count(&self, text: &str) -> usize {
                text.chars().count().div_ceil(4)
            }
        }
        let word = "é".repeat(100);
        let d = doc(&format!("start {word} end"));
        let c = chunk(&d, &Chars4, &opts(10, 0));
        assert!(c.iter().all(|c| c.tokens <= 10), "{c:?}");
        let joined: String = c.iter().map(|c| c.text.replace(' ', "")).collect();
        assert_eq!(joined, format!("start{word}end"));
    }

    #[test]
    fn headings_bound_chunks_and_give_paths() {
        let text =
            "Guide\n\nintro words here.\n\nInstall\n\nLinux\n\nrun the thing.\n\nUsage\n\nuse it.";
        let at = |s: &str| text.find(s).unwrap();
        let mut d = doc(text);
        d.headings = vec![
            Heading {
                offset: 0,
                level: 1,
                title: "Guide".into(),
            },
            Heading {
                offset: at("Install"),
                level: 2,
                title: "Install".into(),
            },
            Heading {
                offset: at("Linux"),
                level: 3,
                title: "Linux".into(),
            },
            Heading {
                offset: at("Usage"),
                level: 2,
                title: "Usage".into(),
            },
        ];
        let c = chunk(&d, &Words, &ChunkOptions::default());
        assert_eq!(
            texts(&c),
            vec![
                "Guide\n\nintro words here.",
                "Install\n\nLinux\n\nrun the thing.",
                "Usage\n\nuse it."
            ]
        );
        assert_eq!(c[0].heading_path, vec!["Guide"]);
        assert_eq!(c[1].heading_path, vec!["Guide", "Install"]);
        assert_eq!(c[2].heading_path, vec!["Guide", "Usage"]);
    }

    #[test]
    fn pages_are_reported() {
        let mut d = doc("page one text\n\npage two text");
        d.pages = vec![0, 15];
        let c = chunk(&d, &Words, &opts(3, 0));
        assert_eq!(
            c.iter().map(|c| c.pages).collect::<Vec<_>>(),
            vec![Some((1, 1)), Some((2, 2))]
        );
        let c = chunk(&d, &Words, &opts(6, 0));
        assert_eq!(c[0].pages, Some((1, 2)));
    }

    #[test]
    fn non_additive_counter_is_verified() {
        // Counts one extra token per line break: the sum of units underestimates.
        struct Lines;
        impl TokenCounter for Lines {
            fn count(&self, text: &str) -> usize {
                text.split_whitespace().count() + text.matches('\n').count()
            }
        }
        let d = doc(&"w w w\n".repeat(40));
        let c = chunk(&d, &Lines, &opts(10, 2));
        assert!(c.len() > 1);
        for ch in &c {
            assert!(ch.tokens <= 10, "{ch:?}");
            assert_eq!(ch.tokens, Lines.count(&ch.text));
        }
    }

    #[test]
    fn sentence_start_rule() {
        let t = "He said \"stop.\" Then left.\n\nnew para and more";
        assert!(is_sentence_start(t, t.find("Then").unwrap()));
        assert!(is_sentence_start(t, t.find("new").unwrap()));
        assert!(!is_sentence_start(t, t.find("left").unwrap()));
        assert!(is_sentence_start(t, 0));
    }
}
