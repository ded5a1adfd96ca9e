//! Rotary position embedding as one fused pass on the CPU backend, forward and backward.
//!
//! ```text
//!   y  = x·cos + rotate_half(x)·sin        rotate_half([x₁, x₂]) = [−x₂, x₁]  (halves of head_dim)
//!   y₁ = x₁·cos₁ − x₂·sin₁                 dx₁ = dy₁·cos₁ + dy₂·sin₂
//!   y₂ = x₂·cos₂ + x₁·sin₂                 dx₂ = dy₂·cos₂ − dy₁·sin₁
//! ```
//!
//! As tensor operations (the model's reference, and what wgpu and CUDA run, where Burn's fusion
//! merges them) this is two narrows, a negation, a concatenation, two products and a sum forward,
//! and as many passes again backward (the narrows' gradients are zero tensors with a slice
//! assigned), each writing a full `[tokens, heads, head_dim]` tensor. On Burn's CPU backend that
//! was about a tenth of a d = 512 training step. Here it is one read and one write each way; the
//! backward needs only the tables (the map is linear in `x`), so nothing of `x` is saved.
//! Element-wise, so results do not depend on the thread count.

use std::any::TypeId;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use rayon::prelude::*;

use crate::FloatTensor;
use crate::varlen::flex::{tensor, values};

/// Tokens per parallel task.
const TOKENS_PER_TASK: usize = 64;

/// Backends with the fused rotary pass.
pub trait RotaryBackend: Backend {
    /// `x·cos + rotate_half(x)·sin` (see the module docs for the shapes).
    fn rotary_forward(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// The gradient of `x` from the gradient of the output.
    fn rotary_backward(
        dy: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// `[heads, head_dim]` of `x` (token-major `[.., tokens, heads, head_dim]`).
fn head_shape(x: &[usize]) -> (usize, usize) {
    let n = x.len();
    (x[n - 2], x[n - 1])
}

/// The host pass: per token, every head with the token's table row. `transpose`: the backward.
///
/// - x: `tokens · heads · hd` values, token-major; cos, sin: `tokens · hd`
pub fn host(x: &[f32], cos: &[f32], sin: &[f32], heads: usize, hd: usize, transpose: bool) -> Vec<f32> {
    assert!(hd.is_multiple_of(2), "rotary needs an even head_dim, got {hd}");
    assert_eq!(x.len() / (heads * hd), cos.len() / hd, "one table row per token");
    assert_eq!(cos.len(), sin.len());
    let half = hd / 2;
    // Backward: cos is the same, and sin moves to the other half with the opposite sign.
    let sign = if transpose { -1.0 } else { 1.0 };
    let mut y = vec![0f32; x.len()];
    let task = TOKENS_PER_TASK * heads * hd;
    y.par_chunks_mut(task).zip(x.par_chunks(task)).enumerate().for_each(|(i, (yb, xb))| {
        for (j, (yt, xt)) in yb.chunks_mut(heads * hd).zip(xb.chunks(heads * hd)).enumerate() {
            let t = i * TOKENS_PER_TASK + j;
            let (c, s) = (&cos[t * hd..(t + 1) * hd], &sin[t * hd..(t + 1) * hd]);
            let (c1, c2) = c.split_at(half);
            // Forward: x₂ meets sin₁ and x₁ meets sin₂; backward: dy₂ meets sin₂ and dy₁ sin₁.
            let (s_lo, s_hi) = if transpose { (&s[half..], &s[..half]) } else { s.split_at(half) };
            for (yh, xh) in yt.chunks_mut(hd).zip(xt.chunks(hd)) {
                let (y1, y2) = yh.split_at_mut(half);
                let (x1, x2) = xh.split_at(half);
                for k in 0..half {
                    y1[k] = x1[k] * c1[k] - sign * x2[k] * s_lo[k];
                    y2[k] = x2[k] * c2[k] + sign * x1[k] * s_hi[k];
                }
            }
        }
    });
    y
}

fn flex_pass(
    x: FloatTensor<burn::backend::Flex>,
    cos: FloatTensor<burn::backend::Flex>,
    sin: FloatTensor<burn::backend::Flex>,
    transpose: bool,
) -> FloatTensor<burn::backend::Flex> {
    let dtype = x.dtype();
    let ((x, shape), (cos, _), (sin, _)) = (values(x), values(cos), values(sin));
    let (heads, hd) = head_shape(&shape);
    tensor(host(&x, &cos, &sin, heads, hd, transpose), &shape, dtype)
}

impl RotaryBackend for burn::backend::Flex {
    fn rotary_forward(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex_pass(x, cos, sin, false)
    }
    fn rotary_backward(
        dy: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex_pass(dy, cos, sin, true)
    }
}

#[derive(Debug)]
struct RotaryGrad;

impl<B: RotaryBackend> Backward<B, 1> for RotaryGrad {
    /// cos, sin.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let (cos, sin) = ops.state;
        if let Some(node) = &ops.parents[0] {
            grads.register::<B>(node.id, B::rotary_backward(dy, cos, sin));
        }
    }
}

impl<B: RotaryBackend, C: CheckpointStrategy> RotaryBackend for Autodiff<B, C> {
    /// The tables are constants: no gradient flows to them.
    fn rotary_forward(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let y = B::rotary_forward(x.primitive, cos.primitive.clone(), sin.primitive.clone());
        match RotaryGrad.prepare::<C>([x.node]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((cos.primitive, sin.primitive), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }

    /// Not differentiable again: computes on the inner backend.
    fn rotary_backward(
        dy: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        crate::varlen::untracked::<B, C>(B::rotary_backward(dy.primitive, cos.primitive, sin.primitive))
    }
}

/// The fused pass on a backend that has it.
///
/// # Shapes
/// - x: `[batch, tokens, heads, head_dim]`; cos, sin: `[batch, tokens, 1, head_dim]` → as x
pub fn rotary<B: RotaryBackend>(x: Tensor<B, 4>, cos: Tensor<B, 4>, sin: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, l, _, hd] = x.dims();
    assert_eq!(cos.dims(), [b, l, 1, hd], "rotary tables: one row per token");
    assert_eq!(sin.dims(), cos.dims());
    let prim = |t: Tensor<B, 4>| t.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::rotary_forward(prim(x), prim(cos), prim(sin))))
}

/// [`rotary`] where backend `B` has it (Burn's CPU backend `Flex`, with or without autodiff);
/// otherwise the inputs come back for the caller's tensor formula.
pub fn try_rotary<B: Backend>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
) -> Result<Tensor<B, 4>, [Tensor<B, 4>; 3]> {
    use burn::backend::Flex;
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    macro_rules! run {
        ($($t:ty),*) => { $(
            if TypeId::of::<B>() == TypeId::of::<$t>() {
                return Ok(crate::same(rotary::<$t>(crate::same(x), crate::same(cos), crate::same(sin))));
            }
        )* };
    }
    run!(Flex, Autodiff<Flex>, Autodiff<Flex, BalancedCheckpointing>);
    Err([x, cos, sin])
}

