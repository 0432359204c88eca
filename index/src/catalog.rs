//! What a tantivy snapshot contains, read from fast fields: the live chunk ids (and where their
//! documents are) and every document's content hash and chunk count.
//!
//! The catalog is the "live set" of the vector side: a vector row is reachable only if its
//! chunk id is in the catalog of the snapshot being searched.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::Path;

use tantivy::{DocAddress, Searcher};

use crate::error::{corrupt, IndexError};
use crate::schema::{F_CHUNK_ID, F_CONTENT_HASH, F_MODIFIED, F_PATH};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DocEntry {
    pub hash: String,
    pub chunks: usize,
    /// The file's modification time (Unix seconds), if recorded.
    pub modified: Option<i64>,
}

#[derive(Default)]
pub(crate) struct Catalog {
    /// path -> content hash and number of live chunks.
    pub docs: HashMap<String, DocEntry>,
    /// live chunk id -> its tantivy document.
    pub addr: HashMap<u64, DocAddress>,
    /// live chunk id -> index of its document's path in `paths` (for filters).
    pub chunk_path: HashMap<u64, u32>,
    /// Paths of the documents, in the order first seen.
    pub paths: Vec<String>,
}

impl Catalog {
    /// Scan every live document of `searcher`.
    pub(crate) fn scan(dir: &Path, searcher: &Searcher) -> Result<Self, IndexError> {
        let mut cat = Catalog::default();
        let mut path_buf = String::new();
        let mut hash_buf = String::new();
        let mut slots: HashMap<String, u32> = HashMap::new();
        let mut path_slot = 0u32;
        for (seg_ord, seg) in searcher.segment_readers().iter().enumerate() {
            if seg.num_docs() == 0 {
                continue;
            }
            let ff = seg.fast_fields();
            let ids = ff.column_opt::<u64>(F_CHUNK_ID)?;
            // Absent from indexes made before rag recorded it.
            let modified = ff.column_opt::<i64>(F_MODIFIED).ok().flatten();
            let paths = ff
                .str(F_PATH)?
                .ok_or_else(|| corrupt(dir, "segment without a `path` column"))?;
            let hashes = ff
                .str(F_CONTENT_HASH)?
                .ok_or_else(|| corrupt(dir, "segment without a `content_hash` column"))?;
            // Many chunks share a path: remember the last ordinal looked up.
            let mut last_path_ord = None;
            let mut last_hash_ord = None;
            for doc in seg.doc_ids_alive() {
                let path_ord = paths
                    .ords()
                    .first(doc)
                    .ok_or_else(|| corrupt(dir, "document without a path"))?;
                let new_path = last_path_ord != Some(path_ord);
                if new_path {
                    paths
                        .ord_to_str(path_ord, &mut path_buf)
                        .map_err(|e| corrupt(dir, format!("path dictionary: {e}")))?;
                    last_path_ord = Some(path_ord);
                }
                let hash_ord = hashes
                    .ords()
                    .first(doc)
                    .ok_or_else(|| corrupt(dir, "document without a content hash"))?;
                if last_hash_ord != Some(hash_ord) {
                    hashes
                        .ord_to_str(hash_ord, &mut hash_buf)
                        .map_err(|e| corrupt(dir, format!("hash dictionary: {e}")))?;
                    last_hash_ord = Some(hash_ord);
                }
                let chunk_id = ids.as_ref().and_then(|c| c.first(doc));
                let time = modified.as_ref().and_then(|c| c.first(doc));
                if new_path {
                    // (Re)entering a path: find or add its slot.
                    path_slot = match slots.get(&path_buf) {
                        Some(&s) => s,
                        None => {
                            let s = cat.paths.len() as u32;
                            cat.paths.push(path_buf.clone());
                            slots.insert(path_buf.clone(), s);
                            s
                        }
                    };
                }
                match cat.docs.entry(path_buf.clone()) {
                    Entry::Occupied(mut e) => {
                        if e.get().hash != hash_buf {
                            return Err(corrupt(
                                dir,
                                format!("document {path_buf} is live with two content hashes"),
                            ));
                        }
                        let entry = e.get_mut();
                        entry.chunks += usize::from(chunk_id.is_some());
                        entry.modified = entry.modified.or(time);
                    }
                    Entry::Vacant(e) => {
                        e.insert(DocEntry {
                            hash: hash_buf.clone(),
                            chunks: usize::from(chunk_id.is_some()),
                            modified: time,
                        });
                    }
                }
                if let Some(id) = chunk_id {
                    cat.chunk_path.insert(id, path_slot);
                    let addr = DocAddress::new(seg_ord as u32, doc);
                    if cat.addr.insert(id, addr).is_some() {
                        return Err(corrupt(dir, format!("chunk id {id} is live twice")));
                    }
                }
            }
        }
        Ok(cat)
    }

    /// The modification time of the document at `path`, if recorded.
    pub(crate) fn modified(&self, path: &str) -> Option<i64> {
        self.docs.get(path).and_then(|d| d.modified)
    }

    pub(crate) fn chunks(&self) -> usize {
        self.addr.len()
    }

    pub(crate) fn documents_map(&self) -> HashMap<String, String> {
        self.docs
            .iter()
            .map(|(p, e)| (p.clone(), e.hash.clone()))
            .collect()
    }
}
