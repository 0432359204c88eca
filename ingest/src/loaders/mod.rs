//! Loading one file into a [`Document`]: reading bytes, deciding text from binary, dispatching to the
//! parser for its kind, hashing. Parsers only say what the blocks and headings are; normalisation
//! happens in [`normalize`](crate::normalize()). Nothing here may panic on hostile input: dependency panics are
//! caught by [`catch_quietly`] and become [`LoadError::Corrupt`].

mod delimited;
mod docx;
mod epub;
mod html;
mod markdown;
mod ocr;
mod parse;
mod pdf;
mod pdf_columns;
mod pdf_repair;
mod pdf_table;
mod pdf_text;
mod pptx;
mod xlsx;
mod zipped;

use crate::document::{doc_kind, DocKind, Document, LoadError};
use crate::normalize::TextBuilder;
use parse::{catch_quietly, Failure, Parsed};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Reads and loads one file; its kind comes from the extension (see [`doc_kind`]).
///
/// Never panics on a bad file (a panic inside a parser becomes [`LoadError::Corrupt`]), as long as the
/// build unwinds on panic (the default; `panic = "abort"` would end the process instead).
pub fn load(path: &Path) -> Result<Document, LoadError> {
    let kind = doc_kind(path).ok_or_else(|| LoadError::Unsupported {
        path: path.to_path_buf(),
    })?;
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_bytes(path, kind, &bytes)
}

/// Loads a file's bytes as `kind`, as [`load`] does after reading them; `path` is only recorded.
pub fn load_bytes(path: &Path, kind: DocKind, bytes: &[u8]) -> Result<Document, LoadError> {
    if bytes.is_empty() {
        return Err(LoadError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut warnings = Vec::new();
    let parsed = match kind {
        DocKind::Text => {
            let text = decode_text(path, bytes, &mut warnings)?;
            let mut b = TextBuilder::default();
            b.push_block(&text);
            Parsed {
                title: None,
                builder: b,
            }
        }
        DocKind::Markdown => markdown::parse(&decode_text(path, bytes, &mut warnings)?),
        DocKind::Html => {
            let text = decode_text(path, bytes, &mut warnings)?;
            let depth = html::nesting_depth(&text);
            if depth > html::MAX_DEPTH {
                // html5ever's tree builder does work per tag in proportion to the depth: 200,000
                // nested elements took minutes. Read such a file as text, in linear time.
                warnings.push(format!(
                    "elements nested {depth} deep (more than {}): read as plain text, without \
                     headings",
                    html::MAX_DEPTH
                ));
                html::parse_flat(&text)
            } else {
                catch_quietly(|| html::parse(&text)).map_err(|detail| LoadError::Corrupt {
                    path: path.to_path_buf(),
                    detail,
                })?
            }
        }
        DocKind::Pdf => pdf::parse(path, bytes, &mut warnings)?,
        DocKind::Csv => {
            let text = decode_text(path, bytes, &mut warnings)?;
            let tab = path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
            delimited::parse(&text, tab, &mut warnings)
        }
        DocKind::Docx | DocKind::Pptx | DocKind::Xlsx | DocKind::Epub => {
            let parse = match kind {
                DocKind::Docx => docx::parse,
                DocKind::Pptx => pptx::parse,
                DocKind::Xlsx => xlsx::parse,
                _ => epub::parse,
            };
            match catch_quietly(|| parse(bytes, &mut warnings)) {
                Ok(Ok(parsed)) => parsed,
                Ok(Err(Failure::Protected(detail))) => {
                    return Err(LoadError::Protected {
                        path: path.to_path_buf(),
                        detail,
                    })
                }
                Ok(Err(Failure::Corrupt(detail))) | Err(detail) => {
                    return Err(LoadError::Corrupt {
                        path: path.to_path_buf(),
                        detail,
                    })
                }
            }
        }
    };
    if parsed.builder.is_empty() {
        return Err(LoadError::Empty {
            path: path.to_path_buf(),
        });
    }
    let (text, headings, pages) = parsed.builder.finish();
    Ok(Document {
        path: path.to_path_buf(),
        kind,
        title: parsed.title,
        text,
        headings,
        pages,
        content_hash: content_hash(kind, bytes),
        warnings,
    })
}

/// What an index records of a file's content, to tell on the next ingest whether it changed: the
/// lowercase hex SHA-256 of its bytes, and for a kind whose text extraction has since improved
/// enough to be worth reading the file again, the extraction's revision (`+pdf2`: PDF columns
/// drawn a baseline at a time are read in order). An index made before a revision then reads
/// those files again on its next ingest, as if they had changed.
///
/// ```
/// use rag_ingest::{content_hash, DocKind};
/// assert_eq!(content_hash(DocKind::Text, b"abc").len(), 64);
/// assert!(content_hash(DocKind::Pdf, b"abc").ends_with("+pdf2"));
/// ```
pub fn content_hash(kind: DocKind, bytes: &[u8]) -> String {
    let hash = format!("{:x}", Sha256::digest(bytes));
    match kind {
        DocKind::Pdf => hash + "+pdf2",
        _ => hash,
    }
}

/// Decodes the bytes of a text-like file (plain text, Markdown, HTML).
///
/// UTF-16 with a byte-order mark is decoded; otherwise the bytes are UTF-8, decoded lossily with a
/// warning. NUL bytes, more than 10% control bytes, or more than a third of the characters being
/// invalid UTF-8 make it [`LoadError::Binary`].
fn decode_text(path: &Path, bytes: &[u8], warnings: &mut Vec<String>) -> Result<String, LoadError> {
    let binary = |detail: String| LoadError::Binary {
        path: path.to_path_buf(),
        detail,
    };
    if let Some(text) = decode_utf16_with_bom(bytes, warnings) {
        return Ok(text);
    }
    if bytes.contains(&0) {
        return Err(binary("it contains NUL bytes".into()));
    }
    let controls = bytes
        .iter()
        .filter(|&&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b)) || b == 0x7f)
        .count();
    if controls * 10 > bytes.len() {
        return Err(binary(format!(
            "{controls} of its {} bytes are control characters",
            bytes.len()
        )));
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(_) => {
            let mut text = String::with_capacity(bytes.len());
            let mut invalid = 0usize;
            for chunk in bytes.utf8_chunks() {
                text.push_str(chunk.valid());
                if !chunk.invalid().is_empty() {
                    invalid += 1;
                    text.push(char::REPLACEMENT_CHARACTER);
                }
            }
            if invalid * 3 > text.chars().count() {
                return Err(binary(format!(
                    "{invalid} invalid UTF-8 sequences in {} bytes",
                    bytes.len()
                )));
            }
            warnings.push(format!(
                "invalid UTF-8 decoded lossily ({invalid} replacements)"
            ));
            Ok(text)
        }
    }
}

