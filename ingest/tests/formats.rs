//! Office, e-book and delimited formats: real files built here with the zip crate, read back
//! through `load_bytes` / `load`, and the hostile cases each container format must survive.

use std::io::{Cursor, Write};
use std::path::Path;
use std::time::Instant;

use rag_ingest::{load, load_bytes, DocKind, Document, LoadError};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// A zip archive of (name, content) members, deflated.
fn zip(members: &[(&str, &str)]) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    for (name, content) in members {
        w.start_file(*name, opts).unwrap();
        w.write_all(content.as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn heading_titles(d: &Document) -> Vec<(u8, String)> {
    d.headings
        .iter()
        .map(|h| (h.level, h.title.clone()))
        .collect()
}

const CORE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Harbour Report 2024</dc:title></cp:coreProperties>"#;

const DOCX_STYLES: &str = r#"<?xml version="1.0"?>
<w:styles xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">
<w:style w:type="paragraph" w:styleId="Normal"><w:name w:val="Normal"/></w:style>
<w:style w:type="paragraph" w:styleId="Heading1"><w:name w:val="heading 1"/></w:style>
<w:style w:type="paragraph" w:styleId="berschrift2"><w:name w:val="heading 2"/></w:style>
<w:style w:type="paragraph" w:styleId="Custom"><w:name w:val="My Section"/><w:pPr><w:outlineLvl w:val="2"/></w:pPr></w:style>
</w:styles>"#;

const DOCX_BODY: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main" xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"><w:body>
<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Harbour</w:t></w:r><w:r><w:t xml:space="preserve"> operations</w:t></w:r></w:p>
<w:p><w:r><w:t xml:space="preserve">The harbour master is </w:t></w:r><w:del><w:r><w:delText>John Smith</w:delText></w:r></w:del><w:ins><w:r><w:t>Anneliese Brandt</w:t></w:r></w:ins><w:r><w:t>.</w:t></w:r></w:p>
<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText>PAGE \* MERGEFORMAT</w:instrText></w:r><w:r><w:t>Fees&#160;&amp;&#x20;dues</w:t><w:tab/><w:t>rise.</w:t></w:r></w:p>
<w:tbl><w:tr><w:tc><w:p><w:r><w:t>Vessel</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Fee</w:t></w:r></w:p></w:tc></w:tr>
<w:tr><w:tc><w:p><w:r><w:t>Ferry</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>1,200</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
<w:p><w:pPr><w:pStyle w:val="berschrift2"/></w:pPr><w:r><w:lastRenderedPageBreak/><w:t>Dredging</w:t></w:r></w:p>
<w:p><w:r><mc:AlternateContent><mc:Choice><w:t>Channel depth is 14 m.</w:t></mc:Choice><mc:Fallback><w:t>Channel depth is 14 m.</w:t></mc:Fallback></mc:AlternateContent></w:r></w:p>
<w:p><w:r><w:br w:type="page"/><w:t>Annex text.</w:t></w:r></w:p>
<w:p><w:pPr><w:pStyle w:val="Custom"/></w:pPr><w:r><w:t>Outline section</w:t></w:r></w:p>
</w:body></w:document>"#;

fn docx() -> Vec<u8> {
    zip(&[
        ("[Content_Types].xml", "<Types/>"),
        ("word/document.xml", DOCX_BODY),
        ("word/styles.xml", DOCX_STYLES),
        ("docProps/core.xml", CORE),
    ])
}

#[test]
fn docx_paragraphs_headings_tables_and_pages() {
    let d = load_bytes(Path::new("r.docx"), DocKind::Docx, &docx()).unwrap();
    assert_eq!(
        d.text,
        // The no-break space (&#160;) and the tab come out as plain spaces.
        "Harbour operations\n\nThe harbour master is Anneliese Brandt.\n\n\
         Fees & dues rise.\n\nVessel | Fee\nVessel: Ferry; Fee: 1,200\n\n\
         Dredging\n\nChannel depth is 14 m.\n\nAnnex text.\n\nOutline section",
        "{:?}",
        d.text
    );
    assert_eq!(d.title.as_deref(), Some("Harbour Report 2024"));
    assert_eq!(
        heading_titles(&d),
        vec![
            (1, "Harbour operations".into()),
            (2, "Dredging".into()),
            (3, "Outline section".into())
        ]
    );
    // Page 2 starts at Word's rendered break (before "Dredging"), page 3 at the explicit one.
    assert_eq!(d.pages.len(), 3, "{:?}", d.pages);
    assert_eq!(d.page_at(d.text.find("Vessel").unwrap()), Some(1));
    assert_eq!(d.page_at(d.text.find("Dredging").unwrap()), Some(2));
    assert_eq!(d.page_at(d.text.find("Annex").unwrap()), Some(3));
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
}

const PRESENTATION: &str = r#"<?xml version="1.0"?>
<p:presentation xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><p:sldIdLst><p:sldId id="256" r:id="rId7"/><p:sldId id="257" r:id="rId3"/></p:sldIdLst></p:presentation>"#;

const PRESENTATION_RELS: &str = r#"<?xml version="1.0"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId3" Type="slide" Target="slides/slide1.xml"/><Relationship Id="rId7" Type="slide" Target="/ppt/slides/slide2.xml"/><Relationship Id="rId9" Type="hyperlink" Target="https://example.com" TargetMode="External"/></Relationships>"#;

fn slide(title: &str, body: &str, extra: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<p:sld xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main" xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"><p:cSld><p:spTree>
<p:sp><p:nvSpPr><p:nvPr><p:ph type="title"/></p:nvPr></p:nvSpPr><p:txBody><a:p><a:r><a:t>{title}</a:t></a:r></a:p></p:txBody></p:sp>
<p:sp><p:nvSpPr><p:nvPr><p:ph idx="1"/></p:nvPr></p:nvSpPr><p:txBody><a:p><a:r><a:t>{body}</a:t></a:r></a:p><a:p><a:r><a:t>Second line</a:t></a:r></a:p></p:txBody></p:sp>
<p:sp><p:nvSpPr><p:nvPr><p:ph type="sldNum" idx="12"/></p:nvPr></p:nvSpPr><p:txBody><a:p><a:r><a:t>99</a:t></a:r></a:p></p:txBody></p:sp>
{extra}</p:spTree></p:cSld></p:sld>"#
    )
}

const SLIDE_TABLE: &str = r#"<p:graphicFrame><a:graphic><a:graphicData><a:tbl><a:tr><a:tc><a:txBody><a:p><a:r><a:t>Quarter</a:t></a:r></a:p></a:txBody></a:tc><a:tc><a:txBody><a:p><a:r><a:t>Tonnage</a:t></a:r></a:p></a:txBody></a:tc></a:tr><a:tr><a:tc><a:txBody><a:p><a:r><a:t>Q3</a:t></a:r></a:p></a:txBody></a:tc><a:tc><a:txBody><a:p><a:r><a:t>8.1 Mt</a:t></a:r></a:p></a:txBody></a:tc></a:tr></a:tbl></a:graphicData></a:graphic></p:graphicFrame>"#;

const NOTES: &str = r#"<?xml version="1.0"?>
<p:notes xmlns:p="http://schemas.openxmlformats.org/presentationml/2006/main" xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"><p:cSld><p:spTree>
<p:sp><p:nvSpPr><p:nvPr><p:ph type="sldImg"/></p:nvPr></p:nvSpPr></p:sp>
<p:sp><p:nvSpPr><p:nvPr><p:ph type="body" idx="1"/></p:nvPr></p:nvSpPr><p:txBody><a:p><a:r><a:t>Mention the new crane.</a:t></a:r></a:p></p:txBody></p:sp>
</p:spTree></p:cSld></p:notes>"#;

fn pptx() -> Vec<u8> {
    let s1 = slide("Tonnage", "Cargo grew", SLIDE_TABLE);
    let s2 = slide("Welcome", "Agenda &amp; goals", "");
    zip(&[
        ("ppt/presentation.xml", PRESENTATION),
        ("ppt/_rels/presentation.xml.rels", PRESENTATION_RELS),
        ("ppt/slides/slide1.xml", &s1),
        ("ppt/slides/slide2.xml", &s2),
        (
            "ppt/slides/_rels/slide1.xml.rels",
            r#"<Relationships><Relationship Id="rId2" Type="notesSlide" Target="../notesSlides/notesSlide1.xml"/></Relationships>"#,
        ),
        ("ppt/notesSlides/notesSlide1.xml", NOTES),
        ("docProps/core.xml", CORE),
    ])
}

#[test]
fn pptx_slides_are_pages_in_presentation_order() {
    let d = load_bytes(Path::new("deck.pptx"), DocKind::Pptx, &pptx()).unwrap();
    assert_eq!(
        d.text,
        "Welcome\n\nAgenda & goals\nSecond line\n\n\
         Tonnage\n\nCargo grew\nSecond line\n\nQuarter | Tonnage\nQuarter: Q3; Tonnage: 8.1 Mt\n\n\
         Notes: Mention the new crane.",
        "{:?}",
        d.text
    );
    assert!(!d.text.contains("99"), "slide numbers are left out");
    assert_eq!(
        heading_titles(&d),
        vec![(1, "Welcome".into()), (1, "Tonnage".into())]
    );
    assert_eq!(d.pages.len(), 2);
    assert_eq!(d.page_at(d.text.find("Agenda").unwrap()), Some(1));
    assert_eq!(d.page_at(d.text.find("crane").unwrap()), Some(2));
    assert_eq!(d.title.as_deref(), Some("Harbour Report 2024"));
}

const WORKBOOK: &str = r#"<?xml version="1.0"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Revenue" sheetId="1" r:id="rId1"/><sheet name="Notes &amp; links" sheetId="2" r:id="rId2"/></sheets></workbook>"#;

const WORKBOOK_RELS: &str = r#"<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="worksheet" Target="worksheets/sheet2.xml"/></Relationships>"#;

const SHARED: &str = r#"<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><si><t>Region</t></si><si><t>Q1</t></si><si><r><t>Opened</t></r><r><t xml:space="preserve"> on</t></r></si><si><t>North</t></si><si><t>Kanji</t><rPh><t>kana</t></rPh></si></sst>"#;

const STYLES: &str = r#"<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><numFmts><numFmt numFmtId="164" formatCode="dd/mm/yyyy"/></numFmts><cellXfs><xf numFmtId="0"/><xf numFmtId="164"/><xf numFmtId="4"/></cellXfs></styleSheet>"#;

const SHEET1: &str = r#"<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>
<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="D1" t="s"><v>2</v></c></row>
<row r="3"><c r="A3" t="s"><v>3</v></c><c r="B3" s="2"><v>4200.5</v></c><c r="D3" s="1"><v>45292</v></c></row>
<row r="4"><c r="A4" t="inlineStr"><is><t>South</t></is></c><c r="B4" t="str"><f>B3*2</f><v>8401</v></c><c r="C4" t="b"><v>1</v></c></row>
</sheetData></worksheet>"#;

const SHEET2: &str = r#"<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="2"><c r="B2" t="s"><v>4</v></c><c r="C2" t="e"><v>#DIV/0!</v></c></row></sheetData></worksheet>"#;

fn xlsx() -> Vec<u8> {
    zip(&[
        ("xl/workbook.xml", WORKBOOK),
        ("xl/_rels/workbook.xml.rels", WORKBOOK_RELS),
        ("xl/sharedStrings.xml", SHARED),
        ("xl/styles.xml", STYLES),
        ("xl/worksheets/sheet1.xml", SHEET1),
        ("xl/worksheets/sheet2.xml", SHEET2),
    ])
}

#[test]
fn xlsx_rows_keep_sheet_row_and_column_labels() {
    let d = load_bytes(Path::new("fees.xlsx"), DocKind::Xlsx, &xlsx()).unwrap();
    assert_eq!(
        d.text,
        "Revenue\n\nRow 1: Region | Q1 | Opened on\n\
         Row 3: Region: North; Q1: 4200.5; Opened on: 2024-01-01\n\
         Row 4: Region: South; Q1: 8401; TRUE\n\n\
         Notes & links\n\nRow 2: Kanji | #DIV/0!",
        "{:?}",
        d.text
    );
    assert_eq!(
        heading_titles(&d),
        vec![(1, "Revenue".into()), (1, "Notes & links".into())]
    );
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
}

#[test]
fn csv_and_tsv_files_through_load() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("ports.csv");
    std::fs::write(
        &csv,
        "Port,Country,TEU\nRotterdam,Netherlands,\"13,400,000\"\nHamburg,Germany,7.7M\n",
    )
    .unwrap();
    let d = load(&csv).unwrap();
    assert_eq!(d.kind, DocKind::Csv);
    assert_eq!(
        d.text,
        "Row 1: Port | Country | TEU\nRow 2: Port: Rotterdam; Country: Netherlands; TEU: 13,400,000\n\
         Row 3: Port: Hamburg; Country: Germany; TEU: 7.7M"
    );
    let tsv = dir.path().join("t.tsv");
    std::fs::write(&tsv, "a,b\tc\n").unwrap();
    assert_eq!(load(&tsv).unwrap().text, "Row 1: a,b | c");
    // A CSV with NUL bytes is binary, as any text file would be.
    let bin = dir.path().join("b.csv");
    std::fs::write(&bin, b"a,b\0\0\0,c").unwrap();
    assert!(matches!(load(&bin), Err(LoadError::Binary { .. })));
}

