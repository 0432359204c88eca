//! Turning the glyphs pdf-extract reports for a page into text lines.
//!
//! [`PageText`] follows pdf-extract's `PlainTextOutput` (a space where glyphs leave a gap, a line
//! break where the baseline moves, two where it moves far), with three fixes:
//! - positions are measured along the text's own baseline, so rotated text gets its spaces and line
//!   breaks (`PlainTextOutput` computes a NaN font size for it and glues everything together);
//! - a line holding right-to-left script (Arabic, Hebrew, ...) is put in reading order: its glyphs
//!   are sorted by position and reordered visual-to-logical (PDFs draw them in visual order), and
//!   any change of baseline ends it (its runs may be drawn in any order);
//! - lines are otherwise kept in drawing order, exactly as pdf-extract gives them;
//! - a run drawn back to the left on the same baseline (a table's second header line) is a new
//!   word, not glued to the last one.
//!
//! The page comes out as [`Line`]s that keep, for level left-to-right text, each word's extent:
//! `pdf_table` reads tables from them.
//!
//! [`expand_next_line_operators`] rewrites the `'` and `"` text operators, which pdf-extract 0.12.1
//! ignores, into the equivalent `T*` + `Tj` sequences.

use pdf_extract::content::{Content, Operation};
use pdf_extract::{
    Document, MediaBox, Object, ObjectId, OutputDev, OutputError, Stream, Transform,
};

/// Collects one page's text; see the module docs.
#[derive(Debug, Default)]
pub(super) struct PageText {
    height: f64,
    /// Finished lines, in drawing order.
    lines: Vec<Line>,
    line: Vec<Glyph>,
    /// Line breaks before `line` (0, 1 or 2).
    line_breaks: usize,
    /// Whether `line` holds right-to-left script.
    line_rtl: bool,
    /// Whether some glyph of `line` is rotated, mirrored or drawn along another axis than x.
    line_tilted: bool,
    first_char: bool,
    last: Option<LastGlyph>,
}

#[derive(Debug)]
struct Glyph {
    /// Position along the baseline (for a space: midway through the gap it stands for).
    u: f64,
    /// Where the glyph ends along the baseline.
    end: f64,
    /// Position across the baseline (y, down the page, for level text).
    v: f64,
    size: f64,
    text: String,
}

#[derive(Debug)]
struct LastGlyph {
    origin: (f64, f64),
    end: (f64, f64),
}

impl PageText {
    /// The page's lines, in drawing order (see `pdf_table::render` for their text).
    pub(super) fn into_lines(mut self) -> Vec<Line> {
        self.flush_line();
        self.lines
    }

    fn flush_line(&mut self) {
        let breaks = std::mem::take(&mut self.line_breaks);
        let tilted = std::mem::take(&mut self.line_tilted);
        let rtl = std::mem::take(&mut self.line_rtl);
        if self.line.is_empty() {
            return;
        }
        let (text, words) = if rtl {
            self.line
                .sort_by(|a, b| a.u.partial_cmp(&b.u).unwrap_or(std::cmp::Ordering::Equal));
            let mut texts: Vec<String> = self.line.iter().map(|g| g.text.clone()).collect();
            visual_to_logical(&mut texts);
            (texts.concat(), None)
        } else {
            let text: String = self.line.iter().map(|g| g.text.as_str()).collect();
            (text, (!tilted).then(|| words(&self.line)))
        };
        self.line.clear();
        self.lines.push(Line {
            breaks,
            text,
            words,
        });
    }
}

/// A line of a page as drawn: its text, and for level left-to-right text its words' positions.
#[derive(Debug)]
pub(super) struct Line {
    /// Line breaks before it: 1, or 2 where the baseline moved far (0 for the page's first).
    pub(super) breaks: usize,
    pub(super) text: String,
    /// `None` for rotated or right-to-left lines.
    pub(super) words: Option<Vec<Word>>,
}

/// A run of glyphs without a gap, with its extent on the page (points, y down).
#[derive(Debug, Clone)]
pub(super) struct Word {
    pub(super) x0: f64,
    pub(super) x1: f64,
    /// Baseline.
    pub(super) y: f64,
    /// Font size.
    pub(super) size: f64,
    pub(super) text: String,
}

/// A level line's glyphs grouped into words at the gaps (the spaces [`PageText`] inserted, and
/// glyphs drawn back to the left), in drawing order.
fn words(glyphs: &[Glyph]) -> Vec<Word> {
    let mut out: Vec<Word> = Vec::new();
    let mut open = false;
    for g in glyphs {
        if g.text.trim().is_empty() {
            open = false;
            continue;
        }
        match out.last_mut() {
            Some(w) if open && g.u >= w.x1 - g.size * 0.5 => {
                w.x1 = w.x1.max(g.end);
                w.text.push_str(&g.text);
            }
            _ => out.push(Word {
                x0: g.u,
                x1: g.end,
                y: g.v,
                size: g.size,
                text: g.text.clone(),
            }),
        }
        open = true;
    }
    out
}

