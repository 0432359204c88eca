//! Tables on a PDF page, found from where the words sit, so that each figure keeps its labels.
//!
//! A PDF has no tables, only glyphs at positions; read line by line, a table's figures lose the
//! column headers printed above them (often over several lines, "Married / filing / separately").
//! [`render`] finds runs of lines whose words fall into columns and writes each row as
//! `Label: value; Label: value`, as the other loaders write table rows:
//!
//! - a line's **cells** are its words split where the gap is wider than [`CELL_GAP`] times the font
//!   size (words in running text are a third of that apart); a cell of more than
//!   [`MAX_CELL_WORDS`] words is running text;
//! - a **figure** is a cell of mostly digits (`41,000`, `(0.75)`, `12.5%`); a **row of figures**
//!   has two or more, and they are at least half its cells;
//! - a **table** is a run of consecutive lines of two or more short cells (a lone figure between
//!   them, a group's first value, does not end it) holding at least [`MIN_ROWS`] rows of figures
//!   with three or more cells; its **columns** are the union of the cells' extents over the rows
//!   with the most cells, and those rows must have one cell in each column (text that only happens
//!   to have wide gaps does not line up so); it ends before a line with a text cell spanning
//!   columns (the heading after it) or a line of text cells only (the next table's labels);
//! - the lines of the run above its first row of figures (at most [`MAX_HEADER_LINES`]), and up
//!   to two lines just above the run, one line break apart, whose cells each sit over one column
//!   in a font no larger than the figures', are its **header**: a header cell over one column
//!   labels it (the lines of a column's label are joined top to bottom), a cell spanning several
//!   columns, or any cell of the header lines set apart above the labels by a blank line, is a
//!   caption written once above the rows;
//! - when the labels repeat (a tax table printed as three blocks side by side), each block is
//!   written out in turn, rows top to bottom, as a person reads it.
//!
//! Everything else is written as it was drawn, or column by column (`pdf_columns`). Rotated and
//! right-to-left lines never join a table.

use super::pdf_columns;
use super::pdf_text::{Line, Word};
use super::zipped::{render_rows, Row};

/// The gap between two cells of a row, in font sizes.
const CELL_GAP: f64 = 1.0;

/// Rows of three or more cells with figures a table must have.
const MIN_ROWS: usize = 3;

/// Header lines read above a table's first row of figures, at most.
const MAX_HEADER_LINES: usize = 8;

/// The page's text: lines as drawn, tables as labelled rows.
pub(super) fn render(lines: &[Line]) -> String {
    let cells: Vec<Option<Vec<Cell>>> = lines
        .iter()
        .map(|l| l.words.as_deref().map(cells_of))
        .collect();
    let breaks: Vec<usize> = lines.iter().map(|l| l.breaks).collect();
    let mut out = String::new();
    let mut i = 0;
    // A table is a paragraph of its own: the line after it starts a new one.
    let mut after_table = false;
    // Each search goes on from where the last table ended, so a page is read once.
    while let Some(table) = find_table(&cells, &breaks, i) {
        push_lines(&mut out, &lines[i..table.start], &mut after_table);
        let breaks = if out.is_empty() { 0 } else { 2 };
        push_line(&mut out, breaks, table.render(&cells).trim_end());
        after_table = true;
        i = table.end;
    }
    push_lines(&mut out, &lines[i..], &mut after_table);
    out
}

/// Lines as drawn, or column by column where the page draws columns a baseline at a time
/// (`pdf_columns`); the first after a table starts a paragraph.
fn push_lines(out: &mut String, lines: &[Line], after_table: &mut bool) {
    for (breaks, text) in pdf_columns::read_order(lines) {
        let breaks = if std::mem::take(after_table) {
            breaks.max(2)
        } else {
            breaks
        };
        push_line(out, breaks, &text);
    }
}

fn push_line(out: &mut String, breaks: usize, text: &str) {
    out.extend(std::iter::repeat_n('\n', breaks));
    out.push_str(text);
}

/// Words of one line that sit together (see [`CELL_GAP`]).
#[derive(Debug, Clone)]
struct Cell {
    x0: f64,
    x1: f64,
    y: f64,
    text: String,
    /// Its words' extents and texts, left to right.
    words: Vec<(f64, f64, String)>,
    size: f64,
}

