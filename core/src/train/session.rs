//! Training held in memory, one optimizer step per call: the app's trainer, in the browser too
//! (no files, no threads, no process: the page calls [`Trainer::step`] between frames). It is the
//! [`Trainer`] `core-cli train` drives, on the backends the app has, so the same configuration
//! gives the same numbers (tested: identical losses on the CPU backend).

use super::{TrainConfig, Trainer, pad_id};
use crate::data::{ModelTokenizer, TokenizedDataset};

/// The CPU backend with autodiff: what the app trains on (in the browser: single-threaded wasm).
pub type CpuBackend = burn::backend::Autodiff<burn::backend::Flex>;
pub type CpuSession = Trainer<CpuBackend>;

/// WebGPU with autodiff: the browser app's GPU trainer (drive it with [`Trainer::step_async`]).
#[cfg(feature = "webgpu")]
pub type WebGpuBackend = burn::backend::Autodiff<burn::backend::Wgpu>;
#[cfg(feature = "webgpu")]
pub type WebGpuSession = Trainer<WebGpuBackend>;

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
    Trainer::preset(cfg, ds, pad_id(tok), &Default::default())
}

/// A session on the CPU backend.
pub fn cpu_session(
    cfg: &TrainConfig,
    ds: &TokenizedDataset,
    tok: &ModelTokenizer,
) -> anyhow::Result<CpuSession> {
    Trainer::preset(cfg, ds, pad_id(tok), &Default::default())
}

#[cfg(all(test, feature = "native"))]
mod tests {
    use super::*;
    use crate::train::StepReport;

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
        let steps: Vec<StepReport> = std::iter::from_fn(|| s.step()).collect();
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
        let sync: Vec<StepReport> = std::iter::from_fn(|| a.step()).collect();
        let deferred: Vec<StepReport> =
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
