//! The training loop: plan → for each step, for each micro-batch forward/backward with the plan's
//! weights → global-norm clip → AdamW → log → checkpoint. Flat on purpose: one screen of code is the
//! whole algorithm.

pub mod batch;
pub mod checkpoint;
pub mod events;
pub mod grads;
pub mod schedule;
pub mod teacher_forced;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::cast::ToElement as _;
use serde::{Deserialize, Serialize};

use crate::batch::{self as planner, PlanConfig};
use crate::data::formats::{Format, read_str};
use crate::data::{ModelTokenizer, TokenizedDataset, builtin, synth};
use crate::model::load::{load_hf, save_hf};
use crate::model::loss::weighted_cross_entropy_padded;
use crate::model::{AttentionMode, Llama, LlamaConfig};
use events::StepEvent;

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
    pub backend: String,
    /// Burn's balanced activation checkpointing (recompute memory-bound activations).
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// Pad each packed sequence to a multiple of this inside attention (same result, fewer
    /// tensor shapes for JIT backends); `None` = no padding.
    #[serde(default)]
    pub seq_bucket: Option<usize>,
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
            backend: "cpu".into(),
            activation_checkpointing: false,
            seq_bucket: None,
        }
    }

    pub fn is_preset(&self) -> bool {
        LlamaConfig::preset(&self.model).is_some()
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub steps: usize,
    pub first_loss: f64,
    pub last_loss: f64,
    pub useful_tokens: u64,
    pub padded_tokens: u64,
    pub wall_s: f64,
    pub export_dir: PathBuf,
    /// Peak resident memory of the process so far (Linux `VmHWM`), if known.
    pub peak_rss_bytes: Option<u64>,
}

/// Peak resident set size of this process (Linux; `None` elsewhere).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The tokenizer directory of a run: `--tokenizer`, else the model directory; `None` = built-in
/// (presets).
fn tokenizer_dir(cfg: &TrainConfig) -> Option<PathBuf> {
    match (&cfg.tokenizer, cfg.is_preset()) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => None,
        (None, false) => Some(PathBuf::from(&cfg.model)),
    }
}

/// The tokenizer a run uses.
pub fn run_tokenizer(cfg: &TrainConfig) -> anyhow::Result<ModelTokenizer> {
    Ok(ModelTokenizer::load(tokenizer_dir(cfg).as_deref(), cfg.chat_template.as_deref())?)
}

/// The run's training data, tokenized.
pub fn run_data(cfg: &TrainConfig, tok: &ModelTokenizer) -> anyhow::Result<TokenizedDataset> {
    Ok(match &cfg.data {
        Some(p) => TokenizedDataset::load(p, cfg.format, cfg.skip_invalid, tok)?,
        None => {
            let r = read_str("<embedded sample>", synth::TRAIN_JSONL, cfg.format, cfg.skip_invalid)?;
            TokenizedDataset::from_report("<embedded sample>", r, cfg.skip_invalid, tok)?
        }
    })
}

/// The run's model: a fresh preset or a Hugging Face directory.
pub fn run_model<B: AutodiffBackend>(
    cfg: &TrainConfig,
    device: &B::Device,
) -> anyhow::Result<(LlamaConfig, Llama<B>)> {
    if cfg.is_preset() {
        B::seed(device, cfg.init_seed);
        let mc = LlamaConfig::preset(&cfg.model).expect("is_preset");
        Ok((mc.clone(), Llama::init(&mc, device)))
    } else {
        Ok(load_hf(Path::new(&cfg.model), device)?)
    }
}

