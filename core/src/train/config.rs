//! A run's configuration (`RUN_DIR/config.toml`) and what every trainer derives from it the same
//! way: the preset model's initialisation and the padding id.

use std::path::PathBuf;

use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

use crate::data::ModelTokenizer;
use crate::data::formats::Format;
use crate::model::{Llama, LlamaConfig};
use crate::plan::PlanConfig;

/// Everything that determines a run; saved as `RUN_DIR/config.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// A preset (`tiny`) or a Hugging Face model directory.
    pub model: String,
    /// Training data; the embedded sample when absent.
    pub data: Option<PathBuf>,
    /// Tokenizer directory (default: the model directory, or the built-in one for presets).
    pub tokenizer: Option<PathBuf>,
    pub chat_template: Option<PathBuf>,
    pub format: Option<Format>,
    pub skip_invalid: bool,
    /// What to train where the template is not prefix-stable (configs from before: `split`,
    /// which changes nothing for the prefix-stable data they could hold).
    #[serde(default)]
    pub turns: crate::data::TurnPolicy,
    pub plan: PlanConfig,
    /// Peak learning rate (LongAlign: 2e-5).
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Fraction of steps of linear warmup before cosine decay.
    pub warmup_ratio: f64,
    /// Global gradient-norm clip (None: no clipping).
    pub clip_norm: Option<f64>,
    /// Stop after this many optimizer steps (None: the whole plan).
    pub max_steps: Option<usize>,
    /// Write a checkpoint every N steps (and always at the end).
    pub checkpoint_every: Option<usize>,
    /// Target tokens per vocabulary-projection chunk in the loss.
    pub loss_chunk: usize,
    /// Seed of the model initialisation (presets); the plan has its own in `plan.seed`.
    pub init_seed: u64,
    pub backend: crate::backend::Backend,
    /// Per-layer activation checkpointing: keep each decoder layer's input only and recompute the
    /// layer (its MLP in chunks of tokens) in the backward pass.
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// Compute each micro-batch as one padding-free stream of its sequences (default) instead of
    /// its rows padded to capacity. A `config.toml` written before this option trains padded, as
    /// it did.
    #[serde(default)]
    pub padding_free: bool,
    /// Pad each packed sequence to a multiple of this inside attention (same result, fewer
    /// tensor shapes for JIT backends); `None` = no padding.
    #[serde(default)]
    pub seq_bucket: Option<usize>,
    /// Before the first step, run forward and backward once for each distinct input shape the plan
    /// holds (results dropped), so a JIT backend compiles and tunes its kernels up front and no
    /// later step stops to compile ([`super::Trainer::warm_up`]). On by default for wgpu and cuda.
    #[serde(default)]
    pub warm_up: bool,
    /// Attention implementation (`auto`: the varlen kernel, on the CPU, wgpu and CUDA backends).
    #[serde(default)]
    pub attention: crate::model::AttentionMode,
    /// Compute format (`bf16`, `f16`: mixed precision with f32 master weights and optimizer).
    #[serde(default)]
    pub precision: crate::model::Precision,
    /// LoRA adapters on a frozen base (`None`: full fine-tuning).
    #[serde(default)]
    pub lora: Option<crate::model::LoraConfig>,
    /// Let f32 matmuls run as TF32 on GPUs whose tensor cores have it (CUDA, Ampere and newer):
    /// faster, ~1e-3 relative error. Off: exact f32, as PyTorch's default. Process-wide
    /// (`jit::set_tf32`); no effect on the CPU, on wgpu, or on bf16 / f16 matmuls.
    #[serde(default)]
    pub tf32: bool,
}

impl TrainConfig {
    /// LongAlign's defaults on the embedded sample with the tiny preset.
    pub fn embedded_default() -> Self {
        Self {
            model: "tiny".into(),
            data: None,
            tokenizer: None,
            chat_template: None,
            format: None,
            skip_invalid: false,
            turns: Default::default(),
            plan: PlanConfig { max_tokens: Some(2048), ..PlanConfig::default() },
            lr: 2e-5,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_ratio: 0.03,
            clip_norm: Some(1.0),
            max_steps: None,
            checkpoint_every: None,
            loss_chunk: 1024,
            init_seed: 0,
            backend: crate::backend::Backend::Cpu,
            activation_checkpointing: false,
            padding_free: true,
            seq_bucket: None,
            warm_up: false,
            attention: Default::default(),
            precision: Default::default(),
            lora: None,
            tf32: false,
        }
    }

    pub fn is_preset(&self) -> bool {
        LlamaConfig::preset(&self.model).is_some()
    }

    /// An error naming the flag and the backend when backend `B` cannot compute in the
    /// configured precision on `device` (every trainer checks before any work).
    pub fn check_precision<B: Backend>(&self, device: &B::Device) -> anyhow::Result<()> {
        if self.precision.supported::<B>(device) {
            return Ok(());
        }
        let hint = match self.backend {
            crate::backend::Backend::Wgpu | crate::backend::Backend::Webgpu => {
                " (WGSL has no bf16; f16 needs an adapter with shader-f16)"
            }
            _ => "",
        };
        anyhow::bail!(
            "--precision {} is not supported by backend \"{}\" on device {device:?}: use --precision f32{hint}",
            self.precision,
            self.backend
        )
    }
}

/// A preset's fresh model, seeded by `init_seed` (with the run's LoRA adapters, if any); `None`
/// when `cfg.model` is not a preset.
pub fn init_preset<B: Backend>(cfg: &TrainConfig, device: &B::Device) -> Option<(LlamaConfig, Llama<B>)> {
    let mc = LlamaConfig::preset(&cfg.model)?;
    let model = Llama::init_seeded(&mc, cfg.init_seed, device);
    Some((mc, adapt(cfg, model, device)))
}

/// `model` as the run trains it: with fresh LoRA adapters (seeded by `init_seed`) and its base
/// frozen when `cfg.lora` is set, unchanged otherwise.
pub fn adapt<B: Backend>(cfg: &TrainConfig, model: Llama<B>, device: &B::Device) -> Llama<B> {
    match &cfg.lora {
        Some(l) => model.with_lora(l, cfg.init_seed, device),
        None => model,
    }
}

/// The id that fills padding: the tokenizer's pad token, else `<|endoftext|>`, else 0 (padding
/// carries no loss and no attention, so any id is correct; these match what HF would use).
pub fn pad_id(tok: &ModelTokenizer) -> u32 {
    tok.tokenizer.get_padding().map(|p| p.pad_id).or_else(|| tok.token_id("<|endoftext|>")).unwrap_or(0)
}

/// The run's optimizer: AdamW with the configured betas, epsilon and weight decay (the learning
/// rate comes per step from the schedule; clipping is ours, by the global norm).
pub fn adamw<B: AutodiffBackend>(cfg: &TrainConfig) -> OptimizerAdaptor<AdamW, Llama<B>, B> {
    AdamWConfig::new()
        .with_beta_1(cfg.beta1 as f32)
        .with_beta_2(cfg.beta2 as f32)
        .with_epsilon(cfg.eps as f32)
        .with_weight_decay(cfg.weight_decay as f32)
        .init::<B, Llama<B>>()
}
