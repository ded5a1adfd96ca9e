//! `core-cli train`, `score`, `export` and `demo` (the embedded default): flags → a library
//! configuration → one library call → print.

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use clap::Args;

use super::{BatchArgs, RecordArgs};
use crate::backend::Backend;
use crate::data::{ModelTokenizer, TokenizedDataset};
use crate::train::demo::{self, DemoOptions, EMBEDDED_EPOCHS};
use crate::train::{LaunchOptions, RunDir, TrainConfig, checkpoint, launch, teacher_forced};

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// A preset (`tiny` = the embedded default; `small`, `medium` = wider, random-init shapes for
    /// benchmarks), a Hugging Face model directory, or a Hub id `org/name[@revision]` (downloaded
    /// into the Hugging Face cache; HF_TOKEN, HF_ENDPOINT, HF_HUB_OFFLINE apply).
    #[arg(long, visible_alias = "preset", default_value = "tiny")]
    pub model: String,
    /// Training data (.jsonl/.json, or a Hub file `hf://datasets/org/name[@revision]/path`); the
    /// embedded sample when absent.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Tokenizer directory or Hub id (default: the model's; built-in for presets).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub records: RecordArgs,
    /// cpu (Burn's Flex backend), wgpu (Vulkan/Metal/DX12) or cuda (needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub backend: Backend,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Peak learning rate (default: 2e-5 as LongAlign for pretrained models, 2e-4 for their LoRA
    /// adapters; 2e-3 for presets trained from scratch).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 0.03)]
    pub warmup_ratio: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 disables).
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f64,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Run directory (default: runs/<date-time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, with its saved configuration.
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Keep only each decoder layer's input in the forward pass and recompute the layer (its MLP
    /// in chunks of tokens) in the backward: memory of one layer instead of all, one more forward.
    #[arg(long)]
    pub activation_checkpointing: bool,
    /// Compute each micro-batch as one stream of its sequences, back to back, instead of its rows
    /// padded to capacity (`--padding-free false`: the padded rows, padding computed, as the
    /// paper's naive and sorted batching cost). Same loss and gradients either way.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub padding_free: bool,
    /// Pad each sequence to a multiple of N tokens inside attention: identical results, far fewer
    /// distinct kernel shapes to compile (default: 64 on wgpu and cuda, off on cpu).
    #[arg(long)]
    pub seq_bucket: Option<usize>,
    /// Before step 1, run forward and backward once per distinct input shape of the plan, results
    /// dropped, so kernels are compiled and tuned up front and later steps run at speed (default:
    /// true on wgpu and cuda, false on cpu, which compiles nothing).
    #[arg(long, action = clap::ArgAction::Set)]
    pub warm_up: Option<bool>,
    /// Attention: auto (= varlen: the varlen flash-attention kernel, CubeCL on wgpu and cuda, a
    /// host kernel on cpu), segmented (plain per-sequence tensor ops), bucketed:N, or reference
    /// (dense block-diagonal mask: the slow oracle).
    #[arg(long, default_value = "auto")]
    pub attention: crate::model::AttentionMode,
    /// Compute precision: f32, or bf16 / f16 mixed precision (weights, gradients and AdamW state
    /// stay f32; matmuls and activations in half precision; norms, softmax and the loss in f32).
    /// bf16 on cpu and cuda; wgpu has f16 where the adapter has shader-f16.
    #[arg(long, default_value = "f32")]
    pub precision: crate::model::Precision,
    /// No progress bar or summary.
    #[arg(long)]
    pub quiet: bool,
    /// Also write the run summary (steps, losses, tokens, wall time, peak memory) as JSON here.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    #[command(flatten)]
    pub lora: super::lora::LoraArgs,
    #[command(flatten)]
    pub dist: LaunchOptions,
}

