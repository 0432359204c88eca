//! Columns of running text that a PDF draws across the page a baseline at a time.
//!
//! Some PDFs (the IRS's instructions, many newsletters) draw a three-column page one baseline at a
//! time: the first column's line, then the second's and third's on the same baseline. Read as
//! drawn, every line of text then holds three unrelated pieces ("Section references are to the
//! Internal use a different address this year. See retirement plan and your 2008 modified"), and
//! no sentence survives. PDFs that draw each column in turn (most papers) are already in reading
//! order and are left alone: their lines hold one column each.
//!
//! [`read_order`] finds such columns from where the words sit:
//! - a line's **pieces** are its words, baseline by baseline (pdf-extract's line may hold
//!   several, when the PDF moves down without a new-line operator), split where the gap is wider
//!   than [`GUTTER_GAP`] font sizes (words in running text are a third of one apart);
//! - a **gutter** is a stretch of the page, at least [`MIN_GUTTER`] points wide, that falls
//!   between two pieces of running text ([`MIN_PIECE_WORDS`] words or more, mostly letters) on at least
//!   [`MIN_ROWS`] lines, and inside a piece on fewer lines than that (titles across the columns);
//! - a **block** is a run of lines whose pieces all keep to one side of every gutter's middle
//!   (justified lines reach a little into the gutter), with text in more than one column on at
//!   least [`MIN_ROWS`] of them; its pieces are read column by column, left to right, each column
//!   top to bottom, pieces of one baseline in one column joined (a run-in heading and its text);
//! - a line with a piece across a gutter's middle (a title over the columns, a footer) ends the
//!   block, and is read where it was drawn.
//!
//! Tables are read before this (`pdf_table`); a form's labels and one-word values never make a
//! gutter. Everything that is not a block comes out as drawn.

use super::pdf_text::{Line, Word};

/// The gap between two pieces of a line, in font sizes.
const GUTTER_GAP: f64 = 1.0;

/// The narrowest gutter, in points.
const MIN_GUTTER: f64 = 4.0;

/// Lines with running text on both sides of a gutter, at least.
const MIN_ROWS: usize = 3;

/// Words of running text in a piece, at least, for it to border a gutter.
const MIN_PIECE_WORDS: usize = 2;

/// Words of one line that sit together on one baseline.
#[derive(Debug)]
struct Piece {
    x0: f64,
    x1: f64,
    /// Baseline, and which of its line's baselines (0, 1, ...) it is on.
    y: f64,
    baseline: usize,
    size: f64,
    words: usize,
    text: String,
}

impl Piece {
    /// Words, not figures: [`MIN_PIECE_WORDS`] or more, and mostly letters (a table's "$
    /// 383,285" or "(1,204)" is not, so the gaps of a table that `pdf_table` did not take
    /// make no gutter, and its rows stay whole).
    fn is_running_text(&self) -> bool {
        let digits = self.text.chars().filter(char::is_ascii_digit).count();
        let alphanumeric = self.text.chars().filter(|c| c.is_alphanumeric()).count();
        self.words >= MIN_PIECE_WORDS && digits * 3 < alphanumeric
    }
}

/// A line's pieces, baseline by baseline (a line as pdf-extract ends it may hold several, when
/// the PDF moves down without a new-line operator), each left to right.
fn pieces(words: &[Word]) -> Vec<Piece> {
    let mut words: Vec<&Word> = words.iter().collect();
    words.sort_by(|a, b| a.y.total_cmp(&b.y));
    let mut baselines: Vec<Vec<&Word>> = Vec::new();
    for w in words {
        match baselines.last_mut() {
            Some(b) if w.y - b[0].y <= BASELINE_SLACK * w.size.max(b[0].size) => b.push(w),
            _ => baselines.push(vec![w]),
        }
    }
    let mut out: Vec<Piece> = Vec::new();
    for (baseline, mut words) in baselines.into_iter().enumerate() {
        words.sort_by(|a, b| a.x0.total_cmp(&b.x0));
        let first = out.len();
        for w in words {
            match out[first..].last_mut() {
                Some(p) if w.x0 - p.x1 <= GUTTER_GAP * w.size.min(p.size) => {
                    p.x1 = p.x1.max(w.x1);
                    p.words += 1;
                    p.text.push(' ');
                    p.text.push_str(&w.text);
                }
                _ => out.push(Piece {
                    x0: w.x0,
                    x1: w.x1,
                    y: w.y,
                    baseline,
                    size: w.size,
                    words: 1,
                    text: w.text.clone(),
                }),
            }
        }
    }
    out
}

