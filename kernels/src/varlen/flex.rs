//! The host kernel on Burn's CPU backend (`Flex`): the blocked-GEMM one ([`super::blocked`]; the
//! per-query [`super::host`] is its second oracle). Tensors come out as contiguous `f32`, go
//! through the host code, and go back in the input's dtype. The copies are
//! O(row · hd); the attention they feed is O(Σ nᵢ² · hd).
//!
//! The model hands q, k, v over as heads-first views of its token-major projections
//! (`[b, l, h, hd]` with dims 1 and 2 swapped), and reshapes the output straight back to
//! `[b, l, h·hd]`. So the inputs are read head by head with `hd`-long copies ([`heads_first`]),
//! not element by element through Burn's strided iterator, and the outputs are stored
//! token-major and returned as the same kind of view ([`token_major`]): the model's reshape
//! back and the projections' gradients then need no copy at all.

use burn::backend::Flex;
use burn::tensor::{DType, TensorData};
use burn_backend::TensorMetadata;
use burn_backend::ops::FloatTensorOps;

use rayon::prelude::*;

use super::blocked;
use super::host::Dims;
use super::layout::VarlenLayout;
use crate::{FloatTensor, VarlenBackend};

/// Contiguous f32 values of a tensor (any float dtype) and its shape.
pub(crate) fn values(t: FloatTensor<Flex>) -> (Vec<f32>, Vec<usize>) {
    let s = t.shape();
    let shape: Vec<usize> = (0..s.num_dims()).map(|i| s[i]).collect();
    let data = burn::tensor::Tensor::<Flex, 1>::from_primitive(burn::tensor::TensorPrimitive::Float(
        Flex::float_reshape(t, [shape.iter().product::<usize>()].into()),
    ))
    .into_data()
    .convert::<f32>();
    (data.into_vec::<f32>().expect("converted to f32 just above"), shape)
}

pub(crate) fn tensor(values: Vec<f32>, shape: &[usize], dtype: DType) -> FloatTensor<Flex> {
    let data = TensorData::new(values, shape.to_vec());
    let data = if dtype == DType::F32 { data } else { data.convert_dtype(dtype) };
    Flex::float_from_data(data, &Default::default())
}

/// The values of a `[b, h, l, hd]` tensor in that (heads-first) order. An f32 tensor whose last
/// dim is contiguous (any strides outside it: a swapped token-major view, or plain heads-first)
/// is copied one `hd` run at a time; anything else goes through [`values`].
fn heads_first(t: FloatTensor<Flex>) -> (Vec<f32>, Vec<usize>) {
    let shape: Vec<usize> = (0..4).map(|i| t.shape()[i]).collect();
    let layout = t.layout();
    let strides = layout.strides();
    if t.dtype() != DType::F32 || strides[3] != 1 || strides[..3].iter().any(|&s| s < 0) {
        return values(t);
    }
    let [b, h, l, hd] = [shape[0], shape[1], shape[2], shape[3]];
    let (s0, s1, s2) = (strides[0] as usize, strides[1] as usize, strides[2] as usize);
    let start = layout.start_offset();
    let src: &[f32] = t.storage::<f32>();
    let mut out = vec![0f32; b * h * l * hd];
    out.par_chunks_mut(l * hd).enumerate().for_each(|(rh, dst)| {
        let base = start + (rh / h) * s0 + (rh % h) * s1;
        for (i, run) in dst.chunks_mut(hd).enumerate() {
            run.copy_from_slice(&src[base + i * s2..base + i * s2 + hd]);
        }
    });
    (out, shape)
}

/// `values` (heads-first `[b, h, l, hd]`) stored token-major and returned as the heads-first
/// view of that storage, in `dtype`.
fn token_major(values: Vec<f32>, shape: &[usize], dtype: DType) -> FloatTensor<Flex> {
    let [b, h, l, hd] = [shape[0], shape[1], shape[2], shape[3]];
    let mut out = vec![0f32; values.len()];
    out.par_chunks_mut(l * h * hd).enumerate().for_each(|(r, dst)| {
        for (i, token) in dst.chunks_mut(h * hd).enumerate() {
            for (head, run) in token.chunks_mut(hd).enumerate() {
                let src = ((r * h + head) * l + i) * hd;
                run.copy_from_slice(&values[src..src + hd]);
            }
        }
    });
    Flex::float_swap_dims(tensor(out, &[b, l, h, hd], dtype), 1, 2)
}

fn dims(q: &[usize], k: &[usize]) -> Dims {
    Dims { rows: q[0], heads: q[1], kv_heads: k[1], len: q[2], hd: q[3] }
}

impl VarlenBackend for Flex {
    fn varlen_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        layout: &VarlenLayout,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let dtype = q.dtype();
        let ((q, qs), (k, ks), (v, _)) = (heads_first(q), heads_first(k), heads_first(v));
        let d = dims(&qs, &ks);
        let (out, lse) = blocked::forward(&q, &k, &v, d, layout);
        (token_major(out, &qs, dtype), tensor(lse, &qs[..3], DType::F32))
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
        let dtype = q.dtype();
        let ((q, qs), (k, ks), (v, _)) = (heads_first(q), heads_first(k), heads_first(v));
        let ((out, _), (lse, _), (dout, _)) = (heads_first(out), values(lse), heads_first(dout));
        let d = dims(&qs, &ks);
        let [dq, dk, dv] = blocked::backward(&q, &k, &v, &out, &lse, &dout, d, layout);
        [token_major(dq, &qs, dtype), token_major(dk, &ks, dtype), token_major(dv, &ks, dtype)]
    }
}
