//! The host kernel on Burn's CPU backend (`Flex`): the blocked-GEMM one ([`super::blocked`]; the
//! per-query [`super::host`] is its second oracle). Tensors come out as contiguous `f32`, go
//! through the host code, and go back in the input's dtype. The copies are
//! O(row · hd); the attention they feed is O(Σ nᵢ² · hd).

use burn::backend::Flex;
use burn::tensor::{DType, TensorData};
use burn_backend::TensorMetadata;
use burn_backend::ops::FloatTensorOps;

use super::blocked;
use super::host::Dims;
use super::layout::VarlenLayout;
use crate::{FloatTensor, VarlenBackend};

/// Contiguous f32 values of a tensor (any float dtype) and its shape.
fn values(t: FloatTensor<Flex>) -> (Vec<f32>, Vec<usize>) {
    let s = t.shape();
    let shape: Vec<usize> = (0..s.num_dims()).map(|i| s[i]).collect();
    let data = burn::tensor::Tensor::<Flex, 1>::from_primitive(burn::tensor::TensorPrimitive::Float(
        Flex::float_reshape(t, [shape.iter().product::<usize>()].into()),
    ))
    .into_data()
    .convert::<f32>();
    (data.into_vec::<f32>().expect("converted to f32 just above"), shape)
}

fn tensor(values: Vec<f32>, shape: &[usize], dtype: DType) -> FloatTensor<Flex> {
    let data = TensorData::new(values, shape.to_vec());
    let data = if dtype == DType::F32 { data } else { data.convert_dtype(dtype) };
    Flex::float_from_data(data, &Default::default())
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
        let ((q, qs), (k, ks), (v, _)) = (values(q), values(k), values(v));
        let d = dims(&qs, &ks);
        let (out, lse) = blocked::forward(&q, &k, &v, d, layout);
        (tensor(out, &qs, dtype), tensor(lse, &qs[..3], DType::F32))
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
        let ((q, qs), (k, ks), (v, _)) = (values(q), values(k), values(v));
        let ((out, _), (lse, _), (dout, _)) = (values(out), values(lse), values(dout));
        let d = dims(&qs, &ks);
        let [dq, dk, dv] = blocked::backward(&q, &k, &v, &out, &lse, &dout, d, layout);
        [tensor(dq, &qs, dtype), tensor(dk, &ks, dtype), tensor(dv, &ks, dtype)]
    }
}
