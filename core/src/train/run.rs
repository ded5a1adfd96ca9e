//! The training run `core-cli train` starts: configuration and run folder → data, plan and one
//! replica per device → one [`Trainer`] per rank (its reduction: the sum over ranks) → each step
//! logged to `events.jsonl` and checkpointed → the model exported. Flat on purpose.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::sync::Arc;

use anyhow::{Context, bail};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use crate::data::{ModelTokenizer, Tokenized, TokenizedDataset, builtin};
use crate::model::load::{load_hf, save_hf};
use crate::model::{Llama, LlamaConfig};
use crate::plan::Plan;

use super::events::{self, StepEvent};
use super::parallel::{self, Launch};
use super::progress;
use super::{RunDir, TrainConfig, Trainer, checkpoint, trainer};

/// What a finished run reports (`--summary-json`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunSummary {
    pub steps: usize,
    pub first_loss: f64,
    pub last_loss: f64,
    pub useful_tokens: u64,
    pub padded_tokens: u64,
    pub wall_s: f64,
    pub export_dir: PathBuf,
    /// The PEFT adapter directory of a LoRA run.
    #[serde(default)]
    pub adapter_dir: Option<PathBuf>,
    /// Parameters trained, of all the model's (LoRA: the adapters and what else it trains).
    #[serde(default)]
    pub trainable_parameters: usize,
    #[serde(default)]
    pub total_parameters: usize,
    /// Bytes of AdamW state (two f32 moments per trainable parameter).
    #[serde(default)]
    pub optimizer_state_bytes: u64,
    /// Peak resident memory of the process so far (Linux `VmHWM`), if known.
    pub peak_rss_bytes: Option<u64>,
    /// The warm-up before step 1 (`--warm-up`), if one ran: shapes, compiles, autotunes, seconds.
    #[serde(default)]
    pub warm_up: Option<trainer::WarmUp>,
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

/// `cfg` with its Hub references (model, tokenizer, data) resolved to local paths, downloading
/// into the Hugging Face cache what it lacks.
pub fn resolve_hub(cfg: &TrainConfig) -> anyhow::Result<TrainConfig> {
    let mut c = cfg.clone();
    c.model = crate::hub::resolve_model(&cfg.model)?;
    if let Some(t) = &cfg.tokenizer {
        c.tokenizer = Some(crate::hub::resolve_model(&t.to_string_lossy())?.into());
    }
    if let Some(d) = &cfg.data {
        c.data = Some(crate::hub::resolve_file(d)?);
    }
    Ok(c)
}

/// The tokenizer a run uses.
pub fn run_tokenizer(cfg: &TrainConfig) -> anyhow::Result<ModelTokenizer> {
    let mut tok = ModelTokenizer::load(tokenizer_dir(cfg).as_deref(), cfg.chat_template.as_deref())?;
    tok.turns = cfg.turns;
    Ok(tok)
}

/// The run's training data, tokenized.
pub fn run_data(cfg: &TrainConfig, tok: &ModelTokenizer) -> anyhow::Result<TokenizedDataset> {
    Ok(TokenizedDataset::load_or_sample(cfg.data.as_deref(), cfg.format, cfg.skip_invalid, tok)?)
}

/// The run's model: a fresh preset or a Hugging Face directory.
pub fn run_model<B: AutodiffBackend>(
    cfg: &TrainConfig,
    device: &B::Device,
) -> anyhow::Result<(LlamaConfig, Llama<B>)> {
    match super::init_preset::<B>(cfg, device) {
        Some(m) => Ok(m),
        None => {
            let (mc, model) = load_hf(Path::new(&cfg.model), device)?;
            Ok((mc, super::config::adapt(cfg, model, device)))
        }
    }
}

/// Trains as `cfg` says on one device, writing the run to `out`. With `resume`, continues from the
/// last checkpoint in `out` (the saved config must match).
pub fn train<B: AutodiffBackend>(
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    device: &B::Device,
    quiet: bool,
) -> anyhow::Result<RunSummary> {
    train_on::<B>(cfg, out, resume, &Launch::single(device.clone()), quiet)
}

