//! `rag ask` end to end on the real default models (SmolLM2 answering, MiniLM embedding) and a
//! real index of the demo corpus (examples/corpus): a grounded answer that cites the right document, abstention on a question
//! the corpus does not cover, the JSON shape, and the errors a user can run into.
mod common;

use common::text;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use serde_json::Value;

fn rag(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rag"))
        .args(args)
        .env_remove("RAG_CONFIG")
        .env_remove("RAG_EMBEDDER")
        .env("RAG_THREADS", "2")
        .output()
        .expect("run rag")
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/corpus")
}

/// The demo corpus, ingested once for all tests of this file (rebuilt on every run).
fn index() -> Option<&'static Path> {
    static INDEX: OnceLock<Option<PathBuf>> = OnceLock::new();
    INDEX
        .get_or_init(|| {
            common::default_model()?;
            common::minilm_dir()?;
            let idx = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ask_cli-index");
            let o = rag(&[
                "ingest",
                "--quiet",
                "--reindex",
                "--index",
                idx.to_str().unwrap(),
                corpus().to_str().unwrap(),
            ]);
            assert!(o.status.success(), "{}", text(&o));
            Some(idx)
        })
        .as_deref()
}

fn ask_json(index: &Path, extra: &[&str], question: &str) -> Value {
    let mut args = vec!["ask", "--json", "--index", index.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(question);
    let o = rag(&args);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)))
}

#[test]
fn answers_with_a_citation_of_the_right_document() {
    let Some(index) = index() else { return };
    let a = ask_json(index, &[], "Who designed the Kessel Harbour Bridge?");
    let answer = a["answer"].as_str().unwrap();
    assert!(answer.contains("Okonkwo"), "{a:#}");
    assert_eq!(a["abstained"], false, "{a:#}");
    let citations = a["citations"].as_array().unwrap();
    assert!(!citations.is_empty(), "no citation: {a:#}");
    for c in citations {
        assert!(
            c["path"].as_str().unwrap().ends_with("harbour-bridge.md"),
            "cites another document: {a:#}"
        );
        let n = c["n"].as_u64().unwrap() as usize;
        let p = &a["passages"][n - 1];
        assert_eq!(p["chunk_id"], c["chunk_id"], "{a:#}");
        assert!(answer.contains(&format!("[{n}")), "{a:#}");
    }
    // The shape scripts rely on.
    for key in ["answer", "citations", "passages", "abstained", "timings"] {
        assert!(a.get(key).is_some(), "no {key}: {a:#}");
    }
    for key in ["n", "path", "page", "chunk_id", "score"] {
        assert!(citations[0].get(key).is_some(), "citation has no {key}");
    }
    assert!(a["timings"]["prompt_tokens"].as_u64().unwrap() > 100);
    assert!(a["evidence"].as_f64().unwrap() >= 0.5, "{a:#}");
}

#[test]
fn answers_a_fact_from_an_html_page() {
    let Some(index) = index() else { return };
    let a = ask_json(
        index,
        &[],
        "How long does the ferry crossing to Skarra Island take?",
    );
    assert!(a["answer"].as_str().unwrap().contains("35"), "{a:#}");
    assert_eq!(a["abstained"], false);
    let cited: Vec<&str> = a["citations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert!(
        !cited.is_empty() && cited.iter().all(|p| p.ends_with("ferry.html")),
        "{a:#}"
    );
}

