//! `rag ingest` and `rag search` end to end on the real default model and real indexes:
//! hostile files reported while the rest is indexed, re-runs that embed nothing, updates and
//! deletions, and kill -9 at several moments of an ingest.
mod common;

use common::text;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn rag(args: &[&str]) -> Output {
    rag_cmd(args).output().expect("run rag")
}

fn rag_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rag"));
    // These scenarios run on the Llama embedder (the slower one: a kill lands mid-ingest);
    // tests/ask_cli.rs covers the default, MiniLM.
    c.args(args)
        .env_remove("RAG_CONFIG")
        .env("RAG_THREADS", "2")
        .env("RAG_EMBEDDER", "llama");
    c
}

fn search_json(index: &Path, query: &str, k: usize) -> Vec<serde_json::Value> {
    let o = rag(&[
        "search",
        "--json",
        "-k",
        &k.to_string(),
        "--index",
        index.to_str().unwrap(),
        query,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["passages"].as_array().expect("passages").clone()
}

fn summary(o: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&o.stdout);
    let last = stdout.lines().last().expect("summary line");
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["event"], "summary", "{last}");
    v["report"].clone()
}

#[test]
fn hostile_corpus_then_noop_update_and_delete() {
    if common::default_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    std::fs::write(docs.join("zebra.txt"), "Zebras are African equines with distinctive black-and-white striped coats. Each zebra has a unique stripe pattern.").unwrap();
    std::fs::write(docs.join("sub/volcano.md"), "# Volcanoes\n\nMount Etna is an active stratovolcano on the east coast of Sicily, Italy.\n\n## Eruptions\n\nEtna erupts frequently.").unwrap();
    std::fs::write(docs.join("page.html"), "<html><head><title>Tea</title><script>var x = 'do not index';</script></head><body><h1>Green tea</h1><p>Matcha is powdered green tea from Japan.</p></body></html>").unwrap();
    // Hostile files.
    std::fs::write(
        docs.join("binary.txt"),
        [0u8, 159, 146, 150, 0, 0, 1, 2, 3, 0, 255, 0],
    )
    .unwrap();
    std::fs::write(
        docs.join("latin1.txt"),
        b"Caf\xe9 cr\xe8me: invalid UTF-8 but readable text about coffee.",
    )
    .unwrap();
    std::fs::write(docs.join("empty.md"), "").unwrap();
    std::fs::write(
        docs.join("broken.pdf"),
        b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer garbage",
    )
    .unwrap();
    std::fs::write(docs.join("image.png"), [137u8, 80, 78, 71]).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&docs, docs.join("sub/loop")).unwrap();

    let index = dir.path().join("idx");
    let idx = index.to_str().unwrap();
    let o = rag(&["ingest", "--json", "--index", idx, docs.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "some files failed: {out}");
    assert!(!out.contains("panicked"), "{out}");
    let r = summary(&o);
    assert_eq!(r["indexed"], 4, "{out}"); // zebra, volcano, page, latin1

    // Files are parsed on their own thread and embedded in batches, yet every file's event
    // comes once, and the indexed ones in the walk's order (sorted by path).
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "file")
        .collect();
    let paths = |status: Option<&str>| -> Vec<String> {
        events
            .iter()
            .filter(|v| status.is_none_or(|s| v["status"] == s))
            .map(|v| v["path"].as_str().unwrap().to_string())
            .collect()
    };
    let mut all = paths(None);
    assert_eq!(all.len(), 9, "{out}");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 9, "each file once: {out}");
    let indexed = paths(Some("indexed"));
    assert!(indexed.is_sorted(), "{out}");
    assert!(
        r["failed"].as_u64().unwrap() >= 2,
        "binary, broken pdf: {out}"
    );
    for name in ["binary.txt", "empty.md", "broken.pdf"] {
        assert!(out.contains(name), "{name} reported: {out}");
    }
    assert!(
        out.contains("image.png"),
        "unsupported file reported as skipped: {out}"
    );

    let hits = search_json(&index, "Which volcano is on Sicily?", 3);
    assert!(
        hits[0]["path"].as_str().unwrap().ends_with("volcano.md"),
        "{hits:?}"
    );
    let hits = search_json(&index, "powdered green tea", 3);
    assert!(hits[0]["path"].as_str().unwrap().ends_with("page.html"));
    assert!(!hits
        .iter()
        .any(|h| h["text"].as_str().unwrap().contains("do not index")));

    // Unchanged: nothing embedded.
    let o = rag(&["ingest", "--json", "--index", idx, docs.to_str().unwrap()]);
    let r = summary(&o);
    assert_eq!(
        (r["indexed"].as_u64(), r["unchanged"].as_u64()),
        (Some(0), Some(4)),
        "{}",
        text(&o)
    );
    let total = r["total_chunks"].as_u64().unwrap();

    // A changed file is replaced, a deleted one removed.
    std::fs::write(
        docs.join("zebra.txt"),
        "Okapis are giraffids from the Congo rainforest.",
    )
    .unwrap();
    std::fs::remove_file(docs.join("page.html")).unwrap();
    let o = rag(&["ingest", "--json", "--index", idx, docs.to_str().unwrap()]);
    let r = summary(&o);
    assert_eq!(
        (r["indexed"].as_u64(), r["removed"].as_u64()),
        (Some(1), Some(1)),
        "{}",
        text(&o)
    );
    assert!(r["total_chunks"].as_u64().unwrap() < total + 1);
    let all = search_json(&index, "zebra stripes okapi tea matcha", 20);
    for h in &all {
        let t = h["text"].as_str().unwrap();
        assert!(
            !t.contains("Zebras") && !t.contains("Matcha"),
            "stale chunk returned: {t}"
        );
    }
    assert!(all
        .iter()
        .any(|h| h["text"].as_str().unwrap().contains("Okapis")));
}

