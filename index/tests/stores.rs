//! One contract, both stores: what `ingest`, `search` and `ask` rely on, run on the embedded
//! store and, when `MILVUS_URI` names a server (CI starts Milvus Lite), on Milvus.

mod common;

use std::collections::{HashMap, HashSet};

use common::{doc_chunks, Rng};
use rag_index::{copy, Filter, IndexError, SearchOptions, Store, StoreWriter};

const DIM: usize = 16;

type OpenWriter<'a> = &'a dyn Fn(&str, usize, bool) -> Result<Box<dyn StoreWriter>, IndexError>;
type OpenStore<'a> = &'a dyn Fn() -> Result<Box<dyn Store>, IndexError>;

fn paths(hits: &[rag_index::Hit]) -> HashSet<String> {
    hits.iter().map(|h| h.chunk.path.clone()).collect()
}

fn contract(open_writer: OpenWriter, open_store: OpenStore) {
    let mut rng = Rng::new(11);
    let mut w = open_writer("test-embedder", DIM, true).unwrap();
    let dated = |mut chunks: Vec<rag_index::NewChunk>, t: i64| {
        chunks.iter_mut().for_each(|c| c.modified = Some(t));
        chunks
    };
    let a = dated(doc_chunks(&mut rng, DIM, "alpha", 1, 3), 1_000_000);
    let b1 = doc_chunks(&mut rng, DIM, "beta", 1, 2);
    let c = dated(doc_chunks(&mut rng, DIM, "gamma", 1, 4), 3_000_000);
    w.replace_document("/docs/x/a.md", "a1", a.clone()).unwrap();
    w.replace_document("/docs/x/b.TXT", "b1", b1).unwrap();
    w.replace_document("/docs/y/c.md", "c1", c.clone()).unwrap();
    w.replace_document("/docs/y/empty.md", "e1", Vec::new())
        .unwrap();
    w.commit().unwrap();
    assert_eq!(w.manifest().chunks, 9);
    assert_eq!(w.documents().len(), 4);

    let s = open_store().unwrap();
    assert_eq!(s.len(), 9);
    assert_eq!(s.manifest().dim, DIM);
    assert_eq!(
        s.documents().get("/docs/y/empty.md").map(String::as_str),
        Some("e1")
    );
    s.check_embedder("test-embedder", DIM).unwrap();
    assert!(matches!(
        s.check_embedder("other", DIM + 1),
        Err(IndexError::EmbedderMismatch { .. })
    ));

    // BM25 finds the named document first; the hit reads back whole.
    let none = Filter::default();
    let hits = s.bm25("gamma", 5, &none).unwrap();
    assert_eq!(hits.len(), 4, "{hits:?}");
    assert!(hits.iter().all(|h| h.chunk.path == "/docs/y/c.md"));
    let h = &hits[0];
    assert!(h.score > 0.0 && h.bm25_rank == Some(1));
    assert_eq!(h.chunk.title.as_deref(), Some("Title of gamma"));
    assert!(h.chunk.heading.as_deref().unwrap().starts_with("Section "));
    let back = s.chunk(h.chunk.chunk_id).unwrap().unwrap();
    assert_eq!(&back, &h.chunk);
    assert!(s.bm25("", 5, &none).unwrap().is_empty());
    assert!(s.bm25("zzzunknownword", 5, &none).unwrap().is_empty());

    // Dense: a stored vector finds its own chunk first, with cosine ~1.
    let dense = s.dense(&c[2].vector, 3, &none).unwrap();
    assert_eq!(dense[0].chunk.text, c[2].text);
    assert!((dense[0].score - 1.0).abs() < 1e-3, "{}", dense[0].score);
    let exact = s.exact(&c[2].vector, 3, &none).unwrap();
    assert_eq!(exact[0].chunk.chunk_id, dense[0].chunk.chunk_id);

    // Hybrid: a chunk both retrievers like comes first.
    let opts = SearchOptions {
        k: 4,
        ..Default::default()
    };
    let hy = s
        .hybrid("alpha part p1", &a[1].vector, &opts, &none)
        .unwrap();
    assert_eq!(hy[0].chunk.text, a[1].text, "{hy:?}");
    assert!(hy.len() <= 4);

    // Filters, on every retriever.
    let x = Filter::path_prefix("/docs/x/");
    assert_eq!(
        paths(&s.bm25("common words", 20, &x).unwrap()),
        HashSet::from(["/docs/x/a.md".to_string(), "/docs/x/b.TXT".to_string()])
    );
    let d = s.dense(&c[0].vector, 20, &x).unwrap();
    assert!(!d.is_empty() && d.iter().all(|h| h.chunk.path.starts_with("/docs/x/")));
    let hy = s.hybrid("gamma", &c[0].vector, &opts, &x).unwrap();
    assert!(hy.iter().all(|h| h.chunk.path.starts_with("/docs/x/")));
    assert!(s
        .bm25("gamma", 5, &Filter::path_prefix("/nowhere/"))
        .unwrap()
        .is_empty());
    // By file type (any case), alone and with a path.
    let txt = Filter::default().with_file_types(["txt"]);
    assert_eq!(
        paths(&s.bm25("common words", 20, &txt).unwrap()),
        HashSet::from(["/docs/x/b.TXT".to_string()])
    );
    let md_in_x = x.clone().with_file_types([".md"]);
    assert_eq!(
        paths(&s.bm25("common words", 20, &md_in_x).unwrap()),
        HashSet::from(["/docs/x/a.md".to_string()])
    );
    let d = s.dense(&c[0].vector, 20, &txt).unwrap();
    assert!(!d.is_empty() && d.iter().all(|h| h.chunk.path == "/docs/x/b.TXT"));
    let hy = s.hybrid("gamma", &c[0].vector, &opts, &md_in_x).unwrap();
    assert!(!hy.is_empty() && hy.iter().all(|h| h.chunk.path == "/docs/x/a.md"));
    let pdf = Filter::default().with_file_types(["pdf"]);
    assert!(s.bm25("common words", 20, &pdf).unwrap().is_empty());
    // By modification time; a document without one passes no date filter.
    assert_eq!(hits[0].chunk.modified, Some(3_000_000));
    let after = Filter {
        modified_after: Some(2_000_000),
        ..Filter::default()
    };
    let before = Filter {
        modified_before: Some(2_000_000),
        ..Filter::default()
    };
    assert_eq!(
        paths(&s.bm25("common words", 20, &after).unwrap()),
        HashSet::from(["/docs/y/c.md".to_string()])
    );
    assert_eq!(
        paths(&s.bm25("common words", 20, &before).unwrap()),
        HashSet::from(["/docs/x/a.md".to_string()])
    );
    assert_eq!(
        paths(&s.dense(&c[0].vector, 20, &before).unwrap()),
        HashSet::from(["/docs/x/a.md".to_string()])
    );
    let hy = s.hybrid("gamma", &c[0].vector, &opts, &after).unwrap();
    assert!(!hy.is_empty() && hy.iter().all(|h| h.chunk.path == "/docs/y/c.md"));
    let x_after = Filter {
        modified_after: Some(2_000_000),
        ..x.clone()
    };
    assert!(s.bm25("common words", 20, &x_after).unwrap().is_empty());

    // IDF: a word in one chunk weighs more than one in every chunk.
    let w8 = s.term_weights("gamma common").unwrap();
    let get = |t: &str| w8.iter().find(|(x, _)| x == t).unwrap().1;
    assert!(get("gamma") > get("common"), "{w8:?}");
    // Words match in another inflection ("word" finds "words"), and count so in IDF, on
    // every store (Milvus Lite's own analyzer has no stemmer).
    assert_eq!(s.bm25("Word", 20, &none).unwrap().len(), 9);
    assert_eq!(s.bm25("sections", 20, &none).unwrap().len(), 9);
    let word = s.term_weights("word").unwrap();
    assert!(word[0].1 < get("gamma"), "{word:?} {w8:?}");
    assert_eq!(s.analyze("Running dogs"), vec!["run", "dog"]);

    // Export gives the chunks back in order with their vectors.
    let out = s.export_document("/docs/x/a.md").unwrap();
    assert_eq!(out.len(), 3);
    for (got, want) in out.iter().zip(&a) {
        assert_eq!(got.text, want.text);
        assert_eq!(got.pages, want.pages);
        let cos: f32 = got
            .vector
            .iter()
            .zip(&want.vector)
            .map(|(p, q)| p * q)
            .sum();
        assert!(cos > 0.9999, "{cos}");
    }
    drop(s);

    // Replace, remove, and write the same version twice: no duplicates, nothing stale.
    let b2 = doc_chunks(&mut rng, DIM, "beta", 2, 1);
    w.replace_document("/docs/x/b.TXT", "b2", b2.clone())
        .unwrap();
    w.replace_document("/docs/x/b.TXT", "b2", b2).unwrap();
    w.remove_document("/docs/y/c.md").unwrap();
    w.replace_document("/docs/x/a.md", "a1", a).unwrap();
    w.commit().unwrap();
    let s = open_store().unwrap();
    assert_eq!(s.len(), 3 + 1, "{:?}", s.documents());
    let docs = s.documents();
    assert_eq!(docs.get("/docs/x/b.TXT").map(String::as_str), Some("b2"));
    assert!(!docs.contains_key("/docs/y/c.md"));
    assert!(s.bm25("gamma", 5, &none).unwrap().is_empty());
    let beta = s.bm25("beta", 10, &none).unwrap();
    assert_eq!(beta.len(), 1);
    assert!(beta[0].chunk.text.contains("v2"));

    // A figure with thousands separators is one term in both stores: its row is found by the
    // figure, not by a part of it.
    let row = common::chunk("Single: 41,050; Married: 6,680", rng.unit(DIM));
    w.replace_document("/docs/y/tax.md", "t1", vec![row])
        .unwrap();
    w.commit().unwrap();
    let s = open_store().unwrap();
    assert_eq!(s.manifest().analyzer, rag_index::ANALYZER_EN_STEM);
    assert_eq!(s.analyze("41,050 and 1,2"), vec!["41050", "and", "1", "2"]);
    let hits = s.bm25("Who pays 41,050?", 5, &none).unwrap();
    assert_eq!(paths(&hits), HashSet::from(["/docs/y/tax.md".to_string()]));
    assert!(s.bm25("41", 5, &none).unwrap().is_empty());
    drop(w);

    // Another embedder is refused before any write.
    assert!(matches!(
        open_writer("other-embedder", DIM, false).map(|_| ()),
        Err(IndexError::EmbedderMismatch { .. })
    ));
}

