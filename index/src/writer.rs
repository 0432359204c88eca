//! The write side: one writer per index directory, guarded by a lock file.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tantivy::directory::error::LockError;
use tantivy::schema::{TantivyDocument, Term};
use tantivy::TantivyError;

use crate::catalog::{Catalog, DocEntry};
use crate::dense::DenseIndex;
use crate::error::{corrupt, IndexError, IoResultExt};
use crate::manifest::{
    now_rfc3339, sync_dir, write_atomic, Manifest, ANALYZER_EN_STEM, ANALYZER_SIMPLE, MANIFEST_FILE,
};
use crate::record::NewChunk;
use crate::schema::{analyzer, build_schema, register_analyzers, Fields};
use crate::store::{
    manual_reader, open_tantivy, read_manifest_file, tantivy_exists, LOCK_FILE, TANTIVY_DIR,
};
use crate::vectors::{normalised, VectorAppender, VECTORS_FILE};

#[cfg(test)]
use crate::testing::{crash_point, CrashPoint};

/// Options of [`IndexWriter::open_with`]. Defaults are those of [`IndexWriter::open`].
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// English stemming of the BM25 text ("running" finds "runs"). Default `true`: the
    /// documents rag targets are mostly English prose. Only used when a store is created;
    /// an existing store keeps its analyzer (see [`Manifest::analyzer`]).
    pub stemming: bool,
    /// tantivy's indexing memory budget in bytes. Default 64 MiB: enough that a typical
    /// ingest flushes few segments, small next to the embedding model.
    pub memory_budget: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            stemming: true,
            memory_budget: 64 << 20,
        }
    }
}

/// Adds, replaces and removes documents; [`IndexWriter::commit`] makes the changes durable and
/// visible. At most one writer per directory (across processes); readers run alongside.
///
/// Dropping a writer without committing discards the staged changes.
pub struct IndexWriter {
    dir: PathBuf,
    fields: Fields,
    /// `None` only while dropping (see [`Drop`]).
    writer: Option<tantivy::IndexWriter<TantivyDocument>>,
    vectors: VectorAppender,
    manifest: Manifest,
    /// path -> hash and chunk count, as of the last commit.
    committed: HashMap<String, DocEntry>,
    /// Staged changes: `Some` = replaced, `None` = removed.
    pending: HashMap<String, Option<DocEntry>>,
    dirty: bool,
    poisoned: Option<String>,
    /// Reader of our own commits, for the graph's live set.
    reader: tantivy::IndexReader,
    /// The HNSW graph, loaded or built at the first commit of this writer.
    graph: Option<DenseIndex>,
    /// When the graph was last dumped, and whether it changed since.
    last_dump: Option<Instant>,
    graph_dirty: bool,
    // Declared last so it is released after tantivy's writer has shut down.
    _lock: File,
}

impl IndexWriter {
    /// Open or create. Refuses an index made with another embedder id or dim (EmbedderMismatch).
    /// `reindex: true` wipes the directory contents first (keeping the dir) and starts fresh.
    pub fn open(
        dir: &Path,
        embedder_id: &str,
        dim: usize,
        reindex: bool,
    ) -> Result<Self, IndexError> {
        Self::open_with(dir, embedder_id, dim, reindex, &WriterOptions::default())
    }

