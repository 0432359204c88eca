//! `rag eval retrieval` on a tiny BEIR set and `rag eval qa` on two SQuAD questions, end to end
//! on the real models: the commands run, write JSON of the documented shape, and score an
//! easy set as easy.
mod common;

use common::text;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

fn rag(args: &[&str], home: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rag"))
        .args(args)
        .env_remove("RAG_CONFIG")
        .env_remove("RAG_EMBEDDER")
        .env("RAG_THREADS", "2")
        // Models from the usual cache; eval indexes under a temporary home.
        .env("RAG_HOME", home)
        .output()
        .expect("run rag")
}

/// A temporary RAG_HOME whose models/ points at the real cache.
fn home() -> Option<(tempfile::TempDir, PathBuf)> {
    common::default_model()?;
    common::minilm_dir()?;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::symlink(common::rag_home().join("models"), home.join("models")).unwrap();
    Some((dir, home))
}

#[test]
fn retrieval_on_a_tiny_beir_set() {
    let Some((dir, home)) = home() else { return };
    let set = dir.path().join("tiny");
    std::fs::create_dir_all(set.join("qrels")).unwrap();
    let docs = [
        (
            "a",
            "Volcanoes",
            "Mount Etna is an active volcano on Sicily that erupts often.",
        ),
        ("b", "Tea", "Matcha is a powdered green tea made in Japan."),
        (
            "c",
            "Bridges",
            "The Golden Gate Bridge is a suspension bridge in San Francisco.",
        ),
        (
            "d",
            "Bread",
            "Sourdough bread rises with wild yeast and lactic bacteria.",
        ),
    ];
    let corpus: String = docs
        .iter()
        .map(|(id, t, x)| format!("{{\"_id\": \"{id}\", \"title\": \"{t}\", \"text\": \"{x}\"}}\n"))
        .collect();
    std::fs::write(set.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(
        set.join("queries.jsonl"),
        "{\"_id\": \"1\", \"text\": \"Which volcano erupts on Sicily?\"}\n\
         {\"_id\": \"2\", \"text\": \"powdered Japanese green tea\"}\n",
    )
    .unwrap();
    std::fs::write(
        set.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\n1\ta\t1\n2\tb\t1\n",
    )
    .unwrap();
    let o = rag(
        &[
            "eval",
            "retrieval",
            "--set",
            set.to_str().unwrap(),
            "--json",
        ],
        &home,
    );
    assert!(o.status.success(), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["documents"], 4, "{r:#}");
    assert_eq!(r["queries"], 2);
    assert!(
        r["embedder"].as_str().unwrap().starts_with("minilm:"),
        "{r:#}"
    );
    let modes: Vec<&str> = r["modes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["bm25", "dense", "exact", "hybrid"]);
    for m in r["modes"].as_array().unwrap() {
        assert_eq!(m["ndcg_at_10"], 1.0, "an easy set: {m:#}");
        assert_eq!(m["recall_at_100"], 1.0, "{m:#}");
    }
    assert_eq!(r["hnsw_recall_at_10"], 1.0);
    assert!(r["ingest"]["indexed"].as_u64() == Some(4), "{r:#}");
    // Again: nothing to ingest.
    let o = rag(
        &[
            "eval",
            "retrieval",
            "--set",
            set.to_str().unwrap(),
            "--json",
        ],
        &home,
    );
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["ingest"].is_null(), "{r:#}");
}

#[test]
fn qa_on_two_squad_questions() {
    let Some((_dir, home)) = home() else { return };
    let shared = std::env::var_os("RAG_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    if !shared.join("data/squad-v1.1-dev/questions.jsonl").exists() {
        eprintln!("SKIP: no SQuAD data under {}", shared.display());
        return;
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rag"))
        .args([
            "eval",
            "qa",
            "--articles-limit",
            "1",
            "--sample",
            "2",
            "--closed-book",
            "--json",
        ])
        .env_remove("RAG_CONFIG")
        .env("RAG_THREADS", "2")
        .env("RAG_HOME", &home)
        .env("RAG_SHARED", &shared)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["retrieval"]["n"], 2, "{r:#}");
    assert_eq!(r["closed_book"]["n"], 2, "{r:#}");
    for key in ["recall_at_k", "exact_match", "f1", "contained", "abstained"] {
        assert!(r["retrieval"].get(key).is_some(), "no {key}: {r:#}");
    }
    let recall = r["retrieval"]["recall_at_k"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&recall));
}

