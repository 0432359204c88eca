//! Milvus and Zilliz Cloud as the store (cargo feature `milvus`), through the official Rust
//! SDK (gRPC).
//!
//! # Layout
//!
//! An index is two collections:
//!
//! | collection | one row per | fields |
//! |---|---|---|
//! | `NAME` | chunk | `chunk_id` (primary key), `path`, `content_hash`, `embedder`, `ord` (position in the document), `title`, `heading`, `page_start`/`page_end` (0 = none), `byte_start`/`byte_end`, `modified` (the file's modification time, Unix seconds; 0 = unknown; absent from collections written before rag recorded it), `text`, `search_text` (title, heading and text as rag's analyzer makes their terms, lowercased and stemmed, split at the spaces by the server's BM25 function; collections made before 2026-12-05 hold the text, analyzed by the server), `sparse` (BM25 output), `dense` (HNSW, cosine) |
//! | `NAME_files` | document | `path` (primary key), `content_hash` (empty until a first version is committed), `chunks`, `pending` (versions being written: JSON pairs of hash and chunk count), `embedder`, and a constant 2-d vector (Milvus wants one per collection) |
//!
//! # Writes, and two machines on one collection
//!
//! Chunk ids are derived from (path, content hash, position), so the ids of any version of a
//! document are known without asking the server. A document is written in four steps: its
//! `NAME_files` row gets the new version added to `pending`; the chunks are upserted (written
//! twice, they overwrite); the chunks of every other version the row names (the committed one
//! and any pending left by a write cut short) are deleted by id; the row is upserted with the
//! new hash and `pending` empty. That last write is the document's commit: a second machine
//! ingesting the same folder reads `NAME_files`, skips what is there with the same hash, and
//! redoes anything a crash or a lost connection left half-written, deleting its leftovers.
//! Deletes go by id because a delete by filter scans the collection (~0.4 s a document at
//! 10,000 chunks on Milvus Lite, against ~1 ms by id). Removing a document deletes the chunks
//! of every version its row names, then the row.
//!
//! Readers see what the server has applied (`Strong` consistency): a search during an ingest can
//! see a document's new chunks a moment before its old ones go. The embedded store, which
//! commits a whole batch atomically, does not have this window.
//!
//! # Searches
//!
//! BM25 and dense search run on the server. rag analyzes the text it writes and the queries it
//! sends with the embedded store's analyzer, so both stores search the same terms whatever the
//! server's analyzers do (Milvus Lite has no stemmer), and scores them with the same k1 and b.
//! Collections made since figures are kept whole (`41,000` one term, [`ANALYZER_EN_STEM`]) carry a
//! no-op length filter in `search_text`'s analyzer parameters (Milvus Lite forgets field
//! descriptions, not those); older ones are read and written with [`ANALYZER_EN_STEM_V0`].
//! Hybrid search sends both at once and fuses the two
//! lists by rag's own RRF ([`crate::fusion::rrf`]), as the embedded store does, so each hit
//! carries its rank in both. Milvus returns BM25 scores negated; they are turned back. "Exact"
//! search is the HNSW search with its candidate list at Milvus's maximum (32,768), exact for
//! collections up to that size. IDF weights for [`Store::term_weights`] come from the server too:
//! a `TEXT_MATCH` count per term.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use milvus::v2 as sdk;
use milvus::v2::prelude::*;
use serde_json::{json, Value};
use std::result::Result;
use tantivy::tokenizer::TextAnalyzer;

use crate::backend::{Filter, Store, StoreWriter};
use crate::error::IndexError;
use crate::fusion::{fuse, SearchOptions};
use crate::manifest::{
    now_rfc3339, Manifest, ANALYZER_EN_STEM, ANALYZER_EN_STEM_V0, FORMAT_VERSION,
};
use crate::record::{ChunkRecord, Hit, NewChunk, Retriever};
use crate::schema::analyzer;
use crate::vectors::normalised;

/// The collection used when the address names none.
pub const DEFAULT_COLLECTION: &str = "rag";
/// Rows per upsert request (a chunk row is ~2-4 KB with a 384-d vector).
const UPSERT_BATCH: usize = 256;
/// Rows per page when listing documents or a document's chunks.
const PAGE: usize = 4096;
/// Milvus's largest HNSW candidate list.
const MAX_EF: usize = 32_768;
const MAX_VARCHAR: usize = 65_535;
const MAX_PATH: usize = 4_096;
const MAX_TITLE: usize = 2_048;
const FILES_SUFFIX: &str = "_files";
/// The description of a `search_text` field that holds rag's analyzed terms. Collections made
/// before it hold the text itself, analyzed (stemmed, on a Milvus server) by the server.
const TERMS_MARK: &str = "terms analyzed by rag (en_stem)";
/// The `max` of the length filter that marks a collection whose terms keep figures whole
/// ([`ANALYZER_EN_STEM`]); one without it holds [`ANALYZER_EN_STEM_V0`]'s.
const FIGURES_MARK_MAX: usize = 255;
/// Milvus's largest `limit` of a search.
const MAX_TOPK: usize = 16_384;

/// Where a Milvus store is: the server, credentials, collection and timeouts.
///
/// ```
/// # #[cfg(feature = "milvus")] {
/// let a = rag_index::milvus::Address::parse("milvus://127.0.0.1:19530/notes", None).unwrap();
/// assert_eq!((a.endpoint.as_str(), a.collection.as_str()), ("http://127.0.0.1:19530", "notes"));
/// let z = rag_index::milvus::Address::parse("https://in03-x.zillizcloud.com", Some("tok".into())).unwrap();
/// assert_eq!(z.collection, "rag");
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Address {
    /// `http://host:port` or `https://host[:port]`, as the SDK takes it.
    pub endpoint: String,
    /// The chunk collection's name (documents go to `NAME_files`).
    pub collection: String,
    /// API key or `user:password` (Zilliz Cloud, or a Milvus with authentication).
    pub token: Option<String>,
    /// How long to wait for the server to answer at all. Default 5 s.
    pub connect_timeout: Duration,
    /// How long one request may take. Default 60 s.
    pub rpc_timeout: Duration,
}

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Address")
            .field("endpoint", &self.endpoint)
            .field("collection", &self.collection)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self
            .endpoint
            .strip_prefix("http://")
            .map(|hp| format!("milvus://{hp}"))
            .unwrap_or_else(|| self.endpoint.clone());
        write!(f, "{shown}/{}", self.collection)
    }
}