#[test]
fn embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_path_buf();
    let p2 = p.clone();
    contract(
        &move |id, dim, re| Ok(Box::new(rag_index::IndexWriter::open(&p, id, dim, re)?)),
        &move || Ok(Box::new(rag_index::Index::open(&p2)?)),
    );
}

#[test]
fn copy_between_stores() {
    let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut rng = Rng::new(5);
    let mut w = rag_index::IndexWriter::open(from.path(), "e", DIM, false).unwrap();
    for d in ["a", "b", "c"] {
        w.replace_document(d, &format!("{d}1"), doc_chunks(&mut rng, DIM, d, 1, 2))
            .unwrap();
    }
    w.commit().unwrap();
    drop(w);
    let src = rag_index::Index::open(from.path()).unwrap();
    let mut dst = rag_index::IndexWriter::open(to.path(), "e", DIM, false).unwrap();
    let mut seen = Vec::new();
    let r = copy(&src, &mut dst, 2, &mut |p, _| seen.push(p.to_string())).unwrap();
    assert_eq!((r.copied, r.unchanged, r.chunks), (3, 0, 6));
    assert_eq!(seen, ["a", "b", "c"]);
    // Again: nothing to do.
    let r = copy(&src, &mut dst, 2, &mut |_, _| {}).unwrap();
    assert_eq!((r.copied, r.unchanged), (0, 3));
    drop(dst);
    let copied = rag_index::Index::open(to.path()).unwrap();
    let want: HashMap<String, String> = src.documents();
    assert_eq!(copied.documents(), want);
    let q = src.export_document("b").unwrap();
    let hit = &copied.search_dense(&q[1].vector, 1).unwrap()[0];
    assert_eq!(hit.chunk.text, q[1].text);
}

