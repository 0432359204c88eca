//! Text normalisation, the same for every file kind, and [`TextBuilder`], which assembles a
//! document's text from blocks while recording heading and page offsets into the final text.
//! Loaders decide what the blocks are; they never normalise by themselves.

use crate::document::Heading;
use unicode_normalization::UnicodeNormalization;

/// Normalises text for indexing:
/// - `\r\n` and lone `\r` become `\n`; U+2028/U+2029 become `\n`;
/// - soft hyphens (U+00AD), zero-width characters (U+200B–U+200D, U+2060) and byte-order marks are removed;
/// - tabs, no-break and other Unicode spaces and stray control characters become spaces;
/// - Unicode NFC; presentation forms (Latin ligatures such as `ﬁ`, Arabic and Hebrew presentation
///   forms, U+FB00–U+FDFF and U+FE70–U+FEFE), common in PDF text, get their compatibility decomposition
///   (as NFKC would) so that they match what people type;
/// - runs of spaces become one space, and lines are trimmed at both ends;
/// - a word hyphenated across a line break is rejoined when a lowercase letter, `-`, a line break and
///   a lowercase letter meet (`"infor-\nmation"` → `"information"`; this also joins `"well-\nknown"`);
/// - three or more line breaks become two (paragraph breaks are kept), and the text is trimmed.
pub fn normalize(input: &str) -> String {
    let unified;
    let input = if input.contains('\r') {
        unified = input.replace("\r\n", "\n");
        unified.as_str()
    } else {
        input
    };
    let mut expanded = String::with_capacity(input.len());
    for c in input.chars().filter_map(map_char) {
        if is_presentation_form(c) {
            unicode_normalization::char::decompose_compatible(c, |d| expanded.push(d));
        } else {
            expanded.push(c);
        }
    }
    let cleaned: String = expanded.nfc().collect();

    let mut out = String::with_capacity(cleaned.len());
    let mut blank_lines = 0usize;
    let mut line = String::new();
    for raw in cleaned.split('\n') {
        line.clear();
        for word in raw.split_whitespace() {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if line.is_empty() {
            blank_lines += 1;
            continue;
        }
        if !out.is_empty() {
            if blank_lines > 0 {
                out.push_str("\n\n");
            } else if ends_with_hyphenated_lowercase(&out) && starts_lowercase(&line) {
                out.pop(); // the hyphen: the word continues on this line
            } else {
                out.push('\n');
            }
        }
        out.push_str(&line);
        blank_lines = 0;
    }
    out
}

/// Per-character cleanup before NFC: `None` drops the character.
fn map_char(c: char) -> Option<char> {
    match c {
        '\n' => Some('\n'),
        '\r' | '\u{2028}' | '\u{2029}' => Some('\n'),
        '\u{00AD}' | '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' => None,
        c if c.is_whitespace() || c.is_control() => Some(' '),
        c => Some(c),
    }
}

fn is_presentation_form(c: char) -> bool {
    matches!(c, '\u{FB00}'..='\u{FDFF}' | '\u{FE70}'..='\u{FEFE}')
}

fn ends_with_hyphenated_lowercase(s: &str) -> bool {
    let mut rev = s.chars().rev();
    rev.next() == Some('-') && rev.next().is_some_and(char::is_lowercase)
}

fn starts_lowercase(s: &str) -> bool {
    s.chars().next().is_some_and(char::is_lowercase)
}

/// Builds a document's text from blocks, each normalised on its own and separated by a blank line,
/// recording where headings and pages start in the final text.
#[derive(Debug, Default)]
pub(crate) struct TextBuilder {
    text: String,
    headings: Vec<Heading>,
    pages: Vec<usize>,
    /// Pages started whose first text has not been seen yet (their start is the next block's).
    pending_pages: usize,
}

impl TextBuilder {
    /// Appends a block of text; returns false when it normalised to nothing.
    pub(crate) fn push_block(&mut self, raw: &str) -> bool {
        let block = normalize(raw);
        if block.is_empty() {
            return false;
        }
        self.open_block();
        self.text.push_str(&block);
        true
    }

    /// Separates the next block from the text so far and starts the pages waiting for it there;
    /// returns its offset.
    fn open_block(&mut self) -> usize {
        if !self.text.is_empty() {
            self.text.push_str("\n\n");
        }
        let start = self.text.len();
        for _ in 0..std::mem::take(&mut self.pending_pages) {
            self.pages.push(start);
        }
        start
    }

    /// Appends a heading as its own block (title on one line) and records it; returns its title.
    pub(crate) fn push_heading(&mut self, level: u8, raw: &str) -> Option<String> {
        let title = normalize(raw).replace('\n', " ");
        if !self.push_block(&title) {
            return None;
        }
        let offset = self.text.len() - title.len();
        self.headings.push(Heading {
            offset,
            level: level.clamp(1, 6),
            title: title.clone(),
        });
        Some(title)
    }

    /// Marks the start of the next page: it begins with the next non-empty block.
    pub(crate) fn start_page(&mut self) {
        if self.text.is_empty() && self.pages.is_empty() && self.pending_pages == 0 {
            self.pages.push(0);
        } else {
            self.pending_pages += 1;
        }
    }

    /// Appends everything another builder holds (text, headings, pages) after this one's text.
    pub(crate) fn append(&mut self, other: TextBuilder) {
        let (text, headings, pages) = other.finish();
        if text.is_empty() {
            return;
        }
        let start = self.open_block();
        self.text.push_str(&text);
        self.headings.extend(headings.into_iter().map(|h| Heading {
            offset: h.offset + start,
            ..h
        }));
        self.pages.extend(pages.into_iter().map(|p| p + start));
    }

    /// Whether no text has been appended.
    pub(crate) fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The text, headings (sorted by offset) and page starts.
    pub(crate) fn finish(mut self) -> (String, Vec<Heading>, Vec<usize>) {
        let end = self.text.len();
        for _ in 0..self.pending_pages {
            self.pages.push(end);
        }
        (self.text, self.headings, self.pages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_endings_spaces_and_blank_lines() {
        assert_eq!(
            normalize("  a \t b  \r\n\r\n\r\n\r\nc\rd\n\n\n\ne  "),
            "a b\n\nc\nd\n\ne"
        );
        assert_eq!(normalize("x\n \t \ny"), "x\n\ny");
        assert_eq!(normalize(" \n\t\n "), "");
    }

    #[test]
    fn nfc_soft_hyphens_zero_width_and_odd_spaces() {
        assert_eq!(normalize("Cafe\u{301}"), "Caf\u{e9}");
        assert_eq!(normalize("co\u{AD}operate"), "cooperate");
        assert_eq!(normalize("\u{FEFF}zero\u{200B}width"), "zerowidth");
        assert_eq!(
            normalize("no\u{A0}break\u{3000}ideographic"),
            "no break ideographic"
        );
        assert_eq!(normalize("bell\u{7}char"), "bell char");
        assert_eq!(normalize("line\u{2028}sep"), "line\nsep");
        assert_eq!(normalize("\u{FB01}nd \u{FB02}ow"), "find flow");
        assert_eq!(normalize("\u{FEFB}"), "\u{644}\u{627}"); // lam-alef ligature
        assert_eq!(normalize("\u{FF21}"), "\u{FF21}"); // fullwidth forms stay
    }

    #[test]
    fn dehyphenation_joins_lowercase_only() {
        assert_eq!(normalize("infor-\nmation"), "information");
        assert_eq!(normalize("infor- \n  mation here"), "information here");
        assert_eq!(normalize("Jean-\nPaul"), "Jean-\nPaul");
        assert_eq!(normalize("2019-\n2020"), "2019-\n2020");
        assert_eq!(normalize("end -\nnext"), "end -\nnext");
        assert_eq!(normalize("para-\n\nnext"), "para-\n\nnext");
    }

    #[test]
    fn builder_records_heading_and_page_offsets() {
        let mut b = TextBuilder::default();
        b.start_page();
        b.push_heading(1, "  Intro \n x ");
        b.push_block("body  text\n");
        b.start_page(); // page 2 is empty
        b.start_page();
        assert!(!b.push_block(" \n "));
        b.push_block("page three");
        b.start_page(); // trailing empty page
        let (text, headings, pages) = b.finish();
        assert_eq!(text, "Intro x\n\nbody text\n\npage three");
        assert_eq!(headings.len(), 1);
        assert_eq!(
            &text[headings[0].offset..][..headings[0].title.len()],
            "Intro x"
        );
        let p3 = text.find("page three").unwrap();
        assert_eq!(pages, vec![0, p3, p3, text.len()]);
    }

    #[test]
    fn append_shifts_headings_and_pages() {
        let mut a = TextBuilder::default();
        a.push_block("first");
        a.start_page(); // pending: the appended text starts it
        let mut b = TextBuilder::default();
        b.push_heading(2, "Two");
        b.push_block("body");
        a.append(b);
        a.append(TextBuilder::default()); // nothing
        let (text, headings, pages) = a.finish();
        assert_eq!(text, "first\n\nTwo\n\nbody");
        assert_eq!(headings[0].offset, text.find("Two").unwrap());
        assert_eq!(pages, vec![text.find("Two").unwrap()]);
    }
}
