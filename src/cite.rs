//! Reading an answer back: the citation markers it writes (checked while it streams), whether it
//! is the model's "not in the documents" reply, and how much of it its cited passages support.
use std::collections::HashSet;

use crate::prompt::NOT_FOUND;

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

/// Whether an answer is the model saying the documents do not hold the answer: the fixed
/// sentence (in any case, with or without citations or punctuation), an answer that opens with
/// "I don't know" or is empty, or one that says something is "not mentioned in" / "not found
/// in" / "does not contain" within four words of "passage" or "document".
pub(crate) fn is_not_found(answer: &str) -> bool {
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

/// A passage must hold at least this share of an uncited answer's topic terms for rag to cite
/// it on the model's behalf.
pub const MIN_SUPPORT: f32 = 0.5;

/// The share of `terms` (distinct) found in any of `passages`; 1.0 for no terms.
pub(crate) fn support(terms: &[String], passages: &[&HashSet<String>]) -> f32 {
    let distinct: HashSet<&String> = terms.iter().collect();
    if distinct.is_empty() {
        return 1.0;
    }
    let found = distinct
        .iter()
        .filter(|t| passages.iter().any(|p| p.contains(**t)))
        .count();
    found as f32 / distinct.len() as f32
}

/// The passage (0-based) to cite for an answer that cites nothing: the one holding the largest
/// share of the answer's topic terms, the earlier on ties, if that share is at least
/// [`MIN_SUPPORT`].
pub(crate) fn best_supporting(
    answer_terms: &[String],
    passages: &[HashSet<String>],
) -> Option<usize> {
    (0..passages.len())
        .map(|i| (i, support(answer_terms, &[&passages[i]])))
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
        .filter(|&(_, s)| s >= MIN_SUPPORT)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Citations checked over a whole text: (the text with invalid markers removed, cited
    /// numbers, invalid numbers).
    fn check_citations(text: &str, passages: usize) -> (String, Vec<usize>, Vec<usize>) {
        let mut f = CitationFilter::new(passages);
        let mut out = f.push(text);
        out.push_str(&f.finish());
        (out, f.cited.clone(), f.invalid.clone())
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
    fn support_counts_distinct_terms() {
        let t = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let p1: HashSet<String> = ["bridg", "1912", "open"].map(String::from).into();
        let p2: HashSet<String> = ["okonkwo"].map(String::from).into();
        let terms = t(&["bridg", "open", "open", "1912", "okonkwo"]);
        assert_eq!(support(&terms, &[&p1]), 0.75);
        assert_eq!(support(&terms, &[&p1, &p2]), 1.0);
        assert_eq!(support(&terms, &[]), 0.0);
        assert_eq!(support(&[], &[&p1]), 1.0);
        // On behalf of the model: the best-supporting passage, if it holds half the terms.
        assert_eq!(best_supporting(&terms, &[p2.clone(), p1.clone()]), Some(1));
        assert_eq!(best_supporting(&terms, &[p2]), None);
    }
}