const CONTAINER: &str = r#"<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles></container>"#;

const OPF: &str = r#"<?xml version="1.0"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Tides of the North Sea</dc:title></metadata>
<manifest><item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/><item id="c1" href="text/ch%201.xhtml" media-type="application/xhtml+xml"/><item id="c2" href="text/ch2.xhtml" media-type="application/xhtml+xml"/><item id="css" href="style.css" media-type="text/css"/></manifest>
<spine><itemref idref="c2"/><itemref idref="c1"/></spine></package>"#;

fn epub() -> Vec<u8> {
    zip(&[
        ("mimetype", "application/epub+zip"),
        ("META-INF/container.xml", CONTAINER),
        ("OEBPS/content.opf", OPF),
        ("OEBPS/nav.xhtml", "<html><body><nav>Contents</nav></body></html>"),
        (
            "OEBPS/text/ch 1.xhtml",
            "<html><head><title>Tides</title></head><body><h1>Chapter Two</h1><p>Spring tides follow the new moon.</p></body></html>",
        ),
        (
            "OEBPS/text/ch2.xhtml",
            "<html><body><h1>Chapter One</h1><p>The sea &amp; the shore.</p><h2>Ebb</h2><p>Water leaves.</p></body></html>",
        ),
        ("OEBPS/style.css", "p { margin: 0 }"),
    ])
}

