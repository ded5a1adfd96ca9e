//! From a planned micro-batch and the tokenized data to the model's inputs.

use crate::data::Tokenized;
use crate::model::PackedRows;
use crate::model::loss::row_targets;
use crate::plan::MicroBatch;

/// One micro-batch ready for the model (its token counts: [`Counts::of`]).
pub struct MicroBatchInput {
    pub rows: PackedRows,
    /// Next-token labels, row-major `[rows × row_len]`.
    pub labels: Vec<u32>,
    /// Loss weight per position (0 where no loss).
    pub weights: Vec<f32>,
}

/// How a micro-batch is laid out for the model.
///
/// ```text
///   plan: row 0 [a a a b b . . .]   row 1 [c c c c . . . .]     (capacity 8, `.` = padding)
///   Padded:      [a a a b b . . .]        [c c c c . . . .]     2 × 8 computed
///   Stream{1}:   [a a a b b c c c c]                            9 computed, cu_seqlens [0,3,5,9]
///   Stream{64}:  [a a a b b c c c c . … .]                      64 computed (a bucket, not capacity)
/// ```
///
/// Attention never crosses a sequence and positions restart at each one, so both layouts compute
/// the same loss and gradients (tests compare them); the stream's cost follows Σ nᵢ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The plan's rows, each padded to the micro-batch's row length, padding computed: what the
    /// paper's naive and sorted batching cost.
    Padded,
    /// Padding-free: every sequence of every row back to back in one stream (one row of the
    /// model's input), its length rounded up by [`stream_len`] with this bucket (1 = exact).
    Stream { bucket: usize },
}

impl Layout {
    /// Padding-free or padded; the bucket is the trainers' `seq_bucket` (JIT backends want
    /// repeated shapes; the CPU does not).
    pub fn new(padding_free: bool, seq_bucket: Option<usize>) -> Self {
        match padding_free {
            true => Self::Stream { bucket: seq_bucket.unwrap_or(1).max(1) },
            false => Self::Padded,
        }
    }
}

/// Length a stream of `n` tokens is computed at with `bucket`: `n` itself for bucket 1, else a
/// few repeated sizes (see [`crate::model::packed::bucketed_len`], the rule the loss's targets
/// follow too).
pub use crate::model::packed::bucketed_len as stream_len;

/// Tokens the model computes for `mb` laid out as `layout` says (padding included).
pub fn computed_tokens(mb: &MicroBatch, layout: Layout) -> usize {
    match layout {
        Layout::Padded => mb.rows.len() * mb.row_len as usize,
        Layout::Stream { bucket } => {
            stream_len(mb.rows.iter().map(|r| *r.cu_seqlens.last().unwrap_or(&0) as usize).sum(), bucket)
        }
    }
}

/// Lays out a micro-batch as `layout` says. `tokens[id]` is item `id` of the plan; a sequence the
/// plan cut (truncation) is cut here the same way, its first `n` tokens kept.
pub fn build(mb: &MicroBatch, tokens: &[Tokenized], pad_id: u32, layout: Layout) -> MicroBatchInput {
    match layout {
        Layout::Padded => build_padded(mb, tokens, pad_id),
        Layout::Stream { bucket } => build_stream(mb, tokens, pad_id, bucket),
    }
}

/// The sequences of a micro-batch in plan order: (item id, tokens kept, plan weight).
fn sequences(mb: &MicroBatch) -> impl Iterator<Item = (usize, usize, f32)> + '_ {
    mb.rows.iter().flat_map(|row| {
        row.ids
            .iter()
            .zip(&row.weights)
            .enumerate()
            .map(|(k, (&id, &w))| (id, (row.cu_seqlens[k + 1] - row.cu_seqlens[k]) as usize, w))
    })
}

