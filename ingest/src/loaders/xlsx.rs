//! Excel workbooks (.xlsx, Office Open XML): each sheet, in workbook order, under a heading with
//! its name; each row a line `Row N: Label: value; ...`, labelled by the sheet's first row when
//! that row is all text, so a figure keeps its column label and a citation its sheet and row.
//! Cells show their stored value (the last computed value for formulas); numbers at Excel's 15
//! significant digits, and dates (cells whose number format is a date or time) as ISO dates.
//! Rows go into blocks of [`ROWS_PER_BLOCK`], so a chunk holds whole rows.

use std::collections::HashMap;

use super::parse::{Failure, Parsed};
use super::zipped::{
    attr, folder, is, is_header, relationships, render_rows, Archive, Flow, Row, Xml,
    MAX_TEXT_BYTES,
};
use crate::normalize::TextBuilder;

const WORKBOOK: &str = "xl/workbook.xml";
/// Rows per text block.
pub(super) const ROWS_PER_BLOCK: usize = 20;

pub(super) fn parse(bytes: &[u8], warnings: &mut Vec<String>) -> Result<Parsed, Failure> {
    let mut archive = Archive::open(bytes, "an Excel workbook (.xlsx)")?;
    let (sheets, date1904) = sheet_list(&mut archive)?;
    let strings = shared_strings(&mut archive, warnings);
    let dates = date_styles(&mut archive);
    let mut out = Rows::new(TextBuilder::default(), true);
    for (name, part) in &sheets {
        out.sheet(name);
        let mut cells = Cells::new(&strings, &dates, date1904);
        let result = archive.walk(part, |ev| {
            if let Some(row) = cells.event(ev) {
                out.row(row);
            }
            if out.full {
                Flow::Stop
            } else {
                Flow::Continue
            }
        });
        out.end_sheet();
        if let Err(e) = result {
            warnings.push(format!(
                "sheet {name:?}: {e}; its rows up to there were kept"
            ));
        }
        if out.full {
            warnings.push(format!(
                "text cut in sheet {name:?} at row {}: {} MiB is the most kept from one document",
                out.last_row,
                MAX_TEXT_BYTES >> 20
            ));
            break;
        }
    }
    Ok(archive.finish(out.finish(), None, warnings))
}

/// Rows of one table after another into a [`TextBuilder`], with the first row of each as its
/// header when it is one; shared with CSV files.
pub(super) struct Rows {
    b: TextBuilder,
    numbered: bool,
    header: Option<Row>,
    first: bool,
    pending: Vec<Row>,
    size: usize,
    pub(super) full: bool,
    pub(super) last_row: u32,
}

impl Rows {
    pub(super) fn new(b: TextBuilder, numbered: bool) -> Rows {
        Rows {
            b,
            numbered,
            header: None,
            first: true,
            pending: Vec::new(),
            size: 0,
            full: false,
            last_row: 0,
        }
    }

    /// A new table under a heading.
    pub(super) fn sheet(&mut self, name: &str) {
        self.b.push_heading(1, name);
        self.header = None;
        self.first = true;
    }

    pub(super) fn row(&mut self, row: Row) {
        if row.1.iter().all(|(_, c)| c.trim().is_empty()) {
            return;
        }
        self.last_row = row.0;
        if std::mem::take(&mut self.first) && is_header(&row) {
            self.header = Some(row.clone());
        }
        self.pending.push(row);
        if self.pending.len() >= ROWS_PER_BLOCK {
            self.flush();
        }
    }

    pub(super) fn end_sheet(&mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        let text = render_rows(&self.pending, self.header.as_ref(), self.numbered);
        self.pending.clear();
        self.size += text.len();
        self.full = self.size > MAX_TEXT_BYTES;
        self.b.push_block(&text);
    }

    pub(super) fn finish(mut self) -> TextBuilder {
        self.flush();
        self.b
    }
}

