//! Training. One [`Trainer`] (`trainer.rs`) owns model, optimizer and plan and takes one step per
//! call; `run.rs` wraps it in files, checkpoints, events and data parallelism (`core-cli train`),
//! `session.rs` gives it to the app and the browser bare. Around them: the run's configuration
//! and folder (`config`, `run_dir`), the launch topology (`launch`, `parallel`), the step's halves
//! (`step`, `grads`, `schedule`), the model's inputs from a plan (`inputs`), checkpoints and
//! events, teacher-forced scoring and the embedded default (`demo`).

pub mod config;
pub mod grads;
pub mod inputs;
pub mod memory;
pub mod recompute;
pub mod schedule;
pub mod session;
pub mod step;
pub mod trainer;

#[cfg(feature = "native")]
pub mod checkpoint;
#[cfg(feature = "native")]
pub mod demo;
#[cfg(feature = "native")]
pub mod events;
#[cfg(feature = "native")]
pub mod launch;
#[cfg(feature = "native")]
pub mod parallel;
#[cfg(feature = "native")]
mod progress;
#[cfg(feature = "native")]
mod run;
#[cfg(feature = "native")]
pub mod run_dir;
#[cfg(feature = "native")]
pub mod teacher_forced;

pub use config::{TrainConfig, adamw, init_preset, pad_id};
#[cfg(feature = "native")]
pub use launch::{LaunchOptions, Topology};
#[cfg(feature = "native")]
pub use parallel::Launch;
#[cfg(feature = "native")]
pub use run::*;
#[cfg(feature = "native")]
pub use run_dir::RunDir;
pub use trainer::{StepReport, Trainer, WarmUp};

/// For tests: the embedded default's configuration, its fresh tiny model on the CPU backend, the
/// bundled sample and its plan (packed 2,048-token rows, sequence-weighted loss).
#[cfg(all(test, feature = "native"))]
pub(crate) struct EmbeddedRun {
    pub cfg: TrainConfig,
    pub mcfg: crate::model::LlamaConfig,
    pub model: crate::model::Llama<session::CpuBackend>,
    pub plan: crate::plan::Plan,
    pub ds: crate::data::TokenizedDataset,
}

#[cfg(all(test, feature = "native"))]
impl EmbeddedRun {
    pub fn new() -> Self {
        let cfg = TrainConfig::embedded_default();
        let (mcfg, model) = init_preset::<session::CpuBackend>(&cfg, &Default::default()).unwrap();
        let tok = run_tokenizer(&cfg).unwrap();
        let ds = run_data(&cfg, &tok).unwrap();
        let (items, _) = ds.items(cfg.plan.length_limit(), cfg.plan.overlong);
        let plan = crate::plan::plan(&items, &cfg.plan).unwrap();
        Self { cfg, mcfg, model, plan, ds }
    }
}
