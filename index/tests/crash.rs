//! Crash safety: an interrupted ingest leaves the last commit, and the next writer finishes the
//! job without duplicates. The last test kills a real writer process with SIGKILL.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use common::{doc_chunks, Rng};
use rag_index::{Index, IndexError, IndexWriter};

const DIM: usize = 8;

fn vectors_len(dir: &Path) -> u64 {
    fs::metadata(dir.join("vectors.f32")).unwrap().len()
}

fn manifest_file(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

/// Every live chunk, by (path, text): duplicates would show as counts above 1.
fn check_no_duplicates(idx: &Index) {
    let mut seen = HashSet::new();
    for id in 0..idx.manifest().vectors_rows {
        if let Some(c) = idx.chunk(id).unwrap() {
            assert!(
                seen.insert((c.path.clone(), c.text.clone())),
                "duplicate {c:?}"
            );
            assert_eq!(idx.documents()[&c.path], c.content_hash, "{c:?}");
        }
    }
    assert_eq!(seen.len(), idx.len());
    assert_eq!(idx.manifest().chunks, idx.len());
}

fn base(dir: &Path) -> Rng {
    let mut rng = Rng::new(11);
    let mut w = IndexWriter::open(dir, "e", DIM, false).unwrap();
    w.replace_document("a", "a1", doc_chunks(&mut rng, DIM, "alpha", 1, 3))
        .unwrap();
    w.commit().unwrap();
    rng
}

#[test]
fn uncommitted_work_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = base(dir.path());
    {
        let mut w = IndexWriter::open(dir.path(), "e", DIM, false).unwrap();
        w.replace_document("b", "b1", doc_chunks(&mut rng, DIM, "beta", 1, 4))
            .unwrap();
        w.replace_document("a", "a2", doc_chunks(&mut rng, DIM, "alpha", 2, 2))
            .unwrap();
        // Dropped without commit: as if killed (the staged rows even reach the file).
    }
    assert_eq!(vectors_len(dir.path()), 9 * DIM as u64 * 4);
    let idx = Index::open(dir.path()).unwrap();
    assert_eq!(idx.manifest().generation, 1);
    assert_eq!(idx.documents(), HashMap::from([("a".into(), "a1".into())]));
    assert_eq!(idx.len(), 3);
    assert!(idx.search_bm25("beta", 10).unwrap().is_empty());

    let mut w = IndexWriter::open(dir.path(), "e", DIM, false).unwrap();
    assert_eq!(
        vectors_len(dir.path()),
        3 * DIM as u64 * 4,
        "trailing rows cut"
    );
    w.replace_document("b", "b1", doc_chunks(&mut rng, DIM, "beta", 1, 4))
        .unwrap();
    w.commit().unwrap();
    assert_eq!(w.manifest().vectors_rows, 7);
    drop(w);
    let idx = Index::open(dir.path()).unwrap();
    assert_eq!(idx.len(), 7);
    check_no_duplicates(&idx);
}

#[test]
fn missing_or_stale_manifest_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = base(dir.path());
    let gen1 = fs::read_to_string(dir.path().join("manifest.json")).unwrap();
    {
        let mut w = IndexWriter::open(dir.path(), "e", DIM, false).unwrap();
        w.replace_document("b", "b1", doc_chunks(&mut rng, DIM, "beta", 1, 2))
            .unwrap();
        w.commit().unwrap();
    }
    // As if killed between the tantivy commit and the manifest rename.
    fs::write(dir.path().join("manifest.json"), &gen1).unwrap();
    let idx = Index::open(dir.path()).unwrap();
    assert_eq!(
        idx.manifest().generation,
        2,
        "readers trust the commit payload"
    );
    assert_eq!(idx.len(), 5);
    assert_eq!(
        manifest_file(dir.path())["generation"],
        1,
        "readers do not write"
    );
    let w = IndexWriter::open(dir.path(), "e", DIM, false).unwrap();
    assert_eq!(
        manifest_file(dir.path())["generation"],
        2,
        "the writer repairs"
    );
    assert_eq!(manifest_file(dir.path())["chunks"], 5);
    drop(w);

    fs::remove_file(dir.path().join("manifest.json")).unwrap();
    assert_eq!(Index::open(dir.path()).unwrap().manifest().generation, 2);
    let w = IndexWriter::open(dir.path(), "e", DIM, false).unwrap();
    assert_eq!(manifest_file(dir.path())["generation"], 2);
    assert_eq!(w.manifest().generation, 2);
}

#[test]
fn trailing_vector_rows_are_ignored_then_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = base(dir.path());
    let committed = vectors_len(dir.path());
    {
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("vectors.f32"))
            .unwrap();
        // Two junk rows and a torn third.
        f.write_all(&[0xffu8; DIM * 4 * 2 + 5]).unwrap();
    }
    let idx = Index::open(dir.path()).unwrap();
    assert_eq!(idx.len(), 3);
    assert_eq!(idx.search_exact(&rng.unit(DIM), 10).unwrap().len(), 3);
    let mut w = IndexWriter::open(dir.path(), "e", DIM, false).unwrap();
    assert_eq!(vectors_len(dir.path()), committed);
    w.replace_document("b", "b1", doc_chunks(&mut rng, DIM, "beta", 1, 2))
        .unwrap();
    w.commit().unwrap();
    drop(w);
    let idx = Index::open(dir.path()).unwrap();
    assert_eq!(idx.len(), 5);
    let v = idx.search_bm25("beta", 5).unwrap();
    assert_eq!(v.len(), 2);
    for h in v {
        // The rows of b are the ones written after the cut, not the junk.
        assert!(
            idx.search_exact(&doc_vector(&idx, h.chunk.chunk_id), 1)
                .unwrap()[0]
                .score
                > 0.999
        );
    }
    check_no_duplicates(&idx);
}

