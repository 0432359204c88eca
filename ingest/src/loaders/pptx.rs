//! PowerPoint presentations (.pptx, Office Open XML): one page per slide, in the presentation's
//! order, so a citation names the slide. A slide's title becomes a heading; each other shape is a
//! block with one line per paragraph; tables keep their column labels; the speaker notes follow
//! the slide's text. Slide numbers, dates and footers are left out.

use super::parse::{Failure, Parsed};
use super::zipped::{
    attr, folder, is, relationships, render_table, Archive, Flow, Row, Xml, MAX_TEXT_BYTES,
};
use crate::normalize::TextBuilder;

const PRESENTATION: &str = "ppt/presentation.xml";

pub(super) fn parse(bytes: &[u8], warnings: &mut Vec<String>) -> Result<Parsed, Failure> {
    let mut archive = Archive::open(bytes, "a PowerPoint presentation (.pptx)")?;
    let slides = slide_order(&mut archive)?;
    let mut b = TextBuilder::default();
    let mut size = 0usize;
    for (i, slide) in slides.iter().enumerate() {
        let n = i + 1;
        b.start_page();
        let (mut blocks, result) = shapes(&mut archive, slide);
        if let Err(e) = result {
            warnings.push(format!("slide {n}: {e}; its text up to there was kept"));
        }
        let notes = relationships(&mut archive, &rels_of(slide), folder(slide))
            .unwrap_or_default()
            .into_iter()
            .find(|(_, target)| target.contains("notesSlide"));
        if let Some((_, notes)) = notes {
            let (note_blocks, result) = shapes(&mut archive, &notes);
            if let Err(e) = result {
                warnings.push(format!("slide {n} notes: {e}"));
            }
            let text: Vec<String> = note_blocks
                .into_iter()
                .filter(|s| !s.title)
                .map(|s| s.text)
                .collect();
            let text = text.join("\n");
            if !text.trim().is_empty() {
                blocks.push(Shape {
                    title: false,
                    text: format!("Notes: {text}"),
                });
            }
        }
        for shape in blocks {
            size += shape.text.len();
            if shape.title {
                b.push_heading(1, &shape.text);
            } else {
                b.push_block(&shape.text);
            }
        }
        if size > MAX_TEXT_BYTES {
            warnings.push(format!(
                "text cut after slide {n} of {}: {} MiB is the most kept from one document",
                slides.len(),
                MAX_TEXT_BYTES >> 20
            ));
            break;
        }
    }
    Ok(archive.finish(b, None, warnings))
}

/// The slides' member names in presentation order: from the slide list and its relationships,
/// else (a presentation part missing or listing nothing) `ppt/slides/slideN.xml` by number.
fn slide_order(archive: &mut Archive<'_>) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    let listed = archive
        .walk(PRESENTATION, |ev| {
            if let Xml::Start(e) = ev {
                if is(e, b"sldId") {
                    if let Some(id) = attr(e, b"id", true) {
                        ids.push(id);
                    }
                }
            }
            Flow::Continue
        })
        .unwrap_or(false);
    if listed && !ids.is_empty() {
        let rels = relationships(archive, &rels_of(PRESENTATION), "ppt")?;
        let slides: Vec<String> = ids
            .iter()
            .filter_map(|id| rels.iter().find(|(r, _)| r == id).map(|(_, t)| t.clone()))
            .filter(|t| archive.has(t))
            .collect();
        if !slides.is_empty() {
            return Ok(slides);
        }
    }
    let mut numbered: Vec<(u32, String)> = archive
        .names()
        .into_iter()
        .filter_map(|name| {
            let n = name
                .strip_prefix("ppt/slides/slide")?
                .strip_suffix(".xml")?
                .parse()
                .ok()?;
            Some((n, name))
        })
        .collect();
    if numbered.is_empty() {
        return Err(
            "not a PowerPoint presentation: the archive has no slides (ppt/slides/slideN.xml)"
                .into(),
        );
    }
    numbered.sort();
    Ok(numbered.into_iter().map(|(_, name)| name).collect())
}

