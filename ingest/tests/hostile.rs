//! The hostile corpus at the walker and loader level: every bad file gives the right Skipped,
//! Failed or LoadError with its path and a reason, and nothing panics.

mod common;

use common::{data, permissions_are_bypassed, shared_file};
use rag_ingest::{load, load_bytes, walk, DocKind, LoadError, WalkEntry, WalkOptions};
use std::fs;
use std::path::{Path, PathBuf};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, bytes).unwrap();
    p
}

fn find<'a>(entries: &'a [WalkEntry], name: &str) -> &'a WalkEntry {
    entries
        .iter()
        .find(|e| e.path().file_name().is_some_and(|n| n == name))
        .unwrap_or_else(|| panic!("{name} not in {entries:#?}"))
}

fn names(entries: &[WalkEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e.path().file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn walk_reports_kinds_sizes_and_skips_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "b.md", b"# B\n");
    write(d, "a.TXT", b"hello");
    write(d, "sub/c.html", b"<p>c</p>");
    write(d, "sub/d.pdf", b"%PDF");
    write(d, "image.png", b"\x89PNG");
    write(d, "Makefile", b"all:");
    let entries = walk(&[d.to_path_buf()], &WalkOptions::default());
    assert_eq!(
        names(&entries),
        vec!["Makefile", "a.TXT", "b.md", "image.png", "c.html", "d.pdf"]
    );
    assert_eq!(
        find(&entries, "a.TXT"),
        &WalkEntry::File {
            path: d.join("a.TXT"),
            kind: DocKind::Text,
            size: 5
        }
    );
    assert!(matches!(
        find(&entries, "c.html"),
        WalkEntry::File {
            kind: DocKind::Html,
            ..
        }
    ));
    assert_eq!(
        find(&entries, "image.png"),
        &WalkEntry::Skipped {
            path: d.join("image.png"),
            reason: "unsupported extension .png".into()
        }
    );
    assert!(
        matches!(find(&entries, "Makefile"), WalkEntry::Skipped { reason, .. } if reason.contains("no extension"))
    );
}

#[test]
fn walk_accepts_single_files_and_missing_roots() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "only.md", b"x");
    let missing = dir.path().join("missing");
    let entries = walk(
        &[f.clone(), missing.clone(), f.clone()],
        &WalkOptions::default(),
    );
    assert_eq!(entries.len(), 2, "{entries:#?}");
    assert!(
        matches!(&entries[0], WalkEntry::Failed { path, reason } if path == &missing && reason.contains("not found"))
    );
    assert!(matches!(&entries[1], WalkEntry::File { path, .. } if path == &f));
    assert!(walk(&[], &WalkOptions::default()).is_empty());
}

#[test]
fn walk_honours_ignore_files_outside_git_and_hidden_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, ".gitignore", b"build/\n*.log.txt\n");
    write(d, ".ignore", b"secret.md\n");
    write(d, "keep.txt", b"k");
    write(d, "run.log.txt", b"l");
    write(d, "secret.md", b"s");
    write(d, "build/out.txt", b"o");
    write(d, ".hidden.txt", b"h");
    write(d, ".git-like/config.txt", b"c");

    let default = walk(&[d.to_path_buf()], &WalkOptions::default());
    assert_eq!(names(&default), vec!["keep.txt"]);

    let all = walk(
        &[d.to_path_buf()],
        &WalkOptions {
            include_hidden: true,
            respect_ignore_files: false,
            ..WalkOptions::default()
        },
    );
    let all_names = names(&all);
    for n in [
        "keep.txt",
        "run.log.txt",
        "secret.md",
        "out.txt",
        ".hidden.txt",
        "config.txt",
    ] {
        assert!(
            all_names.contains(&n.to_string()),
            "{n} missing from {all_names:?}"
        );
    }
    // .gitignore and .ignore themselves are files with unsupported extensions.
    assert!(matches!(
        find(&all, ".gitignore"),
        WalkEntry::Skipped { .. }
    ));
}

