//! The same user scenario on both stores, through the `rag` command as a user runs it: ingest a
//! folder, ask with a citation, abstain, search with a filter, re-ingest changed and removed
//! files, a second ingest that finds everything there; then the Milvus-only faults (a wrong
//! address, the server going away mid-ingest) and copying an embedded index into Milvus.
//!
//! The embedded store always runs. Milvus runs when `MILVUS_URI` names a server (CI starts
//! Milvus Lite, see `scripts/milvus-lite.sh`); the server-loss test also needs `MILVUS_LITE`,
//! the `milvus-lite` program, to start and stop a server of its own.
mod common;

use common::text;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

fn rag(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_rag"))
        .args(args)
        .env_remove("RAG_CONFIG")
        .env_remove("RAG_EMBEDDER")
        .env_remove("RAG_STORE")
        .env("RAG_THREADS", "2")
        .output()
        .expect("run rag")
}

fn ok(args: &[&str]) -> Output {
    let o = rag(args);
    assert!(o.status.success(), "rag {args:?}: {}", text(&o));
    o
}

/// The last JSON line of stdout (the summary of `ingest --json`, or `ask --json`'s object).
fn json(o: &Output) -> Value {
    let s = String::from_utf8_lossy(&o.stdout);
    let last = s
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(str::to_string);
    match last {
        Some(l) if !s.trim_start().starts_with("{\n") => serde_json::from_str(&l).unwrap(),
        _ => serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {}", text(o))),
    }
}

/// The report of `ingest --json` (its summary line).
fn report(o: &Output) -> Value {
    json(o)["report"].clone()
}

fn models() -> bool {
    common::default_model().is_some() && common::minilm_dir().is_some()
}

fn milvus_uri() -> Option<String> {
    match std::env::var("MILVUS_URI") {
        Ok(u) if !u.is_empty() => Some(u.trim_end_matches('/').to_string()),
        _ => {
            eprintln!(
                "skipped: MILVUS_URI is not set (CI starts Milvus Lite and sets it; \
                 `scripts/milvus-lite.sh start` does it by hand)"
            );
            None
        }
    }
}

