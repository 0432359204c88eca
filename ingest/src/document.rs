//! The loaded form of one file ([`Document`]), what kind of file it is ([`DocKind`]) and why loading
//! can fail ([`LoadError`]). Position queries (page, heading path) live here; parsing does not.

use std::path::{Path, PathBuf};

/// The supported file kinds, decided by extension (see [`doc_kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocKind {
    /// `.txt`, `.text`: UTF-8 (or UTF-16 with a byte-order mark) plain text.
    Text,
    /// `.md`, `.markdown`: ATX (`#`) and setext headings become [`Heading`]s.
    Markdown,
    /// `.html`, `.htm`: visible text only; `h1`–`h6` become [`Heading`]s.
    Html,
    /// `.pdf`: text per page through pdf-extract.
    Pdf,
    /// `.docx`: Word paragraphs, headings by style, tables by rows, pages where Word broke them.
    Docx,
    /// `.pptx`: one page per slide; slide titles become headings; speaker notes included.
    Pptx,
    /// `.xlsx`: one heading per sheet; one line per row, cells labelled by the header row.
    Xlsx,
    /// `.csv`, `.tsv`: one line per row, cells labelled by the header row.
    Csv,
    /// `.epub`: chapters in reading order, read as HTML.
    Epub,
}

/// The kind of a file by its extension (case-insensitive), or `None` when unsupported.
pub fn doc_kind(path: &Path) -> Option<DocKind> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "txt" | "text" => Some(DocKind::Text),
        "md" | "markdown" => Some(DocKind::Markdown),
        "html" | "htm" => Some(DocKind::Html),
        "pdf" => Some(DocKind::Pdf),
        "docx" => Some(DocKind::Docx),
        "pptx" => Some(DocKind::Pptx),
        "xlsx" => Some(DocKind::Xlsx),
        "csv" | "tsv" => Some(DocKind::Csv),
        "epub" => Some(DocKind::Epub),
        _ => None,
    }
}

/// A heading found in a document; its title also appears in [`Document::text`] at `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heading {
    /// Byte offset in [`Document::text`] where the heading's title starts.
    pub offset: usize,
    /// 1 for `#` / `<h1>`, up to 6.
    pub level: u8,
    /// The heading text, normalised, on one line.
    pub title: String,
}

/// One loaded file: normalised text plus what is needed to cite it.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file this came from.
    pub path: PathBuf,
    /// How it was parsed.
    pub kind: DocKind,
    /// HTML `<title>` (else the first `<h1>`), Markdown first `# ` heading, PDF Info title; else `None`.
    pub title: Option<String>,
    /// The normalised full text (see [`normalize`](crate::normalize())); blocks are separated by blank lines.
    pub text: String,
    /// Headings sorted by offset.
    pub headings: Vec<Heading>,
    /// For PDFs: byte offset in `text` where page `i + 1` starts (`pages[0] == 0`); an empty page
    /// starts where the next page does. Empty for other kinds.
    pub pages: Vec<usize>,
    /// Lowercase hex SHA-256 of the raw file bytes, for PDFs with the extraction's revision
    /// after it: see [`content_hash`](crate::content_hash).
    pub content_hash: String,
    /// Problems that did not stop loading, e.g. `"page 4: no text"`.
    pub warnings: Vec<String>,
}

impl Document {
    /// The 1-based page holding byte `offset` of `text`, or `None` for documents without pages.
    pub fn page_at(&self, offset: usize) -> Option<u32> {
        if self.pages.is_empty() {
            return None;
        }
        let n = self.pages.partition_point(|&start| start <= offset);
        Some(n.max(1) as u32)
    }

    /// The titles of the headings in force at byte `offset`, outermost first
    /// (e.g. `["Install", "On Linux"]`).
    pub fn heading_path_at(&self, offset: usize) -> Vec<String> {
        let mut path = HeadingPath::default();
        for h in self.headings.iter().take_while(|h| h.offset <= offset) {
            path.push(h);
        }
        path.titles()
    }
}

/// A stack of headings by level; shared by [`Document::heading_path_at`] and the chunker's cursor.
#[derive(Debug, Default)]
pub(crate) struct HeadingPath<'a> {
    stack: Vec<&'a Heading>,
}

impl<'a> HeadingPath<'a> {
    pub(crate) fn push(&mut self, h: &'a Heading) {
        while self.stack.last().is_some_and(|top| top.level >= h.level) {
            self.stack.pop();
        }
        self.stack.push(h);
    }

    pub(crate) fn titles(&self) -> Vec<String> {
        self.stack.iter().map(|h| h.title.clone()).collect()
    }
}

