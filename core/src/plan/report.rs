//! Plans as text: the side-by-side table `core-cli plan` prints, and a one-line description.

use super::{PlanConfig, PlanStats, Strategy};
use crate::util::table::{Table, compact, thousands};

/// Metrics as rows, strategies as columns.
pub fn compare_table(results: &[(String, &PlanStats)]) -> String {
    let mut header = vec!["".to_string()];
    header.extend(results.iter().map(|(name, _)| name.clone()));
    let mut t = Table::new(header);
    let metric = |t: &mut Table, name: &str, f: &dyn Fn(&PlanStats) -> String| {
        let mut row = vec![name.to_string()];
        row.extend(results.iter().map(|(_, s)| f(s)));
        t.row(row);
    };
    metric(&mut t, "steps", &|s| thousands(s.steps as u64));
    metric(&mut t, "micro-batches", &|s| thousands(s.micro_batches as u64));
    metric(&mut t, "rows", &|s| thousands(s.rows as u64));
    metric(&mut t, "sequences", &|s| thousands(s.sequences as u64));
    metric(&mut t, "useful tokens", &|s| compact(s.useful_tokens as f64));
    metric(&mut t, "capacity tokens", &|s| compact(s.capacity_tokens as f64));
    metric(&mut t, "fill %", &|s| format!("{:.2}", 100.0 * s.fill));
    metric(&mut t, "padding %", &|s| format!("{:.2}", 100.0 * s.padding_fraction));
    metric(&mut t, "seqs/row mean", &|s| format!("{:.2}", s.mean_seqs_per_row));
    metric(&mut t, "seqs/row max", &|s| s.max_seqs_per_row.to_string());
    metric(&mut t, "attn work Σn²", &|s| compact(s.attn_work as f64));
    metric(&mut t, "attn dense Σrow²", &|s| compact(s.attn_work_dense as f64));
    metric(&mut t, "dense/varlen", &|s| {
        format!("{:.2}×", s.attn_work_dense as f64 / s.attn_work.max(1) as f64)
    });
    metric(&mut t, "target tokens", &|s| compact(s.target_tokens as f64));
    metric(&mut t, "no-target seqs", &|s| s.no_target_sequences.to_string());
    metric(&mut t, "truncated", &|s| s.truncated.to_string());
    metric(&mut t, "dropped", &|s| s.dropped.to_string());
    metric(&mut t, "device max/mean", &|s| {
        format!("{:.3} (worst {:.3})", s.device_balance_mean, s.device_balance_max)
    });
    t.render()
}

/// One line saying what a plan config plans.
pub fn describe(cfg: &PlanConfig) -> String {
    let shape = match cfg.strategy {
        Strategy::Pack => format!("pack/{} rows of {} tokens", cfg.algorithm, cfg.max_tokens.unwrap_or(0)),
        Strategy::Sorted => match cfg.token_budget {
            Some(b) => format!("sorted, ≤{b} padded tokens per micro-batch"),
            None => "sorted".into(),
        },
        Strategy::Naive => "naive".into(),
    };
    format!(
        "{shape}; micro-batch {} row(s); {} device(s) × {} accumulation; loss {}; seed {}",
        cfg.batch_size, cfg.devices, cfg.accum, cfg.loss, cfg.seed
    )
}