    /// [`IndexWriter::open`] with options.
    pub fn open_with(
        dir: &Path,
        embedder_id: &str,
        dim: usize,
        reindex: bool,
        options: &WriterOptions,
    ) -> Result<Self, IndexError> {
        if dim == 0 {
            return Err(IndexError::InvalidVector {
                what: format!("dimension of embedder {embedder_id} (0)"),
            });
        }
        fs::create_dir_all(dir).at(dir)?;
        let lock = acquire_lock(dir)?;
        if reindex {
            wipe(dir)?;
        }

        let existing = if tantivy_exists(dir) {
            let index = open_tantivy(dir)?;
            // No payload: created but killed before its first commit; nothing to keep.
            let payload = index.load_metas()?.payload;
            payload.map(|p| (index, p))
        } else {
            if read_manifest_file(dir)?.is_some() {
                return Err(corrupt(
                    dir,
                    format!("{MANIFEST_FILE} exists but {TANTIVY_DIR}/meta.json is missing"),
                ));
            }
            None
        };

        let (index, manifest, mut writer) = match existing {
            Some((index, payload)) => {
                let manifest = Manifest::from_json(dir, &payload)?;
                manifest.check_embedder(dir, embedder_id, dim)?;
                if analyzer(&manifest.analyzer).is_none() {
                    return Err(corrupt(
                        dir,
                        format!("unknown text analyzer `{}`", manifest.analyzer),
                    ));
                }
                // Killed between the tantivy commit and the manifest rename: repair the copy.
                if read_manifest_file(dir)?.as_deref() != Some(payload.as_str()) {
                    write_atomic(dir, MANIFEST_FILE, payload.as_bytes())?;
                }
                let writer = tantivy_writer(dir, &index, options)?;
                (index, manifest, writer)
            }
            None => create_store(dir, embedder_id, dim, options)?,
        };

        let fields = Fields::from_schema(dir, &index.schema())?;
        let reader = manual_reader(&index)?;
        let catalog = Catalog::scan(dir, &reader.searcher())?;
        if let Some(max) = catalog.addr.keys().max() {
            if *max >= manifest.vectors_rows {
                return Err(corrupt(
                    dir,
                    format!(
                        "chunk id {max} has no vector (only {} rows committed)",
                        manifest.vectors_rows
                    ),
                ));
            }
        }
        let vectors = match VectorAppender::open(dir, dim, manifest.vectors_rows) {
            Ok(v) => v,
            Err(e) => {
                let _ = writer.rollback();
                return Err(e);
            }
        };
        Ok(IndexWriter {
            dir: dir.to_path_buf(),
            fields,
            writer: Some(writer),
            vectors,
            manifest,
            committed: catalog.docs,
            pending: HashMap::new(),
            dirty: false,
            poisoned: None,
            reader,
            graph: None,
            last_dump: None,
            graph_dirty: false,
            _lock: lock,
        })
    }

    /// The manifest of the last commit.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// path -> content_hash of every committed document.
    pub fn documents(&self) -> HashMap<String, String> {
        self.committed
            .iter()
            .map(|(p, e)| (p.clone(), e.hash.clone()))
            .collect()
    }

