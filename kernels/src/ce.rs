//! Weighted cross entropy over the vocabulary projection, fused with it: `Σ_t w_t · CE(h_t·W,
//! label_t)`, computed in chunks of tokens, with a backward that recomputes each chunk's logits.
//!
//! Plain autodiff over a chunked loss keeps every chunk's `[n, vocab]` logits (and softmax) for
//! the backward, so memory still grows with targets × vocab (a 32k-token answer with a 152k
//! vocabulary: 19 GB of f32 logits). Here the forward keeps only `h`, `W`, the labels and the
//! weights; the backward walks the chunks again:
//!
//! ```text
//! logits_c = h_c · W                      [n, V]   (one chunk at a time)
//! dlogits  = g · w_t · (softmax(logits_c) − onehot(label_t))
//! dh_c     = dlogits · Wᵀ                 [n, d]
//! dW      += h_cᵀ · dlogits               [d, V]
//! ```
//!
//! so peak memory is one chunk's logits whatever the number of targets, for one extra matmul
//! (the recomputed logits). It is built from the backend's own tensor operations, so it runs on
//! every backend (CPU, wgpu, CUDA); on wgpu and CUDA Burn's fusion fuses the element-wise part.
//! [`reference_weighted_ce`] is the plain autodiff version it is tested against.
//!
//! With half-precision `h` and `W` (mixed-precision training) the matmuls run in that precision,
//! and the logits, the softmax and the sum of `dW` over chunks are f32. transformers likewise
//! upcasts the logits before the loss.

use std::sync::Arc;

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, IndexingUpdateOp, Int, Tensor, TensorData, TensorPrimitive};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};

use crate::FloatTensor;

/// What the loss needs besides `h` and `W`: per row of `h`, its label and weight; the chunking.
#[derive(Debug, Clone)]
pub struct CeTargets {
    pub labels: Vec<u32>,
    pub weights: Vec<f32>,
    /// Tokens per chunk (peak memory: `chunk × vocab` logits).
    pub chunk: usize,
    /// Each chunk is padded (weight 0) to a multiple of this many rows: fewer distinct shapes for
    /// JIT backends.
    pub pad_to: usize,
}

impl CeTargets {
    /// `(start, len, padded len)` of each chunk.
    fn chunks(&self) -> Vec<(usize, usize, usize)> {
        let (chunk, pad) = (self.chunk.max(1), self.pad_to.max(1));
        (0..self.labels.len())
            .step_by(chunk)
            .map(|s| {
                let n = chunk.min(self.labels.len() - s);
                (s, n, n.div_ceil(pad) * pad)
            })
            .collect()
    }

    /// Labels `[m, 1]` and weights `[m, 1]` of one chunk, padded to `m` rows.
    fn chunk_data<B: Backend>(
        &self,
        (s, n, m): (usize, usize, usize),
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2>) {
        let lab: Vec<i64> = (0..m).map(|k| if k < n { self.labels[s + k] as i64 } else { 0 }).collect();
        let w: Vec<f32> = (0..m).map(|k| if k < n { self.weights[s + k] } else { 0.0 }).collect();
        (
            Tensor::from_data(TensorData::new(lab, [m, 1]), device),
            Tensor::from_data(TensorData::new(w, [m, 1]), device),
        )
    }
}

/// Rows `[s, s+n)` of `h`, zero-padded to `m` rows.
fn chunk_rows<B: Backend>(h: &Tensor<B, 2>, (s, n, m): (usize, usize, usize)) -> Tensor<B, 2> {
    let rows = h.clone().narrow(0, s, n);
    if m == n {
        return rows;
    }
    let d = h.dims()[1];
    Tensor::cat(vec![rows, Tensor::zeros([m - n, d], (&h.device(), h.dtype()))], 0)
}

/// The loss value, chunk by chunk, on any backend (no gradient bookkeeping of its own).
fn forward<B: Backend>(h: &Tensor<B, 2>, w: &Tensor<B, 2>, t: &CeTargets) -> Tensor<B, 1> {
    let device = h.device();
    let mut total = Tensor::<B, 1>::zeros([1], &device);
    for c in t.chunks() {
        let (lab, wt) = t.chunk_data::<B>(c, &device);
        let logits = chunk_rows(h, c).matmul(w.clone()).cast(DType::F32); // [m, V]
        let logp = log_softmax(logits, 1);
        total = total - (logp.gather(1, lab) * wt).sum();
    }
    total
}

