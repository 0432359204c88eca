//! Write, commit, open, search: every retriever on a small index.

mod common;

use common::{chunk, Rng};
use rag_index::{
    Index, IndexError, IndexWriter, NewChunk, Retriever, SearchOptions, WriterOptions,
    ANALYZER_SIMPLE,
};

const DIM: usize = 32;

const TEXTS: [&str; 5] = [
    "The old cat runs across the garden every morning.",
    "Quantum computers store information in qubits.",
    "Bread needs flour, water, salt and yeast.",
    "The committee approved the annual budget on Tuesday.",
    "A café on the corner serves strong espresso.",
];

struct Fixture {
    dir: tempfile::TempDir,
    vectors: Vec<Vec<f32>>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(7);
    let vectors: Vec<Vec<f32>> = TEXTS.iter().map(|_| rng.unit(DIM)).collect();
    let mut w = IndexWriter::open(dir.path(), "test/emb", DIM, false).unwrap();
    for (i, t) in TEXTS.iter().enumerate() {
        let c = NewChunk {
            title: Some(format!("Doc {i}")),
            heading: Some("Intro > Details".to_string()),
            pages: (i == 3).then_some((4, 5)),
            byte_range: 10 * i..10 * i + t.len(),
            ..chunk(t, vectors[i].clone())
        };
        w.replace_document(&format!("docs/{i}.txt"), &format!("hash{i}"), vec![c])
            .unwrap();
    }
    w.commit().unwrap();
    Fixture { dir, vectors }
}

#[test]
fn manifest_and_stored_fields_round_trip() {
    let f = fixture();
    let idx = Index::open(f.dir.path()).unwrap();
    let m = idx.manifest();
    assert_eq!(m.format_version, 1);
    assert_eq!(m.embedder_id, "test/emb");
    assert_eq!(m.dim, DIM);
    assert_eq!(m.generation, 1);
    assert_eq!(m.documents, 5);
    assert_eq!(m.chunks, 5);
    assert_eq!(m.vectors_rows, 5);
    assert_eq!(idx.len(), 5);
    assert_eq!(idx.vector_count(), 5);

    let c = idx.chunk(3).unwrap().expect("chunk 3 exists");
    assert_eq!(c.chunk_id, 3);
    assert_eq!(c.path, "docs/3.txt");
    assert_eq!(c.content_hash, "hash3");
    assert_eq!(c.title.as_deref(), Some("Doc 3"));
    assert_eq!(c.heading.as_deref(), Some("Intro > Details"));
    assert_eq!(c.pages, Some((4, 5)));
    assert_eq!(c.byte_range, 30..30 + TEXTS[3].len());
    assert_eq!(c.text, TEXTS[3]);
    assert_eq!(idx.chunk(2).unwrap().unwrap().pages, None);
    assert!(idx.chunk(99).unwrap().is_none());

    let docs = idx.documents();
    assert_eq!(docs.len(), 5);
    assert_eq!(docs["docs/4.txt"], "hash4");

    // manifest.json on disk matches the manifest of the commit.
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.dir.path().join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(on_disk["embedder"]["id"], "test/emb");
    assert_eq!(on_disk["embedder"]["dim"], DIM);
    assert_eq!(on_disk["generation"], 1);
    assert_eq!(on_disk["vectors_rows"], 5);
}

#[test]
fn bm25_stems_and_labels() {
    let f = fixture();
    let idx = Index::open(f.dir.path()).unwrap();
    let hits = idx.search_bm25("running", 3).unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    let h = &hits[0];
    assert_eq!(h.chunk.path, "docs/0.txt");
    assert_eq!(h.found_by, Retriever::Bm25);
    assert_eq!(h.bm25_rank, Some(1));
    assert_eq!(h.bm25_score, Some(h.score));
    assert!(h.score > 0.0);
    assert_eq!((h.dense_rank, h.dense_score), (None, None));

    // Several terms: the chunk matching more of them ranks first.
    let hits = idx.search_bm25("flour and yeast for the bread", 5).unwrap();
    assert_eq!(hits[0].chunk.path, "docs/2.txt");
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

    // ASCII folding: "cafe" finds "café"; case does not matter.
    assert_eq!(
        idx.search_bm25("CAFE", 5).unwrap()[0].chunk.path,
        "docs/4.txt"
    );
    // Headings and titles are searched too.
    assert_eq!(idx.search_bm25("details", 10).unwrap().len(), 5);
    assert!(idx.search_bm25("zebra", 5).unwrap().is_empty());
    assert!(idx.search_bm25("running", 0).unwrap().is_empty());
    assert_eq!(idx.search_bm25("details", usize::MAX).unwrap().len(), 5);
    assert_eq!(idx.search_dense(&f_vec(), usize::MAX).unwrap().len(), 5);
    assert_eq!(idx.search_exact(&f_vec(), usize::MAX).unwrap().len(), 5);
}

