//! Training held in memory and advanced one optimizer step per call: the app's trainer, in the
//! browser too (no files, no threads, no process: the page calls [`Session::step`] between
//! frames). Same plan, same step code and same numbers as `core-cli train` with the same
//! configuration (tested: identical losses on the CPU backend).

use anyhow::bail;
use burn::optim::AdamW;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::cast::ToElement as _;
use web_time::Instant;

use super::{TrainConfig, batch, init_preset, pad_id, schedule, step};
use crate::batch::{self as planner, Plan};
use crate::data::{ModelTokenizer, Tokenized, TokenizedDataset};
use crate::model::{Llama, LlamaConfig};

/// The CPU backend with autodiff: what the app trains on (in the browser: single-threaded wasm).
pub type CpuBackend = burn::backend::Autodiff<burn::backend::Flex>;
pub type CpuSession = Session<CpuBackend>;

/// WebGPU with autodiff: the browser app's GPU trainer (drive it with [`Session::step_async`]).
#[cfg(feature = "webgpu")]
pub type WebGpuBackend = burn::backend::Autodiff<burn::backend::Wgpu>;
#[cfg(feature = "webgpu")]
pub type WebGpuSession = Session<WebGpuBackend>;

/// Sets up the default WebGPU device (in a browser this must be awaited before any tensor is
/// made on it). Call only when the page has a WebGPU adapter: without one it panics.
#[cfg(feature = "webgpu")]
pub async fn init_webgpu() {
    let device = burn::backend::wgpu::WgpuDevice::default();
    burn::backend::wgpu::init_setup_async::<burn::backend::wgpu::graphics::WebGpu>(
        &device,
        Default::default(),
    )
    .await;
}

/// A session on the default WebGPU device (after [`init_webgpu`]).
#[cfg(feature = "webgpu")]
pub fn webgpu_session(
    cfg: &TrainConfig,
    ds: &TokenizedDataset,
    tok: &ModelTokenizer,
) -> anyhow::Result<WebGpuSession> {
    Session::new(cfg, ds, tok, &Default::default())
}

/// A session on the CPU backend.
pub fn cpu_session(
    cfg: &TrainConfig,
    ds: &TokenizedDataset,
    tok: &ModelTokenizer,
) -> anyhow::Result<CpuSession> {
    Session::new(cfg, ds, tok, &Default::default())
}

/// What one step did: the numbers of an `events.jsonl` line.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionStep {
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub counts: batch::Counts,
    pub step_s: f64,
}

impl SessionStep {
    pub fn useful_tok_per_s(&self) -> f64 {
        self.counts.useful_tokens as f64 / self.step_s.max(1e-9)
    }
    pub fn padded_tok_per_s(&self) -> f64 {
        self.counts.padded_tokens as f64 / self.step_s.max(1e-9)
    }
}

pub struct Session<B: AutodiffBackend> {
    cfg: TrainConfig,
    mcfg: LlamaConfig,
    /// `None` only while a step runs (the optimizer takes the model by value).
    model: Option<Llama<B>>,
    optim: OptimizerAdaptor<AdamW, Llama<B>, B>,
    plan: Plan,
    tokens: Vec<Tokenized>,
    pad_id: u32,
    device: B::Device,
    next: usize,
    total: usize,
    warmup: usize,
}

impl<B: AutodiffBackend> Session<B> {
    /// A fresh preset model (`cfg.model`) and the plan of `ds` (tokenized by `tok`).
    pub fn new(
        cfg: &TrainConfig,
        ds: &TokenizedDataset,
        tok: &ModelTokenizer,
        device: &B::Device,
    ) -> anyhow::Result<Self> {
        Self::with_pad_id(cfg, ds, pad_id(tok), device)
    }

