//! `rag serve`: one loaded model and index shared by every request, over HTTP.
//!
//! - OpenAI-compatible endpoints ([`openai`]): `POST /v1/chat/completions` (model `rag`: the
//!   last user message answered with retrieval and citations; any other model name known to the
//!   server: closed book), `POST /v1/embeddings`, `GET /v1/models`, errors in OpenAI's shape.
//! - rag's own ([`api`]): `POST /api/ask` (server-sent events: tokens, then the answer with its
//!   citations, quotes and passages), `GET /api/search`, documents (upload, list, delete),
//!   passages, health.
//! - A web page (`GET /`), embedded in the binary: no build step, nothing fetched.
//!
//! Answers queue for the model ([`queue`]): one runs at a time, a bounded number wait, the rest
//! get `503` with `Retry-After`; a client that goes away cancels its answer. Searches, document
//! lists and passages never wait behind the model. Uploads are ingested by one writer at a time
//! through the same incremental pipeline as `rag ingest`, to the end even if the client goes
//! away; readers see the index swapped only after a whole commit, so a concurrent ask never
//! sees a half-written index.
//!
//! Security: the caller chooses the address; anything but loopback needs an API key (Bearer,
//! compared in constant time) unless auth is explicitly off. Pages of other sites are refused
//! (a write with a foreign `Origin`; on loopback, a foreign `Host`). Request bodies and uploads have
//! size limits, uploaded file names cannot leave the upload folder, and the page writes
//! document text as text. CORS is off unless an origin is configured.
pub(crate) mod api;
pub(crate) mod app;
pub(crate) mod openai;
pub(crate) mod queue;
pub(crate) mod reply;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

use crate::error::{Error, Result};
use crate::rag::Rag;
use app::App;
pub use app::ServerOptions;

/// The HTTP server over one [`Rag`].
///
/// ```no_run
/// # async fn run() -> rag::Result<()> {
/// let rag = rag::Rag::open(".rag", rag::Config::new("/home/me/.cache/rag"))?;
/// rag::Server::new(rag, rag::ServerOptions::default())?.serve().await
/// # }
/// ```
pub struct Server {
    app: Arc<App>,
    listener: Option<tokio::net::TcpListener>,
}

impl Server {
    /// A server of `rag` with `opts`; refuses a non-loopback address without a key (unless
    /// `no_auth`).
    pub fn new(rag: Rag, opts: ServerOptions) -> Result<Self> {
        if !opts.addr.ip().is_loopback() && opts.api_key.is_none() && !opts.no_auth {
            return Err(Error::InvalidOption(format!(
                "{} is reachable from other machines: give an API key (RAG_API_KEY) for clients to send as a Bearer token, or turn authentication off explicitly",
                opts.addr
            )));
        }
        if opts.api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err(Error::InvalidOption("the API key is empty".into()));
        }
        let upload_dir = opts
            .upload_dir
            .clone()
            .unwrap_or_else(|| rag.dir().join("uploads"));
        std::fs::create_dir_all(&upload_dir).map_err(|source| Error::Io {
            path: upload_dir.clone(),
            source,
        })?;
        let upload_dir = std::fs::canonicalize(&upload_dir).map_err(|source| Error::Io {
            path: upload_dir.clone(),
            source,
        })?;
        let model_path = rag.config().model_path()?;
        let model_name = model_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        // Temporary files of uploads a killed server left behind.
        if let Ok(entries) = std::fs::read_dir(&upload_dir) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(api::TEMP_PREFIX)
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let queue = queue::ModelQueue::new(opts.queue);
        Ok(Self {
            app: Arc::new(App {
                rag,
                model_name,
                opts,
                queue,
                writer: Arc::new(tokio::sync::Mutex::new(())),
                upload_dir,
                uploads: AtomicUsize::new(0),
                ids: AtomicU64::new(0),
            }),
            listener: None,
        })
    }

    /// The routes, for embedding in another axum application.
    pub fn router(&self) -> Router {
        router(Arc::clone(&self.app))
    }

    /// Bind the address (port 0 picks a free one) and say which it is.
    pub async fn bind(&mut self) -> Result<SocketAddr> {
        let addr = self.app.opts.addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::InvalidOption(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::InvalidOption(format!("cannot listen on {addr}: {e}")))?;
        self.listener = Some(listener);
        Ok(bound)
    }

    /// Serve (binding first if [`Server::bind`] was not called) until Ctrl-C or SIGTERM.
    pub async fn serve(mut self) -> Result<()> {
        if self.listener.is_none() {
            self.bind().await?;
        }
        let addr = self.app.opts.addr;
        let listener = self.listener.take().expect("bound above");
        // On Ctrl-C or SIGTERM: stop accepting, give requests in flight a few seconds, then go.
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let graceful = async move {
            shutdown().await;
            let _ = stop_tx.send(());
        };
        let served = axum::serve(listener, self.router()).with_graceful_shutdown(graceful);
        let deadline = async move {
            if stop_rx.await.is_ok() {
                tokio::time::sleep(std::time::Duration::from_secs(SHUTDOWN_GRACE_SECS)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = served => r.map_err(|e| Error::InvalidOption(format!("server on {addr} failed: {e}"))),
            () = deadline => Ok(()),
        }
    }
}

/// How long requests in flight may take to finish after Ctrl-C or SIGTERM.
const SHUTDOWN_GRACE_SECS: u64 = 5;

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let term = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn router(app: Arc<App>) -> Router {
    let uploads = Router::new()
        .route("/api/documents", post(api::upload))
        .layer(DefaultBodyLimit::max(app.opts.max_upload));
    let api = Router::new()
        .route("/api/health", get(api::health))
        .route("/api/search", get(api::search))
        .route("/api/ask", post(api::ask))
        .route("/api/documents", get(api::documents))
        .route("/api/documents/{id}", delete(api::remove))
        .route("/api/passages/{chunk_id}", get(api::passage))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/embeddings", post(openai::embeddings))
        .layer(DefaultBodyLimit::max(app.opts.max_body))
        .merge(uploads)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), auth))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), same_site));
    Router::new()
        .route("/", get(page))
        .merge(api)
        .fallback(not_found)
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), cors))
        .with_state(app)
}