/// The sheets (name, member) in workbook order, and whether dates count from 1904.
fn sheet_list(archive: &mut Archive<'_>) -> Result<(Vec<(String, String)>, bool), String> {
    let mut listed = Vec::new();
    let mut date1904 = false;
    let found = archive.walk(WORKBOOK, |ev| {
        if let Xml::Start(e) = ev {
            if is(e, b"sheet") {
                if let (Some(name), Some(id)) = (attr(e, b"name", false), attr(e, b"id", true)) {
                    listed.push((name, id));
                }
            } else if is(e, b"workbookPr") {
                date1904 = matches!(attr(e, b"date1904", false).as_deref(), Some("1" | "true"));
            }
        }
        Flow::Continue
    })?;
    if !found {
        return Err(format!(
            "not an Excel workbook: the archive has no {WORKBOOK} (is it another kind of zip \
             file under a .xlsx name?)"
        ));
    }
    let rels = relationships(archive, "xl/_rels/workbook.xml.rels", folder(WORKBOOK))?;
    let sheets = listed
        .into_iter()
        .filter_map(|(name, id)| {
            let part = rels.iter().find(|(r, _)| *r == id)?.1.clone();
            archive.has(&part).then_some((name, part))
        })
        .collect();
    Ok((sheets, date1904))
}

/// The shared string table; strings past the text limit are kept empty.
fn shared_strings(archive: &mut Archive<'_>, warnings: &mut Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut size = 0usize;
    let mut in_text = false;
    let mut phonetic = 0usize;
    let result = archive.walk("xl/sharedStrings.xml", |ev| {
        match ev {
            Xml::Start(e) if is(e, b"si") => out.push(String::new()),
            Xml::Start(e) if is(e, b"rPh") => phonetic += 1,
            Xml::End(b"rPh") => phonetic = phonetic.saturating_sub(1),
            Xml::Start(e) if is(e, b"t") => in_text = true,
            Xml::End(b"t") => in_text = false,
            Xml::Text(t) if in_text && phonetic == 0 && size <= MAX_TEXT_BYTES => {
                size += t.len();
                if let Some(s) = out.last_mut() {
                    s.push_str(t);
                }
            }
            _ => {}
        }
        Flow::Continue
    });
    if let Err(e) = result {
        warnings.push(format!("{e}; the strings up to there were kept"));
    }
    out
}

/// Cell style index -> how its number shows, for the styles whose number format is a date or
/// a time.
fn date_styles(archive: &mut Archive<'_>) -> HashMap<usize, DateKind> {
    let mut custom: HashMap<u32, DateKind> = HashMap::new();
    let mut xfs: Vec<u32> = Vec::new();
    let mut in_cell_xfs = false;
    let _ = archive.walk("xl/styles.xml", |ev| {
        match ev {
            Xml::Start(e) if is(e, b"numFmt") => {
                let id = attr(e, b"numFmtId", false).and_then(|v| v.parse().ok());
                let code = attr(e, b"formatCode", false).unwrap_or_default();
                if let (Some(id), Some(kind)) = (id, format_kind(&code)) {
                    custom.insert(id, kind);
                }
            }
            Xml::Start(e) if is(e, b"cellXfs") => in_cell_xfs = true,
            Xml::End(b"cellXfs") => in_cell_xfs = false,
            Xml::Start(e) if in_cell_xfs && is(e, b"xf") => {
                xfs.push(
                    attr(e, b"numFmtId", false)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                );
            }
            _ => {}
        }
        Flow::Continue
    });
    xfs.into_iter()
        .enumerate()
        .filter_map(|(i, id)| Some((i, custom.get(&id).copied().or_else(|| builtin_kind(id))?)))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateKind {
    Date,
    DateTime,
    Time,
}

/// Excel's built-in number formats that show dates or times.
fn builtin_kind(id: u32) -> Option<DateKind> {
    match id {
        14..=17 | 27..=31 | 34..=36 | 50..=58 => Some(DateKind::Date),
        22 => Some(DateKind::DateTime),
        18..=21 | 32 | 33 | 45..=47 => Some(DateKind::Time),
        _ => None,
    }
}

/// Whether a custom format code shows a date or time: `d`, `y` (date), `h`, `s` (time) outside
/// quoted text, `[...]` sections and escaped characters.
fn format_kind(code: &str) -> Option<DateKind> {
    let mut plain = String::new();
    let mut chars = code.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                }
            }
            '[' => {
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                }
            }
            '\\' | '_' | '*' => {
                chars.next();
            }
            c => plain.push(c.to_ascii_lowercase()),
        }
    }
    // Only the first section (positive numbers) says what the cell shows.
    let first = plain.split(';').next().unwrap_or("");
    let date = first.contains('d') || first.contains('y');
    let time = first.contains('h') || first.contains('s');
    match (date, time) {
        (true, true) => Some(DateKind::DateTime),
        (true, false) => Some(DateKind::Date),
        (false, true) => Some(DateKind::Time),
        _ => None,
    }
}

