//! Word documents (.docx, Office Open XML): the body's paragraphs in order, headings from the
//! paragraph styles (`heading 1`..`heading 9`, `Title`, or an outline level), tables as rows that
//! keep their column labels, and page starts where Word recorded them (explicit page breaks and
//! the breaks of its last layout, `w:lastRenderedPageBreak`), so citations can name a page.
//! Deleted text of tracked changes, field codes and the fallback copy of text boxes are left out;
//! headers, footers, footnotes and comments are not read.

use std::collections::HashMap;

use super::parse::{Failure, Parsed};
use super::zipped::{attr, is, render_table, Archive, Flow, Row, Xml, MAX_TEXT_BYTES};
use crate::normalize::TextBuilder;

const BODY: &str = "word/document.xml";

/// A piece of the body, in order.
enum Part {
    Paragraph { text: String, level: Option<u8> },
    Table(String),
    PageBreak,
}

pub(super) fn parse(bytes: &[u8], warnings: &mut Vec<String>) -> Result<Parsed, Failure> {
    let mut archive = Archive::open(bytes, "a Word document (.docx)")?;
    if !archive.has(BODY) {
        return Err(format!(
            "not a Word document: the archive has no {BODY} (is it another kind of zip file \
             under a .docx name?)"
        )
        .into());
    }
    let styles = heading_styles(&mut archive);
    let mut body = Body::new(&styles);
    if let Err(e) = archive.walk(BODY, |ev| body.event(ev)) {
        if body.parts.is_empty() {
            return Err(e.into());
        }
        warnings.push(format!("{e}; the text up to there was kept"));
    }
    if body.full {
        warnings.push(format!(
            "text cut at {} MiB, the most kept from one document",
            MAX_TEXT_BYTES >> 20
        ));
    }
    let paged = body.parts.iter().any(|p| matches!(p, Part::PageBreak));
    let mut b = TextBuilder::default();
    if paged {
        b.start_page();
    }
    let mut first_h1 = None;
    for part in body.parts {
        match part {
            Part::Paragraph {
                text,
                level: Some(level),
            } => {
                let pushed = b.push_heading(level, &text);
                if level == 1 && first_h1.is_none() {
                    first_h1 = pushed;
                }
            }
            Part::Paragraph { text, level: None } | Part::Table(text) => {
                b.push_block(&text);
            }
            Part::PageBreak => b.start_page(),
        }
    }
    Ok(archive.finish(b, first_h1, warnings))
}

/// Paragraph style ids that mean a heading, with their level.
fn heading_styles(archive: &mut Archive<'_>) -> HashMap<String, u8> {
    let mut out = HashMap::new();
    let mut id: Option<String> = None;
    let _ = archive.walk("word/styles.xml", |ev| {
        match ev {
            Xml::Start(e) if is(e, b"style") => id = attr(e, b"styleId", true),
            Xml::Start(e) if is(e, b"name") => {
                if let (Some(id), Some(name)) = (&id, attr(e, b"val", true)) {
                    if let Some(level) = style_level(&name) {
                        out.insert(id.clone(), level);
                    }
                }
            }
            Xml::Start(e) if is(e, b"outlineLvl") => {
                if let (Some(id), Some(level)) = (&id, outline_level(e)) {
                    out.entry(id.clone()).or_insert(level);
                }
            }
            Xml::End(b"style") => id = None,
            _ => {}
        }
        Flow::Continue
    });
    out
}

/// `heading 2` -> 2, `Title` -> 1 (Word's built-in names, whatever the display language).
fn style_level(name: &str) -> Option<u8> {
    let name = name.trim().to_ascii_lowercase();
    if name == "title" {
        return Some(1);
    }
    let n: u8 = name.strip_prefix("heading")?.trim().parse().ok()?;
    (1..=9).contains(&n).then_some(n.min(6))
}

/// `w:outlineLvl w:val="0"` is level 1; 9 means body text.
fn outline_level(e: &quick_xml::events::BytesStart<'_>) -> Option<u8> {
    let v: u8 = attr(e, b"val", true)?.parse().ok()?;
    (v < 9).then_some((v + 1).min(6))
}

/// The walk over `word/document.xml`.
struct Body<'s> {
    styles: &'s HashMap<String, u8>,
    parts: Vec<Part>,
    /// Bytes of text gathered so far; past [`MAX_TEXT_BYTES`] the walk stops.
    size: usize,
    full: bool,
    para: String,
    level: Option<u8>,
    /// Inside `w:t` (text is only taken from there).
    in_text: bool,
    /// > 0 inside a subtree whose text is left out.
    skip: usize,
    /// Table nesting, and the rows and cells of the outermost table.
    tables: usize,
    rows: Vec<Row>,
    cell: String,
}

