//! Loss weights: how much each target token counts in one optimizer step.
//!
//! The trainer computes `loss = Σ_tokens w_t · CE_t` over every micro-batch of a step on every device
//! and adds the gradients up (no further division anywhere). The weights alone decide the objective:
//!
//! * `Sequence` (LongAlign): token j of sequence i gets `1 / (Nᵢ · M)`, Nᵢ = target tokens of i, M =
//!   sequences with at least one target in the whole step. So `L = (1/M) Σᵢ Lᵢ / Nᵢ`: each sequence's
//!   mean loss counts once, however long its answer and however it was packed.
//! * `Token`: every target token gets `1 / T`, T = target tokens in the whole step: the usual
//!   token-mean, but over the *step*, not per micro-batch (per-micro-batch means followed by a mean of
//!   means is what breaks gradient accumulation in most trainers).
//!
//! M and T are counted over the step, not the micro-batch or device, so the same step gives the same
//! loss whatever the split across devices (D) and accumulation (A). The LongAlign reference divides
//! by the per-device count of its micro-batch, which is exact only for D = A = 1.

use serde::{Deserialize, Serialize};

/// Which objective the per-token weights implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LossMode {
    /// LongAlign's loss weighting: every sequence counts equally.
    #[default]
    Sequence,
    /// Plain token-mean over the whole step.
    Token,
}

impl std::str::FromStr for LossMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sequence" => Ok(Self::Sequence),
            "token" => Ok(Self::Token),
            _ => Err(format!("unknown loss mode {s:?} (expected sequence or token)")),
        }
    }
}

impl std::fmt::Display for LossMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sequence => "sequence",
            Self::Token => "token",
        })
    }
}

/// Per-target-token weight of each sequence of one step, given their target counts (in any order).
///
/// Computed in f64 and rounded once to f32, so a weight does not depend on the summation order of
/// the step's other sequences. Sequences with no target tokens get 0 and are not counted in M.
pub fn step_weights(targets: &[u32], mode: LossMode) -> Vec<f32> {
    match mode {
        LossMode::Sequence => {
            let m = targets.iter().filter(|&&n| n > 0).count() as f64;
            targets.iter().map(|&n| if n == 0 { 0.0 } else { (1.0 / (n as f64 * m)) as f32 }).collect()
        }
        LossMode::Token => {
            let t: u64 = targets.iter().map(|&n| n as u64).sum();
            targets.iter().map(|&n| if n == 0 { 0.0 } else { (1.0 / t as f64) as f32 }).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_weights_make_each_sequence_count_once() {
        let w = step_weights(&[10, 1, 0, 4], LossMode::Sequence);
        assert_eq!(w[2], 0.0);
        // Three sequences with targets: each one's weights sum to 1/3.
        for (n, wi) in [(10.0, w[0]), (1.0, w[1]), (4.0, w[3])] {
            assert!((n * wi as f64 - 1.0 / 3.0).abs() < 1e-7);
        }
    }

    #[test]
    fn token_weights_are_a_step_mean() {
        let w = step_weights(&[10, 1, 0, 4], LossMode::Token);
        assert_eq!(w, vec![1.0 / 15.0, 1.0 / 15.0, 0.0, 1.0 / 15.0]);
    }

    #[test]
    fn empty_and_all_zero_steps() {
        assert!(step_weights(&[], LossMode::Sequence).is_empty());
        assert_eq!(step_weights(&[0, 0], LossMode::Sequence), vec![0.0, 0.0]);
        assert_eq!(step_weights(&[0, 0], LossMode::Token), vec![0.0, 0.0]);
    }
}
