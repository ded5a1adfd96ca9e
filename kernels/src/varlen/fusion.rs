//! The kernels on Burn's fusion backend (`Fusion<CubeBackend<…>>`, what `burn::backend::Wgpu` and
//! `Cuda` are with the `fusion` feature): flush the inputs out of the fusion stream, run the
//! kernel on the inner backend, register the outputs as fresh tensors.

use burn_backend::TensorMetadata;
use burn_fusion::{Fusion, FusionBackend, NoOp, client::GlobalFusionClient, stream::OperationStreams};
use burn_ir::{InitOperationIr, OperationIr};

use super::layout::VarlenLayout;
use crate::{FloatTensor, VarlenBackend};

fn inner<B: FusionBackend>(t: FloatTensor<Fusion<B>>) -> FloatTensor<B> {
    t.client.clone().resolve_tensor_float::<B>(t)
}

fn outer<B: FusionBackend>(
    t: FloatTensor<B>,
    client: &GlobalFusionClient<B::FusionRuntime>,
) -> FloatTensor<Fusion<B>> {
    let (shape, dtype) = (t.shape(), t.dtype());
    let handle = B::float_tensor_handle(t);
    let desc = InitOperationIr::create(shape, dtype, || client.register_tensor_handle(handle));
    let mut out = client.register(OperationStreams::default(), OperationIr::Init(desc), NoOp::<B>::new());
    out.pop().expect("an init operation has one output")
}

impl<B: FusionBackend + VarlenBackend> VarlenBackend for Fusion<B> {
    fn varlen_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        layout: &VarlenLayout,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let client = q.client.clone();
        let (out, lse) = B::varlen_forward(inner::<B>(q), inner::<B>(k), inner::<B>(v), layout);
        (outer::<B>(out, &client), outer::<B>(lse, &client))
    }

    fn varlen_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        layout: &VarlenLayout,
    ) -> [FloatTensor<Self>; 3] {
        let client = q.client.clone();
        let grads = B::varlen_backward(
            inner::<B>(q),
            inner::<B>(k),
            inner::<B>(v),
            inner::<B>(out),
            inner::<B>(lse),
            inner::<B>(dout),
            layout,
        );
        grads.map(|g| outer::<B>(g, &client))
    }
}