    /// Replace all chunks of `path` with these (deleting its old chunks). Vectors must have the
    /// index dim; they are L2-normalised here in any case. A document with no chunks is still
    /// recorded (so that it shows in [`IndexWriter::documents`]).
    pub fn replace_document(
        &mut self,
        path: &str,
        content_hash: &str,
        chunks: Vec<NewChunk>,
    ) -> Result<(), IndexError> {
        self.check_poisoned()?;
        let dim = self.manifest.dim;
        let vectors = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| normalised(&c.vector, dim, &format!("of chunk {i} of {path}")))
            .collect::<Result<Vec<_>, _>>()?;
        let staged = self.stage_replace(path, content_hash, &chunks, &vectors);
        if let Err(e) = &staged {
            self.poisoned = Some(e.to_string());
        }
        staged
    }

    fn stage_replace(
        &mut self,
        path: &str,
        content_hash: &str,
        chunks: &[NewChunk],
        vectors: &[Vec<f32>],
    ) -> Result<(), IndexError> {
        let writer = self.writer.as_mut().expect("tantivy writer until drop");
        writer.delete_term(Term::from_field_text(self.fields.path, path));
        if chunks.is_empty() {
            writer.add_document(self.fields.marker_doc(path, content_hash))?;
        }
        for (chunk, v) in chunks.iter().zip(vectors) {
            let id = self.vectors.push(v)?;
            writer.add_document(self.fields.chunk_doc(id, path, content_hash, chunk))?;
        }
        self.pending.insert(
            path.to_string(),
            Some(DocEntry {
                hash: content_hash.to_string(),
                chunks: chunks.len(),
                modified: chunks.iter().find_map(|c| c.modified),
            }),
        );
        self.dirty = true;
        Ok(())
    }

    /// Remove `path` and all its chunks.
    pub fn remove_document(&mut self, path: &str) -> Result<(), IndexError> {
        self.check_poisoned()?;
        let known = match self.pending.get(path) {
            Some(staged) => staged.is_some(),
            None => self.committed.contains_key(path),
        };
        if known {
            self.writer
                .as_mut()
                .expect("tantivy writer until drop")
                .delete_term(Term::from_field_text(self.fields.path, path));
            self.pending.insert(path.to_string(), None);
            self.dirty = true;
        }
        Ok(())
    }

    /// Durable point: after this returns, a crash keeps everything staged so far.
    /// A no-op when nothing was staged.
    ///
    /// If it fails, the writer refuses further work ([`IndexError::WriterPoisoned`]): drop it;
    /// the index keeps its previous commit (or this one, if only the manifest copy failed).
    pub fn commit(&mut self) -> Result<(), IndexError> {
        self.check_poisoned()?;
        if !self.dirty {
            return Ok(());
        }
        let done = self.commit_inner();
        if let Err(e) = &done {
            self.poisoned = Some(e.to_string());
        }
        done
    }

    fn commit_inner(&mut self) -> Result<(), IndexError> {
        // (1) Vector rows first, so that every chunk the commit makes reachable has its row.
        self.vectors.sync()?;
        #[cfg(test)]
        crash_point(CrashPoint::VectorsSynced)?;

        let (documents, chunks) = self.counts_after_pending();
        let next = Manifest {
            generation: self.manifest.generation + 1,
            documents,
            chunks,
            vectors_rows: self.vectors.rows(),
            updated_at: now_rfc3339(),
            ..self.manifest.clone()
        };
        let payload = next.to_json();

        // (2) The tantivy commit, carrying the new manifest: the point of truth.
        let mut prepared = self
            .writer
            .as_mut()
            .expect("tantivy writer until drop")
            .prepare_commit()?;
        prepared.set_payload(&payload);
        #[cfg(test)]
        crash_point(CrashPoint::Prepared)?;
        prepared.commit()?;
        #[cfg(test)]
        crash_point(CrashPoint::TantivyCommitted)?;

        for (path, staged) in self.pending.drain() {
            match staged {
                Some(entry) => self.committed.insert(path, entry),
                None => self.committed.remove(&path),
            };
        }
        self.manifest = next;
        self.dirty = false;

        // (3) The readable copy.
        write_atomic(&self.dir, MANIFEST_FILE, payload.as_bytes())?;

        // (4) Derived data: bring the HNSW graph up to date and (at most every
        // GRAPH_DUMP_INTERVAL) dump it for readers. A failure here loses nothing: readers
        // rebuild what the dump lacks.
        if self.update_graph().is_err() {
            self.graph = None;
        }
        Ok(())
    }

    fn update_graph(&mut self) -> Result<(), IndexError> {
        self.reader.reload()?;
        let catalog = Catalog::scan(&self.dir, &self.reader.searcher())?;
        match &mut self.graph {
            Some(g) => g.refresh(&self.dir, &self.manifest, &catalog)?,
            None => self.graph = Some(DenseIndex::open(&self.dir, &self.manifest, &catalog)?),
        }
        self.graph_dirty = true;
        if self
            .last_dump
            .is_none_or(|t| t.elapsed() >= GRAPH_DUMP_INTERVAL)
        {
            self.dump_graph()?;
        }
        Ok(())
    }

    fn dump_graph(&mut self) -> Result<(), IndexError> {
        if let Some(g) = &self.graph {
            if self.graph_dirty {
                g.dump(&self.dir, self.manifest.generation)?;
                self.graph_dirty = false;
                self.last_dump = Some(Instant::now());
            }
        }
        Ok(())
    }

    fn counts_after_pending(&self) -> (usize, usize) {
        let mut documents = self.committed.len();
        let mut chunks: usize = self.committed.values().map(|e| e.chunks).sum();
        for (path, staged) in &self.pending {
            if let Some(old) = self.committed.get(path) {
                documents -= 1;
                chunks -= old.chunks;
            }
            if let Some(new) = staged {
                documents += 1;
                chunks += new.chunks;
            }
        }
        (documents, chunks)
    }

    fn check_poisoned(&self) -> Result<(), IndexError> {
        match &self.poisoned {
            Some(reason) => Err(IndexError::WriterPoisoned {
                dir: self.dir.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// Least time between two graph dumps during an ingest that commits often; the graph is dumped
/// again when the writer is dropped. A reader catches up on rows the dump lacks.
const GRAPH_DUMP_INTERVAL: Duration = Duration::from_secs(10);

impl Drop for IndexWriter {
    fn drop(&mut self) {
        if self.poisoned.is_none() {
            let _ = self.dump_graph();
        }
        // Wait for tantivy's background merges before the lock goes. Dropping its writer only
        // flags them to stop: a merge whose end was already scheduled still publishes a
        // meta.json and deletes the merged segments' files, so the next writer, opened
        // meanwhile from the older meta.json, would commit a list of segments whose files are
        // gone (seen under 16 clients uploading, once embedding got fast enough).
        if let Some(w) = self.writer.take() {
            let _ = w.wait_merging_threads();
        }
    }
}

/// How long a writer keeps trying a lock that is held before it reports
/// [`IndexError::Locked`]: long enough to outlast a lock that only looks held because a child
/// process forked by this program (or another thread's `Command`) still shares the lock's
/// file until it execs, short enough that a second ingest is turned away at once.
const LOCK_PATIENCE: Duration = Duration::from_millis(500);

/// `attempt()` until it returns anything but [`IndexError::Locked`] or [`LOCK_PATIENCE`] has
/// passed.
fn patiently<T>(mut attempt: impl FnMut() -> Result<T, IndexError>) -> Result<T, IndexError> {
    let start = Instant::now();
    loop {
        match attempt() {
            Err(IndexError::Locked { .. }) if start.elapsed() < LOCK_PATIENCE => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

fn acquire_lock(dir: &Path) -> Result<File, IndexError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .at(&path)?;
    patiently(|| match fs4::FileExt::try_lock(&file) {
        Ok(()) => Ok(()),
        Err(fs4::TryLockError::WouldBlock) => Err(IndexError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(fs4::TryLockError::Error(e)) => Err(e).at(&path),
    })?;
    Ok(file)
}

/// Empty `dir` except for the lock file. The manifest goes first and tantivy's `meta.json`
/// second, so that a crash half-way leaves either the old index or no index, never a mix.
fn wipe(dir: &Path) -> Result<(), IndexError> {
    remove_if_exists(&dir.join(MANIFEST_FILE))?;
    let tantivy = dir.join(TANTIVY_DIR);
    if tantivy.is_dir() {
        remove_if_exists(&tantivy.join("meta.json"))?;
        sync_dir(&tantivy)?;
    }
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        if entry.file_name() == LOCK_FILE {
            continue;
        }
        let path = entry.path();
        if entry.file_type().at(&path)?.is_dir() {
            fs::remove_dir_all(&path).at(&path)?;
        } else {
            fs::remove_file(&path).at(&path)?;
        }
    }
    sync_dir(dir)
}

fn remove_if_exists(path: &Path) -> Result<(), IndexError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(path),
        _ => Ok(()),
    }
}

fn tantivy_writer(
    dir: &Path,
    index: &tantivy::Index,
    options: &WriterOptions,
) -> Result<tantivy::IndexWriter<TantivyDocument>, IndexError> {
    // One indexing thread: the machine's other cores are busy embedding.
    patiently(
        || match index.writer_with_num_threads(1, options.memory_budget.max(15 << 20)) {
            Ok(w) => Ok(w),
            Err(TantivyError::LockFailure(LockError::LockBusy, _)) => Err(IndexError::Locked {
                dir: dir.to_path_buf(),
            }),
            Err(e) => Err(e.into()),
        },
    )
}

/// Create a new, empty store: tantivy index, empty vector file, and a first commit whose
/// payload is the generation-0 manifest.
fn create_store(
    dir: &Path,
    embedder_id: &str,
    dim: usize,
    options: &WriterOptions,
) -> Result<
    (
        tantivy::Index,
        Manifest,
        tantivy::IndexWriter<TantivyDocument>,
    ),
    IndexError,
> {
    let tdir = dir.join(TANTIVY_DIR);
    if tdir.exists() {
        fs::remove_dir_all(&tdir).at(&tdir)?;
    }
    let vectors = dir.join(VECTORS_FILE);
    remove_if_exists(&vectors)?;
    fs::create_dir_all(&tdir).at(&tdir)?;
    let analyzer_name = if options.stemming {
        ANALYZER_EN_STEM
    } else {
        ANALYZER_SIMPLE
    };
    let index = tantivy::Index::create_in_dir(&tdir, build_schema(analyzer_name))?;
    register_analyzers(&index);
    File::create(&vectors)
        .at(&vectors)?
        .sync_all()
        .at(&vectors)?;
    sync_dir(dir)?;
    let manifest = Manifest::new_store(embedder_id, dim, analyzer_name);
    let payload = manifest.to_json();
    let mut writer = tantivy_writer(dir, &index, options)?;
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(&payload);
    prepared.commit()?;
    write_atomic(dir, MANIFEST_FILE, payload.as_bytes())?;
    Ok((index, manifest, writer))
}

impl crate::backend::StoreWriter for IndexWriter {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn manifest(&self) -> &Manifest {
        IndexWriter::manifest(self)
    }

    fn documents(&self) -> HashMap<String, String> {
        IndexWriter::documents(self)
    }

    fn replace_document(
        &mut self,
        path: &str,
        content_hash: &str,
        chunks: Vec<NewChunk>,
    ) -> Result<(), IndexError> {
        IndexWriter::replace_document(self, path, content_hash, chunks)
    }

    fn remove_document(&mut self, path: &str) -> Result<(), IndexError> {
        IndexWriter::remove_document(self, path)
    }

    fn commit(&mut self) -> Result<(), IndexError> {
        IndexWriter::commit(self)
    }
}
