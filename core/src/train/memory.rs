//! How much memory a training step needs, from the model's configuration and the longest
//! micro-batch alone (no tensors): what `core-cli plan --model` and `train` print before any work,
//! so that "this needs 61 GB at 64k" is learnt before an out-of-memory crash hours in.
//!
//! The model's state is exact: f32 weights, f32 gradients, AdamW's two f32 moments (16 bytes per
//! parameter), plus a half-precision view of the weights under bf16/f16. Activations are counted
//! per token from what the step keeps (f32 activations; half under bf16/f16):
//!
//! ```text
//!   plain backward      every layer keeps ~KEEP_D·d + KEEP_F·f values per token
//!   --activation-       one checkpoint per layer (d per token), plus one layer's recompute:
//!     checkpointing     its attention graph over the whole stream (~ATTN_D·d per token) and one
//!                       MLP chunk of `recompute::MLP_CHUNK` tokens (~d + f per token)
//! ```
//!
//! The coefficients were read off `core-cli bench memory` on the CPU backend; on the d = 512
//! model the estimate is within 15% of the measured peak from 4k to 64k tokens, with and without
//! checkpointing (docs/measurements.md has both side by side). A GPU's allocator rounds and pools
//! differently: there it is a guide, not a bound.

use crate::model::{LlamaConfig, Precision};

/// Values kept per token per layer by the plain backward, in units of the hidden size …
const KEEP_D: f64 = 12.0;
/// … and of the MLP's intermediate size.
const KEEP_F: f64 = 4.0;
/// One layer's attention recompute graph (and its backward's temporaries), per token, in units
/// of the hidden size.
const ATTN_D: f64 = 12.0;
/// Fixed cost of the process (runtime, allocator, tokenizer, thread pools).
const BASE: u64 = 16 << 20;

/// An estimate of one training step's peak memory, in bytes, by where it goes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MemoryEstimate {
    /// Tokens of the largest micro-batch, as computed (the stream, or rows × row length).
    pub tokens: usize,
    /// Weights (f32, plus the compute view under half precision).
    pub weights: u64,
    pub gradients: u64,
    /// AdamW's two moments.
    pub optimizer: u64,
    /// Activations kept for the backward (checkpoints included) and the working set around them.
    pub activations: u64,
    /// The loss's vocabulary projection of one chunk of targets (logits, softmax, gradient).
    pub loss: u64,
    pub total: u64,
}

/// Peak memory of a step whose largest micro-batch computes `tokens` tokens, `loss_chunk` target
/// tokens per vocabulary chunk.
pub fn estimate(
    mcfg: &LlamaConfig,
    tokens: usize,
    loss_chunk: usize,
    checkpointing: bool,
    precision: Precision,
) -> MemoryEstimate {
    let p = mcfg.num_parameters() as u64;
    let act = match precision {
        Precision::F32 => 4.0,
        _ => 2.0,
    };
    let (d, f, layers) =
        (mcfg.hidden_size as f64, mcfg.intermediate_size as f64, mcfg.num_hidden_layers as f64);
    let n = tokens as f64;
    let per_token_layer = KEEP_D * d + KEEP_F * f;
    let activations = match checkpointing {
        false => layers * n * per_token_layer * act,
        true => {
            let chunk = n.min(super::recompute::MLP_CHUNK as f64);
            (layers * n * d + ATTN_D * d * n + chunk * (d + f)) * act
        }
    };
    let loss = (3 * loss_chunk.min(tokens) * mcfg.vocab_size * 4) as u64;
    let weights = 4 * p + if precision == Precision::F32 { 0 } else { 2 * p };
    let e = MemoryEstimate {
        tokens,
        weights,
        gradients: 4 * p,
        optimizer: 8 * p,
        activations: activations as u64,
        loss,
        total: 0,
    };
    MemoryEstimate { total: BASE + e.weights + e.gradients + e.optimizer + e.activations + e.loss, ..e }
}