/// Why a file could not be loaded. Each message names the file, says what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read (missing, permission denied, ...).
    #[error("cannot read {}: {source}; check that the file exists and that you may read it", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The extension is not one of the supported kinds.
    #[error("{}: unsupported file type; supported extensions are .txt .text .md .markdown .html .htm .pdf .docx .pptx .xlsx .csv .tsv .epub", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
    },
    /// A text file (by extension) whose bytes are not text.
    #[error("{} looks binary, not text ({detail}); exclude it, or convert it to UTF-8 text (e.g. with iconv) if it is text in a legacy encoding", path.display())]
    Binary {
        /// The file.
        path: PathBuf,
        /// What gave it away, e.g. "it contains NUL bytes".
        detail: String,
    },
    /// The file is empty, or holds only whitespace or markup.
    #[error("{} has no text to index (empty, or only whitespace and markup); remove it or add content", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A PDF that parsed but had no text on any page.
    #[error("{}: no extractable text: the PDF may be scanned images (install tesseract-ocr and poppler-utils, and rag reads them by OCR), or its fonts lack a Unicode mapping; or OCR it first (e.g. with ocrmypdf)", path.display())]
    NoText {
        /// The file.
        path: PathBuf,
    },
    /// A PDF that needs a (non-empty) password.
    #[error("{} is encrypted and needs a password; decrypt it first (e.g. qpdf --decrypt --password=PASSWORD in.pdf out.pdf)", path.display())]
    Encrypted {
        /// The file.
        path: PathBuf,
    },
    /// A file that cannot be read without a key or another save: an encrypted Office file or a
    /// legacy binary one under a new extension, an e-book with DRM.
    #[error("{} cannot be read: {detail}", path.display())]
    Protected {
        /// The file.
        path: PathBuf,
        /// What it is and what to do.
        detail: String,
    },
    /// The file could not be parsed (including a panic inside the parser).
    #[error("{} is damaged or not a valid file of its type ({detail}); re-export or repair it (e.g. qpdf in.pdf out.pdf for a PDF)", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        detail: String,
    },
}

impl LoadError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            LoadError::Io { path, .. }
            | LoadError::Unsupported { path }
            | LoadError::Binary { path, .. }
            | LoadError::Empty { path }
            | LoadError::NoText { path }
            | LoadError::Encrypted { path }
            | LoadError::Protected { path, .. }
            | LoadError::Corrupt { path, .. } => path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str, pages: Vec<usize>, headings: Vec<Heading>) -> Document {
        Document {
            path: PathBuf::from("x"),
            kind: DocKind::Text,
            title: None,
            text: text.to_string(),
            headings,
            pages,
            content_hash: String::new(),
            warnings: vec![],
        }
    }

    fn h(offset: usize, level: u8, title: &str) -> Heading {
        Heading {
            offset,
            level,
            title: title.into(),
        }
    }

    #[test]
    fn kinds_by_extension_ignore_case() {
        assert_eq!(doc_kind(Path::new("a/B.TXT")), Some(DocKind::Text));
        assert_eq!(doc_kind(Path::new("a.text")), Some(DocKind::Text));
        assert_eq!(doc_kind(Path::new("a.Markdown")), Some(DocKind::Markdown));
        assert_eq!(doc_kind(Path::new("a.md")), Some(DocKind::Markdown));
        assert_eq!(doc_kind(Path::new("a.HtM")), Some(DocKind::Html));
        assert_eq!(doc_kind(Path::new("a.html")), Some(DocKind::Html));
        assert_eq!(doc_kind(Path::new("a.Pdf")), Some(DocKind::Pdf));
        assert_eq!(doc_kind(Path::new("a.DOCX")), Some(DocKind::Docx));
        assert_eq!(doc_kind(Path::new("a.tsv")), Some(DocKind::Csv));
        assert_eq!(doc_kind(Path::new("a.doc")), None);
        assert_eq!(doc_kind(Path::new("README")), None);
        assert_eq!(doc_kind(Path::new(".txt")), None);
    }

    #[test]
    fn page_at_uses_page_starts() {
        // page 2 is empty: it starts where page 3 does.
        let d = doc("aaaa\n\ncc", vec![0, 6, 6], vec![]);
        assert_eq!(d.page_at(0), Some(1));
        assert_eq!(d.page_at(3), Some(1));
        assert_eq!(d.page_at(6), Some(3));
        assert_eq!(d.page_at(100), Some(3));
        assert_eq!(doc("x", vec![], vec![]).page_at(0), None);
    }

    #[test]
    fn heading_path_pops_same_or_deeper_levels() {
        let hs = vec![
            h(0, 1, "A"),
            h(10, 2, "A.1"),
            h(20, 3, "A.1.a"),
            h(30, 2, "A.2"),
            h(40, 1, "B"),
        ];
        let d = doc(&"x".repeat(50), vec![], hs);
        assert_eq!(d.heading_path_at(5), vec!["A"]);
        assert_eq!(d.heading_path_at(25), vec!["A", "A.1", "A.1.a"]);
        assert_eq!(d.heading_path_at(30), vec!["A", "A.2"]);
        assert_eq!(d.heading_path_at(45), vec!["B"]);
    }
}
