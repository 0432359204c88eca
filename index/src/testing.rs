//! Simulated crashes for the unit tests: a commit step can be told to fail as if the process
//! died right after it.

use std::cell::Cell;
use std::path::PathBuf;

use crate::IndexError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CrashPoint {
    /// Vector rows synced, tantivy not committed.
    VectorsSynced,
    /// tantivy commit prepared (payload set), not committed.
    Prepared,
    /// tantivy committed, `manifest.json` not written.
    TantivyCommitted,
    /// `manifest.json.tmp` written and synced, not renamed.
    ManifestTmpWritten,
}

thread_local! {
    static CRASH_AT: Cell<Option<CrashPoint>> = const { Cell::new(None) };
}

/// Make the next pass through `point` on this thread fail.
pub(crate) fn crash_at(point: CrashPoint) {
    CRASH_AT.with(|c| c.set(Some(point)));
}

pub(crate) fn crash_point(point: CrashPoint) -> Result<(), IndexError> {
    CRASH_AT.with(|c| {
        if c.get() == Some(point) {
            c.set(None);
            Err(IndexError::Corrupt {
                dir: PathBuf::from("<simulated>"),
                detail: format!("simulated crash at {point:?}"),
            })
        } else {
            Ok(())
        }
    })
}