impl MemoryEstimate {
    /// The same step training LoRA adapters (`lora`) on a frozen base: gradients and AdamW moments
    /// for the trainable parameters only, the adapters' own weights on top of the base's.
    pub fn with_lora(self, mcfg: &LlamaConfig, lora: &crate::model::LoraConfig) -> Self {
        let (t, a) = (lora.trainable_parameters(mcfg) as u64, lora.adapter_parameters(mcfg) as u64);
        let e = Self { weights: self.weights + 4 * a, gradients: 4 * t, optimizer: 8 * t, ..self };
        Self { total: BASE + e.weights + e.gradients + e.optimizer + e.activations + e.loss, ..e }
    }

    /// One line: the total and where it goes.
    pub fn render(&self) -> String {
        let gb = |b: u64| crate::util::table::compact(b as f64);
        format!(
            "{}B at {} tokens (weights {}B, gradients {}B, AdamW {}B, activations {}B, loss {}B)",
            gb(self.total),
            crate::util::table::thousands(self.tokens as u64),
            gb(self.weights),
            gb(self.gradients),
            gb(self.optimizer),
            gb(self.activations),
            gb(self.loss)
        )
    }
}

/// The configuration of a preset or a model directory (`config.json` only: no weights read).
pub fn model_config(model: &str) -> anyhow::Result<LlamaConfig> {
    match LlamaConfig::preset(model) {
        Some(c) => Ok(c),
        None => Ok(LlamaConfig::from_hf_file(&std::path::Path::new(model).join("config.json"))?),
    }
}

/// The plain and the checkpointed estimate of a run of `cfg` over `plan`: its largest
/// micro-batch as the run lays it out.
pub fn for_plan(
    mcfg: &LlamaConfig,
    cfg: &super::TrainConfig,
    plan: &crate::plan::Plan,
) -> [MemoryEstimate; 2] {
    let layout = super::inputs::Layout::new(cfg.padding_free, cfg.seq_bucket);
    let tokens = plan
        .steps
        .iter()
        .flat_map(|s| &s.micro_batches)
        .map(|mb| super::inputs::computed_tokens(mb, layout))
        .max()
        .unwrap_or(0);
    [false, true].map(|ck| {
        let e = estimate(mcfg, tokens, cfg.loss_chunk, ck, cfg.precision);
        match &cfg.lora {
            Some(l) => e.with_lora(mcfg, l),
            None => e,
        }
    })
}

/// A warning when a step is estimated not to fit in `available` bytes, with what would help.
pub fn fit_warning(
    plain: &MemoryEstimate,
    checkpointed: &MemoryEstimate,
    checkpointing: bool,
    available: u64,
) -> Option<String> {
    let e = if checkpointing { checkpointed } else { plain };
    if e.total <= available {
        return None;
    }
    let gb = |b: u64| crate::util::table::compact(b as f64);
    let hint = match checkpointing {
        false if checkpointed.total <= available => {
            format!("; with --activation-checkpointing it needs {}B", gb(checkpointed.total))
        }
        _ => "; use a shorter --max-tokens (or a smaller --batch-size)".into(),
    };
    Some(format!(
        "this step is estimated to need {}B at {} tokens but {}B is available{hint}",
        gb(e.total),
        crate::util::table::thousands(e.tokens as u64),
        gb(available)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpointing_bounds_activations_and_state_is_exact() {
        let m = LlamaConfig::preset("small").unwrap();
        let plain = estimate(&m, 65536, 1024, false, Precision::F32);
        let ck = estimate(&m, 65536, 1024, true, Precision::F32);
        assert_eq!(plain.weights + plain.gradients + plain.optimizer, 16 * m.num_parameters() as u64);
        assert!(ck.activations * 5 < plain.activations, "{} vs {}", ck.activations, plain.activations);
        // Twice the tokens: about twice the activations.
        let half = estimate(&m, 32768, 1024, false, Precision::F32);
        assert!((plain.activations as f64 / half.activations as f64 - 2.0).abs() < 1e-9);
        let bf = estimate(&m, 65536, 1024, false, Precision::Bf16);
        assert_eq!(bf.weights, 6 * m.num_parameters() as u64);
        let w = fit_warning(&plain, &ck, false, ck.total + 1).unwrap();
        assert!(w.contains("with --activation-checkpointing it needs"), "{w}");
        assert!(fit_warning(&plain, &ck, true, ck.total + 1).is_none());
    }
}
