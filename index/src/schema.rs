//! The tantivy side: schema, analyzers, and conversion between chunks and tantivy documents.
//!
//! One tantivy document per chunk. A document (path) that produced no chunk is recorded by a
//! *marker*: a tantivy document with `path` and `content_hash` but no `chunk_id` and no text, so
//! that incremental ingest still knows it has seen the file. Markers never match a query.

use std::path::Path;

use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TantivyDocument, TextFieldIndexing,
    TextOptions, Value, FAST, INDEXED, STORED, STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer, Token, TokenStream, Tokenizer,
};

use crate::error::{corrupt, IndexError};
use crate::manifest::{ANALYZER_EN_STEM, ANALYZER_EN_STEM_V0, ANALYZER_SIMPLE, ANALYZER_SIMPLE_V0};
use crate::record::{ChunkRecord, NewChunk};

/// Tokens longer than this (base64 blobs, hashes) are dropped from the BM25 index.
const MAX_TOKEN_LEN: usize = 40;

/// Handles of every field of the schema.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fields {
    pub chunk_id: Field,
    pub path: Field,
    pub content_hash: Field,
    pub title: Field,
    pub heading: Field,
    pub page_start: Field,
    pub page_end: Field,
    pub byte_start: Field,
    pub byte_end: Field,
    pub text: Field,
    /// The file's modification time; absent from indexes made before rag recorded it.
    pub modified: Option<Field>,
}

pub(crate) const F_CHUNK_ID: &str = "chunk_id";
pub(crate) const F_PATH: &str = "path";
pub(crate) const F_CONTENT_HASH: &str = "content_hash";
const F_TITLE: &str = "title";
const F_HEADING: &str = "heading";
const F_PAGE_START: &str = "page_start";
const F_PAGE_END: &str = "page_end";
const F_BYTE_START: &str = "byte_start";
const F_BYTE_END: &str = "byte_end";
const F_TEXT: &str = "text";
pub(crate) const F_MODIFIED: &str = "modified";

/// The schema of a new index whose text fields use `analyzer`.
pub(crate) fn build_schema(analyzer: &str) -> Schema {
    let mut b = Schema::builder();
    b.add_u64_field(F_CHUNK_ID, INDEXED | FAST | STORED);
    b.add_text_field(F_PATH, STRING | STORED | FAST);
    b.add_text_field(F_CONTENT_HASH, STRING | STORED | FAST);
    let analyzed = |positions: bool| {
        let record = if positions {
            IndexRecordOption::WithFreqsAndPositions
        } else {
            IndexRecordOption::WithFreqs
        };
        TextOptions::default().set_stored().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(analyzer)
                .set_index_option(record),
        )
    };
    b.add_text_field(F_TITLE, analyzed(false));
    b.add_text_field(F_HEADING, analyzed(false));
    let stored_u64 = || NumericOptions::default().set_stored();
    b.add_u64_field(F_PAGE_START, stored_u64());
    b.add_u64_field(F_PAGE_END, stored_u64());
    b.add_u64_field(F_BYTE_START, stored_u64());
    b.add_u64_field(F_BYTE_END, stored_u64());
    b.add_text_field(F_TEXT, analyzed(true));
    b.add_i64_field(F_MODIFIED, FAST | STORED);
    b.build()
}

impl Fields {
    pub(crate) fn from_schema(dir: &Path, schema: &Schema) -> Result<Self, IndexError> {
        let f = |name: &str| {
            schema
                .get_field(name)
                .map_err(|_| corrupt(dir, format!("tantivy schema has no field `{name}`")))
        };
        Ok(Fields {
            chunk_id: f(F_CHUNK_ID)?,
            path: f(F_PATH)?,
            content_hash: f(F_CONTENT_HASH)?,
            title: f(F_TITLE)?,
            heading: f(F_HEADING)?,
            page_start: f(F_PAGE_START)?,
            page_end: f(F_PAGE_END)?,
            byte_start: f(F_BYTE_START)?,
            byte_end: f(F_BYTE_END)?,
            text: f(F_TEXT)?,
            modified: schema.get_field(F_MODIFIED).ok(),
        })
    }

