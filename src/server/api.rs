//! rag's own endpoints: ask (server-sent events), search, documents (upload, list, delete),
//! passages, health. Errors are `{"error": "..."}` with a status that says whose fault it is.
// A helper's early return is the whole response (128 bytes), moved once per request.
#![allow(clippy::result_large_err)]
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{Multipart, Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::app::App;
use super::reply::{blocking, busy, error, lib_error, lib_error_text};
use crate::ask::{self, AnswerMode};
use crate::error::Error;
use crate::ingest::{FileStatus, IngestEvent, IngestOptions};
use crate::rag::Rag;

/// A document's id in URLs: the first 16 hex digits of the sha256 of its stored path.
pub(crate) fn document_id(path: &str) -> String {
    let digest = Sha256::digest(path.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}

/// (documents, passages) in the index; an index not made yet holds none.
fn counts(rag: &Rag) -> (usize, usize) {
    rag.info()
        .map(|i| (i.documents, i.chunks))
        .unwrap_or((0, 0))
}

pub(crate) async fn health(State(app): State<Arc<App>>) -> Response {
    let (documents, passages) = counts(&app.rag);
    let (running, waiting) = app.queue.load();
    // "minilm:all-MiniLM-L6-v2:<hash>:mean:256" reads as "minilm:all-MiniLM-L6-v2".
    let embedder = app
        .rag
        .info()
        .map(|i| i.embedder.split(':').take(2).collect::<Vec<_>>().join(":"))
        .unwrap_or_default();
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "model": app.model_name,
        "embedder": embedder,
        "documents": documents,
        "passages": passages,
        "queue": { "running": running, "waiting": waiting, "capacity": app.queue.capacity() },
    }))
    .into_response()
}

/// `GET /api/search?q=QUESTION[&filter=EXPR]...`: the passages `ask` would use. Each `filter`
/// is one expression of [`crate::filter::parse_filters`] (`type:pdf`, `path:/docs/`,
/// `after:2024-01-01`), all of which must hold; they narrow the server's own filter, if any.
pub(crate) async fn search(
    State(app): State<Arc<App>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let mut q = None;
    let mut filters = Vec::new();
    for (k, v) in params {
        match k.as_str() {
            "q" => q = Some(v),
            "filter" => filters.push(v),
            _ => {}
        }
    }
    let Some(q) = q else {
        return error(
            StatusCode::BAD_REQUEST,
            "the question is missing: /api/search?q=...".to_string(),
        );
    };
    let opts = match request_options(&app, &filters) {
        Ok(o) => o,
        Err(resp) => return resp,
    };
    let rag = Arc::clone(&app);
    match blocking(move || rag.rag.search_with(&q, &opts)).await {
        Ok(found) => Json(found).into_response(),
        Err(resp) => resp,
    }
}

/// The server's settings with this request's filter expressions added to its filter (or the
/// `400` naming the bad expression).
fn request_options(app: &App, filters: &[String]) -> Result<crate::ask::AskOptions, Response> {
    let mut opts = app.rag.options().clone();
    if !filters.is_empty() {
        let own = crate::filter::parse_filters(filters).map_err(|e| lib_error(&e))?;
        opts.retrieve.filter = crate::filter::both(&opts.retrieve.filter, own).map_err(|what| {
            let msg = format!(
                "the filter asks for {what} outside the server's own filter: no document could \
                 match"
            );
            error(StatusCode::BAD_REQUEST, msg)
        })?;
    }
    Ok(opts)
}

#[derive(Deserialize)]
pub(crate) struct AskBody {
    question: String,
    /// The earlier user questions of the conversation, oldest first.
    #[serde(default)]
    history: Vec<String>,
    #[serde(default)]
    answer: Option<AnswerMode>,
    /// Filter expressions (see [`search`]), all of which must hold.
    #[serde(default)]
    filter: Vec<String>,
}

/// What `/api/ask` streams.
enum AskEvent {
    Queued(usize),
    Passages(serde_json::Value),
    Token(String),
    Answer(serde_json::Value),
    Error(String),
}

impl AskEvent {
    fn to_sse(&self) -> Event {
        let (name, data) = match self {
            Self::Queued(n) => ("queued", json!({ "position": n })),
            Self::Passages(v) => ("passages", v.clone()),
            Self::Token(t) => ("token", json!({ "text": t })),
            Self::Answer(v) => ("answer", v.clone()),
            Self::Error(e) => ("error", json!({ "error": e })),
        };
        Event::default().event(name).data(data.to_string())
    }
}

/// The events of a channel as a stream; the producer sees the channel close when the client
/// goes away (the response, and with it this stream, is dropped).
pub(crate) struct Events<T>(pub mpsc::Receiver<T>);

impl<T> Stream for Events<T> {
    type Item = Result<T, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|o| o.map(Ok))
    }
}

