//! `core-cli serve`: an OpenAI-compatible server for a local model — `POST /v1/chat/completions`
//! (JSON or SSE streaming), `GET /v1/models`, `GET /health`.
//!
//! One worker thread owns the model and answers requests in arrival order (generation is
//! compute-bound; interleaving would not make it faster). Requests wait in a bounded queue; when
//! it is full the server answers 503 at once instead of piling up memory. Bodies over the size
//! limit get 413, prompts over the model's context 413, bad JSON or fields 400. With an API key
//! every route needs `Authorization: Bearer KEY` (401 otherwise), as vLLM's and llama.cpp's do.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use burn::tensor::backend::Backend;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::data::{Message, Role};
use crate::infer::{ChatModel, ChatOutput, ChatParams};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub model_dir: PathBuf,
    /// A PEFT adapter folded into the model at load.
    pub adapter: Option<PathBuf>,
    pub tokenizer: Option<PathBuf>,
    pub chat_template: Option<PathBuf>,
    /// The name `/v1/models` lists and responses carry.
    pub model_name: String,
    pub addr: SocketAddr,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Requests waiting for the model at most; more get 503.
    pub queue: usize,
    /// Upper bound on `max_tokens` (and its default).
    pub max_new_tokens: usize,
    /// Required as `Authorization: Bearer KEY` on every route when set.
    pub api_key: Option<ApiKey>,
    /// [`crate::model::generate::GenerateConfig::kv_bucket`] (see
    /// [`crate::backend::Backend::default_seq_bucket`]).
    pub kv_bucket: usize,
}

/// A bearer key the server requires. `Debug` redacts it; it is compared in constant time and
/// never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Result<Self, String> {
        let key = key.into();
        if key.trim().is_empty() || key.chars().any(|c| c.is_control() || c == ' ') {
            return Err("an API key must be non-empty, without spaces or control characters".into());
        }
        Ok(Self(key))
    }

    /// Whether an `Authorization` header carries this key as a bearer token.
    pub fn admits(&self, header: Option<&HeaderValue>) -> bool {
        let Some(token) = header.and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        let (a, b) = (token.trim().as_bytes(), self.0.as_bytes());
        // Constant time over the key: no early exit on the first differing byte.
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl std::str::FromStr for ApiKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::new(s)
    }
}

/// What `serve` prints before binding `addr` without a key anywhere but loopback.
pub fn exposure_warning(addr: SocketAddr, key: Option<&ApiKey>) -> Option<String> {
    (key.is_none() && !addr.ip().is_loopback()).then(|| {
        format!(
            "warning: serving on {addr} without an API key: anyone who can reach this port can use \
             the model (set --api-key or LONGALIGN_API_KEY)"
        )
    })
}

/// Answers 401 unless the request carries the key.
async fn authorize(State(key): State<Option<ApiKey>>, req: Request, next: Next) -> Response {
    match &key {
        Some(k) if !k.admits(req.headers().get(header::AUTHORIZATION)) => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "missing or wrong API key: send Authorization: Bearer <key>",
            );
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        _ => next.run(req).await,
    }
}

enum JobError {
    TooLong(String),
    Bad(String),
    Internal(String),
}

struct Job {
    messages: Vec<Message>,
    params: ChatParams,
    /// Text deltas for streaming requests.
    deltas: Option<mpsc::Sender<String>>,
    reply: oneshot::Sender<Result<ChatOutput, JobError>>,
}

#[derive(Clone)]
struct AppState {
    jobs: mpsc::Sender<Job>,
    model_name: String,
    max_new_tokens: usize,
}

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"message": message.into(), "type": kind, "code": status.as_u16()}});
    (status, axum::Json(body)).into_response()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The model thread: loads the model, then answers jobs until every sender is gone.