    /// [`Self::new`] with the padding id given (where the tokenizer is not at hand: the browser's
    /// training worker receives token ids only).
    pub fn with_pad_id(
        cfg: &TrainConfig,
        ds: &TokenizedDataset,
        pad_id: u32,
        device: &B::Device,
    ) -> anyhow::Result<Self> {
        if cfg.plan.devices != 1 {
            bail!("an in-memory session trains on one device (the plan has {})", cfg.plan.devices);
        }
        if ds.is_empty() {
            bail!("{}: no usable examples", ds.file);
        }
        cfg.check_precision::<B>(device)?;
        let Some((mcfg, model)) = init_preset::<B>(cfg, device) else {
            bail!("{:?} is not a preset (tiny, small, medium): sessions train presets", cfg.model);
        };
        if ds.tokens.iter().flat_map(|t| &t.ids).any(|&id| id as usize >= mcfg.vocab_size) {
            bail!("the tokenizer produces ids beyond the model's vocab_size {}", mcfg.vocab_size);
        }
        let (items, _) = ds.items(cfg.plan.length_limit(), cfg.plan.overlong);
        let plan = planner::plan(&items, &cfg.plan)?;
        let total = cfg.max_steps.map_or(plan.steps.len(), |m| m.min(plan.steps.len()));
        let optim = super::adamw::<B>(cfg);
        Ok(Self {
            cfg: cfg.clone(),
            mcfg,
            model: Some(model),
            optim,
            tokens: ds.tokens.clone(),
            pad_id,
            device: device.clone(),
            next: 0,
            warmup: schedule::warmup_steps(cfg.warmup_ratio, total),
            total,
            plan,
        })
    }

    /// Steps taken so far.
    pub fn done(&self) -> usize {
        self.next
    }

    /// Steps the session will take.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Takes the next optimizer step; `None` when all are done.
    pub fn step(&mut self) -> Option<SessionStep> {
        if self.next >= self.total {
            return None;
        }
        let t = Instant::now();
        let s = self.next;
        let model = self.model.take().expect("a model between steps");
        let (loss, grads) = step::gradients(
            &model,
            &self.mcfg,
            &self.plan.steps[s].micro_batches,
            &self.tokens,
            self.pad_id,
            self.loss_options(),
            &self.device,
        );
        let lr = self.lr(s);
        let (model, grad_norm) = step::update(model, &mut self.optim, grads, self.cfg.clip_norm, lr);
        self.model = Some(model);
        self.next += 1;
        Some(self.report(s, loss, lr, grad_norm, t))
    }

    /// [`step`](Self::step) for backends that read back asynchronously (WebGPU in a browser):
    /// the step is queued without a readback (the clip factor is computed on the device), then
    /// its loss and gradient norm are awaited.
    pub async fn step_async(&mut self) -> anyhow::Result<Option<SessionStep>> {
        if self.next >= self.total {
            return Ok(None);
        }
        let t = Instant::now();
        let s = self.next;
        let model = self.model.take().expect("a model between steps");
        let (losses, grads) = step::gradients_deferred(
            &model,
            &self.mcfg,
            &self.plan.steps[s].micro_batches,
            &self.tokens,
            self.pad_id,
            self.loss_options(),
            &self.device,
        );
        let lr = self.lr(s);
        let (model, norm) = step::update_deferred(model, &mut self.optim, grads, self.cfg.clip_norm, lr);
        self.model = Some(model);
        self.next += 1;
        let read = |e| anyhow::anyhow!("reading back from the device: {e:?}");
        let mut loss = 0f64;
        for l in losses {
            loss += l.into_scalar_async().await.map_err(read)?.to_f64();
        }
        let grad_norm = norm.into_scalar_async().await.map_err(read)?.to_f64();
        Ok(Some(self.report(s, loss, lr, grad_norm, t)))
    }

    fn loss_options(&self) -> step::LossOptions {
        step::LossOptions::new(self.cfg.loss_chunk, self.cfg.seq_bucket, self.cfg.attention)
            .with_precision(self.cfg.precision)
    }

    fn lr(&self, s: usize) -> f64 {
        schedule::cosine_with_warmup(self.cfg.lr, s, self.total, self.warmup)
    }

    fn report(&self, s: usize, loss: f64, lr: f64, grad_norm: f64, t: Instant) -> SessionStep {
        let counts = batch::Counts::of_step(&self.plan.steps[s], &self.tokens);
        SessionStep { step: s + 1, loss, lr, grad_norm, counts, step_s: t.elapsed().as_secs_f64() }
    }
}

