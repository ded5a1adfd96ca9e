//! A client for any OpenAI-compatible `/v1/chat/completions` endpoint (OpenAI, vLLM, llama.cpp,
//! Ollama, `core-cli serve`): timeouts, retries with exponential backoff and jitter on 429, 5xx,
//! timeouts and dropped connections, and a concurrency limit. The API key comes from the
//! environment and is never printed: `Debug` redacts it and errors never include headers.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::util::rng::SplitMix64;

/// Where to send requests and how hard to try.
#[derive(Clone)]
pub struct ClientConfig {
    /// Base URL as the OpenAI SDK takes it, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubles each retry (with ±50% jitter), capped at 60 s.
    pub backoff: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl ClientConfig {
    pub fn new(base_url: &str, model: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            api_key: None,
            timeout: Duration::from_secs(600),
            max_retries: 6,
            backoff: Duration::from_secs(1),
            concurrency: 4,
        }
    }

    /// Reads the key from the environment variable `name` (absent = no key, which local servers
    /// accept).
    pub fn with_key_from_env(mut self, name: &str) -> Self {
        self.api_key = std::env::var(name).ok().filter(|k| !k.is_empty());
        self
    }

    /// The same endpoint, trying as hard as `http` says.
    pub fn with_http(self, http: Http) -> Self {
        Self {
            timeout: http.timeout,
            max_retries: http.retries,
            backoff: http.backoff,
            concurrency: http.concurrency.max(1),
            ..self
        }
    }
}

/// How hard a client tries: what every command that talks to an endpoint lets the user set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Http {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Retries after the first attempt (429, 5xx, timeouts), with exponential backoff and jitter.
    pub retries: u32,
    /// Per-request timeout.
    pub timeout: Duration,
    /// First backoff (doubles per retry).
    pub backoff: Duration,
}

impl Http {
    /// A client for `url` serving `model`, its key read from the environment variable `key_env`
    /// (never printed or written anywhere).
    pub fn client(self, url: &str, model: &str, key_env: &str) -> anyhow::Result<Client> {
        Client::new(ClientConfig::new(url, model).with_key_from_env(key_env).with_http(self))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// One request: the fields every OpenAI-compatible server understands.
#[derive(Debug, Clone, Serialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub temperature: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl ChatRequest {
    pub fn new(messages: Vec<ChatMessage>, temperature: f32) -> Self {
        Self { messages, temperature, max_tokens: None, top_p: None, seed: None }
    }
}

/// The answer and its token usage (0 where the server reports none).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatReply {
    pub content: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub finish_reason: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server said no in a way retrying will not fix (4xx other than 408/409/429).
    #[error("{url}: HTTP {status}: {body}")]
    Rejected { url: String, status: u16, body: String },
    /// Retries exhausted; the last failure.
    #[error("{url}: gave up after {attempts} attempts; last error: {last}")]
    GaveUp { url: String, attempts: u32, last: String },
    #[error("{url}: unexpected response: {message}")]
    Malformed { url: String, message: String },
}

#[derive(Clone)]
pub struct Client {
    cfg: Arc<ClientConfig>,
    http: reqwest::Client,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.cfg.fmt(f)
    }
}

#[derive(Deserialize)]
struct WireReply {
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}
#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}
#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
}
#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// Whether an HTTP status is worth another try.
fn retryable(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || status >= 500
}

/// Response bodies go into error messages shortened, so a huge HTML error page stays readable.
fn excerpt(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl Client {
    pub fn new(cfg: ClientConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(cfg.timeout).build()?;
        let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        Ok(Self { cfg: Arc::new(cfg), http, slots })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Servers sometimes echo the request's key in an error body: never pass it on.
    fn redact(&self, s: &str) -> String {
        match &self.cfg.api_key {
            Some(k) if k.len() >= 4 => s.replace(k.as_str(), "<redacted>"),
            _ => s.to_string(),
        }
    }

    fn url(&self) -> String {
        format!("{}/chat/completions", self.cfg.base_url)
    }

    /// Sends `req`, retrying transient failures. `seed` varies the jitter between callers.
    pub async fn chat(&self, req: &ChatRequest) -> Result<ChatReply, ClientError> {
        let url = self.url();
        let _slot = self.slots.acquire().await.expect("semaphore never closed");
        let mut body = serde_json::to_value(req).expect("request serializes");
        body["model"] = self.cfg.model.clone().into();
        let mut rng = SplitMix64::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        );
        let mut last = String::new();
        let attempts = self.cfg.max_retries + 1;
        for attempt in 0..attempts {
            if attempt > 0 {
                let base = self.cfg.backoff.as_secs_f64() * 2f64.powi(attempt as i32 - 1);
                let jitter = 0.5 + rng.unit_f64(); // ×[0.5, 1.5)
                let wait = (base * jitter).min(60.0);
                tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            }
            let mut rb = self.http.post(&url).json(&body);
            if let Some(k) = &self.cfg.api_key {
                rb = rb.bearer_auth(k);
            }
            let resp = match rb.send().await {
                Ok(r) => r,
                Err(e) => {
                    // Timeouts, refused or reset connections: transient. `without_url` keeps the
                    // message short; the URL is in our own error.
                    last = e.without_url().to_string();
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<f64>().ok());
            let text = match resp.text().await {
                Ok(t) => t,
                Err(e) => {
                    last = format!("reading the body: {}", e.without_url());
                    continue;
                }
            };
            if status != 200 {
                if !retryable(status) {
                    return Err(ClientError::Rejected { url, status, body: excerpt(&self.redact(&text)) });
                }
                last = format!("HTTP {status}: {}", excerpt(&self.redact(&text)));
                if let Some(s) = retry_after {
                    tokio::time::sleep(Duration::from_secs_f64(s.clamp(0.0, 60.0))).await;
                }
                continue;
            }
            let wire: WireReply = match serde_json::from_str(&text) {
                Ok(w) => w,
                // A proxy's half-written body: worth another try, but say what it was.
                Err(e) => {
                    last = format!("invalid JSON ({e}): {}", excerpt(&self.redact(&text)));
                    continue;
                }
            };
            let Some(choice) = wire.choices.into_iter().next() else {
                return Err(ClientError::Malformed { url, message: "no choices".into() });
            };
            let usage = wire.usage.unwrap_or(WireUsage { prompt_tokens: 0, completion_tokens: 0 });
            return Ok(ChatReply {
                content: choice.message.content.unwrap_or_default(),
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                finish_reason: choice.finish_reason,
            });
        }
        Err(ClientError::GaveUp { url, attempts, last })
    }
}
