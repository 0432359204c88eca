//! Grounded answers: the prompt that presents retrieved passages as numbered data, fitting them
//! into the model's context, reading the citations back out of the answer, and recognising the
//! model's own "not in the documents" reply.
//!
//! Everything here is plain text processing with a token counter passed in, so it is tested
//! without a model. The prompt texts live in `prompts/` (`rag-system.txt`, `rag-user.txt`,
//! `rag-passage.txt`, `closed-book-system.txt`, `not-found.txt`).
use serde::Serialize;

use rag_index::{Hit, Retriever};

/// The exact sentence the model is told to reply with when the passages do not hold the answer,
/// and the answer rag gives itself when retrieval finds nothing relevant.
pub const NOT_FOUND: &str = include_str!("../prompts/not-found.txt");

const SYSTEM: &str = include_str!("../prompts/rag-system.txt");
const USER: &str = include_str!("../prompts/rag-user.txt");
const PASSAGE: &str = include_str!("../prompts/rag-passage.txt");
const CLOSED_BOOK_SYSTEM: &str = include_str!("../prompts/closed-book-system.txt");

/// The system prompt of a grounded answer.
pub fn system_prompt() -> String {
    SYSTEM.trim_end().replace("{not_found}", NOT_FOUND)
}

/// The system prompt of a closed-book answer (`--no-retrieval`).
pub fn closed_book_system_prompt() -> String {
    CLOSED_BOOK_SYSTEM
        .trim_end()
        .replace("{not_found}", NOT_FOUND)
}

/// A passage as shown to the model, numbered from 1.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Passage {
    /// Its number in the prompt: the model cites it as `[n]`.
    pub n: usize,
    pub chunk_id: u64,
    /// The document's path, as stored in the index.
    pub path: String,
    /// First and last page (PDFs).
    pub pages: Option<(u32, u32)>,
    pub heading: Option<String>,
    /// Fused retrieval score (or the single retriever's score).
    pub score: f32,
    pub found_by: Retriever,
    /// The text given to the model (cut at a word boundary if `truncated`).
    pub text: String,
    /// Whether the text was cut to fit the context.
    pub truncated: bool,
}

impl Passage {
    /// `path (page 3)`, `path (pages 3-4)` or `path`.
    pub fn source(&self) -> String {
        source_label(&self.path, self.pages)
    }
}

/// `path (page 3)`, `path (pages 3-4)` or `path`.
pub fn source_label(path: &str, pages: Option<(u32, u32)>) -> String {
    match pages {
        Some((a, b)) if a == b => format!("{path} (page {a})"),
        Some((a, b)) => format!("{path} (pages {a}-{b})"),
        None => path.to_string(),
    }
}

/// The user message: numbered, delimited passages, then the question.
pub fn user_message(passages: &[Passage], question: &str) -> String {
    let rendered: String = passages.iter().map(render_passage).collect();
    USER.replace("{question}", question.trim())
        .replacen("{passages}", &rendered, 1)
}

fn render_passage(p: &Passage) -> String {
    // The model sees the file name (and page), not the whole path: enough to tell sources
    // apart, and fewer tokens. The text goes in last so that braces inside a document are never
    // taken as placeholders.
    let name = std::path::Path::new(&p.path)
        .file_name()
        .map_or_else(|| p.path.clone(), |n| n.to_string_lossy().into_owned());
    PASSAGE
        .replace("{n}", &p.n.to_string())
        .replace("{source}", &source_label(&name, p.pages))
        .replacen("{text}", p.text.trim(), 1)
}