/// UTF-16 text announced by a byte-order mark; `None` when there is no UTF-16 BOM.
fn decode_utf16_with_bom(bytes: &[u8], warnings: &mut Vec<String>) -> Option<String> {
    let little = match bytes {
        [0xFF, 0xFE, ..] => true,
        [0xFE, 0xFF, ..] => false,
        _ => return None,
    };
    let body = &bytes[2..];
    let units = body.chunks_exact(2).map(|p| {
        if little {
            u16::from_le_bytes([p[0], p[1]])
        } else {
            u16::from_be_bytes([p[0], p[1]])
        }
    });
    let mut invalid = 0usize;
    let text: String = char::decode_utf16(units)
        .map(|r| {
            r.unwrap_or_else(|_| {
                invalid += 1;
                char::REPLACEMENT_CHARACTER
            })
        })
        .collect();
    if invalid > 0 || body.len() % 2 == 1 {
        warnings.push(format!(
            "invalid UTF-16 decoded lossily ({} replacements)",
            invalid + body.len() % 2
        ));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(kind: DocKind, bytes: &[u8]) -> Result<Document, LoadError> {
        load_bytes(Path::new("t.txt"), kind, bytes)
    }

    #[test]
    fn html_nested_too_deep_is_read_as_text_with_a_warning() {
        // 200,000 nested divs: minutes in the tree builder before the guard.
        let n = 200_000;
        let src = format!(
            "<html><body><h1>Deep</h1>{}Fish &amp; chips at the harbour.{}</body></html>",
            "<div>".repeat(n),
            "</div>".repeat(n)
        );
        let d = load_text(DocKind::Html, src.as_bytes()).unwrap();
        assert!(
            d.text.contains("Fish & chips at the harbour."),
            "{}",
            d.text
        );
        assert!(d.text.contains("Deep"));
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
        assert!(d.warnings[0].contains("200002 deep"), "{:?}", d.warnings);
        // An ordinary page keeps the full parse (headings, no warning).
        let d = load_text(DocKind::Html, b"<h1>Deep</h1><div><p>Fish</p></div>").unwrap();
        assert!(d.warnings.is_empty() && !d.headings.is_empty());
    }

    #[test]
    fn plain_text_is_normalised_and_hashed() {
        let d = load_text(DocKind::Text, b"Hello  world.\r\n\r\n\r\nSecond para.").unwrap();
        assert_eq!(d.text, "Hello world.\n\nSecond para.");
        assert_eq!(d.title, None);
        assert!(d.pages.is_empty() && d.headings.is_empty() && d.warnings.is_empty());
        assert_eq!(
            d.content_hash,
            format!(
                "{:x}",
                Sha256::digest(b"Hello  world.\r\n\r\n\r\nSecond para.")
            )
        );
        assert_eq!(d.content_hash.len(), 64);
    }

    #[test]
    fn invalid_utf8_is_lossy_with_a_warning() {
        let d = load_text(DocKind::Text, b"caf\xe9 and na\xefve \xff text").unwrap();
        assert_eq!(d.text, "caf\u{FFFD} and na\u{FFFD}ve \u{FFFD} text");
        assert_eq!(
            d.warnings,
            vec!["invalid UTF-8 decoded lossily (3 replacements)"]
        );
    }

    #[test]
    fn binary_text_files_are_refused() {
        let e = load_text(DocKind::Text, b"PK\x03\x04\x00\x00binary").unwrap_err();
        assert!(matches!(e, LoadError::Binary { .. }), "{e}");
        assert!(e.to_string().contains("NUL"), "{e}");
        let e = load_text(DocKind::Markdown, &[1, 2, 3, 4, 5, b'a', b'b']).unwrap_err();
        assert!(matches!(e, LoadError::Binary { .. }), "{e}");
        let noise: Vec<u8> = (0..400u32).map(|i| 0x80 + (i * 7 % 0x7f) as u8).collect();
        let e = load_text(DocKind::Text, &noise).unwrap_err();
        assert!(matches!(e, LoadError::Binary { .. }), "{e}");
    }

    #[test]
    fn utf16_with_bom_is_decoded() {
        let mut le = vec![0xFF, 0xFE];
        le.extend("héllo".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(load_text(DocKind::Text, &le).unwrap().text, "héllo");
        let mut be = vec![0xFE, 0xFF];
        be.extend("wörld".encode_utf16().flat_map(u16::to_be_bytes));
        assert_eq!(load_text(DocKind::Text, &be).unwrap().text, "wörld");
    }

    #[test]
    fn empty_and_whitespace_only_files_are_empty() {
        for kind in [
            DocKind::Text,
            DocKind::Markdown,
            DocKind::Html,
            DocKind::Pdf,
        ] {
            assert!(matches!(load_text(kind, b""), Err(LoadError::Empty { .. })));
        }
        assert!(matches!(
            load_text(DocKind::Text, b" \n\t\r\n"),
            Err(LoadError::Empty { .. })
        ));
        assert!(matches!(
            load_text(
                DocKind::Html,
                b"<html><head><title>t</title></head><body> </body></html>"
            ),
            Err(LoadError::Empty { .. })
        ));
    }

    #[test]
    fn unsupported_and_missing_files() {
        let e = load(Path::new("notes.doc")).unwrap_err();
        assert!(matches!(e, LoadError::Unsupported { .. }), "{e}");
        let e = load(Path::new("/definitely/not/here.txt")).unwrap_err();
        assert!(matches!(e, LoadError::Io { .. }), "{e}");
        assert_eq!(e.path(), Path::new("/definitely/not/here.txt"));
    }

    #[test]
    fn panics_are_caught_and_silenced() {
        let r: Result<(), String> = catch_quietly(|| panic!("boom {}", 42));
        assert_eq!(r.unwrap_err(), "parser panicked: boom 42");
        assert_eq!(catch_quietly(|| 7).unwrap(), 7);
    }
}