#[cfg(feature = "milvus")]
mod milvus {
    use super::*;
    use rag_index::milvus::{Address, MilvusStore, MilvusWriter};

    /// The server named by `MILVUS_URI`, or `None` (after saying why) when there is none.
    pub fn server() -> Option<String> {
        match std::env::var("MILVUS_URI") {
            Ok(u) if !u.is_empty() => Some(u),
            _ => {
                eprintln!(
                    "skipped: MILVUS_URI is not set (CI starts Milvus Lite and sets it; \
                     scripts/milvus-lite.sh start does it by hand)"
                );
                None
            }
        }
    }

    fn address(uri: &str, collection: &str) -> Address {
        let base = uri.trim_end_matches('/');
        Address::parse(&format!("{base}/{collection}"), None).unwrap()
    }

    #[test]
    fn milvus_store() {
        let Some(uri) = server() else { return };
        let a = address(&uri, "rag_test_contract");
        let a2 = a.clone();
        contract(
            &move |id, dim, re| Ok(Box::new(MilvusWriter::open(&a, id, dim, re)?)),
            &move || Ok(Box::new(MilvusStore::open(&a2)?)),
        );
    }

    #[test]
    fn copy_embedded_into_milvus_and_back() {
        let Some(uri) = server() else { return };
        let from = tempfile::tempdir().unwrap();
        let mut rng = Rng::new(8);
        let mut w = rag_index::IndexWriter::open(from.path(), "e", DIM, false).unwrap();
        for d in ["a", "b", "c", "d"] {
            w.replace_document(d, &format!("{d}1"), doc_chunks(&mut rng, DIM, d, 1, 3))
                .unwrap();
        }
        w.commit().unwrap();
        drop(w);
        let src = rag_index::Index::open(from.path()).unwrap();
        let a = address(&uri, "rag_test_copy");
        let mut dst = MilvusWriter::open(&a, "e", DIM, true).unwrap();
        let r = copy(&src, &mut dst, 3, &mut |_, _| {}).unwrap();
        assert_eq!((r.copied, r.chunks), (4, 12));
        // A second machine (a new writer) finds everything there.
        let mut again = MilvusWriter::open(&a, "e", DIM, false).unwrap();
        let r = copy(&src, &mut again, 3, &mut |_, _| {}).unwrap();
        assert_eq!((r.copied, r.unchanged), (0, 4));
        let m = MilvusStore::open(&a).unwrap();
        assert_eq!(m.len(), 12);
        assert_eq!(m.documents(), src.documents());
        // Same searches, same answers.
        for d in ["a", "c"] {
            let q = src.export_document(d).unwrap();
            let mine = &src.search_dense(&q[0].vector, 1).unwrap()[0];
            let theirs = &m.dense(&q[0].vector, 1, &Filter::default()).unwrap()[0];
            assert_eq!(mine.chunk.text, theirs.chunk.text);
        }
        // And back into a fresh embedded store.
        let back = tempfile::tempdir().unwrap();
        let mut w = rag_index::IndexWriter::open(back.path(), "e", DIM, false).unwrap();
        let r = copy(&m, &mut w, 10, &mut |_, _| {}).unwrap();
        assert_eq!(r.chunks, 12);
    }

