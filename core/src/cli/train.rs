//! `core-cli train`, `score`, `export`: the main job and its companions.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Args;

use super::FormatArg;
use crate::batch::{Algorithm, LossMode, Overlong, PlanConfig, Strategy};
use crate::data::formats::read_str;
use crate::data::{ModelTokenizer, TokenizedDataset, synth};
use crate::model::load::load_hf;
use crate::train::{self, TrainConfig, teacher_forced};

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// A preset (`tiny` = the embedded default; `small`, `medium` = wider, random-init shapes for
    /// benchmarks) or a Hugging Face model directory.
    #[arg(long, visible_alias = "preset", default_value = "tiny")]
    pub model: String,
    /// Training data (.jsonl/.json); the embedded sample when absent.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Tokenizer directory (default: the model directory; built-in for presets).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    #[arg(long, default_value = "auto", value_parser = |s: &str| crate::data::Format::parse_option(s).map(FormatArg))]
    pub format: FormatArg,
    #[arg(long)]
    pub skip_invalid: bool,
    /// cpu (Burn's Flex backend), wgpu (Vulkan/Metal/DX12) or cuda (needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    #[arg(long, default_value = "pack")]
    pub strategy: Strategy,
    #[arg(long, default_value = "ffd")]
    pub algorithm: Algorithm,
    #[arg(long, default_value = "sequence")]
    pub loss: LossMode,
    /// Pack: row capacity; naive/sorted: longest sequence kept. Default 2048 for presets, 65536 otherwise.
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Rows per micro-batch (default: 8 for naive/sorted, 1 for pack).
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub token_budget: Option<u32>,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub accum: usize,
    /// Peak learning rate (default: 2e-5 as LongAlign for pretrained models; 2e-3 for presets
    /// trained from scratch).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 0.03)]
    pub warmup_ratio: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 disables).
    #[arg(long, default_value_t = 1.0)]
    pub clip_norm: f64,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Stop after this many optimizer steps.
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value = "truncate")]
    pub overlong: Overlong,
    /// Run directory (default: runs/<date-time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, with its saved configuration.
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Recompute memory-bound activations in the backward pass instead of storing them.
    #[arg(long)]
    pub activation_checkpointing: bool,
    /// Pad each sequence to a multiple of N tokens inside attention: identical results, far fewer
    /// distinct kernel shapes to compile (default: 64 on wgpu and cuda, off on cpu).
    #[arg(long)]
    pub seq_bucket: Option<usize>,
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
    pub dist: DistArgs,
}

/// Data parallelism: which devices this process drives and where it sits among the nodes.
#[derive(Args, Debug, Clone)]
pub struct DistArgs {
    /// Devices of this node, one data-parallel rank each: `0`, `0,1,2,3` or `all`. On cpu the
    /// indices are replicas on the one CPU device (a simulation of several devices: same maths,
    /// faster only where one replica leaves cores idle). Default: `LOCAL_RANK` when launched by
    /// torchrun-style tools, else `0`.
    #[arg(long)]
    pub devices: Option<String>,
    /// Number of nodes (processes), each with the same number of devices. Default: `WORLD_SIZE`, else 1.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// This node's index, 0..nodes (node 0 hosts the orchestrator and writes the run). Default: `RANK`.
    #[arg(long)]
    pub node_rank: Option<usize>,
    /// `HOST:PORT` of node 0 (the orchestrator listens on PORT). Default: `MASTER_ADDR:MASTER_PORT`.
    #[arg(long)]
    pub master: Option<String>,
    /// `HOST:PORT` at which other nodes reach this node's tensor service. Default: this host
    /// (`LONGALIGN_NODE_HOST`, else 127.0.0.1 when the master is local, else the hostname) and
    /// port MASTER_PORT + 1 + node rank.
    #[arg(long)]
    pub node_addr: Option<String>,
    /// Seconds one collective call may wait for the other ranks before this process stops with
    /// an error (a rank died or hangs).
    #[arg(long, default_value_t = 900)]
    pub collective_timeout: u64,
}