fn cells_of(words: &[Word]) -> Vec<Cell> {
    let mut words: Vec<&Word> = words.iter().collect();
    words.sort_by(|a, b| a.x0.total_cmp(&b.x0));
    let mut out: Vec<Cell> = Vec::new();
    for w in words {
        match out.last_mut() {
            Some(c) if w.x0 - c.x1 <= CELL_GAP * w.size => {
                c.x1 = c.x1.max(w.x1);
                c.text.push(' ');
                c.text.push_str(&w.text);
                c.words.push((w.x0, w.x1, w.text.clone()));
            }
            _ => out.push(Cell {
                x0: w.x0,
                x1: w.x1,
                y: w.y,
                text: w.text.clone(),
                words: vec![(w.x0, w.x1, w.text.clone())],
                size: w.size,
            }),
        }
    }
    out
}

/// Whether a cell holds a figure: a number, amount, percentage or year, mostly digits.
fn is_figure(cell: &Cell) -> bool {
    let digits = cell.text.chars().filter(char::is_ascii_digit).count();
    let alphanumeric = cell.text.chars().filter(|c| c.is_alphanumeric()).count();
    digits > 0 && digits * 4 >= alphanumeric * 3
}

/// A row of figures: two or more, and at least half its cells.
fn has_figures(cells: &[Cell]) -> bool {
    let figures = cells.iter().filter(|c| is_figure(c)).count();
    figures >= 2 && figures * 2 >= cells.len()
}

/// A table found on a page: lines `start..end`, those before `body` its header.
#[derive(Debug)]
struct Table {
    start: usize,
    /// First header line that labels columns: lines above it, set apart by a blank line, are
    /// the caption ("If Form 1040NR, line 40, is —" over a tax table's columns).
    labels: usize,
    /// First line of the body (rows).
    body: usize,
    end: usize,
    /// Columns' extents, left to right.
    columns: Vec<(f64, f64)>,
}

/// The first table whose run of lines starts at or after `from`.
fn find_table(cells: &[Option<Vec<Cell>>], breaks: &[usize], from: usize) -> Option<Table> {
    let multi = |i: usize| {
        cells[i]
            .as_ref()
            .is_some_and(|c| c.len() >= 2 && c.iter().all(|c| c.words.len() <= MAX_CELL_WORDS))
    };
    let mut run_start = from;
    while run_start < cells.len() {
        if !multi(run_start) {
            run_start += 1;
            continue;
        }
        // A lone figure (a group's first value, "41,000") does not end the run.
        let figure = |i: usize| {
            cells[i]
                .as_deref()
                .is_some_and(|c| c.len() == 1 && is_figure(&c[0]))
        };
        let mut run_end = run_start;
        while run_end < cells.len() && (multi(run_end) || figure(run_end)) {
            run_end += 1;
        }
        if let Some(t) = table_in(cells, breaks, from, run_start, run_end) {
            return Some(t);
        }
        run_start = run_end;
    }
    None
}

/// Words in a cell beyond which it is running text, not a table's cell.
const MAX_CELL_WORDS: usize = 6;

