//! `rag ingest`: walk → load → chunk → embed → index, incrementally and crash-safely.
//!
//! Documents are keyed by path (absolute, as canonicalised) and content hash
//! ([`rag_ingest::content_hash`]: a PDF whose extraction has since improved counts as changed).
//! An unchanged file is neither parsed nor embedded; a changed one has all its chunks replaced
//! in one commit; a file under an ingested root that is gone is removed. A file that fails to
//! load keeps whatever was indexed for it before. Commits happen every few files and seconds, so
//! a killed ingest keeps most of its work and the next one finishes the job.
//!
//! Chunks are embedded in batches that span files ([`IngestOptions::batch_chunks`]): short files
//! (an abstract, a note) no longer go through the embedder one or two chunks at a time. The files
//! of a batch are written, and their events sent, in walk order once it is embedded; a commit
//! only ever follows whole files.
//!
//! Files are read, hashed, parsed and chunked on a thread of their own, at most
//! `PARSED_AHEAD` files ahead of the embedder, so a slow parser (a PDF) and the embedder overlap.
//! [`StageTimes`] then adds up time spent on two threads: `parse` and `chunk` can overlap
//! `embed` and `index`.
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use rag_index::{NewChunk, StoreWriter};
use rag_ingest::{ChunkOptions, DocKind, TokenCounter, WalkEntry, WalkOptions};
use rag_model::TextEmbedder;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::Location;

/// Settings of one ingest run.
///
/// ```
/// let mut opts = rag::IngestOptions::default();
/// opts.chunk.max_tokens = 384;
/// opts.walk.include_hidden = true;
/// opts.reindex = false;
/// assert_eq!(opts.commit_every_files, 32);
/// ```
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Wipe the index and build it again.
    pub reindex: bool,
    pub walk: WalkOptions,
    pub chunk: ChunkOptions,
    /// Commit after this many changed files. Default 32.
    pub commit_every_files: usize,
    /// ... or after this long since the last commit. Default 30 s: a kill loses at most that.
    pub commit_every: Duration,
    /// Chunks gathered from consecutive files before they are embedded together. Default 64;
    /// 1 embeds each file on its own. A file is never split across batches.
    pub batch_chunks: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            reindex: false,
            walk: WalkOptions::default(),
            chunk: ChunkOptions::default(),
            commit_every_files: 32,
            commit_every: Duration::from_secs(30),
            batch_chunks: 64,
        }
    }
}

/// What happened to one file (in [`IngestEvent::File`]).
///
/// ```
/// let failed = rag::FileStatus::Failed;
/// assert_eq!(serde_json::to_string(&failed).unwrap(), "\"failed\"");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Indexed,
    Unchanged,
    Skipped,
    Failed,
    Removed,
}

/// Progress events, for bars and logs; `rag ingest --json` prints one per line.
///
/// ```no_run
/// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
/// rag.ingest_with(&["docs".into()], &Default::default(), &mut |event| match event {
///     rag::IngestEvent::Started { files } => eprintln!("{files} files"),
///     rag::IngestEvent::File { path, reason: Some(r), .. } => eprintln!("{}: {r}", path.display()),
///     _ => {}
/// })?;
/// # Ok::<(), rag::Error>(())
/// ```
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum IngestEvent {
    /// The walk is done: this many candidate files.
    Started { files: usize },
    /// One file is done.
    File {
        path: PathBuf,
        status: FileStatus,
        chunks: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    /// A durable commit.
    Committed { documents: usize, chunks: usize },
}

/// Seconds per stage of an ingest (in [`IngestReport::stages`]). `parse` and `chunk` run on a
/// thread of their own beside `embed` and `index`, so the stages can add up to more than the
/// run's [`IngestReport::seconds`].
///
/// ```no_run
/// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
/// let s = rag.ingest(&["docs".into()])?.stages;
/// println!("parse {:.1}s, embed {:.1}s", s.parse, s.embed);
/// # Ok::<(), rag::Error>(())
/// ```
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimes {
    pub walk: f64,
    pub parse: f64,
    pub chunk: f64,
    pub embed: f64,
    pub index: f64,
}

/// The summary of an ingest run.
///
/// ```no_run
/// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
/// let r = rag.ingest(&["docs".into()])?;
/// for (path, why) in &r.failures {
///     eprintln!("failed {}: {why}", path.display());
/// }
/// println!("{} indexed, {} unchanged; {} chunks in the index", r.indexed, r.unchanged, r.total_chunks);
/// # Ok::<(), rag::Error>(())
/// ```
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    pub indexed: usize,
    pub unchanged: usize,
    pub skipped: usize,
    pub failed: usize,
    pub removed: usize,
    /// Chunks written in this run.
    pub chunks: usize,
    /// Embedder tokens of those chunks.
    pub tokens: usize,
    /// Files that failed, with the reason.
    pub failures: Vec<(PathBuf, String)>,
    /// Documents and chunks in the index afterwards.
    pub total_documents: usize,
    pub total_chunks: usize,
    pub seconds: f64,
    pub stages: StageTimes,
}