/// The stored vector of a chunk, read back from vectors.f32.
fn doc_vector(idx: &Index, id: u64) -> Vec<f32> {
    let bytes = fs::read(idx.dir().join("vectors.f32")).unwrap();
    let row = &bytes[id as usize * DIM * 4..(id as usize + 1) * DIM * 4];
    row.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn lost_vector_rows_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    base(dir.path());
    let f = OpenOptions::new()
        .write(true)
        .open(dir.path().join("vectors.f32"))
        .unwrap();
    f.set_len(DIM as u64 * 4).unwrap();
    drop(f);
    let err = Index::open(dir.path()).err().unwrap();
    assert!(matches!(err, IndexError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("rebuild it"), "{err}");
    assert!(matches!(
        IndexWriter::open(dir.path(), "e", DIM, false),
        Err(IndexError::Corrupt { .. })
    ));
}

// ---- A real `kill -9` -----------------------------------------------------------------------

const CHILD_ENV: &str = "RAG_INDEX_CRASH_CHILD_DIR";
const DOCS: usize = 12;

/// Chunks of document `i` at `version`: a deterministic function of both.
fn version_chunks(i: usize, version: u32) -> Vec<rag_index::NewChunk> {
    let mut rng = Rng::new((i as u64) << 32 | u64::from(version));
    doc_chunks(
        &mut rng,
        DIM,
        &format!("doc{i}"),
        version,
        1 + (i + version as usize) % 4,
    )
}

/// The writer the parent kills: rewrites every document, version after version, committing
/// every few documents, forever. Does nothing unless run by the parent test.
#[test]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let mut w = IndexWriter::open(dir, "e", DIM, false).unwrap();
    let start = w
        .documents()
        .values()
        .filter_map(|h| h.strip_prefix('v')?.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    for version in start + 1.. {
        for i in 0..DOCS {
            if i % 5 == 4 {
                w.remove_document(&format!("doc{i}")).unwrap();
            } else {
                w.replace_document(
                    &format!("doc{i}"),
                    &format!("v{version}"),
                    version_chunks(i, version),
                )
                .unwrap();
            }
            if i % 3 == 2 {
                w.commit().unwrap();
            }
        }
    }
}

/// What a reader must see after any crash: each document at one version, with exactly that
/// version's chunks.
fn check_consistent(idx: &Index) {
    check_no_duplicates(idx);
    let docs = idx.documents();
    let mut expect_chunks = 0;
    for (path, hash) in &docs {
        let i: usize = path.strip_prefix("doc").unwrap().parse().unwrap();
        let version: u32 = hash.strip_prefix('v').unwrap().parse().unwrap();
        let want = version_chunks(i, version);
        expect_chunks += want.len();
        let got = idx.search_bm25(&format!("doc{i}"), 100).unwrap();
        let got: Vec<_> = got.into_iter().filter(|h| h.chunk.path == *path).collect();
        assert_eq!(got.len(), want.len(), "{path} {hash}");
        for c in &want {
            let top = &idx.search_exact(&c.vector, 1).unwrap()[0];
            assert_eq!(top.chunk.text, c.text);
            assert!(top.score > 0.9999);
        }
    }
    assert_eq!(idx.len(), expect_chunks);
}

#[test]
fn survives_kill_9_at_random_points() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::new(2024);
    let mut generations = Vec::new();
    for round in 0..12 {
        let mut child = std::process::Command::new(&exe)
            .args(["--exact", "crash_child_writer", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Early rounds hit store creation and the first commits; later ones, busy commits.
        let ms = if round < 3 {
            5 + rng.next_u64() % 60
        } else {
            50 + rng.next_u64() % 400
        };
        std::thread::sleep(std::time::Duration::from_millis(ms));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "the child must have been killed, not finished"
        );

        match Index::open(dir.path()) {
            Ok(idx) => {
                check_consistent(&idx);
                generations.push(idx.manifest().generation);
            }
            // Killed before the store's first commit.
            Err(IndexError::NotFound { .. }) => generations.push(0),
            Err(e) => panic!("round {round}: {e}"),
        }
    }
    // The next writer finishes the job.
    let mut w = IndexWriter::open(dir.path(), "e", DIM, false).unwrap();
    let rows = w.manifest().vectors_rows;
    assert_eq!(vectors_len(dir.path()), rows * DIM as u64 * 4);
    assert_eq!(
        manifest_file(dir.path())["generation"],
        w.manifest().generation
    );
    let have = w.documents();
    let final_version = 1_000;
    for i in 0..DOCS {
        let hash = format!("v{final_version}");
        if have.get(&format!("doc{i}")) != Some(&hash) {
            w.replace_document(&format!("doc{i}"), &hash, version_chunks(i, final_version))
                .unwrap();
        }
    }
    w.commit().unwrap();
    drop(w);
    let idx = Index::open(dir.path()).unwrap();
    check_consistent(&idx);
    assert_eq!(idx.documents().len(), DOCS);
    eprintln!("generations seen after each kill: {generations:?}");
    assert!(
        generations.iter().any(|&g| g > 0),
        "no kill landed after a commit: {generations:?}"
    );
}
