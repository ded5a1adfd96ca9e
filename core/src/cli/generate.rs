//! `core-cli generate`: answer one prompt with a local model, streaming the text.

use std::io::Write;
use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use clap::Args;

use crate::data::{Message, Role};
use crate::infer::{ChatModel, ChatParams};

/// A local chat model: shared by `generate` and `serve`.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Hugging Face model directory (e.g. a run's export/), or a Hub id `org/name[@revision]`
    /// (downloaded into the Hugging Face cache; HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE apply).
    #[arg(long)]
    pub model: PathBuf,
    /// A PEFT LoRA adapter directory (or Hub id) to apply to the model, e.g. a LoRA run's
    /// adapter/ (folded into the weights at load).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Tokenizer directory or Hub id (default: the model's).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub backend: crate::backend::Backend,
}

/// Sampling flags shared by `generate` and `eval`.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop before this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Cut the middle of over-long prompts to this many tokens (LongBench-Chat's truncation).
    #[arg(long)]
    pub max_prompt_tokens: Option<usize>,
}

impl SamplingArgs {
    pub fn params(&self) -> ChatParams {
        ChatParams {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            stop: self.stop.clone(),
            max_prompt_tokens: self.max_prompt_tokens,
        }
    }
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The user message; `-` reads it from stdin.
    #[arg(long)]
    pub prompt: String,
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

pub fn run(a: &GenerateArgs) -> anyhow::Result<()> {
    let prompt = if a.prompt == "-" { std::io::read_to_string(std::io::stdin())? } else { a.prompt.clone() };
    let mut messages = Vec::new();
    if let Some(s) = &a.system {
        messages.push(Message::new(Role::System, s.clone()));
    }
    messages.push(Message::new(Role::User, prompt));
    let mm = &a.model;
    let out = crate::with_backend!(mm.backend, |B, device| {
        let (tok, template) = (mm.tokenizer.as_deref(), mm.chat_template.as_deref());
        let m = ChatModel::<<B as AutodiffBackend>::InnerBackend>::load(
            &mm.model,
            mm.adapter.as_deref(),
            tok,
            template,
            &device,
        )?
        .for_backend(mm.backend);
        let t0 = std::time::Instant::now();
        let mut stdout = std::io::stdout();
        let out = m.chat(&messages, &a.sampling.params(), |delta| {
            let _ = stdout.write_all(delta.as_bytes());
            let _ = stdout.flush();
            true
        })?;
        (out, t0.elapsed().as_secs_f64())
    });
    let (out, secs) = out;
    println!();
    eprintln!(
        "[{} prompt tokens, {} new tokens in {:.2}s ({:.1} tok/s), finish: {:?}]",
        out.prompt_tokens,
        out.completion_tokens,
        secs,
        out.completion_tokens as f64 / secs.max(1e-9),
        out.finish_reason
    );
    Ok(())
}