/// A question ready to answer: checked, made standalone, in line for the model.
pub(crate) struct Admitted {
    pub question: String,
    pub standalone: String,
    pub place: super::queue::Place,
}

/// Check `question` and take a place in the line (or the response that refuses it).
pub(crate) fn admit(app: &App, question: &str, history: &[String]) -> Result<Admitted, Response> {
    let question = ask::check_question(question)
        .map_err(|e| lib_error(&e))?
        .to_string();
    let standalone = crate::followup::standalone_question(history, &question);
    let place = app.queue.join().ok_or_else(|| busy(app))?;
    Ok(Admitted {
        question,
        standalone,
        place,
    })
}

pub(crate) async fn ask(State(app): State<Arc<App>>, Json(body): Json<AskBody>) -> Response {
    let admitted = match admit(&app, &body.question, &body.history) {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let mut opts = match request_options(&app, &body.filter) {
        Ok(o) => o,
        Err(resp) => return resp,
    };
    // A flag of this request's own: the settings' one is shared by every clone.
    opts.generate.cancel = rag_model::Cancel::default();
    if let Some(mode) = body.answer {
        opts.answer = mode;
    }
    let (tx, rx) = mpsc::channel::<Event>(256);
    tokio::spawn(async move {
        let send = |e: AskEvent| {
            let tx = tx.clone();
            async move { tx.send(e.to_sse()).await.is_ok() }
        };
        if admitted.place.ahead > 0 && !send(AskEvent::Queued(admitted.place.ahead)).await {
            return;
        }
        // The passages first: a search does not need the model.
        let a = Arc::clone(&app);
        let q = admitted.standalone.clone();
        let search_opts = opts.clone();
        match blocking(move || a.rag.search_with(&q, &search_opts)).await {
            Ok(found) => {
                let v = json!({
                    "question": admitted.question,
                    "standalone": admitted.standalone,
                    "passages": found.passages,
                    "evidence": found.evidence,
                });
                if !send(AskEvent::Passages(v)).await {
                    return;
                }
            }
            Err(resp) => {
                let msg = super::reply::error_text(resp).await;
                send(AskEvent::Error(msg)).await;
                return;
            }
        }
        let turn = tokio::select! {
            turn = admitted.place.turn() => turn,
            _ = tx.closed() => return,
        };
        let result = stream_answer(&app, turn, &admitted.standalone, opts, &tx, |t| {
            AskEvent::Token(t).to_sse()
        })
        .await;
        let event = match result {
            Ok(Ok(answer)) => {
                let mut v = serde_json::to_value(&answer).unwrap_or_default();
                v["standalone"] = json!(admitted.standalone);
                v["question"] = json!(admitted.question);
                AskEvent::Answer(v)
            }
            Ok(Err(e)) => AskEvent::Error(lib_error_text(&e)),
            Err(e) => AskEvent::Error(format!("internal error: {e}")),
        };
        let _ = tx.send(event.to_sse()).await;
    });
    Sse::new(Events(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(2)))
        .into_response()
}

/// Answer `question` on the blocking pool while holding `turn`, sending each piece of text
/// through `tx` as `event(piece)`. When the client goes away (`tx` closes) the answer is
/// cancelled and waited for; the result is the answer, its error, or a panic's.
pub(crate) async fn stream_answer(
    app: &Arc<App>,
    turn: super::queue::Turn,
    question: &str,
    opts: crate::ask::AskOptions,
    tx: &mpsc::Sender<Event>,
    event: impl Fn(String) -> Event,
) -> Result<crate::error::Result<crate::ask::Answer>, tokio::task::JoinError> {
    let (token_tx, mut token_rx) = mpsc::unbounded_channel::<String>();
    let cancel = opts.generate.cancel.clone();
    let a = Arc::clone(app);
    let q = question.to_string();
    let job = tokio::task::spawn_blocking(move || {
        let _turn = turn;
        a.rag.ask_streaming_with(&q, &opts, &mut |t| {
            let _ = token_tx.send(t.to_string());
        })
    });
    tokio::pin!(job);
    let result = loop {
        tokio::select! {
            t = token_rx.recv() => match t {
                Some(t) => {
                    if tx.send(event(t)).await.is_err() {
                        cancel.cancel();
                        break (&mut job).await;
                    }
                }
                None => break (&mut job).await,
            },
            r = &mut job => break r,
            // The client went away: stop the answer and wait for it to end (selecting on a
            // closed channel again would spin).
            _ = tx.closed() => {
                cancel.cancel();
                break (&mut job).await;
            }
        }
    };
    // Pieces sent just before the end.
    while let Ok(t) = token_rx.try_recv() {
        let _ = tx.send(event(t)).await;
    }
    result
}

/// Run `f` as the one writer of the index (uploads, deletes), to its end even if the client
/// that asked goes away; its result.
async fn as_writer<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&App) -> crate::error::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let a = Arc::clone(app);
    tokio::spawn(async move {
        let writer = Arc::clone(&a.writer).lock_owned().await;
        let b = Arc::clone(&a);
        let out = blocking(move || {
            let _writer = writer;
            f(&b)
        })
        .await;
        let _ = done_tx.send(out);
    });
    done_rx.await.unwrap_or_else(|_| {
        Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the writer task ended without an answer",
        ))
    })
}