fn f_vec() -> Vec<f32> {
    vec![1.0; DIM]
}

#[test]
fn bm25_never_errors_on_user_text() {
    let f = fixture();
    let idx = Index::open(f.dir.path()).unwrap();
    for q in [
        r#"what's "AI"?"#,
        "C++ (x)",
        "title:cat AND -garden",
        "\"unclosed",
        "((",
        ")",
        "",
        "   ",
        "*",
        "~2 ^3 cat^",
        "NOT",
        "a:b:c",
        "[1 TO 5]",
        "\\",
        "emoji 🐈 cat",
        "日本語のテキスト",
    ] {
        let r = idx.search_bm25(q, 5);
        assert!(r.is_ok(), "query {q:?} failed: {r:?}");
    }
    // Syntax characters are plain text: this finds the cat.
    let hits = idx.search_bm25("title:cat AND -garden", 5).unwrap();
    assert_eq!(hits[0].chunk.path, "docs/0.txt");
}

#[test]
fn dense_and_exact_find_the_nearest() {
    let f = fixture();
    let idx = Index::open(f.dir.path()).unwrap();
    let mut rng = Rng::new(99);
    for (i, v) in f.vectors.iter().enumerate() {
        // A nearby query, not normalised: the index normalises it.
        let q: Vec<f32> = v.iter().map(|x| 3.0 * (x + 0.05 * rng.gauss())).collect();
        for hits in [
            idx.search_dense(&q, 3).unwrap(),
            idx.search_exact(&q, 3).unwrap(),
        ] {
            assert_eq!(hits.len(), 3);
            assert_eq!(hits[0].chunk.chunk_id, i as u64);
            assert_eq!(hits[0].found_by, Retriever::Dense);
            assert_eq!(hits[0].dense_rank, Some(1));
            assert!(
                hits[0].score > 0.8 && hits[0].score <= 1.0001,
                "{}",
                hits[0].score
            );
            assert_eq!(hits[0].dense_score, Some(hits[0].score));
            assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        }
    }
    let exact = idx.search_exact(&f.vectors[1], 1).unwrap();
    assert!((exact[0].score - 1.0).abs() < 1e-5);
    assert_eq!(idx.search_exact(&f.vectors[1], 50).unwrap().len(), 5);
    assert_eq!(idx.search_dense(&f.vectors[1], 50).unwrap().len(), 5);

    assert!(matches!(
        idx.search_dense(&[1.0; DIM - 1], 3),
        Err(IndexError::DimensionMismatch {
            expected: DIM,
            found: 31
        })
    ));
    assert!(matches!(
        idx.search_exact(&[0.0; DIM], 3),
        Err(IndexError::InvalidVector { .. })
    ));
}