impl TrainArgs {
    /// The run configuration for `world` data-parallel ranks (the plan is cut for all of them).
    pub fn to_config(&self, world: usize) -> TrainConfig {
        let preset = crate::model::LlamaConfig::preset(&self.model).is_some();
        let b = &self.batch;
        let opts = crate::plan::PlanOptions {
            max_tokens: Some(b.max_tokens.unwrap_or(if preset { 2048 } else { 65536 })),
            ..b.options(world)
        };
        // The budget is kept whatever the strategy (the planner reads it for sorted only), as
        // config.toml has always stored it.
        let plan = crate::plan::PlanConfig { token_budget: b.token_budget, ..opts.config(b.strategy) };
        let lora = self.lora.to_config();
        TrainConfig {
            model: self.model.clone(),
            data: self.data.clone(),
            tokenizer: self.tokenizer.clone(),
            chat_template: self.records.chat_template.clone(),
            format: self.records.format.0,
            skip_invalid: self.records.skip_invalid,
            turns: self.records.turns,
            plan,
            lr: self.lr.unwrap_or(match (preset, lora.is_some()) {
                (true, _) => 2e-3,
                (false, true) => 2e-4,
                (false, false) => 2e-5,
            }),
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: self.weight_decay,
            warmup_ratio: self.warmup_ratio,
            clip_norm: (self.clip_norm > 0.0).then_some(self.clip_norm),
            max_steps: self.steps,
            checkpoint_every: self.checkpoint_every,
            loss_chunk: 1024,
            init_seed: b.seed,
            backend: self.backend,
            activation_checkpointing: self.activation_checkpointing,
            padding_free: self.padding_free,
            seq_bucket: self.seq_bucket.or(self.backend.default_seq_bucket()),
            warm_up: self.warm_up.unwrap_or(self.backend.compiles_per_shape()),
            attention: self.attention,
            precision: self.precision,
            lora,
            tf32: false,
        }
    }
}

