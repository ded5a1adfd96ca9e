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

/// Lays out a micro-batch's rows. `tokens[id]` is item `id` of the plan; a sequence the plan cut
/// (truncation) is cut here the same way, its first `n` tokens kept.
pub fn build(mb: &MicroBatch, tokens: &[Tokenized], pad_id: u32) -> MicroBatchInput {
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
        }
    }
}

impl Counts {
    /// Every micro-batch of a step, all devices.
    pub fn of_step(step: &crate::plan::Step, tokens: &[Tokenized]) -> Self {
        step.micro_batches.iter().fold(Counts::default(), |c, mb| c + Counts::of(mb, tokens))
    }

    pub fn of(mb: &MicroBatch, tokens: &[Tokenized]) -> Self {
        let mut c = Counts {
            padded_tokens: (mb.rows.len() * mb.row_len as usize) as u64,
            rows: mb.rows.len(),
            ..Counts::default()
        };
        for row in &mb.rows {
            for (k, &id) in row.ids.iter().enumerate() {
                let n = (row.cu_seqlens[k + 1] - row.cu_seqlens[k]) as usize;
                c.useful_tokens += n as u64;
                c.target_tokens += tokens[id].targets[1..n].iter().filter(|&&m| m).count() as u64;
            }
            c.sequences += row.ids.len();
        }
        c
    }
}