impl IngestReport {
    fn skip(&mut self, path: PathBuf, reason: String, on_event: &mut dyn FnMut(&IngestEvent)) {
        self.skipped += 1;
        on_event(&file_event(
            path,
            FileStatus::Skipped,
            0,
            Some(reason),
            vec![],
        ));
    }

    fn fail(&mut self, path: PathBuf, reason: String, on_event: &mut dyn FnMut(&IngestEvent)) {
        self.failed += 1;
        self.failures.push((path.clone(), reason.clone()));
        on_event(&file_event(
            path,
            FileStatus::Failed,
            0,
            Some(reason),
            vec![],
        ));
    }
}

struct Counter<'a>(&'a TextEmbedder);

impl TokenCounter for Counter<'_> {
    fn count(&self, text: &str) -> usize {
        self.0.count_tokens(text)
    }
}

/// Ingest `roots` into the index at `at` with `embedder`.
pub(crate) fn ingest(
    at: &Location,
    embedder: &TextEmbedder,
    roots: &[PathBuf],
    opts: &IngestOptions,
    on_event: &mut dyn FnMut(&IngestEvent),
) -> Result<IngestReport> {
    let t0 = Instant::now();
    let mut report = IngestReport::default();
    let mut roots_abs = Vec::new();
    for r in roots {
        let abs = std::fs::canonicalize(r).map_err(|source| Error::Io {
            path: r.clone(),
            source,
        })?;
        roots_abs.push(abs);
    }
    let mut writer = at.writer(&embedder.id(), embedder.dim(), opts.reindex)?;
    let before = writer.documents();

    let tw = Instant::now();
    let entries = rag_ingest::walk(&roots_abs, &opts.walk);
    report.stages.walk = tw.elapsed().as_secs_f64();
    let files = entries
        .iter()
        .filter(|e| matches!(e, WalkEntry::File { .. }))
        .count();
    on_event(&IngestEvent::Started { files });

    let counter = Counter(embedder);
    // Files are read, parsed and chunked on a thread of their own, a bounded number of files
    // ahead of the embedder, and handed over in walk order.
    let seen = std::thread::scope(|s| -> Result<HashSet<String>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(PARSED_AHEAD);
        let (before, counter, chunk) = (&before, &counter, &opts.chunk);
        // The main thread's stack size: the loaders were written for it (a deep document's
        // tree, bounded, still recurses).
        let parser = std::thread::Builder::new()
            .name("rag-parse".into())
            .stack_size(8 << 20)
            .spawn_scoped(s, move || parse_files(entries, before, counter, chunk, tx))
            .expect("the system could not start the parsing thread");
        let mut batch = Batch {
            files: Vec::new(),
            chunks: 0,
            pending: 0,
            last_commit: Instant::now(),
        };
        // On an error `rx` is dropped on the way out, so the parser's next send fails and it
        // stops; the scope then joins it.
        for parsed in rx {
            match parsed {
                Parsed::Skipped { path, reason } => report.skip(path, reason, on_event),
                Parsed::Failed { path, reason } => report.fail(path, reason, on_event),
                Parsed::Unchanged { path } => {
                    report.unchanged += 1;
                    on_event(&file_event(path, FileStatus::Unchanged, 0, None, vec![]));
                }
                Parsed::Loaded(file) => {
                    batch.chunks += file.chunks.len();
                    batch.files.push(*file);
                    if batch.chunks >= opts.batch_chunks.max(1) {
                        batch.flush(embedder, writer.as_mut(), &mut report, opts, on_event)?;
                    }
                }
            }
        }
        batch.flush(embedder, writer.as_mut(), &mut report, opts, on_event)?;
        let parsed = parser
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        report.stages.parse += parsed.parse;
        report.stages.chunk += parsed.chunk;
        Ok(parsed.seen)
    })?;

    // Documents under an ingested root that no longer exist are removed.
    let gone: Vec<&String> = before
        .keys()
        .filter(|k| !seen.contains(*k))
        .filter(|k| roots_abs.iter().any(|r| Path::new(k).starts_with(r)))
        .filter(|k| !Path::new(k).exists())
        .collect();
    for k in gone {
        writer
            .remove_document(k)
            .map_err(|e| in_file(Path::new(k), e))?;
        report.removed += 1;
        on_event(&file_event(
            PathBuf::from(k),
            FileStatus::Removed,
            0,
            None,
            vec![],
        ));
    }
    commit(writer.as_mut(), &mut report, on_event)?;
    if report.indexed + report.removed > 0 {
        let ts = Instant::now();
        writer.seal()?;
        report.stages.index += ts.elapsed().as_secs_f64();
    }
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// How many files the parsing thread may have read and chunked ahead of the embedder.
const PARSED_AHEAD: usize = 16;