#[test]
fn hybrid_fuses_and_labels() {
    let f = fixture();
    let idx = Index::open(f.dir.path()).unwrap();
    let opts = SearchOptions::default();
    // BM25 finds doc 0 only; the dense list ranks doc 2 first.
    let hits = idx.search_hybrid("running", &f.vectors[2], &opts).unwrap();
    assert_eq!(hits.len(), 5, "every chunk is in the dense list");
    let top: Vec<&str> = hits.iter().take(2).map(|h| h.chunk.path.as_str()).collect();
    let h0 = hits.iter().find(|h| h.chunk.path == "docs/0.txt").unwrap();
    let h2 = hits.iter().find(|h| h.chunk.path == "docs/2.txt").unwrap();
    assert!(top.contains(&"docs/2.txt"), "{top:?}");
    assert_eq!(h2.found_by, Retriever::Dense);
    assert_eq!(h2.dense_rank, Some(1));
    assert_eq!(h2.bm25_rank, None);
    assert!((h2.score as f64 - 1.0 / 61.0).abs() < 1e-7);
    assert_eq!(
        h0.found_by,
        Retriever::Both,
        "doc 0 is also somewhere in the dense list"
    );
    assert_eq!(h0.bm25_rank, Some(1));
    let expect = 1.0 / 61.0 + 1.0 / (60.0 + h0.dense_rank.unwrap() as f64);
    assert!((h0.score as f64 - expect).abs() < 1e-7);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

    // Found by both at rank 1: the top score is 2/61.
    let hits = idx
        .search_hybrid("bread flour", &f.vectors[2], &opts)
        .unwrap();
    assert_eq!(hits[0].chunk.path, "docs/2.txt");
    assert_eq!(hits[0].found_by, Retriever::Both);
    assert!((hits[0].score as f64 - 2.0 / 61.0).abs() < 1e-7);

    // BM25 only (dense depth 0) and k.
    let o = SearchOptions {
        k: 1,
        dense_depth: 0,
        ..SearchOptions::default()
    };
    let hits = idx.search_hybrid("espresso", &f.vectors[0], &o).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].chunk.path, "docs/4.txt");
    assert_eq!(hits[0].found_by, Retriever::Bm25);

    // Deterministic.
    let a = idx.search_hybrid("the cat", &f.vectors[3], &opts).unwrap();
    for _ in 0..5 {
        assert_eq!(
            idx.search_hybrid("the cat", &f.vectors[3], &opts).unwrap(),
            a
        );
    }
}

#[test]
fn documents_without_chunks_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = IndexWriter::open(dir.path(), "e", 4, false).unwrap();
    w.replace_document("scan.pdf", "h-scan", vec![]).unwrap();
    w.replace_document(
        "a.txt",
        "h-a",
        vec![chunk("alpha", vec![1.0, 0.0, 0.0, 0.0])],
    )
    .unwrap();
    w.commit().unwrap();
    assert_eq!(w.manifest().documents, 2);
    assert_eq!(w.manifest().chunks, 1);
    assert_eq!(w.documents()["scan.pdf"], "h-scan");
    let idx = Index::open(dir.path()).unwrap();
    assert_eq!(idx.documents().len(), 2);
    assert_eq!(idx.manifest().chunks, 1);
    assert_eq!(
        idx.search_exact(&[0.0, 1.0, 0.0, 0.0], 10).unwrap().len(),
        1
    );
    assert_eq!(idx.search_bm25("h scan pdf", 10).unwrap().len(), 0);
}

#[test]
fn empty_and_missing_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let err = Index::open(dir.path()).err().unwrap();
    assert!(matches!(err, IndexError::NotFound { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "no index at {}: ingest documents into it first",
            dir.path().display()
        )
    );
    let missing = dir.path().join("nope");
    assert!(matches!(
        Index::open(&missing),
        Err(IndexError::NotFound { .. })
    ));

    // A created store that never had a document opens and answers nothing.
    drop(IndexWriter::open(dir.path(), "e", 8, false).unwrap());
    let idx = Index::open(dir.path()).unwrap();
    assert_eq!(idx.manifest().generation, 0);
    assert!(idx.is_empty());
    assert!(idx.search_bm25("anything", 5).unwrap().is_empty());
    assert!(idx.search_dense(&[1.0; 8], 5).unwrap().is_empty());
    assert!(idx.search_exact(&[1.0; 8], 5).unwrap().is_empty());
    assert!(idx
        .search_hybrid("x", &[1.0; 8], &SearchOptions::default())
        .unwrap()
        .is_empty());
}