impl Default for DistArgs {
    fn default() -> Self {
        Self {
            devices: None,
            nodes: None,
            node_rank: None,
            master: None,
            node_addr: None,
            collective_timeout: 900,
        }
    }
}

/// The launch topology, device indices not yet turned into backend devices.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// `None` = all devices of the backend.
    pub devices: Option<Vec<usize>>,
    pub nodes: usize,
    pub node_rank: usize,
    pub master: Option<String>,
    pub node_addr: Option<String>,
    pub timeout: std::time::Duration,
}

impl DistArgs {
    /// Resolves flags, then the torchrun-style environment (`WORLD_SIZE`, `RANK`, `LOCAL_RANK`,
    /// `MASTER_ADDR`, `MASTER_PORT`), then defaults. Under torchrun every process is one node
    /// driving one device (`LOCAL_RANK`).
    pub fn topology(&self, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Topology> {
        let num = |flag: Option<usize>, var: &str| -> anyhow::Result<Option<usize>> {
            match flag {
                Some(v) => Ok(Some(v)),
                None => env(var)
                    .map(|v| {
                        v.trim().parse().with_context(|| format!("environment {var}={v:?}: not a number"))
                    })
                    .transpose(),
            }
        };
        let nodes = num(self.nodes, "WORLD_SIZE")?.unwrap_or(1);
        let node_rank = num(self.node_rank, "RANK")?.unwrap_or(0);
        let devices = match self.devices.as_deref().map(str::trim) {
            Some("all") => None,
            Some(list) => Some(parse_device_list(list)?),
            None => Some(vec![num(None, "LOCAL_RANK")?.unwrap_or(0)]),
        };
        let master = match &self.master {
            Some(m) => Some(m.clone()),
            None => {
                env("MASTER_ADDR").map(|a| format!("{a}:{}", env("MASTER_PORT").unwrap_or("29500".into())))
            }
        };
        if nodes > 1 && master.is_none() {
            anyhow::bail!("--nodes {nodes} needs --master HOST:PORT (or MASTER_ADDR and MASTER_PORT)");
        }
        let node_addr = match (&self.node_addr, &master) {
            (Some(a), _) => Some(a.clone()),
            (None, Some(m)) if nodes > 1 => {
                let (mhost, mport) = train::parallel::host_port(m)?;
                let local = matches!(mhost, "127.0.0.1" | "localhost" | "::1" | "[::1]");
                let host = env("LONGALIGN_NODE_HOST").unwrap_or_else(|| {
                    if local {
                        "127.0.0.1".into()
                    } else {
                        std::fs::read_to_string("/proc/sys/kernel/hostname")
                            .map(|h| h.trim().to_string())
                            .ok()
                            .or_else(|| env("HOSTNAME"))
                            .unwrap_or_else(|| "127.0.0.1".into())
                    }
                });
                let port = u16::try_from(mport as usize + 1 + node_rank)
                    .context("MASTER_PORT + 1 + node rank is past 65535: pass --node-addr")?;
                Some(format!("{host}:{port}"))
            }
            _ => None,
        };
        let t = Topology {
            devices,
            nodes,
            node_rank,
            master,
            node_addr,
            timeout: std::time::Duration::from_secs(self.collective_timeout),
        };
        if t.node_rank >= t.nodes {
            anyhow::bail!("node rank {} is not below the number of nodes {}", t.node_rank, t.nodes);
        }
        Ok(t)
    }
}

/// `0,1,3` → [0, 1, 3]; no duplicates.
pub fn parse_device_list(s: &str) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let i: usize = part.trim().parse().with_context(|| {
            format!("--devices {s:?}: {part:?} is not a device index (expected e.g. 0,1,2,3 or all)")
        })?;
        if out.contains(&i) {
            anyhow::bail!("--devices {s:?}: device {i} is listed twice");
        }
        out.push(i);
    }
    Ok(out)
}

/// A backend's device by index (for `--devices`).
pub trait IndexedDevice: Sized {
    /// Device `index`; `only` when it is the run's one device (then the backend's default is used).
    fn nth(index: usize, only: bool) -> anyhow::Result<Self>;
    /// How many devices `all` means.
    fn count() -> usize;
}

