//! [`Rag`]: one index directory with the models that serve it. Open it, ingest files, retrieve,
//! search, ask. Models and the index are loaded on first use and kept: nothing on the query path
//! reloads them.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use rag_index::{ChunkRecord, Hit, Store};
use rag_model::{Model, PromptFormat, TextEmbedder, WeightFormat};
use serde::Serialize;

use crate::answerability::Fitted;
use crate::ask::{self, Answer, AnswerMode, AskOptions};
use crate::config::Config;
use crate::embedder::{self, EmbedderUse};
use crate::error::{Error, Result};
use crate::ingest::{IngestEvent, IngestOptions, IngestReport};
use crate::prompt::Passage;
use crate::quote;
use crate::retrieve::{self, Mode, RetrieveOptions};
use crate::store::Location;

/// What [`Rag::retrieve`] found: the ranked, distinct hits, and where the time went.
///
/// ```no_run
/// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
/// let found = rag.retrieve("bridge construction", &rag::RetrieveOptions::default())?;
/// println!("{} hits in {:.1} ms", found.hits.len(), found.search_secs * 1e3);
/// # Ok::<(), rag::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Retrieval {
    /// Best first, at most `k`.
    pub hits: Vec<Hit>,
    /// Opening the index and loading the embedder (first call only).
    pub load_secs: f64,
    /// Embedding the query (0 for BM25, or when the same query was embedded just before).
    pub embed_secs: f64,
    /// The searches, fusion and duplicate collapsing.
    pub search_secs: f64,
}

/// What [`Rag::search`] shows: exactly the passages [`Rag::ask`] would put in the prompt, with
/// their fused and per-retriever ranks. Serializes to the JSON of `rag search --json`.
///
/// ```no_run
/// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
/// let found = rag.search("Who designed the bridge?")?;
/// if found.abstains {
///     println!("ask would answer \"not in the documents\" (evidence {:.2})", found.evidence);
/// }
/// for p in &found.passages {
///     println!("[{}] {} bm25 #{:?}, dense #{:?}", p.n, p.source(), p.bm25_rank, p.dense_rank);
/// }
/// # Ok::<(), rag::Error>(())
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct Search {
    pub query: String,
    pub mode: Mode,
    /// The passages, numbered and trimmed as in the prompt.
    pub passages: Vec<Passage>,
    /// How well the best passage covers the question's terms.
    pub evidence: f32,
    /// The threshold below which `ask` answers "not in the documents" without the model.
    pub min_evidence: f32,
    /// Whether `ask` would turn this question away at the evidence gate (the passages would
    /// then not be shown to the model).
    pub abstains: bool,
    pub load_secs: f64,
    pub embed_secs: f64,
    pub search_secs: f64,
}

/// A document in the index.
///
/// ```no_run
/// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
/// for d in rag.documents()? {
///     println!("{} {}", &d.content_hash[..12], d.path);
/// }
/// # Ok::<(), rag::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Document {
    /// The path it was ingested from (absolute).
    pub path: String,
    /// sha256 of its bytes when ingested.
    pub content_hash: String,
}

/// What an index holds.
///
/// ```no_run
/// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
/// let info = rag.info()?;
/// println!("{} documents, {} chunks, embedder {}", info.documents, info.chunks, info.embedder);
/// # Ok::<(), rag::Error>(())
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct IndexInfo {
    pub dir: PathBuf,
    /// The embedder that made its vectors.
    pub embedder: String,
    pub dim: usize,
    pub documents: usize,
    pub chunks: usize,
}

/// An index directory and the models that serve it.
///
/// ```no_run
/// use rag::{Config, Rag};
/// let rag = Rag::open(".rag", Config::new("/home/me/.cache/rag"))?;
/// rag.ingest(&["docs".into()])?;
/// let answer = rag.ask("When was the bridge built?")?;
/// println!("{}", answer.answer);
/// for c in &answer.citations {
///     println!("[{}] {}", c.n, c.path);
/// }
/// # Ok::<(), rag::Error>(())
/// ```
pub struct Rag {
    /// Where the index is; `dir` is its path (or, for a remote store, its address as a path).
    location: Location,
    dir: PathBuf,
    config: Config,
    options: AskOptions,
    /// Replaced when an ingest rebuilds the index with another embedder.
    embedder: RwLock<Option<Arc<TextEmbedder>>>,
    chat: OnceLock<Arc<Model>>,
    format: OnceLock<PromptFormat>,
    fitted: OnceLock<Option<Fitted>>,
    /// The last commit opened (a snapshot: readers keep theirs while [`Rag::refresh`] swaps
    /// in a newer one).
    index: RwLock<Option<Arc<dyn Store>>>,
    /// The last query embedded and its vector: a search followed by an ask of the same
    /// question, or one query through several retrievers, embeds it once.
    last_query: Mutex<Option<(String, Vec<f32>)>>,
    /// Held while a model loads, so that concurrent first calls load it once.
    loading: Mutex<()>,
}