#[derive(Serialize)]
struct DocumentOut {
    id: String,
    path: String,
    name: String,
    content_hash: String,
    uploaded: bool,
}

pub(crate) async fn documents(State(app): State<Arc<App>>) -> Response {
    let a = Arc::clone(&app);
    let docs = match blocking(move || match a.rag.documents() {
        Err(Error::Index(rag_index::IndexError::NotFound { .. })) => Ok(Vec::new()),
        r => r,
    })
    .await
    {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    let out: Vec<DocumentOut> = docs
        .into_iter()
        .map(|d| DocumentOut {
            id: document_id(&d.path),
            name: file_name(&d.path),
            uploaded: Path::new(&d.path).starts_with(&app.upload_dir),
            path: d.path,
            content_hash: d.content_hash,
        })
        .collect();
    Json(json!({ "documents": out })).into_response()
}

/// How temporary upload files start (hidden: no ingest of the folder picks them up); any left
/// by a server that was killed are removed at start.
pub(crate) const TEMP_PREFIX: &str = ".upload-";

/// Why an uploaded file's name is refused, if it is: it must be a plain file name that stays
/// in the upload folder.
pub(crate) fn check_upload_name(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0'])
        || name.chars().any(char::is_control)
        || name.len() > 255;
    if bad {
        return Err(format!(
            "file name {name:?} is refused: give a plain file name (no folders, no leading dot)"
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct UploadOut {
    name: String,
    path: String,
    status: &'static str,
    chunks: usize,
    error: Option<String>,
}

/// Temporary upload files, removed when dropped (a client that goes away mid-upload leaves
/// none behind); a file moved into place is no longer there to remove.
struct TempFiles(Vec<PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for t in &self.0 {
            let _ = std::fs::remove_file(t);
        }
    }
}

pub(crate) async fn upload(State(app): State<Arc<App>>, form: Option<Multipart>) -> Response {
    let Some(mut form) = form else {
        return error(
            StatusCode::BAD_REQUEST,
            "send the files as multipart/form-data, one `file` field each",
        );
    };
    // Each file goes to a temporary name first, then into place: an ingest never reads half a
    // file.
    let mut temps = TempFiles(Vec::new());
    let mut saved: Vec<(String, PathBuf)> = Vec::new();
    let result = async {
        loop {
            let field = match form.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(error(e.status(), e.body_text())),
            };
            let Some(name) = field.file_name().map(str::to_string) else {
                continue;
            };
            check_upload_name(&name).map_err(|m| error(StatusCode::BAD_REQUEST, m))?;
            if saved.iter().any(|(n, _)| *n == name) {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("{name} is in the upload twice"),
                ));
            }
            let tmp = app.upload_dir.join(format!(
                "{TEMP_PREFIX}{}-{}",
                std::process::id(),
                app.uploads
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            temps.0.push(tmp.clone());
            let mut field = field;
            let mut file = tokio::fs::File::create(&tmp).await.map_err(|e| {
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{}: {e}", tmp.display()),
                )
            })?;
            loop {
                match field.chunk().await {
                    Ok(Some(bytes)) => {
                        tokio::io::AsyncWriteExt::write_all(&mut file, &bytes)
                            .await
                            .map_err(|e| {
                                error(StatusCode::INTERNAL_SERVER_ERROR, format!("{name}: {e}"))
                            })?;
                    }
                    Ok(None) => break,
                    Err(e) => return Err(error(e.status(), format!("{name}: {}", e.body_text()))),
                }
            }
            tokio::io::AsyncWriteExt::flush(&mut file)
                .await
                .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, format!("{name}: {e}")))?;
            saved.push((name, tmp));
        }
        Ok(())
    }
    .await;
    if let Err(resp) = result {
        return resp;
    }
    if saved.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "no file in the upload: send multipart/form-data with one or more `file` fields",
        );
    }
    // The rest runs to its end even if the client goes away; the temporary files go with it.
    match as_writer(&app, move |a| {
        let _temps = temps;
        ingest_uploads(a, &saved)
    })
    .await
    {
        Ok(v) => Json(v).into_response(),
        Err(resp) => resp,
    }
}

