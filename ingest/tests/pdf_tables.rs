//! Tables in PDFs keep their labels: each figure is written next to its column's label.
//!
//! The PDFs are made here, glyph positions and all, so the layouts are known: a tax table printed
//! as two blocks side by side under three-line column labels, prose with wide gaps that is not a
//! table, and a real table from `$RAG_SHARED/data/pdf-samples` (docling's Table 1).

mod common;

use common::shared_file;
use rag_ingest::{load_bytes, DocKind};
use std::path::Path;

/// A one-page PDF (Helvetica 10 pt) drawing each `(x, y, text)` at its position.
fn pdf<S: AsRef<str>>(items: &[(f64, f64, S)]) -> Vec<u8> {
    let mut content = String::from("BT /F1 10 Tf\n");
    for (x, y, text) in items {
        content.push_str(&format!("1 0 0 1 {x} {y} Tm ({}) Tj\n", text.as_ref()));
    }
    content.push_str("ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [4 0 R] /Count 1 >>".to_string(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
         /Resources << /Font << /F1 3 0 R >> >> /Contents 5 0 R >>"
            .to_string(),
        format!(
            "<< /Length {} >>\nstream\n{content}\nendstream",
            content.len()
        ),
    ];
    common::pdf_file(&objects.map(String::into_bytes))
}

fn text_of<S: AsRef<str>>(items: &[(f64, f64, S)]) -> String {
    load_bytes(Path::new("table.pdf"), DocKind::Pdf, &pdf(items))
        .unwrap()
        .text
}

/// Two blocks of a tax table side by side: columns at these x positions, repeated 250 pt on.
const COLUMNS: [f64; 4] = [72.0, 122.0, 172.0, 222.0];

fn tax_table() -> Vec<(f64, f64, String)> {
    let mut items = vec![(72.0, 740.0, "2007 Tax Table".to_string())];
    for block in 0..2 {
        let dx = 250.0 * f64::from(block);
        items.push((COLUMNS[0] + dx, 715.0, "If line 40 is".into()));
        // Labels over three lines, as the IRS prints them.
        for (line, labels) in [
            ["At", "But", "Single", "Married"],
            ["least", "less", "", "filing"],
            ["", "than", "", "separately"],
        ]
        .iter()
        .enumerate()
        {
            for (j, label) in labels.iter().enumerate() {
                if !label.is_empty() {
                    let y = 690.0 - 12.0 * line as f64;
                    items.push((COLUMNS[j] + dx, y, label.to_string()));
                }
            }
        }
        for row in 0..4 {
            let at_least = 41_000 + 3_000 * block + 50 * row;
            let cells = [
                fmt(at_least),
                fmt(at_least + 50),
                fmt(6_680 + 750 * block + 13 * row),
                fmt(7_005 + 750 * block + 13 * row),
            ];
            for (j, cell) in cells.into_iter().enumerate() {
                items.push((COLUMNS[j] + dx, 640.0 - 12.0 * row as f64, cell));
            }
        }
    }
    // Drawn as a reader reads across the page: line by line, both blocks.
    items.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.total_cmp(&b.0)));
    items
}

fn fmt(n: u32) -> String {
    format!("{},{:03}", n / 1000, n % 1000)
}

#[test]
fn side_by_side_tax_table_keeps_its_labels() {
    let text = text_of(&tax_table());
    let lines: Vec<&str> = text.lines().collect();
    // Every row is written with its labels, the multi-line ones joined top to bottom.
    let row =
        "At least: 41,000; But less than: 41,050; Single: 6,680; Married filing separately: 7,005";
    assert!(lines.contains(&row), "{text}");
    let second_block = "At least: 44,150; But less than: 44,200; Single: 7,469; \
                        Married filing separately: 7,794";
    assert!(lines.contains(&second_block), "{text}");
    // The blocks are read one after the other, each top to bottom.
    let position = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle}: {text}"))
    };
    assert!(
        position("At least: 41,150") < position("At least: 44,000"),
        "{text}"
    );
    // The title stays a line of its own, the label spanning two columns is said once.
    assert!(lines.contains(&"2007 Tax Table"), "{text}");
    assert_eq!(text.matches("If line 40 is").count(), 1, "{text}");
    assert!(!text.contains("Single: 2007"), "{text}");
}