/// The walk over one sheet, handing on each finished row.
struct Cells<'a> {
    strings: &'a [String],
    dates: &'a HashMap<usize, DateKind>,
    date1904: bool,
    row: Option<Row>,
    next_row: u32,
    /// The cell being read: column, type, style.
    cell: Option<(u32, String, Option<usize>)>,
    next_col: u32,
    value: String,
    in_value: bool,
}

impl<'a> Cells<'a> {
    fn new(strings: &'a [String], dates: &'a HashMap<usize, DateKind>, date1904: bool) -> Self {
        Cells {
            strings,
            dates,
            date1904,
            row: None,
            next_row: 0,
            cell: None,
            next_col: 0,
            value: String::new(),
            in_value: false,
        }
    }

    fn event(&mut self, ev: Xml<'_>) -> Option<Row> {
        match ev {
            Xml::Start(e) if is(e, b"row") => {
                let n = attr(e, b"r", false)
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(self.next_row + 1);
                self.next_row = n;
                self.next_col = 0;
                self.row = Some((n, Vec::new()));
            }
            Xml::Start(e) if is(e, b"c") => {
                let col = attr(e, b"r", false)
                    .and_then(|r| column(&r))
                    .unwrap_or(self.next_col);
                self.next_col = col + 1;
                let kind = attr(e, b"t", false).unwrap_or_default();
                let style = attr(e, b"s", false).and_then(|s| s.parse().ok());
                self.cell = Some((col, kind, style));
                self.value.clear();
            }
            // `v` holds the value; `t` inside `is` an inline string.
            Xml::Start(e) if self.cell.is_some() && (is(e, b"v") || is(e, b"t")) => {
                self.in_value = true;
            }
            Xml::End(b"v" | b"t") => self.in_value = false,
            Xml::Text(t) if self.in_value => self.value.push_str(t),
            Xml::End(b"c") => {
                if let Some((col, kind, style)) = self.cell.take() {
                    let shown = self.show(&kind, style);
                    if let (Some((_, cells)), false) = (self.row.as_mut(), shown.is_empty()) {
                        cells.push((col, shown));
                    }
                }
            }
            Xml::End(b"row") => return self.row.take(),
            _ => {}
        }
        None
    }

    /// The text a cell shows.
    fn show(&self, kind: &str, style: Option<usize>) -> String {
        let v = self.value.trim();
        match kind {
            "s" => v
                .parse::<usize>()
                .ok()
                .and_then(|i| self.strings.get(i))
                .cloned()
                .unwrap_or_default(),
            "b" => match v {
                "1" => "TRUE".into(),
                "0" => "FALSE".into(),
                _ => v.into(),
            },
            "str" | "inlineStr" | "e" => self.value.clone(),
            _ => {
                let Ok(x) = v.parse::<f64>() else {
                    return v.to_string();
                };
                match style.and_then(|s| self.dates.get(&s)) {
                    Some(&kind) => date(x, kind, self.date1904).unwrap_or_else(|| number(x)),
                    None => number(x),
                }
            }
        }
    }
}