impl Address {
    /// `milvus://host:port[/collection]` (plain gRPC), `https://host[:port][/collection]` or
    /// `milvus+https://...` (TLS: Zilliz Cloud), `http://host:port[/collection]`.
    pub fn parse(s: &str, token: Option<String>) -> Result<Self, IndexError> {
        let bad = |why: &str| IndexError::BadAddress {
            address: s.to_string(),
            reason: why.to_string(),
        };
        let (scheme, rest) = if let Some(r) = s.strip_prefix("milvus://") {
            ("http", r)
        } else if let Some(r) = s.strip_prefix("milvus+https://") {
            ("https", r)
        } else if let Some(r) = s.strip_prefix("http://") {
            ("http", r)
        } else if let Some(r) = s.strip_prefix("https://") {
            ("https", r)
        } else {
            return Err(bad("it should start with milvus://, https:// or http://"));
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let host = if host.contains(':') || scheme == "https" {
            host.to_string()
        } else {
            format!("{host}:19530")
        };
        let collection = path.trim_matches('/');
        let collection = if collection.is_empty() {
            DEFAULT_COLLECTION
        } else {
            collection
        };
        let valid = collection
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && collection
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && collection.len() + FILES_SUFFIX.len() <= 255;
        if !valid {
            return Err(bad(
                "a collection name is a letter or _ followed by letters, digits and _",
            ));
        }
        Ok(Address {
            endpoint: format!("{scheme}://{host}"),
            collection: collection.to_string(),
            token: token.filter(|t| !t.is_empty()),
            connect_timeout: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(60),
        })
    }

    fn files(&self) -> String {
        format!("{}{FILES_SUFFIX}", self.collection)
    }
}

/// One runtime for every Milvus client of the process: the SDK is async, rag's store API is
/// not. It is never dropped, so dropping a store inside async code is safe.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rag-milvus")
            .enable_all()
            .build()
            .expect("a tokio runtime for the Milvus client")
    })
}

/// Run `f` to completion on the Milvus runtime, from any thread (also from inside another
/// tokio runtime: the future runs on the Milvus runtime's own thread).
fn block<F: std::future::Future + Send + 'static>(f: F) -> F::Output
where
    F::Output: Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        // block_on inside a runtime panics; hand the future over and wait for it.
        let (tx, rx) = std::sync::mpsc::channel();
        runtime().spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().expect("the Milvus runtime dropped a request")
    } else {
        runtime().block_on(f)
    }
}

/// A connected client and the names it works on. Cheap to clone.
#[derive(Clone)]
struct Conn {
    address: Address,
    client: std::sync::Arc<ClientV2>,
}

impl Conn {
    fn connect(address: &Address) -> Result<Self, IndexError> {
        let mut config = ConnectConfig::new()
            .uri(address.endpoint.clone())
            .connect_timeout(address.connect_timeout)
            .rpc_timeout(address.rpc_timeout)
            // A wrong address or token fails at once, not after the SDK's 75 attempts.
            .retry(
                RetryConfig::new()
                    .max_attempts(3)
                    .max_retry_timeout(Duration::from_secs(10)),
            );
        if let Some(t) = &address.token {
            config = config.token(t.clone());
        }
        let client = block(async move { ClientV2::new(&config).await })
            .map_err(|e| remote(address, "connecting", e))?;
        let conn = Conn {
            address: address.clone(),
            client: std::sync::Arc::new(client),
        };
        // ClientV2::new may connect lazily: ask the server something now.
        conn.has(&address.collection)?;
        Ok(conn)
    }

    fn err(&self, doing: impl Into<String>, e: impl std::fmt::Display) -> IndexError {
        remote(&self.address, doing, e)
    }

    fn has(&self, collection: &str) -> Result<bool, IndexError> {
        let client = self.client.clone();
        let req = HasCollectionRequest::builder()
            .collection_name(collection)
            .build()
            .map_err(|e| self.err("checking the collection", e))?;
        block(async move { client.has_collection(req).await.map(|r| r.exists()) })
            .map_err(|e| self.err(format!("checking for collection {collection}"), e))
    }

    fn drop_collection(&self, collection: &str) -> Result<(), IndexError> {
        if !self.has(collection)? {
            return Ok(());
        }
        let client = self.client.clone();
        let req = DropCollectionRequest::builder()
            .collection_name(collection)
            .build()
            .map_err(|e| self.err("dropping the collection", e))?;
        block(async move { client.drop_collection(req).await.map(|_| ()) })
            .map_err(|e| self.err(format!("dropping collection {collection}"), e))
    }

    fn create(&self, dim: usize) -> Result<(), IndexError> {
        let a = &self.address;
        let varchar = |name: &str, max: usize| {
            sdk::FieldSchema::new()
                .name(name)
                .data_type(sdk::DataType::VarChar)
                .max_length(max as u32)
        };
        let int = |name: &str| {
            sdk::FieldSchema::new()
                .name(name)
                .data_type(sdk::DataType::Int64)
        };
        let chunks = sdk::CollectionSchema::new()
            .add_field(int("chunk_id").primary_key(true))
            .add_field(varchar("path", MAX_PATH))
            .add_field(varchar("content_hash", 128))
            .add_field(varchar("embedder", 512))
            .add_field(int("ord"))
            .add_field(varchar("title", MAX_TITLE))
            .add_field(varchar("heading", MAX_PATH))
            .add_field(int("page_start"))
            .add_field(int("page_end"))
            .add_field(int("byte_start"))
            .add_field(int("byte_end"))
            .add_field(int("modified"))
            .add_field(varchar("text", MAX_VARCHAR))
            // rag's own analyzer's terms, which the server only splits at the spaces
            // (Milvus Lite ignores a stemmer filter: docs/EVAL.md).
            .add_field(
                varchar("search_text", MAX_VARCHAR)
                    .description(TERMS_MARK)
                    .enable_analyzer(true)
                    .enable_match(true)
                    // The length filter changes nothing (rag's terms are at most 40 bytes); it
                    // marks terms made by the figure-aware analyzer, where descriptions are lost.
                    .analyzer_params(json!({
                        "tokenizer": "standard",
                        "filter": ["lowercase", {"type": "length", "max": FIGURES_MARK_MAX}]
                    })),
            )
            .add_field(
                sdk::FieldSchema::new()
                    .name("sparse")
                    .data_type(sdk::DataType::SparseFloatVector),
            )
            .add_field(
                sdk::FieldSchema::new()
                    .name("dense")
                    .data_type(sdk::DataType::FloatVector)
                    .dimension(dim as u32),
            )
            .add_function(
                Function::new()
                    .name("search_text_bm25")
                    .function_type(FunctionType::Bm25)
                    .input_fields(["search_text"])
                    .output_fields(["sparse"]),
            );
        let params = |kv: &[(&str, &str)]| -> HashMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let hnsw = params(&[("M", "16"), ("efConstruction", "200")]);
        // BM25 as the embedded store (tantivy) scores it: a Milvus server's defaults, which
        // Milvus Lite's are not (k1 = 1.5).
        let bm25 = params(&[("bm25_k1", "1.2"), ("bm25_b", "0.75")]);
        let req = CreateCollectionRequest::builder()
            .collection_name(a.collection.clone())
            .schema(chunks)
            .index_params(vec![
                IndexParam::new()
                    .field_name("dense")
                    .index_type(IndexType::Hnsw)
                    .metric_type(MetricType::Cosine)
                    .extra_params(hnsw),
                IndexParam::new()
                    .field_name("sparse")
                    .index_type(IndexType::SparseInvertedIndex)
                    .metric_type(MetricType::Bm25)
                    .extra_params(bm25),
            ])
            .build()
            .map_err(|e| self.err("creating the collection", e))?;
        let client = self.client.clone();
        block(async move { client.create_collection(req).await.map(|_| ()) })
            .map_err(|e| self.err(format!("creating collection {}", a.collection), e))?;

        let files = sdk::CollectionSchema::new()
            .add_field(varchar("path", MAX_PATH).primary_key(true))
            .add_field(varchar("content_hash", 128))
            .add_field(varchar("embedder", 512))
            .add_field(int("chunks"))
            .add_field(varchar("pending", MAX_VARCHAR))
            .add_field(
                sdk::FieldSchema::new()
                    .name("v")
                    .data_type(sdk::DataType::FloatVector)
                    .dimension(2),
            );
        let req = CreateCollectionRequest::builder()
            .collection_name(a.files())
            .schema(files)
            .index_params(vec![IndexParam::new()
                .field_name("v")
                .index_type(IndexType::Flat)
                .metric_type(MetricType::L2)])
            .build()
            .map_err(|e| self.err("creating the files collection", e))?;
        let client = self.client.clone();
        block(async move { client.create_collection(req).await.map(|_| ()) })
            .map_err(|e| self.err(format!("creating collection {}", a.files()), e))?;
        Ok(())
    }

