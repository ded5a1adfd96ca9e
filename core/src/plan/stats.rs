//! What a plan costs: fill, padding, attention work, device balance.

use serde::{Deserialize, Serialize};

use super::Plan;

/// Summary of a plan. Field names are the `core-cli plan --json` schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStats {
    pub strategy: String,
    pub steps: usize,
    pub micro_batches: usize,
    pub rows: usize,
    /// Sequence placements (sequences × epochs).
    pub sequences: usize,
    /// Tokens of real sequences.
    pub useful_tokens: u64,
    /// Tokens the rows occupy: capacity per packed row, the micro-batch's longest per padded row.
    pub capacity_tokens: u64,
    /// useful_tokens / capacity_tokens.
    pub fill: f64,
    /// 1 − fill.
    pub padding_fraction: f64,
    /// Σ nᵢ² over sequences: attention score work with block-diagonal (varlen) attention.
    pub attn_work: u64,
    /// Σ row_len² over rows: the same with dense attention over whole rows.
    pub attn_work_dense: u64,
    pub mean_seqs_per_row: f64,
    pub max_seqs_per_row: usize,
    /// Target (loss) tokens.
    pub target_tokens: u64,
    /// Sequences whose targets were all cut away (weight 0).
    pub no_target_sequences: usize,
    pub truncated: usize,
    pub dropped: usize,
    /// Mean over steps of (max device useful tokens / mean device useful tokens); 1 = balanced.
    pub device_balance_mean: f64,
    /// Worst step's max/mean.
    pub device_balance_max: f64,
}

impl PlanStats {
    pub fn of(plan: &Plan) -> Self {
        let target_of: std::collections::HashMap<usize, u32> =
            plan.items.iter().map(|it| (it.id, it.target)).collect();
        let (mut rows, mut sequences, mut useful, mut capacity) = (0usize, 0usize, 0u64, 0u64);
        let (mut attn, mut attn_dense, mut max_seqs) = (0u64, 0u64, 0usize);
        let (mut targets, mut no_target) = (0u64, 0usize);
        let (mut bal_sum, mut bal_max, mut bal_n) = (0f64, 1f64, 0usize);
        let devices = plan.config.devices;
        for step in &plan.steps {
            let mut per_device = vec![0u64; devices];
            for mb in &step.micro_batches {
                for row in &mb.rows {
                    rows += 1;
                    sequences += row.ids.len();
                    max_seqs = max_seqs.max(row.ids.len());
                    capacity += mb.row_len as u64;
                    attn_dense += (mb.row_len as u64).pow(2);
                    for (n, &id) in row.seq_lens().zip(&row.ids) {
                        useful += n as u64;
                        per_device[mb.device] += n as u64;
                        attn += (n as u64).pow(2);
                        let t = target_of.get(&id).copied().unwrap_or(0).min(n);
                        targets += t as u64;
                        no_target += (t == 0) as usize;
                    }
                }
            }
            let total: u64 = per_device.iter().sum();
            if total > 0 {
                let mean = total as f64 / devices as f64;
                let ratio = *per_device.iter().max().unwrap() as f64 / mean;
                bal_sum += ratio;
                bal_max = bal_max.max(ratio);
                bal_n += 1;
            }
        }
        let fill = if capacity == 0 { 0.0 } else { useful as f64 / capacity as f64 };
        Self {
            strategy: plan.config.strategy.to_string(),
            steps: plan.steps.len(),
            micro_batches: plan.steps.iter().map(|s| s.micro_batches.len()).sum(),
            rows,
            sequences,
            useful_tokens: useful,
            capacity_tokens: capacity,
            fill,
            padding_fraction: if capacity == 0 { 0.0 } else { 1.0 - fill },
            attn_work: attn,
            attn_work_dense: attn_dense,
            mean_seqs_per_row: if rows == 0 { 0.0 } else { sequences as f64 / rows as f64 },
            max_seqs_per_row: max_seqs,
            target_tokens: targets,
            no_target_sequences: no_target,
            truncated: plan.truncated,
            dropped: plan.dropped,
            device_balance_mean: if bal_n == 0 { 1.0 } else { bal_sum / bal_n as f64 },
            device_balance_max: bal_max,
        }
    }
}
