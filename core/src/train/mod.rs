//! Training: the run the CLI starts (`run`: files, checkpoints, data parallel), the step every
//! trainer shares (`step`), and an in-memory session for the app (`session`).

pub mod batch;
pub mod config;
pub mod grads;
pub mod schedule;
pub mod session;
pub mod step;

#[cfg(feature = "native")]
pub mod checkpoint;
#[cfg(feature = "native")]
pub mod events;
#[cfg(feature = "native")]
pub mod parallel;
#[cfg(feature = "native")]
mod run;
#[cfg(feature = "native")]
pub mod teacher_forced;

pub use config::{TrainConfig, adamw, init_preset, pad_id};
#[cfg(feature = "native")]
pub use parallel::Launch;
#[cfg(feature = "native")]
pub use run::*;

/// For tests: the embedded default's configuration, its fresh tiny model on the CPU backend, the
/// bundled sample and its plan (packed 2,048-token rows, sequence-weighted loss).
#[cfg(all(test, feature = "native"))]
pub(crate) struct EmbeddedRun {
    pub cfg: TrainConfig,
    pub mcfg: crate::model::LlamaConfig,
    pub model: crate::model::Llama<session::CpuBackend>,
    pub plan: crate::batch::Plan,
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
        let plan = crate::batch::plan(&items, &cfg.plan).unwrap();
        Self { cfg, mcfg, model, plan, ds }
    }
}
