//! The batch planner: which sequences go into which row of which micro-batch on which device in
//! which optimizer step, with offsets and loss weights. Plain Rust, no tensors.
//!
//! ```text
//! items (id, total, target) ──overlong──▶ strategy ──▶ rows ──▶ micro-batches ──▶ steps ──▶ weights
//!                                          naive      one seq/row, padded to the micro-batch's longest
//!                                          sorted     same, but sequences of similar length together
//!                                          pack       many seqs/row, row = capacity, block-diagonal
//! ```
//!
//! A packed row of capacity 12 holding sequences of 5, 4 and 2 tokens (1 pad):
//!
//! ```text
//! tokens      a a a a a b b b b c c .        cu_seqlens = [0, 5, 9, 11]
//! positions   0 1 2 3 4 0 1 2 3 0 1 .        (restart per sequence)
//! attention   a sees a (causal), b sees b, c sees c: block-diagonal, never across
//! ```
//!
//! One step = `devices × accum` micro-batches; micro-batch = `batch_size` rows. The loss weights of a
//! step are computed over all its micro-batches at once (see [`weights`]), so the objective does not
//! depend on how the step is split.

pub mod lengths;
pub mod mix;
pub mod options;
pub mod pack;
pub mod report;
pub mod stats;
pub mod weights;

use serde::{Deserialize, Serialize};

pub use options::{PlanOptions, Planned, plan_items};
pub use stats::PlanStats;
pub use weights::LossMode;

use crate::util::rng::SplitMix64;

/// All the planner needs to know of a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Caller's identifier (dataset index); reported back in [`Row::ids`].
    pub id: usize,
    /// Tokens in the sequence (prompt + answer + template tokens). At least 1.
    pub total: u32,
    /// Tokens that carry loss. At most `total`.
    pub target: u32,
}

/// How sequences are grouped into rows and micro-batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Random micro-batches of `batch_size` sequences, padded to the longest.
    Naive,
    /// LongAlign's sorted batching: sort by length, cut into steps, shuffle the steps.
    Sorted,
    /// Bin-pack sequences into rows of `max_tokens`; attention is block-diagonal.
    Pack,
}

/// Bin-packing algorithm for [`Strategy::Pack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// LongAlign's packer: input order, a sequence that does not fit closes the row.
    NextFit,
    /// First-fit decreasing.
    Ffd,
    /// Best-fit decreasing.
    Bfd,
}

/// What to do with a sequence longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlong {
    /// Keep the first `limit` tokens. With only lengths known, the lost tokens are taken from the
    /// target count (answers come last); the data path truncates with the exact mask before
    /// planning.
    Truncate,
    /// Leave the sequence out (counted).
    Drop,
    /// Refuse to plan.
    Error,
}

macro_rules! from_str_enum {
    ($ty:ty, $($name:literal => $val:expr),+) => {
        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($val),)+
                    _ => Err(format!("unknown value {s:?} (expected one of: {})", [$($name),+].join(", "))),
                }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                $(if *self == $val { return f.write_str($name); })+
                unreachable!()
            }
        }
    };
}
from_str_enum!(Strategy, "naive" => Strategy::Naive, "sorted" => Strategy::Sorted, "pack" => Strategy::Pack);
from_str_enum!(Algorithm, "next-fit" => Algorithm::NextFit, "ffd" => Algorithm::Ffd, "bfd" => Algorithm::Bfd);
from_str_enum!(Overlong, "truncate" => Overlong::Truncate, "drop" => Overlong::Drop, "error" => Overlong::Error);

/// Everything that determines a plan. Same config + same items → byte-identical plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanConfig {
    pub strategy: Strategy,
    pub algorithm: Algorithm,
    /// Pack: row capacity (required). Naive/sorted: longest sequence allowed (optional).
    pub max_tokens: Option<u32>,
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Sorted only: cap on padded tokens per micro-batch (rows × longest); replaces `batch_size`.
    pub token_budget: Option<u32>,
    pub devices: usize,
    pub accum: usize,
    pub loss: LossMode,
    pub seed: u64,
    pub overlong: Overlong,
    pub epochs: usize,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::Pack,
            algorithm: Algorithm::Ffd,
            max_tokens: Some(65536),
            batch_size: 1,
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