/// `ppt/slides/slide1.xml` -> `ppt/slides/_rels/slide1.xml.rels`.
fn rels_of(part: &str) -> String {
    let (dir, file) = part.rsplit_once('/').unwrap_or(("", part));
    format!("{dir}/_rels/{file}.rels")
}

/// One shape's text.
struct Shape {
    title: bool,
    text: String,
}

/// Placeholder types whose text is not content.
const SKIPPED_PLACEHOLDERS: &[&str] = &["sldNum", "dt", "ftr", "hdr", "sldImg"];

/// Reads one slide (or notes) part into its shapes' text.
fn shapes(archive: &mut Archive<'_>, part: &str) -> (Vec<Shape>, Result<bool, String>) {
    let mut walk = Walk::default();
    let mut out = Vec::new();
    let result = archive.walk(part, |ev| {
        walk.event(ev, &mut out);
        Flow::Continue
    });
    (out, result)
}

#[derive(Default)]
struct Walk {
    /// > 0 inside a fallback copy (left out: the same content once more).
    skip: usize,
    /// Inside `a:t`.
    in_text: bool,
    /// The shape being read: its kind and text so far.
    shape: Option<(bool, String)>,
    /// A table being read: rows of cells, and the cell so far.
    table: Option<(Vec<Row>, String)>,
    para: String,
}

impl Walk {
    fn event(&mut self, ev: Xml<'_>, out: &mut Vec<Shape>) {
        match ev {
            Xml::Start(e) => {
                let name = e.local_name();
                let name = name.as_ref();
                if self.skip > 0 || name == b"Fallback" {
                    self.skip += 1;
                    return;
                }
                match name {
                    b"sp" => self.shape = Some((false, String::new())),
                    b"ph" => {
                        let kind = attr(e, b"type", false).unwrap_or_default();
                        if let Some((title, _)) = self.shape.as_mut() {
                            *title = kind == "title" || kind == "ctrTitle";
                        }
                        if SKIPPED_PLACEHOLDERS.contains(&kind.as_str()) {
                            // Without a shape to go to, its paragraphs are dropped.
                            self.shape = None;
                        }
                    }
                    b"tbl" => self.table = Some((Vec::new(), String::new())),
                    b"tr" => {
                        if let Some((rows, _)) = self.table.as_mut() {
                            let n = rows.len() as u32 + 1;
                            rows.push((n, Vec::new()));
                        }
                    }
                    b"t" => self.in_text = true,
                    b"br" => self.para.push('\n'),
                    _ => {}
                }
            }
            Xml::End(name) => {
                if self.skip > 0 {
                    self.skip -= 1;
                    return;
                }
                match name {
                    b"t" => self.in_text = false,
                    b"p" => {
                        let para = std::mem::take(&mut self.para);
                        if let Some((_, cell)) = self.table.as_mut() {
                            if !cell.is_empty() {
                                cell.push(' ');
                            }
                            cell.push_str(&para);
                        } else if let Some((_, text)) = self.shape.as_mut() {
                            if !para.trim().is_empty() {
                                text.push_str(&para);
                                text.push('\n');
                            }
                        }
                    }
                    b"tc" => {
                        if let Some((rows, cell)) = self.table.as_mut() {
                            let cell = std::mem::take(cell);
                            if let Some((_, cells)) = rows.last_mut() {
                                let cell = cell.split_whitespace().collect::<Vec<_>>().join(" ");
                                cells.push((cells.len() as u32, cell));
                            }
                        }
                    }
                    b"tbl" => {
                        if let Some((rows, _)) = self.table.take() {
                            let text = render_table(&rows);
                            if !text.is_empty() {
                                out.push(Shape { title: false, text });
                            }
                        }
                    }
                    b"sp" => {
                        if let Some((title, text)) = self.shape.take() {
                            if !text.trim().is_empty() {
                                out.push(Shape { title, text });
                            }
                        }
                    }
                    _ => {}
                }
            }
            Xml::Text(t) if self.in_text && self.skip == 0 => self.para.push_str(t),
            Xml::Text(_) => {}
        }
    }
}