    /// Hybrid search on Milvus fuses the server's BM25 and dense lists by rag's RRF: each hit
    /// carries its rank in both lists, and the fused order is the one the lists give.
    #[test]
    fn milvus_hybrid_fuses_its_own_lists() {
        let Some(uri) = server() else { return };
        const WORDS: [&str; 12] = [
            "harbour", "bridge", "tide", "ferry", "crane", "pier", "storm", "cargo", "pilot",
            "lock", "canal", "buoy",
        ];
        let mut rng = Rng::new(21);
        let pick = |n: usize, rng: &mut Rng| -> String {
            (0..n)
                .map(|_| WORDS[(rng.next_u64() % WORDS.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ")
        };
        let a = address(&uri, "rag_test_fusion");
        let mut w = MilvusWriter::open(&a, "e", DIM, true).unwrap();
        for d in 0..20 {
            let chunks: Vec<_> = (0..2)
                .map(|_| {
                    let n = 4 + (rng.next_u64() % 8) as usize;
                    common::chunk(&pick(n, &mut rng), rng.unit(DIM))
                })
                .collect();
            w.replace_document(&format!("/d/{d}.md"), "h", chunks)
                .unwrap();
        }
        w.commit().unwrap();
        let m = MilvusStore::open(&a).unwrap();
        let none = Filter::default();
        let opts = SearchOptions {
            k: 6,
            bm25_depth: 10,
            dense_depth: 10,
            ..SearchOptions::default()
        };
        for q in 0..8 {
            let query = pick(1 + q % 3, &mut rng);
            let v = rng.unit(DIM);
            let bm25 = m.bm25(&query, 10, &none).unwrap();
            let dense = m.dense(&v, 10, &none).unwrap();
            let ids = |h: &[rag_index::Hit]| h.iter().map(|h| h.chunk.chunk_id).collect();
            let want = rag_index::rrf(&[ids(&bm25), ids(&dense)], opts.rrf_k);
            let got = m.hybrid(&query, &v, &opts, &none).unwrap();
            assert_eq!(got.len(), want.len().min(opts.k), "{query}");
            for (h, (id, score)) in got.iter().zip(&want) {
                assert_eq!(h.chunk.chunk_id, *id, "{query}");
                assert!((f64::from(h.score) - score).abs() < 1e-6, "{query}");
                let rank = |l: &[rag_index::Hit]| l.iter().position(|x| x.chunk.chunk_id == *id);
                assert_eq!(h.bm25_rank, rank(&bm25).map(|r| r + 1), "{query}");
                assert_eq!(h.dense_rank, rank(&dense).map(|r| r + 1), "{query}");
            }
        }
    }

    #[test]
    fn wrong_address_fails_at_once() {
        // A port nothing listens on: a clear error within seconds, not a retry loop.
        let t = std::time::Instant::now();
        let a = Address::parse("milvus://127.0.0.1:9/rag", None).unwrap();
        let e = MilvusStore::open(&a).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("milvus://127.0.0.1:9/rag"), "{e}");
        assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
    }
}
