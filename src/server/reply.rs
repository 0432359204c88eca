//! Error replies: rag's `{"error": ...}`, OpenAI's shape, the status of a library error, and
//! blocking library work run off the async threads.
// A helper's early return is the whole response (128 bytes), moved once per request.
#![allow(clippy::result_large_err)]
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::app::App;
use crate::error::Error;

/// `{"error": message}` with `status`.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The status of a library error: the client's fault, a missing thing, or the server's.
pub(crate) fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::EmptyQuestion | Error::InvalidOption(_) => StatusCode::BAD_REQUEST,
        Error::EmptyIndex { .. } => StatusCode::CONFLICT,
        Error::Index(rag_index::IndexError::NotFound { .. }) => StatusCode::CONFLICT,
        Error::Index(rag_index::IndexError::Locked { .. }) => StatusCode::SERVICE_UNAVAILABLE,
        // The remote store (Milvus) failed or is away: the server is a gateway to it.
        Error::Index(rag_index::IndexError::Remote { .. }) => StatusCode::BAD_GATEWAY,
        Error::Model(rag_model::ModelError::PromptTooLong { .. }) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A library error as a response. An index that does not exist yet reads as an empty one.
pub(crate) fn lib_error(e: &Error) -> Response {
    let msg = match e {
        Error::Index(rag_index::IndexError::NotFound { .. }) | Error::EmptyIndex { .. } => {
            "the index holds no documents yet: upload some first".to_string()
        }
        e => e.to_string(),
    };
    error(status_of(e), msg)
}

/// `503` with `Retry-After`: the line for the model is full.
pub(crate) fn busy(app: &App) -> Response {
    let mut resp = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the model is busy ({} answers waiting): try again shortly",
            app.queue.capacity()
        ),
    );
    if let Ok(v) = HeaderValue::from_str(&app.queue.retry_after().to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Run blocking library work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::error::Result<T> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(lib_error(&e)),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )),
    }
}

/// The message of a library error as the API words it.
pub(crate) fn lib_error_text(e: &Error) -> String {
    match e {
        Error::Index(rag_index::IndexError::NotFound { .. }) | Error::EmptyIndex { .. } => {
            "the index holds no documents yet: upload some first".to_string()
        }
        e => e.to_string(),
    }
}

/// The `error` field of an error response.
pub(crate) async fn error_text(resp: Response) -> String {
    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
        .await
        .unwrap_or_default();
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned())
}

/// An error in OpenAI's shape.
pub(crate) fn openai_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({
            "error": { "message": message, "type": kind, "param": null, "code": code }
        })),
    )
        .into_response()
}