    fn load(&self, collection: &str) -> Result<(), IndexError> {
        let client = self.client.clone();
        let req = LoadCollectionRequest::builder()
            .collection_name(collection)
            .build()
            .map_err(|e| self.err("loading the collection", e))?;
        block(async move { client.load_collection(req).await.map(|_| ()) })
            .map_err(|e| self.err(format!("loading collection {collection}"), e))
    }

    /// What the collection's schema says about how it was made.
    fn layout(&self) -> Result<Layout, IndexError> {
        let client = self.client.clone();
        let name = self.address.collection.clone();
        let req = DescribeCollectionRequest::builder()
            .collection_name(name.clone())
            .build()
            .map_err(|e| self.err("describing the collection", e))?;
        let desc = block(async move { client.describe_collection(req).await })
            .map_err(|e| self.err(format!("describing collection {name}"), e))?;
        let fields = desc.description().get_schema().get_fields();
        let dates = fields.iter().any(|f| f.get_name() == "modified");
        // Milvus Lite forgets field descriptions; the analyzer tells too: older collections
        // had the server stem.
        let search_text = fields.iter().find(|f| f.get_name() == "search_text");
        let params = search_text
            .and_then(|f| f.get_analyzer_params().ok())
            .filter(|p| !p.is_null())
            .map(|p| p.to_string());
        let terms = search_text.is_some_and(|f| f.get_description() == TERMS_MARK)
            || params.as_ref().is_some_and(|p| !p.contains("stemmer"));
        let figures = terms && params.is_some_and(|p| p.contains("\"length\""));
        fields
            .iter()
            .find(|f| f.get_name() == "dense")
            .map(|f| Layout {
                dim: f.get_dimension() as usize,
                dates,
                terms,
                figures,
            })
            .ok_or_else(|| {
                self.err(
                    "reading the collection",
                    format!("collection {name} has no `dense` field: it was not made by rag"),
                )
            })
    }

    /// Rows matching `filter`: at most `limit` in one request, or all of them through the SDK's
    /// iterator (pages of [`PAGE`] rows, the primary key as cursor).
    fn query(
        &self,
        collection: &str,
        filter: &str,
        fields: &[&str],
        limit: Option<usize>,
    ) -> Result<Vec<serde_json::Map<String, Value>>, IndexError> {
        let doing = format!("reading {collection}");
        let mut b = QueryRequest::builder()
            .collection_name(collection)
            .filter(filter)
            .output_fields(fields.iter().copied())
            .consistency_level(sdk::ConsistencyLevel::Strong);
        let client = self.client.clone();
        if let Some(l) = limit.filter(|&l| l <= PAGE) {
            b = b.limit(l as i64);
            let req = b.build().map_err(|e| self.err(doing.clone(), e))?;
            return block(async move { client.query(req).await?.results().get_output_rows() })
                .map_err(|e| self.err(doing, e));
        }
        let query = b.build().map_err(|e| self.err(doing.clone(), e))?;
        let mut it = QueryIteratorRequest::builder()
            .query(query.clone())
            .batch_size(PAGE);
        if let Some(l) = limit {
            it = it.limit(l as i64);
        }
        let req = it.build().map_err(|e| self.err(doing.clone(), e))?;
        let listed = block(async move {
            let mut pages = client.query_iterator(req).await?;
            let mut out = Vec::new();
            while let Some(page) = pages.next().await? {
                let rows = page.results().get_output_rows()?;
                if rows.is_empty() {
                    break;
                }
                out.extend(rows);
            }
            Ok::<_, sdk::error::Error>(out)
        });
        match listed {
            Ok(rows) => Ok(rows),
            // Milvus Lite has no query iterator (no collection ids): page by offset instead.
            Err(sdk::error::Error::MalformedResponse(m)) if m.contains("collection ID") => {
                self.query_by_offset(query, limit, &doing)
            }
            Err(e) => Err(self.err(doing, e)),
        }
    }

    /// Pages of a query by offset, until a short page (or `limit` rows).
    fn query_by_offset(
        &self,
        query: QueryRequest,
        limit: Option<usize>,
        doing: &str,
    ) -> Result<Vec<serde_json::Map<String, Value>>, IndexError> {
        let mut out = Vec::new();
        loop {
            let want = limit.map_or(PAGE, |l| l.saturating_sub(out.len()).min(PAGE));
            if want == 0 {
                break;
            }
            let req = query
                .clone()
                .into_builder()
                .offset(out.len() as i64)
                .limit(want as i64)
                .build()
                .map_err(|e| self.err(doing, e))?;
            let client = self.client.clone();
            let rows = block(async move { client.query(req).await?.results().get_output_rows() })
                .map_err(|e| self.err(doing, e))?;
            let n = rows.len();
            out.extend(rows);
            if n < want {
                break;
            }
        }
        Ok(out)
    }