#[test]
fn too_large_files_are_skipped_with_their_size() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.txt");
    let f = fs::File::create(&big).unwrap();
    f.set_len(3 * 1024 * 1024).unwrap(); // sparse: no disk used
    write(dir.path(), "small.txt", b"fine");
    let opts = WalkOptions {
        max_file_bytes: 1024 * 1024,
        ..WalkOptions::default()
    };
    let entries = walk(&[dir.path().to_path_buf()], &opts);
    match find(&entries, "big.txt") {
        WalkEntry::Skipped { path, reason } => {
            assert_eq!(path, &big);
            assert!(
                reason.contains("3145728 bytes") && reason.contains("1048576"),
                "{reason}"
            );
        }
        other => panic!("expected Skipped, got {other:?}"),
    }
    assert!(matches!(
        find(&entries, "small.txt"),
        WalkEntry::File { .. }
    ));
}

#[cfg(unix)]
#[test]
fn symlink_loops_are_failed_not_followed_forever() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "docs/a.txt", b"a");
    symlink(d.join("docs"), d.join("docs/back")).unwrap(); // docs/back -> docs: a loop
    symlink("self.txt", d.join("self.txt")).unwrap(); // a link to itself
    symlink("nowhere.txt", d.join("broken.txt")).unwrap();
    let entries = walk(&[d.to_path_buf()], &WalkOptions::default());
    assert!(matches!(find(&entries, "a.txt"), WalkEntry::File { .. }));
    match find(&entries, "back") {
        WalkEntry::Failed { reason, .. } => assert!(reason.contains("loop"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    match find(&entries, "self.txt") {
        WalkEntry::Failed { reason, .. } => assert!(reason.contains("loop"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    match find(&entries, "broken.txt") {
        WalkEntry::Failed { reason, .. } => assert!(reason.contains("broken"), "{reason}"),
        other => panic!("expected Failed, got {other:?}"),
    }

    let unfollowed = walk(
        &[d.to_path_buf()],
        &WalkOptions {
            follow_links: false,
            ..WalkOptions::default()
        },
    );
    assert!(matches!(
        find(&unfollowed, "back"),
        WalkEntry::Skipped { .. }
    ));
}

#[cfg(unix)]
#[test]
fn unreadable_files_and_folders_fail_with_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if permissions_are_bypassed(d) {
        println!("skipped: running as root, where chmod 000 does not stop reads");
        return;
    }
    let file = write(d, "locked.txt", b"secret");
    write(d, "closed/inner.txt", b"x");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(d.join("closed"), fs::Permissions::from_mode(0o000)).unwrap();
    let entries = walk(&[d.to_path_buf()], &WalkOptions::default());
    let err = load(&file).unwrap_err();
    fs::set_permissions(d.join("closed"), fs::Permissions::from_mode(0o755)).unwrap();

    match find(&entries, "locked.txt") {
        WalkEntry::Failed { reason, .. } => {
            assert!(reason.contains("ermission denied"), "{reason}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    match find(&entries, "closed") {
        WalkEntry::Failed { reason, .. } => {
            assert!(reason.contains("ermission denied"), "{reason}")
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(
        matches!(&err, LoadError::Io { path, .. } if path == &file),
        "{err}"
    );
    assert!(err.to_string().contains("ermission denied"), "{err}");
}

#[test]
fn binary_named_txt_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = b"\x7fELF\x02\x01\x01\x00".to_vec();
    bytes.extend((0..4096u32).map(|i| (i * 31 % 256) as u8));
    let p = write(dir.path(), "program.txt", &bytes);
    let err = load(&p).unwrap_err();
    assert!(
        matches!(&err, LoadError::Binary { path, .. } if path == &p),
        "{err}"
    );
    assert!(err.to_string().contains("program.txt"), "{err}");
}

#[test]
fn invalid_utf8_loads_lossily_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "latin1.txt", b"Caf\xe9 cr\xe8me br\xfbl\xe9e");
    let doc = load(&p).unwrap();
    assert_eq!(doc.text, "Caf\u{FFFD} cr\u{FFFD}me br\u{FFFD}l\u{FFFD}e");
    assert_eq!(
        doc.warnings,
        vec!["invalid UTF-8 decoded lossily (4 replacements)"]
    );
}

#[test]
fn empty_files_are_empty() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["empty.txt", "empty.md", "empty.html", "empty.pdf"] {
        let p = write(dir.path(), name, b"");
        let err = load(&p).unwrap_err();
        assert!(
            matches!(&err, LoadError::Empty { path } if path == &p),
            "{err}"
        );
    }
}

#[test]
fn pdf_with_empty_user_password_opens() {
    let doc = load(&data("encrypted_empty_password.pdf")).unwrap();
    let plain = load(&data("three_pages.pdf")).unwrap();
    assert_eq!(doc.text, plain.text);
    assert_eq!(doc.title.as_deref(), Some("Ingest Test"));
}

#[test]
fn pdf_needing_a_password_is_encrypted() {
    let p = data("encrypted_password.pdf");
    let err = load(&p).unwrap_err();
    assert!(
        matches!(&err, LoadError::Encrypted { path } if path == &p),
        "{err}"
    );
    assert!(err.to_string().contains("password"), "{err}");
}

#[test]
fn pdf_pages_title_and_blank_page_warning() {
    let doc = load(&data("three_pages.pdf")).unwrap();
    assert_eq!(doc.kind, DocKind::Pdf);
    assert_eq!(doc.title.as_deref(), Some("Ingest Test"));
    assert!(doc.text.contains("information retrieval"), "{:?}", doc.text);
    assert_eq!(doc.pages.len(), 3);
    assert_eq!(doc.pages[0], 0);
    let third = doc.text.find("The third page").unwrap();
    assert_eq!(
        doc.pages[1], third,
        "the blank page starts where page 3 does"
    );
    assert_eq!(doc.pages[2], third);
    assert_eq!(doc.page_at(0), Some(1));
    assert_eq!(doc.page_at(third), Some(3));
    // "page 2: no text", with what to install where OCR cannot run.
    assert_eq!(doc.warnings.len(), 1, "{:?}", doc.warnings);
    assert!(
        doc.warnings[0].starts_with("page 2: no text"),
        "{:?}",
        doc.warnings
    );
}

#[test]
fn pdf_without_text_is_no_text() {
    let p = data("no_text.pdf");
    let err = load(&p).unwrap_err();
    assert!(
        matches!(&err, LoadError::NoText { path } if path == &p),
        "{err}"
    );
    assert!(err.to_string().contains("OCR"), "{err}");
}

#[test]
fn damaged_pdfs_are_corrupt_not_panics() {
    let good = fs::read(data("three_pages.pdf")).unwrap();
    let p = Path::new("damaged.pdf");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        (
            "not a pdf",
            b"this is plain text pretending to be a PDF".to_vec(),
        ),
        ("header only", b"%PDF-1.7\n".to_vec()),
        ("garbled", good.iter().map(|b| b.wrapping_mul(7)).collect()),
    ];
    for (what, bytes) in cases {
        match load_bytes(p, DocKind::Pdf, &bytes) {
            Err(LoadError::Corrupt { path, detail }) => {
                assert_eq!(path, p);
                assert!(!detail.is_empty(), "{what}");
            }
            // lopdf recovers some damage; then text or NoText are fine answers.
            Ok(_) | Err(LoadError::NoText { .. }) => {}
            Err(other) => panic!("{what}: unexpected {other}"),
        }
    }
    // Every prefix of a real PDF: none may panic.
    for len in (0..good.len()).step_by(37) {
        let _ = load_bytes(p, DocKind::Pdf, &good[..len]);
    }
}

#[test]
fn pdf_without_cross_reference_table_is_recovered() {
    let good = fs::read(data("three_pages.pdf")).unwrap();
    let cut = good.windows(4).rposition(|w| w == b"xref").unwrap();
    let mut damaged = good[..cut].to_vec();
    damaged.extend_from_slice(b"trailer << /Root 1 0 R >>\n%%EOF\n");
    // A wrong stream length too, as hand-edited files have.
    let at = damaged
        .windows(11)
        .position(|w| w == b"/Length 146")
        .expect("page 1 stream length");
    damaged[at..at + 11].copy_from_slice(b"/Length 999");
    let doc = load_bytes(Path::new("damaged.pdf"), DocKind::Pdf, &damaged).unwrap();
    assert!(doc.text.contains("information retrieval"), "{:?}", doc.text);
    assert!(
        doc.warnings.iter().any(|w| w.contains("recovered")),
        "{:?}",
        doc.warnings
    );
}

#[test]
fn corrupt_pdf_from_the_shared_samples() {
    let Some(p) = shared_file("data/pdf-samples/pdfminer/zen_of_python_corrupted.pdf") else {
        return;
    };
    match load(&p) {
        Ok(doc) => {
            // Recovered: the readable part must be the Zen of Python.
            assert!(
                doc.text.contains("Beautiful is better than ugly"),
                "{:?}",
                doc.text
            );
            println!(
                "zen_of_python_corrupted.pdf: recovered, warnings {:?}",
                doc.warnings
            );
        }
        Err(e @ (LoadError::Corrupt { .. } | LoadError::NoText { .. })) => {
            assert_eq!(e.path(), p);
            println!("zen_of_python_corrupted.pdf: {e}");
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Whether `program` runs.
fn has(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("-v")
        .output()
        .is_ok()
}

/// A one-page PDF holding only a grey image (what a scanner writes).
fn image_pdf(width: usize, height: usize, pixels: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(pixels).unwrap();
    let data = z.finish().unwrap();
    let content = format!("q {width} 0 0 {height} 0 0 cm /Im0 Do Q");
    let objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width} {height}] \
             /Resources << /XObject << /Im0 4 0 R >> >> /Contents 5 0 R >>"
        )
        .into_bytes(),
        [
            format!(
                "<< /Type /XObject /Subtype /Image /Width {width} /Height {height} \
                 /ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode /Length {} >>\nstream\n",
                data.len()
            )
            .into_bytes(),
            data,
            b"\nendstream".to_vec(),
        ]
        .concat(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()).into_bytes(),
    ];
    common::pdf_file(&objects)
}

/// A scanned page (no text layer, only an image of the text) is read by OCR. The scan is made
/// here: a page of a text PDF rendered to grey pixels by pdftoppm, wrapped in a PDF as an image.
#[test]
fn scanned_pdf_page_is_read_by_ocr() {
    if !(has("tesseract") && has("pdftoppm")) {
        let why = "tesseract and pdftoppm are not both installed (apt install tesseract-ocr poppler-utils)";
        assert!(
            std::env::var("RAG_OCR_TESTS").as_deref() != Ok("require"),
            "RAG_OCR_TESTS=require: {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scan");
    let status = std::process::Command::new("pdftoppm")
        .args(["-f", "1", "-l", "1", "-r", "200", "-gray", "-singlefile"])
        .arg(data("three_pages.pdf"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    // Binary PGM: "P5", width, height, maximum value, then one byte per pixel.
    let pgm = fs::read(dir.path().join("scan.pgm")).unwrap();
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while pgm[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !pgm[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(String::from_utf8_lossy(&pgm[start..at]).into_owned());
    }
    assert_eq!(fields[0], "P5");
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let pixels = &pgm[at + 1..];
    assert_eq!(pixels.len(), w * h);
    let scanned = write(dir.path(), "scanned.pdf", &image_pdf(w, h, pixels));

    let doc = load(&scanned).unwrap();
    assert!(
        doc.text.contains("information retrieval"),
        "OCR text: {:?}",
        doc.text
    );
    assert_eq!(doc.pages, vec![0]);
    assert_eq!(
        doc.warnings,
        vec!["page 1: no text layer; read by OCR (tesseract)"]
    );
}
