//! Reading an answer back: the citation markers it writes (checked while it streams), whether it
//! is the model's "not in the documents" reply, and how much of it its cited passages support.
use std::collections::HashSet;
use std::ops::Range;

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

/// Byte ranges of the sentences of `text`: a sentence ends after `.`, `!` or `?` (and any
/// closing quotes or brackets) followed by white space and a capital letter, digit or opening
/// quote, or at a blank line (a heading, a paragraph's end; a single line break is a wrapped
/// line). Leading and trailing white space is left out of each range.
pub(crate) fn sentences(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let mut end = None;
        if c == '\n' && chars.get(i + 1).is_some_and(|&(_, n)| n == '\n') {
            end = Some((at, at + 2));
        } else if matches!(c, '.' | '!' | '?') && !(c == '.' && abbreviation_before(text, at)) {
            let mut j = i + 1;
            while j < chars.len() && matches!(chars[j].1, '"' | '\'' | ')' | ']' | '\u{201d}') {
                j += 1;
            }
            let stop = chars.get(j).map_or(text.len(), |&(b, _)| b);
            // White space (a wrapped line included), then what opens the next sentence.
            let mut k = j;
            while k < chars.len() && chars[k].1.is_whitespace() {
                k += 1;
            }
            let next = chars.get(k).map(|&(_, c)| c);
            let opens = next.is_none_or(|n| {
                n.is_uppercase() || n.is_ascii_digit() || matches!(n, '"' | '\u{201c}' | '(')
            });
            if (k > j && opens) || next.is_none() {
                end = Some((stop, stop));
            }
        }
        if let Some((e, next_start)) = end {
            push_trimmed(text, start..e, &mut out);
            start = next_start;
        }
        i += 1;
    }
    push_trimmed(text, start..text.len(), &mut out);
    out
}

/// Whether the word ending just before byte `at` (a full stop) is an initial ("M.") or a
/// title or abbreviation that is followed by a capital ("Dr.", "St.").
fn abbreviation_before(text: &str, at: usize) -> bool {
    let word = text[..at]
        .rsplit(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("");
    let initial = word.chars().count() == 1 && word.chars().all(char::is_uppercase);
    initial
        || matches!(
            word,
            "Mr" | "Mrs"
                | "Ms"
                | "Dr"
                | "St"
                | "Jr"
                | "Sr"
                | "Mt"
                | "Fr"
                | "Gen"
                | "Col"
                | "Lt"
                | "Sgt"
                | "Capt"
                | "Prof"
                | "Rev"
                | "Gov"
                | "No"
                | "vs"
                | "Inc"
                | "Co"
                | "Ltd"
        )
}

fn push_trimmed(text: &str, r: Range<usize>, out: &mut Vec<Range<usize>>) {
    let s = &text[r.clone()];
    let lead = s.len() - s.trim_start().len();
    let trimmed = s.trim();
    if !trimmed.is_empty() {
        out.push(r.start + lead..r.start + lead + trimmed.len());
    }
}

/// The sentences of `text` that overlap `span` (a byte range), joined into one range; the
/// span itself if it lies in none.
pub(crate) fn sentence_around(text: &str, span: Range<usize>) -> Range<usize> {
    let hit: Vec<Range<usize>> = sentences(text)
        .into_iter()
        .filter(|s| s.start < span.end.max(span.start + 1) && span.start < s.end)
        .collect();
    match (hit.first(), hit.last()) {
        (Some(a), Some(b)) => a.start..b.end,
        _ => span,
    }
}

/// The part of an answer that cites passage `n`: its first sentence with a marker naming `n`
/// (markers as the filter writes them, `[1]` or `[1, 3]`), or the whole answer when none does
/// (a citation rag added on the model's behalf covers all of it).
pub(crate) fn claim_citing(text: &str, n: usize) -> &str {
    sentences(text)
        .into_iter()
        .map(|r| &text[r])
        .find(|s| markers(s).any(|(_, ns)| ns.contains(&n)))
        .unwrap_or(text)
}

/// The markers of `text`: (byte range, passage numbers).
fn markers(text: &str) -> impl Iterator<Item = (Range<usize>, Vec<usize>)> + '_ {
    text.match_indices('[').filter_map(move |(at, _)| {
        let end = at + text[at..].find(']')?;
        let ns = parse_marker(&text[at..=end])?;
        Some((at..end + 1, ns))
    })
}

