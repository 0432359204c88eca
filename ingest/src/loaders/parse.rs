//! What every parser shares: the result it hands back ([`Parsed`]) and the guard that turns a
//! panic inside a dependency into a per-file error ([`catch_quietly`]).
use std::cell::Cell;

use crate::normalize::TextBuilder;

/// What a parser hands back: the title and the assembled text.
pub(super) struct Parsed {
    pub title: Option<String>,
    pub builder: TextBuilder,
}

/// Why a container format could not be read: damaged, or readable only with a key or a newer
/// save. Plain strings are [`Failure::Corrupt`].
#[derive(Debug)]
pub(super) enum Failure {
    Corrupt(String),
    Protected(String),
}

impl From<String> for Failure {
    fn from(detail: String) -> Failure {
        Failure::Corrupt(detail)
    }
}

thread_local! {
    /// How many [`catch_quietly`] calls are active on this thread; the panic hook stays silent while > 0.
    static QUIET: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f`, turning a panic into `Err(message)` without printing the panic message.
///
/// The first call wraps the process's panic hook once: the wrapper stays silent on threads inside
/// `catch_quietly` and defers to the previous hook everywhere else.
pub(crate) fn catch_quietly<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(q.get() + 1));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(q.get() - 1));
    result.map_err(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        format!("parser panicked: {msg}")
    })
}