    fn count(&self, collection: &str, filter: &str) -> Result<usize, IndexError> {
        let req = QueryRequest::builder()
            .collection_name(collection)
            .filter(filter)
            .output_fields(["count(*)"])
            .consistency_level(sdk::ConsistencyLevel::Strong)
            .build()
            .map_err(|e| self.err("counting", e))?;
        let client = self.client.clone();
        let rows = block(async move { client.query(req).await?.results().get_output_rows() })
            .map_err(|e| self.err(format!("counting rows of {collection}"), e))?;
        Ok(rows
            .first()
            .and_then(|r| r.get("count(*)"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize)
    }

    fn upsert(&self, collection: &str, rows: Vec<Value>, doing: &str) -> Result<(), IndexError> {
        let insert = InsertRequest::builder()
            .collection_name(collection)
            .rows(rows)
            .build()
            .map_err(|e| self.err(doing, e))?;
        let req = UpsertRequest::builder()
            .insert(insert)
            .build()
            .map_err(|e| self.err(doing, e))?;
        let client = self.client.clone();
        block(async move { client.upsert(req).await.map(|_| ()) }).map_err(|e| self.err(doing, e))
    }

    /// path -> content hash of the committed documents, and the embedder of the collection if
    /// any row names one.
    fn documents(&self) -> Result<(HashMap<String, String>, Option<String>), IndexError> {
        let (files, embedder) = self.files()?;
        let docs = files
            .into_iter()
            .filter(|(_, f)| !f.hash.is_empty())
            .map(|(p, f)| (p, f.hash))
            .collect();
        Ok((docs, embedder))
    }

    /// Every `NAME_files` row (committed or not), and the embedder named by the first.
    fn files(&self) -> Result<(HashMap<String, FileRow>, Option<String>), IndexError> {
        let rows = self.query(
            &self.address.files(),
            "path != \"\"",
            &["path", "content_hash", "chunks", "pending", "embedder"],
            None,
        )?;
        let mut embedder = None;
        let mut files = HashMap::with_capacity(rows.len());
        for r in rows {
            if embedder.is_none() {
                embedder = r.get("embedder").and_then(Value::as_str).map(String::from);
            }
            let Some(path) = r.get("path").and_then(Value::as_str) else {
                continue;
            };
            let pending = r
                .get("pending")
                .and_then(Value::as_str)
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or_default();
            files.insert(
                path.to_string(),
                FileRow {
                    hash: r
                        .get("content_hash")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    chunks: r.get("chunks").and_then(Value::as_u64).unwrap_or(0) as usize,
                    pending,
                },
            );
        }
        Ok((files, embedder))
    }

    /// Delete rows by primary key. Written as an `in [...]` filter (Milvus Lite has no filter
    /// templates, which the SDK's id list becomes); a primary-key filter is a lookup, not a scan.
    fn delete_ids(&self, collection: &str, ids: Keys, doing: &str) -> Result<(), IndexError> {
        let filter = match ids {
            Keys::Chunks(v) => format!(
                "chunk_id in [{}]",
                v.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
            ),
            Keys::Paths(v) => format!(
                "path in [{}]",
                v.iter().map(|p| quote(p)).collect::<Vec<_>>().join(",")
            ),
        };
        let req = DeleteRequest::builder()
            .collection_name(collection)
            .filter(filter)
            .build()
            .map_err(|e| self.err(doing, e))?;
        let client = self.client.clone();
        block(async move { client.delete(req).await.map(|_| ()) }).map_err(|e| self.err(doing, e))
    }

    fn manifest(
        &self,
        embedder: Option<String>,
        layout: &Layout,
        documents: usize,
    ) -> Result<Manifest, IndexError> {
        let chunks = self.count(&self.address.collection, "")?;
        let now = now_rfc3339();
        Ok(Manifest {
            format_version: FORMAT_VERSION,
            embedder_id: embedder.unwrap_or_default(),
            dim: layout.dim,
            generation: 0,
            documents,
            chunks,
            vectors_rows: chunks as u64,
            analyzer: layout.analyzer_name().to_string(),
            store_id: self.address.to_string(),
            created_at: now.clone(),
            updated_at: now,
        })
    }
}

/// What a chunk collection's schema says about how it was made.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// The dimension of the `dense` field.
    dim: usize,
    /// Whether chunks have a `modified` field.
    dates: bool,
    /// Whether `search_text` holds rag's analyzed terms ([`TERMS_MARK`]), and BM25 queries are
    /// sent analyzed too.
    terms: bool,
    /// Whether those terms keep figures whole ([`ANALYZER_EN_STEM`]; marked by the length
    /// filter, see [`FIGURES_MARK_MAX`]) rather than split ([`ANALYZER_EN_STEM_V0`]).
    figures: bool,
}

impl Layout {
    /// The analyzer that made the collection's terms, and makes its queries'.
    fn analyzer_name(&self) -> &'static str {
        if self.figures {
            ANALYZER_EN_STEM
        } else {
            ANALYZER_EN_STEM_V0
        }
    }
}

/// Primary keys to delete: chunk ids, or document paths.
enum Keys {
    Chunks(Vec<i64>),
    Paths(Vec<String>),
}

/// A document's row in `NAME_files`: the committed version (`hash` empty until the first
/// one is) and the versions whose chunks a cut-short write may have left behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct FileRow {
    hash: String,
    chunks: usize,
    /// (content hash, chunk count) of versions being written.
    pending: Vec<(String, usize)>,
}

impl FileRow {
    /// The chunk ids of every version this row knows of.
    fn versions(&self) -> impl Iterator<Item = (&str, usize)> {
        std::iter::once((self.hash.as_str(), self.chunks))
            .filter(|(h, _)| !h.is_empty())
            .chain(self.pending.iter().map(|(h, n)| (h.as_str(), *n)))
    }
}

fn remote(address: &Address, doing: impl Into<String>, e: impl std::fmt::Display) -> IndexError {
    IndexError::Remote {
        store: address.to_string(),
        doing: doing.into(),
        detail: e.to_string(),
    }
}

/// The HNSW candidate list for `k` results: as the embedded store's, `max(128, 4k)`.
fn dense_ef(k: usize) -> usize {
    (4 * k).clamp(crate::HNSW_EF_SEARCH_MIN, MAX_EF)
}

