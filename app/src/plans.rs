//! The three plans the visualiser shows. Each is planned through the library options
//! `core-cli plan` uses ([`PlanOptions`]) and shown with the equivalent `core-cli plan` command, so
//! every number on screen is what `core-cli plan … --json` prints for the command shown under it
//! (tests/app_ui.rs checks this against the real command-line parser).

use longalign::plan::{Algorithm, LossMode, Plan, PlanOptions, PlanStats, Strategy, plan_items};

use crate::data::Loaded;

/// The visualiser's sliders.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Pack row capacity; longest sequence allowed for naive and sorted.
    pub max_tokens: u32,
    /// Rows per micro-batch for naive and sorted.
    pub batch_size: usize,
    /// Rows per micro-batch when packing.
    pub pack_rows: usize,
    pub devices: usize,
    pub accum: usize,
    pub algorithm: Algorithm,
    pub loss: LossMode,
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_tokens: 2048,
            batch_size: 8,
            pack_rows: 1,
            devices: 1,
            accum: 1,
            algorithm: Algorithm::Ffd,
            loss: LossMode::Sequence,
            seed: 42,
        }
    }
}

pub const STRATEGIES: [Strategy; 3] = [Strategy::Naive, Strategy::Sorted, Strategy::Pack];

impl Settings {
    /// Rows per micro-batch under `strategy`.
    fn rows(&self, strategy: Strategy) -> usize {
        if strategy == Strategy::Pack { self.pack_rows } else { self.batch_size }
    }

    /// The planner options these settings stand for, under `strategy`.
    pub fn options(&self, strategy: Strategy) -> PlanOptions {
        PlanOptions {
            algorithm: self.algorithm,
            max_tokens: Some(self.max_tokens),
            batch_size: Some(self.rows(strategy)),
            devices: self.devices,
            accum: self.accum,
            loss: self.loss,
            seed: self.seed,
            ..PlanOptions::default()
        }
    }

    /// The `core-cli plan` command for one strategy (dataset arguments included).
    pub fn command(&self, strategy: Strategy, data: &Loaded) -> Vec<String> {
        let rows = self.rows(strategy);
        let mut a: Vec<String> = vec!["core-cli".into(), "plan".into()];
        a.extend(data.cli_args());
        for (k, v) in [
            ("--strategy", strategy.to_string()),
            ("--algorithm", self.algorithm.to_string()),
            ("--max-tokens", self.max_tokens.to_string()),
            ("--batch-size", rows.to_string()),
            ("--devices", self.devices.to_string()),
            ("--accum", self.accum.to_string()),
            ("--loss", self.loss.to_string()),
            ("--seed", self.seed.to_string()),
        ] {
            a.push(k.into());
            a.push(v);
        }
        a
    }
}

/// One strategy's plan, flattened for drawing.
pub struct Planned {
    pub strategy: Strategy,
    /// What the screen calls it: the strategy, or `pack/<algorithm>` when packers are compared.
    pub name: String,
    pub command: String,
    pub plan: Plan,
    pub stats: PlanStats,
    pub seconds: f64,
    /// Every row in plan order: (micro-batch row length, the row's sequence lengths and ids,
    /// whether it starts a micro-batch).
    pub rows: Vec<DrawRow>,
    /// Longest row length (the drawing's full width).
    pub widest: u32,
    /// Target tokens of each planned item, by id (for the loss-weight view's steps).
    target_of: std::collections::HashMap<usize, u32>,
}

pub struct DrawRow {
    pub row_len: u32,
    /// (item id, length) per sequence, in row order.
    pub seqs: Vec<(usize, u32)>,
    pub first_of_micro_batch: bool,
}

/// Plans `data` under `settings` with one strategy.
pub fn plan_one(data: &Loaded, settings: &Settings, strategy: Strategy) -> anyhow::Result<Planned> {
    plan_named(data, settings, strategy, strategy.to_string())
}

fn plan_named(
    data: &Loaded,
    settings: &Settings,
    strategy: Strategy,
    name: String,
) -> anyhow::Result<Planned> {
    let cmd = settings.command(strategy, data);
    let cfg = settings.options(strategy).config(strategy);
    let (items, pre_truncated) = data.items(cfg.length_limit());
    let r = plan_items(&items, &cfg, pre_truncated)?;
    let mut rows = Vec::with_capacity(r.stats.rows);
    for mb in r.plan.micro_batches() {
        for (k, row) in mb.rows.iter().enumerate() {
            rows.push(DrawRow {
                row_len: mb.row_len,
                seqs: row.ids.iter().copied().zip(row.seq_lens()).collect(),
                first_of_micro_batch: k == 0,
            });
        }
    }
    let widest = rows.iter().map(|r| r.row_len).max().unwrap_or(1);
    let target_of = r.plan.items.iter().map(|i| (i.id, i.target)).collect();
    Ok(Planned {
        strategy,
        name,
        command: cmd.join(" "),
        plan: r.plan,
        stats: r.stats,
        seconds: r.seconds,
        rows,
        widest,
        target_of,
    })
}

/// Packing under each algorithm (next-fit, FFD, BFD), the rest of the settings as they are.
pub fn plan_packers(data: &Loaded, settings: &Settings) -> anyhow::Result<Vec<Planned>> {
    [Algorithm::NextFit, Algorithm::Ffd, Algorithm::Bfd]
        .into_iter()
        .map(|a| {
            let s = Settings { algorithm: a, ..settings.clone() };
            plan_named(data, &s, Strategy::Pack, format!("pack/{a}"))
        })
        .collect()
}

/// All three strategies.
pub fn plan_all(data: &Loaded, settings: &Settings) -> anyhow::Result<Vec<Planned>> {
    STRATEGIES.iter().map(|&s| plan_one(data, settings, s)).collect()
}

/// Each sequence's share of one step's loss under both weightings: (item id, target tokens,
/// token-mean share, sequence-mean share). Shares of a step sum to 1.
pub fn step_shares(p: &Planned, step: usize) -> Vec<(usize, u32, f64, f64)> {
    let Some(s) = p.plan.steps.get(step) else { return Vec::new() };
    let target_of = &p.target_of;
    let ids: Vec<usize> =
        s.micro_batches.iter().flat_map(|mb| mb.rows.iter().flat_map(|r| r.ids.iter().copied())).collect();
    let targets: Vec<u32> = ids.iter().map(|id| target_of.get(id).copied().unwrap_or(0)).collect();
    let tok = longalign::plan::weights::step_weights(&targets, LossMode::Token);
    let seq = longalign::plan::weights::step_weights(&targets, LossMode::Sequence);
    ids.iter()
        .zip(&targets)
        .zip(tok.iter().zip(&seq))
        .map(|((&id, &n), (&wt, &ws))| (id, n, n as f64 * wt as f64, n as f64 * ws as f64))
        .collect()
}
