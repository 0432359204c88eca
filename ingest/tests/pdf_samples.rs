//! Extraction quality on the real PDFs in `$RAG_SHARED/data/pdf-samples` (see its SOURCE.md).
//!
//! Score = the share of reference words found in order in our text: the length of the longest
//! common subsequence of the two word sequences divided by the number of reference words. Words are
//! maximal runs of alphanumeric characters after lowercasing; both texts go through the loader's own
//! [`normalize`] first, so the score measures extraction, not normalisation. Markdown syntax in docling's
//! references is stripped first (HTML comments such as `<!-- image -->`, link and image targets).
//! Each docling PDF must score at least SOURCE.md's pypdf figure minus 0.05. The pdfminer PDFs
//! (references cover only their first page) are reported, and must load or fail cleanly.
//! Run with `--nocapture` to see the table.

mod common;

use common::shared_file;
use rag_ingest::{load, normalize, LoadError};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

const TOLERANCE: f64 = 0.05;

fn words(text: &str) -> Vec<String> {
    normalize(text)
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Docling's Markdown without what is not text: HTML comments, link and image targets.
fn strip_markdown(md: &str) -> String {
    let mut out = String::with_capacity(md.len());
    let mut rest = md;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("-->").map_or("", |j| &rest[i + j + 3..]);
    }
    out.push_str(rest);
    // "](target)" → "]"
    let mut cleaned = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("](") {
        cleaned.push_str(&rest[..=i]);
        rest = rest[i + 2..]
            .find(')')
            .map_or("", |j| &rest[i + 2 + j + 1..]);
    }
    cleaned.push_str(rest);
    cleaned
}

/// Length of the longest common subsequence of two word sequences (O(n·m) time, O(m) memory).
fn lcs(a: &[String], b: &[String]) -> usize {
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut seqs = [Vec::new(), Vec::new()];
    for (seq, words) in seqs.iter_mut().zip([a, b]) {
        for w in words {
            let n = ids.len() as u32;
            seq.push(*ids.entry(w.as_str()).or_insert(n));
        }
    }
    let [a, b] = seqs;
    let mut row = vec![0u32; b.len() + 1];
    for &x in &a {
        let mut diag = 0; // row[j - 1] of the previous row
        for (j, &y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[b.len()] as usize
}

fn recall(reference: &str, extracted: &str) -> (f64, usize) {
    let r = words(reference);
    let e = words(extracted);
    (lcs(&r, &e) as f64 / r.len().max(1) as f64, r.len())
}

/// `file → pypdf recall` from the docling table of SOURCE.md.
fn pypdf_figures(source_md: &str) -> Vec<(String, f64)> {
    source_md
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            let file = cells.first()?;
            let figure = cells.last()?.parse::<f64>().ok()?;
            file.ends_with(".pdf").then(|| (file.to_string(), figure))
        })
        .collect()
}

#[test]
fn lcs_and_words_behave() {
    let w = |s: &str| words(s);
    assert_eq!(
        w("Hello, World! x_y 3.14"),
        vec!["hello", "world", "x", "y", "3", "14"]
    );
    assert_eq!(lcs(&w("a b c d"), &w("a x c y d")), 3);
    assert_eq!(lcs(&w("a b"), &w("b a")), 1);
    assert_eq!(
        strip_markdown("# T <!-- image -->\n![alt](http://x/y.png) [link](https://a.b/c) end"),
        "# T \n![alt] [link] end"
    );
    let figs = pypdf_figures(
        "| f | b |\n| multi_page.pdf | 1 | 5 | essay | 1.00 |\n| jo.pdf | 1 | 1 | note |",
    );
    assert_eq!(figs, vec![("multi_page.pdf".to_string(), 1.0)]);
}

