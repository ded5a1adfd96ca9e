//! A loaded chat model: tokenizer + chat template + weights, answering conversations. Shared by
//! `core-cli generate`, `core-cli serve` and the evaluations.

use std::path::Path;

use burn::tensor::backend::Backend;
use serde::Serialize;

use crate::data::tokenize::ModelTokenizer;
use crate::data::{Message, Role};
use crate::model::generate::{FinishReason, GenerateConfig, generate, middle_truncate};
use crate::model::peft::load_hf_adapted;
use crate::model::{Llama, LlamaConfig};

/// Sampling and limits of one answer (the OpenAI request fields we honour).
#[derive(Debug, Clone)]
pub struct ChatParams {
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    /// The answer ends before the first of these strings (which is not returned).
    pub stop: Vec<String>,
    /// Prompts longer than this many tokens lose the middle of their last user message, as
    /// LongBench-Chat truncates (keep the first and last halves).
    pub max_prompt_tokens: Option<usize>,
}

impl Default for ChatParams {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop: Vec::new(),
            max_prompt_tokens: None,
        }
    }
}

/// One answer and what it cost.
#[derive(Debug, Clone, Serialize)]
pub struct ChatOutput {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
}

pub struct ChatModel<B: Backend> {
    pub cfg: LlamaConfig,
    pub model: Llama<B>,
    pub tok: ModelTokenizer,
    /// End-of-turn token ids: config.json's and generation_config.json's `eos_token_id`s and the
    /// tokenizer's `eos_token`.
    pub stop_tokens: Vec<u32>,
    pub device: B::Device,
    /// [`GenerateConfig::kv_bucket`]: 1 after `load`; [`Self::for_backend`] sets it.
    pub kv_bucket: usize,
}

/// `eos_token_id` as an int or a list of ints.
fn ids(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
        _ => Vec::new(),
    }
}

impl<B: Backend> ChatModel<B> {
    /// Loads a Hugging Face model directory (a run's `export/` included).
    pub fn load(
        dir: &Path,
        adapter: Option<&Path>,
        tokenizer: Option<&Path>,
        chat_template: Option<&Path>,
        device: &B::Device,
    ) -> anyhow::Result<Self> {
        // Hub ids (`org/name[@revision]`) load from the Hugging Face cache, downloading as needed.
        let (dir, tokenizer) =
            (crate::hub::resolve_path(dir)?, tokenizer.map(crate::hub::resolve_path).transpose()?);
        let dir = dir.as_path();
        let tok = ModelTokenizer::load(Some(tokenizer.as_deref().unwrap_or(dir)), chat_template)?;
        let (cfg, model) = load_hf_adapted::<B>(dir, adapter, device)?;
        let mut stop_tokens: Vec<u32> = cfg.eos_token_id.into_iter().collect();
        for file in ["config.json", "generation_config.json"] {
            if let Ok(s) = std::fs::read_to_string(dir.join(file)) {
                let v: serde_json::Value = serde_json::from_str(&s)
                    .map_err(|e| anyhow::anyhow!("{}: invalid JSON: {e}", dir.join(file).display()))?;
                stop_tokens.extend(ids(v.get("eos_token_id")));
            }
        }
        if let Some(eos) = tok.template.special_tokens().get("eos_token") {
            stop_tokens.extend(tok.token_id(eos));
        }
        stop_tokens.sort_unstable();
        stop_tokens.dedup();
        Ok(Self { cfg, model, tok, stop_tokens, device: device.clone(), kv_bucket: 1 })
    }

    /// Generation's shapes for `backend`: bucketed key counts (64) where kernels compile per
    /// shape (wgpu, CUDA), exact ones on the CPU. Answers do not change.
    pub fn for_backend(mut self, backend: crate::backend::Backend) -> Self {
        self.kv_bucket = backend.default_seq_bucket().unwrap_or(1);
        self
    }