/// What every rank of this process shares: the run's data, plan and settings (read-only).
struct Run {
    cfg: TrainConfig,
    dir: RunDir,
    quiet: bool,
    plan: Arc<Plan>,
    tokens: Arc<Vec<Tokenized>>,
    pad_id: u32,
    mcfg: LlamaConfig,
    start: usize,
    total: usize,
    world: usize,
    nodes: usize,
    node_rank: usize,
    devices_per_node: usize,
    timeout: std::time::Duration,
    collective: Option<burn_collective::CollectiveConfig>,
}

/// Trains as `cfg` says on the devices of `launch` (data parallel when there are several, across
/// nodes when `launch.nodes > 1`). Node 0 writes the run directory; every rank returns the same
/// summary (losses are all-reduced, token counts come from the plan).
pub fn train_on<B: AutodiffBackend>(
    cfg: &TrainConfig,
    out: &Path,
    resume: bool,
    launch: &Launch<B::Device>,
    quiet: bool,
) -> anyhow::Result<RunSummary> {
    launch.check()?;
    crate::jit::set_tf32(cfg.tf32)?;
    if let Some(l) = &cfg.lora {
        l.check().map_err(anyhow::Error::msg)?;
    }
    if cfg.attention == crate::model::AttentionMode::Varlen
        && !crate::model::AttentionMode::kernel_supported::<B>()
    {
        bail!(
            "--attention varlen needs the varlen kernel, which backend \"{}\" does not have: use \
             --attention auto (per-sequence tensor ops here)",
            cfg.backend
        );
    }
    for d in &launch.devices {
        cfg.check_precision::<B>(d)?;
    }
    if cfg.plan.devices != launch.world() {
        bail!(
            "the plan is for {} devices but this launch has {} ({} nodes × {} devices)",
            cfg.plan.devices,
            launch.world(),
            launch.nodes,
            launch.devices.len()
        );
    }
    let writer = launch.node_rank == 0;
    let dir = RunDir::new(out);
    if resume {
        if dir.read_config()? != *cfg {
            bail!(
                "{}: the run was started with another configuration; resume it without changing options",
                dir.config().display()
            );
        }
    } else if writer && dir.has_run() {
        bail!("{} already holds a run: use --resume {} or another --out", out.display(), out.display());
    }
    if writer {
        dir.write_config(cfg)?;
    }
    // Hub ids (`--model org/name`, `--data hf://…`) become cache paths for loading; config.toml
    // keeps them as given, so a resume resolves them again (from the cache, or offline).
    let resolved = resolve_hub(cfg)?;
    let cfg = &resolved;

    let tok = run_tokenizer(cfg)?;
    let ds = run_data(cfg, &tok)?;
    let (plan, truncated) = trainer::plan_dataset(cfg, &ds)?;
    let total = trainer::total_steps(cfg, &plan);
    let pad_id = super::pad_id(&tok);
    if writer {
        preflight_memory(cfg, &plan, quiet)?;
    }

    // One replica per device, built one after another: a seeded init must not interleave with
    // another thread's draws, and every replica must start from the same weights.
    let mut replicas = Vec::with_capacity(launch.devices.len());
    let mut start = 0;
    let mut mcfg = None;
    for device in &launch.devices {
        let (mc, mut model) = run_model::<B>(cfg, device)?;
        let mut optim = super::adamw::<B>(cfg);
        if resume && let Some(ck) = checkpoint::latest(out)? {
            let (m, o, step) = checkpoint::load::<B, _>(&ck, model, optim, device)?;
            (model, optim, start) = (m, o, step);
        }
        replicas.push((device.clone(), model, optim));
        mcfg = Some(mc);
    }
    let mcfg = mcfg.expect("at least one device");
    trainer::check_vocab(&ds.tokens, &mcfg)?;
    if resume && writer {
        events::truncate_after(&dir.events(), start)?;
    }
    if !quiet && writer {
        eprintln!(
            "training {} ({} parameters) on {} examples ({} truncated) from {}: {} steps of {}{}",
            cfg.model,
            mcfg.num_parameters(),
            ds.len(),
            truncated,
            ds.file,
            total,
            cfg.plan.strategy,
            if launch.world() > 1 {
                format!(
                    " on {} ranks ({} nodes × {} devices)",
                    launch.world(),
                    launch.nodes,
                    launch.devices.len()
                )
            } else {
                String::new()
            }
        );
        if let Some(l) = &cfg.lora {
            eprintln!("{}", l.describe(&mcfg));
        }
    }
    let collective = if launch.world() > 1 {
        // burn-communication installs an INFO-level subscriber for every tensor transfer unless one
        // exists: ours logs warnings and errors only, on stderr.
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
            .try_init();
        if launch.nodes > 1 && writer {
            let (_, port) = parallel::host_port(launch.master.as_deref().unwrap_or_default())?;
            parallel::start_orchestrator(port);
        }
        Some(parallel::collective_config(launch)?)
    } else {
        None
    };
    let run = Arc::new(Run {
        cfg: cfg.clone(),
        dir: dir.clone(),
        quiet,
        plan: Arc::new(plan),
        tokens: Arc::new(ds.tokens),
        pad_id,
        mcfg,
        start,
        total,
        world: launch.world(),
        nodes: launch.nodes,
        node_rank: launch.node_rank,
        devices_per_node: launch.devices.len(),
        timeout: launch.timeout,
        collective,
    });

    if replicas.len() == 1 {
        let (device, model, optim) = replicas.pop().expect("one replica");
        return run_rank::<B>(&run, 0, device, model, optim);
    }
    // One thread per local device. The first rank to fail decides the outcome: the others may be
    // blocked in a collective call waiting for it, so they are not joined (the watchdog ends them
    // if the process lives on).
    let (tx, rx) = std::sync::mpsc::channel();
    for (local, (device, model, optim)) in replicas.into_iter().enumerate() {
        let (run, tx) = (run.clone(), tx.clone());
        std::thread::Builder::new().name(format!("rank-{}", launch.rank(local))).spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_rank::<B>(&run, local, device, model, optim)
            }))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(anyhow::anyhow!("rank {} panicked: {msg}", run.node_rank * run.devices_per_node + local))
            });
            let _ = tx.send((local, r));
        })?;
    }
    drop(tx);
    let mut summary = None;
    for (local, r) in rx {
        let s = r?;
        if local == 0 {
            summary = Some(s);
        }
    }
    summary.context("rank 0 ended without a summary")
}