/// The web page, with its script and style inline.
async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

async fn not_found(req: Request) -> Response {
    let message = format!("no such endpoint: {} {}", req.method(), req.uri().path());
    if req.uri().path().starts_with("/v1/") {
        return reply::openai_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_url",
            &message,
        );
    }
    reply::error(StatusCode::NOT_FOUND, message)
}

/// Every error is JSON, also those axum writes itself (a body that is not JSON, a missing
/// query parameter, a method not allowed): `{"error": ...}`, or OpenAI's shape under `/v1`.
async fn json_errors(req: Request, next: Next) -> Response {
    let openai = req.uri().path().starts_with("/v1/");
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let retry = resp.headers().get(header::RETRY_AFTER).cloned();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap_or_default();
    let mut message = String::from_utf8_lossy(&body).trim().to_string();
    if message.is_empty() {
        message = status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase();
    }
    let mut out = if openai {
        let kind = if status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        };
        reply::openai_error(status, kind, "invalid_request", &message)
    } else {
        reply::error(status, message)
    };
    if let Some(r) = retry {
        out.headers_mut().insert(header::RETRY_AFTER, r);
    }
    out
}

/// Requests a web page elsewhere makes the browser send are refused: on a loopback address,
/// a `Host` that is not loopback (DNS rebinding); and a `POST` or `DELETE` whose `Origin` is
/// neither this server nor the configured CORS origin (a form posted from another site).
/// Clients that are not browsers send no `Origin` and a loopback `Host`.
async fn same_site(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if app.opts.addr.ip().is_loopback() && !is_loopback_host(&host) {
        return reply::error(
            StatusCode::FORBIDDEN,
            format!(
                "host {host:?} is not this machine: open the page at http://127.0.0.1:{}",
                app.opts.addr.port()
            ),
        );
    }
    let writes = matches!(*req.method(), Method::POST | Method::DELETE | Method::PUT);
    if let (true, Some(origin)) = (writes, req.headers().get(header::ORIGIN)) {
        let origin = origin.to_str().unwrap_or("");
        let own = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o == host);
        let allowed = app.opts.cors_origin.as_deref() == Some(origin);
        if !own && !allowed {
            return reply::error(
                StatusCode::FORBIDDEN,
                format!("requests from pages at {origin} are refused (see --cors-origin)"),
            );
        }
    }
    next.run(req).await
}

/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Requests to the API must carry the key, when there is one.
async fn auth(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(key) = &app.opts.api_key else {
        return next.run(req).await;
    };
    if req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(key)
        })
        .unwrap_or("");
    if keys_match(given.trim(), key) {
        return next.run(req).await;
    }
    let openai = req.uri().path().starts_with("/v1/");
    let mut resp = if openai {
        reply::openai_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "missing or wrong API key: send it as `Authorization: Bearer KEY`",
        )
    } else {
        reply::error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API key: send it as `Authorization: Bearer KEY`",
        )
    };
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Whether `given` is `key`, in time that depends on neither where they differ nor how long
/// either is: their SHA-256 digests are compared in constant time.
fn keys_match(given: &str, key: &str) -> bool {
    use sha2::{Digest, Sha256};
    constant_time_eq(
        &Sha256::digest(given.as_bytes()),
        &Sha256::digest(key.as_bytes()),
    )
}

/// Equal bytes, in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// CORS for the one configured origin; nothing otherwise.
async fn cors(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(origin) = app.opts.cors_origin.clone() else {
        return next.run(req).await;
    };
    let allowed = req
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|o| o.as_bytes() == origin.as_bytes());
    let preflight = req.method() == Method::OPTIONS;
    let mut resp = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    if allowed {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            // The OpenAI JavaScript client adds its own x-stainless-* headers.
            HeaderValue::from_static(
                "authorization, content-type, x-stainless-arch, x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout",
            ),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "127.1.2.3",
            "[::1]:80",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "",
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:8080",
            "localhost.evil.example",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(keys_match("s3cret", "s3cret"));
        assert!(!keys_match("s3cre", "s3cret"));
        assert!(!keys_match("", "s3cret"));
    }
}
