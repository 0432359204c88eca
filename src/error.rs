//! [`Error`]: the library's one error type. Every variant that concerns a file or an index names
//! it and says what to do next; none names a command-line flag (the `rag` command adds its own
//! hints, see `src/cli/mod.rs`).
use std::path::PathBuf;

use rag_index::IndexError;
use rag_model::ModelError;

/// Errors from the rag library. Each message says what to do next.
///
/// ```no_run
/// match rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?.ask("Anything?") {
///     Err(rag::Error::EmptyIndex { dir }) => eprintln!("ingest documents into {} first", dir.display()),
///     Err(e) => eprintln!("error: {e}"),
///     Ok(answer) => println!("{}", answer.answer),
/// }
/// # Ok::<(), rag::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No model was named and the default one is not in the cache yet.
    #[error("no {what} given and the default one is not at {path}: fetch it with {fetch} (or `make model`), or name a model of your own")]
    DefaultModelMissing {
        what: &'static str,
        path: PathBuf,
        /// The command of the rag repository that fetches it.
        fetch: &'static str,
    },

    /// The question has no words (empty, or punctuation only).
    #[error("the question is empty: it has no words to look for")]
    EmptyQuestion,

    /// An option has a value that cannot work.
    #[error("{0}")]
    InvalidOption(String),

    /// The index exists but holds no passage.
    #[error("the index at {dir} holds no passages: ingest a folder with txt, md, html or pdf files into it first")]
    EmptyIndex { dir: PathBuf },

    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An error of the store; its message names the index directory.
    #[error(transparent)]
    Index(#[from] IndexError),

    /// An error of the model runtime; its message names the model file where there is one.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// The library's result type.
///
/// ```
/// fn first_model(config: &rag::Config) -> rag::Result<std::path::PathBuf> {
///     config.model_path()
/// }
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;
