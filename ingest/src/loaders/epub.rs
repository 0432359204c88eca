//! E-books (.epub 2 and 3): the content documents in reading order (the package's spine), each
//! read as HTML, so each chapter's headings become headings and a citation names its chapter.
//! The title is the package's `dc:title`. A book whose content is encrypted (DRM) is refused with
//! a message saying so; obfuscated fonts do not matter.

use std::collections::HashMap;

use super::html;
use super::parse::{Failure, Parsed};
use super::zipped::{attr, folder, is, join, Archive, Flow, Xml, MAX_TEXT_BYTES};
use crate::normalize::{normalize, TextBuilder};

const CONTAINER: &str = "META-INF/container.xml";

pub(super) fn parse(bytes: &[u8], warnings: &mut Vec<String>) -> Result<Parsed, Failure> {
    let mut archive = Archive::open(bytes, "an EPUB e-book")?;
    let package = package_path(&mut archive)?;
    let (title, chapters) = spine(&mut archive, &package)?;
    refuse_encrypted(&mut archive, &chapters)?;
    let mut b = TextBuilder::default();
    let mut size = 0usize;
    for (i, chapter) in chapters.iter().enumerate() {
        let Some(raw) = archive.read(chapter)? else {
            warnings.push(format!(
                "{chapter} is in the reading order but not in the book"
            ));
            continue;
        };
        size += raw.len();
        let source = String::from_utf8_lossy(&raw);
        let depth = html::nesting_depth(&source);
        let parsed = if depth > html::MAX_DEPTH {
            warnings.push(format!(
                "{chapter}: elements nested {depth} deep: read as plain text, without headings"
            ));
            html::parse_flat(&source)
        } else {
            super::parse::catch_quietly(|| html::parse(&source))
                .map_err(|detail| format!("{chapter}: {detail}"))?
        };
        b.append(parsed.builder);
        if size > 2 * MAX_TEXT_BYTES {
            warnings.push(format!(
                "text cut after chapter {} of {}: {} MiB is the most kept from one document",
                i + 1,
                chapters.len(),
                MAX_TEXT_BYTES >> 20
            ));
            break;
        }
    }
    if let Some(cut) = archive.cut.take() {
        warnings.push(cut);
    }
    Ok(Parsed { title, builder: b })
}

/// Where the package document is (`META-INF/container.xml`'s first rootfile); books without a
/// container are tried at the usual places.
fn package_path(archive: &mut Archive<'_>) -> Result<String, String> {
    let mut path = None;
    let found = archive.walk(CONTAINER, |ev| {
        if let Xml::Start(e) = ev {
            if is(e, b"rootfile") {
                path = attr(e, b"full-path", false);
                if path.is_some() {
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    })?;
    if let Some(p) = path {
        return Ok(join("", &p));
    }
    let guess = archive
        .names()
        .into_iter()
        .find(|n| n.to_ascii_lowercase().ends_with(".opf"));
    guess.ok_or_else(|| {
        if found {
            format!("not a readable EPUB: {CONTAINER} names no package document")
        } else {
            format!("not an EPUB: the archive has no {CONTAINER} and no .opf package document")
        }
    })
}

/// The book's title and its content documents in reading order.
fn spine(
    archive: &mut Archive<'_>,
    package: &str,
) -> Result<(Option<String>, Vec<String>), String> {
    let mut items: HashMap<String, (String, String)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut title = String::new();
    let (mut in_title, mut have_title) = (false, false);
    let found = archive.walk(package, |ev| {
        match ev {
            Xml::Start(e) if is(e, b"title") && !have_title => in_title = true,
            Xml::End(b"title") if in_title => {
                in_title = false;
                have_title = true;
            }
            Xml::Text(t) if in_title => title.push_str(t),
            Xml::Start(e) if is(e, b"item") => {
                if let (Some(id), Some(href)) = (attr(e, b"id", false), attr(e, b"href", false)) {
                    let media = attr(e, b"media-type", false).unwrap_or_default();
                    items.insert(id, (href, media));
                }
            }
            Xml::Start(e) if is(e, b"itemref") => {
                if let Some(id) = attr(e, b"idref", false) {
                    order.push(id);
                }
            }
            _ => {}
        }
        Flow::Continue
    })?;
    if !found {
        return Err(format!(
            "not a readable EPUB: its package document {package} is missing"
        ));
    }
    let base = folder(package);
    let chapters: Vec<String> = order
        .iter()
        .filter_map(|id| items.get(id))
        .filter(|(_, media)| media.contains("html") || media.is_empty())
        .map(|(href, _)| join(base, href.split('#').next().unwrap_or(href)))
        .collect();
    if chapters.is_empty() {
        return Err(format!(
            "not a readable EPUB: the reading order in {package} lists no content documents"
        ));
    }
    let title = normalize(&title).replace('\n', " ");
    Ok(((!title.is_empty()).then_some(title), chapters))
}

/// Refuses a book whose content documents are encrypted (`META-INF/encryption.xml` naming any of
/// them); fonts alone may be.
fn refuse_encrypted(archive: &mut Archive<'_>, chapters: &[String]) -> Result<(), Failure> {
    let mut encrypted = Vec::new();
    let _ = archive.walk("META-INF/encryption.xml", |ev| {
        if let Xml::Start(e) = ev {
            if is(e, b"CipherReference") {
                if let Some(uri) = attr(e, b"URI", false) {
                    encrypted.push(join("", &uri));
                }
            }
        }
        Flow::Continue
    });
    if encrypted.iter().any(|u| chapters.contains(u)) {
        return Err(Failure::Protected(
            "its text is encrypted (DRM); only EPUBs without DRM can be read".into(),
        ));
    }
    Ok(())
}