impl OutputDev for PageText {
    fn begin_page(
        &mut self,
        _page_num: u32,
        media_box: &MediaBox,
        _art_box: Option<(f64, f64, f64, f64)>,
    ) -> Result<(), OutputError> {
        self.height = media_box.ury - media_box.lly;
        Ok(())
    }

    fn end_page(&mut self) -> Result<(), OutputError> {
        self.flush_line();
        Ok(())
    }

    fn output_character(
        &mut self,
        trm: &Transform,
        width: f64,
        _spacing: f64,
        font_size: f64,
        char: &str,
    ) -> Result<(), OutputError> {
        // Device space with y pointing down, as PlainTextOutput uses.
        let (x, y) = (trm.m31, self.height - trm.m32);
        let (dx, dy) = (trm.m11, -trm.m12);
        let len = dx.hypot(dy);
        let (dx, dy) = if len > 0.0 && len.is_finite() {
            (dx / len, dy / len)
        } else {
            (1.0, 0.0)
        };
        let size = font_size * (trm.m11 * trm.m22 - trm.m12 * trm.m21).abs().sqrt();
        let along = |(px, py): (f64, f64)| px * dx + py * dy;
        let across = |(px, py): (f64, f64)| py * dx - px * dy;
        let u = along((x, y));
        let v = across((x, y));
        if self.first_char {
            if let Some(last) = &self.last {
                let dv = (v - across(last.origin)).abs();
                let end_u = along(last.end);
                // Right-to-left runs are often drawn in reading order, so the next line may well
                // start to the right of where the last run ended: any change of baseline breaks.
                let rtl = self.line_rtl || char.chars().any(is_rtl);
                let breaks = usize::from(dv > size * 1.5)
                    + usize::from((u < end_u || rtl) && dv > size * 0.5);
                if breaks > 0 {
                    self.flush_line();
                    self.line_breaks = breaks;
                } else if u > end_u + size * 0.1 || (!rtl && u < end_u - size * 0.5) {
                    // A gap, or a run drawn back to the left on the same baseline (a table's
                    // second header line after the end of its first): words apart either way.
                    self.line.push(Glyph {
                        u: (u + end_u) / 2.0,
                        end: (u + end_u) / 2.0,
                        v,
                        size,
                        text: " ".into(),
                    });
                }
            }
        }
        let advance = width * size;
        self.line.push(Glyph {
            u,
            end: u + advance,
            v,
            size,
            text: char.to_string(),
        });
        self.line_rtl |= char.chars().any(is_rtl);
        // Only level lines (drawn along +x, upright) can be read as table rows.
        self.line_tilted |= dy.abs() >= 1e-3 || dx <= 0.0 || trm.m22 * trm.m11 <= 0.0;
        self.first_char = false;
        self.last = Some(LastGlyph {
            origin: (x, y),
            end: (x + dx * advance, y + dy * advance),
        });
        Ok(())
    }

    fn begin_word(&mut self) -> Result<(), OutputError> {
        self.first_char = true;
        Ok(())
    }

    fn end_word(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
}

/// Strong right-to-left letters (Hebrew, Arabic, Syriac, Thaana, NKo, ... and their presentation
/// forms); Arabic-Indic digits are numbers, which read left to right.
fn is_rtl(c: char) -> bool {
    matches!(c,
        '\u{0590}'..='\u{065F}' | '\u{066A}'..='\u{06EF}' | '\u{06FA}'..='\u{08FF}'
        | '\u{FB1D}'..='\u{FDFF}' | '\u{FE70}'..='\u{FEFF}'
        | '\u{10800}'..='\u{10FFF}' | '\u{1E800}'..='\u{1EFFF}')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Ltr,
    Rtl,
    Neutral,
}

fn direction(text: &str) -> Dir {
    for c in text.chars() {
        if is_rtl(c) {
            return Dir::Rtl;
        }
        if c.is_alphanumeric() {
            return Dir::Ltr;
        }
    }
    Dir::Neutral
}

/// Reorders a line's glyph texts from visual (left-to-right on the page) to reading order. The
/// line reads right to left when it has at least as many right-to-left glyphs as left-to-right
/// ones: it is reversed, then its left-to-right runs are turned back. Otherwise only the
/// right-to-left runs are reversed. Brackets inside reversed right-to-left text are mirrored.
fn visual_to_logical(glyphs: &mut [String]) {
    let mut dirs: Vec<Dir> = glyphs.iter().map(|g| direction(g)).collect();
    let rtl = dirs.iter().filter(|&&d| d == Dir::Rtl).count();
    let ltr = dirs.iter().filter(|&&d| d == Dir::Ltr).count();
    let mut mirror = vec![false; glyphs.len()];
    if rtl >= ltr {
        glyphs.reverse();
        dirs.reverse();
        mirror.fill(true);
        for run in runs(&dirs, Dir::Ltr) {
            glyphs[run.clone()].reverse();
            mirror[run].fill(false);
        }
    } else {
        for run in runs(&dirs, Dir::Rtl) {
            glyphs[run.clone()].reverse();
            mirror[run].fill(true);
        }
    }
    for (g, m) in glyphs.iter_mut().zip(mirror) {
        if m {
            *g = g.chars().map(mirrored).collect();
        }
    }
}

/// Maximal ranges that start and end with `dir` and hold nothing of the opposite direction.
fn runs(dirs: &[Dir], dir: Dir) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < dirs.len() {
        if dirs[i] != dir {
            i += 1;
            continue;
        }
        let start = i;
        let mut last = i;
        while i < dirs.len() && (dirs[i] == dir || dirs[i] == Dir::Neutral) {
            if dirs[i] == dir {
                last = i;
            }
            i += 1;
        }
        out.push(start..last + 1);
        i = last + 1;
    }
    out
}