/// `B12` -> 1 (columns from 0).
fn column(reference: &str) -> Option<u32> {
    let letters: &str = &reference[..reference.find(|c: char| c.is_ascii_digit())?];
    if letters.is_empty() || letters.len() > 3 {
        return None;
    }
    let mut n = 0u32;
    for c in letters.chars() {
        if !c.is_ascii_alphabetic() {
            return None;
        }
        n = n * 26 + (c.to_ascii_uppercase() as u32 - 'A' as u32 + 1);
    }
    Some(n - 1)
}

/// A number as Excel shows it in a general cell: at most 15 significant digits.
fn number(x: f64) -> String {
    let rounded: f64 = format!("{x:.14e}").parse().unwrap_or(x);
    format!("{rounded}")
}

/// An Excel date serial as an ISO date (and time); `None` outside years 1900-9999.
fn date(serial: f64, kind: DateKind, date1904: bool) -> Option<String> {
    if !(0.0..2_958_466.0).contains(&serial) {
        return None;
    }
    let days = serial.floor() as i64;
    let seconds = ((serial - serial.floor()) * 86_400.0).round() as i64;
    let (h, m, s) = (seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    // Days since 1970-01-01. In the 1900 system Excel counts a 29 February 1900 that never was.
    let unix = if date1904 {
        days - 24_107
    } else if days >= 61 {
        days - 25_569
    } else {
        days - 25_568
    };
    let (y, mo, d) = civil(unix);
    Some(match kind {
        DateKind::Date => format!("{y:04}-{mo:02}-{d:02}"),
        DateKind::DateTime => format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}"),
        DateKind::Time => format!("{h:02}:{m:02}:{s:02}"),
    })
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_from_references() {
        assert_eq!(column("A1"), Some(0));
        assert_eq!(column("B12"), Some(1));
        assert_eq!(column("Z3"), Some(25));
        assert_eq!(column("AA3"), Some(26));
        assert_eq!(column("XFD1048576"), Some(16_383));
        assert_eq!(column("12"), None);
        assert_eq!(column("A"), None);
        assert_eq!(column("ABCD1"), None);
    }

    #[test]
    fn numbers_and_dates_as_excel_shows_them() {
        assert_eq!(number(4200.0), "4200");
        assert_eq!(number(0.1 + 0.2), "0.3");
        assert_eq!(number(-1.5e-7), "-0.00000015");
        assert_eq!(date(45_292.0, DateKind::Date, false).unwrap(), "2024-01-01");
        assert_eq!(date(1.0, DateKind::Date, false).unwrap(), "1900-01-01");
        assert_eq!(date(61.0, DateKind::Date, false).unwrap(), "1900-03-01");
        assert_eq!(date(0.0, DateKind::Date, true).unwrap(), "1904-01-01");
        assert_eq!(
            date(45_292.75, DateKind::DateTime, false).unwrap(),
            "2024-01-01 18:00:00"
        );
        assert_eq!(date(0.5, DateKind::Time, false).unwrap(), "12:00:00");
        assert_eq!(date(-1.0, DateKind::Date, false), None);
    }

    #[test]
    fn date_formats_are_recognised() {
        assert_eq!(format_kind("yyyy-mm-dd"), Some(DateKind::Date));
        assert_eq!(format_kind("d/m/yy h:mm"), Some(DateKind::DateTime));
        assert_eq!(format_kind("[h]:mm:ss"), Some(DateKind::Time));
        assert_eq!(format_kind("#,##0.00"), None);
        assert_eq!(format_kind("0.0\"days\""), None);
        assert_eq!(format_kind("[Red]#,##0;[Blue]-#,##0"), None);
        assert_eq!(builtin_kind(14), Some(DateKind::Date));
        assert_eq!(builtin_kind(2), None);
    }
}
