//! OCR for PDF pages without a text layer (scans): the page is rendered by poppler's `pdftoppm`
//! (300 dpi, grey) and read by `tesseract`, both found on `PATH` (Debian: `poppler-utils`,
//! `tesseract-ocr`). Without them a page is reported as having no text, with what to install.
//!
//! `RAG_OCR=off` turns OCR off; `RAG_OCR_LANG` passes tesseract's languages (`eng+deu`; default
//! its own, English). At most [`MAX_PAGES`] pages of one document are read, each within
//! [`PAGE_TIMEOUT`].

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Most pages read by OCR in one document (0.6-8 s a page on two cores, by how much text).
pub(super) const MAX_PAGES: usize = 300;
/// Longest one page may take to render and read.
const PAGE_TIMEOUT: Duration = Duration::from_secs(120);

/// What OCR made of one page.
pub(super) enum PageOcr {
    Text(String),
    /// OCR cannot run here: what to do about it.
    Unavailable(String),
    Failed(String),
    /// [`MAX_PAGES`] were read already.
    Limit,
}

/// OCR for the pages of one PDF; its scratch folder goes when it is dropped.
pub(super) struct Ocr<'a> {
    bytes: &'a [u8],
    scratch: Option<PathBuf>,
    pages: usize,
}

impl<'a> Ocr<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Ocr<'a> {
        Ocr {
            bytes,
            scratch: None,
            pages: 0,
        }
    }

    /// The text of page `number` (1-based) by OCR.
    pub(super) fn page(&mut self, number: u32) -> PageOcr {
        if let Err(why) = available() {
            return PageOcr::Unavailable(why);
        }
        if self.pages >= MAX_PAGES {
            return PageOcr::Limit;
        }
        self.pages += 1;
        match self.read(number) {
            Ok(text) => PageOcr::Text(text),
            Err(e) => PageOcr::Failed(e),
        }
    }

    fn read(&mut self, number: u32) -> Result<String, String> {
        let dir = match &self.scratch {
            Some(d) => d.clone(),
            None => {
                static N: AtomicU64 = AtomicU64::new(0);
                let d = std::env::temp_dir().join(format!(
                    "rag-ocr-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&d)
                    .and_then(|()| std::fs::write(d.join("doc.pdf"), self.bytes))
                    .map_err(|e| format!("cannot write a scratch copy in {}: {e}", d.display()))?;
                self.scratch = Some(d.clone());
                d
            }
        };
        let image = dir.join("page.pgm");
        let page = number.to_string();
        run(
            Command::new("pdftoppm")
                .args([
                    "-f",
                    &page,
                    "-l",
                    &page,
                    "-r",
                    "300",
                    "-gray",
                    "-singlefile",
                ])
                .arg(dir.join("doc.pdf"))
                .arg(dir.join("page")),
            &dir,
            "pdftoppm",
        )?;
        let mut tesseract = Command::new("tesseract");
        tesseract.arg(&image).arg("stdout");
        if let Ok(lang) = std::env::var("RAG_OCR_LANG") {
            tesseract.args(["-l", &lang]);
        }
        let text = run(&mut tesseract, &dir, "tesseract");
        let _ = std::fs::remove_file(&image);
        text
    }
}

impl Drop for Ocr<'_> {
    fn drop(&mut self) {
        if let Some(d) = &self.scratch {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Runs a command with its output in a file of `dir` (no pipe to fill), killed after
/// [`PAGE_TIMEOUT`]; its standard output on success.
fn run(cmd: &mut Command, dir: &std::path::Path, name: &str) -> Result<String, String> {
    let out = dir.join("out.txt");
    let err = dir.join("err.txt");
    let file = |p: &PathBuf| std::fs::File::create(p).map_err(|e| format!("{name}: {e}"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file(&out)?)
        .stderr(file(&err)?)
        .spawn()
        .map_err(|e| format!("cannot run {name}: {e}"))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > PAGE_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{name} took more than {}s", PAGE_TIMEOUT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{name}: {e}")),
        }
    };
    if !status.success() {
        let msg = std::fs::read_to_string(&err).unwrap_or_default();
        let msg = msg.lines().last().unwrap_or("").trim();
        return Err(format!("{name} failed ({status}): {msg}"));
    }
    std::fs::read(&out)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| format!("{name}: {e}"))
}

/// Whether OCR can run: both programs on `PATH` (looked for once) and `RAG_OCR` not `off`.
pub(super) fn available() -> Result<(), String> {
    if std::env::var("RAG_OCR").is_ok_and(|v| v.eq_ignore_ascii_case("off") || v == "0") {
        return Err("OCR is off (RAG_OCR=off)".into());
    }
    static FOUND: OnceLock<Result<(), String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let has = |program: &str| {
                Command::new(program)
                    .arg("-v")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok()
            };
            match (has("tesseract"), has("pdftoppm")) {
                (true, true) => Ok(()),
                (false, true) => Err("install tesseract-ocr to read it".into()),
                (true, false) => Err("install poppler-utils (pdftoppm) to read it".into()),
                (false, false) => Err("install tesseract-ocr and poppler-utils to read it".into()),
            }
        })
        .clone()
}
