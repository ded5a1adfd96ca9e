#[macro_use]
extern crate derive_new;

pub mod optim;
/// LongAlign-rs patch: the TF32 switch for f32 matmuls (PATCH.md).
pub mod tf32;

mod base;

pub(crate) mod engine;
pub(crate) mod tune;

pub use base::*;