/// `core-cli train`; `tf32` is the global `--tf32`.
pub fn run(args: &TrainArgs, tf32: bool) -> anyhow::Result<()> {
    let topo = args.dist.topology(|k| std::env::var(k).ok())?;
    let (cfg, out, resume) = match &args.resume {
        Some(dir) => {
            let cfg = RunDir::new(dir).read_config()?;
            if tf32 && !cfg.tf32 {
                anyhow::bail!(
                    "--tf32: {} was trained with exact f32 matmuls, and a resumed run keeps its \
                     configuration (drop --tf32)",
                    dir.display()
                );
            }
            (cfg, dir.clone(), true)
        }
        None => {
            let local = match &topo.devices {
                Some(d) => d.len(),
                None => launch::device_count(args.backend)?,
            };
            let out = args.out.clone().unwrap_or_else(|| RunDir::timestamped().path);
            (TrainConfig { tf32, ..args.to_config(topo.world(local)) }, out, false)
        }
    };
    let summary = launch::train_launched(&cfg, &out, resume, &topo, args.quiet)?;
    if topo.node_rank != 0 {
        return Ok(());
    }
    if let Some(p) = &args.summary_json {
        crate::util::write_atomic(p, serde_json::to_string(&summary)?.as_bytes())?;
    }
    if !args.quiet {
        println!(
            "trained {} steps in {:.1}s: loss {:.4} → {:.4}; {} useful / {} padded tokens ({:.1}% occupancy)",
            summary.steps,
            summary.wall_s,
            summary.first_loss,
            summary.last_loss,
            summary.useful_tokens,
            summary.padded_tokens,
            100.0 * summary.useful_tokens as f64 / summary.padded_tokens.max(1) as f64
        );
        if summary.adapter_dir.is_some() {
            println!(
                "trained {} of {} parameters (AdamW state {}B)",
                crate::util::table::thousands(summary.trainable_parameters as u64),
                crate::util::table::thousands(summary.total_parameters as u64),
                crate::util::table::compact(summary.optimizer_state_bytes as f64)
            );
        }
        let adapter = if summary.adapter_dir.is_some() { ", adapter/" } else { "" };
        println!("run: {} (events.jsonl, checkpoints/, export/{adapter})", out.display());
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Hugging Face model directory (e.g. a run's export/) or Hub id `org/name[@revision]`.
    #[arg(long)]
    pub model: PathBuf,
    /// A PEFT LoRA adapter directory (or Hub id) to apply to the model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Data file, or a Hub file `hf://datasets/org/name[@revision]/path`.
    #[arg(long)]
    pub data: PathBuf,
    /// Tokenizer directory (default: the model directory).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[command(flatten)]
    pub records: RecordArgs,
    #[arg(long, default_value = "cpu")]
    pub backend: Backend,
    /// Compute each example at a length rounded up to few repeated sizes (powers of two from this
    /// bucket, then multiples of 1,024), so JIT backends compile per bucket, not per length
    /// (default: 64 on wgpu and CUDA, 1 = exact lengths on the CPU). Scores do not change.
    #[arg(long)]
    pub seq_bucket: Option<usize>,
    /// Write JSON lines here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Per-example mean cross entropy over the target tokens: `{"index","loss","target_tokens"}` lines.
pub fn score(args: &ScoreArgs) -> anyhow::Result<()> {
    let model = crate::hub::resolve_path(&args.model)?;
    let tokenizer = args.tokenizer.as_deref().map(crate::hub::resolve_path).transpose()?;
    let mut tok = ModelTokenizer::load(
        Some(tokenizer.as_deref().unwrap_or(&model)),
        args.records.chat_template.as_deref(),
    )?;
    tok.turns = args.records.turns;
    let data = crate::hub::resolve_file(&args.data)?;
    let ds = TokenizedDataset::load(&data, args.records.format.0, args.records.skip_invalid, &tok)?;
    let bucket = args.seq_bucket.or(args.backend.default_seq_bucket()).unwrap_or(1);
    let scores = crate::with_backend!(args.backend, |B, device| teacher_forced::score_dataset::<
        <B as AutodiffBackend>::InnerBackend,
    >(
        &model,
        args.adapter.as_deref(),
        &ds,
        bucket,
        &device
    )?);
    let mut lines = String::new();
    for s in scores {
        let line = serde_json::json!({"index": s.index, "loss": s.loss, "target_tokens": s.target_tokens});
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    match &args.out {
        Some(p) => crate::util::write_atomic(p, lines.as_bytes())?,
        None => print!("{lines}"),
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A run directory (uses its last checkpoint).
    pub run: PathBuf,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// A LoRA run's adapter as a PEFT directory (adapter_config.json + adapter_model.safetensors)
    /// instead of the merged Hugging Face model.
    #[arg(long)]
    pub adapter: bool,
}

/// Exports a run's last checkpoint as a Hugging Face directory or a PEFT adapter.
pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let format = if args.adapter { checkpoint::ExportFormat::Peft } else { checkpoint::ExportFormat::Merged };
    let step = checkpoint::export_latest(&RunDir::new(&args.run), &args.out, format)?;
    println!("exported step {step} of {} to {}", args.run.display(), args.out.display());
    Ok(())
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Epochs over the sample.
    #[arg(long, default_value_t = EMBEDDED_EPOCHS)]
    pub epochs: usize,
    /// Train on this file instead of the bundled sample (the held-out split stays the bundled one).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Stop after this many steps (for a quick look).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Peak learning rate (default: 3e-3).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Run directory (default: runs/<date-time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seed of the model's initialisation and the data order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl DemoArgs {
    pub fn options(&self) -> DemoOptions {
        DemoOptions {
            epochs: self.epochs,
            data: self.data.clone(),
            steps: self.steps,
            lr: self.lr,
            out: self.out.clone(),
            seed: self.seed,
        }
    }
}

/// `core-cli` with no arguments (= `core-cli demo`): train the tiny preset on the embedded sample,
/// then evaluate it on the held-out split, before and after.
pub fn embedded_default(opts: &DemoOptions) -> anyhow::Result<()> {
    println!("{}", demo::intro());
    print!("{}", demo::run(opts)?.render());
    Ok(())
}