impl Rag {
    /// Use the index at `dir` (it need not exist yet: [`Rag::ingest`] creates it) with the
    /// models named by `config`, or the remote store [`Config::store`] names if it names one.
    /// Sizes the compute thread pool when [`Config::threads`] says so (otherwise it is left as
    /// the host has it: all cores by default); loads nothing yet.
    pub fn open(dir: impl AsRef<Path>, config: Config) -> Result<Self> {
        let location = match &config.store {
            Some(s) => Location::parse(s, config.store_token.clone())?,
            None => Location::Dir(dir.as_ref().to_path_buf()),
        };
        Self::open_at(location, config)
    }

    /// Use the index at `location`: a directory, or a Milvus / Zilliz Cloud collection.
    ///
    /// ```no_run
    /// # #[cfg(feature = "milvus")] {
    /// use rag::{Config, Location, Rag};
    /// let at = Location::parse("milvus://127.0.0.1:19530/notes", None)?;
    /// let rag = Rag::open_at(at, Config::new("/home/me/.cache/rag"))?;
    /// rag.ingest(&["docs".into()])?;
    /// # }
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn open_at(location: Location, config: Config) -> Result<Self> {
        if let Some(n) = config.threads {
            rag_model::set_threads(n)?;
        }
        Ok(Self {
            dir: location.as_path(),
            location,
            config,
            options: AskOptions::default(),
            embedder: RwLock::new(None),
            chat: OnceLock::new(),
            format: OnceLock::new(),
            fitted: OnceLock::new(),
            index: RwLock::new(None),
            last_query: Mutex::new(None),
            loading: Mutex::new(()),
        })
    }

    /// Replace the settings of [`Rag::ask`] and [`Rag::search`].
    ///
    /// ```no_run
    /// # use rag::{AskOptions, Config, Rag};
    /// let mut options = AskOptions::default();
    /// options.retrieve.k = 6;
    /// let rag = Rag::open(".rag", Config::new("/home/me/.cache/rag"))?.with_options(options);
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn with_options(mut self, options: AskOptions) -> Self {
        self.options = options;
        self
    }

    /// The settings of [`Rag::ask`] and [`Rag::search`].
    ///
    /// ```no_run
    /// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
    /// assert_eq!(rag.options().retrieve.k, 4);
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn options(&self) -> &AskOptions {
        &self.options
    }

    /// The index directory.
    ///
    /// ```no_run
    /// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
    /// assert_eq!(rag.dir(), std::path::Path::new(".rag"));
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the index is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The configuration.
    ///
    /// ```no_run
    /// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
    /// println!("answering with {}", rag.config().model_path()?.display());
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Index files and folders with default settings (see [`Rag::ingest_with`]).
    ///
    /// ```no_run
    /// # use rag::{Config, Rag};
    /// let rag = Rag::open(".rag", Config::new("/home/me/.cache/rag"))?;
    /// let report = rag.ingest(&["docs".into()])?;
    /// println!("{} indexed, {} unchanged", report.indexed, report.unchanged);
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn ingest(&self, paths: &[PathBuf]) -> Result<IngestReport> {
        self.ingest_with(paths, &IngestOptions::default(), &mut |_| {})
    }