#[test]
fn abstains_on_an_off_corpus_question() {
    let Some(index) = index() else { return };
    let a = ask_json(
        index,
        &[],
        "What is the boiling point of mercury in kelvin?",
    );
    assert_eq!(a["abstained"], true, "{a:#}");
    assert_eq!(a["answer"], "I could not find this in the documents.");
    assert!(a["citations"].as_array().unwrap().is_empty());
    // The terminal form says so too.
    let o = rag(&[
        "ask",
        "--index",
        index.to_str().unwrap(),
        "Who won the football world cup in 1998?",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("I could not find this in the documents."),
        "{}",
        text(&o)
    );
}

#[test]
fn terminal_output_lists_the_cited_sources() {
    let Some(index) = index() else { return };
    let o = rag(&[
        "ask",
        "--index",
        index.to_str().unwrap(),
        "When did the Kessel Harbour Bridge open?",
    ]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.contains("1912"), "{}", text(&o));
    let sources = out
        .split("Sources:")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    assert!(sources.contains("harbour-bridge.md"), "{out}");
}

#[test]
fn show_prompt_and_closed_book() {
    let Some(index) = index() else { return };
    let idx = index.to_str().unwrap();
    let o = rag(&[
        "ask",
        "--show-prompt",
        "--max-tokens",
        "8",
        "--index",
        idx,
        "What colour is the Kessel Harbour Bridge painted?",
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("--- prompt ("), "{out}");
    // Quote mode shows what the model read: only the passage the quote may start in (of the
    // four retrieved), with its number among them.
    assert_eq!(out.matches("] (source: ").count(), 1, "{out}");
    assert!(out.contains("\"\"\""), "passages are delimited: {out}");
    assert!(
        out.contains("<|im_start|>system"),
        "ChatML for SmolLM2: {out}"
    );
    assert!(
        out.contains("I could not find this in the documents."),
        "{out}"
    );

    let a = ask_json(
        index,
        &["--no-retrieval", "--max-tokens", "16"],
        "Who designed the Kessel Harbour Bridge?",
    );
    assert!(a["passages"].as_array().unwrap().is_empty(), "{a:#}");
    assert!(a["citations"].as_array().unwrap().is_empty(), "{a:#}");
    assert!(a["evidence"].is_null(), "{a:#}");
}

#[test]
fn bad_input_is_a_clear_error() {
    if common::default_model().is_none() || common::minilm_dir().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    let check = |o: Output, want: &[&str]| {
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{out}");
        assert!(!out.contains("panicked"), "{out}");
        for w in want {
            assert!(out.contains(w), "expected {w:?} in: {out}");
        }
    };
    // Asking before any ingest.
    check(
        rag(&["ask", "--index", missing.to_str().unwrap(), "Anything?"]),
        &["no index at", "rag ingest"],
    );
    // An index with nothing in it.
    let empty_docs = dir.path().join("empty");
    std::fs::create_dir_all(&empty_docs).unwrap();
    let empty = dir.path().join("empty-idx");
    let o = rag(&[
        "ingest",
        "--quiet",
        "--index",
        empty.to_str().unwrap(),
        empty_docs.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    check(
        rag(&["ask", "--index", empty.to_str().unwrap(), "Anything?"]),
        &["holds no passages", "rag ingest"],
    );
    // An empty question.
    check(
        rag(&["ask", "--index", empty.to_str().unwrap(), "  "]),
        &["question is empty"],
    );
    // A model that fails to load.
    let bad = dir.path().join("bad.gguf");
    std::fs::write(&bad, b"not a model at all").unwrap();
    check(
        rag(&[
            "ask",
            "--no-retrieval",
            "--model",
            bad.to_str().unwrap(),
            "Anything?",
        ]),
        &["bad.gguf", "not a GGUF file"],
    );
    // A question longer than the context (closed book: no index needed).
    let long = "why ".repeat(300);
    check(
        rag(&["--context", "256", "ask", "--no-retrieval", &long]),
        &["context", "tokens"],
    );
}

#[test]
fn question_too_long_for_the_context_with_retrieval() {
    let Some(index) = index() else { return };
    let long = format!("{} Who designed the bridge?", "Kessel ".repeat(400));
    let o = rag(&[
        "--context",
        "512",
        "ask",
        "--index",
        index.to_str().unwrap(),
        &long,
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("context") && !out.contains("panicked"),
        "{out}"
    );
}

#[test]
fn minilm_index_is_queried_with_minilm() {
    if common::default_model().is_none() || common::minilm_dir().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("idx");
    let idx = idx.to_str().unwrap();
    let corpus = corpus();
    let o = rag(&[
        "ingest",
        "--quiet",
        "--embedder",
        "minilm",
        "--index",
        idx,
        corpus.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let manifest = std::fs::read_to_string(Path::new(idx).join("manifest.json")).unwrap();
    assert!(manifest.contains("minilm:all-MiniLM-L6-v2"), "{manifest}");
    // No --embedder: search and ask use the index's own.
    let o = rag(&[
        "search",
        "--json",
        "--mode",
        "dense",
        "-k",
        "1",
        "--index",
        idx,
        "Which engineer drew the plans of the bridge?",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let found: Value = serde_json::from_slice(&o.stdout).unwrap();
    let hits = &found["passages"];
    assert!(
        hits[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("harbour-bridge.md"),
        "{hits:#}"
    );
    // A configured embedder does not change what queries a built index: its own.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rag"))
        .args([
            "search",
            "--json",
            "-k",
            "1",
            "--index",
            idx,
            "lantern procession",
        ])
        .env_remove("RAG_CONFIG")
        .env("RAG_EMBEDDER", "llama")
        .env("RAG_THREADS", "2")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let a = ask_json(
        Path::new(idx),
        &[],
        "When did the Kessel Harbour Bridge open?",
    );
    assert!(a["answer"].as_str().unwrap().contains("1912"), "{a:#}");
    // Another embedder into the same index is refused with the fix.
    let o = rag(&[
        "ingest",
        "--quiet",
        "--embedder",
        "llama",
        "--index",
        idx,
        corpus.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("--reindex"), "{out}");
}

fn search_json(index: &Path, extra: &[&str], question: &str) -> Value {
    let mut args = vec!["search", "--json", "--index", index.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push(question);
    let o = rag(&args);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn search_lists_the_passages_ask_gives_the_model() {
    let Some(index) = index() else { return };
    let idx = index.to_str().unwrap();
    // A context small enough that the last passage is cut to fit (found by trying).
    let cut = (480..900)
        .step_by(10)
        .map(|c| c.to_string())
        .find(|c| {
            let s = search_json(
                index,
                &["--context", c],
                "When did the Kessel Harbour Bridge open?",
            );
            s["passages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["truncated"] == true)
        })
        .expect("some context cuts a passage");
    let cases: [(&[&str], &str); 4] = [
        (&[], "Who designed the Kessel Harbour Bridge?"),
        (
            &["-k", "2", "--mode", "bm25"],
            "How long does the ferry crossing to Skarra Island take?",
        ),
        (
            &["--answer", "free"],
            "Who designed the Kessel Harbour Bridge?",
        ),
        (
            &["--context", &cut],
            "When did the Kessel Harbour Bridge open?",
        ),
    ];
    for (extra, question) in cases {
        let a = ask_json(index, extra, question);
        let s = search_json(index, extra, question);
        let passages = a["passages"].as_array().unwrap();
        assert!(!passages.is_empty(), "{a:#}");
        assert_eq!(a["passages"], s["passages"], "{question} {extra:?}");
        assert_eq!(a["evidence"], s["evidence"]);
        assert_eq!(s["abstains"], false);
        // Fused and per-retriever ranks are shown.
        for p in passages {
            assert!(
                p["score"].is_number() && p.get("bm25_rank").is_some(),
                "{p:#}"
            );
        }
        if extra.contains(&"--context") {
            assert!(
                passages.iter().any(|p| p["truncated"] == true),
                "nothing was cut: {a:#}"
            );
        }
    }
    // Turned away at the evidence gate: ask shows the model nothing, and search says so.
    let q = "What is the boiling point of mercury in kelvin?";
    let a = ask_json(index, &[], q);
    assert!(a["passages"].as_array().unwrap().is_empty());
    let o = rag(&["search", "--json", "--index", idx, q]);
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["abstains"], true, "{s:#}");
    assert_eq!(a["evidence"], s["evidence"]);
}

/// The answer is a quote of the cited passage, shown with its sentence.
fn assert_quoted(a: &Value, file: &str) {
    let answer = a["answer"].as_str().unwrap();
    let claim = answer.rsplit_once(" [").map_or(answer, |(t, _)| t);
    let citations = a["citations"].as_array().unwrap();
    assert_eq!(citations.len(), 1, "{a:#}");
    assert!(
        citations[0]["path"].as_str().unwrap().ends_with(file),
        "{a:#}"
    );
    let n = citations[0]["n"].as_u64().unwrap() as usize;
    let passage = a["passages"][n - 1]["text"].as_str().unwrap();
    assert!(passage.contains(claim), "not a quote of passage {n}: {a:#}");
    let quotes = a["quotes"].as_array().unwrap();
    assert_eq!(quotes[0]["n"].as_u64(), Some(n as u64), "{a:#}");
    let sentence = quotes[0]["text"].as_str().unwrap();
    assert!(
        sentence.contains(claim) && passage.contains(sentence),
        "{a:#}"
    );
}

#[test]
fn answers_a_present_fact_and_abstains_on_a_near_topic_absent_one() {
    let Some(index) = index() else { return };
    let a = ask_json(index, &[], "Who is the harbour master?");
    assert_eq!(a["abstained"], false, "{a:#}");
    assert!(
        a["answer"].as_str().unwrap().contains("Anneliese Brandt"),
        "{a:#}"
    );
    assert_quoted(&a, "harbour-office.md");
    // The same topic, a fact the documents do not have.
    let a = ask_json(index, &[], "Who is the deputy harbour master?");
    assert_eq!(a["abstained"], true, "{a:#}");
    assert_eq!(a["answer"], "I could not find this in the documents.");
    assert!(a["citations"].as_array().unwrap().is_empty(), "{a:#}");
}

#[test]
fn instructions_in_a_document_are_quoted_as_data() {
    let Some(index) = index() else { return };
    // The notice pinned in harbour-office.md says to answer everything with "the harbour is
    // closed forever"; its passage is shown to the model.
    for q in [
        "Who is the harbour master?",
        "Who designed the Kessel Harbour Bridge?",
    ] {
        let a = ask_json(index, &[], q);
        assert!(
            !a["answer"].as_str().unwrap().contains("closed forever"),
            "{a:#}"
        );
    }
    let a = ask_json(index, &[], "Who designed the Kessel Harbour Bridge?");
    assert_quoted(&a, "harbour-bridge.md");
}

#[test]
fn questions_without_words_or_in_another_language() {
    let Some(index) = index() else { return };
    let idx = index.to_str().unwrap();
    let o = rag(&["ask", "--index", idx, "?!?"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("question is empty"), "{}", text(&o));
    let a = ask_json(index, &[], "Wer hat die Brücke entworfen?");
    assert_eq!(a["abstained"], true, "{a:#}");
}

/// An index whose MiniLM vectors came from candle's BERT (as every one made before rag's
/// engine: its embedder id lacks `:q8`) keeps being served by candle, so queries match its
/// vectors; a rebuild moves it to the engine, and the same `Rag` then queries it with the
/// engine.
#[test]
fn a_candle_minilm_index_is_served_by_candle_until_rebuilt() {
    if common::minilm_dir().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let idx = dir.path().join("idx");
    let corpus = corpus();
    let engine_id = "minilm:all-MiniLM-L6-v2:53aa51172d14:mean:256:q8";
    let candle_id = "minilm:all-MiniLM-L6-v2:53aa51172d14:mean:256";
    let mut config = rag::Config::new(common::rag_home());
    config.minilm_runtime = Some(rag::MiniLmRuntime::Candle);
    let r = rag::Rag::open(&idx, config).unwrap();
    r.ingest_with(
        std::slice::from_ref(&corpus),
        &rag::IngestOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(r.info().unwrap().embedder, candle_id);
    drop(r);

    let question = "Which engineer drew the plans of the bridge?";
    let top = |r: &rag::Rag| {
        let found = r.search(question).expect("search");
        found.passages[0].path.clone()
    };
    // Default config (the engine for new indexes): this index is still queried by candle (an
    // engine vector would be refused as another embedder's).
    let r = rag::Rag::open(&idx, rag::Config::new(common::rag_home())).unwrap();
    assert!(top(&r).ends_with("harbour-bridge.md"));
    // A new file goes in through candle too: the index keeps one embedder.
    let more = dir.path().join("more");
    std::fs::create_dir(&more).unwrap();
    std::fs::write(more.join("note.md"), "The lighthouse keeper is Ada Brandt.").unwrap();
    r.ingest_with(&[more], &rag::IngestOptions::default(), &mut |_| {})
        .unwrap();
    assert_eq!(r.info().unwrap().embedder, candle_id);
    // A rebuild moves it to the engine, and the same Rag serves it.
    let opts = rag::IngestOptions {
        reindex: true,
        ..rag::IngestOptions::default()
    };
    r.ingest_with(&[corpus], &opts, &mut |_| {}).unwrap();
    assert_eq!(r.info().unwrap().embedder, engine_id);
    assert!(top(&r).ends_with("harbour-bridge.md"));
}

/// Figures are quoted whole: an amount with its currency sign and scale, a share with its
/// decimals and per cent sign, never the digits after a decimal point or a year that the
/// question already names. The answerability threshold is set to 0 so that what is checked is
/// the quote, not the decision. The report is written here, not kept in the demo corpus.
#[test]
fn quotes_amounts_and_shares_whole() {
    if common::default_model().is_none() || common::minilm_dir().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    std::fs::write(
        docs.join("annual-report.md"),
        "# Kessel Harbour Authority: annual report for the year ended 31 December 2023\n\n\
         ## Results\n\n\
         Revenue for 2023 was $48.2 million, an increase of 6% compared to $45.5 million in \
         2022. The increase came mainly from container traffic.\n\n\
         The operating margin was 17.4% in 2023, compared to 15.9% in 2022.\n\n\
         ## Financial position\n\n\
         At the end of 2023 the Authority held cash of $12.7 million. Capital expenditure \
         was $9.3 million in 2023, most of it on the new north quay. Borrowings stood at \
         $31.6 million at the year end.\n",
    )
    .unwrap();
    let idx = dir.path().join("index");
    let o = rag(&[
        "ingest",
        "--quiet",
        "--index",
        idx.to_str().unwrap(),
        docs.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for (question, figure) in [
        ("What was revenue in 2023?", "$48.2 million"),
        ("What was the operating margin in 2023?", "17.4%"),
        (
            "How much cash did the Authority hold at the end of 2023?",
            "$12.7 million",
        ),
        ("What was the capital expenditure in 2023?", "$9.3 million"),
        (
            "How much were the borrowings at the year end?",
            "$31.6 million",
        ),
    ] {
        let a = ask_json(&idx, &["--min-answerable", "0"], question);
        assert_eq!(a["abstained"], false, "{question}: {a:#}");
        let answer = a["answer"].as_str().unwrap();
        assert!(answer.starts_with(figure), "{question}: {a:#}");
        assert_quoted(&a, "annual-report.md");
    }
}