#[cfg(test)]
mod tests {
    use super::host;

    /// The textbook formula, one element at a time.
    fn textbook(x: &[f32], cos: &[f32], sin: &[f32], heads: usize, hd: usize) -> Vec<f32> {
        let half = hd / 2;
        (0..x.len())
            .map(|i| {
                let (t, k) = (i / (heads * hd), i % hd);
                let rotated = if k < half { -x[i + half] } else { x[i - half] };
                x[i] * cos[t * hd + k] + rotated * sin[t * hd + k]
            })
            .collect()
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    #[test]
    fn forward_is_the_formula_and_backward_its_transpose() {
        let (tokens, heads, hd) = (150, 3, 8); // more tokens than one task
        let (x, dy) = (data(tokens * heads * hd, 1), data(tokens * heads * hd, 2));
        let (cos, sin) = (data(tokens * hd, 3), data(tokens * hd, 4));
        let y = host(&x, &cos, &sin, heads, hd, false);
        assert_eq!(y, textbook(&x, &cos, &sin, heads, hd));
        // ⟨dy, R x⟩ = ⟨Rᵀ dy, x⟩ for the linear map R.
        let dx = host(&dy, &cos, &sin, heads, hd, true);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| (*p as f64) * (*q as f64)).sum::<f64>();
        let (lhs, rhs) = (dot(&dy, &y), dot(&dx, &x));
        assert!((lhs - rhs).abs() < 1e-5 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
    }
}