    /// Index files and folders, reporting progress to `on_event`: only new and changed files
    /// are embedded, files gone from an ingested folder are removed, and a file that fails is
    /// reported and the rest indexed. Later searches see the new commit.
    ///
    /// ```no_run
    /// # use rag::{Config, IngestEvent, IngestOptions, Rag};
    /// let rag = Rag::open(".rag", Config::new("/home/me/.cache/rag"))?;
    /// rag.ingest_with(&["docs".into()], &IngestOptions::default(), &mut |e| {
    ///     if let IngestEvent::File { path, status, .. } = e {
    ///         eprintln!("{status:?} {}", path.display());
    ///     }
    /// })?;
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn ingest_with(
        &self,
        paths: &[PathBuf],
        opts: &IngestOptions,
        on_event: &mut dyn FnMut(&IngestEvent),
    ) -> Result<IngestReport> {
        // The embedder asked for, when it is another than the one loaded (to rebuild the index
        // with it, say), serves this ingest alone.
        // So does a rebuild of an index whose vectors were made otherwise than a new index's
        // would be (candle's f32 weights before the engine): it is rebuilt as a new one.
        let wanted = self.config.embedder;
        let usage = if opts.reindex {
            EmbedderUse::Rebuild
        } else {
            EmbedderUse::Ingest
        };
        let loaded = self.loaded_embedder();
        let other = match &loaded {
            Some(e)
                if wanted.is_some_and(|k| k != e.kind())
                    || (opts.reindex && !embedder::as_for_new(&self.config, e)) =>
            {
                Some(Arc::new(embedder::load(
                    &self.config,
                    self.location.embedder_id(),
                    usage,
                )?))
            }
            Some(_) => None,
            None => {
                let _loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
                if self.loaded_embedder().is_none() {
                    let e = embedder::load(&self.config, self.location.embedder_id(), usage)?;
                    *self.embedder.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(e));
                }
                None
            }
        };
        let embedder = match &other {
            Some(e) => e.clone(),
            None => self.embedder()?,
        };
        let report = crate::ingest::ingest(&self.location, &embedder, paths, opts, on_event)?;
        if let Some(e) = other {
            // Queries now go to an index of the new embedder: use it, and forget the last
            // query's vector of the old one.
            *self.embedder.write().unwrap_or_else(|p| p.into_inner()) = Some(e);
            *self
                .last_query
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        }
        self.refresh()?;
        Ok(report)
    }

    /// Take `path` (as stored: see [`Rag::documents`]) and all its chunks out of the index.
    /// `false` when the index does not hold it. Later searches see the change.
    ///
    /// ```no_run
    /// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
    /// for d in rag.documents()? {
    ///     if d.path.ends_with("draft.md") {
    ///         rag.remove_document(&d.path)?;
    ///     }
    /// }
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn remove_document(&self, path: &str) -> Result<bool> {
        let index = self.index()?;
        if !index.documents().contains_key(path) {
            return Ok(false);
        }
        let m = index.manifest();
        let mut writer = self.location.writer(&m.embedder_id, m.dim, false)?;
        writer.remove_document(path)?;
        writer.commit()?;
        drop(writer);
        self.refresh()?;
        Ok(true)
    }

    /// See the index's latest commit (another process or thread may have written to it).
    /// Searches already running keep the commit they started with.
    ///
    /// ```no_run
    /// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
    /// rag.refresh()?; // after a `rag ingest` elsewhere
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn refresh(&self) -> Result<()> {
        let fresh = match self.location.open() {
            Ok(i) => Some(Arc::from(i)),
            Err(rag_index::IndexError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        *self
            .index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
        Ok(())
    }

    /// The ranked, distinct hits for `query` under `opts`: the retrieval step of
    /// [`Rag::ask`] and [`Rag::search`], with any depth and retriever (evaluations use it with
    /// deep lists and each retriever alone). An empty index gives no hits; one built by another
    /// embedder than the one configured is refused when the query needs a vector.
    ///
    /// ```no_run
    /// # use rag::{Config, Mode, Rag, RetrieveOptions};
    /// let rag = Rag::open(".rag", Config::new("/home/me/.cache/rag"))?;
    /// let opts = RetrieveOptions { k: 100, mode: Mode::Bm25, ..Default::default() };
    /// for hit in rag.retrieve("bridge construction", &opts)?.hits {
    ///     println!("{:.3} {}", hit.score, hit.chunk.path);
    /// }
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn retrieve(&self, query: &str, opts: &RetrieveOptions) -> Result<Retrieval> {
        let t0 = Instant::now();
        let index = self.index()?;
        if index.is_empty() {
            return Ok(Retrieval {
                hits: Vec::new(),
                load_secs: t0.elapsed().as_secs_f64(),
                embed_secs: 0.0,
                search_secs: 0.0,
            });
        }
        if opts.mode.needs_vector() {
            let e = self.embedder()?;
            index.check_embedder(&e.id(), e.dim())?;
        }
        let load_secs = t0.elapsed().as_secs_f64();
        let te = Instant::now();
        let vector = if opts.mode.needs_vector() {
            let text = match &opts.query_prefix {
                Some(p) => format!("{p}{query}"),
                None => query.to_string(),
            };
            Some(self.embed_query(&text)?)
        } else {
            None
        };
        let embed_secs = te.elapsed().as_secs_f64();
        let ts = Instant::now();
        let hits = retrieve::retrieve(index.as_ref(), query, vector.as_deref(), opts)?;
        Ok(Retrieval {
            hits,
            load_secs,
            embed_secs,
            search_secs: ts.elapsed().as_secs_f64(),
        })
    }

    /// The passages [`Rag::ask`] would put in the prompt for `question` under the current
    /// settings (same retrieval, duplicate collapsing and trimming to the chat model's
    /// context), and whether it would turn the question away at the evidence gate (it would
    /// for an empty index, where `ask` stops with [`Error::EmptyIndex`]). Reads only the chat
    /// model's header, not its weights.
    ///
    /// ```no_run
    /// # use rag::{Config, Rag};
    /// let rag = Rag::open(".rag", Config::new("/home/me/.cache/rag"))?;
    /// let found = rag.search("Who designed the bridge?")?;
    /// for p in &found.passages {
    ///     println!("[{}] {} {:.4}", p.n, p.source(), p.score);
    /// }
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn search(&self, question: &str) -> Result<Search> {
        self.search_with(question, &self.options)
    }

    /// [`Rag::search`] with other settings than [`Rag::options`] (a filter of one request,
    /// say).
    pub fn search_with(&self, question: &str, opts: &AskOptions) -> Result<Search> {
        let question = ask::check_question(question)?;
        let found = self.retrieve(question, &opts.retrieve)?;
        let evidence = retrieve::evidence(&*self.index()?, question, &found.hits)?;
        let tl = Instant::now();
        let format = self.prompt_format()?;
        let load_secs = found.load_secs + tl.elapsed().as_secs_f64();
        let prompt = ask::prompt(format, question, &found.hits, opts)?;
        Ok(Search {
            query: question.to_string(),
            mode: opts.retrieve.mode,
            passages: prompt.passages,
            evidence,
            min_evidence: opts.retrieve.min_evidence,
            abstains: ask::gate(&found.hits, evidence, &opts.retrieve).is_some(),
            load_secs,
            embed_secs: found.embed_secs,
            search_secs: found.search_secs,
        })
    }

    /// Answer `question` from the documents: retrieve, gate, prompt, generate, cite.
    ///
    /// ```no_run
    /// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
    /// let answer = rag.ask("When was the bridge built?")?;
    /// println!("{}", answer.answer);
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn ask(&self, question: &str) -> Result<Answer> {
        self.ask_streaming_with(question, &self.options, &mut |_| {})
    }

    /// [`Rag::ask`] with `options` in place of this `Rag`'s own settings, so that several
    /// settings (closed book, other retrieval) can be compared on one index and one loaded model.
    ///
    /// ```no_run
    /// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
    /// let closed = rag::AskOptions { closed_book: true, ..rag.options().clone() };
    /// let without = rag.ask_with("When was the bridge built?", &closed)?;
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn ask_with(&self, question: &str, options: &AskOptions) -> Result<Answer> {
        self.ask_streaming_with(question, options, &mut |_| {})
    }

    /// [`Rag::ask`], calling `on_text` with each piece of the answer as it is generated
    /// (citation markers already checked).
    ///
    /// ```no_run
    /// # use rag::{Config, Rag};
    /// let rag = Rag::open(".rag", Config::new("/home/me/.cache/rag"))?;
    /// let answer = rag.ask_streaming("Who designed the bridge?", &mut |piece| print!("{piece}"))?;
    /// println!("\n{} sources", answer.citations.len());
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn ask_streaming(&self, question: &str, on_text: ask::OnText<'_>) -> Result<Answer> {
        self.ask_streaming_with(question, &self.options, on_text)
    }

    /// [`Rag::ask_streaming`] with `options` in place of this `Rag`'s own settings (a server
    /// answers each request with its own options, and can stop it with
    /// `options.generate.cancel`). The steps, in order: retrieve, gate, prompt, generate, cite.
    ///
    /// ```no_run
    /// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
    /// let mut opts = rag.options().clone();
    /// let stop = opts.generate.cancel.clone(); // stop.cancel() from another thread ends it
    /// let answer = rag.ask_streaming_with("Who designed the bridge?", &opts, &mut |t| print!("{t}"))?;
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn ask_streaming_with(
        &self,
        question: &str,
        opts: &AskOptions,
        on_text: ask::OnText<'_>,
    ) -> Result<Answer> {
        let t0 = Instant::now();
        let question = ask::check_question(question)?;
        let mut answer = Answer::new(question);
        let mut hits = Vec::new();
        if !opts.closed_book {
            let ti = Instant::now();
            let empty = self.index()?.is_empty();
            answer.timings.load_secs += ti.elapsed().as_secs_f64();
            if empty {
                return Err(Error::EmptyIndex {
                    dir: self.dir.clone(),
                });
            }
            let found = self.retrieve(question, &opts.retrieve)?;
            let evidence = retrieve::evidence(&*self.index()?, question, &found.hits)?;
            let t = &mut answer.timings;
            t.load_secs += found.load_secs;
            (t.embed_secs, t.search_secs) = (found.embed_secs, found.search_secs);
            answer.evidence = Some(evidence);
            if let Some(reason) = ask::gate(&found.hits, evidence, &opts.retrieve) {
                // Nothing plausibly relevant: say so, without loading or asking the model.
                answer.abstain(reason);
                on_text(&answer.answer);
                answer.timings.total_secs = t0.elapsed().as_secs_f64();
                return Ok(answer);
            }
            hits = found.hits;
        }
        let tl = Instant::now();
        let model = self.chat_model()?;
        answer.timings.load_secs += tl.elapsed().as_secs_f64();
        let prompt = ask::prompt(&model.format(), question, &hits, opts)?;
        answer.passages = prompt.passages.clone();
        if opts.keep_prompt {
            answer.prompt = Some(prompt.text.clone());
        }
        if opts.answer == AnswerMode::Quote && !opts.closed_book {
            let index = self.index()?;
            let fitted = self.fitted()?;
            let quoted = quote::generate(
                model,
                index.as_ref(),
                question,
                &prompt,
                &opts.quote,
                fitted.and_then(|f| f.spans.as_ref()),
                &opts.generate.cancel,
            )?;
            if let (true, Some(q)) = (opts.keep_prompt, &quoted) {
                answer.prompt = Some(q.read.clone());
            }
            let evidence = answer.evidence.unwrap_or(0.0);
            ask::cite_quote(
                index.as_ref(),
                fitted,
                question,
                evidence,
                quoted,
                opts,
                &mut answer,
                on_text,
            )?;
        } else {
            let generated = ask::generate(model, &prompt, &opts.generate, on_text)?;
            let index = if opts.closed_book {
                None
            } else {
                Some(self.index()?)
            };
            ask::cite(index.as_deref(), generated, &mut answer, on_text);
        }
        answer.timings.total_secs = t0.elapsed().as_secs_f64();
        Ok(answer)
    }

    /// Unit vectors of `texts` by the index's embedder (the one queries use), in input order,
    /// with the embedder's token count of each text.
    ///
    /// ```no_run
    /// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
    /// let (vectors, tokens) = rag.embed(&["harbour bridge", "ferry timetable"])?;
    /// assert_eq!(vectors.len(), 2);
    /// println!("dimension {}, {} tokens", vectors[0].len(), tokens.iter().sum::<usize>());
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn embed(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
        let embedder = self.embedder()?;
        let tokens = texts.iter().map(|t| embedder.count_tokens(t)).collect();
        Ok((embedder.embed(texts)?, tokens))
    }

    /// The documents in the index, by path (see [`Document`]).
    pub fn documents(&self) -> Result<Vec<Document>> {
        let mut docs: Vec<Document> = self
            .index()?
            .documents()
            .into_iter()
            .map(|(path, content_hash)| Document { path, content_hash })
            .collect();
        docs.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(docs)
    }

    /// The stored chunk `chunk_id` (what a citation's `chunk_id` names), if it is in the index.
    ///
    /// ```no_run
    /// # let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
    /// let answer = rag.ask("Who designed the bridge?")?;
    /// for c in &answer.citations {
    ///     if let Some(chunk) = rag.passage(c.chunk_id)? {
    ///         println!("[{}] {}", c.n, chunk.text);
    ///     }
    /// }
    /// # Ok::<(), rag::Error>(())
    /// ```
    pub fn passage(&self, chunk_id: u64) -> Result<Option<ChunkRecord>> {
        Ok(self.index()?.chunk(chunk_id)?)
    }

    /// What the index holds (see [`IndexInfo`]).
    pub fn info(&self) -> Result<IndexInfo> {
        let index = self.index()?;
        let m = index.manifest();
        Ok(IndexInfo {
            dir: self.dir.clone(),
            embedder: m.embedder_id.clone(),
            dim: m.dim,
            documents: m.documents,
            chunks: m.chunks,
        })
    }

    /// The embedder of queries (loaded on first use): the index's own.
    fn embedder(&self) -> Result<Arc<TextEmbedder>> {
        if let Some(e) = self.loaded_embedder() {
            return Ok(e);
        }
        let _loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = self.loaded_embedder() {
            return Ok(e);
        }
        let e = Arc::new(embedder::load(
            &self.config,
            self.index_embedder_id(),
            EmbedderUse::Query,
        )?);
        *self.embedder.write().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
        Ok(e)
    }

    /// The embedder loaded so far, if any.
    fn loaded_embedder(&self) -> Option<Arc<TextEmbedder>> {
        self.embedder
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The embedder id of the index queries go to: that of the snapshot already open (a search
    /// opens it before it embeds the query), else read from the store (for Milvus a connection
    /// and a listing, not to be done twice). Ingest reads the store: it writes the latest commit.
    fn index_embedder_id(&self) -> Option<String> {
        let open = self
            .index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(|i| i.manifest().embedder_id.clone());
        match open {
            Some(id) => Some(id).filter(|id| !id.is_empty()),
            None => self.location.embedder_id(),
        }
    }

    /// The vector of `text`, reusing the last one when the text is the same.
    fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let mut last = self
            .last_query
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((t, v)) = last.as_ref() {
            if t == text {
                return Ok(v.clone());
            }
        }
        let v = self.embedder()?.embed(&[text])?.remove(0);
        *last = Some((text.to_string(), v.clone()));
        Ok(v)
    }

    /// The chat model (loaded on first use), on the quantized CPU engine: for SmolLM2 Q4_1 a
    /// SQuAD question with ~960-token prompts takes 2.06-2.13 s against 6.8 s with f32 weights, in
    /// a quarter of the memory (docs/EVAL.md, README).
    fn chat_model(&self) -> Result<&Arc<Model>> {
        if let Some(m) = self.chat.get() {
            return Ok(m);
        }
        let _loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = self.chat.get() {
            return Ok(m);
        }
        let mut opts = self.config.model_options();
        opts.format = WeightFormat::Quantized;
        let model = Arc::new(Model::load(&self.config.model_path()?, &opts)?);
        Ok(self.chat.get_or_init(|| model))
    }

    /// The answerability decision fitted for the chat model, if there is one (built in, or in
    /// `home/answerability/`).
    fn fitted(&self) -> Result<Option<&Fitted>> {
        if let Some(f) = self.fitted.get() {
            return Ok(f.as_ref());
        }
        let dir = self.config.home.join("answerability");
        let f = Fitted::find(&self.config.model_path()?, &dir)?;
        Ok(self.fitted.get_or_init(|| f).as_ref())
    }

    /// The chat model's tokenizer, template and context: the loaded model's, else read from
    /// its header alone.
    fn prompt_format(&self) -> Result<&PromptFormat> {
        if let Some(f) = self.format.get() {
            return Ok(f);
        }
        let format = match self.chat.get() {
            Some(m) => m.format(),
            None => Model::prompt_format(&self.config.model_path()?, &self.config.model_options())?,
        };
        Ok(self.format.get_or_init(|| format))
    }

    /// The last commit of the index opened (the first call opens it).
    fn index(&self) -> Result<Arc<dyn Store>> {
        if let Some(i) = self
            .index
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
        {
            return Ok(Arc::clone(i));
        }
        let mut slot = self
            .index
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            *slot = Some(Arc::from(self.location.open()?));
        }
        Ok(Arc::clone(slot.as_ref().expect("just set")))
    }
}
