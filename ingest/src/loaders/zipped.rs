//! What the zip-based formats (.docx, .pptx, .xlsx, .epub) share: opening the archive with clear
//! errors, reading a member with a bound on the bytes it may unpack, a streaming XML reader that
//! never expands entities beyond XML's five and character references, and the rendering of a
//! table as rows whose cells keep their column labels.
//!
//! # Limits
//!
//! A member may unpack to at most [`MAX_MEMBER_BYTES`] and a whole file to [`MAX_UNPACKED_BYTES`]
//! (a zip bomb stops there, with a warning); a document's text stops growing at
//! [`MAX_TEXT_BYTES`] (a 100 MB sheet is read up to there, with a warning naming where it was cut).
//! XML is read as a stream, so memory stays at the size of the text kept, whatever the member's.

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Cursor, Read};

use super::parse::{Failure, Parsed};
use crate::normalize::TextBuilder;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use zip::ZipArchive;

/// Most bytes one archive member may unpack to.
pub(super) const MAX_MEMBER_BYTES: u64 = 256 << 20;
/// Most bytes all members of one file together may unpack to.
pub(super) const MAX_UNPACKED_BYTES: u64 = 1 << 30;
/// Most bytes of text kept from one document (~2 million tokens: a quarter of an hour of
/// embedding on two cores). Spreadsheets and CSV files are what reach it.
pub(super) const MAX_TEXT_BYTES: usize = 8 << 20;

/// An opened zip-based document with its unpacking budget.
pub(super) struct Archive<'a> {
    zip: ZipArchive<Cursor<&'a [u8]>>,
    unpacked: u64,
    /// Set once a member was cut at a limit; the caller turns it into one warning.
    pub(super) cut: Option<String>,
}

/// Bytes that start an OLE compound file: the legacy binary Office formats, and any Office file
/// encrypted with a password.
const OLE_MAGIC: &[u8] = &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];

impl<'a> Archive<'a> {
    /// Opens `bytes` as a zip archive; `what` names the format for the error ("a Word document").
    pub(super) fn open(bytes: &'a [u8], what: &str) -> Result<Archive<'a>, Failure> {
        if bytes.starts_with(OLE_MAGIC) {
            return Err(Failure::Protected(format!(
                "not {what} but an OLE compound file: either the legacy binary format \
                 (.doc, .xls, .ppt) under a new extension, or a password-protected file; \
                 save it again in the current format without a password"
            )));
        }
        let zip = ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| format!("not {what}: it is not a readable zip archive ({e})"))?;
        Ok(Archive {
            zip,
            unpacked: 0,
            cut: None,
        })
    }

    /// The document read from an Office file: a member cut at a limit becomes a warning, and the
    /// title is `docProps/core.xml`'s, else `fallback`.
    pub(super) fn finish(
        mut self,
        builder: TextBuilder,
        fallback: Option<String>,
        warnings: &mut Vec<String>,
    ) -> Parsed {
        let title = core_title(&mut self).or(fallback);
        if let Some(cut) = self.cut.take() {
            warnings.push(cut);
        }
        Parsed { title, builder }
    }

    /// Whether the archive holds a member of this name.
    pub(super) fn has(&self, name: &str) -> bool {
        self.zip.index_for_name(name).is_some()
    }

    /// The names of all members, in archive order.
    pub(super) fn names(&self) -> Vec<String> {
        self.zip
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.into_owned()))
            .collect()
    }

    /// Reads a whole member (for the small ones: relationships, manifests, shared strings);
    /// `None` when there is no such member.
    pub(super) fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let limit = self.left();
        let Some(mut r) = self.open_member(name, limit)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        let result = r.read_to_end(&mut out);
        drop(r);
        result.map_err(|e| format!("{name}: {e}"))?;
        self.account(name, out.len() as u64, limit);
        Ok(Some(out))
    }

    /// Streams a member's XML through `f` (see [`walk_xml`]); `Ok(false)` when there is no such
    /// member. An XML error after some text was handed on is returned like any other: the
    /// caller decides whether what was read stands.
    pub(super) fn walk(
        &mut self,
        name: &str,
        f: impl FnMut(Xml<'_>) -> Flow,
    ) -> Result<bool, String> {
        let limit = self.left();
        let Some(r) = self.open_member(name, limit)? else {
            return Ok(false);
        };
        let mut counted = Counted { inner: r, n: 0 };
        let result = walk_xml(BufReader::new(&mut counted), f);
        let n = counted.n;
        drop(counted);
        self.account(name, n, limit);
        result.map_err(|e| format!("{name}: {e}"))?;
        Ok(true)
    }

    /// What the next member may unpack to: the smaller of both budgets.
    fn left(&self) -> u64 {
        MAX_MEMBER_BYTES.min(MAX_UNPACKED_BYTES.saturating_sub(self.unpacked))
    }

    /// A member's reader, cut after `limit` bytes.
    fn open_member(
        &mut self,
        name: &str,
        limit: u64,
    ) -> Result<Option<impl Read + use<'_, 'a>>, String> {
        let Some(index) = self.zip.index_for_name(name) else {
            return Ok(None);
        };
        let file = self
            .zip
            .by_index(index)
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(Some(file.take(limit)))
    }

    fn account(&mut self, name: &str, n: u64, limit: u64) {
        self.unpacked += n;
        if n >= limit && self.cut.is_none() {
            self.cut = Some(format!(
                "{name} unpacks to more than {} MiB: read up to there",
                limit >> 20
            ));
        }
    }
}