impl PlanConfig {
    /// The length above which a sequence is over-long, if any.
    pub fn length_limit(&self) -> Option<u32> {
        match (self.max_tokens, self.token_budget, self.strategy) {
            (m, Some(b), Strategy::Sorted) => Some(m.map_or(b, |m| m.min(b))),
            (m, _, _) => m,
        }
    }
}

/// One row of a micro-batch: the sequences laid end to end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Item ids, in the order they sit in the row.
    pub ids: Vec<usize>,
    /// Offsets: sequence k occupies tokens `cu_seqlens[k]..cu_seqlens[k+1]`; positions restart at
    /// each offset. Length `ids.len() + 1`, starting at 0.
    pub cu_seqlens: Vec<u32>,
    /// Loss weight of each target token of sequence `ids[k]`.
    pub weights: Vec<f32>,
}

impl Row {
    /// Tokens in use (the rest of the row, up to the micro-batch's `row_len`, is padding).
    pub fn used(&self) -> u32 {
        *self.cu_seqlens.last().unwrap_or(&0)
    }

    /// Length of each sequence.
    pub fn seq_lens(&self) -> impl Iterator<Item = u32> + '_ {
        self.cu_seqlens.windows(2).map(|w| w[1] - w[0])
    }

    /// Position id of every used token: 0, 1, … restarting at each sequence.
    pub fn positions(&self) -> Vec<u32> {
        self.seq_lens().flat_map(|n| 0..n).collect()
    }
}

/// The rows one device processes in one forward/backward pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MicroBatch {
    pub step: usize,
    pub device: usize,
    /// Index of this micro-batch among the device's micro-batches of the step (accumulation index).
    pub micro: usize,
    /// Length every row is padded to: the capacity when packing, the longest sequence otherwise.
    pub row_len: u32,
    pub rows: Vec<Row>,
}

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub epoch: usize,
    /// Sorted by (device, micro).
    pub micro_batches: Vec<MicroBatch>,
}

/// A whole training plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub config: PlanConfig,
    pub steps: Vec<Step>,
    /// Sequences cut to the length limit (per epoch, counted once).
    pub truncated: usize,
    /// Sequences left out for being over-long (per epoch, counted once).
    pub dropped: usize,
    /// The items as planned (after truncation and drops).
    #[serde(skip)]
    pub items: Vec<Item>,
}

impl Plan {
    pub fn stats(&self) -> PlanStats {
        PlanStats::of(self)
    }

    pub fn micro_batches(&self) -> impl Iterator<Item = &MicroBatch> {
        self.steps.iter().flat_map(|s| s.micro_batches.iter())
    }

    /// The micro-batches of one device (rank), in step order: what a data-parallel worker runs.
    pub fn for_device(&self, device: usize) -> impl Iterator<Item = &MicroBatch> {
        self.micro_batches().filter(move |mb| mb.device == device)
    }

    /// The plan as JSON lines, one micro-batch per line: the `--out plan.jsonl` format.
    pub fn write_jsonl(&self, mut w: impl std::io::Write) -> std::io::Result<()> {
        for mb in self.micro_batches() {
            serde_json::to_writer(&mut w, mb)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("invalid plan configuration: {0}")]
    Config(String),
    #[error("item {id}: {what}")]
    Item { id: usize, what: String },
    #[error(
        "item {id} has {total} tokens, over the limit of {limit} (use --overlong truncate or drop, or raise --max-tokens)"
    )]
    Overlong { id: usize, total: u32, limit: u32 },
}

