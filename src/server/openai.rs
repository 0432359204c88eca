//! OpenAI-compatible endpoints, so that existing clients work unchanged: chat completions
//! (model `rag`: retrieval, citations and sources; the chat model's own name: closed book),
//! embeddings, the model list, and errors in OpenAI's shape.
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::api::{self, Events};
use super::app::App;
use super::reply::{self, openai_error as error};
use crate::ask::Answer;

/// The model name that answers with retrieval.
pub(crate) const RAG_MODEL: &str = "rag";

/// An `/api` error response re-worded in OpenAI's shape.
async fn from_api(resp: Response) -> Response {
    let status = resp.status();
    let retry = resp.headers().get(axum::http::header::RETRY_AFTER).cloned();
    let message = reply::error_text(resp).await;
    let (kind, code) = match status {
        StatusCode::SERVICE_UNAVAILABLE => ("server_error", "model_busy"),
        s if s.is_client_error() => ("invalid_request_error", "invalid_request"),
        _ => ("server_error", "internal_error"),
    };
    let mut out = error(status, kind, code, &message);
    if let Some(r) = retry {
        out.headers_mut().insert(axum::http::header::RETRY_AFTER, r);
    }
    out
}

fn bad_json(rejection: JsonRejection) -> Response {
    error(
        rejection.status(),
        "invalid_request_error",
        "invalid_json",
        &rejection.body_text(),
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) async fn models(State(app): State<Arc<App>>) -> Response {
    let data: Vec<Value> = [RAG_MODEL, app.model_name.as_str()]
        .iter()
        .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "rag" }))
        .collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

#[derive(Deserialize)]
pub(crate) struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    max_completion_tokens: Option<usize>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Content,
}

/// A message's content: a string, or a list of parts of which the text ones count.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
    #[default]
    None,
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
            Content::None => String::new(),
        }
    }
}

/// What rag adds to the final message or chunk: the sources.
fn sources(answer: &Answer, standalone: &str) -> Value {
    json!({
        "standalone": standalone,
        "abstained": answer.abstained,
        "abstain_reason": answer.abstain_reason,
        "citations": answer.citations,
        "quotes": answer.quotes,
        "passages": answer.passages,
    })
}

fn finish_reason(answer: &Answer) -> &'static str {
    match answer.stop {
        Some(rag_model::StopReason::MaxTokens | rag_model::StopReason::ContextFull) => "length",
        _ => "stop",
    }
}