/// Before any weights are loaded: the step's estimated peak memory, and a warning where it does
/// not fit in the memory this machine has (CPU backend) — with what would make it fit.
fn preflight_memory(cfg: &TrainConfig, plan: &crate::plan::Plan, quiet: bool) -> anyhow::Result<()> {
    let mcfg = super::memory::model_config(&cfg.model)?;
    let [plain, ck] = super::memory::for_plan(&mcfg, cfg, plan);
    let e = if cfg.activation_checkpointing { &ck } else { &plain };
    if !quiet {
        eprintln!("estimated peak memory per device: {}", e.render());
    }
    let available = match cfg.backend {
        crate::backend::Backend::Cpu => crate::util::mem::available_bytes(),
        _ => None,
    };
    if let Some(w) =
        available.and_then(|a| super::memory::fit_warning(&plain, &ck, cfg.activation_checkpointing, a))
    {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// One rank's training loop: a [`Trainer`] whose reduction sums gradients and loss over ranks.
/// Global rank 0 logs, checkpoints and exports.
fn run_rank<B: AutodiffBackend>(
    run: &Run,
    local: usize,
    device: B::Device,
    model: Llama<B>,
    optim: trainer::AdamWOf<B>,
) -> anyhow::Result<RunSummary> {
    let (cfg, out) = (&run.cfg, run.dir.path.as_path());
    let rank = run.node_rank * run.devices_per_node + local;
    let lead = rank == 0;
    let peer = match &run.collective {
        Some(cc) => {
            let peer =
                parallel::Peer::<B>::register(rank, run.nodes, device.clone(), cc.clone(), run.timeout)?;
            // Cheap agreement check before any work: the world size, and the same starting weights
            // on every rank (a node with another model or checkpoint would train garbage silently).
            let fp = parallel::fingerprint(&model);
            let got = peer.sum(&[1.0, fp as f32], "the start-of-run agreement check")?;
            if got[0].round() as usize != run.world {
                bail!("rank {rank}: {} ranks answered, {} expected", got[0], run.world);
            }
            let expect = run.world as f64 * fp;
            if (got[1] as f64 - expect).abs() > 1e-4 * expect.abs().max(1.0) {
                bail!(
                    "rank {rank}: the replicas start from different weights (checksum {} vs {expect})",
                    got[1]
                );
            }
            Some(peer)
        }
        None => None,
    };
    let mut trainer = Trainer::new(
        cfg,
        run.mcfg.clone(),
        model,
        optim,
        run.plan.clone(),
        run.tokens.clone(),
        run.pad_id,
        device,
        rank,
        run.start,
    );
    // The weights are global, so each rank's gradient is its share of the one loss: sum.
    let mut reduce = |model: &Llama<B>, grads, loss: f64, s: usize| match &peer {
        Some(peer) => Ok((
            peer.sum_grads(model, grads, s + 1)?,
            peer.sum(&[loss as f32], &format!("loss all-reduce of step {}", s + 1))?[0] as f64,
        )),
        None => Ok((grads, loss)),
    };
    let quiet = run.quiet || !lead;
    let warm_up = (cfg.warm_up && run.start < run.total).then(|| progress::warm_up(&mut trainer, quiet));
    let bar = progress::steps(run.start, run.total, quiet);
    let mut log = if lead {
        Some(std::fs::OpenOptions::new().create(true).append(true).open(run.dir.events())?)
    } else {
        None
    };
    let t0 = Instant::now();
    let (mut first_loss, mut last_loss, mut useful_all, mut padded_all) = (f64::NAN, f64::NAN, 0u64, 0u64);
    while let Some(r) = trainer.step_with(&mut reduce)? {
        let c = r.counts;
        if first_loss.is_nan() {
            first_loss = r.loss;
        }
        last_loss = r.loss;
        (useful_all, padded_all) = (useful_all + c.useful_tokens, padded_all + c.padded_tokens);
        let done = r.step;
        if let Some(log) = &mut log {
            let ev = StepEvent::of(&r, t0.elapsed().as_secs_f64());
            writeln!(log, "{}", serde_json::to_string(&ev)?)?;
            log.flush()?;
            bar.set_message(format!("loss {:.4} · {:.0} useful tok/s", r.loss, ev.useful_tok_per_s));
            if cfg.checkpoint_every.is_some_and(|n| done % n == 0) || done == run.total {
                checkpoint::save::<B, _>(out, done, trainer.model(), trainer.optimizer())?;
            }
        }
        bar.inc(1);
        // Crash injection for the resume and fault tests: die here like a killed process (no
        // unwinding, no cleanup), after the step's event and checkpoint are on disk.
        if std::env::var("LONGALIGN_CRASH_AFTER_STEP").ok().and_then(|v| v.parse::<usize>().ok())
            == Some(done)
        {
            std::process::abort();
        }
    }
    bar.finish_and_clear();
    let export_dir = run.dir.export();
    let adapter_dir = cfg.lora.as_ref().map(|_| run.dir.adapter());
    if lead {
        let model = trainer.model().valid();
        export(&model, &run.mcfg, cfg, &export_dir)?;
        if let (Some(l), Some(dir)) = (&cfg.lora, &adapter_dir) {
            crate::model::peft::save_adapter(&model, &run.mcfg, l, &cfg.model, dir)?;
        }
    }
    let trainable = crate::model::lora::Trainable::of(trainer.model());
    if let Some(peer) = peer {
        peer.finish()?;
    }
    Ok(RunSummary {
        steps: run.total,
        first_loss,
        last_loss,
        useful_tokens: useful_all,
        padded_tokens: padded_all,
        wall_s: t0.elapsed().as_secs_f64(),
        export_dir,
        adapter_dir,
        trainable_parameters: trainable.trainable,
        total_parameters: trainable.total,
        optimizer_state_bytes: trainable.optimizer_bytes(),
        peak_rss_bytes: crate::util::mem::peak_rss_bytes(),
        warm_up,
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