/// `text` with passage `n` taken out of its markers (a marker left empty goes, with the space
/// before it).
pub(crate) fn remove_marker(text: &str, n: usize) -> String {
    let mut out = String::new();
    let mut last = 0;
    for (r, ns) in markers(text).collect::<Vec<_>>() {
        if !ns.contains(&n) {
            continue;
        }
        let rest: Vec<String> = ns
            .iter()
            .filter(|&&m| m != n)
            .map(|m| m.to_string())
            .collect();
        let mut head = &text[last..r.start];
        if rest.is_empty() {
            head = head.trim_end_matches(' ');
        }
        out.push_str(head);
        if !rest.is_empty() {
            out.push_str(&format!("[{}]", rest.join(", ")));
        }
        last = r.end;
    }
    out.push_str(&text[last..]);
    out
}

/// The sentence of `passage` (or two adjacent ones) that best supports `claim`: the one
/// holding the largest share of the claim's topic terms, if that share is at least
/// [`MIN_SUPPORT`]. A claim without topic terms is supported by the first sentence.
pub(crate) fn supporting_sentence(
    index: &dyn rag_index::Store,
    claim: &str,
    passage: &str,
) -> Option<Range<usize>> {
    let mut bare = String::new();
    let mut last = 0;
    for (r, _) in markers(claim) {
        bare.push_str(&claim[last..r.start]);
        last = r.end;
    }
    bare.push_str(&claim[last..]);
    let terms = crate::retrieve::topic_terms(index, &bare);
    let sents = sentences(passage);
    let mut candidates: Vec<Range<usize>> = sents.clone();
    candidates.extend(sents.windows(2).map(|w| w[0].start..w[1].end));
    let mut best: Option<(Range<usize>, f32)> = None;
    for r in candidates {
        let set: HashSet<String> = crate::retrieve::topic_terms(index, &passage[r.clone()])
            .into_iter()
            .collect();
        let s = support(&terms, &[&set]);
        // Ties go to the shorter (single) sentence, which comes first.
        if best.as_ref().is_none_or(|(_, b)| s > *b) {
            best = Some((r, s));
        }
    }
    best.filter(|(_, s)| *s >= MIN_SUPPORT).map(|(r, _)| r)
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

    #[test]
    fn sentences_split_at_ends() {
        let t = "The bridge opened in 1912. It was designed by M. Okonkwo! Was it? \"Yes.\" 3 times.\n\nNew line";
        let got: Vec<&str> = sentences(t).into_iter().map(|r| &t[r]).collect();
        assert_eq!(
            got,
            [
                "The bridge opened in 1912.",
                "It was designed by M. Okonkwo!",
                "Was it?",
                "\"Yes.\"",
                "3 times.",
                "New line"
            ]
        );
        // Lower case after a full stop (an abbreviation): the same sentence.
        assert_eq!(sentences("See e.g. the map. Done").len(), 2);
        // A wrapped line is not a sentence end; a blank line (after a heading) is.
        let w = "Bridge\n\nIt joins the town to the north bank of\nthe river. It is long.";
        let got: Vec<&str> = sentences(w).into_iter().map(|r| &w[r]).collect();
        assert_eq!(
            got,
            [
                "Bridge",
                "It joins the town to the north bank of\nthe river.",
                "It is long."
            ]
        );
        let at = t.find("Okonkwo").unwrap();
        assert_eq!(
            &t[sentence_around(t, at..at + 7)],
            "It was designed by M. Okonkwo!"
        );
        let at = t.find("1912").unwrap();
        assert_eq!(
            &t[sentence_around(t, at..t.find("designed").unwrap())],
            "The bridge opened in 1912. It was designed by M. Okonkwo!"
        );
    }

    #[test]
    fn markers_are_found_and_removed() {
        let t = "Paris is big [1]. Lyon too [1, 3]. Nice [2]";
        assert_eq!(claim_citing(t, 3), "Lyon too [1, 3].");
        assert_eq!(claim_citing(t, 2), "Nice [2]");
        assert_eq!(claim_citing(t, 4), t);
        assert_eq!(remove_marker(t, 1), "Paris is big. Lyon too [3]. Nice [2]");
        assert_eq!(
            remove_marker(t, 2),
            "Paris is big [1]. Lyon too [1, 3]. Nice"
        );
    }
}