impl<'s> Body<'s> {
    fn new(styles: &'s HashMap<String, u8>) -> Body<'s> {
        Body {
            styles,
            parts: Vec::new(),
            size: 0,
            full: false,
            para: String::new(),
            level: None,
            in_text: false,
            skip: 0,
            tables: 0,
            rows: Vec::new(),
            cell: String::new(),
        }
    }

    fn event(&mut self, ev: Xml<'_>) -> Flow {
        match ev {
            Xml::Start(e) => {
                let name = e.local_name();
                let name = name.as_ref();
                // Deleted text, field codes, a text box's fallback copy, and the tab stops of
                // a paragraph's properties (`w:tabs/w:tab`, not a tab character).
                if self.skip > 0
                    || matches!(name, b"delText" | b"instrText" | b"Fallback" | b"tabs")
                {
                    self.skip += 1;
                    return Flow::Continue;
                }
                match name {
                    b"t" => self.in_text = true,
                    b"tab" => self.para.push('\t'),
                    b"br" | b"cr" => {
                        if attr(e, b"type", true).as_deref() == Some("page") && self.tables == 0 {
                            self.page_break();
                        } else {
                            self.para.push('\n');
                        }
                    }
                    b"lastRenderedPageBreak" if self.tables == 0 => self.page_break(),
                    b"noBreakHyphen" => self.para.push('-'),
                    b"pStyle" => {
                        if let Some(id) = attr(e, b"val", true) {
                            self.level = self.styles.get(&id).copied().or(self.level);
                        }
                    }
                    b"outlineLvl" => self.level = outline_level(e).or(self.level),
                    b"tbl" => {
                        self.flush_paragraph();
                        self.tables += 1;
                    }
                    b"tr" if self.tables == 1 => {
                        let n = self.rows.len() as u32 + 1;
                        self.rows.push((n, Vec::new()));
                    }
                    _ => {}
                }
            }
            Xml::End(name) => {
                if self.skip > 0 {
                    self.skip -= 1;
                    return Flow::Continue;
                }
                match name {
                    b"t" => self.in_text = false,
                    b"p" => self.flush_paragraph(),
                    b"tc" if self.tables == 1 => {
                        let cell = std::mem::take(&mut self.cell);
                        let cell = cell.split_whitespace().collect::<Vec<_>>().join(" ");
                        if let Some((_, cells)) = self.rows.last_mut() {
                            cells.push((cells.len() as u32, cell));
                        }
                    }
                    b"tbl" => {
                        self.tables = self.tables.saturating_sub(1);
                        if self.tables == 0 {
                            let table = render_table(&std::mem::take(&mut self.rows));
                            self.push(Part::Table(table));
                        }
                    }
                    _ => {}
                }
            }
            Xml::Text(t) if self.in_text && self.skip == 0 => self.para.push_str(t),
            Xml::Text(_) => {}
        }
        if self.full {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }

    /// Ends the current paragraph: into the current table cell, or as a part of its own.
    fn flush_paragraph(&mut self) {
        let text = std::mem::take(&mut self.para);
        let level = self.level.take();
        if self.tables > 0 {
            if !self.cell.is_empty() {
                self.cell.push(' ');
            }
            self.cell.push_str(&text);
            return;
        }
        if !text.trim().is_empty() {
            self.push(Part::Paragraph { text, level });
        }
    }

    /// A page starts here; the paragraph so far stays on the page before.
    fn page_break(&mut self) {
        let level = self.level;
        self.flush_paragraph();
        self.level = level;
        self.parts.push(Part::PageBreak);
    }

    fn push(&mut self, part: Part) {
        self.size += match &part {
            Part::Paragraph { text, .. } | Part::Table(text) => text.len() + 2,
            Part::PageBreak => 0,
        };
        self.full = self.size > MAX_TEXT_BYTES;
        self.parts.push(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heading_style_names() {
        assert_eq!(style_level("heading 1"), Some(1));
        assert_eq!(style_level("Heading 3"), Some(3));
        assert_eq!(style_level("heading 9"), Some(6));
        assert_eq!(style_level("Title"), Some(1));
        assert_eq!(style_level("Normal"), None);
        assert_eq!(style_level("heading"), None);
        assert_eq!(style_level("heading 0"), None);
    }
}