/// A reader that counts the bytes it hands on.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// What [`walk_xml`] hands its callback. Element names are local (prefix dropped: `w:t` is
/// `t`); an empty element comes as a start and an end.
pub(super) enum Xml<'e> {
    /// An element opens; its attributes through [`attr`].
    Start(&'e BytesStart<'e>),
    /// An element closes (local name).
    End(&'e [u8]),
    /// Character data, entities resolved.
    Text(&'e str),
}

/// Whether [`walk_xml`] goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Stop,
}

/// Streams `src` as XML events into `f` until the end, an error, or [`Flow::Stop`].
///
/// Only XML's five named entities and character references are resolved; any other entity
/// (declared in a DTD or not) is dropped, so an "XML bomb" of nested entity definitions expands
/// to nothing. A DOCTYPE is skipped.
pub(super) fn walk_xml(
    src: impl BufRead,
    mut f: impl FnMut(Xml<'_>) -> Flow,
) -> Result<(), String> {
    let mut reader = Reader::from_reader(src);
    let config = reader.config_mut();
    config.expand_empty_elements = true;
    config.trim_text(false);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("malformed XML at byte {}: {e}", reader.buffer_position()))?;
        let flow = match &event {
            Event::Start(e) => f(Xml::Start(e)),
            Event::End(e) => f(Xml::End(e.local_name().into_inner())),
            Event::Text(t) => f(Xml::Text(&lossy(t.decode()))),
            Event::CData(t) => f(Xml::Text(&String::from_utf8_lossy(t))),
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => Some(c.to_string()),
                    Ok(None) => {
                        let name = lossy(r.decode());
                        quick_xml::escape::resolve_xml_entity(&name).map(str::to_string)
                    }
                    Err(_) => None,
                };
                match resolved {
                    Some(s) => f(Xml::Text(&s)),
                    None => Flow::Continue,
                }
            }
            Event::Eof => return Ok(()),
            _ => Flow::Continue,
        };
        if flow == Flow::Stop {
            return Ok(());
        }
    }
}

fn lossy<E>(r: Result<Cow<'_, str>, E>) -> String {
    r.map(Cow::into_owned).unwrap_or_default()
}

/// An attribute's value by local name; `prefixed` asks for a namespaced one (`r:id`) rather than
/// a plain one (`id`), since OOXML elements carry both.
pub(super) fn attr(e: &BytesStart<'_>, local: &[u8], prefixed: bool) -> Option<String> {
    e.attributes().flatten().find_map(|a| {
        let key = a.key;
        if key.local_name().as_ref() != local || key.prefix().is_some() != prefixed {
            return None;
        }
        Some(match a.unescape_value() {
            Ok(v) => v.into_owned(),
            Err(_) => String::from_utf8_lossy(&a.value).into_owned(),
        })
    })
}

/// Whether an element's local name is `name`.
pub(super) fn is(e: &BytesStart<'_>, name: &[u8]) -> bool {
    e.local_name().as_ref() == name
}

/// The targets of a relationships part (`_rels/x.xml.rels`) by id, resolved against `base`, the
/// folder of the part they belong to. External targets (links) are left out.
pub(super) fn relationships(
    archive: &mut Archive<'_>,
    rels: &str,
    base: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    archive.walk(rels, |ev| {
        if let Xml::Start(e) = ev {
            if is(e, b"Relationship")
                && attr(e, b"TargetMode", false).as_deref() != Some("External")
            {
                if let (Some(id), Some(target)) = (attr(e, b"Id", false), attr(e, b"Target", false))
                {
                    out.push((id, join(base, &target)));
                }
            }
        }
        Flow::Continue
    })?;
    Ok(out)
}