#[test]
fn epub_chapters_in_reading_order() {
    let d = load_bytes(Path::new("book.epub"), DocKind::Epub, &epub()).unwrap();
    assert_eq!(
        d.text,
        "Chapter One\n\nThe sea & the shore.\n\nEbb\n\nWater leaves.\n\n\
         Chapter Two\n\nSpring tides follow the new moon."
    );
    assert_eq!(d.title.as_deref(), Some("Tides of the North Sea"));
    assert_eq!(
        heading_titles(&d),
        vec![
            (1, "Chapter One".into()),
            (2, "Ebb".into()),
            (1, "Chapter Two".into())
        ]
    );
    let spring = d.text.find("Spring").unwrap();
    assert_eq!(d.heading_path_at(spring), vec!["Chapter Two"]);
    assert!(!d.text.contains("Contents"), "the nav is not in the spine");
}

#[test]
fn epub_with_drm_is_refused_with_a_reason() {
    let enc = r#"<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData><enc:CipherData><enc:CipherReference URI="OEBPS/text/ch2.xhtml"/></enc:CipherData></enc:EncryptedData></encryption>"#;
    let bytes = zip(&[
        ("META-INF/container.xml", CONTAINER),
        ("META-INF/encryption.xml", enc),
        ("OEBPS/content.opf", OPF),
        ("OEBPS/text/ch2.xhtml", "\u{1}\u{2}garbage"),
    ]);
    let e = load_bytes(Path::new("drm.epub"), DocKind::Epub, &bytes).unwrap_err();
    assert!(matches!(e, LoadError::Protected { .. }), "{e}");
    assert!(e.to_string().contains("DRM"), "{e}");
}

