//! `vectors.f32`: raw little-endian f32 rows, one per chunk id (row = chunk id), append-only.
//!
//! Rows are written as chunks are staged and fsynced before the tantivy commit that makes them
//! reachable, so every committed chunk has its row on disk. Rows past the committed
//! `vectors_rows` belong to a commit that never happened: readers ignore them and the next
//! writer truncates them. Rows of deleted chunks stay in the file, unreachable (compaction is
//! future work: `rag ingest --reindex` rebuilds).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{corrupt, IndexError, IoResultExt};

pub(crate) const VECTORS_FILE: &str = "vectors.f32";

/// Dot product written so that the compiler vectorises it (8 independent accumulators).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Check the dimension and return an L2-normalised copy.
pub(crate) fn normalised(v: &[f32], dim: usize, what: &str) -> Result<Vec<f32>, IndexError> {
    if v.len() != dim {
        return Err(IndexError::DimensionMismatch {
            expected: dim,
            found: v.len(),
        });
    }
    let norm = dot(v, v).sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(IndexError::InvalidVector {
            what: what.to_string(),
        });
    }
    Ok(v.iter().map(|x| x / norm).collect())
}

/// The writer's handle: appends rows after the committed ones.
pub(crate) struct VectorAppender {
    path: PathBuf,
    out: BufWriter<File>,
    dim: usize,
    rows: u64,
}

impl VectorAppender {
    /// Open (or create) the file, refusing one shorter than the committed rows and cutting off
    /// rows that no commit made reachable.
    pub(crate) fn open(dir: &Path, dim: usize, committed_rows: u64) -> Result<Self, IndexError> {
        let path = dir.join(VECTORS_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .at(&path)?;
        let len = file.metadata().at(&path)?.len();
        let want = committed_rows * row_bytes(dim);
        if len < want {
            return Err(corrupt(
                dir,
                format!(
                    "{VECTORS_FILE} holds {len} bytes but the last commit needs {committed_rows} \
                     rows of dim {dim} ({want} bytes)"
                ),
            ));
        }
        if len > want {
            file.set_len(want).at(&path)?;
            file.sync_all().at(&path)?;
        }
        file.seek(SeekFrom::Start(want)).at(&path)?;
        Ok(VectorAppender {
            path,
            out: BufWriter::with_capacity(1 << 20, file),
            dim,
            rows: committed_rows,
        })
    }

    /// Append one (already normalised) row; returns its row number.
    pub(crate) fn push(&mut self, v: &[f32]) -> Result<u64, IndexError> {
        debug_assert_eq!(v.len(), self.dim);
        for x in v {
            self.out.write_all(&x.to_le_bytes()).at(&self.path)?;
        }
        self.rows += 1;
        Ok(self.rows - 1)
    }

    /// Rows written so far (committed and staged): the next chunk id.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Make every staged row durable.
    pub(crate) fn sync(&mut self) -> Result<(), IndexError> {
        self.out.flush().at(&self.path)?;
        self.out.get_ref().sync_data().at(&self.path)
    }
}

pub(crate) fn row_bytes(dim: usize) -> u64 {
    dim as u64 * 4
}

/// Check that `vectors.f32` holds at least `rows` rows.
pub(crate) fn check_rows(dir: &Path, dim: usize, rows: u64) -> Result<(), IndexError> {
    let path = dir.join(VECTORS_FILE);
    let len = std::fs::metadata(&path).at(&path)?.len();
    if len < rows * row_bytes(dim) {
        return Err(corrupt(
            dir,
            format!(
                "{VECTORS_FILE} holds {len} bytes but the last commit needs {rows} rows of dim {dim}"
            ),
        ));
    }
    Ok(())
}

/// Read rows `from..to`, handing `sink` each row for which `keep(row)` is true.
pub(crate) fn read_rows(
    dir: &Path,
    dim: usize,
    from: u64,
    to: u64,
    mut keep: impl FnMut(u64) -> bool,
    mut sink: impl FnMut(u64, &[f32]),
) -> Result<(), IndexError> {
    if from >= to {
        return Ok(());
    }
    check_rows(dir, dim, to)?;
    let path = dir.join(VECTORS_FILE);
    let mut file = File::open(&path).at(&path)?;
    file.seek(SeekFrom::Start(from * row_bytes(dim)))
        .at(&path)?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut bytes = vec![0u8; dim * 4];
    let mut row = vec![0f32; dim];
    for id in from..to {
        r.read_exact(&mut bytes).at(&path)?;
        if !keep(id) {
            continue;
        }
        for (x, b) in row.iter_mut().zip(bytes.chunks_exact(4)) {
            *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        sink(id, &row);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-5);
    }

    #[test]
    fn normalise_checks() {
        let v = normalised(&[3.0, 4.0], 2, "v").unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert!(matches!(
            normalised(&[1.0], 2, "v"),
            Err(IndexError::DimensionMismatch {
                expected: 2,
                found: 1
            })
        ));
        assert!(matches!(
            normalised(&[0.0, 0.0], 2, "v"),
            Err(IndexError::InvalidVector { .. })
        ));
        assert!(matches!(
            normalised(&[f32::NAN, 1.0], 2, "v"),
            Err(IndexError::InvalidVector { .. })
        ));
    }
}
