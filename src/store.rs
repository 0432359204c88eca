//! Where an index lives: a directory (the embedded store) or a Milvus / Zilliz Cloud collection.
//! The rest of the library sees only [`rag_index::Store`] and [`rag_index::StoreWriter`].
use std::fmt;
use std::path::{Path, PathBuf};

use rag_index::{Index, IndexError, IndexWriter, Store, StoreWriter};

use crate::error::{Error, Result};

/// An index's place.
///
/// ```
/// let here = rag::Location::parse(".rag", None).unwrap();
/// assert_eq!(here, rag::Location::Dir(".rag".into()));
/// # #[cfg(feature = "milvus")]
/// assert!(matches!(
///     rag::Location::parse("milvus://127.0.0.1:19530/notes", None).unwrap(),
///     rag::Location::Milvus(_)
/// ));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// The embedded store (tantivy + hnsw_rs) in this directory.
    Dir(PathBuf),
    /// A Milvus or Zilliz Cloud collection (cargo feature `milvus`).
    #[cfg(feature = "milvus")]
    Milvus(rag_index::milvus::Address),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Dir(d) => write!(f, "{}", d.display()),
            #[cfg(feature = "milvus")]
            Location::Milvus(a) => write!(f, "{a}"),
        }
    }
}

impl Location {
    /// `milvus://host:port[/collection]`, `https://...` (Zilliz Cloud; `token` is its API key)
    /// or `http://...` name a Milvus collection; anything else is a directory.
    pub fn parse(s: &str, token: Option<String>) -> Result<Self> {
        if !rag_index::is_remote(s) {
            return Ok(Location::Dir(PathBuf::from(s)));
        }
        #[cfg(feature = "milvus")]
        {
            Ok(Location::Milvus(rag_index::milvus::Address::parse(
                s, token,
            )?))
        }
        #[cfg(not(feature = "milvus"))]
        {
            let _ = token;
            Err(Error::Index(IndexError::BadAddress {
                address: s.to_string(),
                reason: "this rag was built without the `milvus` feature".into(),
            }))
        }
    }

    /// The directory of an embedded store; for a remote one, its address as a path (what
    /// messages and [`crate::IndexInfo::dir`] show).
    pub fn as_path(&self) -> PathBuf {
        match self {
            Location::Dir(d) => d.clone(),
            #[cfg(feature = "milvus")]
            Location::Milvus(a) => PathBuf::from(a.to_string()),
        }
    }

    /// Open the last commit for reading.
    pub fn open(&self) -> Result<Box<dyn Store>, IndexError> {
        Ok(match self {
            Location::Dir(d) => Box::new(Index::open(d)?),
            #[cfg(feature = "milvus")]
            Location::Milvus(a) => Box::new(rag_index::milvus::MilvusStore::open(a)?),
        })
    }

    /// Open the writer (one per directory; any number per Milvus collection), creating the
    /// index if needed; `reindex` wipes it first.
    pub fn writer(
        &self,
        embedder_id: &str,
        dim: usize,
        reindex: bool,
    ) -> Result<Box<dyn StoreWriter>, IndexError> {
        Ok(match self {
            Location::Dir(d) => Box::new(IndexWriter::open(d, embedder_id, dim, reindex)?),
            #[cfg(feature = "milvus")]
            Location::Milvus(a) => Box::new(rag_index::milvus::MilvusWriter::open(
                a,
                embedder_id,
                dim,
                reindex,
            )?),
        })
    }

    /// The embedder id the index was built with, if there is an index.
    pub(crate) fn embedder_id(&self) -> Option<String> {
        match self {
            Location::Dir(d) => dir_embedder_id(d),
            #[cfg(feature = "milvus")]
            Location::Milvus(_) => self
                .open()
                .ok()
                .map(|s| s.manifest().embedder_id.clone())
                .filter(|id| !id.is_empty()),
        }
    }
}

/// The embedder id recorded in `dir/manifest.json`, if there is an index there.
fn dir_embedder_id(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("manifest.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["embedder"]["id"].as_str().map(str::to_string)
}

impl From<&Path> for Location {
    fn from(d: &Path) -> Self {
        Location::Dir(d.to_path_buf())
    }
}

/// Copy every document of the index at `from` into `to` with its stored vectors, without
/// embedding again (see [`rag_index::copy`]): migrate an embedded index into Milvus, or back.
/// Documents `to` already holds with the same content hash are skipped, so a run cut short is
/// finished by running it again. `to` is created with `from`'s embedder when it does not exist.
///
/// ```no_run
/// # #[cfg(feature = "milvus")] {
/// let from = rag::Location::parse(".rag", None)?;
/// let to = rag::Location::parse("milvus://127.0.0.1:19530/notes", None)?;
/// let report = rag::copy_index(&from, &to, &mut |path, chunks| eprintln!("{chunks:>4} {path}"))?;
/// println!("{} documents copied", report.copied);
/// # }
/// # Ok::<(), rag::Error>(())
/// ```
pub fn copy_index(
    from: &Location,
    to: &Location,
    on_document: &mut dyn FnMut(&str, usize),
) -> Result<rag_index::CopyReport> {
    if from == to {
        return Err(Error::InvalidOption(format!(
            "cannot copy {from} into itself"
        )));
    }
    let src = from.open()?;
    let m = src.manifest();
    let mut dst = to.writer(&m.embedder_id, m.dim, false)?;
    Ok(rag_index::copy(
        src.as_ref(),
        dst.as_mut(),
        64,
        on_document,
    )?)
}
