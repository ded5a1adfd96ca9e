//! Peak memory and time of one training step per sequence length, each length in its own process
//! (so that each peak is its own): `core-cli bench memory`. Beside each measurement, the estimate
//! of [`crate::train::memory`] for the same step.
//!
//! The step is a real one — the trainer's forward, backward, clip and AdamW update — over one
//! sequence of exactly `tokens` random token ids whose last eighth are answer tokens, laid out
//! as `core-cli train` lays it out (padding-free by default, one row of that capacity otherwise).

use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, bail};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::data::Tokenized;
use crate::plan::{Item, PlanConfig};
use crate::train::memory::estimate;
use crate::train::{TrainConfig, Trainer};
use crate::util::rng::SplitMix64;
use crate::util::table::{Table, compact, thousands};

/// What to measure (also `core-cli bench memory`'s flags).
#[derive(clap::Args, Debug, Clone)]
pub struct MemoryBenchConfig {
    /// A preset (tiny, small, medium) or a Hugging Face model directory.
    #[arg(long, default_value = "small")]
    pub model: String,
    /// Sequence lengths, one training step each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "4096,16384,65536")]
    pub lengths: Vec<usize>,
    #[arg(long, default_value = "cpu")]
    pub backend: Backend,
    /// As `train --activation-checkpointing`.
    #[arg(long)]
    pub activation_checkpointing: bool,
    /// As `train --padding-free` (false: one row of the sequence's length, the padded layout).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub padding_free: bool,
    #[arg(long, default_value = "f32")]
    pub precision: crate::model::Precision,
}

/// One length's step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryPoint {
    pub tokens: usize,
    pub step_s: f64,
    pub tok_per_s: f64,
    /// Peak resident memory of the process (Linux `VmHWM`), model loading included.
    pub peak_rss_bytes: Option<u64>,
    /// Resident memory after loading the model, before the step.
    pub loaded_rss_bytes: Option<u64>,
    /// The device memory pool after the step (wgpu, CUDA: reserved bytes; the pool keeps its
    /// pages, so this is its peak); `None` on the CPU.
    pub device_pool_bytes: Option<u64>,
    pub loss: f64,
    /// [`crate::train::memory::estimate`] for this step.
    pub estimate_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryBenchReport {
    pub model: String,
    pub parameters: usize,
    pub backend: Backend,
    pub activation_checkpointing: bool,
    pub padding_free: bool,
    pub points: Vec<MemoryPoint>,
}

