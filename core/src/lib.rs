//! LongAlign-rs core: data formats, chat templates, tokenization with loss targets, the batch planner
//! (naive / sorted / packing) and LongAlign loss weights.

#[cfg(feature = "model")]
pub mod backend;
#[cfg(feature = "native")]
pub mod bench;
#[cfg(feature = "native")]
pub mod build;
#[cfg(feature = "native")]
pub mod cli;
pub mod data;
#[cfg(feature = "native")]
pub mod doctor;
#[cfg(feature = "native")]
pub mod eval;
#[cfg(feature = "native")]
pub mod hub;
#[cfg(feature = "native")]
pub mod infer;
#[cfg(feature = "model")]
pub mod jit;
#[cfg(feature = "native")]
pub mod llm;
#[cfg(feature = "model")]
pub mod model;
pub mod plan;
#[cfg(feature = "model")]
pub mod train;
pub mod util;
