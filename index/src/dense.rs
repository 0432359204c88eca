//! The vector side: an HNSW graph (hnsw_rs) over the live vectors of a snapshot, with exact
//! brute-force search over the same points.
//!
//! The graph is derived data. Building it is slow (about 2 ms per 576-d vector on one busy
//! core), so it is persisted: after a commit the writer inserts the new rows into its graph and
//! dumps it (hnsw_rs's own format) into a fresh `hnsw-*` directory, then points `hnsw.current`
//! at it (atomic replace). A reader loads the dump named there if it belongs to the same store
//! (`store_id`) and dimension, then catches up on its own: rows committed after the dump are
//! inserted, chunks deleted since are masked (left in the graph for navigation, dropped from
//! results). Without a usable dump, or when masked nodes outnumber live ones, the graph is
//! built from `vectors.f32`. Nothing here can make a search return a deleted chunk: liveness
//! always comes from the snapshot's catalog.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use hnsw_rs::prelude::{AnnT, Distance, Hnsw, HnswIo};
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::error::{IndexError, IoResultExt};
use crate::manifest::{sync_dir, write_atomic, Manifest};
use crate::vectors::{dot, read_rows};

/// Neighbours kept per node and layer (hnsw_rs `max_nb_connection`; layer 0 keeps twice as
/// many). 16 is the usual default; 24 and 32 gave the same recall on our tests, at more
/// memory.
pub const HNSW_M: usize = 16;
/// Candidate list size while building. 200 is the common high-recall setting.
pub const HNSW_EF_CONSTRUCTION: usize = 200;
/// Smallest candidate list size while searching; the effective value is `max(128, 4k)`,
/// scaled by `nodes / live nodes` when the graph holds deleted chunks. 64 gave recall@10 of
/// 0.95 on clustered 64-d test data, 128 gave 0.99.
pub const HNSW_EF_SEARCH_MIN: usize = 128;
/// hnsw_rs dumps only graphs made with its maximum number of layers.
const HNSW_MAX_LAYER: usize = 16;

/// `hnsw.current`: names the directory of the current graph dump.
pub(crate) const HNSW_POINTER: &str = "hnsw.current";
const DUMP_PREFIX: &str = "hnsw-";
const DUMP_BASENAME: &str = "graph";
const DUMP_META: &str = "meta.json";
const DUMP_IDS: &str = "ids.u64";

/// Cosine distance on unit vectors: `1 - a·b`, clamped at 0.
///
/// hnsw_rs's own `DistDot` asserts `a·b <= 1`, which rounding breaks for near-identical unit
/// vectors; clamping keeps the distance non-negative as its search requires.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UnitDot;

impl Distance<f32> for UnitDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

#[derive(Serialize, Deserialize)]
struct DumpMeta {
    store_id: String,
    dim: usize,
    /// Rows of `vectors.f32` the graph has looked at.
    rows_loaded: u64,
    /// Nodes in the graph (= entries of `ids.u64`).
    slots: usize,
    generation: u64,
    m: usize,
    ef_construction: usize,
    /// Sizes of `graph.hnsw.graph` and `graph.hnsw.data`: a torn or foreign file is refused
    /// before hnsw_rs (which panics on bad input) reads it.
    graph_bytes: u64,
    data_bytes: u64,
}

pub(crate) struct DenseIndex {
    dim: usize,
    store_id: String,
    /// Rows of `vectors.f32` already looked at.
    rows_loaded: u64,
    /// Chunk id of each node (HNSW data id = slot), ascending.
    ids: Vec<u64>,
    /// Whether each node's chunk is live in the current snapshot.
    live: Vec<bool>,
    n_live: usize,
    hnsw: Hnsw<'static, f32, UnitDot>,
}

impl DenseIndex {
    /// The graph for `manifest`'s snapshot: from the current dump if usable, else built.
    pub(crate) fn open(
        dir: &Path,
        manifest: &Manifest,
        catalog: &Catalog,
    ) -> Result<Self, IndexError> {
        match DenseIndex::load_dump(dir, manifest) {
            Some(mut d) => {
                d.refresh(dir, manifest, catalog)?;
                Ok(d)
            }
            None => DenseIndex::build(dir, manifest, catalog),
        }
    }

    /// Build the graph from the live rows of `vectors.f32`.
    pub(crate) fn build(
        dir: &Path,
        manifest: &Manifest,
        catalog: &Catalog,
    ) -> Result<Self, IndexError> {
        let mut me = DenseIndex::empty(manifest, catalog.chunks());
        me.append(dir, manifest.vectors_rows, catalog)?;
        Ok(me)
    }

    fn empty(manifest: &Manifest, expected: usize) -> Self {
        DenseIndex {
            dim: manifest.dim,
            store_id: manifest.store_id.clone(),
            rows_loaded: 0,
            ids: Vec::with_capacity(expected),
            live: Vec::with_capacity(expected),
            n_live: 0,
            hnsw: Hnsw::new(
                HNSW_M,
                expected.max(1024),
                HNSW_MAX_LAYER,
                HNSW_EF_CONSTRUCTION,
                UnitDot,
            ),
        }
    }