    /// The tantivy document of one chunk.
    pub(crate) fn chunk_doc(
        &self,
        chunk_id: u64,
        path: &str,
        content_hash: &str,
        chunk: &NewChunk,
    ) -> TantivyDocument {
        let mut d = TantivyDocument::new();
        d.add_u64(self.chunk_id, chunk_id);
        d.add_text(self.path, path);
        d.add_text(self.content_hash, content_hash);
        if let Some(t) = chunk.title.as_deref() {
            d.add_text(self.title, t);
        }
        if let Some(h) = chunk.heading.as_deref() {
            d.add_text(self.heading, h);
        }
        let (ps, pe) = chunk.pages.unwrap_or((0, 0));
        d.add_u64(self.page_start, u64::from(ps));
        d.add_u64(self.page_end, u64::from(pe));
        d.add_u64(self.byte_start, chunk.byte_range.start as u64);
        d.add_u64(self.byte_end, chunk.byte_range.end as u64);
        d.add_text(self.text, &chunk.text);
        if let (Some(f), Some(m)) = (self.modified, chunk.modified) {
            d.add_i64(f, m);
        }
        d
    }

    /// The marker of a document that produced no chunk.
    pub(crate) fn marker_doc(&self, path: &str, content_hash: &str) -> TantivyDocument {
        let mut d = TantivyDocument::new();
        d.add_text(self.path, path);
        d.add_text(self.content_hash, content_hash);
        d
    }

    /// The stored modification time of a chunk's document.
    pub(crate) fn modified(&self, d: &TantivyDocument) -> Option<i64> {
        d.get_first(self.modified?).and_then(|v| v.as_i64())
    }

    /// Read a stored chunk back. `None` for a marker document.
    pub(crate) fn record(&self, d: &TantivyDocument) -> Option<ChunkRecord> {
        let u = |f: Field| d.get_first(f).and_then(|v| v.as_u64()).unwrap_or(0);
        let s = |f: Field| d.get_first(f).and_then(|v| v.as_str().map(str::to_string));
        let chunk_id = d.get_first(self.chunk_id).and_then(|v| v.as_u64())?;
        let (ps, pe) = (u(self.page_start), u(self.page_end));
        Some(ChunkRecord {
            chunk_id,
            path: s(self.path).unwrap_or_default(),
            content_hash: s(self.content_hash).unwrap_or_default(),
            title: s(self.title),
            heading: s(self.heading),
            pages: (ps != 0).then(|| (ps as u32, pe.max(ps) as u32)),
            byte_range: u(self.byte_start) as usize..u(self.byte_end) as usize,
            text: s(self.text).unwrap_or_default(),
            modified: self.modified(d),
        })
    }
}

/// Build one of our analyzers by name (`None` for a name we do not know).
pub(crate) fn analyzer(name: &str) -> Option<TextAnalyzer> {
    fn finish<T: Tokenizer>(tokenizer: T, stem: bool) -> TextAnalyzer {
        let b = TextAnalyzer::builder(tokenizer)
            .filter(RemoveLongFilter::limit(MAX_TOKEN_LEN))
            .filter(LowerCaser)
            .filter(AsciiFoldingFilter);
        if stem {
            b.filter(Stemmer::new(Language::English)).build()
        } else {
            b.build()
        }
    }
    match name {
        ANALYZER_EN_STEM => Some(finish(FigureTokenizer, true)),
        ANALYZER_SIMPLE => Some(finish(FigureTokenizer, false)),
        ANALYZER_EN_STEM_V0 => Some(finish(SimpleTokenizer::default(), true)),
        ANALYZER_SIMPLE_V0 => Some(finish(SimpleTokenizer::default(), false)),
        _ => None,
    }
}

/// Words as tantivy's `SimpleTokenizer` makes them (maximal runs of alphanumeric characters),
/// except that a figure written with thousands separators is one term without them: `41,000`
/// is `41000`, `$1,250,000` is `1250000`. Split, its groups (`000`, `050`) are among the most
/// common terms of any table and say nothing; whole, the figure is as rare as it is. Only a comma
/// followed by exactly three digits joins, so `1,2,3` stays three terms; decimals stay split at
/// the point as before (`0.965` is `0` and `965`), so every term stays a plain alphanumeric word
/// that a Milvus server's `standard` tokenizer, splitting rag's terms at the spaces, keeps whole.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FigureTokenizer;

/// The token stream of [`FigureTokenizer`]: all tokens of the text, made up front.
pub(crate) struct FigureTokens {
    tokens: Vec<Token>,
    next: usize,
}

impl Tokenizer for FigureTokenizer {
    type TokenStream<'a> = FigureTokens;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> FigureTokens {
        FigureTokens {
            tokens: figure_tokens(text),
            next: 0,
        }
    }
}