impl IndexedDevice for burn::backend::flex::FlexDevice {
    fn nth(_: usize, _: bool) -> anyhow::Result<Self> {
        // One CPU device: several indices are replicas sharing it (a simulation of data parallel).
        Ok(Self)
    }
    fn count() -> usize {
        1
    }
}

impl IndexedDevice for burn::backend::wgpu::WgpuDevice {
    fn nth(index: usize, only: bool) -> anyhow::Result<Self> {
        Ok(if only && index == 0 { Self::default() } else { Self::DiscreteGpu(index) })
    }
    fn count() -> usize {
        1
    }
}

#[cfg(feature = "cuda")]
impl IndexedDevice for burn::backend::cuda::CudaDevice {
    fn nth(index: usize, _: bool) -> anyhow::Result<Self> {
        let n = Self::count();
        if index >= n {
            anyhow::bail!("--devices: CUDA device {index} does not exist ({n} visible)");
        }
        Ok(Self::new(index))
    }
    fn count() -> usize {
        <burn::backend::Cuda as Backend>::device_count(0)
    }
}

/// The backend devices of a topology.
pub fn launch<D: IndexedDevice>(t: &Topology) -> anyhow::Result<train::Launch<D>> {
    let idx = t.devices.clone().unwrap_or_else(|| (0..D::count()).collect());
    let only = idx.len() == 1;
    Ok(train::Launch {
        devices: idx.iter().map(|&i| D::nth(i, only)).collect::<anyhow::Result<_>>()?,
        nodes: t.nodes,
        node_rank: t.node_rank,
        master: t.master.clone(),
        node_addr: t.node_addr.clone(),
        timeout: t.timeout,
    })
}

impl TrainArgs {
    /// The run configuration for `world` data-parallel ranks (the plan is cut for all of them).
    pub fn to_config(&self, world: usize) -> TrainConfig {
        let preset = crate::model::LlamaConfig::preset(&self.model).is_some();
        let strategy = self.strategy;
        TrainConfig {
            model: self.model.clone(),
            data: self.data.clone(),
            tokenizer: self.tokenizer.clone(),
            chat_template: self.chat_template.clone(),
            format: self.format.0,
            skip_invalid: self.skip_invalid,
            plan: PlanConfig {
                strategy,
                algorithm: self.algorithm,
                max_tokens: Some(self.max_tokens.unwrap_or(if preset { 2048 } else { 65536 })),
                batch_size: self.batch_size.unwrap_or(if strategy == Strategy::Pack { 1 } else { 8 }),
                token_budget: self.token_budget,
                devices: world,
                accum: self.accum,
                loss: self.loss,
                seed: self.seed,
                overlong: self.overlong,
                epochs: self.epochs,
            },
            lr: self.lr.unwrap_or(if preset { 2e-3 } else { 2e-5 }),
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: self.weight_decay,
            warmup_ratio: self.warmup_ratio,
            clip_norm: (self.clip_norm > 0.0).then_some(self.clip_norm),
            max_steps: self.steps,
            checkpoint_every: self.checkpoint_every,
            loss_chunk: 1024,
            init_seed: self.seed,
            backend: self.backend.clone(),
            activation_checkpointing: self.activation_checkpointing,
            seq_bucket: self.seq_bucket.or(if self.backend == "cpu" { None } else { Some(64) }),
            attention: self.attention,
            precision: self.precision,
        }
    }
}