/// Runs every length in its own process: `exe bench memory --in-process` (`exe` is `core-cli`),
/// a line on stderr as each starts when `progress`.
pub fn run(
    cfg: &MemoryBenchConfig,
    exe: &std::path::Path,
    progress: bool,
) -> anyhow::Result<MemoryBenchReport> {
    let mut points = Vec::new();
    for &n in &cfg.lengths {
        if progress {
            eprintln!("bench: one training step of {} tokens …", thousands(n as u64));
        }
        let mut cmd = Command::new(exe);
        cmd.args(["bench", "memory", "--in-process", "--json", "--model", &cfg.model]);
        cmd.args(["--backend", cfg.backend.as_str(), "--lengths", &n.to_string()]);
        cmd.args(["--precision", &cfg.precision.to_string()]);
        cmd.args(["--padding-free", &cfg.padding_free.to_string()]);
        if cfg.activation_checkpointing {
            cmd.arg("--activation-checkpointing");
        }
        // The process-wide TF32 switch (`core-cli --tf32`) holds for the measuring child too.
        if crate::jit::tf32() {
            cmd.arg("--tf32");
        }
        let out = cmd.output().with_context(|| format!("running {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "the {n}-token step failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let p: MemoryPoint = serde_json::from_str(text.trim())
            .with_context(|| format!("the {n}-token step printed no result: {text}"))?;
        points.push(p);
    }
    let mcfg = crate::train::memory::model_config(&cfg.model)?;
    Ok(MemoryBenchReport {
        model: cfg.model.clone(),
        parameters: mcfg.num_parameters(),
        backend: cfg.backend,
        activation_checkpointing: cfg.activation_checkpointing,
        padding_free: cfg.padding_free,
        points,
    })
}

/// One step of one `tokens`-token sequence in this process (what `--in-process` runs).
pub fn measure<B: AutodiffBackend>(
    cfg: &MemoryBenchConfig,
    tokens: usize,
    device: &B::Device,
) -> anyhow::Result<MemoryPoint> {
    let train = TrainConfig {
        model: cfg.model.clone(),
        plan: PlanConfig { max_tokens: Some(tokens as u32), ..PlanConfig::default() },
        backend: cfg.backend,
        activation_checkpointing: cfg.activation_checkpointing,
        padding_free: cfg.padding_free,
        precision: cfg.precision,
        seq_bucket: cfg.backend.default_seq_bucket(),
        max_steps: Some(1),
        tf32: crate::jit::tf32(),
        ..TrainConfig::embedded_default()
    };
    train.check_precision::<B>(device)?;
    let (mcfg, model) = crate::train::run_model::<B>(&train, device)?;
    let mut rng = SplitMix64::new(tokens as u64);
    let seq = Tokenized {
        ids: (0..tokens).map(|_| (rng.next_u64() % mcfg.vocab_size as u64) as u32).collect(),
        targets: (0..tokens).map(|t| t >= tokens - tokens / 8).collect(),
    };
    let items = [Item { id: 0, total: tokens as u32, target: (tokens / 8) as u32 }];
    let plan = crate::plan::plan(&items, &train.plan)?;
    let loaded = crate::util::mem::rss_bytes();
    let optim = crate::train::adamw::<B>(&train);
    let mut trainer = Trainer::new(
        &train,
        mcfg.clone(),
        model,
        optim,
        Arc::new(plan),
        Arc::new(vec![seq]),
        0,
        device.clone(),
        0,
        0,
    );
    let r = trainer.step().context("the plan has one step")?;
    let computed = r.counts.padded_tokens as usize;
    Ok(MemoryPoint {
        tokens,
        step_s: r.step_s,
        tok_per_s: tokens as f64 / r.step_s,
        peak_rss_bytes: crate::util::mem::peak_rss_bytes(),
        loaded_rss_bytes: loaded,
        device_pool_bytes: longalign_kernels::pool_bytes(device, false),
        loss: r.loss,
        estimate_bytes: estimate(
            &mcfg,
            computed,
            train.loss_chunk,
            cfg.activation_checkpointing,
            cfg.precision,
        )
        .total,
    })
}

impl MemoryBenchReport {
    /// The table `core-cli bench memory` prints.
    pub fn render(&self) -> String {
        let b = |x: Option<u64>| x.map_or("?".into(), |x| format!("{}B", compact(x as f64)));
        let mut t = Table::new(
            ["tokens", "step s", "tok/s", "peak RSS", "after load", "device pool", "estimate", "KB/token"]
                .map(String::from)
                .to_vec(),
        );
        for p in &self.points {
            let per_token = match (p.peak_rss_bytes, p.loaded_rss_bytes) {
                (Some(a), Some(l)) => format!("{:.1}", a.saturating_sub(l) as f64 / 1024.0 / p.tokens as f64),
                _ => "?".into(),
            };
            t.row(vec![
                thousands(p.tokens as u64),
                format!("{:.2}", p.step_s),
                format!("{:.0}", p.tok_per_s),
                b(p.peak_rss_bytes),
                b(p.loaded_rss_bytes),
                p.device_pool_bytes.map_or("-".into(), |x| format!("{}B", compact(x as f64))),
                format!("{}B", compact(p.estimate_bytes as f64)),
                per_token,
            ]);
        }
        format!(
            "one training step per length (own process), model {} ({} parameters), backend {}, {}, {}\n\
             KB/token = (peak − after load) / tokens\n\n{}",
            self.model,
            compact(self.parameters as f64),
            self.backend,
            if self.activation_checkpointing { "activation checkpointing" } else { "no checkpointing" },
            if self.padding_free { "padding-free" } else { "padded" },
            t.render()
        ) + "\n"
    }
}