fn mirrored(c: char) -> char {
    match c {
        '(' => ')',
        ')' => '(',
        '[' => ']',
        ']' => '[',
        '{' => '}',
        '}' => '{',
        '<' => '>',
        '>' => '<',
        '«' => '»',
        '»' => '«',
        c => c,
    }
}

/// Rewrites a page's `'` and `"` operators (next line, then show text) as `T*` + `Tj` (with `Tw` and
/// `Tc` for `"`), which pdf-extract understands, when the page uses them. Returns whether it did.
pub(super) fn expand_next_line_operators(doc: &mut Document, page: ObjectId) -> bool {
    let Ok(bytes) = doc.get_page_content(page) else {
        return false;
    };
    if !may_use_quote_operators(&bytes) {
        return false;
    }
    let Ok(content) = Content::decode(&bytes) else {
        return false;
    };
    if !content
        .operations
        .iter()
        .any(|op| op.operator == "'" || op.operator == "\"")
    {
        return false;
    }
    let mut operations = Vec::with_capacity(content.operations.len() + 8);
    for op in content.operations {
        match (op.operator.as_str(), op.operands.as_slice()) {
            ("'", [text]) => {
                operations.push(Operation::new("T*", vec![]));
                operations.push(Operation::new("Tj", vec![text.clone()]));
            }
            ("\"", [word_spacing, char_spacing, text]) => {
                operations.push(Operation::new("Tw", vec![word_spacing.clone()]));
                operations.push(Operation::new("Tc", vec![char_spacing.clone()]));
                operations.push(Operation::new("T*", vec![]));
                operations.push(Operation::new("Tj", vec![text.clone()]));
            }
            _ => operations.push(op),
        }
    }
    let Ok(encoded) = (Content { operations }).encode() else {
        return false;
    };
    let stream = doc.add_object(Stream::new(Default::default(), encoded));
    match doc.get_object_mut(page).and_then(Object::as_dict_mut) {
        Ok(dict) => {
            dict.set("Contents", Object::Reference(stream));
            true
        }
        Err(_) => false,
    }
}

/// Whether the content may hold a `'` or `"` operator: one whose previous non-blank byte closes a
/// string. A cheap filter before decoding the content.
fn may_use_quote_operators(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| {
        (b == b'\'' || b == b'"')
            && bytes[..i]
                .iter()
                .rev()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|&p| p == b')' || p == b'>')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logical(visual: &str) -> String {
        let mut glyphs: Vec<String> = visual.chars().map(String::from).collect();
        visual_to_logical(&mut glyphs);
        glyphs.concat()
    }

    #[test]
    fn right_to_left_lines_read_in_logical_order() {
        // "שלום עולם world 42" as drawn, left to right, on the page (a right-to-left line).
        assert_eq!(logical("world 42 םלוע םולש"), "שלום עולם world 42");
        // An LTR line with one Hebrew word keeps its order; only the word turns.
        assert_eq!(logical("see םולש here now"), "see שלום here now");
        assert_eq!(logical("(ב) א"), "א (ב)");
    }

    #[test]
    fn quote_operator_filter() {
        assert!(may_use_quote_operators(b"(Hello)'\n"));
        assert!(may_use_quote_operators(b"1 0 (Hi) \""));
        assert!(!may_use_quote_operators(b"(aren't) Tj"));
    }
}