/// How far, in font sizes, words may sit above or below a baseline and be on it (sub- and
/// superscripts).
const BASELINE_SLACK: f64 = 0.3;

/// The page's lines in reading order, as (line breaks before, text): lines as drawn, except that
/// the blocks of columns found (see the module docs) come out column by column.
pub(super) fn read_order(lines: &[Line]) -> Vec<(usize, String)> {
    let pieces: Vec<Option<Vec<Piece>>> = lines
        .iter()
        .map(|l| l.words.as_deref().map(pieces))
        .collect();
    let gutters = gutters(&pieces);
    let as_drawn = |lines: &[Line]| -> Vec<(usize, String)> {
        lines.iter().map(|l| (l.breaks, l.text.clone())).collect()
    };
    if gutters.is_empty() {
        return as_drawn(lines);
    }
    let mut out = Vec::new();
    // A line may join a block when it has pieces and none reaches across a gutter's middle.
    let middles: Vec<f64> = gutters.iter().map(|&(a, b)| (a + b) / 2.0).collect();
    let fits = |i: usize| {
        pieces[i].as_deref().is_some_and(|p| {
            !p.is_empty()
                && p.iter()
                    .all(|p| middles.iter().all(|&m| p.x1 <= m || p.x0 >= m))
        })
    };
    let column = |p: &Piece| middles.iter().filter(|&&m| p.x0 >= m).count();
    let mut i = 0;
    while i < lines.len() {
        if !fits(i) {
            out.extend(as_drawn(&lines[i..=i]));
            i += 1;
            continue;
        }
        let end = (i..lines.len()).find(|&j| !fits(j)).unwrap_or(lines.len());
        let block: Vec<&[Piece]> = (i..end)
            .map(|j| pieces[j].as_deref().unwrap_or_default())
            .collect();
        // Lines with text in more than one column.
        let across = block
            .iter()
            .filter(|p| p.iter().any(|q| column(q) != column(&p[0])))
            .count();
        if across < MIN_ROWS {
            out.extend(as_drawn(&lines[i..end]));
        } else {
            read_block(lines[i].breaks, &block, middles.len() + 1, column, &mut out);
        }
        i = end;
    }
    out
}

