//! Weighted next-token cross entropy.
//!
//! `loss = Σ_t w_t · CE(logits_t, label_t)`, a plain sum: the plan's weights already divide by the
//! right counts for the whole step (see `batch::weights`), so micro-batches and devices just add
//! their losses and gradients. Only tokens with `w_t ≠ 0` are projected onto the vocabulary, in
//! chunks: with LongAlign data (answers are a few percent of the tokens) this avoids almost all of
//! the `seq × vocab` logits a dense head would materialise.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use super::llama::Llama;

/// Labels and weights of one row: token t predicts token t+1 of the *same* sequence; the last
/// token of a sequence (and padding) predicts nothing.
///
/// `seqs`: per sequence of the row, its tokens, its target mask and the plan's weight.
pub fn row_targets(seqs: &[(&[u32], &[bool], f32)], row_len: usize) -> (Vec<u32>, Vec<f32>) {
    let mut labels = vec![0u32; row_len];
    let mut weights = vec![0f32; row_len];
    let mut start = 0;
    for &(ids, targets, w) in seqs {
        for t in 0..ids.len().saturating_sub(1) {
            if targets[t + 1] {
                labels[start + t] = ids[t + 1];
                weights[start + t] = w;
            }
        }
        start += ids.len();
    }
    (labels, weights)
}

/// `Σ w·CE` over the rows' tokens, `[1]`. `labels`/`weights` are row-major `[rows × row_len]`.
///
/// # Shapes
/// - hidden: `[rows, row_len, hidden]` (final-norm output)
pub fn weighted_cross_entropy<B: Backend>(
    model: &Llama<B>,
    hidden: Tensor<B, 3>,
    labels: &[u32],
    weights: &[f32],
    chunk: usize,
) -> Tensor<B, 1> {
    weighted_cross_entropy_padded(model, hidden, labels, weights, chunk, 1)
}

/// [`weighted_cross_entropy`] with each chunk padded (position 0, weight 0) to a multiple of
/// `pad_to` positions: the same loss and gradients, fewer distinct shapes for JIT backends.
///
/// Where the backend has it (native builds: CPU, wgpu, CUDA) and the head has no bias, this is
/// the fused loss of `longalign-kernels` (`ce.rs`): the backward recomputes each chunk's logits
/// instead of keeping them all, so memory does not grow with targets × vocab. Elsewhere it is
/// [`weighted_cross_entropy_plain`]. Tests compare the two.
pub fn weighted_cross_entropy_padded<B: Backend>(
    model: &Llama<B>,
    hidden: Tensor<B, 3>,
    labels: &[u32],
    weights: &[f32],
    chunk: usize,
    pad_to: usize,
) -> Tensor<B, 1> {
    #[cfg(feature = "native")]
    if let Some(w) = model.head_weight() {
        let device = hidden.device();
        let [b, l, d] = hidden.dims();
        let picked = weighted_positions(weights, b * l);
        if picked.is_empty() {
            return Tensor::zeros([1], &device);
        }
        // With `pad_to` > 1 the targets are padded to a bucketed count (position 0, weight 0: no
        // loss, a gradient of exactly zero), as the stream is: the gather, its backward and the
        // loss's matmuls then meet a few shapes instead of one per target count. (`pad_to` ≤ 1:
        // the count itself.)
        let n = super::packed::bucketed_len(picked.len(), pad_to);
        let mut idx: Vec<i64> = picked.iter().map(|&i| i as i64).collect();
        idx.resize(n, 0);
        let (mut lab, mut wt): (Vec<u32>, Vec<f32>) = picked.iter().map(|&i| (labels[i], weights[i])).unzip();
        lab.resize(n, 0);
        wt.resize(n, 0.0);
        let rows = hidden
            .clone()
            .reshape([b * l, d])
            .select(0, Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [n]), &device));
        let t = longalign_kernels::CeTargets { labels: lab, weights: wt, chunk, pad_to };
        if let Ok(loss) = longalign_kernels::try_weighted_ce(rows, w, &t) {
            return loss;
        }
    }
    weighted_cross_entropy_plain(model, hidden, labels, weights, chunk, pad_to)
}

/// Positions (of the flattened `[rows × row_len]` grid) with a non-zero loss weight: the only
/// ones whose logits either loss path computes.
fn weighted_positions(weights: &[f32], n: usize) -> Vec<usize> {
    (0..n).filter(|&i| weights[i] != 0.0).collect()
}

/// The plain chunked loss in tensor ops: under autodiff every chunk's `[n, vocab]` logits are
/// kept for the backward. What the fused loss is tested against.
pub fn weighted_cross_entropy_plain<B: Backend>(
    model: &Llama<B>,
    hidden: Tensor<B, 3>,
    labels: &[u32],
    weights: &[f32],
    chunk: usize,
    pad_to: usize,
) -> Tensor<B, 1> {
    let device = hidden.device();
    let [b, l, d] = hidden.dims();
    let hidden = hidden.reshape([b * l, d]);
    let picked = weighted_positions(weights, b * l);
    let mut total = Tensor::<B, 1>::zeros([1], &device);
    for part in picked.chunks(chunk.max(1)) {
        let n = part.len().div_ceil(pad_to.max(1)) * pad_to.max(1);
        let at = |k: usize| part.get(k).copied();
        let idx: Vec<i64> = (0..n).map(|k| at(k).unwrap_or(0) as i64).collect();
        let lab: Vec<i64> = (0..n).map(|k| at(k).map_or(0, |i| labels[i]) as i64).collect();
        let w: Vec<f32> = (0..n).map(|k| at(k).map_or(0.0, |i| weights[i])).collect();
        let rows =
            hidden.clone().select(0, Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [n]), &device));
        // Logits in f32 before the log-softmax, whatever the compute precision (as transformers).
        let logp = log_softmax(model.head(rows).cast(DType::F32), 1); // [n, vocab]
        let lab = Tensor::<B, 2, Int>::from_data(TensorData::new(lab, [n, 1]), &device);
        let nll = logp.gather(1, lab).reshape([n]).neg(); // [n]
        let w = Tensor::<B, 1>::from_data(TensorData::new(w, [n]), &device);
        total = total + (nll * w).sum();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_shift_within_sequences_only() {
        let a: [u32; 3] = [10, 11, 12];
        let b: [u32; 2] = [20, 21];
        let (labels, weights) =
            row_targets(&[(&a, &[false, true, true], 0.5), (&b, &[false, true], 0.25)], 6);
        // a0→11 (target), a1→12 (target), a2→(end), b0→21 (target), b1→(end), pad.
        assert_eq!(labels, vec![11, 12, 0, 21, 0, 0]);
        assert_eq!(weights, vec![0.5, 0.5, 0.0, 0.25, 0.0, 0.0]);
    }
}