#[test]
fn pages_on_questions_about_one_pdf() {
    let Some((dir, home)) = home() else { return };
    let shared = std::env::var_os("RAG_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let pdf = shared.join("data/pdf-samples/pdfminer/dmca.pdf");
    if !pdf.exists() {
        eprintln!("SKIP: no {}", pdf.display());
        return;
    }
    // The DMCA summary beside a decoy note, and three questions whose pages are known.
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("law")).unwrap();
    std::fs::copy(&pdf, docs.join("law/dmca.pdf")).unwrap();
    std::fs::write(
        docs.join("notes.txt"),
        "Shopping list: bread, tea, apples. Call the plumber on Monday.",
    )
    .unwrap();
    let questions = dir.path().join("q.jsonl");
    std::fs::write(
        &questions,
        [
            r#"{"question": "When was the DMCA signed into law, and by which president?", "file": "law/dmca.pdf", "pages": [1]}"#,
            r#"{"question": "What kinds of designs does the Vessel Hull Design Protection Act protect?", "file": "law/dmca.pdf", "pages": [17]}"#,
            r#"{"question": "How does the notice and takedown procedure work for copyright owners?", "file": "law/dmca.pdf", "pages": [12]}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let (q, d) = (questions.to_str().unwrap(), docs.to_str().unwrap());
    let o = rag(
        &["eval", "pages", "--questions", q, "--docs", d, "--json"],
        &home,
    );
    assert!(o.status.success(), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["questions"], 3, "{r:#}");
    let hybrid = r["modes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mode"] == "hybrid")
        .expect("a hybrid row");
    // Easy questions with the words of their page: the document first, each page in the top
    // 10 (their pages are right: a wrong page number would never be found).
    assert_eq!(hybrid["doc_at_1"], 1.0, "{r:#}");
    assert_eq!(hybrid["page_at_10"], 1.0, "{r:#}");
    assert_eq!(r["runs"].as_array().unwrap().len(), 3);
    assert!(r.get("asked").is_none(), "asked without --ask: {r:#}");

    // --ask: each question asked as `rag ask` does (the real model), each answer in the JSON
    // and the shares computed from them.
    let o = rag(
        &[
            "eval",
            "pages",
            "--questions",
            q,
            "--docs",
            d,
            "--ask",
            "--json",
        ],
        &home,
    );
    assert!(o.status.success(), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs = r["runs"].as_array().unwrap();
    let answered: Vec<&Value> = runs
        .iter()
        .map(|run| &run["asked"])
        .filter(|a| a["abstained"] == false)
        .collect();
    for run in runs {
        let a = &run["asked"];
        assert!(a["secs"].as_f64().unwrap() > 0.0, "{run:#}");
        if a["abstained"] == true {
            assert!(!a["abstain_reason"].is_null(), "{run:#}");
            assert_eq!(a["cited_page"], false, "{run:#}");
        }
        // Only PDFs are searched, so every citation is in the one PDF.
        for c in a["cited"].as_array().unwrap() {
            assert!(
                c["path"].as_str().unwrap().ends_with("law/dmca.pdf"),
                "{run:#}"
            );
        }
    }
    let on_page = answered.iter().filter(|a| a["cited_page"] == true).count();
    let share = |k: &str| r["asked"][k].as_f64().unwrap();
    assert_eq!(share("answered"), answered.len() as f64 / 3.0, "{r:#}");
    assert_eq!(share("answered_cited_page"), on_page as f64 / 3.0, "{r:#}");
    let elsewhere = if answered.is_empty() {
        0.0
    } else {
        (answered.len() - on_page) as f64 / answered.len() as f64
    };
    assert_eq!(share("answered_elsewhere"), elsewhere, "{r:#}");
    // The first question's answer (signed on October 28, 1998, by President Clinton) is on
    // page 1, in the summary's opening paragraph.
    let first = &runs[0]["asked"];
    if first["abstained"] == false {
        assert_eq!(first["cited_page"], true, "{r:#}");
    }

    // A question whose file is not in --docs is refused, naming the file.
    std::fs::write(
        &questions,
        r#"{"question": "q?", "file": "law/missing.pdf", "pages": [1]}"#,
    )
    .unwrap();
    let o = rag(&["eval", "pages", "--questions", q, "--docs", d], &home);
    assert!(!o.status.success());
    assert!(text(&o).contains("missing.pdf"), "{}", text(&o));
}
