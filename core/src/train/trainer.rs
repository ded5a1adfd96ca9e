//! The one trainer: a model, its optimizer and a plan, advanced one optimizer step per call.
//!
//! ```text
//! Trainer::new ─▶ step ─▶ step ─▶ … ─▶ None          (one step = this rank's micro-batches:
//!                  │                                  forward + backward with the plan's weights
//!                  └▶ StepReport                      → reduce → clip → AdamW)
//! ```
//!
//! Every way of training drives this type. `core-cli train` (`run.rs`) wraps it in files,
//! checkpoints, events and the data-parallel collective (its `reduce` sums gradients and losses
//! over ranks); the app's in-memory session and the browser's Web Worker use it bare
//! ([`Trainer::preset`]). [`Trainer::step_with`] and [`Trainer::step_async`] run the same forward,
//! backward and update; they differ only in how results come back: at once (the norm clipped on
//! the host, in f64, as `torch.nn.utils.clip_grad_norm_`), or awaited without blocking (the clip
//! factor computed on the device: a browser's WebGPU can only read back asynchronously).

use std::sync::Arc;

use anyhow::bail;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, GradientsParams};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::cast::ToElement as _;
use web_time::Instant;

use super::{TrainConfig, inputs, schedule, step};
use crate::data::{Tokenized, TokenizedDataset};
use crate::model::{Llama, LlamaConfig};
use crate::plan::Plan;

/// What one step did: the numbers of an `events.jsonl` line.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepReport {
    /// 1-based: the number of updates done.
    pub step: usize,
    /// Epoch of the step's data, 0-based.
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Token counts of the whole step (all ranks).
    pub counts: inputs::Counts,
    pub step_s: f64,
    /// Kernel compilations and autotune runs during the step (JIT backends; see [`crate::jit`]).
    #[serde(default)]
    pub jit: crate::jit::JitCounts,
}

impl StepReport {
    pub fn useful_tok_per_s(&self) -> f64 {
        self.counts.useful_tokens as f64 / self.step_s.max(1e-9)
    }
    pub fn padded_tok_per_s(&self) -> f64 {
        self.counts.padded_tokens as f64 / self.step_s.max(1e-9)
    }
}

/// What [`Trainer::warm_up`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WarmUp {
    /// Distinct input shapes run (micro-batches of one shape run the same kernels).
    pub shapes: usize,
    /// Kernel compilations and autotune runs it took.
    pub jit: crate::jit::JitCounts,
    pub seconds: f64,
}

/// The run's optimizer type.
pub type AdamWOf<B> = OptimizerAdaptor<AdamW, Llama<B>, B>;

pub struct Trainer<B: AutodiffBackend> {
    cfg: TrainConfig,
    mcfg: LlamaConfig,
    /// `None` only while a step runs (the optimizer takes the model by value).
    model: Option<Llama<B>>,
    optim: AdamWOf<B>,
    plan: Arc<Plan>,
    tokens: Arc<Vec<Tokenized>>,
    pad_id: u32,
    device: B::Device,
    /// This trainer's data-parallel rank: it runs the micro-batches the plan gave that device.
    rank: usize,
    next: usize,
    total: usize,
    warmup: usize,
    /// [`crate::jit::counts`] when the running step started.
    jit_at_start: crate::jit::JitCounts,
}

/// Plans a tokenized dataset as `cfg` says, refusing one with nothing to train on; also how many
/// sequences were truncated to fit.
pub fn plan_dataset(cfg: &TrainConfig, ds: &TokenizedDataset) -> anyhow::Result<(Plan, usize)> {
    if ds.is_empty() {
        bail!("{}: no usable examples", ds.file);
    }
    let (items, truncated) = ds.items(cfg.plan.length_limit(), cfg.plan.overlong);
    Ok((crate::plan::plan(&items, &cfg.plan)?, truncated))
}

/// Refuses token ids the model has no embedding for (a tokenizer that does not fit the model).
pub fn check_vocab(tokens: &[Tokenized], mcfg: &LlamaConfig) -> anyhow::Result<()> {
    if tokens.iter().flat_map(|t| &t.ids).any(|&id| id as usize >= mcfg.vocab_size) {
        bail!("the tokenizer produces ids beyond the model's vocab_size {}", mcfg.vocab_size);
    }
    Ok(())
}

/// Steps a run of `cfg` over `plan` takes.
pub fn total_steps(cfg: &TrainConfig, plan: &Plan) -> usize {
    cfg.max_steps.map_or(plan.steps.len(), |m| m.min(plan.steps.len()))
}