/// A string literal of Milvus's filter language.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// `s` with LIKE's wildcards escaped, so they match themselves.
fn like_literal(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '%' | '_' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// The filter expression of `filter` (empty: everything).
fn expression(filter: &Filter) -> String {
    let mut all: Vec<String> = Vec::new();
    if let Some(p) = filter.path_prefix.as_deref() {
        all.push(format!(
            "path like {}",
            quote(&format!("{}%", like_literal(p)))
        ));
    }
    if !filter.file_types.is_empty() {
        // Milvus has no lower(): the extension as written in lower and in upper case.
        let mut any: Vec<String> = Vec::new();
        for t in &filter.file_types {
            for case in [t.to_lowercase(), t.to_uppercase()] {
                let e = format!("path like {}", quote(&format!("%.{}", like_literal(&case))));
                if !any.contains(&e) {
                    any.push(e);
                }
            }
        }
        all.push(format!("({})", any.join(" or ")));
    }
    if filter.has_dates() {
        // 0 is "not known", which no date filter lets through.
        all.push(format!(
            "modified >= {}",
            filter.modified_after.unwrap_or(i64::MIN).max(1)
        ));
    }
    if let Some(b) = filter.modified_before {
        all.push(format!("modified < {b}"));
    }
    all.join(" and ")
}

/// What BM25 reads of a chunk: its text, with the heading and title before it unless the text
/// already starts with them (a Markdown document's first chunk holds its title as a heading).
/// The embedded store searches the three as fields weighted 1, 0.5 and 0.3; one Milvus BM25
/// field holding each once comes closest (measured on SciFact: docs/EVAL.md).
fn search_text(title: &str, heading: &str, text: &str) -> String {
    let mut parts: Vec<&str> = Vec::with_capacity(3);
    let head = text.get(..text.len().min(4 * MAX_TITLE)).unwrap_or(text);
    for extra in [title, heading] {
        if !extra.is_empty() && !head.contains(extra) && !parts.contains(&extra) {
            parts.push(extra);
        }
    }
    parts.push(text);
    parts.join("\n")
}

/// Stable chunk id of the `ord`th chunk of one version of a document: FNV-1a, so it is the
/// same on every machine and build, cut to 53 bits so that JSON readers with only doubles (the
/// web page's JavaScript) read it exactly. Two of 100,000 chunks share an id with probability
/// about 5e-7.
fn chunk_id(path: &str, content_hash: &str, ord: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path
        .bytes()
        .chain([0])
        .chain(content_hash.bytes())
        .chain([0])
        .chain((ord as u64).to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h & ((1 << 53) - 1)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

const CHUNK_FIELDS: [&str; 11] = [
    "chunk_id",
    "path",
    "content_hash",
    "title",
    "heading",
    "page_start",
    "page_end",
    "byte_start",
    "byte_end",
    "text",
    "ord",
];

fn record(row: &serde_json::Map<String, Value>) -> Option<ChunkRecord> {
    let s = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let u = |k: &str| row.get(k).and_then(Value::as_u64).unwrap_or(0);
    let opt = |k: &str| Some(s(k)).filter(|v| !v.is_empty());
    let chunk_id = row.get("chunk_id").and_then(Value::as_u64)?;
    let (ps, pe) = (u("page_start"), u("page_end"));
    Some(ChunkRecord {
        chunk_id,
        path: s("path"),
        content_hash: s("content_hash"),
        title: opt("title"),
        heading: opt("heading"),
        pages: (ps != 0).then(|| (ps as u32, pe.max(ps) as u32)),
        byte_range: u("byte_start") as usize..u("byte_end") as usize,
        text: s("text"),
        modified: row
            .get("modified")
            .and_then(Value::as_i64)
            .filter(|&m| m != 0),
    })
}

/// A read view of a Milvus index. Counts and the document list are those of when it was
/// opened; searches always see the server's current data.
pub struct MilvusStore {
    conn: Conn,
    manifest: Manifest,
    documents: HashMap<String, String>,
    analyzer: TextAnalyzer,
    /// Document frequencies already asked for (this view's counts do not change).
    doc_freq: std::sync::Mutex<HashMap<String, usize>>,
    layout: Layout,
}

impl MilvusStore {
    /// Connect and open the index at `address`. [`IndexError::NotFound`] when the collection
    /// does not exist (nothing was ingested into it).
    pub fn open(address: &Address) -> Result<Self, IndexError> {
        let conn = Conn::connect(address)?;
        if !conn.has(&address.collection)? || !conn.has(&address.files())? {
            return Err(IndexError::NotFound {
                dir: address.to_string().into(),
            });
        }
        conn.load(&address.collection)?;
        conn.load(&address.files())?;
        let layout = conn.layout()?;
        let (documents, embedder) = conn.documents()?;
        let manifest = conn.manifest(embedder, &layout, documents.len())?;
        Ok(MilvusStore {
            conn,
            manifest,
            documents,
            analyzer: analyzer(layout.analyzer_name()).expect("built-in analyzer"),
            doc_freq: std::sync::Mutex::new(HashMap::new()),
            layout,
        })
    }

    /// The fields a chunk is read from.
    fn fields(&self) -> Vec<&'static str> {
        let mut f = CHUNK_FIELDS.to_vec();
        if self.layout.dates {
            f.push("modified");
        }
        f
    }

    /// The filter expression of `filter`, or why this collection cannot apply it.
    fn expression(&self, filter: &Filter) -> Result<String, IndexError> {
        if filter.has_dates() && !self.layout.dates {
            return Err(IndexError::NoDates {
                store: self.location(),
            });
        }
        Ok(expression(filter))
    }

    /// A search request on `field`, `k` deep, restricted by the filter expression `expr`.
    fn request(
        &self,
        field: &str,
        vectors: SearchVectors,
        k: usize,
        expr: &str,
        ef: Option<usize>,
        output: &[&str],
    ) -> Result<SearchRequest, IndexError> {
        let mut b = SearchRequest::builder()
            .collection_name(self.conn.address.collection.clone())
            .vector_field(field)
            .vectors(vectors)
            .limit(k as i64)
            .output_fields(output.iter().copied())
            .consistency_level(sdk::ConsistencyLevel::Strong);
        if !expr.is_empty() {
            b = b.filter(expr);
        }
        if let Some(ef) = ef {
            b = b.extra_params(HashMap::from([("ef".to_string(), ef.to_string())]));
        }
        b.build()
            .map_err(|e| self.conn.err(format!("searching {field}"), e))
    }

    /// Searches sent at once; for each, the chunk ids of its results and their scores, best
    /// first (BM25's sign turned back).
    fn ranked(&self, requests: Vec<SearchRequest>) -> Result<Vec<Vec<(u64, f32)>>, IndexError> {
        let client = self.conn.client.clone();
        let lists = block(async move {
            let tasks: Vec<_> = requests
                .into_iter()
                .map(|req| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        let response = client.search(req).await.map_err(|e| e.to_string())?;
                        rows_of(response).map_err(|e| e.to_string())
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                out.push(t.await.map_err(|e| e.to_string())??);
            }
            Ok::<_, String>(out)
        })
        .map_err(|e| self.conn.err("searching", e))?;
        Ok(lists
            .into_iter()
            .map(|rows| {
                rows.into_iter()
                    .filter_map(|(row, score)| {
                        let id = row.get("chunk_id").and_then(Value::as_u64)?;
                        Some((id, score.abs()))
                    })
                    .collect()
            })
            .collect())
    }

    /// The HNSW search of `vector` with a candidate list of `ef`: chunk ids and cosines.
    fn nearest(
        &self,
        vector: &[f32],
        k: usize,
        filter: &Filter,
        ef: usize,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let q = normalised(vector, self.manifest.dim, "of the query")?;
        let req = self.request(
            "dense",
            SearchVectors::Float(vec![q]),
            k.min(MAX_TOPK),
            &self.expression(filter)?,
            Some(ef),
            &["chunk_id"],
        )?;
        Ok(self.ranked(vec![req])?.remove(0))
    }

    /// The `k` best chunks by BM25 over `search_text`.
    fn bm25_ranked(
        &self,
        query: &str,
        k: usize,
        filter: &Filter,
    ) -> Result<Vec<(u64, f32)>, IndexError> {
        let terms = crate::schema::distinct_terms(&self.analyzer, query);
        if k == 0 || terms.is_empty() {
            return Ok(Vec::new());
        }
        // Each term once, as the embedded store asks.
        let text = if self.layout.terms {
            terms.join(" ")
        } else {
            query.to_string()
        };
        let req = self.request(
            "sparse",
            SearchVectors::EmbeddedText(vec![text]),
            k.min(MAX_TOPK),
            &self.expression(filter)?,
            None,
            &["chunk_id"],
        )?;
        Ok(self.ranked(vec![req])?.remove(0))
    }

    /// The chunks of `ids` by id (a chunk deleted meanwhile is not there).
    fn records(&self, ids: &[u64]) -> Result<HashMap<u64, ChunkRecord>, IndexError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let list: Vec<String> = ids.iter().map(u64::to_string).collect();
        let rows = self.conn.query(
            &self.conn.address.collection,
            &format!("chunk_id in [{}]", list.join(",")),
            &self.fields(),
            Some(ids.len()),
        )?;
        Ok(rows
            .iter()
            .filter_map(record)
            .map(|r| (r.chunk_id, r))
            .collect())
    }

    /// The hits of one retriever's ranked list.
    fn hits(&self, ranked: Vec<(u64, f32)>, by: Retriever) -> Result<Vec<Hit>, IndexError> {
        let ids: Vec<u64> = ranked.iter().map(|x| x.0).collect();
        let mut chunks = self.records(&ids)?;
        Ok(ranked
            .into_iter()
            .enumerate()
            .filter_map(|(i, (id, score))| {
                let chunk = chunks.remove(&id)?;
                let found = Some((i + 1, score));
                Some(match by {
                    Retriever::Bm25 => Hit::new(chunk, score, found, None),
                    _ => Hit::new(chunk, score, None, found),
                })
            })
            .collect())
    }
}

/// A search result row (its fields) and its score.
type Scored = (serde_json::Map<String, Value>, f32);

/// The rows of the first result set with their scores.
fn rows_of(
    response: sdk::response::dql::SearchResponse,
) -> Result<Vec<Scored>, Box<sdk::error::Error>> {
    let mut out = Vec::new();
    if let Some(first) = response.results().into_iter().next() {
        let scores = first.get_scores().to_vec();
        for (i, row) in first.rows()?.enumerate() {
            let score = scores.get(i).copied().unwrap_or(0.0);
            out.push((row.to_entity_row()?, score));
        }
    }
    Ok(out)
}

impl Store for MilvusStore {
    fn location(&self) -> String {
        self.conn.address.to_string()
    }

    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn check_embedder(&self, id: &str, dim: usize) -> Result<(), IndexError> {
        let m = &self.manifest;
        let same_id = m.embedder_id.is_empty() || m.embedder_id == id;
        if same_id && m.dim == dim {
            return Ok(());
        }
        Err(IndexError::EmbedderMismatch {
            dir: self.location().into(),
            have_id: m.embedder_id.clone(),
            have_dim: m.dim,
            want_id: id.to_string(),
            want_dim: dim,
        })
    }

    fn documents(&self) -> HashMap<String, String> {
        self.documents.clone()
    }

    fn len(&self) -> usize {
        self.manifest.chunks
    }

    fn chunk(&self, chunk_id: u64) -> Result<Option<ChunkRecord>, IndexError> {
        let rows = self.conn.query(
            &self.conn.address.collection,
            &format!("chunk_id == {chunk_id}"),
            &self.fields(),
            Some(1),
        )?;
        Ok(rows.first().and_then(record))
    }

    fn bm25(&self, query: &str, k: usize, filter: &Filter) -> Result<Vec<Hit>, IndexError> {
        self.hits(self.bm25_ranked(query, k, filter)?, Retriever::Bm25)
    }

    fn dense(&self, vector: &[f32], k: usize, filter: &Filter) -> Result<Vec<Hit>, IndexError> {
        self.hits(
            self.nearest(vector, k, filter, dense_ef(k))?,
            Retriever::Dense,
        )
    }

    fn exact(&self, vector: &[f32], k: usize, filter: &Filter) -> Result<Vec<Hit>, IndexError> {
        self.hits(
            self.nearest(vector, k, filter, MAX_EF.max(k))?,
            Retriever::Dense,
        )
    }

    fn hybrid(
        &self,
        query: &str,
        vector: &[f32],
        opts: &SearchOptions,
        filter: &Filter,
    ) -> Result<Vec<Hit>, IndexError> {
        let ef = dense_ef(opts.dense_depth);
        let (bm25, dense) = std::thread::scope(|s| {
            let dense = s.spawn(|| self.nearest(vector, opts.dense_depth, filter, ef));
            let bm25 = self.bm25_ranked(query, opts.bm25_depth, filter);
            (bm25, dense.join().expect("a search thread panicked"))
        });
        let fused = fuse(&bm25?, &dense?, opts);
        let ids: Vec<u64> = fused.iter().map(|f| f.id).collect();
        let mut chunks = self.records(&ids)?;
        Ok(fused
            .iter()
            .filter_map(|f| Some(f.hit(chunks.remove(&f.id)?)))
            .collect())
    }

    fn analyze(&self, text: &str) -> Vec<String> {
        crate::schema::terms(&self.analyzer, text)
    }

    fn term_weights(&self, query: &str) -> Result<Vec<(String, f32)>, IndexError> {
        let total = self.manifest.chunks as f64;
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(query);
        // Each term with the word it came from: the server analyzes what it is sent.
        let mut terms: Vec<(String, String)> = Vec::new();
        while let Some(tok) = stream.next() {
            if terms.iter().any(|(t, _)| *t == tok.text) {
                continue;
            }
            let surface = query
                .get(tok.offset_from..tok.offset_to)
                .unwrap_or(&tok.text)
                .to_string();
            terms.push((tok.text.clone(), surface));
        }
        // The counts not cached yet, asked for all at once.
        let missing: Vec<(String, String)> = {
            let known = self.doc_freq.lock().unwrap_or_else(|p| p.into_inner());
            terms
                .iter()
                .filter(|(t, _)| !known.contains_key(t))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let counts = std::thread::scope(|s| {
                let handles: Vec<_> = missing
                    .iter()
                    .map(|(term, surface)| {
                        let word = if self.layout.terms { term } else { surface };
                        let filter = format!("TEXT_MATCH(search_text, {})", quote(word));
                        let conn = &self.conn;
                        s.spawn(move || conn.count(&conn.address.collection, &filter))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a count thread panicked"))
                    .collect::<Result<Vec<usize>, IndexError>>()
            })?;
            let mut known = self.doc_freq.lock().unwrap_or_else(|p| p.into_inner());
            for ((term, _), n) in missing.into_iter().zip(counts) {
                known.insert(term, n);
            }
        }
        let known = self.doc_freq.lock().unwrap_or_else(|p| p.into_inner());
        Ok(terms
            .into_iter()
            .map(|(term, _)| {
                let n = known.get(&term).copied().unwrap_or(0) as f64;
                let idf = (1.0 + (total - n + 0.5) / (n + 0.5)).ln();
                (term, idf as f32)
            })
            .collect())
    }

    fn export_document(&self, path: &str) -> Result<Vec<NewChunk>, IndexError> {
        let mut fields = self.fields();
        fields.push("dense");
        let mut rows = self.conn.query(
            &self.conn.address.collection,
            &format!("path == {}", quote(path)),
            &fields,
            None,
        )?;
        rows.sort_by_key(|r| r.get("ord").and_then(Value::as_u64).unwrap_or(0));
        rows.iter()
            .map(|row| {
                let r = record(row).ok_or_else(|| {
                    self.conn
                        .err(format!("reading {path}"), "a chunk row without chunk_id")
                })?;
                let vector: Vec<f32> = row
                    .get("dense")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_f64)
                            .map(|x| x as f32)
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(r.into_new_chunk(vector))
            })
            .collect()
    }
}

/// Writes documents into a Milvus index (see the module docs for the order of writes).
/// Several writers, on several machines, may work on one collection; each writes whole
/// documents.
pub struct MilvusWriter {
    conn: Conn,
    manifest: Manifest,
    embedder_id: String,
    /// The `NAME_files` rows as this writer knows them.
    files: HashMap<String, FileRow>,
    layout: Layout,
    /// What BM25 terms are made with, when the collection holds rag's terms.
    analyzer: TextAnalyzer,
}

impl MilvusWriter {
    /// Connect, create the collections if needed (`reindex`: drop them first), and check that
    /// an existing index was made by the same embedder and dimension before any write.
    pub fn open(
        address: &Address,
        embedder_id: &str,
        dim: usize,
        reindex: bool,
    ) -> Result<Self, IndexError> {
        if dim == 0 {
            return Err(IndexError::InvalidVector {
                what: format!("dimension of embedder {embedder_id} (0)"),
            });
        }
        let conn = Conn::connect(address)?;
        if reindex {
            conn.drop_collection(&address.collection)?;
            conn.drop_collection(&address.files())?;
        }
        let has_chunks = conn.has(&address.collection)?;
        let has_files = conn.has(&address.files())?;
        match (has_chunks, has_files) {
            (false, false) => conn.create(dim)?,
            (true, true) => {}
            _ => {
                return Err(conn.err(
                    "opening the index",
                    format!(
                        "only one of {} and {} exists: another program uses these names, or a \
                         creation was cut short; pick another collection, or --reindex",
                        address.collection,
                        address.files()
                    ),
                ))
            }
        }
        conn.load(&address.collection)?;
        conn.load(&address.files())?;
        let layout = conn.layout()?;
        let have_dim = layout.dim;
        let (files, have_id) = conn.files()?;
        if have_dim != dim || have_id.as_deref().is_some_and(|h| h != embedder_id) {
            return Err(IndexError::EmbedderMismatch {
                dir: address.to_string().into(),
                have_id: have_id.unwrap_or_else(|| "(none yet)".into()),
                have_dim,
                want_id: embedder_id.to_string(),
                want_dim: dim,
            });
        }
        let committed = files.values().filter(|f| !f.hash.is_empty()).count();
        let manifest = conn.manifest(Some(embedder_id.to_string()), &layout, committed)?;
        Ok(MilvusWriter {
            conn,
            manifest,
            embedder_id: embedder_id.to_string(),
            files,
            layout,
            analyzer: analyzer(layout.analyzer_name()).expect("built-in analyzer"),
        })
    }
}

impl MilvusWriter {
    fn write_file_row(&mut self, path: &str, row: &FileRow, doing: &str) -> Result<(), IndexError> {
        let pending = serde_json::to_string(&row.pending).expect("pairs serialise");
        self.conn.upsert(
            &self.conn.address.files(),
            vec![json!({
                "path": path,
                "content_hash": row.hash,
                "embedder": self.embedder_id,
                "chunks": row.chunks as i64,
                "pending": pending,
                "v": [1.0, 0.0],
            })],
            doing,
        )?;
        self.files.insert(path.to_string(), row.clone());
        Ok(())
    }
}

impl StoreWriter for MilvusWriter {
    fn location(&self) -> String {
        self.conn.address.to_string()
    }

    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Committed documents with their hash, and documents whose first write was cut short with
    /// an empty hash: an ingest then redoes them (no file hashes to ""), or removes them with
    /// their leftover chunks when the file is gone.
    fn documents(&self) -> HashMap<String, String> {
        self.files
            .iter()
            .map(|(p, f)| (p.clone(), f.hash.clone()))
            .collect()
    }

    fn replace_document(
        &mut self,
        path: &str,
        content_hash: &str,
        chunks: Vec<NewChunk>,
    ) -> Result<(), IndexError> {
        if path.is_empty() || path.len() > MAX_PATH {
            return Err(self.conn.err(
                format!("writing {path}"),
                format!("a path must have 1 to {MAX_PATH} bytes"),
            ));
        }
        let dim = self.manifest.dim;
        let doing = format!("writing {path}");
        let a = self.conn.address.clone();
        let mut rows = Vec::with_capacity(chunks.len());
        for (ord, c) in chunks.iter().enumerate() {
            let v = normalised(&c.vector, dim, &format!("of chunk {ord} of {path}"))?;
            let title = clip(c.title.as_deref().unwrap_or(""), MAX_TITLE);
            let heading = clip(c.heading.as_deref().unwrap_or(""), MAX_PATH);
            let text = clip(&c.text, MAX_VARCHAR);
            let search = search_text(title, heading, text);
            let search = if self.layout.terms {
                crate::schema::terms(&self.analyzer, &search).join(" ")
            } else {
                search
            };
            let search = clip(&search, MAX_VARCHAR).to_string();
            let (ps, pe) = c.pages.unwrap_or((0, 0));
            let mut row = json!({
                "chunk_id": chunk_id(path, content_hash, ord) as i64,
                "path": path,
                "content_hash": content_hash,
                "embedder": self.embedder_id,
                "ord": ord as i64,
                "title": title,
                "heading": heading,
                "page_start": ps as i64,
                "page_end": pe as i64,
                "byte_start": c.byte_range.start as i64,
                "byte_end": c.byte_range.end as i64,
                "text": text,
                "search_text": search,
                "dense": v,
            });
            if self.layout.dates {
                row["modified"] = json!(c.modified.unwrap_or(0));
            }
            rows.push(row);
        }
        let n = rows.len();
        // 1. Record the version about to be written, so that a write cut short is cleaned up
        //    by the next one, whatever version that writes.
        let mut row = self.files.get(path).cloned().unwrap_or_default();
        row.pending.retain(|(h, _)| h != content_hash);
        row.pending.push((content_hash.to_string(), n));
        self.write_file_row(path, &row, &doing)?;
        // 2. The chunks, under ids derived from (path, hash, position): written twice, they
        //    overwrite.
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let batch: Vec<Value> = rows.by_ref().take(UPSERT_BATCH).collect();
            self.conn.upsert(&a.collection, batch, &doing)?;
        }
        // 3. Every other version's chunks, by id (a delete by filter scans the collection).
        let keep: std::collections::HashSet<u64> =
            (0..n).map(|o| chunk_id(path, content_hash, o)).collect();
        let stale: Vec<i64> = row
            .versions()
            .flat_map(|(h, k)| (0..k).map(move |o| chunk_id(path, h, o)))
            .filter(|id| !keep.contains(id))
            .map(|id| id as i64)
            .collect();
        if !stale.is_empty() {
            self.conn
                .delete_ids(&a.collection, Keys::Chunks(stale), &doing)?;
        }
        // 4. The document's commit.
        let done = FileRow {
            hash: content_hash.to_string(),
            chunks: n,
            pending: Vec::new(),
        };
        self.write_file_row(path, &done, &doing)?;
        Ok(())
    }

    fn remove_document(&mut self, path: &str) -> Result<(), IndexError> {
        let doing = format!("removing {path}");
        let a = self.conn.address.clone();
        let Some(row) = self.files.get(path).cloned() else {
            return Ok(());
        };
        let ids: Vec<i64> = row
            .versions()
            .flat_map(|(h, k)| (0..k).map(move |o| chunk_id(path, h, o) as i64))
            .collect();
        if !ids.is_empty() {
            self.conn
                .delete_ids(&a.collection, Keys::Chunks(ids), &doing)?;
        }
        self.conn
            .delete_ids(&a.files(), Keys::Paths(vec![path.to_string()]), &doing)?;
        self.files.remove(path);
        Ok(())
    }

    /// Flush both collections (one segment each for a copy, rather than rows Milvus Lite
    /// re-indexes for every search).
    fn seal(&mut self) -> Result<(), IndexError> {
        let a = &self.conn.address;
        let req = FlushRequest::builder()
            .collection_names([a.collection.clone(), a.files()])
            .build()
            .map_err(|e| self.conn.err("flushing", e))?;
        let client = self.conn.client.clone();
        block(async move { client.flush(req).await.map(|_| ()) })
            .map_err(|e| self.conn.err(format!("flushing {}", a.collection), e))
    }

    /// Each write is already applied (and in Milvus's log) when it returns, so a commit only
    /// counts what the collections hold now. It does not `flush`: sealing segments after every
    /// few files would leave Milvus many small ones.
    fn commit(&mut self) -> Result<(), IndexError> {
        let files = self
            .conn
            .count(&self.conn.address.files(), "content_hash != \"\"")?;
        self.manifest = self
            .conn
            .manifest(Some(self.embedder_id.clone()), &self.layout, files)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = Address::parse("milvus://localhost", None).unwrap();
        assert_eq!(a.endpoint, "http://localhost:19530");
        assert_eq!(a.collection, DEFAULT_COLLECTION);
        assert_eq!(a.to_string(), "milvus://localhost:19530/rag");
        let z = Address::parse("https://x.cloud.zilliz.com/docs_v2", Some("k".into())).unwrap();
        assert_eq!(z.endpoint, "https://x.cloud.zilliz.com");
        assert_eq!(z.collection, "docs_v2");
        assert_eq!(z.to_string(), "https://x.cloud.zilliz.com/docs_v2");
        assert!(
            !format!("{z:?}").contains("\"k\""),
            "the token is not shown"
        );
        for bad in [
            "milvus://",
            "ftp://x",
            "milvus://h:1/9lives",
            "milvus://h/a-b",
        ] {
            let e = Address::parse(bad, None).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = chunk_id("/d/a.txt", "h1", 0);
        assert_eq!(a, chunk_id("/d/a.txt", "h1", 0));
        assert_ne!(a, chunk_id("/d/a.txt", "h1", 1));
        assert_ne!(a, chunk_id("/d/a.txt", "h2", 0));
        assert_ne!(a, chunk_id("/d/a.tx", "th1", 0));
        assert!(a < 1 << 53);
    }

    #[test]
    fn filter_expressions() {
        assert_eq!(expression(&Filter::default()), "");
        assert_eq!(
            expression(&Filter::path_prefix("/a \"b\"/50%_x")),
            r#"path like "/a \"b\"/50\\%\\_x%""#
        );
        assert_eq!(
            expression(&Filter::path_prefix("/d/").with_file_types(["PDF", ".md"])),
            r#"path like "/d/%" and (path like "%.pdf" or path like "%.PDF" or path like "%.md" or path like "%.MD")"#
        );
        assert_eq!(
            expression(&Filter::default().with_file_types(["7z"])),
            r#"(path like "%.7z" or path like "%.7Z")"#
        );
        let dated = Filter {
            modified_after: Some(100),
            modified_before: Some(200),
            ..Filter::default()
        };
        assert_eq!(expression(&dated), "modified >= 100 and modified < 200");
        let before = Filter {
            modified_before: Some(200),
            ..Filter::default()
        };
        assert_eq!(expression(&before), "modified >= 1 and modified < 200");
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(search_text("T", "T", "T\n\nbody"), "T\n\nbody");
        assert_eq!(search_text("T", "T > S", "body"), "T\nT > S\nbody");
        assert_eq!(search_text("", "", "body"), "body");
    }
}