/// Turn retrieval hits into numbered passages that fit in `budget` tokens of user message
/// (as counted by `count`), best first. A passage that does not fit whole is cut at a word
/// boundary when at least `min_tokens` of it fit, and dropped otherwise; the passages after it
/// are dropped. The message with the question never exceeds `budget`; if even the question
/// alone does not fit, the result is empty.
pub fn fit_passages(
    hits: &[Hit],
    question: &str,
    budget: usize,
    min_tokens: usize,
    count: &dyn Fn(&str) -> usize,
) -> Vec<Passage> {
    let mut out: Vec<Passage> = Vec::new();
    for hit in hits {
        let c = &hit.chunk;
        let mut p = Passage {
            n: out.len() + 1,
            chunk_id: c.chunk_id,
            path: c.path.clone(),
            pages: c.pages,
            heading: c.heading.clone(),
            score: hit.score,
            found_by: hit.found_by,
            text: c.text.trim().to_string(),
            truncated: false,
        };
        out.push(p.clone());
        if count(&user_message(&out, question)) <= budget {
            continue;
        }
        out.pop();
        // Cut to the longest word prefix that fits (binary search over word ends).
        let ends: Vec<usize> = word_ends(&p.text);
        let (mut lo, mut hi) = (0usize, ends.len());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            let mut trial = p.clone();
            trial.text = format!("{} ...", &p.text[..ends[mid - 1]]);
            out.push(trial);
            let fits = count(&user_message(&out, question)) <= budget;
            out.pop();
            if fits {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        if lo > 0 {
            let text = format!("{} ...", &p.text[..ends[lo - 1]]);
            if count(&text) >= min_tokens {
                p.text = text;
                p.truncated = true;
                out.push(p);
            }
        }
        break;
    }
    out
}

/// Byte offsets just past each word of `s`.
fn word_ends(s: &str) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut in_word = false;
    for (i, ch) in s.char_indices() {
        if ch.is_whitespace() {
            if in_word {
                ends.push(i);
            }
            in_word = false;
        } else {
            in_word = true;
        }
    }
    if in_word {
        ends.push(s.len());
    }
    ends
}

/// Checks citation markers in streamed text as it arrives: markers naming existing passages
/// (`[1]`, `[1, 3]`, `[Passage 2]`) are passed on in the form `[1]` / `[1, 3]`; markers naming
/// passages that do not exist are removed (with the space before them) and recorded; other
/// bracketed text passes unchanged. Text is held back only while a marker may be forming.
#[derive(Debug, Clone)]
pub struct CitationFilter {
    passages: usize,
    /// Whitespace seen but not yet emitted (dropped with a removed marker).
    space: String,
    /// An open `[...` not yet closed.
    bracket: Option<String>,
    cited: Vec<usize>,
    invalid: Vec<usize>,
}

/// The longest bracket that may still be a citation marker, in bytes.
const MAX_MARKER: usize = 40;

impl CitationFilter {
    /// A filter for an answer over `passages` passages (numbered 1..=passages).
    pub fn new(passages: usize) -> Self {
        Self {
            passages,
            space: String::new(),
            bracket: None,
            cited: Vec::new(),
            invalid: Vec::new(),
        }
    }

    /// Feed a piece of text; returns what can be shown now.
    pub fn push(&mut self, piece: &str) -> String {
        let mut out = String::new();
        for ch in piece.chars() {
            if let Some(b) = &mut self.bracket {
                if ch == '[' || ch == '\n' || b.len() >= MAX_MARKER {
                    // Not a marker after all.
                    let b = self.bracket.take().unwrap_or_default();
                    out.push_str(&std::mem::take(&mut self.space));
                    out.push_str(&b);
                } else {
                    b.push(ch);
                    if ch == ']' {
                        let b = self.bracket.take().unwrap_or_default();
                        self.close(&b, &mut out);
                    }
                    continue;
                }
            }
            if ch == '[' {
                self.bracket = Some("[".to_string());
            } else if ch.is_whitespace() {
                self.space.push(ch);
            } else {
                out.push_str(&std::mem::take(&mut self.space));
                out.push(ch);
            }
        }
        out
    }

    /// The end of the text: returns whatever was held back.
    pub fn finish(&mut self) -> String {
        let mut out = std::mem::take(&mut self.space);
        if let Some(b) = self.bracket.take() {
            out.push_str(&b);
        }
        out
    }

    fn close(&mut self, bracket: &str, out: &mut String) {
        let Some(numbers) = parse_marker(bracket) else {
            out.push_str(&std::mem::take(&mut self.space));
            out.push_str(bracket);
            return;
        };
        let (valid, invalid): (Vec<usize>, Vec<usize>) = numbers
            .into_iter()
            .partition(|&n| n >= 1 && n <= self.passages);
        for n in invalid {
            if !self.invalid.contains(&n) {
                self.invalid.push(n);
            }
        }
        if valid.is_empty() {
            self.space.clear();
            return;
        }
        let mut shown: Vec<usize> = Vec::new();
        for n in valid {
            if !shown.contains(&n) {
                shown.push(n);
            }
            if !self.cited.contains(&n) {
                self.cited.push(n);
            }
        }
        out.push_str(&std::mem::take(&mut self.space));
        let list: Vec<String> = shown.iter().map(usize::to_string).collect();
        out.push_str(&format!("[{}]", list.join(", ")));
    }

