//! PDF: text page by page through pdf-extract (lopdf underneath). Each page is extracted on its own,
//! so one bad page costs that page (a warning), not the document. PDFs encrypted with an empty user
//! password open (lopdf decrypts them while loading); other encrypted PDFs are
//! [`LoadError::Encrypted`]. A file lopdf refuses gets one more try, rebuilt from the objects found
//! by scanning it (see `pdf_repair`). Every call into the parser runs under [`catch_quietly`].
//! A page without a text layer (a scan) is read by OCR where it can run (see `ocr`).

use super::ocr::{self, Ocr, PageOcr};
use super::parse::{catch_quietly, Parsed};
use super::pdf_repair;
use super::pdf_table;
use super::pdf_text::{expand_next_line_operators, PageText};
use crate::document::LoadError;
use crate::normalize::{normalize, TextBuilder};
use pdf_extract::{Document as PdfDocument, Object, OutputError};
use std::path::Path;

pub(super) fn parse(
    path: &Path,
    bytes: &[u8],
    warnings: &mut Vec<String>,
) -> Result<Parsed, LoadError> {
    let corrupt = |detail: String| LoadError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let encrypted = || LoadError::Encrypted {
        path: path.to_path_buf(),
    };
    // Err(None): it needs a password; Err(Some(why)): it could not be parsed.
    let open = |bytes: &[u8]| match catch_quietly(|| PdfDocument::load_mem(bytes)) {
        Ok(Ok(doc)) => Ok(doc),
        Ok(Err(e)) if is_password_error(&e) => Err(None),
        Ok(Err(e)) => Err(Some(e.to_string())),
        Err(panic) => Err(Some(panic)),
    };
    let mut doc = match open(bytes) {
        Ok(doc) => doc,
        Err(None) => return Err(encrypted()),
        Err(Some(detail)) => match pdf_repair::rebuild(bytes).map(|fixed| open(&fixed)) {
            Some(Ok(doc)) => {
                warnings.push(format!(
                    "damaged file ({detail}); its objects were recovered by scanning it"
                ));
                doc
            }
            Some(Err(None)) => return Err(encrypted()),
            _ => return Err(corrupt(detail)),
        },
    };
    // lopdf decrypts while loading when the empty user password works; an /Encrypt entry left
    // without a decryption state means it needs a real password.
    if doc.is_encrypted() && !doc.was_encrypted() {
        return Err(encrypted());
    }
    let title = catch_quietly(|| info_title(&doc)).ok().flatten();
    let pages = catch_quietly(|| doc.get_pages()).map_err(corrupt)?;
    if pages.is_empty() {
        return Err(corrupt("the document has no pages".into()));
    }

    let mut b = TextBuilder::default();
    let mut failures = Vec::new();
    let mut ocr = Ocr::new(bytes);
    for (&number, &page) in &pages {
        b.start_page();
        let _ = catch_quietly(|| expand_next_line_operators(&mut doc, page));
        let extracted = catch_quietly(|| {
            let mut out = PageText::default();
            pdf_extract::output_doc_page(&doc, &mut out, number)
                .map(|()| pdf_table::render(&out.into_lines()))
        });
        match extracted {
            Ok(Ok(text)) => {
                if !b.push_block(&text) {
                    warnings.push(match ocr.page(number) {
                        PageOcr::Text(t) if b.push_block(&t) => {
                            format!("page {number}: no text layer; read by OCR (tesseract)")
                        }
                        PageOcr::Text(_) => format!("page {number}: no text"),
                        PageOcr::Unavailable(why) => format!("page {number}: no text: {why}"),
                        PageOcr::Failed(e) => format!("page {number}: no text; OCR failed: {e}"),
                        PageOcr::Limit => format!(
                            "page {number}: no text; not read by OCR ({} pages were already)",
                            ocr::MAX_PAGES
                        ),
                    });
                }
            }
            Ok(Err(e)) => {
                warnings.push(format!("page {number}: {}", describe(&e)));
                failures.push(describe(&e));
            }
            Err(panic) => {
                warnings.push(format!("page {number}: {panic}"));
                failures.push(panic);
            }
        }
    }
    if failures.len() == pages.len() {
        return Err(corrupt(format!(
            "no page could be read; first error: {}",
            failures[0]
        )));
    }
    if b.is_empty() {
        return Err(LoadError::NoText {
            path: path.to_path_buf(),
        });
    }
    Ok(Parsed { title, builder: b })
}

fn is_password_error(e: &pdf_extract::Error) -> bool {
    use pdf_extract::encryption::DecryptionError;
    matches!(
        e,
        pdf_extract::Error::InvalidPassword
            | pdf_extract::Error::Decryption(DecryptionError::IncorrectPassword)
    )
}

fn describe(e: &OutputError) -> String {
    match e {
        OutputError::PdfError(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// The `/Title` of the document information dictionary, decoded and normalised.
fn info_title(doc: &PdfDocument) -> Option<String> {
    let deref = |o: &'_ Object| -> Option<Object> {
        match o {
            Object::Reference(id) => doc.get_object(*id).ok().cloned(),
            o => Some(o.clone()),
        }
    };
    let info = deref(doc.trailer.get(b"Info").ok()?)?;
    let info = info.as_dict().ok()?;
    let Object::String(bytes, _) = deref(info.get(b"Title").ok()?)? else {
        return None;
    };
    let title = normalize(&decode_text_string(&bytes)).replace('\n', " ");
    (!title.is_empty()).then_some(title)
}

/// A PDF text string: UTF-16BE with a byte-order mark, UTF-8 with one, else PDFDocEncoding
/// (read as Latin-1, which it matches for printable characters).
fn decode_text_string(bytes: &[u8]) -> String {
    if let Some(rest) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        let units = rest
            .chunks_exact(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]));
        char::decode_utf16(units)
            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    } else if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        bytes.iter().map(|&b| b as char).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_strings_decode() {
        assert_eq!(decode_text_string(b"Plain caf\xe9"), "Plain café");
        assert_eq!(
            decode_text_string(&[0xFE, 0xFF, 0x00, 0x48, 0x00, 0xE9]),
            "Hé"
        );
        assert_eq!(decode_text_string(b"\xEF\xBB\xBFcaf\xC3\xA9"), "café");
    }
}