    /// Follow a new snapshot: insert its new rows, mask deleted ones; rebuild (from the dump
    /// if it fits, else from scratch) when the store was recreated or most nodes are masked.
    pub(crate) fn refresh(
        &mut self,
        dir: &Path,
        manifest: &Manifest,
        catalog: &Catalog,
    ) -> Result<(), IndexError> {
        if manifest.store_id == self.store_id && manifest.dim == self.dim {
            self.mask(catalog);
            if self.ids.len() - self.n_live <= self.n_live + 1024 {
                return self.append(dir, manifest.vectors_rows, catalog);
            }
        }
        if let Some(mut d) = DenseIndex::load_dump(dir, manifest) {
            d.mask(catalog);
            if d.ids.len() - d.n_live <= d.n_live + 1024 {
                d.append(dir, manifest.vectors_rows, catalog)?;
                *self = d;
                return Ok(());
            }
        }
        *self = DenseIndex::build(dir, manifest, catalog)?;
        Ok(())
    }

    fn mask(&mut self, catalog: &Catalog) {
        for (slot, id) in self.ids.iter().enumerate() {
            self.live[slot] = catalog.addr.contains_key(id);
        }
        self.n_live = self.live.iter().filter(|&&l| l).count();
    }

    /// Read rows `rows_loaded..to`, insert the live ones into the graph.
    fn append(&mut self, dir: &Path, to: u64, catalog: &Catalog) -> Result<(), IndexError> {
        if to <= self.rows_loaded {
            return Ok(());
        }
        let (ids, live, hnsw) = (&mut self.ids, &mut self.live, &self.hnsw);
        read_rows(
            dir,
            self.dim,
            self.rows_loaded,
            to,
            |row| catalog.addr.contains_key(&row),
            |row, v| {
                hnsw.insert_slice((v, ids.len()));
                ids.push(row);
                live.push(true);
                self.n_live += 1;
            },
        )?;
        self.rows_loaded = to;
        Ok(())
    }

    pub(crate) fn live_count(&self) -> usize {
        self.n_live
    }

    /// Approximate nearest live chunks: `(chunk_id, cosine)`, best first.
    ///
    /// Masked nodes are over-fetched in proportion and dropped; the search widens until it has
    /// `k` live results (or has looked at the whole graph).
    pub(crate) fn search_hnsw(&self, q: &[f32], k: usize) -> Vec<(u64, f32)> {
        let want = k.min(self.n_live);
        if want == 0 {
            return Vec::new();
        }
        let total = self.ids.len();
        let masked = total - self.n_live;
        let scale = |x: usize| x.saturating_mul(total).div_ceil(self.n_live);
        let mut fetch = (scale(k) + if masked > 0 { 8 } else { 0 }).min(total);
        let mut ef = scale(HNSW_EF_SEARCH_MIN.max(k.saturating_mul(4))).clamp(fetch, total);
        loop {
            let found = self.hnsw.search(q, fetch, ef);
            let mut out: Vec<(u64, f32)> = found
                .iter()
                .filter(|n| self.live[n.d_id])
                .map(|n| (self.ids[n.d_id], 1.0 - n.distance))
                .collect();
            if out.len() >= want || (fetch >= total && ef >= total) {
                sort_hits(&mut out);
                out.truncate(k);
                return out;
            }
            fetch = (fetch * 2).min(total);
            ef = (ef * 2).min(total).max(fetch);
        }
    }

    /// Exact nearest live chunks by brute force: `(chunk_id, cosine)`, best first.
    pub(crate) fn search_exact(&self, q: &[f32], k: usize) -> Vec<(u64, f32)> {
        self.search_exact_where(q, k, |_| true)
    }

    /// [`DenseIndex::search_exact`] over the live chunks for which `keep(chunk_id)` holds.
    pub(crate) fn search_exact_where(
        &self,
        q: &[f32],
        k: usize,
        keep: impl Fn(u64) -> bool,
    ) -> Vec<(u64, f32)> {
        if k == 0 || self.n_live == 0 {
            return Vec::new();
        }
        let mut all: Vec<(u64, f32)> = Vec::with_capacity(self.n_live);
        for p in self.hnsw.get_point_indexation() {
            let slot = p.get_origin_id();
            if self.live[slot] && keep(self.ids[slot]) {
                all.push((self.ids[slot], dot(q, p.get_v())));
            }
        }
        if all.len() > k {
            all.select_nth_unstable_by(k - 1, cmp_hits);
            all.truncate(k);
        }
        sort_hits(&mut all);
        all
    }