#[test]
fn bad_vectors_are_refused_before_staging() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = IndexWriter::open(dir.path(), "e", 4, false).unwrap();
    let good = chunk("good", vec![1.0, 0.0, 0.0, 0.0]);
    let short = chunk("short", vec![1.0, 0.0, 0.0]);
    let err = w
        .replace_document("a", "h", vec![good.clone(), short])
        .unwrap_err();
    assert!(matches!(
        err,
        IndexError::DimensionMismatch {
            expected: 4,
            found: 3
        }
    ));
    let nan = chunk("nan", vec![f32::NAN, 0.0, 0.0, 0.0]);
    assert!(matches!(
        w.replace_document("a", "h", vec![nan]),
        Err(IndexError::InvalidVector { .. })
    ));
    // The writer is still usable and nothing of the refused calls was staged.
    w.replace_document("b", "h", vec![good]).unwrap();
    w.commit().unwrap();
    assert_eq!(w.manifest().chunks, 1);
    assert_eq!(w.manifest().vectors_rows, 1);
    assert!(!w.documents().contains_key("a"));
}

#[test]
fn stemming_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WriterOptions {
        stemming: false,
        ..WriterOptions::default()
    };
    let mut w = IndexWriter::open_with(dir.path(), "e", 4, false, &opts).unwrap();
    w.replace_document(
        "a",
        "h",
        vec![chunk("the cat runs", vec![1.0, 0.0, 0.0, 0.0])],
    )
    .unwrap();
    w.commit().unwrap();
    assert_eq!(w.manifest().analyzer, ANALYZER_SIMPLE);
    drop(w);
    let idx = Index::open(dir.path()).unwrap();
    assert!(idx.search_bm25("running", 5).unwrap().is_empty());
    assert_eq!(idx.search_bm25("runs", 5).unwrap().len(), 1);
}

#[test]
fn analyze_and_term_weights() {
    let f = fixture();
    let idx = Index::open(f.dir.path()).unwrap();
    // The index's analyzer: lower-cased, folded, stemmed.
    assert_eq!(
        idx.analyze("The Cats RUNNING café"),
        ["the", "cat", "run", "cafe"]
    );
    let w = idx.term_weights("the cat the zebra").unwrap();
    let names: Vec<&str> = w.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(names, ["the", "cat", "zebra"], "distinct, in order");
    let idf = |n: f64| (1.0 + (5.0 - n + 0.5) / (n + 0.5)).ln() as f32;
    // "the" is in 3 of 5 chunks, "cat" in 1, "zebra" in none.
    assert!((w[0].1 - idf(3.0)).abs() < 1e-6, "{w:?}");
    assert!((w[1].1 - idf(1.0)).abs() < 1e-6, "{w:?}");
    assert!((w[2].1 - idf(0.0)).abs() < 1e-6, "{w:?}");
    assert!(w[2].1 > w[1].1 && w[1].1 > w[0].1);
    assert!(idx.term_weights("  ,; ").unwrap().is_empty());
}

/// A term scores its best field, not the sum of its text, heading and title matches: a chunk
/// whose title and heading repeat the one query term its text has ranks below a chunk whose
/// text has both query terms (summed, the repeats won: 1 + 0.5 + 0.3 times the rare term's
/// score against the rare term plus a common one).
#[test]
fn bm25_counts_a_term_once_across_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(3);
    let mut w = IndexWriter::open(dir.path(), "test/emb", DIM, false).unwrap();
    let mut put = |path: &str, title: &str, heading: &str, text: &str| {
        let c = NewChunk {
            title: Some(title.to_string()),
            heading: Some(heading.to_string()),
            ..chunk(text, rng.unit(DIM))
        };
        w.replace_document(path, "h", vec![c]).unwrap();
    };
    put(
        "repeats.txt",
        "Glacier",
        "Glacier",
        "A glacier moves slowly downhill.",
    );
    put(
        "both.txt",
        "Notes",
        "Notes",
        "A glacier carves the valley floor.",
    );
    // "valley" is common: its weight is low.
    for i in 0..6 {
        put(
            &format!("v{i}.txt"),
            "Other",
            "Other",
            "The valley is green.",
        );
    }
    w.commit().unwrap();
    let idx = Index::open(dir.path()).unwrap();
    let hits = idx.search_bm25("glacier valley", 3).unwrap();
    assert_eq!(hits[0].chunk.path, "both.txt", "{hits:?}");
    assert_eq!(hits[1].chunk.path, "repeats.txt", "{hits:?}");
    // A word only the heading holds still finds the chunk.
    let hits = idx.search_bm25("notes", 3).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].chunk.path, "both.txt");
}
