//! The prompt of a grounded answer: retrieved passages numbered and fenced as data, fitted into
//! the model's context, then the question. Plain text processing with a token counter passed in,
//! so it is tested without a model. The texts live in `prompts/` (`rag-system.txt`,
//! `rag-user.txt`, `rag-passage.txt`, `closed-book-system.txt`, `not-found.txt`).
use serde::Serialize;

use rag_index::{Hit, Retriever};

/// The exact sentence the model is told to reply with when the passages do not hold the answer,
/// and the answer rag gives itself when retrieval finds nothing relevant.
///
/// ```
/// assert_eq!(rag::NOT_FOUND, "I could not find this in the documents.");
/// ```
pub const NOT_FOUND: &str = include_str!("../prompts/not-found.txt");

const SYSTEM: &str = include_str!("../prompts/rag-system.txt");
const USER: &str = include_str!("../prompts/rag-user.txt");
const PASSAGE: &str = include_str!("../prompts/rag-passage.txt");
const CLOSED_BOOK_SYSTEM: &str = include_str!("../prompts/closed-book-system.txt");
const QUOTE_SYSTEM: &str = include_str!("../prompts/rag-quote-system.txt");

/// The system prompt of a grounded answer.
pub(crate) fn system_prompt() -> String {
    SYSTEM.trim_end().replace("{not_found}", NOT_FOUND)
}

/// The system prompt of a quoted answer (the model may only copy a span of the passages).
pub(crate) fn quote_system_prompt() -> String {
    QUOTE_SYSTEM.trim_end().replace("{not_found}", NOT_FOUND)
}

/// The system prompt of a closed-book answer (no retrieval).
pub(crate) fn closed_book_system_prompt() -> String {
    CLOSED_BOOK_SYSTEM
        .trim_end()
        .replace("{not_found}", NOT_FOUND)
}

/// A passage as shown to the model, numbered from 1: what [`crate::Answer::passages`] and
/// [`crate::Search::passages`] hold.
///
/// ```no_run
/// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
/// for p in rag.search("Who designed the bridge?")?.passages {
///     println!("[{}] {} (score {:.4}{})", p.n, p.source(), p.score, if p.truncated { ", cut" } else { "" });
/// }
/// # Ok::<(), rag::Error>(())
/// ```
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
    /// Rank (1-based) in the BM25 list, if BM25 found it.
    pub bm25_rank: Option<usize>,
    /// Rank (1-based) in the dense list, if the vector search found it.
    pub dense_rank: Option<usize>,
    pub bm25_score: Option<f32>,
    /// Cosine similarity to the query, if the vector search found it.
    pub dense_score: Option<f32>,
    /// The text given to the model (cut at a word boundary if `truncated`).
    pub text: String,
    /// Whether the text was cut to fit the context.
    pub truncated: bool,
}

impl Passage {
    /// `path (page 3)`, `path (pages 3-4)` or `path` (see [`source_label`]).
    pub fn source(&self) -> String {
        source_label(&self.path, self.pages)
    }
}

/// A rendered prompt and the passages in it.
pub(crate) struct Prompt {
    pub passages: Vec<Passage>,
    pub text: String,
    pub ids: Vec<u32>,
}

/// `path (page 3)`, `path (pages 3-4)` or `path`; a presentation's pages are its slides.
///
/// ```
/// assert_eq!(rag::source_label("a.pdf", Some((3, 4))), "a.pdf (pages 3-4)");
/// assert_eq!(rag::source_label("deck.pptx", Some((2, 2))), "deck.pptx (slide 2)");
/// assert_eq!(rag::source_label("a.txt", None), "a.txt");
/// ```
pub fn source_label(path: &str, pages: Option<(u32, u32)>) -> String {
    let slides = std::path::Path::new(path)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("pptx"));
    let (one, many) = if slides {
        ("slide", "slides")
    } else {
        ("page", "pages")
    };
    match pages {
        Some((a, b)) if a == b => format!("{path} ({one} {a})"),
        Some((a, b)) => format!("{path} ({many} {a}-{b})"),
        None => path.to_string(),
    }
}

/// The user message: numbered, delimited passages, then the question.
pub(crate) fn user_message(passages: &[Passage], question: &str) -> String {
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
pub(crate) fn fit_passages(
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
            bm25_rank: hit.bm25_rank,
            dense_rank: hit.dense_rank,
            bm25_score: hit.bm25_score,
            dense_score: hit.dense_score,
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
                modified: None,
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
    fn source_labels() {
        assert_eq!(source_label("a.pdf", Some((3, 3))), "a.pdf (page 3)");
        assert_eq!(source_label("a.pdf", Some((3, 4))), "a.pdf (pages 3-4)");
        assert_eq!(source_label("a.txt", None), "a.txt");
    }
}