#[test]
fn docling_pdfs_reach_pypdf_recall() {
    let Some(dir) = shared_file("data/pdf-samples") else {
        return;
    };
    let source = std::fs::read_to_string(dir.join("SOURCE.md")).unwrap();
    let figures = pypdf_figures(&source);
    assert_eq!(
        figures.len(),
        8,
        "expected the 8 docling rows of SOURCE.md: {figures:?}"
    );

    println!(
        "\n{:<28} {:>6} {:>6} {:>7} {:>7} {:>8}  warnings",
        "docling PDF", "words", "pages", "ours", "pypdf", "load ms"
    );
    let mut failures = Vec::new();
    for (file, pypdf) in &figures {
        let pdf = dir.join("docling").join(file);
        let reference = std::fs::read_to_string(pdf.with_extension("groundtruth.md")).unwrap();
        let start = Instant::now();
        let doc = load(&pdf).unwrap_or_else(|e| panic!("{file}: {e}"));
        let ms = start.elapsed().as_millis();
        let (score, n) = recall(&strip_markdown(&reference), &doc.text);
        println!(
            "{file:<28} {n:>6} {:>6} {score:>7.3} {pypdf:>7.2} {ms:>8}  {}",
            doc.pages.len(),
            doc.warnings.len()
        );
        if score < pypdf - TOLERANCE {
            failures.push(format!(
                "{file}: {score:.3} < pypdf {pypdf:.2} - {TOLERANCE}"
            ));
        }
    }
    assert!(failures.is_empty(), "below pypdf: {failures:#?}");
}

#[test]
fn pdfminer_pdfs_load_or_fail_cleanly() {
    let Some(dir) = shared_file("data/pdf-samples/pdfminer") else {
        return;
    };
    println!(
        "\n{:<28} {:>6} {:>6} {:>7} {:>8}  result",
        "pdfminer PDF", "words", "pages", "recall", "load ms"
    );
    for (file, reference) in [
        ("naacl06-shinyama.pdf", "naacl06-shinyama.pdfminer-ref.txt"),
        ("i1040nr.pdf", "i1040nr.pdfminer-ref.txt"),
        ("dmca.pdf", "dmca.pdfminer-ref.txt"),
        ("jo.pdf", "jo.pdfminer-ref.txt"),
        ("simple1.pdf", "simple1.pdfminer-ref.txt"),
        ("zen_of_python_corrupted.pdf", "zen_of_python.reference.txt"),
    ] {
        let pdf = dir.join(file);
        let reference = std::fs::read_to_string(dir.join(reference)).unwrap();
        let start = Instant::now();
        let result = load(&pdf);
        let ms = start.elapsed().as_millis();
        match result {
            Ok(doc) => {
                let (score, n) = recall(&reference, &doc.text);
                println!(
                    "{file:<28} {n:>6} {:>6} {score:>7.3} {ms:>8}  text ({} chars, {} warnings)",
                    doc.pages.len(),
                    doc.text.chars().count(),
                    doc.warnings.len()
                );
            }
            Err(e) => {
                assert_clear(&e, &pdf);
                println!(
                    "{file:<28} {:>6} {:>6} {:>7} {ms:>8}  error: {e}",
                    "-", "-", "-"
                );
            }
        }
    }
}

fn assert_clear(e: &LoadError, pdf: &Path) {
    assert_eq!(e.path(), pdf);
    assert!(
        matches!(e, LoadError::Corrupt { .. } | LoadError::NoText { .. }),
        "{}: unexpected {e}",
        pdf.display()
    );
    assert!(e.to_string().contains(&*pdf.to_string_lossy()), "{e}");
}

/// The IRS instructions draw their three columns a baseline at a time across the page; read as
/// drawn, no sentence of page 1 that runs over two lines survived. Read column by column, they
/// come out whole.
#[test]
fn columns_drawn_across_the_page_are_read_in_order() {
    let Some(dir) = shared_file("data/pdf-samples/pdfminer") else {
        return;
    };
    let doc = load(&dir.join("i1040nr.pdf")).unwrap();
    let page1 = words(&doc.text[..doc.pages[1]]).join(" ");
    for sentence in [
        "section references are to the internal revenue code unless otherwise noted",
        "tax benefits extended the following tax benefits were extended through 2007",
        "health savings account hsa funding distributions you may be able to elect to exclude \
         from income a distribution made from your ira to your hsa",
    ] {
        assert!(
            page1.contains(sentence),
            "{sentence:?} not in page 1: {page1}"
        );
    }
    let reference = std::fs::read_to_string(dir.join("i1040nr.pdfminer-ref.txt")).unwrap();
    // The reference is pdfminer's page 1, which reads the boxes of the page in an order of its
    // own; against the whole text, as the table above measures it (0.721 as drawn).
    let (score, _) = recall(&reference, &doc.text);
    assert!(score >= 0.75, "recall {score:.3}");
}
