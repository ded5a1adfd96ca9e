//! Llama-family models on Burn: configuration, rotary embeddings, the decoder, the weighted loss,
//! and Hugging Face load/export.

pub mod config;
pub mod generate;
pub mod llama;
#[cfg(feature = "native")]
pub mod load;
pub mod loss;
pub mod precision;
pub mod rope;

pub use config::{Architecture, LlamaConfig, RopeScaling};
pub use llama::{AttentionMode, KvCache, Llama, PackedRows};
pub use precision::Precision;
