//! The kernels under autodiff: the forward saves q, k, v, out and lse; the backward runs the two
//! backward kernels once for all three gradients.

use burn::tensor::backend::Backend;
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};

use super::layout::VarlenLayout;
use crate::{FloatTensor, VarlenBackend};

#[derive(Debug)]
struct VarlenBackward;

/// A backward with no parents: wraps a primitive as an untracked autodiff tensor (the autodiff
/// tensor type itself is not public).
#[derive(Debug)]
struct Untracked;

impl<B: Backend> Backward<B, 0> for Untracked {
    type State = ();
    fn backward(self, _: Ops<(), 0>, _: &mut Gradients, _: &mut Checkpointer) {}
}

pub(crate) fn untracked<B: Backend, C: CheckpointStrategy>(t: FloatTensor<B>) -> FloatTensor<Autodiff<B, C>> {
    match Backward::<B, 0>::prepare::<C>(Untracked, []).compute_bound().stateful() {
        OpsKind::UnTracked(prep) => prep.finish(t),
        OpsKind::Tracked(prep) => prep.finish((), t),
    }
}

impl<B: VarlenBackend> Backward<B, 3> for VarlenBackward {
    /// q, k, v, out, lse and where the sequences are.
    type State = ([FloatTensor<B>; 5], VarlenLayout);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dout = grads.consume::<B>(&ops.node);
        let ([q, k, v, out, lse], layout) = ops.state;
        let g = B::varlen_backward(q, k, v, out, lse, dout, &layout);
        for (parent, g) in ops.parents.iter().zip(g) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: VarlenBackend, C: CheckpointStrategy> VarlenBackend for Autodiff<B, C> {
    fn varlen_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        layout: &VarlenLayout,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (out, lse) =
            B::varlen_forward(q.primitive.clone(), k.primitive.clone(), v.primitive.clone(), layout);
        // lse is an auxiliary output: no gradient flows through it.
        let lse_out = untracked::<B, C>(lse.clone());
        let prep = VarlenBackward.prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()]);
        let out = match prep.compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                prep.finish(([q.primitive, k.primitive, v.primitive, out.clone(), lse], layout.clone()), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        (out, lse_out)
    }

    /// Not differentiable again (no second-order gradients): computes on the inner backend.
    fn varlen_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        layout: &VarlenLayout,
    ) -> [FloatTensor<Self>; 3] {
        B::varlen_backward(
            q.primitive,
            k.primitive,
            v.primitive,
            out.primitive,
            lse.primitive,
            dout.primitive,
            layout,
        )
        .map(untracked::<B, C>)
    }
}