/// The table in the run of lines `start..end`, if it is one; its header may take lines above the
/// run down to `floor`.
fn table_in(
    cells: &[Option<Vec<Cell>>],
    breaks: &[usize],
    floor: usize,
    start: usize,
    end: usize,
) -> Option<Table> {
    let row = |i: usize| cells[i].as_deref().unwrap_or_default();
    let body = (start..end).find(|&i| has_figures(row(i)))?;
    let rows_with_figures = (body..end)
        .filter(|&i| row(i).len() >= 3 && has_figures(row(i)))
        .count();
    if rows_with_figures < MIN_ROWS {
        return None;
    }
    let widest = (body..end).map(|i| row(i).len()).max()?;
    if widest < 3 {
        return None;
    }
    let mut spans: Vec<(f64, f64)> = (body..end)
        .filter(|&i| row(i).len() == widest)
        .flat_map(|i| row(i).iter().map(|c| (c.x0, c.x1)))
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut columns: Vec<(f64, f64)> = Vec::new();
    for (x0, x1) in spans {
        match columns.last_mut() {
            Some(c) if x0 <= c.1 => c.1 = c.1.max(x1),
            _ => columns.push((x0, x1)),
        }
    }
    if columns.len() != widest {
        return None;
    }
    // Text spanning columns below the first row is no longer the table (a heading after it),
    // nor is a line of text cells only (the next table's labels).
    let end = (body + 1..end)
        .find(|&i| {
            let cells = row(i);
            cells
                .iter()
                .any(|c| !is_figure(c) && overlapped(&columns, c).len() > 1)
                || (cells.len() >= 2 && !cells.iter().any(is_figure))
        })
        .unwrap_or(end);
    if end <= body {
        return None;
    }
    // The header: lines of the run above the first row of figures, and lines just above the run
    // whose cells each sit over a single column.
    let mut sizes: Vec<f64> = (body..end)
        .flat_map(|i| row(i).iter().map(|c| c.size))
        .collect();
    sizes.sort_by(f64::total_cmp);
    let body_size = sizes[sizes.len() / 2];
    let mut first = body.saturating_sub(MAX_HEADER_LINES).max(start);
    let mut extra = 0;
    while extra < 2 && first > floor && breaks[first] == 1 {
        let Some(above) = cells[first - 1].as_deref() else {
            break;
        };
        // Column labels are set no larger than the figures; a title above the table is.
        if above.is_empty()
            || above
                .iter()
                .any(|c| overlapped(&columns, c).len() != 1 || c.size > body_size * 1.15)
        {
            break;
        }
        first -= 1;
        extra += 1;
    }
    let labels = (first + 1..body)
        .rev()
        .find(|&i| breaks[i] >= 2)
        .unwrap_or(first);
    Some(Table {
        start: first,
        labels,
        body,
        end,
        columns,
    })
}

/// The columns a cell's extent overlaps; the nearest one when it falls in a gap.
fn overlapped(columns: &[(f64, f64)], cell: &Cell) -> Vec<usize> {
    let over: Vec<usize> = (0..columns.len())
        .filter(|&j| cell.x0 < columns[j].1 && cell.x1 > columns[j].0)
        .collect();
    if !over.is_empty() {
        return over;
    }
    vec![column_of(columns, cell)]
}

/// A cell cut where a gap between its words, wider than a space, lies over a gap between
/// columns: labels of neighbouring columns set close together ("dec-layers Language").
fn split_at_columns(columns: &[(f64, f64)], cell: &Cell) -> Vec<Cell> {
    let mut out: Vec<Cell> = Vec::new();
    for (k, (x0, x1, text)) in cell.words.iter().enumerate() {
        let cut = k > 0 && {
            let left = cell.words[k - 1].1;
            *x0 - left > 0.4 * cell.size
                && columns.windows(2).any(|w| left < w[1].0 && *x0 > w[0].1)
        };
        match out.last_mut() {
            Some(c) if !cut => {
                c.x1 = c.x1.max(*x1);
                c.text.push(' ');
                c.text.push_str(text);
                c.words.push((*x0, *x1, text.clone()));
            }
            _ => out.push(Cell {
                x0: *x0,
                x1: *x1,
                y: cell.y,
                text: text.clone(),
                words: vec![(*x0, *x1, text.clone())],
                size: cell.size,
            }),
        }
    }
    out
}

/// The column a body cell belongs to: the one holding its middle, else the nearest.
fn column_of(columns: &[(f64, f64)], cell: &Cell) -> usize {
    let mid = (cell.x0 + cell.x1) / 2.0;
    let distance = |j: usize| (columns[j].0 - mid).max(mid - columns[j].1).max(0.0);
    (0..columns.len())
        .min_by(|&a, &b| distance(a).total_cmp(&distance(b)))
        .unwrap_or(0)
}

