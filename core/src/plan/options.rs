//! The planner's knobs as a user sets them, with `core-cli plan`'s defaults: one place that turns
//! "pack, FFD, 4 devices" into a [`PlanConfig`], shared by the command line and the app (whose plan
//! view must show exactly what `core-cli plan` prints for the command under it).

use web_time::Instant;

use super::{Algorithm, Item, LossMode, Overlong, Plan, PlanConfig, PlanStats, Strategy};

/// What a user chooses; `None` fields take the strategy's default (see [`PlanOptions::config`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    pub algorithm: Algorithm,
    /// Pack: row capacity (default 65,536). Naive/sorted: longest sequence kept (default: no limit).
    pub max_tokens: Option<u32>,
    /// Rows per micro-batch (default: 8 for naive/sorted, 1 for pack).
    pub batch_size: Option<usize>,
    /// Sorted only: cap each micro-batch at this many padded tokens instead of a fixed batch size.
    pub token_budget: Option<u32>,
    pub devices: usize,
    pub accum: usize,
    pub loss: LossMode,
    pub seed: u64,
    pub overlong: Overlong,
    pub epochs: usize,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Ffd,
            max_tokens: None,
            batch_size: None,
            token_budget: None,
            devices: 1,
            accum: 1,
            loss: LossMode::Sequence,
            seed: 42,
            overlong: Overlong::Truncate,
            epochs: 1,
        }
    }
}

/// Pack's row capacity when none is given: LongAlign's 64k.
pub const DEFAULT_PACK_TOKENS: u32 = 65536;

impl PlanOptions {
    /// The plan config for `strategy` under these options.
    pub fn config(&self, strategy: Strategy) -> PlanConfig {
        PlanConfig {
            strategy,
            algorithm: self.algorithm,
            max_tokens: match strategy {
                Strategy::Pack => Some(self.max_tokens.unwrap_or(DEFAULT_PACK_TOKENS)),
                _ => self.max_tokens,
            },
            batch_size: self.batch_size.unwrap_or(if strategy == Strategy::Pack { 1 } else { 8 }),
            token_budget: if strategy == Strategy::Sorted { self.token_budget } else { None },
            devices: self.devices,
            accum: self.accum,
            loss: self.loss,
            seed: self.seed,
            overlong: self.overlong,
            epochs: self.epochs,
        }
    }
}

/// A plan, its summary, and how long planning took.
pub struct Planned {
    pub plan: Plan,
    pub stats: PlanStats,
    pub seconds: f64,
}

/// Plans `items` under `cfg`; `pre_truncated` sequences were already cut by the data path (they
/// count in the summary's `truncated`).
pub fn plan_items(items: &[Item], cfg: &PlanConfig, pre_truncated: usize) -> anyhow::Result<Planned> {
    let t0 = Instant::now();
    let plan = super::plan(items, cfg)?;
    let seconds = t0.elapsed().as_secs_f64();
    let mut stats = plan.stats();
    stats.truncated += pre_truncated;
    Ok(Planned { plan, stats, seconds })
}
