//! Llama-family models on Burn: configuration (`config`), the decoder (`llama`: norm → MLP → block →
//! model, one forward) with its attention, packed rows, rotary, KV cache and initialisation in
//! files of their own, the weighted loss, mixed precision, generation, and Hugging Face
//! load/export.

pub mod attention;
pub mod config;
pub mod generate;
pub mod init;
pub mod kv_cache;
pub mod llama;
#[cfg(feature = "native")]
pub mod load;
pub mod lora;
pub mod lora_dropout;
pub mod loss;
pub mod packed;
#[cfg(feature = "native")]
pub mod peft;
pub mod precision;
pub mod rope;

pub use attention::AttentionMode;
pub use config::{Architecture, LlamaConfig, RopeScaling};
pub use kv_cache::KvCache;
pub use llama::{Input, Llama};
pub use lora::{LoraConfig, Target as LoraTarget};
pub use packed::PackedRows;
pub use precision::Precision;