pub(crate) async fn chat(
    State(app): State<Arc<App>>,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(r) => return bad_json(r),
    };
    let model = req.model.clone().unwrap_or_else(|| RAG_MODEL.to_string());
    let closed_book = if model == RAG_MODEL {
        false
    } else if model == app.model_name {
        true
    } else {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            &format!(
                "the model '{model}' does not exist: use '{RAG_MODEL}' (answers from the documents) or '{}' (the chat model alone)",
                app.model_name
            ),
        );
    };
    let users: Vec<String> = req
        .messages
        .iter()
        .filter(|m| m.role == "user")
        .map(|m| m.content.text())
        .collect();
    let Some((question, earlier)) = users.split_last() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            "messages holds no user message to answer",
        );
    };
    let admitted = match api::admit(&app, question, earlier) {
        Ok(a) => a,
        Err(resp) => return from_api(resp).await,
    };
    let mut opts = app.rag.options().clone();
    // A flag of this request's own: the settings' one is shared by every clone.
    opts.generate.cancel = rag_model::Cancel::default();
    opts.closed_book = closed_book;
    if let Some(n) = req.max_completion_tokens.or(req.max_tokens) {
        opts.generate.max_tokens = n.clamp(1, 4096);
    }
    let created = now();
    let id = format!(
        "chatcmpl-{created:x}-{}",
        app.ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let standalone = admitted.standalone.clone();
    let cancel = opts.generate.cancel.clone();

    if !req.stream {
        let turn = admitted.place.turn().await;
        let a = Arc::clone(&app);
        let q = standalone.clone();
        // Dropping this future (client gone) stops the answer at its next token.
        let mut guard = CancelOnDrop(Some(cancel));
        let result = reply::blocking(move || {
            let _turn = turn;
            a.rag.ask_streaming_with(&q, &opts, &mut |_| {})
        })
        .await;
        guard.0 = None;
        let answer = match result {
            Ok(a) => a,
            Err(resp) => return from_api(resp).await,
        };
        let mut out = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": answer.answer },
                "finish_reason": finish_reason(&answer),
                "logprobs": null,
            }],
            "usage": {
                "prompt_tokens": answer.timings.prompt_tokens,
                "completion_tokens": answer.timings.generated_tokens,
                "total_tokens": answer.timings.prompt_tokens + answer.timings.generated_tokens,
            },
        });
        if !closed_book {
            out["rag"] = sources(&answer, &standalone);
        }
        return Json(out).into_response();
    }

    let (tx, rx) = mpsc::channel::<Event>(256);
    tokio::spawn(async move {
        let chunk = |delta: Value, finish: Option<&str>| {
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null }],
            })
        };
        let data = |v: &Value| Event::default().data(v.to_string());
        if tx
            .send(data(&chunk(
                json!({ "role": "assistant", "content": "" }),
                None,
            )))
            .await
            .is_err()
        {
            return;
        }
        let turn = tokio::select! {
            turn = admitted.place.turn() => turn,
            _ = tx.closed() => return,
        };
        let result = api::stream_answer(&app, turn, &standalone, opts, &tx, |t| {
            data(&chunk(json!({ "content": t }), None))
        })
        .await;
        match result {
            Ok(Ok(answer)) => {
                let mut last = chunk(json!({}), Some(finish_reason(&answer)));
                if !closed_book {
                    last["rag"] = sources(&answer, &standalone);
                }
                let _ = tx.send(data(&last)).await;
            }
            Ok(Err(e)) => {
                let v = json!({ "error": { "message": reply::lib_error_text(&e), "type": "server_error", "param": null, "code": "internal_error" } });
                let _ = tx.send(data(&v)).await;
            }
            Err(e) => {
                let v = json!({ "error": { "message": format!("internal error: {e}"), "type": "server_error", "param": null, "code": "internal_error" } });
                let _ = tx.send(data(&v)).await;
            }
        }
        let _ = tx.send(Event::default().data("[DONE]")).await;
    });
    Sse::new(Events(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(2)))
        .into_response()
}

/// Stops a generation when dropped while still armed: a handler future dropped because its
/// client went away.
struct CancelOnDrop(Option<rag_model::Cancel>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.cancel();
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct EmbeddingRequest {
    input: Input,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

pub(crate) async fn embeddings(
    State(app): State<Arc<App>>,
    body: Result<Json<EmbeddingRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(r) => return bad_json(r),
    };
    if let Some(m) = req
        .model
        .as_deref()
        .filter(|m| *m != RAG_MODEL && *m != app.model_name)
    {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            &format!(
                "the model '{m}' does not exist: embeddings come from the index's embedder, as model '{RAG_MODEL}'"
            ),
        );
    }
    let texts = match req.input {
        Input::One(t) => vec![t],
        Input::Many(v) => v,
    };
    if texts.is_empty() || texts.len() > 2048 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_input",
            "input must be a string or a list of 1 to 2048 strings",
        );
    }
    if texts.iter().any(|t| t.trim().is_empty()) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_input",
            "input holds an empty string: there is nothing to embed",
        );
    }
    let a = Arc::clone(&app);
    let result = reply::blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        a.rag.embed(&refs)
    })
    .await;
    let (vectors, tokens) = match result {
        Ok(r) => r,
        Err(resp) => return from_api(resp).await,
    };
    let total: usize = tokens.iter().sum();
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| json!({ "object": "embedding", "index": i, "embedding": v }))
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": req.model.unwrap_or_else(|| RAG_MODEL.to_string()),
        "usage": { "prompt_tokens": total, "total_tokens": total },
    }))
    .into_response()
}