#[test]
fn searching_without_an_index_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let o = rag(&[
        "search",
        "--index",
        dir.path().join("none").to_str().unwrap(),
        "anything",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("rag ingest"), "{}", text(&o));
}

/// kill -9 a real `rag ingest` at several moments; every time the index must open and answer
/// from its last commit, and the next ingest must finish with exactly the chunks of a clean run.
#[test]
fn kill_during_ingest_then_resume() {
    if common::default_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    for i in 0..40 {
        let body = format!(
            "Document {i}. The secret number of this document is {}. {}",
            i * 7919 % 1000,
            "It talks about rivers, mountains and the weather of region number ".repeat(8)
                + &i.to_string()
        );
        std::fs::write(docs.join(format!("doc{i:02}.txt")), body).unwrap();
    }
    let d = docs.to_str().unwrap();
    // The clean reference.
    let clean = dir.path().join("clean");
    let o = rag(&["ingest", "--json", "--index", clean.to_str().unwrap(), d]);
    assert!(o.status.success(), "{}", text(&o));
    let want = summary(&o)["total_chunks"].as_u64().unwrap();

    let index = dir.path().join("idx");
    let idx = index.to_str().unwrap();
    let mut killed = 0;
    for delay_ms in [300u64, 1200, 2500, 4000] {
        let mut child = rag_cmd(&[
            "ingest",
            "--quiet",
            "--commit-every",
            "3",
            "--index",
            idx,
            d,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
        // Whatever was committed opens and answers.
        if index.join("manifest.json").exists() {
            let o = rag(&[
                "search",
                "--mode",
                "bm25",
                "--json",
                "--index",
                idx,
                "secret number",
            ]);
            assert!(
                o.status.success(),
                "after kill at {delay_ms} ms: {}",
                text(&o)
            );
        }
    }
    assert!(
        killed > 0,
        "no ingest was killed mid-way; the test proved nothing"
    );
    let o = rag(&["ingest", "--json", "--index", idx, d]);
    assert!(o.status.success(), "{}", text(&o));
    let r = summary(&o);
    assert_eq!(
        r["total_chunks"].as_u64().unwrap(),
        want,
        "no duplicate or missing chunks"
    );
    assert_eq!(r["total_documents"].as_u64().unwrap(), 40);
    let hits = search_json(&index, "document secret number rivers", 50);
    let mut ids: Vec<u64> = hits
        .iter()
        .map(|h| h["chunk_id"].as_u64().unwrap())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
}

/// A zip archive of (name, content) members: the container of .docx, .pptx and .xlsx files.
fn zip_file(path: &Path, members: &[(&str, &str)]) {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in members {
        w.start_file(*name, opts).unwrap();
        w.write_all(content.as_bytes()).unwrap();
    }
    w.finish().unwrap();
}

/// Office files, a CSV and a damaged .docx in one folder: the readable ones are indexed and found
/// with their locators (slide, page, sheet heading, row), the damaged one reported by name.
#[test]
fn office_files_and_csv_are_searchable_with_locators() {
    if common::default_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let w = r#"xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main""#;
    zip_file(
        &docs.join("report.docx"),
        &[(
            "word/document.xml",
            &format!(
                r#"<w:document {w}><w:body><w:p><w:r><w:t>Welcome to the annual report.</w:t></w:r></w:p><w:p><w:r><w:br w:type="page"/><w:t>The harbour master is Anneliese Brandt.</w:t></w:r></w:p></w:body></w:document>"#
            ),
        )],
    );
    let slide = |title: &str, body: &str| {
        format!(
            r#"<p:sld xmlns:p="p" xmlns:a="a"><p:cSld><p:spTree><p:sp><p:nvSpPr><p:nvPr><p:ph type="title"/></p:nvPr></p:nvSpPr><p:txBody><a:p><a:r><a:t>{title}</a:t></a:r></a:p></p:txBody></p:sp><p:sp><p:txBody><a:p><a:r><a:t>{body}</a:t></a:r></a:p></p:txBody></p:sp></p:spTree></p:cSld></p:sld>"#
        )
    };
    zip_file(
        &docs.join("deck.pptx"),
        &[
            (
                "ppt/slides/slide1.xml",
                &slide("Agenda", "Welcome and introductions."),
            ),
            (
                "ppt/slides/slide2.xml",
                &slide(
                    "Dredging",
                    "The channel was dredged to fourteen metres in March.",
                ),
            ),
        ],
    );
    zip_file(
        &docs.join("fees.xlsx"),
        &[
            (
                "xl/workbook.xml",
                r#"<workbook xmlns:r="r"><sheets><sheet name="Berth fees" r:id="rId1"/></sheets></workbook>"#,
            ),
            (
                "xl/_rels/workbook.xml.rels",
                r#"<Relationships><Relationship Id="rId1" Target="worksheets/sheet1.xml"/></Relationships>"#,
            ),
            (
                "xl/worksheets/sheet1.xml",
                r#"<worksheet><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>Vessel class</t></is></c><c r="B1" t="inlineStr"><is><t>Daily fee</t></is></c></row><row r="2"><c r="A2" t="inlineStr"><is><t>Container feeder</t></is></c><c r="B2"><v>1850</v></c></row></sheetData></worksheet>"#,
            ),
        ],
    );
    std::fs::write(
        docs.join("ports.csv"),
        "Port,Country,TEU\nRotterdam,Netherlands,13400000\nHamburg,Germany,7700000\n",
    )
    .unwrap();
    std::fs::write(docs.join("damaged.docx"), b"PK\x03\x04 cut short").unwrap();

    let index = dir.path().join("idx");
    let idx = index.to_str().unwrap();
    let o = rag(&["ingest", "--json", "--index", idx, docs.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "one file failed: {out}");
    let r = summary(&o);
    assert_eq!(r["indexed"], 4, "{out}");
    assert_eq!(r["failed"], 1, "{out}");
    assert!(out.contains("damaged.docx"), "{out}");

    let hits = search_json(&index, "Who is the harbour master?", 3);
    assert!(
        hits[0]["path"].as_str().unwrap().ends_with("report.docx"),
        "{hits:?}"
    );
    // One short chunk over the page break Word recorded.
    assert_eq!(hits[0]["pages"], serde_json::json!([1, 2]), "{hits:?}");

    let hits = search_json(&index, "daily fee for a container feeder", 3);
    assert!(
        hits[0]["path"].as_str().unwrap().ends_with("fees.xlsx"),
        "{hits:?}"
    );
    assert_eq!(hits[0]["heading"], "Berth fees", "{hits:?}");
    let t = hits[0]["text"].as_str().unwrap();
    assert!(
        t.contains("Row 2: Vessel class: Container feeder; Daily fee: 1850"),
        "{t}"
    );

    let hits = search_json(&index, "Rotterdam TEU", 3);
    assert!(
        hits[0]["path"].as_str().unwrap().ends_with("ports.csv"),
        "{hits:?}"
    );
    assert!(hits[0]["text"]
        .as_str()
        .unwrap()
        .contains("Port: Rotterdam; Country: Netherlands; TEU: 13400000"));

    // The terminal names the slide.
    let o = rag(&[
        "search",
        "-k",
        "1",
        "--index",
        idx,
        "channel dredged fourteen metres",
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("deck.pptx (slide 2)"), "{out}");
}

/// `rag ingest --watch`: files added, changed, renamed and removed are picked up by the running
/// process (one pass per settled change), and a search from another process meanwhile sees the
/// last commit.
#[test]
fn watch_keeps_the_index_current() {
    use std::io::BufRead;
    use std::sync::mpsc;

    if common::default_model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("a.txt"),
        "Zebras are African equines with striped coats.",
    )
    .unwrap();
    let index = dir.path().join("idx");
    let idx = index.to_str().unwrap();
    let mut child = rag_cmd(&[
        "ingest",
        "--watch",
        "--interval",
        "0.2",
        "--json",
        "--index",
        idx,
        docs.to_str().unwrap(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _child = Kill(child);
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    // The next summary, as (indexed, unchanged, removed).
    let next = |step: &str| -> (u64, u64, u64) {
        loop {
            let v = rx
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|e| panic!("{step}: no summary within two minutes ({e})"));
            if v["event"] == "summary" {
                let r = &v["report"];
                let n = |k: &str| r[k].as_u64().unwrap();
                return (n("indexed"), n("unchanged"), n("removed"));
            }
        }
    };
    assert_eq!(next("first pass"), (1, 0, 0));
    let watching = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(watching["event"], "watching", "{watching}");

    std::fs::write(docs.join("b.md"), "# Volcanoes\n\nMount Etna is on Sicily.").unwrap();
    assert_eq!(next("added"), (1, 1, 0), "added");
    std::fs::write(
        docs.join("a.txt"),
        "Okapis are giraffids from the Congo rainforest.",
    )
    .unwrap();
    assert_eq!(next("changed"), (1, 1, 0), "changed");
    std::fs::rename(docs.join("b.md"), docs.join("c.md")).unwrap();
    assert_eq!(next("renamed"), (1, 1, 1), "renamed");
    let hits = search_json(&index, "Which volcano is on Sicily?", 1);
    assert!(
        hits[0]["path"].as_str().unwrap().ends_with("c.md"),
        "{hits:?}"
    );
    std::fs::remove_file(docs.join("a.txt")).unwrap();
    assert_eq!(next("removed"), (0, 1, 1), "removed");
    let all = search_json(&index, "okapi zebra volcano", 10);
    assert_eq!(all.len(), 1, "{all:?}");
    // Nothing changes: no further pass.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        rx.try_iter().all(|v| v["event"] != "summary"),
        "a pass without a change"
    );
}
