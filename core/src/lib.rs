//! LongAlign-rs core: data formats, chat templates, tokenization with loss targets, the batch planner
//! (naive / sorted / packing) and LongAlign loss weights.

pub mod batch;
pub mod cli;
pub mod data;
pub mod eval;
pub mod infer;
pub mod llm;
pub mod model;
pub mod train;
pub mod util;