fn build_stream(mb: &MicroBatch, tokens: &[Tokenized], pad_id: u32, bucket: usize) -> MicroBatchInput {
    let useful: usize = sequences(mb).map(|(_, n, _)| n).sum();
    let len = stream_len(useful, bucket);
    let mut ids = Vec::with_capacity(len);
    let mut cu = vec![0u32];
    let mut parts = Vec::new();
    for (id, n, w) in sequences(mb) {
        let t = &tokens[id];
        ids.extend_from_slice(&t.ids[..n]);
        cu.push(ids.len() as u32);
        parts.push((&t.ids[..n], &t.targets[..n], w));
    }
    ids.resize(len, pad_id);
    let (labels, weights) = row_targets(&parts, len);
    MicroBatchInput {
        rows: PackedRows { tokens: ids, cu_seqlens: vec![cu], rows: 1, row_len: len },
        labels,
        weights,
    }
}

fn build_padded(mb: &MicroBatch, tokens: &[Tokenized], pad_id: u32) -> MicroBatchInput {
    let row_len = mb.row_len as usize;
    let mut ids = Vec::with_capacity(mb.rows.len() * row_len);
    let (mut labels, mut weights) = (Vec::with_capacity(ids.capacity()), Vec::with_capacity(ids.capacity()));
    for row in &mb.rows {
        let start = ids.len();
        let mut parts = Vec::with_capacity(row.ids.len());
        for (k, (&id, &w)) in row.ids.iter().zip(&row.weights).enumerate() {
            let n = (row.cu_seqlens[k + 1] - row.cu_seqlens[k]) as usize;
            let t = &tokens[id];
            ids.extend_from_slice(&t.ids[..n]);
            parts.push((&t.ids[..n], &t.targets[..n], w));
        }
        ids.resize(start + row_len, pad_id);
        let (l, w) = row_targets(&parts, row_len);
        labels.extend(l);
        weights.extend(w);
    }
    MicroBatchInput {
        rows: PackedRows {
            tokens: ids,
            cu_seqlens: mb.rows.iter().map(|r| r.cu_seqlens.clone()).collect(),
            rows: mb.rows.len(),
            row_len,
        },
        labels,
        weights,
    }
}

/// Token counts of a planned micro-batch, from the plan alone (no tensors): what every rank of a
/// data-parallel run can compute for the whole step without communication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub useful_tokens: u64,
    pub padded_tokens: u64,
    pub target_tokens: u64,
    pub sequences: usize,
    pub rows: usize,
    /// Σ nᵢ² over the sequences: attention score work with block-diagonal (varlen) attention, as
    /// `plan` reports it (`attn_work`). It grows with the square of each length (one 2,048-token
    /// sequence costs 8× eight 256-token ones), which token counts do not show.
    pub attn_work: u64,
}

impl std::ops::Add for Counts {
    type Output = Counts;

    fn add(self, o: Counts) -> Counts {
        Counts {
            useful_tokens: self.useful_tokens + o.useful_tokens,
            padded_tokens: self.padded_tokens + o.padded_tokens,
            target_tokens: self.target_tokens + o.target_tokens,
            sequences: self.sequences + o.sequences,
            rows: self.rows + o.rows,
            attn_work: self.attn_work + o.attn_work,
        }
    }
}

impl Counts {
    /// Every micro-batch of a step, all devices.
    pub fn of_step(step: &crate::plan::Step, tokens: &[Tokenized], layout: Layout) -> Self {
        step.micro_batches.iter().fold(Counts::default(), |c, mb| c + Counts::of(mb, tokens, layout))
    }

    /// `padded_tokens` counts what `layout` computes: rows × row length, or the stream's length.
    pub fn of(mb: &MicroBatch, tokens: &[Tokenized], layout: Layout) -> Self {
        let mut c = Counts {
            padded_tokens: computed_tokens(mb, layout) as u64,
            rows: mb.rows.len(),
            ..Counts::default()
        };
        for row in &mb.rows {
            for (k, &id) in row.ids.iter().enumerate() {
                let n = (row.cu_seqlens[k + 1] - row.cu_seqlens[k]) as usize;
                c.useful_tokens += n as u64;
                c.attn_work += (n as u64).pow(2);
                c.target_tokens += tokens[id].targets[1..n].iter().filter(|&&m| m).count() as u64;
            }
            c.sequences += row.ids.len();
        }
        c
    }
}