/// Trains as `cfg` says, writing the run to `out`. With `resume`, continues from the last
/// checkpoint in `out` (the saved config must match).
pub fn train<B: AutodiffBackend>(
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    device: &B::Device,
    quiet: bool,
) -> anyhow::Result<RunSummary> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let config_path = out.join("config.toml");
    if resume {
        let saved: TrainConfig = toml::from_str(
            &std::fs::read_to_string(&config_path)
                .with_context(|| format!("reading {}", config_path.display()))?,
        )
        .with_context(|| format!("{}: not a run config", config_path.display()))?;
        if saved != *cfg {
            bail!(
                "{}: the run was started with another configuration; resume it without changing options",
                config_path.display()
            );
        }
    } else if out.join("events.jsonl").exists() {
        bail!("{} already holds a run: use --resume {} or another --out", out.display(), out.display());
    }
    crate::util::write_atomic(&config_path, toml::to_string(cfg)?.as_bytes())?;

    let tok = run_tokenizer(cfg)?;
    let ds = run_data(cfg, &tok)?;
    if ds.is_empty() {
        bail!("{}: no usable examples", ds.file);
    }
    let (items, truncated) = ds.items(cfg.plan.length_limit(), cfg.plan.overlong);
    let plan = planner::plan(&items, &cfg.plan)?;
    let total = cfg.max_steps.map_or(plan.steps.len(), |m| m.min(plan.steps.len()));
    let warmup = schedule::warmup_steps(cfg.warmup_ratio, total);
    let pad_id =
        tok.tokenizer.get_padding().map(|p| p.pad_id).or_else(|| tok.token_id("<|endoftext|>")).unwrap_or(0);

    let (mcfg, mut model) = run_model::<B>(cfg, device)?;
    if ds.tokens.iter().flat_map(|t| &t.ids).any(|&id| id as usize >= mcfg.vocab_size) {
        bail!("the tokenizer produces ids beyond the model's vocab_size {}", mcfg.vocab_size);
    }
    let mut optim = AdamWConfig::new()
        .with_beta_1(cfg.beta1 as f32)
        .with_beta_2(cfg.beta2 as f32)
        .with_epsilon(cfg.eps as f32)
        .with_weight_decay(cfg.weight_decay as f32)
        .init::<B, Llama<B>>();
    let mut start = 0;
    if resume {
        if let Some(ck) = checkpoint::latest(out)? {
            let (m, o, step) = checkpoint::load::<B, _>(&ck, model, optim, device)?;
            (model, optim, start) = (m, o, step);
        }
        events::truncate_after(&out.join("events.jsonl"), start)?;
    }
    if !quiet {
        eprintln!(
            "training {} ({} parameters) on {} examples ({} truncated) from {}: {} steps of {}",
            cfg.model,
            mcfg.num_parameters(),
            ds.len(),
            truncated,
            ds.file,
            total,
            cfg.plan.strategy
        );
    }
    let bar =
        if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(total as u64) };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps · {msg} · {elapsed} elapsed, ETA {eta}",
        )
        .expect("static template"),
    );
    bar.set_position(start as u64);
    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(out.join("events.jsonl"))?;
    let t0 = Instant::now();
    let (mut first_loss, mut last_loss, mut useful_all, mut padded_all) = (f64::NAN, f64::NAN, 0u64, 0u64);

    for s in start..total {
        let step = &plan.steps[s];
        let ts = Instant::now();
        let mut acc = GradientsAccumulator::<Llama<B>>::new();
        let (mut loss, mut useful, mut padded, mut targets, mut seqs, mut rows) =
            (0f64, 0u64, 0u64, 0u64, 0usize, 0usize);
        // In one process all "devices" of the step run here one after another; data-parallel
        // workers would each take `plan.for_device(rank)` and all-reduce (sum) the gradients.
        for mb in &step.micro_batches {
            let input = batch::build(mb, &ds.tokens, pad_id);
            // Nothing to learn (every answer truncated away): its gradient is zero, skip it.
            if input.weights.iter().all(|&w| w == 0.0) {
                continue;
            }
            let mode = match cfg.seq_bucket {
                Some(b) if b > 1 => AttentionMode::Bucketed(b),
                _ => AttentionMode::Segmented,
            };
            let hidden = model.hidden_with(&mcfg, &input.rows, mode, device);
            let l = weighted_cross_entropy_padded(
                &model,
                hidden,
                &input.labels,
                &input.weights,
                cfg.loss_chunk,
                cfg.seq_bucket.unwrap_or(1),
            );
            loss += l.clone().into_scalar().to_f64();
            acc.accumulate(&model, GradientsParams::from_grads(l.backward(), &model));
            (useful, padded, targets) =
                (useful + input.useful_tokens, padded + input.padded_tokens, targets + input.target_tokens);
            (seqs, rows) = (seqs + input.sequences, rows + input.rows.rows);
        }
        let mut grads = acc.grads();
        let grad_norm = match cfg.clip_norm {
            Some(max) => grads::clip_global_norm::<B, _>(&model, &mut grads, max),
            None => grads::global_norm::<B, _>(&model, &grads),
        };
        let lr = schedule::cosine_with_warmup(cfg.lr, s, total, warmup);
        model = optim.step(lr, model, grads);
        let step_s = ts.elapsed().as_secs_f64();
        let ev = StepEvent {
            v: events::SCHEMA_VERSION,
            step: s + 1,
            epoch: step.epoch,
            loss,
            lr,
            grad_norm,
            useful_tokens: useful,
            padded_tokens: padded,
            target_tokens: targets,
            sequences: seqs,
            rows,
            useful_tok_per_s: useful as f64 / step_s,
            padded_tok_per_s: padded as f64 / step_s,
            occupancy: useful as f64 / padded.max(1) as f64,
            seqs_per_row: seqs as f64 / rows.max(1) as f64,
            step_s,
            elapsed_s: t0.elapsed().as_secs_f64(),
        };
        writeln!(log, "{}", serde_json::to_string(&ev)?)?;
        log.flush()?;
        if first_loss.is_nan() {
            first_loss = loss;
        }
        last_loss = loss;
        (useful_all, padded_all) = (useful_all + useful, padded_all + padded);
        bar.set_message(format!("loss {loss:.4} · {:.0} useful tok/s", ev.useful_tok_per_s));
        bar.inc(1);
        let done = s + 1;
        if cfg.checkpoint_every.is_some_and(|n| done % n == 0) || done == total {
            checkpoint::save::<B, _>(out, done, &model, &optim)?;
        }
        // Crash injection for the resume tests: die here like a killed process (no unwinding, no
        // cleanup), after the step's event and checkpoint are on disk.
        if std::env::var("LONGALIGN_CRASH_AFTER_STEP").ok().and_then(|v| v.parse::<usize>().ok())
            == Some(done)
        {
            std::process::abort();
        }
    }
    bar.finish_and_clear();
    let export_dir = out.join("export");
    export(&model.valid(), &mcfg, cfg, &export_dir)?;
    Ok(RunSummary {
        steps: total,
        first_loss,
        last_loss,
        useful_tokens: useful_all,
        padded_tokens: padded_all,
        wall_s: t0.elapsed().as_secs_f64(),
        export_dir,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// Writes the model as a Hugging Face directory with the run's tokenizer files.
pub fn export<B: burn::tensor::backend::Backend>(
    model: &Llama<B>,
    mcfg: &LlamaConfig,
    cfg: &TrainConfig,
    dir: &Path,
) -> anyhow::Result<()> {
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    match tokenizer_dir(cfg) {
        None => {
            files.push(("tokenizer.json", builtin::tokenizer_json().into_bytes()));
            files.push(("tokenizer_config.json", builtin::tokenizer_config_json().into_bytes()));
        }
        Some(d) => {
            for name in [
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "chat_template.jinja",
                "generation_config.json",
            ] {
                if let Ok(bytes) = std::fs::read(d.join(name)) {
                    files.push((name, bytes));
                }
            }
        }
    }
    save_hf(model, mcfg, dir, &files)
}
