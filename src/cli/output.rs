//! Small things the subcommands share when they print: streaming text to a pipe that may close,
//! paths relative to the working directory, the process's peak memory.
use std::io::Write;
use std::path::Path;

use anyhow::Result;

/// Streams generated text to stdout as it comes; the first write error (a closed pipe, say)
/// stops the writing and is returned by [`Stream::finish`].
pub struct Stream<'a, W: Write> {
    out: &'a mut W,
    enabled: bool,
    err: Option<std::io::Error>,
}

impl<'a, W: Write> Stream<'a, W> {
    pub fn new(out: &'a mut W, enabled: bool) -> Self {
        Self {
            out,
            enabled,
            err: None,
        }
    }

    pub fn write(&mut self, piece: &str) {
        if self.enabled && self.err.is_none() {
            if let Err(e) = self
                .out
                .write_all(piece.as_bytes())
                .and_then(|_| self.out.flush())
            {
                self.err = Some(e);
            }
        }
    }

    pub fn finish(self) -> Result<()> {
        self.err.map_or(Ok(()), |e| Err(e.into()))
    }
}

/// Whether `err` is a closed stdout (`rag ask ... | head`): not an error for the user.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A stored (absolute) path, relative to the working directory when it lies under it.
pub fn display_path(path: &str) -> String {
    let p = Path::new(path);
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(|r| r.display().to_string()))
        .unwrap_or_else(|| path.to_string())
}

/// Write `value` as pretty JSON and a newline.
pub fn json<T: serde::Serialize>(out: &mut impl Write, value: &T) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)?;
    Ok(())
}

/// This process's peak resident memory in MiB (`VmHWM`), where /proc has it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Bytes under `dir`, recursively.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