    /// Passage numbers cited so far, in order of first citation.
    pub fn cited(&self) -> &[usize] {
        &self.cited
    }

    /// Numbers cited that name no passage, in order of first appearance.
    pub fn invalid(&self) -> &[usize] {
        &self.invalid
    }
}

/// The passage numbers of a marker like `[1]`, `[1, 2]`, `[1; 2]`, `[1 and 2]`, `[Passage 3]`;
/// `None` if the bracket is not a citation marker.
fn parse_marker(bracket: &str) -> Option<Vec<usize>> {
    let inner = bracket.strip_prefix('[')?.strip_suffix(']')?.trim();
    let lower = inner.to_lowercase();
    let mut rest = lower.as_str();
    for word in [
        "passages",
        "passage",
        "sources",
        "source",
        "documents",
        "document",
    ] {
        if let Some(r) = rest.strip_prefix(word) {
            rest = r;
            break;
        }
    }
    let mut numbers = Vec::new();
    for part in rest
        .split([',', ';', ' '])
        .map(str::trim)
        .filter(|p| !p.is_empty() && *p != "and" && *p != "&")
    {
        numbers.push(
            part.strip_prefix('#')
                .unwrap_or(part)
                .parse::<usize>()
                .ok()?,
        );
    }
    (!numbers.is_empty()).then_some(numbers)
}

/// Citations checked over a whole text: (the text with invalid markers removed, cited numbers,
/// invalid numbers).
pub fn check_citations(text: &str, passages: usize) -> (String, Vec<usize>, Vec<usize>) {
    let mut f = CitationFilter::new(passages);
    let mut out = f.push(text);
    out.push_str(&f.finish());
    (out, f.cited.clone(), f.invalid.clone())
}

/// Whether an answer is the model saying the documents do not hold the answer: the fixed
/// sentence (in any case, with or without citations or punctuation), an answer that opens with
/// "I don't know" or is empty, or one that says something is "not mentioned in" / "not found
/// in" / "does not contain" within four words of "passage" or "document".
pub fn is_not_found(answer: &str) -> bool {
    let norm = normalise(answer);
    if norm.is_empty() {
        return true;
    }
    let sentence = normalise(NOT_FOUND);
    norm.contains(&sentence)
        || norm.contains("could not find this in the document")
        || norm.contains("could not find the answer in the document")
        || norm.starts_with("i don t know")
        || norm.starts_with("i do not know")
        || [
            "not mentioned in the",
            "not found in the",
            "do not contain",
            "does not contain",
        ]
        .iter()
        .any(|p| {
            norm.match_indices(p).any(|(at, _)| {
                let after = norm[at + p.len()..].split(' ').take(5);
                let before = norm[..at].split(' ').rev().take(4);
                after
                    .chain(before)
                    .any(|w| w.starts_with("passage") || w.starts_with("document"))
            })
        })
}