/// Applies the over-length policy. Returns the items to plan and (truncated, dropped) counts.
pub fn apply_overlong(
    items: &[Item],
    limit: Option<u32>,
    policy: Overlong,
) -> Result<(Vec<Item>, usize, usize), PlanError> {
    let mut out = Vec::with_capacity(items.len());
    let (mut truncated, mut dropped) = (0, 0);
    for &it in items {
        if it.total == 0 {
            return Err(PlanError::Item { id: it.id, what: "has no tokens".into() });
        }
        if it.target > it.total {
            return Err(PlanError::Item {
                id: it.id,
                what: format!("target {} exceeds total {}", it.target, it.total),
            });
        }
        match limit {
            Some(limit) if it.total > limit => match policy {
                Overlong::Error => return Err(PlanError::Overlong { id: it.id, total: it.total, limit }),
                Overlong::Drop => dropped += 1,
                Overlong::Truncate => {
                    truncated += 1;
                    let cut = it.total - limit;
                    out.push(Item { id: it.id, total: limit, target: it.target.saturating_sub(cut) });
                }
            },
            _ => out.push(it),
        }
    }
    Ok((out, truncated, dropped))
}

/// Plans `items` under `cfg`.
pub fn plan(items: &[Item], cfg: &PlanConfig) -> Result<Plan, PlanError> {
    validate(cfg)?;
    let (items, truncated, dropped) = apply_overlong(items, cfg.length_limit(), cfg.overlong)?;
    let lengths: Vec<u32> = items.iter().map(|it| it.total).collect();
    // Packing does not depend on the seed: compute it once for all epochs.
    let packed = match (cfg.strategy, cfg.max_tokens) {
        (Strategy::Pack, Some(cap)) => Some(match cfg.algorithm {
            Algorithm::NextFit => pack::next_fit(&lengths, cap),
            Algorithm::Ffd => pack::first_fit_decreasing(&lengths, cap),
            Algorithm::Bfd => pack::best_fit_decreasing(&lengths, cap),
        }),
        _ => None,
    };

    let mut steps = Vec::new();
    for epoch in 0..cfg.epochs {
        let mut rng = SplitMix64::derive(cfg.seed, epoch as u64);
        // Each micro-batch as (row_len, rows of item indices); grouped into steps below.
        let groups: Vec<Vec<(u32, Vec<Vec<usize>>)>> = match cfg.strategy {
            Strategy::Naive => {
                let mut order: Vec<usize> = (0..items.len()).collect();
                rng.shuffle(&mut order);
                let mbs = padded_micro_batches(&order, &lengths, cfg.batch_size, None);
                chunk_steps(mbs, cfg.devices * cfg.accum)
            }
            Strategy::Sorted => {
                let mut order: Vec<usize> = (0..items.len()).collect();
                order.sort_by_key(|&i| (lengths[i], items[i].id));
                let mbs = padded_micro_batches(&order, &lengths, cfg.batch_size, cfg.token_budget);
                let mut steps = chunk_steps(mbs, cfg.devices * cfg.accum);
                rng.shuffle(&mut steps);
                steps
            }
            Strategy::Pack => {
                let cap = cfg.max_tokens.expect("validated");
                let mut rows = packed.clone().expect("packed above");
                rng.shuffle(&mut rows);
                let mbs = rows.chunks(cfg.batch_size).map(|rows| (cap, rows.to_vec())).collect();
                chunk_steps(mbs, cfg.devices * cfg.accum)
            }
        };
        for group in groups {
            steps.push(make_step(steps.len(), epoch, group, &items, cfg));
        }
    }
    Ok(Plan { config: cfg.clone(), steps, truncated, dropped, items })
}

fn validate(cfg: &PlanConfig) -> Result<(), PlanError> {
    let bad = |m: &str| Err(PlanError::Config(m.into()));
    if cfg.batch_size == 0 {
        return bad("batch size must be at least 1");
    }
    if cfg.devices == 0 || cfg.accum == 0 {
        return bad("devices and accumulation must be at least 1");
    }
    if cfg.epochs == 0 {
        return bad("epochs must be at least 1");
    }
    if cfg.max_tokens == Some(0) || cfg.token_budget == Some(0) {
        return bad("max tokens and token budget must be at least 1");
    }
    if cfg.strategy == Strategy::Pack && cfg.max_tokens.is_none() {
        return bad("packing needs a row capacity (--max-tokens)");
    }
    if cfg.token_budget.is_some() && cfg.strategy != Strategy::Sorted {
        return bad("a token budget applies to sorted batching only");
    }
    Ok(())
}

