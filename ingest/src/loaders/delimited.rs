//! Delimited text (.csv, .tsv): rows as lines `Row N: Label: value; ...`, labelled by the first
//! row when it is all text, as spreadsheets are (see [`xlsx`](super::xlsx)). The delimiter is a
//! tab for .tsv; for .csv the one of `,` `;` `\t` `|` found most often in the first line. Quoted
//! fields may span lines; rows of any length are taken.

use super::parse::Parsed;
use super::xlsx::Rows;
use super::zipped::{Row, MAX_TEXT_BYTES};
use crate::normalize::TextBuilder;

pub(super) fn parse(text: &str, tab: bool, warnings: &mut Vec<String>) -> Parsed {
    let delimiter = if tab { b'\t' } else { sniff(text) };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let mut rows = Rows::new(TextBuilder::default(), true);
    for (i, record) in reader.records().enumerate() {
        let n = i as u32 + 1;
        match record {
            Ok(record) => {
                let row: Row = (
                    n,
                    record
                        .iter()
                        .enumerate()
                        .map(|(j, c)| (j as u32, c.to_string()))
                        .collect(),
                );
                rows.row(row);
            }
            Err(e) => {
                warnings.push(format!("row {n}: {e}; the rows before it were kept"));
                break;
            }
        }
        if rows.full {
            warnings.push(format!(
                "text cut at row {n}: {} MiB is the most kept from one document",
                MAX_TEXT_BYTES >> 20
            ));
            break;
        }
    }
    Parsed {
        title: None,
        builder: rows.finish(),
    }
}

/// The delimiter found most often in the first line (outside quotes); `,` when none is.
fn sniff(text: &str) -> u8 {
    let mut counts = [0usize; 4];
    let candidates = [b',', b';', b'\t', b'|'];
    let mut quoted = false;
    for &c in text.as_bytes().iter().take(64 << 10) {
        match c {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => break,
            _ if !quoted => {
                if let Some(i) = candidates.iter().position(|&d| d == c) {
                    counts[i] += 1;
                }
            }
            _ => {}
        }
    }
    let best = (0..4)
        .max_by_key(|&i| (counts[i], std::cmp::Reverse(i)))
        .unwrap_or(0);
    if counts[best] == 0 {
        b','
    } else {
        candidates[best]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(src: &str, tab: bool) -> (String, Vec<String>) {
        let mut warnings = Vec::new();
        let (t, _, _) = parse(src, tab, &mut warnings).builder.finish();
        (t, warnings)
    }

    #[test]
    fn delimiters_are_sniffed_from_the_first_line() {
        assert_eq!(sniff("a,b,c\n1;2;3;4;5"), b',');
        assert_eq!(sniff("a;b;c\n"), b';');
        assert_eq!(sniff("\"x,y\";b;c"), b';');
        assert_eq!(sniff("a|b"), b'|');
        assert_eq!(sniff("just one column"), b',');
    }

    #[test]
    fn rows_keep_their_labels_and_numbers() {
        let (t, w) = text(
            "City;Population\nOslo;709 000\n\"Bergen\nwest\";291 000\n",
            false,
        );
        assert_eq!(
            t,
            "Row 1: City | Population\nRow 2: City: Oslo; Population: 709 000\n\
             Row 3: City: Bergen west; Population: 291 000"
        );
        assert!(w.is_empty());
        let (t, _) = text("1\t2\n3\t4\n", true);
        assert_eq!(t, "Row 1: 1 | 2\nRow 2: 3 | 4");
    }
}
