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