/// A copy of the demo corpus that the test may change.
fn corpus_copy(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/corpus");
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "SOURCE.md" {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    dir.canonicalize().unwrap()
}

fn info(store: &[&str]) -> Value {
    let mut args = vec!["index", "info", "--json"];
    args.extend_from_slice(store);
    json(&ok(&args))
}

/// The scenario; `store` is `--index DIR` or `--store URI`.
fn scenario(store: &[&str], corpus: &Path) {
    let c = corpus.to_str().unwrap();
    let with = |args: &[&str]| -> Vec<String> {
        args.iter().chain(store).map(|s| s.to_string()).collect()
    };
    let run = |args: &[&str]| {
        let a = with(args);
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // One file last changed in 2001, for the date filters.
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(978_307_200);
    std::fs::File::options()
        .write(true)
        .open(corpus.join("library.txt"))
        .and_then(|f| f.set_modified(old))
        .unwrap();
    let r = report(&run(&["ingest", "--json", "--reindex", c]));
    assert_eq!(
        (r["indexed"].as_u64(), r["failed"].as_u64()),
        (Some(5), Some(0)),
        "{r}"
    );
    let first = info(store);
    assert_eq!(first["documents"], 5, "{first}");

    // A grounded answer with its citation.
    let a = json(&run(&[
        "ask",
        "--json",
        "Who designed the Kessel Harbour Bridge?",
    ]));
    assert!(a["answer"].as_str().unwrap().contains("Okonkwo"), "{a:#}");
    assert_eq!(a["abstained"], false, "{a:#}");
    let cites = a["citations"].as_array().unwrap();
    assert!(!cites.is_empty(), "{a:#}");
    assert!(cites
        .iter()
        .all(|c| c["path"].as_str().unwrap().ends_with("harbour-bridge.md")));

    // Abstention on what the documents do not say.
    let a = json(&run(&[
        "ask",
        "--json",
        "What is the boiling point of mercury?",
    ]));
    assert_eq!(a["abstained"], true, "{a:#}");

    // The paths of the passages a search under `filter` finds (at least one).
    let found = |filter: &str, query: &str| -> Vec<String> {
        let s = json(&run(&[
            "search", "--json", "-k", "10", "--filter", filter, query,
        ]));
        let paths: Vec<String> = s["passages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["path"].as_str().unwrap().to_string())
            .collect();
        assert!(!paths.is_empty(), "{s:#}");
        paths
    };
    // A filter keeps passages to one file, whatever ranks best.
    let only = format!("path:{}/ferry.html", c);
    let ps = found(&only, "Who designed the bridge?");
    assert!(ps.iter().all(|p| p.ends_with("ferry.html")), "{ps:?}");

    // And to one file type, with a message for a filter it does not know.
    let ps = found("type:TXT", "Who designed the bridge?");
    assert!(ps.iter().all(|p| p.ends_with(".txt")), "{ps:?}");
    let bad = rag(&with(&["search", "--filter", "kind:pdf", "bridge"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("type:EXT"));
    // How the two lists are fused: scaled scores by default (the best passage scores about 1
    // or more), reciprocal ranks on request (at most 1/61 a list, weighed), the dense list
    // weighed by --dense-weight.
    let scores = |extra: &[&str]| -> Vec<f64> {
        let mut args = vec!["search", "--json", "-k", "5"];
        args.extend_from_slice(extra);
        args.push("Who designed the bridge?");
        let s = json(&run(&args));
        let v: Vec<f64> = s["passages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["score"].as_f64().unwrap())
            .collect();
        assert!(!v.is_empty(), "{s:#}");
        v
    };
    let top = scores(&[])[0];
    assert!(top > 0.5, "scaled scores, best {top}");
    let rrf = scores(&["--fusion", "rrf"]);
    assert!(rrf.iter().all(|&x| x <= 2.0 / 61.0 + 1e-6), "{rrf:?}");
    let bm25_only = scores(&["--fusion", "rrf", "--dense-weight", "0"]);
    assert!(
        bm25_only.iter().all(|&x| x <= 1.0 / 61.0 + 1e-6),
        "{bm25_only:?}"
    );
    assert!(rrf[0] > bm25_only[0], "{rrf:?} {bm25_only:?}");
    for (flag, says) in [
        ("--fusion=ranks", "rrf"),
        ("--dense-weight=-1", "--dense-weight"),
    ] {
        let bad = rag(&with(&["search", flag, "bridge"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>());
        assert!(!bad.status.success(), "{flag}");
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(err.contains(says), "{flag}: {err}");
    }

    // And by when the files were last changed.
    let ps = found("before:2010-01-01", "library reading room");
    assert!(ps.iter().all(|p| p.ends_with("library.txt")), "{ps:?}");
    let ps = found("after:2010-01-01", "library reading room");
    assert!(ps.iter().all(|p| !p.ends_with("library.txt")), "{ps:?}");

    // Change one file, remove another: only those are redone.
    let bridge = corpus.join("harbour-bridge.md");
    let t = std::fs::read_to_string(&bridge).unwrap();
    std::fs::write(
        &bridge,
        t.replace("Marta Okonkwo", "Ingrid Vasquez")
            .replace("Okonkwo", "Vasquez"),
    )
    .unwrap();
    std::fs::remove_file(corpus.join("library.txt")).unwrap();
    let r = report(&run(&["ingest", "--json", c]));
    assert_eq!(
        (
            r["indexed"].as_u64(),
            r["unchanged"].as_u64(),
            r["removed"].as_u64()
        ),
        (Some(1), Some(3), Some(1)),
        "{r}"
    );
    let a = json(&run(&[
        "ask",
        "--json",
        "Who designed the Kessel Harbour Bridge?",
    ]));
    assert!(a["answer"].as_str().unwrap().contains("Vasquez"), "{a:#}");
    let s = json(&run(&[
        "search",
        "--json",
        "-k",
        "10",
        "Okonkwo library reading room",
    ]));
    for p in s["passages"].as_array().unwrap() {
        let path = p["path"].as_str().unwrap();
        assert!(
            !path.ends_with("library.txt"),
            "a removed file is still found: {s:#}"
        );
        assert!(
            !p["text"].as_str().unwrap().contains("Okonkwo"),
            "stale chunk: {s:#}"
        );
    }

    // Again (another machine on the same store would do the same): nothing to do, no duplicates.
    let before = info(store);
    let r = report(&run(&["ingest", "--json", c]));
    assert_eq!(
        (r["indexed"].as_u64(), r["unchanged"].as_u64()),
        (Some(0), Some(4)),
        "{r}"
    );
    let after = info(store);
    assert_eq!(before["chunks"], after["chunks"]);
    assert_eq!(after["documents"], 4);
}

#[test]
fn scenario_on_the_embedded_store() {
    if !models() {
        return;
    }
    let idx = Path::new(env!("CARGO_TARGET_TMPDIR")).join("store_cli-embedded");
    let corpus = corpus_copy("store_cli-corpus-embedded");
    scenario(&["--index", idx.to_str().unwrap()], &corpus);
}

#[test]
fn scenario_on_milvus() {
    let Some(uri) = milvus_uri() else { return };
    if !models() {
        return;
    }
    let store = format!("{uri}/rag_cli_scenario");
    let corpus = corpus_copy("store_cli-corpus-milvus");
    scenario(&["--store", &store], &corpus);
}

#[test]
fn embedded_index_copied_into_milvus_answers_the_same() {
    let Some(uri) = milvus_uri() else { return };
    if !models() {
        return;
    }
    let idx = Path::new(env!("CARGO_TARGET_TMPDIR")).join("store_cli-copy-src");
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/corpus");
    let i = idx.to_str().unwrap();
    ok(&[
        "ingest",
        "--quiet",
        "--reindex",
        "--index",
        i,
        corpus.to_str().unwrap(),
    ]);
    // A collection of this run's own: the copy must start from nothing.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let store = format!("{uri}/rag_cli_copy_{stamp}");
    let r = json(&ok(&[
        "index", "copy", "--json", "--from", i, "--to", &store,
    ]));
    assert_eq!(r["copied"], 5, "{r}");
    let r = json(&ok(&[
        "index", "copy", "--json", "--from", i, "--to", &store,
    ]));
    assert_eq!(
        (r["copied"].as_u64(), r["unchanged"].as_u64()),
        (Some(0), Some(5))
    );
    assert_eq!(
        info(&["--store", &store])["chunks"],
        info(&["--index", i])["chunks"]
    );
    let q = "When did the Kessel Harbour Bridge open?";
    let here = json(&ok(&["search", "--json", "--index", i, q]));
    let there = json(&ok(&["search", "--json", "--store", &store, q]));
    // The same passages; their order may differ where BM25 does (the embedded store scores
    // title and heading as fields of their own, Milvus reads them once with the text), but
    // the one holding the answer is in the top two of both.
    let texts = |v: &Value| -> Vec<String> {
        v["passages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["text"].as_str().unwrap().to_string())
            .collect()
    };
    let (a, b) = (texts(&here), texts(&there));
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(a.clone()), sorted(b.clone()));
    for top in [&a, &b] {
        assert!(
            top[..2].iter().any(|t| t.contains("14 May 1912")),
            "{top:?}"
        );
    }
}

#[test]
fn wrong_store_address_fails_at_once_with_the_address() {
    let t = std::time::Instant::now();
    let o = rag(&[
        "search",
        "--store",
        "milvus://127.0.0.1:9/nothing",
        "bridge",
    ]);
    assert!(!o.status.success());
    let e = text(&o);
    assert!(e.contains("milvus://127.0.0.1:9/nothing"), "{e}");
    assert!(t.elapsed().as_secs() < 30, "took {:?}", t.elapsed());
    let o = rag(&["search", "--store", "milvus://h/bad-name", "bridge"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("collection name"), "{}", text(&o));
}

/// A Milvus Lite server of this test's own, on a free port.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Server {
    fn start(bin: &str, data: &Path, port: u16) -> Server {
        let child = std::process::Command::new(bin)
            .args([
                "server",
                "--data-dir",
                data.to_str().unwrap(),
                "--host",
                "127.0.0.1",
            ])
            .args(["--port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start milvus-lite");
        let t = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed().as_secs() < 60, "milvus-lite did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Server { child, port }
    }

    fn stop(mut self) {
        // SIGTERM, as its docs ask; then make sure.
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let t = std::time::Instant::now();
        while self.child.try_wait().ok().flatten().is_none() && t.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn server_lost_mid_ingest_then_a_rerun_completes_without_duplicates() {
    let Some(bin) = std::env::var("MILVUS_LITE").ok().filter(|b| !b.is_empty()) else {
        eprintln!("skipped: MILVUS_LITE (the milvus-lite program) is not set; CI sets it");
        return;
    };
    if !models() {
        return;
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("store_cli-lost");
    let _ = std::fs::remove_dir_all(&tmp);
    let (data, docs) = (tmp.join("data"), tmp.join("docs"));
    std::fs::create_dir_all(&docs).unwrap();
    let n = 240;
    for i in 0..n {
        let body = format!(
            "Note {i}. The tide gauge number {i} at pier {} read {} centimetres on day {}.",
            i % 17,
            100 + i * 3,
            i % 28 + 1
        );
        std::fs::write(docs.join(format!("note-{i:03}.txt")), body).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start(&bin, &data, port);
    let store = format!("milvus://127.0.0.1:{}/lost", server.port);
    let d = docs.to_str().unwrap();

    // Ingest, committing every file, and take the server away once files are going in.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rag"))
        .args([
            "ingest",
            "--json",
            "--commit-every",
            "1",
            "--store",
            &store,
            d,
        ])
        .env("RAG_THREADS", "2")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut indexed = 0;
    while indexed < 20 {
        let Some(Ok(l)) = lines.next() else { break };
        indexed += usize::from(l.contains("\"indexed\""));
    }
    server.stop();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the ingest went on without a server: {rest:?}"
    );
    assert!(err.contains(&store[..store.rfind('/').unwrap()]), "{err}");
    assert!(err.contains("note-"), "the error names no file: {err}");

    // The server comes back; the rerun finishes the job, and nothing is there twice.
    let server = Server::start(&bin, &data, port);
    let r = report(&ok(&["ingest", "--json", "--store", &store, d]));
    assert_eq!(r["failed"], 0, "{r}");
    assert!(
        r["unchanged"].as_u64().unwrap() >= 1,
        "nothing survived the loss: {r}"
    );
    let i = info(&["--store", &store]);
    assert_eq!(
        (i["documents"].as_u64(), i["chunks"].as_u64()),
        (Some(n as u64), Some(n as u64)),
        "{i}"
    );
    let s = json(&ok(&[
        "search",
        "--json",
        "-k",
        "10",
        "--store",
        &store,
        "tide gauge number 7",
    ]));
    let mut paths: Vec<&str> = s["passages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    let len = paths.len();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), len, "a document came back twice: {s:#}");
    server.stop();
}