    /// Persist the graph for readers (see the module docs). Keeps the previous dump, which a
    /// reader may be loading, and removes older ones.
    pub(crate) fn dump(&self, dir: &Path, generation: u64) -> Result<(), IndexError> {
        let name = format!(
            "{DUMP_PREFIX}{}-{generation}-{}",
            self.store_id, self.rows_loaded
        );
        let tmp = dir.join(format!("{name}.tmp"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).at(&tmp)?;
        }
        fs::create_dir(&tmp).at(&tmp)?;
        let dumped = catch_unwind(AssertUnwindSafe(|| {
            self.hnsw.file_dump(&tmp, DUMP_BASENAME)
        }));
        match dumped {
            Ok(Ok(base)) if base == DUMP_BASENAME => {}
            _ => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(IndexError::Io {
                    path: tmp,
                    source: std::io::Error::other("hnsw_rs could not dump the graph"),
                });
            }
        }
        let size = |suffix: &str| {
            let p = tmp.join(format!("{DUMP_BASENAME}{suffix}"));
            fs::metadata(&p).map(|m| m.len()).at(&p)
        };
        let meta = DumpMeta {
            store_id: self.store_id.clone(),
            dim: self.dim,
            rows_loaded: self.rows_loaded,
            slots: self.ids.len(),
            generation,
            m: HNSW_M,
            ef_construction: HNSW_EF_CONSTRUCTION,
            graph_bytes: size(".hnsw.graph")?,
            data_bytes: size(".hnsw.data")?,
        };
        let mut ids = Vec::with_capacity(self.ids.len() * 8);
        for id in &self.ids {
            ids.extend_from_slice(&id.to_le_bytes());
        }
        write_file(&tmp.join(DUMP_IDS), &ids)?;
        write_file(
            &tmp.join(DUMP_META),
            &serde_json::to_vec(&meta).expect("dump meta serialises"),
        )?;
        for f in [".hnsw.graph", ".hnsw.data"] {
            let p = tmp.join(format!("{DUMP_BASENAME}{f}"));
            File::open(&p).and_then(|f| f.sync_all()).at(&p)?;
        }
        sync_dir(&tmp)?;
        let target = dir.join(&name);
        if target.exists() {
            fs::remove_dir_all(&target).at(&target)?;
        }
        fs::rename(&tmp, &target).at(&target)?;
        sync_dir(dir)?;
        let previous = fs::read_to_string(dir.join(HNSW_POINTER)).unwrap_or_default();
        write_atomic(dir, HNSW_POINTER, name.as_bytes())?;
        // Best effort: drop dumps other than the new and the previous one.
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with(DUMP_PREFIX) && n != name && n != previous.trim() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(())
    }

    /// The dump named by `hnsw.current`, if it exists, is intact and belongs to this store.
    fn load_dump(dir: &Path, manifest: &Manifest) -> Option<Self> {
        let name = fs::read_to_string(dir.join(HNSW_POINTER)).ok()?;
        let name = name.trim();
        if !name.starts_with(DUMP_PREFIX) || name.contains(['/', '\\']) || name.contains("..") {
            return None;
        }
        let path = dir.join(name);
        let meta: DumpMeta = serde_json::from_slice(&fs::read(path.join(DUMP_META)).ok()?).ok()?;
        if meta.store_id != manifest.store_id || meta.dim != manifest.dim {
            return None;
        }
        let mut raw = Vec::new();
        File::open(path.join(DUMP_IDS))
            .ok()?
            .read_to_end(&mut raw)
            .ok()?;
        if raw.len() != meta.slots * 8 {
            return None;
        }
        let ids: Vec<u64> = raw
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        let ascending = ids.windows(2).all(|w| w[0] < w[1]);
        if !ascending || ids.last().is_some_and(|&l| l >= meta.rows_loaded) {
            return None;
        }
        // hnsw_rs prints to stdout when a file is missing and panics on a short one: look first.
        for (f, want) in [
            (".hnsw.graph", meta.graph_bytes),
            (".hnsw.data", meta.data_bytes),
        ] {
            match fs::metadata(path.join(format!("{DUMP_BASENAME}{f}"))) {
                Ok(m) if m.is_file() && m.len() == want => {}
                _ => return None,
            }
        }
        // The loaded graph borrows its loader; a loader is a few hundred bytes, kept for the
        // life of the process so that the graph can be 'static.
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(&path, DUMP_BASENAME)));
        let loaded = catch_unwind(AssertUnwindSafe(move || {
            let io = io;
            io.load_hnsw::<f32, UnitDot>()
        }));
        let mut hnsw = match loaded {
            Ok(Ok(h)) => h,
            _ => return None,
        };
        if hnsw.get_nb_point() != ids.len()
            || (!ids.is_empty() && hnsw.get_point_indexation().get_data_dimension() != meta.dim)
        {
            return None;
        }
        // As when building: no candidate extension for the points inserted later.
        hnsw.set_extend_candidates(false);
        let n = ids.len();
        Some(DenseIndex {
            dim: meta.dim,
            store_id: meta.store_id,
            rows_loaded: meta.rows_loaded,
            ids,
            live: vec![true; n],
            n_live: n,
            hnsw,
        })
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), IndexError> {
    let mut f = File::create(path).at(path)?;
    f.write_all(bytes).at(path)?;
    f.sync_all().at(path)
}

/// Best score first, ties by chunk id.
fn cmp_hits(a: &(u64, f32), b: &(u64, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

pub(crate) fn sort_hits(v: &mut [(u64, f32)]) {
    v.sort_unstable_by(cmp_hits);
}
