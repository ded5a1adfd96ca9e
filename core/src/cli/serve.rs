//! `core-cli serve`: an OpenAI-compatible endpoint for a local model.

use std::net::SocketAddr;

use burn::tensor::backend::AutodiffBackend;
use clap::Args;

use crate::llm::server::{ApiKey, ServeConfig, serve};

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: super::generate::ModelArgs,
    /// Address to bind; loopback by default (use 0.0.0.0 deliberately to expose it).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port (0 = any free port; the chosen one is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Model name in /v1/models and responses (default: the directory name).
    #[arg(long)]
    pub name: Option<String>,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 32)]
    pub max_body_mib: usize,
    /// Requests waiting for the model at most; more are answered 503.
    #[arg(long, default_value_t = 256)]
    pub queue: usize,
    /// Upper bound (and default) for a request's max_tokens.
    #[arg(long, default_value_t = 1024)]
    pub max_new_tokens: usize,
    /// Require `Authorization: Bearer KEY` on every route (401 otherwise). Prefer the
    /// environment variable: a flag shows in the process list. The key is never printed.
    #[arg(long, env = "LONGALIGN_API_KEY", hide_env_values = true)]
    pub api_key: Option<ApiKey>,
}

pub fn run(a: &ServeArgs) -> anyhow::Result<()> {
    let name = a.name.clone().unwrap_or_else(|| crate::llm::server::model_name(&a.model.model));
    let cfg = ServeConfig {
        model_dir: a.model.model.clone(),
        adapter: a.model.adapter.clone(),
        tokenizer: a.model.tokenizer.clone(),
        chat_template: a.model.chat_template.clone(),
        model_name: name.clone(),
        addr: SocketAddr::new(a.host, a.port),
        max_body_bytes: a.max_body_mib << 20,
        queue: a.queue,
        max_new_tokens: a.max_new_tokens,
        api_key: a.api_key.clone(),
        kv_bucket: a.model.backend.default_seq_bucket().unwrap_or(1),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    crate::with_backend!(a.model.backend, |B, device| rt.block_on(serve::<
        <B as AutodiffBackend>::InnerBackend,
    >(
        cfg,
        device,
        |addr| {
            // One machine-readable line first (tests and scripts wait for it).
            println!("listening on http://{addr}/v1 (model {name})");
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )))
}