impl TokenStream for FigureTokens {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

fn figure_tokens(text: &str) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut tokens: Vec<Token> = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if !c.is_alphanumeric() {
            continue;
        }
        let mut end = start + c.len_utf8();
        let mut word = String::from(c);
        while let Some(&(i, c)) = chars.peek() {
            if c.is_alphanumeric() {
                word.push(c);
                end = i + c.len_utf8();
                chars.next();
                continue;
            }
            // `,ddd` after digits only, then not a fourth digit: a thousands group.
            let group = c == ','
                && word.bytes().all(|b| b.is_ascii_digit())
                && bytes.len() >= i + 4
                && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
                && !bytes.get(i + 4).is_some_and(|b| b.is_ascii_alphanumeric());
            if !group {
                break;
            }
            word.push_str(&text[i + 1..i + 4]);
            end = i + 4;
            chars.next();
            for _ in 0..3 {
                chars.next();
            }
        }
        tokens.push(Token {
            offset_from: start,
            offset_to: end,
            position: tokens.len(),
            text: word,
            position_length: 1,
        });
    }
    tokens
}

/// The terms of `text` as `analyzer` makes them, in order, repeats kept.
pub(crate) fn terms(analyzer: &TextAnalyzer, text: &str) -> Vec<String> {
    let mut analyzer = analyzer.clone();
    let mut stream = analyzer.token_stream(text);
    let mut terms = Vec::new();
    while let Some(tok) = stream.next() {
        terms.push(tok.text.clone());
    }
    terms
}

/// The distinct terms of `text` as `analyzer` makes them, in the order they first appear: a
/// BM25 query asks for each term once, in both stores.
pub(crate) fn distinct_terms(analyzer: &TextAnalyzer, text: &str) -> Vec<String> {
    let mut once: Vec<String> = Vec::new();
    for t in terms(analyzer, text) {
        if !once.contains(&t) {
            once.push(t);
        }
    }
    once
}

/// Register our analyzers on a tantivy index (tantivy stores only their names).
pub(crate) fn register_analyzers(index: &tantivy::Index) {
    for name in [
        ANALYZER_EN_STEM,
        ANALYZER_SIMPLE,
        ANALYZER_EN_STEM_V0,
        ANALYZER_SIMPLE_V0,
    ] {
        if let Some(a) = analyzer(name) {
            index.tokenizers().register(name, a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms_of(name: &str, text: &str) -> Vec<String> {
        terms(&analyzer(name).unwrap(), text)
    }

    #[test]
    fn figures_with_thousands_separators_are_one_term() {
        assert_eq!(
            terms_of(
                ANALYZER_SIMPLE,
                "At least: 41,000; tax $1,250,000 (0.965) 1,2,3 12,3456 7,000x"
            ),
            [
                "at", "least", "41000", "tax", "1250000", "0", "965", "1", "2", "3", "12", "3456",
                "7", "000x"
            ]
        );
        // Offsets cover the figure as written, positions count terms.
        let mut a = analyzer(ANALYZER_SIMPLE).unwrap();
        let mut stream = a.token_stream("é 41,050 b");
        let mut seen = Vec::new();
        while let Some(t) = stream.next() {
            seen.push((t.text.clone(), t.offset_from, t.offset_to, t.position));
        }
        assert_eq!(
            seen,
            [
                ("e".to_string(), 0, 2, 0),
                ("41050".to_string(), 3, 9, 1),
                ("b".to_string(), 10, 11, 2)
            ]
        );
    }

    #[test]
    fn figure_tokenizer_splits_words_as_the_simple_tokenizer_does() {
        let text = "Hello, wörld! It's 3.5% of (x_y) naïve-ly 北京 2026 ,,, 12,";
        for (new, old) in [
            (ANALYZER_EN_STEM, ANALYZER_EN_STEM_V0),
            (ANALYZER_SIMPLE, ANALYZER_SIMPLE_V0),
        ] {
            assert_eq!(terms_of(new, text), terms_of(old, text));
        }
        // Older indexes keep their analyzer: a figure is split as it always was.
        assert_eq!(terms_of(ANALYZER_EN_STEM_V0, "41,000"), ["41", "000"]);
        assert_eq!(terms_of(ANALYZER_EN_STEM, "41,000"), ["41000"]);
    }
}