/// Move the saved files into place and ingest them; what each became.
fn ingest_uploads(
    app: &App,
    saved: &[(String, PathBuf)],
) -> crate::error::Result<serde_json::Value> {
    let before: std::collections::HashSet<String> = match app.rag.documents() {
        Ok(d) => d.into_iter().map(|d| d.path).collect(),
        Err(_) => Default::default(),
    };
    let mut paths = Vec::new();
    for (name, tmp) in saved {
        let target = app.upload_dir.join(name);
        std::fs::rename(tmp, &target).map_err(|source| Error::Io {
            path: target.clone(),
            source,
        })?;
        paths.push(target);
    }
    let mut events = Vec::new();
    let report = app
        .rag
        .ingest_with(&paths, &IngestOptions::default(), &mut |e| {
            if let IngestEvent::File {
                path,
                status,
                chunks,
                reason,
                ..
            } = e
            {
                events.push((path.clone(), *status, *chunks, reason.clone()));
            }
        });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            // Nothing of this upload is indexed: files new to the index go.
            for p in &paths {
                if !before.contains(&*p.to_string_lossy()) {
                    let _ = std::fs::remove_file(p);
                }
            }
            return Err(e);
        }
    };
    let files: Vec<UploadOut> = paths
        .iter()
        .map(|p| {
            let shown = p.to_string_lossy().into_owned();
            let name = file_name(&shown);
            let event = events.iter().find(|(ep, ..)| ep == p);
            let (status, chunks, error) = match event {
                Some((_, FileStatus::Indexed, chunks, _)) if before.contains(&shown) => {
                    ("updated", *chunks, None)
                }
                Some((_, FileStatus::Indexed, chunks, _)) => ("added", *chunks, None),
                Some((_, FileStatus::Unchanged, chunks, _)) => ("unchanged", *chunks, None),
                Some((_, _, _, reason)) => (
                    "failed",
                    0,
                    Some(format!(
                        "{name}: {}",
                        reason.clone().unwrap_or_else(|| "not indexed".into())
                    )),
                ),
                None => (
                    "failed",
                    0,
                    Some(format!(
                        "{name}: not a supported document (md, txt, rst, html, pdf)"
                    )),
                ),
            };
            UploadOut {
                name,
                path: shown,
                status,
                chunks,
                error,
            }
        })
        .collect();
    // A file that could not be indexed is not kept.
    for f in files.iter().filter(|f| f.status == "failed") {
        if !before.contains(&f.path) {
            let _ = std::fs::remove_file(&f.path);
        }
    }
    Ok(json!({
        "files": files,
        "documents": report.total_documents,
        "passages": report.total_chunks,
    }))
}

pub(crate) async fn remove(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> Response {
    let removed = as_writer(&app, move |a| {
        let docs = match a.rag.documents() {
            Err(Error::Index(rag_index::IndexError::NotFound { .. })) => Vec::new(),
            r => r?,
        };
        let Some(doc) = docs.into_iter().find(|d| document_id(&d.path) == id) else {
            return Ok(None);
        };
        a.rag.remove_document(&doc.path)?;
        // An uploaded file goes with its document; files elsewhere are the user's and stay.
        let path = PathBuf::from(&doc.path);
        if path.starts_with(&a.upload_dir) {
            let _ = std::fs::remove_file(&path);
        }
        Ok(Some(doc.path))
    })
    .await;
    match removed {
        Ok(Some(path)) => {
            let (documents, passages) = counts(&app.rag);
            Json(json!({ "removed": path, "documents": documents, "passages": passages }))
                .into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "no document with that id"),
        Err(resp) => resp,
    }
}

pub(crate) async fn passage(
    State(app): State<Arc<App>>,
    UrlPath(chunk_id): UrlPath<String>,
) -> Response {
    let Ok(chunk_id) = chunk_id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "a passage id is a number (the chunk_id of a citation)",
        );
    };
    let a = Arc::clone(&app);
    match blocking(move || a.rag.passage(chunk_id)).await {
        Ok(Some(c)) => Json(json!({
            "chunk_id": c.chunk_id,
            "document_id": document_id(&c.path),
            "name": file_name(&c.path),
            "path": c.path,
            "pages": c.pages,
            "heading": c.heading,
            "title": c.title,
            "text": c.text,
        }))
        .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no passage {chunk_id}")),
        Err(resp) => resp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_names_stay_in_the_folder() {
        for bad in [
            "", ".", "..", "../x.md", "a/b.md", "..\\x", ".hidden", "x\0.md", "a\nb",
        ] {
            assert!(check_upload_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in [
            "notes.md",
            "Q3 report (final).pdf",
            "ünïcode.txt",
            "a..b.txt",
        ] {
            assert!(check_upload_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn document_ids_are_stable_and_short() {
        let id = document_id("/docs/a.md");
        assert_eq!(id.len(), 16);
        assert_eq!(id, document_id("/docs/a.md"));
        assert_ne!(id, document_id("/docs/b.md"));
    }
}