fn worker<B: Backend>(
    cfg: &ServeConfig,
    device: B::Device,
    mut jobs: mpsc::Receiver<Job>,
    ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
) {
    let model = match ChatModel::<B>::load(
        &cfg.model_dir,
        cfg.adapter.as_deref(),
        cfg.tokenizer.as_deref(),
        cfg.chat_template.as_deref(),
        &device,
    ) {
        Ok(m) => {
            let _ = ready.send(Ok(()));
            ChatModel { kv_bucket: cfg.kv_bucket, ..m }
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let context = model.cfg.max_position_embeddings;
    while let Some(job) = jobs.blocking_recv() {
        let result = (|| {
            let prompt = model
                .fitted_prompt(&job.messages, job.params.max_prompt_tokens)
                .map_err(|e| JobError::Bad(e.to_string()))?;
            if prompt.len() >= context {
                return Err(JobError::TooLong(format!(
                    "the prompt has {} tokens; this model's context is {context}",
                    prompt.len()
                )));
            }
            let deltas = job.deltas.clone();
            model
                .chat(&job.messages, &job.params, |d| match &deltas {
                    // A closed channel means the client went away: stop generating.
                    Some(tx) => tx.blocking_send(d.to_string()).is_ok(),
                    None => true,
                })
                .map_err(|e| JobError::Internal(e.to_string()))
        })();
        let _ = job.reply.send(result);
    }
}

/// Reads an OpenAI chat request into our messages and parameters.
fn parse_request(v: &Value, max_new_tokens: usize) -> Result<(Vec<Message>, ChatParams, bool), String> {
    let msgs = v.get("messages").and_then(Value::as_array).ok_or("field messages: expected an array")?;
    if msgs.is_empty() {
        return Err("field messages: must not be empty".into());
    }
    let mut messages = Vec::with_capacity(msgs.len());
    for (i, m) in msgs.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system") | Some("developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(r) => return Err(format!("messages[{i}].role: unsupported role {r:?}")),
            None => return Err(format!("messages[{i}].role: missing")),
        };
        let content = crate::data::formats::text_content(m.get("content"))
            .map_err(|e| format!("messages[{i}].content: {e}"))?;
        messages.push(Message::new(role, content));
    }
    let num = |k: &str| v.get(k).filter(|x| !x.is_null());
    let max_tokens = match num("max_completion_tokens").or(num("max_tokens")) {
        Some(x) => {
            x.as_u64().filter(|&n| n > 0).ok_or("field max_tokens: expected a positive integer")? as usize
        }
        None => max_new_tokens,
    };
    let temperature = match num("temperature") {
        Some(x) => {
            x.as_f64().filter(|t| (0.0..=2.0).contains(t)).ok_or("field temperature: expected 0–2")? as f32
        }
        None => 1.0,
    };
    let top_p = match num("top_p") {
        Some(x) => x.as_f64().filter(|p| *p > 0.0 && *p <= 1.0).ok_or("field top_p: expected (0, 1]")? as f32,
        None => 1.0,
    };
    let seed = match num("seed") {
        Some(x) => x.as_u64().ok_or("field seed: expected a non-negative integer")?,
        None => 0,
    };
    let stop = match num("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or("field stop: expected a string or a list of strings")?,
        Some(_) => return Err("field stop: expected a string or a list of strings".into()),
    };
    let stream = num("stream").and_then(Value::as_bool).unwrap_or(false);
    let params = ChatParams {
        max_new_tokens: max_tokens.min(max_new_tokens),
        temperature,
        top_p,
        seed,
        stop,
        max_prompt_tokens: None,
    };
    Ok((messages, params, stream))
}

async fn chat_completions(State(st): State<AppState>, body: Bytes) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, "invalid_request_error", format!("invalid JSON: {e}"));
        }
    };
    let (messages, params, stream) = match parse_request(&v, st.max_new_tokens) {
        Ok(x) => x,
        Err(m) => return error(StatusCode::BAD_REQUEST, "invalid_request_error", m),
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    let (delta_tx, delta_rx) = if stream {
        let (tx, rx) = mpsc::channel::<String>(64);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let job = Job { messages, params, deltas: delta_tx, reply: reply_tx };
    if st.jobs.try_send(job).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy",
            "the request queue is full; retry later",
        );
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("chatcmpl-{:x}-{n}", now());
    let model = st.model_name.clone();
    match delta_rx {
        None => match reply_rx.await {
            Ok(Ok(out)) => axum::Json(json!({
                "id": id,
                "object": "chat.completion",
                "created": now(),
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": out.text},
                    "finish_reason": out.finish_reason,
                }],
                "usage": {
                    "prompt_tokens": out.prompt_tokens,
                    "completion_tokens": out.completion_tokens,
                    "total_tokens": out.prompt_tokens + out.completion_tokens,
                },
            }))
            .into_response(),
            Ok(Err(e)) => job_error(e),
            Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "the model worker stopped"),
        },
        Some(mut deltas) => {
            // SSE: a role chunk, content chunks as they come, a finish chunk, then [DONE]. Errors
            // after the first byte can only be reported in-stream.
            let (tx, rx) = mpsc::channel::<Result<Event, std::convert::Infallible>>(64);
            tokio::spawn(async move {
                let chunk = |delta: Value, finish: Value| {
                    Event::default().data(
                        json!({
                            "id": id, "object": "chat.completion.chunk", "created": now(), "model": model,
                            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                        })
                        .to_string(),
                    )
                };
                if tx.send(Ok(chunk(json!({"role": "assistant", "content": ""}), Value::Null))).await.is_err()
                {
                    return;
                }
                while let Some(d) = deltas.recv().await {
                    if tx.send(Ok(chunk(json!({"content": d}), Value::Null))).await.is_err() {
                        return; // client gone; dropping `deltas` stops the worker
                    }
                }
                let last = match reply_rx.await {
                    Ok(Ok(out)) => chunk(json!({}), json!(out.finish_reason)),
                    Ok(Err(JobError::TooLong(m) | JobError::Bad(m) | JobError::Internal(m))) => {
                        Event::default().data(json!({"error": {"message": m}}).to_string())
                    }
                    Err(_) => {
                        Event::default().data(json!({"error": {"message": "worker stopped"}}).to_string())
                    }
                };
                let _ = tx.send(Ok(last)).await;
                let _ = tx.send(Ok(Event::default().data("[DONE]"))).await;
            });
            Sse::new(ReceiverStream::new(rx)).into_response()
        }
    }
}