/// One walked file as the parsing thread hands it over.
enum Parsed {
    Skipped {
        path: PathBuf,
        reason: String,
    },
    Failed {
        path: PathBuf,
        reason: String,
    },
    /// Its content hash is the one already indexed.
    Unchanged {
        path: PathBuf,
    },
    /// Boxed: the channel's slots are sized for the largest variant.
    Loaded(Box<Loaded>),
}

/// What the parsing thread leaves behind: every walked file's key, and its stage times.
struct ParseDone {
    seen: HashSet<String>,
    parse: f64,
    chunk: f64,
}

/// Reads, hashes, loads and chunks each walked file in order, sending each to `tx`; stops early
/// when the receiving side is gone (the ingest failed).
fn parse_files(
    entries: Vec<WalkEntry>,
    before: &HashMap<String, String>,
    counter: &Counter<'_>,
    chunk: &ChunkOptions,
    tx: SyncSender<Parsed>,
) -> ParseDone {
    let mut done = ParseDone {
        seen: HashSet::new(),
        parse: 0.0,
        chunk: 0.0,
    };
    for entry in entries {
        let parsed = match entry {
            WalkEntry::File { path, kind, .. } => {
                parse_file(path, kind, before, counter, chunk, &mut done)
            }
            WalkEntry::Skipped { path, reason } => Parsed::Skipped { path, reason },
            WalkEntry::Failed { path, reason } => Parsed::Failed { path, reason },
        };
        if tx.send(parsed).is_err() {
            break;
        }
    }
    done
}

