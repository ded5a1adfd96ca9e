//! What is in a dataset, in tokens of the model that will train on it (`core-cli stats`, the
//! app's Data view): counts per format and source, length quantiles and histogram, target share.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{DataError, TokenizedDataset};
use crate::util::table::{Table, compact, thousands};

#[derive(Debug, Serialize)]
pub struct LengthSummary {
    pub total: u64,
    pub min: u64,
    pub mean: f64,
    pub median: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Debug, Serialize)]
pub struct Bucket {
    /// Inclusive lower bound in tokens.
    pub lo: u64,
    /// Exclusive upper bound.
    pub hi: u64,
    pub count: usize,
}

#[derive(Debug, Serialize, Default)]
pub struct SourceStats {
    pub examples: usize,
    pub tokens: u64,
    pub target_tokens: u64,
    pub mean_len: f64,
}

/// The `stats --json` object.
#[derive(Debug, Serialize)]
pub struct DataStats {
    pub file: String,
    pub tokenizer: String,
    pub examples: usize,
    pub skipped: usize,
    /// The first 100 skip reasons, each naming file, line and field.
    pub skipped_reasons: Vec<String>,
    pub formats: BTreeMap<String, usize>,
    pub tokens: LengthSummary,
    pub target_tokens: u64,
    /// Target tokens / all tokens.
    pub target_share: f64,
    /// Token-length histogram in power-of-two buckets.
    pub histogram: Vec<Bucket>,
    pub sources: BTreeMap<String, SourceStats>,
    /// Conversations whose template is not prefix-stable and what `--turns` made of them.
    pub not_prefix_stable: super::dataset::PolicyCount,
}

fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

impl DataStats {
    /// The text `core-cli stats` prints.
    pub fn render(&self) -> String {
        let s = self;
        let mut out = String::new();
        let formats: Vec<String> =
            s.formats.iter().map(|(f, n)| format!("{f} {}", thousands(*n as u64))).collect();
        out.push_str(&format!(
            "{}: {} examples ({}), {} skipped; tokenizer {}\n",
            s.file,
            thousands(s.examples as u64),
            formats.join(", "),
            s.skipped,
            s.tokenizer
        ));
        for r in s.skipped_reasons.iter().take(10) {
            out.push_str(&format!("  skipped {r}\n"));
        }
        if s.skipped > 10 {
            out.push_str(&format!("  … and {} more (see --json)\n", s.skipped - 10));
        }
        let p = &s.not_prefix_stable;
        if p.conversations > 0 {
            let what = if p.sequences > p.conversations {
                format!(
                    "split into {} sequences, one per assistant turn, rendered as the last turn: +{} tokens recomputed (--turns split)",
                    thousands(p.sequences as u64),
                    thousands(p.extra_tokens)
                )
            } else {
                "trained on their last assistant turn only (--turns last)".to_string()
            };
            out.push_str(&format!(
                "{} conversations not prefix-stable under this template: {what}\n",
                thousands(p.conversations as u64)
            ));
        }
        let t = &s.tokens;
        out.push_str(&format!(
            "tokens: {} total; per example min {} · mean {} · median {} · p90 {} · p99 {} · max {}\n",
            compact(t.total as f64),
            thousands(t.min),
            compact(t.mean.round()),
            thousands(t.median),
            thousands(t.p90),
            thousands(t.p99),
            thousands(t.max)
        ));
        out.push_str(&format!(
            "targets: {} tokens = {:.1}% of all tokens carry loss\n\nlength histogram (tokens):\n",
            compact(s.target_tokens as f64),
            100.0 * s.target_share
        ));
        let most = s.histogram.iter().map(|b| b.count).max().unwrap_or(1).max(1);
        for b in &s.histogram {
            let bar = "█".repeat((40 * b.count).div_ceil(most));
            out.push_str(&format!(
                "  {:>8} – {:<8} {:>7}  {bar}\n",
                thousands(b.lo),
                thousands(b.hi),
                thousands(b.count as u64)
            ));
        }
        out.push('\n');
        let mut table =
            Table::new(["source", "examples", "tokens", "mean len", "target %"].map(String::from).to_vec());
        for (name, st) in &s.sources {
            table.row(vec![
                name.clone(),
                thousands(st.examples as u64),
                compact(st.tokens as f64),
                compact(st.mean_len.round()),
                format!("{:.1}", 100.0 * st.target_tokens as f64 / st.tokens.max(1) as f64),
            ]);
        }
        out.push_str(&table.render());
        out
    }
}

/// The statistics of `ds`, tokenized by the tokenizer named `tokenizer`.
pub fn compute(ds: &TokenizedDataset, tokenizer: &str) -> DataStats {
    let mut lens: Vec<u64> = ds.tokens.iter().map(|t| t.len() as u64).collect();
    let total: u64 = lens.iter().sum();
    let targets: u64 = ds.tokens.iter().map(|t| t.target_count() as u64).sum();
    let mut sources: BTreeMap<String, SourceStats> = BTreeMap::new();
    for (ex, t) in ds.examples.iter().zip(&ds.tokens) {
        let s = sources.entry(ex.source.clone().unwrap_or_else(|| "(none)".into())).or_default();
        s.examples += 1;
        s.tokens += t.len() as u64;
        s.target_tokens += t.target_count() as u64;
    }
    for s in sources.values_mut() {
        s.mean_len = s.tokens as f64 / s.examples.max(1) as f64;
    }
    let mut histogram: Vec<Bucket> = Vec::new();
    for &l in &lens {
        let lo = if l == 0 { 0 } else { 1u64 << (63 - l.leading_zeros()) };
        match histogram.iter_mut().find(|b| b.lo == lo) {
            Some(b) => b.count += 1,
            None => histogram.push(Bucket { lo, hi: (lo * 2).max(1), count: 1 }),
        }
    }
    histogram.sort_by_key(|b| b.lo);
    lens.sort_unstable();
    DataStats {
        file: ds.file.clone(),
        tokenizer: tokenizer.to_string(),
        examples: ds.len(),
        skipped: ds.skipped.len(),
        skipped_reasons: ds.skipped.iter().take(100).map(DataError::to_string).collect(),
        formats: ds.formats.iter().map(|(f, n)| (f.as_str().to_string(), *n)).collect(),
        tokens: LengthSummary {
            total,
            min: lens.first().copied().unwrap_or(0),
            mean: if lens.is_empty() { 0.0 } else { total as f64 / lens.len() as f64 },
            median: quantile(&lens, 0.5),
            p90: quantile(&lens, 0.9),
            p99: quantile(&lens, 0.99),
            max: lens.last().copied().unwrap_or(0),
        },
        target_tokens: targets,
        target_share: if total == 0 { 0.0 } else { targets as f64 / total as f64 },
        histogram,
        sources,
        not_prefix_stable: ds.by_policy.clone(),
    }
}