/// Lower-case words of `s`, joined by single spaces (punctuation and citations dropped).
fn normalise(s: &str) -> String {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && w.parse::<usize>().is_err())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rag_index::ChunkRecord;

    fn hit(id: u64, path: &str, text: &str, pages: Option<(u32, u32)>) -> Hit {
        Hit {
            chunk: ChunkRecord {
                chunk_id: id,
                path: path.to_string(),
                content_hash: "h".into(),
                title: None,
                heading: None,
                pages,
                byte_range: 0..text.len(),
                text: text.to_string(),
            },
            score: 1.0 / (60.0 + id as f32),
            bm25_rank: Some(id as usize + 1),
            dense_rank: None,
            bm25_score: Some(1.0),
            dense_score: None,
            found_by: Retriever::Bm25,
        }
    }

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn prompt_numbers_and_delimits_passages() {
        let hits = [
            hit(7, "/d/a.txt", "Alpha text.", None),
            hit(9, "/d/b.pdf", "Beta {question} text.", Some((3, 3))),
        ];
        let ps = fit_passages(&hits, "What?", 1000, 8, &words);
        assert_eq!(ps.len(), 2);
        let m = user_message(&ps, "What?");
        assert!(
            m.contains("[1] (source: a.txt)\n\"\"\"\nAlpha text.\n\"\"\""),
            "{m}"
        );
        assert!(m.contains("[2] (source: b.pdf (page 3))"), "{m}");
        // Braces in a document are text, not placeholders.
        assert!(m.contains("Beta {question} text."), "{m}");
        assert!(m.trim_end().ends_with("Question: What?"), "{m}");
        assert!(m.find("Alpha").unwrap() < m.find("Beta").unwrap());
        let s = system_prompt();
        assert!(s.contains(NOT_FOUND) && !s.contains("{not_found}"), "{s}");
        assert!(closed_book_system_prompt().contains(NOT_FOUND));
    }

    #[test]
    fn fitting_never_overflows_and_trims_at_words() {
        let long = (0..100)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let hits = [
            hit(1, "a", &long, None),
            hit(2, "b", &long, None),
            hit(3, "c", &long, None),
        ];
        let q = "a question";
        let overhead = words(&user_message(&[], q));
        let one = words(&user_message(
            &fit_passages(&hits[..1], q, 10_000, 8, &words),
            q,
        ));
        // Room for one and a half passages: the second is cut, the third dropped.
        let budget = one + (one - overhead) / 2;
        let ps = fit_passages(&hits, q, budget, 8, &words);
        assert_eq!(ps.len(), 2);
        assert!(!ps[0].truncated && ps[1].truncated);
        assert!(ps[1].text.ends_with(" ..."));
        assert!(long.starts_with(ps[1].text.trim_end_matches(" ...")));
        let used = words(&user_message(&ps, q));
        assert!(used <= budget, "{used} > {budget}");
        for b in 0..budget + 5 {
            let ps = fit_passages(&hits, q, b, 8, &words);
            if !ps.is_empty() {
                assert!(words(&user_message(&ps, q)) <= b);
            }
        }
        // Too little room for a useful piece: dropped rather than cut to a stub.
        let ps = fit_passages(&hits, q, overhead + 9, 8, &words);
        assert!(ps.is_empty(), "{ps:?}");
    }

    #[test]
    fn citations_are_checked() {
        let (t, cited, invalid) = check_citations("Paris [1]. Also Lyon [3][2] and [9].", 3);
        assert_eq!(t, "Paris [1]. Also Lyon [3][2] and.");
        assert_eq!(cited, [1, 3, 2]);
        assert_eq!(invalid, [9]);
        let (t, cited, invalid) = check_citations("See [Passage 2], [1, 7] and [2; 1].", 2);
        assert_eq!(t, "See [2], [1] and [2, 1].");
        assert_eq!(cited, [2, 1]);
        assert_eq!(invalid, [7]);
        // Not markers: left alone.
        let s = "an array a[i] and [see above] or [ ] and [0x1f";
        let (t, cited, invalid) = check_citations(s, 2);
        assert_eq!(t, s);
        assert!(cited.is_empty() && invalid.is_empty());
        // [0] names no passage.
        assert_eq!(check_citations("x [0] y", 2).0, "x y");
    }

    #[test]
    fn streaming_gives_the_same_text_as_a_whole() {
        let text = "The answer is 42 [1], not 41 [5]. See [Passage 2] and a[i] [x].\nDone [2]";
        let whole = check_citations(text, 2);
        for split in 1..6 {
            let mut f = CitationFilter::new(2);
            let mut out = String::new();
            let chars: Vec<char> = text.chars().collect();
            for piece in chars.chunks(split) {
                out += &f.push(&piece.iter().collect::<String>());
            }
            out += &f.finish();
            assert_eq!(out, whole.0, "pieces of {split}");
            assert_eq!(f.cited(), &whole.1[..]);
            assert_eq!(f.invalid(), &whole.2[..]);
        }
    }

    #[test]
    fn not_found_replies() {
        assert!(is_not_found(NOT_FOUND));
        assert!(is_not_found("i could NOT find this in the documents"));
        assert!(is_not_found("I could not find this in the documents [1]."));
        assert!(is_not_found("  "));
        assert!(is_not_found("I don't know."));
        assert!(!is_not_found("The bridge was built in 1887 [1]."));
        assert!(!is_not_found("Nobody knows who I could not find."));
        // Paraphrases that refer to the passages.
        assert!(is_not_found(
            "The creator of the show is not mentioned in the provided passage."
        ));
        assert!(is_not_found(
            "The passages do not contain this information."
        ));
        assert!(!is_not_found(
            "The soil does not contain much nitrogen [2]."
        ));
    }

    #[test]
    fn source_labels() {
        assert_eq!(source_label("a.pdf", Some((3, 3))), "a.pdf (page 3)");
        assert_eq!(source_label("a.pdf", Some((3, 4))), "a.pdf (pages 3-4)");
        assert_eq!(source_label("a.txt", None), "a.txt");
    }
}