/// Runs `f` with the autodiff backend and device named by `backend`.
#[macro_export]
macro_rules! with_backend {
    ($backend:expr, |$b:ident, $device:ident| $body:expr) => {{
        $crate::with_backend!(
            $backend,
            burn::backend::autodiff::checkpoint::strategy::NoCheckpointing,
            |$b, $device| $body
        )
    }};
    ($backend:expr, $ck:ty, |$b:ident, $device:ident| $body:expr) => {{
        match $backend {
            "cpu" => {
                type $b = burn::backend::Autodiff<burn::backend::Flex, $ck>;
                let $device = burn::tensor::Device::<$b>::default();
                $body
            }
            "wgpu" => {
                type $b = burn::backend::Autodiff<burn::backend::Wgpu, $ck>;
                let $device = burn::tensor::Device::<$b>::default();
                $body
            }
            #[cfg(feature = "cuda")]
            "cuda" => {
                type $b = burn::backend::Autodiff<burn::backend::Cuda, $ck>;
                let $device = $crate::cli::train::cuda_device()?;
                $body
            }
            #[cfg(not(feature = "cuda"))]
            "cuda" => anyhow::bail!(
                "this core-cli was built without CUDA: rebuild with `cargo build --release --features cuda`"
            ),
            other => anyhow::bail!("unknown backend {other:?} (expected cpu, wgpu or cuda)"),
        }
    }};
}

/// The first CUDA device, or a clear error where there is none (instead of a panic deep inside).
#[cfg(feature = "cuda")]
pub fn cuda_device() -> anyhow::Result<burn::backend::cuda::CudaDevice> {
    let device = burn::backend::cuda::CudaDevice::new(0);
    let probe = std::panic::catch_unwind(|| {
        let t = burn::tensor::Tensor::<burn::backend::Cuda, 1>::ones([1], &device);
        t.into_data()
    });
    match probe {
        Ok(_) => Ok(device),
        Err(_) => anyhow::bail!(
            "no usable CUDA device: the NVIDIA driver or NVRTC could not be loaded, or no GPU is present"
        ),
    }
}