/// Cuts `order` into padded micro-batches: `batch_size` sequences each or, with a token budget, as
/// many as keep `rows × longest ≤ budget` (order must then be ascending by length, as sorted is).
fn padded_micro_batches(
    order: &[usize],
    lengths: &[u32],
    batch_size: usize,
    token_budget: Option<u32>,
) -> Vec<(u32, Vec<Vec<usize>>)> {
    let mut out = Vec::new();
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut longest = 0u32;
    for &i in order {
        let len = lengths[i];
        let full = match token_budget {
            Some(budget) => (rows.len() as u64 + 1) * longest.max(len) as u64 > budget as u64,
            None => rows.len() == batch_size,
        };
        if full && !rows.is_empty() {
            out.push((longest, std::mem::take(&mut rows)));
            longest = 0;
        }
        rows.push(vec![i]);
        longest = longest.max(len);
    }
    if !rows.is_empty() {
        out.push((longest, rows));
    }
    out
}

fn chunk_steps<T: Clone>(mbs: Vec<T>, per_step: usize) -> Vec<Vec<T>> {
    mbs.chunks(per_step).map(|c| c.to_vec()).collect()
}

/// Assigns a step's micro-batches to (device, micro) slots and computes the step's loss weights.
///
/// Assignment balances useful tokens across devices (longest-processing-time first: heaviest
/// micro-batch to the least-loaded device with a free slot), since the slowest device sets the pace
/// of a data-parallel step. Weights are unaffected: they are global to the step.
fn make_step(
    step: usize,
    epoch: usize,
    group: Vec<(u32, Vec<Vec<usize>>)>,
    items: &[Item],
    cfg: &PlanConfig,
) -> Step {
    let all_targets: Vec<u32> =
        group.iter().flat_map(|(_, rows)| rows.iter().flatten().map(|&i| items[i].target)).collect();
    let weights = weights::step_weights(&all_targets, cfg.loss);
    let mut weights = weights.into_iter();

    let loads: Vec<u64> =
        group.iter().map(|(_, rows)| rows.iter().flatten().map(|&i| items[i].total as u64).sum()).collect();
    let mut by_load: Vec<usize> = (0..group.len()).collect();
    by_load.sort_by_key(|&j| (std::cmp::Reverse(loads[j]), j));
    let mut device_load = vec![0u64; cfg.devices];
    let mut device_count = vec![0usize; cfg.devices];
    let mut slot = vec![(0usize, 0usize); group.len()];
    for j in by_load {
        let d = (0..cfg.devices)
            .filter(|&d| device_count[d] < cfg.accum)
            .min_by_key(|&d| (device_load[d], device_count[d], d))
            .expect("a step has at most devices × accum micro-batches");
        slot[j] = (d, device_count[d]);
        device_load[d] += loads[j];
        device_count[d] += 1;
    }

    let mut micro_batches: Vec<MicroBatch> = group
        .into_iter()
        .zip(slot)
        .map(|((row_len, rows), (device, micro))| MicroBatch {
            step,
            device,
            micro,
            row_len,
            rows: rows
                .into_iter()
                .map(|seqs| {
                    let mut cu = Vec::with_capacity(seqs.len() + 1);
                    cu.push(0u32);
                    for &i in &seqs {
                        cu.push(cu.last().unwrap() + items[i].total);
                    }
                    Row {
                        ids: seqs.iter().map(|&i| items[i].id).collect(),
                        cu_seqlens: cu,
                        weights: seqs.iter().map(|_| weights.next().expect("one weight per seq")).collect(),
                    }
                })
                .collect(),
        })
        .collect();
    micro_batches.sort_by_key(|mb| (mb.device, mb.micro));
    Step { epoch, micro_batches }
}

#[cfg(test)]
mod tests;