/// Every container format, cut short at many points, damaged, or under the wrong extension:
/// an error naming the file (or a document from what was readable), never a panic.
#[test]
fn hostile_containers_fail_cleanly() {
    let files = [
        ("a.docx", DocKind::Docx, docx()),
        ("a.pptx", DocKind::Pptx, pptx()),
        ("a.xlsx", DocKind::Xlsx, xlsx()),
        ("a.epub", DocKind::Epub, epub()),
    ];
    for (name, kind, bytes) in &files {
        let path = Path::new(name);
        for cut in (1..bytes.len()).step_by(bytes.len() / 40 + 1) {
            match load_bytes(path, *kind, &bytes[..cut]) {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.path(), path);
                    assert!(
                        matches!(e, LoadError::Corrupt { .. }),
                        "{name} cut at {cut}: {e}"
                    );
                }
            }
        }
        // Flipped bytes in the middle of the compressed data.
        let mut damaged = bytes.clone();
        for i in (damaged.len() / 3..damaged.len() / 2).step_by(7) {
            damaged[i] ^= 0x5a;
        }
        let _ = load_bytes(path, *kind, &damaged);
        // Each file under every other container extension: a clear "not a ..." error.
        for (other, other_kind, _) in &files {
            if other == name {
                continue;
            }
            let e = load_bytes(Path::new(other), *other_kind, bytes).unwrap_err();
            assert!(
                matches!(e, LoadError::Corrupt { .. }),
                "{name} as {other}: {e}"
            );
            assert!(e.to_string().contains("not "), "{name} as {other}: {e}");
        }
    }
    // A PDF (or any non-zip) named .docx.
    let e = load_bytes(Path::new("x.docx"), DocKind::Docx, b"%PDF-1.4\n1 0 obj\n").unwrap_err();
    assert!(e.to_string().contains("not a readable zip archive"), "{e}");
    // A legacy or password-protected Office file (OLE compound file) named .xlsx.
    let mut ole = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    ole.resize(4096, 0);
    let e = load_bytes(Path::new("x.xlsx"), DocKind::Xlsx, &ole).unwrap_err();
    assert!(matches!(e, LoadError::Protected { .. }), "{e}");
    assert!(e.to_string().contains("password"), "{e}");
}

