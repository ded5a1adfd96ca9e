//! The LoRA flags of `core-cli train` → [`LoraConfig`].

use clap::Args;

use crate::model::{LoraConfig, LoraTarget};

#[derive(Args, Debug, Clone)]
pub struct LoraArgs {
    /// Train LoRA adapters of this rank on a frozen base model instead of every weight (PEFT's `r`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub lora_rank: Option<u64>,
    /// The adapters' alpha: updates are scaled by alpha / rank (default: 2 × rank).
    #[arg(long, requires = "lora_rank")]
    pub lora_alpha: Option<f64>,
    /// Dropout on each adapter's input while training.
    #[arg(long, default_value_t = 0.0, requires = "lora_rank")]
    pub lora_dropout: f64,
    /// Projections that get adapters, of q, k, v, o, gate, up, down (or `all`).
    #[arg(long, default_value = "q,k,v,o", value_parser = |s: &str| LoraTarget::parse_list(s).map(Targets), requires = "lora_rank")]
    pub lora_targets: Targets,
    /// Also train these, fully (LongLoRA's recipe for long context: `embeddings,norms`).
    #[arg(long, value_delimiter = ',', requires = "lora_rank")]
    pub train: Vec<Extra>,
}

/// A parsed `--lora-targets` list (sorted, without repeats).
#[derive(Debug, Clone)]
pub struct Targets(pub Vec<LoraTarget>);

/// What `--train` can add to the adapters.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    Embeddings,
    Norms,
}

impl LoraArgs {
    /// The LoRA configuration, or `None` without `--lora-rank`.
    pub fn to_config(&self) -> Option<LoraConfig> {
        let rank = self.lora_rank? as usize;
        Some(LoraConfig {
            rank,
            alpha: self.lora_alpha.unwrap_or(2.0 * rank as f64),
            dropout: self.lora_dropout,
            targets: self.lora_targets.0.clone(),
            train_embeddings: self.train.contains(&Extra::Embeddings),
            train_norms: self.train.contains(&Extra::Norms),
        })
    }
}