impl Table {
    fn render(&self, cells: &[Option<Vec<Cell>>]) -> String {
        let n = self.columns.len();
        let mut labels: Vec<Vec<Cell>> = vec![Vec::new(); n];
        let mut caption: Vec<Cell> = Vec::new();
        for (i, line) in cells.iter().enumerate().take(self.body).skip(self.start) {
            let line = line.as_deref().unwrap_or_default();
            // Figures in a header line with several of them are a row drawn out of line, not a
            // label ("(0.75)" under "mAP" is one).
            let figures_are_labels = line.iter().filter(|c| is_figure(c)).count() < 2;
            for cell in line.iter().flat_map(|c| split_at_columns(&self.columns, c)) {
                let label = !is_figure(&cell) || (figures_are_labels && cell.words.len() == 1);
                match overlapped(&self.columns, &cell).as_slice() {
                    [j] if i >= self.labels && label => labels[*j].push(cell),
                    _ => caption.push(cell),
                }
            }
        }
        let by_position = |a: &Cell, b: &Cell| a.y.total_cmp(&b.y).then(a.x0.total_cmp(&b.x0));
        caption.sort_by(by_position);
        let mut caption_lines: Vec<String> = Vec::new();
        for c in caption {
            if !caption_lines.contains(&c.text) {
                caption_lines.push(c.text.clone());
            }
        }
        let labels: Vec<String> = labels
            .into_iter()
            .map(|mut l| {
                l.sort_by(by_position);
                l.iter()
                    .map(|c| c.text.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        // Blocks side by side repeat their labels (all but a quarter of them, as a title or
        // note above one block may join its labels): the shortest period that does.
        let period = (1..n)
            .filter(|&p| n.is_multiple_of(p))
            .find(|&p| {
                let same = (p..n).filter(|&j| labels[j] == labels[j - p]).count();
                labels[..p].iter().any(|l| !l.is_empty()) && same * 4 >= (n - p) * 3
            })
            .unwrap_or(n);
        let rows: Vec<Vec<(usize, String)>> = cells[self.body..self.end]
            .iter()
            .map(|line| {
                let mut row: Vec<(usize, String)> = line
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .flat_map(|c| split_at_columns(&self.columns, c))
                    .map(|c| (column_of(&self.columns, &c), c.text))
                    .collect();
                row.sort_by_key(|&(j, _)| j);
                row
            })
            .collect();
        let mut out = String::new();
        for line in caption_lines {
            out.push_str(&line);
            out.push('\n');
        }
        for block in 0..n / period {
            let columns = block * period..(block + 1) * period;
            let header: Row = (
                0,
                columns
                    .clone()
                    .map(|j| ((j - columns.start) as u32, labels[j].clone()))
                    .collect(),
            );
            let block_rows: Vec<Row> = rows
                .iter()
                .enumerate()
                .map(|(k, row)| {
                    let mut merged: Vec<(u32, String)> = Vec::new();
                    for (j, text) in row.iter().filter(|(j, _)| columns.contains(j)) {
                        let j = (j - columns.start) as u32;
                        match merged.last_mut() {
                            Some((last, t)) if *last == j => {
                                t.push(' ');
                                t.push_str(text);
                            }
                            _ => merged.push((j, text.clone())),
                        }
                    }
                    (k as u32 + 1, merged)
                })
                .collect();
            out.push_str(&render_rows(&block_rows, Some(&header), false));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(text: &str) -> Cell {
        Cell {
            x0: 0.0,
            x1: 1.0,
            y: 0.0,
            text: text.into(),
            words: vec![(0.0, 1.0, text.into())],
            size: 10.0,
        }
    }

    #[test]
    fn figures_are_mostly_digits() {
        for figure in ["41,000", "(0.75)", "12.5%", "$3,016", "2007"] {
            assert!(is_figure(&cell(figure)), "{figure}");
        }
        for text in ["1040NR,", "line 40, is", "Single", "—", ""] {
            assert!(!is_figure(&cell(text)), "{text}");
        }
        let row = |texts: &[&str]| texts.iter().map(|t| cell(t)).collect::<Vec<_>>();
        assert!(has_figures(&row(&["OTSL", "0.965", "0.934"])));
        assert!(!has_figures(&row(&["(0.75)", "Inference"])));
        assert!(!has_figures(&row(&["Year", "Revenue", "12"])));
    }
}