fn job_error(e: JobError) -> Response {
    match e {
        JobError::TooLong(m) => error(StatusCode::PAYLOAD_TOO_LARGE, "context_length_exceeded", m),
        JobError::Bad(m) => error(StatusCode::BAD_REQUEST, "invalid_request_error", m),
        JobError::Internal(m) => error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", m),
    }
}

async fn models(State(st): State<AppState>) -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": st.model_name, "object": "model", "created": now(), "owned_by": "longalign-rs"}],
    }))
    .into_response()
}

/// Loads the model on its thread, binds, and serves until Ctrl-C (or `shutdown` resolves).
/// `on_bound` receives the bound address (port 0 picks a free one).
pub async fn serve<B: Backend>(
    cfg: ServeConfig,
    device: B::Device,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    B::Device: Send + 'static,
{
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(cfg.queue.max(1));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let wcfg = cfg.clone();
    std::thread::Builder::new()
        .name("model".into())
        .spawn(move || worker::<B>(&wcfg, device, jobs_rx, ready_tx))?;
    ready_rx.recv().map_err(|_| anyhow::anyhow!("the model thread died while loading"))??;
    let state =
        AppState { jobs: jobs_tx, model_name: cfg.model_name.clone(), max_new_tokens: cfg.max_new_tokens };
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(cfg.api_key.clone(), authorize))
        .with_state(state);
    if let Some(w) = exposure_warning(cfg.addr, cfg.api_key.as_ref()) {
        eprintln!("{w}");
    }
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {}: {e}", cfg.addr))?;
    on_bound(listener.local_addr()?);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// The name a served model goes by without `--name`: its directory's, or for a run's `export/`,
/// the run's.
pub fn model_name(dir: &std::path::Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let last = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if last == "export" {
        dir.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned()).unwrap_or(last)
    } else {
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_checked_exactly_and_never_printed() {
        let k = ApiKey::new("s3cret-key").unwrap();
        let h = |v: &str| HeaderValue::from_str(v).unwrap();
        assert!(k.admits(Some(&h("Bearer s3cret-key"))));
        for wrong in ["Bearer s3cret-kez", "Bearer s3cret-key2", "Bearer ", "s3cret-key", "Basic s3cret-key"]
        {
            assert!(!k.admits(Some(&h(wrong))), "{wrong}");
        }
        assert!(!k.admits(None));
        assert!(!format!("{k:?}").contains("s3cret"));
        assert!(ApiKey::new(" ").is_err() && ApiKey::new("a b").is_err());
    }

    #[test]
    fn exposing_without_a_key_warns() {
        let k = ApiKey::new("k").unwrap();
        let (lo, all) = ("127.0.0.1:8000".parse().unwrap(), "0.0.0.0:8000".parse().unwrap());
        assert!(exposure_warning(lo, None).is_none());
        assert!(exposure_warning(all, Some(&k)).is_none());
        assert!(exposure_warning(all, None).unwrap().contains("without an API key"));
        assert!(exposure_warning("[::1]:80".parse().unwrap(), None).is_none());
    }
}
