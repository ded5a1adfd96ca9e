//! What a plan is made from (`core-cli plan`): a lengths file, or a dataset tokenized as the model
//! that will train on it sees it; planned under one or several strategies at once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::DataSource;
use crate::plan::{Item, PlanConfig, PlanOptions, Planned, Strategy, lengths, plan_items};
use crate::util::table::thousands;

#[derive(Debug, Clone, PartialEq)]
pub enum PlanInput {
    /// One sequence per line: `total_len` or `total_len target_len` ([`lengths`]).
    Lengths(PathBuf),
    /// Records, tokenized (targets exact, truncation with the exact mask).
    Data(DataSource),
}

/// Every strategy's plan of one input.
pub struct PlanSet {
    /// What was planned, in words (file, count, tokenizer).
    pub source: String,
    pub plans: Vec<(PlanConfig, Planned)>,
}

impl PlanInput {
    /// Plans the input under `opts` with each of `strategies`.
    pub fn plan(&self, opts: &PlanOptions, strategies: &[Strategy]) -> anyhow::Result<PlanSet> {
        let (source, per_strategy): (String, Vec<(Vec<Item>, usize)>) = match self {
            Self::Lengths(path) => {
                let items = lengths::read(path)?;
                let source = format!("{} ({} sequences)", path.display(), thousands(items.len() as u64));
                (source, strategies.iter().map(|_| (items.clone(), 0)).collect())
            }
            Self::Data(src) => {
                let (ds, tok) = src.load()?;
                let source = format!(
                    "{} ({} examples, {} skipped; tokenizer {tok})",
                    ds.file,
                    thousands(ds.len() as u64),
                    ds.skipped.len()
                );
                let limit = |s: Strategy| opts.config(s).length_limit();
                (source, strategies.iter().map(|&s| ds.items(limit(s), opts.overlong)).collect())
            }
        };
        let mut plans = Vec::new();
        for (&strategy, (items, pre_truncated)) in strategies.iter().zip(&per_strategy) {
            let cfg = opts.config(strategy);
            plans.push((cfg.clone(), plan_items(items, &cfg, *pre_truncated)?));
        }
        Ok(PlanSet { source, plans })
    }
}

impl PlanSet {
    /// `core-cli plan --json`: one strategy's stats (with `plan_seconds`), or, when `keyed`, every
    /// strategy's under its name.
    pub fn json(&self, keyed: bool) -> anyhow::Result<serde_json::Value> {
        let mut objs: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        for (cfg, r) in &self.plans {
            let mut v = serde_json::to_value(&r.stats)?;
            v["plan_seconds"] = serde_json::json!(r.seconds);
            objs.insert(cfg.strategy.to_string(), v);
        }
        Ok(match keyed {
            true => serde_json::to_value(objs)?,
            false => objs.into_values().next().unwrap_or_default(),
        })
    }
}