/// A data-parallel reduction between the backward and the update: `(model, gradients, loss,
/// step index)` → summed gradients and loss. Single-device training passes them through.
pub type Reduce<'a, B> =
    dyn FnMut(&Llama<B>, GradientsParams, f64, usize) -> anyhow::Result<(GradientsParams, f64)> + 'a;

impl<B: AutodiffBackend> Trainer<B> {
    /// A trainer for `rank` over `plan`, starting after `start` steps (a resumed run), with the
    /// model and optimizer as they are.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &TrainConfig,
        mcfg: LlamaConfig,
        model: Llama<B>,
        optim: AdamWOf<B>,
        plan: Arc<Plan>,
        tokens: Arc<Vec<Tokenized>>,
        pad_id: u32,
        device: B::Device,
        rank: usize,
        start: usize,
    ) -> Self {
        let total = total_steps(cfg, &plan);
        Self {
            cfg: cfg.clone(),
            mcfg,
            model: Some(model),
            optim,
            plan,
            tokens,
            pad_id,
            device,
            rank,
            next: start,
            warmup: schedule::warmup_steps(cfg.warmup_ratio, total),
            total,
            jit_at_start: Default::default(),
        }
    }

    /// A fresh preset model (`cfg.model`) on one device and the plan of `ds`: the app's and the
    /// browser worker's trainer (no files). `pad_id` fills padding (the browser's worker has
    /// token ids but no tokenizer; elsewhere [`super::pad_id`]).
    pub fn preset(
        cfg: &TrainConfig,
        ds: &TokenizedDataset,
        pad_id: u32,
        device: &B::Device,
    ) -> anyhow::Result<Self> {
        if cfg.plan.devices != 1 {
            bail!("an in-memory session trains on one device (the plan has {})", cfg.plan.devices);
        }
        let (plan, _) = plan_dataset(cfg, ds)?;
        cfg.check_precision::<B>(device)?;
        let Some((mcfg, model)) = super::init_preset::<B>(cfg, device) else {
            bail!("{:?} is not a preset (tiny, small, medium): sessions train presets", cfg.model);
        };
        check_vocab(&ds.tokens, &mcfg)?;
        let optim = super::adamw::<B>(cfg);
        let tokens = Arc::new(ds.tokens.clone());
        Ok(Self::new(cfg, mcfg, model, optim, Arc::new(plan), tokens, pad_id, device.clone(), 0, 0))
    }

    /// Steps taken so far.
    pub fn done(&self) -> usize {
        self.next
    }

    /// Steps the trainer will take in all.
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn model(&self) -> &Llama<B> {
        self.model.as_ref().expect("a model between steps")
    }

    pub fn optimizer(&self) -> &AdamWOf<B> {
        &self.optim
    }

    pub fn model_config(&self) -> &LlamaConfig {
        &self.mcfg
    }

    /// Runs forward and backward once for each distinct input shape ([`step::shape_class`]) among
    /// this rank's remaining micro-batches, on the first micro-batch of each, and drops the
    /// results: the model, the optimizer and the step count are untouched. On a JIT backend this
    /// compiles and tunes the kernels of every input shape before step 1; what is left compiles
    /// in steps 1 and 2 (the optimizer's: AdamW's first update, then the one with moments), and
    /// no later step stops to compile. Costs one micro-batch's compute per shape.
    pub fn warm_up(&mut self) -> WarmUp {
        self.warm_up_with(|_, _| {})
    }

    /// [`Self::warm_up`], calling `progress(done, shapes)` before the first shape and after each
    /// one: a cold CUDA process compiles for minutes here (NVRTC, ~0.1-2.7 s a kernel on an H200),
    /// and a user should see that it moves.
    pub fn warm_up_with(&mut self, mut progress: impl FnMut(usize, usize)) -> WarmUp {
        let (t, before) = (Instant::now(), crate::jit::counts());
        let mut opts = step::LossOptions::of(&self.cfg);
        // Dropout's ops are part of the graph a step runs; which mask is drawn is not.
        if self.cfg.lora.as_ref().is_some_and(|l| l.dropout > 0.0) {
            opts.dropout_key = Some(0);
        }
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<_> = self.plan.steps[self.next..self.total]
            .iter()
            .flat_map(|s| s.micro_batches.iter().filter(|mb| mb.device == self.rank))
            .filter(|mb| seen.insert(step::shape_class(mb, &self.tokens, opts)))
            .collect();
        let model = self.model.as_ref().expect("a model between steps");
        progress(0, firsts.len());
        for (i, mb) in firsts.iter().enumerate() {
            let (losses, grads) =
                step::gradients(model, &self.mcfg, [*mb], &self.tokens, self.pad_id, opts, &self.device);
            // Read back: fused backends run (and compile) only what something waits for.
            // Then wait for the backward too, before its gradients are dropped.
            step::loss_sum(losses);
            let _ = B::sync(&self.device);
            drop(grads);
            progress(i + 1, firsts.len());
        }
        WarmUp {
            shapes: firsts.len(),
            jit: crate::jit::counts().since(before),
            seconds: t.elapsed().as_secs_f64(),
        }
    }

    /// The next step on one device; `None` when all are done.
    pub fn step(&mut self) -> Option<StepReport> {
        let mut pass = |_: &Llama<B>, g: GradientsParams, l: f64, _: usize| Ok((g, l));
        self.step_with(&mut pass).expect("a pass-through reduction cannot fail")
    }

    /// The next step, `reduce` run between this rank's backward and the update (the all-reduce of
    /// data parallelism); `None` when all are done.
    pub fn step_with(&mut self, reduce: &mut Reduce<'_, B>) -> anyhow::Result<Option<StepReport>> {
        let Some((s, t, model, losses, grads)) = self.forward_backward() else { return Ok(None) };
        let loss = step::loss_sum(losses);
        let (grads, loss) = reduce(&model, grads, loss, s)?;
        let lr = self.lr(s);
        // Every rank clips by the same norm of the same summed gradients: identical steps.
        let (model, grad_norm) = step::update(model, &mut self.optim, grads, self.cfg.clip_norm, lr);
        Ok(Some(self.finish(s, t, model, loss, lr, grad_norm)))
    }

    /// [`Self::step`] for backends that read back asynchronously (WebGPU in a browser): the step
    /// is queued without a readback (the clip factor is computed on the device), then its loss and
    /// gradient norm are awaited.
    pub async fn step_async(&mut self) -> anyhow::Result<Option<StepReport>> {
        let Some((s, t, model, losses, grads)) = self.forward_backward() else { return Ok(None) };
        let lr = self.lr(s);
        let (model, norm) = step::update_deferred(model, &mut self.optim, grads, self.cfg.clip_norm, lr);
        let read = |e| anyhow::anyhow!("reading back from the device: {e:?}");
        let mut loss = 0f64;
        for l in losses {
            loss += l.into_scalar_async().await.map_err(read)?.to_f64();
        }
        let grad_norm = norm.into_scalar_async().await.map_err(read)?.to_f64();
        Ok(Some(self.finish(s, t, model, loss, lr, grad_norm)))
    }

    /// Forward and backward of this rank's micro-batches of the next step, nothing read back:
    /// (step index, start time, the model taken out, per-micro-batch losses, gradients).
    #[allow(clippy::type_complexity)]
    fn forward_backward(
        &mut self,
    ) -> Option<(usize, Instant, Llama<B>, Vec<Tensor<B::InnerBackend, 1>>, GradientsParams)> {
        if self.next >= self.total {
            return None;
        }
        let t = Instant::now();
        self.jit_at_start = crate::jit::counts();
        let s = self.next;
        let model = self.model.take().expect("a model between steps");
        let mut opts = step::LossOptions::of(&self.cfg);
        if self.cfg.lora.as_ref().is_some_and(|l| l.dropout > 0.0) {
            opts.dropout_key =
                Some(crate::util::rng::SplitMix64::derive(self.cfg.plan.seed, s as u64).next_u64());
        }
        // With one rank this is every micro-batch of the step (the plan's `devices` is 1).
        let mine = self.plan.steps[s].micro_batches.iter().filter(|mb| mb.device == self.rank);
        let (losses, grads) =
            step::gradients(&model, &self.mcfg, mine, &self.tokens, self.pad_id, opts, &self.device);
        Some((s, t, model, losses, grads))
    }

    fn lr(&self, s: usize) -> f64 {
        schedule::cosine_with_warmup(self.cfg.lr, s, self.total, self.warmup)
    }

    fn finish(
        &mut self,
        s: usize,
        t: Instant,
        model: Llama<B>,
        loss: f64,
        lr: f64,
        grad_norm: f64,
    ) -> StepReport {
        self.model = Some(model);
        self.next += 1;
        let step = &self.plan.steps[s];
        let layout = step::LossOptions::of(&self.cfg).layout;
        let counts = inputs::Counts::of_step(step, &self.tokens, layout);
        StepReport {
            step: s + 1,
            epoch: step.epoch,
            loss,
            lr,
            grad_norm,
            counts,
            step_s: t.elapsed().as_secs_f64(),
            jit: crate::jit::counts().since(self.jit_at_start),
        }
    }
}
