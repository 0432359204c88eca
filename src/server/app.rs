//! What every request shares, and the options it is made from.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};

use super::queue;
use crate::rag::Rag;

/// How `rag serve` runs.
///
/// ```
/// let opts = rag::ServerOptions::default();
/// assert_eq!(opts.addr.to_string(), "127.0.0.1:8080");
/// assert!(opts.api_key.is_none() && opts.cors_origin.is_none());
/// ```
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Where to listen. Default `127.0.0.1:8080` (loopback: this machine only).
    pub addr: SocketAddr,
    /// The Bearer key every API request must carry. Required for any address but loopback,
    /// unless `no_auth`.
    pub api_key: Option<String>,
    /// Serve a non-loopback address without a key (explicitly, e.g. behind a proxy that
    /// authenticates).
    pub no_auth: bool,
    /// Answers waiting for the model beyond the one running; more get `503`. Default 8.
    pub queue: usize,
    /// Largest request body, in bytes, except uploads. Default 1 MiB.
    pub max_body: usize,
    /// Largest upload request (all its files), in bytes. Default 32 MiB.
    pub max_upload: usize,
    /// Where uploaded files are kept (and ingested from). Default: `uploads/` in the index
    /// folder.
    pub upload_dir: Option<PathBuf>,
    /// The one origin allowed to call the API from a browser page of its own (CORS). Default
    /// none: CORS is off.
    pub cors_origin: Option<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_key: None,
            no_auth: false,
            queue: 8,
            max_body: 1 << 20,
            max_upload: 32 << 20,
            upload_dir: None,
            cors_origin: None,
        }
    }
}

/// What every request shares.
pub(crate) struct App {
    pub rag: Rag,
    /// The chat model's name (its file name without `.gguf`): `/v1` answers closed book under it.
    pub model_name: String,
    pub opts: ServerOptions,
    pub queue: queue::ModelQueue,
    /// One ingest (upload or delete) at a time.
    pub writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    pub upload_dir: PathBuf,
    /// Numbers for temporary upload files and completion ids.
    pub uploads: AtomicUsize,
    pub ids: AtomicU64,
}