#[test]
fn prose_with_wide_gaps_is_not_a_table() {
    // Three lines of words set far apart, without figures: read as drawn.
    let items = [
        (72.0, 700.0, "Name"),
        (200.0, 700.0, "Role"),
        (330.0, 700.0, "Office"),
        (72.0, 686.0, "Ada"),
        (200.0, 686.0, "Engineer"),
        (330.0, 686.0, "North"),
        (72.0, 672.0, "Grace"),
        (200.0, 672.0, "Admiral"),
        (330.0, 672.0, "South"),
        (
            72.0,
            640.0,
            "A sentence of running text with 3 figures, 12 and 2007 in it.",
        ),
    ];
    let text = text_of(&items);
    assert!(!text.contains(": "), "{text}");
    assert!(text.contains("Grace Admiral South"), "{text}");
    // A table of figures below prose: the prose line above is not taken as a label.
    let mut items = items.to_vec();
    items.extend([
        (72.0, 600.0, "Year"),
        (200.0, 600.0, "Revenue"),
        (330.0, 600.0, "Margin"),
        (72.0, 586.0, "2021"),
        (200.0, 586.0, "1,204"),
        (330.0, 586.0, "12.5%"),
        (72.0, 572.0, "2022"),
        (200.0, 572.0, "1,377"),
        (330.0, 572.0, "13.1%"),
        (72.0, 558.0, "2023"),
        (200.0, 558.0, "1,502"),
        (330.0, 558.0, "14.0%"),
    ]);
    let text = text_of(&items);
    assert!(
        text.contains("Year: 2022; Revenue: 1,377; Margin: 13.1%"),
        "{text}"
    );
    assert!(text.contains("A sentence of running text"), "{text}");
}

#[test]
fn tables_one_after_another_keep_their_own_labels() {
    let mut items = Vec::new();
    for (top, labels, rows) in [
        (
            700.0,
            ["Year", "Revenue", "Margin"],
            [
                ["2021", "1,204", "12.5%"],
                ["2022", "1,377", "13.1%"],
                ["2023", "1,502", "14.0%"],
            ],
        ),
        (
            630.0,
            ["Quarter", "Units", "Price"],
            [
                ["Q1 2023", "310", "4.10"],
                ["Q2 2023", "322", "4.15"],
                ["Q3 2023", "340", "4.20"],
            ],
        ),
    ] {
        for (j, label) in labels.iter().enumerate() {
            items.push((72.0 + 130.0 * j as f64, top, label.to_string()));
        }
        for (r, row) in rows.iter().enumerate() {
            for (j, cell) in row.iter().enumerate() {
                let y = top - 14.0 * (r + 1) as f64;
                items.push((72.0 + 130.0 * j as f64, y, cell.to_string()));
            }
        }
    }
    items.push((72.0, 560.0, "Figures are unaudited.".to_string()));
    let text = text_of(&items);
    assert!(
        text.contains("Year: 2023; Revenue: 1,502; Margin: 14.0%"),
        "{text}"
    );
    assert!(
        text.contains("Quarter: Q2 2023; Units: 322; Price: 4.15"),
        "{text}"
    );
    assert!(text.ends_with("\n\nFigures are unaudited."), "{text}");
}

#[test]
fn docling_table_figures_sit_next_to_their_labels() {
    let Some(pdf) = shared_file("data/pdf-samples/docling/2305.03393v1-pg9.pdf") else {
        return;
    };
    let text = rag_ingest::load(&pdf).unwrap().text;
    // Table 1: the TEDs sub-columns, the two-line "mAP (0.75)" and "Inference time (secs)".
    for row in [
        "Language: OTSL; simple: 0.965; TEDs complex: 0.934; all: 0.955; mAP (0.75): 0.88; \
         Inference time (secs): 2.73",
        "Language: HTML; simple: 0.944; TEDs complex: 0.903; all: 0.931; mAP (0.75): 0.824; \
         Inference time (secs): 2",
    ] {
        assert!(text.contains(row), "{row}\n{text}");
    }
    assert!(text.contains("# enc-layers: 4; # dec-layers: 2;"), "{text}");
    // The prose after the table is prose again.
    assert!(text.contains("\n\n5.2 Quantitative Results\n"), "{text}");
}