#[test]
fn xml_bomb_expands_to_nothing() {
    let mut dtd = String::from("<!DOCTYPE w:document [<!ENTITY a0 \"lol\">");
    for i in 1..10 {
        let prev = format!("&a{};", i - 1).repeat(10);
        dtd.push_str(&format!("<!ENTITY a{i} \"{prev}\">"));
    }
    dtd.push(']');
    dtd.push('>');
    let body = format!(
        "<?xml version=\"1.0\"?>{dtd}<w:document xmlns:w=\"w\"><w:body><w:p><w:r><w:t>Before &a9; after</w:t></w:r></w:p></w:body></w:document>"
    );
    let bytes = zip(&[("word/document.xml", &body)]);
    let start = Instant::now();
    let d = load_bytes(Path::new("bomb.docx"), DocKind::Docx, &bytes).unwrap();
    assert_eq!(d.text, "Before after");
    assert!(start.elapsed().as_secs() < 10);
}

/// A sheet of ~100 MB of XML (compressed to a few MB): read as a stream until the document's
/// text limit, with a warning naming the sheet and row where it stopped.
#[test]
fn a_100_mb_sheet_is_read_up_to_the_text_limit() {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(1))
        .large_file(true);
    for (name, content) in [
        (
            "xl/workbook.xml",
            WORKBOOK.replace(
                r#"<sheet name="Notes &amp; links" sheetId="2" r:id="rId2"/>"#,
                "",
            ),
        ),
        ("xl/_rels/workbook.xml.rels", WORKBOOK_RELS.to_string()),
    ] {
        w.start_file(name, opts).unwrap();
        w.write_all(content.as_bytes()).unwrap();
    }
    w.start_file("xl/worksheets/sheet1.xml", opts).unwrap();
    w.write_all(b"<worksheet><sheetData>").unwrap();
    let mut written = 0usize;
    let mut r = 0u64;
    while written < 100 << 20 {
        r += 1;
        let row = format!(
            "<row r=\"{r}\"><c r=\"A{r}\" t=\"inlineStr\"><is><t>berth {r}</t></is></c><c r=\"B{r}\"><v>{}</v></c><c r=\"C{r}\"><v>{}</v></c></row>",
            r * 7,
            r as f64 / 3.0
        );
        w.write_all(row.as_bytes()).unwrap();
        written += row.len();
    }
    w.write_all(b"</sheetData></worksheet>").unwrap();
    let bytes = w.finish().unwrap().into_inner();
    assert!(bytes.len() < 64 << 20, "{} bytes", bytes.len());
    let d = load_bytes(Path::new("big.xlsx"), DocKind::Xlsx, &bytes).unwrap();
    assert!(
        d.text.len() > 8 << 20 && d.text.len() < 9 << 20,
        "{}",
        d.text.len()
    );
    assert!(
        d.text
            .starts_with("Revenue\n\nRow 1: berth 1 | 7 | 0.333333333333333\n"),
        "{}",
        &d.text[..200]
    );
    assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    assert!(
        d.warnings[0].contains("sheet \"Revenue\" at row"),
        "{:?}",
        d.warnings
    );
}