#[cfg(all(test, feature = "native"))]
mod tests {
    use super::*;

    /// The session is `core-cli train` without files: the same configuration gives the same
    /// losses, gradient norms and token counts, bit for bit on the CPU backend.
    #[test]
    fn a_session_takes_the_steps_the_trainer_takes() {
        let mut cfg = TrainConfig::embedded_default();
        cfg.max_steps = Some(3);
        cfg.lr = 2e-3;
        cfg.plan.max_tokens = Some(512);
        let dir = tempfile::tempdir().unwrap();
        crate::train::train::<CpuBackend>(&cfg, dir.path(), false, &Default::default(), true).unwrap();
        let events: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let tok = crate::train::run_tokenizer(&cfg).unwrap();
        let ds = crate::train::run_data(&cfg, &tok).unwrap();
        let mut s = cpu_session(&cfg, &ds, &tok).unwrap();
        assert_eq!((s.done(), s.total()), (0, 3));
        let steps: Vec<SessionStep> = std::iter::from_fn(|| s.step()).collect();
        assert_eq!(steps.len(), 3);
        assert!(s.step().is_none(), "done after max_steps");
        for (e, st) in events.iter().zip(&steps) {
            assert_eq!(e["step"].as_u64().unwrap() as usize, st.step);
            assert_eq!(e["loss"].as_f64().unwrap().to_bits(), st.loss.to_bits(), "step {}", st.step);
            assert_eq!(e["grad_norm"].as_f64().unwrap().to_bits(), st.grad_norm.to_bits());
            assert_eq!(e["lr"].as_f64().unwrap(), st.lr);
            assert_eq!(e["useful_tokens"].as_u64().unwrap(), st.counts.useful_tokens);
            assert_eq!(e["padded_tokens"].as_u64().unwrap(), st.counts.padded_tokens);
        }
    }

    /// The deferred path (what WebGPU runs) against the synchronous one, on the CPU.
    #[test]
    fn step_async_matches_step() {
        let mut cfg = TrainConfig::embedded_default();
        cfg.max_steps = Some(3);
        cfg.lr = 2e-3;
        cfg.plan.max_tokens = Some(512);
        let tok = crate::train::run_tokenizer(&cfg).unwrap();
        let ds = crate::train::run_data(&cfg, &tok).unwrap();
        let mut a = cpu_session(&cfg, &ds, &tok).unwrap();
        let mut b = cpu_session(&cfg, &ds, &tok).unwrap();
        let sync: Vec<SessionStep> = std::iter::from_fn(|| a.step()).collect();
        let deferred: Vec<SessionStep> =
            std::iter::from_fn(|| pollster_block_on(b.step_async()).unwrap()).collect();
        assert_eq!(sync.len(), 3);
        for (x, y) in sync.iter().zip(&deferred) {
            assert!((x.loss - y.loss).abs() <= 1e-5 * x.loss.abs().max(1.0), "{x:?} vs {y:?}");
            assert!((x.grad_norm - y.grad_norm).abs() <= 1e-4 * x.grad_norm.max(1e-6), "{x:?} vs {y:?}");
            assert_eq!(x.counts, y.counts);
        }
    }

    /// Runs a future that completes without a runtime (the CPU backend never waits).
    fn pollster_block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    #[test]
    fn sessions_refuse_what_they_cannot_train() {
        let cfg = TrainConfig::embedded_default();
        let tok = crate::train::run_tokenizer(&cfg).unwrap();
        let ds = crate::train::run_data(&cfg, &tok).unwrap();
        let bad = TrainConfig { model: "/models/llama".into(), ..cfg.clone() };
        assert!(cpu_session(&bad, &ds, &tok).err().unwrap().to_string().contains("not a preset"));
        let mut two = cfg.clone();
        two.plan.devices = 2;
        assert!(cpu_session(&two, &ds, &tok).err().unwrap().to_string().contains("one device"));
    }
}
