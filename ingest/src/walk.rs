//! Finding the files to ingest. Owns the policy of what is looked at (ignore files, hidden files,
//! symbolic links, size limit, supported extensions) and reports every file it will not ingest, with
//! the reason; it reads no file contents (it only opens each file once to check it is readable).

use crate::document::{doc_kind, DocKind};
use std::path::{Path, PathBuf};

/// What [`walk`] looks at.
///
/// ```
/// let opts = rag_ingest::WalkOptions { include_hidden: true, ..Default::default() };
/// assert!(opts.respect_ignore_files);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalkOptions {
    /// Include hidden files and folders (names starting with `.`). Default `false`: they are usually
    /// tool state (`.git`, `.venv`), not documents.
    pub include_hidden: bool,
    /// Honour `.gitignore`, `.ignore` and `.git/info/exclude` files, also outside git repositories.
    /// Default `true`: what a project ignores is rarely worth indexing. The user's global git
    /// excludes file is not read, so a walk gives the same answer on every machine.
    pub respect_ignore_files: bool,
    /// Follow symbolic links. Default `true`; loops are detected and reported as
    /// [`WalkEntry::Failed`].
    pub follow_links: bool,
    /// Files larger than this are [`WalkEntry::Skipped`]. Default 64 MiB: far beyond any document
    /// worth reading whole, small enough to load in memory.
    pub max_file_bytes: u64,
}

impl Default for WalkOptions {
    fn default() -> Self {
        WalkOptions {
            include_hidden: false,
            respect_ignore_files: true,
            follow_links: true,
            max_file_bytes: 64 << 20,
        }
    }
}

/// One path met by [`walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkEntry {
    /// A file to load.
    File {
        /// The file, as reached from its root.
        path: PathBuf,
        /// Its kind by extension.
        kind: DocKind,
        /// Its size in bytes.
        size: u64,
    },
    /// A file deliberately left out (unsupported extension, too large, not a regular file).
    Skipped {
        /// The file.
        path: PathBuf,
        /// Why, e.g. `"unsupported extension .xyz"`.
        reason: String,
    },
    /// A path that could not be examined (permission denied, symbolic-link loop, broken link, ...).
    Failed {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl WalkEntry {
    /// The path the entry is about.
    pub fn path(&self) -> &Path {
        match self {
            WalkEntry::File { path, .. }
            | WalkEntry::Skipped { path, .. }
            | WalkEntry::Failed { path, .. } => path,
        }
    }
}

/// Walks files and folders (a root may be a single file) and returns every file found, skipped or
/// failed, sorted by path, each path once. Folders themselves are not listed.
pub fn walk(roots: &[PathBuf], opts: &WalkOptions) -> Vec<WalkEntry> {
    let Some((first, rest)) = roots.split_first() else {
        return Vec::new();
    };
    let mut builder = ignore::WalkBuilder::new(first);
    for root in rest {
        builder.add(root);
    }
    let respect = opts.respect_ignore_files;
    builder
        .hidden(!opts.include_hidden)
        .parents(respect)
        .ignore(respect)
        .git_ignore(respect)
        .git_exclude(respect)
        .git_global(false)
        .require_git(false)
        .follow_links(opts.follow_links)
        .sort_by_file_path(|a, b| a.cmp(b));

    let mut entries = Vec::new();
    for result in builder.build() {
        match result {
            Ok(entry) => {
                if let Some(e) = classify(&entry, opts) {
                    entries.push(e);
                }
            }
            Err(err) => {
                let (path, reason) = describe_error(&err);
                entries.push(WalkEntry::Failed {
                    path: path.unwrap_or_default(),
                    reason,
                });
            }
        }
    }
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    entries.dedup_by(|a, b| a.path() == b.path());
    entries
}

fn classify(entry: &ignore::DirEntry, opts: &WalkOptions) -> Option<WalkEntry> {
    let path = entry.path().to_path_buf();
    let failed = |reason: String| {
        Some(WalkEntry::Failed {
            path: path.clone(),
            reason,
        })
    };
    let skipped = |reason: String| {
        Some(WalkEntry::Skipped {
            path: path.clone(),
            reason,
        })
    };
    let file_type = entry.file_type()?; // None only for stdin
    if file_type.is_dir() {
        return None;
    }
    if file_type.is_symlink() {
        // Only reached when links are not followed (a followed link reports its target's type).
        return skipped("symbolic link (following links is off)".into());
    }
    let metadata = match entry.metadata() {
        Ok(m) => m,
        Err(err) => return failed(describe_error(&err).1),
    };
    if !metadata.is_file() {
        return skipped("not a regular file (device, socket or pipe)".into());
    }
    let Some(kind) = doc_kind(&path) else {
        return skipped(match path.extension() {
            Some(ext) => format!("unsupported extension .{}", ext.to_string_lossy()),
            None => "unsupported file type (no extension)".into(),
        });
    };
    let size = metadata.len();
    if size > opts.max_file_bytes {
        return skipped(format!(
            "too large: {size} bytes, over the {} byte limit",
            opts.max_file_bytes
        ));
    }
    if let Err(err) = std::fs::File::open(&path) {
        return failed(format!("cannot open: {err}"));
    }
    Some(WalkEntry::File { path, kind, size })
}

/// The path an ignore error is about and a message without that path in it.
fn describe_error(err: &ignore::Error) -> (Option<PathBuf>, String) {
    match err {
        ignore::Error::WithPath { path, err } => {
            let (inner, msg) = describe_error(err);
            (inner.or_else(|| Some(path.clone())), msg)
        }
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            describe_error(err)
        }
        ignore::Error::Loop { ancestor, child } => (
            Some(child.clone()),
            format!(
                "symbolic link loop: it leads back to {}; not followed",
                ancestor.display()
            ),
        ),
        ignore::Error::Io(io) => (None, describe_io(io)),
        other => (None, other.to_string()),
    }
}

/// An I/O error's message without the walker's "IO error for operation on PATH:" wrapping, with a
/// hint for the cases a user can act on.
fn describe_io(err: &std::io::Error) -> String {
    // Walk errors arrive as io::Error wrapping walkdir::Error wrapping the OS error: use the last.
    let mut root: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = root.source() {
        root = next;
    }
    let io = root.downcast_ref::<std::io::Error>().unwrap_or(err);
    const ELOOP: i32 = 40; // Linux
    if cfg!(target_os = "linux") && io.raw_os_error() == Some(ELOOP) {
        format!("symbolic link loop (or too long a chain of links): {io}")
    } else if io.kind() == std::io::ErrorKind::NotFound {
        format!("not found (or a broken symbolic link): {io}")
    } else {
        io.to_string()
    }
}