    /// The prompt's token ids: the conversation rendered with the generation prompt, tokenized
    /// without added special tokens (the template writes them), as `apply_chat_template` does.
    pub fn prompt_ids(&self, messages: &[Message]) -> anyhow::Result<Vec<u32>> {
        let text = self.tok.render(messages, true)?;
        let enc =
            self.tok.tokenizer.encode(text.as_str(), false).map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The prompt, with the middle of the last user message cut so it fits `max` tokens.
    pub fn fitted_prompt(&self, messages: &[Message], max: Option<usize>) -> anyhow::Result<Vec<u32>> {
        let ids = self.prompt_ids(messages)?;
        let Some(max) = max else { return Ok(ids) };
        if ids.len() <= max {
            return Ok(ids);
        }
        let Some(k) = messages.iter().rposition(|m| m.role == Role::User) else {
            anyhow::bail!("prompt of {} tokens exceeds {max} and has no user message to shorten", ids.len())
        };
        let content = self
            .tok
            .tokenizer
            .encode(messages[k].content.as_str(), false)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let content = content.get_ids();
        let overhead = ids.len().saturating_sub(content.len());
        if overhead >= max {
            anyhow::bail!("the prompt's template and other messages alone take {overhead} ≥ {max} tokens");
        }
        let mut budget = max - overhead;
        // Decoding and re-encoding can merge tokens differently; shrink until it fits.
        loop {
            let kept = middle_truncate(content, budget);
            let text = self.tok.tokenizer.decode(&kept, true).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut shorter = messages.to_vec();
            shorter[k].content = text;
            let ids = self.prompt_ids(&shorter)?;
            if ids.len() <= max || budget == 0 {
                return Ok(ids);
            }
            budget = budget.saturating_sub((ids.len() - max).max(1));
        }
    }

    /// LongBench-Chat's truncation of a raw prompt: over `max` tokens (counted without special
    /// tokens), keep the decoded first and last `max / 2` tokens, concatenated.
    pub fn middle_truncated(&self, text: &str, max: usize) -> anyhow::Result<String> {
        let enc = self.tok.tokenizer.encode(text, false).map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        let ids = enc.get_ids();
        if ids.len() <= max {
            return Ok(text.to_string());
        }
        let half = max / 2;
        let dec =
            |x: &[u32]| self.tok.tokenizer.decode(x, true).map_err(|e| anyhow::anyhow!("tokenizer: {e}"));
        Ok(dec(&ids[..half])? + &dec(&ids[ids.len() - half..])?)
    }

    /// Answers a conversation. `on_text` receives the answer as it grows (deltas of complete
    /// characters) and may return `false` to stop early.
    pub fn chat(
        &self,
        messages: &[Message],
        p: &ChatParams,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> anyhow::Result<ChatOutput> {
        let prompt = self.fitted_prompt(messages, p.max_prompt_tokens)?;
        let gc = GenerateConfig {
            max_new_tokens: p.max_new_tokens,
            temperature: p.temperature,
            top_p: p.top_p,
            seed: p.seed,
            stop_tokens: self.stop_tokens.clone(),
            kv_bucket: self.kv_bucket,
        };
        let mut ids = Vec::new();
        let mut sent = 0; // bytes of the text already passed to on_text
        let mut stopped_at: Option<usize> = None;
        let mut keep_going = true;
        let (_, mut reason) = generate(&self.model, &self.cfg, &prompt, &gc, &self.device, |t| {
            ids.push(t);
            let text = self.tok.tokenizer.decode(&ids, true).unwrap_or_default();
            if let Some(at) = p.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                stopped_at = Some(at);
                if at > sent {
                    on_text(&text[sent..at]);
                }
                return false;
            }
            // Hold back a trailing partial character (byte tokens decode it as U+FFFD) and any
            // tail that could still become a stop string.
            let mut safe = text.trim_end_matches('\u{FFFD}').len();
            for s in &p.stop {
                for cut in 1..s.len() {
                    if s.is_char_boundary(cut) && text.ends_with(&s[..cut]) {
                        safe = safe.min(text.len() - cut);
                    }
                }
            }
            while !text.is_char_boundary(safe) {
                safe -= 1;
            }
            if safe > sent {
                keep_going = on_text(&text[sent..safe]);
                sent = safe;
            }
            keep_going
        });
        let mut text = self.tok.tokenizer.decode(&ids, true).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(at) = stopped_at {
            text.truncate(at);
            reason = FinishReason::Stop;
        } else if text.len() > sent {
            on_text(&text[sent..]);
        }
        Ok(ChatOutput {
            text,
            prompt_tokens: prompt.len(),
            completion_tokens: ids.len(),
            finish_reason: reason,
        })
    }
}
