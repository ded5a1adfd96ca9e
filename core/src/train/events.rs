//! `events.jsonl`: one JSON object per optimizer step, the run's public record. The GUI, benches
//! and users' scripts read it; fields are only ever added, and `v` says which version wrote it.
//!
//! | field | meaning |
//! |---|---|
//! | `v` | schema version (1) |
//! | `step` | optimizer step, 1-based (the count of updates done) |
//! | `epoch` | epoch of the step's data, 0-based |
//! | `loss` | the step's objective Σ w·CE (sequence mode: mean per-sequence loss; token mode: mean per-token loss) |
//! | `lr` | learning rate used for this update |
//! | `grad_norm` | global L2 norm of the gradient before clipping |
//! | `useful_tokens` | tokens of real sequences in the step |
//! | `padded_tokens` | tokens computed, padding included (rows × row length) |
//! | `target_tokens` | tokens carrying loss |
//! | `sequences` | sequences in the step |
//! | `rows` | rows in the step |
//! | `useful_tok_per_s`, `padded_tok_per_s` | the above over the step's wall time |
//! | `occupancy` | useful / padded |
//! | `seqs_per_row` | sequences / rows |
//! | `step_s` | wall time of the step (forward, backward, optimizer) |
//! | `attn_work` | Σ n² over the sequences: attention work, block-diagonal (steps of equal tokens differ in it; `plan` reports the same) |
//! | `compiles`, `autotunes` | kernel compilations and autotune runs during the step (wgpu, CUDA; 0 on the CPU) |
//! | `elapsed_s` | wall time since the run (or resumed run) started |

use serde::{Deserialize, Serialize};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEvent {
    pub v: u32,
    pub step: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub useful_tokens: u64,
    pub padded_tokens: u64,
    pub target_tokens: u64,
    pub sequences: usize,
    pub rows: usize,
    pub useful_tok_per_s: f64,
    pub padded_tok_per_s: f64,
    pub occupancy: f64,
    pub seqs_per_row: f64,
    pub step_s: f64,
    pub elapsed_s: f64,
    #[serde(default)]
    pub attn_work: u64,
    #[serde(default)]
    pub compiles: u64,
    #[serde(default)]
    pub autotunes: u64,
}

impl StepEvent {
    /// The event of a step the trainer reported, `elapsed_s` after the run (or resume) started.
    pub fn of(r: &super::StepReport, elapsed_s: f64) -> Self {
        let c = r.counts;
        Self {
            v: SCHEMA_VERSION,
            step: r.step,
            epoch: r.epoch,
            loss: r.loss,
            lr: r.lr,
            grad_norm: r.grad_norm,
            useful_tokens: c.useful_tokens,
            padded_tokens: c.padded_tokens,
            target_tokens: c.target_tokens,
            sequences: c.sequences,
            rows: c.rows,
            useful_tok_per_s: c.useful_tokens as f64 / r.step_s,
            padded_tok_per_s: c.padded_tokens as f64 / r.step_s,
            occupancy: c.useful_tokens as f64 / c.padded_tokens.max(1) as f64,
            seqs_per_row: c.sequences as f64 / c.rows.max(1) as f64,
            step_s: r.step_s,
            elapsed_s,
            attn_work: c.attn_work,
            compiles: r.jit.compiles,
            autotunes: r.jit.autotunes,
        }
    }
}

/// Reads an `events.jsonl`, skipping nothing: a bad line is an error naming it.
pub fn read_events(path: &std::path::Path) -> anyhow::Result<Vec<StepEvent>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_events(path, &text)
}

/// The events of a run that may be writing right now: a last line without its newline is left for
/// the next read; any other bad line is an error naming it (what the app's Train view reads).
pub fn read_complete_events(path: &std::path::Path) -> anyhow::Result<Vec<StepEvent>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    parse_events(path, complete)
}

fn parse_events(path: &std::path::Path, text: &str) -> anyhow::Result<Vec<StepEvent>> {
    use anyhow::Context;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}: invalid event", path.display(), i + 1))
        })
        .collect()
}

/// Drops events after `step` (a killed run may have logged steps past its last checkpoint), so a
/// resumed run's log reads as one uninterrupted run.
pub fn truncate_after(path: &std::path::Path, step: usize) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let keep: String = read_events(path)?
        .into_iter()
        .filter(|e| e.step <= step)
        .map(|e| serde_json::to_string(&e).map(|s| s + "\n"))
        .collect::<Result<_, _>>()?;
    crate::util::write_atomic(path, keep.as_bytes())
}