fn default_out() -> PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let stamp = crate::data::template::strftime("%Y%m%d-%H%M%S", now).unwrap_or_else(|_| now.to_string());
    PathBuf::from("runs").join(stamp)
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let topo = args.dist.topology(|k| std::env::var(k).ok())?;
    let (cfg, out, resume) = match &args.resume {
        Some(dir) => {
            let path = dir.join("config.toml");
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let cfg: TrainConfig =
                toml::from_str(&text).with_context(|| format!("{}: not a run config", path.display()))?;
            (cfg, dir.clone(), true)
        }
        None => {
            let local = match &topo.devices {
                Some(d) => d.len(),
                None => with_backend!(args.backend.as_str(), |B, _device| {
                    <burn::tensor::Device<B> as IndexedDevice>::count()
                }),
            };
            (args.to_config(topo.nodes * local), args.out.clone().unwrap_or_else(default_out), false)
        }
    };
    let summary = if cfg.activation_checkpointing {
        // Burn's balanced checkpointing: memory-bound activations are recomputed in the backward
        // pass instead of kept (compute-bound ones, like matmuls, are still saved).
        type Ck = burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
        with_backend!(cfg.backend.as_str(), Ck, |B, _device| train::train_on::<B>(
            &cfg,
            &out,
            resume,
            &launch(&topo)?,
            args.quiet
        )?)
    } else {
        with_backend!(cfg.backend.as_str(), |B, _device| train::train_on::<B>(
            &cfg,
            &out,
            resume,
            &launch(&topo)?,
            args.quiet
        )?)
    };
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
        println!("run: {} (events.jsonl, checkpoints/, export/)", out.display());
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Hugging Face model directory (e.g. a run's export/).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    /// Tokenizer directory (default: the model directory).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    #[arg(long)]
    pub chat_template: Option<PathBuf>,
    #[arg(long, default_value = "auto", value_parser = |s: &str| crate::data::Format::parse_option(s).map(FormatArg))]
    pub format: FormatArg,
    #[arg(long)]
    pub skip_invalid: bool,
    #[arg(long, default_value = "cpu")]
    pub backend: String,
    /// Write JSON lines here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Per-example mean cross entropy over the target tokens: `{"index","loss","target_tokens"}` lines.
pub fn score(args: &ScoreArgs) -> anyhow::Result<()> {
    let tok = ModelTokenizer::load(
        Some(args.tokenizer.as_deref().unwrap_or(&args.model)),
        args.chat_template.as_deref(),
    )?;
    let ds = TokenizedDataset::load(&args.data, args.format.0, args.skip_invalid, &tok)?;
    let lines = with_backend!(args.backend.as_str(), |B, device| score_lines::<
        <B as AutodiffBackend>::InnerBackend,
    >(&args.model, &ds, &device)?);
    match &args.out {
        Some(p) => crate::util::write_atomic(p, lines.as_bytes())?,
        None => print!("{lines}"),
    }
    Ok(())
}

fn score_lines<B: Backend>(
    model_dir: &Path,
    ds: &TokenizedDataset,
    device: &B::Device,
) -> anyhow::Result<String> {
    let (cfg, model) = load_hf::<B>(model_dir, device)?;
    let mut out = String::new();
    for (i, t) in ds.tokens.iter().enumerate() {
        let s = teacher_forced::score_example(&model, &cfg, t, i, device);
        out.push_str(
            &serde_json::json!({"index": i, "loss": s.loss, "target_tokens": s.target_tokens}).to_string(),
        );
        out.push('\n');
    }
    Ok(out)
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A run directory (uses its last checkpoint).
    pub run: PathBuf,
    /// Output Hugging Face directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Exports a run's last checkpoint as a Hugging Face directory.
pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let path = args.run.join("config.toml");
    let cfg: TrainConfig = toml::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{}: not a run config", path.display()))?;
    let ck = train::checkpoint::latest(&args.run)?
        .with_context(|| format!("{}: no checkpoint", args.run.display()))?;
    type B = burn::backend::Autodiff<burn::backend::Flex>;
    let device = Default::default();
    let (mcfg, model) = train::run_model::<B>(&cfg, &device)?;
    let optim = burn::optim::AdamWConfig::new().init::<B, crate::model::Llama<B>>();
    let (model, _, step) = train::checkpoint::load::<B, _>(&ck, model, optim, &device)?;
    train::export(&burn::module::AutodiffModule::valid(&model), &mcfg, &cfg, &args.out)?;
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

/// `core-cli` with no arguments (= `core-cli demo`): train the tiny preset on the embedded sample,
/// then evaluate it on the held-out split, before and after.
pub fn embedded_default(demo: &DemoArgs) -> anyhow::Result<()> {
    println!(
        "LongAlign-rs embedded default: the tiny preset ({} parameters) trained from scratch on the bundled sample",
        crate::model::LlamaConfig::tiny().num_parameters()
    );
    println!(
        "(passkey and key-value retrieval over long filler, plus short chats), packed with FFD, LongAlign loss weighting.\n"
    );
    let args = TrainArgs {
        model: "tiny".into(),
        data: demo.data.clone(),
        tokenizer: None,
        chat_template: None,
        format: FormatArg(None),
        skip_invalid: false,
        backend: "cpu".into(),
        strategy: Strategy::Pack,
        algorithm: Algorithm::Ffd,
        loss: LossMode::Sequence,
        max_tokens: None,
        batch_size: None,
        token_budget: None,
        accum: 1,
        lr: Some(demo.lr.unwrap_or(EMBEDDED_LR)),
        warmup_ratio: 0.03,
        weight_decay: 0.0,
        clip_norm: 1.0,
        epochs: demo.epochs,
        steps: demo.steps,
        seed: demo.seed,
        overlong: Overlong::Truncate,
        out: Some(demo.out.clone().unwrap_or_else(default_out)),
        resume: None,
        checkpoint_every: None,
        activation_checkpointing: false,
        seq_bucket: None,
        attention: Default::default(),
        precision: Default::default(),
        quiet: false,
        summary_json: None,
        dist: DistArgs::default(),
    };
    let cfg = args.to_config(1);
    let out = args.out.clone().expect("set above");
    type B = burn::backend::Autodiff<burn::backend::Flex>;
    let device = Default::default();
    // Score the untrained model first, so "learned" is a measured difference.
    let tok = train::run_tokenizer(&cfg)?;
    let report = read_str("<embedded eval>", synth::EVAL_JSONL, None, false)?;
    let eval = TokenizedDataset::from_report("<embedded eval>", report, false, &tok)?;
    let (mcfg, untrained) = train::run_model::<B>(&cfg, &device)?;
    let (before, before_keys) =
        evaluate(&burn::module::AutodiffModule::valid(&untrained), &mcfg, &eval, &device);
    let summary = train::train::<B>(&cfg, &out, false, &device, false)?;
    let (mcfg, trained) = load_hf::<burn::backend::Flex>(&summary.export_dir, &device)?;
    let (after, after_keys) = evaluate(&trained, &mcfg, &eval, &device);
    println!(
        "\ntrained {} steps in {:.0}s: training loss {:.3} → {:.3}",
        summary.steps, summary.wall_s, summary.first_loss, summary.last_loss
    );
    println!(
        "held-out split ({} examples), teacher-forced; exact match = greedy decoding reproduces the answer:\n",
        eval.len()
    );
    let mut t = super::table::Table::new(
        [
            "task",
            "examples",
            "loss before",
            "loss after",
            "token acc before",
            "token acc after",
            "exact before",
            "exact after",
        ]
        .map(String::from)
        .to_vec(),
    );
    for (k, a) in &after {
        let b = &before[k];
        t.row(vec![
            k.clone(),
            a.examples.to_string(),
            format!("{:.3}", b.mean_loss),
            format!("{:.3}", a.mean_loss),
            format!("{:.1}%", 100.0 * b.token_accuracy),
            format!("{:.1}%", 100.0 * a.token_accuracy),
            format!("{:.1}%", 100.0 * b.exact_match),
            format!("{:.1}%", 100.0 * a.exact_match),
        ]);
    }
    print!("{}", t.render());
    println!("\nchance: one answer token in 259 (0.4%); a five-digit pass key by guessing: 1 in 90,000.");
    println!("\nretrieval, teacher-forced (each key character predicted from the reference prefix):");
    for ((task, what, chance), (b, a)) in
        [("passkey", "pass-key digits", 0.1), ("kv", "value hex characters", 1.0 / 16.0)]
            .iter()
            .zip(before_keys.iter().zip(&after_keys))
    {
        println!(
            "  {task}: {what} right {:.1}% → {:.1}% ({}/{}; chance {:.2}%, {})",
            100.0 * b.0 as f64 / b.1.max(1) as f64,
            100.0 * a.0 as f64 / a.1.max(1) as f64,
            a.0,
            a.1,
            100.0 * chance,
            above_chance(a.0, a.1, *chance)
        );
    }
    println!("run: {} — `core-cli --help` for training your own data and models.", out.display());
    Ok(())
}

/// How far `right` of `n` characters lies above guessing at rate `p`, in binomial standard
/// deviations, so that "above chance" is a measured statement and not a reading of noise.
fn above_chance(right: usize, n: usize, p: f64) -> String {
    if n == 0 {
        return "no characters".into();
    }
    let z = (right as f64 - n as f64 * p) / (n as f64 * p * (1.0 - p)).sqrt();
    let verdict = if z >= 3.0 { "above chance" } else { "not distinguishable from chance" };
    format!("z = {z:+.1}: {verdict}")
}

/// Epochs of the embedded default (sized to finish within minutes on two CPU cores).
pub const EMBEDDED_EPOCHS: usize = 1;
/// Peak learning rate of the embedded default: a little above the presets' 2e-3, the rate its
/// retrieval results were measured at.
pub const EMBEDDED_LR: f64 = 3e-3;

fn evaluate<B: Backend>(
    model: &crate::model::Llama<B>,
    cfg: &crate::model::LlamaConfig,
    eval: &TokenizedDataset,
    device: &B::Device,
) -> (std::collections::BTreeMap<String, teacher_forced::GroupScore>, [(usize, usize); 2]) {
    let scores: Vec<teacher_forced::ExampleScore> = eval
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| teacher_forced::score_example(model, cfg, t, i, device))
        .collect();
    // The retrieved characters (built-in byte tokenizer: ids are bytes), not the answer's fixed
    // words nor the asked key it restates: the digits of "The pass key is NNNNN." and the value
    // after ": " in "key: value". (right, total) per task, passkey first.
    let mut keys = [(0usize, 0usize); 2];
    for (e, s) in eval.examples.iter().zip(&scores) {
        let k = match e.source.as_deref() {
            Some("passkey") => 0,
            Some("kv") => 1,
            _ => continue,
        };
        let bytes: Vec<Option<u8>> =
            s.per_token.iter().map(|&(l, _)| u8::try_from(l).ok().filter(u8::is_ascii)).collect();
        let value_from = if k == 0 {
            0
        } else {
            bytes.windows(2).position(|w| w == [Some(b':'), Some(b' ')]).map_or(bytes.len(), |i| i + 2)
        };
        for (b, &(_, right)) in bytes.iter().zip(&s.per_token).skip(value_from) {
            let counted = match b {
                Some(c) if k == 0 => c.is_ascii_digit(),
                Some(c) => c.is_ascii_hexdigit(),
                None => false,
            };
            if counted {
                keys[k].1 += 1;
                keys[k].0 += right as usize;
            }
        }
    }
    (
        teacher_forced::summarize(
            eval.examples.iter().map(|e| e.source.as_deref().unwrap_or("-")).zip(&scores),
        ),
        keys,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn above_chance_is_three_standard_deviations() {
        // 640 digits at 10%: mean 64, sd 7.59.
        assert!(above_chance(98, 640, 0.1).starts_with("z = +4.5: above chance"));
        assert!(above_chance(80, 640, 0.1).ends_with("not distinguishable from chance"));
        assert!(above_chance(50, 640, 0.1).starts_with("z = -1.8"));
        assert_eq!(above_chance(0, 0, 0.1), "no characters");
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn topology_defaults_to_one_device_on_one_node() {
        let t = DistArgs::default().topology(env(&[])).unwrap();
        assert_eq!(
            (t.devices, t.nodes, t.node_rank, t.master, t.node_addr),
            (Some(vec![0]), 1, 0, None, None)
        );
        assert_eq!(t.timeout.as_secs(), 900);
    }

    #[test]
    fn topology_reads_torchrun_environment() {
        let vars = [
            ("WORLD_SIZE", "8"),
            ("RANK", "5"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29600"),
        ];
        let t = DistArgs::default().topology(env(&vars)).unwrap();
        assert_eq!(t.devices, Some(vec![1]));
        assert_eq!((t.nodes, t.node_rank), (8, 5));
        assert_eq!(t.master.as_deref(), Some("127.0.0.1:29600"));
        // Each process's tensor service gets its own port after the master's.
        assert_eq!(t.node_addr.as_deref(), Some("127.0.0.1:29606"));
        // Flags win over the environment; a remote master makes the node address this host's.
        let a = DistArgs {
            devices: Some("0,1,2,3".into()),
            nodes: Some(2),
            node_rank: Some(1),
            master: Some("head-node:29500".into()),
            ..DistArgs::default()
        };
        let t = a.topology(env(&[("LONGALIGN_NODE_HOST", "gpu-7"), ("RANK", "9")])).unwrap();
        assert_eq!((t.devices, t.nodes, t.node_rank), (Some(vec![0, 1, 2, 3]), 2, 1));
        assert_eq!(t.node_addr.as_deref(), Some("gpu-7:29502"));
        let t = DistArgs { devices: Some("all".into()), ..DistArgs::default() }.topology(env(&[])).unwrap();
        assert_eq!(t.devices, None);
    }

    #[test]
    fn topology_errors_name_the_problem() {
        let e = DistArgs::default().topology(env(&[("WORLD_SIZE", "two")])).unwrap_err();
        assert!(format!("{e:#}").contains("WORLD_SIZE=\"two\""), "{e:#}");
        let e = DistArgs { nodes: Some(2), ..DistArgs::default() }.topology(env(&[])).unwrap_err();
        assert!(e.to_string().contains("--master"), "{e}");
        assert!(parse_device_list("0,x").unwrap_err().to_string().contains("\"x\" is not a device index"));
        assert!(parse_device_list("1,1").is_err());
        assert_eq!(parse_device_list(" 2, 0 ").unwrap(), vec![2, 0]);
    }
}
