//! `rag serve` end to end, on the real default models and a real index of the demo corpus:
//! authentication, limits, upload names and an empty index (here, over a plain TCP client), and
//! the official `openai` Python client, a headless Chromium driving the page, and 16 clients of
//! load for 60 s (tests/serve/*.py, in the Python environment `make test` makes).
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A running `rag serve`, stopped when dropped.
struct Served {
    child: Child,
    addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `rag serve` on a free loopback port with `extra` flags; `None` (with the reason
/// printed) when the default models are not here.
fn serve(index: &Path, extra: &[&str]) -> Option<Served> {
    common::default_model()?;
    common::minilm_dir()?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rag"))
        .args(["serve", "--addr", "127.0.0.1:0", "--index"])
        .arg(index)
        .args(extra)
        .env_remove("RAG_CONFIG")
        .env_remove("RAG_EMBEDDER")
        .env_remove("RAG_API_KEY")
        .env("RAG_THREADS", "2")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start rag serve");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("rag serve did not say where it listens: {line:?}"))
        .to_string();
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = err.read_to_string(&mut sink);
    });
    Some(Served { child, addr })
}

/// The demo corpus ingested into a fresh index named `name`.
fn demo_index(name: &str) -> Option<PathBuf> {
    common::default_model()?;
    common::minilm_dir()?;
    let idx = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&idx);
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/corpus");
    let o = Command::new(env!("CARGO_BIN_EXE_rag"))
        .args(["ingest", "--quiet", "--index"])
        .arg(&idx)
        .arg(&corpus)
        .env_remove("RAG_CONFIG")
        .env_remove("RAG_EMBEDDER")
        .env("RAG_THREADS", "2")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::text(&o));
    Some(idx)
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request (`Connection: close`), the whole response read back.
fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head += &format!("Host: {addr}\r\n");
    }
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading all of a large body, and close.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Resp {
        status: status.parse().unwrap(),
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "rag-test-boundary-7f3a";
    let mut body = Vec::new();
    for (name, content) in files {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn a_reachable_address_needs_a_key() {
    if common::default_model().is_none() {
        return;
    }
    let idx = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-nokey");
    let o = Command::new(env!("CARGO_BIN_EXE_rag"))
        .args(["serve", "--addr", "0.0.0.0:0", "--index"])
        .arg(&idx)
        .env_remove("RAG_API_KEY")
        .output()
        .unwrap();
    let text = common::text(&o);
    assert!(!o.status.success(), "started without a key: {text}");
    assert!(text.contains("API key"), "{text}");
}

#[test]
fn keys_limits_and_upload_names() {
    let Some(idx) = demo_index("serve-limits-index") else {
        return;
    };
    let uploads = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-limits-uploads");
    let _ = std::fs::remove_dir_all(&uploads);
    let up = uploads.to_str().unwrap();
    let Some(s) = serve(
        &idx,
        &[
            "--api-key",
            "s3cret",
            "--max-upload-mib",
            "1",
            "--upload-dir",
            up,
        ],
    ) else {
        return;
    };
    let key = [("Authorization", "Bearer s3cret")];
    let wrong = [("Authorization", "Bearer s3creT")];

    // The page is public (it asks for the key); the API is not.
    let page = request(&s.addr, "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<title>"), "{}", page.text());
    assert!(
        !page.text().contains("src=\"http"),
        "the page fetches nothing from elsewhere"
    );
    for (headers, want) in [(&[][..], 401), (&wrong[..], 401), (&key[..], 200)] {
        let r = request(&s.addr, "GET", "/api/health", headers, b"");
        assert_eq!(r.status, want, "{}", r.text());
        if want == 401 {
            assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            assert!(r.json()["error"].as_str().unwrap().contains("API key"));
        }
    }
    let r = request(&s.addr, "GET", "/v1/models", &wrong, b"");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json()["error"]["code"],
        "invalid_api_key",
        "OpenAI's error shape"
    );
    // Pages of other sites: a write with their Origin, and (DNS rebinding) a foreign Host.
    let (ct, body) = multipart(&[("planted.md", b"# Planted\nA page elsewhere sent this.")]);
    let r = request(
        &s.addr,
        "POST",
        "/api/documents",
        &[
            key[0],
            ("Content-Type", &ct),
            ("Origin", "http://evil.example"),
        ],
        &body,
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = request(
        &s.addr,
        "GET",
        "/api/documents",
        &[key[0], ("Host", "evil.example:8080")],
        b"",
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let own = format!("http://{}", s.addr);
    let r = request(
        &s.addr,
        "GET",
        "/api/health",
        &[key[0], ("Origin", &own)],
        b"",
    );
    assert_eq!(r.status, 200, "the page's own origin is fine");
    // No CORS unless an origin is configured.
    let r = request(
        &s.addr,
        "GET",
        "/api/health",
        &[key[0], ("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(r.header("access-control-allow-origin"), None);

    // Oversized bodies.
    let big = vec![b'a'; 2 << 20];
    let r = request(
        &s.addr,
        "POST",
        "/api/ask",
        &[key[0], ("Content-Type", "application/json")],
        &big,
    );
    assert_eq!(r.status, 413, "{}", r.text());
    let (ct, body) = multipart(&[("big.md", &vec![b'x'; 3 << 20])]);
    let r = request(
        &s.addr,
        "POST",
        "/api/documents",
        &[key[0], ("Content-Type", &ct)],
        &body,
    );
    assert_eq!(r.status, 413, "{}", r.text());

    // File names that would leave the upload folder.
    for name in ["../escape.md", "..", "sub/dir.md", ".hidden.md"] {
        let (ct, body) = multipart(&[(name, b"# Escape\nThis text must stay out.")]);
        let r = request(
            &s.addr,
            "POST",
            "/api/documents",
            &[key[0], ("Content-Type", &ct)],
            &body,
        );
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        assert!(
            r.json()["error"].as_str().unwrap().contains("file name"),
            "{}",
            r.text()
        );
    }
    assert!(!uploads.parent().unwrap().join("escape.md").exists());
    let listed: Vec<String> = std::fs::read_dir(&uploads)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(listed.is_empty(), "nothing was written: {listed:?}");

    // Bad questions are 400 with a reason, not a dead server.
    let r = request(
        &s.addr,
        "POST",
        "/api/ask",
        &[key[0], ("Content-Type", "application/json")],
        br#"{"question": "?!"}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(
        &s.addr,
        "POST",
        "/api/ask",
        &[key[0], ("Content-Type", "application/json")],
        b"{not json",
    );
    assert!(
        r.status == 400 || r.status == 422,
        "{} {}",
        r.status,
        r.text()
    );
    // Errors axum writes itself are JSON too.
    let r = request(&s.addr, "POST", "/api/ask", &key, br#"{"question": "x"}"#);
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(r.json()["error"].is_string(), "{}", r.text());
    let r = request(&s.addr, "GET", "/api/nothing", &key, b"");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("/api/nothing"));
    let r = request(&s.addr, "GET", "/api/passages/notanumber", &key, b"");
    assert_eq!(r.status, 400);
    let r = request(
        &s.addr,
        "DELETE",
        "/api/documents/0000000000000000",
        &key,
        b"",
    );
    assert_eq!(r.status, 404);
    let r = request(&s.addr, "GET", "/api/health", &key, b"");
    assert_eq!(r.status, 200, "still serving");
}

#[test]
fn an_empty_index_fills_through_uploads() {
    if common::default_model().is_none() || common::minilm_dir().is_none() {
        return;
    }
    let idx = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-empty-index");
    let _ = std::fs::remove_dir_all(&idx);
    let Some(s) = serve(&idx, &[]) else {
        return;
    };
    let r = request(&s.addr, "GET", "/api/documents", &[], b"");
    assert_eq!(r.json()["documents"], serde_json::json!([]));
    let r = request(&s.addr, "GET", "/api/search?q=ferry", &[], b"");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("upload"), "{}", r.text());

    let doc = b"# Ferries\n\nThe night ferry to Ostrand leaves at 23:40 from pier 4.\n\nThe captain of the night ferry is Ilse Marwick.\n";
    let (ct, body) = multipart(&[("ferries.md", doc), ("notes.xyz", b"binary?")]);
    let r = request(
        &s.addr,
        "POST",
        "/api/documents",
        &[("Content-Type", &ct)],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let files = r.json()["files"].as_array().unwrap().clone();
    assert_eq!(files[0]["status"], "added", "{files:?}");
    assert_eq!(files[1]["status"], "failed", "{files:?}");
    assert!(files[1]["error"].as_str().unwrap().len() > 5);
    // Sending the same file again changes nothing.
    let (ct, body) = multipart(&[("ferries.md", doc)]);
    let r = request(
        &s.addr,
        "POST",
        "/api/documents",
        &[("Content-Type", &ct)],
        &body,
    );
    assert_eq!(r.json()["files"][0]["status"], "unchanged", "{}", r.text());

    let r = request(
        &s.addr,
        "POST",
        "/api/ask",
        &[("Content-Type", "application/json")],
        br#"{"question": "Who is the captain of the night ferry?"}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = sse(&r.text());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"passages"), "{names:?}");
    assert_eq!(names.last(), Some(&"answer"), "{names:?}");
    let answer = &events.last().unwrap().1;
    assert!(
        answer["answer"].as_str().unwrap().contains("Marwick"),
        "{answer}"
    );
    let chunk_id = answer["citations"][0]["chunk_id"].as_u64().unwrap();
    let streamed: String = events
        .iter()
        .filter(|(n, _)| n == "token")
        .map(|(_, v)| v["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, answer["answer"].as_str().unwrap());

    let r = request(
        &s.addr,
        "GET",
        &format!("/api/passages/{chunk_id}"),
        &[],
        b"",
    );
    assert!(r.json()["text"].as_str().unwrap().contains("Ilse Marwick"));
    assert_eq!(r.json()["name"], "ferries.md");

    // Filters of one request: the Markdown file passes type:md and not type:pdf, nor a date
    // after its own; a bad expression is a 400 that names the forms.
    let passages = |query: &str| {
        let r = request(
            &s.addr,
            "GET",
            &format!("/api/search?q=night+ferry{query}"),
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["passages"].as_array().unwrap().len()
    };
    assert!(passages("&filter=type:md") > 0);
    assert_eq!(passages("&filter=type:pdf"), 0);
    assert_eq!(passages("&filter=type:md&filter=after:2999-01-01"), 0);
    assert!(passages("&filter=before:2999-01-01&filter=type:MD,txt") > 0);
    let r = request(
        &s.addr,
        "GET",
        "/api/search?q=ferry&filter=kind:pdf",
        &[],
        b"",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("type:EXT"), "{}", r.text());
    let r = request(
        &s.addr,
        "POST",
        "/api/ask",
        &[("Content-Type", "application/json")],
        br#"{"question": "Who is the captain of the night ferry?", "filter": ["type:pdf"]}"#,
    );
    let events = sse(&r.text());
    let answer = &events.last().unwrap().1;
    assert_eq!(answer["abstained"], true, "{answer}");
    assert_eq!(events[0].1["passages"].as_array().unwrap().len(), 0);
    let r = request(
        &s.addr,
        "POST",
        "/api/ask",
        &[("Content-Type", "application/json")],
        br#"{"question": "Who is the captain?", "filter": ["after:yesterday"]}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());

    let r = request(&s.addr, "GET", "/api/documents", &[], b"");
    let docs = r.json()["documents"].as_array().unwrap().clone();
    assert_eq!(docs.len(), 1, "{docs:?}");
    let id = docs[0]["id"].as_str().unwrap();
    let r = request(&s.addr, "DELETE", &format!("/api/documents/{id}"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["documents"], 0);
    let r = request(
        &s.addr,
        "GET",
        &format!("/api/passages/{chunk_id}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 404, "{}", r.text());
}

/// (event, data) pairs of a server-sent event stream.
fn sse(text: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut name = "message".to_string();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                data += d.trim_start();
            }
        }
        if !data.is_empty() {
            out.push((
                name,
                serde_json::from_str(&data).unwrap_or(Value::String(data)),
            ));
        }
    }
    out
}

/// The Python environment with `openai` and `selenium` (`make test` makes it), or why not. With
/// RAG_SERVE_TESTS=require (CI) a missing one fails instead of skipping.
fn python() -> Option<PathBuf> {
    let py = std::env::var_os("RAG_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/py/bin/python"));
    let ok = Command::new(&py)
        .args(["-c", "import openai, selenium"])
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var("RAG_SERVE_TESTS").is_ok_and(|v| v == "require");
    if !ok {
        let why = format!(
            "{} with the openai and selenium packages is not here (scripts/test-deps.sh makes it)",
            py.display()
        );
        assert!(!required, "{why}");
        eprintln!("skipped: {why}");
        return None;
    }
    Some(py)
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/serve")
        .join(name)
}

fn run_script(py: &Path, name: &str, args: &[&str]) -> String {
    let o = Command::new(py)
        .arg(script(name))
        .args(args)
        .output()
        .unwrap();
    let text = common::text(&o);
    assert!(o.status.success(), "{name} failed:\n{text}");
    text
}

#[test]
fn the_openai_client_and_a_browser() {
    let Some(py) = python() else {
        return;
    };
    let Some(idx) = demo_index("serve-clients-index") else {
        return;
    };
    let Some(s) = serve(&idx, &["--api-key", "k3y"]) else {
        return;
    };
    let base = format!("http://{}", s.addr);
    // First, on the idle server: clients that go away mid-answer leave the model working.
    run_script(&py, "cancel.py", &["--base", &base, "--key", "k3y"]);
    run_script(&py, "openai_client.py", &["--base", &base, "--key", "k3y"]);
    let chromium =
        Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists();
    let required = std::env::var("RAG_SERVE_TESTS").is_ok_and(|v| v == "require");
    if !chromium {
        assert!(!required, "/usr/bin/chromium and /usr/bin/chromedriver are missing (apt chromium chromium-driver)");
        eprintln!("skipped the browser: /usr/bin/chromium and /usr/bin/chromedriver are missing (apt chromium chromium-driver)");
        return;
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    run_script(
        &py,
        "browser.py",
        &[
            "--base",
            &base,
            "--key",
            "k3y",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(out.join("serve-page.png").exists());
}

#[test]
fn sixteen_clients_for_a_minute() {
    let Some(py) = python() else {
        return;
    };
    let Some(idx) = demo_index("serve-load-index") else {
        return;
    };
    let Some(s) = serve(&idx, &[]) else {
        return;
    };
    let base = format!("http://{}", s.addr);
    let pid = s.child.id().to_string();
    let text = run_script(
        &py,
        "load.py",
        &[
            "--base",
            &base,
            "--clients",
            "16",
            "--seconds",
            "60",
            "--pid",
            &pid,
        ],
    );
    let summary = text
        .lines()
        .find_map(|l| l.strip_prefix("LOAD-SUMMARY "))
        .unwrap_or_else(|| panic!("no summary:\n{text}"));
    // The figures go to the test log (and the README).
    eprintln!("LOAD-SUMMARY {summary}");
}