/// `(dh, dW)` for upstream gradient `g` (`[1]`), recomputing each chunk's logits.
fn backward<B: Backend>(
    h: &Tensor<B, 2>,
    w: &Tensor<B, 2>,
    t: &CeTargets,
    g: Tensor<B, 1>,
) -> [Tensor<B, 2>; 2] {
    let device = h.device();
    let dtype = h.dtype();
    let g = g.cast(DType::F32).reshape([1, 1]);
    let mut dh = Vec::new();
    // Summed over chunks in f32 even when h and W are half precision.
    let mut dw = Tensor::<B, 2>::zeros(w.dims(), (&device, DType::F32));
    for c in t.chunks() {
        let (lab, wt) = t.chunk_data::<B>(c, &device);
        let hc = chunk_rows(h, c); // [m, d]
        let scale = wt * g.clone(); // [m, 1]: g · w_t
        let p = softmax(hc.clone().matmul(w.clone()).cast(DType::F32), 1); // [m, V]
        let dlogits = (p * scale.clone()).scatter(1, lab, scale.neg(), IndexingUpdateOp::Add).cast(dtype);
        dh.push(dlogits.clone().matmul(w.clone().transpose()).narrow(0, 0, c.1)); // [n, d]
        dw = dw + hc.transpose().matmul(dlogits).cast(DType::F32); // [d, V]
    }
    let dh = if dh.is_empty() { Tensor::zeros(h.dims(), (&device, dtype)) } else { Tensor::cat(dh, 0) };
    [dh, dw.cast(w.dtype())]
}

/// The plain version: the same chunks under Burn's autodiff, which keeps every chunk's logits for
/// the backward. The oracle for [`weighted_ce`].
///
/// # Shapes
/// - h: `[targets, d]`, w: `[d, vocab]` → `[1]`
pub fn reference_weighted_ce<B: Backend>(h: Tensor<B, 2>, w: Tensor<B, 2>, t: &CeTargets) -> Tensor<B, 1> {
    forward(&h, &w, t)
}

/// Backends with the fused loss: Burn's autodiff over any backend (without autodiff nothing is
/// kept for a backward, so the plain version is already lean there).
pub trait WeightedCeBackend: Backend {
    fn weighted_ce(h: FloatTensor<Self>, w: FloatTensor<Self>, t: &CeTargets) -> FloatTensor<Self>;
}

fn wrap<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

#[derive(Debug)]
struct CeBackward;

impl<B: Backend> Backward<B, 2> for CeBackward {
    /// h, W, targets.
    type State = (FloatTensor<B>, FloatTensor<B>, Arc<CeTargets>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<B>(&ops.node);
        let (h, w, t) = ops.state;
        let [dh, dw] = backward::<B>(&wrap(h), &wrap(w), &t, wrap(g));
        let [ph, pw] = ops.parents;
        if let Some(node) = ph {
            grads.register::<B>(node.id, dh.into_primitive().tensor());
        }
        if let Some(node) = pw {
            grads.register::<B>(node.id, dw.into_primitive().tensor());
        }
    }
}

impl<B: Backend, C: CheckpointStrategy> WeightedCeBackend for Autodiff<B, C> {
    fn weighted_ce(h: FloatTensor<Self>, w: FloatTensor<Self>, t: &CeTargets) -> FloatTensor<Self> {
        let loss =
            forward::<B>(&wrap(h.primitive.clone()), &wrap(w.primitive.clone()), t).into_primitive().tensor();
        match CeBackward.prepare::<C>([h.node.clone(), w.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((h.primitive, w.primitive, Arc::new(t.clone())), loss),
            OpsKind::UnTracked(prep) => prep.finish(loss),
        }
    }
}

/// `Σ_t w_t · CE(h_t · W, label_t)` with the fused backward ([module docs](self)).
///
/// # Shapes
/// - h: `[targets, d]` (the rows that have a target), w: `[d, vocab]` → `[1]`
pub fn weighted_ce<B: WeightedCeBackend>(h: Tensor<B, 2>, w: Tensor<B, 2>, t: &CeTargets) -> Tensor<B, 1> {
    assert_eq!(h.dims()[0], t.labels.len(), "one label per row of h");
    assert_eq!(t.weights.len(), t.labels.len(), "one weight per label");
    let out = B::weighted_ce(h.into_primitive().tensor(), w.into_primitive().tensor(), t);
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// Without autodiff nothing is kept for a backward: the chunked forward is the whole story.
macro_rules! plain {
    ($($t:tt)*) => {
        $($t)* {
            fn weighted_ce(h: FloatTensor<Self>, w: FloatTensor<Self>, t: &CeTargets) -> FloatTensor<Self> {
                forward::<Self>(&wrap(h), &wrap(w), t).into_primitive().tensor()
            }
        }
    };
}
plain!(impl WeightedCeBackend for burn::backend::Flex);
plain!(impl<B: burn_fusion::FusionBackend> WeightedCeBackend for burn_fusion::Fusion<B>);
plain!(impl<R: burn_cubecl::CubeRuntime, F: burn_cubecl::FloatElement, I: burn_cubecl::IntElement, BT: burn_cubecl::BoolElement> WeightedCeBackend for burn_cubecl::CubeBackend<R, F, I, BT>);