fn parse_file(
    path: PathBuf,
    kind: DocKind,
    before: &HashMap<String, String>,
    counter: &Counter<'_>,
    chunk: &ChunkOptions,
    done: &mut ParseDone,
) -> Parsed {
    let key = path.to_string_lossy().into_owned();
    done.seen.insert(key.clone());
    let tp = Instant::now();
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            done.parse += tp.elapsed().as_secs_f64();
            let reason = format!("cannot read: {e}");
            return Parsed::Failed { path, reason };
        }
    };
    let hash = rag_ingest::content_hash(kind, &bytes);
    if before.get(&key) == Some(&hash) {
        return Parsed::Unchanged { path };
    }
    let doc = rag_ingest::load_bytes(&path, kind, &bytes);
    done.parse += tp.elapsed().as_secs_f64();
    let doc = match doc {
        Ok(d) => d,
        // Nothing to index is not a failure.
        Err(e @ rag_ingest::LoadError::Empty { .. }) => {
            return Parsed::Skipped {
                path,
                reason: e.to_string(),
            }
        }
        Err(e) => {
            return Parsed::Failed {
                path,
                reason: e.to_string(),
            }
        }
    };
    let tc = Instant::now();
    let chunks = rag_ingest::chunk(&doc, counter, chunk);
    done.chunk += tc.elapsed().as_secs_f64();
    Parsed::Loaded(Box::new(Loaded {
        modified: modified_time(&path),
        path,
        key,
        hash,
        doc,
        chunks,
    }))
}

/// A file loaded and chunked, waiting for its batch to be embedded.
struct Loaded {
    path: PathBuf,
    /// The file's modification time (Unix seconds), if the file system says.
    modified: Option<i64>,
    key: String,
    hash: String,
    doc: rag_ingest::Document,
    chunks: Vec<rag_ingest::Chunk>,
}

/// Files whose chunks are embedded together, and the commit cadence they feed.
struct Batch {
    files: Vec<Loaded>,
    chunks: usize,
    /// Files written since the last commit.
    pending: usize,
    last_commit: Instant,
}

impl Batch {
    /// Embeds the batch's chunks in one call, then writes each file in order, committing as
    /// often as the options say.
    fn flush(
        &mut self,
        embedder: &TextEmbedder,
        writer: &mut dyn StoreWriter,
        report: &mut IngestReport,
        opts: &IngestOptions,
        on_event: &mut dyn FnMut(&IngestEvent),
    ) -> Result<()> {
        if self.files.is_empty() {
            return Ok(());
        }
        let te = Instant::now();
        let texts: Vec<Cow<str>> = self
            .files
            .iter()
            .flat_map(|f| {
                f.chunks
                    .iter()
                    .map(|c| with_identity(f.doc.title.as_deref(), &c.heading_path, &c.text))
            })
            .collect();
        let texts: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
        let mut vectors = embedder.embed(&texts)?.into_iter();
        report.stages.embed += te.elapsed().as_secs_f64();
        self.chunks = 0;
        for file in std::mem::take(&mut self.files) {
            let ti = Instant::now();
            let n = file.chunks.len();
            report.tokens += file.chunks.iter().map(|c| c.tokens).sum::<usize>();
            let title = file.doc.title;
            let new: Vec<NewChunk> = file
                .chunks
                .into_iter()
                .zip(vectors.by_ref())
                .map(|(c, vector)| NewChunk {
                    text: c.text,
                    title: title.clone(),
                    heading: (!c.heading_path.is_empty()).then(|| c.heading_path.join(" > ")),
                    pages: c.pages,
                    byte_range: c.byte_range,
                    modified: file.modified,
                    vector,
                })
                .collect();
            writer
                .replace_document(&file.key, &file.hash, new)
                .map_err(|e| in_file(&file.path, e))?;
            report.stages.index += ti.elapsed().as_secs_f64();
            report.indexed += 1;
            report.chunks += n;
            self.pending += 1;
            let written = file.path.clone();
            on_event(&file_event(
                file.path,
                FileStatus::Indexed,
                n,
                None,
                file.doc.warnings,
            ));
            if self.pending >= opts.commit_every_files
                || self.last_commit.elapsed() >= opts.commit_every
            {
                commit(writer, report, on_event).map_err(|e| match e {
                    Error::Index(e) => in_file(&written, e),
                    e => e,
                })?;
                self.pending = 0;
                self.last_commit = Instant::now();
            }
        }
        Ok(())
    }
}