/// The gutters of a page's lines (see the module docs), left to right, as (left, right) edges.
fn gutters(pieces: &[Option<Vec<Piece>>]) -> Vec<(f64, f64)> {
    // For each point of the page (one-point bins), the lines on which it falls between two
    // pieces of running text, and the lines on which it falls inside a piece.
    let lines: Vec<&[Piece]> = pieces.iter().flatten().map(Vec::as_slice).collect();
    let width = lines
        .iter()
        .flat_map(|p| p.iter().map(|p| p.x1))
        .fold(0f64, f64::max);
    if !(width.is_finite() && width > 0.0) || width > 1e5 {
        return Vec::new();
    }
    let bins = width.ceil() as usize + 1;
    // Counted as differences (+1 where a stretch starts, -1 where it ends) and summed after,
    // so a page of many wide pieces costs no more than its pieces and its width.
    let mut between = vec![0i64; bins + 1];
    let mut inside = vec![0i64; bins + 1];
    let bin = |x: f64| (x.max(0.0) as usize).min(bins - 1);
    let add = |counts: &mut [i64], a: usize, b: usize| {
        if a < b {
            counts[a] += 1;
            counts[b] -= 1;
        }
    };
    for p in &lines {
        // Neighbours on one baseline (`pieces` gives each baseline's left to right).
        for w in p.windows(2) {
            if w[0].baseline == w[1].baseline && w[0].is_running_text() && w[1].is_running_text() {
                add(&mut between, bin(w[0].x1.ceil()), bin(w[1].x0.floor()));
            }
        }
        for p in p.iter() {
            add(&mut inside, bin(p.x0.ceil()), bin(p.x1.floor()));
        }
    }
    for counts in [&mut between, &mut inside] {
        for b in 1..counts.len() {
            counts[b] += counts[b - 1];
        }
    }
    let mut out = Vec::new();
    let mut start = None;
    for b in 0..=bins {
        let open = b < bins && between[b] >= MIN_ROWS as i64 && inside[b] < between[b];
        match (open, start) {
            (true, None) => start = Some(b),
            (false, Some(s)) => {
                if (b - s) as f64 >= MIN_GUTTER {
                    out.push((s as f64, b as f64));
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// A block's pieces, column by column, each column top to bottom; a paragraph break where a
/// column's baselines move apart by more than [`PARAGRAPH_GAP`] font sizes. `first` are the
/// line breaks before the block's first line.
fn read_block(
    first: usize,
    block: &[&[Piece]],
    columns: usize,
    column: impl Fn(&Piece) -> usize,
    out: &mut Vec<(usize, String)>,
) {
    for c in 0..columns {
        let mut last_y: Option<f64> = None;
        let mut rows: Vec<&Piece> = block
            .iter()
            .flat_map(|pieces| pieces.iter().filter(|p| column(p) == c))
            .collect();
        // Top to bottom; pieces on one baseline (a bold run and the text after it) keep their
        // drawing order.
        rows.sort_by(|a, b| a.y.total_cmp(&b.y));
        for p in rows {
            let y = p.y;
            if let (Some(prev), Some(last)) = (last_y, out.last_mut()) {
                // Pieces of one baseline in one column: a run-in heading and its text.
                if (y - prev).abs() <= BASELINE_SLACK * p.size {
                    last.1.push(' ');
                    last.1.push_str(&p.text);
                    continue;
                }
            }
            let breaks = match last_y {
                // A column goes on from the one before it, often mid-sentence.
                None if c == 0 => first,
                None => 1,
                Some(prev) if y - prev > PARAGRAPH_GAP * p.size => 2,
                Some(_) => 1,
            };
            out.push((breaks, p.text.clone()));
            last_y = Some(y);
        }
    }
}

/// The baseline step, in font sizes, beyond which a column starts a new paragraph.
const PARAGRAPH_GAP: f64 = 1.8;

#[cfg(test)]
mod tests {
    use super::*;

    /// A line of `(x, text)` runs at baseline `y`, 10-point type, 5 points a character.
    fn line(y: f64, runs: &[(f64, &str)]) -> Line {
        let runs: Vec<(f64, f64, &str)> = runs.iter().map(|&(x, t)| (x, y, t)).collect();
        line_at(&runs)
    }

    /// A line of `(x, baseline, text)` runs, as pdf-extract gives when the PDF moves down
    /// without a new-line operator.
    fn line_at(runs: &[(f64, f64, &str)]) -> Line {
        let mut words = Vec::new();
        for &(x, y, text) in runs {
            let mut at = x;
            for w in text.split(' ') {
                let x1 = at + 5.0 * w.len() as f64;
                words.push(Word {
                    x0: at,
                    x1,
                    y,
                    size: 10.0,
                    text: w.to_string(),
                });
                at = x1 + 3.0;
            }
        }
        let text = runs.iter().map(|r| r.2).collect::<Vec<_>>().join(" ");
        Line {
            breaks: 1,
            text,
            words: Some(words),
        }
    }

    fn texts(lines: &[Line]) -> Vec<String> {
        read_order(lines).into_iter().map(|(_, t)| t).collect()
    }

    #[test]
    fn columns_drawn_a_baseline_at_a_time_are_read_one_after_the_other() {
        let lines = vec![
            line(
                10.0,
                &[(20.0, "Instructions for Form 1040NR, the whole width")],
            ),
            line(
                30.0,
                &[(20.0, "one two three"), (220.0, "alpha beta gamma")],
            ),
            line(
                42.0,
                &[(20.0, "four five six"), (220.0, "delta epsilon zeta")],
            ),
            line(54.0, &[(20.0, "seven eight"), (220.0, "eta theta iota")]),
            line(66.0, &[(20.0, "nine ten")]),
            line(
                90.0,
                &[(20.0, "A footer line that runs across both of the columns")],
            ),
        ];
        assert_eq!(
            texts(&lines),
            [
                "Instructions for Form 1040NR, the whole width",
                "one two three",
                "four five six",
                "seven eight",
                "nine ten",
                "alpha beta gamma",
                "delta epsilon zeta",
                "eta theta iota",
                "A footer line that runs across both of the columns",
            ]
        );
        let breaks: Vec<usize> = read_order(&lines).into_iter().map(|(b, _)| b).collect();
        // The second column goes on from the first; the footer's break is as drawn.
        assert_eq!(breaks, [1; 9]);
    }

    #[test]
    fn baselines_within_a_line_and_run_in_headings() {
        // The first line holds two baselines of both columns; the third a run-in heading set
        // apart from its text by more than a font size.
        let lines = vec![
            line_at(&[
                (20.0, 30.0, "one two three"),
                (220.0, 30.0, "alpha beta gamma"),
                (20.0, 42.0, "four five six"),
                (220.0, 42.0, "delta epsilon zeta"),
            ]),
            line(54.0, &[(20.0, "seven eight"), (220.0, "eta theta iota")]),
            line(
                66.0,
                &[
                    (20.0, "Heading."),
                    (75.0, "nine ten"),
                    (220.0, "kappa lambda"),
                ],
            ),
        ];
        assert_eq!(
            texts(&lines),
            [
                "one two three",
                "four five six",
                "seven eight",
                "Heading. nine ten",
                "alpha beta gamma",
                "delta epsilon zeta",
                "eta theta iota",
                "kappa lambda",
            ]
        );
    }

    #[test]
    fn single_column_text_and_label_value_rows_stay_as_drawn() {
        // One column: gaps between words are a third of a font size.
        let prose = vec![
            line(10.0, &[(20.0, "The first line of a paragraph of text")]),
            line(22.0, &[(20.0, "and its second line, which goes on")]),
            line(34.0, &[(20.0, "to a third.")]),
        ];
        assert_eq!(
            texts(&prose),
            prose.iter().map(|l| l.text.clone()).collect::<Vec<_>>()
        );
        // A form's labels and one-word values, a statement's labels and amounts: not running
        // text on both sides.
        let form = vec![
            line(10.0, &[(20.0, "Net sales"), (220.0, "41,000")]),
            line(22.0, &[(20.0, "Gross margin"), (220.0, "38.2%")]),
            line(34.0, &[(20.0, "Operating income"), (220.0, "12,400")]),
            line(46.0, &[(20.0, "Net income"), (220.0, "9,100")]),
        ];
        let statement = vec![
            line(
                10.0,
                &[
                    (20.0, "Net sales for the year"),
                    (220.0, "$ 383,285"),
                    (320.0, "$ 394,328"),
                ],
            ),
            line(
                22.0,
                &[
                    (20.0, "Cost of sales"),
                    (220.0, "$ 214,137"),
                    (320.0, "$ 223,546"),
                ],
            ),
            line(
                34.0,
                &[
                    (20.0, "Research and development"),
                    (220.0, "$ 29,915"),
                    (320.0, "$ 26,251"),
                ],
            ),
            line(
                46.0,
                &[
                    (20.0, "Income taxes paid"),
                    (220.0, "$ (1,204)"),
                    (320.0, "$ 19,300"),
                ],
            ),
        ];
        for lines in [form, statement] {
            assert_eq!(
                texts(&lines),
                lines.iter().map(|l| l.text.clone()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn two_lines_of_columns_are_not_a_block() {
        let lines = vec![
            line(
                10.0,
                &[(20.0, "one two three"), (220.0, "alpha beta gamma")],
            ),
            line(
                22.0,
                &[(20.0, "four five six"), (220.0, "delta epsilon zeta")],
            ),
        ];
        assert_eq!(
            texts(&lines),
            lines.iter().map(|l| l.text.clone()).collect::<Vec<_>>()
        );
    }
}