/// `target` resolved against the folder `base` as a zip member name: `..` and `.` segments
/// applied, a leading `/` meaning the archive root, `%20`-style escapes decoded.
pub(super) fn join(base: &str, target: &str) -> String {
    let target = percent_decode(target);
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|s| !s.is_empty()).collect()
    };
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// The folder part of a member name (`word/document.xml` -> `word`).
pub(super) fn folder(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(d, _)| d)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(hi * 16 + lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The Dublin Core title of an Office file (`docProps/core.xml`), if it has a non-empty one.
fn core_title(archive: &mut Archive<'_>) -> Option<String> {
    let mut title = String::new();
    let mut inside = false;
    archive
        .walk("docProps/core.xml", |ev| {
            match ev {
                Xml::Start(e) if is(e, b"title") => inside = true,
                Xml::End(b"title") => return Flow::Stop,
                Xml::Text(t) if inside => title.push_str(t),
                _ => {}
            }
            Flow::Continue
        })
        .ok()?;
    let title = crate::normalize::normalize(&title).replace('\n', " ");
    (!title.is_empty()).then_some(title)
}

/// One table row: its number and its non-empty cells with their column index.
pub(super) type Row = (u32, Vec<(u32, String)>);

/// Table rows rendered so that each figure stays next to its column label.
///
/// `header` (the table's first row, when every cell in it is text that is not a number) labels
/// the columns: each row then reads `Label: value; Label: value`. Without one, cells are joined
/// by ` | `. `numbered` prefixes each row with its number (`Row 12:`), for spreadsheets, whose
/// citations name rows. Rows with no text are left out.
pub(super) fn render_rows(rows: &[Row], header: Option<&Row>, numbered: bool) -> String {
    let mut out = String::new();
    for (n, cells) in rows {
        let cells = cells
            .iter()
            .map(|(j, c)| (*j, one_line(c)))
            .filter(|(_, c)| !c.is_empty());
        let line = match header.filter(|h| h.0 != *n) {
            Some((_, labels)) => cells
                .map(|(j, c)| match labels.iter().find(|(k, _)| *k == j) {
                    Some((_, l)) if !l.trim().is_empty() => format!("{}: {c}", one_line(l)),
                    _ => c,
                })
                .collect::<Vec<_>>()
                .join("; "),
            None => cells.map(|(_, c)| c).collect::<Vec<_>>().join(" | "),
        };
        if line.is_empty() {
            continue;
        }
        if numbered {
            out.push_str(&format!("Row {n}: "));
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Whether a table's first row labels its columns: two or more cells, none empty or a number.
pub(super) fn is_header(row: &Row) -> bool {
    row.1.len() > 1
        && row
            .1
            .iter()
            .all(|(_, c)| !c.trim().is_empty() && !looks_numeric(c))
}

/// A whole table (a Word or slide table): the first row is its header when [`is_header`] says so.
pub(super) fn render_table(rows: &[Row]) -> String {
    let header = rows.first().filter(|r| is_header(r));
    render_rows(rows, header, false)
}

/// A cell's text on one line, whitespace collapsed.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn looks_numeric(s: &str) -> bool {
    let t: String = s
        .trim()
        .chars()
        .filter(|c| !matches!(c, ',' | '%' | '$' | '€' | '£' | ' '))
        .collect();
    !t.is_empty() && t.parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_member_names() {
        assert_eq!(join("word", "media/a.png"), "word/media/a.png");
        assert_eq!(join("ppt/slides", "../media/x.png"), "ppt/media/x.png");
        assert_eq!(
            join("ppt", "/ppt/slides/slide1.xml"),
            "ppt/slides/slide1.xml"
        );
        assert_eq!(join("OEBPS", "text/ch%201.xhtml"), "OEBPS/text/ch 1.xhtml");
        assert_eq!(join("", "./a.xml"), "a.xml");
        assert_eq!(folder("word/document.xml"), "word");
        assert_eq!(folder("content.opf"), "");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn xml_entities_beyond_the_five_are_dropped() {
        let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<r><t>a &amp; b &#x41;&#66; &lol2; end</t></r>"#;
        let mut text = String::new();
        walk_xml(bomb.as_bytes(), |ev| {
            if let Xml::Text(t) = ev {
                text.push_str(t);
            }
            Flow::Continue
        })
        .unwrap();
        assert_eq!(text.trim(), "a & b AB  end");
    }

    #[test]
    fn malformed_xml_is_an_error_not_a_panic() {
        for src in ["<a><b></a>", "<a attr=></a>", "<<<", "<a>&#xFFFFFFFF;</a>"] {
            let _ = walk_xml(src.as_bytes(), |_| Flow::Continue);
        }
        assert!(walk_xml("<a><b></a>".as_bytes(), |_| Flow::Continue).is_err());
    }

    #[test]
    fn tables_keep_labels_beside_figures() {
        let row = |n: u32, cells: &[&str]| -> Row {
            (
                n,
                cells
                    .iter()
                    .enumerate()
                    .map(|(j, c)| (j as u32, c.to_string()))
                    .collect(),
            )
        };
        let rows = vec![
            row(1, &["Region", "Q1", "Q2"]),
            row(2, &["North", "4,200", ""]),
            row(3, &["South", "3,900", "4,100"]),
        ];
        assert_eq!(
            render_rows(&rows, Some(&rows[0]), true),
            "Row 1: Region | Q1 | Q2\nRow 2: Region: North; Q1: 4,200\n\
             Row 3: Region: South; Q1: 3,900; Q2: 4,100\n"
        );
        assert_eq!(
            render_table(&rows),
            render_rows(&rows, Some(&rows[0]), false)
        );
        // A first row with a number in it is data, not a header.
        let rows = vec![row(1, &["2023", "4,200"]), row(2, &["2024", "5,000"])];
        assert!(!is_header(&rows[0]));
        assert_eq!(render_table(&rows), "2023 | 4,200\n2024 | 5,000\n");
    }
}