/// What a chunk is embedded as: its text, preceded by its document's title and its heading path
/// where the text does not already start with them, so a chunk from the middle of a document
/// still says what it is about.
fn with_identity<'t>(title: Option<&str>, headings: &[String], text: &'t str) -> Cow<'t, str> {
    let start = text.trim_start();
    let mut prefix = String::new();
    if let Some(t) = title
        .map(str::trim)
        .filter(|t| !t.is_empty() && !start.starts_with(t))
    {
        prefix.push_str(t);
        prefix.push('\n');
    }
    if headings
        .last()
        .is_some_and(|h| !start.starts_with(h.as_str()))
    {
        let path = headings.join(" > ");
        if title.is_none_or(|t| t.trim() != path) {
            prefix.push_str(&path);
            prefix.push('\n');
        }
    }
    if prefix.is_empty() {
        Cow::Borrowed(text)
    } else {
        prefix.push('\n');
        prefix.push_str(text);
        Cow::Owned(prefix)
    }
}

/// A store error while writing `path`: the message names the file (a remote store can fail on
/// any one of them: the server went away, a timeout, a refused write).
/// When `path` was last modified, in Unix seconds (`None` where the file system does not say).
fn modified_time(path: &Path) -> Option<i64> {
    let t = std::fs::metadata(path).ok()?.modified().ok()?;
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).ok(),
        Err(e) => i64::try_from(e.duration().as_secs()).ok().map(|s| -s),
    }
}

fn in_file(path: &Path, e: rag_index::IndexError) -> Error {
    match e {
        rag_index::IndexError::Remote {
            store,
            doing,
            detail,
        } => Error::Index(rag_index::IndexError::Remote {
            store,
            doing: if doing.contains(&*path.to_string_lossy()) {
                format!("{doing} (run the ingest again to finish it)")
            } else {
                format!(
                    "{doing} for {} (run the ingest again to finish it)",
                    path.display()
                )
            },
            detail,
        }),
        e => Error::Index(e),
    }
}

fn commit(
    writer: &mut dyn StoreWriter,
    report: &mut IngestReport,
    on_event: &mut dyn FnMut(&IngestEvent),
) -> Result<()> {
    let ti = Instant::now();
    writer.commit()?;
    report.stages.index += ti.elapsed().as_secs_f64();
    let m = writer.manifest();
    report.total_documents = m.documents;
    report.total_chunks = m.chunks;
    on_event(&IngestEvent::Committed {
        documents: m.documents,
        chunks: m.chunks,
    });
    Ok(())
}

fn file_event(
    path: PathBuf,
    status: FileStatus,
    chunks: usize,
    reason: Option<String>,
    warnings: Vec<String>,
) -> IngestEvent {
    IngestEvent::File {
        path,
        status,
        chunks,
        reason,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::with_identity;

    #[test]
    fn chunks_are_embedded_with_their_document_identity() {
        let h = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // The first chunk starts with the title: as it is.
        assert_eq!(
            with_identity(Some("Tides"), &[], "Tides\n\nSpring tides."),
            "Tides\n\nSpring tides."
        );
        // A later chunk gets the title and the heading path in front.
        assert_eq!(
            with_identity(Some("Tides"), &h(&["Ebb", "Neap"]), "Water leaves."),
            "Tides\nEbb > Neap\n\nWater leaves."
        );
        // A chunk starting with its heading keeps only the title in front; a heading path equal
        // to the title is not repeated.
        assert_eq!(
            with_identity(Some("Tides"), &h(&["Ebb"]), "Ebb\n\nWater leaves."),
            "Tides\n\nEbb\n\nWater leaves."
        );
        assert_eq!(
            with_identity(Some("Tides"), &h(&["Tides"]), "Water."),
            "Tides\n\nWater."
        );
        assert_eq!(with_identity(None, &[], "Plain."), "Plain.");
    }
}
